//! What guards digest authentication beyond the password check, kept in the shared state store so
//! that it holds across every node behind the same load balancer:
//!
//! - **Replay**: each `(nonce, cnonce, nc)` (or, without `qop`, each `(nonce, response)`) is accepted
//!   once. A captured `Authorization` sent again, from any port or node, is refused. Entries lapse with
//!   the nonce's lifetime (a stale nonce is refused anyway), so memory is bounded by the successful
//!   authentications of one nonce lifetime.
//! - **Nonce secret**: one random key per cluster (created by the first node, read by the others), so a
//!   nonce issued by one node is accepted by another.
//! - **Bans**: failed authentications are counted per source address and per user at that source, in a
//!   window; past a threshold that source (or that user from that source) is refused for a while. A user
//!   is never banned everywhere, so an attacker cannot lock an agent out from their own phone. Trusted
//!   sources are never banned. Failures and bans are logged (source, reason, a hash of the user name;
//!   never a secret) and counted in `sip_auth_failures_total` / `sip_auth_bans_total`.

use crate::config::AuthGuardConfig;
use crate::metrics::GatewayMetrics;
use domain::Timestamp;
use sha2::{Digest, Sha256};
use state_store::{BlobWrite, Expect, StateStore, WriteOutcome};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;
use tracing::warn;

const NS: &str = "sip-auth";

fn short_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u32).to_be_bytes());
        h.update(p.as_bytes());
    }
    let digest = h.finalize();
    let mut s = String::with_capacity(32);
    for b in &digest[..16] {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Why an authentication failed (metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Wrong password, unknown user or forged nonce.
    Denied,
    /// Credentials already used.
    Replay,
    /// An Authorization header that does not parse.
    Malformed,
}

impl Failure {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Denied => "denied",
            Self::Replay => "replay",
            Self::Malformed => "malformed",
        }
    }
}

/// Replay detection and bans over the state store.
pub struct AuthGuard {
    store: StateStore,
    config: AuthGuardConfig,
    trusted: Vec<IpAddr>,
    nonce_ttl: Duration,
    metrics: GatewayMetrics,
}

impl AuthGuard {
    pub fn new(
        store: StateStore,
        config: AuthGuardConfig,
        trusted: Vec<IpAddr>,
        nonce_ttl: Duration,
        metrics: GatewayMetrics,
    ) -> Self {
        Self {
            store,
            config,
            trusted,
            nonce_ttl,
            metrics,
        }
    }

