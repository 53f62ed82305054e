//! Rebuilding the router from the store (snapshot, then the journal after it), keeping what the
//! replayed batches had for the nodes so that a takeover can deliver it again.

use super::LeaderError;
use crate::protocol::{
    JOURNAL_STREAM, JournalBatch, NodeId, OutItem, ROUTER_NAMESPACE, SNAPSHOT_KEY, decode,
};
use crate::router::{ClusterRouter, RouterSnapshot};
use acd::{Acd, AcdConfig, AgentStateEvent};
use domain::Timestamp;
use state_store::{StateStore, StreamEntryId};
use std::collections::BTreeMap;
use tracing::warn;

/// Batches delivered again per commit after a rebuild (the journal after a snapshot can hold
/// thousands; one commit each would hold up the takeover by as many round trips).
pub(super) const REDELIVERY_BATCHES_PER_COMMIT: usize = 256;

/// What one batch has for the nodes: each node's offers and replies, and the agent state changes
/// every node follows, in order.
pub(super) struct BatchDelivery {
    pub(super) batch: u64,
    pub(super) to_nodes: BTreeMap<NodeId, Vec<OutItem>>,
    pub(super) events: Vec<AgentStateEvent>,
}

impl BatchDelivery {
    pub(super) fn is_empty(&self) -> bool {
        self.to_nodes.is_empty() && self.events.is_empty()
    }
}

/// The router as the store holds it, rebuilt from the snapshot and the journal after it.
pub(super) struct Rebuilt {
    pub(super) router: ClusterRouter,
    /// No usable snapshot was found.
    pub(super) fresh: bool,
    pub(super) snapshot_batch: u64,
    pub(super) journal_ids: BTreeMap<u64, StreamEntryId>,
    /// The journal's last entry (read, whether applied or not).
    pub(super) journal_tip: Option<StreamEntryId>,
    pub(super) replayed: u64,
    /// What the replayed batches had for the nodes, in batch order (see "Redelivery").
    pub(super) deliveries: Vec<BatchDelivery>,
}

pub(super) async fn rebuild(
    store: &StateStore,
    config: &AcdConfig,
    now: Timestamp,
) -> Result<Rebuilt, LeaderError> {
    let saved = store.get_blob(ROUTER_NAMESPACE, SNAPSHOT_KEY, now).await?;
    let restored = saved.and_then(|blob| {
        match decode::<RouterSnapshot>(&blob.value)
            .map_err(|e| e.to_string())
            .and_then(|s| ClusterRouter::restore(s).map_err(|e| e.to_string()))
        {
            Ok(router) => Some(router),
            Err(error) => {
                // A state this build cannot read: starting empty beats not routing at all.
                warn!(%error, "the router snapshot cannot be restored; starting from the journal alone");
                None
            }
        }
    });
    let fresh = restored.is_none();
    let mut router = match restored {
        Some(r) => r,
        None => ClusterRouter::new(Acd::new(config.clone())?),
    };
    let snapshot_batch = router.batch();
    // Apply the journal after the snapshot, keeping what it had for the nodes: a delivery may have
    // been lost with a primary.
    let mut journal_ids = BTreeMap::new();
    let mut deliveries: Vec<BatchDelivery> = Vec::new();
    let mut replayed = 0;
    let mut after: Option<StreamEntryId> = None;
    let mut journal_tip = None;
    loop {
        let page = store
            .stream_read(JOURNAL_STREAM, after.as_ref(), 1_000, None)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        journal_tip = Some(last.id.clone());
        for entry in page {
            let batch = match decode::<JournalBatch>(&entry.payload) {
                Ok(b) => b,
                Err(error) => {
                    warn!(entry = %entry.id, %error, "a journal entry does not decode; skipped");
                    continue;
                }
            };
            if batch.batch <= router.batch() {
                continue;
            }
            if batch.batch != router.batch() + 1 {
                warn!(
                    expected = router.batch() + 1,
                    found = batch.batch,
                    "the journal misses batches"
                );
            }
            let delivery = router.apply(&batch);
            // A node let go later in the journal gets nothing again: its streams were deleted then.
            for lost in &delivery.lost_nodes {
                for earlier in &mut deliveries {
                    earlier.to_nodes.remove(lost);
                }
            }
            let again = BatchDelivery {
                batch: batch.batch,
                to_nodes: delivery.to_nodes,
                events: delivery.events,
            };
            if !again.is_empty() {
                deliveries.push(again);
            }
            replayed += 1;
            journal_ids.insert(batch.batch, entry.id);
        }
    }
    Ok(Rebuilt {
        router,
        fresh,
        snapshot_batch,
        journal_ids,
        journal_tip,
        replayed,
        deliveries,
    })
}

/// The router as the store holds it now (snapshot and journal), without taking the lease: what a
/// standby would take over with. For tools and tests; `config` is used only for a cluster that has
/// no snapshot yet.
pub async fn read_router(
    store: &StateStore,
    config: &AcdConfig,
    now: Timestamp,
) -> Result<ClusterRouter, LeaderError> {
    Ok(rebuild(store, config, now).await?.router)
}
