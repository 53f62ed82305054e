//! SIP signalling gateway: the platform's only SIP socket owner.
//!
//! It listens on UDP and TCP (TLS when a certificate is configured), screens every datagram
//! ([`guard`]), runs RFC 3261 transactions on the pinned `rsipstack` stack, registers agents' phones
//! with digest authentication ([`registrar`]), and bridges calls as a back-to-back user agent
//! ([`b2bua`]) according to the configured routes. Overload control ([`admission`]) answers 503 with
//! Retry-After. Other crates see only this crate's own types: [`Gateway`], [`GatewayConfig`],
//! [`MediaAnchor`], [`Locations`].

pub mod admission;
pub mod authguard;
mod b2bua;
pub mod body;
pub mod config;
pub mod digest;
pub mod guard;
mod inputs;
pub mod leg;
pub mod location;
pub mod media;
pub mod metrics;
mod msg;
pub mod registrar;
mod stream;
pub mod syntax;
mod tls;
pub mod uri;

pub use config::{GatewayConfig, RouteTarget, SipConfig};
pub use leg::{InboundCall, InboundCallHandler, LegEvent, LegHandle, OriginateError, OriginateRequest};
pub use location::{Binding, Locations, MemoryLocations, StateLocations};
pub use media::{MediaAnchor, PassThrough, Side};
pub use metrics::GatewayMetrics;

use crate::admission::{CallAdmission, SourceLimiter};
use crate::config::{TransportKind, TrunkConfig};
use crate::guard::{GuardedUdpSocket, ScreenLimits};
use crate::registrar::Registrar;
use domain::Timestamp;
use parking_lot::Mutex;
use rand::Rng as _;
use rsipstack::sip::{Method, StatusCode};
use rsipstack::transaction::endpoint::EndpointInner;
use rsipstack::transaction::transaction::Transaction;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};

/// A random token of `len` alphanumeric characters (tags, branches, cnonces).
pub(crate) fn random_token(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| {
            let n = rng.random_range(0..36u8);
            char::from(if n < 10 { b'0' + n } else { b'a' + n - 10 })
        })
        .collect()
}

/// The name of the thread that carries all of the gateway's SIP work (`/proc/<pid>/task/*/comm`; at
/// most 15 bytes): benchmarks read its CPU apart from the media's.
pub const SIGNALLING_THREAD: &str = "sip-signalling";

/// Failure to start the gateway.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr} ({transport}): {source}")]
    Bind {
        addr: SocketAddr,
        transport: &'static str,
        source: std::io::Error,
    },
    #[error("SIP stack: {0}")]
    Stack(String),
    #[error("configuration: {0}")]
    Config(String),
}

type DialogKey = (String, String);

/// State shared by every task of the gateway.
pub(crate) struct Core {
    pub(crate) endpoint: Arc<EndpointInner>,
    pub(crate) config: GatewayConfig,
    pub(crate) contact: String,
    pub(crate) dialogs: Mutex<HashMap<DialogKey, (Side, mpsc::UnboundedSender<b2bua::CallInput>)>>,
    pub(crate) media: Arc<dyn MediaAnchor>,
    pub(crate) metrics: GatewayMetrics,
    pub(crate) locations: Arc<dyn Locations>,
    handler: std::sync::OnceLock<Arc<dyn InboundCallHandler>>,
    admission: CallAdmission,
    registrar: Registrar,
    auth_guard: Arc<authguard::AuthGuard>,
    sources: Arc<SourceLimiter>,
    routes: HashMap<String, RouteTarget>,
    /// The runtime that started the gateway: calls handed to call control run there.
    control: tokio::runtime::Handle,
    /// The signalling thread's runtime: every SIP task runs there, outbound legs included.
    pub(crate) signalling: tokio::runtime::Handle,
}

/// A running gateway.
pub struct Gateway {
    core: Arc<Core>,
    cancel: CancellationToken,
    local_addr: SocketAddr,
}

