//! The calls each node carries, kept in the state store, so that when a node dies (`kill -9`, a lost
//! host) a surviving node ends its calls in the CRM with the reason `node_lost`: nobody will ever
//! hang those calls up, and their interaction rows must not stay open for ever.
//!
//! [`LiveCalls`] wraps a node's event sink: an interaction's `Arrived` adds it to the map
//! `live-calls.<node id>` and its `Ended` removes it (the node id names one process, so a node
//! restarted under the same name is a new one). The map `live-call-nodes` lists the nodes that
//! wrote. A [`LostCallSweeper`], run by the router's leader, ends the calls of every listed node
//! that is lost, with an `Ended` at [`domain::NODE_LOST_SEQ`]: after anything the node wrote, and
//! the same from any writer, so ending a call twice stores it once.

use crate::EventSink;
use domain::{EndedBy, InteractionEvent, InteractionEventKind, InteractionId, Timestamp};
use routing::liveness::MissingNodes;
use state_store::{BlobWrite, Expect, StateError, StateStore, WriteOutcome};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// The map listing every node that keeps a map of live calls.
pub const LIVE_CALL_NODES: &str = "live-call-nodes";

/// Changes written in one round trip at most.
const MAX_CHANGES_PER_WRITE: usize = 512;

/// The map of the calls `node` carries.
pub fn live_calls_map(node: &str) -> String {
    format!("live-calls.{node}")
}

/// An event sink that also keeps this node's live calls in the state store (module docs).
pub struct LiveCalls {
    sink: Arc<dyn EventSink>,
    changes: mpsc::UnboundedSender<(InteractionId, bool)>,
}

impl LiveCalls {
    /// Wraps `sink` for the node `node` (its incarnation id) and starts the task that writes the
    /// changes, in order. Must be called inside a tokio runtime.
    pub fn start(sink: Arc<dyn EventSink>, state: StateStore, node: String) -> Self {
        let (changes, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_changes(state, node, rx));
        Self { sink, changes }
    }
}

impl EventSink for LiveCalls {
    fn log(&self, event: InteractionEvent) {
        let change = match &event.kind {
            InteractionEventKind::Arrived { .. } => Some((event.interaction.clone(), true)),
            InteractionEventKind::Ended { .. } => Some((event.interaction.clone(), false)),
            _ => None,
        };
        self.sink.log(event);
        if let Some(change) = change {
            let _ = self.changes.send(change);
        }
    }
}

/// Writes the changes as they come, several at once when they queue up.
async fn write_changes(
    state: StateStore,
    node: String,
    mut rx: mpsc::UnboundedReceiver<(InteractionId, bool)>,
) {
    let map = live_calls_map(&node);
    while let Some(first) = rx.recv().await {
        // The last change of each call wins: a call that came and went in one round is removed.
        let mut batch: BTreeMap<String, bool> = BTreeMap::new();
        batch.insert(first.0.as_str().to_string(), first.1);
        while batch.len() < MAX_CHANGES_PER_WRITE {
            match rx.try_recv() {
                Ok((call, live)) => {
                    batch.insert(call.as_str().to_string(), live);
                }
                Err(_) => break,
            }
        }
        // Listed with every write: a sweeper that took this node for dead (its liveness lapsed
        // under load) and dropped it from the list must find its later calls again.
        let listing = [(node.clone(), Vec::new())];
        if let Err(error) = state.map_update(LIVE_CALL_NODES, &listing, &[]).await {
            warn!(%error, "this node could not be listed among the nodes with live calls");
        }
        // The field is the record: nothing reads a value.
        let (live, gone): (Vec<_>, Vec<_>) = batch.into_iter().partition(|(_, live)| *live);
        let put: Vec<(String, Vec<u8>)> = live.into_iter().map(|(c, _)| (c, Vec::new())).collect();
        let remove: Vec<String> = gone.into_iter().map(|(c, _)| c).collect();
        if let Err(error) = state.map_update(&map, &put, &remove).await {
            // Only a death of this node in the meantime would leave these calls open in the CRM.
            warn!(%error, calls = put.len() + remove.len(), "live calls not recorded");
        }
    }
}

/// Blob namespace of the claims on lost calls: who counts each one.
const CLAIMS: &str = "live-calls-claims";
/// How long a claim is kept: longer than any sweep takes to finish with a node.
const CLAIM_KEPT: std::time::Duration = std::time::Duration::from_secs(600);

