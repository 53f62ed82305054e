//! Writing interaction events to SQL. [`CrmStore::insert_events_batch`] is the fast path the durable
//! writer uses: multi-row `INSERT ... ON CONFLICT DO NOTHING RETURNING` in one transaction, then only the
//! events actually inserted are folded into their `interactions` rows, so a replay changes nothing.
//! [`CrmStore::insert_event_naive`] is the one-statement-per-event baseline kept for benchmarks.

use crate::error::Result;
use crate::fold::{INTERACTION_COLUMNS, InteractionRow, stored_payload};
use crate::phone::{CountryCode, normalize_phone};
use crate::store::{Backend, BeginWrite, CrmStore, builder_for, with_pool};
use domain::{InteractionEvent, InteractionEventKind};
use sqlx::Row;
use sqlx::sqlite::SqlitePool;
use std::collections::{BTreeMap, HashSet};

/// Events per INSERT statement: 5 binds each, well under both backends' bind limits.
const EVENT_ROWS_PER_STATEMENT: usize = 1000;
/// Interaction rows per upsert statement: 35 binds each.
const INTERACTION_ROWS_PER_STATEMENT: usize = 200;
/// Ids per `IN (...)` lookup.
const IDS_PER_LOOKUP: usize = 500;

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Events newly stored (and folded).
    pub inserted: usize,
    /// Events already stored before (replays) or repeated within the batch; ignored.
    pub duplicates: usize,
}

/// One stored step of an interaction's timeline.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredEvent {
    pub seq: i64,
    pub at: domain::Timestamp,
    /// The event type name (`arrived`, `answered`, ...).
    pub kind: String,
    /// The event as stored; may hold personal data, so never log it.
    pub payload: serde_json::Value,
}

/// A callback waiting to be made.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PendingCallback {
    pub id: String,
    pub customer: Option<domain::CustomerId>,
    /// E.164 when the promised number parsed, else as given.
    pub phone: domain::Pii<String>,
    pub queue: Option<domain::QueueId>,
    pub interaction: Option<domain::InteractionId>,
    pub requested_at: domain::Timestamp,
}

/// Binds every column of an interaction row, in [`INTERACTION_COLUMNS`] order.
macro_rules! push_interaction_row {
    ($b:expr, $r:expr) => {{
        let r: InteractionRow = $r;
        $b.push_bind(r.id)
            .push_bind(r.channel)
            .push_bind(r.direction)
            .push_bind(r.customer_id)
            .push_bind(r.caller_number)
            .push_bind(r.called_number)
            .push_bind(r.arrived_at)
            .push_bind(r.queued_at)
            .push_bind(r.offered_at)
            .push_bind(r.answered_at)
            .push_bind(r.ended_at)
            .push_bind(r.wrapped_at)
            .push_bind(r.ivr_path)
            .push_bind(r.queue_id)
            .push_bind(r.priority)
            .push_bind(r.wait_ms)
            .push_bind(r.agent_id)
            .push_bind(r.talk_ms)
            .push_bind(r.hold_ms)
            .push_bind(r.held_since)
            .push_bind(r.wrap_ms)
            .push_bind(r.ended_by)
            .push_bind(r.end_reason)
            .push_bind(r.abandoned)
            .push_bind(r.disposition)
            .push_bind(r.notes)
            .push_bind(r.recording_path)
            .push_bind(r.survey_score)
            .push_bind(r.mos)
            .push_bind(r.routing_explanation)
            .push_bind(r.campaign_id)
            .push_bind(r.lead_id)
            .push_bind(r.dial_outcome)
            .push_bind(r.last_seq)
            .push_bind(r.masked_at);
    }};
}

/// A callback promised during a call, stored in `callbacks` with the call's customer and queue.
pub(crate) struct CallbackRequest {
    pub(crate) id: String,
    pub(crate) customer_id: Option<String>,
    pub(crate) phone: String,
    pub(crate) queue_id: Option<String>,
    pub(crate) interaction_id: String,
    pub(crate) requested_at: i64,
}

