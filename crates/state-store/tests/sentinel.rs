//! The store through Redis Sentinel, against real processes started by the test on free ports: a
//! primary, a replica and two sentinels (`redis-server` and `redis-sentinel` must be installed; the
//! test says so and is skipped when they are not). A forced failover loses no confirmed write, and
//! a write no replica confirms is reported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use domain::Timestamp;
use state_store::{BlobWrite, StateConfig, StateError, StateStore, StreamCommit};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::free_port;
use testkit::redis::RedisProcess as Proc;

fn installed(binary: &str) -> bool {
    Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    cmd.query(&mut conn)
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn server(dir: &Path, name: &str, replica_of: Option<u16>) -> Proc {
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let mut extra = vec![
        "--appendonly".to_string(),
        "no".into(),
        "--dir".into(),
        data.display().to_string(),
    ];
    if let Some(primary) = replica_of {
        extra.extend(["--replicaof".to_string(), "127.0.0.1".into(), primary.to_string()]);
    }
    Proc::server(&extra)
}

fn sentinel(dir: &Path, name: &str, service: &str, primary: u16) -> Proc {
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
    Proc::spawn("redis-sentinel", vec![conf.display().to_string()], port)
}

fn primary_port(sentinel: u16, service: &str) -> Option<u16> {
    let addr: Option<(String, String)> = query(
        sentinel,
        redis::cmd("SENTINEL").arg("get-master-addr-by-name").arg(service),
    )
    .ok()?;
    addr.and_then(|(_, port)| port.parse().ok())
}

fn t(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs)
}

/// Retries `f` until it succeeds, for at most 30 s (a failover takes a few seconds).
async fn retry<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, StateError>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                assert!(Instant::now() < deadline, "{what} kept failing: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_failover_loses_no_confirmed_write() {
    if !installed("redis-server") || !installed("redis-sentinel") {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** state-store sentinel test: redis-server or redis-sentinel is not installed: SKIPPED ***\n"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let primary = server(dir.path(), "primary", None);
    let replica = server(dir.path(), "replica", Some(primary.port));
    wait_until("the replica to sync", || {
        let info: String = query(primary.port, redis::cmd("INFO").arg("replication")).unwrap_or_default();
        info.contains("state=online")
    });
    let service = "cc-test";
    let s1 = sentinel(dir.path(), "s1", service, primary.port);
    let s2 = sentinel(dir.path(), "s2", service, primary.port);
    // Known is not enough: a failover needs the sentinel to have seen the replica's link to the
    // primary up (found too early, it answered NOGOODSLAVE).
    wait_until("the sentinels to see the replica linked", || {
        [s1.port, s2.port].iter().all(|s| {
            let replicas: Vec<Vec<String>> =
                query(*s, redis::cmd("SENTINEL").arg("replicas").arg(service)).unwrap_or_default();
            replicas.iter().any(|r| {
                r.windows(2)
                    .any(|kv| kv[0] == "master-link-status" && kv[1] == "ok")
            })
        })
    });

    let config = StateConfig::sentinel(
        vec![
            format!("redis://127.0.0.1:{}/", s1.port),
            format!("redis://127.0.0.1:{}/", s2.port),
        ],
        service,
        "sentinel-test",
        1,
    );
    let store = StateStore::connect(&config).await.unwrap();
    let lease = store
        .acquire_lease("router", "leader-a", Duration::from_secs(60), t(0))
        .await
        .unwrap()
        .unwrap();
    let mut confirmed = Vec::new();
    for i in 0..20 {
        confirmed.push(
            store
                .stream_append("inputs", format!("in-{i}").as_bytes())
                .await
                .unwrap(),
        );
    }
    let mut commit = StreamCommit::new(lease.clone());
    commit
        .append("journal", b"batch-1".to_vec(), None)
        .put_blob("router", "snapshot", b"snap-1".to_vec());
    store.stream_commit(&commit).await.unwrap();

    // Failover, forced; the store follows the primary the sentinels name.
    let _: String = query(s1.port, redis::cmd("SENTINEL").arg("failover").arg(service)).unwrap();
    wait_until("the sentinels to name the replica", || {
        primary_port(s1.port, service) == Some(replica.port)
    });
    let store_ = store.clone();
    retry("an append after the failover", || {
        let s = store_.clone();
        async move { s.stream_append("inputs", b"after").await }
    })
    .await;
    let all = store.stream_read("inputs", None, 100, None).await.unwrap();
    let ids: Vec<_> = all.iter().map(|e| e.id.clone()).collect();
    for id in &confirmed {
        assert!(ids.contains(id), "confirmed entry {id} survived the failover");
    }
    assert_eq!(all.last().unwrap().payload, b"after");
    assert_eq!(
        store
            .get_blob("router", "snapshot", t(1))
            .await
            .unwrap()
            .unwrap()
            .value,
        b"snap-1"
    );
    // The lease record and its fence moved with the data: the holder's commits still go through.
    let mut next = StreamCommit::new(lease.clone());
    next.append("journal", b"batch-2".to_vec(), None);
    let store_ = store.clone();
    retry("a commit after the failover", || {
        let s = store_.clone();
        let c = next.clone();
        async move { s.stream_commit(&c).await }
    })
    .await;
    assert_eq!(store.stream_len("journal").await.unwrap(), 2);

    // The old primary now replicates the new one. Without it, a durable write is not confirmed:
    // reported as such, never as a success.
    wait_until("the old primary to follow the new one", || {
        let info: String = query(replica.port, redis::cmd("INFO").arg("replication")).unwrap_or_default();
        info.contains("state=online")
    });
    drop(primary);
    let unconfirmed = store.stream_append("inputs", b"alone").await;
    assert!(
        matches!(
            unconfirmed,
            Err(StateError::NotReplicated {
                wanted: 1,
                acknowledged: 0
            })
        ),
        "{unconfirmed:?}"
    );
    // Writes that need no confirmation still work.
    store
        .put_presence(&domain::AgentId::new("alice").unwrap(), &"ready")
        .await
        .unwrap();
    let write = BlobWrite::new();
    assert!(matches!(
        store.put_blob("x", "y", b"z", &write, t(2)).await,
        Err(StateError::NotReplicated { .. })
    ));
    drop((s1, s2, replica));
}
