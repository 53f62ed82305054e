//! Load check of the bridge relay: N bridged G.711 calls, each phone sending 50 packets/s, measured beside a
//! bare UDP relay doing the least possible work (one task per socket, forward as received).
//!
//! `cargo run --release -p media --example relay_load -- [calls] [seconds] [engine|bare]`
//! Prints one JSON line: packets sent and received, loss, one-way latency percentiles, and process CPU time
//! per relayed packet (phones and blaster included, the same in both modes).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a measurement tool: failing loudly is right

use media::engine::{MediaConfig, MediaEngine};
use media::g711::G711;
use media::rtp::RtpPacket;
use media::sdp::{MediaDirection, Negotiated};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

fn cpu_seconds() -> f64 {
    // utime and stime, fields 14 and 15 of /proc/self/stat, in clock ticks (100 per second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

struct Counters {
    /// (send time, latency) of every packet received, in microseconds since start.
    samples: parking_lot::Mutex<Vec<(u64, u32)>>,
}

async fn phone_receiver(socket: Arc<UdpSocket>, start: Instant, counters: Arc<Counters>) {
    let mut buf = [0u8; 1500];
    let mut local = Vec::with_capacity(4096);
    loop {
        let Ok(len) = socket.recv(&mut buf).await else {
            return;
        };
        let Ok(packet) = RtpPacket::parse(&buf[..len]) else {
            continue;
        };
        let Some(stamp) = packet.payload.get(..8) else {
            continue;
        };
        let sent_us = u64::from_le_bytes(stamp.try_into().unwrap());
        if sent_us == u64::MAX {
            break; // end marker
        }
        let now_us = start.elapsed().as_micros() as u64;
        local.push((sent_us, now_us.saturating_sub(sent_us) as u32));
    }
    counters.samples.lock().extend(local);
}

async fn bare_relay(from: Arc<UdpSocket>, out: Arc<UdpSocket>, to: SocketAddr) {
    let mut buf = [0u8; 1500];
    loop {
        let Ok(len) = from.recv(&mut buf).await else {
            return;
        };
        let _ = out.try_send_to(&buf[..len], to);
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let calls: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(100);
    let seconds: u64 = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(5);
    let mode = args.get(3).cloned().unwrap_or_else(|| "engine".into());

    let start = Instant::now();
    let counters = Arc::new(Counters {
        samples: parking_lot::Mutex::new(Vec::new()),
    });
    let engine = MediaEngine::new(MediaConfig {
        // Below the kernel's ephemeral range, where the phones' sockets land.
        port_min: 10000,
        port_max: (10000 + calls * 6).min(32000) as u16,
        ..MediaConfig::default()
    })
    .unwrap();

    // (phone socket, where it sends) for both ends of every call.
    let mut senders: Vec<(Arc<UdpSocket>, SocketAddr)> = Vec::new();
    let mut keep_legs = Vec::new();
    let mut keep_bridges = Vec::new();
    let mut receivers = Vec::new();
    for _ in 0..calls {
        let pa = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let pb = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let (a_target, b_target) = if mode == "bare" {
            let ra = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
            let rb = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
            tokio::spawn(bare_relay(ra.clone(), rb.clone(), pb.local_addr().unwrap()));
            tokio::spawn(bare_relay(rb.clone(), ra.clone(), pa.local_addr().unwrap()));
            (ra.local_addr().unwrap(), rb.local_addr().unwrap())
        } else {
            let (a, ea) = engine.allocate_leg().unwrap();
            let (b, eb) = engine.allocate_leg().unwrap();
            let negotiated = |remote| Negotiated {
                law: G711::Pcmu,
                payload_type: 0,
                telephone_event: Some(101),
                remote: Some(remote),
                direction: MediaDirection::SendRecv,
                ptime_ms: 20,
            };
            a.set_remote(negotiated(pa.local_addr().unwrap()));
            b.set_remote(negotiated(pb.local_addr().unwrap()));
            keep_bridges.push(engine.bridge(&a, &b));
            let targets = (a.local_addr(), b.local_addr());
            keep_legs.push((a, b, ea, eb));
            targets
        };
        receivers.push(tokio::spawn(phone_receiver(pa.clone(), start, counters.clone())));
        receivers.push(tokio::spawn(phone_receiver(pb.clone(), start, counters.clone())));
        senders.push((pa, a_target));
        senders.push((pb, b_target));
    }

    // Blaster: every 20 ms each phone sends one packet carrying its send time.
    let sent = Arc::new(AtomicU64::new(0));
    let total_ticks = (seconds + 1) * 50;
    let warmup_ticks = 50;
    let mut interval = tokio::time::interval(Duration::from_millis(20));
    let mut payload = [0xffu8; 160];
    let mut packet = [0u8; 172];
    let mut cpu_at_start = 0.0;
    let mut window_start_us = 0;
    for tick in 0..total_ticks {
        interval.tick().await;
        if tick == warmup_ticks {
            window_start_us = start.elapsed().as_micros() as u64;
            cpu_at_start = cpu_seconds();
        }
        for (i, (socket, target)) in senders.iter().enumerate() {
            let now_us = start.elapsed().as_micros() as u64;
            payload[..8].copy_from_slice(&now_us.to_le_bytes());
            let rtp = RtpPacket::new(0, tick as u16, (tick * 160) as u32, i as u32, &payload);
            let len = rtp.write_to(&mut packet).unwrap();
            if socket.try_send_to(&packet[..len], *target).is_ok() && tick >= warmup_ticks {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    let window_end_us = start.elapsed().as_micros() as u64;
    // Let the last packets land (a drain period of the measurement, not synchronisation).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu = cpu_seconds() - cpu_at_start;
    payload[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    for (socket, target) in &senders {
        let rtp = RtpPacket::new(0, 0, 0, 0, &payload);
        let len = rtp.write_to(&mut packet).unwrap();
        let _ = socket.send_to(&packet[..len], *target).await;
    }
    for r in receivers {
        let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
    }
    let sent = sent.load(Ordering::Relaxed);
    let samples = std::mem::take(&mut *counters.samples.lock());
    let mut latencies: Vec<u32> = samples
        .iter()
        .filter(|(sent_at, _)| (window_start_us..=window_end_us).contains(sent_at))
        .map(|(_, latency)| *latency)
        .collect();
    let received = latencies.len() as u64;
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{{\"mode\":\"{mode}\",\"calls\":{calls},\"seconds\":{seconds},\"sent\":{sent},\"received\":{received},\
\"loss\":{:.6},\"latency_p50_us\":{},\"latency_p99_us\":{},\"latency_max_us\":{},\"cpu_s\":{cpu:.2},\
\"cpu_ns_per_packet\":{:.0}}}",
        1.0 - received as f64 / sent.max(1) as f64,
        pct(0.50),
        pct(0.99),
        latencies.last().copied().unwrap_or(0),
        cpu * 1e9 / received.max(1) as f64,
    );
    drop(keep_bridges);
    drop(keep_legs);
}
