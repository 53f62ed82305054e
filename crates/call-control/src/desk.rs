//! The link between calls and agent desktops. An agent's desktop (the CTI WebSocket in
//! `agent-desk`) attaches here; a call offered to that agent shows up on it with a screen pop, and
//! the agent's commands (reject, hang up, hold, transfer, wrap-up) reach the call's own task through
//! a channel the call registered. The hub checks that an agent only ever acts on a call of their own.
//!
//! It holds no call logic: calls decide what a command means in their state and answer through the
//! reply channel that comes with it. On a cluster a [`crate::desk_relay::DeskRelay`] carries the
//! events of this node's calls to desktops on other nodes, and their commands back.

pub use call_session::desk::{
    AgentCommand, AgentMedia, CallPhase, CallbackRequest, CampaignWrapUp, CommandResult, DialNumber, Refusal,
    SuperviseMode, TransferTarget,
};
use domain::{AgentId, CallId, Pii, QueueId, Timestamp};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the agent sees when a call is offered: who calls, what the CRM knows of them, what they did
/// in the IVR, and why the router chose this agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScreenPop {
    pub call: CallId,
    /// Inbound (offered by the ACD) or outbound (placed by the agent).
    pub direction: domain::Direction,
    /// The queue that offered it (none for agent-placed calls).
    pub queue: Option<QueueId>,
    pub caller: Pii<String>,
    pub called: Pii<String>,
    /// How long the caller had waited in the queue when offered.
    pub waited_ms: u64,
    pub explanation: String,
    /// The customer record with their latest interactions, when the caller is known.
    pub customer: Option<crm_store::CustomerCard>,
    /// What the caller entered in the IVR (never sensitive digits).
    pub ivr: Option<IvrPop>,
    /// The campaign and lead of a campaign call (the wrap-up may then ask for a callback or not to
    /// call again).
    pub campaign: Option<CampaignPop>,
}

/// The campaign a call belongs to, as the desktop shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignPop {
    pub campaign: domain::CampaignId,
    pub lead: domain::LeadId,
}

/// The caller's IVR session as the agent sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IvrPop {
    pub flow: String,
    pub node: String,
    pub language: String,
    pub variables: BTreeMap<String, ivr::Value>,
}

/// A call tied to an agent, as a desktop that attaches (or re-attaches) is told.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallView {
    pub phase: CallPhase,
    pub since: Timestamp,
    pub pop: Arc<ScreenPop>,
}

/// A lead a preview campaign shows an agent before they dial it (or skip it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewOffer {
    pub campaign: domain::CampaignId,
    pub lead: domain::LeadId,
    pub name: Option<Pii<String>>,
    pub phone: Pii<String>,
    /// The attempt the dial would be (1 for a lead never called).
    pub attempt: u32,
    /// A callback an agent promised.
    pub callback: bool,
    /// The linked customer's record with their latest interactions.
    pub customer: Option<crm_store::CustomerCard>,
}

/// Something an agent's desktop is told.
#[derive(Debug, Clone, PartialEq)]
pub enum DeskEvent {
    /// A call is offered to the agent.
    Offered(Arc<ScreenPop>),
    /// The offer is over without the agent taking it (no answer, taken elsewhere, caller gone).
    OfferWithdrawn { call: CallId, reason: String },
    /// The call's phase changed (connected, held, resumed, wrap-up).
    Phase { call: CallId, phase: CallPhase },
    /// The call is over for this agent, disposition saved or wrap-up time over.
    Released { call: CallId },
    /// The browser softphone's SDP answer for a call the agent accepted.
    MediaAnswer { call: CallId, sdp: String },
    /// Another desktop of the same agent took over (a second tab or a reload).
    Replaced,
    /// A preview campaign offers a lead to look at and dial or skip.
    Preview(Arc<PreviewOffer>),
    /// The preview is gone (the agent left ready, the campaign paused, ...).
    PreviewWithdrawn {
        campaign: domain::CampaignId,
        lead: domain::LeadId,
        reason: String,
    },
}

