//! Turns flow sources into a [`FlowSet`], or into the full list of what is wrong with them.
//! This module does no IO: [`crate::load`] reads the directory and hands the texts and prompt checks in,
//! so the same checks run in tests on strings.

use crate::analysis::{self, Edge, FlowGraph, NodeId};
use crate::duration::{format_duration, parse_duration};
use crate::error::{ValidationError, line_of};
use crate::model::*;
use crate::raw::{self, RawCondition, RawFile, RawNode};
use crate::schedule::{Schedule, parse_date, parse_hours, parse_time_of_day, parse_weekday};
use crate::wav::{WavError, WavInfo};
use domain::{AgentId, QueueId};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;

/// One flow file's text.
#[derive(Debug, Clone)]
pub struct FlowSource {
    /// File name relative to the flow directory, e.g. `main.toml`; the flow is named by its stem.
    pub file: String,
    pub text: String,
}

/// One prompt file and the result of checking its header.
#[derive(Debug, Clone)]
pub struct PromptSource {
    pub name: String,
    /// `None` for the default recording in `prompts/`, `Some(lang)` for `prompts/LANG/`.
    pub language: Option<String>,
    pub path: PathBuf,
    /// Path relative to the flow directory, for messages.
    pub display: String,
    pub check: Result<WavInfo, WavError>,
}

/// Everything a flow set is built from.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub dir: PathBuf,
    pub flows: Vec<FlowSource>,
    pub prompts: Vec<PromptSource>,
    /// Problems met while reading the directory (unreadable files and the like).
    pub read_errors: Vec<ValidationError>,
}

/// Builds and validates a flow set. Returns every error found, sorted by file and line.
pub fn compile(sources: &Sources) -> Result<FlowSet, Vec<ValidationError>> {
    let mut errors = sources.read_errors.clone();
    let mut prompts = BTreeMap::new();
    let mut localized = BTreeMap::new();
    for prompt in &sources.prompts {
        match &prompt.check {
            Ok(info) => {
                let entry = Prompt {
                    name: prompt.name.clone(),
                    path: prompt.path.clone(),
                    duration: info.duration,
                };
                match &prompt.language {
                    None => {
                        prompts.insert(prompt.name.clone(), entry);
                    }
                    Some(lang) => {
                        localized.insert((lang.clone(), prompt.name.clone()), entry);
                    }
                }
            }
            Err(e) => errors.push(ValidationError::new(
                &prompt.display,
                None,
                None,
                format!("invalid prompt: {e}"),
            )),
        }
    }
    // Prompts that exist but do not play still count as existing, so flows get one error, not two.
    let broken_prompts: BTreeSet<&str> = sources
        .prompts
        .iter()
        .filter(|p| p.check.is_err() && p.language.is_none())
        .map(|p| p.name.as_str())
        .collect();

    let flow_names: BTreeSet<String> = sources
        .flows
        .iter()
        .filter_map(|f| f.file.strip_suffix(".toml").map(str::to_string))
        .collect();
    // Node names of every flow, parsed leniently first so that gotos can be checked across files.
    let mut parsed: Vec<(&FlowSource, String, RawFile)> = Vec::new();
    for source in &sources.flows {
        let Some(name) = source.file.strip_suffix(".toml") else {
            continue;
        };
        if let Err(message) = check_name(name) {
            errors.push(ValidationError::new(
                &source.file,
                None,
                None,
                format!("flow name: {message}"),
            ));
            continue;
        }
        match toml::from_str::<RawFile>(&source.text) {
            Ok(raw) => parsed.push((source, name.to_string(), raw)),
            Err(e) => {
                let line = e.span().map(|s| line_of(&source.text, s.start));
                let message = e.message().trim().replace('\n', " ");
                errors.push(ValidationError::new(&source.file, line, None, message));
            }
        }
    }
    let nodes_of: BTreeMap<String, (String, BTreeSet<String>)> = parsed
        .iter()
        .map(|(_, name, raw)| {
            (
                name.clone(),
                (
                    raw.flow.get_ref().start.get_ref().clone(),
                    raw.nodes.keys().cloned().collect(),
                ),
            )
        })
        .collect();

    let uses_numbers = std::cell::Cell::new(false);
    let uses_announcements = std::cell::Cell::new(false);
    let mut flows = BTreeMap::new();
    let mut graph = FlowGraph::default();
    for (source, name, raw) in &parsed {
        let mut ctx = FileCtx {
            file: &source.file,
            text: &source.text,
            errors: &mut errors,
            prompts: &prompts,
            broken_prompts: &broken_prompts,
            nodes_of: &nodes_of,
            flow_names: &flow_names,
            flow: name,
            uses_numbers: &uses_numbers,
            uses_announcements: &uses_announcements,
            graph: &mut graph,
        };
        if let Some(flow) = ctx.flow(raw) {
            flows.insert(name.clone(), flow);
        }
    }
    if sources.flows.is_empty() && errors.is_empty() {
        errors.push(ValidationError::new(
            ".",
            None,
            None,
            "no flow files (*.toml) in the directory",
        ));
    }
    let missing = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| !prompts.contains_key(n) && !broken_prompts.contains(n.as_str()))
            .collect()
    };
    if uses_numbers.get() || uses_announcements.get() {
        let absent = missing(number_prompt_names());
        if !absent.is_empty() {
            let message = format!("missing prompts for reading out numbers: {}", absent.join(", "));
            errors.push(ValidationError::new("prompts/", None, None, message));
        }
    }
    if uses_announcements.get() {
        let absent = missing(ANNOUNCEMENT_PROMPTS.iter().map(|s| s.to_string()).collect());
        if !absent.is_empty() {
            let message = format!("missing prompts for queue announcements: {}", absent.join(", "));
            errors.push(ValidationError::new("prompts/", None, None, message));
        }
    }
    analysis::check(&graph, &mut errors);
    if !errors.is_empty() {
        errors.sort();
        errors.dedup();
        return Err(errors);
    }
    Ok(FlowSet {
        dir: sources.dir.clone(),
        flows,
        prompts,
        localized,
        version: fingerprint(sources),
    })
}

