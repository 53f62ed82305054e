//! Supervisor monitoring (listen, whisper, barge) and mute against real UDP sockets acting as the caller's,
//! the agent's and the supervisor's phones. Each phone sends a constant sample value in real time (one packet
//! every 20 ms, as a phone does); every received byte is decoded back into the set of parties whose sum it is,
//! so each test can say exactly who heard whom.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the test's answer
mod support;

use media::engine::{BridgeSide, MediaConfig, MediaEngine, MediaError, MonitorMode, RtpLeg};
use media::g711::G711;
use media::prompt::Prompt;
use media::rtp::RtpPacket;
use media::sdp::{MediaDirection, Negotiated};
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use support::DEADLINE;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

const CALLER: i16 = 1000;
const AGENT: i16 = 3000;
const SUPERVISOR: i16 = 9000;
const MUSIC: i16 = 500;
/// What the agent says while muted: must reach no one and not the recording.
const ASIDE: i16 = -7000;

/// Who a received byte is the sum of ("A" caller, "B" agent, "S" supervisor, "M" music).
type Heard = BTreeSet<&'static str>;

fn engine(port_min: u16, dir: &str) -> MediaEngine {
    MediaEngine::new(MediaConfig {
        port_min,
        port_max: port_min + 99,
        recordings_dir: std::env::temp_dir().join(format!("media-monitor-test-{}-{dir}", std::process::id())),
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

/// A phone: sends its current sample value every 20 ms, and queues the payloads of the audio it receives.
struct Peer {
    law: G711,
    sample: watch::Sender<i16>,
    sent: Arc<AtomicU64>,
    received: mpsc::UnboundedReceiver<Vec<u8>>,
    /// (SSRC, sequence) of every audio packet received.
    headers: Arc<std::sync::Mutex<Vec<(u32, u16)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    socket: Arc<UdpSocket>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Peer {
    async fn new(law: G711) -> Self {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let (tx, received) = mpsc::unbounded_channel();
        let reader = socket.clone();
        let headers = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = headers.clone();
        let receiving = tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            while let Ok(len) = reader.recv(&mut buf).await {
                if let Ok(p) = RtpPacket::parse(&buf[..len])
                    && p.payload_type == law.payload_type()
                {
                    seen.lock().unwrap().push((p.ssrc, p.sequence));
                    if tx.send(p.payload.to_vec()).is_err() {
                        return;
                    }
                }
            }
        });
        Self {
            law,
            sample: watch::channel(0).0,
            sent: Arc::new(AtomicU64::new(0)),
            received,
            headers,
            tasks: vec![receiving],
            socket,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.socket.local_addr().unwrap()
    }

    /// Starts talking to `to`: one packet of the current sample every 20 ms.
    fn talk(&mut self, to: SocketAddr, sample: i16) {
        self.sample.send_replace(sample);
        let (socket, law, sent) = (self.socket.clone(), self.law, self.sent.clone());
        let value = self.sample.subscribe();
        let ssrc = ssrc_for(to);
        self.tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            let (mut seq, mut ts) = (100u16, 1600u32);
            loop {
                tick.tick().await;
                let payload = [law.encode(*value.borrow()); 160];
                let bytes = RtpPacket::new(law.payload_type(), seq, ts, ssrc, &payload).to_vec();
                if socket.send_to(&bytes, to).await.is_err() {
                    return;
                }
                sent.fetch_add(1, Ordering::SeqCst);
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(160);
            }
        }));
    }

    fn say(&self, sample: i16) {
        self.sample.send_replace(sample);
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }

    async fn next(&mut self) -> Vec<u8> {
        tokio::time::timeout(DEADLINE, self.received.recv())
            .await
            .expect("no packet before the deadline")
            .expect("receiver ended")
    }

    /// Asserts that everything received came as one stream: one SSRC, and sequence numbers without holes or
    /// repeats (whatever fed it: relay, mixer, music).
    fn assert_one_continuous_stream(&self, who: &str) {
        let headers = self.headers.lock().unwrap();
        let ssrcs: BTreeSet<u32> = headers.iter().map(|h| h.0).collect();
        assert_eq!(ssrcs.len(), 1, "{who}: SSRCs {ssrcs:x?}");
        let first = headers[0].1;
        let offsets: BTreeSet<u16> = headers.iter().map(|h| h.1.wrapping_sub(first)).collect();
        assert_eq!(offsets.len(), headers.len(), "{who}: repeated sequence numbers");
        let span = usize::from(*offsets.last().unwrap()) + 1;
        assert_eq!(span, headers.len(), "{who}: holes in the sequence");
    }

    /// Throws away what has arrived so far.
    fn drain(&mut self) -> usize {
        let mut n = 0;
        while self.received.try_recv().is_ok() {
            n += 1;
        }
        n
    }
}

