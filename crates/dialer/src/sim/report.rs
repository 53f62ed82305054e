//! What a simulation measures: per-run accounting, the per-run [`Report`], and the [`Summary`] of many
//! replications (means and the share of replications over the abandonment cap).

use super::engine::AgentStateForAccounting;
use crate::compliance::{ComplianceRules, RuleSet};
use crate::pacing::DialResult;
use domain::Timestamp;
use serde::Serialize;
use std::time::Duration;

const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, Default)]
struct DayCounts {
    connected: u64,
    abandoned: u64,
    machine: u64,
}

/// Running totals of one simulation.
#[derive(Debug, Clone)]
pub(crate) struct Accounting {
    end: Timestamp,
    agents: usize,
    dials: u64,
    connects: u64,
    abandons: u64,
    abandoned_people: u64,
    human_verdicts: u64,
    machine_verdicts: u64,
    amd_false_positives: u64,
    people_answered: u64,
    wait_sum: f64,
    wait_max: f64,
    talk_ms: i64,
    wrap_ms: i64,
    idle_ms: i64,
    break_ms: i64,
    days: Vec<DayCounts>,
}

impl Accounting {
    pub(crate) fn new(end: Timestamp, agents: usize) -> Self {
        Self {
            end,
            agents,
            dials: 0,
            connects: 0,
            abandons: 0,
            abandoned_people: 0,
            human_verdicts: 0,
            machine_verdicts: 0,
            amd_false_positives: 0,
            people_answered: 0,
            wait_sum: 0.0,
            wait_max: 0.0,
            talk_ms: 0,
            wrap_ms: 0,
            idle_ms: 0,
            break_ms: 0,
            days: Vec::new(),
        }
    }

    fn day(&mut self, at: Timestamp) -> &mut DayCounts {
        let index = usize::try_from(at.as_millis().max(0) / DAY_MS)
            .unwrap_or(0)
            .min(10_000);
        if self.days.len() <= index {
            self.days.resize(index + 1, DayCounts::default());
        }
        // In bounds: just resized to cover it.
        &mut self.days[index]
    }

    /// Time an agent spent in `state` from `since` to `now`, clipped to the shift.
    pub(crate) fn agent_time(&mut self, state: AgentStateForAccounting, since: Timestamp, now: Timestamp) {
        let from = since.min(self.end).as_millis();
        let to = now.min(self.end).as_millis();
        let ms = (to - from).max(0);
        match state {
            AgentStateForAccounting::Ready => self.idle_ms += ms,
            AgentStateForAccounting::OnCall => self.talk_ms += ms,
            AgentStateForAccounting::WrapUp => self.wrap_ms += ms,
            AgentStateForAccounting::Break => self.break_ms += ms,
            AgentStateForAccounting::LoggedOut => {}
        }
    }

    pub(crate) fn dial(&mut self, _at: Timestamp) {
        self.dials += 1;
    }

    pub(crate) fn resolved(&mut self, at: Timestamp, verdict: DialResult, is_person: bool) {
        if is_person {
            self.people_answered += 1;
        }
        match verdict {
            DialResult::Human => self.human_verdicts += 1,
            DialResult::Machine => {
                self.machine_verdicts += 1;
                self.day(at).machine += 1;
                if is_person {
                    self.amd_false_positives += 1;
                }
            }
            DialResult::Busy | DialResult::NoAnswer | DialResult::Failed => {}
        }
    }

    pub(crate) fn abandoned(&mut self, at: Timestamp, is_person: bool) {
        self.abandons += 1;
        if is_person {
            self.abandoned_people += 1;
        }
        self.day(at).abandoned += 1;
    }

    pub(crate) fn connected(&mut self, at: Timestamp, waited: Duration) {
        self.connects += 1;
        let w = waited.as_secs_f64();
        self.wait_sum += w;
        self.wait_max = self.wait_max.max(w);
        self.day(at).connected += 1;
    }

    pub(crate) fn into_report(
        self,
        scenario: &str,
        policy: &str,
        seed: u64,
        rules: &ComplianceRules,
    ) -> Report {
        let share = rules.amd_false_positive_share;
        let rate = |abandoned: f64, connected: f64, machine: f64, uk: bool| {
            let fp = if uk { machine * share } else { 0.0 };
            let denominator = connected + abandoned + fp;
            if denominator > 0.0 {
                (abandoned + fp) / denominator
            } else {
                0.0
            }
        };
        let (a, c, m) = (
            self.abandons as f64,
            self.connects as f64,
            self.machine_verdicts as f64,
        );
        let worst = |uk: bool| {
            self.days
                .iter()
                .map(|d| rate(d.abandoned as f64, d.connected as f64, d.machine as f64, uk))
                .fold(0.0, f64::max)
        };
        let abandon_rate_us = rate(a, c, m, false);
        let abandon_rate_uk = rate(a, c, m, true);
        let handled_ms = self.talk_ms + self.wrap_ms;
        let staffed_ms = handled_ms + self.idle_ms;
        let staffed_hours = staffed_ms as f64 / 3_600_000.0;
        let per_hour = |x: f64| {
            if staffed_hours > 0.0 {
                x / staffed_hours
            } else {
                0.0
            }
        };
        let connects = self.connects as f64;
        let people = self.people_answered as f64;
        Report {
            scenario: scenario.to_string(),
            policy: policy.to_string(),
            seed,
            rules: rules.rule_set,
            agents: self.agents,
            dials: self.dials,
            connects: self.connects,
            abandons: self.abandons,
            human_verdicts: self.human_verdicts,
            machine_verdicts: self.machine_verdicts,
            amd_false_positives: self.amd_false_positives,
            abandon_rate: if rules.rule_set == RuleSet::Uk {
                abandon_rate_uk
            } else {
                abandon_rate_us
            },
            abandon_rate_us,
            abandon_rate_uk,
            worst_24h_us: worst(false),
            worst_24h_uk: worst(true),
            true_abandon_rate: if people > 0.0 {
                (self.abandoned_people + self.amd_false_positives) as f64 / people
            } else {
                0.0
            },
            occupancy: if staffed_ms > 0 {
                handled_ms as f64 / staffed_ms as f64
            } else {
                0.0
            },
            talk_minutes_per_agent_hour: per_hour(self.talk_ms as f64 / 60_000.0),
            connects_per_agent_hour: per_hour(connects),
            idle_between_calls_s: if connects > 0.0 {
                self.idle_ms as f64 / 1000.0 / connects
            } else {
                0.0
            },
            wait_after_greeting_mean_s: if connects > 0.0 {
                self.wait_sum / connects
            } else {
                0.0
            },
            wait_after_greeting_max_s: self.wait_max,
            dials_per_connect: if connects > 0.0 {
                self.dials as f64 / connects
            } else {
                0.0
            },
            staffed_agent_hours: staffed_hours,
            break_agent_hours: self.break_ms as f64 / 3_600_000.0,
        }
    }
}

