//! A driver for scenario and property tests: feeds a session inputs on virtual time (seconds) and
//! renders every command it asks for as one line, so a scenario reads as the call's log.
// Test helpers panic on bad literals by design, like the tests that call them.
#![allow(dead_code, clippy::unwrap_used)]

use call_session::{
    AgentCommand, AgentMedia, CallSession, CampaignWrapUp, Command, CustomerSummary, Entry, Input, LegRef,
    Origin, RequestId, Settings, TransferTarget, Trunk,
};
use domain::{AgentId, CallId, CustomerId, Pii, QueueId, Timestamp};
use std::sync::Arc;

pub const PHONE: Option<AgentMedia> = Some(AgentMedia::Phone);
pub const BROWSER: Option<AgentMedia> = Some(AgentMedia::Browser);

pub fn leg(n: u32) -> LegRef {
    LegRef(n)
}

pub fn number(n: &str) -> TransferTarget {
    TransferTarget::Number(call_session::DialNumber::try_from(n.to_string()).unwrap())
}

pub fn wrap_up(disposition: &str) -> AgentCommand {
    AgentCommand::WrapUp {
        disposition: disposition.into(),
        notes: Pii::new("notes".into()),
        campaign: CampaignWrapUp::default(),
    }
}

pub fn a(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}
pub fn q(s: &str) -> QueueId {
    QueueId::new(s).unwrap()
}

/// Monday 7 December 2026, 10:00 in Berlin: the demo flow's business hours.
pub const MONDAY_10: i64 = 1_796_634_000_000;
/// Sunday 6 December 2026, 10:00 in Berlin: closed.
pub const SUNDAY_10: i64 = 1_796_547_600_000;

pub fn settings() -> Settings {
    Settings {
        record_calls: true,
        trunk: Some(Trunk {
            host: "carrier.test:5060".into(),
            caller_id: Some("+4930000000".into()),
        }),
        queues: [q("support"), q("sales"), q("operator")].into_iter().collect(),
        ..Settings::default()
    }
}

pub fn flows() -> Arc<ivr::FlowSet> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../ivr-scripts");
    Arc::new(ivr::load_dir(dir).unwrap())
}

/// A session on virtual time; `log` collects rendered commands.
pub struct World {
    pub s: CallSession,
    pub t0: i64,
    pub now: i64,
    pub next_request: u64,
    pub log: Vec<String>,
    /// Replies seen, by request.
    pub replies: Vec<(u64, String)>,
    /// Requests sent.
    pub requests: Vec<u64>,
}

impl World {
    pub fn new(origin: Origin, t0: i64) -> Self {
        let s = CallSession::new(
            CallId::new("call-1").unwrap(),
            Timestamp::from_millis(t0),
            origin,
            Pii::new("+4915112345678".into()),
            Pii::new("801".into()),
            settings(),
        )
        .unwrap();
        let mut w = World {
            s,
            t0,
            now: t0,
            next_request: 1,
            log: Vec::new(),
            replies: Vec::new(),
            requests: Vec::new(),
        };
        w.drain();
        w
    }

    /// An inbound call straight into `queue`.
    pub fn queue_call(queue: &str) -> Self {
        Self::new(
            Origin::Inbound {
                entry: Entry::Queue(q(queue)),
            },
            MONDAY_10,
        )
    }

    /// An inbound call into the demo IVR at `t0`.
    pub fn ivr_call(t0: i64) -> Self {
        let session = ivr::IvrSession::new(
            flows(),
            "main",
            ivr::CallInfo {
                caller: Pii::new("+4915112345678".into()),
                called: Pii::new("801".into()),
            },
        )
        .unwrap();
        Self::new(
            Origin::Inbound {
                entry: Entry::Ivr(Box::new(session)),
            },
            t0,
        )
    }

    fn drain(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        while let Some(c) = self.s.poll_command() {
            if let Command::Reply { request, result } = &c {
                self.replies.push((request.0, render(&c)));
                let _ = result;
            }
            lines.push(render(&c));
        }
        if let Err(e) = self.s.check_invariants() {
            panic!("invariant broken: {e}");
        }
        self.log.extend(lines.iter().cloned());
        lines
    }

    /// Applies `input` `secs` after the start and returns the commands as lines.
    pub fn at(&mut self, secs: f64, input: Input) -> Vec<String> {
        self.now = self.t0 + (secs * 1000.0) as i64;
        self.s.handle(Timestamp::from_millis(self.now), input);
        self.drain()
    }

