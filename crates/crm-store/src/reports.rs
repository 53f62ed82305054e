//! Historical reports (the CMS side): interval report per queue, agent report, survey results. The SQL
//! only selects the period's rows; the figures are computed by the pure functions here, so both backends
//! give identical numbers and the definitions are testable without a database. Every report is
//! JSON-serialisable and renders as CSV.

use crate::error::{Result, StoreError};
use crate::store::{CrmStore, with_pool};
use domain::{AgentId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How service level is computed; vendors differ, so it is a queue setting. `T` is the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "formula", rename_all = "snake_case")]
pub enum ServiceLevelFormula {
    /// Answered within T / answered (Asterisk SL).
    AnsweredWithinOverAnswered,
    /// (Answered within T + abandoned within T) / (answered + abandoned) (Asterisk SL2).
    WithinOverAnsweredAndAbandoned,
    /// Removed from queue within T (answered or abandoned) / queued (Amazon Connect).
    RemovedWithinOverQueued,
    /// Answered within T / (answered + abandoned), not counting abandons shorter than the given
    /// milliseconds (Genesys style; `0` counts every abandon).
    AnsweredWithinOverAnsweredAndAbandoned { short_abandon_ms: i64 },
}

/// Service level setting: formula and threshold T.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLevelSpec {
    pub formula: ServiceLevelFormula,
    pub threshold_ms: i64,
}

impl Default for ServiceLevelSpec {
    /// 80/20 by the first formula.
    fn default() -> Self {
        Self {
            formula: ServiceLevelFormula::AnsweredWithinOverAnswered,
            threshold_ms: 20_000,
        }
    }
}

/// Length of a report interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IntervalLength {
    Minutes15,
    Minutes30,
    Minutes60,
}

impl IntervalLength {
    /// The length in milliseconds.
    pub fn millis(self) -> i64 {
        match self {
            IntervalLength::Minutes15 => 15 * 60_000,
            IntervalLength::Minutes30 => 30 * 60_000,
            IntervalLength::Minutes60 => 60 * 60_000,
        }
    }

    /// From minutes: 15, 30 or 60.
    pub fn from_minutes(minutes: u32) -> Option<Self> {
        match minutes {
            15 => Some(Self::Minutes15),
            30 => Some(Self::Minutes30),
            60 => Some(Self::Minutes60),
            _ => None,
        }
    }
}

/// One call that entered a queue, as the interval report needs it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct QueuedCall {
    pub queue_id: String,
    pub queued_at: i64,
    pub answered: bool,
    pub abandoned: bool,
    /// Time in queue until answered or abandoned; `None` while still waiting.
    pub wait_ms: Option<i64>,
    /// Talk + hold + wrap-up, for answered calls whose handling is finished.
    pub handle_ms: Option<i64>,
}

/// Figures of one queue in one interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueIntervalRow {
    pub queue: String,
    pub interval_start_ms: i64,
    pub offered: u64,
    pub answered: u64,
    pub abandoned: u64,
    pub answered_within_threshold: u64,
    /// 0.0-1.0; empty when the formula's denominator is zero.
    pub service_level: Option<f64>,
    /// Average speed of answer (mean wait of answered calls).
    pub asa_ms: Option<f64>,
    /// Average handle time (talk + hold + wrap-up) of answered calls.
    pub aht_ms: Option<f64>,
    /// Longest wait, answered or abandoned.
    pub max_wait_ms: i64,
    /// Abandoned while queued / queued (offered).
    pub abandon_rate: Option<f64>,
}

/// The interval report: one row per queue and interval that had calls, ordered by queue then time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntervalReport {
    pub from_ms: i64,
    pub to_ms: i64,
    pub interval: IntervalLength,
    pub service_level: ServiceLevelSpec,
    pub rows: Vec<QueueIntervalRow>,
}

#[derive(Default)]
struct IntervalAcc {
    offered: u64,
    answered: u64,
    abandoned: u64,
    answered_within: u64,
    abandoned_within: u64,
    short_abandons: u64,
    wait_sum: i128,
    handle_sum: i128,
    handled: u64,
    max_wait: i64,
}

fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// Computes the interval report from the calls that entered a queue in the period.
pub fn build_interval_report(
    calls: &[QueuedCall],
    from: Timestamp,
    to: Timestamp,
    interval: IntervalLength,
    spec: ServiceLevelSpec,
) -> IntervalReport {
    let len = interval.millis();
    let rows = queue_rows(calls, from, to, spec, |at| at.saturating_sub(at.rem_euclid(len)));
    IntervalReport {
        from_ms: from.as_millis(),
        to_ms: to.as_millis(),
        interval,
        service_level: spec,
        rows,
    }
}

/// The queue report: one row per queue over the whole period (`interval_start_ms` is its start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueReport {
    pub from_ms: i64,
    pub to_ms: i64,
    pub service_level: ServiceLevelSpec,
    pub rows: Vec<QueueIntervalRow>,
}

