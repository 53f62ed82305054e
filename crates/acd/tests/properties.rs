//! Property tests on random event sequences over random configurations: no agent ever holds two calls,
//! no call is offered twice at once, no call is lost, and a router restored from a snapshot behaves
//! exactly like the original.

mod common;

use acd::{
    Acd, AcdConfig, AcdError, AgentConfig, CallRequest, Input, OfferId, Output, OverflowConfig,
    OverflowTarget, PreferredAgent, Priority, QueueConfig, ReasonCode, RoutingStep, Strategy as Routing,
};
use common::*;
use domain::{AgentId, CallId, Timestamp};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

const QUEUES: usize = 5;
const AGENTS: usize = 6;
const CALLS: u8 = 30;
const REQUIREMENTS: [&str; 4] = [
    "s0 >= 2",
    "s1 >= 3 && s2 >= 1",
    "s0 >= 4 || s2 == 5",
    "(s0 > 1 || s1 < 3) && s2 <= 4",
];

fn any_strategy() -> impl Strategy<Value = Routing> {
    prop_oneof![
        Just(Routing::LongestIdle),
        Just(Routing::MostSkilled),
        Just(Routing::RoundRobin),
        Just(Routing::FewestCalls),
        Just(Routing::LeastTalkTime),
        Just(Routing::RingAll),
        Just(Routing::Random),
    ]
}

/// Five queues exercising steps, aging, wrap-up, overflow (queue, voicemail, loops), full queues, and
/// random strategies; six agents with random skills and memberships.
fn any_config() -> impl Strategy<Value = AcdConfig> {
    let agents = prop::collection::vec(
        (
            prop::collection::vec(prop::option::of(1u8..=5), 3),
            prop::collection::vec(prop::option::of(1u8..=2), QUEUES),
        ),
        AGENTS,
    );
    (prop::array::uniform5(any_strategy()), agents, any::<u64>()).prop_map(|(strategies, agents, seed)| {
        let name = |i: usize| format!("q{i}");
        let mut queues: Vec<QueueConfig> = (0..QUEUES).map(|i| QueueConfig::new(q(&name(i)))).collect();
        for (queue, strategy) in queues.iter_mut().zip(strategies) {
            queue.strategy = strategy;
            queue.offer_timeout_secs = 8;
        }
        queues[0].steps = vec![
            RoutingStep {
                after_secs: 0,
                max_rank: Some(1),
                relax_proficiency_to: None,
                ignore_skills: false,
            },
            RoutingStep {
                after_secs: 10,
                max_rank: Some(2),
                relax_proficiency_to: Some(2),
                ignore_skills: false,
            },
            RoutingStep {
                after_secs: 20,
                max_rank: None,
                relax_proficiency_to: None,
                ignore_skills: true,
            },
        ];
        queues[0].wrap_up_secs = 3;
        queues[0].wrap_up_max_secs = 10;
        queues[0].priority_aging_secs = Some(20);
        queues[0].announce_every_secs = Some(15);
        queues[1].max_length = Some(3);
        queues[1].reject_sets_not_ready = true;
        queues[1].overflow = Some(OverflowConfig {
            target: OverflowTarget::Queue { queue: q("q2") },
            max_wait_secs: Some(40),
            when_no_agents: false,
            when_full: true,
        });
        queues[2].overflow = Some(OverflowConfig {
            target: OverflowTarget::Voicemail { mailbox: "vm".into() },
            max_wait_secs: Some(30),
            when_no_agents: true,
            when_full: true,
        });
        queues[3].overflow = Some(OverflowConfig {
            target: OverflowTarget::Queue { queue: q("q4") },
            max_wait_secs: Some(25),
            when_no_agents: true,
            when_full: true,
        });
        queues[4].overflow = Some(OverflowConfig {
            target: OverflowTarget::Queue { queue: q("q3") },
            max_wait_secs: Some(25),
            when_no_agents: true,
            when_full: true,
        });
        queues[4].wrap_up_secs = 1;
        let agents = agents
            .into_iter()
            .enumerate()
            .map(|(i, (skills, ranks))| {
                let skills: Vec<(String, u8)> = skills
                    .iter()
                    .enumerate()
                    .filter_map(|(s, l)| l.map(|l| (format!("s{s}"), l)))
                    .collect();
                let queues: Vec<(String, u8)> = ranks
                    .iter()
                    .enumerate()
                    .filter_map(|(qi, r)| r.map(|r| (name(qi), r)))
                    .collect();
                let skills: Vec<(&str, u8)> = skills.iter().map(|(s, l)| (s.as_str(), *l)).collect();
                let queues: Vec<(&str, u8)> = queues.iter().map(|(s, r)| (s.as_str(), *r)).collect();
                agent(&format!("a{i}"), &skills, &queues)
            })
            .collect::<Vec<AgentConfig>>();
        AcdConfig {
            queues,
            agents,
            random_seed: seed,
        }
    })
}

