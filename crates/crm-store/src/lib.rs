//! The CRM store: SQL schema and migrations (SQLite and PostgreSQL), repositories, durable interaction
//! writer, reports. The only crate of the platform that knows SQL: other crates see plain Rust types.
//!
//! - [`CrmStore::connect`] picks the backend from the URL (`sqlite:PATH`, `postgres://...`);
//!   [`CrmStore::migrate`] applies `migrations/sqlite` or `migrations/postgres`.
//! - [`EventWriter`]: interaction events are acknowledged once fsynced in a local journal, then written
//!   to SQL in idempotent batches and folded into the `interactions` row ([`fold`]).
//! - Lookups for the IVR and screen pop ([`CrmStore::find_customer_by_phone`],
//!   [`CrmStore::find_customer_by_account`]); [`Tier::queue_priority`] turns a tier into queue priority.
//! - Reports ([`reports`]), retention ([`CrmStore::apply_retention`]), CSV import ([`import`]); every
//!   admin change is written to `audit_log`.
//!
//! Times are stored as milliseconds since the epoch ([`domain::Timestamp`]), durations in milliseconds,
//! money in cents.

mod campaigns;
mod customers;
mod error;
mod events;
pub mod fold;
pub mod import;
pub mod journal;
pub mod model;
mod pg_batch;
pub mod phone;
pub mod reports;
mod retention;
mod store;
mod writer;

pub use campaigns::{Campaign, DialMode};
pub use customers::{AuditEntry, RECENT_INTERACTIONS};
pub use error::{Result, StoreError};
pub use events::{BatchOutcome, PendingCallback, StoredEvent};
pub use fold::InteractionRow;
pub use import::{ImportProblem, ImportReport, LeadRecord};
pub use model::{Customer, CustomerCard, InteractionSummary, Role, Tier, User};
pub use phone::{CountryCode, E164, PhoneError, normalize_phone};
pub use reports::{
    AgentReport, IntervalLength, IntervalReport, ServiceLevelFormula, ServiceLevelSpec, SurveyReport,
};
pub use retention::{MASKED_NAME, RetentionOutcome, retention_cutoff};
pub use store::{BackendKind, CrmStore, DEFAULT_SQLITE_URL};
pub use writer::{DEAD_LETTER_FILE, EventWriter, WriterConfig, WriterStats, WriterTask};
