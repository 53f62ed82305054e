//! The in-memory backend: one process, no persistence. Everything sits behind one mutex (operations are
//! short and never await while holding it); the event bus is a tokio broadcast channel per topic.

use crate::batch::{BatchOutcome, BatchWrite, WriteBatch};
use crate::commit::StreamCommit;
use crate::error::{StateError, StateResult};
use crate::types::{
    Aor, Binding, BlobWrite, Expect, Fence, FencingToken, Lease, QueueEntry, QueueOrder, RateDecision,
    StreamEntry, StreamEntryId, TokenBucket, Versioned, WriteOutcome,
};
use bytes::Bytes;
use domain::{AgentId, CallId, QueueId, Timestamp};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast};

/// Messages a slow subscriber may fall behind by before it misses some.
const BUS_CAPACITY: usize = 1024;

/// The in-memory backend. Clones share the same state.
#[derive(Clone, Default)]
pub(crate) struct MemoryStore {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    bus: Mutex<HashMap<String, broadcast::Sender<Bytes>>>,
    /// Woken on every stream append, so blocked group readers look again.
    stream_appended: Notify,
}

#[derive(Default)]
struct State {
    last_version: u64,
    registrations: HashMap<Aor, BTreeMap<String, Binding>>,
    presence: BTreeMap<AgentId, Versioned<Vec<u8>>>,
    queues: HashMap<QueueId, MemQueue>,
    blobs: HashMap<(String, String), MemBlob>,
    fences: HashMap<String, u64>,
    leases: HashMap<String, MemLease>,
    streams: HashMap<String, MemStream>,
    /// The last stream entry number handed out, across all streams: a stream deleted and written
    /// again never reuses an id (as with Redis, whose ids follow the clock), so a reader that kept
    /// its place reads on.
    last_stream_seq: u64,
    /// key -> (millitokens, time of last take in ms, ms to fill): token buckets of the rate limiter.
    rate: HashMap<String, (i64, i64, i64)>,
    rate_takes: u64,
    maps: HashMap<String, BTreeMap<String, Vec<u8>>>,
}

#[derive(Default)]
struct MemQueue {
    ordered: BTreeMap<(QueueOrder, CallId), Vec<u8>>,
    order_of: HashMap<CallId, QueueOrder>,
}

struct MemBlob {
    version: u64,
    data: Vec<u8>,
    expires_at: Option<Timestamp>,
}

struct MemLease {
    holder: String,
    token: u64,
    expires_at: Timestamp,
}

#[derive(Default)]
struct MemStream {
    last_seq: u64,
    entries: BTreeMap<u64, Vec<u8>>,
    groups: HashMap<String, MemGroup>,
}

#[derive(Default)]
struct MemGroup {
    last_delivered: u64,
    pending: BTreeMap<u64, MemPending>,
}

struct MemPending {
    consumer: String,
    delivered_at: Instant,
}

fn entry_id(seq: u64) -> StreamEntryId {
    StreamEntryId(format!("0-{seq}"))
}

fn parse_entry_id(id: &StreamEntryId) -> Option<u64> {
    id.0.strip_prefix("0-")?.parse().ok()
}

fn foreign_id(id: &StreamEntryId) -> StateError {
    StateError::Invalid {
        what: "stream entry id",
        reason: format!("{:?} was not handed out by this store", id.0),
    }
}

impl State {
    fn next_version(&mut self) -> u64 {
        self.last_version += 1;
        self.last_version
    }

    fn check_fence(&self, fence: Option<&Fence>) -> StateResult<()> {
        let Some(fence) = fence else { return Ok(()) };
        let current = self.fences.get(&fence.lease).copied().unwrap_or(0);
        if fence.token.0 == current {
            Ok(())
        } else {
            Err(StateError::StaleFence {
                lease: fence.lease.clone(),
                presented: fence.token,
                current: FencingToken(current),
            })
        }
    }