/// An event in abstract form; indexes are resolved against the live state when applied.
#[derive(Debug, Clone)]
enum Op {
    Enqueue {
        call: u8,
        queue: u8,
        priority: u8,
        requirement: Option<u8>,
        preferred: Option<u8>,
        callback: bool,
    },
    Abandon(u8),
    Login(u8),
    Logout(u8),
    Ready(u8),
    NotReady(u8),
    Accept(u8),
    Reject(u8),
    End(u8),
    /// An agent places call `p<n>` themselves (ids reused, so redeliveries happen).
    Place(u8, u8),
    EndPlaced(u8),
    WrapUpDone(u8),
    ExtendWrapUp(u8, u32),
    Tick,
    /// The router runs again after a time none ran.
    Resumed,
    /// New skills and memberships for an agent; agents 6 and 7 do not exist until the first of these.
    ReconfigureAgent {
        agent: u8,
        skills: Vec<Option<u8>>,
        ranks: Vec<Option<u8>>,
    },
    /// A new strategy and aging for a queue, keeping its other settings.
    ReconfigureQueue {
        queue: u8,
        strategy: Routing,
        aging_secs: Option<u32>,
    },
}

fn any_op() -> impl Strategy<Value = (u32, Op)> {
    let agent = 0u8..AGENTS as u8;
    let op = prop_oneof![
        4 => (0..CALLS, 0u8..QUEUES as u8, 0u8..=9, prop::option::of(0u8..4), prop::option::weighted(0.2, 0u8..AGENTS as u8), prop::bool::weighted(0.1))
            .prop_map(|(call, queue, priority, requirement, preferred, callback)| Op::Enqueue { call, queue, priority, requirement, preferred, callback }),
        1 => (0..CALLS).prop_map(Op::Abandon),
        2 => agent.clone().prop_map(Op::Login),
        1 => agent.clone().prop_map(Op::Logout),
        2 => agent.clone().prop_map(Op::Ready),
        1 => agent.clone().prop_map(Op::NotReady),
        4 => any::<u8>().prop_map(Op::Accept),
        1 => any::<u8>().prop_map(Op::Reject),
        3 => any::<u8>().prop_map(Op::End),
        1 => (agent.clone(), 0u8..6).prop_map(|(a, n)| Op::Place(a, n)),
        1 => any::<u8>().prop_map(Op::EndPlaced),
        1 => agent.clone().prop_map(Op::WrapUpDone),
        1 => (agent, 0u32..20).prop_map(|(a, secs)| Op::ExtendWrapUp(a, secs)),
        2 => Just(Op::Tick),
        1 => Just(Op::Resumed),
        1 => (0u8..AGENTS as u8 + 2, prop::collection::vec(prop::option::of(1u8..=5), 3), prop::collection::vec(prop::option::of(1u8..=2), QUEUES))
            .prop_map(|(agent, skills, ranks)| Op::ReconfigureAgent { agent, skills, ranks }),
        1 => (0u8..QUEUES as u8, any_strategy(), prop::option::of(1u32..60))
            .prop_map(|(queue, strategy, aging_secs)| Op::ReconfigureQueue { queue, strategy, aging_secs }),
    ];
    (0u32..6_000, op)
}

