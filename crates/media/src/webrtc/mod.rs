//! The server end of the browser agent's WebRTC softphone leg, on str0m (sans-IO WebRTC).
//!
//! A [`WebRtcEndpoint`] owns one UDP socket and one tokio task for every browser peer: datagrams are handed to
//! the peer's str0m `Rtc` by remote address once known, and before that (ICE connectivity checks) by the ICE
//! username fragment in the STUN USERNAME attribute. Peers are ICE-lite (the browser nominates), DTLS-SRTP, and
//! audio only: PCMU, or PCMA when the browser prefers it. str0m runs in frame mode, so it does the SRTP,
//! RTCP, sequence numbers and SSRCs towards the browser and we only see G.711 payloads.
//!
//! Bridging to the rest of the engine needs no change to [`Bridge`](crate::engine::Bridge) or the recorder:
//! the endpoint also owns a plain RTP relay socket on loopback. [`WebRtcLeg::connect_plain`] points an ordinary
//! engine [`RtpLeg`] at that relay socket, and the endpoint forwards the browser's decrypted audio as plain RTP
//! to the `RtpLeg`'s address (and what the `RtpLeg` sends, encrypted, to the browser). Call control then
//! bridges the customer's leg with that `RtpLeg` as with any SIP agent. The relay socket is demultiplexed by
//! the source address of each connected `RtpLeg` (unique: the engine's port pool hands them out).
//!
//! ```no_run
//! # async fn example(offer_from_browser: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use media::engine::{MediaConfig, MediaEngine};
//! use media::webrtc::{WebRtcConfig, WebRtcEndpoint, WebRtcEvent};
//! let engine = MediaEngine::new(MediaConfig::default())?;
//! let endpoint = WebRtcEndpoint::new(WebRtcConfig::default())?;
//! let (mut browser, answer_sdp) = endpoint.accept_offer(offer_from_browser)?; // send answer_sdp over the desk WS
//! let (agent_rtp, _agent_events) = engine.allocate_leg()?;
//! browser.connect_plain(&agent_rtp)?;
//! # let (customer_rtp, _e) = engine.allocate_leg()?;
//! let _bridge = engine.bridge(&customer_rtp, &agent_rtp); // recording works as for SIP agents
//! while let Some(event) = browser.next_event().await {
//!     if let WebRtcEvent::Closed { .. } = event { break; } // Connected, Disconnected, MediaTimeout, Closed
//! }
//! # let _ = answer_sdp;
//! # Ok(())
//! # }
//! ```

mod metrics;
mod offer;
mod task;

pub use metrics::WebRtcMetrics;

use crate::engine::RtpLeg;
use crate::g711::G711;
use crate::sdp::{MediaDirection, Negotiated};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use str0m::config::DtlsCert;
use thiserror::Error;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

/// Endpoint settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WebRtcConfig {
    /// Address the WebRTC UDP socket binds to (may be unspecified: all interfaces).
    pub bind_ip: IpAddr,
    /// UDP port; 0 lets the system pick one.
    pub port: u16,
    /// The IP announced as our ICE host candidate; `None` uses `bind_ip` (which must then be specified).
    pub advertise_ip: Option<IpAddr>,
    /// No audio from a connected browser for this long: [`WebRtcEvent::MediaTimeout`].
    pub media_timeout: Duration,
    /// A peer whose ICE and DTLS are not up this long after its answer is dropped.
    pub handshake_timeout: Duration,
    /// Offers beyond this many open peers are refused.
    pub max_peers: usize,
    /// Queue of events per leg; events beyond it are dropped (the owner is not keeping up).
    pub event_capacity: usize,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            advertise_ip: None,
            media_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(20),
            max_peers: 1000,
            event_capacity: 64,
        }
    }
}

