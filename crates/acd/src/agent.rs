//! The agent state machine. States change only through [`AgentEvent`]s; an event that makes no sense
//! in the current state is refused with an [`IllegalTransition`] and the state stays as it was.
//!
//! ```text
//! LoggedOut --login--> Available <--ready-- NotReady(reason)
//! Available --offer--> Reserved --accept--> OnCall --call ended--> WrapUp(until) --done/timer--> Available
//! Reserved --withdrawn--> Available      Reserved --no answer / reject--> NotReady
//! Available | NotReady | WrapUp --placed--> OnCall   (a call the agent places themselves)
//! ```

use crate::config::ReasonCode;
use domain::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Where an agent is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AgentState {
    LoggedOut,
    /// Ready for a call.
    Available,
    /// Logged in but not taking calls.
    NotReady {
        reason: ReasonCode,
    },
    /// A call is being offered (ringing).
    Reserved,
    /// Talking or on hold.
    OnCall,
    /// After-call work, ending at `until` unless the agent finishes earlier.
    WrapUp {
        until: Timestamp,
    },
}

/// The state without its data, for counting and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgentStateKind {
    LoggedOut,
    Available,
    NotReady,
    Reserved,
    OnCall,
    WrapUp,
}

impl AgentStateKind {
    /// Every kind, in display order.
    pub const ALL: [AgentStateKind; 6] = [
        AgentStateKind::LoggedOut,
        AgentStateKind::Available,
        AgentStateKind::NotReady,
        AgentStateKind::Reserved,
        AgentStateKind::OnCall,
        AgentStateKind::WrapUp,
    ];

    /// A short stable name.
    pub fn name(self) -> &'static str {
        match self {
            AgentStateKind::LoggedOut => "logged_out",
            AgentStateKind::Available => "available",
            AgentStateKind::NotReady => "not_ready",
            AgentStateKind::Reserved => "reserved",
            AgentStateKind::OnCall => "on_call",
            AgentStateKind::WrapUp => "wrap_up",
        }
    }
}

impl AgentState {
    /// The state without its data.
    pub fn kind(&self) -> AgentStateKind {
        match self {
            AgentState::LoggedOut => AgentStateKind::LoggedOut,
            AgentState::Available => AgentStateKind::Available,
            AgentState::NotReady { .. } => AgentStateKind::NotReady,
            AgentState::Reserved => AgentStateKind::Reserved,
            AgentState::OnCall => AgentStateKind::OnCall,
            AgentState::WrapUp { .. } => AgentStateKind::WrapUp,
        }
    }

    /// Logged in, whatever the activity.
    pub fn is_logged_in(&self) -> bool {
        !matches!(self, AgentState::LoggedOut)
    }

    /// The state after `event`, or why the event is not allowed now.
    pub fn apply(&self, event: &AgentEvent) -> Result<AgentState, IllegalTransition> {
        use AgentEvent as E;
        use AgentState as S;
        let next = match (self, event) {
            (S::LoggedOut, E::Login) => S::Available,
            (S::NotReady { .. } | S::WrapUp { .. }, E::Ready) => S::Available,
            (S::Available | S::NotReady { .. } | S::WrapUp { .. }, E::NotReady(reason)) => S::NotReady {
                reason: reason.clone(),
            },
            (S::Available | S::NotReady { .. } | S::WrapUp { .. } | S::Reserved, E::Logout) => S::LoggedOut,
            (S::Available, E::Offer) => S::Reserved,
            (S::Reserved, E::Accept) => S::OnCall,
            (S::Available | S::NotReady { .. } | S::WrapUp { .. }, E::Placed) => S::OnCall,
            (S::Reserved, E::OfferWithdrawn) => S::Available,
            (S::Reserved, E::OfferFailed(reason)) => S::NotReady {
                reason: reason.clone(),
            },
            (
                S::OnCall,
                E::CallEnded {
                    wrap_up_until: Some(until),
                },
            ) => S::WrapUp { until: *until },
            (S::OnCall, E::CallEnded { wrap_up_until: None }) => S::Available,
            _ => {
                return Err(IllegalTransition {
                    from: self.kind(),
                    event: event.name(),
                    why: why(self, event),
                });
            }
        };
        Ok(next)
    }
}

fn why(state: &AgentState, event: &AgentEvent) -> &'static str {
    use AgentEvent as E;
    use AgentState as S;
    match (state, event) {
        (S::LoggedOut, _) => "the agent is logged out",
        (_, E::Login) => "the agent is already logged in",
        (S::OnCall, E::Logout | E::NotReady(_) | E::Ready) => "the agent is on a call",
        (S::Reserved, E::NotReady(_) | E::Ready) => "a call is being offered to the agent",
        (S::Available, E::Ready) => "the agent is already available",
        (_, E::Offer) => "only an available agent can be offered a call",
        (_, E::Placed) => "the agent is on a call or being offered one",
        (_, E::Accept | E::OfferWithdrawn | E::OfferFailed(_)) => "no call is being offered to the agent",
        (_, E::CallEnded { .. }) => "the agent is not on a call",
        _ => "not allowed in this state",
    }
}

