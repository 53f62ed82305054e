//! One behaviour suite, run against every backend: always on the in-memory store, and on Redis when
//! `REDIS_URL` is set (e.g. `REDIS_URL=redis://127.0.0.1:6379/ cargo test -p state-store`). Each Redis
//! test works under its own key prefix and deletes its keys afterwards, so tests run in parallel.

// The suite's async bodies are plain functions called by the generated tests, which the clippy.toml
// test exemption does not recognise; a failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::Harness;
use domain::{AgentId, CallId, QueueId, Timestamp};
use serde::{Deserialize, Serialize};
use state_store::{
    Aor, BatchOutcome, Binding, BlobWrite, Expect, QueueEntry, QueueOrder, RateDecision, StateError,
    TokenBucket, Transport, Versioned, WriteBatch, WriteOutcome,
};
use std::time::Duration;

on_both_backends!(
    registrations_expire_at_virtual_now,
    registrations_are_kept_per_address_of_record,
    presence_compare_and_set_detects_conflicts,
    presence_compare_and_set_is_atomic_under_contention,
    queue_keeps_callers_in_order,
    blobs_are_versioned_and_lapse_at_virtual_now,
    lease_takeover_gives_higher_token_and_fences_the_stale_holder,
    lease_renewal_and_release,
    pubsub_delivers_to_every_subscriber_of_the_topic_only,
    state_survives_reconnect,
    bad_names_are_rejected,
    rate_limits_refill_at_virtual_now,
    batches_apply_whole_or_not_at_all,
    maps_keep_fields_until_removed,
    a_map_field_is_taken_once,
);

fn t(secs: i64) -> Timestamp {
    Timestamp::from_secs(secs)
}

fn binding(contact: &str, expires_at: Timestamp, cseq: u32) -> Binding {
    Binding {
        contact: contact.to_string(),
        expires_at,
        call_id: format!("reg-{contact}"),
        cseq,
        source: "127.0.0.1:5070".parse().unwrap(),
        transport: Transport::Udp,
    }
}

fn contacts(bindings: &[Binding]) -> Vec<&str> {
    bindings.iter().map(|b| b.contact.as_str()).collect()
}

async fn registrations_expire_at_virtual_now(h: Harness) {
    let s = &h.store;
    let aor = Aor::new("sip:1001@example.com").unwrap();
    s.upsert_binding(&aor, binding("sip:1001@10.0.0.2:5060", t(1_060), 1), t(1_000))
        .await
        .unwrap();
    s.upsert_binding(&aor, binding("sip:1001@10.0.0.1:5060", t(4_600), 1), t(1_000))
        .await
        .unwrap();
    let live = s.live_bindings(&aor, t(1_000)).await.unwrap();
    assert_eq!(
        contacts(&live),
        ["sip:1001@10.0.0.1:5060", "sip:1001@10.0.0.2:5060"]
    );
    assert_eq!(
        live[1],
        binding("sip:1001@10.0.0.2:5060", t(1_060), 1),
        "stored fields come back unchanged"
    );

    // At the instant of expiry the binding is gone.
    let live = s.live_bindings(&aor, t(1_060)).await.unwrap();
    assert_eq!(contacts(&live), ["sip:1001@10.0.0.1:5060"]);
    // Purged, not hidden: going back in time does not bring it back.
    assert_eq!(s.live_bindings(&aor, t(1_000)).await.unwrap().len(), 1);

    // A refresh replaces the binding of the same contact.
    s.upsert_binding(&aor, binding("sip:1001@10.0.0.1:5060", t(8_000), 2), t(2_000))
        .await
        .unwrap();
    let live = s.live_bindings(&aor, t(5_000)).await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].cseq, 2);

    // An already lapsed binding (Expires: 0) removes the contact.
    s.upsert_binding(&aor, binding("sip:1001@10.0.0.1:5060", t(5_000), 3), t(5_000))
        .await
        .unwrap();
    assert!(s.live_bindings(&aor, t(5_000)).await.unwrap().is_empty());
}

