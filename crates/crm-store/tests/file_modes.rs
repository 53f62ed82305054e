//! The CRM store's files are private: the SQLite database with its -wal and -shm files 0600, the
//! journal folder 0700 and its files 0600, whatever the process umask; an existing database that
//! others could read is narrowed at start.

#![cfg(unix)]

mod common;

use common::ev;
use crm_store::{CrmStore, EventWriter, WriterConfig};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn the_database_and_the_journal_are_created_private() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let db = data.join("crm.db");
    let store = CrmStore::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let journal = data.join("journal");
    let (writer, task) = EventWriter::start(store.clone(), WriterConfig::new(&journal))
        .await
        .unwrap();
    for e in ev::answered_call("c1", "(415) 555-0100", "sales", "alice", 1_000_000, 4_000, 60_000) {
        writer.append(e).await.unwrap();
    }
    // Written through to SQL, so the WAL exists.
    let mut committed = writer.committed();
    while *committed.borrow() < 5 {
        committed.changed().await.unwrap();
    }
    assert_eq!(mode(&data), 0o700, "data folder");
    for file in ["crm.db", "crm.db-wal", "crm.db-shm"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&journal), 0o700, "journal folder");
    let mut journal_files = 0;
    for entry in std::fs::read_dir(&journal).unwrap().flatten() {
        journal_files += 1;
        assert_eq!(mode(&entry.path()), 0o600, "{}", entry.path().display());
    }
    assert!(journal_files >= 2, "a segment and the lock");
    drop(writer);
    task.shutdown().await.unwrap();
    store.close().await;

    // A database made world-readable (as older versions did) is narrowed when opened.
    for file in ["crm.db", "crm.db-wal", "crm.db-shm"] {
        let path = data.join(file);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
    let store = CrmStore::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap();
    assert_eq!(mode(&db), 0o600);
    store.close().await;
}
