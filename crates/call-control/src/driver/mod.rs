//! The async driver of one [`CallSession`]: every call (inbound, placed by an agent, a callback, a
//! campaign's answered person) runs in one task that turns what SIP, the media engine, the ACD, the
//! CRM and the agents' desktops report into [`Input`]s, feeds them to the session with the time, and
//! carries out the [`Command`]s it returns ([`exec`]). The driver decides nothing about the call:
//! which agent rings, when the call ends, what is logged are the session's.
//!
//! What the driver keeps is IO: the caller's SIP and engine legs, each [`LegRef`]'s handles
//! ([`legs`]), the bridge, recordings, monitor handles, the ACD's notice channel, the desktops'
//! reply channels, and the CRM card the screen pop shows.
//!
//! A call runs in the task that took it until the call itself has ended ([`Driver::run`]); agents'
//! after-call work (the wrap-up form) then goes on in a task of its own ([`Driver::wrap_up_later`]),
//! so a draining node is not held up by it.

mod exec;
pub(crate) mod legs;

use crate::Inner;
use crate::acd_task::QueueNotice;
use crate::campaign_runner::CallLink;
use crate::desk::{CommandRequest, CommandResult};
use crate::queue_audio::QueueAudioPlayer;
use call_session::{CallSession, Input, LegRef, RequestId};
use domain::{AgentId, CallId, Direction, Pii, Timestamp};
use legs::{LegIo, LegSignal};
use media::engine::{Bridge, LegEvent as MediaEvent, MonitorHandle, RecordingHandle, RtpLeg};
use media::g711::G711;
use sip_gateway::{LegEvent, LegHandle};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

/// Results of work the driver started in the background (the IVR's lookups, webhooks, queue
/// queries).
pub(crate) struct Done(ivr::IvrEvent);

/// The customer's leg once it is up: answered inbound, or a dialled customer who answered.
pub(crate) struct CallerIo {
    pub(crate) leg: LegHandle,
    pub(crate) rtp: RtpLeg,
    pub(crate) law: G711,
    pub(crate) media: mpsc::Receiver<MediaEvent>,
    /// The SIP leg still reports (not hung up).
    pub(crate) leg_open: bool,
    /// The engine leg still reports.
    pub(crate) media_open: bool,
}

impl CallerIo {
    pub(crate) fn new(leg: LegHandle, rtp: RtpLeg, law: G711, media: mpsc::Receiver<MediaEvent>) -> Self {
        CallerIo {
            leg,
            rtp,
            law,
            media,
            leg_open: true,
            media_open: true,
        }
    }
}

/// How the call looks on an agent's desktop, besides what the session says.
pub(crate) struct PopStyle {
    pub(crate) direction: Direction,
    /// Put before the router's explanation (callbacks say so).
    pub(crate) prefix: &'static str,
}

/// What a campaign learns of its call once it has ended.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The agent who talked to the person, and when.
    pub(crate) connected: Option<(AgentId, Timestamp)>,
    /// The campaign was told the call was abandoned.
    pub(crate) abandoned: bool,
    /// The session's last `dial_attempt` outcome.
    pub(crate) dial_outcome: Option<String>,
}

/// Everything the driver is told while it waits.
enum Event {
    Caller(Option<LegEvent>),
    Media(Option<MediaEvent>),
    Done(Done),
    Notice(Option<QueueNotice>),
    Leg(LegRef, LegSignal),
    Request(CommandRequest),
    /// The caller's queue audio has an announcement due.
    QueueAudioDue,
    Tick,
}

pub(crate) struct Driver {
    inner: Arc<Inner>,
    session: CallSession,
    id: CallId,
    caller_number: Pii<String>,
    called_number: Pii<String>,
    caller: Option<CallerIo>,
    /// The session's name of the caller's leg when it was a dialled customer.
    caller_ref: Option<LegRef>,
    legs: BTreeMap<LegRef, LegIo>,
    /// Legs that ended, kept until the commands of the input that said so have run (the recording
    /// closes before its bridge goes).
    gone: Vec<LegRef>,
    bridge: Option<(LegRef, Bridge)>,
    recording: Option<RecordingHandle>,
    voicemail: Option<RecordingHandle>,
    monitor: Option<MonitorHandle>,
    consult: Option<MonitorHandle>,
    notices: Option<mpsc::UnboundedReceiver<QueueNotice>>,
    /// Music and announcements while the caller waits in a queue (none when queue audio is off).
    queue_audio: Option<QueueAudioPlayer>,
    commands_tx: mpsc::UnboundedSender<CommandRequest>,
    commands_rx: mpsc::UnboundedReceiver<CommandRequest>,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
    replies: HashMap<RequestId, oneshot::Sender<CommandResult>>,
    next_request: u64,
    pending: VecDeque<Input>,
    card: Option<crm_store::CustomerCard>,
    pop: PopStyle,
    campaign: Option<CallLink>,
    /// An agent-placed call puts its agent back this way, unless a newer call has them.
    restore: Option<acd::Input>,
    outcome: Outcome,
}

