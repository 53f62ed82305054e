//! The ACD owner task keeps the router's state in the state store and resumes from it after a
//! restart: agents keep their state, kept calls their place, and calls the old process held are let
//! go. Every test runs on the memory backend and, when `REDIS_URL` is set, on Redis.

// A failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

use acd::{AcdConfig, AgentConfig, AgentState, CallRequest, Input, QueueConfig, QueueMembership, ReasonCode};
use call_control::AcdHandle;
use call_control::QueueNotice;
use call_control::acd_task::{ACD_STATE_NAMESPACE, Persistence, ResumeReport};
use domain::{AgentId, CallId, QueueId, Timestamp};
use state_store::{BlobWrite, StateConfig, StateStore};
use std::collections::HashMap;
use std::time::Duration;
use tokio::sync::mpsc;

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn memory() {
                super::$name(state_store::StateStore::memory()).await;
            }
            #[tokio::test]
            async fn redis() {
                if let Some(store) = super::redis_store(stringify!($name)).await {
                    super::$name(store).await;
                }
            }
        }
    )*};
}

on_both_backends!(
    agents_keep_their_state_and_kept_calls_their_place_across_a_restart,
    a_kept_call_that_was_ringing_goes_back_without_blaming_the_agent,
    an_unreadable_saved_state_starts_the_router_fresh,
    a_call_an_agent_placed_ends_with_the_process_that_drove_it,
);

async fn redis_store(test: &str) -> Option<StateStore> {
    let Ok(url) = std::env::var("REDIS_URL") else {
        assert!(std::env::var("CI").is_err(), "CI must provide REDIS_URL");
        eprintln!("REDIS_URL unset: skipping {test} on Redis");
        return None;
    };
    let prefix = format!("acdresume{}{test}", std::process::id());
    Some(
        StateStore::connect(&StateConfig::redis(url, prefix))
            .await
            .unwrap(),
    )
}

fn q(s: &str) -> QueueId {
    QueueId::new(s).unwrap()
}
fn a(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}
fn c(s: &str) -> CallId {
    CallId::new(s).unwrap()
}

fn config(agents: &[&str]) -> AcdConfig {
    let mut sales = QueueConfig::new(q("sales"));
    sales.wrap_up_secs = 60;
    AcdConfig {
        queues: vec![sales],
        agents: agents
            .iter()
            .map(|id| AgentConfig {
                id: a(id),
                skills: Default::default(),
                queues: vec![QueueMembership {
                    queue: q("sales"),
                    rank: 1,
                }],
            })
            .collect(),
        random_seed: 7,
    }
}

fn persistence(store: &StateStore, test: &str) -> Persistence {
    Persistence {
        store: store.clone(),
        key: format!("node-{test}"),
    }
}

async fn next_offer(rx: &mut mpsc::UnboundedReceiver<QueueNotice>) -> acd::Offer {
    loop {
        let notice = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an offer within 5 s")
            .expect("the ACD task is running");
        if let QueueNotice::Offer(offer) = notice {
            return offer;
        }
    }
}

async fn agent_state(acd: &AcdHandle, agent: &str) -> AgentState {
    let kpis = acd.kpis().await.unwrap();
    kpis.agents
        .into_iter()
        .find(|k| k.agent == a(agent))
        .unwrap()
        .state
}

async fn agents_keep_their_state_and_kept_calls_their_place_across_a_restart(store: StateStore) {
    let persist = persistence(&store, "places");
    let (acd, report) = AcdHandle::resume(config(&["a1", "a2"]), false, None, persist.clone(), |_| None)
        .await
        .unwrap();
    assert_eq!(report, ResumeReport::default());
    let training = ReasonCode::new("training").unwrap();
    acd.request(Input::AgentLogin { agent: a("a1") }).await.unwrap();
    acd.request(Input::AgentNotReady {
        agent: a("a1"),
        reason: training.clone(),
    })
    .await
    .unwrap();
    acd.request(Input::AgentLogin { agent: a("a2") }).await.unwrap();
    // a2 takes a live call; three more wait behind it: two callbacks and a caller on the line.
    let mut live = acd.enqueue(CallRequest::new(c("live"), q("sales")));
    assert_eq!(next_offer(&mut live).await.agents, vec![a("a2")]);
    acd.request(Input::OfferAccepted {
        call: c("live"),
        agent: a("a2"),
    })
    .await
    .unwrap();
    let first_wait = Timestamp::now_utc();
    for id in ["cb1", "gone", "cb2"] {
        drop(acd.enqueue(CallRequest::new(c(id), q("sales"))));
    }
    acd.save_now().await;

    // A new process on the same store: the callbacks are taken back, the others died with the old one.
    let restarted_at = Timestamp::now_utc();
    let mut kept: HashMap<CallId, mpsc::UnboundedReceiver<QueueNotice>> = HashMap::new();
    let (acd2, report) = AcdHandle::resume(config(&["a1", "a2", "a3"]), false, None, persist, |held| {
        if !held.call.as_str().starts_with("cb") {
            return None;
        }
        assert!(held.enqueued_at <= Timestamp::now_utc() && held.enqueued_at >= first_wait);
        let (tx, rx) = mpsc::unbounded_channel();
        kept.insert(held.call.clone(), rx);
        Some(tx)
    })
    .await
    .unwrap();
    assert_eq!(
        report,
        ResumeReport {
            restored: true,
            kept: 2,
            dropped: 2
        }
    );
    assert_eq!(
        agent_state(&acd2, "a1").await,
        AgentState::NotReady { reason: training }
    );
    assert!(
        matches!(agent_state(&acd2, "a2").await, AgentState::WrapUp { .. }),
        "the agent of a call the old process held goes to wrap-up"
    );
    assert_eq!(
        agent_state(&acd2, "a3").await,
        AgentState::LoggedOut,
        "a newly configured agent"
    );
    let kpis = acd2.kpis().await.unwrap();
    let sales = kpis.queues.iter().find(|k| k.queue == q("sales")).unwrap();
    assert_eq!(sales.waiting, 2, "both callbacks still wait");
    assert_eq!(
        sales.counters.abandoned, 1,
        "the caller on the line was cut off by the restart"
    );
    // The first in line is offered first.
    acd2.request(Input::AgentLogin { agent: a("a3") }).await.unwrap();
    let offer = next_offer(kept.get_mut(&c("cb1")).unwrap()).await;
    assert_eq!(offer.agents, vec![a("a3")]);
    // The wait runs from the original enqueue, not from the restart (on a fast machine both may be
    // the same millisecond, so compare with the time that had passed, not with zero).
    let waited_before_restart = u64::try_from(restarted_at.as_millis() - first_wait.as_millis()).unwrap();
    assert!(
        offer.explanation.waited_ms >= waited_before_restart,
        "{} < {waited_before_restart}",
        offer.explanation.waited_ms
    );
    store
        .delete_blob(ACD_STATE_NAMESPACE, "node-places", None)
        .await
        .unwrap();
}

