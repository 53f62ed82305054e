//! Our predictive policy: two loops.
//!
//! The inner loop dials for the agents expected to be free when the new calls are answered. It estimates
//! online the probability that a dial ends with a person on the line (a discounted Beta), the time from dial
//! to that verdict, and the talk and wrap-up time distributions (lognormal fits). An agent who is ready counts
//! as one; an agent on a call or in wrap-up counts as the probability of finishing within the expected time
//! to answer given how long they have been busy. Calls in flight count as the probability that they will still
//! turn into a person. It then places the largest number of dials for which the last person answered still
//! finds an agent with probability at least 1 - risk: the distribution of free agents minus persons is
//! computed exactly (Poisson-binomial) for small teams and by a normal approximation for large ones.
//!
//! The outer loop holds the abandonment budget: the accepted risk that the last person finds no agent is an
//! integral controller on its logarithm (a Robbins-Monro step per call answered by a person) that drives the
//! abandonment rate to an effective target, and that target comes
//! from the budget left in the compliance window, so an early burst of drops is paid back and a small team
//! with few calls keeps a wider margin. It starts conservative (prior answer rate of one half, long talks,
//! a low accepted risk), falls back to progressive with few agents, and never dials with no agents.

use super::{AgentActivity, DialResult, PacingEvent, PacingPolicy, PacingSnapshot};
use crate::estimate::{DiscountedBeta, LognormalFit, normal_quantile};
use domain::Timestamp;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Settings of the predictive policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PredictiveConfig {
    /// The legal cap on the abandonment rate (0.03 = 3%).
    pub abandon_cap: f64,
    /// The rate the outer loop aims at when the budget allows; below the cap to leave room for chance.
    pub target_rate: f64,
    /// Below this many agents taking calls, dial progressively.
    pub min_agents: usize,
    /// Highest acceptable probability that the last person dialled for finds no agent, at the start.
    pub initial_risk: f64,
    /// Outer-loop step on the logarithm of that risk, per person answered (scaled by 1 / target_rate on
    /// an abandoned call), is this divided by the persons expected per hour: the loop settles in about an
    /// hour whatever the team size ...
    pub risk_steps_per_hour: f64,
    /// ... within these bounds.
    pub min_risk_step: f64,
    pub max_risk_step: f64,
    pub min_risk: f64,
    pub max_risk: f64,
    /// Standard deviations of the abandon count kept in reserve by the budget.
    pub budget_margin_sd: f64,
    /// Humans expected per hour below which the budget plans as if this many were coming.
    pub min_planning_humans: f64,
    /// Per-observation memory of the answer-rate estimate (1.0 never forgets).
    pub answer_memory: f64,
    /// Per-observation memory of the duration fits.
    pub duration_memory: f64,
    /// Upper bound on calls in flight per agent.
    pub max_lines_per_agent: f64,
    /// UK rules: the share of machine verdicts estimated to be people, counted as abandoned calls.
    pub uk_false_positive_share: Option<f64>,
}

impl Default for PredictiveConfig {
    fn default() -> Self {
        Self {
            abandon_cap: 0.03,
            target_rate: 0.02,
            min_agents: 5,
            initial_risk: 0.0228,
            risk_steps_per_hour: 1.5,
            min_risk_step: 0.002,
            max_risk_step: 0.05,
            min_risk: 1e-4,
            max_risk: 0.5,
            budget_margin_sd: 1.65,
            min_planning_humans: 50.0,
            answer_memory: 0.998,
            duration_memory: 0.995,
            max_lines_per_agent: 20.0,
            uk_false_positive_share: None,
        }
    }
}

/// The predictive policy.
#[derive(Debug, Clone)]
pub struct Predictive {
    config: PredictiveConfig,
    answer: DiscountedBeta,
    time_to_human: LognormalFit,
    talk: LognormalFit,
    wrap: LognormalFit,
    /// Logarithm of the accepted risk that the last person dialled for finds no agent (the outer loop's
    /// control variable).
    log_risk: f64,
    /// The same as a safety margin in standard deviations, kept in step with `log_risk`.
    safety: f64,
    /// Persons answered and abandoned so far in the window (UK: including estimated false positives).
    humans: f64,
    abandons: f64,
    /// Recent rate of persons answered, per second, for planning the budget.
    human_rate: f64,
    last_human_at: Option<Timestamp>,
}

