//! Recordings are under retention like the rows that point to them, with the real binary on SQLite
//! and on PostgreSQL: a node started with `[crm] retention_days = 30` masks an interaction that ended
//! 400 days ago (numbers and recording path gone from its row, the figures kept) and deletes its
//! recording, deletes an old recording no row names, and keeps a recent interaction and its
//! recording as they were. The database folder and file it works on are private (0700 / 0600).

use crm_store::CrmStore;
use domain::{
    Channel, Direction, EndedBy, InteractionEvent, InteractionEventKind, InteractionId, Pii, Timestamp,
};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};
use system_tests::*;

const DAY: Duration = Duration::from_secs(86_400);

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `line` without its terminal colours.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // An SGR sequence: ESC [ ... m.
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn event(id: &str, seq: u32, at: Timestamp, kind: InteractionEventKind) -> InteractionEvent {
    InteractionEvent {
        interaction: InteractionId::new(id).expect("id"),
        seq,
        at,
        kind,
    }
}

/// An inbound call that ended at `ended` and was recorded to `recording`.
fn recorded_call(id: &str, ended: Timestamp, recording: &Path) -> Vec<InteractionEvent> {
    let arrived = ended - Duration::from_secs(60);
    vec![
        event(
            id,
            0,
            arrived,
            InteractionEventKind::Arrived {
                channel: Channel::Voice,
                direction: Direction::Inbound,
                from: Pii::new("+14155550100".into()),
                to: Pii::new("+18005550199".into()),
            },
        ),
        event(
            id,
            1,
            arrived + Duration::from_secs(1),
            InteractionEventKind::Recording {
                path: recording.display().to_string(),
            },
        ),
        event(
            id,
            2,
            ended,
            InteractionEventKind::Ended {
                by: EndedBy::Caller,
                reason: "caller hung up".into(),
                quality: None,
            },
        ),
    ]
}

fn wav(path: &Path, written: SystemTime) {
    std::fs::write(path, b"RIFF\0\0\0\0WAVE").expect("write recording");
    std::fs::File::options()
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(written))
        .expect("set the recording's time");
}

/// Seeds `store`, starts a node on the same database with a 30-day retention, waits for its first
/// retention run and checks what it left. `rt` is the runtime `store` was opened on: a pool's
/// connections die with the runtime that made them.
fn run(rt: &tokio::runtime::Runtime, database_url: &str, store: CrmStore, dir: tempfile::TempDir, tag: &str) {
    let recordings = dir.path().join("recordings");
    std::fs::create_dir_all(&recordings).expect("recordings folder");
    let old = recordings.join("old-call.wav");
    let recent = recordings.join("recent-call.wav");
    let orphan = recordings.join("orphan.wav");
    let now = Timestamp::now_utc();
    let long_ago = SystemTime::now() - 400 * DAY;
    wav(&old, long_ago);
    wav(&recent, SystemTime::now() - DAY);
    wav(&orphan, long_ago);
    rt.block_on(async {
        let mut events = recorded_call("old-call", now - 400 * DAY, &old);
        events.extend(recorded_call("recent-call", now - DAY, &recent));
        store.insert_events_batch(&events).await.expect("seed");
        store.close().await;
    });

    let extra = format!(
        "[crm]\ndatabase_url = \"{database_url}\"\nretention_days = 30\n\n[rtp]\nrecordings_dir = \"{}\"\n",
        recordings.display()
    );
    let flows = test_flows();
    let platform = Platform::start_in(dir, &extra, flows.path());
    // The job runs once at start and logs what it did.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !platform.log().contains("retention applied") {
        assert!(
            Instant::now() < deadline,
            "{tag}: no retention run\n{}",
            platform.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = platform
        .log()
        .lines()
        .find(|l| l.contains("retention applied"))
        .map(plain)
        .unwrap_or_default();
    assert!(
        line.contains("interactions=1") && line.contains("recordings=2"),
        "{tag}: {line}"
    );

    assert!(!old.exists(), "{tag}: the expired call's recording is deleted");
    assert!(
        !orphan.exists(),
        "{tag}: an old recording no row names is deleted"
    );
    assert!(recent.exists(), "{tag}: a recording within the period is kept");

    let store = rt.block_on(async { CrmStore::connect(database_url).await.expect("crm") });
    rt.block_on(async {
        let row = store
            .interaction(&InteractionId::new("old-call").expect("id"))
            .await
            .expect("read")
            .expect("the row stays for the reports");
        assert_eq!(
            (row.caller_number.is_none(), row.recording_path.is_none()),
            (true, true),
            "{tag}: the expired row keeps neither the number nor the recording"
        );
        assert!(row.masked_at.is_some(), "{tag}: the row is marked masked");
        assert!(row.ended_at.is_some(), "{tag}: figures stay for reports");
        let kept = store
            .interaction(&InteractionId::new("recent-call").expect("id"))
            .await
            .expect("read")
            .expect("row");
        assert_eq!(
            kept.recording_path.as_deref(),
            Some(recent.display().to_string().as_str()),
            "{tag}: a recent row still points at its recording"
        );
        assert!(kept.caller_number.is_some(), "{tag}");
        let audit = store.audit_log(now - DAY).await.expect("audit");
        assert!(
            audit
                .iter()
                .any(|e| e.action == "retention.apply" && e.detail.contains("recordings=1")),
            "{tag}: the run is audited"
        );
        store.close().await;
    });
    // A SQLite database and its folder are the platform user's only.
    if let Some(file) = database_url.strip_prefix("sqlite:") {
        let file = Path::new(file);
        assert_eq!(mode(file), 0o600, "{}", file.display());
        let folder = file.parent().expect("folder");
        assert_eq!(mode(folder), 0o700, "{}", folder.display());
    }
    drop(platform);
}

#[test]
fn recordings_go_with_their_rows_on_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("data").join("crm.db");
    let url = format!("sqlite:{}", db.display());
    let rt = runtime();
    let store = rt.block_on(async {
        let store = CrmStore::connect(&url).await.expect("sqlite");
        store.migrate().await.expect("migrate");
        store
    });
    run(&rt, &url, store, dir, "sqlite");
}

#[test]
fn recordings_go_with_their_rows_on_postgresql() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("DATABASE_URL unset: the PostgreSQL run is SKIPPED");
        assert!(std::env::var("CI").is_err(), "CI must provide DATABASE_URL");
        return;
    };
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Its own schema in the shared test database (left for inspection; the name is unique).
    let schema = format!("retention_{}_{nanos}", std::process::id());
    let rt = runtime();
    let store = rt.block_on(async {
        let store = CrmStore::connect_in_schema(&url, &schema)
            .await
            .expect("postgres schema");
        store.migrate().await.expect("migrate");
        store
    });
    let sep = if url.contains('?') { '&' } else { '?' };
    let in_schema = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    run(
        &rt,
        &in_schema,
        store,
        tempfile::tempdir().expect("tempdir"),
        "postgres",
    );
}
