//! Writes RTP audio as a pcap file that SIPp replays with `play_pcap_audio`: G.711 µ-law packets of
//! 20 ms, timed by their pcap timestamps. Tests use it to make a telephone line sound like a person
//! ("Hello?" then silence) or an answering machine (a long greeting) without shipping binary files.

use std::io::Write;
use std::path::Path;

/// One stretch of audio: a tone standing in for speech, or silence.
#[derive(Debug, Clone, Copy)]
pub enum Audio {
    Voice { ms: u32 },
    Silence { ms: u32 },
}

const SAMPLES: usize = 160;

/// Writes `audio` as RTP (PCMU, payload type 0) in an Ethernet/IPv4/UDP pcap at `path`.
pub fn write_rtp_pcap(path: &Path, audio: &[Audio]) -> std::io::Result<()> {
    let mut out = Vec::new();
    // Global header: magic, version 2.4, zone 0, accuracy 0, snaplen, Ethernet.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let mut seq: u16 = 0;
    let mut sample_clock: u32 = 0;
    let mut phase = 0f64;
    for part in audio {
        let (voice, ms) = match *part {
            Audio::Voice { ms } => (true, ms),
            Audio::Silence { ms } => (false, ms),
        };
        for _ in 0..ms / 20 {
            let mut payload = [0xffu8; SAMPLES];
            if voice {
                for byte in payload.iter_mut() {
                    phase += 2.0 * std::f64::consts::PI * 440.0 / 8000.0;
                    *byte = media::g711::G711::Pcmu.encode((phase.sin() * 8000.0) as i16);
                }
            }
            let mut rtp = vec![0x80, 0x00];
            rtp.extend_from_slice(&seq.to_be_bytes());
            rtp.extend_from_slice(&sample_clock.to_be_bytes());
            rtp.extend_from_slice(&0x5eed_0001u32.to_be_bytes());
            rtp.extend_from_slice(&payload);
            let udp_len = 8 + rtp.len();
            let ip_len = 20 + udp_len;
            let mut frame = Vec::with_capacity(14 + ip_len);
            frame.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 1, 0x08, 0x00]);
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&(ip_len as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1]);
            let sum = checksum(&ip);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            frame.extend_from_slice(&ip);
            frame.extend_from_slice(&6000u16.to_be_bytes());
            frame.extend_from_slice(&6002u16.to_be_bytes());
            frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
            frame.extend_from_slice(&0u16.to_be_bytes());
            frame.extend_from_slice(&rtp);
            let micros = u64::from(sample_clock) * 125;
            out.extend_from_slice(&((micros / 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&((micros % 1_000_000) as u32).to_le_bytes());
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(&frame);
            seq = seq.wrapping_add(1);
            sample_clock = sample_clock.wrapping_add(SAMPLES as u32);
        }
    }
    std::fs::File::create(path)?.write_all(&out)
}

fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}
