//! Media anchoring for bridged (`forward`) calls: [`EngineAnchor`] implements the gateway's
//! [`MediaAnchor`] with the media engine, so every forwarded call's RTP runs through two of our legs.
//!
//! On the first offer of a call it opens one leg facing each side (A faces the caller, B the callee) and
//! sends the other side an offer naming that side's leg: the G.711 laws of the offer in the offerer's
//! order, then the law it lacks (the bridge transcodes between laws), and `telephone-event`. On the answer
//! it points the answering side's leg at the answerer, negotiates the offering side's leg against the
//! stored offer (preferring the answerer's law, so the bridge relays without transcoding), bridges the two
//! legs once, and answers the offerer with its leg's address. Later offers (re-INVITE, hold) only update
//! the legs; the direction attributes pass through, so a held party stops receiving relayed audio.
//!
//! Source rules ([`media::latch`]): each leg accepts media only from the address its side's SDP names or,
//! for the caller (whose SIP source the gateway reports), from any port of the caller's signalling IP (NAT);
//! the first valid packet latches it for that offer/answer. The leg facing the caller sends within the
//! engine's unconfirmed budget until the caller's ACK arrives (a spoofed INVITE naming a victim's address
//! gets no stream aimed at the victim); the leg facing the callee is confirmed as we acknowledge its answer.

use media::engine::{Bridge, LatchPolicy, MediaEngine, RtpLeg};
use media::g711::G711;
use media::sdp::{self, MediaDirection, Negotiated, SessionDescription};
use parking_lot::Mutex;
use sip_gateway::media::MediaError;
use sip_gateway::{MediaAnchor, Side};
use std::collections::HashMap;
use std::net::SocketAddr;
use tracing::debug;

/// The laws our legs speak, in our order of preference when the offer leaves the choice to us.
const SUPPORTED: [G711; 2] = [G711::Pcmu, G711::Pcma];

/// The media engine behind the gateway's SDP: one pair of legs and one bridge per call.
pub struct EngineAnchor {
    engine: MediaEngine,
    calls: Mutex<HashMap<String, AnchoredCall>>,
}

impl std::fmt::Debug for EngineAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineAnchor")
            .field("calls", &self.calls.lock().len())
            .finish()
    }
}

/// Our SDP identity toward one side: `o=` session id and version, bumped only when what we say changes.
#[derive(Debug)]
struct Origin {
    session_id: u64,
    version: u64,
    last: Option<Described>,
}

/// What one of our session descriptions says (everything but the `o=` line).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Described {
    local: SocketAddr,
    codecs: Vec<(u8, G711)>,
    telephone_event: Option<u8>,
    direction: MediaDirection,
}

impl Origin {
    fn new() -> Self {
        Self {
            session_id: u64::from(rand::random::<u32>()),
            version: 1,
            last: None,
        }
    }

    /// The SDP text for `what`; a changed description gets a higher version (RFC 3264 section 8).
    fn describe(&mut self, what: Described) -> Vec<u8> {
        if self.last.as_ref().is_some_and(|last| *last != what) {
            self.version = self.version.saturating_add(1);
        }
        let text = sdp::write(
            what.local,
            self.session_id,
            self.version,
            &what.codecs,
            what.telephone_event,
            what.direction,
        );
        self.last = Some(what);
        text.into_bytes()
    }
}

/// One leg and our SDP identity toward the side it faces.
struct Facing {
    leg: RtpLeg,
    origin: Origin,
    /// Where this side's SIP signalling comes from, when the gateway said.
    signalling: Option<SocketAddr>,
}

impl Facing {
    fn new(leg: RtpLeg) -> Self {
        Self {
            leg,
            origin: Origin::new(),
            signalling: None,
        }
    }

    /// Applies an offer/answer with this side's source rules.
    fn set_remote(&self, negotiated: Negotiated) {
        self.leg
            .set_remote_with_policy(negotiated, LatchPolicy::for_signalling_source(self.signalling));
    }
}

/// A call's media: a leg facing each side, the bridge once the first answer arrived, and the last offer.
struct AnchoredCall {
    caller: Facing,
    callee: Facing,
    bridge: Option<Bridge>,
    /// The latest offer and who made it; answers are matched against it (an early 183 and the 200 both
    /// answer the same offer).
    offer: Option<(Side, SessionDescription)>,
}