async fn registrations_are_kept_per_address_of_record(h: Harness) {
    let s = &h.store;
    let alice = Aor::new("1001").unwrap();
    let bob = Aor::new("1002").unwrap();
    for (i, c) in ["sip:a@h1", "sip:a@h2", "sip:a@h3"].iter().enumerate() {
        s.upsert_binding(&alice, binding(c, t(100), u32::try_from(i).unwrap()), t(0))
            .await
            .unwrap();
    }
    s.upsert_binding(&bob, binding("sip:b@h1", t(100), 1), t(0))
        .await
        .unwrap();

    assert!(s.remove_binding(&alice, "sip:a@h2").await.unwrap());
    assert!(
        !s.remove_binding(&alice, "sip:a@h2").await.unwrap(),
        "second removal finds nothing"
    );
    assert_eq!(
        contacts(&s.live_bindings(&alice, t(1)).await.unwrap()),
        ["sip:a@h1", "sip:a@h3"]
    );

    assert_eq!(s.remove_all_bindings(&alice).await.unwrap(), 2);
    assert!(s.live_bindings(&alice, t(1)).await.unwrap().is_empty());
    assert_eq!(
        contacts(&s.live_bindings(&bob, t(1)).await.unwrap()),
        ["sip:b@h1"]
    );
    assert_eq!(s.remove_all_bindings(&alice).await.unwrap(), 0);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Presence {
    state: String,
    since_ms: i64,
}

fn presence(state: &str, since_ms: i64) -> Presence {
    Presence {
        state: state.to_string(),
        since_ms,
    }
}

async fn presence_compare_and_set_detects_conflicts(h: Harness) {
    let s = &h.store;
    let anna = AgentId::new("anna").unwrap();
    let ben = AgentId::new("ben").unwrap();

    assert_eq!(s.get_presence::<Presence>(&anna).await.unwrap(), None);
    let v1 = s.put_presence(&anna, &presence("Available", 1)).await.unwrap();
    let got = s.get_presence::<Presence>(&anna).await.unwrap().unwrap();
    assert_eq!(
        got,
        Versioned {
            version: v1,
            value: presence("Available", 1)
        }
    );

    // Two writers read v1; the first wins, the second is told the current version.
    let won = s
        .cas_presence(&anna, Expect::Version(v1), &presence("Reserved", 2))
        .await
        .unwrap();
    let v2 = won.version().expect("first writer wins");
    assert!(v2 > v1);
    let lost = s
        .cas_presence(&anna, Expect::Version(v1), &presence("NotReady", 2))
        .await
        .unwrap();
    assert_eq!(lost, WriteOutcome::Conflict { current: Some(v2) });
    assert_eq!(
        s.get_presence::<Presence>(&anna).await.unwrap().unwrap().value,
        presence("Reserved", 2)
    );

    // Create-only writes.
    assert_eq!(
        s.cas_presence(&anna, Expect::Absent, &presence("LoggedOut", 3))
            .await
            .unwrap(),
        WriteOutcome::Conflict { current: Some(v2) }
    );
    assert_eq!(
        s.cas_presence(&ben, Expect::Version(v2), &presence("Available", 3))
            .await
            .unwrap(),
        WriteOutcome::Conflict { current: None }
    );
    let vb = s
        .cas_presence(&ben, Expect::Absent, &presence("Available", 3))
        .await
        .unwrap()
        .version()
        .unwrap();

    let all = s.list_presence::<Presence>().await.unwrap();
    assert_eq!(
        all,
        vec![
            (
                anna.clone(),
                Versioned {
                    version: v2,
                    value: presence("Reserved", 2)
                }
            ),
            (
                ben.clone(),
                Versioned {
                    version: vb,
                    value: presence("Available", 3)
                }
            ),
        ]
    );

    // Versions are never reused: after a delete and re-create, the old version does not match.
    assert!(s.remove_presence(&anna).await.unwrap());
    assert!(!s.remove_presence(&anna).await.unwrap());
    let v3 = s.put_presence(&anna, &presence("Available", 4)).await.unwrap();
    assert!(v3 > vb);
    assert!(matches!(
        s.cas_presence(&anna, Expect::Version(v2), &presence("x", 0))
            .await
            .unwrap(),
        WriteOutcome::Conflict { .. }
    ));
}

async fn presence_compare_and_set_is_atomic_under_contention(h: Harness) {
    // Eight writers each add 10 to a counter with read-modify-CAS loops: no increment may be lost.
    let agent = AgentId::new("counter").unwrap();
    h.store.put_presence(&agent, &0u32).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = h.reopen().await;
        let agent = agent.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u32;
            for _ in 0..10 {
                loop {
                    let cur = s.get_presence::<u32>(&agent).await.unwrap().unwrap();
                    match s
                        .cas_presence(&agent, Expect::Version(cur.version), &(cur.value + 1))
                        .await
                        .unwrap()
                    {
                        WriteOutcome::Written { .. } => break,
                        WriteOutcome::Conflict { .. } => conflicts += 1,
                    }
                }
            }
            conflicts
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        h.store.get_presence::<u32>(&agent).await.unwrap().unwrap().value,
        80
    );
}

