//! Campaign and lead logic, pure: which lead to dial next and when, given the calling window in the lead's
//! own time zone (daylight saving included), the do-not-call list checked at dial time, retries by
//! disposition with delays and a maximum number of attempts, callbacks scheduled by agents, the UK block on
//! re-dialling an abandoned number, and the pause / resume / stop state of the campaign.
//!
//! Leads are held in memory in insertion order; the owner loads them from the CRM store and writes every
//! attempt and result back (the audit trail lives there, not here). A lead's [`LeadProgress`] (attempt
//! counts, next attempt, last abandonment, callback, status) is what the owner saves, and
//! [`Campaign::restore_lead`] takes it back after a restart so each lead continues where it stopped.
//!
//! Preview campaigns reserve a lead for one agent ([`Campaign::reserve_for`]) without counting an
//! attempt; the agent's decision either confirms the dial ([`Campaign::confirm_dial`]) or gives the
//! lead back ([`Campaign::release`]).

use crate::compliance::ComplianceRules;
use domain::{AgentId, CampaignId, LeadId, Pii, Timestamp};
use jiff::civil;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// How a campaign reaches people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignMode {
    /// The agent sees the record first, then dials.
    Preview,
    /// One call per free agent.
    Progressive,
    /// Dials ahead of free agents (pacing policy).
    Predictive,
    /// Plays a recorded message; no agents.
    Agentless,
}

/// Whether the campaign dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CampaignState {
    Running,
    Paused,
    /// Final: a stopped campaign never dials again.
    Stopped,
}

/// Local hours in which a lead may be called (US: 8:00 to 21:00 in the called party's time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallingWindow {
    start: civil::Time,
    end: civil::Time,
}

/// Why a campaign operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CampaignError {
    #[error("calling window must start before it ends")]
    EmptyWindow,
    #[error("hour {0}:{1:02} is not a time of day")]
    BadTime(u8, u8),
    #[error("unknown time zone {0:?}")]
    UnknownTimeZone(String),
    #[error("no time zone given and none can be derived from the number")]
    NoTimeZone,
    #[error("lead already in the campaign")]
    DuplicateLead,
    #[error("no such lead in the campaign")]
    UnknownLead,
    #[error("lead is not being dialled")]
    NotInProgress,
    #[error("campaign is {0:?}; cannot {1}")]
    BadTransition(CampaignState, &'static str),
}

impl CallingWindow {
    /// A window from `start` to `end` (hour, minute), local time; `end` is exclusive.
    pub fn new(start: (u8, u8), end: (u8, u8)) -> Result<Self, CampaignError> {
        let time = |(h, m): (u8, u8)| {
            civil::Time::new(h as i8, m as i8, 0, 0).map_err(|_| CampaignError::BadTime(h, m))
        };
        let (start, end) = (time(start)?, time(end)?);
        if start >= end {
            return Err(CampaignError::EmptyWindow);
        }
        Ok(Self { start, end })
    }

    /// The US default, 8:00 to 21:00.
    pub fn us_default() -> Self {
        Self {
            start: civil::Time::constant(8, 0, 0, 0),
            end: civil::Time::constant(21, 0, 0, 0),
        }
    }

    /// Whether `now` is inside the window in `zone`.
    pub fn allows(&self, zone: &TimeZone, now: Timestamp) -> bool {
        let Ok(ts) = jiff::Timestamp::from_millisecond(now.as_millis()) else {
            return false;
        };
        let local = ts.to_zoned(zone.clone()).time();
        self.start <= local && local < self.end
    }

    /// The first instant at or after `now` inside the window in `zone` (`now` itself if it is open).
    pub fn next_open(&self, zone: &TimeZone, now: Timestamp) -> Option<Timestamp> {
        if self.allows(zone, now) {
            return Some(now);
        }
        let ts = jiff::Timestamp::from_millisecond(now.as_millis()).ok()?;
        let local = ts.to_zoned(zone.clone());
        let mut date = local.date();
        if local.time() >= self.end {
            date = date.tomorrow().ok()?;
        }
        // Try a few days: a window that starts inside a daylight-saving gap opens at the gap's end.
        for _ in 0..3 {
            let opening = date.to_datetime(self.start).to_zoned(zone.clone()).ok()?;
            let at = Timestamp::from_millis(opening.timestamp().as_millisecond());
            if at >= now && self.allows(zone, at) {
                return Some(at);
            }
            date = date.tomorrow().ok()?;
        }
        None
    }
}

/// A time zone by IANA name ("America/New_York").
pub fn zone_by_name(name: &str) -> Result<TimeZone, CampaignError> {
    TimeZone::get(name).map_err(|_| CampaignError::UnknownTimeZone(name.chars().take(64).collect()))
}

