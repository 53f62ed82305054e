//! Test support shared by the integration tests: a store on each backend, and for Redis a fresh key
//! prefix per test whose keys are deleted when the test ends, pass or fail.

#![allow(dead_code)]

use state_store::{StateConfig, StateStore};
use std::io::Write;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// A store to test plus, for Redis, what to delete when the test ends (even if it failed).
pub struct Harness {
    pub store: StateStore,
    pub redis: Option<RedisTestSpace>,
}

pub struct RedisTestSpace {
    url: String,
    prefix: String,
}

impl Drop for RedisTestSpace {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut conn) = client.get_connection() else {
            return;
        };
        let pattern = format!("{}:*", self.prefix);
        let pattern = pattern.as_str();
        let keys: Vec<String> = match redis::Commands::scan_match::<_, String>(&mut conn, pattern) {
            Ok(iter) => iter.filter_map(Result::ok).collect(),
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query(&mut conn);
        }
    }
}

static SKIP_NOTICE: Once = Once::new();

static PREFIX_COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_prefix(test: &str) -> String {
    let n = PREFIX_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("state-store-test-{test}-{}-{nanos}-{n}", std::process::id())
}

impl Harness {
    pub fn memory() -> Self {
        Self {
            store: StateStore::memory(),
            redis: None,
        }
    }

    /// A Redis-backed store under a fresh prefix, or `None` (with a notice) when `REDIS_URL` is unset.
    pub async fn redis(test: &str) -> Option<Self> {
        let Some(url) = std::env::var("REDIS_URL").ok().filter(|u| !u.trim().is_empty()) else {
            SKIP_NOTICE.call_once(|| {
                // Written straight to stderr so the test harness does not swallow it.
                let _ = writeln!(
                    std::io::stderr(),
                    "\n*** state-store suite: REDIS_URL is not set (or empty), the Redis backend tests are SKIPPED ***\n"
                );
            });
            return None;
        };
        let prefix = unique_prefix(test);
        let store = StateStore::connect(&StateConfig::redis(&url, &prefix))
            .await
            .expect("connect to REDIS_URL");
        Some(Self {
            store,
            redis: Some(RedisTestSpace { url, prefix }),
        })
    }

    /// A second, independent connection to the same data (another node, or this one after a restart).
    pub async fn reopen(&self) -> StateStore {
        match &self.redis {
            Some(space) => StateStore::connect(&StateConfig::redis(&space.url, &space.prefix))
                .await
                .expect("reconnect"),
            None => self.store.clone(),
        }
    }
}

/// Generates `NAME::memory` and `NAME::redis` tests running `async fn NAME(Harness)`.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn memory() {
                super::$name(super::Harness::memory()).await;
            }
            #[tokio::test]
            async fn redis() {
                if let Some(h) = super::Harness::redis(stringify!($name)).await {
                    super::$name(h).await;
                }
            }
        }
    )*};
}
