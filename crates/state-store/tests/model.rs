//! Model-based property tests: random sequences of queue, registration and presence operations, each
//! result checked against a plain model kept by the test. Run on the memory backend always and on Redis
//! when `REDIS_URL` is set, so the two backends are held to one behaviour, not just to the same examples.

// The checking code is shared by the generated tests; a failed unwrap is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_precision_loss
)]

mod common;

use common::Harness;
use domain::{AgentId, CallId, QueueId, Timestamp};
use proptest::prelude::*;
use state_store::{
    Aor, BatchOutcome, Binding, Expect, QueueEntry, QueueOrder, TokenBucket, Transport, WriteBatch,
    WriteOutcome,
};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

#[derive(Debug, Clone)]
enum ExpectChoice {
    Any,
    Absent,
    Current,
    Stale,
}

#[derive(Debug, Clone)]
enum Op {
    QueueAdd {
        call: u8,
        order: i8,
    },
    QueueRemove {
        call: u8,
    },
    Register {
        contact: u8,
        lifetime_s: u8,
    },
    Unregister {
        contact: u8,
    },
    UnregisterAll,
    LiveBindings,
    Advance {
        secs: u8,
    },
    PresenceCas {
        agent: u8,
        expect: ExpectChoice,
    },
    RateTake {
        key: u8,
        cost: u8,
    },
    OfferBatch {
        call: u8,
        agent: u8,
        expect: ExpectChoice,
    },
}