/// Prefixes of E.164 numbers (without '+') whose whole area is in one time zone. North American area
/// codes first (longest prefix wins), then single-zone countries. Numbers not covered need an explicit zone.
const ZONE_PREFIXES: &[(&str, &str)] = &[
    ("1201", "America/New_York"),
    ("1202", "America/New_York"),
    ("1212", "America/New_York"),
    ("1305", "America/New_York"),
    ("1404", "America/New_York"),
    ("1617", "America/New_York"),
    ("1646", "America/New_York"),
    ("1718", "America/New_York"),
    ("1917", "America/New_York"),
    ("1214", "America/Chicago"),
    ("1312", "America/Chicago"),
    ("1512", "America/Chicago"),
    ("1713", "America/Chicago"),
    ("1773", "America/Chicago"),
    ("1303", "America/Denver"),
    ("1720", "America/Denver"),
    ("1602", "America/Phoenix"),
    ("1480", "America/Phoenix"),
    ("1206", "America/Los_Angeles"),
    ("1213", "America/Los_Angeles"),
    ("1310", "America/Los_Angeles"),
    ("1415", "America/Los_Angeles"),
    ("1503", "America/Los_Angeles"),
    ("1702", "America/Los_Angeles"),
    ("1907", "America/Anchorage"),
    ("1808", "Pacific/Honolulu"),
    ("1416", "America/Toronto"),
    ("1514", "America/Toronto"),
    ("1604", "America/Vancouver"),
    ("44", "Europe/London"),
    ("353", "Europe/Dublin"),
    ("351", "Europe/Lisbon"),
    ("33", "Europe/Paris"),
    ("49", "Europe/Berlin"),
    ("39", "Europe/Rome"),
    ("31", "Europe/Amsterdam"),
    ("32", "Europe/Brussels"),
    ("41", "Europe/Zurich"),
    ("43", "Europe/Vienna"),
    ("45", "Europe/Copenhagen"),
    ("46", "Europe/Stockholm"),
    ("47", "Europe/Oslo"),
    ("48", "Europe/Warsaw"),
    ("81", "Asia/Tokyo"),
    ("82", "Asia/Seoul"),
    ("86", "Asia/Shanghai"),
    ("852", "Asia/Hong_Kong"),
    ("65", "Asia/Singapore"),
    ("91", "Asia/Kolkata"),
    ("27", "Africa/Johannesburg"),
];

/// The time zone of an E.164 number ("+14155550100"), when its prefix covers a single zone.
pub fn zone_for_number(number: &Pii<String>) -> Option<TimeZone> {
    let digits = number.expose().strip_prefix('+')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    ZONE_PREFIXES
        .iter()
        .filter(|(prefix, _)| digits.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .and_then(|(_, name)| TimeZone::get(name).ok())
}

/// The do-not-call list (national registry and the company's own), checked at dial time.
pub trait DoNotCall {
    /// Whether the number must not be called.
    fn blocks(&self, number: &Pii<String>) -> bool;
}

/// A set of E.164 numbers.
impl DoNotCall for HashSet<String> {
    fn blocks(&self, number: &Pii<String>) -> bool {
        self.contains(number.expose())
    }
}

/// How an attempt ended, as the dialer or the agent records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    Busy,
    NoAnswer,
    Machine,
    /// A person got no agent in time (the identification message was played).
    Abandoned,
    /// A person talked to an agent; the lead is done unless the agent schedules a callback.
    Completed,
    /// Network or number failure.
    Failed,
    /// The person asked not to be called again.
    DoNotCallRequest,
}

/// When to try a lead again after a given disposition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryRule {
    pub delay_secs: u64,
    /// Attempts ending with this disposition after which the lead is not retried for it.
    pub max_attempts: u32,
}

/// Retry rules per disposition and the overall cap on attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    pub busy: RetryRule,
    pub no_answer: RetryRule,
    pub machine: RetryRule,
    pub abandoned: RetryRule,
    pub failed: RetryRule,
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            busy: RetryRule {
                delay_secs: 15 * 60,
                max_attempts: 5,
            },
            no_answer: RetryRule {
                delay_secs: 2 * 3600,
                max_attempts: 4,
            },
            machine: RetryRule {
                delay_secs: 4 * 3600,
                max_attempts: 3,
            },
            abandoned: RetryRule {
                delay_secs: 3600,
                max_attempts: 2,
            },
            failed: RetryRule {
                delay_secs: 3600,
                max_attempts: 2,
            },
            max_attempts: 8,
        }
    }
}

/// Where a lead stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadStatus {
    /// Waiting for its next attempt.
    Pending,
    /// Being dialled now.
    InProgress,
    /// Reached, or asked not to be called: finished.
    Done,
    /// On the do-not-call list at dial time.
    Blocked,
    /// Out of attempts.
    Exhausted,
}

/// A callback an agent promised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Callback {
    pub at: Timestamp,
    /// The agent who should take it, if it is personal.
    pub agent: Option<AgentId>,
}

/// A lead to add: the CRM import hands these over.
#[derive(Debug, Clone)]
pub struct NewLead {
    pub id: LeadId,
    pub phone: Pii<String>,
    /// IANA zone from an explicit column; otherwise derived from the number.
    pub time_zone: Option<String>,
}

