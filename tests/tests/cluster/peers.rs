//! The peers of the cluster tests: agents' phones (SIPp UASes tracing every message), callers of
//! the queue (SIPp UACs) and a Redis of the test's own.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use system_tests::*;

/// An agent's phone: a SIPp UAS that answers each call and hangs up `talk_ms` later, tracing every
/// message it sends and receives, in order, to a file.
pub(crate) struct Phone {
    child: Child,
    pub(crate) port: u16,
    trace: PathBuf,
    _dir: tempfile::TempDir,
}

impl Phone {
    /// A phone that talks `talk_ms` and hangs up, or (None) waits for the other side to hang up.
    pub(crate) fn start(talk_ms: Option<u32>) -> Phone {
        let dir = tempfile::tempdir().expect("tempdir");
        let trace = dir.path().join("messages.log");
        let (child, port) = listening_sipp(|port, media| {
            let mut cmd = Command::new("sipp");
            match talk_ms {
                Some(ms) => cmd
                    .arg("-sf")
                    .arg(scenarios_dir().join("uas_talk_bye.xml"))
                    .args(["-d", &ms.to_string()]),
                None => cmd.args(["-sn", "uas"]),
            };
            cmd.args(["-i", "127.0.0.1", "-p", &port.to_string()])
                .args(["-mp", &media.to_string(), "-m", "100000", "-nostdin"])
                .args(["-trace_msg", "-message_file"])
                .arg(&trace)
                .current_dir(dir.path());
            cmd
        });
        Phone {
            child,
            port,
            trace,
            _dir: dir,
        }
    }

    /// What the phone went through so far: the calls it answered, and the most calls it carried at
    /// once (a call counts from its INVITE to the end of its BYE transaction).
    pub(crate) fn tally(&self) -> Tally {
        let text = std::fs::read_to_string(&self.trace).unwrap_or_default();
        let mut calls = HashSet::new();
        let mut open = HashSet::new();
        let mut most_at_once = 0;
        for block in text
            .split("-----------------------------------------------")
            .skip(1)
        {
            let received = block.contains("message received");
            let mut lines = block.lines().skip_while(|l| !l.trim().is_empty()).skip(1);
            let first = lines.next().unwrap_or_default().to_string();
            let header = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                    .unwrap_or_default()
            };
            let call = header("Call-ID:");
            let cseq = header("CSeq:");
            if received && first.starts_with("INVITE ") {
                if calls.insert(call.clone()) {
                    open.insert(call);
                    most_at_once = most_at_once.max(open.len());
                }
            } else if cseq.ends_with("BYE")
                && (first.starts_with("SIP/2.0 200") || (received && first.starts_with("BYE")))
            {
                open.remove(&call);
            }
        }
        Tally {
            calls: calls.len(),
            most_at_once,
        }
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) calls: usize,
    pub(crate) most_at_once: usize,
}

/// Callers of route 700 (in the background until [`Callers::wait`]): each waits in the queue and is
/// served when an agent's phone answers and hangs up.
pub(crate) struct Callers {
    child: Child,
    stat: PathBuf,
    _dir: tempfile::TempDir,
}

impl Callers {
    pub(crate) fn start(target: SocketAddr, calls: u32, per_second: u32) -> Callers {
        Self::start_scenario("uac_queue_wait_bye.xml", target, calls, per_second, None)
    }

    /// Callers who hang up themselves `talk_ms` after the answer (for phones that wait for the
    /// caller to end the call).
    pub(crate) fn start_talking(target: SocketAddr, calls: u32, per_second: u32, talk_ms: u32) -> Callers {
        let scenario = "uac_queue_talk_bye.xml";
        Self::start_scenario(scenario, target, calls, per_second, Some(talk_ms))
    }

    fn start_scenario(
        scenario: &str,
        target: SocketAddr,
        calls: u32,
        per_second: u32,
        talk_ms: Option<u32>,
    ) -> Callers {
        let dir = tempfile::tempdir().expect("tempdir");
        let scenario = scenarios_dir().join(scenario);
        Self::start_in(dir, scenario, target, calls, per_second, talk_ms)
    }

    /// One caller whose number (the From user, which the agent's phone is shown) is `number`.
    pub(crate) fn one_from(target: SocketAddr, number: &str) -> Callers {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = std::fs::read_to_string(scenarios_dir().join("uac_queue_wait_bye.xml")).expect("scenario");
        let scenario = dir.path().join("caller.xml");
        std::fs::write(&scenario, text.replace("sip:sipp@", &format!("sip:{number}@"))).expect("scenario");
        Self::start_in(dir, scenario, target, 1, 1, None)
    }

    fn start_in(
        dir: tempfile::TempDir,
        scenario: PathBuf,
        target: SocketAddr,
        calls: u32,
        per_second: u32,
        talk_ms: Option<u32>,
    ) -> Callers {
        let stat = dir.path().join("stat.csv");
        let mut sipp = Command::new("sipp");
        if let Some(ms) = talk_ms {
            sipp.args(["-d", &ms.to_string()]);
        }
        let child = sipp
            .arg("-sf")
            .arg(scenario)
            .args(["-i", "127.0.0.1", "-p", &free_port().to_string()])
            .args(["-mp", &free_media_port().to_string(), "-s", "700"])
            .args(["-m", &calls.to_string(), "-r", &per_second.to_string()])
            .args(["-trace_stat", "-fd", "1", "-stf"])
            .arg(&stat)
            .args(["-timeout", "120s", "-timeout_error", "-nostdin"])
            .arg(target.to_string())
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp callers");
        Callers {
            child,
            stat,
            _dir: dir,
        }
    }

    /// Waits for every call to end; (successful, failed) from SIPp's statistics.
    pub(crate) fn wait(mut self) -> (u64, u64) {
        let _ = self.child.wait();
        let csv = std::fs::read_to_string(&self.stat).unwrap_or_default();
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap_or_default().split(';').collect();
        let last: Vec<&str> = lines
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or_default()
            .split(';')
            .collect();
        let get = |name: &str| {
            header
                .iter()
                .position(|c| *c == name)
                .and_then(|i| last.get(i))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        (get("SuccessfulCall(C)"), get("FailedCall(C)"))
    }
}

impl Drop for Callers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis of the test's own (so it can be restarted): append-only file fsynced on every write.
pub(crate) struct PrivateRedis {
    process: testkit::redis::RedisProcess,
    _dir: tempfile::TempDir,
}

impl PrivateRedis {
    pub(crate) fn start() -> PrivateRedis {
        require_command("redis-server");
        let dir = tempfile::tempdir().expect("tempdir");
        let aof = ["--appendonly", "yes", "--appendfsync", "always", "--dir"].map(String::from);
        let mut extra = aof.to_vec();
        extra.push(dir.path().display().to_string());
        PrivateRedis {
            process: testkit::redis::RedisProcess::server(&extra),
            _dir: dir,
        }
    }

    /// Kills Redis (SIGKILL: no last save) and starts it again on the same port and files.
    pub(crate) fn restart(&mut self) {
        self.process.restart();
    }

    pub(crate) fn url(&self) -> String {
        self.process.url()
    }
}
