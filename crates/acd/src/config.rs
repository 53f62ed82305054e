//! Configuration of queues and agents, as loaded from TOML by the binary and changed at run time by the
//! admin API. Every type deserialises with serde; times are whole seconds. A configuration is checked
//! when it enters the router ([`crate::Acd::new`], [`crate::Input::UpsertQueue`]), where cross references
//! (overflow targets) can be resolved.

use crate::expr::{MAX_LEVEL, Relaxation};
use domain::{AgentId, QueueId, SkillId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A call's priority, 0 (lowest) to 9 (highest). Comes from the IVR or the CRM tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Priority(u8);

impl Priority {
    /// Highest priority.
    pub const MAX: Priority = Priority(9);
    /// Parses a priority, rejecting values above 9.
    pub fn new(value: u8) -> Result<Self, ConfigError> {
        if value <= Self::MAX.0 {
            Ok(Self(value))
        } else {
            Err(ConfigError::Priority(value))
        }
    }
    /// The priority as a number.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Priority {
    type Error = ConfigError;
    fn try_from(v: u8) -> Result<Self, ConfigError> {
        Self::new(v)
    }
}

impl From<Priority> for u8 {
    fn from(p: Priority) -> u8 {
        p.0
    }
}

/// An agent's proficiency in a skill, 1 (novice) to 5 (expert).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Proficiency(u8);

impl Proficiency {
    /// Parses a proficiency, rejecting values outside 1-5.
    pub fn new(value: u8) -> Result<Self, ConfigError> {
        if (1..=MAX_LEVEL).contains(&value) {
            Ok(Self(value))
        } else {
            Err(ConfigError::Proficiency(value))
        }
    }
    /// The level as a number.
    pub fn get(self) -> u8 {
        self.0
    }
}

impl TryFrom<u8> for Proficiency {
    type Error = ConfigError;
    fn try_from(v: u8) -> Result<Self, ConfigError> {
        Self::new(v)
    }
}

impl From<Proficiency> for u8 {
    fn from(p: Proficiency) -> u8 {
        p.0
    }
}

/// A not-ready reason code (break, lunch, training, "no answer", ...): short printable text, no spaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ReasonCode(String);

impl ReasonCode {
    /// Longest reason code accepted.
    pub const MAX_LEN: usize = 32;
    /// Parses a reason code: 1-32 characters among letters, digits, '-', '_', '.'.
    pub fn new(s: impl Into<String>) -> Result<Self, ConfigError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if ok {
            Ok(Self(s))
        } else {
            Err(ConfigError::ReasonCode(s.chars().take(40).collect()))
        }
    }
    /// The code as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The reason the router gives an agent who let an offer ring out.
    pub fn no_answer() -> Self {
        Self("no-answer".into())
    }
    /// The reason the router gives an agent who rejected an offer, when the queue says so.
    pub fn rejected() -> Self {
        Self("rejected".into())
    }
}

impl TryFrom<String> for ReasonCode {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, ConfigError> {
        Self::new(s)
    }
}

impl From<ReasonCode> for String {
    fn from(r: ReasonCode) -> String {
        r.0
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a queue picks among the agents eligible for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// The agent available for the longest time.
    #[default]
    LongestIdle,
    /// The highest sum of proficiencies in the skills the call names (ties: longest idle).
    MostSkilled,
    /// The agent offered a call least recently.
    RoundRobin,
    /// The agent who has handled the fewest calls.
    FewestCalls,
    /// The agent with the least talk time.
    LeastTalkTime,
    /// Every eligible agent at once; the first to accept wins.
    RingAll,
    /// A uniformly random eligible agent (seeded, so reproducible).
    Random,
}

impl Strategy {
    /// The configuration name of the strategy.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::LongestIdle => "longest-idle",
            Strategy::MostSkilled => "most-skilled",
            Strategy::RoundRobin => "round-robin",
            Strategy::FewestCalls => "fewest-calls",
            Strategy::LeastTalkTime => "least-talk-time",
            Strategy::RingAll => "ring-all",
            Strategy::Random => "random",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A service-level target "X% within T seconds".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceLevelTarget {
    /// The share of calls, 1-100.
    pub percent: u8,
    /// The answer threshold in seconds.
    pub within_secs: u32,
}

impl Default for ServiceLevelTarget {
    fn default() -> Self {
        Self {
            percent: 80,
            within_secs: 20,
        }
    }
}

impl fmt::Display for ServiceLevelTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.percent, self.within_secs)
    }
}

