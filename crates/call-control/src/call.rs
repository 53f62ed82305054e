//! One customer call from answer to hang-up: the SIP leg, its RTP leg in the media engine, the IVR
//! session, the place in the ACD queue, the agent's leg once an offer is answered, and the timeline of
//! interaction events. Everything the call does happens in this one task, so its state needs no locks.

use crate::acd_task::QueueNotice;
use crate::desk::{
    AgentCommand, AgentMedia, CallPhase, CommandRequest, CommandResult, DeskEvent, IvrPop, Refusal,
    ScreenPop, SuperviseMode, TransferTarget,
};
use crate::{Inner, Timeline};
use domain::{
    AgentId, CallId, Channel, Direction, EndedBy, InteractionEventKind, InteractionId, Pii, QualityReport,
    Timestamp,
};
use ivr::{IvrCommand, IvrEvent, IvrSession};
use media::engine::{
    Bridge, BridgeSide, LegEvent as MediaEvent, MonitorHandle, MonitorMode, RecordingHandle, RtpLeg,
};
use media::g711::G711;
use media::webrtc::{WebRtcEvent, WebRtcLeg};
use sip_gateway::{InboundCall, LegEvent, LegHandle, OriginateRequest, RouteTarget};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

const SUPPORTED: [G711; 2] = [G711::Pcmu, G711::Pcma];

/// Results of work the call started in the background.
pub(crate) enum Done {
    Lookup(ivr::RequestId, ivr::LookupResult),
    Webhook(ivr::RequestId, ivr::WebhookResult),
    QueueState(ivr::RequestId, ivr::QueueSnapshot),
}

/// An agent being offered this call: their SIP phone rings, or (browser softphone) their desktop
/// shows the offer and answers with an SDP offer of its own.
struct Ringing {
    agent: AgentId,
    phone: Option<PhoneRing>,
}

/// An outside party the caller was transferred to: ringing, then bridged with the caller.
struct External {
    leg: LegHandle,
    rtp: RtpLeg,
    bridge: Option<Bridge>,
}

/// A message being recorded for a mailbox.
struct Voicemail {
    mailbox: String,
    recording: RecordingHandle,
    started: Instant,
    until: Instant,
}

/// The party an agent consults before transferring: ringing, then talking with the agent (through
/// the bridge's mixer, barge mode) while the caller holds.
struct Consult {
    leg: LegHandle,
    rtp: RtpLeg,
    described: String,
    joined: Option<MonitorHandle>,
}

/// A supervisor on the agent's call: their phone ringing, or joined through the bridge's mixer.
enum Supervisor {
    Ringing {
        supervisor: AgentId,
        mode: SuperviseMode,
        phone: PhoneRing,
    },
    Joined {
        supervisor: AgentId,
        handle: MonitorHandle,
        /// The engine leg the supervisor hears and speaks on (kept alive while joined).
        _rtp: RtpLeg,
        leg: SupervisorLeg,
    },
}

enum SupervisorLeg {
    Phone(LegHandle),
    Browser(WebRtcLeg),
}

fn monitor_mode(mode: SuperviseMode) -> MonitorMode {
    match mode {
        SuperviseMode::Listen => MonitorMode::Listen,
        SuperviseMode::Whisper => MonitorMode::Whisper,
        SuperviseMode::Barge => MonitorMode::Barge,
    }
}

/// How the connected agent hears the caller.
pub(crate) enum AgentLeg {
    Phone(LegHandle),
    /// The browser softphone. Its media may drop (a page reload): the caller then hears music on
    /// hold until the desktop re-attaches with a new offer, for up to [`MEDIA_REATTACH_GRACE`].
    Browser {
        leg: Option<WebRtcLeg>,
        lost_at: Option<Instant>,
    },
}

impl AgentLeg {
    pub(crate) fn hang_up(self) {
        match self {
            AgentLeg::Phone(leg) => leg.hangup(),
            // Dropping the WebRTC leg ends the peer.
            AgentLeg::Browser { .. } => {}
        }
    }
}

/// What happened on the connected agent's side.
enum AgentSide {
    Phone(Option<LegEvent>),
    BrowserMediaLost,
    ReattachExpired,
}

/// How long a browser agent's desktop has to bring its media back after losing it.
pub(crate) const MEDIA_REATTACH_GRACE: Duration = Duration::from_secs(30);

/// The agent's SIP phone, ringing.
pub(crate) struct PhoneRing {
    pub(crate) leg: LegHandle,
    pub(crate) rtp: RtpLeg,
}

/// The agent talking to the caller.
struct Connected {
    agent: AgentId,
    leg: AgentLeg,
    rtp: RtpLeg,
    bridge: Bridge,
    recording: Option<RecordingHandle>,
}

pub(crate) struct Call {
    inner: Arc<Inner>,
    id: CallId,
    timeline: Timeline,
    caller: LegHandle,
    rtp: RtpLeg,
    law: G711,
    ivr: Option<IvrSession>,
    timers: HashMap<ivr::TimerId, Instant>,
    done_tx: mpsc::UnboundedSender<Done>,
    queue: Option<(domain::QueueId, mpsc::UnboundedReceiver<QueueNotice>)>,
    ringing: Vec<Ringing>,
    connected: Option<Connected>,
    /// The IVR asked to keep sensitive input (card numbers) off the recording.
    recording_paused: bool,
    ended: Option<(EndedBy, String)>,
    caller_number: Pii<String>,
    called_number: Pii<String>,
    /// The CRM record of the caller, looked up once when the call is first offered.
    customer: Option<Option<crm_store::CustomerCard>>,
    /// The queue the call last waited in and its priority (a transfer to an agent goes back there).
    last_queue: Option<(domain::QueueId, u8)>,
    /// The agent who last talked to the caller: their desktop gets the wrap-up.
    last_agent: Option<AgentId>,
    /// The outside number the caller was transferred to.
    external: Option<External>,
    /// A supervisor listening, whispering or barging in.
    supervisor: Option<Supervisor>,
    /// The party the agent consults.
    consult: Option<Consult>,
    /// A voicemail being recorded.
    voicemail: Option<Voicemail>,
    /// The caller asked to be called back on this number: their place in line is kept after they
    /// hang up.
    callback: Option<Pii<String>>,
    /// The router was already told the agent took the call (callbacks accept before dialling).
    pub(crate) acd_accepted: bool,
    /// An agent-placed call: the agent is outside the ACD's offers while it lasts, and this input
    /// puts them back as they were (ready, or not ready with their reason).
    pub(crate) outbound: Option<acd::Input>,
    /// A campaign's answered call (live dialer): an agent must be connected by the link's deadline,
    /// or the identification message plays and the call ends as abandoned.
    pub(crate) campaign: Option<crate::campaign_runner::CampaignLink>,
    /// Agents' commands from their desktops (the desk hub holds the sending side).
    commands_tx: mpsc::UnboundedSender<CommandRequest>,
    commands_rx: mpsc::UnboundedReceiver<CommandRequest>,
}

/// Runs an inbound call to its end.
pub(crate) async fn run(inner: Arc<Inner>, call: InboundCall) {
    let now = Timestamp::now_utc();
    let id = CallId::generate(&inner.node, now, inner.next_counter(), rand::random());
    let span = info_span!("call", call = %id);
    async move {
        let interaction = match InteractionId::new(id.as_str()) {
            Ok(i) => i,
            Err(_) => return call.leg.reject(500),
        };
        let mut timeline = Timeline::new(interaction);
        inner.log(timeline.event(
            now,
            InteractionEventKind::Arrived {
                channel: Channel::Voice,
                direction: Direction::Inbound,
                from: call.from.clone(),
                to: call.to.clone(),
            },
        ));
        // Media: answer the caller's offer with our own RTP leg.
        let Some((rtp, media_events, law, answer)) = setup_media(&inner, &call.offer) else {
            call.leg.reject(488);
            inner.log(timeline.event(
                Timestamp::now_utc(),
                ended(EndedBy::System, "no acceptable media", None),
            ));
            return;
        };
        if !call.leg.answer(answer.into_bytes()).await {
            return;
        }
        info!(target = ?call.target, "answered");
        let (mut c, done_rx) = Call::new(
            inner.clone(),
            id,
            timeline,
            call.leg,
            rtp,
            law,
            call.from.clone(),
            call.to.clone(),
        );
        match &call.target {
            RouteTarget::Ivr(flow) => {
                let flows = inner.flows.current();
                let info = ivr::CallInfo {
                    caller: call.from.clone(),
                    called: call.to.clone(),
                };
                match IvrSession::new(flows, flow, info) {
                    Ok(session) => {
                        c.ivr = Some(session);
                        c.ivr_event(IvrEvent::Started).await;
                    }
                    Err(e) => {
                        warn!(error = %e, "IVR flow cannot start");
                        c.end(EndedBy::Error, "IVR flow missing");
                    }
                }
            }
            RouteTarget::Queue(q) => match domain::QueueId::new(q) {
                Ok(queue) => {
                    // No IVR to ask the CRM: the tier sets the priority and the account manager is
                    // offered the call first.
                    let (priority, manager) = match c.identify_caller().await {
                        Some(card) => (card.queue_priority, card.customer.account_manager.clone()),
                        None => (0, None),
                    };
                    c.enqueue(queue, priority, None, manager);
                }
                Err(_) => c.end(EndedBy::Error, "bad queue name"),
            },
            RouteTarget::Forward(_) => c.end(EndedBy::Error, "forward routes are bridged by the gateway"),
        }
        c.run_loop(media_events, done_rx).await;
        c.finish().await;
        c.into_wrap_up();
    }
    .instrument(span)
    .await
}