/// What the outputs say, checked against the safety properties as they arrive.
#[derive(Default)]
struct Model {
    now_ms: i64,
    offers: BTreeMap<OfferId, (CallId, Vec<AgentId>)>,
    connected: BTreeMap<AgentId, CallId>,
    accepted: BTreeSet<CallId>,
    outcomes: BTreeMap<CallId, &'static str>,
    /// Agents on calls they placed.
    placed: BTreeMap<AgentId, CallId>,
}

impl Model {
    fn observe(&mut self, out: &Output) {
        match out {
            Output::Offer(o) => {
                assert!(!o.agents.is_empty());
                for (call, agents) in self.offers.values() {
                    assert_ne!(call, &o.call, "call offered twice at once");
                    for a in &o.agents {
                        assert!(!agents.contains(a), "agent {a} offered two calls at once");
                    }
                }
                for a in &o.agents {
                    assert!(
                        !self.connected.contains_key(a),
                        "agent {a} offered a call while on one"
                    );
                    assert!(
                        !self.placed.contains_key(a),
                        "agent {a} offered a call while on one they placed"
                    );
                }
                assert!(!self.outcomes.contains_key(&o.call), "finished call offered");
                self.offers.insert(o.offer, (o.call.clone(), o.agents.clone()));
            }
            Output::OfferCancelled { offer, agent, .. } => {
                let entry = self.offers.get_mut(offer).expect("cancel of an unknown offer");
                assert!(entry.1.contains(agent));
                entry.1.retain(|a| a != agent);
                if entry.1.is_empty() {
                    self.offers.remove(offer);
                }
            }
            Output::Answered { call, agent, .. } => {
                let (id, (_, agents)) = self
                    .offers
                    .iter()
                    .find(|(_, (c, _))| c == call)
                    .expect("answer without an offer");
                assert_eq!(
                    agents,
                    &vec![agent.clone()],
                    "the other ringing agents were cancelled first"
                );
                let id = *id;
                self.offers.remove(&id);
                assert!(
                    self.connected.insert(agent.clone(), call.clone()).is_none(),
                    "agent holds two calls"
                );
                self.finish(call, "answered");
            }
            Output::Abandoned { call, .. } => {
                assert!(
                    !self.offers.values().any(|(c, _)| c == call),
                    "abandoned call still ringing"
                );
                self.finish(call, "abandoned");
            }
            Output::Overflowed { call, target, .. } if !matches!(target, OverflowTarget::Queue { .. }) => {
                self.finish(call, "overflowed");
            }
            _ => {}
        }
    }

    fn finish(&mut self, call: &CallId, how: &'static str) {
        assert!(self.accepted.contains(call), "{call} finished but never accepted");
        let previous = self.outcomes.insert(call.clone(), how);
        assert!(
            previous.is_none(),
            "{call} finished twice: {previous:?} then {how}"
        );
    }

    /// Calls the router should still hold: accepted, not finished, or answered and not yet ended.
    fn live(&self) -> usize {
        self.accepted.len() - self.outcomes.len() + self.connected.len()
    }
}

