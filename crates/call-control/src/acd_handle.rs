//! The one seam through which call control reaches the ACD. [`AcdHandle`] is either the in-process
//! router ([`LocalAcd`], the memory backend: one process, one router task) or the cluster's router
//! ([`routing::RouterClient`], the Redis backend: every node runs a leader candidate and talks to
//! whichever leads through the state store). Both have the same methods and share the notice types
//! ([`QueueNotice`], [`AgentStateEvent`], [`Abandonment`], defined in `acd`), so a call, a desktop
//! or a campaign does not know which one it talks to.
//!
//! The ACD's view is the one truth of which agent is on which call: [`AcdHandle::agent_call`] reads
//! it (from the live KPIs the owner publishes); nothing else keeps a copy.

pub use crate::acd_task::{Abandonment, AgentStateEvent, QueueNotice};
use crate::acd_task::{LocalAcd, Persistence, ResumeError, ResumeReport};
use acd::{AcdConfig, AcdError, AgentKpi, AgentState, CallRequest, HeldCall, Input, KpiSnapshot};
use domain::{AgentId, CallId, QueueId};
use std::sync::Arc;
use tokio::sync::{broadcast, mpsc, watch};

/// Call control's handle on the ACD, local or cluster-wide. Cheap to clone.
#[derive(Clone)]
pub enum AcdHandle {
    /// The router runs in this process (memory backend).
    Local(LocalAcd),
    /// The cluster's router, led by whichever node holds its lease (Redis backend).
    Cluster(routing::RouterClient),
}

impl From<LocalAcd> for AcdHandle {
    fn from(local: LocalAcd) -> Self {
        AcdHandle::Local(local)
    }
}

impl From<routing::RouterClient> for AcdHandle {
    fn from(client: routing::RouterClient) -> Self {
        AcdHandle::Cluster(client)
    }
}

impl AcdHandle {
    /// An in-process router with `config`, keeping nothing between restarts (see [`LocalAcd::start`]).
    pub fn start(
        config: AcdConfig,
        agents_ready: bool,
        metrics: Option<crate::kpi_metrics::AcdMetrics>,
    ) -> Result<AcdHandle, acd::ConfigError> {
        LocalAcd::start(config, agents_ready, metrics).map(AcdHandle::Local)
    }

    /// An in-process router continuing from the state saved in `persist` (see [`LocalAcd::resume`]).
    pub async fn resume(
        config: AcdConfig,
        agents_ready: bool,
        metrics: Option<crate::kpi_metrics::AcdMetrics>,
        persist: Persistence,
        keep: impl FnMut(&HeldCall) -> Option<mpsc::UnboundedSender<QueueNotice>>,
    ) -> Result<(AcdHandle, ResumeReport), ResumeError> {
        let (local, report) = LocalAcd::resume(config, agents_ready, metrics, persist, keep).await?;
        Ok((AcdHandle::Local(local), report))
    }

    /// This node's id in the cluster (unique per process), on the cluster's router.
    pub fn cluster_node(&self) -> Option<String> {
        match self {
            AcdHandle::Local(_) => None,
            AcdHandle::Cluster(c) => Some(c.node().to_string()),
        }
    }

    /// Whether this is the cluster's router.
    pub fn is_cluster(&self) -> bool {
        matches!(self, AcdHandle::Cluster(_))
    }

    /// Feeds one input to the router.
    pub fn input(&self, input: Input) {
        match self {
            AcdHandle::Local(a) => a.input(input),
            AcdHandle::Cluster(c) => c.input(input),
        }
    }

    /// Feeds one input and says whether the router took it (an illegal agent transition is refused
    /// with the reason and changes nothing).
    pub async fn request(&self, input: Input) -> Result<(), AcdError> {
        match self {
            AcdHandle::Local(a) => a.request(input).await,
            AcdHandle::Cluster(c) => c.request(input).await,
        }
    }

    /// Every agent state change from now on (the whole cluster's, on the cluster's router).
    pub fn subscribe_agent_states(&self) -> broadcast::Receiver<AgentStateEvent> {
        match self {
            AcdHandle::Local(a) => a.subscribe_agent_states(),
            AcdHandle::Cluster(c) => c.subscribe_agent_states(),
        }
    }

    /// The live KPIs as last published (every queue and agent of the cluster on its router).
    pub fn live_kpis(&self) -> watch::Receiver<Arc<KpiSnapshot>> {
        match self {
            AcdHandle::Local(a) => a.live_kpis(),
            AcdHandle::Cluster(c) => c.live_kpis(),
        }
    }

    /// Enqueues a call held by this process; its notices arrive on the returned receiver.
    pub fn enqueue(&self, request: CallRequest) -> mpsc::UnboundedReceiver<QueueNotice> {
        match self {
            AcdHandle::Local(a) => a.enqueue(request),
            AcdHandle::Cluster(c) => c.enqueue(request),
        }
    }