impl Predictive {
    pub fn new(config: PredictiveConfig) -> Self {
        Self {
            answer: DiscountedBeta::new(0.5, 10.0, config.answer_memory),
            time_to_human: LognormalFit::new(Duration::from_secs(12), 0.5, 5.0, config.duration_memory),
            talk: LognormalFit::new(Duration::from_secs(300), 1.0, 2.0, config.duration_memory),
            wrap: LognormalFit::new(Duration::from_secs(30), 1.0, 2.0, config.duration_memory),
            log_risk: config.initial_risk.clamp(1e-9, 1.0).ln(),
            safety: -normal_quantile(config.initial_risk),
            humans: 0.0,
            abandons: 0.0,
            human_rate: 0.0,
            last_human_at: None,
            config,
        }
    }

    /// The current safety factor (standard deviations of margin).
    pub fn safety(&self) -> f64 {
        self.safety
    }

    /// The current estimate of P(a dial reaches a person).
    pub fn answer_probability(&self) -> f64 {
        self.answer.mean()
    }

    /// The abandonment rate the outer loop aims at now, from the budget left.
    pub fn effective_target(&self) -> f64 {
        let cap = self.config.abandon_cap;
        let ahead = (self.human_rate * 3600.0).max(self.config.min_planning_humans);
        let total = self.humans + ahead;
        let reserve = self.config.budget_margin_sd * (cap * total).sqrt();
        let allowed = cap * total - self.abandons - reserve;
        (allowed / ahead).clamp(0.0, self.config.target_rate)
    }

    fn record_outcome(&mut self, abandoned: bool, weight: f64) {
        let target = self.effective_target();
        let drop = if abandoned { 1.0 } else { 0.0 };
        let per_hour = (self.human_rate * 3600.0).max(1.0);
        let gain = (self.config.risk_steps_per_hour / per_hour).clamp(
            self.config.min_risk_step,
            self.config.max_risk_step.max(self.config.min_risk_step),
        );
        let step = gain * weight * (drop - target) / self.config.target_rate.max(1e-3);
        let (lo, hi) = (
            self.config.min_risk.max(1e-9).ln(),
            self.config.max_risk.clamp(1e-9, 1.0).ln(),
        );
        self.log_risk = (self.log_risk - step).clamp(lo, hi);
        self.safety = -normal_quantile(self.log_risk.exp());
        self.humans += weight;
        if abandoned {
            self.abandons += weight;
        }
    }

    fn note_human_arrival(&mut self, at: Timestamp) {
        // Exponentially decayed count over a ten-minute time constant, divided by it: a rate per second.
        const TIME_CONSTANT: f64 = 600.0;
        let gap = self
            .last_human_at
            .map_or(0.0, |last| at.since(last).as_secs_f64());
        self.human_rate = self.human_rate * (-gap / TIME_CONSTANT).exp() + 1.0 / TIME_CONSTANT;
        self.last_human_at = Some(at);
    }

    /// Probability that a busy agent is free within `horizon` seconds.
    fn free_within(&self, activity: AgentActivity, elapsed: f64, horizon: f64) -> f64 {
        match activity {
            AgentActivity::Ready => 1.0,
            AgentActivity::OnCall => self.talk.ends_within(elapsed, horizon - self.wrap.mean_secs()),
            AgentActivity::WrapUp => self.wrap.ends_within(elapsed, horizon),
        }
    }
}

impl PacingPolicy for Predictive {
    fn name(&self) -> String {
        "predictive".into()
    }

    fn observe(&mut self, event: &PacingEvent) {
        match *event {
            PacingEvent::DialResolved {
                dialed_at,
                at,
                result,
            } => {
                let human = result == DialResult::Human;
                self.answer.observe(human);
                if human {
                    self.time_to_human.observe(at.since(dialed_at));
                    self.note_human_arrival(at);
                }
                if result == DialResult::Machine
                    && let Some(share) = self.config.uk_false_positive_share
                {
                    self.record_outcome(true, share.clamp(0.0, 1.0));
                }
            }
            PacingEvent::Connected { .. } => self.record_outcome(false, 1.0),
            PacingEvent::Abandoned { .. } => self.record_outcome(true, 1.0),
            PacingEvent::TalkEnded { talk, .. } => self.talk.observe(talk),
            PacingEvent::WrapEnded { wrap, .. } => self.wrap.observe(wrap),
        }
    }

