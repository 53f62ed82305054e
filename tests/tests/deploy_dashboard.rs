//! The Grafana dashboard in `deploy/grafana/` asks only for metrics a node exports: a real node is
//! driven until every family the dashboard names shows in its `/metrics` (labelled families appear
//! only once they have a sample), and each name in the dashboard's queries must be a sample name of
//! an exported family (`_total` of a counter, `_bucket`/`_sum`/`_count` of a histogram, a gauge's
//! own name).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use system_tests::outbound::{identification_message, zone_at_noon};
use system_tests::*;

/// Every PromQL expression (`expr`) anywhere in the dashboard.
fn expressions(dashboard: &serde_json::Value, out: &mut Vec<String>) {
    match dashboard {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => expressions(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| expressions(v, out)),
        _ => {}
    }
}

/// PromQL words whose parenthesised list names labels, not metrics.
const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

/// Other PromQL words that are not metric names: aggregation operators (written like functions,
/// or before a grouping clause), set operators, modifiers, special numbers.
const NOT_METRICS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
];

/// The metric names a PromQL expression selects: identifiers outside label matchers (`{...}`),
/// ranges (`[...]`), strings and grouping clauses, that are not functions, keywords or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Blank out what is not a selector name: strings, label matchers, ranges.
    let mut plain = String::with_capacity(expr.len());
    let mut closing = None;
    for c in expr.chars() {
        match (closing, c) {
            (None, '"') => closing = Some('"'),
            (None, '{') => closing = Some('}'),
            (None, '[') => closing = Some(']'),
            (Some(end), c) if c == end => closing = None,
            (None, c) => {
                plain.push(c);
                continue;
            }
            _ => {}
        }
        plain.push(' ');
    }
    let chars: Vec<char> = plain.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        let starts_word = c.is_ascii_alphabetic() || c == '_' || c == ':';
        let after_number = i > 0 && (chars[i - 1].is_ascii_digit() || chars[i - 1] == '.');
        if !starts_word || after_number {
            if c == ')' {
                skip_group = false;
            }
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':') {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let next = chars[i..].iter().find(|c| !c.is_whitespace());
        let lower = word.to_ascii_lowercase();
        if GROUPING.contains(&lower.as_str()) {
            // `by (a, b)` and friends list label names, not metrics.
            skip_group = next == Some(&'(');
            continue;
        }
        if NOT_METRICS.contains(&lower.as_str()) {
            continue;
        }
        if next == Some(&'(') || skip_group {
            continue; // a function, or a label inside a grouping clause
        }
        names.insert(word);
    }
    names
}

/// The sample names the exposition's families stand for (from its `# TYPE` lines).
fn exported_sample_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("#") || words.next() != Some("TYPE") {
            continue;
        }
        let (Some(family), Some(kind)) = (words.next(), words.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            "summary" => &["", "_sum", "_count"],
            "info" => &["_info"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{family}{suffix}"));
        }
    }
    names
}

#[test]
fn metric_names_are_read_from_promql_and_type_lines() {
    let expr = r#"histogram_quantile(0.95, sum by (le, queue) (rate(media_leg_loss_bucket{queue=~"$q", x="a{b"}[5m])))
        / on (node) group_left (campaign) max without (le) (acd_agents) > 1e3 and bool sum(sip_calls_total offset 5m)"#;
    assert_eq!(
        metric_names(expr).into_iter().collect::<Vec<_>>(),
        vec!["acd_agents", "media_leg_loss_bucket", "sip_calls_total"]
    );
    let exposition = "# TYPE sip_calls counter\nsip_calls_total 3\n# TYPE media_leg_mos histogram\n# TYPE acd_agents gauge\n";
    let names = exported_sample_names(exposition);
    for name in [
        "sip_calls_total",
        "media_leg_mos_bucket",
        "media_leg_mos_count",
        "acd_agents",
    ] {
        assert!(names.contains(name), "{name}");
    }
    assert!(!names.contains("sip_calls"), "a counter's samples end in _total");
}

