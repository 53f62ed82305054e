//! Scenario tests on virtual time: one test per routing rule, asserting the decision log line by line.

mod common;

use acd::{
    AcdError, AgentState, CallRequest, Input, OverflowConfig, OverflowTarget, PreferredAgent, QueueConfig,
    ReasonCode, RoutingStep, ServiceLevelFormula, Strategy,
};
use common::*;
use domain::Timestamp;

fn queue(id: &str) -> QueueConfig {
    QueueConfig::new(q(id))
}

fn queue_with(id: &str, strategy: Strategy) -> QueueConfig {
    QueueConfig {
        strategy,
        ..queue(id)
    }
}

fn support_team(n: usize) -> Vec<acd::AgentConfig> {
    (1..=n)
        .map(|i| agent(&format!("a{i}"), &[], &[("support", 1)]))
        .collect()
}

#[test]
fn longest_idle_agent_gets_the_call_with_a_full_log() {
    let mut w = World::new(vec![queue("support")], support_team(3));
    assert_eq!(w.login(0.0, "a1"), ["a1: logged_out -> available"]);
    w.login(10.0, "a2");
    w.login(20.0, "a3");
    assert_eq!(
        w.at(30.0, Input::CallEnqueued(call("c1", "support"))),
        [
            "queued c1 in support",
            "offer#1 c1 -> a1 (longest-idle, step 0, idle 30.0s)",
            "a1: available -> reserved"
        ]
    );
    assert_eq!(
        w.at(
            32.5,
            Input::OfferAccepted {
                call: c("c1"),
                agent: a("a1")
            }
        ),
        ["a1: reserved -> on_call", "answered c1 by a1 after 2.5s"]
    );
    // The next call goes to the next longest idle.
    assert_eq!(
        w.enqueue(40.0, call("c2", "support")),
        ["offer#2 c2 -> a2 (longest-idle, step 0, idle 30.0s)"]
    );
}

