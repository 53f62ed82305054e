//! The cluster's router state, pure: the `acd::Acd` core plus what a cluster adds to it, namely which
//! node holds each call (so its offers and announcements go there) and the last sequence number
//! applied from each node (so a command sent twice is applied once). No IO and no clock: a batch
//! comes in with its `now`, a [`Delivery`] comes out.
//!
//! Determinism is the point. The leader journals every batch it applies; a standby restores the last
//! snapshot and applies the journal after it, and ends in exactly the leader's state (same callers in
//! the same places, same agent states and times, same offer numbers), because the same batches at the
//! same times give the same result. Nothing here iterates a hash map where order could leak out.

use crate::protocol::{
    Abandonment, AgentStateEvent, Applied, Command, JournalBatch, NodeId, OutItem, QueueNotice, Refusal,
    Reply,
};
use acd::{Acd, AcdError, AcdSnapshot, CallPhase, Input, KpiSnapshot, Output, RestoreError};
use domain::{CallId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How long a lost node's last sequence number is remembered (it may come back after a long pause,
/// and must not have its next command taken for a gap); after that it is forgotten.
pub const FORGET_LOST_NODES_AFTER: Duration = Duration::from_secs(24 * 3600);

/// The router's whole state, for the snapshot blob.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouterSnapshot {
    /// The last batch applied.
    pub batch: u64,
    pub acd: AcdSnapshot,
    pub owners: BTreeMap<CallId, NodeId>,
    pub applied: BTreeMap<NodeId, u64>,
    /// Nodes let go, and when.
    #[serde(default)]
    pub lost: BTreeMap<NodeId, Timestamp>,
}

/// What one batch produced: everything to deliver, and figures.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Delivery {
    /// Notices for the calls a node holds and replies to its requests, in order.
    pub to_nodes: BTreeMap<NodeId, Vec<OutItem>>,
    /// Agent state changes, in order, for every node.
    pub events: Vec<AgentStateEvent>,
    /// Nodes let go in this batch (their out streams can go).
    pub lost_nodes: Vec<NodeId>,
    /// Offers made (routing decisions).
    pub offers: u64,
    /// Inputs the core refused (they changed nothing).
    pub refused: u64,
    /// Commands skipped as already applied.
    pub duplicates: u64,
}

/// The cluster's router. See the module documentation.
#[derive(Debug, Clone)]
pub struct ClusterRouter {
    acd: Acd,
    owners: HashMap<CallId, NodeId>,
    applied: HashMap<NodeId, u64>,
    lost: BTreeMap<NodeId, Timestamp>,
    batch: u64,
}

impl ClusterRouter {
    /// A router around `acd`, before any batch.
    pub fn new(acd: Acd) -> Self {
        Self {
            acd,
            owners: HashMap::new(),
            applied: HashMap::new(),
            lost: BTreeMap::new(),
            batch: 0,
        }
    }

    /// The router a snapshot describes.
    pub fn restore(snapshot: RouterSnapshot) -> Result<Self, RestoreError> {
        Ok(Self {
            acd: Acd::restore(snapshot.acd)?,
            owners: snapshot.owners.into_iter().collect(),
            applied: snapshot.applied.into_iter().collect(),
            lost: snapshot.lost,
            batch: snapshot.batch,
        })
    }

    /// The whole state. Equal snapshots mean equal routers.
    pub fn snapshot(&self) -> RouterSnapshot {
        RouterSnapshot {
            batch: self.batch,
            acd: self.acd.snapshot(),
            owners: self.owners.iter().map(|(c, n)| (c.clone(), n.clone())).collect(),
            applied: self.applied.iter().map(|(n, s)| (n.clone(), *s)).collect(),
            lost: self.lost.clone(),
        }
    }

    /// The routing core, for reading.
    pub fn acd(&self) -> &Acd {
        &self.acd
    }

    /// The last batch applied.
    pub fn batch(&self) -> u64 {
        self.batch
    }

