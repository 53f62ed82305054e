//! What the router's owner tells the others, whichever owner it is (call control's in-process task or
//! the cluster's leader): a queued call hears [`QueueNotice`]s, desktops and campaigns follow
//! [`AgentStateEvent`]s, and a caller who hung up in the queue learns their [`Abandonment`]. Both
//! owners share these types, so call control handles either the same way.

use crate::agent::AgentState;
use crate::io::Offer;
use domain::{AgentId, QueueId, Timestamp};
use serde::{Deserialize, Serialize};

/// What a waiting call hears from the ACD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "notice", rename_all = "snake_case")]
pub enum QueueNotice {
    /// Ring these agents (several for ring-all); the explanation says why.
    Offer(Offer),
    /// Stop ringing this agent (no answer in time, answered elsewhere, ...).
    OfferCancelled { agent: AgentId, reason: String },
    /// Position and estimated wait, for announcements.
    Position {
        position: u32,
        estimated_wait_secs: Option<u64>,
    },
    /// The queue sent the call elsewhere.
    Overflowed { target: String, reason: String },
}

/// An agent's state changed in the router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentStateEvent {
    pub agent: AgentId,
    pub from: AgentState,
    pub to: AgentState,
    pub at: Timestamp,
}

/// Where a caller was when they hung up in the queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Abandonment {
    pub queue: QueueId,
    pub position: u32,
    pub waited_ms: u64,
}
