//! What the router takes in ([`Input`]) and gives out ([`Output`]), and the [`Explanation`] every offer
//! carries. All of it serialises, so an owner can journal inputs, publish outputs and replay both.

use crate::agent::AgentState;
use crate::config::{AgentConfig, OverflowTarget, Priority, QueueConfig, ReasonCode, Strategy};
use crate::expr::SkillExpr;
use domain::{AgentId, CallId, QueueId, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies one offer (one ring of one call to one or more agents).
pub type OfferId = u64;

/// A call to put in a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRequest {
    pub call: CallId,
    pub queue: QueueId,
    #[serde(default)]
    pub priority: Priority,
    /// Which agents qualify; none means every agent of the queue.
    #[serde(default)]
    pub requirement: Option<SkillExpr>,
    /// Offer to this agent first (account manager, last agent), for a while.
    #[serde(default)]
    pub preferred: Option<PreferredAgent>,
    /// When the caller first joined a queue, for a callback or a transfer that keeps its place;
    /// none means now. A time in the future is taken as now.
    #[serde(default)]
    pub original_enqueued_at: Option<Timestamp>,
}

impl CallRequest {
    /// A plain call: priority 0, no requirement, no preferred agent.
    pub fn new(call: CallId, queue: QueueId) -> Self {
        Self {
            call,
            queue,
            priority: Priority::default(),
            requirement: None,
            preferred: None,
            original_enqueued_at: None,
        }
    }
}

/// The agent a call goes to first, and how long it waits for them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreferredAgent {
    pub agent: AgentId,
    pub timeout_secs: u32,
}

/// An event for the router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Input {
    CallEnqueued(CallRequest),
    /// The caller hung up before being answered (while waiting or while ringing an agent).
    CallAbandoned {
        call: CallId,
    },
    AgentLogin {
        agent: AgentId,
    },
    AgentLogout {
        agent: AgentId,
    },
    AgentReady {
        agent: AgentId,
    },
    AgentNotReady {
        agent: AgentId,
        reason: ReasonCode,
    },
    OfferAccepted {
        call: CallId,
        agent: AgentId,
    },
    OfferRejected {
        call: CallId,
        agent: AgentId,
    },
    /// The ring of a call stopped through no fault of the agents (their owner restarted): every agent
    /// it rang is available again and the call goes back to its place in line.
    OfferWithdrawn {
        call: CallId,
    },
    /// The agent placed `call` themselves (click-to-dial, a preview lead): they are on it from now
    /// (from available, not ready or wrap-up) and no queue call is offered to them meanwhile.
    /// [`Input::CallEnded`] with the same call ends it: after-call work for `wrap_up_secs`, then the
    /// agent is ready, or not ready with `then_not_ready`. Idempotent: the same call again changes
    /// nothing, even after it ended.
    CallPlaced {
        agent: AgentId,
        call: CallId,
        #[serde(default)]
        wrap_up_secs: u32,
        #[serde(default)]
        then_not_ready: Option<ReasonCode>,
    },
    /// A connected call ended (queued or placed by the agent); the agent goes to wrap-up.
    CallEnded {
        call: CallId,
    },
    /// The agent finished after-call work early.
    WrapUpDone {
        agent: AgentId,
    },
    /// The agent asks for `secs` more after-call work, up to the queue's `wrap_up_max_secs`.
    ExtendWrapUp {
        agent: AgentId,
        secs: u32,
    },
    /// Nothing happened but time passed: fire the timers that are due.
    Tick,
    /// The router runs again after a time when none ran (a cluster leader took over, or rebuilt its
    /// state after the store failed). Answers sent meanwhile could not be heard, so an offer must
    /// not ring out for that time: each ringing offer keeps the ring time it had left when the
    /// router last ran, and at least [`crate::RESUME_ANSWER_GRACE`] for answers still on their way.
    /// If it rings out all the same, its agents are not blamed (not put not ready): nobody can know
    /// their phones rang that long. Other timers (waits, wrap-up) are real time and fire as due.
    /// Sent by the leader only.
    Resumed,
    /// Add or replace a queue.
    UpsertQueue(QueueConfig),
    /// Add or replace an agent's profile (skills and queues); the agent's state is kept.
    UpsertAgent(AgentConfig),
    /// Start a new KPI interval: zero the counters.
    ResetKpis,
}