impl std::str::FromStr for ServiceLevelTarget {
    type Err = ConfigError;
    /// Parses "80/20".
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let bad = || ConfigError::ServiceLevel(s.chars().take(40).collect());
        let (p, t) = s.split_once('/').ok_or_else(bad)?;
        let percent: u8 = p.trim().parse().map_err(|_| bad())?;
        let within_secs: u32 = t.trim().parse().map_err(|_| bad())?;
        let target = Self { percent, within_secs };
        target.check()?;
        Ok(target)
    }
}

impl ServiceLevelTarget {
    fn check(&self) -> Result<(), ConfigError> {
        if (1..=100).contains(&self.percent) {
            Ok(())
        } else {
            Err(ConfigError::ServiceLevel(self.to_string()))
        }
    }
}

/// Which calls count, and how, in a queue's service level (vendors differ; see DOMAIN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceLevelFormula {
    /// answered within T / answered.
    #[default]
    AnsweredWithin,
    /// (answered within T + abandoned within T) / (answered + abandoned).
    AnsweredOrAbandonedWithin,
    /// removed from the queue within T (answered, abandoned or overflowed) / queued.
    RemovedWithin,
    /// (answered − answered after T) / (answered + abandoned).
    AnsweredWithinOfOffered,
    /// As [`Self::AnsweredWithinOfOffered`], with abandons shorter than the short-abandon threshold left out.
    AnsweredWithinOfOfferedExcludingShortAbandons,
}

/// Where a call goes when its queue cannot serve it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum OverflowTarget {
    /// Another queue; the call keeps its original enqueue time there.
    Queue { queue: QueueId },
    /// A voicemail box.
    Voicemail { mailbox: String },
    /// Offer the caller a callback; when the owner re-enqueues it, it keeps its enqueue time.
    Callback,
}

impl fmt::Display for OverflowTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OverflowTarget::Queue { queue } => write!(f, "queue {queue}"),
            OverflowTarget::Voicemail { mailbox } => write!(f, "voicemail {mailbox}"),
            OverflowTarget::Callback => f.write_str("callback"),
        }
    }
}

/// When and where a queue overflows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverflowConfig {
    pub target: OverflowTarget,
    /// Overflow a call that has waited this long in the queue.
    #[serde(default)]
    pub max_wait_secs: Option<u32>,
    /// Overflow when no agent serving the queue is logged in (at enqueue, or when the last one logs out).
    #[serde(default = "yes")]
    pub when_no_agents: bool,
    /// Overflow, rather than refuse, a call arriving at a full queue.
    #[serde(default = "yes")]
    pub when_full: bool,
}

fn yes() -> bool {
    true
}

/// One step of the widening pool: from `after_secs` of waiting in the queue, these agents qualify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingStep {
    /// Seconds of waiting in the queue after which the step applies.
    pub after_secs: u32,
    /// Agents whose rank in the queue is at most this (1 = primary); none means every rank.
    #[serde(default)]
    pub max_rank: Option<u8>,
    /// Lower every required proficiency to at most this level.
    #[serde(default)]
    pub relax_proficiency_to: Option<u8>,
    /// Any agent of the queue, whatever the call's skill requirement.
    #[serde(default)]
    pub ignore_skills: bool,
}

impl RoutingStep {
    /// The first step: all ranks, skills as required.
    pub const INITIAL: RoutingStep = RoutingStep {
        after_secs: 0,
        max_rank: None,
        relax_proficiency_to: None,
        ignore_skills: false,
    };

    /// How the step loosens a call's skill requirement.
    pub fn relaxation(&self) -> Relaxation {
        match (self.ignore_skills, self.relax_proficiency_to) {
            (true, _) => Relaxation::IgnoreSkills,
            (false, Some(level)) => Relaxation::LowerBoundsTo(level),
            (false, None) => Relaxation::None,
        }
    }

