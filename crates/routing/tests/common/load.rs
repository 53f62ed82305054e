//! Callers and phones for load tests: each call waits for its offer on the node that holds it, the
//! agent's phone checks it is not already carrying a call, the call is answered, held a moment and
//! ended.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use super::{c, call_p, next_offer_within};
use acd::Input;
use domain::{AgentId, CallId};
use parking_lot::Mutex;
use routing::RouterClient;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What the agents' phones carry right now, and every time one was asked to carry two calls.
#[derive(Default)]
pub struct Phones {
    carrying: Mutex<HashMap<AgentId, CallId>>,
    pub doubles: Mutex<Vec<(AgentId, CallId, CallId)>>,
}

/// How long a caller waits for an offer. Callers wait in line through a disruption: a Sentinel
/// failover with one replica confirms no write until the demoted primary has rejoined as a replica
/// (Sentinel turns a healthy old primary into one some seconds after the promotion): 14-15 s
/// per failover measured here, and
/// [`disrupted_cluster`] keeps callers waiting through one on purpose.
const CALLER_PATIENCE: Duration = Duration::from_secs(120);

/// A served call: who took it.
pub type Served = (CallId, AgentId);

/// Enqueues `call` on `node` and serves it when offered: answered, held for `hold`, ended.
pub fn serve(
    node: RouterClient,
    call: &str,
    priority: u8,
    hold: Duration,
    phones: Arc<Phones>,
    done: mpsc::UnboundedSender<Served>,
) {
    let call = c(call);
    let mut notices = node.enqueue(call_p(call.as_str(), priority));
    tokio::spawn(async move {
        let offer = next_offer_within(&mut notices, CALLER_PATIENCE).await;
        let agent = offer.agents[0].clone();
        if let Some(other) = phones.carrying.lock().insert(agent.clone(), call.clone()) {
            phones.doubles.lock().push((agent.clone(), other, call.clone()));
        }
        node.input(Input::OfferAccepted {
            call: call.clone(),
            agent: agent.clone(),
        });
        tokio::time::sleep(hold).await;
        phones.carrying.lock().remove(&agent);
        node.input(Input::CallEnded { call: call.clone() });
        let _ = done.send((call, agent));
    });
}

/// Waits for `n` served calls (60 s for each at most), returning them.
pub async fn collect(done: &mut mpsc::UnboundedReceiver<Served>, n: usize) -> Vec<Served> {
    let mut served = Vec::new();
    while served.len() < n {
        let s = tokio::time::timeout(Duration::from_secs(60), done.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} callers were served", served.len()))
            .unwrap();
        served.push(s);
    }
    served
}

