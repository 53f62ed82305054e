//! The live campaign dialer: one runner task per campaign, and one task per dial attempt.
//!
//! The runner owns the pure parts of `dialer`: the [`Campaign`] (leads, calling window, do-not-call at
//! dial time, retries, the UK re-dial block), the pacing policy and the abandonment ledger. Every tick
//! it reads the ACD's agents of the campaign's queue, builds a [`PacingSnapshot`] with the current time
//! and asks the policy how many numbers to dial; it takes that many leads from
//! [`Campaign::next_to_dial`] and spawns an attempt for each. Attempts report back on a channel (dial
//! resolved, person connected, abandoned, finished); the runner feeds the policy and the ledger, records
//! the lead's result in the campaign and the CRM store, and keeps the campaign's Prometheus metrics.
//!
//! An attempt dials through the outbound trunk with the campaign's caller id and rings at least the
//! compliance ring time. On answer the media engine's answering-machine analyser listens to the
//! greeting. A machine is hung up on (agentless campaigns leave the message). A person (or an unsure
//! verdict, counted as a person) joins the campaign's queue at the highest priority as an ordinary
//! call task ([`crate::call`]) carrying a [`CampaignLink`]: if no agent is connected within the
//! compliance connect time (2 s) of the verdict, the call leaves the queue, the identification message
//! plays and the call ends; it counts as abandoned. Every attempt is one interaction (direction
//! outbound, with a `dial_attempt` event) and one `dial_attempts` row, written when it is placed and
//! when it ends. Phone numbers stay in [`Pii`]; logs and metric labels carry campaign and lead ids only.
//!
//! One node dials a campaign at a time: the runner places calls only while it holds the campaign's
//! lease in the state store (renewed every tick, with a fencing token), and names itself in a blob
//! beside it so standbys can show who dials. On taking the lease it loads the leads with their saved
//! progress from the CRM store (and the campaign's stored status), so a restarted node or a standby
//! continues each lead where it stopped; every change of a lead is saved back in order by a writer task
//! of the runner's own.

use crate::desk::CampaignWrapUp;
use crate::driver::legs::negotiate;
use crate::driver::{CallerIo, Driver, PopStyle};
use crate::{CallControl, Inner, Timeline};
use acd::AgentState;
use call_session::{CallSession, Input, Origin};
use dialer::campaign::{
    Callback, CallingWindow, Campaign, CampaignMode, CampaignState, DialRequest, Disposition, Lead,
    LeadProgress, LeadStatus, NewLead, RetryPolicy,
};
use dialer::compliance::{AbandonLedger, ComplianceConfig, ComplianceRules};
use dialer::driver::{
    CampaignDriver, Command as DriverCommand, Count, DriverSettings, Left, Previewed, Report,
    Save as DriverSave, WrapUpWish,
};
use dialer::pacing::{AgentActivity, AgentView, DialResult, PolicySpec};
use domain::{
    AgentId, CallId, CampaignId, Channel, Direction, EndedBy, InteractionEventKind, InteractionId, LeadId,
    Pii, QueueId, Timestamp,
};
use media::amd::{AmdConfig, AmdDecision};
use media::engine::LegEvent as MediaEvent;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use sip_gateway::LegEvent;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{Instrument, info, info_span, warn};

/// One `[[campaign]]` of the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignConfig {
    /// The campaign's id (letters, digits, `-_.`).
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// `preview` (the agent sees the lead, then dials or skips), `progressive`, `predictive` or
    /// `agentless`.
    #[serde(default = "default_mode")]
    pub mode: CampaignMode,
    /// The ACD queue whose agents take answered calls (not for agentless campaigns).
    #[serde(default)]
    pub queue: Option<String>,
    /// The pacing policy: `progressive`, `fixed:RATIO`, `vicidial` or `predictive`.
    #[serde(default = "default_pacing")]
    pub pacing: String,
    /// The number shown to the called party.
    pub caller_id: String,
    /// A leads CSV (`id,phone[,name,timezone,customer_id]`) imported at start when the campaign has no
    /// leads in the CRM store yet.
    #[serde(default)]
    pub leads: Option<PathBuf>,
    /// `running` dials from the start; `paused` waits to be resumed.
    #[serde(default = "default_state")]
    pub state: CampaignState,
    /// Local calling hours of the called party, `["08:00", "21:00"]` (the default).
    #[serde(default)]
    pub calling_hours: Option<[String; 2]>,
    /// The recorded identification message (a WAV file): played when nobody is free for a person
    /// who answered, and left on machines by agentless campaigns.
    pub message: PathBuf,
    #[serde(default)]
    pub compliance: ComplianceConfig,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// How often the runner asks the pacing policy.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// At most this many calls of the campaign at once.
    #[serde(default = "default_max_lines")]
    pub max_lines: u32,
    /// The answering-machine analysis of answered calls (`[campaign.amd]`); unset keys keep the
    /// analyser's defaults.
    #[serde(default)]
    pub amd: AmdSettings,
    /// Preview campaigns: how long a lead the agent skipped waits before it is offered again.
    #[serde(default = "default_preview_skip_secs")]
    pub preview_skip_secs: u64,
}

fn default_preview_skip_secs() -> u64 {
    3600
}

/// `[campaign.amd]`: the answering-machine analyser's limits, in milliseconds unless stated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmdSettings {
    /// Silence before any speech that means a machine or a dead line (default 2500).
    pub initial_silence_ms: Option<u32>,
    /// Total voice beyond which the greeting is a machine's (default 1500).
    pub greeting_ms: Option<u32>,
    /// Silence after a greeting that means a person waiting for an answer (default 800).
    pub after_greeting_silence_ms: Option<u32>,
    /// Longest analysis; then the call counts as a person (default 5000).
    pub total_analysis_ms: Option<u32>,
    /// Voice shorter than this is not a word (default 100).
    pub min_word_length_ms: Option<u32>,
    /// Silence that separates two words (default 50).
    pub between_words_silence_ms: Option<u32>,
    /// This many words means a machine (default 3).
    pub max_words: Option<u32>,
    /// One word longer than this means a machine (default 5000).
    pub max_word_length_ms: Option<u32>,
    /// Mean absolute amplitude (16-bit units) from which a frame is voice (default 256).
    pub silence_threshold: Option<u32>,
}

impl AmdSettings {
    /// The analyser's configuration; each value out of its range is a problem naming the key.
    pub fn config(&self, problems: &mut Vec<String>) -> AmdConfig {
        let mut c = AmdConfig::default();
        let mut set =
            |key: &str, value: Option<u32>, range: std::ops::RangeInclusive<u32>, field: &mut u32| {
                if let Some(v) = value {
                    if range.contains(&v) {
                        *field = v;
                    } else {
                        problems.push(format!(
                            "amd.{key}: between {} and {} (got {v})",
                            range.start(),
                            range.end()
                        ));
                    }
                }
            };
        set(
            "initial_silence_ms",
            self.initial_silence_ms,
            500..=10_000,
            &mut c.initial_silence_ms,
        );
        set("greeting_ms", self.greeting_ms, 300..=10_000, &mut c.greeting_ms);
        set(
            "after_greeting_silence_ms",
            self.after_greeting_silence_ms,
            100..=5_000,
            &mut c.after_greeting_silence_ms,
        );
        set(
            "total_analysis_ms",
            self.total_analysis_ms,
            1_000..=15_000,
            &mut c.total_analysis_ms,
        );
        set(
            "min_word_length_ms",
            self.min_word_length_ms,
            20..=1_000,
            &mut c.min_word_length_ms,
        );
        set(
            "between_words_silence_ms",
            self.between_words_silence_ms,
            20..=2_000,
            &mut c.between_words_silence_ms,
        );
        set("max_words", self.max_words, 1..=20, &mut c.max_words);
        set(
            "max_word_length_ms",
            self.max_word_length_ms,
            200..=15_000,
            &mut c.max_word_length_ms,
        );
        set(
            "silence_threshold",
            self.silence_threshold,
            1..=32_767,
            &mut c.silence_threshold,
        );
        // The analysis must be able to reach each verdict before it gives up.
        if c.total_analysis_ms <= c.initial_silence_ms {
            problems.push(format!(
                "amd.total_analysis_ms ({}) must be longer than amd.initial_silence_ms ({})",
                c.total_analysis_ms, c.initial_silence_ms
            ));
        }
        if c.total_analysis_ms <= c.greeting_ms {
            problems.push(format!(
                "amd.total_analysis_ms ({}) must be longer than amd.greeting_ms ({})",
                c.total_analysis_ms, c.greeting_ms
            ));
        }
        if c.min_word_length_ms >= c.max_word_length_ms {
            problems.push(format!(
                "amd.min_word_length_ms ({}) must be shorter than amd.max_word_length_ms ({})",
                c.min_word_length_ms, c.max_word_length_ms
            ));
        }
        c
    }
}

