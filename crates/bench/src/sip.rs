//! `bench sip`: SIPp UAC -> system under test -> SIPp UAS at fixed offered rates, for the callcenter
//! B2BUA and for Kamailio (stateful `t_relay` + `record_route`, one worker) in the same run.
//! Reports per rate: failed calls, retransmissions, CPU microseconds per call of the SIP process,
//! p99 INVITE->200 response time, and the callcenter/Kamailio CPU-per-call ratio. The node anchors every
//! call's media and Kamailio none, so the node's signalling thread is also measured alone: its SIP work
//! against Kamailio's, like for like.
//!
//! A shared machine moves one run's CPU per call by a third either way, so each rate is run
//! `--repeat` times, the two systems alternating, and the ratio reported is the median of the
//! runs' ratios (each run's pair measured back to back, under the same conditions).

use crate::proc_stat;
use serde::Serialize;
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(clap::Args)]
pub struct SipArgs {
    /// Offered call rates (calls per second).
    #[arg(long, value_delimiter = ',', default_value = "200,500,1000")]
    rates: Vec<u32>,
    /// Seconds of load per rate.
    #[arg(long, default_value_t = 30)]
    duration: u32,
    /// Call hold time in milliseconds.
    #[arg(long, default_value_t = 1000)]
    hold_ms: u32,
    /// The callcenter binary (a release build).
    #[arg(long)]
    callcenter: Option<PathBuf>,
    /// Skip the Kamailio baseline.
    #[arg(long)]
    no_kamailio: bool,
    /// Runs per rate (the node, then Kamailio, each time); the summary gives medians.
    #[arg(long, default_value_t = 3)]
    repeat: u32,
}

#[derive(Debug, Serialize)]
struct RateResult {
    offered_cps: u32,
    /// Which of the `--repeat` runs at this rate (0-based).
    run: u32,
    calls_attempted: u64,
    successful: u64,
    failed: u64,
    retransmissions: u64,
    cpu_us_per_call: f64,
    /// The node's signalling thread alone (its SIP work, without the media anchoring of every call);
    /// None for Kamailio.
    signalling_cpu_us_per_call: Option<f64>,
    p99_response_ms: f64,
    p50_response_ms: f64,
    /// Why calls failed, when some did: SIPp's error trace and the system's own log, summarised.
    #[serde(skip_serializing_if = "Option::is_none")]
    failures: Option<FailureEvidence>,
}

/// What a run with failed calls leaves to explain them. SIPp's errors are grouped by kind (its
/// Call-IDs and timestamps taken out, so that a thousand timeouts read as one line with a count); the
/// system's log gives its first and last warnings. The calls are SIPp's synthetic ones: no one's number.
#[derive(Debug, Default, Serialize)]
struct FailureEvidence {
    /// The most frequent kinds of SIPp error, with how many of each.
    sipp_errors: Vec<(String, u64)>,
    /// Warning and error lines the system under test logged during the run.
    system_log_lines: u64,
    /// The first and the last of those lines (without their timestamps).
    system_log_first: Vec<String>,
    system_log_last: Vec<String>,
}

/// Kinds of error kept, lines of log kept at each end, characters kept of each.
const KINDS_KEPT: usize = 10;
const LOG_LINES_KEPT: usize = 10;
const LINE_CHARS_KEPT: usize = 240;

pub(crate) fn free_port() -> u16 {
    loop {
        let Ok(s) = std::net::UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(a) = s.local_addr() else { continue };
        if a.port() % 2 == 0 && std::net::TcpListener::bind(("127.0.0.1", a.port())).is_ok() {
            return a.port();
        }
    }
}

