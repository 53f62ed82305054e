//! The engine against real UDP sockets acting as phones: bridging with and without transcoding, RFC 4733
//! digits, latching, prompts, hold with music, recording.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the test's answer
mod support;

use media::dtmf::DtmfDigit;
use media::engine::{BridgeSide, DtmfSource, LatchPolicy, LegEvent, MediaConfig, MediaEngine, RtpLeg};
use media::g711::{G711, alaw_to_ulaw, ulaw_to_alaw};
use media::prompt::Prompt;
use media::sdp::{MediaDirection, Negotiated};
use std::net::SocketAddr;
use support::{DEADLINE, Phone};
use tokio::sync::mpsc::Receiver;

fn engine(port_min: u16, dir: &str) -> MediaEngine {
    MediaEngine::new(MediaConfig {
        port_min,
        port_max: port_min + 99,
        recordings_dir: std::env::temp_dir().join(format!("media-engine-test-{}-{dir}", std::process::id())),
        ..MediaConfig::default()
    })
    .unwrap()
}

fn negotiated(law: G711, remote: SocketAddr) -> Negotiated {
    Negotiated {
        law,
        payload_type: law.payload_type(),
        telephone_event: Some(101),
        remote: Some(remote),
        direction: MediaDirection::SendRecv,
        ptime_ms: 20,
    }
}

async fn next_event(events: &mut Receiver<LegEvent>) -> LegEvent {
    tokio::time::timeout(DEADLINE, events.recv())
        .await
        .expect("no event before the deadline")
        .expect("leg ended")
}

async fn next_digit(events: &mut Receiver<LegEvent>) -> (DtmfDigit, DtmfSource) {
    loop {
        if let LegEvent::Dtmf { digit, source } = next_event(events).await {
            return (*digit.expose(), source);
        }
    }
}

struct Call {
    a: RtpLeg,
    b: RtpLeg,
    a_events: Receiver<LegEvent>,
    b_events: Receiver<LegEvent>,
    phone_a: Phone,
    phone_b: Phone,
}

async fn call(engine: &MediaEngine, law_a: G711, law_b: G711) -> Call {
    let (a, a_events) = engine.allocate_leg().unwrap();
    let (b, b_events) = engine.allocate_leg().unwrap();
    let phone_a = Phone::new(0xa0a0).await;
    let phone_b = Phone::new(0xb0b0).await;
    a.set_remote(negotiated(law_a, phone_a.addr()));
    b.set_remote(negotiated(law_b, phone_b.addr()));
    Call {
        a,
        b,
        a_events,
        b_events,
        phone_a,
        phone_b,
    }
}

#[tokio::test]
async fn bridge_relays_both_ways_and_transcodes_between_laws() {
    let engine = engine(40000, "relay");
    let mut c = call(&engine, G711::Pcmu, G711::Pcma).await;
    let _bridge = engine.bridge(&c.a, &c.b);
    let frames = 50;
    for i in 0..frames {
        let payload = [i as u8; 160];
        c.phone_a.send_audio(c.a.local_addr(), 0, &payload).await;
        c.phone_b
            .send_audio(c.b.local_addr(), 8, &[0x80 | i as u8; 160])
            .await;
    }
    let mut at_b = Vec::new();
    let mut at_a = Vec::new();
    for _ in 0..frames {
        at_b.push(c.phone_b.recv().await);
        at_a.push(c.phone_a.recv().await);
    }
    // B hears A's mu-law as A-law under B's own SSRC, with continuous numbering.
    for (i, p) in at_b.iter().enumerate() {
        assert_eq!(p.payload_type, 8);
        assert_eq!(p.payload, vec![ulaw_to_alaw(i as u8); 160]);
        assert_eq!(p.ssrc, at_b[0].ssrc);
        assert_eq!(p.sequence, at_b[0].sequence.wrapping_add(i as u16));
        assert_eq!(p.timestamp, at_b[0].timestamp.wrapping_add(160 * i as u32));
    }
    assert_ne!(at_b[0].ssrc, c.phone_a.ssrc);
    for (i, p) in at_a.iter().enumerate() {
        assert_eq!(p.payload_type, 0);
        assert_eq!(p.payload, vec![alaw_to_ulaw(0x80 | i as u8); 160]);
    }
    // Both legs latched onto the phones and counted every packet.
    assert!(
        matches!(next_event(&mut c.a_events).await, LegEvent::Latched { peer } if peer == c.phone_a.addr())
    );
    assert!(
        matches!(next_event(&mut c.b_events).await, LegEvent::Latched { peer } if peer == c.phone_b.addr())
    );
    let qa = c.a.quality();
    assert_eq!((qa.packets_received, qa.packets_lost), (frames as u64, 0));
    assert_eq!(c.b.sent().0, frames as u32);
    assert_eq!(c.a.sent().0, frames as u32);
}

