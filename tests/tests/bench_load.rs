//! `bench load` at a tiny step against the real binary: its JSON says every call was answered by an
//! agent's phone, recorded and logged, with RTP both ways through the node and through the bare relay.
//! No timing is asserted: speed is the bench's to report, not a test's to judge.

use std::process::Command;
use system_tests::*;

#[test]
fn bench_load_at_five_calls_answers_records_and_carries_audio_both_ways() {
    require_command("sipp");
    // `cargo build --workspace --bins` (the test command) puts `bench` beside `callcenter`.
    let bench = callcenter_bin().with_file_name("bench");
    assert!(
        bench.exists(),
        "{} is missing: build the workspace's binaries first",
        bench.display()
    );
    let out = Command::new(&bench)
        .args(["load", "--calls", "5", "--hold-secs", "12", "--ramp-secs", "1"])
        .args(["--settle-secs", "4", "--relay-threads", "1", "--callcenter"])
        .arg(callcenter_bin())
        .output()
        .expect("run bench load");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench load failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON output");
    let step = &json["steps"][0];
    let n = |v: &serde_json::Value| {
        v.as_f64()
            .unwrap_or_else(|| panic!("not a number: {v} in {step}"))
    };
    assert_eq!(step["calls"], 5, "{step}");
    assert_eq!(step["answered"], 5, "{step}");
    assert_eq!(step["failed"], 0, "{step}");
    assert_eq!(step["agent_phone_calls_completed"], 5, "{step}");
    assert_eq!(step["crm"]["answered_by_agent"], 5, "{step}");
    assert_eq!(step["crm"]["recorded"], 5, "{step}");
    assert_eq!(step["recording_files"], 5, "{step}");
    for direction in ["caller_to_agent", "agent_to_caller"] {
        let d = &step["rtp"][direction];
        assert_eq!(d["streams"], 5, "{direction}: {step}");
        assert!(n(&d["sent"]) > 0.0, "{direction}: {step}");
        assert!(n(&d["received"]) > 0.0, "{direction}: {step}");
        assert!(n(&d["latency_p99_us"]) > 0.0, "{direction}: {step}");
    }
    // Every packet reached the generator's socket: a loss would be the platform's, not the bench's.
    assert_eq!(step["rtp"]["generator_socket_drops"], 0, "{step}");
    let node = &step["node"];
    for figure in [
        "cpu_share_of_one_core",
        "rss_loaded_kb",
        "fds_loaded",
        "threads_loaded",
    ] {
        assert!(n(&node[figure]) > 0.0, "{figure}: {step}");
    }
    // Measured (a number), but SIPp counts in whole milliseconds: a quiet node answers within 0 ms.
    assert!(n(&step["sip"]["invite_to_200_p99_ms"]) >= 0.0, "{step}");
    assert!(n(&step["bare_relay"]["received"]) > 0.0, "{step}");
    assert!(
        n(&step["ratios"]["p99_latency_full_path_over_bare"]) > 0.0,
        "{step}"
    );
}
