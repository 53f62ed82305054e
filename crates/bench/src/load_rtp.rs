//! The RTP ends of `bench load`'s calls: every caller and every agent phone is an address of its own on
//! the loopback network (127.64.0.1, 127.64.0.2, ...), all on one UDP port and one socket, named in the
//! SIPp scenarios' SDP. The platform sees one peer per leg at the SDP's exact address, as it would from
//! real phones; the generator reads every leg's packets with one `recvmmsg` per batch and tells the legs
//! apart by the address each packet was sent to (`IP_PKTINFO`), and sends from each endpoint's own
//! address. One thread sends; one wakes every 2 ms and reads what has queued. A socket and a task per
//! endpoint, woken for every packet, cost about as much CPU as the platform under test and preempted
//! it often enough to make its p99 latency on a 2-core machine.
//!
//! Each endpoint learns the platform's address for its leg from the first RTP packet the platform sends
//! it (the IVR's prompt for a caller, the relayed caller for an agent), or is given it (the bare relay).
//! A caller sends audio at 50 packets/s from its first packet heard, presses the menu digit as RFC 4733
//! events after `digit_after`, and stops `talk_for` after it started (just before SIPp's BYE). An agent
//! talks while it hears the caller and stops when the caller has been silent for a second. Endpoints
//! send in twenty 1 ms phases of the 20 ms packet interval, as phones whose calls began at different
//! moments do, rather than all in one burst.
//!
//! Every audio packet carries a marker, its stream (the sending endpoint), its send time (wall clock)
//! and where it stands against the measured window (before, in, after). The receiver counts the marked
//! packets per stream and keeps the latency (the kernel's arrival stamp, `SO_TIMESTAMPNS`, minus the
//! send time, so the receiver's own wake-ups do not count) and its change between consecutive packets
//! of a stream (RFC 3550's transit difference) for the in-window ones.

use media::dtmf::DtmfDigit;
use media::dtmf::rfc4733::{OutgoingEventPacket, digit_packets};
use media::rtp::RtpPacket;
use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrIn, recvmmsg, sendmsg, setsockopt,
    sockopt,
};
use parking_lot::Mutex;
use std::io::{IoSlice, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Name of the generator's threads, to read their CPU time apart from the rest of the bench.
pub const RTP_THREAD: &str = "bench-load-rtp";
const MAGIC: &[u8; 4] = b"LDv1";
const PACKET_INTERVAL_MS: u64 = 20;
const PCMU: u8 = 0;
const TELEPHONE_EVENT: u8 = 101;
/// An agent stops talking once the caller has been silent this long.
const AGENT_SILENCE_US: u64 = 1_000_000;
/// The first endpoint's address; endpoint `i` is this plus `i`.
const FIRST_ENDPOINT: Ipv4Addr = Ipv4Addr::new(127, 64, 0, 1);
/// Datagrams read per `recvmmsg`.
const BATCH: usize = 64;
/// Receive buffer of the one socket: a second of every leg's packets (100,000 at 1000 calls, about 1 kB
/// of kernel memory each) queues without a drop while the receiving thread waits for a core.
const RECEIVE_BUFFER_BYTES: usize = 128 << 20;
/// How often the receiving thread wakes to read what has queued. Arrival times come from the kernel,
/// so reading late costs no accuracy; waking for every packet (100,000 a second at 1000 calls) made
/// the generator preempt the platform under test on a small machine.
const RECEIVE_EVERY: Duration = Duration::from_millis(2);

/// A packet's place against the measured window, carried in the packet (one byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Window {
    Before = 0,
    In = 1,
    /// Sent after the window closed: once one arrives, every earlier packet of its stream has arrived
    /// or is lost (each path keeps the order of its packets).
    After = 2,
}

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
    peer: Option<SocketAddrV4>,
    started_us: u64,
    last_heard_us: u64,
    seq: u16,
    timestamp: u32,
    stopped: bool,
    digit: Option<DigitState>,
    digit_done: bool,
    sent_in_window: u64,
    heard_after_window: bool,
}

