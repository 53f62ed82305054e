//! The discrete-event engine: a binary heap of events on virtual time, one pacing policy, a team of agents
//! following the scenario's shift shape, and leads whose outcomes come from per-lead random streams seeded
//! from (seed, lead index), so every policy meets the same outcome on the same lead (common random numbers).

use super::report::{Accounting, Report};
use super::scenario::{Shape, ValidScenario};
use crate::compliance::ComplianceRules;
use crate::pacing::{
    AgentActivity, AgentView, DialResult, PacingEvent, PacingPolicy, PacingSnapshot, PolicySpec,
};
use crate::rng::SimRng;
pub(crate) use AgentState as AgentStateForAccounting;
use domain::Timestamp;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

/// Runs one replication of `scenario` under `policy` with `seed` and returns its metrics.
pub fn simulate(scenario: &ValidScenario, policy: &PolicySpec, seed: u64) -> Report {
    let policy = policy.clone().for_rules(&scenario.rules);
    let mut engine = Engine::new(scenario, policy.build(), seed);
    engine.run();
    engine.accounting.into_report(
        &scenario.scenario.name,
        &policy.to_string(),
        seed,
        &scenario.rules,
    )
}

/// Ground truth of who or what answers a dial.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Truth {
    Person,
    Machine,
    Busy,
    NoAnswer,
}

/// Everything random about one lead, drawn in a fixed order from the lead's own stream. Draws that only
/// matter once the lead answers are taken only then (same order, so still common to every policy).
#[derive(Debug, Clone, Copy, Default)]
struct LeadDraws {
    answer_secs: f64,
    greeting_secs: f64,
    amd_secs: f64,
    amd_error: f64,
    patience_secs: f64,
    talk_secs: f64,
    wrap_secs: f64,
}

impl LeadDraws {
    fn draw(seed: u64, lead: u64, s: &super::scenario::Scenario, live: f64, ring: Duration) -> (Truth, Self) {
        let mut rng = SimRng::stream(seed, &[lead]);
        let outcome = rng.uniform();
        let truth = if outcome < live {
            Truth::Person
        } else if outcome < live + s.leads.machine {
            Truth::Machine
        } else if outcome < live + s.leads.machine + s.leads.busy {
            return (Truth::Busy, Self::default());
        } else {
            return (Truth::NoAnswer, Self::default());
        };
        let answer_secs = rng.lognormal_mean_cv(s.leads.answer_time_mean_s, s.leads.answer_time_cv);
        if secs(answer_secs) >= ring {
            return (Truth::NoAnswer, Self::default());
        }
        let draws = Self {
            answer_secs,
            greeting_secs: rng.lognormal_mean_cv(s.leads.greeting_mean_s, s.leads.greeting_cv),
            amd_secs: rng
                .lognormal_mean_cv(s.amd.decision_mean_s, 0.5)
                .min(s.amd.decision_cap_s),
            amd_error: rng.uniform(),
            patience_secs: rng.lognormal_mean_cv(s.leads.patience_mean_s, 0.5),
            talk_secs: rng.lognormal_mean_cv(s.handling.talk_mean_s, s.handling.talk_cv),
            wrap_secs: rng.lognormal_mean_cv(s.handling.wrap_mean_s, s.handling.wrap_cv),
        };
        (truth, draws)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallStage {
    InFlight,
    Waiting,
    Done,
}

#[derive(Debug, Clone)]
struct Call {
    /// The lead's index: unique per call, so an event for a slot's earlier call can be told apart.
    lead: u64,
    dialed_at: Timestamp,
    truth: Truth,
    /// What the dialer will believe when the dial resolves.
    verdict: DialResult,
    greeting_end: Timestamp,
    /// When this call is abandoned if no agent has it: the 2-second rule or the caller hanging up.
    give_up_at: Timestamp,
    talk: Duration,
    wrap: Duration,
    stage: CallStage,
    flight_index: usize,
}

/// An agent's state, as the accounting sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AgentState {
    LoggedOut,
    Ready,
    OnCall,
    WrapUp,
    Break,
}

#[derive(Debug, Clone)]
struct Agent {
    state: AgentState,
    since: Timestamp,
    break_due: bool,
    /// Wrap-up of the current call, known when it connects.
    pending_wrap: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Decide,
    Resolve(usize),
    /// (slot, lead): slots are reused, so the lead says which call the deadline was for.
    GiveUp(usize, u64),
    TalkEnd(usize),
    WrapEnd(usize),
    Login(usize),
    BreakStart(usize),
    BreakEnd(usize, i64),
}

struct Engine<'a> {
    scenario: &'a ValidScenario,
    rules: &'a ComplianceRules,
    policy: Box<dyn PacingPolicy>,
    seed: u64,
    now: Timestamp,
    end: Timestamp,
    heap: BinaryHeap<Reverse<(Timestamp, u64, Event)>>,
    sequence: u64,
    calls: Vec<Call>,
    free_slots: Vec<usize>,
    in_flight_slots: Vec<usize>,
    in_flight_times: Vec<Timestamp>,
    waiting: VecDeque<usize>,
    agents: Vec<Agent>,
    views: Vec<AgentView>,
    next_lead: u64,
    accounting: Accounting,
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() { s.clamp(0.0, 1e9) } else { 0.0 })
}

