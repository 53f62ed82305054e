//! Simulation scenarios: the list's answer behaviour, answering-machine detection, handling times, the
//! shape of the shift (breaks, lunch, answer-rate changes) and the compliance rules, read from TOML.

use crate::compliance::{ComplianceConfig, ComplianceError, ComplianceRules};
use serde::{Deserialize, Serialize};

/// How the numbers on the list behave when dialled. Probabilities are per dial; what is left after live,
/// machine and busy rings out with no answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeadModel {
    /// P(a person answers).
    pub live_answer: f64,
    /// P(an answering machine answers).
    pub machine: f64,
    /// P(busy signal).
    pub busy: f64,
    /// Time from dial to answer (lognormal), for people and machines.
    pub answer_time_mean_s: f64,
    pub answer_time_cv: f64,
    /// Time until a busy signal comes back.
    pub busy_time_s: f64,
    /// Length of the called person's greeting ("Hello?").
    pub greeting_mean_s: f64,
    pub greeting_cv: f64,
    /// How long a person waits in silence after their greeting before hanging up (lognormal, cv 0.5).
    pub patience_mean_s: f64,
}

impl Default for LeadModel {
    fn default() -> Self {
        Self {
            live_answer: 0.3,
            machine: 0.2,
            busy: 0.08,
            answer_time_mean_s: 10.0,
            answer_time_cv: 0.5,
            busy_time_s: 4.0,
            greeting_mean_s: 1.2,
            greeting_cv: 0.4,
            patience_mean_s: 5.0,
        }
    }
}

/// The answering-machine analyser: its decision delay after the greeting and its error rates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmdModel {
    /// Silence after the greeting before the analyser decides (lognormal, capped).
    pub decision_mean_s: f64,
    pub decision_cap_s: f64,
    /// P(a person is classified as a machine and hung up on).
    pub false_positive: f64,
    /// P(a machine is classified as a person and sent to an agent).
    pub false_negative: f64,
    /// How long an agent spends on a machine sent to them by mistake.
    pub machine_talk_s: f64,
}

impl Default for AmdModel {
    fn default() -> Self {
        Self {
            decision_mean_s: 0.6,
            decision_cap_s: 1.5,
            false_positive: 0.02,
            false_negative: 0.08,
            machine_talk_s: 6.0,
        }
    }
}

/// Agent handling times (lognormal).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HandlingModel {
    pub talk_mean_s: f64,
    pub talk_cv: f64,
    pub wrap_mean_s: f64,
    pub wrap_cv: f64,
}

impl Default for HandlingModel {
    fn default() -> Self {
        Self {
            talk_mean_s: 180.0,
            talk_cv: 0.8,
            wrap_mean_s: 15.0,
            wrap_cv: 0.5,
        }
    }
}

/// The shape of the shift.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Shape {
    /// Everyone logged in all shift, no breaks, constant answer rate.
    #[default]
    Stationary,
    /// Staggered logins, and breaks spread over the shift so a few agents are away at any time.
    RollingBreaks {
        breaks_per_agent: u32,
        break_minutes: f64,
        login_spread_minutes: f64,
        stagger_minutes: f64,
    },
    /// A share of the team goes to lunch at the same time.
    LunchStep {
        share: f64,
        start_hour: f64,
        minutes: f64,
    },
    /// The live answer probability is multiplied by `factor` from `at_hour` on.
    AnswerHalving { at_hour: f64, factor: f64 },
}

/// A simulation scenario as written in TOML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub agents: u32,
    #[serde(default = "default_shift_hours")]
    pub shift_hours: f64,
    /// Pacing decisions are taken this often, and whenever an agent becomes ready.
    #[serde(default = "default_decision_ms")]
    pub decision_every_ms: u64,
    #[serde(default)]
    pub leads: LeadModel,
    #[serde(default)]
    pub amd: AmdModel,
    #[serde(default)]
    pub handling: HandlingModel,
    #[serde(default)]
    pub shape: Shape,
    #[serde(default)]
    pub compliance: ComplianceConfig,
}

fn default_shift_hours() -> f64 {
    8.0
}
fn default_decision_ms() -> u64 {
    1000
}