#[tokio::test]
async fn rfc4733_digits_are_reported_once_and_relayed() {
    let engine = engine(40100, "dtmf");
    let mut c = call(&engine, G711::Pcmu, G711::Pcmu).await;
    let _bridge = engine.bridge(&c.a, &c.b);
    let digits = [DtmfDigit::D1, DtmfDigit::D9, DtmfDigit::Pound, DtmfDigit::D9];
    for digit in digits {
        c.phone_a.send_audio(c.a.local_addr(), 0, &[0xff; 160]).await;
        c.phone_a.send_digit(c.a.local_addr(), 101, digit, 100).await;
    }
    for digit in digits {
        assert_eq!(next_digit(&mut c.a_events).await, (digit, DtmfSource::Rfc4733));
    }
    // B receives the audio and the events (5 + 2 redundant packets per 100 ms digit) under payload type 101.
    let mut events_at_b = 0;
    for _ in 0..digits.len() * 8 {
        if c.phone_b.recv().await.payload_type == 101 {
            events_at_b += 1;
        }
    }
    assert_eq!(events_at_b, digits.len() * 7);
}

#[tokio::test]
async fn latched_leg_ignores_other_sources() {
    let engine = engine(40200, "latch");
    let mut c = call(&engine, G711::Pcmu, G711::Pcmu).await;
    let _bridge = engine.bridge(&c.a, &c.b);
    c.phone_a.send_audio(c.a.local_addr(), 0, &[1; 160]).await;
    assert_eq!(c.phone_b.recv().await.payload, vec![1; 160]);
    // An intruder sends to A's port; then the real phone sends again.
    let mut intruder = Phone::new(0xbad).await;
    intruder.send_audio(c.a.local_addr(), 0, &[66; 160]).await;
    intruder
        .send_digit(c.a.local_addr(), 101, DtmfDigit::D0, 60)
        .await;
    c.phone_a.send_audio(c.a.local_addr(), 0, &[2; 160]).await;
    assert_eq!(c.phone_b.recv().await.payload, vec![2; 160]);
    assert!(matches!(
        next_event(&mut c.a_events).await,
        LegEvent::Latched { .. }
    ));
    // The intruder's digit was not reported: the next digit event is the real phone's.
    c.phone_a
        .send_digit(c.a.local_addr(), 101, DtmfDigit::D5, 60)
        .await;
    assert_eq!(next_digit(&mut c.a_events).await.0, DtmfDigit::D5);
}

#[tokio::test]
async fn prompt_stream_is_timestamp_correct_and_finishes() {
    let engine = engine(40300, "prompt");
    let (leg, mut events) = engine.allocate_leg().unwrap();
    let phone = Phone::new(1).await;
    leg.set_remote(negotiated(G711::Pcma, phone.addr()));
    let samples: Vec<i16> = (0..1000).map(|i| ((i % 50) * 300) as i16).collect();
    let prompt = Prompt::from_samples("tones", G711::Pcmu, &samples);
    leg.play(vec![prompt.clone()], false, false);
    let packets: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..prompt.frames() {
            v.push(phone.recv().await);
        }
        v
    };
    assert_eq!(packets.len(), 7);
    assert!(packets[0].marker);
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(p.payload_type, 8);
        assert_eq!(p.sequence, packets[0].sequence.wrapping_add(i as u16));
        assert_eq!(p.timestamp, packets[0].timestamp.wrapping_add(160 * i as u32));
        assert!(i == 0 || !p.marker);
    }
    // Converted from mu-law to the leg's A-law once.
    let expected: Vec<u8> = prompt.to_law(G711::Pcma).payload()[160..320].to_vec();
    assert_eq!(packets[1].payload, expected);
    assert_eq!(next_event(&mut events).await, LegEvent::PlaybackFinished);
}

