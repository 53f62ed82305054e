//! HTTP Digest authentication for SIP (RFC 3261 §22, RFC 2617, RFC 8760), server side, pure.
//!
//! Nonces are stateless: `hex(issued_ms) . hex(HMAC-SHA256(secret, issued_ms || realm))[..32]`. A nonce
//! with a bad MAC is rejected; one with a good MAC that is older than its lifetime is *stale*, so the
//! client may retry with the same credentials (`stale=true`). Unknown users are checked against a
//! dummy secret so they cost the same time and get the same answer as a wrong password.

use hmac::{KeyInit, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// Hash algorithms we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum Algorithm {
    #[serde(rename = "MD5")]
    Md5,
    #[serde(rename = "SHA-256")]
    Sha256,
}

impl Algorithm {
    /// The token used in the `algorithm=` parameter.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn parse(token: &str) -> Option<Self> {
        if token.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if token.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    fn hash_hex(self, input: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(input.as_bytes())),
            Algorithm::Sha256 => hex(&Sha256::digest(input.as_bytes())),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// The parameters of an `Authorization: Digest ...` header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DigestCredentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub cnonce: Option<String>,
}

/// Why an Authorization header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestParseError {
    #[error("authorization scheme is not Digest")]
    NotDigest,
    #[error("missing parameter {0}")]
    Missing(&'static str),
    #[error("malformed parameter list")]
    Malformed,
}

/// Parses `Digest k=v, k="v", ...`. Quoted strings may contain commas and escaped quotes.
pub fn parse_authorization(value: &str) -> Result<DigestCredentials, DigestParseError> {
    let value = value.trim_start();
    let rest = match value.get(..6) {
        Some(s) if s.eq_ignore_ascii_case("digest") => &value[6..],
        _ => return Err(DigestParseError::NotDigest),
    };
    let mut creds = DigestCredentials::default();
    let mut chars = rest.char_indices().peekable();
    let bytes = rest;
    loop {
        // skip separators
        while let Some((_, c)) = chars.peek() {
            if *c == ',' || c.is_whitespace() {
                chars.next();
            } else {
                break;
            }
        }
        let Some(&(start, _)) = chars.peek() else { break };
        let mut key_end = start;
        while let Some(&(i, c)) = chars.peek() {
            if c == '=' {
                key_end = i;
                break;
            }
            if c == ',' {
                return Err(DigestParseError::Malformed);
            }
            chars.next();
            key_end = i + c.len_utf8();
        }
        if chars.next().map(|(_, c)| c) != Some('=') {
            return Err(DigestParseError::Malformed);
        }
        let key = bytes[start..key_end].trim().to_ascii_lowercase();
        while chars.peek().is_some_and(|(_, c)| c.is_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek().map(|(_, c)| *c) == Some('"') {
            chars.next();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            val.push(e);
                        }
                    }
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => val.push(c),
                }
            }
            if !closed {
                return Err(DigestParseError::Malformed);
            }
        } else {
            while let Some(&(_, c)) = chars.peek() {
                if c == ',' {
                    break;
                }
                val.push(c);
                chars.next();
            }
            val = val.trim().to_string();
        }
        match key.as_str() {
            "username" => creds.username = val,
            "realm" => creds.realm = val,
            "nonce" => creds.nonce = val,
            "uri" => creds.uri = val,
            "response" => creds.response = val,
            "algorithm" => creds.algorithm = Some(val),
            "qop" => creds.qop = Some(val),
            "nc" => creds.nc = Some(val),
            "cnonce" => creds.cnonce = Some(val),
            _ => {}
        }
    }
    if creds.username.is_empty() {
        return Err(DigestParseError::Missing("username"));
    }
    if creds.nonce.is_empty() {
        return Err(DigestParseError::Missing("nonce"));
    }
    if creds.response.is_empty() {
        return Err(DigestParseError::Missing("response"));
    }
    Ok(creds)
}

/// Outcome of checking credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Credentials are right and the nonce is fresh.
    Authorized,
    /// Credentials were computed right but over an expired nonce: challenge again with `stale=true`.
    Stale,
    /// Wrong password, unknown user, forged nonce or unsupported parameters.
    Denied,
}

/// Issues and checks nonces; computes expected responses.
#[derive(Clone)]
pub struct DigestAuthority {
    secret: [u8; 32],
    realm: String,
    nonce_ttl_ms: i64,
    algorithms: Vec<Algorithm>,
}

