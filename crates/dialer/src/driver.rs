//! A live campaign's decisions, sans IO: [`CampaignDriver`] owns the [`Campaign`] (leads, window,
//! retries), the pacing policy, the abandonment ledger, the dials in flight, the people waiting for
//! an agent, the attempts running, the wrap-ups that came before their attempt's end (deferred),
//! and the leads each preview agent is looking at.
//!
//! Its owner (call control's campaign runner) does the IO: it reads the ACD's agents and the
//! do-not-call list, holds the lease, places the calls the driver asks for ([`Command::Place`]),
//! saves what it is told to ([`Command::Save`]) and reports how each attempt goes
//! ([`Report`]). Time is an input everywhere; nothing reads a clock.
//!
//! ```text
//! owner --dials_wanted(now, agents)--> n --place(now, n, dnc, ready)--> Place(DialRequest) ...
//!       --report(now, Report)--------> Save / Count / EndPreview
//! ```

use crate::campaign::{
    Campaign, CampaignError, CampaignMode, CampaignState, CampaignStats, DialRequest, Disposition, DoNotCall,
    Lead, LeadStatus,
};
use crate::compliance::{AbandonLedger, AnsweredCall};
use crate::pacing::{AgentView, DialResult, PacingEvent, PacingPolicy, PacingSnapshot};
use domain::{AgentId, LeadId, Pii, Timestamp};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// What the driver needs to know of its campaign besides the leads.
#[derive(Debug, Clone, Copy)]
pub struct DriverSettings {
    pub mode: CampaignMode,
    /// At most this many attempts at once.
    pub max_lines: u32,
    /// A skipped preview's lead comes back after this long.
    pub preview_skip: Duration,
}

/// What a wrap-up asks of the campaign besides the disposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WrapUpWish {
    /// Never call again: the number joins the do-not-call list, the lead is closed.
    pub do_not_call: bool,
    /// Call back at this time (`personal`: by the same agent).
    pub callback: Option<(Timestamp, bool)>,
}

/// A lead shown to a preview agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Previewed {
    pub lead: LeadId,
    pub phone: Pii<String>,
    pub attempt: u32,
    /// Which change of its agent into previewing is this preview's own (counted from 1): a change
    /// heard before that one happened before the preview began (agent events arrive apart from the
    /// request that put the agent in preview) and must not take the preview back.
    start: u64,
}

/// Per agent: changes into previewing asked for (one per preview shown), and heard.
#[derive(Debug, Default, Clone, Copy)]
struct PreviewStarts {
    asked: u64,
    heard: u64,
}

/// How an attempt goes, as its owner reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// Ringing is over: answered and classified, or not answered.
    Resolved {
        lead: LeadId,
        dialed_at: Timestamp,
        result: DialResult,
    },
    /// A person waits in the queue for an agent.
    Waiting { lead: LeadId },
    /// A person reached an agent, `waited` after the verdict.
    Connected { lead: LeadId, waited: Duration },
    /// A person got no agent in time.
    Abandoned { lead: LeadId },
    /// The attempt is over.
    Finished { lead: LeadId, disposition: Disposition },
    /// A previewed lead's call was placed by its agent.
    PreviewPlaced { lead: LeadId, agent: AgentId },
    /// The agent's dial of a previewed lead was refused; the preview stays.
    PreviewRefused { agent: AgentId, previewed: Previewed },
    /// The agent's wrap-up asks not to call again, or to call back.
    WrappedUp {
        lead: LeadId,
        agent: AgentId,
        wish: WrapUpWish,
    },
}

/// What the owner must keep, in this order.
#[derive(Debug, Clone)]
pub enum Save {
    /// The lead as it is now; `last` its latest result, `attempt_at` when it was last dialled.
    Lead {
        lead: Lead,
        last: Option<Disposition>,
        attempt_at: Option<Timestamp>,
    },
    Status(CampaignState),
    /// The number joins the do-not-call list (asked of `agent` at `at`).
    DoNotCall {
        number: Pii<String>,
        agent: AgentId,
        at: Timestamp,
    },
}

