//! Kamailio in front of nodes, started with the very configuration in `deploy/kamailio/` (only
//! addresses set: `-A` defines for its sockets, and the shipped dispatcher list with the test's
//! node addresses put in, in order). For system tests of a cluster behind one SIP entry point:
//!
//! ```text
//! let kamailio = Kamailio::start(&[node_a.sip, node_b.sip, node_c.sip]);
//! kamailio.wait_for(node_a.sip, 'A', "in rotation");
//! // callers send to kamailio.sip; kamailio.state_of(node) says 'A'ctive, 'I'nactive, 'T'rying
//! ```

use crate::{free_port, require_command};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The repository's `deploy/` folder.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// The shipped dispatcher list with the set-1 destinations replaced, in order, by `nodes`; the
/// rest of each line (flags, priority, attributes) is kept. The list must name at least as many
/// nodes as the test runs.
pub fn dispatcher_list_for(shipped: &str, nodes: &[SocketAddr]) -> String {
    let mut nodes_left = nodes.iter();
    let mut out = String::new();
    for line in shipped.lines() {
        let mut fields = line.split_whitespace();
        let is_node = fields.next() == Some("1") && fields.next().is_some_and(|uri| uri.starts_with("sip:"));
        if !is_node {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        let Some(node) = nodes_left.next() else {
            continue; // more nodes shipped than this test runs
        };
        let rest: Vec<&str> = line.split_whitespace().skip(2).collect();
        out.push_str(&format!("1 sip:{node} {}\n", rest.join(" ")));
    }
    assert!(
        nodes_left.next().is_none(),
        "deploy/kamailio/dispatcher.list names fewer nodes than the test runs"
    );
    out
}

/// A Kamailio process running `deploy/kamailio/kamailio.cfg`.
pub struct Kamailio {
    child: Child,
    /// Where callers send SIP (UDP and TCP).
    pub sip: SocketAddr,
    ctl: String,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    pub fn start(nodes: &[SocketAddr]) -> Kamailio {
        require_command("kamailio");
        require_command("kamcmd");
        let dir = tempfile::tempdir().expect("tempdir");
        let shipped =
            std::fs::read_to_string(deploy_dir().join("kamailio/dispatcher.list")).expect("dispatcher.list");
        let list = dir.path().join("dispatcher.list");
        std::fs::write(&list, dispatcher_list_for(&shipped, nodes)).expect("write list");
        let runtime = dir.path().join("run");
        std::fs::create_dir_all(&runtime).expect("runtime dir");
        let port = free_port();
        let ctl = format!("unix:{}/ctl", dir.path().display());
        // Its own process group: Kamailio forks its workers, and they all go when the test ends.
        let mut child = Command::new("kamailio")
            .process_group(0)
            .arg("-DD")
            .arg("-E")
            .arg("-f")
            .arg(deploy_dir().join("kamailio/kamailio.cfg"))
            .arg("-Y")
            .arg(&runtime)
            .args(["-A", &format!("LISTEN_UDP=udp:127.0.0.1:{port}")])
            .args(["-A", &format!("LISTEN_TCP=tcp:127.0.0.1:{port}")])
            .args(["-A", &format!("DS_LIST=\"{}\"", list.display())])
            .args(["-A", &format!("CTL_SOCKET=\"{ctl}\"")])
            .args(["-A", "WORKERS=2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kamailio");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let kamailio = Kamailio {
            child,
            sip: format!("127.0.0.1:{port}").parse().expect("addr"),
            ctl,
            log,
            _dir: dir,
        };
        // Ready once its control socket answers with our nodes.
        let deadline = Instant::now() + Duration::from_secs(30);
        while kamailio.states().len() < nodes.len() {
            assert!(
                Instant::now() < deadline,
                "kamailio did not start:\n{}",
                kamailio.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        kamailio
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Each node's dispatcher flags (`AP` active and probed, `IP` inactive, `TP` trying).
    pub fn states(&self) -> Vec<(String, String)> {
        let out = Command::new("kamcmd")
            .args(["-s", &self.ctl, "dispatcher.list"])
            .output();
        let Ok(out) = out else { return Vec::new() };
        let mut states = Vec::new();
        let mut uri = None;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let line = line.trim();
            if let Some(u) = line.strip_prefix("URI: ") {
                uri = Some(u.to_string());
            } else if let (Some(flags), Some(u)) = (line.strip_prefix("FLAGS: "), uri.take()) {
                states.push((u, flags.to_string()));
            }
        }
        states
    }

    /// The state letter of `node`: `A`, `I`, `T` or `D`.
    pub fn state_of(&self, node: SocketAddr) -> Option<char> {
        let uri = format!("sip:{node}");
        self.states()
            .into_iter()
            .find(|(u, _)| *u == uri)
            .and_then(|(_, flags)| flags.chars().next())
    }

    /// Waits (bounded) until `node` is in state `want`; returns how long that took.
    pub fn wait_for(&self, node: SocketAddr, want: char, what: &str) -> Duration {
        let start = Instant::now();
        let deadline = start + Duration::from_secs(30);
        loop {
            if self.state_of(node) == Some(want) {
                return start.elapsed();
            }
            assert!(
                Instant::now() < deadline,
                "{what}: {node} never reached state {want}: {:?}\n{}",
                self.states(),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // The whole group: killing the main process alone would orphan the workers.
        let group = self.child.id() as i32;
        // SAFETY: kill(2) on a process group we created, with a valid signal; no memory effects.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