/// Computes the queue report: the interval report's figures with one interval, the period.
pub fn build_queue_report(
    calls: &[QueuedCall],
    from: Timestamp,
    to: Timestamp,
    spec: ServiceLevelSpec,
) -> QueueReport {
    let start = from.as_millis();
    QueueReport {
        from_ms: start,
        to_ms: to.as_millis(),
        service_level: spec,
        rows: queue_rows(calls, from, to, spec, |_| start),
    }
}

impl QueueReport {
    /// CSV, one line per queue.
    pub fn to_csv(&self) -> Result<String> {
        rows_to_csv(&self.rows)
    }
}

fn queue_rows(
    calls: &[QueuedCall],
    from: Timestamp,
    to: Timestamp,
    spec: ServiceLevelSpec,
    bucket: impl Fn(i64) -> i64,
) -> Vec<QueueIntervalRow> {
    let short_abandon_ms = match spec.formula {
        ServiceLevelFormula::AnsweredWithinOverAnsweredAndAbandoned { short_abandon_ms } => short_abandon_ms,
        _ => 0,
    };
    let mut acc: BTreeMap<(String, i64), IntervalAcc> = BTreeMap::new();
    for call in calls
        .iter()
        .filter(|c| c.queued_at >= from.as_millis() && c.queued_at < to.as_millis())
    {
        let start = bucket(call.queued_at);
        let a = acc.entry((call.queue_id.clone(), start)).or_default();
        a.offered += 1;
        let wait = call.wait_ms.unwrap_or(0).max(0);
        let within = call.wait_ms.is_some() && wait <= spec.threshold_ms;
        if call.answered {
            a.answered += 1;
            a.wait_sum += i128::from(wait);
            a.answered_within += u64::from(within);
            if let Some(h) = call.handle_ms {
                a.handle_sum += i128::from(h.max(0));
                a.handled += 1;
            }
        } else if call.abandoned {
            a.abandoned += 1;
            a.abandoned_within += u64::from(within);
            a.short_abandons += u64::from(wait < short_abandon_ms);
        }
        if call.wait_ms.is_some() {
            a.max_wait = a.max_wait.max(wait);
        }
    }
    acc.into_iter()
        .map(|((queue, start), a)| {
            let service_level = match spec.formula {
                ServiceLevelFormula::AnsweredWithinOverAnswered => ratio(a.answered_within, a.answered),
                ServiceLevelFormula::WithinOverAnsweredAndAbandoned => {
                    ratio(a.answered_within + a.abandoned_within, a.answered + a.abandoned)
                }
                ServiceLevelFormula::RemovedWithinOverQueued => {
                    ratio(a.answered_within + a.abandoned_within, a.offered)
                }
                ServiceLevelFormula::AnsweredWithinOverAnsweredAndAbandoned { .. } => {
                    ratio(a.answered_within, a.answered + a.abandoned - a.short_abandons)
                }
            };
            QueueIntervalRow {
                queue,
                interval_start_ms: start,
                offered: a.offered,
                answered: a.answered,
                abandoned: a.abandoned,
                answered_within_threshold: a.answered_within,
                service_level,
                asa_ms: (a.answered > 0).then(|| a.wait_sum as f64 / a.answered as f64),
                aht_ms: (a.handled > 0).then(|| a.handle_sum as f64 / a.handled as f64),
                max_wait_ms: a.max_wait,
                abandon_rate: ratio(a.abandoned, a.offered),
            }
        })
        .collect()
}

/// One handled call, as the agent report needs it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HandledCall {
    pub agent_id: String,
    pub talk_ms: Option<i64>,
    pub hold_ms: i64,
    pub wrap_ms: Option<i64>,
}

/// A span of an agent's state (from presence tracking), for not-ready time and occupancy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct AgentStateSpan {
    pub agent_id: String,
    /// `available`, `not_ready`, `reserved`, `on_call`, `wrap_up`, ...
    pub state: String,
    /// The not-ready reason code (break, lunch, training, ...).
    pub reason: Option<String>,
    pub started_at: i64,
    pub ended_at: i64,
}

/// Figures of one agent over the period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentReportRow {
    pub agent: String,
    pub handled: u64,
    pub talk_ms: i64,
    pub hold_ms: i64,
    pub wrap_ms: i64,
    pub aht_ms: Option<f64>,
    /// Logged in: every recorded state but logged out (the state spans below add up to it).
    pub login_ms: i64,
    /// Time available and idle (from state spans; zero when none were recorded).
    pub available_ms: i64,
    pub not_ready_ms: i64,
    pub not_ready_by_reason: BTreeMap<String, i64>,
    /// Ringing (a call offered, not yet answered).
    pub reserved_ms: i64,
    /// Connected to a call, talking or holding (from state spans).
    pub on_call_ms: i64,
    /// After-call work (from state spans).
    pub wrap_up_ms: i64,
    /// Occupancy as the live ACD counts it: (on call + wrap-up) / (that + available + ringing),
    /// from the state spans; empty without them.
    pub occupancy: Option<f64>,
    /// Ready adherence: the share of logged-in time the agent was not in not-ready,
    /// (login − not ready) / login; empty without logged-in time.
    pub adherence_ready: Option<f64>,
}