fn entry(call: &str, order: i64, payload: &str) -> QueueEntry {
    QueueEntry {
        call: CallId::new(call).unwrap(),
        order: QueueOrder::new(order).unwrap(),
        payload: payload.as_bytes().to_vec(),
    }
}

fn calls(entries: &[QueueEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.call.as_str()).collect()
}

async fn queue_keeps_callers_in_order(h: Harness) {
    let s = &h.store;
    let sales = QueueId::new("sales").unwrap();
    let support = QueueId::new("support").unwrap();
    assert!(s.queue_list(&sales).await.unwrap().is_empty());

    assert!(s.queue_add(&sales, entry("c3", 3_000, "p3"), None).await.unwrap());
    assert!(s.queue_add(&sales, entry("c1", 1_000, "p1"), None).await.unwrap());
    assert!(
        s.queue_add(&sales, entry("c2b", 2_000, "p2b"), None)
            .await
            .unwrap()
    );
    assert!(
        s.queue_add(&sales, entry("c2a", 2_000, "p2a"), None)
            .await
            .unwrap()
    );
    // Orders beyond what a double holds approximately must come back exactly.
    assert!(
        s.queue_add(&sales, entry("big", (1 << 53) - 1, "pb"), None)
            .await
            .unwrap()
    );
    assert!(s.queue_add(&sales, entry("neg", -5, "pn"), None).await.unwrap());
    s.queue_add(&support, entry("other", 0, "x"), None).await.unwrap();

    let list = s.queue_list(&sales).await.unwrap();
    assert_eq!(
        calls(&list),
        ["neg", "c1", "c2a", "c2b", "c3", "big"],
        "by order, ties by call id"
    );
    assert_eq!(list[5].order.get(), (1 << 53) - 1);
    assert_eq!(list[2].payload, b"p2a");
    assert_eq!(s.queue_len(&sales).await.unwrap(), 6);

    // Re-adding moves the call and replaces its payload (e.g. priority raised by the IVR).
    assert!(
        !s.queue_add(&sales, entry("c3", 500, "p3-vip"), None)
            .await
            .unwrap()
    );
    let list = s.queue_list(&sales).await.unwrap();
    assert_eq!(calls(&list), ["neg", "c3", "c1", "c2a", "c2b", "big"]);
    assert_eq!(list[1].payload, b"p3-vip");

    assert!(
        s.queue_remove(&sales, &CallId::new("c1").unwrap(), None)
            .await
            .unwrap()
    );
    assert!(
        !s.queue_remove(&sales, &CallId::new("c1").unwrap(), None)
            .await
            .unwrap()
    );
    assert_eq!(s.queue_len(&sales).await.unwrap(), 5);
    assert_eq!(s.queue_len(&support).await.unwrap(), 1);
}