impl Driver {
    /// A driver for `session`; `caller` is the customer's leg when it is up already.
    pub(crate) fn new(
        inner: Arc<Inner>,
        session: CallSession,
        caller_number: Pii<String>,
        called_number: Pii<String>,
        caller: Option<CallerIo>,
        pop: PopStyle,
    ) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (commands_tx, commands_rx) = mpsc::unbounded_channel();
        Driver {
            id: session.id().clone(),
            inner,
            session,
            caller_number,
            called_number,
            caller,
            caller_ref: None,
            legs: BTreeMap::new(),
            gone: Vec::new(),
            bridge: None,
            recording: None,
            voicemail: None,
            monitor: None,
            consult: None,
            notices: None,
            queue_audio: None,
            commands_tx,
            commands_rx,
            done_tx,
            done_rx,
            replies: HashMap::new(),
            next_request: 1,
            pending: VecDeque::new(),
            card: None,
            pop,
            campaign: None,
            restore: None,
            outcome: Outcome::default(),
        }
    }

    /// The session settings every call of this node shares.
    pub(crate) fn settings(inner: &Inner) -> call_session::Settings {
        let queues = inner
            .acd
            .live_kpis()
            .borrow()
            .queues
            .iter()
            .map(|q| q.queue.clone())
            .collect();
        call_session::Settings {
            record_calls: inner.record_calls,
            trunk: inner.outbound.as_ref().map(|t| call_session::Trunk {
                host: t.host.clone(),
                caller_id: t.caller_id.clone(),
            }),
            queues,
            wrap_up_window: inner.wrap_up_window,
            reattach_grace: Duration::from_secs(30),
            customer_ring: Duration::from_secs(45),
        }
    }

    /// The call's notices from the ACD arrive here (a callback takes over a caller's place).
    pub(crate) fn with_notices(mut self, notices: mpsc::UnboundedReceiver<QueueNotice>) -> Self {
        self.notices = Some(notices);
        self
    }

    pub(crate) fn with_campaign(mut self, link: CallLink) -> Self {
        self.campaign = Some(link);
        self
    }

    pub(crate) fn with_restore(mut self, restore: acd::Input) -> Self {
        self.restore = Some(restore);
        self
    }

    /// A request of the driver's owner (the agent's dial request), answered like a desktop's.
    pub(crate) fn expect_reply(&mut self, request: RequestId, reply: oneshot::Sender<CommandResult>) {
        self.replies.insert(request, reply);
        self.next_request = self.next_request.max(request.0.saturating_add(1));
    }

    /// The caller no longer waits in a queue: no more queue music or announcements.
    pub(crate) fn leave_queue_audio(&mut self) -> &mut Self {
        self.queue_audio = None;
        self
    }

    /// Feeds `input` at the next step.
    pub(crate) fn feed(&mut self, input: Input) {
        self.pending.push_back(input);
    }

    /// How the call went, for a campaign.
    pub(crate) fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// Runs the call until it has ended (wrap-ups may still be pending).
    pub(crate) async fn run(&mut self) {
        self.step().await;
        while !self.session.is_ended() && !self.session.is_finished() {
            let event = self.next_event().await;
            self.on_event(event);
            self.step().await;
        }
    }

    /// Runs what is left (agents' wrap-ups) in a task of its own.
    pub(crate) fn wrap_up_later(mut self) {
        if self.session.is_finished() {
            return;
        }
        let span = tracing::info_span!("wrap_up", call = %self.id);
        tokio::spawn(
            async move {
                self.step().await;
                while !self.session.is_finished() {
                    let event = self.next_event().await;
                    self.on_event(event);
                    self.step().await;
                }
            }
            .instrument(span),
        );
    }

    /// Feeds every pending input and carries out what the session asks, until nothing is left.
    async fn step(&mut self) {
        loop {
            while let Some(command) = self.session.poll_command() {
                self.execute(command).await;
            }
            for leg in std::mem::take(&mut self.gone) {
                self.drop_leg(leg);
            }
            let Some(input) = self.pending.pop_front() else {
                return;
            };
            self.session.handle(Timestamp::now_utc(), input);
        }
    }

    /// Forgets a leg's IO (its handles hang it up); its bridge goes with it.
    fn drop_leg(&mut self, leg: LegRef) {
        if self.bridge.as_ref().is_some_and(|(l, _)| *l == leg) {
            self.bridge = None;
        }
        if let Some(io) = self.legs.remove(&leg)
            && let Some(sip) = io.sip
        {
            sip.hangup();
        }
    }

    async fn next_event(&mut self) -> Event {
        let wait = self.session.next_deadline().map(|at| {
            let ms = at.as_millis().saturating_sub(Timestamp::now_utc().as_millis());
            Duration::from_millis(u64::try_from(ms).unwrap_or(0))
        });
        let Driver {
            caller,
            legs,
            notices,
            queue_audio,
            commands_rx,
            done_rx,
            ..
        } = self;
        let (caller_leg, caller_media) = match caller.as_mut() {
            Some(c) => (
                c.leg_open.then_some(&mut c.leg),
                c.media_open.then_some(&mut c.media),
            ),
            None => (None, None),
        };
        tokio::select! {
            ev = async { match caller_leg { Some(l) => l.next_event().await, None => std::future::pending().await } } => Event::Caller(ev),
            ev = async { match caller_media { Some(m) => m.recv().await, None => std::future::pending().await } } => Event::Media(ev),
            Some(done) = done_rx.recv() => Event::Done(done),
            notice = async { match notices.as_mut() { Some(n) => n.recv().await, None => std::future::pending().await } } => Event::Notice(notice),
            (leg, signal) = legs::next_signal(legs) => Event::Leg(leg, signal),
            Some(request) = commands_rx.recv() => Event::Request(request),
            _ = crate::queue_audio::next_due(queue_audio) => Event::QueueAudioDue,
            _ = async { match wait { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => Event::Tick,
        }
    }

    /// Turns what happened into the session's input.
    fn on_event(&mut self, event: Event) {
        match event {
            Event::Caller(Some(LegEvent::Reoffer { sdp, reply })) => {
                if let Some(answer) = self
                    .caller
                    .as_ref()
                    .and_then(|c| legs::reanswer(&c.rtp, &c.leg, &sdp))
                {
                    let _ = reply.send(answer);
                }
            }
            Event::Caller(Some(LegEvent::Hangup) | None) => {
                // Nothing more will come from this leg.
                if let Some(c) = self.caller.as_mut() {
                    c.leg_open = false;
                }
                self.feed(Input::CallerHungUp);
            }
            Event::Caller(Some(_)) => {}
            Event::Media(Some(MediaEvent::Dtmf { digit, .. })) => {
                self.feed(Input::Digit(digit.expose().as_char()));
            }
            Event::Media(Some(MediaEvent::PlaybackFinished)) => {
                // An announcement or IVR prompt ended while the caller still waits: the music again
                // (a prompt the session plays next replaces it).
                if let Some(c) = self.caller.as_ref() {
                    crate::queue_audio::resume_music(&self.queue_audio, self.bridge.is_none(), &c.rtp);
                }
                self.feed(Input::PlaybackFinished)
            }
            Event::Media(Some(MediaEvent::MediaTimeout { .. })) => self.feed(Input::CallerMediaTimeout),
            Event::Media(Some(_)) => {}
            Event::Media(None) => {
                if let Some(c) = self.caller.as_mut() {
                    c.media_open = false;
                }
                self.feed(Input::CallerMediaClosed);
            }
            Event::Done(Done(ev)) => self.feed(Input::Ivr(ev)),
            Event::Notice(None) => self.notices = None,
            Event::Notice(Some(notice)) => {
                let input = match notice {
                    QueueNotice::Offer(offer) => {
                        let media = offer
                            .agents
                            .iter()
                            .map(|a| (a.clone(), self.inner.desks.desk_media(a)))
                            .collect();
                        Input::Offered { offer, media }
                    }
                    QueueNotice::OfferCancelled { agent, reason } => Input::OfferCancelled { agent, reason },
                    QueueNotice::Position {
                        position,
                        estimated_wait_secs,
                    } => {
                        if let Some(p) = self.queue_audio.as_mut() {
                            p.schedule
                                .update(position, estimated_wait_secs.map(Duration::from_secs));
                        }
                        Input::QueuePosition {
                            position,
                            estimated_wait_secs,
                        }
                    }
                    QueueNotice::Overflowed { target, .. } => Input::Overflowed { target },
                };
                self.feed(input);
            }
            Event::Leg(leg, signal) => self.on_leg(leg, signal),
            Event::Request(CommandRequest {
                agent,
                command,
                reply,
            }) => {
                let request = RequestId(self.next_request);
                self.next_request = self.next_request.saturating_add(1);
                self.replies.insert(request, reply);
                self.feed(Input::Command {
                    request,
                    agent,
                    command,
                });
            }
            Event::QueueAudioDue => {
                if let (Some(p), Some(c)) = (self.queue_audio.as_mut(), self.caller.as_ref()) {
                    p.play_due(&self.inner, &c.rtp, c.law);
                }
            }
            Event::Tick => self.feed(Input::Tick),
        }
    }

    fn on_leg(&mut self, leg: LegRef, signal: LegSignal) {
        match signal {
            LegSignal::BrowserLost => {
                if let Some(io) = self.legs.get_mut(&leg) {
                    // The engine leg stays: a re-attached softphone feeds it again.
                    io.web = None;
                }
                self.feed(Input::BrowserMediaLost { leg });
            }
            LegSignal::Sip(Some(LegEvent::Ringing)) => {}
            LegSignal::Sip(Some(LegEvent::Reoffer { sdp, reply })) => {
                if let Some(answer) = self
                    .legs
                    .get(&leg)
                    .and_then(|io| io.sip.as_ref().and_then(|sip| legs::reanswer(&io.rtp, sip, &sdp)))
                {
                    let _ = reply.send(answer);
                }
            }
            LegSignal::Sip(Some(LegEvent::Refer { to, user, reply })) => {
                // The agent's phone transfers the call (REFER): the same blind transfer as from the desktop.
                let agent = self.legs.get(&leg).and_then(|io| io.agent.clone());
                let target = legs::refer_target(to.expose(), user);
                let (Some(agent), Some(target)) = (agent, target) else {
                    let _ = reply.send(false);
                    return;
                };
                let request = RequestId(self.next_request);
                self.next_request = self.next_request.saturating_add(1);
                let (done, result) = oneshot::channel();
                self.replies.insert(request, done);
                tokio::spawn(async move {
                    let _ = reply.send(matches!(result.await, Ok(Ok(_))));
                });
                self.feed(Input::Command {
                    request,
                    agent,
                    command: call_session::AgentCommand::Transfer(target),
                });
            }
            LegSignal::Sip(Some(LegEvent::Answered { sdp })) => {
                let negotiated = legs::negotiate(&sdp);
                let usable = negotiated.is_some();
                let mut customer = None;
                if let (Some(n), Some(io)) = (negotiated, self.legs.get(&leg)) {
                    let law = n.law;
                    match io.sip.as_ref() {
                        Some(sip) => crate::media_rules::apply(&io.rtp, sip, n),
                        None => io.rtp.set_remote(n),
                    }
                    if io.media.is_some() && self.caller.is_none() {
                        customer = Some(law);
                    }
                }
                // A dialled customer answered: their leg is the call's caller leg now.
                if let Some(law) = customer
                    && let Some(io) = self.legs.remove(&leg)
                    && let (Some(sip), Some(media)) = (io.sip, io.media)
                {
                    self.caller = Some(CallerIo::new(sip, io.rtp, law, media));
                    self.caller_ref = Some(leg);
                }
                self.feed(Input::LegAnswered { leg, usable });
            }
            LegSignal::Sip(ended) => {
                let code = match ended {
                    Some(LegEvent::Failed { code }) => Some(code),
                    _ => None,
                };
                // Nothing more comes from it; its IO goes once the session has heard.
                if let Some(io) = self.legs.get_mut(&leg) {
                    io.sip = None;
                }
                self.gone.push(leg);
                self.feed(Input::LegEnded { leg, code });
            }
        }
    }
}