const NODE: &str = r#"
[sip.limits]
max_calls_per_second = 0
per_source_requests_per_second = 0
max_concurrent_calls = 1

[[sip.user]]
name = "1001"
password = "agent1001"

[[route]]
number = "801"
queue = "support"

[agents]
ready_on_start = true

[[acd.queues]]
id = "support"
offer_timeout_secs = 15
wrap_up_secs = 1

[[acd.agents]]
id = "1001"
queues = [{ queue = "support", rank = 1 }]

[[trunk]]
name = "carrier"
uri = "sip:127.0.0.1:CARRIER_PORT"

[desk]
outbound_trunk = "carrier"

[[campaign]]
id = "spring"
name = "Spring offer"
mode = "progressive"
queue = "support"
pacing = "progressive"
caller_id = "+442070000000"
leads = "LEADS"
message = "MESSAGE"
tick_ms = 200
max_lines = 1
state = "running"

[campaign.compliance]
rules = "us"
ring_secs = 15
"#;

#[test]
fn the_dashboard_uses_only_metric_names_a_node_exports() {
    require_command("sipp");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/dashboards/callcenter.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("dashboard JSON");
    let mut exprs = Vec::new();
    expressions(&dashboard, &mut exprs);
    let wanted: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    for prefix in ["sip_", "acd_", "media_", "crm_", "dialer_"] {
        assert!(
            wanted.iter().any(|n| n.starts_with(prefix)),
            "the dashboard shows no {prefix}* metric"
        );
    }

    // A node with a queue, an agent's phone, and a campaign whose one lead is busy.
    let carrier = SippServer::start("uas_busy.xml", 100);
    let phone = SippServer::start("uas", 10);
    let leads_dir = tempfile::tempdir().expect("tempdir");
    let leads = leads_dir.path().join("leads.csv");
    std::fs::write(
        &leads,
        format!("id,phone,timezone\nl1,+442079000003,{}\n", zone_at_noon()),
    )
    .expect("leads");
    let config = NODE
        .replace("CARRIER_PORT", &carrier.port.to_string())
        .replace("LEADS", &leads.display().to_string())
        .replace("MESSAGE", &identification_message().display().to_string());
    let platform = Platform::start(&config);
    register_agent_phone(&platform, "1001", "agent1001", phone.port);

    // SIP: an OPTIONS, a datagram that is not SIP, a queue call the agent answers, and a call
    // refused while that one holds the only slot.
    let sip = RawSip::new(platform.sip);
    let reply = sip
        .exchange(sip.options("dash-1").as_bytes())
        .expect("OPTIONS answered");
    assert_eq!(status_of(&reply), Some(200), "{reply}");
    sip.socket
        .send_to(b"not sip at all\r\n\r\n", platform.sip)
        .expect("send");
    let target = platform.sip;
    let caller = std::thread::spawn(move || {
        let port = free_port().to_string();
        let media = free_media_port().to_string();
        sipp(&[
            "-sn",
            "uac",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-mp",
            &media,
            "-s",
            "801",
            "-m",
            "1",
            "-d",
            "2000",
            &target.to_string(),
        ])
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !platform.http_get("/metrics").1.contains("sip_calls_total 1") {
        assert!(
            Instant::now() < deadline,
            "queue call never admitted\n{}",
            platform.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = sip.exchange(sip.invite("801", "dash-refused").as_bytes());
    assert_eq!(refused.as_deref().and_then(status_of), Some(503), "{refused:?}");
    let run = caller.join().expect("caller");
    run.assert_succeeded(1, &platform);

    // Every family the dashboard asks for shows up (the ACD figures after the wrap-up, the
    // dialer's after its first attempt).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let exported = exported_sample_names(&platform.http_get("/metrics").1);
        let missing: Vec<&String> = wanted.difference(&exported).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dashboard asks for metrics the node does not export: {missing:?}\nexported: {exported:?}\n{}",
            platform.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
