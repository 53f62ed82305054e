//! The baseline: VICIdial's adaptive dial level as its documentation describes it. Every adjustment period
//! (15 s) the level moves by the average of (ready agents - waiting calls) relative to the agents logged in,
//! never above a cap (default 3.0) nor below 1.0, and it is halved whenever the drop rate since the start of
//! the day is over the limit. Lines are kept at `level x (ready + talking agents)`, as with RATIO.

use super::basic::lines_for_level;
use super::{AgentActivity, DialResult, PacingEvent, PacingPolicy, PacingSnapshot};
use domain::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Settings of the VICIdial-style adaptive baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VicidialConfig {
    /// Starting dial level (VICIdial's auto_dial_level).
    pub initial_level: f64,
    /// Highest level the adaptation may reach (adaptive_maximum_level).
    pub max_level: f64,
    /// Drop rate limit over the day (adaptive_dropped_percentage / 100).
    pub drop_limit: f64,
    /// Seconds between adjustments.
    pub adjust_every_secs: u64,
    /// How strongly the level follows (ready - waiting) / agents per adjustment (the intensity modifier).
    pub gain: f64,
}

impl Default for VicidialConfig {
    fn default() -> Self {
        Self {
            initial_level: 1.0,
            max_level: 3.0,
            drop_limit: 0.03,
            adjust_every_secs: 15,
            gain: 1.0,
        }
    }
}

/// The adaptive baseline policy.
#[derive(Debug, Clone)]
pub struct VicidialAdaptive {
    config: VicidialConfig,
    level: f64,
    next_adjust: Option<Timestamp>,
    last_sample: Option<Timestamp>,
    differential_sum: f64,
    agents_sum: f64,
    samples: u32,
    humans_today: u64,
    drops_today: u64,
}

impl VicidialAdaptive {
    pub fn new(config: VicidialConfig) -> Self {
        let level = config.initial_level.clamp(1.0, config.max_level.max(1.0));
        Self {
            config,
            level,
            next_adjust: None,
            last_sample: None,
            differential_sum: 0.0,
            agents_sum: 0.0,
            samples: 0,
            humans_today: 0,
            drops_today: 0,
        }
    }

    /// The current dial level.
    pub fn level(&self) -> f64 {
        self.level
    }

    fn adjust(&mut self) {
        let drop_rate = if self.humans_today == 0 {
            0.0
        } else {
            self.drops_today as f64 / self.humans_today as f64
        };
        if drop_rate > self.config.drop_limit {
            self.level /= 2.0;
        } else if self.samples > 0 && self.agents_sum > 0.0 {
            let differential = self.differential_sum / f64::from(self.samples);
            let agents = self.agents_sum / f64::from(self.samples);
            self.level += self.config.gain * differential / agents;
        }
        self.level = self.level.clamp(1.0, self.config.max_level.max(1.0));
        self.differential_sum = 0.0;
        self.agents_sum = 0.0;
        self.samples = 0;
    }
}

impl PacingPolicy for VicidialAdaptive {
    fn name(&self) -> String {
        "vicidial".into()
    }

    fn observe(&mut self, event: &PacingEvent) {
        match event {
            PacingEvent::DialResolved {
                result: DialResult::Human,
                ..
            } => self.humans_today += 1,
            PacingEvent::Abandoned { .. } => self.drops_today += 1,
            _ => {}
        }
    }

    fn dials_to_place(&mut self, snapshot: &PacingSnapshot<'_>) -> u32 {
        let now = snapshot.now;
        // Sample the differential once a second, as VICIdial's status loop does.
        if self
            .last_sample
            .is_none_or(|t| now.since(t) >= Duration::from_secs(1))
        {
            let ready = snapshot.count(AgentActivity::Ready) as f64;
            self.differential_sum += ready - f64::from(snapshot.calls_waiting);
            self.agents_sum += snapshot.agents.len() as f64;
            self.samples += 1;
            self.last_sample = Some(now);
        }
        let period = Duration::from_secs(self.config.adjust_every_secs.max(1));
        match self.next_adjust {
            None => self.next_adjust = Some(now + period),
            Some(t) if now >= t => {
                self.adjust();
                self.next_adjust = Some(now + period);
            }
            Some(_) => {}
        }
        lines_for_level(self.level, snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pacing::AgentView;

    fn snapshot_at<'a>(secs: i64, agents: &'a [AgentView]) -> PacingSnapshot<'a> {
        PacingSnapshot {
            now: Timestamp::from_secs(secs),
            agents,
            dials_in_flight: &[],
            calls_waiting: 0,
        }
    }

    #[test]
    fn level_rises_while_agents_wait_and_halves_on_excess_drops() {
        let mut ready = vec![
            AgentView {
                activity: AgentActivity::Ready,
                since: Timestamp::ZERO
            };
            5
        ];
        ready.extend(vec![
            AgentView {
                activity: AgentActivity::OnCall,
                since: Timestamp::ZERO
            };
            5
        ]);
        let mut policy = VicidialAdaptive::new(VicidialConfig::default());
        for s in 0..=120 {
            policy.dials_to_place(&snapshot_at(s, &ready));
        }
        assert!(
            (policy.level() - 3.0).abs() < 1e-9,
            "capped at 3.0, got {}",
            policy.level()
        );
        for _ in 0..10 {
            policy.observe(&PacingEvent::DialResolved {
                dialed_at: Timestamp::ZERO,
                at: Timestamp::ZERO,
                result: DialResult::Human,
            });
        }
        policy.observe(&PacingEvent::Abandoned { at: Timestamp::ZERO });
        for s in 121..=136 {
            policy.dials_to_place(&snapshot_at(s, &ready));
        }
        assert!(
            (policy.level() - 1.5).abs() < 1e-9,
            "halved, got {}",
            policy.level()
        );
    }
}
