//! The cluster-wide ACD router. One router routes every call of the cluster: the holder of the state
//! store's lease [`protocol::LEADER_LEASE`], elected with a fencing token. Every node may run a
//! candidate ([`Leader`], driven by [`spawn_leader`]); every node talks to whichever leads through a
//! [`RouterClient`], whose methods mirror call control's in-process ACD handle.
//!
//! ```text
//!   node A ─┐                                   ┌─▶ acd.out.A ─▶ node A (offers, cancels, announcements, replies)
//!   node B ─┼─▶ acd.in ─▶ leader (pure router) ─┼─▶ acd.out.B ─▶ node B
//!   node C ─┘   (group)    │                    ├─▶ acd.events ─▶ every node (agent state changes)
//!                          │                    └─▶ KPI blob   ─▶ every node's wallboard
//!                          └─▶ acd.journal + snapshot blob (a standby rebuilds the router from them)
//! ```
//!
//! Invariants (each has a test in `tests/`):
//! - **One leader writes.** Everything the leader writes is one [`state_store::StreamCommit`] under its
//!   lease; a former leader's commit changes nothing, so it can never offer a call or change an agent.
//! - **Atomic step.** A batch is journaled, delivered to the nodes and its inputs acknowledged at
//!   once: never applied without its outputs, never delivered without the journal.
//! - **Idempotent inputs.** A node numbers its commands; a command sent twice is applied once, and
//!   commands of one node are applied in their order.
//! - **No lost place.** The router is deterministic: snapshot plus journal gives a standby exactly the
//!   leader's state (every caller's place, wait and priority aging; every agent's state and time).
//! - **Ownership.** A call belongs to the node that enqueued it (its media is there); its notices go
//!   there only. When that node's liveness lapses its calls are let go; no one else's is touched.
//!
//! The crate holds no SIP, media or HTTP: call control plugs a [`RouterClient`] in where it used its
//! own router task.

pub mod client;
pub mod clock;
pub mod leader;
pub mod liveness;
pub mod protocol;
pub mod router;

pub use client::{ClientConfig, ClientError, ClientStats, RouterClient};
pub use clock::{Clock, ManualClock};
pub use leader::{
    Leader, LeaderConfig, LeaderError, LeaderHandle, LeaderStats, LeaderStatus, Prepared, StepOutcome,
    read_router, spawn_leader,
};
pub use protocol::{Abandonment, AgentStateEvent, NodeId, QueueNotice};
pub use router::{ClusterRouter, Delivery, RouterSnapshot};