/// Something to count (the owner's metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Dial,
    Connect,
    Abandon,
    Outcome(Disposition),
}

/// What the owner must do.
#[derive(Debug, Clone)]
pub enum Command {
    Save(Save),
    /// Dial this lead now (the lead was saved first).
    Place(DialRequest),
    /// Take the preview back from the agent's desktop (`reason` None: the agent decided).
    EndPreview {
        agent: AgentId,
        reason: Option<String>,
    },
    Count(Count),
}

/// How an agent's state changed, as far as pacing and previews care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Left {
    /// The agent finished talking.
    Talk,
    /// The agent finished after-call work.
    WrapUp,
    Other,
}

/// Counters of the campaign's attempts.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Counts {
    pub dials: u64,
    pub answered_human: u64,
    pub machines: u64,
    pub connects: u64,
    pub abandons: u64,
}

/// The campaign as the wallboard sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DriverStats {
    pub state: CampaignState,
    pub counts: Counts,
    pub abandon_rate: f64,
    pub dial_level: f64,
    pub lines_active: u32,
    pub calls_waiting: u32,
    pub leads: CampaignStats,
}

/// One live campaign's decisions. See the module documentation.
pub struct CampaignDriver {
    campaign: Campaign,
    policy: Box<dyn PacingPolicy>,
    ledger: AbandonLedger,
    settings: DriverSettings,
    /// Dials not yet resolved, by lead: when they were placed.
    in_flight: BTreeMap<LeadId, Timestamp>,
    /// People waiting for an agent.
    waiting: BTreeSet<LeadId>,
    /// Attempts running (ringing, classifying, waiting, talking, playing the message).
    active: u32,
    /// Wrap-ups that came before their attempt's end was recorded.
    deferred: BTreeMap<LeadId, (AgentId, WrapUpWish)>,
    /// Preview campaigns: the lead each agent is looking at.
    previews: BTreeMap<AgentId, Previewed>,
    preview_starts: BTreeMap<AgentId, PreviewStarts>,
    /// When each of the campaign's agents entered their current state.
    agent_since: BTreeMap<AgentId, Timestamp>,
    counts: Counts,
    dial_level: f64,
    commands: VecDeque<Command>,
}

impl CampaignDriver {
    pub fn new(
        campaign: Campaign,
        policy: Box<dyn PacingPolicy>,
        ledger: AbandonLedger,
        settings: DriverSettings,
    ) -> Self {
        Self {
            campaign,
            policy,
            ledger,
            settings,
            in_flight: BTreeMap::new(),
            waiting: BTreeSet::new(),
            active: 0,
            deferred: BTreeMap::new(),
            previews: BTreeMap::new(),
            preview_starts: BTreeMap::new(),
            agent_since: BTreeMap::new(),
            counts: Counts::default(),
            dial_level: 0.0,
            commands: VecDeque::new(),
        }
    }

    /// The next thing to do, oldest first.
    pub fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    pub fn campaign(&self) -> &Campaign {
        &self.campaign
    }

    /// The campaign as loaded from the store (on taking the lease); attempts still running here
    /// keep counting.
    pub fn replace_campaign(&mut self, campaign: Campaign) {
        self.campaign = campaign;
    }

    /// Saves the lead as it is now.
    pub fn save_lead(&mut self, lead: &LeadId, last: Option<Disposition>, attempt_at: Option<Timestamp>) {
        if let Some(l) = self.campaign.lead(lead) {
            let lead = l.clone();
            self.commands.push_back(Command::Save(Save::Lead {
                lead,
                last,
                attempt_at,
            }));
        }
    }

    /// Pause, resume or stop.
    pub fn control(
        &mut self,
        change: impl FnOnce(&mut Campaign) -> Result<(), CampaignError>,
    ) -> Result<CampaignState, CampaignError> {
        change(&mut self.campaign)?;
        let state = self.campaign.state();
        self.commands.push_back(Command::Save(Save::Status(state)));
        Ok(state)
    }

    /// A stopped campaign with nothing running is over.
    pub fn is_done(&self) -> bool {
        self.campaign.state() == CampaignState::Stopped && self.active == 0
    }

