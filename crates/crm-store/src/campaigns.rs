//! Outbound campaigns, the state of their leads and every dial attempt, as the dialer stores them.
//! Campaign changes are admin changes and are audited; attempts are the dialer's audit trail
//! (`dial_attempts`: one row per attempt, written when it is placed and again when it ends). A lead's
//! progress (attempt counts, next attempt, last abandonment, callback, status) is saved on every change
//! so a restarted dialer continues it ([`LeadProgress`]).

use crate::customers::{AuditEntry, audit_in_tx};
use crate::error::{Result, StoreError};
use crate::import::LeadRecord;
use crate::model::UnknownName;
use crate::store::{BeginWrite, CrmStore, with_pool};
use domain::{AgentId, CampaignId, CustomerId, LeadId, Pii, QueueId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::str::FromStr;

/// How a campaign dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DialMode {
    Preview,
    Progressive,
    Predictive,
    Agentless,
}

impl DialMode {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            DialMode::Preview => "preview",
            DialMode::Progressive => "progressive",
            DialMode::Predictive => "predictive",
            DialMode::Agentless => "agentless",
        }
    }
}

impl FromStr for DialMode {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, UnknownName> {
        [
            DialMode::Preview,
            DialMode::Progressive,
            DialMode::Predictive,
            DialMode::Agentless,
        ]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
        .ok_or_else(|| UnknownName {
            what: "dial mode",
            value: s.to_string(),
            expected: "preview, progressive, predictive, agentless",
        })
    }
}

/// An outbound campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: CampaignId,
    pub name: String,
    pub mode: DialMode,
    /// The queue whose agents take answered calls.
    pub queue: Option<QueueId>,
    /// `draft`, `running`, `paused`, `finished`.
    pub status: String,
    /// Abandonment cap, e.g. 0.03.
    pub max_abandon_rate: f64,
}

