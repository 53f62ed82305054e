//! The ACD owner task: the one place the pure `acd::Acd` router runs. Calls and agents send it inputs;
//! it feeds them to the router with the current time, wakes it at its next deadline, and routes each
//! output to the call it concerns. Offers go to the call's task, which rings the agent. Agent state
//! changes are broadcast (agent desktops follow them) and the live KPIs are kept in a watch channel
//! that the wallboard reads, refreshed at most every [`KPI_REFRESH`] when something changed.
//!
//! With [`Persistence`] the router's whole state is kept as one blob in the state store, rewritten after
//! every change (a newer state replaces one not yet written, so a slow store costs staleness, never
//! backlog; copies are spaced so that they take at most 1/20 of the router's time, and encoding runs
//! on another thread), and [`LocalAcd::resume`] continues from it after a restart: callers keep their place in
//! line and agents their state. Calls the restarted process no longer has are let go, as the owner says.

use acd::{
    Acd, AcdConfig, AcdError, AcdSnapshot, AgentState, CallPhase, HeldCall, Input, KpiSnapshot, Output,
};
use domain::{AgentId, CallId, QueueId, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, info, warn};

/// How often the published KPIs are refreshed while events arrive (the wallboard's latency).
pub const KPI_REFRESH: Duration = Duration::from_millis(250);

/// Namespace of the router's saved state in the state store, keyed by node name.
pub const ACD_STATE_NAMESPACE: &str = "acd";

/// Where the router's state is kept between restarts.
#[derive(Clone, Debug)]
pub struct Persistence {
    pub store: state_store::StateStore,
    /// Blob key in [`ACD_STATE_NAMESPACE`]: the node's name, so nodes sharing a store keep their own.
    pub key: String,
}

/// What [`LocalAcd::resume`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumeReport {
    /// A saved state was found and restored.
    pub restored: bool,
    /// Calls of the saved state that were kept (their owner took them back).
    pub kept: usize,
    /// Calls of the saved state that were let go (the process that held them is gone).
    pub dropped: usize,
}

