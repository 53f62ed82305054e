//! The hold-back after a failed offer, as the KPIs expose it on virtual time: a call an agent let
//! ring out or rejected is listed on that agent with the moment it may be offered to them again,
//! and the entry goes when that moment passes, when someone else answers the call, or when the
//! caller hangs up.

mod common;

use acd::{HeldBack, Input, QueueConfig};
use common::*;
use domain::Timestamp;

fn held_back(w: &World, secs: f64, agent: &str) -> Vec<HeldBack> {
    let now = Timestamp::from_millis((secs * 1000.0).round() as i64);
    w.acd
        .kpis(now)
        .agents
        .into_iter()
        .find(|k| k.agent == a(agent))
        .map(|k| k.held_back)
        .unwrap_or_default()
}

fn team() -> World {
    let support = QueueConfig {
        offer_timeout_secs: 10,
        decline_pause_secs: 30,
        ..QueueConfig::new(q("support"))
    };
    World::new(
        vec![support],
        vec![
            agent("a1", &[], &[("support", 1)]),
            agent("a2", &[], &[("support", 1)]),
        ],
    )
}

fn reject(w: &mut World, secs: f64, call_: &str, agent_: &str) {
    w.decisions(
        secs,
        Input::OfferRejected {
            call: c(call_),
            agent: a(agent_),
        },
    );
}

#[test]
fn a_rejected_call_is_held_back_until_the_pause_ends() {
    let mut w = team();
    w.login(0.0, "a1");
    w.enqueue(1.0, call("c1", "support"));
    assert!(
        held_back(&w, 1.5, "a1").is_empty(),
        "nothing held back while ringing"
    );
    reject(&mut w, 2.0, "c1", "a1");
    let expected = vec![HeldBack {
        call: c("c1"),
        until: Timestamp::from_secs(32),
    }];
    assert_eq!(held_back(&w, 2.0, "a1"), expected);
    assert!(held_back(&w, 2.0, "a2").is_empty(), "only the agent who declined");
    // As the desktop and the wallboard read it: an absolute time in milliseconds.
    let kpis = serde_json::to_value(w.acd.kpis(Timestamp::from_secs(3))).unwrap();
    assert_eq!(
        kpis["agents"][0]["held_back"],
        serde_json::json!([{ "call": "c1", "until": 32_000 }])
    );
    assert!(kpis["agents"][1].get("held_back").is_none(), "{kpis}");
    assert_eq!(held_back(&w, 31.9, "a1"), expected);
    // The pause ends: the entry goes and the call is offered to the agent again.
    assert_eq!(
        w.tick(32.0),
        ["offer#2 c1 -> a1 (longest-idle, step 0, idle 30.0s)"]
    );
    assert!(held_back(&w, 32.0, "a1").is_empty());
}

#[test]
fn a_call_that_rang_out_is_held_back_until_another_agent_answers_it() {
    let mut w = team();
    w.login(0.0, "a1");
    w.enqueue(1.0, call("c1", "support"));
    // The offer rings out after 10 s.
    w.tick(11.0);
    assert_eq!(
        held_back(&w, 11.0, "a1"),
        [HeldBack {
            call: c("c1"),
            until: Timestamp::from_secs(41),
        }]
    );
    // Still held back from a1 while it rings a2...
    w.login(12.0, "a2");
    assert_eq!(held_back(&w, 12.5, "a1").len(), 1);
    // ...and no longer once a2 has it, 30 s or not.
    w.accept(13.0, "c1", "a2");
    assert!(held_back(&w, 13.0, "a1").is_empty());
}

#[test]
fn a_held_back_call_goes_from_the_list_when_the_caller_hangs_up() {
    let mut w = team();
    w.login(0.0, "a1");
    w.enqueue(1.0, call("c1", "support"));
    w.enqueue(1.5, call("c2", "support"));
    reject(&mut w, 2.0, "c1", "a1");
    // a1 is offered c2 and rejects it too: both are listed, soonest end first.
    reject(&mut w, 3.0, "c2", "a1");
    let calls = |w: &World, secs| {
        held_back(w, secs, "a1")
            .into_iter()
            .map(|h| (h.call.as_str().to_string(), h.until.as_millis()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        calls(&w, 3.0),
        [("c1".to_string(), 32_000), ("c2".to_string(), 33_000)]
    );
    w.decisions(4.0, Input::CallAbandoned { call: c("c1") });
    assert_eq!(calls(&w, 4.0), [("c2".to_string(), 33_000)]);
}