fn to_input(op: &Op, model: &Model, acd: &Acd) -> Option<Input> {
    let agent_id = |i: u8| a(&format!("a{i}"));
    let call_id = |i: u8| c(&format!("c{i}"));
    Some(match op.clone() {
        Op::Enqueue {
            call,
            queue,
            priority,
            requirement,
            preferred,
            callback,
        } => Input::CallEnqueued(CallRequest {
            call: call_id(call),
            queue: q(&format!("q{queue}")),
            priority: Priority::new(priority).ok()?,
            requirement: requirement
                .and_then(|r| REQUIREMENTS.get(usize::from(r)))
                .and_then(|r| r.parse().ok()),
            preferred: preferred.map(|p| PreferredAgent {
                agent: agent_id(p),
                timeout_secs: 12,
            }),
            original_enqueued_at: callback.then(|| Timestamp::from_millis(model.now_ms - 30_000)),
        }),
        Op::Abandon(call) => Input::CallAbandoned { call: call_id(call) },
        Op::Login(i) => Input::AgentLogin { agent: agent_id(i) },
        Op::Logout(i) => Input::AgentLogout { agent: agent_id(i) },
        Op::Ready(i) => Input::AgentReady { agent: agent_id(i) },
        Op::NotReady(i) => Input::AgentNotReady {
            agent: agent_id(i),
            reason: ReasonCode::new("break").ok()?,
        },
        Op::Accept(i) | Op::Reject(i) => {
            let (call, agents) = model
                .offers
                .values()
                .nth(usize::from(i) % model.offers.len().max(1))?;
            let agent = agents.get(usize::from(i) % agents.len())?.clone();
            let call = call.clone();
            if matches!(op, Op::Accept(_)) {
                Input::OfferAccepted { call, agent }
            } else {
                Input::OfferRejected { call, agent }
            }
        }
        Op::End(i) => {
            let call = model
                .connected
                .values()
                .nth(usize::from(i) % model.connected.len().max(1))?
                .clone();
            Input::CallEnded { call }
        }
        Op::Place(i, n) => Input::CallPlaced {
            agent: agent_id(i),
            call: c(&format!("p{n}")),
            wrap_up_secs: u32::from(n % 3) * 5,
            then_not_ready: (n % 2 == 1).then(|| acd::ReasonCode::new("break").expect("reason")),
        },
        Op::EndPlaced(i) => {
            let call = model
                .placed
                .values()
                .nth(usize::from(i) % model.placed.len().max(1))?
                .clone();
            Input::CallEnded { call }
        }
        Op::WrapUpDone(i) => Input::WrapUpDone { agent: agent_id(i) },
        Op::ExtendWrapUp(i, secs) => Input::ExtendWrapUp {
            agent: agent_id(i),
            secs,
        },
        Op::Tick => Input::Tick,
        Op::Resumed => Input::Resumed,
        Op::ReconfigureAgent {
            agent: i,
            skills,
            ranks,
        } => {
            let skills: Vec<(String, u8)> = skills
                .iter()
                .enumerate()
                .filter_map(|(s, l)| l.map(|l| (format!("s{s}"), l)))
                .collect();
            let queues: Vec<(String, u8)> = ranks
                .iter()
                .enumerate()
                .filter_map(|(q_, r)| r.map(|r| (format!("q{q_}"), r)))
                .collect();
            let skills: Vec<(&str, u8)> = skills.iter().map(|(s, l)| (s.as_str(), *l)).collect();
            let queues: Vec<(&str, u8)> = queues.iter().map(|(q_, r)| (q_.as_str(), *r)).collect();
            Input::UpsertAgent(agent(&format!("a{i}"), &skills, &queues))
        }
        Op::ReconfigureQueue {
            queue,
            strategy,
            aging_secs,
        } => {
            let mut config = acd.config().queues.get(usize::from(queue))?.clone();
            config.strategy = strategy;
            config.priority_aging_secs = aging_secs;
            Input::UpsertQueue(config)
        }
    })
}

