//! The CTI protocol's frames (version [`PROTOCOL_VERSION`]): JSON text messages on `/ws/agent` and
//! `/ws/supervisor`, each an object with a `type`. Requests may carry an `id`, echoed in the `ack` or
//! `error` that answers them. `docs/cti-protocol.md` documents every frame.
//!
//! Parsing is two-step so a bad frame is always answered: first the envelope (`type`, `id`), then the
//! body; an unknown type, a missing field or a bad value is an `error` frame naming the problem.

use acd::AgentState;
use call_control::desk::{
    AgentMedia, CallPhase, CallView, CallbackRequest, DialNumber, ScreenPop, SuperviseMode, TransferTarget,
};
use domain::{AgentId, CallId, CampaignId, LeadId, Timestamp};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The protocol version the server speaks, sent in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest frame a client may send; a larger one is answered with a `too_large` error frame and the
/// socket stays open.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Largest message the WebSocket transport reads at all: above the protocol's limit, so a frame a
/// little too large is read and answered `too_large`; beyond this the connection is closed (1009),
/// which bounds the memory one socket can make the server hold.
pub const TRANSPORT_MAX_BYTES: usize = 4 * MAX_FRAME_BYTES;

/// Stable error codes of `error` frames.
pub mod codes {
    /// The frame is not JSON, has no known `type`, or a field is missing or invalid.
    pub const BAD_REQUEST: &str = "bad_request";
    /// The frame is larger than the protocol allows.
    pub const TOO_LARGE: &str = "too_large";
    /// The agent state change is not allowed now (the message says why).
    pub const ILLEGAL_TRANSITION: &str = "illegal_transition";
    /// The role of the session does not allow this.
    pub const FORBIDDEN: &str = "forbidden";
    /// The agent or queue named does not exist.
    pub const UNKNOWN_AGENT: &str = "unknown_agent";
    /// Something on the server side failed; nothing changed.
    pub const UNAVAILABLE: &str = "unavailable";
    /// The agent cannot take a call now (no SIP phone registered and the browser softphone off), so
    /// they cannot be made available.
    pub const NOT_REACHABLE: &str = "not_reachable";
}

/// The envelope every client frame has.
#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    id: Option<serde_json::Value>,
}

/// A client frame that could not be understood.
#[derive(Debug, Clone, PartialEq)]
pub struct BadFrame {
    pub id: Option<serde_json::Value>,
    pub message: String,
}

