//! The CRM store: SQL schema and migrations (SQLite and PostgreSQL), repositories, durable interaction
//! writer, reports. The only crate of the platform that knows SQL: other crates see plain Rust types.

mod customers;
mod error;
mod events;
pub mod fold;
pub mod import;
pub mod journal;
pub mod model;
pub mod phone;
pub mod reports;
mod retention;
mod store;
mod writer;

pub use customers::{AuditEntry, RECENT_INTERACTIONS};
pub use error::{Result, StoreError};
pub use events::BatchOutcome;
pub use fold::InteractionRow;
pub use import::{ImportProblem, ImportReport, LeadRecord};
pub use model::{Customer, CustomerCard, InteractionSummary, Role, Tier, User};
pub use phone::{CountryCode, E164, PhoneError, normalize_phone};
pub use reports::{
    AgentReport, IntervalLength, IntervalReport, ServiceLevelFormula, ServiceLevelSpec, SurveyReport,
};
pub use retention::{MASKED_NAME, RetentionOutcome, retention_cutoff};
pub use store::{BackendKind, CrmStore, DEFAULT_SQLITE_URL};
pub use writer::{EventWriter, WriterConfig, WriterStats, WriterTask};