#[derive(Debug)]
struct DigitState {
    packets: Vec<OutgoingEventPacket>,
    next: usize,
    timestamp: u32,
}

struct Endpoint {
    address: Ipv4Addr,
    role: Role,
    state: Mutex<EndpointState>,
}

struct Shared {
    start: Instant,
    /// The wall clock and the monotonic clock when the window opened (µs), set once.
    window_opened_at: std::sync::OnceLock<(u64, f64)>,
    window_open: AtomicBool,
    window_closed: AtomicBool,
    stop: AtomicBool,
    socket: UdpSocket,
    port: u16,
    endpoints: Vec<Endpoint>,
    plan: CallerPlan,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// The wall clock in µs, the clock of the kernel's receive timestamps, for packets' send times.
    fn wall_us() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    }

    /// Where a packet sent now stands against the measured window.
    fn window(&self) -> Window {
        match (
            self.window_open.load(Ordering::SeqCst),
            self.window_closed.load(Ordering::SeqCst),
        ) {
            (_, true) => Window::After,
            (true, false) => Window::In,
            (false, false) => Window::Before,
        }
    }

    /// The endpoint a packet sent to `address` is for.
    fn endpoint_at(&self, address: Ipv4Addr) -> Option<(usize, &Endpoint)> {
        let index = u32::from(address).checked_sub(u32::from(FIRST_ENDPOINT))? as usize;
        self.endpoints.get(index).map(|e| (index, e))
    }
}

/// What the endpoints of one role heard, per stream (the sending endpoint's index).
struct Heard {
    /// Marked packets sent in the window.
    in_window: Vec<u64>,
    /// Marked packets at all (a call whose audio never arrived is a failed call, not packet loss).
    heard: Vec<u64>,
    last_latency: Vec<Option<u32>>,
    latencies_us: Vec<u32>,
    jitter_us: Vec<u32>,
    /// Per [`SLOW_BUCKET_US`] of arrival time (wall clock): packets slower than
    /// [`SLOW_PACKET_US`], and the slowest. Bounded: a bucket is made only for a slow packet, and a
    /// window of minutes holds a few thousand buckets at most.
    slow: SlowBuckets,
}

/// Per [`SLOW_BUCKET_US`] of wall-clock time: how many events were slow, and the slowest (µs).
type SlowBuckets = std::collections::BTreeMap<u64, (u64, u32)>;

/// Counts a slow event of `late_us` at `at_us` (wall clock).
fn count_slow(buckets: &mut SlowBuckets, at_us: u64, late_us: u32) {
    let stretch = buckets.entry(at_us / SLOW_BUCKET_US).or_default();
    stretch.0 += 1;
    stretch.1 = stretch.1.max(late_us);
}

impl Heard {
    fn new(streams: usize) -> Self {
        Self {
            in_window: vec![0; streams],
            heard: vec![0; streams],
            last_latency: vec![None; streams],
            latencies_us: Vec::new(),
            jitter_us: Vec::new(),
            slow: Default::default(),
        }
    }
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
    /// When the slow packets came: a tail spread over the whole window is a cost per packet, one
    /// bunched in a few stretches is a stall. Stretches of [`SLOW_BUCKET_US`] with packets slower
    /// than [`SLOW_PACKET_US`]: how many there were, and the worst of them, by packet count.
    pub slow_stretches: SlowStretches,
}

/// Where in the window the slow packets were.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SlowStretches {
    pub stretch_ms: u64,
    pub slower_than_us: u32,
    /// Packets slower than `slower_than_us` in the window.
    pub slow_packets: u64,
    /// Stretches that held at least one.
    pub stretches: usize,
    /// The stretches with the most slow packets (at most [`WORST_STRETCHES_KEPT`]), in time order.
    pub worst: Vec<SlowStretch>,
}