    /// The last sequence number applied from `node` (0 before its first).
    pub fn applied(&self, node: &NodeId) -> u64 {
        self.applied.get(node).copied().unwrap_or(0)
    }

    /// The node holding `call`.
    pub fn owner(&self, call: &CallId) -> Option<&NodeId> {
        self.owners.get(call)
    }

    /// Nodes whose liveness matters: those holding calls, and those heard from and not let go.
    pub fn nodes_to_watch(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self
            .owners
            .values()
            .chain(self.applied.keys().filter(|n| !self.lost.contains_key(*n)))
            .cloned()
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// Live KPIs at `now`.
    pub fn kpis(&self, now: Timestamp) -> KpiSnapshot {
        self.acd.kpis(now)
    }

    /// Applies one journaled batch, in order, at its `now`.
    pub fn apply(&mut self, batch: &JournalBatch) -> Delivery {
        let mut d = Delivery::default();
        self.batch = self.batch.max(batch.batch);
        for item in &batch.items {
            match item {
                Applied::Node { node, seq, command } => {
                    if *seq <= self.applied(node) {
                        d.duplicates += 1;
                        continue;
                    }
                    self.applied.insert(node.clone(), *seq);
                    // A node heard from is alive, whatever was decided before.
                    self.lost.remove(node);
                    self.command(batch.now, node, command, &mut d);
                }
                Applied::Router { input } => {
                    let _ = self.handle(batch.now, None, input.clone(), None, &mut d);
                }
                Applied::NodeLost { node } => self.let_go(batch.now, node, &mut d),
            }
        }
        for node in &d.lost_nodes {
            d.to_nodes.remove(node);
        }
        d
    }

    fn command(&mut self, now: Timestamp, node: &NodeId, command: &Command, d: &mut Delivery) {
        match command {
            Command::Input { input } => {
                let _ = self.handle(now, Some(node), input.clone(), None, d);
            }
            Command::Request { id, input } => {
                let reply = match self.handle(now, Some(node), input.clone(), None, d).0 {
                    Ok(()) => Reply::Done,
                    Err(e) => Reply::Refused {
                        refusal: Refusal::from(&e),
                    },
                };
                reply_to(d, node, *id, reply);
            }
            Command::Abandon { id, call } => {
                let input = Input::CallAbandoned { call: call.clone() };
                let (_, abandonment) = self.handle(now, Some(node), input, Some(call), d);
                reply_to(d, node, *id, Reply::Abandoned { abandonment });
            }
            Command::Adopt { call } => {
                if self.acd.call(call).is_some() {
                    self.owners.insert(call.clone(), node.clone());
                }
            }
            Command::Kpis { id } => {
                let kpis = Box::new(self.acd.kpis(now));
                reply_to(d, node, *id, Reply::Kpis { kpis });
            }
            Command::Flush { id } => reply_to(d, node, *id, Reply::Done),
        }
    }

    /// Feeds one input to the core and routes what comes out. A call enqueued by a node belongs to it.
    /// Returns the core's answer and, if `abandoning` is given, where that caller was.
    fn handle(
        &mut self,
        now: Timestamp,
        node: Option<&NodeId>,
        input: Input,
        abandoning: Option<&CallId>,
        d: &mut Delivery,
    ) -> (Result<(), AcdError>, Option<Abandonment>) {
        let mut touched: Vec<CallId> = input_call(&input).into_iter().cloned().collect();
        let mut claimed = None;
        if let (Input::CallEnqueued(req), Some(node)) = (&input, node)
            && self.acd.call(&req.call).is_none()
        {
            self.owners.insert(req.call.clone(), node.clone());
            claimed = Some(req.call.clone());
        }
        // A call an agent places belongs to the node that drives it, as an enqueued one does.
        if let (Input::CallPlaced { call, .. }, Some(node)) = (&input, node)
            && !self.holds(call)
        {
            self.owners.insert(call.clone(), node.clone());
            claimed = Some(call.clone());
        }
        let result = self.acd.handle(now, input);
        if result.is_err() {
            d.refused += 1;
        }
        if let Some(call) = claimed
            && !self.holds(&call)
        {
            // Refused (or gone at once): the call never became this node's.
            self.owners.remove(&call);
        }
        let abandonment = self.route(d, abandoning, &mut touched);
        for call in touched {
            if !self.holds(&call) {
                self.owners.remove(&call);
            }
        }
        (result, abandonment)
    }

    /// Routes the core's pending outputs: notices to the call's node, state changes to everyone.
    fn route(
        &mut self,
        d: &mut Delivery,
        abandoning: Option<&CallId>,
        touched: &mut Vec<CallId>,
    ) -> Option<Abandonment> {
        let mut abandonment = None;
        while let Some(output) = self.acd.poll_output() {
            let (call, notice) = match output {
                Output::Offer(offer) => {
                    d.offers += 1;
                    (offer.call.clone(), QueueNotice::Offer(offer))
                }
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
                } => {
                    touched.push(call.clone());
                    (
                        call,
                        QueueNotice::Overflowed {
                            target: format!("{target:?}"),
                            reason: format!("{reason:?}"),
                        },
                    )
                }
                Output::AgentStateChanged { agent, from, to, at } => {
                    d.events.push(AgentStateEvent { agent, from, to, at });
                    continue;
                }
                Output::Abandoned {
                    call,
                    queue,
                    position,
                    waited_ms,
                } => {
                    if abandoning == Some(&call) {
                        abandonment = Some(Abandonment {
                            queue,
                            position,
                            waited_ms,
                        });
                    }
                    touched.push(call);
                    continue;
                }
                Output::Queued { .. } | Output::Answered { .. } => continue,
            };
            if let Some(node) = self.owners.get(&call) {
                d.to_nodes
                    .entry(node.clone())
                    .or_default()
                    .push(OutItem::Notice { call, notice });
            }
        }
        abandonment
    }