fn ssrc_for(to: SocketAddr) -> u32 {
    0x5000_0000 | u32::from(to.port())
}

/// Decodes bytes in a listener's law back into the set of sources they are the sum of.
struct Decoder {
    table: HashMap<u8, Heard>,
}

impl Decoder {
    fn new(listener: G711, laws: [G711; 3]) -> Self {
        let sources = [
            ("A", CALLER, laws[0]),
            ("B", AGENT, laws[1]),
            ("S", SUPERVISOR, laws[2]),
        ];
        let mut table = HashMap::new();
        for mask in 1..8u8 {
            let mut sum = 0i32;
            let mut who = Heard::new();
            for (bit, (name, value, law)) in sources.iter().enumerate() {
                if mask & (1 << bit) != 0 {
                    // What arrives is the sender's encoding of its value; the mixer sums decoded samples.
                    sum += i32::from(law.decode(law.encode(*value)));
                    who.insert(*name);
                }
            }
            let byte = listener.encode(sum.clamp(-32768, 32767) as i16);
            assert!(
                table.insert(byte, who).is_none(),
                "test values must give distinct sums"
            );
        }
        let music = G711::Pcmu.decode(G711::Pcmu.encode(MUSIC));
        assert!(table.insert(listener.encode(music), ["M"].into()).is_none());
        Self { table }
    }

    /// Who each distinct byte of `payload` comes from; a byte no combination explains is a failure.
    fn heard(&self, payload: &[u8]) -> Vec<Heard> {
        let distinct: BTreeSet<u8> = payload.iter().copied().collect();
        distinct
            .into_iter()
            .map(|b| {
                self.table
                    .get(&b)
                    .cloned()
                    .unwrap_or_else(|| panic!("byte {b:#04x} is no sum of the parties"))
            })
            .collect()
    }
}

fn set(names: &[&'static str]) -> Heard {
    names.iter().copied().collect()
}

struct Call {
    engine: MediaEngine,
    a: RtpLeg,
    b: RtpLeg,
    s: RtpLeg,
    phone_a: Peer,
    phone_b: Peer,
    phone_s: Peer,
    dec_a: Decoder,
    dec_b: Decoder,
    dec_s: Decoder,
}

const LAWS: [G711; 3] = [G711::Pcmu, G711::Pcma, G711::Pcmu];

/// Caller (mu-law), agent (A-law) and supervisor (mu-law) legs, each with a phone talking.
async fn call(port_min: u16, dir: &str) -> Call {
    let engine = engine(port_min, dir);
    let (a, _) = engine.allocate_leg().unwrap();
    let (b, _) = engine.allocate_leg().unwrap();
    let (s, _) = engine.allocate_leg().unwrap();
    let mut phone_a = Peer::new(LAWS[0]).await;
    let mut phone_b = Peer::new(LAWS[1]).await;
    let mut phone_s = Peer::new(LAWS[2]).await;
    a.set_remote(negotiated(LAWS[0], phone_a.addr()));
    b.set_remote(negotiated(LAWS[1], phone_b.addr()));
    s.set_remote(negotiated(LAWS[2], phone_s.addr()));
    phone_a.talk(a.local_addr(), CALLER);
    phone_b.talk(b.local_addr(), AGENT);
    phone_s.talk(s.local_addr(), SUPERVISOR);
    Call {
        engine,
        a,
        b,
        s,
        phone_a,
        phone_b,
        phone_s,
        dec_a: Decoder::new(LAWS[0], LAWS),
        dec_b: Decoder::new(LAWS[1], LAWS),
        dec_s: Decoder::new(LAWS[2], LAWS),
    }
}

/// Receives at `phone` until a packet holds a byte heard from exactly `wanted` (at most 200 packets).
async fn until_heard(phone: &mut Peer, decoder: &Decoder, wanted: &Heard) {
    for _ in 0..200 {
        if decoder.heard(&phone.next().await).contains(wanted) {
            return;
        }
    }
    panic!("never heard {wanted:?}");
}

/// The next `n` packets at `phone`, as who each of their bytes came from.
async fn collect(phone: &mut Peer, decoder: &Decoder, n: usize) -> Vec<Heard> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.extend(decoder.heard(&phone.next().await));
    }
    all
}