fn default_mode() -> CampaignMode {
    CampaignMode::Progressive
}
fn default_pacing() -> String {
    "progressive".into()
}
fn default_state() -> CampaignState {
    CampaignState::Running
}
fn default_tick_ms() -> u64 {
    1000
}
fn default_max_lines() -> u32 {
    20
}

/// A campaign ready to run: the configuration checked against the ACD's queues.
#[derive(Debug, Clone)]
pub struct CampaignSpec {
    pub id: CampaignId,
    pub name: String,
    pub mode: CampaignMode,
    pub queue: Option<QueueId>,
    /// Agents who serve the campaign's queue.
    pub agents: HashSet<AgentId>,
    pub pacing: PolicySpec,
    pub rules: ComplianceRules,
    pub retry: RetryPolicy,
    pub window: CallingWindow,
    pub caller_id: String,
    pub message: PathBuf,
    pub start: CampaignState,
    pub tick: Duration,
    pub max_lines: u32,
    pub amd: AmdConfig,
    /// Preview campaigns: how long a skipped lead waits.
    pub preview_skip: Duration,
}

fn parse_hour(text: &str) -> Option<(u8, u8)> {
    let (h, m) = text.trim().split_once(':')?;
    Some((h.parse().ok()?, m.parse().ok()?))
}

impl CampaignConfig {
    /// Checks the campaign against the ACD configuration; every problem is named.
    pub fn spec(&self, acd: &acd::AcdConfig) -> Result<CampaignSpec, Vec<String>> {
        let mut problems = Vec::new();
        let id = CampaignId::new(&self.id)
            .map_err(|e| problems.push(format!("id {:?}: {e}", self.id)))
            .ok();
        if self.mode == CampaignMode::Preview && self.pacing != default_pacing() {
            problems
                .push("pacing: preview campaigns are not paced (the agent dials); leave pacing out".into());
        }
        if self.preview_skip_secs > 7 * 86_400 {
            problems.push("preview_skip_secs: at most 604800 (a week)".into());
        }
        let queue = match (&self.queue, self.mode) {
            (None, CampaignMode::Agentless) => None,
            (None, _) => {
                problems.push("queue: needed for campaigns that connect agents".into());
                None
            }
            (Some(q), _) => match QueueId::new(q) {
                Ok(q) if acd.queues.iter().any(|c| c.id == q) => Some(q),
                _ => {
                    problems.push(format!("queue {q:?} is not in [[acd.queues]]"));
                    None
                }
            },
        };
        let agents = queue
            .as_ref()
            .map(|q| {
                acd.agents
                    .iter()
                    .filter(|a| a.queues.iter().any(|m| &m.queue == q))
                    .map(|a| a.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        let rules = ComplianceRules::from_config(&self.compliance)
            .map_err(|e| problems.push(format!("compliance: {e}")))
            .ok();
        let pacing = self
            .pacing
            .parse::<PolicySpec>()
            .map_err(|e| problems.push(format!("pacing: {e}")))
            .ok();
        let window = match &self.calling_hours {
            None => Some(CallingWindow::us_default()),
            Some([from, to]) => match (parse_hour(from), parse_hour(to)) {
                (Some(a), Some(b)) => CallingWindow::new(a, b)
                    .map_err(|e| problems.push(format!("calling_hours: {e}")))
                    .ok(),
                _ => {
                    problems.push("calling_hours: write them as [\"08:00\", \"21:00\"]".into());
                    None
                }
            },
        };
        if self.caller_id.is_empty() || self.caller_id.len() > 32 {
            problems.push("caller_id: 1 to 32 characters".into());
        }
        if !self.message.is_file() {
            problems.push(format!("message {}: no such file", self.message.display()));
        }
        if self.tick_ms < 100 || self.tick_ms > 60_000 {
            problems.push("tick_ms: between 100 and 60000".into());
        }
        if self.max_lines == 0 || self.max_lines > 1000 {
            problems.push("max_lines: between 1 and 1000".into());
        }
        let amd = self.amd.config(&mut problems);
        match (id, rules, pacing, window) {
            (Some(id), Some(rules), Some(pacing), Some(window)) if problems.is_empty() => Ok(CampaignSpec {
                name: self.name.clone().unwrap_or_else(|| id.to_string()),
                id,
                mode: self.mode,
                queue,
                agents,
                pacing: pacing.for_rules(&rules),
                rules,
                retry: self.retry.clone(),
                window,
                caller_id: self.caller_id.clone(),
                message: self.message.clone(),
                start: self.state,
                tick: Duration::from_millis(self.tick_ms),
                max_lines: self.max_lines,
                amd,
                preview_skip: Duration::from_secs(self.preview_skip_secs),
            }),
            _ => Err(problems),
        }
    }
}

/// What the runner counts, as the wallboard and `/metrics` show it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CampaignLiveStats {
    pub campaign: String,
    pub state: String,
    pub dials: u64,
    /// Answered calls classified as people.
    pub answered_human: u64,
    pub machines: u64,
    pub connects: u64,
    pub abandons: u64,
    /// Over the rules' rolling window (30 days US, 24 h UK), UK estimate of AMD false positives included.
    pub abandon_rate: f64,
    /// Lines in use per agent serving the campaign (ready or talking).
    pub dial_level: f64,
    pub lines_active: u32,
    pub calls_waiting: u32,
    pub leads_pending: usize,
    pub leads_done: usize,
    pub leads_exhausted: usize,
    pub leads_blocked: usize,
    /// Whether this node dials the campaign (holds its lease).
    pub dialing_here: bool,
    /// Who holds the campaign's lease (this node's or another's holder name), when known.
    pub lease_holder: Option<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CampaignLabel {
    campaign: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    campaign: String,
    outcome: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// The dialer's metrics (`dialer_*`), labelled by campaign id and outcome only.
#[derive(Clone, Default)]
pub struct DialerMetrics {
    dials: Family<CampaignLabel, Counter>,
    connects: Family<CampaignLabel, Counter>,
    abandons: Family<CampaignLabel, Counter>,
    outcomes: Family<OutcomeLabel, Counter>,
    abandon_rate: Family<CampaignLabel, FloatGauge>,
    dial_level: Family<CampaignLabel, FloatGauge>,
    lines: Family<CampaignLabel, Gauge>,
    waiting: Family<CampaignLabel, Gauge>,
    running: Family<CampaignLabel, Gauge>,
}

impl DialerMetrics {
    /// Creates the metrics and registers them under `dialer`.
    pub fn register(telemetry: &telemetry::Telemetry) -> Self {
        let m = Self::default();
        telemetry.register("dialer", |r| {
            r.register("dials", "Numbers dialled", m.dials.clone());
            r.register(
                "connects",
                "People connected to an agent in time",
                m.connects.clone(),
            );
            r.register(
                "abandons",
                "People who got no agent in time (identification message played)",
                m.abandons.clone(),
            );
            r.register("outcomes", "Finished attempts by outcome", m.outcomes.clone());
            r.register(
                "abandon_rate_ratio",
                "Abandoned share of live answers over the compliance window",
                m.abandon_rate.clone(),
            );
            r.register(
                "dial_level_ratio",
                "Lines in use per agent ready or talking",
                m.dial_level.clone(),
            );
            r.register(
                "lines_active",
                "Calls of the campaign in progress",
                m.lines.clone(),
            );
            r.register(
                "calls_waiting",
                "Answered people waiting for an agent",
                m.waiting.clone(),
            );
            r.register(
                "campaign_running",
                "1 while the campaign dials, 0 paused or stopped",
                m.running.clone(),
            );
        });
        m
    }

    fn label(campaign: &CampaignId) -> CampaignLabel {
        CampaignLabel {
            campaign: campaign.to_string(),
        }
    }
}

/// Start, pause, resume and stop a running campaign, and read its figures.
#[derive(Clone)]
pub struct CampaignHandle {
    pub id: CampaignId,
    control: mpsc::UnboundedSender<Control>,
    previews: mpsc::UnboundedSender<PreviewDecision>,
    stats: watch::Receiver<CampaignLiveStats>,
}

/// What an agent does with a previewed lead.
#[derive(Debug)]
pub enum PreviewChoice {
    /// Dial it, as a click-to-dial call from the agent's phone or browser (with its SDP offer).
    Dial {
        media: crate::desk::AgentMedia,
        sdp: Option<String>,
    },
    /// Not now: the lead waits the campaign's skip time.
    Skip,
}

struct PreviewDecision {
    agent: AgentId,
    lead: LeadId,
    choice: PreviewChoice,
    reply: oneshot::Sender<Result<(), crate::desk::Refusal>>,
}

/// What a supervisor asks of a running campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignAction {
    Pause,
    Resume,
    Stop,
}

impl std::str::FromStr for CampaignAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pause" => Ok(Self::Pause),
            "resume" => Ok(Self::Resume),
            "stop" => Ok(Self::Stop),
            _ => Err("the action is pause, resume or stop".into()),
        }
    }
}

