//! The desktop's vocabulary: what an agent (or a supervisor) asks of a call, how it answers, and
//! where a call stands from the agent's side. Plain data shared by the session machine, call control
//! and the agent desk; nothing here does IO.

use domain::{AgentId, Pii, QueueId, Timestamp};
use serde::{Deserialize, Serialize};

/// How an agent takes their calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AgentMedia {
    /// A registered SIP phone rings; the desktop shows the call and controls it.
    #[default]
    Phone,
    /// The browser's WebRTC softphone (SDP offer/answer over the desktop's socket).
    Browser,
}

/// Where a call stands from the agent's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallPhase {
    /// An agent-placed call: the customer's phone is ringing.
    Dialing,
    Offered,
    Connected,
    Held,
    /// The caller holds while the agent talks to a consulted party.
    Consulting,
    /// The call ended; the agent may still save a disposition.
    WrapUp,
}

/// Where a blind transfer sends the caller.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferTarget {
    Queue(QueueId),
    Agent(AgentId),
    /// An outside number, dialled through the outbound trunk.
    Number(DialNumber),
}

/// A number an agent dials: 1-32 characters of digits, `*` and `#`, with an optional leading `+`.
/// Personal data: shown masked in logs.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct DialNumber(Pii<String>);

impl DialNumber {
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl TryFrom<String> for DialNumber {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let digits = s.strip_prefix('+').unwrap_or(&s);
        if digits.is_empty()
            || s.len() > 32
            || !digits.chars().all(|c| c.is_ascii_digit() || c == '*' || c == '#')
        {
            return Err("a number is 1-32 of digits, * and #, with an optional leading +".into());
        }
        Ok(DialNumber(Pii::new(s)))
    }
}

impl From<DialNumber> for String {
    fn from(n: DialNumber) -> String {
        n.0.expose().clone()
    }
}

impl std::fmt::Debug for DialNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DialNumber({:?})", self.0)
    }
}

/// How a supervisor joins an agent's call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SuperviseMode {
    /// Hears caller and agent; nobody hears the supervisor.
    Listen,
    /// Also heard by the agent, never by the caller.
    Whisper,
    /// Three-way.
    Barge,
}

impl SuperviseMode {
    pub fn name(self) -> &'static str {
        match self {
            SuperviseMode::Listen => "listen",
            SuperviseMode::Whisper => "whisper",
            SuperviseMode::Barge => "barge",
        }
    }
}

/// A callback the agent promises on a campaign call: the lead is dialled again at `at` (for
/// `personal`, only when this agent is ready, and offered to them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CallbackRequest {
    pub at: Timestamp,
    #[serde(default)]
    pub personal: bool,
}

/// What a campaign call's wrap-up asks of the campaign besides the disposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CampaignWrapUp {
    /// The called person asked not to be called again: the number joins the do-not-call list and
    /// the lead is closed.
    pub do_not_call: bool,
    pub callback: Option<CallbackRequest>,
}

impl CampaignWrapUp {
    /// Whether it asks anything of a campaign.
    pub fn is_empty(&self) -> bool {
        !self.do_not_call && self.callback.is_none()
    }
}

/// What an agent asks of their call (it serialises: on a cluster it may travel to the node that
/// holds the call).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentCommand {
    /// Take the offered call; for the browser softphone, with its SDP offer.
    Accept {
        sdp: Option<String>,
    },
    Reject,
    Hangup,
    Hold,
    Unhold,
    Transfer(TransferTarget),
    /// After-call work: the outcome and notes, saved on the interaction.
    WrapUp {
        disposition: String,
        notes: Pii<String>,
        /// For campaign calls: do not call again, or call back.
        campaign: CampaignWrapUp,
    },
    /// The caller stops (or starts again) hearing the agent.
    Mute(bool),
    /// A supervisor joins the agent's connected call: their SIP phone rings, or (browser) with their
    /// SDP offer, answered in the reply.
    Monitor {
        supervisor: AgentId,
        mode: SuperviseMode,
        sdp: Option<String>,
    },
    /// The joined supervisor changes mode.
    MonitorMode(SuperviseMode),
    StopMonitor,
    /// Consultative transfer: the caller holds (music) while the agent talks to the target.
    Consult(TransferTarget),
    /// Hand the caller to the consulted party; the agent leaves.
    ConsultComplete,
    /// Hang up on the consulted party and go back to the caller.
    ConsultCancel,
}

impl AgentCommand {
    /// A short name for logs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            AgentCommand::Accept { .. } => "accept",
            AgentCommand::Reject => "reject",
            AgentCommand::Hangup => "hangup",
            AgentCommand::Hold => "hold",
            AgentCommand::Unhold => "unhold",
            AgentCommand::Transfer(_) => "transfer",
            AgentCommand::WrapUp { .. } => "wrap_up",
            AgentCommand::Mute(_) => "mute",
            AgentCommand::Monitor { .. } => "monitor",
            AgentCommand::MonitorMode(_) => "monitor_mode",
            AgentCommand::StopMonitor => "monitor_stop",
            AgentCommand::Consult(_) => "consult",
            AgentCommand::ConsultComplete => "consult_complete",
            AgentCommand::ConsultCancel => "consult_cancel",
        }
    }
}

/// Why a command was not carried out. The code is stable (the CTI protocol sends it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A command's answer: done (with an SDP answer when the command brought a browser's offer), or
/// refused.
pub type CommandResult = Result<Option<String>, Refusal>;

/// What a waiting call hears from the ACD (the router's owner, local or the cluster's leader).
pub use acd::QueueNotice;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_numbers_are_parsed_and_masked() {
        for good in ["+4930123456", "0800", "*21#", "1"] {
            let n = DialNumber::try_from(good.to_string()).expect(good);
            assert_eq!(n.expose(), good);
            assert!(!format!("{n:?}").contains(good), "masked in Debug");
        }
        for bad in ["", "+", "12 34", "sip:evil", "1".repeat(33).as_str(), "+49-30"] {
            assert!(DialNumber::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }
}
