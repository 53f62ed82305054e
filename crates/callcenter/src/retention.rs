//! The retention job of a node (`[crm] retention_days`): interactions older than the period lose their
//! personal data ([`crm_store::CrmStore::apply_retention`]) and the recordings that belonged to them go with
//! them, so a recording never outlives the row that points to it.
//!
//! Two passes, both confined to this node's `[rtp] recordings_dir` (nothing outside it is ever deleted):
//! 1. the files the masked rows named, when they are in this node's folder;
//! 2. every WAV in the folder last written before the cutoff: recordings of rows another node masked
//!    (each node keeps its own recordings), and files no row names (a node killed before the event was
//!    written). A recording is closed when its call ends, so its time is its row's end time.
//!
//! Every node runs the job; masking is idempotent, so nodes racing on the same rows do no harm.

use crm_store::CrmStore;
use domain::Timestamp;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the job runs (and once at start).
pub(crate) const EVERY: Duration = Duration::from_secs(6 * 3600);

/// What one run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RetentionReport {
    pub(crate) interactions_masked: u64,
    pub(crate) recordings_deleted: u64,
    /// Files the rows named that were not in this node's folder (another node's, or already gone).
    pub(crate) recordings_elsewhere: u64,
}

/// Whether `path` lies inside `dir` (both resolved; a path that cannot be resolved is not inside).
fn inside(dir: &Path, path: &Path) -> Option<PathBuf> {
    let dir = dir.canonicalize().ok()?;
    let path = path.canonicalize().ok()?;
    path.starts_with(&dir).then_some(path)
}

fn delete(path: &Path) -> bool {
    match std::fs::remove_file(path) {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "expired recording not deleted");
            false
        }
    }
}

/// One run at `now`: masks what is older than `days` and deletes its recordings from `recordings_dir`.
pub(crate) async fn run_once(
    crm: &CrmStore,
    days: u32,
    recordings_dir: &Path,
    now: Timestamp,
) -> Result<RetentionReport, String> {
    let outcome = crm
        .apply_retention(now, days)
        .await
        .map_err(|e| format!("retention: {e}"))?;
    let mut report = RetentionReport {
        interactions_masked: outcome.interactions_masked,
        ..RetentionReport::default()
    };
    for path in &outcome.recordings_to_delete {
        match inside(recordings_dir, path) {
            Some(path) => report.recordings_deleted += u64::from(delete(&path)),
            None => report.recordings_elsewhere += 1,
        }
    }
    let cutoff = crm_store::retention_cutoff(now, days);
    let cutoff =
        SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(cutoff.as_millis()).unwrap_or(0));
    if let Ok(entries) = std::fs::read_dir(recordings_dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let expired = entry
                .metadata()
                .ok()
                .filter(|m| m.is_file())
                .and_then(|m| m.modified().ok())
                .is_some_and(|written| written < cutoff);
            if expired && path.extension().is_some_and(|e| e == "wav") {
                report.recordings_deleted += u64::from(delete(&path));
            }
        }
    }
    Ok(report)
}

