//! One RTP leg: its sockets, its task, and the handle its owner (a SIP leg in call control) holds.

use super::metrics::{DecisionLabel, LocalCounts, MediaMetrics, SourceLabel};
use super::{EngineShared, PairSockets};
use crate::amd::{AmdConfig, AmdDecision, AmdResult, AnsweringMachineDetector};
use crate::dtmf::DtmfDigit;
use crate::dtmf::inband::InbandDetector;
use crate::dtmf::rfc4733::{OutgoingEventPacket, Rfc4733Receiver, digit_packets};
use crate::g711::{G711, SAMPLES_PER_FRAME};
use crate::latch::{Admission, LatchPolicy, SendBudget, SourceGate, same_addr};
use crate::mixer::{BridgeState, Party};
use crate::prompt::{Prompt, PromptPlayer};
use crate::quality::{CallQuality, ReceptionStats};
use crate::rtcp::{
    Bye, ReceiverReport, RtcpCompound, RtcpPacket, SDES_CNAME, SdesChunk, SdesItem, SenderReport,
    ntp_from_unix_millis, ntp_middle, report_interval,
};
use crate::rtp::RtpPacket;
use crate::sdp::{MediaDirection, Negotiated};
use crate::srtp::{MAX_RTP_OVERHEAD, RTCP_OVERHEAD, SrtpError, SrtpKeys, SrtpReceiver, SrtpSender};
use crate::stream::{Millis, OutgoingStream, SourceHeader};
use domain::{Pii, Timestamp};
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;

mod confirmer;
mod receive;
mod recording;
mod relay;
pub use confirmer::LegConfirmer;
use receive::{RECEIVE_BATCH, ReceiveBatch, receive_batch};
pub(crate) use recording::{RecordedFrame, RecordedFrames, RecorderTap};
use relay::relay;
pub(crate) use relay::send_local_frame;
use tokio::sync::mpsc;
use tokio::time::{Interval, MissedTickBehavior};

/// Largest datagram the engine handles; RTP over Ethernet stays far below.
const MAX_DATAGRAM: usize = 1500;
/// Room for one locally made 20 ms G.711 packet: the RTP header, the frame and SRTP's tag.
pub(crate) const LOCAL_PACKET_MAX: usize = 12 + SAMPLES_PER_FRAME + MAX_RTP_OVERHEAD;
/// Batches of RTP a leg reads per wake-up at most (16 datagrams), so a flood on one leg cannot keep its
/// worker from the others.
const MAX_BATCHES_PER_WAKE: usize = 16 / RECEIVE_BATCH;
/// How often a leg flushes its counts, checks the media timeout and considers sending RTCP.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(1);

/// How a digit reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DtmfSource {
    /// RFC 4733 telephone-event packets.
    Rfc4733,
    /// Tones in the audio.
    InBand,
}

/// What a leg reports to its owner.
#[derive(Debug, Clone, PartialEq)]
pub enum LegEvent {
    /// A key was pressed. The digit is personal data (PINs, card numbers).
    Dtmf {
        digit: Pii<DtmfDigit>,
        source: DtmfSource,
    },
    /// The first valid RTP from an allowed source (the SDP's address, or the signalling IP of the
    /// [`LatchPolicy`]) arrived from this address; packets from elsewhere are now counted and dropped.
    Latched { peer: SocketAddr },
    /// No RTP for the configured media timeout.
    MediaTimeout { silent_for: Duration },
    /// A prompt sequence played to its end.
    PlaybackFinished,
    /// A prompt was cut short by a digit (barge-in).
    PlaybackInterrupted,
    /// The answering-machine analysis started with [`RtpLeg::detect_answering_machine`] decided.
    AnsweringMachine(AmdResult),
}

/// The sending side of a leg, shared with the partner leg's task that relays into it.
pub(crate) struct OutState {
    pub(crate) stream: OutgoingStream,
    pub(crate) remote: Option<SocketAddr>,
    /// The RTP address the remote SDP named last: a re-offer naming it again keeps `remote` (maybe latched).
    pub(crate) sdp_remote: Option<SocketAddr>,
    /// What may be sent while the dialog is unconfirmed.
    pub(crate) budget: SendBudget,
    pub(crate) law: G711,
    pub(crate) payload_type: u8,
    pub(crate) telephone_event: Option<u8>,
    pub(crate) direction: MediaDirection,
    pub(crate) negotiated: bool,
    /// A prompt, music on hold or DTMF is being sent: relayed audio is dropped meanwhile.
    pub(crate) local_feed: bool,
    /// SRTP towards the peer (SDES keys), if negotiated.
    pub(crate) srtp: Option<SrtpSender>,
}

impl OutState {
    /// Whether one more datagram may go out now (the unconfirmed-dialog budget); a refusal is counted.
    pub(crate) fn may_send(&mut self, now: Millis, metrics: &MediaMetrics) -> bool {
        if self.budget.is_confirmed() {
            return true;
        }
        let allowed = self.budget.try_spend(now);
        if !allowed {
            metrics.unconfirmed_sends_dropped.inc();
        }
        allowed
    }

    /// Where relayed or mixed audio may go now: the peer, when the leg is negotiated, sends, plays
    /// nothing of its own, and the unconfirmed-dialog budget allows one more datagram.
    pub(crate) fn relay_target(&mut self, now: Millis, metrics: &MediaMetrics) -> Option<SocketAddr> {
        if self.local_feed || !self.negotiated || !self.direction.sends() {
            return None;
        }
        let remote = self.remote?;
        self.may_send(now, metrics).then_some(remote)
    }