#[test]
fn offers_explain_themselves_in_json_and_in_a_sentence() {
    let mut w = World::new(vec![queue("support")], support_team(3));
    w.login(0.0, "a1");
    w.login(10.0, "a2");
    w.at(
        12.0,
        Input::AgentNotReady {
            agent: a("a1"),
            reason: ReasonCode::new("lunch").unwrap(),
        },
    );
    let outputs = w.outputs_at(30.0, Input::CallEnqueued(call_p("c1", "support", 4)));
    let offer = outputs
        .into_iter()
        .find_map(|o| match o {
            acd::Output::Offer(o) => Some(o),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        offer.explanation.sentence(),
        "Call c1 (priority 4, effective 4.00, waited 0.0s) went to agent a2 in queue support by longest-idle at \
         step 0 (any rank, skills as required) because the call arrived: 1 of 1 available agents examined were \
         eligible; winning score: idle 20.0s."
    );
    let json: serde_json::Value = serde_json::to_value(&offer.explanation).unwrap();
    assert_eq!(
        json["rule"],
        serde_json::json!({"rule": "strategy", "strategy": "longest-idle"})
    );
    assert_eq!(
        json["score"],
        serde_json::json!({"kind": "idle_ms", "value": 20000})
    );
    assert_eq!(json["chosen"], serde_json::json!(["a2"]));
    assert_eq!(json["agents_eligible"], 1);
    assert_eq!(offer.expires_at, Timestamp::from_secs(45));
}

#[test]
fn highest_priority_then_longest_waiting() {
    let mut w = World::new(vec![queue("support")], support_team(1));
    w.enqueue(1.0, call_p("c1", "support", 0));
    w.enqueue(2.0, call_p("c2", "support", 5));
    w.enqueue(3.0, call_p("c3", "support", 5));
    assert_eq!(w.acd.call_position(&c("c1")), Some(3));
    assert_eq!(w.acd.call_position(&c("c2")), Some(1));
    assert_eq!(
        w.login(10.0, "a1")[1],
        "offer#1 c2 -> a1 (longest-idle, step 0, idle 0.0s)"
    );
    w.accept(11.0, "c2", "a1");
    assert_eq!(
        w.end(20.0, "c2"),
        ["offer#2 c3 -> a1 (longest-idle, step 0, idle 0.0s)"]
    );
    w.accept(21.0, "c3", "a1");
    assert_eq!(
        w.end(30.0, "c3"),
        ["offer#3 c1 -> a1 (longest-idle, step 0, idle 0.0s)"]
    );
}

#[test]
fn priority_aging_lets_an_old_low_priority_call_overtake() {
    // One level per 10 s: at t=30, c1 (p0, since 0) is at 3.0 and c2 (p2, since 25) at 2.5.
    let aging = QueueConfig {
        priority_aging_secs: Some(10),
        ..queue("support")
    };
    let mut w = World::new(vec![aging], support_team(1));
    w.enqueue(0.0, call_p("c1", "support", 0));
    w.enqueue(25.0, call_p("c2", "support", 2));
    assert_eq!(
        w.login(30.0, "a1")[1],
        "offer#1 c1 -> a1 (longest-idle, step 0, idle 0.0s)"
    );

    // Without aging the higher priority wins.
    let mut w = World::new(vec![queue("support")], support_team(1));
    w.enqueue(0.0, call_p("c1", "support", 0));
    w.enqueue(25.0, call_p("c2", "support", 2));
    assert_eq!(
        w.login(30.0, "a1")[1],
        "offer#1 c2 -> a1 (longest-idle, step 0, idle 0.0s)"
    );
}

#[test]
fn an_agent_serving_two_queues_takes_the_oldest_call_of_either() {
    let mut w = World::new(
        vec![queue("sales"), queue("support")],
        vec![agent("a1", &[], &[("sales", 1), ("support", 1)])],
    );
    w.enqueue(1.0, call("c1", "support"));
    w.enqueue(2.0, call("c2", "sales"));
    w.enqueue(3.0, call("c3", "support"));
    let log = w.login(10.0, "a1");
    assert_eq!(log[1], "offer#1 c1 -> a1 (longest-idle, step 0, idle 0.0s)");
    w.accept(11.0, "c1", "a1");
    assert_eq!(
        w.end(20.0, "c1"),
        ["offer#2 c2 -> a1 (longest-idle, step 0, idle 0.0s)"]
    );
    w.accept(21.0, "c2", "a1");
    assert_eq!(
        w.end(30.0, "c2"),
        ["offer#3 c3 -> a1 (longest-idle, step 0, idle 0.0s)"]
    );
}

#[test]
fn skill_requirements_filter_agents() {
    let mut w = World::new(
        vec![queue("support")],
        vec![
            agent("a1", &[("english", 5)], &[("support", 1)]),
            agent("a2", &[("spanish", 3), ("billing", 1)], &[("support", 1)]),
            agent("a3", &[("spanish", 4), ("billing", 2)], &[("support", 1)]),
        ],
    );
    for (t, id) in [(0.0, "a1"), (1.0, "a2"), (2.0, "a3")] {
        w.login(t, id);
    }
    assert_eq!(
        w.enqueue(10.0, call_req("c1", "support", "spanish >= 3 && billing >= 2")),
        ["offer#1 c1 -> a3 (longest-idle, step 0, idle 8.0s)"]
    );
    // Nobody left qualifies: the call waits.
    assert_eq!(
        w.enqueue(11.0, call_req("c2", "support", "spanish >= 3 && billing >= 2")),
        Vec::<String>::new()
    );
    assert_eq!(w.acd.call_position(&c("c2")), Some(1));
    // A call without requirement still goes to the longest idle.
    assert_eq!(
        w.enqueue(12.0, call("c3", "support")),
        ["offer#2 c3 -> a1 (longest-idle, step 0, idle 12.0s)"]
    );
}

#[test]
fn most_skilled_round_robin_fewest_calls_and_least_talk_time() {
    let skilled = |strategy| {
        World::new(
            vec![queue_with("support", strategy)],
            vec![
                agent("a1", &[("billing", 2)], &[("support", 1)]),
                agent("a2", &[("billing", 5)], &[("support", 1)]),
                agent("a3", &[("billing", 3)], &[("support", 1)]),
            ],
        )
    };
    let mut w = skilled(Strategy::MostSkilled);
    for (t, id) in [(0.0, "a1"), (1.0, "a2"), (2.0, "a3")] {
        w.login(t, id);
    }
    assert_eq!(
        w.enqueue(5.0, call_req("c1", "support", "billing >= 2")),
        ["offer#1 c1 -> a2 (most-skilled, step 0, skill sum 5)"]
    );

    // Round robin: a1, a2, a3, then a1 again although a2 has been idle longer than a1.
    let mut w = skilled(Strategy::RoundRobin);
    for id in ["a1", "a2", "a3"] {
        w.login(0.0, id);
    }
    let mut log = Vec::new();
    for (t, id) in [(10.0, "c1"), (11.0, "c2"), (12.0, "c3")] {
        log.extend(w.enqueue(t, call(id, "support")));
    }
    w.accept(13.0, "c1", "a1");
    w.accept(13.0, "c2", "a2");
    w.accept(13.0, "c3", "a3");
    w.end(20.0, "c2");
    w.end(30.0, "c1");
    w.end(31.0, "c3");
    log.extend(w.enqueue(40.0, call("c4", "support")));
    assert_eq!(
        log,
        [
            "offer#1 c1 -> a1 (round-robin, step 0, last offered at turn 0)",
            "offer#2 c2 -> a2 (round-robin, step 0, last offered at turn 0)",
            "offer#3 c3 -> a3 (round-robin, step 0, last offered at turn 0)",
            "offer#4 c4 -> a1 (round-robin, step 0, last offered at turn 1)"
        ]
    );

    // Fewest calls: a1 handles two calls, a2 one; a3 (none) gets the next even though a1 is idle longer.
    let mut w = skilled(Strategy::FewestCalls);
    w.login(0.0, "a1");
    for (t, id) in [(1.0, "x1"), (3.0, "x2")] {
        w.enqueue(t, call(id, "support"));
        w.accept(t, id, "a1");
        w.end(t + 1.0, id);
    }
    w.login(10.0, "a2");
    w.login(10.0, "a3");
    assert_eq!(
        w.enqueue(20.0, call("c1", "support")),
        ["offer#3 c1 -> a2 (fewest-calls, step 0, 0 calls handled)"]
    );

    // Least talk time: a1 talked 100 s, a2 10 s.
    let mut w = skilled(Strategy::LeastTalkTime);
    w.login(0.0, "a1");
    w.enqueue(0.0, call("x1", "support"));
    w.accept(0.0, "x1", "a1");
    w.login(1.0, "a2");
    w.enqueue(1.0, call("x2", "support"));
    w.accept(1.0, "x2", "a2");
    w.end(11.0, "x2");
    w.end(100.0, "x1");
    assert_eq!(
        w.enqueue(200.0, call("c1", "support")),
        ["offer#3 c1 -> a2 (least-talk-time, step 0, talk time 10.0s)"]
    );
}

#[test]
fn ring_all_offers_everyone_and_the_first_to_accept_wins() {
    let mut w = World::new(vec![queue_with("support", Strategy::RingAll)], support_team(3));
    for id in ["a1", "a2", "a3"] {
        w.login(0.0, id);
    }
    assert_eq!(
        w.enqueue(5.0, call("c1", "support")),
        ["offer#1 c1 -> a1,a2,a3 (ring-all, step 0, ringing all 3)"]
    );
    assert_eq!(
        w.at(
            7.0,
            Input::OfferAccepted {
                call: c("c1"),
                agent: a("a2")
            }
        ),
        [
            "a2: reserved -> on_call",
            "cancel offer#1 c1 @ a1: answered elsewhere",
            "a1: reserved -> available",
            "cancel offer#1 c1 @ a3: answered elsewhere",
            "a3: reserved -> available",
            "answered c1 by a2 after 2.0s"
        ]
    );
    // A late accept by a loser is refused.
    let err = w.acd.handle(
        Timestamp::from_secs(8),
        Input::OfferAccepted {
            call: c("c1"),
            agent: a("a1"),
        },
    );
    assert_eq!(
        err.unwrap_err().to_string(),
        "call c1 is not being offered to agent a1"
    );
}

#[test]
fn random_strategy_is_reproducible_and_stays_among_the_eligible() {
    let run = || {
        let mut w = World::new(
            vec![queue_with("support", Strategy::Random)],
            (1..=6)
                .map(|i| {
                    agent(
                        &format!("a{i}"),
                        &[("x", if i % 2 == 0 { 3 } else { 1 })],
                        &[("support", 1)],
                    )
                })
                .collect(),
        );
        for i in 1..=6 {
            w.login(0.0, &format!("a{i}"));
        }
        let mut picks = Vec::new();
        for i in 0..12 {
            let id = format!("c{i}");
            let t = 10.0 + f64::from(i);
            let log = w.enqueue(t, call_req(&id, "support", "x >= 2"));
            let agent = log[0]
                .split(" -> ")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string();
            assert!(log[0].ends_with("random draw among 3)"), "{}", log[0]);
            w.accept(t, &id, &agent);
            w.end(t + 0.5, &id);
            picks.push(agent);
        }
        picks
    };
    let first = run();
    assert_eq!(first, run());
    assert!(first.iter().all(|p| ["a2", "a4", "a6"].contains(&p.as_str())));
    let distinct: std::collections::BTreeSet<_> = first.iter().collect();
    assert_eq!(distinct.len(), 3, "{first:?}");
}

#[test]
fn steps_widen_the_pool_as_the_call_waits() {
    let steps = vec![
        RoutingStep {
            after_secs: 0,
            max_rank: Some(1),
            relax_proficiency_to: None,
            ignore_skills: false,
        },
        RoutingStep {
            after_secs: 30,
            max_rank: Some(1),
            relax_proficiency_to: Some(2),
            ignore_skills: false,
        },
        RoutingStep {
            after_secs: 60,
            max_rank: None,
            relax_proficiency_to: None,
            ignore_skills: true,
        },
    ];
    let mut w = World::new(
        vec![QueueConfig {
            steps,
            ..queue("support")
        }],
        vec![
            agent("junior", &[("spanish", 2)], &[("support", 1)]),
            agent("backup", &[], &[("support", 2)]),
        ],
    );
    w.login(0.0, "junior");
    w.login(0.0, "backup");
    assert_eq!(
        w.enqueue(1.0, call_req("c1", "support", "spanish >= 4")),
        Vec::<String>::new()
    );
    assert_eq!(
        w.enqueue(2.0, call_req("c2", "support", "spanish >= 4")),
        Vec::<String>::new()
    );
    assert_eq!(w.acd.next_deadline(), Some(Timestamp::from_secs(31)));
    assert_eq!(w.tick(30.9), Vec::<String>::new());
    assert_eq!(
        w.tick(31.0),
        ["offer#1 c1 -> junior (longest-idle, step 1, idle 31.0s)"]
    );
    w.accept(32.0, "c1", "junior");
    // c2 reaches step 1 at 32 s but junior is busy; the rank-2 backup qualifies only from step 2.
    assert_eq!(w.tick(61.0), Vec::<String>::new());
    let log = w.tick(62.0);
    assert_eq!(log, ["offer#2 c2 -> backup (longest-idle, step 2, idle 62.0s)"]);
}

#[test]
fn higher_ranks_are_a_fallback_tier() {
    let mut w = World::new(
        vec![queue("support")],
        vec![
            agent("primary", &[], &[("support", 1)]),
            agent("overflow", &[], &[("support", 2)]),
        ],
    );
    w.login(0.0, "overflow");
    w.login(10.0, "primary");
    // Rank 1 first, although the rank-2 agent has been idle longer.
    assert_eq!(
        w.enqueue(20.0, call("c1", "support")),
        ["offer#1 c1 -> primary (longest-idle, step 0, idle 10.0s)"]
    );
    // With the primary busy, the default step (any rank) uses the second tier.
    assert_eq!(
        w.enqueue(21.0, call("c2", "support")),
        ["offer#2 c2 -> overflow (longest-idle, step 0, idle 21.0s)"]
    );
}

#[test]
fn preferred_agent_first_then_the_team() {
    let mut w = World::new(vec![queue("support")], support_team(2));
    w.login(0.0, "a1");
    w.login(5.0, "a2");
    let vip = |id: &str| CallRequest {
        preferred: Some(PreferredAgent {
            agent: a("a2"),
            timeout_secs: 20,
        }),
        ..call(id, "support")
    };
    // The account manager is available: they get it although a1 has been idle longer.
    assert_eq!(
        w.enqueue(10.0, vip("c1")),
        ["offer#1 c1 -> a2 (preferred, step 0, preferred agent)"]
    );
    // Now they are busy: the next call waits for them...
    assert_eq!(w.enqueue(11.0, vip("c2")), Vec::<String>::new());
    assert_eq!(w.accept(12.0, "c1", "a2"), ["answered c1 by a2 after 2.0s"]);
    // ...until the window closes, then the team takes it.
    assert_eq!(w.tick(30.9), Vec::<String>::new());
    assert_eq!(
        w.tick(31.0),
        ["offer#2 c2 -> a1 (longest-idle, step 0, idle 31.0s)"]
    );
    // A preferred agent who is logged out is skipped at once.
    w.end(40.0, "c1");
    w.at(41.0, Input::AgentLogout { agent: a("a2") });
    w.accept(42.0, "c2", "a1");
    w.end(43.0, "c2");
    assert_eq!(
        w.enqueue(50.0, vip("c3")),
        ["offer#3 c3 -> a1 (longest-idle, step 0, idle 7.0s)"]
    );
}

#[test]
fn preferred_agent_becoming_available_takes_their_waiting_call() {
    let mut w = World::new(vec![queue("support")], support_team(2));
    w.login(0.0, "a2");
    w.at(
        0.0,
        Input::AgentNotReady {
            agent: a("a2"),
            reason: ReasonCode::new("break").unwrap(),
        },
    );
    let vip = CallRequest {
        preferred: Some(PreferredAgent {
            agent: a("a2"),
            timeout_secs: 60,
        }),
        ..call("c1", "support")
    };
    w.enqueue(1.0, vip);
    w.enqueue(2.0, call("c2", "support"));
    // a1 arrives: c1 is reserved for a2 during its window, so a1 takes c2.
    assert_eq!(
        w.login(3.0, "a1")[1],
        "offer#1 c2 -> a1 (longest-idle, step 0, idle 0.0s)"
    );
    assert_eq!(
        w.decisions(4.0, Input::AgentReady { agent: a("a2") }),
        ["offer#2 c1 -> a2 (preferred, step 0, preferred agent)"]
    );
}

#[test]
fn rona_makes_the_agent_not_ready_and_returns_the_call_to_its_place() {
    let mut w = World::new(vec![queue("support")], support_team(2));
    w.login(0.0, "a1");
    assert_eq!(
        w.enqueue(1.0, call("c1", "support")),
        ["offer#1 c1 -> a1 (longest-idle, step 0, idle 1.0s)"]
    );
    w.enqueue(5.0, call("c2", "support"));
    assert_eq!(w.acd.next_deadline(), Some(Timestamp::from_secs(16)));
    assert_eq!(
        w.at(16.0, Input::Tick),
        [
            "cancel offer#1 c1 @ a1: no answer",
            "a1: reserved -> not_ready(no-answer)"
        ]
    );
    assert_eq!(w.acd.call_position(&c("c1")), Some(1));
    assert_eq!(w.acd.call_position(&c("c2")), Some(2));
    // The next agent gets c1, not the later c2.
    assert_eq!(
        w.login(20.0, "a2")[1],
        "offer#2 c1 -> a2 (longest-idle, step 0, idle 0.0s)"
    );
    // a1 comes back; c1 is taken, so a1 gets c2.
    assert_eq!(
        w.decisions(21.0, Input::AgentReady { agent: a("a1") }),
        ["offer#3 c2 -> a1 (longest-idle, step 0, idle 0.0s)"]
    );
}

#[test]
fn an_offer_does_not_ring_out_for_the_time_no_router_ran() {
    let mut w = World::new(vec![queue("support")], support_team(2));
    w.login(0.0, "a1");
    w.enqueue(1.0, call("c1", "support"));
    w.enqueue(5.0, call("c2", "support"));
    assert_eq!(w.acd.next_deadline(), Some(Timestamp::from_secs(16)));
    // No router ran from 5 s to 40 s (a takeover): the offer keeps the 11 s it had left then, and
    // the caller's wait is real time.
    assert_eq!(w.at(40.0, Input::Resumed), Vec::<String>::new());
    assert_eq!(w.acd.next_deadline(), Some(Timestamp::from_secs(51)));
    assert_eq!(
        w.at(
            42.0,
            Input::OfferAccepted {
                call: c("c1"),
                agent: a("a1")
            }
        ),
        ["a1: reserved -> on_call", "answered c1 by a1 after 41.0s"]
    );
}

#[test]
fn an_offer_resumed_with_little_left_rings_for_the_grace_at_least_and_rings_out_without_blame() {
    let mut w = World::new(vec![queue("support")], support_team(2));
    w.login(0.0, "a1");
    w.enqueue(1.0, call("c1", "support"));
    assert_eq!(w.at(15.9, Input::Tick), Vec::<String>::new());
    // 0.1 s was left; an answer given meanwhile still has the grace to arrive.
    w.at(30.0, Input::Resumed);
    let grace = i64::try_from(acd::RESUME_ANSWER_GRACE.as_millis()).unwrap();
    assert_eq!(
        w.acd.next_deadline(),
        Some(Timestamp::from_millis(30_000 + grace))
    );
    // Nobody answered: whether a1's phone rang all that time the router cannot know, so a1 is not
    // put not ready; the call tries someone else first.
    assert_eq!(
        w.at(35.0, Input::Tick),
        ["cancel offer#1 c1 @ a1: withdrawn", "a1: reserved -> available"]
    );
    assert_eq!(
        w.login(36.0, "a2")[1],
        "offer#2 c1 -> a2 (longest-idle, step 0, idle 0.0s)"
    );
    // An offer made after the resumption rings out as usual.
    assert_eq!(
        w.at(51.0, Input::Tick),
        [
            "cancel offer#2 c1 @ a2: no answer",
            "a2: reserved -> not_ready(no-answer)"
        ]
    );
}

#[test]
fn a_rejecting_agent_is_not_offered_the_same_call_again() {
    let mut w = World::new(vec![queue("support")], support_team(2));
    w.login(0.0, "a1");
    w.enqueue(1.0, call("c1", "support"));
    assert_eq!(
        w.at(
            2.0,
            Input::OfferRejected {
                call: c("c1"),
                agent: a("a1")
            }
        ),
        ["cancel offer#1 c1 @ a1: rejected", "a1: reserved -> available"]
    );
    assert_eq!(w.acd.call_position(&c("c1")), Some(1));
    // a1 takes other calls...
    assert_eq!(
        w.enqueue(3.0, call("c2", "support")),
        ["offer#2 c2 -> a1 (longest-idle, step 0, idle 1.0s)"]
    );
    // ...and c1 goes to the next agent.
    assert_eq!(
        w.login(4.0, "a2")[1],
        "offer#3 c1 -> a2 (longest-idle, step 0, idle 0.0s)"
    );

    // A lone agent who rejected a call gets it again once the pause (30 s by default) is over.
    let mut w = World::new(vec![queue("support")], support_team(1));
    w.login(0.0, "a1");
    w.enqueue(1.0, call("c1", "support"));
    w.decisions(
        2.0,
        Input::OfferRejected {
            call: c("c1"),
            agent: a("a1"),
        },
    );
    assert_eq!(w.acd.next_deadline(), Some(Timestamp::from_secs(32)));
    assert_eq!(w.tick(31.9), Vec::<String>::new());
    assert_eq!(
        w.tick(32.0),
        ["offer#2 c1 -> a1 (longest-idle, step 0, idle 30.0s)"]
    );

    // A queue can make rejecting agents NotReady.
    let strict = QueueConfig {
        reject_sets_not_ready: true,
        ..queue("support")
    };
    let mut w = World::new(vec![strict], support_team(1));
    w.login(0.0, "a1");
    w.enqueue(1.0, call("c1", "support"));
    assert_eq!(
        w.at(
            2.0,
            Input::OfferRejected {
                call: c("c1"),
                agent: a("a1")
            }
        ),
        [
            "cancel offer#1 c1 @ a1: rejected",
            "a1: reserved -> not_ready(rejected)"
        ]
    );
}

#[test]
fn wrap_up_ends_by_timer_or_by_the_agent() {
    let wrap = QueueConfig {
        wrap_up_secs: 30,
        ..queue("support")
    };
    let mut w = World::new(vec![wrap], support_team(1));
    w.login(0.0, "a1");
    w.enqueue(1.0, call("c1", "support"));
    w.accept(2.0, "c1", "a1");
    assert_eq!(
        w.at(10.0, Input::CallEnded { call: c("c1") }),
        ["a1: on_call -> wrap_up(until 40000ms)"]
    );
    w.enqueue(11.0, call("c2", "support"));
    assert_eq!(w.acd.next_deadline(), Some(Timestamp::from_secs(40)));
    assert_eq!(
        w.at(40.0, Input::Tick),
        [
            "a1: wrap_up(until 40000ms) -> available",
            "offer#2 c2 -> a1 (longest-idle, step 0, idle 0.0s)",
            "a1: available -> reserved"
        ]
    );
    w.accept(41.0, "c2", "a1");
    w.end(50.0, "c2");
    assert_eq!(
        w.at(55.0, Input::WrapUpDone { agent: a("a1") }),
        ["a1: wrap_up(until 80000ms) -> available"]
    );
    // The stale timer at 80 s does nothing.
    assert_eq!(w.at(80.0, Input::Tick), Vec::<String>::new());
    let err = w
        .acd
        .handle(Timestamp::from_secs(81), Input::WrapUpDone { agent: a("a1") })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "agent a1: wrap_up_done is not allowed while available: the agent is not in wrap-up"
    );
}

