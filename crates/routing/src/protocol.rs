//! What travels between the nodes and the leader through the state store, and what the leader keeps
//! there. Everything is JSON, decoded with a size limit, and a payload that does not decode is
//! refused with an error (counted and dropped by the reader), never a panic.
//!
//! ```text
//! node ──InBatch──▶ acd.in (group "router") ──▶ leader ──OutBatch──▶ acd.out.<node> ──▶ node
//!                                                  │ └──EventBatch──▶ acd.events ──▶ every node
//!                                                  └──JournalBatch──▶ acd.journal; RouterSnapshot, KPIs: blobs
//! ```

use acd::{AcdError, AgentStateKind, ConfigError, IllegalTransition, Input, KpiSnapshot};
use domain::{AgentId, CallId, QueueId, Timestamp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::sync::{LazyLock, Mutex};

/// Stream every node appends its inputs to.
pub const INPUT_STREAM: &str = "acd.in";
/// Consumer group the leader reads [`INPUT_STREAM`] through.
pub const ROUTER_GROUP: &str = "router";
/// Stream of the batches the leader applied, since the last snapshot.
pub const JOURNAL_STREAM: &str = "acd.journal";
/// Stream of agent state changes, followed by every node.
pub const EVENTS_STREAM: &str = "acd.events";
/// Lease whose holder is the leader.
pub const LEADER_LEASE: &str = "acd-router";
/// Blob namespace of the router's snapshot and published KPIs.
pub const ROUTER_NAMESPACE: &str = "acd-router";
/// Blob key of the router's snapshot.
pub const SNAPSHOT_KEY: &str = "snapshot";
/// Blob key written by a takeover's confirmation (holder, token, batch): the write whose
/// confirmation by the replicas proves the rebuilt state cannot be lost.
pub const TAKEOVER_KEY: &str = "takeover";
/// Blob key of the cluster-wide KPI snapshot.
pub const KPIS_KEY: &str = "kpis";
/// Topic nudged whenever new KPIs are published.
pub const KPI_TOPIC: &str = "acd.kpis";
/// Blob namespace of the nodes' liveness records (one per node, lapsing unless renewed).
pub const NODES_NAMESPACE: &str = "acd-nodes";

/// Largest payload the leader or a node decodes; anything larger is refused unread.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024 * 1024;

/// The stream the leader writes a node's outputs to.
pub fn out_stream(node: &NodeId) -> String {
    format!("acd.out.{node}")
}

/// The stream of the desk commands other nodes' desktops send to `node` (call-control's desk relay).
pub fn desk_commands_stream(node: &str) -> String {
    format!("desk.cmds.{node}")
}

/// The stream of the answers to the desk commands `node` relayed.
pub fn desk_replies_stream(node: &str) -> String {
    format!("desk.replies.{node}")
}

/// Every stream only `node` reads: the leader deletes them all when the node is lost or has left.
pub fn node_streams(node: &NodeId) -> [String; 3] {
    [
        out_stream(node),
        desk_commands_stream(node.as_str()),
        desk_replies_stream(node.as_str()),
    ]
}

/// Why a payload was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("payload of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("payload does not decode: {0}")]
    Json(#[from] serde_json::Error),
}

/// Decodes a payload of the protocol.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    if payload.len() > MAX_PAYLOAD_BYTES {
        return Err(DecodeError::TooLarge(payload.len()));
    }
    Ok(serde_json::from_slice(payload)?)
}

/// Encodes a payload of the protocol. Our types always encode; a failure would be a bug, reported
/// as an empty object that every reader refuses rather than a panic.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

/// One running node (process): its name and a random suffix picked at start, so a restarted node
/// never inherits the sequence numbers or calls of the process it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeId(String);

/// Longest node id: it becomes part of a stream name.
pub const MAX_NODE_ID_LEN: usize = 100;

/// Why a node name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node id {0:?} must be 1-100 letters, digits, '-', '_' or '.'")]
pub struct BadNodeId(String);