#[tokio::test]
async fn a_digit_barges_in_on_a_prompt() {
    let engine = engine(40400, "barge");
    let (leg, mut events) = engine.allocate_leg().unwrap();
    let mut phone = Phone::new(1).await;
    leg.set_remote(negotiated(G711::Pcmu, phone.addr()));
    let long = Prompt::from_samples("menu", G711::Pcmu, &vec![1000; 8000 * 30]);
    leg.play(vec![long], false, true);
    phone.recv().await; // the prompt is playing
    phone.send_digit(leg.local_addr(), 101, DtmfDigit::D2, 60).await;
    assert_eq!(
        next_event(&mut events).await,
        LegEvent::Latched { peer: phone.addr() }
    );
    assert_eq!(next_event(&mut events).await, LegEvent::PlaybackInterrupted);
    assert_eq!(next_digit(&mut events).await.0, DtmfDigit::D2);
}

#[tokio::test]
async fn hold_plays_music_and_stops_relaying_until_resume() {
    let engine = engine(40500, "hold");
    let mut c = call(&engine, G711::Pcmu, G711::Pcmu).await;
    let bridge = engine.bridge(&c.a, &c.b);
    let music = Prompt::from_samples("moh", G711::Pcmu, &vec![2000; 480]);
    bridge.hold(BridgeSide::A, vec![music.clone()]);
    assert!(bridge.is_held());
    // The held caller hears the music, looping.
    for _ in 0..5 {
        assert_eq!(c.phone_a.recv().await.payload, music.payload()[..160].to_vec());
    }
    // Audio from A during hold goes nowhere; a digit after it proves A's leg has processed it.
    c.phone_a.send_audio(c.a.local_addr(), 0, &[7; 160]).await;
    c.phone_a
        .send_digit(c.a.local_addr(), 101, DtmfDigit::D3, 60)
        .await;
    assert_eq!(next_digit(&mut c.a_events).await.0, DtmfDigit::D3);
    bridge.resume();
    c.phone_a.send_audio(c.a.local_addr(), 0, &[8; 160]).await;
    // The first thing B hears is the audio sent after resume.
    assert_eq!(c.phone_b.recv().await.payload, vec![8; 160]);
}

#[tokio::test]
async fn recording_is_stereo_with_caller_left_and_agent_right() {
    let engine = engine(40600, "record");
    let mut c = call(&engine, G711::Pcmu, G711::Pcma).await;
    let bridge = engine.bridge(&c.a, &c.b);
    let recording = bridge.start_recording("call-42").unwrap();
    let loud_mu = G711::Pcmu.encode(8000);
    let quiet_a = G711::Pcma.encode(-3000);
    for i in 0..25 {
        if i == 10 {
            c.phone_a.lose_one(160);
            c.phone_b.lose_one(160);
            continue;
        }
        c.phone_a.send_audio(c.a.local_addr(), 0, &[loud_mu; 160]).await;
        c.phone_b.send_audio(c.b.local_addr(), 8, &[quiet_a; 160]).await;
    }
    // Everything was relayed (and so passed the recorder taps) before stopping.
    for _ in 0..24 {
        c.phone_b.recv().await;
        c.phone_a.recv().await;
    }
    let path = recording.stop().await.unwrap();
    assert!(path.ends_with("call-42.wav"));
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[22..24], &2u16.to_le_bytes(), "stereo");
    let frames: Vec<(i16, i16)> = bytes[44..]
        .chunks_exact(4)
        .map(|f| (i16::from_le_bytes([f[0], f[1]]), i16::from_le_bytes([f[2], f[3]])))
        .collect();
    let left = frames
        .iter()
        .filter(|f| f.0 == G711::Pcmu.decode(loud_mu))
        .count();
    let right = frames
        .iter()
        .filter(|f| f.1 == G711::Pcma.decode(quiet_a))
        .count();
    assert_eq!(left, 24 * 160, "caller audio on the left, the lost packet silent");
    assert_eq!(right, 24 * 160, "agent audio on the right");
    assert!(
        frames.iter().all(|f| f.0 >= 0 && f.1 <= 0),
        "channels not swapped or mixed"
    );
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn recording_names_cannot_escape_the_directory() {
    let engine = engine(40700, "names");
    let c = call(&engine, G711::Pcmu, G711::Pcmu).await;
    let bridge = engine.bridge(&c.a, &c.b);
    assert!(bridge.start_recording("../etc/passwd").is_err());
    assert!(bridge.start_recording("").is_err());
}

