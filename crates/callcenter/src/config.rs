//! The platform's configuration: one TOML file (or the embedded default) with environment overrides
//! `CALLCENTER_<SECTION>__<KEY>=value`. Every error names the file, the key path and what was
//! expected, and is reported before anything starts.

use serde::Deserialize;
use sip_gateway::config::{RouteConfig, SipConfig, TrunkConfig};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The embedded default configuration (`config/callcenter.toml`).
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../config/callcenter.toml");

/// The `[node]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub name: String,
    pub log: String,
    pub log_json: bool,
    pub shutdown_grace_secs: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            name: "node1".into(),
            log: "info".into(),
            log_json: false,
            shutdown_grace_secs: 30,
        }
    }
}

/// The `[http]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// Reverse proxies (exact addresses) whose `X-Forwarded-For`, `-Proto` and `-Host` are believed;
    /// from anyone else those headers are ignored.
    pub trusted_proxies: Vec<IpAddr>,
    /// Origins (`https://desk.example.com`) whose pages may use a session cookie besides the host
    /// the browser addressed.
    pub allowed_origins: Vec<String>,
    /// Serve HTTPS and WSS with this certificate (`[http.tls]`).
    pub tls: Option<TlsFiles>,
}

/// `[http.tls]`: PEM files of the certificate chain (leaf first) and its private key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            trusted_proxies: Vec::new(),
            allowed_origins: Vec::new(),
            tls: None,
        }
    }
}

/// The `[rtp]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtpConfig {
    pub bind_ip: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    /// A call with no RTP from the caller for this long ends.
    pub media_timeout_secs: u64,
    pub recordings_dir: PathBuf,
    /// Record every call bridged to an agent.
    pub record_calls: bool,
    /// Before a caller's dialog is confirmed (the ACK of our 200), a leg sends at most this many
    /// packets...
    pub unconfirmed_send_packets: u32,
    /// ...within this long; then nothing until the ACK (a spoofed INVITE cannot aim a stream at someone).
    pub unconfirmed_send_ms: u64,
}

impl Default for RtpConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::from([127, 0, 0, 1]),
            port_min: 20000,
            port_max: 20999,
            media_timeout_secs: 60,
            recordings_dir: "./data/recordings".into(),
            record_calls: true,
            unconfirmed_send_packets: 100,
            unconfirmed_send_ms: 2000,
        }
    }
}

/// Where live state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    #[default]
    Memory,
    Redis,
}

/// The `[state]` section.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    pub backend: StateBackend,
    pub redis_url: Option<String>,
    pub key_prefix: Option<String>,
}

/// The `[cluster]` section: one contact center over every node that shares the Redis state store.
/// With `enabled`, each node runs a candidate for the cluster's one ACD router (elected through a
/// fenced lease in Redis) and reaches whichever leads through the store; without it each node routes
/// its own calls (the single-process default).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    pub enabled: bool,
    /// How long the router's lease lasts unless renewed: a dead leader is replaced after about this.
    pub lease_ttl_ms: u64,
    /// How long a node's liveness record lasts: a dead node's calls are let go after about this.
    /// It must outlast a stall of the store: every node's record lapses while Redis does not
    /// answer, and a node whose record lapsed is taken for dead (4-5 s stalls were seen on a
    /// 2-core machine under load; 3 s here let go of live nodes' calls).
    pub liveness_ttl_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            lease_ttl_ms: 2000,
            liveness_ttl_ms: 10_000,
        }
    }
}

/// The `[crm]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CrmConfig {
    /// `sqlite:PATH` (embedded) or `postgres://...`.
    pub database_url: String,
    /// The local journal of interaction events (fsynced before a step counts as written); with the
    /// stream outbox it keeps only the dead-letter file.
    pub journal_dir: PathBuf,
    /// Where interaction events are made durable before SQL: `auto` (the stream when the state
    /// store is Redis, else the journal), `journal` (this node's disk) or `stream` (the state
    /// store's stream, shared by every node; one node at a time writes it to SQL).
    pub outbox: OutboxKind,
    /// Interactions older than this many days lose their personal data and their recordings (this
    /// node's files in `[rtp] recordings_dir`); checked at start and every 6 hours. 0 keeps everything.
    pub retention_days: u32,
}

