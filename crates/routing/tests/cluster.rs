//! The router is cluster-wide: several nodes (clients) and two leader candidates in one process, on
//! the memory store and on Redis (`REDIS_URL`), each with connections of its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use acd::{AgentState, Input};
use common::*;
use domain::{AgentId, CallId};
use routing::protocol::{
    self, Command, INPUT_STREAM, InBatch, InItem, JOURNAL_STREAM, NodeId, OutBatch, OutItem, ROUTER_GROUP,
    Reply, encode, out_stream,
};
use routing::{Clock, Leader, StepOutcome, spawn_leader};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

on_both_backends!(
    calls_from_every_node_reach_agents_in_order_of_arrival_and_priority,
    no_agent_is_offered_two_calls_at_once,
    a_resent_input_changes_nothing,
    a_dead_nodes_calls_are_let_go_and_nobody_elses_place_moves,
);

async fn calls_from_every_node_reach_agents_in_order_of_arrival_and_priority(h: Harness) {
    let clock = Clock::system();
    let l1 = spawn_leader(h.open().await, leader_config("n1", config(1, 0)), clock.clone());
    let l2 = spawn_leader(h.open().await, leader_config("n2", config(1, 0)), clock.clone());
    let nodes = [
        h.client("n1", clock.clone()).await,
        h.client("n2", clock.clone()).await,
        h.client("n3", clock.clone()).await,
    ];
    let mut states = nodes[0].subscribe_agent_states();
    // (call, node, priority), in order of arrival.
    let plan = [
        ("c1", 0, 0),
        ("c2", 1, 0),
        ("c3", 2, 5),
        ("c4", 0, 0),
        ("c5", 1, 5),
        ("c6", 2, 0),
    ];
    let (log_tx, mut log) = mpsc::unbounded_channel();
    for (call, node, priority) in plan {
        let client = nodes[node].clone();
        let mut notices = client.enqueue(call_p(call, priority));
        // Applied before the next one arrives, whichever node that is on.
        client.save_now().await;
        let log = log_tx.clone();
        tokio::spawn(async move {
            let offer = next_offer(&mut notices).await;
            let agent = offer.agents[0].clone();
            log.send((offer.call.clone(), client.node().clone())).unwrap();
            client.input(Input::OfferAccepted {
                call: offer.call.clone(),
                agent,
            });
            client.input(Input::CallEnded { call: offer.call });
        });
    }
    let (waiting, available, _) = nodes[1].queue_state(&q("support")).await.unwrap();
    assert_eq!((waiting, available), (6, 0), "nobody to take them yet");

    // The one agent logs in from a desktop on the third node and takes every call in turn.
    nodes[2]
        .request(Input::AgentLogin { agent: a("a1") })
        .await
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..plan.len() {
        let (call, node) = tokio::time::timeout(Duration::from_secs(20), log.recv())
            .await
            .expect("every call is offered")
            .unwrap();
        let planned = plan.iter().position(|p| p.0 == call.as_str()).unwrap();
        assert_eq!(
            &node,
            nodes[plan[planned].1].node(),
            "offered on the node holding the call"
        );
        order.push(call.to_string());
    }
    assert_eq!(order, ["c3", "c5", "c1", "c2", "c4", "c6"]);

    // Every node sees the same figures and the agent's state changes.
    nodes[0].save_now().await;
    nodes[1].save_now().await;
    nodes[2].save_now().await;
    let kpis = nodes[1].kpis().await.unwrap();
    assert_eq!(kpis.queues[0].counters.answered, 6);
    let mut live = nodes[2].live_kpis();
    tokio::time::timeout(
        Duration::from_secs(20),
        live.wait_for(|k| k.queues.first().is_some_and(|q| q.counters.answered == 6)),
    )
    .await
    .expect("published KPIs catch up")
    .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(20), states.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.agent, first.to), (a("a1"), AgentState::Available));
    // A refused request comes back as the core's own error.
    let refused = nodes[0].request(Input::WrapUpDone { agent: a("a1") }).await;
    assert!(
        matches!(refused, Err(acd::AcdError::IllegalTransition { .. })),
        "{refused:?}"
    );
    l1.stop().await;
    l2.stop().await;
}