/// FNV-1a over the flow texts and prompt names and lengths: stable across runs and builds.
fn fingerprint(sources: &Sources) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for flow in &sources.flows {
        feed(flow.file.as_bytes());
        feed(flow.text.as_bytes());
    }
    for prompt in &sources.prompts {
        feed(prompt.display.as_bytes());
        if let Ok(info) = &prompt.check {
            feed(&info.duration.as_millis().to_le_bytes());
        }
    }
    hash
}

/// A language tag as BCP 47 writes it (`en`, `zh-CN`, `pt-BR`): letters, digits and `-`, the case
/// kept, since it names the prompt folder (`prompts/zh-CN/`).
pub(crate) fn check_language(tag: &str) -> Result<(), String> {
    let well_formed = !tag.is_empty()
        && tag.len() <= 35
        && tag
            .split('-')
            .all(|part| (1..=8).contains(&part.len()) && part.chars().all(|c| c.is_ascii_alphanumeric()));
    if well_formed {
        Ok(())
    } else {
        Err(format!(
            "{tag:?} is not a language tag; write one like \"en\" or \"zh-CN\""
        ))
    }
}

/// Flow, node, variable and schedule names: short, lowercase letters, digits, `_`, `-` and `.`.
/// An absolute `http(s)://` URL, or a path on the node's own HTTP server (`/demo/balance`), which
/// call control sends to this node with the node's service token.
fn is_webhook_url(url: &str) -> bool {
    url.starts_with("http://")
        || url.starts_with("https://")
        || (url.starts_with('/') && !url.starts_with("//") && !url.contains(['\\', ' ']))
}

pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err(format!("{name:?} must be 1 to 64 characters"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "_-.".contains(*c)))
    {
        return Err(format!(
            "{name:?} has the character {c:?}; use a-z, 0-9, '_', '-' or '.'"
        ));
    }
    Ok(())
}

/// Reads `${name}` as a variable reference.
fn variable_ref(text: &str) -> Option<&str> {
    text.strip_prefix("${").and_then(|s| s.strip_suffix('}'))
}

struct FileCtx<'a> {
    file: &'a str,
    text: &'a str,
    errors: &'a mut Vec<ValidationError>,
    prompts: &'a BTreeMap<String, Prompt>,
    broken_prompts: &'a BTreeSet<&'a str>,
    nodes_of: &'a BTreeMap<String, (String, BTreeSet<String>)>,
    flow_names: &'a BTreeSet<String>,
    flow: &'a str,
    uses_numbers: &'a std::cell::Cell<bool>,
    uses_announcements: &'a std::cell::Cell<bool>,
    graph: &'a mut FlowGraph,
}

impl FileCtx<'_> {
    fn line<T>(&self, spanned: &Spanned<T>) -> u32 {
        line_of(self.text, spanned.span().start)
    }

    fn error(&mut self, line: u32, node: Option<&str>, message: impl Into<String>) {
        self.errors
            .push(ValidationError::new(self.file, Some(line), node, message));
    }

    fn flow(&mut self, raw: &RawFile) -> Option<Flow> {
        let before = self.errors.len();
        let header = raw.flow.get_ref();
        let header_line = self.line(&raw.flow);
        let tz_name = header
            .time_zone
            .as_ref()
            .map(|s| s.get_ref().clone())
            .unwrap_or_else(|| "UTC".to_string());
        let tz_line = header
            .time_zone
            .as_ref()
            .map(|s| self.line(s))
            .unwrap_or(header_line);
        let time_zone = match jiff::tz::TimeZone::get(&tz_name) {
            Ok(tz) => tz,
            Err(_) => {
                self.error(
                    tz_line,
                    None,
                    format!("unknown time zone {tz_name:?}; use an IANA name like \"Europe/Berlin\""),
                );
                jiff::tz::TimeZone::UTC
            }
        };
        let language = header
            .language
            .as_ref()
            .map(|s| s.get_ref().clone())
            .unwrap_or_else(|| "en".to_string());
        let start = header.start.get_ref().clone();
        if !raw.nodes.contains_key(&start) {
            let line = self.line(&header.start);
            self.error(line, None, format!("start node {start:?} does not exist"));
        }
        let mut schedules = BTreeMap::new();
        for (name, spanned) in &raw.schedules {
            if let Some(schedule) = self.schedule(name, spanned) {
                schedules.insert(name.clone(), schedule);
            }
        }
        let mut nodes = BTreeMap::new();
        for (name, spanned) in &raw.nodes {
            let line = self.line(spanned);
            if let Err(message) = check_name(name) {
                self.error(line, Some(name), format!("node name: {message}"));
                continue;
            }
            let mut node_ctx = NodeCtx {
                file: self,
                raw: spanned.get_ref(),
                name,
                line,
                schedules: &schedules,
                edges: Vec::new(),
                uses: Vec::new(),
            };
            let compiled = node_ctx.compile();
            let NodeCtx { edges, uses, .. } = node_ctx;
            // A node with errors still joins the graph with the edges it has, so that the nodes after it
            // are not also reported as unreachable.
            let waits = raw::type_waits(spanned.get_ref().kind.get_ref());
            self.graph
                .add_node(NodeId::new(self.flow, name), self.file, line, waits, edges, uses);
            if let Some(kind) = compiled {
                nodes.insert(
                    name.clone(),
                    Node {
                        name: name.clone(),
                        line,
                        kind,
                    },
                );
            }
        }
        if raw.nodes.contains_key(&start) {
            self.graph.add_start(self.flow, &start);
        }
        if self.errors.len() > before {
            return None;
        }
        Some(Flow {
            name: self.flow.to_string(),
            file: self.file.to_string(),
            start,
            time_zone,
            time_zone_name: tz_name,
            language,
            schedules,
            nodes,
        })
    }

    fn schedule(&mut self, name: &str, spanned: &Spanned<raw::RawSchedule>) -> Option<Schedule> {
        let raw = spanned.get_ref();
        let mut ok = true;
        let mut report = |ctx: &mut Self, line: u32, message: String| {
            ctx.error(line, None, format!("schedule {name:?}: {message}"));
            ok = false;
        };
        let mut days = Vec::new();
        for day in raw.days.get_ref() {
            match parse_weekday(day) {
                Ok(d) => days.push(d),
                Err(e) => report(self, self.line(&raw.days), e),
            }
        }
        let mut hours = Vec::new();
        for range in raw.hours.get_ref() {
            match parse_hours(range) {
                Ok(h) => hours.push(h),
                Err(e) => report(self, self.line(&raw.hours), e),
            }
        }
        let mut holidays = BTreeSet::new();
        if let Some(list) = &raw.holidays {
            for date in list.get_ref() {
                match parse_date(date) {
                    Ok(d) => {
                        holidays.insert(d);
                    }
                    Err(e) => report(self, self.line(list), e),
                }
            }
        }
        ok.then_some(Schedule {
            days,
            hours,
            holidays,
        })
    }
}

