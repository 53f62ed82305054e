//! The session machine: [`CallSession::handle`] applies one [`Input`], [`CallSession::poll_command`]
//! yields what the driver must do, [`CallSession::next_deadline`] says when to send [`Input::Tick`].

use crate::desk::{
    AgentCommand, AgentMedia, CallPhase, CampaignWrapUp, CommandResult, Refusal, SuperviseMode,
    TransferTarget,
};
use crate::timeline::Timeline;
use domain::{
    AgentId, CallId, CampaignId, Channel, CustomerId, Direction, EndedBy, InteractionEvent,
    InteractionEventKind, InteractionId, LeadId, Pii, QueueId, Timestamp,
};
use ivr::{IvrCommand, IvrEvent, IvrSession};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

/// A leg the session asked for (an agent's phone, a browser softphone, a dialled number). The
/// driver maps it to its IO handle; numbers are never reused within a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LegRef(pub u32);

/// A desktop request, answered by exactly one [`Command::Reply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// How outside numbers are reached: `sip:<number>@<host>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    pub host: String,
    /// The number presented to the called party; None passes the customer's number on.
    pub caller_id: Option<String>,
}

/// What a session needs to know of its surroundings; fixed for the call.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Record bridged calls.
    pub record_calls: bool,
    /// Where outside numbers are dialled (transfers, consults, agent-placed calls, callbacks).
    pub trunk: Option<Trunk>,
    /// Queues of the ACD (a transfer to an unknown one is refused before anything changes).
    pub queues: BTreeSet<QueueId>,
    /// How long an agent may still save the disposition after leaving the call.
    pub wrap_up_window: Duration,
    /// How long a browser agent's desktop has to bring lost media back.
    pub reattach_grace: Duration,
    /// How long an outside number (customer, transfer) may ring.
    pub customer_ring: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            record_calls: false,
            trunk: None,
            queues: BTreeSet::new(),
            wrap_up_window: Duration::from_secs(15 * 60),
            reattach_grace: Duration::from_secs(30),
            customer_ring: Duration::from_secs(45),
        }
    }
}

/// Where an inbound call starts.
#[derive(Debug)]
pub enum Entry {
    /// An IVR flow (the pure interpreter runs beside the call's phase).
    Ivr(Box<IvrSession>),
    /// Straight into a queue: the caller's CRM record sets the priority and preferred agent.
    Queue(QueueId),
    /// Nowhere this node can take it (a flow that cannot start, a bad queue name): the call ends
    /// with `reason` once answered.
    Nowhere { reason: String },
}

/// The campaign an answered outbound call belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignLink {
    pub campaign: CampaignId,
    pub lead: LeadId,
}

/// How the call came to be.
#[derive(Debug)]
pub enum Origin {
    /// A customer called in.
    Inbound { entry: Entry },
    /// An agent dials a number from the desktop (or a preview campaign's lead). `request` is the
    /// dial request, answered once the agent's own leg is up or failed; `restore` puts the agent
    /// back as they were after the call.
    ClickToDial {
        agent: AgentId,
        number: Pii<String>,
        media: AgentMedia,
        sdp: Option<String>,
        shown_as: String,
        request: RequestId,
        restore: Option<acd::Input>,
        preview: Option<CampaignLink>,
    },
    /// A caller's kept place in line: when an agent takes it, the customer is called back.
    Callback {
        number: Pii<String>,
        queue: QueueId,
        /// First event number (above any an earlier process used after a restart).
        first_seq: u32,
    },
    /// A campaign's answered person waiting for an agent until `connect_by`, or hearing `message`.
    Campaign {
        link: CampaignLink,
        queue: QueueId,
        preferred: Option<AgentId>,
        connect_by: Timestamp,
        message: PathBuf,
        /// First event number: the dialer logged the attempt's `arrived` and its verdict before the
        /// person was handed over (0: the session logs `arrived` itself).
        first_seq: u32,
    },
}

/// What the CRM knows of the caller, as far as routing needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerSummary {
    pub id: CustomerId,
    pub tier: String,
    pub queue_priority: u8,
    pub account_manager: Option<AgentId>,
}

/// Where a caller was when they left the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Abandonment {
    pub queue: QueueId,
    pub position: u32,
    pub waited_ms: u64,
}

/// How an offered agent takes the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Their SIP phone rings on `leg` (`started` once the INVITE is out).
    Phone { leg: LegRef, started: bool },
    /// Their desktop shows it; `opening` is the browser leg an accept is opening.
    Browser { opening: Option<(LegRef, RequestId)> },
}

/// One agent being offered the call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    pub agent: AgentId,
    pub via: Via,
    /// How the agent's desktop takes calls (None: no desktop attached).
    pub desk: Option<AgentMedia>,
}

/// Who put the caller on hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldBy {
    Agent,
    /// The browser agent's media dropped; the caller hears music until it comes back.
    MediaLoss,
    /// The agent consults another party.
    Consult,
}

/// The agent's side in an agent-first call (click-to-dial, callback) before the customer answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentSide {
    /// The agent's phone rings.
    Ringing(LegRef),
    /// The browser leg is being opened.
    Opening(LegRef),
    /// The agent's leg is up (`browser`: the softphone).
    Ready { leg: LegRef, browser: bool },
}

/// The consulted party.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consult {
    pub leg: LegRef,
    pub described: String,
    /// Ringing until the INVITE is out; the request waits for it.
    pub pending: Option<RequestId>,
    pub joined: bool,
}

/// A supervisor on the agent's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Supervisor {
    pub supervisor: AgentId,
    pub mode: SuperviseMode,
    pub leg: LegRef,
    pub browser: bool,
    pub pending: Option<RequestId>,
    pub joined: bool,
}

/// The agent talking to the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Talking {
    pub agent: AgentId,
    pub leg: LegRef,
    pub desk: Option<AgentMedia>,
    pub browser: bool,
    /// Since when the browser's media is gone (it may re-attach until the grace ends).
    pub lost_at: Option<Timestamp>,
    /// A re-attach under way: its leg and request.
    pub reattaching: Option<(LegRef, RequestId)>,
    pub held: Option<HeldBy>,
    pub muted: bool,
    pub recording: bool,
    pub consult: Option<Consult>,
    pub supervisor: Option<Supervisor>,
    /// A blind transfer to a number whose leg is being placed.
    pub transferring: Option<(LegRef, RequestId, String)>,
}

/// Where the call is. One enum instead of a flag per possibility.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Created; waiting for [`Input::CallerAnswered`] (inbound, campaign) or [`Input::Start`].
    Arriving,
    /// Agent first, then the customer (agent-placed calls and callbacks).
    Dialing {
        agent: AgentId,
        desk: Option<AgentMedia>,
        side: AgentSide,
        customer: Option<LegRef>,
    },
    /// In the IVR, in no queue.
    SelfService,
    /// Waiting in a queue, possibly ringing agents.
    Queued {
        queue: QueueId,
        offers: Vec<Offer>,
    },
    Talking(Box<Talking>),
    /// Sent to an outside party (transfer to a number, a completed consult).
    External {
        leg: LegRef,
        started: bool,
        bridged: bool,
    },
    /// A message is being recorded until `until`.
    Voicemail {
        mailbox: String,
        started: Timestamp,
        until: Timestamp,
    },
    /// A campaign's identification message plays; the call ends when it has.
    Abandoning,
    Ended {
        by: EndedBy,
        reason: String,
    },
}

/// An agent in after-call work on this call, until `until` at the latest.
#[derive(Debug, Clone, PartialEq)]
pub struct WrapUp {
    pub agent: AgentId,
    pub until: Timestamp,
    /// Put back this way afterwards (agent-placed calls).
    pub restore: Option<acd::Input>,
}

/// What the campaign must hear about its call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CampaignNote {
    /// An agent took the answered person at `at`.
    Connected { agent: AgentId, at: Timestamp },
    /// Nobody in time: the message plays, the call counts as abandoned.
    Abandoned,
    /// The agent's wrap-up asks for do-not-call or a callback.
    WrappedUp { agent: AgentId, wants: CampaignWrapUp },
}

