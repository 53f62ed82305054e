//! Measures operations per second of the state store with several concurrent tasks, on the memory
//! backend and, when `REDIS_URL` is set, on Redis (keys under a throw-away prefix, deleted afterwards).
//!
//! `REDIS_URL=redis://127.0.0.1:6379/ cargo run --release -p state-store --example throughput [OPS] [TASKS]`
//! prints one JSON object per backend and operation.

use domain::{AgentId, CallId, QueueId, Timestamp};
use state_store::{
    Aor, Binding, BlobWrite, Expect, QueueEntry, QueueOrder, StateConfig, StateError, StateStore,
    TokenBucket, Transport, WriteBatch, WriteOutcome,
};
use std::future::Future;
use std::time::{Duration, Instant};

async fn measure<F, Fut>(
    backend: &str,
    op: &str,
    (total, tasks_n): (usize, usize),
    f: F,
) -> Result<(), StateError>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), StateError>> + Send,
{
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..tasks_n {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(total / tasks_n);
            for i in 0..total / tasks_n {
                let one = Instant::now();
                f(t * total + i).await?;
                latencies.push(one.elapsed());
            }
            Ok::<_, StateError>(latencies)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        match task.await {
            Ok(r) => all.extend(r?),
            Err(e) => return Err(StateError::Config(format!("task failed: {e}"))),
        }
    }
    let elapsed = started.elapsed();
    all.sort();
    let pct = |p: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((all.len() as f64 - 1.0) * p) as usize;
        all.get(i).copied().unwrap_or_default().as_micros()
    };
    #[allow(clippy::cast_precision_loss)]
    let rate = all.len() as f64 / elapsed.as_secs_f64();
    println!(
        "{{\"backend\":\"{backend}\",\"op\":\"{op}\",\"ops\":{},\"tasks\":{tasks_n},\"ops_per_sec\":{rate:.0},\"p50_us\":{},\"p99_us\":{}}}",
        all.len(),
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}

fn id<T: std::str::FromStr>(s: String) -> Result<T, StateError> {
    s.parse().map_err(|_| StateError::Config("bad id".to_string()))
}

