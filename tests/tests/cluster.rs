//! One contact center over three real `callcenter serve` nodes (`[cluster] enabled`): they share the
//! machine's Redis (under a key prefix of their own) and a PostgreSQL database of their own, with
//! Kamailio in front, started from `deploy/kamailio/`. Eight agents' phones (SIPp UASes that answer
//! and hang up shortly after) registered through different nodes; callers are SIPp UACs who wait in
//! the queue until the agent hangs up.
//!
//! What every scenario asserts, counted at the phones themselves (each phone's SIPp message trace,
//! read in order): every caller was served exactly once, and **no phone ever carried two calls at
//! once**, whichever node held the call and whichever node led the router at the time.
//!
//! Scenarios: 40 callers spread over the nodes by Kamailio, every agent's desktop on a node other
//! than their phone's (it follows each call and files its wrap-up); the leader's node frozen
//! (SIGSTOP) past its lease while callers wait, then resumed (it makes no offer and changes
//! nothing); the leader's node killed with `kill -9` while callers wait on the other nodes (a
//! standby takes over and serves every one of them); Redis (a private one, append-only file) killed
//! and restarted under load; the leader's node sent SIGTERM (it hands the lead over, then leaves
//! with exit 0); an agent's desktop on one node and a supervisor on another handling a call held on
//! a third. Rates are modest: the machine is shared.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};
use system_tests::kamailio::Kamailio;
use system_tests::*;

const AGENTS: usize = 8;
const NODE_NAMES: [&str; 3] = ["node-a", "node-b", "node-c"];

/// A fresh PostgreSQL database for one test, dropped at the end.
struct Database {
    admin: String,
    name: String,
    url: String,
}

impl Database {
    fn create(test: &str) -> Option<Database> {
        let admin = match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => {
                assert!(std::env::var("CI").is_err(), "CI must provide DATABASE_URL");
                eprintln!("DATABASE_URL unset: skipping {test}");
                return None;
            }
        };
        require_command("psql");
        let name = format!("cccluster{}x{}", std::process::id(), free_port());
        psql(&admin, &format!("CREATE DATABASE {name}"));
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        let url = format!("{base}/{name}");
        Some(Database { admin, name, url })
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.admin)
            .args([
                "-q",
                "-c",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
    }
}

/// What `sql` selects in the database at `url`, one row per line, columns split by `|`.
fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-At", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Every node's configuration: the shared store and database, the cluster on, one queue served by
/// eight SIP-phone agents who are ready at start, and route 700 to the queue.
fn node_config(redis: &str, prefix: &str, database: &str, agents: usize) -> String {
    let mut c = format!(
        "[sip.limits]\nmax_calls_per_second = 0\nper_source_requests_per_second = 0\ntrusted_sources = [\"127.0.0.1\"]\n\n\
         [state]\nbackend = \"redis\"\nredis_url = \"{redis}\"\nkey_prefix = \"{prefix}\"\n\n\
         [cluster]\nenabled = true\n\n\
         [crm]\ndatabase_url = \"{database}\"\n\n\
         [rtp]\nmedia_timeout_secs = 300\n\n\
         [agents]\nready_on_start = true\n\n\
         [[route]]\nnumber = \"700\"\nqueue = \"support\"\n\n\
         [[acd.queues]]\nid = \"support\"\noffer_timeout_secs = 10\n\n"
    );
    for i in 0..agents {
        let user = agent(i);
        c.push_str(&format!(
            "[[sip.user]]\nname = \"{user}\"\npassword = \"pw{user}\"\n\n\
             [[acd.agents]]\nid = \"{user}\"\nqueues = [{{ queue = \"support\", rank = 1 }}]\n\n\
             [[desk.user]]\nid = \"{user}\"\nname = \"Agent {user}\"\nrole = \"agent\"\npassword = \"desk{user}\"\n\n"
        ));
    }
    // A supervisor with a SIP phone of their own (to listen in).
    c.push_str(
        "[[sip.user]]\nname = \"super\"\npassword = \"pwsuper\"\n\n\
         [[desk.user]]\nid = \"super\"\nname = \"Sam Supervisor\"\nrole = \"supervisor\"\npassword = \"desksuper\"\n\n",
    );
    c
}

fn agent(i: usize) -> String {
    format!("{}", 2001 + i)
}

#[path = "cluster/peers.rs"]
mod peers;
use peers::{Callers, Phone, PrivateRedis, Tally};

