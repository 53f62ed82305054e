//! The PostgreSQL batch: events go in by `COPY` (or, when some may be stored already, by an
//! `INSERT ... ON CONFLICT DO NOTHING` over unnested arrays); interactions' rows are read with an index
//! join and written back with every column bound as one array, so a batch of thousands of events is a
//! handful of statements. Rows being folded are locked in id order so concurrent writers neither lose
//! updates nor deadlock.

use crate::error::{Result, StoreError};
use crate::events::{
    fold_new_events, group_events, insert_callbacks_in_tx, refold_ids, stored_events, upsert_tail,
};
use crate::fold::{INTERACTION_COLUMNS, InteractionRow, stored_payload};
use crate::phone::CountryCode;
use domain::InteractionEvent;
use sqlx::postgres::PgPool;
use std::collections::{BTreeMap, HashSet};

/// PostgreSQL type of each column of [`INTERACTION_COLUMNS`], for the array casts.
const INTERACTION_COLUMN_TYPES: [&str; 35] = [
    "text",
    "text",
    "text",
    "text",
    "text",
    "text", // id .. called_number
    "bigint",
    "bigint",
    "bigint",
    "bigint",
    "bigint",
    "bigint", // arrived_at .. wrapped_at
    "text",
    "text",
    "bigint",
    "bigint",
    "text", // ivr_path, queue_id, priority, wait_ms, agent_id
    "bigint",
    "bigint",
    "bigint",
    "bigint", // talk_ms, hold_ms, held_since, wrap_ms
    "text",
    "text",
    "boolean",
    "text",
    "text",
    "text", // ended_by .. recording_path
    "bigint",
    "double precision",
    "text",
    "text",
    "text",
    "text", // survey_score .. dial_outcome
    "bigint",
    "bigint", // last_seq, masked_at
];

/// Interaction rows as columns, in [`INTERACTION_COLUMNS`] order.
#[derive(Default)]
struct Columns {
    id: Vec<String>,
    channel: Vec<Option<String>>,
    direction: Vec<Option<String>>,
    customer_id: Vec<Option<String>>,
    caller_number: Vec<Option<String>>,
    called_number: Vec<Option<String>>,
    arrived_at: Vec<Option<i64>>,
    queued_at: Vec<Option<i64>>,
    offered_at: Vec<Option<i64>>,
    answered_at: Vec<Option<i64>>,
    ended_at: Vec<Option<i64>>,
    wrapped_at: Vec<Option<i64>>,
    ivr_path: Vec<String>,
    queue_id: Vec<Option<String>>,
    priority: Vec<Option<i64>>,
    wait_ms: Vec<Option<i64>>,
    agent_id: Vec<Option<String>>,
    talk_ms: Vec<Option<i64>>,
    hold_ms: Vec<i64>,
    held_since: Vec<Option<i64>>,
    wrap_ms: Vec<Option<i64>>,
    ended_by: Vec<Option<String>>,
    end_reason: Vec<Option<String>>,
    abandoned: Vec<bool>,
    disposition: Vec<Option<String>>,
    notes: Vec<Option<String>>,
    recording_path: Vec<Option<String>>,
    survey_score: Vec<Option<i64>>,
    mos: Vec<Option<f64>>,
    routing_explanation: Vec<Option<String>>,
    campaign_id: Vec<Option<String>>,
    lead_id: Vec<Option<String>>,
    dial_outcome: Vec<Option<String>>,
    last_seq: Vec<i64>,
    masked_at: Vec<Option<i64>>,
}

impl Columns {
    fn push(&mut self, r: InteractionRow) {
        self.id.push(r.id);
        self.channel.push(r.channel);
        self.direction.push(r.direction);
        self.customer_id.push(r.customer_id);
        self.caller_number.push(r.caller_number);
        self.called_number.push(r.called_number);
        self.arrived_at.push(r.arrived_at);
        self.queued_at.push(r.queued_at);
        self.offered_at.push(r.offered_at);
        self.answered_at.push(r.answered_at);
        self.ended_at.push(r.ended_at);
        self.wrapped_at.push(r.wrapped_at);
        self.ivr_path.push(r.ivr_path);
        self.queue_id.push(r.queue_id);
        self.priority.push(r.priority);
        self.wait_ms.push(r.wait_ms);
        self.agent_id.push(r.agent_id);
        self.talk_ms.push(r.talk_ms);
        self.hold_ms.push(r.hold_ms);
        self.held_since.push(r.held_since);
        self.wrap_ms.push(r.wrap_ms);
        self.ended_by.push(r.ended_by);
        self.end_reason.push(r.end_reason);
        self.abandoned.push(r.abandoned);
        self.disposition.push(r.disposition);
        self.notes.push(r.notes);
        self.recording_path.push(r.recording_path);
        self.survey_score.push(r.survey_score);
        self.mos.push(r.mos);
        self.routing_explanation.push(r.routing_explanation);
        self.campaign_id.push(r.campaign_id);
        self.lead_id.push(r.lead_id);
        self.dial_outcome.push(r.dial_outcome);
        self.last_seq.push(r.last_seq);
        self.masked_at.push(r.masked_at);
    }
}