/// Ends, in the CRM, the calls of nodes that are lost, and forgets them; one per sweeping node.
///
/// A node is lost once its liveness record stayed missing with the store answering
/// (`routing::liveness`): a record that lapsed while the store was away says nothing. Every step
/// is safe to repeat after a reply the store lost on the way: the `Ended` stores once whoever
/// writes it and however often, a call leaves its node's map only after its end was handed to
/// the CRM's sink, and the sweeper that counts a call is the one whose claim
/// (`live-calls-claims/<call>`, naming it) the store kept, which that sweeper recognises as its
/// own when it asks again.
pub struct LostCallSweeper {
    /// This sweeping node's id, written in its claims.
    sweeper: String,
    liveness_namespace: String,
    missing: MissingNodes<Timestamp>,
    /// Nodes judged lost whose calls are not all ended yet.
    lost: BTreeSet<String>,
    /// Calls counted here and not yet removed from their node's map (so a sweep repeated after a
    /// store error does not count them again); emptied once no node is left to finish.
    counted: HashSet<String>,
    /// Calls counted and not yet reported (a sweep that failed half-way reports them next time).
    unreported: usize,
}

impl LostCallSweeper {
    /// A sweeper named `sweeper` reading the liveness records in `liveness_namespace`.
    pub fn new(sweeper: impl Into<String>, liveness_namespace: impl Into<String>) -> Self {
        Self {
            sweeper: sweeper.into(),
            liveness_namespace: liveness_namespace.into(),
            missing: MissingNodes::new(routing::liveness::NODE_LOST_AFTER),
            lost: BTreeSet::new(),
            counted: HashSet::new(),
            unreported: 0,
        }
    }

    /// This node stopped sweeping a while (it did not lead): absences count again from the next
    /// sweep.
    pub fn paused(&mut self) {
        self.missing.store_failed();
    }

    /// One sweep at `now`: judges the listed nodes and ends, through `sink`, the calls of those
    /// lost. Returns how many calls this sweeper counted since the last sweep that returned.
    pub async fn sweep(
        &mut self,
        state: &StateStore,
        sink: &dyn EventSink,
        now: Timestamp,
    ) -> Result<usize, StateError> {
        let judged = self.judge(state, now).await;
        if let Err(error) = judged {
            self.missing.store_failed();
            return Err(error);
        }
        for node in self.lost.clone() {
            self.end_calls_of(state, sink, &node, now).await?;
            state
                .map_update(LIVE_CALL_NODES, &[], std::slice::from_ref(&node))
                .await?;
            self.lost.remove(&node);
        }
        if self.lost.is_empty() {
            self.counted.clear();
        }
        Ok(std::mem::take(&mut self.unreported))
    }

    async fn judge(&mut self, state: &StateStore, now: Timestamp) -> Result<(), StateError> {
        let nodes = state.map_entries(LIVE_CALL_NODES).await?;
        self.missing
            .begin_round(now, |n| nodes.iter().any(|(listed, _)| listed == n));
        for (node, _) in nodes {
            let alive = state
                .get_blob(&self.liveness_namespace, &node, now)
                .await?
                .is_some();
            if self.missing.check(&node, alive, now) {
                self.lost.insert(node);
            }
        }
        Ok(())
    }

    async fn end_calls_of(
        &mut self,
        state: &StateStore,
        sink: &dyn EventSink,
        node: &str,
        now: Timestamp,
    ) -> Result<(), StateError> {
        let map = live_calls_map(node);
        let mut counted = 0;
        for (call, _) in state.map_entries(&map).await? {
            if let Ok(interaction) = InteractionId::new(&call) {
                sink.log(InteractionEvent {
                    interaction,
                    seq: domain::NODE_LOST_SEQ,
                    at: now,
                    kind: InteractionEventKind::Ended {
                        by: EndedBy::System,
                        reason: domain::NODE_LOST_REASON.to_string(),
                        quality: None,
                    },
                });
                if self.claim(state, &call, now).await? && self.counted.insert(call.clone()) {
                    counted += 1;
                    self.unreported += 1;
                }
            }
            state.map_update(&map, &[], std::slice::from_ref(&call)).await?;
            self.counted.remove(&call);
        }
        if counted > 0 {
            info!(node, calls = counted, "a lost node's calls ended in the CRM");
        }
        Ok(())
    }

