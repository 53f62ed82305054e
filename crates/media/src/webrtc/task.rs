//! The endpoint's task: owns the WebRTC socket, the relay sockets and every peer's str0m `Rtc`.
//!
//! Each mutation of an `Rtc` (a datagram, a timeout, audio to send, close) is followed by draining its output
//! until str0m asks for a timeout, as str0m requires. Timeouts of all peers wait in one ordered set.

use super::offer::{Answered, law_of};
use super::{CloseReason, Command, EndpointShared, LegCounters, PeerId, WebRtcEvent, WebRtcMetrics};
use crate::g711::G711;
use crate::rtp::RtpPacket;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use str0m::ice::StunMessage;
use str0m::media::{Frequency, MediaData, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

/// Largest datagram read; str0m's own limit is 2000 bytes.
const MAX_DATAGRAM: usize = 2048;
/// Addresses one peer may be reached from (browser candidates that sent checks).
const MAX_ADDRS_PER_PEER: usize = 8;
/// How often media and handshake timeouts are checked.
const HOUSEKEEPING: Duration = Duration::from_millis(250);

/// A peer handed over by `accept_offer`.
pub(super) struct NewPeer {
    pub(super) id: PeerId,
    pub(super) answered: Answered,
    pub(super) counters: Arc<LegCounters>,
    pub(super) events: mpsc::Sender<WebRtcEvent>,
}

/// The source address an engine leg's packets arrive from at a loopback relay socket: its own address, or
/// loopback when it is bound to all interfaces.
pub(super) fn relay_source(leg: SocketAddr) -> SocketAddr {
    match leg.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), leg.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), leg.port()),
        _ => leg,
    }
}

/// The ICE username fragment of the recipient of a STUN binding request (the part of USERNAME before `:`);
/// `None` for anything else. Never panics, whatever the bytes.
pub(super) fn stun_recipient_ufrag(datagram: &[u8]) -> Option<&str> {
    // RFC 7983: STUN starts with 0..=3, DTLS 20..=63, RTP/RTCP 128..=191.
    if datagram.first().is_none_or(|b| *b > 3) {
        return None;
    }
    let message = StunMessage::parse(datagram).ok()?;
    if !message.is_binding_request() {
        return None;
    }
    let username = message.username()?;
    let (ours, _theirs) = username.split_once(':')?;
    Some(ours).filter(|u| !u.is_empty())
}

struct Peer {
    rtc: Rtc,
    mid: Mid,
    pt: Pt,
    law: G711,
    ufrag: String,
    counters: Arc<LegCounters>,
    events: mpsc::Sender<WebRtcEvent>,
    addrs: Vec<SocketAddr>,
    plain_target: Option<SocketAddr>,
    timeout: Instant,
    created: Instant,
    connected: bool,
    ice_down: bool,
    last_media: Instant,
    timeout_reported: bool,
    /// The browser closed DTLS; str0m drains its own close output before it reports not alive.
    remote_closed: bool,
    // Plain RTP towards the engine leg.
    out_ssrc: u32,
    out_seq: u16,
    out_started: bool,
    // RTP timestamps from the engine leg, extended to str0m's 64-bit media time.
    tx_clock: Option<(u32, u64)>,
}

/// Sockets and metrics a peer needs while it drains.
struct Io<'a> {
    socket: &'a UdpSocket,
    relay_v4: &'a UdpSocket,
    relay_v6: Option<&'a UdpSocket>,
    metrics: &'a WebRtcMetrics,
}

impl<'a> Io<'a> {
    fn new(sockets: &'a Sockets, metrics: &'a WebRtcMetrics) -> Self {
        Io {
            socket: &sockets.socket,
            relay_v4: &sockets.relay_v4.0,
            relay_v6: sockets.relay_v6.as_ref().map(|(s, _)| s),
            metrics,
        }
    }

    fn relay_for(&self, target: SocketAddr) -> Option<&UdpSocket> {
        match target {
            SocketAddr::V4(_) => Some(self.relay_v4),
            SocketAddr::V6(_) => self.relay_v6,
        }
    }
}

impl Peer {
    fn emit(&self, event: WebRtcEvent) {
        // A full queue means the owner is not reading; dropping keeps the media path running.
        if self.events.try_send(event).is_err() {
            tracing::debug!("webrtc leg event dropped: owner not keeping up");
        }
    }