/// Applies one input, feeds the outputs to the model and checks the router's own invariants.
fn apply(acd: &mut Acd, model: &mut Model, input: Input) -> (Result<(), AcdError>, Vec<Output>) {
    let enqueued = match &input {
        Input::CallEnqueued(req) => Some(req.call.clone()),
        _ => None,
    };
    let ended = match &input {
        Input::CallEnded { call } => Some(call.clone()),
        _ => None,
    };
    let placing = match &input {
        Input::CallPlaced { agent, call, .. } => Some((agent.clone(), call.clone())),
        _ => None,
    };
    // Fire due timers first, so their outputs are observed before the input changes the model.
    let now = Timestamp::from_millis(model.now_ms);
    let tick = acd.handle(now, Input::Tick);
    assert_eq!(tick, Ok(()));
    let timer_outputs: Vec<Output> = acd.drain_outputs().collect();
    for out in &timer_outputs {
        model.observe(out);
    }
    let result = acd.handle(now, input);
    if result.is_ok() {
        if let Some(call) = enqueued {
            // A call id may be reused after its call finished; the model tracks one life per id.
            if model.outcomes.remove(&call).is_some() {
                model.accepted.remove(&call);
            }
            assert!(model.accepted.insert(call));
        }
        if let Some((agent, call)) = placing {
            // Taken again (redelivered) it must change nothing: the agent is on it or it ended.
            if !model.placed.values().any(|c| c == &call) {
                let on_it = acd
                    .kpis(now)
                    .agents
                    .iter()
                    .any(|k| k.agent == agent && k.call.as_ref() == Some(&call) && k.placed);
                if on_it {
                    model.placed.insert(agent, call);
                }
            }
        }
        if let Some(call) = &ended {
            model.placed.retain(|_, c| c != call);
            model.connected.retain(|_, c| c != call);
            model.accepted.remove(call);
            model.outcomes.remove(call);
        }
    }
    let mut outputs: Vec<Output> = acd.drain_outputs().collect();
    for out in &outputs {
        model.observe(out);
    }
    outputs.splice(0..0, timer_outputs);
    if let Err(e) = acd.check_invariants() {
        panic!("invariant broken: {e}");
    }
    assert_eq!(
        acd.call_count(),
        model.live(),
        "the router lost or invented a call"
    );
    (result, outputs)
}

proptest! {
    // 128 cases by default; PROPTEST_CASES=5000 for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(128),
        ..ProptestConfig::default()
    })]

    #[test]
    fn safety_holds_and_no_call_is_lost(config in any_config(), ops in prop::collection::vec(any_op(), 1..160)) {
        let mut acd = Acd::new(config).unwrap();
        let mut model = Model::default();
        for (dt, op) in &ops {
            model.now_ms += i64::from(*dt);
            if let Some(input) = to_input(op, &model, &acd) {
                let _ = apply(&mut acd, &mut model, input);
            }
        }
        // Drain: everyone still waiting hangs up, every connected call ends. Then every call the router
        // accepted has exactly one outcome and the router holds nothing.
        model.now_ms += 1;
        let waiting: Vec<CallId> =
            model.accepted.iter().filter(|c| !model.outcomes.contains_key(*c)).cloned().collect();
        for call in waiting {
            let (result, _) = apply(&mut acd, &mut model, Input::CallAbandoned { call: call.clone() });
            // It may have overflowed to voicemail on a timer that fired just now.
            prop_assert!(result.is_ok() || model.outcomes.contains_key(&call), "{call}: {result:?}");
        }
        let connected: Vec<CallId> =
            model.connected.values().chain(model.placed.values()).cloned().collect();
        for call in connected {
            let (result, _) = apply(&mut acd, &mut model, Input::CallEnded { call });
            prop_assert!(result.is_ok());
        }
        prop_assert_eq!(acd.call_count(), 0);
        prop_assert!(model.offers.is_empty());
        prop_assert!(model.accepted.iter().all(|c| model.outcomes.contains_key(c)));
    }

    #[test]
    fn a_restored_router_behaves_like_the_original(
        config in any_config(),
        ops in prop::collection::vec(any_op(), 1..120),
        split in 0usize..120,
    ) {
        let mut original = Acd::new(config).unwrap();
        let mut model = Model::default();
        let split = split.min(ops.len());
        for (dt, op) in &ops[..split] {
            model.now_ms += i64::from(*dt);
            if let Some(input) = to_input(op, &model, &original) {
                let _ = apply(&mut original, &mut model, input);
            }
        }
        let stored = serde_json::to_string(&original.snapshot()).unwrap();
        let mut restored = Acd::restore(serde_json::from_str(&stored).unwrap()).unwrap();
        prop_assert_eq!(restored.snapshot(), original.snapshot());
        prop_assert_eq!(restored.next_deadline(), original.next_deadline());
        let mut shadow = Model { now_ms: model.now_ms, ..Model::default() };
        shadow.offers = model.offers.clone();
        shadow.connected = model.connected.clone();
        shadow.accepted = model.accepted.clone();
        shadow.outcomes = model.outcomes.clone();
        for (dt, op) in &ops[split..] {
            model.now_ms += i64::from(*dt);
            shadow.now_ms = model.now_ms;
            if let Some(input) = to_input(op, &model, &original) {
                let (r1, o1) = apply(&mut original, &mut model, input.clone());
                let (r2, o2) = apply(&mut restored, &mut shadow, input);
                prop_assert_eq!(r1, r2);
                prop_assert_eq!(o1, o2);
            }
        }
        prop_assert_eq!(restored.snapshot(), original.snapshot());
        let later = Timestamp::from_millis(model.now_ms + 1000);
        prop_assert_eq!(
            serde_json::to_value(restored.kpis(later)).unwrap(),
            serde_json::to_value(original.kpis(later)).unwrap()
        );
    }
}

