//! The WebRTC endpoint against a str0m client playing the browser (full ICE, offerer, PCMU, host candidate on
//! loopback): connecting, audio both ways through an engine leg, demultiplexing two peers on one socket, bad
//! offers, garbage datagrams, media and handshake timeouts, closing and dropping.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the test's answer
mod support;

use media::engine::{MediaConfig, MediaEngine, RtpLeg};
use media::g711::G711;
use media::prompt::Prompt;
use media::webrtc::{CloseReason, WebRtcConfig, WebRtcEndpoint, WebRtcError, WebRtcEvent, WebRtcLeg};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};
use support::{DEADLINE, Phone};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

fn engine(port_min: u16) -> MediaEngine {
    MediaEngine::new(MediaConfig {
        port_min,
        port_max: port_min + 99,
        recordings_dir: std::env::temp_dir()
            .join(format!("media-webrtc-test-{}-{port_min}", std::process::id())),
        ..MediaConfig::default()
    })
    .unwrap()
}

fn endpoint(config: WebRtcConfig) -> WebRtcEndpoint {
    WebRtcEndpoint::new(config).unwrap()
}

/// What the browser stand-in has seen so far.
#[derive(Debug, Clone, Default)]
struct Seen {
    connected: bool,
    ice_disconnected: bool,
    closed: bool,
    /// Payloads of the audio packets received, in order.
    audio: Vec<Vec<u8>>,
}

/// A str0m `Rtc` in the browser's role, on its own UDP socket and task.
struct Client {
    seen: watch::Receiver<Seen>,
    send_frames: mpsc::UnboundedSender<Vec<Vec<u8>>>,
}

struct Offered {
    rtc: Rtc,
    socket: UdpSocket,
    mid: Mid,
    pending: SdpPendingOffer,
    offer: String,
}

async fn offer() -> Offered {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_pcmu(true, false)
        .build(Instant::now());
    rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
    let mut change = rtc.sdp_api();
    let mid = change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, pending) = change.apply().unwrap();
    Offered {
        rtc,
        socket,
        mid,
        pending,
        offer: offer.to_sdp_string(),
    }
}

impl Client {
    /// Applies the endpoint's answer and starts the client's run loop.
    fn start(offered: Offered, answer: &str) -> Self {
        let Offered {
            mut rtc,
            socket,
            mid,
            pending,
            ..
        } = offered;
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(answer).unwrap())
            .unwrap();
        let (seen_tx, seen) = watch::channel(Seen::default());
        let (send_frames, frames_rx) = mpsc::unbounded_channel();
        tokio::spawn(run_client(rtc, socket, mid, seen_tx, frames_rx));
        Self { seen, send_frames }
    }

    async fn wait_for(&mut self, what: &str, condition: impl FnMut(&Seen) -> bool) -> Seen {
        tokio::time::timeout(DEADLINE, self.seen.wait_for(condition))
            .await
            .unwrap_or_else(|_| panic!("client: no {what} before the deadline"))
            .expect("client task ended")
            .clone()
    }

    /// Sends these 20 ms payloads, one every 20 ms.
    fn send(&self, frames: Vec<Vec<u8>>) {
        self.send_frames.send(frames).unwrap();
    }
}

async fn run_client(
    mut rtc: Rtc,
    socket: UdpSocket,
    mid: Mid,
    seen: watch::Sender<Seen>,
    mut frames: mpsc::UnboundedReceiver<Vec<Vec<u8>>>,
) {
    let local = socket.local_addr().unwrap();
    let mut buf = vec![0u8; 2000];
    let mut queue: std::collections::VecDeque<Vec<u8>> = Default::default();
    let mut pacing = tokio::time::interval(Duration::from_millis(20));
    let mut media_time = 0u64;
    loop {
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(at)) => break at,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination).await;
                }
                Ok(Output::Event(event)) => match event {
                    Event::Connected => seen.send_modify(|s| s.connected = true),
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        seen.send_modify(|s| s.ice_disconnected = true)
                    }
                    Event::MediaData(data) => seen.send_modify(|s| s.audio.push(data.data.to_vec())),
                    Event::Closed => seen.send_modify(|s| s.closed = true),
                    _ => {}
                },
                Err(_) => break Instant::now() + Duration::from_secs(3600),
            }
        };
        if !rtc.is_alive() {
            seen.send_modify(|s| s.closed = true);
            return;
        }
        let sleep = tokio::time::sleep_until(timeout.into());
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let (len, from) = received.unwrap();
                if let Ok(receive) = Receive::new(Protocol::Udp, from, local, &buf[..len]) {
                    let _ = rtc.handle_input(Input::Receive(Instant::now(), receive));
                }
            }
            more = frames.recv() => match more {
                Some(more) => queue.extend(more),
                None => return,
            },
            _ = pacing.tick(), if !queue.is_empty() => {
                let frame = queue.pop_front().unwrap();
                let writer = rtc.writer(mid).unwrap();
                let pt = writer.payload_params().next().unwrap().pt();
                writer
                    .write(pt, Instant::now(), MediaTime::new(media_time, Frequency::EIGHT_KHZ), frame)
                    .unwrap();
                media_time += 160;
            }
            _ = sleep => {
                let _ = rtc.handle_input(Input::Timeout(Instant::now()));
            }
        }
    }
}