impl AnchoredCall {
    fn facing(&mut self, side: Side) -> &mut Facing {
        match side {
            Side::Caller => &mut self.caller,
            Side::Callee => &mut self.callee,
        }
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Caller => Side::Callee,
        Side::Callee => Side::Caller,
    }
}

fn parse(body: &[u8]) -> Result<SessionDescription, MediaError> {
    let text = std::str::from_utf8(body).map_err(|_| MediaError::NotAcceptable)?;
    sdp::parse(text).map_err(|e| {
        debug!(error = %e, "SDP refused");
        MediaError::NotAcceptable
    })
}

fn engine_error(error: media::engine::MediaError) -> MediaError {
    match error {
        media::engine::MediaError::PortsExhausted => MediaError::Exhausted,
        other => MediaError::Other(other.to_string()),
    }
}

/// The codecs we offer for `offer`: its G.711 laws in its order, then any law it lacks, on static types.
fn offered_codecs(offer: &SessionDescription) -> Vec<(u8, G711)> {
    let audio = &offer.audio;
    let mut laws: Vec<G711> = Vec::with_capacity(SUPPORTED.len());
    for law in audio.payload_types.iter().filter_map(|pt| audio.law_of(*pt)) {
        if !laws.contains(&law) {
            laws.push(law);
        }
    }
    for law in SUPPORTED {
        if !laws.contains(&law) {
            laws.push(law);
        }
    }
    laws.into_iter().map(|law| (law.payload_type(), law)).collect()
}

/// The telephone-event payload type we offer: the offerer's, unless it clashes with a static G.711 type.
fn offered_telephone_event(offer: &SessionDescription) -> u8 {
    offer
        .audio
        .telephone_event()
        .filter(|pt| G711::from_payload_type(*pt).is_none())
        .unwrap_or(media::dtmf::rfc4733::DEFAULT_PAYLOAD_TYPE)
}

/// Only what both directions allow.
fn narrow(a: MediaDirection, b: MediaDirection) -> MediaDirection {
    match (a.sends() && b.sends(), a.receives() && b.receives()) {
        (true, true) => MediaDirection::SendRecv,
        (true, false) => MediaDirection::SendOnly,
        (false, true) => MediaDirection::RecvOnly,
        (false, false) => MediaDirection::Inactive,
    }
}

/// A peer that gave no address (c=0.0.0.0 hold) cannot be sent to, whatever the attribute says.
fn without_sending_to_nowhere(mut negotiated: Negotiated) -> Negotiated {
    if negotiated.remote.is_none() {
        negotiated.direction = narrow(negotiated.direction, MediaDirection::RecvOnly);
    }
    negotiated
}

/// What the two legs agree with their peers once `answer` meets `offer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Agreement {
    /// The leg facing the answerer.
    answerer: Negotiated,
    /// The leg facing the offerer (what we answer it).
    offerer: Negotiated,
}

fn agree(offer: &SessionDescription, answer: &SessionDescription) -> Result<Agreement, MediaError> {
    // negotiate() turns the peer's direction round, which is our direction toward the answerer too.
    let answerer = sdp::negotiate(answer, &SUPPORTED).map_err(|_| MediaError::NotAcceptable)?;
    let answerer = without_sending_to_nowhere(answerer);
    let mut offerer = sdp::negotiate(offer, &[answerer.law])
        .or_else(|_| sdp::negotiate(offer, &SUPPORTED))
        .map_err(|_| MediaError::NotAcceptable)?;
    // We answer the offerer with what the answerer accepted: its hold is the offerer's hold.
    offerer.direction = narrow(offerer.direction, answer.audio.direction);
    if answerer.telephone_event.is_none() {
        // Without events end to end, the offerer's phone sends its digits in band, which relay as audio.
        offerer.telephone_event = None;
    }
    Ok(Agreement {
        answerer,
        offerer: without_sending_to_nowhere(offerer),
    })
}

impl EngineAnchor {
    /// Anchors media on `engine` (the engine the binary already built from the `[rtp]` section).
    pub fn new(engine: MediaEngine) -> Self {
        Self {
            engine,
            calls: Mutex::new(HashMap::new()),
        }
    }

    /// Calls with media anchored now.
    pub fn active_calls(&self) -> usize {
        self.calls.lock().len()
    }

