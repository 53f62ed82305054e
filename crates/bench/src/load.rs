//! `bench load`: the whole path of an inbound call under load, with the real `callcenter serve` binary.
//!
//! Per step of N concurrent calls: a fresh platform with N agents, each a SIP user whose phone is one
//! SIPp UAS (registered through SIPp with digest auth, ready on start); a SIPp UAC places N calls at a
//! fixed rate (N / `--ramp-secs`) to the IVR number; the bench's own RTP ends ([`crate::load_rtp`]) press
//! 1 as RFC 4733 events and talk both ways at 50 packets/s; the IVR queues the call, the ACD offers it to
//! an agent, whose phone answers; the call is bridged, recorded and logged to the CRM (SQLite) until the
//! caller hangs up after `--hold-secs`.
//!
//! Measured in a window when every call of the step is up: the node's CPU, resident memory and open
//! files per concurrent call, RTP loss, latency and added jitter each way; outside it, failed calls,
//! INVITE->200, enqueue->offer (CRM timestamps) and what reached the CRM. The same number of calls then
//! goes through `bench media`'s bare UDP relay for the same window length in the same run, so the
//! full path's latency beside pure relaying is a ratio on the same machine at the same moment. The load
//! generators' CPU (SIPp processes, the RTP ends) is reported apart from the node's, and the machine's
//! load average beside every figure: this machine is shared.

use crate::load_rtp::{self, CallerPlan, MediaFigures, MediaLoad, RTP_THREAD};
use crate::media::{self, Mode};
use crate::proc_stat;
use crate::sip::{Guard, free_port, last_stat, read_rtts, wait_udp_bound};
use serde_json::{Value, json};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct LoadArgs {
    /// Concurrent calls, one step per value (bigger steps: `--calls 1000,2000`).
    #[arg(long, value_delimiter = ',', default_value = "100,250,500")]
    calls: Vec<usize>,
    /// How long each caller stays on the line after the platform answers.
    #[arg(long, default_value_t = 60)]
    hold_secs: u64,
    /// Calls of a step are placed evenly over this many seconds (rate = calls / ramp).
    #[arg(long, default_value_t = 20)]
    ramp_secs: u64,
    /// Seconds after the last call was placed before the measured window opens (IVR, queue, answer).
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
    /// The callcenter binary (a release build; default `$CARGO_TARGET_DIR/release/callcenter`).
    #[arg(long)]
    callcenter: Option<PathBuf>,
    /// Record every call (the platform's `[rtp] record_calls`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    record: bool,
    /// Also run each step through the bare UDP relay of `bench media` (true or false).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    baseline: bool,
    /// Worker threads of the bare relay's runtime.
    #[arg(long, default_value_t = 2)]
    relay_threads: usize,
    /// Keep each step's folder (configuration, node log, SIPp statistics and errors, CRM, recordings) and
    /// print its path on stderr.
    #[arg(long)]
    keep_dir: bool,
    /// Where the IVR prompts are (`main-menu.wav`, `goodbye.wav`).
    #[arg(long)]
    prompts: Option<PathBuf>,
}

/// The published anchor: RustPBX's CPU per recorded call, in percent of one core.
const RUSTPBX_PERCENT_OF_CORE_PER_RECORDED_CALL: f64 = 0.13;
/// Callers stop talking this long before their BYE, so no packet is sent to a closing leg.
const TALK_MARGIN: Duration = Duration::from_millis(1500);
/// The measured window closes this long before the first caller hangs up.
const WINDOW_END_MARGIN_SECS: u64 = 3;
const AGENT_PASSWORD: &str = "load-agent";

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scenario(name: &str) -> PathBuf {
    manifest_dir().join("sipp").join(name)
}

fn agent_id(i: usize) -> String {
    format!("{}", 100_000 + i)
}