impl<'a> Engine<'a> {
    fn new(scenario: &'a ValidScenario, policy: Box<dyn PacingPolicy>, seed: u64) -> Self {
        let s = &scenario.scenario;
        let end = Timestamp::ZERO + secs(s.shift_hours * 3600.0);
        let agents = (0..s.agents)
            .map(|_| Agent {
                state: AgentState::LoggedOut,
                since: Timestamp::ZERO,
                break_due: false,
                pending_wrap: Duration::ZERO,
            })
            .collect();
        let mut engine = Self {
            scenario,
            rules: &scenario.rules,
            policy,
            seed,
            now: Timestamp::ZERO,
            end,
            heap: BinaryHeap::new(),
            sequence: 0,
            calls: Vec::new(),
            free_slots: Vec::new(),
            in_flight_slots: Vec::new(),
            in_flight_times: Vec::new(),
            waiting: VecDeque::new(),
            agents,
            views: Vec::new(),
            next_lead: 0,
            accounting: Accounting::new(end, s.agents as usize),
        };
        engine.schedule_shift();
        engine.push(Timestamp::ZERO, Event::Decide);
        engine
    }

    fn push(&mut self, at: Timestamp, event: Event) {
        self.sequence += 1;
        self.heap.push(Reverse((at, self.sequence, event)));
    }

    /// Logins and breaks for the scenario's shape.
    fn schedule_shift(&mut self) {
        let s = &self.scenario.scenario;
        let n = self.agents.len();
        let shift_secs = s.shift_hours * 3600.0;
        for i in 0..n {
            // Agents are spread evenly over [0, 1) by index, for staggering.
            let position = i as f64 / n.max(1) as f64;
            match &s.shape {
                Shape::Stationary | Shape::AnswerHalving { .. } => {
                    self.push(Timestamp::ZERO, Event::Login(i))
                }
                Shape::RollingBreaks {
                    breaks_per_agent,
                    break_minutes,
                    login_spread_minutes,
                    stagger_minutes,
                } => {
                    let login = secs(position * login_spread_minutes * 60.0);
                    self.push(Timestamp::ZERO + login, Event::Login(i));
                    let breaks = f64::from(*breaks_per_agent);
                    for k in 0..*breaks_per_agent {
                        let centre = shift_secs * (f64::from(k) + 1.0) / (breaks + 1.0);
                        let at = centre + (position - 0.5) * stagger_minutes * 60.0;
                        let length = (break_minutes * 60.0 * 1000.0) as i64;
                        self.push(Timestamp::ZERO + secs(at), Event::BreakStart(i));
                        self.push(Timestamp::ZERO + secs(at), Event::BreakEnd(i, length));
                    }
                }
                Shape::LunchStep {
                    share,
                    start_hour,
                    minutes,
                } => {
                    self.push(Timestamp::ZERO, Event::Login(i));
                    if position < *share {
                        let length = (minutes * 60.0 * 1000.0) as i64;
                        let at = Timestamp::ZERO + secs(start_hour * 3600.0);
                        self.push(at, Event::BreakStart(i));
                        self.push(at, Event::BreakEnd(i, length));
                    }
                }
            }
        }
    }

    fn live_answer_at(&self, at: Timestamp) -> f64 {
        let leads = &self.scenario.scenario.leads;
        match self.scenario.scenario.shape {
            Shape::AnswerHalving { at_hour, factor } if at.as_millis() as f64 >= at_hour * 3_600_000.0 => {
                leads.live_answer * factor
            }
            _ => leads.live_answer,
        }
    }

    fn run(&mut self) {
        while let Some(Reverse((at, _, event))) = self.heap.pop() {
            self.now = at;
            match event {
                Event::Decide => {
                    if at < self.end {
                        self.decide();
                        let period = Duration::from_millis(self.scenario.scenario.decision_every_ms);
                        self.push(at + period, Event::Decide);
                    }
                }
                Event::Resolve(slot) => self.resolve(slot),
                Event::GiveUp(slot, lead) => self.give_up(slot, lead),
                Event::TalkEnd(agent) => self.talk_end(agent),
                Event::WrapEnd(agent) => self.wrap_end(agent),
                Event::Login(agent) => {
                    self.set_state(agent, AgentState::Ready);
                    self.agent_ready(agent);
                }
                Event::BreakStart(agent) => self.break_start(agent),
                Event::BreakEnd(agent, length_ms) => {
                    // Scheduled relative to the break's planned start; a break taken late ends late.
                    self.break_end(agent, length_ms);
                }
            }
        }
        for i in 0..self.agents.len() {
            self.set_state(i, AgentState::LoggedOut);
        }
    }

