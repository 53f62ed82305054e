//! Live shared state behind one facade: in-memory for one node, Redis for many.
//!
//! [`StateStore`] is the only way the rest of the platform touches live state; only this crate knows
//! Redis. Pick the backend with [`StateConfig`] and call [`StateStore::connect`]. Both backends pass
//! the same test suite (`tests/suite.rs`), so code written against the memory backend runs unchanged
//! on Redis, where state survives a restart and is shared by every node on the same key prefix.
//!
//! What it keeps:
//! - **SIP registrations**: per address of record, several contacts with an expiry ([`Binding`]).
//! - **Agent presence**: one versioned JSON record per agent, with compare-and-set.
//! - **Queue entries**: an ordered set of waiting calls per queue with a payload each.
//! - **Blobs**: versioned snapshots (router state, IVR sessions) with optional time to live.
//! - **Leases** with fencing tokens, and fenced writes that a former holder cannot sneak past.
//! - **Write batches**: queue, presence and blob writes applied atomically under one fence.
//! - **Event bus**: live publish/subscribe (Redis pub/sub, or a broadcast channel in memory).
//! - **Durable streams** with consumer groups, acknowledgement and claiming after a crash (the CRM outbox),
//!   plain reads from a position (followers), and [`StreamCommit`]: appends, acknowledgements, a blob
//!   and trims applied at once under a lease (the cluster router's journal and deliveries).
//! - **Rate limits**: token buckets per key, shared by all nodes on Redis.
//! - **Maps**: small records by field under one name (the calls a node carries).
//!
//! Redis is reached at one address, or through Redis Sentinel ([`BackendConfig::Sentinel`]): the store
//! then follows the primary across failovers, and may confirm durable writes with `WAIT` so that a
//! failover cannot lose a write it reported as done.
//!
//! Time: everything that expires takes the caller's `now` and stores the instant of expiry, so tests run
//! on virtual time and every node judges expiry the same way; Redis key TTLs only collect garbage.
//! A record found lapsed may be purged then and there, so `now` should not go backwards between calls.
//! Leases compare the holders' clocks, so nodes must keep their clocks synchronised well within the
//! lease TTL; fencing keeps writes safe even when they are not.

mod batch;
mod bus;
mod commit;
mod config;
mod error;
mod memory;
mod redis_store;
mod sentinel;
mod types;

pub use batch::{BatchOutcome, BatchWrite, WriteBatch};
pub use bus::Subscription;
pub use commit::{CommitAck, CommitAppend, StreamCommit};
pub use config::{BackendConfig, StateConfig};
pub use error::{StateError, StateResult};
pub use types::{
    Aor, Binding, BlobWrite, Expect, Fence, FencingToken, Lease, MAX_KEY_LEN, MAX_NAME_LEN, MAX_QUEUE_ORDER,
    QueueEntry, QueueOrder, RateDecision, StreamEntry, StreamEntryId, TokenBucket, Transport, Versioned,
    WriteOutcome,
};

use domain::{AgentId, CallId, QueueId, Timestamp};
use memory::MemoryStore;
use redis_store::RedisStore;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use types::{check_key, check_name};

/// The live state of the platform. Cheap to clone; clones share the same backend and connection.
#[derive(Clone)]
pub struct StateStore {
    backend: Backend,
}

impl std::fmt::Debug for StateStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateStore")
            .field("backend", &self.backend_name())
            .finish()
    }
}

#[derive(Clone)]
enum Backend {
    Memory(MemoryStore),
    Redis(Box<RedisStore>),
}

fn check_ttl(what: &'static str, ttl: Duration) -> StateResult<()> {
    if ttl.is_zero() {
        return Err(StateError::Invalid {
            what,
            reason: "is zero".to_string(),
        });
    }
    Ok(())
}

fn decode<T: DeserializeOwned>(v: Versioned<Vec<u8>>) -> StateResult<Versioned<T>> {
    Ok(Versioned {
        version: v.version,
        value: serde_json::from_slice(&v.value)?,
    })
}

impl StateStore {
    /// A fresh in-memory store.
    pub fn memory() -> Self {
        Self {
            backend: Backend::Memory(MemoryStore::new()),
        }
    }

