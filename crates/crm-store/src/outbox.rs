//! The durable writer over a shared outbox instead of the local journal: when the nodes share a Redis,
//! every node appends its interaction events to one stream, and one node at a time (the holder of
//! the stream's consumer role) writes them to SQL. A node can then die with its disk, and its
//! acknowledged events are still written (by itself after a restart, or by a standby).
//!
//! ```text
//! append() --cmd--> appender task (group commit: one outbox entry per group, ack) --> Outbox
//!                                                                                      |
//!                  SQL <--batch-- consumer task (whichever node holds the role) <--read+ack
//! ```
//!
//! This crate knows no Redis: [`Outbox`] is what the writer needs of such a log, and the binary
//! plugs in one built on the state store's streams. An entry holds a group of events framed like
//! journal records (length, CRC, JSON), so a damaged entry loses no more than its torn tail.
//!
//! Order: every node appends its groups one after another, and one consumer reads the stream in
//! order, so the events of an interaction (all emitted by the node that holds its call) are folded
//! in order. Writes are idempotent, so an entry written again after a crash or a takeover changes
//! nothing.

use crate::error::{Result, StoreError};
use crate::store::CrmStore;
use crate::writer::{
    Background, Counters, EventWriter, JournalCmd, WriterConfig, WriterTask, decode_events, flush_batch,
    frame_group, sql_writers_for, take_group,
};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// One entry of an outbox: framed event records, and the id to acknowledge it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: String,
    pub records: Vec<u8>,
}

/// A durable log shared by the nodes, as the writer uses it.
pub trait Outbox: Send + Sync + 'static {
    /// Stores one entry durably; resolves once it is stored.
    fn append(&self, records: Vec<u8>) -> impl Future<Output = std::io::Result<()>> + Send;
    /// The next entries this node must write to SQL, oldest first: entries another consumer was
    /// given but never acknowledged come before new ones. Waits up to `wait` when there are none.
    /// Returns nothing (after waiting) while another node holds the consumer role.
    fn read(
        &self,
        max_entries: usize,
        wait: Duration,
    ) -> impl Future<Output = std::io::Result<Vec<OutboxEntry>>> + Send;
    /// These entries are in SQL: they need not be read again.
    fn acknowledge(&self, ids: Vec<String>) -> impl Future<Output = std::io::Result<()>> + Send;
    /// Gives the consumer role up (at shutdown), so a standby need not wait for it to lapse.
    fn release(&self) -> impl Future<Output = ()> + Send;
}

/// Entries asked for per read; each holds up to `max_group_commit` events.
const ENTRIES_PER_READ: usize = 256;
/// How long a read waits for new entries before the consumer looks again (and sees a shutdown).
const READ_WAIT: Duration = Duration::from_millis(200);
/// How long an append keeps retrying an outbox that fails before its appenders get the error.
const APPEND_PATIENCE: Duration = Duration::from_secs(10);

impl EventWriter {
    /// Starts a writer whose events are made durable in `outbox` instead of the local journal, and a
    /// consumer that writes the outbox to SQL whenever this node holds the consumer role.
    /// `config.journal_dir` only keeps the dead-letter file. Must be called inside a tokio runtime.
    ///
    /// [`EventWriter::committed`] counts the events this node's consumer wrote (from any node).
    pub async fn start_with_outbox<O: Outbox>(
        store: CrmStore,
        config: WriterConfig,
        outbox: Arc<O>,
    ) -> Result<(EventWriter, WriterTask)> {
        crate::files::create_private_dir(&config.journal_dir)?;
        let counters = Arc::new(Counters::default());
        let (commands, command_rx) = mpsc::channel(config.queue_capacity.max(1));
        let (committed_tx, committed) = watch::channel(0u64);
        let (stopping_tx, stopping) = watch::channel(false);
        let appender = tokio::spawn(run_appender(
            outbox.clone(),
            command_rx,
            config.max_group_commit,
            counters.clone(),
            stopping_tx,
        ));
        let consumer = tokio::spawn(run_consumer(
            store,
            config,
            outbox,
            stopping,
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
                background: Background::Outbox { appender, consumer },
                counters,
            },
        ))
    }
}

