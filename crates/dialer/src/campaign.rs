//! Campaign and lead logic, pure: which lead to dial next and when, given the calling window in the lead's
//! own time zone (daylight saving included), the do-not-call list checked at dial time, retries by
//! disposition with delays and a maximum number of attempts, callbacks scheduled by agents, the UK block on
//! re-dialling an abandoned number, and the pause / resume / stop state of the campaign.
//!
//! Leads are held in memory in insertion order; the owner loads them from the CRM store and writes every
//! attempt and result back (the audit trail lives there, not here).

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
        if self.index.contains_key(&lead.id) {
            return Err(CampaignError::DuplicateLead);
        }
        let zone = match &lead.time_zone {
            Some(name) => zone_by_name(name)?,
            None => zone_for_number(&lead.phone).ok_or(CampaignError::NoTimeZone)?,
        };
        self.index.insert(lead.id.clone(), self.leads.len());
        self.leads.push(Lead {
            id: lead.id,
            phone: lead.phone,
            zone,
            status: LeadStatus::Pending,
            attempts: 0,
            attempts_by: HashMap::new(),
            next_attempt_at: now,
            last_abandoned_at: None,
            callback: None,
        });
        Ok(())
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
        if self.state != CampaignState::Running {
            return None;
        }
        // Each pass either returns or blocks one more lead, so this ends; the scan of pending leads goes on
        // from the last blocked one instead of starting over.
        let (mut from, mut callbacks_left) = (0, true);
        loop {
            let (i, is_callback) = self.pick(now, from, callbacks_left)?;
            if !is_callback {
                // No due callback was eligible; blocking pending leads does not change that.
                callbacks_left = false;
                from = i;
            }
            let lead = self.leads.get_mut(i)?;
            if dnc.blocks(&lead.phone) {
                lead.status = LeadStatus::Blocked;
                lead.callback = None;
                continue;
            }
            lead.status = LeadStatus::InProgress;
            lead.attempts += 1;
            let agent = lead.callback.take().and_then(|c| c.agent);
            return Some(DialRequest {
                lead: lead.id.clone(),
                phone: lead.phone.clone(),
                agent,
                attempt: lead.attempts,
            });
        }
    }

    /// Index of the lead to try next, and whether it is a callback: the earliest due callback (if
    /// `callbacks`), else the first due pending lead at or after `from`.
    fn pick(&self, now: Timestamp, from: usize, callbacks: bool) -> Option<(usize, bool)> {
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
            .filter(|(_, l)| l.callback.as_ref().is_some_and(|c| c.at <= now) && eligible(l))
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