impl Gateway {
    /// Binds the listeners and starts serving. `locations` holds registrations (memory or shared);
    /// authentication state (nonce secret, replays, bans) stays in this process.
    pub async fn start(
        config: GatewayConfig,
        locations: Arc<dyn Locations>,
        media: Arc<dyn MediaAnchor>,
        telemetry: &telemetry::Telemetry,
    ) -> Result<Self, GatewayError> {
        Self::start_with_state(
            config,
            locations,
            media,
            telemetry,
            state_store::StateStore::memory(),
        )
        .await
    }

    /// Like [`Gateway::start`], with authentication state (the nonce secret, used nonce counts, failure
    /// counts and bans) in `state`, so that it holds across every node sharing that store.
    ///
    /// SIP runs on a thread of its own (a single-threaded runtime): every datagram, transaction and
    /// call task stays on that thread, so a flood of datagrams is screened there without delaying the
    /// audio on the node's other threads, and bursts of audio do not delay SIP timers. Calls routed to
    /// call control run on the caller's runtime, as do the media engine's tasks (it spawns on the
    /// runtime it was made on).
    pub async fn start_with_state(
        config: GatewayConfig,
        locations: Arc<dyn Locations>,
        media: Arc<dyn MediaAnchor>,
        telemetry: &telemetry::Telemetry,
        state: state_store::StateStore,
    ) -> Result<Self, GatewayError> {
        config
            .validate()
            .map_err(|e| GatewayError::Config(e.join("; ")))?;
        let metrics = GatewayMetrics::register(telemetry);
        let control = tokio::runtime::Handle::current();
        let (started_tx, started) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(SIGNALLING_THREAD.into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started_tx.send(Err(GatewayError::Stack(format!("signalling runtime: {e}"))));
                        return;
                    }
                };
                let signalling = runtime.handle().clone();
                runtime.block_on(async move {
                    let started =
                        Self::start_here(config, locations, media, metrics, state, control, signalling).await;
                    let cancel = started.as_ref().ok().map(|gateway| gateway.cancel.clone());
                    let _ = started_tx.send(started);
                    // The thread (and every task on it) lives until the gateway is shut down or dropped.
                    if let Some(cancel) = cancel {
                        cancel.cancelled().await;
                    }
                });
            })
            .map_err(|e| GatewayError::Stack(format!("signalling thread: {e}")))?;
        started
            .await
            .map_err(|_| GatewayError::Stack("the signalling thread stopped while starting".into()))?
    }

    /// Binds and starts serving on the current runtime (the signalling thread's).
    async fn start_here(
        config: GatewayConfig,
        locations: Arc<dyn Locations>,
        media: Arc<dyn MediaAnchor>,
        metrics: GatewayMetrics,
        state: state_store::StateStore,
        control: tokio::runtime::Handle,
        signalling: tokio::runtime::Handle,
    ) -> Result<Self, GatewayError> {
        let cancel = CancellationToken::new();
        let transport_layer = rsipstack::transport::TransportLayer::new(cancel.clone());
        let sip = &config.sip;
        let limits = &sip.limits;
        let sources = Arc::new(SourceLimiter::new(
            limits.per_source_requests_per_second,
            limits.per_source_burst,
            limits.trusted_sources.clone(),
        ));
        let mut local_addr = sip.listen;
        if sip.transports.contains(&TransportKind::Udp) {
            let socket =
                tokio::net::UdpSocket::bind(sip.listen)
                    .await
                    .map_err(|source| GatewayError::Bind {
                        addr: sip.listen,
                        transport: "udp",
                        source,
                    })?;
            local_addr = socket
                .local_addr()
                .map_err(|e| GatewayError::Stack(e.to_string()))?;
            let guarded = GuardedUdpSocket::new(
                socket,
                ScreenLimits {
                    max_message_bytes: limits.max_message_bytes,
                    ..ScreenLimits::default()
                },
                sources.clone(),
                metrics.clone(),
            );
            let conn = rsipstack::transport::udp::UdpConnection::from_socket(
                Arc::new(guarded),
                sip.advertised_address,
                Some(cancel.child_token()),
            )
            .await
            .map_err(|e| GatewayError::Stack(e.to_string()))?;
            transport_layer.add_transport(conn.into());
        }
        // TCP is accepted by the gateway itself (see `stream`), so that one address holds at most
        // `max_connections_per_source` connections. The stack takes its own Via address from its
        // listeners, so without a UDP listener TCP stays the stack's (uncapped).
        let tcp_addr = SocketAddr::new(sip.listen.ip(), local_addr.port());
        let own_tcp =
            sip.transports.contains(&TransportKind::Tcp) && sip.transports.contains(&TransportKind::Udp);
        let tcp_listener = if own_tcp {
            let bind = |source| GatewayError::Bind {
                addr: tcp_addr,
                transport: "tcp",
                source,
            };
            let socket = if tcp_addr.is_ipv6() {
                tokio::net::TcpSocket::new_v6()
            } else {
                tokio::net::TcpSocket::new_v4()
            }
            .map_err(bind)?;
            socket.set_reuseaddr(true).map_err(bind)?;
            socket.bind(tcp_addr).map_err(bind)?;
            Some((socket.listen(1024).map_err(bind)?, tcp_addr))
        } else {
            if sip.transports.contains(&TransportKind::Tcp) {
                warn!("SIP over TCP without UDP: max_connections_per_source does not apply");
                let listener =
                    rsipstack::transport::TcpListenerConnection::new(tcp_addr, sip.advertised_address)
                        .await
                        .map_err(|e| GatewayError::Bind {
                            addr: tcp_addr,
                            transport: "tcp",
                            source: std::io::Error::other(e.to_string()),
                        })?;
                transport_layer.add_transport(listener.into());
            }
            None
        };
        // Idle TCP/TLS connections are closed sooner than the stack's default (an attacker's idle
        // connections cost a task and buffers each).
        let idle_timeout = Duration::from_secs(u64::from(limits.stream_idle_timeout_secs.max(1)));
        transport_layer.set_stream_idle_timeout(idle_timeout);
        // TLS is accepted by the gateway itself too when UDP gives the stack its Via address (`tls`).
        let (tls_listener, own_tls) = match &sip.tls {
            Some(tls) => {
                let own = sip.transports.contains(&TransportKind::Udp);
                let (listener, own_tls) =
                    tls::listen(&transport_layer, tls, sip.advertised_address, own).await?;
                (Some(listener), own_tls)
            }
            None => (None, None),
        };

        let mut builder = rsipstack::EndpointBuilder::new();
        builder
            .with_user_agent(concat!("callcenter/", env!("CARGO_PKG_VERSION")))
            .with_transport_layer(transport_layer)
            .with_cancel_token(cancel.clone())
            .with_timer_interval(Duration::from_millis(10))
            // We acknowledge 2xx responses ourselves (`b2bua::ack_2xx`): a late offer's answer rides in the ACK.
            .with_option(rsipstack::transaction::endpoint::EndpointOption {
                auto_ack_2xx: false,
                ..Default::default()
            });
        let endpoint = builder.build();
        let endpoint_inner = endpoint.inner.clone();
        let mut incoming = endpoint
            .incoming_transactions()
            .map_err(|e| GatewayError::Stack(e.to_string()))?;

        let advertised = sip.advertised_address.unwrap_or(local_addr);
        let contact = format!("<sip:callcenter@{advertised}>");
        let secret = authguard::AuthGuard::nonce_secret(&state, Timestamp::now_utc()).await;
        let nonce_ttl = Duration::from_secs(u64::from(sip.registrar.nonce_lifetime_secs) + 120);
        let guard = Arc::new(authguard::AuthGuard::new(
            state,
            sip.auth.clone(),
            limits.trusted_sources.clone(),
            nonce_ttl,
            metrics.clone(),
        ));
        let digest = digest::DigestAuthority::new(
            secret,
            &sip.domain,
            i64::from(sip.registrar.nonce_lifetime_secs) * 1000,
            sip.registrar.algorithms.clone(),
        );
        let passwords = sip
            .users
            .iter()
            .map(|u| (u.name.clone(), u.password.clone()))
            .collect();
        let routes = config
            .routes
            .iter()
            .filter_map(|r| r.target().ok().map(|t| (r.number.clone(), t)))
            .collect();
        let core = Arc::new(Core {
            endpoint: endpoint_inner.clone(),
            contact,
            dialogs: Mutex::new(HashMap::new()),
            media,
            metrics,
            locations,
            handler: std::sync::OnceLock::new(),
            admission: CallAdmission::new(
                limits.max_calls_per_second,
                limits.max_concurrent_calls,
                Timestamp::now_utc().as_millis(),
            ),
            registrar: Registrar::new(sip.registrar.clone(), digest, passwords, guard.clone()),
            auth_guard: guard,
            sources,
            routes,
            config,
            control,
            signalling,
        });

        if let Some((listener, tcp_addr)) = tcp_listener {
            let local = rsipstack::transport::SipAddr {
                r#type: Some(rsipstack::sip::transport::Transport::Tcp),
                addr: core.config.sip.advertised_address.unwrap_or(tcp_addr).into(),
            };
            let limits = &core.config.sip.limits;
            let accept = stream::StreamAccept {
                listener,
                local,
                cap: limits.max_connections_per_source as usize,
                trusted: limits.trusted_sources.clone(),
                metrics: core.metrics.clone(),
                cancel: cancel.child_token(),
                tls: None,
                handshake_timeout: idle_timeout,
            };
            tokio::spawn(stream::serve(accept, stream::into_layer(endpoint_inner.clone())));
        }
        if let (Some(own), Some(tls)) = (own_tls, &core.config.sip.tls) {
            let limits = &core.config.sip.limits;
            let local = rsipstack::transport::SipAddr {
                r#type: Some(rsipstack::sip::transport::Transport::Tls),
                addr: core.config.sip.advertised_address.unwrap_or(tls.listen).into(),
            };
            let accept = stream::StreamAccept {
                listener: own.listener,
                local,
                cap: limits.max_connections_per_source as usize,
                trusted: limits.trusted_sources.clone(),
                metrics: core.metrics.clone(),
                cancel: cancel.child_token(),
                tls: Some(own.acceptor),
                handshake_timeout: idle_timeout,
            };
            tokio::spawn(stream::serve(accept, stream::into_layer(endpoint_inner.clone())));
        }
        tokio::spawn(async move {
            if let Err(e) = endpoint_inner.serve().await {
                warn!(error = %e, "SIP endpoint stopped");
            }
        });
        let dispatch_core = core.clone();
        let dispatch_cancel = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = dispatch_cancel.cancelled() => break,
                    tx = incoming.recv() => match tx {
                        Some(tx) => {
                            let Some(tx) = dispatch_core.hand_to_call(tx) else {
                                continue;
                            };
                            let core = dispatch_core.clone();
                            tokio::spawn(async move { core.dispatch(tx).await });
                        }
                        None => break,
                    }
                }
            }
            drop(endpoint);
        });
        if let (Some(listener), Some(tls)) = (tls_listener, core.config.sip.tls.clone()) {
            let reload_cancel = cancel.clone();
            tokio::spawn(async move {
                let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                else {
                    return;
                };
                loop {
                    tokio::select! {
                        _ = reload_cancel.cancelled() => break,
                        got = hup.recv() => match got {
                            Some(()) => tls::reload(&listener, &tls).await,
                            None => break,
                        },
                    }
                }
            });
        }
        info!(%local_addr, "SIP gateway listening");
        Ok(Self {
            core,
            cancel,
            local_addr,
        })
    }

    /// The bound SIP address (useful when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Calls in progress.
    pub fn active_calls(&self) -> usize {
        self.core.admission.active()
    }

    /// Hands calls for `ivr` and `queue` routes to call control. Set once; later calls are ignored.
    pub fn set_inbound_handler(&self, handler: Arc<dyn InboundCallHandler>) {
        let _ = self.core.handler.set(handler);
    }

    /// Places an outbound leg to a registered user or a SIP URI (trunks answer challenges).
    pub async fn originate(&self, request: OriginateRequest) -> Result<LegHandle, OriginateError> {
        if self.core.admission.is_draining() {
            return Err(OriginateError::Draining);
        }
        leg::originate(self.core.clone(), request).await
    }

    /// Refuses new calls with 503 from now on; calls in progress go on.
    pub fn start_draining(&self) {
        self.core.admission.start_draining();
    }

    /// Drains: no new calls, then waits up to `grace` for calls in progress to end.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.start_draining();
        let deadline = tokio::time::Instant::now() + grace;
        while self.active_calls() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.active_calls()
    }

    /// Stops every listener and task.
    pub fn shutdown(&self) {
        self.cancel.cancel();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The IP address a request came from (any transport): the stream's peer, else what the stack wrote
/// into the top Via from the datagram's source (`received`, or the sent-by host it confirmed).
pub(crate) fn source_ip(tx: &Transaction) -> Option<std::net::IpAddr> {
    if let Some(addr) = tx
        .connection
        .as_ref()
        .and_then(|c| c.get_remote_addr().and_then(|a| a.get_socketaddr().ok()))
    {
        return Some(addr.ip());
    }
    let via = msg::value_of(&tx.original.headers, "Via")?;
    let via = via.split(',').next().unwrap_or_default();
    if let Some(Some(received)) = syntax::param(via, "received") {
        return received.trim_matches(['[', ']']).parse().ok();
    }
    let sent_by = via.split(';').next()?.split_whitespace().nth(1)?;
    let host = match sent_by.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => sent_by.split(':').next()?,
    };
    host.parse().ok()
}