struct NodeCtx<'a, 'b> {
    file: &'a mut FileCtx<'b>,
    raw: &'a RawNode,
    name: &'a str,
    line: u32,
    schedules: &'a BTreeMap<String, Schedule>,
    edges: Vec<Edge>,
    uses: Vec<(String, u32)>,
}

/// Default time to wait for a key.
const DEFAULT_INPUT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time to wait for the CRM or a webhook.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

impl NodeCtx<'_, '_> {
    fn error(&mut self, line: u32, message: impl Into<String>) {
        let name = self.name;
        self.file.error(line, Some(name), message);
    }

    fn line<T>(&self, spanned: &Spanned<T>) -> u32 {
        self.file.line(spanned)
    }

    fn compile(&mut self) -> Option<NodeKind> {
        let kind = self.raw.kind.get_ref().as_str();
        let kind_line = self.line(&self.raw.kind);
        let Some(allowed) = raw::allowed_fields(kind) else {
            self.error(
                kind_line,
                format!("unknown node type {kind:?}; use one of {}", raw::NODE_TYPES),
            );
            self.lenient_edges();
            return None;
        };
        let before = self.file.errors.len();
        for field in self.raw.present_fields() {
            if !allowed.contains(&field) {
                self.error(
                    self.line,
                    format!("field `{field}` does not apply to a {kind} node"),
                );
            }
        }
        let compiled = match kind {
            "play" => self.play(),
            "menu" => self.menu(),
            "collect" => self.collect(),
            "lookup" => self.lookup(),
            "webhook" => self.webhook(),
            "branch" => self.branch(),
            "set" => self.set(),
            "enqueue" => self.enqueue(),
            "callback" => self.callback(),
            "voicemail" => self.voicemail(),
            "transfer" => self.transfer(),
            "survey" => self.survey(),
            "goto" => self.goto(),
            "hangup" => self.hangup(),
            _ => None,
        };
        if self.file.errors.len() > before {
            None
        } else {
            compiled
        }
    }

    /// For a node of unknown type: keeps the edges its target fields name, so that one typo in `type`
    /// does not also make every node after it unreachable.
    fn lenient_edges(&mut self) {
        let r = self.raw;
        let singles = [
            &r.next,
            &r.invalid,
            &r.exhausted,
            &r.not_found,
            &r.error,
            &r.default,
            &r.on_exit,
            &r.after_call,
            &r.on_failed,
            &r.decline,
        ];
        let mut targets: Vec<&String> = singles.into_iter().flatten().map(|s| s.get_ref()).collect();
        targets.extend(r.choices.iter().flat_map(|m| m.values().map(|s| s.get_ref())));
        targets.extend(r.cases.iter().flatten().map(|c| c.next.get_ref()));
        for target in targets {
            if self
                .file
                .nodes_of
                .get(self.file.flow)
                .is_some_and(|(_, nodes)| nodes.contains(target))
            {
                self.edges.push(Edge {
                    to: NodeId::new(self.file.flow, target),
                    defines: Vec::new(),
                });
            }
        }
    }

    fn missing(&mut self, field: &str) {
        let kind = self.raw.kind.get_ref().clone();
        self.error(self.line, format!("a {kind} node needs `{field}`"));
    }

    /// A target node of this flow; records the edge.
    fn target(
        &mut self,
        field: &str,
        spanned: Option<&Spanned<String>>,
        defines: &[String],
    ) -> Option<String> {
        let Some(spanned) = spanned else {
            self.missing(field);
            return None;
        };
        self.target_spanned(field, spanned, defines)
    }