/// The `[crm] outbox` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutboxKind {
    #[default]
    Auto,
    Journal,
    Stream,
}

impl Default for CrmConfig {
    fn default() -> Self {
        Self {
            database_url: "sqlite:./data/callcenter.db".into(),
            journal_dir: "./data/journal".into(),
            outbox: OutboxKind::Auto,
            retention_days: 0,
        }
    }
}

impl Config {
    /// Whether interaction events go through the state store's stream rather than the local journal.
    pub fn crm_uses_stream_outbox(&self) -> bool {
        match self.crm.outbox {
            OutboxKind::Auto => self.state.backend == StateBackend::Redis,
            OutboxKind::Journal => false,
            OutboxKind::Stream => true,
        }
    }
}

/// The `[ivr]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IvrConfig {
    pub scripts_dir: PathBuf,
    pub entry_flow: String,
    /// A PEM file of CA certificates the flows' `https://` webhooks trust besides the system's
    /// (a billing system on a private CA).
    pub webhook_ca_certificates: Option<PathBuf>,
}

impl Default for IvrConfig {
    fn default() -> Self {
        Self {
            scripts_dir: "ivr-scripts".into(),
            entry_flow: "main".into(),
            webhook_ca_certificates: None,
        }
    }
}

/// The `[agents]` section: how agents become available without a desktop session.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentsConfig {
    /// Log every configured agent in and make them ready at start (agents on SIP phones whose
    /// phone registration is their presence). The agent desktop manages state otherwise.
    pub ready_on_start: bool,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        Self { ready_on_start: true }
    }
}

/// The `[webrtc]` section: the browser softphone's media (one UDP port for every browser agent).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebRtcSection {
    pub enabled: bool,
    /// Address the WebRTC socket binds to.
    pub bind_ip: IpAddr,
    /// UDP port; 0 lets the system pick one (announced in each SDP answer).
    pub port: u16,
    /// The address browsers reach us at, when it is not `bind_ip` (behind NAT, or bound to 0.0.0.0).
    pub advertise_ip: Option<IpAddr>,
}

impl Default for WebRtcSection {
    fn default() -> Self {
        Self {
            enabled: true,
            bind_ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            port: 0,
            advertise_ip: None,
        }
    }
}

/// The `[desk]` section: the agent desktop, the wallboard and their accounts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeskConfig {
    /// A login session lapses this long after login.
    pub session_ttl_secs: u64,
    /// Failed logins a user may make from one address before a lockout.
    pub max_login_failures: u32,
    /// The first lockout; each further failure within the window doubles it, up to
    /// `max_lockout_secs`.
    pub lockout_secs: u64,
    pub max_lockout_secs: u64,
    /// Failed logins are counted over this long (slow guessing is counted too).
    pub login_failure_window_secs: u64,
    /// Failed logins from one address (any users) before it is locked out.
    pub source_max_login_failures: u32,
    /// Failed logins for one user (any addresses) before their logins wait.
    pub user_max_login_failures: u32,
    /// Threads checking passwords (0: one per core); each holds 19 MiB.
    pub login_hash_workers: usize,
    /// Logins that may wait for a password check; more at once get 503 with Retry-After.
    pub login_hash_queue: usize,
    /// A WAV file looped to callers the agent puts on hold.
    pub hold_music: Option<PathBuf>,
    /// The `[[trunk]]` (by name) that agents' transfers to outside numbers go through.
    pub outbound_trunk: Option<String>,
    /// Serve the demo IVR's helper services (the balance webhook at `/demo/balance`).
    pub demo_services: bool,
    /// Accounts created at start when missing (`[[desk.user]]`); an existing account is left as it
    /// is, so a password changed since is never reset.
    #[serde(rename = "user")]
    pub users: Vec<DeskUser>,
    /// What each role may see of customers (`[desk.roles.agent]`, ...).
    pub roles: DeskRoles,
    /// Customer lookups a user may make in a burst, and per second after it.
    pub customer_lookups_burst: u32,
    pub customer_lookups_per_sec: u32,
    /// The wallboard's alert thresholds (`[desk.wallboard.thresholds]`, per queue
    /// `[desk.wallboard.queues.<id>]`).
    pub wallboard: agent_desk::supervision::WallboardConfig,
    /// Disposition codes the agent desktop offers at wrap-up.
    pub dispositions: Vec<String>,
    /// Disposition codes for one queue or campaign, by its id (`[desk.dispositions_by]`).
    pub dispositions_by: std::collections::BTreeMap<String, Vec<String>>,
    /// Reasons an agent may pick for not being ready.
    pub not_ready_reasons: Vec<String>,
}

