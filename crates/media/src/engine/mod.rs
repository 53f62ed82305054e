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

/// Even RTP ports free for new legs; a port goes to the back of the queue when released, so a just-closed
/// call's late packets do not reach the next call.
#[derive(Debug)]
pub(crate) struct PortPool {
    free: Mutex<VecDeque<u16>>,
}

impl PortPool {
    fn new(min: u16, max: u16) -> Self {
        let first = min.saturating_add(min % 2);
        let free = (first..max)
            .step_by(2)
            .filter(|p| p.checked_add(1).is_some_and(|r| r <= max))
            .collect();
        Self {
            free: Mutex::new(free),
        }
    }
    fn take(&self) -> Option<u16> {
        self.free.lock().pop_front()
    }
    pub(crate) fn give_back(&self, port: u16) {
        self.free.lock().push_back(port);
    }
    fn available(&self) -> usize {
        self.free.lock().len()
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
}

impl EngineShared {
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
        let ports = PortPool::new(config.port_min, config.port_max);
        let prompts = PromptCache::new();
        let metrics = MediaMetrics::default();
        Ok(Self {
            shared: Arc::new(EngineShared {
                config,
                ports,
                epoch: Instant::now(),
                prompts,
                metrics,
                runtime: tokio::runtime::Handle::try_current().ok(),
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
            let Some(port) = self.shared.ports.take() else {
                break;
            };
            match bind_pair(self.shared.config.bind_ip, port) {
                Ok((rtp, rtcp)) => {
                    let leg = leg::spawn_leg(self.shared.clone(), port, rtp, rtcp, &runtime)?;
                    self.shared.metrics.legs_opened.inc();
                    self.shared.metrics.legs_active.inc();
                    return Ok(leg);
                }
                Err(_) => self.shared.ports.give_back(port),
            }
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

fn bind_pair(ip: IpAddr, port: u16) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::UdpSocket)> {
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
    Ok((rtp, rtcp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_pool_hands_out_even_pairs_in_range() {
        let pool = PortPool::new(30001, 30009);
        let mut ports = Vec::new();
        while let Some(p) = pool.take() {
            ports.push(p);
        }
        assert_eq!(ports, [30002, 30004, 30006, 30008]);
        pool.give_back(30004);
        assert_eq!(pool.take(), Some(30004));
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

    #[test]
    fn legs_run_on_the_engines_runtime_whoever_opens_them() {
        let media = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let engine = media
            .block_on(async {
                MediaEngine::new(MediaConfig {
                    port_min: 31020,
                    port_max: 31023,
                    ..MediaConfig::default()
                })
            })
            .unwrap();
        // Another runtime (the SIP gateway's signalling thread) opens the leg, then stops: had the
        // leg's task been spawned there, stopping it would have cancelled the task.
        let signalling = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (leg, _events) = signalling.block_on(async { engine.allocate_leg() }).unwrap();
        drop(signalling);
        assert!(
            !leg.task_ended(),
            "the leg's task died with the runtime that opened it"
        );
        media.block_on(leg.close());
        assert_eq!(engine.free_ports(), 2);
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
