//! Kamailio in front of two real nodes, started with the very configuration in `deploy/kamailio/`
//! (`system_tests::kamailio`: only its addresses set, through `-A` defines and the shipped
//! dispatcher list with the test nodes' addresses put in). The nodes share the machine's Redis
//! under a key prefix of their own. SIPp places the calls (route `900`, forwarded by each node to
//! a SIPp callee); each node's `sip_calls_total` says which node took them, and
//! `kamcmd dispatcher.list` what Kamailio thinks.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use system_tests::kamailio::{Kamailio, dispatcher_list_for};
use system_tests::*;

/// The nodes' configuration: Redis state under `prefix`, route 900 forwarded to the SIPp callee,
/// agent 1001's SIP account, and Kamailio (127.0.0.1) trusted as it would be in production.
fn node_config(redis: &str, prefix: &str, callee_port: u16) -> String {
    format!(
        "[sip.limits]\nmax_calls_per_second = 0\ntrusted_sources = [\"127.0.0.1\"]\n\n\
         [[sip.user]]\nname = \"1001\"\npassword = \"agent1001\"\n\n\
         [[route]]\nnumber = \"900\"\nforward = \"sip:uas@127.0.0.1:{callee_port}\"\n\n\
         [state]\nbackend = \"redis\"\nredis_url = \"{redis}\"\nkey_prefix = \"{prefix}\"\n\n\
         [rtp]\nmedia_timeout_secs = 300\n"
    )
}

/// Two nodes on fixed addresses (so one can come back where Kamailio expects it).
struct Cluster {
    config: String,
    addresses: [NodeAddress; 2],
    nodes: [Option<Platform>; 2],
}

impl Cluster {
    fn start(config: String) -> Cluster {
        let addresses = [0, 1].map(|_| NodeAddress {
            shutdown_grace_secs: 120,
            ..NodeAddress::free()
        });
        let nodes = addresses.map(|a| Some(Self::boot(&config, a, tempfile::tempdir().expect("tempdir"))));
        Cluster {
            config,
            addresses,
            nodes,
        }
    }

    fn boot(config: &str, address: NodeAddress, dir: tempfile::TempDir) -> Platform {
        Platform::start_at(dir, config, &ivr_dir(), address)
    }

    fn node(&self, i: usize) -> &Platform {
        self.nodes[i].as_ref().expect("node running")
    }

    fn sip(&self, i: usize) -> SocketAddr {
        format!("127.0.0.1:{}", self.addresses[i].sip_port)
            .parse()
            .expect("addr")
    }

    fn sips(&self) -> Vec<SocketAddr> {
        vec![self.sip(0), self.sip(1)]
    }

    /// Calls node `i` admitted so far (`sip_calls_total`).
    fn calls(&self, i: usize) -> u64 {
        counter(&self.node(i).http_get("/metrics").1, "sip_calls_total")
    }

    /// Node `i`'s count of OPTIONS requests received.
    fn options_received(&self, i: usize) -> u64 {
        counter(
            &self.node(i).http_get("/metrics").1,
            "sip_requests_total{method=\"OPTIONS\"}",
        )
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .flatten()
            .map(Platform::log)
            .collect::<Vec<_>>()
            .join("\n----\n")
    }
}

/// The value of the sample named exactly `name` (with its labels) in a Prometheus exposition.
fn counter(exposition: &str, name: &str) -> u64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// `calls` SIPp calls of `hold_ms` each to `number` through `target`, at up to 10 per second. The
/// caller addresses ACK and BYE as RFC 3261 says (Contact and Record-Route of the answer), not to
/// the proxy's own address as SIPp's built-in `uac` does.
fn calls_via(target: SocketAddr, number: &str, calls: u32, hold_ms: u32) -> SippRun {
    let port = free_port().to_string();
    let media = free_media_port().to_string();
    let scenario = scenarios_dir().join("uac_proxied.xml");
    let (calls, hold, target) = (calls.to_string(), hold_ms.to_string(), target.to_string());
    sipp(&[
        "-sf",
        scenario.to_str().unwrap_or_default(),
        "-i",
        "127.0.0.1",
        "-p",
        &port,
        "-mp",
        &media,
        "-s",
        number,
        "-m",
        &calls,
        "-r",
        "10",
        "-d",
        &hold,
        &target,
    ])
}

/// A SIPp caller holding one call to `target` for `hold_ms`, in the background (ended with the test).
struct HeldCall(Child);

