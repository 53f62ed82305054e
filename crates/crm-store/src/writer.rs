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
}

impl WriterConfig {
    /// Defaults for a journal in `journal_dir`: 50 ms batches of up to 10,000 events, 8 MiB segments.
    pub fn new(journal_dir: impl Into<PathBuf>) -> Self {
        Self {
            journal_dir: journal_dir.into(),
            max_batch_delay: Duration::from_millis(50),
            max_batch_events: 10_000,
            max_group_commit: 4096,
            segment_bytes: 8 << 20,
            queue_capacity: 65_536,
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
    /// Durable events committed to SQL (replays not counted).
    pub committed: u64,
    /// Journal fsyncs (group commits).
    pub journal_syncs: u64,
    /// SQL batches committed.
    pub batches: u64,
    /// SQL batch attempts that failed and were retried.
    pub batch_retries: u64,
}

#[derive(Debug, Default)]
struct Counters {
    replayed: AtomicU64,
    replay_inserted: AtomicU64,
    durable: AtomicU64,
    committed: AtomicU64,
    journal_syncs: AtomicU64,
    batches: AtomicU64,
    batch_retries: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> WriterStats {
        WriterStats {
            replayed: self.replayed.load(Ordering::Relaxed),
            replay_inserted: self.replay_inserted.load(Ordering::Relaxed),
            durable: self.durable.load(Ordering::Relaxed),
            committed: self.committed.load(Ordering::Relaxed),
            journal_syncs: self.journal_syncs.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            batch_retries: self.batch_retries.load(Ordering::Relaxed),
        }
    }
}

enum JournalCmd {
    Append(InteractionEvent, oneshot::Sender<Result<()>>),
    Shutdown,
}

enum FlushMsg {
    Durable(Vec<InteractionEvent>),
    SegmentClosed(u64),
    Shutdown { current_segment: u64 },
}

/// Handle to append events; cheap to clone, one per task that emits events.
#[derive(Clone)]
pub struct EventWriter {
    commands: mpsc::Sender<JournalCmd>,
    counters: Arc<Counters>,
    committed: watch::Receiver<u64>,
}

/// The writer's background work: the journal thread and the SQL flusher. Keep it to shut down cleanly.
pub struct WriterTask {
    commands: mpsc::Sender<JournalCmd>,
    journal_thread: std::thread::JoinHandle<()>,
    flusher: tokio::task::JoinHandle<Result<()>>,
    counters: Arc<Counters>,
}

impl EventWriter {
    /// Replays what a previous run left in the journal into SQL, then starts the journal thread and the
    /// flusher task. Must be called inside a tokio runtime.
    pub async fn start(store: CrmStore, config: WriterConfig) -> Result<(EventWriter, WriterTask)> {
        let counters = Arc::new(Counters::default());
        std::fs::create_dir_all(&config.journal_dir)?;
        // One writer per journal: a second one would interleave frames. The OS drops the lock when the
        // holder dies, even by kill -9.
        let lock = std::fs::OpenOptions::new()
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
                journal_thread,
                flusher,
                counters,
            },
        ))
    }

    /// Appends an event; resolves once it is durable in the journal (it reaches SQL shortly after).
    /// Sensitive collected digits are masked before anything is written.
    pub async fn append(&self, event: InteractionEvent) -> Result<()> {
        let event = crate::fold::masked_for_storage(event);
        let (ack, acked) = oneshot::channel();
        self.commands
            .send(JournalCmd::Append(event, ack))
            .await
            .map_err(|_| StoreError::WriterClosed)?;
        acked.await.map_err(|_| StoreError::WriterClosed)?
    }

    /// Counters so far.
    pub fn stats(&self) -> WriterStats {
        self.counters.snapshot()
    }

    /// Number of appended events committed to SQL so far; changes after every batch. Events commit in
    /// append order, so the first N appended are the ones committed.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }
}

impl WriterTask {
    /// Stops accepting events, writes everything durable to SQL, removes the journal, and returns the
    /// final counters.
    pub async fn shutdown(self) -> Result<WriterStats> {
        // If the journal thread is already gone the flusher ends on its own.
        let _ = self.commands.send(JournalCmd::Shutdown).await;
        drop(self.commands);
        let flushed = self
            .flusher
            .await
            .map_err(|e| StoreError::Corrupt(format!("flusher task failed: {e}")))?;
        // The journal thread has ended: it sends the flusher's shutdown message last.
        let _ = tokio::task::spawn_blocking(move || self.journal_thread.join()).await;
        flushed?;
        Ok(self.counters.snapshot())
    }
}

