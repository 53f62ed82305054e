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
use crate::kpi::{
    AgentCounters, AgentKpi, HeldBack, KpiSnapshot, QueueCounters, QueueKpi, estimated_wait_ms,
};
use crate::rng::SplitMix64;
use domain::{AgentId, CallId, QueueId, SkillId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Duration;

mod agents;
mod checks;
mod inputs;
mod kpis;
mod matching;
mod moving;
mod placed;
mod timers;
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
    /// The call whose after-call work the agent is doing, while in wrap-up.
    #[serde(default)]
    wrap_call: Option<CallId>,
    /// The last call the agent placed themselves; kept after it ends so a redelivered
    /// [`Input::CallPlaced`] changes nothing. While the agent is on it, `call` names it too.
    #[serde(default)]
    placed: Option<PlacedCall>,
}

/// A call an agent placed themselves: no queue holds it, the agent holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PlacedCall {
    call: CallId,
    wrap_up_secs: u32,
    /// Where the agent goes after its wrap-up: not ready with this reason, or (none) ready.
    then_not_ready: Option<ReasonCode>,
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
    /// It rang while no router ran ([`Input::Resumed`]): if it rings out, the agents are not blamed,
    /// since the router cannot know their phones rang all that time.
    #[serde(default)]
    resumed: bool,
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
    /// Calls agents placed and are on, by call.
    placed: HashMap<CallId, usize>,
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

    /// How many offers are ringing now.
    pub fn offers_ringing(&self) -> usize {
        self.state.offers.len()
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
        if let Input::Resumed = input {
            // Before any timer fires: the offers whose time ran out while no router ran stay.
            self.resume(now);
            return Ok(());
        }
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
            Input::CallPlaced {
                agent,
                call,
                wrap_up_secs,
                then_not_ready,
            } => self.place_call(now, &agent, call, wrap_up_secs, then_not_ready),
            Input::CallEnded { call } if !self.state.calls.contains_key(&call) => self.end_placed(now, &call),
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
                self.after_wrap_up(now, a)
            }
            Input::ExtendWrapUp { agent, secs } => self.extend_wrap_up(&agent, secs),
            Input::Tick | Input::Resumed => Ok(()),
            Input::UpsertQueue(config) => self.upsert_queue(now, config),
            Input::UpsertAgent(config) => self.upsert_agent(now, config),
            Input::ResetKpis => {
                self.reset_kpis(now);
                Ok(())
            }
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
        wrap_call: None,
        placed: None,
    }
}

fn aging_period(config: &QueueConfig) -> i128 {
    config
        .priority_aging_secs
        .map_or(NO_AGING_PERIOD_MS, |s| i128::from(s) * 1000)
}