/// The agent report, one row per agent, by agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentReport {
    pub from_ms: i64,
    pub to_ms: i64,
    pub rows: Vec<AgentReportRow>,
}

/// Computes the agent report from the calls answered in the period and the agents' state spans
/// (clipped to the period).
pub fn build_agent_report(
    calls: &[HandledCall],
    spans: &[AgentStateSpan],
    from: Timestamp,
    to: Timestamp,
) -> AgentReport {
    let mut rows: BTreeMap<String, AgentReportRow> = BTreeMap::new();
    let mut has_spans: BTreeMap<String, bool> = BTreeMap::new();
    for call in calls {
        let r = rows
            .entry(call.agent_id.clone())
            .or_insert_with(|| empty_agent_row(&call.agent_id));
        r.handled += 1;
        r.talk_ms = r.talk_ms.saturating_add(call.talk_ms.unwrap_or(0).max(0));
        r.hold_ms = r.hold_ms.saturating_add(call.hold_ms.max(0));
        r.wrap_ms = r.wrap_ms.saturating_add(call.wrap_ms.unwrap_or(0).max(0));
    }
    for span in spans {
        let start = span.started_at.max(from.as_millis());
        let end = span.ended_at.min(to.as_millis());
        if end <= start {
            continue;
        }
        let length = end.saturating_sub(start);
        let r = rows
            .entry(span.agent_id.clone())
            .or_insert_with(|| empty_agent_row(&span.agent_id));
        has_spans.insert(span.agent_id.clone(), true);
        if span.state != "logged_out" {
            r.login_ms = r.login_ms.saturating_add(length);
        }
        match span.state.as_str() {
            "available" => r.available_ms = r.available_ms.saturating_add(length),
            "reserved" => r.reserved_ms = r.reserved_ms.saturating_add(length),
            "on_call" => r.on_call_ms = r.on_call_ms.saturating_add(length),
            "wrap_up" => r.wrap_up_ms = r.wrap_up_ms.saturating_add(length),
            "not_ready" => {
                r.not_ready_ms = r.not_ready_ms.saturating_add(length);
                let reason = span.reason.clone().unwrap_or_else(|| "unspecified".into());
                let by_reason = r.not_ready_by_reason.entry(reason).or_insert(0);
                *by_reason = by_reason.saturating_add(length);
            }
            _ => {}
        }
    }
    let rows = rows
        .into_values()
        .map(|mut r| {
            let busy = r.talk_ms.saturating_add(r.hold_ms).saturating_add(r.wrap_ms);
            if r.handled > 0 {
                r.aht_ms = Some(busy as f64 / r.handled as f64);
            }
            if has_spans.contains_key(&r.agent) {
                let working = r.on_call_ms.saturating_add(r.wrap_up_ms);
                let staffed = working
                    .saturating_add(r.available_ms)
                    .saturating_add(r.reserved_ms);
                if staffed > 0 {
                    r.occupancy = Some(working as f64 / staffed as f64);
                }
                if r.login_ms > 0 {
                    r.adherence_ready =
                        Some(r.login_ms.saturating_sub(r.not_ready_ms) as f64 / r.login_ms as f64);
                }
            }
            r
        })
        .collect();
    AgentReport {
        from_ms: from.as_millis(),
        to_ms: to.as_millis(),
        rows,
    }
}

fn empty_agent_row(agent: &str) -> AgentReportRow {
    AgentReportRow {
        agent: agent.to_string(),
        handled: 0,
        talk_ms: 0,
        hold_ms: 0,
        wrap_ms: 0,
        aht_ms: None,
        login_ms: 0,
        available_ms: 0,
        not_ready_ms: 0,
        not_ready_by_reason: BTreeMap::new(),
        reserved_ms: 0,
        on_call_ms: 0,
        wrap_up_ms: 0,
        occupancy: None,
        adherence_ready: None,
    }
}

/// Survey answers of one group (all, or one agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurveyRow {
    /// `all` or an agent's login.
    pub group: String,
    pub responses: u64,
    pub average: Option<f64>,
    /// Answers scoring 1, 2, 3, 4, 5.
    pub score_1: u64,
    pub score_2: u64,
    pub score_3: u64,
    pub score_4: u64,
    pub score_5: u64,
}

/// Post-call survey results: overall first, then by agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurveyReport {
    pub from_ms: i64,
    pub to_ms: i64,
    pub rows: Vec<SurveyRow>,
}

