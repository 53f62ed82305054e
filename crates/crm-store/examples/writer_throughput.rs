//! Rough throughput check of the durable writer against the naive path, for development. The real
//! benchmark lives in the bench crate; this prints the same kind of figures for a quick look.
//!
//! `cargo run --release -p crm-store --example writer_throughput -- URL EVENTS NAIVE_EVENTS [PG_WRITERS] [RATE] [BATCH_DELAY_MS]`
//! URL defaults to a SQLite file in a temp folder.

use crm_store::{CrmStore, EventWriter, WriterConfig};
use domain::{
    AgentId, Channel, Direction, EndedBy, InteractionEvent, InteractionEventKind, InteractionId, Pii,
    QueueId, Timestamp,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn call_events(n: u64) -> Vec<InteractionEvent> {
    let id =
        InteractionId::new(format!("tp-{n}")).unwrap_or_else(|_| unreachable!("generated ids are valid"));
    let agent = AgentId::new("agent-1").unwrap_or_else(|_| unreachable!("constant id is valid"));
    let queue = QueueId::new("sales").unwrap_or_else(|_| unreachable!("constant id is valid"));
    let t = n as i64 * 1000;
    let kinds = [
        InteractionEventKind::Arrived {
            channel: Channel::Voice,
            direction: Direction::Inbound,
            from: Pii::new("+14155550100".into()),
            to: Pii::new("+18005550199".into()),
        },
        InteractionEventKind::Enqueued { queue, priority: 10 },
        InteractionEventKind::Offered {
            agent: agent.clone(),
            explanation: "longest idle".into(),
        },
        InteractionEventKind::Answered { agent: agent.clone() },
        InteractionEventKind::Held,
        InteractionEventKind::Resumed,
        InteractionEventKind::Ended {
            by: EndedBy::Caller,
            reason: "bye".into(),
            quality: None,
        },
        InteractionEventKind::WrappedUp {
            agent,
            disposition: "ok".into(),
            notes: Pii::new(String::new()),
        },
        InteractionEventKind::Survey { score: 4 },
        InteractionEventKind::LookupDone {
            what: "crm".into(),
            outcome: "hit".into(),
        },
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(seq, kind)| InteractionEvent {
            interaction: id.clone(),
            seq: seq as u32,
            at: Timestamp::from_millis(t + seq as i64 * 100),
            kind,
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = tempfile::tempdir()?;
    let default_url = format!("sqlite:{}", dir.path().join("tp.db").display());
    let url = args.get(1).cloned().unwrap_or(default_url);
    let events: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let naive_events: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let schema = format!("crm_tp_{}", std::process::id());
    let store = if url.starts_with("postgres") {
        CrmStore::connect_in_schema(&url, &schema).await?
    } else {
        CrmStore::connect(&url).await?
    };
    store.migrate().await?;

    let mut config = WriterConfig::new(dir.path().join("journal"));
    if let Some(writers) = args.get(4).and_then(|a| a.parse().ok()) {
        config.postgres_writers = writers;
    }
    let (writer, task) = EventWriter::start(store.clone(), config).await?;
    let start = Instant::now();
    let callers = 256u64;
    let mut handles = Vec::new();
    for c in 0..callers {
        let writer = writer.clone();
        handles.push(tokio::spawn(async move {
            let mut n = c;
            while n * 10 < events {
                for e in call_events(n) {
                    writer.append(e).await?;
                }
                n += callers;
            }
            Ok::<_, crm_store::StoreError>(())
        }));
    }
    for h in handles {
        h.await??;
    }
    let durable_at = start.elapsed();
    let stats = task.shutdown().await?;
    let committed_at = start.elapsed();
    println!(
        "{{\"backend\":\"{:?}\",\"events\":{},\"durable_per_s\":{:.0},\"committed_per_s\":{:.0},\"journal_syncs\":{},\"sql_batches\":{}}}",
        store.backend_kind(),
        stats.committed,
        stats.durable as f64 / durable_at.as_secs_f64(),
        stats.committed as f64 / committed_at.as_secs_f64(),
        stats.journal_syncs,
        stats.batches
    );

    // Paced load: whole calls offered at `rate` events/s, each call's events appended in order as call
    // control does; latency from the start of `append` to the batch holding the event committing.
    let rate: u64 = args.get(5).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let paced_events = events / 2;
    let mut paced_config = WriterConfig::new(dir.path().join("journal2"));
    if let Some(delay_ms) = args.get(6).and_then(|a| a.parse().ok()) {
        paced_config.max_batch_delay = Duration::from_millis(delay_ms);
    }
    let (writer, task) = EventWriter::start(store.clone(), paced_config).await?;
    let origin = Instant::now();
    let mut committed = writer.committed();
    let watcher = tokio::spawn(async move {
        let mut marks: Vec<(Duration, u64)> = Vec::new();
        while committed.changed().await.is_ok() {
            let n = *committed.borrow_and_update();
            marks.push((origin.elapsed(), n));
        }
        marks
    });
    let samples: Arc<Mutex<Vec<(Duration, u64)>>> = Arc::default();
    let mut ticker = tokio::time::interval(Duration::from_millis(10));
    let calls_per_tick = (rate / 100 / 10).max(1);
    let mut callers = tokio::task::JoinSet::new();
    let mut next_call = 3_000_000_000u64;
    while (next_call - 3_000_000_000) * 10 < paced_events {
        ticker.tick().await;
        for _ in 0..calls_per_tick {
            let writer = writer.clone();
            let samples = samples.clone();
            let n = next_call;
            next_call += 1;
            callers.spawn(async move {
                for e in call_events(n) {
                    let started = origin.elapsed();
                    writer.append(e).await?;
                    // At least this event's place in the journal (later acks only make it later).
                    let position = writer.stats().durable;
                    samples
                        .lock()
                        .map_err(|_| crm_store::StoreError::WriterClosed)?
                        .push((started, position));
                }
                Ok::<_, crm_store::StoreError>(())
            });
        }
    }
    while let Some(done) = callers.join_next().await {
        done??;
    }
    let offered_for = origin.elapsed();
    drop(writer);
    task.shutdown().await?;
    let marks = watcher.await?;
    let samples = samples.lock().map_err(|_| "poisoned")?.clone();
    let mut latencies: Vec<Duration> = samples
        .iter()
        .filter_map(|(started, position)| {
            let i = marks.partition_point(|(_, n)| n < position);
            marks.get(i).map(|(at, _)| at.saturating_sub(*started))
        })
        .collect();
    latencies.sort();
    let pick = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        latencies.get(i).map_or(0, |d| d.as_millis())
    };
    println!(
        "{{\"paced_events\":{},\"offered_per_s\":{:.0},\"latency_ms_p50\":{},\"latency_ms_p99\":{},\"latency_ms_max\":{}}}",
        latencies.len(),
        latencies.len() as f64 / offered_for.as_secs_f64(),
        pick(0.5),
        pick(0.99),
        latencies.last().map_or(0, |d| d.as_millis())
    );

    // The SQL path alone: one batch of 10,000 events (1,000 calls) straight into the store.
    let batch: Vec<InteractionEvent> = (2_000_000_000u64..2_000_001_000).flat_map(call_events).collect();
    let start = Instant::now();
    store.insert_events_batch(&batch).await?;
    println!(
        "{{\"direct_batch_events\":{},\"direct_batch_ms\":{}}}",
        batch.len(),
        start.elapsed().as_millis()
    );

    let start = Instant::now();
    let mut done = 0u64;
    'outer: for n in 1_000_000_000u64.. {
        for e in call_events(n) {
            store.insert_event_naive(&e).await?;
            done += 1;
            if done >= naive_events {
                break 'outer;
            }
        }
    }
    println!(
        "{{\"naive_events\":{done},\"naive_per_s\":{:.0}}}",
        done as f64 / start.elapsed().as_secs_f64()
    );
    store.close().await;
    if url.starts_with("postgres") {
        let pool = sqlx::PgPool::connect(&url).await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(&pool)
            .await?;
    }
    Ok(())
}