async fn blobs_are_versioned_and_lapse_at_virtual_now(h: Harness) {
    let s = &h.store;
    let ttl = Duration::from_secs(30);
    let v1 = s
        .put_blob(
            "ivr-session",
            "call-1",
            b"menu=main",
            &BlobWrite::new().ttl(ttl),
            t(100),
        )
        .await
        .unwrap()
        .version()
        .unwrap();
    let got = s
        .get_blob("ivr-session", "call-1", t(129))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        Versioned {
            version: v1,
            value: b"menu=main".to_vec()
        }
    );
    assert_eq!(
        s.get_blob("ivr-session", "call-1", t(130)).await.unwrap(),
        None,
        "lapsed at now + ttl"
    );
    assert_eq!(s.get_blob("other-ns", "call-1", t(100)).await.unwrap(), None);

    // Once lapsed it counts as absent for a create-only write.
    let v2 = s
        .put_blob(
            "ivr-session",
            "call-1",
            b"menu=billing",
            &BlobWrite::new().expect(Expect::Absent),
            t(131),
        )
        .await
        .unwrap()
        .version()
        .unwrap();
    assert!(v2 > v1);
    assert_eq!(
        s.get_blob("ivr-session", "call-1", t(10_000))
            .await
            .unwrap()
            .unwrap()
            .version,
        v2,
        "no ttl: stays"
    );

    let stale = BlobWrite::new().expect(Expect::Version(v1));
    assert_eq!(
        s.put_blob("ivr-session", "call-1", b"x", &stale, t(132))
            .await
            .unwrap(),
        WriteOutcome::Conflict { current: Some(v2) }
    );
    let fresh = BlobWrite::new().expect(Expect::Version(v2));
    assert!(
        s.put_blob("ivr-session", "call-1", b"y", &fresh, t(132))
            .await
            .unwrap()
            .version()
            .is_some()
    );

    assert!(s.delete_blob("ivr-session", "call-1", None).await.unwrap());
    assert!(!s.delete_blob("ivr-session", "call-1", None).await.unwrap());
    assert_eq!(s.get_blob("ivr-session", "call-1", t(132)).await.unwrap(), None);
}

async fn lease_takeover_gives_higher_token_and_fences_the_stale_holder(h: Harness) {
    let s = &h.store;
    let ttl = Duration::from_secs(10);
    let a = s
        .acquire_lease("acd-router", "node-a", ttl, t(0))
        .await
        .unwrap()
        .expect("free lease");
    assert_eq!(
        s.acquire_lease("acd-router", "node-b", ttl, t(5)).await.unwrap(),
        None,
        "held by a"
    );

    let snapshot = |fence| BlobWrite::new().fenced(fence);
    s.put_blob("acd", "snapshot", b"a-1", &snapshot(a.fence()), t(5))
        .await
        .unwrap();
    let q = QueueId::new("sales").unwrap();
    s.queue_add(&q, entry("c1", 1, "a"), Some(&a.fence()))
        .await
        .unwrap();

    // Node a stalls past its lease; node b takes over with a higher token.
    let b = s
        .acquire_lease("acd-router", "node-b", ttl, t(10))
        .await
        .unwrap()
        .expect("lapsed lease is free");
    assert!(b.token > a.token);
    assert_eq!(
        s.renew_lease(&a, ttl, t(11)).await.unwrap(),
        None,
        "a has lost it"
    );

    // a wakes up and writes with its old token: every fenced write is refused.
    let err = s
        .put_blob("acd", "snapshot", b"a-2", &snapshot(a.fence()), t(11))
        .await
        .unwrap_err();
    match err {
        StateError::StaleFence {
            presented, current, ..
        } => {
            assert_eq!(presented, a.token);
            assert_eq!(current, b.token);
        }
        other => panic!("expected a stale fence, got {other:?}"),
    }
    assert!(matches!(
        s.queue_add(&q, entry("c2", 2, "a"), Some(&a.fence())).await,
        Err(StateError::StaleFence { .. })
    ));
    assert!(matches!(
        s.queue_remove(&q, &CallId::new("c1").unwrap(), Some(&a.fence()))
            .await,
        Err(StateError::StaleFence { .. })
    ));
    assert!(matches!(
        s.delete_blob("acd", "snapshot", Some(&a.fence())).await,
        Err(StateError::StaleFence { .. })
    ));
    assert_eq!(
        s.get_blob("acd", "snapshot", t(11)).await.unwrap().unwrap().value,
        b"a-1"
    );
    assert_eq!(calls(&s.queue_list(&q).await.unwrap()), ["c1"]);

    // b's writes go through.
    s.put_blob("acd", "snapshot", b"b-1", &snapshot(b.fence()), t(11))
        .await
        .unwrap();
    assert!(
        s.queue_remove(&q, &CallId::new("c1").unwrap(), Some(&b.fence()))
            .await
            .unwrap()
    );
    assert_eq!(
        s.get_blob("acd", "snapshot", t(11)).await.unwrap().unwrap().value,
        b"b-1"
    );

    // a cannot release what it no longer holds; after b releases, the next grant is higher still.
    assert!(!s.release_lease(&a).await.unwrap());
    assert!(s.release_lease(&b).await.unwrap());
    let a2 = s
        .acquire_lease("acd-router", "node-a", ttl, t(12))
        .await
        .unwrap()
        .unwrap();
    assert!(a2.token > b.token);
    // Leases are independent of one another.
    let other = s
        .acquire_lease("dialer", "node-b", ttl, t(12))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other.holder, "node-b");
}

