//! The compiled script model: what the loader produces from TOML once it has checked everything.
//! Every name in here has been resolved (targets exist, prompts exist and play, patterns compile), so
//! the interpreter never has to handle a malformed script.

use crate::schedule::Schedule;
use domain::QueueId;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A complete, validated set of flows with their prompts. Immutable; shared by `Arc`, so a reload builds a
/// new set and swaps the pointer while calls in progress keep the version they started with.
#[derive(Debug)]
pub struct FlowSet {
    pub(crate) dir: PathBuf,
    pub(crate) flows: BTreeMap<String, Flow>,
    pub(crate) prompts: BTreeMap<String, Prompt>,
    /// Prompts recorded in another language, by (language, name); fall back to `prompts`.
    pub(crate) localized: BTreeMap<(String, String), Prompt>,
    pub(crate) version: u64,
}

impl FlowSet {
    /// The directory the set was loaded from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// A flow by name (its file name without `.toml`).
    pub fn flow(&self, name: &str) -> Option<&Flow> {
        self.flows.get(name)
    }
    /// All flow names, sorted.
    pub fn flow_names(&self) -> impl Iterator<Item = &str> {
        self.flows.keys().map(String::as_str)
    }
    /// A default-language prompt by name.
    pub fn prompt(&self, name: &str) -> Option<&Prompt> {
        self.prompts.get(name)
    }
    /// The prompt to play for `name` in `language`, falling back to the default recording.
    pub fn prompt_in(&self, name: &str, language: &str) -> Option<&Prompt> {
        self.localized
            .get(&(language.to_string(), name.to_string()))
            .or_else(|| self.prompts.get(name))
    }
    /// A one-line description for `ivr check`: flows, nodes and prompts.
    pub fn summary(&self) -> String {
        let nodes: usize = self.flows.values().map(|f| f.nodes.len()).sum();
        let names: Vec<&str> = self.flow_names().collect();
        format!(
            "{} flows ({}), {nodes} nodes, {} prompts",
            self.flows.len(),
            names.join(", "),
            self.prompts.len() + self.localized.len()
        )
    }
    /// A fingerprint of the sources (flows and prompt headers); a session restored from saved state
    /// checks it to know whether it still runs on the same version.
    pub fn version(&self) -> u64 {
        self.version
    }
}

/// One prompt file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub name: String,
    pub path: PathBuf,
    pub duration: Duration,
}

/// One flow: one TOML file.
#[derive(Debug)]
pub struct Flow {
    pub name: String,
    /// File name, as shown in errors.
    pub file: String,
    pub start: String,
    pub time_zone: jiff::tz::TimeZone,
    pub time_zone_name: String,
    /// Language a call starts in unless the flow sets another.
    pub language: String,
    pub schedules: BTreeMap<String, Schedule>,
    pub nodes: BTreeMap<String, Node>,
}

/// A node of a flow.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    /// Line of the node's table header in its file.
    pub line: u32,
    pub kind: NodeKind,
}

/// What a node does. Targets are names of nodes of the same flow; `goto` leaves the flow.
#[derive(Debug)]
pub enum NodeKind {
    Play(PlayNode),
    Menu(MenuNode),
    Collect(CollectNode),
    Lookup(LookupNode),
    Webhook(WebhookNode),
    Branch(BranchNode),
    Set(SetNode),
    Enqueue(EnqueueNode),
    Callback(CallbackNode),
    Voicemail(VoicemailNode),
    Transfer(TransferNode),
    Survey(SurveyNode),
    Goto(GotoNode),
    Hangup(HangupNode),
}