impl Core {
    /// Hands an in-dialog request that came over UDP straight to the task of the call it belongs to
    /// (an ACK, a BYE, a re-INVITE): no task of its own, which cost a spawn and a wake-up per
    /// request. Gives back what it cannot hand over: other requests, and those over a stream, which
    /// the stream screen must see first ([`Core::dispatch`]).
    fn hand_to_call(&self, tx: Transaction) -> Option<Transaction> {
        use rsipstack::transport::SipConnection;
        let method = tx.original.method;
        if !matches!(tx.connection, Some(SipConnection::Udp(_)))
            || matches!(method, Method::Register | Method::Options)
        {
            return Some(tx);
        }
        let Some(tag) = msg::to_tag(&tx.original) else {
            return Some(tx);
        };
        let call_id = msg::call_id(&tx.original).unwrap_or_default();
        let target = self.dialogs.lock().get(&(call_id, tag)).cloned();
        let Some((side, sender)) = target else {
            return Some(tx);
        };
        self.metrics.request(&method.to_string());
        let _ = sender.send(b2bua::CallInput::InDialog {
            side,
            tx: Box::new(tx),
        });
        None
    }

    async fn dispatch(self: Arc<Self>, mut tx: Transaction) {
        let method = tx.original.method;
        self.metrics.request(&method.to_string());
        let call_id = msg::call_id(&tx.original).unwrap_or_default();
        let span = info_span!("sip", %method, call = %call_id);
        async move {
            if !self.screen_stream(&mut tx).await {
                return;
            }
            if let Some(tag) = msg::to_tag(&tx.original)
                && !matches!(method, Method::Register | Method::Options)
            {
                let target = self.dialogs.lock().get(&(call_id.clone(), tag)).cloned();
                match target {
                    Some((side, sender)) => {
                        let _ = sender.send(b2bua::CallInput::InDialog {
                            side,
                            tx: Box::new(tx),
                        });
                    }
                    None => self.reply(&mut tx, 481, vec![]).await,
                }
                return;
            }
            match method {
                Method::Register => self.on_register(&mut tx).await,
                // A draining node tells the load balancer's probe so, and leaves the rotation.
                Method::Options if self.admission.is_draining() => {
                    let retry = self.config.sip.limits.retry_after_secs.to_string();
                    self.reply(&mut tx, 503, vec![msg::header("Retry-After", retry)])
                        .await
                }
                Method::Options => {
                    let headers = vec![
                        msg::header("Allow", msg::ALLOW),
                        msg::header("Accept", body::ACCEPT),
                        msg::header("Supported", ""),
                    ];
                    self.reply(&mut tx, 200, headers).await
                }
                Method::Invite => self.on_invite(tx).await,
                Method::Bye | Method::PRack | Method::Update | Method::Info => {
                    self.reply(&mut tx, 481, vec![]).await
                }
                _ => {
                    self.reply(&mut tx, 405, vec![msg::header("Allow", msg::ALLOW)])
                        .await
                }
            }
        }
        .instrument(span)
        .await
    }