    fn open_call(&self) -> Result<AnchoredCall, MediaError> {
        // The event streams are not needed: the gateway's dialogs, not media timeouts, end bridged calls.
        let (caller, _caller_events) = self.engine.allocate_leg().map_err(engine_error)?;
        let (callee, _callee_events) = self.engine.allocate_leg().map_err(engine_error)?;
        Ok(AnchoredCall {
            caller: Facing::new(caller),
            callee: Facing::new(callee),
            bridge: None,
            offer: None,
        })
    }
}

#[async_trait::async_trait]
impl MediaAnchor for EngineAnchor {
    async fn offer(&self, call: &str, from: Side, sdp: &[u8]) -> Result<Vec<u8>, MediaError> {
        let offer = parse(sdp)?;
        // Refuse offers we could never bridge before taking ports for them.
        sdp::negotiate(&offer, &SUPPORTED).map_err(|_| MediaError::NotAcceptable)?;
        let fresh = if self.calls.lock().contains_key(call) {
            None
        } else {
            Some(self.open_call()?)
        };
        let mut calls = self.calls.lock();
        let state = match fresh {
            // A concurrent first offer for the same call lost the race: its legs close on drop.
            Some(opened) => calls.entry(call.to_string()).or_insert(opened),
            None => calls
                .get_mut(call)
                .ok_or_else(|| MediaError::Other("call released during the offer".into()))?,
        };
        let toward = state.facing(other(from));
        let described = Described {
            local: toward.leg.local_addr(),
            codecs: offered_codecs(&offer),
            telephone_event: Some(offered_telephone_event(&offer)),
            direction: offer.audio.direction,
        };
        let body = toward.origin.describe(described);
        state.offer = Some((from, offer));
        Ok(body)
    }

    async fn answer(&self, call: &str, from: Side, sdp: &[u8]) -> Result<Vec<u8>, MediaError> {
        let answer = parse(sdp)?;
        let mut calls = self.calls.lock();
        let state = calls.get_mut(call).ok_or(MediaError::NotAcceptable)?;
        let Some((offerer, offer)) = state
            .offer
            .as_ref()
            .filter(|(offerer, _)| *offerer == other(from))
        else {
            return Err(MediaError::NotAcceptable);
        };
        let offerer = *offerer;
        let agreement = agree(offer, &answer)?;
        state.facing(from).set_remote(agreement.answerer);
        let toward = state.facing(offerer);
        toward.set_remote(agreement.offerer);
        let described = Described {
            local: toward.leg.local_addr(),
            codecs: vec![(agreement.offerer.payload_type, agreement.offerer.law)],
            telephone_event: agreement.offerer.telephone_event,
            direction: agreement.offerer.direction,
        };
        let body = toward.origin.describe(described);
        if state.bridge.is_none() {
            state.bridge = Some(self.engine.bridge(&state.caller.leg, &state.callee.leg));
        }
        Ok(body)
    }

    async fn signalling_source(&self, call: &str, side: Side, source: SocketAddr) {
        if let Some(state) = self.calls.lock().get_mut(call) {
            state.facing(side).signalling = Some(source);
        }
    }

    async fn confirmed(&self, call: &str, side: Side) {
        if let Some(state) = self.calls.lock().get_mut(call) {
            state.facing(side).leg.confirm();
        }
    }

