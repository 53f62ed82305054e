//! Hostile RTP against live calls, as an attacker on the network would send it (issue: RTP hijack and
//! reflection). A hand-written SIP caller calls the IVR; strangers on another port of the caller's IP and
//! on another loopback address spray RTP at the call's port before and after the caller's media starts
//! and again after a re-INVITE: the caller keeps hearing the call, the strangers hear nothing, and the
//! node counts what it dropped. An INVITE naming a victim's address and never acknowledged makes the node
//! send at most its configured budget there and ends after Timer H. A voicemail of silence is not kept.

use media::rtp::RtpPacket;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};
use system_tests::*;

fn limits() -> &'static str {
    "[sip.limits]\nmax_calls_per_second = 0\nper_source_requests_per_second = 0\n"
}

const IVR_ROUTE: &str = "[[route]]\nnumber = \"800\"\nivr = \"main\"\n";

/// A UDP socket that plays an RTP peer (the caller's phone, or a stranger).
struct RtpPeer {
    socket: UdpSocket,
    sequence: u16,
    ssrc: u32,
}

impl RtpPeer {
    fn bind(ip: &str) -> RtpPeer {
        let socket = UdpSocket::bind((ip, 0)).expect("bind RTP peer");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        RtpPeer {
            socket,
            sequence: 1,
            ssrc: rand_ssrc(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().expect("addr")
    }

    /// Sends `count` PCMU packets (20 ms of silence each) to `to`, back to back.
    fn spray(&mut self, to: SocketAddr, count: u16) {
        let payload = [0xffu8; 160];
        for _ in 0..count {
            self.sequence = self.sequence.wrapping_add(1);
            let packet = RtpPacket::new(
                0,
                self.sequence,
                u32::from(self.sequence) * 160,
                self.ssrc,
                &payload,
            );
            let _ = self.socket.send_to(&packet.to_vec(), to);
        }
    }

    /// Waits (bounded) until `count` RTP packets from `from` arrived; returns how many did.
    fn receive_from(&self, from: SocketAddr, count: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 2048];
        let mut got = 0;
        while got < count && Instant::now() < deadline {
            if let Ok((len, source)) = self.socket.recv_from(&mut buf)
                && source == from
                && RtpPacket::parse(&buf[..len]).is_ok_and(|p| p.payload_type < 72)
            {
                got += 1;
            }
        }
        got
    }

    /// Every datagram already waiting in the socket, without blocking.
    fn drain(&self) -> usize {
        self.socket.set_nonblocking(true).expect("nonblocking");
        let mut buf = [0u8; 2048];
        let mut got = 0;
        while self.socket.recv_from(&mut buf).is_ok() {
            got += 1;
        }
        self.socket.set_nonblocking(false).expect("blocking");
        got
    }
}

fn rand_ssrc() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(7);
    nanos ^ 0x5eed_cafe
}

/// A hand-written SIP caller: INVITE with SDP, ACK, re-INVITE, BYE.
struct Caller {
    sip: RawSip,
    call_id: String,
    local_tag: String,
    remote_to: Option<String>,
    cseq: u32,
}

fn header<'a>(message: &'a str, name: &str) -> Option<&'a str> {
    message.lines().find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The RTP address an SDP body names (`c=` and `m=audio`).
fn sdp_address(message: &str) -> Option<SocketAddr> {
    let ip = message
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))?
        .trim()
        .to_string();
    let port = message
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))?
        .split_whitespace()
        .next()?
        .to_string();
    format!("{ip}:{port}").parse().ok()
}

impl Caller {
    fn new(platform: &Platform, call_id: &str) -> Caller {
        let sip = RawSip::new(platform.sip);
        Caller {
            sip,
            call_id: call_id.to_string(),
            local_tag: format!("t{call_id}"),
            remote_to: None,
            cseq: 0,
        }
    }

    fn sdp(media: SocketAddr, version: u32) -> String {
        format!(
            "v=0\r\no=caller 1 {version} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n",
            ip = media.ip(),
            port = media.port()
        )
    }