/// Why [`LocalAcd::resume`] could not start the router.
#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error(transparent)]
    Config(#[from] acd::ConfigError),
    #[error("reading the saved ACD state: {0}")]
    Store(#[from] state_store::StateError),
}

pub use acd::{Abandonment, AgentStateEvent, QueueNotice};

enum Msg {
    Input(Input),
    /// An input whose refusal the sender wants to hear about (agent commands from the desktop).
    Request(Input, oneshot::Sender<Result<(), AcdError>>),
    Register {
        call: CallId,
        notices: mpsc::UnboundedSender<QueueNotice>,
    },
    Forget {
        call: CallId,
    },
    Kpis(oneshot::Sender<KpiSnapshot>),
    /// Write the current state now and answer once it is stored.
    Save(oneshot::Sender<()>),
    Abandon {
        call: CallId,
        reply: oneshot::Sender<Option<Abandonment>>,
    },
}

/// The in-process router: sends inputs to the ACD task. Cheap to clone. Call control reaches it
/// through [`crate::AcdHandle`], which may be the cluster's router instead.
#[derive(Clone)]
pub struct LocalAcd {
    tx: mpsc::UnboundedSender<Msg>,
    states: broadcast::Sender<AgentStateEvent>,
    kpis: watch::Receiver<Arc<KpiSnapshot>>,
}

impl LocalAcd {
    /// Starts the task with `config`, keeping nothing between restarts; every configured agent is
    /// logged in and ready when `agents_ready` (SIP-phone agents without a desktop session).
    pub fn start(
        config: AcdConfig,
        agents_ready: bool,
        metrics: Option<crate::kpi_metrics::AcdMetrics>,
    ) -> Result<LocalAcd, acd::ConfigError> {
        let mut acd = Acd::new(config)?;
        if agents_ready {
            log_in_everyone(&mut acd, Timestamp::now_utc());
        }
        Ok(Self::spawn(acd, HashMap::new(), metrics, None))
    }

    /// Starts the task from the state saved in `persist` (or fresh from `config` when none is saved),
    /// and keeps saving it there. `config` still applies: its queues and agents replace the saved
    /// profiles, and agents it adds start logged out (or ready, with `agents_ready`).
    ///
    /// `keep` is asked about every call of the saved state: it returns where that call's notices go
    /// when its owner takes it back (a callback waiting in line), or None when the call is gone
    /// with the process that held it. Those are let go: a waiting or ringing call as abandoned, a
    /// connected one as ended (its agent goes to wrap-up). A kept call that was ringing an agent goes
    /// back to its place, since that ring died with the process.
    pub async fn resume(
        config: AcdConfig,
        agents_ready: bool,
        metrics: Option<crate::kpi_metrics::AcdMetrics>,
        persist: Persistence,
        mut keep: impl FnMut(&HeldCall) -> Option<mpsc::UnboundedSender<QueueNotice>>,
    ) -> Result<(LocalAcd, ResumeReport), ResumeError> {
        let now = Timestamp::now_utc();
        let mut report = ResumeReport::default();
        let saved = persist
            .store
            .get_blob(ACD_STATE_NAMESPACE, &persist.key, now)
            .await?;
        let restored = saved.and_then(|blob| {
            let snapshot = serde_json::from_slice::<AcdSnapshot>(&blob.value)
                .map_err(|e| e.to_string())
                .and_then(|s| Acd::restore(s).map_err(|e| e.to_string()));
            match snapshot {
                Ok(acd) => Some(acd),
                Err(error) => {
                    // A state this build cannot read: starting empty beats not starting at all.
                    warn!(%error, "the saved ACD state cannot be restored; starting with none");
                    None
                }
            }
        });
        let mut calls = HashMap::new();
        let mut acd = match restored {
            Some(mut acd) => {
                report.restored = true;
                for held in acd.calls() {
                    let outcome = match keep(&held) {
                        Some(notices) => {
                            report.kept += 1;
                            calls.insert(held.call.clone(), notices);
                            match held.phase {
                                CallPhase::Ringing(_) => acd.handle(
                                    now,
                                    Input::OfferWithdrawn {
                                        call: held.call.clone(),
                                    },
                                ),
                                _ => Ok(()),
                            }
                        }
                        None => {
                            report.dropped += 1;
                            let call = held.call.clone();
                            match held.phase {
                                CallPhase::Connected(_) => acd.handle(now, Input::CallEnded { call }),
                                _ => acd.handle(now, Input::CallAbandoned { call }),
                            }
                        }
                    };
                    if let Err(error) = outcome {
                        warn!(call = %held.call, %error, "a restored call could not be settled");
                    }
                }
                // Calls agents placed went with the process that drove them.
                for (agent, call) in acd.placed_calls() {
                    report.dropped += 1;
                    if let Err(error) = acd.handle(now, Input::CallEnded { call }) {
                        warn!(%agent, %error, "a restored placed call could not be ended");
                    }
                }
                config.check()?;
                for queue in config.queues {
                    if let Err(error) = acd.handle(now, Input::UpsertQueue(queue)) {
                        warn!(%error, "a configured queue could not be applied to the restored state");
                    }
                }
                for agent in config.agents {
                    if let Err(error) = acd.handle(now, Input::UpsertAgent(agent)) {
                        warn!(%error, "a configured agent could not be applied to the restored state");
                    }
                }
                acd
            }
            None => Acd::new(config)?,
        };
        if agents_ready {
            log_in_everyone(&mut acd, now);
        }
        info!(
            restored = report.restored,
            kept = report.kept,
            dropped = report.dropped,
            "ACD started"
        );
        Ok((Self::spawn(acd, calls, metrics, Some(persist)), report))
    }

    fn spawn(
        acd: Acd,
        calls: HashMap<CallId, mpsc::UnboundedSender<QueueNotice>>,
        metrics: Option<crate::kpi_metrics::AcdMetrics>,
        persist: Option<Persistence>,
    ) -> LocalAcd {
        let (tx, rx) = mpsc::unbounded_channel();
        let (states, _) = broadcast::channel(1024);
        let (kpi_tx, kpis) = watch::channel(Arc::new(acd.kpis(Timestamp::now_utc())));
        let publish = Publish {
            states: states.clone(),
            kpis: kpi_tx,
            metrics,
            saver: persist.map(Saver::start),
        };
        tokio::spawn(run(acd, rx, publish, calls));
        LocalAcd { tx, states, kpis }
    }

    /// Feeds one input to the router.
    pub fn input(&self, input: Input) {
        let _ = self.tx.send(Msg::Input(input));
    }

    /// Feeds one input and says whether the router took it (an illegal agent transition is refused
    /// with the reason and changes nothing).
    pub async fn request(&self, input: Input) -> Result<(), AcdError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Request(input, reply))
            .map_err(|_| AcdError::Internal("the ACD task has stopped"))?;
        rx.await
            .unwrap_or(Err(AcdError::Internal("the ACD task has stopped")))
    }

    /// Every agent state change from now on. A receiver that falls behind by more than 1,024
    /// changes is told it lagged and should re-read the states from [`LocalAcd::live_kpis`].
    pub fn subscribe_agent_states(&self) -> broadcast::Receiver<AgentStateEvent> {
        self.states.subscribe()
    }

    /// The live KPIs as last published (at most [`KPI_REFRESH`] old while events arrive); changes
    /// wake the receiver.
    pub fn live_kpis(&self) -> watch::Receiver<Arc<KpiSnapshot>> {
        self.kpis.clone()
    }

    /// Enqueues a call; its notices arrive on the returned receiver.
    pub fn enqueue(&self, request: acd::CallRequest) -> mpsc::UnboundedReceiver<QueueNotice> {
        let (notices, rx) = mpsc::unbounded_channel();
        let _ = self.tx.send(Msg::Register {
            call: request.call.clone(),
            notices,
        });
        self.input(Input::CallEnqueued(request));
        rx
    }

    /// The call is gone from the queue's point of view (ended or left).
    pub fn forget(&self, call: CallId) {
        let _ = self.tx.send(Msg::Forget { call });
    }

    /// The caller hung up while queued: the ACD records it and says where they were.
    pub async fn abandon(&self, call: CallId) -> Option<Abandonment> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Abandon { call, reply }).ok()?;
        rx.await.ok().flatten()
    }

    /// Writes the router's state to the store now and returns once it is there (at shutdown, and
    /// for tests). Without persistence it returns at once.
    pub async fn save_now(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Save(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Live KPIs of every queue and agent.
    pub async fn kpis(&self) -> Option<KpiSnapshot> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Kpis(tx)).ok()?;
        rx.await.ok()
    }

    /// Waiting calls, available agents and estimated wait of one queue.
    pub async fn queue_state(&self, queue: &QueueId) -> Option<(u32, u32, Option<u64>)> {
        let k = self.kpis().await?;
        let q = k.queues.into_iter().find(|q| &q.queue == queue)?;
        let available = q
            .agents_by_state
            .iter()
            .filter(|(kind, _)| **kind == acd::AgentStateKind::Available)
            .map(|(_, n)| *n)
            .sum();
        Some((q.waiting, available, q.estimated_wait_ms))
    }
}

