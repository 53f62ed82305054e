//! The attacker's own tools against the real binary: SIPVicious (from PyPI) maps the node, tries to
//! enumerate its users and cracks passwords, as the hardening issue's probe did. The node is found
//! (it answers OPTIONS), no user can be told from a stranger, and a dictionary with the right password
//! past the failure threshold finds nothing: the user is banned at that source first. A control run
//! with the right password early shows the tool does find a password when nothing stops it.

use std::path::PathBuf;
use std::process::Command;
use system_tests::*;

const USERS: &str = "[[sip.user]]\nname = \"1001\"\npassword = \"agent1001\"\n\n\
[[sip.user]]\nname = \"1002\"\npassword = \"agent1002\"\n\n\
[[sip.user]]\nname = \"1003\"\npassword = \"agent1003\"\n";

/// Where the SIPVicious tools are: `SIPVICIOUS_BIN` (the test command installs them in a virtualenv).
fn tool(name: &str) -> PathBuf {
    let dir = std::env::var("SIPVICIOUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/callcenter-sipvicious/bin")
        });
    let path = dir.join(format!("sipvicious_{name}"));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test-all.sh (it installs sipvicious from PyPI and sets SIPVICIOUS_BIN)",
        path.display()
    );
    path
}

/// Runs a SIPVicious tool against the platform from a free local port; returns what it printed.
fn run(platform: &Platform, name: &str, args: &[&str]) -> String {
    let home = tempfile::tempdir().expect("home for the tool's session files");
    let out = Command::new(tool(name))
        .args(args)
        .args([
            "-P",
            &free_port().to_string(),
            "-p",
            &platform.sip.port().to_string(),
        ])
        .arg(platform.sip.ip().to_string())
        .env("HOME", home.path())
        .output()
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A dictionary file: `wrong` wrong passwords, then `right`.
fn dictionary(dir: &std::path::Path, name: &str, wrong: usize, right: &str) -> String {
    let mut words: Vec<String> = (1..=wrong).map(|i| format!("guess{i}")).collect();
    words.push(right.to_string());
    let path = dir.join(name);
    std::fs::write(&path, words.join("\n") + "\n").expect("write dictionary");
    path.display().to_string()
}

#[test]
fn sipvicious_finds_the_node_but_no_user_and_no_password_past_the_ban() {
    let platform = Platform::start(USERS);
    let work = tempfile::tempdir().expect("tempdir");

    // svmap: the node answers, as any SIP server must.
    let map = run(&platform, "svmap", &[]);
    assert!(map.contains("callcenter/"), "svmap did not find the node:\n{map}");

    // svwar: REGISTER and INVITE scans over a range holding 1001-1003 tell no user from a stranger.
    for method in ["REGISTER", "INVITE"] {
        let war = run(&platform, "svwar", &["-e1000-1010", "-m", method, "--force"]);
        assert!(
            war.contains("found nothing"),
            "svwar -m {method} found users:\n{war}"
        );
        for user in ["1001", "1002", "1003"] {
            assert!(
                !war.lines().any(|l| l.starts_with(&format!("| {user}"))),
                "svwar -m {method} listed {user}:\n{war}"
            );
        }
    }

    // Control: the right password third in the list is found; the tool works against this node.
    let early = dictionary(work.path(), "early.txt", 2, "agent1002");
    let found = run(&platform, "svcrack", &["-u", "1002", "-d", &early]);
    assert!(
        found.contains("agent1002"),
        "svcrack did not find a password it was given early:\n{found}\n{}",
        platform.log()
    );

    // The right password after 60 wrong ones: the user is banned at this source after 10 failures,
    // so the right one is never checked.
    let late = dictionary(work.path(), "late.txt", 60, "agent1001");
    let cracked = run(&platform, "svcrack", &["-u", "1001", "-d", &late]);
    assert!(
        !cracked.contains("agent1001"),
        "svcrack found the password past the ban:\n{cracked}"
    );
    let metrics = platform.http_get("/metrics").1;
    let bans = metrics
        .lines()
        .find(|l| l.starts_with("sip_auth_bans_total{reason=\"user_source\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(bans >= 1.0, "no ban counted:\n{metrics}");
    assert!(
        platform.log().contains("SIP authentication ban"),
        "the ban is logged"
    );
}
