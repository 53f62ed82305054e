//! `bench crm`: interaction events offered at a fixed rate into PostgreSQL through the CRM store's durable
//! writer (fsynced journal, then batched SQL), then the same writer unthrottled, and in the same run the
//! naive path (one autocommitted INSERT per event) on a sample. Each run works in a fresh schema, dropped
//! afterwards.
//!
//! Event-to-committed latency: the writer publishes how many appended events are committed, in append
//! order; the k-th event's latency is the time the count first exceeded k minus the time it was offered
//! (its scheduled time when paced, so a stalled writer cannot hide its backlog).

use crm_store::{CrmStore, EventWriter, WriterConfig};
use domain::{
    AgentId, Channel, Direction, EndedBy, InteractionEvent, InteractionEventKind, InteractionId, Pii,
    QueueId, Timestamp,
};
use serde_json::{Value, json};
use state_store::StateStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct CrmArgs {
    /// Events offered at `--rate` through the durable writer.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Offered events per second.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Events appended as fast as the writer takes them (its ceiling); 0 skips this phase.
    #[arg(long, default_value_t = 1_000_000)]
    saturation_events: u64,
    /// Events through the Redis stream outbox (paced, then unthrottled) when `REDIS_URL` is set; 0
    /// skips these phases.
    #[arg(long, default_value_t = 200_000)]
    stream_events: u64,
    /// Events written one INSERT at a time (autocommit): the naive path.
    #[arg(long, default_value_t = 2_000)]
    naive_events: u64,
    /// Appends waiting for durability at once.
    #[arg(long, default_value_t = 4_096)]
    in_flight: usize,
    /// Database URL; defaults to DATABASE_URL. `sqlite:PATH` works too (for a quick look).
    #[arg(long)]
    database_url: Option<String>,
    #[command(flatten)]
    tuning: WriterTuning,
}

/// The writer's settings, when a run should try other values than its defaults.
#[derive(clap::Args, Clone, Copy, Default)]
struct WriterTuning {
    /// Longest wait of a durable event before its batch goes to SQL, in ms.
    #[arg(long)]
    batch_delay_ms: Option<u64>,
    /// Most events per SQL batch.
    #[arg(long)]
    batch_events: Option<usize>,
    /// Concurrent transactions a large batch is split over (PostgreSQL).
    #[arg(long)]
    postgres_writers: Option<usize>,
}

impl WriterTuning {
    fn apply(self, config: &mut WriterConfig) {
        if let Some(ms) = self.batch_delay_ms {
            config.max_batch_delay = Duration::from_millis(ms);
        }
        if let Some(n) = self.batch_events {
            config.max_batch_events = n;
        }
        if let Some(n) = self.postgres_writers {
            config.postgres_writers = n;
        }
    }
}

/// Ten events of one call (arrival to survey), as the call driver emits them.
fn call_events(n: u64) -> Result<Vec<InteractionEvent>, String> {
    let id = InteractionId::new(format!("bench-{n}")).map_err(|e| e.to_string())?;
    let agent = AgentId::new(format!("agent-{}", n % 5_000)).map_err(|e| e.to_string())?;
    let queue = QueueId::new(format!("q{}", n % 500)).map_err(|e| e.to_string())?;
    let t = i64::try_from(n).unwrap_or(i64::MAX / 2_000) * 1_000;
    let kinds = [
        InteractionEventKind::Arrived {
            channel: Channel::Voice,
            direction: Direction::Inbound,
            from: Pii::new(format!("+1415555{:04}", n % 10_000)),
            to: Pii::new("+18005550199".into()),
        },
        InteractionEventKind::Enqueued { queue, priority: 3 },
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
            disposition: "sale".into(),
            notes: Pii::new(String::new()),
        },
        InteractionEventKind::Survey { score: 4 },
        InteractionEventKind::LookupDone {
            what: "crm".into(),
            outcome: "hit".into(),
        },
    ];
    Ok(kinds
        .into_iter()
        .enumerate()
        .map(|(seq, kind)| InteractionEvent {
            interaction: id.clone(),
            seq: seq as u32,
            at: Timestamp::from_millis(t + seq as i64 * 100),
            kind,
        })
        .collect())
}

/// Event `k` of a stream whose calls are numbered from `first_call`.
struct EventStream {
    first_call: u64,
    buffer: Vec<InteractionEvent>,
    next_call: u64,
}

impl EventStream {
    fn new(first_call: u64) -> Self {
        Self {
            first_call,
            buffer: Vec::new(),
            next_call: first_call,
        }
    }