async fn no_agent_is_offered_two_calls_at_once(h: Harness) {
    const CALLS: usize = 60;
    let clock = Clock::system();
    let l1 = spawn_leader(h.open().await, leader_config("n1", config(5, 0)), clock.clone());
    let l2 = spawn_leader(h.open().await, leader_config("n2", config(5, 0)), clock.clone());
    let nodes = [
        h.client("n1", clock.clone()).await,
        h.client("n2", clock.clone()).await,
        h.client("n3", clock.clone()).await,
    ];
    for i in 1..=5 {
        nodes[i % 3]
            .request(Input::AgentLogin {
                agent: a(&format!("a{i}")),
            })
            .await
            .unwrap();
    }
    // What the phones see: the call each agent is carrying right now.
    let phones: Arc<parking_lot::Mutex<HashMap<AgentId, CallId>>> = Arc::default();
    let (done_tx, mut done) = mpsc::unbounded_channel();
    for i in 0..CALLS {
        let client = nodes[i % 3].clone();
        let phones = phones.clone();
        let done = done_tx.clone();
        tokio::spawn(async move {
            let call = c(&format!("call{i}"));
            let mut notices = client.enqueue(call_p(call.as_str(), u8::try_from(i % 4).unwrap()));
            let offer = next_offer(&mut notices).await;
            let agent = offer.agents[0].clone();
            let double = phones.lock().insert(agent.clone(), call.clone());
            client.input(Input::OfferAccepted {
                call: call.clone(),
                agent: agent.clone(),
            });
            tokio::time::sleep(Duration::from_millis(u64::try_from(i % 7).unwrap() * 3)).await;
            phones.lock().remove(&agent);
            client.input(Input::CallEnded { call: call.clone() });
            done.send((call, agent, double)).unwrap();
        });
    }
    // Meanwhile a supervisor on another node sends agents on a break and back.
    for round in 0..10 {
        let agent = a(&format!("a{}", round % 5 + 1));
        let _ = nodes[round % 3]
            .request(Input::AgentNotReady {
                agent: agent.clone(),
                reason: acd::ReasonCode::new("break").unwrap(),
            })
            .await;
        let _ = nodes[(round + 1) % 3].request(Input::AgentReady { agent }).await;
    }
    let mut answered = HashSet::new();
    for _ in 0..CALLS {
        let (call, agent, double) = tokio::time::timeout(Duration::from_secs(60), done.recv())
            .await
            .expect("every caller is served")
            .unwrap();
        assert_eq!(
            double, None,
            "{agent} was offered {call} while carrying another call"
        );
        assert!(answered.insert(call));
    }
    for n in &nodes {
        n.save_now().await;
    }
    let kpis = nodes[0].kpis().await.unwrap();
    assert_eq!(kpis.queues[0].counters.queued, CALLS as u64);
    assert_eq!(kpis.queues[0].counters.answered, CALLS as u64);
    l1.stop().await;
    l2.stop().await;
}