/// Where a lead stands, as the owner saves it and gives it back after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadProgress {
    pub status: LeadStatus,
    /// Attempts made, the one under way (if any) included.
    pub attempts: u32,
    /// Finished attempts by how they ended (what the retry rules count).
    pub attempts_by: HashMap<Disposition, u32>,
    /// When a pending lead may be tried next (`None`: at once).
    pub next_attempt_at: Option<Timestamp>,
    /// The last time the lead was abandoned (the UK re-dial block counts from it).
    pub last_abandoned_at: Option<Timestamp>,
    pub callback: Option<Callback>,
}

impl Default for LeadProgress {
    /// A lead never tried.
    fn default() -> Self {
        Self {
            status: LeadStatus::Pending,
            attempts: 0,
            attempts_by: HashMap::new(),
            next_attempt_at: None,
            last_abandoned_at: None,
            callback: None,
        }
    }
}

/// One lead of a campaign.
#[derive(Debug, Clone)]
pub struct Lead {
    pub id: LeadId,
    pub phone: Pii<String>,
    pub zone: TimeZone,
    pub status: LeadStatus,
    pub attempts: u32,
    pub attempts_by: HashMap<Disposition, u32>,
    pub next_attempt_at: Timestamp,
    pub last_abandoned_at: Option<Timestamp>,
    pub callback: Option<Callback>,
}

impl Lead {
    /// What the owner saves to continue this lead after a restart.
    pub fn progress(&self) -> LeadProgress {
        LeadProgress {
            status: self.status,
            attempts: self.attempts,
            attempts_by: self.attempts_by.clone(),
            next_attempt_at: Some(self.next_attempt_at),
            last_abandoned_at: self.last_abandoned_at,
            callback: self.callback.clone(),
        }
    }
}

/// What the dialer should call now.
#[derive(Debug, Clone, PartialEq)]
pub struct DialRequest {
    pub lead: LeadId,
    pub phone: Pii<String>,
    /// Set for a personal callback: offer the answered call to this agent.
    pub agent: Option<AgentId>,
    pub attempt: u32,
}

/// Counts of leads by status and attempts made, for the wallboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct CampaignStats {
    pub pending: usize,
    pub in_progress: usize,
    pub done: usize,
    pub blocked: usize,
    pub exhausted: usize,
    pub attempts: u64,
    pub callbacks_scheduled: usize,
}

/// A campaign: settings, state and leads.
#[derive(Debug, Clone)]
pub struct Campaign {
    pub id: CampaignId,
    pub mode: CampaignMode,
    state: CampaignState,
    window: CallingWindow,
    retry: RetryPolicy,
    rules: ComplianceRules,
    leads: Vec<Lead>,
    index: HashMap<LeadId, usize>,
    /// Leads found on the do-not-call list since the owner last asked ([`Campaign::take_blocked`]).
    newly_blocked: Vec<LeadId>,
    /// Leads held for a preview agent: in progress, but no attempt counted yet.
    reserved: HashSet<LeadId>,
}

impl Campaign {
    pub fn new(
        id: CampaignId,
        mode: CampaignMode,
        window: CallingWindow,
        retry: RetryPolicy,
        rules: ComplianceRules,
    ) -> Self {
        Self {
            id,
            mode,
            state: CampaignState::Paused,
            window,
            retry,
            rules,
            leads: Vec::new(),
            index: HashMap::new(),
            newly_blocked: Vec::new(),
            reserved: HashSet::new(),
        }
    }

    pub fn state(&self) -> CampaignState {
        self.state
    }

    /// Starts or resumes dialling.
    pub fn resume(&mut self) -> Result<(), CampaignError> {
        match self.state {
            CampaignState::Stopped => Err(CampaignError::BadTransition(self.state, "resume")),
            _ => {
                self.state = CampaignState::Running;
                Ok(())
            }
        }
    }

    /// Stops placing new calls; calls in progress finish.
    pub fn pause(&mut self) -> Result<(), CampaignError> {
        match self.state {
            CampaignState::Stopped => Err(CampaignError::BadTransition(self.state, "pause")),
            _ => {
                self.state = CampaignState::Paused;
                Ok(())
            }
        }
    }

    /// Ends the campaign for good.
    pub fn stop(&mut self) {
        self.state = CampaignState::Stopped;
    }

    /// Adds a lead, resolving its time zone from the explicit column or the number.
    pub fn add_lead(&mut self, lead: NewLead, now: Timestamp) -> Result<(), CampaignError> {
        self.restore_lead(lead, LeadProgress::default(), now).map(|_| ())
    }

    /// Adds a lead with the progress saved for it (after a restart). A lead saved while it was being
    /// dialled lost that attempt with the process: the attempt counts, as failed, and the retry rules
    /// decide what comes next. Returns the lead's status.
    pub fn restore_lead(
        &mut self,
        lead: NewLead,
        progress: LeadProgress,
        now: Timestamp,
    ) -> Result<LeadStatus, CampaignError> {
        if self.index.contains_key(&lead.id) {
            return Err(CampaignError::DuplicateLead);
        }
        let zone = match &lead.time_zone {
            Some(name) => zone_by_name(name)?,
            None => zone_for_number(&lead.phone).ok_or(CampaignError::NoTimeZone)?,
        };
        let id = lead.id.clone();
        let interrupted = progress.status == LeadStatus::InProgress;
        self.index.insert(lead.id.clone(), self.leads.len());
        self.leads.push(Lead {
            id: lead.id,
            phone: lead.phone,
            zone,
            status: progress.status,
            // The interrupted attempt was counted when it was placed; a save that missed it still
            // counts one.
            attempts: if interrupted {
                progress.attempts.max(1)
            } else {
                progress.attempts
            },
            attempts_by: progress.attempts_by,
            next_attempt_at: progress.next_attempt_at.unwrap_or(now),
            last_abandoned_at: progress.last_abandoned_at,
            callback: progress.callback,
        });
        if interrupted {
            return self.record_result(&id, Disposition::Failed, now);
        }
        Ok(progress.status)
    }