impl CallbackRequest {
    fn new(event: &InteractionEvent, number: &str, row: &InteractionRow, country: CountryCode) -> Self {
        Self {
            // One per event: a replayed event finds its callback already there.
            id: format!("{}-{}", event.interaction, event.seq),
            customer_id: row.customer_id.clone(),
            phone: normalize_phone(number, country)
                .map(|n| n.into_string())
                .unwrap_or_else(|_| number.to_string()),
            queue_id: row.queue_id.clone(),
            interaction_id: event.interaction.to_string(),
            requested_at: event.at.as_millis(),
        }
    }
}

pub(crate) fn upsert_tail() -> String {
    let updates: Vec<String> = INTERACTION_COLUMNS
        .iter()
        .skip(1)
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(" ON CONFLICT (id) DO UPDATE SET {}", updates.join(", "))
}

/// The events `newly_stored` keeps, by interaction, each list in seq order.
pub(crate) fn group_events<'a>(
    unique: &[&'a InteractionEvent],
    newly_stored: impl Fn(&InteractionEvent) -> bool,
) -> BTreeMap<&'a str, Vec<&'a InteractionEvent>> {
    let mut by_interaction: BTreeMap<&str, Vec<&InteractionEvent>> = BTreeMap::new();
    for e in unique {
        if newly_stored(e) {
            by_interaction.entry(e.interaction.as_str()).or_default().push(e);
        }
    }
    for events in by_interaction.values_mut() {
        events.sort_by_key(|e| e.seq);
    }
    by_interaction
}

/// The interactions whose rows must be folded again from every stored event: some new event comes
/// before what their stored row has folded ([`crate::fold::folds_on_top`]).
pub(crate) fn refold_ids(
    by_interaction: &BTreeMap<&str, Vec<&InteractionEvent>>,
    rows: &BTreeMap<String, InteractionRow>,
) -> Vec<String> {
    by_interaction
        .iter()
        .filter(|(id, events)| {
            let first = events.iter().map(|e| e.seq).min().unwrap_or(u32::MAX);
            !crate::fold::folds_on_top(rows.get(**id), first)
        })
        .map(|(id, _)| id.to_string())
        .collect()
}

/// Stored events read back for a fold: `(interaction, seq, at, payload)` in seq order. A payload
/// that no longer decodes (masked by retention) is skipped.
pub(crate) fn stored_events(
    rows: Vec<(String, i64, i64, String)>,
) -> BTreeMap<String, Vec<InteractionEvent>> {
    let mut by_interaction: BTreeMap<String, Vec<InteractionEvent>> = BTreeMap::new();
    for (id, seq, at, payload) in rows {
        let (Ok(interaction), Ok(seq), Ok(kind)) = (
            domain::InteractionId::new(id.as_str()),
            u32::try_from(seq),
            serde_json::from_str::<InteractionEventKind>(&payload),
        ) else {
            tracing::warn!(interaction = %id, seq, "a stored event does not decode; left out of the fold");
            continue;
        };
        by_interaction.entry(id).or_default().push(InteractionEvent {
            interaction,
            seq,
            at: domain::Timestamp::from_millis(at),
            kind,
        });
    }
    by_interaction
}

