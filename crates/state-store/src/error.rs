//! Errors of the state store. Backend failures, names that cannot be keys, stale fencing tokens and
//! stored data that no longer decodes are told apart so callers can react to each.

use crate::types::FencingToken;

/// Why a state-store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Redis answered with an error or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A name given by the caller cannot be used as (part of) a key.
    #[error("invalid {what}: {reason}")]
    Invalid { what: &'static str, reason: String },
    /// A fenced write carried a token older than the lease's current one: its holder lost the lease.
    #[error("stale fencing token {presented} for lease {lease:?}; the current token is {current}")]
    StaleFence {
        lease: String,
        presented: FencingToken,
        current: FencingToken,
    },
    /// Stored data did not decode; the payload is not shown because it may hold personal data.
    #[error("stored data under {location} does not decode: {reason}")]
    Corrupt { location: String, reason: String },
    /// A value could not be encoded as JSON, or a stored JSON record did not fit the requested type.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A write was made on the primary but not confirmed by as many replicas as configured within
    /// the wait: a failover could lose it. Whether it stays is unknown; retry or rebuild from the store.
    #[error("a write reached {acknowledged} of the {wanted} replicas it must reach")]
    NotReplicated { wanted: u32, acknowledged: u32 },
    /// A commit expected another last entry in `stream` (see [`crate::StreamCommit::expect_last`]):
    /// the store lost entries the writer saw (a failover, a restart) or holds some it never saw.
    #[error("the last entry of stream {stream:?} is not the one the writer expected")]
    Diverged { stream: String },
    /// The configuration cannot be used.
    #[error("state store configuration: {0}")]
    Config(String),
}

/// Result of a state-store operation.
pub type StateResult<T> = Result<T, StateError>;
