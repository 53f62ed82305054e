//! What supervisors and admins read and change: agent-state history and the agent report built from
//! it, customer merge, users' languages, interaction search. The same suite on every backend.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] functions

mod common;

use common::{ev, targets};
use crm_store::{AgentStateRecorder, Customer, CustomerFilter, InteractionFilter, Role, Tier, User};
use domain::{AgentId, CustomerId, InteractionEventKind, Pii, Timestamp};

fn customer(id: &str, account: &str, name: &str, phones: &[&str], tier: Tier) -> Customer {
    Customer {
        id: CustomerId::new(id).unwrap(),
        account_number: Some(account.into()),
        name: Pii::new(name.to_string()),
        phones: phones.iter().map(|p| Pii::new(p.to_string())).collect(),
        email: None,
        tier,
        account_manager: None,
        lifetime_value_cents: 0,
        notes: None,
    }
}

#[tokio::test]
async fn every_state_is_recorded_once_by_every_node_and_fills_the_agent_report() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("agent_history", dir.path()) {
        let store = target.store().await;
        // Two nodes hear the same router events; the rows come out once.
        let node_a = AgentStateRecorder::new(store.clone());
        let node_b = AgentStateRecorder::new(store.clone());
        let alice = AgentId::new("alice").unwrap();
        let t0 = 1_700_000_000_000i64;
        let at = |s: i64| Timestamp::from_millis(t0 + s * 1000);
        let changes: [(&str, Option<&str>, i64); 7] = [
            ("available", None, 0),
            ("reserved", None, 10),
            ("on_call", None, 15),
            ("wrap_up", None, 75),
            ("not_ready", Some("lunch"), 95),
            ("available", None, 395),
            ("logged_out", None, 400),
        ];
        for (state, reason, s) in changes {
            node_a.observe(&alice, state, reason, at(s)).await.unwrap();
            node_b.observe(&alice, state, reason, at(s)).await.unwrap();
        }
        node_a.extend_open(at(500)).await.unwrap();
        let spans = store.agent_state_spans(at(0), at(1000)).await.unwrap();
        assert_eq!(spans.len(), 7, "{}: {spans:?}", target.label());
        assert_eq!(
            spans.last().unwrap().ended_at,
            t0 + 500_000,
            "the open span reaches now"
        );

        let report = store.agent_report(at(0), at(450)).await.unwrap();
        let row = report.rows.iter().find(|r| r.agent == "alice").unwrap();
        assert_eq!(row.login_ms, 400_000);
        assert_eq!(row.available_ms, 15_000);
        assert_eq!(row.reserved_ms, 5_000);
        assert_eq!(row.on_call_ms, 60_000);
        assert_eq!(row.wrap_up_ms, 20_000);
        assert_eq!(row.not_ready_ms, 300_000);
        assert_eq!(row.not_ready_by_reason.get("lunch"), Some(&300_000));
        // (60 + 20) / (60 + 20 + 15 + 5)
        assert_eq!(row.occupancy, Some(0.8));
        assert_eq!(row.adherence_ready, Some(100_000.0 / 400_000.0));

        // A restart: the new process seeds the state it finds and closes it on the next change.
        let restarted = AgentStateRecorder::new(store.clone());
        restarted
            .seed(&alice, "logged_out", None, at(400), at(600))
            .await
            .unwrap();
        restarted
            .observe(&alice, "available", None, at(700))
            .await
            .unwrap();
        let spans = store.agent_state_spans(at(0), at(1000)).await.unwrap();
        assert_eq!(spans.len(), 8);
        assert_eq!(spans[6].ended_at, t0 + 700_000);

        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn duplicates_merge_into_one_customer_with_their_numbers_and_history_audited() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("customer_merge", dir.path()) {
        let store = target.store().await;
        let now = Timestamp::from_secs(1_700_000_000);
        store
            .save_customer(
                &customer("c1", "A-1", "Wang Fang", &["+8613800138000"], Tier::Key),
                "admin",
                now,
            )
            .await
            .unwrap();
        store
            .save_customer(
                &customer("c2", "A-2", "Wang  Fang", &["+8613900139000"], Tier::Normal),
                "admin",
                now,
            )
            .await
            .unwrap();
        let mut events = vec![ev::at(
            "i-c2",
            0,
            now.as_millis(),
            InteractionEventKind::CustomerIdentified {
                customer: CustomerId::new("c2").unwrap(),
                tier: "normal".into(),
            },
        )];
        events.push(ev::at(
            "i-c2",
            1,
            now.as_millis() + 1000,
            InteractionEventKind::WrappedUp {
                agent: AgentId::new("alice").unwrap(),
                disposition: "sale".into(),
                notes: Pii::new(String::new()),
            },
        ));
        store.insert_events_batch(&events).await.unwrap();

        let found = store
            .list_customers(&CustomerFilter {
                text: Some("wang".into()),
                ..CustomerFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(found.len(), 2, "{}", target.label());
        let by_number = store
            .list_customers(&CustomerFilter {
                text: Some("+86 139 0013 9000".into()),
                ..CustomerFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(by_number.len(), 1);

        let keep = CustomerId::new("c1").unwrap();
        let dup = CustomerId::new("c2").unwrap();
        store.merge_customers(&keep, &dup, "admin", now).await.unwrap();
        assert!(
            store.merge_customers(&keep, &dup, "admin", now).await.is_err(),
            "merged once"
        );
        assert!(store.merge_customers(&keep, &keep, "admin", now).await.is_err());
        let card = store
            .find_customer_by_phone("+8613900139000")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            card.customer.id, keep,
            "the duplicate's number finds the kept record"
        );
        assert_eq!(card.recent.len(), 1, "the duplicate's history moved");
        assert_eq!(store.merged_into(&dup).await.unwrap(), Some(keep.clone()));
        let left = store.list_customers(&CustomerFilter::default()).await.unwrap();
        assert_eq!(left.len(), 1);
        let audit = store.audit_log(now).await.unwrap();
        assert!(
            audit
                .iter()
                .any(|a| a.action == "customer.merge" && a.detail == "merged=c2")
        );

        let found = store
            .search_interactions(&InteractionFilter {
                customer: Some(keep.clone()),
                disposition: Some("sale".into()),
                ..InteractionFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, "i-c2");
        assert!(!found[0].has_recording);
        let none = store
            .search_interactions(&InteractionFilter {
                disposition: Some("complaint".into()),
                ..InteractionFilter::default()
            })
            .await
            .unwrap();
        assert!(none.is_empty());

        store.close().await;
        target.cleanup().await;
    }
}

#[tokio::test]
async fn a_user_keeps_a_preferred_language() {
    let dir = tempfile::tempdir().unwrap();
    for target in targets("user_language", dir.path()) {
        let store = target.store().await;
        let now = Timestamp::from_secs(1_700_000_000);
        let id = AgentId::new("sam").unwrap();
        store
            .save_user(
                &User {
                    id: id.clone(),
                    display_name: Pii::new("Sam".into()),
                    role: Role::Supervisor,
                    password_hash: None,
                    active: true,
                },
                "admin",
                now,
            )
            .await
            .unwrap();
        assert_eq!(store.user_language(&id).await.unwrap(), None);
        store
            .set_user_language(&id, Some("zh-CN"), "sam", now)
            .await
            .unwrap();
        assert_eq!(store.user_language(&id).await.unwrap().as_deref(), Some("zh-CN"));
        assert!(
            store
                .set_user_language(&id, Some("fr"), "sam", now)
                .await
                .is_err()
        );
        let nobody = AgentId::new("nobody").unwrap();
        assert!(
            store
                .set_user_language(&nobody, Some("en"), "sam", now)
                .await
                .is_err()
        );
        store.set_user_language(&id, None, "sam", now).await.unwrap();
        assert_eq!(store.user_language(&id).await.unwrap(), None);
        store.close().await;
        target.cleanup().await;
    }
}