    fn dials_to_place(&mut self, snapshot: &PacingSnapshot<'_>) -> u32 {
        if snapshot.agents.is_empty() {
            return 0;
        }
        let progressive = snapshot.progressive_dials();
        if snapshot.agents.len() < self.config.min_agents {
            return progressive;
        }
        let now = snapshot.now;
        let p = self.answer.mean().clamp(1e-3, 1.0);
        let horizon = self.time_to_human.mean_secs();

        let max_lines = (self.config.max_lines_per_agent * snapshot.agents.len() as f64).floor();
        let room = (max_lines - snapshot.dials_in_flight.len() as f64).max(0.0);

        // Agents expected free when new calls answer. Elapsed times are rounded (to 0.1 s for calls in
        // flight, 1 s for agents) and the probabilities memoised: large teams have thousands per decision.
        let mut memo = Memo::default();
        let agents_free: Vec<f64> = snapshot
            .agents
            .iter()
            .map(|agent| {
                let elapsed = now.since(agent.since).as_secs();
                let table = match agent.activity {
                    AgentActivity::Ready => return 1.0,
                    AgentActivity::OnCall => &mut memo.on_call,
                    AgentActivity::WrapUp => &mut memo.wrap_up,
                };
                table.get_or(elapsed, || {
                    self.free_within(agent.activity, elapsed as f64, horizon)
                })
            })
            .collect();
        // Persons still to come from calls in flight.
        let persons_to_come: Vec<f64> = snapshot
            .dials_in_flight
            .iter()
            .map(|dialed_at| {
                let tenths = now.since(*dialed_at).as_millis() as u64 / 100;
                memo.in_flight.get_or(tenths, || {
                    let reached = self.time_to_human.cdf(tenths as f64 / 10.0);
                    (p * (1.0 - reached) / (1.0 - p * reached).max(1e-9)).clamp(0.0, 1.0)
                })
            })
            .collect();
        let wanted = if agents_free.len() + persons_to_come.len() <= EXACT_UP_TO {
            let room = room as usize;
            let threshold = 1.0 - self.log_risk.exp();
            exact_dials(
                &agents_free,
                &persons_to_come,
                snapshot.calls_waiting,
                p,
                threshold,
                room,
            )
        } else {
            normal_dials(
                &agents_free,
                &persons_to_come,
                snapshot.calls_waiting,
                p,
                self.safety,
                room,
            )
        };
        wanted.max(progressive)
    }
}

/// Probabilities by rounded elapsed time, computed once per decision.
struct MemoTable {
    values: Vec<f64>,
}

impl Default for MemoTable {
    fn default() -> Self {
        Self {
            values: vec![f64::NAN; 1024],
        }
    }
}

impl MemoTable {
    fn get_or(&mut self, key: u64, compute: impl FnOnce() -> f64) -> f64 {
        match usize::try_from(key).ok().and_then(|k| self.values.get_mut(k)) {
            Some(slot) if slot.is_nan() => {
                *slot = compute();
                *slot
            }
            Some(slot) => *slot,
            None => compute(),
        }
    }
}

#[derive(Default)]
struct Memo {
    on_call: MemoTable,
    wrap_up: MemoTable,
    in_flight: MemoTable,
}

/// Up to this many agents plus calls in flight, the policy computes the distributions exactly.
const EXACT_UP_TO: usize = 60;