    fn target_spanned(
        &mut self,
        field: &str,
        spanned: &Spanned<String>,
        defines: &[String],
    ) -> Option<String> {
        let target = spanned.get_ref();
        let exists = self
            .file
            .nodes_of
            .get(self.file.flow)
            .is_some_and(|(_, nodes)| nodes.contains(target));
        if !exists {
            let line = self.line(spanned);
            self.error(line, format!("`{field}` goes to unknown node {target:?}"));
            return None;
        }
        self.edges.push(Edge {
            to: NodeId::new(self.file.flow, target),
            defines: defines.to_vec(),
        });
        Some(target.clone())
    }

    fn optional_target(&mut self, field: &str, spanned: Option<&Spanned<String>>) -> Option<Option<String>> {
        match spanned {
            None => Some(None),
            Some(s) => self.target_spanned(field, s, &[]).map(Some),
        }
    }

    fn use_var(&mut self, name: &str, line: u32) {
        if let Err(message) = check_name(name) {
            self.error(line, format!("variable name: {message}"));
            return;
        }
        self.uses.push((name.to_string(), line));
    }

    fn prompt_list(&mut self, spanned: Option<&Spanned<Vec<String>>>) -> Vec<PlayItem> {
        let Some(spanned) = spanned else { return Vec::new() };
        let line = self.line(spanned);
        let mut items = Vec::new();
        for entry in spanned.get_ref() {
            if let Some(var) = variable_ref(entry) {
                self.use_var(var, line);
                self.file.uses_numbers.set(true);
                items.push(PlayItem::Number(var.to_string()));
            } else if self.file.prompts.contains_key(entry)
                || self.file.broken_prompts.contains(entry.as_str())
            {
                items.push(PlayItem::Prompt(entry.clone()));
            } else {
                self.error(
                    line,
                    format!("prompt {entry:?} not found (expected prompts/{entry}.wav)"),
                );
            }
        }
        items
    }

    fn required_prompts(&mut self, spanned: Option<&Spanned<Vec<String>>>) -> Vec<PlayItem> {
        if spanned.is_none_or(|s| s.get_ref().is_empty()) {
            self.missing("prompts");
        }
        self.prompt_list(spanned)
    }

