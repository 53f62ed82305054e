//! `bench acd`: the ACD router at contact-center scale (5,000 agents, 500 queues, 50 skills, 4 priorities)
//! driven by a Poisson call stream sized for about 90% occupancy, then a storm of agent state changes
//! within one second of virtual time. Beside it, in the same run:
//! - a reference router written as one Redis Lua script (best call by priority then age from a sorted
//!   set, longest-idle agent from a sorted set) fed the same arrivals and talk times;
//! - the memory router again, this time persisting every decision to Redis through the state store's
//!   batch `apply`, many batches in flight.
//!
//! Latency of our router is the time inside `handle` (plus draining its outputs) per event; of the
//! reference, one script round trip on loopback. The reference ignores skills: it is the floor of what a
//! routing decision costs when it lives in Redis.

use acd::rng::SplitMix64;
use acd::{
    Acd, AcdConfig, AgentConfig, CallRequest, Input, Output, Priority, Proficiency, QueueConfig,
    QueueMembership, ReasonCode, RoutingStep, SkillExpr,
};
use domain::{AgentId, CallId, QueueId, SkillId, Timestamp};
use serde::Serialize;
use serde_json::{Value, json};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct AcdArgs {
    /// Events handled by the router in the steady phase (arrivals, answers, call ends, timers).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Agents.
    #[arg(long, default_value_t = 5_000)]
    agents: usize,
    /// Queues.
    #[arg(long, default_value_t = 500)]
    queues: usize,
    /// Agent state changes in the storm (half the storm's agents go not-ready, then ready again).
    #[arg(long, default_value_t = 5_000)]
    storm_changes: u32,
    /// Batches persisted concurrently in the "with Redis persistence" run.
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Skip everything that needs Redis (reference router and persistence).
    #[arg(long)]
    no_redis: bool,
}

impl AcdArgs {
    #[cfg(test)]
    fn tiny(events: u64) -> Self {
        Self {
            events,
            agents: 200,
            queues: 20,
            storm_changes: 200,
            in_flight: 16,
            no_redis: false,
        }
    }
}

const SKILLS: u64 = 50;
const PRIORITIES: u64 = 4;
const AHT_MS: f64 = 120_000.0;
const WRAP_UP_MS: i64 = 5_000;
const STORM_MS: i64 = 1_000;

/// An index turned into a valid identifier ("a12", "q3", "c99"), or a clear error.
fn id<T: std::str::FromStr>(prefix: &str, n: u64) -> Result<T, String> {
    format!("{prefix}{n}")
        .parse()
        .map_err(|_| format!("invalid id {prefix}{n}"))
}

/// The queues agent `a` serves: a block of neighbouring queues, so each queue has about 10x(agents/queues)
/// agents, the same for our router and the reference.
fn agent_queues(a: usize, queues: usize) -> Vec<(usize, u8)> {
    (0..5)
        .map(|k| ((a / 10 + k * 7) % queues.max(1), 1 + (k % 2) as u8))
        .collect()
}

/// One caller, drawn from a seeded generator so both routers see the same stream.
#[derive(Debug, Clone)]
struct Arrival {
    n: u64,
    at_ms: f64,
    queue: u64,
    priority: u8,
    requirement: Option<(u64, u8)>,
    talk_ms: i64,
}

struct Arrivals {
    rng: SplitMix64,
    gap_ms: f64,
    queues: u64,
    next: Arrival,
}

impl Arrivals {
    fn new(agents: usize, queues: usize) -> Self {
        // 90% occupancy including wrap-up: rate = 0.9 * agents / (AHT + wrap).
        let gap_ms = (AHT_MS + WRAP_UP_MS as f64) / (0.9 * agents.max(1) as f64);
        let mut arrivals = Self {
            rng: SplitMix64::new(7),
            gap_ms,
            queues: queues.max(1) as u64,
            next: Arrival {
                n: 0,
                at_ms: 0.0,
                queue: 0,
                priority: 0,
                requirement: None,
                talk_ms: 0,
            },
        };
        arrivals.next = arrivals.draw(0, 0.0);
        arrivals
    }

    fn draw(&mut self, n: u64, after_ms: f64) -> Arrival {
        let at_ms = after_ms + self.rng.exponential(self.gap_ms);
        let queue = self.rng.below(self.queues);
        let priority = self.rng.below(PRIORITIES) as u8;
        let requirement =
            (self.rng.below(2) == 0).then(|| (self.rng.below(SKILLS), 1 + self.rng.below(3) as u8));
        let talk_ms = self.rng.exponential(AHT_MS) as i64 + 1;
        Arrival {
            n,
            at_ms,
            queue,
            priority,
            requirement,
            talk_ms,
        }
    }