/// Writes every segment's events to SQL, deletes the segments, and returns the next segment number.
async fn replay(store: &CrmStore, dir: &Path, counters: &Counters) -> Result<u64> {
    let segments = journal::list_segments(dir)?;
    let next = segments.last().map_or(1, |(id, _)| id + 1);
    for (_, path) in &segments {
        let bytes = std::fs::read(path)?;
        let decoded = journal::decode_records(&bytes);
        if decoded.ignored_bytes > 0 {
            tracing::warn!(
                bytes = decoded.ignored_bytes,
                "journal segment has a torn tail; ignored"
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
        for chunk in events.chunks(10_000) {
            let outcome = store.insert_events_batch(chunk).await?;
            counters
                .replay_inserted
                .fetch_add(outcome.inserted as u64, Ordering::Relaxed);
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
        let mut group: Vec<(InteractionEvent, oneshot::Sender<Result<()>>)> = Vec::new();
        let mut shutdown = false;
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                JournalCmd::Append(event, ack) => group.push((event, ack)),
                JournalCmd::Shutdown => {
                    shutdown = true;
                    break;
                }
            }
            if group.len() < config.max_group_commit.max(1) {
                next = commands.try_recv().ok();
            }
        }

        if broken {
            for (_, ack) in group {
                let _ = ack.send(Err(StoreError::Io(std::io::Error::other(
                    "journal failed earlier",
                ))));
            }
        } else if !group.is_empty() {
            framed.clear();
            let mut accepted = Vec::with_capacity(group.len());
            for (event, ack) in group {
                match serde_json::to_vec(&event)
                    .map_err(std::io::Error::other)
                    .and_then(|bytes| journal::encode_record(&bytes, &mut framed))
                {
                    Ok(()) => accepted.push((event, ack)),
                    Err(e) => {
                        let _ = ack.send(Err(StoreError::Io(e)));
                    }
                }
            }
            match segment.append_durable(&framed) {
                Ok(()) => {
                    counters.journal_syncs.fetch_add(1, Ordering::Relaxed);
                    counters
                        .durable
                        .fetch_add(accepted.len() as u64, Ordering::Relaxed);
                    let (events, acks): (Vec<_>, Vec<_>) = accepted.into_iter().unzip();
                    if flush.blocking_send(FlushMsg::Durable(events)).is_err() {
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

/// The SQL side: batches durable events, at most `max_batch_delay` after the first one came in.
async fn run_flusher(
    store: CrmStore,
    config: WriterConfig,
    mut incoming: mpsc::Receiver<FlushMsg>,
    committed_tx: watch::Sender<u64>,
    counters: Arc<Counters>,
) -> Result<()> {
    let mut batch: Vec<InteractionEvent> = Vec::new();
    let mut closed_segments: Vec<u64> = Vec::new();
    let mut deadline = tokio::time::Instant::now();
    loop {
        let msg = if batch.is_empty() {
            incoming.recv().await
        } else {
            tokio::select! {
                msg = incoming.recv() => msg,
                _ = tokio::time::sleep_until(deadline) => {
                    flush_batch(&store, &mut batch, &committed_tx, &counters).await;
                    delete_segments(&config.journal_dir, &mut closed_segments);
                    continue;
                }
            }
        };
        match msg {
            Some(FlushMsg::Durable(events)) => {
                if batch.is_empty() {
                    deadline = tokio::time::Instant::now() + config.max_batch_delay;
                }
                batch.extend(events);
                if batch.len() >= config.max_batch_events {
                    flush_batch(&store, &mut batch, &committed_tx, &counters).await;
                    delete_segments(&config.journal_dir, &mut closed_segments);
                }
            }
            Some(FlushMsg::SegmentClosed(id)) => {
                // Every event of segment `id` arrived before this message: it can go once they commit.
                closed_segments.push(id);
                if batch.is_empty() {
                    delete_segments(&config.journal_dir, &mut closed_segments);
                }
            }
            Some(FlushMsg::Shutdown { current_segment }) => {
                flush_batch(&store, &mut batch, &committed_tx, &counters).await;
                closed_segments.push(current_segment);
                delete_segments(&config.journal_dir, &mut closed_segments);
                return Ok(());
            }
            None => {
                // The journal thread died without a shutdown: SQL gets what it has; the journal stays.
                flush_batch(&store, &mut batch, &committed_tx, &counters).await;
                return Err(StoreError::WriterClosed);
            }
        }
    }
}

/// Writes the batch, retrying with backoff until it commits (the events are safe in the journal
/// meanwhile, and the bounded channel holds appenders back).
async fn flush_batch(
    store: &CrmStore,
    batch: &mut Vec<InteractionEvent>,
    committed_tx: &watch::Sender<u64>,
    counters: &Counters,
) {
    if batch.is_empty() {
        return;
    }
    let mut backoff = Duration::from_millis(20);
    loop {
        match store.insert_events_batch(batch).await {
            Ok(_) => break,
            Err(e) => {
                counters.batch_retries.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, events = batch.len(), "event batch not written; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    counters.batches.fetch_add(1, Ordering::Relaxed);
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
