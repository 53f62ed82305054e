//! A fenced commit over streams: what a single-writer log needs to move forward in one step that other
//! nodes see whole or not at all. The cluster's ACD router journals the inputs it applied, delivers the
//! outputs to each node's stream, broadcasts agent state changes and acknowledges the inputs it read,
//! all at once, so no input is ever applied without its outputs delivered, or delivered without being
//! journaled; and a former leader (paused past its lease, cut off) can never add anything.
//!
//! The fence is stricter than [`crate::Fence`]: the lease record must still name the same holder with
//! the same token, and the lease's token counter must not have moved on. So a grant that a failed-over
//! Redis primary forgot, and handed out again under the same number to someone else, does not let the
//! first holder through.

use crate::error::{StateError, StateResult};
use crate::types::{Lease, StreamEntryId, check_key, check_name};

/// One entry appended by a [`StreamCommit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitAppend {
    pub stream: String,
    pub payload: Vec<u8>,
    /// Keep about this many entries (older ones are dropped, like `XADD MAXLEN ~`); none keeps all.
    /// The bound is approximate on Redis (whole internal nodes are dropped) and exact in memory.
    pub max_len: Option<usize>,
}

/// Acknowledgements of one consumer group made by a [`StreamCommit`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitAck {
    pub stream: String,
    pub group: String,
    pub ids: Vec<StreamEntryId>,
}

/// Appends, acknowledgements, one blob write, trims and deletions applied together, only while
/// `lease` is still held as granted and, if set, the expected stream still ends where the writer
/// saw it end. Applied in this order: appends, acknowledgements, blob, trims, deletions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCommit {
    pub lease: Lease,
    /// `(stream, last entry id)`: the commit applies only if the stream's last entry is this one
    /// (none: the stream has no entry), else [`crate::StateError::Diverged`].
    pub expected_last: Option<(String, Option<StreamEntryId>)>,
    pub appends: Vec<CommitAppend>,
    pub acks: Vec<CommitAck>,
    /// An unconditional, non-expiring blob write `(namespace, key, data)` (a snapshot).
    pub blob: Option<(String, String, Vec<u8>)>,
    /// Drops the entries of the stream before the given id (`XTRIM MINID`).
    pub trims: Vec<(String, StreamEntryId)>,
    /// Streams removed whole.
    pub deletes: Vec<String>,
}

impl StreamCommit {
    /// An empty commit under `lease`.
    pub fn new(lease: Lease) -> Self {
        Self {
            lease,
            expected_last: None,
            appends: Vec::new(),
            acks: Vec::new(),
            blob: None,
            trims: Vec::new(),
            deletes: Vec::new(),
        }
    }

    /// Applies the commit only if `stream` still ends with `last` (none: holds no entry). A single
    /// writer's log uses it to notice that the store is not the one it wrote to: entries it saw were
    /// lost with a primary, or someone else wrote.
    pub fn expect_last(&mut self, stream: &str, last: Option<StreamEntryId>) -> &mut Self {
        self.expected_last = Some((stream.to_string(), last));
        self
    }

    /// Adds an append to `stream`, keeping about `max_len` entries if given.
    pub fn append(&mut self, stream: &str, payload: Vec<u8>, max_len: Option<usize>) -> &mut Self {
        self.appends.push(CommitAppend {
            stream: stream.to_string(),
            payload,
            max_len,
        });
        self
    }

    /// Adds acknowledgements of `ids` for `group` of `stream`.
    pub fn ack(&mut self, stream: &str, group: &str, ids: Vec<StreamEntryId>) -> &mut Self {
        if !ids.is_empty() {
            self.acks.push(CommitAck {
                stream: stream.to_string(),
                group: group.to_string(),
                ids,
            });
        }
        self
    }

    /// Sets the blob written by the commit.
    pub fn put_blob(&mut self, ns: &str, key: &str, data: Vec<u8>) -> &mut Self {
        self.blob = Some((ns.to_string(), key.to_string(), data));
        self
    }

    /// Drops the entries of `stream` before `first_kept`.
    pub fn trim_before(&mut self, stream: &str, first_kept: StreamEntryId) -> &mut Self {
        self.trims.push((stream.to_string(), first_kept));
        self
    }

    /// Removes `stream` whole.
    pub fn delete_stream(&mut self, stream: &str) -> &mut Self {
        self.deletes.push(stream.to_string());
        self
    }

    /// Checks every name before anything is sent.
    pub(crate) fn check(&self) -> StateResult<()> {
        if let Some((stream, last)) = &self.expected_last {
            check_name("stream", stream)?;
            if let Some(id) = last {
                check_entry_id(id)?;
            }
        }
        for a in &self.appends {
            check_name("stream", &a.stream)?;
            if a.max_len == Some(0) {
                return Err(StateError::Invalid {
                    what: "stream max length",
                    reason: "is zero".to_string(),
                });
            }
        }
        for a in &self.acks {
            check_name("stream", &a.stream)?;
            check_name("consumer group", &a.group)?;
            for id in &a.ids {
                check_entry_id(id)?;
            }
        }
        if let Some((ns, key, _)) = &self.blob {
            check_name("blob namespace", ns)?;
            check_key("blob key", key)?;
        }
        for (stream, id) in &self.trims {
            check_name("stream", stream)?;
            check_entry_id(id)?;
        }
        for stream in &self.deletes {
            check_name("stream", stream)?;
        }
        Ok(())
    }
}

/// Checks that an entry id has the form both backends hand out (`<number>-<number>`), so a script
/// never meets one it would refuse halfway through a commit.
pub(crate) fn check_entry_id(id: &StreamEntryId) -> StateResult<()> {
    let well_formed = id.0.len() <= 41
        && id
            .0
            .split_once('-')
            .is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok());
    if well_formed {
        Ok(())
    } else {
        Err(StateError::Invalid {
            what: "stream entry id",
            reason: "is not of the form <number>-<number>".to_string(),
        })
    }
}