/// What happened, for the session.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Agent-placed calls and callbacks: begin (identify the customer, ring the agent).
    Start,
    /// The customer's leg is answered and media is up (inbound, campaign).
    CallerAnswered,
    /// The customer's leg could not be answered (no acceptable media).
    CallerRefused {
        reason: String,
    },
    CallerHungUp,
    /// A key from the caller (RFC 4733 or in-band).
    Digit(char),
    PlaybackFinished,
    /// Nothing of the last `Play` could be loaded.
    NothingToPlay,
    /// No media from the caller for too long.
    CallerMediaTimeout,
    /// The caller's media leg closed.
    CallerMediaClosed,
    /// The answer to an IVR lookup, webhook or queue query ([`Command::Ivr`]).
    Ivr(IvrEvent),
    /// The answer to [`Command::IdentifyCaller`].
    CallerIdentified(Option<CustomerSummary>),
    /// The ACD offers the call; `media` says how each agent's desktop takes calls (None: no desktop).
    Offered {
        offer: acd::Offer,
        media: DeskMedia,
    },
    OfferCancelled {
        agent: AgentId,
        reason: String,
    },
    QueuePosition {
        position: u32,
        estimated_wait_secs: Option<u64>,
    },
    Overflowed {
        target: String,
    },
    /// The answer to [`Command::Abandon`].
    Abandoned(Option<Abandonment>),
    /// The leg's INVITE is out (it rings).
    LegStarted {
        leg: LegRef,
    },
    /// The leg could not be placed (not registered, no route, no RTP port).
    LegFailed {
        leg: LegRef,
        reason: String,
    },
    /// The leg answered; `usable` when its SDP gave a common codec.
    LegAnswered {
        leg: LegRef,
        usable: bool,
    },
    /// The leg ended (hung up, or a final failure `code` before answering).
    LegEnded {
        leg: LegRef,
        code: Option<u16>,
    },
    BrowserOpened {
        leg: LegRef,
        answer_sdp: String,
    },
    BrowserFailed {
        leg: LegRef,
        refusal: Refusal,
    },
    BrowserMediaLost {
        leg: LegRef,
    },
    /// The answer to [`Command::StopRecording`].
    RecordingStopped {
        path: Option<String>,
    },
    /// The answer to [`Command::StartVoicemail`] when recording could not start.
    VoicemailFailed,
    /// The answer to [`Command::StopVoicemail`].
    VoicemailStopped {
        path: Option<String>,
    },
    /// An agent's (or a supervisor's, naming the agent they supervise) desktop command.
    Command {
        request: RequestId,
        agent: AgentId,
        command: AgentCommand,
    },
    /// Time passed: fire what is due.
    Tick,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Append to the CRM (the driver adds the caller leg's quality report to `ended`).
    Log(InteractionEvent),
    /// Answer a desktop request.
    Reply {
        request: RequestId,
        result: CommandResult,
    },
    /// Play to the caller; `looped` for hold music.
    Play {
        prompts: Vec<PathBuf>,
        looped: bool,
        barge_in: bool,
    },
    /// Loop the hold music to the caller.
    PlayHoldMusic,
    StopPlayback,
    /// Record a message from the caller into `name`, after a beep when `beep`.
    StartVoicemail {
        name: String,
        beep: bool,
    },
    StopVoicemail,
    /// The IVR's async work (lookup, webhook, queue query); answered by [`Input::Ivr`].
    Ivr(IvrCommand),
    /// Keep the IVR's state (never sensitive digits) where desktops and other nodes read it.
    SaveIvrState(Box<ivr::IvrState>),
    DeleteIvrState,
    /// Look the caller up by number; answered by [`Input::CallerIdentified`].
    IdentifyCaller {
        number: Pii<String>,
    },
    /// Enqueue; the driver routes the call's notices back as inputs.
    Enqueue(acd::CallRequest),
    Acd(acd::Input),
    /// The caller hung up while queued; answered by [`Input::Abandoned`].
    Abandon,
    /// Stop routing the ACD's notices of this call here.
    ForgetQueue,
    /// The caller asked to be called back: keep the place in line with a callback session.
    KeepPlaceForCallback {
        queue: QueueId,
        number: Pii<String>,
    },
    /// How the callback promised during the caller's interaction ended (`done`, `failed`).
    SettleCallback {
        status: &'static str,
    },
    RingPhone {
        leg: LegRef,
        agent: AgentId,
        shown_as: String,
    },
    /// Dial `uri` showing `from` (None: the caller's number). `customer`: the answered leg becomes
    /// the call's customer leg.
    Dial {
        leg: LegRef,
        uri: String,
        from: Option<String>,
        ring: Duration,
        customer: bool,
    },
    /// Open a browser softphone leg for `sdp`; `attach_to` feeds an existing agent leg (re-attach).
    OpenBrowser {
        leg: LegRef,
        agent: AgentId,
        sdp: Option<String>,
        attach_to: Option<LegRef>,
    },
    HangUp {
        leg: LegRef,
    },
    HangUpCaller,
    /// Bridge the caller with `leg` (replacing any bridge).
    Bridge {
        leg: LegRef,
    },
    /// Hold the caller (with music) / resume.
    Hold,
    Resume,
    /// The agent's mute on the bridge.
    Mute(bool),
    JoinMonitor {
        leg: LegRef,
        mode: SuperviseMode,
    },
    MonitorMode(SuperviseMode),
    StopMonitor,
    /// Attach the consulted party to the agent's bridge (they talk while the caller holds).
    JoinConsult {
        leg: LegRef,
    },
    LeaveConsult,
    StartRecording {
        paused: bool,
    },
    PauseRecording,
    ResumeRecording,
    /// Close the recording; answered by [`Input::RecordingStopped`].
    StopRecording,
    DeskOffer {
        agent: AgentId,
        queue: Option<QueueId>,
        explanation: String,
        waited_ms: u64,
    },
    DeskWithdraw {
        agent: AgentId,
        reason: String,
    },
    DeskPhase {
        agent: AgentId,
        phase: CallPhase,
    },
    DeskRelease {
        agent: AgentId,
    },
    DeskMediaAnswer {
        agent: AgentId,
        sdp: String,
    },
    /// The agent's after-call work is done (the ACD makes them available unless a newer call has
    /// them).
    WrapUpDone {
        agent: AgentId,
    },
    Campaign(CampaignNote),
    /// The session has nothing left to do: forget it.
    Finished,
}

/// How each offered agent's desktop takes calls (None: no desktop attached).
pub type DeskMedia = Vec<(AgentId, Option<AgentMedia>)>;

/// One call. See the crate documentation.
#[derive(Debug)]
pub struct CallSession {
    id: CallId,
    timeline: Timeline,
    settings: Settings,
    caller: Pii<String>,
    called: Pii<String>,
    phase: Phase,
    ivr: Option<Box<IvrSession>>,
    ivr_timers: BTreeMap<ivr::TimerId, Timestamp>,
    /// The CRM record of the caller: None = not asked; Some(None) = asked, not known yet.
    customer: Option<Option<Option<CustomerSummary>>>,
    /// Offers waiting for the caller's record (the screen pop needs it).
    waiting_offers: Vec<(acd::Offer, DeskMedia)>,
    /// A direct queue route waiting for the caller's record.
    waiting_queue: Option<QueueId>,
    last_queue: Option<(QueueId, u8)>,
    callback: Option<Pii<String>>,
    recording_paused: bool,
    wrap_ups: Vec<WrapUp>,
    /// Agent-placed: the agent goes back this way; no ACD offer/answer/end inputs.
    restore: Option<acd::Input>,
    outbound: bool,
    /// A callback's agent was accepted in the ACD before the customer is dialled.
    acd_accepted: bool,
    dial_request: Option<RequestId>,
    preview: Option<CampaignLink>,
    campaign: Option<(CampaignLink, Timestamp, PathBuf)>,
    campaign_connected: bool,
    /// Answers the session still waits for before it can log the end.
    closing: u32,
    ending: Option<(EndedBy, String)>,
    voicemail_started: Option<Timestamp>,
    next_leg: u32,
    legs_open: BTreeSet<LegRef>,
    commands: VecDeque<Command>,
    now: Timestamp,
    finished: bool,
    origin_kind: OriginKind,
    click: Option<(AgentId, AgentMedia, Option<String>, String)>,
    callback_queue: Option<QueueId>,
    campaign_preferred: Option<AgentId>,
    last_mailbox: String,
    /// An agent talked to the customer.
    answered: bool,
    ended_logged: bool,
    /// The customer's leg is up (answered inbound, or a placed call's customer answered).
    caller_up: bool,
    /// A voicemail is being recorded (not stopped yet).
    voicemail_recording: bool,
    /// Why an inbound call has nowhere to go.
    nowhere: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OriginKind {
    Inbound,
    ClickToDial,
    Callback,
    Campaign,
}

fn refuse(code: &'static str, message: &str) -> CommandResult {
    Err(Refusal::new(code, message))
}

fn not_connected() -> CommandResult {
    refuse("not_connected", "you are not talking to this caller")
}

impl CallSession {
    /// A session for call `id`, logging its arrival. `caller` is the customer's number, `called`
    /// what they dialled (or, for placed calls, what they are shown).
    pub fn new(
        id: CallId,
        now: Timestamp,
        origin: Origin,
        caller: Pii<String>,
        called: Pii<String>,
        settings: Settings,
    ) -> Result<Self, domain::IdError> {
        let (kind, interaction, first_seq) = match &origin {
            Origin::Inbound { .. } => (OriginKind::Inbound, id.as_str().to_string(), 0),
            Origin::ClickToDial { .. } => (OriginKind::ClickToDial, id.as_str().to_string(), 0),
            Origin::Callback { first_seq, .. } => {
                (OriginKind::Callback, format!("{}-cb", id.as_str()), *first_seq)
            }
            Origin::Campaign { first_seq, .. } => (OriginKind::Campaign, id.as_str().to_string(), *first_seq),
        };
        let interaction = InteractionId::new(&interaction)?;
        let mut s = CallSession {
            id,
            timeline: Timeline::resuming(interaction, first_seq),
            settings,
            caller,
            called,
            phase: Phase::Arriving,
            ivr: None,
            ivr_timers: BTreeMap::new(),
            customer: None,
            waiting_offers: Vec::new(),
            waiting_queue: None,
            last_queue: None,
            callback: None,
            recording_paused: false,
            wrap_ups: Vec::new(),
            restore: None,
            outbound: false,
            acd_accepted: false,
            dial_request: None,
            preview: None,
            campaign: None,
            campaign_connected: false,
            closing: 0,
            ending: None,
            voicemail_started: None,
            next_leg: 1,
            legs_open: BTreeSet::new(),
            commands: VecDeque::new(),
            now,
            finished: false,
            origin_kind: kind,
            click: None,
            callback_queue: None,
            campaign_preferred: None,
            last_mailbox: String::new(),
            answered: false,
            ended_logged: false,
            caller_up: false,
            voicemail_recording: false,
            nowhere: None,
        };
        let direction = match kind {
            OriginKind::Inbound => Direction::Inbound,
            _ => Direction::Outbound,
        };
        let (from, to) = match kind {
            OriginKind::Inbound => (s.caller.clone(), s.called.clone()),
            _ => (s.called.clone(), s.caller.clone()),
        };
        let arrived_logged = matches!(&origin, Origin::Campaign { first_seq, .. } if *first_seq > 0);
        if !arrived_logged {
            s.log(InteractionEventKind::Arrived {
                channel: Channel::Voice,
                direction,
                from,
                to,
            });
        }
        match origin {
            Origin::Inbound { entry } => match entry {
                Entry::Ivr(session) => s.ivr = Some(session),
                Entry::Queue(queue) => s.waiting_queue = Some(queue),
                Entry::Nowhere { reason } => s.nowhere = Some(reason),
            },
            Origin::ClickToDial {
                agent,
                number: _,
                media,
                sdp,
                shown_as,
                request,
                restore,
                preview,
            } => {
                s.outbound = true;
                s.restore = restore;
                s.dial_request = Some(request);
                s.preview = preview;
                s.click = Some((agent, media, sdp, shown_as));
            }
            Origin::Callback { queue, .. } => {
                // The pop of a callback names the number; no lookup holds the offer up.
                s.customer = Some(Some(None));
                s.log(InteractionEventKind::Enqueued {
                    queue: queue.clone(),
                    priority: 0,
                });
                s.last_queue = Some((queue.clone(), 0));
                s.callback_queue = Some(queue);
            }
            Origin::Campaign {
                link,
                queue,
                preferred,
                connect_by,
                message,
                first_seq: _,
            } => {
                s.campaign = Some((link, connect_by, message));
                s.waiting_queue = Some(queue.clone());
                s.last_queue = Some((queue, acd::Priority::MAX.get()));
                s.callback_queue = None;
                s.campaign_preferred = preferred;
            }
        }
        Ok(s)
    }

    // ----- the owner's API -----

    /// Applies one input at `now`. Never panics; inputs that no longer apply are ignored.
    pub fn handle(&mut self, now: Timestamp, input: Input) {
        self.now = now.max(self.now);
        if self.finished {
            if let Input::Command { request, .. } = input {
                self.reply(request, refuse("call_ended", "the call has ended"));
            }
            return;
        }
        self.fire_due();
        self.apply(input);
        self.settle();
    }

    /// The next thing to carry out, oldest first.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    /// When to send [`Input::Tick`] next.
    pub fn next_deadline(&self) -> Option<Timestamp> {
        if self.finished {
            return None;
        }
        let mut at: Vec<Timestamp> = self.ivr_timers.values().copied().collect();
        at.extend(self.wrap_ups.iter().map(|w| w.until));
        match &self.phase {
            Phase::Voicemail { until, .. } => at.push(*until),
            Phase::Talking(t) => {
                if let Some(lost) = t.lost_at {
                    at.push(lost + self.settings.reattach_grace);
                }
            }
            _ => {}
        }
        if let Some((_, by, _)) = &self.campaign
            && !self.campaign_connected
            && matches!(self.phase, Phase::Queued { .. })
        {
            at.push(*by);
        }
        at.into_iter().min()
    }

