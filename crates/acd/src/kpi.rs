//! Live KPIs, folded from the same events the router handles: counters per queue and time per agent
//! state, and the [`KpiSnapshot`] computed from them on demand for the wallboard and the metrics page.
//! Counters run from the start or from the last [`crate::Input::ResetKpis`].

use crate::agent::{AgentState, AgentStateKind};
use crate::config::{ServiceLevelFormula, ServiceLevelTarget};
use domain::{AgentId, CallId, QueueId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Event counts of one queue in the current interval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounters {
    /// Calls that entered the queue (including by overflow from another queue).
    pub queued: u64,
    pub answered: u64,
    /// Answered within the service-level threshold.
    pub answered_within: u64,
    pub abandoned: u64,
    /// Abandoned within the service-level threshold.
    pub abandoned_within: u64,
    /// Abandoned within the short-abandon threshold.
    pub abandoned_short: u64,
    pub overflowed: u64,
    /// Answered, abandoned or overflowed within the service-level threshold.
    pub removed_within: u64,
    /// Sum of queue waits of answered calls.
    pub answer_wait_ms: u64,
    /// Calls whose talk ended.
    pub handled: u64,
    pub talk_ms: u64,
    pub wrap_ms: u64,
}

impl QueueCounters {
    /// The service level under `formula`, 0.0-1.0; none before any call counts.
    pub fn service_level(&self, formula: ServiceLevelFormula) -> Option<f64> {
        let (num, den) = match formula {
            ServiceLevelFormula::AnsweredWithin => (self.answered_within, self.answered),
            ServiceLevelFormula::AnsweredOrAbandonedWithin => (
                self.answered_within.saturating_add(self.abandoned_within),
                self.answered.saturating_add(self.abandoned),
            ),
            ServiceLevelFormula::RemovedWithin => (self.removed_within, self.queued),
            ServiceLevelFormula::AnsweredWithinOfOffered => {
                (self.answered_within, self.answered.saturating_add(self.abandoned))
            }
            ServiceLevelFormula::AnsweredWithinOfOfferedExcludingShortAbandons => (
                self.answered_within,
                self.answered
                    .saturating_add(self.abandoned)
                    .saturating_sub(self.abandoned_short),
            ),
        };
        ratio(num, den)
    }

    /// Average speed of answer, milliseconds.
    pub fn asa_ms(&self) -> Option<u64> {
        self.answer_wait_ms.checked_div(self.answered)
    }

    /// Average handle time (talk, hold and wrap-up), milliseconds.
    pub fn aht_ms(&self) -> Option<u64> {
        self.talk_ms
            .saturating_add(self.wrap_ms)
            .checked_div(self.handled)
    }

    /// Abandoned / queued.
    pub fn abandon_rate(&self) -> Option<f64> {
        ratio(self.abandoned, self.queued)
    }

    /// Abandoned / queued, both without short abandons.
    pub fn abandon_rate_excluding_short(&self) -> Option<f64> {
        ratio(
            self.abandoned.saturating_sub(self.abandoned_short),
            self.queued.saturating_sub(self.abandoned_short),
        )
    }
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

/// Milliseconds an agent spent in each logged-in state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateTimes {
    pub available_ms: u64,
    pub not_ready_ms: u64,
    pub reserved_ms: u64,
    pub on_call_ms: u64,
    pub wrap_up_ms: u64,
}

impl StateTimes {
    /// Adds `ms` to the bucket of `state`.
    pub fn add(&mut self, state: &AgentState, ms: u64) {
        let bucket = match state {
            AgentState::LoggedOut => return,
            AgentState::Available => &mut self.available_ms,
            AgentState::NotReady { .. } => &mut self.not_ready_ms,
            AgentState::Reserved => &mut self.reserved_ms,
            AgentState::OnCall => &mut self.on_call_ms,
            AgentState::WrapUp { .. } => &mut self.wrap_up_ms,
        };
        *bucket = bucket.saturating_add(ms);
    }

    /// Time on calls and wrap-up over that plus available and ringing time.
    pub fn occupancy(&self) -> Option<f64> {
        let busy = self.on_call_ms.saturating_add(self.wrap_up_ms);
        ratio(
            busy,
            busy.saturating_add(self.available_ms)
                .saturating_add(self.reserved_ms),
        )
    }
}

/// Per-agent counters of the current interval.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCounters {
    pub handled: u64,
    pub talk_ms: u64,
    pub wrap_ms: u64,
    pub times: StateTimes,
}