    /// Lets go of every call `node` holds: a waiting or ringing caller as abandoned (a ringing agent
    /// is freed without blame), a connected one as ended (its agent goes to wrap-up). Nobody else's
    /// call is touched.
    fn let_go(&mut self, now: Timestamp, node: &NodeId, d: &mut Delivery) {
        let mut calls: Vec<CallId> = self
            .owners
            .iter()
            .filter(|(_, n)| *n == node)
            .map(|(c, _)| c.clone())
            .collect();
        calls.sort();
        for call in calls {
            let input = match self.acd.call(&call).map(|h| h.phase) {
                Some(CallPhase::Connected(_)) => Some(Input::CallEnded { call: call.clone() }),
                Some(_) => Some(Input::CallAbandoned { call: call.clone() }),
                // An agent's own call: it ended with its node, the agent goes to wrap-up.
                None if self.acd.placed_call_agent(&call).is_some() => {
                    Some(Input::CallEnded { call: call.clone() })
                }
                None => None,
            };
            if let Some(input) = input {
                let _ = self.handle(now, None, input, None, d);
            }
            self.owners.remove(&call);
        }
        self.lost.insert(node.clone(), now);
        let horizon = now - FORGET_LOST_NODES_AFTER;
        let forgotten: Vec<NodeId> = self
            .lost
            .iter()
            .filter(|(_, at)| **at < horizon)
            .map(|(n, _)| n.clone())
            .collect();
        for n in forgotten {
            self.lost.remove(&n);
            self.applied.remove(&n);
        }
        d.lost_nodes.push(node.clone());
    }
}

fn reply_to(d: &mut Delivery, node: &NodeId, id: u64, reply: Reply) {
    d.to_nodes
        .entry(node.clone())
        .or_default()
        .push(OutItem::Reply { id, reply });
}

/// The call an input is about, if any.
fn input_call(input: &Input) -> Option<&CallId> {
    match input {
        Input::CallEnqueued(req) => Some(&req.call),
        Input::CallAbandoned { call }
        | Input::OfferAccepted { call, .. }
        | Input::OfferRejected { call, .. }
        | Input::OfferWithdrawn { call }
        | Input::CallEnded { call }
        | Input::CallPlaced { call, .. } => Some(call),
        _ => None,
    }
}