    fn duration(&mut self, spanned: Option<&Spanned<String>>, default: Duration) -> Duration {
        let Some(spanned) = spanned else { return default };
        match parse_duration(spanned.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                let line = self.line(spanned);
                self.error(line, e.to_string());
                default
            }
        }
    }

    fn count(&mut self, spanned: Option<&Spanned<i64>>, default: u32, max: u32) -> u32 {
        let Some(spanned) = spanned else { return default };
        match u32::try_from(*spanned.get_ref()) {
            Ok(n) if n <= max => n,
            _ => {
                let line = self.line(spanned);
                self.error(line, format!("must be between 0 and {max}"));
                default
            }
        }
    }

    fn key(&mut self, spanned: Option<&Spanned<String>>) -> Option<char> {
        let spanned = spanned?;
        let mut chars = spanned.get_ref().chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) if is_dtmf(c) => Some(c),
            _ => {
                let line = self.line(spanned);
                self.error(
                    line,
                    format!("{:?} is not a key; use one of 0-9, *, #, A-D", spanned.get_ref()),
                );
                None
            }
        }
    }

    fn queue(&mut self, field: &str, spanned: Option<&Spanned<String>>) -> Option<QueueId> {
        let Some(spanned) = spanned else {
            self.missing(field);
            return None;
        };
        match QueueId::new(spanned.get_ref()) {
            Ok(q) => Some(q),
            Err(e) => {
                let line = self.line(spanned);
                self.error(line, format!("queue: {e}"));
                None
            }
        }
    }

    fn value_expr(&mut self, text: &str, line: u32) -> ValueExpr {
        match variable_ref(text) {
            Some(var) => {
                self.use_var(var, line);
                ValueExpr::Var(var.to_string())
            }
            None => ValueExpr::Literal(text.to_string()),
        }
    }

    fn play(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let prompts = self.required_prompts(r.prompts.as_ref());
        let next = self.target("next", r.next.as_ref(), &[]);
        Some(NodeKind::Play(PlayNode {
            prompts,
            barge_in: r.barge_in.unwrap_or(false),
            next: next?,
        }))
    }

    fn menu(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let prompts = self.required_prompts(r.prompts.as_ref());
        let mut choices = BTreeMap::new();
        match &r.choices {
            None => self.missing("choices"),
            Some(map) if map.is_empty() => self.missing("choices"),
            Some(map) => {
                for (key, target) in map {
                    let mut chars = key.chars();
                    let line = self.line(target);
                    match (chars.next(), chars.next()) {
                        (Some(c), None) if is_dtmf(c) => {
                            if let Some(t) = self.target_spanned(&format!("choices.{key}"), target, &[]) {
                                choices.insert(c, t);
                            }
                        }
                        _ => self.error(
                            line,
                            format!("choice {key:?} is not a key; use one of 0-9, *, #, A-D"),
                        ),
                    }
                }
            }
        }
        let timeout = self.duration(r.timeout.as_ref(), DEFAULT_INPUT_TIMEOUT);
        let retries = self.count(r.retries.as_ref(), 2, 10);
        let invalid_prompts = self.prompt_list(r.invalid_prompts.as_ref());
        let timeout_prompts = self.prompt_list(r.timeout_prompts.as_ref());
        let invalid = self.optional_target("invalid", r.invalid.as_ref());
        let exhausted = self.target("exhausted", r.exhausted.as_ref(), &[]);
        Some(NodeKind::Menu(MenuNode {
            prompts,
            barge_in: r.barge_in.unwrap_or(true),
            choices,
            timeout,
            retries,
            invalid_prompts,
            timeout_prompts,
            invalid: invalid?,
            exhausted: exhausted?,
        }))
    }

    fn collect(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let prompts = self.required_prompts(r.prompts.as_ref());
        let into = match &r.into {
            None => {
                self.missing("into");
                None
            }
            Some(s) => match check_name(s.get_ref()) {
                Ok(()) if BUILTIN_VARIABLES.contains(&s.get_ref().as_str()) => {
                    let line = self.line(s);
                    self.error(
                        line,
                        format!("`into` cannot overwrite the built-in variable {:?}", s.get_ref()),
                    );
                    None
                }
                Ok(()) => Some(s.get_ref().clone()),
                Err(message) => {
                    let line = self.line(s);
                    self.error(line, format!("variable name: {message}"));
                    None
                }
            },
        };
        let min_digits = self.count(r.min_digits.as_ref(), 1, 64) as usize;
        let max_digits = self.count(r.max_digits.as_ref(), 16, 64) as usize;
        if max_digits == 0 || min_digits > max_digits {
            let line = r.max_digits.as_ref().map(|s| self.line(s)).unwrap_or(self.line);
            self.error(
                line,
                format!(
                    "max_digits ({max_digits}) must be at least 1 and at least min_digits ({min_digits})"
                ),
            );
        }
        let terminator = match &r.terminator {
            None => Some('#'),
            Some(s) if s.get_ref().is_empty() => None,
            Some(s) => self.key(Some(s)),
        };
        let timeout = self.duration(r.timeout.as_ref(), DEFAULT_INPUT_TIMEOUT);
        let inter_digit_timeout = self.duration(r.inter_digit_timeout.as_ref(), Duration::from_secs(3));
        let pattern = match &r.pattern {
            None => None,
            Some(s) => match DigitPattern::new(s.get_ref()) {
                Ok(p) => Some(p),
                Err(message) => {
                    let line = self.line(s);
                    self.error(line, format!("pattern {:?}: {message}", s.get_ref()));
                    None
                }
            },
        };
        let retries = self.count(r.retries.as_ref(), 2, 10);
        let invalid_prompts = self.prompt_list(r.invalid_prompts.as_ref());
        let into = into?;
        let next = self.target("next", r.next.as_ref(), std::slice::from_ref(&into));
        let exhausted = self.target("exhausted", r.exhausted.as_ref(), &[]);
        Some(NodeKind::Collect(CollectNode {
            prompts,
            barge_in: r.barge_in.unwrap_or(true),
            into,
            min_digits,
            max_digits,
            terminator,
            timeout,
            inter_digit_timeout,
            pattern,
            retries,
            invalid_prompts,
            sensitive: r.sensitive.unwrap_or(false),
            next: next?,
            exhausted: exhausted?,
        }))
    }

    fn lookup(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let by = match &r.by {
            None => LookupBy::CallerNumber,
            Some(s) if s.get_ref() == "caller" => LookupBy::CallerNumber,
            Some(s) => match variable_ref(s.get_ref()) {
                Some(var) => {
                    let line = self.line(s);
                    self.use_var(var, line);
                    LookupBy::Account(var.to_string())
                }
                None => {
                    let line = self.line(s);
                    self.error(
                        line,
                        format!("`by` is {:?}; write \"caller\" or \"${{variable}}\"", s.get_ref()),
                    );
                    return None;
                }
            },
        };
        let timeout = self.duration(r.timeout.as_ref(), DEFAULT_REQUEST_TIMEOUT);
        let found: Vec<String> = CUSTOMER_VARIABLES.iter().map(|s| s.to_string()).collect();
        let next = self.target("next", r.next.as_ref(), &found);
        let not_found = self.target("not_found", r.not_found.as_ref(), &[]);
        let error = self.target("error", r.error.as_ref(), &[]);
        Some(NodeKind::Lookup(LookupNode {
            by,
            timeout,
            next: next?,
            not_found: not_found?,
            error: error?,
        }))
    }

    fn webhook(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let url = match &r.url {
            None => {
                self.missing("url");
                None
            }
            Some(s) if is_webhook_url(s.get_ref()) => Some(s.get_ref().clone()),
            Some(s) => {
                let line = self.line(s);
                self.error(
                    line,
                    format!(
                        "url {:?} must start with http:// or https://, or be a path on this node such as /demo/balance",
                        s.get_ref()
                    ),
                );
                None
            }
        };
        let timeout = self.duration(r.timeout.as_ref(), DEFAULT_REQUEST_TIMEOUT);
        let send = r.send.as_ref().map(|list| {
            let line = self.line(list);
            for var in list.get_ref() {
                self.use_var(var, line);
            }
            list.get_ref().clone()
        });
        let mut sets = Vec::new();
        if let Some(list) = &r.sets {
            let line = self.line(list);
            for var in list.get_ref() {
                match check_name(var) {
                    Ok(()) if BUILTIN_VARIABLES.contains(&var.as_str()) => self.error(
                        line,
                        format!("`sets` cannot overwrite the built-in variable {var:?}"),
                    ),
                    Ok(()) => sets.push(var.clone()),
                    Err(message) => self.error(line, format!("variable name: {message}")),
                }
            }
        }
        let next = self.target("next", r.next.as_ref(), &sets);
        let error = self.target("error", r.error.as_ref(), &[]);
        Some(NodeKind::Webhook(WebhookNode {
            url: url?,
            timeout,
            send,
            include_sensitive: r.include_sensitive.unwrap_or(false),
            sets,
            next: next?,
            error: error?,
        }))
    }

    fn branch(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let mut cases = Vec::new();
        let mut ok = true;
        for case in r.cases.iter().flatten() {
            let line = self.line(&case.when);
            let when = self.condition(case.when.get_ref(), line, 0);
            let next = self.target_spanned("next", &case.next, &[]);
            match (when, next) {
                (Some(when), Some(next)) => cases.push(BranchCase { when, next }),
                _ => ok = false,
            }
        }
        if r.cases.as_ref().is_none_or(Vec::is_empty) {
            self.missing("cases");
        }
        let default = self.target("default", r.default.as_ref(), &[]);
        if !ok {
            return None;
        }
        Some(NodeKind::Branch(BranchNode {
            cases,
            default: default?,
        }))
    }

    fn condition(&mut self, raw: &RawCondition, line: u32, depth: u32) -> Option<Condition> {
        if depth > 8 {
            self.error(line, "conditions are nested too deeply");
            return None;
        }
        let selectors = [
            raw.open.is_some(),
            raw.holiday.is_some(),
            raw.weekday.is_some(),
            raw.time_between.is_some(),
            raw.var.is_some(),
            raw.queue.is_some(),
            raw.all.is_some(),
            raw.any.is_some(),
            raw.not.is_some(),
        ];
        if selectors.iter().filter(|s| **s).count() != 1 {
            self.error(
                line,
                "a condition needs exactly one of open, holiday, weekday, time_between, var, queue, all, any, not",
            );
            return None;
        }
        let schedule = |ctx: &mut Self, name: &String| {
            if ctx.schedules.contains_key(name) {
                Some(name.clone())
            } else {
                ctx.error(line, format!("unknown schedule {name:?}"));
                None
            }
        };
        if let Some(name) = &raw.open {
            return schedule(self, name).map(Condition::Open);
        }
        if let Some(name) = &raw.holiday {
            return schedule(self, name).map(Condition::Holiday);
        }
        if let Some(days) = &raw.weekday {
            let parsed: Result<Vec<_>, String> = days.iter().map(|d| parse_weekday(d)).collect();
            return match parsed {
                Ok(days) => Some(Condition::Weekday(days)),
                Err(e) => {
                    self.error(line, e);
                    None
                }
            };
        }
        if let Some(range) = &raw.time_between {
            let [from, to] = range.as_slice() else {
                self.error(line, "time_between needs two times, e.g. [\"08:00\", \"12:00\"]");
                return None;
            };
            return match (parse_time_of_day(from), parse_time_of_day(to)) {
                (Ok(a), Ok(b)) if a < b => Some(Condition::TimeBetween(a, b)),
                (Ok(_), Ok(_)) => {
                    self.error(line, "time_between must start before it ends");
                    None
                }
                (Err(e), _) | (_, Err(e)) => {
                    self.error(line, e);
                    None
                }
            };
        }
        if let Some(name) = &raw.var {
            return self.var_condition(raw, name, line);
        }
        if let Some(queue) = &raw.queue {
            return self.queue_condition(raw, queue, line);
        }
        let list = |ctx: &mut Self, items: &Vec<RawCondition>| -> Option<Vec<Condition>> {
            if items.is_empty() {
                ctx.error(line, "all/any needs at least one condition");
                return None;
            }
            let out: Vec<Option<Condition>> =
                items.iter().map(|c| ctx.condition(c, line, depth + 1)).collect();
            out.into_iter().collect()
        };
        if let Some(items) = &raw.all {
            return list(self, items).map(Condition::All);
        }
        if let Some(items) = &raw.any {
            return list(self, items).map(Condition::Any);
        }
        let inner = raw.not.as_ref()?;
        self.condition(inner, line, depth + 1)
            .map(|c| Condition::Not(Box::new(c)))
    }

    fn var_condition(&mut self, raw: &RawCondition, name: &str, line: u32) -> Option<Condition> {
        let tests = [
            raw.equals.is_some(),
            raw.not_equals.is_some(),
            raw.one_of.is_some(),
            raw.starts_with.is_some(),
            raw.matches.is_some(),
            raw.less_than.is_some(),
            raw.greater_than.is_some(),
            raw.set.is_some(),
        ];
        if tests.iter().filter(|t| **t).count() != 1 {
            self.error(
                line,
                "a var condition needs exactly one of equals, not_equals, one_of, starts_with, matches, less_than, greater_than, set",
            );
            return None;
        }
        let literal = |ctx: &mut Self, value: &toml::Value| -> Option<String> {
            match value {
                toml::Value::String(s) => Some(s.clone()),
                toml::Value::Integer(i) => Some(i.to_string()),
                toml::Value::Boolean(b) => Some(b.to_string()),
                _ => {
                    ctx.error(line, "compare with a string, an integer or a boolean");
                    None
                }
            }
        };
        let test = if let Some(v) = &raw.equals {
            VarTest::Equals(literal(self, v)?)
        } else if let Some(v) = &raw.not_equals {
            VarTest::NotEquals(literal(self, v)?)
        } else if let Some(list) = &raw.one_of {
            let values: Vec<Option<String>> = list.iter().map(|v| literal(self, v)).collect();
            VarTest::OneOf(values.into_iter().collect::<Option<Vec<_>>>()?)
        } else if let Some(prefix) = &raw.starts_with {
            VarTest::StartsWith(prefix.clone())
        } else if let Some(source) = &raw.matches {
            match DigitPattern::new(source) {
                Ok(p) => VarTest::Matches(p),
                Err(message) => {
                    self.error(line, format!("pattern {source:?}: {message}"));
                    return None;
                }
            }
        } else if let Some(n) = raw.less_than {
            VarTest::LessThan(n)
        } else if let Some(n) = raw.greater_than {
            VarTest::GreaterThan(n)
        } else {
            VarTest::IsSet(raw.set.unwrap_or(true))
        };
        if matches!(test, VarTest::IsSet(_)) {
            if let Err(message) = check_name(name) {
                self.error(line, format!("variable name: {message}"));
                return None;
            }
        } else {
            self.use_var(name, line);
        }
        Some(Condition::Var {
            name: name.to_string(),
            test,
        })
    }

    fn queue_condition(&mut self, raw: &RawCondition, queue: &str, line: u32) -> Option<Condition> {
        let queue = match QueueId::new(queue) {
            Ok(q) => q,
            Err(e) => {
                self.error(line, format!("queue: {e}"));
                return None;
            }
        };
        let count = |ctx: &mut Self, n: i64| match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                ctx.error(line, "must be 0 or more");
                None
            }
        };
        match (
            raw.agents_available_at_least,
            &raw.wait_below,
            raw.waiting_at_most,
        ) {
            (Some(n), None, None) => Some(Condition::AgentsAvailable {
                queue,
                at_least: count(self, n)?,
            }),
            (None, Some(d), None) => match parse_duration(d) {
                Ok(below) => Some(Condition::WaitBelow { queue, below }),
                Err(e) => {
                    self.error(line, e.to_string());
                    None
                }
            },
            (None, None, Some(n)) => Some(Condition::QueueLengthAtMost {
                queue,
                at_most: count(self, n)?,
            }),
            _ => {
                self.error(
                    line,
                    "a queue condition needs exactly one of agents_available_at_least, wait_below, waiting_at_most",
                );
                None
            }
        }
    }

    fn set(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let mut vars = Vec::new();
        for (name, value) in r.vars.iter().flatten() {
            let line = self.line(value);
            if let Err(message) = check_name(name) {
                self.error(line, format!("variable name: {message}"));
                continue;
            }
            if BUILTIN_VARIABLES.contains(&name.as_str()) {
                self.error(
                    line,
                    format!(
                        "cannot set the built-in variable {name:?}; use `language = ...` for the language"
                    ),
                );
                continue;
            }
            let expr = match value.get_ref() {
                toml::Value::String(s) => self.value_expr(s, line),
                toml::Value::Integer(i) => ValueExpr::Literal(i.to_string()),
                toml::Value::Boolean(b) => ValueExpr::Literal(b.to_string()),
                _ => {
                    self.error(line, format!("{name}: set a string, an integer or a boolean"));
                    continue;
                }
            };
            vars.push((name.clone(), expr));
        }
        let language = match &r.language {
            None => None,
            Some(s) => match check_language(s.get_ref()) {
                Ok(()) => Some(s.get_ref().clone()),
                Err(message) => {
                    let line = self.line(s);
                    self.error(line, format!("language: {message}"));
                    None
                }
            },
        };
        if vars.is_empty() && language.is_none() && r.vars.is_none() {
            self.missing("vars");
        }
        let names: Vec<String> = vars.iter().map(|(n, _)| n.clone()).collect();
        let next = self.target("next", r.next.as_ref(), &names);
        Some(NodeKind::Set(SetNode {
            vars,
            language,
            next: next?,
        }))
    }

    fn enqueue(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let queue = self.queue("queue", r.queue.as_ref());
        let priority = match &r.priority {
            None => Some(PriorityExpr::Fixed(0)),
            Some(s) => {
                let line = self.line(s);
                match s.get_ref() {
                    toml::Value::Integer(i) => match u8::try_from(*i) {
                        Ok(p) => Some(PriorityExpr::Fixed(p)),
                        Err(_) => {
                            self.error(line, "priority must be between 0 and 255");
                            None
                        }
                    },
                    toml::Value::String(text) => match variable_ref(text) {
                        Some(var) => {
                            self.use_var(var, line);
                            Some(PriorityExpr::Var(var.to_string()))
                        }
                        None => {
                            self.error(line, "priority is a number or \"${variable}\"");
                            None
                        }
                    },
                    _ => {
                        self.error(line, "priority is a number or \"${variable}\"");
                        None
                    }
                }
            }
        };
        let skills = r.skills.as_ref().map(|s| s.get_ref().clone());
        let preferred_agent = r.preferred_agent.as_ref().map(|s| {
            let line = self.line(s);
            let expr = self.value_expr(s.get_ref(), line);
            if let ValueExpr::Literal(text) = &expr
                && let Err(e) = AgentId::new(text)
            {
                self.error(line, format!("preferred_agent: {e}"));
            }
            expr
        });
        let announce_position = r.announce_position.unwrap_or(false);
        let announce_wait = r.announce_wait.unwrap_or(false);
        let announce_every = r
            .announce_every
            .as_ref()
            .map(|s| self.duration(Some(s), Duration::from_secs(30)));
        if (announce_position || announce_wait) && announce_every.is_none() {
            self.error(self.line, "announcements need `announce_every`, e.g. \"30s\"");
        }
        if announce_position || announce_wait {
            self.file.uses_announcements.set(true);
        }
        let offer_after = r
            .offer_after
            .as_ref()
            .map(|s| self.duration(Some(s), Duration::from_secs(60)));
        let offer_prompts = self.prompt_list(r.offer_prompts.as_ref());
        if offer_after.is_some() && offer_prompts.is_empty() {
            self.error(
                self.line,
                "`offer_after` needs `offer_prompts` that tell the caller which key to press",
            );
        }
        let exit_key = self.key(r.exit_key.as_ref());
        let on_exit = self.optional_target("on_exit", r.on_exit.as_ref());
        if r.exit_key.is_some() != r.on_exit.is_some() {
            self.error(self.line, "`exit_key` and `on_exit` go together");
        }
        let after_call = self.optional_target("after_call", r.after_call.as_ref());
        let on_failed = self.target("on_failed", r.on_failed.as_ref(), &[]);
        Some(NodeKind::Enqueue(EnqueueNode {
            queue: queue?,
            priority: priority?,
            skills,
            preferred_agent,
            announce_position,
            announce_wait,
            announce_every,
            offer_after,
            offer_prompts,
            exit_key,
            on_exit: on_exit?,
            after_call: after_call?,
            on_failed: on_failed?,
        }))
    }

    fn callback(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let prompts = self.required_prompts(r.prompts.as_ref());
        let queue = self.queue("queue", r.queue.as_ref());
        let accept_key = match &r.accept_key {
            None => Some('1'),
            Some(s) => self.key(Some(s)),
        };
        let timeout = self.duration(r.timeout.as_ref(), DEFAULT_INPUT_TIMEOUT);
        let confirm_prompts = self.prompt_list(r.confirm_prompts.as_ref());
        let decline = self.target("decline", r.decline.as_ref(), &[]);
        Some(NodeKind::Callback(CallbackNode {
            prompts,
            queue: queue?,
            accept_key: accept_key?,
            timeout,
            confirm_prompts,
            decline: decline?,
        }))
    }

    fn voicemail(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let prompts = self.prompt_list(r.prompts.as_ref());
        let mailbox = match &r.mailbox {
            None => {
                self.missing("mailbox");
                None
            }
            Some(s) => match check_name(s.get_ref()) {
                Ok(()) => Some(s.get_ref().clone()),
                Err(message) => {
                    let line = self.line(s);
                    self.error(line, format!("mailbox: {message}"));
                    None
                }
            },
        };
        let max_length = self.duration(r.max_length.as_ref(), Duration::from_secs(120));
        if max_length > Duration::from_secs(600) {
            let line = r.max_length.as_ref().map(|s| self.line(s)).unwrap_or(self.line);
            self.error(
                line,
                format!("max_length {} is over the 10m limit", format_duration(max_length)),
            );
        }
        Some(NodeKind::Voicemail(VoicemailNode {
            prompts,
            mailbox: mailbox?,
            max_length,
            beep: r.beep.unwrap_or(true),
        }))
    }

    fn transfer(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let prompts = self.prompt_list(r.prompts.as_ref());
        let Some(to) = &r.to else {
            self.missing("to");
            return None;
        };
        let text = to.get_ref();
        let target = if text.starts_with("sip:") || text.starts_with("sips:") {
            let valid = text.contains('@') && !text.chars().any(|c| c.is_whitespace() || c.is_control());
            valid.then(|| TransferTarget::SipUri(text.clone()))
        } else {
            let digits = text.strip_prefix('+').unwrap_or(text);
            let valid = (2..=15).contains(&digits.len()) && digits.chars().all(|c| c.is_ascii_digit());
            valid.then(|| TransferTarget::Number(text.clone()))
        };
        match target {
            Some(to) => Some(NodeKind::Transfer(TransferNode { prompts, to })),
            None => {
                let line = self.line(to);
                self.error(
                    line,
                    format!("`to` {text:?} is neither a number (+ and 2-15 digits) nor a sip: URI"),
                );
                None
            }
        }
    }

    fn survey(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let prompts = self.required_prompts(r.prompts.as_ref());
        let timeout = self.duration(r.timeout.as_ref(), DEFAULT_INPUT_TIMEOUT);
        let retries = self.count(r.retries.as_ref(), 1, 10);
        let invalid_prompts = self.prompt_list(r.invalid_prompts.as_ref());
        let next = self.target("next", r.next.as_ref(), &[]);
        Some(NodeKind::Survey(SurveyNode {
            prompts,
            timeout,
            retries,
            invalid_prompts,
            next: next?,
        }))
    }

    fn goto(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let Some(flow) = &r.flow else {
            self.missing("flow");
            return None;
        };
        let flow_name = flow.get_ref().clone();
        let Some((start, nodes)) = self.file.nodes_of.get(&flow_name) else {
            let line = self.line(flow);
            let message = if self.file.flow_names.contains(&flow_name) {
                format!("flow {flow_name:?} has errors")
            } else {
                format!("`flow` names unknown flow {flow_name:?} (expected {flow_name}.toml)")
            };
            self.error(line, message);
            return None;
        };
        let node = match &r.node {
            None => None,
            Some(n) if nodes.contains(n.get_ref()) => Some(n.get_ref().clone()),
            Some(n) => {
                let line = self.line(n);
                self.error(
                    line,
                    format!(
                        "`node` names unknown node {:?} of flow {flow_name:?}",
                        n.get_ref()
                    ),
                );
                return None;
            }
        };
        let to = node.clone().unwrap_or_else(|| start.clone());
        self.edges.push(Edge {
            to: NodeId::new(&flow_name, &to),
            defines: Vec::new(),
        });
        Some(NodeKind::Goto(GotoNode {
            flow: flow_name,
            node,
        }))
    }

    fn hangup(&mut self) -> Option<NodeKind> {
        let r = self.raw;
        let prompts = self.prompt_list(r.prompts.as_ref());
        let reason = r
            .reason
            .as_ref()
            .map(|s| s.get_ref().clone())
            .unwrap_or_else(|| "completed".to_string());
        Some(NodeKind::Hangup(HangupNode { prompts, reason }))
    }
}

/// Keys a telephone keypad sends (RFC 4733 events 0-15).
pub fn is_dtmf(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | 'A' | 'B' | 'C' | 'D')
}