/// A command with the channel its answer goes back on.
#[derive(Debug)]
pub struct CommandRequest {
    pub agent: AgentId,
    pub command: AgentCommand,
    pub reply: oneshot::Sender<CommandResult>,
}

/// One attached desktop: what it receives, and the calls the agent had when it attached.
pub struct Attachment {
    pub generation: u64,
    pub events: mpsc::UnboundedReceiver<DeskEvent>,
    pub calls: Vec<CallView>,
    /// The lead a preview campaign shows the agent, if any.
    pub preview: Option<Arc<PreviewOffer>>,
}

struct Desk {
    generation: u64,
    media: AgentMedia,
    events: mpsc::UnboundedSender<DeskEvent>,
}

struct Link {
    agent: AgentId,
    view: CallView,
    commands: mpsc::UnboundedSender<CommandRequest>,
}

#[derive(Default)]
struct Hub {
    desks: HashMap<AgentId, Desk>,
    /// Keyed by call and agent: ring-all offers one call to several agents at once.
    calls: HashMap<(CallId, AgentId), Link>,
    previews: HashMap<AgentId, Arc<PreviewOffer>>,
    /// This node's campaign runners, for agents' preview decisions (from here or relayed).
    campaigns: HashMap<domain::CampaignId, crate::CampaignHandle>,
    next_generation: u64,
}

/// The registry of attached desktops and of calls tied to agents. Cheap to clone.
#[derive(Clone, Default)]
pub struct DeskHub {
    hub: Arc<Mutex<Hub>>,
    relay: Arc<std::sync::OnceLock<Arc<crate::desk_relay::DeskRelay>>>,
}

impl DeskHub {
    pub fn new() -> Self {
        Self::default()
    }

    /// Joins the desktops of a cluster: this node's call events reach desktops on other nodes, and
    /// their commands reach this node's calls (see [`crate::desk_relay`]). `node` must be unique
    /// in the cluster.
    pub async fn join_cluster(
        &self,
        store: state_store::StateStore,
        node: String,
    ) -> Result<(), state_store::StateError> {
        let relay = crate::desk_relay::DeskRelay::start(store, node, self.clone()).await?;
        let _ = self.relay.set(relay);
        Ok(())
    }

    /// Leaves the cluster's desk relay (a drained node whose calls are over): its command and reply
    /// streams are deleted.
    pub async fn leave_cluster(&self) {
        if let Some(relay) = self.relay.get() {
            relay.leave().await;
        }
    }

    fn publish(&self, agent: &AgentId, event: &DeskEvent, now: Timestamp) {
        if let Some(relay) = self.relay.get() {
            relay.publish(agent, event, now);
        }
    }

    /// Tells the agent's desktop attached to this node, if any (events of other nodes' calls).
    pub(crate) fn notify_local(&self, agent: &AgentId, event: DeskEvent) {
        if let Some(d) = self.hub.lock().desks.get(agent) {
            let _ = d.events.send(event);
        }
    }

    /// On a cluster, the node holding `call` (this one or another, as far as this node has heard);
    /// None in one process.
    pub fn call_node(&self, call: &CallId) -> Option<String> {
        let relay = self.relay.get()?;
        let here = self.hub.lock().calls.keys().any(|(c, _)| c == call);
        if here {
            Some(relay.node().to_string())
        } else {
            relay
                .all_remote()
                .into_iter()
                .find(|r| &r.view.pop.call == call)
                .map(|r| r.node)
        }
    }

    /// Whether this node holds `call` for `agent`.
    pub(crate) fn holds(&self, call: &CallId, agent: &AgentId) -> bool {
        self.hub.lock().calls.contains_key(&(call.clone(), agent.clone()))
    }

