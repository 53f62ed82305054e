//! Harness for system tests: starts the real `callcenter` binary on free ports with a test
//! configuration, waits for its ready line, and runs real peers (SIPp, baresip, a PJSIP phone) against it.

pub mod browser;
pub mod cti;
pub mod kamailio;
pub mod outbound;
pub mod pcap;
pub mod peers;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Directory of the SIPp scenarios shipped with the tests.
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("sipp")
}

/// The demo IVR flows of the repository.
pub fn ivr_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ivr-scripts")
}

/// The `callcenter` binary built beside this test executable (cargo builds workspace binaries
/// before running tests), or `CALLCENTER_BIN`.
pub fn callcenter_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CALLCENTER_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/system-<hash> -> target/<profile>/callcenter
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .map(|d| d.join("callcenter"))
        .expect("target dir layout")
}

/// A UDP port for SIPp's `-mp` whose neighbour two above was free a moment ago too: SIPp binds its
/// audio RTP there and its video RTP two ports up, and fails the call when either is taken.
pub fn free_media_port() -> u16 {
    loop {
        let port = free_port();
        if port < 65_000 && UdpSocket::bind(("127.0.0.1", port + 2)).is_ok() {
            return port;
        }
    }
}

/// A port that was free a moment ago on both UDP and TCP (the gateway binds both), outside the
/// kernel's ephemeral range (see [`testkit::free_port`]).
pub fn free_port() -> u16 {
    testkit::free_port()
}

/// Where a platform listens, and how long it may drain.
#[derive(Debug, Clone, Copy)]
pub struct NodeAddress {
    pub sip_port: u16,
    pub http_port: u16,
    pub shutdown_grace_secs: u64,
    /// `[node] name` (nodes of one cluster need their own).
    pub node_name: &'static str,
}

impl NodeAddress {
    /// Free ports and a 10 s drain.
    pub fn free() -> NodeAddress {
        NodeAddress {
            sip_port: free_port(),
            http_port: free_port(),
            shutdown_grace_secs: 10,
            node_name: "node1",
        }
    }
}

