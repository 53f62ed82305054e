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