impl NodeId {
    /// Parses a node id.
    pub fn new(s: impl Into<String>) -> Result<Self, BadNodeId> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= MAX_NODE_ID_LEN
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if ok { Ok(NodeId(s)) } else { Err(BadNodeId(s)) }
    }

    /// A fresh id for a process of node `name`: the name and 8 random hex digits.
    pub fn incarnation(name: &str) -> Result<Self, BadNodeId> {
        let name: String = name.chars().take(MAX_NODE_ID_LEN - 9).collect();
        NodeId::new(format!("{name}.{:08x}", rand::random::<u32>()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for NodeId {
    type Error = BadNodeId;
    fn try_from(s: String) -> Result<Self, BadNodeId> {
        NodeId::new(s)
    }
}

impl From<NodeId> for String {
    fn from(n: NodeId) -> String {
        n.0
    }
}

/// What a node asks of the router.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// An input whose refusal nobody waits for. A `CallEnqueued` makes the sender the call's node.
    Input { input: Input },
    /// An input whose outcome the sender waits for ([`Reply::Done`] or [`Reply::Refused`]).
    Request { id: u64, input: Input },
    /// The caller hung up in the queue: answered with where they were ([`Reply::Abandoned`]).
    Abandon { id: u64, call: CallId },
    /// The sender now holds this call (a callback taken over): its notices go there.
    Adopt { call: CallId },
    /// The router's KPIs now ([`Reply::Kpis`]).
    Kpis { id: u64 },
    /// Answered ([`Reply::Done`]) once everything the sender sent before is applied and journaled.
    Flush { id: u64 },
}

/// One command with the sender's sequence number (1, 2, ... per node, no gaps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InItem {
    pub seq: u64,
    pub command: Command,
}

/// One entry of [`INPUT_STREAM`]: consecutive commands of one node. A node that retries an append
/// sends the same entry again; the leader skips sequence numbers it has applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InBatch {
    pub node: NodeId,
    pub items: Vec<InItem>,
}

pub use acd::{Abandonment, AgentStateEvent, QueueNotice};

/// The router's answer to a request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Done,
    Refused { refusal: Refusal },
    Abandoned { abandonment: Option<Abandonment> },
    Kpis { kpis: Box<KpiSnapshot> },
}

/// Something for one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutItem {
    Notice { call: CallId, notice: QueueNotice },
    Reply { id: u64, reply: Reply },
}

/// One entry of a node's out stream: what one batch of the leader has for that node, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutBatch {
    pub batch: u64,
    pub items: Vec<OutItem>,
}

/// One entry of [`EVENTS_STREAM`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    pub batch: u64,
    pub events: Vec<AgentStateEvent>,
}

/// One thing the leader applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Applied {
    /// A node's command.
    Node {
        node: NodeId,
        seq: u64,
        command: Command,
    },
    /// An input of the leader's own: a tick, or configuration applied when it took over.
    Router { input: Input },
    /// The node stopped renewing its liveness record: its calls are let go.
    NodeLost { node: NodeId },
}

/// One entry of [`JOURNAL_STREAM`]: a batch applied at `now`, in order. Replaying the journal after
/// the snapshot's batch rebuilds the router exactly (the router is deterministic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalBatch {
    pub batch: u64,
    pub now: Timestamp,
    pub items: Vec<Applied>,
}

/// A refusal of the router, as it travels (see [`AcdError`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    UnknownCall {
        call: CallId,
    },
    UnknownAgent {
        agent: AgentId,
    },
    UnknownQueue {
        queue: QueueId,
    },
    DuplicateCall {
        call: CallId,
    },
    QueueFull {
        queue: QueueId,
    },
    NotOffered {
        call: CallId,
        agent: AgentId,
    },
    CallConnected {
        call: CallId,
    },
    NotConnected {
        call: CallId,
    },
    NotRinging {
        call: CallId,
    },
    IllegalTransition {
        agent: AgentId,
        from: AgentStateKind,
        event: String,
        why: String,
    },
    Config {
        error: ConfigRefusal,
    },
    Internal {
        what: String,
    },
}

/// A configuration error, as it travels (see [`ConfigError`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConfigRefusal {
    Priority { value: u8 },
    Proficiency { value: u8 },
    ReasonCode { code: String },
    ServiceLevel { text: String },
    Queue { queue: QueueId, problem: String },
    Agent { agent: AgentId, problem: String },
    UnknownQueue { queue: QueueId, referenced_by: String },
}