    /// Requests over TCP and TLS get what the UDP socket gives datagrams: the per-source rate limit and
    /// the guard's screening (of the message as the stack read it). False when the request was
    /// answered or dropped here.
    async fn screen_stream(&self, tx: &mut Transaction) -> bool {
        use rsipstack::transport::SipConnection;
        let stream = matches!(
            tx.connection,
            Some(SipConnection::Tcp(_)) | Some(SipConnection::Tls(_))
        );
        if !stream {
            return true;
        }
        let is_ack = tx.original.method == Method::Ack;
        if let Some(ip) = source_ip(tx)
            && !self.sources.allow(ip, Timestamp::now_utc().as_millis())
        {
            self.metrics.rejected(guard::RejectReason::RateLimited);
            if !is_ack {
                let retry = self.config.sip.limits.retry_after_secs.to_string();
                self.reply(tx, 503, vec![msg::header("Retry-After", retry)]).await;
            }
            return false;
        }
        let bytes = tx.original.to_string().into_bytes();
        let limits = ScreenLimits {
            max_message_bytes: self.config.sip.limits.max_message_bytes,
            ..ScreenLimits::default()
        };
        match guard::screen(&bytes, limits, "stream") {
            guard::Screened::Pass | guard::Screened::Rewrite(_) => true,
            guard::Screened::Respond { response, reason } => {
                self.metrics.rejected(reason);
                let text = String::from_utf8_lossy(&response);
                let code = text.get(8..11).and_then(|c| c.parse::<u16>().ok()).unwrap_or(400);
                let extra = text
                    .split("\r\n")
                    .filter_map(|l| l.split_once(':'))
                    .filter(|(n, _)| n.eq_ignore_ascii_case("Unsupported"))
                    .map(|(n, v)| msg::header(n, v.trim().to_string()))
                    .collect();
                if !is_ack {
                    self.reply(tx, code, extra).await;
                }
                false
            }
            guard::Screened::Drop(reason) => {
                self.metrics.rejected(reason);
                false
            }
        }
    }

