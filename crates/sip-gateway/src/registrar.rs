//! The registrar (RFC 3261 §10.3): digest-authenticated REGISTER, bindings with expiry, several
//! contacts per user, `Expires: 0` and `Contact: *` removal, 423 for too-brief intervals.

use crate::authguard::{AuthGuard, Failure};
use crate::config::RegistrarConfig;
use crate::digest::{DigestAuthority, Verdict, parse_authorization};
use crate::location::{Binding, Locations};
use crate::msg::{self, header};
use domain::Timestamp;
use rsipstack::sip::Request;
use rsipstack::sip::prelude::*;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// The registrar's answer to one REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterOutcome {
    pub code: u16,
    /// Extra headers (WWW-Authenticate, Contact list, Min-Expires).
    pub headers: Vec<(String, String)>,
}

impl RegisterOutcome {
    fn code(code: u16) -> Self {
        Self {
            code,
            headers: Vec::new(),
        }
    }
}

/// Validates credentials and updates bindings.
pub struct Registrar {
    config: RegistrarConfig,
    digest: DigestAuthority,
    passwords: HashMap<String, String>,
    guard: Arc<AuthGuard>,
}

impl Registrar {
    pub fn new(
        config: RegistrarConfig,
        digest: DigestAuthority,
        passwords: HashMap<String, String>,
        guard: Arc<AuthGuard>,
    ) -> Self {
        Self {
            config,
            digest,
            passwords,
            guard,
        }
    }

    /// Checks an Authorization header on any request from `source` (REGISTER here; INVITE from users
    /// later): banned sources and users at a source get 403, a replayed credential a fresh challenge, and
    /// every failure is counted towards a ban.
    pub async fn authenticate(
        &self,
        req: &Request,
        source: Option<IpAddr>,
        now: Timestamp,
    ) -> Result<String, RegisterOutcome> {
        let Some(auth) = msg::value_of(&req.headers, "Authorization") else {
            return Err(self.challenge(now, false));
        };
        let Ok(creds) = parse_authorization(&auth) else {
            if let Some(ip) = source {
                self.guard.failed(ip, "", Failure::Malformed, now).await;
            }
            return Err(RegisterOutcome::code(400));
        };
        if let Some(ip) = source
            && self.guard.banned(ip, Some(&creds.username), now).await
        {
            return Err(RegisterOutcome::code(403));
        }
        let password = self.passwords.get(&creds.username).map(String::as_str);
        match self.digest.verify(
            &creds,
            req.method().to_string().as_str(),
            password,
            now.as_millis(),
        ) {
            Verdict::Authorized => {
                let fresh = self
                    .guard
                    .claim(
                        &creds.nonce,
                        creds.cnonce.as_deref(),
                        creds.nc.as_deref(),
                        &creds.response,
                        now,
                    )
                    .await;
                if fresh {
                    return Ok(creds.username);
                }
                // A replay: whoever sent it may not know the password, so challenge afresh.
                if let Some(ip) = source {
                    self.guard.failed(ip, &creds.username, Failure::Replay, now).await;
                }
                Err(self.challenge(now, false))
            }
            Verdict::Stale => Err(self.challenge(now, true)),
            Verdict::Denied => {
                if let Some(ip) = source {
                    self.guard.failed(ip, &creds.username, Failure::Denied, now).await;
                }
                Err(RegisterOutcome::code(403))
            }
        }
    }

    fn challenge(&self, now: Timestamp, stale: bool) -> RegisterOutcome {
        RegisterOutcome {
            code: 401,
            headers: self
                .digest
                .challenges(now.as_millis(), stale)
                .into_iter()
                .map(|c| ("WWW-Authenticate".to_string(), c))
                .collect(),
        }
    }

    /// Handles one REGISTER from `source`.
    pub async fn register(
        &self,
        req: &Request,
        source: &str,
        locations: &dyn Locations,
        now: Timestamp,
    ) -> RegisterOutcome {
        // `source` is `ip:port`, possibly after the transport name (`TCP 192.0.2.1:5060`).
        let source_addr = source.rsplit(' ').next().unwrap_or_default();
        let ip = source_addr
            .parse::<std::net::SocketAddr>()
            .map(|a| a.ip())
            .ok()
            .or_else(|| source_addr.parse::<IpAddr>().ok());
        let user = match self.authenticate(req, ip, now).await {
            Ok(u) => u,
            Err(outcome) => return outcome,
        };
        // The address-of-record is the To URI's user; one may only register oneself.
        let aor = req
            .to_header()
            .ok()
            .and_then(|t| t.typed().ok())
            .and_then(|t| t.uri.user().map(str::to_string));
        if aor.as_deref() != Some(user.as_str()) {
            return RegisterOutcome::code(403);
        }
        let call_id = msg::call_id(req).unwrap_or_default();
        let cseq = req.cseq_header().ok().and_then(|c| c.seq().ok()).unwrap_or(0);
        let header_expires =
            msg::value_of(&req.headers, "Expires").and_then(|e| e.trim().parse::<u32>().ok());
        let contacts = msg::values_of(&req.headers, "Contact");

        if contacts.iter().any(|c| c.trim() == "*") {
            if contacts.len() != 1 || header_expires != Some(0) {
                return RegisterOutcome::code(400);
            }
            locations.remove_all(&user).await;
            return self.current(&user, locations, now).await;
        }
        let parsed = match req.typed_contact_headers() {
            Ok(c) => c,
            Err(_) => return RegisterOutcome::code(400),
        };
        for contact in &parsed {
            let expires = contact
                .expires()
                .or(header_expires)
                .unwrap_or(self.config.default_expires_secs);
            let uri = contact.uri.to_string();
            if expires == 0 {
                locations.remove(&user, &uri).await;
                continue;
            }
            if expires < self.config.min_expires_secs {
                return RegisterOutcome {
                    code: 423,
                    headers: vec![("Min-Expires".into(), self.config.min_expires_secs.to_string())],
                };
            }
            let expires = expires.min(self.config.max_expires_secs);
            let existing = locations.lookup(&user, now).await;
            if existing
                .iter()
                .any(|b| b.contact == uri && b.call_id == call_id && b.cseq >= cseq)
            {
                continue; // an old or repeated REGISTER must not roll a binding back
            }
            locations
                .upsert(
                    &user,
                    Binding {
                        contact: uri,
                        expires_at: now + std::time::Duration::from_secs(u64::from(expires)),
                        call_id: call_id.clone(),
                        cseq,
                        source: source.to_string(),
                    },
                    now,
                )
                .await;
        }
        self.current(&user, locations, now).await
    }

    async fn current(&self, user: &str, locations: &dyn Locations, now: Timestamp) -> RegisterOutcome {
        let headers = locations
            .lookup(user, now)
            .await
            .into_iter()
            .map(|b| {
                let left = b.expires_at.since(now).as_secs();
                ("Contact".to_string(), format!("<{}>;expires={left}", b.contact))
            })
            .collect();
        RegisterOutcome { code: 200, headers }
    }
}

/// Turns outcome headers into stack headers.
pub fn outcome_headers(outcome: &RegisterOutcome) -> Vec<rsipstack::sip::Header> {
    outcome
        .headers
        .iter()
        .map(|(n, v)| header(n, v.clone()))
        .collect()
}