/// Computes survey results from `(agent, score)` pairs; scores outside 1-5 are ignored.
pub fn build_survey_report(
    answers: &[(Option<String>, i64)],
    from: Timestamp,
    to: Timestamp,
) -> SurveyReport {
    fn add(row: &mut SurveyRow, score: i64) {
        row.responses += 1;
        match score {
            1 => row.score_1 += 1,
            2 => row.score_2 += 1,
            3 => row.score_3 += 1,
            4 => row.score_4 += 1,
            _ => row.score_5 += 1,
        }
    }
    let new_row = |group: &str| SurveyRow {
        group: group.to_string(),
        responses: 0,
        average: None,
        score_1: 0,
        score_2: 0,
        score_3: 0,
        score_4: 0,
        score_5: 0,
    };
    let mut all = new_row("all");
    let mut by_agent: BTreeMap<String, SurveyRow> = BTreeMap::new();
    for (agent, score) in answers.iter().filter(|(_, s)| (1..=5).contains(s)) {
        add(&mut all, *score);
        if let Some(agent) = agent {
            add(
                by_agent.entry(agent.clone()).or_insert_with(|| new_row(agent)),
                *score,
            );
        }
    }
    let mut rows = vec![all];
    rows.extend(by_agent.into_values());
    for r in &mut rows {
        let sum = r.score_1 + 2 * r.score_2 + 3 * r.score_3 + 4 * r.score_4 + 5 * r.score_5;
        r.average = ratio(sum, r.responses);
    }
    SurveyReport {
        from_ms: from.as_millis(),
        to_ms: to.as_millis(),
        rows,
    }
}

/// Agents by state over time: per interval, the mean number of agents in each state (state time in
/// the interval / the part of it the period covers), from the state spans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateSeriesRow {
    pub interval_start_ms: i64,
    pub available: f64,
    pub not_ready: f64,
    pub reserved: f64,
    pub on_call: f64,
    pub wrap_up: f64,
}

/// Computes agents by state per interval over `[from, to)`; intervals nobody was logged in are
/// left out.
pub fn build_state_series(
    spans: &[AgentStateSpan],
    from: Timestamp,
    to: Timestamp,
    interval: IntervalLength,
) -> Vec<StateSeriesRow> {
    let len = interval.millis();
    let mut acc: BTreeMap<i64, [i64; 5]> = BTreeMap::new();
    for span in spans {
        let slot = match span.state.as_str() {
            "available" => 0,
            "not_ready" => 1,
            "reserved" => 2,
            "on_call" => 3,
            "wrap_up" => 4,
            _ => continue,
        };
        let mut start = span.started_at.max(from.as_millis());
        let end = span.ended_at.min(to.as_millis());
        while start < end {
            let bucket = start.saturating_sub(start.rem_euclid(len));
            let bucket_end = bucket.saturating_add(len).min(end);
            if bucket_end <= start {
                break;
            }
            let row = acc.entry(bucket).or_default();
            row[slot] = row[slot].saturating_add(bucket_end - start);
            start = bucket_end;
        }
    }
    acc.into_iter()
        .map(|(start, ms)| {
            // The part of the interval the period covers (the current one is not over yet).
            let covered = start
                .saturating_add(len)
                .min(to.as_millis())
                .saturating_sub(start.max(from.as_millis()))
                .max(1);
            let mean = |i: usize| ms[i] as f64 / covered as f64;
            StateSeriesRow {
                interval_start_ms: start,
                available: mean(0),
                not_ready: mean(1),
                reserved: mean(2),
                on_call: mean(3),
                wrap_up: mean(4),
            }
        })
        .collect()
}

/// One outbound dial, as the campaign report needs it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CampaignCall {
    pub campaign_id: String,
    pub dial_outcome: Option<String>,
    pub answered: bool,
    pub abandoned: bool,
    pub talk_ms: Option<i64>,
}

/// Figures of one campaign over the period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignRow {
    pub campaign: String,
    pub dials: u64,
    /// Answered by a person.
    pub human: u64,
    pub machine: u64,
    pub no_answer: u64,
    pub busy: u64,
    /// Handed to an agent.
    pub connected: u64,
    /// Answered by a person and no agent in time.
    pub abandoned: u64,
    /// Abandoned / answered by a person (the regulators' rate).
    pub abandon_rate: Option<f64>,
    pub talk_ms: i64,
}

/// The campaign report, one row per campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CampaignReport {
    pub from_ms: i64,
    pub to_ms: i64,
    pub rows: Vec<CampaignRow>,
}

