//! Desktops and supervisors on any node of a cluster. A call lives on the node that holds its SIP
//! dialog and media, but the agent's desktop (or a supervisor's wallboard) may be attached to
//! another node. The relay carries both directions through the state store's streams, never
//! fire-and-forget:
//!
//! ```text
//! node B (holds the call) ── desk.events ─────────────▶ every node ─▶ the agent's desktop, if there
//! node A (desktop) ── desk.cmds.<B> (group "desk") ──▶ node B runs the command on the call
//!                  ◀── desk.replies.<A> (group "desk") ── its answer: the command's acknowledgement
//! ```
//!
//! - **Events** (offer with screen pop, phase, withdrawal, release, the browser's SDP answer) are
//!   numbered per node and appended in order by one task, each retried until stored. Every node
//!   reads the stream from a position it keeps, so a dropped connection loses nothing; an entry
//!   appended twice (a retry whose reply was lost) is recognised by its number and skipped.
//! - **Commands** go to the stream of the node that holds the call (learnt from the call's offer)
//!   and are read there through a consumer group: acknowledged only once their answer is stored, and
//!   entries delivered but never acknowledged are claimed again. The sender repeats a command it has
//!   no answer to every [`RESEND_AFTER`], under the same number, until the call's node is known
//!   gone (its liveness record stayed missing for [`NODE_GONE_AFTER`] while the store answered;
//!   then `call_ended`) or, at the latest, [`COMMAND_TIMEOUT`]. A store that does not answer for a
//!   while delays the answer; it does not end the call on the desktop. The holder runs each
//!   (node, number) once and answers repeats with the answer it stored, so a hold or a hang-up is
//!   never carried out twice.
//!
//! What other nodes' calls look like to this node's desktops (for a desktop that attaches or
//! reloads, and the wallboard's call phases) is kept from the events, keyed by call and agent. Who
//! talks to whom stays the router's to say (`AcdHandle::agent_call`); this is only where each call
//! lives and what its desktop shows.