#[test]
fn an_agent_extends_wrap_up_up_to_the_queues_longest() {
    let wrap = QueueConfig {
        wrap_up_secs: 30,
        wrap_up_max_secs: 90,
        ..queue("support")
    };
    let mut w = World::new(vec![wrap], support_team(1));
    w.login(0.0, "a1");
    w.enqueue(1.0, call("c1", "support"));
    w.accept(2.0, "c1", "a1");
    w.end(10.0, "c1");
    let extend = |secs| Input::ExtendWrapUp { agent: a("a1"), secs };
    assert_eq!(
        w.at(20.0, extend(30)),
        ["a1: wrap_up(until 40000ms) -> wrap_up(until 70000ms)"]
    );
    // Capped at 90 s after the call's end.
    assert_eq!(
        w.at(30.0, extend(60)),
        ["a1: wrap_up(until 70000ms) -> wrap_up(until 100000ms)"]
    );
    let err = w.acd.handle(Timestamp::from_secs(31), extend(30)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "agent a1: extend_wrap_up is not allowed while wrap_up: the wrap-up is at its longest"
    );
    // The first end passes unnoticed; the agent is back at the extended end.
    w.enqueue(35.0, call("c2", "support"));
    assert_eq!(w.at(40.0, Input::Tick), Vec::<String>::new());
    assert_eq!(w.acd.next_deadline(), Some(Timestamp::from_secs(100)));
    assert_eq!(
        w.at(100.0, Input::Tick),
        [
            "a1: wrap_up(until 100000ms) -> available",
            "offer#2 c2 -> a1 (longest-idle, step 0, idle 0.0s)",
            "a1: available -> reserved"
        ]
    );
    // Not in wrap-up: nothing to extend.
    let err = w.acd.handle(Timestamp::from_secs(101), extend(30)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "agent a1: extend_wrap_up is not allowed while reserved: the agent is not in wrap-up"
    );
}