impl HeldCall {
    fn start(target: SocketAddr, hold_ms: u32) -> HeldCall {
        let child = Command::new("sipp")
            .args(["-sn", "uac", "-i", "127.0.0.1", "-p"])
            .arg(free_port().to_string())
            .arg("-mp")
            .arg(free_media_port().to_string())
            .args(["-s", "900", "-m", "1", "-d"])
            .arg(hold_ms.to_string())
            .args(["-nostdin", "-timeout", "120s", "-timeout_error"])
            .arg(target.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp");
        HeldCall(child)
    }

    /// SIPp's exit code once the call has ended.
    fn wait(&mut self) -> Option<i32> {
        self.0.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for HeldCall {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (bounded) for `done`, polling.
fn wait_until(what: &str, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}\n{}", context());
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn redis_and_prefix(test: &str) -> Option<(String, String)> {
    let redis = redis_url(test)?;
    Some((redis, format!("ccdeploy{}x{}", std::process::id(), free_port())))
}

#[test]
fn the_shipped_dispatcher_list_is_rewritten_node_by_node() {
    let shipped = "# nodes\n1 sip:cc-node-1:5060 8 0 duid=a\n1 sip:cc-node-2:5060 8 0 duid=b\n2 sip:x:5060\n";
    let nodes: Vec<SocketAddr> = vec!["127.0.0.1:7001".parse().expect("addr")];
    assert_eq!(
        dispatcher_list_for(shipped, &nodes),
        "# nodes\n1 sip:127.0.0.1:7001 8 0 duid=a\n2 sip:x:5060\n"
    );
}

#[test]
fn calls_through_kamailio_reach_both_nodes_and_a_draining_node_loses_no_call_and_comes_back() {
    require_command("sipp");
    let Some((redis, prefix)) = redis_and_prefix("the Kamailio drain test") else {
        return;
    };
    let callee = SippServer::start("uas", 1000);
    let mut cluster = Cluster::start(node_config(&redis, &prefix, callee.port));
    let kamailio = Kamailio::start(&cluster.sips());
    for i in 0..2 {
        kamailio.wait_for(cluster.sip(i), 'A', "both nodes in rotation at start");
    }

    // Calls through Kamailio are spread over both nodes.
    let run = calls_via(kamailio.sip, "900", 20, 200);
    assert_eq!(
        (run.successful, run.failed),
        (20, 0),
        "{}\n{}",
        run.output,
        kamailio.log()
    );
    let (a, b) = (cluster.calls(0), cluster.calls(1));
    assert_eq!(a + b, 20, "every call admitted once");
    assert!(a > 0 && b > 0, "both nodes take calls: {a} and {b}");

    // Node A drains (a call of its own keeps it running): new calls all go to B, none fails.
    let mut hold = HeldCall::start(cluster.sip(0), 15_000);
    wait_until(
        "the held call reaches node A",
        || cluster.calls(0) == a + 1,
        || cluster.logs(),
    );
    cluster.node(0).signal(libc::SIGTERM);
    wait_until(
        "node A drains",
        || cluster.node(0).http_get("/readyz").0 == 503,
        || cluster.logs(),
    );
    let run = calls_via(kamailio.sip, "900", 10, 200);
    assert_eq!(
        (run.successful, run.failed),
        (10, 0),
        "no call is lost while node A drains\n{}\n{}",
        run.output,
        kamailio.log()
    );
    assert_eq!(cluster.calls(0), a + 1, "the draining node admitted no new call");
    assert_eq!(cluster.calls(1), b + 10, "node B took them all");

    // Its own call finished, A exits; started again at the same address it is back in rotation.
    assert_eq!(hold.wait(), Some(0), "the held call ends normally");
    let mut drained = cluster.nodes[0].take().expect("node A");
    assert_eq!(
        drained.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        drained.log()
    );
    let dir = drained.kill();
    cluster.nodes[0] = Some(Cluster::boot(&cluster.config, cluster.addresses[0], dir));
    kamailio.wait_for(cluster.sip(0), 'A', "node A back in rotation after its restart");
    let (a, b) = (cluster.calls(0), cluster.calls(1));
    let run = calls_via(kamailio.sip, "900", 20, 200);
    assert_eq!(
        (run.successful, run.failed),
        (20, 0),
        "{}\n{}",
        run.output,
        kamailio.log()
    );
    let (a2, b2) = (cluster.calls(0) - a, cluster.calls(1) - b);
    assert_eq!(a2 + b2, 20);
    assert!(a2 > 0 && b2 > 0, "both nodes take calls again: {a2} and {b2}");
}

/// What the issue asks of a draining node: it answers Kamailio's OPTIONS probe with 503, so the
/// dispatcher takes it out of rotation and keeps it out (not only after an INVITE bounced off it).
#[test]
fn a_draining_node_answers_the_probe_with_503_and_stays_out_of_rotation() {
    require_command("sipp");
    let Some((redis, prefix)) = redis_and_prefix("the Kamailio probe test") else {
        return;
    };
    let callee = SippServer::start("uas", 10);
    let cluster = Cluster::start(node_config(&redis, &prefix, callee.port));
    let kamailio = Kamailio::start(&cluster.sips());
    kamailio.wait_for(cluster.sip(0), 'A', "node A in rotation at start");

    let _hold = HeldCall::start(cluster.sip(0), 30_000);
    wait_until(
        "the held call reaches node A",
        || cluster.calls(0) == 1,
        || cluster.logs(),
    );
    cluster.node(0).signal(libc::SIGTERM);
    wait_until(
        "node A drains",
        || cluster.node(0).http_get("/readyz").0 == 503,
        || cluster.logs(),
    );
    let probe = RawSip::new(cluster.sip(0));
    let reply = probe
        .exchange(probe.options("drain-probe").as_bytes())
        .expect("OPTIONS answered");
    assert_eq!(
        status_of(&reply),
        Some(503),
        "a draining node must answer OPTIONS with 503 so a proxy's probe takes it out:\n{reply}"
    );
    let took = kamailio.wait_for(cluster.sip(0), 'I', "the draining node leaves the rotation");
    eprintln!("draining node out of rotation {took:?} after the drain began");
    // Three more probes reach it, and it is still out.
    let seen = cluster.options_received(0);
    wait_until(
        "three more probes reach the draining node",
        || cluster.options_received(0) >= seen + 3,
        || kamailio.log(),
    );
    assert_eq!(
        kamailio.state_of(cluster.sip(0)),
        Some('I'),
        "still out of rotation: {:?}",
        kamailio.states()
    );
}

#[test]
fn phones_register_through_kamailio_and_a_killed_node_is_taken_out_without_losing_a_call() {
    require_command("sipp");
    let Some((redis, prefix)) = redis_and_prefix("the Kamailio kill test") else {
        return;
    };
    let callee = SippServer::start("uas", 1000);
    let mut cluster = Cluster::start(node_config(&redis, &prefix, callee.port));
    let kamailio = Kamailio::start(&cluster.sips());
    for i in 0..2 {
        kamailio.wait_for(cluster.sip(i), 'A', "both nodes in rotation at start");
    }

    // Agent 1001's phone registers through Kamailio (challenge and answer reach the same node);
    // a call to 1001 through either node rings it, straight from the node that holds the call.
    let phone = SippServer::start("uas", 2);
    let run = sipp(&[
        "-sf",
        scenarios_dir()
            .join("register_contact.xml")
            .to_str()
            .unwrap_or_default(),
        "-i",
        "127.0.0.1",
        "-p",
        &free_port().to_string(),
        "-s",
        "1001",
        "-au",
        "1001",
        "-ap",
        "agent1001",
        "-key",
        "contact_port",
        &phone.port.to_string(),
        "-m",
        "1",
        &kamailio.sip.to_string(),
    ]);
    assert_eq!(
        (run.successful, run.failed),
        (1, 0),
        "register: {}\n{}",
        run.output,
        kamailio.log()
    );
    let (a, b) = (cluster.calls(0), cluster.calls(1));
    let run = calls_via(kamailio.sip, "1001", 2, 200);
    assert_eq!(
        (run.successful, run.failed),
        (2, 0),
        "{}\n{}",
        run.output,
        cluster.logs()
    );
    assert_eq!(
        (cluster.calls(0) - a, cluster.calls(1) - b),
        (1, 1),
        "one call to the phone from each node"
    );
    assert_eq!(phone.wait(), Some(0), "the phone answered both");

    // Node B is killed: calls placed at once still all connect (those sent to B time out there and
    // go to A), and the probe takes B out.
    let killed = cluster.sip(1);
    let dead = cluster.nodes[1].take().expect("node B");
    let killed_at = Instant::now();
    drop(dead.kill());
    let a = cluster.calls(0);
    let run = calls_via(kamailio.sip, "900", 10, 200);
    assert_eq!(
        (run.successful, run.failed),
        (10, 0),
        "no call is lost when a node dies\n{}\n{}",
        run.output,
        kamailio.log()
    );
    assert_eq!(cluster.calls(0), a + 10, "node A took them all");
    kamailio.wait_for(killed, 'I', "the killed node leaves the rotation");
    eprintln!(
        "killed node out of rotation within {:?} of the kill",
        killed_at.elapsed()
    );
    let run = calls_via(kamailio.sip, "900", 10, 200);
    assert_eq!((run.successful, run.failed), (10, 0), "{}", run.output);
    assert_eq!(cluster.calls(0), a + 20);
}