use crate::PreviewChoice;
use crate::desk::{
    AgentCommand, AgentMedia, CallPhase, CallView, CommandResult, DeskEvent, DeskHub, PreviewOffer, Refusal,
    ScreenPop,
};
use domain::{AgentId, CallId, CampaignId, LeadId, Timestamp};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use state_store::{StateStore, StreamEntryId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

/// Stream of every node's call events for desktops.
pub const EVENTS_STREAM: &str = "desk.events";
/// The consumer group reading each node's commands and replies.
const GROUP: &str = "desk";
/// The longest a relayed command waits for the node holding the call, resends included. It ends
/// sooner when that node is known gone; this bounds only a store out for longer than this.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node's liveness record must stay missing, check after check with the store
/// answering, before the node counts as gone (`routing::liveness`).
pub const NODE_GONE_AFTER: Duration = routing::liveness::NODE_LOST_AFTER;
/// A relayed command with no answer yet is sent again after this long (same number).
pub const RESEND_AFTER: Duration = Duration::from_secs(2);
/// Entries of this node's command stream delivered but unacknowledged this long are read again.
const CLAIM_IDLE: Duration = Duration::from_secs(3);
/// How long the answer of a command run here is kept for repeats: well past the last resend a
/// sender may make ([`COMMAND_TIMEOUT`]), whose entry may reach here late.
const ANSWER_KEPT: Duration = Duration::from_secs(120);
const _: () = assert!(ANSWER_KEPT.as_secs() >= 2 * COMMAND_TIMEOUT.as_secs());
/// Events kept in the stream: readers follow live, so only one far behind (by this many events,
/// minutes of the busiest hour) would miss any.
const EVENTS_KEPT: usize = 100_000;
/// How often the liveness of the nodes holding the calls known here is checked.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);

// Named by the router's protocol: its leader deletes them when their node is lost or has left.
use routing::protocol::{desk_commands_stream as commands_stream, desk_replies_stream as replies_stream};

/// A call event as it travels.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum WireEvent {
    Offered {
        pop: Box<ScreenPop>,
        at: Timestamp,
    },
    Phase {
        call: CallId,
        phase: CallPhase,
        at: Timestamp,
    },
    Withdrawn {
        call: CallId,
        reason: String,
    },
    Released {
        call: CallId,
    },
    MediaAnswer {
        call: CallId,
        sdp: String,
    },
    /// The agent's desktop attached to the origin with this media, or (None) left it.
    Desk {
        media: Option<AgentMedia>,
    },
    /// The origin dials a preview campaign and shows the agent a lead.
    Preview {
        offer: Box<PreviewOffer>,
    },
    /// That preview is over: dialled, or withdrawn with a reason.
    PreviewEnded {
        campaign: CampaignId,
        lead: LeadId,
        withdrawn: Option<String>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct EventEntry {
    origin: String,
    /// 1, 2, ... per origin process, in the order appended.
    seq: u64,
    agent: AgentId,
    event: WireEvent,
}

#[derive(Debug, Serialize, Deserialize)]
struct CommandEntry {
    origin: String,
    /// 1, 2, ... per origin process; a resend keeps its number.
    id: u64,
    agent: AgentId,
    #[serde(flatten)]
    request: Request,
}

/// What a relayed command asks of the node it goes to.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
enum Request {
    /// A desktop's command for a call this node holds.
    Call { call: CallId, command: AgentCommand },
    /// An agent's decision on a lead this node's campaign runner previewed to them.
    Preview {
        campaign: CampaignId,
        lead: LeadId,
        choice: PreviewChoice,
    },
}

#[derive(Debug, Serialize, Deserialize)]
struct ReplyEntry {
    id: u64,
    answer: Option<String>,
    refusal: Option<(String, String)>,
}

/// The codes a refusal may carry (a relayed refusal keeps its stable code).
const CODES: &[&str] = &[
    "already_accepting",
    "already_connected",
    "already_consulting",
    "already_held",
    "already_monitored",
    "already_transferring",
    "answer_on_phone",
    "bad_number",
    "bad_request",
    "bad_sdp",
    "bad_target",
    "call_ended",
    "do_not_call",
    "illegal_transition",
    "media_unavailable",
    "no_offer",
    "no_preview",
    "no_trunk",
    "not_answered",
    "not_campaign_call",
    "not_connected",
    "not_consulting",
    "not_held",
    "not_in_wrap_up",
    "not_monitoring",
    "not_on_call",
    "not_your_call",
    "phone_unreachable",
    "unavailable",
    "unknown_agent",
    "unknown_queue",
    "unreachable",
];

fn refusal_from_wire(code: &str, message: String) -> Refusal {
    let code = CODES
        .iter()
        .find(|c| **c == code)
        .copied()
        .unwrap_or("unavailable");
    Refusal::new(code, message)
}

/// A call held on another node, as this node's desktops see it.
#[derive(Debug, Clone)]
pub(crate) struct RemoteCall {
    pub(crate) node: String,
    pub(crate) agent: AgentId,
    pub(crate) view: CallView,
}

/// A command of another node run here: still running, or its stored answer.
struct Handled {
    at: Instant,
    reply: Option<Vec<u8>>,
}

/// The relay of one node. See the module documentation.
pub struct DeskRelay {
    node: String,
    store: StateStore,
    events: mpsc::UnboundedSender<(AgentId, WireEvent)>,
    /// Relayed commands waiting for their answer, by number: the node asked, and where to answer.
    waiting: Mutex<HashMap<u64, (String, oneshot::Sender<CommandResult>)>>,
    next_id: AtomicU64,
    remote: Mutex<HashMap<(CallId, AgentId), RemoteCall>>,
    /// Desktops attached to other nodes: the node and how the agent takes calls.
    desks: Mutex<HashMap<AgentId, (String, AgentMedia)>>,
    /// Leads other nodes' campaign runners preview to agents: the node, campaign and lead.
    previews: Mutex<HashMap<AgentId, (String, CampaignId, LeadId)>>,
    /// The last event number seen from each node.
    seen: Mutex<HashMap<String, u64>>,
    /// Commands of other nodes run here, by (node, number).
    handled: Mutex<HashMap<(String, u64), Handled>>,
    tasks: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl Drop for DeskRelay {
    fn drop(&mut self) {
        for t in self.tasks.lock().iter() {
            t.abort();
        }
    }
}

impl DeskRelay {
    /// Starts the relay of node `node` (unique in the cluster and per process, e.g. the router
    /// client's node id) for `hub`, following the events from now on.
    pub async fn start(
        store: StateStore,
        node: String,
        hub: DeskHub,
    ) -> Result<Arc<DeskRelay>, state_store::StateError> {
        let events_from = store.stream_last_id(EVENTS_STREAM).await?;
        store.stream_ensure_group(&commands_stream(&node), GROUP).await?;
        store.stream_ensure_group(&replies_stream(&node), GROUP).await?;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let relay = Arc::new(DeskRelay {
            node: node.clone(),
            store: store.clone(),
            events: events_tx,
            waiting: Mutex::default(),
            next_id: AtomicU64::new(1),
            remote: Mutex::default(),
            desks: Mutex::default(),
            previews: Mutex::default(),
            seen: Mutex::default(),
            handled: Mutex::default(),
            tasks: Mutex::default(),
        });
        let weak = Arc::downgrade(&relay);
        let tasks = vec![
            tokio::spawn(append_events(store.clone(), node.clone(), events_rx)).abort_handle(),
            tokio::spawn(follow(store.clone(), events_from, {
                let (weak, hub) = (weak.clone(), hub.clone());
                move |payload| {
                    if let Some(relay) = weak.upgrade() {
                        relay.on_event(&hub, payload);
                    }
                }
            }))
            .abort_handle(),
            tokio::spawn(serve_commands(
                weak.clone(),
                store.clone(),
                node.clone(),
                hub.clone(),
            ))
            .abort_handle(),
            tokio::spawn(read_replies(weak.clone(), store.clone(), node)).abort_handle(),
            tokio::spawn(watch_nodes(weak, store, hub)).abort_handle(),
        ];
        *relay.tasks.lock() = tasks;
        Ok(relay)
    }

    /// Tells the other nodes' desktops about a call event of this node.
    pub(crate) fn publish(&self, agent: &AgentId, event: &DeskEvent, now: Timestamp) {
        let event = match event {
            DeskEvent::Offered(pop) => WireEvent::Offered {
                pop: Box::new((**pop).clone()),
                at: now,
            },
            DeskEvent::Phase { call, phase } => WireEvent::Phase {
                call: call.clone(),
                phase: *phase,
                at: now,
            },
            DeskEvent::OfferWithdrawn { call, reason } => WireEvent::Withdrawn {
                call: call.clone(),
                reason: reason.clone(),
            },
            DeskEvent::Released { call } => WireEvent::Released { call: call.clone() },
            DeskEvent::MediaAnswer { call, sdp } => WireEvent::MediaAnswer {
                call: call.clone(),
                sdp: sdp.clone(),
            },
            DeskEvent::Replaced | DeskEvent::Preview(_) | DeskEvent::PreviewWithdrawn { .. } => return,
        };
        let _ = self.events.send((agent.clone(), event));
    }

    /// This node leaves the cluster (drained: its calls are over): it stops reading commands and
    /// replies and deletes its two streams, so nothing of it stays in the store. Its last events
    /// are still delivered.
    pub(crate) async fn leave(&self) {
        // The appender (first task) keeps going; every reader stops.
        for t in self.tasks.lock().iter().skip(1) {
            t.abort();
        }
        for stream in [commands_stream(&self.node), replies_stream(&self.node)] {
            if let Err(error) = self.store.stream_delete(&stream).await {
                warn!(%error, stream, "a stream of this node not deleted; the leader deletes it later");
            }
        }
    }

    /// This node's id in the cluster.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Tells the other nodes that `agent`'s desktop is attached here with `media`, or (None) left.
    pub(crate) fn publish_desk(&self, agent: &AgentId, media: Option<AgentMedia>) {
        self.desks.lock().remove(agent);
        let _ = self.events.send((agent.clone(), WireEvent::Desk { media }));
    }

    /// Shows `agent`'s desktop, on whichever node, the lead this node's campaign runner previews.
    pub(crate) fn publish_preview(&self, agent: &AgentId, offer: &PreviewOffer) {
        let offer = Box::new(offer.clone());
        let _ = self.events.send((agent.clone(), WireEvent::Preview { offer }));
    }

    /// That preview is over (`withdrawn`: with the reason the agent is told).
    pub(crate) fn publish_preview_end(&self, agent: &AgentId, offer: &PreviewOffer, withdrawn: Option<&str>) {
        let event = WireEvent::PreviewEnded {
            campaign: offer.campaign.clone(),
            lead: offer.lead.clone(),
            withdrawn: withdrawn.map(str::to_string),
        };
        let _ = self.events.send((agent.clone(), event));
    }

    /// The node whose campaign runner previews `lead` of `campaign` to `agent`, when another's.
    pub(crate) fn preview_origin(
        &self,
        agent: &AgentId,
        campaign: &CampaignId,
        lead: &LeadId,
    ) -> Option<String> {
        match self.previews.lock().get(agent) {
            Some((node, c, l)) if c == campaign && l == lead => Some(node.clone()),
            _ => None,
        }
    }

    /// How `agent` takes calls when their desktop is attached to another node.
    pub(crate) fn remote_desk(&self, agent: &AgentId) -> Option<AgentMedia> {
        self.desks.lock().get(agent).map(|(_, m)| *m)
    }

    /// The calls of `agent` held on other nodes.
    pub(crate) fn remote_calls(&self, agent: &AgentId) -> Vec<CallView> {
        self.remote
            .lock()
            .iter()
            .filter(|((_, a), _)| a == agent)
            .map(|(_, r)| r.view.clone())
            .collect()
    }

    /// Every call held on another node: its node, agent and view.
    pub(crate) fn all_remote(&self) -> Vec<RemoteCall> {
        self.remote.lock().values().cloned().collect()
    }

    /// The node holding `call` for `agent`, when it is another node's.
    pub(crate) fn remote(&self, call: &CallId, agent: &AgentId) -> Option<RemoteCall> {
        self.remote.lock().get(&(call.clone(), agent.clone())).cloned()
    }

    /// Sends a desktop's command to node `node`, which holds the call, and waits for its answer,
    /// sending it again (same number) every [`RESEND_AFTER`] until [`COMMAND_TIMEOUT`].
    pub(crate) async fn command(
        &self,
        node: &str,
        agent: &AgentId,
        call: &CallId,
        command: AgentCommand,
    ) -> CommandResult {
        debug!(to = node, %call, command = command.name(), "desk command relayed");
        let request = Request::Call {
            call: call.clone(),
            command,
        };
        let gone = || Refusal::new("call_ended", "the node holding the call did not answer");
        self.send(node, agent, request, gone).await
    }

    /// Takes an agent's decision on a previewed lead to node `node`, whose runner previewed it.
    pub(crate) async fn preview(
        &self,
        node: &str,
        agent: &AgentId,
        campaign: &CampaignId,
        lead: LeadId,
        choice: PreviewChoice,
    ) -> Result<(), Refusal> {
        debug!(to = node, %campaign, "preview decision relayed");
        let request = Request::Preview {
            campaign: campaign.clone(),
            lead,
            choice,
        };
        let gone = || Refusal::new("unavailable", "the node dialling the campaign did not answer");
        self.send(node, agent, request, gone).await.map(|_| ())
    }

    async fn send(
        &self,
        node: &str,
        agent: &AgentId,
        request: Request,
        gone: impl FnOnce() -> Refusal,
    ) -> CommandResult {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = CommandEntry {
            origin: self.node.clone(),
            id,
            agent: agent.clone(),
            request,
        };
        let payload = serde_json::to_vec(&entry)
            .map_err(|_| Refusal::new("bad_request", "the command cannot be relayed"))?;
        let (tx, mut rx) = oneshot::channel();
        self.waiting.lock().insert(id, (node.to_owned(), tx));
        let stream = commands_stream(node);
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let answer = loop {
            if !append_until(&self.store, &stream, &payload, deadline).await {
                break None;
            }
            let wait_until = (Instant::now() + RESEND_AFTER).min(deadline);
            match tokio::time::timeout_at(wait_until, &mut rx).await {
                Ok(answer) => break answer.ok(),
                Err(_) if Instant::now() >= deadline => break None,
                Err(_) => debug!(to = node, id, "no answer yet; the command is sent again"),
            }
        };
        self.waiting.lock().remove(&id);
        answer.unwrap_or_else(|| Err(gone()))
    }

    fn on_event(&self, hub: &DeskHub, payload: &[u8]) {
        let Ok(entry) = serde_json::from_slice::<EventEntry>(payload) else {
            warn!("a desk event does not decode; dropped");
            return;
        };
        if entry.origin == self.node {
            return;
        }
        {
            let mut seen = self.seen.lock();
            let last = seen.entry(entry.origin.clone()).or_default();
            if entry.seq <= *last {
                return; // appended twice (a retry whose reply was lost)
            }
            *last = entry.seq;
        }
        let agent = entry.agent;
        let event = {
            let mut remote = self.remote.lock();
            match entry.event {
                WireEvent::Offered { pop, at } => {
                    let pop = Arc::new(*pop);
                    remote.insert(
                        (pop.call.clone(), agent.clone()),
                        RemoteCall {
                            node: entry.origin,
                            agent: agent.clone(),
                            view: CallView {
                                phase: CallPhase::Offered,
                                since: at,
                                pop: pop.clone(),
                            },
                        },
                    );
                    DeskEvent::Offered(pop)
                }
                WireEvent::Phase { call, phase, at } => {
                    if let Some(r) = remote.get_mut(&(call.clone(), agent.clone())) {
                        r.view.phase = phase;
                        r.view.since = at;
                    }
                    DeskEvent::Phase { call, phase }
                }
                WireEvent::Withdrawn { call, reason } => {
                    remote.remove(&(call.clone(), agent.clone()));
                    DeskEvent::OfferWithdrawn { call, reason }
                }
                WireEvent::Released { call } => {
                    remote.remove(&(call.clone(), agent.clone()));
                    DeskEvent::Released { call }
                }
                WireEvent::MediaAnswer { call, sdp } => DeskEvent::MediaAnswer { call, sdp },
                WireEvent::Desk { media } => {
                    drop(remote);
                    let mut desks = self.desks.lock();
                    match media {
                        Some(media) => {
                            desks.insert(agent.clone(), (entry.origin, media));
                            drop(desks);
                            // One desktop per agent in the cluster: this node's, if any, is replaced.
                            hub.replaced_elsewhere(&agent);
                        }
                        None => {
                            if desks.get(&agent).is_some_and(|(node, _)| *node == entry.origin) {
                                desks.remove(&agent);
                            }
                        }
                    }
                    return;
                }
                WireEvent::Preview { offer } => {
                    drop(remote);
                    let key = (entry.origin, offer.campaign.clone(), offer.lead.clone());
                    self.previews.lock().insert(agent.clone(), key);
                    hub.offer_preview_here(&agent, Arc::new(*offer));
                    return;
                }
                WireEvent::PreviewEnded {
                    campaign,
                    lead,
                    withdrawn,
                } => {
                    drop(remote);
                    let mut previews = self.previews.lock();
                    if previews
                        .get(&agent)
                        .is_some_and(|(n, c, l)| *n == entry.origin && *c == campaign && *l == lead)
                    {
                        previews.remove(&agent);
                        drop(previews);
                        hub.end_preview_here(&agent, withdrawn.as_deref());
                    }
                    return;
                }
            }
        };
        hub.notify_local(&agent, event);
    }

    /// A command from another node's desktop: run once per (node, number); a repeat of one already
    /// answered gets the same answer again, a repeat of one still running waits for it.
    fn on_command(self: &Arc<Self>, hub: &DeskHub, entry_id: StreamEntryId, payload: &[u8]) {
        let stream = commands_stream(&self.node);
        let Ok(entry) = serde_json::from_slice::<CommandEntry>(payload) else {
            warn!("a relayed desk command does not decode; dropped");
            let store = self.store.clone();
            tokio::spawn(async move { ack(&store, &stream, entry_id).await });
            return;
        };
        let key = (entry.origin.clone(), entry.id);
        let again = {
            let mut handled = self.handled.lock();
            handled.retain(|_, h| h.reply.is_none() || h.at.elapsed() < ANSWER_KEPT);
            match handled.get(&key) {
                Some(h) => Some(h.reply.clone()),
                None => {
                    handled.insert(
                        key.clone(),
                        Handled {
                            at: Instant::now(),
                            reply: None,
                        },
                    );
                    None
                }
            }
        };
        let store = self.store.clone();
        match again {
            // Still running: its answer will be stored and the entry acknowledged then.
            Some(None) => {}
            Some(Some(reply)) => {
                debug!(from = %entry.origin, id = entry.id, "a repeated desk command is answered again");
                tokio::spawn(async move {
                    append_retrying(&store, &replies_stream(&entry.origin), &reply).await;
                    ack(&store, &stream, entry_id).await;
                });
            }
            None => {
                let (relay, hub) = (Arc::downgrade(self), hub.clone());
                tokio::spawn(async move {
                    let result = match entry.request {
                        Request::Call { call, command } => {
                            hub.command_here(&entry.agent, &call, command).await
                        }
                        Request::Preview {
                            campaign,
                            lead,
                            choice,
                        } => hub
                            .preview_here(&entry.agent, &campaign, lead, choice)
                            .await
                            .map(|()| None),
                    };
                    let reply = ReplyEntry {
                        id: entry.id,
                        refusal: result
                            .as_ref()
                            .err()
                            .map(|r| (r.code.to_string(), r.message.clone())),
                        answer: result.ok().flatten(),
                    };
                    let Ok(reply) = serde_json::to_vec(&reply) else {
                        return;
                    };
                    if let Some(relay) = relay.upgrade() {
                        relay.handled.lock().insert(
                            key,
                            Handled {
                                at: Instant::now(),
                                reply: Some(reply.clone()),
                            },
                        );
                    }
                    append_retrying(&store, &replies_stream(&entry.origin), &reply).await;
                    ack(&store, &stream, entry_id).await;
                });
            }
        }
    }

    /// The other nodes this node knows calls or desktops of.
    fn known_nodes(&self) -> Vec<String> {
        let mut nodes: Vec<String> = self.remote.lock().values().map(|r| r.node.clone()).collect();
        nodes.extend(self.desks.lock().values().map(|(n, _)| n.clone()));
        nodes.extend(self.previews.lock().values().map(|(n, _, _)| n.clone()));
        nodes.extend(self.waiting.lock().values().map(|(n, _)| n.clone()));
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Node `node` is gone (its liveness record lapsed): its calls ended with it (the router lets
    /// them go), so this node's desktops are told and nothing of it is kept.
    fn node_gone(&self, hub: &DeskHub, node: &str) {
        // Commands waiting for its answer end now (a dropped sender reads as "did not answer").
        self.waiting.lock().retain(|_, (n, _)| n != node);
        let ended: Vec<(CallId, AgentId)> = {
            let mut remote = self.remote.lock();
            let ended: Vec<_> = remote
                .iter()
                .filter(|(_, r)| r.node == node)
                .map(|(k, _)| k.clone())
                .collect();
            for k in &ended {
                remote.remove(k);
            }
            ended
        };
        self.desks.lock().retain(|_, (n, _)| n != node);
        let previews: Vec<AgentId> = {
            let mut previews = self.previews.lock();
            let gone: Vec<_> = previews
                .iter()
                .filter(|(_, (n, _, _))| n == node)
                .map(|(a, _)| a.clone())
                .collect();
            previews.retain(|_, (n, _, _)| n != node);
            gone
        };
        for agent in previews {
            hub.end_preview_here(&agent, Some("the campaign's dialing node is gone"));
        }
        if !ended.is_empty() {
            warn!(
                node,
                calls = ended.len(),
                "a node holding calls is gone; their desktops are told"
            );
        }
        for (call, agent) in ended {
            hub.notify_local(&agent, DeskEvent::Released { call });
        }
    }

    fn on_reply(&self, payload: &[u8]) {
        let Ok(reply) = serde_json::from_slice::<ReplyEntry>(payload) else {
            warn!("a relayed desk reply does not decode; dropped");
            return;
        };
        // A second answer to the same command (it was sent again) finds nobody waiting.
        if let Some((_, tx)) = self.waiting.lock().remove(&reply.id) {
            let result = match reply.refusal {
                Some((code, message)) => Err(refusal_from_wire(&code, message)),
                None => Ok(reply.answer),
            };
            let _ = tx.send(result);
        }
    }
}

/// Backoff after a failed store call: 20 ms doubling to a second.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(20u64.saturating_mul(1 << failures.min(6))).min(Duration::from_secs(1))
}

async fn append_retrying(store: &StateStore, stream: &str, payload: &[u8]) {
    let mut failures = 0u32;
    while let Err(error) = store.stream_append(stream, payload).await {
        debug!(%error, stream, "a desk relay append failed; retrying");
        tokio::time::sleep(backoff(failures)).await;
        failures = failures.saturating_add(1);
    }
}

/// Appends `payload`, retrying until stored (true) or `deadline` (false).
async fn append_until(store: &StateStore, stream: &str, payload: &[u8], deadline: Instant) -> bool {
    tokio::time::timeout_at(deadline, append_retrying(store, stream, payload))
        .await
        .is_ok()
}

/// Acknowledges a command entry (retried a while; one never acknowledged is claimed again and
/// answered from the stored answer), then drops what the group is done with.
async fn ack(store: &StateStore, stream: &str, id: StreamEntryId) {
    let mut failures = 0u32;
    while let Err(error) = store.stream_ack(stream, GROUP, std::slice::from_ref(&id)).await {
        debug!(%error, stream, "a desk relay acknowledgement failed; retrying");
        if failures >= 8 {
            return;
        }
        tokio::time::sleep(backoff(failures)).await;
        failures += 1;
    }
    let _ = store.stream_trim_consumed(stream).await;
}

/// Numbers this node's events and appends them in order, each retried until stored.
async fn append_events(
    store: StateStore,
    node: String,
    mut rx: mpsc::UnboundedReceiver<(AgentId, WireEvent)>,
) {
    let mut seq = 0u64;
    while let Some((agent, event)) = rx.recv().await {
        seq += 1;
        let entry = EventEntry {
            origin: node.clone(),
            seq,
            agent,
            event,
        };
        let Ok(payload) = serde_json::to_vec(&entry) else {
            continue;
        };
        let mut failures = 0u32;
        while let Err(error) = store
            .stream_append_capped(EVENTS_STREAM, &payload, EVENTS_KEPT)
            .await
        {
            debug!(%error, "a desk event append failed; retrying");
            tokio::time::sleep(backoff(failures)).await;
            failures = failures.saturating_add(1);
        }
    }
}

/// Reads the events stream from after `after`, handing each entry to `on` in order.
async fn follow(store: StateStore, mut after: Option<StreamEntryId>, on: impl Fn(&[u8]) + Send + 'static) {
    let mut failures = 0u32;
    loop {
        match store
            .stream_read(EVENTS_STREAM, after.as_ref(), 256, Some(Duration::from_secs(1)))
            .await
        {
            Ok(entries) => {
                failures = 0;
                for entry in entries {
                    after = Some(entry.id.clone());
                    on(&entry.payload);
                }
            }
            Err(error) => {
                debug!(%error, "reading the desk events failed; retrying");
                tokio::time::sleep(backoff(failures)).await;
                failures = failures.saturating_add(1);
            }
        }
    }
}

/// Reads this node's command stream through the group, claiming again entries delivered but never
/// acknowledged (a read whose reply was lost, a command still running long).
async fn serve_commands(relay: Weak<DeskRelay>, store: StateStore, node: String, hub: DeskHub) {
    let stream = commands_stream(&node);
    let mut failures = 0u32;
    let mut claimed_at = Instant::now();
    loop {
        let mut entries = match store
            .stream_read_group(&stream, GROUP, &node, 64, Some(Duration::from_secs(1)))
            .await
        {
            Ok(entries) => {
                failures = 0;
                entries
            }
            Err(error) => {
                debug!(%error, "reading this node's desk commands failed; retrying");
                tokio::time::sleep(backoff(failures)).await;
                failures = failures.saturating_add(1);
                // Deleted with its group while this node seemed gone (its liveness lapsed): again.
                let _ = store.stream_ensure_group(&stream, GROUP).await;
                continue;
            }
        };
        if claimed_at.elapsed() >= CLAIM_IDLE {
            claimed_at = Instant::now();
            if let Ok(again) = store.stream_claim(&stream, GROUP, &node, CLAIM_IDLE, 64).await {
                entries.extend(again);
            }
        }
        let Some(relay) = relay.upgrade() else {
            return;
        };
        for entry in entries {
            relay.on_command(&hub, entry.id, &entry.payload);
        }
    }
}

/// Forgets the calls and desktops of nodes whose liveness record (renewed by each node's router
/// client) has lapsed: a node killed never says its calls ended.
async fn watch_nodes(relay: Weak<DeskRelay>, store: StateStore, hub: DeskHub) {
    let mut missing = routing::liveness::MissingNodes::<Instant>::new(NODE_GONE_AFTER);
    loop {
        tokio::time::sleep(LIVENESS_EVERY).await;
        let Some(nodes) = relay.upgrade().map(|r| r.known_nodes()) else {
            return;
        };
        missing.begin_round(Instant::now(), |node| nodes.iter().any(|n| n == node));
        for node in nodes {
            let alive = match store
                .get_blob(routing::protocol::NODES_NAMESPACE, &node, Timestamp::now_utc())
                .await
            {
                Ok(record) => record.is_some(),
                // A store error says nothing about the node.
                Err(_) => {
                    missing.store_failed();
                    break;
                }
            };
            if missing.check(&node, alive, Instant::now())
                && let Some(relay) = relay.upgrade()
            {
                relay.node_gone(&hub, &node);
            }
        }
    }
}

/// Reads the answers to this node's relayed commands, acknowledging each once handed over.
async fn read_replies(relay: Weak<DeskRelay>, store: StateStore, node: String) {
    let stream = replies_stream(&node);
    let mut failures = 0u32;
    loop {
        let entries = match store
            .stream_read_group(&stream, GROUP, &node, 64, Some(Duration::from_secs(1)))
            .await
        {
            Ok(entries) => {
                failures = 0;
                entries
            }
            Err(error) => {
                debug!(%error, "reading this node's desk replies failed; retrying");
                tokio::time::sleep(backoff(failures)).await;
                failures = failures.saturating_add(1);
                let _ = store.stream_ensure_group(&stream, GROUP).await;
                continue;
            }
        };
        let Some(relay) = relay.upgrade() else {
            return;
        };
        if entries.is_empty() {
            continue;
        }
        let ids: Vec<StreamEntryId> = entries.iter().map(|e| e.id.clone()).collect();
        for entry in &entries {
            relay.on_reply(&entry.payload);
        }
        if store.stream_ack(&stream, GROUP, &ids).await.is_ok() {
            let _ = store.stream_trim_consumed(&stream).await;
        }
    }
}

#[cfg(test)]
mod tests;