impl std::fmt::Debug for DigestAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestAuthority")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl DigestAuthority {
    /// `secret` keys the nonce MAC (random per process, or shared by a cluster so any node accepts
    /// another node's nonce).
    pub fn new(secret: [u8; 32], realm: &str, nonce_ttl_ms: i64, algorithms: Vec<Algorithm>) -> Self {
        let algorithms = if algorithms.is_empty() {
            vec![Algorithm::Md5]
        } else {
            algorithms
        };
        Self {
            secret,
            realm: realm.to_string(),
            nonce_ttl_ms,
            algorithms,
        }
    }

    /// The realm challenged.
    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn mac(&self, issued_ms: i64) -> String {
        // HMAC accepts keys of any length; a 32-byte key cannot fail.
        let mut mac = match hmac::Hmac::<Sha256>::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        mac.update(&issued_ms.to_be_bytes());
        mac.update(self.realm.as_bytes());
        let tag = mac.finalize().into_bytes();
        hex(&tag[..16])
    }

    /// A fresh nonce issued at `now_ms`.
    pub fn nonce(&self, now_ms: i64) -> String {
        format!("{:016x}{}", now_ms, self.mac(now_ms))
    }

    /// `WWW-Authenticate` header values, one per algorithm in preference order.
    pub fn challenges(&self, now_ms: i64, stale: bool) -> Vec<String> {
        let nonce = self.nonce(now_ms);
        self.algorithms
            .iter()
            .map(|a| {
                format!(
                    "Digest realm=\"{}\", nonce=\"{}\", algorithm={}, qop=\"auth\"{}",
                    self.realm,
                    nonce,
                    a.token(),
                    if stale { ", stale=true" } else { "" }
                )
            })
            .collect()
    }

    /// Checks `creds` for `method` against `password` (None: unknown user, checked against a dummy
    /// so the work and the answer are the same).
    pub fn verify(
        &self,
        creds: &DigestCredentials,
        method: &str,
        password: Option<&str>,
        now_ms: i64,
    ) -> Verdict {
        let algorithm = match creds.algorithm.as_deref() {
            None => Some(Algorithm::Md5),
            Some(a) => Algorithm::parse(a),
        };
        let algorithm = match algorithm {
            Some(a) if self.algorithms.contains(&a) => a,
            _ => return Verdict::Denied,
        };
        let nonce_ok = self.nonce_age(&creds.nonce, now_ms);
        let known = password.is_some();
        let password = password.unwrap_or("\u{0}no-such-user\u{0}");
        let ha1 = algorithm.hash_hex(&format!("{}:{}:{}", creds.username, self.realm, password));
        let ha2 = algorithm.hash_hex(&format!("{}:{}", method, creds.uri));
        let expected = match creds.qop.as_deref() {
            Some(q) if q.eq_ignore_ascii_case("auth") => {
                let (Some(nc), Some(cnonce)) = (creds.nc.as_deref(), creds.cnonce.as_deref()) else {
                    return Verdict::Denied;
                };
                algorithm.hash_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", creds.nonce))
            }
            Some(_) => return Verdict::Denied,
            None => algorithm.hash_hex(&format!("{ha1}:{}:{ha2}", creds.nonce)),
        };
        let matches = constant_time_eq(
            expected.as_bytes(),
            creds.response.to_ascii_lowercase().as_bytes(),
        );
        let realm_ok = creds.realm == self.realm;
        match (known && matches && realm_ok, nonce_ok) {
            (true, NonceAge::Fresh) => Verdict::Authorized,
            (true, NonceAge::Expired) => Verdict::Stale,
            _ => Verdict::Denied,
        }
    }

    fn nonce_age(&self, nonce: &str, now_ms: i64) -> NonceAge {
        let (Some(ts_hex), Some(mac)) = (nonce.get(..16), nonce.get(16..)) else {
            return NonceAge::Forged;
        };
        let Ok(issued) = u64::from_str_radix(ts_hex, 16) else {
            return NonceAge::Forged;
        };
        let issued = issued as i64;
        if !constant_time_eq(self.mac(issued).as_bytes(), mac.as_bytes()) {
            return NonceAge::Forged;
        }
        if now_ms.saturating_sub(issued) > self.nonce_ttl_ms || issued > now_ms.saturating_add(60_000) {
            NonceAge::Expired
        } else {
            NonceAge::Fresh
        }
    }
}