#[test]
fn callbacks_keep_their_original_enqueue_time() {
    let mut w = World::new(vec![queue("support")], support_team(1));
    w.enqueue(100.0, call("c1", "support"));
    let callback = CallRequest {
        original_enqueued_at: Some(Timestamp::from_secs(50)),
        ..call("cb", "support")
    };
    w.enqueue(110.0, callback);
    assert_eq!(w.acd.call_position(&c("cb")), Some(1));
    assert_eq!(
        w.login(120.0, "a1")[1],
        "offer#1 cb -> a1 (longest-idle, step 0, idle 0.0s)"
    );
    // Its wait in this queue counts from its return, not from its first call.
    assert_eq!(w.accept(121.0, "cb", "a1"), ["answered cb by a1 after 11.0s"]);
}

#[test]
fn abandons_are_recorded_with_position_and_wait() {
    let mut w = World::new(vec![queue("support")], support_team(1));
    for (t, id) in [(0.0, "c1"), (1.0, "c2"), (2.0, "c3")] {
        w.enqueue(t, call(id, "support"));
    }
    assert_eq!(
        w.decisions(12.5, Input::CallAbandoned { call: c("c2") }),
        ["abandoned c2 from support at position 2 after 11.5s"]
    );
    assert_eq!(w.acd.call_position(&c("c3")), Some(2));
    // A caller hanging up while ringing frees the agent, who takes the next call.
    w.login(20.0, "a1");
    assert_eq!(
        w.decisions(21.0, Input::CallAbandoned { call: c("c1") }),
        [
            "cancel offer#1 c1 @ a1: caller abandoned",
            "abandoned c1 from support at position 0 after 21.0s",
            "offer#2 c3 -> a1 (longest-idle, step 0, idle 0.0s)"
        ]
    );
    let err = w
        .acd
        .handle(Timestamp::from_secs(22), Input::CallAbandoned { call: c("c1") })
        .unwrap_err();
    assert_eq!(err.to_string(), "unknown call c1");
}

