//! Redis processes started by a test on free ports: a server (optionally a replica, optionally with
//! an append-only file), and sentinels. Killed when dropped.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A Redis process of the test (`redis-server` or `redis-sentinel`).
pub type Proc = testkit::redis::RedisProcess;

pub use testkit::free_port;

pub fn installed(binary: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Says why a test that needs these programs did nothing.
pub fn require(binaries: &[&str]) -> bool {
    let missing: Vec<&str> = binaries.iter().copied().filter(|b| !installed(b)).collect();
    if !missing.is_empty() {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** {missing:?} not installed (apt-get install -y redis-server redis-sentinel): test SKIPPED ***\n"
        );
    }
    missing.is_empty()
}

pub fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    cmd.query(&mut conn)
}

pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `redis-server` with its data in `dir/name`, optionally replicating `replica_of`, optionally
/// with an append-only file fsynced on every write.
pub fn server(dir: &Path, name: &str, replica_of: Option<u16>, aof: bool) -> Proc {
    let port = free_port();
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let mut args: Vec<String> = vec![
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        String::new(),
        "--dir".into(),
        data.display().to_string(),
    ];
    if aof {
        args.extend(["--appendonly", "yes", "--appendfsync", "always"].map(String::from));
    } else {
        args.extend(["--appendonly", "no"].map(String::from));
    }
    if let Some(primary) = replica_of {
        args.extend([
            "--replicaof".to_string(),
            "127.0.0.1".to_string(),
            primary.to_string(),
        ]);
    }
    testkit::redis::RedisProcess::spawn("redis-server", args, port)
}

/// Waits until `primary` has a replica in sync.
pub fn wait_synced(primary: u16) {
    wait_until("the replica to sync", Duration::from_secs(30), || {
        let info: String = query(primary, redis::cmd("INFO").arg("replication")).unwrap_or_default();
        info.contains("state=online")
    });
}

/// A `redis-sentinel` watching `primary` as `service` (quorum 1).
pub fn sentinel(dir: &Path, name: &str, service: &str, primary: u16) -> Proc {
    let port = free_port();
    let conf: PathBuf = dir.join(format!("{name}.conf"));
    let mut f = std::fs::File::create(&conf).unwrap();
    writeln!(
        f,
        "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor {service} 127.0.0.1 {primary} 1\n\
         sentinel down-after-milliseconds {service} 2000\nsentinel failover-timeout {service} 10000\n\
         sentinel parallel-syncs {service} 1",
        dir.display()
    )
    .unwrap();
    testkit::redis::RedisProcess::spawn("redis-sentinel", vec![conf.display().to_string()], port)
}

/// The primary's port as `sentinel` names it.
pub fn primary_port(sentinel: u16, service: &str) -> Option<u16> {
    let addr: Option<(String, String)> = query(
        sentinel,
        redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(service),
    )
    .ok()?;
    addr.and_then(|(_, port)| port.parse().ok())
}

/// Waits until `sentinel` knows a replica of `service` (it may be chosen in a failover).
/// Waits until `sentinel` has seen a replica of `service` linked to its primary (known alone is
/// not enough for a failover: the sentinel answers NOGOODSLAVE).
pub fn wait_replica_known(sentinel: u16, service: &str) {
    wait_until(
        "the sentinel to see the replica linked",
        Duration::from_secs(30),
        || {
            let replicas: Vec<Vec<String>> =
                query(sentinel, redis::cmd("SENTINEL").arg("replicas").arg(service)).unwrap_or_default();
            replicas.iter().any(|r| {
                r.windows(2)
                    .any(|kv| kv[0] == "master-link-status" && kv[1] == "ok")
            })
        },
    );
}

/// Forces a failover of `service` and waits until the sentinels name `to` as its primary and `to`
/// has a replica in sync again.
pub fn failover(sentinel: u16, service: &str, to: u16) {
    let _: String = query(sentinel, redis::cmd("SENTINEL").arg("failover").arg(service)).unwrap();
    wait_until(
        "the sentinels to name the new primary",
        Duration::from_secs(60),
        || primary_port(sentinel, service) == Some(to),
    );
    wait_synced(to);
}
