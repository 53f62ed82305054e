//! The ACD owner task: the one place the pure `acd::Acd` router runs. Calls and agents send it inputs;
//! it feeds them to the router with the current time, wakes it at its next deadline, and routes each
//! output to the call it concerns. Offers go to the call's task, which rings the agent.

use acd::{Acd, AcdConfig, Input, KpiSnapshot, Output};
use domain::{AgentId, CallId, QueueId, Timestamp};
use std::collections::HashMap;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

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
        tokio::spawn(run(acd, rx, metrics));
        let handle = AcdHandle { tx };
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

async fn run(
    mut acd: Acd,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    metrics: Option<crate::kpi_metrics::AcdMetrics>,
) {
    // KPIs go to the metrics once a second, not on every event.
    let mut publish = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut calls: HashMap<CallId, mpsc::UnboundedSender<QueueNotice>> = HashMap::new();
    loop {
        let deadline = acd.next_deadline().map(|d| {
            let wait = d.since(Timestamp::now_utc());
            tokio::time::Instant::now() + wait
        });
        let msg = tokio::select! {
            _ = publish.tick(), if metrics.is_some() => {
                if let Some(m) = &metrics {
                    m.update(&acd.kpis(Timestamp::now_utc()));
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
            Some(Msg::Register { call, notices }) => {
                calls.insert(call, notices);
            }
            Some(Msg::Forget { call }) => {
                calls.remove(&call);
            }
            Some(Msg::Kpis(reply)) => {
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