async fn lease_renewal_and_release(h: Harness) {
    let s = &h.store;
    let ttl = Duration::from_secs(10);
    let a = s
        .acquire_lease("router", "node-a", ttl, t(0))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.expires_at, t(10));
    // Renewing before expiry keeps the token and moves the expiry.
    let a = s.renew_lease(&a, ttl, t(9)).await.unwrap().expect("still held");
    assert_eq!(a.expires_at, t(19));
    assert_eq!(
        s.acquire_lease("router", "node-b", ttl, t(18)).await.unwrap(),
        None
    );
    // Acquiring again as the same holder extends without a new token.
    let again = s
        .acquire_lease("router", "node-a", ttl, t(18))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.token, a.token);
    assert_eq!(again.expires_at, t(28));
    // A renewal arriving after expiry fails even if nobody took over.
    assert_eq!(s.renew_lease(&again, ttl, t(28)).await.unwrap(), None);
    // Writes fenced by the latest grant still pass until someone else is granted the lease.
    s.put_blob("x", "y", b"1", &BlobWrite::new().fenced(again.fence()), t(28))
        .await
        .unwrap();
    assert!(s.release_lease(&again).await.unwrap());
    let b = s
        .acquire_lease("router", "node-b", ttl, t(29))
        .await
        .unwrap()
        .unwrap();
    assert!(b.token > again.token);
}

async fn pubsub_delivers_to_every_subscriber_of_the_topic_only(h: Harness) {
    let s = &h.store;
    let mut first = s.subscribe("wallboard").await.unwrap();
    let mut second = h.reopen().await.subscribe("wallboard").await.unwrap();
    let mut other = s.subscribe("cti.anna").await.unwrap();
    assert_eq!(first.topic(), "wallboard");

    let receivers = s.publish("wallboard", b"queue sales: 3 waiting").await.unwrap();
    assert_eq!(receivers, 2);
    s.publish("wallboard", b"queue sales: 2 waiting").await.unwrap();
    s.publish("cti.anna", b"offer").await.unwrap();

    let within = Duration::from_secs(5);
    for sub in [&mut first, &mut second] {
        let m1 = tokio::time::timeout(within, sub.recv()).await.unwrap().unwrap();
        let m2 = tokio::time::timeout(within, sub.recv()).await.unwrap().unwrap();
        assert_eq!(
            (&m1[..], &m2[..]),
            (&b"queue sales: 3 waiting"[..], &b"queue sales: 2 waiting"[..])
        );
    }
    // The other topic got only its own message.
    assert_eq!(
        &tokio::time::timeout(within, other.recv()).await.unwrap().unwrap()[..],
        b"offer"
    );

    // Nobody listening is fine; dropped subscriptions stop counting.
    drop(first);
    drop(second);
    drop(other);
    assert_eq!(s.publish("nobody-listens", b"x").await.unwrap(), 0);
}

