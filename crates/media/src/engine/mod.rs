//! The async media engine: the only owner of RTP sockets.
//!
//! [`MediaEngine`] hands out [`RtpLeg`]s from a port pool (an even RTP port and the RTCP port above it). Each
//! leg runs one tokio task that receives its RTP and RTCP, latches onto the peer's real address, keeps
//! statistics, reports DTMF, plays prompts and sends RTCP reports. A [`Bridge`] links two legs: each leg's
//! task relays what it receives straight out of the other leg's socket, rewriting only the header (and the
//! payload bytes through a table when the two legs use different G.711 laws), without allocating. A bridge side
//! can be muted, and a supervisor's leg attached ([`Bridge::monitor`]: listen, whisper, barge); then a mixer
//! task serves the parties that hear more than one source, and the single-source paths keep the relay.

mod bridge;
mod files;
mod leg;
mod metrics;
mod monitor;

pub use crate::latch::{LatchPolicy, UnconfirmedSendLimit};
pub use crate::mixer::MonitorMode;
pub use bridge::{Bridge, BridgeSide, RecordingHandle, RecordingSummary};
pub use leg::{DtmfSource, LegConfirmer, LegEvent, RtpLeg};
pub use metrics::MediaMetrics;
pub use monitor::MonitorHandle;

use crate::prompt::PromptCache;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Engine settings.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaConfig {
    /// Address the RTP sockets bind to and that SDP announces.
    pub bind_ip: IpAddr,
    /// Lowest RTP port (rounded up to even).
    pub port_min: u16,
    /// Highest port usable for RTCP (RTP port + 1).
    pub port_max: u16,
    /// No RTP for this long ends the call (an event; the owner hangs up).
    pub media_timeout: Duration,
    /// Interval between RTCP reports.
    pub rtcp_interval: Duration,
    /// Where recordings are written.
    pub recordings_dir: PathBuf,
    /// Queue of events per leg; events beyond it are dropped (the owner is not keeping up).
    pub event_capacity: usize,
    /// What a leg may send before [`RtpLeg::confirm`] (legs set up with [`RtpLeg::set_remote`] are confirmed
    /// at once): the bound on what an INVITE that is never acknowledged can make the node send to the address
    /// in its SDP.
    pub unconfirmed_send_limit: UnconfirmedSendLimit,
    /// How many free port pairs keep their sockets bound for the next leg (two descriptors each):
    /// 0 closes a leg's sockets when it ends. Give it the whole range when the process may open
    /// that many files.
    pub keep_bound_pairs: usize,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            bind_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port_min: 20000,
            port_max: 30000,
            media_timeout: Duration::from_secs(30),
            rtcp_interval: Duration::from_secs(5),
            recordings_dir: PathBuf::from("recordings"),
            event_capacity: 64,
            unconfirmed_send_limit: UnconfirmedSendLimit::default(),
            keep_bound_pairs: 0,
        }
    }
}

/// What can go wrong in the engine.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MediaError {
    /// Every port pair is in use: answer the call with 503.
    #[error("no free RTP port pair")]
    PortsExhausted,
    #[error("invalid media configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("the media engine must be used inside a tokio runtime")]
    NoRuntime,
    #[error("socket error: {0}")]
    Io(String),
    #[error("recording name must be a plain file name without path separators")]
    BadRecordingName,
    #[error("the leg or recording has already ended")]
    Closed,
    /// A supervisor cannot be attached (one already is, or the leg is one of the bridged pair).
    #[error("cannot monitor the call: {0}")]
    Monitor(&'static str),
}

/// A leg's two sockets: the even RTP port and the RTCP port above it, registered with the engine's
/// runtime.
pub(crate) struct PairSockets {
    pub(crate) rtp: tokio::net::UdpSocket,
    pub(crate) rtcp: tokio::net::UdpSocket,
}

