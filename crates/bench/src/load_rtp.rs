//! The RTP ends of `bench load`'s calls: one UDP socket per caller and per agent phone, named in the SIPp
//! scenarios' SDP. Each learns the platform's address for its leg from the first RTP packet the platform
//! sends it (the IVR's prompt for a caller, the relayed caller for an agent) and answers from the same
//! socket, so the platform's source check (the SDP's exact address) admits it.
//!
//! A caller sends audio at 50 packets/s from its first packet heard, presses the menu digit as RFC 4733
//! events after `digit_after`, and stops `talk_for` after it started (just before SIPp's BYE). An agent
//! talks while it hears the caller and stops when the caller has been silent for a second.
//!
//! Every audio packet carries a marker, its stream (the sending endpoint), its send time on this
//! process's clock and whether it was sent inside the measured window. Receivers count the marked packets
//! per stream and keep the latency (receive minus send) and its change between consecutive packets of a
//! stream (RFC 3550's transit difference) for the in-window ones.

use media::dtmf::DtmfDigit;
use media::dtmf::rfc4733::{OutgoingEventPacket, digit_packets};
use media::rtp::RtpPacket;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

/// Name of the generator runtime's threads, to read their CPU time apart from the rest of the bench.
pub const RTP_THREAD: &str = "bench-load-rtp";
const MAGIC: &[u8; 4] = b"LDv1";
const PACKET_INTERVAL: Duration = Duration::from_millis(20);
const PCMU: u8 = 0;
const TELEPHONE_EVENT: u8 = 101;
/// An agent stops talking once the caller has been silent this long.
const AGENT_SILENCE_US: u64 = 1_000_000;

/// When a caller presses its digit and how long it talks.
#[derive(Debug, Clone, Copy)]
pub struct CallerPlan {
    pub digit: char,
    pub digit_after: Duration,
    pub talk_for: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Caller,
    Agent,
}

#[derive(Debug, Default)]
struct EndpointState {
    peer: Option<SocketAddr>,
    started_us: u64,
    last_heard_us: u64,
    seq: u16,
    timestamp: u32,
    stopped: bool,
    digit: Option<DigitState>,
    digit_done: bool,
    sent_in_window: u64,
}

#[derive(Debug)]
struct DigitState {
    packets: Vec<OutgoingEventPacket>,
    next: usize,
    timestamp: u32,
}

struct Endpoint {
    socket: Arc<UdpSocket>,
    role: Role,
    state: Mutex<EndpointState>,
}

struct Shared {
    start: Instant,
    window_open: AtomicBool,
    window_closed: AtomicBool,
    endpoints: Vec<Endpoint>,
    plan: CallerPlan,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn in_window(&self) -> bool {
        self.window_open.load(Ordering::SeqCst) && !self.window_closed.load(Ordering::SeqCst)
    }
}

/// What one endpoint heard.
#[derive(Default)]
struct Heard {
    /// Marked packets sent in the window, per stream.
    in_window: HashMap<u32, u64>,
    /// Streams heard at all (a call whose audio never arrived is a failed call, not packet loss).
    streams: HashMap<u32, u64>,
    latencies_us: Vec<u32>,
    jitter_us: Vec<u32>,
}

/// Loss, latency and jitter of one direction.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Direction {
    /// Streams that delivered at least one packet.
    pub streams: usize,
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub loss: f64,
    pub latency_p50_us: u64,
    pub latency_p99_us: u64,
    pub latency_max_us: u64,
    pub added_jitter_p50_us: u64,
    pub added_jitter_p99_us: u64,
}

/// Both directions and the generator's own cost.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MediaFigures {
    pub caller_to_agent: Direction,
    pub agent_to_caller: Direction,
    /// Callers that never heard the platform (no prompt: the call did not get media).
    pub callers_without_audio: usize,
    pub agents_reached: usize,
}

/// The endpoints of one step and the runtime that drives them; [`MediaLoad::finish`] stops them.
pub struct MediaLoad {
    runtime: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    receivers: Vec<tokio::task::JoinHandle<Heard>>,
    stop: tokio::sync::watch::Sender<bool>,
    sender: tokio::task::JoinHandle<()>,
    calls: usize,
}

