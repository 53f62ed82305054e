//! The router on a Redis that is killed (SIGKILL) and restarted with its append-only file
//! (`appendonly yes`, `appendfsync always`), a throwaway server started by the test on a free port:
//! the state is reloaded and nothing is lost, under load and while callers wait.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::procs;
use state_store::{StateConfig, StateStore};
use std::sync::{Arc, Mutex};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_with_its_append_only_file_loses_nothing() {
    if !procs::require(&["redis-server"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = procs::server(dir.path(), "aof", None, true);
    let config = StateConfig::redis(server.url(), common::unique_prefix("aof"));
    let server = Arc::new(Mutex::new(server));
    let disrupt = {
        let server = server.clone();
        Arc::new(move || server.lock().unwrap().restart())
    };
    common::load::disrupted_cluster(
        async || StateStore::connect(&config).await.expect("connect"),
        disrupt,
    )
    .await;
}
