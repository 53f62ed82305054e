//! Customers, users, the do-not-call list and the audit log. Lookups serve the IVR and the screen pop:
//! by caller number in any format (normalised to E.164 first) or by account number. Every admin change
//! writes an audit entry in the same transaction as the change itself.

use crate::error::{Result, StoreError};
use crate::model::{Customer, CustomerCard, InteractionSummary, Role, Tier, User};
use crate::phone::normalize_phone;
use crate::store::{BeginWrite, CrmStore, with_pool};
use domain::{AgentId, CustomerId, InteractionId, Pii, QueueId, Timestamp};
use serde::{Deserialize, Serialize};

/// Interactions shown with a screen pop.
pub const RECENT_INTERACTIONS: i64 = 5;

/// One entry of the audit log: who changed what, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: Timestamp,
    /// The user who made the change (login), or a system job's name.
    pub actor: String,
    /// What was done, e.g. `customer.save`, `user.save`, `retention.apply`.
    pub action: String,
    /// The kind of record changed, e.g. `customer`.
    pub entity: String,
    pub entity_id: String,
    /// A short description without personal data.
    pub detail: String,
}

#[derive(sqlx::FromRow)]
struct CustomerRow {
    id: String,
    account_number: Option<String>,
    name: String,
    email: Option<String>,
    tier: String,
    account_manager: Option<String>,
    lifetime_value_cents: i64,
    notes: Option<String>,
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    id: String,
    channel: Option<String>,
    direction: Option<String>,
    arrived_at: Option<i64>,
    ended_at: Option<i64>,
    queue_id: Option<String>,
    agent_id: Option<String>,
    wait_ms: Option<i64>,
    talk_ms: Option<i64>,
    abandoned: bool,
    disposition: Option<String>,
    notes: Option<String>,
    survey_score: Option<i64>,
}

const CUSTOMER_COLUMNS: &str =
    "id, account_number, name, email, tier, account_manager, lifetime_value_cents, notes";
const SUMMARY_COLUMNS: &str = "id, channel, direction, arrived_at, ended_at, queue_id, agent_id, wait_ms, talk_ms, \
     abandoned, disposition, notes, survey_score";

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

impl CustomerRow {
    fn into_customer(self, phones: Vec<String>) -> Result<Customer> {
        Ok(Customer {
            id: CustomerId::new(&self.id).map_err(|e| corrupt("customer id", e))?,
            account_number: self.account_number,
            name: Pii::new(self.name),
            phones: phones.into_iter().map(Pii::new).collect(),
            email: self.email.map(Pii::new),
            tier: self
                .tier
                .parse::<Tier>()
                .map_err(|e| corrupt("customer tier", e))?,
            account_manager: self
                .account_manager
                .map(|a| AgentId::new(a).map_err(|e| corrupt("account manager", e)))
                .transpose()?,
            lifetime_value_cents: self.lifetime_value_cents,
            notes: self.notes.map(Pii::new),
        })
    }
}

impl SummaryRow {
    fn into_summary(self) -> Result<InteractionSummary> {
        Ok(InteractionSummary {
            id: InteractionId::new(&self.id).map_err(|e| corrupt("interaction id", e))?,
            channel: self.channel,
            direction: self.direction,
            arrived_at_ms: self.arrived_at,
            ended_at_ms: self.ended_at,
            queue: self.queue_id.and_then(|q| QueueId::new(q).ok()),
            agent: self.agent_id.and_then(|a| AgentId::new(a).ok()),
            wait_ms: self.wait_ms,
            talk_ms: self.talk_ms,
            abandoned: self.abandoned,
            disposition: self.disposition,
            notes: self.notes.map(Pii::new),
            survey_score: self.survey_score,
        })
    }
}

/// Writes one audit entry inside the caller's transaction.
macro_rules! audit_in_tx {
    ($tx:expr, $entry:expr) => {{
        let entry: &AuditEntry = $entry;
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, entity, entity_id, detail) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(entry.at.as_millis())
        .bind(entry.actor.clone())
        .bind(entry.action.clone())
        .bind(entry.entity.clone())
        .bind(entry.entity_id.clone())
        .bind(entry.detail.clone())
        .execute(&mut *$tx)
        .await?;
    }};
}
pub(crate) use audit_in_tx;

