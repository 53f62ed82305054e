//! `bench media`: N bridged G.711 calls, two phones per call each sending 50 RTP packets/s, relayed by the
//! media engine's bridge and, in the same run, by a bare UDP relay written here (one task per socket,
//! forward as received: the floor on this machine).
//!
//! The relay under test runs on its own runtime whose threads carry one name, so its CPU time is read
//! from `/proc/self/task/*/stat` apart from the phones and the blaster. Each packet carries its send time;
//! latency is receive minus send on the same clock, and the added jitter is the change in latency between
//! consecutive packets of one stream (RFC 3550's transit difference).
//!
//! With `--srtp true` (the default) a third run per step puts SDES-SRTP (AES_CM_128_HMAC_SHA1_80) on every
//! engine leg: the phones encrypt and decrypt, the engine decrypts, relays and encrypts. Its CPU per packet
//! beside the plain engine run's is the cost of SRTP in the engine.

use media::engine::{MediaConfig, MediaEngine};
use media::g711::G711;
use media::rtp::RtpPacket;
use media::sdp::{MediaDirection, Negotiated};
use media::srtp::{MAX_RTP_OVERHEAD, MasterKey, SrtpKeys, SrtpReceiver, SrtpSender, SrtpSuite};
use serde::Serialize;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

#[derive(clap::Args)]
pub struct MediaArgs {
    /// Bridged calls, one measurement per value.
    #[arg(long, value_delimiter = ',', default_value = "250,500,1000")]
    calls: Vec<usize>,
    /// Seconds of load per measurement (after one second of warm-up).
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Worker threads of the relay's runtime (engine and bare alike).
    #[arg(long, default_value_t = 2)]
    relay_threads: usize,
    /// Also measure the engine with SRTP on every leg (true or false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    srtp: bool,
}

/// Name of the relay runtime's threads, to find their CPU time.
pub(crate) const RELAY_THREAD: &str = "bench-relay";
const PACKET_INTERVAL: Duration = Duration::from_millis(20);
const WARMUP_TICKS: u64 = 50;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Mode {
    Bare,
    Engine,
    EngineSrtp,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Self::Bare => "bare",
            Self::Engine => "engine",
            Self::EngineSrtp => "engine_srtp",
        }
    }
}

const SRTP_SUITE: SrtpSuite = SrtpSuite::AesCm128HmacSha1_80;

/// The phones' SRTP key (what they send with) and the engine legs' (what the phones receive).
fn phone_key() -> MasterKey {
    MasterKey::from_bytes(&[0x5a; 30])
}

fn engine_key() -> MasterKey {
    MasterKey::from_bytes(&[0xa5; 30])
}

#[derive(Debug, Serialize)]
pub(crate) struct RunFigures {
    mode: &'static str,
    calls: usize,
    seconds: u64,
    sent: u64,
    received: u64,
    loss: f64,
    latency_p50_us: u64,
    latency_p99_us: u64,
    latency_max_us: u64,
    added_jitter_p50_us: u64,
    added_jitter_p99_us: u64,
    relay_cpu_s: f64,
    relay_cpu_ns_per_packet: f64,
    relay_cpu_share_of_one_core: f64,
}

/// CPU time in seconds of this process's threads named `name` (user + system, from /proc).
pub(crate) fn threads_cpu_seconds(name: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let wanted = format!("({name}");
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter(|stat| {
            stat.split_whitespace()
                .nth(1)
                .is_some_and(|comm| comm.starts_with(&wanted))
        })
        .filter_map(|stat| {
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
            Some((ticks(11)? + ticks(12)?) / 100.0)
        })
        .sum()
}

async fn bare_relay(from: Arc<UdpSocket>, out: Arc<UdpSocket>, to: SocketAddr) {
    let mut buf = [0u8; 1500];
    while let Ok(len) = from.recv(&mut buf).await {
        if let Some(data) = buf.get(..len) {
            let _ = out.send_to(data, to).await;
        }
    }
}

/// Keeps a relay's resources alive until the measurement ends.
type Keep = Vec<Box<dyn std::any::Any>>;