#[tokio::test]
async fn in_band_digits_are_detected_when_the_peer_has_no_telephone_event() {
    let engine = engine(40800, "inband");
    let (leg, mut events) = engine.allocate_leg().unwrap();
    let mut phone = Phone::new(9).await;
    leg.set_remote(Negotiated {
        telephone_event: None,
        ..negotiated(G711::Pcmu, phone.addr())
    });
    let tone: Vec<i16> = (0..800)
        .map(|n| {
            let t = f64::from(n) / 8000.0;
            (5000.0 * (2.0 * std::f64::consts::PI * 852.0 * t).sin()
                + 6000.0 * (2.0 * std::f64::consts::PI * 1209.0 * t).sin()) as i16
        })
        .chain(std::iter::repeat_n(0, 800))
        .collect();
    for chunk in tone.chunks(160) {
        let mut payload = [0u8; 160];
        G711::Pcmu.encode_into(chunk, &mut payload);
        phone.send_audio(leg.local_addr(), 0, &payload).await;
    }
    assert_eq!(next_digit(&mut events).await, (DtmfDigit::D7, DtmfSource::InBand));
}

#[tokio::test]
async fn silence_on_the_line_raises_a_media_timeout() {
    let engine = MediaEngine::new(MediaConfig {
        port_min: 40900,
        port_max: 40999,
        media_timeout: std::time::Duration::from_millis(500),
        ..MediaConfig::default()
    })
    .unwrap();
    let (leg, mut events) = engine.allocate_leg().unwrap();
    let phone = Phone::new(9).await;
    leg.set_remote(negotiated(G711::Pcmu, phone.addr()));
    match next_event(&mut events).await {
        LegEvent::MediaTimeout { silent_for } => assert!(silent_for >= std::time::Duration::from_millis(500)),
        other => panic!("expected a media timeout, got {other:?}"),
    }
}