/// The IVR of the bench: a menu whose key 1 queues the call; no business hours, no survey.
const FLOW: &str = r#"# bench load: key 1 queues the caller for the agents of queue "load".
[flow]
start = "menu"
time_zone = "UTC"

[nodes.menu]
type = "menu"
prompts = ["main-menu"]
choices = { "1" = "queue" }
timeout = "10s"
retries = 1
invalid_prompts = ["main-menu"]
exhausted = "bye"

[nodes.queue]
type = "enqueue"
queue = "load"
priority = 5
on_failed = "bye"

[nodes.bye]
type = "hangup"
prompts = ["goodbye"]
"#;

fn write_flows(dir: &Path, prompts: &Path) -> Result<PathBuf, String> {
    let flows = dir.join("flows");
    std::fs::create_dir_all(flows.join("prompts")).map_err(|e| e.to_string())?;
    std::fs::write(flows.join("main.toml"), FLOW).map_err(|e| e.to_string())?;
    for name in ["main-menu", "goodbye"] {
        let from = prompts.join(format!("{name}.wav"));
        std::fs::copy(&from, flows.join("prompts").join(format!("{name}.wav")))
            .map_err(|e| format!("prompt {}: {e}", from.display()))?;
    }
    Ok(flows)
}

fn config(dir: &Path, flows: &Path, sip_port: u16, http_port: u16, agents: usize, record: bool) -> String {
    let d = dir.display();
    let mut c = format!(
        "[node]\nlog = \"warn\"\nshutdown_grace_secs = 1\n\n[sip]\nlisten = \"127.0.0.1:{sip_port}\"\ntransports = [\"udp\"]\n\n\
         [sip.limits]\nmax_calls_per_second = 0\nmax_concurrent_calls = 0\nper_source_requests_per_second = 0\n\n\
         [http]\nlisten = \"127.0.0.1:{http_port}\"\n\n\
         [rtp]\nport_min = 10000\nport_max = 30999\nrecordings_dir = \"{d}/recordings\"\nrecord_calls = {record}\n\n\
         [crm]\ndatabase_url = \"sqlite:{d}/cc.db\"\njournal_dir = \"{d}/journal\"\n\n\
         [ivr]\nscripts_dir = \"{}\"\nentry_flow = \"main\"\n\n[agents]\nready_on_start = true\n\n\
         [[route]]\nnumber = \"800\"\nivr = \"main\"\n\n\
         [[acd.queues]]\nid = \"load\"\noffer_timeout_secs = 10\nwrap_up_secs = 0\n",
        flows.display()
    );
    for i in 0..agents {
        let id = agent_id(i);
        c.push_str(&format!(
            "\n[[sip.user]]\nname = \"{id}\"\npassword = \"{AGENT_PASSWORD}\"\n\n[[acd.agents]]\nid = \"{id}\"\nqueues = [{{ queue = \"load\", rank = 1 }}]\n"
        ));
    }
    c
}

fn start_platform(bin: &Path, dir: &Path, config: &str) -> Result<Guard, String> {
    let path = dir.join("callcenter.toml");
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join("callcenter.log")).map_err(|e| e.to_string())?;
    let mut child = Command::new(bin)
        .args(["serve", "--config"])
        .arg(&path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    // Event, not sleep: the process prints this line once every listener is up.
    let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    if !line.starts_with("callcenter ready") {
        let log = std::fs::read_to_string(dir.join("callcenter.log")).unwrap_or_default();
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("callcenter did not start: {line}\n{log}"));
    }
    Ok(Guard(child))
}