/// A prompt of `frames` 20 ms frames whose every frame is distinct (a rising ramp), so a received payload
/// can be found in it.
fn ramp_prompt(name: &str, frames: usize, offset: i16) -> Prompt {
    let samples: Vec<i16> = (0..frames * 160)
        .map(|i| offset.wrapping_add(((i * 7) % 16000) as i16))
        .collect();
    Prompt::from_samples(name, G711::Pcmu, &samples)
}

async fn next_event(leg: &mut WebRtcLeg) -> WebRtcEvent {
    tokio::time::timeout(DEADLINE, leg.next_event())
        .await
        .expect("no WebRTC event before the deadline")
        .expect("leg events ended")
}

async fn wait_for_event(leg: &mut WebRtcLeg, wanted: impl Fn(&WebRtcEvent) -> bool) -> WebRtcEvent {
    loop {
        let event = next_event(leg).await;
        if wanted(&event) {
            return event;
        }
    }
}

/// Waits until `condition` holds: for counters that have no event of their own.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "not before the deadline: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A browser stand-in connected to the endpoint, and the engine leg its audio is linked with.
async fn connected_pair(engine: &MediaEngine, endpoint: &WebRtcEndpoint) -> (Client, WebRtcLeg, RtpLeg) {
    let offered = offer().await;
    let (mut leg, answer) = endpoint.accept_offer(&offered.offer).unwrap();
    assert_eq!(leg.law(), G711::Pcmu);
    assert!(answer.contains("a=ice-lite"), "{answer}");
    let mut client = Client::start(offered, &answer);
    assert_eq!(next_event(&mut leg).await, WebRtcEvent::Connected);
    assert!(leg.is_connected());
    client.wait_for("DTLS connection", |s| s.connected).await;
    let (rtp, _events) = engine.allocate_leg().unwrap();
    leg.connect_plain(&rtp).unwrap();
    (client, leg, rtp)
}