impl From<&AcdError> for Refusal {
    fn from(e: &AcdError) -> Self {
        match e.clone() {
            AcdError::UnknownCall(call) => Refusal::UnknownCall { call },
            AcdError::UnknownAgent(agent) => Refusal::UnknownAgent { agent },
            AcdError::UnknownQueue(queue) => Refusal::UnknownQueue { queue },
            AcdError::DuplicateCall(call) => Refusal::DuplicateCall { call },
            AcdError::QueueFull(queue) => Refusal::QueueFull { queue },
            AcdError::NotOffered { call, agent } => Refusal::NotOffered { call, agent },
            AcdError::CallConnected(call) => Refusal::CallConnected { call },
            AcdError::NotConnected(call) => Refusal::NotConnected { call },
            AcdError::NotRinging(call) => Refusal::NotRinging { call },
            AcdError::IllegalTransition { agent, source } => Refusal::IllegalTransition {
                agent,
                from: source.from,
                event: source.event.to_string(),
                why: source.why.to_string(),
            },
            AcdError::Config(c) => Refusal::Config {
                error: match c {
                    ConfigError::Priority(value) => ConfigRefusal::Priority { value },
                    ConfigError::Proficiency(value) => ConfigRefusal::Proficiency { value },
                    ConfigError::ReasonCode(code) => ConfigRefusal::ReasonCode { code },
                    ConfigError::ServiceLevel(text) => ConfigRefusal::ServiceLevel { text },
                    ConfigError::Queue { queue, problem } => ConfigRefusal::Queue {
                        queue,
                        problem: problem.to_string(),
                    },
                    ConfigError::Agent { agent, problem } => ConfigRefusal::Agent {
                        agent,
                        problem: problem.to_string(),
                    },
                    ConfigError::UnknownQueue { queue, referenced_by } => {
                        ConfigRefusal::UnknownQueue { queue, referenced_by }
                    }
                },
            },
            AcdError::Internal(what) => Refusal::Internal {
                what: what.to_string(),
            },
        }
    }
}

impl From<Refusal> for AcdError {
    /// The router's error as the node sees it: equal to the one the leader's router returned.
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::UnknownCall { call } => AcdError::UnknownCall(call),
            Refusal::UnknownAgent { agent } => AcdError::UnknownAgent(agent),
            Refusal::UnknownQueue { queue } => AcdError::UnknownQueue(queue),
            Refusal::DuplicateCall { call } => AcdError::DuplicateCall(call),
            Refusal::QueueFull { queue } => AcdError::QueueFull(queue),
            Refusal::NotOffered { call, agent } => AcdError::NotOffered { call, agent },
            Refusal::CallConnected { call } => AcdError::CallConnected(call),
            Refusal::NotConnected { call } => AcdError::NotConnected(call),
            Refusal::NotRinging { call } => AcdError::NotRinging(call),
            Refusal::IllegalTransition {
                agent,
                from,
                event,
                why,
            } => AcdError::IllegalTransition {
                agent,
                source: IllegalTransition {
                    from,
                    event: intern(event),
                    why: intern(why),
                },
            },
            Refusal::Config { error } => AcdError::Config(match error {
                ConfigRefusal::Priority { value } => ConfigError::Priority(value),
                ConfigRefusal::Proficiency { value } => ConfigError::Proficiency(value),
                ConfigRefusal::ReasonCode { code } => ConfigError::ReasonCode(code),
                ConfigRefusal::ServiceLevel { text } => ConfigError::ServiceLevel(text),
                ConfigRefusal::Queue { queue, problem } => ConfigError::Queue {
                    queue,
                    problem: intern(problem),
                },
                ConfigRefusal::Agent { agent, problem } => ConfigError::Agent {
                    agent,
                    problem: intern(problem),
                },
                ConfigRefusal::UnknownQueue { queue, referenced_by } => {
                    ConfigError::UnknownQueue { queue, referenced_by }
                }
            }),
            Refusal::Internal { what } => AcdError::Internal(intern(what)),
        }
    }
}

/// Distinct texts the router's errors carry as `&'static str` (a few dozen in all). Texts beyond
/// this many are replaced by a fixed one, so a misbehaving leader cannot make a node hold more.
const MAX_INTERNED: usize = 512;

static INTERNED: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Mutex::default);