    fn peek_ms(&self) -> f64 {
        self.next.at_ms
    }

    fn pop(&mut self) -> Arrival {
        let following = self.draw(self.next.n + 1, self.next.at_ms);
        std::mem::replace(&mut self.next, following)
    }
}

/// What happens next in virtual time. Ties go to call ends, then storm changes, then arrivals.
enum Next {
    End(i64, u64),
    Storm(u32),
    Arrive,
}

fn next_event(
    arrivals: &Arrivals,
    ends: &BinaryHeap<Reverse<(i64, u64)>>,
    storm: Option<(i64, u32)>,
) -> Next {
    let arrive = arrivals.peek_ms();
    let mut best = Next::Arrive;
    let mut best_ms = arrive;
    if let Some((at, k)) = storm
        && (at as f64) <= best_ms
    {
        best = Next::Storm(k);
        best_ms = at as f64;
    }
    if let Some(&Reverse((end, n))) = ends.peek()
        && (end as f64) <= best_ms
    {
        best = Next::End(end, n);
    }
    best
}

/// Time of storm change `k` of `total`, spread over one second from `start`.
fn storm_at(start: i64, k: u32, total: u32) -> i64 {
    start + i64::from(k) * STORM_MS / i64::from(total.max(1))
}

/// Agents sent away in the storm stay away for this many changes before coming back.
const STORM_LAG: usize = 50;

/// Chooses the storm's changes: an available agent goes not-ready, and once `STORM_LAG` are away every
/// other change brings the longest-away one back (which routes waiting calls to them). Everyone is back by
/// the end of the storm.
#[derive(Default)]
struct StormPicker {
    cursor: usize,
    away: std::collections::VecDeque<usize>,
}

impl StormPicker {
    /// The agent and whether they go away (else come back), or `None` when nobody can change.
    fn pick(
        &mut self,
        k: u32,
        total: u32,
        agents: usize,
        available: &dyn Fn(usize) -> bool,
    ) -> Option<(usize, bool)> {
        let remaining = total.saturating_sub(k) as usize;
        let bring_back = remaining <= self.away.len() || (k % 2 == 1 && self.away.len() >= STORM_LAG);
        if !bring_back {
            for _ in 0..agents {
                // A stride spreads the changes over the queues.
                self.cursor = (self.cursor + 7) % agents.max(1);
                if available(self.cursor) {
                    self.away.push_back(self.cursor);
                    return Some((self.cursor, true));
                }
            }
        }
        self.away.pop_front().map(|a| (a, false))
    }
}