#[test]
fn overflow_on_max_wait_no_agents_and_full_queue() {
    let support = QueueConfig {
        overflow: Some(OverflowConfig {
            target: OverflowTarget::Queue { queue: q("sales") },
            max_wait_secs: Some(60),
            when_no_agents: false,
            when_full: true,
        }),
        max_length: Some(2),
        ..queue("support")
    };
    let sales = QueueConfig {
        overflow: Some(OverflowConfig {
            target: OverflowTarget::Voicemail {
                mailbox: "sales-vm".into(),
            },
            max_wait_secs: None,
            when_no_agents: true,
            when_full: true,
        }),
        ..queue("sales")
    };
    let mut w = World::new(
        vec![support, sales],
        vec![
            agent("a1", &[], &[("support", 1)]),
            agent("s1", &[], &[("sales", 1)]),
        ],
    );
    w.login(0.0, "s1");
    w.login(0.0, "a1");
    w.at(
        0.0,
        Input::AgentNotReady {
            agent: a("a1"),
            reason: ReasonCode::new("meeting").unwrap(),
        },
    );
    w.enqueue(0.0, call("c1", "support"));
    w.enqueue(1.0, call("c2", "support"));
    // Full: c3 overflows to sales at once, where s1 is free; it keeps its place in time.
    assert_eq!(
        w.enqueue(2.0, call("c3", "support")),
        [
            "overflow c3 from support to queue sales: queue full after 0.0s",
            "offer#1 c3 -> s1 (longest-idle, step 0, idle 2.0s)"
        ]
    );
    w.accept(3.0, "c3", "s1");
    // Max wait: c1 and c2 leave support after 60 s; s1 is busy, so they wait in sales, in their order.
    assert_eq!(
        w.tick(60.0),
        ["overflow c1 from support to queue sales: max wait after 60.0s"]
    );
    assert_eq!(
        w.tick(61.0),
        ["overflow c2 from support to queue sales: max wait after 60.0s"]
    );
    assert_eq!(w.acd.call_position(&c("c1")), Some(1));
    assert_eq!(
        w.end(62.0, "c3"),
        ["offer#2 c1 -> s1 (longest-idle, step 0, idle 0.0s)"]
    );
    // The last sales agent logs out: the ringing call comes back, then every waiting call goes to voicemail.
    assert_eq!(
        w.decisions(62.5, Input::AgentLogout { agent: a("s1") }),
        [
            "cancel offer#2 c1 @ s1: agent logged out",
            "overflow c1 from sales to voicemail sales-vm: no agents logged in after 2.5s",
            "overflow c2 from sales to voicemail sales-vm: no agents logged in after 1.5s"
        ]
    );
    assert_eq!(
        w.enqueue(63.0, call("c4", "sales")),
        ["overflow c4 from sales to voicemail sales-vm: no agents logged in after 0.0s"]
    );
    assert_eq!(w.acd.call_count(), 0);
    let kpis = w.acd.kpis(Timestamp::from_secs(64));
    let support = &kpis.queues[0].counters;
    // c3 left support at once (within 20 s), c1 and c2 after 60 s.
    assert_eq!(
        (support.queued, support.overflowed, support.removed_within),
        (3, 3, 1)
    );
    let sales = &kpis.queues[1].counters;
    assert_eq!((sales.queued, sales.answered, sales.overflowed), (4, 1, 3));
}