    /// Like [`World::at`], keeping only the lines that start with `prefix`es.
    pub fn only(&mut self, secs: f64, input: Input, prefixes: &[&str]) -> Vec<String> {
        self.at(secs, input)
            .into_iter()
            .filter(|l| prefixes.iter().any(|p| l.starts_with(p)))
            .collect()
    }

    /// Sends a desktop command as `agent`; returns the lines (the reply among them, if at once).
    pub fn cmd(&mut self, secs: f64, agent: &str, command: AgentCommand) -> Vec<String> {
        let request = self.next_request;
        self.next_request += 1;
        self.requests.push(request);
        self.at(
            secs,
            Input::Command {
                request: RequestId(request),
                agent: a(agent),
                command,
            },
        )
    }

    /// The reply line of the last request sent.
    pub fn last_reply(&self) -> Option<String> {
        let last = *self.requests.last()?;
        self.replies
            .iter()
            .find(|(r, _)| *r == last)
            .map(|(_, l)| l.clone())
    }

    /// The ACD offers the call to `agents` with their desktops' media.
    pub fn offered(&mut self, secs: f64, agents: &[(&str, Option<AgentMedia>)]) -> Vec<String> {
        let offer = offer(agents.iter().map(|(x, _)| *x).collect());
        let media = agents.iter().map(|(x, m)| (a(x), *m)).collect();
        self.at(secs, Input::Offered { offer, media })
    }

    pub fn identified(&mut self, secs: f64, found: Option<CustomerSummary>) -> Vec<String> {
        self.at(secs, Input::CallerIdentified(found))
    }

    /// Every request got exactly one reply.
    pub fn assert_every_request_answered_once(&self) {
        for r in &self.requests {
            let n = self.replies.iter().filter(|(x, _)| x == r).count();
            assert_eq!(n, 1, "request #{r} answered {n} times\n{}", self.log.join("\n"));
        }
    }

    pub fn leg(n: u32) -> LegRef {
        LegRef(n)
    }
}

pub fn customer(tier: &str, priority: u8, manager: Option<&str>) -> CustomerSummary {
    CustomerSummary {
        id: CustomerId::new("cust-1").unwrap(),
        tier: tier.into(),
        queue_priority: priority,
        account_manager: manager.map(a),
    }
}

pub fn offer(agents: Vec<&str>) -> acd::Offer {
    let call = CallId::new("call-1").unwrap();
    let agents: Vec<AgentId> = agents.into_iter().map(a).collect();
    acd::Offer {
        offer: 1,
        call: call.clone(),
        queue: q("support"),
        agents: agents.clone(),
        expires_at: Timestamp::from_millis(0),
        explanation: acd::Explanation {
            call,
            queue: q("support"),
            trigger: acd::Trigger::CallArrived,
            rule: acd::Rule::Strategy(acd::Strategy::LongestIdle),
            step: 0,
            step_rule: "any".into(),
            priority: 0,
            effective_priority: 0.0,
            waited_ms: 1500,
            calls_considered: 0,
            agents_available: 1,
            agents_considered: 1,
            agents_eligible: 1,
            chosen: agents,
            score: acd::Score::IdleMs(1000),
        },
    }
}