    /// Attaches the agent's desktop, replacing any earlier one (which is told [`DeskEvent::Replaced`]).
    pub fn attach(&self, agent: &AgentId, media: AgentMedia) -> Attachment {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut hub = self.hub.lock();
        hub.next_generation += 1;
        let generation = hub.next_generation;
        let old = hub.desks.insert(
            agent.clone(),
            Desk {
                generation,
                media,
                events: tx,
            },
        );
        if let Some(old) = old {
            let _ = old.events.send(DeskEvent::Replaced);
        }
        if let Some(relay) = self.relay.get() {
            relay.publish_desk(agent, Some(media));
        }
        let calls = self.calls_in(&hub, agent);
        Attachment {
            generation,
            events: rx,
            calls,
            preview: hub.previews.get(agent).cloned(),
        }
    }

    /// Every call tied to `agent`, on this node or (on a cluster) another, oldest first: what the
    /// agent's desktop shows wherever it is attached. Customer access is decided on this.
    pub fn calls_of(&self, agent: &AgentId) -> Vec<CallView> {
        let hub = self.hub.lock();
        self.calls_in(&hub, agent)
    }

    fn calls_in(&self, hub: &Hub, agent: &AgentId) -> Vec<CallView> {
        let mut calls: Vec<CallView> = hub
            .calls
            .values()
            .filter(|l| &l.agent == agent)
            .map(|l| l.view.clone())
            .collect();
        if let Some(relay) = self.relay.get() {
            calls.extend(relay.remote_calls(agent));
        }
        calls.sort_by_key(|c| c.since);
        calls
    }

    /// The preview campaign's lead shown to `agent`, if any.
    pub fn preview_of(&self, agent: &AgentId) -> Option<Arc<PreviewOffer>> {
        self.hub.lock().previews.get(agent).cloned()
    }

    /// Shows the agent a preview campaign's lead (kept for a desktop that attaches later), on
    /// whichever node of a cluster their desktop is attached to.
    pub fn offer_preview(&self, agent: &AgentId, offer: Arc<PreviewOffer>) {
        if let Some(relay) = self.relay.get() {
            relay.publish_preview(agent, &offer);
        }
        self.offer_preview_here(agent, offer);
    }

    pub(crate) fn offer_preview_here(&self, agent: &AgentId, offer: Arc<PreviewOffer>) {
        let mut hub = self.hub.lock();
        hub.previews.insert(agent.clone(), offer.clone());
        if let Some(d) = hub.desks.get(agent) {
            let _ = d.events.send(DeskEvent::Preview(offer));
        }
    }

    /// The agent's preview is over: dialled (quietly), or withdrawn with a reason they are told
    /// (on whichever node their desktop is attached to).
    pub fn end_preview(&self, agent: &AgentId, withdrawn: Option<&str>) {
        if let Some(offer) = self.end_preview_here(agent, withdrawn)
            && let Some(relay) = self.relay.get()
        {
            relay.publish_preview_end(agent, &offer, withdrawn);
        }
    }

    pub(crate) fn end_preview_here(
        &self,
        agent: &AgentId,
        withdrawn: Option<&str>,
    ) -> Option<Arc<PreviewOffer>> {
        let mut hub = self.hub.lock();
        let offer = hub.previews.remove(agent)?;
        if let (Some(reason), Some(d)) = (withdrawn, hub.desks.get(agent)) {
            let _ = d.events.send(DeskEvent::PreviewWithdrawn {
                campaign: offer.campaign.clone(),
                lead: offer.lead.clone(),
                reason: reason.to_string(),
            });
        }
        Some(offer)
    }

    /// Lets agents' preview decisions reach this node's runner of `campaign`.
    pub(crate) fn register_campaign(&self, campaign: crate::CampaignHandle) {
        self.hub.lock().campaigns.insert(campaign.id.clone(), campaign);
    }