async fn state_survives_reconnect(h: Harness) {
    let aor = Aor::new("1001").unwrap();
    let anna = AgentId::new("anna").unwrap();
    let sales = QueueId::new("sales").unwrap();
    let lease = {
        let s = &h.store;
        s.upsert_binding(&aor, binding("sip:1001@h", t(100), 1), t(0))
            .await
            .unwrap();
        s.put_presence(&anna, &presence("OnCall", 5)).await.unwrap();
        s.queue_add(&sales, entry("c1", 10, "first"), None).await.unwrap();
        s.queue_add(&sales, entry("c2", 20, "second"), None)
            .await
            .unwrap();
        s.put_blob("acd", "snapshot", b"state", &BlobWrite::new(), t(0))
            .await
            .unwrap();
        s.stream_ensure_group("outbox", "g").await.unwrap();
        s.stream_append("outbox", b"e1").await.unwrap();
        let lease = s
            .acquire_lease("acd-router", "node-a", Duration::from_secs(10), t(0))
            .await
            .unwrap()
            .unwrap();
        s.stream_read_group("outbox", "g", "c", 10, None).await.unwrap();
        lease
    };
    // Restart: the old handle is gone, a new one opens the same prefix.
    let h = Harness {
        store: h.reopen().await,
        redis: h.redis,
    };
    let s = &h.store;
    assert_eq!(
        contacts(&s.live_bindings(&aor, t(1)).await.unwrap()),
        ["sip:1001@h"]
    );
    assert_eq!(
        s.get_presence::<Presence>(&anna).await.unwrap().unwrap().value,
        presence("OnCall", 5)
    );
    assert_eq!(
        calls(&s.queue_list(&sales).await.unwrap()),
        ["c1", "c2"],
        "nobody lost their place in line"
    );
    assert_eq!(
        s.get_blob("acd", "snapshot", t(1)).await.unwrap().unwrap().value,
        b"state"
    );
    assert_eq!(
        s.acquire_lease("acd-router", "node-b", Duration::from_secs(10), t(1))
            .await
            .unwrap(),
        None
    );
    let renewed = s
        .renew_lease(&lease, Duration::from_secs(10), t(2))
        .await
        .unwrap()
        .expect("lease kept");
    assert_eq!(renewed.token, lease.token);
    assert_eq!(
        s.stream_pending("outbox", "g").await.unwrap(),
        1,
        "unacknowledged work is still owed"
    );
}

async fn bad_names_are_rejected(h: Harness) {
    let s = &h.store;
    assert!(matches!(
        s.publish("a:b", b"x").await,
        Err(StateError::Invalid { .. })
    ));
    assert!(matches!(
        s.get_blob("", "k", t(0)).await,
        Err(StateError::Invalid { .. })
    ));
    assert!(matches!(
        s.get_blob("ns", "k\n", t(0)).await,
        Err(StateError::Invalid { .. })
    ));
    assert!(matches!(
        s.acquire_lease("lease", "holder", Duration::ZERO, t(0)).await,
        Err(StateError::Invalid { .. })
    ));
    assert!(matches!(
        s.stream_append(&"s".repeat(500), b"x").await,
        Err(StateError::Invalid { .. })
    ));
    assert!(Aor::new("has space").is_err());
}

