//! The leader: the one process that runs the cluster's router, chosen by the state store's lease
//! [`LEADER_LEASE`] with its fencing token. Every node may run a candidate; the others stand by.
//!
//! ```text
//!            ┌──────────── step ───────────────────────────────────────────────┐
//! acd.in ──▶ │ read (group "router") ─▶ order per node ─▶ ClusterRouter::apply │ ──▶ fenced commit:
//!            └─────────────────────────────────────────────────────────────────┘     journal batch,
//!                                                                                    acks of inputs
//!   now and then: snapshot + journal trim (fenced)                    once confirmed, fenced commit:
//!   every second: liveness of nodes holding calls ─▶ NodeLost         outputs per node, agent events
//! ```
//!
//! - **One atomic step, then delivery.** A batch is journaled and acknowledged by one
//!   [`StateStore::stream_commit`]; only once the store has confirmed it (with Sentinel, a replica
//!   has it) are its offers and replies appended to the nodes' out streams and its agent state
//!   changes to [`EVENTS_STREAM`]. A node never rings a phone, nor shows an agent in a state, for a
//!   decision a failover can still take back. If the lease is no longer ours the commit
//!   changes nothing and the leader throws its state away, so an old leader woken from a pause can
//!   never offer a call or change an agent.
//! - **Redelivery.** A delivery lost with a primary (written, not yet replicated) belongs to a batch
//!   the journal holds: every (re)build delivers again the batches after the snapshot, and a node
//!   skips a batch number it has seen. A snapshot never covers an undelivered batch: replication
//!   keeps order, so a confirmed snapshot means the deliveries before it were replicated too.
//! - **Order and idempotence.** Each node numbers its commands; the leader applies them in that order
//!   and skips numbers it has applied (a node that retried an append whose reply was lost). An entry
//!   that arrives after a gap waits for the missing one (it may sit with a consumer that has not been
//!   claimed yet) for at most `gap_timeout`.
//! - **Takeover.** Load the snapshot, apply the journal after it, claim the inputs the old leader
//!   read but never committed, have the store confirm what was read (a fenced write expecting the
//!   journal's end, confirmed by the replicas), deliver the replayed batches' outputs again,
//!   continue. The router is deterministic, so the result is exactly the old leader's state; the
//!   confirmation keeps a rebuild from acting on journal entries a failover can still lose.
//! - **Unknown outcomes.** A commit that failed for another reason (the store unreachable, a write
//!   not confirmed) may or may not have happened: the state is thrown away and rebuilt from the
//!   store, which knows. Every commit expects the journal to end where the leader saw it end, so a
//!   store that lost batches (a failover) is noticed at the next commit and never built upon.
//! - **Time.** `now` is the leader's clock, never going backwards; timers fire at
//!   `Acd::next_deadline` as a journaled tick.

mod rebuild;

use crate::clock::Clock;
use crate::liveness::MissingNodes;
use crate::protocol::{
    Applied, EVENTS_STREAM, EventBatch, INPUT_STREAM, InBatch, InItem, JOURNAL_STREAM, JournalBatch,
    KPI_TOPIC, KPIS_KEY, LEADER_LEASE, NODES_NAMESPACE, NodeId, OutBatch, ROUTER_GROUP, ROUTER_NAMESPACE,
    SNAPSHOT_KEY, TAKEOVER_KEY, decode, encode, node_streams, out_stream,
};
use crate::router::{ClusterRouter, Delivery};
use acd::{AcdConfig, Input};
use domain::Timestamp;
pub use rebuild::read_router;
use rebuild::{BatchDelivery, REDELIVERY_BATCHES_PER_COMMIT, Rebuilt, rebuild};
use state_store::{
    BlobWrite, FencingToken, Lease, StateError, StateStore, StreamCommit, StreamEntry, StreamEntryId,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify, watch};
use tracing::{debug, info, warn};

/// Tuning of a leader candidate.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// The node's name; the lease holder is this plus a random suffix.
    pub name: String,
    /// The queues and agents. A fresh cluster starts from it; a leader taking over applies what
    /// differs from the state it restored (as a journaled input).
    pub acd: AcdConfig,
    /// How long the lease lasts unless renewed: a dead leader is replaced after about this long.
    pub lease_ttl: Duration,
    /// How often the leader renews its lease.
    pub renew_every: Duration,
    /// How often a standby tries to take the lease.
    pub standby_poll: Duration,
    /// Input entries read per batch (each holds up to a few hundred commands of one node).
    pub entries_per_batch: usize,
    /// Longest a read waits for inputs when no timer is due sooner.
    pub idle_block: Duration,
    /// A snapshot at least every this many batches...
    pub snapshot_every_batches: u64,
    /// ...or this often while anything changes; never sooner than 20 times the last copy's cost.
    pub snapshot_every: Duration,
    /// How often the liveness of the nodes holding calls is checked.
    pub node_check_every: Duration,
    /// How long a node's liveness record must stay missing, check after check with the store
    /// answering, before its calls are let go (see [`crate::liveness`]).
    pub node_lost_after: Duration,
    /// How often inputs read by a consumer that has gone quiet are claimed.
    pub claim_every: Duration,
    /// How long an input sent after a missing one waits for it before the gap is skipped.
    pub gap_timeout: Duration,
    /// How often the KPIs are published while things change (and once a second regardless).
    pub kpi_refresh: Duration,
    /// About how many entries a node's out stream keeps.
    pub out_max_len: usize,
    /// About how many entries the agent event stream keeps.
    pub events_max_len: usize,
}