impl ClusterRouter {
    /// Whether the core still holds `call`: queued, ringing, connected, or placed by an agent.
    fn holds(&self, call: &CallId) -> bool {
        self.acd.call(call).is_some() || self.acd.placed_call_agent(call).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use acd::{AcdConfig, AgentConfig, AgentState, CallRequest, Priority, QueueConfig, QueueMembership};
    use domain::{AgentId, QueueId};

    fn q(s: &str) -> QueueId {
        QueueId::new(s).unwrap()
    }
    fn a(s: &str) -> AgentId {
        AgentId::new(s).unwrap()
    }
    fn c(s: &str) -> CallId {
        CallId::new(s).unwrap()
    }
    fn n(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }
    fn t(secs: i64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    fn router(agents: usize) -> ClusterRouter {
        let config = AcdConfig {
            queues: vec![QueueConfig {
                wrap_up_secs: 30,
                ..QueueConfig::new(q("support"))
            }],
            agents: (1..=agents)
                .map(|i| AgentConfig {
                    id: a(&format!("a{i}")),
                    skills: Default::default(),
                    queues: vec![QueueMembership {
                        queue: q("support"),
                        rank: 1,
                    }],
                })
                .collect(),
            random_seed: 3,
        };
        ClusterRouter::new(Acd::new(config).unwrap())
    }

    /// Drives a router batch by batch, numbering the batches and each node's commands.
    struct Driver {
        router: ClusterRouter,
        seqs: BTreeMap<NodeId, u64>,
        journal: Vec<JournalBatch>,
    }

    impl Driver {
        fn new(agents: usize) -> Self {
            Self {
                router: router(agents),
                seqs: BTreeMap::new(),
                journal: Vec::new(),
            }
        }
        fn item(&mut self, node: &str, command: Command) -> Applied {
            let seq = self.seqs.entry(n(node)).or_default();
            *seq += 1;
            Applied::Node {
                node: n(node),
                seq: *seq,
                command,
            }
        }
        fn batch(&mut self, secs: i64, items: Vec<Applied>) -> Delivery {
            let batch = JournalBatch {
                batch: self.router.batch() + 1,
                now: t(secs),
                items,
            };
            self.journal.push(batch.clone());
            self.router.apply(&batch)
        }
        fn input(&mut self, secs: i64, node: &str, input: Input) -> Delivery {
            let item = self.item(node, Command::Input { input });
            self.batch(secs, vec![item])
        }
        fn enqueue(&mut self, secs: i64, node: &str, call: &str, priority: u8) -> Delivery {
            let req = CallRequest {
                priority: Priority::new(priority).unwrap(),
                ..CallRequest::new(c(call), q("support"))
            };
            self.input(secs, node, Input::CallEnqueued(req))
        }
    }

    fn offers(d: &Delivery, node: &str) -> Vec<(String, Vec<String>)> {
        d.to_nodes
            .get(&n(node))
            .into_iter()
            .flatten()
            .filter_map(|i| match i {
                OutItem::Notice {
                    notice: QueueNotice::Offer(o),
                    ..
                } => Some((
                    o.call.to_string(),
                    o.agents.iter().map(|a| a.to_string()).collect(),
                )),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn offers_go_to_the_node_holding_the_call_and_states_to_everyone() {
        let mut w = Driver::new(2);
        w.enqueue(1, "n1", "c1", 0);
        w.enqueue(2, "n2", "c2", 0);
        let d = w.input(3, "n3", Input::AgentLogin { agent: a("a1") });
        assert_eq!(offers(&d, "n1"), [("c1".into(), vec!["a1".into()])]);
        assert!(
            !d.to_nodes.contains_key(&n("n3")),
            "the desktop's node hears nothing directly"
        );
        assert_eq!(
            d.events.iter().map(|e| e.to.clone()).collect::<Vec<_>>(),
            [AgentState::Available, AgentState::Reserved]
        );
        let d = w.input(4, "n3", Input::AgentLogin { agent: a("a2") });
        assert_eq!(offers(&d, "n2"), [("c2".into(), vec!["a2".into()])]);
        assert_eq!(w.router.owner(&c("c2")), Some(&n("n2")));
        assert_eq!(d.offers, 1);
    }

    #[test]
    fn requests_are_answered_with_the_cores_own_refusal() {
        let mut w = Driver::new(1);
        let item = w.item(
            "n1",
            Command::Request {
                id: 5,
                input: Input::WrapUpDone { agent: a("a1") },
            },
        );
        let d = w.batch(1, vec![item]);
        let replies = &d.to_nodes[&n("n1")];
        assert!(matches!(
            &replies[..],
            [OutItem::Reply {
                id: 5,
                reply: Reply::Refused {
                    refusal: Refusal::IllegalTransition { .. }
                }
            }]
        ));
        assert_eq!(d.refused, 1);
        w.enqueue(2, "n1", "c1", 0);
        let item = w.item("n1", Command::Abandon { id: 6, call: c("c1") });
        let d = w.batch(5, vec![item]);
        assert_eq!(
            d.to_nodes[&n("n1")],
            [OutItem::Reply {
                id: 6,
                reply: Reply::Abandoned {
                    abandonment: Some(Abandonment {
                        queue: q("support"),
                        position: 1,
                        waited_ms: 3000
                    })
                }
            }]
        );
        assert_eq!(w.router.owner(&c("c1")), None, "the caller left");
    }

    #[test]
    fn a_command_sent_twice_is_applied_once() {
        let mut w = Driver::new(1);
        w.input(0, "n2", Input::AgentLogin { agent: a("a1") });
        let enqueue = w.item(
            "n1",
            Command::Input {
                input: Input::CallEnqueued(CallRequest::new(c("c1"), q("support"))),
            },
        );
        let d = w.batch(1, vec![enqueue.clone()]);
        assert_eq!(d.offers, 1);
        let before = w.router.snapshot();
        // The node's append was retried: the same command comes again, alone and beside a new one.
        let d = w.batch(2, vec![enqueue.clone()]);
        assert_eq!((d.offers, d.duplicates, d.refused), (0, 1, 0));
        assert!(d.to_nodes.is_empty() && d.events.is_empty());
        let after = w.router.snapshot();
        assert_eq!(after.acd, before.acd);
        assert_eq!(after.applied, before.applied);
        let kpis = w.router.kpis(t(3));
        assert_eq!(kpis.queues[0].counters.queued, 1, "counted once");
    }

    #[test]
    fn a_lost_nodes_calls_are_let_go_and_nobody_elses_place_moves() {
        let mut w = Driver::new(2);
        w.input(0, "n3", Input::AgentLogin { agent: a("a1") });
        w.input(0, "n3", Input::AgentLogin { agent: a("a2") });
        w.enqueue(1, "n1", "c1", 0); // rings a1, then connected
        w.input(
            2,
            "n1",
            Input::OfferAccepted {
                call: c("c1"),
                agent: a("a1"),
            },
        );
        w.enqueue(3, "n1", "c2", 0); // rings a2
        w.enqueue(4, "n2", "b1", 0); // waits
        w.enqueue(5, "n1", "c3", 0); // waits behind b1
        w.enqueue(6, "n2", "b2", 3); // waits, ahead by priority
        let b1_before = w.router.acd().call(&c("b1")).unwrap();
        let d = w.batch(10, vec![Applied::NodeLost { node: n("n1") }]);
        assert_eq!(d.lost_nodes, [n("n1")]);
        assert!(w.router.acd().call(&c("c1")).is_none() && w.router.acd().call(&c("c3")).is_none());
        // a1 goes to wrap-up after the connected call; a2 is freed without blame and takes the next
        // caller in line, b2 (priority), then b1 keeps its place and time.
        assert!(matches!(
            w.router.acd().agent_state(&a("a1")),
            Some((AgentState::WrapUp { .. }, _))
        ));
        assert_eq!(offers(&d, "n2"), [("b2".into(), vec!["a2".into()])]);
        let b1_after = w.router.acd().call(&c("b1")).unwrap();
        assert_eq!(b1_after, b1_before);
        assert_eq!(w.router.acd().call_position(&c("b1")), Some(1));
        assert!(w.router.owner(&c("c2")).is_none());
        assert_eq!(w.router.nodes_to_watch(), [n("n2"), n("n3")]);
        // A lost node that speaks again is not taken for one with a gap: its numbering goes on.
        let d = w.enqueue(11, "n1", "c4", 0);
        assert_eq!(d.duplicates, 0);
        assert_eq!(w.router.owner(&c("c4")), Some(&n("n1")));
    }

    #[test]
    fn a_lost_nodes_placed_calls_end_and_other_nodes_ones_go_on() {
        let mut w = Driver::new(2);
        w.input(0, "n3", Input::AgentLogin { agent: a("a1") });
        w.input(0, "n3", Input::AgentLogin { agent: a("a2") });
        let placed = |agent: &str, call: &str| Input::CallPlaced {
            agent: a(agent),
            call: c(call),
            wrap_up_secs: 30,
            then_not_ready: None,
        };
        w.input(1, "n1", placed("a1", "p1"));
        w.input(1, "n2", placed("a2", "p2"));
        assert_eq!(w.router.owner(&c("p1")), Some(&n("n1")));
        // Said again, it changes nothing, owner included.
        w.input(2, "n1", placed("a1", "p1"));
        assert_eq!(w.router.owner(&c("p1")), Some(&n("n1")));
        assert_eq!(w.router.nodes_to_watch(), [n("n1"), n("n2"), n("n3")]);
        w.batch(10, vec![Applied::NodeLost { node: n("n1") }]);
        // a1's call went with n1: wrap-up; a2's call on n2 goes on.
        assert!(matches!(
            w.router.acd().agent_state(&a("a1")),
            Some((AgentState::WrapUp { .. }, _))
        ));
        assert_eq!(w.router.acd().placed_call_agent(&c("p2")), Some(a("a2")));
        assert!(w.router.owner(&c("p1")).is_none());
        assert_eq!(w.router.owner(&c("p2")), Some(&n("n2")));
        // Its end, from its node, lets the owner go.
        w.input(11, "n2", Input::CallEnded { call: c("p2") });
        assert!(w.router.owner(&c("p2")).is_none());
    }

    #[test]
    fn a_restored_router_replaying_the_journal_equals_the_original() {
        let mut w = Driver::new(3);
        for i in 1..=3 {
            w.input(
                0,
                "n3",
                Input::AgentLogin {
                    agent: a(&format!("a{i}")),
                },
            );
        }
        let mut snapshot = None;
        for k in 0..30i64 {
            let node = ["n1", "n2"][usize::try_from(k % 2).unwrap()];
            w.enqueue(k * 7, node, &format!("c{k}"), u8::try_from(k % 3).unwrap());
            if k % 4 == 1 {
                let call = format!("c{}", k - 1);
                if let Some(h) = w.router.acd().call(&c(&call))
                    && let CallPhase::Ringing(agents) = h.phase
                {
                    let owner = w.router.owner(&c(&call)).unwrap().to_string();
                    w.input(
                        k * 7 + 1,
                        &owner,
                        Input::OfferAccepted {
                            call: c(&call),
                            agent: agents[0].clone(),
                        },
                    );
                }
            }
            if k == 12 {
                snapshot = Some(w.router.snapshot());
            }
            if k % 5 == 4 {
                w.batch(k * 7 + 3, vec![Applied::Router { input: Input::Tick }]);
            }
        }
        let snapshot = snapshot.unwrap();
        let mut restored = ClusterRouter::restore(snapshot.clone()).unwrap();
        for batch in w.journal.iter().filter(|b| b.batch > snapshot.batch) {
            restored.apply(batch);
        }
        assert_eq!(restored.snapshot(), w.router.snapshot());
        assert_eq!(restored.kpis(t(300)), w.router.kpis(t(300)));
    }
}