/// Group commit into the outbox: every append waiting becomes one entry, acknowledged together.
async fn run_appender<O: Outbox>(
    outbox: Arc<O>,
    mut commands: mpsc::Receiver<JournalCmd>,
    max_group: usize,
    counters: Arc<Counters>,
    stopping: watch::Sender<bool>,
) {
    while let Some(first) = commands.recv().await {
        let (group, shutdown) = take_group(first, &mut commands, max_group);
        if !group.is_empty() {
            let mut framed = Vec::new();
            let accepted = frame_group(group, &mut framed);
            match append_patiently(&*outbox, framed).await {
                Ok(()) => {
                    counters.journal_syncs.fetch_add(1, Ordering::Relaxed);
                    counters
                        .durable
                        .fetch_add(accepted.len() as u64, Ordering::Relaxed);
                    for (_, ack) in accepted {
                        let _ = ack.send(Ok(()));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, events = accepted.len(), "outbox append failed; events refused");
                    for (_, ack) in accepted {
                        let _ = ack.send(Err(StoreError::Io(std::io::Error::new(e.kind(), e.to_string()))));
                    }
                }
            }
        }
        if shutdown {
            break;
        }
    }
    commands.close();
    let _ = stopping.send(true);
}

/// Appends, retrying a failing outbox (a Redis failover, a dropped connection) for a while: the
/// appenders wait meanwhile, which is better than refusing their events at the first error.
async fn append_patiently<O: Outbox>(outbox: &O, framed: Vec<u8>) -> std::io::Result<()> {
    let deadline = tokio::time::Instant::now() + APPEND_PATIENCE;
    let mut backoff = Duration::from_millis(50);
    loop {
        match outbox.append(framed.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() + backoff >= deadline => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "outbox append failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Reads the outbox while this node holds the consumer role, writes each read to SQL (retrying until
/// it commits), then acknowledges it. On shutdown, drains what is left and gives the role up.
async fn run_consumer<O: Outbox>(
    store: CrmStore,
    config: WriterConfig,
    outbox: Arc<O>,
    mut stopping: watch::Receiver<bool>,
    committed_tx: watch::Sender<u64>,
    counters: Arc<Counters>,
) -> Result<()> {
    let max_events = config.max_batch_events.max(1);
    let mut backoff = Duration::from_millis(50);
    loop {
        let draining = *stopping.borrow_and_update();
        let wait = if draining { Duration::ZERO } else { READ_WAIT };
        let entries = match outbox.read(ENTRIES_PER_READ, wait).await {
            Ok(entries) => {
                backoff = Duration::from_millis(50);
                entries
            }
            Err(e) => {
                tracing::warn!(error = %e, "outbox read failed; retrying");
                if draining {
                    // The entries stay in the outbox for the next consumer.
                    break;
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopping.changed() => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        if entries.is_empty() {
            if draining {
                break;
            }
            continue;
        }
        let mut ids = Vec::with_capacity(entries.len());
        let mut events = Vec::new();
        for entry in entries {
            events.extend(decode_events(&entry.records));
            ids.push(entry.id);
        }
        for chunk in events.chunks(max_events) {
            let mut batch = chunk.to_vec();
            let writers = sql_writers_for(&store, &config, batch.len());
            flush_batch(
                &store,
                &config.journal_dir,
                writers,
                &mut batch,
                &committed_tx,
                &counters,
            )
            .await;
        }
        acknowledge_patiently(&*outbox, ids, draining).await;
    }
    outbox.release().await;
    Ok(())
}

/// Acknowledges until it works: an entry left unacknowledged would only be written again (a no-op)
/// by the next holder, but this holder would never be given it again. While draining for a
/// shutdown it gives up after a few tries: the next holder takes the entries over.
async fn acknowledge_patiently<O: Outbox>(outbox: &O, ids: Vec<String>, draining: bool) {
    let mut backoff = Duration::from_millis(20);
    for attempt in 1u32.. {
        match outbox.acknowledge(ids.clone()).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, entries = ids.len(), "outbox acknowledgement failed; retrying")
            }
        }
        if draining && attempt >= 5 {
            tracing::error!(
                entries = ids.len(),
                "outbox entries left unacknowledged; the next holder writes them again (idempotently)"
            );
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