/// Metrics of one simulated shift.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub scenario: String,
    pub policy: String,
    pub seed: u64,
    pub rules: RuleSet,
    pub agents: usize,
    pub dials: u64,
    /// Calls (classified as people) that reached an agent.
    pub connects: u64,
    /// Calls classified as people that got no agent within 2 s of the end of the greeting.
    pub abandons: u64,
    pub human_verdicts: u64,
    pub machine_verdicts: u64,
    /// People the analyser classified as machines (ground truth; the dialer cannot see these).
    pub amd_false_positives: u64,
    /// The abandonment rate under the scenario's rule set.
    pub abandon_rate: f64,
    /// Abandoned / (connected + abandoned), over calls classified as people.
    pub abandon_rate_us: f64,
    /// As US, plus the estimated AMD false positives in numerator and denominator.
    pub abandon_rate_uk: f64,
    /// Worst calendar day (24 h) of the run.
    pub worst_24h_us: f64,
    pub worst_24h_uk: f64,
    /// Ground truth: people abandoned or hung up on by the analyser / people who answered.
    pub true_abandon_rate: f64,
    /// (talk + wrap-up) / (talk + wrap-up + ready), over the shift.
    pub occupancy: f64,
    pub talk_minutes_per_agent_hour: f64,
    pub connects_per_agent_hour: f64,
    /// Ready time per connected call.
    pub idle_between_calls_s: f64,
    pub wait_after_greeting_mean_s: f64,
    pub wait_after_greeting_max_s: f64,
    pub dials_per_connect: f64,
    /// Agent hours logged in and not on break.
    pub staffed_agent_hours: f64,
    pub break_agent_hours: f64,
}

/// Means over replications of one scenario and policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub policy: String,
    pub replications: usize,
    pub abandon_rate: f64,
    pub abandon_rate_us: f64,
    pub abandon_rate_uk: f64,
    /// The highest worst-24-hour rate (scenario's rule set) over the replications.
    pub worst_24h_max: f64,
    /// Share of replications whose abandonment rate is over the cap.
    pub share_over_cap: f64,
    pub occupancy: f64,
    pub talk_minutes_per_agent_hour: f64,
    pub connects_per_agent_hour: f64,
    pub idle_between_calls_s: f64,
    pub wait_after_greeting_mean_s: f64,
    pub dials_per_connect: f64,
}

impl Summary {
    /// Summarises reports of one policy; `cap` is the abandonment cap (0.03).
    pub fn of(policy: &str, reports: &[Report], cap: f64) -> Self {
        let n = reports.len().max(1) as f64;
        let mean = |f: fn(&Report) -> f64| reports.iter().map(f).sum::<f64>() / n;
        let worst = |r: &Report| {
            if r.rules == RuleSet::Uk {
                r.worst_24h_uk
            } else {
                r.worst_24h_us
            }
        };
        Self {
            policy: policy.to_string(),
            replications: reports.len(),
            abandon_rate: mean(|r| r.abandon_rate),
            abandon_rate_us: mean(|r| r.abandon_rate_us),
            abandon_rate_uk: mean(|r| r.abandon_rate_uk),
            worst_24h_max: reports.iter().map(worst).fold(0.0, f64::max),
            share_over_cap: reports.iter().filter(|r| r.abandon_rate > cap).count() as f64 / n,
            occupancy: mean(|r| r.occupancy),
            talk_minutes_per_agent_hour: mean(|r| r.talk_minutes_per_agent_hour),
            connects_per_agent_hour: mean(|r| r.connects_per_agent_hour),
            idle_between_calls_s: mean(|r| r.idle_between_calls_s),
            wait_after_greeting_mean_s: mean(|r| r.wait_after_greeting_mean_s),
            dials_per_connect: mean(|r| r.dials_per_connect),
        }
    }

    /// Whether this meets the goal: mean rate within the cap and at most `max_share_over` of replications over.
    pub fn compliant(&self, cap: f64, max_share_over: f64) -> bool {
        self.abandon_rate <= cap && self.share_over_cap <= max_share_over
    }
}
