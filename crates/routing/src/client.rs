//! The node side: what call control talks to instead of a router of its own. [`RouterClient`] has
//! the methods of call control's in-process ACD handle (`enqueue`, `input`, `request`, `abandon`,
//! `forget`, `kpis`, `live_kpis`, `subscribe_agent_states`, `queue_state`, `save_now`), so the one can
//! replace the other behind the same seam.
//!
//! ```text
//! enqueue/input/request ─▶ sender task (numbers commands, one entry per burst, retries in order) ─▶ acd.in
//! acd.out.<this node> ─▶ reader task ─▶ the call's notices / the waiting request's reply
//! acd.events ─▶ follower task ─▶ broadcast of agent state changes (desktops of this node)
//! KPI blob (+ nudge) ─▶ watch (wallboards of this node)
//! liveness task: renews this node's record; the leader lets its calls go once it lapses
//! ```
//!
//! Each process is a fresh node id (its name and a random suffix): a restarted node never inherits
//! the numbering or the calls of the process before it (those were let go when it died).

use crate::clock::Clock;
use crate::protocol::{
    Abandonment, AgentStateEvent, Command, EVENTS_STREAM, EventBatch, INPUT_STREAM, InBatch, InItem,
    KPI_TOPIC, KPIS_KEY, NODES_NAMESPACE, NodeId, OutBatch, OutItem, QueueNotice, ROUTER_NAMESPACE, Reply,
    decode, encode, out_stream,
};
use acd::{AcdError, AgentStateKind, CallRequest, Input, KpiSnapshot};
use domain::{CallId, QueueId};
use parking_lot::Mutex;
use state_store::{BlobWrite, StateStore, StreamEntryId};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, warn};

/// Tuning of a node's client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The node's name (the id adds a random suffix).
    pub name: String,
    /// How long this node's liveness record lasts unless renewed: a dead node's calls are let go
    /// about this long after it stopped.
    pub liveness_ttl: Duration,
    /// How often the record is renewed.
    pub liveness_every: Duration,
    /// How long a request waits for the router's answer (a failover takes a few seconds).
    pub request_timeout: Duration,
    /// Commands sent in one stream entry at most.
    pub max_commands_per_entry: usize,
}

impl ClientConfig {
    /// Defaults: liveness 3 s renewed every second, requests answered within 10 s.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            liveness_ttl: Duration::from_secs(3),
            liveness_every: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            max_commands_per_entry: 256,
        }
    }
}