/// What an agent's desktop asks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AgentRequest {
    /// Log in to the ACD (logged out -> available).
    Login {
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    Logout {
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    Ready {
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
    NotReady {
        #[serde(default)]
        id: Option<serde_json::Value>,
        reason: String,
    },
    /// More time for after-call work, up to the queue's longest wrap-up.
    ExtendWrapUp {
        #[serde(default)]
        id: Option<serde_json::Value>,
        secs: u32,
    },
    Accept {
        #[serde(default)]
        id: Option<serde_json::Value>,
        call: CallId,
        /// The softphone's SDP offer (browser media only).
        #[serde(default)]
        sdp: Option<String>,
    },
    Reject {
        #[serde(default)]
        id: Option<serde_json::Value>,
        call: CallId,
    },
    Hangup {
        #[serde(default)]
        id: Option<serde_json::Value>,
        call: CallId,
    },
    Hold {
        #[serde(default)]
        id: Option<serde_json::Value>,
        call: CallId,
    },
    Unhold {
        #[serde(default)]
        id: Option<serde_json::Value>,
        call: CallId,
    },
    Transfer {
        #[serde(default)]
        id: Option<serde_json::Value>,
        call: CallId,
        to: TransferTarget,
    },
    /// Consultative transfer: the caller holds while the agent talks to `to` (an agent or a number).
    Consult {
        #[serde(default)]
        id: Option<serde_json::Value>,
        call: CallId,
        to: TransferTarget,
    },
    /// Hand the caller to the consulted party.
    ConsultComplete {
        #[serde(default)]
        id: Option<serde_json::Value>,
        call: CallId,
    },
    /// Back to the caller; the consulted party is hung up.
    ConsultCancel {
        #[serde(default)]
        id: Option<serde_json::Value>,
        call: CallId,
    },
    /// The caller stops (`muted: true`) or starts again hearing the agent.
    Mute {
        #[serde(default)]
        id: Option<serde_json::Value>,
        call: CallId,
        muted: bool,
    },
    /// Place a call to a number (click-to-dial); the browser softphone sends its SDP offer.
    Dial {
        #[serde(default)]
        id: Option<serde_json::Value>,
        number: DialNumber,
        #[serde(default)]
        sdp: Option<String>,
    },
    WrapUp {
        #[serde(default)]
        id: Option<serde_json::Value>,
        call: CallId,
        disposition: String,
        #[serde(default)]
        notes: String,
        /// Campaign calls: the person asked not to be called again (also the disposition `dnc`).
        #[serde(default)]
        do_not_call: bool,
        /// Campaign calls: call the lead back at this time (personally, if asked).
        #[serde(default)]
        callback: Option<CallbackRequest>,
    },
    /// Preview campaigns: dial the lead shown (the browser softphone sends its SDP offer).
    PreviewDial {
        #[serde(default)]
        id: Option<serde_json::Value>,
        campaign: CampaignId,
        lead: LeadId,
        #[serde(default)]
        sdp: Option<String>,
    },
    /// Preview campaigns: not this lead now; the next one comes.
    PreviewSkip {
        #[serde(default)]
        id: Option<serde_json::Value>,
        campaign: CampaignId,
        lead: LeadId,
    },
    Ping {
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
}

/// What a supervisor's wallboard asks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SupervisorRequest {
    /// Make an agent ready, or not ready with a reason.
    ForceState {
        #[serde(default)]
        id: Option<serde_json::Value>,
        agent: AgentId,
        state: ForcedState,
        #[serde(default)]
        reason: Option<String>,
    },
    /// Join the call an agent is on: the supervisor's SIP phone rings, or with `sdp` (the browser's
    /// offer) the answer comes back in `monitor_answer`.
    Monitor {
        #[serde(default)]
        id: Option<serde_json::Value>,
        agent: AgentId,
        mode: SuperviseMode,
        #[serde(default)]
        sdp: Option<String>,
    },
    /// Switch between listen, whisper and barge.
    MonitorMode {
        #[serde(default)]
        id: Option<serde_json::Value>,
        agent: AgentId,
        mode: SuperviseMode,
    },
    /// Leave the agent's call.
    MonitorStop {
        #[serde(default)]
        id: Option<serde_json::Value>,
        agent: AgentId,
    },
    /// Log an agent out of the ACD.
    LogoutAgent {
        #[serde(default)]
        id: Option<serde_json::Value>,
        agent: AgentId,
    },
    Ping {
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
}

/// The states a supervisor may force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForcedState {
    Ready,
    NotReady,
}

/// Longest disposition code and notes accepted.
pub const MAX_DISPOSITION_LEN: usize = 64;
pub const MAX_NOTES_LEN: usize = 4000;

fn parse<T: serde::de::DeserializeOwned>(text: &str, known: &[&str]) -> Result<T, BadFrame> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| BadFrame {
        id: None,
        message: format!("not a JSON object: {e}"),
    })?;
    let envelope: Envelope = serde_json::from_value(value.clone()).map_err(|_| BadFrame {
        id: None,
        message: "a frame is a JSON object with a string \"type\"".into(),
    })?;
    if !known.contains(&envelope.kind.as_str()) {
        return Err(BadFrame {
            id: envelope.id,
            message: format!("unknown type {:?}; known: {}", envelope.kind, known.join(", ")),
        });
    }
    serde_json::from_value(value).map_err(|e| BadFrame {
        id: envelope.id,
        message: format!("{}: {e}", envelope.kind),
    })
}