type Control = (CampaignAction, oneshot::Sender<Result<CampaignState, String>>);

impl CampaignHandle {
    /// Pauses (no new calls; calls in progress finish), resumes, or stops the campaign for good.
    /// Returns the campaign's state after it, or why the runner refused (a stopped campaign stays
    /// stopped).
    pub async fn control(&self, action: CampaignAction) -> Result<CampaignState, String> {
        let (reply, rx) = oneshot::channel();
        self.control
            .send((action, reply))
            .map_err(|_| "the campaign has ended".to_string())?;
        rx.await.unwrap_or_else(|_| Err("the campaign has ended".into()))
    }
    /// An agent's decision on the lead this campaign previews to them.
    pub async fn preview(
        &self,
        agent: AgentId,
        lead: LeadId,
        choice: PreviewChoice,
    ) -> Result<(), crate::desk::Refusal> {
        let ended = || crate::desk::Refusal::new("unavailable", "the campaign has ended");
        let (reply, rx) = oneshot::channel();
        self.previews
            .send(PreviewDecision {
                agent,
                lead,
                choice,
                reply,
            })
            .map_err(|_| ended())?;
        rx.await.unwrap_or_else(|_| Err(ended()))
    }

    /// The figures as of the last tick or attempt event.
    pub fn stats(&self) -> CampaignLiveStats {
        self.stats.borrow().clone()
    }
    /// Wakes on every change of the figures.
    pub fn watch(&self) -> watch::Receiver<CampaignLiveStats> {
        self.stats.clone()
    }
}

/// The reason code an agent is not ready with while a preview campaign shows them a lead.
pub const PREVIEW_REASON: &str = "preview";

fn is_previewing(state: &AgentState) -> bool {
    matches!(state, AgentState::NotReady { reason } if reason.as_str() == PREVIEW_REASON)
}

/// Namespace of the blobs naming each campaign's dialing node (keyed by campaign id).
pub const DIALER_LEASE_NAMESPACE: &str = "dialer-lease";

/// The state-store lease of a campaign's dialer.
pub fn dialer_lease_name(campaign: &CampaignId) -> String {
    format!("dialer.{campaign}")
}

impl CallControl {
    /// Starts the runner of a campaign. It dials only while it holds the campaign's lease; on taking
    /// it, it loads the leads and their progress from the CRM store.
    pub fn start_campaign(&self, spec: CampaignSpec, metrics: DialerMetrics) -> CampaignHandle {
        let mut campaign = Campaign::new(
            spec.id.clone(),
            spec.mode,
            spec.window,
            spec.retry.clone(),
            spec.rules.clone(),
        );
        if spec.start == CampaignState::Running {
            let _ = campaign.resume();
        }
        let (control, control_rx) = mpsc::unbounded_channel();
        let (previews, previews_rx) = mpsc::unbounded_channel();
        let (stats_tx, stats) = watch::channel(CampaignLiveStats {
            campaign: spec.id.to_string(),
            ..CampaignLiveStats::default()
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = CampaignHandle {
            id: spec.id.clone(),
            control,
            previews,
            stats,
        };
        let span = info_span!("campaign", campaign = %spec.id);
        let saves = ProgressWriter::start(self.inner.crm.clone(), span.clone());
        // At least a few ticks, so one slow tick does not hand the campaign over.
        let lease_ttl = (spec.tick * 3).max(Duration::from_secs(3));
        let settings = DriverSettings {
            mode: spec.mode,
            max_lines: spec.max_lines,
            preview_skip: spec.preview_skip,
        };
        let driver = CampaignDriver::new(
            campaign,
            spec.pacing.build(),
            AbandonLedger::new(spec.rules.clone()),
            settings,
        );
        let runner = Runner {
            inner: self.inner.clone(),
            driver,
            lease_name: dialer_lease_name(&spec.id),
            holder: format!("{}/{:08x}", self.inner.node, rand::random::<u32>()),
            lease: None,
            lease_ttl,
            loaded: false,
            lead_info: HashMap::new(),
            spec: Arc::new(spec),
            dnc: HashSet::new(),
            counts: CampaignLiveStats::default(),
            metrics,
            tx,
            stats: stats_tx,
            saves,
        };
        tokio::spawn(runner.run(rx, control_rx, previews_rx).instrument(span));
        handle
    }
}

/// Saves lead progress and campaign status in the CRM store in the order the runner made the
/// changes, without holding the runner up.
struct ProgressWriter {
    tx: mpsc::UnboundedSender<Save>,
}

enum Save {
    Lead(LeadId, crm_store::LeadProgress),
    Status(CampaignId, &'static str),
    DoNotCall(Pii<String>, AgentId, Timestamp),
}

impl ProgressWriter {
    fn start(crm: crm_store::CrmStore, span: tracing::Span) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Save>();
        tokio::spawn(
            async move {
                while let Some(save) = rx.recv().await {
                    let done = match &save {
                        Save::Lead(lead, p) => {
                            tokio::time::timeout(Duration::from_secs(5), crm.save_lead_progress(lead, p))
                                .await
                        }
                        Save::Status(id, status) => {
                            tokio::time::timeout(Duration::from_secs(5), crm.set_campaign_status(id, status))
                                .await
                        }
                        Save::DoNotCall(number, agent, at) => tokio::time::timeout(
                            Duration::from_secs(5),
                            crm.add_do_not_call(number.expose(), "agent", agent.as_str(), *at),
                        )
                        .await
                        .map(|r| r.map(|()| true)),
                    };
                    match done {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => warn!(error = %e, "campaign progress not stored"),
                        Err(_) => warn!("campaign progress not stored in time"),
                    }
                }
            }
            .instrument(span),
        );
        Self { tx }
    }

    fn lead(&self, lead: &Lead, last: Option<Disposition>, attempt_at: Option<Timestamp>) {
        let _ = self.tx.send(Save::Lead(
            lead.id.clone(),
            stored_progress(lead, last, attempt_at),
        ));
    }

    fn do_not_call(&self, number: Pii<String>, agent: &AgentId, at: Timestamp) {
        let _ = self.tx.send(Save::DoNotCall(number, agent.clone(), at));
    }

    fn status(&self, campaign: &CampaignId, state: CampaignState) {
        let _ = self.tx.send(Save::Status(campaign.clone(), stored_state(state)));
    }
}

/// The campaign status the CRM store keeps for a state.
fn stored_state(state: CampaignState) -> &'static str {
    match state {
        CampaignState::Running => "running",
        CampaignState::Paused => "paused",
        CampaignState::Stopped => "finished",
    }
}

/// A lead's progress as the CRM store keeps it. `last` is how the attempt just finished (it names the
/// status of a lead that will be retried).
fn stored_progress(
    lead: &Lead,
    last: Option<Disposition>,
    attempt_at: Option<Timestamp>,
) -> crm_store::LeadProgress {
    let by = |d| lead.attempts_by.get(&d).copied().unwrap_or(0);
    let status = match lead.status {
        LeadStatus::Pending if lead.callback.is_some() => "callback",
        LeadStatus::Pending if lead.attempts == 0 => "new",
        LeadStatus::Pending => last.map(disposition_name).unwrap_or("pending"),
        LeadStatus::InProgress => "dialing",
        LeadStatus::Done => "done",
        LeadStatus::Exhausted => "exhausted",
        LeadStatus::Blocked => "dnc",
    };
    crm_store::LeadProgress {
        status: status.to_string(),
        attempts: lead.attempts,
        busy_attempts: by(Disposition::Busy),
        no_answer_attempts: by(Disposition::NoAnswer),
        machine_attempts: by(Disposition::Machine),
        abandoned_attempts: by(Disposition::Abandoned),
        failed_attempts: by(Disposition::Failed),
        last_attempt_at: attempt_at,
        next_attempt_at: (lead.status == LeadStatus::Pending).then_some(lead.next_attempt_at),
        last_abandoned_at: lead.last_abandoned_at,
        callback_at: lead.callback.as_ref().map(|c| c.at),
        callback_agent: lead.callback.as_ref().and_then(|c| c.agent.clone()),
    }
}

/// The pure campaign's view of a stored lead, or None for a status the dialer does not know.
fn restored_progress(p: &crm_store::LeadProgress) -> Option<LeadProgress> {
    let status = match p.status.as_str() {
        "new" | "pending" | "callback" | "busy" | "no_answer" | "machine" | "abandoned" | "failed" => {
            LeadStatus::Pending
        }
        "dialing" => LeadStatus::InProgress,
        "done" | "contacted" | "completed" | "do_not_call" => LeadStatus::Done,
        "exhausted" | "expired" => LeadStatus::Exhausted,
        "dnc" => LeadStatus::Blocked,
        _ => return None,
    };
    let attempts_by = [
        (Disposition::Busy, p.busy_attempts),
        (Disposition::NoAnswer, p.no_answer_attempts),
        (Disposition::Machine, p.machine_attempts),
        (Disposition::Abandoned, p.abandoned_attempts),
        (Disposition::Failed, p.failed_attempts),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect();
    Some(LeadProgress {
        status,
        attempts: p.attempts,
        attempts_by,
        next_attempt_at: p.next_attempt_at,
        last_abandoned_at: p.last_abandoned_at,
        callback: p.callback_at.map(|at| Callback {
            at,
            agent: p.callback_agent.clone(),
        }),
    })
}

/// What an attempt tells its runner.
#[derive(Debug)]
enum Note {
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
        wants: CampaignWrapUp,
    },
}

struct Runner {
    inner: Arc<Inner>,
    spec: Arc<CampaignSpec>,
    /// The campaign's decisions (leads, pacing, ledger, attempts, previews).
    driver: CampaignDriver,
    dnc: HashSet<String>,
    counts: CampaignLiveStats,
    metrics: DialerMetrics,
    tx: mpsc::UnboundedSender<Note>,
    stats: watch::Sender<CampaignLiveStats>,
    /// The campaign's lease in the state store, and this runner's name as its holder.
    lease_name: String,
    holder: String,
    lease: Option<state_store::Lease>,
    lease_ttl: Duration,
    /// Whether the leads were loaded since the lease was taken.
    loaded: bool,
    saves: ProgressWriter,
    /// Names and linked customers of the leads (for previews).
    lead_info: HashMap<LeadId, (Option<Pii<String>>, Option<domain::CustomerId>)>,
}

impl Runner {
    async fn run(
        mut self,
        mut notes: mpsc::UnboundedReceiver<Note>,
        mut control: mpsc::UnboundedReceiver<Control>,
        mut previews: mpsc::UnboundedReceiver<PreviewDecision>,
    ) {
        info!(mode = ?self.spec.mode, pacing = %self.spec.pacing, "campaign runner started");
        let mut tick = tokio::time::interval(self.spec.tick);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut control_open = true;
        let mut states = self.inner.acd.subscribe_agent_states();
        loop {
            tokio::select! {
                _ = tick.tick() => self.tick().await,
                ev = states.recv() => match ev {
                    Ok(ev) => self.on_agent_state(ev),
                    // Missed changes only cost a few handle-time samples.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        states = self.inner.acd.subscribe_agent_states();
                    }
                },
                Some(note) = notes.recv() => self.on_note(note),
                c = control.recv(), if control_open => match c {
                    Some(c) => self.on_control(c),
                    None => control_open = false,
                },
                Some(d) = previews.recv() => self.on_preview_decision(d).await,
            }
            self.carry_out();
            self.publish();
            if self.driver.is_done() {
                info!("campaign stopped");
                self.give_up_lease().await;
                return;
            }
        }
    }