async fn set_up_relay(
    mode: Mode,
    phones: &[(SocketAddr, SocketAddr)],
) -> Result<(Vec<(SocketAddr, SocketAddr)>, Keep), String> {
    let mut targets = Vec::with_capacity(phones.len());
    let mut keep: Keep = Vec::new();
    match mode {
        Mode::Bare => {
            for &(pa, pb) in phones {
                let bind = || async {
                    UdpSocket::bind("127.0.0.1:0")
                        .await
                        .map(Arc::new)
                        .map_err(|e| e.to_string())
                };
                let ra = bind().await?;
                let rb = bind().await?;
                let ta = ra.local_addr().map_err(|e| e.to_string())?;
                let tb = rb.local_addr().map_err(|e| e.to_string())?;
                tokio::spawn(bare_relay(ra.clone(), rb.clone(), pb));
                tokio::spawn(bare_relay(rb, ra, pa));
                targets.push((ta, tb));
            }
        }
        Mode::Engine | Mode::EngineSrtp => {
            let engine = MediaEngine::new(MediaConfig {
                recordings_dir: std::env::temp_dir(),
                ..MediaConfig::default()
            })
            .map_err(|e| e.to_string())?;
            let negotiated = |remote| Negotiated {
                law: G711::Pcmu,
                payload_type: 0,
                telephone_event: Some(101),
                remote: Some(remote),
                direction: MediaDirection::SendRecv,
                ptime_ms: 20,
            };
            for &(pa, pb) in phones {
                let (a, a_events) = engine.allocate_leg().map_err(|e| e.to_string())?;
                let (b, b_events) = engine.allocate_leg().map_err(|e| e.to_string())?;
                if mode == Mode::EngineSrtp {
                    for leg in [&a, &b] {
                        leg.set_srtp(Some(SrtpKeys {
                            suite: SRTP_SUITE,
                            local: engine_key(),
                            remote: phone_key(),
                        }));
                    }
                }
                a.set_remote(negotiated(pa));
                b.set_remote(negotiated(pb));
                let bridge = engine.bridge(&a, &b);
                targets.push((a.local_addr(), b.local_addr()));
                keep.push(Box::new((a, b, a_events, b_events, bridge)));
            }
            keep.push(Box::new(engine));
        }
    }
    Ok((targets, keep))
}