    /// Whether this sweeper counts `call`: its claim was stored now or before.
    async fn claim(&self, state: &StateStore, call: &str, now: Timestamp) -> Result<bool, StateError> {
        let claim = BlobWrite::new().expect(Expect::Absent).ttl(CLAIM_KEPT);
        match state
            .put_blob(CLAIMS, call, self.sweeper.as_bytes(), &claim, now)
            .await?
        {
            WriteOutcome::Written { .. } => Ok(true),
            WriteOutcome::Conflict { .. } => Ok(state
                .get_blob(CLAIMS, call, now)
                .await?
                .is_some_and(|held| held.value == self.sweeper.as_bytes())),
        }
    }
}

/// How often the router's leader looks for lost nodes' calls.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// While this node (`sweeper`) leads the cluster's router (`status`), ends lost nodes' calls
/// through `sink` every second; counts them in `calls_ended_node_lost` (registered under `acd` in
/// `telemetry`).
pub fn sweep_while_leading(
    state: StateStore,
    sink: Arc<dyn EventSink>,
    sweeper: String,
    status: tokio::sync::watch::Receiver<routing::LeaderStatus>,
    telemetry: &telemetry::Telemetry,
) {
    let ended = prometheus_client::metrics::counter::Counter::<u64>::default();
    telemetry.register("acd", |r| {
        r.register(
            "calls_ended_node_lost",
            "Calls of nodes that died, ended in the CRM by this node",
            ended.clone(),
        );
    });
    tokio::spawn(async move {
        let mut sweeper = LostCallSweeper::new(sweeper, routing::protocol::NODES_NAMESPACE);
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !status.borrow().leading {
                sweeper.paused();
                continue;
            }
            match sweeper.sweep(&state, sink.as_ref(), Timestamp::now_utc()).await {
                Ok(n) => {
                    ended.inc_by(n as u64);
                }
                Err(error) => warn!(%error, "lost nodes' calls could not be ended"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{Channel, Direction, Pii};
    use state_store::{BlobWrite, StateConfig};
    use std::sync::Mutex;
    use std::time::Duration;

    #[derive(Default)]
    struct Kept(Mutex<Vec<InteractionEvent>>);

    impl EventSink for Kept {
        fn log(&self, event: InteractionEvent) {
            self.0.lock().unwrap().push(event);
        }
    }

    fn event(call: &str, seq: u32, kind: InteractionEventKind) -> InteractionEvent {
        InteractionEvent {
            interaction: InteractionId::new(call).unwrap(),
            seq,
            at: Timestamp::from_millis(1_000),
            kind,
        }
    }

    fn arrived(call: &str) -> InteractionEvent {
        event(
            call,
            0,
            InteractionEventKind::Arrived {
                channel: Channel::Voice,
                direction: Direction::Inbound,
                from: Pii::new("+4930123456".into()),
                to: Pii::new("100".into()),
            },
        )
    }

    async fn wait_for_map(state: &StateStore, map: &str, calls: &[&str]) {
        for _ in 0..500 {
            let now: Vec<String> = state
                .map_entries(map)
                .await
                .unwrap()
                .into_iter()
                .map(|(c, _)| c)
                .collect();
            if now == calls {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        panic!("{map} never held {calls:?}");
    }

    #[tokio::test]
    async fn a_dead_nodes_open_calls_end_once_as_node_lost_and_a_live_nodes_stay() {
        let state = StateStore::connect(&StateConfig::memory()).await.unwrap();
        let alive = |node: &str, ms: i64| {
            let state = state.clone();
            let node = node.to_string();
            async move {
                let renewed = BlobWrite::new().ttl(Duration::from_secs(3));
                let at = Timestamp::from_millis(ms);
                state
                    .put_blob("nodes", &node, b"alive", &renewed, at)
                    .await
                    .unwrap();
            }
        };
        alive("a.1", 0).await;
        alive("b.2", 0).await;
        let forwarded = Arc::new(Kept::default());
        let a = LiveCalls::start(forwarded.clone(), state.clone(), "a.1".into());
        let b = LiveCalls::start(forwarded.clone(), state.clone(), "b.2".into());
        a.log(arrived("c1"));
        a.log(arrived("c2"));
        a.log(event(
            "c2",
            5,
            InteractionEventKind::Ended {
                by: EndedBy::Caller,
                reason: "bye".into(),
                quality: None,
            },
        ));
        b.log(arrived("c3"));
        wait_for_map(&state, &live_calls_map("a.1"), &["c1"]).await;
        wait_for_map(&state, &live_calls_map("b.2"), &["c3"]).await;
        assert_eq!(
            forwarded.0.lock().unwrap().len(),
            4,
            "every event reaches the CRM sink"
        );

        // Both alive: nothing ends.
        let crm = Kept::default();
        let mut sweeper = LostCallSweeper::new("sweeper-1", "nodes");
        let at = |ms: i64| Timestamp::from_millis(ms);
        assert_eq!(sweeper.sweep(&state, &crm, at(2_000)).await.unwrap(), 0);
        // Node a stops renewing (its record lapses at 3 s); b renews. Missing at 5 s is not yet
        // lost: after an outage a live node renews within a second.
        alive("b.2", 4_000).await;
        assert_eq!(sweeper.sweep(&state, &crm, at(5_000)).await.unwrap(), 0);
        alive("b.2", 6_000).await;
        for ms in [6_000, 7_000] {
            assert_eq!(sweeper.sweep(&state, &crm, at(ms)).await.unwrap(), 0);
        }
        assert!(crm.0.lock().unwrap().is_empty());
        // A claim on c1 this sweeper made earlier, whose reply the store lost on the way.
        let claim = BlobWrite::new().expect(Expect::Absent);
        state
            .put_blob(CLAIMS, "c1", b"sweeper-1", &claim, at(7_000))
            .await
            .unwrap();
        // Missing for 3 s of answered checks: lost. Its open call ends as node_lost, counted by
        // the sweeper whose claim the store holds; node b's is untouched.
        assert_eq!(sweeper.sweep(&state, &crm, at(8_000)).await.unwrap(), 1);
        let ends = crm.0.lock().unwrap().clone();
        assert_eq!(ends.len(), 1);
        assert_eq!(ends[0].interaction.as_str(), "c1");
        assert_eq!(ends[0].seq, domain::NODE_LOST_SEQ);
        assert!(
            matches!(&ends[0].kind, InteractionEventKind::Ended { by: EndedBy::System, reason, .. } if reason == "node_lost")
        );
        // Forgotten: a second sweep ends nothing more.
        assert!(
            state
                .map_entries(&live_calls_map("a.1"))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            state
                .map_entries(LIVE_CALL_NODES)
                .await
                .unwrap()
                .into_iter()
                .map(|(n, _)| n)
                .collect::<Vec<_>>(),
            ["b.2"]
        );
        assert_eq!(sweeper.sweep(&state, &crm, at(8_000)).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn two_sweepers_end_a_lost_call_alike_and_only_the_claims_holder_counts_it() {
        let state = StateStore::connect(&StateConfig::memory()).await.unwrap();
        let node = LiveCalls::start(Arc::new(Kept::default()), state.clone(), "a.1".into());
        node.log(arrived("c1"));
        wait_for_map(&state, &live_calls_map("a.1"), &["c1"]).await;
        let at = |ms: i64| Timestamp::from_millis(ms);
        // The other sweeper claimed c1 and was cut off before it ended the call.
        let claim = BlobWrite::new().expect(Expect::Absent);
        state
            .put_blob(CLAIMS, "c1", b"sweeper-2", &claim, at(0))
            .await
            .unwrap();
        let crm = Kept::default();
        let mut sweeper = LostCallSweeper::new("sweeper-1", "nodes");
        for ms in [1_000, 2_000, 3_000] {
            assert_eq!(sweeper.sweep(&state, &crm, at(ms)).await.unwrap(), 0);
        }
        assert!(crm.0.lock().unwrap().is_empty(), "not lost yet");
        assert_eq!(
            sweeper.sweep(&state, &crm, at(4_000)).await.unwrap(),
            0,
            "not counted here"
        );
        let ends = crm.0.lock().unwrap().clone();
        assert_eq!(ends.len(), 1, "ended all the same");
        assert_eq!(ends[0].seq, domain::NODE_LOST_SEQ);
        assert!(
            state
                .map_entries(&live_calls_map("a.1"))
                .await
                .unwrap()
                .is_empty()
        );
    }
}