    /// Carries out what the campaign's driver asks.
    fn carry_out(&mut self) {
        let label = DialerMetrics::label(&self.spec.id);
        while let Some(command) = self.driver.poll_command() {
            match command {
                DriverCommand::Save(DriverSave::Lead {
                    lead,
                    last,
                    attempt_at,
                }) => {
                    self.saves.lead(&lead, last, attempt_at);
                }
                DriverCommand::Save(DriverSave::Status(state)) => self.saves.status(&self.spec.id, state),
                DriverCommand::Save(DriverSave::DoNotCall { number, agent, at }) => {
                    info!(%agent, "the person asked not to be called again");
                    self.dnc.insert(number.expose().clone());
                    self.saves.do_not_call(number, &agent, at);
                }
                DriverCommand::Place(request) => self.place(request),
                DriverCommand::EndPreview { agent, reason } => {
                    self.inner.desks.end_preview(&agent, reason.as_deref());
                }
                DriverCommand::Count(Count::Dial) => {
                    self.counts.dials += 1;
                    self.metrics.dials.get_or_create(&label).inc();
                }
                DriverCommand::Count(Count::Connect) => {
                    self.metrics.connects.get_or_create(&label).inc();
                }
                DriverCommand::Count(Count::Abandon) => {
                    self.metrics.abandons.get_or_create(&label).inc();
                }
                DriverCommand::Count(Count::Outcome(disposition)) => {
                    self.metrics
                        .outcomes
                        .get_or_create(&OutcomeLabel {
                            campaign: self.spec.id.to_string(),
                            outcome: disposition_name(disposition).into(),
                        })
                        .inc();
                }
            }
        }
    }

    /// Keeps (renews) or takes the campaign's lease; true while this runner may place calls. A store
    /// that does not answer means no new calls: another node may hold the lease by now.
    async fn keep_lease(&mut self, now: Timestamp) -> bool {
        let store = &self.inner.state;
        let result = match &self.lease {
            Some(lease) => store.renew_lease(lease, self.lease_ttl, now).await,
            None => {
                store
                    .acquire_lease(&self.lease_name, &self.holder, self.lease_ttl, now)
                    .await
            }
        };
        match result {
            Ok(Some(lease)) => {
                if self.lease.is_none() {
                    info!(holder = %self.holder, token = lease.token.0, "campaign lease taken: this node dials");
                }
                // Standbys read who dials from here; a former holder's fence cannot overwrite it.
                let write = state_store::BlobWrite::new()
                    .ttl(self.lease_ttl)
                    .fenced(lease.fence());
                if let Err(e) = store
                    .put_blob(
                        DIALER_LEASE_NAMESPACE,
                        self.spec.id.as_str(),
                        self.holder.as_bytes(),
                        &write,
                        now,
                    )
                    .await
                {
                    warn!(error = %e, "campaign lease holder not published");
                }
                self.lease = Some(lease);
                self.counts.lease_holder = Some(self.holder.clone());
                self.counts.dialing_here = true;
                true
            }
            Ok(None) => {
                if self.lease.take().is_some() {
                    warn!("campaign lease lost: no new calls from this node (calls in progress finish)");
                }
                // The leads are loaded afresh if the lease comes back: the other node moved them on.
                self.loaded = false;
                self.counts.dialing_here = false;
                self.counts.lease_holder = match store
                    .get_blob(DIALER_LEASE_NAMESPACE, self.spec.id.as_str(), now)
                    .await
                {
                    Ok(Some(blob)) => Some(String::from_utf8_lossy(&blob.value).into_owned()),
                    _ => None,
                };
                false
            }
            Err(e) => {
                warn!(error = %e, "campaign lease not confirmed: no new calls");
                self.counts.dialing_here = false;
                false
            }
        }
    }

    /// Lets a standby take over at once (a stopped campaign: it reads the stored status and stops).
    async fn give_up_lease(&mut self) {
        if let Some(lease) = self.lease.take() {
            let store = &self.inner.state;
            let _ = store
                .delete_blob(
                    DIALER_LEASE_NAMESPACE,
                    self.spec.id.as_str(),
                    Some(&lease.fence()),
                )
                .await;
            if let Err(e) = store.release_lease(&lease).await {
                warn!(error = %e, "campaign lease not released; it lapses");
            }
        }
    }

