//! Customers, lookup, reports, retention, import and audit: the same suite on every backend.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use common::{ev, targets};
use crm_store::{
    Customer, IntervalLength, MASKED_NAME, Role, ServiceLevelFormula, ServiceLevelSpec, Tier, User,
};
use domain::{AgentId, CampaignId, CustomerId, InteractionEventKind, Pii, Timestamp};

fn customer(id: &str, account: &str, phones: &[&str], tier: Tier, manager: Option<&str>) -> Customer {
    Customer {
        id: CustomerId::new(id).unwrap(),
        account_number: Some(account.into()),
        name: Pii::new(format!("Customer {id}")),
        phones: phones.iter().map(|p| Pii::new(p.to_string())).collect(),
        email: Some(Pii::new(format!("{id}@example.com"))),
        tier,
        account_manager: manager.map(|m| AgentId::new(m).unwrap()),
        lifetime_value_cents: 1_000_000,
        notes: None,
    }
}

#[tokio::test]
async fn lookup_by_any_number_format_and_by_account_with_recent_history() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("lookup", dir.path()) {
        let store = target.store().await;
        let now = Timestamp::from_secs(1_700_000_000);
        store
            .save_customer(
                &customer("k1", "ACC-1", &["(415) 555-0100"], Tier::Key, Some("alice")),
                "admin",
                now,
            )
            .await
            .unwrap();
        store
            .save_customer(
                &customer("s1", "ACC-2", &["415 555 0100"], Tier::Small, None),
                "admin",
                now,
            )
            .await
            .unwrap();
        let mut events = ev::answered_call("h1", "+14155550100", "vip", "alice", 1_000, 2_000, 10_000);
        events.insert(
            1,
            ev::at(
                "h1",
                5,
                1_500,
                InteractionEventKind::CustomerIdentified {
                    customer: CustomerId::new("k1").unwrap(),
                    tier: "key".into(),
                },
            ),
        );
        store.insert_events_batch(&events).await.unwrap();

        for raw in ["+1 415-555-0100", "sip:+14155550100@gw", "4155550100"] {
            let card = store
                .find_customer_by_phone(raw)
                .await
                .unwrap()
                .expect("known caller");
            assert_eq!(
                card.customer.id.as_str(),
                "k1",
                "{}: most valuable tier wins",
                target.label()
            );
            assert_eq!(card.queue_priority, Tier::Key.queue_priority());
            assert_eq!(
                card.customer.account_manager.as_ref().map(AgentId::as_str),
                Some("alice")
            );
            assert_eq!(card.recent.len(), 1);
            assert_eq!(card.recent[0].talk_ms, Some(10_000));
        }
        let history = store
            .customer_history(&CustomerId::new("k1").unwrap(), None)
            .await
            .unwrap();
        let csv = crm_store::reports::rows_to_csv(&history).unwrap();
        assert!(csv.starts_with("id,channel,direction,arrived_at_ms"), "{csv}");
        assert!(csv.contains("h1,voice,inbound,1000"));
        assert!(
            store
                .find_customer_by_phone("+442079460958")
                .await
                .unwrap()
                .is_none()
        );
        assert!(store.find_customer_by_phone("anonymous").await.unwrap().is_none());
        let by_account = store.find_customer_by_account(" ACC-2 ").await.unwrap().unwrap();
        assert_eq!(by_account.customer.tier, Tier::Small);
        assert_eq!(by_account.customer.phones[0].expose(), "+14155550100");

        let log = store.audit_log(Timestamp::ZERO).await.unwrap();
        assert_eq!(log.len(), 2);
        assert_eq!(
            (log[0].actor.as_str(), log[0].action.as_str()),
            ("admin", "customer.save")
        );
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn users_and_do_not_call_are_audited() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("users_dnc", dir.path()) {
        let store = target.store().await;
        let t = Timestamp::from_secs(10);
        let user = User {
            id: AgentId::new("bob").unwrap(),
            display_name: Pii::new("Bob".into()),
            role: Role::Supervisor,
            password_hash: Some("$argon2id$v=19$...".into()),
            active: true,
        };
        store.save_user(&user, "root", t).await.unwrap();
        assert_eq!(store.user(&user.id).await.unwrap(), Some(user.clone()));
        store
            .add_do_not_call("(415) 555-0199", "customer request", "root", t)
            .await
            .unwrap();
        assert!(store.is_do_not_call("+14155550199").await.unwrap());
        assert!(!store.is_do_not_call("+14155550198").await.unwrap());
        assert!(
            store.is_do_not_call("garbage").await.unwrap(),
            "unparsable numbers are never dialled"
        );
        let log = store.audit_log(t).await.unwrap();
        let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(actions, ["user.save", "dnc.add"], "{}", target.label());
        assert!(
            !log[1].entity_id.contains("555"),
            "the audit log masks the number"
        );
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn reports_from_stored_events_agree_with_the_pure_definitions() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("reports", dir.path()) {
        let store = target.store().await;
        let base = 1_700_000_400_000; // 15-minute aligned
        let mut events = Vec::new();
        events.extend(ev::answered_call(
            "r1",
            "+14155550100",
            "sales",
            "alice",
            base,
            10_000,
            60_000,
        ));
        events.extend(ev::answered_call(
            "r2",
            "+14155550101",
            "sales",
            "bob",
            base + 60_000,
            30_000,
            120_000,
        ));
        events.extend(ev::abandoned_call(
            "r3",
            "+14155550102",
            "sales",
            base + 120_000,
            45_000,
        ));
        events.extend(ev::answered_call(
            "r4",
            "+14155550103",
            "sales",
            "alice",
            base + 20 * 60_000,
            5_000,
            30_000,
        ));
        events.push(ev::at(
            "r1",
            5,
            base + 200_000,
            InteractionEventKind::Survey { score: 5 },
        ));
        events.push(ev::at(
            "r2",
            5,
            base + 300_000,
            InteractionEventKind::Survey { score: 2 },
        ));
        store.insert_events_batch(&events).await.unwrap();

        let from = Timestamp::from_millis(base);
        let to = Timestamp::from_millis(base + 3_600_000);
        let spec = ServiceLevelSpec {
            formula: ServiceLevelFormula::WithinOverAnsweredAndAbandoned,
            threshold_ms: 20_000,
        };
        let report = store
            .interval_report(from, to, IntervalLength::Minutes15, spec)
            .await
            .unwrap();
        assert_eq!(report.rows.len(), 2, "{}", target.label());
        let first = &report.rows[0];
        assert_eq!((first.offered, first.answered, first.abandoned), (3, 2, 1));
        assert_eq!(first.service_level, Some(1.0 / 3.0));
        assert_eq!(first.asa_ms, Some(20_000.0));
        // AHT = talk + wrap (5 s each): (65 + 125) / 2 s.
        assert_eq!(first.aht_ms, Some(95_000.0));
        assert_eq!(first.max_wait_ms, 45_000);
        let hourly = store
            .interval_report(from, to, IntervalLength::Minutes60, spec)
            .await
            .unwrap();
        assert_eq!(hourly.rows.len(), 1);
        assert_eq!(hourly.rows[0].offered, 4);
        assert!(report.to_csv().unwrap().lines().count() == 3);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rows"][0]["offered"], 3);

        let alice = AgentId::new("alice").unwrap();
        store
            .record_agent_state(
                &alice,
                "not_ready",
                Some("break"),
                from,
                Timestamp::from_millis(base + 600_000),
            )
            .await
            .unwrap();
        let agents = store.agent_report(from, to).await.unwrap();
        let a = agents.rows.iter().find(|r| r.agent == "alice").unwrap();
        assert_eq!((a.handled, a.talk_ms, a.wrap_ms), (2, 90_000, 10_000));
        assert_eq!(a.not_ready_by_reason.get("break"), Some(&600_000));
        assert!(agents.to_csv().unwrap().contains("break=600000"));

        let surveys = store.survey_report(from, to).await.unwrap();
        assert_eq!(surveys.rows[0].responses, 2);
        assert_eq!(surveys.rows[0].average, Some(3.5));

        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn retention_masks_old_personal_data_and_returns_recordings() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("retention", dir.path()) {
        let store = target.store().await;
        let day = 86_400_000i64;
        let now = Timestamp::from_millis(100 * day);
        let mut old = ev::answered_call("old", "+14155550100", "sales", "alice", 10 * day, 1_000, 1_000);
        old.push(ev::at(
            "old",
            5,
            10 * day + 10_000,
            InteractionEventKind::Recording {
                path: "/rec/old.wav".into(),
            },
        ));
        let mut recent = ev::answered_call("new", "+14155550101", "sales", "alice", 95 * day, 1_000, 1_000);
        recent.push(ev::at(
            "new",
            5,
            95 * day + 10_000,
            InteractionEventKind::Recording {
                path: "/rec/new.wav".into(),
            },
        ));
        store.insert_events_batch(&old).await.unwrap();
        store.insert_events_batch(&recent).await.unwrap();
        store
            .save_customer(
                &customer("gone", "A-9", &["+14155550177"], Tier::Normal, None),
                "admin",
                Timestamp::from_millis(day),
            )
            .await
            .unwrap();
        store
            .save_customer(
                &customer("kept", "A-8", &["+14155550178"], Tier::Normal, None),
                "admin",
                now,
            )
            .await
            .unwrap();

        let spring = CampaignId::new("spring").unwrap();
        let leads = "id,phone\nold-lead,+14155550190\n";
        store
            .import_leads_csv(&spring, leads, "admin", Timestamp::from_millis(day))
            .await
            .unwrap();
        let new_leads = "id,phone\nnew-lead,+14155550191\n";
        store
            .import_leads_csv(&spring, new_leads, "admin", now)
            .await
            .unwrap();

        let outcome = store.apply_retention(now, 30).await.unwrap();
        assert_eq!(outcome.leads_masked, 1, "{}", target.label());
        let remaining: Vec<String> = store
            .campaign_leads(&spring)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.phone.expose().clone())
            .collect();
        assert_eq!(remaining, ["+14155550191", ""], "by id: new-lead, old-lead");
        assert_eq!(
            store.dialable_leads(&spring, now, 10).await.unwrap().len(),
            1,
            "blanked leads are never dialled"
        );
        assert_eq!(
            outcome.recordings_to_delete,
            vec![std::path::PathBuf::from("/rec/old.wav")],
            "{}",
            target.label()
        );
        assert_eq!((outcome.interactions_masked, outcome.customers_masked), (1, 1));
        assert_eq!(
            outcome.events_masked, 3,
            "arrived, wrapped_up and recording carry personal data"
        );
        let row = store.interaction(&ev::id("old")).await.unwrap().unwrap();
        assert_eq!(
            (row.caller_number, row.notes, row.recording_path),
            (None, None, None)
        );
        assert_eq!(row.talk_ms, Some(1_000), "figures stay for reports");
        assert!(
            store
                .interaction(&ev::id("new"))
                .await
                .unwrap()
                .unwrap()
                .caller_number
                .is_some()
        );
        let gone = store
            .customer(&CustomerId::new("gone").unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (gone.name.expose().as_str(), gone.phones.len(), gone.email),
            (MASKED_NAME, 0, None)
        );
        assert!(
            store
                .find_customer_by_phone("+14155550178")
                .await
                .unwrap()
                .is_some()
        );

        let again = store.apply_retention(now, 30).await.unwrap();
        assert_eq!(
            (
                again.interactions_masked,
                again.customers_masked,
                again.recordings_to_delete.len()
            ),
            (0, 0, 0)
        );
        let log = store.audit_log(now).await.unwrap();
        assert!(
            log.iter()
                .any(|e| e.action == "retention.apply" && e.detail.contains("interactions=1"))
        );
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn csv_import_reports_bad_rows_and_imports_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("import", dir.path()) {
        let store = target.store().await;
        let now = Timestamp::from_secs(50);
        store
            .save_customer(&customer("owner", "ACC-X", &[], Tier::Key, None), "admin", now)
            .await
            .unwrap();
        let customers = "id,name,phones,tier,lifetime_value,account_number\n\
                         c1,Ann,415-555-0100,major,10.50,\n\
                         c2,,415-555-0101,,,\n\
                         c3,Cy,bad-number,key,,\n\
                         c4,Di,+44 20 7946 0958,small,,ACC-4\n\
                         c5,Ed,,,,ACC-X\n";
        let report = store.import_customers_csv(customers, "admin", now).await.unwrap();
        assert_eq!(
            (report.imported, report.rejected_rows),
            (2, 3),
            "{}",
            target.label()
        );
        assert_eq!(
            report
                .problems
                .iter()
                .map(|p| (p.row, p.column.as_str()))
                .collect::<Vec<_>>(),
            [(3, "name"), (4, "phones"), (6, "account_number")]
        );
        let c1 = store.find_customer_by_phone("4155550100").await.unwrap().unwrap();
        assert_eq!(
            (c1.customer.tier, c1.customer.lifetime_value_cents),
            (Tier::Major, 1_050)
        );
        assert!(
            store
                .customer(&CustomerId::new("c3").unwrap())
                .await
                .unwrap()
                .is_none()
        );

        let campaign = CampaignId::new("spring").unwrap();
        let leads = "ID,Phone,Name\nl1,(415) 555-0150,Ed\nl2,,Flo\nl3,0044 20 7946 0959,Gus\n";
        let report = store
            .import_leads_csv(&campaign, leads, "admin", now)
            .await
            .unwrap();
        assert_eq!((report.imported, report.rejected_rows), (2, 1));
        let stored = store.campaign_leads(&campaign).await.unwrap();
        let phones: Vec<&str> = stored.iter().map(|l| l.phone.expose().as_str()).collect();
        assert_eq!(phones, ["+14155550150", "+442079460959"]);
        let actions: Vec<String> = store
            .audit_log(now)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(actions, ["customer.save", "customer.import", "lead.import"]);
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn campaigns_and_dialable_leads_skip_do_not_call() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("campaigns", dir.path()) {
        let store = target.store().await;
        let now = Timestamp::from_secs(1_000);
        let campaign = crm_store::Campaign {
            id: CampaignId::new("renewals").unwrap(),
            name: "Renewals".into(),
            mode: crm_store::DialMode::Predictive,
            queue: Some(domain::QueueId::new("outbound").unwrap()),
            status: "running".into(),
            max_abandon_rate: 0.03,
        };
        store.save_campaign(&campaign, "admin", now).await.unwrap();
        assert_eq!(
            store.campaign(&campaign.id).await.unwrap(),
            Some(campaign.clone()),
            "{}",
            target.label()
        );
        let leads = "id,phone\nl1,+14155550001\nl2,+14155550002\nl3,+14155550003\n";
        store
            .import_leads_csv(&campaign.id, leads, "admin", now)
            .await
            .unwrap();
        store
            .add_do_not_call("+14155550002", "opt-out", "admin", now)
            .await
            .unwrap();
        let l1 = domain::LeadId::new("l1").unwrap();
        let retry = Timestamp::from_secs(2_000);
        assert!(
            store
                .record_lead_attempt(&l1, "no_answer", now, Some(retry))
                .await
                .unwrap()
        );
        let ids = |v: Vec<domain::LeadId>| v.into_iter().map(|l| l.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ids(store.dialable_leads(&campaign.id, now, 10).await.unwrap()),
            ["l3"]
        );
        assert_eq!(
            ids(store.dialable_leads(&campaign.id, retry, 10).await.unwrap()),
            ["l1", "l3"]
        );
        let bad = crm_store::Campaign {
            max_abandon_rate: 3.0,
            ..campaign
        };
        assert!(store.save_campaign(&bad, "admin", now).await.is_err());
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn lead_progress_round_trips_for_a_restarted_dialer() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("lead_progress", dir.path()) {
        let store = target.store().await;
        let now = Timestamp::from_secs(1_000);
        let campaign = CampaignId::new("winback").unwrap();
        let leads = "id,phone,name,timezone,customer_id\nl1,+14155550001,Ada,America/Los_Angeles,c1\nl2,+14155550002,,,\n";
        store
            .import_leads_csv(&campaign, leads, "admin", now)
            .await
            .unwrap();
        let fresh = store.campaign_lead_progress(&campaign).await.unwrap();
        assert_eq!(fresh.len(), 2, "{}", target.label());
        assert_eq!(fresh[0].1.status, "new");
        assert_eq!(fresh[0].1.attempts, 0);
        assert_eq!(fresh[0].0.name.as_ref().map(|n| n.expose().as_str()), Some("Ada"));
        assert_eq!(fresh[0].0.customer.as_ref().map(|c| c.as_str()), Some("c1"));
        let l1 = domain::LeadId::new("l1").unwrap();
        let saved = crm_store::LeadProgress {
            status: "callback".into(),
            attempts: 4,
            busy_attempts: 1,
            no_answer_attempts: 1,
            machine_attempts: 0,
            abandoned_attempts: 1,
            failed_attempts: 0,
            last_attempt_at: Some(Timestamp::from_secs(2_000)),
            next_attempt_at: Some(Timestamp::from_secs(3_000)),
            last_abandoned_at: Some(Timestamp::from_secs(1_500)),
            callback_at: Some(Timestamp::from_secs(90_000)),
            callback_agent: Some(domain::AgentId::new("1001").unwrap()),
        };
        assert!(store.save_lead_progress(&l1, &saved).await.unwrap());
        let missing = domain::LeadId::new("nope").unwrap();
        assert!(!store.save_lead_progress(&missing, &saved).await.unwrap());
        let bad = crm_store::LeadProgress {
            status: String::new(),
            ..saved.clone()
        };
        assert!(store.save_lead_progress(&l1, &bad).await.is_err());
        let back = store.campaign_lead_progress(&campaign).await.unwrap();
        assert_eq!(back[0].1, saved, "{}", target.label());
        assert_eq!(back[1].1.status, "new", "the other lead is untouched");
        // A save without an attempt time keeps the stored one.
        let closed = crm_store::LeadProgress {
            status: "dnc".into(),
            last_attempt_at: None,
            ..saved.clone()
        };
        assert!(store.save_lead_progress(&l1, &closed).await.unwrap());
        let back = store.campaign_lead_progress(&campaign).await.unwrap();
        assert_eq!(back[0].1.last_attempt_at, saved.last_attempt_at);
        assert_eq!(back[0].1.status, "dnc");
        // The dialer's campaign status.
        assert!(
            !store.set_campaign_status(&campaign, "paused").await.unwrap(),
            "no such campaign yet"
        );
        let saved_campaign = crm_store::Campaign {
            id: campaign.clone(),
            name: "Win back".into(),
            mode: crm_store::DialMode::Preview,
            queue: None,
            status: "running".into(),
            max_abandon_rate: 0.03,
        };
        store.save_campaign(&saved_campaign, "admin", now).await.unwrap();
        assert!(store.set_campaign_status(&campaign, "paused").await.unwrap());
        assert_eq!(
            store.campaign(&campaign).await.unwrap().map(|c| c.status),
            Some("paused".to_string())
        );
        // The plain status view agrees.
        let statuses = store.lead_statuses(&campaign).await.unwrap();
        assert!(statuses.contains(&(l1.clone(), "dnc".to_string())));
        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn in_memory_sqlite_works_for_other_crates_tests() {
    let store = crm_store::CrmStore::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    let now = Timestamp::from_secs(1);
    store
        .save_customer(
            &customer("m1", "M-1", &["+14155550111"], Tier::Major, None),
            "admin",
            now,
        )
        .await
        .unwrap();
    let card = store
        .find_customer_by_phone("(415) 555-0111")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(card.customer.tier, Tier::Major);
    assert_eq!(store.backend_kind(), crm_store::BackendKind::Sqlite);
    assert!(crm_store::CrmStore::connect("mysql://nope").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admin_jobs_and_event_batches_all_succeed() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("concurrent_jobs", dir.path()) {
        let store = target.store().await;
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..8i64 {
            let s = store.clone();
            tasks.spawn(async move {
                let id = format!("cj-{n}");
                s.insert_events_batch(&ev::answered_call(&id, "+14155550100", "q", "a", n, 1, 1))
                    .await
                    .map(|_| ())
            });
            let s = store.clone();
            // Reads, then writes: the pattern that SQLite refuses without an immediate write lock.
            tasks.spawn(async move {
                s.apply_retention(Timestamp::from_secs(100 + n), 0)
                    .await
                    .map(|_| ())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap()
                .unwrap_or_else(|e| panic!("{}: {e}", target.label()));
        }
        store.close().await;
        target.cleanup().await;
    }
}