/// Rings the agent's registered SIP phone with a fresh engine leg's offer; `shown_as` is the caller
/// the phone displays.
pub(crate) async fn ring_phone(inner: &Inner, agent: &AgentId, shown_as: &str) -> Option<PhoneRing> {
    let (rtp, _events) = inner.media.allocate_leg().ok()?;
    let offer = media::sdp::offer(
        rtp.local_addr(),
        rand::random::<u32>() as u64,
        1,
        media::sdp::MediaDirection::SendRecv,
    );
    let request = OriginateRequest {
        target: Pii::new(agent.as_str().to_string()),
        from_user: Pii::new(shown_as.to_string()),
        sdp: offer.into_bytes(),
        ring_timeout: Duration::from_secs(60),
    };
    let gateway = inner.gateway.get()?.clone();
    let leg = gateway.originate(request).await.ok()?;
    Some(PhoneRing { leg, rtp })
}

/// Opens a browser agent's WebRTC leg for their SDP offer; returns it with our answer.
pub(crate) fn open_browser_leg(inner: &Inner, sdp: Option<String>) -> Result<(WebRtcLeg, String), Refusal> {
    let Some(endpoint) = inner.webrtc.as_ref() else {
        return Err(Refusal::new(
            "media_unavailable",
            "the browser softphone is not enabled on this node",
        ));
    };
    let Some(sdp) = sdp else {
        return Err(Refusal::new("bad_sdp", "the browser brings its SDP offer"));
    };
    endpoint
        .accept_offer(&sdp)
        .map_err(|e| Refusal::new("bad_sdp", e.to_string()))
}

/// The negotiated media of an SDP body we received, if it offers G.711.
pub(crate) fn negotiate(sdp: &[u8]) -> Option<media::sdp::Negotiated> {
    std::str::from_utf8(sdp)
        .ok()
        .and_then(|t| media::sdp::parse(t).ok())
        .and_then(|s| media::sdp::negotiate(&s, &SUPPORTED).ok())
}

fn setup_media(inner: &Inner, offer: &[u8]) -> Option<(RtpLeg, mpsc::Receiver<MediaEvent>, G711, String)> {
    let text = std::str::from_utf8(offer).ok()?;
    let sdp = media::sdp::parse(text).ok()?;
    let (rtp, events) = match inner.media.allocate_leg() {
        Ok(x) => x,
        Err(e) => {
            warn!(error = %e, "no RTP leg");
            return None;
        }
    };
    // RFC 3264: one m= line per offered line; SDES-SRTP when the phone offers it.
    let answer = media::sdp::answer_offer(
        &sdp,
        &SUPPORTED,
        media::sdp::SrtpPolicy::WhenOffered,
        rtp.local_addr(),
        rand::random::<u32>() as u64,
        1,
    )
    .ok()?;
    let law = answer.negotiated.law;
    rtp.set_srtp(answer.srtp);
    rtp.set_remote(answer.negotiated);
    Some((rtp, events, law, answer.sdp))
}

fn ended(by: EndedBy, reason: &str, quality: Option<QualityReport>) -> InteractionEventKind {
    InteractionEventKind::Ended {
        by,
        reason: reason.to_string(),
        quality,
    }
}