#[test]
fn overflow_never_loops_between_queues() {
    let to = |target: &str| OverflowConfig {
        target: OverflowTarget::Queue { queue: q(target) },
        max_wait_secs: Some(10),
        when_no_agents: true,
        when_full: true,
    };
    let mut w = World::new(
        vec![
            QueueConfig {
                overflow: Some(to("b")),
                ..queue("a")
            },
            QueueConfig {
                overflow: Some(to("a")),
                ..queue("b")
            },
        ],
        vec![],
    );
    // No agents anywhere: a -> b, and b would go back to a, so the call stays in b.
    assert_eq!(
        w.enqueue(0.0, call("c1", "a")),
        ["overflow c1 from a to queue b: no agents logged in after 0.0s"]
    );
    assert_eq!(w.tick(100.0), Vec::<String>::new());
    assert_eq!(w.acd.call_count(), 1);
}

#[test]
fn refused_queue_and_unknown_ids() {
    let small = QueueConfig {
        max_length: Some(1),
        ..queue("support")
    };
    let mut w = World::new(vec![small], support_team(1));
    w.enqueue(0.0, call("c1", "support"));
    let now = Timestamp::from_secs(1);
    assert_eq!(
        w.acd.handle(now, Input::CallEnqueued(call("c2", "support"))),
        Err(AcdError::QueueFull(q("support")))
    );
    assert_eq!(
        w.acd.handle(now, Input::CallEnqueued(call("c1", "support"))),
        Err(AcdError::DuplicateCall(c("c1")))
    );
    assert_eq!(
        w.acd.handle(now, Input::CallEnqueued(call("c3", "nope"))),
        Err(AcdError::UnknownQueue(q("nope")))
    );
    assert_eq!(
        w.acd.handle(now, Input::AgentLogin { agent: a("zed") }),
        Err(AcdError::UnknownAgent(a("zed")))
    );
    assert_eq!(w.acd.call_count(), 1);
}

