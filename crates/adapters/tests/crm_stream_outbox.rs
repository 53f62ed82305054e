//! The CRM writer over the state store's stream (the outbox shared by nodes): one node at a time
//! writes it to SQL, a standby takes over the entries a dead holder was given and never
//! acknowledged, and a kill -9 of an appending process loses no acknowledged event. Runs on the
//! memory backend and, when `REDIS_URL` is set, on Redis (the kill -9 test on Redis only: the memory
//! outbox dies with its process).

// A failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

use adapters::StreamOutbox;
use adapters::crm_stream_outbox::{OUTBOX_GROUP, OUTBOX_STREAM};
use crm_store::{CrmStore, EventWriter, Outbox, WriterConfig, journal};
use domain::{
    AgentId, Channel, Direction, EndedBy, InteractionEvent, InteractionEventKind, InteractionId, Pii,
    QueueId, Timestamp,
};
use state_store::{StateConfig, StateStore};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// Five events of an answered call: 2 s in queue, 30 s talk, 5 s wrap-up.
fn call(id: &str, t0: i64) -> Vec<InteractionEvent> {
    let agent = AgentId::new("dave").unwrap();
    let kinds = [
        (
            0,
            InteractionEventKind::Arrived {
                channel: Channel::Voice,
                direction: Direction::Inbound,
                from: Pii::new("+14155550100".into()),
                to: Pii::new("+18005550199".into()),
            },
        ),
        (
            1_000,
            InteractionEventKind::Enqueued {
                queue: QueueId::new("sales").unwrap(),
                priority: 0,
            },
        ),
        (3_000, InteractionEventKind::Answered { agent: agent.clone() }),
        (
            33_000,
            InteractionEventKind::Ended {
                by: EndedBy::Caller,
                reason: "bye".into(),
                quality: None,
            },
        ),
        (
            38_000,
            InteractionEventKind::WrappedUp {
                agent,
                disposition: "sale".into(),
                notes: Pii::new(String::new()),
            },
        ),
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(seq, (dt, kind))| InteractionEvent {
            interaction: InteractionId::new(id).unwrap(),
            seq: seq as u32,
            at: Timestamp::from_millis(t0 + dt),
            kind,
        })
        .collect()
}

fn redis_url() -> Option<String> {
    match std::env::var("REDIS_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(std::env::var("CI").is_err(), "CI must provide REDIS_URL");
            eprintln!("REDIS_URL unset: skipping the Redis outbox tests");
            None
        }
    }
}

async fn redis_state(prefix: &str) -> StateStore {
    StateStore::connect(&StateConfig::redis(redis_url().unwrap(), prefix.to_string()))
        .await
        .unwrap()
}

/// The state stores to run on: memory, and Redis under a prefix of the test's own.
async fn backends(test: &str) -> Vec<StateStore> {
    let mut out = vec![StateStore::memory()];
    if redis_url().is_some() {
        out.push(redis_state(&format!("crmoutbox{}{test}", std::process::id())).await);
    }
    out
}