/// The relay on its own runtime and threads; dropping it ends the relay.
pub(crate) struct Relay {
    /// Per call, the relay's two addresses: side a faces the first phone, side b the second.
    pub(crate) targets: Vec<(SocketAddr, SocketAddr)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    pub(crate) fn start(
        mode: Mode,
        phones: Vec<(SocketAddr, SocketAddr)>,
        threads: usize,
    ) -> Result<Self, String> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(RELAY_THREAD.into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(threads.max(1))
                    .thread_name(RELAY_THREAD)
                    .enable_all()
                    .build();
                let runtime = match runtime {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match set_up_relay(mode, &phones).await {
                        Ok((targets, keep)) => {
                            let _ = ready_tx.send(Ok(targets));
                            let _ = stopped.await;
                            drop(keep);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(2));
            })
            .map_err(|e| e.to_string())?;
        let targets = ready_rx.recv().map_err(|e| e.to_string())??;
        Ok(Self {
            targets,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What one phone received: per packet (send time, latency) and |latency change| from the previous one.
#[derive(Default)]
struct Received {
    samples: Vec<(u64, u32)>,
    jitter: Vec<(u64, u32)>,
}

const END_MARKER: u64 = u64::MAX;

async fn phone_receiver(socket: Arc<UdpSocket>, start: Instant, mut srtp: Option<SrtpReceiver>) -> Received {
    let mut buf = [0u8; 1500];
    let mut out = Received::default();
    let mut last_latency: Option<u32> = None;
    while let Ok(len) = socket.recv(&mut buf).await {
        let Some(data) = buf.get_mut(..len) else { continue };
        // RTCP (payload types 200-204 in the second byte) from a leg's reports is not audio.
        if data.get(1).is_some_and(|pt| (200..=204).contains(pt)) {
            continue;
        }
        let len = match srtp.as_mut() {
            Some(srtp) => match srtp.unprotect_rtp(data) {
                Ok(len) => len,
                // Not ours: read it as it is (it will not carry a send time in the window).
                Err(_) => len,
            },
            None => len,
        };
        let Some(data) = buf.get(..len) else { continue };
        let Ok(packet) = RtpPacket::parse(data) else {
            continue;
        };
        let Some(stamp) = packet.payload.get(..8).and_then(|s| <[u8; 8]>::try_from(s).ok()) else {
            continue;
        };
        let sent_us = u64::from_le_bytes(stamp);
        if sent_us == END_MARKER {
            break;
        }
        let now_us = start.elapsed().as_micros() as u64;
        let latency = now_us.saturating_sub(sent_us).min(u64::from(u32::MAX)) as u32;
        out.samples.push((sent_us, latency));
        if let Some(last) = last_latency {
            out.jitter.push((sent_us, latency.abs_diff(last)));
        }
        last_latency = Some(latency);
    }
    out
}

fn sorted_in_window(samples: &[(u64, u32)], window: &std::ops::RangeInclusive<u64>) -> Vec<u64> {
    let mut v: Vec<u64> = samples
        .iter()
        .filter(|(at, _)| window.contains(at))
        .map(|(_, x)| u64::from(*x))
        .collect();
    v.sort_unstable();
    v
}

pub(crate) async fn measure(
    mode: Mode,
    calls: usize,
    seconds: u64,
    relay_threads: usize,
) -> Result<RunFigures, String> {
    let start = Instant::now();
    let mut phones = Vec::with_capacity(calls * 2);
    for _ in 0..calls * 2 {
        phones.push(Arc::new(
            UdpSocket::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?,
        ));
    }
    let addrs = phones
        .iter()
        .map(|p| p.local_addr().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let pairs: Vec<(SocketAddr, SocketAddr)> = addrs
        .chunks(2)
        .filter_map(|c| Some((*c.first()?, *c.get(1)?)))
        .collect();
    let relay = tokio::task::spawn_blocking(move || Relay::start(mode, pairs, relay_threads))
        .await
        .map_err(|e| e.to_string())??;
    // Each phone sends to its side of the relay: a to the first target, b to the second.
    let senders: Vec<(Arc<UdpSocket>, SocketAddr)> = phones
        .iter()
        .zip(relay.targets.iter().flat_map(|(a, b)| [*a, *b]))
        .map(|(p, t)| (p.clone(), t))
        .collect();
    let receivers: Vec<_> = phones
        .iter()
        .map(|p| {
            let srtp = (mode == Mode::EngineSrtp).then(|| SrtpReceiver::new(SRTP_SUITE, &engine_key()));
            tokio::spawn(phone_receiver(p.clone(), start, srtp))
        })
        .collect();
    let mut protectors: Vec<Option<SrtpSender>> = senders
        .iter()
        .map(|_| (mode == Mode::EngineSrtp).then(|| SrtpSender::new(SRTP_SUITE, &phone_key())))
        .collect();

    let sent = AtomicU64::new(0);
    let total_ticks = (seconds + 1) * 50;
    let mut interval = tokio::time::interval(PACKET_INTERVAL);
    let mut payload = [0xffu8; 160];
    let mut packet = [0u8; 172 + MAX_RTP_OVERHEAD];
    let mut cpu_at_start = 0.0;
    let mut window_start_us = 0;
    for tick in 0..total_ticks {
        interval.tick().await;
        if tick == WARMUP_TICKS {
            window_start_us = start.elapsed().as_micros() as u64;
            cpu_at_start = threads_cpu_seconds(RELAY_THREAD);
        }
        for (i, ((socket, target), protector)) in senders.iter().zip(protectors.iter_mut()).enumerate() {
            let now_us = start.elapsed().as_micros() as u64;
            payload[..8].copy_from_slice(&now_us.to_le_bytes());
            let rtp = RtpPacket::new(0, tick as u16, (tick * 160) as u32, i as u32, &payload);
            let Ok(len) = rtp.write_to(&mut packet) else {
                continue;
            };
            let len = match protector {
                Some(srtp) => match srtp.protect_rtp(&mut packet, len) {
                    Ok(len) => len,
                    Err(_) => continue,
                },
                None => len,
            };
            let Some(bytes) = packet.get(..len) else { continue };
            if socket.try_send_to(bytes, *target).is_ok() && tick >= WARMUP_TICKS {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let window_end_us = start.elapsed().as_micros() as u64;
    // Drain time for the last packets of the window: part of the measurement, not synchronisation.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let cpu = threads_cpu_seconds(RELAY_THREAD) - cpu_at_start;
    let measured_s = (window_end_us - window_start_us) as f64 / 1e6 + 0.3;
    payload[..8].copy_from_slice(&END_MARKER.to_le_bytes());
    for (i, ((socket, target), protector)) in senders.iter().zip(protectors.iter_mut()).enumerate() {
        // The next sequence number of the stream: with SRTP an older one would be a replay.
        let rtp = RtpPacket::new(
            0,
            total_ticks as u16,
            (total_ticks * 160) as u32,
            i as u32,
            &payload,
        );
        let Ok(len) = rtp.write_to(&mut packet) else {
            continue;
        };
        let len = match protector {
            Some(srtp) => srtp.protect_rtp(&mut packet, len).unwrap_or(len),
            None => len,
        };
        if let Some(bytes) = packet.get(..len) {
            let _ = socket.send_to(bytes, *target).await;
        }
    }
    let mut samples = Vec::new();
    let mut jitter = Vec::new();
    for r in receivers {
        // A phone whose end marker was lost stops waiting after this; its packets are then not counted.
        if let Ok(Ok(received)) = tokio::time::timeout(Duration::from_secs(3), r).await {
            samples.extend(received.samples);
            jitter.extend(received.jitter);
        }
    }
    drop(relay);
    let window = window_start_us..=window_end_us;
    let latencies = sorted_in_window(&samples, &window);
    let jitter = sorted_in_window(&jitter, &window);
    let sent = sent.load(Ordering::Relaxed);
    let received = latencies.len() as u64;
    let pct = crate::acd::percentile;
    Ok(RunFigures {
        mode: mode.name(),
        calls,
        seconds,
        sent,
        received,
        loss: 1.0 - received as f64 / sent.max(1) as f64,
        latency_p50_us: pct(&latencies, 0.5),
        latency_p99_us: pct(&latencies, 0.99),
        latency_max_us: latencies.last().copied().unwrap_or(0),
        added_jitter_p50_us: pct(&jitter, 0.5),
        added_jitter_p99_us: pct(&jitter, 0.99),
        relay_cpu_s: cpu,
        relay_cpu_ns_per_packet: cpu * 1e9 / received.max(1) as f64,
        relay_cpu_share_of_one_core: cpu / measured_s,
    })
}

pub fn run(args: &MediaArgs) -> Result<Value, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-phones")
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    for &calls in &args.calls {
        let bare = runtime.block_on(measure(Mode::Bare, calls, args.seconds, args.relay_threads))?;
        let engine = runtime.block_on(measure(Mode::Engine, calls, args.seconds, args.relay_threads))?;
        let srtp = if args.srtp {
            Some(runtime.block_on(measure(Mode::EngineSrtp, calls, args.seconds, args.relay_threads))?)
        } else {
            None
        };
        let ratio = |a: f64, b: f64| (b > 0.0).then(|| a / b);
        let mut step = json!({
            "calls": calls,
            "engine": engine,
            "bare": bare,
            "ratios": {
                "cpu_per_packet_engine_over_bare": ratio(engine.relay_cpu_ns_per_packet, bare.relay_cpu_ns_per_packet),
                "p99_jitter_engine_over_bare": ratio(engine.added_jitter_p99_us as f64, bare.added_jitter_p99_us as f64),
                "p99_latency_engine_over_bare": ratio(engine.latency_p99_us as f64, bare.latency_p99_us as f64),
            },
        });
        if let Some(srtp) = srtp {
            step["ratios"]["cpu_per_packet_srtp_over_engine"] = json!(ratio(
                srtp.relay_cpu_ns_per_packet,
                engine.relay_cpu_ns_per_packet
            ));
            step["ratios"]["p99_latency_srtp_over_bare"] =
                json!(ratio(srtp.latency_p99_us as f64, bare.latency_p99_us as f64));
            // Each relayed packet is decrypted once and encrypted once.
            step["srtp_cpu_ns_per_packet_added"] =
                json!(srtp.relay_cpu_ns_per_packet - engine.relay_cpu_ns_per_packet);
            step["engine_srtp"] = json!(srtp);
        }
        results.push(step);
    }
    Ok(json!({
        "benchmark": "media",
        "packets_per_second_per_direction": 50,
        "seconds": args.seconds,
        "relay_threads": args.relay_threads,
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "runs": results,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_calls_relay_without_loss_in_both_modes() {
        let json = run(&MediaArgs {
            calls: vec![10],
            seconds: 1,
            relay_threads: 1,
            srtp: true,
        })
        .unwrap();
        let run = &json["runs"][0];
        for mode in ["engine", "bare", "engine_srtp"] {
            let figures = &run[mode];
            // 10 calls, 2 phones each, 50 packets/s, over 1 s.
            assert_eq!(figures["sent"], 1_000, "{figures}");
            assert_eq!(figures["received"], 1_000, "{figures}");
            assert_eq!(figures["loss"], 0.0);
            let p99 = figures["latency_p99_us"].as_u64().unwrap();
            assert!(p99 > 0 && p99 < 200_000, "{p99}");
            assert!(figures["relay_cpu_ns_per_packet"].as_f64().unwrap() >= 0.0);
        }
        assert!(run["ratios"]["p99_latency_engine_over_bare"].as_f64().unwrap() > 0.0);
        assert!(
            run["ratios"]["cpu_per_packet_srtp_over_engine"]
                .as_f64()
                .is_some()
        );
    }

    #[test]
    fn relay_threads_are_found_by_name() {
        let relay = Relay::start(Mode::Bare, Vec::new(), 1).unwrap();
        // Busy-loop a little on a thread of that name so its CPU time shows.
        let worker = std::thread::Builder::new()
            .name(RELAY_THREAD.into())
            .spawn(|| {
                let start = Instant::now();
                let mut x = 0u64;
                while start.elapsed() < Duration::from_millis(60) {
                    x = x.wrapping_add(std::hint::black_box(1));
                }
                (x, threads_cpu_seconds(RELAY_THREAD))
            })
            .unwrap();
        let (_, cpu) = worker.join().unwrap();
        assert!(cpu > 0.0, "{cpu}");
        drop(relay);
    }
}