/// Three nodes and two leader candidates on stores from `open`, serving callers while `disrupt`
/// runs (a Redis failover, a restart), then holding callers in their places while it runs again.
/// Checks: every caller served exactly once, no phone asked to carry two calls, every command each
/// node had confirmed applied exactly once, and every waiting caller's place and time the same
/// after the disruption, in the store and at the leader, then served in that order.
pub async fn disrupted_cluster(
    open: impl AsyncFn() -> state_store::StateStore,
    disrupt: Arc<dyn Fn() + Send + Sync>,
) {
    use super::{a, config, leader_config};
    use routing::{ClientConfig, Clock, read_router, spawn_leader};
    const CALLS: usize = 30;
    super::log_to_test_output();
    let clock = Clock::system();
    let acd = config(4, 0);
    let leaders = [
        spawn_leader(open().await, leader_config("r1", acd.clone()), clock.clone()),
        spawn_leader(open().await, leader_config("r2", acd.clone()), clock.clone()),
    ];
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        let cfg = ClientConfig {
            liveness_ttl: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            ..ClientConfig::new(name)
        };
        nodes.push(
            RouterClient::start(open().await, cfg, clock.clone())
                .await
                .unwrap(),
        );
    }
    for i in 1..=4usize {
        nodes[i % 3]
            .request(Input::AgentLogin {
                agent: a(&format!("a{i}")),
            })
            .await
            .unwrap();
    }

    // Under load.
    let phones = Arc::new(Phones::default());
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let mut disruption = None;
    for i in 0..CALLS {
        let hold = Duration::from_millis(100 + u64::try_from(i % 5).unwrap() * 40);
        let priority = u8::try_from(i % 3).unwrap();
        serve(
            nodes[i % 3].clone(),
            &format!("load{i}"),
            priority,
            hold,
            phones.clone(),
            done_tx.clone(),
        );
        if i == 10 {
            let d = disrupt.clone();
            disruption = Some(tokio::task::spawn_blocking(move || d()));
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    disruption.unwrap().await.unwrap();
    let served = collect(&mut done, CALLS).await;
    assert_eq!(*phones.doubles.lock(), [], "no phone carried two calls");
    let mut calls: Vec<&CallId> = served.iter().map(|(c, _)| c).collect();
    calls.sort();
    calls.dedup();
    assert_eq!(calls.len(), CALLS, "every caller served once");
    for n in &nodes {
        n.save_now().await;
    }
    // A node counts a command sent once the store confirmed its entry. An append whose confirmation
    // timed out may still have landed (and been applied) while the node sends the same entry again,
    // so the counts agree once every node's retries are done: wait for that, then compare.
    let leading = leaders
        .iter()
        .find(|l| l.status().borrow().leading)
        .expect("a leader");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let sent: Vec<(routing::NodeId, u64)> = nodes
            .iter()
            .map(|n| {
                (
                    n.node().clone(),
                    n.stats().commands_sent.load(std::sync::atomic::Ordering::SeqCst),
                )
            })
            .collect();
        let applied: Vec<(routing::NodeId, u64)> = leading
            .with_leader(|l| {
                let r = l.router().unwrap();
                sent.iter().map(|(n, _)| (n.clone(), r.applied(n))).collect()
            })
            .await;
        if applied == sent {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "every confirmed command applied, once: applied {applied:?}, sent {sent:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kpis = nodes[0].kpis().await.unwrap();
    let counters = &kpis.queues[0].counters;
    if (counters.queued, counters.answered) != (CALLS as u64, CALLS as u64) {
        // Say what the router did with the call it did not count, not only that it did not.
        let stats = leading.with_leader(|l| l.stats().clone()).await;
        let calls = leading
            .with_leader(|l| l.router().map(|r| r.acd().calls()).unwrap_or_default())
            .await;
        panic!(
            "{CALLS} callers served, counted {counters:?}; leader {stats:?}; calls the router still holds: {calls:?}"
        );
    }

    // Quiet: callers wait in their places while the store is disrupted again.
    for i in 1..=4usize {
        nodes[0]
            .request(Input::AgentNotReady {
                agent: a(&format!("a{i}")),
                reason: acd::ReasonCode::new("break").unwrap(),
            })
            .await
            .unwrap();
    }
    let waiting: Vec<String> = (0..6).map(|i| format!("wait{i}")).collect();
    for (i, call) in waiting.iter().enumerate() {
        serve(
            nodes[i % 3].clone(),
            call,
            u8::try_from(i % 2).unwrap(),
            Duration::ZERO,
            phones.clone(),
            done_tx.clone(),
        );
        nodes[i % 3].save_now().await;
    }
    let places = |r: &routing::ClusterRouter| -> Vec<(String, Option<u32>, Option<acd::HeldCall>)> {
        waiting
            .iter()
            .map(|w| (w.clone(), r.acd().call_position(&c(w)), r.acd().call(&c(w))))
            .collect()
    };
    let before = leading.with_leader(|l| places(l.router().unwrap())).await;
    assert!(
        before.iter().all(|(_, p, _)| p.is_some()),
        "all waiting: {before:?}"
    );
    let d = disrupt.clone();
    tokio::task::spawn_blocking(move || d()).await.unwrap();
    let store = open().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let rebuilt = loop {
        match read_router(&store, &acd, domain::Timestamp::now_utc()).await {
            Ok(r) => break r,
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the store stays unreadable: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(places(&rebuilt), before, "the store holds every place");
    for n in &nodes {
        n.save_now().await;
    }
    let leading = leaders
        .iter()
        .find(|l| l.status().borrow().leading)
        .expect("a leader");
    assert_eq!(leading.with_leader(|l| places(l.router().unwrap())).await, before);

    // One agent comes back and serves them in their order.
    let mut expected = before.clone();
    expected.sort_by_key(|(_, p, _)| *p);
    let expected: Vec<String> = expected.into_iter().map(|(w, _, _)| w).collect();
    nodes[1]
        .request(Input::AgentReady { agent: a("a1") })
        .await
        .unwrap();
    let order: Vec<String> = collect(&mut done, waiting.len())
        .await
        .into_iter()
        .map(|(call, _)| call.to_string())
        .collect();
    assert_eq!(order, expected);
    for l in leaders {
        l.stop().await;
    }
}
