//! The durable interaction writer. Call control hands each [`InteractionEvent`] to
//! [`EventWriter::append`], which resolves once the event is fsynced in the local journal (group
//! commit: one fsync for every event that arrived meanwhile). A flusher task writes durable events to
//! SQL in batches at most `max_batch_delay` apart, idempotently, and deletes journal segments once SQL
//! has everything in them. At start the journal left by a crash is replayed; replays insert nothing twice.
//!
//! ```text
//! append() --cmd--> journal thread (write + fsync, ack) --durable events--> flusher task --batch--> SQL
//!                                                       --segment closed--> (deleted after its events commit)
//! ```

use crate::error::{Result, StoreError};
use crate::journal::{self, SegmentWriter};
use crate::store::CrmStore;
use domain::InteractionEvent;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};

/// File in the journal folder where events refused by the database are kept, one JSON per line.
pub const DEAD_LETTER_FILE: &str = "dead-letter.jsonl";

/// Settings of the writer.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Folder of the journal segments (created if missing). One writer per folder.
    pub journal_dir: PathBuf,
    /// Longest time a durable event waits before its batch goes to SQL.
    pub max_batch_delay: Duration,
    /// A batch is written as soon as it has this many events.
    pub max_batch_events: usize,
    /// Most events written and fsynced together in the journal.
    pub max_group_commit: usize,
    /// A segment is closed (and later deleted) once it has this many bytes.
    pub segment_bytes: u64,
    /// Appends waiting for the journal thread before `append` waits for room.
    pub queue_capacity: usize,
    /// Concurrent SQL transactions a large batch is split over on PostgreSQL (SQLite always uses
    /// one: it has a single writer lock). Default 2: on a 2-core machine that also runs the database
    /// it takes the ceiling from about 185,000 to 205,000 events/s (`bench crm`); raise it when the
    /// database server has cores to spare. Batches under 2,000 events per transaction are not split.
    pub postgres_writers: usize,
    /// Fewest events worth a transaction of their own when a batch is split: small batches gain
    /// nothing from more transactions (each costs a commit) but latency.
    pub min_events_per_partition: usize,
}

impl WriterConfig {
    /// Defaults for a journal in `journal_dir`: batches of up to 20,000 events, none waiting more
    /// than 5 ms (under load a batch gathers what arrives while the previous one is written, so the
    /// delay costs latency at low load only), 8 MiB segments.
    pub fn new(journal_dir: impl Into<PathBuf>) -> Self {
        Self {
            journal_dir: journal_dir.into(),
            max_batch_delay: Duration::from_millis(5),
            max_batch_events: 20_000,
            max_group_commit: 4096,
            segment_bytes: 8 << 20,
            queue_capacity: 65_536,
            postgres_writers: 2,
            min_events_per_partition: 2_000,
        }
    }
}

/// Counters of a writer since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Events found in the journal at start and written to SQL (some may have been there already).
    pub replayed: u64,
    /// Of the replayed events, those SQL did not have yet (the rest were already committed).
    pub replay_inserted: u64,
    /// Events acknowledged as durable in the journal.
    pub durable: u64,
    /// Durable events done with: committed to SQL, or dead-lettered (replays not counted).
    pub committed: u64,
    /// Journal fsyncs (group commits).
    pub journal_syncs: u64,
    /// SQL batches committed.
    pub batches: u64,
    /// Time spent writing batches to SQL (retries included), in microseconds.
    pub batch_write_micros: u64,
    /// SQL batch attempts that failed and were retried.
    pub batch_retries: u64,
    /// Events the database refused as data, kept in the dead-letter file instead.
    pub dead_lettered: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) replayed: AtomicU64,
    pub(crate) replay_inserted: AtomicU64,
    pub(crate) durable: AtomicU64,
    pub(crate) committed: AtomicU64,
    pub(crate) journal_syncs: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) batch_write_micros: AtomicU64,
    pub(crate) batch_retries: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> WriterStats {
        WriterStats {
            replayed: self.replayed.load(Ordering::Relaxed),
            replay_inserted: self.replay_inserted.load(Ordering::Relaxed),
            durable: self.durable.load(Ordering::Relaxed),
            committed: self.committed.load(Ordering::Relaxed),
            journal_syncs: self.journal_syncs.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            batch_write_micros: self.batch_write_micros.load(Ordering::Relaxed),
            batch_retries: self.batch_retries.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
        }
    }
}

