//! Rough routing throughput of the pure core at contact-center scale: 5,000 agents, 500 queues, 50 skills,
//! 4 priorities, skill requirements on half the calls, a step that drops them after 30 s, 5 s wrap-up.
//! Agents answer at once; calls arrive as a Poisson stream sized for about 90% occupancy.
//!
//! `cargo run --release -p acd --example throughput [events]` prints JSON: routing decisions per second
//! and p50/p99 time of one `handle` call. The benchmark crate owns the full scenario; this is a quick
//! check while working on the router.
// Timing from outside the core: the clock is read here, never in the crate itself.
#![allow(clippy::disallowed_methods)]

use acd::rng::SplitMix64;
use acd::{
    Acd, AcdConfig, AgentConfig, CallRequest, Input, Output, Priority, Proficiency, QueueConfig,
    QueueMembership, RoutingStep,
};
use domain::{AgentId, CallId, QueueId, SkillId, Timestamp};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

const AGENTS: usize = 5_000;
const QUEUES: usize = 500;
const SKILLS: usize = 50;
const AHT_MS: f64 = 120_000.0;

fn id<T: std::str::FromStr>(s: String) -> T
where
    T::Err: std::fmt::Debug,
{
    // Names built here are always valid identifiers.
    s.parse().unwrap_or_else(|e| panic!("bad id {s}: {e:?}"))
}

