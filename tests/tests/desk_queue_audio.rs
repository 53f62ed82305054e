//! A caller waiting in a queue with no free agent hears no dead air: a hand-made SIP caller (its own
//! RTP socket, so every packet can be looked at) calls a queue route; it receives a continuous
//! stream of non-silent audio (music, then the announcement, then music again), and the
//! announcement read the caller's place in line (1).

use std::net::UdpSocket;
use std::time::{Duration, Instant};
use system_tests::*;

fn config() -> String {
    format!(
        r#"
[sip.limits]
max_calls_per_second = 0
per_source_requests_per_second = 0

[agents]
ready_on_start = false

[[acd.queues]]
id = "sales"
announce_every_secs = 1

[[acd.agents]]
id = "1001"
queues = [{{ queue = "sales", rank = 1 }}]

[[route]]
number = "801"
queue = "sales"

[desk]
hold_music = "{music}"

[queue_audio]
enabled = true
first_announcement_secs = 3
announce_every_secs = 60
"#,
        music = ivr_dir().join("prompts/hold-music.wav").display()
    )
}

/// A µ-law byte's magnitude (0 = silence).
fn ulaw_magnitude(b: u8) -> i32 {
    let b = !b;
    let exponent = i32::from((b >> 4) & 0x07);
    let mantissa = i32::from(b & 0x0f);
    ((mantissa << 3) + 0x84) << exponent
}

#[test]
fn a_caller_waiting_with_no_free_agent_hears_music_and_their_place_in_line() {
    let platform = Platform::start(&config());
    let sip = RawSip::new(platform.sip);
    let rtp = UdpSocket::bind("127.0.0.1:0").expect("rtp socket");
    rtp.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let rtp_port = rtp.local_addr().expect("addr").port();
    let local = sip.local();
    let sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
    );
    let invite = format!(
        "INVITE sip:801@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKqa1\r\nMax-Forwards: 70\r\nFrom: <sip:+4930111222@{local}>;tag=qa1\r\nTo: <sip:801@{t}>\r\nCall-ID: queue-audio-1\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{local}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{sdp}",
        t = platform.sip,
        len = sdp.len()
    );
    let mut answer = sip.exchange(invite.as_bytes()).expect("a response");
    let deadline = Instant::now() + Duration::from_secs(10);
    while status_of(&answer).is_some_and(|s| s < 200) {
        assert!(Instant::now() < deadline, "no final answer\n{}", platform.log());
        answer = sip.receive().expect("a final response");
    }
    assert_eq!(status_of(&answer), Some(200), "{answer}\n{}", platform.log());
    let to = answer
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("to:"))
        .expect("To header")
        .to_string();
    let media_port: u16 = answer
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("answer SDP port");
    let ack = format!(
        "ACK sip:801@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKqa2\r\nMax-Forwards: 70\r\nFrom: <sip:+4930111222@{local}>;tag=qa1\r\n{to}\r\nCall-ID: queue-audio-1\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        t = platform.sip
    );
    sip.socket
        .send_to(ack.as_bytes(), platform.sip)
        .expect("send ACK");

    // Listen for 8 s (the announcement is due at 3 s), sending our own silence so the media
    // latches to us; count what arrives and the longest gap between packets.
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], media_port));
    let started = Instant::now();
    let mut next_send = Instant::now();
    let (mut packets, mut loud, mut longest_gap) = (0u32, 0u32, Duration::ZERO);
    let mut last: Option<Instant> = None;
    let mut seq: u16 = 0;
    let mut buf = [0u8; 2048];
    while started.elapsed() < Duration::from_secs(8) {
        if Instant::now() >= next_send {
            let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            packet[2..4].copy_from_slice(&seq.to_be_bytes());
            packet[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
            packet.extend(std::iter::repeat_n(0xffu8, 160));
            let _ = rtp.send_to(&packet, target);
            seq = seq.wrapping_add(1);
            next_send += Duration::from_millis(20);
        }
        let Ok((n, _)) = rtp.recv_from(&mut buf) else {
            continue;
        };
        if n <= 12 || buf[1] & 0x7f != 0 {
            continue; // not PCMU audio
        }
        let now = Instant::now();
        if let Some(prev) = last
            && started.elapsed() > Duration::from_millis(500)
        {
            longest_gap = longest_gap.max(now - prev);
        }
        last = Some(now);
        packets += 1;
        let peak = buf[12..n].iter().map(|&b| ulaw_magnitude(b)).max().unwrap_or(0);
        if peak > 500 {
            loud += 1;
        }
    }
    let bye = format!(
        "BYE sip:801@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKqa3\r\nMax-Forwards: 70\r\nFrom: <sip:+4930111222@{local}>;tag=qa1\r\n{to}\r\nCall-ID: queue-audio-1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        t = platform.sip
    );
    let _ = sip.exchange(bye.as_bytes());
    eprintln!("queue audio: {packets} packets in 8 s, {loud} with sound, longest gap {longest_gap:?}");
    let log = platform.log();
    // 8 s of 20 ms packets is 400. The bounds are loose on purpose (a busy machine delays
    // packets): what they catch is dead air, a second or more with nothing, or half the call silent.
    assert!(packets >= 200, "{packets} packets: dead air\n{log}");
    assert!(
        longest_gap < Duration::from_secs(1),
        "a gap of {longest_gap:?} in the audio\n{log}"
    );
    assert!(
        loud * 10 >= packets * 6,
        "only {loud} of {packets} packets carry sound\n{log}"
    );
    // The announcement read the caller's place in line: first.
    let said = log
        .lines()
        .find(|l| l.contains("queue announcement"))
        .unwrap_or_else(|| panic!("no announcement\n{log}"));
    assert!(said.contains("position=Some(1)"), "{said}");
    assert!(said.contains("said=queue-position num-1"), "{said}");
}
