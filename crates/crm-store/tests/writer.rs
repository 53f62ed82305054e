//! The durable writer and the batch path, on every backend.

mod common;

use common::{ev, targets};
use crm_store::{EventWriter, WriterConfig, journal};

#[tokio::test]
async fn migrations_apply_on_an_empty_database_and_twice() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("migrations", dir.path()) {
        let store = target.store().await;
        store.migrate().await.unwrap();
        assert_eq!(store.count_events(None).await.unwrap(), 0, "{}", target.label());
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn batch_insert_is_idempotent_and_folds_once() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("batch_idempotent", dir.path()) {
        let store = target.store().await;
        let call = ev::answered_call("c1", "(415) 555-0100", "sales", "alice", 1_000_000, 4_000, 60_000);
        let first = store.insert_events_batch(&call[..3]).await.unwrap();
        assert_eq!(first.inserted, 3);
        // Overlapping replay plus the rest, with a duplicate inside the batch.
        let mut again = call.clone();
        again.push(call[4].clone());
        let second = store.insert_events_batch(&again).await.unwrap();
        assert_eq!((second.inserted, second.duplicates), (2, 4), "{}", target.label());

        let row = store.interaction(&ev::id("c1")).await.unwrap().unwrap();
        assert_eq!(row.caller_number.as_deref(), Some("+14155550100"));
        assert_eq!(row.wait_ms, Some(4_000));
        assert_eq!(row.talk_ms, Some(60_000));
        assert_eq!(row.wrap_ms, Some(5_000));
        assert_eq!(row.last_seq, 4);
        assert_eq!(store.count_events(Some(&ev::id("c1"))).await.unwrap(), 5);
        let timeline = store.interaction_timeline(&ev::id("c1")).await.unwrap();
        let kinds: Vec<&str> = timeline.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["arrived", "enqueued", "answered", "ended", "wrapped_up"]);
        assert_eq!(timeline[2].payload["agent"], "alice");

        assert!(
            !store.insert_event_naive(&call[0]).await.unwrap(),
            "naive path skips duplicates too"
        );
        let new = ev::at("c2", 0, 5, ev::arrived("+14155550101"));
        assert!(store.insert_event_naive(&new).await.unwrap());
        assert_eq!(store.count_events(None).await.unwrap(), 6);
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn text_with_tabs_newlines_and_backslashes_is_stored_as_written() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("copy_escapes", dir.path()) {
        let store = target.store().await;
        let awkward = "tab\there\nnew line \\ back\\slash \r \\N \"quoted\" ünï";
        let mut call = ev::answered_call("esc", "+14155550100", "sales", "alice", 0, 1_000, 10_000);
        call.push(ev::at(
            "esc",
            5,
            20_000,
            domain::InteractionEventKind::WrappedUp {
                agent: domain::AgentId::new("alice").unwrap(),
                disposition: awkward.into(),
                notes: domain::Pii::new(awkward.into()),
            },
        ));
        let outcome = store.insert_events_batch(&call).await.unwrap();
        assert_eq!(outcome.inserted, call.len(), "{}", target.label());
        let timeline = store.interaction_timeline(&ev::id("esc")).await.unwrap();
        let last = timeline.last().unwrap();
        assert_eq!(last.payload["disposition"], awkward, "{}", target.label());
        let row = store.interaction(&ev::id("esc")).await.unwrap().unwrap();
        assert_eq!(row.disposition.as_deref(), Some(awkward));
        assert_eq!(row.notes.as_deref(), Some(awkward));
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn writer_acks_durable_events_and_commits_them_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("writer_commits", dir.path()) {
        let store = target.store().await;
        let journal_dir = dir.path().join(format!("journal-{}", common::unique("w")));
        let mut config = WriterConfig::new(&journal_dir);
        config.segment_bytes = 4096; // rotate often so deletion of applied segments is exercised
        config.postgres_writers = 3; // PostgreSQL: batches split over concurrent transactions
        config.min_events_per_partition = 1;
        let (writer, task) = EventWriter::start(store.clone(), config).await.unwrap();

        let mut handles = Vec::new();
        for call in 0..40 {
            let writer = writer.clone();
            handles.push(tokio::spawn(async move {
                let id = format!("call-{call}");
                for e in ev::answered_call(&id, "+14155550100", "sales", "bob", call * 10_000, 2_000, 30_000)
                {
                    writer.append(e).await.unwrap();
                }
            }));
        }
        for h in handles {
            h.await.unwrap();
        }
        let mut committed = writer.committed();
        committed.wait_for(|n| *n == 200).await.unwrap();
        assert_eq!(store.count_events(None).await.unwrap(), 200, "{}", target.label());

        let stats = task.shutdown().await.unwrap();
        assert_eq!((stats.durable, stats.committed), (200, 200));
        assert!(stats.journal_syncs <= 200 && stats.batches >= 1);
        assert!(
            journal::list_segments(&journal_dir).unwrap().is_empty(),
            "journal removed after shutdown"
        );
        assert!(
            writer.append(ev::at("late", 0, 0, ev::ended())).await.is_err(),
            "closed writer refuses"
        );
        let row = store.interaction(&ev::id("call-7")).await.unwrap().unwrap();
        assert_eq!(row.agent_id.as_deref(), Some("bob"));
        assert_eq!(row.talk_ms, Some(30_000));
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn journal_left_behind_is_replayed_without_duplicates_and_torn_tail_ignored() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("journal_replay", dir.path()) {
        let store = target.store().await;
        let journal_dir = dir.path().join(common::unique("j"));
        std::fs::create_dir_all(&journal_dir).unwrap();
        let call = ev::answered_call("r1", "+14155550100", "sales", "carol", 0, 1_000, 10_000);
        // The first two events already reached SQL before the "crash".
        store.insert_events_batch(&call[..2]).await.unwrap();
        let mut framed = Vec::new();
        for e in &call {
            journal::encode_record(&serde_json::to_vec(e).unwrap(), &mut framed).unwrap();
        }
        framed.extend_from_slice(&[7, 0, 0, 0, 1, 2]); // torn header of a record never acknowledged
        std::fs::write(journal::segment_path(&journal_dir, 3), &framed).unwrap();

        let (_writer, task) = EventWriter::start(store.clone(), WriterConfig::new(&journal_dir))
            .await
            .unwrap();
        let stats = task.shutdown().await.unwrap();
        assert_eq!(stats.replayed, 5, "{}", target.label());
        assert_eq!(store.count_events(Some(&ev::id("r1"))).await.unwrap(), 5);
        let row = store.interaction(&ev::id("r1")).await.unwrap().unwrap();
        assert_eq!(row.wait_ms, Some(1_000), "folded once, not twice");
        assert_eq!(row.talk_ms, Some(10_000));
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_batches_into_one_interaction_lose_no_update() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("concurrent_fold", dir.path()) {
        let store = target.store().await;
        let mut tasks = Vec::new();
        for seq in 0..20u32 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let node = domain::InteractionEventKind::IvrNode {
                    flow: "f".into(),
                    node: format!("n{seq}"),
                    key: None,
                };
                store
                    .insert_events_batch(&[ev::at("shared", seq, i64::from(seq), node)])
                    .await
                    .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let row = store.interaction(&ev::id("shared")).await.unwrap().unwrap();
        let nodes = row.ivr_path.split(" > ").count();
        assert_eq!(nodes, 20, "{}: every writer's fold survives", target.label());
        assert_eq!(row.last_seq, 19);
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn callback_requests_become_pending_callbacks_once() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("callbacks", dir.path()) {
        let store = target.store().await;
        let mut call = ev::abandoned_call("cb", "+14155550100", "support", 0, 30_000);
        call.push(ev::at(
            "cb",
            4,
            31_000,
            domain::InteractionEventKind::CallbackRequested {
                number: domain::Pii::new("(415) 555-0142".into()),
            },
        ));
        store.insert_events_batch(&call).await.unwrap();
        store.insert_events_batch(&call).await.unwrap(); // replay
        let pending = store.pending_callbacks().await.unwrap();
        assert_eq!(pending.len(), 1, "{}", target.label());
        assert_eq!(pending[0].phone.expose(), "+14155550142");
        assert_eq!(pending[0].queue.as_ref().map(|q| q.as_str()), Some("support"));
        assert!(store.set_callback_status(&pending[0].id, "done").await.unwrap());
        assert!(store.pending_callbacks().await.unwrap().is_empty());
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn a_second_writer_on_the_same_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = crm_store::CrmStore::connect(&format!("sqlite:{}", dir.path().join("lock.db").display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let journal_dir = dir.path().join("journal");
    let (_w, task) = EventWriter::start(store.clone(), WriterConfig::new(&journal_dir))
        .await
        .unwrap();
    assert!(
        EventWriter::start(store.clone(), WriterConfig::new(&journal_dir))
            .await
            .is_err()
    );
    task.shutdown().await.unwrap();
    let (_w, task) = EventWriter::start(store, WriterConfig::new(&journal_dir))
        .await
        .unwrap();
    task.shutdown().await.unwrap();
}

#[tokio::test]
async fn sensitive_digits_never_reach_the_journal_or_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let store = crm_store::CrmStore::connect(&format!("sqlite:{}", dir.path().join("pci.db").display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let journal_dir = dir.path().join("journal");
    let (writer, task) = EventWriter::start(store.clone(), WriterConfig::new(&journal_dir))
        .await
        .unwrap();
    let card = domain::InteractionEventKind::DigitsCollected {
        variable: "card".into(),
        digits: domain::Pii::new("4111111111111111".into()),
        sensitive: true,
    };
    writer.append(ev::at("pci", 0, 0, card)).await.unwrap();
    let mut journal_bytes = Vec::new();
    for (_, path) in journal::list_segments(&journal_dir).unwrap() {
        journal_bytes.extend(std::fs::read(path).unwrap());
    }
    let journal_text = String::from_utf8_lossy(&journal_bytes);
    assert!(
        journal_text.contains("digits_collected"),
        "the event is in the journal"
    );
    assert!(!journal_text.contains("4111"), "but not the card number");
    task.shutdown().await.unwrap();
    assert_eq!(store.count_events(Some(&ev::id("pci"))).await.unwrap(), 1);
    store.close().await;
    let mut db_bytes = std::fs::read(dir.path().join("pci.db")).unwrap();
    if let Ok(wal) = std::fs::read(dir.path().join("pci.db-wal")) {
        db_bytes.extend(wal);
    }
    let db_text = String::from_utf8_lossy(&db_bytes);
    assert!(
        db_text.contains("****************"),
        "the masked payload is in the file"
    );
    assert!(!db_text.contains("4111111111111111"));
}

#[tokio::test]
async fn any_split_into_batches_with_replays_folds_like_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("split_batches", dir.path()) {
        let store = target.store().await;
        for chunk in 1..=6usize {
            let id = format!("split-{chunk}");
            let mut call = ev::answered_call(&id, "+14155550100", "sales", "erin", 0, 7_000, 40_000);
            // Hold in the middle of the talk, a survey after wrap-up.
            call.insert(3, ev::at(&id, 0, 20_000, domain::InteractionEventKind::Held));
            call.insert(4, ev::at(&id, 0, 26_000, domain::InteractionEventKind::Resumed));
            call.push(ev::at(
                &id,
                0,
                60_000,
                domain::InteractionEventKind::Survey { score: 3 },
            ));
            for (seq, e) in call.iter_mut().enumerate() {
                e.seq = seq as u32;
            }
            let sorted = call;
            let mut reference = crm_store::InteractionRow::new(&id);
            for e in &sorted {
                reference.apply(e, crm_store::CountryCode::NANP);
            }
            // Each batch replays the previous one too, as a restart after a crash would.
            let mut previous: Vec<domain::InteractionEvent> = Vec::new();
            for part in sorted.chunks(chunk) {
                let mut batch = previous.clone();
                batch.extend_from_slice(part);
                store.insert_events_batch(&batch).await.unwrap();
                previous = part.to_vec();
            }
            let stored = store.interaction(&ev::id(&id)).await.unwrap().unwrap();
            assert_eq!(stored, reference, "{}: chunks of {chunk}", target.label());
            assert_eq!(
                (stored.hold_ms, stored.talk_ms, stored.survey_score),
                (6_000, Some(34_000), Some(3))
            );
        }
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn events_arriving_in_any_order_across_batches_fold_like_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("out_of_order", dir.path()) {
        let store = target.store().await;
        // A small deterministic generator: the same interleavings on every run and backend.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 33) as usize % n.max(1)
        };
        for case in 0..24 {
            let id = format!("order-{case}");
            let mut call = ev::answered_call(&id, "+14155550100", "sales", "erin", 0, 7_000, 40_000);
            // Held then resumed: folded the wrong way round these gave a wrong hold time.
            call.insert(3, ev::at(&id, 0, 20_000, domain::InteractionEventKind::Held));
            call.insert(4, ev::at(&id, 0, 26_000, domain::InteractionEventKind::Resumed));
            for (seq, e) in call.iter_mut().enumerate() {
                e.seq = seq as u32;
            }
            let mut reference = crm_store::InteractionRow::new(&id);
            for e in &call {
                reference.apply(e, crm_store::CountryCode::NANP);
            }
            let mut shuffled = call.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, next(i + 1));
            }
            let mut rest = shuffled.as_slice();
            while !rest.is_empty() {
                let (batch, tail) = rest.split_at(1 + next(3).min(rest.len() - 1));
                store.insert_events_batch(batch).await.unwrap();
                rest = tail;
            }
            let stored = store.interaction(&ev::id(&id)).await.unwrap().unwrap();
            assert_eq!(stored, reference, "{}: case {case}", target.label());
            assert_eq!(stored.hold_ms, 6_000);
        }
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn an_event_with_nul_characters_is_stored_cleaned_and_does_not_stall_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("nul_event", dir.path()) {
        let store = target.store().await;
        let journal_dir = dir.path().join(common::unique("nul"));
        let (writer, task) = EventWriter::start(store.clone(), WriterConfig::new(&journal_dir))
            .await
            .unwrap();
        let bad = domain::InteractionEventKind::Ended {
            by: domain::EndedBy::Error,
            reason: "carrier\0said".into(),
            quality: None,
        };
        writer.append(ev::at("nul", 0, 0, bad)).await.unwrap();
        writer.append(ev::at("after", 0, 0, ev::ended())).await.unwrap();
        let stats = task.shutdown().await.unwrap();
        assert_eq!(
            (stats.committed, stats.dead_lettered),
            (2, 0),
            "{}",
            target.label()
        );
        let row = store.interaction(&ev::id("nul")).await.unwrap().unwrap();
        assert_eq!(row.end_reason.as_deref(), Some("carriersaid"));
        assert_eq!(store.count_events(Some(&ev::id("after"))).await.unwrap(), 1);
        assert!(!journal_dir.join(crm_store::DEAD_LETTER_FILE).exists());
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn a_journal_event_the_database_refuses_is_dead_lettered_and_the_writer_starts() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("poison_replay", dir.path()) {
        let store = target.store().await;
        let journal_dir = dir.path().join(common::unique("poison"));
        std::fs::create_dir_all(&journal_dir).unwrap();
        // Written straight into the journal, as an older version without NUL stripping might have.
        let poison = ev::at(
            "p1",
            0,
            0,
            domain::InteractionEventKind::Ended {
                by: domain::EndedBy::Error,
                reason: "a\0b".into(),
                quality: None,
            },
        );
        let good = ev::at("p2", 0, 0, ev::ended());
        let mut framed = Vec::new();
        for e in [&poison, &good] {
            journal::encode_record(&serde_json::to_vec(e).unwrap(), &mut framed).unwrap();
        }
        std::fs::write(journal::segment_path(&journal_dir, 1), &framed).unwrap();

        let (_writer, task) = EventWriter::start(store.clone(), WriterConfig::new(&journal_dir))
            .await
            .unwrap();
        let stats = task.shutdown().await.unwrap();
        assert_eq!(
            store.count_events(Some(&ev::id("p2"))).await.unwrap(),
            1,
            "{}",
            target.label()
        );
        let dead_file = journal_dir.join(crm_store::DEAD_LETTER_FILE);
        match target {
            // PostgreSQL refuses NUL in text: the event is set aside, the other one stored.
            common::Target::Postgres { .. } => {
                assert_eq!(stats.dead_lettered, 1);
                let dead = std::fs::read_to_string(&dead_file).unwrap();
                assert_eq!(dead.lines().count(), 1);
                assert!(dead.contains("\"p1\""));
            }
            // SQLite stores it as it is.
            common::Target::Sqlite { .. } => {
                assert_eq!(stats.dead_lettered, 0);
                assert!(!dead_file.exists());
            }
        }
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn an_ordered_appender_journals_events_in_the_order_they_were_handed_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = crm_store::CrmStore::connect(&format!("sqlite:{}", dir.path().join("o.db").display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let journal_dir = dir.path().join("journal");
    let (writer, task) = EventWriter::start(store.clone(), WriterConfig::new(&journal_dir))
        .await
        .unwrap();
    let appender = crm_store::OrderedAppender::start(writer.clone());
    // Many interactions interleaved, handed over without waiting, as calls log their steps.
    let mut handed = Vec::new();
    for seq in 0..200u32 {
        for call in ["a", "b", "c"] {
            let kind = if seq % 2 == 0 {
                domain::InteractionEventKind::Held
            } else {
                domain::InteractionEventKind::Resumed
            };
            let e = ev::at(call, seq, i64::from(seq) * 10, kind);
            handed.push((call.to_string(), seq));
            appender.append(e);
        }
    }
    writer.committed().wait_for(|n| *n == 600).await.unwrap();
    let mut journaled = Vec::new();
    for (_, path) in journal::list_segments(&journal_dir).unwrap() {
        let bytes = std::fs::read(path).unwrap();
        for record in journal::decode_records(&bytes).records {
            let e: domain::InteractionEvent = serde_json::from_slice(record).unwrap();
            journaled.push((e.interaction.as_str().to_string(), e.seq));
        }
    }
    assert_eq!(
        journaled, handed,
        "the journal holds the events in hand-over order"
    );
    let row = store.interaction(&ev::id("b")).await.unwrap().unwrap();
    assert_eq!(row.hold_ms, 100 * 10, "every hold of 10 ms counted");
    task.shutdown().await.unwrap();
}