#[test]
fn illegal_transitions_are_refused_and_change_nothing() {
    let mut w = World::new(vec![queue("support")], support_team(1));
    let t = |s| Timestamp::from_secs(s);
    let err = w
        .acd
        .handle(t(0), Input::AgentReady { agent: a("a1") })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "agent a1: ready is not allowed while logged_out: the agent is logged out"
    );
    w.login(1.0, "a1");
    w.enqueue(2.0, call("c1", "support"));
    let before = w.acd.snapshot();
    let refused = [
        Input::AgentNotReady {
            agent: a("a1"),
            reason: ReasonCode::new("lunch").unwrap(),
        },
        Input::AgentLogin { agent: a("a1") },
        Input::CallEnded { call: c("c1") },
        Input::WrapUpDone { agent: a("a1") },
    ];
    for input in refused {
        assert!(w.acd.handle(t(2), input).is_err());
    }
    assert_eq!(w.acd.snapshot(), before);
    w.accept(3.0, "c1", "a1");
    let err = w
        .acd
        .handle(t(4), Input::AgentLogout { agent: a("a1") })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "agent a1: logout is not allowed while on_call: the agent is on a call"
    );
    assert_eq!(
        w.acd.agent_state(&a("a1")).map(|(s, _)| s.clone()),
        Some(AgentState::OnCall)
    );
    let err = w
        .acd
        .handle(t(4), Input::CallAbandoned { call: c("c1") })
        .unwrap_err();
    assert_eq!(err, AcdError::CallConnected(c("c1")));
}

#[test]
fn announcements_tell_position_and_estimated_wait() {
    let q_ = QueueConfig {
        announce_every_secs: Some(30),
        ..queue("support")
    };
    let mut w = World::new(vec![q_], support_team(2));
    w.login(0.0, "a1");
    w.login(0.0, "a2");
    // Build an AHT of 60 s.
    w.enqueue(0.0, call("x", "support"));
    w.accept(0.0, "x", "a1");
    w.end(60.0, "x");
    w.at(
        60.0,
        Input::AgentNotReady {
            agent: a("a1"),
            reason: ReasonCode::new("lunch").unwrap(),
        },
    );
    w.at(
        60.0,
        Input::AgentNotReady {
            agent: a("a2"),
            reason: ReasonCode::new("lunch").unwrap(),
        },
    );
    w.at(61.0, Input::AgentReady { agent: a("a2") });
    w.enqueue(61.0, call("c1", "support"));
    w.accept(61.5, "c1", "a2");
    w.enqueue(62.0, call("c2", "support"));
    w.enqueue(63.0, call("c3", "support"));
    // a2 took c1; two wait, one staffed agent with AHT 60 s.
    let log = w.at(92.0, Input::Tick);
    assert_eq!(log, ["announce c2 in support: position 1, about 60s"]);
    assert_eq!(
        w.at(93.0, Input::Tick),
        ["announce c3 in support: position 2, about 120s"]
    );
    let k = &w.acd.kpis(Timestamp::from_secs(100)).queues[0];
    assert_eq!((k.waiting, k.oldest_wait_ms), (2, Some(38_000)));
    // A caller arriving now is third in line behind one staffed agent: 3 × 60 s.
    assert_eq!(k.estimated_wait_ms, Some(180_000));
}

#[test]
fn live_kpis_follow_the_events() {
    let q_ = QueueConfig {
        service_level_formula: ServiceLevelFormula::AnsweredWithinOfOfferedExcludingShortAbandons,
        wrap_up_secs: 10,
        ..queue("support")
    };
    let mut w = World::new(vec![q_], support_team(2));
    w.login(0.0, "a1");
    // c1 answered after 5 s (within 20), talk 60 s, wrap 10 s.
    w.at(
        0.0,
        Input::AgentNotReady {
            agent: a("a1"),
            reason: ReasonCode::new("brief").unwrap(),
        },
    );
    w.enqueue(0.0, call("c1", "support"));
    w.at(5.0, Input::AgentReady { agent: a("a1") });
    w.accept(5.0, "c1", "a1");
    // c2 answered after 30 s (late) by a2.
    w.enqueue(10.0, call("c2", "support"));
    w.login(40.0, "a2");
    w.accept(40.0, "c2", "a2");
    // c3 abandons after 2 s (short), c4 after 25 s.
    w.enqueue(41.0, call("c3", "support"));
    w.at(43.0, Input::CallAbandoned { call: c("c3") });
    w.enqueue(44.0, call("c4", "support"));
    w.end(65.0, "c1");
    w.at(69.0, Input::CallAbandoned { call: c("c4") });
    w.enqueue(70.0, call("c5", "support"));
    w.tick(80.0);
    let k = w.acd.kpis(Timestamp::from_secs(80));
    let s = &k.queues[0];
    assert_eq!(s.counters.queued, 5);
    assert_eq!((s.counters.answered, s.counters.answered_within), (2, 1));
    assert_eq!((s.counters.abandoned, s.counters.abandoned_short), (2, 1));
    // 1 answered within / (2 answered + 2 abandoned - 1 short).
    assert_eq!(s.service_level, Some(1.0 / 3.0));
    assert_eq!(s.asa_ms, Some(17_500));
    assert_eq!(s.abandon_rate, Some(0.4));
    // c1 wrap-up ended at 75 s (timer), then a1 took c5.
    assert_eq!(s.aht_ms, Some(70_000));
    assert_eq!(s.waiting, 0);
    assert_eq!(s.offering, 1);
    assert_eq!(s.agents_by_state.get(&acd::AgentStateKind::OnCall), Some(&1));
    assert_eq!(s.agents_by_state.get(&acd::AgentStateKind::Reserved), Some(&1));
    let a1 = &k.agents[0];
    assert_eq!(a1.counters.handled, 1);
    // a1: not ready 0-5, on call 5-65, wrap 65-75, reserved 75-80: occupancy 70 / 75.
    assert_eq!(a1.occupancy, Some(70.0 / 75.0));
    assert!(
        serde_json::to_string(&k)
            .unwrap()
            .contains("\"agents_by_state\":{\"reserved\":1,\"on_call\":1}")
    );

    // A new interval starts from zero.
    w.at(80.0, Input::ResetKpis);
    let k = w.acd.kpis(Timestamp::from_secs(90));
    assert_eq!(k.queues[0].counters.queued, 0);
    assert_eq!(k.agents[0].counters.times.reserved_ms, 10_000);
}