/// What can go wrong with the endpoint or an offer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WebRtcError {
    /// The offer cannot be used (not SDP, no fingerprint, no ICE credentials, ...). The text never quotes it.
    #[error("unusable WebRTC offer: {0}")]
    BadOffer(String),
    #[error("the WebRTC offer has no audio stream")]
    NoAudio,
    #[error("no common codec: the WebRTC offer has neither PCMU nor PCMA")]
    NoCommonCodec,
    #[error("too many WebRTC peers open")]
    TooManyPeers,
    #[error("invalid WebRTC configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("the WebRTC endpoint must be used inside a tokio runtime")]
    NoRuntime,
    #[error("socket error: {0}")]
    Io(String),
    /// The engine leg's address family has no relay socket (no IPv6 loopback on this host).
    #[error("no relay socket for this leg's address family")]
    NoRelay,
    #[error("the WebRTC endpoint or peer has ended")]
    Closed,
}

/// Why a peer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// [`WebRtcLeg::close`] or dropping the leg.
    Local,
    /// The browser closed DTLS (page closed, `RTCPeerConnection.close()`).
    Remote,
    /// ICE and DTLS did not come up within the handshake timeout.
    HandshakeTimeout,
    /// str0m reported an error for this peer (DTLS failure, fingerprint mismatch).
    Failed,
}

/// What a WebRTC leg reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebRtcEvent {
    /// ICE and DTLS are up: audio flows. Sent again when ICE recovers after [`WebRtcEvent::Disconnected`].
    Connected,
    /// ICE consent checks from the browser stopped (network change, tab frozen); may recover.
    Disconnected,
    /// A connected browser sent no audio for the configured media timeout.
    MediaTimeout { silent_for: Duration },
    /// The peer is gone; no more events follow (the receiver then returns `None`).
    Closed { reason: CloseReason },
}

/// Packet counts of one leg (compare with the browser's `getStats()` `outbound-rtp` / `inbound-rtp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WebRtcLegStats {
    /// Audio packets received from the browser (after SRTP).
    pub packets_from_browser: u64,
    /// Audio packets handed to str0m for the browser.
    pub packets_to_browser: u64,
    /// Plain RTP packets forwarded to the connected engine leg.
    pub packets_to_engine: u64,
}

type PeerId = u64;

/// Counters and state shared between a peer (in the endpoint task) and its leg handle.
#[derive(Debug, Default)]
struct LegCounters {
    from_browser: AtomicU64,
    to_browser: AtomicU64,
    to_engine: AtomicU64,
    connected: AtomicBool,
    closed: AtomicBool,
}

enum Command {
    Add(Box<task::NewPeer>),
    ConnectPlain {
        id: PeerId,
        target: SocketAddr,
    },
    Close {
        id: PeerId,
        done: Option<oneshot::Sender<()>>,
    },
}

/// The relay sockets' addresses, by family.
#[derive(Debug, Clone, Copy)]
struct RelayAddrs {
    v4: SocketAddr,
    v6: Option<SocketAddr>,
}

struct EndpointShared {
    config: WebRtcConfig,
    local: SocketAddr,
    candidate: SocketAddr,
    relay: RelayAddrs,
    cert: DtlsCert,
    metrics: WebRtcMetrics,
    peers: AtomicUsize,
    next_id: AtomicU64,
}

/// The WebRTC endpoint: one UDP socket and one task for all browser peers. Cheap to clone; the task ends when
/// the endpoint and every leg are dropped.
#[derive(Clone)]
pub struct WebRtcEndpoint {
    shared: Arc<EndpointShared>,
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for WebRtcEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcEndpoint")
            .field("local", &self.shared.local)
            .field("candidate", &self.shared.candidate)
            .finish()
    }
}

/// A self-signed DTLS certificate from the configured crypto backend, shared by an endpoint's peers (the browser
/// checks its fingerprint from our answer).
fn generate_certificate() -> Result<DtlsCert, WebRtcError> {
    str0m::crypto::from_feature_flags()
        .dtls_provider
        .generate_certificate()
        .ok_or(WebRtcError::InvalidConfig(
            "the crypto backend cannot make a DTLS certificate",
        ))
}

fn bind_udp(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket)
}