impl LeaderConfig {
    /// The defaults the design asks for: a 2 s lease renewed every 0.4 s, standbys trying every 0.2 s.
    pub fn new(name: impl Into<String>, acd: AcdConfig) -> Self {
        Self {
            name: name.into(),
            acd,
            lease_ttl: Duration::from_secs(2),
            renew_every: Duration::from_millis(400),
            standby_poll: Duration::from_millis(200),
            entries_per_batch: 64,
            idle_block: Duration::from_millis(100),
            snapshot_every_batches: 5_000,
            snapshot_every: Duration::from_secs(10),
            node_check_every: Duration::from_secs(1),
            node_lost_after: crate::liveness::NODE_LOST_AFTER,
            claim_every: Duration::from_secs(1),
            gap_timeout: Duration::from_secs(5),
            kpi_refresh: Duration::from_millis(250),
            out_max_len: 10_000,
            events_max_len: 10_000,
        }
    }
}

/// Why a leader step failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("this candidate is not the leader")]
    NotLeading,
    #[error("the lease was lost to another leader; the state was dropped")]
    Fenced,
    #[error("state store: {0}")]
    Store(#[from] StateError),
    #[error("configuration: {0}")]
    Config(#[from] acd::ConfigError),
}

/// Counters of one candidate since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderStats {
    pub takeovers: u64,
    pub batches: u64,
    pub commands: u64,
    pub offers: u64,
    pub duplicates: u64,
    pub refused: u64,
    /// Input entries that did not decode (acknowledged and dropped).
    pub undecodable: u64,
    /// Journal batches applied when taking over.
    pub replayed: u64,
    /// Entries claimed from other consumers.
    pub claimed: u64,
    /// Gaps in a node's numbering given up on.
    pub gaps_skipped: u64,
    pub snapshots: u64,
    pub nodes_lost: u64,
    /// Commits refused because the lease had moved on.
    pub fenced: u64,
    /// Commits refused because the journal no longer ended where this leader saw it end (entries
    /// lost with a primary): the state was rebuilt.
    pub diverged: u64,
}

/// A batch applied to the router and waiting for its commit.
#[derive(Debug)]
pub struct Prepared {
    pub journal: JournalBatch,
    pub delivery: Delivery,
    acks: Vec<StreamEntryId>,
}

/// What a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutcome {
    /// Nothing to apply.
    Idle,
    /// A batch was committed (or only acknowledgements, with `commands == 0`).
    Committed {
        batch: u64,
        commands: usize,
        offers: u64,
    },
}

/// Entries of one node waiting for an earlier one.
#[derive(Debug)]
struct Held {
    entry: StreamEntryId,
    items: Vec<InItem>,
    since: Timestamp,
}

struct Leading {
    router: ClusterRouter,
    incoming: VecDeque<StreamEntry>,
    held: BTreeMap<NodeId, BTreeMap<u64, Held>>,
    queued: Vec<Applied>,
    journal_ids: BTreeMap<u64, StreamEntryId>,
    /// The journal's last entry as this leader knows it; every commit expects the store to agree.
    journal_tip: Option<StreamEntryId>,
    last_snapshot_batch: u64,
    last_snapshot_at: Timestamp,
    snapshot_not_before: Instant,
    snapshot_in_flight: Option<tokio::task::JoinHandle<Result<(), StateError>>>,
    next_node_check: Timestamp,
    /// Nodes whose liveness record every check since some time has found missing.
    missing: MissingNodes<Timestamp>,
    next_claim: Timestamp,
    kpis_dirty: bool,
    kpis_published: Option<Instant>,
    renewed_at: Instant,
}

/// A leader candidate, driven step by step ([`spawn_leader`] drives one in real time).
pub struct Leader {
    store: StateStore,
    cfg: LeaderConfig,
    clock: Clock,
    holder: String,
    lease: Option<Lease>,
    leading: Option<Leading>,
    stats: LeaderStats,
}

impl Leader {
    /// A candidate, standing by.
    pub fn new(store: StateStore, cfg: LeaderConfig, clock: Clock) -> Self {
        let holder = match NodeId::incarnation(&cfg.name) {
            Ok(id) => id.to_string(),
            Err(_) => format!("router.{:08x}", rand::random::<u32>()),
        };
        Self {
            store,
            cfg,
            clock,
            holder,
            lease: None,
            leading: None,
            stats: LeaderStats::default(),
        }
    }

    /// The lease holder name of this candidate (also its consumer name).
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Whether this candidate leads (holds the lease and a router state).
    pub fn is_leading(&self) -> bool {
        self.leading.is_some()
    }

