//! The interpreter: one pure state machine per call. The owner feeds it events with the current time
//! and carries out the commands it returns; it never reads a clock or does IO. Its state
//! ([`IvrState`]) is serialisable so the owner can keep it in the state store, and sensitive digits
//! are kept out of that state.

use crate::compile::is_dtmf;
use crate::io::*;
use crate::model::*;
use crate::numbers::{NumberUse, is_chinese, say_number_in};
use crate::schedule::LocalTime;
use domain::{AgentId, Pii, QueueId, Timestamp};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

mod queue;
mod requests;

/// Most transitions through non-waiting nodes in one event; the validator forbids loops of them, this
/// guards a restored state against a changed script.
const MAX_INSTANT_STEPS: usize = 64;
/// How long a branch waits for queue state before deciding without it.
const QUEUE_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Shown instead of sensitive digits.
const MASK: &str = "****";

/// A variable's value. Collected digits, caller numbers, names and webhook replies are personal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    Text(String),
    Personal(Pii<String>),
    /// A sensitive value: the digits live only in memory, never in saved state.
    Secret,
}

/// Why the session ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    HungUp {
        reason: String,
    },
    CallerHungUp,
    Transferred,
    Voicemail,
    /// The caller will be called back.
    Callback,
    Failed {
        reason: String,
    },
}

/// What the session waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    NotStarted,
    /// Playing the node's prompts, then doing `then`.
    Prompt {
        then: AfterPlay,
    },
    /// Waiting for keys.
    Input,
    /// Waiting for a lookup or webhook answer.
    Request {
        request: RequestId,
    },
    /// Waiting for queue state for a branch.
    QueueQuery {
        pending: Vec<(RequestId, QueueId)>,
        answers: Vec<(QueueId, QueueSnapshot)>,
    },
    /// In a queue, waiting for an agent.
    Queued,
    /// Talking to an agent.
    Connected {
        agent: AgentId,
    },
    Finished {
        outcome: Outcome,
    },
}

/// What follows the node's prompts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterPlay {
    Next,
    WaitInput,
    Voicemail,
    Transfer,
    Hangup,
    CallbackConfirmed,
}

/// Why a timer was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum TimerPurpose {
    Input,
    Request,
    QueueQuery,
    Announce,
    Offer,
}

/// The call's place in a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueContext {
    pub queue: QueueId,
    /// The enqueue node that put the call there: its `on_failed` and `after_call` apply.
    pub flow: String,
    pub node: String,
    pub since: Timestamp,
    pub position: Option<u32>,
    pub estimated_wait: Option<Duration>,
    pub offered: bool,
}

/// Everything about a session that outlives one event; what the agent desktop reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IvrState {
    pub flow_set_version: u64,
    pub call: CallInfo,
    pub flow: String,
    pub node: String,
    pub phase: Phase,
    pub language: String,
    pub vars: BTreeMap<String, Value>,
    pub queue: Option<QueueContext>,
    attempts: u32,
    playing: Option<bool>,
    timers: BTreeMap<TimerId, TimerPurpose>,
    recording_paused: bool,
    next_id: u32,
    /// Digits typed so far in a collect; personal, and never saved.
    #[serde(skip)]
    digits: Pii<String>,
    #[serde(skip)]
    secrets: BTreeMap<String, Pii<String>>,
}

/// Why a session could not be created or restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("no flow named {0:?}")]
    UnknownFlow(String),
    #[error("the saved state belongs to another version of the flows")]
    VersionMismatch,
    #[error("the saved state names node {node:?} of flow {flow:?}, which does not exist")]
    UnknownNode { flow: String, node: String },
}

/// One call's IVR.
pub struct IvrSession {
    flows: Arc<FlowSet>,
    state: IvrState,
}