pub(crate) enum JournalCmd {
    Append(InteractionEvent, oneshot::Sender<Result<()>>),
    Shutdown,
}

enum FlushMsg {
    /// Events now durable in the journal, and when they became so.
    Durable(Vec<InteractionEvent>, std::time::Instant),
    SegmentClosed(u64),
    Shutdown {
        current_segment: u64,
    },
}

/// Handle to append events; cheap to clone, one per task that emits events.
#[derive(Clone)]
pub struct EventWriter {
    pub(crate) commands: mpsc::Sender<JournalCmd>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) committed: watch::Receiver<u64>,
}

/// The writer's background work: the journal thread and the SQL flusher, or the outbox appender and
/// consumer. Keep it to shut down cleanly.
pub struct WriterTask {
    pub(crate) commands: mpsc::Sender<JournalCmd>,
    pub(crate) background: Background,
    pub(crate) counters: Arc<Counters>,
}

/// What runs behind an [`EventWriter`].
pub(crate) enum Background {
    /// The local journal: its thread, and the flusher that writes its events to SQL.
    Journal {
        thread: std::thread::JoinHandle<()>,
        flusher: tokio::task::JoinHandle<Result<()>>,
    },
    /// A shared outbox ([`crate::outbox`]): the task appending to it and the task consuming it.
    Outbox {
        appender: tokio::task::JoinHandle<()>,
        consumer: tokio::task::JoinHandle<Result<()>>,
    },
}

impl EventWriter {
    /// Replays what a previous run left in the journal into SQL, then starts the journal thread and the
    /// flusher task. Must be called inside a tokio runtime.
    pub async fn start(store: CrmStore, config: WriterConfig) -> Result<(EventWriter, WriterTask)> {
        let counters = Arc::new(Counters::default());
        crate::files::create_private_dir(&config.journal_dir)?;
        // One writer per journal: a second one would interleave frames. The OS drops the lock when the
        // holder dies, even by kill -9.
        let lock = crate::files::private_options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(config.journal_dir.join("writer.lock"))?;
        lock.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => StoreError::Invalid(format!(
                "another writer holds the journal in {}",
                config.journal_dir.display()
            )),
            std::fs::TryLockError::Error(e) => StoreError::Io(e),
        })?;
        let next_segment = replay(&store, &config.journal_dir, &counters).await?;
        let segment = SegmentWriter::create(&config.journal_dir, next_segment)?;

        let (commands, command_rx) = mpsc::channel(config.queue_capacity.max(1));
        // Bounded: when SQL falls behind, the journal thread waits, and so do appenders.
        let (flush_tx, flush_rx) = mpsc::channel(1024);
        let (committed_tx, committed) = watch::channel(0u64);

        let journal_thread = {
            let counters = counters.clone();
            let config = config.clone();
            std::thread::Builder::new()
                .name("crm-journal".into())
                .spawn(move || {
                    run_journal(segment, command_rx, flush_tx, &config, &counters);
                    drop(lock); // held for as long as the journal is written
                })?
        };
        let flusher = tokio::spawn(run_flusher(
            store,
            config,
            flush_rx,
            committed_tx,
            counters.clone(),
        ));
        Ok((
            EventWriter {
                commands: commands.clone(),
                counters: counters.clone(),
                committed,
            },
            WriterTask {
                commands,
                background: Background::Journal {
                    thread: journal_thread,
                    flusher,
                },
                counters,
            },
        ))
    }

    /// Appends an event; resolves once it is durable in the journal (it reaches SQL shortly after).
    /// Sensitive collected digits are masked before anything is written.
    pub async fn append(&self, event: InteractionEvent) -> Result<()> {
        self.submit(event).await?.wait().await
    }

    /// Hands an event to the journal (or outbox) in the order of calls, waiting only for room in
    /// its queue; the returned [`Durable`] resolves once the event is durable. Two events submitted
    /// one after the other by one task reach the journal in that order.
    pub async fn submit(&self, event: InteractionEvent) -> Result<Durable> {
        let event = crate::fold::masked_for_storage(event);
        let (ack, acked) = oneshot::channel();
        self.commands
            .send(JournalCmd::Append(event, ack))
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        Ok(Durable(acked))
    }

    /// Counters so far.
    pub fn stats(&self) -> WriterStats {
        self.counters.snapshot()
    }

    /// Number of appended events done with so far (committed to SQL, or dead-lettered); changes after
    /// every batch. Events commit in append order, so the first N appended are the ones done.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }
}