/// Computes the campaign report from the period's dials.
pub fn build_campaign_report(calls: &[CampaignCall], from: Timestamp, to: Timestamp) -> CampaignReport {
    let mut rows: BTreeMap<String, CampaignRow> = BTreeMap::new();
    for c in calls {
        let r = rows.entry(c.campaign_id.clone()).or_insert_with(|| CampaignRow {
            campaign: c.campaign_id.clone(),
            dials: 0,
            human: 0,
            machine: 0,
            no_answer: 0,
            busy: 0,
            connected: 0,
            abandoned: 0,
            abandon_rate: None,
            talk_ms: 0,
        });
        r.dials += 1;
        match c.dial_outcome.as_deref() {
            Some("human") => r.human += 1,
            Some("machine") => r.machine += 1,
            Some("no_answer") => r.no_answer += 1,
            Some("busy") => r.busy += 1,
            _ => {}
        }
        r.connected += u64::from(c.answered);
        r.abandoned += u64::from(c.abandoned);
        r.talk_ms = r.talk_ms.saturating_add(c.talk_ms.unwrap_or(0).max(0));
    }
    let rows = rows
        .into_values()
        .map(|mut r| {
            r.abandon_rate = ratio(r.abandoned, r.human);
            r
        })
        .collect();
    CampaignReport {
        from_ms: from.as_millis(),
        to_ms: to.as_millis(),
        rows,
    }
}

impl CampaignReport {
    /// CSV, one line per campaign.
    pub fn to_csv(&self) -> Result<String> {
        rows_to_csv(&self.rows)
    }
}

/// Renders serialisable flat rows as CSV with a header line.
pub fn rows_to_csv<T: Serialize>(rows: &[T]) -> Result<String> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    for row in rows {
        writer
            .serialize(row)
            .map_err(|e| StoreError::Invalid(format!("csv: {e}")))?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| StoreError::Invalid(format!("csv: {e}")))?;
    String::from_utf8(bytes).map_err(|e| StoreError::Invalid(format!("csv: {e}")))
}

#[derive(Serialize)]
struct AgentCsvRow<'a> {
    agent: &'a str,
    handled: u64,
    talk_ms: i64,
    hold_ms: i64,
    wrap_ms: i64,
    aht_ms: Option<f64>,
    login_ms: i64,
    available_ms: i64,
    not_ready_ms: i64,
    /// `reason=ms` pairs joined by `;`.
    not_ready_by_reason: String,
    reserved_ms: i64,
    on_call_ms: i64,
    wrap_up_ms: i64,
    occupancy: Option<f64>,
    adherence_ready: Option<f64>,
}

impl IntervalReport {
    /// CSV, one line per queue and interval.
    pub fn to_csv(&self) -> Result<String> {
        rows_to_csv(&self.rows)
    }
}

impl AgentReport {
    /// CSV, one line per agent; not-ready reasons as `reason=ms;...`.
    pub fn to_csv(&self) -> Result<String> {
        let flat: Vec<AgentCsvRow<'_>> = self
            .rows
            .iter()
            .map(|r| AgentCsvRow {
                agent: &r.agent,
                handled: r.handled,
                talk_ms: r.talk_ms,
                hold_ms: r.hold_ms,
                wrap_ms: r.wrap_ms,
                aht_ms: r.aht_ms,
                login_ms: r.login_ms,
                available_ms: r.available_ms,
                not_ready_ms: r.not_ready_ms,
                not_ready_by_reason: r
                    .not_ready_by_reason
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(";"),
                reserved_ms: r.reserved_ms,
                on_call_ms: r.on_call_ms,
                wrap_up_ms: r.wrap_up_ms,
                occupancy: r.occupancy,
                adherence_ready: r.adherence_ready,
            })
            .collect();
        rows_to_csv(&flat)
    }
}

impl SurveyReport {
    /// CSV, overall line first.
    pub fn to_csv(&self) -> Result<String> {
        rows_to_csv(&self.rows)
    }
}

impl CrmStore {
    /// Interval report of the calls that entered a queue in `[from, to)`.
    pub async fn interval_report(
        &self,
        from: Timestamp,
        to: Timestamp,
        interval: IntervalLength,
        spec: ServiceLevelSpec,
    ) -> Result<IntervalReport> {
        let calls = self.queued_calls(from, to).await?;
        Ok(build_interval_report(&calls, from, to, interval, spec))
    }

    async fn queued_calls(&self, from: Timestamp, to: Timestamp) -> Result<Vec<QueuedCall>> {
        Ok(with_pool!(self, |pool| {
            sqlx::query_as::<_, QueuedCall>(
                "SELECT queue_id, queued_at, answered_at IS NOT NULL AS answered, abandoned, wait_ms, \
                 CASE WHEN talk_ms IS NULL THEN NULL ELSE talk_ms + hold_ms + COALESCE(wrap_ms, 0) END AS handle_ms \
                 FROM interactions WHERE queue_id IS NOT NULL AND queued_at >= $1 AND queued_at < $2",
            )
            .bind(from.as_millis())
            .bind(to.as_millis())
            .fetch_all(pool)
            .await?
        }))
    }

    /// Queue report (one row per queue) of the calls that entered a queue in `[from, to)`.
    pub async fn queue_report(
        &self,
        from: Timestamp,
        to: Timestamp,
        spec: ServiceLevelSpec,
    ) -> Result<QueueReport> {
        let calls = self.queued_calls(from, to).await?;
        Ok(build_queue_report(&calls, from, to, spec))
    }