impl Call {
    /// A call whose customer leg is up (answered inbound, or answered outbound).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        inner: Arc<Inner>,
        id: CallId,
        timeline: Timeline,
        caller: LegHandle,
        rtp: RtpLeg,
        law: G711,
        caller_number: Pii<String>,
        called_number: Pii<String>,
    ) -> (Call, mpsc::UnboundedReceiver<Done>) {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        let call = Call {
            inner,
            id,
            timeline,
            caller,
            rtp,
            law,
            ivr: None,
            timers: HashMap::new(),
            done_tx,
            queue: None,
            ringing: Vec::new(),
            connected: None,
            recording_paused: false,
            ended: None,
            caller_number,
            called_number,
            customer: None,
            last_queue: None,
            last_agent: None,
            external: None,
            supervisor: None,
            consult: None,
            voicemail: None,
            callback: None,
            acd_accepted: false,
            outbound: None,
            campaign: None,
            commands_tx,
            commands_rx,
        };
        (call, done_rx)
    }

    /// Takes agents' commands from this channel (one the desk hub already holds the sender of).
    pub(crate) fn use_command_channel(
        &mut self,
        tx: mpsc::UnboundedSender<CommandRequest>,
        rx: mpsc::UnboundedReceiver<CommandRequest>,
    ) {
        self.commands_tx = tx;
        self.commands_rx = rx;
    }

    /// The call control services, for work that outlives the call task.
    pub(crate) fn inner_handle(&self) -> Arc<Inner> {
        self.inner.clone()
    }

    pub(crate) fn log(&mut self, kind: InteractionEventKind) {
        let ev = self.timeline.event(Timestamp::now_utc(), kind);
        self.inner.log(ev);
    }

    fn end(&mut self, by: EndedBy, reason: &str) {
        if self.ended.is_none() {
            self.ended = Some((by, reason.to_string()));
        }
    }

    pub(crate) async fn run_loop(
        &mut self,
        mut media_events: mpsc::Receiver<MediaEvent>,
        mut done_rx: mpsc::UnboundedReceiver<Done>,
    ) {
        while self.ended.is_none() {
            let next_timer = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(id, at)| (*id, *at));
            tokio::select! {
                ev = self.caller.next_event() => match ev {
                    Some(LegEvent::Hangup) | None => {
                        self.end(EndedBy::Caller, "caller hung up");
                        self.caller_gone().await;
                    }
                    Some(LegEvent::Reoffer { sdp, reply }) => {
                        let answer = self.reanswer(&sdp);
                        if let Some(a) = answer { let _ = reply.send(a.into_bytes()); }
                    }
                    Some(_) => {}
                },
                ev = media_events.recv() => match ev {
                    Some(MediaEvent::Dtmf { digit, .. }) if self.voicemail.is_some() => {
                        // The caller ends their message with #.
                        if digit.expose().as_char() == '#' {
                            self.finish_voicemail().await;
                            self.end(EndedBy::System, "voicemail left");
                        }
                    }
                    Some(MediaEvent::Dtmf { digit, .. }) => {
                        let d = digit.expose().as_char();
                        self.ivr_event(IvrEvent::Digit(d)).await;
                    }
                    Some(MediaEvent::PlaybackFinished) if self.campaign.as_ref().is_some_and(|c| c.message_playing()) => {
                        self.end(EndedBy::System, "no agent in time: identification message played");
                    }
                    Some(MediaEvent::PlaybackFinished) => self.ivr_event(IvrEvent::PromptFinished).await,
                    Some(MediaEvent::MediaTimeout { .. }) => {
                        self.end(EndedBy::Timeout, "no media from the caller");
                    }
                    Some(_) => {}
                    None => self.end(EndedBy::Error, "media leg closed"),
                },
                _ = async { match next_timer { Some((_, at)) => tokio::time::sleep_until(at).await, None => std::future::pending().await } } => {
                    if let Some((id, _)) = next_timer {
                        self.timers.remove(&id);
                        self.ivr_event(IvrEvent::TimerFired(id)).await;
                    }
                }
                Some(done) = done_rx.recv() => {
                    let ev = match done {
                        Done::Lookup(request, result) => IvrEvent::LookupResult { request, result },
                        Done::Webhook(request, result) => IvrEvent::WebhookResult { request, result },
                        Done::QueueState(request, state) => IvrEvent::QueueState { request, state },
                    };
                    self.ivr_event(ev).await;
                }
                notice = next_notice(&mut self.queue) => self.on_queue(notice).await,
                (i, ev) = next_ringing(&mut self.ringing) => self.on_ringing(i, ev).await,
                ev = next_connected(&mut self.connected) => match ev {
                    AgentSide::Phone(ev) => self.on_agent_leg(ev).await,
                    AgentSide::BrowserMediaLost => self.browser_media_lost(),
                    AgentSide::ReattachExpired => {
                        warn!("the browser agent's media did not come back in time");
                        self.agent_hung_up().await;
                    }
                },
                Some(request) = self.commands_rx.recv() => self.on_command(request).await,
                ev = next_external(&mut self.external) => self.on_external(ev).await,
                ev = next_supervisor(&mut self.supervisor) => self.on_supervisor_leg(ev),
                ev = next_consult(&mut self.consult) => self.on_consult_leg(ev),
                _ = crate::campaign_runner::connect_deadline(&self.campaign) => self.campaign_abandon().await,
                _ = voicemail_over(&self.voicemail) => {
                    self.finish_voicemail().await;
                    self.end(EndedBy::System, "voicemail left");
                }
            }
        }
    }

    fn reanswer(&self, sdp: &[u8]) -> Option<String> {
        let sdp = media::sdp::parse(std::str::from_utf8(sdp).ok()?).ok()?;
        let negotiated = media::sdp::negotiate(&sdp, &SUPPORTED).ok()?;
        let answer = media::sdp::answer(
            &negotiated,
            self.rtp.local_addr(),
            rand::random::<u32>() as u64,
            2,
        );
        self.rtp.set_remote(negotiated);
        Some(answer)
    }

    /// Keeps the session's state (node, variables; never sensitive digits) in the state store, where
    /// the agent desktop and other nodes can read what the caller did.
    async fn save_ivr_state(&self) {
        let Some(state) = self.ivr.as_ref().map(|s| s.state()) else {
            return;
        };
        let Ok(bytes) = serde_json::to_vec(state) else {
            return;
        };
        let write = state_store::BlobWrite::new().ttl(Duration::from_secs(4 * 3600));
        let put = self.inner.state.put_blob(
            crate::IVR_STATE_NAMESPACE,
            self.id.as_str(),
            &bytes,
            &write,
            Timestamp::now_utc(),
        );
        match tokio::time::timeout(Duration::from_millis(500), put).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "IVR state not saved"),
            Err(_) => warn!("IVR state not saved in time"),
        }
    }

    async fn caller_gone(&mut self) {
        // A caller waiting for their callback keeps the place in line.
        if let Some((queue, _)) = self.queue.take_if(|_| self.callback.is_none()) {
            match self.inner.acd.abandon(self.id.clone()).await {
                Some(a) => {
                    info!(%queue, position = a.position, waited_ms = a.waited_ms, "caller abandoned the queue");
                    self.log(InteractionEventKind::Abandoned {
                        queue: a.queue,
                        position: a.position,
                        waited_ms: a.waited_ms,
                    });
                }
                None => self.inner.acd.forget(self.id.clone()),
            }
        }
        self.finish_voicemail().await;
        for r in std::mem::take(&mut self.ringing) {
            self.stop_ringing(r, "caller hung up");
        }
        if let Some(ext) = self.external.take() {
            ext.leg.hangup();
        }
        self.release_agent().await;
        if let Some(ivr) = self.ivr.as_mut() {
            let cmds = ivr.handle(Timestamp::now_utc(), IvrEvent::CallerHungUp);
            for cmd in cmds {
                if let IvrCommand::Log(l) = cmd {
                    self.log(l.to_event_kind());
                }
            }
        }
    }

    async fn ivr_event(&mut self, event: IvrEvent) {
        let Some(ivr) = self.ivr.as_mut() else { return };
        let commands = ivr.handle(Timestamp::now_utc(), event);
        self.save_ivr_state().await;
        for cmd in commands {
            self.execute(cmd).await;
        }
        if self.ivr.as_ref().is_some_and(|s| s.outcome().is_some())
            && self.connected.is_none()
            && self.queue.is_none()
            && (self.queue.is_none() || self.callback.is_some())
            && self.external.is_none()
            && self.voicemail.is_none()
        {
            self.end(EndedBy::System, "IVR finished");
        }
    }

    async fn execute(&mut self, cmd: IvrCommand) {
        match cmd {
            IvrCommand::Play { prompts, barge_in } => {
                let mut loaded = Vec::new();
                for p in &prompts {
                    match self.inner.media.prompts().get(&p.path, self.law) {
                        Ok(prompt) => loaded.push(prompt),
                        Err(e) => warn!(prompt = %p.name, error = %e, "prompt cannot be played"),
                    }
                }
                if loaded.is_empty() {
                    // Nothing to play: tell the IVR at once rather than leave it waiting.
                    Box::pin(self.ivr_event(IvrEvent::PromptFinished)).await;
                } else {
                    self.rtp.play(loaded, false, barge_in);
                }
            }
            IvrCommand::StopPlayback => self.rtp.stop_playback(),
            IvrCommand::StartTimer { id, after } => {
                self.timers.insert(id, Instant::now() + after);
            }
            IvrCommand::CancelTimer { id } => {
                self.timers.remove(&id);
            }
            IvrCommand::Lookup {
                request,
                key,
                timeout,
            } => {
                let crm = self.inner.crm.clone();
                let tx = self.done_tx.clone();
                tokio::spawn(async move {
                    let result = tokio::time::timeout(timeout, lookup(crm, key))
                        .await
                        .unwrap_or(ivr::LookupResult::Failed);
                    let _ = tx.send(Done::Lookup(request, result));
                });
            }
            IvrCommand::Webhook {
                request,
                url,
                body,
                timeout,
            } => {
                let tx = self.done_tx.clone();
                tokio::spawn(async move {
                    let result = match crate::webhook::post_json(&url, body.expose(), timeout).await {
                        Ok(v) => ivr::WebhookResult::Reply(Pii::new(v)),
                        Err(e) => {
                            warn!(?e, "webhook failed");
                            ivr::WebhookResult::Failed
                        }
                    };
                    let _ = tx.send(Done::Webhook(request, result));
                });
            }
            IvrCommand::QueryQueue { request, queue } => {
                let acd = self.inner.acd.clone();
                let tx = self.done_tx.clone();
                tokio::spawn(async move {
                    let (waiting, available, ewt) = acd.queue_state(&queue).await.unwrap_or((0, 0, None));
                    let state = ivr::QueueSnapshot {
                        agents_available: available,
                        waiting,
                        estimated_wait: Duration::from_millis(ewt.unwrap_or(0)),
                    };
                    let _ = tx.send(Done::QueueState(request, state));
                });
            }
            IvrCommand::Enqueue {
                queue,
                priority,
                skills,
                preferred_agent,
            } => {
                self.enqueue(queue, priority, skills, preferred_agent);
            }
            IvrCommand::LeaveQueue { .. } => {
                if self.queue.take().is_some() {
                    self.inner.acd.input(acd::Input::CallAbandoned {
                        call: self.id.clone(),
                    });
                    self.inner.acd.forget(self.id.clone());
                }
            }
            IvrCommand::RequestCallback { number, .. } => {
                self.log(InteractionEventKind::CallbackRequested {
                    number: number.clone(),
                });
                if self.queue.is_some() && self.inner.outbound.is_some() {
                    self.callback = Some(number);
                } else {
                    warn!("callback promised but no queue place or outbound trunk to keep it");
                }
            }
            IvrCommand::Voicemail {
                mailbox,
                max_length,
                beep,
            } => self.start_voicemail(mailbox, max_length, beep),
            IvrCommand::Transfer { target } => {
                let (uri, described, from) = match &target {
                    ivr::TransferTarget::SipUri(uri) => (Some(uri.clone()), uri.clone(), None),
                    ivr::TransferTarget::Number(n) => {
                        let trunk = self.inner.outbound.clone();
                        (
                            trunk.as_ref().map(|t| format!("sip:{n}@{}", t.host)),
                            format!("number:{n}"),
                            trunk.and_then(|t| t.caller_id).map(Pii::new),
                        )
                    }
                };
                self.log(InteractionEventKind::Transferred {
                    target: Pii::new(described),
                });
                let dialled = match uri {
                    Some(uri) => self.dial_external(uri, from).await,
                    None => Err(Refusal::new("no_trunk", "no outbound trunk for numbers")),
                };
                if let Err(refusal) = dialled {
                    warn!(code = refusal.code, "IVR transfer not placed");
                    self.end(EndedBy::System, "transfer failed");
                }
            }
            IvrCommand::Hangup { reason } => self.end(EndedBy::System, &reason),
            IvrCommand::PauseRecording => {
                self.recording_paused = true;
                if let Some(r) = self.connected.as_ref().and_then(|c| c.recording.as_ref()) {
                    r.pause();
                }
            }
            IvrCommand::ResumeRecording => {
                self.recording_paused = false;
                if let Some(r) = self.connected.as_ref().and_then(|c| c.recording.as_ref()) {
                    r.resume();
                }
            }
            IvrCommand::Log(l) => self.log(l.to_event_kind()),
        }
    }

    pub(crate) fn enqueue(
        &mut self,
        queue: domain::QueueId,
        priority: u8,
        skills: Option<String>,
        preferred: Option<AgentId>,
    ) {
        let mut request = acd::CallRequest::new(self.id.clone(), queue.clone());
        request.priority = acd::Priority::new(priority.min(9)).unwrap_or_default();
        request.requirement = skills.as_deref().and_then(|s| acd::SkillExpr::parse(s).ok());
        request.preferred = preferred.map(|agent| acd::PreferredAgent {
            agent,
            timeout_secs: 30,
        });
        let notices = self.inner.acd.enqueue(request);
        self.last_queue = Some((queue.clone(), priority));
        self.log(InteractionEventKind::Enqueued {
            queue: queue.clone(),
            priority,
        });
        self.queue = Some((queue, notices));
    }

    async fn on_queue(&mut self, notice: Option<QueueNotice>) {
        let Some(notice) = notice else {
            self.queue = None;
            return;
        };
        match notice {
            QueueNotice::Offer(offer) => {
                let explanation = offer.explanation.sentence();
                let pop = self.screen_pop(&offer, &explanation).await;
                let now = Timestamp::now_utc();
                for agent in offer.agents {
                    self.log(InteractionEventKind::Offered {
                        agent: agent.clone(),
                        explanation: explanation.clone(),
                    });
                    let desks = &self.inner.desks;
                    if desks.desk_media(&agent) == Some(AgentMedia::Browser) {
                        // The desktop answers with the softphone; no SIP phone rings.
                        desks.offer(&agent, pop.clone(), self.commands_tx.clone(), now);
                        self.ringing.push(Ringing { agent, phone: None });
                        continue;
                    }
                    match self.ring_agent(&agent).await {
                        Some(phone) => {
                            self.inner
                                .desks
                                .offer(&agent, pop.clone(), self.commands_tx.clone(), now);
                            self.ringing.push(Ringing {
                                agent,
                                phone: Some(phone),
                            });
                        }
                        None => {
                            self.log(InteractionEventKind::OfferFailed {
                                agent: agent.clone(),
                                reason: "phone not registered".into(),
                            });
                            self.inner.acd.input(acd::Input::OfferRejected {
                                call: self.id.clone(),
                                agent,
                            });
                        }
                    }
                }
            }
            QueueNotice::OfferCancelled { agent, reason } => {
                if let Some(i) = self.ringing.iter().position(|r| r.agent == agent) {
                    let r = self.ringing.remove(i);
                    self.stop_ringing(r, &reason);
                    self.log(InteractionEventKind::OfferFailed { agent, reason });
                }
            }
            QueueNotice::Position {
                position,
                estimated_wait_secs,
            } => {
                let ev = IvrEvent::QueueEvent(ivr::QueueEvent::Position {
                    position,
                    estimated_wait: Duration::from_secs(estimated_wait_secs.unwrap_or(0)),
                });
                self.ivr_event(ev).await;
            }
            QueueNotice::Overflowed { target, .. } => {
                if let Some((queue, _)) = self.queue.take() {
                    self.log(InteractionEventKind::Overflowed {
                        from: queue,
                        to: target,
                    });
                }
                if self.ivr.is_some() {
                    self.ivr_event(IvrEvent::QueueEvent(ivr::QueueEvent::Rejected))
                        .await;
                } else {
                    self.end(EndedBy::System, "queue overflow");
                }
            }
        }
    }

    /// The caller's CRM record by their number, looked up once per call (within 500 ms; a slow or
    /// failing CRM never holds the call up). A found customer is logged on the interaction.
    async fn identify_caller(&mut self) -> Option<&crm_store::CustomerCard> {
        if self.customer.is_none() {
            let lookup = self.inner.crm.find_customer_by_phone(self.caller_number.expose());
            let found = match tokio::time::timeout(Duration::from_millis(500), lookup).await {
                Ok(Ok(card)) => card,
                Ok(Err(e)) => {
                    warn!(error = %e, "CRM lookup of the caller failed");
                    None
                }
                Err(_) => {
                    warn!("CRM lookup of the caller timed out");
                    None
                }
            };
            // The IVR's own lookup has already put the customer on the interaction.
            let known_to_ivr = |id: &str| {
                self.ivr.as_ref().is_some_and(|s| {
                    s.state().vars.get("customer.id") == Some(&ivr::Value::Text(id.to_string()))
                })
            };
            if let Some(card) = found.as_ref().filter(|c| !known_to_ivr(c.customer.id.as_str())) {
                self.log(InteractionEventKind::CustomerIdentified {
                    customer: card.customer.id.clone(),
                    tier: card.customer.tier.as_str().to_string(),
                });
            }
            self.customer = Some(found);
        }
        self.customer.as_ref().and_then(Option::as_ref)
    }

    /// What the agent's desktop shows for this offer.
    async fn screen_pop(&mut self, offer: &acd::Offer, explanation: &str) -> Arc<ScreenPop> {
        self.identify_caller().await;
        let ivr = self.ivr.as_ref().map(|s| {
            let state = s.state();
            IvrPop {
                flow: state.flow.clone(),
                node: state.node.clone(),
                language: state.language.clone(),
                variables: state.vars.clone(),
            }
        });
        let direction = if self.campaign.is_some() {
            Direction::Outbound
        } else {
            Direction::Inbound
        };
        Arc::new(ScreenPop {
            call: self.id.clone(),
            direction,
            queue: Some(offer.queue.clone()),
            caller: self.caller_number.clone(),
            called: self.called_number.clone(),
            waited_ms: offer.explanation.waited_ms,
            explanation: explanation.to_string(),
            customer: self.customer.clone().flatten(),
            ivr,
            campaign: self.campaign.as_ref().map(|l| l.pop()),
        })
    }

    /// Ends one agent's offer: their phone stops ringing and their desktop is told.
    fn stop_ringing(&self, r: Ringing, reason: &str) {
        if let Some(phone) = r.phone {
            phone.leg.hangup();
        }
        self.inner.desks.withdraw(&self.id, &r.agent, reason);
    }

    async fn ring_agent(&mut self, agent: &AgentId) -> Option<PhoneRing> {
        ring_phone(&self.inner, agent, "callcenter").await
    }

    async fn on_ringing(&mut self, i: usize, ev: Option<LegEvent>) {
        match ev {
            Some(LegEvent::Answered { sdp }) => {
                let r = self.ringing.remove(i);
                let Some(phone) = r.phone else { return };
                let negotiated = negotiate(&sdp);
                let Some(negotiated) = negotiated else {
                    phone.leg.hangup();
                    self.inner.desks.withdraw(&self.id, &r.agent, "no common codec");
                    self.inner.acd.input(acd::Input::OfferRejected {
                        call: self.id.clone(),
                        agent: r.agent.clone(),
                    });
                    self.log(InteractionEventKind::OfferFailed {
                        agent: r.agent,
                        reason: "no common codec".into(),
                    });
                    return;
                };
                phone.rtp.set_remote(negotiated);
                self.connect_agent(r.agent, AgentLeg::Phone(phone.leg), phone.rtp)
                    .await;
            }
            Some(LegEvent::Failed { code }) => self.offer_failed(i, format!("phone answered {code}")),
            Some(LegEvent::Hangup) | None => self.offer_failed(i, "phone hung up".into()),
            Some(LegEvent::Reoffer { .. } | LegEvent::Ringing) => {}
        }
    }

    /// The agent took the call: bridge their leg to the caller's, tell the ACD and their desktop.
    pub(crate) async fn connect_agent(&mut self, agent: AgentId, leg: AgentLeg, agent_rtp: RtpLeg) {
        self.rtp.stop_playback();
        let bridge = self.inner.media.bridge(&self.rtp, &agent_rtp);
        for other in std::mem::take(&mut self.ringing) {
            self.stop_ringing(other, "answered elsewhere");
        }
        if self.outbound.is_none() && !self.acd_accepted {
            self.inner.acd.input(acd::Input::OfferAccepted {
                call: self.id.clone(),
                agent: agent.clone(),
            });
        }
        self.log(InteractionEventKind::Answered { agent: agent.clone() });
        info!(%agent, "agent answered; bridged");
        if let Some(link) = self.campaign.as_mut() {
            link.connected(agent.clone(), Timestamp::now_utc());
        }
        self.queue = None;
        self.inner.acd.forget(self.id.clone());
        self.last_agent = Some(agent.clone());
        self.inner
            .desks
            .set_phase(&self.id, &agent, CallPhase::Connected, Timestamp::now_utc());
        let recording = if self.inner.record_calls {
            match bridge.start_recording(self.id.as_str()) {
                Ok(handle) => {
                    if self.recording_paused {
                        handle.pause();
                    }
                    Some(handle)
                }
                Err(e) => {
                    warn!(error = %e, "recording not started");
                    None
                }
            }
        } else {
            None
        };
        self.connected = Some(Connected {
            agent: agent.clone(),
            leg,
            rtp: agent_rtp,
            bridge,
            recording,
        });
        self.ivr_event(IvrEvent::QueueEvent(ivr::QueueEvent::AgentAnswered { agent }))
            .await;
    }

    /// A campaign call got no agent by its deadline: nobody rings any more, it leaves the queue as
    /// abandoned, and the identification message plays (the call ends when it has).
    async fn campaign_abandon(&mut self) {
        for r in std::mem::take(&mut self.ringing) {
            self.stop_ringing(r, "no agent in time");
        }
        if self.queue.take().is_some() {
            match self.inner.acd.abandon(self.id.clone()).await {
                Some(a) => self.log(InteractionEventKind::Abandoned {
                    queue: a.queue,
                    position: a.position,
                    waited_ms: a.waited_ms,
                }),
                None => self.inner.acd.forget(self.id.clone()),
            }
        }
        let Some(link) = self.campaign.as_mut() else {
            return;
        };
        let message = link.abandon(Timestamp::now_utc());
        info!("no agent within the connect time; playing the identification message");
        let loaded: Vec<_> = message
            .iter()
            .filter_map(|path| match self.inner.media.prompts().get(path, self.law) {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(error = %e, "identification message cannot be played");
                    None
                }
            })
            .collect();
        if loaded.is_empty() {
            self.end(EndedBy::System, "no agent in time: no identification message");
        } else {
            self.rtp.play(loaded, false, false);
        }
    }

    /// The agent hung up (their phone or their desktop): the caller hears the survey if the flow has
    /// one, otherwise the call ends.
    async fn agent_hung_up(&mut self) {
        if let Some(agent) = self.release_agent().await {
            info!(%agent, "agent hung up");
        }
        if self.ivr.is_some() {
            self.ivr_event(IvrEvent::AgentHungUp).await;
            if self.ivr.as_ref().is_some_and(|s| s.outcome().is_some()) {
                self.end(EndedBy::Agent, "agent hung up");
            }
        } else {
            self.end(EndedBy::Agent, "agent hung up");
        }
    }

    /// An agent's command from their desktop, answered on its reply channel.
    async fn on_command(&mut self, request: CommandRequest) {
        let CommandRequest {
            agent,
            command,
            reply,
        } = request;
        let name = command.name();
        let result: CommandResult = match command {
            AgentCommand::Mute(muted) => self.mute(&agent, muted).map(|()| None),
            AgentCommand::Monitor { .. } | AgentCommand::MonitorMode(_) | AgentCommand::StopMonitor => {
                self.supervise(command).await
            }
            other => self.command(&agent, other).await.map(|()| None),
        };
        if let Err(refusal) = &result {
            info!(%agent, command = name, code = refusal.code, "desktop command refused");
        }
        let _ = reply.send(result);
    }

    async fn command(&mut self, agent: &AgentId, command: AgentCommand) -> Result<(), Refusal> {
        let offered = self.ringing.iter().position(|r| &r.agent == agent);
        let connected = self.connected.as_ref().is_some_and(|c| &c.agent == agent);
        match command {
            AgentCommand::Accept { sdp } => match offered {
                Some(i) if self.ringing[i].phone.is_some() => Err(Refusal::new(
                    "answer_on_phone",
                    "this call rings your SIP phone: answer it there",
                )),
                Some(i) => self.accept_in_browser(i, sdp).await,
                // The phone may answer before the desktop's accept arrives: same answer.
                None if self
                    .connected
                    .as_ref()
                    .is_some_and(|c| &c.agent == agent && matches!(c.leg, AgentLeg::Phone(_))) =>
                {
                    Err(Refusal::new("answer_on_phone", "this call is on your SIP phone"))
                }
                None if connected => self.reattach_browser(sdp),
                None => Err(Refusal::new("no_offer", "this call is not being offered to you")),
            },
            AgentCommand::Reject => {
                let Some(i) = offered else {
                    return Err(Refusal::new("no_offer", "this call is not being offered to you"));
                };
                self.offer_failed(i, "rejected by the agent".into());
                Ok(())
            }
            AgentCommand::Hangup => {
                if !connected {
                    return Err(Refusal::new(
                        "not_connected",
                        "you are not talking to this caller",
                    ));
                }
                self.agent_hung_up().await;
                Ok(())
            }
            AgentCommand::Hold | AgentCommand::Unhold => {
                let hold = matches!(command, AgentCommand::Hold);
                let Some(c) = self.connected.as_ref().filter(|c| &c.agent == agent) else {
                    return Err(Refusal::new(
                        "not_connected",
                        "you are not talking to this caller",
                    ));
                };
                match (hold, c.bridge.is_held()) {
                    (true, true) => {
                        return Err(Refusal::new("already_held", "the caller is already on hold"));
                    }
                    (false, false) => return Err(Refusal::new("not_held", "the caller is not on hold")),
                    (true, false) => {
                        let music = self.hold_music();
                        c.bridge.hold(BridgeSide::A, music);
                    }
                    (false, true) => c.bridge.resume(),
                }
                let (kind, phase) = if hold {
                    (InteractionEventKind::Held, CallPhase::Held)
                } else {
                    (InteractionEventKind::Resumed, CallPhase::Connected)
                };
                self.log(kind);
                self.inner
                    .desks
                    .set_phase(&self.id, agent, phase, Timestamp::now_utc());
                Ok(())
            }
            AgentCommand::Transfer(target) => {
                if !connected {
                    return Err(Refusal::new(
                        "not_connected",
                        "you are not talking to this caller",
                    ));
                }
                self.blind_transfer(agent, target).await
            }
            AgentCommand::WrapUp { .. } => Err(Refusal::new(
                "not_in_wrap_up",
                "the call is still going on: hang up first",
            )),
            // Answered by `on_command` before they get here.
            AgentCommand::Consult(target) => {
                if !connected {
                    return Err(Refusal::new(
                        "not_connected",
                        "you are not talking to this caller",
                    ));
                }
                self.start_consult(agent, target).await
            }
            AgentCommand::ConsultComplete => {
                if !connected {
                    return Err(Refusal::new(
                        "not_connected",
                        "you are not talking to this caller",
                    ));
                }
                self.complete_consult(agent).await
            }
            AgentCommand::ConsultCancel => {
                if !connected {
                    return Err(Refusal::new(
                        "not_connected",
                        "you are not talking to this caller",
                    ));
                }
                match self.consult.take() {
                    Some(c) => {
                        self.end_consult(c);
                        Ok(())
                    }
                    None => Err(Refusal::new("not_consulting", "you are not consulting anyone")),
                }
            }
            // Answered by `on_command` before they get here.
            AgentCommand::Mute(_)
            | AgentCommand::Monitor { .. }
            | AgentCommand::MonitorMode(_)
            | AgentCommand::StopMonitor => Err(Refusal::new("bad_request", "not a call command")),
        }
    }

    /// Records the caller's message (after a beep) until they press #, hang up, or `max_length`.
    fn start_voicemail(&mut self, mailbox: String, max_length: Duration, beep: bool) {
        let safe: String = mailbox
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let name = format!("voicemail-{safe}-{}", self.id.as_str());
        if beep {
            // 400 ms at 1 kHz: the classic "speak after the tone".
            let samples: Vec<i16> = (0..3200)
                .map(|i| ((i as f32 * 2.0 * std::f32::consts::PI * 1000.0 / 8000.0).sin() * 8000.0) as i16)
                .collect();
            let tone = media::prompt::Prompt::from_samples("beep", self.law, &samples);
            self.rtp.play(vec![tone], false, false);
        }
        match self.inner.media.record_leg(&self.rtp, &name) {
            Ok(recording) => {
                info!(mailbox = %safe, "recording a voicemail");
                let now = Instant::now();
                self.voicemail = Some(Voicemail {
                    mailbox: safe,
                    recording,
                    started: now,
                    until: now + max_length,
                });
            }
            Err(e) => {
                warn!(error = %e, "voicemail not recorded");
                self.end(EndedBy::Error, "voicemail could not be recorded");
            }
        }
    }

    /// Closes the voicemail's file and logs it on the interaction.
    async fn finish_voicemail(&mut self) {
        let Some(v) = self.voicemail.take() else { return };
        let duration_ms = u64::try_from(v.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        match v.recording.stop().await {
            Ok(path) => self.log(InteractionEventKind::Voicemail {
                mailbox: v.mailbox,
                path: path.display().to_string(),
                duration_ms,
            }),
            Err(e) => warn!(error = %e, "voicemail not closed"),
        }
    }

    /// Starts a consultation: the caller holds with music while the target is rung.
    async fn start_consult(&mut self, agent: &AgentId, target: TransferTarget) -> Result<(), Refusal> {
        if self.consult.is_some() {
            return Err(Refusal::new(
                "already_consulting",
                "finish the consultation you have first",
            ));
        }
        if self.supervisor.is_some() {
            return Err(Refusal::new("already_monitored", "a supervisor is on this call"));
        }
        let (uri, described, from) = match &target {
            TransferTarget::Agent(a) if a == agent => {
                return Err(Refusal::new("bad_target", "you cannot consult yourself"));
            }
            TransferTarget::Agent(a) => (None, format!("agent:{a}"), Some(a.clone())),
            TransferTarget::Number(n) => {
                let trunk = self.inner.outbound.clone().ok_or_else(|| {
                    Refusal::new("no_trunk", "no outbound trunk is configured for outside numbers")
                })?;
                (
                    Some(format!("sip:{}@{}", n.expose(), trunk.host)),
                    format!("number:{}", n.expose()),
                    None,
                )
            }
            TransferTarget::Queue(_) => {
                return Err(Refusal::new(
                    "bad_target",
                    "consult an agent or a number; transfer to queues",
                ));
            }
        };
        let phone = match (uri, from) {
            (_, Some(colleague)) => ring_phone(&self.inner, &colleague, agent.as_str()).await,
            (Some(uri), None) => {
                let shown = self
                    .inner
                    .outbound
                    .as_ref()
                    .and_then(|t| t.caller_id.clone())
                    .map(Pii::new);
                self.originate_to(uri, shown).await
            }
            (None, None) => None,
        }
        .ok_or_else(|| Refusal::new("unreachable", "the consulted party cannot be called"))?;
        let music = self.hold_music();
        if let Some(c) = self.connected.as_ref()
            && !c.bridge.is_held()
        {
            c.bridge.hold(BridgeSide::A, music);
            self.log(InteractionEventKind::Held);
        }
        info!("consultation: ringing the consulted party");
        self.consult = Some(Consult {
            leg: phone.leg,
            rtp: phone.rtp,
            described,
            joined: None,
        });
        self.inner
            .desks
            .set_phase(&self.id, agent, CallPhase::Consulting, Timestamp::now_utc());
        Ok(())
    }

    /// Places a leg to a SIP URI with a fresh engine leg's offer, showing `from` (the caller's number
    /// when None).
    async fn originate_to(&self, uri: String, from: Option<Pii<String>>) -> Option<PhoneRing> {
        let gateway = self.inner.gateway.get()?.clone();
        let (rtp, _events) = self.inner.media.allocate_leg().ok()?;
        let offer = media::sdp::offer(
            rtp.local_addr(),
            rand::random::<u32>() as u64,
            1,
            media::sdp::MediaDirection::SendRecv,
        );
        let request = OriginateRequest {
            target: Pii::new(uri),
            from_user: from.unwrap_or_else(|| self.caller_number.clone()),
            sdp: offer.into_bytes(),
            ring_timeout: Duration::from_secs(60),
        };
        let leg = gateway.originate(request).await.ok()?;
        Some(PhoneRing { leg, rtp })
    }

    fn on_consult_leg(&mut self, ev: Option<LegEvent>) {
        let Some(mut c) = self.consult.take() else { return };
        match ev {
            Some(LegEvent::Answered { sdp }) if c.joined.is_none() => {
                let Some(n) = negotiate(&sdp) else {
                    self.end_consult(c);
                    return;
                };
                c.rtp.set_remote(n);
                let joined = self
                    .connected
                    .as_ref()
                    .map(|a| a.bridge.monitor(&c.rtp, MonitorMode::Barge));
                match joined {
                    Some(Ok(handle)) => {
                        info!("consultation: the consulted party answered");
                        c.joined = Some(handle);
                        self.consult = Some(c);
                    }
                    _ => self.end_consult(c),
                }
            }
            Some(LegEvent::Ringing | LegEvent::Reoffer { .. } | LegEvent::Answered { .. }) => {
                self.consult = Some(c)
            }
            Some(LegEvent::Failed { .. } | LegEvent::Hangup) | None => self.end_consult(c),
        }
    }

    /// The consultation is over without a transfer: the consulted party is hung up, the caller
    /// is back with the agent.
    fn end_consult(&mut self, c: Consult) {
        if let Some(handle) = c.joined {
            handle.stop();
        }
        c.leg.hangup();
        let resumed = self.connected.as_ref().map(|a| {
            let was_held = a.bridge.is_held();
            if was_held {
                a.bridge.resume();
            }
            (a.agent.clone(), was_held)
        });
        if let Some((agent, was_held)) = resumed {
            if was_held {
                self.log(InteractionEventKind::Resumed);
            }
            self.inner
                .desks
                .set_phase(&self.id, &agent, CallPhase::Connected, Timestamp::now_utc());
        }
        info!("consultation ended; back to the caller");
    }

    /// Completes a consultative transfer: the caller is bridged with the consulted party and the
    /// agent leaves (to wrap-up).
    async fn complete_consult(&mut self, agent: &AgentId) -> Result<(), Refusal> {
        let Some(c) = self.consult.take() else {
            return Err(Refusal::new("not_consulting", "you are not consulting anyone"));
        };
        let Some(handle) = c.joined else {
            self.consult = Some(c);
            return Err(Refusal::new(
                "not_answered",
                "the consulted party has not answered yet",
            ));
        };
        handle.stop();
        // The agent's bridge goes first, so the new one is the caller's only partner.
        self.release_agent().await;
        self.inner.desks.release(&self.id, agent);
        self.log(InteractionEventKind::Transferred {
            target: Pii::new(format!("consult:{}", c.described)),
        });
        self.rtp.stop_playback();
        let bridge = self.inner.media.bridge(&self.rtp, &c.rtp);
        self.log(InteractionEventKind::Resumed);
        info!("consultative transfer completed");
        self.external = Some(External {
            leg: c.leg,
            rtp: c.rtp,
            bridge: Some(bridge),
        });
        Ok(())
    }

    /// The agent's mute: the caller (and the recording) stop hearing them.
    fn mute(&mut self, agent: &AgentId, muted: bool) -> Result<(), Refusal> {
        let Some(c) = self.connected.as_ref().filter(|c| &c.agent == agent) else {
            return Err(Refusal::new(
                "not_connected",
                "you are not talking to this caller",
            ));
        };
        c.bridge.mute(BridgeSide::B, muted);
        Ok(())
    }

    /// A supervisor's command on this call (monitor, change mode, stop).
    async fn supervise(&mut self, command: AgentCommand) -> CommandResult {
        let Some(c) = self.connected.as_ref() else {
            return Err(Refusal::new("not_on_call", "the agent is not talking to anyone"));
        };
        match command {
            AgentCommand::Monitor {
                supervisor,
                mode,
                sdp,
            } => {
                if self.supervisor.is_some() {
                    return Err(Refusal::new(
                        "already_monitored",
                        "a supervisor is already on this call",
                    ));
                }
                if supervisor == c.agent {
                    return Err(Refusal::new("bad_target", "you cannot monitor yourself"));
                }
                if sdp.is_some() {
                    let (browser, answer) = open_browser_leg(&self.inner, sdp)?;
                    let (rtp, _events) = self
                        .inner
                        .media
                        .allocate_leg()
                        .map_err(|e| Refusal::new("unavailable", e.to_string()))?;
                    browser
                        .connect_plain(&rtp)
                        .map_err(|e| Refusal::new("unavailable", e.to_string()))?;
                    self.join_supervisor(supervisor, mode, rtp, SupervisorLeg::Browser(browser))?;
                    Ok(Some(answer))
                } else {
                    let phone = ring_phone(&self.inner, &supervisor, "monitor")
                        .await
                        .ok_or_else(|| {
                            Refusal::new("phone_unreachable", "your SIP phone is not registered")
                        })?;
                    self.supervisor = Some(Supervisor::Ringing {
                        supervisor,
                        mode,
                        phone,
                    });
                    Ok(None)
                }
            }
            AgentCommand::MonitorMode(mode) => match &self.supervisor {
                Some(Supervisor::Joined {
                    supervisor, handle, ..
                }) => {
                    handle
                        .set_mode(monitor_mode(mode))
                        .map_err(|e| Refusal::new("unavailable", e.to_string()))?;
                    let supervisor = supervisor.clone();
                    self.log(InteractionEventKind::Monitored {
                        supervisor,
                        mode: mode.name().into(),
                    });
                    Ok(None)
                }
                _ => Err(Refusal::new(
                    "not_monitoring",
                    "no supervisor is on this call yet",
                )),
            },
            AgentCommand::StopMonitor => match self.supervisor.take() {
                Some(s) => {
                    self.drop_supervisor(s);
                    Ok(None)
                }
                None => Err(Refusal::new("not_monitoring", "no supervisor is on this call")),
            },
            _ => Err(Refusal::new("bad_request", "not a supervisor command")),
        }
    }

    /// Attaches the supervisor's leg to the bridge in `mode`.
    fn join_supervisor(
        &mut self,
        supervisor: AgentId,
        mode: SuperviseMode,
        rtp: RtpLeg,
        leg: SupervisorLeg,
    ) -> Result<(), Refusal> {
        let Some(c) = self.connected.as_ref() else {
            return Err(Refusal::new("not_on_call", "the agent is not talking to anyone"));
        };
        let handle = c
            .bridge
            .monitor(&rtp, monitor_mode(mode))
            .map_err(|e| Refusal::new("unavailable", e.to_string()))?;
        info!(mode = mode.name(), "supervisor joined");
        self.log(InteractionEventKind::Monitored {
            supervisor: supervisor.clone(),
            mode: mode.name().into(),
        });
        self.supervisor = Some(Supervisor::Joined {
            supervisor,
            handle,
            _rtp: rtp,
            leg,
        });
        Ok(())
    }

    /// The supervisor leaves: their phone is hung up, the call goes back to the plain relay.
    fn drop_supervisor(&mut self, s: Supervisor) {
        let supervisor = match s {
            Supervisor::Ringing {
                supervisor, phone, ..
            } => {
                phone.leg.hangup();
                supervisor
            }
            Supervisor::Joined {
                supervisor,
                handle,
                leg,
                ..
            } => {
                handle.stop();
                if let SupervisorLeg::Phone(leg) = leg {
                    leg.hangup();
                }
                supervisor
            }
        };
        self.log(InteractionEventKind::Monitored {
            supervisor,
            mode: "stopped".into(),
        });
    }

    fn on_supervisor_leg(&mut self, ev: Option<LegEvent>) {
        match (self.supervisor.take(), ev) {
            (
                Some(Supervisor::Ringing {
                    supervisor,
                    mode,
                    phone,
                }),
                Some(LegEvent::Answered { sdp }),
            ) => {
                let Some(n) = negotiate(&sdp) else {
                    phone.leg.hangup();
                    return;
                };
                phone.rtp.set_remote(n);
                if let Err(r) =
                    self.join_supervisor(supervisor, mode, phone.rtp, SupervisorLeg::Phone(phone.leg))
                {
                    warn!(code = r.code, "supervisor could not join");
                }
            }
            (Some(s), Some(LegEvent::Ringing | LegEvent::Reoffer { .. })) => self.supervisor = Some(s),
            (Some(s @ Supervisor::Joined { .. }), Some(LegEvent::Answered { .. })) => {
                self.supervisor = Some(s)
            }
            // Hung up, failed or gone.
            (Some(s), _) => self.drop_supervisor(s),
            (None, _) => {}
        }
    }

    /// The looping music a held caller hears (silence when none is configured or it cannot load).
    fn hold_music(&self) -> Vec<media::prompt::Prompt> {
        let Some(path) = self.inner.hold_music.as_ref() else {
            return Vec::new();
        };
        match self.inner.media.prompts().get(path, self.law) {
            Ok(p) => vec![p],
            Err(e) => {
                warn!(error = %e, "hold music cannot be played");
                Vec::new()
            }
        }
    }

    /// Sends the caller to another queue, or to a named agent through the queue they came from; the
    /// transferring agent goes to wrap-up.
    async fn blind_transfer(&mut self, agent: &AgentId, target: TransferTarget) -> Result<(), Refusal> {
        let (queue, preferred) = match &target {
            TransferTarget::Number(number) => return self.transfer_out(agent, number).await,
            TransferTarget::Queue(q) => (q.clone(), None),
            TransferTarget::Agent(a) if a == agent => {
                return Err(Refusal::new(
                    "bad_target",
                    "you cannot transfer a call to yourself",
                ));
            }
            TransferTarget::Agent(a) => match &self.last_queue {
                Some((q, _)) => (q.clone(), Some(a.clone())),
                None => return Err(Refusal::new("bad_target", "the call came through no queue")),
            },
        };
        if self.inner.acd.queue_state(&queue).await.is_none() {
            return Err(Refusal::new(
                "unknown_queue",
                format!("there is no queue {queue}"),
            ));
        }
        self.release_agent().await;
        let described = match &target {
            TransferTarget::Queue(q) => format!("queue:{q}"),
            TransferTarget::Agent(a) => format!("agent:{a}"),
            TransferTarget::Number(n) => format!("number:{}", n.expose()),
        };
        self.log(InteractionEventKind::Transferred {
            target: Pii::new(described),
        });
        info!(%queue, "blind transfer");
        self.inner.desks.release(&self.id, agent);
        let priority = self.last_queue.as_ref().map_or(0, |(_, p)| *p);
        self.enqueue(queue, priority, None, preferred);
        Ok(())
    }

    /// Blind transfer to an outside number: the number is dialled through the outbound trunk while
    /// the caller hears hold music; the agent leaves once the dial is under way. If nobody answers,
    /// the caller goes back to the queue they came from.
    async fn transfer_out(
        &mut self,
        agent: &AgentId,
        number: &crate::desk::DialNumber,
    ) -> Result<(), Refusal> {
        let Some(trunk) = self.inner.outbound.clone() else {
            return Err(Refusal::new(
                "no_trunk",
                "no outbound trunk is configured for outside numbers",
            ));
        };
        let from = trunk.caller_id.clone().map(Pii::new);
        self.dial_external(format!("sip:{}@{}", number.expose(), trunk.host), from)
            .await?;
        self.release_agent().await;
        self.log(InteractionEventKind::Transferred {
            target: Pii::new(format!("number:{}", number.expose())),
        });
        info!("blind transfer to an outside number");
        self.inner.desks.release(&self.id, agent);
        Ok(())
    }

    /// Dials `uri` for the caller (who hears hold music meanwhile); on answer the two are bridged.
    /// `from` is the number shown (None: the caller's own).
    async fn dial_external(&mut self, uri: String, from: Option<Pii<String>>) -> Result<(), Refusal> {
        let PhoneRing { leg, rtp } = self
            .originate_to(uri, from)
            .await
            .ok_or_else(|| Refusal::new("unavailable", "the number could not be dialled"))?;
        let music = self.hold_music();
        if !music.is_empty() {
            self.rtp.play(music, true, false);
        }
        self.external = Some(External {
            leg,
            rtp,
            bridge: None,
        });
        Ok(())
    }

    async fn on_external(&mut self, ev: Option<LegEvent>) {
        let Some(ext) = self.external.as_mut() else { return };
        match ev {
            Some(LegEvent::Answered { sdp }) if ext.bridge.is_none() => {
                let negotiated = negotiate(&sdp);
                let Some(negotiated) = negotiated else {
                    ext.leg.hangup();
                    self.external_failed("no common codec");
                    return;
                };
                ext.rtp.set_remote(negotiated);
                self.rtp.stop_playback();
                ext.bridge = Some(self.inner.media.bridge(&self.rtp, &ext.rtp));
                info!("the transferred-to number answered; bridged");
            }
            Some(LegEvent::Reoffer { sdp, reply }) => {
                let negotiated = negotiate(&sdp);
                if let Some(n) = negotiated {
                    let answer =
                        media::sdp::answer(&n, ext.rtp.local_addr(), rand::random::<u32>() as u64, 2);
                    ext.rtp.set_remote(n);
                    let _ = reply.send(answer.into_bytes());
                }
            }
            Some(LegEvent::Failed { .. }) | Some(LegEvent::Hangup) | None => {
                if ext.bridge.is_some() {
                    self.external = None;
                    self.end(EndedBy::System, "the transferred-to party hung up");
                } else {
                    self.external_failed("the transferred-to number did not answer");
                }
            }
            Some(_) => {}
        }
    }

    /// The outside number never answered: the caller is not dropped but queued again.
    fn external_failed(&mut self, reason: &str) {
        self.external = None;
        self.rtp.stop_playback();
        info!(reason, "transfer to an outside number failed");
        match self.last_queue.clone() {
            Some((queue, priority)) => self.enqueue(queue, priority, None, None),
            None => self.end(EndedBy::System, reason),
        }
    }

    /// Opens the browser agent's WebRTC leg for their SDP offer, wired to a fresh engine leg.
    fn open_browser_leg(&self, sdp: Option<String>) -> Result<(WebRtcLeg, String), Refusal> {
        open_browser_leg(&self.inner, sdp)
    }

    /// The browser softphone accepted the offered call with its SDP offer.
    async fn accept_in_browser(&mut self, offered: usize, sdp: Option<String>) -> Result<(), Refusal> {
        let (browser, answer) = self.open_browser_leg(sdp)?;
        let (agent_rtp, _events) = self
            .inner
            .media
            .allocate_leg()
            .map_err(|e| Refusal::new("unavailable", e.to_string()))?;
        browser
            .connect_plain(&agent_rtp)
            .map_err(|e| Refusal::new("unavailable", e.to_string()))?;
        let r = self.ringing.remove(offered);
        self.inner.desks.notify(
            &r.agent,
            DeskEvent::MediaAnswer {
                call: self.id.clone(),
                sdp: answer,
            },
        );
        let leg = AgentLeg::Browser {
            leg: Some(browser),
            lost_at: None,
        };
        self.connect_agent(r.agent, leg, agent_rtp).await;
        Ok(())
    }

    /// A re-attached desktop brings the softphone back for a call already connected: the new
    /// WebRTC leg feeds the same engine leg, so the bridge and the recording carry on.
    fn reattach_browser(&mut self, sdp: Option<String>) -> Result<(), Refusal> {
        let (browser, answer) = self.open_browser_leg(sdp)?;
        let Some(c) = self.connected.as_mut() else {
            return Err(Refusal::new(
                "not_connected",
                "you are not talking to this caller",
            ));
        };
        let AgentLeg::Browser { leg, lost_at } = &mut c.leg else {
            return Err(Refusal::new("already_connected", "you are already on this call"));
        };
        browser
            .connect_plain(&c.rtp)
            .map_err(|e| Refusal::new("unavailable", e.to_string()))?;
        let was_lost = lost_at.take().is_some();
        *leg = Some(browser);
        if was_lost && c.bridge.is_held() {
            c.bridge.resume();
        }
        info!(agent = %c.agent, "browser media re-attached");
        self.inner.desks.notify(
            &c.agent,
            DeskEvent::MediaAnswer {
                call: self.id.clone(),
                sdp: answer,
            },
        );
        Ok(())
    }

    /// After the call: the agent's desktop may still save a disposition and notes for it, for up to
    /// the configured window. This runs on its own so a draining node is not held up by it.
    pub(crate) fn into_wrap_up(self) {
        let Some(agent) = self.last_agent.clone() else {
            return;
        };
        let desks = self.inner.desks.clone();
        if desks.desk_media(&agent).is_none() {
            desks.release(&self.id, &agent);
            if let Some(restore) = self.outbound.clone() {
                self.inner.acd.input(restore);
            }
            return;
        }
        let restore = self.outbound.clone();
        desks.set_phase(&self.id, &agent, CallPhase::WrapUp, Timestamp::now_utc());
        let Call {
            inner,
            id,
            mut timeline,
            mut commands_rx,
            campaign,
            ..
        } = self;
        let span = info_span!("wrap_up", call = %id);
        tokio::spawn(
            async move {
                let deadline = Instant::now() + inner.wrap_up_window;
                loop {
                    let request = tokio::select! {
                        r = commands_rx.recv() => r,
                        _ = tokio::time::sleep_until(deadline) => None,
                    };
                    let Some(request) = request else { break };
                    match request.command {
                        AgentCommand::WrapUp {
                            disposition,
                            notes,
                            campaign: wants,
                        } if request.agent == agent => {
                            if !wants.is_empty() {
                                // Do-not-call and callbacks are for campaign leads only.
                                match campaign.as_ref() {
                                    Some(link) => link.wrapped_up(&agent, wants),
                                    None => {
                                        let _ = request.reply.send(Err(Refusal::new(
                                            "not_campaign_call",
                                            "do_not_call and callback are for campaign calls",
                                        )));
                                        continue;
                                    }
                                }
                            }
                            let now = Timestamp::now_utc();
                            inner.log(timeline.event(
                                now,
                                InteractionEventKind::WrappedUp {
                                    agent: agent.clone(),
                                    disposition,
                                    notes,
                                },
                            ));
                            // The wrap-up timer may already have made the agent available; and a
                            // late disposition must not end the after-call work of a newer call.
                            if restore.is_none() && !desks.has_other_call(&agent, &id) {
                                let _ = inner
                                    .acd
                                    .request(acd::Input::WrapUpDone { agent: agent.clone() })
                                    .await;
                            }
                            let _ = request.reply.send(Ok(None));
                            break;
                        }
                        _ => {
                            let _ = request
                                .reply
                                .send(Err(Refusal::new("call_ended", "the call has ended")));
                        }
                    }
                }
                // An agent-placed call: back to the state the agent dialled from (unless they are
                // already on a newer call).
                let newer = desks.has_other_call(&agent, &id);
                desks.release(&id, &agent);
                if let Some(restore) = restore.filter(|_| !newer) {
                    let _ = inner.acd.request(restore).await;
                }
            }
            .instrument(span),
        );
    }

    /// Ends the agent's part of the call: their leg is hung up and they go to wrap-up.
    async fn release_agent(&mut self) -> Option<AgentId> {
        if let Some(s) = self.supervisor.take() {
            self.drop_supervisor(s);
        }
        if let Some(c) = self.consult.take() {
            if let Some(handle) = c.joined {
                handle.stop();
            }
            c.leg.hangup();
        }
        let c = self.disconnect_agent().await?;
        c.leg.hang_up();
        if self.outbound.is_none() {
            self.inner.acd.input(acd::Input::CallEnded {
                call: self.id.clone(),
            });
        }
        Some(c.agent)
    }

    /// The browser agent's media went away (a reload or a network drop): the caller hears music on
    /// hold while the desktop has [`MEDIA_REATTACH_GRACE`] to come back.
    fn browser_media_lost(&mut self) {
        let music = self.hold_music();
        let Some(c) = self.connected.as_mut() else { return };
        if let AgentLeg::Browser { leg, lost_at } = &mut c.leg {
            *leg = None;
            *lost_at = Some(Instant::now());
            info!(agent = %c.agent, "browser media lost; waiting for the desktop to re-attach");
            if !c.bridge.is_held() {
                c.bridge.hold(BridgeSide::A, music);
            }
        }
    }

    /// The agent's part of the call is over: close the recording and report where it is.
    async fn disconnect_agent(&mut self) -> Option<Connected> {
        let mut c = self.connected.take()?;
        if let Some(recording) = c.recording.take() {
            match recording.stop().await {
                Ok(path) => self.log(InteractionEventKind::Recording {
                    path: path.display().to_string(),
                }),
                Err(e) => warn!(error = %e, "recording not closed"),
            }
        }
        Some(c)
    }

    fn offer_failed(&mut self, i: usize, reason: String) {
        if i >= self.ringing.len() {
            return;
        }
        let r = self.ringing.remove(i);
        let agent = r.agent.clone();
        self.stop_ringing(r, &reason);
        self.inner.acd.input(acd::Input::OfferRejected {
            call: self.id.clone(),
            agent: agent.clone(),
        });
        self.log(InteractionEventKind::OfferFailed { agent, reason });
    }

    async fn on_agent_leg(&mut self, ev: Option<LegEvent>) {
        match ev {
            Some(LegEvent::Hangup) | None => self.agent_hung_up().await,
            Some(LegEvent::Reoffer { sdp, reply }) => {
                let negotiated = negotiate(&sdp);
                if let (Some(c), Some(n)) = (&self.connected, negotiated) {
                    let answer = media::sdp::answer(&n, c.rtp.local_addr(), rand::random::<u32>() as u64, 2);
                    c.rtp.set_remote(n);
                    let _ = reply.send(answer.into_bytes());
                }
            }
            Some(_) => {}
        }
    }

    pub(crate) async fn finish(&mut self) {
        let (by, reason) = self.ended.clone().unwrap_or((EndedBy::System, "ended".into()));
        if by != EndedBy::Caller {
            self.caller.hangup();
        }
        self.release_agent().await;
        self.finish_voicemail().await;
        for r in std::mem::take(&mut self.ringing) {
            self.stop_ringing(r, "caller hung up");
        }
        if let Some(ext) = self.external.take() {
            ext.leg.hangup();
        }
        match (self.callback.take(), self.queue.take()) {
            // The caller keeps their place: the callback task waits in line for them.
            (Some(number), Some((queue, notices))) => {
                crate::callback::spawn(self.inner.clone(), self.id.clone(), queue, notices, number, 0);
            }
            (_, queue) => {
                if queue.is_some() {
                    self.inner.acd.input(acd::Input::CallAbandoned {
                        call: self.id.clone(),
                    });
                }
                self.inner.acd.forget(self.id.clone());
            }
        }
        if self.ivr.is_some() {
            let _ = self
                .inner
                .state
                .delete_blob(crate::IVR_STATE_NAMESPACE, self.id.as_str(), None)
                .await;
        }
        let q = self.rtp.quality();
        let quality = QualityReport {
            loss: q.loss_fraction,
            jitter_ms: q.jitter_ms,
            mos: q.mos,
        };
        self.log(ended(by, &reason, Some(quality)));
        info!(?by, %reason, "call ended");
    }
}