async fn a_resent_input_changes_nothing(h: Harness) {
    let (clock, _hand) = Clock::manual(t(1_000_000));
    let store = h.open().await;
    let mut leader = Leader::new(h.open().await, leader_config("n1", config(2, 0)), clock);
    assert!(leader.try_take_over().await.unwrap());
    let node = NodeId::new("raw.00000001").unwrap();
    let item = |seq, command| InItem { seq, command };
    let entry = |items| {
        encode(&InBatch {
            node: node.clone(),
            items,
        })
    };
    let out_len = || async { store.stream_len(&out_stream(&node)).await.unwrap() };
    let block = Duration::from_millis(20);

    let first = entry(vec![
        item(
            1,
            Command::Input {
                input: Input::AgentLogin { agent: a("a1") },
            },
        ),
        item(
            2,
            Command::Input {
                input: Input::CallEnqueued(call_p("c1", 0)),
            },
        ),
    ]);
    store.stream_append(INPUT_STREAM, &first).await.unwrap();
    assert!(matches!(
        leader.step(block).await.unwrap(),
        StepOutcome::Committed {
            commands: 2,
            offers: 1,
            ..
        }
    ));
    let offers = store
        .stream_read(&out_stream(&node), None, 10, None)
        .await
        .unwrap();
    assert_eq!(offers.len(), 1);
    let before = leader.router().unwrap().snapshot();
    let journal_before = store.stream_len(JOURNAL_STREAM).await.unwrap();

    // The node's append was retried after a lost reply: the same entry comes again.
    store.stream_append(INPUT_STREAM, &first).await.unwrap();
    assert!(matches!(
        leader.step(block).await.unwrap(),
        StepOutcome::Committed {
            commands: 0,
            offers: 0,
            ..
        }
    ));
    assert_eq!(leader.router().unwrap().snapshot(), before, "nothing changed");
    assert_eq!(store.stream_len(JOURNAL_STREAM).await.unwrap(), journal_before);
    assert_eq!(out_len().await, 1, "no second offer");
    assert_eq!(store.stream_pending(INPUT_STREAM, ROUTER_GROUP).await.unwrap(), 0);

    // A retried entry that overlaps a new command: only the new one is applied (and answered once).
    let overlapping = entry(vec![
        item(
            2,
            Command::Input {
                input: Input::CallEnqueued(call_p("c1", 0)),
            },
        ),
        item(
            3,
            Command::Request {
                id: 1,
                input: Input::OfferAccepted {
                    call: c("c1"),
                    agent: a("a1"),
                },
            },
        ),
    ]);
    store.stream_append(INPUT_STREAM, &overlapping).await.unwrap();
    store.stream_append(INPUT_STREAM, &overlapping).await.unwrap();
    leader.step(block).await.unwrap();
    leader.step(block).await.unwrap();
    let out = store
        .stream_read(&out_stream(&node), None, 10, None)
        .await
        .unwrap();
    let replies: Vec<OutItem> = out
        .iter()
        .flat_map(|e| protocol::decode::<OutBatch>(&e.payload).unwrap().items)
        .filter(|i| matches!(i, OutItem::Reply { .. }))
        .collect();
    assert_eq!(
        replies,
        [OutItem::Reply {
            id: 1,
            reply: Reply::Done
        }]
    );
    let router = leader.router().unwrap();
    assert!(matches!(
        router.acd().call(&c("c1")).unwrap().phase,
        acd::CallPhase::Connected(_)
    ));

    // A command sent after a missing one waits for it, then both apply in their order.
    let later = entry(vec![item(
        5,
        Command::Input {
            input: Input::CallEnded { call: c("c1") },
        },
    )]);
    store.stream_append(INPUT_STREAM, &later).await.unwrap();
    assert_eq!(leader.step(block).await.unwrap(), StepOutcome::Idle);
    assert!(
        leader.router().unwrap().acd().call(&c("c1")).is_some(),
        "held back"
    );
    let missing = entry(vec![item(
        4,
        Command::Input {
            input: Input::AgentLogin { agent: a("a2") },
        },
    )]);
    store.stream_append(INPUT_STREAM, &missing).await.unwrap();
    assert!(matches!(
        leader.step(block).await.unwrap(),
        StepOutcome::Committed { commands: 2, .. }
    ));
    let router = leader.router().unwrap();
    assert!(router.acd().call(&c("c1")).is_none(), "ended after the login");
    assert_eq!(router.applied(&node), 5);

    // Garbage is acknowledged and dropped; nothing changes.
    let before = router.snapshot();
    store.stream_append(INPUT_STREAM, b"not json").await.unwrap();
    leader.step(block).await.unwrap();
    assert_eq!(leader.router().unwrap().snapshot(), before);
    assert_eq!(leader.stats().undecodable, 1);
    assert_eq!(store.stream_pending(INPUT_STREAM, ROUTER_GROUP).await.unwrap(), 0);
    let kpis = leader.router().unwrap().kpis(t(1_000_000));
    assert_eq!(
        (kpis.queues[0].counters.queued, kpis.queues[0].counters.answered),
        (1, 1),
        "counted once"
    );
}