/// Where the task publishes what others watch.
struct Publish {
    states: broadcast::Sender<AgentStateEvent>,
    kpis: watch::Sender<Arc<KpiSnapshot>>,
    metrics: Option<crate::kpi_metrics::AcdMetrics>,
    saver: Option<Saver>,
}

/// Logs in every agent who is logged out (logging in makes an agent available at once).
fn log_in_everyone(acd: &mut Acd, now: Timestamp) {
    let logged_out: Vec<AgentId> = acd
        .config()
        .agents
        .into_iter()
        .map(|a| a.id)
        .filter(|id| matches!(acd.agent_state(id), Some((AgentState::LoggedOut, _))))
        .collect();
    for agent in logged_out {
        if let Err(error) = acd.handle(now, Input::AgentLogin { agent }) {
            warn!(%error, "an agent could not be logged in");
        }
    }
}

/// Writes the router's state to the store from a task of its own. One state waits at most: when the
/// store is slower than the router, later states replace it rather than queue behind it.
struct Saver {
    pending: mpsc::Sender<(AcdSnapshot, Option<oneshot::Sender<()>>)>,
    writer: tokio::task::JoinHandle<()>,
    /// The router changed since the last state handed over.
    dirty: bool,
    /// No copy before this instant: copying a large state takes the router's time (milliseconds for
    /// thousands of agents), so copies are spaced to keep that under 1/[`SAVE_COST_RATIO`] of it.
    not_before: tokio::time::Instant,
}

/// Saves are spaced by this many times what the last copy of the state took.
const SAVE_COST_RATIO: u32 = 20;