    /// Loads the campaign's status and its leads with their saved progress (on taking the lease).
    /// False when the store cannot be read: nothing is dialled then.
    async fn load(&mut self, now: Timestamp) -> bool {
        let crm = &self.inner.crm;
        let timeout = Duration::from_secs(10);
        let stored = match tokio::time::timeout(timeout, crm.campaign(&self.spec.id)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                warn!(error = %e, "campaign not readable; not dialling");
                return false;
            }
            Err(_) => {
                warn!("campaign not read in time; not dialling");
                return false;
            }
        };
        let rows = match tokio::time::timeout(timeout, crm.campaign_lead_progress(&self.spec.id)).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                warn!(error = %e, "leads not readable; not dialling");
                return false;
            }
            Err(_) => {
                warn!("leads not read in time; not dialling");
                return false;
            }
        };
        let spec = &self.spec;
        let mut campaign = Campaign::new(
            spec.id.clone(),
            spec.mode,
            spec.window,
            spec.retry.clone(),
            spec.rules.clone(),
        );
        // A supervisor's pause or stop, kept by the store, wins over this node's own state.
        let state = match stored.as_ref().map(|c| c.status.as_str()) {
            Some("paused") => CampaignState::Paused,
            Some("finished") => CampaignState::Stopped,
            Some("running") => CampaignState::Running,
            _ => self.driver.campaign().state(),
        };
        match state {
            CampaignState::Running => {
                let _ = campaign.resume();
            }
            CampaignState::Paused => {}
            CampaignState::Stopped => campaign.stop(),
        }
        let mut interrupted = Vec::new();
        self.lead_info.clear();
        for (record, saved) in rows {
            let id = record.id.clone();
            self.lead_info
                .insert(id.clone(), (record.name.clone(), record.customer.clone()));
            let Some(progress) = restored_progress(&saved) else {
                warn!(lead = %id, "lead left out: unknown stored status");
                continue;
            };
            let lead = NewLead {
                id: record.id,
                phone: record.phone,
                time_zone: record.timezone,
            };
            let was_dialling = progress.status == LeadStatus::InProgress;
            match campaign.restore_lead(lead, progress, now) {
                Ok(_) if was_dialling => interrupted.push(id),
                Ok(_) => {}
                Err(e) => warn!(lead = %id, error = %e, "lead left out"),
            }
        }
        let leads = campaign.stats();
        info!(
            pending = leads.pending,
            done = leads.done,
            exhausted = leads.exhausted,
            blocked = leads.blocked,
            interrupted = interrupted.len(),
            state = stored_state(campaign.state()),
            "campaign leads loaded"
        );
        self.driver.replace_campaign(campaign);
        for id in &interrupted {
            self.driver.save_lead(id, Some(Disposition::Failed), None);
        }
        self.loaded = true;
        true
    }

    /// Talk and after-call work of the campaign's agents, for the policy's handle-time estimates;
    /// an agent who leaves the preview gives its lead back.
    fn on_agent_state(&mut self, ev: crate::AgentStateEvent) {
        if !self.spec.agents.contains(&ev.agent) {
            return;
        }
        let left = match ev.from {
            AgentState::OnCall => Left::Talk,
            AgentState::WrapUp { .. } => Left::WrapUp,
            _ => Left::Other,
        };
        self.driver
            .agent_changed(&ev.agent, ev.at, left, is_previewing(&ev.to));
    }

    fn on_control(&mut self, (action, reply): Control) {
        let result = self.driver.control(|campaign| match action {
            CampaignAction::Pause => campaign.pause(),
            CampaignAction::Resume => campaign.resume(),
            CampaignAction::Stop => {
                campaign.stop();
                Ok(())
            }
        });
        match &result {
            Ok(state) => info!(?state, "campaign state changed"),
            Err(e) => warn!(error = %e, "campaign control refused"),
        }
        let _ = reply.send(result.map_err(|e| e.to_string()));
    }

    async fn tick(&mut self) {
        let now = Timestamp::now_utc();
        if !self.keep_lease(now).await {
            return;
        }
        if !self.loaded && !self.load(now).await {
            return;
        }
        if self.spec.mode == CampaignMode::Preview {
            return self.preview_tick(now).await;
        }
        let agents = campaign_agents(&self.inner, &self.spec).await;
        let dials = self.driver.dials_wanted(now, &agents);
        if dials == 0 || !self.read_dnc().await {
            return;
        }
        let ready = ready_agents(&self.inner, &self.spec).await;
        self.driver.place(now, dials, &self.dnc, &|a| ready.contains(a));
    }

    /// Reads the do-not-call list right before dialling; false (dial nothing) if it cannot be read.
    async fn read_dnc(&mut self) -> bool {
        match tokio::time::timeout(Duration::from_secs(2), self.inner.crm.do_not_call_numbers()).await {
            Ok(Ok(numbers)) => {
                self.dnc = numbers;
                true
            }
            Ok(Err(e)) => {
                warn!(error = %e, "do-not-call list unreadable; not dialling");
                false
            }
            Err(_) => {
                warn!("do-not-call list not read in time; not dialling");
                false
            }
        }
    }

    /// Preview campaigns: each ready agent of the queue with a desktop and no call is shown the next
    /// lead (window, do-not-call, retries and callbacks as for any campaign) and made not ready
    /// (`preview`) while they decide, so the ACD offers them nothing meanwhile.
    async fn preview_tick(&mut self, now: Timestamp) {
        // A desktop that went away gives its lead back.
        let gone: Vec<AgentId> = self
            .driver
            .previewing_agents()
            .filter(|a| self.inner.desks.desk_media(a).is_none())
            .cloned()
            .collect();
        for agent in gone {
            self.driver.end_preview(&agent, now, "desktop closed");
        }
        self.driver.end_previews_unless_running(now);
        if !self.driver.previews_wanted() {
            return;
        }
        let free: Vec<AgentId> = ready_agents(&self.inner, &self.spec)
            .await
            .into_iter()
            .filter(|a| {
                !self.driver.is_previewing(a)
                    && self.inner.desks.desk_media(a).is_some()
                    && !self.inner.desks.busy(a)
            })
            .collect();
        if free.is_empty() || !self.read_dnc().await {
            return;
        }
        for agent in free {
            let Some(request) = self.driver.reserve_preview(now, &self.dnc, &agent) else {
                break;
            };
            let reason = match acd::ReasonCode::new(PREVIEW_REASON) {
                Ok(r) => r,
                Err(_) => return,
            };
            let taken = self
                .inner
                .acd
                .request(acd::Input::AgentNotReady {
                    agent: agent.clone(),
                    reason,
                })
                .await;
            if let Err(e) = taken {
                // Offered a call meanwhile, or gone: the lead stays for someone else.
                info!(%agent, error = %e, "agent not free for a preview");
                self.driver.unreserve(now, &request.lead);
                continue;
            }
            let (name, customer) = self.lead_info.get(&request.lead).cloned().unwrap_or_default();
            let card = match customer {
                Some(id) => {
                    tokio::time::timeout(Duration::from_millis(500), self.inner.crm.customer_card(&id))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .flatten()
                }
                None => None,
            };
            let callback = self
                .driver
                .campaign()
                .lead(&request.lead)
                .is_some_and(|l| l.callback.is_some());
            info!(%agent, lead = %request.lead, attempt = request.attempt, "lead previewed");
            self.inner.desks.offer_preview(
                &agent,
                Arc::new(crate::desk::PreviewOffer {
                    campaign: self.spec.id.clone(),
                    lead: request.lead.clone(),
                    name,
                    phone: request.phone.clone(),
                    attempt: request.attempt,
                    callback,
                    customer: card,
                }),
            );
            self.driver.previewing(agent, request);
        }
    }

    async fn on_preview_decision(&mut self, d: PreviewDecision) {
        let now = Timestamp::now_utc();
        let Some(p) = self.driver.take_preview(&d.agent, &d.lead) else {
            let _ = d.reply.send(Err(crate::desk::Refusal::new(
                "no_preview",
                "that lead is not being previewed to you",
            )));
            return;
        };
        match d.choice {
            PreviewChoice::Skip => {
                self.driver.skip(now, &d.agent, &p);
                self.carry_out();
                info!(agent = %d.agent, lead = %p.lead, "preview skipped");
                // Ready for the next lead.
                let back = self
                    .inner
                    .acd
                    .request(acd::Input::AgentReady {
                        agent: d.agent.clone(),
                    })
                    .await;
                let _ = d
                    .reply
                    .send(back.map_err(|e| crate::desk::Refusal::new("illegal_transition", e.to_string())));
            }
            PreviewChoice::Dial { media, sdp } => {
                // The list is checked again at dial time: the agent may have looked for a while.
                let listed = tokio::time::timeout(
                    Duration::from_secs(2),
                    self.inner.crm.is_do_not_call(p.phone.expose()),
                )
                .await;
                if !matches!(listed, Ok(Ok(false))) {
                    let refusal = if matches!(listed, Ok(Ok(true))) {
                        self.driver.listed_meanwhile(now, &d.agent, &p);
                        self.carry_out();
                        let _ = self
                            .inner
                            .acd
                            .request(acd::Input::AgentReady {
                                agent: d.agent.clone(),
                            })
                            .await;
                        crate::desk::Refusal::new("do_not_call", "the number is on the do-not-call list now")
                    } else {
                        // Unknown: keep the preview; the agent may try again.
                        self.driver.keep_preview(d.agent.clone(), p);
                        crate::desk::Refusal::new("unavailable", "the do-not-call list cannot be read")
                    };
                    let _ = d.reply.send(Err(refusal));
                    return;
                }
                let link = PreviewDial {
                    spec: self.spec.clone(),
                    agent: d.agent.clone(),
                    lead: p.lead.clone(),
                    phone: p.phone.clone(),
                    attempt: p.attempt,
                    tx: self.tx.clone(),
                };
                let Ok(number) = crate::desk::DialNumber::try_from(p.phone.expose().clone()) else {
                    // Stored numbers are E.164; one that is not cannot be dialled at all.
                    self.driver.undiallable(now, &d.agent, &p);
                    let _ = d.reply.send(Err(crate::desk::Refusal::new(
                        "bad_number",
                        "the lead's number cannot be dialled",
                    )));
                    return;
                };
                let inner = self.inner.clone();
                let tx = self.tx.clone();
                let agent = d.agent;
                tokio::spawn(
                    async move {
                        let placed =
                            crate::outbound::dial(inner, agent.clone(), number, media, sdp, Some(link)).await;
                        let answer = match placed {
                            Ok(_) => Ok(()),
                            Err(refusal) => {
                                let _ = tx.send(Note::PreviewRefused { agent, previewed: p });
                                Err(refusal)
                            }
                        };
                        let _ = d.reply.send(answer);
                    }
                    .in_current_span(),
                );
            }
        }
    }

    /// Starts the attempt the driver asked for.
    fn place(&mut self, request: DialRequest) {
        let now = Timestamp::now_utc();
        let inner = &self.inner;
        let id = CallId::generate(&inner.node, now, inner.next_counter(), rand::random());
        let span = info_span!("call", call = %id, direction = "outbound", lead = %request.lead, attempt = request.attempt);
        let attempt = Attempt {
            inner: inner.clone(),
            spec: self.spec.clone(),
            tx: self.tx.clone(),
            id,
            request,
            started: now,
        };
        tokio::spawn(attempt.run().instrument(span));
    }

    fn on_note(&mut self, note: Note) {
        let now = Timestamp::now_utc();
        let report = match note {
            Note::Resolved {
                lead,
                dialed_at,
                result,
            } => Report::Resolved {
                lead,
                dialed_at,
                result,
            },
            Note::Waiting { lead } => Report::Waiting { lead },
            Note::Connected { lead, waited } => Report::Connected { lead, waited },
            Note::Abandoned { lead } => Report::Abandoned { lead },
            Note::Finished { lead, disposition } => {
                info!(%lead, outcome = disposition_name(disposition), "attempt finished");
                Report::Finished { lead, disposition }
            }
            Note::PreviewPlaced { lead, agent } => {
                info!(%lead, %agent, "previewed lead dialled");
                Report::PreviewPlaced { lead, agent }
            }
            Note::PreviewRefused { agent, previewed } => Report::PreviewRefused { agent, previewed },
            Note::WrappedUp { lead, agent, wants } => Report::WrappedUp {
                lead,
                agent,
                wish: WrapUpWish {
                    do_not_call: wants.do_not_call,
                    callback: wants.callback.map(|c| (c.at, c.personal)),
                },
            },
        };
        self.driver.report(now, report);
    }

    fn publish(&mut self) {
        let now = Timestamp::now_utc();
        let label = DialerMetrics::label(&self.spec.id);
        let stats = self.driver.stats(now);
        let c = &mut self.counts;
        c.campaign = self.spec.id.to_string();
        c.state = format!("{:?}", stats.state).to_lowercase();
        c.dials = stats.counts.dials;
        c.answered_human = stats.counts.answered_human;
        c.machines = stats.counts.machines;
        c.connects = stats.counts.connects;
        c.abandons = stats.counts.abandons;
        c.abandon_rate = stats.abandon_rate;
        c.dial_level = stats.dial_level;
        c.lines_active = stats.lines_active;
        c.calls_waiting = stats.calls_waiting;
        c.leads_pending = stats.leads.pending;
        c.leads_done = stats.leads.done;
        c.leads_exhausted = stats.leads.exhausted;
        c.leads_blocked = stats.leads.blocked;
        self.metrics
            .abandon_rate
            .get_or_create(&label)
            .set(c.abandon_rate);
        self.metrics.dial_level.get_or_create(&label).set(c.dial_level);
        self.metrics
            .lines
            .get_or_create(&label)
            .set(i64::from(c.lines_active));
        self.metrics
            .waiting
            .get_or_create(&label)
            .set(i64::from(c.calls_waiting));
        self.metrics
            .running
            .get_or_create(&label)
            .set(i64::from(stats.state == CampaignState::Running));
        let counts = c.clone();
        self.stats.send_if_modified(|s| {
            let changed = *s != counts;
            *s = counts;
            changed
        });
    }
}