    fn next_event(&mut self) -> Result<InteractionEvent, String> {
        if self.buffer.is_empty() {
            self.buffer = call_events(self.next_call)?;
            self.buffer.reverse();
            self.next_call += 1;
        }
        self.buffer.pop().ok_or_else(|| "no event".to_string())
    }

    fn calls(&self) -> u64 {
        self.next_call - self.first_call
    }
}

fn percentile_ms(sorted: &[u64], p: f64) -> f64 {
    crate::acd::percentile(sorted, p) as f64 / 1e3
}

/// Offers `events` to a fresh writer, paced at `rate` per second (0: as fast as it takes them), and
/// measures committed throughput and event-to-committed latency.
/// One run of the writer.
struct Phase<'a> {
    /// The local journal's folder (with the stream outbox, the dead-letter folder).
    journal: std::path::PathBuf,
    events: u64,
    /// Offered events per second; 0: as fast as the writer takes them.
    rate: u64,
    first_call: u64,
    /// Make events durable in this state store's stream instead of the journal.
    stream: Option<&'a StateStore>,
}

async fn writer_phase(
    store: &CrmStore,
    tuning: WriterTuning,
    in_flight: usize,
    phase: Phase<'_>,
) -> Result<Value, String> {
    let Phase {
        journal,
        events,
        rate,
        first_call,
        stream,
    } = phase;
    let mut config = WriterConfig::new(journal);
    tuning.apply(&mut config);
    let (writer, task) = match stream {
        None => EventWriter::start(store.clone(), config).await,
        Some(state) => {
            let outbox = adapters::StreamOutbox::new(state.clone(), "bench")
                .await
                .map_err(|e| format!("outbox: {e}"))?;
            EventWriter::start_with_outbox(store.clone(), config, Arc::new(outbox)).await
        }
    }
    .map_err(|e| format!("writer: {e}"))?;
    let start = Instant::now();
    // Committed counts over time, recorded as they change.
    let mut committed_rx = writer.committed();
    let watcher = tokio::spawn(async move {
        let mut curve: Vec<(u64, u64)> = Vec::new();
        loop {
            let count = *committed_rx.borrow_and_update();
            curve.push((start.elapsed().as_micros() as u64, count));
            if count >= events || committed_rx.changed().await.is_err() {
                break;
            }
        }
        curve
    });
    let permits = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    let mut offered_us: Vec<u64> = Vec::with_capacity(events as usize);
    let mut stream = EventStream::new(first_call);
    let mut appends = tokio::task::JoinSet::new();
    let mut failures = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    while sent < events {
        let due = if rate == 0 {
            events
        } else {
            ((start.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(events)
        };
        while sent < due {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return Err("semaphore closed".into());
            };
            // Paced: the scheduled time; unthrottled: now.
            let scheduled_us = (sent * 1_000_000)
                .checked_div(rate)
                .unwrap_or_else(|| start.elapsed().as_micros() as u64);
            offered_us.push(scheduled_us);
            let event = stream.next_event()?;
            let writer = writer.clone();
            appends.spawn(async move {
                let result = writer.append(event).await;
                drop(permit);
                result.is_ok()
            });
            sent += 1;
            while let Some(done) = appends.try_join_next() {
                if !matches!(done, Ok(true)) {
                    failures += 1;
                }
            }
        }
        if rate > 0 {
            ticker.tick().await;
        }
    }
    while let Some(done) = appends.join_next().await {
        if !matches!(done, Ok(true)) {
            failures += 1;
        }
    }
    let offered_s = start.elapsed().as_secs_f64();
    let curve = tokio::time::timeout(Duration::from_secs(120), watcher)
        .await
        .map_err(|_| "writer did not commit everything within 120 s".to_string())?
        .map_err(|e| e.to_string())?;
    let last_commit_us = curve.last().map_or(0, |(t, _)| *t);
    let committed = curve.last().map_or(0, |(_, c)| *c);
    let stats = task
        .shutdown()
        .await
        .map_err(|e| format!("writer shutdown: {e}"))?;
    drop(writer);
    // Queue curve: event k committed when the count first exceeds k.
    let mut latencies = Vec::with_capacity(offered_us.len());
    let mut point = curve.iter().peekable();
    for (k, offered) in offered_us.iter().enumerate() {
        while point.peek().is_some_and(|(_, c)| *c <= k as u64) {
            point.next();
        }
        if let Some((t, _)) = point.peek() {
            latencies.push(t.saturating_sub(*offered));
        }
    }
    latencies.sort_unstable();
    Ok(json!({
        "offered_per_sec": if rate == 0 { Value::Null } else { json!(rate) },
        "events": events,
        "calls": stream.calls(),
        "committed": committed,
        "failed_appends": failures,
        "offered_s": offered_s,
        "committed_s": last_commit_us as f64 / 1e6,
        "sustained_events_per_sec": committed as f64 / (last_commit_us as f64 / 1e6).max(1e-9),
        "p50_event_to_committed_ms": percentile_ms(&latencies, 0.5),
        "p99_event_to_committed_ms": percentile_ms(&latencies, 0.99),
        "max_event_to_committed_ms": latencies.last().map_or(0.0, |us| *us as f64 / 1e3),
        "journal_syncs": stats.journal_syncs,
        "sql_batches": stats.batches,
        "mean_events_per_batch": committed as f64 / stats.batches.max(1) as f64,
        "mean_batch_write_ms": stats.batch_write_micros as f64 / 1e3 / stats.batches.max(1) as f64,
        "batch_retries": stats.batch_retries,
        "dead_lettered": stats.dead_lettered,
    }))
}

/// A Redis state store under a prefix of this run, when `REDIS_URL` is set.
async fn stream_outbox(args: &CrmArgs) -> Result<Option<StateStore>, String> {
    if args.stream_events == 0 {
        return Ok(None);
    }
    let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) else {
        return Ok(None);
    };
    // Unique per run: runs in one process (tests) must not share a stream.
    let prefix = format!("benchcrm{}x{:x}", std::process::id(), rand_id());
    StateStore::connect(&state_store::StateConfig::redis(url, prefix))
        .await
        .map(Some)
        .map_err(|e| format!("redis: {e}"))
}