/// A running platform process.
pub struct Platform {
    child: Child,
    pub sip: SocketAddr,
    pub http: SocketAddr,
    pub dir: tempfile::TempDir,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Platform {
    /// Starts `callcenter serve` with the test base config plus `extra` TOML (routes, users, limits).
    pub fn start(extra: &str) -> Platform {
        Self::start_with_flows(extra, &ivr_dir())
    }

    /// Like [`Platform::start`] with the IVR flows of `flows`.
    pub fn start_with_flows(extra: &str, flows: &Path) -> Platform {
        Self::start_in(tempfile::tempdir().expect("tempdir"), extra, flows)
    }

    /// Like [`Platform::start_with_flows`] in `dir`, whose CRM database and journal a stopped
    /// platform may have left (see [`Platform::kill`]).
    pub fn start_in(dir: tempfile::TempDir, extra: &str, flows: &Path) -> Platform {
        Self::start_at(dir, extra, flows, NodeAddress::free())
    }

    /// Like [`Platform::start_in`] at `address` (a node coming back where a proxy expects it).
    pub fn start_at(dir: tempfile::TempDir, extra: &str, flows: &Path, address: NodeAddress) -> Platform {
        Self::launch(dir, extra, flows, address, &[])
    }

    /// Like [`Platform::start_with_flows`], with environment for the process (configuration
    /// overrides such as `CALLCENTER_CRM__DATABASE_URL`).
    pub fn start_with_env(extra: &str, flows: &Path, env: &[(String, String)]) -> Platform {
        let dir = tempfile::tempdir().expect("tempdir");
        Self::launch(dir, extra, flows, NodeAddress::free(), env)
    }

    fn launch(
        dir: tempfile::TempDir,
        extra: &str,
        flows: &Path,
        address: NodeAddress,
        env: &[(String, String)],
    ) -> Platform {
        let NodeAddress {
            sip_port,
            http_port,
            shutdown_grace_secs,
            node_name,
        } = address;
        // A node of a cluster names its shared database in `extra`; otherwise SQLite in `dir`.
        let crm = if extra.contains("[crm]") {
            String::new()
        } else {
            format!(
                "[crm]\ndatabase_url = \"sqlite:{}/cc.db\"\n\n",
                dir.path().display()
            )
        };
        let config = format!(
            "[node]\nname = \"{node_name}\"\nshutdown_grace_secs = {shutdown_grace_secs}\n\n[http]\nlisten = \"127.0.0.1:{http_port}\"\n\n{crm}[ivr]\nscripts_dir = \"{}\"\n\n[sip]\nlisten = \"127.0.0.1:{sip_port}\"\n{extra}\n",
            flows.display()
        );
        let path = dir.path().join("callcenter.toml");
        std::fs::write(&path, config).expect("write config");
        let mut child = Command::new(callcenter_bin())
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .current_dir(dir.path())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start callcenter");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(mut l) = log2.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Event, not sleep: the process prints this line once every listener is up.
        let ready = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        assert!(
            ready.starts_with("callcenter ready"),
            "platform did not start: {ready:?}\n{}",
            log.lock().map(|l| l.clone()).unwrap_or_default()
        );
        Platform {
            child,
            sip: format!("127.0.0.1:{sip_port}").parse().expect("addr"),
            http: format!("127.0.0.1:{http_port}").parse().expect("addr"),
            dir,
            log,
        }
    }

    /// The process id (to read its resident memory from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the process wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we own and a valid signal number has no memory effects.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    /// Kills the process with SIGKILL (no chance to clean up) and returns its folder.
    pub fn kill(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"))
    }

    /// Waits for the process to exit and returns its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Logs `user` in over the API and returns the session token. A 503 (the node's store did
    /// not answer in time: a stall of a busy machine) is tried again a few times, as a desktop's
    /// user would.
    pub fn login(&self, user: &str, password: &str) -> String {
        let body = serde_json::json!({"user": user, "password": password}).to_string();
        let mut tries = 1;
        let (status, reply) = loop {
            let (status, reply) = self.http_post("/api/v1/login", &body, None);
            if status != 503 || tries == 5 {
                break (status, reply);
            }
            tries += 1;
            std::thread::sleep(Duration::from_millis(500));
        };
        assert_eq!(status, 200, "login {user} ({tries} tries): {reply}");
        serde_json::from_str::<serde_json::Value>(&reply).expect("login reply")["token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// POST a JSON body, optionally with a bearer token; returns (status, body).
    pub fn http_post(&self, path: &str, json: &str, bearer: Option<&str>) -> (u16, String) {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(self.http).expect("connect http");
        let auth = bearer
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let _ = write!(
            s,
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n{auth}Content-Length: {}\r\n\r\n{json}",
            json.len()
        );
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// GET an HTTP path; returns (status, body).
    pub fn http_get(&self, path: &str) -> (u16, String) {
        self.get_with(path, "")
    }

    /// GET an HTTP path with a bearer token; returns (status, body).
    pub fn http_get_as(&self, path: &str, bearer: &str) -> (u16, String) {
        self.get_with(path, &format!("Authorization: Bearer {bearer}\r\n"))
    }

    fn get_with(&self, path: &str, headers: &str) -> (u16, String) {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(self.http).expect("connect http");
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"
        );
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Outcome of one SIPp run.
#[derive(Debug)]
pub struct SippRun {
    pub exit_code: Option<i32>,
    pub successful: u64,
    pub failed: u64,
    pub output: String,
}

impl SippRun {
    /// Asserts that all `calls` calls succeeded and none failed; otherwise shows SIPp's screens and
    /// the platform's log.
    #[track_caller]
    pub fn assert_succeeded(&self, calls: u64, platform: &Platform) {
        assert_eq!(
            (self.successful, self.failed),
            (calls, 0),
            "{}\n{}",
            self.output,
            platform.log()
        );
    }
}

/// Runs SIPp with `args` to completion (bounded by `-timeout`), reading its final statistics.
pub fn sipp(args: &[&str]) -> SippRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let stat = dir.path().join("stat.csv");
    let mut cmd = Command::new("sipp");
    cmd.args(args)
        .args([
            "-trace_stat",
            "-stf",
            stat.to_str().unwrap_or("stat.csv"),
            "-fd",
            "1",
            "-timeout",
            "60s",
            "-timeout_error",
            "-nostdin",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd.output().expect("run sipp");
    let csv = std::fs::read_to_string(&stat).unwrap_or_default();
    let (successful, failed) = parse_stat(&csv);
    SippRun {
        exit_code: out.status.code(),
        successful,
        failed,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Starts a SIPp that waits for calls (a UAS): `command` gets the SIP port and the media port to
/// use. Returns once SIPp holds its SIP, audio and video ports. A port found free may be taken by
/// another test before SIPp binds it; SIPp then exits at once and is started again on other ports,
/// so a port race costs a retry, never a phone that silently is not there.
pub fn listening_sipp(mut command: impl FnMut(u16, u16) -> Command) -> (Child, u16) {
    let held = |port: u16| UdpSocket::bind(("127.0.0.1", port)).is_err();
    let mut exits = Vec::new();
    for _ in 0..5 {
        let (port, media) = (free_port(), free_media_port());
        let errors = tempfile::tempfile().expect("a file for SIPp's errors");
        let mut child = command(port, media)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(errors.try_clone().expect("a second handle"))
            .spawn()
            .expect("start sipp");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let mut text = String::new();
                let mut errors = errors;
                use std::io::Seek;
                let _ = errors.seek(std::io::SeekFrom::Start(0));
                let _ = errors.read_to_string(&mut text);
                exits.push(format!("{status} on ports {port}/{media}: {}", text.trim()));
                break;
            }
            if held(port) && held(media) && held(media + 2) {
                return (child, port);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("SIPp did not bind ports {port}/{media} within 20 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    panic!("SIPp could not start listening: {exits:#?}");
}

/// Starts SIPp in the background (a UAS waiting for calls).
pub struct SippServer {
    child: Child,
    pub port: u16,
}

impl SippServer {
    /// `sipp -sf scenario` (or `-sn uas`) listening on a free port, serving `calls` calls.
    pub fn start(scenario: &str, calls: u32) -> SippServer {
        Self::start_in(scenario, calls, Path::new("."))
    }

    /// Like [`SippServer::start`], run in `dir` (where the scenario finds its pcap files).
    pub fn start_in(scenario: &str, calls: u32, dir: &Path) -> SippServer {
        let (child, port) = listening_sipp(|port, media| {
            let mut cmd = Command::new("sipp");
            if scenario.ends_with(".xml") {
                cmd.arg("-sf").arg(scenarios_dir().join(scenario));
            } else {
                cmd.args(["-sn", scenario]);
            }
            cmd.args([
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-mp",
                &media.to_string(),
            ])
            .args(["-m", &calls.to_string(), "-nostdin", "-timeout", "90s"])
            .current_dir(dir);
            cmd
        });
        SippServer { child, port }
    }

    /// Waits for SIPp to finish its calls; returns its exit code.
    pub fn wait(mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s.code();
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SippServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// SIPp's cumulative successful and failed call counts from its statistics file (last row).
fn parse_stat(csv: &str) -> (u64, u64) {
    let mut lines = csv.lines();
    let Some(header) = lines.next() else { return (0, 0) };
    let Some(last) = lines.rfind(|l| !l.trim().is_empty()) else {
        return (0, 0);
    };
    let cols: Vec<&str> = header.split(';').collect();
    let vals: Vec<&str> = last.split(';').collect();
    let get = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .and_then(|i| vals.get(i))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (get("SuccessfulCall(C)"), get("FailedCall(C)"))
}

/// A raw SIP client over UDP for hand-made (and broken) messages.
pub struct RawSip {
    pub socket: UdpSocket,
    pub target: SocketAddr,
}

impl RawSip {
    pub fn new(target: SocketAddr) -> RawSip {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        socket
            .set_read_timeout(Some(Duration::from_secs(3)))
            .expect("timeout");
        RawSip { socket, target }
    }

    /// Our address, for Via and Contact.
    pub fn local(&self) -> SocketAddr {
        self.socket.local_addr().expect("local addr")
    }

    /// Sends bytes and returns the first response received within the read timeout, if any.
    pub fn exchange(&self, data: &[u8]) -> Option<String> {
        self.socket.send_to(data, self.target).expect("send");
        self.receive()
    }

    /// The next datagram within the read timeout; skips 100 Trying.
    pub fn receive(&self) -> Option<String> {
        let mut buf = [0u8; 65536];
        loop {
            let (n, _) = recv_datagram(&self.socket, &mut buf)?;
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            if !text.starts_with("SIP/2.0 100 ") {
                return Some(text);
            }
        }
    }

    /// An INVITE without SDP from this client to `number`.
    pub fn invite(&self, number: &str, call_id: &str) -> String {
        format!(
            "INVITE sip:{number}@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\nFrom: <sip:c@{l}>;tag=t{call_id}\r\nTo: <sip:{number}@{t}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:c@{l}>\r\nContent-Length: 0\r\n\r\n",
            t = self.target,
            l = self.local()
        )
    }

    /// An OPTIONS request from this client.
    pub fn options(&self, call_id: &str) -> String {
        format!(
            "OPTIONS sip:ping@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@{l}>;tag=p1\r\nTo: <sip:ping@{t}>\r\nCall-ID: {call_id}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
            t = self.target,
            l = self.local()
        )
    }
}

/// The status code of a response text.
pub fn status_of(response: &str) -> Option<u16> {
    response.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// The next datagram on `socket` within its read timeout, read again when a signal interrupted
/// the wait: the test process gets signals (its children exit), and a socket with a read timeout
/// hands the interruption back as an error whatever `SA_RESTART` says (signal(7)). Interrupted
/// waits together last no longer than twice the timeout. Any other error is said on stderr, so a
/// failing test shows why nothing arrived.
pub fn recv_datagram(socket: &UdpSocket, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
    let started = std::time::Instant::now();
    let timeout = socket.read_timeout().ok().flatten();
    loop {
        match socket.recv_from(buf) {
            Ok(got) => return Some(got),
            Err(e)
                if e.kind() == std::io::ErrorKind::Interrupted
                    && timeout.is_none_or(|t| started.elapsed() < t) =>
            {
                continue;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                return None;
            }
            Err(e) => {
                eprintln!("receiving on {:?}: {e}", socket.local_addr());
                return None;
            }
        }
    }
}

/// Installs a Debian package when its command is missing (CI machines start bare).
pub fn require_command(command: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {command}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "{command} is not installed; run the test command from README.md, which installs it"
    );
}

/// One interaction as the CRM store holds it: the folded row and its timeline.
#[derive(Debug)]
pub struct StoredInteraction {
    pub row: crm_store::InteractionRow,
    pub events: Vec<crm_store::StoredEvent>,
}

impl StoredInteraction {
    /// The event type names in order.
    pub fn kinds(&self) -> Vec<String> {
        self.events.iter().map(|e| e.kind.clone()).collect()
    }
}

impl Platform {
    /// Every interaction in the platform's SQLite CRM database that has ended, waiting (bounded) for
    /// `count` of them to be fully written: the writer commits in batches after the call.
    pub fn ended_interactions(&self, count: usize) -> Vec<StoredInteraction> {
        let url = format!("sqlite:{}/cc.db", self.dir.path().display());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let store = crm_store::CrmStore::connect(&url)
                .await
                .expect("open CRM database");
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            loop {
                let mut ids: Vec<String> = store
                    .event_keys()
                    .await
                    .expect("keys")
                    .into_iter()
                    .map(|(i, _)| i)
                    .collect();
                ids.sort();
                ids.dedup();
                let mut done = Vec::new();
                for id in ids {
                    let iid = domain::InteractionId::new(&id).expect("id");
                    let events = store.interaction_timeline(&iid).await.expect("timeline");
                    if events.iter().any(|e| e.kind == "ended")
                        && let Some(row) = store.interaction(&iid).await.expect("row")
                    {
                        done.push(StoredInteraction { row, events });
                    }
                }
                if done.len() >= count || std::time::Instant::now() > deadline {
                    return done;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }
}

impl Platform {
    /// Ids of the interactions the CRM store has seen so far (ended or not).
    pub fn interaction_ids(&self) -> Vec<String> {
        let url = format!("sqlite:{}/cc.db", self.dir.path().display());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let store = crm_store::CrmStore::connect(&url)
                .await
                .expect("open CRM database");
            let mut ids: Vec<String> = store
                .event_keys()
                .await
                .expect("keys")
                .into_iter()
                .map(|(i, _)| i)
                .collect();
            ids.sort();
            ids.dedup();
            ids
        })
    }
}

/// Registers SIP user `user` with `password` at `platform`, pointing its contact at `contact_port`
/// (where a SIPp UAS plays the agent's phone).
pub fn register_agent_phone(platform: &Platform, user: &str, password: &str, contact_port: u16) {
    let port = free_port().to_string();
    let sf = scenarios_dir().join("register_contact.xml");
    let cp = contact_port.to_string();
    let target = platform.sip.to_string();
    let run = sipp(&[
        "-sf",
        sf.to_str().unwrap_or_default(),
        "-i",
        "127.0.0.1",
        "-p",
        &port,
        "-s",
        user,
        "-au",
        user,
        "-ap",
        password,
        "-key",
        "contact_port",
        &cp,
        "-m",
        "1",
        &target,
    ]);
    assert_eq!(
        (run.successful, run.failed),
        (1, 0),
        "agent phone registration: {}",
        run.output
    );
}

/// A copy of the test IVR flows with the prompts they name (taken from the demo's recordings).
pub fn test_flows() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/ivr");
    for entry in std::fs::read_dir(&fixtures).expect("fixtures").flatten() {
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).expect("copy flow");
    }
    std::fs::create_dir_all(dir.path().join("prompts")).expect("prompts dir");
    for name in [
        "main-menu",
        "invalid",
        "goodbye",
        "survey",
        "callback-question",
        "callback-confirmed",
    ] {
        let from = ivr_dir().join("prompts").join(format!("{name}.wav"));
        std::fs::copy(&from, dir.path().join("prompts").join(format!("{name}.wav"))).expect("copy prompt");
    }
    dir
}

/// Runs a SIPp caller (`scenario`: a built-in name like `uac` or a file in `tests/sipp/`) against the
/// platform on free ports.
pub fn uac(platform: &Platform, scenario: &str, service: &str, calls: u32, extra: &[&str]) -> SippRun {
    let port = free_port().to_string();
    let media = free_media_port().to_string();
    let calls = calls.to_string();
    let target = platform.sip.to_string();
    let sf = scenarios_dir().join(scenario);
    let mut args: Vec<&str> = vec![
        "-i",
        "127.0.0.1",
        "-p",
        &port,
        "-mp",
        &media,
        "-s",
        service,
        "-m",
        &calls,
    ];
    if scenario.ends_with(".xml") {
        args.extend(["-sf", sf.to_str().unwrap_or_default()]);
    } else {
        args.extend(["-sn", scenario]);
    }
    args.extend_from_slice(extra);
    args.push(&target);
    sipp(&args)
}

/// `REDIS_URL`, which the test command always sets. Outside CI a test may run without it, and says so.
pub fn redis_url(test: &str) -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "CI must provide REDIS_URL (the test command sets it)"
            );
            eprintln!("REDIS_URL unset: skipping {test}");
            None
        }
    }
}

/// A two-thread runtime for a test's CTI clients and CRM reads.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}
