//! The two simple policies: progressive (one call per free agent) and a fixed dial ratio.

use super::{AgentActivity, PacingEvent, PacingPolicy, PacingSnapshot};

/// One line per ready agent: never abandons a call, keeps agents waiting through every ring.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progressive;

impl PacingPolicy for Progressive {
    fn name(&self) -> String {
        "progressive".into()
    }
    fn observe(&mut self, _event: &PacingEvent) {}
    fn dials_to_place(&mut self, snapshot: &PacingSnapshot<'_>) -> u32 {
        snapshot.progressive_dials()
    }
}

/// Keeps `ratio` lines per agent who is ready or talking, counting every call not yet finished with
/// an agent (ringing, waiting, talking) as a line: VICIdial's RATIO method.
#[derive(Debug, Clone, Copy)]
pub struct FixedRatio {
    ratio: f64,
}

impl FixedRatio {
    /// A fixed ratio; values below 1 are raised to 1 (below that it is not a dialer).
    pub fn new(ratio: f64) -> Self {
        Self {
            ratio: if ratio.is_finite() { ratio.max(1.0) } else { 1.0 },
        }
    }
}

/// Lines wanted for a dial level: `level` per ready-or-talking agent, minus the lines already in use.
pub(crate) fn lines_for_level(level: f64, snapshot: &PacingSnapshot<'_>) -> u32 {
    let ready = snapshot.count(AgentActivity::Ready);
    let talking = snapshot.count(AgentActivity::OnCall);
    let target = (level * (ready + talking) as f64).floor();
    let in_use = (snapshot.dials_in_flight.len() + snapshot.calls_waiting as usize + talking) as f64;
    let wanted = (target - in_use).max(0.0);
    // A ready agent always gets at least a progressive call.
    (wanted as u32).max(snapshot.progressive_dials())
}

impl PacingPolicy for FixedRatio {
    fn name(&self) -> String {
        format!("fixed:{}", self.ratio)
    }
    fn observe(&mut self, _event: &PacingEvent) {}
    fn dials_to_place(&mut self, snapshot: &PacingSnapshot<'_>) -> u32 {
        lines_for_level(self.ratio, snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pacing::AgentView;
    use domain::Timestamp;

    fn agents(ready: usize, on_call: usize) -> Vec<AgentView> {
        let mut v = vec![
            AgentView {
                activity: AgentActivity::Ready,
                since: Timestamp::ZERO
            };
            ready
        ];
        v.extend(vec![
            AgentView {
                activity: AgentActivity::OnCall,
                since: Timestamp::ZERO
            };
            on_call
        ]);
        v
    }

    #[test]
    fn progressive_dials_one_per_uncovered_ready_agent() {
        let a = agents(3, 2);
        let flight = [Timestamp::ZERO];
        let snap = PacingSnapshot {
            now: Timestamp::ZERO,
            agents: &a,
            dials_in_flight: &flight,
            calls_waiting: 1,
        };
        assert_eq!(Progressive.dials_to_place(&snap), 1);
        let none: [AgentView; 0] = [];
        let snap = PacingSnapshot {
            now: Timestamp::ZERO,
            agents: &none,
            dials_in_flight: &[],
            calls_waiting: 0,
        };
        assert_eq!(Progressive.dials_to_place(&snap), 0);
    }

    #[test]
    fn fixed_ratio_counts_lines_in_use() {
        let a = agents(2, 8);
        let snap = PacingSnapshot {
            now: Timestamp::ZERO,
            agents: &a,
            dials_in_flight: &[],
            calls_waiting: 0,
        };
        // 2.0 x 10 agents = 20 lines, 8 in use by talking agents.
        assert_eq!(FixedRatio::new(2.0).dials_to_place(&snap), 12);
        // Ratio 1 is progressive.
        assert_eq!(FixedRatio::new(1.0).dials_to_place(&snap), 2);
        // Everyone talking: the ratio still dials ahead for them.
        let a = agents(0, 10);
        let snap = PacingSnapshot {
            now: Timestamp::ZERO,
            agents: &a,
            dials_in_flight: &[],
            calls_waiting: 0,
        };
        assert_eq!(FixedRatio::new(1.5).dials_to_place(&snap), 5);
        // No agents: no dials.
        let snap = PacingSnapshot {
            now: Timestamp::ZERO,
            agents: &[],
            dials_in_flight: &[],
            calls_waiting: 0,
        };
        assert_eq!(FixedRatio::new(3.0).dials_to_place(&snap), 0);
    }
}
