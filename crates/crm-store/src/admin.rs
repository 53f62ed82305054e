//! What supervisors and admins do with the CRM beside reports: find and list customers, merge a
//! duplicate customer into the record that stays, keep a user's preferred language, and search
//! interactions (by number, customer, agent, queue, disposition and time). Every change is audited
//! in the transaction that makes it. Search filters are bound parameters, never spliced SQL.

use crate::customers::{AuditEntry, audit_in_tx};
use crate::error::{Result, StoreError};
use crate::model::{Customer, Role, Tier};
use crate::phone::normalize_phone;
use crate::store::{BeginWrite, CrmStore, builder_for, with_pool};
use domain::{AgentId, CustomerId, Pii, Timestamp};
use serde::{Deserialize, Serialize};

/// The most rows a list or search returns.
pub const MAX_ROWS: i64 = 500;

/// The languages a user may prefer for the web UI.
pub const LANGUAGES: [&str; 2] = ["en", "zh-CN"];

/// Which customers to list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CustomerFilter {
    /// Part of the name, the account number, or a phone number (any format).
    pub text: Option<String>,
    pub tier: Option<Tier>,
    pub account_manager: Option<AgentId>,
    /// At most [`MAX_ROWS`].
    pub limit: Option<i64>,
}

/// Which interactions to find.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct InteractionFilter {
    /// The caller's or called number, any format (normalised to E.164 when it reads as one).
    pub number: Option<String>,
    pub customer: Option<CustomerId>,
    pub agent: Option<AgentId>,
    pub queue: Option<String>,
    pub disposition: Option<String>,
    /// Arrived at or after.
    pub from: Option<Timestamp>,
    /// Arrived before.
    pub to: Option<Timestamp>,
    pub limit: Option<i64>,
}

/// One interaction found by a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct FoundInteraction {
    pub id: String,
    pub channel: Option<String>,
    pub direction: Option<String>,
    pub customer_id: Option<String>,
    pub caller_number: Option<String>,
    pub called_number: Option<String>,
    pub arrived_at: Option<i64>,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub queue_id: Option<String>,
    pub agent_id: Option<String>,
    pub wait_ms: Option<i64>,
    pub talk_ms: Option<i64>,
    pub hold_ms: i64,
    pub wrap_ms: Option<i64>,
    pub abandoned: bool,
    pub disposition: Option<String>,
    pub survey_score: Option<i64>,
    /// Whether a recording is kept (its path is not shown).
    pub has_recording: bool,
}

fn limit_of(limit: Option<i64>) -> i64 {
    limit.unwrap_or(100).clamp(1, MAX_ROWS)
}

fn like_pattern(text: &str) -> String {
    let escaped: String = text
        .chars()
        .flat_map(|c| match c {
            '%' | '_' | '\\' => vec!['\\', c],
            c => vec![c],
        })
        .collect();
    format!("%{}%", escaped.to_lowercase())
}