/// A random number from the standard library's hasher seeds (no dependency for one id).
fn rand_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// One autocommitted INSERT per event, sequentially.
async fn naive_phase(store: &CrmStore, events: u64, first_call: u64) -> Result<Value, String> {
    let mut stream = EventStream::new(first_call);
    let mut latencies = Vec::with_capacity(events as usize);
    let start = Instant::now();
    for _ in 0..events {
        let event = stream.next_event()?;
        let one = Instant::now();
        store
            .insert_event_naive(&event)
            .await
            .map_err(|e| format!("naive insert: {e}"))?;
        latencies.push(one.elapsed().as_micros() as u64);
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    Ok(json!({
        "events": events,
        "events_per_sec": events as f64 / elapsed.max(1e-9),
        "p50_ms": percentile_ms(&latencies, 0.5),
        "p99_ms": percentile_ms(&latencies, 0.99),
    }))
}

async fn server_settings(url: &str) -> Value {
    if !url.starts_with("postgres") {
        return json!({ "backend": "sqlite", "synchronous": "FULL" });
    }
    let Ok(pool) = sqlx::PgPool::connect(url).await else {
        return Value::Null;
    };
    let mut out = serde_json::Map::new();
    for name in ["fsync", "synchronous_commit", "wal_sync_method", "server_version"] {
        let value: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&pool)
            .await
            .ok();
        out.insert(name.into(), json!(value));
    }
    pool.close().await;
    Value::Object(out)
}

async fn drop_schema(url: &str, schema: &str) -> Result<(), String> {
    let pool = sqlx::PgPool::connect(url).await.map_err(|e| e.to_string())?;
    // The schema name is built from letters, digits and '_' only.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE"
    )))
    .execute(&pool)
    .await
    .map_err(|e| e.to_string())?;
    pool.close().await;
    Ok(())
}

