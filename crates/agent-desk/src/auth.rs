//! Accounts and sessions: argon2id password hashes in the CRM store, login with a lockout after
//! repeated failures, session tokens kept in the state store (so every node of a cluster knows them
//! and they survive a restart), and the role check every route makes.
//!
//! A token is 32 random bytes, hex; the store keeps only its SHA-256, so a copy of the store does not
//! hand out live sessions.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use crm_store::{CrmStore, Role, User};
use domain::{AgentId, Pii, Timestamp};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use state_store::{BlobWrite, StateStore, TokenBucket};
use std::time::Duration;
use tracing::warn;

/// Blob namespace of sessions (key: SHA-256 of the token).
const SESSIONS: &str = "desk-session";
/// Blob namespace of login lockouts (key: hash of user and source).
const LOCKOUTS: &str = "desk-lockout";

/// How logins and sessions behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// A session lapses this long after login.
    pub session_ttl: Duration,
    /// Failed logins a user may make from one address before the lockout.
    pub max_failures: u32,
    /// How long a lockout lasts.
    pub lockout: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            session_ttl: Duration::from_secs(8 * 3600),
            max_failures: 5,
            lockout: Duration::from_secs(60),
        }
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
}

impl Auth {
    pub fn new(crm: CrmStore, state: StateStore, config: AuthConfig) -> Result<Self, String> {
        let dummy_hash = hash_password("no such user: the answer is always no")?;
        Ok(Self {
            crm,
            state,
            config,
            dummy_hash,
        })
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
    /// (failures are counted per user and source).
    pub async fn login(
        &self,
        user: &str,
        password: &str,
        source: &str,
        now: Timestamp,
    ) -> Result<(String, Session), LoginError> {
        let lock_key = token_key(&format!("{user}\u{1f}{source}"));
        match self.state.get_blob(LOCKOUTS, &lock_key, now).await {
            Ok(Some(lock)) => {
                let until = std::str::from_utf8(&lock.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or(now.as_millis());
                let left = until.saturating_sub(now.as_millis()).max(0) as u64;
                return Err(LoginError::LockedOut {
                    retry_after_secs: left.div_ceil(1000).max(1),
                });
            }
            Ok(None) => {}
            Err(e) => {
                warn!(error = %e, "login: lockout check failed");
                return Err(LoginError::Unavailable);
            }
        }
        let account = match AgentId::new(user) {
            Ok(id) => self.crm.user(&id).await.map_err(|e| {
                warn!(error = %e, "login: user lookup failed");
                LoginError::Unavailable
            })?,
            Err(_) => None,
        };
        let hash = account
            .as_ref()
            .filter(|u| u.active)
            .and_then(|u| u.password_hash.clone())
            .unwrap_or_else(|| self.dummy_hash.clone());
        let password = password.to_string();
        let matches = tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        let account = match account.filter(|u| matches && u.active) {
            Some(a) => a,
            None => {
                self.count_failure(&lock_key, now).await;
                return Err(LoginError::BadCredentials);
            }
        };
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
        self.state
            .put_blob(SESSIONS, &token_key(&token), &bytes, &write, now)
            .await
            .map_err(|e| {
                warn!(error = %e, "login: session not stored");
                LoginError::Unavailable
            })?;
        Ok((token, session))
    }

    async fn count_failure(&self, lock_key: &str, now: Timestamp) {
        let capacity = self.config.max_failures.max(1);
        let Ok(bucket) = TokenBucket::new(capacity, 1) else {
            return;
        };
        // One token a second comes back; a burst of failures empties the bucket and locks out.
        let taken = self
            .state
            .rate_take(&format!("login-failures:{lock_key}"), bucket, 1, now)
            .await;
        // The failure that empties the bucket locks out (so `max_failures` failures in a burst).
        if let Ok(decision) = taken
            && (!decision.allowed || decision.remaining == 0)
        {
            let lockout_ms = i64::try_from(self.config.lockout.as_millis()).unwrap_or(i64::MAX);
            let until = now.as_millis().saturating_add(lockout_ms);
            let write = BlobWrite::new().ttl(self.config.lockout);
            if let Err(e) = self
                .state
                .put_blob(LOCKOUTS, lock_key, until.to_string().as_bytes(), &write, now)
                .await
            {
                warn!(error = %e, "login: lockout not stored");
            }
        }
    }

    /// The session of `token`, if it is live.
    pub async fn session(&self, token: &str, now: Timestamp) -> Option<Session> {
        if token.is_empty() || token.len() > 128 {
            return None;
        }
        let blob = self
            .state
            .get_blob(SESSIONS, &token_key(token), now)
            .await
            .ok()??;
        let session: Session = serde_json::from_slice(&blob.value).ok()?;
        (session.expires_at > now).then_some(session)
    }

    /// Ends the session of `token`.
    pub async fn logout(&self, token: &str) {
        let _ = self.state.delete_blob(SESSIONS, &token_key(token), None).await;
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