impl AgentRequest {
    /// Every request type (each is documented in `docs/cti-protocol.md`; a test checks).
    pub const TYPES: [&'static str; 20] = [
        "login",
        "logout",
        "ready",
        "not_ready",
        "extend_wrap_up",
        "accept",
        "reject",
        "hangup",
        "hold",
        "unhold",
        "transfer",
        "dial",
        "mute",
        "consult",
        "consult_complete",
        "consult_cancel",
        "wrap_up",
        "preview_dial",
        "preview_skip",
        "ping",
    ];

    /// Parses one text frame from an agent's desktop.
    pub fn parse(text: &str) -> Result<Self, BadFrame> {
        let request: AgentRequest = parse(text, &Self::TYPES)?;
        if let AgentRequest::WrapUp {
            id,
            disposition,
            notes,
            ..
        } = &request
        {
            let bad = if disposition.trim().is_empty() || disposition.len() > MAX_DISPOSITION_LEN {
                Some(format!("disposition must be 1-{MAX_DISPOSITION_LEN} characters"))
            } else if notes.len() > MAX_NOTES_LEN {
                Some(format!("notes must be at most {MAX_NOTES_LEN} bytes"))
            } else {
                None
            };
            if let Some(message) = bad {
                return Err(BadFrame {
                    id: id.clone(),
                    message,
                });
            }
        }
        Ok(request)
    }

    /// The request id to echo.
    pub fn id(&self) -> Option<serde_json::Value> {
        match self {
            AgentRequest::Login { id }
            | AgentRequest::Logout { id }
            | AgentRequest::Ready { id }
            | AgentRequest::NotReady { id, .. }
            | AgentRequest::ExtendWrapUp { id, .. }
            | AgentRequest::Accept { id, .. }
            | AgentRequest::Reject { id, .. }
            | AgentRequest::Hangup { id, .. }
            | AgentRequest::Hold { id, .. }
            | AgentRequest::Unhold { id, .. }
            | AgentRequest::Transfer { id, .. }
            | AgentRequest::Dial { id, .. }
            | AgentRequest::Mute { id, .. }
            | AgentRequest::Consult { id, .. }
            | AgentRequest::ConsultComplete { id, .. }
            | AgentRequest::ConsultCancel { id, .. }
            | AgentRequest::WrapUp { id, .. }
            | AgentRequest::PreviewDial { id, .. }
            | AgentRequest::PreviewSkip { id, .. }
            | AgentRequest::Ping { id } => id.clone(),
        }
    }
}

impl SupervisorRequest {
    /// Every request type of the wallboard socket.
    pub const TYPES: [&'static str; 6] = [
        "force_state",
        "logout_agent",
        "monitor",
        "monitor_mode",
        "monitor_stop",
        "ping",
    ];

    /// Parses one text frame from a wallboard.
    pub fn parse(text: &str) -> Result<Self, BadFrame> {
        parse(text, &Self::TYPES)
    }

    pub fn id(&self) -> Option<serde_json::Value> {
        match self {
            SupervisorRequest::ForceState { id, .. }
            | SupervisorRequest::LogoutAgent { id, .. }
            | SupervisorRequest::Monitor { id, .. }
            | SupervisorRequest::MonitorMode { id, .. }
            | SupervisorRequest::MonitorStop { id, .. }
            | SupervisorRequest::Ping { id } => id.clone(),
        }
    }
}

/// An agent's state as frames carry it: `{"state": "not_ready", "reason": "break", "since": ms}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StateView {
    #[serde(flatten)]
    pub state: AgentState,
    pub since: Timestamp,
}

/// What the desktop offers the agent to choose from, set in the configuration (`[desk]`):
/// disposition codes (by default, or for a queue or campaign by its id) and not-ready reasons.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DesktopSettings {
    /// Disposition codes when no queue- or campaign-specific list applies.
    pub dispositions: Vec<String>,
    /// Disposition codes of one queue or campaign (by its id).
    pub dispositions_by: std::collections::BTreeMap<String, Vec<String>>,
    /// Reasons an agent may give for not being ready.
    pub not_ready_reasons: Vec<String>,
    /// Staff names by id, so history and account managers show people, not ids.
    pub agent_names: std::collections::BTreeMap<String, String>,
    /// The queues each agent serves (for the desktop's queue strip; not sent).
    #[serde(skip)]
    pub agent_queues: std::collections::BTreeMap<AgentId, Vec<domain::QueueId>>,
}

