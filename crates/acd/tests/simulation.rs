//! Discrete-event simulation: Poisson arrivals, exponential handle times, one queue, c agents, longest
//! idle. The router's own KPIs (service level, ASA) must agree with Erlang C: the engine has to reproduce
//! queueing theory, which catches any call served out of order, any idle agent left idle while a caller
//! waits, and any accounting slip in the KPIs.

// Simulation helpers are test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use acd::erlang;
use acd::rng::SplitMix64;
use acd::{Acd, AcdConfig, CallRequest, Input, Output, QueueConfig};
use common::*;
use domain::{CallId, Timestamp};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

struct Measured {
    service_level: f64,
    asa_secs: f64,
    answered: u64,
}

/// Runs `calls` arrivals through a router with `agents` agents at `traffic` erlangs.
fn simulate(agents: u32, traffic: f64, aht_secs: f64, calls: u64, warm_up: u64, seed: u64) -> Measured {
    let queue = QueueConfig {
        offer_timeout_secs: 3600,
        ..QueueConfig::new(q("sim"))
    };
    let team = (0..agents)
        .map(|i| agent(&format!("a{i}"), &[], &[("sim", 1)]))
        .collect();
    let mut acd = Acd::new(AcdConfig {
        queues: vec![queue],
        agents: team,
        random_seed: seed,
    })
    .unwrap();
    for i in 0..agents {
        acd.handle(
            Timestamp::ZERO,
            Input::AgentLogin {
                agent: a(&format!("a{i}")),
            },
        )
        .unwrap();
    }
    let mut rng = SplitMix64::new(seed);
    let mean_gap_ms = aht_secs * 1000.0 / traffic;
    let aht_ms = aht_secs * 1000.0;
    let mut next_arrival = rng.exponential(mean_gap_ms);
    let mut departures: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
    let mut arrived = 0u64;
    let call_id = |n: u64| CallId::new(format!("c{n}")).unwrap();

    // Handles one input and answers every offer at once (agents pick up immediately), scheduling the
    // end of each answered call.
    let step = |acd: &mut Acd,
                now: Timestamp,
                input: Input,
                rng: &mut SplitMix64,
                departures: &mut BinaryHeap<_>| {
        acd.handle(now, input).unwrap();
        loop {
            let offers: Vec<(CallId, domain::AgentId)> = acd
                .drain_outputs()
                .filter_map(|o| match o {
                    Output::Offer(o) => Some((o.call, o.agents[0].clone())),
                    _ => None,
                })
                .collect();
            if offers.is_empty() {
                break;
            }
            for (call, agent) in offers {
                let n: u64 = call.as_str()[1..].parse().unwrap();
                acd.handle(now, Input::OfferAccepted { call, agent }).unwrap();
                let end = now.as_millis() + rng.exponential(aht_ms).round().max(1.0) as i64;
                departures.push(Reverse((end, n)));
            }
        }
    };

    while arrived < calls {
        let arrival_ms = next_arrival.round() as i64;
        match departures.peek() {
            Some(&Reverse((end, n))) if end <= arrival_ms => {
                departures.pop();
                let now = Timestamp::from_millis(end);
                step(
                    &mut acd,
                    now,
                    Input::CallEnded { call: call_id(n) },
                    &mut rng,
                    &mut departures,
                );
            }
            _ => {
                let now = Timestamp::from_millis(arrival_ms);
                let req = CallRequest::new(call_id(arrived), q("sim"));
                step(&mut acd, now, Input::CallEnqueued(req), &mut rng, &mut departures);
                arrived += 1;
                if arrived == warm_up {
                    step(&mut acd, now, Input::ResetKpis, &mut rng, &mut departures);
                }
                next_arrival += rng.exponential(mean_gap_ms);
            }
        }
    }
    let kpis = acd.kpis(acd.now());
    let queue = &kpis.queues[0];
    Measured {
        service_level: queue.service_level.unwrap(),
        asa_secs: queue.asa_ms.unwrap() as f64 / 1000.0,
        answered: queue.counters.answered,
    }
}

fn check(agents: u32, traffic: f64, calls: u64, seed: u64) {
    let aht = 180.0;
    let expected_sl = erlang::service_level(agents, traffic, aht, 20.0);
    let expected_asa = erlang::asa_secs(agents, traffic, aht);
    let m = simulate(agents, traffic, aht, calls, calls / 20, seed);
    eprintln!(
        "c={agents} A={traffic}: SL {:.4} (Erlang C {expected_sl:.4}), ASA {:.2}s (Erlang C {expected_asa:.2}s), {} answered",
        m.service_level, m.asa_secs, m.answered
    );
    assert!(m.answered > calls * 9 / 10);
    assert!(
        (m.service_level - expected_sl).abs() <= 0.02,
        "service level {} vs {expected_sl}",
        m.service_level
    );
    assert!(
        (m.asa_secs - expected_asa).abs() <= 0.10 * expected_asa,
        "ASA {} vs {expected_asa}",
        m.asa_secs
    );
}

/// Calls per run: `ACD_SIM_CALLS` (e.g. 1000000 in a release run for a tighter look), 100,000 by default.
/// Across 16 seeds at 100,000 calls the worst deviations seen were 1.2 points / 5.6% (3 agents) and
/// 1.3 points / 8.7% (8 agents), inside the 2 points / 10% asked for.
fn calls() -> u64 {
    std::env::var("ACD_SIM_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

#[test]
fn three_agents_at_two_erlangs_match_erlang_c() {
    // Pw 0.444, SL(20 s) 0.602, ASA 80.0 s.
    check(3, 2.0, calls(), 0x5EED_0001);
}

#[test]
fn eight_agents_at_six_erlangs_match_erlang_c() {
    // Pw 0.357, SL(20 s) 0.714, ASA 32.1 s.
    check(8, 6.0, calls(), 0x5EED_0002);
}