    pub fn id(&self) -> &CallId {
        &self.id
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Agents in after-call work on this call.
    pub fn wrap_ups(&self) -> &[WrapUp] {
        &self.wrap_ups
    }

    /// The IVR's state, when the call runs one.
    pub fn ivr_state(&self) -> Option<&ivr::IvrState> {
        self.ivr.as_ref().map(|s| s.state())
    }

    /// The caller's CRM record, once looked up.
    pub fn customer(&self) -> Option<&CustomerSummary> {
        self.customer
            .as_ref()
            .and_then(|c| c.as_ref())
            .and_then(Option::as_ref)
    }

    /// Legs asked for and neither failed nor ended nor hung up yet.
    pub fn open_legs(&self) -> impl Iterator<Item = LegRef> + '_ {
        self.legs_open.iter().copied()
    }

    /// The call is over and no agent's wrap-up is pending.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The call itself is over and its end logged (wrap-ups may still be pending).
    pub fn is_ended(&self) -> bool {
        self.ended_logged
    }

    /// The internal invariants (see the crate documentation); for tests.
    pub fn check_invariants(&self) -> Result<(), String> {
        let talking = match &self.phase {
            Phase::Talking(t) => Some(&t.agent),
            _ => None,
        };
        if let Phase::Queued { offers, .. } = &self.phase {
            let mut seen = BTreeSet::new();
            for o in offers {
                if !seen.insert(&o.agent) {
                    return Err(format!("{} offered twice", o.agent));
                }
                if Some(&o.agent) == talking {
                    return Err(format!("{} offered and talking", o.agent));
                }
            }
        }
        if let Some(t) = talking
            && self.wrap_ups.iter().any(|w| &w.agent == t)
        {
            return Err(format!("{t} talking and in wrap-up"));
        }
        if self.finished && !self.legs_open.is_empty() {
            return Err(format!("finished with open legs {:?}", self.legs_open));
        }
        Ok(())
    }

    // ----- small helpers -----

    fn push(&mut self, c: Command) {
        self.commands.push_back(c);
    }

    fn log(&mut self, kind: InteractionEventKind) {
        let event = self.timeline.event(self.now, kind);
        self.push(Command::Log(event));
    }

    fn reply(&mut self, request: RequestId, result: CommandResult) {
        self.push(Command::Reply { request, result });
    }

    fn new_leg(&mut self) -> LegRef {
        let leg = LegRef(self.next_leg);
        self.next_leg = self.next_leg.saturating_add(1);
        self.legs_open.insert(leg);
        leg
    }

    fn hang_up(&mut self, leg: LegRef) {
        if self.legs_open.remove(&leg) {
            self.push(Command::HangUp { leg });
        }
    }

    fn leg_gone(&mut self, leg: LegRef) {
        self.legs_open.remove(&leg);
    }

    fn end(&mut self, by: EndedBy, reason: &str) {
        if self.ending.is_none() && !matches!(self.phase, Phase::Ended { .. }) {
            self.ending = Some((by, reason.to_string()));
        }
    }

    fn queued(&self) -> Option<&QueueId> {
        match &self.phase {
            Phase::Queued { queue, .. } => Some(queue),
            _ => None,
        }
    }

    // ----- inputs -----

    fn apply(&mut self, input: Input) {
        match input {
            Input::Start => self.start(),
            Input::CallerAnswered => self.caller_answered(),
            Input::CallerRefused { reason } => {
                if self.phase == Phase::Arriving {
                    self.end(EndedBy::System, &reason);
                }
            }
            Input::CallerHungUp => self.caller_hung_up(),
            Input::Digit(d) => {
                if let Phase::Voicemail { .. } = self.phase {
                    if d == '#' {
                        self.stop_voicemail();
                        self.end(EndedBy::System, "voicemail left");
                    }
                } else {
                    self.ivr_event(IvrEvent::Digit(d));
                }
            }
            Input::PlaybackFinished => {
                if self.phase == Phase::Abandoning {
                    self.end(EndedBy::System, "no agent in time: identification message played");
                } else {
                    self.ivr_event(IvrEvent::PromptFinished);
                }
            }
            Input::NothingToPlay => {
                if self.phase == Phase::Abandoning {
                    self.end(EndedBy::System, "no agent in time: no identification message");
                } else {
                    self.ivr_event(IvrEvent::PromptFinished);
                }
            }
            Input::CallerMediaTimeout => self.end(EndedBy::Timeout, "no media from the caller"),
            Input::CallerMediaClosed => self.end(EndedBy::Error, "media leg closed"),
            Input::Ivr(ev) => match ev {
                IvrEvent::LookupResult { .. }
                | IvrEvent::WebhookResult { .. }
                | IvrEvent::QueueState { .. } => self.ivr_event(ev),
                // Everything else the session itself derives from what happened.
                _ => {}
            },
            Input::CallerIdentified(found) => self.identified(found),
            Input::Offered { offer, media } => {
                if self.customer_known() {
                    self.offer(offer, media);
                } else {
                    self.ask_customer();
                    self.waiting_offers.push((offer, media));
                }
            }
            Input::OfferCancelled { agent, reason } => self.offer_cancelled(&agent, &reason),
            Input::QueuePosition {
                position,
                estimated_wait_secs,
            } => self.ivr_event(IvrEvent::QueueEvent(ivr::QueueEvent::Position {
                position,
                estimated_wait: Duration::from_secs(estimated_wait_secs.unwrap_or(0)),
            })),
            Input::Overflowed { target } => self.overflowed(target),
            Input::Abandoned(found) => {
                self.closing = self.closing.saturating_sub(1);
                if let Some(a) = found {
                    self.log(InteractionEventKind::Abandoned {
                        queue: a.queue,
                        position: a.position,
                        waited_ms: a.waited_ms,
                    });
                }
            }
            Input::LegStarted { leg } => self.leg_started(leg),
            Input::LegFailed { leg, reason } => {
                if self.legs_open.contains(&leg) {
                    self.leg_gone(leg);
                    self.leg_failed(leg, reason);
                }
            }
            Input::LegAnswered { leg, usable } => {
                if self.legs_open.contains(&leg) {
                    self.leg_answered(leg, usable);
                } else {
                    // Stale: nobody wants it any more.
                    self.push(Command::HangUp { leg });
                }
            }
            Input::LegEnded { leg, code } => {
                if self.legs_open.contains(&leg) {
                    self.leg_gone(leg);
                    self.leg_ended(leg, code);
                }
            }
            Input::BrowserOpened { leg, answer_sdp } => {
                if self.legs_open.contains(&leg) {
                    self.browser_opened(leg, answer_sdp);
                } else {
                    self.push(Command::HangUp { leg });
                }
            }
            Input::BrowserFailed { leg, refusal } => {
                if self.legs_open.contains(&leg) {
                    self.leg_gone(leg);
                    self.browser_failed(leg, refusal);
                }
            }
            Input::BrowserMediaLost { leg } => self.browser_media_lost(leg),
            Input::RecordingStopped { path } => {
                self.closing = self.closing.saturating_sub(1);
                if let Some(path) = path {
                    self.log(InteractionEventKind::Recording { path });
                }
            }
            Input::VoicemailFailed => {
                if let Phase::Voicemail { .. } = self.phase {
                    self.voicemail_started = None;
                    self.voicemail_recording = false;
                    self.end(EndedBy::Error, "voicemail could not be recorded");
                }
            }
            Input::VoicemailStopped { path } => {
                self.closing = self.closing.saturating_sub(1);
                if let (Some(path), Some(started)) = (path, self.voicemail_started.take()) {
                    let mailbox = match &self.phase {
                        Phase::Voicemail { mailbox, .. } => mailbox.clone(),
                        _ => self.last_mailbox.clone(),
                    };
                    self.log(InteractionEventKind::Voicemail {
                        mailbox,
                        path,
                        duration_ms: u64::try_from(self.now.since(started).as_millis()).unwrap_or(u64::MAX),
                    });
                }
            }
            Input::Command {
                request,
                agent,
                command,
            } => self.command(request, agent, command),
            Input::Tick => {}
        }
    }
}

// ----- the call's course -----
impl CallSession {
    /// Agent-placed calls ring the agent once the customer is identified; callbacks wait in line.
    fn start(&mut self) {
        if self.phase != Phase::Arriving {
            return;
        }
        match self.origin_kind {
            OriginKind::ClickToDial => self.ask_customer(),
            OriginKind::Callback => {
                let queue = self.callback_queue.clone();
                if let Some(queue) = queue {
                    self.phase = Phase::Queued {
                        queue,
                        offers: Vec::new(),
                    };
                }
            }
            OriginKind::Inbound | OriginKind::Campaign => {}
        }
    }

    fn caller_answered(&mut self) {
        if self.phase != Phase::Arriving {
            return;
        }
        self.phase = Phase::SelfService;
        self.caller_up = true;
        if self.ivr.is_some() {
            self.ivr_event(IvrEvent::Started);
        } else if self.origin_kind == OriginKind::Campaign {
            if let Some(queue) = self.waiting_queue.take() {
                let preferred = self.campaign_preferred.clone();
                self.enqueue(queue, acd::Priority::MAX.get(), None, preferred);
            }
        } else if self.waiting_queue.is_some() {
            // No IVR to ask the CRM: the tier sets the priority, the account manager goes first.
            self.ask_customer();
            self.route_waiting_queue();
        } else {
            let reason = self
                .nowhere
                .take()
                .unwrap_or_else(|| "no IVR flow or queue".into());
            self.end(EndedBy::Error, &reason);
        }
    }

    fn customer_known(&self) -> bool {
        matches!(self.customer, Some(Some(_)))
    }

    fn ask_customer(&mut self) {
        if self.customer.is_none() {
            self.customer = Some(None);
            let number = self.caller.clone();
            self.push(Command::IdentifyCaller { number });
        }
    }

    fn identified(&mut self, found: Option<CustomerSummary>) {
        if self.customer != Some(None) {
            return;
        }
        // The IVR's own lookup has already put the customer on the interaction.
        let known_to_ivr = |id: &CustomerId| {
            self.ivr.as_ref().is_some_and(|s| {
                s.state().vars.get("customer.id") == Some(&ivr::Value::Text(id.as_str().to_string()))
            })
        };
        if let Some(c) = found.as_ref().filter(|c| !known_to_ivr(&c.id)) {
            let (customer, tier) = (c.id.clone(), c.tier.clone());
            self.log(InteractionEventKind::CustomerIdentified { customer, tier });
        }
        self.customer = Some(Some(found));
        self.route_waiting_queue();
        for (offer, media) in std::mem::take(&mut self.waiting_offers) {
            self.offer(offer, media);
        }
        if self.origin_kind == OriginKind::ClickToDial && self.phase == Phase::Arriving {
            self.ring_placing_agent();
        }
    }

    fn route_waiting_queue(&mut self) {
        if !self.customer_known() || self.origin_kind != OriginKind::Inbound {
            return;
        }
        if let Some(queue) = self.waiting_queue.take() {
            let (priority, manager) = match self.customer() {
                Some(c) => (c.queue_priority, c.account_manager.clone()),
                None => (0, None),
            };
            self.enqueue(queue, priority, None, manager);
        }
    }

