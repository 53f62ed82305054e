//! RTP source rules and the unconfirmed-dialog send budget against real UDP sockets: strangers on other
//! loopback addresses spray a leg, a phone behind "NAT" sends from the signalling IP, an INVITE that is never
//! acknowledged gets only the configured budget of audio, and a voicemail of silence says so.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the test's answer
mod support;

use media::dtmf::DtmfDigit;
use media::engine::{LatchPolicy, LegEvent, MediaConfig, MediaEngine, UnconfirmedSendLimit};
use media::g711::G711;
use media::prompt::Prompt;
use media::sdp::{MediaDirection, Negotiated};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use support::{DEADLINE, Phone};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::Receiver;

fn engine(port_min: u16) -> MediaEngine {
    MediaEngine::new(MediaConfig {
        port_min,
        port_max: port_min + 99,
        recordings_dir: std::env::temp_dir()
            .join(format!("media-source-rules-{}-{port_min}", std::process::id())),
        rtcp_interval: Duration::from_secs(3600),
        ..MediaConfig::default()
    })
    .unwrap()
}

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

/// A phone bound to another loopback address (the whole of 127/8 is local on Linux).
async fn phone_at(ip: [u8; 4], ssrc: u32) -> Phone {
    let mut phone = Phone::new(ssrc).await;
    phone.socket = UdpSocket::bind(SocketAddr::from((ip, 0))).await.unwrap();
    phone
}

async fn next_event(events: &mut Receiver<LegEvent>) -> LegEvent {
    tokio::time::timeout(DEADLINE, events.recv())
        .await
        .expect("no event before the deadline")
        .expect("leg ended")
}

async fn next_digit(events: &mut Receiver<LegEvent>) -> DtmfDigit {
    loop {
        if let LegEvent::Dtmf { digit, .. } = next_event(events).await {
            return *digit.expose();
        }
    }
}

/// Nothing is waiting in `phone`'s socket (everything the engine sent is already there: loopback delivers
/// within the send call).
fn has_nothing_queued(phone: &Phone) -> bool {
    let mut buf = [0u8; 1500];
    phone.socket.try_recv_from(&mut buf).is_err()
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
}

#[tokio::test]
async fn strangers_spraying_right_after_set_remote_never_hear_the_call() {
    let engine = engine(43000);
    let telemetry = telemetry::Telemetry::new();
    engine.metrics().register(&telemetry);
    let (a, mut a_events) = engine.allocate_leg().unwrap();
    let (b, _b_events) = engine.allocate_leg().unwrap();
    let mut phone_a = Phone::new(0xa).await;
    let mut phone_b = Phone::new(0xb).await;
    a.set_remote_with_policy(negotiated(phone_a.addr()), LatchPolicy::sdp_only());
    b.set_remote_with_policy(negotiated(phone_b.addr()), LatchPolicy::sdp_only());
    a.confirm();
    b.confirm();
    let _bridge = engine.bridge(&a, &b);
    // Before the real phone says anything: one stranger on another loopback address, one on another port
    // of the phone's own address, both spraying valid RTP and a digit.
    let mut far = phone_at([127, 0, 0, 2], 0xbad1).await;
    let mut near = Phone::new(0xbad2).await;
    for stranger in [&mut far, &mut near] {
        for _ in 0..10 {
            stranger.send_audio(a.local_addr(), 0, &[66; 160]).await;
        }
        stranger.send_digit(a.local_addr(), 101, DtmfDigit::D0, 60).await;
    }
    // The real phone latches, and both directions flow.
    phone_a.send_audio(a.local_addr(), 0, &[1; 160]).await;
    assert_eq!(
        next_event(&mut a_events).await,
        LegEvent::Latched { peer: phone_a.addr() }
    );
    assert_eq!(
        phone_b.recv().await.payload,
        vec![1; 160],
        "the first thing B hears is A"
    );
    for i in 0..20u8 {
        phone_b.send_audio(b.local_addr(), 0, &[i; 160]).await;
        assert_eq!(phone_a.recv().await.payload, vec![i; 160]);
    }
    // More spraying after the latch changes nothing; the phone's digit is the first reported.
    far.send_audio(a.local_addr(), 0, &[67; 160]).await;
    phone_a.send_digit(a.local_addr(), 101, DtmfDigit::D5, 60).await;
    assert_eq!(next_digit(&mut a_events).await, DtmfDigit::D5);
    assert!(
        has_nothing_queued(&far) && has_nothing_queued(&near),
        "a stranger got audio"
    );
    // B hears A's digit (5 telephone-event packets for 60 ms) and nothing of the strangers.
    for _ in 0..5 {
        assert_eq!(phone_b.recv().await.payload_type, 101);
    }
    assert!(has_nothing_queued(&phone_b), "B heard a stranger");
    a.close().await;
    // 2 strangers x (10 audio + 5 digit packets) before the latch, and 1 after.
    assert_eq!(metric(&telemetry.encode(), "media_rtp_foreign_packets_total"), 31);
}