    /// Drains str0m's output after a mutation. `Err` when the peer has ended.
    fn drain(&mut self, io: &Io<'_>, now: Instant) -> Result<(), CloseReason> {
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    if !self.rtc.is_alive() {
                        return Err(if self.remote_closed {
                            CloseReason::Remote
                        } else {
                            CloseReason::Failed
                        });
                    }
                    self.timeout = at;
                    return Ok(());
                }
                Ok(Output::Transmit(t)) => {
                    let _ = io.socket.try_send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(event)) => self.on_event(event, io, now),
                Err(e) => {
                    tracing::debug!(error = %error_kind(&e), "webrtc peer failed");
                    return Err(CloseReason::Failed);
                }
            }
        }
    }

    fn on_event(&mut self, event: Event, io: &Io<'_>, now: Instant) {
        match event {
            Event::Connected if !self.connected => {
                self.connected = true;
                self.counters.connected.store(true, Ordering::Relaxed);
                self.last_media = now;
                io.metrics.handshakes_completed.inc();
                self.emit(WebRtcEvent::Connected);
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) if !self.ice_down => {
                self.ice_down = true;
                self.emit(WebRtcEvent::Disconnected);
            }
            Event::IceConnectionStateChange(
                IceConnectionState::Connected | IceConnectionState::Completed,
            ) if self.ice_down => {
                self.ice_down = false;
                if self.connected {
                    self.emit(WebRtcEvent::Connected);
                }
            }
            Event::MediaData(data) => self.on_media(data, io, now),
            Event::Closed => self.remote_closed = true,
            _ => {}
        }
    }

    /// Audio from the browser: count it, and forward it to the engine leg as plain RTP.
    fn on_media(&mut self, data: MediaData, io: &Io<'_>, now: Instant) {
        if data.mid != self.mid {
            return;
        }
        let Some(law) = law_of(data.params.spec().codec) else {
            return; // comfort noise, telephone-event
        };
        self.counters.from_browser.fetch_add(1, Ordering::Relaxed);
        io.metrics.packets_in.inc();
        self.last_media = now;
        self.timeout_reported = false;
        let Some(target) = self.plain_target else {
            return;
        };
        let Some(relay) = io.relay_for(target) else {
            return;
        };
        let mut payload = [0u8; 1200];
        let Some(slot) = payload.get_mut(..data.data.len()) else {
            return; // more than 150 ms of G.711 in one packet: not from a browser
        };
        slot.copy_from_slice(&data.data);
        law.transcode_in_place(self.law, slot);
        let timestamp = data.time.rebase(Frequency::EIGHT_KHZ).numer() as u32;
        let packet = RtpPacket::new(
            self.law.payload_type(),
            self.out_seq,
            timestamp,
            self.out_ssrc,
            slot,
        )
        .with_marker(!self.out_started);
        let mut datagram = [0u8; 12 + 1200];
        if let Ok(len) = packet.write_to(&mut datagram)
            && relay
                .try_send_to(datagram.get(..len).unwrap_or_default(), target)
                .is_ok()
        {
            self.out_seq = self.out_seq.wrapping_add(1);
            self.out_started = true;
            self.counters.to_engine.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Plain RTP from the engine leg: hand its audio to str0m for the browser. Returns whether str0m was
    /// mutated (and so must be drained).
    fn on_plain(&mut self, datagram: &[u8], io: &Io<'_>, now: Instant) -> bool {
        let Ok(packet) = RtpPacket::parse(datagram) else {
            io.metrics.datagrams_ignored.inc();
            return false;
        };
        let Some(law) = G711::from_payload_type(packet.payload_type) else {
            return false; // the engine leg negotiated no telephone-event with us; nothing else is expected
        };
        if !self.connected || self.remote_closed {
            return false;
        }
        let media_time = match self.tx_clock {
            None => 0,
            Some((last, extended)) => {
                let delta = packet.timestamp.wrapping_sub(last);
                if delta >= 1 << 31 {
                    return false; // late or reordered on loopback: drop rather than go back in time
                }
                extended + u64::from(delta)
            }
        };
        self.tx_clock = Some((packet.timestamp, media_time));
        let mut payload = packet.payload.to_vec();
        law.transcode_in_place(self.law, &mut payload);
        let Some(writer) = self.rtc.writer(self.mid) else {
            return false;
        };
        match writer.write(
            self.pt,
            now,
            MediaTime::new(media_time, Frequency::EIGHT_KHZ),
            payload,
        ) {
            Ok(()) => {
                self.counters.to_browser.fetch_add(1, Ordering::Relaxed);
                io.metrics.packets_out.inc();
            }
            Err(e) => tracing::debug!(error = %error_kind(&e), "webrtc write refused"),
        }
        true
    }
}

/// A short, address-free description of a str0m error for logs.
fn error_kind(e: &str0m::RtcError) -> &'static str {
    use str0m::RtcError as E;
    match e {
        E::RemoteSdp(_) => "remote sdp",
        E::Ice(_) => "ice",
        E::Dtls(_) => "dtls",
        E::Sctp(_) => "sctp",
        E::Net(_) => "net",
        _ => "other",
    }
}