impl Default for DesktopSettings {
    fn default() -> Self {
        Self {
            dispositions: ["resolved", "follow_up", "sale", "complaint", "wrong_number"]
                .map(String::from)
                .to_vec(),
            dispositions_by: Default::default(),
            not_ready_reasons: ["break", "lunch", "training", "meeting"]
                .map(String::from)
                .to_vec(),
            agent_names: Default::default(),
            agent_queues: Default::default(),
        }
    }
}

/// Whether an offered call could reach the agent: `{"ok": false, "reason": "no_phone"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Reachability {
    pub ok: bool,
    /// Why not: `no_phone` (no SIP phone registered and the browser softphone off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

impl Reachability {
    pub const REACHABLE: Reachability = Reachability {
        ok: true,
        reason: None,
    };
    pub const NO_PHONE: Reachability = Reachability {
        ok: false,
        reason: Some("no_phone"),
    };
}

/// One of the agent's queues on the desktop's strip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStrip {
    pub queue: domain::QueueId,
    /// Callers waiting or ringing an agent.
    pub waiting: u32,
    /// Since when the longest-waiting caller waits (to the second).
    pub oldest_since: Option<Timestamp>,
    pub estimated_wait_ms: Option<u64>,
}

/// Who the desktop belongs to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentInfo {
    pub id: AgentId,
    pub name: String,
    pub role: crm_store::Role,
}

/// What the server sends an agent's desktop.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentFrame {
    /// First frame after connecting: who, in which state, with which calls (after a reload, the
    /// calls still going on).
    Welcome {
        protocol: u32,
        agent: AgentInfo,
        media: AgentMedia,
        state: Option<StateView>,
        calls: Vec<CallView>,
        /// The lead a preview campaign shows the agent, if any.
        preview: Option<PreviewView>,
        /// Disposition codes, not-ready reasons and wrap-up limits, from the configuration.
        settings: Arc<DesktopSettings>,
        /// Whether a call offered now could reach the agent, and if not why.
        reachable: Reachability,
    },
    State(StateView),
    /// Whether the agent can be reached changed (a phone registered or lapsed).
    Reachable(Reachability),
    /// The agent's queues: callers waiting and the oldest wait, sent when they change.
    Queues {
        queues: Vec<QueueStrip>,
    },
    /// Calls the router keeps from this agent for now, after an offer of them to the agent failed,
    /// rang out or was rejected; each with the moment it may be offered again (the page counts
    /// down to it). Sent when the list changes; empty when nothing is held back.
    HeldBack {
        calls: Vec<acd::HeldBack>,
    },
    /// A preview campaign shows a lead: dial it (`preview_dial`) or skip it (`preview_skip`).
    Preview {
        preview: PreviewView,
    },
    /// The preview is gone without the agent's decision.
    PreviewWithdrawn {
        campaign: CampaignId,
        lead: LeadId,
        reason: String,
    },
    Offer {
        pop: Arc<ScreenPop>,
    },
    OfferWithdrawn {
        call: CallId,
        reason: String,
    },
    CallPhase {
        call: CallId,
        phase: CallPhase,
    },
    Released {
        call: CallId,
    },
    MediaAnswer {
        call: CallId,
        sdp: String,
    },
    /// Another desktop of the same agent took over; this socket closes.
    Replaced,
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
        code: String,
        message: String,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
    },
}

/// A previewed lead as the desktop shows it. Agents see the number masked (last two digits);
/// supervisors and admins see it whole.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreviewView {
    pub campaign: CampaignId,
    pub lead: LeadId,
    pub name: Option<String>,
    pub number: String,
    pub number_masked: bool,
    /// The attempt the dial would be.
    pub attempt: u32,
    /// A callback an agent promised.
    pub callback: bool,
    pub customer: Option<crm_store::CustomerCard>,
}