/// How soon a change is offered again while the writer is still storing the previous state.
const WRITER_BUSY_RETRY: Duration = Duration::from_millis(2);

impl Saver {
    fn start(persist: Persistence) -> Saver {
        let (pending, mut rx) = mpsc::channel::<(AcdSnapshot, Option<oneshot::Sender<()>>)>(1);
        let writer = tokio::spawn(async move {
            while let Some((state, written)) = rx.recv().await {
                // Encoding takes milliseconds for thousands of agents: off the router's task.
                match tokio::task::spawn_blocking(move || serde_json::to_vec(&state)).await {
                    Ok(Ok(state)) => save(&persist, &state).await,
                    Ok(Err(error)) => warn!(%error, "the ACD state could not be encoded"),
                    Err(error) => warn!(%error, "the ACD state encoder failed"),
                }
                if let Some(written) = written {
                    let _ = written.send(());
                }
            }
        });
        Saver {
            pending,
            writer,
            dirty: false,
            not_before: tokio::time::Instant::now(),
        }
    }

    /// Hands the current state over if the writer has room; otherwise it stays dirty for later.
    fn offer(&mut self, acd: &Acd) {
        let started = tokio::time::Instant::now();
        if !self.dirty || started < self.not_before {
            return;
        }
        match self.pending.try_reserve() {
            Ok(slot) => {
                slot.send((acd.snapshot(), None));
                self.dirty = false;
                self.not_before = started + started.elapsed() * SAVE_COST_RATIO;
            }
            // The writer is still busy with the previous state: look again shortly, not in a spin.
            Err(mpsc::error::TrySendError::Full(())) => self.not_before = started + WRITER_BUSY_RETRY,
            Err(mpsc::error::TrySendError::Closed(())) => self.dirty = false,
        }
    }

    /// Waits until the writer has room and hands the current state over; `written` hears when it is
    /// stored (or dropped, if it cannot be).
    async fn save_now(&mut self, acd: &Acd, written: oneshot::Sender<()>) {
        if let Ok(slot) = self.pending.reserve().await {
            slot.send((acd.snapshot(), Some(written)));
            self.dirty = false;
        }
    }

    /// Waits until the writer has room, hands the last state over and lets the writer finish.
    async fn flush(self, acd: &Acd) {
        if self.dirty
            && let Ok(slot) = self.pending.reserve().await
        {
            slot.send((acd.snapshot(), None));
        }
        // Closing the channel ends the writer once it has written what it holds.
        drop(self.pending);
        let _ = self.writer.await;
    }
}

async fn save(persist: &Persistence, state: &[u8]) {
    let written = persist
        .store
        .put_blob(
            ACD_STATE_NAMESPACE,
            &persist.key,
            state,
            &state_store::BlobWrite::new(),
            Timestamp::now_utc(),
        )
        .await;
    if let Err(error) = written {
        warn!(%error, "the ACD state could not be saved");
    }
}