/// Why a scenario is rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScenarioError {
    #[error("scenario is not valid TOML for a scenario: {0}")]
    Toml(String),
    #[error("{field} must be {expected}, got {value}")]
    OutOfRange {
        field: &'static str,
        expected: &'static str,
        value: f64,
    },
    #[error("live_answer + machine + busy must not exceed 1, got {0}")]
    ProbabilitiesOverOne(f64),
    #[error("compliance: {0}")]
    Compliance(#[from] ComplianceError),
}

/// A scenario that passed validation, with its compliance rules resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidScenario {
    pub scenario: Scenario,
    pub rules: ComplianceRules,
}

fn check(
    field: &'static str,
    value: f64,
    lo: f64,
    hi: f64,
    expected: &'static str,
) -> Result<(), ScenarioError> {
    if value.is_finite() && (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(ScenarioError::OutOfRange {
            field,
            expected,
            value,
        })
    }
}

impl Scenario {
    /// Parses and validates a scenario file's text.
    pub fn from_toml(text: &str) -> Result<ValidScenario, ScenarioError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Toml(e.to_string()))?;
        scenario.validate()
    }

    /// Checks every field and resolves the compliance rules.
    pub fn validate(self) -> Result<ValidScenario, ScenarioError> {
        let prob = "a probability between 0 and 1";
        let positive = "a positive number of seconds up to a day";
        check(
            "agents",
            f64::from(self.agents),
            0.0,
            10_000.0,
            "between 0 and 10000",
        )?;
        check(
            "shift_hours",
            self.shift_hours,
            0.01,
            24.0 * 7.0,
            "between 0.01 and 168",
        )?;
        check(
            "decision_every_ms",
            self.decision_every_ms as f64,
            100.0,
            60_000.0,
            "between 100 and 60000",
        )?;
        let l = &self.leads;
        check("leads.live_answer", l.live_answer, 0.0, 1.0, prob)?;
        check("leads.machine", l.machine, 0.0, 1.0, prob)?;
        check("leads.busy", l.busy, 0.0, 1.0, prob)?;
        let sum = l.live_answer + l.machine + l.busy;
        if sum > 1.0 + 1e-9 {
            return Err(ScenarioError::ProbabilitiesOverOne(sum));
        }
        check(
            "leads.answer_time_mean_s",
            l.answer_time_mean_s,
            0.1,
            86_400.0,
            positive,
        )?;
        check(
            "leads.answer_time_cv",
            l.answer_time_cv,
            0.0,
            10.0,
            "between 0 and 10",
        )?;
        check("leads.busy_time_s", l.busy_time_s, 0.1, 86_400.0, positive)?;
        check(
            "leads.greeting_mean_s",
            l.greeting_mean_s,
            0.1,
            60.0,
            "between 0.1 and 60",
        )?;
        check("leads.greeting_cv", l.greeting_cv, 0.0, 10.0, "between 0 and 10")?;
        check(
            "leads.patience_mean_s",
            l.patience_mean_s,
            0.1,
            3600.0,
            "between 0.1 and 3600",
        )?;
        let a = &self.amd;
        check(
            "amd.decision_mean_s",
            a.decision_mean_s,
            0.0,
            60.0,
            "between 0 and 60",
        )?;
        check(
            "amd.decision_cap_s",
            a.decision_cap_s,
            0.0,
            60.0,
            "between 0 and 60",
        )?;
        check("amd.false_positive", a.false_positive, 0.0, 1.0, prob)?;
        check("amd.false_negative", a.false_negative, 0.0, 1.0, prob)?;
        check(
            "amd.machine_talk_s",
            a.machine_talk_s,
            0.1,
            3600.0,
            "between 0.1 and 3600",
        )?;
        let h = &self.handling;
        check("handling.talk_mean_s", h.talk_mean_s, 0.1, 86_400.0, positive)?;
        check("handling.talk_cv", h.talk_cv, 0.0, 10.0, "between 0 and 10")?;
        check("handling.wrap_mean_s", h.wrap_mean_s, 0.1, 86_400.0, positive)?;
        check("handling.wrap_cv", h.wrap_cv, 0.0, 10.0, "between 0 and 10")?;
        match &self.shape {
            Shape::Stationary => {}
            Shape::RollingBreaks {
                breaks_per_agent,
                break_minutes,
                login_spread_minutes,
                stagger_minutes,
            } => {
                check(
                    "shape.breaks_per_agent",
                    f64::from(*breaks_per_agent),
                    0.0,
                    20.0,
                    "between 0 and 20",
                )?;
                check(
                    "shape.break_minutes",
                    *break_minutes,
                    0.0,
                    600.0,
                    "between 0 and 600",
                )?;
                check(
                    "shape.login_spread_minutes",
                    *login_spread_minutes,
                    0.0,
                    600.0,
                    "between 0 and 600",
                )?;
                check(
                    "shape.stagger_minutes",
                    *stagger_minutes,
                    0.0,
                    600.0,
                    "between 0 and 600",
                )?;
            }
            Shape::LunchStep {
                share,
                start_hour,
                minutes,
            } => {
                check("shape.share", *share, 0.0, 1.0, prob)?;
                check("shape.start_hour", *start_hour, 0.0, 168.0, "between 0 and 168")?;
                check("shape.minutes", *minutes, 0.0, 600.0, "between 0 and 600")?;
            }
            Shape::AnswerHalving { at_hour, factor } => {
                check("shape.at_hour", *at_hour, 0.0, 168.0, "between 0 and 168")?;
                check("shape.factor", *factor, 0.0, 1.0, "between 0 and 1")?;
            }
        }
        let mut rules = ComplianceRules::from_config(&self.compliance)?;
        if self.compliance.amd_false_positive_share.is_none() {
            // The campaign's calibrated estimate: P(person | machine verdict) for this list and analyser.
            let people = l.live_answer * a.false_positive;
            let machines = l.machine * (1.0 - a.false_negative);
            rules.amd_false_positive_share = if people + machines > 0.0 {
                people / (people + machines)
            } else {
                0.0
            };
        }
        Ok(ValidScenario {
            scenario: self,
            rules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn minimal_scenario_gets_defaults() {
        let v = Scenario::from_toml("name = \"x\"\nagents = 20\n").unwrap();
        assert_eq!(v.scenario.shift_hours, 8.0);
        assert_eq!(v.scenario.shape, Shape::Stationary);
        assert!(v.rules.amd_false_positive_share > 0.0 && v.rules.amd_false_positive_share < 0.1);
    }

    #[test]
    fn bad_scenarios_say_what_is_wrong() {
        let over = "name = \"x\"\nagents = 2\n[leads]\nlive_answer = 0.7\nmachine = 0.5\n";
        assert!(matches!(
            Scenario::from_toml(over),
            Err(ScenarioError::ProbabilitiesOverOne(_))
        ));
        let ring = "name = \"x\"\nagents = 2\n[compliance]\nring_secs = 5\n";
        assert!(matches!(
            Scenario::from_toml(ring),
            Err(ScenarioError::Compliance(_))
        ));
        let typo = "name = \"x\"\nagents = 2\n[leads]\nlive_answr = 0.2\n";
        let err = Scenario::from_toml(typo).unwrap_err().to_string();
        assert!(err.contains("live_answr"), "{err}");
        let shape = "name = \"x\"\nagents = 2\n[shape]\nkind = \"lunch_step\"\nshare = 2.0\nstart_hour = 4\nminutes = 30\n";
        assert!(matches!(
            Scenario::from_toml(shape),
            Err(ScenarioError::OutOfRange {
                field: "shape.share",
                ..
            })
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = Scenario::from_toml(&text);
        }

        #[test]
        fn numbers_out_of_range_are_rejected_not_panicking(live in -2.0f64..2.0, agents in 0u32..20_000) {
            let text = format!("name = \"p\"\nagents = {agents}\n[leads]\nlive_answer = {live}\nmachine = 0\nbusy = 0\n");
            let ok = Scenario::from_toml(&text).is_ok();
            prop_assert_eq!(ok, (0.0..=1.0).contains(&live) && agents <= 10_000);
        }
    }
}