impl std::fmt::Debug for IvrSession {
    /// The state only: the flow set is large and shared by every call.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IvrSession")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl IvrSession {
    /// A session that starts at `entry_flow`'s start node when it gets [`IvrEvent::Started`].
    pub fn new(flows: Arc<FlowSet>, entry_flow: &str, call: CallInfo) -> Result<Self, SessionError> {
        let flow = flows
            .flow(entry_flow)
            .ok_or_else(|| SessionError::UnknownFlow(entry_flow.to_string()))?;
        let state = IvrState {
            flow_set_version: flows.version(),
            call,
            flow: flow.name.clone(),
            node: flow.start.clone(),
            phase: Phase::NotStarted,
            language: flow.language.clone(),
            vars: BTreeMap::new(),
            queue: None,
            attempts: 0,
            playing: None,
            timers: BTreeMap::new(),
            recording_paused: false,
            next_id: 1,
            digits: Pii::default(),
            secrets: BTreeMap::new(),
        };
        Ok(Self { flows, state })
    }

    /// Resumes a session from saved state on the same flow version. Sensitive values are not in saved
    /// state, so a restored session has them as [`Value::Secret`] without the digits.
    pub fn restore(flows: Arc<FlowSet>, state: IvrState) -> Result<Self, SessionError> {
        if state.flow_set_version != flows.version() {
            return Err(SessionError::VersionMismatch);
        }
        let exists = flows
            .flow(&state.flow)
            .is_some_and(|f| f.nodes.contains_key(&state.node));
        if !exists {
            return Err(SessionError::UnknownNode {
                flow: state.flow.clone(),
                node: state.node.clone(),
            });
        }
        Ok(Self { flows, state })
    }

    /// The state to save and show.
    pub fn state(&self) -> &IvrState {
        &self.state
    }

    /// The flow set this call runs on (the version it started with).
    pub fn flows(&self) -> &Arc<FlowSet> {
        &self.flows
    }

    /// How the session ended, once it has.
    pub fn outcome(&self) -> Option<&Outcome> {
        match &self.state.phase {
            Phase::Finished { outcome } => Some(outcome),
            _ => None,
        }
    }

    /// Feeds one event; returns the commands to carry out, in order. Events after the end are ignored.
    pub fn handle(&mut self, now: Timestamp, event: IvrEvent) -> Vec<IvrCommand> {
        let flows = Arc::clone(&self.flows);
        let mut run = Run {
            flows: &flows,
            state: &mut self.state,
            now,
            out: Vec::new(),
        };
        run.handle(event);
        run.out
    }
}

/// A node of the set by name.
#[derive(Debug, Clone)]
struct Target {
    flow: String,
    node: String,
}

struct Run<'a> {
    flows: &'a FlowSet,
    state: &'a mut IvrState,
    now: Timestamp,
    out: Vec<IvrCommand>,
}

impl<'a> Run<'a> {
    fn current(&self) -> Option<(&'a Flow, &'a Node)> {
        let flow = self.flows.flow(&self.state.flow)?;
        Some((flow, flow.nodes.get(&self.state.node)?))
    }

    fn local(&self, node: &str) -> Target {
        Target {
            flow: self.state.flow.clone(),
            node: node.to_string(),
        }
    }

    fn emit(&mut self, command: IvrCommand) {
        self.out.push(command);
    }

    fn next_id(&mut self) -> u32 {
        let id = self.state.next_id;
        self.state.next_id = self.state.next_id.wrapping_add(1);
        id
    }

    fn start_timer(&mut self, purpose: TimerPurpose, after: Duration) {
        let id = TimerId(self.next_id());
        self.state.timers.insert(id, purpose);
        self.emit(IvrCommand::StartTimer { id, after });
    }