/// The number of dials for which the last person answered still finds an agent with probability at least
/// `threshold`, computing the distribution of (free agents - persons) exactly (Poisson-binomial).
fn exact_dials(
    agents_free: &[f64],
    persons_to_come: &[f64],
    waiting: u32,
    p: f64,
    threshold: f64,
    room: usize,
) -> u32 {
    // dist[i] = P(free agents - persons = lowest + i).
    let mut lowest = -i64::from(waiting);
    let mut dist = vec![1.0_f64];
    let add_agent = |dist: &mut Vec<f64>, q: f64| {
        dist.push(0.0);
        for i in (1..dist.len()).rev() {
            dist[i] = dist[i] * (1.0 - q) + dist[i - 1] * q;
        }
        dist[0] *= 1.0 - q;
    };
    let add_person = |dist: &mut Vec<f64>, lowest: &mut i64, q: f64| {
        dist.insert(0, 0.0);
        *lowest -= 1;
        for i in 0..dist.len() - 1 {
            dist[i] = dist[i] * (1.0 - q) + dist[i + 1] * q;
        }
        if let Some(last) = dist.last_mut() {
            *last *= 1.0 - q;
        }
    };
    for &q in agents_free {
        add_agent(&mut dist, q);
    }
    for &q in persons_to_come {
        add_person(&mut dist, &mut lowest, q);
    }
    // P(an agent is left for one more person) = P(value >= 1).
    let finds_agent = |dist: &[f64], lowest: i64| -> f64 {
        let first = usize::try_from(1 - lowest).unwrap_or(0);
        dist.iter().skip(first).sum()
    };
    let mut placed = 0;
    while placed < room && finds_agent(&dist, lowest) >= threshold {
        add_person(&mut dist, &mut lowest, p);
        placed += 1;
    }
    u32::try_from(placed).unwrap_or(u32::MAX)
}