async fn a_kept_call_that_was_ringing_goes_back_without_blaming_the_agent(store: StateStore) {
    let persist = persistence(&store, "ringing");
    let (acd, _) = AcdHandle::resume(config(&["a1"]), true, None, persist.clone(), |_| None)
        .await
        .unwrap();
    let mut rx = acd.enqueue(CallRequest::new(c("cb"), q("sales")));
    assert_eq!(next_offer(&mut rx).await.agents, vec![a("a1")]);
    acd.save_now().await;
    let mut kept = None;
    let (acd2, report) = AcdHandle::resume(config(&["a1"]), true, None, persist, |_| {
        let (tx, rx) = mpsc::unbounded_channel();
        kept = Some(rx);
        Some(tx)
    })
    .await
    .unwrap();
    assert_eq!(report.kept, 1);
    // The ring died with the old process; the agent is offered the call again at once, not made
    // not-ready for a ring nobody heard.
    let offer = next_offer(kept.as_mut().unwrap()).await;
    assert_eq!(offer.agents, vec![a("a1")]);
    assert_eq!(agent_state(&acd2, "a1").await, AgentState::Reserved);
    store
        .delete_blob(ACD_STATE_NAMESPACE, "node-ringing", None)
        .await
        .unwrap();
}

async fn an_unreadable_saved_state_starts_the_router_fresh(store: StateStore) {
    let persist = persistence(&store, "corrupt");
    store
        .put_blob(
            ACD_STATE_NAMESPACE,
            &persist.key,
            b"{not json",
            &BlobWrite::new(),
            Timestamp::now_utc(),
        )
        .await
        .unwrap();
    let (acd, report) = AcdHandle::resume(config(&["a1"]), true, None, persist.clone(), |_| None)
        .await
        .unwrap();
    assert!(!report.restored);
    assert_eq!(agent_state(&acd, "a1").await, AgentState::Available);
    // The fresh state replaces the unreadable one.
    acd.save_now().await;
    let saved = store
        .get_blob(ACD_STATE_NAMESPACE, &persist.key, Timestamp::now_utc())
        .await
        .unwrap()
        .unwrap();
    assert!(serde_json::from_slice::<acd::AcdSnapshot>(&saved.value).is_ok());
    store
        .delete_blob(ACD_STATE_NAMESPACE, &persist.key, None)
        .await
        .unwrap();
}

async fn a_call_an_agent_placed_ends_with_the_process_that_drove_it(store: StateStore) {
    let persist = persistence(&store, "placed");
    let (acd, _) = AcdHandle::resume(config(&["a1"]), false, None, persist.clone(), |_| None)
        .await
        .unwrap();
    acd.request(Input::AgentLogin { agent: a("a1") }).await.unwrap();
    acd.request(Input::CallPlaced {
        agent: a("a1"),
        call: c("out1"),
        wrap_up_secs: 30,
        then_not_ready: None,
    })
    .await
    .unwrap();
    assert!(acd.agent_busy(&a("a1")).await);
    assert!(acd.agent_has_other_call(&a("a1"), &c("older")).await);
    assert!(!acd.agent_has_other_call(&a("a1"), &c("out1")).await);
    acd.save_now().await;

    let (acd2, report) = AcdHandle::resume(config(&["a1"]), false, None, persist, |_| None)
        .await
        .unwrap();
    assert_eq!(
        report,
        ResumeReport {
            restored: true,
            kept: 0,
            dropped: 1
        }
    );
    let a1 = acd2.agent_now(&a("a1")).await.unwrap();
    assert!(matches!(a1.state, AgentState::WrapUp { .. }), "{:?}", a1.state);
    assert_eq!((a1.call, a1.wrap_up_call), (None, Some(c("out1"))));
    assert!(!acd2.agent_busy(&a("a1")).await, "after-call work is not busy");
    store
        .delete_blob(ACD_STATE_NAMESPACE, "node-placed", None)
        .await
        .unwrap();
}