    /// Click-to-dial: the agent's own leg first. Their desktop shows the call once that leg is up
    /// ([`Self::show_placed_call`]): an agent whose phone cannot be reached gets an error, no offer.
    fn ring_placing_agent(&mut self) {
        let Some((agent, media, sdp, shown_as)) = self.click.clone() else {
            return;
        };
        let leg = self.new_leg();
        let side = match media {
            AgentMedia::Browser => {
                self.push(Command::OpenBrowser {
                    leg,
                    agent: agent.clone(),
                    sdp,
                    attach_to: None,
                });
                AgentSide::Opening(leg)
            }
            AgentMedia::Phone => {
                let shown_as = self.caller.expose().clone();
                self.push(Command::RingPhone {
                    leg,
                    agent: agent.clone(),
                    shown_as,
                });
                AgentSide::Ringing(leg)
            }
        };
        let _ = shown_as;
        self.phase = Phase::Dialing {
            agent,
            desk: Some(media),
            side,
            customer: None,
        };
    }

    /// The placing agent's leg is up (their phone rings, or the softphone answered): their desktop
    /// shows the call.
    fn show_placed_call(&mut self, agent: &AgentId) {
        let explanation = if self.preview.is_some() {
            "campaign lead dialled from the preview"
        } else {
            "placed by the agent"
        };
        self.push(Command::DeskOffer {
            agent: agent.clone(),
            queue: None,
            explanation: explanation.into(),
            waited_ms: 0,
        });
    }

    pub(crate) fn enqueue(
        &mut self,
        queue: QueueId,
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
        self.push(Command::Enqueue(request));
        self.last_queue = Some((queue.clone(), priority));
        self.log(InteractionEventKind::Enqueued {
            queue: queue.clone(),
            priority,
        });
        self.phase = Phase::Queued {
            queue,
            offers: Vec::new(),
        };
    }

    /// The ACD offers the call to these agents: phones ring, desktops show it.
    fn offer(&mut self, offer: acd::Offer, media: DeskMedia) {
        if !matches!(self.phase, Phase::Queued { .. }) {
            // The caller left meanwhile: the router hears it from the abandon or the end.
            return;
        }
        let explanation = offer.explanation.sentence();
        for agent in offer.agents {
            let already = matches!(&self.phase, Phase::Queued { offers, .. } if offers.iter().any(|o| o.agent == agent));
            if already {
                continue;
            }
            let desk = media.iter().find(|(a, _)| a == &agent).and_then(|(_, m)| *m);
            self.log(InteractionEventKind::Offered {
                agent: agent.clone(),
                explanation: explanation.clone(),
            });
            self.push(Command::DeskOffer {
                agent: agent.clone(),
                queue: Some(offer.queue.clone()),
                explanation: explanation.clone(),
                waited_ms: offer.explanation.waited_ms,
            });
            let via = if desk == Some(AgentMedia::Browser) {
                // The desktop answers with the softphone; no SIP phone rings.
                Via::Browser { opening: None }
            } else {
                let leg = self.new_leg();
                let shown_as = match self.origin_kind {
                    OriginKind::Callback => self.caller.expose().clone(),
                    _ => "callcenter".to_string(),
                };
                self.push(Command::RingPhone {
                    leg,
                    agent: agent.clone(),
                    shown_as,
                });
                Via::Phone { leg, started: false }
            };
            if let Phase::Queued { offers, .. } = &mut self.phase {
                offers.push(Offer { agent, via, desk });
            }
        }
    }

    /// Takes the offer to `agent` back (if any); their phone stops, their desktop is told.
    fn take_offer(&mut self, agent: &AgentId, reason: &str) -> Option<Offer> {
        let Phase::Queued { offers, .. } = &mut self.phase else {
            return None;
        };
        let i = offers.iter().position(|o| &o.agent == agent)?;
        let o = offers.remove(i);
        match &o.via {
            Via::Phone { leg, .. } => self.hang_up(*leg),
            Via::Browser {
                opening: Some((leg, request)),
            } => {
                let (leg, request) = (*leg, *request);
                self.hang_up(leg);
                self.reply(request, refuse("no_offer", "the offer was withdrawn"));
            }
            Via::Browser { opening: None } => {}
        }
        self.push(Command::DeskWithdraw {
            agent: agent.clone(),
            reason: reason.to_string(),
        });
        Some(o)
    }

    fn offer_cancelled(&mut self, agent: &AgentId, reason: &str) {
        if self.take_offer(agent, reason).is_some() {
            self.log(InteractionEventKind::OfferFailed {
                agent: agent.clone(),
                reason: reason.to_string(),
            });
        }
    }

    /// The offer failed on our side (phone unreachable, rejected, no codec): the ACD hears it.
    fn offer_failed(&mut self, agent: &AgentId, reason: &str) {
        if self.take_offer(agent, reason).is_some() {
            self.push(Command::Acd(acd::Input::OfferRejected {
                call: self.id.clone(),
                agent: agent.clone(),
            }));
            self.log(InteractionEventKind::OfferFailed {
                agent: agent.clone(),
                reason: reason.to_string(),
            });
        }
    }

    fn stop_all_offers(&mut self, reason: &str) {
        let agents: Vec<AgentId> = match &self.phase {
            Phase::Queued { offers, .. } => offers.iter().map(|o| o.agent.clone()).collect(),
            _ => Vec::new(),
        };
        for agent in agents {
            self.take_offer(&agent, reason);
        }
    }

    fn overflowed(&mut self, target: String) {
        let Some(queue) = self.queued().cloned() else {
            return;
        };
        self.stop_all_offers("the queue sent the call elsewhere");
        self.log(InteractionEventKind::Overflowed {
            from: queue.clone(),
            to: target,
        });
        self.push(Command::ForgetQueue);
        self.phase = Phase::SelfService;
        if self.origin_kind == OriginKind::Callback {
            self.push(Command::SettleCallback { status: "failed" });
            self.end(EndedBy::System, "the queue sent the callback elsewhere");
        } else if self.ivr.is_some() {
            self.ivr_event(IvrEvent::QueueEvent(ivr::QueueEvent::Rejected));
        } else {
            self.end(EndedBy::System, "queue overflow");
        }
    }

    fn caller_hung_up(&mut self) {
        if matches!(self.phase, Phase::Ended { .. }) || self.ending.is_some() {
            return;
        }
        self.end(EndedBy::Caller, "caller hung up");
        // A caller waiting for their callback keeps the place in line.
        if self.queued().is_some() && self.callback.is_none() {
            self.stop_all_offers("caller hung up");
            self.push(Command::Abandon);
            self.push(Command::ForgetQueue);
            self.closing += 1;
            self.phase = Phase::SelfService;
        }
        if let Some(ivr) = self.ivr.as_mut() {
            let commands = ivr.handle(self.now, IvrEvent::CallerHungUp);
            for c in commands {
                if let IvrCommand::Log(l) = c {
                    self.log(l.to_event_kind());
                }
            }
        }
    }

    // ----- the IVR -----

    fn ivr_event(&mut self, event: IvrEvent) {
        let Some(ivr) = self.ivr.as_mut() else { return };
        let commands = ivr.handle(self.now, event);
        let state = Box::new(ivr.state().clone());
        self.push(Command::SaveIvrState(state));
        for c in commands {
            self.ivr_command(c);
        }
        let done = self.ivr.as_ref().is_some_and(|s| s.outcome().is_some());
        let busy = matches!(
            self.phase,
            Phase::Talking(_) | Phase::Queued { .. } | Phase::External { .. } | Phase::Voicemail { .. }
        );
        if done && !busy {
            self.end(EndedBy::System, "IVR finished");
        }
    }

    fn ivr_command(&mut self, c: IvrCommand) {
        match c {
            IvrCommand::Play { prompts, barge_in } => self.push(Command::Play {
                prompts: prompts.into_iter().map(|p| p.path).collect(),
                looped: false,
                barge_in,
            }),
            IvrCommand::StopPlayback => self.push(Command::StopPlayback),
            IvrCommand::StartTimer { id, after } => {
                self.ivr_timers.insert(id, self.now + after);
            }
            IvrCommand::CancelTimer { id } => {
                self.ivr_timers.remove(&id);
            }
            c @ (IvrCommand::Lookup { .. } | IvrCommand::Webhook { .. } | IvrCommand::QueryQueue { .. }) => {
                self.push(Command::Ivr(c))
            }
            IvrCommand::Enqueue {
                queue,
                priority,
                skills,
                preferred_agent,
            } => self.enqueue(queue, priority, skills, preferred_agent),
            IvrCommand::LeaveQueue { .. } => {
                if self.queued().is_some() {
                    self.stop_all_offers("the caller left the queue");
                    self.push(Command::Acd(acd::Input::CallAbandoned {
                        call: self.id.clone(),
                    }));
                    self.push(Command::ForgetQueue);
                    self.phase = Phase::SelfService;
                }
            }
            IvrCommand::RequestCallback { number, .. } => {
                self.log(InteractionEventKind::CallbackRequested {
                    number: number.clone(),
                });
                if self.queued().is_some() && self.settings.trunk.is_some() {
                    self.callback = Some(number);
                }
            }
            IvrCommand::Voicemail {
                mailbox,
                max_length,
                beep,
            } => self.start_voicemail(&mailbox, max_length, beep),
            IvrCommand::Transfer { target } => {
                let (uri, described, from) = match &target {
                    ivr::TransferTarget::SipUri(uri) => (Some(uri.clone()), uri.clone(), None),
                    ivr::TransferTarget::Number(n) => (
                        self.settings
                            .trunk
                            .as_ref()
                            .map(|t| format!("sip:{n}@{}", t.host)),
                        format!("number:{n}"),
                        self.settings.trunk.as_ref().and_then(|t| t.caller_id.clone()),
                    ),
                };
                self.log(InteractionEventKind::Transferred {
                    target: Pii::new(described),
                });
                match uri {
                    Some(uri) => {
                        let leg = self.dial(uri, from, false);
                        self.phase = Phase::External {
                            leg,
                            started: false,
                            bridged: false,
                        };
                    }
                    None => self.end(EndedBy::System, "transfer failed"),
                }
            }
            IvrCommand::Hangup { reason } => self.end(EndedBy::System, &reason),
            IvrCommand::PauseRecording => {
                self.recording_paused = true;
                if matches!(&self.phase, Phase::Talking(t) if t.recording) {
                    self.push(Command::PauseRecording);
                }
            }
            IvrCommand::ResumeRecording => {
                self.recording_paused = false;
                if matches!(&self.phase, Phase::Talking(t) if t.recording) {
                    self.push(Command::ResumeRecording);
                }
            }
            IvrCommand::Log(l) => self.log(l.to_event_kind()),
        }
    }

    fn dial(&mut self, uri: String, from: Option<String>, customer: bool) -> LegRef {
        let leg = self.new_leg();
        let ring = self.settings.customer_ring;
        self.push(Command::Dial {
            leg,
            uri,
            from,
            ring,
            customer,
        });
        leg
    }