/// A child process killed when dropped.
pub(crate) struct Guard(pub(crate) Child);
impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A process started in a group of its own (Kamailio forks its workers): dropping it kills the whole
/// group, so no worker outlives the run.
pub(crate) struct GroupGuard(pub(crate) Child);
impl Drop for GroupGuard {
    fn drop(&mut self) {
        let group = format!("-{}", self.0.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn wait_udp_bound(port: u16) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn start_uas(port: u16) -> Result<Guard, String> {
    let child = Command::new("sipp")
        .args([
            "-sn",
            "uas",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-mp",
            &free_port().to_string(),
            "-nostdin",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("sipp uas: {e}"))?;
    wait_udp_bound(port);
    Ok(Guard(child))
}

/// The node under test. Its RTP range holds 5,000 port pairs, two and a half times what 1000 CPS of
/// one-second calls hold at once: pairs come back into use within seconds, as on a busy node that has
/// run for a while, so a run of 20 s measures legs opened on kept sockets (`docs/media.md`), not a
/// fresh process's first pass over a range it will never finish.
fn start_callcenter(bin: &Path, dir: &Path, uas_port: u16, log: &Path) -> Result<(Guard, u16), String> {
    let sip_port = free_port();
    let http_port = free_port();
    let config = format!(
        "[node]\nlog = \"warn\"\n[sip]\nlisten = \"127.0.0.1:{sip_port}\"\ntransports = [\"udp\"]\n[sip.limits]\nmax_calls_per_second = 0\nmax_concurrent_calls = 0\nper_source_requests_per_second = 0\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n[rtp]\nport_min = 10000\nport_max = 19999\n[crm]\ndatabase_url = \"sqlite:{}/cc.db\"\n[ivr]\nscripts_dir = \"{}\"\n[[route]]\nnumber = \"900\"\nforward = \"sip:uas@127.0.0.1:{uas_port}\"\n",
        dir.display(),
        // The node loads its IVR flows at start (the repository's, unused by the forward route).
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../ivr-scripts")
            .display()
    );
    let path = dir.join("callcenter.toml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        // Its warnings are kept to explain failed calls, if any.
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .map_err(|e| e.to_string())?;
    if !line.starts_with("callcenter ready") {
        return Err(format!("callcenter did not start: {line}"));
    }
    Ok((Guard(child), sip_port))
}

fn start_kamailio(dir: &Path, uas_port: u16) -> Result<(GroupGuard, u16), String> {
    let port = free_port();
    let cfg = format!(
        r#"#!KAMAILIO
debug=0
log_stderror=yes
children=1
disable_tcp=yes
listen=udp:127.0.0.1:{port}
mpath="/usr/lib/x86_64-linux-gnu/kamailio/modules/"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "siputils.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
request_route {{
    if (!mf_process_maxfwd_header("10")) {{ sl_send_reply("483", "Too Many Hops"); exit; }}
    if (has_totag()) {{
        if (loose_route()) {{ t_relay(); exit; }}
        # SIPp's built-in caller sends ACK and BYE without the recorded route: take them to the callee.
        $du = "sip:127.0.0.1:{uas_port}";
        t_relay();
        exit;
    }}
    if (is_method("CANCEL")) {{ if (t_check_trans()) {{ t_relay(); }} exit; }}
    record_route();
    $du = "sip:127.0.0.1:{uas_port}";
    t_relay();
}}
"#
    );
    let path = dir.join("kamailio.cfg");
    std::fs::write(&path, cfg).map_err(|e| e.to_string())?;
    let child = Command::new("kamailio")
        .process_group(0)
        .args(["-DD", "-E", "-m", "256", "-f"])
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("kamailio: {e}"))?;
    wait_udp_bound(port);
    Ok((GroupGuard(child), port))
}

/// Runs one SIPp load and measures the SIP process tree `pid`; `system_log` is where the system
/// under test logs, if it is kept.
#[allow(clippy::too_many_arguments)]
fn load(
    target_port: u16,
    pid: u32,
    system_log: Option<&Path>,
    rate: u32,
    run: u32,
    duration: u32,
    hold_ms: u32,
) -> Result<RateResult, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let calls = u64::from(rate) * u64::from(duration);
    let cpu_before = proc_stat::tree_cpu_micros(pid);
    let signalling_before = proc_stat::thread_cpu_micros(pid, sip_gateway::SIGNALLING_THREAD);
    let out = Command::new("sipp")
        .current_dir(dir.path())
        .args([
            "-sn",
            "uac",
            "-i",
            "127.0.0.1",
            "-p",
            &free_port().to_string(),
            "-mp",
            &free_port().to_string(),
            "-s",
            "900",
            "-r",
            &rate.to_string(),
            "-d",
            &hold_ms.to_string(),
            "-m",
            &calls.to_string(),
            "-l",
            &(rate * (hold_ms / 1000 + 3)).max(100).to_string(),
            "-trace_stat",
            "-stf",
            "stat.csv",
            "-fd",
            "1",
            "-trace_rtt",
            "-rtt_freq",
            "1",
            "-trace_err",
            "-nostdin",
            "-timeout",
            &format!("{}s", duration + 60),
        ])
        .arg(format!("127.0.0.1:{target_port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("sipp uac: {e}"))?;
    let _ = out;
    let cpu_after = proc_stat::tree_cpu_micros(pid);
    let signalling_after = proc_stat::thread_cpu_micros(pid, sip_gateway::SIGNALLING_THREAD);
    let stat = std::fs::read_to_string(dir.path().join("stat.csv")).unwrap_or_default();
    let get = |name: &str| last_stat(&stat, name);
    let successful = get("SuccessfulCall(C)");
    let failed = get("FailedCall(C)");
    let retransmissions = get("Retransmissions(C)");
    let mut rtts = read_rtts(dir.path());
    rtts.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 * p) as usize).min(rtts.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let handled = (successful + failed).max(1);
    let failed = failed + calls.saturating_sub(successful + failed);
    let failures = (failed > 0).then(|| FailureEvidence::read(dir.path(), system_log));
    Ok(RateResult {
        offered_cps: rate,
        run,
        calls_attempted: calls,
        successful,
        failed,
        retransmissions,
        cpu_us_per_call: (cpu_after.saturating_sub(cpu_before)) as f64 / handled as f64,
        signalling_cpu_us_per_call: signalling_before
            .zip(signalling_after)
            .map(|(before, after)| after.saturating_sub(before) as f64 / handled as f64),
        p99_response_ms: pct(0.99),
        p50_response_ms: pct(0.50),
        failures,
    })
}

impl FailureEvidence {
    /// Reads SIPp's error trace (`*_errors.log` in `sipp_dir`) and the warnings of `system_log`.
    fn read(sipp_dir: &Path, system_log: Option<&Path>) -> Self {
        let mut errors = String::new();
        for entry in std::fs::read_dir(sipp_dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().ends_with("_errors.log") {
                errors.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        let log = system_log
            .and_then(|path| std::fs::read(path).ok())
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        Self::from_texts(&errors, &log)
    }

    fn from_texts(sipp_errors: &str, system_log: &str) -> Self {
        let mut kinds: std::collections::BTreeMap<String, u64> = Default::default();
        for kind in sipp_errors.lines().filter_map(sipp_error_kind) {
            *kinds.entry(kind).or_default() += 1;
        }
        let mut sipp_errors: Vec<(String, u64)> = kinds.into_iter().collect();
        sipp_errors.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        sipp_errors.truncate(KINDS_KEPT);
        let warnings: Vec<String> = system_log
            .lines()
            .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
            .map(|line| {
                // The timestamp is the line's first word.
                let text = line.split_once(' ').map_or(line, |(_, rest)| rest.trim_start());
                text.chars().take(LINE_CHARS_KEPT).collect()
            })
            .collect();
        let last_from = warnings
            .len()
            .saturating_sub(LOG_LINES_KEPT)
            .max(LOG_LINES_KEPT.min(warnings.len()));
        Self {
            sipp_errors,
            system_log_lines: warnings.len() as u64,
            system_log_first: warnings.iter().take(LOG_LINES_KEPT).cloned().collect(),
            system_log_last: warnings.get(last_from..).unwrap_or_default().to_vec(),
        }
    }
}

/// One SIPp error line as a kind: its timestamp and the quoted Call-ID taken out, the text cut short.
/// Lines that continue a quoted SIP message (they do not start with a date) are not kinds of their own.
fn sipp_error_kind(line: &str) -> Option<String> {
    if !line.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    // "2026-12-07\t23:59:59.123456\t1733615999.123456: what happened"
    let text = line.split_once(": ").map_or(line, |(_, rest)| rest);
    let mut kind = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("Call-Id '").or_else(|| rest.find("Call-ID '")) {
        let open = start + "Call-Id '".len();
        kind.push_str(&rest[..open]);
        kind.push_str("…'");
        rest = match rest[open..].find('\'') {
            Some(close) => &rest[open + close + 1..],
            None => "",
        };
    }
    kind.push_str(rest);
    Some(kind.chars().take(LINE_CHARS_KEPT).collect())
}

pub(crate) fn last_stat(csv: &str, name: &str) -> u64 {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else { return 0 };
    let Some(last) = lines.rfind(|l| !l.trim().is_empty()) else {
        return 0;
    };
    let idx = header.split(';').position(|c| c == name);
    idx.and_then(|i| last.split(';').nth(i))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

pub(crate) fn read_rtts(dir: &Path) -> Vec<f64> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.ends_with("_rtt.csv") {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            out.extend(
                text.lines()
                    .skip(1)
                    .filter_map(|l| l.split(';').nth(1)?.trim().parse::<f64>().ok()),
            );
        }
    }
    out
}

pub fn run(args: &SipArgs) -> Result<Value, String> {
    let bin = match &args.callcenter {
        Some(b) => b.clone(),
        None => {
            let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
            PathBuf::from(target).join("release/callcenter")
        }
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for &rate in &args.rates {
        for run in 0..args.repeat.max(1) {
            let uas_port = free_port();
            let _uas = start_uas(uas_port)?;
            let log = dir.path().join(format!("callcenter-{rate}-{run}.log"));
            let (cc, port) = start_callcenter(&bin, dir.path(), uas_port, &log)?;
            ours.push(load(
                port,
                cc.0.id(),
                Some(&log),
                rate,
                run,
                args.duration,
                args.hold_ms,
            )?);
            drop(cc);
            if !args.no_kamailio {
                let uas_port = free_port();
                let _uas = start_uas(uas_port)?;
                let (k, port) = start_kamailio(dir.path(), uas_port)?;
                theirs.push(load(
                    port,
                    k.0.id(),
                    None,
                    rate,
                    run,
                    args.duration,
                    args.hold_ms,
                )?);
            }
        }
    }
    let summary: Vec<Value> = args
        .rates
        .iter()
        .map(|&rate| summarise(rate, &ours, &theirs))
        .collect();
    Ok(json!({
        "benchmark": "sip",
        "duration_s": args.duration,
        "hold_ms": args.hold_ms,
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "callcenter": ours,
        "kamailio": theirs,
        "summary": summary,
    }))
}

/// One rate's medians over its runs, and the medians of the runs' callcenter / Kamailio ratios, each
/// run's node paired with the Kamailio run measured right after it.
fn summarise(rate: u32, ours: &[RateResult], theirs: &[RateResult]) -> Value {
    fn at_rate(results: &[RateResult], rate: u32) -> Vec<&RateResult> {
        results.iter().filter(|r| r.offered_cps == rate).collect()
    }
    let (ours, theirs) = (at_rate(ours, rate), at_rate(theirs, rate));
    let cpu = |results: &[&RateResult]| -> Vec<f64> { results.iter().map(|r| r.cpu_us_per_call).collect() };
    let pairs = || {
        ours.iter()
            .zip(&theirs)
            .filter(|(node, kamailio)| node.run == kamailio.run)
    };
    let ratios: Vec<f64> = pairs()
        .map(|(node, kamailio)| node.cpu_us_per_call / kamailio.cpu_us_per_call)
        .collect();
    // Kamailio anchors no media here; the node's signalling thread is the like-for-like part.
    let signalling: Vec<f64> = ours.iter().filter_map(|r| r.signalling_cpu_us_per_call).collect();
    let signalling_ratios: Vec<f64> = pairs()
        .filter_map(|(node, kamailio)| Some(node.signalling_cpu_us_per_call? / kamailio.cpu_us_per_call))
        .collect();
    json!({
        "offered_cps": rate,
        "runs": ours.len(),
        "callcenter_cpu_us_per_call_median": median(&cpu(&ours)),
        "kamailio_cpu_us_per_call_median": median(&cpu(&theirs)),
        "cpu_per_call_callcenter_over_kamailio_median": median(&ratios),
        "cpu_per_call_callcenter_over_kamailio_runs": ratios,
        "callcenter_signalling_cpu_us_per_call_median": median(&signalling),
        "signalling_cpu_per_call_over_kamailio_median": median(&signalling_ratios),
        "signalling_cpu_per_call_over_kamailio_runs": signalling_ratios,
        "callcenter_failed_calls": ours.iter().map(|r| r.failed).sum::<u64>(),
    })
}

/// The middle value (the mean of the two middle ones for an even count); None when empty.
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        len if len % 2 == 1 => sorted.get(mid).copied(),
        _ => Some((sorted[mid - 1] + sorted[mid]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::{FailureEvidence, RateResult, median, summarise};

    fn result(offered_cps: u32, run: u32, cpu: f64, signalling: Option<f64>) -> RateResult {
        RateResult {
            offered_cps,
            run,
            calls_attempted: 100,
            successful: 100,
            failed: 0,
            retransmissions: 0,
            cpu_us_per_call: cpu,
            signalling_cpu_us_per_call: signalling,
            p99_response_ms: 1.0,
            p50_response_ms: 0.0,
            failures: None,
        }
    }

    #[test]
    fn each_node_run_is_compared_with_the_kamailio_run_beside_it() {
        // Run 0 of the node has no signalling figure: run 1's must still meet Kamailio's run 1.
        let ours = [
            result(500, 0, 400.0, None),
            result(500, 1, 600.0, Some(450.0)),
            result(1000, 0, 999.0, Some(999.0)),
        ];
        let theirs = [
            result(500, 0, 200.0, None),
            result(500, 1, 300.0, None),
            result(1000, 0, 1.0, None),
        ];
        let summary = summarise(500, &ours, &theirs);
        assert_eq!(summary["runs"], 2);
        assert_eq!(
            summary["cpu_per_call_callcenter_over_kamailio_runs"],
            serde_json::json!([2.0, 2.0])
        );
        assert_eq!(
            summary["signalling_cpu_per_call_over_kamailio_runs"],
            serde_json::json!([1.5])
        );
        assert_eq!(summary["kamailio_cpu_us_per_call_median"], 250.0);
    }

    #[test]
    fn median_of_odd_even_and_empty_sets() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn failures_are_grouped_by_kind_without_call_ids_and_the_log_keeps_its_warnings() {
        let sipp = "2026-12-07\t10:00:00.1\t1.1: Aborting call on unexpected message for Call-Id '1-9@127.0.0.1': while expecting '200' (index 3), received 'SIP/2.0 503 Service Unavailable\n\
Via: SIP/2.0/UDP 127.0.0.1\n\
'\n\
2026-12-07\t10:00:00.2\t1.2: Aborting call on unexpected message for Call-Id '2-9@127.0.0.1': while expecting '200' (index 3), received 'SIP/2.0 503 Service Unavailable\n\
2026-12-07\t10:00:01.0\t2.0: Call-Id '3-9@127.0.0.1': timeout\n";
        let log = "2026-12-07T10:00:00Z  INFO started\n\
2026-12-07T10:00:00Z  WARN call{id=1}: gateway: no answer\n\
2026-12-07T10:00:01Z ERROR store: gone\n";
        let evidence = FailureEvidence::from_texts(sipp, log);
        assert_eq!(evidence.sipp_errors.len(), 2);
        assert_eq!(evidence.sipp_errors[0].1, 2);
        assert!(
            evidence.sipp_errors[0].0.contains("Call-Id '…'"),
            "{:?}",
            evidence.sipp_errors
        );
        assert!(evidence.sipp_errors[0].0.contains("503 Service Unavailable"));
        assert_eq!(evidence.sipp_errors[1], ("Call-Id '…': timeout".to_string(), 1));
        assert_eq!(evidence.system_log_lines, 2);
        assert_eq!(
            evidence.system_log_first[0],
            "WARN call{id=1}: gateway: no answer"
        );
        // Few lines: each is given once, not as both first and last.
        assert!(evidence.system_log_last.is_empty());
    }
}