#[tokio::test]
async fn rtcp_receiver_reports_describe_what_arrived() {
    use media::rtcp::{RtcpCompound, RtcpPacket, SenderReport};
    let engine = MediaEngine::new(MediaConfig {
        port_min: 41900,
        port_max: 41999,
        rtcp_interval: std::time::Duration::from_millis(300),
        ..MediaConfig::default()
    })
    .unwrap();
    let (leg, _events) = engine.allocate_leg().unwrap();
    let mut phone = Phone::new(0x5151).await;
    leg.set_remote(negotiated(G711::Pcmu, phone.addr()));
    for i in 0..12 {
        if i == 5 {
            phone.lose_one(160);
        } else {
            phone.send_audio(leg.local_addr(), 0, &[0xff; 160]).await;
        }
    }
    // The phone's RTCP socket sends a sender report; the leg answers future reports there.
    let rtcp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sr = RtcpCompound {
        packets: vec![RtcpPacket::SenderReport(SenderReport {
            ssrc: 0x5151,
            ntp_timestamp: 0x1234_5678_9abc_def0,
            packet_count: 11,
            octet_count: 1760,
            ..SenderReport::default()
        })],
    };
    let leg_rtcp = SocketAddr::new(leg.local_addr().ip(), leg.local_addr().port() + 1);
    rtcp.send_to(&sr.to_bytes().unwrap(), leg_rtcp).await.unwrap();
    let mut buf = [0u8; 1500];
    loop {
        let (len, _) = tokio::time::timeout(DEADLINE, rtcp.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let compound = RtcpCompound::parse(&buf[..len]).unwrap();
        assert!(matches!(
            compound.packets.get(1),
            Some(RtcpPacket::SourceDescription(_))
        ));
        let RtcpPacket::ReceiverReport(rr) = &compound.packets[0] else {
            panic!("expected RR: {compound:?}")
        };
        let Some(block) = rr.reports.first() else { continue };
        assert_eq!(block.ssrc, 0x5151);
        assert_eq!(block.cumulative_lost, 1);
        assert_eq!(block.extended_highest_sequence, 1011);
        if block.last_sr == 0 {
            continue; // a report sent before our SR arrived
        }
        assert_eq!(block.last_sr, 0x5678_9abc);
        break;
    }
    assert_eq!(leg.quality().packets_lost, 1);
}

#[tokio::test]
async fn reinvite_to_a_new_address_relatches_and_keeps_the_far_stream_continuous() {
    let engine = engine(41700, "reinvite");
    let mut c = call(&engine, G711::Pcmu, G711::Pcmu).await;
    let _bridge = engine.bridge(&c.a, &c.b);
    for _ in 0..3 {
        c.phone_a.send_audio(c.a.local_addr(), 0, &[1; 160]).await;
    }
    let before: Vec<_> = [
        c.phone_b.recv().await,
        c.phone_b.recv().await,
        c.phone_b.recv().await,
    ]
    .into();
    // The caller moves (re-INVITE with a new address); its new phone uses a new SSRC and numbering.
    let mut moved = Phone::new(0xcafe).await;
    c.a.set_remote(negotiated(G711::Pcmu, moved.addr()));
    moved.send_audio(c.a.local_addr(), 0, &[2; 160]).await;
    let after = c.phone_b.recv().await;
    assert_eq!(after.payload, vec![2; 160]);
    assert_eq!(after.ssrc, before[2].ssrc, "B sees one SSRC throughout");
    assert_eq!(
        after.sequence,
        before[2].sequence.wrapping_add(1),
        "no gap in B's numbering"
    );
    assert!(after.marker, "the source change is marked");
    // The old address is no longer heard.
    c.phone_a.send_audio(c.a.local_addr(), 0, &[3; 160]).await;
    moved.send_audio(c.a.local_addr(), 0, &[4; 160]).await;
    assert_eq!(c.phone_b.recv().await.payload, vec![4; 160]);
}

#[tokio::test]
async fn answering_machine_analysis_on_a_live_leg() {
    use media::amd::{AmdConfig, AmdDecision, AmdReason};
    let engine = engine(42100, "amd");
    let hello =
        media::wav::load_wav(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/hello.wav"))
            .unwrap()
            .samples;
    let mut audio = vec![0i16; 8 * 300];
    audio.extend(hello);
    audio.extend(vec![0i16; 8 * 1500]);
    // The called party's leg is bridged to a listener: what reaches the listener has been analysed, which
    // paces the sender without sleeping (and without overrunning the socket buffer).
    let mut c = call(&engine, G711::Pcmu, G711::Pcmu).await;
    let _bridge = engine.bridge(&c.a, &c.b);
    c.a.detect_answering_machine(AmdConfig::default());
    let (leg, phone, listener, events) = (&c.a, &mut c.phone_a, &c.phone_b, &mut c.a_events);
    for burst in audio.chunks(160 * 20) {
        for chunk in burst.chunks(160) {
            let mut payload = vec![0u8; chunk.len()];
            G711::Pcmu.encode_into(chunk, &mut payload);
            phone.send_audio(leg.local_addr(), 0, &payload).await;
        }
        for _ in burst.chunks(160) {
            listener.recv().await;
        }
    }
    loop {
        if let LegEvent::AnsweringMachine(result) = next_event(events).await {
            assert_eq!(
                (result.decision, result.reason),
                (AmdDecision::Human, AmdReason::AfterGreetingSilence)
            );
            break;
        }
    }
}

#[tokio::test]
async fn sent_digits_follow_rfc4733() {
    use media::dtmf::rfc4733::{Rfc4733Receiver, TelephoneEvent};
    let engine = engine(42200, "senddtmf");
    let (leg, _events) = engine.allocate_leg().unwrap();
    let phone = Phone::new(3).await;
    leg.set_remote(negotiated(G711::Pcmu, phone.addr()));
    leg.send_dtmf(DtmfDigit::Star, 100);
    let packets: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..7 {
            v.push(phone.recv().await);
        }
        v
    };
    let mut receiver = Rfc4733Receiver::new();
    for (i, p) in packets.iter().enumerate() {
        assert_eq!(p.payload_type, 101);
        assert_eq!(p.timestamp, packets[0].timestamp, "one event, one timestamp");
        assert_eq!(p.sequence, packets[0].sequence.wrapping_add(i as u16));
        assert_eq!(p.marker, i == 0);
        let event = TelephoneEvent::parse(&p.payload).unwrap();
        assert_eq!(event.end, i >= 4);
        assert_eq!(event.duration, (160 * (i as u16 + 1)).min(800));
        receiver.handle_packet(p.timestamp, &p.payload);
    }
    assert_eq!(receiver.poll_digit().map(|d| d.digit), Some(DtmfDigit::Star));
    assert_eq!(receiver.poll_digit(), None);
}

#[tokio::test]
async fn metrics_count_legs_digits_and_exhaustion() {
    let engine = MediaEngine::new(MediaConfig {
        port_min: 42300,
        port_max: 42303,
        ..MediaConfig::default()
    })
    .unwrap();
    let telemetry = telemetry::Telemetry::new();
    engine.metrics().register(&telemetry);
    let (leg, mut events) = engine.allocate_leg().unwrap();
    let (_other, _other_events) = engine.allocate_leg().unwrap();
    assert!(engine.allocate_leg().is_err());
    let mut phone = Phone::new(3).await;
    leg.set_remote(negotiated(G711::Pcmu, phone.addr()));
    phone.send_digit(leg.local_addr(), 101, DtmfDigit::D8, 60).await;
    assert_eq!(next_digit(&mut events).await.0, DtmfDigit::D8);
    let text = telemetry.encode();
    for line in [
        "media_legs_opened_total 2",
        "media_legs_active 2",
        "media_ports_exhausted_total 1",
        "media_dtmf_digits_total{source=\"rfc4733\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing in:\n{text}");
    }
    leg.close().await;
    let text = telemetry.encode();
    assert!(text.contains("media_legs_active 1"), "{text}");
    assert!(text.contains("media_leg_mos_count 1"), "{text}");
}