/// The WebRTC socket and the relay sockets (each with the RTCP sink above it).
struct Sockets {
    socket: UdpSocket,
    relay_v4: (UdpSocket, UdpSocket),
    relay_v6: Option<(UdpSocket, UdpSocket)>,
}

pub(super) struct EndpointTask {
    shared: Arc<EndpointShared>,
    sockets: Sockets,
    peers: HashMap<PeerId, Peer>,
    by_addr: HashMap<SocketAddr, PeerId>,
    by_ufrag: HashMap<String, PeerId>,
    by_plain: HashMap<SocketAddr, PeerId>,
    timers: BTreeSet<(Instant, PeerId)>,
}

async fn recv_on(socket: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(socket) => socket.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

impl EndpointTask {
    pub(super) fn new(
        shared: Arc<EndpointShared>,
        socket: UdpSocket,
        relay_v4: (UdpSocket, UdpSocket),
        relay_v6: Option<(UdpSocket, UdpSocket)>,
    ) -> Self {
        Self {
            shared,
            sockets: Sockets {
                socket,
                relay_v4,
                relay_v6,
            },
            peers: HashMap::new(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_plain: HashMap::new(),
            timers: BTreeSet::new(),
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut relay_buf = vec![0u8; MAX_DATAGRAM];
        let mut relay6_buf = vec![0u8; MAX_DATAGRAM];
        let mut sink = vec![0u8; MAX_DATAGRAM];
        let mut sink6 = vec![0u8; MAX_DATAGRAM];
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let now = Instant::now();
            let next_timer = self
                .timers
                .first()
                .map_or(now + HOUSEKEEPING, |(at, _)| *at)
                .min(now + HOUSEKEEPING);
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                received = self.sockets.socket.recv_from(&mut buf) => {
                    if let Ok((len, from)) = received {
                        self.on_datagram(buf.get(..len).unwrap_or_default(), from);
                    }
                }
                received = self.sockets.relay_v4.0.recv_from(&mut relay_buf) => {
                    if let Ok((len, from)) = received {
                        self.on_relay(relay_buf.get(..len).unwrap_or_default(), from);
                    }
                }
                received = recv_on(self.sockets.relay_v6.as_ref().map(|(s, _)| s), &mut relay6_buf) => {
                    if let Ok((len, from)) = received {
                        self.on_relay(relay6_buf.get(..len).unwrap_or_default(), from);
                    }
                }
                // The engine leg's RTCP goes to the relay port + 1; nothing in it is needed here.
                _ = self.sockets.relay_v4.1.recv_from(&mut sink) => {}
                _ = recv_on(self.sockets.relay_v6.as_ref().map(|(_, s)| s), &mut sink6) => {}
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(next_timer)) => self.on_timers(),
                _ = housekeeping.tick() => self.housekeeping(),
            }
        }
        let ids: Vec<PeerId> = self.peers.keys().copied().collect();
        for id in ids {
            self.close_peer(id);
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Add(new) => self.add(*new),
            Command::ConnectPlain { id, target } => {
                let Some(peer) = self.peers.get_mut(&id) else {
                    return;
                };
                if let Some(old) = peer.plain_target.replace(target)
                    && self.by_plain.get(&old) == Some(&id)
                {
                    self.by_plain.remove(&old);
                }
                // The latest link wins: a port reused by a new engine leg belongs to the new peer.
                if let Some(previous) = self.by_plain.insert(target, id)
                    && previous != id
                    && let Some(other) = self.peers.get_mut(&previous)
                {
                    other.plain_target = None;
                }
            }
            Command::Close { id, done } => {
                self.close_peer(id);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }
    }

    fn add(&mut self, new: NewPeer) {
        let NewPeer {
            id,
            answered,
            counters,
            events,
        } = new;
        let now = Instant::now();
        for transmit in &answered.pending {
            let _ = self
                .sockets
                .socket
                .try_send_to(&transmit.contents, transmit.destination);
        }
        let peer = Peer {
            rtc: answered.rtc,
            mid: answered.mid,
            pt: answered.pt,
            law: answered.law,
            ufrag: answered.ufrag,
            counters,
            events,
            addrs: Vec::new(),
            plain_target: None,
            timeout: answered.next_timeout,
            created: now,
            connected: false,
            ice_down: false,
            last_media: now,
            timeout_reported: false,
            remote_closed: false,
            out_ssrc: rand::random(),
            out_seq: rand::random(),
            out_started: false,
            tx_clock: None,
        };
        self.by_ufrag.insert(peer.ufrag.clone(), id);
        self.timers.insert((peer.timeout, id));
        self.peers.insert(id, peer);
    }

    /// Which peer a datagram on the WebRTC socket is for: by source address, else by STUN username.
    fn route(&mut self, datagram: &[u8], from: SocketAddr) -> Option<PeerId> {
        if let Some(id) = self.by_addr.get(&from) {
            return Some(*id);
        }
        let id = *self.by_ufrag.get(stun_recipient_ufrag(datagram)?)?;
        let peer = self.peers.get_mut(&id)?;
        if peer.addrs.len() < MAX_ADDRS_PER_PEER {
            peer.addrs.push(from);
            self.by_addr.insert(from, id);
        }
        Some(id)
    }

    fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        let Some(id) = self.route(datagram, from) else {
            self.shared.metrics.datagrams_ignored.inc();
            return;
        };
        let Ok(receive) = Receive::new(Protocol::Udp, from, self.shared.candidate, datagram) else {
            self.shared.metrics.datagrams_ignored.inc();
            return;
        };
        let now = Instant::now();
        let io = Io::new(&self.sockets, &self.shared.metrics);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if let Err(e) = peer.rtc.handle_input(Input::Receive(now, receive)) {
            // One bad datagram (forged, corrupted) must not end the call; str0m stays consistent.
            tracing::debug!(error = %error_kind(&e), "webrtc datagram refused");
        }
        let before = peer.timeout;
        let result = peer.drain(&io, now);
        self.after_drain(id, before, result);
    }

    fn on_relay(&mut self, datagram: &[u8], from: SocketAddr) {
        let Some(&id) = self.by_plain.get(&from) else {
            self.shared.metrics.datagrams_ignored.inc();
            return;
        };
        let now = Instant::now();
        let io = Io::new(&self.sockets, &self.shared.metrics);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.on_plain(datagram, &io, now) {
            let before = peer.timeout;
            let result = peer.drain(&io, now);
            self.after_drain(id, before, result);
        }
    }

    fn after_drain(&mut self, id: PeerId, before: Instant, result: Result<(), CloseReason>) {
        match result {
            Ok(()) => {
                if let Some(peer) = self.peers.get(&id)
                    && peer.timeout != before
                {
                    self.timers.remove(&(before, id));
                    self.timers.insert((peer.timeout, id));
                }
            }
            Err(reason) => self.remove(id, reason),
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        while let Some(&(at, id)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, id));
            let io = Io::new(&self.sockets, &self.shared.metrics);
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            if let Err(e) = peer.rtc.handle_input(Input::Timeout(now)) {
                tracing::debug!(error = %error_kind(&e), "webrtc timeout handling failed");
            }
            let result = peer.drain(&io, now);
            match result {
                Ok(()) => {
                    // Never spin on a deadline str0m keeps in the past.
                    let next = peer.timeout.max(now + Duration::from_millis(1));
                    peer.timeout = next;
                    self.timers.insert((next, id));
                }
                Err(reason) => self.remove(id, reason),
            }
        }
    }

    fn housekeeping(&mut self) {
        let now = Instant::now();
        let media_timeout = self.shared.config.media_timeout;
        let handshake_timeout = self.shared.config.handshake_timeout;
        let mut expired = Vec::new();
        for (id, peer) in &mut self.peers {
            if peer.connected {
                let silent_for = now.saturating_duration_since(peer.last_media);
                if !peer.timeout_reported && silent_for >= media_timeout {
                    peer.timeout_reported = true;
                    self.shared.metrics.media_timeouts.inc();
                    peer.emit(WebRtcEvent::MediaTimeout { silent_for });
                }
            } else if now.saturating_duration_since(peer.created) >= handshake_timeout {
                expired.push(*id);
            }
        }
        for id in expired {
            self.remove(id, CloseReason::HandshakeTimeout);
        }
    }

    /// Closes a peer on our side: RTCP BYE and DTLS close_notify go out before its state is freed.
    fn close_peer(&mut self, id: PeerId) {
        let now = Instant::now();
        let io = Io::new(&self.sockets, &self.shared.metrics);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer.rtc.close().is_ok() {
            let _ = peer.drain(&io, now);
        }
        self.remove(id, CloseReason::Local);
    }

    fn remove(&mut self, id: PeerId, reason: CloseReason) {
        let Some(mut peer) = self.peers.remove(&id) else {
            return;
        };
        peer.rtc.disconnect();
        for addr in &peer.addrs {
            self.by_addr.remove(addr);
        }
        self.by_ufrag.remove(&peer.ufrag);
        if let Some(target) = peer.plain_target
            && self.by_plain.get(&target) == Some(&id)
        {
            self.by_plain.remove(&target);
        }
        self.timers.remove(&(peer.timeout, id));
        self.shared.peers.fetch_sub(1, Ordering::Relaxed);
        let metrics = &self.shared.metrics;
        metrics.peers_active.dec();
        if !peer.connected && matches!(reason, CloseReason::HandshakeTimeout | CloseReason::Failed) {
            metrics.handshakes_failed.inc();
        }
        peer.counters.closed.store(true, Ordering::Relaxed);
        peer.emit(WebRtcEvent::Closed { reason });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the test's answer
    use super::*;
    use proptest::prelude::*;
    use str0m::ice::TransId;

    fn binding_request(username: &str) -> Vec<u8> {
        let message = StunMessage::binding_request(username, TransId::new(), true, 7, 1, false);
        let mut out = vec![0u8; 512];
        let len = message
            .to_bytes(Some(b"password"), &mut out, |_, _| [0u8; 20])
            .unwrap();
        out.truncate(len);
        out
    }

    #[test]
    fn stun_binding_requests_name_the_recipient_first() {
        let request = binding_request("ours1234:theirs99");
        assert_eq!(stun_recipient_ufrag(&request), Some("ours1234"));
        assert_eq!(stun_recipient_ufrag(&binding_request(":theirs")), None);
        assert_eq!(stun_recipient_ufrag(b""), None);
        assert_eq!(stun_recipient_ufrag(&[0x80, 0, 0, 1]), None); // RTP
        assert_eq!(stun_recipient_ufrag(&[22, 254, 253]), None); // DTLS
    }

    #[test]
    fn relay_source_of_a_wildcard_leg_is_loopback() {
        assert_eq!(
            relay_source("0.0.0.0:20000".parse().unwrap()),
            "127.0.0.1:20000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            relay_source("[::]:20000".parse().unwrap()),
            "[::1]:20000".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            relay_source("10.1.2.3:20000".parse().unwrap()),
            "10.1.2.3:20000".parse::<SocketAddr>().unwrap()
        );
    }

    proptest! {
        #[test]
        fn arbitrary_datagrams_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = stun_recipient_ufrag(&bytes);
        }

        #[test]
        fn stun_like_datagrams_never_panic(
            tail in proptest::collection::vec(any::<u8>(), 0..200),
            kind in 0u8..4,
            len in any::<u16>(),
        ) {
            let mut datagram = vec![kind, 1];
            datagram.extend_from_slice(&len.to_be_bytes());
            datagram.extend_from_slice(&0x2112_a442_u32.to_be_bytes());
            datagram.extend_from_slice(&[7u8; 12]);
            datagram.extend_from_slice(&tail);
            let _ = stun_recipient_ufrag(&datagram);
        }

        #[test]
        fn a_real_request_cut_short_never_panics(cut in 0usize..200) {
            let request = binding_request("abcd:efgh");
            let _ = stun_recipient_ufrag(request.get(..cut.min(request.len())).unwrap());
        }
    }
}
