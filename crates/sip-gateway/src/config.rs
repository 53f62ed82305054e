//! Gateway configuration: listeners, limits, registrar, SIP users, routes and trunks. Deserialised
//! from the `[sip]`, `[[route]]` and `[[trunk]]` sections of the platform's TOML file; unknown keys
//! are errors so a typo never silently falls back to a default.

use crate::digest::Algorithm;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Transports to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Udp,
    Tcp,
}

/// TLS listener; enabled when given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// PEM file of the certificate authorities trusted when the gateway connects out over TLS
    /// (`transport=tls` trunks and forwards). A peer whose certificate does not chain to one of them,
    /// names another host or has expired is refused. Without it no outbound TLS peer is trusted.
    #[serde(default)]
    pub ca_certificates: Option<PathBuf>,
}

/// Overload and abuse limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// New calls admitted per second over the whole node; 0 = unlimited.
    pub max_calls_per_second: u32,
    /// Calls in progress at once; 0 = unlimited.
    pub max_concurrent_calls: usize,
    /// Requests per second from one source address; 0 = unlimited.
    pub per_source_requests_per_second: u32,
    pub per_source_burst: u32,
    /// Sources never rate-limited (trunks, the load balancer).
    pub trusted_sources: Vec<IpAddr>,
    /// Largest datagram accepted; larger requests get 513.
    pub max_message_bytes: usize,
    /// Seconds told to refused callers in Retry-After.
    pub retry_after_secs: u32,
    /// A TCP or TLS connection that sends nothing for this long is closed.
    pub stream_idle_timeout_secs: u32,
    /// TCP connections, and TLS connections, one source address may hold at once on each listener
    /// (trusted sources are not capped); 0 = no cap. Further connections are closed as they are accepted
    /// (before any TLS handshake). Applies when UDP is enabled too.
    pub max_connections_per_source: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_calls_per_second: 200,
            max_concurrent_calls: 2000,
            per_source_requests_per_second: 100,
            per_source_burst: 200,
            trusted_sources: Vec::new(),
            max_message_bytes: 8000,
            retry_after_secs: 5,
            stream_idle_timeout_secs: 60,
            max_connections_per_source: 64,
        }
    }
}

/// Registrar settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrarConfig {
    pub min_expires_secs: u32,
    pub max_expires_secs: u32,
    pub default_expires_secs: u32,
    /// How long a nonce is good for; older ones are answered `stale=true`.
    pub nonce_lifetime_secs: u32,
    /// Challenge algorithms in order of preference.
    pub algorithms: Vec<Algorithm>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            min_expires_secs: 60,
            max_expires_secs: 3600,
            default_expires_secs: 3600,
            nonce_lifetime_secs: 300,
            // SHA-256 is opt-in: some phones (baresip 1.0) abort on a challenge they cannot answer.
            algorithms: vec![Algorithm::Md5],
        }
    }
}

/// Bans after failed digest authentications (`[sip.auth]`), as operators set fail2ban in front of
/// Asterisk or Kamailio. A threshold of 0 turns that ban off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthGuardConfig {
    /// Failures from one source address (any user) within the window that ban the source.
    pub source_threshold: u32,
    /// Failures for one user from one source within the window that ban that user there.
    pub user_threshold: u32,
    /// How long failures are remembered (seconds since the last one).
    pub window_secs: u32,
    /// How long a ban lasts.
    pub ban_secs: u32,
}

impl AuthGuardConfig {
    /// Whether any ban is configured.
    pub fn enabled(&self) -> bool {
        self.source_threshold > 0 || self.user_threshold > 0
    }
}

impl Default for AuthGuardConfig {
    fn default() -> Self {
        Self {
            source_threshold: 30,
            user_threshold: 10,
            window_secs: 300,
            ban_secs: 900,
        }
    }
}

/// A SIP user (an agent's phone) that may register.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipUser {
    pub name: String,
    pub password: String,
    /// Ring this phone with an INVITE without SDP (RFC 3261 §13.2.1 late offer): the phone offers in its
    /// 2xx and our answer rides in the ACK. For phones and PBXs that want to choose the codecs.
    #[serde(default)]
    pub late_offer: bool,
}