/// Why an offer ended without the agent taking the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    NoAnswer,
    Rejected,
    AnsweredElsewhere,
    CallerAbandoned,
    AgentLoggedOut,
    Withdrawn,
}

impl CancelReason {
    fn text(self) -> &'static str {
        match self {
            CancelReason::NoAnswer => "no answer",
            CancelReason::Rejected => "rejected",
            CancelReason::AnsweredElsewhere => "answered elsewhere",
            CancelReason::CallerAbandoned => "caller abandoned",
            CancelReason::AgentLoggedOut => "agent logged out",
            CancelReason::Withdrawn => "withdrawn",
        }
    }
}

/// Why a call left its queue for the overflow target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowReason {
    MaxWait,
    QueueFull,
    NoAgents,
}

impl OverflowReason {
    fn text(self) -> &'static str {
        match self {
            OverflowReason::MaxWait => "max wait",
            OverflowReason::QueueFull => "queue full",
            OverflowReason::NoAgents => "no agents logged in",
        }
    }
}

/// What made the router look for a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    CallArrived,
    AgentAvailable,
    StepReached,
    PreferredExpired,
    PreferredUnavailable,
    OfferReturned,
    PauseOver,
    Reconfigured,
}

impl Trigger {
    fn text(self) -> &'static str {
        match self {
            Trigger::CallArrived => "the call arrived",
            Trigger::AgentAvailable => "the agent became available",
            Trigger::StepReached => "the call reached a new routing step",
            Trigger::PreferredExpired => "the preferred-agent time ran out",
            Trigger::PreferredUnavailable => "the preferred agent logged out",
            Trigger::OfferReturned => "the call came back from a failed offer",
            Trigger::PauseOver => "an agent's pause on this call after declining it ended",
            Trigger::Reconfigured => "the configuration changed",
        }
    }
}

/// The rule that picked the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "rule", content = "strategy", rename_all = "snake_case")]
pub enum Rule {
    /// The call's preferred agent, within its timeout.
    PreferredAgent,
    /// The queue's strategy.
    Strategy(Strategy),
}

/// The winning agent's score under the rule in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Score {
    /// Milliseconds available.
    IdleMs(u64),
    /// Sum of proficiencies in the skills the call names.
    SkillSum(u32),
    /// Turn of the agent's previous offer (lower is longer ago).
    LastOfferTurn(u64),
    /// Calls handled so far.
    HandledCalls(u64),
    /// Talk time so far, milliseconds.
    TalkMs(u64),
    /// Drawn at random among this many eligible agents.
    RandomAmong(u32),
    /// Rung together with every other eligible agent.
    RingAll(u32),
    /// The preferred agent.
    Preferred,
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Score::IdleMs(ms) => write!(f, "idle {}", Secs(*ms)),
            Score::SkillSum(s) => write!(f, "skill sum {s}"),
            Score::LastOfferTurn(t) => write!(f, "last offered at turn {t}"),
            Score::HandledCalls(n) => write!(f, "{n} calls handled"),
            Score::TalkMs(ms) => write!(f, "talk time {}", Secs(*ms)),
            Score::RandomAmong(n) => write!(f, "random draw among {n}"),
            Score::RingAll(n) => write!(f, "ringing all {n}"),
            Score::Preferred => f.write_str("preferred agent"),
        }
    }
}

/// Milliseconds shown as seconds with one decimal.
pub(crate) struct Secs(pub u64);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}s", self.0 / 1000, (self.0 % 1000) / 100)
    }
}

/// Why a call went to an agent: enough for a supervisor to answer the question afterwards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub call: CallId,
    pub queue: QueueId,
    pub trigger: Trigger,
    pub rule: Rule,
    /// Index of the routing step in effect (0 = first) and its description.
    pub step: u32,
    pub step_rule: String,
    pub priority: u8,
    /// Priority plus aging at the time of the decision.
    pub effective_priority: f64,
    /// Time waited in this queue.
    pub waited_ms: u64,
    /// Waiting calls examined (when an agent became available).
    pub calls_considered: u32,
    /// Available agents in the queue when the decision was made.
    pub agents_available: u32,
    /// Available agents examined.
    pub agents_considered: u32,
    /// Of those, the ones that qualified.
    pub agents_eligible: u32,
    pub chosen: Vec<AgentId>,
    pub score: Score,
}

