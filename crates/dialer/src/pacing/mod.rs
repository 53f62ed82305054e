//! Pacing: how many numbers to dial now. Policies are pure: the owner hands them a snapshot of agents and
//! calls with the current time, and tells them what happened to earlier calls; they answer with a count.
//!
//! Policies: [`Progressive`] (one line per free agent), [`FixedRatio`], [`VicidialAdaptive`] (the baseline we
//! compare against) and [`Predictive`] (ours).

mod basic;
mod predictive;
mod vicidial;

pub use basic::{FixedRatio, Progressive};
pub use predictive::{Predictive, PredictiveConfig};
pub use vicidial::{VicidialAdaptive, VicidialConfig};

use crate::compliance::{ComplianceRules, RuleSet};
use domain::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What a logged-in agent who takes calls is doing. Agents on break or logged out are not in the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentActivity {
    /// Waiting for a call.
    Ready,
    /// Talking to a customer.
    OnCall,
    /// After-call work.
    WrapUp,
}

/// One agent as the pacing policy sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentView {
    pub activity: AgentActivity,
    /// When the current activity started.
    pub since: Timestamp,
}

/// Everything a policy needs to decide at one instant.
#[derive(Debug, Clone, Copy)]
pub struct PacingSnapshot<'a> {
    pub now: Timestamp,
    /// Agents logged in and taking calls.
    pub agents: &'a [AgentView],
    /// Start times of dials not yet resolved (ringing, or answered and still being classified).
    pub dials_in_flight: &'a [Timestamp],
    /// Calls answered by (what was classified as) a person and waiting for an agent.
    pub calls_waiting: u32,
}

impl PacingSnapshot<'_> {
    /// Number of agents with the given activity.
    pub fn count(&self, activity: AgentActivity) -> usize {
        self.agents.iter().filter(|a| a.activity == activity).count()
    }

    /// What progressive dialing would place now: one line per ready agent not already covered by a call
    /// in flight or a waiting call.
    pub fn progressive_dials(&self) -> u32 {
        let ready = self.count(AgentActivity::Ready);
        let covered = self.dials_in_flight.len() + self.calls_waiting as usize;
        u32::try_from(ready.saturating_sub(covered)).unwrap_or(u32::MAX)
    }
}

/// How a dial ended, as far as the dialer can tell (the answering-machine analyser's verdict, not the truth).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialResult {
    /// Answered and classified as a person.
    Human,
    /// Answered and classified as an answering machine.
    Machine,
    Busy,
    NoAnswer,
    /// Network failure, invalid number.
    Failed,
}

/// What happened, reported to the policy by its owner as it happens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PacingEvent {
    /// A dial placed at `dialed_at` was resolved at `at`.
    DialResolved {
        dialed_at: Timestamp,
        at: Timestamp,
        result: DialResult,
    },
    /// A call classified as a person reached an agent, `waited` after the end of the greeting.
    Connected { at: Timestamp, waited: Duration },
    /// A call classified as a person got no agent in time (an abandoned call under the rules).
    Abandoned { at: Timestamp },
    /// An agent finished talking.
    TalkEnded { at: Timestamp, talk: Duration },
    /// An agent finished after-call work.
    WrapEnded { at: Timestamp, wrap: Duration },
}

/// A pacing policy. Pure: no clock, no IO; deterministic for a given sequence of calls.
pub trait PacingPolicy: Send {
    /// Short name for reports.
    fn name(&self) -> String;
    /// Learns from an event.
    fn observe(&mut self, event: &PacingEvent);
    /// How many new dials to place at `snapshot.now`.
    fn dials_to_place(&mut self, snapshot: &PacingSnapshot<'_>) -> u32;
}

/// A policy by name, with its settings; what a scenario run or a CLI flag selects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PolicySpec {
    Progressive,
    FixedRatio { ratio: f64 },
    Vicidial(VicidialConfig),
    Predictive(PredictiveConfig),
}

impl PolicySpec {
    /// Builds a fresh policy instance.
    pub fn build(&self) -> Box<dyn PacingPolicy> {
        match self {
            PolicySpec::Progressive => Box::new(Progressive),
            PolicySpec::FixedRatio { ratio } => Box::new(FixedRatio::new(*ratio)),
            PolicySpec::Vicidial(config) => Box::new(VicidialAdaptive::new(config.clone())),
            PolicySpec::Predictive(config) => Box::new(Predictive::new(config.clone())),
        }
    }

    /// Returns the spec set up for a campaign's compliance rules: the abandonment cap, and under UK rules
    /// the estimated share of answering-machine verdicts that were people (counted as abandoned).
    pub fn for_rules(mut self, rules: &ComplianceRules) -> Self {
        match &mut self {
            PolicySpec::Vicidial(config) => config.drop_limit = rules.max_abandon_rate,
            PolicySpec::Predictive(config) => {
                config.abandon_cap = rules.max_abandon_rate;
                config.target_rate = config.target_rate.min(rules.max_abandon_rate);
                config.uk_false_positive_share =
                    (rules.rule_set == RuleSet::Uk).then_some(rules.amd_false_positive_share);
            }
            PolicySpec::Progressive | PolicySpec::FixedRatio { .. } => {}
        }
        self
    }
}

/// Why a policy name is not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyNameError {
    #[error("unknown policy {0:?}; use progressive, fixed:RATIO, vicidial or predictive")]
    Unknown(String),
    #[error("fixed ratio {0:?} is not a number between 1 and 20")]
    BadRatio(String),
}

impl FromStr for PolicySpec {
    type Err = PolicyNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s {
            "progressive" => return Ok(PolicySpec::Progressive),
            "vicidial" => return Ok(PolicySpec::Vicidial(VicidialConfig::default())),
            "predictive" => return Ok(PolicySpec::Predictive(PredictiveConfig::default())),
            _ => {}
        }
        if let Some(ratio) = s.strip_prefix("fixed:") {
            return match ratio.parse::<f64>() {
                Ok(r) if (1.0..=20.0).contains(&r) => Ok(PolicySpec::FixedRatio { ratio: r }),
                _ => Err(PolicyNameError::BadRatio(ratio.to_string())),
            };
        }
        Err(PolicyNameError::Unknown(s.chars().take(40).collect()))
    }
}

impl fmt::Display for PolicySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicySpec::Progressive => f.write_str("progressive"),
            PolicySpec::FixedRatio { ratio } => write!(f, "fixed:{ratio}"),
            PolicySpec::Vicidial(_) => f.write_str("vicidial"),
            PolicySpec::Predictive(_) => f.write_str("predictive"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_parse_and_print_back() {
        for name in ["progressive", "vicidial", "predictive", "fixed:1.5"] {
            let spec: PolicySpec = name.parse().unwrap();
            assert_eq!(spec.to_string(), name);
        }
        assert!(matches!(
            "fixed:0.5".parse::<PolicySpec>(),
            Err(PolicyNameError::BadRatio(_))
        ));
        assert!(matches!(
            "magic".parse::<PolicySpec>(),
            Err(PolicyNameError::Unknown(_))
        ));
    }

    proptest! {
        #[test]
        fn policy_names_never_panic(s in ".{0,60}") {
            let _ = s.parse::<PolicySpec>();
        }
    }
}