/// One line per command; events by their type name (with the detail scenarios care about).
pub fn render(c: &Command) -> String {
    use domain::InteractionEventKind as K;
    match c {
        Command::Log(e) => match &e.kind {
            K::Offered { agent, .. } => format!("log offered {agent}"),
            K::OfferFailed { agent, reason } => format!("log offer_failed {agent}: {reason}"),
            K::Answered { agent } => format!("log answered {agent}"),
            K::Enqueued { queue, priority } => format!("log enqueued {queue} p{priority}"),
            K::Transferred { target } => format!("log transferred {}", target.expose()),
            K::Monitored { supervisor, mode } => format!("log monitored {supervisor} {mode}"),
            K::Ended { by, reason, .. } => format!("log ended {by:?}: {reason}"),
            K::WrappedUp {
                agent, disposition, ..
            } => format!("log wrapped_up {agent} {disposition}"),
            K::Abandoned { position, .. } => format!("log abandoned at {position}"),
            K::DialAttempt { outcome, .. } => format!("log dial_attempt {outcome}"),
            K::Recording { path } => format!("log recording {path}"),
            K::Voicemail {
                mailbox, duration_ms, ..
            } => format!("log voicemail {mailbox} {duration_ms}ms"),
            K::IvrNode { node, .. } => format!("log ivr_node {node}"),
            other => format!("log {}", other.name()),
        },
        Command::Reply { request, result } => match result {
            Ok(None) => format!("reply #{} ok", request.0),
            Ok(Some(sdp)) => format!("reply #{} ok {sdp}", request.0),
            Err(r) => format!("reply #{} {}", request.0, r.code),
        },
        Command::Play { prompts, looped, .. } => format!(
            "play {}{}",
            prompts
                .iter()
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().to_string()))
                .collect::<Vec<_>>()
                .join(","),
            if *looped { " looped" } else { "" }
        ),
        Command::PlayHoldMusic => "play hold music".into(),
        Command::StopPlayback => "stop playback".into(),
        Command::StartVoicemail { name, beep } => {
            format!("start voicemail {name}{}", if *beep { " beep" } else { "" })
        }
        Command::StopVoicemail => "stop voicemail".into(),
        Command::Ivr(c) => format!("ivr {c}"),
        Command::SaveIvrState(_) => "save ivr state".into(),
        Command::DeleteIvrState => "delete ivr state".into(),
        Command::IdentifyCaller { .. } => "identify caller".into(),
        Command::Enqueue(r) => format!(
            "enqueue {} p{}{}",
            r.queue,
            r.priority.get(),
            r.preferred
                .as_ref()
                .map(|p| format!(" preferring {}", p.agent))
                .unwrap_or_default()
        ),
        Command::Acd(i) => format!("acd {}", acd_line(i)),
        Command::Abandon => "abandon".into(),
        Command::ForgetQueue => "forget queue".into(),
        Command::KeepPlaceForCallback { queue, .. } => format!("keep place in {queue} for a callback"),
        Command::SettleCallback { status } => format!("settle callback {status}"),
        Command::RingPhone { leg, agent, shown_as } => format!("ring {agent} on leg {} as {shown_as}", leg.0),
        Command::Dial {
            leg, uri, customer, ..
        } => {
            format!(
                "dial {uri} on leg {}{}",
                leg.0,
                if *customer { " (customer)" } else { "" }
            )
        }
        Command::OpenBrowser {
            leg,
            agent,
            attach_to,
            ..
        } => match attach_to {
            Some(to) => format!(
                "open browser of {agent} on leg {} attached to leg {}",
                leg.0, to.0
            ),
            None => format!("open browser of {agent} on leg {}", leg.0),
        },
        Command::HangUp { leg } => format!("hang up leg {}", leg.0),
        Command::HangUpCaller => "hang up caller".into(),
        Command::Bridge { leg } => format!("bridge caller with leg {}", leg.0),
        Command::Hold => "hold caller".into(),
        Command::Resume => "resume caller".into(),
        Command::Mute(m) => format!("mute {m}"),
        Command::JoinMonitor { leg, mode } => format!("join monitor leg {} {}", leg.0, mode.name()),
        Command::MonitorMode(m) => format!("monitor mode {}", m.name()),
        Command::StopMonitor => "stop monitor".into(),
        Command::JoinConsult { leg } => format!("join consult leg {}", leg.0),
        Command::LeaveConsult => "leave consult".into(),
        Command::StartRecording { paused } => {
            format!("start recording{}", if *paused { " paused" } else { "" })
        }
        Command::PauseRecording => "pause recording".into(),
        Command::ResumeRecording => "resume recording".into(),
        Command::StopRecording => "stop recording".into(),
        Command::DeskOffer { agent, .. } => format!("desk offer {agent}"),
        Command::DeskWithdraw { agent, reason } => format!("desk withdraw {agent}: {reason}"),
        Command::DeskPhase { agent, phase } => format!("desk {agent} {phase:?}"),
        Command::DeskRelease { agent } => format!("desk release {agent}"),
        Command::DeskMediaAnswer { agent, sdp } => format!("desk media answer {agent} {sdp}"),
        Command::WrapUpDone { agent } => format!("wrap-up done {agent}"),
        Command::Campaign(n) => format!("campaign {n:?}"),
        Command::Finished => "finished".into(),
    }
}

fn acd_line(i: &acd::Input) -> String {
    match i {
        acd::Input::OfferAccepted { agent, .. } => format!("accepted by {agent}"),
        acd::Input::OfferRejected { agent, .. } => format!("rejected by {agent}"),
        acd::Input::CallEnded { .. } => "call ended".into(),
        acd::Input::CallAbandoned { .. } => "call abandoned".into(),
        acd::Input::AgentReady { agent } => format!("{agent} ready"),
        acd::Input::AgentNotReady { agent, reason } => format!("{agent} not ready ({reason})"),
        other => format!("{other:?}"),
    }
}