impl std::fmt::Debug for SipUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SipUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The `[sip]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SipConfig {
    pub listen: SocketAddr,
    pub transports: Vec<TransportKind>,
    pub tls: Option<TlsConfig>,
    /// The realm and the host part of our users' addresses.
    pub domain: String,
    /// Address put in Contact and Via when it differs from `listen` (NAT, 0.0.0.0 binds).
    pub advertised_address: Option<SocketAddr>,
    /// How long an outbound leg may ring before it is given up.
    pub ring_timeout_secs: u64,
    pub limits: LimitsConfig,
    pub registrar: RegistrarConfig,
    /// Bans after failed authentications.
    pub auth: AuthGuardConfig,
    /// Whether untrusted sources may call registered users directly (not through a route). Off by
    /// default: agents are reached through the ACD; trusted sources (`limits.trusted_sources`, e.g. a
    /// proxy in front) always may.
    pub allow_direct_user_calls: bool,
    #[serde(rename = "user")]
    pub users: Vec<SipUser>,
}

impl Default for SipConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            transports: vec![TransportKind::Udp, TransportKind::Tcp],
            tls: None,
            domain: "callcenter.local".into(),
            advertised_address: None,
            ring_timeout_secs: 60,
            limits: LimitsConfig::default(),
            registrar: RegistrarConfig::default(),
            auth: AuthGuardConfig::default(),
            allow_direct_user_calls: false,
            users: Vec::new(),
        }
    }
}

/// Where a dialled number goes: exactly one of `ivr`, `queue`, `forward`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The dialled number (user part of the Request-URI).
    pub number: String,
    pub ivr: Option<String>,
    pub queue: Option<String>,
    pub forward: Option<String>,
}

/// What a route does, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget {
    Ivr(String),
    Queue(String),
    Forward(String),
}

impl RouteConfig {
    /// The one target this route names.
    pub fn target(&self) -> Result<RouteTarget, String> {
        match (&self.ivr, &self.queue, &self.forward) {
            (Some(f), None, None) => Ok(RouteTarget::Ivr(f.clone())),
            (None, Some(q), None) => Ok(RouteTarget::Queue(q.clone())),
            (None, None, Some(u)) => {
                rsipstack::sip::Uri::try_from(u.as_str())
                    .map_err(|e| format!("route {}: forward = {u:?} is not a SIP URI: {e}", self.number))?;
                Ok(RouteTarget::Forward(u.clone()))
            }
            _ => Err(format!(
                "route {} must set exactly one of ivr, queue, forward",
                self.number
            )),
        }
    }
}

/// An outbound trunk to a carrier; requests towards its address answer its challenges.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    pub name: String,
    /// `sip:host:port` of the carrier's edge.
    pub uri: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Number presented as caller on calls the platform originates.
    pub caller_id: Option<String>,
    /// Send INVITEs towards this trunk without SDP (late offer): the carrier offers in its 2xx and our
    /// answer rides in the ACK. Applies to legs the platform places (agents' calls out, transfers,
    /// campaigns); forwarded calls keep the caller's offer.
    #[serde(default)]
    pub late_offer: bool,
}

impl std::fmt::Debug for TrunkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrunkConfig")
            .field("name", &self.name)
            .field("uri", &self.uri)
            .finish_non_exhaustive()
    }
}

/// Everything the gateway needs.
#[derive(Debug, Clone, Default)]
pub struct GatewayConfig {
    pub sip: SipConfig,
    pub routes: Vec<RouteConfig>,
    pub trunks: Vec<TrunkConfig>,
}

impl GatewayConfig {
    /// Checks what serde cannot: route targets, duplicate numbers and users, trunk URIs.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        let mut numbers = std::collections::HashSet::new();
        for r in &self.routes {
            if let Err(e) = r.target() {
                errors.push(e);
            }
            if !numbers.insert(r.number.as_str()) {
                errors.push(format!("route {} is defined twice", r.number));
            }
        }
        let mut users = std::collections::HashSet::new();
        for u in &self.sip.users {
            if u.name.is_empty() || u.password.is_empty() {
                errors.push("sip.user entries need a name and a password".to_string());
            }
            if !users.insert(u.name.as_str()) {
                errors.push(format!("sip.user {} is defined twice", u.name));
            }
        }
        for t in &self.trunks {
            if rsipstack::sip::Uri::try_from(t.uri.as_str()).is_err() {
                errors.push(format!("trunk {}: uri {:?} is not a SIP URI", t.name, t.uri));
            }
            if t.username.is_some() != t.password.is_some() {
                errors.push(format!("trunk {}: username and password go together", t.name));
            }
        }
        if self.sip.registrar.min_expires_secs > self.sip.registrar.max_expires_secs {
            errors.push("sip.registrar.min_expires_secs is above max_expires_secs".into());
        }
        if self.sip.transports.is_empty() && self.sip.tls.is_none() {
            errors.push("sip.transports is empty and no TLS listener is set".into());
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}