/// A number with all but its last two digits hidden.
pub fn mask_number(number: &str) -> String {
    let digits = number.chars().filter(char::is_ascii_digit).count();
    let mut seen = 0;
    number
        .chars()
        .map(|c| {
            if c.is_ascii_digit() {
                seen += 1;
                if seen + 2 <= digits { '•' } else { c }
            } else {
                c
            }
        })
        .collect()
}

impl PreviewView {
    /// The view of `offer` for a user of `role`.
    pub fn of(offer: &call_control::desk::PreviewOffer, role: crm_store::Role) -> Self {
        let masked = role == crm_store::Role::Agent;
        let show = |n: &str| if masked { mask_number(n) } else { n.to_string() };
        let customer = offer.customer.clone().map(|mut card| {
            for phone in &mut card.customer.phones {
                *phone = domain::Pii::new(show(phone.expose()));
            }
            card
        });
        Self {
            campaign: offer.campaign.clone(),
            lead: offer.lead.clone(),
            name: offer.name.as_ref().map(|n| n.expose().clone()),
            number: show(offer.phone.expose()),
            number_masked: masked,
            attempt: offer.attempt,
            callback: offer.callback,
            customer,
        }
    }
}

/// One agent on the wallboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentRow {
    pub agent: AgentId,
    #[serde(flatten)]
    pub state: StateView,
    pub occupancy: Option<f64>,
    pub handled: u64,
    /// The call the router has tied to the agent (ringing or connected), whichever node holds it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call: Option<CallId>,
    /// On a cluster, the node holding that call (its SIP dialog and media), once known here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Calls kept from the agent for now after a failed, missed or rejected offer, with the moment
    /// each may be offered to them again.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_back: Vec<acd::HeldBack>,
}

/// What the server sends a wallboard.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SupervisorFrame {
    Welcome {
        protocol: u32,
        user: AgentInfo,
    },
    /// The live figures: every queue and every agent.
    Stats {
        at: Timestamp,
        interval_start: Timestamp,
        queues: Vec<acd::QueueKpi>,
        agents: Vec<AgentRow>,
    },
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
    },
    /// The outbound campaigns' live figures (only on nodes that run campaigns).
    Campaigns {
        campaigns: Vec<call_control::CampaignLiveStats>,
    },
    /// The answer to a browser `monitor`: the server's SDP for the supervisor's softphone.
    MonitorAnswer {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
        agent: AgentId,
        sdp: String,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
        code: String,
        message: String,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<serde_json::Value>,
    },
}