/// Folds new events into the current rows (or fresh ones); also returns the callbacks they promised.
/// `stored` holds every stored event of the interactions [`refold_ids`] named, which are folded anew.
pub(crate) fn fold_new_events(
    by_interaction: BTreeMap<&str, Vec<&InteractionEvent>>,
    mut rows: BTreeMap<String, InteractionRow>,
    mut stored: BTreeMap<String, Vec<InteractionEvent>>,
    country: CountryCode,
) -> (Vec<InteractionRow>, Vec<CallbackRequest>) {
    let mut folded = Vec::with_capacity(by_interaction.len());
    let mut callbacks = Vec::new();
    for (id, events) in by_interaction {
        let all = stored.remove(id).unwrap_or_default();
        let row = crate::fold::fold_interaction(
            id,
            rows.remove(id),
            &events,
            || all,
            country,
            |e, row| {
                if let InteractionEventKind::CallbackRequested { number } = &e.kind {
                    callbacks.push(CallbackRequest::new(e, number.expose(), row, country));
                }
            },
        );
        folded.push(row);
    }
    (folded, callbacks)
}

/// Stores promised callbacks inside the caller's transaction; replays find them already there.
macro_rules! insert_callbacks_in_tx {
    ($tx:expr, $callbacks:expr) => {{
        for cb in $callbacks {
            sqlx::query(
                "INSERT INTO callbacks (id, customer_id, phone_e164, queue_id, interaction_id, requested_at, status) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending') ON CONFLICT (id) DO NOTHING",
            )
            .bind(cb.id)
            .bind(cb.customer_id)
            .bind(cb.phone)
            .bind(cb.queue_id)
            .bind(cb.interaction_id)
            .bind(cb.requested_at)
            .execute(&mut *$tx)
            .await?;
        }
    }};
}
pub(crate) use insert_callbacks_in_tx;

/// The SQLite batch: multi-row statements with bound values. SQLite has no row locks; the first write
/// of the transaction takes the database write lock, so the read-fold-write below cannot interleave.
async fn insert_batch_sqlite(
    pool: &SqlitePool,
    unique: &[&InteractionEvent],
    country: CountryCode,
) -> Result<usize> {
    let select_columns = INTERACTION_COLUMNS.join(", ");
    let mut tx = pool.begin_write().await?;

    // 1. The timeline, keeping only what is new.
    let mut inserted_keys: HashSet<(String, i64)> = HashSet::with_capacity(unique.len());
    for chunk in unique.chunks(EVENT_ROWS_PER_STATEMENT) {
        let mut qb = builder_for(
            pool,
            "INSERT INTO interaction_events (interaction_id, seq, at, type, payload) ",
        );
        qb.push_values(chunk, |mut b, e| {
            b.push_bind(e.interaction.as_str().to_string())
                .push_bind(i64::from(e.seq))
                .push_bind(e.at.as_millis())
                .push_bind(e.kind.name())
                .push_bind(stored_payload(e));
        });
        qb.push(" ON CONFLICT (interaction_id, seq) DO NOTHING RETURNING interaction_id, seq");
        for row in qb.build().fetch_all(&mut *tx).await? {
            inserted_keys.insert((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?));
        }
    }

    // 2. Current rows of the interactions with new events.
    let by_interaction = group_events(unique, |e| {
        inserted_keys.contains(&(e.interaction.as_str().to_string(), i64::from(e.seq)))
    });
    let ids: Vec<&str> = by_interaction.keys().copied().collect();
    let mut rows: BTreeMap<String, InteractionRow> = BTreeMap::new();
    for chunk in ids.chunks(IDS_PER_LOOKUP) {
        let mut qb = builder_for(
            pool,
            &format!("SELECT {select_columns} FROM interactions WHERE id IN ("),
        );
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(id.to_string());
        }
        qb.push(")");
        for row in qb.build_query_as::<InteractionRow>().fetch_all(&mut *tx).await? {
            rows.insert(row.id.clone(), row);
        }
    }

    // 3. Every stored event of the interactions whose new events came out of order.
    let mut stored = Vec::new();
    for chunk in refold_ids(&by_interaction, &rows).chunks(IDS_PER_LOOKUP) {
        let mut qb = builder_for(
            pool,
            "SELECT interaction_id, seq, at, payload FROM interaction_events WHERE interaction_id IN (",
        );
        let mut sep = qb.separated(", ");
        for id in chunk {
            sep.push_bind(id.clone());
        }
        qb.push(") ORDER BY interaction_id, seq");
        for row in qb.build().fetch_all(&mut *tx).await? {
            stored.push((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?, row.try_get(3)?));
        }
    }

    // 4. Fold and write back.
    let (folded, callbacks) = fold_new_events(by_interaction, rows, stored_events(stored), country);
    insert_callbacks_in_tx!(tx, callbacks);
    let upsert_tail = upsert_tail();
    let mut folded = folded.into_iter().peekable();
    while folded.peek().is_some() {
        let chunk: Vec<InteractionRow> = folded.by_ref().take(INTERACTION_ROWS_PER_STATEMENT).collect();
        let mut qb = builder_for(pool, &format!("INSERT INTO interactions ({select_columns}) "));
        qb.push_values(chunk, |mut b, r| push_interaction_row!(b, r));
        qb.push(&upsert_tail);
        qb.build().execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(inserted_keys.len())
}