    /// Opens the configured backend. With Redis this connects now, so a wrong URL or an unreachable
    /// server is reported at startup rather than on the first call.
    pub async fn connect(config: &StateConfig) -> StateResult<Self> {
        match &config.backend {
            BackendConfig::Memory => Ok(Self::memory()),
            BackendConfig::Redis { url, prefix } => {
                check_name("key prefix", prefix.trim_matches(|c| c == '{' || c == '}'))?;
                Ok(Self {
                    backend: Backend::Redis(Box::new(RedisStore::connect(url, prefix).await?)),
                })
            }
            BackendConfig::Sentinel {
                sentinels,
                service,
                prefix,
                db,
                username,
                password,
                replicas,
            } => {
                check_name("key prefix", prefix.trim_matches(|c| c == '{' || c == '}'))?;
                if sentinels.is_empty() {
                    return Err(StateError::Config("no sentinel address given".to_string()));
                }
                let settings = redis_store::SentinelSettings {
                    sentinels,
                    service,
                    prefix,
                    db: *db,
                    username: username.as_deref(),
                    password: password.as_deref(),
                    replicas: *replicas,
                };
                Ok(Self {
                    backend: Backend::Redis(Box::new(RedisStore::connect_sentinel(&settings).await?)),
                })
            }
        }
    }