#[tokio::test]
async fn behind_nat_the_signalling_ip_latches_once_and_keeps_it_across_reoffers() {
    let engine = engine(43100);
    let (a, mut a_events) = engine.allocate_leg().unwrap();
    let (b, _b_events) = engine.allocate_leg().unwrap();
    let phone_b = Phone::new(0xb).await;
    // The SDP names a private address nobody here uses; the phone's NAT sends from 127.0.0.3.
    let private: SocketAddr = "127.0.0.4:9".parse().unwrap();
    let nat_ip = IpAddr::from([127, 0, 0, 3]);
    let mut phone = phone_at([127, 0, 0, 3], 0xa).await;
    let mut same_ip_other_port = phone_at([127, 0, 0, 3], 0xbad).await;
    a.set_remote_with_policy(negotiated(private), LatchPolicy::with_signalling_ip(nat_ip));
    a.confirm();
    b.set_remote(negotiated(phone_b.addr()));
    let _bridge = engine.bridge(&a, &b);
    phone.send_audio(a.local_addr(), 0, &[1; 160]).await;
    assert_eq!(
        next_event(&mut a_events).await,
        LegEvent::Latched { peer: phone.addr() }
    );
    assert_eq!(phone_b.recv().await.payload, vec![1; 160]);
    // Audio to the phone goes to where it really is, not to the SDP's private address.
    let mut phone_b = phone_b;
    phone_b.send_audio(b.local_addr(), 0, &[2; 160]).await;
    assert_eq!(phone.recv().await.payload, vec![2; 160]);
    // A re-offer naming the same address (hold, codec change) keeps the latch: the other port of the NAT's
    // IP, allowed before the latch, cannot take it over.
    a.set_remote_with_policy(negotiated(private), LatchPolicy::with_signalling_ip(nat_ip));
    same_ip_other_port.send_audio(a.local_addr(), 0, &[66; 160]).await;
    phone.send_audio(a.local_addr(), 0, &[3; 160]).await;
    assert_eq!(phone_b.recv().await.payload, vec![3; 160]);
    phone_b.send_audio(b.local_addr(), 0, &[4; 160]).await;
    assert_eq!(phone.recv().await.payload, vec![4; 160]);
    assert!(has_nothing_queued(&same_ip_other_port));
    // A re-offer with a new address opens the latch for the new offer/answer only.
    let moved = "127.0.0.5:9".parse().unwrap();
    a.set_remote_with_policy(negotiated(moved), LatchPolicy::with_signalling_ip(nat_ip));
    same_ip_other_port.send_audio(a.local_addr(), 0, &[5; 160]).await;
    assert_eq!(phone_b.recv().await.payload, vec![5; 160]);
}

#[tokio::test]
async fn rtcp_from_strangers_is_counted_and_dropped() {
    use media::rtcp::{RtcpCompound, RtcpPacket, SenderReport};
    let engine = MediaEngine::new(MediaConfig {
        port_min: 43200,
        port_max: 43299,
        rtcp_interval: Duration::from_millis(100),
        ..MediaConfig::default()
    })
    .unwrap();
    let telemetry = telemetry::Telemetry::new();
    engine.metrics().register(&telemetry);
    let (leg, mut events) = engine.allocate_leg().unwrap();
    let mut phone = Phone::new(0x77).await;
    leg.set_remote_with_policy(negotiated(phone.addr()), LatchPolicy::sdp_only());
    leg.confirm();
    let rtcp_port = SocketAddr::new(leg.local_addr().ip(), leg.local_addr().port() + 1);
    let sr = RtcpCompound {
        packets: vec![RtcpPacket::SenderReport(SenderReport {
            ssrc: 0x77,
            ..SenderReport::default()
        })],
    }
    .to_bytes()
    .unwrap();
    let stranger = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    for _ in 0..3 {
        stranger.send_to(&sr, rtcp_port).await.unwrap();
    }
    // The phone latches RTP; RTCP from its IP is then accepted (and latched), while the stranger's is not.
    phone.send_audio(leg.local_addr(), 0, &[1; 160]).await;
    assert!(matches!(next_event(&mut events).await, LegEvent::Latched { .. }));
    stranger.send_to(&sr, rtcp_port).await.unwrap();
    let phone_rtcp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    phone_rtcp.send_to(&sr, rtcp_port).await.unwrap();
    // The leg's reports now go to the phone's RTCP socket: proof that it read the datagrams in order, the
    // stranger's fourth before the phone's.
    let mut buf = [0u8; 1500];
    let (len, _) = tokio::time::timeout(DEADLINE, phone_rtcp.recv_from(&mut buf))
        .await
        .expect("no report before the deadline")
        .unwrap();
    assert!(RtcpCompound::parse(&buf[..len]).is_ok());
    assert!(
        stranger.try_recv_from(&mut buf).is_err(),
        "the stranger got a report"
    );
    leg.close().await;
    let text = telemetry.encode();
    assert_eq!(metric(&text, "media_rtcp_foreign_packets_total"), 4, "{text}");
    assert_eq!(metric(&text, "media_rtp_foreign_packets_total"), 0);
}

