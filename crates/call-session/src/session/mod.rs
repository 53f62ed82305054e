//! The session machine: [`CallSession::handle`] applies one [`Input`], [`CallSession::poll_command`]
//! yields what the driver must do, [`CallSession::next_deadline`] says when to send [`Input::Tick`].

mod agent;
mod course;
mod end;
mod legs;

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
    /// dial request, answered once the agent's own leg is up or failed. The router holds the agent
    /// on the call (the driver placed it there, `acd::Input::CallPlaced`) until the session's
    /// `CallEnded`; `restore` puts the agent back as they were after the wrap-up.
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
