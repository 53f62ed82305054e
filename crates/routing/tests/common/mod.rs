//! Test support: a store on each backend (for Redis a fresh key prefix per test, deleted when the
//! test ends), configurations, and a small simulation of the calls a node holds.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod load;
pub mod procs;

use acd::{AcdConfig, AgentConfig, CallRequest, Priority, QueueConfig, QueueMembership};
use domain::{AgentId, CallId, QueueId, Timestamp};
use routing::{ClientConfig, Clock, LeaderConfig, QueueNotice, RouterClient};
use state_store::{StateConfig, StateStore};
use std::io::Write;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// Generates `NAME::memory` and `NAME::redis` tests running `async fn NAME(Harness)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$name(super::common::Harness::memory()).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                if let Some(h) = super::common::Harness::redis(stringify!($name)).await {
                    super::$name(h).await;
                }
            }
        }
    )*};
}

pub struct Harness {
    pub store: StateStore,
    pub redis: Option<RedisSpace>,
}

pub struct RedisSpace {
    pub url: String,
    pub prefix: String,
}

impl Drop for RedisSpace {
    fn drop(&mut self) {
        delete_prefix(&self.url, &self.prefix);
    }
}

/// Deletes every key under `prefix`.
pub fn delete_prefix(url: &str, prefix: &str) {
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
    for chunk in keys.chunks(500) {
        let _: Result<i64, _> = redis::cmd("DEL").arg(chunk).query(&mut conn);
    }
}

static SKIP_NOTICE: Once = Once::new();

/// Sends the router's and the store's logs to the test's output (shown when a test fails), at
/// debug unless `RUST_LOG` says otherwise: a failover test that fails must say what the store did.
pub fn log_to_test_output() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("routing=debug,state_store=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_test_writer()
        .try_init();
}
static COUNTER: AtomicU64 = AtomicU64::new(0);

pub fn unique_prefix(test: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("routing-test-{test}-{}-{nanos}-{n}", std::process::id())
}

pub fn redis_url() -> Option<String> {
    let url = std::env::var("REDIS_URL").ok().filter(|u| !u.trim().is_empty());
    if url.is_none() {
        SKIP_NOTICE.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "\n*** routing tests: REDIS_URL is not set (or empty), the Redis backend tests are SKIPPED ***\n"
            );
        });
    }
    url
}

impl Harness {
    pub fn memory() -> Self {
        Self {
            store: StateStore::memory(),
            redis: None,
        }
    }

    pub async fn redis(test: &str) -> Option<Self> {
        let url = redis_url()?;
        let prefix = unique_prefix(test);
        let store = StateStore::connect(&StateConfig::redis(&url, &prefix))
            .await
            .expect("connect to REDIS_URL");
        Some(Self {
            store,
            redis: Some(RedisSpace { url, prefix }),
        })
    }

    /// Another connection to the same data: each node and leader gets its own, as separate
    /// processes would.
    pub async fn open(&self) -> StateStore {
        match &self.redis {
            Some(space) => StateStore::connect(&StateConfig::redis(&space.url, &space.prefix))
                .await
                .expect("reconnect"),
            None => self.store.clone(),
        }
    }

    pub async fn client(&self, name: &str, clock: Clock) -> RouterClient {
        RouterClient::start(self.open().await, ClientConfig::new(name), clock)
            .await
            .expect("client starts")
    }
}

pub fn q(s: &str) -> QueueId {
    QueueId::new(s).unwrap()
}
pub fn a(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}
pub fn c(s: &str) -> CallId {
    CallId::new(s).unwrap()
}

/// One queue `support` served by agents `a1..=agents`, wrap-up `wrap_up_secs`.
pub fn config(agents: usize, wrap_up_secs: u32) -> AcdConfig {
    AcdConfig {
        queues: vec![QueueConfig {
            wrap_up_secs,
            ..QueueConfig::new(q("support"))
        }],
        agents: (1..=agents)
            .map(|i| AgentConfig {
                id: a(&format!("a{i}")),
                skills: Default::default(),
                queues: vec![QueueMembership {
                    queue: q("support"),
                    rank: 1,
                }],
            })
            .collect(),
        random_seed: 11,
    }
}

/// A leader configuration with timings fit for tests (short waits, same lease).
pub fn leader_config(name: &str, acd: AcdConfig) -> LeaderConfig {
    LeaderConfig {
        idle_block: Duration::from_millis(50),
        ..LeaderConfig::new(name, acd)
    }
}

pub fn call_p(id: &str, priority: u8) -> CallRequest {
    CallRequest {
        priority: Priority::new(priority).unwrap(),
        ..CallRequest::new(c(id), q("support"))
    }
}

pub fn t(ms: i64) -> Timestamp {
    Timestamp::from_millis(ms)
}

/// Waits for the next offer on a call's notices (other notices are skipped), at most 20 s.
pub async fn next_offer(rx: &mut mpsc::UnboundedReceiver<QueueNotice>) -> acd::Offer {
    next_offer_within(rx, Duration::from_secs(20)).await
}

/// Waits for the next offer on a call's notices (other notices are skipped), at most `limit`.
pub async fn next_offer_within(rx: &mut mpsc::UnboundedReceiver<QueueNotice>, limit: Duration) -> acd::Offer {
    loop {
        let notice = tokio::time::timeout(limit, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("an offer within {limit:?}"))
            .expect("notices open");
        if let QueueNotice::Offer(o) = notice {
            return o;
        }
    }
}

/// Waits until `f` holds, checking every 20 ms, at most 20 s.
pub async fn eventually<F: FnMut() -> bool>(what: &str, mut f: F) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
