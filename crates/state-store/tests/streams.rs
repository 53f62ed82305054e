//! The streams of the state store, run against every backend like `suite.rs`: consumer groups and
//! the entries of a crashed consumer, blocking reads, reading from a position, capped streams, and
//! the commit of a batch under a lease (the router's journal).

// The suite's async bodies are plain functions called by the generated tests, which the clippy.toml
// test exemption does not recognise; a failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::Harness;
use domain::Timestamp;
use state_store::StateError;
use std::time::Duration;

on_both_backends!(
    stream_entries_of_a_crashed_consumer_are_claimed,
    stream_blocking_read_wakes_on_append,
    stream_read_follows_from_a_position,
    a_capped_stream_keeps_its_newest_entries,
    stream_commit_applies_whole_under_the_lease,
    stream_commit_needs_the_lease_as_granted,
    stream_commit_applies_only_where_the_writer_saw_the_stream_end,
    a_deleted_stream_goes_with_its_groups,
);

fn t(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs)
}

async fn stream_entries_of_a_crashed_consumer_are_claimed(h: Harness) {
    let s = &h.store;
    s.stream_ensure_group("crm-outbox", "writers").await.unwrap();
    s.stream_ensure_group("crm-outbox", "audit").await.unwrap();
    let mut appended = Vec::new();
    for i in 0..3 {
        appended.push(
            s.stream_append("crm-outbox", format!("event-{i}").as_bytes())
                .await
                .unwrap(),
        );
    }
    // Writer A takes two entries and dies before acknowledging them.
    let taken = s
        .stream_read_group("crm-outbox", "writers", "writer-a", 2, None)
        .await
        .unwrap();
    assert_eq!(
        taken.iter().map(|e| e.payload.as_slice()).collect::<Vec<_>>(),
        [b"event-0", b"event-1"]
    );
    assert_eq!(taken[0].id, appended[0]);
    assert_eq!(s.stream_pending("crm-outbox", "writers").await.unwrap(), 2);

    // Writer B gets only what nobody was given, then claims A's stale entries.
    let b_new = s
        .stream_read_group("crm-outbox", "writers", "writer-b", 10, None)
        .await
        .unwrap();
    assert_eq!(b_new.len(), 1);
    assert_eq!(b_new[0].payload, b"event-2");
    assert!(
        s.stream_read_group("crm-outbox", "writers", "writer-b", 10, None)
            .await
            .unwrap()
            .is_empty()
    );
    // Entries delivered moments ago are not idle for an hour: nothing to claim yet.
    assert!(
        s.stream_claim("crm-outbox", "writers", "writer-b", Duration::from_secs(3600), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let claimed = s
        .stream_claim("crm-outbox", "writers", "writer-b", Duration::ZERO, 10)
        .await
        .unwrap();
    let mut claimed_payloads: Vec<_> = claimed.iter().map(|e| e.payload.clone()).collect();
    claimed_payloads.sort();
    assert_eq!(
        claimed_payloads,
        [b"event-0".to_vec(), b"event-1".to_vec(), b"event-2".to_vec()]
    );

    let ids: Vec<_> = claimed.iter().map(|e| e.id.clone()).collect();
    assert_eq!(s.stream_ack("crm-outbox", "writers", &ids).await.unwrap(), 3);
    assert_eq!(
        s.stream_ack("crm-outbox", "writers", &ids).await.unwrap(),
        0,
        "acknowledged once"
    );
    assert_eq!(s.stream_pending("crm-outbox", "writers").await.unwrap(), 0);
    assert!(
        s.stream_claim("crm-outbox", "writers", "writer-b", Duration::ZERO, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // A second group sees the whole stream independently of the first.
    let audit = s
        .stream_read_group("crm-outbox", "audit", "auditor", 10, None)
        .await
        .unwrap();
    assert_eq!(audit.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), appended);
    assert_eq!(s.stream_pending("crm-outbox", "audit").await.unwrap(), 3);
    assert_eq!(s.stream_pending("crm-outbox", "no-such-group").await.unwrap(), 0);

    // Trimming keeps what the audit group still owes, then frees everything once it is done.
    assert_eq!(s.stream_len("crm-outbox").await.unwrap(), 3);
    assert_eq!(
        s.stream_ack("crm-outbox", "audit", &ids_of(&audit[..1]))
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.stream_trim_consumed("crm-outbox").await.unwrap(), 1);
    assert_eq!(s.stream_len("crm-outbox").await.unwrap(), 2);
    assert_eq!(
        s.stream_ack("crm-outbox", "audit", &ids_of(&audit[1..]))
            .await
            .unwrap(),
        2
    );
    assert_eq!(s.stream_trim_consumed("crm-outbox").await.unwrap(), 2);
    assert_eq!(s.stream_len("crm-outbox").await.unwrap(), 0);
    // New entries after a trim are delivered as usual.
    s.stream_append("crm-outbox", b"event-3").await.unwrap();
    let next = s
        .stream_read_group("crm-outbox", "writers", "writer-b", 10, None)
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(next[0].payload, b"event-3");
    assert_eq!(
        s.stream_trim_consumed("crm-outbox").await.unwrap(),
        0,
        "still pending for both groups"
    );
    assert_eq!(s.stream_trim_consumed("no-such-stream").await.unwrap(), 0);
    assert_eq!(s.stream_len("no-such-stream").await.unwrap(), 0);
}

fn ids_of(entries: &[state_store::StreamEntry]) -> Vec<state_store::StreamEntryId> {
    entries.iter().map(|e| e.id.clone()).collect()
}

async fn stream_blocking_read_wakes_on_append(h: Harness) {
    let s = h.store.clone();
    s.stream_ensure_group("events", "g").await.unwrap();
    // An empty stream with a short block returns nothing.
    assert!(
        s.stream_read_group("events", "g", "c", 10, Some(Duration::from_millis(50)))
            .await
            .unwrap()
            .is_empty()
    );
    let reader = {
        let s = s.clone();
        tokio::spawn(async move {
            s.stream_read_group("events", "g", "c", 10, Some(Duration::from_secs(10)))
                .await
        })
    };
    let producer = h.reopen().await;
    producer.stream_append("events", b"wake up").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"wake up");
}

async fn a_capped_stream_keeps_its_newest_entries(h: Harness) {
    let s = h.store.clone();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            s.stream_append_capped("capped", format!("e{i}").as_bytes(), 3)
                .await
                .unwrap(),
        );
    }
    let kept = s.stream_read("capped", None, 10, None).await.unwrap();
    assert_eq!(ids_of(&kept), ids[2..].to_vec(), "the three newest, in order");
    assert_eq!(s.stream_len("capped").await.unwrap(), 3);
    // A reader that kept its position reads on from there.
    let after = s.stream_read("capped", Some(&ids[3]), 10, None).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].payload, b"e4");
}

