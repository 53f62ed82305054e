//! Several writes applied atomically in one round trip: what the ACD owner needs to turn one routing
//! decision (take the call out of its queue, reserve the agent, save the snapshot) into one step that
//! other nodes see whole or not at all, under the router's fence.

use crate::error::{StateError, StateResult};
use crate::types::{Expect, Fence, QueueEntry, check_key, check_name};
use domain::{AgentId, CallId, QueueId};
use serde::Serialize;
use std::collections::HashSet;
use std::time::Duration;

/// One write of a [`WriteBatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchWrite {
    /// As [`crate::StateStore::queue_add`]; result 1 if the call was new, else 0.
    QueueAdd { queue: QueueId, entry: QueueEntry },
    /// As [`crate::StateStore::queue_remove`]; result 1 if the call was in, else 0.
    QueueRemove { queue: QueueId, call: CallId },
    /// As [`crate::StateStore::cas_presence`] with `data` already JSON; result the new version.
    Presence {
        agent: AgentId,
        expect: Expect,
        data: Vec<u8>,
    },
    /// An unconditional blob write, lapsing `ttl` after the batch's `now`; result the new version.
    PutBlob {
        ns: String,
        key: String,
        data: Vec<u8>,
        ttl: Option<Duration>,
    },
    /// A blob deletion; result 1 if something was stored, else 0.
    DeleteBlob { ns: String, key: String },
}

/// Writes applied all together or not at all, optionally under a fence. Presence writes may carry a
/// version condition; if any fails, nothing is written. At most one presence write per agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub fence: Option<Fence>,
    pub writes: Vec<BatchWrite>,
}

/// What became of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Every write was applied; one result per write, as documented on [`BatchWrite`].
    Applied(Vec<u64>),
    /// Nothing was written: the presence write at `index` expected another version than `current`.
    Conflict { index: usize, current: Option<u64> },
}

impl WriteBatch {
    /// An empty, unfenced batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// An empty batch that only the current holder of `fence`'s lease may apply.
    pub fn fenced(fence: Fence) -> Self {
        Self {
            fence: Some(fence),
            writes: Vec::new(),
        }
    }
    /// Adds a queue insertion or move.
    pub fn queue_add(&mut self, queue: QueueId, entry: QueueEntry) -> &mut Self {
        self.writes.push(BatchWrite::QueueAdd { queue, entry });
        self
    }
    /// Adds a queue removal.
    pub fn queue_remove(&mut self, queue: QueueId, call: CallId) -> &mut Self {
        self.writes.push(BatchWrite::QueueRemove { queue, call });
        self
    }
    /// Adds a presence write of `state` as JSON, under `expect`.
    pub fn presence<T: Serialize>(
        &mut self,
        agent: AgentId,
        expect: Expect,
        state: &T,
    ) -> StateResult<&mut Self> {
        let data = serde_json::to_vec(state)?;
        self.writes.push(BatchWrite::Presence { agent, expect, data });
        Ok(self)
    }
    /// Adds a blob write.
    pub fn put_blob(&mut self, ns: &str, key: &str, data: Vec<u8>, ttl: Option<Duration>) -> &mut Self {
        self.writes.push(BatchWrite::PutBlob {
            ns: ns.to_string(),
            key: key.to_string(),
            data,
            ttl,
        });
        self
    }
    /// Adds a blob deletion.
    pub fn delete_blob(&mut self, ns: &str, key: &str) -> &mut Self {
        self.writes.push(BatchWrite::DeleteBlob {
            ns: ns.to_string(),
            key: key.to_string(),
        });
        self
    }

    /// Checks names and the one-presence-write-per-agent rule before anything is sent.
    pub(crate) fn check(&self) -> StateResult<()> {
        let mut agents = HashSet::new();
        for write in &self.writes {
            match write {
                BatchWrite::Presence { agent, .. } if !agents.insert(agent) => {
                    return Err(StateError::Invalid {
                        what: "write batch",
                        reason: format!("two presence writes for agent {agent}"),
                    });
                }
                BatchWrite::PutBlob { ns, key, ttl, .. } => {
                    check_name("blob namespace", ns)?;
                    check_key("blob key", key)?;
                    if ttl.is_some_and(|t| t.is_zero()) {
                        return Err(StateError::Invalid {
                            what: "blob ttl",
                            reason: "is zero".to_string(),
                        });
                    }
                }
                BatchWrite::DeleteBlob { ns, key } => {
                    check_name("blob namespace", ns)?;
                    check_key("blob key", key)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