    /// Enqueues a call unless the router holds it already (a callback another node may still hold);
    /// its notices arrive on the returned receiver.
    pub async fn enqueue_new(
        &self,
        request: CallRequest,
    ) -> Result<mpsc::UnboundedReceiver<QueueNotice>, AcdError> {
        match self {
            // One process: nobody else can hold the call.
            AcdHandle::Local(a) => Ok(a.enqueue(request)),
            AcdHandle::Cluster(c) => c.enqueue_new(request).await,
        }
    }

    /// The call is gone from the queue's point of view (ended or left).
    pub fn forget(&self, call: CallId) {
        match self {
            AcdHandle::Local(a) => a.forget(call),
            AcdHandle::Cluster(c) => c.forget(call),
        }
    }

    /// The caller hung up while queued: the ACD records it and says where they were.
    pub async fn abandon(&self, call: CallId) -> Option<Abandonment> {
        match self {
            AcdHandle::Local(a) => a.abandon(call).await,
            AcdHandle::Cluster(c) => c.abandon(call).await,
        }
    }

    /// Returns once the router's state is stored: written (local, with persistence), or everything
    /// this node sent applied and journaled by the leader (cluster).
    pub async fn save_now(&self) {
        match self {
            AcdHandle::Local(a) => a.save_now().await,
            AcdHandle::Cluster(c) => c.save_now().await,
        }
    }

    /// Live KPIs of every queue and agent, fresh from the router.
    pub async fn kpis(&self) -> Option<KpiSnapshot> {
        match self {
            AcdHandle::Local(a) => a.kpis().await,
            AcdHandle::Cluster(c) => c.kpis().await,
        }
    }

    /// Waiting calls, available agents and estimated wait of one queue.
    pub async fn queue_state(&self, queue: &QueueId) -> Option<(u32, u32, Option<u64>)> {
        match self {
            AcdHandle::Local(a) => a.queue_state(queue).await,
            AcdHandle::Cluster(c) => c.queue_state(queue).await,
        }
    }

    /// The agent's state in the router now, as last published.
    pub fn agent_state(&self, agent: &AgentId) -> Option<AgentState> {
        self.live_kpis()
            .borrow()
            .agents
            .iter()
            .find(|a| &a.agent == agent)
            .map(|a| a.state.clone())
    }

    /// The call the router has tied to `agent` (offered or connected), as last published: the one
    /// truth of who talks to whom.
    pub fn agent_call(&self, agent: &AgentId) -> Option<CallId> {
        self.live_kpis()
            .borrow()
            .agents
            .iter()
            .find(|a| &a.agent == agent)
            .and_then(|a| a.call.clone())
    }

    /// The agent as the router sees them now (asked fresh, not the last published KPIs).
    pub async fn agent_now(&self, agent: &AgentId) -> Option<AgentKpi> {
        self.kpis().await?.agents.into_iter().find(|a| &a.agent == agent)
    }

    /// Whether the router has the agent ringing for a call or on one (queued or placed by the
    /// agent); after-call work does not count.
    pub async fn agent_busy(&self, agent: &AgentId) -> bool {
        self.agent_now(agent)
            .await
            .is_some_and(|a| a.call.is_some() || matches!(a.state, AgentState::Reserved | AgentState::OnCall))
    }

    /// Whether the router ties the agent to a call other than `call`: ringing, connected (queued
    /// or placed) or in that call's after-call work. A late step of an older call (its disposition,
    /// putting the agent back) must not touch a newer one.
    pub async fn agent_has_other_call(&self, agent: &AgentId, call: &CallId) -> bool {
        self.agent_now(agent)
            .await
            .is_some_and(|a| a.call.iter().chain(a.wrap_up_call.iter()).any(|c| c != call))
    }

    /// Logs in every agent of `agents` who is logged out (SIP-phone agents ready at start). On the
    /// cluster's router an agent already in another state stays as they are.
    pub fn log_in(&self, agents: impl IntoIterator<Item = AgentId>) {
        for agent in agents {
            self.input(Input::AgentLogin { agent });
        }
    }

    /// Keeps `metrics` up to date with the cluster's KPIs as the leader publishes them (the local
    /// router updates its metrics itself).
    pub fn feed_metrics(&self, metrics: crate::kpi_metrics::AcdMetrics) {
        let AcdHandle::Cluster(c) = self else {
            return;
        };
        let mut kpis = c.live_kpis();
        tokio::spawn(async move {
            loop {
                let now = kpis.borrow_and_update().clone();
                metrics.update(&now);
                if kpis.changed().await.is_err() {
                    break;
                }
            }
        });
    }

    /// Leaves the router: the local one writes its state; a cluster node waits until what it sent is
    /// applied, then withdraws its liveness record (the leader lets go of calls still held here).
    pub async fn shutdown(&self) {
        match self {
            AcdHandle::Local(a) => a.save_now().await,
            AcdHandle::Cluster(c) => c.clone().shutdown().await,
        }
    }
}
