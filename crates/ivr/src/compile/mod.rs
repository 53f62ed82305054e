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

mod conditions;
mod nodes;

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
}

/// Keys a telephone keypad sends (RFC 4733 events 0-15).
pub fn is_dtmf(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '*' | '#' | 'A' | 'B' | 'C' | 'D')
}