    /// Checks that the backend answers (for readiness probes).
    pub async fn ping(&self) -> StateResult<()> {
        match &self.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(r) => r.ping().await,
        }
    }

    /// `"memory"` or `"redis"`, for logs and metrics labels.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Redis(_) => "redis",
        }
    }

    // ---------------------------------------------------------------- registrations

    /// Adds or refreshes the binding of `binding.contact` for `aor`. A binding already lapsed at `now`
    /// removes that contact instead (what a REGISTER with `Expires: 0` asks for).
    pub async fn upsert_binding(&self, aor: &Aor, binding: Binding, now: Timestamp) -> StateResult<()> {
        check_key("contact", &binding.contact)?;
        match &self.backend {
            Backend::Memory(m) => {
                m.upsert_binding(aor, binding, now);
                Ok(())
            }
            Backend::Redis(r) => r.upsert_binding(aor, &binding, now).await,
        }
    }

    /// Removes one contact of `aor`; true if it was stored (lapsed ones count until purged).
    pub async fn remove_binding(&self, aor: &Aor, contact: &str) -> StateResult<bool> {
        check_key("contact", contact)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.remove_binding(aor, contact)),
            Backend::Redis(r) => r.remove_binding(aor, contact).await,
        }
    }

    /// Removes every contact of `aor` (`Contact: *` with `Expires: 0`); returns how many were stored
    /// (lapsed ones count until purged by [`StateStore::live_bindings`]).
    pub async fn remove_all_bindings(&self, aor: &Aor) -> StateResult<usize> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.remove_all_bindings(aor)),
            Backend::Redis(r) => r.remove_all_bindings(aor).await,
        }
    }

    /// The bindings of `aor` still live at `now`, sorted by contact; lapsed ones are purged.
    pub async fn live_bindings(&self, aor: &Aor, now: Timestamp) -> StateResult<Vec<Binding>> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.live_bindings(aor, now)),
            Backend::Redis(r) => r.live_bindings(aor, now).await,
        }
    }

    // ---------------------------------------------------------------- agent presence

    /// Stores the state of `agent` unconditionally; returns its new version.
    pub async fn put_presence<T: Serialize>(&self, agent: &AgentId, state: &T) -> StateResult<u64> {
        match self.cas_presence(agent, Expect::Any, state).await? {
            WriteOutcome::Written { version } => Ok(version),
            // An unconditional write cannot conflict; a backend that says so is broken.
            WriteOutcome::Conflict { .. } => Err(StateError::Corrupt {
                location: "presence".to_string(),
                reason: "unconditional write reported a conflict".to_string(),
            }),
        }
    }

    /// Stores the state of `agent` if its version is as expected (compare-and-set).
    pub async fn cas_presence<T: Serialize>(
        &self,
        agent: &AgentId,
        expect: Expect,
        state: &T,
    ) -> StateResult<WriteOutcome> {
        let data = serde_json::to_vec(state)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.put_presence(agent, expect, data)),
            Backend::Redis(r) => r.put_presence(agent, expect, &data).await,
        }
    }

    /// The state of `agent`, if any.
    pub async fn get_presence<T: DeserializeOwned>(
        &self,
        agent: &AgentId,
    ) -> StateResult<Option<Versioned<T>>> {
        let raw = match &self.backend {
            Backend::Memory(m) => m.get_presence(agent),
            Backend::Redis(r) => r.get_presence(agent).await?,
        };
        raw.map(decode).transpose()
    }

    /// Every agent's state, sorted by agent id (how a restarted node rebuilds its view).
    pub async fn list_presence<T: DeserializeOwned>(&self) -> StateResult<Vec<(AgentId, Versioned<T>)>> {
        let raw = match &self.backend {
            Backend::Memory(m) => m.list_presence(),
            Backend::Redis(r) => r.list_presence().await?,
        };
        raw.into_iter()
            .map(|(agent, v)| Ok((agent, decode(v)?)))
            .collect()
    }

    /// Forgets the state of `agent`; true if there was one.
    pub async fn remove_presence(&self, agent: &AgentId) -> StateResult<bool> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.remove_presence(agent)),
            Backend::Redis(r) => r.remove_presence(agent).await,
        }
    }

    // ---------------------------------------------------------------- queue entries

    /// Puts a call in `queue` at `entry.order`, or moves it there and replaces its payload if it is
    /// already in; true if it was new. With a fence, only the current lease holder may write.
    pub async fn queue_add(
        &self,
        queue: &QueueId,
        entry: QueueEntry,
        fence: Option<&Fence>,
    ) -> StateResult<bool> {
        match &self.backend {
            Backend::Memory(m) => m.queue_add(queue, entry, fence),
            Backend::Redis(r) => r.queue_add(queue, &entry, fence).await,
        }
    }

    /// Takes a call out of `queue`; true if it was in.
    pub async fn queue_remove(
        &self,
        queue: &QueueId,
        call: &CallId,
        fence: Option<&Fence>,
    ) -> StateResult<bool> {
        match &self.backend {
            Backend::Memory(m) => m.queue_remove(queue, call, fence),
            Backend::Redis(r) => r.queue_remove(queue, call, fence).await,
        }
    }

    /// The calls in `queue`, first to serve first (by order key, then call id).
    pub async fn queue_list(&self, queue: &QueueId) -> StateResult<Vec<QueueEntry>> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.queue_list(queue)),
            Backend::Redis(r) => r.queue_list(queue).await,
        }
    }

    /// How many calls wait in `queue`.
    pub async fn queue_len(&self, queue: &QueueId) -> StateResult<usize> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.queue_len(queue)),
            Backend::Redis(r) => r.queue_len(queue).await,
        }
    }

    // ---------------------------------------------------------------- blobs

    /// Writes the blob `key` of namespace `ns` (e.g. `ivr-session`, `acd-snapshot`) as `opts` says:
    /// optionally only at an expected version, only under a fence, and lapsing `ttl` after `now`.
    /// A stale fence is an error ([`StateError::StaleFence`]); a version mismatch is a
    /// [`WriteOutcome::Conflict`].
    pub async fn put_blob(
        &self,
        ns: &str,
        key: &str,
        data: &[u8],
        opts: &BlobWrite,
        now: Timestamp,
    ) -> StateResult<WriteOutcome> {
        check_name("blob namespace", ns)?;
        check_key("blob key", key)?;
        if let Some(ttl) = opts.ttl {
            check_ttl("blob ttl", ttl)?;
        }
        match &self.backend {
            Backend::Memory(m) => m.put_blob(ns, key, data.to_vec(), opts, now),
            Backend::Redis(r) => r.put_blob(ns, key, data, opts, now).await,
        }
    }

    /// The blob `key` of `ns` if it is stored and not lapsed at `now`.
    pub async fn get_blob(
        &self,
        ns: &str,
        key: &str,
        now: Timestamp,
    ) -> StateResult<Option<Versioned<Vec<u8>>>> {
        check_name("blob namespace", ns)?;
        check_key("blob key", key)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.get_blob(ns, key, now)),
            Backend::Redis(r) => r.get_blob(ns, key, now).await,
        }
    }

    /// Deletes the blob `key` of `ns`; true if something was stored (even if already lapsed).
    pub async fn delete_blob(&self, ns: &str, key: &str, fence: Option<&Fence>) -> StateResult<bool> {
        check_name("blob namespace", ns)?;
        check_key("blob key", key)?;
        match &self.backend {
            Backend::Memory(m) => m.delete_blob(ns, key, fence),
            Backend::Redis(r) => r.delete_blob(ns, key, fence).await,
        }
    }

    // ---------------------------------------------------------------- maps

    /// Writes the fields `put` of map `map` and removes the fields `remove`, at once (one round trip
    /// on Redis); a field in both ends removed. A map whose last field goes is gone.
    pub async fn map_update(
        &self,
        map: &str,
        put: &[(String, Vec<u8>)],
        remove: &[String],
    ) -> StateResult<()> {
        check_name("map", map)?;
        for field in put.iter().map(|(f, _)| f).chain(remove) {
            check_key("map field", field)?;
        }
        match &self.backend {
            Backend::Memory(m) => {
                m.map_update(map, put, remove);
                Ok(())
            }
            Backend::Redis(r) => r.map_update(map, put, remove).await,
        }
    }

    /// Removes field `field` of map `map`; true if this call removed it (it was there). Of several
    /// nodes taking the same field at once, exactly one gets true: how work found in a map is
    /// claimed.
    pub async fn map_take(&self, map: &str, field: &str) -> StateResult<bool> {
        check_name("map", map)?;
        check_key("map field", field)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.map_take(map, field)),
            Backend::Redis(r) => r.map_take(map, field).await,
        }
    }

    /// Every field of map `map` with its value, by field.
    pub async fn map_entries(&self, map: &str) -> StateResult<Vec<(String, Vec<u8>)>> {
        check_name("map", map)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.map_entries(map)),
            Backend::Redis(r) => r.map_entries(map).await,
        }
    }

    // ---------------------------------------------------------------- batches

    /// Applies `batch` atomically: under its fence (else [`StateError::StaleFence`]), only if every
    /// presence condition holds (else [`BatchOutcome::Conflict`] and nothing is written), in one round
    /// trip on Redis. Blob TTLs count from `now`.
    pub async fn apply(&self, batch: WriteBatch, now: Timestamp) -> StateResult<BatchOutcome> {
        batch.check()?;
        match &self.backend {
            Backend::Memory(m) => m.apply_batch(batch, now),
            Backend::Redis(r) => r.apply_batch(&batch, now).await,
        }
    }

    // ---------------------------------------------------------------- leases

    /// Tries to take lease `name` for `holder` until `now + ttl`. Returns the lease if it was free or
    /// lapsed (with a new, larger fencing token) or already held by `holder` (same token, extended);
    /// `None` while someone else holds it. `holder` must be unique per process (e.g. node id plus a
    /// random start id): two processes using the same holder name would both believe they hold it.
    pub async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> StateResult<Option<Lease>> {
        check_name("lease name", name)?;
        check_name("lease holder", holder)?;
        check_ttl("lease ttl", ttl)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.acquire_lease(name, holder, ttl, now)),
            Backend::Redis(r) => r.acquire_lease(name, holder, ttl, now).await,
        }
    }

    /// Extends a lease still held at `now` to `now + ttl`. `None` means it was lost (lapsed or taken
    /// over): stop acting as holder and acquire again.
    pub async fn renew_lease(
        &self,
        lease: &Lease,
        ttl: Duration,
        now: Timestamp,
    ) -> StateResult<Option<Lease>> {
        check_ttl("lease ttl", ttl)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.renew_lease(lease, ttl, now)),
            Backend::Redis(r) => r.renew_lease(lease, ttl, now).await,
        }
    }

    /// Gives a lease up so another holder need not wait for it to lapse; true if it was still ours.
    pub async fn release_lease(&self, lease: &Lease) -> StateResult<bool> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.release_lease(lease)),
            Backend::Redis(r) => r.release_lease(lease).await,
        }
    }

    // ---------------------------------------------------------------- rate limiting

    /// Takes `cost` tokens from the bucket of `key` (e.g. a source address) at `now`. On Redis every
    /// node draws from the same bucket. Idle buckets are forgotten once full again.
    pub async fn rate_take(
        &self,
        key: &str,
        bucket: TokenBucket,
        cost: u32,
        now: Timestamp,
    ) -> StateResult<RateDecision> {
        check_key("rate limit key", key)?;
        if cost > bucket.capacity {
            return Err(StateError::Invalid {
                what: "rate limit cost",
                reason: "exceeds the bucket capacity".to_string(),
            });
        }
        match &self.backend {
            Backend::Memory(m) => Ok(m.rate_take(key, bucket, cost, now)),
            Backend::Redis(r) => r.rate_take(key, bucket, cost, now).await,
        }
    }

    // ---------------------------------------------------------------- event bus

    /// Publishes to everyone subscribed to `topic` right now; returns how many received it (on Redis,
    /// connections across all nodes). Nobody subscribed is not an error: the message is dropped.
    pub async fn publish(&self, topic: &str, payload: &[u8]) -> StateResult<usize> {
        check_name("topic", topic)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.publish(topic, bytes::Bytes::copy_from_slice(payload))),
            Backend::Redis(r) => r.publish(topic, payload).await,
        }
    }

    /// Subscribes to `topic`. Once this returns, every later publish reaches the subscription.
    pub async fn subscribe(&self, topic: &str) -> StateResult<Subscription> {
        check_name("topic", topic)?;
        match &self.backend {
            Backend::Memory(m) => Ok(Subscription::memory(topic, m.subscribe(topic))),
            Backend::Redis(r) => Ok(Subscription::redis(topic, r.subscribe(topic).await?)),
        }
    }

    // ---------------------------------------------------------------- durable streams

    /// Appends an entry to `stream`; it stays until [`StateStore::stream_trim_consumed`] finds every
    /// group done with it. On Redis its durability is that of the server's persistence settings.
    pub async fn stream_append(&self, stream: &str, payload: &[u8]) -> StateResult<StreamEntryId> {
        check_name("stream", stream)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.stream_append(stream, payload.to_vec())),
            Backend::Redis(r) => r.stream_append(stream, payload).await,
        }
    }

    /// Appends like [`StateStore::stream_append`], then keeps only the newest `max_len` entries
    /// (`XADD MAXLEN`): for a stream read from positions by live readers, which no consumer group
    /// ever trims (e.g. events every node follows).
    pub async fn stream_append_capped(
        &self,
        stream: &str,
        payload: &[u8],
        max_len: usize,
    ) -> StateResult<StreamEntryId> {
        check_name("stream", stream)?;
        let max_len = max_len.max(1);
        match &self.backend {
            Backend::Memory(m) => Ok(m.stream_append_capped(stream, payload.to_vec(), max_len)),
            Backend::Redis(r) => r.stream_append_capped(stream, payload, max_len).await,
        }
    }

    /// Creates consumer group `group` of `stream` if missing, reading from the start of the stream.
    /// Reading creates it too. A group created after a trim does not see the entries trimmed before.
    pub async fn stream_ensure_group(&self, stream: &str, group: &str) -> StateResult<()> {
        check_name("stream", stream)?;
        check_name("consumer group", group)?;
        match &self.backend {
            Backend::Memory(m) => {
                m.stream_ensure_group(stream, group);
                Ok(())
            }
            Backend::Redis(r) => r.stream_ensure_group(stream, group).await,
        }
    }

    /// Delivers to `consumer` up to `count` entries that no one in `group` has been given yet, waiting
    /// up to `block` for the first if there are none. Delivered entries stay pending until acknowledged.
    pub async fn stream_read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Option<Duration>,
    ) -> StateResult<Vec<StreamEntry>> {
        check_name("stream", stream)?;
        check_name("consumer group", group)?;
        check_name("consumer", consumer)?;
        let count = count.max(1);
        match &self.backend {
            Backend::Memory(m) => Ok(m.stream_read_group(stream, group, consumer, count, block).await),
            Backend::Redis(r) => r.stream_read_group(stream, group, consumer, count, block).await,
        }
    }

    /// Acknowledges entries processed by `group`; returns how many were pending.
    pub async fn stream_ack(&self, stream: &str, group: &str, ids: &[StreamEntryId]) -> StateResult<usize> {
        check_name("stream", stream)?;
        check_name("consumer group", group)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.stream_ack(stream, group, ids)),
            Backend::Redis(r) => r.stream_ack(stream, group, ids).await,
        }
    }

    /// Takes over for `consumer` up to `count` entries pending in `group` for at least `min_idle`
    /// (delivered to a consumer that crashed before acknowledging them) and returns them.
    pub async fn stream_claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> StateResult<Vec<StreamEntry>> {
        check_name("stream", stream)?;
        check_name("consumer group", group)?;
        check_name("consumer", consumer)?;
        let count = count.max(1);
        match &self.backend {
            Backend::Memory(m) => Ok(m.stream_claim(stream, group, consumer, min_idle, count)),
            Backend::Redis(r) => r.stream_claim(stream, group, consumer, min_idle, count).await,
        }
    }

    /// Drops the entries every group of `stream` has acknowledged (none while the stream has no group);
    /// returns how many. Call it now and then from the consumer, e.g. after acknowledging a batch.
    pub async fn stream_trim_consumed(&self, stream: &str) -> StateResult<usize> {
        check_name("stream", stream)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.stream_trim_consumed(stream)),
            Backend::Redis(r) => r.stream_trim_consumed(stream).await,
        }
    }

    /// Removes `stream` whole, with its consumer groups (a node that leaves drops the streams only it
    /// read); true if it existed.
    pub async fn stream_delete(&self, stream: &str) -> StateResult<bool> {
        check_name("stream", stream)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.stream_delete(stream)),
            Backend::Redis(r) => r.stream_delete(stream).await,
        }
    }

    /// How many entries `stream` holds (delivered or not, until trimmed).
    pub async fn stream_len(&self, stream: &str) -> StateResult<usize> {
        check_name("stream", stream)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.stream_len(stream)),
            Backend::Redis(r) => r.stream_len(stream).await,
        }
    }

    /// Up to `count` entries of `stream` after `after` (from the start when none), in order, waiting up
    /// to `block` for the first if there are none. No group is involved: every reader sees every entry,
    /// and keeps its own position (the id of the last entry it read).
    pub async fn stream_read(
        &self,
        stream: &str,
        after: Option<&StreamEntryId>,
        count: usize,
        block: Option<Duration>,
    ) -> StateResult<Vec<StreamEntry>> {
        check_name("stream", stream)?;
        if let Some(id) = after {
            commit::check_entry_id(id)?;
        }
        let count = count.max(1);
        match &self.backend {
            Backend::Memory(m) => m.stream_read(stream, after, count, block).await,
            Backend::Redis(r) => r.stream_read(stream, after, count, block).await,
        }
    }

    /// The id of the newest entry of `stream`, if it has any: a reader that starts there sees only
    /// what is appended from now on.
    pub async fn stream_last_id(&self, stream: &str) -> StateResult<Option<StreamEntryId>> {
        Ok(self.stream_last(stream).await?.map(|e| e.id))
    }

    /// The newest entry of `stream`, if it has any: where a reader starts that sees only what is
    /// appended from now on, and what it already knew then.
    pub async fn stream_last(&self, stream: &str) -> StateResult<Option<StreamEntry>> {
        check_name("stream", stream)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.stream_last(stream)),
            Backend::Redis(r) => r.stream_last(stream).await,
        }
    }

    /// Applies `commit` whole, only while its lease is still held as granted (the lease record names
    /// the same holder and token, and no later grant exists); otherwise [`StateError::StaleFence`] and
    /// nothing is written. Returns the ids of the appended entries, in order.
    pub async fn stream_commit(&self, commit: &StreamCommit) -> StateResult<Vec<StreamEntryId>> {
        commit.check()?;
        match &self.backend {
            Backend::Memory(m) => m.stream_commit(commit),
            Backend::Redis(r) => r.stream_commit(commit).await,
        }
    }

    /// How many entries of `group` are delivered but not yet acknowledged.
    pub async fn stream_pending(&self, stream: &str, group: &str) -> StateResult<usize> {
        check_name("stream", stream)?;
        check_name("consumer group", group)?;
        match &self.backend {
            Backend::Memory(m) => Ok(m.stream_pending(stream, group)),
            Backend::Redis(r) => r.stream_pending(stream, group).await,
        }
    }
}