async fn run(
    mut acd: Acd,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    mut publish: Publish,
    mut calls: HashMap<CallId, mpsc::UnboundedSender<QueueNotice>>,
) {
    // KPIs are computed at most every KPI_REFRESH, and only when something happened since (plus
    // once a second, so oldest-wait figures keep moving on a quiet wallboard).
    let mut refresh = tokio::time::interval(KPI_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    let mut ticks = 0u32;
    // Outputs of the start (a restore settling its calls) go out before anything new comes in.
    route_outputs(&mut acd, &publish, &calls, None);
    if let Some(saver) = &mut publish.saver {
        saver.dirty = true;
        saver.offer(&acd);
    }
    loop {
        let deadline = acd.next_deadline().map(|d| {
            let wait = d.since(Timestamp::now_utc());
            tokio::time::Instant::now() + wait
        });
        // A change not saved yet because the last copy was recent is saved when the spacing is over.
        let save_at = publish.saver.as_ref().filter(|s| s.dirty).map(|s| s.not_before);
        let msg = tokio::select! {
            _ = refresh.tick() => {
                ticks = ticks.wrapping_add(1);
                let period = (Duration::from_secs(1).as_millis() / KPI_REFRESH.as_millis()).max(1) as u32;
                if dirty || ticks.is_multiple_of(period) {
                    let snapshot = acd.kpis(Timestamp::now_utc());
                    if let Some(m) = &publish.metrics {
                        m.update(&snapshot);
                    }
                    publish.kpis.send_replace(Arc::new(snapshot));
                    dirty = false;
                }
                if let Some(saver) = &mut publish.saver {
                    saver.offer(&acd);
                }
                continue;
            }
            m = rx.recv() => match m { Some(m) => Some(m), None => break },
            _ = async {
                match save_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending::<()>().await,
                }
            } => {
                if let Some(saver) = &mut publish.saver {
                    saver.offer(&acd);
                }
                continue;
            }
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending::<()>().await,
                }
            } => None,
        };
        let now = Timestamp::now_utc();
        let mut abandon_reply = None;
        let mut changed = true;
        match msg {
            Some(Msg::Abandon { call, reply }) => {
                if let Err(e) = acd.handle(now, Input::CallAbandoned { call: call.clone() }) {
                    debug!(error = %e, "ACD refused an abandon");
                }
                calls.remove(&call);
                abandon_reply = Some((call, reply));
            }
            Some(Msg::Input(input)) => {
                if let Err(e) = acd.handle(now, input) {
                    debug!(error = %e, "ACD refused an input");
                }
            }
            Some(Msg::Request(input, reply)) => {
                let _ = reply.send(acd.handle(now, input));
            }
            Some(Msg::Register { call, notices }) => {
                calls.insert(call, notices);
                changed = false;
            }
            Some(Msg::Forget { call }) => {
                calls.remove(&call);
                changed = false;
            }
            Some(Msg::Kpis(reply)) => {
                changed = false;
                let _ = reply.send(acd.kpis(now));
            }
            Some(Msg::Save(written)) => {
                changed = false;
                match &mut publish.saver {
                    Some(saver) => saver.save_now(&acd, written).await,
                    None => drop(written),
                }
            }
            None => {
                if let Err(e) = acd.handle(now, Input::Tick) {
                    warn!(error = %e, "ACD tick failed");
                }
            }
        }
        dirty |= changed;
        route_outputs(&mut acd, &publish, &calls, abandon_reply);
        if let Some(saver) = &mut publish.saver {
            saver.dirty |= changed;
            saver.offer(&acd);
        }
    }
    if let Some(saver) = publish.saver.take() {
        saver.flush(&acd).await;
    }
}

type AbandonReply = (CallId, oneshot::Sender<Option<Abandonment>>);

/// Carries out the router's outputs: offers and the like to their call's task, agent state changes
/// to the broadcast, an abandon's position to whoever asked.
fn route_outputs(
    acd: &mut Acd,
    publish: &Publish,
    calls: &HashMap<CallId, mpsc::UnboundedSender<QueueNotice>>,
    mut abandon_reply: Option<AbandonReply>,
) {
    while let Some(output) = acd.poll_output() {
        debug!(%output, "acd");
        if let Output::Abandoned {
            call,
            queue,
            position,
            waited_ms,
        } = &output
        {
            if let Some((_, reply)) = abandon_reply.take_if(|(c, _)| c == call) {
                let _ = reply.send(Some(Abandonment {
                    queue: queue.clone(),
                    position: *position,
                    waited_ms: *waited_ms,
                }));
            }
            continue;
        }
        if let Output::AgentStateChanged { agent, from, to, at } = output {
            // Nobody listening is fine: no desktop is attached.
            let _ = publish.states.send(AgentStateEvent { agent, from, to, at });
            continue;
        }
        let (call, notice) = match output {
            Output::Offer(offer) => (offer.call.clone(), QueueNotice::Offer(offer)),
            Output::OfferCancelled {
                call, agent, reason, ..
            } => (
                call,
                QueueNotice::OfferCancelled {
                    agent,
                    reason: format!("{reason:?}"),
                },
            ),
            Output::Announce {
                call,
                position,
                estimated_wait_secs,
                ..
            } => (
                call,
                QueueNotice::Position {
                    position,
                    estimated_wait_secs,
                },
            ),
            Output::Overflowed {
                call, target, reason, ..
            } => (
                call,
                QueueNotice::Overflowed {
                    target: format!("{target:?}"),
                    reason: format!("{reason:?}"),
                },
            ),
            _ => continue,
        };
        if let Some(tx) = calls.get(&call) {
            let _ = tx.send(notice);
        }
    }
}