    fn queue_add(&mut self, queue: &QueueId, entry: QueueEntry) -> bool {
        let q = self.queues.entry(queue.clone()).or_default();
        let previous = q.order_of.insert(entry.call.clone(), entry.order);
        if let Some(old) = previous {
            q.ordered.remove(&(old, entry.call.clone()));
        }
        q.ordered.insert((entry.order, entry.call), entry.payload);
        previous.is_none()
    }

    fn queue_remove(&mut self, queue: &QueueId, call: &CallId) -> bool {
        let Some(q) = self.queues.get_mut(queue) else {
            return false;
        };
        let Some(order) = q.order_of.remove(call) else {
            return false;
        };
        q.ordered.remove(&(order, call.clone()));
        if q.order_of.is_empty() {
            self.queues.remove(queue);
        }
        true
    }

    fn put_presence(&mut self, agent: &AgentId, data: Vec<u8>) -> u64 {
        let version = self.next_version();
        self.presence
            .insert(agent.clone(), Versioned { version, value: data });
        version
    }

    fn put_blob(&mut self, k: (String, String), data: Vec<u8>, ttl: Option<Duration>, now: Timestamp) -> u64 {
        let version = self.next_version();
        let expires_at = ttl.map(|ttl| now + ttl);
        self.blobs.insert(
            k,
            MemBlob {
                version,
                data,
                expires_at,
            },
        );
        version
    }

    /// The blob under `k` if still live at `now`; a lapsed one is dropped.
    fn live_blob(&mut self, k: &(String, String), now: Timestamp) -> Option<&MemBlob> {
        let lapsed = self
            .blobs
            .get(k)
            .is_some_and(|b| b.expires_at.is_some_and(|at| at <= now));
        if lapsed {
            self.blobs.remove(k);
        }
        self.blobs.get(k)
    }
}

fn expect_holds(expect: Expect, current: Option<u64>) -> bool {
    match expect {
        Expect::Any => true,
        Expect::Absent => current.is_none(),
        Expect::Version(v) => current == Some(v),
    }
}

impl MemoryStore {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    // ---- maps ----

    pub(crate) fn map_update(&self, map: &str, put: &[(String, Vec<u8>)], remove: &[String]) {
        let mut st = self.inner.state.lock();
        let fields = st.maps.entry(map.to_string()).or_default();
        for (field, value) in put {
            fields.insert(field.clone(), value.clone());
        }
        for field in remove {
            fields.remove(field);
        }
        if fields.is_empty() {
            st.maps.remove(map);
        }
    }

    pub(crate) fn map_take(&self, map: &str, field: &str) -> bool {
        let mut st = self.inner.state.lock();
        let Some(fields) = st.maps.get_mut(map) else {
            return false;
        };
        let taken = fields.remove(field).is_some();
        if fields.is_empty() {
            st.maps.remove(map);
        }
        taken
    }

    pub(crate) fn map_entries(&self, map: &str) -> Vec<(String, Vec<u8>)> {
        let st = self.inner.state.lock();
        st.maps
            .get(map)
            .map(|fields| fields.iter().map(|(f, v)| (f.clone(), v.clone())).collect())
            .unwrap_or_default()
    }

    // ---- registrations ----

    pub(crate) fn upsert_binding(&self, aor: &Aor, binding: Binding, now: Timestamp) {
        let mut s = self.inner.state.lock();
        // Lapsed bindings of other contacts are purged by `live_bindings`, as on Redis, so that both
        // backends report the same counts from the removal calls.
        let bindings = s.registrations.entry(aor.clone()).or_default();
        if binding.is_live(now) {
            bindings.insert(binding.contact.clone(), binding);
        } else {
            bindings.remove(&binding.contact);
        }
        if bindings.is_empty() {
            s.registrations.remove(aor);
        }
    }

    pub(crate) fn remove_binding(&self, aor: &Aor, contact: &str) -> bool {
        let mut s = self.inner.state.lock();
        let Some(bindings) = s.registrations.get_mut(aor) else {
            return false;
        };
        let removed = bindings.remove(contact).is_some();
        if bindings.is_empty() {
            s.registrations.remove(aor);
        }
        removed
    }