    /// Writes one locally made 20 ms frame (`payload`, already in the leg's law) into `packet` as the
    /// next packet of the outgoing stream, protected when the leg uses SRTP; the length to send,
    /// `None` to drop. Stamp and protection under one lock: the SRTP context is the same stream's.
    pub(crate) fn write_local_frame(
        &mut self,
        now: Millis,
        payload: &[u8],
        packet: &mut [u8; LOCAL_PACKET_MAX],
    ) -> Option<usize> {
        let stamp = self
            .stream
            .stamp_local(now, SAMPLES_PER_FRAME as u32, SAMPLES_PER_FRAME);
        let len = RtpPacket::new(
            self.payload_type,
            stamp.sequence,
            stamp.timestamp,
            self.stream.ssrc(),
            payload,
        )
        .with_marker(stamp.marker)
        .write_to(packet)
        .ok()?;
        self.protect_rtp(packet, len)
    }

    /// Protects the RTP packet in `buf[..len]` when the leg uses SRTP; the length to send, `None` to drop.
    pub(crate) fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Option<usize> {
        match self.srtp.as_mut() {
            Some(srtp) => srtp.protect_rtp(buf, len).ok(),
            None => Some(len),
        }
    }
}

pub(crate) struct RxShared {
    stats: ReceptionStats,
    round_trip_ms: Option<f64>,
}

/// State reachable from outside the leg's task.
pub(crate) struct LegShared {
    /// Back to the engine's pool of port pairs when the leg is dropped, still bound.
    sockets: Arc<PairSockets>,
    pub(crate) local: SocketAddr,
    pub(crate) out: Mutex<OutState>,
    rx: Mutex<RxShared>,
    engine: Arc<EngineShared>,
}

impl LegShared {
    pub(crate) fn rtp(&self) -> &UdpSocket {
        &self.sockets.rtp
    }

    fn rtcp(&self) -> &UdpSocket {
        &self.sockets.rtcp
    }
}

impl Drop for LegShared {
    fn drop(&mut self) {
        self.engine.metrics.legs_active.dec();
        // Only now, with no task or partner left to use them, may another leg have the sockets.
        self.engine
            .ports
            .give_back(self.local.port(), Some(self.sockets.clone()));
    }
}

/// A bridge partner as seen from one leg: where to relay, and the bridge's routing state (hold, mutes, monitor
/// mode; a [`BridgeState`] read with one atomic load per packet).
#[derive(Clone)]
pub(crate) struct PartnerLink {
    pub(crate) leg: Arc<LegShared>,
    pub(crate) state: Arc<AtomicU32>,
    /// The party of the leg holding this link.
    pub(crate) me: Party,
    /// The party of `leg`.
    pub(crate) partner: Party,
}

impl PartnerLink {
    fn state(&self) -> BridgeState {
        BridgeState::from_bits(self.state.load(Ordering::Relaxed))
    }
}

/// Up to 20 ms of one party's received G.711, on its way to a monitored bridge's mixer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MixInput {
    pub(crate) party: Party,
    pub(crate) law: G711,
    pub(crate) len: usize,
    pub(crate) bytes: [u8; SAMPLES_PER_FRAME],
}

/// Where a leg of a monitored bridge hands its received audio.
#[derive(Clone)]
pub(crate) struct MixFeed {
    pub(crate) party: Party,
    pub(crate) frames: mpsc::Sender<MixInput>,
}

impl MixFeed {
    fn push(&self, law: G711, payload: &[u8]) {
        for chunk in payload.chunks(SAMPLES_PER_FRAME) {
            let mut input = MixInput {
                party: self.party,
                law,
                len: chunk.len(),
                bytes: [law.silence(); SAMPLES_PER_FRAME],
            };
            input.bytes[..chunk.len()].copy_from_slice(chunk);
            // A full queue means the mixer is behind: dropping a frame beats delaying the leg.
            let _ = self.frames.try_send(input);
        }
    }
}

pub(crate) enum LegCommand {
    SetRemote(Negotiated, LatchPolicy),
    Play {
        prompts: Vec<Prompt>,
        looping: bool,
        barge_in: bool,
    },
    StopPlayback,
    SendDtmf {
        digit: DtmfDigit,
        duration_ms: u32,
    },
    SetPartner(Option<PartnerLink>),
    SetMixFeed(Option<MixFeed>),
    SetRecorder(Option<RecorderTap>),
    SetInbandDtmf(Option<bool>),
    SetSrtp(Option<Box<SrtpReceiver>>),
    StartAmd(AmdConfig),
    Close,
}

impl std::fmt::Debug for LegCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only the variant: prompts and digits are not for logs.
        f.write_str(match self {
            Self::SetRemote(..) => "SetRemote",
            Self::Play { .. } => "Play",
            Self::StopPlayback => "StopPlayback",
            Self::SendDtmf { .. } => "SendDtmf",
            Self::SetPartner(_) => "SetPartner",
            Self::SetMixFeed(_) => "SetMixFeed",
            Self::SetRecorder(_) => "SetRecorder",
            Self::SetInbandDtmf(_) => "SetInbandDtmf",
            Self::SetSrtp(_) => "SetSrtp",
            Self::StartAmd(_) => "StartAmd",
            Self::Close => "Close",
        })
    }
}