async fn stream_read_follows_from_a_position(h: Harness) {
    let s = h.store.clone();
    assert_eq!(s.stream_last_id("events").await.unwrap(), None);
    assert!(s.stream_read("events", None, 10, None).await.unwrap().is_empty());
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            s.stream_append("events", format!("e{i}").as_bytes())
                .await
                .unwrap(),
        );
    }
    let all = s.stream_read("events", None, 10, None).await.unwrap();
    assert_eq!(ids_of(&all), ids);
    let after_first = s.stream_read("events", Some(&ids[0]), 1, None).await.unwrap();
    assert_eq!(after_first.len(), 1, "count is respected");
    assert_eq!(after_first[0].payload, b"e1");
    assert_eq!(s.stream_last_id("events").await.unwrap(), Some(ids[2].clone()));
    // Reading does not consume: a second reader sees the same entries.
    assert_eq!(s.stream_read("events", None, 10, None).await.unwrap().len(), 3);

    // A reader blocked at the end wakes on the next append from another connection.
    let reader = {
        let s = s.clone();
        let last = ids[2].clone();
        tokio::spawn(async move {
            s.stream_read("events", Some(&last), 10, Some(Duration::from_secs(10)))
                .await
        })
    };
    let producer = h.reopen().await;
    producer.stream_append("events", b"e3").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].payload, b"e3");
    // Nothing new: a short block returns empty.
    let last = s.stream_last_id("events").await.unwrap().unwrap();
    assert!(
        s.stream_read("events", Some(&last), 10, Some(Duration::from_millis(50)))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        s.stream_read(
            "events",
            Some(&state_store::StreamEntryId("nonsense".into())),
            1,
            None
        )
        .await,
        Err(StateError::Invalid { .. })
    ));
}