#[tokio::test]
async fn browser_audio_flows_both_ways_through_an_engine_leg_and_close_ends_the_peer() {
    let engine = engine(46000);
    let endpoint = endpoint(WebRtcConfig {
        media_timeout: Duration::from_secs(1),
        ..WebRtcConfig::default()
    });
    let telemetry = telemetry::Telemetry::new();
    endpoint.metrics().register(&telemetry);

    // Datagrams that belong to no peer (noise, forged STUN, stray RTP) are ignored, not fatal.
    let noise = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for datagram in [
        &b""[..],
        b"\x00\x01\x00\x00garbage",
        b"\x80\x00\x00\x01",
        &[22u8; 40],
        &[0xffu8; 1500],
    ] {
        noise.send_to(datagram, endpoint.local_addr()).await.unwrap();
    }

    let (mut client, mut leg, rtp) = connected_pair(&engine, &endpoint).await;
    assert_eq!(endpoint.peer_count(), 1);

    // Engine -> browser: a prompt played on the engine leg reaches the client, frame for frame.
    let prompt = ramp_prompt("ramp", 40, 0);
    let frames: Vec<Vec<u8>> = prompt.payload().chunks(160).map(<[u8]>::to_vec).collect();
    rtp.play(vec![prompt], false, false);
    let seen = client.wait_for("20 audio packets", |s| s.audio.len() >= 20).await;
    for payload in &seen.audio {
        assert!(
            frames.contains(payload),
            "the client got audio that is not the prompt"
        );
    }
    assert!(leg.stats().packets_to_browser >= 20, "{:?}", leg.stats());

    // Browser -> engine: the client's audio arrives at the engine leg as plain RTP it accepts.
    let spoken: Vec<Vec<u8>> = (0..25u8).map(|i| vec![i.wrapping_mul(9) | 1; 160]).collect();
    client.send(spoken);
    eventually("25 packets at the engine leg", || {
        rtp.quality().packets_received >= 25
    })
    .await;
    let stats = leg.stats();
    assert_eq!(stats.packets_from_browser, 25, "{stats:?}");
    assert_eq!(stats.packets_to_engine, 25, "{stats:?}");
    assert_eq!(rtp.quality().packets_received, 25);

    // The client has gone quiet: after the media timeout the leg says so.
    let event = wait_for_event(&mut leg, |e| matches!(e, WebRtcEvent::MediaTimeout { .. })).await;
    let WebRtcEvent::MediaTimeout { silent_for } = event else {
        unreachable!()
    };
    assert!(silent_for >= Duration::from_secs(1));

    let metrics = telemetry.encode();
    assert!(metrics.contains("media_webrtc_peers_active 1"), "{metrics}");
    assert!(
        metrics.contains("media_webrtc_handshakes_completed_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("media_webrtc_packets_in_total 25"), "{metrics}");
    assert!(
        metrics.contains("media_webrtc_media_timeouts_total 1"),
        "{metrics}"
    );

    // Closing sends DTLS close_notify: the browser sees the peer end; ours is freed.
    let sent_to_browser = leg.stats().packets_to_browser;
    assert!(client.seen.borrow().audio.len() as u64 <= sent_to_browser);
    leg.close().await;
    assert_eq!(endpoint.peer_count(), 0);
    client.wait_for("close", |s| s.closed).await;
    let metrics = telemetry.encode();
    assert!(metrics.contains("media_webrtc_peers_active 0"), "{metrics}");
    assert!(
        metrics.contains("media_webrtc_handshakes_failed_total 0"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_customer_bridged_with_the_browser_agent_hears_and_is_heard_and_is_recorded() {
    let engine = engine(46400);
    let endpoint = endpoint(WebRtcConfig::default());
    let (mut client, leg, agent) = connected_pair(&engine, &endpoint).await;
    // The customer's SIP leg uses A-law; the browser leg mu-law: the bridge transcodes, as for SIP agents.
    let (customer, _customer_events) = engine.allocate_leg().unwrap();
    let mut phone = Phone::new(0xc0c0).await;
    customer.set_remote(media::sdp::Negotiated {
        law: G711::Pcma,
        payload_type: 8,
        telephone_event: None,
        remote: Some(phone.addr()),
        direction: media::sdp::MediaDirection::SendRecv,
        ptime_ms: 20,
    });
    let bridge = engine.bridge(&customer, &agent);
    let recording = bridge.start_recording("webrtc-call").unwrap();

    let customer_says = G711::Pcma.encode(6000);
    for _ in 0..10 {
        phone
            .send_audio(customer.local_addr(), 8, &[customer_says; 160])
            .await;
    }
    let seen = client
        .wait_for("the customer's audio", |s| s.audio.len() >= 10)
        .await;
    let expected = media::g711::alaw_to_ulaw(customer_says);
    assert!(
        seen.audio.iter().all(|p| p == &vec![expected; 160]),
        "the browser heard something else"
    );

    let agent_says = G711::Pcmu.encode(-4000);
    client.send(vec![vec![agent_says; 160]; 10]);
    for _ in 0..10 {
        let packet = phone.recv().await;
        assert_eq!(packet.payload_type, 8);
        assert_eq!(packet.payload, vec![media::g711::ulaw_to_alaw(agent_says); 160]);
    }
    assert_eq!(leg.stats().packets_from_browser, 10);

    let path = recording.stop().await.unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[22..24], &2u16.to_le_bytes(), "stereo");
    let frames: Vec<(i16, i16)> = bytes[44..]
        .chunks_exact(4)
        .map(|f| (i16::from_le_bytes([f[0], f[1]]), i16::from_le_bytes([f[2], f[3]])))
        .collect();
    let decoded_customer = G711::Pcma.decode(customer_says);
    let decoded_agent = G711::Pcmu.decode(agent_says);
    assert!(
        frames.iter().filter(|(l, _)| *l == decoded_customer).count() >= 1500,
        "customer on the left"
    );
    assert!(
        frames.iter().filter(|(_, r)| *r == decoded_agent).count() >= 1500,
        "agent on the right"
    );
    let _ = std::fs::remove_file(&path);
}

#[tokio::test]
async fn two_browsers_on_one_socket_each_hear_their_own_engine_leg() {
    let engine = engine(46200);
    let endpoint = endpoint(WebRtcConfig::default());
    let (mut client_a, leg_a, rtp_a) = connected_pair(&engine, &endpoint).await;
    let (mut client_b, leg_b, rtp_b) = connected_pair(&engine, &endpoint).await;
    assert_eq!(endpoint.peer_count(), 2);

    let prompt_a = ramp_prompt("a", 30, 0);
    let prompt_b = ramp_prompt("b", 30, -20000);
    let frames_a: Vec<Vec<u8>> = prompt_a.payload().chunks(160).map(<[u8]>::to_vec).collect();
    let frames_b: Vec<Vec<u8>> = prompt_b.payload().chunks(160).map(<[u8]>::to_vec).collect();
    assert!(frames_a.iter().all(|f| !frames_b.contains(f)));
    rtp_a.play(vec![prompt_a], false, false);
    rtp_b.play(vec![prompt_b], false, false);
    let seen_a = client_a.wait_for("audio at A", |s| s.audio.len() >= 10).await;
    let seen_b = client_b.wait_for("audio at B", |s| s.audio.len() >= 10).await;
    assert!(
        seen_a.audio.iter().all(|p| frames_a.contains(p)),
        "A heard B's leg"
    );
    assert!(
        seen_b.audio.iter().all(|p| frames_b.contains(p)),
        "B heard A's leg"
    );

    client_a.send(vec![vec![0x11; 160]; 5]);
    client_b.send(vec![vec![0x22; 160]; 7]);
    eventually("A's 5 packets", || rtp_a.quality().packets_received >= 5).await;
    eventually("B's 7 packets", || rtp_b.quality().packets_received >= 7).await;
    assert_eq!(leg_a.stats().packets_from_browser, 5);
    assert_eq!(leg_b.stats().packets_from_browser, 7);

    // Dropping a leg frees its peer; the other stays up.
    drop(leg_a);
    eventually("peer A freed", || endpoint.peer_count() == 1).await;
    client_a.wait_for("A closed", |s| s.closed).await;
    assert!(leg_b.is_connected());
}

#[tokio::test]
async fn invalid_offers_are_errors_and_open_no_peer() {
    let endpoint = endpoint(WebRtcConfig::default());
    let telemetry = telemetry::Telemetry::new();
    endpoint.metrics().register(&telemetry);
    assert!(matches!(
        endpoint.accept_offer("garbage"),
        Err(WebRtcError::BadOffer(_))
    ));
    assert!(matches!(endpoint.accept_offer(""), Err(WebRtcError::BadOffer(_))));
    // A SIP-style plain RTP offer: no ICE, no DTLS fingerprint.
    let sip_offer = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    assert!(matches!(
        endpoint.accept_offer(sip_offer),
        Err(WebRtcError::BadOffer(_))
    ));
    // A browser offer of Opus only.
    let offered = {
        let mut rtc = Rtc::builder()
            .clear_codecs()
            .enable_opus(true, false)
            .build(Instant::now());
        rtc.add_local_candidate(
            Candidate::host("127.0.0.1:9".parse::<SocketAddr>().unwrap(), "udp").unwrap(),
        );
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
        change.apply().unwrap().0.to_sdp_string()
    };
    assert_eq!(
        endpoint.accept_offer(&offered).err(),
        Some(WebRtcError::NoCommonCodec)
    );
    assert_eq!(endpoint.peer_count(), 0);
    let metrics = telemetry.encode();
    assert!(
        metrics.contains("media_webrtc_offers_rejected_total 4"),
        "{metrics}"
    );
    assert!(metrics.contains("media_webrtc_peers_active 0"), "{metrics}");
}

#[tokio::test]
async fn a_peer_that_never_connects_ends_at_the_handshake_timeout() {
    let endpoint = endpoint(WebRtcConfig {
        handshake_timeout: Duration::from_millis(300),
        ..WebRtcConfig::default()
    });
    let telemetry = telemetry::Telemetry::new();
    endpoint.metrics().register(&telemetry);
    let offered = offer().await; // the client never runs
    let (mut leg, _answer) = endpoint.accept_offer(&offered.offer).unwrap();
    assert_eq!(endpoint.peer_count(), 1);
    assert_eq!(
        next_event(&mut leg).await,
        WebRtcEvent::Closed {
            reason: CloseReason::HandshakeTimeout
        }
    );
    assert_eq!(leg.next_event().await, None, "no event after Closed");
    assert!(leg.is_closed());
    assert_eq!(endpoint.peer_count(), 0);
    let metrics = telemetry.encode();
    assert!(
        metrics.contains("media_webrtc_handshakes_failed_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn too_many_peers_is_an_error() {
    let endpoint = endpoint(WebRtcConfig {
        max_peers: 1,
        ..WebRtcConfig::default()
    });
    let first = offer().await;
    let (_leg, _answer) = endpoint.accept_offer(&first.offer).unwrap();
    let second = offer().await;
    assert_eq!(
        endpoint.accept_offer(&second.offer).err(),
        Some(WebRtcError::TooManyPeers)
    );
    assert_eq!(endpoint.peer_count(), 1);
}