/// One stretch of the window.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlowStretch {
    /// Its start, in seconds after the window opened.
    pub at_s: f64,
    /// Its start on the machine's monotonic clock (seconds), to find it in a `perf` recording made
    /// with `-k CLOCK_MONOTONIC`.
    pub at_monotonic_s: f64,
    pub slow_packets: u64,
    pub slowest_us: u32,
}

/// A packet slower than this counts as slow.
pub const SLOW_PACKET_US: u32 = 5_000;
/// A sending phase this late counts as late.
pub const SENDER_LATE_US: u32 = 2_000;
/// The length of a stretch.
pub const SLOW_BUCKET_US: u64 = 100_000;
/// Stretches listed in the figures.
pub const WORST_STRETCHES_KEPT: usize = 12;

/// Both directions and what the generator itself could not take.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MediaFigures {
    pub caller_to_agent: Direction,
    pub agent_to_caller: Direction,
    /// Callers that never heard the platform (no prompt: the call did not get media).
    pub callers_without_audio: usize,
    pub agents_reached: usize,
    /// Datagrams the kernel dropped at the generator's own socket (its buffer was full): a loss the
    /// generator caused, counted apart from the platform's.
    pub generator_socket_drops: u64,
    /// Stretches of the window in which the generator's sending thread sent a 1 ms phase more than
    /// [`SENDER_LATE_US`] late (it waited for a core) and so sent a burst the platform had to absorb;
    /// here `slow_packets` counts late phases. Set beside `slow_stretches`, it tells a stall of the
    /// platform from a burst of the generator's.
    pub sender_late_stretches: SlowStretches,
}

/// The endpoints of one step and the threads that drive them; [`MediaLoad::finish`] stops them.
pub struct MediaLoad {
    shared: Arc<Shared>,
    receiver: Option<JoinHandle<[Heard; 2]>>,
    sender: Option<JoinHandle<SlowBuckets>>,
    calls: usize,
}

impl MediaLoad {
    /// Opens the socket for `calls` callers and `calls` agent phones and starts listening and sending.
    pub fn start(calls: usize, plan: CallerPlan) -> Result<Self, String> {
        let socket = UdpSocket::bind("0.0.0.0:0").map_err(|e| format!("bind RTP ends: {e}"))?;
        setsockopt(&socket, sockopt::Ipv4PacketInfo, &true).map_err(|e| format!("IP_PKTINFO: {e}"))?;
        // A packet's arrival is when the kernel queued it, not when this process got a core to read it:
        // the generator's own wake-ups are not the platform's latency.
        setsockopt(&socket, sockopt::ReceiveTimestampns, &true)
            .map_err(|e| format!("SO_TIMESTAMPNS: {e}"))?;
        // Beyond `net.core.rmem_max` only with CAP_NET_ADMIN; otherwise as much as the system allows.
        if setsockopt(&socket, sockopt::RcvBufForce, &RECEIVE_BUFFER_BYTES).is_err() {
            let _ = setsockopt(&socket, sockopt::RcvBuf, &RECEIVE_BUFFER_BYTES);
        }
        let port = socket.local_addr().map_err(|e| e.to_string())?.port();
        let endpoints = (0..calls * 2)
            .map(|i| Endpoint {
                address: Ipv4Addr::from(u32::from(FIRST_ENDPOINT) + i as u32),
                role: if i < calls { Role::Caller } else { Role::Agent },
                state: Mutex::new(EndpointState::default()),
            })
            .collect();
        let shared = Arc::new(Shared {
            start: Instant::now(),
            window_opened_at: std::sync::OnceLock::new(),
            window_open: AtomicBool::new(false),
            window_closed: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            socket,
            port,
            endpoints,
            plan,
        });
        let for_receiver = shared.clone();
        let receiver = std::thread::Builder::new()
            .name(RTP_THREAD.into())
            .spawn(move || receive_loop(&for_receiver, calls))
            .map_err(|e| e.to_string())?;
        let for_sender = shared.clone();
        let sender = std::thread::Builder::new()
            .name(RTP_THREAD.into())
            .spawn(move || send_loop(&for_sender))
            .map_err(|e| e.to_string())?;
        Ok(Self {
            shared,
            receiver: Some(receiver),
            sender: Some(sender),
            calls,
        })
    }

