//! Erlang C: how many agents a queue needs. For arrival rate λ and average handle time AHT, the offered
//! traffic is A = λ·AHT erlangs; with c agents the probability that a caller waits is C(c, A), the service
//! level is 1 − C·e^(−(c−A)·T/AHT) and the average speed of answer is C·AHT/(c−A).
//!
//! C is computed from Erlang B by the recurrence B(k) = A·B(k−1) / (k + A·B(k−1)), which stays within
//! [0, 1] at every step, so it is stable for thousands of agents where factorials would overflow.

use crate::config::ServiceLevelTarget;
use serde::Serialize;

/// Why a staffing question cannot be answered.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ErlangError {
    #[error("{0} must be a finite number above zero")]
    NotPositive(&'static str),
    #[error("shrinkage must be at least 0 and below 1")]
    Shrinkage,
    #[error("max occupancy must be above 0 and at most 1")]
    MaxOccupancy,
    #[error("no staffing up to {0} agents meets the target")]
    Unreachable(u32),
}

/// Erlang B: the probability that a call finds all `agents` busy in a loss system with traffic `traffic`.
pub fn erlang_b(agents: u32, traffic: f64) -> f64 {
    let mut b = 1.0;
    for k in 1..=agents {
        b = traffic * b / (f64::from(k) + traffic * b);
    }
    b
}

fn erlang_c_from_b(agents: u32, traffic: f64, b: f64) -> f64 {
    let c = f64::from(agents);
    if c <= traffic {
        return 1.0;
    }
    c * b / (c - traffic * (1.0 - b))
}

/// Erlang C: the probability that a caller has to wait, with `agents` agents and `traffic` erlangs.
/// 1.0 when the agents cannot keep up (agents <= traffic).
pub fn erlang_c(agents: u32, traffic: f64) -> f64 {
    erlang_c_from_b(agents, traffic, erlang_b(agents, traffic))
}

/// Share of callers answered within `target_secs`.
pub fn service_level(agents: u32, traffic: f64, aht_secs: f64, target_secs: f64) -> f64 {
    let c = f64::from(agents);
    if c <= traffic {
        return 0.0;
    }
    1.0 - erlang_c(agents, traffic) * (-(c - traffic) * target_secs / aht_secs).exp()
}

/// Average speed of answer in seconds; infinite when the agents cannot keep up.
pub fn asa_secs(agents: u32, traffic: f64, aht_secs: f64) -> f64 {
    let c = f64::from(agents);
    if c <= traffic {
        return f64::INFINITY;
    }
    erlang_c(agents, traffic) * aht_secs / (c - traffic)
}

/// Share of the agents' time spent handling calls, at most 1.
pub fn occupancy(agents: u32, traffic: f64) -> f64 {
    if agents == 0 {
        1.0
    } else {
        (traffic / f64::from(agents)).min(1.0)
    }
}

/// Calls offered in an interval and their average handle time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Workload {
    pub calls: f64,
    pub interval_secs: f64,
    pub aht_secs: f64,
}

impl Workload {
    /// Checks the numbers.
    pub fn new(calls: f64, interval_secs: f64, aht_secs: f64) -> Result<Self, ErlangError> {
        for (name, v) in [("calls", calls), ("interval", interval_secs), ("aht", aht_secs)] {
            if !(v.is_finite() && v > 0.0) {
                return Err(ErlangError::NotPositive(name));
            }
        }
        Ok(Self {
            calls,
            interval_secs,
            aht_secs,
        })
    }

    /// Offered traffic in erlangs.
    pub fn traffic(&self) -> f64 {
        self.calls * self.aht_secs / self.interval_secs
    }
}

/// The predicted performance of one staffing level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StaffingRow {
    pub agents: u32,
    pub probability_of_wait: f64,
    pub service_level: f64,
    pub asa_secs: f64,
    pub occupancy: f64,
}

impl StaffingRow {
    /// The row for `agents` agents.
    pub fn new(work: &Workload, target_secs: f64, agents: u32) -> Self {
        let a = work.traffic();
        Self {
            agents,
            probability_of_wait: erlang_c(agents, a),
            service_level: service_level(agents, a, work.aht_secs, target_secs),
            asa_secs: asa_secs(agents, a, work.aht_secs),
            occupancy: occupancy(agents, a),
        }
    }
}

/// The predicted performance of every staffing level in `agents`, e.g. for a table around the answer.
pub fn staffing_table(
    work: &Workload,
    target_secs: f64,
    agents: std::ops::RangeInclusive<u32>,
) -> Vec<StaffingRow> {
    agents.map(|c| StaffingRow::new(work, target_secs, c)).collect()
}

/// The answer to "how many agents": on the phones, and scheduled once shrinkage is added.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StaffingPlan {
    /// The smallest number of agents meeting the target and the occupancy cap.
    pub agents: u32,
    /// `agents / (1 − shrinkage)`, rounded up: the people to schedule.
    pub scheduled: u32,
    pub row: StaffingRow,
}

/// Most agents the search tries.
pub const MAX_AGENTS: u32 = 1_000_000;