#[tokio::test]
async fn an_unconfirmed_leg_sends_only_its_budget_until_confirmed() {
    let engine = MediaEngine::new(MediaConfig {
        port_min: 43300,
        port_max: 43399,
        rtcp_interval: Duration::from_secs(3600),
        unconfirmed_send_limit: UnconfirmedSendLimit {
            packets: 5,
            duration: Duration::from_secs(3600),
        },
        ..MediaConfig::default()
    })
    .unwrap();
    let telemetry = telemetry::Telemetry::new();
    engine.metrics().register(&telemetry);
    let (leg, mut events) = engine.allocate_leg().unwrap();
    // The INVITE's SDP names a "victim" that never answers and never ACKs.
    let victim = Phone::new(1).await;
    leg.set_remote_with_policy(negotiated(victim.addr()), LatchPolicy::sdp_only());
    assert!(!leg.is_confirmed());
    let greeting = Prompt::from_samples("greeting", G711::Pcmu, &vec![3000; 160 * 30]);
    leg.play(vec![greeting.clone()], false, false);
    assert_eq!(next_event(&mut events).await, LegEvent::PlaybackFinished);
    for _ in 0..5 {
        victim.recv().await;
    }
    assert!(has_nothing_queued(&victim), "more than the budget was sent");
    assert_eq!(
        metric(&telemetry.encode(), "media_unconfirmed_sends_dropped_total"),
        25
    );
    // The ACK arrives: the next prompt plays in full.
    leg.confirm();
    assert!(leg.is_confirmed());
    leg.play(vec![greeting], false, false);
    for _ in 0..30 {
        assert_eq!(victim.recv().await.payload.len(), 160);
    }
    assert_eq!(next_event(&mut events).await, LegEvent::PlaybackFinished);
}

#[tokio::test]
async fn an_unconfirmed_leg_relays_only_its_budget() {
    let engine = MediaEngine::new(MediaConfig {
        port_min: 43400,
        port_max: 43499,
        rtcp_interval: Duration::from_secs(3600),
        unconfirmed_send_limit: UnconfirmedSendLimit {
            packets: 3,
            duration: Duration::from_secs(3600),
        },
        ..MediaConfig::default()
    })
    .unwrap();
    let (a, mut a_events) = engine.allocate_leg().unwrap();
    let (b, _b_events) = engine.allocate_leg().unwrap();
    let mut phone_a = Phone::new(0xa).await;
    let victim = Phone::new(0xb).await;
    a.set_remote(negotiated(phone_a.addr()));
    b.set_remote_with_policy(negotiated(victim.addr()), LatchPolicy::sdp_only());
    let _bridge = engine.bridge(&a, &b);
    for i in 0..10u8 {
        phone_a.send_audio(a.local_addr(), 0, &[i; 160]).await;
    }
    phone_a.send_digit(a.local_addr(), 101, DtmfDigit::D2, 60).await;
    assert_eq!(next_digit(&mut a_events).await, DtmfDigit::D2);
    for i in 0..3u8 {
        assert_eq!(victim.recv().await.payload, vec![i; 160]);
    }
    assert!(has_nothing_queued(&victim));
}

async fn record_voicemail(port_min: u16, sample: i16) -> media::engine::RecordingSummary {
    let engine = engine(port_min);
    let (leg, mut events) = engine.allocate_leg().unwrap();
    let mut phone = Phone::new(9).await;
    leg.set_remote(negotiated(phone.addr()));
    let recording = engine.record_leg(&leg, "voicemail").unwrap();
    let payload = [G711::Pcmu.encode(sample); 160];
    for _ in 0..50 {
        phone.send_audio(leg.local_addr(), 0, &payload).await;
    }
    // The digit after the audio proves the leg has handed every frame to the recorder.
    phone
        .send_digit(leg.local_addr(), 101, DtmfDigit::Pound, 60)
        .await;
    assert_eq!(next_digit(&mut events).await, DtmfDigit::Pound);
    let summary = recording.stop_with_summary().await.unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&summary.path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a voicemail is readable by its owner only");
        let dir = summary.path.parent().unwrap();
        assert_eq!(
            std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
    std::fs::remove_dir_all(summary.path.parent().unwrap()).unwrap();
    summary
}

#[tokio::test]
async fn a_voicemail_of_silence_says_it_is_silent() {
    let silent = record_voicemail(43500, 0).await;
    assert!(silent.is_silent(), "{silent:?}");
    assert!(silent.activity.duration_ms >= 1000, "{silent:?}");
    let spoken = record_voicemail(43600, 6000).await;
    assert!(!spoken.is_silent(), "{spoken:?}");
    // 50 packets of 20 ms; the meter's 20 ms blocks need not align with the packets.
    let active = spoken.activity.channels[0].active_ms;
    assert!((1000..=1020).contains(&active), "{spoken:?}");
}
