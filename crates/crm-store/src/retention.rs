//! Data protection: the retention job. Interactions older than the retention period lose their
//! personal data (numbers, notes, the personal fields of their events) and their recordings; customers
//! with no contact in that period are masked, leads not tried in it are blanked, finished callbacks
//! are deleted. The job returns the recording files for its caller to
//! delete (this crate does no file housekeeping beyond its journal) and audits what it did.

use crate::customers::{AuditEntry, audit_in_tx};
use crate::error::Result;
use crate::store::{BeginWrite, CrmStore, with_pool};
use domain::Timestamp;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Name shown for a masked customer.
pub const MASKED_NAME: &str = "(masked)";

/// What one retention run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionOutcome {
    /// Recording files of the masked interactions; the caller deletes them.
    pub recordings_to_delete: Vec<PathBuf>,
    pub interactions_masked: u64,
    pub events_masked: u64,
    pub customers_masked: u64,
    /// Leads not tried within the period: name and number blanked.
    pub leads_masked: u64,
    /// Finished callbacks requested before the cutoff, deleted.
    pub callbacks_deleted: u64,
}

/// Events whose payload carries personal data (numbers, digits, notes, recording paths).
const PERSONAL_EVENT_TYPES: &str =
    "('arrived', 'digits_collected', 'transferred', 'callback_requested', 'wrapped_up', 'recording')";

/// The instant before which data is out of retention.
pub fn retention_cutoff(now: Timestamp, days: u32) -> Timestamp {
    now - Duration::from_secs(u64::from(days) * 86_400)
}

impl CrmStore {
    /// Masks personal data of interactions that ended (or, unfinished, arrived) more than `days` ago
    /// and of customers without contact since then; returns the recordings to delete. Idempotent:
    /// masked rows are not touched again. Scheduled daily by the binary.
    pub async fn apply_retention(&self, now: Timestamp, days: u32) -> Result<RetentionOutcome> {
        let cutoff = retention_cutoff(now, days).as_millis();
        let stamp = now.as_millis();
        let old = "masked_at IS NULL AND COALESCE(ended_at, arrived_at, queued_at, 0) < $1";
        let (
            recordings,
            interactions_masked,
            events_masked,
            customers_masked,
            leads_masked,
            callbacks_deleted,
        ) = with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let recordings = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
                "SELECT recording_path FROM interactions WHERE {old} AND recording_path IS NOT NULL"
            )))
            .bind(cutoff)
            .fetch_all(&mut *tx)
            .await?;
            let interactions = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE interactions SET caller_number = NULL, called_number = NULL, notes = NULL, \
                 recording_path = NULL, masked_at = $2 WHERE {old}"
            )))
            .bind(cutoff)
            .bind(stamp)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // Dialled numbers of old attempts are personal data too.
            sqlx::query(
                "UPDATE dial_attempts SET phone_e164 = '' WHERE started_at < $1 AND phone_e164 <> ''",
            )
            .bind(cutoff)
            .execute(&mut *tx)
            .await?;
            let events = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE interaction_events SET payload = '{{\"masked\":true}}' \
                 WHERE type IN {PERSONAL_EVENT_TYPES} \
                 AND interaction_id IN (SELECT id FROM interactions WHERE masked_at = $1)"
            )))
            .bind(stamp)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let customers = sqlx::query(
                "UPDATE customers SET name = $3, email = NULL, notes = NULL, masked_at = $2 \
                 WHERE masked_at IS NULL AND updated_at < $1 AND NOT EXISTS ( \
                   SELECT 1 FROM interactions i WHERE i.customer_id = customers.id \
                   AND COALESCE(i.ended_at, i.arrived_at, i.queued_at, 0) >= $1)",
            )
            .bind(cutoff)
            .bind(stamp)
            .bind(MASKED_NAME)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("DELETE FROM customer_phones WHERE customer_id IN (SELECT id FROM customers WHERE masked_at = $1)")
                .bind(stamp)
                .execute(&mut *tx)
                .await?;
            let leads = sqlx::query(
                "UPDATE leads SET name = NULL, phone_e164 = '', status = 'expired' \
                 WHERE phone_e164 <> '' AND created_at < $1 AND COALESCE(last_attempt_at, 0) < $1",
            )
            .bind(cutoff)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let callbacks =
                sqlx::query("DELETE FROM callbacks WHERE status <> 'pending' AND requested_at < $1")
                    .bind(cutoff)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            let entry = AuditEntry {
                at: now,
                actor: "retention".into(),
                action: "retention.apply".into(),
                entity: "retention".into(),
                entity_id: format!("{days}d"),
                detail: format!(
                    "interactions={interactions} events={events} customers={customers} leads={leads} \
                     callbacks={callbacks} recordings={}",
                    recordings.len()
                ),
            };
            audit_in_tx!(tx, &entry);
            tx.commit().await?;
            (recordings, interactions, events, customers, leads, callbacks)
        });
        Ok(RetentionOutcome {
            recordings_to_delete: recordings.into_iter().map(PathBuf::from).collect(),
            interactions_masked,
            events_masked,
            customers_masked,
            leads_masked,
            callbacks_deleted,
        })
    }
}
