//! The offline commands of the `callcenter` binary, run as a user would.

use std::process::Command;
use system_tests::callcenter_bin;

fn run(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(callcenter_bin())
        .args(args)
        .output()
        .expect("run callcenter");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn ivr_check_accepts_the_demo_and_reports_broken_flows_exactly() {
    let demo = system_tests::ivr_dir();
    let (code, out, err) = run(&["ivr", "check", demo.to_str().unwrap_or_default()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("ok:"), "{out}");
    let broken = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/ivr/tests/broken");
    for case in ["targets", "unreachable", "instant_loop", "variables", "syntax"] {
        let dir = broken.join(case);
        let expected = std::fs::read_to_string(dir.join("expected.txt")).expect("expected output");
        let (code, out, err) = run(&["ivr", "check", dir.to_str().unwrap_or_default()]);
        assert_eq!(code, Some(1), "{case}: {out}");
        // Paths in the snapshot are relative to the flow directory; compare line by line on the message.
        for line in expected.lines().filter(|l| !l.trim().is_empty()) {
            let message = line.rsplit(": ").next().unwrap_or(line);
            assert!(err.contains(message), "{case}: missing {message:?} in\n{err}");
        }
    }
}

#[test]
fn erlang_matches_the_textbook_example() {
    // 100 calls in 30 minutes = 200 per hour, AHT 180 s, 80/20: 14 agents (SL 88.8%), 13 give 79.6%.
    let (code, out, err) = run(&[
        "erlang",
        "--calls-per-hour",
        "200",
        "--aht",
        "180",
        "--target",
        "80/20",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\"agents_needed\": 14"), "{out}");
    let (code, _, err) = run(&[
        "erlang",
        "--calls-per-hour",
        "200",
        "--aht",
        "180",
        "--target",
        "120/20",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("--target"), "{err}");
}

#[test]
fn check_config_exits_1_with_the_key_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[sip]\nlisten = \"nowhere\"\n").expect("write");
    let (code, _, err) = run(&["check-config", bad.to_str().unwrap_or_default()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("sip.listen"), "{err}");
}

#[test]
fn dialer_simulate_runs_a_scenario() {
    let scenario =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/dialer/scenarios/stationary.toml");
    let (code, out, err) = run(&[
        "dialer",
        "simulate",
        "--scenario",
        scenario.to_str().unwrap_or_default(),
        "--policy",
        "progressive",
        "--seed",
        "3",
        "--json",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\"policy\""), "{out}");
    assert!(out.contains("\"abandon_rate_us\""), "{out}");
}