fn assert_only(heard: &[Heard], allowed: &[Heard], who: &str) {
    for h in heard {
        assert!(allowed.contains(h), "{who} heard {h:?}; allowed only {allowed:?}");
    }
}

fn metric(telemetry: &telemetry::Telemetry, name: &str) -> u64 {
    let text = telemetry.encode();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} missing in:\n{text}"))
}

#[tokio::test]
async fn listen_whisper_barge_reach_exactly_the_right_parties_and_stop_restores_the_relay() {
    let mut c = call(47000, "modes").await;
    let telemetry = telemetry::Telemetry::new();
    c.engine.metrics().register(&telemetry);
    let bridge = c.engine.bridge(&c.a, &c.b);
    // Plain bridge first: the supervisor's phone hears nothing, caller and agent hear each other.
    until_heard(&mut c.phone_a, &c.dec_a, &set(&["B"])).await;
    until_heard(&mut c.phone_b, &c.dec_b, &set(&["A"])).await;

    // Listen: the supervisor hears both, mixed; caller and agent still hear only each other.
    let monitor = bridge.monitor(&c.s, MonitorMode::Listen).unwrap();
    assert_eq!(monitor.mode(), Some(MonitorMode::Listen));
    assert_eq!(metric(&telemetry, "media_monitors_active"), 1);
    until_heard(&mut c.phone_s, &c.dec_s, &set(&["A", "B"])).await;
    c.phone_a.drain();
    c.phone_b.drain();
    let (at_a, at_b, at_s) = (
        collect(&mut c.phone_a, &c.dec_a, 25).await,
        collect(&mut c.phone_b, &c.dec_b, 25).await,
        collect(&mut c.phone_s, &c.dec_s, 25).await,
    );
    assert_only(&at_a, &[set(&["B"])], "listen: caller");
    assert_only(&at_b, &[set(&["A"])], "listen: agent");
    assert_only(
        &at_s,
        &[set(&["A", "B"]), set(&["A"]), set(&["B"])],
        "listen: supervisor",
    );
    assert!(at_s.contains(&set(&["A", "B"])));

    // Whisper: the agent hears caller and supervisor; the caller still never hears the supervisor.
    monitor.set_mode(MonitorMode::Whisper).unwrap();
    until_heard(&mut c.phone_b, &c.dec_b, &set(&["A", "S"])).await;
    c.phone_a.drain();
    c.phone_s.drain();
    let (at_a, at_b, at_s) = (
        collect(&mut c.phone_a, &c.dec_a, 25).await,
        collect(&mut c.phone_b, &c.dec_b, 25).await,
        collect(&mut c.phone_s, &c.dec_s, 25).await,
    );
    assert_only(&at_a, &[set(&["B"])], "whisper: caller");
    assert_only(
        &at_b,
        &[set(&["A", "S"]), set(&["A"]), set(&["S"])],
        "whisper: agent",
    );
    assert!(at_b.contains(&set(&["A", "S"])));
    assert_only(
        &at_s,
        &[set(&["A", "B"]), set(&["A"]), set(&["B"])],
        "whisper: supervisor",
    );

    // Barge: everyone hears the other two.
    monitor.set_mode(MonitorMode::Barge).unwrap();
    until_heard(&mut c.phone_a, &c.dec_a, &set(&["B", "S"])).await;
    c.phone_b.drain();
    c.phone_s.drain();
    let (at_a, at_b, at_s) = (
        collect(&mut c.phone_a, &c.dec_a, 25).await,
        collect(&mut c.phone_b, &c.dec_b, 25).await,
        collect(&mut c.phone_s, &c.dec_s, 25).await,
    );
    assert_only(
        &at_a,
        &[set(&["B", "S"]), set(&["B"]), set(&["S"])],
        "barge: caller",
    );
    assert_only(
        &at_b,
        &[set(&["A", "S"]), set(&["A"]), set(&["S"])],
        "barge: agent",
    );
    assert_only(
        &at_s,
        &[set(&["A", "B"]), set(&["A"]), set(&["B"])],
        "barge: supervisor",
    );
    for (heard, both) in [
        (&at_a, set(&["B", "S"])),
        (&at_b, set(&["A", "S"])),
        (&at_s, set(&["A", "B"])),
    ] {
        assert!(heard.contains(&both), "{both:?} missing: {heard:?}");
    }

    // Stop: back to the plain relay, and the supervisor hears nothing more.
    monitor.stop();
    assert_eq!(metric(&telemetry, "media_monitors_active"), 0);
    until_heard(&mut c.phone_a, &c.dec_a, &set(&["B"])).await;
    c.phone_a.drain();
    c.phone_b.drain();
    let (at_a, at_b) = (
        collect(&mut c.phone_a, &c.dec_a, 25).await,
        collect(&mut c.phone_b, &c.dec_b, 25).await,
    );
    assert_only(&at_a, &[set(&["B"])], "after stop: caller");
    assert_only(&at_b, &[set(&["A"])], "after stop: agent");
    // Whatever reached the supervisor before the stop has arrived by now (500 ms of the caller's audio later);
    // from here on nothing may.
    c.phone_s.drain();
    collect(&mut c.phone_a, &c.dec_a, 10).await;
    assert_eq!(c.phone_s.drain(), 0, "the supervisor still hears the call");
    assert!(metric(&telemetry, "media_frames_mixed_total") > 0);
    // Through relay, mix and relay again, each phone saw one stream of ours.
    c.phone_a.assert_one_continuous_stream("caller");
    c.phone_b.assert_one_continuous_stream("agent");
    c.phone_s.assert_one_continuous_stream("supervisor");
    drop(bridge);
}