    async fn reply(&self, tx: &mut Transaction, code: u16, headers: Vec<rsipstack::sip::Header>) {
        self.metrics.response(&tx.original.method.to_string(), code);
        if let Err(e) = tx.reply_with(StatusCode::from(code), headers, None).await {
            warn!(error = %e, code, "could not send response");
        }
    }

    async fn on_register(&self, tx: &mut Transaction) {
        let source = tx
            .connection
            .as_ref()
            .and_then(|c| c.get_remote_addr().map(|a| a.to_string()))
            .or_else(|| source_ip(tx).map(|ip| ip.to_string()))
            .unwrap_or_default();
        let outcome = self
            .registrar
            .register(
                &tx.original,
                &source,
                self.locations.as_ref(),
                Timestamp::now_utc(),
            )
            .await;
        let headers = registrar::outcome_headers(&outcome);
        self.reply(tx, outcome.code, headers).await;
    }

    async fn on_invite(self: &Arc<Self>, mut tx: Transaction) {
        let now = Timestamp::now_utc();
        let source = source_ip(&tx);
        if let Some(ip) = source
            && self.auth_guard.banned(ip, None, now).await
        {
            self.reply(&mut tx, 403, vec![]).await;
            return;
        }
        let slot = match self.admission.admit(now.as_millis()) {
            Ok(slot) => slot,
            Err(refusal) => {
                self.metrics.refused(refusal.label());
                let retry = self.config.sip.limits.retry_after_secs.to_string();
                self.reply(&mut tx, 503, vec![msg::header("Retry-After", retry)])
                    .await;
                return;
            }
        };
        self.metrics.call_admitted();
        // The stack keeps a SIP user part as written (escapes and all) but renders it escaped again,
        // so read the user itself; other schemes are read from the rendered URI.
        let request_uri = &tx.original.uri;
        let uri_text = match request_uri.scheme {
            Some(rsipstack::sip::Scheme::Other(_)) => request_uri.to_string(),
            _ => format!("sip:{}@host", request_uri.user().unwrap_or_default()),
        };
        let dialled = match uri::dialled(&uri_text) {
            uri::Dialled::User(user) => user,
            uri::Dialled::Number(number) => number,
            uri::Dialled::UnsupportedScheme(scheme) => {
                info!(%scheme, "unsupported Request-URI scheme");
                self.reply(&mut tx, 416, vec![]).await;
                return;
            }
            uri::Dialled::Malformed => {
                self.reply(&mut tx, 404, vec![]).await;
                return;
            }
        };
        // The body must be one we can read (RFC 3261 §21.4.13: 415 with Accept otherwise).
        let offer = match body::offer_of(
            msg::value_of(&tx.original.headers, "Content-Type").as_deref(),
            msg::value_of(&tx.original.headers, "Content-Encoding").as_deref(),
            tx.original.body(),
        ) {
            Ok(offer) => offer,
            Err(body::BodyError::BadMultipart) => {
                self.reply(&mut tx, 400, vec![]).await;
                return;
            }
            Err(e) => {
                info!(error = %e, "unsupported body");
                let headers = vec![
                    msg::header("Accept", body::ACCEPT),
                    msg::header("Accept-Encoding", "identity"),
                ];
                self.reply(&mut tx, 415, headers).await;
                return;
            }
        };
        let targets: Vec<(String, Option<TrunkConfig>)> = match self.routes.get(&dialled) {
            Some(RouteTarget::Forward(uri)) => vec![(uri.clone(), self.trunk_for(uri))],
            Some(target @ (RouteTarget::Ivr(_) | RouteTarget::Queue(_))) => {
                if let Some(handler) = self.handler.get().cloned() {
                    let call = leg::inbound(self.clone(), tx, target.clone(), offer);
                    // Call control (IVR, queue, agents) runs off the signalling thread.
                    let control = self
                        .control
                        .spawn(async move { handler.on_call(call).await }.in_current_span());
                    match control.await {
                        Err(e) if e.is_panic() => warn!(error = %e, "call control panicked"),
                        Err(_) => info!("call control stopped with its runtime"),
                        Ok(()) => {}
                    }
                    drop(slot);
                    return;
                }
                // Without call control on this node, say so plainly.
                self.reply(
                    &mut tx,
                    480,
                    vec![msg::header(
                        "Warning",
                        "399 callcenter \"IVR and queues are not available on this node\"",
                    )],
                )
                .await;
                return;
            }
            // Agents are reached through the ACD: a stranger ringing an agent's phone directly is
            // refused (as if the user did not exist), unless configured or from a trusted source.
            None if !self.config.sip.allow_direct_user_calls
                && !source.is_some_and(|ip| self.config.sip.limits.trusted_sources.contains(&ip)) =>
            {
                Vec::new()
            }
            None => self
                .locations
                .lookup(&dialled, now)
                .await
                .into_iter()
                .map(|b| (b.contact, None))
                .collect(),
        };
        if targets.is_empty() {
            // An unknown number and a known user with no live contact get the same answer, so
            // probing reveals nothing about which users exist.
            self.reply(&mut tx, 404, vec![]).await;
            return;
        }
        let transactions = b2bua::run_call(self.clone(), tx, targets).await;
        drop(slot);
        transactions.linger().await;
    }

