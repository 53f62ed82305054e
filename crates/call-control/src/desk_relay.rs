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
//!   no answer to every [`RESEND_AFTER`], under the same number, until [`COMMAND_TIMEOUT`]
//!   (then `call_ended`: the call's node is gone). The holder runs each (node, number) once and
//!   answers repeats with the answer it stored, so a hold or a hang-up is never carried out twice.
//!
//! What other nodes' calls look like to this node's desktops (for a desktop that attaches or
//! reloads, and the wallboard's call phases) is kept from the events, keyed by call and agent. Who
//! talks to whom stays the router's to say (`AcdHandle::agent_call`); this is only where each call
//! lives and what its desktop shows.

use crate::desk::{
    AgentCommand, AgentMedia, CallPhase, CallView, CommandResult, DeskEvent, DeskHub, Refusal, ScreenPop,
};
use domain::{AgentId, CallId, Timestamp};
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
/// How long a relayed command waits for the node holding the call, resends included.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// A relayed command with no answer yet is sent again after this long (same number).
pub const RESEND_AFTER: Duration = Duration::from_secs(2);
/// Entries of this node's command stream delivered but unacknowledged this long are read again.
const CLAIM_IDLE: Duration = Duration::from_secs(3);
/// How long the answer of a command run here is kept for repeats (longer than any resend).
const ANSWER_KEPT: Duration = Duration::from_secs(60);
/// Events kept in the stream: readers follow live, so only one far behind (by this many events,
/// minutes of the busiest hour) would miss any.
const EVENTS_KEPT: usize = 100_000;
/// How often the liveness of the nodes holding the calls known here is checked.
const LIVENESS_EVERY: Duration = Duration::from_secs(1);

fn commands_stream(node: &str) -> String {
    format!("desk.cmds.{node}")
}

