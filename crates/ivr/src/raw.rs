//! The TOML shape of a flow file, as serde reads it, with source spans kept for error messages.
//! Nodes are one flat table type (not a serde-tagged enum) so that spans survive deserialisation; the
//! compiler then checks that each node only uses the fields of its type.

use std::collections::BTreeMap;
use toml::Spanned;

/// A whole flow file.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub flow: Spanned<RawFlow>,
    #[serde(default)]
    pub schedules: BTreeMap<String, Spanned<RawSchedule>>,
    #[serde(default)]
    pub nodes: BTreeMap<String, Spanned<RawNode>>,
}

/// The `[flow]` table.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlow {
    pub start: Spanned<String>,
    pub time_zone: Option<Spanned<String>>,
    pub language: Option<Spanned<String>>,
    pub description: Option<String>,
}

/// A `[schedules.NAME]` table.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSchedule {
    pub days: Spanned<Vec<String>>,
    pub hours: Spanned<Vec<String>>,
    #[serde(default)]
    pub holidays: Option<Spanned<Vec<String>>>,
}

/// One case of a branch node.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCase {
    pub when: Spanned<RawCondition>,
    pub next: Spanned<String>,
}

/// A branch condition: exactly one test (or `all`/`any`/`not`) per table.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCondition {
    pub open: Option<String>,
    pub holiday: Option<String>,
    pub weekday: Option<Vec<String>>,
    pub time_between: Option<Vec<String>>,
    pub var: Option<String>,
    pub equals: Option<toml::Value>,
    pub not_equals: Option<toml::Value>,
    pub one_of: Option<Vec<toml::Value>>,
    pub starts_with: Option<String>,
    pub matches: Option<String>,
    pub less_than: Option<i64>,
    pub greater_than: Option<i64>,
    pub set: Option<bool>,
    pub queue: Option<String>,
    pub agents_available_at_least: Option<i64>,
    pub wait_below: Option<String>,
    pub waiting_at_most: Option<i64>,
    pub all: Option<Vec<RawCondition>>,
    pub any: Option<Vec<RawCondition>>,
    pub not: Option<Box<RawCondition>>,
}

/// Declares the flat node table and a list of which fields a node sets, so the compiler can reject
/// fields that do not belong to the node's type.
macro_rules! raw_node {
    ($($field:ident : $ty:ty),* $(,)?) => {
        /// A `[nodes.NAME]` table; `type` says which of the other fields apply.
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct RawNode {
            #[serde(rename = "type")]
            pub kind: Spanned<String>,
            $(pub $field: Option<$ty>,)*
        }

        impl RawNode {
            /// Names of the fields present in the table (besides `type`).
            pub fn present_fields(&self) -> Vec<&'static str> {
                let mut out = Vec::new();
                $(if self.$field.is_some() { out.push(stringify!($field)); })*
                out
            }
        }
    };
}

raw_node! {
    prompts: Spanned<Vec<String>>,
    barge_in: bool,
    next: Spanned<String>,
    choices: BTreeMap<String, Spanned<String>>,
    timeout: Spanned<String>,
    retries: Spanned<i64>,
    invalid_prompts: Spanned<Vec<String>>,
    timeout_prompts: Spanned<Vec<String>>,
    invalid: Spanned<String>,
    exhausted: Spanned<String>,
    into: Spanned<String>,
    min_digits: Spanned<i64>,
    max_digits: Spanned<i64>,
    terminator: Spanned<String>,
    inter_digit_timeout: Spanned<String>,
    pattern: Spanned<String>,
    sensitive: bool,
    by: Spanned<String>,
    not_found: Spanned<String>,
    error: Spanned<String>,
    url: Spanned<String>,
    send: Spanned<Vec<String>>,
    include_sensitive: bool,
    sets: Spanned<Vec<String>>,
    cases: Vec<RawCase>,
    default: Spanned<String>,
    vars: BTreeMap<String, Spanned<toml::Value>>,
    language: Spanned<String>,
    queue: Spanned<String>,
    priority: Spanned<toml::Value>,
    skills: Spanned<String>,
    preferred_agent: Spanned<String>,
    announce_position: bool,
    announce_wait: bool,
    announce_every: Spanned<String>,
    offer_after: Spanned<String>,
    offer_prompts: Spanned<Vec<String>>,
    exit_key: Spanned<String>,
    on_exit: Spanned<String>,
    after_call: Spanned<String>,
    on_failed: Spanned<String>,
    accept_key: Spanned<String>,
    confirm_prompts: Spanned<Vec<String>>,
    decline: Spanned<String>,
    mailbox: Spanned<String>,
    max_length: Spanned<String>,
    beep: bool,
    to: Spanned<String>,
    flow: Spanned<String>,
    node: Spanned<String>,
    reason: Spanned<String>,
}

/// The fields each node type accepts.
pub fn allowed_fields(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "play" => &["prompts", "barge_in", "next"],
        "menu" => &[
            "prompts",
            "barge_in",
            "choices",
            "timeout",
            "retries",
            "invalid_prompts",
            "timeout_prompts",
            "invalid",
            "exhausted",
        ],
        "collect" => &[
            "prompts",
            "barge_in",
            "into",
            "min_digits",
            "max_digits",
            "terminator",
            "timeout",
            "inter_digit_timeout",
            "pattern",
            "retries",
            "invalid_prompts",
            "sensitive",
            "next",
            "exhausted",
        ],
        "lookup" => &["by", "timeout", "next", "not_found", "error"],
        "webhook" => &[
            "url",
            "timeout",
            "send",
            "include_sensitive",
            "sets",
            "next",
            "error",
        ],
        "branch" => &["cases", "default"],
        "set" => &["vars", "language", "next"],
        "enqueue" => &[
            "queue",
            "priority",
            "skills",
            "preferred_agent",
            "announce_position",
            "announce_wait",
            "announce_every",
            "offer_after",
            "offer_prompts",
            "exit_key",
            "on_exit",
            "after_call",
            "on_failed",
        ],
        "callback" => &[
            "prompts",
            "queue",
            "accept_key",
            "timeout",
            "confirm_prompts",
            "decline",
        ],
        "voicemail" => &["prompts", "mailbox", "max_length", "beep"],
        "transfer" => &["prompts", "to"],
        "survey" => &["prompts", "timeout", "retries", "invalid_prompts", "next"],
        "goto" => &["flow", "node"],
        "hangup" => &["prompts", "reason"],
        _ => return None,
    })
}

/// Whether a node of this type waits for something (audio, the caller, an agent) or ends the call;
/// `branch`, `set`, `goto`, `lookup` and `webhook` pass straight on.
pub fn type_waits(kind: &str) -> bool {
    !matches!(kind, "branch" | "set" | "goto" | "lookup" | "webhook")
}

/// All node type names, for messages.
pub const NODE_TYPES: &str = "play, menu, collect, lookup, webhook, branch, set, enqueue, callback, voicemail, transfer, survey, goto, hangup";