    pub(crate) fn remove_all_bindings(&self, aor: &Aor) -> usize {
        self.inner
            .state
            .lock()
            .registrations
            .remove(aor)
            .map_or(0, |b| b.len())
    }

    pub(crate) fn live_bindings(&self, aor: &Aor, now: Timestamp) -> Vec<Binding> {
        let mut s = self.inner.state.lock();
        let Some(bindings) = s.registrations.get_mut(aor) else {
            return Vec::new();
        };
        bindings.retain(|_, b| b.is_live(now));
        let live: Vec<Binding> = bindings.values().cloned().collect();
        if live.is_empty() {
            s.registrations.remove(aor);
        }
        live
    }

    // ---- presence ----

    pub(crate) fn put_presence(&self, agent: &AgentId, expect: Expect, data: Vec<u8>) -> WriteOutcome {
        let mut s = self.inner.state.lock();
        let current = s.presence.get(agent).map(|v| v.version);
        if !expect_holds(expect, current) {
            return WriteOutcome::Conflict { current };
        }
        let version = s.put_presence(agent, data);
        WriteOutcome::Written { version }
    }

    pub(crate) fn get_presence(&self, agent: &AgentId) -> Option<Versioned<Vec<u8>>> {
        self.inner.state.lock().presence.get(agent).cloned()
    }

    pub(crate) fn list_presence(&self) -> Vec<(AgentId, Versioned<Vec<u8>>)> {
        let s = self.inner.state.lock();
        s.presence.iter().map(|(a, v)| (a.clone(), v.clone())).collect()
    }

    pub(crate) fn remove_presence(&self, agent: &AgentId) -> bool {
        self.inner.state.lock().presence.remove(agent).is_some()
    }

    // ---- queues ----

    pub(crate) fn queue_add(
        &self,
        queue: &QueueId,
        entry: QueueEntry,
        fence: Option<&Fence>,
    ) -> StateResult<bool> {
        let mut s = self.inner.state.lock();
        s.check_fence(fence)?;
        Ok(s.queue_add(queue, entry))
    }

    pub(crate) fn queue_remove(
        &self,
        queue: &QueueId,
        call: &CallId,
        fence: Option<&Fence>,
    ) -> StateResult<bool> {
        let mut s = self.inner.state.lock();
        s.check_fence(fence)?;
        Ok(s.queue_remove(queue, call))
    }

    pub(crate) fn queue_list(&self, queue: &QueueId) -> Vec<QueueEntry> {
        let s = self.inner.state.lock();
        let Some(q) = s.queues.get(queue) else {
            return Vec::new();
        };
        q.ordered
            .iter()
            .map(|((order, call), payload)| QueueEntry {
                call: call.clone(),
                order: *order,
                payload: payload.clone(),
            })
            .collect()
    }

    pub(crate) fn queue_len(&self, queue: &QueueId) -> usize {
        self.inner
            .state
            .lock()
            .queues
            .get(queue)
            .map_or(0, |q| q.order_of.len())
    }

    // ---- blobs ----

    pub(crate) fn put_blob(
        &self,
        ns: &str,
        key: &str,
        data: Vec<u8>,
        opts: &BlobWrite,
        now: Timestamp,
    ) -> StateResult<WriteOutcome> {
        let mut s = self.inner.state.lock();
        s.check_fence(opts.fence.as_ref())?;
        let k = (ns.to_string(), key.to_string());
        let current = s.live_blob(&k, now).map(|b| b.version);
        if !expect_holds(opts.expect, current) {
            return Ok(WriteOutcome::Conflict { current });
        }
        let version = s.put_blob(k, data, opts.ttl, now);
        Ok(WriteOutcome::Written { version })
    }

    pub(crate) fn get_blob(&self, ns: &str, key: &str, now: Timestamp) -> Option<Versioned<Vec<u8>>> {
        let mut s = self.inner.state.lock();
        let b = s.live_blob(&(ns.to_string(), key.to_string()), now)?;
        Some(Versioned {
            version: b.version,
            value: b.data.clone(),
        })
    }

