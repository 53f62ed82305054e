//! Reading a flow directory from disk, and the shared handle that swaps in a new flow set only when it
//! is valid. The directory layout: `*.toml` flows at the top, `prompts/NAME.wav` beside them, and
//! optional `prompts/LANG/NAME.wav` recordings in other languages.

use crate::compile::{FlowSource, PromptSource, Sources, compile};
use crate::error::ValidationError;
use crate::model::FlowSet;
use crate::wav::check_wav;
use std::path::Path;
use std::sync::{Arc, RwLock};

/// Largest flow file read; a flow is a few kilobytes.
const MAX_FLOW_BYTES: u64 = 1024 * 1024;
/// Largest prompt file read; prompts are short.
const MAX_PROMPT_BYTES: u64 = 16 * 1024 * 1024;

/// Loads and validates every flow of `dir`. The error list names file, line and node of each problem.
pub fn load_dir(dir: impl AsRef<Path>) -> Result<FlowSet, Vec<ValidationError>> {
    compile(&read_sources(dir.as_ref()))
}

/// What `callcenter ivr check DIR` prints: `Ok` with a one-line summary when the directory is valid,
/// `Err` with one error per line (file:line: node "name": message) when not.
pub fn check_dir(dir: impl AsRef<Path>) -> Result<String, String> {
    match load_dir(dir) {
        Ok(set) => Ok(format!("ok: {}", set.summary())),
        Err(errors) => Err(crate::error::render_errors(&errors)),
    }
}

/// Reads the flow texts and checks the prompt headers of `dir`, without validating anything else.
pub fn read_sources(dir: &Path) -> Sources {
    let mut sources = Sources {
        dir: dir.to_path_buf(),
        ..Sources::default()
    };
    let entries = match sorted_entries(dir) {
        Ok(entries) => entries,
        Err(e) => {
            sources.read_errors.push(ValidationError::new(
                &dir.display().to_string(),
                None,
                None,
                format!("cannot read: {e}"),
            ));
            return sources;
        }
    };
    for (name, path) in entries {
        if !name.ends_with(".toml") || !path.is_file() {
            continue;
        }
        match read_limited(&path, MAX_FLOW_BYTES)
            .and_then(|b| String::from_utf8(b).map_err(|_| "not UTF-8 text".into()))
        {
            Ok(text) => sources.flows.push(FlowSource { file: name, text }),
            Err(e) => sources.read_errors.push(ValidationError::new(
                &name,
                None,
                None,
                format!("cannot read: {e}"),
            )),
        }
    }
    let prompts_dir = dir.join("prompts");
    if prompts_dir.is_dir() {
        read_prompts(&prompts_dir, None, &mut sources);
        if let Ok(entries) = sorted_entries(&prompts_dir) {
            for (language, path) in entries {
                if path.is_dir() {
                    read_prompts(&path, Some(language), &mut sources);
                }
            }
        }
    }
    sources
}

fn read_prompts(dir: &Path, language: Option<String>, sources: &mut Sources) {
    let Ok(entries) = sorted_entries(dir) else { return };
    for (file, path) in entries {
        let Some(name) = file.strip_suffix(".wav") else {
            continue;
        };
        if !path.is_file() {
            continue;
        }
        let display = match &language {
            None => format!("prompts/{file}"),
            Some(lang) => format!("prompts/{lang}/{file}"),
        };
        match read_limited(&path, MAX_PROMPT_BYTES) {
            Ok(bytes) => sources.prompts.push(PromptSource {
                name: name.to_string(),
                language: language.clone(),
                path: path.clone(),
                display,
                check: check_wav(&bytes),
            }),
            Err(e) => sources.read_errors.push(ValidationError::new(
                &display,
                None,
                None,
                format!("cannot read: {e}"),
            )),
        }
    }
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<(String, std::path::PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(name) = entry.file_name().to_str() {
            out.push((name.to_string(), entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > limit {
        return Err(format!("file is {len} bytes, over the {limit}-byte limit"));
    }
    std::fs::read(path).map_err(|e| e.to_string())
}

/// The flow set in force, shared by all calls. A reload swaps in a new `Arc` only when the new set is
/// valid; calls in progress keep the `Arc` they started with, so they finish on their version.
#[derive(Debug)]
pub struct FlowSetHandle {
    current: RwLock<Arc<FlowSet>>,
}

impl FlowSetHandle {
    /// Starts with a valid set.
    pub fn new(initial: FlowSet) -> Self {
        Self {
            current: RwLock::new(Arc::new(initial)),
        }
    }
    /// The set new calls should start on.
    pub fn current(&self) -> Arc<FlowSet> {
        // A poisoned lock still holds a valid Arc: a writer only ever stores a whole one.
        match self.current.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
    /// Replaces the set if `candidate` is valid; otherwise keeps the running one and returns the errors.
    pub fn replace_if_valid(
        &self,
        candidate: Result<FlowSet, Vec<ValidationError>>,
    ) -> Result<Arc<FlowSet>, Vec<ValidationError>> {
        let set = Arc::new(candidate?);
        match self.current.write() {
            Ok(mut guard) => *guard = Arc::clone(&set),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(&set),
        }
        Ok(set)
    }
    /// Loads `dir` and swaps it in if valid (what a SIGHUP handler calls).
    pub fn reload(&self, dir: impl AsRef<Path>) -> Result<Arc<FlowSet>, Vec<ValidationError>> {
        self.replace_if_valid(load_dir(dir))
    }
}