    /// Sends an INVITE (or, once answered, a re-INVITE) offering `media`; returns the 200 OK.
    fn invite(&mut self, number: &str, media: SocketAddr) -> String {
        self.cseq += 1;
        let body = Self::sdp(media, self.cseq);
        let to = self
            .remote_to
            .clone()
            .unwrap_or_else(|| format!("<sip:{number}@{}>", self.sip.target));
        let message = format!(
            "INVITE sip:{number}@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK{id}-{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:+4930111222@{l}>;tag={tag}\r\nTo: {to}\r\nCall-ID: {id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:c@{l}>\r\nContent-Type: application/sdp\r\nContent-Length: {len}\r\n\r\n{body}",
            t = self.sip.target,
            l = self.sip.local(),
            id = self.call_id,
            cseq = self.cseq,
            tag = self.local_tag,
            len = body.len()
        );
        self.sip
            .socket
            .send_to(message.as_bytes(), self.sip.target)
            .expect("send");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let response = self.sip.receive().expect("a response to the INVITE");
            if status_of(&response) == Some(200)
                && header(&response, "CSeq").is_some_and(|c| c.contains("INVITE"))
            {
                self.remote_to = header(&response, "To").map(str::to_string);
                return response;
            }
            assert!(Instant::now() < deadline, "no 200 OK: {response}");
        }
    }

    fn ack(&self) {
        let message = format!(
            "ACK sip:c@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK{id}-ack{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:+4930111222@{l}>;tag={tag}\r\nTo: {to}\r\nCall-ID: {id}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
            t = self.sip.target,
            l = self.sip.local(),
            id = self.call_id,
            cseq = self.cseq,
            tag = self.local_tag,
            to = self.remote_to.clone().unwrap_or_default()
        );
        self.sip
            .socket
            .send_to(message.as_bytes(), self.sip.target)
            .expect("send");
    }

    fn bye(&mut self) {
        self.cseq += 1;
        let message = format!(
            "BYE sip:c@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK{id}-bye\r\nMax-Forwards: 70\r\nFrom: <sip:+4930111222@{l}>;tag={tag}\r\nTo: {to}\r\nCall-ID: {id}\r\nCSeq: {cseq} BYE\r\nContent-Length: 0\r\n\r\n",
            t = self.sip.target,
            l = self.sip.local(),
            id = self.call_id,
            cseq = self.cseq,
            tag = self.local_tag,
            to = self.remote_to.clone().unwrap_or_default()
        );
        self.sip
            .socket
            .send_to(message.as_bytes(), self.sip.target)
            .expect("send");
    }
}

/// The value of a metric (summed over its labels) in an OpenMetrics text.
fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// Waits (bounded) until `name` reaches `at_least` on the node's /metrics; returns its last value. Legs
/// publish their counts once a second and when they close.
fn wait_for_metric(platform: &Platform, name: &str, at_least: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, text) = platform.http_get("/metrics");
        assert_eq!(code, 200);
        let value = metric_sum(&text, name);
        if value >= at_least || Instant::now() > deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn strangers_spraying_rtp_at_a_live_call_never_take_it_over_even_after_a_reinvite() {
    let flows = test_flows();
    let platform = Platform::start_with_flows(&format!("{}{IVR_ROUTE}", limits()), flows.path());
    let mut phone = RtpPeer::bind("127.0.0.1");
    // Same IP as the caller's SIP (allowed to latch behind NAT, but only before the caller's media does).
    let mut same_ip_stranger = RtpPeer::bind("127.0.0.1");
    // Another address altogether: never allowed.
    let mut stranger = RtpPeer::bind("127.0.0.2");

    let mut caller = Caller::new(&platform, "hijack-1");
    let ok = caller.invite("800", phone.addr());
    let node_rtp = sdp_address(&ok).unwrap_or_else(|| panic!("no SDP in {ok}"));
    caller.ack();

    // Right after the answer, before the caller's first packet: the stranger at another address sprays.
    stranger.spray(node_rtp, 50);
    // The caller's phone starts its media and latches the leg; the menu prompt keeps coming to it.
    phone.spray(node_rtp, 5);
    assert_eq!(
        phone.receive_from(node_rtp, 25, Duration::from_secs(5)),
        25,
        "the caller hears the menu\n{}",
        platform.log()
    );
    // Now both strangers spray; the caller must go on hearing the call.
    same_ip_stranger.spray(node_rtp, 50);
    stranger.spray(node_rtp, 50);
    phone.spray(node_rtp, 5);
    assert_eq!(
        phone.receive_from(node_rtp, 25, Duration::from_secs(5)),
        25,
        "the caller still hears the call after the spray\n{}",
        platform.log()
    );

    // A re-INVITE with the same address (a session refresh) does not reopen the latch.
    let ok = caller.invite("800", phone.addr());
    assert_eq!(sdp_address(&ok), Some(node_rtp), "same port after the re-INVITE");
    caller.ack();
    same_ip_stranger.spray(node_rtp, 50);
    stranger.spray(node_rtp, 50);
    phone.spray(node_rtp, 5);
    assert_eq!(
        phone.receive_from(node_rtp, 25, Duration::from_secs(5)),
        25,
        "the caller still hears the call after a re-INVITE and another spray\n{}",
        platform.log()
    );

    // The strangers heard nothing: every packet the node sent went to the caller's phone.
    assert_eq!(
        same_ip_stranger.drain(),
        0,
        "a stranger on the caller's IP heard the call"
    );
    assert_eq!(
        stranger.drain(),
        0,
        "a stranger on another address heard the call"
    );

    caller.bye();
    // 250 foreign datagrams were sprayed; all are counted as they are dropped.
    let foreign = wait_for_metric(&platform, "media_rtp_foreign_packets_total", 250);
    assert_eq!(foreign, 250, "every foreign datagram counted\n{}", platform.log());
    let interactions = platform.ended_interactions(1);
    assert_eq!(interactions.len(), 1, "{}", platform.log());
    assert_eq!(interactions[0].row.ended_by.as_deref(), Some("caller"));
}