enum NonceAge {
    Fresh,
    Expired,
    Forged,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Client side: the Authorization value answering a challenge (used for trunks that challenge us).
pub fn answer_challenge(
    challenge: &str,
    method: &str,
    uri: &str,
    username: &str,
    password: &str,
    cnonce: &str,
) -> Option<String> {
    // The challenge has the same `k=v` shape as credentials; reuse the parser by lending a username.
    let params = challenge.trim_start();
    let params = params
        .get(..6)
        .filter(|s| s.eq_ignore_ascii_case("digest"))
        .map(|_| &params[6..])?;
    let c = parse_authorization(&format!("Digest username=\"x\", response=\"x\",{params}")).ok()?;
    let algorithm = match c.algorithm.as_deref() {
        None => Algorithm::Md5,
        Some(a) => Algorithm::parse(a)?,
    };
    let ha1 = algorithm.hash_hex(&format!("{username}:{}:{password}", c.realm));
    let ha2 = algorithm.hash_hex(&format!("{method}:{uri}"));
    let offers_auth = c
        .qop
        .as_deref()
        .is_some_and(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")));
    let (response, qop_part) = if offers_auth {
        let nc = "00000001";
        (
            algorithm.hash_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", c.nonce)),
            format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""),
        )
    } else {
        (
            algorithm.hash_hex(&format!("{ha1}:{}:{ha2}", c.nonce)),
            String::new(),
        )
    };
    Some(format!(
        "Digest username=\"{username}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", response=\"{response}\", algorithm={}{qop_part}",
        c.realm,
        c.nonce,
        algorithm.token()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn authority() -> DigestAuthority {
        DigestAuthority::new(
            [7; 32],
            "callcenter.local",
            30_000,
            vec![Algorithm::Md5, Algorithm::Sha256],
        )
    }

    #[test]
    fn rfc2617_example_response() {
        // RFC 2617 §3.5 (HTTP example, same arithmetic as SIP).
        let ha1 = Algorithm::Md5.hash_hex("Mufasa:testrealm@host.com:Circle Of Life");
        let ha2 = Algorithm::Md5.hash_hex("GET:/dir/index.html");
        let resp = Algorithm::Md5.hash_hex(&format!(
            "{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:00000001:0a4f113b:auth:{ha2}"
        ));
        assert_eq!(resp, "6629fae49393a05397450978507c4ef1");
    }

    #[test]
    fn round_trip_through_client_answer_for_both_algorithms() {
        let a = authority();
        for challenge in a.challenges(1_000, false) {
            let auth = answer_challenge(
                &challenge,
                "REGISTER",
                "sip:callcenter.local",
                "1001",
                "secret",
                "abc",
            )
            .unwrap();
            let creds = parse_authorization(&auth).unwrap();
            assert_eq!(
                a.verify(&creds, "REGISTER", Some("secret"), 2_000),
                Verdict::Authorized
            );
            assert_eq!(
                a.verify(&creds, "REGISTER", Some("wrong"), 2_000),
                Verdict::Denied
            );
            assert_eq!(a.verify(&creds, "REGISTER", None, 2_000), Verdict::Denied);
            assert_eq!(a.verify(&creds, "INVITE", Some("secret"), 2_000), Verdict::Denied);
            assert_eq!(
                a.verify(&creds, "REGISTER", Some("secret"), 40_000),
                Verdict::Stale
            );
        }
    }

    #[test]
    fn forged_nonce_is_denied_even_with_right_password() {
        let a = authority();
        let other = DigestAuthority::new([9; 32], "callcenter.local", 30_000, vec![Algorithm::Md5]);
        let challenge = other.challenges(1_000, false).remove(0);
        let auth = answer_challenge(&challenge, "REGISTER", "sip:x", "1001", "secret", "c").unwrap();
        let creds = parse_authorization(&auth).unwrap();
        assert_eq!(
            a.verify(&creds, "REGISTER", Some("secret"), 1_500),
            Verdict::Denied
        );
    }

    #[test]
    fn parses_quoted_values_with_commas_and_escapes() {
        let c = parse_authorization(
            r#"Digest username="a\"b", realm="r,1",nonce="n", uri="sip:x", response="ABC", qop=auth, nc=00000001, cnonce="c""#,
        )
        .unwrap();
        assert_eq!(c.username, "a\"b");
        assert_eq!(c.realm, "r,1");
        assert_eq!(c.qop.as_deref(), Some("auth"));
        assert_eq!(parse_authorization("Basic abc"), Err(DigestParseError::NotDigest));
        assert_eq!(
            parse_authorization("Digest username=\"x"),
            Err(DigestParseError::Malformed)
        );
    }

    proptest! {
        #[test]
        fn parser_never_panics(s in ".{0,300}") {
            let _ = parse_authorization(&s);
            let _ = parse_authorization(&format!("Digest {s}"));
            let _ = answer_challenge(&format!("Digest {s}"), "INVITE", "sip:x", "u", "p", "c");
        }

        #[test]
        fn arbitrary_nonces_never_authorize(nonce in "[0-9a-f]{0,64}") {
            let a = authority();
            let creds = DigestCredentials { username: "1001".into(), realm: "callcenter.local".into(), nonce, uri: "sip:x".into(), response: "0".repeat(32), ..Default::default() };
            prop_assert_ne!(a.verify(&creds, "REGISTER", Some("secret"), 5_000), Verdict::Authorized);
        }
    }
}