impl CrmStore {
    /// Creates or replaces a campaign, audited.
    pub async fn save_campaign(&self, campaign: &Campaign, actor: &str, now: Timestamp) -> Result<()> {
        if !(0.0..=1.0).contains(&campaign.max_abandon_rate) {
            return Err(StoreError::Invalid(
                "max_abandon_rate is a fraction between 0 and 1".into(),
            ));
        }
        let entry = AuditEntry {
            at: now,
            actor: actor.to_string(),
            action: "campaign.save".into(),
            entity: "campaign".into(),
            entity_id: campaign.id.to_string(),
            detail: format!(
                "mode={} status={} max_abandon_rate={}",
                campaign.mode.as_str(),
                campaign.status,
                campaign.max_abandon_rate
            ),
        };
        with_pool!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO campaigns (id, name, mode, queue_id, status, max_abandon_rate, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, mode = excluded.mode, \
                 queue_id = excluded.queue_id, status = excluded.status, max_abandon_rate = excluded.max_abandon_rate",
            )
            .bind(campaign.id.as_str().to_string())
            .bind(campaign.name.clone())
            .bind(campaign.mode.as_str())
            .bind(campaign.queue.as_ref().map(|q| q.as_str().to_string()))
            .bind(campaign.status.clone())
            .bind(campaign.max_abandon_rate)
            .bind(now.as_millis())
            .execute(&mut *tx)
            .await?;
            audit_in_tx!(tx, &entry);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Sets a campaign's status (`running`, `paused`, `finished`) as its dialer changed it, so a node
    /// that takes the campaign over, or restarts, continues in it. Returns whether the campaign exists.
    pub async fn set_campaign_status(&self, id: &CampaignId, status: &str) -> Result<bool> {
        let affected = with_pool!(self, |pool| {
            sqlx::query("UPDATE campaigns SET status = $2 WHERE id = $1")
                .bind(id.as_str().to_string())
                .bind(status.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(affected == 1)
    }

    /// A campaign by id.
    pub async fn campaign(&self, id: &CampaignId) -> Result<Option<Campaign>> {
        let row = with_pool!(self, |pool| {
            sqlx::query_as::<_, (String, String, String, Option<String>, String, f64)>(
                "SELECT id, name, mode, queue_id, status, max_abandon_rate FROM campaigns WHERE id = $1",
            )
            .bind(id.as_str().to_string())
            .fetch_optional(pool)
            .await?
        });
        row.map(|(id, name, mode, queue, status, max_abandon_rate)| {
            Ok(Campaign {
                id: CampaignId::new(id).map_err(|e| StoreError::Corrupt(format!("campaign id: {e}")))?,
                name,
                mode: mode
                    .parse()
                    .map_err(|e| StoreError::Corrupt(format!("campaign mode: {e}")))?,
                queue: queue.and_then(|q| QueueId::new(q).ok()),
                status,
                max_abandon_rate,
            })
        })
        .transpose()
    }

    /// Records a dial attempt on a lead: its new status (e.g. `no_answer`, `contacted`, `done`), when it
    /// was tried, and when it may be tried next. Returns whether the lead exists.
    pub async fn record_lead_attempt(
        &self,
        lead: &LeadId,
        status: &str,
        at: Timestamp,
        next_attempt_at: Option<Timestamp>,
    ) -> Result<bool> {
        let affected = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE leads SET status = $2, attempts = attempts + 1, last_attempt_at = $3, next_attempt_at = $4 \
                 WHERE id = $1",
            )
            .bind(lead.as_str().to_string())
            .bind(status.to_string())
            .bind(at.as_millis())
            .bind(next_attempt_at.map(Timestamp::as_millis))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(affected == 1)
    }

    /// Leads of a campaign that may be dialled at `now` (status `new`, or due for a retry), oldest
    /// first, at most `limit`. Do-not-call numbers are left out.
    pub async fn dialable_leads(
        &self,
        campaign: &CampaignId,
        now: Timestamp,
        limit: i64,
    ) -> Result<Vec<LeadId>> {
        let ids = with_pool!(self, |pool| {
            sqlx::query_scalar::<_, String>(
                "SELECT l.id FROM leads l WHERE l.campaign_id = $1 \
                 AND l.phone_e164 <> '' AND (l.status = 'new' OR (l.status NOT IN ('done', 'contacted', 'dnc', 'expired') \
                      AND l.next_attempt_at IS NOT NULL AND l.next_attempt_at <= $2)) \
                 AND NOT EXISTS (SELECT 1 FROM do_not_call d WHERE d.phone_e164 = l.phone_e164) \
                 ORDER BY l.created_at, l.id LIMIT $3",
            )
            .bind(campaign.as_str().to_string())
            .bind(now.as_millis())
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        ids.into_iter()
            .map(|id| LeadId::new(id).map_err(|e| StoreError::Corrupt(format!("lead id: {e}"))))
            .collect()
    }
}

/// Where a lead stands for the dialer, as stored in `leads`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeadProgress {
    /// `new`; while it will be retried, how the last attempt ended (`busy`, `no_answer`, `machine`,
    /// `abandoned`, `failed`) or `callback`; `dialing` while an attempt is under way; finally `done`,
    /// `exhausted` or `dnc`.
    pub status: String,
    /// Attempts made, the one under way included.
    pub attempts: u32,
    pub busy_attempts: u32,
    pub no_answer_attempts: u32,
    pub machine_attempts: u32,
    pub abandoned_attempts: u32,
    pub failed_attempts: u32,
    pub last_attempt_at: Option<Timestamp>,
    pub next_attempt_at: Option<Timestamp>,
    pub last_abandoned_at: Option<Timestamp>,
    pub callback_at: Option<Timestamp>,
    /// A personal callback's agent.
    pub callback_agent: Option<AgentId>,
}

/// The stored columns of a lead with its progress, decoded the same way on both backends.
struct ProgressRow {
    id: String,
    name: Option<String>,
    phone: String,
    timezone: Option<String>,
    customer: Option<String>,
    status: String,
    counts: [i64; 6],
    times: [Option<i64>; 4],
    callback_agent: Option<String>,
}

impl ProgressRow {
    fn decode<R: sqlx::Row>(row: &R) -> std::result::Result<Self, sqlx::Error>
    where
        usize: sqlx::ColumnIndex<R>,
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        let mut counts = [0; 6];
        for (i, c) in counts.iter_mut().enumerate() {
            *c = row.try_get(6 + i)?;
        }
        let mut times = [None; 4];
        for (i, t) in times.iter_mut().enumerate() {
            *t = row.try_get(12 + i)?;
        }
        Ok(Self {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            phone: row.try_get(2)?,
            timezone: row.try_get(3)?,
            customer: row.try_get(4)?,
            status: row.try_get(5)?,
            counts,
            times,
            callback_agent: row.try_get(16)?,
        })
    }
}

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

impl CrmStore {
    /// Saves where a lead stands (after each attempt is placed and ends, a callback is scheduled, or it
    /// is closed). A `last_attempt_at` of `None` keeps the stored one. Returns whether the lead exists.
    pub async fn save_lead_progress(&self, lead: &LeadId, p: &LeadProgress) -> Result<bool> {
        if p.status.is_empty() || p.status.len() > 32 {
            return Err(StoreError::Invalid("lead status is 1 to 32 characters".into()));
        }
        let affected = with_pool!(self, |pool| {
            sqlx::query(
                "UPDATE leads SET status = $2, attempts = $3, busy_attempts = $4, no_answer_attempts = $5, \
                 machine_attempts = $6, abandoned_attempts = $7, failed_attempts = $8, \
                 last_attempt_at = COALESCE($9, last_attempt_at), \
                 next_attempt_at = $10, last_abandoned_at = $11, callback_at = $12, callback_agent = $13 \
                 WHERE id = $1",
            )
            .bind(lead.as_str().to_string())
            .bind(p.status.clone())
            .bind(i64::from(p.attempts))
            .bind(i64::from(p.busy_attempts))
            .bind(i64::from(p.no_answer_attempts))
            .bind(i64::from(p.machine_attempts))
            .bind(i64::from(p.abandoned_attempts))
            .bind(i64::from(p.failed_attempts))
            .bind(p.last_attempt_at.map(Timestamp::as_millis))
            .bind(p.next_attempt_at.map(Timestamp::as_millis))
            .bind(p.last_abandoned_at.map(Timestamp::as_millis))
            .bind(p.callback_at.map(Timestamp::as_millis))
            .bind(p.callback_agent.as_ref().map(|a| a.as_str().to_string()))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(affected == 1)
    }

    /// Every lead of a campaign with its saved progress, in lead id order (how a dialer that starts
    /// or takes the campaign over continues it).
    pub async fn campaign_lead_progress(
        &self,
        campaign: &CampaignId,
    ) -> Result<Vec<(LeadRecord, LeadProgress)>> {
        let rows: Vec<ProgressRow> = with_pool!(self, |pool| {
            sqlx::query(
                "SELECT id, name, phone_e164, timezone, customer_id, status, \
                 attempts, busy_attempts, no_answer_attempts, machine_attempts, abandoned_attempts, failed_attempts, \
                 last_attempt_at, next_attempt_at, last_abandoned_at, callback_at, callback_agent \
                 FROM leads WHERE campaign_id = $1 ORDER BY id",
            )
            .bind(campaign.as_str().to_string())
            .fetch_all(pool)
            .await?
            .iter()
            .map(ProgressRow::decode)
            .collect::<std::result::Result<_, _>>()?
        });
        rows.into_iter()
            .map(|r| {
                let record = LeadRecord {
                    id: LeadId::new(&r.id).map_err(|e| StoreError::Corrupt(format!("lead id: {e}")))?,
                    name: r.name.map(Pii::new),
                    phone: Pii::new(r.phone),
                    timezone: r.timezone,
                    customer: r.customer.and_then(|c| CustomerId::new(c).ok()),
                };
                let [attempts, busy, no_answer, machine, abandoned, failed] = r.counts.map(count);
                let [last_attempt, next_attempt, last_abandoned, callback] =
                    r.times.map(|t| t.map(Timestamp::from_millis));
                let progress = LeadProgress {
                    status: r.status,
                    attempts,
                    busy_attempts: busy,
                    no_answer_attempts: no_answer,
                    machine_attempts: machine,
                    abandoned_attempts: abandoned,
                    failed_attempts: failed,
                    last_attempt_at: last_attempt,
                    next_attempt_at: next_attempt,
                    last_abandoned_at: last_abandoned,
                    callback_at: callback,
                    callback_agent: r.callback_agent.and_then(|a| AgentId::new(a).ok()),
                };
                Ok((record, progress))
            })
            .collect()
    }
}

/// One dial attempt of a campaign, as the live dialer records it.
#[derive(Debug, Clone, PartialEq)]
pub struct DialAttempt {
    /// The attempt's call id (also its interaction id).
    pub id: String,
    pub campaign: CampaignId,
    pub lead: LeadId,
    /// 1 for the lead's first attempt.
    pub attempt: u32,
    pub phone: Pii<String>,
    pub started_at: Timestamp,
    pub answered_at: Option<Timestamp>,
    /// `human`, `machine` or `notsure`, once the analysis decided.
    pub amd_result: Option<String>,
    /// The agent the called person was connected to.
    pub agent: Option<AgentId>,
    pub connected_at: Option<Timestamp>,
    pub ended_at: Option<Timestamp>,
    /// `dialing` while under way; then `completed`, `abandoned`, `machine`, `busy`, `no_answer`, `failed`.
    pub outcome: String,
    /// Counts as abandoned under the campaign's rules (no agent in time after a person answered).
    pub abandoned: bool,
}

type AttemptRow = (
    String,
    String,
    String,
    i64,
    String,
    i64,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    String,
    bool,
);

impl CrmStore {
    /// Writes an attempt: inserted when placed, replaced by its later states (idempotent by id).
    pub async fn record_dial_attempt(&self, a: &DialAttempt) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO dial_attempts (id, campaign_id, lead_id, attempt, phone_e164, started_at, answered_at, \
                 amd_result, agent_id, connected_at, ended_at, outcome, abandoned) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT (id) DO UPDATE SET answered_at = excluded.answered_at, amd_result = excluded.amd_result, \
                 agent_id = excluded.agent_id, connected_at = excluded.connected_at, ended_at = excluded.ended_at, \
                 outcome = excluded.outcome, abandoned = excluded.abandoned",
            )
            .bind(a.id.clone())
            .bind(a.campaign.as_str().to_string())
            .bind(a.lead.as_str().to_string())
            .bind(i64::from(a.attempt))
            .bind(a.phone.expose().clone())
            .bind(a.started_at.as_millis())
            .bind(a.answered_at.map(Timestamp::as_millis))
            .bind(a.amd_result.clone())
            .bind(a.agent.as_ref().map(|g| g.as_str().to_string()))
            .bind(a.connected_at.map(Timestamp::as_millis))
            .bind(a.ended_at.map(Timestamp::as_millis))
            .bind(a.outcome.clone())
            .bind(a.abandoned)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The attempts of a campaign, oldest first.
    pub async fn dial_attempts(&self, campaign: &CampaignId) -> Result<Vec<DialAttempt>> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as::<_, AttemptRow>(
                "SELECT id, campaign_id, lead_id, attempt, phone_e164, started_at, answered_at, amd_result, \
                 agent_id, connected_at, ended_at, outcome, abandoned FROM dial_attempts \
                 WHERE campaign_id = $1 ORDER BY started_at, id",
            )
            .bind(campaign.as_str().to_string())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|r| {
                let corrupt = |what: &str, e: domain::IdError| StoreError::Corrupt(format!("{what}: {e}"));
                Ok(DialAttempt {
                    id: r.0,
                    campaign: CampaignId::new(r.1).map_err(|e| corrupt("campaign id", e))?,
                    lead: LeadId::new(r.2).map_err(|e| corrupt("lead id", e))?,
                    attempt: u32::try_from(r.3).unwrap_or(0),
                    phone: Pii::new(r.4),
                    started_at: Timestamp::from_millis(r.5),
                    answered_at: r.6.map(Timestamp::from_millis),
                    amd_result: r.7,
                    agent: r.8.and_then(|g| AgentId::new(g).ok()),
                    connected_at: r.9.map(Timestamp::from_millis),
                    ended_at: r.10.map(Timestamp::from_millis),
                    outcome: r.11,
                    abandoned: r.12,
                })
            })
            .collect()
    }

    /// Every number on the do-not-call list (the dialer checks each lead against it at dial time).
    pub async fn do_not_call_numbers(&self) -> Result<HashSet<String>> {
        let numbers = with_pool!(self, |pool| {
            sqlx::query_scalar::<_, String>("SELECT phone_e164 FROM do_not_call")
                .fetch_all(pool)
                .await?
        });
        Ok(numbers.into_iter().collect())
    }

    /// The stored status of each lead of a campaign (`new`, `pending`, `done`, `exhausted`, ...).
    pub async fn lead_statuses(&self, campaign: &CampaignId) -> Result<Vec<(LeadId, String)>> {
        let rows = with_pool!(self, |pool| {
            sqlx::query_as::<_, (String, String)>("SELECT id, status FROM leads WHERE campaign_id = $1")
                .bind(campaign.as_str().to_string())
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(id, status)| LeadId::new(id).ok().map(|id| (id, status)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn attempts_are_written_when_placed_and_updated_when_they_end() {
        let store = CrmStore::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let campaign = CampaignId::new("spring").unwrap();
        let mut a = DialAttempt {
            id: "call-1".into(),
            campaign: campaign.clone(),
            lead: LeadId::new("l1").unwrap(),
            attempt: 1,
            phone: Pii::new("+442079000001".into()),
            started_at: Timestamp::from_millis(1_000),
            answered_at: None,
            amd_result: None,
            agent: None,
            connected_at: None,
            ended_at: None,
            outcome: "dialing".into(),
            abandoned: false,
        };
        store.record_dial_attempt(&a).await.unwrap();
        a.answered_at = Some(Timestamp::from_millis(5_000));
        a.amd_result = Some("human".into());
        a.ended_at = Some(Timestamp::from_millis(9_000));
        a.outcome = "abandoned".into();
        a.abandoned = true;
        store.record_dial_attempt(&a).await.unwrap();
        assert_eq!(store.dial_attempts(&campaign).await.unwrap(), vec![a]);
        store
            .add_do_not_call("+442079000009", "tps", "test", Timestamp::ZERO)
            .await
            .unwrap();
        assert!(
            store
                .do_not_call_numbers()
                .await
                .unwrap()
                .contains("+442079000009")
        );
    }
}