impl MediaLoad {
    /// Binds `calls` caller and `calls` agent sockets on 127.0.0.1 and starts listening and ticking.
    pub fn start(calls: usize, plan: CallerPlan, threads: usize) -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name(RTP_THREAD)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let shared = runtime.block_on(async {
            let mut endpoints = Vec::with_capacity(calls * 2);
            for i in 0..calls * 2 {
                let socket = UdpSocket::bind("127.0.0.1:0")
                    .await
                    .map_err(|e| format!("bind RTP endpoint: {e}"))?;
                endpoints.push(Endpoint {
                    socket: Arc::new(socket),
                    role: if i < calls { Role::Caller } else { Role::Agent },
                    state: Mutex::new(EndpointState::default()),
                });
            }
            Ok::<_, String>(Arc::new(Shared {
                start: Instant::now(),
                window_open: AtomicBool::new(false),
                window_closed: AtomicBool::new(false),
                endpoints,
                plan,
            }))
        })?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let receivers = (0..shared.endpoints.len())
            .map(|i| runtime.spawn(receive(shared.clone(), i, stopped.clone())))
            .collect();
        let sender = runtime.spawn(send_loop(shared.clone(), stopped));
        Ok(Self {
            runtime,
            shared,
            receivers,
            stop,
            sender,
            calls,
        })
    }

    fn ports(&self, role: Role) -> Vec<u16> {
        self.shared
            .endpoints
            .iter()
            .filter(|e| e.role == role)
            .filter_map(|e| e.socket.local_addr().ok().map(|a| a.port()))
            .collect()
    }

    /// The callers' RTP ports, in call order.
    pub fn caller_ports(&self) -> Vec<u16> {
        self.ports(Role::Caller)
    }

    /// The agent phones' RTP ports, in the order the agents' SIPp answers calls.
    pub fn agent_ports(&self) -> Vec<u16> {
        self.ports(Role::Agent)
    }

    /// Packets sent from now on count (loss, latency, jitter).
    pub fn open_window(&self) {
        self.shared.window_open.store(true, Ordering::SeqCst);
    }

    /// Packets sent from now on no longer count.
    pub fn close_window(&self) {
        self.shared.window_closed.store(true, Ordering::SeqCst);
    }

    /// Streams that are talking now (agents who hear their caller).
    pub fn talking_agents(&self) -> usize {
        let now = self.shared.now_us();
        self.shared
            .endpoints
            .iter()
            .filter(|e| e.role == Role::Agent)
            .filter(|e| {
                let s = e.state.lock();
                s.peer.is_some() && !s.stopped && now.saturating_sub(s.last_heard_us) < AGENT_SILENCE_US
            })
            .count()
    }

    /// Stops sending and listening and returns the figures.
    pub fn finish(self) -> MediaFigures {
        let _ = self.stop.send(true);
        let calls = self.calls;
        let shared = self.shared.clone();
        let heard: Vec<Heard> = self.runtime.block_on(async {
            let _ = self.sender.await;
            let mut out = Vec::new();
            for r in self.receivers {
                if let Ok(h) = r.await {
                    out.push(h);
                }
            }
            out
        });
        self.runtime.shutdown_timeout(Duration::from_secs(2));
        let sent: Vec<u64> = shared
            .endpoints
            .iter()
            .map(|e| e.state.lock().sent_in_window)
            .collect();
        let callers_without_audio = shared
            .endpoints
            .iter()
            .filter(|e| e.role == Role::Caller && e.state.lock().peer.is_none())
            .count();
        let agents_reached = shared
            .endpoints
            .iter()
            .filter(|e| e.role == Role::Agent && e.state.lock().peer.is_some())
            .count();
        // Which endpoints heard which streams: callers' streams are 0..calls, agents' calls..2*calls.
        let direction = |from_callers: bool| {
            let is_source = |stream: u32| ((stream as usize) < calls) == from_callers;
            let mut streams: HashMap<u32, u64> = HashMap::new();
            let mut received = 0;
            let mut latencies = Vec::new();
            let mut jitter = Vec::new();
            for h in &heard {
                for (&s, &n) in &h.streams {
                    if is_source(s) {
                        *streams.entry(s).or_default() += n;
                    }
                }
                for (&s, &n) in &h.in_window {
                    if is_source(s) {
                        received += n;
                    }
                }
                // An endpoint hears the other side's streams only.
                if h.in_window.keys().any(|s| is_source(*s)) {
                    latencies.extend_from_slice(&h.latencies_us);
                    jitter.extend_from_slice(&h.jitter_us);
                }
            }
            let sent: u64 = streams.keys().filter_map(|s| sent.get(*s as usize)).sum();
            latencies.sort_unstable();
            jitter.sort_unstable();
            let pct = |v: &[u32], p: f64| {
                let v: Vec<u64> = v.iter().map(|x| u64::from(*x)).collect();
                crate::acd::percentile(&v, p)
            };
            let lost = sent.saturating_sub(received);
            Direction {
                streams: streams.len(),
                sent,
                received,
                lost,
                loss: lost as f64 / sent.max(1) as f64,
                latency_p50_us: pct(&latencies, 0.5),
                latency_p99_us: pct(&latencies, 0.99),
                latency_max_us: latencies.last().map(|x| u64::from(*x)).unwrap_or(0),
                added_jitter_p50_us: pct(&jitter, 0.5),
                added_jitter_p99_us: pct(&jitter, 0.99),
            }
        };
        MediaFigures {
            caller_to_agent: direction(true),
            agent_to_caller: direction(false),
            callers_without_audio,
            agents_reached,
        }
    }
}

