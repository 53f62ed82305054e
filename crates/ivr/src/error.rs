//! Validation errors: every one names the file, the line when known, and the node when it is about one.

use std::fmt;

/// One problem found while loading a flow set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ValidationError {
    /// Path relative to the flow directory, e.g. `main.toml` or `prompts/welcome.wav`.
    pub file: String,
    /// 1-based line, when the problem sits at a place in a text file.
    pub line: Option<u32>,
    /// The node concerned, if any.
    pub node: Option<String>,
    pub message: String,
}

impl ValidationError {
    pub(crate) fn new(file: &str, line: Option<u32>, node: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_string(),
            line,
            node: node.map(str::to_string),
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    /// `main.toml:12: node "menu": unknown target "sale"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(node) = &self.node {
            write!(f, ": node {node:?}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Formats a list of errors one per line, as `callcenter ivr check` prints them.
pub fn render_errors(errors: &[ValidationError]) -> String {
    errors.iter().map(|e| format!("{e}\n")).collect()
}

/// 1-based line of a byte offset in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> u32 {
    let end = offset.min(text.len());
    let newlines = text.as_bytes().iter().take(end).filter(|b| **b == b'\n').count();
    u32::try_from(newlines).unwrap_or(u32::MAX).saturating_add(1)
}
