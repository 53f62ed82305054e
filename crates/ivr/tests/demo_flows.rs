//! The shipped demo flows in `ivr-scripts/` must always load cleanly.

// Test helpers outside #[test] functions unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

fn scripts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../ivr-scripts")
}

#[test]
fn demo_flows_validate_cleanly() {
    let set = match ivr::load_dir(scripts_dir()) {
        Ok(set) => set,
        Err(errors) => panic!("demo flows have errors:\n{}", ivr::render_errors(&errors)),
    };
    assert_eq!(set.flow_names().collect::<Vec<_>>(), ["main", "support"]);
    let main = set.flow("main").unwrap();
    assert_eq!(main.start, "welcome");
    assert_eq!(main.time_zone_name, "Europe/Berlin");
    // Every prompt is real audio of a sensible length, not a placeholder.
    let welcome = set.prompt("welcome").unwrap();
    assert!(
        welcome.duration > std::time::Duration::from_millis(800),
        "{:?}",
        welcome.duration
    );
    assert!(set.prompt("main-menu").unwrap().duration < std::time::Duration::from_secs(15));
}

#[test]
fn check_dir_reports_a_summary_or_the_errors() {
    assert_eq!(
        ivr::check_dir(scripts_dir()).unwrap(),
        "ok: 2 flows (main, support), 34 nodes, 98 prompts"
    );
    let broken = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/broken/missing_start");
    assert_eq!(
        ivr::check_dir(broken).unwrap_err(),
        "main.toml:2: start node \"welcome\" does not exist\n"
    );
}