    /// A lead by id.
    pub fn lead(&self, id: &LeadId) -> Option<&Lead> {
        self.index.get(id).and_then(|&i| self.leads.get(i))
    }

    fn lead_mut(&mut self, id: &LeadId) -> Result<&mut Lead, CampaignError> {
        let i = *self.index.get(id).ok_or(CampaignError::UnknownLead)?;
        self.leads.get_mut(i).ok_or(CampaignError::UnknownLead)
    }

    /// The next lead to dial at `now`, if any: due callbacks first (earliest first), then pending leads in
    /// list order. Checks the calling window, the UK re-dial block and the do-not-call list (a listed lead is
    /// marked blocked). The returned lead is marked in progress and its attempt counted.
    pub fn next_to_dial(&mut self, now: Timestamp, dnc: &dyn DoNotCall) -> Option<DialRequest> {
        self.next_to_dial_when(now, dnc, &|_| true)
    }

    /// As [`Campaign::next_to_dial`], but a personal callback is only dialled while `ready` says its
    /// agent can take it (a person must not wait for an agent who is busy).
    pub fn next_to_dial_when(
        &mut self,
        now: Timestamp,
        dnc: &dyn DoNotCall,
        ready: &dyn Fn(&AgentId) -> bool,
    ) -> Option<DialRequest> {
        let i = self.select(now, dnc, ready)?;
        let lead = self.leads.get_mut(i)?;
        lead.status = LeadStatus::InProgress;
        lead.attempts += 1;
        let agent = lead.callback.take().and_then(|c| c.agent);
        Some(DialRequest {
            lead: lead.id.clone(),
            phone: lead.phone.clone(),
            agent,
            attempt: lead.attempts,
        })
    }

    /// Preview: the next lead for `agent` to look at (the same order and checks as
    /// [`Campaign::next_to_dial`]; personal callbacks only for their own agent). The lead is held in
    /// progress for the agent, but no attempt is counted until [`Campaign::confirm_dial`].
    pub fn reserve_for(
        &mut self,
        now: Timestamp,
        dnc: &dyn DoNotCall,
        agent: &AgentId,
    ) -> Option<DialRequest> {
        let i = self.select(now, dnc, &|a| a == agent)?;
        let lead = self.leads.get_mut(i)?;
        lead.status = LeadStatus::InProgress;
        let request = DialRequest {
            lead: lead.id.clone(),
            phone: lead.phone.clone(),
            agent: Some(agent.clone()),
            attempt: lead.attempts + 1,
        };
        self.reserved.insert(request.lead.clone());
        Some(request)
    }

    /// Preview: the agent dials the reserved lead; its attempt is counted. Returns the attempt number.
    pub fn confirm_dial(&mut self, lead: &LeadId) -> Result<u32, CampaignError> {
        if !self.reserved.remove(lead) {
            return Err(CampaignError::NotInProgress);
        }
        let lead = self.lead_mut(lead)?;
        lead.attempts += 1;
        lead.callback = None;
        Ok(lead.attempts)
    }

    /// Preview: the reserved lead goes back, uncounted, to be tried again from `next_attempt_at` (the
    /// agent skipped it, or the preview lapsed).
    pub fn release(&mut self, lead: &LeadId, next_attempt_at: Timestamp) -> Result<(), CampaignError> {
        if !self.reserved.remove(lead) {
            return Err(CampaignError::NotInProgress);
        }
        let lead = self.lead_mut(lead)?;
        lead.status = LeadStatus::Pending;
        match lead.callback.as_mut() {
            Some(callback) => callback.at = callback.at.max(next_attempt_at),
            None => lead.next_attempt_at = next_attempt_at,
        }
        Ok(())
    }

    /// The called person asked not to be called again: the lead is closed as on the do-not-call list
    /// (a callback is dropped). Any status; the owner adds the number to its list.
    pub fn mark_do_not_call(&mut self, lead: &LeadId) -> Result<(), CampaignError> {
        self.reserved.remove(lead);
        let lead = self.lead_mut(lead)?;
        lead.status = LeadStatus::Blocked;
        lead.callback = None;
        Ok(())
    }

    /// Leads found on the do-not-call list at dial time since the last call (for the owner to store).
    pub fn take_blocked(&mut self) -> Vec<LeadId> {
        std::mem::take(&mut self.newly_blocked)
    }