#[test]
fn restore_rejects_a_corrupt_snapshot() {
    let mut acd = Acd::new(AcdConfig {
        queues: vec![QueueConfig::new(q("support"))],
        agents: vec![agent("a1", &[], &[("support", 1)])],
        random_seed: 1,
    })
    .unwrap();
    acd.handle(Timestamp::from_secs(1), Input::AgentLogin { agent: a("a1") })
        .unwrap();
    acd.handle(
        Timestamp::from_secs(2),
        Input::CallEnqueued(CallRequest::new(c("c1"), q("support"))),
    )
    .unwrap();
    let mut json = serde_json::to_value(acd.snapshot()).unwrap();
    json["offers"]["1"]["agents"] = serde_json::json!([7]);
    let err = Acd::restore(serde_json::from_value(json).unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "inconsistent router snapshot: an offer refers to a missing agent or call"
    );
}

/// Every number in a JSON tree, in document order, for mutation.
fn numbers(value: &mut serde_json::Value) -> Vec<&mut serde_json::Value> {
    match value {
        serde_json::Value::Number(_) => vec![value],
        serde_json::Value::Array(items) => items.iter_mut().flat_map(numbers).collect(),
        serde_json::Value::Object(map) => map.values_mut().flat_map(numbers).collect(),
        _ => Vec::new(),
    }
}

proptest! {
    /// A stored snapshot with any one number changed (an index, a time, a counter, a sequence) is
    /// restored or refused, and a restored router keeps running; nothing panics.
    #[test]
    fn a_tampered_snapshot_never_panics(
        config in any_config(),
        ops in prop::collection::vec(any_op(), 1..60),
        pick in any::<prop::sample::Index>(),
        replacement in prop_oneof![any::<i64>().prop_map(serde_json::Value::from), (0u64..20).prop_map(serde_json::Value::from)],
    ) {
        let mut acd = Acd::new(config).unwrap();
        let mut model = Model::default();
        for (dt, op) in &ops {
            model.now_ms += i64::from(*dt);
            if let Some(input) = to_input(op, &model, &acd) {
                let _ = apply(&mut acd, &mut model, input);
            }
        }
        let mut json = serde_json::to_value(acd.snapshot()).unwrap();
        let mut slots = numbers(&mut json);
        if !slots.is_empty() {
            let i = pick.index(slots.len());
            *slots[i] = replacement;
        }
        if let Ok(snapshot) = serde_json::from_value::<acd::AcdSnapshot>(json)
            && let Ok(mut restored) = Acd::restore(snapshot)
        {
            let later = Timestamp::from_millis(model.now_ms + 100_000);
            let _ = restored.handle(later, Input::Tick);
            let _ = restored.kpis(later);
            let _ = restored.handle(later, Input::CallAbandoned { call: c("c1") });
        }
    }
}