/// Latency percentile of sorted nanoseconds.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round().max(0.0) as usize;
    sorted
        .get(i.min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

/// Figures of one router run.
#[derive(Debug, Default, Serialize)]
struct RouterFigures {
    events: u64,
    decisions: u64,
    steady_events: u64,
    steady_decisions: u64,
    /// Callers offered in the steady phase (the reference takes the same ones).
    steady_arrivals: u64,
    storm_events: u64,
    refused: u64,
    /// Of the refused inputs, those in the storm.
    storm_refused: u64,
    /// Storm changes skipped because no agent could change.
    storm_skipped: u64,
    decisions_per_sec: f64,
    events_per_sec: f64,
    p50_ns: u64,
    p99_ns: u64,
    p999_ns: u64,
    max_ns: u64,
    /// Latency of the steady events that produced a routing decision.
    decision_p50_ns: u64,
    decision_p99_ns: u64,
    storm_p50_ns: u64,
    storm_p99_ns: u64,
    storm_changes_p99_ns: u64,
    storm_p99_over_steady_p99: f64,
    virtual_secs: f64,
    /// Size of the router's saved state at the end of the run, the time to copy it (on the router's
    /// task) and to encode it (on another thread).
    saved_state_bytes: u64,
    saved_state_copy_us: u64,
    saved_state_encode_us: u64,
}

#[derive(Default)]
struct Latencies {
    steady: Vec<u64>,
    storm: Vec<u64>,
    storm_changes: Vec<u64>,
    deciding: Vec<u64>,
    busy: Duration,
    decisions: u64,
    steady_decisions: u64,
    steady_arrivals: u64,
    refused: u64,
    storm_refused: u64,
    storm_skipped: u64,
}

impl Latencies {
    fn record(&mut self, elapsed: Duration, in_storm: bool, is_change: bool, decided: bool) {
        self.busy += elapsed;
        let ns = elapsed.as_nanos() as u64;
        if decided && !in_storm {
            self.deciding.push(ns);
        }
        if in_storm {
            self.storm.push(ns);
            if is_change {
                self.storm_changes.push(ns);
            }
        } else {
            self.steady.push(ns);
        }
    }

    fn figures(mut self, virtual_ms: i64) -> RouterFigures {
        self.steady.sort_unstable();
        self.storm.sort_unstable();
        self.storm_changes.sort_unstable();
        self.deciding.sort_unstable();
        let events = (self.steady.len() + self.storm.len()) as u64;
        let secs = self.busy.as_secs_f64().max(1e-9);
        let p99 = percentile(&self.steady, 0.99);
        let storm_p99 = percentile(&self.storm, 0.99);
        RouterFigures {
            events,
            decisions: self.decisions,
            steady_events: self.steady.len() as u64,
            steady_decisions: self.steady_decisions,
            steady_arrivals: self.steady_arrivals,
            storm_events: self.storm.len() as u64,
            refused: self.refused,
            storm_refused: self.storm_refused,
            storm_skipped: self.storm_skipped,
            decisions_per_sec: self.decisions as f64 / secs,
            events_per_sec: events as f64 / secs,
            p50_ns: percentile(&self.steady, 0.5),
            p99_ns: p99,
            p999_ns: percentile(&self.steady, 0.999),
            max_ns: self.steady.last().copied().unwrap_or(0),
            decision_p50_ns: percentile(&self.deciding, 0.5),
            decision_p99_ns: percentile(&self.deciding, 0.99),
            storm_p50_ns: percentile(&self.storm, 0.5),
            storm_p99_ns: storm_p99,
            storm_changes_p99_ns: percentile(&self.storm_changes, 0.99),
            storm_p99_over_steady_p99: storm_p99 as f64 / (p99.max(1)) as f64,
            virtual_secs: virtual_ms as f64 / 1000.0,
            saved_state_bytes: 0,
            saved_state_copy_us: 0,
            saved_state_encode_us: 0,
        }
    }
}

/// A routing decision handed to the persistence pipeline.
struct Decision {
    call: CallId,
    queue: QueueId,
    agent: AgentId,
    decided_at: Instant,
}

fn build_router(agents: usize, queues: usize) -> Result<Acd, String> {
    let mut rng = SplitMix64::new(11);
    let queue_configs = (0..queues)
        .map(|q| {
            Ok(QueueConfig {
                wrap_up_secs: (WRAP_UP_MS / 1000) as u32,
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
                ..QueueConfig::new(id("q", q as u64)?)
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let agent_configs = (0..agents)
        .map(|a| {
            let skills = (0..5)
                .map(|_| {
                    let level = Proficiency::new(1 + rng.below(5) as u8).map_err(|e| e.to_string())?;
                    Ok((id::<SkillId>("s", rng.below(SKILLS))?, level))
                })
                .collect::<Result<_, String>>()?;
            let memberships = agent_queues(a, queues)
                .into_iter()
                .map(|(q, rank)| {
                    Ok(QueueMembership {
                        queue: id("q", q as u64)?,
                        rank,
                    })
                })
                .collect::<Result<_, String>>()?;
            Ok(AgentConfig {
                id: id("a", a as u64)?,
                skills,
                queues: memberships,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Acd::new(AcdConfig {
        queues: queue_configs,
        agents: agent_configs,
        random_seed: 1,
    })
    .map_err(|e| format!("acd config: {e}"))
}

/// Runs our router over the steady stream then the storm. Every decision goes to `on_decision`.
fn drive_ours(args: &AcdArgs, on_decision: &mut dyn FnMut(Decision)) -> Result<RouterFigures, String> {
    let mut acd = build_router(args.agents, args.queues)?;
    for a in 0..args.agents {
        acd.handle(
            Timestamp::ZERO,
            Input::AgentLogin {
                agent: id("a", a as u64)?,
            },
        )
        .map_err(|e| format!("login: {e}"))?;
    }
    acd.drain_outputs().for_each(drop);
    let not_ready = ReasonCode::new("break").map_err(|e| e.to_string())?;
    let mut arrivals = Arrivals::new(args.agents, args.queues);
    let mut talk_ms: Vec<i64> = Vec::new();
    let mut ends: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
    let mut lat = Latencies::default();
    let mut storm: Option<(i64, u32)> = None;
    let mut storm_start = 0i64;
    let mut picker = StormPicker::default();
    let mut now_ms = 0i64;
    let mut pending: Vec<(CallId, AgentId)> = Vec::new();
    let mut handled = 0u64;

    // One timed `handle` with its outputs drained; offers are answered at once by the caller.
    let mut step = |acd: &mut Acd,
                    now: Timestamp,
                    input: Input,
                    lat: &mut Latencies,
                    pending: &mut Vec<(CallId, AgentId)>,
                    in_storm: bool,
                    is_change: bool| {
        let start = Instant::now();
        let result = acd.handle(now, input);
        let outputs: Vec<Output> = acd.drain_outputs().collect();
        let elapsed = start.elapsed();
        let decided = outputs.iter().any(|o| matches!(o, Output::Offer(_)));
        lat.record(elapsed, in_storm, is_change, decided);
        if result.is_err() {
            lat.refused += 1;
            if in_storm {
                lat.storm_refused += 1;
            }
        }
        for out in outputs {
            if let Output::Offer(offer) = out {
                lat.decisions += 1;
                if !in_storm {
                    lat.steady_decisions += 1;
                }
                if let Some(agent) = offer.agents.first() {
                    pending.push((offer.call.clone(), agent.clone()));
                    on_decision(Decision {
                        call: offer.call,
                        queue: offer.queue,
                        agent: agent.clone(),
                        decided_at: Instant::now(),
                    });
                }
            }
        }
    };

    loop {
        let in_storm = storm.is_some();
        if !in_storm && handled >= args.events {
            storm_start = now_ms + 1;
            storm = Some((storm_at(storm_start, 0, args.storm_changes), 0));
            if args.storm_changes == 0 {
                break;
            }
            continue;
        }
        let mut is_change = false;
        let input = match next_event(&arrivals, &ends, storm) {
            Next::End(at, n) => {
                ends.pop();
                now_ms = now_ms.max(at);
                Input::CallEnded { call: id("c", n)? }
            }
            Next::Storm(k) => {
                now_ms = now_ms.max(storm_at(storm_start, k, args.storm_changes));
                storm = (k + 1 < args.storm_changes)
                    .then(|| (storm_at(storm_start, k + 1, args.storm_changes), k + 1));
                let available = |a: usize| {
                    id::<AgentId>("a", a as u64)
                        .ok()
                        .and_then(|agent| acd.agent_state(&agent).map(|(s, _)| s.kind()))
                        == Some(acd::AgentStateKind::Available)
                };
                let Some((agent, goes_away)) = picker.pick(k, args.storm_changes, args.agents, &available)
                else {
                    lat.storm_skipped += 1;
                    if storm.is_none() {
                        break;
                    }
                    continue;
                };
                is_change = true;
                let agent = id("a", agent as u64)?;
                if goes_away {
                    Input::AgentNotReady {
                        agent,
                        reason: not_ready.clone(),
                    }
                } else {
                    Input::AgentReady { agent }
                }
            }
            Next::Arrive => {
                let a = arrivals.pop();
                if !in_storm {
                    lat.steady_arrivals += 1;
                }
                now_ms = now_ms.max(a.at_ms as i64);
                if talk_ms.len() <= a.n as usize {
                    talk_ms.resize(a.n as usize + 1, 0);
                }
                if let Some(slot) = talk_ms.get_mut(a.n as usize) {
                    *slot = a.talk_ms;
                }
                let requirement = match a.requirement {
                    Some((skill, level)) => Some(
                        format!("s{skill} >= {level}")
                            .parse::<SkillExpr>()
                            .map_err(|e| e.to_string())?,
                    ),
                    None => None,
                };
                Input::CallEnqueued(CallRequest {
                    priority: Priority::new(a.priority).unwrap_or_default(),
                    requirement,
                    ..CallRequest::new(id("c", a.n)?, id("q", a.queue)?)
                })
            }
        };
        let now = Timestamp::from_millis(now_ms);
        step(&mut acd, now, input, &mut lat, &mut pending, in_storm, is_change);
        handled += 1;
        while let Some((call, agent)) = pending.pop() {
            let n: u64 = call.as_str().get(1..).and_then(|s| s.parse().ok()).unwrap_or(0);
            step(
                &mut acd,
                now,
                Input::OfferAccepted { call, agent },
                &mut lat,
                &mut pending,
                in_storm,
                false,
            );
            handled += 1;
            let talk = talk_ms.get(n as usize).copied().unwrap_or(1);
            ends.push(Reverse((now_ms + talk, n)));
        }
        // Wrap-up and offer timers.
        if let Some(deadline) = acd.next_deadline()
            && deadline <= now
        {
            step(
                &mut acd,
                now,
                Input::Tick,
                &mut lat,
                &mut pending,
                in_storm,
                false,
            );
            handled += 1;
        }
        if in_storm && storm.is_none() {
            break;
        }
    }
    let mut figures = lat.figures(now_ms);
    // What the ACD owner task writes to the state store after a change: the whole state, as JSON.
    // The router's task only copies the state; another thread encodes it.
    let started = Instant::now();
    let copy = acd.snapshot();
    figures.saved_state_copy_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let started = Instant::now();
    let saved = serde_json::to_vec(&copy).map_err(|e| format!("snapshot: {e}"))?;
    figures.saved_state_encode_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    figures.saved_state_bytes = saved.len() as u64;
    Ok(figures)
}

const REFERENCE_SCRIPT: &str = r"
local p = ARGV[1]
local mode = ARGV[2]
local now = tonumber(ARGV[3])
local function queues_of(agent) return redis.call('SMEMBERS', p .. ':aq:' .. agent) end
if mode == 'arrive' then
  local call, queue, priority = ARGV[4], ARGV[5], tonumber(ARGV[6])
  local idle = redis.call('ZRANGE', p .. ':idle:' .. queue, 0, 0)
  local agent = idle[1]
  if agent then
    for _, q in ipairs(queues_of(agent)) do redis.call('ZREM', p .. ':idle:' .. q, agent) end
    return {call, agent}
  end
  redis.call('ZADD', p .. ':calls:' .. queue, (9 - priority) * 1e13 + now, call)
  return false
elseif mode == 'ready' then
  local agent = ARGV[4]
  local qs = queues_of(agent)
  local best_q, best_score, best_call = nil, nil, nil
  for _, q in ipairs(qs) do
    local head = redis.call('ZRANGE', p .. ':calls:' .. q, 0, 0, 'WITHSCORES')
    if head[1] and (best_score == nil or tonumber(head[2]) < best_score) then
      best_q, best_score, best_call = q, tonumber(head[2]), head[1]
    end
  end
  if best_call then
    redis.call('ZREM', p .. ':calls:' .. best_q, best_call)
    return {best_call, agent}
  end
  for _, q in ipairs(qs) do redis.call('ZADD', p .. ':idle:' .. q, now, agent) end
  return false
else
  local agent = ARGV[4]
  for _, q in ipairs(queues_of(agent)) do redis.call('ZREM', p .. ':idle:' .. q, agent) end
  return false
end
";

/// Where the reference harness believes an agent is.
#[derive(Clone, Copy, PartialEq)]
enum RefAgent {
    Idle,
    Busy,
    Away,
    /// Went not-ready while busy: stays away when the call ends.
    BusyThenAway,
}

/// Redis CPU seconds (user + system) from INFO, to compare work done rather than round trips.
fn redis_cpu_seconds(conn: &mut redis::Connection) -> Option<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query(conn).ok()?;
    let get = |name: &str| {
        info.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(':')?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    Some(get("used_cpu_user")? + get("used_cpu_sys")?)
}

fn delete_prefix(conn: &mut redis::Connection, prefix: &str) {
    let pattern = format!("{prefix}:*");
    let keys: Vec<String> = match redis::Commands::scan_match::<_, String>(conn, pattern.as_str()) {
        Ok(iter) => iter.filter_map(Result::ok).collect(),
        Err(_) => return,
    };
    for chunk in keys.chunks(1000) {
        let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query(conn);
    }
}

/// The reference Lua router fed the same arrivals (as many as our steady phase took) and the same storm.
fn drive_reference(args: &AcdArgs, url: &str, arrivals_to_take: u64) -> Result<Value, String> {
    let client = redis::Client::open(url).map_err(|e| format!("redis: {e}"))?;
    let mut conn = client.get_connection().map_err(|e| format!("redis: {e}"))?;
    let prefix = format!("bench-acd-{}", std::process::id());
    let result = reference_run(args, &mut conn, &prefix, arrivals_to_take);
    delete_prefix(&mut conn, &prefix);
    result
}

fn reference_run(
    args: &AcdArgs,
    conn: &mut redis::Connection,
    prefix: &str,
    arrivals_to_take: u64,
) -> Result<Value, String> {
    let script = redis::Script::new(REFERENCE_SCRIPT);
    let mut pipe = redis::pipe();
    for a in 0..args.agents {
        let queues: Vec<String> = agent_queues(a, args.queues)
            .into_iter()
            .map(|(q, _)| format!("q{q}"))
            .collect();
        pipe.cmd("SADD")
            .arg(format!("{prefix}:aq:a{a}"))
            .arg(queues)
            .ignore();
        for (q, _) in agent_queues(a, args.queues) {
            pipe.cmd("ZADD")
                .arg(format!("{prefix}:idle:q{q}"))
                .arg(0)
                .arg(format!("a{a}"))
                .ignore();
        }
    }
    pipe.query::<()>(conn).map_err(|e| format!("redis setup: {e}"))?;

    let mut agents = vec![RefAgent::Idle; args.agents];
    let mut arrivals = Arrivals::new(args.agents, args.queues);
    let mut talk_ms: Vec<i64> = Vec::new();
    // Calls ending (end time, agent number) and agents ready again after wrap-up, kept apart so both
    // harnesses see call ends at the same times.
    let mut ends: BinaryHeap<Reverse<(i64, u64)>> = BinaryHeap::new();
    let mut lat = Latencies::default();
    let mut taken = 0u64;
    let mut storm: Option<(i64, u32)> = None;
    let mut storm_start = 0i64;
    let mut picker = StormPicker::default();
    let mut now_ms = 0i64;
    let cpu_before = redis_cpu_seconds(conn);

    let mut call_script = |mode: &str,
                           now_ms: i64,
                           extra: &[String],
                           lat: &mut Latencies,
                           in_storm: bool,
                           is_change: bool|
     -> Result<Option<(String, String)>, String> {
        let mut invocation = script.prepare_invoke();
        invocation.arg(prefix).arg(mode).arg(now_ms);
        for e in extra {
            invocation.arg(e);
        }
        let start = Instant::now();
        let decision: Option<(String, String)> = invocation
            .invoke(conn)
            .map_err(|e| format!("reference script: {e}"))?;
        lat.record(start.elapsed(), in_storm, is_change, decision.is_some());
        if decision.is_some() {
            lat.decisions += 1;
            if !in_storm {
                lat.steady_decisions += 1;
            }
        }
        Ok(decision)
    };
    // Ends carry the agent number with a flag bit: wrap-up finished (agent ready) or call ended.
    const READY_FLAG: u64 = 1 << 62;
    loop {
        let in_storm = storm.is_some();
        if !in_storm && taken >= arrivals_to_take {
            storm_start = now_ms + 1;
            if args.storm_changes == 0 {
                break;
            }
            storm = Some((storm_at(storm_start, 0, args.storm_changes), 0));
            continue;
        }
        let decision = match next_event(&arrivals, &ends, storm) {
            Next::End(at, tagged) => {
                ends.pop();
                now_ms = now_ms.max(at);
                let agent = (tagged & !READY_FLAG) as usize;
                if tagged & READY_FLAG == 0 {
                    // Call over: the agent wraps up (no Redis work, as in a real reference deployment
                    // the wrap-up timer lives with the caller).
                    ends.push(Reverse((now_ms + WRAP_UP_MS, agent as u64 | READY_FLAG)));
                    None
                } else {
                    match agents.get(agent).copied() {
                        Some(RefAgent::Busy) => {
                            if let Some(s) = agents.get_mut(agent) {
                                *s = RefAgent::Idle;
                            }
                            call_script("ready", now_ms, &[format!("a{agent}")], &mut lat, in_storm, false)?
                        }
                        Some(RefAgent::BusyThenAway) => {
                            if let Some(s) = agents.get_mut(agent) {
                                *s = RefAgent::Away;
                            }
                            None
                        }
                        _ => None,
                    }
                }
            }
            Next::Storm(k) => {
                now_ms = now_ms.max(storm_at(storm_start, k, args.storm_changes));
                storm = (k + 1 < args.storm_changes)
                    .then(|| (storm_at(storm_start, k + 1, args.storm_changes), k + 1));
                let available = |a: usize| agents.get(a) == Some(&RefAgent::Idle);
                match picker.pick(k, args.storm_changes, args.agents, &available) {
                    Some((agent, goes_away)) => {
                        let (next_state, mode) = if goes_away {
                            (RefAgent::Away, "away")
                        } else {
                            (RefAgent::Idle, "ready")
                        };
                        if let Some(s) = agents.get_mut(agent) {
                            *s = next_state;
                        }
                        call_script(mode, now_ms, &[format!("a{agent}")], &mut lat, in_storm, true)?
                    }
                    None => {
                        lat.storm_skipped += 1;
                        None
                    }
                }
            }
            Next::Arrive => {
                let a = arrivals.pop();
                taken += 1;
                now_ms = now_ms.max(a.at_ms as i64);
                if talk_ms.len() <= a.n as usize {
                    talk_ms.resize(a.n as usize + 1, 0);
                }
                if let Some(slot) = talk_ms.get_mut(a.n as usize) {
                    *slot = a.talk_ms;
                }
                let extra = [
                    format!("c{}", a.n),
                    format!("q{}", a.queue),
                    a.priority.to_string(),
                ];
                call_script("arrive", now_ms, &extra, &mut lat, in_storm, false)?
            }
        };
        if let Some((call, agent)) = decision {
            let n: u64 = call.get(1..).and_then(|s| s.parse().ok()).unwrap_or(0);
            let a: u64 = agent.get(1..).and_then(|s| s.parse().ok()).unwrap_or(0);
            if let Some(s) = agents.get_mut(a as usize) {
                *s = if *s == RefAgent::BusyThenAway || *s == RefAgent::Away {
                    RefAgent::BusyThenAway
                } else {
                    RefAgent::Busy
                };
            }
            let talk = talk_ms.get(n as usize).copied().unwrap_or(1);
            ends.push(Reverse((now_ms + talk, a)));
        }
        if in_storm && storm.is_none() {
            break;
        }
    }
    let cpu_after = redis_cpu_seconds(conn);
    let decisions = lat.decisions;
    let figures = lat.figures(now_ms);
    let redis_cpu = match (cpu_before, cpu_after) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    Ok(json!({
        "arrivals": taken,
        "figures": figures,
        "redis_cpu_s": redis_cpu,
        "decisions_per_redis_cpu_sec": redis_cpu.filter(|c| *c > 0.0).map(|c| decisions as f64 / c),
    }))
}

/// The memory router again, each decision persisted to Redis by the state store's batch `apply`
/// (dequeue the call, reserve the agent), `in_flight` batches at a time.
fn with_persistence(args: &AcdArgs, url: &str) -> Result<Value, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let prefix = format!("bench-acd-persist-{}", std::process::id());
    let store = runtime
        .block_on(state_store::StateStore::connect(
            &state_store::StateConfig::redis(url, &prefix),
        ))
        .map_err(|e| format!("state store: {e}"))?;
    let in_flight = args.in_flight.max(1);
    // A short channel: when Redis falls behind the router waits, so the latency below is persistence,
    // not a backlog.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Decision>(in_flight);
    let persister = runtime.spawn(async move {
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(in_flight));
        let mut tasks = tokio::task::JoinSet::new();
        let mut failures = 0u64;
        let mut latencies = Vec::new();
        while let Some(d) = rx.recv().await {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let store = store.clone();
            tasks.spawn(async move {
                let mut batch = state_store::WriteBatch::new();
                batch.queue_remove(d.queue, d.call);
                let written = match batch.presence(d.agent, state_store::Expect::Any, &"reserved") {
                    Ok(_) => store.apply(batch, Timestamp::ZERO).await.is_ok(),
                    Err(_) => false,
                };
                drop(permit);
                (written, d.decided_at.elapsed().as_nanos() as u64)
            });
            // Collect finished ones as we go so the set stays small.
            while let Some(done) = tasks.try_join_next() {
                match done {
                    Ok((true, ns)) => latencies.push(ns),
                    _ => failures += 1,
                }
            }
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((true, ns)) => latencies.push(ns),
                _ => failures += 1,
            }
        }
        (latencies, failures)
    });
    let started = Instant::now();
    let mut sent = 0u64;
    let mut send = |d: Decision| {
        if tx.blocking_send(d).is_ok() {
            sent += 1;
        }
    };
    let figures = drive_ours(args, &mut send)?;
    drop(tx);
    let (mut latencies, failures) = runtime.block_on(persister).map_err(|e| e.to_string())?;
    let wall = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    if let Ok(client) = redis::Client::open(url)
        && let Ok(mut conn) = client.get_connection()
    {
        delete_prefix(&mut conn, &prefix);
    }
    Ok(json!({
        "in_flight": in_flight,
        "decisions": sent,
        "failed_writes": failures,
        "wall_s": wall,
        "decisions_per_sec": sent as f64 / wall.max(1e-9),
        "router_p99_ns": figures.p99_ns,
        "decision_to_persisted_p50_ms": percentile(&latencies, 0.5) as f64 / 1e6,
        "decision_to_persisted_p99_ms": percentile(&latencies, 0.99) as f64 / 1e6,
    }))
}

fn redis_url(args: &AcdArgs) -> Result<String, String> {
    if args.no_redis {
        return Err("skipped (--no-redis)".into());
    }
    let url = std::env::var("REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .ok_or("skipped: REDIS_URL is not set")?;
    let client = redis::Client::open(url.as_str()).map_err(|e| format!("skipped: {e}"))?;
    let mut conn = client.get_connection().map_err(|e| format!("skipped: {e}"))?;
    redis::cmd("PING")
        .query::<String>(&mut conn)
        .map_err(|e| format!("skipped: {e}"))?;
    Ok(url)
}

pub fn run(args: &AcdArgs) -> Result<Value, String> {
    let ours = drive_ours(args, &mut |_| {})?;
    let (reference, persistence) = match redis_url(args) {
        Ok(url) => {
            let reference = drive_reference(args, &url, ours.steady_arrivals)?;
            let persistence = with_persistence(args, &url)?;
            (reference, persistence)
        }
        Err(note) => (json!({ "note": note }), json!({ "note": note })),
    };
    let reference_figures = &reference["figures"];
    let over = |ours: f64, key: &str| {
        reference_figures[key]
            .as_f64()
            .filter(|r| *r > 0.0)
            .map(|r| ours / r)
    };
    Ok(json!({
        "benchmark": "acd",
        "agents": args.agents,
        "queues": args.queues,
        "skills": SKILLS,
        "priorities": PRIORITIES,
        "storm_changes": args.storm_changes,
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory": ours,
        "reference_lua": reference,
        "memory_with_redis_persistence": persistence,
        "ratios": {
            "decisions_per_sec_ours_over_reference": over(ours.decisions_per_sec, "decisions_per_sec"),
            "p99_ours_over_reference": over(ours.p99_ns as f64, "p99_ns"),
            "decision_p99_ours_over_reference": over(ours.decision_p99_ns as f64, "decision_p99_ns"),
            // Work rather than round trips; Redis CPU counts whatever else the server did meanwhile.
            "decisions_per_cpu_sec_ours_over_reference_redis_cpu": reference["decisions_per_redis_cpu_sec"]
                .as_f64()
                .filter(|r| *r > 0.0)
                .map(|r| ours.decisions_per_sec / r),
            "storm_p99_ours_over_reference": over(ours.storm_p99_ns as f64, "storm_p99_ns"),
        },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_router_reports_throughput_latency_and_storm() {
        let mut args = AcdArgs::tiny(3_000);
        args.no_redis = true;
        let json = run(&args).unwrap();
        let memory = &json["memory"];
        assert!(memory["decisions"].as_u64().unwrap() > 500, "{memory}");
        assert!(memory["steady_events"].as_u64().unwrap() >= 3_000);
        assert!(memory["storm_events"].as_u64().unwrap() >= 200);
        // The storm only asks for changes the agents can make.
        assert_eq!(memory["storm_refused"], 0, "{memory}");
        assert_eq!(memory["storm_skipped"], 0, "{memory}");
        assert!(memory["decisions_per_sec"].as_f64().unwrap() > 0.0);
        assert!(memory["p50_ns"].as_u64().unwrap() <= memory["p99_ns"].as_u64().unwrap());
        assert!(memory["storm_p99_over_steady_p99"].as_f64().unwrap() > 0.0);
        assert!(memory["saved_state_bytes"].as_u64().unwrap() > 1_000, "{memory}");
        assert!(
            json["reference_lua"]["note"]
                .as_str()
                .unwrap()
                .contains("skipped")
        );
    }

    #[test]
    fn storm_sends_available_agents_away_and_brings_all_back() {
        let total = 400;
        assert_eq!(storm_at(1_000, 0, total), 1_000);
        assert!(storm_at(1_000, total - 1, total) < 1_000 + STORM_MS);
        let mut picker = StormPicker::default();
        let mut away = std::collections::BTreeSet::new();
        // Agents 0..100, the odd ones busy.
        for k in 0..total {
            let available = |a: usize| a.is_multiple_of(2) && !away.contains(&a);
            let (agent, goes_away) = picker.pick(k, total, 100, &available).unwrap();
            if goes_away {
                assert!(
                    agent % 2 == 0 && away.insert(agent),
                    "agent {agent} was not available"
                );
            } else {
                assert!(away.remove(&agent), "agent {agent} was not away");
            }
            assert!(away.len() <= STORM_LAG + 1);
        }
        assert!(away.is_empty(), "still away: {away:?}");
    }

    #[test]
    fn reference_router_runs_against_redis_when_available() {
        let args = AcdArgs::tiny(2_000);
        let Ok(url) = redis_url(&args) else {
            // Without Redis the skip path is what runs; asserted in the memory test.
            return;
        };
        let arrivals = drive_ours(&args, &mut |_| {}).unwrap().steady_arrivals;
        let reference = drive_reference(&args, &url, arrivals).unwrap();
        let figures = &reference["figures"];
        assert!(figures["decisions"].as_u64().unwrap() > 300, "{reference}");
        assert_eq!(reference["arrivals"].as_u64().unwrap(), arrivals);
        let persisted = with_persistence(&args, &url).unwrap();
        assert_eq!(persisted["failed_writes"], 0, "{persisted}");
        assert!(persisted["decisions"].as_u64().unwrap() > 300);
    }
}