/// The smallest staffing meeting `target` (and `max_occupancy`, when given), plus shrinkage.
pub fn required_agents(
    work: &Workload,
    target: ServiceLevelTarget,
    max_occupancy: Option<f64>,
    shrinkage: f64,
) -> Result<StaffingPlan, ErlangError> {
    if !(0.0..1.0).contains(&shrinkage) {
        return Err(ErlangError::Shrinkage);
    }
    if max_occupancy.is_some_and(|m| !(m > 0.0 && m <= 1.0)) {
        return Err(ErlangError::MaxOccupancy);
    }
    let a = work.traffic();
    let goal = f64::from(target.percent) / 100.0;
    let t = f64::from(target.within_secs);
    // Walk Erlang B upwards once instead of recomputing it for every candidate.
    let mut b = 1.0;
    for agents in 1..=MAX_AGENTS {
        b = a * b / (f64::from(agents) + a * b);
        let c = f64::from(agents);
        if c <= a {
            continue;
        }
        let pw = erlang_c_from_b(agents, a, b);
        let sl = 1.0 - pw * (-(c - a) * t / work.aht_secs).exp();
        let occ = occupancy(agents, a);
        if sl >= goal && max_occupancy.is_none_or(|m| occ <= m) {
            let row = StaffingRow {
                agents,
                probability_of_wait: pw,
                service_level: sl,
                asa_secs: pw * work.aht_secs / (c - a),
                occupancy: occ,
            };
            let scheduled = (c / (1.0 - shrinkage) - 1e-9).ceil().max(c) as u32;
            return Ok(StaffingPlan {
                agents,
                scheduled,
                row,
            });
        }
    }
    Err(ErlangError::Unreachable(MAX_AGENTS))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// The classic worked example (Call Centre Helper, "Erlang C formula made simple"): 100 calls in 30
    /// minutes, AHT 180 s, 80% in 20 s. Traffic 10 erlangs; 14 agents give Pw 17.41%, SL 88.84%,
    /// ASA 7.8 s, occupancy 71.4%; 13 agents miss the target with 79.56%.
    #[test]
    fn textbook_example_of_ten_erlangs() {
        let work = Workload::new(100.0, 1800.0, 180.0).unwrap();
        assert_eq!(work.traffic(), 10.0);
        let row = StaffingRow::new(&work, 20.0, 14);
        assert!(close(row.probability_of_wait, 0.1741, 5e-5), "{row:?}");
        assert!(close(row.service_level, 0.8884, 5e-5), "{row:?}");
        assert!(close(row.asa_secs, 7.84, 5e-3), "{row:?}");
        assert!(close(row.occupancy, 0.7143, 5e-5), "{row:?}");
        let row13 = StaffingRow::new(&work, 20.0, 13);
        assert!(close(row13.service_level, 0.7956, 5e-5), "{row13:?}");
        assert!(close(
            StaffingRow::new(&work, 20.0, 12).probability_of_wait,
            0.4494,
            5e-5
        ));
        assert!(close(StaffingRow::new(&work, 20.0, 11).asa_secs, 122.78, 5e-3));

        let table = staffing_table(&work, 20.0, 11..=15);
        let levels: Vec<String> = table
            .iter()
            .map(|r| format!("{}:{:.1}%", r.agents, r.service_level * 100.0))
            .collect();
        assert_eq!(
            levels,
            ["11:39.0%", "12:64.0%", "13:79.6%", "14:88.8%", "15:94.1%"]
        );

        let plan = required_agents(&work, ServiceLevelTarget::default(), None, 0.3).unwrap();
        assert_eq!(plan.agents, 14);
        // 14 / 0.7 = 20 exactly; no rounding up past it.
        assert_eq!(plan.scheduled, 20);
        let capped = required_agents(&work, ServiceLevelTarget::default(), Some(0.7), 0.0).unwrap();
        assert_eq!(capped.agents, 15, "occupancy 10/14 = 0.714 is above the 0.7 cap");
    }

    /// Hand-computed small cases: with c = 2, A = 1, C = (A^2/2! · 2/(2−1)) / (1 + A + 1) = 1/3;
    /// with c = 1 (M/M/1) C = ρ.
    #[test]
    fn hand_computed_small_systems() {
        assert!(close(erlang_c(2, 1.0), 1.0 / 3.0, 1e-12));
        assert!(close(erlang_c(1, 0.6), 0.6, 1e-12));
        assert!(close(asa_secs(1, 0.6, 100.0), 0.6 * 100.0 / 0.4, 1e-9));
        assert!(close(erlang_b(1, 1.0), 0.5, 1e-12));
        assert_eq!(erlang_c(3, 3.0), 1.0);
        assert_eq!(service_level(3, 4.0, 180.0, 20.0), 0.0);
        assert_eq!(asa_secs(3, 3.0, 180.0), f64::INFINITY);
    }

    /// Large systems stay finite and accurate: the exact value for c = 1000, A = 950, computed with
    /// rational arithmetic, is 0.0682534153771414.
    #[test]
    fn stable_for_large_systems() {
        assert!(close(erlang_c(1000, 950.0), 0.068_253_415_377_141_4, 1e-12));
        let pw = erlang_c(20_000, 19_800.0);
        assert!(pw.is_finite() && pw > 0.0 && pw < 1.0);
        let work = Workload::new(36_000.0, 3600.0, 300.0).unwrap();
        let plan = required_agents(&work, ServiceLevelTarget::default(), None, 0.0).unwrap();
        assert!(plan.agents > 3000 && plan.row.service_level >= 0.8);
        let one_less = StaffingRow::new(&work, 20.0, plan.agents - 1);
        assert!(one_less.service_level < 0.8);
    }

    #[test]
    fn refuses_meaningless_input() {
        assert_eq!(
            Workload::new(0.0, 1.0, 1.0),
            Err(ErlangError::NotPositive("calls"))
        );
        assert_eq!(
            Workload::new(1.0, 1.0, f64::NAN),
            Err(ErlangError::NotPositive("aht"))
        );
        let work = Workload::new(10.0, 3600.0, 60.0).unwrap();
        assert_eq!(
            required_agents(&work, ServiceLevelTarget::default(), None, 1.0),
            Err(ErlangError::Shrinkage)
        );
        assert_eq!(
            required_agents(&work, ServiceLevelTarget::default(), Some(0.0), 0.1),
            Err(ErlangError::MaxOccupancy)
        );
    }
}