    fn set_state(&mut self, agent: usize, state: AgentState) {
        let now = self.now;
        if let Some(a) = self.agents.get_mut(agent) {
            self.accounting.agent_time(a.state, a.since, now);
            a.state = state;
            a.since = now;
        }
    }

    fn decide(&mut self) {
        if self.now >= self.end {
            return;
        }
        self.views.clear();
        for a in &self.agents {
            let activity = match a.state {
                AgentState::Ready => AgentActivity::Ready,
                AgentState::OnCall => AgentActivity::OnCall,
                AgentState::WrapUp => AgentActivity::WrapUp,
                AgentState::LoggedOut | AgentState::Break => continue,
            };
            self.views.push(AgentView {
                activity,
                since: a.since,
            });
        }
        let snapshot = PacingSnapshot {
            now: self.now,
            agents: &self.views,
            dials_in_flight: &self.in_flight_times,
            calls_waiting: u32::try_from(self.waiting.len()).unwrap_or(u32::MAX),
        };
        let dials = self.policy.dials_to_place(&snapshot);
        // A hard stop against a runaway policy: never more than 50 lines per agent.
        let limit = (self.views.len() * 50).saturating_sub(self.in_flight_times.len());
        for _ in 0..(dials as usize).min(limit) {
            self.dial();
        }
    }

