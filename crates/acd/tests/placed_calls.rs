//! Scenarios on virtual time for calls agents place themselves (click-to-dial, preview leads): the
//! router holds the agent on the call, offers them nothing meanwhile, counts the talk and the
//! after-call work, and takes every input twice without a change.

mod common;

use acd::{AcdError, AgentState, Input, QueueConfig, ReasonCode};
use common::*;
use domain::Timestamp;

fn world() -> World {
    let mut queue = QueueConfig::new(q("support"));
    queue.wrap_up_secs = 10;
    World::new(
        vec![queue],
        vec![
            agent("a1", &[], &[("support", 1)]),
            agent("a2", &[], &[("support", 1)]),
        ],
    )
}

fn placed(agent_: &str, call_: &str, wrap_up_secs: u32, then: Option<&str>) -> Input {
    Input::CallPlaced {
        agent: a(agent_),
        call: c(call_),
        wrap_up_secs,
        then_not_ready: then.map(|r| ReasonCode::new(r).expect("reason")),
    }
}

fn refused(w: &mut World, secs: f64, input: Input) -> AcdError {
    // Time moves on whatever the input; nothing else may.
    w.tick(secs);
    let before = w.acd.snapshot();
    let err = w
        .acd
        .handle(Timestamp::from_millis((secs * 1000.0) as i64), input)
        .expect_err("refused");
    assert_eq!(w.acd.snapshot(), before, "a refused input changes nothing");
    err
}

#[test]
fn an_available_agent_on_a_placed_call_reads_on_call_outbound_and_gets_no_queue_call() {
    let mut w = world();
    w.login(0.0, "a1");
    assert_eq!(
        w.at(5.0, placed("a1", "out1", 30, None)),
        ["a1: available -> on_call"]
    );
    let k = w.acd.kpis(Timestamp::from_secs(6));
    let a1 = k.agents.iter().find(|x| x.agent == a("a1")).unwrap();
    assert_eq!(a1.state, AgentState::OnCall);
    assert_eq!(a1.call, Some(c("out1")));
    assert!(a1.placed);
    // A caller waits while the only agent talks on the call they placed.
    assert_eq!(w.enqueue(7.0, call("c1", "support")), Vec::<String>::new());
    assert_eq!(w.acd.call_position(&c("c1")), Some(1));
    // The call ends at 65 s: 60 s of talk, then the placed call's own wrap-up (30 s, not the
    // queue's 10 s), still no offer.
    assert_eq!(
        w.at(65.0, Input::CallEnded { call: c("out1") }),
        ["a1: on_call -> wrap_up(until 95000ms)"]
    );
    let k = w.acd.kpis(Timestamp::from_secs(65));
    let a1 = k.agents.iter().find(|x| x.agent == a("a1")).unwrap();
    assert_eq!(a1.call, None);
    assert!(!a1.placed);
    assert_eq!(a1.wrap_up_call, Some(c("out1")));
    assert_eq!(a1.counters.handled, 1);
    assert_eq!(a1.counters.talk_ms, 60_000);
    assert_eq!(a1.counters.times.on_call_ms, 60_000);
    assert_eq!(w.acd.call_position(&c("c1")), Some(1));
    // The wrap-up ends by its timer; the agent is ready and gets the waiting caller.
    assert_eq!(
        w.tick(95.0),
        ["offer#1 c1 -> a1 (longest-idle, step 0, idle 0.0s)"]
    );
    let k = w.acd.kpis(Timestamp::from_secs(95));
    let a1 = k.agents.iter().find(|x| x.agent == a("a1")).unwrap();
    assert_eq!(a1.counters.wrap_ms, 30_000);
    assert_eq!(a1.wrap_up_call, None);
    // Talk and wrap-up over talk, wrap-up and idle time: 90 s of 95 s.
    assert_eq!(a1.occupancy, Some(90.0 / 95.0));
    // No queue's figures count the agent's own call.
    let support = &k.queues[0].counters;
    assert_eq!((support.handled, support.talk_ms, support.wrap_ms), (0, 0, 0));
}

#[test]
fn a_not_ready_agent_goes_back_to_their_reason_after_wrap_up_and_is_never_offered_a_call() {
    let mut w = world();
    w.login(0.0, "a1");
    w.at(
        1.0,
        Input::AgentNotReady {
            agent: a("a1"),
            reason: ReasonCode::new("break").unwrap(),
        },
    );
    w.enqueue(2.0, call("c1", "support"));
    assert_eq!(
        w.at(3.0, placed("a1", "out1", 5, Some("break"))),
        ["a1: not_ready(break) -> on_call"]
    );
    assert_eq!(
        w.at(10.0, Input::CallEnded { call: c("out1") }),
        ["a1: on_call -> wrap_up(until 15000ms)"]
    );
    // The agent finishes early: back on break, the caller still waits.
    assert_eq!(
        w.at(12.0, Input::WrapUpDone { agent: a("a1") }),
        ["a1: wrap_up(until 15000ms) -> not_ready(break)"]
    );
    assert_eq!(w.tick(20.0), Vec::<String>::new());
    assert_eq!(w.acd.call_position(&c("c1")), Some(1));
    // By the timer it goes the same way, and with no wrap-up at once, never available between.
    w.at(21.0, placed("a1", "out2", 5, Some("break")));
    w.at(22.0, Input::CallEnded { call: c("out2") });
    assert_eq!(w.tick(27.0), Vec::<String>::new());
    assert_eq!(
        w.acd.agent_state(&a("a1")).map(|(s, _)| s.to_string()),
        Some("not_ready(break)".into())
    );
    w.at(28.0, placed("a1", "out3", 0, Some("break")));
    assert_eq!(
        w.at(29.0, Input::CallEnded { call: c("out3") }),
        ["a1: on_call -> available", "a1: available -> not_ready(break)"]
    );
    assert_eq!(w.acd.call_position(&c("c1")), Some(1));
}

