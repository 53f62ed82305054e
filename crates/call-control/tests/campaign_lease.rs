//! One dialer per campaign across nodes, and leads that continue where they stopped. Two nodes run
//! the same agentless campaign on one state store and one CRM database: only the lease holder dials;
//! when it dies (its runtime is dropped, nothing released) the standby takes the lease once it lapses,
//! loads every lead with its saved progress and goes on with the second attempts, never repeating a
//! first one. A lead the store shows mid-dial (its node died during the call) counts that attempt.
//! With no SIP gateway every dial fails at once, which is all the retry rules need to see. Runs on the
//! memory backend and, when `REDIS_URL` is set, on Redis. A supervisor's pause, resume and stop taken
//! by the node that does not dial reach the one that does, and a node started later sees the stop.

// A failed unwrap here is a failed test.
#![allow(clippy::unwrap_used)]

use call_control::{
    CallControl, CampaignConfig, CampaignHandle, CampaignLiveStats, DeskHub, DialerMetrics, EventSink,
};
use domain::{CampaignId, InteractionEvent, LeadId, Timestamp};
use state_store::{StateConfig, StateStore};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

struct Nowhere;
impl EventSink for Nowhere {
    fn log(&self, _: InteractionEvent) {}
}

#[derive(Clone)]
enum Backend {
    Memory(StateStore),
    Redis { url: String, prefix: String },
}

