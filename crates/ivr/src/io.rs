//! What goes in and out of an [`crate::IvrSession`]: events from the call's owner, commands back to it,
//! and the log steps that become interaction events. Plain data, serialisable, no behaviour.

use crate::model::TransferTarget;
use domain::{AgentId, CustomerId, InteractionEventKind, Pii, QueueId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A timer the session asked for; it comes back in [`IvrEvent::TimerFired`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TimerId(pub u32);

/// A request (lookup, webhook, queue query) the session made; its answer carries the same id, so a
/// late answer to an abandoned request is recognised and ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u32);

/// Who is calling; the call's owner fills it from the SIP dialog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallInfo {
    pub caller: Pii<String>,
    pub called: Pii<String>,
}

/// A customer record as the CRM returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRecord {
    pub id: CustomerId,
    pub name: Pii<String>,
    /// Customer tier: key, major, normal, small.
    pub tier: String,
    pub account_manager: Option<AgentId>,
    pub open_cases: u32,
}

/// The answer to a [`IvrCommand::Lookup`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LookupResult {
    Found(CustomerRecord),
    NotFound,
    Failed,
}

/// The answer to a [`IvrCommand::Webhook`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WebhookResult {
    /// The parsed JSON body of a 2xx reply.
    Reply(Pii<serde_json::Value>),
    /// Connection error, non-2xx status or a body that is not JSON.
    Failed,
}

/// A queue's state, the answer to [`IvrCommand::QueryQueue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    pub agents_available: u32,
    pub waiting: u32,
    pub estimated_wait: Duration,
}

/// News about the call's place in its queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QueueEvent {
    /// Position (1 = next) and estimated wait.
    Position { position: u32, estimated_wait: Duration },
    /// An agent answered; the owner bridges the call and the IVR waits for the agent to hang up.
    AgentAnswered { agent: AgentId },
    /// The queue refused or dropped the call (closed, full, timed out).
    Rejected,
}

/// An input to a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IvrEvent {
    /// The call is answered and media is up.
    Started,
    /// The last `Play` finished (not sent after `StopPlayback`).
    PromptFinished,
    /// A key: 0-9, *, #, A-D.
    Digit(char),
    TimerFired(TimerId),
    LookupResult {
        request: RequestId,
        result: LookupResult,
    },
    WebhookResult {
        request: RequestId,
        result: WebhookResult,
    },
    QueueState {
        request: RequestId,
        state: QueueSnapshot,
    },
    QueueEvent(QueueEvent),
    CallerHungUp,
    /// The agent ended their side; the caller is still on the line (e.g. for the survey).
    AgentHungUp,
}

/// A prompt file to play.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptFile {
    pub name: String,
    pub path: PathBuf,
}

/// What to look a customer up by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LookupKey {
    CallerNumber(Pii<String>),
    AccountNumber(Pii<String>),
}

/// An output of a session, for its owner to carry out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IvrCommand {
    /// Play these files in order; with `barge_in` a key stops playback.
    Play {
        prompts: Vec<PromptFile>,
        barge_in: bool,
    },
    StopPlayback,
    StartTimer {
        id: TimerId,
        after: Duration,
    },
    CancelTimer {
        id: TimerId,
    },
    Lookup {
        request: RequestId,
        key: LookupKey,
        timeout: Duration,
    },
    /// POST `body` as JSON to `url`; answer with [`IvrEvent::WebhookResult`].
    Webhook {
        request: RequestId,
        url: String,
        body: Pii<serde_json::Value>,
        timeout: Duration,
    },
    QueryQueue {
        request: RequestId,
        queue: QueueId,
    },
    /// Put the call in a queue. `skills` is the requirement expression as written in the script.
    Enqueue {
        queue: QueueId,
        priority: u8,
        skills: Option<String>,
        preferred_agent: Option<AgentId>,
    },
    /// Take the call out of its queue (it moved on to something else).
    LeaveQueue {
        queue: QueueId,
    },
    /// Turn the caller's place in `queue` into a callback to `number`; the IVR then ends the call.
    RequestCallback {
        queue: QueueId,
        number: Pii<String>,
    },
    /// Record a message into `mailbox`; the owner ends the call after it.
    Voicemail {
        mailbox: String,
        max_length: Duration,
        beep: bool,
    },
    /// Hand the call to a number or SIP URI; the IVR is done.
    Transfer {
        target: TransferTarget,
    },
    Hangup {
        reason: String,
    },
    /// Stop recording while the caller types sensitive digits.
    PauseRecording,
    ResumeRecording,
    /// A step for the interaction timeline.
    Log(IvrLog),
}