    /// Index of the lead to dial now, blocking listed leads on the way.
    fn select(
        &mut self,
        now: Timestamp,
        dnc: &dyn DoNotCall,
        ready: &dyn Fn(&AgentId) -> bool,
    ) -> Option<usize> {
        if self.state != CampaignState::Running {
            return None;
        }
        // Each pass either returns or blocks one more lead, so this ends; the scan of pending leads goes on
        // from the last blocked one instead of starting over.
        let (mut from, mut callbacks_left) = (0, true);
        loop {
            let (i, is_callback) = self.pick(now, from, callbacks_left, ready)?;
            if !is_callback {
                // No due callback was eligible; blocking pending leads does not change that.
                callbacks_left = false;
                from = i;
            }
            let lead = self.leads.get_mut(i)?;
            if dnc.blocks(&lead.phone) {
                lead.status = LeadStatus::Blocked;
                lead.callback = None;
                self.newly_blocked.push(lead.id.clone());
                continue;
            }
            return Some(i);
        }
    }

    /// Index of the lead to try next, and whether it is a callback: the earliest due callback (if
    /// `callbacks`) whose agent, if personal, is `ready`, else the first due pending lead at or after
    /// `from`.
    fn pick(
        &self,
        now: Timestamp,
        from: usize,
        callbacks: bool,
        ready: &dyn Fn(&AgentId) -> bool,
    ) -> Option<(usize, bool)> {
        let eligible = |lead: &Lead| {
            lead.status == LeadStatus::Pending
                && self.window.allows(&lead.zone, now)
                && self.rules.may_redial(lead.last_abandoned_at, now)
        };
        let callback = self
            .leads
            .iter()
            .enumerate()
            .filter(|_| callbacks)
            .filter(|(_, l)| {
                l.callback
                    .as_ref()
                    .is_some_and(|c| c.at <= now && c.agent.as_ref().is_none_or(ready))
                    && eligible(l)
            })
            .min_by_key(|(_, l)| l.callback.as_ref().map(|c| c.at))
            .map(|(i, _)| (i, true));
        callback.or_else(|| {
            let mut pending = self.leads.iter().enumerate().skip(from);
            pending
                .find(|(_, l)| l.callback.is_none() && l.next_attempt_at <= now && eligible(l))
                .map(|(i, _)| (i, false))
        })
    }

    /// Records how the current attempt of `lead` ended and schedules the next one, if any.
    pub fn record_result(
        &mut self,
        lead: &LeadId,
        disposition: Disposition,
        now: Timestamp,
    ) -> Result<LeadStatus, CampaignError> {
        let retry = self.retry.clone();
        if self.reserved.contains(lead) {
            // Reserved for a preview, never dialled: nothing to record.
            return Err(CampaignError::NotInProgress);
        }
        let lead = self.lead_mut(lead)?;
        if lead.status != LeadStatus::InProgress {
            return Err(CampaignError::NotInProgress);
        }
        let count = {
            let c = lead.attempts_by.entry(disposition).or_insert(0);
            *c += 1;
            *c
        };
        if disposition == Disposition::Abandoned {
            lead.last_abandoned_at = Some(now);
        }
        let rule = match disposition {
            Disposition::Busy => Some(retry.busy),
            Disposition::NoAnswer => Some(retry.no_answer),
            Disposition::Machine => Some(retry.machine),
            Disposition::Abandoned => Some(retry.abandoned),
            Disposition::Failed => Some(retry.failed),
            Disposition::Completed | Disposition::DoNotCallRequest => None,
        };
        lead.status = match rule {
            None => LeadStatus::Done,
            Some(rule) if count >= rule.max_attempts || lead.attempts >= retry.max_attempts => {
                LeadStatus::Exhausted
            }
            Some(rule) => {
                lead.next_attempt_at = now + Duration::from_secs(rule.delay_secs);
                LeadStatus::Pending
            }
        };
        Ok(lead.status)
    }

    /// An agent promises to call back at `at` (personally if `agent` is set). Reopens a finished lead.
    pub fn schedule_callback(
        &mut self,
        lead: &LeadId,
        at: Timestamp,
        agent: Option<AgentId>,
    ) -> Result<(), CampaignError> {
        let lead = self.lead_mut(lead)?;
        if lead.status == LeadStatus::Blocked {
            return Err(CampaignError::UnknownLead);
        }
        lead.callback = Some(Callback { at, agent });
        if lead.status != LeadStatus::InProgress {
            lead.status = LeadStatus::Pending;
        }
        Ok(())
    }