impl NodeKind {
    /// The `type` name used in scripts.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Play(_) => "play",
            Self::Menu(_) => "menu",
            Self::Collect(_) => "collect",
            Self::Lookup(_) => "lookup",
            Self::Webhook(_) => "webhook",
            Self::Branch(_) => "branch",
            Self::Set(_) => "set",
            Self::Enqueue(_) => "enqueue",
            Self::Callback(_) => "callback",
            Self::Voicemail(_) => "voicemail",
            Self::Transfer(_) => "transfer",
            Self::Survey(_) => "survey",
            Self::Goto(_) => "goto",
            Self::Hangup(_) => "hangup",
        }
    }

    /// Whether entering this node makes the call wait for something (audio, the caller, an agent) or
    /// ends it. A cycle through nodes that are all instant would spin forever: the validator forbids it.
    pub fn waits(&self) -> bool {
        crate::raw::type_waits(self.type_name())
    }
}

/// One item of a prompt list: a recorded prompt, or a variable read out as a number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlayItem {
    Prompt(String),
    Number(String),
}

/// Plays prompts, then goes on.
#[derive(Debug)]
pub struct PlayNode {
    pub prompts: Vec<PlayItem>,
    pub barge_in: bool,
    pub next: String,
}

/// A keypad menu.
#[derive(Debug)]
pub struct MenuNode {
    pub prompts: Vec<PlayItem>,
    pub barge_in: bool,
    pub choices: BTreeMap<char, String>,
    pub timeout: Duration,
    /// How many more tries the caller gets after a wrong key or silence.
    pub retries: u32,
    pub invalid_prompts: Vec<PlayItem>,
    pub timeout_prompts: Vec<PlayItem>,
    /// Where a wrong key goes at once; without it the menu plays `invalid_prompts` and asks again.
    pub invalid: Option<String>,
    pub exhausted: String,
}

/// Collects a digit string into a variable.
#[derive(Debug)]
pub struct CollectNode {
    pub prompts: Vec<PlayItem>,
    pub barge_in: bool,
    pub into: String,
    pub min_digits: usize,
    pub max_digits: usize,
    pub terminator: Option<char>,
    pub timeout: Duration,
    pub inter_digit_timeout: Duration,
    pub pattern: Option<DigitPattern>,
    pub retries: u32,
    pub invalid_prompts: Vec<PlayItem>,
    /// Masked in logs and saved state; recording paused while collecting.
    pub sensitive: bool,
    pub next: String,
    pub exhausted: String,
}

/// A validation pattern for collected digits: a regular expression, anchored at both ends.
#[derive(Debug, Clone)]
pub struct DigitPattern {
    pub source: String,
    pub regex: regex::Regex,
}

impl DigitPattern {
    /// Largest compiled size accepted; a pattern over digits never needs more.
    const SIZE_LIMIT: usize = 64 * 1024;

    /// Compiles `source`, anchored so it must match the whole input.
    pub fn new(source: &str) -> Result<Self, String> {
        let regex = regex::RegexBuilder::new(&format!("^(?:{source})$"))
            .size_limit(Self::SIZE_LIMIT)
            .build()
            .map_err(|e| match e {
                regex::Error::Syntax(_) => "invalid pattern syntax".to_string(),
                regex::Error::CompiledTooBig(_) => "pattern is too large".to_string(),
                _ => "invalid pattern".to_string(),
            })?;
        Ok(Self {
            source: source.to_string(),
            regex,
        })
    }
    /// Whether the whole of `digits` matches.
    pub fn matches(&self, digits: &str) -> bool {
        self.regex.is_match(digits)
    }
}

/// What a CRM lookup searches by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupBy {
    CallerNumber,
    /// An account number held in a variable (usually collected).
    Account(String),
}

/// Looks up the customer in the CRM and sets `customer.*` variables.
#[derive(Debug)]
pub struct LookupNode {
    pub by: LookupBy,
    pub timeout: Duration,
    pub next: String,
    pub not_found: String,
    pub error: String,
}

/// Variables a successful lookup sets.
pub const CUSTOMER_VARIABLES: [&str; 5] = [
    "customer.id",
    "customer.name",
    "customer.tier",
    "customer.account_manager",
    "customer.open_cases",
];