/// Three nodes, eight phones registered through them in turn.
/// One cluster at a time in this file: three nodes with their phones (and a test's own Redis) are
/// a whole two-core machine's work; two at once starved Redis past its 2 s response timeout.
static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Cluster {
    nodes: Vec<Option<Platform>>,
    phones: Vec<Phone>,
    /// Every node's configuration, the store's URL and the cluster's key prefix in it.
    config: String,
    redis: String,
    prefix: String,
    db: Database,
    /// Dropped last: the next test's cluster starts once this one is gone.
    _one_at_a_time: std::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    fn start(test: &str, talk_ms: u32) -> Option<Cluster> {
        let redis = redis_url(test)?;
        Self::start_with(test, &redis, AGENTS, Some(talk_ms))
    }

    fn start_on(test: &str, redis: &str, talk_ms: u32) -> Option<Cluster> {
        Self::start_with(test, redis, AGENTS, Some(talk_ms))
    }

    /// `agents` agents whose phones talk `talk_ms` (None: until the other side hangs up); agent
    /// `i`'s phone registers through node `(i + 2) % 3`.
    fn start_with(test: &str, redis: &str, agents: usize, talk_ms: Option<u32>) -> Option<Cluster> {
        Self::start_configured(test, redis, agents, talk_ms, "")
    }

    /// As [`Cluster::start_with`], with `before` at the head of every node's configuration.
    fn start_configured(
        test: &str,
        redis: &str,
        agents: usize,
        talk_ms: Option<u32>,
        before: &str,
    ) -> Option<Cluster> {
        require_command("sipp");
        // A test that failed while holding it poisoned nothing this one relies on.
        let one_at_a_time = ONE_CLUSTER
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let db = Database::create(test)?;
        let prefix = format!("cccluster{}x{}", std::process::id(), free_port());
        let config = format!("{before}{}", node_config(redis, &prefix, &db.url, agents));
        let nodes: Vec<Option<Platform>> = NODE_NAMES
            .iter()
            .map(|name| {
                let address = NodeAddress {
                    node_name: name,
                    ..NodeAddress::free()
                };
                Some(Platform::start_at(
                    tempfile::tempdir().expect("tempdir"),
                    &config,
                    &ivr_dir(),
                    address,
                ))
            })
            .collect();
        let phones: Vec<Phone> = (0..agents).map(|_| Phone::start(talk_ms)).collect();
        let cluster = Cluster {
            nodes,
            phones,
            config,
            redis: redis.to_string(),
            prefix,
            db,
            _one_at_a_time: one_at_a_time,
        };
        for (i, phone) in cluster.phones.iter().enumerate() {
            let user = agent(i);
            register_agent_phone(cluster.node((i + 2) % 3), &user, &format!("pw{user}"), phone.port);
        }
        // Every node sees the whole cluster: every agent ready in the one queue.
        for i in 0..3 {
            cluster.wait_until("every node's wallboard shows every agent ready", || {
                cluster.gauge(i, "acd_agents{queue=\"support\",state=\"available\"}") == agents as u64
            });
        }
        cluster.wait_until("one node leads the router", || cluster.leader().is_some());
        Some(cluster)
    }

    fn node(&self, i: usize) -> &Platform {
        self.nodes[i].as_ref().expect("node running")
    }

    fn running(&self) -> impl Iterator<Item = (usize, &Platform)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// A sample of node `i`'s `/metrics`, 0 when absent.
    fn gauge(&self, i: usize, name: &str) -> u64 {
        let (code, text) = self.node(i).http_get("/metrics");
        if code != 200 {
            return 0;
        }
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// The running node that leads the router, when exactly one does.
    fn leader(&self) -> Option<usize> {
        let leading: Vec<usize> = self
            .running()
            .map(|(i, _)| i)
            .filter(|i| self.gauge(*i, "acd_router_leading") == 1)
            .collect();
        (leading.len() == 1).then(|| leading[0])
    }

    fn tallies(&self) -> Vec<Tally> {
        self.phones.iter().map(Phone::tally).collect()
    }

    fn served(&self) -> usize {
        self.tallies().iter().map(|t| t.calls).sum()
    }

    /// Starts one more node, `name`, with the same configuration (a node joining later).
    fn add_node(&mut self, name: &'static str) -> usize {
        let address = NodeAddress {
            node_name: name,
            ..NodeAddress::free()
        };
        let dir = tempfile::tempdir().expect("tempdir");
        self.nodes
            .push(Some(Platform::start_at(dir, &self.config, &ivr_dir(), address)));
        self.nodes.len() - 1
    }

    /// The desk relay streams (`desk.cmds.*`, `desk.replies.*`) in the cluster's store.
    fn desk_streams(&self) -> Vec<String> {
        let out = Command::new("redis-cli")
            .args(["-u", &self.redis, "--scan", "--pattern"])
            .arg(format!("{}:stream:desk.*", self.prefix))
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.ends_with("desk.events"))
            .map(str::to_string)
            .collect()
    }

    /// What `sql` selects from the cluster's CRM database (see [`psql`]).
    fn crm(&self, sql: &str) -> String {
        psql(&self.db.url, sql)
    }

    fn logs(&self) -> String {
        self.running()
            .map(|(i, n)| format!("== {} ==\n{}", NODE_NAMES.get(i).unwrap_or(&"node-d"), n.log()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits (bounded) for `done`, polling.
    fn wait_until(&self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "{what}\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Every phone carried one call at a time, and together they answered `calls` calls.
    fn assert_served_once_each(&self, calls: usize, what: &str) {
        let tallies = self.tallies();
        for (i, t) in tallies.iter().enumerate() {
            assert!(
                t.most_at_once <= 1,
                "{what}: agent {}'s phone carried {} calls at once ({tallies:?})",
                agent(i),
                t.most_at_once
            );
        }
        let served: usize = tallies.iter().map(|t| t.calls).sum();
        assert_eq!(
            served, calls,
            "{what}: calls answered at the phones ({tallies:?})"
        );
    }
}

/// A cluster test that failed shows what every node logged, whichever check failed (a desktop's
/// wait for a frame panics without knowing the cluster).
impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("the cluster's nodes logged:\n{}", self.logs());
        }
    }
}

/// What an agent's desktop went through: offers, and offers that ended (released or withdrawn).
#[derive(Debug, Default)]
struct Followed {
    offers: usize,
    closed: usize,
}

/// An agent's desktop: counts offers and their ends and files every wrap-up it is asked for, until
/// `stop`, then until every offer it saw has ended.
async fn desktop(
    mut ws: system_tests::cti::CtiClient,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Followed {
    let mut seen = Followed::default();
    let mut id = 0u64;
    let mut stopping = false;
    loop {
        if stopping && seen.closed >= seen.offers {
            return seen;
        }
        let f = if stopping {
            // A failure bound only: after the callers are done, the last wrap-ups come at once.
            match ws
                .next_before(tokio::time::Instant::now() + system_tests::cti::FRAME_WAIT)
                .await
            {
                Some(f) => f,
                None => return seen,
            }
        } else {
            tokio::select! {
                f = ws.next_before(tokio::time::Instant::now() + Duration::from_secs(3600)) => f.expect("a frame"),
                _ = stop.changed() => {
                    stopping = true;
                    continue;
                }
            }
        };
        match f["type"].as_str() {
            Some("offer") => seen.offers += 1,
            Some("released") | Some("offer_withdrawn") => seen.closed += 1,
            Some("call_phase") if f["phase"] == "wrap_up" => {
                id += 1;
                let answer = ws
                    .ask(serde_json::json!({"type": "wrap_up", "id": id, "call": f["call"], "disposition": "resolved"}))
                    .await;
                assert_eq!(answer["type"], "ack", "{answer}");
            }
            _ => {}
        }
    }
}

#[test]
fn forty_callers_over_three_nodes_are_each_served_once_and_no_phone_carries_two_calls() {
    let Some(cluster) = Cluster::start("the three-node cluster test", 200) else {
        return;
    };
    let sips: Vec<SocketAddr> = cluster.running().map(|(_, n)| n.sip).collect();
    let kamailio = Kamailio::start(&sips);
    for sip in &sips {
        kamailio.wait_for(*sip, 'A', "every node in rotation");
    }
    // Every agent's desktop is on a node other than the one their phone registered through; it
    // files each call's wrap-up as it comes.
    let rt = runtime();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let desktops: Vec<_> = (0..AGENTS)
        .map(|i| {
            let user = agent(i);
            let node = cluster.node((i + 1) % 3);
            let token = node.login(&user, &format!("desk{user}"));
            let ws = rt.block_on(system_tests::cti::CtiClient::connect(
                node.http,
                "/ws/agent",
                &token,
            ));
            rt.spawn(desktop(ws, stopped.clone()))
        })
        .collect();
    let (ok, failed) = Callers::start(kamailio.sip, 40, 4).wait();
    assert_eq!(
        (ok, failed),
        (40, 0),
        "every caller served\n{}\n{}",
        kamailio.log(),
        cluster.logs()
    );
    cluster.assert_served_once_each(40, "40 callers over three nodes");
    let _ = stop.send(true);
    let tallies = cluster.tallies();
    for (i, d) in desktops.into_iter().enumerate() {
        let seen = rt.block_on(d).expect("the desktop's task");
        assert!(
            seen.offers >= tallies[i].calls && seen.closed == seen.offers,
            "agent {}'s desktop on another node followed every call of their phone: {seen:?}, {:?}\n{}",
            agent(i),
            tallies[i],
            cluster.logs()
        );
    }
    // Kamailio spread the callers: every node held some (its own admitted calls).
    let per_node: Vec<u64> = (0..3).map(|i| cluster.gauge(i, "sip_calls_total")).collect();
    assert!(per_node.iter().all(|n| *n > 0), "calls per node: {per_node:?}");
    // Agents' calls leave from the node that holds the call, whichever node the phone registered
    // through: every phone took calls.
    let spread: HashMap<usize, usize> = cluster.tallies().iter().map(|t| t.calls).enumerate().collect();
    assert!(
        spread.values().all(|n| *n > 0),
        "every agent took calls: {spread:?}\n{}",
        cluster.logs()
    );
}

#[test]
fn the_leaders_node_frozen_past_its_lease_changes_nothing_and_callers_are_served() {
    let Some(mut cluster) = Cluster::start("the frozen leader test", 200) else {
        return;
    };
    let old = cluster.leader().expect("a leader");
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    cluster.node(old).signal(libc::SIGSTOP);
    // A standby takes the lease over once it lapses.
    cluster.wait_until("a standby leads while the old leader is frozen", || {
        others
            .iter()
            .any(|i| cluster.gauge(*i, "acd_router_leading") == 1)
    });
    let callers: Vec<Callers> = others
        .iter()
        .map(|i| Callers::start(cluster.node(*i).sip, 10, 2))
        .collect();
    let results: Vec<(u64, u64)> = callers.into_iter().map(Callers::wait).collect();
    // Resumed, the old leader finds itself fenced: it offers nothing and stands by.
    cluster.node(old).signal(libc::SIGCONT);
    cluster.wait_until("the old leader steps down", || {
        cluster.gauge(old, "acd_router_leading") == 0
    });
    let (ok, failed) = Callers::start(cluster.node(others[0]).sip, 4, 2).wait();
    assert_eq!(
        results,
        vec![(10, 0), (10, 0)],
        "callers on the live nodes\n{}",
        cluster.logs()
    );
    assert_eq!(
        (ok, failed),
        (4, 0),
        "callers after the old leader resumed\n{}",
        cluster.logs()
    );
    cluster.assert_served_once_each(24, "frozen leader");
    // Exactly one leader at the end. Which node holds the lease is not the point: on a busy machine a
    // lease may lapse again and the resumed node, a normal standby now, may win it fairly.
    assert!(cluster.leader().is_some(), "one leader\n{}", cluster.logs());
    let _ = cluster.nodes[old].take();
}

#[test]
fn the_leaders_node_killed_while_callers_wait_loses_none_of_them() {
    let Some(mut cluster) = Cluster::start("the leader kill test", 1500) else {
        return;
    };
    let old = cluster.leader().expect("a leader");
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    // Twenty callers on the two other nodes, faster than eight agents talking 1.5 s each can take
    // them; the leader's node dies once the first are answered and the rest wait in line.
    let callers: Vec<Callers> = others
        .iter()
        .map(|i| Callers::start(cluster.node(*i).sip, 10, 10))
        .collect();
    cluster.wait_until("the first callers are answered", || cluster.served() >= 2);
    let _ = cluster.nodes[old].take().expect("leader node").kill();
    let results: Vec<(u64, u64)> = callers.into_iter().map(Callers::wait).collect();
    assert_eq!(
        results,
        vec![(10, 0), (10, 0)],
        "every waiting caller served\n{}",
        cluster.logs()
    );
    cluster.assert_served_once_each(20, "leader killed");
    cluster.wait_until("a surviving node leads", || cluster.leader().is_some());
}

#[test]
fn a_node_killed_mid_call_has_its_calls_ended_in_the_crm_as_node_lost_and_no_one_elses() {
    // The phones never hang up: they wait for the caller. The doomed callers wait too, so their
    // calls are certain to talk when the kill comes, however late the CRM learns of the answers
    // (the store may stall for seconds on a busy machine). The spared callers hang up after 15 s.
    let test = "the node kill test";
    let Some(redis) = redis_url(test) else {
        return;
    };
    let Some(mut cluster) = Cluster::start_with(test, &redis, AGENTS, None) else {
        return;
    };
    let leader = cluster.leader().expect("a leader");
    let victim = (leader + 1) % 3;
    let survivor = (leader + 2) % 3;
    // Three callers talk to agents through the node that will die, three through another.
    let doomed = Callers::start(cluster.node(victim).sip, 3, 10);
    let spared = Callers::start_talking(cluster.node(survivor).sip, 3, 10, 15_000);
    cluster.wait_until("all six callers talk to agents", || cluster.served() >= 6);
    // The kill comes once every answer is on record: a node killed between the phone's 200 and
    // its own log of the answer takes that knowledge with it (a busy machine widens the gap).
    cluster.wait_until("the CRM has every answer", || {
        cluster.crm("SELECT count(*) FROM interactions WHERE answered_at IS NOT NULL") == "6"
    });
    // The doomed calls cannot have ended; the spared ones still talk unless the CRM was slower
    // than their 15 s (then the sweep below has fewer live calls to spare, and must still spare them).
    let open: u32 = cluster
        .crm("SELECT count(*) FROM interactions WHERE ended_at IS NULL")
        .parse()
        .expect("a count");
    assert!(
        open >= 3,
        "the doomed node's calls still talk when it is killed: {open} open"
    );
    let _ = cluster.nodes[victim].take().expect("victim node").kill();
    drop(doomed);
    assert_eq!(
        spared.wait(),
        (3, 0),
        "the other node's callers\n{}",
        cluster.logs()
    );
    // The dead node's calls end in the CRM with the reason; the others as their callers ended them.
    let ends = "SELECT end_reason, count(*) FROM interactions WHERE ended_at IS NOT NULL \
                GROUP BY end_reason ORDER BY end_reason";
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = cluster.crm(ends);
    while !(seen.contains("node_lost|3")
        && cluster.crm("SELECT count(*) FROM interactions WHERE ended_at IS NULL") == "0")
    {
        assert!(
            Instant::now() < deadline,
            "CRM ends by reason: {seen}\n{}",
            cluster.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
        seen = cluster.crm(ends);
    }
    assert_eq!(cluster.crm("SELECT count(*) FROM interactions"), "6", "{seen}");
    assert!(
        !seen
            .lines()
            .any(|l| l.starts_with("node_lost|") && l != "node_lost|3"),
        "{seen}"
    );
    let lost = cluster.crm("SELECT count(*) FROM interactions WHERE end_reason = 'node_lost' AND answered_at IS NOT NULL AND ended_by = 'system'");
    assert_eq!(
        lost, "3",
        "the lost calls had been answered, and the system ended them: {seen}"
    );
    let by_callers = cluster
        .crm("SELECT count(*) FROM interactions WHERE ended_by = 'caller' AND end_reason <> 'node_lost'");
    assert_eq!(
        by_callers, "3",
        "the other node's callers ended their calls: {seen}"
    );
    // Counted by the node that ended them: the router's leader then, which may not be the one at
    // the start (a stall of the store under load moves the lease).
    let counted: u64 = cluster
        .running()
        .map(|(i, _)| cluster.gauge(i, "acd_calls_ended_node_lost_total"))
        .sum();
    assert_eq!(counted, 3);
}

#[test]
fn a_redis_restart_under_load_loses_no_caller() {
    if redis_url("the Redis restart test").is_none() {
        return;
    }
    let mut redis = PrivateRedis::start();
    let Some(cluster) = Cluster::start_on("the Redis restart test", &redis.url(), 1000) else {
        return;
    };
    let callers: Vec<Callers> = (0..3)
        .map(|i| Callers::start(cluster.node(i).sip, 6, 3))
        .collect();
    cluster.wait_until("the first callers are answered", || cluster.served() >= 2);
    redis.restart();
    let results: Vec<(u64, u64)> = callers.into_iter().map(Callers::wait).collect();
    assert_eq!(
        results,
        vec![(6, 0), (6, 0), (6, 0)],
        "every caller served across the Redis restart\n{}",
        cluster.logs()
    );
    cluster.assert_served_once_each(18, "Redis restarted");
}

#[test]
fn sigterm_hands_the_lead_over_first_and_the_node_leaves_cleanly() {
    let Some(mut cluster) = Cluster::start("the SIGTERM hand-over test", 200) else {
        return;
    };
    let old = cluster.leader().expect("a leader");
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    cluster.node(old).signal(libc::SIGTERM);
    cluster.wait_until("another node leads", || {
        others
            .iter()
            .any(|i| cluster.gauge(*i, "acd_router_leading") == 1)
    });
    let mut leaving = cluster.nodes[old].take().expect("leaving node");
    assert_eq!(
        leaving.wait(Duration::from_secs(60)),
        Some(0),
        "{}",
        leaving.log()
    );
    // Nothing of it stays in the store: its desk relay streams went with it.
    let its = format!("{}.", NODE_NAMES[old]);
    let left: Vec<String> = cluster
        .desk_streams()
        .into_iter()
        .filter(|s| s.contains(&its))
        .collect();
    assert!(left.is_empty(), "streams of the node that left: {left:?}");
    assert_eq!(
        cluster.desk_streams().len(),
        4,
        "the two other nodes' streams stay"
    );
    let (ok, failed) = Callers::start(cluster.node(others[0]).sip, 8, 4).wait();
    assert_eq!(
        (ok, failed),
        (8, 0),
        "callers after the hand-over\n{}",
        cluster.logs()
    );
    cluster.assert_served_once_each(8, "after SIGTERM");
    // The wallboard of the nodes left still shows every agent, ready again (the router kept them).
    cluster.wait_until("every agent ready again on the other node's wallboard", || {
        cluster.gauge(others[1], "acd_agents{queue=\"support\",state=\"available\"}") == AGENTS as u64
    });
}

/// A desktop on node A follows its agent's call held on node B (the phone registered through node
/// C), and a supervisor on node C listens in: the offer with its screen pop and the phases reach
/// node A; a reload there picks the call up again; the desktop's commands (accept, hold, unhold,
/// hang-up, wrap-up) and the supervisor's (monitor) are carried to node B, run there and answered
/// from there; node C's wallboard shows the router's record of the agent's call and that node B
/// holds it, and node B rings the supervisor's phone.
#[test]
fn a_desktop_and_a_supervisor_on_other_nodes_handle_a_call_held_on_node_b() {
    let test = "the cross-node desktop test";
    let Some(redis) = redis_url(test) else {
        return;
    };
    let Some(cluster) = Cluster::start_with(test, &redis, 1, None) else {
        return;
    };
    let (desk_node, call_node, sup_node) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let sup_phone = Phone::start(None);
    register_agent_phone(sup_node, "super", "pwsuper", sup_phone.port);
    let (token, sup_token) = (
        desk_node.login("2001", "desk2001"),
        sup_node.login("super", "desksuper"),
    );
    let rt = runtime();
    let (mut ws, mut board) = rt.block_on(async {
        let mut ws = system_tests::cti::CtiClient::connect(desk_node.http, "/ws/agent", &token).await;
        let welcome = ws.next_of("welcome").await;
        assert_eq!(welcome["state"]["state"], "available", "{welcome}");
        let board = system_tests::cti::CtiClient::connect(sup_node.http, "/ws/supervisor", &sup_token).await;
        (ws, board)
    });
    let caller = Callers::start(call_node.sip, 1, 1);
    rt.block_on(async {
        let offer = ws.next_of("offer").await;
        let call = offer["pop"]["call"].as_str().expect("call id").to_string();
        assert_eq!(offer["pop"]["queue"], "support", "{offer}");
        ws.next_where(|f| f["type"] == "call_phase" && f["phase"] == "connected")
            .await;
        // The phone answered; accepting from the desktop is refused by the call's node, which
        // knows how the agent took it.
        let f = ws
            .ask(serde_json::json!({"type": "accept", "id": 1, "call": call}))
            .await;
        assert_eq!(f["code"], "answer_on_phone", "answered by node B: {f}");

        // Node C's wallboard: the router's record of who talks to whom, cluster-wide (ringing
        // first, then on the call), and which node holds the call.
        board
            .next_where(|f| {
                f["type"] == "stats"
                    && f["agents"].as_array().is_some_and(|a| {
                        a.iter().any(|r| {
                            r["agent"] == "2001"
                                && r["call"] == call.as_str()
                                && r["state"] == "on_call"
                                && r["node"].as_str().is_some_and(|n| n.starts_with("node-b."))
                        })
                    })
            })
            .await;
        // The supervisor on node C listens in: node B rings their phone (registered through C).
        let f = board
            .ask(serde_json::json!({"type": "monitor", "id": 1, "agent": "2001", "mode": "listen"}))
            .await;
        assert_eq!(f["type"], "ack", "{f}");
        // The phone answering has no frame of its own: ask until the supervisor has joined.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut n = 10;
        loop {
            n += 1;
            let f = board
                .ask(serde_json::json!({"type": "monitor_mode", "id": n, "agent": "2001", "mode": "whisper"}))
                .await;
            if f["type"] == "ack" {
                break;
            }
            assert_eq!(f["code"], "not_monitoring", "{f}");
            assert!(
                tokio::time::Instant::now() < deadline,
                "the supervisor's phone never joined"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let f = board
            .ask(serde_json::json!({"type": "monitor_stop", "id": 100, "agent": "2001"}))
            .await;
        assert_eq!(f["type"], "ack", "{f}");

        // A reload on node A: the new socket is told of the call node B holds.
        drop(std::mem::replace(
            &mut ws,
            system_tests::cti::CtiClient::connect(desk_node.http, "/ws/agent", &token).await,
        ));
        let welcome = ws.next_of("welcome").await;
        let calls = welcome["calls"].as_array().cloned().unwrap_or_default();
        assert_eq!(calls.len(), 1, "{welcome}");
        assert_eq!(calls[0]["pop"]["call"], call.as_str(), "{welcome}");
        assert_eq!(calls[0]["phase"], "connected", "{welcome}");
        // Commands travel to node B and its answers come back.
        let f = ws
            .ask(serde_json::json!({"type": "unhold", "id": 2, "call": call}))
            .await;
        assert_eq!(f["code"], "not_held", "refused by the call's node: {f}");
        let f = ws
            .ask(serde_json::json!({"type": "hold", "id": 3, "call": call}))
            .await;
        assert_eq!(f["type"], "ack", "{f}");
        ws.next_where(|f| f["type"] == "call_phase" && f["phase"] == "held")
            .await;
        let f = ws
            .ask(serde_json::json!({"type": "unhold", "id": 4, "call": call}))
            .await;
        assert_eq!(f["type"], "ack", "{f}");
        ws.next_where(|f| f["type"] == "call_phase" && f["phase"] == "connected")
            .await;
        let f = ws
            .ask(serde_json::json!({"type": "hangup", "id": 5, "call": call}))
            .await;
        assert_eq!(f["type"], "ack", "{f}");
        ws.next_where(|f| f["type"] == "call_phase" && f["phase"] == "wrap_up")
            .await;
        let f = ws
            .ask(serde_json::json!({"type": "wrap_up", "id": 6, "call": call, "disposition": "resolved"}))
            .await;
        assert_eq!(f["type"], "ack", "{f}");
        assert_eq!(ws.next_of("released").await["call"], call.as_str());
        // The call is no longer the agent's: refused at once on node A.
        let f = ws
            .ask(serde_json::json!({"type": "hangup", "id": 7, "call": call}))
            .await;
        assert_eq!(f["code"], "not_your_call", "{f}");
    });
    assert_eq!(caller.wait(), (1, 0), "the caller was served\n{}", cluster.logs());
    cluster.assert_served_once_each(1, "desktop on another node");
    assert_eq!(
        sup_phone.tally().calls,
        1,
        "node B rang the supervisor's phone once\n{}",
        cluster.logs()
    );
}

/// A preview campaign that every node runs and one node dials (it holds the campaign's lease). The
/// agent's desktop is on another node: the leads reach it there, and its skip travels back to the
/// dialing node. A supervisor on the third node pauses the campaign: the dialing node withdraws the
/// preview on the desktop at its next tick; resumed and then stopped from the desktop's node, every
/// node shows the campaign stopped.
#[test]
fn a_preview_reaches_a_desktop_on_another_node_and_a_pause_on_a_third_reaches_the_dialer() {
    let test = "the cross-node preview test";
    let Some(redis) = redis_url(test) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let leads = dir.path().join("leads.csv");
    let zone = system_tests::outbound::zone_at_noon();
    let rows: String = [
        "l1,+442079000001,Ann One",
        "l2,+442079000002,Bob Two",
        "l3,+442079000003,Cy Three",
    ]
    .iter()
    .map(|l| format!("{l},{zone}\n"))
    .collect();
    std::fs::write(&leads, format!("id,phone,name,timezone\n{rows}")).expect("leads");
    let campaign = format!(
        "[desk]\noutbound_trunk = \"carrier\"\n\n\
         [[trunk]]\nname = \"carrier\"\nuri = \"sip:127.0.0.1:{}\"\n\n\
         [[campaign]]\nid = \"spring\"\nmode = \"preview\"\nqueue = \"support\"\ncaller_id = \"+442070000000\"\n\
         leads = \"{}\"\nmessage = \"{}\"\ntick_ms = 200\npreview_skip_secs = 3600\n\n",
        free_port(),
        leads.display(),
        system_tests::outbound::identification_message().display()
    );
    let Some(cluster) = Cluster::start_configured(test, &redis, 1, None, &campaign) else {
        return;
    };
    let tokens: Vec<String> = (0..3)
        .map(|i| cluster.node(i).login("super", "desksuper"))
        .collect();
    let figures = |i: usize| -> serde_json::Value {
        let (code, body) = cluster.node(i).http_get_as("/api/v1/campaigns", &tokens[i]);
        assert_eq!(code, 200, "{body}");
        let all: serde_json::Value = serde_json::from_str(&body).expect("json");
        all["campaigns"][0].clone()
    };
    let mut dialer = None;
    cluster.wait_until("one node dials the campaign", || {
        dialer = (0..3).find(|i| figures(*i)["dialing_here"] == true);
        dialer.is_some()
    });
    let dialer = dialer.expect("a dialing node");
    let (desk_node, third) = ((dialer + 1) % 3, (dialer + 2) % 3);
    let token = cluster.node(desk_node).login("2001", "desk2001");
    let rt = runtime();
    rt.block_on(async {
        let mut ws =
            system_tests::cti::CtiClient::connect(cluster.node(desk_node).http, "/ws/agent", &token).await;
        ws.next_of("welcome").await;
        // The dialing node previews the first lead to the desktop on another node.
        let first = ws.next_of("preview").await;
        assert_eq!(first["preview"]["campaign"], "spring", "{first}");
        let lead = first["preview"]["lead"].as_str().expect("lead").to_string();
        assert_eq!(first["preview"]["attempt"], 1, "{first}");
        // Skipped here, taken by the dialing node's runner: the next lead comes.
        let f = ws
            .ask(serde_json::json!({"type": "preview_skip", "id": 1, "campaign": "spring", "lead": lead}))
            .await;
        assert_eq!(f["type"], "ack", "the dialing node took the skip: {f}");
        let second = ws
            .next_where(|f| f["type"] == "preview" && f["preview"]["lead"] != lead.as_str())
            .await;
        let second = second["preview"]["lead"].as_str().expect("lead").to_string();

        // Paused by a supervisor on the third node: the dialing node withdraws the preview.
        let (code, body) =
            cluster
                .node(third)
                .http_post("/api/v1/campaigns/spring/pause", "{}", Some(&tokens[third]));
        assert_eq!(code, 200, "{body}");
        let gone = ws.next_of("preview_withdrawn").await;
        assert_eq!(gone["lead"], second.as_str(), "{gone}");
    });
    cluster.wait_until("the dialing node paused", || figures(dialer)["state"] == "paused");
    for (action, state) in [("resume", "running"), ("stop", "stopped")] {
        let (code, body) = cluster.node(desk_node).http_post(
            &format!("/api/v1/campaigns/spring/{action}"),
            "{}",
            Some(&tokens[desk_node]),
        );
        assert_eq!(code, 200, "{action}: {body}");
        cluster.wait_until("the dialing node follows", || figures(dialer)["state"] == state);
    }
    for i in 0..3 {
        cluster.wait_until("every node shows the campaign stopped", || {
            figures(i)["state"] == "stopped"
        });
    }
    let (code, body) =
        cluster
            .node(third)
            .http_post("/api/v1/campaigns/spring/resume", "{}", Some(&tokens[third]));
    assert_eq!(code, 409, "a stopped campaign stays stopped: {body}");
}

/// A fourth node started while the cluster runs joins it: the existing leader keeps the lead and
/// serves the new node's callers, and an agent whose phone registers through the new node takes
/// calls (the new node's and the others'), one at a time.
#[test]
fn a_node_started_later_joins_and_its_callers_and_agent_are_served() {
    let test = "the late node test";
    let Some(redis) = redis_url(test) else {
        return;
    };
    let Some(mut cluster) = Cluster::start_with(test, &redis, 2, Some(300)) else {
        return;
    };
    let leader = cluster.leader().expect("a leader");
    let late = cluster.add_node("node-d");
    // Agent 2001's phone now registers through the new node.
    register_agent_phone(
        cluster.node(late),
        &agent(0),
        &format!("pw{}", agent(0)),
        cluster.phones[0].port,
    );
    cluster.wait_until("the new node's wallboard shows both agents ready", || {
        cluster.gauge(late, "acd_agents{queue=\"support\",state=\"available\"}") == 2
    });
    let callers = [
        Callers::start(cluster.node(late).sip, 6, 2),
        Callers::start(cluster.node(leader).sip, 4, 2),
    ];
    let results: Vec<(u64, u64)> = callers.into_iter().map(Callers::wait).collect();
    assert_eq!(
        results,
        vec![(6, 0), (4, 0)],
        "every caller served\n{}",
        cluster.logs()
    );
    cluster.assert_served_once_each(10, "a node joined later");
    assert!(
        cluster.tallies()[0].calls > 0,
        "the agent registered through the new node took calls"
    );
    assert!(
        cluster.gauge(late, "sip_calls_total") >= 6,
        "the new node held its callers' calls"
    );
    assert_eq!(
        cluster.leader(),
        Some(leader),
        "the leader kept the lead\n{}",
        cluster.logs()
    );
}

/// Callers arrive one after another on the three nodes in turn while the only agent is on a break;
/// when the agent is ready again they are offered in the order they arrived (each offer's screen pop
/// names its caller, whose number ends in their rank), whichever node holds each call, and the phone
/// carries them one at a time. The phone itself is shown the contact center, not the caller, so the
/// order is read from the desktop following the phone's calls.
#[test]
fn callers_on_every_node_are_offered_in_order_of_arrival() {
    let test = "the caller order test";
    let Some(redis) = redis_url(test) else {
        return;
    };
    let Some(cluster) = Cluster::start_with(test, &redis, 1, Some(200)) else {
        return;
    };
    let token = cluster.node(0).login("2001", "desk2001");
    let rt = runtime();
    let mut ws = rt.block_on(async {
        let mut ws = system_tests::cti::CtiClient::connect(cluster.node(0).http, "/ws/agent", &token).await;
        ws.next_of("welcome").await;
        let f = ws
            .ask(serde_json::json!({"type": "not_ready", "id": 1, "reason": "break"}))
            .await;
        assert_eq!(f["type"], "ack", "{f}");
        ws
    });
    let gauge_everywhere = |name: &str, value: u64| (0..3).all(|i| cluster.gauge(i, name) == value);
    cluster.wait_until("the agent is on a break cluster-wide", || {
        gauge_everywhere("acd_agents{queue=\"support\",state=\"available\"}", 0)
    });
    let callers: Vec<Callers> = (0..6)
        .map(|k| {
            let caller = Callers::one_from(cluster.node(k % 3).sip, &format!("555000{k}"));
            // The next one arrives once this one waits in the queue.
            cluster.wait_until("the caller waits", || {
                gauge_everywhere("acd_calls_waiting{queue=\"support\"}", k as u64 + 1)
            });
            caller
        })
        .collect();
    let offered: Vec<String> = rt.block_on(async {
        let f = ws.ask(serde_json::json!({"type": "ready", "id": 2})).await;
        assert_eq!(f["type"], "ack", "{f}");
        let mut offered = Vec::new();
        for id in 3..9 {
            let offer = ws.next_of("offer").await;
            let caller = offer["pop"]["caller"].as_str().unwrap_or_default().to_string();
            offered.push(caller.chars().last().map(String::from).unwrap_or_default());
            let call = offer["pop"]["call"].clone();
            ws.next_where(|f| f["type"] == "call_phase" && f["phase"] == "wrap_up" && f["call"] == call)
                .await;
            let f = ws
                .ask(
                    serde_json::json!({"type": "wrap_up", "id": id, "call": call, "disposition": "resolved"}),
                )
                .await;
            assert_eq!(f["type"], "ack", "{f}");
        }
        offered
    });
    let results: Vec<(u64, u64)> = callers.into_iter().map(Callers::wait).collect();
    assert_eq!(
        results,
        vec![(1, 0); 6],
        "every caller served\n{}",
        cluster.logs()
    );
    cluster.assert_served_once_each(6, "callers in order");
    assert_eq!(
        offered,
        ["0", "1", "2", "3", "4", "5"],
        "offered in order of arrival\n{}",
        cluster.logs()
    );
}