fn expect_choice() -> impl Strategy<Value = ExpectChoice> {
    prop_oneof![
        Just(ExpectChoice::Any),
        Just(ExpectChoice::Absent),
        Just(ExpectChoice::Current),
        Just(ExpectChoice::Stale)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let expect = expect_choice();
    prop_oneof![
        (0..6u8, -3..4i8).prop_map(|(call, order)| Op::QueueAdd { call, order }),
        (0..6u8).prop_map(|call| Op::QueueRemove { call }),
        (0..4u8, 0..20u8).prop_map(|(contact, lifetime_s)| Op::Register { contact, lifetime_s }),
        (0..4u8).prop_map(|contact| Op::Unregister { contact }),
        Just(Op::UnregisterAll),
        Just(Op::LiveBindings),
        (0..10u8).prop_map(|secs| Op::Advance { secs }),
        (0..3u8, expect).prop_map(|(agent, expect)| Op::PresenceCas { agent, expect }),
        (0..2u8, 0..4u8).prop_map(|(key, cost)| Op::RateTake { key, cost }),
        (0..6u8, 0..3u8, expect_choice()).prop_map(|(call, agent, expect)| Op::OfferBatch {
            call,
            agent,
            expect
        }),
    ]
}

#[derive(Default)]
struct Model {
    now_ms: i64,
    queue: BTreeMap<String, i64>,
    bindings: BTreeMap<String, i64>,
    /// agent -> (current version, the version before it)
    presence: HashMap<u8, (u64, Option<u64>)>,
    highest_version: u64,
    /// key -> (millitokens, last take ms) of a 4-token bucket refilled at 3 per second
    rate: HashMap<u8, (i64, i64)>,
}

/// The condition to send for `choice`, and whether the model says it holds.
fn condition(choice: &ExpectChoice, current: Option<(u64, Option<u64>)>) -> (Expect, bool) {
    match choice {
        ExpectChoice::Any => (Expect::Any, true),
        ExpectChoice::Absent => (Expect::Absent, current.is_none()),
        ExpectChoice::Current => match current {
            Some((v, _)) => (Expect::Version(v), true),
            None => (Expect::Version(u64::MAX / 2), false),
        },
        ExpectChoice::Stale => (
            Expect::Version(current.and_then(|c| c.1).unwrap_or(u64::MAX / 3)),
            false,
        ),
    }
}

async fn run(h: Harness, ops: Vec<Op>) {
    let s = &h.store;
    let queue = QueueId::new("q").unwrap();
    let aor = Aor::new("1001").unwrap();
    let mut m = Model::default();
    for op in ops {
        let now = Timestamp::from_millis(m.now_ms);
        match op {
            Op::QueueAdd { call, order } => {
                let call = format!("c{call}");
                let entry = QueueEntry {
                    call: CallId::new(&call).unwrap(),
                    order: QueueOrder::new(i64::from(order)).unwrap(),
                    payload: format!("{call}@{order}").into_bytes(),
                };
                let added = s.queue_add(&queue, entry, None).await.unwrap();
                assert_eq!(added, m.queue.insert(call, i64::from(order)).is_none());
                let mut expected: Vec<(i64, String)> = m.queue.iter().map(|(c, o)| (*o, c.clone())).collect();
                expected.sort();
                let got: Vec<(i64, String)> = s
                    .queue_list(&queue)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|e| {
                        assert_eq!(e.payload, format!("{}@{}", e.call, e.order.get()).into_bytes());
                        (e.order.get(), e.call.to_string())
                    })
                    .collect();
                assert_eq!(got, expected);
            }
            Op::QueueRemove { call } => {
                let call = format!("c{call}");
                let removed = s
                    .queue_remove(&queue, &CallId::new(&call).unwrap(), None)
                    .await
                    .unwrap();
                assert_eq!(removed, m.queue.remove(&call).is_some());
                assert_eq!(s.queue_len(&queue).await.unwrap(), m.queue.len());
            }
            Op::Register { contact, lifetime_s } => {
                let contact = format!("sip:u@h{contact}");
                let expires_at = now + Duration::from_secs(u64::from(lifetime_s));
                let binding = Binding {
                    contact: contact.clone(),
                    expires_at,
                    call_id: "cid".into(),
                    cseq: 1,
                    source: "127.0.0.1:5060".parse().unwrap(),
                    transport: Transport::Tcp,
                };
                s.upsert_binding(&aor, binding, now).await.unwrap();
                if lifetime_s == 0 {
                    m.bindings.remove(&contact);
                } else {
                    m.bindings.insert(contact, expires_at.as_millis());
                }
            }
            Op::Unregister { contact } => {
                let contact = format!("sip:u@h{contact}");
                assert_eq!(
                    s.remove_binding(&aor, &contact).await.unwrap(),
                    m.bindings.remove(&contact).is_some()
                );
            }
            Op::UnregisterAll => {
                assert_eq!(s.remove_all_bindings(&aor).await.unwrap(), m.bindings.len());
                m.bindings.clear();
            }
            Op::LiveBindings => {
                m.bindings.retain(|_, at| *at > m.now_ms);
                let got: Vec<(String, i64)> = s
                    .live_bindings(&aor, now)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|b| (b.contact, b.expires_at.as_millis()))
                    .collect();
                let expected: Vec<(String, i64)> =
                    m.bindings.iter().map(|(c, at)| (c.clone(), *at)).collect();
                assert_eq!(got, expected);
            }
            Op::Advance { secs } => m.now_ms += i64::from(secs) * 1000 / 3,
            Op::OfferBatch { call, agent, expect } => {
                let call = format!("c{call}");
                let id = AgentId::new(format!("agent{agent}")).unwrap();
                let current = m.presence.get(&agent).copied();
                let (expect, holds) = condition(&expect, current);
                let mut batch = WriteBatch::new();
                batch.queue_remove(queue.clone(), CallId::new(&call).unwrap());
                batch
                    .presence(id.clone(), expect, &format!("offered {call}"))
                    .unwrap();
                match s.apply(batch, now).await.unwrap() {
                    BatchOutcome::Applied(results) => {
                        assert!(holds, "applied despite {expect:?} with {current:?}");
                        assert_eq!(results[0], u64::from(m.queue.remove(&call).is_some()));
                        assert!(results[1] > m.highest_version);
                        m.highest_version = results[1];
                        m.presence.insert(agent, (results[1], current.map(|c| c.0)));
                    }
                    BatchOutcome::Conflict {
                        index,
                        current: reported,
                    } => {
                        assert!(!holds, "conflict despite {expect:?} with {current:?}");
                        assert_eq!((index, reported), (1, current.map(|c| c.0)));
                    }
                }
                // Whole or nothing: the queue is exactly what the model says either way.
                assert_eq!(s.queue_len(&queue).await.unwrap(), m.queue.len());
            }
            Op::RateTake { key, cost } => {
                // Reference arithmetic in floating point, independent of the store's integer steps.
                let (tokens, last) = m
                    .rate
                    .get(&key)
                    .map_or((4.0, m.now_ms), |(t, l)| (*t as f64 / 1000.0, *l));
                let level = (tokens + (m.now_ms - last) as f64 * 3.0 / 1000.0).min(4.0);
                let allowed = level >= f64::from(cost) - 1e-9;
                let left = if allowed { level - f64::from(cost) } else { level };
                m.rate.insert(key, ((left * 1000.0).round() as i64, m.now_ms));
                let bucket = TokenBucket::new(4, 3).unwrap();
                let d = s
                    .rate_take(&format!("k{key}"), bucket, u32::from(cost), now)
                    .await
                    .unwrap();
                assert_eq!(d.allowed, allowed, "level {level}, cost {cost}");
                assert_eq!(d.remaining, (left + 1e-9).floor() as u32);
                if !allowed {
                    let wait = ((f64::from(cost) - level) * 1000.0 / 3.0 - 1e-6).ceil() as u64;
                    assert_eq!(d.retry_after_ms, wait);
                }
            }
            Op::PresenceCas { agent, expect } => {
                let id = AgentId::new(format!("agent{agent}")).unwrap();
                let current = m.presence.get(&agent).copied();
                let (expect, should_write) = condition(&expect, current);
                let state = format!("state-{}", m.now_ms);
                match s.cas_presence(&id, expect, &state).await.unwrap() {
                    WriteOutcome::Written { version } => {
                        assert!(should_write, "wrote despite {expect:?} with {current:?}");
                        assert!(version > m.highest_version, "versions only grow");
                        m.highest_version = version;
                        m.presence.insert(agent, (version, current.map(|c| c.0)));
                        let read = s.get_presence::<String>(&id).await.unwrap().unwrap();
                        assert_eq!((read.version, read.value), (version, state));
                    }
                    WriteOutcome::Conflict { current: reported } => {
                        assert!(!should_write, "conflict despite {expect:?} with {current:?}");
                        assert_eq!(reported, current.map(|c| c.0));
                    }
                }
            }
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn memory_backend_follows_the_model(ops in prop::collection::vec(op(), 1..60)) {
        block_on(run(Harness::memory(), ops));
    }
}

proptest! {
    // Fewer cases: each one is a few hundred round trips to a real server.
    #![proptest_config(ProptestConfig::with_cases(16))]
    #[test]
    fn redis_backend_follows_the_model(ops in prop::collection::vec(op(), 1..60)) {
        block_on(async {
            if let Some(h) = Harness::redis("model").await {
                run(h, ops).await;
            }
        });
    }
}