impl CrmStore {
    /// Stores a batch of events idempotently and folds the new ones into their interactions, all in
    /// one transaction. Events already stored (same interaction and seq) are skipped.
    pub async fn insert_events_batch(&self, events: &[InteractionEvent]) -> Result<BatchOutcome> {
        let mut seen = HashSet::with_capacity(events.len());
        let unique: Vec<&InteractionEvent> = events
            .iter()
            .filter(|e| seen.insert((e.interaction.as_str(), e.seq)))
            .collect();
        if unique.is_empty() {
            return Ok(BatchOutcome {
                inserted: 0,
                duplicates: events.len(),
            });
        }
        let country = self.country;
        let inserted = match &self.backend {
            Backend::Sqlite(pool) => insert_batch_sqlite(pool, &unique, country).await?,
            Backend::Postgres(pool) => crate::pg_batch::insert_batch(pool, &unique, country).await?,
        };
        Ok(BatchOutcome {
            inserted,
            duplicates: events.len() - inserted,
        })
    }

    /// The naive path: one autocommitted INSERT for one event, no folding. Only for comparison in
    /// benchmarks; production writes go through [`crate::EventWriter`].
    pub async fn insert_event_naive(&self, event: &InteractionEvent) -> Result<bool> {
        // PostgreSQL's column is JSON, SQLite's TEXT: the payload goes in as text either way.
        let sql = match self.backend {
            Backend::Postgres(_) => {
                "INSERT INTO interaction_events (interaction_id, seq, at, type, payload) \
                 VALUES ($1, $2, $3, $4, $5::json) ON CONFLICT (interaction_id, seq) DO NOTHING"
            }
            Backend::Sqlite(_) => {
                "INSERT INTO interaction_events (interaction_id, seq, at, type, payload) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (interaction_id, seq) DO NOTHING"
            }
        };
        let affected = with_pool!(self, |pool| {
            sqlx::query(sql)
                .bind(event.interaction.as_str().to_string())
                .bind(i64::from(event.seq))
                .bind(event.at.as_millis())
                .bind(event.kind.name())
                .bind(stored_payload(event))
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(affected == 1)
    }

    /// The stored timeline of one interaction, in seq order (payloads as stored: masked where retention
    /// or sensitivity required it).
    pub async fn interaction_timeline(&self, id: &domain::InteractionId) -> Result<Vec<StoredEvent>> {
        // JSON is read back as text so both backends decode the same way.
        let sql = match self.backend {
            Backend::Postgres(_) => {
                "SELECT seq, at, type, payload::text FROM interaction_events WHERE interaction_id = $1 ORDER BY seq"
            }
            Backend::Sqlite(_) => {
                "SELECT seq, at, type, payload FROM interaction_events WHERE interaction_id = $1 ORDER BY seq"
            }
        };
        let rows = with_pool!(self, |pool| {
            sqlx::query_as::<_, (i64, i64, String, String)>(sql)
                .bind(id.as_str().to_string())
                .fetch_all(pool)
                .await?
        });
        rows.into_iter()
            .map(|(seq, at, kind, payload)| {
                Ok(StoredEvent {
                    seq,
                    at: domain::Timestamp::from_millis(at),
                    kind,
                    payload: serde_json::from_str(&payload)
                        .map_err(|e| crate::StoreError::Corrupt(format!("event payload: {e}")))?,
                })
            })
            .collect()
    }

    /// Callbacks still pending, oldest request first.
    pub async fn pending_callbacks(&self) -> Result<Vec<PendingCallback>> {
        let rows =
            with_pool!(self, |pool| {
                sqlx::query_as::<_, (String, Option<String>, String, Option<String>, Option<String>, i64)>(
                "SELECT id, customer_id, phone_e164, queue_id, interaction_id, requested_at FROM callbacks \
                 WHERE status = 'pending' ORDER BY requested_at, id",
            )
            .fetch_all(pool)
            .await?
            });
        Ok(rows
            .into_iter()
            .map(
                |(id, customer, phone, queue, interaction, requested_at)| PendingCallback {
                    id,
                    customer: customer.and_then(|c| domain::CustomerId::new(c).ok()),
                    phone: domain::Pii::new(phone),
                    queue: queue.and_then(|q| domain::QueueId::new(q).ok()),
                    interaction: interaction.and_then(|i| domain::InteractionId::new(i).ok()),
                    requested_at: domain::Timestamp::from_millis(requested_at),
                },
            )
            .collect())
    }

    /// Marks a callback done (or any other status, e.g. `failed`); returns whether it existed.
    pub async fn set_callback_status(&self, id: &str, status: &str) -> Result<bool> {
        let affected = with_pool!(self, |pool| {
            sqlx::query("UPDATE callbacks SET status = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(status.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(affected == 1)
    }

    /// Sets the status of the pending callbacks promised during `interaction` (`done` once the
    /// customer is reached, `failed` when not); returns how many changed.
    pub async fn settle_callbacks_of(
        &self,
        interaction: &domain::InteractionId,
        status: &str,
    ) -> Result<u64> {
        Ok(with_pool!(self, |pool| {
            sqlx::query("UPDATE callbacks SET status = $2 WHERE interaction_id = $1 AND status = 'pending'")
                .bind(interaction.to_string())
                .bind(status.to_string())
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// The stored row of one interaction, if any.
    pub async fn interaction(&self, id: &domain::InteractionId) -> Result<Option<InteractionRow>> {
        let sql = format!(
            "SELECT {} FROM interactions WHERE id = $1",
            INTERACTION_COLUMNS.join(", ")
        );
        let row = with_pool!(self, |pool| {
            sqlx::query_as::<_, InteractionRow>(sqlx::AssertSqlSafe(sql))
                .bind(id.as_str().to_string())
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    /// How many events are stored, in total or for one interaction.
    pub async fn count_events(&self, interaction: Option<&domain::InteractionId>) -> Result<i64> {
        let n = with_pool!(self, |pool| match interaction {
            Some(id) => {
                sqlx::query_scalar::<_, i64>(
                    "SELECT COUNT(*) FROM interaction_events WHERE interaction_id = $1",
                )
                .bind(id.as_str().to_string())
                .fetch_one(pool)
                .await?
            }
            None =>
                sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM interaction_events")
                    .fetch_one(pool)
                    .await?,
        });
        Ok(n)
    }

    /// The stored `(interaction, seq)` keys, for checks after a crash.
    pub async fn event_keys(&self) -> Result<Vec<(String, i64)>> {
        let keys = with_pool!(self, |pool| {
            sqlx::query_as::<_, (String, i64)>("SELECT interaction_id, seq FROM interaction_events")
                .fetch_all(pool)
                .await?
        });
        Ok(keys)
    }
}
