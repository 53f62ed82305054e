//! Helpers for the scenario and property tests: short constructors and a driver that records every
//! output as one line of a decision log.
// Test helpers panic on bad literals by design, like the tests that call them.
#![allow(dead_code, clippy::unwrap_used)]

use acd::{
    Acd, AcdConfig, AgentConfig, CallRequest, Input, Output, Priority, Proficiency, QueueConfig,
    QueueMembership,
};
use domain::{AgentId, CallId, QueueId, SkillId, Timestamp};

pub fn q(s: &str) -> QueueId {
    QueueId::new(s).unwrap()
}
pub fn a(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}
pub fn c(s: &str) -> CallId {
    CallId::new(s).unwrap()
}

/// An agent with `skills` (name, level) serving `queues` (name, rank).
pub fn agent(id: &str, skills: &[(&str, u8)], queues: &[(&str, u8)]) -> AgentConfig {
    AgentConfig {
        id: a(id),
        skills: skills
            .iter()
            .map(|(s, l)| (SkillId::new(s).unwrap(), Proficiency::new(*l).unwrap()))
            .collect(),
        queues: queues
            .iter()
            .map(|(q_, r)| QueueMembership {
                queue: q(q_),
                rank: *r,
            })
            .collect(),
    }
}

pub fn call(id: &str, queue: &str) -> CallRequest {
    CallRequest::new(c(id), q(queue))
}

pub fn call_p(id: &str, queue: &str, priority: u8) -> CallRequest {
    CallRequest {
        priority: Priority::new(priority).unwrap(),
        ..call(id, queue)
    }
}

pub fn call_req(id: &str, queue: &str, requirement: &str) -> CallRequest {
    CallRequest {
        requirement: Some(requirement.parse().unwrap()),
        ..call(id, queue)
    }
}

/// Drives a router on virtual time, in seconds.
pub struct World {
    pub acd: Acd,
}

impl World {
    pub fn new(queues: Vec<QueueConfig>, agents: Vec<AgentConfig>) -> Self {
        Self::with_config(AcdConfig {
            queues,
            agents,
            random_seed: 42,
        })
    }

    pub fn with_config(config: AcdConfig) -> Self {
        Self {
            acd: Acd::new(config).unwrap(),
        }
    }

    /// Applies `input` at `secs` and returns the outputs as log lines.
    pub fn at(&mut self, secs: f64, input: Input) -> Vec<String> {
        self.outputs_at(secs, input)
            .iter()
            .map(|o| o.to_string())
            .collect()
    }

    /// Applies `input` at `secs` and returns the outputs.
    pub fn outputs_at(&mut self, secs: f64, input: Input) -> Vec<Output> {
        let now = Timestamp::from_millis((secs * 1000.0).round() as i64);
        self.acd.handle(now, input).unwrap();
        self.acd.check_invariants().unwrap();
        self.acd.drain_outputs().collect()
    }

    /// Like [`World::at`] but keeps only offers, cancellations, answers, abandons and overflows.
    pub fn decisions(&mut self, secs: f64, input: Input) -> Vec<String> {
        self.outputs_at(secs, input)
            .iter()
            .filter(|o| !matches!(o, Output::AgentStateChanged { .. } | Output::Queued { .. }))
            .map(|o| o.to_string())
            .collect()
    }

    pub fn login(&mut self, secs: f64, id: &str) -> Vec<String> {
        self.at(secs, Input::AgentLogin { agent: a(id) })
    }

    pub fn enqueue(&mut self, secs: f64, req: CallRequest) -> Vec<String> {
        self.decisions(secs, Input::CallEnqueued(req))
    }

    pub fn accept(&mut self, secs: f64, call_: &str, agent_: &str) -> Vec<String> {
        self.decisions(
            secs,
            Input::OfferAccepted {
                call: c(call_),
                agent: a(agent_),
            },
        )
    }

    pub fn end(&mut self, secs: f64, call_: &str) -> Vec<String> {
        self.decisions(secs, Input::CallEnded { call: c(call_) })
    }

    pub fn tick(&mut self, secs: f64) -> Vec<String> {
        self.decisions(secs, Input::Tick)
    }
}
