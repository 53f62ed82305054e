//! Failover without losing anyone's place, and fencing of an old leader: on the memory store and on
//! Redis (`REDIS_URL`), on a manual clock so that lease lapses happen exactly when the test says.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use acd::{AgentState, CallPhase, CallRequest, Input, QueueConfig};
use common::*;
use routing::protocol::{
    self, EVENTS_STREAM, EventBatch, JOURNAL_STREAM, JournalBatch, OutBatch, OutItem, QueueNotice, out_stream,
};
use routing::{
    ClientConfig, Clock, Leader, LeaderConfig, LeaderError, LeaderHandle, ManualClock, RouterClient,
    StepOutcome,
};
use std::time::Duration;
use tokio::sync::mpsc;

on_both_backends!(
    a_standby_takes_over_with_every_place_kept,
    an_old_leader_frozen_past_its_lease_changes_nothing,
    a_takeover_replays_the_journal_after_the_snapshot,
    a_delivery_lost_with_the_primary_comes_again_from_the_next_leader_and_rings_once,
    an_answer_given_while_no_leader_ran_is_taken_and_the_agent_not_blamed,
    a_node_whose_record_lapsed_is_lost_only_once_it_stays_missing_with_the_store_answering,
);

/// Queue `support` with wrap-up, priority aging, announcements and RONA; agents a1..a4.
fn rich_config() -> acd::AcdConfig {
    let mut config = config(4, 30);
    config.queues[0] = QueueConfig {
        wrap_up_secs: 30,
        priority_aging_secs: Some(20),
        announce_every_secs: Some(10),
        offer_timeout_secs: 15,
        ..QueueConfig::new(q("support"))
    };
    config
}

fn manual_leader_config(name: &str, acd: acd::AcdConfig) -> LeaderConfig {
    LeaderConfig {
        lease_ttl: Duration::from_secs(10),
        renew_every: Duration::ZERO,
        snapshot_every_batches: 5,
        // Only the lease lapse of the test should remove anyone.
        node_check_every: Duration::from_secs(3600),
        idle_block: Duration::from_millis(20),
        ..LeaderConfig::new(name, acd)
    }
}

async fn manual_client(h: &Harness, name: &str, clock: &Clock) -> RouterClient {
    RouterClient::start(
        h.open().await,
        ClientConfig {
            liveness_ttl: Duration::from_secs(3600),
            ..ClientConfig::new(name)
        },
        clock.clone(),
    )
    .await
    .unwrap()
}

/// Moves the manual clock `secs` seconds, one at a time, each followed by a round trip through the
/// leader (which renews its lease and fires the timers due on the way).
async fn advance(hand: &ManualClock, node: &RouterClient, secs: u64) {
    for _ in 0..secs {
        hand.advance(Duration::from_secs(1));
        node.save_now().await;
    }
}

/// The next call a test's agent served, as its serving task logged it.
async fn next_served(log: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(20), log.recv())
        .await
        .expect("the next caller is served")
        .unwrap()
}

