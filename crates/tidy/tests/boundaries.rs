//! The architecture's invariants, stated as absences and checked on every build of the tests:
//!
//! - the pure cores (`acd`, `ivr`, `dialer`, `call-session`) depend, even transitively, on no async
//!   runtime, database, Redis or HTTP crate, and never read the clock in their sources;
//! - only `crm-store` depends on sqlx, only `state-store` on redis, only `agent-desk` on axum;
//! - only `sip-gateway` and `media` open UDP sockets, only `agent-desk` and `sip-gateway` listen
//!   on TCP;
//! - `agent-desk` changes agents through call-control's facade (`AgentChange`), never by building
//!   the router's `acd::Input` itself;
//! - the desk hub judges no agent state: whether an agent is busy or on another call is the ACD's
//!   to say.
//!
//! Test-only packages (`bench`, `testkit`, the system tests, this one) are exempt: they measure and
//! drive the platform from outside. Test modules (`#[cfg(test)]` at the end of a file) and `tests/`
//! folders are not scanned.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

const CORES: [&str; 4] = ["acd", "ivr", "dialer", "call-session"];
const FORBIDDEN_IN_CORES: [&str; 8] = [
    "tokio",
    "sqlx",
    "redis",
    "axum",
    "hyper",
    "reqwest",
    "rsipstack",
    "str0m",
];
const TOOLS: [&str; 4] = ["bench", "testkit", "system-tests", "tidy"];

struct Workspace {
    root: PathBuf,
    /// Workspace package name -> manifest folder.
    members: BTreeMap<String, PathBuf>,
    /// Package id -> name.
    names: BTreeMap<String, String>,
    /// Package id -> ids of its normal (non-dev, non-build) dependencies.
    normal_deps: BTreeMap<String, Vec<String>>,
    /// Workspace package name -> names of its direct normal dependencies.
    direct: BTreeMap<String, BTreeSet<String>>,
}

fn workspace() -> Workspace {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let root = PathBuf::from(meta["workspace_root"].as_str().expect("root"));
    let member_ids: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .expect("members")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let mut members = BTreeMap::new();
    let mut names = BTreeMap::new();
    for p in meta["packages"].as_array().expect("packages") {
        let id = p["id"].as_str().expect("id").to_string();
        let name = p["name"].as_str().expect("name").to_string();
        if member_ids.contains(id.as_str()) {
            let manifest = PathBuf::from(p["manifest_path"].as_str().expect("manifest"));
            members.insert(name.clone(), manifest.parent().expect("folder").to_path_buf());
        }
        names.insert(id, name);
    }
    let mut normal_deps = BTreeMap::new();
    let mut direct = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve") {
        let id = node["id"].as_str().expect("id").to_string();
        let deps: Vec<String> = node["deps"]
            .as_array()
            .expect("deps")
            .iter()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k["kind"].is_null()))
            })
            .map(|d| d["pkg"].as_str().expect("pkg").to_string())
            .collect();
        if member_ids.contains(id.as_str()) {
            direct.insert(
                names[&id].clone(),
                deps.iter().map(|d| names[d].clone()).collect(),
            );
        }
        normal_deps.insert(id, deps);
    }
    Workspace {
        root,
        members,
        names,
        normal_deps,
        direct,
    }
}

impl Workspace {
    fn transitive(&self, package: &str) -> BTreeSet<String> {
        let start = self
            .names
            .iter()
            .find(|(id, name)| {
                name.as_str() == package
                    && self.direct.contains_key(name.as_str())
                    && self.normal_deps.contains_key(*id)
            })
            .map(|(id, _)| id.clone())
            .expect("a workspace package");
        let mut seen = BTreeSet::new();
        let mut todo = vec![start];
        while let Some(id) = todo.pop() {
            for d in self.normal_deps.get(&id).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen.into_iter().map(|id| self.names[&id].clone()).collect()
    }

    /// Production packages (not test tools).
    fn production(&self) -> impl Iterator<Item = (&String, &PathBuf)> {
        self.members.iter().filter(|(n, _)| !TOOLS.contains(&n.as_str()))
    }
}

/// The non-test lines of every `.rs` file under `dir`, with their file and line number.
fn source_lines(dir: &Path) -> Vec<(PathBuf, usize, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).expect("readable source");
                for (i, line) in text.lines().enumerate() {
                    if line.trim_start().starts_with("#[cfg(test)]") {
                        break;
                    }
                    let code = line.split("//").next().unwrap_or("");
                    out.push((path.clone(), i + 1, code.to_string()));
                }
            }
        }
    }
    out
}