/// Resolves once a [`EventWriter::submit`]ted event is durable.
#[derive(Debug)]
pub struct Durable(oneshot::Receiver<Result<()>>);

impl Durable {
    /// Waits for the journal's (or outbox's) acknowledgement.
    pub async fn wait(self) -> Result<()> {
        self.0.await.map_err(|_| StoreError::WriterClosed)?
    }
}

/// Appends events without making the caller wait, in the order they are handed over: one queue and
/// one task per appender, so two events of one interaction never overtake each other on their way to
/// the journal (a task spawned per event could). The journal still groups whatever is waiting into
/// one fsync, so ordering costs no throughput. Cheap to clone; clones share the queue.
#[derive(Clone)]
pub struct OrderedAppender {
    queue: mpsc::UnboundedSender<InteractionEvent>,
}

impl std::fmt::Debug for OrderedAppender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderedAppender")
    }
}

impl OrderedAppender {
    /// Starts the appending task over `writer`. Must be called inside a tokio runtime.
    pub fn start(writer: EventWriter) -> Self {
        let (queue, mut events) = mpsc::unbounded_channel::<InteractionEvent>();
        // Acknowledgements come back in append order: a second task waits for them one by one, so
        // the first one never holds the queue up while the journal syncs.
        let (acks_tx, mut acks) = mpsc::unbounded_channel::<Durable>();
        tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                match writer.submit(event).await {
                    Ok(durable) => {
                        let _ = acks_tx.send(durable);
                    }
                    Err(e) => tracing::warn!(error = %e, "interaction event not journaled"),
                }
            }
        });
        tokio::spawn(async move {
            while let Some(durable) = acks.recv().await {
                if let Err(e) = durable.wait().await {
                    tracing::warn!(error = %e, "interaction event not journaled");
                }
            }
        });
        Self { queue }
    }

    /// Queues one event behind every event queued before it; never blocks.
    pub fn append(&self, event: InteractionEvent) {
        if self.queue.send(event).is_err() {
            tracing::warn!("interaction event dropped: the appender has stopped");
        }
    }
}

impl WriterTask {
    /// Stops accepting events, writes everything durable to SQL, removes the journal, and returns the
    /// final counters. While the database is unreachable this waits (the flusher keeps retrying); a
    /// caller that must stop anyway can drop the task: the journal keeps the events for the next start.
    pub async fn shutdown(self) -> Result<WriterStats> {
        // If the journal thread (or appender) is already gone the flusher ends on its own.
        let _ = self.commands.send(JournalCmd::Shutdown).await;
        drop(self.commands);
        match self.background {
            Background::Journal { thread, flusher } => {
                let flushed = flusher
                    .await
                    .map_err(|e| StoreError::Corrupt(format!("flusher task failed: {e}")))?;
                // The journal thread has ended: it sends the flusher's shutdown message last.
                let _ = tokio::task::spawn_blocking(move || thread.join()).await;
                flushed?;
            }
            Background::Outbox { appender, consumer } => {
                let _ = appender.await;
                consumer
                    .await
                    .map_err(|e| StoreError::Corrupt(format!("outbox consumer failed: {e}")))??;
            }
        }
        Ok(self.counters.snapshot())
    }
}