    fn addresses(&self, role: Role) -> Vec<SocketAddrV4> {
        self.shared
            .endpoints
            .iter()
            .filter(|e| e.role == role)
            .map(|e| SocketAddrV4::new(e.address, self.shared.port))
            .collect()
    }

    /// The callers' RTP addresses, in call order.
    pub fn caller_addresses(&self) -> Vec<SocketAddrV4> {
        self.addresses(Role::Caller)
    }

    /// The agent phones' RTP addresses, in the order the agents' SIPp answers calls.
    pub fn agent_addresses(&self) -> Vec<SocketAddrV4> {
        self.addresses(Role::Agent)
    }

    /// Caller `call` sends to `peer` from now on without waiting to hear it first (a relay that sends
    /// nothing until it has heard both sides).
    pub fn set_caller_peer(&self, call: usize, peer: SocketAddrV4) {
        if let Some(endpoint) = self.shared.endpoints.get(call).filter(|e| e.role == Role::Caller) {
            let now = self.shared.now_us();
            let mut state = endpoint.state.lock();
            state.peer = Some(peer);
            state.started_us = now;
            state.last_heard_us = now;
        }
    }

    /// Packets sent from now on count (loss, latency, jitter).
    pub fn open_window(&self) {
        let monotonic = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as f64 + t.tv_nsec() as f64 / 1e9)
            .unwrap_or(0.0);
        let _ = self.shared.window_opened_at.set((Shared::wall_us(), monotonic));
        self.shared.window_open.store(true, Ordering::SeqCst);
    }

    /// Packets sent from now on no longer count.
    pub fn close_window(&self) {
        self.shared.window_closed.store(true, Ordering::SeqCst);
    }

    /// Endpoints that have heard a packet sent after the window closed: every packet of the window
    /// from their peer has arrived or is lost.
    pub fn heard_after_window(&self) -> usize {
        self.shared
            .endpoints
            .iter()
            .filter(|e| e.state.lock().heard_after_window)
            .count()
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
    pub fn finish(mut self) -> MediaFigures {
        let generator_socket_drops = socket_drops(self.shared.port);
        self.shared.stop.store(true, Ordering::SeqCst);
        let sender_late = self
            .sender
            .take()
            .and_then(|sender| sender.join().ok())
            .unwrap_or_default();
        let calls = self.calls;
        let streams = calls * 2;
        let [by_callers, by_agents] = self
            .receiver
            .take()
            .and_then(|r| r.join().ok())
            .unwrap_or_else(|| [Heard::new(streams), Heard::new(streams)]);
        let shared = &self.shared;
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
        let direction = |mut heard: Heard| {
            let mut streams = 0;
            let mut sent = 0;
            for (stream, &n) in heard.heard.iter().enumerate() {
                if n > 0 {
                    streams += 1;
                    sent += shared
                        .endpoints
                        .get(stream)
                        .map(|e| e.state.lock().sent_in_window)
                        .unwrap_or(0);
                }
            }
            let received: u64 = heard.in_window.iter().sum();
            heard.latencies_us.sort_unstable();
            heard.jitter_us.sort_unstable();
            let pct = |v: &[u32], p: f64| {
                let v: Vec<u64> = v.iter().map(|x| u64::from(*x)).collect();
                crate::acd::percentile(&v, p)
            };
            let lost = sent.saturating_sub(received);
            let slow_stretches = slow_stretches(
                &heard.slow,
                SLOW_PACKET_US,
                shared.window_opened_at.get().copied(),
            );
            Direction {
                streams,
                sent,
                received,
                lost,
                loss: lost as f64 / sent.max(1) as f64,
                latency_p50_us: pct(&heard.latencies_us, 0.5),
                latency_p99_us: pct(&heard.latencies_us, 0.99),
                latency_max_us: heard.latencies_us.last().map(|x| u64::from(*x)).unwrap_or(0),
                added_jitter_p50_us: pct(&heard.jitter_us, 0.5),
                added_jitter_p99_us: pct(&heard.jitter_us, 0.99),
                slow_stretches,
            }
        };
        MediaFigures {
            caller_to_agent: direction(by_agents),
            agent_to_caller: direction(by_callers),
            callers_without_audio,
            agents_reached,
            generator_socket_drops,
            sender_late_stretches: slow_stretches(
                &sender_late,
                SENDER_LATE_US,
                shared.window_opened_at.get().copied(),
            ),
        }
    }
}