async fn measure(
    args: &CrmArgs,
    store: &CrmStore,
    url: &str,
    dir: &std::path::Path,
) -> Result<Value, String> {
    store.migrate().await.map_err(|e| format!("migrate: {e}"))?;
    let phase = |name: &str, events, rate, first_call, stream| Phase {
        journal: dir.join(name),
        events,
        rate,
        first_call,
        stream,
    };
    let paced = writer_phase(
        store,
        args.tuning,
        args.in_flight,
        phase("journal-paced", args.events, args.rate, 0, None),
    )
    .await?;
    let saturation = if args.saturation_events > 0 {
        writer_phase(
            store,
            args.tuning,
            args.in_flight,
            phase(
                "journal-saturation",
                args.saturation_events,
                0,
                1_000_000_000,
                None,
            ),
        )
        .await?
    } else {
        json!({ "note": "skipped" })
    };
    let stream = match (stream_outbox(args).await?, args.stream_events) {
        (Some(state), events) if events > 0 => {
            let paced = writer_phase(
                store,
                args.tuning,
                args.in_flight,
                phase("stream-paced", events, args.rate, 3_000_000_000, Some(&state)),
            )
            .await?;
            let saturation = writer_phase(
                store,
                args.tuning,
                args.in_flight,
                phase("stream-saturation", events, 0, 4_000_000_000, Some(&state)),
            )
            .await?;
            json!({ "paced": paced, "saturation": saturation })
        }
        _ => json!({ "note": "skipped (no REDIS_URL, or --stream-events 0)" }),
    };
    let naive = naive_phase(store, args.naive_events, 2_000_000_000).await?;
    let naive_rate = naive["events_per_sec"].as_f64().filter(|r| *r > 0.0);
    let over_naive = |v: &Value| Some(v["sustained_events_per_sec"].as_f64()? / naive_rate?);
    Ok(json!({
        "benchmark": "crm",
        "backend": format!("{:?}", store.backend_kind()),
        "server": server_settings(url).await,
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "writer_paced": paced,
        "writer_saturation": saturation,
        "stream_outbox": stream,
        "naive": naive,
        "ratios": {
            "paced_sustained_over_naive": over_naive(&paced),
            "saturation_sustained_over_naive": over_naive(&saturation),
        },
    }))
}

pub fn run(args: &CrmArgs) -> Result<Value, String> {
    let url = args
        .database_url
        .clone()
        .or_else(|| std::env::var("DATABASE_URL").ok().filter(|u| !u.is_empty()))
        .ok_or("DATABASE_URL is not set (or pass --database-url)")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let postgres = url.starts_with("postgres");
        let schema = format!("bench_crm_{}", std::process::id());
        let store = if postgres {
            CrmStore::connect_in_schema(&url, &schema).await
        } else {
            CrmStore::connect(&url).await
        }
        .map_err(|e| format!("connect: {e}"))?;
        let result = measure(args, &store, &url, dir.path()).await;
        store.close().await;
        if postgres {
            drop_schema(&url, &schema).await?;
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(url: String) -> CrmArgs {
        CrmArgs {
            events: 3_000,
            rate: 20_000,
            saturation_events: 2_000,
            naive_events: 100,
            stream_events: 1_000,
            in_flight: 512,
            database_url: Some(url),
            tuning: WriterTuning::default(),
        }
    }

    fn check(json: &Value) {
        let paced = &json["writer_paced"];
        assert_eq!(paced["committed"], 3_000, "{json}");
        assert_eq!(paced["failed_appends"], 0);
        assert_eq!(paced["calls"], 300);
        let p99 = paced["p99_event_to_committed_ms"].as_f64().unwrap();
        assert!(p99 > 0.0 && p99 < 10_000.0, "{p99}");
        assert_eq!(json["writer_saturation"]["committed"], 2_000);
        if std::env::var("REDIS_URL").is_ok_and(|u| !u.is_empty()) {
            let stream = &json["stream_outbox"];
            assert_eq!(stream["paced"]["committed"], 1_000, "{stream}");
            assert_eq!(stream["saturation"]["committed"], 1_000, "{stream}");
        }
        assert!(json["naive"]["events_per_sec"].as_f64().unwrap() > 0.0);
        assert!(
            json["ratios"]["saturation_sustained_over_naive"]
                .as_f64()
                .unwrap()
                > 0.0
        );
    }

    #[test]
    fn writer_and_naive_paths_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let json = run(&tiny(format!("sqlite:{}", dir.path().join("crm.db").display()))).unwrap();
        check(&json);
    }

    #[test]
    fn writer_and_naive_paths_on_postgres_when_available() {
        let Some(url) = std::env::var("DATABASE_URL")
            .ok()
            .filter(|u| u.starts_with("postgres"))
        else {
            return;
        };
        let json = run(&tiny(url)).unwrap();
        check(&json);
        assert_eq!(json["server"]["fsync"], "on");
    }

    #[test]
    fn stream_numbers_calls_and_sequences() {
        let mut stream = EventStream::new(5);
        let events: Vec<_> = (0..25).map(|_| stream.next_event().unwrap()).collect();
        assert_eq!(stream.calls(), 3);
        assert_eq!(events[0].interaction.as_str(), "bench-5");
        assert_eq!(events[10].seq, 0);
        assert_eq!(events[24].seq, 4);
    }
}