/// As [`exact_dials`], with a normal approximation of the distributions; `safety` is the margin in
/// standard deviations.
fn normal_dials(
    agents_free: &[f64],
    persons_to_come: &[f64],
    waiting: u32,
    p: f64,
    safety: f64,
    room: f64,
) -> u32 {
    let mean_var = |qs: &[f64]| qs.iter().fold((0.0, 0.0), |(m, v), q| (m + q, v + q * (1.0 - q)));
    let (agents_mean, agents_var) = mean_var(agents_free);
    let (persons_mean, persons_var) = mean_var(persons_to_come);
    // Margin before the new dials; -0.5 is the continuity correction for "at least one agent left".
    let base_margin = agents_mean - f64::from(waiting) - persons_mean - 0.5;
    let base_var = agents_var + persons_var + 0.25;
    let fits = |n: f64| base_margin - n * p >= safety * (base_var + n * p * (1.0 - p)).sqrt();
    if !fits(0.0) {
        return 0;
    }
    // Largest n in [0, room] with fits(n): dials 0..=n each still find an agent. Binary search: fits is
    // monotone in n for safety >= 0 and close to it below.
    let (mut lo, mut hi) = (0.0_f64, room);
    while hi - lo > 0.5 {
        let mid = ((lo + hi) / 2.0).floor().max(lo + 1.0).min(hi);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1.0;
        }
    }
    (lo + 1.0).min(room) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pacing::AgentView;

    fn view(activity: AgentActivity, since_secs: i64) -> AgentView {
        AgentView {
            activity,
            since: Timestamp::from_secs(since_secs),
        }
    }

    fn teach(policy: &mut Predictive, answer_rate_percent: u32, talk_secs: u64) {
        for i in 0..2000u32 {
            let result = if i % 100 < answer_rate_percent {
                DialResult::Human
            } else {
                DialResult::NoAnswer
            };
            let dialed_at = Timestamp::from_secs(i64::from(i));
            policy.observe(&PacingEvent::DialResolved {
                dialed_at,
                at: dialed_at + Duration::from_secs(10),
                result,
            });
        }
        for i in 0..200 {
            let talk = Duration::from_secs(talk_secs / 2 + (i % 10) * talk_secs / 10);
            policy.observe(&PacingEvent::TalkEnded {
                at: Timestamp::ZERO,
                talk,
            });
            policy.observe(&PacingEvent::WrapEnded {
                at: Timestamp::ZERO,
                wrap: Duration::from_secs(3),
            });
        }
    }

    #[test]
    fn no_agents_no_dials_and_few_agents_is_progressive() {
        let mut policy = Predictive::new(PredictiveConfig::default());
        teach(&mut policy, 10, 60);
        let snap = PacingSnapshot {
            now: Timestamp::ZERO,
            agents: &[],
            dials_in_flight: &[],
            calls_waiting: 0,
        };
        assert_eq!(policy.dials_to_place(&snap), 0);
        let four = [view(AgentActivity::Ready, 0); 4];
        let snap = PacingSnapshot {
            now: Timestamp::ZERO,
            agents: &four,
            dials_in_flight: &[],
            calls_waiting: 0,
        };
        assert_eq!(policy.dials_to_place(&snap), 4);
    }

    #[test]
    fn dials_ahead_more_for_low_answer_rates_and_for_agents_about_to_finish() {
        let now = Timestamp::from_secs(10_000);
        let mut agents = vec![view(AgentActivity::Ready, 9_990); 5];
        agents.extend(vec![view(AgentActivity::OnCall, 9_990); 15]);
        let mut low = Predictive::new(PredictiveConfig::default());
        teach(&mut low, 10, 60);
        let mut high = Predictive::new(PredictiveConfig::default());
        teach(&mut high, 60, 60);
        let snap = PacingSnapshot {
            now,
            agents: &agents,
            dials_in_flight: &[],
            calls_waiting: 0,
        };
        let at_low = low.dials_to_place(&snap);
        let at_high = high.dials_to_place(&snap);
        assert!(
            at_low > at_high && at_high >= 5,
            "low answer {at_low}, high answer {at_high}"
        );

        // Same team, but the talking agents have been on the phone far longer than the usual 60 s.
        let mut late = vec![view(AgentActivity::Ready, 9_990); 5];
        late.extend(vec![view(AgentActivity::OnCall, 9_000); 15]);
        let snap_late = PacingSnapshot {
            now,
            agents: &late,
            dials_in_flight: &[],
            calls_waiting: 0,
        };
        assert!(high.dials_to_place(&snap_late) > at_high);
    }

    #[test]
    fn exact_dials_matches_the_binomial() {
        // One agent, a 60% answer rate: a second dial would find no agent 60% of the time.
        assert_eq!(exact_dials(&[1.0], &[], 0, 0.6, 0.977, 100), 1);
        // Three agents, 10% answer rate, 95%: P(Bin(8, 0.1) <= 2) = 0.962, P(Bin(9, 0.1) <= 2) = 0.947,
        // so the ninth dial is the last one whose person still finds an agent often enough.
        assert_eq!(exact_dials(&[1.0; 3], &[], 0, 0.1, 0.95, 100), 9);
        // A waiting call takes the only agent; a call in flight sure to be a person too.
        assert_eq!(exact_dials(&[1.0], &[], 1, 0.1, 0.5, 100), 0);
        assert_eq!(exact_dials(&[1.0], &[1.0], 0, 0.1, 0.5, 100), 0);
        // The room left caps the answer.
        assert_eq!(exact_dials(&[1.0; 3], &[], 0, 0.1, 0.95, 4), 4);
        // The normal approximation lands close to the exact count for a larger team.
        let exact = exact_dials(&[1.0; 40], &[0.5; 20], 0, 0.2, 0.98, 10_000);
        let normal = normal_dials(&[1.0; 40], &[0.5; 20], 0, 0.2, 2.054, 10_000.0);
        assert!(exact.abs_diff(normal) <= 8, "exact {exact} normal {normal}");
    }

    #[test]
    fn abandons_raise_the_safety_factor_and_connects_lower_it_within_budget() {
        let mut policy = Predictive::new(PredictiveConfig::default());
        let start = policy.safety();
        for _ in 0..5 {
            policy.observe(&PacingEvent::Abandoned { at: Timestamp::ZERO });
        }
        assert!(policy.safety() > start);
        let raised = policy.safety();
        for i in 0..5000 {
            let at = Timestamp::from_secs(i);
            policy.observe(&PacingEvent::DialResolved {
                dialed_at: at,
                at,
                result: DialResult::Human,
            });
            policy.observe(&PacingEvent::Connected {
                at,
                waited: Duration::ZERO,
            });
        }
        assert!(policy.safety() < raised);
        assert!(policy.effective_target() > 0.0 && policy.effective_target() <= 0.02);
    }
}