    /// The fencing token of the lease held, if any.
    pub fn token(&self) -> Option<FencingToken> {
        self.lease.as_ref().map(|l| l.token)
    }

    /// The router, while leading.
    pub fn router(&self) -> Option<&ClusterRouter> {
        self.leading.as_ref().map(|l| &l.router)
    }

    /// Counters since start.
    pub fn stats(&self) -> &LeaderStats {
        &self.stats
    }

    /// The time for the next batch: the clock, never before what the router has seen.
    fn now(&self) -> Timestamp {
        let now = self.clock.now();
        match &self.leading {
            Some(l) => now.max(l.router.acd().now()),
            None => now,
        }
    }

    /// Tries to take the lease; on success loads the router state from the store (snapshot, journal,
    /// inputs the previous leader read and never committed). True if this candidate now leads.
    pub async fn try_take_over(&mut self) -> Result<bool, LeaderError> {
        let now = self.clock.now();
        let Some(lease) = self
            .store
            .acquire_lease(LEADER_LEASE, &self.holder, self.cfg.lease_ttl, now)
            .await?
        else {
            return Ok(false);
        };
        if self.leading.is_some() && self.lease.as_ref().is_some_and(|l| l.token == lease.token) {
            self.lease = Some(lease);
            return Ok(true);
        }
        let token = lease.token;
        self.lease = Some(lease);
        let (leading, deliveries) = self.load().await?;
        self.confirm_rebuilt(&leading).await?;
        // Many batches to a commit: a takeover must not wait for one round trip per batch.
        let mut deliveries = deliveries.into_iter().peekable();
        while deliveries.peek().is_some() {
            let chunk: Vec<_> = deliveries.by_ref().take(REDELIVERY_BATCHES_PER_COMMIT).collect();
            self.deliver(chunk).await?;
        }
        info!(
            holder = %self.holder,
            %token,
            batch = leading.router.batch(),
            claimed = leading.incoming.len(),
            "leading the cluster's ACD router"
        );
        self.leading = Some(leading);
        self.stats.takeovers += 1;
        Ok(true)
    }

