//! The live campaign dialer's IO edge: one runner task per campaign, and one task per dial attempt.
//!
//! The decisions are the pure [`dialer::driver::CampaignDriver`]'s: the campaign's leads (calling
//! window, do-not-call at dial time, retries, the UK re-dial block), the pacing policy, the
//! abandonment ledger, the dials in flight, the people waiting, deferred wrap-ups and previews. Every
//! tick the runner reads the ACD's agents of the campaign's queue and asks the driver how many
//! numbers to dial; it reads the do-not-call list and lets the driver pick the leads, then carries
//! out what the driver asks (place an attempt, save a lead, end a preview, count). Attempts report
//! back on a channel (dial resolved, person waiting, connected, abandoned, finished) and the runner
//! hands those reports to the driver.
//!
//! An attempt ([`attempt`]) dials through the outbound trunk with the campaign's caller id and
//! rings at least the compliance ring time. On answer the media engine's answering-machine analyser
//! listens to the greeting. A machine is hung up on (agentless campaigns leave the message). A
//! person (or an unsure verdict, counted as a person) joins the campaign's queue at the highest
//! priority as a call session of origin `Campaign` ([`crate::driver`]): if no agent is connected
//! within the compliance connect time (2 s) of the verdict, the session leaves the queue, plays the
//! identification message and ends the call; it counts as abandoned. Every attempt is one
//! interaction (direction outbound, with a `dial_attempt` event) and one `dial_attempts` row,
//! written when it is placed and when it ends. Phone numbers stay in [`Pii`]; logs and metric
//! labels carry campaign and lead ids only.
//!
//! One node dials a campaign at a time: the runner places calls only while it holds the campaign's
//! lease in the state store (renewed every tick, with a fencing token), and names itself in a blob
//! beside it so standbys can show who dials. On taking the lease it loads the leads with their saved
//! progress from the CRM store (and the campaign's stored status), so a restarted node or a standby
//! continues each lead where it stopped; every change of a lead is saved back in order by a writer task
//! of the runner's own. A supervisor's pause, resume or stop, taken by any node, is written to the
//! campaign's control record in the state store ([`control`]), which every runner follows on every
//! tick: the holder before it dials, a standby or a node started later as soon as it runs.

mod attempt;
mod config;
mod control;
mod metrics;
mod progress;

use attempt::Attempt;
pub use attempt::disposition_name;
pub(crate) use attempt::{CallLink, PreviewDial};
pub use config::{AmdSettings, CampaignConfig, CampaignSpec};
use metrics::OutcomeLabel;
pub use metrics::{CampaignLiveStats, DialerMetrics};
use progress::{ProgressWriter, restored_progress, stored_state};

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
    CampaignDriver, Command as DriverCommand, Count, DriverSettings, Left, Report, Save as DriverSave,
    WrapUpWish,
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

/// Start, pause, resume and stop a running campaign, and read its figures.
#[derive(Clone)]
pub struct CampaignHandle {
    pub id: CampaignId,
    control: mpsc::UnboundedSender<Control>,
    previews: mpsc::UnboundedSender<PreviewDecision>,
    stats: watch::Receiver<CampaignLiveStats>,
}

/// What an agent does with a previewed lead (it travels to the dialing node of a cluster).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "choice", rename_all = "snake_case")]
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

#[cfg(test)]
impl CampaignHandle {
    /// A handle with no runner behind it: the test reads each preview decision (agent, lead and
    /// choice), and every decision is taken.
    pub(crate) fn taking_previews(
        id: CampaignId,
    ) -> (Self, mpsc::UnboundedReceiver<(AgentId, LeadId, PreviewChoice)>) {
        let (control, _) = mpsc::unbounded_channel();
        let (previews, mut previews_rx) = mpsc::unbounded_channel::<PreviewDecision>();
        let (_, stats) = watch::channel(CampaignLiveStats::default());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(d) = previews_rx.recv().await {
                let _ = tx.send((d.agent, d.lead, d.choice));
                let _ = d.reply.send(Ok(()));
            }
        });
        let handle = Self {
            id,
            control,
            previews,
            stats,
        };
        (handle, rx)
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
        self.inner.desks.register_campaign(handle.clone());
        handle
    }
}

struct Runner {
    inner: Arc<Inner>,
    spec: Arc<CampaignSpec>,
    /// The campaign's decisions (leads, pacing, ledger, attempts, previews).
    driver: CampaignDriver,
    dnc: HashSet<String>,
    counts: CampaignLiveStats,
    metrics: DialerMetrics,
    tx: mpsc::UnboundedSender<Report>,
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
        mut notes: mpsc::UnboundedReceiver<Report>,
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
                    // Missed changes cost a few handle-time samples, and the order that tells a
                    // preview's own start from older news.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        self.driver.agent_changes_missed();
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        states = self.inner.acd.subscribe_agent_states();
                    }
                },
                Some(note) = notes.recv() => self.on_note(note),
                c = control.recv(), if control_open => match c {
                    Some(c) => self.on_control(c).await,
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

    /// A supervisor's request taken by this node: written to the campaign's control record (so the
    /// runner that dials, on whichever node, follows it on its next tick), then followed here.
    async fn on_control(&mut self, (action, reply): Control) {
        let local = self.driver.campaign().state();
        let result = control::change(&self.inner.state, &self.spec.id, local, action).await;
        match &result {
            Ok(state) => {
                info!(?state, "campaign state changed for every node");
                self.follow(*state);
            }
            Err(e) => warn!(error = %e, "campaign control refused"),
        }
        let _ = reply.send(result);
    }

    /// Reads the campaign's control record and follows it; false (dial nothing) if it cannot be read.
    async fn follow_control(&mut self) -> bool {
        match control::read(&self.inner.state, &self.spec.id).await {
            Ok(Some(state)) => {
                self.follow(state);
                true
            }
            Ok(None) => true,
            Err(e) => {
                warn!(error = %e, "campaign control record unreadable; not dialling");
                false
            }
        }
    }

    /// Takes the state the supervisors set (a change only: each change is saved to the CRM).
    fn follow(&mut self, state: CampaignState) {
        if self.driver.campaign().state() == state {
            return;
        }
        let result = self.driver.control(|campaign| match state {
            CampaignState::Running => campaign.resume(),
            CampaignState::Paused => campaign.pause(),
            CampaignState::Stopped => {
                campaign.stop();
                Ok(())
            }
        });
        match result {
            Ok(state) => info!(?state, "campaign state followed"),
            Err(e) => warn!(error = %e, "campaign state not followed"),
        }
    }

    async fn tick(&mut self) {
        let now = Timestamp::now_utc();
        let holding = self.keep_lease(now).await;
        if holding && !self.loaded && !self.load(now).await {
            return;
        }
        // Every runner follows the supervisors' record, standbys too (a stop ends them all); the
        // holder reads it right before dialling, after its leads' stored status.
        if !self.follow_control().await || !holding {
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
            // Ready in the router means on no call, placed or queued: the router is the judge.
            .filter(|a| !self.driver.is_previewing(a) && self.inner.desks.desk_media(a).is_some())
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
                                let _ = tx.send(Report::PreviewRefused { agent, previewed: p });
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

    /// What an attempt told: the driver hears it as it is (attempts speak the driver's language).
    fn on_note(&mut self, report: Report) {
        let now = Timestamp::now_utc();
        match &report {
            Report::Finished { lead, disposition } => {
                info!(%lead, outcome = disposition_name(*disposition), "attempt finished");
            }
            Report::PreviewPlaced { lead, agent } => info!(%lead, %agent, "previewed lead dialled"),
            _ => {}
        }
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