impl SupervisorFrame {
    /// The wallboard's view of a KPI snapshot; `node_of` names the node holding a call (on a
    /// cluster).
    pub fn stats(k: &acd::KpiSnapshot, node_of: impl Fn(&CallId) -> Option<String>) -> Self {
        SupervisorFrame::Stats {
            at: k.at,
            interval_start: k.interval_start,
            queues: k.queues.clone(),
            agents: k
                .agents
                .iter()
                .map(|a| AgentRow {
                    agent: a.agent.clone(),
                    state: StateView {
                        state: a.state.clone(),
                        since: a.since,
                    },
                    occupancy: a.occupancy,
                    handled: a.counters.handled,
                    call: a.call.clone(),
                    node: a.call.as_ref().and_then(&node_of),
                    held_back: a.held_back.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn every_agent_request_parses() {
        let frames = [
            r#"{"type":"login"}"#,
            r#"{"type":"logout","id":1}"#,
            r#"{"type":"ready","id":"r1"}"#,
            r#"{"type":"not_ready","reason":"lunch"}"#,
            r#"{"type":"accept","call":"c1","sdp":"v=0"}"#,
            r#"{"type":"reject","call":"c1"}"#,
            r#"{"type":"hangup","call":"c1"}"#,
            r#"{"type":"hold","call":"c1"}"#,
            r#"{"type":"unhold","call":"c1"}"#,
            r#"{"type":"transfer","call":"c1","to":{"queue":"sales"}}"#,
            r#"{"type":"transfer","call":"c1","to":{"agent":"1002"}}"#,
            r#"{"type":"wrap_up","call":"c1","disposition":"resolved","notes":"ok"}"#,
            r#"{"type":"wrap_up","call":"c1","disposition":"dnc","do_not_call":true}"#,
            r#"{"type":"wrap_up","call":"c1","disposition":"follow_up","callback":{"at":1800000000000,"personal":true}}"#,
            r#"{"type":"dial","number":"+4930123456"}"#,
            r#"{"type":"transfer","call":"c1","to":{"number":"0800123"}}"#,
            r#"{"type":"ping","id":7}"#,
            r#"{"type":"preview_dial","campaign":"spring","lead":"l1"}"#,
            r#"{"type":"preview_skip","id":9,"campaign":"spring","lead":"l1"}"#,
        ];
        for f in frames {
            AgentRequest::parse(f).unwrap_or_else(|e| panic!("{f}: {}", e.message));
        }
        assert_eq!(
            AgentRequest::parse(r#"{"type":"ready","id":"r1"}"#).map(|r| r.id()),
            Ok(Some(serde_json::json!("r1")))
        );
    }

    #[test]
    fn bad_frames_say_what_is_wrong_and_keep_the_id() {
        let cases = [
            ("not json", None, "not a JSON object"),
            (r#"[1,2]"#, None, "\"type\""),
            (
                r#"{"type":"dance","id":3}"#,
                Some(serde_json::json!(3)),
                "unknown type",
            ),
            (
                r#"{"type":"not_ready","id":4}"#,
                Some(serde_json::json!(4)),
                "reason",
            ),
            (r#"{"type":"hangup","call":""}"#, None, "hangup"),
            (
                r#"{"type":"wrap_up","id":5,"call":"c1","disposition":" "}"#,
                Some(serde_json::json!(5)),
                "disposition",
            ),
            (
                r#"{"type":"transfer","call":"c1","to":{"planet":"mars"}}"#,
                None,
                "transfer",
            ),
            (r#"{"type":"ready","extra":true}"#, None, "extra"),
            (
                r#"{"type":"wrap_up","id":8,"call":"c1","disposition":"x","callback":{"when":"soon"}}"#,
                Some(serde_json::json!(8)),
                "when",
            ),
            (
                r#"{"type":"dial","id":6,"number":"sip:x@y"}"#,
                Some(serde_json::json!(6)),
                "number",
            ),
        ];
        for (text, id, needle) in cases {
            let e = AgentRequest::parse(text).expect_err(text);
            assert_eq!(e.id, id, "{text}");
            assert!(e.message.contains(needle), "{text}: {}", e.message);
        }
    }

    #[test]
    fn numbers_are_masked_for_agents() {
        assert_eq!(mask_number("+442079000006"), "+••••••••••06");
        assert_eq!(mask_number("12"), "12");
        assert_eq!(mask_number(""), "");
    }

    #[test]
    fn supervisor_requests_parse() {
        let r = SupervisorRequest::parse(
            r#"{"type":"force_state","agent":"1001","state":"not_ready","reason":"meeting"}"#,
        );
        assert!(matches!(
            r,
            Ok(SupervisorRequest::ForceState {
                state: ForcedState::NotReady,
                ..
            })
        ));
        assert!(
            SupervisorRequest::parse(r#"{"type":"force_state","agent":"1001","state":"asleep"}"#).is_err()
        );
    }

    #[test]
    fn state_frames_are_flat() {
        let f = AgentFrame::State(StateView {
            state: AgentState::NotReady {
                reason: acd::ReasonCode::new("break").expect("valid"),
            },
            since: Timestamp::from_millis(42),
        });
        let json = serde_json::to_value(&f).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"type":"state","state":"not_ready","reason":"break","since":42})
        );
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = AgentRequest::parse(&text);
            let _ = SupervisorRequest::parse(&text);
        }

        #[test]
        fn arbitrary_objects_never_panic(kind in "[a-z_]{0,12}", call in ".{0,40}", extra in ".{0,40}") {
            let text = serde_json::json!({"type": kind, "call": call, "reason": extra, "to": {"queue": extra}}).to_string();
            let _ = AgentRequest::parse(&text);
            let _ = SupervisorRequest::parse(&text);
        }
    }
}
