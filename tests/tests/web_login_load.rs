//! Parallel logins cannot exhaust the node: 64 and then 500 logins of unknown users at once. Password
//! checks run on a fixed pool of threads behind a bounded queue, so some logins are answered `503`
//! with `Retry-After` at once, the node stays up with its resident memory bounded, and a real login
//! succeeds afterwards. Failures are logged without the typed user name or password and counted.
//! The resident-memory figures are printed (`--nocapture`) for docs/security.md.

use std::io::{Read, Write};
use std::sync::{Arc, Barrier};
use system_tests::*;

const CONFIG: &str = r#"
[desk]
# The test's many unknown users all come from 127.0.0.1: lift the per-address limit so the password
# checks, not the lockout, are what answers.
source_max_login_failures = 1000000

[[desk.user]]
id = "1001"
name = "Alice Agent"
role = "agent"
password = "agent1001"
"#;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

/// `n` logins of distinct unknown users, all released at once; the status of each.
fn parallel_logins(platform: &Platform, n: usize, round: &str) -> Vec<(u16, bool)> {
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let barrier = barrier.clone();
            let addr = platform.http;
            let body = serde_json::json!({"user": format!("nobody-{round}-{i}"), "password": "guess-Secret-42"}).to_string();
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(addr).expect("connect");
                let request = format!(
                    "POST /api/v1/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                barrier.wait();
                s.write_all(request.as_bytes()).expect("send");
                let mut out = String::new();
                let _ = s.read_to_string(&mut out);
                let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
                let retry_after = out.to_ascii_lowercase().contains("\r\nretry-after: ");
                (status, retry_after)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("login thread"))
        .collect()
}

/// The platform's log without terminal colour codes.
fn plain_log(platform: &Platform) -> String {
    let log = platform.log();
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn metric(platform: &Platform, line_start: &str) -> u64 {
    let (_, text) = platform.http_get("/metrics");
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn parallel_logins_get_503_beyond_the_queue_and_memory_stays_bounded() {
    let platform = Platform::start(CONFIG);
    // One real login first, so the node's steady state (the pool's memory areas) is in the baseline.
    platform.login("1001", "agent1001");
    let before = rss_kib(platform.pid());
    let mut figures = vec![("before".to_string(), before)];
    let mut busy_total = 0;
    for n in [64usize, 500] {
        let answers = parallel_logins(&platform, n, &n.to_string());
        let unauthorised = answers.iter().filter(|(s, _)| *s == 401).count();
        let busy: Vec<_> = answers.iter().filter(|(s, _)| *s == 503).collect();
        assert_eq!(unauthorised + busy.len(), n, "only 401 and 503: {answers:?}");
        assert!(
            busy.iter().all(|(_, retry)| *retry),
            "every 503 says when to retry"
        );
        busy_total += busy.len();
        let (status, _) = platform.http_get("/healthz");
        assert_eq!(status, 200, "the node is up after {n} parallel logins");
        let rss = rss_kib(platform.pid());
        eprintln!(
            "after {n} parallel logins: {unauthorised} x 401, {} x 503, resident {} MiB (before {} MiB)",
            busy.len(),
            rss / 1024,
            before / 1024
        );
        figures.push((format!("after {n}"), rss));
    }
    assert!(
        busy_total > 0,
        "beyond the pool and its queue logins are refused at once"
    );
    // The pool holds one 19 MiB area per thread whatever the load (it was 3.1 GB after 64 before).
    let grown = figures
        .iter()
        .map(|(_, r)| *r)
        .max()
        .unwrap_or(0)
        .saturating_sub(before);
    assert!(
        grown < 256 * 1024,
        "resident memory grew by {} MiB: {figures:?}",
        grown / 1024
    );

    // A real login still succeeds.
    platform.login("1001", "agent1001");
    assert!(metric(&platform, "desk_login_failures_total{reason=\"busy\"}") >= busy_total as u64);
    assert!(metric(&platform, "desk_login_failures_total{reason=\"bad_credentials\"}") > 0);
    assert!(metric(&platform, "desk_logins_total") >= 2);
    // Failures are logged, without the typed user name or the password.
    let log = plain_log(&platform);
    assert!(log.contains("login failed"), "failures are logged");
    assert!(
        !log.contains("nobody-64-") && !log.contains("guess-Secret-42"),
        "no typed names or passwords in the log"
    );
}

#[test]
fn guessing_one_user_locks_out_and_each_further_failure_locks_again() {
    let platform = Platform::start(&CONFIG.replace("[desk]\n", "[desk]\nlockout_secs = 3\n"));
    let wrong = serde_json::json!({"user": "1001", "password": "wrong-guess"}).to_string();
    for _ in 0..5 {
        let (status, _) = platform.http_post("/api/v1/login", &wrong, None);
        assert_eq!(status, 401);
    }
    let right = serde_json::json!({"user": "1001", "password": "agent1001"}).to_string();
    let (status, body) = platform.http_post("/api/v1/login", &right, None);
    assert_eq!(
        status, 429,
        "locked out after 5 failures, even with the right password: {body}"
    );
    // Once the lockout ends, a single further failure locks again (for twice as long).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        let (status, _) = platform.http_post("/api/v1/login", &wrong, None);
        if status != 429 || std::time::Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(status, 401, "the guess after the lockout is checked");
    let (status, _) = platform.http_post("/api/v1/login", &right, None);
    assert_eq!(status, 429, "and locks out again at once");
    let log = plain_log(&platform);
    assert!(
        log.contains("user=1001") && log.contains("login failed"),
        "a known agent's id is logged"
    );
    assert!(!log.contains("wrong-guess"), "never the password");
    assert!(metric(&platform, "desk_login_failures_total{reason=\"locked_out\"}") >= 2);
}
