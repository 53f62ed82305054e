//! The ACD owner task: the one place the pure `acd::Acd` router runs. Calls and agents send it inputs;
//! it feeds them to the router with the current time, wakes it at its next deadline, and routes each
//! output to the call it concerns. Offers go to the call's task, which rings the agent. Agent state
//! changes are broadcast (agent desktops follow them) and the live KPIs are kept in a watch channel
//! that the wallboard reads, refreshed at most every [`KPI_REFRESH`] when something changed.

use acd::{Acd, AcdConfig, AcdError, AgentState, Input, KpiSnapshot, Output};
use domain::{AgentId, CallId, QueueId, Timestamp};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tracing::{debug, warn};

/// How often the published KPIs are refreshed while events arrive (the wallboard's latency).
pub const KPI_REFRESH: Duration = Duration::from_millis(250);

/// An agent's state changed in the router.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentStateEvent {
    pub agent: AgentId,
    pub from: AgentState,
    pub to: AgentState,
    pub at: Timestamp,
}

/// What a waiting call hears from the ACD.
#[derive(Debug, Clone)]
pub enum QueueNotice {
    /// Ring these agents (several for ring-all); the explanation says why.
    Offer(acd::Offer),
    /// Stop ringing this agent (no answer in time, answered elsewhere, ...).
    OfferCancelled { agent: AgentId, reason: String },
    /// Position and estimated wait, for announcements.
    Position {
        position: u32,
        estimated_wait_secs: Option<u64>,
    },
    /// The queue sent the call elsewhere.
    Overflowed { target: String, reason: String },
}

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
    Abandon {
        call: CallId,
        reply: oneshot::Sender<Option<Abandonment>>,
    },
}

/// Where a caller was when they hung up in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abandonment {
    pub queue: QueueId,
    pub position: u32,
    pub waited_ms: u64,
}

/// Sends inputs to the ACD task. Cheap to clone.
#[derive(Clone)]
pub struct AcdHandle {
    tx: mpsc::UnboundedSender<Msg>,
    states: broadcast::Sender<AgentStateEvent>,
    kpis: watch::Receiver<Arc<KpiSnapshot>>,
}

impl AcdHandle {
    /// Starts the task with `config`; every configured agent is logged in and ready when
    /// `agents_ready` (SIP-phone agents without a desktop session).
    pub fn start(
        config: AcdConfig,
        agents_ready: bool,
        metrics: Option<crate::kpi_metrics::AcdMetrics>,
    ) -> Result<AcdHandle, acd::ConfigError> {
        let agents: Vec<AgentId> = config.agents.iter().map(|a| a.id.clone()).collect();
        let acd = Acd::new(config)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (states, _) = broadcast::channel(1024);
        let (kpi_tx, kpis) = watch::channel(Arc::new(acd.kpis(Timestamp::now_utc())));
        let publish = Publish {
            states: states.clone(),
            kpis: kpi_tx,
            metrics,
        };
        tokio::spawn(run(acd, rx, publish));
        let handle = AcdHandle { tx, states, kpis };
        if agents_ready {
            // Logging in makes an agent available at once.
            for agent in agents {
                handle.input(Input::AgentLogin { agent });
            }
        }
        Ok(handle)
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
    /// changes is told it lagged and should re-read the states from [`AcdHandle::live_kpis`].
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
}

async fn run(mut acd: Acd, mut rx: mpsc::UnboundedReceiver<Msg>, publish: Publish) {
    // KPIs are computed at most every KPI_REFRESH, and only when something happened since (plus
    // once a second, so oldest-wait figures keep moving on a quiet wallboard).
    let mut refresh = tokio::time::interval(KPI_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    let mut ticks = 0u32;
    let mut calls: HashMap<CallId, mpsc::UnboundedSender<QueueNotice>> = HashMap::new();
    loop {
        let deadline = acd.next_deadline().map(|d| {
            let wait = d.since(Timestamp::now_utc());
            tokio::time::Instant::now() + wait
        });
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
                continue;
            }
            m = rx.recv() => match m { Some(m) => Some(m), None => break },
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending::<()>().await,
                }
            } => None,
        };
        let now = Timestamp::now_utc();
        let mut abandon_reply = None;
        dirty = true;
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
            }
            Some(Msg::Forget { call }) => {
                calls.remove(&call);
            }
            Some(Msg::Kpis(reply)) => {
                dirty = false;
                let _ = reply.send(acd.kpis(now));
            }
            None => {
                if let Err(e) = acd.handle(now, Input::Tick) {
                    warn!(error = %e, "ACD tick failed");
                }
            }
        }
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
}