    /// A campaign agent's state changed at `at` (`previewing`: they are still not ready for a
    /// preview). Talk and after-call times feed the policy's estimates.
    pub fn agent_changed(&mut self, agent: &AgentId, at: Timestamp, left: Left, previewing: bool) {
        let starts = self.preview_starts.entry(agent.clone()).or_default();
        if previewing {
            starts.heard += 1;
        }
        let heard = starts.heard;
        match self.previews.get(agent) {
            // Ready again, logged out or forced elsewhere: the lead goes back at once.
            Some(p) if !previewing && heard >= p.start => {
                self.end_preview(agent, at, "you are no longer previewing");
            }
            // Older news (the change that made the agent free for this preview, say).
            _ => {}
        }
        let Some(started) = self.agent_since.insert(agent.clone(), at) else {
            return;
        };
        let spent = at.since(started);
        match left {
            Left::Talk => self.policy.observe(&PacingEvent::TalkEnded { at, talk: spent }),
            Left::WrapUp => self.policy.observe(&PacingEvent::WrapEnded { at, wrap: spent }),
            Left::Other => {}
        }
    }

    /// How many numbers to dial now for these agents (the campaign's, as the ACD sees them).
    pub fn dials_wanted(&mut self, now: Timestamp, agents: &[AgentView]) -> u32 {
        let staffed = agents
            .iter()
            .filter(|a| a.activity != crate::pacing::AgentActivity::WrapUp)
            .count();
        self.dial_level = f64::from(self.active) / staffed.max(1) as f64;
        if self.campaign.state() != CampaignState::Running {
            return 0;
        }
        let flight: Vec<Timestamp> = self.in_flight.values().copied().collect();
        let snapshot = PacingSnapshot {
            now,
            agents,
            dials_in_flight: &flight,
            calls_waiting: u32::try_from(self.waiting.len()).unwrap_or(u32::MAX),
        };
        let free_lines = self.settings.max_lines.saturating_sub(self.active);
        let wanted = if self.settings.mode == CampaignMode::Agentless {
            free_lines
        } else if self.ledger.over_cap(now) {
            // Over the abandonment cap: only as many calls as there are free agents.
            snapshot.progressive_dials()
        } else {
            self.policy.dials_to_place(&snapshot)
        };
        wanted.min(free_lines)
    }

    /// Dials up to `dials` leads (the do-not-call list read just now; `ready` says which agents are
    /// ready, for personal callbacks). Each lead is saved before its call goes out.
    pub fn place(
        &mut self,
        now: Timestamp,
        dials: u32,
        dnc: &dyn DoNotCall,
        ready: &dyn Fn(&AgentId) -> bool,
    ) {
        for _ in 0..dials {
            let Some(request) = self.campaign.next_to_dial_when(now, dnc, ready) else {
                break;
            };
            // Saved before the call goes out: a node that dies now still counts this attempt.
            self.save_lead(&request.lead, None, Some(now));
            self.in_flight.insert(request.lead.clone(), now);
            self.active += 1;
            self.counts.dials += 1;
            self.commands.push_back(Command::Count(Count::Dial));
            self.commands.push_back(Command::Place(request));
        }
        self.save_blocked();
    }

    /// Leads found on the do-not-call list at dial time are closed: saved.
    fn save_blocked(&mut self) {
        for id in self.campaign.take_blocked() {
            self.save_lead(&id, None, None);
        }
    }