/// The campaign's agents who are ready now (a personal callback is only dialled for one of them).
async fn ready_agents(inner: &Inner, spec: &CampaignSpec) -> HashSet<AgentId> {
    let Some(kpis) = inner.acd.kpis().await else {
        return HashSet::new();
    };
    kpis.agents
        .into_iter()
        .filter(|a| spec.agents.contains(&a.agent) && a.state == AgentState::Available)
        .map(|a| a.agent)
        .collect()
}

/// The agents of the campaign's queue as the pacing policy sees them.
async fn campaign_agents(inner: &Inner, spec: &CampaignSpec) -> Vec<AgentView> {
    if spec.mode == CampaignMode::Agentless {
        return Vec::new();
    }
    let Some(kpis) = inner.acd.kpis().await else {
        return Vec::new();
    };
    kpis.agents
        .into_iter()
        .filter(|a| spec.agents.contains(&a.agent))
        .filter_map(|a| {
            let activity = match a.state {
                AgentState::Available => AgentActivity::Ready,
                AgentState::Reserved | AgentState::OnCall => AgentActivity::OnCall,
                AgentState::WrapUp { .. } => AgentActivity::WrapUp,
                _ => return None,
            };
            Some(AgentView {
                activity,
                since: a.since,
            })
        })
        .collect()
}

/// The stored and metric name of a disposition.
pub fn disposition_name(d: Disposition) -> &'static str {
    match d {
        Disposition::Busy => "busy",
        Disposition::NoAnswer => "no_answer",
        Disposition::Machine => "machine",
        Disposition::Abandoned => "abandoned",
        Disposition::Completed => "completed",
        Disposition::Failed => "failed",
        Disposition::DoNotCallRequest => "do_not_call",
    }
}

/// What a campaign's call (a live dialer's answered person, or a preview's placed call) tells its
/// runner; the call's session says when ([`call_session::CampaignNote`]).
pub(crate) struct CallLink {
    campaign: CampaignId,
    lead: LeadId,
    /// When the greeting was judged a person's (live dialer); waits are counted from it.
    verdict_at: Option<Timestamp>,
    tx: mpsc::UnboundedSender<Note>,
}

impl CallLink {
    /// An agent took the call at `at`.
    pub(crate) fn connected(&self, at: Timestamp) {
        let waited = self.verdict_at.map(|v| at.since(v)).unwrap_or_default();
        let _ = self.tx.send(Note::Connected {
            lead: self.lead.clone(),
            waited,
        });
    }

    /// Nobody in time: the identification message plays.
    pub(crate) fn abandoned(&self) {
        let _ = self.tx.send(Note::Abandoned {
            lead: self.lead.clone(),
        });
    }

    /// The agent's wrap-up asks the campaign to close the lead (do not call) or call it back.
    pub(crate) fn wrapped_up(&self, agent: &AgentId, wants: CampaignWrapUp) {
        let _ = self.tx.send(Note::WrappedUp {
            lead: self.lead.clone(),
            agent: agent.clone(),
            wants,
        });
    }

    /// The campaign and lead, for the agent's screen pop.
    pub(crate) fn pop(&self) -> crate::desk::CampaignPop {
        crate::desk::CampaignPop {
            campaign: self.campaign.clone(),
            lead: self.lead.clone(),
        }
    }
}