/// A single writer's log noticing that the store lost (or gained) entries: the commit that expects
/// the stream to end elsewhere changes nothing and says so.
async fn stream_commit_applies_only_where_the_writer_saw_the_stream_end(h: Harness) {
    let s = &h.store;
    let lease = s
        .acquire_lease("router", "leader-a", Duration::from_secs(5), t(0))
        .await
        .unwrap()
        .unwrap();
    let mut first = state_store::StreamCommit::new(lease.clone());
    first
        .expect_last("journal", None)
        .append("journal", b"batch-1".to_vec(), None);
    let ids = s.stream_commit(&first).await.unwrap();

    // Someone else's entry (what a failover that kept another history looks like).
    s.stream_append("journal", b"foreign").await.unwrap();
    let mut second = state_store::StreamCommit::new(lease.clone());
    second
        .expect_last("journal", Some(ids[0].clone()))
        .append("journal", b"batch-2".to_vec(), None)
        .append("out.node-1", b"offer".to_vec(), None)
        .put_blob("router", "confirmed", b"2".to_vec());
    match s.stream_commit(&second).await {
        Err(StateError::Diverged { stream }) => assert_eq!(stream, "journal"),
        other => panic!("expected a diverged journal, got {other:?}"),
    }
    assert_eq!(s.stream_len("journal").await.unwrap(), 2, "nothing appended");
    assert_eq!(s.stream_len("out.node-1").await.unwrap(), 0);
    assert!(s.get_blob("router", "confirmed", t(1)).await.unwrap().is_none());

    // Expecting the true end goes through; a commit with no expectation is not checked.
    let last = s.stream_last_id("journal").await.unwrap();
    second.expect_last("journal", last);
    assert_eq!(s.stream_commit(&second).await.unwrap().len(), 2);
    assert_eq!(
        s.stream_commit(&state_store::StreamCommit::new(lease.clone()))
            .await
            .unwrap(),
        Vec::<state_store::StreamEntryId>::new()
    );
    // An empty stream is expected as none.
    let mut empty = state_store::StreamCommit::new(lease);
    empty.expect_last("never-written", Some(ids[0].clone()));
    assert!(matches!(
        s.stream_commit(&empty).await,
        Err(StateError::Diverged { .. })
    ));
    empty.expect_last("never-written", None);
    s.stream_commit(&empty).await.unwrap();
}

async fn stream_commit_applies_whole_under_the_lease(h: Harness) {
    let s = &h.store;
    let ttl = Duration::from_secs(2);
    s.stream_ensure_group("in", "router").await.unwrap();
    for i in 0..3 {
        s.stream_append("in", format!("input-{i}").as_bytes())
            .await
            .unwrap();
    }
    let a = s
        .acquire_lease("router", "leader-a", ttl, t(0))
        .await
        .unwrap()
        .unwrap();
    let read = s
        .stream_read_group("in", "router", "leader-a", 2, None)
        .await
        .unwrap();
    assert_eq!(read.len(), 2);

    let mut commit = state_store::StreamCommit::new(a.clone());
    commit
        .append("journal", b"batch-1".to_vec(), None)
        .append("out.node-1", b"offer".to_vec(), Some(100))
        .append("journal", b"batch-2".to_vec(), None)
        .ack("in", "router", ids_of(&read))
        .put_blob("router", "snapshot", b"snap-1".to_vec());
    let ids = s.stream_commit(&commit).await.unwrap();
    assert_eq!(ids.len(), 3);
    let journal = s.stream_read("journal", None, 10, None).await.unwrap();
    assert_eq!(ids_of(&journal), vec![ids[0].clone(), ids[2].clone()]);
    assert_eq!(journal[1].payload, b"batch-2");
    assert_eq!(
        s.stream_read("out.node-1", None, 10, None).await.unwrap()[0].payload,
        b"offer"
    );
    assert_eq!(s.stream_pending("in", "router").await.unwrap(), 0, "acknowledged");
    assert_eq!(
        s.get_blob("router", "snapshot", t(1))
            .await
            .unwrap()
            .unwrap()
            .value,
        b"snap-1"
    );

    // Leader a stalls past its lease; b takes over and claims nothing (all acknowledged) but reads
    // the third input. a's late commit changes nothing at all.
    let b = s
        .acquire_lease("router", "leader-b", ttl, t(3))
        .await
        .unwrap()
        .unwrap();
    let third = s
        .stream_read_group("in", "router", "leader-b", 10, None)
        .await
        .unwrap();
    assert_eq!(third.len(), 1);
    let mut late = state_store::StreamCommit::new(a.clone());
    late.append("journal", b"late".to_vec(), None)
        .append("out.node-1", b"late offer".to_vec(), None)
        .ack("in", "router", ids_of(&third))
        .put_blob("router", "snapshot", b"late".to_vec())
        .delete_stream("out.node-1");
    match s.stream_commit(&late).await.unwrap_err() {
        StateError::StaleFence {
            presented, current, ..
        } => {
            assert_eq!((presented, current), (a.token, b.token));
        }
        other => panic!("expected a stale fence, got {other:?}"),
    }
    assert_eq!(s.stream_len("journal").await.unwrap(), 2);
    assert_eq!(s.stream_len("out.node-1").await.unwrap(), 1);
    assert_eq!(s.stream_pending("in", "router").await.unwrap(), 1);
    assert_eq!(
        s.get_blob("router", "snapshot", t(3))
            .await
            .unwrap()
            .unwrap()
            .value,
        b"snap-1"
    );

    // b's commit goes through: it trims the journal before its own batch and drops a node's stream.
    let mut next = state_store::StreamCommit::new(b.clone());
    next.append("journal", b"batch-3".to_vec(), None)
        .ack("in", "router", ids_of(&third))
        .delete_stream("out.node-1");
    let ids3 = s.stream_commit(&next).await.unwrap();
    let mut snap = state_store::StreamCommit::new(b.clone());
    snap.put_blob("router", "snapshot", b"snap-3".to_vec())
        .trim_before("journal", ids3[0].clone());
    assert!(s.stream_commit(&snap).await.unwrap().is_empty());
    let journal = s.stream_read("journal", None, 10, None).await.unwrap();
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0].payload, b"batch-3");
    assert_eq!(s.stream_len("out.node-1").await.unwrap(), 0);
    assert_eq!(s.stream_pending("in", "router").await.unwrap(), 0);
    assert_eq!(
        s.get_blob("router", "snapshot", t(3))
            .await
            .unwrap()
            .unwrap()
            .value,
        b"snap-3"
    );

    // A capped stream keeps about its bound (exactly in memory; Redis may keep a little more).
    let mut capped = state_store::StreamCommit::new(b.clone());
    for i in 0..300 {
        capped.append("events", format!("{i}").into_bytes(), Some(10));
    }
    s.stream_commit(&capped).await.unwrap();
    let kept = s.stream_len("events").await.unwrap();
    assert!((10..300).contains(&kept), "kept {kept}");
    assert_eq!(
        s.stream_read(
            "events",
            s.stream_last_id("events").await.unwrap().as_ref(),
            1,
            None
        )
        .await
        .unwrap()
        .len(),
        0
    );
}