    /// Agents by state per interval over `[from, to)`.
    pub async fn state_series(
        &self,
        from: Timestamp,
        to: Timestamp,
        interval: IntervalLength,
    ) -> Result<Vec<StateSeriesRow>> {
        let spans = self.agent_state_spans(from, to).await?;
        Ok(build_state_series(&spans, from, to, interval))
    }

    /// Campaign report of the dials that started in `[from, to)`.
    pub async fn campaign_report(&self, from: Timestamp, to: Timestamp) -> Result<CampaignReport> {
        let calls = with_pool!(self, |pool| {
            sqlx::query_as::<_, CampaignCall>(
                "SELECT campaign_id, dial_outcome, answered_at IS NOT NULL AS answered, abandoned, talk_ms \
                 FROM interactions WHERE campaign_id IS NOT NULL AND arrived_at >= $1 AND arrived_at < $2",
            )
            .bind(from.as_millis())
            .bind(to.as_millis())
            .fetch_all(pool)
            .await?
        });
        Ok(build_campaign_report(&calls, from, to))
    }

    /// Agent report for calls answered in `[from, to)` and state spans overlapping it.
    pub async fn agent_report(&self, from: Timestamp, to: Timestamp) -> Result<AgentReport> {
        let (calls, spans) = with_pool!(self, |pool| {
            let calls = sqlx::query_as::<_, HandledCall>(
                "SELECT agent_id, talk_ms, hold_ms, wrap_ms FROM interactions \
                 WHERE agent_id IS NOT NULL AND answered_at >= $1 AND answered_at < $2",
            )
            .bind(from.as_millis())
            .bind(to.as_millis())
            .fetch_all(pool)
            .await?;
            let spans = sqlx::query_as::<_, AgentStateSpan>(
                "SELECT agent_id, state, reason, started_at, ended_at FROM agent_states \
                 WHERE started_at < $2 AND ended_at > $1",
            )
            .bind(from.as_millis())
            .bind(to.as_millis())
            .fetch_all(pool)
            .await?;
            (calls, spans)
        });
        Ok(build_agent_report(&calls, &spans, from, to))
    }

    /// Survey results for interactions that arrived in `[from, to)`.
    pub async fn survey_report(&self, from: Timestamp, to: Timestamp) -> Result<SurveyReport> {
        let answers = with_pool!(self, |pool| {
            sqlx::query_as::<_, (Option<String>, i64)>(
                "SELECT agent_id, survey_score FROM interactions \
                 WHERE survey_score IS NOT NULL AND arrived_at >= $1 AND arrived_at < $2",
            )
            .bind(from.as_millis())
            .bind(to.as_millis())
            .fetch_all(pool)
            .await?
        });
        Ok(build_survey_report(&answers, from, to))
    }

    /// Records a finished span of an agent's state, for the agent report.
    pub async fn record_agent_state(
        &self,
        agent: &AgentId,
        state: &str,
        reason: Option<&str>,
        started: Timestamp,
        ended: Timestamp,
    ) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query(
                "INSERT INTO agent_states (agent_id, state, reason, started_at, ended_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (agent_id, started_at) DO UPDATE SET state = excluded.state, reason = excluded.reason, \
                 ended_at = excluded.ended_at",
            )
            .bind(agent.as_str().to_string())
            .bind(state.to_string())
            .bind(reason.map(str::to_string))
            .bind(started.as_millis())
            .bind(ended.as_millis())
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn call(
        queue: &str,
        at: i64,
        answered: bool,
        abandoned: bool,
        wait: Option<i64>,
        handle: Option<i64>,
    ) -> QueuedCall {
        QueuedCall {
            queue_id: queue.into(),
            queued_at: at,
            answered,
            abandoned,
            wait_ms: wait,
            handle_ms: handle,
        }
    }