/// `[desk.roles.*]`: customer-data permissions per role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeskRoles {
    pub agent: RolePermissions,
    pub supervisor: RolePermissions,
    pub admin: RolePermissions,
}

impl Default for DeskRoles {
    fn default() -> Self {
        let all = RolePermissions {
            read_any_customer: true,
            full_numbers: true,
        };
        Self {
            agent: RolePermissions {
                read_any_customer: false,
                full_numbers: false,
            },
            supervisor: all.clone(),
            admin: all,
        }
    }
}

/// One role's customer-data permissions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolePermissions {
    /// Read any customer (else only the one whose call is on the user's desktop).
    pub read_any_customer: bool,
    /// See phone numbers whole (else masked but for the last two digits).
    pub full_numbers: bool,
}

impl Default for DeskConfig {
    fn default() -> Self {
        Self {
            session_ttl_secs: 8 * 3600,
            max_login_failures: 5,
            lockout_secs: 60,
            max_lockout_secs: 24 * 3600,
            login_failure_window_secs: 24 * 3600,
            source_max_login_failures: 100,
            user_max_login_failures: 50,
            login_hash_workers: 0,
            login_hash_queue: 16,
            hold_music: None,
            outbound_trunk: None,
            demo_services: false,
            users: Vec::new(),
            roles: DeskRoles::default(),
            customer_lookups_burst: 20,
            customer_lookups_per_sec: 1,
            wallboard: Default::default(),
            dispositions: ["resolved", "follow_up", "sale", "complaint", "wrong_number"]
                .map(String::from)
                .to_vec(),
            dispositions_by: Default::default(),
            not_ready_reasons: ["break", "lunch", "training", "meeting"]
                .map(String::from)
                .to_vec(),
        }
    }
}

/// One seeded account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeskUser {
    /// The login; for agents, the ACD agent id.
    pub id: String,
    pub name: String,
    pub role: crm_store::Role,
    pub password: String,
}

/// The whole file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub sip: SipConfig,
    pub http: HttpConfig,
    pub rtp: RtpConfig,
    pub state: StateConfig,
    pub cluster: ClusterConfig,
    pub crm: CrmConfig,
    pub ivr: IvrConfig,
    /// Queues and agents of the ACD (`[[acd.queues]]`, `[[acd.agents]]`). An agent's SIP user has
    /// the agent's id.
    pub acd: acd::AcdConfig,
    pub agents: AgentsConfig,
    pub desk: DeskConfig,
    pub webrtc: WebRtcSection,
    #[serde(rename = "route")]
    pub routes: Vec<RouteConfig>,
    #[serde(rename = "trunk")]
    pub trunks: Vec<TrunkConfig>,
    /// Outbound campaigns the live dialer runs (`[[campaign]]`); they dial through
    /// `desk.outbound_trunk`.
    #[serde(rename = "campaign")]
    pub campaigns: Vec<call_control::CampaignConfig>,
    /// What callers waiting in queues hear: music, position and wait announcements, comfort
    /// messages (`[queue_audio]`, `[queue_audio.queues.<id>]`).
    pub queue_audio: call_control::queue_audio::QueueAudioConfig,
}

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("{file}: key `{path}`: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
    #[error("environment {var}: {message}")]
    Env { var: String, message: String },
    #[error("{file}: {}", problems.join("\n  "))]
    Semantic { file: String, problems: Vec<String> },
}