#[tokio::test]
async fn mute_stops_the_muted_side_and_silences_its_recording_channel() {
    let mut c = call(47100, "mute").await;
    let bridge = c.engine.bridge(&c.a, &c.b);
    let recording = bridge.start_recording("muted").unwrap();
    until_heard(&mut c.phone_a, &c.dec_a, &set(&["B"])).await;
    until_heard(&mut c.phone_b, &c.dec_b, &set(&["A"])).await;

    // The agent mutes and says something aside for 30 packets.
    bridge.mute(BridgeSide::B, true);
    assert!(bridge.is_muted(BridgeSide::B) && !bridge.is_muted(BridgeSide::A));
    c.phone_b.say(ASIDE);
    let aside_from = c.phone_b.sent();
    let mut heard_by_agent = Vec::new();
    while c.phone_b.sent() < aside_from + 30 {
        // The muted party still hears the caller.
        heard_by_agent.extend(c.dec_b.heard(&c.phone_b.next().await));
    }
    assert_only(&heard_by_agent, &[set(&["A"])], "muted agent");
    // Back to normal speech; unmute only once the agent's leg has taken in every aside packet. The phone's
    // task may have read ASIDE for a packet it has not counted yet (read, send, then count): that one is
    // packet `sent + 1`, so wait until it is both sent and received; every later packet says AGENT.
    c.phone_b.say(AGENT);
    let sent = c.phone_b.sent() + 1;
    while c.phone_b.sent() < sent || c.b.quality().packets_received < sent {
        c.phone_b.next().await; // paced by the caller's packets
    }
    bridge.mute(BridgeSide::B, false);
    // The caller hears the agent again; before that, the caller heard no aside at all.
    loop {
        let payload = c.phone_a.next().await;
        assert!(
            payload.iter().all(|b| G711::Pcmu.decode(*b) >= 0),
            "the caller heard the muted aside"
        );
        if c.dec_a.heard(&payload).contains(&set(&["B"])) {
            break;
        }
    }
    // Caller side mute: the agent stops hearing the caller.
    bridge.mute(BridgeSide::A, true);
    c.phone_b.drain();
    let before = c.phone_a.sent();
    while c.phone_a.sent() < before + 10 {
        c.phone_a.next().await;
    }
    let sent = c.phone_a.sent();
    while c.a.quality().packets_received < sent {
        c.phone_a.next().await;
    }
    let leaked = c.phone_b.drain();
    assert!(
        leaked <= 2,
        "the agent kept hearing the muted caller ({leaked} packets)"
    );

    let path = recording.stop().await.unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let frames: Vec<(i16, i16)> = bytes[44..]
        .chunks_exact(4)
        .map(|f| (i16::from_le_bytes([f[0], f[1]]), i16::from_le_bytes([f[2], f[3]])))
        .collect();
    let agent = G711::Pcma.decode(G711::Pcma.encode(AGENT));
    assert!(
        frames.iter().all(|f| f.1 == 0 || f.1 == agent),
        "the aside was recorded"
    );
    // The muted span is a run of silence on the right at least as long as the aside, with the caller on the
    // left throughout.
    let caller = G711::Pcmu.decode(G711::Pcmu.encode(CALLER));
    let (mut run, mut longest) = (0usize, 0usize);
    for f in &frames {
        if f.1 == 0 && f.0 == caller {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    assert!(longest >= 30 * 160, "silent muted span of {longest} samples");
    assert!(frames.iter().filter(|f| f.1 == agent).count() >= 10 * 160);
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn mute_and_hold_keep_working_while_barged() {
    let mut c = call(47200, "barge-mute-hold").await;
    let bridge = c.engine.bridge(&c.a, &c.b);
    let monitor = bridge.monitor(&c.s, MonitorMode::Barge).unwrap();
    until_heard(&mut c.phone_a, &c.dec_a, &set(&["B", "S"])).await;

    // The agent mutes: caller and supervisor hear only each other; the agent still hears both.
    bridge.mute(BridgeSide::B, true);
    until_heard(&mut c.phone_a, &c.dec_a, &set(&["S"])).await;
    until_heard(&mut c.phone_s, &c.dec_s, &set(&["A"])).await;
    c.phone_a.drain();
    c.phone_b.drain();
    c.phone_s.drain();
    let (at_a, at_b, at_s) = (
        collect(&mut c.phone_a, &c.dec_a, 25).await,
        collect(&mut c.phone_b, &c.dec_b, 25).await,
        collect(&mut c.phone_s, &c.dec_s, 25).await,
    );
    assert_only(&at_a, &[set(&["S"])], "caller, agent muted");
    assert_only(&at_s, &[set(&["A"])], "supervisor, agent muted");
    assert_only(
        &at_b,
        &[set(&["A", "S"]), set(&["A"]), set(&["S"])],
        "muted agent",
    );
    assert!(at_b.contains(&set(&["A", "S"])));
    bridge.mute(BridgeSide::B, false);
    until_heard(&mut c.phone_a, &c.dec_a, &set(&["B", "S"])).await;

    // The caller is held: music for the caller only; agent and supervisor talk on without the caller.
    let music = Prompt::from_samples("moh", G711::Pcmu, &vec![MUSIC; 480]);
    bridge.hold(BridgeSide::A, vec![music]);
    until_heard(&mut c.phone_a, &c.dec_a, &set(&["M"])).await;
    until_heard(&mut c.phone_b, &c.dec_b, &set(&["S"])).await;
    until_heard(&mut c.phone_s, &c.dec_s, &set(&["B"])).await;
    c.phone_a.drain();
    c.phone_b.drain();
    c.phone_s.drain();
    let (at_a, at_b, at_s) = (
        collect(&mut c.phone_a, &c.dec_a, 25).await,
        collect(&mut c.phone_b, &c.dec_b, 25).await,
        collect(&mut c.phone_s, &c.dec_s, 25).await,
    );
    assert_only(&at_a, &[set(&["M"])], "held caller");
    assert_only(&at_b, &[set(&["S"])], "agent, caller held");
    assert_only(&at_s, &[set(&["B"])], "supervisor, caller held");
    bridge.resume();
    until_heard(&mut c.phone_a, &c.dec_a, &set(&["B", "S"])).await;
    until_heard(&mut c.phone_s, &c.dec_s, &set(&["A", "B"])).await;
    drop(monitor);
}

#[tokio::test]
async fn barge_records_the_supervisor_in_the_agent_channel_and_whisper_does_not() {
    let mut c = call(47300, "record").await;
    let bridge = c.engine.bridge(&c.a, &c.b);
    let monitor = bridge.monitor(&c.s, MonitorMode::Whisper).unwrap();
    until_heard(&mut c.phone_b, &c.dec_b, &set(&["A", "S"])).await;
    let read = |path: &std::path::Path| -> Vec<(i16, i16)> {
        std::fs::read(path).unwrap()[44..]
            .chunks_exact(4)
            .map(|f| (i16::from_le_bytes([f[0], f[1]]), i16::from_le_bytes([f[2], f[3]])))
            .collect()
    };
    let caller = G711::Pcmu.decode(G711::Pcmu.encode(CALLER));
    let agent = G711::Pcma.decode(G711::Pcma.encode(AGENT));
    let supervisor = G711::Pcmu.decode(G711::Pcmu.encode(SUPERVISOR));

    let whispered = bridge.start_recording("whisper").unwrap();
    collect(&mut c.phone_b, &c.dec_b, 25).await;
    let frames = read(&whispered.stop().await.unwrap());
    assert!(
        frames.iter().all(|f| f.0 == 0 || f.0 == caller),
        "left: the caller only"
    );
    assert!(
        frames.iter().all(|f| f.1 == 0 || f.1 == agent),
        "right: the agent only, no whisper"
    );
    assert!(frames.iter().filter(|f| f.1 == agent).count() >= 20 * 160);

    monitor.set_mode(MonitorMode::Barge).unwrap();
    until_heard(&mut c.phone_a, &c.dec_a, &set(&["B", "S"])).await;
    let barged = bridge.start_recording("barge").unwrap();
    collect(&mut c.phone_a, &c.dec_a, 25).await;
    let path = barged.stop().await.unwrap();
    let frames = read(&path);
    assert!(
        frames.iter().all(|f| f.0 == 0 || f.0 == caller),
        "left: the caller only"
    );
    let both = frames.iter().filter(|f| f.1 == agent + supervisor).count();
    assert!(
        both >= 20 * 160,
        "agent and supervisor mixed on the right: {both} samples"
    );
    assert!(
        frames
            .iter()
            .all(|f| [0, agent, supervisor, agent + supervisor].contains(&f.1)),
        "right: agent and supervisor only"
    );
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[tokio::test]
async fn a_bridge_takes_one_monitor_and_not_its_own_legs() {
    let c = call(47400, "refuse").await;
    let bridge = c.engine.bridge(&c.a, &c.b);
    assert!(matches!(
        bridge.monitor(&c.a, MonitorMode::Listen),
        Err(MediaError::Monitor(_))
    ));
    let first = bridge.monitor(&c.s, MonitorMode::Listen).unwrap();
    let (other, _) = c.engine.allocate_leg().unwrap();
    assert!(matches!(
        bridge.monitor(&other, MonitorMode::Barge),
        Err(MediaError::Monitor(_))
    ));
    drop(first);
    let second = bridge.monitor(&other, MonitorMode::Barge).unwrap();
    assert_eq!(second.mode(), Some(MonitorMode::Barge));
    // Once the bridge is gone the handle is inert.
    drop(bridge);
    assert_eq!(second.mode(), None);
    assert_eq!(second.set_mode(MonitorMode::Listen), Err(MediaError::Closed));
}

#[tokio::test]
async fn the_supervisor_hanging_up_detaches_the_monitor() {
    let mut c = call(47500, "hangup").await;
    let telemetry = telemetry::Telemetry::new();
    c.engine.metrics().register(&telemetry);
    let bridge = c.engine.bridge(&c.a, &c.b);
    let monitor = bridge.monitor(&c.s, MonitorMode::Barge).unwrap();
    until_heard(&mut c.phone_a, &c.dec_a, &set(&["B", "S"])).await;
    // The supervisor's leg ends while the handle is still held.
    let Call {
        s,
        mut phone_a,
        mut phone_b,
        mut phone_s,
        dec_a,
        dec_b,
        ..
    } = c;
    drop(s);
    let mut packets = 0;
    while metric(&telemetry, "media_monitors_active") != 0 {
        phone_a.next().await; // paced by the call's audio
        packets += 1;
        assert!(packets < 200, "the monitor stayed attached");
    }
    assert_eq!(monitor.mode(), None);
    // Caller and agent are back on the relay, hearing each other only.
    phone_a.drain();
    phone_b.drain();
    assert_only(&collect(&mut phone_a, &dec_a, 25).await, &[set(&["B"])], "caller");
    assert_only(&collect(&mut phone_b, &dec_b, 25).await, &[set(&["A"])], "agent");
    phone_s.drain();
    collect(&mut phone_a, &dec_a, 10).await;
    assert_eq!(
        phone_s.drain(),
        0,
        "the hung-up supervisor's phone still gets audio"
    );
    drop(bridge);
}
