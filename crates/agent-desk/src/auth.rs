//! Accounts and sessions: argon2id password hashes in the CRM store, checked by a bounded pool of
//! threads ([`crate::hasher`]); login guessing throttled per user and address, per address and per
//! user with lockouts that double ([`crate::throttle`]), the records kept in the state store so every
//! node counts the same failures; failures logged (the user's id only if the account exists) and
//! counted (`desk_login_failures_total`); session tokens kept in the state store (so every node of a
//! cluster knows them and they survive a restart), and the role check every route makes.
//!
//! A token is 32 random bytes, hex; the store keeps only its SHA-256, so a copy of the store does not
//! hand out live sessions.

use crate::hasher::{HashBusy, HashPool};
use crate::throttle::{FailureRecord, ThrottlePolicy};
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use crm_store::{CrmStore, Role, User};
use domain::{AgentId, Pii, Timestamp};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use state_store::{BlobWrite, Expect, StateStore};
use std::net::IpAddr;
use std::time::Duration;
use tracing::{debug, info, warn};

/// Blob namespace of sessions (key: SHA-256 of the token).
const SESSIONS: &str = "desk-session";
/// Tries at storing a new session before the login is refused as unavailable.
const SESSION_WRITE_TRIES: u32 = 3;
/// Blob namespace of failed-login records (key: SHA-256 of the kind, user and source).
const FAILURES: &str = "desk-login-failures";

/// How logins and sessions behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// A session lapses this long after login.
    pub session_ttl: Duration,
    /// Failed logins a user may make from one address (within `failure_window`) before a lockout.
    pub max_failures: u32,
    /// The first lockout; each further failure doubles it.
    pub lockout: Duration,
    /// The longest lockout.
    pub max_lockout: Duration,
    /// Failures are counted over this long.
    pub failure_window: Duration,
    /// Failed logins from one address, for any users, before that address is locked out.
    pub source_max_failures: u32,
    /// Failed logins for one user, from any address, before that user's logins wait.
    pub user_max_failures: u32,
    /// Threads checking passwords (0: one per core).
    pub hash_workers: usize,
    /// Logins that may wait for a thread; more at once are answered 503.
    pub hash_queue: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(8 * 3600),
            max_failures: 5,
            lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(24 * 3600),
            failure_window: Duration::from_secs(24 * 3600),
            source_max_failures: 100,
            user_max_failures: 50,
            hash_workers: 0,
            hash_queue: 16,
        }
    }
}