    /// A short description for explanations, e.g. "rank <= 2, proficiency relaxed to 2".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        parts.push(match self.max_rank {
            Some(r) => format!("rank <= {r}"),
            None => "any rank".to_string(),
        });
        match self.relaxation() {
            Relaxation::None => parts.push("skills as required".to_string()),
            Relaxation::LowerBoundsTo(l) => parts.push(format!("proficiency relaxed to {l}")),
            Relaxation::IgnoreSkills => parts.push("skills ignored".to_string()),
        }
        parts.join(", ")
    }
}

/// One queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub id: QueueId,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub service_level: ServiceLevelTarget,
    #[serde(default)]
    pub service_level_formula: ServiceLevelFormula,
    /// Abandons within this many seconds are "short" (left out of some formulas and of the abandon rate).
    #[serde(default = "default_short_abandon")]
    pub short_abandon_secs: u32,
    /// Most calls waiting at once; a further call overflows (or is refused without an overflow target).
    #[serde(default)]
    pub max_length: Option<u32>,
    #[serde(default)]
    pub overflow: Option<OverflowConfig>,
    /// After-call work time; 0 makes the agent available as soon as the call ends.
    #[serde(default)]
    pub wrap_up_secs: u32,
    /// The longest an agent may stretch one wrap-up to by asking for more time (counted from the
    /// call's end); at or below `wrap_up_secs` no extension is granted.
    #[serde(default)]
    pub wrap_up_max_secs: u32,
    /// How long an offer rings before it is redirected (RONA).
    #[serde(default = "default_offer_timeout")]
    pub offer_timeout_secs: u32,
    /// Raise a waiting call's priority by one level per this many seconds of waiting; none: no aging.
    #[serde(default)]
    pub priority_aging_secs: Option<u32>,
    /// An agent who rejects an offer becomes NotReady("rejected") rather than Available.
    #[serde(default)]
    pub reject_sets_not_ready: bool,
    /// An agent who let a call ring out or rejected it is not offered that call again for this long.
    #[serde(default = "default_decline_pause")]
    pub decline_pause_secs: u32,
    /// The widening pool; empty means one step with all ranks and the skills as required.
    #[serde(default)]
    pub steps: Vec<RoutingStep>,
    /// Announce position and estimated wait to each waiting caller this often.
    #[serde(default)]
    pub announce_every_secs: Option<u32>,
}

fn default_short_abandon() -> u32 {
    5
}

fn default_offer_timeout() -> u32 {
    15
}

fn default_decline_pause() -> u32 {
    30
}

impl QueueConfig {
    /// A queue with every setting at its default.
    pub fn new(id: QueueId) -> Self {
        Self {
            id,
            strategy: Strategy::default(),
            service_level: ServiceLevelTarget::default(),
            service_level_formula: ServiceLevelFormula::default(),
            short_abandon_secs: default_short_abandon(),
            max_length: None,
            overflow: None,
            wrap_up_secs: 0,
            wrap_up_max_secs: 0,
            offer_timeout_secs: default_offer_timeout(),
            priority_aging_secs: None,
            reject_sets_not_ready: false,
            decline_pause_secs: default_decline_pause(),
            steps: Vec::new(),
            announce_every_secs: None,
        }
    }

    /// The steps in effect, never empty.
    pub fn effective_steps(&self) -> &[RoutingStep] {
        if self.steps.is_empty() {
            std::slice::from_ref(&RoutingStep::INITIAL)
        } else {
            &self.steps
        }
    }