    /// An agent's decision on the lead previewed to them: taken to the runner that previewed it,
    /// on this node or (on a cluster) the node that dials the campaign.
    pub async fn preview(
        &self,
        agent: &AgentId,
        campaign: &domain::CampaignId,
        lead: domain::LeadId,
        choice: crate::PreviewChoice,
    ) -> Result<(), Refusal> {
        if let Some(relay) = self.relay.get()
            && let Some(node) = relay.preview_origin(agent, campaign, &lead)
        {
            return relay.preview(&node, agent, campaign, lead, choice).await;
        }
        self.preview_here(agent, campaign, lead, choice).await
    }

    pub(crate) async fn preview_here(
        &self,
        agent: &AgentId,
        campaign: &domain::CampaignId,
        lead: domain::LeadId,
        choice: crate::PreviewChoice,
    ) -> Result<(), Refusal> {
        let handle = self.hub.lock().campaigns.get(campaign).cloned();
        let Some(handle) = handle else {
            return Err(Refusal::new("no_preview", "no such campaign runs on this node"));
        };
        handle.preview(agent.clone(), lead, choice).await
    }

    /// Detaches the desktop of `generation` (a later one that replaced it stays).
    pub fn detach(&self, agent: &AgentId, generation: u64) {
        let mut hub = self.hub.lock();
        if hub.desks.get(agent).is_some_and(|d| d.generation == generation) {
            hub.desks.remove(agent);
            if let Some(relay) = self.relay.get() {
                relay.publish_desk(agent, None);
            }
        }
    }

    /// The agent's desktop attached to another node: the one here, if any, is replaced.
    pub(crate) fn replaced_elsewhere(&self, agent: &AgentId) {
        if let Some(old) = self.hub.lock().desks.remove(agent) {
            let _ = old.events.send(DeskEvent::Replaced);
        }
    }

    /// How the agent takes calls, if a desktop is attached (on a cluster, to any node).
    pub fn desk_media(&self, agent: &AgentId) -> Option<AgentMedia> {
        let here = self.hub.lock().desks.get(agent).map(|d| d.media);
        here.or_else(|| self.relay.get().and_then(|r| r.remote_desk(agent)))
    }

    /// Every call tied to an agent, on this node or (on a cluster) another: the agent, the call's
    /// phase and since when (the wallboard tells held calls from talking ones).
    pub fn phases(&self) -> Vec<(AgentId, CallPhase, Timestamp)> {
        let mut phases: Vec<_> = self
            .hub
            .lock()
            .calls
            .values()
            .map(|l| (l.agent.clone(), l.view.phase, l.view.since))
            .collect();
        if let Some(relay) = self.relay.get() {
            phases.extend(
                relay
                    .all_remote()
                    .into_iter()
                    .map(|r| (r.agent, r.view.phase, r.view.since)),
            );
        }
        phases
    }

    /// Tells the agent's desktop, wherever it is attached (on a cluster, the relay carries what
    /// concerns a call, e.g. the browser's SDP answer, to the other nodes).
    pub fn notify(&self, agent: &AgentId, event: DeskEvent) {
        self.publish(agent, &event, Timestamp::now_utc());
        self.notify_local(agent, event);
    }

    /// Ties a call to an agent (when it is offered) and tells their desktop.
    pub fn offer(
        &self,
        agent: &AgentId,
        pop: Arc<ScreenPop>,
        commands: mpsc::UnboundedSender<CommandRequest>,
        now: Timestamp,
    ) {
        let key = (pop.call.clone(), agent.clone());
        let mut hub = self.hub.lock();
        hub.calls.insert(
            key,
            Link {
                agent: agent.clone(),
                view: CallView {
                    phase: CallPhase::Offered,
                    since: now,
                    pop: pop.clone(),
                },
                commands,
            },
        );
        if let Some(d) = hub.desks.get(agent) {
            let _ = d.events.send(DeskEvent::Offered(pop.clone()));
        }
        drop(hub);
        self.publish(agent, &DeskEvent::Offered(pop), now);
    }