async fn sqlite(dir: &std::path::Path, name: &str) -> CrmStore {
    let store = CrmStore::connect(&format!("sqlite:{}", dir.join(name).display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
}

async fn writer(
    store: &CrmStore,
    dir: &std::path::Path,
    outbox: Arc<StreamOutbox>,
) -> (EventWriter, crm_store::WriterTask) {
    let config = WriterConfig::new(dir.join(format!("dead-letters-{}", rand_suffix())));
    EventWriter::start_with_outbox(store.clone(), config, outbox)
        .await
        .unwrap()
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_append_and_one_writes_sql_then_the_other_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    for (n, state) in backends("share").await.into_iter().enumerate() {
        let store = sqlite(dir.path(), &format!("share-{n}.db")).await;
        let outbox1 = Arc::new(StreamOutbox::new(state.clone(), "node1").await.unwrap());
        let (writer1, task1) = writer(&store, dir.path(), outbox1.clone()).await;
        // Node 1 reads first, so it holds the role before node 2 starts.
        let mut committed1 = writer1.committed();
        for e in call("n1-first", 0) {
            writer1.append(e).await.unwrap();
        }
        committed1.wait_for(|c| *c == 5).await.unwrap();
        assert!(outbox1.is_consumer().await);

        let outbox2 = Arc::new(StreamOutbox::new(state.clone(), "node2").await.unwrap());
        let (writer2, task2) = writer(&store, dir.path(), outbox2.clone()).await;
        for i in 0..20 {
            let (w, id) = if i % 2 == 0 {
                (&writer1, format!("n1-{i}"))
            } else {
                (&writer2, format!("n2-{i}"))
            };
            for e in call(&id, i * 100_000) {
                w.append(e).await.unwrap();
            }
        }
        committed1.wait_for(|c| *c == 105).await.unwrap();
        assert_eq!(
            *writer2.committed().borrow(),
            0,
            "node 2 writes nothing while node 1 holds the role"
        );
        assert!(!outbox2.is_consumer().await);
        let row = store
            .interaction(&InteractionId::new("n2-7").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (row.wait_ms, row.talk_ms, row.wrap_ms),
            (Some(2_000), Some(30_000), Some(5_000))
        );

        // Node 1 stops: it gives the role up, and node 2 writes what comes next.
        task1.shutdown().await.unwrap();
        for e in call("n2-after", 9_000_000) {
            writer2.append(e).await.unwrap();
        }
        writer2.committed().wait_for(|c| *c == 5).await.unwrap();
        assert!(outbox2.is_consumer().await);
        assert_eq!(store.count_events(None).await.unwrap(), 110, "backend {n}");
        task2.shutdown().await.unwrap();
        assert_eq!(
            state.stream_pending(OUTBOX_STREAM, OUTBOX_GROUP).await.unwrap(),
            0
        );
        store.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_writes_what_a_dead_holder_was_given_and_never_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    for (n, state) in backends("takeover").await.into_iter().enumerate() {
        let store = sqlite(dir.path(), &format!("takeover-{n}.db")).await;
        // The holder that dies: it takes the role, is given the entry, and never acknowledges it.
        let dead = StreamOutbox::new(state.clone(), "dead")
            .await
            .unwrap()
            .with_lease_ttl(Duration::from_millis(300));
        let mut framed = Vec::new();
        for e in call("orphan", 0) {
            journal::encode_record(&serde_json::to_vec(&e).unwrap(), &mut framed).unwrap();
        }
        dead.append(framed).await.unwrap();
        let given = dead.read(10, Duration::ZERO).await.unwrap();
        assert_eq!(given.len(), 1);
        assert_eq!(
            state.stream_pending(OUTBOX_STREAM, OUTBOX_GROUP).await.unwrap(),
            1
        );
        drop(dead);

        let standby = Arc::new(StreamOutbox::new(state.clone(), "standby").await.unwrap());
        let (writer, task) = writer(&store, dir.path(), standby.clone()).await;
        // Once the dead holder's lease lapses the standby takes the role and the orphaned entry.
        tokio::time::timeout(Duration::from_secs(10), writer.committed().wait_for(|c| *c == 5))
            .await
            .expect("the standby took over within the lease time")
            .unwrap();
        let row = store
            .interaction(&InteractionId::new("orphan").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.talk_ms, Some(30_000), "backend {n}");
        task.shutdown().await.unwrap();
        assert_eq!(
            state.stream_pending(OUTBOX_STREAM, OUTBOX_GROUP).await.unwrap(),
            0
        );
        store.close().await;
    }
}

const CHILD_ROLE: &str = "CRM_OUTBOX_CRASH_CHILD";
const KILL_TEST: &str = "kill9_of_an_appending_node_loses_no_acknowledged_event";
const KILL_AFTER_ACKS: usize = 5_000;
const CALLERS: usize = 16;
/// The role lapses this long after a holder dies.
const CRASH_LEASE_TTL: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_an_appending_node_loses_no_acknowledged_event() {
    if let Ok(spec) = std::env::var(CHILD_ROLE) {
        run_child(&spec).await;
        return;
    }
    if redis_url().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let prefix = format!("crmoutboxkill{}", std::process::id());
    CrmStore::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap()
        .migrate()
        .await
        .unwrap();

    let spec = format!("{}|{prefix}", db.display());
    let acked = testkit::crash::run_and_kill(KILL_TEST, [(CHILD_ROLE, spec)], KILL_AFTER_ACKS);

    // A new node on the same Redis and database: it takes the role once the dead one's lapses,
    // takes over what the dead one was given, and writes the rest.
    let state = redis_state(&prefix).await;
    let store = CrmStore::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap();
    let outbox = Arc::new(
        StreamOutbox::new(state.clone(), "node")
            .await
            .unwrap()
            .with_lease_ttl(CRASH_LEASE_TTL),
    );
    let (_writer, task) = writer(&store, dir.path(), outbox.clone()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Once it holds the role and nothing delivered is unacknowledged, its shutdown drains the rest.
    loop {
        let pending = state.stream_pending(OUTBOX_STREAM, OUTBOX_GROUP).await.unwrap();
        if outbox.is_consumer().await && pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new node never took over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = task.shutdown().await.unwrap();
    assert_eq!(
        state.stream_len(OUTBOX_STREAM).await.unwrap(),
        0,
        "the stream is drained and trimmed"
    );

    let stored = store.event_keys().await.unwrap();
    let unique: HashSet<&(String, i64)> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "an event is stored twice");
    let missing = acked.iter().filter(|k| !unique.contains(k)).count();
    println!(
        "acknowledged {}, stored {}, written by the new node {}, missing {missing}",
        acked.len(),
        stored.len(),
        stats.committed
    );
    assert!(stats.committed > 0, "the new node wrote what the dead one left");
    assert_eq!(missing, 0, "acknowledged events lost");
    assert!(acked.len() >= KILL_AFTER_ACKS);
    let complete = acked
        .iter()
        .find(|(id, seq)| *seq == 4 && (0..4).all(|s| acked.contains(&(id.clone(), s))))
        .unwrap();
    let row = store
        .interaction(&InteractionId::new(&complete.0).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.wait_ms, row.talk_ms, row.wrap_ms),
        (Some(2_000), Some(30_000), Some(5_000))
    );
    store.close().await;
}

/// The child: a node appending calls as fast as the outbox acknowledges them, and writing SQL too
/// (it holds the role), until it is killed.
async fn run_child(spec: &str) {
    let (db, prefix) = spec.split_once('|').unwrap();
    let state = redis_state(prefix).await;
    let store = CrmStore::connect(&format!("sqlite:{db}")).await.unwrap();
    let outbox = Arc::new(
        StreamOutbox::new(state, "node")
            .await
            .unwrap()
            .with_lease_ttl(CRASH_LEASE_TTL),
    );
    let dir = tempfile::tempdir().unwrap();
    let (writer, _task) = writer(&store, dir.path(), outbox).await;
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let writer = writer.clone();
        callers.push(tokio::spawn(async move {
            for n in (caller..).step_by(CALLERS) {
                let id = format!("crash-{n}");
                for e in call(&id, n as i64 * 100_000) {
                    let seq = e.seq;
                    writer.append(e).await.unwrap();
                    println!("{}", testkit::crash::ack_line(&id, seq));
                }
            }
        }));
    }
    for c in callers {
        c.await.unwrap();
    }
}