/// Runs the job now and every [`EVERY`] until `shutdown`.
pub(crate) fn spawn(
    crm: CrmStore,
    days: u32,
    recordings_dir: PathBuf,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match run_once(&crm, days, &recordings_dir, Timestamp::now_utc()).await {
                Ok(r) => info!(
                    days,
                    interactions = r.interactions_masked,
                    recordings = r.recordings_deleted,
                    elsewhere = r.recordings_elsewhere,
                    "retention applied"
                ),
                Err(e) => warn!(error = %e, "retention run failed; next run in {} h", EVERY.as_secs() / 3600),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::{Channel, Direction, EndedBy, InteractionEvent, InteractionEventKind, InteractionId, Pii};

    const DAY: i64 = 86_400_000;

    fn event(id: &str, seq: u32, ms: i64, kind: InteractionEventKind) -> InteractionEvent {
        InteractionEvent {
            interaction: InteractionId::new(id).expect("id"),
            seq,
            at: Timestamp::from_millis(ms),
            kind,
        }
    }

    fn call_with_recording(id: &str, at: i64, path: &Path) -> Vec<InteractionEvent> {
        vec![
            event(
                id,
                0,
                at,
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
                at + 1_000,
                InteractionEventKind::Recording {
                    path: path.display().to_string(),
                },
            ),
            event(
                id,
                2,
                at + 2_000,
                InteractionEventKind::Ended {
                    by: EndedBy::Caller,
                    reason: "caller hung up".into(),
                    quality: None,
                },
            ),
        ]
    }

    #[tokio::test]
    async fn a_recording_goes_when_its_interaction_expires_and_nothing_outside_the_folder_is_touched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recordings = dir.path().join("recordings");
        std::fs::create_dir_all(&recordings).expect("dir");
        let old = recordings.join("old.wav");
        let new = recordings.join("new.wav");
        let outside = dir.path().join("outside.wav");
        for f in [&old, &new, &outside] {
            std::fs::write(f, b"RIFF").expect("write");
        }
        let crm = CrmStore::connect(&format!("sqlite:{}/cc.db", dir.path().display()))
            .await
            .expect("crm");
        crm.migrate().await.expect("migrate");
        // Retention is judged by the rows' times; the files were just written, so only the rows
        // (not the second pass) can make these go.
        let now = Timestamp::from_millis(100 * DAY);
        let mut events = call_with_recording("old-call", 10 * DAY, &old);
        events.extend(call_with_recording("new-call", 95 * DAY, &new));
        events.extend(call_with_recording("stray-call", 10 * DAY, &outside));
        crm.insert_events_batch(&events).await.expect("insert");

        let report = run_once(&crm, 30, &recordings, now).await.expect("run");
        assert_eq!(report.interactions_masked, 2, "{report:?}");
        assert_eq!(report.recordings_deleted, 1, "{report:?}");
        assert_eq!(
            report.recordings_elsewhere, 1,
            "the file outside the folder: {report:?}"
        );
        assert!(!old.exists(), "the expired interaction's recording is deleted");
        assert!(new.exists(), "a recording within the period is kept");
        assert!(
            outside.exists(),
            "nothing outside the recordings folder is deleted"
        );
        let row = crm
            .interaction(&InteractionId::new("old-call").expect("id"))
            .await
            .expect("row")
            .expect("row exists");
        assert_eq!(row.recording_path, None, "the row no longer points at it");

        // Again: idempotent.
        let again = run_once(&crm, 30, &recordings, now).await.expect("run");
        assert_eq!(again, RetentionReport::default());
        crm.close().await;
    }

    #[tokio::test]
    async fn a_recording_no_row_names_goes_once_it_is_older_than_the_period() {
        let dir = tempfile::tempdir().expect("tempdir");
        let orphan = dir.path().join("orphan.wav");
        let notes = dir.path().join("notes.txt");
        std::fs::write(&orphan, b"RIFF").expect("write");
        std::fs::write(&notes, b"not a recording").expect("write");
        let crm = CrmStore::connect(&format!("sqlite:{}/cc.db", dir.path().display()))
            .await
            .expect("crm");
        crm.migrate().await.expect("migrate");
        // Seen from 31 days in the future, the file just written is past a 30-day period.
        let later = Timestamp::now_utc() + Duration::from_secs(31 * 86_400);
        let report = run_once(&crm, 30, dir.path(), Timestamp::now_utc())
            .await
            .expect("run");
        assert_eq!(report.recordings_deleted, 0, "within the period");
        assert!(orphan.exists());
        let report = run_once(&crm, 30, dir.path(), later).await.expect("run");
        assert_eq!(report.recordings_deleted, 1);
        assert!(!orphan.exists());
        assert!(notes.exists(), "only recordings (.wav) are swept");
        crm.close().await;
    }
}