    fn start_voicemail(&mut self, mailbox: &str, max_length: Duration, beep: bool) {
        let safe: String = mailbox
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let name = format!("voicemail-{safe}-{}", self.id.as_str());
        self.push(Command::StartVoicemail { name, beep });
        self.voicemail_started = Some(self.now);
        self.voicemail_recording = true;
        self.last_mailbox = safe.clone();
        self.phase = Phase::Voicemail {
            mailbox: safe,
            started: self.now,
            until: self.now + max_length,
        };
    }

    fn stop_voicemail(&mut self) {
        if self.voicemail_recording {
            self.voicemail_recording = false;
            self.push(Command::StopVoicemail);
            self.closing += 1;
        }
    }
}

// ----- legs -----
impl CallSession {
    fn leg_started(&mut self, leg: LegRef) {
        if !self.legs_open.contains(&leg) {
            return;
        }
        if let Phase::Queued { offers, .. } = &mut self.phase {
            for o in offers.iter_mut() {
                if let Via::Phone { leg: l, started } = &mut o.via
                    && *l == leg
                {
                    *started = true;
                }
            }
        }
        if let Phase::Dialing {
            agent,
            side: AgentSide::Ringing(l),
            ..
        } = &self.phase
            && *l == leg
            && let Some(request) = self.dial_request.take()
        {
            let agent = agent.clone();
            self.show_placed_call(&agent);
            self.reply(request, Ok(None));
        }
        if let Phase::External { leg: l, started, .. } = &mut self.phase
            && *l == leg
        {
            *started = true;
        }
        let Phase::Talking(t) = &mut self.phase else {
            return;
        };
        if let Some((l, request, described)) = t.transferring.clone()
            && l == leg
        {
            // The number rings: the agent leaves, the caller hears hold music meanwhile.
            t.transferring = None;
            let agent = t.agent.clone();
            self.reply(request, Ok(None));
            self.leave(&agent);
            self.log(InteractionEventKind::Transferred {
                target: Pii::new(described),
            });
            self.push(Command::PlayHoldMusic);
            self.phase = Phase::External {
                leg,
                started: true,
                bridged: false,
            };
            return;
        }
        if let Some(c) = t.consult.as_mut()
            && c.leg == leg
            && let Some(request) = c.pending.take()
        {
            let agent = t.agent.clone();
            let hold = t.held.is_none();
            if hold {
                t.held = Some(HeldBy::Consult);
            }
            self.reply(request, Ok(None));
            if hold {
                self.push(Command::Hold);
                self.log(InteractionEventKind::Held);
            }
            self.push(Command::DeskPhase {
                agent,
                phase: CallPhase::Consulting,
            });
            return;
        }
        if let Some(sv) = t.supervisor.as_mut()
            && sv.leg == leg
            && let Some(request) = sv.pending.take()
        {
            self.reply(request, Ok(None));
        }
    }