    fn dial(&mut self) {
        let s = &self.scenario.scenario;
        let lead = self.next_lead;
        self.next_lead += 1;
        let live = self.live_answer_at(self.now);
        let ring = self.rules.ring_time;
        let (truth, d) = LeadDraws::draw(self.seed, lead, s, live, ring);
        let answer_at = self.now + secs(d.answer_secs);
        let greeting_end = answer_at + secs(d.greeting_secs);
        let (verdict, resolves_at) = match truth {
            Truth::Person => {
                let v = if d.amd_error < s.amd.false_positive {
                    DialResult::Machine
                } else {
                    DialResult::Human
                };
                (v, greeting_end + secs(d.amd_secs))
            }
            Truth::Machine => {
                let v = if d.amd_error < s.amd.false_negative {
                    DialResult::Human
                } else {
                    DialResult::Machine
                };
                (v, greeting_end + secs(d.amd_secs))
            }
            Truth::Busy => (DialResult::Busy, self.now + secs(s.leads.busy_time_s)),
            Truth::NoAnswer => (DialResult::NoAnswer, self.now + ring),
        };
        let deadline = self.rules.connect_deadline(greeting_end);
        let give_up_at = match truth {
            Truth::Person => deadline.min(greeting_end + secs(d.patience_secs)),
            _ => deadline,
        };
        let (talk, wrap) = match truth {
            Truth::Machine => (secs(s.amd.machine_talk_s), secs(d.wrap_secs * 0.25)),
            _ => (secs(d.talk_secs), secs(d.wrap_secs)),
        };
        let call = Call {
            lead,
            dialed_at: self.now,
            truth,
            verdict,
            greeting_end,
            give_up_at,
            talk,
            wrap,
            stage: CallStage::InFlight,
            flight_index: self.in_flight_slots.len(),
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                if let Some(c) = self.calls.get_mut(slot) {
                    *c = call;
                }
                slot
            }
            None => {
                self.calls.push(call);
                self.calls.len() - 1
            }
        };
        self.in_flight_slots.push(slot);
        self.in_flight_times.push(self.now);
        self.accounting.dial(self.now);
        self.push(resolves_at, Event::Resolve(slot));
    }

    fn finish_call(&mut self, slot: usize) {
        if let Some(c) = self.calls.get_mut(slot) {
            c.stage = CallStage::Done;
        }
        self.free_slots.push(slot);
    }

    fn resolve(&mut self, slot: usize) {
        let Some(call) = self.calls.get(slot).cloned() else {
            return;
        };
        // Out of the in-flight list (swap-remove, fixing the moved call's index).
        let index = call.flight_index;
        if index < self.in_flight_slots.len() {
            self.in_flight_slots.swap_remove(index);
            self.in_flight_times.swap_remove(index);
            if let Some(&moved) = self.in_flight_slots.get(index)
                && let Some(m) = self.calls.get_mut(moved)
            {
                m.flight_index = index;
            }
        }
        let event = PacingEvent::DialResolved {
            dialed_at: call.dialed_at,
            at: self.now,
            result: call.verdict,
        };
        self.policy.observe(&event);
        self.accounting
            .resolved(self.now, call.verdict, call.truth == Truth::Person);
        if call.verdict != DialResult::Human {
            self.finish_call(slot);
            return;
        }
        if self.now >= call.give_up_at {
            // The caller hung up while the analyser was still listening.
            self.abandon(slot);
            return;
        }
        if let Some(agent) = self.longest_ready_agent() {
            self.connect(slot, agent);
        } else {
            if let Some(c) = self.calls.get_mut(slot) {
                c.stage = CallStage::Waiting;
            }
            self.waiting.push_back(slot);
            self.push(call.give_up_at, Event::GiveUp(slot, call.lead));
        }
    }

    fn give_up(&mut self, slot: usize, lead: u64) {
        if self
            .calls
            .get(slot)
            .is_some_and(|c| c.lead == lead && c.stage == CallStage::Waiting)
        {
            self.waiting.retain(|&s| s != slot);
            self.abandon(slot);
        }
    }

    fn abandon(&mut self, slot: usize) {
        self.policy.observe(&PacingEvent::Abandoned { at: self.now });
        let person = self.calls.get(slot).is_some_and(|c| c.truth == Truth::Person);
        self.accounting.abandoned(self.now, person);
        self.finish_call(slot);
    }

    fn longest_ready_agent(&self) -> Option<usize> {
        self.agents
            .iter()
            .enumerate()
            .filter(|(_, a)| a.state == AgentState::Ready)
            .min_by_key(|(_, a)| a.since)
            .map(|(i, _)| i)
    }

    fn connect(&mut self, slot: usize, agent: usize) {
        let Some(call) = self.calls.get(slot).cloned() else {
            return;
        };
        let waited = self.now.since(call.greeting_end);
        self.policy
            .observe(&PacingEvent::Connected { at: self.now, waited });
        self.accounting.connected(self.now, waited);
        self.set_state(agent, AgentState::OnCall);
        if let Some(a) = self.agents.get_mut(agent) {
            a.pending_wrap = call.wrap;
        }
        self.push(self.now + call.talk, Event::TalkEnd(agent));
        self.finish_call(slot);
    }

    fn talk_end(&mut self, agent: usize) {
        let Some(a) = self.agents.get(agent) else { return };
        let talk = self.now.since(a.since);
        let wrap = a.pending_wrap;
        self.policy
            .observe(&PacingEvent::TalkEnded { at: self.now, talk });
        self.set_state(agent, AgentState::WrapUp);
        self.push(self.now + wrap, Event::WrapEnd(agent));
    }

    fn wrap_end(&mut self, agent: usize) {
        let Some(a) = self.agents.get(agent) else { return };
        let wrap = self.now.since(a.since);
        let break_due = a.break_due;
        self.policy
            .observe(&PacingEvent::WrapEnded { at: self.now, wrap });
        if break_due {
            self.set_state(agent, AgentState::Break);
        } else {
            self.set_state(agent, AgentState::Ready);
            self.agent_ready(agent);
        }
    }

    fn break_start(&mut self, agent: usize) {
        let Some(a) = self.agents.get_mut(agent) else {
            return;
        };
        match a.state {
            AgentState::Ready => self.set_state(agent, AgentState::Break),
            AgentState::OnCall | AgentState::WrapUp => a.break_due = true,
            AgentState::LoggedOut | AgentState::Break => {}
        }
    }

    fn break_end(&mut self, agent: usize, length_ms: i64) {
        let Some(a) = self.agents.get(agent) else { return };
        match a.state {
            AgentState::Break => {
                // The break lasts its full length from when it really began.
                let ends = a.since + Duration::from_millis(u64::try_from(length_ms).unwrap_or(0));
                if ends > self.now {
                    self.push(ends, Event::BreakEnd(agent, length_ms));
                    return;
                }
                if let Some(a) = self.agents.get_mut(agent) {
                    a.break_due = false;
                }
                self.set_state(agent, AgentState::Ready);
                self.agent_ready(agent);
            }
            // Still busy with the call that delayed the break: look again after it.
            AgentState::OnCall | AgentState::WrapUp => {
                if a.break_due {
                    self.push(
                        self.now + Duration::from_secs(5),
                        Event::BreakEnd(agent, length_ms),
                    );
                }
            }
            AgentState::Ready | AgentState::LoggedOut => {}
        }
    }

    /// An agent just became ready: give them the oldest waiting call, else let the policy dial.
    fn agent_ready(&mut self, agent: usize) {
        if let Some(slot) = self.waiting.pop_front() {
            self.connect(slot, agent);
        } else {
            self.decide();
        }
    }
}
