//! The router: a sans-IO state machine. The owner calls [`Acd::handle`] with the time and an [`Input`],
//! then drains [`Acd::poll_output`]; it calls [`Acd::handle`] with [`Input::Tick`] at
//! [`Acd::next_deadline`] so timers (offer timeouts, steps, wrap-up, max wait) fire.
//!
//! Matching is event-local. After every event, no available agent qualifies for any waiting call (except
//! where a rule says to wait: a preferred agent's window, a step not reached yet). So a new call only
//! needs the best agent for itself, and an agent who becomes available only needs the best call for
//! themselves. Both lookups use indexes kept per queue: waiting calls ordered by effective priority then
//! enqueue time, and available agents ordered by rank then the strategy's key, so no event scans all
//! agents or all calls.
//!
//! Priority aging is linear (one level per `priority_aging_secs`), so a call's effective priority is
//! `priority + (now − enqueued) / period`; multiplying by the period gives `priority·period − enqueued +
//! now`, whose order inside one queue does not depend on `now`. Across queues with different periods the
//! rationals are compared exactly by cross-multiplication.

use crate::agent::{AgentEvent, AgentState, IllegalTransition};
use crate::config::{
    AcdConfig, AgentConfig, ConfigError, OverflowTarget, Priority, QueueConfig, ReasonCode, RoutingStep,
    Strategy,
};
use crate::expr::{CompiledExpr, SkillExpr};
use crate::io::{
    CallRequest, CancelReason, Explanation, Input, Offer, OfferId, Output, OverflowReason, PreferredAgent,
    Rule, Score, Trigger,
};
use crate::kpi::{AgentCounters, AgentKpi, KpiSnapshot, QueueCounters, QueueKpi, estimated_wait_ms};
use crate::rng::SplitMix64;
use domain::{AgentId, CallId, QueueId, SkillId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

mod checks;
mod kpis;
mod wrap_up;

use checks::check_snapshot;

/// Times are kept within ±2^53 ms (285,000 years) of the epoch, so differences of two times never overflow.
const TIME_LIMIT_MS: i64 = 1 << 53;

/// Clamps a time from outside into the range the router works in.
fn sane(t: Timestamp) -> Timestamp {
    Timestamp::from_millis(t.as_millis().clamp(-TIME_LIMIT_MS, TIME_LIMIT_MS))
}

/// The aging period used when a queue does not age priorities: longer than any wait, so the priority
/// always dominates the time waited.
const NO_AGING_PERIOD_MS: i128 = 1 << 50;

/// Why the router refused an input. A refused input changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcdError {
    #[error("unknown call {0}")]
    UnknownCall(CallId),
    #[error("unknown agent {0}")]
    UnknownAgent(AgentId),
    #[error("unknown queue {0}")]
    UnknownQueue(QueueId),
    #[error("call {0} is already in the router")]
    DuplicateCall(CallId),
    #[error("queue {0} is full and has no overflow for full queues")]
    QueueFull(QueueId),
    #[error("call {call} is not being offered to agent {agent}")]
    NotOffered { call: CallId, agent: AgentId },
    #[error("call {0} is connected to an agent; end it rather than abandon it")]
    CallConnected(CallId),
    #[error("call {0} is not connected to an agent")]
    NotConnected(CallId),
    #[error("call {0} is not ringing an agent")]
    NotRinging(CallId),
    #[error("agent {agent}: {source}")]
    IllegalTransition {
        agent: AgentId,
        source: IllegalTransition,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A broken internal reference; never expected, reported rather than panicking.
    #[error("internal inconsistency: {0}")]
    Internal(&'static str),
}

/// Why a snapshot cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inconsistent router snapshot: {0}")]
pub struct RestoreError(String);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct QueueRt {
    config: QueueConfig,
    counters: QueueCounters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AgentRt {
    config: AgentConfig,
    state: AgentState,
    /// When the current state was entered (for an available agent: idle since).
    since: Timestamp,
    offer: Option<OfferId>,
    call: Option<CallId>,
    /// Queue of the last call, to which wrap-up time is counted.
    wrap_queue: Option<usize>,
    last_offer_turn: u64,
    /// Lifetime figures used by the fewest-calls and least-talk-time strategies (not reset with KPIs).
    lifetime_handled: u64,
    lifetime_talk_ms: u64,
    counters: AgentCounters,
    /// Key of the wrap-up timer while in wrap-up.
    wrap_timer: Option<TimerKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
enum CallStatus {
    Waiting,
    Offered { offer: OfferId },
    Connected { agent: usize, answered_at: Timestamp },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CallRt {
    id: CallId,
    queue: usize,
    priority: Priority,
    requirement: Option<SkillExpr>,
    preferred: Option<PreferredAgent>,
    /// Original enqueue time: orders the call and ages its priority.
    enqueued_at: Timestamp,
    /// When the call entered its current queue: steps, max wait and KPIs count from here.
    queue_entered_at: Timestamp,
    seq: u64,
    /// Bumped on every queue change, so timers of the previous queue are ignored.
    epoch: u32,
    status: CallStatus,
    /// Agents who let this call ring out or rejected it; not offered it again in this queue.
    declined: Vec<(usize, Timestamp)>,
    /// Queues the call overflowed from, to stop overflow loops.
    visited: Vec<usize>,
    /// Pending timers of the call in its current queue.
    timers: Vec<TimerKey>,
    /// The requirement compiled against the skill table.
    #[serde(skip)]
    compiled: Derived<CompiledExpr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct OfferRt {
    call: CallId,
    agents: Vec<usize>,
    expires_at: Timestamp,
    /// Key of the offer's timeout timer.
    timer: TimerKey,
}

/// A timer's place in the timer map: (due time in ms, sequence).
type TimerKey = (i64, u64);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "timer", rename_all = "snake_case")]
enum Timer {
    Step { call: CallId, epoch: u32 },
    MaxWait { call: CallId, epoch: u32 },
    PreferredExpired { call: CallId, epoch: u32 },
    Announce { call: CallId, epoch: u32 },
    DeclineExpired { call: CallId, epoch: u32 },
    OfferTimeout { offer: OfferId },
    WrapUpEnd { agent: usize, until: Timestamp },
}

/// Everything that must survive a restart. The indexes are rebuilt from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct State {
    now: Timestamp,
    interval_start: Timestamp,
    queues: Vec<QueueRt>,
    agents: Vec<AgentRt>,
    calls: HashMap<CallId, CallRt>,
    offers: BTreeMap<OfferId, OfferRt>,
    #[serde(with = "timer_list")]
    timers: BTreeMap<(i64, u64), Timer>,
    next_call_seq: u64,
    next_offer: OfferId,
    next_timer: u64,
    offer_turn: u64,
    /// The configured seed, kept to report the configuration back.
    #[serde(default)]
    random_seed: u64,
    rng: SplitMix64,
    outputs: VecDeque<Output>,
}

mod timer_list {
    //! Timers keyed by (time, sequence) serialise as a list, since JSON map keys must be strings.
    use super::Timer;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(timers: &BTreeMap<(i64, u64), Timer>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(timers.iter().map(|(&(at, seq), t)| (at, seq, t)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<(i64, u64), Timer>, D::Error> {
        let list: Vec<(i64, u64, Timer)> = Vec::deserialize(d)?;
        Ok(list.into_iter().map(|(at, seq, t)| ((at, seq), t)).collect())
    }
}

/// A call the router holds, as [`Acd::calls`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCall {
    pub call: CallId,
    pub queue: QueueId,
    pub phase: CallPhase,
    /// When the caller first joined a queue (kept across callbacks and transfers).
    pub enqueued_at: Timestamp,
}

/// Where a held call is: waiting, ringing agents, or connected to one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallPhase {
    Waiting,
    /// Offered to these agents.
    Ringing(Vec<AgentId>),
    Connected(AgentId),
}

/// The router's whole state, to persist in a shared store and [`Acd::restore`] after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcdSnapshot(State);

/// Order of waiting calls in a queue: highest effective priority, then longest waiting, then arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct WaitKey {
    neg_aged_priority: i128,
    enqueued_at: i64,
    seq: u64,
}

/// Order of available agents in a queue: lowest rank, then the strategy's key, then configuration order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct AvailKey {
    rank: u8,
    key: i64,
    agent: usize,
}

#[derive(Debug, Clone, Default)]
struct QueueIndex {
    waiting: BTreeMap<WaitKey, CallId>,
    available: BTreeSet<AvailKey>,
    members: Vec<usize>,
    logged_in: u32,
    period_ms: i128,
}

#[derive(Debug, Clone, Default)]
struct AgentIndex {
    memberships: Vec<(usize, u8)>,
    indexed: Vec<(usize, AvailKey)>,
    /// Proficiency by interned skill number.
    levels: Vec<u8>,
}

/// Lookups derived from [`State`]; never persisted.
#[derive(Debug, Clone, Default)]
struct Index {
    agent_by_id: HashMap<AgentId, usize>,
    queue_by_id: HashMap<QueueId, usize>,
    queues: Vec<QueueIndex>,
    agents: Vec<AgentIndex>,
    /// Waiting calls by the agent they prefer.
    preferred_waiting: HashMap<usize, Vec<CallId>>,
    /// Skill numbers for [`CompiledExpr`] and [`AgentIndex::levels`].
    skills: HashMap<SkillId, usize>,
}

fn intern(skills: &mut HashMap<SkillId, usize>, skill: &SkillId) -> usize {
    let next = skills.len();
    *skills.entry(skill.clone()).or_insert(next)
}

/// Data derived from persisted fields, rebuilt on restore. It never takes part in equality, so a
/// restored state equals the original whatever numbering the rebuild chose.
#[derive(Debug, Clone)]
struct Derived<T>(Option<T>);

impl<T> Default for Derived<T> {
    fn default() -> Self {
        Derived(None)
    }
}

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> Eq for Derived<T> {}

/// A waiting call that qualifies for an agent, with what is needed to compare it to others.
struct Candidate {
    call: CallId,
    queue: usize,
    aged_priority: i128,
    period: i128,
    enqueued_at: i64,
    seq: u64,
    preferred: bool,
}

impl Candidate {
    fn beats(&self, other: &Candidate) -> bool {
        let mine = self.aged_priority * other.period;
        let theirs = other.aged_priority * self.period;
        if mine != theirs {
            return mine > theirs;
        }
        (self.enqueued_at, self.seq) < (other.enqueued_at, other.seq)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn secs(s: u32) -> Duration {
    Duration::from_secs(u64::from(s))
}

/// The automatic call distributor. See the crate documentation for the protocol.
#[derive(Debug, Clone)]
pub struct Acd {
    state: State,
    index: Index,
}

impl Acd {
    /// A router for `config`, with every agent logged out and no calls.
    pub fn new(config: AcdConfig) -> Result<Self, ConfigError> {
        config.check()?;
        let state = State {
            now: Timestamp::ZERO,
            interval_start: Timestamp::ZERO,
            queues: config
                .queues
                .into_iter()
                .map(|config| QueueRt {
                    config,
                    counters: QueueCounters::default(),
                })
                .collect(),
            agents: config.agents.into_iter().map(new_agent).collect(),
            calls: HashMap::new(),
            offers: BTreeMap::new(),
            timers: BTreeMap::new(),
            next_call_seq: 0,
            next_offer: 1,
            next_timer: 0,
            offer_turn: 0,
            random_seed: config.random_seed,
            rng: SplitMix64::new(config.random_seed),
            outputs: VecDeque::new(),
        };
        let mut acd = Acd {
            state,
            index: Index::default(),
        };
        acd.rebuild_index();
        Ok(acd)
    }

    /// The whole state, for persistence. Pending outputs are included: poll them before snapshotting if
    /// they were already acted on.
    pub fn snapshot(&self) -> AcdSnapshot {
        AcdSnapshot(self.state.clone())
    }

    /// A router continuing exactly where the snapshot was taken.
    pub fn restore(snapshot: AcdSnapshot) -> Result<Self, RestoreError> {
        let state = snapshot.0;
        check_snapshot(&state)?;
        let mut acd = Acd {
            state,
            index: Index::default(),
        };
        acd.rebuild_index();
        Ok(acd)
    }

    /// The next output, oldest first.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.state.outputs.pop_front()
    }

    /// Every pending output, oldest first.
    pub fn drain_outputs(&mut self) -> impl Iterator<Item = Output> + '_ {
        self.state.outputs.drain(..)
    }

    /// When the earliest timer is due; the owner should call `handle(t, Input::Tick)` then.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        self.state
            .timers
            .keys()
            .next()
            .map(|&(at, _)| Timestamp::from_millis(at))
    }

    /// The latest time the router has seen.
    pub fn now(&self) -> Timestamp {
        self.state.now
    }

    /// The current configuration, as it would be written back to TOML.
    pub fn config(&self) -> AcdConfig {
        AcdConfig {
            queues: self.state.queues.iter().map(|q| q.config.clone()).collect(),
            agents: self.state.agents.iter().map(|a| a.config.clone()).collect(),
            random_seed: self.state.random_seed,
        }
    }

    /// An agent's state and when it was entered.
    pub fn agent_state(&self, agent: &AgentId) -> Option<(&AgentState, Timestamp)> {
        let a = self.state.agents.get(*self.index.agent_by_id.get(agent)?)?;
        Some((&a.state, a.since))
    }

    /// A waiting call's position in its queue (1 = next), none if it is not waiting.
    pub fn call_position(&self, call: &CallId) -> Option<u32> {
        let c = self.state.calls.get(call)?;
        if c.status != CallStatus::Waiting {
            return None;
        }
        let key = self.wait_key(c);
        let qi = self.index.queues.get(c.queue)?;
        Some(
            u32::try_from(qi.waiting.range(..key).count())
                .unwrap_or(u32::MAX)
                .saturating_add(1),
        )
    }

    /// Every call the router holds, with its queue and phase, in no particular order. After a restore
    /// the owner checks each against the calls it still has (a restarted process has lost its own).
    pub fn calls(&self) -> Vec<HeldCall> {
        self.state.calls.values().filter_map(|c| self.held(c)).collect()
    }

    /// One call the router holds, with its queue and phase; none once it has left (answered and
    /// ended, abandoned, overflowed out of the router).
    pub fn call(&self, call: &CallId) -> Option<HeldCall> {
        self.held(self.state.calls.get(call)?)
    }

    fn held(&self, c: &CallRt) -> Option<HeldCall> {
        let queue = self.state.queues.get(c.queue)?.config.id.clone();
        let phase = match &c.status {
            CallStatus::Waiting => CallPhase::Waiting,
            CallStatus::Offered { offer } => CallPhase::Ringing(
                self.state
                    .offers
                    .get(offer)
                    .map(|o| {
                        o.agents
                            .iter()
                            .filter_map(|&a| Some(self.state.agents.get(a)?.config.id.clone()))
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            CallStatus::Connected { agent, .. } => {
                CallPhase::Connected(self.state.agents.get(*agent)?.config.id.clone())
            }
        };
        Some(HeldCall {
            call: c.id.clone(),
            queue,
            phase,
            enqueued_at: c.enqueued_at,
        })
    }

    /// Number of calls the router holds (waiting, ringing or connected).
    pub fn call_count(&self) -> usize {
        self.state.calls.len()
    }

    /// Handles one input at `now`. Timers due at or before `now` fire first, each at its own time. Time
    /// never goes backwards: an earlier `now` is taken as the latest time seen. A refused input changes
    /// nothing (timers that were due have still fired).
    pub fn handle(&mut self, now: Timestamp, input: Input) -> Result<(), AcdError> {
        let now = sane(now).max(self.state.now);
        self.fire_timers(now);
        self.state.now = now;
        match input {
            Input::CallEnqueued(req) => self.enqueue(now, req),
            Input::CallAbandoned { call } => self.abandon(now, &call),
            Input::AgentLogin { agent } => {
                let a = self.agent_ix(&agent)?;
                self.transition(now, a, AgentEvent::Login)?;
                self.route_agent(now, a, Trigger::AgentAvailable);
                Ok(())
            }
            Input::AgentLogout { agent } => self.logout(now, &agent),
            Input::AgentReady { agent } => {
                let a = self.agent_ix(&agent)?;
                self.transition(now, a, AgentEvent::Ready)?;
                self.route_agent(now, a, Trigger::AgentAvailable);
                Ok(())
            }
            Input::AgentNotReady { agent, reason } => {
                let a = self.agent_ix(&agent)?;
                self.transition(now, a, AgentEvent::NotReady(reason))
            }
            Input::OfferAccepted { call, agent } => self.accept(now, &call, &agent),
            Input::OfferRejected { call, agent } => self.reject(now, &call, &agent),
            Input::OfferWithdrawn { call } => self.withdraw(now, &call),
            Input::CallEnded { call } => self.end_call(now, &call),
            Input::WrapUpDone { agent } => {
                let a = self.agent_ix(&agent)?;
                if !matches!(
                    self.state.agents.get(a).map(|x| &x.state),
                    Some(AgentState::WrapUp { .. })
                ) {
                    let from = self
                        .state
                        .agents
                        .get(a)
                        .map_or(AgentState::LoggedOut, |x| x.state.clone());
                    return Err(AcdError::IllegalTransition {
                        agent,
                        source: IllegalTransition {
                            from: from.kind(),
                            event: "wrap_up_done",
                            why: "the agent is not in wrap-up",
                        },
                    });
                }
                self.transition(now, a, AgentEvent::Ready)?;
                self.route_agent(now, a, Trigger::AgentAvailable);
                Ok(())
            }
            Input::ExtendWrapUp { agent, secs } => self.extend_wrap_up(&agent, secs),
            Input::Tick => Ok(()),
            Input::UpsertQueue(config) => self.upsert_queue(now, config),
            Input::UpsertAgent(config) => self.upsert_agent(now, config),
            Input::ResetKpis => {
                self.reset_kpis(now);
                Ok(())
            }
        }
    }

    // ----- inputs -----

    fn enqueue(&mut self, now: Timestamp, req: CallRequest) -> Result<(), AcdError> {
        if self.state.calls.contains_key(&req.call) {
            return Err(AcdError::DuplicateCall(req.call));
        }
        let q = *self
            .index
            .queue_by_id
            .get(&req.queue)
            .ok_or_else(|| AcdError::UnknownQueue(req.queue.clone()))?;
        if self.is_full(q) && !self.overflow_config(q).is_some_and(|o| o.when_full) {
            return Err(AcdError::QueueFull(req.queue));
        }
        let seq = self.state.next_call_seq;
        self.state.next_call_seq = self.state.next_call_seq.wrapping_add(1);
        let call = CallRt {
            id: req.call.clone(),
            queue: q,
            priority: req.priority,
            requirement: req.requirement,
            preferred: req.preferred,
            enqueued_at: req.original_enqueued_at.map_or(now, |t| sane(t).min(now)),
            queue_entered_at: now,
            seq,
            epoch: 0,
            status: CallStatus::Waiting,
            declined: Vec::new(),
            visited: Vec::new(),
            timers: Vec::new(),
            compiled: Derived::default(),
        };
        self.state.calls.insert(req.call.clone(), call);
        self.compile_requirement(&req.call);
        self.admit(now, &req.call, Trigger::CallArrived);
        Ok(())
    }

    fn abandon(&mut self, now: Timestamp, call_id: &CallId) -> Result<(), AcdError> {
        let call = self
            .state
            .calls
            .get(call_id)
            .ok_or_else(|| AcdError::UnknownCall(call_id.clone()))?;
        let mut freed = Vec::new();
        let position = match call.status.clone() {
            CallStatus::Connected { .. } => return Err(AcdError::CallConnected(call_id.clone())),
            CallStatus::Waiting => {
                let position = self.call_position(call_id).unwrap_or(1);
                self.unlist_waiting(call_id);
                position
            }
            CallStatus::Offered { offer } => {
                // Position 0: the call was ringing an agent.
                if let Some(o) = self.drop_offer(offer) {
                    for a in o.agents {
                        self.cancel_for_agent(now, offer, call_id, a, CancelReason::CallerAbandoned);
                        freed.push(a);
                    }
                }
                0
            }
        };
        self.clear_call_timers(call_id);
        let Some(call) = self.state.calls.remove(call_id) else {
            return Ok(());
        };
        let waited = now.since(call.queue_entered_at);
        if let Some(q) = self.state.queues.get_mut(call.queue) {
            let within = waited <= secs(q.config.service_level.within_secs);
            let c = &mut q.counters;
            c.abandoned = c.abandoned.saturating_add(1);
            c.abandoned_within = c.abandoned_within.saturating_add(u64::from(within));
            c.removed_within = c.removed_within.saturating_add(u64::from(within));
            c.abandoned_short = c
                .abandoned_short
                .saturating_add(u64::from(waited <= secs(q.config.short_abandon_secs)));
            self.state.outputs.push_back(Output::Abandoned {
                call: call.id.clone(),
                queue: q.config.id.clone(),
                position,
                waited_ms: ms(waited),
            });
        }
        for a in freed {
            self.route_agent(now, a, Trigger::AgentAvailable);
        }
        Ok(())
    }

    fn logout(&mut self, now: Timestamp, agent: &AgentId) -> Result<(), AcdError> {
        let a = self.agent_ix(agent)?;
        self.check_transition(a, &AgentEvent::Logout)?;
        let mut returned = None;
        if let Some(offer) = self.state.agents.get(a).and_then(|x| x.offer)
            && let Some(o) = self.state.offers.get_mut(&offer)
        {
            o.agents.retain(|x| *x != a);
            let call = o.call.clone();
            let empty = o.agents.is_empty();
            self.cancel_for_agent(now, offer, &call, a, CancelReason::AgentLoggedOut);
            if empty {
                self.drop_offer(offer);
                returned = Some(call);
            }
        }
        self.transition(now, a, AgentEvent::Logout)?;
        if let Some(call) = returned {
            self.return_call(now, &call);
        }
        // Calls that were waiting for this agent in particular go to the team now.
        let preferring = self.index.preferred_waiting.get(&a).cloned().unwrap_or_default();
        for call in preferring {
            self.route_call(now, &call, Trigger::PreferredUnavailable);
        }
        let memberships = self
            .index
            .agents
            .get(a)
            .map(|x| x.memberships.clone())
            .unwrap_or_default();
        for (q, _) in memberships {
            let nobody = self.index.queues.get(q).is_some_and(|qi| qi.logged_in == 0);
            if nobody && self.overflow_config(q).is_some_and(|o| o.when_no_agents) {
                let waiting: Vec<CallId> = self
                    .index
                    .queues
                    .get(q)
                    .map(|qi| qi.waiting.values().cloned().collect())
                    .unwrap_or_default();
                for call in waiting {
                    self.overflow(now, &call, OverflowReason::NoAgents);
                }
            }
        }
        Ok(())
    }

    fn offered_to(&self, call_id: &CallId, agent: &AgentId) -> Result<(OfferId, usize), AcdError> {
        let call = self
            .state
            .calls
            .get(call_id)
            .ok_or_else(|| AcdError::UnknownCall(call_id.clone()))?;
        let a = self.agent_ix(agent)?;
        let not_offered = || AcdError::NotOffered {
            call: call_id.clone(),
            agent: agent.clone(),
        };
        let CallStatus::Offered { offer } = call.status else {
            return Err(not_offered());
        };
        let o = self.state.offers.get(&offer).ok_or_else(not_offered)?;
        if o.agents.contains(&a) {
            Ok((offer, a))
        } else {
            Err(not_offered())
        }
    }

    fn accept(&mut self, now: Timestamp, call_id: &CallId, agent: &AgentId) -> Result<(), AcdError> {
        let (offer, a) = self.offered_to(call_id, agent)?;
        self.transition(now, a, AgentEvent::Accept)?;
        let others: Vec<usize> = self
            .drop_offer(offer)
            .map(|o| o.agents.into_iter().filter(|x| *x != a).collect())
            .unwrap_or_default();
        if let Some(ag) = self.state.agents.get_mut(a) {
            ag.offer = None;
            ag.call = Some(call_id.clone());
        }
        for &o in &others {
            self.cancel_for_agent(now, offer, call_id, o, CancelReason::AnsweredElsewhere);
        }
        self.clear_call_timers(call_id);
        if let Some(call) = self.state.calls.get_mut(call_id) {
            call.status = CallStatus::Connected {
                agent: a,
                answered_at: now,
            };
            let waited = now.since(call.queue_entered_at);
            if let Some(q) = self.state.queues.get_mut(call.queue) {
                let within = waited <= secs(q.config.service_level.within_secs);
                let c = &mut q.counters;
                c.answered = c.answered.saturating_add(1);
                c.answered_within = c.answered_within.saturating_add(u64::from(within));
                c.removed_within = c.removed_within.saturating_add(u64::from(within));
                c.answer_wait_ms = c.answer_wait_ms.saturating_add(ms(waited));
                self.state.outputs.push_back(Output::Answered {
                    call: call_id.clone(),
                    queue: q.config.id.clone(),
                    agent: agent.clone(),
                    waited_ms: ms(waited),
                });
            }
        }
        for o in others {
            self.route_agent(now, o, Trigger::AgentAvailable);
        }
        Ok(())
    }

    fn reject(&mut self, now: Timestamp, call_id: &CallId, agent: &AgentId) -> Result<(), AcdError> {
        let (offer, a) = self.offered_to(call_id, agent)?;
        let not_ready = self
            .state
            .calls
            .get(call_id)
            .and_then(|c| self.state.queues.get(c.queue))
            .is_some_and(|q| q.config.reject_sets_not_ready);
        let event = if not_ready {
            AgentEvent::OfferFailed(ReasonCode::rejected())
        } else {
            AgentEvent::OfferWithdrawn
        };
        self.check_transition(a, &event)?;
        let mut empty = false;
        if let Some(o) = self.state.offers.get_mut(&offer) {
            o.agents.retain(|x| *x != a);
            empty = o.agents.is_empty();
        }
        self.decline(now, call_id, a);
        if let Some(ag) = self.state.agents.get_mut(a) {
            ag.offer = None;
        }
        self.state.outputs.push_back(Output::OfferCancelled {
            offer,
            call: call_id.clone(),
            agent: agent.clone(),
            reason: CancelReason::Rejected,
        });
        self.transition(now, a, event)?;
        if empty {
            self.drop_offer(offer);
            self.return_call(now, call_id);
        }
        self.route_agent(now, a, Trigger::AgentAvailable);
        Ok(())
    }

    fn withdraw(&mut self, now: Timestamp, call_id: &CallId) -> Result<(), AcdError> {
        let call = self
            .state
            .calls
            .get(call_id)
            .ok_or_else(|| AcdError::UnknownCall(call_id.clone()))?;
        let CallStatus::Offered { offer } = call.status else {
            return Err(AcdError::NotRinging(call_id.clone()));
        };
        let agents = self.drop_offer(offer).map(|o| o.agents).unwrap_or_default();
        for &a in &agents {
            self.cancel_for_agent(now, offer, call_id, a, CancelReason::Withdrawn);
        }
        self.return_call(now, call_id);
        for a in agents {
            self.route_agent(now, a, Trigger::AgentAvailable);
        }
        Ok(())
    }

    fn end_call(&mut self, now: Timestamp, call_id: &CallId) -> Result<(), AcdError> {
        let call = self
            .state
            .calls
            .get(call_id)
            .ok_or_else(|| AcdError::UnknownCall(call_id.clone()))?;
        let CallStatus::Connected {
            agent: a,
            answered_at,
        } = call.status
        else {
            return Err(AcdError::NotConnected(call_id.clone()));
        };
        let q = call.queue;
        let wrap = self.state.queues.get(q).map_or(0, |x| x.config.wrap_up_secs);
        let wrap_up_until = (wrap > 0).then(|| now + secs(wrap));
        let event = AgentEvent::CallEnded { wrap_up_until };
        self.check_transition(a, &event)?;
        self.state.calls.remove(call_id);
        let talk = ms(now.since(answered_at));
        // Update the lifetime figures first: indexing on the way back to Available reads them.
        if let Some(ag) = self.state.agents.get_mut(a) {
            ag.call = None;
            ag.wrap_queue = Some(q);
            ag.lifetime_handled = ag.lifetime_handled.saturating_add(1);
            ag.lifetime_talk_ms = ag.lifetime_talk_ms.saturating_add(talk);
            ag.counters.handled = ag.counters.handled.saturating_add(1);
            ag.counters.talk_ms = ag.counters.talk_ms.saturating_add(talk);
        }
        if let Some(queue) = self.state.queues.get_mut(q) {
            queue.counters.handled = queue.counters.handled.saturating_add(1);
            queue.counters.talk_ms = queue.counters.talk_ms.saturating_add(talk);
        }
        self.transition(now, a, event)?;
        self.route_agent(now, a, Trigger::AgentAvailable);
        Ok(())
    }

    fn upsert_queue(&mut self, now: Timestamp, config: QueueConfig) -> Result<(), AcdError> {
        config.check()?;
        if let Some(OverflowTarget::Queue { queue }) = config.overflow.as_ref().map(|o| &o.target)
            && !self.index.queue_by_id.contains_key(queue)
        {
            return Err(ConfigError::UnknownQueue {
                queue: queue.clone(),
                referenced_by: config.id.to_string(),
            }
            .into());
        }
        let Some(&q) = self.index.queue_by_id.get(&config.id) else {
            self.state.queues.push(QueueRt {
                config,
                counters: QueueCounters::default(),
            });
            self.rebuild_index();
            return Ok(());
        };
        if let Some(rt) = self.state.queues.get_mut(q) {
            rt.config = config;
        }
        // Aging period and strategy may have changed: rebuild this queue's orderings.
        let members = self
            .index
            .queues
            .get(q)
            .map(|qi| qi.members.clone())
            .unwrap_or_default();
        for a in members {
            if self
                .state
                .agents
                .get(a)
                .is_some_and(|x| x.state == AgentState::Available)
            {
                self.unindex_agent(a);
                self.index_agent(a);
            }
        }
        let period = self
            .state
            .queues
            .get(q)
            .map_or(NO_AGING_PERIOD_MS, |rt| aging_period(&rt.config));
        let waiting: Vec<CallId> = match self.index.queues.get_mut(q) {
            Some(qi) => {
                qi.period_ms = period;
                let ids: Vec<CallId> = qi.waiting.values().cloned().collect();
                qi.waiting.clear();
                ids
            }
            None => Vec::new(),
        };
        for id in &waiting {
            if let Some(call) = self.state.calls.get(id) {
                let key = self.wait_key(call);
                if let Some(qi) = self.index.queues.get_mut(q) {
                    qi.waiting.insert(key, id.clone());
                }
            }
        }
        for id in &waiting {
            self.schedule_next_step(now, id);
            self.route_call(now, id, Trigger::Reconfigured);
        }
        Ok(())
    }

    fn upsert_agent(&mut self, now: Timestamp, config: AgentConfig) -> Result<(), AcdError> {
        config.check(|q| self.index.queue_by_id.contains_key(q))?;
        let Some(&a) = self.index.agent_by_id.get(&config.id) else {
            self.state.agents.push(new_agent(config));
            self.rebuild_index();
            return Ok(());
        };
        let (available, logged_in) = match self.state.agents.get(a) {
            Some(x) => (x.state == AgentState::Available, x.state.is_logged_in()),
            None => return Ok(()),
        };
        if available {
            self.unindex_agent(a);
        }
        let old = self
            .index
            .agents
            .get(a)
            .map(|x| x.memberships.clone())
            .unwrap_or_default();
        for (q, _) in old {
            if let Some(qi) = self.index.queues.get_mut(q) {
                qi.members.retain(|m| *m != a);
                if logged_in {
                    qi.logged_in = qi.logged_in.saturating_sub(1);
                }
            }
        }
        if let Some(x) = self.state.agents.get_mut(a) {
            x.config = config;
        }
        self.link_agent(a);
        if logged_in {
            self.count_logged_in(a, true);
        }
        if available {
            self.index_agent(a);
            self.route_agent(now, a, Trigger::Reconfigured);
        }
        Ok(())
    }

    fn reset_kpis(&mut self, now: Timestamp) {
        // Close the running state periods so time before the reset is not counted after it.
        for ag in &mut self.state.agents {
            ag.counters = AgentCounters::default();
        }
        for q in &mut self.state.queues {
            q.counters = QueueCounters::default();
        }
        self.state.interval_start = now;
    }

    // ----- timers -----

    fn schedule(&mut self, at: Timestamp, timer: Timer) -> TimerKey {
        let key = (at.as_millis(), self.state.next_timer);
        self.state.next_timer = self.state.next_timer.wrapping_add(1);
        self.state.timers.insert(key, timer);
        key
    }

    /// Schedules a timer belonging to a call, remembered so it can be dropped when the call leaves.
    fn schedule_for_call(&mut self, call_id: &CallId, at: Timestamp, timer: Timer) {
        let key = self.schedule(at, timer);
        if let Some(call) = self.state.calls.get_mut(call_id) {
            call.timers.push(key);
        }
    }

    /// Drops the pending timers of a call that left its queue (answered, abandoned, overflowed).
    fn clear_call_timers(&mut self, call_id: &CallId) {
        let Some(call) = self.state.calls.get_mut(call_id) else {
            return;
        };
        for key in call.timers.drain(..) {
            self.state.timers.remove(&key);
        }
    }

    /// Removes an offer and its timeout.
    fn drop_offer(&mut self, offer: OfferId) -> Option<OfferRt> {
        let o = self.state.offers.remove(&offer)?;
        self.state.timers.remove(&o.timer);
        Some(o)
    }

    fn fire_timers(&mut self, now: Timestamp) {
        while let Some(entry) = self.state.timers.first_entry() {
            let at = entry.key().0;
            if at > now.as_millis() {
                break;
            }
            let key = *entry.key();
            let timer = entry.remove();
            if let Timer::Step { call, .. }
            | Timer::MaxWait { call, .. }
            | Timer::PreferredExpired { call, .. }
            | Timer::Announce { call, .. } = &timer
                && let Some(c) = self.state.calls.get_mut(call)
            {
                c.timers.retain(|k| *k != key);
            }
            let at = Timestamp::from_millis(at).max(self.state.now);
            self.state.now = at;
            self.on_timer(at, timer);
        }
    }

    fn live_call(&self, call: &CallId, epoch: u32) -> Option<&CallRt> {
        self.state.calls.get(call).filter(|c| c.epoch == epoch)
    }

    fn on_timer(&mut self, at: Timestamp, timer: Timer) {
        match timer {
            Timer::Step { call, epoch } => {
                if self
                    .live_call(&call, epoch)
                    .is_some_and(|c| c.status == CallStatus::Waiting)
                {
                    self.schedule_next_step(at, &call);
                    self.route_call(at, &call, Trigger::StepReached);
                }
            }
            Timer::PreferredExpired { call, epoch } => {
                if self
                    .live_call(&call, epoch)
                    .is_some_and(|c| c.status == CallStatus::Waiting)
                {
                    self.route_call(at, &call, Trigger::PreferredExpired);
                }
            }
            Timer::MaxWait { call, epoch } => {
                // A ringing call is checked again when it comes back.
                if self
                    .live_call(&call, epoch)
                    .is_some_and(|c| c.status == CallStatus::Waiting)
                {
                    self.overflow(at, &call, OverflowReason::MaxWait);
                }
            }
            Timer::Announce { call, epoch } => {
                let Some(c) = self.live_call(&call, epoch) else {
                    return;
                };
                let q = c.queue;
                if let Some(position) = self.call_position(&call) {
                    let estimated_wait_secs =
                        self.queue_ewt_ms(q, u64::from(position - 1)).map(|ms| ms / 1000);
                    if let Some(queue) = self.state.queues.get(q) {
                        let queue = queue.config.id.clone();
                        self.state.outputs.push_back(Output::Announce {
                            call: call.clone(),
                            queue,
                            position,
                            estimated_wait_secs,
                        });
                    }
                }
                if let Some(every) = self
                    .state
                    .queues
                    .get(q)
                    .and_then(|x| x.config.announce_every_secs)
                {
                    self.schedule_for_call(&call.clone(), at + secs(every), Timer::Announce { call, epoch });
                }
            }
            Timer::DeclineExpired { call, epoch } => {
                if self
                    .live_call(&call, epoch)
                    .is_some_and(|c| c.status == CallStatus::Waiting)
                {
                    self.route_call(at, &call, Trigger::PauseOver);
                }
            }
            Timer::OfferTimeout { offer } => {
                if let Some(o) = self.state.offers.remove(&offer) {
                    for &a in &o.agents {
                        self.decline(at, &o.call, a);
                        self.cancel_offer_with(at, offer, &o.call, a, CancelReason::NoAnswer);
                    }
                    self.return_call(at, &o.call);
                }
            }
            Timer::WrapUpEnd { agent, until } => {
                let due = self
                    .state
                    .agents
                    .get(agent)
                    .is_some_and(|a| a.state == AgentState::WrapUp { until });
                if due && self.transition(at, agent, AgentEvent::Ready).is_ok() {
                    self.route_agent(at, agent, Trigger::AgentAvailable);
                }
            }
        }
    }

    fn schedule_next_step(&mut self, now: Timestamp, call_id: &CallId) {
        let Some(call) = self.state.calls.get(call_id) else {
            return;
        };
        let Some(queue) = self.state.queues.get(call.queue) else {
            return;
        };
        let waited = now.since(call.queue_entered_at);
        let next = queue
            .config
            .effective_steps()
            .iter()
            .find(|s| secs(s.after_secs) > waited);
        if let Some(step) = next {
            let at = call.queue_entered_at + secs(step.after_secs);
            let timer = Timer::Step {
                call: call_id.clone(),
                epoch: call.epoch,
            };
            self.schedule_for_call(call_id, at, timer);
        }
    }

    // ----- moving calls -----

    /// Puts a call (new, or arriving by overflow) in its queue, or overflows it further.
    fn admit(&mut self, now: Timestamp, call_id: &CallId, trigger: Trigger) {
        let Some(call) = self.state.calls.get(call_id) else {
            return;
        };
        let q = call.queue;
        let epoch = call.epoch;
        let preferred_timeout = call.preferred.as_ref().map(|p| p.timeout_secs);
        let Some(queue) = self.state.queues.get_mut(q) else {
            return;
        };
        queue.counters.queued = queue.counters.queued.saturating_add(1);
        let max_wait = queue.config.overflow.as_ref().and_then(|o| o.max_wait_secs);
        let announce = queue.config.announce_every_secs;
        let queue_id = queue.config.id.clone();
        if let Some(of) = self.overflow_config(q) {
            let (when_full, when_no_agents) = (of.when_full, of.when_no_agents);
            if when_full && self.is_full(q) && self.overflow(now, call_id, OverflowReason::QueueFull) {
                return;
            }
            let nobody = self.index.queues.get(q).is_some_and(|qi| qi.logged_in == 0);
            if when_no_agents && nobody && self.overflow(now, call_id, OverflowReason::NoAgents) {
                return;
            }
        }
        self.list_waiting(call_id);
        if let Some(w) = max_wait {
            self.schedule_for_call(
                call_id,
                now + secs(w),
                Timer::MaxWait {
                    call: call_id.clone(),
                    epoch,
                },
            );
        }
        if let Some(t) = preferred_timeout {
            self.schedule_for_call(
                call_id,
                now + secs(t),
                Timer::PreferredExpired {
                    call: call_id.clone(),
                    epoch,
                },
            );
        }
        if let Some(every) = announce {
            self.schedule_for_call(
                call_id,
                now + secs(every),
                Timer::Announce {
                    call: call_id.clone(),
                    epoch,
                },
            );
        }
        self.schedule_next_step(now, call_id);
        self.state.outputs.push_back(Output::Queued {
            call: call_id.clone(),
            queue: queue_id,
        });
        self.route_call(now, call_id, trigger);
    }

    /// Sends a call to its queue's overflow target. False (and nothing changed) when the queue has no
    /// overflow or the target would loop back to a queue the call already left.
    fn overflow(&mut self, now: Timestamp, call_id: &CallId, reason: OverflowReason) -> bool {
        let Some(call) = self.state.calls.get(call_id) else {
            return false;
        };
        let from = call.queue;
        let Some(of) = self.overflow_config(from) else {
            return false;
        };
        let target = of.target.clone();
        let to_queue = match &target {
            OverflowTarget::Queue { queue } => match self.index.queue_by_id.get(queue) {
                Some(&t) if t != from && !call.visited.contains(&t) => Some(t),
                _ => return false,
            },
            _ => None,
        };
        let waited = now.since(call.queue_entered_at);
        self.unlist_waiting(call_id);
        self.clear_call_timers(call_id);
        let Some(queue) = self.state.queues.get_mut(from) else {
            return false;
        };
        queue.counters.overflowed = queue.counters.overflowed.saturating_add(1);
        queue.counters.removed_within = queue
            .counters
            .removed_within
            .saturating_add(u64::from(waited <= secs(queue.config.service_level.within_secs)));
        self.state.outputs.push_back(Output::Overflowed {
            call: call_id.clone(),
            from: queue.config.id.clone(),
            target,
            reason,
            waited_ms: ms(waited),
        });
        match to_queue {
            Some(t) => {
                if let Some(call) = self.state.calls.get_mut(call_id) {
                    call.visited.push(from);
                    call.queue = t;
                    call.epoch = call.epoch.wrapping_add(1);
                    call.queue_entered_at = now;
                    call.declined.clear();
                    call.status = CallStatus::Waiting;
                }
                self.admit(now, call_id, Trigger::CallArrived);
            }
            None => {
                self.state.calls.remove(call_id);
            }
        }
        true
    }

    /// A call whose offer failed goes back to its original place (or overflows if it waited too long).
    fn return_call(&mut self, now: Timestamp, call_id: &CallId) {
        let Some(call) = self.state.calls.get_mut(call_id) else {
            return;
        };
        call.status = CallStatus::Waiting;
        let waited = now.since(call.queue_entered_at);
        let q = call.queue;
        let max_wait = self.overflow_config(q).and_then(|o| o.max_wait_secs);
        if max_wait.is_some_and(|w| waited >= secs(w)) && self.overflow(now, call_id, OverflowReason::MaxWait)
        {
            return;
        }
        self.list_waiting(call_id);
        self.schedule_next_step(now, call_id);
        self.route_call(now, call_id, Trigger::OfferReturned);
    }

    fn list_waiting(&mut self, call_id: &CallId) {
        let Some(call) = self.state.calls.get(call_id) else {
            return;
        };
        let key = self.wait_key(call);
        let preferred = call
            .preferred
            .as_ref()
            .and_then(|p| self.index.agent_by_id.get(&p.agent).copied());
        if let Some(qi) = self.index.queues.get_mut(call.queue) {
            qi.waiting.insert(key, call_id.clone());
        }
        if let Some(p) = preferred {
            self.index
                .preferred_waiting
                .entry(p)
                .or_default()
                .push(call_id.clone());
        }
    }

    fn unlist_waiting(&mut self, call_id: &CallId) {
        let Some(call) = self.state.calls.get(call_id) else {
            return;
        };
        let key = self.wait_key(call);
        let preferred = call
            .preferred
            .as_ref()
            .and_then(|p| self.index.agent_by_id.get(&p.agent).copied());
        if let Some(qi) = self.index.queues.get_mut(call.queue) {
            qi.waiting.remove(&key);
        }
        if let Some(p) = preferred
            && let Some(list) = self.index.preferred_waiting.get_mut(&p)
        {
            list.retain(|c| c != call_id);
            if list.is_empty() {
                self.index.preferred_waiting.remove(&p);
            }
        }
    }

    // ----- matching -----

    fn current_step<'a>(
        &self,
        call: &CallRt,
        config: &'a QueueConfig,
        at: Timestamp,
    ) -> (u32, &'a RoutingStep) {
        let waited = at.since(call.queue_entered_at);
        let steps = config.effective_steps();
        let ix = steps
            .iter()
            .rposition(|s| secs(s.after_secs) <= waited)
            .unwrap_or(0);
        (
            u32::try_from(ix).unwrap_or(0),
            steps.get(ix).unwrap_or(&RoutingStep::INITIAL),
        )
    }

    /// The call's preferred agent while their window is open and they are logged in.
    fn preferred_target(&self, call: &CallRt, at: Timestamp) -> Option<usize> {
        let p = call.preferred.as_ref()?;
        if at >= call.queue_entered_at + secs(p.timeout_secs) {
            return None;
        }
        let a = *self.index.agent_by_id.get(&p.agent)?;
        let logged_in = self.state.agents.get(a)?.state.is_logged_in();
        (logged_in && !declined(call, a, at)).then_some(a)
    }

    fn qualifies(&self, agent: usize, call: &CallRt, step: &RoutingStep, rank: u8, at: Timestamp) -> bool {
        if declined(call, agent, at) || step.max_rank.is_some_and(|m| rank > m) {
            return false;
        }
        let Some(req) = &call.requirement else { return true };
        match (&call.compiled.0, self.index.agents.get(agent)) {
            (Some(compiled), Some(ai)) => compiled.matches(&ai.levels, step.relaxation()),
            // Not compiled (never expected): match on names.
            _ => self.state.agents.get(agent).is_some_and(|ag| {
                req.matches(
                    &|s| ag.config.skills.get(s).map_or(0, |p| p.get()),
                    step.relaxation(),
                )
            }),
        }
    }

    /// Keeps an agent who let the call ring out or rejected it from being offered it again for the
    /// queue's pause, and schedules a new look for an agent when the pause ends.
    fn decline(&mut self, now: Timestamp, call_id: &CallId, agent: usize) {
        let Some(call) = self.state.calls.get_mut(call_id) else {
            return;
        };
        let pause = self
            .state
            .queues
            .get(call.queue)
            .map_or(0, |q| q.config.decline_pause_secs);
        let until = now + secs(pause);
        call.declined.retain(|&(a, t)| a != agent && t > now);
        call.declined.push((agent, until));
        let epoch = call.epoch;
        self.schedule_for_call(
            call_id,
            until,
            Timer::DeclineExpired {
                call: call_id.clone(),
                epoch,
            },
        );
    }

    fn compile_requirement(&mut self, call_id: &CallId) {
        let Some(call) = self.state.calls.get_mut(call_id) else {
            return;
        };
        let skills = &mut self.index.skills;
        call.compiled = Derived(
            call.requirement
                .as_ref()
                .map(|r| CompiledExpr::compile(r.expr(), &mut |s| intern(skills, s))),
        );
    }

    fn skill_sum(&self, agent: usize, call: &CallRt) -> u32 {
        let Some(ag) = self.state.agents.get(agent) else {
            return 0;
        };
        match &call.requirement {
            Some(req) => {
                let mut named: Vec<_> = req.expr().skills();
                named.sort();
                named.dedup();
                named
                    .iter()
                    .map(|s| ag.config.skills.get(*s).map_or(0, |p| u32::from(p.get())))
                    .sum()
            }
            None => ag.config.skills.values().map(|p| u32::from(p.get())).sum(),
        }
    }

    fn score(&self, strategy: Strategy, agent: usize, call: &CallRt, at: Timestamp, eligible: u32) -> Score {
        let Some(ag) = self.state.agents.get(agent) else {
            return Score::Preferred;
        };
        match strategy {
            Strategy::LongestIdle => Score::IdleMs(ms(at.since(ag.since))),
            Strategy::MostSkilled => Score::SkillSum(self.skill_sum(agent, call)),
            Strategy::RoundRobin => Score::LastOfferTurn(ag.last_offer_turn),
            Strategy::FewestCalls => Score::HandledCalls(ag.lifetime_handled),
            Strategy::LeastTalkTime => Score::TalkMs(ag.lifetime_talk_ms),
            Strategy::RingAll => Score::RingAll(eligible),
            Strategy::Random => Score::RandomAmong(eligible),
        }
    }

    fn effective_priority(&self, call: &CallRt, at: Timestamp) -> f64 {
        let period = self
            .index
            .queues
            .get(call.queue)
            .map_or(NO_AGING_PERIOD_MS, |qi| qi.period_ms);
        if period == NO_AGING_PERIOD_MS {
            return f64::from(call.priority.get());
        }
        let aged = i128::from(call.priority.get()) * period
            + (i128::from(at.as_millis()) - i128::from(call.enqueued_at.as_millis()));
        aged as f64 / period as f64
    }

    /// Finds the best available agent(s) for a waiting call and offers it.
    fn route_call(&mut self, at: Timestamp, call_id: &CallId, trigger: Trigger) {
        let Some(call) = self.state.calls.get(call_id) else {
            return;
        };
        if call.status != CallStatus::Waiting {
            return;
        }
        let Some(queue) = self.state.queues.get(call.queue) else {
            return;
        };
        let Some(qi) = self.index.queues.get(call.queue) else {
            return;
        };
        let config = &queue.config;
        let (step_ix, step) = self.current_step(call, config, at);
        let available = u32::try_from(qi.available.len()).unwrap_or(u32::MAX);
        let explain = |rule, considered, eligible, chosen: &[usize], score| Explanation {
            call: call.id.clone(),
            queue: config.id.clone(),
            trigger,
            rule,
            step: step_ix,
            step_rule: step.describe(),
            priority: call.priority.get(),
            effective_priority: self.effective_priority(call, at),
            waited_ms: ms(at.since(call.queue_entered_at)),
            calls_considered: 0,
            agents_available: available,
            agents_considered: considered,
            agents_eligible: eligible,
            chosen: chosen
                .iter()
                .filter_map(|a| self.state.agents.get(*a).map(|x| x.config.id.clone()))
                .collect(),
            score,
        };

        if let Some(p) = self.preferred_target(call, at) {
            if self
                .state
                .agents
                .get(p)
                .is_some_and(|a| a.state == AgentState::Available)
            {
                let explanation = explain(Rule::PreferredAgent, 1, 1, &[p], Score::Preferred);
                let call_id = call_id.clone();
                self.offer(at, &call_id, vec![p], explanation);
            }
            return;
        }

        let strategy = config.strategy;
        let first_wins = matches!(
            strategy,
            Strategy::LongestIdle | Strategy::RoundRobin | Strategy::FewestCalls | Strategy::LeastTalkTime
        );
        let mut considered = 0u32;
        let mut eligible: Vec<usize> = Vec::new();
        let mut tier = None;
        for key in &qi.available {
            if tier.is_some_and(|r| key.rank > r) || step.max_rank.is_some_and(|m| key.rank > m) {
                break;
            }
            considered += 1;
            if !self.qualifies(key.agent, call, step, key.rank, at) {
                continue;
            }
            tier = Some(key.rank);
            eligible.push(key.agent);
            if first_wins {
                break;
            }
        }
        if eligible.is_empty() {
            return;
        }
        let count = u32::try_from(eligible.len()).unwrap_or(u32::MAX);
        let chosen: Vec<usize> = match strategy {
            Strategy::RingAll => eligible,
            Strategy::MostSkilled => {
                // Highest skill sum; ties go to the earlier (longer idle) agent.
                let mut best = None::<(u32, usize)>;
                for a in eligible {
                    let s = self.skill_sum(a, call);
                    if best.is_none_or(|(b, _)| s > b) {
                        best = Some((s, a));
                    }
                }
                best.map(|(_, a)| vec![a]).unwrap_or_default()
            }
            Strategy::Random => {
                let pick = usize::try_from(self.state.rng.clone().below(u64::from(count))).unwrap_or(0);
                eligible.get(pick).map(|a| vec![*a]).unwrap_or_default()
            }
            _ => eligible.into_iter().take(1).collect(),
        };
        let Some(&first) = chosen.first() else { return };
        let score = self.score(strategy, first, call, at, count);
        let explanation = explain(Rule::Strategy(strategy), considered, count, &chosen, score);
        if strategy == Strategy::Random {
            // Advance the generator only when the draw is used, so the sequence is reproducible.
            self.state.rng.below(u64::from(count));
        }
        let call_id = call_id.clone();
        self.offer(at, &call_id, chosen, explanation);
    }

    /// Finds the best waiting call for an agent who became available, across every queue they serve.
    fn route_agent(&mut self, at: Timestamp, agent: usize, trigger: Trigger) {
        if !self
            .state
            .agents
            .get(agent)
            .is_some_and(|a| a.state == AgentState::Available)
        {
            return;
        }
        let Some(ai) = self.index.agents.get(agent) else {
            return;
        };
        let mut best: Option<Candidate> = None;
        let mut considered = 0u32;
        let mut consider = |cand: Candidate| {
            if best.as_ref().is_none_or(|b| cand.beats(b)) {
                best = Some(cand);
            }
        };
        for &(q, rank) in &ai.memberships {
            let (Some(qi), Some(queue)) = (self.index.queues.get(q), self.state.queues.get(q)) else {
                continue;
            };
            for (key, call_id) in &qi.waiting {
                considered += 1;
                let Some(call) = self.state.calls.get(call_id) else {
                    continue;
                };
                let preferred = match self.preferred_target(call, at) {
                    Some(p) if p == agent => true,
                    Some(_) => continue,
                    None => {
                        let (_, step) = self.current_step(call, &queue.config, at);
                        if !self.qualifies(agent, call, step, rank, at) {
                            continue;
                        }
                        false
                    }
                };
                consider(Candidate {
                    call: call_id.clone(),
                    queue: q,
                    aged_priority: -key.neg_aged_priority + i128::from(at.as_millis()),
                    period: qi.period_ms,
                    enqueued_at: key.enqueued_at,
                    seq: key.seq,
                    preferred,
                });
                break;
            }
        }
        // Calls waiting for this agent in particular, possibly in queues they do not serve.
        for call_id in self.index.preferred_waiting.get(&agent).into_iter().flatten() {
            let Some(call) = self.state.calls.get(call_id) else {
                continue;
            };
            if call.status != CallStatus::Waiting || self.preferred_target(call, at) != Some(agent) {
                continue;
            }
            considered += 1;
            let Some(qi) = self.index.queues.get(call.queue) else {
                continue;
            };
            let key = self.wait_key(call);
            consider(Candidate {
                call: call_id.clone(),
                queue: call.queue,
                aged_priority: -key.neg_aged_priority + i128::from(at.as_millis()),
                period: qi.period_ms,
                enqueued_at: key.enqueued_at,
                seq: key.seq,
                preferred: true,
            });
        }
        let Some(best) = best else { return };
        let (Some(call), Some(queue), Some(qi)) = (
            self.state.calls.get(&best.call),
            self.state.queues.get(best.queue),
            self.index.queues.get(best.queue),
        ) else {
            return;
        };
        let (step_ix, step) = self.current_step(call, &queue.config, at);
        let (rule, score) = if best.preferred {
            (Rule::PreferredAgent, Score::Preferred)
        } else {
            let strategy = queue.config.strategy;
            (Rule::Strategy(strategy), self.score(strategy, agent, call, at, 1))
        };
        let explanation = Explanation {
            call: call.id.clone(),
            queue: queue.config.id.clone(),
            trigger,
            rule,
            step: step_ix,
            step_rule: step.describe(),
            priority: call.priority.get(),
            effective_priority: self.effective_priority(call, at),
            waited_ms: ms(at.since(call.queue_entered_at)),
            calls_considered: considered,
            agents_available: u32::try_from(qi.available.len()).unwrap_or(u32::MAX),
            agents_considered: 1,
            agents_eligible: 1,
            chosen: self
                .state
                .agents
                .get(agent)
                .map(|a| a.config.id.clone())
                .into_iter()
                .collect(),
            score,
        };
        self.offer(at, &best.call, vec![agent], explanation);
    }

    fn offer(&mut self, at: Timestamp, call_id: &CallId, agents: Vec<usize>, explanation: Explanation) {
        let Some(call) = self.state.calls.get(call_id) else {
            return;
        };
        let Some(queue) = self.state.queues.get(call.queue) else {
            return;
        };
        let expires_at = at + secs(queue.config.offer_timeout_secs);
        let queue_id = queue.config.id.clone();
        let id = self.state.next_offer;
        self.state.next_offer = self.state.next_offer.wrapping_add(1);
        self.unlist_waiting(call_id);
        if let Some(call) = self.state.calls.get_mut(call_id) {
            call.status = CallStatus::Offered { offer: id };
        }
        self.state.outputs.push_back(Output::Offer(Offer {
            offer: id,
            call: call_id.clone(),
            queue: queue_id,
            agents: explanation.chosen.clone(),
            expires_at,
            explanation,
        }));
        for &a in &agents {
            // The agents were chosen from the available index, so the transition is legal.
            if self.transition(at, a, AgentEvent::Offer).is_ok() {
                self.state.offer_turn = self.state.offer_turn.wrapping_add(1);
                let turn = self.state.offer_turn;
                if let Some(ag) = self.state.agents.get_mut(a) {
                    ag.offer = Some(id);
                    ag.last_offer_turn = turn;
                }
            }
        }
        let timer = self.schedule(expires_at, Timer::OfferTimeout { offer: id });
        self.state.offers.insert(
            id,
            OfferRt {
                call: call_id.clone(),
                agents,
                expires_at,
                timer,
            },
        );
    }

    /// Tells an agent their ringing stopped through no fault of theirs; they become available.
    fn cancel_for_agent(
        &mut self,
        at: Timestamp,
        offer: OfferId,
        call: &CallId,
        agent: usize,
        why: CancelReason,
    ) {
        let event = if why == CancelReason::AgentLoggedOut {
            None
        } else {
            Some(AgentEvent::OfferWithdrawn)
        };
        self.cancel_with_event(at, offer, call, agent, why, event);
    }

    /// Tells an agent their offer rang out; they become NotReady("no-answer").
    fn cancel_offer_with(
        &mut self,
        at: Timestamp,
        offer: OfferId,
        call: &CallId,
        agent: usize,
        why: CancelReason,
    ) {
        self.cancel_with_event(
            at,
            offer,
            call,
            agent,
            why,
            Some(AgentEvent::OfferFailed(ReasonCode::no_answer())),
        );
    }

    fn cancel_with_event(
        &mut self,
        at: Timestamp,
        offer: OfferId,
        call: &CallId,
        agent: usize,
        why: CancelReason,
        event: Option<AgentEvent>,
    ) {
        let Some(ag) = self.state.agents.get_mut(agent) else {
            return;
        };
        ag.offer = None;
        let agent_id = ag.config.id.clone();
        self.state.outputs.push_back(Output::OfferCancelled {
            offer,
            call: call.clone(),
            agent: agent_id,
            reason: why,
        });
        if let Some(event) = event {
            // The agent is Reserved (offer invariant), so these transitions are legal.
            let _ = self.transition(at, agent, event);
        }
    }

    // ----- agents -----

    fn agent_ix(&self, agent: &AgentId) -> Result<usize, AcdError> {
        self.index
            .agent_by_id
            .get(agent)
            .copied()
            .ok_or_else(|| AcdError::UnknownAgent(agent.clone()))
    }

    fn check_transition(&self, a: usize, event: &AgentEvent) -> Result<AgentState, AcdError> {
        let ag = self
            .state
            .agents
            .get(a)
            .ok_or(AcdError::Internal("agent index out of range"))?;
        ag.state
            .apply(event)
            .map_err(|source| AcdError::IllegalTransition {
                agent: ag.config.id.clone(),
                source,
            })
    }

    /// Moves an agent to a new state, keeping time accounting and indexes in step.
    fn transition(&mut self, at: Timestamp, a: usize, event: AgentEvent) -> Result<(), AcdError> {
        let next = self.check_transition(a, &event)?;
        let interval_start = self.state.interval_start;
        let Some(ag) = self.state.agents.get_mut(a) else {
            return Ok(());
        };
        let prev = std::mem::replace(&mut ag.state, next.clone());
        let spent = ms(at.since(ag.since.max(interval_start)));
        ag.counters.times.add(&prev, spent);
        let mut wrap_queue = None;
        if matches!(prev, AgentState::WrapUp { .. }) {
            ag.counters.wrap_ms = ag.counters.wrap_ms.saturating_add(spent);
            wrap_queue = ag.wrap_queue;
        }
        ag.since = at;
        let agent_id = ag.config.id.clone();
        if let Some(q) = wrap_queue.and_then(|q| self.state.queues.get_mut(q)) {
            q.counters.wrap_ms = q.counters.wrap_ms.saturating_add(spent);
        }
        if prev == AgentState::Available {
            self.unindex_agent(a);
        }
        if next == AgentState::Available {
            self.index_agent(a);
        }
        if prev.is_logged_in() != next.is_logged_in() {
            self.count_logged_in(a, next.is_logged_in());
        }
        if matches!(prev, AgentState::WrapUp { .. })
            && let Some(key) = self.state.agents.get_mut(a).and_then(|x| x.wrap_timer.take())
        {
            self.state.timers.remove(&key);
        }
        if let AgentState::WrapUp { until } = next {
            let key = self.schedule(until, Timer::WrapUpEnd { agent: a, until });
            if let Some(x) = self.state.agents.get_mut(a) {
                x.wrap_timer = Some(key);
            }
        }
        self.state.outputs.push_back(Output::AgentStateChanged {
            agent: agent_id,
            from: prev,
            to: next,
            at,
        });
        Ok(())
    }

    fn strategy_key(&self, strategy: Strategy, a: &AgentRt) -> i64 {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match strategy {
            Strategy::RoundRobin => clamp(a.last_offer_turn),
            Strategy::FewestCalls => clamp(a.lifetime_handled),
            Strategy::LeastTalkTime => clamp(a.lifetime_talk_ms),
            Strategy::LongestIdle | Strategy::MostSkilled | Strategy::RingAll | Strategy::Random => {
                a.since.as_millis()
            }
        }
    }

    fn index_agent(&mut self, a: usize) {
        let Some(ag) = self.state.agents.get(a) else {
            return;
        };
        let memberships = self
            .index
            .agents
            .get(a)
            .map(|x| x.memberships.clone())
            .unwrap_or_default();
        let mut indexed = Vec::with_capacity(memberships.len());
        for (q, rank) in memberships {
            let Some(queue) = self.state.queues.get(q) else {
                continue;
            };
            let key = AvailKey {
                rank,
                key: self.strategy_key(queue.config.strategy, ag),
                agent: a,
            };
            if let Some(qi) = self.index.queues.get_mut(q) {
                qi.available.insert(key);
                indexed.push((q, key));
            }
        }
        if let Some(ai) = self.index.agents.get_mut(a) {
            ai.indexed = indexed;
        }
    }

    fn unindex_agent(&mut self, a: usize) {
        let Some(ai) = self.index.agents.get_mut(a) else {
            return;
        };
        for (q, key) in ai.indexed.drain(..) {
            if let Some(qi) = self.index.queues.get_mut(q) {
                qi.available.remove(&key);
            }
        }
    }

    fn count_logged_in(&mut self, a: usize, logged_in: bool) {
        let Some(ai) = self.index.agents.get(a) else {
            return;
        };
        for &(q, _) in &ai.memberships {
            if let Some(qi) = self.index.queues.get_mut(q) {
                qi.logged_in = if logged_in {
                    qi.logged_in + 1
                } else {
                    qi.logged_in.saturating_sub(1)
                };
            }
        }
    }

    /// Resolves an agent's queue memberships and adds them to the queues' member lists.
    fn link_agent(&mut self, a: usize) {
        let Some(ag) = self.state.agents.get(a) else {
            return;
        };
        let memberships: Vec<(usize, u8)> = ag
            .config
            .queues
            .iter()
            .filter_map(|m| self.index.queue_by_id.get(&m.queue).map(|&q| (q, m.rank)))
            .collect();
        for &(q, _) in &memberships {
            if let Some(qi) = self.index.queues.get_mut(q) {
                qi.members.push(a);
            }
        }
        let mut levels = Vec::new();
        for (skill, level) in &ag.config.skills {
            let ix = intern(&mut self.index.skills, skill);
            if levels.len() <= ix {
                levels.resize(ix + 1, 0);
            }
            if let Some(slot) = levels.get_mut(ix) {
                *slot = level.get();
            }
        }
        if self.index.agents.len() <= a {
            self.index.agents.resize_with(a + 1, AgentIndex::default);
        }
        if let Some(ai) = self.index.agents.get_mut(a) {
            ai.memberships = memberships;
            ai.levels = levels;
        }
    }

    fn rebuild_index(&mut self) {
        let mut index = Index::default();
        for (q, queue) in self.state.queues.iter().enumerate() {
            index.queue_by_id.insert(queue.config.id.clone(), q);
            index.queues.push(QueueIndex {
                period_ms: aging_period(&queue.config),
                ..QueueIndex::default()
            });
        }
        for (a, agent) in self.state.agents.iter().enumerate() {
            index.agent_by_id.insert(agent.config.id.clone(), a);
        }
        index.agents = vec![AgentIndex::default(); self.state.agents.len()];
        self.index = index;
        for a in 0..self.state.agents.len() {
            self.link_agent(a);
            let state = self.state.agents.get(a).map(|x| x.state.clone());
            if state.as_ref().is_some_and(AgentState::is_logged_in) {
                self.count_logged_in(a, true);
            }
            if state == Some(AgentState::Available) {
                self.index_agent(a);
            }
        }
        let waiting: Vec<CallId> = self
            .state
            .calls
            .values()
            .filter(|c| c.status == CallStatus::Waiting)
            .map(|c| c.id.clone())
            .collect();
        for id in waiting {
            self.list_waiting(&id);
        }
        let calls: Vec<CallId> = self.state.calls.keys().cloned().collect();
        for id in calls {
            self.compile_requirement(&id);
        }
    }

    // ----- queues -----

    fn wait_key(&self, call: &CallRt) -> WaitKey {
        let period = self
            .index
            .queues
            .get(call.queue)
            .map_or(NO_AGING_PERIOD_MS, |qi| qi.period_ms);
        let aged = i128::from(call.priority.get()) * period - i128::from(call.enqueued_at.as_millis());
        WaitKey {
            neg_aged_priority: -aged,
            enqueued_at: call.enqueued_at.as_millis(),
            seq: call.seq,
        }
    }

    fn overflow_config(&self, q: usize) -> Option<&crate::config::OverflowConfig> {
        self.state.queues.get(q)?.config.overflow.as_ref()
    }

    fn is_full(&self, q: usize) -> bool {
        let max = self.state.queues.get(q).and_then(|x| x.config.max_length);
        let waiting = self.index.queues.get(q).map_or(0, |qi| qi.waiting.len());
        max.is_some_and(|m| waiting >= usize::try_from(m).unwrap_or(usize::MAX))
    }

    /// (logged in and not NotReady, available) agents of a queue.
    fn staffing(&self, q: usize) -> (u64, u64) {
        let Some(qi) = self.index.queues.get(q) else {
            return (0, 0);
        };
        let mut staffed = 0;
        for &a in &qi.members {
            match self.state.agents.get(a).map(|x| &x.state) {
                Some(AgentState::LoggedOut | AgentState::NotReady { .. }) | None => {}
                Some(_) => staffed += 1,
            }
        }
        (staffed, qi.available.len() as u64)
    }

    fn queue_ewt_ms(&self, q: usize, ahead: u64) -> Option<u64> {
        let (staffed, available) = self.staffing(q);
        let aht = self.state.queues.get(q)?.counters.aht_ms();
        estimated_wait_ms(ahead, aht, staffed, available)
    }
}

/// Whether `agent` declined `call` and is still in the pause at `at`.
fn declined(call: &CallRt, agent: usize, at: Timestamp) -> bool {
    call.declined.iter().any(|&(a, until)| a == agent && at < until)
}

fn new_agent(config: AgentConfig) -> AgentRt {
    AgentRt {
        config,
        state: AgentState::LoggedOut,
        since: Timestamp::ZERO,
        offer: None,
        call: None,
        wrap_queue: None,
        last_offer_turn: 0,
        lifetime_handled: 0,
        lifetime_talk_ms: 0,
        counters: AgentCounters::default(),
        wrap_timer: None,
    }
}

fn aging_period(config: &QueueConfig) -> i128 {
    config
        .priority_aging_secs
        .map_or(NO_AGING_PERIOD_MS, |s| i128::from(s) * 1000)
}
