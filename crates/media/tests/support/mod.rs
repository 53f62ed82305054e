//! Test peers: a UDP "phone" that sends and receives RTP, and a reader for the RTP inside pcap captures.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the test's answer
#![allow(dead_code)] // each test file uses a different part

use media::rtp::RtpPacket;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::UdpSocket;

/// Longest a test waits for a packet or event before failing (a deadline, not a synchronisation sleep).
pub const DEADLINE: Duration = Duration::from_secs(5);

/// A UDP socket acting as a phone.
pub struct Phone {
    pub socket: UdpSocket,
    seq: u16,
    ts: u32,
    pub ssrc: u32,
}

/// An owned copy of a received RTP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub marker: bool,
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

impl Phone {
    pub async fn new(ssrc: u32) -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        Self {
            socket,
            seq: 1000,
            ts: 8000,
            ssrc,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Sends one 20 ms audio packet.
    pub async fn send_audio(&mut self, to: SocketAddr, payload_type: u8, payload: &[u8]) {
        let bytes = RtpPacket::new(payload_type, self.seq, self.ts, self.ssrc, payload).to_vec();
        self.socket.send_to(&bytes, to).await.unwrap();
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(payload.len() as u32);
    }

    /// Skips a packet (simulated loss).
    pub fn lose_one(&mut self, samples: u32) {
        self.seq = self.seq.wrapping_add(1);
        self.ts = self.ts.wrapping_add(samples);
    }

    /// Sends a digit as RFC 4733 events with payload type `pt`.
    pub async fn send_digit(&mut self, to: SocketAddr, pt: u8, digit: media::dtmf::DtmfDigit, ms: u32) {
        let start = self.ts;
        for packet in media::dtmf::rfc4733::digit_packets(digit, ms, 10) {
            let payload = packet.event.to_bytes();
            let bytes = RtpPacket::new(pt, self.seq, start, self.ssrc, &payload)
                .with_marker(packet.marker)
                .to_vec();
            self.socket.send_to(&bytes, to).await.unwrap();
            self.seq = self.seq.wrapping_add(1);
        }
        self.ts = self.ts.wrapping_add(ms * 8);
    }

    /// Waits for the next RTP packet.
    pub async fn recv(&self) -> Received {
        let mut buf = [0u8; 1500];
        loop {
            let (len, _) = tokio::time::timeout(DEADLINE, self.socket.recv_from(&mut buf))
                .await
                .expect("no packet before the deadline")
                .unwrap();
            if let Ok(p) = RtpPacket::parse(&buf[..len]) {
                return Received {
                    marker: p.marker,
                    payload_type: p.payload_type,
                    sequence: p.sequence,
                    timestamp: p.timestamp,
                    ssrc: p.ssrc,
                    payload: p.payload.to_vec(),
                };
            }
        }
    }
}

/// One UDP datagram from a capture.
#[derive(Debug, Clone)]
pub struct CapturedDatagram {
    pub time_us: i64,
    pub source_port: u16,
    pub destination_port: u16,
    pub payload: Vec<u8>,
}

/// Reads the UDP datagrams of a classic pcap file (Ethernet or Linux cooked capture, IPv4).
pub fn read_pcap_udp(bytes: &[u8]) -> Result<Vec<CapturedDatagram>, String> {
    let header = bytes.get(..24).ok_or("shorter than the 24-byte global header")?;
    let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let (little, nanos) = match magic {
        0xa1b2c3d4 => (true, false),
        0xa1b23c4d => (true, true),
        0xd4c3b2a1 => (false, false),
        0x4d3cb2a1 => (false, true),
        _ => return Err(format!("not a pcap file (magic {magic:#x})")),
    };
    let u32_at = |b: &[u8], at: usize| -> Option<u32> {
        let s: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        })
    };
    let link_type = u32_at(header, 20).ok_or("no link type")?;
    let link_header = match link_type {
        1 => 14,   // Ethernet
        113 => 16, // Linux cooked
        _ => return Err(format!("unsupported link type {link_type}")),
    };
    let mut out = Vec::new();
    let mut offset = 24;
    while offset + 16 <= bytes.len() {
        let record = &bytes[offset..offset + 16];
        let secs = u32_at(record, 0).ok_or("record")?;
        let frac = u32_at(record, 4).ok_or("record")?;
        let included = u32_at(record, 8).ok_or("record")? as usize;
        let frame = bytes
            .get(offset + 16..offset + 16 + included)
            .ok_or("truncated record")?;
        offset += 16 + included;
        let time_us = i64::from(secs) * 1_000_000
            + if nanos {
                i64::from(frac) / 1000
            } else {
                i64::from(frac)
            };
        let Some(ip) = frame.get(link_header..) else {
            continue;
        };
        if ip.first().map(|b| b >> 4) != Some(4) || ip.get(9) != Some(&17) {
            continue; // not IPv4 UDP
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let Some(udp) = ip.get(ihl..) else { continue };
        let (Some(sp), Some(dp), Some(len)) = (udp.get(0..2), udp.get(2..4), udp.get(4..6)) else {
            continue;
        };
        let udp_len = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let Some(payload) = udp.get(8..udp_len.max(8)) else {
            continue;
        };
        out.push(CapturedDatagram {
            time_us,
            source_port: u16::from_be_bytes([sp[0], sp[1]]),
            destination_port: u16::from_be_bytes([dp[0], dp[1]]),
            payload: payload.to_vec(),
        });
    }
    Ok(out)
}