async fn rate_limits_refill_at_virtual_now(h: Harness) {
    let s = &h.store;
    s.ping().await.unwrap();
    let bucket = TokenBucket::new(3, 2).unwrap();
    let other_node = h.reopen().await;
    // A burst of three passes, drawn from one bucket whichever node asks.
    assert!(
        s.rate_take("src:10.0.0.9", bucket, 1, t(0))
            .await
            .unwrap()
            .allowed
    );
    assert!(
        other_node
            .rate_take("src:10.0.0.9", bucket, 1, t(0))
            .await
            .unwrap()
            .allowed
    );
    let third = s.rate_take("src:10.0.0.9", bucket, 1, t(0)).await.unwrap();
    assert_eq!(
        third,
        RateDecision {
            allowed: true,
            remaining: 0,
            retry_after_ms: 0
        }
    );
    let refused = s.rate_take("src:10.0.0.9", bucket, 1, t(0)).await.unwrap();
    assert_eq!(
        refused,
        RateDecision {
            allowed: false,
            remaining: 0,
            retry_after_ms: 500
        }
    );
    // Another key has its own bucket.
    assert!(
        s.rate_take("src:10.0.0.10", bucket, 3, t(0))
            .await
            .unwrap()
            .allowed
    );
    // Half a second later one token is back, and a long pause refills only up to capacity.
    let now = Timestamp::from_millis(500);
    assert!(s.rate_take("src:10.0.0.9", bucket, 1, now).await.unwrap().allowed);
    assert!(!s.rate_take("src:10.0.0.9", bucket, 1, now).await.unwrap().allowed);
    assert_eq!(
        s.rate_take("src:10.0.0.9", bucket, 1, t(1_000))
            .await
            .unwrap()
            .remaining,
        2
    );
    assert!(matches!(
        s.rate_take("k", bucket, 4, t(0)).await,
        Err(StateError::Invalid { .. })
    ));
}

async fn batches_apply_whole_or_not_at_all(h: Harness) {
    let s = &h.store;
    let sales = QueueId::new("sales").unwrap();
    let anna = AgentId::new("anna").unwrap();
    let ttl = Duration::from_secs(10);
    let lease = s
        .acquire_lease("acd-router", "node-a", ttl, t(0))
        .await
        .unwrap()
        .unwrap();
    s.queue_add(&sales, entry("c1", 1, "p1"), None).await.unwrap();
    s.queue_add(&sales, entry("c2", 2, "p2"), None).await.unwrap();
    let v0 = s.put_presence(&anna, &presence("Available", 0)).await.unwrap();
    s.put_blob("acd", "snapshot", b"s0", &BlobWrite::new(), t(0))
        .await
        .unwrap();

    // Offer c1 to anna: dequeue, reserve, snapshot, in one step.
    let mut offer = WriteBatch::fenced(lease.fence());
    offer.queue_remove(sales.clone(), CallId::new("c1").unwrap());
    offer
        .presence(anna.clone(), Expect::Version(v0), &presence("Reserved", 1))
        .unwrap();
    offer.put_blob("acd", "snapshot", b"s1".to_vec(), Some(ttl));
    offer.queue_add(QueueId::new("vip").unwrap(), entry("c9", 0, "p9"));
    offer.delete_blob("acd", "missing");
    let BatchOutcome::Applied(results) = s.apply(offer, t(1)).await.unwrap() else {
        panic!("the offer should apply");
    };
    let got = s.get_presence::<Presence>(&anna).await.unwrap().unwrap();
    assert_eq!(results.len(), 5);
    assert_eq!(
        (results[0], results[1], results[3], results[4]),
        (1, got.version, 1, 0)
    );
    assert!(
        results[2] > got.version,
        "the snapshot was written after the presence"
    );
    assert_eq!(got.value, presence("Reserved", 1));
    assert_eq!(calls(&s.queue_list(&sales).await.unwrap()), ["c2"]);
    assert_eq!(
        s.get_blob("acd", "snapshot", t(1)).await.unwrap().unwrap().value,
        b"s1"
    );
    assert_eq!(s.queue_len(&QueueId::new("vip").unwrap()).await.unwrap(), 1);

    // A second offer to anna with the old version: the condition fails and nothing at all is written.
    let mut stale = WriteBatch::fenced(lease.fence());
    stale.queue_remove(sales.clone(), CallId::new("c2").unwrap());
    stale
        .presence(anna.clone(), Expect::Version(v0), &presence("Reserved", 2))
        .unwrap();
    stale.put_blob("acd", "snapshot", b"s2".to_vec(), None);
    assert_eq!(
        s.apply(stale, t(2)).await.unwrap(),
        BatchOutcome::Conflict {
            index: 1,
            current: Some(got.version)
        }
    );
    assert_eq!(calls(&s.queue_list(&sales).await.unwrap()), ["c2"]);
    assert_eq!(
        s.get_blob("acd", "snapshot", t(2)).await.unwrap().unwrap().value,
        b"s1"
    );

    assert_eq!(
        s.get_blob("acd", "snapshot", t(11)).await.unwrap(),
        None,
        "batch blob ttl counts from now"
    );

    // After a takeover the old router's batch is refused whole.
    let b = s
        .acquire_lease("acd-router", "node-b", ttl, t(10))
        .await
        .unwrap()
        .unwrap();
    let mut late = WriteBatch::fenced(lease.fence());
    late.queue_remove(sales.clone(), CallId::new("c2").unwrap());
    assert!(matches!(
        s.apply(late, t(11)).await,
        Err(StateError::StaleFence { .. })
    ));
    assert_eq!(s.queue_len(&sales).await.unwrap(), 1);
    let mut by_b = WriteBatch::fenced(b.fence());
    by_b.queue_remove(sales.clone(), CallId::new("c2").unwrap());
    assert_eq!(
        s.apply(by_b, t(11)).await.unwrap(),
        BatchOutcome::Applied(vec![1])
    );

    // Two conditions on one agent in one batch are refused before anything is sent.
    let mut twice = WriteBatch::new();
    twice
        .presence(anna.clone(), Expect::Any, &presence("a", 0))
        .unwrap();
    twice
        .presence(anna.clone(), Expect::Any, &presence("b", 0))
        .unwrap();
    assert!(matches!(
        s.apply(twice, t(12)).await,
        Err(StateError::Invalid { .. })
    ));
    assert_eq!(
        s.apply(WriteBatch::new(), t(12)).await.unwrap(),
        BatchOutcome::Applied(vec![])
    );
}