    #[test]
    fn interval_figures_and_every_service_level_formula() {
        let calls = vec![
            call("sales", 0, true, false, Some(10_000), Some(100_000)),
            call("sales", 60_000, true, false, Some(30_000), Some(200_000)),
            call("sales", 120_000, false, true, Some(3_000), None),
            call("sales", 180_000, false, true, Some(40_000), None),
            call("sales", 240_000, false, false, None, None), // still waiting
            call("sales", 15 * 60_000, true, false, Some(0), Some(50_000)), // next interval
            call("help", 0, true, false, Some(5_000), None),
        ];
        let from = Timestamp::ZERO;
        let to = Timestamp::from_secs(3600);
        let spec = |formula| ServiceLevelSpec {
            formula,
            threshold_ms: 20_000,
        };
        let report = build_interval_report(
            &calls,
            from,
            to,
            IntervalLength::Minutes15,
            spec(ServiceLevelFormula::AnsweredWithinOverAnswered),
        );
        assert_eq!(report.rows.len(), 3);
        let sales = &report.rows[1];
        assert_eq!((sales.queue.as_str(), sales.interval_start_ms), ("sales", 0));
        assert_eq!((sales.offered, sales.answered, sales.abandoned), (5, 2, 2));
        assert_eq!(sales.service_level, Some(0.5));
        assert_eq!(sales.asa_ms, Some(20_000.0));
        assert_eq!(sales.aht_ms, Some(150_000.0));
        assert_eq!(sales.max_wait_ms, 40_000);
        assert_eq!(report.rows[0].aht_ms, None, "no finished handling yet");
        assert_eq!(report.rows[2].interval_start_ms, 15 * 60_000);

        let sl = |formula| {
            build_interval_report(&calls, from, to, IntervalLength::Minutes15, spec(formula)).rows[1]
                .service_level
        };
        assert_eq!(sl(ServiceLevelFormula::WithinOverAnsweredAndAbandoned), Some(0.5)); // (1+1)/4
        assert_eq!(sl(ServiceLevelFormula::RemovedWithinOverQueued), Some(0.4)); // 2/5
        assert_eq!(
            sl(ServiceLevelFormula::AnsweredWithinOverAnsweredAndAbandoned { short_abandon_ms: 0 }),
            Some(0.25)
        );
        assert_eq!(
            sl(ServiceLevelFormula::AnsweredWithinOverAnsweredAndAbandoned {
                short_abandon_ms: 5_000
            }),
            Some(1.0 / 3.0)
        );

        let csv = report.to_csv().unwrap();
        assert!(csv.starts_with("queue,interval_start_ms,offered,answered,abandoned"));
        assert_eq!(csv.lines().count(), 4);
    }

    #[test]
    fn agent_report_clips_spans_and_computes_occupancy() {
        let calls = vec![
            HandledCall {
                agent_id: "alice".into(),
                talk_ms: Some(60_000),
                hold_ms: 10_000,
                wrap_ms: Some(20_000),
            },
            HandledCall {
                agent_id: "alice".into(),
                talk_ms: Some(30_000),
                hold_ms: 0,
                wrap_ms: None,
            },
        ];
        let span = |state: &str, reason: Option<&str>, s: i64, e: i64| AgentStateSpan {
            agent_id: "alice".into(),
            state: state.into(),
            reason: reason.map(Into::into),
            started_at: s,
            ended_at: e,
        };
        let spans = vec![
            span("available", None, -50_000, 60_000), // clipped to 60 s
            span("reserved", None, 60_000, 70_000),
            span("on_call", None, 70_000, 100_000),
            span("not_ready", Some("lunch"), 100_000, 400_000),
            span("wrap_up", None, 400_000, 500_000),
            span("not_ready", Some("break"), 500_000, 560_000),
            span("logged_out", None, 560_000, 900_000),
        ];
        let report = build_agent_report(&calls, &spans, Timestamp::ZERO, Timestamp::from_secs(3600));
        let alice = &report.rows[0];
        assert_eq!(alice.handled, 2);
        assert_eq!(alice.aht_ms, Some(60_000.0));
        assert_eq!(alice.available_ms, 60_000);
        assert_eq!(alice.not_ready_ms, 360_000);
        assert_eq!(alice.not_ready_by_reason.get("lunch"), Some(&300_000));
        assert_eq!(
            (alice.reserved_ms, alice.on_call_ms, alice.wrap_up_ms),
            (10_000, 30_000, 100_000)
        );
        assert_eq!(alice.login_ms, 560_000);
        // (30 + 100) / (30 + 100 + 60 + 10)
        assert_eq!(alice.occupancy, Some(130_000.0 / 200_000.0));
        assert_eq!(alice.adherence_ready, Some(200_000.0 / 560_000.0));
        assert!(report.to_csv().unwrap().contains("break=60000;lunch=300000"));
    }

    #[test]
    fn queue_totals_state_series_and_campaigns() {
        let calls = vec![
            call("sales", 0, true, false, Some(10_000), Some(100_000)),
            call("sales", 20 * 60_000, false, true, Some(30_000), None),
        ];
        let q = build_queue_report(
            &calls,
            Timestamp::ZERO,
            Timestamp::from_secs(3600),
            ServiceLevelSpec::default(),
        );
        assert_eq!(q.rows.len(), 1);
        assert_eq!(
            (q.rows[0].offered, q.rows[0].answered, q.rows[0].abandoned),
            (2, 1, 1)
        );
        assert_eq!(q.rows[0].abandon_rate, Some(0.5));
        assert_eq!(q.rows[0].service_level, Some(1.0));

        let span = |agent: &str, state: &str, s: i64, e: i64| AgentStateSpan {
            agent_id: agent.into(),
            state: state.into(),
            reason: None,
            started_at: s,
            ended_at: e,
        };
        let spans = vec![
            span("a", "available", 0, 30 * 60_000), // 15 min in each of two intervals
            span("b", "on_call", 5 * 60_000, 20 * 60_000), // 10 min + 5 min
            span("b", "logged_out", 20 * 60_000, 60 * 60_000),
        ];
        let series = build_state_series(
            &spans,
            Timestamp::ZERO,
            Timestamp::from_secs(3600),
            IntervalLength::Minutes15,
        );
        assert_eq!(series.len(), 2);
        assert_eq!((series[0].available, series[0].on_call), (1.0, 10.0 / 15.0));
        assert_eq!((series[1].available, series[1].on_call), (1.0, 5.0 / 15.0));

        let dial = |outcome: &str, answered: bool, abandoned: bool| CampaignCall {
            campaign_id: "spring".into(),
            dial_outcome: Some(outcome.into()),
            answered,
            abandoned,
            talk_ms: answered.then_some(60_000),
        };
        let calls = vec![
            dial("human", true, false),
            dial("human", false, true),
            dial("machine", false, false),
            dial("busy", false, false),
        ];
        let c = build_campaign_report(&calls, Timestamp::ZERO, Timestamp::from_secs(1));
        let r = &c.rows[0];
        assert_eq!(
            (r.dials, r.human, r.machine, r.busy, r.connected, r.abandoned),
            (4, 2, 1, 1, 1, 1)
        );
        assert_eq!(r.abandon_rate, Some(0.5));
        assert!(c.to_csv().unwrap().starts_with("campaign,dials,human"));
    }