async fn a_standby_takes_over_with_every_place_kept(h: Harness) {
    let (clock, hand) = Clock::manual(t(1_000_000_000));
    let l1 = LeaderHandle::spawn(Leader::new(
        h.open().await,
        manual_leader_config("n1", rich_config()),
        clock.clone(),
    ));
    let mut l2 = Leader::new(
        h.open().await,
        manual_leader_config("n2", rich_config()),
        clock.clone(),
    );
    let (node_a, node_b, desk) = (
        manual_client(&h, "a", &clock).await,
        manual_client(&h, "b", &clock).await,
        manual_client(&h, "desk", &clock).await,
    );
    for agent in ["a1", "a2", "a3", "a4"] {
        desk.request(Input::AgentLogin { agent: a(agent) }).await.unwrap();
    }
    desk.request(Input::AgentNotReady {
        agent: a("a4"),
        reason: acd::ReasonCode::new("lunch").unwrap(),
    })
    .await
    .unwrap();
    assert!(!l2.try_take_over().await.unwrap(), "n1 leads");

    // t=1: c1 on node a, answered by a1 and still connected.
    advance(&hand, &desk, 1).await;
    let mut c1 = node_a.enqueue(call_p("c1", 0));
    assert_eq!(next_offer(&mut c1).await.agents, [a("a1")]);
    advance(&hand, &desk, 1).await;
    node_a.input(Input::OfferAccepted {
        call: c("c1"),
        agent: a("a1"),
    });
    // t=3: c2 (priority 2) on node b rings a2, who does not answer.
    advance(&hand, &desk, 1).await;
    let mut c2 = node_b.enqueue(call_p("c2", 2));
    assert_eq!(next_offer(&mut c2).await.agents, [a("a2")]);
    // t=4: c3 on node a, answered by a3 and ended at t=8: a3 in wrap-up until t=38.
    advance(&hand, &desk, 1).await;
    let mut c3 = node_a.enqueue(call_p("c3", 0));
    assert_eq!(next_offer(&mut c3).await.agents, [a("a3")]);
    node_a.input(Input::OfferAccepted {
        call: c("c3"),
        agent: a("a3"),
    });
    advance(&hand, &desk, 4).await;
    node_a.input(Input::CallEnded { call: c("c3") });
    // Waiting from t=9..11: c4 (b), c5 (a, priority 3), c6 (b, a callback requested 100 s ago), c7 (a).
    let (log_tx, mut log) = mpsc::unbounded_channel();
    let serve = |client: RouterClient, mut notices: mpsc::UnboundedReceiver<QueueNotice>| {
        let log = log_tx.clone();
        tokio::spawn(async move {
            let offer = next_offer(&mut notices).await;
            client.input(Input::OfferAccepted {
                call: offer.call.clone(),
                agent: offer.agents[0].clone(),
            });
            client.input(Input::CallEnded {
                call: offer.call.clone(),
            });
            client.save_now().await;
            log.send(offer.call.to_string()).unwrap();
        })
    };
    advance(&hand, &desk, 1).await;
    serve(node_b.clone(), node_b.enqueue(call_p("c4", 0)));
    advance(&hand, &desk, 1).await;
    serve(node_a.clone(), node_a.enqueue(call_p("c5", 3)));
    let callback = CallRequest {
        original_enqueued_at: Some(hand.now() - Duration::from_secs(100)),
        ..call_p("c6", 0)
    };
    serve(node_b.clone(), node_b.enqueue(callback));
    advance(&hand, &desk, 1).await;
    serve(node_a.clone(), node_a.enqueue(call_p("c7", 0)));
    serve(node_b.clone(), c2);
    advance(&hand, &desk, 1).await;
    for n in [&node_a, &node_b, &desk] {
        n.save_now().await;
    }

    // The leader dies (no hand-over): what it knew at that instant.
    let death = hand.now();
    let (before, kpis_before, positions, stats) = l1
        .with_leader(|l| {
            let r = l.router().unwrap();
            let positions: Vec<Option<u32>> = ["c4", "c5", "c6", "c7"]
                .iter()
                .map(|x| r.acd().call_position(&c(x)))
                .collect();
            (r.snapshot(), r.kpis(death), positions, l.stats().clone())
        })
        .await;
    l1.kill();
    assert_eq!(
        positions,
        [Some(3), Some(2), Some(1), Some(4)],
        "callback first, then by aged priority"
    );
    let snapshot = h
        .open()
        .await
        .get_blob(protocol::ROUTER_NAMESPACE, protocol::SNAPSHOT_KEY, death)
        .await
        .unwrap();
    assert!(snapshot.is_some(), "a snapshot was written ({stats:?})");

    // The lease lapses; the standby takes over and holds exactly what the dead leader held.
    hand.advance(Duration::from_secs(11));
    assert!(l2.try_take_over().await.unwrap());
    let after = l2.router().unwrap().snapshot();
    assert_eq!(
        after, before,
        "every caller's place and every agent's state and time"
    );
    assert_eq!(l2.router().unwrap().kpis(death), kpis_before);
    for (agent, state) in [
        ("a1", AgentState::OnCall),
        ("a2", AgentState::Reserved),
        (
            "a4",
            AgentState::NotReady {
                reason: acd::ReasonCode::new("lunch").unwrap(),
            },
        ),
    ] {
        assert_eq!(
            l2.router().unwrap().acd().agent_state(&a(agent)).unwrap().0,
            &state
        );
    }

    // It goes on from there. c2 (ringing since t=3 for 15 s) rings for the 6 s it had left when n1
    // last ran at t=12 (no answer could be heard while nobody led), so until t=29, then rings out
    // without blame and goes back to its place; a2, still available, takes the first in line (c2
    // tries someone else first); a4 comes back from lunch and serves the others, in order.
    let l2 = LeaderHandle::spawn(l2);
    desk.save_now().await;
    advance(&hand, &desk, 5).await;
    let ringing = l2
        .with_leader(|l| l.router().unwrap().acd().call(&c("c2")).unwrap().phase)
        .await;
    assert_eq!(ringing, CallPhase::Ringing(vec![a("a2")]), "still ringing");
    advance(&hand, &desk, 2).await;
    assert_eq!(next_served(&mut log).await, "c6", "a2 serves the first in line");
    let a2 = l2
        .with_leader(|l| l.router().unwrap().acd().agent_state(&a("a2")).unwrap().0.clone())
        .await;
    assert!(
        matches!(a2, AgentState::WrapUp { .. }),
        "a2 was not put not ready: {a2:?}"
    );
    desk.request(Input::AgentReady { agent: a("a4") }).await.unwrap();
    let mut order = Vec::new();
    for i in 0..4 {
        if i > 0 {
            desk.request(Input::WrapUpDone { agent: a("a4") }).await.unwrap();
        }
        order.push(next_served(&mut log).await);
    }
    assert_eq!(order, ["c5", "c2", "c4", "c7"]);
    let phase = l2
        .with_leader(|l| l.router().unwrap().acd().call(&c("c1")).unwrap().phase)
        .await;
    assert_eq!(
        phase,
        CallPhase::Connected(a("a1")),
        "a call in progress is untouched"
    );
    l2.stop().await;
}