/// Writes every segment's events to SQL, deletes the segments, and returns the next segment number.
/// A transient database error fails the start; the journal is untouched and the next start retries.
async fn replay(store: &CrmStore, dir: &Path, counters: &Counters) -> Result<u64> {
    let segments = journal::list_segments(dir)?;
    let next = segments.last().map_or(1, |(id, _)| id + 1);
    for (_, path) in &segments {
        let bytes = std::fs::read(path)?;
        let events = decode_events(&bytes);
        for chunk in events.chunks(10_000) {
            match store.insert_events_batch(chunk).await {
                Ok(outcome) => {
                    counters
                        .replay_inserted
                        .fetch_add(outcome.inserted as u64, Ordering::Relaxed);
                }
                // A refused event must not keep the writer from ever starting: set it aside.
                Err(e) if is_poison(&e) => {
                    let mut dead = Vec::new();
                    write_isolating(store, chunk, &mut dead).await?;
                    write_dead_letters(dir, &dead)?;
                    counters
                        .dead_lettered
                        .fetch_add(dead.len() as u64, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        counters
            .replayed
            .fetch_add(events.len() as u64, Ordering::Relaxed);
    }
    for (_, path) in &segments {
        std::fs::remove_file(path)?;
    }
    if !segments.is_empty() {
        journal::sync_dir(dir)?;
        tracing::info!(segments = segments.len(), "journal replayed into SQL");
    }
    Ok(next)
}

/// The events of framed journal records (a segment, or one outbox entry). A torn tail is ignored
/// (it was never acknowledged); a record whose CRC holds but which does not decode is logged and
/// skipped.
pub(crate) fn decode_events(bytes: &[u8]) -> Vec<InteractionEvent> {
    let decoded = journal::decode_records(bytes);
    if decoded.ignored_bytes > 0 {
        tracing::warn!(
            bytes = decoded.ignored_bytes,
            "journal records with a torn tail; the tail is ignored"
        );
    }
    let mut events = Vec::with_capacity(decoded.records.len());
    for record in decoded.records {
        match serde_json::from_slice::<InteractionEvent>(record) {
            Ok(event) => events.push(event),
            Err(e) => {
                tracing::error!(error = %e, "journal record with a valid CRC does not decode; skipped")
            }
        }
    }
    events
}

/// Serialises an event for the journal, first removing NUL characters if it has any (the JSON
/// escape shows them), so the journal and SQL hold the same, storable event.
pub(crate) fn journal_bytes(event: InteractionEvent) -> std::io::Result<(InteractionEvent, Vec<u8>)> {
    let bytes = serde_json::to_vec(&event).map_err(std::io::Error::other)?;
    if !bytes.windows(6).any(|w| w == b"\\u0000") {
        return Ok((event, bytes));
    }
    let event = crate::fold::without_nul_chars(event);
    let bytes = serde_json::to_vec(&event).map_err(std::io::Error::other)?;
    Ok((event, bytes))
}

/// An append waiting to be made durable, with its acknowledgement.
pub(crate) type PendingAppend = (InteractionEvent, oneshot::Sender<Result<()>>);

/// Takes `first` and every command already waiting, up to `max` appends: one group commit. The flag
/// says a shutdown came (appends after it are not taken).
pub(crate) fn take_group(
    first: JournalCmd,
    commands: &mut mpsc::Receiver<JournalCmd>,
    max: usize,
) -> (Vec<PendingAppend>, bool) {
    let mut group = Vec::new();
    let mut next = Some(first);
    while let Some(cmd) = next.take() {
        match cmd {
            JournalCmd::Append(event, ack) => group.push((event, ack)),
            JournalCmd::Shutdown => return (group, true),
        }
        if group.len() < max.max(1) {
            next = commands.try_recv().ok();
        }
    }
    (group, false)
}

/// Frames a group's events as journal records into `framed`; an event that cannot be framed is
/// refused to its appender. Returns the framed ones, in order.
pub(crate) fn frame_group(group: Vec<PendingAppend>, framed: &mut Vec<u8>) -> Vec<PendingAppend> {
    let mut accepted = Vec::with_capacity(group.len());
    for (event, ack) in group {
        match journal_bytes(event)
            .and_then(|(event, bytes)| journal::encode_record(&bytes, framed).map(|()| event))
        {
            Ok(event) => accepted.push((event, ack)),
            Err(e) => {
                let _ = ack.send(Err(StoreError::Io(e)));
            }
        }
    }
    accepted
}

/// The journal thread: group commit. Takes every append waiting, writes them, one fsync, then acks.
fn run_journal(
    mut segment: SegmentWriter,
    mut commands: mpsc::Receiver<JournalCmd>,
    flush: mpsc::Sender<FlushMsg>,
    config: &WriterConfig,
    counters: &Counters,
) {
    let mut broken = false;
    let mut framed = Vec::with_capacity(1 << 20);
    while let Some(first) = commands.blocking_recv() {
        let (group, shutdown) = take_group(first, &mut commands, config.max_group_commit);

        if broken {
            for (_, ack) in group {
                let _ = ack.send(Err(StoreError::Io(std::io::Error::other(
                    "journal failed earlier",
                ))));
            }
        } else if !group.is_empty() {
            framed.clear();
            let accepted = frame_group(group, &mut framed);
            match segment.append_durable(&framed) {
                Ok(()) => {
                    counters.journal_syncs.fetch_add(1, Ordering::Relaxed);
                    counters
                        .durable
                        .fetch_add(accepted.len() as u64, Ordering::Relaxed);
                    let (events, acks): (Vec<_>, Vec<_>) = accepted.into_iter().unzip();
                    if flush
                        .blocking_send(FlushMsg::Durable(events, std::time::Instant::now()))
                        .is_err()
                    {
                        tracing::error!("SQL flusher is gone; events stay in the journal for the next start");
                    }
                    for ack in acks {
                        let _ = ack.send(Ok(()));
                    }
                }
                Err(e) => {
                    // Part of the group may be on disk; nothing after it would be readable. Refuse
                    // everything from now on so no acknowledged event sits behind a bad frame.
                    tracing::error!(error = %e, "journal write failed; the writer refuses further events");
                    broken = true;
                    for (_, ack) in accepted {
                        let _ = ack.send(Err(StoreError::Io(std::io::Error::new(e.kind(), e.to_string()))));
                    }
                }
            }
            if !broken && segment.len() >= config.segment_bytes {
                match segment.rotate() {
                    Ok(closed) => {
                        let _ = flush.blocking_send(FlushMsg::SegmentClosed(closed));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "journal rotation failed; the writer refuses further events");
                        broken = true;
                    }
                }
            }
        }

        if shutdown {
            break;
        }
    }
    commands.close();
    let _ = flush.blocking_send(FlushMsg::Shutdown {
        current_segment: segment.id(),
    });
}

/// How many concurrent transactions write a batch of `events`: one on SQLite (it has a single
/// writer lock), and on PostgreSQL no more than `postgres_writers` nor than parts of
/// `min_events_per_partition`.
pub(crate) fn sql_writers_for(store: &CrmStore, config: &WriterConfig, events: usize) -> usize {
    match store.backend_kind() {
        crate::BackendKind::Postgres => config
            .postgres_writers
            .min(events / config.min_events_per_partition.max(1))
            .max(1),
        crate::BackendKind::Sqlite => 1,
    }
}

/// The SQL side: batches durable events, at most `max_batch_delay` after the first one came in.
async fn run_flusher(
    store: CrmStore,
    config: WriterConfig,
    mut incoming: mpsc::Receiver<FlushMsg>,
    committed_tx: watch::Sender<u64>,
    counters: Arc<Counters>,
) -> Result<()> {
    let max_events = config.max_batch_events.max(1);
    let mut pending = Pending {
        batch: Vec::new(),
        deadline: tokio::time::Instant::now(),
        closed_segments: Vec::new(),
        shutdown: None,
        closed: false,
    };
    loop {
        let due = !pending.batch.is_empty()
            && (pending.batch.len() >= max_events || tokio::time::Instant::now() >= pending.deadline);
        if due || pending.shutdown.is_some() || pending.closed {
            // Everything already waiting is at least as old as what is buffered: take it too.
            while pending.batch.len() < max_events && pending.shutdown.is_none() {
                match incoming.try_recv() {
                    Ok(msg) => pending.take(msg, &config),
                    Err(_) => break,
                }
            }
            flush_batch(
                &store,
                &config.journal_dir,
                sql_writers_for(&store, &config, pending.batch.len()),
                &mut pending.batch,
                &committed_tx,
                &counters,
            )
            .await;
            delete_segments(&config.journal_dir, &mut pending.closed_segments);
            if let Some(current_segment) = pending.shutdown {
                pending.closed_segments.push(current_segment);
                delete_segments(&config.journal_dir, &mut pending.closed_segments);
                return Ok(());
            }
            if pending.closed {
                // The journal thread died without a shutdown: SQL has what was durable; the journal stays.
                return Err(StoreError::WriterClosed);
            }
            continue;
        }
        let msg = if pending.batch.is_empty() {
            incoming.recv().await
        } else {
            tokio::select! {
                msg = incoming.recv() => msg,
                _ = tokio::time::sleep_until(pending.deadline) => continue,
            }
        };
        match msg {
            Some(msg) => {
                pending.take(msg, &config);
                if pending.batch.is_empty() {
                    delete_segments(&config.journal_dir, &mut pending.closed_segments);
                }
            }
            None => pending.closed = true,
        }
    }
}

/// What the flusher holds between two SQL batches.
struct Pending {
    batch: Vec<InteractionEvent>,
    /// When the oldest buffered event must be on its way to SQL.
    deadline: tokio::time::Instant,
    /// Segments whose events are all received; deleted once those commit.
    closed_segments: Vec<u64>,
    /// The journal thread stopped; this was its open segment.
    shutdown: Option<u64>,
    /// The journal thread is gone without a shutdown message.
    closed: bool,
}

impl Pending {
    fn take(&mut self, msg: FlushMsg, config: &WriterConfig) {
        match msg {
            FlushMsg::Durable(events, durable_at) => {
                if self.batch.is_empty() {
                    // From when the events became durable, not from when they were read: events that
                    // queued up during the previous batch are already late.
                    self.deadline = tokio::time::Instant::from_std(durable_at) + config.max_batch_delay;
                }
                self.batch.extend(events);
            }
            FlushMsg::SegmentClosed(id) => self.closed_segments.push(id),
            FlushMsg::Shutdown { current_segment } => self.shutdown = Some(current_segment),
        }
    }
}

/// Why a batch was not written.
#[derive(Debug)]
enum WriteFailure {
    /// The data itself is refused (a data exception or constraint): retrying the same events fails again.
    Poison(StoreError),
    /// Anything else (connection lost, lock timeout, disk full...): retry the same batch later.
    Transient(StoreError),
}

/// Where batches go; the store in production, a fake in tests.
trait BatchSink {
    async fn write(&self, events: &[InteractionEvent]) -> Result<(), WriteFailure>;
}

impl BatchSink for CrmStore {
    async fn write(&self, events: &[InteractionEvent]) -> Result<(), WriteFailure> {
        match self.insert_events_batch(events).await {
            Ok(_) => Ok(()),
            Err(e) if is_poison(&e) => Err(WriteFailure::Poison(e)),
            Err(e) => Err(WriteFailure::Transient(e)),
        }
    }
}

/// Errors caused by the data of the batch rather than by the database's state: PostgreSQL classes 22
/// (data exception) and 23 (integrity), SQLite's CONSTRAINT, MISMATCH, TOOBIG and RANGE. Everything
/// else, including a missing table, is retried rather than blamed on the events.
fn is_poison(e: &StoreError) -> bool {
    let StoreError::Sql(sqlx::Error::Database(db)) = e else {
        return false;
    };
    let Some(code) = db.code() else { return false };
    if code.len() == 5 {
        code.starts_with("22") || code.starts_with("23")
    } else {
        code.parse::<u32>()
            .is_ok_and(|c| matches!(c & 0xff, 18 | 19 | 20 | 25))
    }
}

/// Writes `events`; when the database refuses the data, splits the batch until the refused events
/// are alone, sets them aside in `dead`, and writes the rest in their original order.
async fn write_isolating<S: BatchSink>(
    sink: &S,
    events: &[InteractionEvent],
    dead: &mut Vec<InteractionEvent>,
) -> Result<(), StoreError> {
    match sink.write(events).await {
        Ok(()) => Ok(()),
        Err(WriteFailure::Transient(e)) => Err(e),
        Err(WriteFailure::Poison(e)) => {
            if events.len() <= 1 {
                tracing::error!(error = %e, "event refused by the database; set aside in the dead-letter file");
                dead.extend_from_slice(events);
                return Ok(());
            }
            let (left, right) = events.split_at(events.len() / 2);
            Box::pin(write_isolating(sink, left, dead)).await?;
            Box::pin(write_isolating(sink, right, dead)).await
        }
    }
}

/// Writes a batch as `writers` concurrent transactions, each holding whole interactions (split by a
/// hash of the id), so every interaction's events still commit in order and no two transactions touch
/// the same rows. Returns once all have committed; a failed part makes the whole call fail, and the
/// retry rewrites the parts already committed as no-ops.
async fn write_partitioned(
    store: &CrmStore,
    batch: &[InteractionEvent],
    writers: usize,
    dead: &mut Vec<InteractionEvent>,
) -> Result<(), StoreError> {
    if writers <= 1 {
        return write_isolating(store, batch, dead).await;
    }
    let mut parts: Vec<Vec<InteractionEvent>> = vec![Vec::with_capacity(batch.len() / writers + 1); writers];
    for event in batch {
        let part = partition_of(event.interaction.as_str(), writers);
        if let Some(p) = parts.get_mut(part) {
            p.push(event.clone());
        }
    }
    let mut running = tokio::task::JoinSet::new();
    for part in parts {
        let store = store.clone();
        running.spawn(async move {
            let mut dead = Vec::new();
            write_isolating(&store, &part, &mut dead).await.map(|()| dead)
        });
    }
    let mut first_error = None;
    while let Some(done) = running.join_next().await {
        match done {
            Ok(Ok(part_dead)) => dead.extend(part_dead),
            Ok(Err(e)) => first_error = first_error.or(Some(e)),
            Err(e) => {
                first_error = first_error.or(Some(StoreError::Corrupt(format!("writer task failed: {e}"))))
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// The partition of an interaction: FNV-1a of its id, so the same id always lands in the same one.
fn partition_of(id: &str, partitions: usize) -> usize {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % partitions.max(1) as u64) as usize
}

/// Appends refused events to `dead-letter.jsonl` in the journal folder, durably, for an operator.
fn write_dead_letters(dir: &Path, events: &[InteractionEvent]) -> std::io::Result<()> {
    use std::io::Write;
    if events.is_empty() {
        return Ok(());
    }
    let mut file = crate::files::private_options()
        .create(true)
        .append(true)
        .open(dir.join(DEAD_LETTER_FILE))?;
    for event in events {
        let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
        line.push(b'\n');
        file.write_all(&line)?;
    }
    file.sync_data()
}

/// Writes the batch, retrying with backoff until it commits (the events are safe in the journal
/// meanwhile, and the bounded channel holds appenders back). Events the database refuses as data
/// go to the dead-letter file so one bad event never stalls the writer.
pub(crate) async fn flush_batch(
    store: &CrmStore,
    journal_dir: &Path,
    sql_writers: usize,
    batch: &mut Vec<InteractionEvent>,
    committed_tx: &watch::Sender<u64>,
    counters: &Counters,
) {
    if batch.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let mut backoff = Duration::from_millis(20);
    let mut dead = Vec::new();
    loop {
        dead.clear();
        match write_partitioned(store, batch, sql_writers, &mut dead).await {
            Ok(()) => match write_dead_letters(journal_dir, &dead) {
                Ok(()) => break,
                Err(e) => tracing::error!(error = %e, "dead-letter file not written; retrying the batch"),
            },
            Err(e) => tracing::warn!(error = %e, events = batch.len(), "event batch not written; retrying"),
        }
        counters.batch_retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
    counters.batches.fetch_add(1, Ordering::Relaxed);
    counters.batch_write_micros.fetch_add(
        u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    counters
        .dead_lettered
        .fetch_add(dead.len() as u64, Ordering::Relaxed);
    let total = counters
        .committed
        .fetch_add(batch.len() as u64, Ordering::Relaxed)
        + batch.len() as u64;
    committed_tx.send_replace(total);
    batch.clear();
}

fn delete_segments(dir: &Path, closed: &mut Vec<u64>) {
    if closed.is_empty() {
        return;
    }
    for id in closed.drain(..) {
        if let Err(e) = std::fs::remove_file(journal::segment_path(dir, id)) {
            tracing::warn!(error = %e, segment = id, "could not delete an applied journal segment");
        }
    }
    if let Err(e) = journal::sync_dir(dir) {
        tracing::warn!(error = %e, "could not sync the journal folder");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{InteractionEventKind, InteractionId, Timestamp};
    use std::cell::RefCell;

    fn event(seq: u32) -> InteractionEvent {
        InteractionEvent {
            interaction: InteractionId::new("w").unwrap(),
            seq,
            at: Timestamp::from_millis(i64::from(seq)),
            kind: InteractionEventKind::Held,
        }
    }

    /// Refuses any batch holding a poisoned seq; records what it accepted, in order.
    struct FakeSink {
        poisoned: Vec<u32>,
        transient_failures: RefCell<u32>,
        accepted: RefCell<Vec<u32>>,
    }

    impl BatchSink for FakeSink {
        async fn write(&self, events: &[InteractionEvent]) -> Result<(), WriteFailure> {
            if *self.transient_failures.borrow() > 0 {
                *self.transient_failures.borrow_mut() -= 1;
                return Err(WriteFailure::Transient(StoreError::WriterClosed));
            }
            if events.iter().any(|e| self.poisoned.contains(&e.seq)) {
                return Err(WriteFailure::Poison(StoreError::Invalid("bad data".into())));
            }
            self.accepted.borrow_mut().extend(events.iter().map(|e| e.seq));
            Ok(())
        }
    }

    #[tokio::test]
    async fn poisoned_events_are_isolated_and_the_rest_written_in_order() {
        let sink = FakeSink {
            poisoned: vec![3, 11],
            transient_failures: RefCell::new(0),
            accepted: RefCell::default(),
        };
        let events: Vec<InteractionEvent> = (0..16).map(event).collect();
        let mut dead = Vec::new();
        write_isolating(&sink, &events, &mut dead).await.unwrap();
        let dead_seqs: Vec<u32> = dead.iter().map(|e| e.seq).collect();
        assert_eq!(dead_seqs, [3, 11]);
        let expected: Vec<u32> = (0..16).filter(|s| *s != 3 && *s != 11).collect();
        assert_eq!(*sink.accepted.borrow(), expected);
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        let mut counts = [0usize; 4];
        for n in 0..4000 {
            let id = format!("call-{n}");
            let p = partition_of(&id, 4);
            assert_eq!(p, partition_of(&id, 4));
            counts[p] += 1;
        }
        assert!(counts.iter().all(|c| *c > 800), "{counts:?}");
        assert_eq!(partition_of("x", 1), 0);
        assert_eq!(partition_of("x", 0), 0);
    }

    #[tokio::test]
    async fn transient_failures_are_returned_not_dead_lettered() {
        let sink = FakeSink {
            poisoned: vec![],
            transient_failures: RefCell::new(1),
            accepted: RefCell::default(),
        };
        let events: Vec<InteractionEvent> = (0..4).map(event).collect();
        let mut dead = Vec::new();
        assert!(write_isolating(&sink, &events, &mut dead).await.is_err());
        assert!(dead.is_empty());
        write_isolating(&sink, &events, &mut dead).await.unwrap();
        assert_eq!(sink.accepted.borrow().len(), 4);
    }

    #[tokio::test]
    async fn postgres_refusal_of_nul_characters_counts_as_poison() {
        let Ok(url) = std::env::var("DATABASE_URL") else {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "postgres_refusal_of_nul_characters: PostgreSQL SKIPPED (DATABASE_URL is not set)"
            );
            return;
        };
        let schema = format!("crm_poison_{}", std::process::id());
        let store = CrmStore::connect_in_schema(&url, &schema).await.unwrap();
        store.migrate().await.unwrap();
        let bad = InteractionEvent {
            kind: InteractionEventKind::Ended {
                by: domain::EndedBy::Error,
                reason: "nul\0here".into(),
                quality: None,
            },
            ..event(0)
        };
        let err = store
            .insert_events_batch(std::slice::from_ref(&bad))
            .await
            .unwrap_err();
        assert!(is_poison(&err), "{err}");
        let clean = crate::fold::without_nul_chars(bad);
        store.insert_events_batch(&[clean]).await.unwrap();
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&pool)
            .await
            .unwrap();
    }
}