fn main() {
    let events: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut rng = SplitMix64::new(7);
    let queues: Vec<QueueConfig> = (0..QUEUES)
        .map(|q| QueueConfig {
            wrap_up_secs: 5,
            offer_timeout_secs: 20,
            steps: vec![
                RoutingStep::INITIAL,
                RoutingStep {
                    after_secs: 30,
                    max_rank: None,
                    relax_proficiency_to: None,
                    ignore_skills: true,
                },
            ],
            ..QueueConfig::new(id::<QueueId>(format!("q{q}")))
        })
        .collect();
    let agents: Vec<AgentConfig> = (0..AGENTS)
        .map(|a| AgentConfig {
            id: id::<AgentId>(format!("a{a}")),
            skills: (0..5)
                .map(|_| {
                    let level = Proficiency::new(1 + rng.below(5) as u8).unwrap_or_else(|e| panic!("{e}"));
                    (id::<SkillId>(format!("s{}", rng.below(SKILLS as u64))), level)
                })
                .collect(),
            queues: (0..5)
                .map(|k| QueueMembership {
                    // Each agent serves a block of neighbouring queues, so every queue has ~50 agents.
                    queue: id::<QueueId>(format!("q{}", (a / 10 + k * 7) % QUEUES)),
                    rank: 1 + (k % 2) as u8,
                })
                .collect(),
        })
        .collect();
    let mut acd = match Acd::new(AcdConfig {
        queues,
        agents,
        random_seed: 1,
    }) {
        Ok(acd) => acd,
        Err(e) => panic!("config: {e}"),
    };
    let mut meter = Meter {
        latencies: Vec::with_capacity(events as usize),
        ..Meter::default()
    };
    for a in 0..AGENTS {
        let mut pending = Vec::new();
        meter.run(
            &mut acd,
            Timestamp::ZERO,
            Input::AgentLogin {
                agent: id(format!("a{a}")),
            },
            &mut pending,
        );
    }
    // 90% occupancy including wrap-up: λ = 0.9 · agents / (AHT + wrap).
    let gap_ms = (AHT_MS + 5_000.0) / (0.9 * AGENTS as f64);
    let mut t = 0.0f64;
    let mut ends: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
    let mut next_call = 0u64;
    let mut next_arrival = rng.exponential(gap_ms);
    let mut pending: Vec<(CallId, AgentId)> = Vec::new();
    while meter.handled < events {
        let now_ms = match ends.peek() {
            Some(&Reverse((end, _))) if (end as f64) < next_arrival => end,
            _ => next_arrival as i64,
        };
        t = t.max(now_ms as f64);
        let now = Timestamp::from_millis(t as i64);
        if let Some(&Reverse((end, n))) = ends.peek()
            && (end as f64) < next_arrival
        {
            ends.pop();
            meter.run(
                &mut acd,
                now,
                Input::CallEnded {
                    call: id(format!("c{n}")),
                },
                &mut pending,
            );
        } else {
            let requirement = (rng.below(2) == 0).then(|| {
                let text = format!("s{} >= {}", rng.below(SKILLS as u64), 1 + rng.below(3));
                text.parse().unwrap_or_else(|e| panic!("{e}"))
            });
            let req = CallRequest {
                priority: Priority::new(rng.below(4) as u8).unwrap_or_default(),
                requirement,
                ..CallRequest::new(
                    id(format!("c{next_call}")),
                    id(format!("q{}", rng.below(QUEUES as u64))),
                )
            };
            next_call += 1;
            meter.run(&mut acd, now, Input::CallEnqueued(req), &mut pending);
            next_arrival += rng.exponential(gap_ms);
        }
        while let Some((call, agent)) = pending.pop() {
            let n: u64 = call.as_str()[1..].parse().unwrap_or(0);
            meter.run(&mut acd, now, Input::OfferAccepted { call, agent }, &mut pending);
            ends.push(Reverse((now.as_millis() + rng.exponential(AHT_MS) as i64 + 1, n)));
        }
        // Wrap-up timers.
        if let Some(deadline) = acd.next_deadline()
            && deadline <= now
        {
            meter.run(&mut acd, now, Input::Tick, &mut pending);
        }
    }
    let Meter {
        mut latencies,
        decisions,
        handled,
        busy,
    } = meter;
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    let kpis = acd.kpis(acd.now());
    let waiting: u32 = kpis.queues.iter().map(|q| q.waiting).sum();
    // What persisting the whole state costs at this size.
    let start = Instant::now();
    let stored = serde_json::to_vec(&acd.snapshot()).unwrap_or_default();
    let snapshot_ms = start.elapsed().as_secs_f64() * 1000.0;
    let start = Instant::now();
    let restored = serde_json::from_slice(&stored)
        .ok()
        .and_then(|s| Acd::restore(s).ok())
        .is_some();
    let restore_ms = start.elapsed().as_secs_f64() * 1000.0;
    println!(
        "{{\"snapshot_bytes\":{},\"snapshot_ms\":{snapshot_ms:.1},\"restore_ms\":{restore_ms:.1},\"restored\":{restored}}}",
        stored.len()
    );
    println!(
        "{{\"events\":{handled},\"decisions\":{decisions},\"decisions_per_sec\":{:.0},\"events_per_sec\":{:.0},\
         \"p50_ns\":{},\"p99_ns\":{},\"p999_ns\":{},\"over_1ms\":{},\"max_ns\":{},\"calls_waiting_at_end\":{waiting},\"virtual_secs\":{:.0}}}",
        decisions as f64 / busy.as_secs_f64(),
        handled as f64 / busy.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(0.999),
        latencies.iter().filter(|&&ns| ns > 1_000_000).count(),
        latencies.last().copied().unwrap_or(0),
        t / 1000.0
    );
}

/// Times each `handle` call and collects the offers to answer.
#[derive(Default)]
struct Meter {
    latencies: Vec<u64>,
    decisions: u64,
    handled: u64,
    busy: Duration,
}

impl Meter {
    fn run(&mut self, acd: &mut Acd, now: Timestamp, input: Input, pending: &mut Vec<(CallId, AgentId)>) {
        let start = Instant::now();
        let result = acd.handle(now, input);
        let elapsed = start.elapsed();
        self.busy += elapsed;
        self.latencies.push(elapsed.as_nanos() as u64);
        self.handled += 1;
        if let Err(e) = result {
            panic!("refused: {e}");
        }
        for out in acd.drain_outputs() {
            if let Output::Offer(o) = out {
                self.decisions += 1;
                if let Some(agent) = o.agents.first() {
                    pending.push((o.call, agent.clone()));
                }
            }
        }
    }
}
