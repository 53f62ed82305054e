//! Plain types of the CRM: customer tiers and their queue priority, user roles, and the records the
//! repositories return. Personal fields are [`Pii`].

use domain::{AgentId, CustomerId, InteractionId, Pii, QueueId};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A value stored as text that is not one of the known names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}; expected one of {expected}")]
pub struct UnknownName {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static str,
}

/// The customer pyramid: what a customer is worth to the business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Key,
    Major,
    #[default]
    Normal,
    Small,
}

impl Tier {
    /// Every tier, most valuable first.
    pub const ALL: [Tier; 4] = [Tier::Key, Tier::Major, Tier::Normal, Tier::Small];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Key => "key",
            Tier::Major => "major",
            Tier::Normal => "normal",
            Tier::Small => "small",
        }
    }

    /// The queue priority a call from this tier gets (the `priority` of `Enqueued`): higher is served
    /// first. Gaps leave room for IVR-driven boosts between tiers.
    pub fn queue_priority(self) -> u8 {
        match self {
            Tier::Key => 30,
            Tier::Major => 20,
            Tier::Normal => 10,
            Tier::Small => 5,
        }
    }
}

impl FromStr for Tier {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownName {
                what: "tier",
                value: s.to_string(),
                expected: "key, major, normal, small",
            })
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a user of the platform may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Agent,
    Supervisor,
    Admin,
}

impl Role {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Supervisor => "supervisor",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        [Role::Agent, Role::Supervisor, Role::Admin]
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownName {
                what: "role",
                value: s.to_string(),
                expected: "agent, supervisor, admin",
            })
    }
}

/// A user (agent, supervisor or admin). The password hash is computed by the caller; the store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct User {
    pub id: AgentId,
    pub display_name: Pii<String>,
    pub role: Role,
    pub password_hash: Option<String>,
    pub active: bool,
}

/// A customer record as the screen pop shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub id: CustomerId,
    pub account_number: Option<String>,
    pub name: Pii<String>,
    /// E.164 numbers.
    pub phones: Vec<Pii<String>>,
    pub email: Option<Pii<String>>,
    pub tier: Tier,
    /// The agent who owns the relationship: the preferred agent for this customer's calls.
    pub account_manager: Option<AgentId>,
    pub lifetime_value_cents: i64,
    pub notes: Option<Pii<String>>,
}

/// One past interaction, short, for a screen pop or a customer's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteractionSummary {
    pub id: InteractionId,
    pub channel: Option<String>,
    pub direction: Option<String>,
    pub arrived_at_ms: Option<i64>,
    pub ended_at_ms: Option<i64>,
    pub queue: Option<QueueId>,
    pub agent: Option<AgentId>,
    pub wait_ms: Option<i64>,
    pub talk_ms: Option<i64>,
    pub abandoned: bool,
    pub disposition: Option<String>,
    pub notes: Option<Pii<String>>,
    pub survey_score: Option<i64>,
}

/// What the IVR and the agent's screen pop get for a caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerCard {
    pub customer: Customer,
    /// Newest first.
    pub recent: Vec<InteractionSummary>,
    /// Priority for the queue, from the tier.
    pub queue_priority: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_parse_and_rank() {
        assert_eq!("KEY".parse::<Tier>(), Ok(Tier::Key));
        assert_eq!(" small ".parse::<Tier>(), Ok(Tier::Small));
        assert!("gold".parse::<Tier>().is_err());
        let priorities: Vec<u8> = Tier::ALL.iter().map(|t| t.queue_priority()).collect();
        assert!(
            priorities.windows(2).all(|w| w[0] > w[1]),
            "more valuable tiers are served first"
        );
        assert_eq!("Admin".parse::<Role>(), Ok(Role::Admin));
        assert!("root".parse::<Role>().is_err());
    }
}