fn replies_stream(node: &str) -> String {
    format!("desk.replies.{node}")
}

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
    call: CallId,
    command: AgentCommand,
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
    waiting: Mutex<HashMap<u64, oneshot::Sender<CommandResult>>>,
    next_id: AtomicU64,
    remote: Mutex<HashMap<(CallId, AgentId), RemoteCall>>,
    /// Desktops attached to other nodes: the node and how the agent takes calls.
    desks: Mutex<HashMap<AgentId, (String, AgentMedia)>>,
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

    /// This node's id in the cluster.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Tells the other nodes that `agent`'s desktop is attached here with `media`, or (None) left.
    pub(crate) fn publish_desk(&self, agent: &AgentId, media: Option<AgentMedia>) {
        self.desks.lock().remove(agent);
        let _ = self.events.send((agent.clone(), WireEvent::Desk { media }));
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
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        debug!(to = node, %call, command = command.name(), id, "desk command relayed");
        let entry = CommandEntry {
            origin: self.node.clone(),
            id,
            agent: agent.clone(),
            call: call.clone(),
            command,
        };
        let payload = serde_json::to_vec(&entry)
            .map_err(|_| Refusal::new("bad_request", "the command cannot be relayed"))?;
        let (tx, mut rx) = oneshot::channel();
        self.waiting.lock().insert(id, tx);
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
                Err(_) => debug!(to = node, %call, id, "no answer yet; the command is sent again"),
            }
        };
        self.waiting.lock().remove(&id);
        answer.unwrap_or_else(|| {
            Err(Refusal::new(
                "call_ended",
                "the node holding the call did not answer",
            ))
        })
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
                    let result = hub.command_here(&entry.agent, &entry.call, entry.command).await;
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
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Node `node` is gone (its liveness record lapsed): its calls ended with it (the router lets
    /// them go), so this node's desktops are told and nothing of it is kept.
    fn node_gone(&self, hub: &DeskHub, node: &str) {
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
        if let Some(tx) = self.waiting.lock().remove(&reply.id) {
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
    loop {
        tokio::time::sleep(LIVENESS_EVERY).await;
        let Some(nodes) = relay.upgrade().map(|r| r.known_nodes()) else {
            return;
        };
        for node in nodes {
            let alive = store
                .get_blob(routing::protocol::NODES_NAMESPACE, &node, Timestamp::now_utc())
                .await;
            // A store error says nothing about the node.
            if let (Ok(None), Some(relay)) = (alive, relay.upgrade()) {
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
mod tests {
    use super::*;
    use crate::desk::{AgentMedia, Attachment, CommandRequest};
    use domain::{Pii, QueueId};

    /// A failure bound: every wait here is for an event that comes at once when things work.
    const BOUND: Duration = Duration::from_secs(20);

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

    /// A node of the cluster: alive (its liveness record, as its router client keeps it) and its
    /// hub joined to the relay.
    async fn node(store: &StateStore, name: &str) -> DeskHub {
        store
            .put_blob(
                routing::protocol::NODES_NAMESPACE,
                name,
                b"alive",
                &state_store::BlobWrite::new(),
                Timestamp::now_utc(),
            )
            .await
            .expect("alive");
        let hub = DeskHub::new();
        hub.join_cluster(store.clone(), name.to_string())
            .await
            .expect("relay starts");
        hub
    }

    async fn next(desk: &mut Attachment) -> DeskEvent {
        tokio::time::timeout(BOUND, desk.events.recv())
            .await
            .expect("an event within the bound")
            .expect("the desktop is attached")
    }

    async fn request(calls: &mut mpsc::UnboundedReceiver<CommandRequest>) -> CommandRequest {
        tokio::time::timeout(BOUND, calls.recv())
            .await
            .expect("a command within the bound")
            .expect("the call listens")
    }

    #[tokio::test]
    async fn a_desktop_on_one_node_follows_and_commands_a_call_held_on_another() {
        let store = StateStore::memory();
        let (a, b) = (node(&store, "node-a").await, node(&store, "node-b").await);
        let agent = agent("2001");
        let mut desk = a.attach(&agent, AgentMedia::Phone);
        let (tx, mut calls) = mpsc::unbounded_channel();
        let p = pop("c1");
        b.offer(&agent, p.clone(), tx, Timestamp::from_millis(5));

        assert_eq!(next(&mut desk).await, DeskEvent::Offered(p.clone()));
        assert!(
            !a.calls_of(&agent).is_empty(),
            "node A knows the agent's call on node B"
        );
        for hub in [&a, &b] {
            assert_eq!(
                hub.call_node(&p.call).as_deref(),
                Some("node-b"),
                "where the call is"
            );
        }
        b.set_phase(&p.call, &agent, CallPhase::Connected, Timestamp::from_millis(9));
        assert_eq!(
            next(&mut desk).await,
            DeskEvent::Phase {
                call: p.call.clone(),
                phase: CallPhase::Connected
            }
        );

        // A command from node A's desktop runs on node B's call; its answer comes back.
        let hold = tokio::spawn({
            let (a, agent, call) = (a.clone(), agent.clone(), p.call.clone());
            async move { a.command(&agent, &call, AgentCommand::Hold).await }
        });
        let r = request(&mut calls).await;
        assert_eq!(r.command, AgentCommand::Hold);
        let _ = r.reply.send(Err(Refusal::new("already_held", "on hold already")));
        let refused = hold.await.expect("joined");
        assert_eq!(
            refused.map_err(|r| r.code),
            Err("already_held"),
            "the code survives the trip"
        );

        // A reload on node A sees the call as it stands; the wallboard there sees its phase.
        let again = a.attach(&agent, AgentMedia::Phone);
        assert_eq!(again.calls.len(), 1);
        assert_eq!(again.calls[0].phase, CallPhase::Connected);
        assert!(
            a.phases()
                .iter()
                .any(|(who, phase, _)| who == &agent && *phase == CallPhase::Connected)
        );
        let mut desk = again;

        b.release(&p.call, &agent);
        assert_eq!(
            next(&mut desk).await,
            DeskEvent::Released { call: p.call.clone() }
        );
        assert!(a.calls_of(&agent).is_empty());
        let refused = a.command(&agent, &p.call, AgentCommand::Hangup).await;
        assert_eq!(refused.map_err(|r| r.code), Err("not_your_call"));
        // Another agent can never reach the call, on either node.
        let (tx, _calls) = mpsc::unbounded_channel();
        b.offer(&agent, pop("c2"), tx, Timestamp::from_millis(20));
        assert!(matches!(next(&mut desk).await, DeskEvent::Offered(_)));
        for hub in [&a, &b] {
            let refused = hub
                .command(&self::agent("2002"), &pop("c2").call, AgentCommand::Hangup)
                .await;
            assert_eq!(refused.map_err(|r| r.code), Err("not_your_call"));
        }

        // The agent opens their desktop on a third node: the one on node A is replaced, and node A
        // knows how the agent takes calls now.
        let c = node(&store, "node-c").await;
        let _moved = c.attach(&agent, AgentMedia::Browser);
        assert_eq!(next(&mut desk).await, DeskEvent::Replaced);
        assert_eq!(a.desk_media(&agent), Some(AgentMedia::Browser));
    }

    #[tokio::test]
    async fn every_node_knows_the_calls_on_an_agents_desktop_for_customer_access() {
        let store = StateStore::memory();
        let (b, c) = (node(&store, "node-b").await, node(&store, "node-c").await);
        let (agent, marker_agent) = (agent("2001"), agent("2009"));
        // A desktop of another agent on node C: the relay's events arrive in order, so once its own
        // offer reaches it, node C has heard of every earlier event too.
        let mut marker = c.attach(&marker_agent, AgentMedia::Phone);
        let (tx, _calls) = mpsc::unbounded_channel();
        let p = pop("c1");
        b.offer(&agent, p.clone(), tx, Timestamp::from_millis(5));
        b.set_phase(&p.call, &agent, CallPhase::Connected, Timestamp::from_millis(6));
        let (tx, _marker_calls) = mpsc::unbounded_channel();
        b.offer(&marker_agent, pop("m1"), tx, Timestamp::from_millis(7));
        assert!(matches!(next(&mut marker).await, DeskEvent::Offered(_)));

        // An API request for the agent may land on node C, where no desktop of theirs is attached.
        let seen = c.calls_of(&agent);
        assert_eq!(seen.len(), 1, "node C knows the agent's call held on node B");
        assert_eq!(seen[0].pop.call, p.call);
        assert_eq!(seen[0].phase, CallPhase::Connected);
        assert_eq!(b.calls_of(&agent).len(), 1, "and so does the holder");
        assert!(c.calls_of(&self::agent("2002")).is_empty(), "nobody else's");

        b.release(&p.call, &agent);
        b.release(&pop("m1").call, &marker_agent);
        assert_eq!(
            next(&mut marker).await,
            DeskEvent::Released {
                call: pop("m1").call.clone()
            }
        );
        assert!(c.calls_of(&agent).is_empty(), "the call ended: closed everywhere");
    }

    #[tokio::test]
    async fn a_command_delivered_twice_is_run_once_and_answered_twice_alike() {
        let store = StateStore::memory();
        let b = node(&store, "node-b").await;
        let agent = agent("2001");
        let (tx, mut calls) = mpsc::unbounded_channel();
        let p = pop("c1");
        b.offer(&agent, p.clone(), tx, Timestamp::from_millis(5));
        let entry = serde_json::to_vec(&CommandEntry {
            origin: "node-x".into(),
            id: 7,
            agent: agent.clone(),
            call: p.call.clone(),
            command: AgentCommand::Hangup,
        })
        .expect("encodes");
        store
            .stream_append(&commands_stream("node-b"), &entry)
            .await
            .expect("appended");
        let r = request(&mut calls).await;
        assert_eq!(r.command, AgentCommand::Hangup);
        let _ = r.reply.send(Ok(None));
        let first = store
            .stream_read(&replies_stream("node-x"), None, 10, Some(BOUND))
            .await
            .expect("the answer is stored");
        assert_eq!(first.len(), 1);

        // The same command again (a resend, or a redelivery): answered from the stored answer.
        store
            .stream_append(&commands_stream("node-b"), &entry)
            .await
            .expect("appended");
        let both = loop {
            let got = store
                .stream_read(&replies_stream("node-x"), None, 10, Some(BOUND))
                .await
                .expect("read");
            if got.len() >= 2 {
                break got;
            }
            let _ = store
                .stream_read(
                    &replies_stream("node-x"),
                    Some(&got[got.len() - 1].id),
                    10,
                    Some(BOUND),
                )
                .await;
        };
        assert_eq!(both[0].payload, both[1].payload, "the same answer twice");
        assert!(calls.try_recv().is_err(), "the call heard the hang-up once");
    }

    #[tokio::test]
    async fn a_command_the_holder_answers_late_is_resent_and_run_once() {
        let store = StateStore::memory();
        let (a, b) = (node(&store, "node-a").await, node(&store, "node-b").await);
        let agent = agent("2001");
        let mut desk = a.attach(&agent, AgentMedia::Phone);
        let (tx, mut calls) = mpsc::unbounded_channel();
        let p = pop("c1");
        b.offer(&agent, p.clone(), tx, Timestamp::from_millis(5));
        assert!(matches!(next(&mut desk).await, DeskEvent::Offered(_)));
        let hold = tokio::spawn({
            let (a, agent, call) = (a.clone(), agent.clone(), p.call.clone());
            async move { a.command(&agent, &call, AgentCommand::Hold).await }
        });
        let r = request(&mut calls).await;
        // The call answers only once node A has sent the command again.
        let resent = loop {
            let all = store
                .stream_read(&commands_stream("node-b"), None, 10, Some(BOUND))
                .await
                .expect("read");
            if all.len() >= 2 {
                break all;
            }
            let _ = store
                .stream_read(
                    &commands_stream("node-b"),
                    Some(&all[all.len() - 1].id),
                    10,
                    Some(BOUND),
                )
                .await;
        };
        assert_eq!(
            resent[0].payload, resent[1].payload,
            "sent again under the same number"
        );
        let _ = r.reply.send(Ok(None));
        assert_eq!(hold.await.expect("joined"), Ok(None));
        assert!(calls.try_recv().is_err(), "the call heard the hold once");
    }

    #[tokio::test]
    async fn the_calls_of_a_node_that_died_are_released_on_the_other_nodes() {
        let store = StateStore::memory();
        let (a, b) = (node(&store, "node-a").await, node(&store, "node-b").await);
        let agent = agent("2001");
        let mut desk = a.attach(&agent, AgentMedia::Phone);
        let (tx, _calls) = mpsc::unbounded_channel();
        let p = pop("c1");
        b.offer(&agent, p.clone(), tx, Timestamp::from_millis(5));
        assert!(matches!(next(&mut desk).await, DeskEvent::Offered(_)));
        // Node B dies: its liveness record lapses (here: is gone), and it never says so itself.
        store
            .delete_blob(routing::protocol::NODES_NAMESPACE, "node-b", None)
            .await
            .expect("deleted");
        assert_eq!(
            next(&mut desk).await,
            DeskEvent::Released { call: p.call.clone() }
        );
        assert!(a.calls_of(&agent).is_empty(), "nothing of node B is kept");
        assert_eq!(a.call_node(&p.call), None);
        drop(b);
    }
}