impl PairSockets {
    fn bind(ip: IpAddr, port: u16) -> std::io::Result<Arc<PairSockets>> {
        let open = |p: u16| -> std::io::Result<tokio::net::UdpSocket> {
            let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, p))?;
            socket.set_nonblocking(true)?;
            tokio::net::UdpSocket::from_std(socket)
        };
        let rtp = open(port)?;
        let rtcp = open(
            port.checked_add(1)
                .ok_or_else(|| std::io::Error::other("no RTCP port above 65535"))?,
        )?;
        Ok(Arc::new(PairSockets { rtp, rtcp }))
    }

    /// Throws away what reached the pair while no leg had it (the last call's peer still sending), so
    /// the next leg's first packet is its own peer's. False when more kept coming than a burst: a
    /// flood, and the pair is better closed.
    fn discard_stale(&self) -> bool {
        [&self.rtp, &self.rtcp].into_iter().all(|socket| {
            // A real receive on the non-blocking socket, not the runtime's cached readiness, which
            // may not have seen the latest datagrams yet.
            let socket = socket2::SockRef::from(socket);
            (0..STALE_DATAGRAMS_DISCARDED).any(|_| socket.recv(&mut []).is_err())
        })
    }
}

/// At most this many datagrams waiting on a kept socket are read and thrown away before a leg takes
/// it; more, and the socket is closed and bound again (closing empties its queue).
const STALE_DATAGRAMS_DISCARDED: usize = 64;

/// One free port pair, its sockets still bound when it was kept.
pub(crate) struct FreePair {
    port: u16,
    sockets: Option<Arc<PairSockets>>,
}

struct FreePairs {
    queue: VecDeque<FreePair>,
    /// How many of `queue` hold bound sockets.
    bound: usize,
}

/// Even RTP ports free for new legs, in the order they were released: a port goes to the back of the
/// queue, so a just-closed call's late packets do not reach the next call. Up to `keep_bound` free
/// pairs keep their sockets bound and registered for the next leg: opening, registering and closing
/// four sockets per call was a sixth of the SIP thread's time (the order of reuse is the same).
pub(crate) struct PortPool {
    free: Mutex<FreePairs>,
    keep_bound: usize,
}

impl PortPool {
    fn new(min: u16, max: u16, keep_bound: usize) -> Self {
        let first = min.saturating_add(min % 2);
        let queue = (first..max)
            .step_by(2)
            .filter(|p| p.checked_add(1).is_some_and(|r| r <= max))
            .map(|port| FreePair { port, sockets: None })
            .collect();
        Self {
            free: Mutex::new(FreePairs { queue, bound: 0 }),
            keep_bound,
        }
    }

    fn take(&self) -> Option<FreePair> {
        let mut free = self.free.lock();
        let pair = free.queue.pop_front()?;
        if pair.sockets.is_some() {
            free.bound = free.bound.saturating_sub(1);
        }
        Some(pair)
    }

    /// Puts `port` at the back of the queue, with its sockets while fewer than `keep_bound` are kept.
    pub(crate) fn give_back(&self, port: u16, sockets: Option<Arc<PairSockets>>) {
        let mut free = self.free.lock();
        let (kept, closing) = match sockets {
            Some(sockets) if free.bound < self.keep_bound => {
                free.bound += 1;
                (Some(sockets), None)
            }
            other => (None, other),
        };
        free.queue.push_back(FreePair { port, sockets: kept });
        drop(free);
        // The sockets close here, outside the lock.
        drop(closing);
    }

    fn available(&self) -> usize {
        self.free.lock().queue.len()
    }

    /// Free pairs whose sockets are kept bound.
    fn bound(&self) -> usize {
        self.free.lock().bound
    }
}

pub(crate) struct EngineShared {
    pub(crate) config: MediaConfig,
    pub(crate) ports: PortPool,
    pub(crate) epoch: Instant,
    pub(crate) prompts: PromptCache,
    pub(crate) metrics: MediaMetrics,
    /// The runtime the engine was made on. Legs, bridges and recorders run there whoever asks for
    /// them: the SIP gateway asks from its own signalling thread, which must not carry RTP.
    runtime: Option<tokio::runtime::Handle>,
    /// Where recordings are written; started with the first recording.
    files: std::sync::OnceLock<files::FileThread>,
}