#[test]
fn an_invite_never_acknowledged_sends_only_its_budget_to_the_named_address_and_ends_after_timer_h() {
    let flows = test_flows();
    let platform = Platform::start_with_flows(
        &format!(
            "{}{IVR_ROUTE}[rtp]\nunconfirmed_send_packets = 10\nunconfirmed_send_ms = 2000\n",
            limits()
        ),
        flows.path(),
    );
    // The victim: an address the attacker names in the SDP, who never asked for anything.
    let victim = RtpPeer::bind("127.0.0.3");
    let mut attacker = Caller::new(&platform, "reflect-1");
    attacker
        .sip
        .socket
        .set_read_timeout(Some(Duration::from_secs(45)))
        .expect("timeout");
    let ok = attacker.invite("800", victim.addr());
    let node_rtp = sdp_address(&ok).unwrap_or_else(|| panic!("no SDP in {ok}"));
    // No ACK. The node retransmits its 200 and, after Timer H (32 s), hangs up with a BYE.
    let started = Instant::now();
    let bye = loop {
        let message = attacker.sip.receive().unwrap_or_else(|| {
            panic!(
                "no BYE within 45 s of an unacknowledged answer\n{}",
                platform.log()
            )
        });
        if message.starts_with("BYE ") {
            break message;
        }
    };
    assert!(header(&bye, "Call-ID") == Some("reflect-1"), "{bye}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(30),
        "hung up after {waited:?}, before Timer H"
    );

    let reflected = victim.drain();
    assert!(
        (1..=10).contains(&reflected),
        "the victim got {reflected} packets; the budget is 10\n{}",
        platform.log()
    );
    let _ = node_rtp;
    eprintln!("reflection: the victim got {reflected} packets (budget 10); BYE after {waited:?}");
    assert_eq!(
        wait_for_metric(&platform, "sip_unacknowledged_invites_total", 1),
        1
    );
    assert!(wait_for_metric(&platform, "media_unconfirmed_sends_dropped_total", 1) >= 1);
    let interactions = platform.ended_interactions(1);
    assert_eq!(interactions.len(), 1, "{}", platform.log());
    let kinds = interactions[0].kinds();
    assert!(!kinds.contains(&"voicemail".to_string()), "{kinds:?}");
}

#[test]
fn a_voicemail_of_pure_silence_is_neither_kept_nor_logged() {
    require_command("sipp");
    let flows = test_flows();
    let platform = Platform::start_with_flows(&format!("{}{IVR_ROUTE}", limits()), flows.path());
    // The caller presses 3 and says nothing; the 3 s mailbox ends and the platform hangs up.
    let run = uac(&platform, "uac_voicemail_silent.xml", "800", 1, &[]);
    run.assert_succeeded(1, &platform);
    let interactions = platform.ended_interactions(1);
    let i = interactions
        .first()
        .unwrap_or_else(|| panic!("no interaction\n{}", platform.log()));
    assert!(
        i.events
            .iter()
            .any(|e| e.kind == "ivr_node" && e.payload["node"] == "message"),
        "the caller reached the mailbox: {:?}",
        i.kinds()
    );
    assert!(!i.kinds().contains(&"voicemail".to_string()), "{:?}", i.kinds());
    assert_eq!(i.row.recording_path, None);
    let recordings = platform.dir.path().join("data/recordings");
    let files: Vec<_> = std::fs::read_dir(&recordings)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(files.is_empty(), "no file left behind: {files:?}");
}