impl Backend {
    async fn store(&self) -> StateStore {
        match self {
            Backend::Memory(s) => s.clone(),
            Backend::Redis { url, prefix } => {
                StateStore::connect(&StateConfig::redis(url.clone(), prefix.clone()))
                    .await
                    .unwrap()
            }
        }
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fixed-offset zone where it is now around noon, so the calling window is open.
fn zone_at_noon() -> String {
    let hour = (Timestamp::now_utc().as_millis() / 3_600_000) % 24;
    match 12 - hour {
        0 => "Etc/GMT".into(),
        east if east > 0 => format!("Etc/GMT-{east}"),
        west => format!("Etc/GMT+{}", -west),
    }
}

fn campaign_config(retry: &str) -> CampaignConfig {
    let message = repo().join("ivr-scripts/prompts/goodbye.wav");
    toml::from_str(&format!(
        "id = \"winback\"\nmode = \"agentless\"\ncaller_id = \"+442070000000\"\nmessage = \"{}\"\ntick_ms = 100\n\
         [retry]\nfailed = {{ {retry} }}\n",
        message.display()
    ))
    .unwrap()
}

const TWO_TRIES: &str = "delay_secs = 5, max_attempts = 2";

/// A node: its own runtime (dropping it is the node dying), call control and the campaign's runner.
struct Node {
    rt: tokio::runtime::Runtime,
    handle: CampaignHandle,
}

fn start_node(name: &str, backend: &Backend, db: &Path, retry: &str) -> Node {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handle = rt.block_on(async {
        let crm = crm_store::CrmStore::connect(&format!("sqlite:{}", db.display()))
            .await
            .unwrap();
        let acd_config = acd::AcdConfig {
            queues: Vec::new(),
            agents: Vec::new(),
            random_seed: 1,
        };
        let spec = campaign_config(retry).spec(&acd_config).unwrap();
        let calls = CallControl::new(
            name,
            call_control::Services {
                media: media::engine::MediaEngine::new(media::engine::MediaConfig::default()).unwrap(),
                flows: Arc::new(ivr::FlowSetHandle::new(
                    ivr::load_dir(repo().join("ivr-scripts")).unwrap(),
                )),
                crm,
                acd: call_control::AcdHandle::start(acd_config, false, None).unwrap(),
                events: Arc::new(Nowhere),
                state: backend.store().await,
                desks: DeskHub::new(),
                hold_music: None,
                webrtc: None,
                outbound: None,
            },
            false,
        );
        calls.start_campaign(spec, DialerMetrics::default())
    });
    Node { rt, handle }
}

/// Waits (at most 20 s) for the node's figures to satisfy `done`.
async fn figures_until(
    node: &CampaignHandle,
    what: &str,
    done: impl Fn(&CampaignLiveStats) -> bool,
) -> CampaignLiveStats {
    let mut watch = node.watch();
    let wait = async {
        loop {
            let now = watch.borrow_and_update().clone();
            if done(&now) {
                return now;
            }
            watch.changed().await.unwrap();
        }
    };
    match tokio::time::timeout(Duration::from_secs(20), wait).await {
        Ok(figures) => figures,
        Err(_) => panic!("{what}: {:?}", node.stats()),
    }
}

async fn progress(crm: &crm_store::CrmStore) -> Vec<(String, crm_store::LeadProgress)> {
    crm.campaign_lead_progress(&CampaignId::new("winback").unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|(l, p)| (l.id.to_string(), p))
        .collect()
}

fn one_node_dials_and_a_standby_continues_the_leads_when_it_dies(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    let test = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let crm = test.block_on(async {
        let crm = crm_store::CrmStore::connect(&format!("sqlite:{}", db.display()))
            .await
            .unwrap();
        crm.migrate().await.unwrap();
        let zone = zone_at_noon();
        let csv: String = [
            "a,+442079000001",
            "b,+442079000002",
            "c,+442079000003",
            "d,+442079000004",
        ]
        .iter()
        .map(|l| format!("{l},{zone}\n"))
        .collect();
        let id = CampaignId::new("winback").unwrap();
        crm.import_leads_csv(
            &id,
            &format!("id,phone,timezone\n{csv}"),
            "test",
            Timestamp::now_utc(),
        )
        .await
        .unwrap();
        crm.save_campaign(
            &crm_store::Campaign {
                id,
                name: "Win back".into(),
                mode: crm_store::DialMode::Agentless,
                queue: None,
                status: "running".into(),
                max_abandon_rate: 0.03,
            },
            "test",
            Timestamp::now_utc(),
        )
        .await
        .unwrap();
        // d was being dialled when an earlier node died.
        let dialing = crm_store::LeadProgress {
            status: "dialing".into(),
            attempts: 1,
            ..Default::default()
        };
        assert!(
            crm.save_lead_progress(&LeadId::new("d").unwrap(), &dialing)
                .await
                .unwrap()
        );
        crm
    });

    let nodes = [
        start_node("alpha", &backend, &db, TWO_TRIES),
        start_node("beta", &backend, &db, TWO_TRIES),
    ];
    // Whichever node takes the lease dials the three fresh leads; d waits for its failure delay.
    let (holder, standby) = test.block_on(async {
        let first = tokio::select! {
            f = figures_until(&nodes[0].handle, "alpha dials", |f| f.dials == 3 && f.lines_active == 0) => (0, f),
            f = figures_until(&nodes[1].handle, "beta dials", |f| f.dials == 3 && f.lines_active == 0) => (1, f),
        };
        (first.0, 1 - first.0)
    });
    let holder_name = nodes[holder].handle.stats().lease_holder.unwrap();
    test.block_on(async {
        let s = figures_until(&nodes[standby].handle, "the standby sees the holder", |f| {
            f.lease_holder.as_deref() == Some(holder_name.as_str())
        })
        .await;
        assert!(!s.dialing_here);
        assert_eq!(s.dials, 0, "only the lease holder dials");
        // Every first attempt is stored before the holder dies.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let p = progress(&crm).await;
            if p.iter().all(|(_, p)| p.status == "failed") {
                for (lead, p) in &p {
                    assert_eq!((p.attempts, p.failed_attempts), (1, 1), "{lead}: {p:?}");
                    assert!(p.next_attempt_at.is_some(), "{lead}");
                }
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{p:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert_eq!(
        nodes[standby].handle.stats().dials,
        0,
        "only the lease holder dials"
    );

    // The holder dies without letting go; the standby takes over when the lease lapses.
    let [a, b] = nodes;
    let (dead, alive) = if holder == 0 { (a, b) } else { (b, a) };
    dead.rt.shutdown_background();
    let figures = test.block_on(figures_until(
        &alive.handle,
        "the standby takes over and dials the second attempts",
        |f| f.dialing_here && f.dials == 4 && f.lines_active == 0 && f.leads_exhausted == 4,
    ));
    assert_ne!(figures.lease_holder.as_deref(), Some(holder_name.as_str()));
    let (rows, progress) = test.block_on(async {
        let id = CampaignId::new("winback").unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let p = progress(&crm).await;
            if p.iter().all(|(_, p)| p.status == "exhausted") {
                break (crm.dial_attempts(&id).await.unwrap(), p);
            }
            assert!(tokio::time::Instant::now() < deadline, "{p:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    for (lead, p) in &progress {
        assert_eq!((p.attempts, p.failed_attempts), (2, 2), "{lead}: {p:?}");
    }
    let node_of = |id: &str| id.split('-').next().unwrap_or("").to_string();
    let holder_node = if holder_name.starts_with("alpha") {
        "alpha"
    } else {
        "beta"
    };
    for lead in ["a", "b", "c"] {
        let tries: Vec<_> = rows.iter().filter(|r| r.lead.as_str() == lead).collect();
        assert_eq!(tries.len(), 2, "{lead}: {rows:#?}");
        assert_eq!((tries[0].attempt, tries[1].attempt), (1, 2));
        assert_eq!(
            node_of(&tries[0].id),
            holder_node,
            "the first attempt by the holder"
        );
        assert_ne!(node_of(&tries[1].id), holder_node, "the second by the standby");
        assert!(tries.iter().all(|r| r.outcome == "failed"));
    }
    // d's attempt that died with a node counted: its next is the second.
    let d: Vec<_> = rows.iter().filter(|r| r.lead.as_str() == "d").collect();
    assert_eq!(d.len(), 1, "{rows:#?}");
    assert_eq!(d[0].attempt, 2);
    alive.rt.shutdown_background();
}

/// Leads dialled again and again (every dial fails at once), so a dialling node keeps dialling.
const MANY_TRIES: &str = "delay_secs = 1, max_attempts = 1000";

async fn new_crm(db: &Path, leads: usize) -> crm_store::CrmStore {
    let crm = crm_store::CrmStore::connect(&format!("sqlite:{}", db.display()))
        .await
        .unwrap();
    crm.migrate().await.unwrap();
    let zone = zone_at_noon();
    let csv: String = (0..leads)
        .map(|i| format!("l{i},+4420790000{i:02},{zone}\n"))
        .collect();
    let id = CampaignId::new("winback").unwrap();
    crm.import_leads_csv(
        &id,
        &format!("id,phone,timezone\n{csv}"),
        "test",
        Timestamp::now_utc(),
    )
    .await
    .unwrap();
    crm.save_campaign(
        &crm_store::Campaign {
            id,
            name: "Win back".into(),
            mode: crm_store::DialMode::Agentless,
            queue: None,
            status: "running".into(),
            max_abandon_rate: 0.03,
        },
        "test",
        Timestamp::now_utc(),
    )
    .await
    .unwrap();
    crm
}

/// A supervisor's pause, resume and stop taken by the node that does not dial reach the one that
/// does; a node started after the stop finds the campaign stopped and dials nothing.
fn control_taken_by_a_standby_reaches_the_dialing_node(backend: Backend) {
    use call_control::CampaignAction;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    let test = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _crm = test.block_on(new_crm(&db, 4));
    let nodes = [
        start_node("alpha", &backend, &db, MANY_TRIES),
        start_node("beta", &backend, &db, MANY_TRIES),
    ];
    let holder = test.block_on(async {
        tokio::select! {
            _ = figures_until(&nodes[0].handle, "alpha dials", |f| f.dials >= 4) => 0,
            _ = figures_until(&nodes[1].handle, "beta dials", |f| f.dials >= 4) => 1,
        }
    });
    let (dialer, standby) = (&nodes[holder].handle, &nodes[1 - holder].handle);
    test.block_on(async {
        assert_eq!(standby.stats().dials, 0, "only the lease holder dials");
        assert_eq!(
            standby.control(CampaignAction::Pause).await,
            Ok(dialer::campaign::CampaignState::Paused)
        );
        let paused = figures_until(dialer, "the dialing node pauses", |f| {
            f.state == "paused" && f.lines_active == 0
        })
        .await;
        // Ten ticks and a retry delay later, not one more dial: the pause held.
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        assert_eq!(dialer.stats().dials, paused.dials, "no dial while paused");
        assert_eq!(dialer.stats().state, "paused");

        assert_eq!(
            standby.control(CampaignAction::Resume).await,
            Ok(dialer::campaign::CampaignState::Running)
        );
        figures_until(dialer, "the dialing node dials again", |f| {
            f.state == "running" && f.dials > paused.dials
        })
        .await;

        assert_eq!(
            standby.control(CampaignAction::Stop).await,
            Ok(dialer::campaign::CampaignState::Stopped)
        );
        figures_until(dialer, "the dialing node stops", |f| f.state == "stopped").await;
    });
    // A node started after the stop reads it (whether it takes the lease or not) and dials nothing.
    let late = start_node("gamma", &backend, &db, MANY_TRIES);
    test.block_on(async {
        let f = figures_until(&late.handle, "the late node sees the stop", |f| {
            f.state == "stopped"
        })
        .await;
        assert_eq!(f.dials, 0);
        let again = late.handle.control(CampaignAction::Resume).await;
        assert!(again.is_err(), "a stopped campaign stays stopped: {again:?}");
    });
    for n in nodes {
        n.rt.shutdown_background();
    }
    late.rt.shutdown_background();
}

#[test]
fn campaign_control_reaches_every_node_on_memory() {
    control_taken_by_a_standby_reaches_the_dialing_node(Backend::Memory(StateStore::memory()));
}

#[test]
fn campaign_control_reaches_every_node_on_redis() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        assert!(std::env::var("CI").is_err(), "CI must provide REDIS_URL");
        eprintln!("REDIS_URL unset: skipping campaign_control_reaches_every_node_on_redis");
        return;
    };
    let prefix = format!("dialercontrol{}", std::process::id());
    control_taken_by_a_standby_reaches_the_dialing_node(Backend::Redis { url, prefix });
}

#[test]
fn one_dialer_per_campaign_on_memory() {
    one_node_dials_and_a_standby_continues_the_leads_when_it_dies(Backend::Memory(StateStore::memory()));
}

#[test]
fn one_dialer_per_campaign_on_redis() {
    let Ok(url) = std::env::var("REDIS_URL") else {
        assert!(std::env::var("CI").is_err(), "CI must provide REDIS_URL");
        eprintln!("REDIS_URL unset: skipping one_dialer_per_campaign_on_redis");
        return;
    };
    let prefix = format!("dialerlease{}", std::process::id());
    one_node_dials_and_a_standby_continues_the_leads_when_it_dies(Backend::Redis { url, prefix });
}