impl EngineShared {
    /// The engine's file thread, started on first use.
    pub(crate) fn files(&self) -> Result<files::FileThread, MediaError> {
        if let Some(files) = self.files.get() {
            return Ok(files.clone());
        }
        let started = files::FileThread::start().map_err(|e| MediaError::Io(format!("file thread: {e}")))?;
        Ok(self.files.get_or_init(|| started).clone())
    }

    /// Where media tasks are spawned: the engine's own runtime, else the caller's.
    pub(crate) fn runtime(&self) -> Result<tokio::runtime::Handle, MediaError> {
        match &self.runtime {
            Some(runtime) => Ok(runtime.clone()),
            None => tokio::runtime::Handle::try_current().map_err(|_| MediaError::NoRuntime),
        }
    }
}

/// The media engine. Cheap to clone.
#[derive(Clone)]
pub struct MediaEngine {
    shared: Arc<EngineShared>,
}

impl std::fmt::Debug for MediaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaEngine")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl MediaEngine {
    /// An engine with a port pool from `config`. Made inside a tokio runtime, its media tasks run on
    /// that runtime even when legs are opened from another one.
    pub fn new(config: MediaConfig) -> Result<Self, MediaError> {
        if config.port_min > config.port_max || config.port_max - config.port_min < 1 {
            return Err(MediaError::InvalidConfig(
                "port range must hold at least one even/odd pair",
            ));
        }
        if config.event_capacity == 0 {
            return Err(MediaError::InvalidConfig("event_capacity must be at least 1"));
        }
        let runtime = tokio::runtime::Handle::try_current().ok();
        // Kept sockets stay registered with the engine's runtime; without one of its own, legs run
        // wherever they are opened, and nothing is kept.
        let keep_bound = if runtime.is_some() {
            config.keep_bound_pairs
        } else {
            0
        };
        let ports = PortPool::new(config.port_min, config.port_max, keep_bound);
        let prompts = PromptCache::new();
        let metrics = MediaMetrics::default();
        Ok(Self {
            shared: Arc::new(EngineShared {
                config,
                ports,
                epoch: Instant::now(),
                prompts,
                metrics,
                runtime,
                files: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &MediaConfig {
        &self.shared.config
    }

    /// The shared prompt cache (load each prompt once per law).
    pub fn prompts(&self) -> &PromptCache {
        &self.shared.prompts
    }

    /// The engine's metrics (register them once with [`MediaMetrics::register`]).
    pub fn metrics(&self) -> &MediaMetrics {
        &self.shared.metrics
    }

    /// Port pairs still free.
    pub fn free_ports(&self) -> usize {
        self.shared.ports.available()
    }

    /// Free port pairs whose sockets are kept bound for the next legs.
    pub fn kept_bound_pairs(&self) -> usize {
        self.shared.ports.bound()
    }

    /// Opens a new leg on the next free port pair. Its events (DTMF, latching, timeout, playback) arrive on the
    /// returned receiver. Fails with [`MediaError::PortsExhausted`] when no pair can be bound.
    pub fn allocate_leg(&self) -> Result<(RtpLeg, tokio::sync::mpsc::Receiver<LegEvent>), MediaError> {
        let runtime = self.shared.runtime()?;
        // The sockets register with the I/O driver of the runtime entered when they are made: the
        // engine's, where the leg's task waits on them. Made on the caller's (the SIP gateway's
        // signalling thread), that thread would poll every leg's RTP and wake the media tasks.
        let _guard = runtime.enter();
        // Ports taken by other programs are skipped (and put back at the end of the queue).
        let attempts = self.shared.ports.available();
        for _ in 0..attempts {
            let Some(FreePair { port, sockets }) = self.shared.ports.take() else {
                break;
            };
            let kept = sockets.filter(|kept| kept.discard_stale());
            let reused = kept.is_some();
            let sockets = match kept {
                Some(kept) => kept,
                None => match PairSockets::bind(self.shared.config.bind_ip, port) {
                    Ok(bound) => bound,
                    Err(_) => {
                        self.shared.ports.give_back(port, None);
                        continue;
                    }
                },
            };
            let leg = leg::spawn_leg(self.shared.clone(), port, sockets, &runtime);
            self.shared.metrics.legs_opened.inc();
            if reused {
                self.shared.metrics.legs_on_kept_sockets.inc();
            }
            self.shared.metrics.legs_active.inc();
            return Ok(leg);
        }
        self.shared.metrics.ports_exhausted.inc();
        Err(MediaError::PortsExhausted)
    }

    /// Records what `leg` receives (the caller's voice) into a mono WAV `<recordings_dir>/<name>.wav`:
    /// a voicemail. Stop it with [`RecordingHandle::stop`].
    pub fn record_leg(&self, leg: &RtpLeg, name: &str) -> Result<RecordingHandle, MediaError> {
        bridge::record_leg(&self.shared, leg, name)
    }

    /// Links two legs so that each hears the other. `a` is the caller (left channel of recordings).
    pub fn bridge(&self, a: &RtpLeg, b: &RtpLeg) -> Bridge {
        Bridge::new(self.shared.clone(), a, b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_pool_hands_out_even_pairs_in_range() {
        let pool = PortPool::new(30001, 30009, 0);
        let mut ports = Vec::new();
        while let Some(p) = pool.take() {
            ports.push(p.port);
        }
        assert_eq!(ports, [30002, 30004, 30006, 30008]);
        pool.give_back(30004, None);
        assert_eq!(pool.take().map(|p| p.port), Some(30004));
    }

    #[test]
    fn bad_config_is_an_error() {
        let config = MediaConfig {
            port_min: 100,
            port_max: 50,
            ..MediaConfig::default()
        };
        assert!(matches!(
            MediaEngine::new(config),
            Err(MediaError::InvalidConfig(_))
        ));
    }

    #[test]
    fn allocating_outside_a_runtime_is_an_error_not_a_panic() {
        let engine = MediaEngine::new(MediaConfig {
            port_min: 31000,
            port_max: 31003,
            ..MediaConfig::default()
        })
        .unwrap();
        assert_eq!(engine.allocate_leg().err(), Some(MediaError::NoRuntime));
    }

    #[tokio::test]
    async fn closed_legs_keep_their_sockets_up_to_the_limit_and_the_next_leg_reuses_them() {
        let engine = MediaEngine::new(MediaConfig {
            port_min: 31030,
            port_max: 31033,
            keep_bound_pairs: 1,
            ..MediaConfig::default()
        })
        .unwrap();
        let (a, _ea) = engine.allocate_leg().unwrap();
        let (b, _eb) = engine.allocate_leg().unwrap();
        let (a_port, b_port) = (a.local_addr().port(), b.local_addr().port());
        a.close().await;
        b.close().await;
        assert_eq!((engine.free_ports(), engine.kept_bound_pairs()), (2, 1));
        // Released order is kept: a's pair (kept bound) first, then b's (closed, bound again).
        let (c, _ec) = engine.allocate_leg().unwrap();
        assert_eq!(c.local_addr().port(), a_port);
        assert_eq!(engine.metrics().legs_on_kept_sockets.get(), 1);
        let (d, _ed) = engine.allocate_leg().unwrap();
        assert_eq!(d.local_addr().port(), b_port);
        assert_eq!(engine.metrics().legs_on_kept_sockets.get(), 1);
        assert_eq!(engine.kept_bound_pairs(), 0);
    }

    #[tokio::test]
    async fn exhaustion_is_an_error_and_closing_returns_the_ports() {
        let engine = MediaEngine::new(MediaConfig {
            port_min: 31010,
            port_max: 31013,
            ..MediaConfig::default()
        })
        .unwrap();
        let (a, _ea) = engine.allocate_leg().unwrap();
        let (b, _eb) = engine.allocate_leg().unwrap();
        assert_ne!(a.local_addr(), b.local_addr());
        assert_eq!(engine.allocate_leg().err(), Some(MediaError::PortsExhausted));
        let closed = a.local_addr().port();
        a.close().await;
        let (c, _ec) = engine.allocate_leg().unwrap();
        assert_eq!(c.local_addr().port(), closed);
        drop(b);
    }
}
