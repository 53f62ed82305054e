//! The CRM store: SQL schema and migrations (SQLite and PostgreSQL), repositories, durable interaction
//! writer, reports. The only crate of the platform that knows SQL: other crates see plain Rust types.
//!
//! - [`CrmStore::connect`] picks the backend from the URL (`sqlite:PATH`, `postgres://...`);
//!   [`CrmStore::migrate`] applies `migrations/sqlite` or `migrations/postgres`.
//! - [`EventWriter`]: interaction events are acknowledged once fsynced in a local journal, then written
//!   to SQL in idempotent batches and folded into the `interactions` row ([`fold`]). With
//!   [`EventWriter::start_with_outbox`] the events go to an outbox shared by the nodes ([`outbox`]:
//!   a Redis stream with a consumer group, plugged in by the binary) instead of the local journal.
//! - Lookups for the IVR and screen pop ([`CrmStore::find_customer_by_phone`],
//!   [`CrmStore::find_customer_by_account`]); [`Tier::queue_priority`] turns a tier into queue priority.
//! - Agent-state history ([`history`]): every state of every agent with its reason, for the agent
//!   report; customer admin, user languages and interaction search ([`admin`]).
//! - Reports ([`reports`]), retention ([`CrmStore::apply_retention`]), CSV import ([`import`]); every
//!   admin change is written to `audit_log`.
//!
//! Times are stored as milliseconds since the epoch ([`domain::Timestamp`]), durations in milliseconds,
//! money in cents.

pub mod admin;
mod campaigns;
mod customers;
mod error;
mod events;
pub mod files;
pub mod fold;
pub mod history;
pub mod import;
pub mod journal;
pub mod metrics;
pub mod model;
pub mod outbox;
mod pg_batch;
pub mod phone;
pub mod reports;
mod retention;
mod store;
mod writer;

pub use admin::{CustomerFilter, FoundInteraction, InteractionFilter};
pub use campaigns::{Campaign, DialAttempt, DialMode, LeadProgress};
pub use customers::{AuditEntry, RECENT_INTERACTIONS};
pub use error::{Result, StoreError};
pub use events::{BatchOutcome, PendingCallback, StoredEvent};
pub use fold::InteractionRow;
pub use history::{AgentStateRecorder, StateHistory};
pub use import::{ImportProblem, ImportReport, LeadRecord};
pub use model::{Customer, CustomerCard, InteractionSummary, Role, Tier, User};
pub use outbox::{Outbox, OutboxEntry};
pub use phone::{CountryCode, E164, PhoneError, normalize_phone};
pub use reports::{
    AgentReport, CampaignReport, IntervalLength, IntervalReport, QueueIntervalRow, QueueReport,
    ServiceLevelFormula, ServiceLevelSpec, StateSeriesRow, SurveyReport,
};
pub use retention::{MASKED_NAME, RetentionOutcome, retention_cutoff};
pub use store::{BackendKind, CrmStore, DEFAULT_SQLITE_URL};
pub use writer::{
    DEAD_LETTER_FILE, Durable, EventWriter, OrderedAppender, WriterConfig, WriterStats, WriterTask,
};

#[cfg(test)]
mod send_tests {
    //! Callers run the store on multi-threaded runtimes (HTTP handlers, spawned tasks): every public
    //! future must be `Send`. Creating the futures is enough for the compiler to check.

    use super::*;
    use domain::{AgentId, CampaignId, CustomerId, InteractionId, Pii, Timestamp};

    fn assert_send<T: Send>(_: &T) {}

    #[tokio::test]
    async fn public_futures_are_send() {
        let store = CrmStore::connect("sqlite::memory:").await.unwrap();
        let now = Timestamp::ZERO;
        let customer = Customer {
            id: CustomerId::new("c").unwrap(),
            account_number: None,
            name: Pii::new(String::new()),
            phones: Vec::new(),
            email: None,
            tier: Tier::Normal,
            account_manager: None,
            lifetime_value_cents: 0,
            notes: None,
        };
        let campaign = CampaignId::new("x").unwrap();
        let interaction = InteractionId::new("i").unwrap();
        assert_send(&store.migrate());
        assert_send(&store.save_customer(&customer, "a", now));
        assert_send(&store.find_customer_by_phone("+14155550100"));
        assert_send(&store.find_customer_by_account("1"));
        assert_send(&store.customer_history(&customer.id, None));
        assert_send(&store.add_do_not_call("+14155550100", "s", "a", now));
        assert_send(&store.insert_events_batch(&[]));
        assert_send(&store.interaction(&interaction));
        assert_send(&store.interaction_timeline(&interaction));
        assert_send(&store.interval_report(now, now, IntervalLength::Minutes15, ServiceLevelSpec::default()));
        assert_send(&store.agent_report(now, now));
        assert_send(&store.survey_report(now, now));
        assert_send(&store.record_agent_state(&AgentId::new("a").unwrap(), "available", None, now, now));
        assert_send(&store.apply_retention(now, 30));
        assert_send(&store.import_customers_csv("", "a", now));
        assert_send(&store.import_leads_csv(&campaign, "", "a", now));
        assert_send(&store.dialable_leads(&campaign, now, 1));
        assert_send(&store.pending_callbacks());
        assert_send(&EventWriter::start(store.clone(), WriterConfig::new("unused")));
    }
}