impl Explanation {
    /// One human sentence, e.g. for the CRM interaction log.
    pub fn sentence(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let agents: Vec<&str> = self.chosen.iter().map(|a| a.as_str()).collect();
        let rule = match self.rule {
            Rule::PreferredAgent => "preferred agent".to_string(),
            Rule::Strategy(s) => s.name().to_string(),
        };
        write!(
            f,
            "Call {} (priority {}, effective {:.2}, waited {}) went to {} {} in queue {} by {} at step {} ({}) \
             because {}: ",
            self.call,
            self.priority,
            self.effective_priority,
            Secs(self.waited_ms),
            if agents.len() == 1 { "agent" } else { "agents" },
            agents.join(", "),
            self.queue,
            rule,
            self.step,
            self.step_rule,
            self.trigger.text(),
        )?;
        if self.calls_considered > 0 {
            write!(
                f,
                "it was the best of {} waiting calls examined; ",
                self.calls_considered
            )?;
        }
        write!(
            f,
            "{} of {} available agents examined were eligible; winning score: {}.",
            self.agents_eligible, self.agents_considered, self.score
        )?;
        if self.agents_available > self.agents_considered {
            write!(
                f,
                " ({} agents were available in the queue.)",
                self.agents_available
            )?;
        }
        Ok(())
    }
}

/// A call offered to one agent, or to several at once (ring-all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    pub offer: OfferId,
    pub call: CallId,
    pub queue: QueueId,
    pub agents: Vec<AgentId>,
    /// Redirected on no answer at this time.
    pub expires_at: Timestamp,
    pub explanation: Explanation,
}

/// Something the owner must act on or publish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Output {
    /// The call is waiting in a queue.
    Queued { call: CallId, queue: QueueId },
    /// Ring these agents.
    Offer(Offer),
    /// Stop ringing this agent.
    OfferCancelled {
        offer: OfferId,
        call: CallId,
        agent: AgentId,
        reason: CancelReason,
    },
    /// The call was answered; connect it.
    Answered {
        call: CallId,
        queue: QueueId,
        agent: AgentId,
        waited_ms: u64,
    },
    /// The caller hung up while queued.
    Abandoned {
        call: CallId,
        queue: QueueId,
        position: u32,
        waited_ms: u64,
    },
    /// The call left its queue for the target. A queue target is handled by the router itself.
    Overflowed {
        call: CallId,
        from: QueueId,
        target: OverflowTarget,
        reason: OverflowReason,
        waited_ms: u64,
    },
    /// Tell the caller their position and estimated wait.
    Announce {
        call: CallId,
        queue: QueueId,
        position: u32,
        estimated_wait_secs: Option<u64>,
    },
    AgentStateChanged {
        agent: AgentId,
        from: AgentState,
        to: AgentState,
        at: Timestamp,
    },
}