/// The disposition a session's `dial_attempt` outcome names.
fn disposition_named(name: &str) -> Option<Disposition> {
    [
        Disposition::Completed,
        Disposition::Busy,
        Disposition::NoAnswer,
        Disposition::Machine,
        Disposition::Abandoned,
        Disposition::Failed,
        Disposition::DoNotCallRequest,
    ]
    .into_iter()
    .find(|d| disposition_name(*d) == name)
}

/// A preview campaign's call, placed by its agent through the click-to-dial path
/// ([`crate::outbound`]): what it shows and records for the campaign (the attempt row, the lead's
/// result); the session logs the interaction's `dial_attempt` events.
#[derive(Clone)]
pub(crate) struct PreviewDial {
    spec: Arc<CampaignSpec>,
    agent: AgentId,
    lead: LeadId,
    phone: Pii<String>,
    attempt: u32,
    tx: mpsc::UnboundedSender<Note>,
}

impl PreviewDial {
    /// The number the called person sees.
    pub(crate) fn caller_id(&self) -> &str {
        &self.spec.caller_id
    }

    /// The campaign and lead, as the session knows them.
    pub(crate) fn session_link(&self) -> call_session::CampaignLink {
        call_session::CampaignLink {
            campaign: self.spec.id.clone(),
            lead: self.lead.clone(),
        }
    }

    /// The call's link to the runner: the agent is on the line first, so a connection waited for
    /// nothing.
    pub(crate) fn link(&self) -> CallLink {
        CallLink {
            campaign: self.spec.id.clone(),
            lead: self.lead.clone(),
            verdict_at: None,
            tx: self.tx.clone(),
        }
    }

    /// The call is under way: the runner counts the attempt (before the call can report its end).
    pub(crate) fn placed(&self) {
        let _ = self.tx.send(Note::PreviewPlaced {
            lead: self.lead.clone(),
            agent: self.agent.clone(),
        });
    }

    pub(crate) fn row(&self, id: &CallId, started: Timestamp) -> crm_store::DialAttempt {
        crm_store::DialAttempt {
            id: id.to_string(),
            campaign: self.spec.id.clone(),
            lead: self.lead.clone(),
            attempt: self.attempt,
            phone: self.phone.clone(),
            started_at: started,
            answered_at: None,
            amd_result: None,
            agent: None,
            connected_at: None,
            ended_at: None,
            outcome: "dialing".into(),
            abandoned: false,
        }
    }

    pub(crate) async fn store(&self, inner: &Inner, row: &crm_store::DialAttempt) {
        store_attempt(inner, row).await;
    }

    /// The call has ended: its row is completed from how it went and the runner records the lead's
    /// result.
    pub(crate) async fn finish_call(
        &self,
        inner: &Inner,
        mut row: crm_store::DialAttempt,
        outcome: &crate::driver::Outcome,
    ) {
        if let Some((agent, at)) = &outcome.connected {
            row.agent = Some(agent.clone());
            row.answered_at = Some(*at);
            row.connected_at = Some(*at);
        }
        let disposition = match outcome.dial_outcome.as_deref().and_then(disposition_named) {
            Some(d) => d,
            None if outcome.connected.is_some() => Disposition::Completed,
            None => Disposition::Failed,
        };
        row.ended_at = Some(Timestamp::now_utc());
        row.outcome = disposition_name(disposition).to_string();
        store_attempt(inner, &row).await;
        let _ = self.tx.send(Note::Finished {
            lead: self.lead.clone(),
            disposition,
        });
    }
}

async fn store_attempt(inner: &Inner, row: &crm_store::DialAttempt) {
    match tokio::time::timeout(Duration::from_secs(5), inner.crm.record_dial_attempt(row)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "dial attempt not stored"),
        Err(_) => warn!("dial attempt not stored in time"),
    }
}

/// One dial attempt, from placing the call to its end.
struct Attempt {
    inner: Arc<Inner>,
    spec: Arc<CampaignSpec>,
    tx: mpsc::UnboundedSender<Note>,
    id: CallId,
    request: DialRequest,
    started: Timestamp,
}

/// How the ringing ended.
enum Rung {
    Answered(media::sdp::Negotiated),
    NotAnswered(Disposition, DialResult),
}

impl Attempt {
    fn row(&self) -> crm_store::DialAttempt {
        crm_store::DialAttempt {
            id: self.id.to_string(),
            campaign: self.spec.id.clone(),
            lead: self.request.lead.clone(),
            attempt: self.request.attempt,
            phone: self.request.phone.clone(),
            started_at: self.started,
            answered_at: None,
            amd_result: None,
            agent: None,
            connected_at: None,
            ended_at: None,
            outcome: "dialing".into(),
            abandoned: false,
        }
    }

    async fn store(&self, row: &crm_store::DialAttempt) {
        store_attempt(&self.inner, row).await;
    }

    fn note(&self, note: Note) {
        let _ = self.tx.send(note);
    }

    fn resolved(&self, result: DialResult) {
        self.note(Note::Resolved {
            lead: self.request.lead.clone(),
            dialed_at: self.started,
            result,
        });
    }

    fn dial_event(&self, outcome: &str) -> InteractionEventKind {
        InteractionEventKind::DialAttempt {
            campaign: self.spec.id.clone(),
            lead: self.request.lead.clone(),
            outcome: outcome.to_string(),
        }
    }

    async fn run(self) {
        let mut row = self.row();
        self.store(&row).await;
        let Ok(interaction) = InteractionId::new(self.id.as_str()) else {
            return self.finish(row, Disposition::Failed).await;
        };
        let mut timeline = Timeline::new(interaction);
        self.inner.log(timeline.event(
            self.started,
            InteractionEventKind::Arrived {
                channel: Channel::Voice,
                direction: Direction::Outbound,
                from: Pii::new(self.spec.caller_id.clone()),
                to: self.request.phone.clone(),
            },
        ));
        let ring = self.spec.rules.ring_time;
        let dialled = crate::driver::legs::dial_number(
            &self.inner,
            self.request.phone.expose(),
            &self.spec.caller_id,
            ring,
        )
        .await;
        let Some((mut leg, rtp, mut media)) = dialled else {
            self.resolved(DialResult::Failed);
            return self.not_reached(row, timeline, Disposition::Failed).await;
        };
        // Ringing, for at least the compliance ring time (the gateway cancels after it).
        let rung = loop {
            match leg.next_event().await {
                Some(LegEvent::Answered { sdp }) => match negotiate(&sdp) {
                    Some(n) => break Rung::Answered(n),
                    None => {
                        leg.hangup();
                        break Rung::NotAnswered(Disposition::Failed, DialResult::Failed);
                    }
                },
                Some(LegEvent::Ringing | LegEvent::Reoffer { .. }) => {}
                Some(LegEvent::Failed { code }) => {
                    break match code {
                        486 | 600 | 603 => Rung::NotAnswered(Disposition::Busy, DialResult::Busy),
                        408 | 480 | 487 => Rung::NotAnswered(Disposition::NoAnswer, DialResult::NoAnswer),
                        _ => Rung::NotAnswered(Disposition::Failed, DialResult::Failed),
                    };
                }
                Some(LegEvent::Hangup) | None => {
                    break Rung::NotAnswered(Disposition::NoAnswer, DialResult::NoAnswer);
                }
            }
        };
        let negotiated = match rung {
            Rung::Answered(n) => n,
            Rung::NotAnswered(disposition, result) => {
                self.resolved(result);
                return self.not_reached(row, timeline, disposition).await;
            }
        };
        let law = negotiated.law;
        rtp.set_remote(negotiated);
        row.answered_at = Some(Timestamp::now_utc());
        info!("answered; analysing the greeting");
        // The greeting: a person says a word or two and waits, a machine talks on.
        rtp.detect_answering_machine(self.spec.amd);
        let analysis = Duration::from_millis(u64::from(self.spec.amd.total_analysis_ms) + 1000);
        let until = Instant::now() + analysis;
        let verdict = loop {
            tokio::select! {
                ev = media.recv() => match ev {
                    Some(MediaEvent::AnsweringMachine(r)) => break Some(r.decision),
                    Some(_) => {}
                    None => break None,
                },
                ev = leg.next_event() => match ev {
                    Some(LegEvent::Hangup) | None => break None,
                    Some(_) => {}
                },
                _ = tokio::time::sleep_until(until) => break Some(AmdDecision::NotSure),
            }
        };
        let verdict_at = Timestamp::now_utc();
        let Some(decision) = verdict else {
            // Hung up during the greeting: a person (probably), who got no agent.
            info!("hung up during the greeting");
            self.resolved(DialResult::Human);
            self.note(Note::Abandoned {
                lead: self.request.lead.clone(),
            });
            row.amd_result = Some("hung_up".into());
            row.abandoned = true;
            return self.not_reached(row, timeline, Disposition::Abandoned).await;
        };
        row.amd_result = Some(
            match decision {
                AmdDecision::Human => "human",
                AmdDecision::Machine => "machine",
                AmdDecision::NotSure => "notsure",
            }
            .into(),
        );
        info!(
            verdict = row.amd_result.as_deref().unwrap_or(""),
            "greeting analysed"
        );
        let agentless = self.spec.mode == CampaignMode::Agentless;
        if decision == AmdDecision::Machine {
            self.resolved(DialResult::Machine);
            if agentless {
                self.play_message(&rtp, &mut media, &mut leg, law).await;
            }
            leg.hangup();
            return self.not_reached(row, timeline, Disposition::Machine).await;
        }
        // A person (an unsure verdict is taken as one: the rules protect people).
        self.resolved(DialResult::Human);
        if agentless {
            self.play_message(&rtp, &mut media, &mut leg, law).await;
            leg.hangup();
            return self.not_reached(row, timeline, Disposition::Completed).await;
        }
        let Some(queue) = self.spec.queue.clone() else {
            leg.hangup();
            return self.not_reached(row, timeline, Disposition::Failed).await;
        };
        self.inner
            .log(timeline.event(verdict_at, self.dial_event("human")));
        // The person waits in the queue as a session of their own, numbering on from here.
        let origin = Origin::Campaign {
            link: call_session::CampaignLink {
                campaign: self.spec.id.clone(),
                lead: self.request.lead.clone(),
            },
            queue,
            preferred: self.request.agent.clone(),
            connect_by: verdict_at + self.spec.rules.connect_within,
            message: self.spec.message.clone(),
            first_seq: timeline.next_seq(),
        };
        let caller_id = Pii::new(self.spec.caller_id.clone());
        let session = match CallSession::new(
            self.id.clone(),
            verdict_at,
            origin,
            self.request.phone.clone(),
            caller_id.clone(),
            Driver::settings(&self.inner),
        ) {
            Ok(s) => s,
            Err(_) => {
                leg.hangup();
                return self.not_reached(row, timeline, Disposition::Failed).await;
            }
        };
        let link = CallLink {
            campaign: self.spec.id.clone(),
            lead: self.request.lead.clone(),
            verdict_at: Some(verdict_at),
            tx: self.tx.clone(),
        };
        self.note(Note::Waiting {
            lead: self.request.lead.clone(),
        });
        let style = PopStyle {
            direction: Direction::Outbound,
            prefix: "",
        };
        let caller = CallerIo::new(leg, rtp, law, media);
        let mut driver = Driver::new(
            self.inner.clone(),
            session,
            self.request.phone.clone(),
            caller_id,
            Some(caller),
            style,
        )
        .with_campaign(link);
        driver.feed(Input::CallerAnswered);
        driver.run().await;
        let outcome = driver.outcome();
        let disposition = match &outcome.connected {
            Some((agent, at)) => {
                row.agent = Some(agent.clone());
                row.connected_at = Some(*at);
                Disposition::Completed
            }
            None => {
                if !outcome.abandoned {
                    // The person hung up in the queue before the deadline: no agent reached them.
                    self.note(Note::Abandoned {
                        lead: self.request.lead.clone(),
                    });
                }
                row.abandoned = true;
                Disposition::Abandoned
            }
        };
        driver.wrap_up_later();
        self.finish(row, disposition).await;
    }