/// A relay socket on `ip` with the port above it bound too: the engine leg sends its RTCP to port + 1, and
/// that port must be ours, not some other program's.
fn bind_relay_pair(ip: IpAddr) -> std::io::Result<(UdpSocket, UdpSocket)> {
    let mut last = std::io::Error::other("no relay port pair");
    for _ in 0..32 {
        let rtp = bind_udp(SocketAddr::new(ip, 0))?;
        let port = rtp.local_addr()?.port();
        let Some(rtcp_port) = port.checked_add(1) else {
            continue;
        };
        match bind_udp(SocketAddr::new(ip, rtcp_port)) {
            Ok(rtcp) => return Ok((rtp, rtcp)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl WebRtcEndpoint {
    /// Binds the WebRTC socket and the relay sockets and starts the endpoint's task.
    pub fn new(config: WebRtcConfig) -> Result<Self, WebRtcError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WebRtcError::NoRuntime)?;
        if config.event_capacity == 0 {
            return Err(WebRtcError::InvalidConfig("event_capacity must be at least 1"));
        }
        if config.max_peers == 0 {
            return Err(WebRtcError::InvalidConfig("max_peers must be at least 1"));
        }
        let advertise = config.advertise_ip.unwrap_or(config.bind_ip);
        if advertise.is_unspecified() || advertise.is_multicast() {
            return Err(WebRtcError::InvalidConfig(
                "advertise_ip must be set to a unicast address when bind_ip is unspecified",
            ));
        }
        let _guard = runtime.enter();
        let socket = bind_udp(SocketAddr::new(config.bind_ip, config.port))
            .map_err(|e| WebRtcError::Io(format!("WebRTC socket: {e}")))?;
        let local = socket.local_addr().map_err(|e| WebRtcError::Io(e.to_string()))?;
        let candidate = SocketAddr::new(advertise, local.port());
        let relay_v4 = bind_relay_pair(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .map_err(|e| WebRtcError::Io(format!("relay socket: {e}")))?;
        // IPv6 loopback may be disabled; then only IPv4 engine legs can be connected.
        let relay_v6 = bind_relay_pair(IpAddr::V6(Ipv6Addr::LOCALHOST)).ok();
        let relay = RelayAddrs {
            v4: relay_v4
                .0
                .local_addr()
                .map_err(|e| WebRtcError::Io(e.to_string()))?,
            v6: relay_v6.as_ref().and_then(|(s, _)| s.local_addr().ok()),
        };
        let shared = Arc::new(EndpointShared {
            config,
            local,
            candidate,
            relay,
            cert: generate_certificate()?,
            metrics: WebRtcMetrics::default(),
            peers: AtomicUsize::new(0),
            next_id: AtomicU64::new(1),
        });
        let (commands, command_rx) = mpsc::unbounded_channel();
        let endpoint_task = task::EndpointTask::new(shared.clone(), socket, relay_v4, relay_v6);
        runtime.spawn(endpoint_task.run(command_rx));
        Ok(Self { shared, commands })
    }

    /// The bound WebRTC socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// The address announced as our ICE host candidate.
    pub fn candidate_addr(&self) -> SocketAddr {
        self.shared.candidate
    }

    /// The endpoint's metrics (register them once with [`WebRtcMetrics::register`]).
    pub fn metrics(&self) -> &WebRtcMetrics {
        &self.shared.metrics
    }

    /// Peers open now (answered and not yet ended).
    pub fn peer_count(&self) -> usize {
        self.shared.peers.load(Ordering::Relaxed)
    }

    /// Answers a browser's SDP offer (ICE candidates already gathered in it). Returns the leg and our answer.
    /// A malformed offer, one without audio or without PCMU/PCMA is an error, as is exceeding `max_peers`.
    pub fn accept_offer(&self, offer_sdp: &str) -> Result<(WebRtcLeg, String), WebRtcError> {
        let metrics = &self.shared.metrics;
        let open = self.shared.peers.fetch_add(1, Ordering::Relaxed);
        let release = || {
            self.shared.peers.fetch_sub(1, Ordering::Relaxed);
        };
        if open >= self.shared.config.max_peers {
            release();
            metrics.offers_rejected.inc();
            return Err(WebRtcError::TooManyPeers);
        }
        let answered = match offer::answer_offer(
            offer_sdp,
            self.shared.candidate,
            &self.shared.cert,
            Instant::now(),
        ) {
            Ok(answered) => answered,
            Err(e) => {
                release();
                metrics.offers_rejected.inc();
                return Err(e);
            }
        };
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (events_tx, events) = mpsc::channel(self.shared.config.event_capacity);
        let counters = Arc::new(LegCounters::default());
        let law = answered.law;
        let answer = answered.answer.clone();
        let peer = task::NewPeer {
            id,
            answered,
            counters: counters.clone(),
            events: events_tx,
        };
        if self.commands.send(Command::Add(Box::new(peer))).is_err() {
            release();
            return Err(WebRtcError::Closed);
        }
        metrics.peers_opened.inc();
        metrics.peers_active.inc();
        Ok((
            WebRtcLeg {
                id,
                law,
                relay: self.shared.relay,
                commands: self.commands.clone(),
                counters,
                events,
                closed: false,
            },
            answer,
        ))
    }
}

/// One browser peer. Dropping it ends the peer (DTLS close sent, state freed).
pub struct WebRtcLeg {
    id: PeerId,
    law: G711,
    relay: RelayAddrs,
    commands: mpsc::UnboundedSender<Command>,
    counters: Arc<LegCounters>,
    events: mpsc::Receiver<WebRtcEvent>,
    closed: bool,
}

impl std::fmt::Debug for WebRtcLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcLeg")
            .field("id", &self.id)
            .field("law", &self.law)
            .finish()
    }
}

impl WebRtcLeg {
    /// The G.711 law agreed with the browser (the connected engine leg uses it too).
    pub fn law(&self) -> G711 {
        self.law
    }

    /// Whether ICE and DTLS are up.
    pub fn is_connected(&self) -> bool {
        self.counters.connected.load(Ordering::Relaxed) && !self.is_closed()
    }

    /// Whether the peer has ended.
    pub fn is_closed(&self) -> bool {
        self.counters.closed.load(Ordering::Relaxed)
    }

    /// Packet counts so far.
    pub fn stats(&self) -> WebRtcLegStats {
        WebRtcLegStats {
            packets_from_browser: self.counters.from_browser.load(Ordering::Relaxed),
            packets_to_browser: self.counters.to_browser.load(Ordering::Relaxed),
            packets_to_engine: self.counters.to_engine.load(Ordering::Relaxed),
        }
    }

    /// Links this browser peer with an engine leg: the engine leg sends its RTP to the endpoint's relay socket
    /// (its remote is set here, with this leg's law, no telephone-event), and the browser's audio goes to the
    /// engine leg's address as plain RTP. Bridge and record the engine leg as usual. Calling it again with
    /// another engine leg moves the link.
    pub fn connect_plain(&self, rtp_leg: &RtpLeg) -> Result<(), WebRtcError> {
        let target = rtp_leg.local_addr();
        let relay = match target.ip() {
            IpAddr::V4(_) => self.relay.v4,
            IpAddr::V6(_) => self.relay.v6.ok_or(WebRtcError::NoRelay)?,
        };
        // Tell the endpoint first, so that the engine leg's first packets already find their peer.
        self.commands
            .send(Command::ConnectPlain {
                id: self.id,
                target: task::relay_source(target),
            })
            .map_err(|_| WebRtcError::Closed)?;
        rtp_leg.set_remote(Negotiated {
            law: self.law,
            payload_type: self.law.payload_type(),
            telephone_event: None,
            remote: Some(relay),
            direction: MediaDirection::SendRecv,
            ptime_ms: 20,
        });
        Ok(())
    }

    /// The next event; `None` once the peer has ended and every event was read. Cancel-safe.
    pub async fn next_event(&mut self) -> Option<WebRtcEvent> {
        self.events.recv().await
    }

    /// The event receiver, for `select!` alongside other sources.
    pub fn events(&mut self) -> &mut mpsc::Receiver<WebRtcEvent> {
        &mut self.events
    }

    /// Ends the peer (DTLS close_notify to the browser) and waits until the endpoint has freed it.
    pub async fn close(mut self) {
        self.closed = true;
        let (done, wait) = oneshot::channel();
        if self
            .commands
            .send(Command::Close {
                id: self.id,
                done: Some(done),
            })
            .is_ok()
        {
            let _ = wait.await;
        }
    }
}

impl Drop for WebRtcLeg {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.commands.send(Command::Close {
                id: self.id,
                done: None,
            });
        }
    }
}