impl Config {
    /// Loads `path`, or the embedded default when None, then applies `env` overrides.
    pub fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let (file, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    file: p.display().to_string(),
                    source,
                })?;
                (p.display().to_string(), text)
            }
            None => ("<embedded default>".to_string(), EMBEDDED_DEFAULT.to_string()),
        };
        let overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with("CALLCENTER_") && k.contains("__"))
            .collect();
        let config = if overrides.is_empty() {
            // Straight from the text, so errors carry line and column.
            let de = toml::Deserializer::parse(&text).map_err(|e| ConfigError::Syntax {
                file: file.clone(),
                message: e.to_string(),
            })?;
            serde_path_to_error::deserialize::<_, Config>(de).map_err(|e| invalid(&file, e))?
        } else {
            let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Syntax {
                file: file.clone(),
                message: e.to_string(),
            })?;
            for (var, value) in overrides {
                apply_override(&mut table, &var, &value)?;
            }
            serde_path_to_error::deserialize::<_, Config>(toml::Value::Table(table))
                .map_err(|e| invalid(&file, e))?
        };
        config
            .validate()
            .map_err(|problems| ConfigError::Semantic { file, problems })?;
        Ok(config)
    }

    /// The state store's part.
    pub fn state_store(&self) -> state_store::StateConfig {
        match (&self.state.backend, &self.state.redis_url) {
            (StateBackend::Redis, Some(url)) => state_store::StateConfig {
                backend: state_store::BackendConfig::Redis {
                    url: url.clone(),
                    prefix: self.state.key_prefix.clone().unwrap_or_else(|| "cc".into()),
                },
            },
            _ => state_store::StateConfig::memory(),
        }
    }

    /// Where agents' transfers to outside numbers go: the outbound trunk's host and caller id.
    pub fn outbound_trunk(&self) -> Option<call_control::OutboundTrunk> {
        let name = self.desk.outbound_trunk.as_ref()?;
        let trunk = self.trunks.iter().find(|t| &t.name == name)?;
        let rest = trunk
            .uri
            .strip_prefix("sips:")
            .or_else(|| trunk.uri.strip_prefix("sip:"))?;
        // `sip:host:port` or `sip:user@host:port;params`: keep host and port.
        let host = rest.rsplit('@').next()?.split(';').next()?.to_string();
        Some(call_control::OutboundTrunk {
            host,
            caller_id: trunk.caller_id.clone(),
        })
    }

    /// The gateway's part.
    pub fn gateway(&self) -> sip_gateway::GatewayConfig {
        sip_gateway::GatewayConfig {
            sip: self.sip.clone(),
            routes: self.routes.clone(),
            trunks: self.trunks.clone(),
        }
    }

    /// Checks across sections, after types are right.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = self.gateway().validate().err().unwrap_or_default();
        if let Err(e) = self.acd.check() {
            problems.push(format!("acd: {e}"));
        }
        if let Some(name) = &self.desk.outbound_trunk
            && !self.trunks.iter().any(|t| &t.name == name)
        {
            problems.push(format!("desk.outbound_trunk: no [[trunk]] named {name:?}"));
        }
        for user in &self.desk.users {
            if domain::AgentId::new(&user.id).is_err() {
                problems.push(format!("desk.user {:?}: not a valid user id", user.id));
            }
            if user.password.len() < 8 {
                problems.push(format!(
                    "desk.user {:?}: password must be at least 8 characters",
                    user.id
                ));
            }
        }
        if self.webrtc.enabled && self.webrtc.bind_ip.is_unspecified() && self.webrtc.advertise_ip.is_none() {
            problems.push(
                "webrtc: bind_ip is unspecified; set advertise_ip to the address browsers reach".into(),
            );
        }
        if let Some(tls) = &self.http.tls {
            for (key, path) in [("cert", &tls.cert), ("key", &tls.key)] {
                if !path.is_file() {
                    problems.push(format!("http.tls.{key}: {}: no such file", path.display()));
                }
            }
        }
        for origin in &self.http.allowed_origins {
            let scheme_ok = origin.starts_with("https://") || origin.starts_with("http://");
            if !scheme_ok || origin.trim_end_matches('/').matches('/').count() != 2 {
                problems.push(format!(
                    "http.allowed_origins: {origin:?} is not an origin like \"https://desk.example.com\""
                ));
            }
        }
        let d = &self.desk;
        if [
            d.session_ttl_secs,
            d.lockout_secs,
            d.max_lockout_secs,
            d.login_failure_window_secs,
        ]
        .contains(&0)
            || [
                d.max_login_failures,
                d.source_max_login_failures,
                d.user_max_login_failures,
                d.customer_lookups_burst,
                d.customer_lookups_per_sec,
            ]
            .contains(&0)
        {
            problems.push(
                "desk: session_ttl_secs, lockout_secs, max_lockout_secs, login_failure_window_secs and the \
                 *_login_failures and customer_lookups_* limits must be positive"
                    .into(),
            );
        }
        for campaign in &self.campaigns {
            if let Err(errors) = campaign.spec(&self.acd) {
                problems.extend(
                    errors
                        .into_iter()
                        .map(|e| format!("campaign {:?}: {e}", campaign.id)),
                );
            }
            if self.desk.outbound_trunk.is_none() {
                problems.push(format!(
                    "campaign {:?}: campaigns dial through desk.outbound_trunk, which is not set",
                    campaign.id
                ));
            }
            if let Some(leads) = campaign.leads.as_ref().filter(|p| !p.is_file()) {
                problems.push(format!(
                    "campaign {:?}: leads {}: no such file",
                    campaign.id,
                    leads.display()
                ));
            }
        }
        let mut ids: Vec<&str> = self.campaigns.iter().map(|c| c.id.as_str()).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            problems.push("campaign: two [[campaign]] sections share an id".into());
        }
        for route in &self.routes {
            if let Some(q) = &route.queue
                && !self.acd.queues.iter().any(|c| c.id.as_str() == q)
            {
                problems.push(format!(
                    "route {} names queue {q:?}, which is not in [[acd.queues]]",
                    route.number
                ));
            }
        }
        if self.rtp.port_min > self.rtp.port_max {
            problems.push("rtp.port_min is above rtp.port_max".into());
        }
        if self.rtp.port_min % 2 == 1 {
            problems.push("rtp.port_min must be even (RTP on even ports, RTCP on the next odd one)".into());
        }
        if self.crm.retention_days > 0 && folders_overlap(&self.rtp.recordings_dir, &self.ivr.scripts_dir) {
            problems.push(format!(
                "rtp.recordings_dir {}: with crm.retention_days, old .wav files there are deleted, so it must \
                 not be, hold or lie in ivr.scripts_dir {} (its prompts)",
                self.rtp.recordings_dir.display(),
                self.ivr.scripts_dir.display()
            ));
        }
        if self.state.backend == StateBackend::Redis && self.state.redis_url.is_none() {
            problems.push("state.backend = \"redis\" needs state.redis_url".into());
        }
        if self.cluster.enabled && self.state.backend != StateBackend::Redis {
            problems.push("cluster.enabled needs state.backend = \"redis\" (the nodes share it)".into());
        }
        if self.cluster.enabled && (self.cluster.lease_ttl_ms < 500 || self.cluster.liveness_ttl_ms < 500) {
            problems.push("cluster.lease_ttl_ms and cluster.liveness_ttl_ms must be at least 500".into());
        }
        if !(self.crm.database_url.starts_with("sqlite:")
            || self.crm.database_url.starts_with("postgres://")
            || self.crm.database_url.starts_with("postgresql://"))
        {
            problems.push(format!(
                "crm.database_url must start with sqlite: or postgres:// (got {:?})",
                redact(&self.crm.database_url)
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &url[..s], &url[at..]),
        _ => url.to_string(),
    }
}