    /// The call moved on for its agent; their desktop is told.
    pub fn set_phase(&self, call: &CallId, agent: &AgentId, phase: CallPhase, now: Timestamp) {
        let mut hub = self.hub.lock();
        let Some(link) = hub.calls.get_mut(&(call.clone(), agent.clone())) else {
            return;
        };
        link.view.phase = phase;
        link.view.since = now;
        let event = DeskEvent::Phase {
            call: call.clone(),
            phase,
        };
        if let Some(d) = hub.desks.get(agent) {
            let _ = d.events.send(event.clone());
        }
        drop(hub);
        self.publish(agent, &event, now);
    }

    /// The offer to `agent` ended without them taking it.
    pub fn withdraw(&self, call: &CallId, agent: &AgentId, reason: &str) {
        let mut hub = self.hub.lock();
        if hub.calls.remove(&(call.clone(), agent.clone())).is_none() {
            return;
        }
        let event = DeskEvent::OfferWithdrawn {
            call: call.clone(),
            reason: reason.to_string(),
        };
        if let Some(d) = hub.desks.get(agent) {
            let _ = d.events.send(event.clone());
        }
        drop(hub);
        self.publish(agent, &event, Timestamp::now_utc());
    }

    /// The call is no longer the agent's business.
    pub fn release(&self, call: &CallId, agent: &AgentId) {
        let mut hub = self.hub.lock();
        if hub.calls.remove(&(call.clone(), agent.clone())).is_none() {
            return;
        }
        if let Some(d) = hub.desks.get(agent) {
            let _ = d.events.send(DeskEvent::Released { call: call.clone() });
        }
        drop(hub);
        self.publish(
            agent,
            &DeskEvent::Released { call: call.clone() },
            Timestamp::now_utc(),
        );
    }

    /// Passes an agent's command to their call and waits for its answer, wherever the call is held
    /// (on a cluster, another node's call is reached through the relay). An agent cannot act on a
    /// call that is not theirs: `not_your_call`, whatever the call is.
    pub async fn command(&self, agent: &AgentId, call: &CallId, command: AgentCommand) -> CommandResult {
        if !self.holds(call, agent)
            && let Some(relay) = self.relay.get()
            && let Some(remote) = relay.remote(call, agent)
        {
            return relay.command(&remote.node, agent, call, command).await;
        }
        self.command_here(agent, call, command).await
    }

    /// Passes an agent's command to their call held on this node and waits for its answer.
    pub(crate) async fn command_here(
        &self,
        agent: &AgentId,
        call: &CallId,
        command: AgentCommand,
    ) -> CommandResult {
        let local = self
            .hub
            .lock()
            .calls
            .get(&(call.clone(), agent.clone()))
            .map(|l| l.commands.clone());
        let Some(commands) = local else {
            return Err(Refusal::new(
                "not_your_call",
                "no call with that id is offered to or connected with you",
            ));
        };
        let (reply, rx) = oneshot::channel();
        let request = CommandRequest {
            agent: agent.clone(),
            command,
            reply,
        };
        if commands.send(request).is_err() {
            return Err(Refusal::new("call_ended", "the call has ended"));
        }
        rx.await
            .unwrap_or_else(|_| Err(Refusal::new("call_ended", "the call has ended")))
    }