async fn a_dead_nodes_calls_are_let_go_and_nobody_elses_place_moves(h: Harness) {
    let clock = Clock::system();
    let leader = spawn_leader(h.open().await, leader_config("n1", config(3, 30)), clock.clone());
    let doomed = routing::RouterClient::start(
        h.open().await,
        routing::ClientConfig {
            liveness_ttl: Duration::from_secs(1),
            liveness_every: Duration::from_millis(200),
            ..routing::ClientConfig::new("doomed")
        },
        clock.clone(),
    )
    .await
    .unwrap();
    let survivor = h.client("survivor", clock.clone()).await;
    let mut states = survivor.subscribe_agent_states();
    survivor
        .request(Input::AgentLogin { agent: a("a1") })
        .await
        .unwrap();
    survivor
        .request(Input::AgentLogin { agent: a("a2") })
        .await
        .unwrap();

    // On the doomed node: a connected call (a1), a ringing one (a2), one waiting.
    let mut connected = doomed.enqueue(call_p("d1", 0));
    let offer = next_offer(&mut connected).await;
    assert_eq!(offer.agents, [a("a1")]);
    doomed.input(Input::OfferAccepted {
        call: c("d1"),
        agent: a("a1"),
    });
    let mut ringing = doomed.enqueue(call_p("d2", 0));
    assert_eq!(next_offer(&mut ringing).await.agents, [a("a2")]);
    // Waiting, in this order: s1 (survivor), d3 (doomed), s2 (survivor).
    let mut s1 = survivor.enqueue(call_p("s1", 0));
    survivor.save_now().await;
    let _d3 = doomed.enqueue(call_p("d3", 0));
    doomed.save_now().await;
    let s2 = survivor.enqueue(call_p("s2", 0));
    survivor.save_now().await;
    let s2_before = leader
        .with_leader(|l| l.router().unwrap().acd().call(&c("s2")).unwrap())
        .await;

    // The doomed node's desk relay streams (call-control's) hold entries too.
    for stream in [
        protocol::desk_commands_stream(doomed.node().as_str()),
        protocol::desk_replies_stream(doomed.node().as_str()),
    ] {
        h.open().await.stream_append(&stream, b"left over").await.unwrap();
    }
    doomed.kill();
    // a2 is freed without blame when the ring is let go, and takes the next caller: s1.
    let offer = next_offer(&mut s1).await;
    assert_eq!(offer.agents, [a("a2")]);
    let (gone, a1_state, s2_after, s2_position, s2_owner) = leader
        .with_leader(|l| {
            let r = l.router().unwrap();
            (
                ["d1", "d2", "d3"].map(|d| r.acd().call(&c(d)).is_none()),
                r.acd().agent_state(&a("a1")).map(|(s, _)| s.clone()),
                r.acd().call(&c("s2")).unwrap(),
                r.acd().call_position(&c("s2")),
                r.owner(&c("s2")).cloned(),
            )
        })
        .await;
    assert_eq!(gone, [true, true, true], "the dead node's calls are let go");
    assert!(
        matches!(a1_state, Some(AgentState::WrapUp { .. })),
        "{a1_state:?}"
    );
    assert_eq!(s2_after, s2_before, "the survivor's caller keeps place and time");
    assert_eq!(s2_position, Some(1));
    assert_eq!(s2_owner.as_ref(), Some(survivor.node()));
    let store = h.open().await;
    // Every stream only the dead node read is deleted with it.
    for stream in protocol::node_streams(doomed.node()) {
        assert_eq!(store.stream_len(&stream).await.unwrap(), 0, "{stream}");
    }
    // The survivor's desktops saw a1 go to wrap-up and a2 freed without blame.
    let wanted = [
        (a("a1"), AgentState::OnCall, a1_state.clone().unwrap()),
        (a("a2"), AgentState::Reserved, AgentState::Available),
    ];
    let mut seen = Vec::new();
    while !wanted.iter().all(|w| seen.contains(w)) {
        let e = tokio::time::timeout(Duration::from_secs(20), states.recv())
            .await
            .expect("the state changes reach the survivor")
            .unwrap();
        seen.push((e.agent, e.from, e.to));
    }
    drop(s2);
    leader.stop().await;
}