impl fmt::Display for AgentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentState::NotReady { reason } => write!(f, "not_ready({reason})"),
            AgentState::WrapUp { until } => write!(f, "wrap_up(until {until})"),
            other => f.write_str(other.kind().name()),
        }
    }
}

/// Something that moves an agent between states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    Login,
    Logout,
    Ready,
    NotReady(ReasonCode),
    /// The router offers a call.
    Offer,
    /// The agent answered the offered call.
    Accept,
    /// The offer ended without fault of the agent (another agent answered, the caller hung up) or the
    /// agent rejected it in a queue that keeps rejecting agents available.
    OfferWithdrawn,
    /// The offer rang out or was rejected; the agent becomes NotReady with this reason.
    OfferFailed(ReasonCode),
    /// The agent placed a call themselves (click-to-dial, a preview lead) and is on it.
    Placed,
    /// The call ended; after-call work until the given time, or none.
    CallEnded {
        wrap_up_until: Option<Timestamp>,
    },
}

impl AgentEvent {
    /// A short stable name.
    pub fn name(&self) -> &'static str {
        match self {
            AgentEvent::Login => "login",
            AgentEvent::Logout => "logout",
            AgentEvent::Ready => "ready",
            AgentEvent::NotReady(_) => "not_ready",
            AgentEvent::Offer => "offer",
            AgentEvent::Accept => "accept",
            AgentEvent::OfferWithdrawn => "offer_withdrawn",
            AgentEvent::OfferFailed(_) => "offer_failed",
            AgentEvent::Placed => "placed",
            AgentEvent::CallEnded { .. } => "call_ended",
        }
    }
}

/// An event refused in the agent's current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{event} is not allowed while {}: {why}", from.name())]
pub struct IllegalTransition {
    pub from: AgentStateKind,
    pub event: &'static str,
    pub why: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> Vec<AgentEvent> {
        vec![
            AgentEvent::Login,
            AgentEvent::Logout,
            AgentEvent::Ready,
            AgentEvent::NotReady(ReasonCode::new("lunch").unwrap()),
            AgentEvent::Offer,
            AgentEvent::Accept,
            AgentEvent::OfferWithdrawn,
            AgentEvent::OfferFailed(ReasonCode::no_answer()),
            AgentEvent::Placed,
            AgentEvent::CallEnded {
                wrap_up_until: Some(Timestamp::from_secs(5)),
            },
            AgentEvent::CallEnded { wrap_up_until: None },
        ]
    }

    fn states() -> Vec<AgentState> {
        vec![
            AgentState::LoggedOut,
            AgentState::Available,
            AgentState::NotReady {
                reason: ReasonCode::new("break").unwrap(),
            },
            AgentState::Reserved,
            AgentState::OnCall,
            AgentState::WrapUp {
                until: Timestamp::from_secs(9),
            },
        ]
    }

    #[test]
    fn transition_table_is_exactly_the_documented_one() {
        let mut table = String::new();
        for s in states() {
            let allowed: Vec<String> = events()
                .iter()
                .filter_map(|e| s.apply(e).ok().map(|n| format!("{}->{n}", e.name())))
                .collect();
            table.push_str(&format!("{}: {}\n", s.kind().name(), allowed.join(" ")));
        }
        assert_eq!(
            table,
            "logged_out: login->available\n\
             available: logout->logged_out not_ready->not_ready(lunch) offer->reserved placed->on_call\n\
             not_ready: logout->logged_out ready->available not_ready->not_ready(lunch) placed->on_call\n\
             reserved: logout->logged_out accept->on_call offer_withdrawn->available offer_failed->not_ready(no-answer)\n\
             on_call: call_ended->wrap_up(until 5000ms) call_ended->available\n\
             wrap_up: logout->logged_out ready->available not_ready->not_ready(lunch) placed->on_call\n"
        );
    }

    #[test]
    fn refusals_say_why() {
        let err = AgentState::OnCall.apply(&AgentEvent::Logout).unwrap_err();
        assert_eq!(
            err.to_string(),
            "logout is not allowed while on_call: the agent is on a call"
        );
        let err = AgentState::LoggedOut.apply(&AgentEvent::Ready).unwrap_err();
        assert_eq!(
            err.to_string(),
            "ready is not allowed while logged_out: the agent is logged out"
        );
    }
}
