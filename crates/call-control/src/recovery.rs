//! Picking up after a restart. The ACD resumes from the state it saved in the state store, and the
//! callbacks still pending in the CRM get their place in line back: a callback the saved state still
//! holds keeps its exact place; one it does not (the memory backend keeps nothing across restarts)
//! joins its queue again at the time it was first requested. Every other call of the saved state
//! died with the process that held it, and the ACD lets it go. On the cluster's router
//! ([`join_cluster`]) a joining node takes back only the callbacks no live node holds.

use crate::AcdHandle;
use crate::CallControl;
use crate::acd_task::{Persistence, QueueNotice, ResumeError, ResumeReport};
use acd::{AcdConfig, CallRequest};
use domain::{CallId, Pii, QueueId};
use std::collections::HashMap;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// A callback taken back after a restart, waiting for its task.
pub struct ResumedCallback {
    call: CallId,
    queue: QueueId,
    number: Pii<String>,
    notices: mpsc::UnboundedReceiver<QueueNotice>,
}

/// The ACD after a restart and the callbacks to hand to call control ([`CallControl::take_back`]).
pub struct Resumed {
    pub acd: AcdHandle,
    pub report: ResumeReport,
    pub callbacks: Vec<ResumedCallback>,
}

/// Starts the ACD from the state saved under `node` in `store` (see [`AcdHandle::resume`]) and takes
/// back the callbacks pending in `crm`.
pub async fn resume_acd(
    config: AcdConfig,
    agents_ready: bool,
    metrics: Option<crate::kpi_metrics::AcdMetrics>,
    store: state_store::StateStore,
    crm: &crm_store::CrmStore,
    node: &str,
) -> Result<Resumed, ResumeError> {
    let mut pending: HashMap<CallId, crm_store::PendingCallback> = HashMap::new();
    match crm.pending_callbacks().await {
        Ok(list) => {
            for cb in list {
                // The callback's interaction is the caller's, named after their call.
                if let Some(call) = cb.interaction.as_ref().and_then(|i| CallId::new(i.as_str()).ok()) {
                    pending.insert(call, cb);
                }
            }
        }
        Err(error) => warn!(%error, "pending callbacks could not be read; none are taken back"),
    }
    let mut callbacks = Vec::new();
    let persist = Persistence {
        store,
        key: node.to_string(),
    };
    let (acd, report) = AcdHandle::resume(config, agents_ready, metrics, persist, |held| {
        // A callback whose agent had taken it but whose customer had not answered yet is ended with
        // the old process and joins its queue again below, at the time it was requested.
        if matches!(held.phase, acd::CallPhase::Connected(_)) {
            return None;
        }
        let cb = pending.remove(&held.call)?;
        let (tx, notices) = mpsc::unbounded_channel();
        callbacks.push(ResumedCallback {
            call: held.call.clone(),
            queue: held.queue.clone(),
            number: cb.phone,
            notices,
        });
        Some(tx)
    })
    .await?;
    // Pending callbacks the saved state does not hold join their queue again, first requested first.
    let mut rest: Vec<(CallId, crm_store::PendingCallback)> = pending.into_iter().collect();
    rest.sort_by_key(|(call, cb)| (cb.requested_at, call.clone()));
    for (call, cb) in rest {
        let Some(queue) = cb.queue else {
            warn!(%call, "a pending callback names no queue; left as it is");
            continue;
        };
        let mut request = CallRequest::new(call.clone(), queue.clone());
        request.original_enqueued_at = Some(cb.requested_at);
        let notices = acd.enqueue(request);
        callbacks.push(ResumedCallback {
            call,
            queue,
            number: cb.phone,
            notices,
        });
    }
    if !callbacks.is_empty() {
        info!(count = callbacks.len(), "callbacks taken back");
    }
    Ok(Resumed {
        acd,
        report,
        callbacks,
    })
}

/// Joins the cluster's router through `client` and takes back the callbacks pending in `crm` that
/// no node holds any more (their node died and the router let them go, or the cluster restarted):
/// each joins its queue again at the time it was first requested. A callback the router still holds
/// (another node's, alive) stays where it is: the router refuses it here.
pub async fn join_cluster(client: routing::RouterClient, crm: &crm_store::CrmStore) -> Resumed {
    let acd = AcdHandle::Cluster(client);
    let mut pending: Vec<(CallId, crm_store::PendingCallback)> = match crm.pending_callbacks().await {
        Ok(list) => list
            .into_iter()
            .filter_map(|cb| {
                let call = cb
                    .interaction
                    .as_ref()
                    .and_then(|i| CallId::new(i.as_str()).ok())?;
                Some((call, cb))
            })
            .collect(),
        Err(error) => {
            warn!(%error, "pending callbacks could not be read; none are taken back");
            Vec::new()
        }
    };
    pending.sort_by_key(|(call, cb)| (cb.requested_at, call.clone()));
    let mut callbacks = Vec::new();
    for (call, cb) in pending {
        let Some(queue) = cb.queue else {
            continue;
        };
        let mut request = CallRequest::new(call.clone(), queue.clone());
        request.original_enqueued_at = Some(cb.requested_at);
        if let Ok(notices) = acd.enqueue_new(request).await {
            callbacks.push(ResumedCallback {
                call,
                queue,
                number: cb.phone,
                notices,
            });
        }
    }
    if !callbacks.is_empty() {
        info!(count = callbacks.len(), "callbacks taken back from the cluster");
    }
    Resumed {
        acd,
        report: ResumeReport::default(),
        callbacks,
    }
}

impl CallControl {
    /// Gives each callback taken back after a restart its task, which waits in line and calls the
    /// customer when an agent takes it.
    pub fn take_back(&self, callbacks: Vec<ResumedCallback>) {
        // The callbacks' timelines continue above anything the earlier process numbered.
        let first_seq =
            u32::try_from(domain::Timestamp::now_utc().as_millis() / 1000).unwrap_or(u32::MAX / 2);
        for cb in callbacks {
            crate::callback::spawn(
                self.inner.clone(),
                cb.call,
                cb.queue,
                cb.notices,
                cb.number,
                first_seq,
            );
        }
    }
}