#[test]
fn the_cores_depend_on_no_runtime_database_redis_or_http_crate() {
    let ws = workspace();
    for core in CORES {
        assert!(ws.members.contains_key(core), "{core} is a workspace member");
        let deps = ws.transitive(core);
        let found: Vec<&str> = FORBIDDEN_IN_CORES
            .iter()
            .copied()
            .filter(|f| deps.contains(*f))
            .collect();
        assert!(found.is_empty(), "{core} depends on {found:?}");
    }
}

#[test]
fn the_cores_never_read_the_clock() {
    let ws = workspace();
    for core in CORES {
        let src = ws.members[core].join("src");
        for (file, line, code) in source_lines(&src) {
            for clock in ["SystemTime::now", "Instant::now", "now_utc("] {
                assert!(
                    !code.contains(clock),
                    "{}:{line}: {core} reads the clock ({clock}); take `now` as an input",
                    file.display()
                );
            }
        }
        assert!(
            ws.members[core].join("clippy.toml").exists(),
            "{core} has a clippy.toml disallowing the clock"
        );
    }
}

#[test]
fn sql_redis_and_http_serving_each_have_one_owner() {
    let ws = workspace();
    for (owner, dependency) in [
        ("crm-store", "sqlx"),
        ("state-store", "redis"),
        ("agent-desk", "axum"),
    ] {
        for (name, _) in ws.production() {
            if ws.direct[name].contains(dependency) {
                assert_eq!(name, owner, "{name} uses {dependency}; only {owner} may");
            }
        }
    }
}

#[test]
fn only_the_gateway_and_media_open_sockets() {
    let ws = workspace();
    let rules: [(&str, &[&str]); 2] = [
        ("UdpSocket::bind", &["sip-gateway", "media"]),
        ("TcpListener::bind", &["sip-gateway", "agent-desk"]),
    ];
    for (name, dir) in ws.production() {
        for (file, line, code) in source_lines(&dir.join("src")) {
            for (call, owners) in rules {
                if code.contains(call) {
                    assert!(
                        owners.contains(&name.as_str()),
                        "{}:{line}: {name} calls {call}; only {owners:?} may",
                        file.strip_prefix(&ws.root).unwrap_or(&file).display()
                    );
                }
            }
        }
    }
}

#[test]
fn the_desk_changes_agents_through_call_control_never_with_router_inputs() {
    let ws = workspace();
    for (file, line, code) in source_lines(&ws.members["agent-desk"].join("src")) {
        for input in [
            "Input::Agent",
            "acd::Input",
            "acd::{Input",
            ", Input,",
            ", Input}",
        ] {
            assert!(
                !code.contains(input),
                "{}:{line}: agent-desk builds a router input ({input}); use call_control::AgentChange",
                file.strip_prefix(&ws.root).unwrap_or(&file).display()
            );
        }
    }
}

/// The ACD is the one owner of which agent is on which call: the desk hub (and its relay between
/// nodes) routes commands, pops and the desktop's phases, and judges no agent state from them.
#[test]
fn the_desk_hub_judges_no_agent_state() {
    let ws = workspace();
    let src = ws.members["call-control"].join("src");
    for (file, line, code) in source_lines(&src) {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name != "desk.rs" && name != "desk_relay.rs" {
            continue;
        }
        for judgement in ["fn busy", "fn has_other_call", "AgentState", "acd::"] {
            assert!(
                !code.contains(judgement),
                "{}:{line}: the desk hub judges agent state ({judgement}); ask the ACD (AcdHandle)",
                file.strip_prefix(&ws.root).unwrap_or(&file).display()
            );
        }
    }
    // Nobody asks the hub instead of the ACD, nor sidesteps the router with a not-ready reason.
    for member in ["call-control", "agent-desk"] {
        for (file, line, code) in source_lines(&ws.members[member].join("src")) {
            for asked in ["desks.busy(", "desks.has_other_call(", "OUTBOUND_REASON"] {
                assert!(
                    !code.contains(asked),
                    "{}:{line}: {asked}: whether an agent is on a call is the ACD's to say",
                    file.strip_prefix(&ws.root).unwrap_or(&file).display()
                );
            }
        }
    }
}
