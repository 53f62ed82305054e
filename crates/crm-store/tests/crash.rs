//! kill -9 under load loses no acknowledged event. The test re-runs its own executable as a child
//! that appends events and prints each acknowledgement; the parent SIGKILLs it mid-load, restarts a
//! writer on the same journal and database, and counts: every acknowledged event is stored exactly once.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use common::{Target, ev, targets};
use crm_store::{EventWriter, WriterConfig};
use std::collections::HashSet;

const CHILD_ROLE: &str = "CRM_CRASH_CHILD_JOURNAL";
const TEST_NAME: &str = "kill9_loses_no_acknowledged_event";
/// Acknowledgements the parent waits for before the kill.
const KILL_AFTER_ACKS: usize = 10_000;
/// Upper bound of the child's load, far above what it reaches before the kill.
const CHILD_MAX_CALLS: usize = 200_000;
const CALLERS: usize = 16;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_loses_no_acknowledged_event() {
    if let Ok(journal_dir) = std::env::var(CHILD_ROLE) {
        run_child(journal_dir.into()).await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for target in targets(TEST_NAME, dir.path()) {
        // Migrate once up front so the child starts straight into the load.
        target.store().await.close().await;
        let journal_dir = dir.path().join(common::unique("journal"));
        let mut envs: Vec<(&str, String)> = target.to_env();
        envs.push((CHILD_ROLE, journal_dir.display().to_string()));
        let acked = testkit::crash::run_and_kill(TEST_NAME, envs, KILL_AFTER_ACKS);

        let store = target.store().await;
        let (_writer, task) = EventWriter::start(store.clone(), WriterConfig::new(&journal_dir))
            .await
            .unwrap();
        let stats = task.shutdown().await.unwrap();

        let stored: Vec<(String, i64)> = store.event_keys().await.unwrap();
        let unique: HashSet<&(String, i64)> = stored.iter().collect();
        assert_eq!(
            unique.len(),
            stored.len(),
            "{}: an event is stored twice",
            target.label()
        );
        let missing = acked.iter().filter(|k| !unique.contains(k)).count();
        println!(
            "{}: acknowledged {}, stored {}, journal replayed {} of which {} were not yet in SQL, missing {missing}",
            target.label(),
            acked.len(),
            stored.len(),
            stats.replayed,
            stats.replay_inserted,
        );
        assert_eq!(missing, 0, "{}: acknowledged events lost", target.label());
        assert!(acked.len() >= KILL_AFTER_ACKS);

        // Calls whose five events were all acknowledged fold to exactly one call's figures.
        let complete: HashSet<&String> = acked
            .iter()
            .filter(|(_, seq)| *seq == 4)
            .map(|(id, _)| id)
            .filter(|id| (0..5).all(|s| acked.contains(&((*id).clone(), s))))
            .collect();
        assert!(!complete.is_empty());
        for id in complete.iter().take(50) {
            let row = store.interaction(&ev::id(id)).await.unwrap().unwrap();
            assert_eq!(
                (row.wait_ms, row.talk_ms, row.wrap_ms),
                (Some(2_000), Some(30_000), Some(5_000))
            );
        }
        store.close().await;
        target.cleanup().await;
    }
}

/// The child: many callers appending whole calls as fast as the writer acknowledges them.
async fn run_child(journal_dir: std::path::PathBuf) {
    let target = Target::from_env().expect("child needs its database in the environment");
    let store = target.store().await;
    let (writer, _task) = EventWriter::start(store, WriterConfig::new(journal_dir))
        .await
        .unwrap();
    let mut callers = Vec::new();
    for caller in 0..CALLERS {
        let writer = writer.clone();
        callers.push(tokio::spawn(async move {
            for n in (caller..CHILD_MAX_CALLS).step_by(CALLERS) {
                let id = format!("crash-{n}");
                let t0 = n as i64 * 1_000;
                for e in ev::answered_call(&id, "+14155550100", "sales", "dave", t0, 2_000, 30_000) {
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