/// Why a client could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("node name: {0}")]
    Name(#[from] crate::protocol::BadNodeId),
    #[error("state store: {0}")]
    Store(#[from] state_store::StateError),
}

/// Counters of one client since it started.
#[derive(Debug, Default)]
pub struct ClientStats {
    pub commands_sent: AtomicU64,
    pub entries_sent: AtomicU64,
    pub append_retries: AtomicU64,
    pub notices: AtomicU64,
    /// Offers dropped because they repeated the last offer of their call.
    pub repeated_offers: AtomicU64,
    /// Out batches skipped because this node had them already (delivered again after a rebuild).
    pub redelivered: AtomicU64,
    /// Agent event batches skipped for the same reason (counted only while someone follows them).
    pub redelivered_events: AtomicU64,
    pub replies: AtomicU64,
    pub undecodable: AtomicU64,
}

/// A call this node holds: where its notices go, and the last offer passed on.
struct HeldCall {
    notices: mpsc::UnboundedSender<QueueNotice>,
    last_offer: Option<(acd::OfferId, Vec<domain::AgentId>)>,
}

impl HeldCall {
    fn new(notices: mpsc::UnboundedSender<QueueNotice>) -> Self {
        Self {
            notices,
            last_offer: None,
        }
    }

    /// Passes a notice on, except an offer identical to the last one (the same decision delivered
    /// twice must not ring twice, whatever path brought it).
    fn deliver(&mut self, notice: QueueNotice) -> bool {
        if let QueueNotice::Offer(o) = &notice {
            let this = (o.offer, o.agents.clone());
            if self.last_offer.as_ref() == Some(&this) {
                return false;
            }
            self.last_offer = Some(this);
        }
        let _ = self.notices.send(notice);
        true
    }
}

/// What the reader tasks share with the handle.
struct Shared {
    node: NodeId,
    calls: Mutex<HashMap<CallId, HeldCall>>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Reply>>>,
    states: broadcast::Sender<AgentStateEvent>,
    stats: ClientStats,
}

struct Inner {
    shared: Arc<Shared>,
    store: StateStore,
    clock: Clock,
    cfg: ClientConfig,
    tx: mpsc::UnboundedSender<Command>,
    next_id: AtomicU64,
    kpis: watch::Receiver<Arc<KpiSnapshot>>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A node's connection to the cluster's router. Cheap to clone.
#[derive(Clone)]
pub struct RouterClient {
    inner: Arc<Inner>,
}

impl RouterClient {
    /// Announces the node (its liveness record) and starts its tasks.
    pub async fn start(
        store: StateStore,
        cfg: ClientConfig,
        clock: Clock,
    ) -> Result<RouterClient, ClientError> {
        let node = NodeId::incarnation(&cfg.name)?;
        announce(&store, &node, cfg.liveness_ttl, &clock).await?;
        // Follow agent states from now on; the batch number of the newest entry says which batches
        // delivered again after a rebuild this node has no need of.
        let events_start = store.stream_last(EVENTS_STREAM).await?;
        let events_seen = events_start
            .as_ref()
            .and_then(|e| decode::<EventBatch>(&e.payload).ok())
            .map_or(0, |b| b.batch);
        let events_from = events_start.map(|e| e.id);
        let initial = read_kpis(&store, &clock).await.unwrap_or_default();
        let (kpi_tx, kpis) = watch::channel(Arc::new(initial));
        let (states, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared {
            node: node.clone(),
            calls: Mutex::default(),
            waiting: Mutex::default(),
            states,
            stats: ClientStats::default(),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let tasks = vec![
            tokio::spawn(send(
                store.clone(),
                shared.clone(),
                rx,
                cfg.max_commands_per_entry,
            ))
            .abort_handle(),
            tokio::spawn(read_out(store.clone(), shared.clone())).abort_handle(),
            tokio::spawn(follow_events(
                store.clone(),
                shared.clone(),
                events_from,
                events_seen,
            ))
            .abort_handle(),
            tokio::spawn(follow_kpis(store.clone(), clock.clone(), kpi_tx)).abort_handle(),
            tokio::spawn(keep_alive(store.clone(), node, cfg.clone(), clock.clone())).abort_handle(),
        ];
        Ok(RouterClient {
            inner: Arc::new(Inner {
                shared,
                store,
                clock,
                cfg,
                tx,
                next_id: AtomicU64::new(1),
                kpis,
                tasks,
            }),
        })
    }

    /// This process's node id.
    pub fn node(&self) -> &NodeId {
        &self.inner.shared.node
    }

    /// Counters since start.
    pub fn stats(&self) -> &ClientStats {
        &self.inner.shared.stats
    }

    fn send(&self, command: Command) {
        let _ = self.inner.tx.send(command);
    }

    /// Feeds one input to the router.
    pub fn input(&self, input: Input) {
        self.send(Command::Input { input });
    }

    /// Enqueues a call held by this node; its notices arrive on the returned receiver.
    pub fn enqueue(&self, request: CallRequest) -> mpsc::UnboundedReceiver<QueueNotice> {
        let (notices, rx) = mpsc::unbounded_channel();
        self.inner
            .shared
            .calls
            .lock()
            .insert(request.call.clone(), HeldCall::new(notices));
        self.input(Input::CallEnqueued(request));
        rx
    }

    /// Enqueues a call only if the router does not hold it already (a callback taken back by a node
    /// that joined: another node may still hold it). Its notices arrive on the returned receiver; a
    /// refusal (the call is known, the queue is not) registers nothing.
    pub async fn enqueue_new(
        &self,
        request: CallRequest,
    ) -> Result<mpsc::UnboundedReceiver<QueueNotice>, AcdError> {
        let (notices, rx) = mpsc::unbounded_channel();
        let call = request.call.clone();
        self.inner
            .shared
            .calls
            .lock()
            .insert(call.clone(), HeldCall::new(notices));
        match self.request(Input::CallEnqueued(request)).await {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.forget(call);
                Err(e)
            }
        }
    }

    /// Takes over a call the router holds (a callback whose node is gone): from now on its notices
    /// come to this node, on the returned receiver.
    pub fn adopt(&self, call: CallId) -> mpsc::UnboundedReceiver<QueueNotice> {
        let (notices, rx) = mpsc::unbounded_channel();
        self.inner
            .shared
            .calls
            .lock()
            .insert(call.clone(), HeldCall::new(notices));
        self.send(Command::Adopt { call });
        rx
    }

    /// The call is gone from the queue's point of view (ended or left): its notices stop.
    pub fn forget(&self, call: CallId) {
        self.inner.shared.calls.lock().remove(&call);
    }

    async fn ask(&self, command: impl FnOnce(u64) -> Command) -> Option<Reply> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.inner.shared.waiting.lock().insert(id, tx);
        self.send(command(id));
        let reply = tokio::time::timeout(self.inner.cfg.request_timeout, rx).await;
        self.inner.shared.waiting.lock().remove(&id);
        match reply {
            Ok(Ok(reply)) => Some(reply),
            _ => None,
        }
    }

    /// Feeds one input and says whether the router took it (an illegal agent transition is refused
    /// with the reason and changes nothing).
    pub async fn request(&self, input: Input) -> Result<(), AcdError> {
        match self.ask(|id| Command::Request { id, input }).await {
            Some(Reply::Done) => Ok(()),
            Some(Reply::Refused { refusal }) => Err(refusal.into()),
            Some(_) => Err(AcdError::Internal("the cluster router answered something else")),
            None => Err(AcdError::Internal("the cluster router did not answer in time")),
        }
    }

    /// The caller hung up while queued: the router records it and says where they were.
    pub async fn abandon(&self, call: CallId) -> Option<Abandonment> {
        self.forget(call.clone());
        match self.ask(|id| Command::Abandon { id, call }).await {
            Some(Reply::Abandoned { abandonment }) => abandonment,
            _ => None,
        }
    }

    /// Returns once everything this node sent before is applied and journaled by the leader (at
    /// shutdown, and for tests). Gives up after the request timeout.
    pub async fn save_now(&self) {
        let _ = self.ask(|id| Command::Flush { id }).await;
    }

    /// Live KPIs of every queue and agent of the cluster, fresh from the leader.
    pub async fn kpis(&self) -> Option<KpiSnapshot> {
        match self.ask(|id| Command::Kpis { id }).await {
            Some(Reply::Kpis { kpis }) => Some(*kpis),
            _ => None,
        }
    }

    /// Every agent state change of the cluster from now on. A receiver that falls behind by more
    /// than 1,024 changes is told it lagged and should re-read the states from [`Self::live_kpis`].
    pub fn subscribe_agent_states(&self) -> broadcast::Receiver<AgentStateEvent> {
        self.inner.shared.states.subscribe()
    }

    /// The cluster-wide KPIs as the leader last published them (at most 250 ms old while things
    /// change, a second otherwise); changes wake the receiver.
    pub fn live_kpis(&self) -> watch::Receiver<Arc<KpiSnapshot>> {
        self.inner.kpis.clone()
    }

    /// Waiting calls, available agents and estimated wait of one queue.
    pub async fn queue_state(&self, queue: &QueueId) -> Option<(u32, u32, Option<u64>)> {
        let k = self.kpis().await?;
        let q = k.queues.into_iter().find(|q| &q.queue == queue)?;
        let available = q
            .agents_by_state
            .iter()
            .filter(|(kind, _)| **kind == AgentStateKind::Available)
            .map(|(_, n)| *n)
            .sum();
        Some((q.waiting, available, q.estimated_wait_ms))
    }

    /// Renews this node's liveness record now (the task does it every `liveness_every`; tests that
    /// move a manual clock call this).
    pub async fn announce(&self) -> Result<(), state_store::StateError> {
        let i = &self.inner;
        announce(&i.store, &i.shared.node, i.cfg.liveness_ttl, &i.clock).await
    }

    /// Leaves the cluster: waits until what was sent is applied, then withdraws the liveness record
    /// (the leader lets go of any call still held here) and stops the tasks.
    pub async fn shutdown(self) {
        self.save_now().await;
        let i = &self.inner;
        if let Err(error) = i
            .store
            .delete_blob(NODES_NAMESPACE, i.shared.node.as_str(), None)
            .await
        {
            warn!(%error, "the node's liveness record could not be withdrawn");
        }
        for task in &i.tasks {
            task.abort();
        }
    }

    /// Stops every task at once without a word to anyone, as a crash would (tests).
    pub fn kill(&self) {
        for task in &self.inner.tasks {
            task.abort();
        }
    }
}

async fn announce(
    store: &StateStore,
    node: &NodeId,
    ttl: Duration,
    clock: &Clock,
) -> Result<(), state_store::StateError> {
    store
        .put_blob(
            NODES_NAMESPACE,
            node.as_str(),
            b"alive",
            &BlobWrite::new().ttl(ttl),
            clock.now(),
        )
        .await
        .map(|_| ())
}

async fn read_kpis(store: &StateStore, clock: &Clock) -> Option<KpiSnapshot> {
    let blob = store
        .get_blob(ROUTER_NAMESPACE, KPIS_KEY, clock.now())
        .await
        .ok()??;
    decode(&blob.value).ok()
}

/// Backoff after a failed store call: 20 ms doubling to a second.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(20u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(1))
}

/// Numbers this node's commands and appends them in order, one entry per burst; an append that
/// failed is retried with the very same entry (the leader skips what it already applied).
async fn send(
    store: StateStore,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Command>,
    max_per_entry: usize,
) {
    let mut seq = 0u64;
    while let Some(first) = rx.recv().await {
        let mut commands = vec![first];
        while commands.len() < max_per_entry {
            match rx.try_recv() {
                Ok(c) => commands.push(c),
                Err(_) => break,
            }
        }
        let items: Vec<InItem> = commands
            .into_iter()
            .map(|command| {
                seq += 1;
                InItem { seq, command }
            })
            .collect();
        let n = items.len() as u64;
        let payload = encode(&InBatch {
            node: shared.node.clone(),
            items,
        });
        let mut failures = 0u32;
        loop {
            match store.stream_append(INPUT_STREAM, &payload).await {
                Ok(_) => break,
                Err(error) => {
                    shared.stats.append_retries.fetch_add(1, Ordering::Relaxed);
                    debug!(%error, "appending inputs failed; retrying");
                    tokio::time::sleep(backoff(failures)).await;
                    failures = failures.saturating_add(1);
                }
            }
        }
        shared.stats.commands_sent.fetch_add(n, Ordering::Relaxed);
        shared.stats.entries_sent.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads this node's out stream and hands each notice to its call and each reply to its request.
async fn read_out(store: StateStore, shared: Arc<Shared>) {
    let stream = out_stream(&shared.node);
    let mut after: Option<StreamEntryId> = None;
    let mut last_batch = 0u64;
    let mut failures = 0u32;
    loop {
        let entries = match store
            .stream_read(&stream, after.as_ref(), 256, Some(Duration::from_secs(1)))
            .await
        {
            Ok(e) => {
                failures = 0;
                e
            }
            Err(error) => {
                debug!(%error, "reading this node's router outputs failed; retrying");
                tokio::time::sleep(backoff(failures)).await;
                failures = failures.saturating_add(1);
                continue;
            }
        };
        for entry in entries {
            after = Some(entry.id.clone());
            let batch: OutBatch = match decode(&entry.payload) {
                Ok(b) => b,
                Err(error) => {
                    shared.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                    warn!(entry = %entry.id, %error, "a router output does not decode; dropped");
                    continue;
                }
            };
            // A leader that rebuilt its state delivers the batches after its snapshot again.
            if batch.batch <= last_batch {
                shared.stats.redelivered.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            last_batch = batch.batch;
            for item in batch.items {
                match item {
                    OutItem::Notice { call, notice } => {
                        shared.stats.notices.fetch_add(1, Ordering::Relaxed);
                        if let Some(held) = shared.calls.lock().get_mut(&call)
                            && !held.deliver(notice)
                        {
                            shared.stats.repeated_offers.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    OutItem::Reply { id, reply } => {
                        shared.stats.replies.fetch_add(1, Ordering::Relaxed);
                        if let Some(tx) = shared.waiting.lock().remove(&id) {
                            let _ = tx.send(reply);
                        }
                    }
                }
            }
        }
    }
}

/// The number of an event batch, read without its events.
#[derive(serde::Deserialize)]
struct BatchNumber {
    batch: u64,
}

/// Follows the cluster's agent state changes from where the stream stood at start, skipping batches
/// it had (a rebuilt leader delivers the batches after its snapshot again).
async fn follow_events(
    store: StateStore,
    shared: Arc<Shared>,
    mut after: Option<StreamEntryId>,
    mut last_batch: u64,
) {
    let mut failures = 0u32;
    loop {
        let entries = match store
            .stream_read(EVENTS_STREAM, after.as_ref(), 256, Some(Duration::from_secs(1)))
            .await
        {
            Ok(e) => {
                failures = 0;
                e
            }
            Err(error) => {
                debug!(%error, "following agent states failed; retrying");
                tokio::time::sleep(backoff(failures)).await;
                failures = failures.saturating_add(1);
                continue;
            }
        };
        for entry in entries {
            after = Some(entry.id.clone());
            let decoded = if shared.states.receiver_count() == 0 {
                // Nobody on this node follows agents: the batch number is all there is to read.
                decode::<BatchNumber>(&entry.payload).map(|b| EventBatch {
                    batch: b.batch,
                    events: Vec::new(),
                })
            } else {
                decode::<EventBatch>(&entry.payload)
            };
            match decoded {
                Ok(batch) if batch.batch <= last_batch => {
                    shared.stats.redelivered_events.fetch_add(1, Ordering::Relaxed);
                }
                Ok(batch) => {
                    last_batch = batch.batch;
                    for event in batch.events {
                        // Nobody listening is fine: no desktop is attached here.
                        let _ = shared.states.send(event);
                    }
                }
                Err(error) => {
                    shared.stats.undecodable.fetch_add(1, Ordering::Relaxed);
                    warn!(entry = %entry.id, %error, "an agent event does not decode; dropped");
                }
            }
        }
    }
}

/// Keeps the published KPIs in a watch: on every nudge, and once a second regardless (a nudge is
/// fire-and-forget and may be missed).
async fn follow_kpis(store: StateStore, clock: Clock, tx: watch::Sender<Arc<KpiSnapshot>>) {
    let mut version = None;
    let mut nudges = store.subscribe(KPI_TOPIC).await.ok();
    loop {
        if let Ok(Some(blob)) = store.get_blob(ROUTER_NAMESPACE, KPIS_KEY, clock.now()).await
            && version != Some(blob.version)
        {
            version = Some(blob.version);
            match decode::<KpiSnapshot>(&blob.value) {
                Ok(kpis) => {
                    tx.send_replace(Arc::new(kpis));
                }
                Err(error) => warn!(%error, "the published KPIs do not decode"),
            }
        }
        match &mut nudges {
            Some(sub) => {
                if let Ok(None) = tokio::time::timeout(Duration::from_secs(1), sub.recv()).await {
                    // The subscription ended (connection lost): subscribe again next time.
                    nudges = None;
                }
            }
            None => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                nudges = store.subscribe(KPI_TOPIC).await.ok();
            }
        }
    }
}

/// Renews this node's liveness record.
async fn keep_alive(store: StateStore, node: NodeId, cfg: ClientConfig, clock: Clock) {
    loop {
        tokio::time::sleep(cfg.liveness_every).await;
        if let Err(error) = announce(&store, &node, cfg.liveness_ttl, &clock).await {
            warn!(%error, "renewing this node's liveness failed");
        }
    }
}