    fn leg_failed(&mut self, leg: LegRef, reason: String) {
        let _ = reason;
        // An offered agent's phone.
        let offered = match &self.phase {
            Phase::Queued { offers, .. } => offers
                .iter()
                .find(|o| matches!(o.via, Via::Phone { leg: l, .. } if l == leg))
                .map(|o| o.agent.clone()),
            _ => None,
        };
        if let Some(agent) = offered {
            return self.offer_failed(&agent, "phone not registered");
        }
        match &mut self.phase {
            Phase::Dialing { side, customer, .. } => {
                if matches!(side, AgentSide::Ringing(l) if *l == leg) {
                    if let Some(request) = self.dial_request.take() {
                        self.reply(
                            request,
                            refuse("phone_unreachable", "your SIP phone is not registered"),
                        );
                    }
                    self.not_reached(EndedBy::Agent, "the agent's phone did not answer", "failed");
                } else if *customer == Some(leg) {
                    self.not_reached(EndedBy::Error, "the customer could not be dialled", "failed");
                }
            }
            Phase::External { leg: l, started, .. } if *l == leg => {
                if *started {
                    self.external_failed("the transferred-to number did not answer");
                } else {
                    self.end(EndedBy::System, "transfer failed");
                }
            }
            Phase::Talking(t) => {
                if let Some((l, request, _)) = t.transferring.clone()
                    && l == leg
                {
                    t.transferring = None;
                    self.push(Command::StopPlayback);
                    self.reply(request, refuse("unavailable", "the number could not be dialled"));
                } else if t.consult.as_ref().is_some_and(|c| c.leg == leg) {
                    let c = t.consult.take();
                    if let Some(request) = c.and_then(|c| c.pending) {
                        self.reply(
                            request,
                            refuse("unreachable", "the consulted party cannot be called"),
                        );
                    }
                } else if t.supervisor.as_ref().is_some_and(|s| s.leg == leg) {
                    let sv = t.supervisor.take();
                    if let Some(request) = sv.and_then(|s| s.pending) {
                        self.reply(
                            request,
                            refuse("phone_unreachable", "your SIP phone is not registered"),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    fn leg_answered(&mut self, leg: LegRef, usable: bool) {
        // An offered agent's phone.
        let offered = match &self.phase {
            Phase::Queued { offers, .. } => offers
                .iter()
                .find(|o| matches!(o.via, Via::Phone { leg: l, .. } if l == leg))
                .cloned(),
            _ => None,
        };
        if let Some(o) = offered {
            if !usable {
                return self.offer_failed(&o.agent, "no common codec");
            }
            if let Phase::Queued { offers, .. } = &mut self.phase {
                offers.retain(|x| x.agent != o.agent);
            }
            return self.agent_took(o.agent, leg, o.desk, false);
        }
        match self.phase.clone() {
            Phase::Dialing {
                agent,
                desk,
                side,
                customer,
            } => {
                if matches!(side, AgentSide::Ringing(l) if l == leg) {
                    if !usable {
                        self.hang_up(leg);
                        return self.not_reached(
                            EndedBy::Error,
                            "the agent's phone has no common codec",
                            "failed",
                        );
                    }
                    self.agent_ready(agent, desk, leg, false);
                } else if customer == Some(leg) {
                    if !usable {
                        self.hang_up(leg);
                        return self.not_reached(
                            EndedBy::Error,
                            "the customer's side has no common codec",
                            "failed",
                        );
                    }
                    // The customer is on the line: they are the call's caller from now on.
                    self.leg_gone(leg);
                    self.caller_up = true;
                    if self.origin_kind == OriginKind::Callback {
                        self.push(Command::SettleCallback { status: "done" });
                    }
                    let (agent_leg, browser) = match side {
                        AgentSide::Ready { leg, browser } => (leg, browser),
                        AgentSide::Ringing(l) | AgentSide::Opening(l) => (l, false),
                    };
                    self.connect(agent, agent_leg, desk, browser);
                }
            }
            Phase::External {
                leg: l,
                bridged: false,
                ..
            } if l == leg => {
                if !usable {
                    self.hang_up(leg);
                    return self.external_failed("no common codec");
                }
                self.push(Command::StopPlayback);
                self.push(Command::Bridge { leg });
                self.phase = Phase::External {
                    leg,
                    started: true,
                    bridged: true,
                };
            }
            Phase::Talking(mut t) => {
                if let Some(c) = t.consult.as_mut()
                    && c.leg == leg
                    && !c.joined
                {
                    if usable {
                        c.joined = true;
                        self.push(Command::JoinConsult { leg });
                        self.phase = Phase::Talking(t);
                    } else {
                        self.phase = Phase::Talking(t);
                        self.end_consult();
                    }
                } else if let Some(sv) = t.supervisor.as_mut()
                    && sv.leg == leg
                    && !sv.joined
                {
                    if usable {
                        sv.joined = true;
                        let (supervisor, mode) = (sv.supervisor.clone(), sv.mode);
                        self.phase = Phase::Talking(t);
                        self.push(Command::JoinMonitor { leg, mode });
                        self.log(InteractionEventKind::Monitored {
                            supervisor,
                            mode: mode.name().into(),
                        });
                    } else {
                        self.phase = Phase::Talking(t);
                        self.drop_supervisor();
                    }
                }
            }
            _ => {}
        }
    }

    fn leg_ended(&mut self, leg: LegRef, code: Option<u16>) {
        let offered = match &self.phase {
            Phase::Queued { offers, .. } => offers
                .iter()
                .find(|o| matches!(o.via, Via::Phone { leg: l, .. } if l == leg))
                .map(|o| o.agent.clone()),
            _ => None,
        };
        if let Some(agent) = offered {
            let reason = match code {
                Some(code) => format!("phone answered {code}"),
                None => "phone hung up".to_string(),
            };
            return self.offer_failed(&agent, &reason);
        }
        match self.phase.clone() {
            Phase::Dialing { side, customer, .. } => {
                let agent_leg = match side {
                    AgentSide::Ringing(l) | AgentSide::Opening(l) => l,
                    AgentSide::Ready { leg, .. } => leg,
                };
                if agent_leg == leg {
                    if let Some(request) = self.dial_request.take() {
                        self.reply(
                            request,
                            refuse("phone_unreachable", "your SIP phone did not answer"),
                        );
                    }
                    self.not_reached(EndedBy::Agent, "the agent's phone did not answer", "failed");
                } else if customer == Some(leg) {
                    let (reason, disposition) = match code {
                        Some(486 | 600 | 603) => ("busy", "busy"),
                        Some(408 | 480 | 487) | None => ("no answer", "no_answer"),
                        Some(_) => ("the call failed", "failed"),
                    };
                    let reason = if self.origin_kind == OriginKind::Callback {
                        "the customer did not answer"
                    } else {
                        reason
                    };
                    self.not_reached(EndedBy::System, reason, disposition);
                }
            }
            Phase::External { leg: l, bridged, .. } if l == leg => {
                if bridged {
                    self.end(EndedBy::System, "the transferred-to party hung up");
                } else {
                    self.external_failed("the transferred-to number did not answer");
                }
            }
            Phase::Talking(t) => {
                if t.leg == leg {
                    self.agent_hung_up();
                } else if t.consult.as_ref().is_some_and(|c| c.leg == leg) {
                    self.end_consult();
                } else if t.supervisor.as_ref().is_some_and(|s| s.leg == leg) {
                    self.drop_supervisor();
                } else if t.transferring.as_ref().is_some_and(|(l, _, _)| *l == leg) {
                    self.leg_failed(leg, "ended".into());
                }
            }
            _ => {}
        }
    }

    fn browser_opened(&mut self, leg: LegRef, answer_sdp: String) {
        // An offered browser agent accepted.
        let offered = match &self.phase {
            Phase::Queued { offers, .. } => offers
                .iter()
                .find(|o| matches!(o.via, Via::Browser { opening: Some((l, _)) } if l == leg))
                .cloned(),
            _ => None,
        };
        if let Some(o) = offered {
            if let Phase::Queued { offers, .. } = &mut self.phase {
                offers.retain(|x| x.agent != o.agent);
            }
            if let Via::Browser {
                opening: Some((_, request)),
            } = o.via
            {
                self.reply(request, Ok(None));
            }
            self.push(Command::DeskMediaAnswer {
                agent: o.agent.clone(),
                sdp: answer_sdp,
            });
            return self.agent_took(o.agent, leg, o.desk, true);
        }
        match self.phase.clone() {
            Phase::Dialing {
                agent,
                desk,
                side: AgentSide::Opening(l),
                ..
            } if l == leg => {
                self.show_placed_call(&agent);
                if let Some(request) = self.dial_request.take() {
                    self.reply(request, Ok(None));
                }
                self.push(Command::DeskMediaAnswer {
                    agent: agent.clone(),
                    sdp: answer_sdp,
                });
                self.agent_ready(agent, desk, leg, true);
            }
            Phase::Talking(mut t) => {
                if let Some((l, request)) = t.reattaching
                    && l == leg
                {
                    // The new browser leg feeds the same engine leg: bridge and recording go on.
                    t.reattaching = None;
                    self.leg_gone(leg);
                    let resumed = t.lost_at.take().is_some() && t.held == Some(HeldBy::MediaLoss);
                    if resumed {
                        t.held = None;
                    }
                    let agent = t.agent.clone();
                    self.phase = Phase::Talking(t);
                    if resumed {
                        self.push(Command::Resume);
                    }
                    self.push(Command::DeskMediaAnswer {
                        agent,
                        sdp: answer_sdp,
                    });
                    self.reply(request, Ok(None));
                } else if let Some(sv) = t.supervisor.as_mut()
                    && sv.leg == leg
                    && !sv.joined
                {
                    sv.joined = true;
                    let (supervisor, mode, request) = (sv.supervisor.clone(), sv.mode, sv.pending.take());
                    self.phase = Phase::Talking(t);
                    self.push(Command::JoinMonitor { leg, mode });
                    self.log(InteractionEventKind::Monitored {
                        supervisor,
                        mode: mode.name().into(),
                    });
                    if let Some(request) = request {
                        self.reply(request, Ok(Some(answer_sdp)));
                    }
                }
            }
            _ => self.hang_up(leg),
        }
    }

    fn browser_failed(&mut self, leg: LegRef, refusal: Refusal) {
        if let Phase::Queued { offers, .. } = &mut self.phase
            && let Some(o) = offers
                .iter_mut()
                .find(|o| matches!(o.via, Via::Browser { opening: Some((l, _)) } if l == leg))
        {
            if let Via::Browser {
                opening: Some((_, request)),
            } = std::mem::replace(&mut o.via, Via::Browser { opening: None })
            {
                // Still offered: the agent may try again.
                self.reply(request, Err(refusal));
            }
            return;
        }
        match &mut self.phase {
            Phase::Dialing {
                side: AgentSide::Opening(l),
                ..
            } if *l == leg => {
                if let Some(request) = self.dial_request.take() {
                    self.reply(request, Err(refusal));
                }
                self.not_reached(EndedBy::Agent, "the browser softphone could not start", "failed");
            }
            Phase::Talking(t) => {
                if let Some((l, request)) = t.reattaching
                    && l == leg
                {
                    t.reattaching = None;
                    self.reply(request, Err(refusal));
                } else if t.supervisor.as_ref().is_some_and(|s| s.leg == leg) {
                    let sv = t.supervisor.take();
                    if let Some(request) = sv.and_then(|s| s.pending) {
                        self.reply(request, Err(refusal));
                    }
                }
            }
            _ => {}
        }
    }

    fn browser_media_lost(&mut self, leg: LegRef) {
        let now = self.now;
        match &mut self.phase {
            Phase::Talking(t) if t.leg == leg && t.browser && t.lost_at.is_none() => {
                t.lost_at = Some(now);
                if t.held.is_none() {
                    t.held = Some(HeldBy::MediaLoss);
                    self.push(Command::Hold);
                }
            }
            Phase::Talking(t) if t.supervisor.as_ref().is_some_and(|s| s.leg == leg) => {
                self.drop_supervisor();
            }
            _ => {}
        }
    }

    /// A callback's or an agent-placed call's agent is on their leg: now the customer is dialled.
    fn agent_ready(&mut self, agent: AgentId, desk: Option<AgentMedia>, leg: LegRef, browser: bool) {
        let Some(trunk) = self.settings.trunk.clone() else {
            self.hang_up(leg);
            return self.not_reached(EndedBy::Error, "the customer could not be dialled", "failed");
        };
        let uri = format!("sip:{}@{}", self.caller.expose(), trunk.host);
        let shown = self.called.expose().clone();
        let customer = self.dial(uri, Some(shown), true);
        self.push(Command::DeskPhase {
            agent: agent.clone(),
            phase: CallPhase::Dialing,
        });
        self.phase = Phase::Dialing {
            agent,
            desk,
            side: AgentSide::Ready { leg, browser },
            customer: Some(customer),
        };
    }

    /// An offered agent answered (phone) or accepted (browser).
    fn agent_took(&mut self, agent: AgentId, leg: LegRef, desk: Option<AgentMedia>, browser: bool) {
        self.stop_all_offers("answered elsewhere");
        if self.origin_kind == OriginKind::Callback {
            // The router hears it now; the customer is called next.
            self.push(Command::Acd(acd::Input::OfferAccepted {
                call: self.id.clone(),
                agent: agent.clone(),
            }));
            self.acd_accepted = true;
            self.push(Command::ForgetQueue);
            self.agent_ready(agent, desk, leg, browser);
            return;
        }
        self.connect(agent, leg, desk, browser);
    }

    /// The agent talks to the caller: bridged, recorded, the ACD and the desktop told.
    fn connect(&mut self, agent: AgentId, leg: LegRef, desk: Option<AgentMedia>, browser: bool) {
        self.push(Command::StopPlayback);
        self.push(Command::Bridge { leg });
        self.stop_all_offers("answered elsewhere");
        if !self.outbound && !self.acd_accepted {
            self.push(Command::Acd(acd::Input::OfferAccepted {
                call: self.id.clone(),
                agent: agent.clone(),
            }));
        }
        self.answered = true;
        self.log(InteractionEventKind::Answered { agent: agent.clone() });
        if self.campaign.is_some() && !self.campaign_connected {
            self.campaign_connected = true;
            self.push(Command::Campaign(CampaignNote::Connected {
                agent: agent.clone(),
                at: self.now,
            }));
        }
        if self.origin_kind != OriginKind::Callback {
            self.push(Command::ForgetQueue);
        }
        self.push(Command::DeskPhase {
            agent: agent.clone(),
            phase: CallPhase::Connected,
        });
        let recording = self.settings.record_calls;
        if recording {
            self.push(Command::StartRecording {
                paused: self.recording_paused,
            });
        }
        self.phase = Phase::Talking(Box::new(Talking {
            agent: agent.clone(),
            leg,
            desk,
            browser,
            lost_at: None,
            reattaching: None,
            held: None,
            muted: false,
            recording,
            consult: None,
            supervisor: None,
            transferring: None,
        }));
        self.ivr_event(IvrEvent::QueueEvent(ivr::QueueEvent::AgentAnswered { agent }));
    }

    /// An agent-first call that never reached the customer: the agent goes to wrap-up (callback) or
    /// back as they were (placed calls).
    fn not_reached(&mut self, by: EndedBy, reason: &str, disposition: &str) {
        let (agent, desk, legs) = match &self.phase {
            Phase::Dialing {
                agent,
                desk,
                side,
                customer,
            } => {
                let l = match side {
                    AgentSide::Ringing(l) | AgentSide::Opening(l) => *l,
                    AgentSide::Ready { leg, .. } => *leg,
                };
                (agent.clone(), *desk, [Some(l), *customer])
            }
            _ => return,
        };
        for leg in legs.into_iter().flatten() {
            self.hang_up(leg);
        }
        if let Some(link) = self.preview.clone() {
            self.log(InteractionEventKind::DialAttempt {
                campaign: link.campaign,
                lead: link.lead,
                outcome: disposition.to_string(),
            });
        }
        if self.origin_kind == OriginKind::Callback {
            self.push(Command::SettleCallback { status: "failed" });
            self.push(Command::Acd(acd::Input::CallEnded {
                call: self.id.clone(),
            }));
            self.push(Command::ForgetQueue);
            self.push(Command::DeskRelease { agent });
        } else {
            self.push(Command::DeskRelease { agent });
            if let Some(restore) = self.restore.clone() {
                self.push(Command::Acd(restore));
            }
        }
        let _ = desk;
        self.end(by, reason);
        self.phase = Phase::SelfService;
    }

    /// The outside number never answered: the caller is not dropped but queued again.
    fn external_failed(&mut self, reason: &str) {
        if let Phase::External { leg, .. } = self.phase {
            self.hang_up(leg);
        }
        self.push(Command::StopPlayback);
        self.phase = Phase::SelfService;
        match self.last_queue.clone() {
            Some((queue, priority)) => self.enqueue(queue, priority, None, None),
            None => self.end(EndedBy::System, reason),
        }
    }
}

// ----- the agent on the call -----
impl CallSession {
    /// The agent leaves the call: supervisor and consulted party go, the recording closes, the
    /// agent's leg is hung up, the router hears the call ended, and the agent's wrap-up starts now.
    fn leave(&mut self, agent: &AgentId) {
        let Phase::Talking(t) = &self.phase else { return };
        if &t.agent != agent {
            return;
        }
        let t = (**t).clone();
        if t.supervisor.is_some() {
            self.drop_supervisor();
        }
        if let Some(c) = t.consult {
            if c.joined {
                self.push(Command::LeaveConsult);
            }
            self.hang_up(c.leg);
        }
        if let Some((l, request, _)) = t.transferring {
            self.hang_up(l);
            self.reply(request, refuse("call_ended", "the call has ended"));
        }
        if let Some((l, request)) = t.reattaching {
            self.hang_up(l);
            self.reply(request, refuse("call_ended", "the call has ended"));
        }
        if t.recording {
            self.push(Command::StopRecording);
            self.closing += 1;
        }
        self.hang_up(t.leg);
        if !self.outbound {
            self.push(Command::Acd(acd::Input::CallEnded {
                call: self.id.clone(),
            }));
        }
        self.phase = Phase::SelfService;
        self.start_wrap_up(t.agent, t.desk);
    }

    fn start_wrap_up(&mut self, agent: AgentId, desk: Option<AgentMedia>) {
        let restore = self.restore.clone();
        if desk.is_none() {
            // Nobody to fill in a form: done at once.
            self.push(Command::DeskRelease { agent });
            if let Some(restore) = restore {
                self.push(Command::Acd(restore));
            }
            return;
        }
        self.push(Command::DeskPhase {
            agent: agent.clone(),
            phase: CallPhase::WrapUp,
        });
        self.wrap_ups.retain(|w| w.agent != agent);
        self.wrap_ups.push(WrapUp {
            agent,
            until: self.now + self.settings.wrap_up_window,
            restore,
        });
    }

    /// The agent hung up (phone or desktop): the survey follows if the flow has one.
    fn agent_hung_up(&mut self) {
        let Phase::Talking(t) = &self.phase else { return };
        let agent = t.agent.clone();
        self.leave(&agent);
        if self.ivr.is_some() {
            self.ivr_event(IvrEvent::AgentHungUp);
            if self.ivr.as_ref().is_some_and(|s| s.outcome().is_some()) {
                self.end(EndedBy::Agent, "agent hung up");
            }
        } else {
            self.end(EndedBy::Agent, "agent hung up");
        }
    }

    fn end_consult(&mut self) {
        let Phase::Talking(t) = &mut self.phase else {
            return;
        };
        let Some(c) = t.consult.take() else { return };
        let resumed = t.held == Some(HeldBy::Consult);
        if resumed {
            t.held = None;
        }
        let agent = t.agent.clone();
        if c.joined {
            self.push(Command::LeaveConsult);
        }
        self.hang_up(c.leg);
        if resumed {
            self.push(Command::Resume);
            self.log(InteractionEventKind::Resumed);
        }
        self.push(Command::DeskPhase {
            agent,
            phase: CallPhase::Connected,
        });
    }

    fn drop_supervisor(&mut self) {
        let Phase::Talking(t) = &mut self.phase else {
            return;
        };
        let Some(sv) = t.supervisor.take() else { return };
        if sv.joined {
            self.push(Command::StopMonitor);
        }
        if let Some(request) = sv.pending {
            self.reply(
                request,
                refuse("not_on_call", "the agent is not talking to anyone"),
            );
        }
        self.hang_up(sv.leg);
        self.log(InteractionEventKind::Monitored {
            supervisor: sv.supervisor,
            mode: "stopped".into(),
        });
    }

    fn talking_as(&self, agent: &AgentId) -> bool {
        matches!(&self.phase, Phase::Talking(t) if &t.agent == agent)
    }

    fn command(&mut self, request: RequestId, agent: AgentId, command: AgentCommand) {
        // An agent in their wrap-up of this call is done talking on it: for anything but the wrap-up
        // itself the call has ended (the CTI protocol's `call_ended`), not "not talking to this caller".
        let wrapping_up = !self.talking_as(&agent) && self.wrap_ups.iter().any(|w| w.agent == agent);
        if wrapping_up
            && matches!(
                command,
                AgentCommand::Hangup
                    | AgentCommand::Hold
                    | AgentCommand::Unhold
                    | AgentCommand::Mute(_)
                    | AgentCommand::Transfer(_)
                    | AgentCommand::Consult(_)
                    | AgentCommand::ConsultComplete
                    | AgentCommand::ConsultCancel
            )
        {
            self.reply(request, refuse("call_ended", "the call has ended"));
            return;
        }
        let answer: Option<CommandResult> = match command {
            AgentCommand::Accept { sdp } => self.accept(request, &agent, sdp),
            AgentCommand::Reject => Some(self.reject(&agent)),
            AgentCommand::Hangup => Some(self.hangup_command(&agent)),
            AgentCommand::Hold => Some(self.hold(&agent, true)),
            AgentCommand::Unhold => Some(self.hold(&agent, false)),
            AgentCommand::Mute(muted) => Some(self.mute(&agent, muted)),
            AgentCommand::Transfer(target) => self.transfer(request, &agent, target),
            AgentCommand::Consult(target) => self.consult(request, &agent, target),
            AgentCommand::ConsultComplete => Some(self.consult_complete(&agent)),
            AgentCommand::ConsultCancel => Some(self.consult_cancel(&agent)),
            AgentCommand::Monitor {
                supervisor,
                mode,
                sdp,
            } => self.monitor(request, supervisor, mode, sdp),
            AgentCommand::MonitorMode(mode) => Some(self.monitor_mode(mode)),
            AgentCommand::StopMonitor => Some(self.stop_monitor()),
            AgentCommand::WrapUp {
                disposition,
                notes,
                campaign,
            } => Some(self.wrap_up(&agent, disposition, notes, campaign)),
        };
        if let Some(result) = answer {
            self.reply(request, result);
        }
    }

    fn accept(&mut self, request: RequestId, agent: &AgentId, sdp: Option<String>) -> Option<CommandResult> {
        let offered = match &self.phase {
            Phase::Queued { offers, .. } => offers.iter().find(|o| &o.agent == agent).cloned(),
            _ => None,
        };
        if let Some(o) = offered {
            return match o.via {
                Via::Phone { .. } => Some(refuse(
                    "answer_on_phone",
                    "this call rings your SIP phone: answer it there",
                )),
                Via::Browser { opening: Some(_) } => {
                    Some(refuse("already_accepting", "the softphone is being connected"))
                }
                Via::Browser { opening: None } => {
                    let leg = self.new_leg();
                    self.push(Command::OpenBrowser {
                        leg,
                        agent: agent.clone(),
                        sdp,
                        attach_to: None,
                    });
                    if let Phase::Queued { offers, .. } = &mut self.phase
                        && let Some(o) = offers.iter_mut().find(|o| &o.agent == agent)
                    {
                        o.via = Via::Browser {
                            opening: Some((leg, request)),
                        };
                    }
                    None
                }
            };
        }
        let Phase::Talking(t) = &mut self.phase else {
            return Some(refuse("no_offer", "this call is not being offered to you"));
        };
        if &t.agent != agent {
            return Some(refuse("no_offer", "this call is not being offered to you"));
        }
        if !t.browser {
            // The phone may answer before the desktop's accept arrives: same answer.
            return Some(refuse("answer_on_phone", "this call is on your SIP phone"));
        }
        if t.reattaching.is_some() {
            return Some(refuse("already_accepting", "the softphone is being connected"));
        }
        let attach_to = t.leg;
        let leg = LegRef(self.next_leg);
        self.next_leg = self.next_leg.saturating_add(1);
        self.legs_open.insert(leg);
        if let Phase::Talking(t) = &mut self.phase {
            t.reattaching = Some((leg, request));
        }
        self.push(Command::OpenBrowser {
            leg,
            agent: agent.clone(),
            sdp,
            attach_to: Some(attach_to),
        });
        None
    }

    fn reject(&mut self, agent: &AgentId) -> CommandResult {
        let offered =
            matches!(&self.phase, Phase::Queued { offers, .. } if offers.iter().any(|o| &o.agent == agent));
        if !offered {
            return refuse("no_offer", "this call is not being offered to you");
        }
        self.offer_failed(agent, "rejected by the agent");
        Ok(None)
    }

    fn hangup_command(&mut self, agent: &AgentId) -> CommandResult {
        // Cancelling a call the agent placed, or a callback not connected yet.
        if let Phase::Dialing { agent: a, .. } = &self.phase
            && a == agent
        {
            if let Some(request) = self.dial_request.take() {
                self.reply(request, refuse("call_ended", "cancelled by the agent"));
            }
            let disposition = if matches!(
                &self.phase,
                Phase::Dialing {
                    customer: Some(_),
                    ..
                }
            ) {
                "no_answer"
            } else {
                "failed"
            };
            self.not_reached(EndedBy::Agent, "cancelled by the agent", disposition);
            return Ok(None);
        }
        if !self.talking_as(agent) {
            return not_connected();
        }
        self.agent_hung_up();
        Ok(None)
    }

    fn hold(&mut self, agent: &AgentId, hold: bool) -> CommandResult {
        let Phase::Talking(t) = &mut self.phase else {
            return not_connected();
        };
        if &t.agent != agent {
            return not_connected();
        }
        match (hold, t.held.is_some()) {
            (true, true) => return refuse("already_held", "the caller is already on hold"),
            (false, false) => return refuse("not_held", "the caller is not on hold"),
            (true, false) => t.held = Some(HeldBy::Agent),
            (false, true) => t.held = None,
        }
        let (command, kind, phase) = if hold {
            (Command::Hold, InteractionEventKind::Held, CallPhase::Held)
        } else {
            (
                Command::Resume,
                InteractionEventKind::Resumed,
                CallPhase::Connected,
            )
        };
        self.push(command);
        self.log(kind);
        self.push(Command::DeskPhase {
            agent: agent.clone(),
            phase,
        });
        Ok(None)
    }

    fn mute(&mut self, agent: &AgentId, muted: bool) -> CommandResult {
        let Phase::Talking(t) = &mut self.phase else {
            return not_connected();
        };
        if &t.agent != agent {
            return not_connected();
        }
        t.muted = muted;
        self.push(Command::Mute(muted));
        Ok(None)
    }

    fn transfer(
        &mut self,
        request: RequestId,
        agent: &AgentId,
        target: TransferTarget,
    ) -> Option<CommandResult> {
        if !self.talking_as(agent) {
            return Some(not_connected());
        }
        let (queue, preferred) = match &target {
            TransferTarget::Number(number) => {
                let Some(trunk) = self.settings.trunk.clone() else {
                    return Some(refuse(
                        "no_trunk",
                        "no outbound trunk is configured for outside numbers",
                    ));
                };
                if let Phase::Talking(t) = &self.phase
                    && t.transferring.is_some()
                {
                    return Some(refuse("already_transferring", "a transfer is under way"));
                }
                let uri = format!("sip:{}@{}", number.expose(), trunk.host);
                let leg = self.dial(uri, trunk.caller_id, false);
                let described = format!("number:{}", number.expose());
                if let Phase::Talking(t) = &mut self.phase {
                    t.transferring = Some((leg, request, described));
                }
                return None;
            }
            TransferTarget::Queue(q) => (q.clone(), None),
            TransferTarget::Agent(a) if a == agent => {
                return Some(refuse("bad_target", "you cannot transfer a call to yourself"));
            }
            TransferTarget::Agent(a) => match &self.last_queue {
                Some((q, _)) => (q.clone(), Some(a.clone())),
                None => return Some(refuse("bad_target", "the call came through no queue")),
            },
        };
        if !self.settings.queues.contains(&queue) {
            return Some(refuse("unknown_queue", &format!("there is no queue {queue}")));
        }
        self.leave(agent);
        let described = match &target {
            TransferTarget::Queue(q) => format!("queue:{q}"),
            TransferTarget::Agent(a) => format!("agent:{a}"),
            TransferTarget::Number(n) => format!("number:{}", n.expose()),
        };
        self.log(InteractionEventKind::Transferred {
            target: Pii::new(described),
        });
        let priority = self.last_queue.as_ref().map_or(0, |(_, p)| *p);
        self.enqueue(queue, priority, None, preferred);
        Some(Ok(None))
    }

    fn consult(
        &mut self,
        request: RequestId,
        agent: &AgentId,
        target: TransferTarget,
    ) -> Option<CommandResult> {
        let Phase::Talking(t) = &self.phase else {
            return Some(not_connected());
        };
        if &t.agent != agent {
            return Some(not_connected());
        }
        if t.consult.is_some() {
            return Some(refuse(
                "already_consulting",
                "finish the consultation you have first",
            ));
        }
        if t.supervisor.is_some() {
            return Some(refuse("already_monitored", "a supervisor is on this call"));
        }
        let (leg, described) = match &target {
            TransferTarget::Agent(a) if a == agent => {
                return Some(refuse("bad_target", "you cannot consult yourself"));
            }
            TransferTarget::Agent(a) => {
                let leg = self.new_leg();
                self.push(Command::RingPhone {
                    leg,
                    agent: a.clone(),
                    shown_as: agent.as_str().to_string(),
                });
                (leg, format!("agent:{a}"))
            }
            TransferTarget::Number(n) => {
                let Some(trunk) = self.settings.trunk.clone() else {
                    return Some(refuse(
                        "no_trunk",
                        "no outbound trunk is configured for outside numbers",
                    ));
                };
                let uri = format!("sip:{}@{}", n.expose(), trunk.host);
                (
                    self.dial(uri, trunk.caller_id, false),
                    format!("number:{}", n.expose()),
                )
            }
            TransferTarget::Queue(_) => {
                return Some(refuse(
                    "bad_target",
                    "consult an agent or a number; transfer to queues",
                ));
            }
        };
        if let Phase::Talking(t) = &mut self.phase {
            t.consult = Some(Consult {
                leg,
                described,
                pending: Some(request),
                joined: false,
            });
        }
        None
    }

    fn consult_complete(&mut self, agent: &AgentId) -> CommandResult {
        let Phase::Talking(t) = &mut self.phase else {
            return not_connected();
        };
        if &t.agent != agent {
            return not_connected();
        }
        let Some(c) = t.consult.as_ref() else {
            return refuse("not_consulting", "you are not consulting anyone");
        };
        if !c.joined {
            return refuse("not_answered", "the consulted party has not answered yet");
        }
        let Some(c) = t.consult.take() else {
            return refuse("not_consulting", "you are not consulting anyone");
        };
        // The consulted party is the caller's partner from now on; the agent leaves to wrap-up.
        self.push(Command::LeaveConsult);
        self.legs_open.remove(&c.leg);
        self.leave(agent);
        self.legs_open.insert(c.leg);
        self.log(InteractionEventKind::Transferred {
            target: Pii::new(format!("consult:{}", c.described)),
        });
        self.push(Command::StopPlayback);
        self.push(Command::Bridge { leg: c.leg });
        self.log(InteractionEventKind::Resumed);
        self.phase = Phase::External {
            leg: c.leg,
            started: true,
            bridged: true,
        };
        Ok(None)
    }

    fn consult_cancel(&mut self, agent: &AgentId) -> CommandResult {
        let Phase::Talking(t) = &self.phase else {
            return not_connected();
        };
        if &t.agent != agent {
            return not_connected();
        }
        if t.consult.is_none() {
            return refuse("not_consulting", "you are not consulting anyone");
        }
        if let Some(request) = t.consult.as_ref().and_then(|c| c.pending) {
            self.reply(request, refuse("call_ended", "the consultation was cancelled"));
        }
        self.end_consult();
        Ok(None)
    }

    fn monitor(
        &mut self,
        request: RequestId,
        supervisor: AgentId,
        mode: SuperviseMode,
        sdp: Option<String>,
    ) -> Option<CommandResult> {
        let Phase::Talking(t) = &self.phase else {
            return Some(refuse("not_on_call", "the agent is not talking to anyone"));
        };
        if t.supervisor.is_some() {
            return Some(refuse(
                "already_monitored",
                "a supervisor is already on this call",
            ));
        }
        if supervisor == t.agent {
            return Some(refuse("bad_target", "you cannot monitor yourself"));
        }
        let leg = self.new_leg();
        let browser = sdp.is_some();
        if browser {
            self.push(Command::OpenBrowser {
                leg,
                agent: supervisor.clone(),
                sdp,
                attach_to: None,
            });
        } else {
            self.push(Command::RingPhone {
                leg,
                agent: supervisor.clone(),
                shown_as: "monitor".into(),
            });
        }
        if let Phase::Talking(t) = &mut self.phase {
            t.supervisor = Some(Supervisor {
                supervisor,
                mode,
                leg,
                browser,
                pending: Some(request),
                joined: false,
            });
        }
        None
    }

    fn monitor_mode(&mut self, mode: SuperviseMode) -> CommandResult {
        let Phase::Talking(t) = &mut self.phase else {
            return refuse("not_monitoring", "no supervisor is on this call yet");
        };
        let Some(sv) = t.supervisor.as_mut().filter(|s| s.joined) else {
            return refuse("not_monitoring", "no supervisor is on this call yet");
        };
        sv.mode = mode;
        let supervisor = sv.supervisor.clone();
        self.push(Command::MonitorMode(mode));
        self.log(InteractionEventKind::Monitored {
            supervisor,
            mode: mode.name().into(),
        });
        Ok(None)
    }

    fn stop_monitor(&mut self) -> CommandResult {
        let monitored = matches!(&self.phase, Phase::Talking(t) if t.supervisor.is_some());
        if !monitored {
            return refuse("not_monitoring", "no supervisor is on this call");
        }
        self.drop_supervisor();
        Ok(None)
    }

    fn wrap_up(
        &mut self,
        agent: &AgentId,
        disposition: String,
        notes: Pii<String>,
        wants: CampaignWrapUp,
    ) -> CommandResult {
        let Some(i) = self.wrap_ups.iter().position(|w| &w.agent == agent) else {
            if self.talking_as(agent) {
                return refuse("not_in_wrap_up", "the call is still going on: hang up first");
            }
            return refuse("call_ended", "the call has ended");
        };
        if !wants.is_empty() {
            if self.campaign.is_none() && self.preview.is_none() {
                return refuse(
                    "not_campaign_call",
                    "do_not_call and callback are for campaign calls",
                );
            }
            self.push(Command::Campaign(CampaignNote::WrappedUp {
                agent: agent.clone(),
                wants,
            }));
        }
        let w = self.wrap_ups.remove(i);
        self.log(InteractionEventKind::WrappedUp {
            agent: agent.clone(),
            disposition,
            notes,
        });
        match w.restore {
            // An agent-placed call: back to the state the agent dialled from.
            Some(restore) => {
                self.push(Command::DeskRelease { agent: w.agent });
                self.push(Command::Acd(restore));
            }
            None => {
                self.push(Command::WrapUpDone {
                    agent: w.agent.clone(),
                });
                self.push(Command::DeskRelease { agent: w.agent });
            }
        }
        Ok(None)
    }
}

// ----- time and the end -----
impl CallSession {
    /// Fires everything due by `now`, earliest first.
    fn fire_due(&mut self) {
        loop {
            let Some(at) = self.next_deadline().filter(|at| *at <= self.now) else {
                return;
            };
            let timer = self.ivr_timers.iter().find(|(_, t)| **t == at).map(|(id, _)| *id);
            if let Some(id) = timer {
                self.ivr_timers.remove(&id);
                self.ivr_event(IvrEvent::TimerFired(id));
                continue;
            }
            if let Some(i) = self.wrap_ups.iter().position(|w| w.until == at) {
                // The window is over without a disposition.
                let w = self.wrap_ups.remove(i);
                self.push(Command::DeskRelease { agent: w.agent });
                if let Some(restore) = w.restore {
                    self.push(Command::Acd(restore));
                }
                continue;
            }
            match &self.phase {
                Phase::Voicemail { until, .. } if *until == at => {
                    self.stop_voicemail();
                    self.end(EndedBy::System, "voicemail left");
                    // `end` takes effect in `settle`; leave the phase so the deadline goes.
                    self.settle();
                    continue;
                }
                Phase::Talking(t) if t.lost_at.map(|l| l + self.settings.reattach_grace) == Some(at) => {
                    // The browser agent's media did not come back in time.
                    self.agent_hung_up();
                    self.settle();
                    continue;
                }
                Phase::Queued { .. } => {
                    self.campaign_abandon();
                    continue;
                }
                _ => return,
            }
        }
    }

    /// A campaign call got no agent by its deadline: it leaves the queue as abandoned and the
    /// identification message plays (the call ends when it has).
    fn campaign_abandon(&mut self) {
        let Some((_, _, message)) = self.campaign.clone() else {
            return;
        };
        self.stop_all_offers("no agent in time");
        self.push(Command::Abandon);
        self.push(Command::ForgetQueue);
        self.closing += 1;
        self.push(Command::Campaign(CampaignNote::Abandoned));
        self.push(Command::Play {
            prompts: vec![message],
            looped: false,
            barge_in: false,
        });
        self.phase = Phase::Abandoning;
    }

    /// Carries out an end decided meanwhile, and finishes once every answer is in.
    fn settle(&mut self) {
        if let Some((by, reason)) = self.ending.take() {
            self.tear_down(by, reason);
        }
        if let Phase::Ended { by, reason } = &self.phase
            && self.closing == 0
            && !self.ended_logged
        {
            let (by, reason) = (*by, reason.clone());
            self.ended_logged = true;
            self.log(InteractionEventKind::Ended {
                by,
                reason,
                quality: None,
            });
            if let Some(link) = self.campaign_outcome() {
                self.log(link);
            }
        }
        if self.ended_logged && self.wrap_ups.is_empty() && !self.finished {
            self.finished = true;
            for leg in std::mem::take(&mut self.legs_open) {
                self.push(Command::HangUp { leg });
            }
            self.push(Command::Finished);
        }
    }

    fn campaign_outcome(&self) -> Option<InteractionEventKind> {
        let link = self
            .preview
            .clone()
            .or_else(|| self.campaign.as_ref().map(|c| c.0.clone()))?;
        let answered = self.answered;
        let outcome = if answered || self.campaign_connected {
            "completed"
        } else if self.preview.is_some() {
            return None;
        } else {
            "abandoned"
        };
        Some(InteractionEventKind::DialAttempt {
            campaign: link.campaign,
            lead: link.lead,
            outcome: outcome.into(),
        })
    }

    fn tear_down(&mut self, by: EndedBy, reason: String) {
        if let Some(request) = self.dial_request.take() {
            self.reply(
                request,
                refuse("call_ended", "the call ended before it was placed"),
            );
        }
        if by != EndedBy::Caller && self.caller_up {
            self.push(Command::HangUpCaller);
        }
        self.stop_voicemail();
        if let Phase::Talking(t) = &self.phase {
            let agent = t.agent.clone();
            self.leave(&agent);
        }
        let phase = std::mem::replace(&mut self.phase, Phase::SelfService);
        match phase {
            Phase::Queued { queue, offers } => {
                self.phase = Phase::Queued {
                    queue: queue.clone(),
                    offers,
                };
                self.stop_all_offers("caller hung up");
                match self.callback.take() {
                    // The caller keeps their place: a callback session waits in line for them.
                    Some(number) => self.push(Command::KeepPlaceForCallback { queue, number }),
                    None => {
                        self.push(Command::Acd(acd::Input::CallAbandoned {
                            call: self.id.clone(),
                        }));
                        self.push(Command::ForgetQueue);
                    }
                }
            }
            Phase::External { leg, .. } => self.hang_up(leg),
            Phase::Dialing { .. } => {
                self.phase = phase;
                self.not_reached(by, &reason, "failed");
            }
            _ => {}
        }
        if self.ivr.is_some() {
            self.push(Command::DeleteIvrState);
        }
        self.ivr_timers.clear();
        self.phase = Phase::Ended { by, reason };
    }
}
