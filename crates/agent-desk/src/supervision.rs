//! What the supervisor side of the desk keeps beside the sockets: the wallboard's alert thresholds
//! per queue (`[desk.wallboard]`), where recordings may be played from, the agents a supervisor
//! asked to be made not ready after their call, and the task that records every agent's state
//! history in the CRM ([`spawn_state_history`]).
//!
//! The history task follows the ACD's agent-state broadcast (every node hears the router's changes,
//! and the rows are keyed so nodes write them once), seeds the states it finds at start from the live
//! figures, re-reads them when it lagged behind, and extends the open spans every
//! [`EXTEND_EVERY`] so the day-so-far reports see the state agents are in now.

use acd::{AgentState, ReasonCode};
use call_control::AcdHandle;
use call_control::AgentChange;
use crm_store::{AgentStateRecorder, CrmStore};
use domain::{AgentId, Timestamp};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// How often the open state spans are written up to now.
pub const EXTEND_EVERY: Duration = Duration::from_secs(15);

/// When a queue's tile turns red on the wallboard and raises an alert.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// Service level (0-1) under which the queue is flagged.
    pub service_level_min: f64,
    /// Oldest waiting call over this many seconds flags the queue.
    pub oldest_wait_max_secs: u64,
    /// Abandon rate (0-1) over which the queue is flagged.
    pub abandon_rate_max: f64,
}

impl Default for Thresholds {
    /// 80% service level, 60 s oldest wait, 5% abandoned.
    fn default() -> Self {
        Self {
            service_level_min: 0.8,
            oldest_wait_max_secs: 60,
            abandon_rate_max: 0.05,
        }
    }
}

/// `[desk.wallboard]`: thresholds for every queue, and per queue (`[desk.wallboard.queues.sales]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WallboardConfig {
    pub thresholds: Thresholds,
    pub queues: BTreeMap<String, Thresholds>,
}

/// The supervisor side's settings and shared state.
#[derive(Debug, Default)]
pub struct Supervision {
    pub wallboard: WallboardConfig,
    /// Recordings are played only from under this folder (none: playback is off).
    pub recordings_dir: Option<PathBuf>,
    /// Agents to be made not ready (with this reason) when their call ends.
    after_call: Mutex<HashMap<AgentId, ReasonCode>>,
}

impl Supervision {
    pub fn new(wallboard: WallboardConfig, recordings_dir: Option<PathBuf>) -> Self {
        Self {
            wallboard,
            recordings_dir,
            after_call: Mutex::new(HashMap::new()),
        }
    }

    /// Marks `agent` to be made not ready when their current call ends.
    pub fn not_ready_after_call(&self, agent: &AgentId, reason: ReasonCode) {
        self.after_call.lock().insert(agent.clone(), reason);
    }

    /// Whether `agent` is marked, and why.
    pub fn pending_after_call(&self, agent: &AgentId) -> Option<ReasonCode> {
        self.after_call.lock().get(agent).cloned()
    }

    /// The agents marked, for the wallboard.
    pub fn after_call_agents(&self) -> Vec<AgentId> {
        let mut v: Vec<_> = self.after_call.lock().keys().cloned().collect();
        v.sort();
        v
    }

    fn take_after_call(&self, agent: &AgentId) -> Option<ReasonCode> {
        self.after_call.lock().remove(agent)
    }
}

/// The stored name and reason of a state.
pub fn state_name(state: &AgentState) -> (&'static str, Option<&str>) {
    let reason = match state {
        AgentState::NotReady { reason } => Some(reason.as_str()),
        _ => None,
    };
    (state.kind().name(), reason)
}

/// Starts the task that records agents' state history (see the module comment) and carries out
/// "not ready after this call" when a marked agent's call ends (they go to wrap-up).
pub fn spawn_state_history(
    acd: AcdHandle,
    crm: CrmStore,
    supervision: Arc<Supervision>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let recorder = AgentStateRecorder::new(crm);
    // Subscribed before the snapshot is read, so no change falls between them.
    let mut changes = acd.subscribe_agent_states();
    tokio::spawn(async move {
        if let Some(k) = acd.kpis().await {
            let now = Timestamp::now_utc();
            for a in &k.agents {
                let (state, reason) = state_name(&a.state);
                if let Err(e) = recorder.seed(&a.agent, state, reason, a.since, now).await {
                    warn!(error = %e, "agent state not recorded");
                }
            }
        }
        let mut tick = tokio::time::interval(EXTEND_EVERY);
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(ev) => {
                        let (state, reason) = state_name(&ev.to);
                        if let Err(e) = recorder.observe(&ev.agent, state, reason, ev.at).await {
                            warn!(error = %e, "agent state not recorded");
                        }
                        if matches!(ev.to, AgentState::WrapUp { .. })
                            && let Some(reason) = supervision.take_after_call(&ev.agent)
                            && let Err(e) = acd.change_agent(&ev.agent, AgentChange::NotReady(reason)).await
                        {
                            warn!(error = %e, agent = %ev.agent, "not ready after the call refused");
                        }
                    }
                    Err(RecvError::Lagged(_)) => {
                        // Changes were missed: the live states say where everyone is now.
                        if let Some(k) = acd.kpis().await {
                            for a in &k.agents {
                                let (state, reason) = state_name(&a.state);
                                if let Err(e) = recorder.observe(&a.agent, state, reason, a.since).await {
                                    warn!(error = %e, "agent state not recorded");
                                }
                            }
                        }
                    }
                    Err(RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    if let Err(e) = recorder.extend_open(Timestamp::now_utc()).await {
                        warn!(error = %e, "agent states not extended");
                    }
                }
                _ = shutdown.cancelled() => {
                    let _ = recorder.extend_open(Timestamp::now_utc()).await;
                    break;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_have_stored_names_and_reasons() {
        let lunch = ReasonCode::new("lunch").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            state_name(&AgentState::NotReady { reason: lunch }),
            ("not_ready", Some("lunch"))
        );
        assert_eq!(state_name(&AgentState::OnCall), ("on_call", None));
        for name in crm_store::history::STATE_NAMES {
            assert!(acd::AgentStateKind::ALL.iter().any(|k| k.name() == name));
        }
    }

    #[test]
    fn thresholds_parse_per_queue() {
        let c: WallboardConfig = serde_json::from_str(
            r#"{"thresholds":{"oldest_wait_max_secs":30},"queues":{"sales":{"service_level_min":0.9}}}"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.thresholds.oldest_wait_max_secs, 30);
        assert_eq!(c.thresholds.abandon_rate_max, 0.05);
        assert_eq!(c.queues["sales"].service_level_min, 0.9);
    }
}