/// Inserts rows given as column arrays; fails on an existing id.
fn insert_sql() -> String {
    let arrays: Vec<String> = INTERACTION_COLUMN_TYPES
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", i + 1))
        .collect();
    format!(
        "INSERT INTO interactions ({}) SELECT * FROM UNNEST({})",
        INTERACTION_COLUMNS.join(", "),
        arrays.join(", "),
    )
}

/// Inserts or replaces rows given as column arrays.
fn upsert_sql() -> String {
    format!("{}{}", insert_sql(), upsert_tail())
}

/// Stores a batch and folds it, in one transaction; returns how many events were new.
///
/// First optimistically, as if every event were new (the durable writer's normal case): the events go
/// in by `COPY`, the interactions' rows are read by an index join and written back, and rows not
/// found are inserted plainly. If any event or new row was already there (a replay, or a batch whose
/// commit was acknowledged to the server but not to us), PostgreSQL refuses it as a duplicate, the
/// transaction rolls back, and the batch is written again by [`insert_idempotent`], which skips what
/// is stored.
pub(crate) async fn insert_batch(
    pool: &PgPool,
    unique: &[&InteractionEvent],
    country: CountryCode,
) -> Result<usize> {
    match insert_fresh(pool, unique, country).await {
        Err(StoreError::Sql(sqlx::Error::Database(db))) if db.code().as_deref() == Some(UNIQUE_VIOLATION) => {
            insert_idempotent(pool, unique, country).await
        }
        other => other,
    }
}

/// SQLSTATE of a duplicate key.
const UNIQUE_VIOLATION: &str = "23505";

/// The optimistic path of [`insert_batch`]: fails with a unique violation when anything was stored.
async fn insert_fresh(pool: &PgPool, unique: &[&InteractionEvent], country: CountryCode) -> Result<usize> {
    let mut data = Vec::with_capacity(unique.len() * 96);
    for e in unique {
        copy_row(e, &mut data);
    }
    let by_interaction = group_events(unique, |_| true);
    let ids: Vec<String> = by_interaction.keys().map(|id| id.to_string()).collect();

    let mut tx = pool.begin().await?;
    let mut copy = tx
        .copy_in_raw("COPY interaction_events (interaction_id, seq, at, type, payload) FROM STDIN")
        .await?;
    if let Err(e) = copy.send(data).await {
        // Ends the COPY so the connection is usable; the error that matters is the send's.
        let _ = copy.abort("batch not sent").await;
        return Err(e.into());
    }
    copy.finish().await?;

    let rows = lock_rows(&mut tx, &ids).await?;
    let found: HashSet<String> = rows.keys().cloned().collect();
    let stored = read_stored(&mut tx, &refold_ids(&by_interaction, &rows)).await?;
    let (folded, callbacks) = fold_new_events(by_interaction, rows, stored, country);
    insert_callbacks_in_tx!(tx, callbacks);
    let (existing, new): (Vec<InteractionRow>, Vec<InteractionRow>) =
        folded.into_iter().partition(|r| found.contains(&r.id));
    write_rows(&mut tx, existing, &upsert_sql()).await?;
    // A plain insert: a row that appeared meanwhile is a duplicate key, and the batch starts over.
    write_rows(&mut tx, new, &insert_sql()).await?;
    tx.commit().await?;
    Ok(unique.len())
}

/// Stores the events not stored yet and folds only those; safe to repeat.
async fn insert_idempotent(
    pool: &PgPool,
    unique: &[&InteractionEvent],
    country: CountryCode,
) -> Result<usize> {
    let mut interaction_ids = Vec::with_capacity(unique.len());
    let mut seqs = Vec::with_capacity(unique.len());
    let mut ats = Vec::with_capacity(unique.len());
    let mut types = Vec::with_capacity(unique.len());
    let mut payloads = Vec::with_capacity(unique.len());
    for e in unique {
        interaction_ids.push(e.interaction.as_str().to_string());
        seqs.push(i64::from(e.seq));
        ats.push(e.at.as_millis());
        types.push(e.kind.name());
        payloads.push(stored_payload(e));
    }

    let mut tx = pool.begin().await?;
    // 1. The timeline, keeping only what is new.
    let inserted: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO interaction_events (interaction_id, seq, at, type, payload) \
         SELECT i, s, a, t, p::json FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[]) \
         AS e(i, s, a, t, p) \
         ON CONFLICT (interaction_id, seq) DO NOTHING RETURNING interaction_id, seq",
    )
    .bind(&interaction_ids)
    .bind(&seqs)
    .bind(&ats)
    .bind(&types)
    .bind(&payloads)
    .fetch_all(&mut *tx)
    .await?;
    let inserted: HashSet<(String, i64)> = inserted.into_iter().collect();

    // 2. Current rows, locked in id order (placeholders first, so every row exists to be locked).
    let by_interaction = group_events(unique, |e| {
        inserted.contains(&(e.interaction.as_str().to_string(), i64::from(e.seq)))
    });
    let ids: Vec<String> = by_interaction.keys().map(|id| id.to_string()).collect();
    sqlx::query(
        "INSERT INTO interactions (id) SELECT UNNEST($1::text[]) ORDER BY 1 ON CONFLICT (id) DO NOTHING",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    let rows = lock_rows(&mut tx, &ids).await?;

    // 3. Fold and write back (folding anew the interactions whose new events came out of order).
    let stored = read_stored(&mut tx, &refold_ids(&by_interaction, &rows)).await?;
    let (folded, callbacks) = fold_new_events(by_interaction, rows, stored, country);
    insert_callbacks_in_tx!(tx, callbacks);
    write_rows(&mut tx, folded, &upsert_sql()).await?;
    tx.commit().await?;
    Ok(inserted.len())
}