    async fn release(&self, call: &str) {
        let Some(state) = self.calls.lock().remove(call) else {
            return;
        };
        drop(state.bridge);
        state.caller.leg.close().await;
        state.callee.leg.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use media::engine::MediaConfig;
    use media::rtp::RtpPacket;
    use proptest::prelude::*;
    use std::time::Duration;
    use tokio::net::UdpSocket;

    fn engine(port_min: u16, port_max: u16) -> MediaEngine {
        MediaEngine::new(MediaConfig {
            port_min,
            port_max,
            ..MediaConfig::default()
        })
        .unwrap()
    }

    fn offer_from(port: u16, payload_types: &str, maps: &str, direction: &str) -> String {
        format!(
            "v=0\r\no=peer 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP {payload_types}\r\n{maps}a=ptime:20\r\na={direction}\r\n"
        )
    }

    const PCMA_PCMU_EVENTS: &str =
        "a=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n";

    fn parsed(body: &[u8]) -> SessionDescription {
        sdp::parse(std::str::from_utf8(body).unwrap()).unwrap()
    }

    fn origin_version(body: &[u8]) -> u64 {
        let text = std::str::from_utf8(body).unwrap();
        let line = text.lines().find(|l| l.starts_with("o=")).unwrap();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    /// A phone on loopback: an RTP socket that sends 20 ms frames and reads what arrives.
    struct Peer {
        socket: UdpSocket,
        sequence: u16,
    }

    impl Peer {
        async fn bind() -> Peer {
            Peer {
                socket: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
                sequence: 1000,
            }
        }
        fn port(&self) -> u16 {
            self.socket.local_addr().unwrap().port()
        }
        async fn send(&mut self, to: SocketAddr, payload_type: u8, payload: &[u8]) {
            self.sequence = self.sequence.wrapping_add(1);
            let packet = RtpPacket::new(
                payload_type,
                self.sequence,
                u32::from(self.sequence) * 160,
                0x5eed,
                payload,
            );
            self.socket.send_to(&packet.to_vec(), to).await.unwrap();
        }
        /// The next RTP packet (RTCP and anything else skipped): (source, payload type, payload).
        async fn receive(&self) -> (SocketAddr, u8, Vec<u8>) {
            let mut buf = [0u8; 1500];
            loop {
                let (len, from) =
                    tokio::time::timeout(Duration::from_secs(2), self.socket.recv_from(&mut buf))
                        .await
                        .expect("an RTP packet within 2 s")
                        .unwrap();
                if let Ok(packet) = RtpPacket::parse(&buf[..len])
                    && packet.payload_type < 72
                {
                    return (from, packet.payload_type, packet.payload.to_vec());
                }
            }
        }
    }

    fn sdp_remote(body: &[u8]) -> SocketAddr {
        parsed(body).audio.remote().unwrap()
    }

    #[tokio::test]
    async fn offer_names_our_callee_leg_and_keeps_the_callers_codec_order() {
        let engine = engine(45100, 45199);
        let anchor = EngineAnchor::new(engine.clone());
        let before = engine.free_ports();
        let offer = offer_from(6000, "8 0 101", PCMA_PCMU_EVENTS, "sendrecv");
        let sent = anchor.offer("c1", Side::Caller, offer.as_bytes()).await.unwrap();
        let sent = parsed(&sent);
        assert_eq!(engine.free_ports(), before - 2, "one leg per side");
        let remote = sent.audio.remote().unwrap();
        assert_eq!(remote.ip(), engine.config().bind_ip);
        assert!((45100..=45199).contains(&remote.port()));
        assert_eq!(sent.audio.payload_types, [8, 0, 101]);
        assert_eq!(sent.audio.telephone_event(), Some(101));
        assert_eq!(sent.audio.direction, MediaDirection::SendRecv);
        anchor.release("c1").await;
        assert_eq!(engine.free_ports(), before, "release returns both port pairs");
        assert_eq!(anchor.active_calls(), 0);
    }

    #[tokio::test]
    async fn a_single_law_offer_is_extended_with_the_other_law_for_transcoding() {
        let anchor = EngineAnchor::new(engine(45200, 45299));
        let offer = offer_from(6000, "0 96", "a=rtpmap:96 telephone-event/8000\r\n", "sendrecv");
        let sent = anchor.offer("c1", Side::Caller, offer.as_bytes()).await.unwrap();
        let sent = parsed(&sent);
        assert_eq!(sent.audio.payload_types, [0, 8, 96]);
        assert_eq!(
            sent.audio.telephone_event(),
            Some(96),
            "the caller's event type is kept"
        );
        anchor.release("c1").await;
    }

    #[tokio::test]
    async fn answer_names_our_caller_leg_and_relays_rtp_both_ways_through_the_bridge() {
        let engine = engine(45300, 45399);
        let anchor = EngineAnchor::new(engine);
        let mut caller = Peer::bind().await;
        let mut callee = Peer::bind().await;
        let offer = offer_from(caller.port(), "8 0 101", PCMA_PCMU_EVENTS, "sendrecv");
        let to_callee = anchor.offer("c1", Side::Caller, offer.as_bytes()).await.unwrap();
        let b = sdp_remote(&to_callee);
        let answer = offer_from(
            callee.port(),
            "8 101",
            "a=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n",
            "sendrecv",
        );
        let to_caller = anchor
            .answer("c1", Side::Callee, answer.as_bytes())
            .await
            .unwrap();
        let to_caller = parsed(&to_caller);
        let a = to_caller.audio.remote().unwrap();
        assert_ne!(a, b, "each side talks to its own leg");
        assert_eq!(
            to_caller.audio.payload_types,
            [8, 101],
            "same law as the callee: no transcoding"
        );
        assert_eq!(to_caller.audio.direction, MediaDirection::SendRecv);

        let frame = [0x55u8; 160];
        caller.send(a, 8, &frame).await;
        let (from, pt, payload) = callee.receive().await;
        assert_eq!((from, pt), (b, 8), "the callee hears us from leg B");
        assert_eq!(payload, frame, "same law: relayed untouched");

        callee.send(b, 8, &[0x33; 160]).await;
        let (from, pt, payload) = caller.receive().await;
        assert_eq!((from, pt, payload), (a, 8, vec![0x33; 160]));
        anchor.release("c1").await;
    }

    #[tokio::test]
    async fn the_caller_side_sends_only_its_budget_until_the_caller_acks_and_strangers_never_latch() {
        let engine = MediaEngine::new(MediaConfig {
            port_min: 45700,
            port_max: 45799,
            unconfirmed_send_limit: media::engine::UnconfirmedSendLimit {
                packets: 3,
                duration: Duration::from_secs(10),
            },
            ..MediaConfig::default()
        })
        .unwrap();
        let anchor = EngineAnchor::new(engine);
        let mut caller = Peer::bind().await;
        let mut callee = Peer::bind().await;
        let mut stranger = Peer::bind().await;
        let offer = offer_from(caller.port(), "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv");
        let to_callee = anchor.offer("c1", Side::Caller, offer.as_bytes()).await.unwrap();
        let caller_ip = SocketAddr::from(([127, 0, 0, 1], 5060));
        anchor.signalling_source("c1", Side::Caller, caller_ip).await;
        let b = sdp_remote(&to_callee);
        let answer = offer_from(callee.port(), "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv");
        let to_caller = anchor
            .answer("c1", Side::Callee, answer.as_bytes())
            .await
            .unwrap();
        anchor.confirmed("c1", Side::Callee).await;
        let a = sdp_remote(&to_caller);

        // The caller's phone latches leg A; a stranger on the same IP cannot take it over.
        caller.send(a, 0, &[0x11; 160]).await;
        assert_eq!(callee.receive().await.2, vec![0x11; 160]);
        stranger.send(a, 0, &[0x66; 160]).await;
        // Before the caller's ACK, leg A relays at most 3 packets to the caller.
        for i in 0..6u8 {
            callee.send(b, 0, &[i; 160]).await;
        }
        let mut heard = Vec::new();
        for _ in 0..3 {
            heard.push(caller.receive().await.2[0]);
        }
        assert_eq!(heard, vec![0, 1, 2], "the unconfirmed budget");
        anchor.confirmed("c1", Side::Caller).await;
        callee.send(b, 0, &[9; 160]).await;
        // Packets 3 to 5 went through leg B before the 9 did: had they been relayed, they would come first.
        assert_eq!(
            caller.receive().await.2,
            vec![9; 160],
            "nothing beyond the budget; confirmed: relayed again"
        );
        // The stranger's packet was dropped: the callee heard only the caller.
        caller.send(a, 0, &[0x12; 160]).await;
        assert_eq!(callee.receive().await.2, vec![0x12; 160]);
        let mut stray = [0u8; 1500];
        assert!(
            tokio::time::timeout(Duration::from_millis(100), stranger.socket.recv_from(&mut stray))
                .await
                .is_err(),
            "the stranger hears nothing"
        );
        anchor.release("c1").await;
    }

    #[tokio::test]
    async fn different_laws_on_the_two_sides_are_transcoded() {
        let anchor = EngineAnchor::new(engine(45400, 45499));
        let mut caller = Peer::bind().await;
        let mut callee = Peer::bind().await;
        let offer = offer_from(caller.port(), "8", "a=rtpmap:8 PCMA/8000\r\n", "sendrecv");
        let to_callee = anchor.offer("c1", Side::Caller, offer.as_bytes()).await.unwrap();
        let b = sdp_remote(&to_callee);
        let answer = offer_from(callee.port(), "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv");
        let to_caller = anchor
            .answer("c1", Side::Callee, answer.as_bytes())
            .await
            .unwrap();
        let to_caller = parsed(&to_caller);
        assert_eq!(to_caller.audio.payload_types, [8], "the caller keeps A-law");
        assert_eq!(
            to_caller.audio.telephone_event(),
            None,
            "the callee took no events"
        );
        let a = to_caller.audio.remote().unwrap();

        let alaw: Vec<u8> = (0..160u8).collect();
        caller.send(a, 8, &alaw).await;
        let (_, pt, payload) = callee.receive().await;
        let mut expected = alaw.clone();
        G711::Pcma.transcode_in_place(G711::Pcmu, &mut expected);
        assert_eq!((pt, payload), (0, expected));

        let ulaw: Vec<u8> = (0..160u8).rev().collect();
        callee.send(b, 0, &ulaw).await;
        let (_, pt, payload) = caller.receive().await;
        let mut expected = ulaw.clone();
        G711::Pcmu.transcode_in_place(G711::Pcma, &mut expected);
        assert_eq!((pt, payload), (8, expected));
        anchor.release("c1").await;
    }

    #[tokio::test]
    async fn reinvite_hold_updates_the_same_legs_and_passes_the_direction_through() {
        let engine = engine(45500, 45599);
        let anchor = EngineAnchor::new(engine.clone());
        let mut caller = Peer::bind().await;
        let callee = Peer::bind().await;
        let offer = offer_from(caller.port(), "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv");
        let first_offer = anchor.offer("c1", Side::Caller, offer.as_bytes()).await.unwrap();
        let answer = offer_from(callee.port(), "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv");
        let first_answer = anchor
            .answer("c1", Side::Callee, answer.as_bytes())
            .await
            .unwrap();
        let free = engine.free_ports();

        let hold = offer_from(caller.port(), "0", "a=rtpmap:0 PCMU/8000\r\n", "sendonly");
        let held_offer = anchor.offer("c1", Side::Caller, hold.as_bytes()).await.unwrap();
        assert_eq!(sdp_remote(&held_offer), sdp_remote(&first_offer), "same leg B");
        assert_eq!(parsed(&held_offer).audio.direction, MediaDirection::SendOnly);
        assert_eq!(origin_version(&held_offer), origin_version(&first_offer) + 1);
        let held = offer_from(callee.port(), "0", "a=rtpmap:0 PCMU/8000\r\n", "recvonly");
        let held_answer = anchor.answer("c1", Side::Callee, held.as_bytes()).await.unwrap();
        assert_eq!(sdp_remote(&held_answer), sdp_remote(&first_answer), "same leg A");
        assert_eq!(parsed(&held_answer).audio.direction, MediaDirection::RecvOnly);
        assert_eq!(engine.free_ports(), free, "no new legs for a re-INVITE");

        // The held caller still reaches the callee (its music on hold).
        caller.send(sdp_remote(&held_answer), 0, &[0x7f; 160]).await;
        let (_, pt, _) = callee.receive().await;
        assert_eq!(pt, 0);

        // The callee re-offers to resume: this time the offer goes to the caller, from leg A.
        let resume = offer_from(callee.port(), "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv");
        let to_caller = anchor.offer("c1", Side::Callee, resume.as_bytes()).await.unwrap();
        assert_eq!(sdp_remote(&to_caller), sdp_remote(&first_answer));
        let caller_answer = offer_from(caller.port(), "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv");
        let to_callee = anchor
            .answer("c1", Side::Caller, caller_answer.as_bytes())
            .await
            .unwrap();
        assert_eq!(sdp_remote(&to_callee), sdp_remote(&first_offer));
        assert_eq!(parsed(&to_callee).audio.direction, MediaDirection::SendRecv);
        anchor.release("c1").await;
    }

    #[tokio::test]
    async fn an_early_and_a_final_answer_to_one_offer_give_the_same_description() {
        let anchor = EngineAnchor::new(engine(45600, 45699));
        let offer = offer_from(6000, "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv");
        anchor.offer("c1", Side::Caller, offer.as_bytes()).await.unwrap();
        let answer = offer_from(7000, "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv");
        let early = anchor
            .answer("c1", Side::Callee, answer.as_bytes())
            .await
            .unwrap();
        let fin = anchor
            .answer("c1", Side::Callee, answer.as_bytes())
            .await
            .unwrap();
        assert_eq!(early, fin);
        anchor.release("c1").await;
    }

    #[tokio::test]
    async fn port_exhaustion_is_reported_and_leaks_nothing() {
        // One port pair: the caller's leg opens, the callee's cannot.
        let engine = engine(45700, 45701);
        let anchor = EngineAnchor::new(engine.clone());
        let offer = offer_from(6000, "0", "a=rtpmap:0 PCMU/8000\r\n", "sendrecv");
        let refused = anchor.offer("c1", Side::Caller, offer.as_bytes()).await;
        assert!(matches!(refused, Err(MediaError::Exhausted)), "{refused:?}");
        assert_eq!(anchor.active_calls(), 0);
        // The half-opened leg is dropped: its port comes back once its task has ended.
        let (leg, _events) = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match engine.allocate_leg() {
                    Ok(leg) => return leg,
                    Err(_) => tokio::task::yield_now().await,
                }
            }
        })
        .await
        .expect("the port pair is returned");
        leg.close().await;
    }

    #[tokio::test]
    async fn bad_sdp_is_not_acceptable_and_takes_no_ports() {
        let engine = engine(45800, 45899);
        let anchor = EngineAnchor::new(engine.clone());
        let before = engine.free_ports();
        for body in [
            &b"\xff\xfe not utf-8"[..],
            b"garbage",
            b"v=0\r\nc=IN IP4 127.0.0.1\r\nm=audio 6000 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n",
            b"v=0\r\nm=audio 6000 RTP/AVP 0\r\n",
        ] {
            let refused = anchor.offer("c1", Side::Caller, body).await;
            assert!(matches!(refused, Err(MediaError::NotAcceptable)), "{refused:?}");
        }
        assert_eq!(engine.free_ports(), before);
        let answer = offer_from(7000, "0", "", "sendrecv");
        assert!(matches!(
            anchor.answer("unknown", Side::Callee, answer.as_bytes()).await,
            Err(MediaError::NotAcceptable)
        ));
        // An answer from the side that made the offer is no answer to it.
        let offer = offer_from(6000, "0", "", "sendrecv");
        anchor.offer("c1", Side::Caller, offer.as_bytes()).await.unwrap();
        assert!(matches!(
            anchor.answer("c1", Side::Caller, answer.as_bytes()).await,
            Err(MediaError::NotAcceptable)
        ));
        let g729 = offer_from(7000, "18", "a=rtpmap:18 G729/8000\r\n", "sendrecv");
        assert!(matches!(
            anchor.answer("c1", Side::Callee, g729.as_bytes()).await,
            Err(MediaError::NotAcceptable)
        ));
        anchor.release("c1").await;
        assert_eq!(engine.free_ports(), before);
    }

    #[test]
    fn narrowing_directions_keeps_only_what_both_allow() {
        use MediaDirection::*;
        assert_eq!(narrow(SendRecv, SendOnly), SendOnly);
        assert_eq!(narrow(SendOnly, RecvOnly), Inactive);
        assert_eq!(narrow(RecvOnly, SendRecv), RecvOnly);
        assert_eq!(narrow(Inactive, SendRecv), Inactive);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Whatever arrives as an offer or answer, the anchor answers with a result, and a refused call
        /// holds no ports.
        #[test]
        fn arbitrary_sdp_never_panics_or_leaks_ports(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("v=0".to_string()),
                    Just("c=IN IP4 127.0.0.1".to_string()),
                    Just("c=IN IP4 0.0.0.0".to_string()),
                    Just("a=sendonly".to_string()),
                    Just("a=rtpmap:8 PCMA/8000".to_string()),
                    Just("a=rtpmap:96 telephone-event/8000".to_string()),
                    (0u32..70000, proptest::collection::vec(0u16..300, 0..4)).prop_map(|(port, pts)| {
                        let pts: Vec<String> = pts.iter().map(|p| p.to_string()).collect();
                        format!("m=audio {port} RTP/AVP {}", pts.join(" "))
                    }),
                    "[ -~]{0,30}",
                ],
                0..8,
            ),
            answer_too in any::<bool>(),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let engine = engine(45900, 45999);
                let anchor = EngineAnchor::new(engine.clone());
                let before = engine.free_ports();
                let body = lines.join("\r\n");
                let offered = anchor.offer("p", Side::Caller, body.as_bytes()).await;
                if offered.is_err() {
                    assert_eq!(engine.free_ports(), before);
                }
                if answer_too {
                    let _ = anchor.answer("p", Side::Callee, body.as_bytes()).await;
                }
                anchor.release("p").await;
                assert_eq!(anchor.active_calls(), 0);
            });
        }
    }
}