impl AuthConfig {
    fn policy(&self, threshold: u32) -> ThrottlePolicy {
        ThrottlePolicy {
            threshold,
            base_lockout: self.lockout,
            max_lockout: self.max_lockout.max(self.lockout),
            window: self.failure_window,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// The desk's metrics (`desk_logins_total`, `desk_login_failures_total{reason}`,
/// `desk_customer_lookups_total{outcome}`); registered by [`crate::Http::with_desk`].
#[derive(Clone, Default)]
pub struct DeskMetrics {
    logins: Counter,
    failures: Family<ReasonLabel, Counter>,
    customer_lookups: Family<OutcomeLabel, Counter>,
}

impl DeskMetrics {
    pub fn register(&self, telemetry: &telemetry::Telemetry) {
        let m = self.clone();
        telemetry.register("desk", |r| {
            r.register("logins", "Successful logins", m.logins);
            r.register(
                "login_failures",
                "Refused logins by reason: bad_credentials, locked_out, busy (password checks full)",
                m.failures,
            );
            r.register(
                "customer_lookups",
                "Customer record lookups by outcome: shown, not_found, forbidden, rate_limited",
                m.customer_lookups,
            );
        });
    }

    pub fn customer_lookup(&self, outcome: &'static str) {
        self.customer_lookups
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    fn failed(&self, reason: &'static str) {
        self.failures.get_or_create(&ReasonLabel { reason }).inc();
    }
}

/// Who is calling, as their session says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: AgentId,
    pub name: Pii<String>,
    pub role: Role,
    pub expires_at: Timestamp,
}

impl Session {
    /// Supervisors and admins see the wallboard and act on other agents.
    pub fn is_supervisor(&self) -> bool {
        matches!(self.role, Role::Supervisor | Role::Admin)
    }
}

/// Why a login failed. Unknown users and wrong passwords are the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("wrong user name or password")]
    BadCredentials,
    #[error("too many failed logins; try again in {retry_after_secs} s")]
    LockedOut { retry_after_secs: u64 },
    #[error("too many logins at once; try again in a moment")]
    Busy,
    #[error("the account store is unavailable")]
    Unavailable,
}

/// Hashes a password with argon2id and a random salt (PHC string format).
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt_bytes = [0u8; 16];
    rand::fill(&mut salt_bytes);
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches a stored PHC hash; a malformed hash never matches.
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn token_key(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Logins, sessions and accounts over the CRM store (users) and the state store (sessions).
#[derive(Clone)]
pub struct Auth {
    crm: CrmStore,
    state: StateStore,
    config: AuthConfig,
    /// Checked when the user is unknown, so both paths cost one argon2 verification.
    dummy_hash: String,
    hashes: HashPool,
    metrics: DeskMetrics,
}

impl Auth {
    pub fn new(crm: CrmStore, state: StateStore, config: AuthConfig) -> Result<Self, String> {
        let dummy_hash = hash_password("no such user: the answer is always no")?;
        let hashes = HashPool::start(config.hash_workers, config.hash_queue);
        Ok(Self {
            crm,
            state,
            config,
            dummy_hash,
            hashes,
            metrics: DeskMetrics::default(),
        })
    }

    pub fn metrics(&self) -> &DeskMetrics {
        &self.metrics
    }

    pub fn hash_pool(&self) -> &HashPool {
        &self.hashes
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Creates the user unless an account with that id exists already (configured seed accounts
    /// never overwrite a password changed since).
    pub async fn seed_user(
        &self,
        id: &AgentId,
        name: &str,
        role: Role,
        password: &str,
        now: Timestamp,
    ) -> Result<bool, String> {
        if self.crm.user(id).await.map_err(|e| e.to_string())?.is_some() {
            return Ok(false);
        }
        let user = User {
            id: id.clone(),
            display_name: Pii::new(name.to_string()),
            role,
            password_hash: Some(hash_password(password)?),
            active: true,
        };
        self.crm
            .save_user(&user, "config", now)
            .await
            .map_err(|e| e.to_string())?;
        Ok(true)
    }

    /// Checks the password and opens a session; returns its token. `source` is the client's address
    /// (failures are counted per user and address, per address and per user).
    ///
    /// Order matters: lockouts are checked first (cheap), then a place in the password-check pool
    /// is reserved (or 503), then the attempt is charged to its user-and-address record before the
    /// password is checked, so parallel guesses are counted as they come.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        source: IpAddr,
        now: Timestamp,
    ) -> Result<(String, Session), LoginError> {
        let now_ms = now.as_millis();
        let keys = ThrottleKeys::new(user, source);
        let pair_policy = self.config.policy(self.config.max_failures);
        let source_policy = self.config.policy(self.config.source_max_failures);
        let user_policy = self.config.policy(self.config.user_max_failures);
        let mut locked_for = None;
        for (key, policy) in [
            (&keys.pair, &pair_policy),
            (&keys.source, &source_policy),
            (&keys.user, &user_policy),
        ] {
            let (record, _) = self.failures(key, now).await?;
            if let Some(secs) = record.at(now_ms, policy).locked_for(now_ms) {
                locked_for = Some(locked_for.map_or(secs, |s: u64| s.max(secs)));
            }
        }
        if let Some(retry_after_secs) = locked_for {
            self.metrics.failed("locked_out");
            info!(source = %source, retry_after_secs, "login refused: locked out");
            return Err(LoginError::LockedOut { retry_after_secs });
        }
        let slot = self.hashes.reserve().map_err(|HashBusy| {
            self.metrics.failed("busy");
            LoginError::Busy
        })?;
        self.record_failure(&keys.pair, &pair_policy, now).await?;
        let account = match AgentId::new(user) {
            Ok(id) => self.crm.user(&id).await.map_err(|e| {
                warn!(error = %e, "login: user lookup failed");
                LoginError::Unavailable
            })?,
            Err(_) => None,
        };
        let existing = account.as_ref().map(|u| u.id.clone());
        let hash = account
            .as_ref()
            .filter(|u| u.active)
            .and_then(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let matches = self
            .hashes
            .verify(slot, hash, password.to_string())
            .await
            .map_err(|HashBusy| {
                self.metrics.failed("busy");
                LoginError::Busy
            })?;
        let account = match account.filter(|u| matches && u.active) {
            Some(a) => a,
            None => {
                self.metrics.failed("bad_credentials");
                // The id only of an existing account: a typed user name may be anything personal.
                match existing {
                    Some(id) => warn!(user = %id, source = %source, "login failed: wrong password"),
                    None => warn!(source = %source, "login failed: unknown user or wrong password"),
                }
                self.record_failure(&keys.source, &source_policy, now).await?;
                self.record_failure(&keys.user, &user_policy, now).await?;
                return Err(LoginError::BadCredentials);
            }
        };
        // The right password clears this user's record from this address (not the wider ones).
        if let Err(e) = self.state.delete_blob(FAILURES, &keys.pair, None).await {
            warn!(error = %e, "login: failure record not cleared");
        }
        self.metrics.logins.inc();
        let mut raw = [0u8; 32];
        rand::fill(&mut raw);
        let token = hex(&raw);
        let ttl_ms = i64::try_from(self.config.session_ttl.as_millis()).unwrap_or(i64::MAX);
        let session = Session {
            user: account.id,
            name: account.display_name,
            role: account.role,
            expires_at: Timestamp::from_millis(now.as_millis().saturating_add(ttl_ms)),
        };
        let bytes = serde_json::to_vec(&session).map_err(|_| LoginError::Unavailable)?;
        let write = BlobWrite::new().ttl(self.config.session_ttl);
        // The password was right: a stall of the store is waited out a little (the write is the
        // same each time, so a try whose reply was lost does no harm).
        let mut tries = 0u32;
        while let Err(e) = self
            .state
            .put_blob(SESSIONS, &token_key(&token), &bytes, &write, now)
            .await
        {
            tries += 1;
            if tries >= SESSION_WRITE_TRIES {
                warn!(error = %e, "login: session not stored");
                return Err(LoginError::Unavailable);
            }
            debug!(error = %e, "login: session not stored yet; trying again");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        info!(user = %session.user, source = %source, "login");
        Ok((token, session))
    }

    /// The failure record of `key` and its version (0 when none).
    async fn failures(&self, key: &str, now: Timestamp) -> Result<(FailureRecord, u64), LoginError> {
        match self.state.get_blob(FAILURES, key, now).await {
            Ok(Some(blob)) => Ok((
                serde_json::from_slice(&blob.value).unwrap_or_default(),
                blob.version,
            )),
            Ok(None) => Ok((FailureRecord::default(), 0)),
            Err(e) => {
                warn!(error = %e, "login: failure record unreadable");
                Err(LoginError::Unavailable)
            }
        }
    }

    /// Adds a failure to `key`'s record (compare-and-set, so nodes racing each count).
    async fn record_failure(
        &self,
        key: &str,
        policy: &ThrottlePolicy,
        now: Timestamp,
    ) -> Result<(), LoginError> {
        for _ in 0..8 {
            let (record, version) = self.failures(key, now).await?;
            let next = record.fail(now.as_millis(), policy);
            let Ok(bytes) = serde_json::to_vec(&next) else {
                return Err(LoginError::Unavailable);
            };
            let expect = if version == 0 {
                Expect::Absent
            } else {
                Expect::Version(version)
            };
            let write = BlobWrite::new()
                .ttl(next.keep_for(now.as_millis(), policy))
                .expect(expect);
            match self.state.put_blob(FAILURES, key, &bytes, &write, now).await {
                Ok(outcome) if outcome.version().is_some() => return Ok(()),
                Ok(_) => continue,
                Err(e) => {
                    warn!(error = %e, "login: failure not recorded");
                    return Err(LoginError::Unavailable);
                }
            }
        }
        // Eight conflicts in a row: a flood on this key; refuse rather than not count.
        Err(LoginError::Unavailable)
    }

    /// The session of `token`, if it is live (a store that cannot answer counts as none: a request
    /// is refused rather than let through unchecked).
    pub async fn session(&self, token: &str, now: Timestamp) -> Option<Session> {
        self.check_session(token, now).await.ok().flatten()
    }

    /// The session of `token` at `now`: `Ok(None)` when there is none (never issued, expired,
    /// logged out), `Err` when the store could not say. An open desktop stays on an `Err`: a Redis
    /// hiccup or failover is not a logout of every agent.
    pub async fn check_session(
        &self,
        token: &str,
        now: Timestamp,
    ) -> Result<Option<Session>, state_store::StateError> {
        if token.is_empty() || token.len() > 128 {
            return Ok(None);
        }
        let Some(blob) = self.state.get_blob(SESSIONS, &token_key(token), now).await? else {
            return Ok(None);
        };
        Ok(serde_json::from_slice::<Session>(&blob.value)
            .ok()
            .filter(|session| session.expires_at > now))
    }

    /// Ends the session of `token`.
    pub async fn logout(&self, token: &str) {
        let _ = self.state.delete_blob(SESSIONS, &token_key(token), None).await;
    }
}

/// The state-store keys of one login's failure records. Keys are hashes: a typed user name may be
/// personal and stays out of the store's key space.
struct ThrottleKeys {
    pair: String,
    source: String,
    user: String,
}

impl ThrottleKeys {
    fn new(user: &str, source: IpAddr) -> Self {
        // An IPv6 client usually has a whole /64: count it as one address.
        let source = match source {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        };
        Self {
            pair: token_key(&format!("pair\u{1f}{user}\u{1f}{source}")),
            source: token_key(&format!("source\u{1f}{source}")),
            user: token_key(&format!("user\u{1f}{user}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_only_its_password() {
        let h = hash_password("s3cret").expect("hashes");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password(&h, "s3cret"));
        assert!(!verify_password(&h, "S3cret"));
        assert!(!verify_password("not a hash", "s3cret"));
        assert_ne!(h, hash_password("s3cret").expect("hashes"), "salted");
    }
}
