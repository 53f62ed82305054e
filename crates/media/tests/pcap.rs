//! Real recorded RTP from the SIPp distribution (`/usr/share/sip-tester`, Debian package sip-tester):
//! the RFC 4733 DTMF captures must be reported as their digits, and the G.711 A-law capture must cross a
//! bridge end to end with every packet accounted for. A last test lets SIPp itself place a call to a tiny SIP
//! answerer whose SDP points at a leg, and play the DTMF capture at it.
//!
//! The captures come with the sip-tester package; where it is not installed these tests say so and pass.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the test's answer

mod support;

use media::dtmf::DtmfDigit;
use media::engine::{DtmfSource, LegEvent, MediaConfig, MediaEngine};
use media::g711::{G711, alaw_to_ulaw};
use media::sdp::{self, MediaDirection, Negotiated};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use support::{DEADLINE, Phone, read_pcap_udp};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::Receiver;

const PCAP_DIR: &str = "/usr/share/sip-tester";

fn capture(name: &str) -> Option<PathBuf> {
    let path = Path::new(PCAP_DIR).join(name);
    if path.exists() {
        Some(path)
    } else {
        eprintln!(
            "{} missing: install the sip-tester package to run this test",
            path.display()
        );
        None
    }
}

fn engine(port_min: u16) -> MediaEngine {
    MediaEngine::new(MediaConfig {
        port_min,
        port_max: port_min + 199,
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

async fn next_digit(events: &mut Receiver<LegEvent>) -> (DtmfDigit, DtmfSource) {
    loop {
        let event = tokio::time::timeout(DEADLINE, events.recv())
            .await
            .expect("no digit before the deadline")
            .unwrap();
        if let LegEvent::Dtmf { digit, source } = event {
            return (*digit.expose(), source);
        }
    }
}

#[tokio::test]
async fn every_rfc4733_capture_is_reported_as_its_digit() {
    let names = [
        ("0", DtmfDigit::D0),
        ("1", DtmfDigit::D1),
        ("2", DtmfDigit::D2),
        ("3", DtmfDigit::D3),
        ("4", DtmfDigit::D4),
        ("5", DtmfDigit::D5),
        ("6", DtmfDigit::D6),
        ("7", DtmfDigit::D7),
        ("8", DtmfDigit::D8),
        ("9", DtmfDigit::D9),
        ("star", DtmfDigit::Star),
        ("pound", DtmfDigit::Pound),
    ];
    let engine = engine(41000);
    for (name, digit) in names {
        let Some(path) = capture(&format!("dtmf_2833_{name}.pcap")) else {
            return;
        };
        let datagrams = read_pcap_udp(&std::fs::read(&path).unwrap()).unwrap();
        // Ten packets: seven updates and the end packet three times (same sequence number).
        assert_eq!(datagrams.len(), 10, "{name}");
        let (leg, mut events) = engine.allocate_leg().unwrap();
        let phone = Phone::new(0).await;
        leg.set_remote(negotiated(G711::Pcma, phone.addr()));
        for d in &datagrams {
            phone.socket.send_to(&d.payload, leg.local_addr()).await.unwrap();
        }
        // One more event proves all ten packets were processed: the capture's digit came exactly once.
        let mut phone = phone;
        phone.send_digit(leg.local_addr(), 101, DtmfDigit::A, 40).await;
        assert_eq!(
            next_digit(&mut events).await,
            (digit, DtmfSource::Rfc4733),
            "{name}"
        );
        assert_eq!(
            next_digit(&mut events).await.0,
            DtmfDigit::A,
            "{name}: reported twice"
        );
    }
}

#[tokio::test]
async fn g711a_capture_crosses_a_bridge_with_every_packet() {
    let Some(path) = capture("g711a.pcap") else { return };
    let datagrams = read_pcap_udp(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(datagrams.len(), 236);
    let engine = engine(41200);
    let (a, _ea) = engine.allocate_leg().unwrap();
    let (b, _eb) = engine.allocate_leg().unwrap();
    let caller = Phone::new(0).await;
    let agent = Phone::new(0).await;
    a.set_remote(negotiated(G711::Pcma, caller.addr()));
    b.set_remote(negotiated(G711::Pcmu, agent.addr()));
    let _bridge = engine.bridge(&a, &b);
    let mut received = Vec::new();
    // Replayed in bursts of 20, each burst awaited at the far end (flow control, not timing).
    for burst in datagrams.chunks(20) {
        for d in burst {
            caller.socket.send_to(&d.payload, a.local_addr()).await.unwrap();
        }
        for _ in burst {
            received.push(agent.recv().await);
        }
    }
    assert_eq!(received.len(), datagrams.len());
    for (sent, got) in datagrams.iter().zip(&received) {
        let original = media::rtp::RtpPacket::parse(&sent.payload).unwrap();
        assert_eq!(got.payload_type, 0);
        // 30 ms packets pass through with their size; A-law became mu-law byte for byte.
        let expected: Vec<u8> = original.payload.iter().map(|b| alaw_to_ulaw(*b)).collect();
        assert_eq!(got.payload, expected);
    }
    for pair in received.windows(2) {
        assert_eq!(pair[1].sequence, pair[0].sequence.wrapping_add(1));
        assert_eq!(pair[1].timestamp.wrapping_sub(pair[0].timestamp), 240);
    }
    let quality = a.quality();
    assert_eq!((quality.packets_received, quality.packets_lost), (236, 0));
    assert_eq!(b.sent().0, 236);
}

/// Answers one INVITE with `answer_for(offer)` and the BYE that follows; returns the offer it saw.
async fn answer_one_call(socket: UdpSocket, answer_for: impl Fn(&str) -> String) -> String {
    let mut buf = vec![0u8; 65536];
    let mut offer = String::new();
    loop {
        let (len, from) = socket.recv_from(&mut buf).await.unwrap();
        let message = String::from_utf8_lossy(&buf[..len]).into_owned();
        let (head, body) = message.split_once("\r\n\r\n").unwrap_or((&message, ""));
        let method = head.split_whitespace().next().unwrap_or_default().to_string();
        let copy = |name: &str| {
            head.lines()
                .filter(|l| {
                    l.to_ascii_lowercase()
                        .starts_with(&format!("{}:", name.to_ascii_lowercase()))
                })
                .map(|l| format!("{l}\r\n"))
                .collect::<String>()
        };
        let to = copy("To").trim_end().to_string();
        let common = format!(
            "{}{}{}{}",
            copy("Via"),
            copy("From"),
            copy("Call-ID"),
            copy("CSeq")
        );
        match method.as_str() {
            "INVITE" => {
                offer = body.to_string();
                let sdp = answer_for(body);
                let reply = format!(
                    "SIP/2.0 200 OK\r\n{common}{to};tag=media-test\r\nContact: <sip:test@{}>\r\n\
Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
                    socket.local_addr().unwrap(),
                    sdp.len()
                );
                socket.send_to(reply.as_bytes(), from).await.unwrap();
            }
            "BYE" => {
                let reply =
                    format!("SIP/2.0 200 OK\r\n{common}{to};tag=media-test\r\nContent-Length: 0\r\n\r\n");
                socket.send_to(reply.as_bytes(), from).await.unwrap();
                return offer;
            }
            _ => {}
        }
    }
}

#[tokio::test]
async fn sipp_plays_the_dtmf_capture_at_a_leg() {
    let Some(dtmf) = capture("dtmf_2833_1.pcap") else {
        return;
    };
    if std::process::Command::new("sipp").arg("-v").output().is_err() {
        eprintln!("sipp missing: install the sip-tester package to run this test");
        return;
    }
    let engine = engine(41400);
    let (leg, mut events) = engine.allocate_leg().unwrap();
    let uas = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let uas_addr = uas.local_addr().unwrap();

    let dir = std::env::temp_dir().join(format!("media-sipp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("play_dtmf.xml");
    std::fs::write(
        &scenario,
        SCENARIO.replace("DTMF_PCAP", &dtmf.display().to_string()),
    )
    .unwrap();

    let local = leg.local_addr();
    let answered_leg = std::sync::Mutex::new(None::<Negotiated>);
    let answerer = answer_one_call(uas, |offer| {
        let offer = sdp::parse(offer).expect("SIPp's offer parses");
        let negotiated = sdp::negotiate(&offer, &[G711::Pcmu, G711::Pcma]).expect("common codec");
        *answered_leg.lock().unwrap() = Some(negotiated);
        leg.set_remote(negotiated);
        sdp::answer(&negotiated, local, 1, 1)
    });
    // A free port for SIPp's own SIP socket (5060 may be taken by another test on this machine).
    let sipp_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let sipp = tokio::process::Command::new("sipp")
        .args([
            "-sf",
            &scenario.display().to_string(),
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-p",
            &sipp_port,
        ])
        .args([
            "-mi",
            "127.0.0.1",
            "-nostdin",
            "-timeout",
            "20s",
            "-timeout_error",
        ])
        .arg(uas_addr.to_string())
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (offer, output) = tokio::join!(answerer, sipp.wait_with_output());
    let output = output.unwrap();
    assert!(
        output.status.success(),
        "sipp failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(offer.contains("telephone-event"), "{offer}");
    let negotiated = answered_leg.lock().unwrap().expect("INVITE answered");
    assert_eq!(
        (negotiated.law, negotiated.telephone_event),
        (G711::Pcma, Some(101))
    );
    assert_eq!(
        next_digit(&mut events).await,
        (DtmfDigit::D1, DtmfSource::Rfc4733)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A UAC that calls, plays the DTMF capture once the call is up, and hangs up.
const SCENARIO: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="play one RFC 4733 digit">
  <send retrans="500">
    <![CDATA[
      INVITE sip:media@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:media@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [auto_media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-11,16
    ]]>
  </send>
  <recv response="100" optional="true"></recv>
  <recv response="180" optional="true"></recv>
  <recv response="200"></recv>
  <send>
    <![CDATA[
      ACK sip:media@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:media@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <nop>
    <action>
      <exec play_pcap_audio="DTMF_PCAP"/>
    </action>
  </nop>
  <pause milliseconds="600"/>
  <send retrans="500">
    <![CDATA[
      BYE sip:media@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag[call_number]
      To: <sip:media@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:sipp@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"></recv>
</scenario>
"#;