    /// Checks what can be checked on the queue alone.
    pub fn check(&self) -> Result<(), ConfigError> {
        let q = || self.id.clone();
        self.service_level.check()?;
        if self.offer_timeout_secs == 0 {
            return Err(ConfigError::Queue {
                queue: q(),
                problem: "offer_timeout_secs must be at least 1",
            });
        }
        if self.priority_aging_secs == Some(0) {
            return Err(ConfigError::Queue {
                queue: q(),
                problem: "priority_aging_secs must be at least 1",
            });
        }
        if self.announce_every_secs == Some(0) {
            return Err(ConfigError::Queue {
                queue: q(),
                problem: "announce_every_secs must be at least 1",
            });
        }
        if let Some(first) = self.steps.first()
            && first.after_secs != 0
        {
            return Err(ConfigError::Queue {
                queue: q(),
                problem: "the first step must have after_secs = 0",
            });
        }
        if self
            .steps
            .windows(2)
            .any(|w| w.first().map(|a| a.after_secs) >= w.get(1).map(|b| b.after_secs))
        {
            return Err(ConfigError::Queue {
                queue: q(),
                problem: "steps must have increasing after_secs",
            });
        }
        if self
            .steps
            .iter()
            .any(|s| s.relax_proficiency_to.is_some_and(|l| l > MAX_LEVEL))
        {
            return Err(ConfigError::Queue {
                queue: q(),
                problem: "relax_proficiency_to must be 0-5",
            });
        }
        if let Some(overflow) = &self.overflow {
            if overflow.max_wait_secs == Some(0) {
                return Err(ConfigError::Queue {
                    queue: q(),
                    problem: "max_wait_secs must be at least 1",
                });
            }
            if overflow.target
                == (OverflowTarget::Queue {
                    queue: self.id.clone(),
                })
            {
                return Err(ConfigError::Queue {
                    queue: q(),
                    problem: "a queue cannot overflow to itself",
                });
            }
        }
        Ok(())
    }
}

/// An agent's membership in a queue (the routing profile).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueMembership {
    pub queue: QueueId,
    /// 1 = primary; higher ranks are tried only when no lower rank is eligible, or when a step allows.
    #[serde(default = "default_rank")]
    pub rank: u8,
}

fn default_rank() -> u8 {
    1
}

/// One agent's routing profile. Capacity is one voice call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub id: AgentId,
    #[serde(default)]
    pub skills: BTreeMap<SkillId, Proficiency>,
    #[serde(default)]
    pub queues: Vec<QueueMembership>,
}

impl AgentConfig {
    /// Checks the profile against the known queues.
    pub fn check(&self, known_queue: impl Fn(&QueueId) -> bool) -> Result<(), ConfigError> {
        let mut seen = BTreeSet::new();
        for m in &self.queues {
            if !known_queue(&m.queue) {
                return Err(ConfigError::UnknownQueue {
                    queue: m.queue.clone(),
                    referenced_by: self.id.to_string(),
                });
            }
            if !seen.insert(&m.queue) {
                return Err(ConfigError::Agent {
                    agent: self.id.clone(),
                    problem: "a queue is listed twice",
                });
            }
            if m.rank == 0 {
                return Err(ConfigError::Agent {
                    agent: self.id.clone(),
                    problem: "rank must be at least 1",
                });
            }
        }
        Ok(())
    }
}

/// The whole ACD configuration, e.g. the `[acd]` table of the binary's TOML.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcdConfig {
    #[serde(default)]
    pub queues: Vec<QueueConfig>,
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    /// Seed of the random strategy.
    #[serde(default)]
    pub random_seed: u64,
}

impl AcdConfig {
    /// Checks every queue and agent and the references between them.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut queues = BTreeSet::new();
        for q in &self.queues {
            q.check()?;
            if !queues.insert(&q.id) {
                return Err(ConfigError::Queue {
                    queue: q.id.clone(),
                    problem: "defined twice",
                });
            }
        }
        for q in &self.queues {
            if let Some(OverflowConfig {
                target: OverflowTarget::Queue { queue },
                ..
            }) = &q.overflow
                && !queues.contains(queue)
            {
                return Err(ConfigError::UnknownQueue {
                    queue: queue.clone(),
                    referenced_by: q.id.to_string(),
                });
            }
        }
        let mut agents = BTreeSet::new();
        for a in &self.agents {
            a.check(|q| queues.contains(q))?;
            if !agents.insert(&a.id) {
                return Err(ConfigError::Agent {
                    agent: a.id.clone(),
                    problem: "defined twice",
                });
            }
        }
        Ok(())
    }
}

