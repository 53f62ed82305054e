//! The CRM writer's shared outbox on the state store: one durable stream (`crm-outbox`) that every
//! node appends its interaction events to, read through one consumer group (`crm-writer`) by
//! whichever node holds the lease `crm-outbox`. The holder renews the lease on every read; a standby
//! takes it once it lapses and first takes over every entry the old holder was given but never
//! acknowledged, so nothing acknowledged to an appender is lost when a node dies.
//!
//! On Redis, an entry is as durable as the server's persistence makes it (`appendonly yes` with
//! `appendfsync always` survives a power cut of the Redis host; `everysec` may lose its last second).
//! On the memory backend the outbox lives and dies with the process (useful in tests).

use crm_store::{Outbox, OutboxEntry};
use domain::Timestamp;
use state_store::{Lease, StateStore, StreamEntryId};
use std::time::Duration;
use tokio::sync::Mutex;

/// The stream every node appends to.
pub const OUTBOX_STREAM: &str = "crm-outbox";
/// The consumer group that writes the stream to SQL.
pub const OUTBOX_GROUP: &str = "crm-writer";
/// The lease of the consumer role.
pub const OUTBOX_LEASE: &str = "crm-outbox";
/// How long the consumer role outlives its holder's last renewal, by default.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
/// Acknowledged reads between two trims of the stream.
const TRIM_EVERY: u32 = 32;

/// The outbox over a state store's stream.
pub struct StreamOutbox {
    state: StateStore,
    /// Consumer name in the group: the node's name, stable across restarts.
    consumer: String,
    /// Lease holder: unique per process, so a restarted node is a new holder.
    holder: String,
    lease_ttl: Duration,
    role: Mutex<Role>,
}

/// What this node knows of its consumer role.
#[derive(Default)]
struct Role {
    lease: Option<Lease>,
    /// Entries given to an earlier consumer and never acknowledged may remain: take them first.
    claim_pending: bool,
    acks_since_trim: u32,
}

fn io(e: state_store::StateError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl StreamOutbox {
    /// An outbox for node `node` (its name in the consumer group). Creates the group if missing, so
    /// entries appended before any node consumed are kept for it.
    pub async fn new(state: StateStore, node: &str) -> std::io::Result<Self> {
        state
            .stream_ensure_group(OUTBOX_STREAM, OUTBOX_GROUP)
            .await
            .map_err(io)?;
        Ok(Self {
            state,
            consumer: node.to_string(),
            holder: format!("{node}.{:016x}", rand::random::<u64>()),
            lease_ttl: DEFAULT_LEASE_TTL,
            role: Mutex::new(Role::default()),
        })
    }

    /// Sets how long the consumer role outlives this node's last renewal: how long a standby waits
    /// before taking over from a node that died. Reads renew it far more often (every 200 ms).
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Whether this node holds the consumer role now (as of its last read).
    pub async fn is_consumer(&self) -> bool {
        self.role.lock().await.lease.is_some()
    }

    /// Keeps the lease, or takes it when it is free; false while another node holds it.
    async fn hold_role(&self, role: &mut Role) -> std::io::Result<bool> {
        let now = Timestamp::now_utc();
        if let Some(lease) = role.lease.take() {
            role.lease = self
                .state
                .renew_lease(&lease, self.lease_ttl, now)
                .await
                .map_err(io)?;
            if role.lease.is_none() {
                tracing::warn!("CRM outbox consumer role lost");
            }
        }
        if role.lease.is_none() {
            role.lease = self
                .state
                .acquire_lease(OUTBOX_LEASE, &self.holder, self.lease_ttl, now)
                .await
                .map_err(io)?;
            if role.lease.is_some() {
                tracing::info!("this node writes the CRM outbox to SQL");
                role.claim_pending = true;
            }
        }
        Ok(role.lease.is_some())
    }
}

fn entries(found: Vec<state_store::StreamEntry>) -> Vec<OutboxEntry> {
    found
        .into_iter()
        .map(|e| OutboxEntry {
            id: e.id.0,
            records: e.payload,
        })
        .collect()
}

impl Outbox for StreamOutbox {
    async fn append(&self, records: Vec<u8>) -> std::io::Result<()> {
        self.state
            .stream_append(OUTBOX_STREAM, &records)
            .await
            .map(|_| ())
            .map_err(io)
    }

    async fn read(&self, max_entries: usize, wait: Duration) -> std::io::Result<Vec<OutboxEntry>> {
        let mut role = self.role.lock().await;
        if !self.hold_role(&mut role).await? {
            drop(role);
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        if role.claim_pending {
            // Whoever held the role before (this node before a restart, or a dead one) may have left
            // entries it was given but did not acknowledge: they come before anything new.
            let claimed = self
                .state
                .stream_claim(
                    OUTBOX_STREAM,
                    OUTBOX_GROUP,
                    &self.consumer,
                    Duration::ZERO,
                    max_entries,
                )
                .await
                .map_err(io)?;
            if claimed.len() < max_entries {
                role.claim_pending = false;
            }
            if !claimed.is_empty() {
                tracing::info!(entries = claimed.len(), "CRM outbox entries taken over");
                return Ok(entries(claimed));
            }
        }
        drop(role);
        let block = Some(wait).filter(|w| !w.is_zero());
        let found = self
            .state
            .stream_read_group(OUTBOX_STREAM, OUTBOX_GROUP, &self.consumer, max_entries, block)
            .await
            .map_err(io)?;
        Ok(entries(found))
    }

    async fn acknowledge(&self, ids: Vec<String>) -> std::io::Result<()> {
        let ids: Vec<StreamEntryId> = ids.into_iter().map(StreamEntryId).collect();
        self.state
            .stream_ack(OUTBOX_STREAM, OUTBOX_GROUP, &ids)
            .await
            .map_err(io)?;
        let trim = {
            let mut role = self.role.lock().await;
            role.acks_since_trim += 1;
            role.acks_since_trim >= TRIM_EVERY && {
                role.acks_since_trim = 0;
                true
            }
        };
        if trim {
            self.state.stream_trim_consumed(OUTBOX_STREAM).await.map_err(io)?;
        }
        Ok(())
    }

    async fn release(&self) {
        let mut role = self.role.lock().await;
        if let Err(e) = self.state.stream_trim_consumed(OUTBOX_STREAM).await {
            tracing::warn!(error = %e, "CRM outbox not trimmed");
        }
        if let Some(lease) = role.lease.take() {
            match self.state.release_lease(&lease).await {
                Ok(_) => tracing::info!("CRM outbox consumer role given up"),
                Err(e) => tracing::warn!(error = %e, "CRM outbox lease not released; it lapses"),
            }
        }
    }
}