async fn run(store: StateStore, total: (usize, usize)) -> Result<(), StateError> {
    let b = store.backend_name();
    let s = store.clone();
    measure(b, "presence_cas", total, move |i| {
        let s = s.clone();
        async move {
            let agent: AgentId = id(format!("agent{}", i % 5000))?;
            let cur = s.get_presence::<u64>(&agent).await?;
            let expect = cur
                .as_ref()
                .map_or(Expect::Absent, |c| Expect::Version(c.version));
            match s.cas_presence(&agent, expect, &(i as u64)).await? {
                WriteOutcome::Written { .. } | WriteOutcome::Conflict { .. } => Ok(()),
            }
        }
    })
    .await?;
    let s = store.clone();
    measure(b, "queue_add", total, move |i| {
        let s = s.clone();
        async move {
            let queue: QueueId = id(format!("q{}", i % 500))?;
            let entry = QueueEntry {
                call: id::<CallId>(format!("call{i}"))?,
                order: QueueOrder::new(i64::try_from(i).unwrap_or(0))?,
                payload: br#"{"priority":3,"skills":"billing >= 2"}"#.to_vec(),
            };
            s.queue_add(&queue, entry, None).await.map(|_| ())
        }
    })
    .await?;
    let lease = store
        .acquire_lease(
            "bench-router",
            "node-a",
            Duration::from_secs(3600),
            Timestamp::from_secs(1),
        )
        .await?
        .ok_or_else(|| StateError::Config("lease taken".to_string()))?;
    let s = store.clone();
    let fence = lease.fence();
    measure(b, "offer_batch", total, move |i| {
        let s = s.clone();
        let fence = fence.clone();
        async move {
            // One routing decision: dequeue the call, reserve the agent, save the router snapshot.
            let mut batch = WriteBatch::fenced(fence);
            batch.queue_remove(id(format!("q{}", i % 500))?, id(format!("call{i}"))?);
            batch.presence(id(format!("agent{}", i % 5000))?, Expect::Any, &"Reserved")?;
            batch.put_blob("acd", "router", vec![1u8; 256], None);
            s.apply(batch, Timestamp::from_secs(1)).await.map(|_| ())
        }
    })
    .await?;
    let s = store.clone();
    measure(b, "queue_remove", total, move |i| {
        let s = s.clone();
        async move {
            let queue: QueueId = id(format!("q{}", i % 500))?;
            s.queue_remove(&queue, &id::<CallId>(format!("call{i}"))?, None)
                .await
                .map(|_| ())
        }
    })
    .await?;
    let s = store.clone();
    let fence = lease.fence();
    measure(b, "blob_put_fenced_1KiB", total, move |i| {
        let s = s.clone();
        let opts = BlobWrite::new()
            .fenced(fence.clone())
            .ttl(Duration::from_secs(600));
        async move {
            s.put_blob(
                "ivr-session",
                &format!("call{}", i % 10_000),
                &[7u8; 1024],
                &opts,
                Timestamp::from_secs(1),
            )
            .await
            .map(|_| ())
        }
    })
    .await?;
    let s = store.clone();
    measure(b, "register", total, move |i| {
        let s = s.clone();
        async move {
            let aor = Aor::new(format!("{}", 1000 + i % 5000))?;
            let binding = Binding {
                contact: format!("sip:{}@10.0.0.1:5060", i % 5000),
                expires_at: Timestamp::from_secs(3600),
                call_id: format!("reg{i}"),
                cseq: 1,
                source: "10.0.0.1:5060"
                    .parse()
                    .map_err(|_| StateError::Config("addr".into()))?,
                transport: Transport::Udp,
            };
            s.upsert_binding(&aor, binding, Timestamp::from_secs(1)).await
        }
    })
    .await?;
    let s = store.clone();
    measure(b, "live_bindings", total, move |i| {
        let s = s.clone();
        async move {
            s.live_bindings(
                &Aor::new(format!("{}", 1000 + i % 5000))?,
                Timestamp::from_secs(2),
            )
            .await
            .map(|_| ())
        }
    })
    .await?;
    let s = store.clone();
    let bucket = TokenBucket::new(100, 50)?;
    measure(b, "rate_take", total, move |i| {
        let s = s.clone();
        async move {
            s.rate_take(&format!("src{}", i % 1000), bucket, 1, Timestamp::from_secs(1))
                .await
                .map(|_| ())
        }
    })
    .await?;
    let s = store.clone();
    measure(b, "stream_append", total, move |i| {
        let s = s.clone();
        async move {
            s.stream_append("crm-outbox", format!("event {i}").as_bytes())
                .await
                .map(|_| ())
        }
    })
    .await?;
    Ok(())
}

fn delete_prefix(url: &str, prefix: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut conn) = client.get_connection() else {
        return;
    };
    let pattern = format!("{prefix}:*");
    let keys: Vec<String> = match redis::Commands::scan_match::<_, String>(&mut conn, pattern.as_str()) {
        Ok(iter) => iter.filter_map(Result::ok).collect(),
        Err(_) => return,
    };
    for chunk in keys.chunks(1000) {
        let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
    }
}

#[tokio::main]
async fn main() -> Result<(), StateError> {
    let arg = |n: usize, default: usize| {
        std::env::args()
            .nth(n)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let total = (arg(1, 40_000), arg(2, 8).max(1));
    run(StateStore::memory(), total).await?;
    if let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.is_empty()) {
        let prefix = format!("throughput-{}", std::process::id());
        let store = StateStore::connect(&StateConfig::redis(&url, &prefix)).await?;
        let result = run(store, total).await;
        delete_prefix(&url, &prefix);
        result?;
    } else {
        eprintln!("REDIS_URL is not set: Redis not measured");
    }
    Ok(())
}
