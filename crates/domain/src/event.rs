//! The interaction timeline. Call control emits one [`InteractionEvent`] per step of a call; the CRM
//! store writes them durably and folds them into the interaction row. `(interaction, seq)` is unique,
//! so replaying a journal after a crash writes nothing twice.

use crate::{AgentId, CampaignId, CustomerId, InteractionId, LeadId, Pii, QueueId, Timestamp};
use serde::{Deserialize, Serialize};

/// How the customer reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Voice,
    Callback,
}

/// Who started the contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Who or what ended the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndedBy {
    Caller,
    Agent,
    System,
    Timeout,
    Error,
}

/// Media quality of one leg at the end of a call.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct QualityReport {
    /// Fraction of expected packets that never arrived, 0.0-1.0.
    pub loss: f64,
    /// Interarrival jitter in milliseconds (RFC 3550).
    pub jitter_ms: f64,
    /// E-model estimate of the mean opinion score, 1.0-4.5.
    pub mos: f64,
}

/// The reason of the end a surviving node writes for a call whose node died (`kill -9`, a lost host).
pub const NODE_LOST_REASON: &str = "node_lost";

/// The sequence number of that end: after any event the call's own node wrote, and the same from
/// every node that writes it, so that writing it twice stores it once.
pub const NODE_LOST_SEQ: u32 = u32::MAX;

/// One step of one interaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteractionEvent {
    pub interaction: InteractionId,
    /// Position of this event in its interaction, from 0, with no gaps.
    pub seq: u32,
    pub at: Timestamp,
    pub kind: InteractionEventKind,
}

/// What happened. Personal values (numbers, digits) stay inside [`Pii`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InteractionEventKind {
    /// The call reached the platform.
    Arrived {
        channel: Channel,
        direction: Direction,
        from: Pii<String>,
        to: Pii<String>,
    },
    /// The CRM recognised the customer.
    CustomerIdentified {
        customer: CustomerId,
        tier: String,
    },
    /// The IVR entered a node; `key` is the digit that led there, if any.
    IvrNode {
        flow: String,
        node: String,
        key: Option<char>,
    },
    /// Digits collected by the IVR. Sensitive values arrive already masked.
    DigitsCollected {
        variable: String,
        digits: Pii<String>,
        sensitive: bool,
    },
    /// A CRM lookup or webhook finished.
    LookupDone {
        what: String,
        outcome: String,
    },
    /// The call joined a queue.
    Enqueued {
        queue: QueueId,
        priority: u8,
    },
    /// The call was offered to an agent, with the reason the router chose them.
    Offered {
        agent: AgentId,
        explanation: String,
    },
    /// The agent did not answer in time or rejected; the call went back to its place.
    OfferFailed {
        agent: AgentId,
        reason: String,
    },
    /// The agent answered.
    Answered {
        agent: AgentId,
    },
    Held,
    Resumed,
    /// Blind or consultative transfer to a queue, agent or number.
    Transferred {
        target: Pii<String>,
    },
    /// The caller hung up while queued.
    Abandoned {
        queue: QueueId,
        position: u32,
        waited_ms: u64,
    },
    /// The queue overflowed the call elsewhere.
    Overflowed {
        from: QueueId,
        to: String,
    },
    /// A callback was promised.
    CallbackRequested {
        number: Pii<String>,
    },
    Recording {
        path: String,
    },
    /// The call ended.
    Ended {
        by: EndedBy,
        reason: String,
        quality: Option<QualityReport>,
    },
    /// The agent finished after-call work.
    WrappedUp {
        agent: AgentId,
        disposition: String,
        notes: Pii<String>,
    },
    /// Post-call survey answer, 1-5.
    Survey {
        score: u8,
    },
    /// The caller left a voicemail in `mailbox`: the recording's path and length.
    Voicemail {
        mailbox: String,
        path: String,
        duration_ms: u64,
    },
    /// A supervisor listened to, whispered into or barged into the call (`mode`), or stopped (`stopped`).
    Monitored {
        supervisor: AgentId,
        mode: String,
    },
    /// An outbound dial attempt and its result (busy, no_answer, machine, human, ...).
    DialAttempt {
        campaign: CampaignId,
        lead: LeadId,
        outcome: String,
    },
}

impl InteractionEventKind {
    /// A stable, short name of the event type, safe for logs and metric labels.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Arrived { .. } => "arrived",
            Self::CustomerIdentified { .. } => "customer_identified",
            Self::IvrNode { .. } => "ivr_node",
            Self::DigitsCollected { .. } => "digits_collected",
            Self::LookupDone { .. } => "lookup_done",
            Self::Enqueued { .. } => "enqueued",
            Self::Offered { .. } => "offered",
            Self::OfferFailed { .. } => "offer_failed",
            Self::Answered { .. } => "answered",
            Self::Held => "held",
            Self::Resumed => "resumed",
            Self::Transferred { .. } => "transferred",
            Self::Abandoned { .. } => "abandoned",
            Self::Overflowed { .. } => "overflowed",
            Self::CallbackRequested { .. } => "callback_requested",
            Self::Recording { .. } => "recording",
            Self::Ended { .. } => "ended",
            Self::WrappedUp { .. } => "wrapped_up",
            Self::Monitored { .. } => "monitored",
            Self::Voicemail { .. } => "voicemail",
            Self::Survey { .. } => "survey",
            Self::DialAttempt { .. } => "dial_attempt",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_masked_debug() {
        let ev = InteractionEvent {
            interaction: InteractionId::new("i-1").unwrap(),
            seq: 3,
            at: Timestamp::from_millis(5),
            kind: InteractionEventKind::DigitsCollected {
                variable: "account".into(),
                digits: Pii::new("12345".into()),
                sensitive: false,
            },
        };
        let json = serde_json::to_string(&ev).unwrap();
        assert!(json.contains("\"type\":\"digits_collected\""));
        let back: InteractionEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ev);
        assert!(!format!("{ev:?}").contains("12345"));
        assert_eq!(ev.kind.name(), "digits_collected");
    }
}
