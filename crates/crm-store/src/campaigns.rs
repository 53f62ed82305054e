//! Outbound campaigns and the state of their leads, as the dialer stores them. Campaign changes are
//! admin changes and are audited.

use crate::customers::{AuditEntry, audit_in_tx};
use crate::error::{Result, StoreError};
use crate::model::UnknownName;
use crate::store::{BeginWrite, CrmStore, with_pool};
use domain::{CampaignId, LeadId, QueueId, Timestamp};
use serde::{Deserialize, Serialize};
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