impl CrmStore {
    /// Customers matching `filter` (merged duplicates and masked records left out), by name.
    pub async fn list_customers(&self, filter: &CustomerFilter) -> Result<Vec<Customer>> {
        let number = filter
            .text
            .as_deref()
            .and_then(|t| normalize_phone(t, self.country).ok())
            .map(|n| n.into_string());
        let ids: Vec<String> = with_pool!(self, |pool| {
            let mut q = builder_for(
                pool,
                "SELECT c.id FROM customers c WHERE c.merged_into IS NULL AND c.masked_at IS NULL",
            );
            if let Some(text) = filter.text.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
                q.push(" AND (LOWER(c.name) LIKE ");
                q.push_bind(like_pattern(text));
                q.push(" ESCAPE '\\' OR c.account_number = ");
                q.push_bind(text.to_string());
                q.push(" OR c.id = ");
                q.push_bind(text.to_string());
                if let Some(number) = &number {
                    q.push(" OR c.id IN (SELECT customer_id FROM customer_phones WHERE e164 = ");
                    q.push_bind(number.clone());
                    q.push(")");
                }
                q.push(")");
            }
            if let Some(tier) = filter.tier {
                q.push(" AND c.tier = ");
                q.push_bind(tier.as_str());
            }
            if let Some(manager) = &filter.account_manager {
                q.push(" AND c.account_manager = ");
                q.push_bind(manager.as_str().to_string());
            }
            q.push(" ORDER BY c.name, c.id LIMIT ");
            q.push_bind(limit_of(filter.limit));
            q.build_query_scalar::<String>().fetch_all(pool).await?
        });
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let id = CustomerId::new(&id).map_err(|e| StoreError::Corrupt(format!("customer id: {e}")))?;
            if let Some(c) = self.customer(&id).await? {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Merges the customer `duplicate` into `keep`: its numbers and interactions move to `keep`, it
    /// points at `keep` and is no longer found. Audited as done by `actor`. Refused when either is
    /// missing, when they are the same, or when `duplicate` was merged already.
    pub async fn merge_customers(
        &self,
        keep: &CustomerId,
        duplicate: &CustomerId,
        actor: &str,
        now: Timestamp,
    ) -> Result<()> {
        if keep == duplicate {
            return Err(StoreError::Invalid(
                "a customer cannot be merged into itself".into(),
            ));
        }
        let entry = AuditEntry {
            at: now,
            actor: actor.to_string(),
            action: "customer.merge".into(),
            entity: "customer".into(),
            entity_id: keep.to_string(),
            detail: format!("merged={duplicate}"),
        };
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let found = sqlx::query_as::<_, (String, Option<String>)>(
                "SELECT id, merged_into FROM customers WHERE id = $1 OR id = $2",
            )
            .bind(keep.as_str().to_string())
            .bind(duplicate.as_str().to_string())
            .fetch_all(&mut *tx)
            .await?;
            let state = |id: &CustomerId| {
                found
                    .iter()
                    .find(|(i, _)| i == id.as_str())
                    .map(|(_, m)| m.clone())
            };
            match (state(keep), state(duplicate)) {
                (Some(None), Some(None)) => {}
                (None, _) | (_, None) => return Err(StoreError::Invalid("no such customer".into())),
                _ => return Err(StoreError::Invalid("that customer was merged already".into())),
            }
            sqlx::query(
                "INSERT INTO customer_phones (customer_id, e164) SELECT $1, e164 FROM customer_phones \
                 WHERE customer_id = $2 ON CONFLICT DO NOTHING",
            )
            .bind(keep.as_str().to_string())
            .bind(duplicate.as_str().to_string())
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM customer_phones WHERE customer_id = $1")
                .bind(duplicate.as_str().to_string())
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE interactions SET customer_id = $1 WHERE customer_id = $2")
                .bind(keep.as_str().to_string())
                .bind(duplicate.as_str().to_string())
                .execute(&mut *tx)
                .await?;
            // The account number is unique: the duplicate gives its up.
            sqlx::query(
                "UPDATE customers SET merged_into = $1, account_number = NULL, updated_at = $3 WHERE id = $2",
            )
            .bind(keep.as_str().to_string())
            .bind(duplicate.as_str().to_string())
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE customers SET updated_at = $2 WHERE id = $1")
                .bind(keep.as_str().to_string())
                .bind(now.as_millis())
                .execute(&mut *tx)
                .await?;
            audit_in_tx!(tx, &entry);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Where a merged customer went, if it was merged.
    pub async fn merged_into(&self, id: &CustomerId) -> Result<Option<CustomerId>> {
        let found = with_pool!(self, |pool| {
            sqlx::query_scalar::<_, Option<String>>("SELECT merged_into FROM customers WHERE id = $1")
                .bind(id.as_str().to_string())
                .fetch_optional(pool)
                .await?
        });
        found
            .flatten()
            .map(|m| CustomerId::new(m).map_err(|e| StoreError::Corrupt(format!("merged_into: {e}"))))
            .transpose()
    }

    /// Sets (or clears) a user's preferred language (one of [`LANGUAGES`]), audited.
    pub async fn set_user_language(
        &self,
        user: &AgentId,
        language: Option<&str>,
        actor: &str,
        now: Timestamp,
    ) -> Result<()> {
        if let Some(lang) = language
            && !LANGUAGES.contains(&lang)
        {
            return Err(StoreError::Invalid(format!(
                "language {lang:?}: use one of {}",
                LANGUAGES.join(", ")
            )));
        }
        let entry = AuditEntry {
            at: now,
            actor: actor.to_string(),
            action: "user.language".into(),
            entity: "user".into(),
            entity_id: user.to_string(),
            detail: format!("language={}", language.unwrap_or("browser")),
        };
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let changed = sqlx::query("UPDATE users SET language = $2, updated_at = $3 WHERE id = $1")
                .bind(user.as_str().to_string())
                .bind(language.map(str::to_string))
                .bind(now.as_millis())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if changed == 0 {
                return Err(StoreError::Invalid("no such user".into()));
            }
            audit_in_tx!(tx, &entry);
            tx.commit().await?;
        });
        Ok(())
    }