/// A phone's RTP and RTCP sockets on a consecutive even/odd pair (where a leg sends its reports).
async fn rtp_and_rtcp_pair() -> (tokio::net::UdpSocket, tokio::net::UdpSocket) {
    for port in (43000..43400).step_by(2) {
        if let (Ok(rtp), Ok(rtcp)) = (
            tokio::net::UdpSocket::bind(("127.0.0.1", port)).await,
            tokio::net::UdpSocket::bind(("127.0.0.1", port + 1)).await,
        ) {
            return (rtp, rtcp);
        }
    }
    panic!("no free port pair in 43000..43400");
}

#[tokio::test]
async fn only_a_leg_that_sent_something_says_rtcp_bye() {
    use media::rtcp::{RtcpCompound, RtcpPacket};
    let engine_with_reports_every = |port_min: u16, secs: f64| {
        MediaEngine::new(MediaConfig {
            port_min,
            port_max: port_min + 99,
            rtcp_interval: std::time::Duration::from_secs_f64(secs),
            ..MediaConfig::default()
        })
        .unwrap()
    };
    let (rtp, rtcp) = rtp_and_rtcp_pair().await;
    let peer = rtp.local_addr().unwrap();

    // RFC 3550 §6.3.7: a participant that never sent RTP or RTCP must not send a BYE. This leg
    // only receives (its first report would be due in about a minute), then closes.
    let quiet = engine_with_reports_every(42100, 60.0);
    let (silent, _events) = quiet.allocate_leg().unwrap();
    silent.set_remote(negotiated(G711::Pcmu, peer));
    let packet = media::rtp::RtpPacket::new(0, 1, 160, 0x77, &[0xff; 160]).to_vec();
    rtp.send_to(&packet, silent.local_addr()).await.unwrap();
    // Once it has handled a packet its sockets are known writable: a BYE would go out.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while silent.quality().packets_received == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the packet arrives");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let silent_rtcp = SocketAddr::new(silent.local_addr().ip(), silent.local_addr().port() + 1);
    silent.close().await;

    // This one sends its reports, then leaves with a BYE.
    let chatty = engine_with_reports_every(42200, 0.2);
    let (talking, _events) = chatty.allocate_leg().unwrap();
    talking.set_remote(negotiated(G711::Pcmu, peer));
    let talking_rtcp = SocketAddr::new(talking.local_addr().ip(), talking.local_addr().port() + 1);
    let mut buf = [0u8; 1500];
    let (_, from) = tokio::time::timeout(DEADLINE, rtcp.recv_from(&mut buf))
        .await
        .expect("a report before the deadline")
        .unwrap();
    assert_eq!(from, talking_rtcp, "the silent leg sent nothing, not even a BYE");
    talking.close().await;
    loop {
        let (len, from) = tokio::time::timeout(DEADLINE, rtcp.recv_from(&mut buf))
            .await
            .expect("a BYE before the deadline")
            .unwrap();
        assert_ne!(from, silent_rtcp);
        let compound = RtcpCompound::parse(&buf[..len]).unwrap();
        if compound.packets.iter().any(|p| matches!(p, RtcpPacket::Bye(_))) {
            break;
        }
    }
}