#[test]
fn a_placed_call_from_wrap_up_and_without_wrap_up_goes_back_to_ready() {
    let mut w = world();
    w.login(0.0, "a1");
    w.enqueue(1.0, call("c1", "support"));
    w.accept(2.0, "c1", "a1");
    w.end(10.0, "c1");
    // In the queue call's wrap-up the agent dials out; the queue's wrap-up timer is gone.
    assert_eq!(
        w.at(12.0, placed("a1", "out1", 0, None)),
        ["a1: wrap_up(until 20000ms) -> on_call"]
    );
    assert_eq!(w.tick(20.0), Vec::<String>::new());
    w.enqueue(21.0, call("c2", "support"));
    assert_eq!(
        w.end(30.0, "out1"),
        ["offer#2 c2 -> a1 (longest-idle, step 0, idle 0.0s)"]
    );
}

#[test]
fn every_input_of_a_placed_call_taken_twice_changes_nothing() {
    let mut w = world();
    w.login(0.0, "a1");
    w.at(1.0, placed("a1", "out1", 10, None));
    w.tick(2.0);
    let before = w.acd.snapshot();
    // Redelivered while the call goes on: nothing happens, nothing is said.
    assert_eq!(w.at(2.0, placed("a1", "out1", 10, None)), Vec::<String>::new());
    assert_eq!(w.acd.snapshot(), before);
    w.at(5.0, Input::CallEnded { call: c("out1") });
    // The end again, and the start again after the end: refused, nothing changes.
    assert_eq!(
        refused(&mut w, 6.0, Input::CallEnded { call: c("out1") }),
        AcdError::UnknownCall(c("out1"))
    );
    assert_eq!(w.at(7.0, placed("a1", "out1", 10, None)), Vec::<String>::new());
    assert_eq!(
        w.acd.agent_state(&a("a1")).map(|(s, _)| s.kind()),
        Some(acd::AgentStateKind::WrapUp)
    );
    w.at(8.0, Input::WrapUpDone { agent: a("a1") });
    assert_eq!(w.at(9.0, placed("a1", "out1", 10, None)), Vec::<String>::new());
    assert_eq!(
        w.acd.agent_state(&a("a1")).map(|(s, _)| s.clone()),
        Some(AgentState::Available)
    );
    let k = w.acd.kpis(Timestamp::from_secs(9));
    assert_eq!(k.agents[0].counters.handled, 1, "counted once");
}

#[test]
fn a_placed_call_is_refused_to_an_agent_who_is_ringing_on_a_call_or_logged_out() {
    let mut w = world();
    assert!(matches!(
        refused(&mut w, 0.0, placed("a1", "out1", 0, None)),
        AcdError::IllegalTransition { .. }
    ));
    w.login(1.0, "a1");
    w.login(1.0, "a2");
    w.enqueue(2.0, call("c1", "support"));
    // a1 rings for c1.
    assert!(matches!(
        refused(&mut w, 3.0, placed("a1", "out1", 0, None)),
        AcdError::IllegalTransition { .. }
    ));
    // A queue call's id is not a placed call's.
    assert_eq!(
        refused(&mut w, 3.0, placed("a2", "c1", 0, None)),
        AcdError::DuplicateCall(c("c1"))
    );
    w.at(4.0, placed("a2", "out2", 0, None));
    // On one placed call, another is refused.
    assert!(matches!(
        refused(&mut w, 5.0, placed("a2", "out3", 0, None)),
        AcdError::IllegalTransition { .. }
    ));
    // Not even a supervisor's not-ready or a logout moves an agent off their call.
    assert!(matches!(
        refused(&mut w, 5.0, Input::AgentLogout { agent: a("a2") }),
        AcdError::IllegalTransition { .. }
    ));
}

#[test]
fn a_router_restored_mid_call_ends_the_placed_call_as_the_original_would() {
    let mut w = world();
    w.login(0.0, "a1");
    w.at(1.0, placed("a1", "out1", 10, Some("lunch")));
    let json = serde_json::to_string(&w.acd.snapshot()).unwrap();
    let mut restored = World {
        acd: acd::Acd::restore(serde_json::from_str(&json).unwrap()).unwrap(),
    };
    for x in [&mut w, &mut restored] {
        assert_eq!(
            x.at(4.0, Input::CallEnded { call: c("out1") }),
            ["a1: on_call -> wrap_up(until 14000ms)"]
        );
        assert_eq!(x.tick(14.0), Vec::<String>::new());
    }
    assert_eq!(w.acd.snapshot(), restored.acd.snapshot());
    assert_eq!(
        w.acd.agent_state(&a("a1")).map(|(s, _)| s.to_string()),
        Some("not_ready(lunch)".into())
    );
}