    pub(crate) fn delete_blob(&self, ns: &str, key: &str, fence: Option<&Fence>) -> StateResult<bool> {
        let mut s = self.inner.state.lock();
        s.check_fence(fence)?;
        Ok(s.blobs.remove(&(ns.to_string(), key.to_string())).is_some())
    }

    // ---- batches ----

    pub(crate) fn apply_batch(&self, batch: WriteBatch, now: Timestamp) -> StateResult<BatchOutcome> {
        let mut s = self.inner.state.lock();
        s.check_fence(batch.fence.as_ref())?;
        // Check every condition before changing anything: the batch applies whole or not at all.
        for (index, write) in batch.writes.iter().enumerate() {
            if let BatchWrite::Presence { agent, expect, .. } = write {
                let current = s.presence.get(agent).map(|v| v.version);
                if !expect_holds(*expect, current) {
                    return Ok(BatchOutcome::Conflict { index, current });
                }
            }
        }
        let results = batch
            .writes
            .into_iter()
            .map(|write| match write {
                BatchWrite::QueueAdd { queue, entry } => u64::from(s.queue_add(&queue, entry)),
                BatchWrite::QueueRemove { queue, call } => u64::from(s.queue_remove(&queue, &call)),
                BatchWrite::Presence { agent, data, .. } => s.put_presence(&agent, data),
                BatchWrite::PutBlob { ns, key, data, ttl } => s.put_blob((ns, key), data, ttl, now),
                BatchWrite::DeleteBlob { ns, key } => u64::from(s.blobs.remove(&(ns, key)).is_some()),
            })
            .collect();
        Ok(BatchOutcome::Applied(results))
    }

    // ---- leases ----