/// The static text equal to `s`: the router's errors hold `&'static str`, and a node rebuilds them
/// from the leader's text. Each distinct text is kept once for the life of the process.
fn intern(s: String) -> &'static str {
    let Ok(mut set) = INTERNED.lock() else {
        return "refused by the router";
    };
    if let Some(&known) = set.get(s.as_str()) {
        return known;
    }
    if set.len() >= MAX_INTERNED || s.len() > 200 {
        return "refused by the router";
    }
    let leaked: &'static str = Box::leak(s.into_boxed_str());
    set.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;
    use acd::{CallRequest, ReasonCode};
    use proptest::prelude::*;

    fn node(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    #[test]
    fn node_ids_are_safe_stream_name_parts() {
        assert!(NodeId::new("node-a.1f2e3d4c").is_ok());
        assert!(NodeId::new("").is_err());
        assert!(NodeId::new("a:b").is_err());
        assert!(NodeId::new("x".repeat(101)).is_err());
        let n = NodeId::incarnation(&"y".repeat(200)).unwrap();
        assert!(n.as_str().len() <= MAX_NODE_ID_LEN);
        assert_ne!(
            NodeId::incarnation("a").unwrap(),
            NodeId::incarnation("a").unwrap()
        );
        assert!(serde_json::from_str::<NodeId>("\"bad name\"").is_err());
    }

    #[test]
    fn every_message_round_trips() {
        let call = CallId::new("c1").unwrap();
        let agent = AgentId::new("alice").unwrap();
        let queue = QueueId::new("support").unwrap();
        let batch = InBatch {
            node: node("n1.00000001"),
            items: vec![
                InItem {
                    seq: 1,
                    command: Command::Input {
                        input: Input::CallEnqueued(CallRequest::new(call.clone(), queue.clone())),
                    },
                },
                InItem {
                    seq: 2,
                    command: Command::Request {
                        id: 7,
                        input: Input::AgentNotReady {
                            agent: agent.clone(),
                            reason: ReasonCode::new("lunch").unwrap(),
                        },
                    },
                },
                InItem {
                    seq: 3,
                    command: Command::Abandon {
                        id: 8,
                        call: call.clone(),
                    },
                },
                InItem {
                    seq: 4,
                    command: Command::Flush { id: 9 },
                },
            ],
        };
        let back: InBatch = decode(&encode(&batch)).unwrap();
        assert_eq!(back, batch);

        let journal = JournalBatch {
            batch: 3,
            now: Timestamp::from_secs(9),
            items: vec![
                Applied::Node {
                    node: node("n1.00000001"),
                    seq: 1,
                    command: Command::Adopt { call: call.clone() },
                },
                Applied::Router { input: Input::Tick },
                Applied::NodeLost {
                    node: node("n2.00000002"),
                },
            ],
        };
        assert_eq!(decode::<JournalBatch>(&encode(&journal)).unwrap(), journal);

        let out = OutBatch {
            batch: 3,
            items: vec![
                OutItem::Notice {
                    call: call.clone(),
                    notice: QueueNotice::Position {
                        position: 2,
                        estimated_wait_secs: Some(30),
                    },
                },
                OutItem::Reply {
                    id: 8,
                    reply: Reply::Abandoned {
                        abandonment: Some(Abandonment {
                            queue,
                            position: 2,
                            waited_ms: 1500,
                        }),
                    },
                },
                OutItem::Reply {
                    id: 9,
                    reply: Reply::Refused {
                        refusal: Refusal::NotOffered { call, agent },
                    },
                },
            ],
        };
        assert_eq!(decode::<OutBatch>(&encode(&out)).unwrap(), out);
    }

    #[test]
    fn refusals_come_back_as_the_routers_own_errors() {
        let agent = AgentId::new("alice").unwrap();
        let errors = vec![
            AcdError::IllegalTransition {
                agent: agent.clone(),
                source: IllegalTransition {
                    from: AgentStateKind::OnCall,
                    event: "ready",
                    why: "the agent is on a call",
                },
            },
            AcdError::UnknownAgent(agent.clone()),
            AcdError::Config(ConfigError::Agent {
                agent,
                problem: "has no queue",
            }),
            AcdError::Internal("broken"),
        ];
        for e in errors {
            let wire: Refusal = decode(&encode(&Refusal::from(&e))).unwrap();
            let back = AcdError::from(wire);
            assert_eq!(back, e);
            assert_eq!(back.to_string(), e.to_string());
        }
        // Interned texts are shared, not leaked again.
        let a = intern("the same text".to_string());
        let b = intern("the same text".to_string());
        assert!(std::ptr::eq(a, b));
    }

    #[test]
    fn oversized_payloads_are_refused_unread() {
        let big = vec![b' '; MAX_PAYLOAD_BYTES + 1];
        assert!(matches!(decode::<InBatch>(&big), Err(DecodeError::TooLarge(_))));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<InBatch>(&bytes);
            let _ = decode::<OutBatch>(&bytes);
            let _ = decode::<JournalBatch>(&bytes);
            let _ = decode::<EventBatch>(&bytes);
        }

        #[test]
        fn decoding_mutated_messages_never_panics(cut in 0usize..400, byte in any::<u8>(), at in 0usize..400) {
            let batch = InBatch {
                node: NodeId::new("n1.00000001").unwrap(),
                items: vec![InItem { seq: 1, command: Command::Kpis { id: 1 } }],
            };
            let mut bytes = encode(&batch);
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] = byte;
                bytes.truncate(cut.max(1));
            }
            let _ = decode::<InBatch>(&bytes);
        }
    }
}