    /// What an attempt reports.
    pub fn report(&mut self, now: Timestamp, report: Report) {
        match report {
            Report::Resolved {
                lead,
                dialed_at,
                result,
            } => {
                self.in_flight.remove(&lead);
                self.policy.observe(&PacingEvent::DialResolved {
                    dialed_at,
                    at: now,
                    result,
                });
                match result {
                    DialResult::Human => self.counts.answered_human += 1,
                    DialResult::Machine => {
                        self.counts.machines += 1;
                        self.ledger.record(now, AnsweredCall::MachineVerdict);
                    }
                    _ => {}
                }
            }
            Report::Waiting { lead } => {
                self.waiting.insert(lead);
            }
            Report::Connected { lead, waited } => {
                self.waiting.remove(&lead);
                self.counts.connects += 1;
                self.commands.push_back(Command::Count(Count::Connect));
                self.policy.observe(&PacingEvent::Connected { at: now, waited });
                self.ledger.record(now, AnsweredCall::Connected);
            }
            Report::Abandoned { lead } => {
                self.waiting.remove(&lead);
                self.counts.abandons += 1;
                self.commands.push_back(Command::Count(Count::Abandon));
                self.policy.observe(&PacingEvent::Abandoned { at: now });
                self.ledger.record(now, AnsweredCall::Abandoned);
            }
            Report::Finished { lead, disposition } => {
                self.in_flight.remove(&lead);
                self.waiting.remove(&lead);
                self.active = self.active.saturating_sub(1);
                self.commands
                    .push_back(Command::Count(Count::Outcome(disposition)));
                if self.campaign.record_result(&lead, disposition, now).is_err() {
                    return;
                }
                self.save_lead(&lead, Some(disposition), Some(now));
                if let Some((agent, wish)) = self.deferred.remove(&lead) {
                    self.wrapped_up(&lead, &agent, wish, now);
                }
            }
            Report::PreviewPlaced { lead, agent } => {
                if self.campaign.confirm_dial(&lead).is_ok() {
                    self.commands
                        .push_back(Command::EndPreview { agent, reason: None });
                    self.active += 1;
                    self.counts.dials += 1;
                    self.commands.push_back(Command::Count(Count::Dial));
                    self.save_lead(&lead, None, Some(now));
                }
            }
            Report::PreviewRefused { agent, previewed } => {
                self.previews.insert(agent, previewed);
            }
            Report::WrappedUp { lead, agent, wish } => {
                let dialling = self
                    .campaign
                    .lead(&lead)
                    .is_some_and(|l| l.status == LeadStatus::InProgress);
                if dialling {
                    // The agent was quicker than the attempt's end: apply it once that is recorded.
                    self.deferred.insert(lead, (agent, wish));
                } else {
                    self.wrapped_up(&lead, &agent, wish, now);
                }
            }
        }
    }

    /// Carries out a campaign call's wrap-up: do not call again (the number joins the do-not-call
    /// list and the lead is closed), or a callback at the agent's time.
    fn wrapped_up(&mut self, lead: &LeadId, agent: &AgentId, wish: WrapUpWish, now: Timestamp) {
        if wish.do_not_call {
            if self.campaign.mark_do_not_call(lead).is_err() {
                return;
            }
            if let Some(number) = self.campaign.lead(lead).map(|l| l.phone.clone()) {
                self.commands.push_back(Command::Save(Save::DoNotCall {
                    number,
                    agent: agent.clone(),
                    at: now,
                }));
                self.save_lead(lead, None, None);
            }
            return;
        }
        let Some((at, personal)) = wish.callback else {
            return;
        };
        let personal = personal.then(|| agent.clone());
        if self.campaign.schedule_callback(lead, at, personal).is_ok() {
            self.save_lead(lead, None, None);
        }
    }

    // ----- previews -----

    /// The agents looking at a lead.
    pub fn previewing_agents(&self) -> impl Iterator<Item = &AgentId> {
        self.previews.keys()
    }

    pub fn is_previewing(&self, agent: &AgentId) -> bool {
        self.previews.contains_key(agent)
    }

    /// Whether free agents should be shown leads now.
    pub fn previews_wanted(&self) -> bool {
        self.campaign.state() == CampaignState::Running && self.active < self.settings.max_lines
    }

    /// The next lead for `agent` to look at, reserved for them.
    pub fn reserve_preview(
        &mut self,
        now: Timestamp,
        dnc: &dyn DoNotCall,
        agent: &AgentId,
    ) -> Option<DialRequest> {
        let request = self.campaign.reserve_for(now, dnc, agent);
        self.save_blocked();
        request
    }