    pub(crate) fn trunk_for(&self, uri: &str) -> Option<TrunkConfig> {
        let target = rsipstack::sip::Uri::try_from(uri).ok()?;
        self.config
            .trunks
            .iter()
            .find(|t| {
                rsipstack::sip::Uri::try_from(t.uri.as_str())
                    .map(|u| u.host_with_port == target.host_with_port)
                    .unwrap_or(false)
            })
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RouteConfig, TransportKind};

    /// Call control as the gateway sees it: says which thread it ran on, then refuses the call.
    struct Refuser(mpsc::UnboundedSender<Option<String>>);

    #[async_trait::async_trait]
    impl InboundCallHandler for Refuser {
        async fn on_call(&self, call: InboundCall) {
            let _ = self.0.send(std::thread::current().name().map(str::to_string));
            call.leg.reject(486);
        }
    }

    fn threads_named(name: &str) -> usize {
        std::fs::read_dir("/proc/self/task")
            .map(|tasks| {
                tasks
                    .flatten()
                    .filter(|t| {
                        std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn sip_runs_on_its_own_thread_and_call_control_on_the_runtime_that_started_it() {
        let before = threads_named(SIGNALLING_THREAD);
        let config = GatewayConfig {
            sip: SipConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                transports: vec![TransportKind::Udp],
                ..SipConfig::default()
            },
            routes: vec![RouteConfig {
                number: "500".into(),
                ivr: Some("main".into()),
                queue: None,
                forward: None,
            }],
            trunks: Vec::new(),
        };
        let telemetry = telemetry::Telemetry::new();
        let gateway = Gateway::start(
            config,
            Arc::new(MemoryLocations::default()),
            Arc::new(PassThrough),
            &telemetry,
        )
        .await
        .expect("the gateway starts");
        assert_eq!(threads_named(SIGNALLING_THREAD), before + 1);
        let sip_tasks_run_on = gateway
            .core
            .signalling
            .spawn(async { std::thread::current().name().map(str::to_string) })
            .await
            .expect("the signalling runtime runs tasks");
        assert_eq!(sip_tasks_run_on.as_deref(), Some(SIGNALLING_THREAD));
        let (ran_on, mut handler_threads) = mpsc::unbounded_channel();
        gateway.set_inbound_handler(Arc::new(Refuser(ran_on)));

        let phone = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let me = phone.local_addr().expect("address");
        let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
                   m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
        let invite = format!(
            "INVITE sip:500@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKthread1\r\n\
             Max-Forwards: 70\r\nFrom: <sip:caller@{me}>;tag=caller1\r\nTo: <sip:500@{gw}>\r\n\
             Call-ID: thread-test-1\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{me}>\r\n\
             Content-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
            gw = gateway.local_addr(),
            len = sdp.len(),
        );
        phone
            .send_to(invite.as_bytes(), gateway.local_addr())
            .await
            .expect("send");
        let mut buf = vec![0u8; 4096];
        let status = loop {
            let (n, _) = tokio::time::timeout(Duration::from_secs(20), phone.recv_from(&mut buf))
                .await
                .expect("an answer within Timer B")
                .expect("recv");
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let code = text.get(8..11).unwrap_or_default().to_string();
            if !code.starts_with('1') {
                break code;
            }
        };
        assert_eq!(status, "486");
        let handler_thread = handler_threads.recv().await.expect("call control ran");
        assert_ne!(handler_thread.as_deref(), Some(SIGNALLING_THREAD));
        drop(gateway);
    }
}