async fn an_old_leader_frozen_past_its_lease_changes_nothing(h: Harness) {
    let (clock, hand) = Clock::manual(t(2_000_000_000));
    let cfg = |name: &str| LeaderConfig {
        lease_ttl: Duration::from_secs(2),
        claim_every: Duration::from_millis(100),
        ..manual_leader_config(name, config(3, 0))
    };
    let mut l1 = Leader::new(h.open().await, cfg("n1"), clock.clone());
    let mut l2 = Leader::new(h.open().await, cfg("n2"), clock.clone());
    let mut l3 = Leader::new(h.open().await, cfg("n3"), clock.clone());
    let node = manual_client(&h, "a", &clock).await;
    let store = h.open().await;
    let block = Duration::from_millis(20);
    assert!(l1.try_take_over().await.unwrap());
    assert!(!l2.try_take_over().await.unwrap());

    node.input(Input::AgentLogin { agent: a("a1") });
    let mut c1 = node.enqueue(call_p("c1", 0));
    while !matches!(
        l1.router().unwrap().acd().call(&c("c1")).map(|h| h.phase),
        Some(CallPhase::Ringing(_))
    ) {
        l1.step(block).await.unwrap();
    }
    assert_eq!(next_offer(&mut c1).await.agents, [a("a1")]);

    // c2 arrives and a2 logs in; l1 reads and applies them, and freezes before its commit.
    let mut c2 = node.enqueue(call_p("c2", 0));
    node.input(Input::AgentLogin { agent: a("a2") });
    eventually("the node sent its inputs", || {
        node.stats()
            .commands_sent
            .load(std::sync::atomic::Ordering::Relaxed)
            == 4
    })
    .await;
    let mut frozen = None;
    while frozen.is_none() {
        frozen = l1.prepare(block).await.unwrap();
    }
    let frozen = frozen.unwrap();
    assert_eq!(frozen.delivery.offers, 1, "l1 would offer c2 to a2");

    // Frozen past its lease: l2 takes over, claims what l1 had read, and offers c2 itself.
    hand.advance(Duration::from_secs(3));
    assert!(l2.try_take_over().await.unwrap());
    assert!(l2.token() > l1.token());
    assert!(matches!(
        l2.step(block).await.unwrap(),
        StepOutcome::Committed { offers: 1, .. }
    ));
    assert_eq!(next_offer(&mut c2).await.agents, [a("a2")]);

    // l1 wakes up and commits: refused whole, and it throws its state away.
    assert!(matches!(l1.commit(frozen).await, Err(LeaderError::Fenced)));
    assert!(!l1.is_leading());
    assert!(!l1.renew().await.unwrap());
    assert!(!l1.try_take_over().await.unwrap(), "l2 holds the lease");
    let out: Vec<OutItem> = read_decoded::<OutBatch>(&store, &out_stream(node.node()))
        .await
        .into_iter()
        .flat_map(|b| b.items)
        .collect();
    let offers_of_c2 = out
        .iter()
        .filter(|i| matches!(i, OutItem::Notice { call, notice: QueueNotice::Offer(_) } if *call == c("c2")))
        .count();
    assert_eq!(offers_of_c2, 1, "only l2's offer reached the node");
    let journal: Vec<u64> = read_decoded::<JournalBatch>(&store, JOURNAL_STREAM)
        .await
        .into_iter()
        .map(|b| b.batch)
        .collect();
    assert!(
        journal.windows(2).all(|w| w[1] == w[0] + 1),
        "one history: {journal:?}"
    );
    let a2_reserved = read_decoded::<EventBatch>(&store, EVENTS_STREAM)
        .await
        .into_iter()
        .flat_map(|b| b.events)
        .filter(|e| e.agent == a("a2") && e.to == AgentState::Reserved)
        .count();
    assert_eq!(a2_reserved, 1);

    // Now l2 freezes; l3 takes over. l2, thawed, reads c3's input (taking it from the group) and is
    // fenced at its commit; l3 claims the input l2 sat on and applies it.
    hand.advance(Duration::from_secs(3));
    assert!(l3.try_take_over().await.unwrap());
    node.input(Input::AgentLogin { agent: a("a3") });
    let mut c3 = node.enqueue(call_p("c3", 0));
    eventually("the node sent c3", || {
        node.stats()
            .commands_sent
            .load(std::sync::atomic::Ordering::Relaxed)
            == 6
    })
    .await;
    let mut stolen = None;
    while stolen.is_none() {
        stolen = l2.prepare(block).await.unwrap();
    }
    assert!(matches!(
        l2.commit(stolen.unwrap()).await,
        Err(LeaderError::Fenced)
    ));
    // l3's first batch is its own: the offers still ringing resume.
    assert!(matches!(
        l3.step(block).await.unwrap(),
        StepOutcome::Committed {
            commands: 0,
            offers: 0,
            ..
        }
    ));
    assert_eq!(
        l3.step(block).await.unwrap(),
        StepOutcome::Idle,
        "the input sits with l2"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    hand.advance(Duration::from_secs(1));
    l3.claim_stalled().await.unwrap();
    assert!(matches!(
        l3.step(block).await.unwrap(),
        StepOutcome::Committed { offers: 1, .. }
    ));
    assert_eq!(next_offer(&mut c3).await.agents, [a("a3")]);
    assert_eq!(
        l3.router().unwrap().applied(node.node()),
        6,
        "every input applied once, in order"
    );
}

/// Every entry of `stream`, decoded (the store's own entries: a failure to decode fails the test).
async fn read_decoded<T: serde::de::DeserializeOwned>(
    store: &state_store::StateStore,
    stream: &str,
) -> Vec<T> {
    store
        .stream_read(stream, None, 1000, None)
        .await
        .unwrap()
        .iter()
        .map(|e| protocol::decode::<T>(&e.payload).unwrap())
        .collect()
}

/// a1 logs in and c1 arrives on `node`; `leader` offers c1 to a1. The call's notices and the offer.
async fn a1_rings_for_c1(
    node: &RouterClient,
    leader: &mut Leader,
) -> (mpsc::UnboundedReceiver<QueueNotice>, acd::Offer) {
    node.input(Input::AgentLogin { agent: a("a1") });
    let mut notices = node.enqueue(call_p("c1", 0));
    wait_sent(node, 2).await;
    pump(leader).await;
    let offer = next_offer(&mut notices).await;
    assert_eq!(offer.agents, [a("a1")]);
    (notices, offer)
}

/// Steps `leader` until it has nothing left to do.
async fn pump(leader: &mut Leader) {
    while leader.step(Duration::from_millis(20)).await.unwrap() != StepOutcome::Idle {}
}

async fn wait_sent(node: &RouterClient, n: u64) {
    eventually("the node sent its inputs", || {
        node.stats()
            .commands_sent
            .load(std::sync::atomic::Ordering::Relaxed)
            == n
    })
    .await;
}

/// Two leader candidates on a manual clock, the first leading; one node; a store to look with.
struct Takeover {
    hand: ManualClock,
    l1: Leader,
    l2: Leader,
    node: RouterClient,
    store: state_store::StateStore,
}

impl Takeover {
    async fn start(h: &Harness) -> Self {
        let (clock, hand) = Clock::manual(t(3_000_000_000));
        let mut l1 = Leader::new(
            h.open().await,
            manual_leader_config("n1", rich_config()),
            clock.clone(),
        );
        let l2 = Leader::new(
            h.open().await,
            manual_leader_config("n2", rich_config()),
            clock.clone(),
        );
        let node = manual_client(h, "a", &clock).await;
        let store = h.open().await;
        assert!(l1.try_take_over().await.unwrap());
        Self {
            hand,
            l1,
            l2,
            node,
            store,
        }
    }
}

async fn a_takeover_replays_the_journal_after_the_snapshot(h: Harness) {
    let Takeover {
        hand,
        mut l1,
        mut l2,
        node,
        store,
    } = Takeover::start(&h).await;
    for agent in ["a1", "a2"] {
        node.input(Input::AgentLogin { agent: a(agent) });
    }
    for call in ["c1", "c2", "c3"] {
        let _ = node.enqueue(call_p(call, 0));
    }
    wait_sent(&node, 5).await;
    pump(&mut l1).await;
    l1.snapshot_now().await.unwrap();
    let snapshot_batch = l1.router().unwrap().batch();
    assert_eq!(
        store.stream_len(JOURNAL_STREAM).await.unwrap(),
        1,
        "trimmed up to the snapshot"
    );
    hand.advance(Duration::from_secs(4));
    node.input(Input::OfferAccepted {
        call: c("c1"),
        agent: a("a1"),
    });
    wait_sent(&node, 6).await;
    pump(&mut l1).await;
    hand.advance(Duration::from_secs(4));
    let _ = node.enqueue(call_p("c4", 7));
    node.input(Input::OfferRejected {
        call: c("c2"),
        agent: a("a2"),
    });
    wait_sent(&node, 8).await;
    pump(&mut l1).await;
    let after_snapshot = l1.router().unwrap().batch() - snapshot_batch;
    let before = l1.router().unwrap().snapshot();
    drop(l1);

    hand.advance(Duration::from_secs(11));
    assert!(l2.try_take_over().await.unwrap());
    assert_eq!(l2.stats().replayed, after_snapshot);
    assert!(after_snapshot >= 2);
    assert_eq!(l2.router().unwrap().snapshot(), before);
}

/// A delivery can be lost with a Redis primary (written, not yet replicated) while its batch, which
/// the store confirmed, is in the journal: the next leader delivers the batches after its snapshot
/// again (offers, replies and agent state changes), and a node that had a batch skips it.
async fn a_delivery_lost_with_the_primary_comes_again_from_the_next_leader_and_rings_once(h: Harness) {
    let Takeover {
        hand,
        mut l1,
        mut l2,
        node,
        store,
    } = Takeover::start(&h).await;
    let mut states = node.subscribe_agent_states();
    let (mut notices, offer) = a1_rings_for_c1(&node, &mut l1).await;
    let reserved = loop {
        let event = tokio::time::timeout(Duration::from_secs(20), states.recv())
            .await
            .expect("a1's state changes reach the node")
            .unwrap();
        if event.to == AgentState::Reserved {
            break event;
        }
    };
    assert_eq!(reserved.agent, a("a1"));

    // The primary goes, and the node's out stream and the agent events with it; the journal was
    // confirmed.
    store.stream_delete(EVENTS_STREAM).await.unwrap();
    let stream = out_stream(node.node());
    assert!(
        !store
            .stream_read(&stream, None, 100, None)
            .await
            .unwrap()
            .is_empty()
    );
    store.stream_delete(&stream).await.unwrap();
    drop(l1);
    hand.advance(Duration::from_secs(11));
    assert!(l2.try_take_over().await.unwrap());

    let again: Vec<_> = read_decoded::<OutBatch>(&store, &stream)
        .await
        .into_iter()
        .flat_map(|b| b.items)
        .filter_map(|item| match item {
            OutItem::Notice {
                call,
                notice: QueueNotice::Offer(o),
            } => Some((call, o.offer)),
            _ => None,
        })
        .collect();
    assert_eq!(again, [(c("c1"), offer.offer)], "the offer delivered again");
    let events_again: Vec<AgentState> = read_decoded::<EventBatch>(&store, EVENTS_STREAM)
        .await
        .into_iter()
        .flat_map(|b| b.events)
        .map(|e| e.to)
        .collect();
    assert!(
        events_again.contains(&AgentState::Reserved),
        "the agent events delivered again: {events_again:?}"
    );
    eventually("the node to skip the batches it had", || {
        let stats = node.stats();
        stats.redelivered.load(std::sync::atomic::Ordering::Relaxed) >= 1
            && stats
                .redelivered_events
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 1
    })
    .await;
    assert!(
        states.try_recv().is_err(),
        "no agent state change passed on twice"
    );
    while let Ok(notice) = notices.try_recv() {
        assert!(
            !matches!(notice, QueueNotice::Offer(_)),
            "the phone rang twice: {notice:?}"
        );
    }
}

/// An agent answered while no leader ran (the store failed over; the node's `OfferAccepted` waits
/// in its retries): the next leader does not ring the offer out for that time, so the answer lands
/// on the offer it was given for and nobody is blamed or rung again.
async fn an_answer_given_while_no_leader_ran_is_taken_and_the_agent_not_blamed(h: Harness) {
    let Takeover {
        hand,
        mut l1,
        mut l2,
        node,
        store: _,
    } = Takeover::start(&h).await;
    let (mut notices, _offer) = a1_rings_for_c1(&node, &mut l1).await;

    // The leader goes; longer than the ring time (15 s) passes before the next one leads.
    drop(l1);
    hand.advance(Duration::from_secs(31));
    assert!(l2.try_take_over().await.unwrap());
    pump(&mut l2).await;
    // The answer given meanwhile arrives now.
    node.input(Input::OfferAccepted {
        call: c("c1"),
        agent: a("a1"),
    });
    wait_sent(&node, 3).await;
    pump(&mut l2).await;

    let router = l2.router().unwrap();
    assert_eq!(
        router.acd().call(&c("c1")).map(|held| held.phase),
        Some(CallPhase::Connected(a("a1"))),
        "answered by the agent who answered"
    );
    assert!(matches!(
        router.acd().agent_state(&a("a1")),
        Some((AgentState::OnCall, _))
    ));
    assert_eq!(l2.stats().offers, 0, "not offered again");
    assert_eq!(l2.stats().refused, 0, "the answer was taken");
    while let Ok(notice) = notices.try_recv() {
        assert!(
            !matches!(notice, QueueNotice::Offer(_) | QueueNotice::OfferCancelled { .. }),
            "the phone was rung again or cancelled: {notice:?}"
        );
    }
}

/// A store outage longer than the liveness TTL lets every node's record lapse, the live ones' too:
/// the leader lets a node's calls go only once its record stayed missing for `node_lost_after`,
/// check after check, while the store answered.
async fn a_node_whose_record_lapsed_is_lost_only_once_it_stays_missing_with_the_store_answering(h: Harness) {
    let (clock, hand) = Clock::manual(t(4_000_000_000));
    let cfg = LeaderConfig {
        node_check_every: Duration::from_secs(1),
        node_lost_after: Duration::from_secs(3),
        ..manual_leader_config("n1", config(2, 0))
    };
    let mut leader = Leader::new(h.open().await, cfg, clock.clone());
    assert!(leader.try_take_over().await.unwrap());
    // The node renews its record only when the test says.
    let node = RouterClient::start(
        h.open().await,
        ClientConfig {
            liveness_ttl: Duration::from_secs(3600),
            liveness_every: Duration::from_secs(3600),
            ..ClientConfig::new("b")
        },
        clock.clone(),
    )
    .await
    .unwrap();
    let record = node.node().as_str().to_owned();
    let _notices = node.enqueue(call_p("c1", 0));
    wait_sent(&node, 1).await;
    pump(&mut leader).await;
    let store = h.open().await;
    let holds_c1 = |leader: &Leader| leader.router().unwrap().acd().call(&c("c1")).is_some();
    assert!(holds_c1(&leader));

    let lapse = || async {
        store
            .delete_blob(protocol::NODES_NAMESPACE, &record, None)
            .await
            .unwrap()
    };

    // The record lapsed during an outage; the node renews it two seconds after the store is back.
    lapse().await;
    for _ in 0..2 {
        leader.check_nodes().await.unwrap();
        hand.advance(Duration::from_secs(1));
    }
    node.announce().await.unwrap();
    for _ in 0..3 {
        leader.check_nodes().await.unwrap();
        hand.advance(Duration::from_secs(1));
    }
    pump(&mut leader).await;
    assert!(holds_c1(&leader), "a node that renewed in time keeps its calls");

    // Then it stops for good: three seconds of answers without its record let its calls go.
    lapse().await;
    for _ in 0..3 {
        leader.check_nodes().await.unwrap();
        hand.advance(Duration::from_secs(1));
        pump(&mut leader).await;
        assert!(
            holds_c1(&leader),
            "not yet: missing for less than node_lost_after"
        );
    }
    leader.check_nodes().await.unwrap();
    pump(&mut leader).await;
    assert!(!holds_c1(&leader), "a node missing for node_lost_after is lost");
}