/// The owner's handle on a leg. Dropping it ends the leg (socket closed, port returned).
pub struct RtpLeg {
    shared: Arc<LegShared>,
    commands: mpsc::UnboundedSender<LegCommand>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for RtpLeg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtpLeg")
            .field("local", &self.shared.local)
            .finish()
    }
}

impl RtpLeg {
    /// Our RTP address (for the SDP we send).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// Applies the outcome of offer/answer (codec, telephone-event, peer address, direction) for a dialog
    /// that needs no confirmation: media only from the SDP's exact address ([`LatchPolicy::sdp_only`]), and the
    /// leg counts as confirmed ([`RtpLeg::confirm`]). Call again after each re-INVITE: our SSRC, sequence and
    /// timestamp continue; a changed peer address is latched anew.
    ///
    /// For a SIP leg answering an INVITE prefer [`RtpLeg::set_remote_with_policy`] and
    /// [`RtpLeg::confirm`] at the ACK.
    pub fn set_remote(&self, negotiated: Negotiated) {
        self.set_remote_with_policy(negotiated, LatchPolicy::sdp_only());
        self.confirm();
    }

    /// Applies the outcome of an offer/answer with its source rules: the leg accepts RTP (and RTCP) only from
    /// the SDP's address or, with [`LatchPolicy::signalling_ip`], from any port of the IP the SIP signalling
    /// came from (a phone behind NAT). The first valid packet from such a source latches the leg; nobody else
    /// can take it over, and datagrams from anyone else are counted (`media_rtp_foreign_packets_total`,
    /// `media_rtcp_foreign_packets_total`) and dropped. Call again after each re-offer: the latch stays unless
    /// the new SDP names a different address (a null address, as in hold, keeps it).
    ///
    /// Until [`RtpLeg::confirm`] the leg sends at most the engine's
    /// [`MediaConfig::unconfirmed_send_limit`](super::MediaConfig::unconfirmed_send_limit), then nothing.
    pub fn set_remote_with_policy(&self, negotiated: Negotiated, policy: LatchPolicy) {
        {
            let mut out = self.shared.out.lock();
            out.law = negotiated.law;
            out.payload_type = negotiated.payload_type;
            out.telephone_event = negotiated.telephone_event;
            out.direction = negotiated.direction;
            out.negotiated = true;
            if let Some(remote) = negotiated.remote
                && !out.sdp_remote.is_some_and(|known| same_addr(known, remote))
            {
                out.sdp_remote = Some(remote);
                out.remote = Some(remote);
            }
        }
        self.send(LegCommand::SetRemote(negotiated, policy));
    }

    /// The dialog is confirmed (the ACK of the INVITE arrived, or we sent the ACK of our own INVITE): the
    /// leg may send without limit from now on. Idempotent.
    pub fn confirm(&self) {
        self.shared.out.lock().budget.confirm();
    }

    /// Protects the leg with SRTP (RFC 3711) from now on, with SDES keys from offer/answer
    /// ([`crate::sdes::answer_crypto`] or [`crate::sdes::keys_from_answer`]): what it sends is encrypted with
    /// `keys.local`, what it receives must be authentic under `keys.remote` (forgeries and replays are counted
    /// in `media_srtp_rejected_total` and dropped). `None` returns to plain RTP. Call it before
    /// [`RtpLeg::set_remote_with_policy`] for the same offer/answer, and again when a re-offer changes the keys.
    pub fn set_srtp(&self, keys: Option<SrtpKeys>) {
        let (sender, receiver) = match keys.map(|k| k.contexts()) {
            Some((sender, receiver)) => (Some(sender), Some(Box::new(receiver))),
            None => (None, None),
        };
        self.shared.out.lock().srtp = sender;
        self.send(LegCommand::SetSrtp(receiver));
    }