/// POSTs call variables as JSON and sets variables from the JSON reply.
#[derive(Debug)]
pub struct WebhookNode {
    pub url: String,
    pub timeout: Duration,
    /// Variables to send; `None` sends every variable that is not sensitive.
    pub send: Option<Vec<String>>,
    /// Also send sensitive values (e.g. a PIN to verify); off by default.
    pub include_sensitive: bool,
    /// Fields the reply must hold; each sets the variable of the same name.
    pub sets: Vec<String>,
    pub next: String,
    pub error: String,
}

/// Chooses the first case whose condition holds.
#[derive(Debug)]
pub struct BranchNode {
    pub cases: Vec<BranchCase>,
    pub default: String,
}

/// One case of a branch.
#[derive(Debug)]
pub struct BranchCase {
    pub when: Condition,
    pub next: String,
}

/// A branch condition.
#[derive(Debug, Clone)]
pub enum Condition {
    /// The named schedule of the flow is open now (weekday, hours, not a holiday).
    Open(String),
    /// Today is a holiday of the named schedule.
    Holiday(String),
    /// Today is one of these weekdays (in the flow's time zone).
    Weekday(Vec<jiff::civil::Weekday>),
    /// The local time is in `[from, to)`.
    TimeBetween(jiff::civil::Time, jiff::civil::Time),
    /// A test on a variable.
    Var {
        name: String,
        test: VarTest,
    },
    /// At least this many agents of the queue are available.
    AgentsAvailable {
        queue: QueueId,
        at_least: u32,
    },
    /// The queue's estimated wait is below this.
    WaitBelow {
        queue: QueueId,
        below: Duration,
    },
    /// At most this many calls wait in the queue.
    QueueLengthAtMost {
        queue: QueueId,
        at_most: u32,
    },
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
}

impl Condition {
    /// Queues whose state this condition reads.
    pub fn queues(&self, out: &mut Vec<QueueId>) {
        match self {
            Self::AgentsAvailable { queue, .. }
            | Self::WaitBelow { queue, .. }
            | Self::QueueLengthAtMost { queue, .. }
                if !out.contains(queue) =>
            {
                out.push(queue.clone());
            }
            Self::All(list) | Self::Any(list) => list.iter().for_each(|c| c.queues(out)),
            Self::Not(inner) => inner.queues(out),
            _ => {}
        }
    }
}

/// A test on a variable's value. Values compare as text; `less_than` and `greater_than` as integers.
#[derive(Debug, Clone)]
pub enum VarTest {
    Equals(String),
    NotEquals(String),
    OneOf(Vec<String>),
    StartsWith(String),
    Matches(DigitPattern),
    LessThan(i64),
    GreaterThan(i64),
    IsSet(bool),
}

/// A value in a `set` node or a field that may name a variable: `"${name}"` reads one, anything else is literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueExpr {
    Literal(String),
    Var(String),
}

/// Sets variables and the language.
#[derive(Debug)]
pub struct SetNode {
    pub vars: Vec<(String, ValueExpr)>,
    pub language: Option<String>,
    pub next: String,
}

/// Queue priority: fixed, or read from a variable (clamped to 0-255; not a number means 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriorityExpr {
    Fixed(u8),
    Var(String),
}

/// Puts the call in an ACD queue and waits for an agent.
#[derive(Debug)]
pub struct EnqueueNode {
    pub queue: QueueId,
    pub priority: PriorityExpr,
    /// Skill requirements, passed to the ACD as written.
    pub skills: Option<String>,
    pub preferred_agent: Option<ValueExpr>,
    pub announce_position: bool,
    pub announce_wait: bool,
    pub announce_every: Option<Duration>,
    /// After this long in the queue, play `offer_prompts` (e.g. "press 1 for a callback").
    pub offer_after: Option<Duration>,
    pub offer_prompts: Vec<PlayItem>,
    pub exit_key: Option<char>,
    pub on_exit: Option<String>,
    /// Where the caller goes when the agent hangs up first (e.g. a survey); without it the call ends.
    pub after_call: Option<String>,
    /// Where the call goes if the queue refuses it (closed, full).
    pub on_failed: String,
}