    #[test]
    fn survey_report_counts_valid_scores() {
        let answers = vec![
            (Some("a".to_string()), 5),
            (Some("a".to_string()), 3),
            (None, 4),
            (Some("b".into()), 9),
        ];
        let report = build_survey_report(&answers, Timestamp::ZERO, Timestamp::from_secs(1));
        assert_eq!(report.rows[0].responses, 3);
        assert_eq!(report.rows[0].average, Some(4.0));
        assert_eq!(report.rows.len(), 2, "agent b had only an invalid score");
        assert_eq!((report.rows[1].score_3, report.rows[1].score_5), (1, 1));
    }

    #[test]
    fn extreme_times_do_not_overflow() {
        let calls = vec![
            call("q", i64::MIN + 1, true, false, Some(i64::MAX), Some(i64::MAX)),
            call("q", i64::MAX - 1, false, true, Some(-5), None),
        ];
        let report = build_interval_report(
            &calls,
            Timestamp::from_millis(i64::MIN),
            Timestamp::from_millis(i64::MAX),
            IntervalLength::Minutes60,
            ServiceLevelSpec::default(),
        );
        assert_eq!(report.rows.len(), 2);
        let spans = vec![AgentStateSpan {
            agent_id: "a".into(),
            state: "available".into(),
            reason: None,
            started_at: i64::MIN,
            ended_at: i64::MAX,
        }];
        let calls = vec![HandledCall {
            agent_id: "a".into(),
            talk_ms: Some(i64::MAX),
            hold_ms: i64::MAX,
            wrap_ms: None,
        }];
        let agents = build_agent_report(
            &calls,
            &spans,
            Timestamp::from_millis(i64::MIN),
            Timestamp::from_millis(i64::MAX),
        );
        assert_eq!(agents.rows.len(), 1);
    }

    proptest! {
        #[test]
        fn interval_report_invariants(
            raw in proptest::collection::vec((0i64..7_200_000, 0u8..3, 0i64..120_000, 0i64..600_000), 0..60),
            threshold in 0i64..60_000,
        ) {
            let calls: Vec<QueuedCall> = raw
                .iter()
                .map(|&(at, outcome, wait, handle)| match outcome {
                    0 => call("q", at, true, false, Some(wait), Some(handle)),
                    1 => call("q", at, false, true, Some(wait), None),
                    _ => call("q", at, false, false, None, None),
                })
                .collect();
            for formula in [
                ServiceLevelFormula::AnsweredWithinOverAnswered,
                ServiceLevelFormula::WithinOverAnsweredAndAbandoned,
                ServiceLevelFormula::RemovedWithinOverQueued,
                ServiceLevelFormula::AnsweredWithinOverAnsweredAndAbandoned { short_abandon_ms: 5_000 },
            ] {
                let report = build_interval_report(
                    &calls,
                    Timestamp::ZERO,
                    Timestamp::from_secs(7_200),
                    IntervalLength::Minutes30,
                    ServiceLevelSpec { formula, threshold_ms: threshold },
                );
                let offered: u64 = report.rows.iter().map(|r| r.offered).sum();
                prop_assert_eq!(offered, calls.len() as u64);
                for r in &report.rows {
                    prop_assert!(r.answered + r.abandoned <= r.offered);
                    prop_assert!(r.answered_within_threshold <= r.answered);
                    prop_assert_eq!(r.interval_start_ms % IntervalLength::Minutes30.millis(), 0);
                    if let Some(sl) = r.service_level {
                        prop_assert!((0.0..=1.0).contains(&sl));
                    }
                    if let Some(asa) = r.asa_ms {
                        prop_assert!(asa <= r.max_wait_ms as f64);
                    }
                }
            }
        }
    }
}