/// Reads and locks, in id order, the interactions' rows that exist. A join with the unnested ids,
/// not `id = ANY($1)`: the generic plan of the latter can turn into a scan of the whole table.
async fn lock_rows(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    ids: &[String],
) -> Result<BTreeMap<String, InteractionRow>> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let columns: Vec<String> = INTERACTION_COLUMNS.iter().map(|c| format!("i.{c}")).collect();
    let select = format!(
        "SELECT {} FROM interactions i JOIN UNNEST($1::text[]) AS k(id) ON i.id = k.id \
         ORDER BY i.id FOR UPDATE OF i",
        columns.join(", ")
    );
    Ok(sqlx::query_as::<_, InteractionRow>(sqlx::AssertSqlSafe(select))
        .bind(ids)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect())
}

/// Every stored event of these interactions, in seq order (for a fold from the start).
async fn read_stored(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    ids: &[String],
) -> Result<BTreeMap<String, Vec<InteractionEvent>>> {
    if ids.is_empty() {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<(String, i64, i64, String)> = sqlx::query_as(
        "SELECT e.interaction_id, e.seq, e.at, e.payload::text FROM interaction_events e \
         JOIN UNNEST($1::text[]) AS k(id) ON e.interaction_id = k.id ORDER BY e.interaction_id, e.seq",
    )
    .bind(ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(stored_events(rows))
}

/// Writes rows with `sql` (the upsert or the plain insert), every column bound as one array.
async fn write_rows(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    rows: Vec<InteractionRow>,
    sql: &str,
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut c = Columns::default();
    for row in rows {
        c.push(row);
    }
    sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
        .bind(c.id)
        .bind(c.channel)
        .bind(c.direction)
        .bind(c.customer_id)
        .bind(c.caller_number)
        .bind(c.called_number)
        .bind(c.arrived_at)
        .bind(c.queued_at)
        .bind(c.offered_at)
        .bind(c.answered_at)
        .bind(c.ended_at)
        .bind(c.wrapped_at)
        .bind(c.ivr_path)
        .bind(c.queue_id)
        .bind(c.priority)
        .bind(c.wait_ms)
        .bind(c.agent_id)
        .bind(c.talk_ms)
        .bind(c.hold_ms)
        .bind(c.held_since)
        .bind(c.wrap_ms)
        .bind(c.ended_by)
        .bind(c.end_reason)
        .bind(c.abandoned)
        .bind(c.disposition)
        .bind(c.notes)
        .bind(c.recording_path)
        .bind(c.survey_score)
        .bind(c.mos)
        .bind(c.routing_explanation)
        .bind(c.campaign_id)
        .bind(c.lead_id)
        .bind(c.dial_outcome)
        .bind(c.last_seq)
        .bind(c.masked_at)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// One event as a line of `COPY ... FROM STDIN` text format.
fn copy_row(e: &InteractionEvent, out: &mut Vec<u8>) {
    use std::io::Write;
    copy_text(e.interaction.as_str(), out);
    // Writing into a Vec cannot fail.
    let _ = write!(out, "\t{}\t{}\t", e.seq, e.at.as_millis());
    copy_text(e.kind.name(), out);
    out.push(b'\t');
    copy_text(&stored_payload(e), out);
    out.push(b'\n');
}

/// Escapes a value for COPY's text format: backslash, and the tab, newline and carriage return that
/// would end a column or row. (JSON escapes its own control characters; ids have none.)
fn copy_text(value: &str, out: &mut Vec<u8>) {
    for b in value.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_casts_every_column() {
        let sql = upsert_sql();
        assert!(sql.contains("$35::bigint[]"));
        assert!(!sql.contains("$36"));
        assert!(sql.contains("$24::boolean[]"), "abandoned is the 24th column");
        assert_eq!(INTERACTION_COLUMNS[23], "abandoned");
        assert_eq!(INTERACTION_COLUMNS[28], "mos");
        assert_eq!(INTERACTION_COLUMN_TYPES[28], "double precision");
    }
}
