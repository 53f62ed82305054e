//! The one door through which desktops, supervisors and the REST API change an agent's state:
//! log in, log out, ready, not ready with a reason, more time for wrap-up. They name the change; which router input that
//! is, and whether the router runs in this process or on the cluster's leader, stays here.

use crate::acd_handle::AcdHandle;
use acd::{AcdError, Input, ReasonCode};
use domain::AgentId;

/// A change of an agent's state that a person asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentChange {
    Login,
    Logout,
    Ready,
    NotReady(ReasonCode),
    /// More after-call work by this many seconds, up to the queue's longest wrap-up.
    ExtendWrapUp(u32),
}

impl AgentChange {
    /// Whether the change offers the agent calls (log in and ready both do).
    pub fn makes_available(&self) -> bool {
        matches!(self, AgentChange::Login | AgentChange::Ready)
    }

    fn into_input(self, agent: AgentId) -> Input {
        match self {
            AgentChange::Login => Input::AgentLogin { agent },
            AgentChange::Logout => Input::AgentLogout { agent },
            AgentChange::Ready => Input::AgentReady { agent },
            AgentChange::NotReady(reason) => Input::AgentNotReady { agent, reason },
            AgentChange::ExtendWrapUp(secs) => Input::ExtendWrapUp { agent, secs },
        }
    }
}

impl AcdHandle {
    /// Asks the router to change `agent`'s state; an illegal transition (ready while talking, say)
    /// is refused with the reason and changes nothing.
    pub async fn change_agent(&self, agent: &AgentId, change: AgentChange) -> Result<(), AcdError> {
        self.request(change.into_input(agent.clone())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_change_is_the_router_input_of_that_name() {
        let agent = AgentId::new("1001").expect("valid id");
        let reason = ReasonCode::new("break").expect("valid reason");
        assert_eq!(
            AgentChange::NotReady(reason.clone()).into_input(agent.clone()),
            Input::AgentNotReady {
                agent: agent.clone(),
                reason
            }
        );
        assert_eq!(
            AgentChange::Login.into_input(agent.clone()),
            Input::AgentLogin { agent: agent.clone() }
        );
        assert!(AgentChange::Ready.makes_available() && !AgentChange::Logout.makes_available());
    }
}