    pub(crate) fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        now: Timestamp,
    ) -> Option<Lease> {
        let mut s = self.inner.state.lock();
        let expires_at = now + ttl;
        if let Some(l) = s.leases.get_mut(name).filter(|l| l.expires_at > now) {
            if l.holder != holder {
                return None;
            }
            l.expires_at = expires_at;
            let token = FencingToken(l.token);
            return Some(Lease {
                name: name.to_string(),
                holder: holder.to_string(),
                token,
                expires_at,
            });
        }
        let counter = s.fences.entry(name.to_string()).or_insert(0);
        *counter += 1;
        let token = *counter;
        s.leases.insert(
            name.to_string(),
            MemLease {
                holder: holder.to_string(),
                token,
                expires_at,
            },
        );
        Some(Lease {
            name: name.to_string(),
            holder: holder.to_string(),
            token: FencingToken(token),
            expires_at,
        })
    }

    pub(crate) fn renew_lease(&self, lease: &Lease, ttl: Duration, now: Timestamp) -> Option<Lease> {
        let mut s = self.inner.state.lock();
        let l = s.leases.get_mut(&lease.name)?;
        if l.holder != lease.holder || l.token != lease.token.0 || l.expires_at <= now {
            return None;
        }
        l.expires_at = now + ttl;
        Some(Lease {
            expires_at: l.expires_at,
            ..lease.clone()
        })
    }

    pub(crate) fn release_lease(&self, lease: &Lease) -> bool {
        let mut s = self.inner.state.lock();
        let held = s
            .leases
            .get(&lease.name)
            .is_some_and(|l| l.holder == lease.holder && l.token == lease.token.0);
        if held {
            s.leases.remove(&lease.name);
        }
        held
    }

    // ---- rate limiting ----

    pub(crate) fn rate_take(
        &self,
        key: &str,
        bucket: TokenBucket,
        cost: u32,
        now: Timestamp,
    ) -> RateDecision {
        let mut s = self.inner.state.lock();
        let now_ms = now.as_millis();
        s.rate_takes += 1;
        if s.rate_takes.is_multiple_of(1024) {
            // Buckets idle long enough to be full again carry no information: forget them, so keys
            // such as source addresses do not pile up.
            s.rate.retain(|_, (_, last, fill)| now_ms - *last < *fill);
        }
        let stored = s.rate.get(key).map(|(milli, last, _)| (*milli, *last));
        let (decision, level) = bucket.take(stored, cost, now_ms);
        s.rate.insert(key.to_string(), (level, now_ms, bucket.fill_ms()));
        decision
    }

    // ---- event bus ----

    pub(crate) fn publish(&self, topic: &str, payload: Bytes) -> usize {
        let mut bus = self.inner.bus.lock();
        let Some(tx) = bus.get(topic) else { return 0 };
        match tx.send(payload) {
            Ok(n) => n,
            Err(_) => {
                // Nobody listens any more: forget the topic so the map does not grow with dead topics.
                bus.remove(topic);
                0
            }
        }
    }

    pub(crate) fn subscribe(&self, topic: &str) -> broadcast::Receiver<Bytes> {
        let mut bus = self.inner.bus.lock();
        bus.entry(topic.to_string())
            .or_insert_with(|| broadcast::channel(BUS_CAPACITY).0)
            .subscribe()
    }

    // ---- durable streams ----

    pub(crate) fn stream_append_capped(
        &self,
        stream: &str,
        payload: Vec<u8>,
        max_len: usize,
    ) -> StreamEntryId {
        let id = self.stream_append(stream, payload);
        let mut s = self.inner.state.lock();
        if let Some(st) = s.streams.get_mut(stream) {
            while st.entries.len() > max_len {
                st.entries.pop_first();
            }
        }
        id
    }

    pub(crate) fn stream_append(&self, stream: &str, payload: Vec<u8>) -> StreamEntryId {
        let id = {
            let mut s = self.inner.state.lock();
            s.last_stream_seq += 1;
            let seq = s.last_stream_seq;
            let st = s.streams.entry(stream.to_string()).or_default();
            st.last_seq = seq;
            st.entries.insert(seq, payload);
            entry_id(seq)
        };
        self.inner.stream_appended.notify_waiters();
        id
    }

    pub(crate) fn stream_ensure_group(&self, stream: &str, group: &str) {
        let mut s = self.inner.state.lock();
        let st = s.streams.entry(stream.to_string()).or_default();
        st.groups.entry(group.to_string()).or_default();
    }

    /// Delivers up to `count` entries never delivered to `group`, waiting up to `block` for the first.
    pub(crate) async fn stream_read_group(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
        block: Option<Duration>,
    ) -> Vec<StreamEntry> {
        let deadline = block.map(|b| tokio::time::Instant::now() + b);
        loop {
            // Register for the wake-up before looking, so an append in between is not missed.
            let appended = self.inner.stream_appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let batch = self.take_new(stream, group, consumer, count);
            let Some(deadline) = deadline else { return batch };
            if !batch.is_empty() {
                return batch;
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return Vec::new();
            }
        }
    }

    fn take_new(&self, stream: &str, group: &str, consumer: &str, count: usize) -> Vec<StreamEntry> {
        let mut s = self.inner.state.lock();
        let st = s.streams.entry(stream.to_string()).or_default();
        let g = st.groups.entry(group.to_string()).or_default();
        let now = Instant::now();
        let mut out = Vec::new();
        for (&seq, payload) in st.entries.range(g.last_delivered + 1..).take(count) {
            g.last_delivered = seq;
            g.pending.insert(
                seq,
                MemPending {
                    consumer: consumer.to_string(),
                    delivered_at: now,
                },
            );
            out.push(StreamEntry {
                id: entry_id(seq),
                payload: payload.clone(),
            });
        }
        out
    }

    pub(crate) fn stream_ack(&self, stream: &str, group: &str, ids: &[StreamEntryId]) -> usize {
        let mut s = self.inner.state.lock();
        let Some(st) = s.streams.get_mut(stream) else {
            return 0;
        };
        let Some(g) = st.groups.get_mut(group) else {
            return 0;
        };
        ids.iter()
            .filter_map(parse_entry_id)
            .filter(|seq| g.pending.remove(seq).is_some())
            .count()
    }

    pub(crate) fn stream_claim(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Vec<StreamEntry> {
        let mut s = self.inner.state.lock();
        let Some(st) = s.streams.get_mut(stream) else {
            return Vec::new();
        };
        let Some(g) = st.groups.get_mut(group) else {
            return Vec::new();
        };
        let now = Instant::now();
        let mut out = Vec::new();
        for (seq, p) in g.pending.iter_mut() {
            if out.len() >= count {
                break;
            }
            if now.saturating_duration_since(p.delivered_at) < min_idle {
                continue;
            }
            // Like XAUTOCLAIM: an entry deleted meanwhile is not returned.
            let Some(payload) = st.entries.get(seq) else {
                continue;
            };
            p.consumer = consumer.to_string();
            p.delivered_at = now;
            out.push(StreamEntry {
                id: entry_id(*seq),
                payload: payload.clone(),
            });
        }
        out
    }

    /// Up to `count` entries after `after` (from the start when none), waiting up to `block` for the
    /// first if there are none.
    pub(crate) async fn stream_read(
        &self,
        stream: &str,
        after: Option<&StreamEntryId>,
        count: usize,
        block: Option<Duration>,
    ) -> StateResult<Vec<StreamEntry>> {
        let after = match after {
            Some(id) => parse_entry_id(id).ok_or_else(|| foreign_id(id))?,
            None => 0,
        };
        let deadline = block.map(|b| tokio::time::Instant::now() + b);
        loop {
            let appended = self.inner.stream_appended.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            let batch: Vec<StreamEntry> = {
                let s = self.inner.state.lock();
                s.streams.get(stream).map_or_else(Vec::new, |st| {
                    st.entries
                        .range(after + 1..)
                        .take(count)
                        .map(|(&seq, payload)| StreamEntry {
                            id: entry_id(seq),
                            payload: payload.clone(),
                        })
                        .collect()
                })
            };
            let Some(deadline) = deadline else {
                return Ok(batch);
            };
            if !batch.is_empty() {
                return Ok(batch);
            }
            if tokio::time::timeout_at(deadline, appended).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    pub(crate) fn stream_last(&self, stream: &str) -> Option<StreamEntry> {
        let s = self.inner.state.lock();
        let st = s.streams.get(stream)?;
        st.entries.last_key_value().map(|(&seq, payload)| StreamEntry {
            id: entry_id(seq),
            payload: payload.clone(),
        })
    }

    pub(crate) fn stream_commit(&self, commit: &StreamCommit) -> StateResult<Vec<StreamEntryId>> {
        let ids = {
            let mut s = self.inner.state.lock();
            let lease = &commit.lease;
            let current = s.fences.get(&lease.name).copied().unwrap_or(0);
            let held = s
                .leases
                .get(&lease.name)
                .is_some_and(|l| l.holder == lease.holder && l.token == lease.token.0);
            if !held || current != lease.token.0 {
                return Err(StateError::StaleFence {
                    lease: lease.name.clone(),
                    presented: lease.token,
                    current: FencingToken(current),
                });
            }
            if let Some((stream, expected)) = &commit.expected_last {
                let last = s
                    .streams
                    .get(stream)
                    .and_then(|st| st.entries.keys().next_back())
                    .map(|&seq| entry_id(seq));
                if last != *expected {
                    return Err(StateError::Diverged {
                        stream: stream.clone(),
                    });
                }
            }
            // Parse every id first: the commit applies whole or not at all.
            let trims = commit
                .trims
                .iter()
                .map(|(stream, id)| Ok((stream, parse_entry_id(id).ok_or_else(|| foreign_id(id))?)))
                .collect::<StateResult<Vec<_>>>()?;
            let mut ids = Vec::with_capacity(commit.appends.len());
            for a in &commit.appends {
                s.last_stream_seq += 1;
                let seq = s.last_stream_seq;
                let st = s.streams.entry(a.stream.clone()).or_default();
                st.last_seq = seq;
                st.entries.insert(seq, a.payload.clone());
                if let Some(max) = a.max_len {
                    while st.entries.len() > max {
                        st.entries.pop_first();
                    }
                }
                ids.push(entry_id(st.last_seq));
            }
            for a in &commit.acks {
                if let Some(g) = s
                    .streams
                    .get_mut(&a.stream)
                    .and_then(|st| st.groups.get_mut(&a.group))
                {
                    for seq in a.ids.iter().filter_map(parse_entry_id) {
                        g.pending.remove(&seq);
                    }
                }
            }
            if let Some((ns, key, data)) = &commit.blob {
                s.put_blob((ns.clone(), key.clone()), data.clone(), None, Timestamp::ZERO);
            }
            for (stream, first_kept) in trims {
                if let Some(st) = s.streams.get_mut(stream.as_str()) {
                    st.entries = st.entries.split_off(&first_kept);
                }
            }
            for stream in &commit.deletes {
                s.streams.remove(stream);
            }
            ids
        };
        if !commit.appends.is_empty() {
            self.inner.stream_appended.notify_waiters();
        }
        Ok(ids)
    }

    pub(crate) fn stream_pending(&self, stream: &str, group: &str) -> usize {
        let s = self.inner.state.lock();
        s.streams
            .get(stream)
            .and_then(|st| st.groups.get(group))
            .map_or(0, |g| g.pending.len())
    }

    pub(crate) fn stream_trim_consumed(&self, stream: &str) -> usize {
        let mut s = self.inner.state.lock();
        s.streams.get_mut(stream).map_or(0, MemStream::forget_consumed)
    }

    pub(crate) fn stream_delete(&self, stream: &str) -> bool {
        self.inner.state.lock().streams.remove(stream).is_some()
    }

    pub(crate) fn stream_len(&self, stream: &str) -> usize {
        let s = self.inner.state.lock();
        s.streams.get(stream).map_or(0, |st| st.entries.len())
    }

    /// Entries pending for `consumer` (who holds what): used by tests of the claim path.
    #[cfg(test)]
    pub(crate) fn pending_of(&self, stream: &str, group: &str, consumer: &str) -> usize {
        let s = self.inner.state.lock();
        s.streams
            .get(stream)
            .and_then(|st| st.groups.get(group))
            .map_or(0, |g| {
                g.pending.values().filter(|p| p.consumer == consumer).count()
            })
    }
}

impl MemStream {
    /// Drops entries every group has been given and acknowledged; returns how many. With no group
    /// yet, everything is kept for the first one.
    fn forget_consumed(&mut self) -> usize {
        let Some(horizon) = self
            .groups
            .values()
            .map(|g| {
                g.pending
                    .keys()
                    .next()
                    .map_or(g.last_delivered, |first| first - 1)
                    .min(g.last_delivered)
            })
            .min()
        else {
            return 0;
        };
        let before = self.entries.len();
        self.entries = self.entries.split_off(&(horizon + 1));
        before - self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn trimming_frees_only_entries_every_group_acknowledged() {
        let m = MemoryStore::new();
        m.stream_ensure_group("s", "g");
        for i in 0..3u8 {
            m.stream_append("s", vec![i]);
        }
        let got = m.stream_read_group("s", "g", "c1", 10, None).await;
        assert_eq!(got.len(), 3);
        assert_eq!(m.pending_of("s", "g", "c1"), 3);
        assert_eq!(m.stream_ack("s", "g", &[got[0].id.clone(), got[2].id.clone()]), 2);
        // The second entry is still pending, so it and everything after it are kept.
        assert_eq!(m.stream_trim_consumed("s"), 1);
        assert_eq!(m.stream_len("s"), 2);
        assert_eq!(m.stream_ack("s", "g", &[got[1].id.clone()]), 1);
        assert_eq!(m.stream_trim_consumed("s"), 2);
        assert_eq!(m.stream_len("s"), 0);
    }
}