#[test]
fn configuration_changes_apply_at_run_time() {
    let mut w = World::new(
        vec![queue("support")],
        vec![agent("a1", &[("french", 1)], &[("support", 1)])],
    );
    w.login(0.0, "a1");
    w.enqueue(1.0, call_req("c1", "support", "french >= 3"));
    assert_eq!(w.acd.call_position(&c("c1")), Some(1));
    // Training pays off: the agent's profile is updated and the waiting call routes at once.
    let log = w.decisions(
        5.0,
        Input::UpsertAgent(agent("a1", &[("french", 3)], &[("support", 1)])),
    );
    assert_eq!(log, ["offer#1 c1 -> a1 (longest-idle, step 0, idle 5.0s)"]);
    // A new queue and a changed one.
    w.at(6.0, Input::UpsertQueue(queue("sales")));
    let relaxed = QueueConfig {
        steps: vec![RoutingStep {
            after_secs: 0,
            max_rank: None,
            relax_proficiency_to: None,
            ignore_skills: true,
        }],
        ..queue("sales")
    };
    w.at(6.0, Input::UpsertAgent(agent("a2", &[], &[("sales", 1)])));
    w.login(7.0, "a2");
    w.enqueue(8.0, call_req("c2", "sales", "german >= 5"));
    assert_eq!(w.acd.call_position(&c("c2")), Some(1));
    let log = w.decisions(9.0, Input::UpsertQueue(relaxed));
    assert_eq!(log, ["offer#2 c2 -> a2 (longest-idle, step 0, idle 2.0s)"]);
    let bad = QueueConfig {
        offer_timeout_secs: 0,
        ..queue("sales")
    };
    assert!(
        w.acd
            .handle(Timestamp::from_secs(10), Input::UpsertQueue(bad))
            .is_err()
    );
}

#[test]
fn a_withdrawn_offer_frees_the_agent_without_blame_and_the_call_keeps_its_place() {
    let mut w = World::new(vec![queue("support")], support_team(1));
    w.login(0.0, "a1");
    w.enqueue(1.0, call("c1", "support"));
    w.enqueue(2.0, call("c2", "support"));
    let held = w.acd.calls();
    assert_eq!(held.len(), 2);
    let ringing = held.iter().find(|h| h.call == c("c1")).unwrap();
    assert_eq!(ringing.phase, acd::CallPhase::Ringing(vec![a("a1")]));
    assert_eq!(ringing.enqueued_at, Timestamp::from_secs(1));
    // The ring died with its owner: a1 is not blamed (no not-ready, no decline pause) and gets c1 again.
    assert_eq!(
        w.at(3.0, Input::OfferWithdrawn { call: c("c1") }),
        [
            "cancel offer#1 c1 @ a1: withdrawn",
            "a1: reserved -> available",
            "offer#2 c1 -> a1 (longest-idle, step 0, idle 0.0s)",
            "a1: available -> reserved"
        ]
    );
    w.accept(4.0, "c1", "a1");
    let connected = w.acd.calls().into_iter().find(|h| h.call == c("c1")).unwrap();
    assert_eq!(connected.phase, acd::CallPhase::Connected(a("a1")));
    // Only a ringing call can be withdrawn.
    assert!(
        w.acd
            .handle(Timestamp::from_secs(5), Input::OfferWithdrawn { call: c("c2") })
            .is_err()
    );
}

#[test]
fn one_call_is_looked_up_by_id_until_it_leaves_the_router() {
    let mut w = World::new(vec![queue("support")], support_team(1));
    w.login(0.0, "a1");
    w.enqueue(1.0, call("c1", "support"));
    w.enqueue(2.0, call("c2", "support"));
    assert_eq!(
        w.acd.call(&c("c1")).map(|h| h.phase),
        Some(acd::CallPhase::Ringing(vec![a("a1")]))
    );
    let waiting = w.acd.call(&c("c2")).unwrap();
    assert_eq!(
        (waiting.phase, waiting.queue, waiting.enqueued_at),
        (acd::CallPhase::Waiting, q("support"), Timestamp::from_secs(2))
    );
    w.accept(3.0, "c1", "a1");
    assert_eq!(
        w.acd.call(&c("c1")).map(|h| h.phase),
        Some(acd::CallPhase::Connected(a("a1")))
    );
    w.at(4.0, Input::CallAbandoned { call: c("c2") });
    w.at(5.0, Input::CallEnded { call: c("c1") });
    assert_eq!(w.acd.call(&c("c1")), None, "ended");
    assert_eq!(w.acd.call(&c("c2")), None, "abandoned");
    assert_eq!(w.acd.call(&c("nobody")), None);
}

#[test]
fn kpis_round_trip_through_json_for_other_nodes() {
    let mut w = World::new(vec![queue("support")], support_team(2));
    w.login(0.0, "a1");
    w.login(1.0, "a2");
    w.enqueue(2.0, call("c1", "support"));
    w.accept(4.0, "c1", "a1");
    w.at(64.0, Input::CallEnded { call: c("c1") });
    w.enqueue(65.0, call("c2", "support"));
    w.at(66.0, Input::CallAbandoned { call: c("c2") });
    let kpis = w.acd.kpis(Timestamp::from_secs(70));
    let json = serde_json::to_string(&kpis).unwrap();
    let back: acd::KpiSnapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, kpis);
    assert_eq!(back.queues[0].counters.answered, 1);
}
