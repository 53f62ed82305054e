//! Snapshot tests of validation output: each directory under `tests/broken/` is a flow set with known
//! mistakes, and `expected.txt` beside it holds the exact error report. Cases without their own
//! `prompts/` use the small prompts in `tests/broken/_prompts/`.
//!
//! To refresh the snapshots after a deliberate change of messages: `UPDATE_SNAPSHOTS=1 cargo test -p ivr`,
//! then review the diff.

// Test helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

fn broken_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/broken")
}

fn report(case: &Path) -> String {
    let mut sources = ivr::read_sources(case);
    if !case.join("prompts").is_dir() {
        sources.prompts = ivr::read_sources(&broken_dir().join("_shared")).prompts;
    }
    match ivr::compile(&sources) {
        Ok(_) => "(no errors)\n".to_string(),
        Err(errors) => ivr::render_errors(&errors),
    }
}

#[test]
fn broken_flows_report_the_expected_errors() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(broken_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('_'))
        .collect();
    cases.sort();
    assert!(cases.len() >= 8, "expected the broken cases, found {cases:?}");
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut failures = Vec::new();
    for case in &cases {
        let actual = report(case);
        let expected_path = case.join("expected.txt");
        if update {
            std::fs::write(&expected_path, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if actual != expected {
            failures.push(format!(
                "--- {}\nexpected:\n{expected}actual:\n{actual}",
                case.display()
            ));
        }
        assert_ne!(actual, "(no errors)\n", "{} should not validate", case.display());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_invalid_reload_keeps_the_running_set() {
    let good = ivr::load_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ivr-scripts")).unwrap();
    let handle = ivr::FlowSetHandle::new(good);
    let before = handle.current();
    let errors = handle.reload(broken_dir().join("targets")).unwrap_err();
    assert!(!errors.is_empty());
    assert!(
        std::sync::Arc::ptr_eq(&before, &handle.current()),
        "a broken set must not replace the running one"
    );
    // A valid reload swaps the pointer; a call holding the old Arc keeps its version.
    let after = handle
        .reload(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ivr-scripts"))
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(&after, &handle.current()));
    assert!(!std::sync::Arc::ptr_eq(&before, &after));
    assert_eq!(
        before.version(),
        after.version(),
        "same sources, same fingerprint"
    );
    assert!(before.flow("main").is_some());
}