fn invalid<E: std::fmt::Display>(file: &str, e: serde_path_to_error::Error<E>) -> ConfigError {
    let path = e.path().to_string();
    ConfigError::Invalid {
        file: file.to_string(),
        path,
        message: e.inner().to_string(),
    }
}

/// `CALLCENTER_SIP__LIMITS__MAX_CALLS_PER_SECOND=500` sets `sip.limits.max_calls_per_second = 500`.
/// The value is read as a TOML value when it is one (numbers, booleans, arrays), else as a string.
fn apply_override(table: &mut toml::Table, var: &str, value: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = var
        .trim_start_matches("CALLCENTER_")
        .split("__")
        .map(|s| s.to_ascii_lowercase())
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Env {
            var: var.into(),
            message: "empty key segment".into(),
        });
    }
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let (last, parents) = path.split_last().ok_or_else(|| ConfigError::Env {
        var: var.into(),
        message: "no key".into(),
    })?;
    let mut cursor = table;
    for key in parents {
        let entry = cursor
            .entry(key.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        cursor = entry.as_table_mut().ok_or_else(|| ConfigError::Env {
            var: var.into(),
            message: format!("`{key}` is not a section"),
        })?;
    }
    cursor.insert(last.clone(), parsed);
    Ok(())
}

/// Whether one folder is, holds or lies in the other (compared as absolute paths, without resolving
/// links: a guard against an obvious mistake, not against every way to name a folder twice).
fn folders_overlap(a: &std::path::Path, b: &std::path::Path) -> bool {
    let clean = |p: &std::path::Path| -> PathBuf {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.to_path_buf())
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect()
    };
    let (a, b) = (clean(a), clean(b));
    a.starts_with(&b) || b.starts_with(&a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn embedded_default_loads() {
        let c = Config::load(None, Vec::new()).unwrap();
        assert_eq!(c.sip.listen.port(), 5060);
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.state.backend, StateBackend::Memory);
        assert!(c.crm.database_url.starts_with("sqlite:"));
        assert!(c.routes.iter().any(|r| r.number == "800"));
        assert!(!c.crm_uses_stream_outbox(), "embedded: the local journal");
    }

    #[test]
    fn the_cluster_needs_the_shared_store() {
        let c = Config::load(None, Vec::new()).unwrap();
        assert!(!c.cluster.enabled, "one process by default");
        let f = write("[cluster]\nenabled = true\n");
        let err = Config::load(Some(f.path()), Vec::new()).unwrap_err().to_string();
        assert!(err.contains("cluster.enabled needs state.backend"), "{err}");
        let f = write(
            "[cluster]\nenabled = true\n[state]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379/\"\n",
        );
        let c = Config::load(Some(f.path()), Vec::new()).unwrap();
        assert!(c.cluster.enabled);
        assert_eq!(c.cluster.lease_ttl_ms, 2000);
    }

    #[test]
    fn the_outbox_follows_the_state_backend_unless_set() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/production.example.toml");
        let c = Config::load(Some(&path), Vec::new()).unwrap();
        assert!(c.crm_uses_stream_outbox(), "Redis: the shared stream");
        let f = write("[crm]\noutbox = \"journal\"\n");
        let c = Config::load(Some(f.path()), Vec::new()).unwrap();
        assert_eq!(c.crm.outbox, OutboxKind::Journal);
        assert!(!c.crm_uses_stream_outbox());
        let f = write("[crm]\noutbox = \"kafka\"\n");
        let err = Config::load(Some(f.path()), Vec::new()).unwrap_err().to_string();
        assert!(err.contains("crm.outbox"), "{err}");
    }

    #[test]
    fn production_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/production.example.toml");
        let c = Config::load(Some(&path), Vec::new()).unwrap();
        assert_eq!(c.state.backend, StateBackend::Redis);
        assert!(c.crm.database_url.starts_with("postgres://"));
        assert_eq!(c.trunks.len(), 1);
    }

    #[test]
    fn unknown_key_names_file_path_and_expectation() {
        let f = write("[sip]\nlisten = \"127.0.0.1:5060\"\nlistne = 1\n");
        let err = Config::load(Some(f.path()), Vec::new()).unwrap_err().to_string();
        assert!(err.contains(&f.path().display().to_string()), "{err}");
        assert!(err.contains("listne"), "{err}");
        assert!(err.contains("expected one of"), "{err}");
    }

    #[test]
    fn wrong_type_names_key_path_and_line() {
        let f = write("[sip.limits]\nmax_calls_per_second = \"lots\"\n");
        let err = Config::load(Some(f.path()), Vec::new()).unwrap_err().to_string();
        assert!(err.contains("sip.limits.max_calls_per_second"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn bad_value_and_semantic_errors_are_reported() {
        let f = write("[sip]\nlisten = \"not an address\"\n");
        let err = Config::load(Some(f.path()), Vec::new()).unwrap_err().to_string();
        assert!(err.contains("sip.listen"), "{err}");
        let f = write("[[route]]\nnumber = \"1\"\nivr = \"a\"\nqueue = \"b\"\n");
        let err = Config::load(Some(f.path()), Vec::new()).unwrap_err().to_string();
        assert!(err.contains("exactly one of ivr, queue, forward"), "{err}");
    }

    #[test]
    fn campaigns_are_checked_against_queues_trunk_and_files() {
        let f = write(
            "[[campaign]]\nid = \"spring\"\nqueue = \"nowhere\"\ncaller_id = \"+442070000000\"\nmessage = \"/no/such.wav\"\nleads = \"/no/leads.csv\"\n[campaign.amd]\ngreeting_ms = 20\n",
        );
        let err = Config::load(Some(f.path()), Vec::new()).unwrap_err().to_string();
        for wanted in [
            "campaign \"spring\": queue \"nowhere\" is not in [[acd.queues]]",
            "campaign \"spring\": message /no/such.wav: no such file",
            "campaigns dial through desk.outbound_trunk",
            "leads /no/leads.csv: no such file",
            "campaign \"spring\": amd.greeting_ms: between 300 and 10000 (got 20)",
        ] {
            assert!(err.contains(wanted), "{wanted} missing from {err}");
        }
        let f = write(
            "[[campaign]]\nid = \"spring\"\ncaller_id = \"+442070000000\"\nmessage = \"m.wav\"\n[campaign.amd]\nbeep_ms = 5\n",
        );
        let err = Config::load(Some(f.path()), Vec::new()).unwrap_err().to_string();
        assert!(err.contains("amd") && err.contains("beep_ms"), "{err}");
    }

    #[test]
    fn retention_never_sweeps_the_ivr_prompts() {
        let f = write(
            "[crm]\nretention_days = 30\n[rtp]\nrecordings_dir = \"./ivr-scripts/prompts\"\n[ivr]\nscripts_dir = \"ivr-scripts\"\n",
        );
        let err = Config::load(Some(f.path()), Vec::new()).unwrap_err().to_string();
        assert!(err.contains("rtp.recordings_dir ./ivr-scripts/prompts"), "{err}");
        let f = write("[crm]\nretention_days = 30\n[rtp]\nrecordings_dir = \"data/recordings\"\n");
        let c = Config::load(Some(f.path()), Vec::new()).unwrap();
        assert_eq!(c.crm.retention_days, 30);
        assert!(!folders_overlap(
            Path::new("data/recordings"),
            Path::new("ivr-scripts")
        ));
        assert!(folders_overlap(
            Path::new("/srv/cc"),
            Path::new("/srv/cc/recordings")
        ));
    }

    #[test]
    fn environment_overrides_apply_with_types() {
        let env = vec![
            (
                "CALLCENTER_SIP__LIMITS__MAX_CALLS_PER_SECOND".to_string(),
                "900".to_string(),
            ),
            (
                "CALLCENTER_HTTP__LISTEN".to_string(),
                "127.0.0.1:9090".to_string(),
            ),
            ("CALLCENTER_STATE__BACKEND".to_string(), "redis".to_string()),
            (
                "CALLCENTER_STATE__REDIS_URL".to_string(),
                "redis://127.0.0.1:6379/".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::load(None, env).unwrap();
        assert_eq!(c.sip.limits.max_calls_per_second, 900);
        assert_eq!(c.http.listen.port(), 9090);
        assert_eq!(c.state.backend, StateBackend::Redis);
        let err = Config::load(
            None,
            vec![("CALLCENTER_SIP__LIMITS__MAX_CALLS_PER_SECOND".into(), "x".into())],
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sip.limits.max_calls_per_second"), "{err}");
    }
}