    /// Counts for the wallboard.
    pub fn stats(&self) -> CampaignStats {
        let mut s = CampaignStats::default();
        for lead in &self.leads {
            match lead.status {
                LeadStatus::Pending => s.pending += 1,
                LeadStatus::InProgress => s.in_progress += 1,
                LeadStatus::Done => s.done += 1,
                LeadStatus::Blocked => s.blocked += 1,
                LeadStatus::Exhausted => s.exhausted += 1,
            }
            s.attempts += u64::from(lead.attempts);
            if lead.callback.is_some() {
                s.callbacks_scheduled += 1;
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// 2026-07-01 12:00 UTC = 08:00 in New York (EDT, UTC-4), 05:00 in Los Angeles.
    const JULY_NOON_UTC: i64 = 1_782_907_200_000;
    /// 2026-01-15 12:00 UTC = 07:00 in New York (EST, UTC-5).
    const JANUARY_NOON_UTC: i64 = 1_768_478_400_000;

    fn lead(id: &str, phone: &str, zone: Option<&str>) -> NewLead {
        NewLead {
            id: LeadId::new(id).unwrap(),
            phone: Pii::new(phone.to_string()),
            time_zone: zone.map(str::to_string),
        }
    }

    fn campaign() -> Campaign {
        let mut c = Campaign::new(
            CampaignId::new("c1").unwrap(),
            CampaignMode::Predictive,
            CallingWindow::us_default(),
            RetryPolicy::default(),
            ComplianceRules::uk(0.0),
        );
        c.resume().unwrap();
        c
    }

    #[test]
    fn calling_window_follows_daylight_saving() {
        let window = CallingWindow::us_default();
        let ny = zone_by_name("America/New_York").unwrap();
        // Same UTC wall time: 08:00 local in summer (open), 07:00 in winter (closed).
        assert!(window.allows(&ny, Timestamp::from_millis(JULY_NOON_UTC)));
        assert!(!window.allows(&ny, Timestamp::from_millis(JANUARY_NOON_UTC)));
        // In winter it opens an hour later: 13:00 UTC.
        let opens = window
            .next_open(&ny, Timestamp::from_millis(JANUARY_NOON_UTC))
            .unwrap();
        assert_eq!(opens.as_millis(), JANUARY_NOON_UTC + 3_600_000);
        let phoenix = zone_for_number(&Pii::new("+16025550100".to_string())).unwrap();
        assert_eq!(phoenix.iana_name(), Some("America/Phoenix"));
        assert!(zone_for_number(&Pii::new("+15555550100".to_string())).is_none());
        assert!(zone_for_number(&Pii::new("no number".to_string())).is_none());
    }

    #[test]
    fn leads_are_dialled_in_their_window_and_dnc_is_checked_at_dial_time() {
        let mut c = campaign();
        let now = Timestamp::from_millis(JULY_NOON_UTC);
        c.add_lead(lead("la", "+12135550100", None), now).unwrap();
        c.add_lead(lead("ny1", "+12125550100", None), now).unwrap();
        c.add_lead(lead("ny2", "+12125550199", Some("America/New_York")), now)
            .unwrap();
        assert_eq!(
            c.add_lead(lead("x", "+15555550100", None), now),
            Err(CampaignError::NoTimeZone)
        );
        assert_eq!(
            c.add_lead(lead("la", "+12135550100", None), now),
            Err(CampaignError::DuplicateLead)
        );
        let dnc: HashSet<String> = ["+12125550100".to_string()].into();
        // LA is at 05:00: skipped. ny1 is on the DNC list: blocked. ny2 is dialled.
        let dial = c.next_to_dial(now, &dnc).unwrap();
        assert_eq!(dial.lead.as_str(), "ny2");
        assert_eq!(
            c.lead(&LeadId::new("ny1").unwrap()).unwrap().status,
            LeadStatus::Blocked
        );
        assert!(c.next_to_dial(now, &dnc).is_none());
        // Paused campaigns dial nothing.
        c.pause().unwrap();
        assert!(
            c.next_to_dial(now + Duration::from_secs(4 * 3600), &dnc)
                .is_none()
        );
        c.stop();
        assert!(c.resume().is_err());
    }

    #[test]
    fn retries_follow_disposition_rules_and_uk_blocks_redial_after_abandon() {
        let mut c = campaign();
        let now = Timestamp::from_millis(JULY_NOON_UTC + 3 * 3_600_000);
        c.add_lead(lead("a", "+442071234567", None), now).unwrap();
        let none: HashSet<String> = HashSet::new();
        let id = LeadId::new("a").unwrap();
        c.next_to_dial(now, &none).unwrap();
        assert_eq!(
            c.record_result(&id, Disposition::Busy, now),
            Ok(LeadStatus::Pending)
        );
        assert!(
            c.next_to_dial(now + Duration::from_secs(60), &none).is_none(),
            "busy retry waits 15 min"
        );
        let later = now + Duration::from_secs(15 * 60);
        assert_eq!(c.next_to_dial(later, &none).unwrap().attempt, 2);
        assert_eq!(
            c.record_result(&id, Disposition::Abandoned, later),
            Ok(LeadStatus::Pending)
        );
        // The retry delay (1 h) has passed but the UK 72-hour block has not.
        assert!(
            c.next_to_dial(later + Duration::from_secs(2 * 3600), &none)
                .is_none()
        );
        let after_block = later + Duration::from_secs(72 * 3600);
        let at = c
            .window
            .next_open(&c.lead(&id).unwrap().zone, after_block)
            .unwrap();
        assert!(c.next_to_dial(at, &none).is_some());
        assert_eq!(
            c.record_result(&id, Disposition::Abandoned, at),
            Ok(LeadStatus::Exhausted)
        );
        assert_eq!(
            c.record_result(&id, Disposition::Busy, at),
            Err(CampaignError::NotInProgress)
        );
    }

    #[test]
    fn a_long_run_of_blocked_numbers_is_skipped_in_one_call() {
        let mut c = campaign();
        let now = Timestamp::from_millis(JULY_NOON_UTC + 3_600_000);
        let mut dnc = HashSet::new();
        for i in 0..3000 {
            let phone = format!("+1212555{i:04}");
            dnc.insert(phone.clone());
            c.add_lead(lead(&format!("l{i}"), &phone, None), now).unwrap();
        }
        c.add_lead(lead("ok", "+12129990000", None), now).unwrap();
        assert_eq!(c.next_to_dial(now, &dnc).unwrap().lead.as_str(), "ok");
        assert_eq!(c.stats().blocked, 3000);
    }

    #[test]
    fn callbacks_come_first_and_carry_the_agent() {
        let mut c = campaign();
        let now = Timestamp::from_millis(JULY_NOON_UTC + 3_600_000);
        c.add_lead(lead("first", "+12125550001", None), now).unwrap();
        c.add_lead(lead("second", "+12125550002", None), now).unwrap();
        let none: HashSet<String> = HashSet::new();
        let second = LeadId::new("second").unwrap();
        let agent = AgentId::new("alice").unwrap();
        c.schedule_callback(&second, now + Duration::from_secs(600), Some(agent.clone()))
            .unwrap();
        assert_eq!(c.next_to_dial(now, &none).unwrap().lead.as_str(), "first");
        let dial = c.next_to_dial(now + Duration::from_secs(600), &none).unwrap();
        assert_eq!(dial.lead, second);
        assert_eq!(dial.agent, Some(agent));
        assert_eq!(
            c.record_result(&second, Disposition::Completed, now),
            Ok(LeadStatus::Done)
        );
        let stats = c.stats();
        assert_eq!((stats.done, stats.in_progress, stats.attempts), (1, 1, 2));
    }

    fn progress(status: LeadStatus, attempts: u32, by: &[(Disposition, u32)]) -> LeadProgress {
        LeadProgress {
            status,
            attempts,
            attempts_by: by.iter().copied().collect(),
            ..LeadProgress::default()
        }
    }

    #[test]
    fn restored_leads_continue_with_their_counts_delays_and_blocks() {
        let mut c = campaign();
        let now = Timestamp::from_millis(JULY_NOON_UTC + 3 * 3_600_000);
        let none: HashSet<String> = HashSet::new();
        let later = now + Duration::from_secs(600);
        // Busy once, retry due in 10 minutes; busy allows 5, the campaign 8 in all.
        let busy = LeadProgress {
            next_attempt_at: Some(later),
            ..progress(LeadStatus::Pending, 1, &[(Disposition::Busy, 1)])
        };
        assert_eq!(
            c.restore_lead(lead("busy", "+12125550001", None), busy, now),
            Ok(LeadStatus::Pending)
        );
        // Abandoned an hour ago under UK rules: the 72 h block holds after the restart.
        let dropped = LeadProgress {
            last_abandoned_at: Some(now - Duration::from_secs(3600)),
            ..progress(LeadStatus::Pending, 1, &[(Disposition::Abandoned, 1)])
        };
        c.restore_lead(lead("dropped", "+12125550002", None), dropped, now)
            .unwrap();
        for (id, status) in [
            ("done", LeadStatus::Done),
            ("out", LeadStatus::Exhausted),
            ("dnc", LeadStatus::Blocked),
        ] {
            c.restore_lead(lead(id, "+12125550003", None), progress(status, 3, &[]), now)
                .unwrap();
        }
        // Being dialled when the node died, with one failure already: the lost attempt counts as
        // the second failure, which is the last the rules allow.
        let cut = progress(LeadStatus::InProgress, 2, &[(Disposition::Failed, 1)]);
        assert_eq!(
            c.restore_lead(lead("cut", "+12125550004", None), cut, now),
            Ok(LeadStatus::Exhausted)
        );
        // Cut off on its first attempt: retried after the failure delay, counted.
        let first = progress(LeadStatus::InProgress, 1, &[]);
        assert_eq!(
            c.restore_lead(lead("first", "+12125550005", None), first, now),
            Ok(LeadStatus::Pending)
        );
        let first_id = LeadId::new("first").unwrap();
        assert_eq!(c.lead(&first_id).unwrap().attempts, 1);
        assert_eq!(
            c.lead(&first_id).unwrap().next_attempt_at,
            now + Duration::from_secs(3600)
        );
        assert!(c.next_to_dial(now, &none).is_none(), "nothing is due yet");
        let dial = c.next_to_dial(later, &none).unwrap();
        assert_eq!((dial.lead.as_str(), dial.attempt), ("busy", 2));
        let saved = c.lead(&dial.lead).unwrap().progress();
        assert_eq!(saved.status, LeadStatus::InProgress);
        assert_eq!(saved.attempts_by.get(&Disposition::Busy), Some(&1));
        let stats = c.stats();
        assert_eq!(
            (stats.done, stats.exhausted, stats.blocked, stats.pending),
            (1, 2, 1, 2)
        );
        // A saved copy restores to the same lead.
        let mut again = campaign();
        let copy = c.lead(&first_id).unwrap().progress();
        again
            .restore_lead(lead("first", "+12125550005", None), copy.clone(), now)
            .unwrap();
        assert_eq!(again.lead(&first_id).unwrap().progress(), copy);
    }

    #[test]
    fn preview_reserves_without_counting_until_the_agent_dials() {
        let mut c = campaign();
        let now = Timestamp::from_millis(JULY_NOON_UTC + 3_600_000);
        c.add_lead(lead("a", "+12125550001", None), now).unwrap();
        c.add_lead(lead("b", "+12125550002", None), now).unwrap();
        let none: HashSet<String> = HashSet::new();
        let alice = AgentId::new("alice").unwrap();
        let bob = AgentId::new("bob").unwrap();
        let a = LeadId::new("a").unwrap();
        let shown = c.reserve_for(now, &none, &alice).unwrap();
        assert_eq!((shown.lead.as_str(), shown.attempt), ("a", 1));
        assert_eq!(c.lead(&a).unwrap().attempts, 0, "not counted while previewed");
        assert_eq!(
            c.record_result(&a, Disposition::Busy, now),
            Err(CampaignError::NotInProgress),
            "a preview is not an attempt"
        );
        // Another agent gets the next lead, not the one alice looks at.
        assert_eq!(c.reserve_for(now, &none, &bob).unwrap().lead.as_str(), "b");
        // Bob skips: b comes back after the skip delay, uncounted.
        let b = LeadId::new("b").unwrap();
        c.release(&b, now + Duration::from_secs(900)).unwrap();
        assert_eq!(c.lead(&b).unwrap().attempts, 0);
        assert!(c.reserve_for(now, &none, &bob).is_none());
        assert_eq!(
            c.reserve_for(now + Duration::from_secs(900), &none, &bob)
                .unwrap()
                .lead,
            b
        );
        // Alice dials: the attempt counts and its result is recorded like any other.
        assert_eq!(c.confirm_dial(&a), Ok(1));
        assert_eq!(c.confirm_dial(&a), Err(CampaignError::NotInProgress));
        assert_eq!(
            c.record_result(&a, Disposition::Completed, now),
            Ok(LeadStatus::Done)
        );
        assert_eq!(
            c.release(&a, now),
            Err(CampaignError::NotInProgress),
            "only reserved leads go back"
        );
    }

    #[test]
    fn personal_callbacks_wait_for_their_agent_and_dnc_is_reported() {
        let mut c = campaign();
        let now = Timestamp::from_millis(JULY_NOON_UTC + 3_600_000);
        c.add_lead(lead("cb", "+12125550001", None), now).unwrap();
        c.add_lead(lead("listed", "+12125550002", None), now).unwrap();
        let cb = LeadId::new("cb").unwrap();
        let alice = AgentId::new("alice").unwrap();
        c.next_to_dial(now, &HashSet::new()).unwrap();
        c.record_result(&cb, Disposition::Completed, now).unwrap();
        // The agent promised to call back herself; the lead reopens for then.
        let at = now + Duration::from_secs(3600);
        c.schedule_callback(&cb, at, Some(alice.clone())).unwrap();
        assert_eq!(
            c.lead(&cb).unwrap().progress().callback,
            Some(Callback {
                at,
                agent: Some(alice.clone())
            })
        );
        let dnc: HashSet<String> = ["+12125550002".to_string()].into();
        assert!(
            c.next_to_dial_when(at, &dnc, &|_| false).is_none(),
            "alice is busy"
        );
        assert_eq!(c.take_blocked(), vec![LeadId::new("listed").unwrap()]);
        assert!(c.take_blocked().is_empty());
        let dial = c.next_to_dial_when(at, &dnc, &|a| a == &alice).unwrap();
        assert_eq!(
            (dial.lead, dial.agent, dial.attempt),
            (cb.clone(), Some(alice), 2)
        );
        // The person asks not to be called again.
        c.record_result(&cb, Disposition::Completed, at).unwrap();
        c.mark_do_not_call(&cb).unwrap();
        assert_eq!(c.lead(&cb).unwrap().status, LeadStatus::Blocked);
        assert!(c.schedule_callback(&cb, at, None).is_err());
    }

    proptest! {
        #[test]
        fn zone_lookup_never_panics(s in "\\PC{0,30}") {
            let _ = zone_for_number(&Pii::new(s.clone()));
            let _ = zone_by_name(&s);
        }

        #[test]
        fn window_allows_exactly_local_hours(ms in 0i64..4_000_000_000_000) {
            let window = CallingWindow::us_default();
            let zone = zone_by_name("Europe/London").unwrap();
            let now = Timestamp::from_millis(ms);
            let local = jiff::Timestamp::from_millisecond(ms).unwrap().to_zoned(zone.clone()).time();
            prop_assert_eq!(window.allows(&zone, now), (8..21).contains(&local.hour()));
            let next = window.next_open(&zone, now).unwrap();
            prop_assert!(next >= now && window.allows(&zone, next));
        }
    }
}