/// What is wrong with a configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("priority {0} is out of range 0-9")]
    Priority(u8),
    #[error("proficiency {0} is out of range 1-5")]
    Proficiency(u8),
    #[error("reason code {0:?} must be 1-32 letters, digits, '-', '_' or '.'")]
    ReasonCode(String),
    #[error("service level {0:?} must look like 80/20 with a percentage 1-100")]
    ServiceLevel(String),
    #[error("queue {queue}: {problem}")]
    Queue { queue: QueueId, problem: &'static str },
    #[error("agent {agent}: {problem}")]
    Agent { agent: AgentId, problem: &'static str },
    #[error("unknown queue {queue} referenced by {referenced_by}")]
    UnknownQueue { queue: QueueId, referenced_by: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
random_seed = 7

[[queues]]
id = "support"
strategy = "most-skilled"
service_level = { percent = 90, within_secs = 30 }
service_level_formula = "answered_within_of_offered_excluding_short_abandons"
max_length = 50
wrap_up_secs = 30
offer_timeout_secs = 20
priority_aging_secs = 60
overflow = { target = { type = "queue", queue = "sales" }, max_wait_secs = 300 }

[[queues.steps]]
after_secs = 0
max_rank = 1

[[queues.steps]]
after_secs = 30
relax_proficiency_to = 2

[[queues]]
id = "sales"
overflow = { target = { type = "voicemail", mailbox = "sales-vm" }, when_full = false }

[[agents]]
id = "alice"
skills = { spanish = 4, billing = 2 }
queues = [{ queue = "support", rank = 1 }, { queue = "sales", rank = 2 }]
"#;

    #[test]
    fn loads_a_full_example_from_toml() {
        let config: AcdConfig = toml::from_str(EXAMPLE).unwrap();
        config.check().unwrap();
        let support = &config.queues[0];
        assert_eq!(support.strategy, Strategy::MostSkilled);
        assert_eq!(support.service_level.to_string(), "90/30");
        assert_eq!(support.effective_steps().len(), 2);
        assert_eq!(support.steps[1].relaxation(), Relaxation::LowerBoundsTo(2));
        let sales = &config.queues[1];
        assert_eq!(
            sales.service_level,
            ServiceLevelTarget {
                percent: 80,
                within_secs: 20
            }
        );
        assert_eq!(sales.offer_timeout_secs, 15);
        let overflow = sales.overflow.as_ref().unwrap();
        assert!(overflow.when_no_agents && !overflow.when_full);
        assert_eq!(
            config.agents[0].skills[&SkillId::new("spanish").unwrap()].get(),
            4
        );
        assert_eq!(config.agents[0].queues[1].rank, 2);
    }

    #[test]
    fn rejects_bad_values_with_reasons() {
        let bad_prof = EXAMPLE.replace("spanish = 4", "spanish = 6");
        assert!(
            toml::from_str::<AcdConfig>(&bad_prof)
                .unwrap_err()
                .to_string()
                .contains("proficiency 6")
        );
        let bad_strategy = EXAMPLE.replace("most-skilled", "best");
        assert!(toml::from_str::<AcdConfig>(&bad_strategy).is_err());
        let unknown = EXAMPLE.replace("queue = \"sales\" }, max_wait", "queue = \"nowhere\" }, max_wait");
        let config: AcdConfig = toml::from_str(&unknown).unwrap();
        assert_eq!(
            config.check().unwrap_err().to_string(),
            "unknown queue nowhere referenced by support"
        );
        let steps = EXAMPLE.replace("after_secs = 30", "after_secs = 0");
        let config: AcdConfig = toml::from_str(&steps).unwrap();
        assert!(config.check().unwrap_err().to_string().contains("increasing"));
    }

    #[test]
    fn small_value_types_parse_at_the_edge() {
        assert!(Priority::new(9).is_ok() && Priority::new(10).is_err());
        assert!(Proficiency::new(0).is_err() && Proficiency::new(5).is_ok());
        assert!(ReasonCode::new("lunch").is_ok() && ReasonCode::new("two words").is_err());
        assert!(ReasonCode::new("").is_err());
        assert_eq!(
            "80/20".parse::<ServiceLevelTarget>().unwrap(),
            ServiceLevelTarget::default()
        );
        assert!("0/20".parse::<ServiceLevelTarget>().is_err() && "80".parse::<ServiceLevelTarget>().is_err());
    }
}