    /// Makes sure the state just rebuilt cannot be lost, before anything is delivered from it or
    /// decided on it: a fenced write that expects the journal to end where the rebuild read it, and
    /// that the store confirms (with Sentinel: a replica has it, and so everything written before
    /// it). Without this, a rebuild that read a journal entry not yet replicated would deliver its
    /// offers, and a failover would then take the decision back while a phone rings for it.
    async fn confirm_rebuilt(&mut self, leading: &Leading) -> Result<(), LeaderError> {
        let lease = self.lease.clone().ok_or(LeaderError::NotLeading)?;
        let mut commit = StreamCommit::new(lease.clone());
        let record = format!(
            "holder={} token={} batch={}",
            self.holder,
            lease.token,
            leading.router.batch()
        );
        commit
            .expect_last(JOURNAL_STREAM, leading.journal_tip.clone())
            .put_blob(ROUTER_NAMESPACE, TAKEOVER_KEY, record.into_bytes());
        match self.store.stream_commit(&commit).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.write_failed(e, "takeover confirmation")),
        }
    }

    /// The router state from the store, and what its replayed batches had for the nodes.
    async fn load(&mut self) -> Result<(Leading, Vec<BatchDelivery>), LeaderError> {
        let now = self.clock.now();
        self.store.stream_ensure_group(INPUT_STREAM, ROUTER_GROUP).await?;
        let Rebuilt {
            router,
            fresh,
            snapshot_batch,
            journal_ids,
            journal_tip,
            replayed,
            deliveries,
        } = rebuild(&self.store, &self.cfg.acd, now).await?;
        self.stats.replayed += replayed;
        let mut queued = Vec::new();
        // Offers still ringing were made by a router that stopped hearing answers some time ago:
        // that time must not ring them out (an agent who answered meanwhile would be blamed and
        // the call offered again). First in the first batch, before any timer fires.
        if router.acd().offers_ringing() > 0 {
            queued.push(Applied::Router {
                input: Input::Resumed,
            });
        }
        if !fresh || router.batch() > 0 {
            queued.extend(configuration_changes(&router, &self.cfg.acd));
        }
        // Inputs the previous leader was given and never committed: ours now, before anything new.
        let mut incoming = VecDeque::new();
        loop {
            let claimed = self
                .store
                .stream_claim(INPUT_STREAM, ROUTER_GROUP, &self.holder, Duration::ZERO, 1_000)
                .await?;
            let n = claimed.len();
            self.stats.claimed += n as u64;
            incoming.extend(claimed);
            if n < 1_000 {
                break;
            }
        }
        let mut entries: Vec<StreamEntry> = incoming.into_iter().collect();
        entries.sort_by_key(|e| entry_order(&e.id));
        entries.dedup_by(|a, b| a.id == b.id);
        let leading = Leading {
            last_snapshot_batch: snapshot_batch,
            last_snapshot_at: now,
            router,
            incoming: entries.into(),
            held: BTreeMap::new(),
            queued,
            journal_ids,
            journal_tip,
            snapshot_not_before: Instant::now(),
            snapshot_in_flight: None,
            next_node_check: now,
            missing: MissingNodes::new(self.cfg.node_lost_after),
            next_claim: now + self.cfg.claim_every,
            kpis_dirty: true,
            kpis_published: None,
            renewed_at: Instant::now(),
        };
        Ok((leading, deliveries))
    }

    /// Appends confirmed batches' offers and replies to the nodes' out streams, in batch order, in one
    /// fenced commit (a leader that lost the lease delivers nothing; the new one delivers again from
    /// the journal).
    async fn deliver(&mut self, batches: Vec<BatchDelivery>) -> Result<(), LeaderError> {
        if batches.iter().all(BatchDelivery::is_empty) {
            return Ok(());
        }
        let lease = self.lease.clone().ok_or(LeaderError::NotLeading)?;
        let mut commit = StreamCommit::new(lease);
        for BatchDelivery {
            batch,
            to_nodes,
            events,
        } in batches
        {
            for (node, items) in to_nodes {
                let out = OutBatch { batch, items };
                commit.append(&out_stream(&node), encode(&out), Some(self.cfg.out_max_len));
            }
            if !events.is_empty() {
                let events = EventBatch { batch, events };
                commit.append(EVENTS_STREAM, encode(&events), Some(self.cfg.events_max_len));
            }
        }
        // Delivered or not, the batches are in the journal: a rebuild delivers them again.
        match self.store.stream_commit(&commit).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.write_failed(e, "delivery")),
        }
    }

    /// After a fenced write failed: step down if a newer leader holds the lease; otherwise the write
    /// may or may not have happened, so the state is thrown away and rebuilt from the store.
    fn write_failed(&mut self, error: StateError, write: &'static str) -> LeaderError {
        if let StateError::StaleFence { .. } = error {
            warn!(holder = %self.holder, "a newer leader holds the lease; this one steps down");
            self.stats.fenced += 1;
            self.step_down();
            return LeaderError::Fenced;
        }
        if let StateError::Diverged { .. } = error {
            self.stats.diverged += 1;
        }
        warn!(%error, write, "a write failed; the router state is rebuilt from the store");
        self.leading = None;
        error.into()
    }

    /// Extends the lease. False (and the state dropped) if it was lost.
    pub async fn renew(&mut self) -> Result<bool, LeaderError> {
        let Some(lease) = self.lease.clone() else {
            return Ok(false);
        };
        let now = self.clock.now();
        match self.store.renew_lease(&lease, self.cfg.lease_ttl, now).await {
            Ok(Some(renewed)) => {
                self.lease = Some(renewed);
                if let Some(l) = &mut self.leading {
                    l.renewed_at = Instant::now();
                }
                Ok(true)
            }
            Ok(None) => {
                warn!(holder = %self.holder, "the router lease was lost");
                self.step_down();
                Ok(false)
            }
            Err(e) => {
                if now >= lease.expires_at {
                    // Unconfirmed past its end: someone else may lead by now.
                    self.step_down();
                }
                Err(e.into())
            }
        }
    }

    fn renew_due(&self) -> bool {
        self.leading
            .as_ref()
            .is_some_and(|l| l.renewed_at.elapsed() >= self.cfg.renew_every)
    }

    /// Stops leading without giving the lease back (it lapses): what a crash looks like to others.
    pub fn step_down(&mut self) {
        if let Some(l) = self.leading.take()
            && let Some(task) = l.snapshot_in_flight
        {
            task.abort();
        }
        self.lease = None;
    }

    /// Hands leadership over: a last snapshot, then the lease is released so a standby takes over at
    /// its next try instead of waiting for the lease to lapse.
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        if self.leading.is_some()
            && let Err(error) = self.snapshot_now().await
        {
            warn!(%error, "no last snapshot before handing over");
        }
        if let Some(lease) = self.lease.clone() {
            self.store.release_lease(&lease).await?;
        }
        self.step_down();
        Ok(())
    }

    /// Reads what is there (waiting up to `block`, less if a timer is due sooner), orders it per
    /// node, and applies it to the router. None when there is nothing to do.
    pub async fn prepare(&mut self, block: Duration) -> Result<Option<Prepared>, LeaderError> {
        let clock_now = self.clock.now();
        let leading = self.leading.as_mut().ok_or(LeaderError::NotLeading)?;
        if leading.incoming.is_empty() {
            let wait = if !leading.queued.is_empty() || !leading.held.is_empty() {
                None
            } else {
                match leading.router.acd().next_deadline() {
                    Some(due) if due <= clock_now => None,
                    Some(due) => Some(block.min(due.since(clock_now))),
                    None => Some(block),
                }
            };
            let read = self
                .store
                .stream_read_group(
                    INPUT_STREAM,
                    ROUTER_GROUP,
                    &self.holder,
                    self.cfg.entries_per_batch,
                    wait.filter(|w| !w.is_zero()),
                )
                .await?;
            leading.incoming.extend(read);
        }
        let now = self.clock.now().max(leading.router.acd().now());
        let mut items = std::mem::take(&mut leading.queued);
        let mut acks = Vec::new();
        let mut expected: HashMap<NodeId, u64> = HashMap::new();
        let mut taken = 0usize;
        while taken < self.cfg.entries_per_batch
            && let Some(entry) = leading.incoming.pop_front()
        {
            taken += 1;
            match decode::<InBatch>(&entry.payload) {
                Ok(batch) => take_entry(
                    leading,
                    batch,
                    entry.id,
                    now,
                    &mut items,
                    &mut acks,
                    &mut expected,
                ),
                Err(error) => {
                    warn!(entry = %entry.id, %error, "an input entry does not decode; dropped");
                    self.stats.undecodable += 1;
                    acks.push(entry.id);
                }
            }
        }
        self.stats.gaps_skipped += release_held(
            leading,
            now,
            self.cfg.gap_timeout,
            &mut items,
            &mut acks,
            &mut expected,
        );
        // Timers due fire now even when the batch holds commands: not every command reaches the
        // core (flushes, KPI requests), and a steady flow of them must not hold a timer back.
        if leading.router.acd().next_deadline().is_some_and(|d| d <= now) {
            items.push(Applied::Router { input: Input::Tick });
        } else if items.is_empty() && acks.is_empty() {
            return Ok(None);
        }
        let journal = JournalBatch {
            batch: leading.router.batch() + 1,
            now,
            items,
        };
        let delivery = if journal.items.is_empty() {
            Delivery::default()
        } else {
            leading.router.apply(&journal)
        };
        Ok(Some(Prepared {
            journal,
            delivery,
            acks,
        }))
    }

    /// Journals and acknowledges a prepared batch in one fenced step, then delivers it.
    pub async fn commit(&mut self, prepared: Prepared) -> Result<StepOutcome, LeaderError> {
        let lease = self.lease.clone().ok_or(LeaderError::NotLeading)?;
        if self.leading.is_none() {
            return Err(LeaderError::NotLeading);
        }
        let Prepared {
            journal,
            delivery,
            acks,
        } = prepared;
        let mut commit = StreamCommit::new(lease);
        let tip = self.leading.as_ref().and_then(|l| l.journal_tip.clone());
        // A journal that ends elsewhere lost batches this leader built on: rebuild, never append.
        commit.expect_last(JOURNAL_STREAM, tip);
        let journaled = !journal.items.is_empty();
        if journaled {
            commit.append(JOURNAL_STREAM, encode(&journal), None);
        }
        commit.ack(INPUT_STREAM, ROUTER_GROUP, acks);
        for node in &delivery.lost_nodes {
            for stream in node_streams(node) {
                commit.delete_stream(&stream);
            }
        }
        match self.store.stream_commit(&commit).await {
            Ok(ids) => {
                let commands = journal
                    .items
                    .iter()
                    .filter(|i| matches!(i, Applied::Node { .. }))
                    .count();
                if let Some(l) = &mut self.leading
                    && journaled
                {
                    if let Some(id) = ids.first() {
                        l.journal_ids.insert(journal.batch, id.clone());
                        l.journal_tip = Some(id.clone());
                    }
                    l.kpis_dirty = true;
                }
                self.stats.batches += u64::from(journaled);
                self.stats.commands += commands as u64;
                self.stats.offers += delivery.offers;
                self.stats.duplicates += delivery.duplicates;
                self.stats.refused += delivery.refused;
                self.stats.nodes_lost += delivery.lost_nodes.len() as u64;
                self.deliver(vec![BatchDelivery {
                    batch: journal.batch,
                    to_nodes: delivery.to_nodes,
                    events: delivery.events,
                }])
                .await?;
                Ok(StepOutcome::Committed {
                    batch: journal.batch,
                    commands,
                    offers: delivery.offers,
                })
            }
            Err(e) => Err(self.write_failed(e, "commit")),
        }
    }

    /// One round: prepare, commit, then a snapshot if one is due.
    pub async fn step(&mut self, block: Duration) -> Result<StepOutcome, LeaderError> {
        self.reap_snapshot();
        let outcome = match self.prepare(block).await? {
            Some(prepared) => self.commit(prepared).await?,
            None => StepOutcome::Idle,
        };
        self.maybe_snapshot();
        Ok(outcome)
    }

    /// Looks at a finished snapshot write: one refused by the fence means the lease is gone.
    fn reap_snapshot(&mut self) {
        let Some(l) = &mut self.leading else { return };
        if !l.snapshot_in_flight.as_ref().is_some_and(|t| t.is_finished()) {
            return;
        }
        let Some(task) = l.snapshot_in_flight.take() else {
            return;
        };
        let Some(result) = futures_now(task) else { return };
        match result {
            Ok(()) => self.stats.snapshots += 1,
            Err(StateError::StaleFence { .. }) => {
                warn!("a snapshot was refused by the fence; stepping down");
                self.step_down();
            }
            Err(error) => warn!(%error, "a snapshot could not be written"),
        }
    }

    fn maybe_snapshot(&mut self) {
        let now = self.clock.now();
        let Some(lease) = self.lease.clone() else { return };
        let Some(l) = &mut self.leading else { return };
        if l.snapshot_in_flight.is_some() || l.router.batch() == l.last_snapshot_batch {
            return;
        }
        let due = l.router.batch() - l.last_snapshot_batch >= self.cfg.snapshot_every_batches
            || now.since(l.last_snapshot_at) >= self.cfg.snapshot_every;
        if !due || Instant::now() < l.snapshot_not_before {
            return;
        }
        let started = Instant::now();
        let snapshot = l.router.snapshot();
        // Copies are spaced so that they take at most 1/20 of the leader's time.
        l.snapshot_not_before = Instant::now() + started.elapsed() * 20;
        let trim = l.journal_ids.get(&snapshot.batch).cloned();
        l.journal_ids = l.journal_ids.split_off(&snapshot.batch);
        l.last_snapshot_batch = snapshot.batch;
        l.last_snapshot_at = now;
        let store = self.store.clone();
        l.snapshot_in_flight = Some(tokio::spawn(async move {
            let bytes = tokio::task::spawn_blocking(move || encode(&snapshot))
                .await
                .map_err(|e| StateError::Config(format!("snapshot encoder: {e}")))?;
            write_snapshot(&store, lease, bytes, trim).await
        }));
    }

    /// Writes a snapshot now and waits for it (tests, and before handing over).
    pub async fn snapshot_now(&mut self) -> Result<(), LeaderError> {
        let lease = self.lease.clone().ok_or(LeaderError::NotLeading)?;
        let l = self.leading.as_mut().ok_or(LeaderError::NotLeading)?;
        if let Some(task) = l.snapshot_in_flight.take() {
            let _ = task.await;
        }
        let snapshot = l.router.snapshot();
        let trim = l.journal_ids.get(&snapshot.batch).cloned();
        l.journal_ids = l.journal_ids.split_off(&snapshot.batch);
        l.last_snapshot_batch = snapshot.batch;
        l.last_snapshot_at = self.clock.now();
        match write_snapshot(&self.store, lease, encode(&snapshot), trim).await {
            Ok(()) => {
                self.stats.snapshots += 1;
                Ok(())
            }
            Err(StateError::StaleFence { .. }) => {
                self.step_down();
                Err(LeaderError::Fenced)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A store call failed: nobody could renew a liveness record meanwhile (see
    /// [`crate::liveness`]).
    fn store_failed(&mut self) {
        if let Some(l) = &mut self.leading {
            l.missing.store_failed();
        }
    }

    /// Checks, once per `node_check_every`, that every node holding calls still renews its liveness
    /// record; the calls of one that stopped are let go in the next batch.
    pub async fn check_nodes(&mut self) -> Result<(), LeaderError> {
        let now = self.clock.now();
        let Some(l) = &mut self.leading else {
            return Ok(());
        };
        if now < l.next_node_check {
            return Ok(());
        }
        l.next_node_check = now + self.cfg.node_check_every;
        let watched = l.router.nodes_to_watch();
        l.missing
            .begin_round(now, |node| watched.iter().any(|w| w.as_str() == node));
        for node in watched {
            let alive = match self.store.get_blob(NODES_NAMESPACE, node.as_str(), now).await {
                Ok(record) => record.is_some(),
                Err(error) => {
                    l.missing.store_failed();
                    return Err(error.into());
                }
            };
            let queued = l
                .queued
                .iter()
                .any(|a| matches!(a, Applied::NodeLost { node: n } if *n == node));
            if l.missing.check(node.as_str(), alive, now) && !queued {
                info!(%node, "a node stopped renewing its liveness; its calls are let go");
                l.queued.push(Applied::NodeLost { node });
            }
        }
        Ok(())
    }

    /// Claims inputs another consumer was given and sat on (an old leader that read them after it
    /// lost the lease), once per `claim_every`.
    pub async fn claim_stalled(&mut self) -> Result<(), LeaderError> {
        let now = self.clock.now();
        let Some(l) = &mut self.leading else {
            return Ok(());
        };
        if now < l.next_claim {
            return Ok(());
        }
        l.next_claim = now + self.cfg.claim_every;
        let claimed = self
            .store
            .stream_claim(
                INPUT_STREAM,
                ROUTER_GROUP,
                &self.holder,
                self.cfg.claim_every * 2,
                1_000,
            )
            .await?;
        if !claimed.is_empty() {
            debug!(n = claimed.len(), "claimed stalled inputs");
            self.stats.claimed += claimed.len() as u64;
            l.incoming.extend(claimed);
        }
        // Acknowledged input entries are dropped from the stream now and then.
        self.store.stream_trim_consumed(INPUT_STREAM).await?;
        Ok(())
    }

    /// Publishes the cluster-wide KPIs (fenced) when they changed and `kpi_refresh` has passed, and
    /// once a second regardless; nodes are nudged on [`KPI_TOPIC`].
    pub fn publish_kpis(&mut self) {
        let now = self.now();
        let Some(lease) = self.lease.clone() else { return };
        let Some(l) = &mut self.leading else { return };
        let since = l.kpis_published.map(|at| at.elapsed());
        let due = match since {
            None => true,
            Some(since) => (l.kpis_dirty && since >= self.cfg.kpi_refresh) || since >= Duration::from_secs(1),
        };
        if !due {
            return;
        }
        l.kpis_dirty = false;
        l.kpis_published = Some(Instant::now());
        let kpis = l.router.kpis(now);
        let store = self.store.clone();
        tokio::spawn(async move {
            let write = BlobWrite::new().fenced(lease.fence());
            match store
                .put_blob(ROUTER_NAMESPACE, KPIS_KEY, &encode(&kpis), &write, now)
                .await
            {
                Ok(_) => {
                    let _ = store.publish(KPI_TOPIC, b"kpis").await;
                }
                Err(error) => debug!(%error, "KPIs not published"),
            }
        });
    }
}

/// Polls a finished task's result without waiting.
fn futures_now<T>(task: tokio::task::JoinHandle<T>) -> Option<T> {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let mut task = std::pin::pin!(task);
    match task.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Ok(v)) => Some(v),
        _ => None,
    }
}

async fn write_snapshot(
    store: &StateStore,
    lease: Lease,
    bytes: Vec<u8>,
    trim: Option<StreamEntryId>,
) -> Result<(), StateError> {
    let mut commit = StreamCommit::new(lease);
    commit.put_blob(ROUTER_NAMESPACE, SNAPSHOT_KEY, bytes);
    if let Some(first_kept) = trim {
        commit.trim_before(JOURNAL_STREAM, first_kept);
    }
    store.stream_commit(&commit).await.map(|_| ())
}

/// Orders ids the way both backends hand them out (`<ms>-<seq>`).
fn entry_order(id: &StreamEntryId) -> (u64, u64) {
    id.0.split_once('-')
        .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
        .unwrap_or((u64::MAX, u64::MAX))
}

/// Takes one decoded entry: its new commands go into the batch if they follow what was applied,
/// the entry waits if an earlier one of its node is missing, and a repeat is acknowledged.
fn take_entry(
    l: &mut Leading,
    batch: InBatch,
    id: StreamEntryId,
    now: Timestamp,
    items: &mut Vec<Applied>,
    acks: &mut Vec<StreamEntryId>,
    expected: &mut HashMap<NodeId, u64>,
) {
    let last = *expected
        .entry(batch.node.clone())
        .or_insert_with(|| l.router.applied(&batch.node));
    let fresh: Vec<InItem> = batch.items.into_iter().filter(|i| i.seq > last).collect();
    let Some(first) = fresh.first().map(|i| i.seq) else {
        acks.push(id);
        return;
    };
    if first == last + 1 {
        apply_items(batch.node, fresh, items, expected);
        acks.push(id);
    } else {
        l.held.entry(batch.node).or_default().insert(
            first,
            Held {
                entry: id,
                items: fresh,
                since: now,
            },
        );
    }
}

fn apply_items(
    node: NodeId,
    fresh: Vec<InItem>,
    items: &mut Vec<Applied>,
    expected: &mut HashMap<NodeId, u64>,
) {
    let mut last = expected.get(&node).copied().unwrap_or(0);
    for item in fresh {
        last = last.max(item.seq);
        items.push(Applied::Node {
            node: node.clone(),
            seq: item.seq,
            command: item.command,
        });
    }
    expected.insert(node, last);
}

/// Releases held entries whose turn has come, and gives up on gaps older than `gap_timeout`.
/// Returns how many gaps were skipped.
fn release_held(
    l: &mut Leading,
    now: Timestamp,
    gap_timeout: Duration,
    items: &mut Vec<Applied>,
    acks: &mut Vec<StreamEntryId>,
    expected: &mut HashMap<NodeId, u64>,
) -> u64 {
    let mut skipped = 0;
    let nodes: Vec<NodeId> = l.held.keys().cloned().collect();
    for node in nodes {
        loop {
            let last = *expected
                .entry(node.clone())
                .or_insert_with(|| l.router.applied(&node));
            let Some(waiting) = l.held.get_mut(&node) else {
                break;
            };
            let Some((&first, held)) = waiting.first_key_value() else {
                l.held.remove(&node);
                break;
            };
            let stale = now.since(held.since) >= gap_timeout;
            if first > last + 1 && !stale {
                break;
            }
            let Some(held) = waiting.remove(&first) else { break };
            if first > last + 1 {
                warn!(%node, missing_from = last + 1, next = first, "gave up waiting for a node's missing input");
                skipped += 1;
            }
            let fresh: Vec<InItem> = held.items.into_iter().filter(|i| i.seq > last).collect();
            if !fresh.is_empty() {
                apply_items(node.clone(), fresh, items, expected);
            }
            acks.push(held.entry);
        }
    }
    skipped
}

/// Configuration inputs that bring a restored router to `config`: queues first (agents name them),
/// each only where it differs.
fn configuration_changes(router: &ClusterRouter, config: &AcdConfig) -> Vec<Applied> {
    let current = router.acd().config();
    let mut out = Vec::new();
    for queue in &config.queues {
        if !current.queues.contains(queue) {
            out.push(Applied::Router {
                input: Input::UpsertQueue(queue.clone()),
            });
        }
    }
    for agent in &config.agents {
        if !current.agents.contains(agent) {
            out.push(Applied::Router {
                input: Input::UpsertAgent(agent.clone()),
            });
        }
    }
    out
}

/// What a running candidate reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderStatus {
    pub leading: bool,
    pub token: Option<FencingToken>,
    pub batch: u64,
    pub stats: LeaderStats,
}

