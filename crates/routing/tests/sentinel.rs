//! The router on Redis behind Sentinel, against real processes started by the test on free ports
//! (a primary, a replica, two sentinels): a forced failover under load loses no caller's place and
//! no confirmed input, and makes no phone carry two calls.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::procs;
use state_store::{StateConfig, StateStore};
use std::sync::Arc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_failover_under_load_loses_no_place_and_no_input() {
    if !procs::require(&["redis-server", "redis-sentinel"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let one = procs::server(dir.path(), "one", None, false);
    let two = procs::server(dir.path(), "two", Some(one.port), false);
    procs::wait_synced(one.port);
    let service = "cc-routing";
    let s1 = procs::sentinel(dir.path(), "s1", service, one.port);
    let s2 = procs::sentinel(dir.path(), "s2", service, one.port);
    procs::wait_replica_known(s1.port, service);
    let config = StateConfig::sentinel(
        vec![s1.url(), s2.url()],
        service,
        common::unique_prefix("sentinel"),
        1,
    );
    let (p1, p2, sentinel) = (one.port, two.port, s1.port);
    // Each disruption moves the primary to the other server.
    let flips = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let disrupt = Arc::new(move || {
        let n = flips.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let to = if n.is_multiple_of(2) { p2 } else { p1 };
        procs::wait_replica_known(sentinel, service);
        procs::failover(sentinel, service, to);
    });
    common::load::disrupted_cluster(
        async || {
            StateStore::connect(&config)
                .await
                .expect("connect through the sentinels")
        },
        disrupt,
    )
    .await;
    drop((s1, s2, one, two));
}
