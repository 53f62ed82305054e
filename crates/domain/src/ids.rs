//! Identifiers. Names (agents, queues, skills) are short, printable, configuration-given strings;
//! calls and interactions are opaque generated strings. All are parsed once, at the edge.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("identifier is empty")]
    Empty,
    #[error("identifier is longer than {max} characters")]
    TooLong { max: usize },
    #[error("identifier has the character {0:?}; use letters, digits, '-', '_', '.', '@' or '+'")]
    BadChar(char),
}

/// Longest identifier accepted; keeps keys in Redis and SQL bounded.
pub const MAX_ID_LEN: usize = 128;

fn check(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { max: MAX_ID_LEN });
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.@+".contains(*c)))
    {
        return Err(IdError::BadChar(c));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Arc<str>);

        impl $name {
            /// Parses an identifier, rejecting empty, overlong or oddly-charactered strings.
            pub fn new(s: impl AsRef<str>) -> Result<Self, IdError> {
                let s = s.as_ref();
                check(s)?;
                Ok(Self(Arc::from(s)))
            }
            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }
        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.to_string()
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.0)
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// One call leg set handled by the platform (a customer's call, or one outbound dial).
    CallId
);
string_id!(
    /// One interaction in the CRM: one customer contact, from arrival to wrap-up.
    InteractionId
);
string_id!(
    /// An agent (the person taking calls), by login name.
    AgentId
);
string_id!(
    /// A queue of the ACD.
    QueueId
);
string_id!(
    /// A skill agents have with a proficiency and calls require.
    SkillId
);
string_id!(
    /// An outbound campaign.
    CampaignId
);
string_id!(
    /// A lead of an outbound campaign.
    LeadId
);
string_id!(
    /// A customer record in the CRM.
    CustomerId
);

impl CallId {
    /// A fresh, unique call id: node-local counter plus time and randomness from the caller, so ids from
    /// different nodes never collide. Kept pure: the caller passes the entropy it has.
    pub fn generate(node: &str, now: crate::Timestamp, counter: u64, entropy: u64) -> Self {
        let node: String = node
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(16)
            .collect();
        let node = if node.is_empty() { "n".to_string() } else { node };
        Self(Arc::from(format!(
            "{node}-{:x}-{counter:x}-{entropy:016x}",
            now.as_millis()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_ids() {
        assert_eq!(AgentId::new(""), Err(IdError::Empty));
        assert_eq!(AgentId::new("a b"), Err(IdError::BadChar(' ')));
        assert!(matches!(
            QueueId::new("x".repeat(200)),
            Err(IdError::TooLong { .. })
        ));
        assert_eq!(
            AgentId::new("alice.smith@team-1")
                .map(|a| a.to_string())
                .as_deref(),
            Ok("alice.smith@team-1")
        );
    }

    #[test]
    fn serde_round_trip_and_rejection() {
        let q: QueueId = serde_json::from_str("\"support\"").unwrap();
        assert_eq!(q.as_str(), "support");
        assert!(serde_json::from_str::<QueueId>("\"has space\"").is_err());
    }

    #[test]
    fn generated_call_ids_are_valid_and_distinct() {
        let now = crate::Timestamp::from_millis(1_700_000_000_000);
        let a = CallId::generate("node 1", now, 1, 42);
        let b = CallId::generate("node 1", now, 2, 42);
        assert_ne!(a, b);
        assert!(CallId::new(a.as_str()).is_ok());
    }
}
