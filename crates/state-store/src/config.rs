//! Which backend the state store uses, as read from the `[state]` section of the configuration.
//!
//! ```toml
//! [state]
//! backend = "memory"
//! ```
//! or, for several nodes sharing one Redis:
//! ```toml
//! [state.backend.redis]
//! url = "redis://127.0.0.1:6379/"
//! prefix = "cc"
//! ```
//! or, with no single point of failure, a primary and replicas watched by Redis Sentinel:
//! ```toml
//! [state.backend.sentinel]
//! sentinels = ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"]
//! service = "callcenter"
//! prefix = "cc"
//! replicas = 1    # durable writes wait until one replica has them
//! ```

use serde::{Deserialize, Serialize};

/// Configuration of the state store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Where live state is kept.
    #[serde(default)]
    pub backend: BackendConfig,
}

/// Where live state is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendConfig {
    /// In this process only: lost on restart, not shared between nodes. The embedded default.
    #[default]
    Memory,
    /// In Redis: survives a restart of the node and is shared by every node using the same prefix.
    Redis {
        /// `redis://[user:password@]host:port/db` (or `rediss://` for TLS). Never logged: it may hold a password.
        url: String,
        /// Start of every key, so several deployments (or tests) can share one Redis. With Redis Cluster,
        /// wrap it in braces (`{cc}`) so that all keys share one slot and the Lua scripts may touch several.
        #[serde(default = "default_prefix")]
        prefix: String,
    },
    /// In Redis, through Redis Sentinel: the store connects to whichever server the sentinels name as
    /// the primary of `service` and follows it across failovers.
    Sentinel {
        /// `redis://[user:password@]host:port` of each sentinel (their own credentials, if any).
        sentinels: Vec<String>,
        /// The name the sentinels monitor the primary under (`sentinel monitor <service> ...`).
        service: String,
        /// Start of every key, as with `redis`.
        #[serde(default = "default_prefix")]
        prefix: String,
        /// Database number on the primary.
        #[serde(default)]
        db: i64,
        /// User and password on the primary (the sentinels hand out only its address).
        #[serde(default)]
        username: Option<String>,
        #[serde(default)]
        password: Option<String>,
        /// Durable writes (stream appends and commits, leases, blobs, batches) are confirmed only
        /// once this many replicas have them (`WAIT`), so a failover cannot lose a confirmed write;
        /// a write not confirmed within a second is reported as an error and the primary is looked
        /// up again. 0 confirms at the primary alone.
        #[serde(default)]
        replicas: u32,
    },
}

fn default_prefix() -> String {
    "cc".to_string()
}

impl StateConfig {
    /// The in-memory backend.
    pub fn memory() -> Self {
        Self {
            backend: BackendConfig::Memory,
        }
    }
    /// A Redis backend at `url` with keys under `prefix`.
    pub fn redis(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            backend: BackendConfig::Redis {
                url: url.into(),
                prefix: prefix.into(),
            },
        }
    }
    /// A Redis backend behind `sentinels` watching `service`, keys under `prefix`, durable writes
    /// confirmed by `replicas` replicas.
    pub fn sentinel(
        sentinels: Vec<String>,
        service: impl Into<String>,
        prefix: impl Into<String>,
        replicas: u32,
    ) -> Self {
        Self {
            backend: BackendConfig::Sentinel {
                sentinels,
                service: service.into(),
                prefix: prefix.into(),
                db: 0,
                username: None,
                password: None,
                replicas,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Root {
        state: StateConfig,
    }

    fn parse(text: &str) -> Result<StateConfig, toml::de::Error> {
        toml::from_str::<Root>(text).map(|r| r.state)
    }

    #[test]
    fn memory_is_the_default() {
        assert_eq!(parse("[state]\n").unwrap(), StateConfig::memory());
        assert_eq!(
            parse("[state]\nbackend = \"memory\"\n").unwrap(),
            StateConfig::memory()
        );
    }

    #[test]
    fn redis_takes_url_and_prefix() {
        let text = "[state.backend.redis]\nurl = \"redis://127.0.0.1:6379/\"\nprefix = \"{cc}\"\n";
        assert_eq!(
            parse(text).unwrap(),
            StateConfig::redis("redis://127.0.0.1:6379/", "{cc}")
        );
        let text = "[state.backend.redis]\nurl = \"redis://r/\"\n";
        assert_eq!(parse(text).unwrap(), StateConfig::redis("redis://r/", "cc"));
    }

    #[test]
    fn sentinel_takes_sentinels_service_and_replicas() {
        let text = "[state.backend.sentinel]\nsentinels = [\"redis://s1:26379\", \"redis://s2:26379\"]\nservice = \"cc\"\nreplicas = 1\n";
        assert_eq!(
            parse(text).unwrap(),
            StateConfig::sentinel(
                vec!["redis://s1:26379".into(), "redis://s2:26379".into()],
                "cc",
                "cc",
                1
            )
        );
        assert!(
            parse("[state.backend.sentinel]\nsentinels = []\n").is_err(),
            "service is required"
        );
        assert!(parse("[state.backend.sentinel]\nservice = \"cc\"\nsentinel = []\n").is_err());
    }

    #[test]
    fn mistakes_are_reported_not_ignored() {
        assert!(parse("[state]\nbackend = \"postgres\"\n").is_err());
        assert!(parse("[state]\nbakend = \"memory\"\n").is_err());
        let typo = "[state.backend.redis]\nurl = \"redis://r/\"\nprefx = \"x\"\n";
        assert!(parse(typo).is_err());
        assert!(
            parse("[state.backend.redis]\nprefix = \"x\"\n").is_err(),
            "url is required"
        );
    }
}