    /// A user's preferred language, if they chose one.
    pub async fn user_language(&self, user: &AgentId) -> Result<Option<String>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_scalar::<_, Option<String>>("SELECT language FROM users WHERE id = $1")
                .bind(user.as_str().to_string())
                .fetch_optional(pool)
                .await?
        })
        .flatten())
    }

    /// Every active user: login, display name, role, by login.
    pub async fn list_users(&self) -> Result<Vec<(AgentId, Pii<String>, Role)>> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as::<_, (String, String, String)>(
                "SELECT id, display_name, role FROM users WHERE active ORDER BY id",
            )
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(id, name, role)| {
                let id = AgentId::new(id).map_err(|e| StoreError::Corrupt(format!("user id: {e}")))?;
                let role = role
                    .parse::<Role>()
                    .map_err(|e| StoreError::Corrupt(format!("user role: {e}")))?;
                Ok((id, Pii::new(name), role))
            })
            .collect()
    }

    /// Interactions matching `filter`, newest first.
    pub async fn search_interactions(&self, filter: &InteractionFilter) -> Result<Vec<FoundInteraction>> {
        let number = filter
            .number
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                normalize_phone(n, self.country)
                    .map(|e| e.into_string())
                    .unwrap_or_else(|_| n.to_string())
            });
        Ok(with_pool!(self, |pool| {
            let mut q = builder_for(
                pool,
                "SELECT id, channel, direction, customer_id, caller_number, called_number, arrived_at, \
                 answered_at, ended_at, queue_id, agent_id, wait_ms, talk_ms, hold_ms, wrap_ms, abandoned, \
                 disposition, survey_score, recording_path IS NOT NULL AS has_recording \
                 FROM interactions WHERE masked_at IS NULL",
            );
            if let Some(number) = &number {
                q.push(" AND (caller_number = ");
                q.push_bind(number.clone());
                q.push(" OR called_number = ");
                q.push_bind(number.clone());
                q.push(")");
            }
            if let Some(customer) = &filter.customer {
                q.push(" AND customer_id = ");
                q.push_bind(customer.as_str().to_string());
            }
            if let Some(agent) = &filter.agent {
                q.push(" AND agent_id = ");
                q.push_bind(agent.as_str().to_string());
            }
            if let Some(queue) = filter.queue.as_deref().filter(|q| !q.is_empty()) {
                q.push(" AND queue_id = ");
                q.push_bind(queue.to_string());
            }
            if let Some(d) = filter.disposition.as_deref().filter(|d| !d.is_empty()) {
                q.push(" AND disposition = ");
                q.push_bind(d.to_string());
            }
            if let Some(from) = filter.from {
                q.push(" AND arrived_at >= ");
                q.push_bind(from.as_millis());
            }
            if let Some(to) = filter.to {
                q.push(" AND arrived_at < ");
                q.push_bind(to.as_millis());
            }
            q.push(" ORDER BY COALESCE(arrived_at, 0) DESC, id DESC LIMIT ");
            q.push_bind(limit_of(filter.limit));
            q.build_query_as::<FoundInteraction>().fetch_all(pool).await?
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_wildcards() {
        assert_eq!(like_pattern("Ab%_\\"), "%ab\\%\\_\\\\%");
        assert_eq!(limit_of(None), 100);
        assert_eq!(limit_of(Some(100_000)), MAX_ROWS);
        assert_eq!(limit_of(Some(-3)), 1);
    }
}