    /// Passes a supervisor's command to the call `agent` is talking on.
    pub async fn supervise(&self, agent: &AgentId, command: AgentCommand) -> CommandResult {
        let target = {
            let hub = self.hub.lock();
            hub.calls
                .iter()
                .find(|((_, a), l)| {
                    a == agent
                        && matches!(
                            l.view.phase,
                            CallPhase::Connected | CallPhase::Held | CallPhase::Consulting
                        )
                })
                .map(|((call, _), _)| call.clone())
        };
        // The agent may be talking on another node's call.
        let target = target.or_else(|| {
            self.relay.get().and_then(|r| {
                r.remote_calls(agent)
                    .into_iter()
                    .find(|v| {
                        matches!(
                            v.phase,
                            CallPhase::Connected | CallPhase::Held | CallPhase::Consulting
                        )
                    })
                    .map(|v| v.pop.call.clone())
            })
        });
        match target {
            Some(call) => self.command(agent, &call, command).await,
            None => Err(Refusal::new("not_on_call", "the agent is not talking to anyone")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(id: &str) -> AgentId {
        AgentId::new(id).expect("valid id")
    }

    fn pop(call: &str) -> Arc<ScreenPop> {
        Arc::new(ScreenPop {
            call: CallId::new(call).expect("valid id"),
            direction: domain::Direction::Inbound,
            queue: Some(QueueId::new("support").expect("valid id")),
            caller: Pii::new("+15550100".into()),
            called: Pii::new("801".into()),
            waited_ms: 1200,
            explanation: "longest idle".into(),
            customer: None,
            ivr: None,
            campaign: None,
        })
    }

    #[tokio::test]
    async fn an_agent_cannot_act_on_another_agents_call() {
        let hub = DeskHub::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let p = pop("c1");
        hub.offer(&agent("a1"), p.clone(), tx, Timestamp::from_millis(1));
        let refused = hub.command(&agent("a2"), &p.call, AgentCommand::Hangup).await;
        assert_eq!(refused.map_err(|r| r.code), Err("not_your_call"));
        assert!(rx.try_recv().is_err(), "nothing reached the call");

        let answer = tokio::spawn({
            let hub = hub.clone();
            let call = p.call.clone();
            async move { hub.command(&agent("a1"), &call, AgentCommand::Reject).await }
        });
        let request = rx.recv().await.expect("the call hears its agent");
        assert_eq!(request.command, AgentCommand::Reject);
        let _ = request.reply.send(Ok(None));
        assert_eq!(answer.await.expect("joined"), Ok(None));
    }

    #[tokio::test]
    async fn a_new_desktop_replaces_the_old_and_sees_the_agents_calls() {
        let hub = DeskHub::new();
        let a = agent("a1");
        let mut first = hub.attach(&a, AgentMedia::Phone);
        let (tx, _rx) = mpsc::unbounded_channel();
        hub.offer(&a, pop("c1"), tx, Timestamp::from_millis(5));
        assert!(matches!(first.events.recv().await, Some(DeskEvent::Offered(_))));
        hub.set_phase(
            &pop("c1").call,
            &a,
            CallPhase::Connected,
            Timestamp::from_millis(9),
        );

        let second = hub.attach(&a, AgentMedia::Browser);
        let seen: Vec<_> = std::iter::from_fn(|| first.events.try_recv().ok()).collect();
        assert!(seen.contains(&DeskEvent::Replaced));
        assert_eq!(second.calls.len(), 1);
        assert_eq!(second.calls[0].phase, CallPhase::Connected);
        assert_eq!(hub.desk_media(&a), Some(AgentMedia::Browser));

        // The old desktop going away does not detach the new one.
        hub.detach(&a, first.generation);
        assert_eq!(hub.desk_media(&a), Some(AgentMedia::Browser));
        hub.detach(&a, second.generation);
        assert_eq!(hub.desk_media(&a), None);
    }

    #[tokio::test]
    async fn a_command_to_an_ended_call_says_so() {
        let hub = DeskHub::new();
        let (tx, rx) = mpsc::unbounded_channel();
        let p = pop("c1");
        hub.offer(&agent("a1"), p.clone(), tx, Timestamp::from_millis(1));
        drop(rx);
        let refused = hub.command(&agent("a1"), &p.call, AgentCommand::Hold).await;
        assert_eq!(refused.map_err(|r| r.code), Err("call_ended"));
    }
}