    /// The cluster's nonce secret: the stored one, or a fresh one stored for the other nodes.
    pub async fn nonce_secret(store: &StateStore, now: Timestamp) -> [u8; 32] {
        for _ in 0..3 {
            match store.get_blob(NS, "nonce-secret", now).await {
                Ok(Some(v)) if v.value.len() == 32 => {
                    let mut secret = [0u8; 32];
                    secret.copy_from_slice(&v.value);
                    return secret;
                }
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %e, "nonce secret unavailable from the state store; using a local one");
                    break;
                }
            }
            let fresh: [u8; 32] = rand::random();
            let write = BlobWrite::new().expect(Expect::Absent);
            match store.put_blob(NS, "nonce-secret", &fresh, &write, now).await {
                Ok(WriteOutcome::Written { .. }) => return fresh,
                Ok(WriteOutcome::Conflict { .. }) => continue, // another node was first: read theirs
                Err(e) => {
                    warn!(error = %e, "nonce secret not stored; using a local one");
                    return fresh;
                }
            }
        }
        rand::random()
    }

    /// Claims one use of these credentials; false if they were used before (a replay). A store that
    /// cannot be reached lets the request through (the password was right) and says so in the log.
    pub async fn claim(
        &self,
        nonce: &str,
        cnonce: Option<&str>,
        nc: Option<&str>,
        response: &str,
        now: Timestamp,
    ) -> bool {
        let key = match (cnonce, nc) {
            (Some(cnonce), Some(nc)) => {
                // nc is hex; "00000001" and "1" are the same count.
                let nc = u32::from_str_radix(nc.trim(), 16).unwrap_or(u32::MAX);
                format!("nc-{}", short_hash(&[nonce, cnonce, &nc.to_string()]))
            }
            _ => format!("nc-{}", short_hash(&[nonce, response])),
        };
        let write = BlobWrite::new().expect(Expect::Absent).ttl(self.nonce_ttl);
        match self.store.put_blob(NS, &key, b"1", &write, now).await {
            Ok(WriteOutcome::Written { .. }) => true,
            Ok(WriteOutcome::Conflict { .. }) => false,
            Err(e) => {
                warn!(error = %e, "nonce-count store unavailable; replay not checked");
                true
            }
        }
    }

    fn source_key(ip: IpAddr) -> String {
        format!("ban-src-{}", short_hash(&[&ip.to_string()]))
    }

    fn user_key(user: &str, ip: IpAddr) -> String {
        format!("ban-usr-{}", short_hash(&[user, &ip.to_string()]))
    }

    async fn is_set(&self, key: &str, now: Timestamp) -> bool {
        matches!(self.store.get_blob(NS, key, now).await, Ok(Some(_)))
    }

    /// Whether requests from `ip` (for `user`, when known) are refused for now.
    pub async fn banned(&self, ip: IpAddr, user: Option<&str>, now: Timestamp) -> bool {
        if !self.config.enabled() || self.trusted.contains(&ip) {
            return false;
        }
        let banned = self.is_set(&Self::source_key(ip), now).await
            || match user {
                Some(user) => self.is_set(&Self::user_key(user, ip), now).await,
                None => false,
            };
        if banned {
            self.metrics.banned_request();
        }
        banned
    }

    /// Counts a failure; bans the source, or the user at that source, past their thresholds.
    pub async fn failed(&self, ip: IpAddr, user: &str, failure: Failure, now: Timestamp) {
        self.metrics.auth_failure(failure.label());
        let user_hash = short_hash(&[user]);
        warn!(source = %ip, user_hash = %&user_hash[..12], reason = failure.label(), "SIP authentication failed");
        if !self.config.enabled() || self.trusted.contains(&ip) {
            return;
        }
        let window = Duration::from_secs(u64::from(self.config.window_secs.max(1)));
        let ban = Duration::from_secs(u64::from(self.config.ban_secs.max(1)));
        let scopes = [
            ("source", Self::source_key(ip), self.config.source_threshold),
            (
                "user_source",
                Self::user_key(user, ip),
                self.config.user_threshold,
            ),
        ];
        for (scope, ban_key, threshold) in scopes {
            if threshold == 0 {
                continue;
            }
            let count_key = format!("fail{}", &ban_key[3..]);
            let count = self.bump(&count_key, window, now).await;
            if count >= threshold {
                let write = BlobWrite::new().ttl(ban);
                if let Err(e) = self.store.put_blob(NS, &ban_key, b"1", &write, now).await {
                    warn!(error = %e, "ban not stored");
                    continue;
                }
                let _ = self.store.delete_blob(NS, &count_key, None).await;
                self.metrics.auth_ban(scope);
                warn!(source = %ip, user_hash = %&user_hash[..12], scope, ban_secs = ban.as_secs(), failures = count, "SIP authentication ban");
            }
        }
    }

    /// Adds one to a counter that lapses `window` after its last change; returns the new count.
    async fn bump(&self, key: &str, window: Duration, now: Timestamp) -> u32 {
        for _ in 0..4 {
            let current = match self.store.get_blob(NS, key, now).await {
                Ok(v) => v,
                Err(_) => return 0,
            };
            let (count, expect) = match current {
                Some(v) => (
                    std::str::from_utf8(&v.value)
                        .ok()
                        .and_then(|t| t.parse::<u32>().ok())
                        .unwrap_or(0),
                    Expect::Version(v.version),
                ),
                None => (0, Expect::Absent),
            };
            let next = count.saturating_add(1);
            let write = BlobWrite::new().expect(expect).ttl(window);
            match self
                .store
                .put_blob(NS, key, next.to_string().as_bytes(), &write, now)
                .await
            {
                Ok(WriteOutcome::Written { .. }) => return next,
                Ok(WriteOutcome::Conflict { .. }) => continue,
                Err(_) => return 0,
            }
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(store: StateStore) -> AuthGuard {
        let config = AuthGuardConfig {
            source_threshold: 5,
            user_threshold: 2,
            window_secs: 60,
            ban_secs: 300,
        };
        let trusted = vec!["10.9.9.9".parse().unwrap()];
        AuthGuard::new(
            store,
            config,
            trusted,
            Duration::from_secs(300),
            GatewayMetrics::default(),
        )
    }

    #[tokio::test]
    async fn a_credential_is_accepted_once_until_its_nonce_lapses() {
        let g = guard(StateStore::memory());
        let now = Timestamp::from_millis(1_000_000);
        assert!(g.claim("n1", Some("c1"), Some("00000001"), "r", now).await);
        assert!(
            !g.claim("n1", Some("c1"), Some("1"), "r", now).await,
            "same count: a replay"
        );
        assert!(g.claim("n1", Some("c1"), Some("00000002"), "r", now).await);
        assert!(g.claim("n1", Some("c2"), Some("00000001"), "r", now).await);
        assert!(g.claim("n0", None, None, "resp", now).await);
        assert!(!g.claim("n0", None, None, "resp", now).await);
        // Bounded: the record lapses with the nonce.
        let later = Timestamp::from_millis(1_000_000 + 301_000);
        assert!(g.claim("n1", Some("c1"), Some("00000001"), "r", later).await);
    }

    #[tokio::test]
    async fn failures_ban_the_user_at_a_source_then_the_source_never_the_user_elsewhere() {
        let g = guard(StateStore::memory());
        let now = Timestamp::from_millis(5_000_000);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        g.failed(a, "1001", Failure::Denied, now).await;
        assert!(!g.banned(a, Some("1001"), now).await);
        g.failed(a, "1001", Failure::Denied, now).await;
        assert!(g.banned(a, Some("1001"), now).await, "user at source banned");
        assert!(
            !g.banned(a, Some("1002"), now).await,
            "another user from there is not"
        );
        assert!(!g.banned(b, Some("1001"), now).await, "the user elsewhere is not");
        for user in ["2001", "2002", "2003"] {
            g.failed(a, user, Failure::Denied, now).await;
        }
        assert!(
            g.banned(a, Some("1002"), now).await,
            "five failures: the source is banned"
        );
        assert!(g.banned(a, None, now).await);
        let after = Timestamp::from_millis(5_000_000 + 301_000);
        assert!(!g.banned(a, Some("1001"), after).await, "bans lapse");
        // Trusted sources are never banned.
        let t: IpAddr = "10.9.9.9".parse().unwrap();
        for _ in 0..10 {
            g.failed(t, "1001", Failure::Denied, now).await;
        }
        assert!(!g.banned(t, Some("1001"), now).await);
    }

    #[tokio::test]
    async fn every_node_gets_the_same_nonce_secret() {
        let store = StateStore::memory();
        let now = Timestamp::from_millis(1);
        let first = AuthGuard::nonce_secret(&store, now).await;
        let second = AuthGuard::nonce_secret(&store.clone(), now).await;
        assert_eq!(first, second);
    }
}