/// Several nodes taking the same field (claiming the same work) at once: exactly one gets it.
async fn a_map_field_is_taken_once(h: Harness) {
    let s = &h.store;
    let map = "live-calls.node-x";
    s.map_update(map, &[("c1".to_string(), b"a".to_vec())], &[])
        .await
        .unwrap();
    let takers: Vec<_> = (0..8)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { s.map_take(map, "c1").await.unwrap() })
        })
        .collect();
    let mut taken = 0;
    for t in takers {
        taken += usize::from(t.await.unwrap());
    }
    assert_eq!(taken, 1);
    assert!(s.map_entries(map).await.unwrap().is_empty());
    assert!(!s.map_take(map, "c1").await.unwrap(), "gone");
    assert!(!s.map_take("never-written", "c1").await.unwrap());
}

async fn maps_keep_fields_until_removed(h: Harness) {
    let s = &h.store;
    let put = |f: &str, v: &str| (f.to_string(), v.as_bytes().to_vec());
    assert!(s.map_entries("live-calls.node-a").await.unwrap().is_empty());
    s.map_update("live-calls.node-a", &[put("c2", "b"), put("c1", "a")], &[])
        .await
        .unwrap();
    s.map_update("live-calls.node-b", &[put("c9", "z")], &[])
        .await
        .unwrap();
    // Written again: the new value; put and removed at once: removed.
    s.map_update(
        "live-calls.node-a",
        &[put("c1", "a2"), put("c3", "c")],
        &["c3".to_string()],
    )
    .await
    .unwrap();
    assert_eq!(
        s.map_entries("live-calls.node-a").await.unwrap(),
        vec![put("c1", "a2"), put("c2", "b")]
    );
    s.map_update(
        "live-calls.node-a",
        &[],
        &["c1".to_string(), "c2".to_string(), "gone".to_string()],
    )
    .await
    .unwrap();
    assert!(s.map_entries("live-calls.node-a").await.unwrap().is_empty());
    assert_eq!(
        s.map_entries("live-calls.node-b").await.unwrap(),
        vec![put("c9", "z")]
    );
    assert!(matches!(
        s.map_update("bad map", &[], &[]).await,
        Err(StateError::Invalid { .. })
    ));
}
