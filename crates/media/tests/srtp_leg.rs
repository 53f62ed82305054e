//! An engine leg speaking SDES-SRTP with a phone: keys agreed through `a=crypto` offer/answer, audio relayed
//! between an SRTP phone and a plain one, forgeries and replays dropped and counted, RTCP sent as SRTCP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the test's answer
mod support;

use media::engine::{LegEvent, MediaConfig, MediaEngine};
use media::g711::G711;
use media::rtp::RtpPacket;
use media::sdes::{CryptoAttribute, answer_crypto, crypto_attribute_format, crypto_attribute_parse};
use media::sdp::{MediaDirection, Negotiated};
use media::srtp::{MAX_RTP_OVERHEAD, MasterKey, SrtpReceiver, SrtpSender, SrtpSuite};
use std::net::SocketAddr;
use std::time::Duration;
use support::{DEADLINE, Phone};
use tokio::net::UdpSocket;

fn negotiated(remote: SocketAddr) -> Negotiated {
    Negotiated {
        law: G711::Pcmu,
        payload_type: 0,
        telephone_event: Some(101),
        remote: Some(remote),
        direction: MediaDirection::SendRecv,
        ptime_ms: 20,
    }
}

/// A phone that speaks SRTP with its own key.
struct SecurePhone {
    socket: UdpSocket,
    sender: SrtpSender,
    receiver: SrtpReceiver,
    sequence: u16,
}

impl SecurePhone {
    fn protect(&mut self, payload: &[u8]) -> Vec<u8> {
        let plain = RtpPacket::new(0, self.sequence, u32::from(self.sequence) * 160, 0x5ec, payload).to_vec();
        self.sequence = self.sequence.wrapping_add(1);
        let mut buf = plain.clone();
        buf.resize(plain.len() + MAX_RTP_OVERHEAD, 0);
        let len = self.sender.protect_rtp(&mut buf, plain.len()).unwrap();
        buf.truncate(len);
        buf
    }

    async fn recv_plain(&mut self) -> Vec<u8> {
        let mut buf = [0u8; 1500];
        let len = tokio::time::timeout(DEADLINE, self.socket.recv(&mut buf))
            .await
            .expect("no packet before the deadline")
            .unwrap();
        let len = self
            .receiver
            .unprotect_rtp(&mut buf[..len])
            .expect("authentic SRTP");
        RtpPacket::parse(&buf[..len]).unwrap().payload.to_vec()
    }
}

#[tokio::test]
async fn an_srtp_phone_and_a_plain_phone_hear_each_other_and_forgeries_are_dropped() {
    let engine = MediaEngine::new(MediaConfig {
        port_min: 43700,
        port_max: 43799,
        rtcp_interval: Duration::from_millis(100),
        ..MediaConfig::default()
    })
    .unwrap();
    let telemetry = telemetry::Telemetry::new();
    engine.metrics().register(&telemetry);
    let (a, mut a_events) = engine.allocate_leg().unwrap();
    let (b, _b_events) = engine.allocate_leg().unwrap();

    // The phone offers its key; the engine answers with one of its own.
    let phone_key = MasterKey::generate();
    let offer = crypto_attribute_format(&CryptoAttribute::new(
        1,
        SrtpSuite::AesCm128HmacSha1_80,
        phone_key.clone(),
    ));
    let (answer, keys) = answer_crypto(&[crypto_attribute_parse(&offer).unwrap()]).unwrap();
    let answer = crypto_attribute_parse(&crypto_attribute_format(&answer)).unwrap();
    let engine_key = answer.usable().unwrap().1.clone();
    let mut secure = SecurePhone {
        socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        sender: SrtpSender::new(SrtpSuite::AesCm128HmacSha1_80, &phone_key),
        receiver: SrtpReceiver::new(SrtpSuite::AesCm128HmacSha1_80, &engine_key),
        sequence: 100,
    };
    let mut plain = Phone::new(0xb).await;
    a.set_srtp(Some(keys));
    a.set_remote(negotiated(secure.socket.local_addr().unwrap()));
    b.set_remote(negotiated(plain.addr()));
    let _bridge = engine.bridge(&a, &b);

    // SRTP phone -> plain phone.
    for i in 0..5u8 {
        let packet = secure.protect(&[i; 160]);
        secure.socket.send_to(&packet, a.local_addr()).await.unwrap();
        assert_eq!(plain.recv().await.payload, vec![i; 160]);
    }
    assert!(matches!(a_events.recv().await, Some(LegEvent::Latched { .. })));
    // Plain phone -> SRTP phone, encrypted with the engine's key.
    for i in 0..5u8 {
        plain.send_audio(b.local_addr(), 0, &[0x40 + i; 160]).await;
        assert_eq!(secure.recv_plain().await, vec![0x40 + i; 160]);
    }
    // A forged packet (from the right address, wrong key) and a replayed one are dropped; the next genuine
    // packet is the next thing the plain phone hears.
    let mut forger = SrtpSender::new(SrtpSuite::AesCm128HmacSha1_80, &MasterKey::generate());
    let mut forged = RtpPacket::new(0, 500, 80000, 0x5ec, &[0x66; 160]).to_vec();
    let forged_len = forged.len();
    forged.resize(forged_len + MAX_RTP_OVERHEAD, 0);
    let forged_len = forger.protect_rtp(&mut forged, forged_len).unwrap();
    secure
        .socket
        .send_to(&forged[..forged_len], a.local_addr())
        .await
        .unwrap();
    let genuine = secure.protect(&[0x77; 160]);
    secure.socket.send_to(&genuine, a.local_addr()).await.unwrap();
    secure.socket.send_to(&genuine, a.local_addr()).await.unwrap();
    let next = secure.protect(&[0x78; 160]);
    secure.socket.send_to(&next, a.local_addr()).await.unwrap();
    assert_eq!(plain.recv().await.payload, vec![0x77; 160]);
    assert_eq!(
        plain.recv().await.payload,
        vec![0x78; 160],
        "the replay was relayed"
    );
    // The phone's RTCP socket sends an SRTCP sender report; the leg accepts it (authentic, from the latched
    // peer's IP) and its own reports, SRTCP too, go there from then on.
    let phone_rtcp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sr = media::rtcp::RtcpCompound {
        packets: vec![media::rtcp::RtcpPacket::SenderReport(media::rtcp::SenderReport {
            ssrc: 0x5ec,
            ..Default::default()
        })],
    }
    .to_bytes()
    .unwrap();
    let mut protected = sr.clone();
    protected.resize(sr.len() + media::srtp::RTCP_OVERHEAD, 0);
    let len = secure.sender.protect_rtcp(&mut protected, sr.len()).unwrap();
    let leg_rtcp = SocketAddr::new(a.local_addr().ip(), a.local_addr().port() + 1);
    phone_rtcp.send_to(&protected[..len], leg_rtcp).await.unwrap();
    let mut buf = [0u8; 1500];
    let len = tokio::time::timeout(DEADLINE, phone_rtcp.recv(&mut buf))
        .await
        .expect("no RTCP before the deadline")
        .unwrap();
    let plain_len = secure
        .receiver
        .unprotect_rtcp(&mut buf[..len])
        .expect("authentic SRTCP");
    assert!(media::rtcp::RtcpCompound::parse(&buf[..plain_len]).is_ok());
    a.close().await;
    let text = telemetry.encode();
    assert!(
        text.contains("media_srtp_rejected_total{reason=\"unauthentic\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("media_srtp_rejected_total{reason=\"replayed\"} 1"),
        "{text}"
    );
}