    /// The reserved lead could not be shown (the agent was offered a call meanwhile): it stays for
    /// someone else.
    pub fn unreserve(&mut self, now: Timestamp, lead: &LeadId) {
        let _ = self.campaign.release(lead, now);
    }

    /// The agent looks at the reserved lead now.
    pub fn previewing(&mut self, agent: AgentId, request: DialRequest) {
        let starts = self.preview_starts.entry(agent.clone()).or_default();
        starts.asked += 1;
        let start = starts.asked;
        self.previews.insert(
            agent,
            Previewed {
                lead: request.lead,
                phone: request.phone,
                attempt: request.attempt,
                start,
            },
        );
    }

    /// Takes a preview back from the agent: the lead is offered again at once.
    pub fn end_preview(&mut self, agent: &AgentId, now: Timestamp, reason: &str) {
        if let Some(p) = self.previews.remove(agent) {
            let _ = self.campaign.release(&p.lead, now);
            self.commands.push_back(Command::EndPreview {
                agent: agent.clone(),
                reason: Some(reason.to_string()),
            });
        }
    }

    /// Some agent changes were missed: every preview is taken as begun, so the next change of its
    /// agent that is not previewing ends it.
    pub fn agent_changes_missed(&mut self) {
        for (agent, p) in &self.previews {
            let starts = self.preview_starts.entry(agent.clone()).or_default();
            starts.heard = starts.heard.max(p.start);
        }
    }

    /// A campaign not running takes every preview back.
    pub fn end_previews_unless_running(&mut self, now: Timestamp) {
        if self.campaign.state() != CampaignState::Running {
            let all: Vec<AgentId> = self.previews.keys().cloned().collect();
            for agent in all {
                self.end_preview(&agent, now, "the campaign is not running");
            }
        }
    }

    /// The agent decides on `lead`: the preview, if it is the one they are shown.
    pub fn take_preview(&mut self, agent: &AgentId, lead: &LeadId) -> Option<Previewed> {
        if self.previews.get(agent).is_some_and(|p| &p.lead == lead) {
            self.previews.remove(agent)
        } else {
            None
        }
    }

    /// The agent skipped the lead: it comes back after the skip time.
    pub fn skip(&mut self, now: Timestamp, agent: &AgentId, p: &Previewed) {
        let _ = self.campaign.release(&p.lead, now + self.settings.preview_skip);
        self.save_lead(&p.lead, None, None);
        self.commands.push_back(Command::EndPreview {
            agent: agent.clone(),
            reason: None,
        });
    }

    /// The number went on the do-not-call list while the agent looked: the lead is closed.
    pub fn listed_meanwhile(&mut self, now: Timestamp, agent: &AgentId, p: &Previewed) {
        let _ = self.campaign.release(&p.lead, now);
        let _ = self.campaign.mark_do_not_call(&p.lead);
        self.save_lead(&p.lead, None, None);
        self.commands.push_back(Command::EndPreview {
            agent: agent.clone(),
            reason: Some("the number is on the do-not-call list".into()),
        });
    }

    /// The lead's number cannot be dialled at all: it comes back after the skip time.
    pub fn undiallable(&mut self, now: Timestamp, agent: &AgentId, p: &Previewed) {
        let _ = self.campaign.release(&p.lead, now + self.settings.preview_skip);
        self.commands.push_back(Command::EndPreview {
            agent: agent.clone(),
            reason: Some("the number cannot be dialled".into()),
        });
    }

    /// The agent keeps looking (the dial could not be checked; they may try again).
    pub fn keep_preview(&mut self, agent: AgentId, p: Previewed) {
        self.previews.insert(agent, p);
    }

    /// The wallboard's figures at `now`.
    pub fn stats(&mut self, now: Timestamp) -> DriverStats {
        DriverStats {
            state: self.campaign.state(),
            counts: self.counts,
            abandon_rate: self.ledger.rate(now),
            dial_level: self.dial_level,
            lines_active: self.active,
            calls_waiting: u32::try_from(self.waiting.len()).unwrap_or(u32::MAX),
            leads: self.campaign.stats(),
        }
    }
}