impl Drop for MediaLoad {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

/// Drops the kernel counted at the UDP socket bound to `port` (the last column of `/proc/net/udp`).
fn socket_drops(port: u16) -> u64 {
    let wanted = format!(":{port:04X}");
    std::fs::read_to_string("/proc/net/udp")
        .unwrap_or_default()
        .lines()
        .filter(|line| {
            line.split_whitespace()
                .nth(1)
                .is_some_and(|local| local.ends_with(&wanted))
        })
        .filter_map(|line| line.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

/// One datagram read by `recvmmsg`.
struct Arrival {
    len: usize,
    /// The address it was sent to: which endpoint it is for.
    destination: Option<Ipv4Addr>,
    from: Option<SocketAddrV4>,
    /// When the kernel queued it (wall clock, µs).
    arrived_us: Option<u64>,
}

/// What `recvmmsg` said of one datagram: its length, where it came from, and from its control
/// messages the address it was sent to and the kernel's arrival time.
fn arrival_of(message: &nix::sys::socket::RecvMsg<'_, '_, SockaddrIn>) -> Arrival {
    let mut arrival = Arrival {
        len: message.bytes,
        destination: None,
        from: message.address.map(|a| SocketAddrV4::new(a.ip(), a.port())),
        arrived_us: None,
    };
    for cmsg in message.cmsgs().into_iter().flatten() {
        match cmsg {
            ControlMessageOwned::Ipv4PacketInfo(info) => {
                arrival.destination = Some(Ipv4Addr::from(u32::from_be(info.ipi_addr.s_addr)));
            }
            ControlMessageOwned::ScmTimestampns(at) => {
                let us = i128::from(at.tv_sec()) * 1_000_000 + i128::from(at.tv_nsec()) / 1000;
                arrival.arrived_us = u64::try_from(us).ok();
            }
            _ => {}
        }
    }
    arrival
}

/// Reads every endpoint's packets until the measurement ends; returns what callers and agents heard.
fn receive_loop(shared: &Shared, calls: usize) -> [Heard; 2] {
    let streams = calls * 2;
    let mut heard = [Heard::new(streams), Heard::new(streams)];
    let mut headers = MultiHeaders::<SockaddrIn>::preallocate(
        BATCH,
        Some(nix::cmsg_space!(nix::libc::in_pktinfo, nix::sys::time::TimeSpec)),
    );
    let mut buffers = vec![[0u8; 512]; BATCH];
    let mut arrivals: Vec<Arrival> = Vec::with_capacity(BATCH);
    let fd = shared.socket.as_raw_fd();
    let mut next = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        next += RECEIVE_EVERY;
        match next.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            None => next = Instant::now(),
        }
        // Everything queued since the last wake, a batch at a time.
        loop {
            arrivals.clear();
            let read = {
                let mut slices: Vec<[IoSliceMut<'_>; 1]> =
                    buffers.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
                recvmmsg(fd, &mut headers, slices.iter_mut(), MsgFlags::MSG_DONTWAIT, None)
                    .map(|results| arrivals.extend(results.map(|message| arrival_of(&message))))
            };
            match read {
                Ok(()) => {}
                Err(Errno::EAGAIN) => break,
                // A signal, or ICMP port unreachable from a leg already closed: read on.
                Err(Errno::EINTR | Errno::ECONNREFUSED) => continue,
                // Anything else ends the reading: say so, or the packets not read would pass for the
                // platform's loss.
                Err(error) => {
                    eprintln!("bench load: the RTP ends stopped reading: {error}");
                    return heard;
                }
            }
            let now = shared.now_us();
            let wall = Shared::wall_us();
            for (buffer, arrival) in buffers.iter().zip(arrivals.iter()) {
                let (Some(destination), Some(from), Some(data)) =
                    (arrival.destination, arrival.from, buffer.get(..arrival.len))
                else {
                    continue;
                };
                let Some((_, endpoint)) = shared.endpoint_at(destination) else {
                    continue;
                };
                let role = usize::from(endpoint.role == Role::Agent);
                if let Some(heard) = heard.get_mut(role) {
                    let arrived_us = arrival.arrived_us.unwrap_or(wall);
                    on_datagram(endpoint, data, from, (now, arrived_us), heard);
                }
            }
            if arrivals.len() < BATCH {
                break;
            }
        }
    }
    heard
}

/// Handles one datagram; `now` is the endpoints' clock, `arrived_us` the wall clock of its arrival.
fn on_datagram(
    endpoint: &Endpoint,
    data: &[u8],
    from: SocketAddrV4,
    (now, arrived_us): (u64, u64),
    heard: &mut Heard,
) {
    // RTCP (packet types 200-204 in the second byte) is not audio, and never names the RTP peer.
    if data.get(1).is_some_and(|pt| (200..=204).contains(pt)) {
        return;
    }
    let Ok(packet) = RtpPacket::parse(data) else {
        return;
    };
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
        return;
    }
    if packet.payload.get(16) == Some(&(Window::After as u8)) {
        endpoint.state.lock().heard_after_window = true;
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
        return;
    };
    let stream = stream as usize;
    let (Some(count), Some(in_window), Some(last)) = (
        heard.heard.get_mut(stream),
        heard.in_window.get_mut(stream),
        heard.last_latency.get_mut(stream),
    ) else {
        return;
    };
    *count += 1;
    if flag != [Window::In as u8] {
        return;
    }
    *in_window += 1;
    let latency = arrived_us.saturating_sub(sent_us).min(u64::from(u32::MAX)) as u32;
    heard.latencies_us.push(latency);
    if latency > SLOW_PACKET_US {
        count_slow(&mut heard.slow, arrived_us, latency);
    }
    if let Some(previous) = last.replace(latency) {
        heard.jitter_us.push(latency.abs_diff(previous));
    }
}

/// The stretches of `slow` (events slower than `threshold_us`), placed against the window's opening
/// (`opened`: its wall clock in µs and its monotonic clock in s).
fn slow_stretches(slow: &SlowBuckets, threshold_us: u32, opened: Option<(u64, f64)>) -> SlowStretches {
    let (opened_wall_us, opened_monotonic_s) = opened.unwrap_or((0, 0.0));
    let mut worst: Vec<(u64, u64, u32)> = slow
        .iter()
        .map(|(bucket, (count, max))| (*bucket, *count, *max))
        .collect();
    worst.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    worst.truncate(WORST_STRETCHES_KEPT);
    worst.sort_by_key(|stretch| stretch.0);
    let at_s = |bucket: u64| (bucket * SLOW_BUCKET_US) as f64 / 1e6 - opened_wall_us as f64 / 1e6;
    SlowStretches {
        stretch_ms: SLOW_BUCKET_US / 1000,
        slower_than_us: threshold_us,
        slow_packets: slow.values().map(|(count, _)| count).sum(),
        stretches: slow.len(),
        worst: worst
            .into_iter()
            .map(|(bucket, slow_packets, slowest_us)| SlowStretch {
                at_s: at_s(bucket),
                at_monotonic_s: opened_monotonic_s + at_s(bucket),
                slow_packets,
                slowest_us,
            })
            .collect(),
    }
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

fn next_packet(shared: &Shared, endpoint: &Endpoint, now: u64) -> Option<(SocketAddrV4, Send)> {
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

/// Sends each endpoint's packet every 20 ms, endpoint `i` in the 1 ms phase `i % 20`, from the endpoint's
/// own address. A phase that comes late (the thread waited for a core) is sent at once, as a phone's
/// packets queued behind a busy CPU would be.
fn send_loop(shared: &Shared) -> SlowBuckets {
    let mut late = SlowBuckets::new();
    let mut payload = [0xffu8; 160];
    payload[..4].copy_from_slice(MAGIC);
    let mut out = [0u8; 200];
    let fd = shared.socket.as_raw_fd();
    let begin = Instant::now();
    let mut phase: u64 = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let due = begin + Duration::from_millis(phase);
        match due.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            None => {
                let late_us = Instant::now().saturating_duration_since(due).as_micros();
                if late_us > u128::from(SENDER_LATE_US) && shared.window() == Window::In {
                    count_slow(
                        &mut late,
                        Shared::wall_us(),
                        u32::try_from(late_us).unwrap_or(u32::MAX),
                    );
                }
            }
        }
        let first = (phase % PACKET_INTERVAL_MS) as usize;
        phase += 1;
        for (i, endpoint) in shared
            .endpoints
            .iter()
            .enumerate()
            .skip(first)
            .step_by(PACKET_INTERVAL_MS as usize)
        {
            let now = shared.now_us();
            let Some((peer, what)) = next_packet(shared, endpoint, now) else {
                continue;
            };
            let ssrc = 0x4c00_0000 | i as u32;
            let (len, counted) = match what {
                Send::Audio { seq, timestamp } => {
                    let window = shared.window();
                    let in_window = window == Window::In;
                    payload[4..8].copy_from_slice(&(i as u32).to_le_bytes());
                    payload[8..16].copy_from_slice(&Shared::wall_us().to_le_bytes());
                    payload[16] = window as u8;
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
            let source = nix::libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: nix::libc::in_addr {
                    s_addr: u32::from(endpoint.address).to_be(),
                },
                ipi_addr: nix::libc::in_addr { s_addr: 0 },
            };
            let sent = sendmsg(
                fd,
                &[IoSlice::new(bytes)],
                &[ControlMessage::Ipv4PacketInfo(&source)],
                MsgFlags::MSG_DONTWAIT,
                Some(&SockaddrIn::from(peer)),
            );
            if sent.is_ok() && counted {
                endpoint.state.lock().sent_in_window += 1;
            }
        }
    }
    late
}

/// The IPv4 address in `address`, if it is one (the RTP ends and the relays here are IPv4).
pub fn v4(address: SocketAddr) -> Option<SocketAddrV4> {
    match address {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> CallerPlan {
        CallerPlan {
            digit: '1',
            digit_after: Duration::MAX,
            talk_for: Duration::MAX,
        }
    }

    /// Three calls through a relay made of plain sockets: every caller's and every agent's stream
    /// reaches the other end, each at its own address, with no loss.
    #[test]
    fn each_endpoint_hears_its_own_peer_at_its_own_address_and_nothing_is_lost() {
        let calls = 3;
        let load = MediaLoad::start(calls, plan()).unwrap();
        let callers = load.caller_addresses();
        let agents = load.agent_addresses();
        assert_eq!(callers.len(), calls);
        assert_ne!(callers[0].ip(), callers[1].ip());
        // One relay thread per call: side a faces the caller, side b the agent.
        let stop = Arc::new(AtomicBool::new(false));
        let mut relays = Vec::new();
        for agent in &agents {
            let a = UdpSocket::bind("127.0.0.1:0").unwrap();
            let b = UdpSocket::bind("127.0.0.1:0").unwrap();
            for s in [&a, &b] {
                s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
            }
            let to_a = v4(a.local_addr().unwrap()).unwrap();
            load.set_caller_peer(relays.len(), to_a);
            let agent = *agent;
            let stop = stop.clone();
            relays.push(std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                let mut from_caller = None;
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((n, from)) = a.recv_from(&mut buf) {
                        from_caller = Some(from);
                        b.send_to(&buf[..n], agent).unwrap();
                    }
                    if let (Ok((n, _)), Some(caller)) = (b.recv_from(&mut buf), from_caller) {
                        // Answers go back to where the caller's packets came from: its own address.
                        a.send_to(&buf[..n], caller).unwrap();
                    }
                }
                from_caller
            }));
        }
        // Every agent hears its caller (its first packet names its peer) before the window opens.
        let deadline = Instant::now() + Duration::from_secs(10);
        while load.talking_agents() < calls {
            assert!(Instant::now() < deadline, "agents never heard their callers");
            std::thread::sleep(Duration::from_millis(10));
        }
        load.open_window();
        std::thread::sleep(Duration::from_millis(500));
        load.close_window();
        while load.heard_after_window() < calls * 2 {
            assert!(
                Instant::now() < deadline + Duration::from_secs(10),
                "the window never drained"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let figures = load.finish();
        stop.store(true, Ordering::Relaxed);
        let sources: Vec<_> = relays.into_iter().map(|r| r.join().unwrap()).collect();
        for (source, caller) in sources.iter().zip(callers.iter()) {
            assert_eq!(
                *source,
                Some(SocketAddr::V4(*caller)),
                "a caller sent from another address"
            );
        }
        for d in [&figures.caller_to_agent, &figures.agent_to_caller] {
            assert_eq!(d.streams, calls);
            assert!(d.sent >= calls as u64 * 10, "{d:?}");
            assert_eq!(d.lost, 0, "{d:?}");
            assert_eq!(d.received, d.sent);
        }
        assert_eq!(figures.agents_reached, calls);
        assert_eq!(figures.callers_without_audio, 0);
    }

    #[test]
    fn only_addresses_of_endpoints_are_endpoints() {
        let load = MediaLoad::start(2, plan()).unwrap();
        let shared = &load.shared;
        assert_eq!(shared.endpoint_at(FIRST_ENDPOINT).map(|(i, _)| i), Some(0));
        assert_eq!(
            shared
                .endpoint_at(Ipv4Addr::new(127, 64, 0, 4))
                .map(|(i, e)| (i, e.role)),
            Some((3, Role::Agent))
        );
        assert!(shared.endpoint_at(Ipv4Addr::new(127, 64, 0, 5)).is_none());
        assert!(shared.endpoint_at(Ipv4Addr::new(127, 0, 0, 1)).is_none());
    }

    #[test]
    fn slow_packets_are_placed_in_their_stretch_of_the_window_and_the_worst_are_kept_in_time_order() {
        let opened_wall_us = 1_000_000_000;
        let mut slow = std::collections::BTreeMap::new();
        // Stretch k of the window holds k slow packets, the slowest 6 ms + k µs.
        for k in 1..=20u64 {
            slow.insert(opened_wall_us / SLOW_BUCKET_US + k, (k, 6_000 + k as u32));
        }
        let stretches = slow_stretches(&slow, SLOW_PACKET_US, Some((opened_wall_us, 500.0)));
        assert_eq!(stretches.stretches, 20);
        assert_eq!(stretches.slow_packets, (1..=20).sum::<u64>());
        assert_eq!(stretches.worst.len(), WORST_STRETCHES_KEPT);
        // The twelve fullest are stretches 9..=20, listed in time order.
        let first = &stretches.worst[0];
        assert_eq!(first.slow_packets, 9);
        assert_eq!(first.slowest_us, 6_009);
        assert!((first.at_s - 0.9).abs() < 1e-9, "{first:?}");
        assert!((first.at_monotonic_s - 500.9).abs() < 1e-9, "{first:?}");
        assert_eq!(stretches.worst.last().map(|s| s.slow_packets), Some(20));
    }
}