struct Control {
    stop: AtomicBool,
    wake: Notify,
}

/// A candidate running in real time ([`spawn_leader`]).
pub struct LeaderHandle {
    leader: Arc<Mutex<Leader>>,
    control: Arc<Control>,
    status: watch::Receiver<LeaderStatus>,
    task: tokio::task::JoinHandle<()>,
}

impl LeaderHandle {
    /// What the candidate last reported.
    pub fn status(&self) -> watch::Receiver<LeaderStatus> {
        self.status.clone()
    }

    /// Runs `f` on the candidate between two of its steps.
    pub async fn with_leader<R>(&self, f: impl FnOnce(&mut Leader) -> R) -> R {
        let mut leader = self.leader.lock().await;
        f(&mut leader)
    }

    /// Stops gracefully: a leader hands over (last snapshot, lease released).
    pub async fn stop(self) {
        self.control.stop.store(true, Ordering::SeqCst);
        self.control.wake.notify_one();
        let _ = self.task.await;
    }

    /// Stops at once, as a crash would: the lease is not released and lapses.
    pub fn kill(self) {
        self.task.abort();
    }
}

/// Runs a candidate: stand by until the lease is free, then lead until stopped or fenced, then
/// stand by again.
pub fn spawn_leader(store: StateStore, cfg: LeaderConfig, clock: Clock) -> LeaderHandle {
    LeaderHandle::spawn(Leader::new(store, cfg, clock))
}