/// A SIPp command with the options every run here shares.
fn sipp(dir: &Path, scenario_file: &str, stat: &str) -> Command {
    let mut cmd = Command::new("sipp");
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(scenario(scenario_file))
        .args([
            "-i",
            "127.0.0.1",
            "-nostdin",
            "-trace_stat",
            "-stf",
            stat,
            "-fd",
            "1",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

fn write_injection(path: &Path, lines: impl Iterator<Item = String>) -> Result<(), String> {
    let mut text = String::from("SEQUENTIAL\n");
    for l in lines {
        text.push_str(&l);
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|e| e.to_string())
}

/// Waits for a child until `limit`, then kills it.
fn wait_child(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn register_agents(dir: &Path, sip_port: u16, uas_port: u16, agents: usize) -> Result<u64, String> {
    let inf = dir.join("agents_register.csv");
    write_injection(
        &inf,
        (0..agents).map(|i| {
            let id = agent_id(i);
            format!("{id};[authentication username={id} password={AGENT_PASSWORD}];")
        }),
    )?;
    let mut child = sipp(dir, "load_register.xml", "register_stat.csv")
        .arg("-inf")
        .arg(&inf)
        .args(["-p", &free_port().to_string()])
        .args(["-key", "contact_port", &uas_port.to_string()])
        .args(["-m", &agents.to_string(), "-r", "200", "-l", "200"])
        .args(["-timeout", "120s"])
        .arg(format!("127.0.0.1:{sip_port}"))
        .spawn()
        .map_err(|e| format!("sipp register: {e}"))?;
    wait_child(&mut child, Duration::from_secs(130));
    let stat = std::fs::read_to_string(dir.join("register_stat.csv")).unwrap_or_default();
    Ok(last_stat(&stat, "SuccessfulCall(C)"))
}

/// Resident memory in kB, open file descriptors and threads of a process.
fn footprint(pid: u32) -> (u64, u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    (field("VmRSS:"), fds, field("Threads:"))
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut v = text.split_whitespace().map(|x| x.parse().unwrap_or(0.0));
    [
        v.next().unwrap_or(0.0),
        v.next().unwrap_or(0.0),
        v.next().unwrap_or(0.0),
    ]
}

/// CPU seconds of the node, the two SIPps and the RTP ends at one moment.
#[derive(Clone, Copy)]
struct Cpu {
    node: f64,
    uac: f64,
    uas: f64,
    rtp: f64,
    at: Instant,
}

impl Cpu {
    fn sample(node: u32, uac: u32, uas: u32) -> Cpu {
        let s = |pid| proc_stat::cpu_micros(pid).unwrap_or(0) as f64 / 1e6;
        Cpu {
            node: s(node),
            uac: s(uac),
            uas: s(uas),
            rtp: media::threads_cpu_seconds(RTP_THREAD),
            at: Instant::now(),
        }
    }
}

/// What the CRM holds after the step: interactions, how many reached an agent and were recorded, and
/// enqueue->offer and arrival->answer times from the events' timestamps.
fn crm_figures(dir: &Path, expected: u64) -> Result<Value, String> {
    let url = format!("sqlite:{}/cc.db", dir.display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let store = crm_store::CrmStore::connect(&url)
            .await
            .map_err(|e| e.to_string())?;
        // The writer commits in batches after each call: wait (bounded) for every ended call.
        let started = Instant::now();
        let deadline = started + Duration::from_secs(60);
        loop {
            let ended = store.event_keys().await.map_err(|e| e.to_string())?;
            let mut ids: Vec<String> = ended.into_iter().map(|(i, _)| i).collect();
            ids.sort();
            ids.dedup();
            let mut timelines = Vec::with_capacity(ids.len());
            for id in &ids {
                let Ok(iid) = domain::InteractionId::new(id) else {
                    continue;
                };
                timelines.push(
                    store
                        .interaction_timeline(&iid)
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            let has = |t: &[crm_store::StoredEvent], k: &str| t.iter().any(|e| e.kind == k);
            let ended = timelines.iter().filter(|t| has(t, "ended")).count() as u64;
            if ended < expected && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            let at = |t: &[crm_store::StoredEvent], k: &str| t.iter().find(|e| e.kind == k).map(|e| e.at);
            let mut to_offer: Vec<u64> = timelines
                .iter()
                .filter_map(|t| Some(at(t, "offered")?.since(at(t, "enqueued")?).as_millis() as u64))
                .collect();
            let mut to_answer: Vec<u64> = timelines
                .iter()
                .filter_map(|t| Some(at(t, "answered")?.since(at(t, "arrived")?).as_millis() as u64))
                .collect();
            to_offer.sort_unstable();
            to_answer.sort_unstable();
            let pct = crate::acd::percentile;
            return Ok(json!({
                "interactions": timelines.len(),
                "ended": ended,
                "answered_by_agent": timelines.iter().filter(|t| has(t, "answered")).count(),
                "recorded": timelines.iter().filter(|t| has(t, "recording")).count(),
                "enqueue_to_offer_p50_ms": pct(&to_offer, 0.5),
                "enqueue_to_offer_p99_ms": pct(&to_offer, 0.99),
                "arrival_to_agent_answer_p50_ms": pct(&to_answer, 0.5),
                "arrival_to_agent_answer_p99_ms": pct(&to_answer, 0.99),
                "seconds_waited_after_last_call": started.elapsed().as_secs_f64(),
            }));
        }
    })
}

fn callcenter_bin(args: &LoadArgs) -> PathBuf {
    args.callcenter.clone().unwrap_or_else(|| {
        let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
        PathBuf::from(target).join("release/callcenter")
    })
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        // Measurement timing (the window's edges), not synchronisation.
        std::thread::sleep(t - now);
    }
}

/// One step: a fresh platform, N agents, N callers.
fn step(args: &LoadArgs, calls: usize) -> Result<Value, String> {
    if calls == 0 {
        return Err("a step needs at least one call".into());
    }
    let window_start = args.ramp_secs + args.settle_secs;
    let window_end = args.hold_secs.saturating_sub(WINDOW_END_MARGIN_SECS);
    if window_end <= window_start {
        return Err(format!(
            "--hold-secs {} leaves no window after ramp {} + settle {} s (needs more than {} s)",
            args.hold_secs,
            args.ramp_secs,
            args.settle_secs,
            window_start + WINDOW_END_MARGIN_SECS
        ));
    }
    let mut dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    if args.keep_dir {
        dir.disable_cleanup(true);
        eprintln!("bench load: step of {calls} calls in {}", dir.path().display());
    }
    let prompts = args
        .prompts
        .clone()
        .unwrap_or_else(|| manifest_dir().join("../../ivr-scripts/prompts"));
    let flows = write_flows(dir.path(), &prompts)?;
    let (sip_port, http_port, uas_port) = (free_port(), free_port(), free_port());
    let load_before = load_average();
    let node = start_platform(
        &callcenter_bin(args),
        dir.path(),
        &config(dir.path(), &flows, sip_port, http_port, calls, args.record),
    )?;
    let node_pid = node.0.id();

    let plan = CallerPlan {
        digit: '1',
        digit_after: Duration::from_secs(1),
        talk_for: Duration::from_secs(args.hold_secs).saturating_sub(TALK_MARGIN),
    };
    let rtp = MediaLoad::start(calls, plan)?;
    let endpoint_line = |a: std::net::SocketAddrV4| format!("{};{};", a.port(), a.ip());
    let callers_inf = dir.path().join("callers.csv");
    write_injection(
        &callers_inf,
        rtp.caller_addresses().into_iter().map(endpoint_line),
    )?;
    let agents_inf = dir.path().join("agents_rtp.csv");
    write_injection(&agents_inf, rtp.agent_addresses().into_iter().map(endpoint_line))?;

    let total_secs = args.ramp_secs + args.hold_secs + 60;
    let uas = sipp(dir.path(), "load_uas.xml", "uas_stat.csv")
        .arg("-inf")
        .arg(&agents_inf)
        .args(["-p", &uas_port.to_string()])
        // It exits after the step's calls, writing its final statistics.
        .args(["-m", &calls.to_string()])
        .args(["-timeout", &format!("{}s", total_secs + 30)])
        .spawn()
        .map_err(|e| format!("sipp agents: {e}"))?;
    let mut uas = Guard(uas);
    wait_udp_bound(uas_port);
    let registered = register_agents(dir.path(), sip_port, uas_port, calls)?;
    if registered < calls as u64 {
        let log = std::fs::read_to_string(dir.path().join("callcenter.log")).unwrap_or_default();
        return Err(format!("{registered} of {calls} agents registered\n{log}"));
    }
    let (rss_idle_kb, fds_idle, threads_idle) = footprint(node_pid);

    let rate = (calls as f64 / args.ramp_secs.max(1) as f64).max(0.1);
    let t0 = Instant::now();
    let mut uac = sipp(dir.path(), "load_uac.xml", "uac_stat.csv")
        .arg("-inf")
        .arg(&callers_inf)
        .args(["-p", &free_port().to_string(), "-s", "800"])
        .args(["-r", &format!("{rate}"), "-rp", "1000"])
        .args(["-m", &calls.to_string(), "-l", &calls.to_string()])
        .args(["-d", &(args.hold_secs * 1000).to_string()])
        .args(["-trace_rtt", "-rtt_freq", "1"])
        .args(["-timeout", &format!("{total_secs}s")])
        .arg(format!("127.0.0.1:{sip_port}"))
        .spawn()
        .map_err(|e| format!("sipp callers: {e}"))?;
    let uac_pid = uac.id();
    let uas_pid = uas.0.id();

    sleep_until(t0 + Duration::from_secs(window_start));
    let cpu_start = Cpu::sample(node_pid, uac_pid, uas_pid);
    rtp.open_window();
    let talking_at_start = rtp.talking_agents();
    let load_during = load_average();
    sleep_until(t0 + Duration::from_secs(window_end));
    rtp.close_window();
    let cpu_end = Cpu::sample(node_pid, uac_pid, uas_pid);
    let talking_at_end = rtp.talking_agents();
    let (rss_loaded_kb, fds_loaded, threads_loaded) = footprint(node_pid);
    let load_end = load_average();

    wait_child(&mut uac, Duration::from_secs(total_secs + 10));
    let uac_stat = std::fs::read_to_string(dir.path().join("uac_stat.csv")).unwrap_or_default();
    let answered = last_stat(&uac_stat, "SuccessfulCall(C)");
    let failed = last_stat(&uac_stat, "FailedCall(C)");
    let mut rtts = read_rtts(dir.path());
    rtts.sort_by(|a, b| a.total_cmp(b));
    let rtt = |p: f64| {
        rtts.get(((rtts.len() as f64 * p) as usize).min(rtts.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    let crm = crm_figures(dir.path(), answered)?;
    let media_figures: MediaFigures = rtp.finish();
    // The agents' SIPp counts a call when the platform's BYE reached it: let it finish (bounded).
    wait_child(&mut uas.0, Duration::from_secs(30));
    drop(uas);
    let uas_stat = std::fs::read_to_string(dir.path().join("uas_stat.csv")).unwrap_or_default();
    let agent_calls = last_stat(&uas_stat, "SuccessfulCall(C)");
    let recordings = std::fs::read_dir(dir.path().join("recordings"))
        .map(|d| d.count())
        .unwrap_or(0);
    drop(node);

    let window_s = cpu_end.at.duration_since(cpu_start.at).as_secs_f64();
    let share = |a: f64, b: f64| (b - a) / window_s.max(1e-9);
    let node_share = share(cpu_start.node, cpu_end.node);
    let per_call = |x: f64| x / calls as f64;
    let percent_per_call = per_call(node_share) * 100.0;
    let packets_per_s = (media_figures.caller_to_agent.received + media_figures.agent_to_caller.received)
        as f64
        / window_s.max(1e-9);
    Ok(json!({
        "calls": calls,
        "offered": calls,
        "answered": answered,
        "failed": failed + (calls as u64).saturating_sub(answered + failed),
        "agent_phone_calls_completed": agent_calls,
        "agents_registered": registered,
        "rate_cps": rate,
        "window_s": window_s,
        "talking_at_window_start": talking_at_start,
        "talking_at_window_end": talking_at_end,
        "load_average": {"before": load_before, "window_start": load_during, "window_end": load_end},
        "rtp": media_figures,
        "rtp_packets_per_s_in_window": packets_per_s,
        "node": {
            "cpu_share_of_one_core": node_share,
            "cpu_percent_of_core_per_call": percent_per_call,
            "cpu_per_call_over_rustpbx_recorded": percent_per_call / RUSTPBX_PERCENT_OF_CORE_PER_RECORDED_CALL,
            // No packet relayed in the window (no agent reached): no figure, not a division by ~0.
            "cpu_us_per_packet_relayed": (packets_per_s > 0.0).then(|| node_share * 1e6 / packets_per_s),
            "rss_idle_kb": rss_idle_kb,
            "rss_loaded_kb": rss_loaded_kb,
            "memory_per_call_kb": per_call(rss_loaded_kb.saturating_sub(rss_idle_kb) as f64),
            "fds_idle": fds_idle,
            "fds_loaded": fds_loaded,
            "fds_per_call": per_call(fds_loaded.saturating_sub(fds_idle) as f64),
            "threads_idle": threads_idle,
            "threads_loaded": threads_loaded,
        },
        "sip": {"invite_to_200_p50_ms": rtt(0.5), "invite_to_200_p99_ms": rtt(0.99)},
        "crm": crm,
        "recording_files": recordings,
        "generators": {
            "sipp_callers_cpu_share": share(cpu_start.uac, cpu_end.uac),
            "sipp_agents_cpu_share": share(cpu_start.uas, cpu_end.uas),
            "rtp_ends_cpu_share": share(cpu_start.rtp, cpu_end.rtp),
        },
    }))
}

/// The same calls through the bare relay for the same window, with the same RTP ends: callers send
/// to the relay's side a, which forwards to their agents; agents answer what they hear.
fn baseline(args: &LoadArgs, calls: usize, window_s: u64) -> Result<Value, String> {
    let load_before = load_average();
    let plan = CallerPlan {
        digit: '1',
        digit_after: Duration::MAX,
        talk_for: Duration::MAX,
    };
    let rtp = MediaLoad::start(calls, plan)?;
    let pairs = rtp
        .caller_addresses()
        .into_iter()
        .zip(rtp.agent_addresses())
        .map(|(caller, agent)| (caller.into(), agent.into()))
        .collect();
    let relay = media::Relay::start(Mode::Bare, pairs, args.relay_threads)?;
    for (call, (side_a, _)) in relay.targets.iter().enumerate() {
        let side_a = load_rtp::v4(*side_a).ok_or("the bare relay listens on IPv6")?;
        rtp.set_caller_peer(call, side_a);
    }
    // The same warm-up as the full path's window has after its ramp: every agent hears its caller.
    let warm_up = Instant::now() + Duration::from_secs(2);
    sleep_until(warm_up);
    let talking_at_start = rtp.talking_agents();
    let cpu_at_start = (
        media::threads_cpu_seconds(media::RELAY_THREAD),
        media::threads_cpu_seconds(RTP_THREAD),
    );
    let started = Instant::now();
    rtp.open_window();
    sleep_until(started + Duration::from_secs(window_s));
    rtp.close_window();
    let measured_s = started.elapsed().as_secs_f64();
    let relay_cpu_s = media::threads_cpu_seconds(media::RELAY_THREAD) - cpu_at_start.0;
    let rtp_cpu_s = media::threads_cpu_seconds(RTP_THREAD) - cpu_at_start.1;
    // The window's last packets are still on their way: wait (bounded) until every end has heard one
    // sent after it closed.
    let drained_by = Instant::now() + Duration::from_secs(5);
    while rtp.heard_after_window() < calls * 2 && Instant::now() < drained_by {
        std::thread::sleep(Duration::from_millis(20));
    }
    let figures = rtp.finish();
    drop(relay);
    let received = figures.caller_to_agent.received + figures.agent_to_caller.received;
    let sent = figures.caller_to_agent.sent + figures.agent_to_caller.sent;
    let worst =
        |f: fn(&load_rtp::Direction) -> u64| f(&figures.caller_to_agent).max(f(&figures.agent_to_caller));
    Ok(json!({
        "mode": "bare",
        "calls": calls,
        "seconds": window_s,
        "talking_at_window_start": talking_at_start,
        "sent": sent,
        "received": received,
        "loss": 1.0 - received as f64 / sent.max(1) as f64,
        "latency_p50_us": worst(|d| d.latency_p50_us),
        "latency_p99_us": worst(|d| d.latency_p99_us),
        "latency_max_us": worst(|d| d.latency_max_us),
        "added_jitter_p50_us": worst(|d| d.added_jitter_p50_us),
        "added_jitter_p99_us": worst(|d| d.added_jitter_p99_us),
        "relay_cpu_s": relay_cpu_s,
        "relay_cpu_ns_per_packet": relay_cpu_s * 1e9 / received.max(1) as f64,
        "relay_cpu_share_of_one_core": relay_cpu_s / measured_s,
        "rtp_ends_cpu_share": rtp_cpu_s / measured_s,
        "rtp": figures,
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }))
}

pub fn run(args: &LoadArgs) -> Result<Value, String> {
    let mut steps = Vec::new();
    for &calls in &args.calls {
        let mut full = step(args, calls)?;
        if args.baseline {
            let window = full["window_s"].as_f64().unwrap_or(1.0).round().max(1.0) as u64;
            let bare = baseline(args, calls, window)?;
            let ratio = |ours: &Value, theirs: &Value| match (ours.as_f64(), theirs.as_f64()) {
                (Some(a), Some(b)) if b > 0.0 => json!(a / b),
                _ => Value::Null,
            };
            // The worse direction; none when no packet crossed (a latency of 0 would read as perfect).
            let worst_p99 = |key: &str| {
                let received = |direction: &str| full["rtp"][direction]["received"].as_u64().unwrap_or(0);
                if received("caller_to_agent") == 0 || received("agent_to_caller") == 0 {
                    return Value::Null;
                }
                let a = full["rtp"]["caller_to_agent"][key].as_u64().unwrap_or(0);
                let b = full["rtp"]["agent_to_caller"][key].as_u64().unwrap_or(0);
                json!(a.max(b))
            };
            full["ratios"] = json!({
                "p50_latency_full_path_over_bare": ratio(&worst_p99("latency_p50_us"), &bare["latency_p50_us"]),
                "p99_latency_full_path_over_bare": ratio(&worst_p99("latency_p99_us"), &bare["latency_p99_us"]),
                "p99_jitter_full_path_over_bare": ratio(&worst_p99("added_jitter_p99_us"), &bare["added_jitter_p99_us"]),
                "cpu_per_packet_full_path_over_bare": ratio(
                    &full["node"]["cpu_us_per_packet_relayed"],
                    &json!(bare["relay_cpu_ns_per_packet"].as_f64().unwrap_or(0.0) / 1000.0)
                ),
            });
            full["bare_relay"] = bare;
        }
        steps.push(full);
    }
    Ok(json!({
        "benchmark": "load",
        "hold_secs": args.hold_secs,
        "ramp_secs": args.ramp_secs,
        "settle_secs": args.settle_secs,
        "recorded": args.record,
        "packets_per_second_per_direction": 50,
        "machine_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "rustpbx_percent_of_core_per_recorded_call": RUSTPBX_PERCENT_OF_CORE_PER_RECORDED_CALL,
        "steps": steps,
    }))
}