async fn next_notice(
    queue: &mut Option<(domain::QueueId, mpsc::UnboundedReceiver<QueueNotice>)>,
) -> Option<QueueNotice> {
    match queue {
        Some((_, rx)) => rx.recv().await,
        None => std::future::pending().await,
    }
}

async fn next_ringing(ringing: &mut [Ringing]) -> (usize, Option<LegEvent>) {
    if ringing.iter().all(|r| r.phone.is_none()) {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for (i, r) in ringing.iter_mut().enumerate() {
            let Some(phone) = r.phone.as_mut() else { continue };
            if let std::task::Poll::Ready(ev) = phone.leg.poll_event(cx) {
                return std::task::Poll::Ready((i, ev));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

async fn voicemail_over(voicemail: &Option<Voicemail>) {
    match voicemail {
        Some(v) => tokio::time::sleep_until(v.until).await,
        None => std::future::pending().await,
    }
}

async fn next_consult(consult: &mut Option<Consult>) -> Option<LegEvent> {
    match consult {
        Some(c) => c.leg.next_event().await,
        None => std::future::pending().await,
    }
}

async fn next_supervisor(supervisor: &mut Option<Supervisor>) -> Option<LegEvent> {
    match supervisor {
        Some(Supervisor::Ringing { phone, .. }) => phone.leg.next_event().await,
        Some(Supervisor::Joined {
            leg: SupervisorLeg::Phone(leg),
            ..
        }) => leg.next_event().await,
        Some(Supervisor::Joined {
            leg: SupervisorLeg::Browser(leg),
            ..
        }) => loop {
            match leg.next_event().await {
                Some(WebRtcEvent::Closed { .. } | WebRtcEvent::MediaTimeout { .. }) | None => return None,
                Some(_) => {}
            }
        },
        None => std::future::pending().await,
    }
}

async fn next_external(external: &mut Option<External>) -> Option<LegEvent> {
    match external {
        Some(e) => e.leg.next_event().await,
        None => std::future::pending().await,
    }
}

async fn next_connected(connected: &mut Option<Connected>) -> AgentSide {
    let Some(c) = connected else {
        return std::future::pending().await;
    };
    match &mut c.leg {
        AgentLeg::Phone(leg) => AgentSide::Phone(leg.next_event().await),
        AgentLeg::Browser { leg: Some(leg), .. } => loop {
            match leg.next_event().await {
                Some(WebRtcEvent::Closed { .. } | WebRtcEvent::MediaTimeout { .. }) | None => {
                    return AgentSide::BrowserMediaLost;
                }
                Some(WebRtcEvent::Connected | WebRtcEvent::Disconnected) => {}
            }
        },
        AgentLeg::Browser {
            leg: None,
            lost_at: Some(at),
        } => {
            tokio::time::sleep_until(*at + MEDIA_REATTACH_GRACE).await;
            AgentSide::ReattachExpired
        }
        AgentLeg::Browser {
            leg: None,
            lost_at: None,
        } => std::future::pending().await,
    }
}

async fn lookup(crm: crm_store::CrmStore, key: ivr::LookupKey) -> ivr::LookupResult {
    let found = match &key {
        ivr::LookupKey::CallerNumber(n) => crm.find_customer_by_phone(n.expose()).await,
        ivr::LookupKey::AccountNumber(a) => crm.find_customer_by_account(a.expose()).await,
    };
    match found {
        Ok(Some(card)) => ivr::LookupResult::Found(ivr::CustomerRecord {
            id: card.customer.id.clone(),
            name: card.customer.name.clone(),
            tier: format!("{:?}", card.customer.tier).to_lowercase(),
            account_manager: card.customer.account_manager.clone(),
            open_cases: 0,
        }),
        Ok(None) => ivr::LookupResult::NotFound,
        Err(e) => {
            warn!(error = %e, "CRM lookup failed");
            ivr::LookupResult::Failed
        }
    }
}