async fn stream_commit_needs_the_lease_as_granted(h: Harness) {
    let s = &h.store;
    let ttl = Duration::from_secs(2);
    let a = s
        .acquire_lease("router", "leader-a", ttl, t(0))
        .await
        .unwrap()
        .unwrap();
    let mut commit = state_store::StreamCommit::new(a.clone());
    commit.append("journal", b"x".to_vec(), None);
    // A lapsed lease nobody took is still the latest grant: fencing lets it through.
    assert_eq!(s.stream_commit(&commit).await.unwrap().len(), 1);
    let a_after_lapse = s
        .acquire_lease("router", "leader-a", ttl, t(10))
        .await
        .unwrap()
        .unwrap();
    assert!(a_after_lapse.token > a.token, "a new grant after the lapse");
    assert!(matches!(
        s.stream_commit(&commit).await,
        Err(StateError::StaleFence { .. })
    ));
    // Another holder presenting the current token is refused: the record names leader-a.
    let mut impostor = state_store::StreamCommit::new(state_store::Lease {
        holder: "leader-b".into(),
        ..a_after_lapse.clone()
    });
    impostor.append("journal", b"y".to_vec(), None);
    assert!(matches!(
        s.stream_commit(&impostor).await,
        Err(StateError::StaleFence { .. })
    ));
    // A released lease fences its holder too.
    assert!(s.release_lease(&a_after_lapse).await.unwrap());
    let mut after_release = state_store::StreamCommit::new(a_after_lapse);
    after_release.append("journal", b"z".to_vec(), None);
    assert!(matches!(
        s.stream_commit(&after_release).await,
        Err(StateError::StaleFence { .. })
    ));
    assert_eq!(s.stream_len("journal").await.unwrap(), 1);
    // Names are checked before anything is sent.
    let lease = s
        .acquire_lease("router", "leader-c", ttl, t(20))
        .await
        .unwrap()
        .unwrap();
    let mut bad = state_store::StreamCommit::new(lease);
    bad.append("journal", b"ok".to_vec(), None)
        .append("bad:name", b"x".to_vec(), None);
    assert!(matches!(
        s.stream_commit(&bad).await,
        Err(StateError::Invalid { .. })
    ));
    assert_eq!(s.stream_len("journal").await.unwrap(), 1);
}

async fn a_deleted_stream_goes_with_its_groups(h: Harness) {
    let s = h.store.clone();
    s.stream_ensure_group("desk.cmds.gone", "desk").await.unwrap();
    s.stream_append("desk.cmds.gone", b"hold").await.unwrap();
    s.stream_append("desk.cmds.kept", b"hold").await.unwrap();
    assert!(s.stream_delete("desk.cmds.gone").await.unwrap());
    assert_eq!(s.stream_len("desk.cmds.gone").await.unwrap(), 0);
    assert_eq!(s.stream_pending("desk.cmds.gone", "desk").await.unwrap(), 0);
    assert!(!s.stream_delete("desk.cmds.gone").await.unwrap(), "already gone");
    assert_eq!(s.stream_len("desk.cmds.kept").await.unwrap(), 1, "others stay");
    // The group went with it: whoever reads the stream again creates both anew.
    s.stream_ensure_group("desk.cmds.gone", "desk").await.unwrap();
    s.stream_append("desk.cmds.gone", b"again").await.unwrap();
    let got = s
        .stream_read_group("desk.cmds.gone", "desk", "c", 10, None)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
}