/// One queue on the wallboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueKpi {
    pub queue: QueueId,
    /// Calls waiting (not counting those ringing an agent).
    pub waiting: u32,
    /// Calls ringing an agent.
    pub offering: u32,
    pub oldest_wait_ms: Option<u64>,
    /// Estimated wait of a call arriving now.
    pub estimated_wait_ms: Option<u64>,
    pub service_level: Option<f64>,
    pub service_level_target: ServiceLevelTarget,
    pub service_level_formula: ServiceLevelFormula,
    pub asa_ms: Option<u64>,
    pub abandon_rate: Option<f64>,
    pub abandon_rate_excluding_short: Option<f64>,
    pub aht_ms: Option<u64>,
    pub agents_by_state: BTreeMap<AgentStateKind, u32>,
    pub counters: QueueCounters,
}

/// One agent on the wallboard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentKpi {
    pub agent: AgentId,
    pub state: AgentState,
    pub since: Timestamp,
    /// The call the router has tied to the agent: offered to them (ringing) or connected. The one
    /// record of who talks to whom; desktops and calls read it here rather than keep their own.
    #[serde(default)]
    pub call: Option<CallId>,
    /// The agent placed `call` themselves (click-to-dial, a preview lead): on a call, outbound.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub placed: bool,
    /// The call whose after-call work the agent is doing (in wrap-up).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wrap_up_call: Option<CallId>,
    pub occupancy: Option<f64>,
    pub counters: AgentCounters,
    /// Calls kept from the agent for now because an offer of them to the agent failed, rang out or
    /// was rejected (the queue's `decline_pause_secs`), soonest end first. Only calls still waiting
    /// or ringing someone else count; the desktop and the wallboard count down to each `until`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held_back: Vec<HeldBack>,
}

/// A call the router does not offer to one agent until a moment, after an offer of it to them
/// failed, rang out or was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBack {
    pub call: CallId,
    /// From when the call may be offered to the agent again.
    pub until: Timestamp,
}

/// Everything the wallboard shows, at one instant. It deserialises too, so a cluster's router can
/// publish it for every node's wallboard.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KpiSnapshot {
    pub at: Timestamp,
    pub interval_start: Timestamp,
    pub queues: Vec<QueueKpi>,
    pub agents: Vec<AgentKpi>,
}

/// Estimated wait for a caller behind `ahead` others: the work ahead spread over the staffed agents.
/// None until an average handle time is known or when nobody is staffed.
pub fn estimated_wait_ms(ahead: u64, aht_ms: Option<u64>, staffed: u64, available: u64) -> Option<u64> {
    if available > ahead {
        return Some(0);
    }
    let aht = aht_ms?;
    if staffed == 0 {
        return None;
    }
    Some(ahead.saturating_add(1).saturating_mul(aht) / staffed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> QueueCounters {
        // 10 answered (8 within T), 4 abandoned (2 within T, 1 short), 1 overflowed (within T), 16 queued.
        QueueCounters {
            queued: 16,
            answered: 10,
            answered_within: 8,
            abandoned: 4,
            abandoned_within: 2,
            abandoned_short: 1,
            overflowed: 1,
            removed_within: 11,
            answer_wait_ms: 50_000,
            handled: 10,
            talk_ms: 1_200_000,
            wrap_ms: 300_000,
        }
    }

    #[test]
    fn service_level_formulas_follow_their_definitions() {
        let c = counters();
        let sl = |f| c.service_level(f).unwrap();
        assert_eq!(sl(ServiceLevelFormula::AnsweredWithin), 0.8);
        assert_eq!(sl(ServiceLevelFormula::AnsweredOrAbandonedWithin), 10.0 / 14.0);
        assert_eq!(sl(ServiceLevelFormula::RemovedWithin), 11.0 / 16.0);
        assert_eq!(sl(ServiceLevelFormula::AnsweredWithinOfOffered), 8.0 / 14.0);
        assert_eq!(
            sl(ServiceLevelFormula::AnsweredWithinOfOfferedExcludingShortAbandons),
            8.0 / 13.0
        );
        assert_eq!(
            QueueCounters::default().service_level(ServiceLevelFormula::AnsweredWithin),
            None
        );
        assert_eq!(c.asa_ms(), Some(5_000));
        assert_eq!(c.aht_ms(), Some(150_000));
        assert_eq!(c.abandon_rate(), Some(0.25));
        assert_eq!(c.abandon_rate_excluding_short(), Some(0.2));
    }

    #[test]
    fn occupancy_and_estimated_wait() {
        let t = StateTimes {
            available_ms: 100,
            not_ready_ms: 1000,
            reserved_ms: 0,
            on_call_ms: 250,
            wrap_up_ms: 50,
        };
        assert_eq!(t.occupancy(), Some(0.75));
        assert_eq!(estimated_wait_ms(0, None, 3, 1), Some(0));
        assert_eq!(estimated_wait_ms(2, Some(60_000), 3, 0), Some(60_000));
        assert_eq!(estimated_wait_ms(2, None, 3, 0), None);
    }
}
