//! Shared vocabulary of the call-center platform.
//!
//! Every other crate speaks in these types: identifiers, personal data wrapped in [`Pii`], time as plain
//! values handed to pure cores ([`Timestamp`]), and the [`InteractionEvent`] timeline that call control
//! emits and the CRM store keeps.

pub mod event;
pub mod ids;
pub mod pii;
pub mod time;

pub use event::{
    Channel, Direction, EndedBy, InteractionEvent, InteractionEventKind, NODE_LOST_REASON, NODE_LOST_SEQ,
    QualityReport,
};
pub use ids::{AgentId, CallId, CampaignId, CustomerId, IdError, InteractionId, LeadId, QueueId, SkillId};
pub use pii::Pii;
pub use time::Timestamp;