/// A leg opened from another runtime (the SIP gateway's signalling thread) that then stops still
/// hears its peer: its task runs, and its sockets wait, on the engine's runtime, not on the one
/// that opened it. Closing it gives its ports back.
#[test]
fn a_leg_opened_from_another_runtime_hears_its_peer_after_that_runtime_stops() {
    let media = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let engine = media.block_on(async { engine(44800, "other-runtime") });
    let signalling = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (leg, mut events) = signalling.block_on(async { engine.allocate_leg() }).unwrap();
    drop(signalling);
    media.block_on(async {
        let mut phone = Phone::new(7).await;
        leg.set_remote(negotiated(G711::Pcmu, phone.addr()));
        phone.send_audio(leg.local_addr(), 0, &[0xff; 160]).await;
        assert_eq!(
            next_event(&mut events).await,
            LegEvent::Latched { peer: phone.addr() }
        );
        leg.close().await;
    });
    assert_eq!(engine.free_ports(), 50);
}

/// A port pair kept bound between calls: the next leg on it latches onto its own peer, not onto the
/// last call's peer that went on sending while the pair was free, even from an address the new leg
/// admits (the IP its call's signalling came from, as a carrier's SBC carrying both calls would).
#[tokio::test]
async fn a_kept_port_pair_drops_what_reached_it_between_calls() {
    let engine = MediaEngine::new(MediaConfig {
        port_min: 44900,
        port_max: 44901,
        keep_bound_pairs: 1,
        ..MediaConfig::default()
    })
    .unwrap();
    let (first, _events) = engine.allocate_leg().unwrap();
    let port = first.local_addr();
    first.close().await;
    assert_eq!(engine.kept_bound_pairs(), 1);
    // On loopback a datagram is in the receiver's queue when the send returns.
    let mut last_peer = Phone::new(8).await;
    for _ in 0..3 {
        last_peer.send_audio(port, 0, &[0xff; 160]).await;
    }
    let (next, mut events) = engine.allocate_leg().unwrap();
    assert_eq!((next.local_addr(), engine.kept_bound_pairs()), (port, 0));
    let mut phone = Phone::new(9).await;
    next.set_remote_with_policy(
        negotiated(G711::Pcmu, phone.addr()),
        LatchPolicy::with_signalling_ip(last_peer.addr().ip()),
    );
    phone.send_audio(port, 0, &[0xff; 160]).await;
    assert_eq!(
        next_event(&mut events).await,
        LegEvent::Latched { peer: phone.addr() }
    );
    next.close().await;
}