    fn cancel_timers(&mut self, purpose: Option<TimerPurpose>) {
        let ids: Vec<TimerId> = self
            .state
            .timers
            .iter()
            .filter(|(_, p)| purpose.is_none_or(|want| **p == want))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.state.timers.remove(&id);
            self.emit(IvrCommand::CancelTimer { id });
        }
    }

    fn stop_playback(&mut self) {
        if self.state.playing.take().is_some() {
            self.emit(IvrCommand::StopPlayback);
        }
    }

    fn finish(&mut self, outcome: Outcome) {
        self.stop_playback();
        self.cancel_timers(None);
        if std::mem::take(&mut self.state.recording_paused) {
            self.emit(IvrCommand::ResumeRecording);
        }
        self.state.digits = Pii::default();
        self.state.phase = Phase::Finished { outcome };
    }

    fn fail(&mut self, reason: &str) {
        self.finish(Outcome::Failed {
            reason: reason.to_string(),
        });
        self.emit(IvrCommand::Hangup {
            reason: "ivr_error".to_string(),
        });
    }

    fn handle(&mut self, event: IvrEvent) {
        if matches!(self.state.phase, Phase::Finished { .. }) {
            return;
        }
        match event {
            IvrEvent::Started => {
                if self.state.phase == Phase::NotStarted {
                    let target = self.local(&self.state.node.clone());
                    self.enter(target, None);
                }
            }
            IvrEvent::PromptFinished => self.prompt_finished(),
            IvrEvent::Digit(key) => self.digit(key),
            IvrEvent::TimerFired(id) => {
                if let Some(purpose) = self.state.timers.remove(&id) {
                    self.timer(purpose);
                }
            }
            IvrEvent::LookupResult { request, result } => self.lookup_result(request, result),
            IvrEvent::WebhookResult { request, result } => self.webhook_result(request, result),
            IvrEvent::QueueState { request, state } => self.queue_state(request, state),
            IvrEvent::QueueEvent(event) => self.queue_event(event),
            IvrEvent::CallerHungUp => self.finish(Outcome::CallerHungUp),
            IvrEvent::AgentHungUp => self.agent_hung_up(),
        }
    }

    // ---- moving between nodes ----

    /// Enters `target`, following instant nodes until one waits.
    fn enter(&mut self, target: Target, key: Option<char>) {
        let mut target = target;
        let mut key = key;
        for _ in 0..MAX_INSTANT_STEPS {
            self.leave_node();
            let Some(flow) = self.flows.flow(&target.flow) else {
                return self.fail("unknown flow");
            };
            let Some(node) = flow.nodes.get(&target.node) else {
                return self.fail("unknown node");
            };
            self.keep_or_leave_queue(&node.kind);
            self.state.flow = flow.name.clone();
            self.state.node = node.name.clone();
            self.state.attempts = 0;
            self.state.digits = Pii::default();
            self.emit(IvrCommand::Log(IvrLog::NodeEntered {
                flow: flow.name.clone(),
                node: node.name.clone(),
                key,
            }));
            match self.start_node(flow, node) {
                Some(next) => {
                    target = next;
                    key = None;
                }
                None => return,
            }
            if matches!(self.state.phase, Phase::Finished { .. }) {
                return;
            }
        }
        self.fail("too many steps without waiting");
    }

    /// Cleans up what the node in progress started.
    fn leave_node(&mut self) {
        self.stop_playback();
        self.cancel_timers(None);
        if std::mem::take(&mut self.state.recording_paused) {
            self.emit(IvrCommand::ResumeRecording);
        }
    }

    /// The call keeps its place in line only while it is in that queue's enqueue node or a callback offer.
    fn keep_or_leave_queue(&mut self, next: &NodeKind) {
        let Some(ctx) = &self.state.queue else { return };
        let keep = match next {
            NodeKind::Enqueue(e) => e.queue == ctx.queue,
            NodeKind::Callback(_) => true,
            _ => false,
        };
        if !keep {
            let queue = ctx.queue.clone();
            self.state.queue = None;
            self.emit(IvrCommand::LeaveQueue { queue });
        }
    }

    /// Starts a node; returns the next node when this one does not wait.
    fn start_node(&mut self, flow: &'a Flow, node: &'a Node) -> Option<Target> {
        match &node.kind {
            NodeKind::Play(n) => self.play(&n.prompts, n.barge_in, AfterPlay::Next),
            NodeKind::Menu(n) => self.play(&n.prompts, n.barge_in, AfterPlay::WaitInput),
            NodeKind::Collect(n) => {
                if n.sensitive {
                    self.state.recording_paused = true;
                    self.emit(IvrCommand::PauseRecording);
                }
                self.play(&n.prompts, n.barge_in, AfterPlay::WaitInput)
            }
            NodeKind::Callback(n) => self.play(&n.prompts, true, AfterPlay::WaitInput),
            NodeKind::Survey(n) => self.play(&n.prompts, true, AfterPlay::WaitInput),
            NodeKind::Voicemail(n) => self.play(&n.prompts, false, AfterPlay::Voicemail),
            NodeKind::Transfer(n) => self.play(&n.prompts, false, AfterPlay::Transfer),
            NodeKind::Hangup(n) => self.play(&n.prompts, false, AfterPlay::Hangup),
            NodeKind::Lookup(n) => {
                let key = match &n.by {
                    LookupBy::CallerNumber => Some(LookupKey::CallerNumber(self.state.call.caller.clone())),
                    LookupBy::Account(var) => self.text(var).map(|v| LookupKey::AccountNumber(Pii::new(v))),
                };
                let Some(key) = key else {
                    self.log_lookup("crm", "no_key");
                    return Some(self.local(&n.error));
                };
                let request = RequestId(self.next_id());
                self.emit(IvrCommand::Lookup {
                    request,
                    key,
                    timeout: n.timeout,
                });
                self.start_timer(TimerPurpose::Request, n.timeout);
                self.state.phase = Phase::Request { request };
                None
            }
            NodeKind::Webhook(n) => {
                let body = self.webhook_body(n);
                let request = RequestId(self.next_id());
                self.emit(IvrCommand::Webhook {
                    request,
                    url: n.url.clone(),
                    body: Pii::new(body),
                    timeout: n.timeout,
                });
                self.start_timer(TimerPurpose::Request, n.timeout);
                self.state.phase = Phase::Request { request };
                None
            }
            NodeKind::Branch(n) => {
                let mut queues = Vec::new();
                n.cases.iter().for_each(|c| c.when.queues(&mut queues));
                if queues.is_empty() {
                    return Some(self.decide(flow, n, &[]));
                }
                let mut pending = Vec::new();
                for queue in queues {
                    let request = RequestId(self.next_id());
                    self.emit(IvrCommand::QueryQueue {
                        request,
                        queue: queue.clone(),
                    });
                    pending.push((request, queue));
                }
                self.start_timer(TimerPurpose::QueueQuery, QUEUE_QUERY_TIMEOUT);
                self.state.phase = Phase::QueueQuery {
                    pending,
                    answers: Vec::new(),
                };
                None
            }
            NodeKind::Set(n) => {
                for (name, expr) in &n.vars {
                    match expr {
                        ValueExpr::Literal(text) => {
                            self.state.vars.insert(name.clone(), Value::Text(text.clone()));
                        }
                        ValueExpr::Var(source) => self.copy_var(source, name),
                    }
                }
                if let Some(language) = &n.language {
                    self.state.language = language.clone();
                }
                Some(self.local(&n.next))
            }
            NodeKind::Enqueue(n) => {
                self.enqueue(n);
                None
            }
            NodeKind::Goto(n) => {
                let Some(target_flow) = self.flows.flow(&n.flow) else {
                    self.fail("unknown flow");
                    return None;
                };
                let node = n.node.clone().unwrap_or_else(|| target_flow.start.clone());
                Some(Target {
                    flow: n.flow.clone(),
                    node,
                })
            }
        }
    }

    /// Starts playing a node's prompts; with nothing to play, goes straight to what follows.
    fn play(&mut self, items: &[PlayItem], barge_in: bool, then: AfterPlay) -> Option<Target> {
        let prompts = self.resolve(items);
        if prompts.is_empty() {
            return self.after_play(then);
        }
        self.state.playing = Some(barge_in);
        self.state.phase = Phase::Prompt { then };
        self.emit(IvrCommand::Play { prompts, barge_in });
        None
    }

    /// Plays something that does not change the phase (queue announcements).
    fn play_aside(&mut self, names: Vec<String>) {
        let items: Vec<PlayItem> = names.into_iter().map(PlayItem::Prompt).collect();
        let prompts = self.resolve(&items);
        if prompts.is_empty() {
            return;
        }
        self.stop_playback();
        self.state.playing = Some(true);
        self.emit(IvrCommand::Play {
            prompts,
            barge_in: true,
        });
    }

    fn resolve(&self, items: &[PlayItem]) -> Vec<PromptFile> {
        let mut names = Vec::new();
        for item in items {
            match item {
                PlayItem::Prompt(name) => names.push(name.clone()),
                PlayItem::Number(var) => {
                    if let Some(n) = self.text(var).and_then(|t| t.trim().parse::<u64>().ok()) {
                        names.extend(say_number_in(n, &self.state.language, NumberUse::Count));
                    }
                }
            }
        }
        names
            .into_iter()
            .filter_map(|name| {
                let prompt = self.flows.prompt_in(&name, &self.state.language)?;
                Some(PromptFile {
                    name,
                    path: prompt.path.clone(),
                })
            })
            .collect()
    }

    fn after_play(&mut self, then: AfterPlay) -> Option<Target> {
        let (_, node) = self.current()?;
        match then {
            AfterPlay::Next => match &node.kind {
                NodeKind::Play(n) => Some(self.local(&n.next)),
                _ => None,
            },
            AfterPlay::WaitInput => {
                let timeout = match &node.kind {
                    NodeKind::Menu(n) => n.timeout,
                    NodeKind::Collect(n) => n.timeout,
                    NodeKind::Callback(n) => n.timeout,
                    NodeKind::Survey(n) => n.timeout,
                    _ => return None,
                };
                self.state.phase = Phase::Input;
                self.start_timer(TimerPurpose::Input, timeout);
                None
            }
            AfterPlay::Voicemail => {
                if let NodeKind::Voicemail(n) = &node.kind {
                    self.finish(Outcome::Voicemail);
                    self.emit(IvrCommand::Voicemail {
                        mailbox: n.mailbox.clone(),
                        max_length: n.max_length,
                        beep: n.beep,
                    });
                }
                None
            }
            AfterPlay::Transfer => {
                if let NodeKind::Transfer(n) = &node.kind {
                    self.finish(Outcome::Transferred);
                    self.emit(IvrCommand::Transfer { target: n.to.clone() });
                }
                None
            }
            AfterPlay::Hangup => {
                if let NodeKind::Hangup(n) = &node.kind {
                    self.finish(Outcome::HungUp {
                        reason: n.reason.clone(),
                    });
                    self.emit(IvrCommand::Hangup {
                        reason: n.reason.clone(),
                    });
                }
                None
            }
            AfterPlay::CallbackConfirmed => {
                self.finish(Outcome::Callback);
                self.emit(IvrCommand::Hangup {
                    reason: "callback".to_string(),
                });
                None
            }
        }
    }

    fn prompt_finished(&mut self) {
        if self.state.playing.take().is_none() {
            return;
        }
        if let Phase::Prompt { then } = self.state.phase.clone()
            && let Some(target) = self.after_play(then)
        {
            self.enter(target, None);
        }
    }

    // ---- keys ----

    fn digit(&mut self, key: char) {
        if !is_dtmf(key) {
            return;
        }
        if let Some(barge_in) = self.state.playing {
            if !barge_in {
                return;
            }
            match self.state.phase.clone() {
                Phase::Prompt {
                    then: AfterPlay::WaitInput,
                } => {
                    self.stop_playback();
                    self.state.phase = Phase::Input;
                }
                Phase::Prompt {
                    then: AfterPlay::Next,
                } => {
                    self.stop_playback();
                    if let Some(target) = self.after_play(AfterPlay::Next) {
                        self.enter(target, None);
                    }
                    return;
                }
                Phase::Queued => {}
                _ => return,
            }
        }
        match self.state.phase {
            Phase::Input => self.input(key),
            Phase::Queued => self.queued_key(key),
            _ => {}
        }
    }

    fn input(&mut self, key: char) {
        let Some((_, node)) = self.current() else { return };
        self.cancel_timers(Some(TimerPurpose::Input));
        match &node.kind {
            NodeKind::Menu(n) => {
                if let Some(target) = n.choices.get(&key) {
                    return self.enter(self.local(target), Some(key));
                }
                self.state.attempts += 1;
                if let Some(invalid) = &n.invalid {
                    self.enter(self.local(invalid), Some(key));
                } else if self.state.attempts > n.retries {
                    self.enter(self.local(&n.exhausted), Some(key));
                } else {
                    let items: Vec<PlayItem> = n.invalid_prompts.iter().chain(&n.prompts).cloned().collect();
                    self.replay(&items, n.barge_in);
                }
            }
            NodeKind::Collect(n) => {
                if Some(key) == n.terminator {
                    return self.finish_collect(n);
                }
                self.state.digits = Pii::new(format!("{}{key}", self.state.digits.expose()));
                if self.state.digits.expose().chars().count() >= n.max_digits {
                    return self.finish_collect(n);
                }
                self.state.phase = Phase::Input;
                self.start_timer(TimerPurpose::Input, n.inter_digit_timeout);
            }
            NodeKind::Callback(n) => {
                if key != n.accept_key {
                    return self.enter(self.local(&n.decline), Some(key));
                }
                let queue = self
                    .state
                    .queue
                    .take()
                    .map(|c| c.queue)
                    .unwrap_or_else(|| n.queue.clone());
                self.emit(IvrCommand::RequestCallback {
                    queue,
                    number: self.state.call.caller.clone(),
                });
                if let Some(target) = self.play(&n.confirm_prompts, false, AfterPlay::CallbackConfirmed) {
                    self.enter(target, None);
                }
            }
            NodeKind::Survey(n) => match key.to_digit(10) {
                Some(score @ 1..=5) => {
                    let score = u8::try_from(score).unwrap_or(0);
                    self.state
                        .vars
                        .insert(SURVEY_VARIABLE.to_string(), Value::Text(score.to_string()));
                    self.emit(IvrCommand::Log(IvrLog::SurveyAnswered { score }));
                    self.enter(self.local(&n.next), Some(key));
                }
                _ => {
                    self.state.attempts += 1;
                    if self.state.attempts > n.retries {
                        self.enter(self.local(&n.next), Some(key));
                    } else {
                        let items: Vec<PlayItem> =
                            n.invalid_prompts.iter().chain(&n.prompts).cloned().collect();
                        self.replay(&items, true);
                    }
                }
            },
            _ => {}
        }
    }

    /// Plays a node's prompts again and waits for input after them.
    fn replay(&mut self, items: &[PlayItem], barge_in: bool) {
        if let Some(target) = self.play(items, barge_in, AfterPlay::WaitInput) {
            self.enter(target, None);
        }
    }

    fn finish_collect(&mut self, n: &CollectNode) {
        let digits = std::mem::take(&mut self.state.digits).into_inner();
        let count = digits.chars().count();
        let valid = count >= n.min_digits
            && count <= n.max_digits
            && n.pattern.as_ref().is_none_or(|p| p.matches(&digits));
        if !valid {
            self.state.attempts += 1;
            if self.state.attempts > n.retries {
                return self.enter(self.local(&n.exhausted), None);
            }
            let items: Vec<PlayItem> = n.invalid_prompts.iter().chain(&n.prompts).cloned().collect();
            return self.replay(&items, n.barge_in);
        }
        let logged = if n.sensitive {
            self.state.vars.insert(n.into.clone(), Value::Secret);
            self.state.secrets.insert(n.into.clone(), Pii::new(digits));
            Pii::new(MASK.to_string())
        } else {
            self.state.secrets.remove(&n.into);
            self.state
                .vars
                .insert(n.into.clone(), Value::Personal(Pii::new(digits.clone())));
            Pii::new(digits)
        };
        self.emit(IvrCommand::Log(IvrLog::DigitsCollected {
            variable: n.into.clone(),
            digits: logged,
            sensitive: n.sensitive,
        }));
        self.enter(self.local(&n.next), None);
    }

    // ---- timers ----

    fn timer(&mut self, purpose: TimerPurpose) {
        let Some((_, node)) = self.current() else { return };
        match (purpose, &node.kind) {
            (TimerPurpose::Input, NodeKind::Menu(n)) => {
                self.state.attempts += 1;
                if self.state.attempts > n.retries {
                    self.enter(self.local(&n.exhausted), None);
                } else {
                    let items: Vec<PlayItem> = n.timeout_prompts.iter().chain(&n.prompts).cloned().collect();
                    self.replay(&items, n.barge_in);
                }
            }
            (TimerPurpose::Input, NodeKind::Collect(n)) => {
                if self.state.digits.expose().is_empty() {
                    self.state.attempts += 1;
                    if self.state.attempts > n.retries {
                        self.enter(self.local(&n.exhausted), None);
                    } else {
                        self.replay(&n.prompts, n.barge_in);
                    }
                } else {
                    self.finish_collect(n);
                }
            }
            (TimerPurpose::Input, NodeKind::Callback(n)) => self.enter(self.local(&n.decline), None),
            (TimerPurpose::Input, NodeKind::Survey(n)) => {
                self.state.attempts += 1;
                if self.state.attempts > n.retries {
                    self.enter(self.local(&n.next), None);
                } else {
                    self.replay(&n.prompts, true);
                }
            }
            (TimerPurpose::Request, NodeKind::Lookup(n)) => {
                self.log_lookup("crm", "timeout");
                self.enter(self.local(&n.error), None);
            }
            (TimerPurpose::Request, NodeKind::Webhook(n)) => {
                self.log_lookup("webhook", "timeout");
                self.enter(self.local(&n.error), None);
            }
            (TimerPurpose::QueueQuery, NodeKind::Branch(n)) => {
                let answers = match &self.state.phase {
                    Phase::QueueQuery { answers, .. } => answers.clone(),
                    _ => return,
                };
                let Some((flow, _)) = self.current() else { return };
                let target = self.decide(flow, n, &answers);
                self.enter(target, None);
            }
            (TimerPurpose::Announce, NodeKind::Enqueue(n)) => {
                if self.state.playing.is_none() {
                    let names = self.announcement(n);
                    self.play_aside(names);
                }
                if let Some(every) = n.announce_every {
                    self.start_timer(TimerPurpose::Announce, every);
                }
            }
            (TimerPurpose::Offer, NodeKind::Enqueue(n)) => {
                if let Some(ctx) = &mut self.state.queue {
                    ctx.offered = true;
                }
                let items = n.offer_prompts.clone();
                let prompts = self.resolve(&items);
                if !prompts.is_empty() {
                    self.stop_playback();
                    self.state.playing = Some(true);
                    self.emit(IvrCommand::Play {
                        prompts,
                        barge_in: true,
                    });
                }
            }
            _ => {}
        }
    }
}