impl LeaderHandle {
    /// Runs `leader` in real time from where it stands (leading or not), like [`spawn_leader`].
    pub fn spawn(leader: Leader) -> LeaderHandle {
        let idle_block = leader.cfg.idle_block;
        let standby_poll = leader.cfg.standby_poll;
        let leader = Arc::new(Mutex::new(leader));
        let control = Arc::new(Control {
            stop: AtomicBool::new(false),
            wake: Notify::new(),
        });
        let (status_tx, status) = watch::channel(LeaderStatus::default());
        let task = {
            let leader = leader.clone();
            let control = control.clone();
            tokio::spawn(async move {
                loop {
                    let mut l = leader.lock().await;
                    if control.stop.load(Ordering::SeqCst) {
                        if let Err(error) = l.release().await {
                            warn!(%error, "the router lease could not be released");
                        }
                        publish_status(&l, &status_tx);
                        break;
                    }
                    if !l.is_leading() {
                        let took = match l.try_take_over().await {
                            Ok(took) => took,
                            Err(error) => {
                                warn!(%error, "taking over the router failed");
                                false
                            }
                        };
                        publish_status(&l, &status_tx);
                        drop(l);
                        if !took {
                            tokio::select! {
                                _ = tokio::time::sleep(standby_poll) => {}
                                _ = control.wake.notified() => {}
                            }
                        }
                        continue;
                    }
                    if l.renew_due()
                        && let Err(error) = l.renew().await
                    {
                        warn!(%error, "renewing the router lease failed");
                    }
                    match l.step(idle_block).await {
                        Ok(_) | Err(LeaderError::NotLeading) => {}
                        Err(LeaderError::Fenced) => {}
                        Err(error) => {
                            warn!(%error, "a router step failed");
                            l.store_failed();
                            drop(l);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                    if let Err(error) = l.check_nodes().await {
                        debug!(%error, "checking the nodes failed");
                    }
                    if let Err(error) = l.claim_stalled().await {
                        debug!(%error, "claiming stalled inputs failed");
                    }
                    l.publish_kpis();
                    publish_status(&l, &status_tx);
                    drop(l);
                    tokio::task::yield_now().await;
                }
            })
        };
        LeaderHandle {
            leader,
            control,
            status,
            task,
        }
    }
}

fn publish_status(l: &Leader, tx: &watch::Sender<LeaderStatus>) {
    let status = LeaderStatus {
        leading: l.is_leading(),
        token: l.token(),
        batch: l.router().map_or(0, ClusterRouter::batch),
        stats: l.stats().clone(),
    };
    tx.send_if_modified(|old| {
        if *old == status {
            false
        } else {
            *old = status;
            true
        }
    });
}