    /// Plays the identification message to its end (or until the other side hangs up).
    async fn play_message(
        &self,
        rtp: &media::engine::RtpLeg,
        media: &mut mpsc::Receiver<MediaEvent>,
        leg: &mut sip_gateway::LegHandle,
        law: media::g711::G711,
    ) {
        let prompt = match self.inner.media.prompts().get(&self.spec.message, law) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "identification message cannot be played");
                return;
            }
        };
        rtp.play(vec![prompt], false, false);
        loop {
            tokio::select! {
                ev = media.recv() => match ev {
                    Some(MediaEvent::PlaybackFinished) | None => return,
                    Some(_) => {}
                },
                ev = leg.next_event() => match ev {
                    Some(LegEvent::Hangup) | None => return,
                    Some(_) => {}
                },
            }
        }
    }

    /// Ends an attempt that never reached the queue.
    async fn not_reached(
        self,
        row: crm_store::DialAttempt,
        mut timeline: Timeline,
        disposition: Disposition,
    ) {
        let now = Timestamp::now_utc();
        self.inner
            .log(timeline.event(now, self.dial_event(disposition_name(disposition))));
        self.inner.log(timeline.event(
            now,
            InteractionEventKind::Ended {
                by: EndedBy::System,
                reason: disposition_name(disposition).to_string(),
                quality: None,
            },
        ));
        self.finish(row, disposition).await;
    }

    async fn finish(self, mut row: crm_store::DialAttempt, disposition: Disposition) {
        row.ended_at = Some(Timestamp::now_utc());
        row.outcome = disposition_name(disposition).to_string();
        self.store(&row).await;
        self.note(Note::Finished {
            lead: self.request.lead.clone(),
            disposition,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acd_config() -> acd::AcdConfig {
        toml::from_str(
            "[[queues]]\nid = \"outbound\"\n\n[[agents]]\nid = \"1001\"\nqueues = [{ queue = \"outbound\", rank = 1 }]\n",
        )
        .unwrap()
    }

    fn config_for(queue: &str, extra: &str) -> CampaignConfig {
        let message = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../ivr-scripts/prompts/goodbye.wav"
        );
        toml::from_str(&format!(
            "id = \"spring\"\nqueue = \"{queue}\"\ncaller_id = \"+442070000000\"\nmessage = \"{message}\"\n{extra}"
        ))
        .unwrap()
    }

    fn config(extra: &str) -> CampaignConfig {
        config_for("outbound", extra)
    }

    #[test]
    fn a_campaign_is_checked_against_the_acd_and_the_rules() {
        let spec = config("pacing = \"fixed:2\"\ncalling_hours = [\"09:00\", \"20:00\"]")
            .spec(&acd_config())
            .unwrap();
        assert_eq!(spec.agents.len(), 1);
        assert_eq!(spec.rules.connect_within, Duration::from_secs(2));
        let problems = config_for("nowhere", "").spec(&acd_config());
        assert!(problems.is_err());
        let problems =
            config("pacing = \"magic\"\ncalling_hours = [\"21:00\", \"08:00\"]\n[compliance]\nring_secs = 5")
                .spec(&acd_config())
                .unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        let preview = config("mode = \"preview\"\npreview_skip_secs = 600")
            .spec(&acd_config())
            .unwrap();
        assert_eq!(
            (preview.mode, preview.preview_skip),
            (CampaignMode::Preview, Duration::from_secs(600))
        );
        let paced = config("mode = \"preview\"\npacing = \"predictive\"")
            .spec(&acd_config())
            .unwrap_err();
        assert!(paced[0].contains("not paced"), "{paced:?}");
    }

    #[test]
    fn amd_settings_default_to_the_analyser_and_are_checked() {
        let spec = config("").spec(&acd_config()).unwrap();
        assert_eq!(
            spec.amd,
            AmdConfig::default(),
            "no [campaign.amd]: today's behaviour"
        );
        let spec = config("[amd]\ninitial_silence_ms = 3000\ngreeting_ms = 2000\ntotal_analysis_ms = 4000")
            .spec(&acd_config())
            .unwrap();
        assert_eq!(
            (
                spec.amd.initial_silence_ms,
                spec.amd.greeting_ms,
                spec.amd.total_analysis_ms
            ),
            (3000, 2000, 4000)
        );
        assert_eq!(
            spec.amd.max_words,
            AmdConfig::default().max_words,
            "unset keys keep defaults"
        );
        let problems = config("[amd]\ngreeting_ms = 20\nmax_words = 0\ntotal_analysis_ms = 2000")
            .spec(&acd_config())
            .unwrap_err();
        assert_eq!(
            problems,
            [
                "amd.greeting_ms: between 300 and 10000 (got 20)",
                "amd.max_words: between 1 and 20 (got 0)",
                "amd.total_analysis_ms (2000) must be longer than amd.initial_silence_ms (2500)",
            ]
        );
        let unknown = toml::from_str::<CampaignConfig>(
            "id = \"x\"\ncaller_id = \"1\"\nmessage = \"m.wav\"\n[amd]\nbeep_ms = 5",
        )
        .unwrap_err();
        assert!(unknown.to_string().contains("beep_ms"), "{unknown}");
    }
}