/// Prompts used by queue announcements; required when an enqueue node announces.
pub const ANNOUNCEMENT_PROMPTS: [&str; 3] = ["queue-position", "queue-wait", "minutes"];

/// Offers a callback: the caller keeps their place in line and is called back.
#[derive(Debug)]
pub struct CallbackNode {
    pub prompts: Vec<PlayItem>,
    pub queue: QueueId,
    pub accept_key: char,
    pub timeout: Duration,
    pub confirm_prompts: Vec<PlayItem>,
    /// Where the call goes when the caller declines or says nothing.
    pub decline: String,
}

/// Records a voice message.
#[derive(Debug)]
pub struct VoicemailNode {
    pub prompts: Vec<PlayItem>,
    pub mailbox: String,
    pub max_length: Duration,
    pub beep: bool,
}

/// Where a transfer goes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferTarget {
    /// A phone number, `+` and digits.
    Number(String),
    /// A `sip:` or `sips:` URI.
    SipUri(String),
}

/// Transfers the call out of the IVR.
#[derive(Debug)]
pub struct TransferNode {
    pub prompts: Vec<PlayItem>,
    pub to: TransferTarget,
}

/// Post-call rating 1-5.
#[derive(Debug)]
pub struct SurveyNode {
    pub prompts: Vec<PlayItem>,
    pub timeout: Duration,
    pub retries: u32,
    pub invalid_prompts: Vec<PlayItem>,
    pub next: String,
}

/// Variable the survey sets.
pub const SURVEY_VARIABLE: &str = "survey_score";

/// Continues in another flow.
#[derive(Debug)]
pub struct GotoNode {
    pub flow: String,
    /// Node of that flow; its start node when absent.
    pub node: Option<String>,
}

/// Ends the call.
#[derive(Debug)]
pub struct HangupNode {
    pub prompts: Vec<PlayItem>,
    pub reason: String,
}

/// Variables every call has from the start.
pub const BUILTIN_VARIABLES: [&str; 4] = ["caller", "called", "language", "now"];

/// Prompt names for reading out numbers in the default language (English): `num-0`..`num-20`, the
/// tens up to `num-90`, `num-hundred`, `num-thousand`, `num-million`, `num-billion`.
pub fn number_prompt_names() -> Vec<String> {
    crate::numbers::prompt_names("en")
}

/// The prompts that read `n` aloud in English ("one hundred twenty three", "ten thousand"); see
/// [`crate::numbers`] for other languages.
pub fn say_number(n: u64) -> Vec<String> {
    crate::numbers::english(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_read_naturally() {
        assert_eq!(say_number(0), ["num-0"]);
        assert_eq!(say_number(17), ["num-17"]);
        assert_eq!(say_number(42), ["num-40", "num-2"]);
        assert_eq!(say_number(300), ["num-3", "num-hundred"]);
        assert_eq!(say_number(105), ["num-1", "num-hundred", "num-5"]);
        assert_eq!(say_number(2024), ["num-2", "num-thousand", "num-20", "num-4"]);
        assert_eq!(say_number(10_000), ["num-10", "num-thousand"]);
    }

    #[test]
    fn patterns_are_anchored_and_bounded() {
        let p = DigitPattern::new("[0-9]{4}").unwrap();
        assert!(p.matches("1234"));
        assert!(!p.matches("12345"));
        assert!(DigitPattern::new("(").is_err());
        assert!(DigitPattern::new("[0-9]{1000}{1000}").is_err());
    }

    proptest! {
        #[test]
        fn every_number_uses_only_shipped_prompts(n in any::<u64>()) {
            let known = number_prompt_names();
            for name in say_number(n) {
                prop_assert!(known.contains(&name), "{name}");
            }
        }

        #[test]
        fn pattern_compilation_never_panics(source in "\\PC{0,24}") {
            let _ = DigitPattern::new(&source);
        }
    }
}