/// Upserts a customer and replaces their phones inside the caller's transaction.
macro_rules! save_customer_in_tx {
    ($tx:expr, $customer:expr, $phones:expr, $now:expr) => {{
        let customer: &Customer = $customer;
        let phones: &[String] = $phones;
        let now: Timestamp = $now;
        let tx = &mut $tx;
        sqlx::query(
            "INSERT INTO customers (id, account_number, name, email, tier, account_manager, \
             lifetime_value_cents, notes, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
             ON CONFLICT (id) DO UPDATE SET account_number = excluded.account_number, name = excluded.name, \
             email = excluded.email, tier = excluded.tier, account_manager = excluded.account_manager, \
             lifetime_value_cents = excluded.lifetime_value_cents, notes = excluded.notes, \
             updated_at = excluded.updated_at, masked_at = NULL",
        )
        .bind(customer.id.as_str().to_string())
        .bind(customer.account_number.clone())
        .bind(customer.name.expose().clone())
        .bind(customer.email.as_ref().map(|e| e.expose().clone()))
        .bind(customer.tier.as_str())
        .bind(customer.account_manager.as_ref().map(|a| a.as_str().to_string()))
        .bind(customer.lifetime_value_cents)
        .bind(customer.notes.as_ref().map(|n| n.expose().clone()))
        .bind(now.as_millis())
        .execute(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM customer_phones WHERE customer_id = $1")
            .bind(customer.id.as_str().to_string())
            .execute(&mut **tx)
            .await?;
        for phone in phones {
            sqlx::query(
                "INSERT INTO customer_phones (customer_id, e164) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(customer.id.as_str().to_string())
            .bind(phone.clone())
            .execute(&mut **tx)
            .await?;
        }
    }};
}
pub(crate) use save_customer_in_tx;

impl CrmStore {
    /// Creates or replaces a customer and their phone numbers (normalised to E.164), and records the
    /// change in the audit log as done by `actor`.
    pub async fn save_customer(&self, customer: &Customer, actor: &str, now: Timestamp) -> Result<()> {
        let phones = self.normalise_all(&customer.phones)?;
        let entry = AuditEntry {
            at: now,
            actor: actor.to_string(),
            action: "customer.save".into(),
            entity: "customer".into(),
            entity_id: customer.id.to_string(),
            detail: format!("tier={} phones={}", customer.tier, phones.len()),
        };
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            save_customer_in_tx!(tx, customer, &phones, now);
            audit_in_tx!(tx, &entry);
            tx.commit().await?;
        });
        Ok(())
    }

    pub(crate) fn normalise_all(&self, phones: &[Pii<String>]) -> Result<Vec<String>> {
        phones
            .iter()
            .map(|p| {
                normalize_phone(p.expose(), self.country)
                    .map(|n| n.into_string())
                    .map_err(|e| StoreError::Invalid(format!("phone number: {e}")))
            })
            .collect()
    }

    /// A customer by id.
    pub async fn customer(&self, id: &CustomerId) -> Result<Option<Customer>> {
        self.customer_where("id = $1", id.as_str()).await
    }

    async fn customer_where(&self, condition: &str, value: &str) -> Result<Option<Customer>> {
        let sql = format!("SELECT {CUSTOMER_COLUMNS} FROM customers WHERE {condition}");
        let found = with_pool!(self, |pool| {
            let row = sqlx::query_as::<_, CustomerRow>(sqlx::AssertSqlSafe(sql))
                .bind(value.to_string())
                .fetch_optional(pool)
                .await?;
            match row {
                None => None,
                Some(row) => {
                    let phones = sqlx::query_scalar::<_, String>(
                        "SELECT e164 FROM customer_phones WHERE customer_id = $1 ORDER BY e164",
                    )
                    .bind(row.id.clone())
                    .fetch_all(pool)
                    .await?;
                    Some((row, phones))
                }
            }
        });
        found.map(|(row, phones)| row.into_customer(phones)).transpose()
    }

    /// The screen pop for a caller number in any format. `None` for an unknown or unparsable number
    /// (anonymous callers are normal). When several customers share a number, the most valuable wins.
    pub async fn find_customer_by_phone(&self, raw_number: &str) -> Result<Option<CustomerCard>> {
        let Ok(number) = normalize_phone(raw_number, self.country) else {
            return Ok(None);
        };
        let id = with_pool!(self, |pool| {
            sqlx::query_scalar::<_, String>(
                "SELECT c.id FROM customer_phones p JOIN customers c ON c.id = p.customer_id \
                 WHERE p.e164 = $1 AND c.masked_at IS NULL AND c.merged_into IS NULL \
                 ORDER BY CASE c.tier WHEN 'key' THEN 0 WHEN 'major' THEN 1 WHEN 'normal' THEN 2 ELSE 3 END, c.id \
                 LIMIT 1",
            )
            .bind(number.as_str().to_string())
            .fetch_optional(pool)
            .await?
        });
        match id {
            None => Ok(None),
            Some(id) => self.card_where("id = $1", &id).await,
        }
    }

    /// The screen pop of a customer by id (a campaign lead linked to its customer).
    pub async fn customer_card(&self, id: &CustomerId) -> Result<Option<CustomerCard>> {
        self.card_where("id = $1", id.as_str()).await
    }

    /// The screen pop for an account number (typed in the IVR, for instance).
    pub async fn find_customer_by_account(&self, account_number: &str) -> Result<Option<CustomerCard>> {
        self.card_where("account_number = $1", account_number.trim())
            .await
    }

    async fn card_where(&self, condition: &str, value: &str) -> Result<Option<CustomerCard>> {
        let Some(customer) = self.customer_where(condition, value).await? else {
            return Ok(None);
        };
        let recent = self
            .customer_history(&customer.id, Some(RECENT_INTERACTIONS))
            .await?;
        let queue_priority = customer.tier.queue_priority();
        Ok(Some(CustomerCard {
            customer,
            recent,
            queue_priority,
        }))
    }

    /// A customer's interactions, newest first; all of them, or the latest `limit`.
    pub async fn customer_history(
        &self,
        customer: &CustomerId,
        limit: Option<i64>,
    ) -> Result<Vec<InteractionSummary>> {
        let sql = format!(
            "SELECT {SUMMARY_COLUMNS} FROM interactions WHERE customer_id = $1 \
             ORDER BY COALESCE(arrived_at, 0) DESC, id DESC LIMIT $2"
        );
        let rows = with_pool!(self, |pool| {
            sqlx::query_as::<_, SummaryRow>(sqlx::AssertSqlSafe(sql))
                .bind(customer.as_str().to_string())
                .bind(limit.unwrap_or(i64::MAX))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(SummaryRow::into_summary).collect()
    }

    /// Creates or replaces a user, audited.
    pub async fn save_user(&self, user: &User, actor: &str, now: Timestamp) -> Result<()> {
        let entry = AuditEntry {
            at: now,
            actor: actor.to_string(),
            action: "user.save".into(),
            entity: "user".into(),
            entity_id: user.id.to_string(),
            detail: format!("role={} active={}", user.role.as_str(), user.active),
        };
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO users (id, display_name, role, password_hash, active, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6) \
                 ON CONFLICT (id) DO UPDATE SET display_name = excluded.display_name, role = excluded.role, \
                 password_hash = excluded.password_hash, active = excluded.active, updated_at = excluded.updated_at",
            )
            .bind(user.id.as_str().to_string())
            .bind(user.display_name.expose().clone())
            .bind(user.role.as_str())
            .bind(user.password_hash.clone())
            .bind(user.active)
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await?;
            audit_in_tx!(tx, &entry);
            tx.commit().await?;
        });
        Ok(())
    }

    /// A user by login.
    pub async fn user(&self, id: &AgentId) -> Result<Option<User>> {
        let row = with_pool!(self, |pool| {
            sqlx::query_as::<_, (String, String, String, Option<String>, bool)>(
                "SELECT id, display_name, role, password_hash, active FROM users WHERE id = $1",
            )
            .bind(id.as_str().to_string())
            .fetch_optional(pool)
            .await?
        });
        row.map(|(id, display_name, role, password_hash, active)| {
            Ok(User {
                id: AgentId::new(id).map_err(|e| corrupt("user id", e))?,
                display_name: Pii::new(display_name),
                role: role.parse::<Role>().map_err(|e| corrupt("user role", e))?,
                password_hash,
                active,
            })
        })
        .transpose()
    }

    /// Adds a number to the company do-not-call list, audited.
    pub async fn add_do_not_call(
        &self,
        raw_number: &str,
        source: &str,
        actor: &str,
        now: Timestamp,
    ) -> Result<()> {
        let number = normalize_phone(raw_number, self.country)
            .map_err(|e| StoreError::Invalid(format!("phone number: {e}")))?;
        let entry = AuditEntry {
            at: now,
            actor: actor.to_string(),
            action: "dnc.add".into(),
            entity: "do_not_call".into(),
            // The number itself is personal data: the log keeps a masked form.
            entity_id: number.to_string(),
            detail: format!("source={source}"),
        };
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO do_not_call (phone_e164, source, added_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (phone_e164) DO NOTHING",
            )
            .bind(number.as_str().to_string())
            .bind(source.to_string())
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await?;
            audit_in_tx!(tx, &entry);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Whether a number (any format) is on the do-not-call list. Unparsable numbers are treated as
    /// listed: a dialer must not call what it cannot check.
    pub async fn is_do_not_call(&self, raw_number: &str) -> Result<bool> {
        let Ok(number) = normalize_phone(raw_number, self.country) else {
            return Ok(true);
        };
        let found = with_pool!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM do_not_call WHERE phone_e164 = $1")
                .bind(number.as_str().to_string())
                .fetch_one(pool)
                .await?
        });
        Ok(found > 0)
    }

    /// Writes an audit entry on its own (for changes made outside this crate's admin functions).
    pub async fn audit(&self, entry: &AuditEntry) -> Result<()> {
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            audit_in_tx!(tx, entry);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Audit entries at or after `since`, oldest first.
    pub async fn audit_log(&self, since: Timestamp) -> Result<Vec<AuditEntry>> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as::<_, (i64, String, String, String, String, String)>(
                "SELECT at, actor, action, entity, entity_id, detail FROM audit_log WHERE at >= $1 ORDER BY id",
            )
            .bind(since.as_millis())
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(at, actor, action, entity, entity_id, detail)| AuditEntry {
                at: Timestamp::from_millis(at),
                actor,
                action,
                entity,
                entity_id,
                detail,
            })
            .collect())
    }
}