    /// A handle that confirms this leg later (when the ACK arrives on another task) without keeping the
    /// leg alive: confirming a leg that has ended does nothing.
    pub fn confirmer(&self) -> LegConfirmer {
        LegConfirmer {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Whether [`RtpLeg::confirm`] (or [`RtpLeg::set_remote`]) was called.
    pub fn is_confirmed(&self) -> bool {
        self.shared.out.lock().budget.is_confirmed()
    }

    /// Plays prompts in order (in a loop for music on hold); with `barge_in`, a digit stops them.
    /// Relayed audio to this leg pauses while they play.
    pub fn play(&self, prompts: Vec<Prompt>, looping: bool, barge_in: bool) {
        self.send(LegCommand::Play {
            prompts,
            looping,
            barge_in,
        });
    }

    /// Stops the current prompt, if any.
    pub fn stop_playback(&self) {
        self.send(LegCommand::StopPlayback);
    }

    /// Sends a digit as RFC 4733 telephone-events (if the peer accepted them; otherwise nothing is sent).
    pub fn send_dtmf(&self, digit: DtmfDigit, duration_ms: u32) {
        self.send(LegCommand::SendDtmf { digit, duration_ms });
    }

    /// Forces in-band DTMF detection on or off; `None` returns to the default (on when the peer did not
    /// negotiate telephone-event).
    pub fn set_inband_dtmf(&self, enabled: Option<bool>) {
        self.send(LegCommand::SetInbandDtmf(enabled));
    }

    /// Starts answering-machine analysis on the audio received from now on; the result comes as
    /// [`LegEvent::AnsweringMachine`] (at the latest after the configured total analysis time of audio).
    pub fn detect_answering_machine(&self, config: AmdConfig) {
        self.send(LegCommand::StartAmd(config));
    }

    /// Loss, jitter and MOS of what this leg has received so far.
    pub fn quality(&self) -> CallQuality {
        let rx = self.shared.rx.lock();
        CallQuality::from_stats(&rx.stats, rx.round_trip_ms)
    }

    /// Packets and octets sent on this leg.
    pub fn sent(&self) -> (u32, u32) {
        let out = self.shared.out.lock();
        (out.stream.packets_sent(), out.stream.octets_sent())
    }

    /// Ends the leg (sends RTCP BYE) and waits for its task to finish.
    pub async fn close(mut self) {
        self.send(LegCommand::Close);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub(crate) fn shared(&self) -> &Arc<LegShared> {
        &self.shared
    }

    pub(crate) fn send(&self, command: LegCommand) {
        // A closed leg has no one to obey; the command is moot.
        let _ = self.commands.send(command);
    }

    pub(crate) fn commands(&self) -> mpsc::UnboundedSender<LegCommand> {
        self.commands.clone()
    }
}

impl Drop for RtpLeg {
    fn drop(&mut self) {
        let _ = self.commands.send(LegCommand::Close);
    }
}

pub(crate) fn spawn_leg(
    engine: Arc<EngineShared>,
    port: u16,
    sockets: Arc<PairSockets>,
    runtime: &tokio::runtime::Handle,
) -> (RtpLeg, mpsc::Receiver<LegEvent>) {
    let local = SocketAddr::new(engine.config.bind_ip, port);
    let ssrc: u32 = rand::random();
    let stream = OutgoingStream::new(ssrc, rand::random(), rand::random());
    let shared = Arc::new(LegShared {
        sockets,
        local,
        out: Mutex::new(OutState {
            stream,
            remote: None,
            sdp_remote: None,
            budget: SendBudget::unconfirmed(engine.config.unconfirmed_send_limit),
            law: G711::Pcmu,
            payload_type: 0,
            telephone_event: None,
            direction: MediaDirection::SendRecv,
            negotiated: false,
            local_feed: false,
            srtp: None,
        }),
        rx: Mutex::new(RxShared {
            stats: ReceptionStats::new(),
            round_trip_ms: None,
        }),
        engine: engine.clone(),
    });
    let (commands, command_rx) = mpsc::unbounded_channel();
    let (events, event_rx) = mpsc::channel(engine.config.event_capacity);
    let task = LegTask {
        shared: shared.clone(),
        events,
        epoch: engine.epoch,
        media_timeout: engine.config.media_timeout,
        rtcp_interval: engine.config.rtcp_interval,
        ssrc,
        negotiated: None,
        gate: SourceGate::new(),
        srtp: None,
        remote_ssrc: None,
        rfc4733: Rfc4733Receiver::new(),
        inband: None,
        inband_override: None,
        amd: None,
        counts: LocalCounts::default(),
        metrics: engine.metrics.clone(),
        last_rx: Instant::now(),
        timeout_reported: false,
        partner: None,
        mix: None,
        recorder: None,
        player: None,
        dtmf_out: VecDeque::new(),
        dtmf_event_timestamp: 0,
        tick: None,
        last_rtcp_sent: Instant::now(),
        next_rtcp: Instant::now() + report_interval(engine.config.rtcp_interval, rand::random()),
        cname: format!("media@{local}").into_bytes(),
        last_sr: None,
        sent_since_report: false,
        sent_rtcp: false,
    };
    let handle = runtime.spawn(task.run(command_rx));
    (
        RtpLeg {
            shared,
            commands,
            task: Some(handle),
        },
        event_rx,
    )
}

struct LegTask {
    shared: Arc<LegShared>,
    events: mpsc::Sender<LegEvent>,
    epoch: Instant,
    media_timeout: Duration,
    rtcp_interval: Duration,
    ssrc: u32,
    negotiated: Option<Negotiated>,
    /// Who may send RTP and RTCP here, and who latched.
    gate: SourceGate,
    /// SRTP from the peer, if negotiated.
    srtp: Option<Box<SrtpReceiver>>,
    remote_ssrc: Option<u32>,
    rfc4733: Rfc4733Receiver,
    inband: Option<InbandDetector>,
    inband_override: Option<bool>,
    amd: Option<AnsweringMachineDetector>,
    counts: LocalCounts,
    metrics: MediaMetrics,
    last_rx: Instant,
    timeout_reported: bool,
    partner: Option<PartnerLink>,
    mix: Option<MixFeed>,
    recorder: Option<RecorderTap>,
    player: Option<(PromptPlayer, bool)>,
    dtmf_out: VecDeque<OutgoingEventPacket>,
    dtmf_event_timestamp: u32,
    tick: Option<Interval>,
    last_rtcp_sent: Instant,
    /// When the next report is due (randomised per RFC 3550 §6.3.1).
    next_rtcp: Instant,
    /// Our SDES CNAME, made once.
    cname: Vec<u8>,
    /// Middle of the NTP timestamp of the peer's last SR, and when it arrived.
    last_sr: Option<(u32, Instant)>,
    sent_since_report: bool,
    /// Whether any RTCP report went out (a leg that sent nothing leaves without a BYE).
    sent_rtcp: bool,
}

/// What woke a leg, in the order it is looked at: a command first (a close must not wait behind a
/// flood), then RTP, RTCP, the playback tick and the housekeeping tick.
enum Wake {
    Command(Option<LegCommand>),
    Rtp(std::io::Result<()>),
    Rtcp,
    Tick,
    Housekeeping,
}

/// Polls each source of a leg's work in place. Futures made afresh on every wake-up (`select!` over
/// `recv`, `readable`, `recv_from` and two ticks) cost a waiter linked into and out of each socket's
/// list under its lock and five futures built and dropped, for every packet; `poll_recv_ready` keeps
/// one waker per socket instead.
fn poll_wake(
    cx: &mut std::task::Context<'_>,
    commands: &mut mpsc::UnboundedReceiver<LegCommand>,
    shared: &LegShared,
    tick: &mut Option<Interval>,
    housekeeping: &mut Interval,
) -> std::task::Poll<Wake> {
    use std::task::Poll;
    if let Poll::Ready(command) = commands.poll_recv(cx) {
        return Poll::Ready(Wake::Command(command));
    }
    if let Poll::Ready(ready) = shared.rtp().poll_recv_ready(cx) {
        return Poll::Ready(Wake::Rtp(ready));
    }
    if let Poll::Ready(Ok(())) = shared.rtcp().poll_recv_ready(cx) {
        return Poll::Ready(Wake::Rtcp);
    }
    if let Some(interval) = tick
        && interval.poll_tick(cx).is_ready()
    {
        return Poll::Ready(Wake::Tick);
    }
    if housekeeping.poll_tick(cx).is_ready() {
        return Poll::Ready(Wake::Housekeeping);
    }
    Poll::Pending
}

impl LegTask {
    fn now_ms(&self, at: Instant) -> Millis {
        at.saturating_duration_since(self.epoch).as_millis() as Millis
    }

    fn emit(&self, event: LegEvent) {
        // A full queue means the owner is not reading; dropping keeps the media path running.
        if self.events.try_send(event).is_err() {
            tracing::debug!(local = %self.shared.local, "leg event dropped: owner not keeping up");
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<LegCommand>) {
        let mut batch = ReceiveBatch::new();
        let mut rtcp_buf = [0u8; MAX_DATAGRAM];
        // Each leg's once-a-second housekeeping (metrics, media timeout, RTCP) starts at a random phase:
        // legs opened together would otherwise all wake in the same instant every second and delay the
        // packets queued behind them (`bench media` p99 latency at 1000 calls).
        let phase = HOUSEKEEPING_PERIOD.mul_f64(rand::random::<f64>());
        let mut housekeeping =
            tokio::time::interval_at(tokio::time::Instant::now() + phase, HOUSEKEEPING_PERIOD);
        housekeeping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let wake = std::future::poll_fn(|cx| {
                poll_wake(cx, &mut commands, &self.shared, &mut self.tick, &mut housekeeping)
            })
            .await;
            match wake {
                Wake::Command(None | Some(LegCommand::Close)) => break,
                Wake::Command(Some(command)) => self.handle_command(command),
                Wake::Rtp(Ok(())) => {
                    // What is queued, up to 16 datagrams, before the other sources get a look.
                    for _ in 0..MAX_BATCHES_PER_WAKE {
                        let Ok(count) = receive_batch(self.shared.rtp(), &mut batch) else {
                            break;
                        };
                        let ReceiveBatch { datagrams, received } = &mut batch;
                        for (datagram, (len, from)) in datagrams.iter_mut().zip(*received).take(count) {
                            if let Some(from) = from {
                                self.on_rtp(datagram, len, from);
                            }
                        }
                        if count < RECEIVE_BATCH {
                            break;
                        }
                    }
                }
                Wake::Rtp(Err(_)) => {}
                Wake::Rtcp => {
                    // One report per wake-up; an empty queue clears the readiness.
                    if let Ok((len, from)) = self.shared.rtcp().try_recv_from(&mut rtcp_buf) {
                        self.on_rtcp(rtcp_buf.get_mut(..len).unwrap_or(&mut []), from);
                    }
                }
                Wake::Tick => self.on_tick(),
                Wake::Housekeeping => self.housekeeping(),
            }
        }
        // RFC 3550 §6.3.7: a participant that never sent an RTP or RTCP packet must not send a BYE.
        let sent_rtp = self.shared.out.lock().stream.packets_sent() > 0;
        if sent_rtp || self.sent_rtcp {
            self.send_rtcp(true);
        }
        self.counts.flush(&self.metrics);
        let quality = {
            let rx = self.shared.rx.lock();
            (rx.stats.received() > 0).then(|| CallQuality::from_stats(&rx.stats, rx.round_trip_ms))
        };
        if let Some(quality) = quality {
            self.metrics.leg_mos.observe(quality.mos);
            self.metrics.leg_loss.observe(quality.loss_fraction);
        }
    }

    fn inband_wanted(&self) -> bool {
        self.inband_override
            .unwrap_or_else(|| self.negotiated.is_some_and(|n| n.telephone_event.is_none()))
    }

    fn handle_command(&mut self, command: LegCommand) {
        match command {
            LegCommand::SetRemote(negotiated, policy) => {
                // A new address from SDP (re-INVITE) clears the latch: the real source is learnt again.
                self.gate.renegotiate(negotiated.remote, policy);
                self.negotiated = Some(negotiated);
                self.last_rx = Instant::now();
                self.timeout_reported = false;
                self.inband = if self.inband_wanted() {
                    Some(self.inband.take().unwrap_or_default())
                } else {
                    None
                };
            }
            LegCommand::SetInbandDtmf(enabled) => {
                self.inband_override = enabled;
                self.inband = if self.inband_wanted() {
                    Some(InbandDetector::default())
                } else {
                    None
                };
            }
            LegCommand::Play {
                prompts,
                looping,
                barge_in,
            } => {
                let law = self.shared.out.lock().law;
                self.player = Some((PromptPlayer::new(prompts, law, looping), barge_in));
                self.start_ticking();
            }
            LegCommand::StopPlayback => {
                if self.player.take().is_some() {
                    self.stop_ticking_if_idle();
                }
            }
            LegCommand::SendDtmf { digit, duration_ms } => {
                let now = self.now_ms(Instant::now());
                let out = self.shared.out.lock();
                if out.telephone_event.is_none() {
                    return;
                }
                if self.dtmf_out.is_empty() {
                    self.dtmf_event_timestamp = out.stream.begin_event(now);
                }
                drop(out);
                self.dtmf_out.extend(digit_packets(digit, duration_ms, 10));
                self.start_ticking();
            }
            LegCommand::SetSrtp(receiver) => self.srtp = receiver,
            LegCommand::StartAmd(config) => self.amd = Some(AnsweringMachineDetector::new(config)),
            LegCommand::SetPartner(partner) => self.partner = partner,
            LegCommand::SetMixFeed(feed) => self.mix = feed,
            LegCommand::SetRecorder(tap) => self.recorder = tap,
            LegCommand::Close => {}
        }
    }

    fn start_ticking(&mut self) {
        self.shared.out.lock().local_feed = true;
        if self.tick.is_none() {
            let mut interval = tokio::time::interval(Duration::from_millis(20));
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            self.tick = Some(interval);
        }
    }

    fn stop_ticking_if_idle(&mut self) {
        if self.player.is_none() && self.dtmf_out.is_empty() {
            self.tick = None;
            self.shared.out.lock().local_feed = false;
        }
    }

    /// Sends the next 20 ms of locally generated media: DTMF first, then the prompt.
    fn on_tick(&mut self) {
        let now = self.now_ms(Instant::now());
        let mut packet = [0u8; LOCAL_PACKET_MAX];
        if let Some(event) = self.dtmf_out.pop_front() {
            let payload = event.event.to_bytes();
            let prepared = {
                let mut out = self.shared.out.lock();
                match (out.telephone_event, out.remote) {
                    (Some(pt), Some(remote)) if out.may_send(now, &self.metrics) => {
                        let elapsed = u32::from(event.event.duration);
                        let stamp =
                            out.stream
                                .stamp_event(now, self.dtmf_event_timestamp, event.marker, elapsed);
                        Some((pt, remote, stamp, out.stream.ssrc()))
                    }
                    _ => None,
                }
            };
            if let Some((pt, remote, stamp, ssrc)) = prepared {
                let rtp = RtpPacket::new(pt, stamp.sequence, stamp.timestamp, ssrc, &payload)
                    .with_marker(stamp.marker);
                if let Ok(len) = rtp.write_to(&mut packet)
                    && let Some(len) = self.shared.out.lock().protect_rtp(&mut packet, len)
                {
                    let _ = self
                        .shared
                        .rtp()
                        .try_send_to(packet.get(..len).unwrap_or(&[]), remote);
                    self.sent_since_report = true;
                    self.counts.sent_local += 1;
                }
            }
            if self.dtmf_out.is_empty() {
                self.stop_ticking_if_idle();
            }
            return;
        }
        let Some((player, _)) = self.player.as_mut() else {
            self.stop_ticking_if_idle();
            return;
        };
        let mut frame = [0u8; SAMPLES_PER_FRAME];
        if !player.next_frame(&mut frame) {
            self.player = None;
            self.emit(LegEvent::PlaybackFinished);
            self.stop_ticking_if_idle();
            return;
        }
        let mut out = self.shared.out.lock();
        let Some(remote) = out.remote.filter(|_| out.direction.sends() && out.negotiated) else {
            return;
        };
        if !out.may_send(now, &self.metrics) {
            return;
        }
        if let Some(len) = out.write_local_frame(now, &frame, &mut packet) {
            drop(out);
            let _ = self
                .shared
                .rtp()
                .try_send_to(packet.get(..len).unwrap_or(&[]), remote);
            self.sent_since_report = true;
            self.counts.sent_local += 1;
        }
    }

    fn on_rtp(&mut self, buf: &mut [u8; MAX_DATAGRAM], len: usize, from: SocketAddr) {
        let admission = self.gate.admit_rtp(from);
        if admission == Admission::Foreign {
            self.counts.foreign_rtp += 1; // not the SDP's address, the signalling IP or the latched peer
            return;
        }
        // SRTP: only an authentic, fresh packet goes further (and only such a packet can latch the leg).
        let len = match self.srtp.as_mut() {
            Some(srtp) => match srtp.unprotect_rtp(buf.get_mut(..len).unwrap_or(&mut [])) {
                Ok(len) => len,
                Err(error) => {
                    self.count_srtp_rejection(error);
                    return;
                }
            },
            None => len,
        };
        if self.accept_rtp(buf, len, from, admission) {
            self.counts.received += 1;
        } else {
            self.counts.ignored += 1;
        }
    }

    /// Handles one datagram from an admitted source; false if it was ignored.
    fn accept_rtp(
        &mut self,
        buf: &mut [u8; MAX_DATAGRAM],
        len: usize,
        from: SocketAddr,
        admission: Admission,
    ) -> bool {
        let Some(negotiated) = self.negotiated else {
            return false;
        };
        let Some(datagram) = buf.get(..len) else {
            return false;
        };
        let Ok(packet) = RtpPacket::parse(datagram) else {
            return false;
        };
        let is_event = negotiated.telephone_event == Some(packet.payload_type);
        if !is_event && packet.payload_type != negotiated.payload_type {
            return false; // comfort noise or a codec we did not agree to
        }
        let header = SourceHeader {
            ssrc: packet.ssrc,
            sequence: packet.sequence,
            timestamp: packet.timestamp,
            marker: packet.marker,
        };
        let payload_offset = packet.payload.as_ptr() as usize - datagram.as_ptr() as usize;
        let payload_len = packet.payload.len();
        let arrived = Instant::now();
        let now = self.now_ms(arrived);

        if admission == Admission::Candidate && self.gate.latch_rtp(from) {
            self.shared.out.lock().remote = Some(from);
            self.emit(LegEvent::Latched { peer: from });
        }
        if self.remote_ssrc != Some(packet.ssrc) {
            // A new source (re-INVITE, transfer): its sequence and timestamps start afresh.
            self.remote_ssrc = Some(packet.ssrc);
            self.shared.rx.lock().stats.start_new_source();
            self.rfc4733.flush();
            while let Some(received) = self.rfc4733.poll_digit() {
                self.on_digit(received.digit, DtmfSource::Rfc4733);
            }
            self.rfc4733 = Rfc4733Receiver::new();
        }
        let arrival_us = arrived.saturating_duration_since(self.epoch).as_micros() as i64;
        self.shared
            .rx
            .lock()
            .stats
            .on_packet(packet.sequence, packet.timestamp, arrival_us);
        self.last_rx = arrived;
        self.timeout_reported = false;

        if is_event {
            self.rfc4733.handle_packet(packet.timestamp, packet.payload);
            while let Some(received) = self.rfc4733.poll_digit() {
                self.on_digit(received.digit, DtmfSource::Rfc4733);
            }
        } else {
            if self.recorder.is_some() {
                self.record(packet.payload, packet.timestamp, now, negotiated.law);
            }
            if self.inband.is_some() || self.amd.is_some() {
                self.decode_side_paths(packet.payload, negotiated.law);
            }
            if let Some(feed) = &self.mix {
                feed.push(negotiated.law, packet.payload);
            }
        }

        if let Some(partner) = &self.partner
            && relay(
                partner,
                buf,
                len,
                payload_offset,
                payload_len,
                header,
                is_event,
                negotiated.law,
                now,
            )
        {
            self.counts.relayed += 1;
        }
        true
    }

    /// Leaves the payload for the recording as it came, in 20 ms pieces: the recorder decodes it on its
    /// own tick, so the packet goes on to the other party without waiting for a decode.
    fn record(&self, payload: &[u8], timestamp: u32, now: Millis, law: G711) {
        let Some(tap) = &self.recorder else { return };
        let muted = self
            .partner
            .as_ref()
            .is_some_and(|link| link.state().is_muted(link.me));
        for (index, chunk) in payload.chunks(SAMPLES_PER_FRAME).enumerate() {
            let mut frame = RecordedFrame {
                channel: tap.channel,
                timestamp: timestamp.wrapping_add((index * SAMPLES_PER_FRAME) as u32),
                arrival: now,
                law,
                muted,
                len: chunk.len(),
                payload: [0; SAMPLES_PER_FRAME],
            };
            if let Some(to) = frame.payload.get_mut(..chunk.len()) {
                to.copy_from_slice(chunk);
            }
            tap.frames.push(frame);
        }
    }

    /// In-band DTMF detection and answering-machine detection need linear audio; only legs that use
    /// them pay for decoding on the packet path.
    fn decode_side_paths(&mut self, payload: &[u8], law: G711) {
        let mut digits = [None::<DtmfDigit>; 4];
        let mut found = 0;
        for chunk in payload.chunks(SAMPLES_PER_FRAME) {
            let mut samples = [0i16; SAMPLES_PER_FRAME];
            law.decode_into(chunk, &mut samples);
            let samples = samples.get(..chunk.len()).unwrap_or(&[]);
            if let Some(result) = self.amd.as_mut().and_then(|amd| amd.push_frame(samples)) {
                self.amd = None;
                let decision = match result.decision {
                    AmdDecision::Human => "human",
                    AmdDecision::Machine => "machine",
                    AmdDecision::NotSure => "notsure",
                };
                let label = DecisionLabel {
                    decision,
                    reason: result.reason.as_str(),
                };
                self.metrics.amd_results.get_or_create(&label).inc();
                self.emit(LegEvent::AnsweringMachine(result));
            }
            if let Some(detector) = self.inband.as_mut() {
                detector.process(samples, |d| {
                    if let Some(slot) = digits.get_mut(found) {
                        *slot = Some(d.digit);
                        found += 1;
                    }
                });
            }
        }
        for digit in digits.into_iter().flatten() {
            self.on_digit(digit, DtmfSource::InBand);
        }
    }

    fn on_digit(&mut self, digit: DtmfDigit, source: DtmfSource) {
        if let Some((player, true)) = self.player.as_mut() {
            player.stop();
            self.player = None;
            self.emit(LegEvent::PlaybackInterrupted);
            self.stop_ticking_if_idle();
        }
        let label = match source {
            DtmfSource::Rfc4733 => "rfc4733",
            DtmfSource::InBand => "inband",
        };
        self.metrics
            .dtmf_digits
            .get_or_create(&SourceLabel { source: label })
            .inc();
        self.emit(LegEvent::Dtmf {
            digit: Pii::new(digit),
            source,
        });
    }

    fn count_srtp_rejection(&mut self, error: SrtpError) {
        match error {
            SrtpError::Replay => self.counts.srtp_replayed += 1,
            _ => self.counts.srtp_unauthentic += 1,
        }
    }

    fn on_rtcp(&mut self, datagram: &mut [u8], from: SocketAddr) {
        if !self.gate.admit_rtcp(from) {
            self.counts.foreign_rtcp += 1;
            return;
        }
        let datagram = match self.srtp.as_mut() {
            Some(srtp) => match srtp.unprotect_rtcp(datagram) {
                Ok(len) => datagram.get(..len).unwrap_or(&[]),
                Err(error) => {
                    self.count_srtp_rejection(error);
                    return;
                }
            },
            None => datagram,
        };
        let Ok(compound) = RtcpCompound::parse(datagram) else {
            return;
        };
        let arrived = Instant::now();
        for packet in &compound.packets {
            let reports = match packet {
                RtcpPacket::SenderReport(sr) => {
                    self.last_sr = Some((ntp_middle(sr.ntp_timestamp), arrived));
                    &sr.reports
                }
                RtcpPacket::ReceiverReport(rr) => &rr.reports,
                _ => continue,
            };
            for block in reports.iter().filter(|b| b.ssrc == self.ssrc && b.last_sr != 0) {
                // RTT = now - LSR - DLSR, all in 1/65536 s (RFC 3550 6.4.1).
                let now_mid = ntp_middle(ntp_from_unix_millis(Timestamp::now_utc().as_millis()));
                let rtt = now_mid
                    .wrapping_sub(block.last_sr)
                    .wrapping_sub(block.delay_since_last_sr);
                if rtt < 65536 * 10 {
                    self.shared.rx.lock().round_trip_ms = Some(f64::from(rtt) * 1000.0 / 65536.0);
                }
            }
        }
    }

    fn housekeeping(&mut self) {
        self.counts.flush(&self.metrics);
        let now = Instant::now();
        let receiving = self
            .negotiated
            .is_some_and(|n| n.direction.receives() && n.remote.is_some());
        if receiving && !self.timeout_reported {
            let silent_for = now.saturating_duration_since(self.last_rx);
            if silent_for >= self.media_timeout {
                self.timeout_reported = true;
                self.metrics.media_timeouts.inc();
                self.emit(LegEvent::MediaTimeout { silent_for });
            }
        }
        if now >= self.next_rtcp {
            self.send_rtcp(false);
        }
    }

    fn send_rtcp(&mut self, bye: bool) {
        self.last_rtcp_sent = Instant::now();
        self.next_rtcp = self.last_rtcp_sent + report_interval(self.rtcp_interval, rand::random());
        let Some(target) = self.gate.rtcp_target() else {
            return;
        };
        let now = self.now_ms(self.last_rtcp_sent);
        if !self.shared.out.lock().may_send(now, &self.metrics) {
            return;
        }
        let (last_sr, dlsr) = match self.last_sr {
            Some((middle, at)) => {
                let delay = at.elapsed().as_secs_f64() * 65536.0;
                (middle, delay.min(f64::from(u32::MAX)) as u32)
            }
            None => (0, 0),
        };
        let reports = match self.remote_ssrc {
            Some(ssrc) => vec![self.shared.rx.lock().stats.report_block(ssrc, last_sr, dlsr)],
            None => Vec::new(),
        };
        let (packets, octets, rtp_timestamp) = {
            let out = self.shared.out.lock();
            (
                out.stream.packets_sent(),
                out.stream.octets_sent(),
                out.stream.next_timestamp(),
            )
        };
        let first = if self.sent_since_report {
            RtcpPacket::SenderReport(SenderReport {
                ssrc: self.ssrc,
                ntp_timestamp: ntp_from_unix_millis(Timestamp::now_utc().as_millis()),
                rtp_timestamp,
                packet_count: packets,
                octet_count: octets,
                reports,
                extension: Vec::new(),
            })
        } else {
            RtcpPacket::ReceiverReport(ReceiverReport {
                ssrc: self.ssrc,
                reports,
                extension: Vec::new(),
            })
        };
        self.sent_since_report = false;
        let mut packets = vec![
            first,
            RtcpPacket::SourceDescription(vec![SdesChunk {
                ssrc: self.ssrc,
                items: vec![SdesItem {
                    kind: SDES_CNAME,
                    text: self.cname.clone(),
                }],
            }]),
        ];
        if bye {
            packets.push(RtcpPacket::Bye(Bye {
                ssrcs: vec![self.ssrc],
                reason: None,
            }));
        }
        if let Ok(mut bytes) = (RtcpCompound { packets }).to_bytes() {
            let mut out = self.shared.out.lock();
            if let Some(srtp) = out.srtp.as_mut() {
                let len = bytes.len();
                bytes.resize(len + RTCP_OVERHEAD, 0);
                match srtp.protect_rtcp(&mut bytes, len) {
                    Ok(len) => bytes.truncate(len),
                    Err(_) => return,
                }
            }
            drop(out);
            if self.shared.rtcp().try_send_to(&bytes, target).is_ok() {
                self.sent_rtcp = true;
            }
        }
    }
}