async fn receive(
    shared: Arc<Shared>,
    index: usize,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) -> Heard {
    let mut heard = Heard::default();
    let Some(endpoint) = shared.endpoints.get(index) else {
        return heard;
    };
    let mut buf = [0u8; 1500];
    let mut last_latency: HashMap<u32, u32> = HashMap::new();
    loop {
        let (len, from) = tokio::select! {
            r = endpoint.socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                // ICMP port unreachable from a leg already closed shows up here: keep listening.
                Err(_) => continue,
            },
            _ = stopped.changed() => break,
        };
        let Some(data) = buf.get(..len) else { continue };
        // RTCP (packet types 200-204 in the second byte) is not audio, and never names the RTP peer.
        if data.get(1).is_some_and(|pt| (200..=204).contains(pt)) {
            continue;
        }
        let Ok(packet) = RtpPacket::parse(data) else {
            continue;
        };
        let now = shared.now_us();
        let marked = packet.payload.get(..4) == Some(MAGIC.as_slice());
        {
            let mut state = endpoint.state.lock();
            if state.peer.is_none() {
                state.peer = Some(from);
                state.started_us = now;
                state.last_heard_us = now;
            }
            if marked {
                state.last_heard_us = now;
            }
        }
        if !marked {
            continue;
        }
        let field = |range: std::ops::Range<usize>| packet.payload.get(range);
        let (Some(stream), Some(sent_us), Some(flag)) = (
            field(4..8)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes),
            field(8..16)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes),
            field(16..17),
        ) else {
            continue;
        };
        *heard.streams.entry(stream).or_default() += 1;
        if flag != [1] {
            continue;
        }
        *heard.in_window.entry(stream).or_default() += 1;
        let latency = now.saturating_sub(sent_us).min(u64::from(u32::MAX)) as u32;
        heard.latencies_us.push(latency);
        if let Some(last) = last_latency.insert(stream, latency) {
            heard.jitter_us.push(latency.abs_diff(last));
        }
    }
    heard
}

/// What an endpoint sends on one tick, decided under its lock.
enum Send {
    Audio {
        seq: u16,
        timestamp: u32,
    },
    Digit {
        seq: u16,
        timestamp: u32,
        packet: OutgoingEventPacket,
    },
}

fn next_packet(shared: &Shared, endpoint: &Endpoint, now: u64) -> Option<(SocketAddr, Send)> {
    let mut s = endpoint.state.lock();
    let peer = s.peer?;
    if s.stopped {
        return None;
    }
    let elapsed = Duration::from_micros(now.saturating_sub(s.started_us));
    match endpoint.role {
        Role::Caller if elapsed >= shared.plan.talk_for => {
            s.stopped = true;
            return None;
        }
        Role::Agent if now.saturating_sub(s.last_heard_us) > AGENT_SILENCE_US => {
            s.stopped = true;
            return None;
        }
        _ => {}
    }
    let seq = s.seq;
    s.seq = s.seq.wrapping_add(1);
    let timestamp = s.timestamp;
    s.timestamp = s.timestamp.wrapping_add(160);
    if endpoint.role == Role::Caller && !s.digit_done && elapsed >= shared.plan.digit_after {
        let digit = s.digit.get_or_insert_with(|| DigitState {
            packets: DtmfDigit::from_char(shared.plan.digit)
                .map(|d| digit_packets(d, 100, 10).collect())
                .unwrap_or_default(),
            next: 0,
            timestamp,
        });
        let event_ts = digit.timestamp;
        match digit.packets.get(digit.next).copied() {
            Some(packet) => {
                digit.next += 1;
                return Some((
                    peer,
                    Send::Digit {
                        seq,
                        timestamp: event_ts,
                        packet,
                    },
                ));
            }
            None => s.digit_done = true,
        }
    }
    Some((peer, Send::Audio { seq, timestamp }))
}

async fn send_loop(shared: Arc<Shared>, stopped: tokio::sync::watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(PACKET_INTERVAL);
    let mut payload = [0xffu8; 160];
    payload[..4].copy_from_slice(MAGIC);
    let mut out = [0u8; 200];
    while !*stopped.borrow() {
        interval.tick().await;
        for (i, endpoint) in shared.endpoints.iter().enumerate() {
            let now = shared.now_us();
            let Some((peer, what)) = next_packet(&shared, endpoint, now) else {
                continue;
            };
            let ssrc = 0x4c00_0000 | i as u32;
            let (len, counted) = match what {
                Send::Audio { seq, timestamp } => {
                    let in_window = shared.in_window();
                    payload[4..8].copy_from_slice(&(i as u32).to_le_bytes());
                    payload[8..16].copy_from_slice(&shared.now_us().to_le_bytes());
                    payload[16] = u8::from(in_window);
                    let rtp = RtpPacket::new(PCMU, seq, timestamp, ssrc, &payload);
                    (rtp.write_to(&mut out), in_window)
                }
                Send::Digit {
                    seq,
                    timestamp,
                    packet,
                } => {
                    let bytes = packet.event.to_bytes();
                    let rtp = RtpPacket::new(TELEPHONE_EVENT, seq, timestamp, ssrc, &bytes)
                        .with_marker(packet.marker);
                    (rtp.write_to(&mut out), false)
                }
            };
            let Ok(len) = len else { continue };
            let Some(bytes) = out.get(..len) else { continue };
            if endpoint.socket.try_send_to(bytes, peer).is_ok() && counted {
                endpoint.state.lock().sent_in_window += 1;
            }
        }
    }
}