impl fmt::Display for Output {
    /// One line, for decision logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Queued { call, queue } => write!(f, "queued {call} in {queue}"),
            Output::Offer(o) => {
                let agents: Vec<&str> = o.agents.iter().map(|a| a.as_str()).collect();
                let rule = match o.explanation.rule {
                    Rule::PreferredAgent => "preferred".to_string(),
                    Rule::Strategy(s) => s.name().to_string(),
                };
                write!(
                    f,
                    "offer#{} {} -> {} ({rule}, step {}, {})",
                    o.offer,
                    o.call,
                    agents.join(","),
                    o.explanation.step,
                    o.explanation.score
                )
            }
            Output::OfferCancelled {
                offer,
                call,
                agent,
                reason,
            } => {
                write!(f, "cancel offer#{offer} {call} @ {agent}: {}", reason.text())
            }
            Output::Answered {
                call,
                agent,
                waited_ms,
                ..
            } => {
                write!(f, "answered {call} by {agent} after {}", Secs(*waited_ms))
            }
            Output::Abandoned {
                call,
                queue,
                position,
                waited_ms,
            } => {
                write!(
                    f,
                    "abandoned {call} from {queue} at position {position} after {}",
                    Secs(*waited_ms)
                )
            }
            Output::Overflowed {
                call,
                from,
                target,
                reason,
                waited_ms,
            } => {
                write!(
                    f,
                    "overflow {call} from {from} to {target}: {} after {}",
                    reason.text(),
                    Secs(*waited_ms)
                )
            }
            Output::Announce {
                call,
                queue,
                position,
                estimated_wait_secs,
            } => {
                write!(f, "announce {call} in {queue}: position {position}")?;
                match estimated_wait_secs {
                    Some(s) => write!(f, ", about {s}s"),
                    None => f.write_str(", wait unknown"),
                }
            }
            Output::AgentStateChanged { agent, from, to, .. } => write!(f, "{agent}: {from} -> {to}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RoutingStep;

    fn ids() -> (CallId, AgentId, QueueId) {
        (
            CallId::new("c1").unwrap(),
            AgentId::new("alice").unwrap(),
            QueueId::new("support").unwrap(),
        )
    }

    #[test]
    fn inputs_round_trip_through_json() {
        let (call, agent, queue) = ids();
        let mut queue_config = QueueConfig::new(queue.clone());
        queue_config.steps = vec![RoutingStep::INITIAL];
        let inputs = vec![
            Input::CallEnqueued(CallRequest {
                requirement: Some("spanish >= 3 && billing >= 2".parse().unwrap()),
                preferred: Some(PreferredAgent {
                    agent: agent.clone(),
                    timeout_secs: 20,
                }),
                original_enqueued_at: Some(Timestamp::from_secs(3)),
                ..CallRequest::new(call.clone(), queue.clone())
            }),
            Input::CallAbandoned { call: call.clone() },
            Input::AgentNotReady {
                agent: agent.clone(),
                reason: ReasonCode::new("lunch").unwrap(),
            },
            Input::OfferAccepted {
                call: call.clone(),
                agent: agent.clone(),
            },
            Input::OfferWithdrawn { call: call.clone() },
            Input::Tick,
            Input::Resumed,
            Input::UpsertQueue(queue_config),
            Input::UpsertAgent(AgentConfig {
                id: agent,
                skills: Default::default(),
                queues: vec![],
            }),
            Input::ResetKpis,
        ];
        for input in inputs {
            let json = serde_json::to_string(&input).unwrap();
            let back: Input = serde_json::from_str(&json).unwrap();
            assert_eq!(back, input, "{json}");
        }
        let minimal: Input =
            serde_json::from_str(r#"{"type":"call_enqueued","call":"c9","queue":"support"}"#).unwrap();
        assert!(matches!(minimal, Input::CallEnqueued(CallRequest { priority, .. }) if priority.get() == 0));
        assert!(
            serde_json::from_str::<Input>(
                r#"{"type":"call_enqueued","call":"c9","queue":"support","priority":12}"#
            )
            .is_err()
        );
    }

    #[test]
    fn outputs_render_as_log_lines_and_round_trip() {
        let (call, agent, queue) = ids();
        let outputs = vec![
            Output::Abandoned {
                call: call.clone(),
                queue: queue.clone(),
                position: 3,
                waited_ms: 12_345,
            },
            Output::Overflowed {
                call: call.clone(),
                from: queue.clone(),
                target: OverflowTarget::Callback,
                reason: OverflowReason::MaxWait,
                waited_ms: 60_000,
            },
            Output::Announce {
                call: call.clone(),
                queue,
                position: 2,
                estimated_wait_secs: None,
            },
            Output::AgentStateChanged {
                agent,
                from: AgentState::Available,
                to: AgentState::NotReady {
                    reason: ReasonCode::no_answer(),
                },
                at: Timestamp::from_secs(1),
            },
        ];
        let lines: Vec<String> = outputs.iter().map(|o| o.to_string()).collect();
        assert_eq!(
            lines,
            [
                "abandoned c1 from support at position 3 after 12.3s",
                "overflow c1 from support to callback: max wait after 60.0s",
                "announce c1 in support: position 2, wait unknown",
                "alice: available -> not_ready(no-answer)"
            ]
        );
        for out in outputs {
            let back: Output = serde_json::from_str(&serde_json::to_string(&out).unwrap()).unwrap();
            assert_eq!(back, out);
        }
    }
}