/// A step of the IVR path, recorded on the interaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IvrLog {
    NodeEntered {
        flow: String,
        node: String,
        key: Option<char>,
    },
    /// Collected digits; when `sensitive`, `digits` is already masked.
    DigitsCollected {
        variable: String,
        digits: Pii<String>,
        sensitive: bool,
    },
    /// A lookup or webhook finished: `what` is `crm` or `webhook`, `outcome` a short word.
    LookupDone {
        what: String,
        outcome: String,
    },
    CustomerIdentified {
        customer: CustomerId,
        tier: String,
    },
    SurveyAnswered {
        score: u8,
    },
}

impl IvrLog {
    /// The interaction event this step becomes.
    pub fn to_event_kind(&self) -> InteractionEventKind {
        match self.clone() {
            Self::NodeEntered { flow, node, key } => InteractionEventKind::IvrNode { flow, node, key },
            Self::DigitsCollected {
                variable,
                digits,
                sensitive,
            } => InteractionEventKind::DigitsCollected {
                variable,
                digits,
                sensitive,
            },
            Self::LookupDone { what, outcome } => InteractionEventKind::LookupDone { what, outcome },
            Self::CustomerIdentified { customer, tier } => {
                InteractionEventKind::CustomerIdentified { customer, tier }
            }
            Self::SurveyAnswered { score } => InteractionEventKind::Survey { score },
        }
    }
}

/// A compact one-line form used by golden tests and debugging; personal values stay masked.
impl fmt::Display for IvrCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Play { prompts, barge_in } => {
                let names: Vec<&str> = prompts.iter().map(|p| p.name.as_str()).collect();
                write!(
                    f,
                    "play {}{}",
                    names.join(","),
                    if *barge_in { " barge-in" } else { "" }
                )
            }
            Self::StopPlayback => write!(f, "stop"),
            Self::StartTimer { id, after } => {
                write!(f, "timer {} {}", id.0, crate::duration::format_duration(*after))
            }
            Self::CancelTimer { id } => write!(f, "cancel {}", id.0),
            Self::Lookup { request, key, .. } => match key {
                LookupKey::CallerNumber(_) => write!(f, "lookup {} caller", request.0),
                LookupKey::AccountNumber(_) => write!(f, "lookup {} account", request.0),
            },
            Self::Webhook { request, url, .. } => write!(f, "webhook {} {url}", request.0),
            Self::QueryQueue { request, queue } => write!(f, "query {} {queue}", request.0),
            Self::Enqueue {
                queue,
                priority,
                skills,
                preferred_agent,
            } => {
                write!(f, "enqueue {queue} priority={priority}")?;
                if let Some(skills) = skills {
                    write!(f, " skills={skills:?}")?;
                }
                if let Some(agent) = preferred_agent {
                    write!(f, " preferred={agent}")?;
                }
                Ok(())
            }
            Self::LeaveQueue { queue } => write!(f, "leave {queue}"),
            Self::RequestCallback { queue, .. } => write!(f, "callback {queue}"),
            Self::Voicemail {
                mailbox, max_length, ..
            } => {
                write!(
                    f,
                    "voicemail {mailbox} {}",
                    crate::duration::format_duration(*max_length)
                )
            }
            Self::Transfer { target } => match target {
                TransferTarget::Number(n) => write!(f, "transfer {n}"),
                TransferTarget::SipUri(u) => write!(f, "transfer {u}"),
            },
            Self::Hangup { reason } => write!(f, "hangup {reason}"),
            Self::PauseRecording => write!(f, "pause-recording"),
            Self::ResumeRecording => write!(f, "resume-recording"),
            Self::Log(log) => match log {
                IvrLog::NodeEntered { flow, node, key } => match key {
                    Some(k) => write!(f, "log node {flow}/{node} key={k}"),
                    None => write!(f, "log node {flow}/{node}"),
                },
                IvrLog::DigitsCollected {
                    variable,
                    digits,
                    sensitive,
                } => {
                    // Masked values are safe to show, and showing them proves the masking.
                    let shown = if *sensitive {
                        digits.expose().clone()
                    } else {
                        digits.to_string()
                    };
                    write!(
                        f,
                        "log digits {variable}={shown}{}",
                        if *sensitive { " sensitive" } else { "" }
                    )
                }
                IvrLog::LookupDone { what, outcome } => write!(f, "log {what} {outcome}"),
                IvrLog::CustomerIdentified { customer, tier } => {
                    write!(f, "log customer {customer} tier={tier}")
                }
                IvrLog::SurveyAnswered { score } => write!(f, "log survey {score}"),
            },
        }
    }
}
