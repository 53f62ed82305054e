//! Live campaign dialing end to end. SIPp plays the telephone network behind the outbound trunk (the
//! dialled number picks the outcome: a person, busy, an answering machine, nobody), the agent is a CTI
//! client with a SIPp phone. The campaign dials five leads at once for its one agent (fixed ratio 5):
//! one person reaches the agent, the other person gets no agent within 2 s of their greeting and hears
//! the identification message (an abandoned call, counted), the busy lead is retried and then
//! exhausted, the machine is hung up on, the silent line rings its 15 s. Every attempt has its row in
//! the CRM store; the connected call is an outbound interaction with the agent's disposition.

use serde_json::json;
use std::time::{Duration, Instant};
use system_tests::cti::CtiClient;
use system_tests::outbound::{campaign_config, identification_message, zone_at_noon};
use system_tests::pcap::{Audio, write_rtp_pcap};
use system_tests::*;

const CAMPAIGN_CONFIG: &str = r#"
[[desk.user]]
id = "super"
name = "Sam Supervisor"
role = "supervisor"
password = "supervisor"

[[trunk]]
name = "carrier"
uri = "sip:127.0.0.1:CARRIER_PORT"

[[campaign]]
id = "spring"
name = "Spring offer"
mode = "predictive"
queue = "outbound"
pacing = "fixed:5"
caller_id = "+442070000000"
leads = "LEADS"
message = "MESSAGE"
tick_ms = 200
max_lines = 10
state = "paused"

[campaign.compliance]
rules = "us"
ring_secs = 15

[campaign.retry]
busy = { delay_secs = 1, max_attempts = 2 }
"#;

fn attempts(platform: &Platform) -> Vec<crm_store::DialAttempt> {
    let url = format!("sqlite:{}/cc.db", platform.dir.path().display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let crm = crm_store::CrmStore::connect(&url).await.expect("crm");
        let campaign = domain::CampaignId::new("spring").expect("id");
        crm.dial_attempts(&campaign).await.expect("attempts")
    })
}

/// Waits (bounded) until the stored attempts satisfy `done`.
fn attempts_until(
    platform: &Platform,
    what: &str,
    done: impl Fn(&[crm_store::DialAttempt]) -> bool,
) -> Vec<crm_store::DialAttempt> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = attempts(platform);
        if done(&rows) {
            return rows;
        }
        assert!(Instant::now() < deadline, "{what}: {rows:#?}\n{}", platform.log());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn of<'a>(rows: &'a [crm_store::DialAttempt], lead: &str) -> Vec<&'a crm_store::DialAttempt> {
    rows.iter().filter(|r| r.lead.as_str() == lead).collect()
}

fn millis(a: Option<domain::Timestamp>, b: Option<domain::Timestamp>) -> i64 {
    b.expect("later").as_millis() - a.expect("earlier").as_millis()
}

#[test]
fn a_predictive_campaign_connects_a_person_abandons_one_with_the_message_and_records_every_attempt() {
    require_command("sipp");
    // The network's voices: a person says "Hello?" and waits; a machine talks on.
    let network = tempfile::tempdir().expect("tempdir");
    write_rtp_pcap(
        &network.path().join("human.pcap"),
        &[Audio::Voice { ms: 600 }, Audio::Silence { ms: 6000 }],
    )
    .expect("human.pcap");
    write_rtp_pcap(
        &network.path().join("machine.pcap"),
        &[Audio::Voice { ms: 4000 }, Audio::Silence { ms: 1000 }],
    )
    .expect("machine.pcap");
    // Six calls: two people, the busy line twice, the machine, the silent line.
    let carrier = SippServer::start_in("uas_campaign.xml", 6, network.path());
    let zone = zone_at_noon();
    let leads = network.path().join("leads.csv");
    let csv = [
        "human-1,+442079000001",
        "human-2,+442079000002",
        "busy,+442079000003",
        "machine,+442079000004",
        "silent,+442079000005",
        "listed,+442079000006",
    ]
    .iter()
    .map(|l| format!("{l},{zone}\n"))
    .collect::<String>();
    std::fs::write(&leads, format!("id,phone,timezone\n{csv}")).expect("leads");
    let platform = Platform::start(&campaign_config(CAMPAIGN_CONFIG, carrier.port, &leads));

    // The campaign starts paused; the agent logs in with a SIPp phone.
    let agent_phone = SippServer::start("uas", 1);
    register_agent_phone(&platform, "1001", "agent1001", agent_phone.port);
    let token = platform.login("1001", "agent1001");
    let rt = runtime();
    let mut ws = rt.block_on(async {
        let mut ws = CtiClient::connect(platform.http, "/ws/agent", &token).await;
        assert_eq!(ws.next_of("welcome").await["state"]["state"], "logged_out");
        assert_eq!(ws.ask(json!({"type": "login", "id": 1})).await["type"], "ack");
        ws.next_where(|f| f["type"] == "state" && f["state"] == "available")
            .await;
        ws
    });
    // Only supervisors run campaigns; the supervisor resumes it and dialling starts.
    let (status, _) = platform.http_post("/api/v1/campaigns/spring/resume", "", Some(&token));
    assert_eq!(status, 403, "agents cannot resume campaigns");
    let supervisor = platform.login("super", "supervisor");
    let (status, body) = platform.http_get_as("/api/v1/campaigns", &supervisor);
    assert_eq!(status, 200, "{body}");
    let figures: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(figures["campaigns"][0]["state"], "paused", "{figures}");
    assert_eq!(figures["campaigns"][0]["dials"], 0, "paused: nothing dialled");
    assert!(attempts(&platform).is_empty(), "paused: no attempts");
    let (status, body) = platform.http_post("/api/v1/campaigns/spring/launch", "", Some(&supervisor));
    assert_eq!(status, 400, "{body}");
    let (status, body) = platform.http_post("/api/v1/campaigns/winter/resume", "", Some(&supervisor));
    assert_eq!(status, 404, "{body}");
    // One lead's number joins the do-not-call list after the import: it is checked at dial time.
    let url = format!("sqlite:{}/cc.db", platform.dir.path().display());
    rt.block_on(async {
        let crm = crm_store::CrmStore::connect(&url).await.expect("crm");
        crm.add_do_not_call("+442079000006", "tps", "test", domain::Timestamp::now_utc())
            .await
            .expect("dnc");
    });
    let (status, body) = platform.http_post("/api/v1/campaigns/spring/resume", "", Some(&supervisor));
    assert_eq!(
        (status, body.as_str()),
        (200, r#"{"campaign":"spring","state":"running"}"#)
    );

    // The agent gets one of the two people, on their phone.
    let (call, person) = rt.block_on(async {
        let pop = ws.next_of("offer").await["pop"].clone();
        assert_eq!(pop["direction"], "outbound", "{pop}");
        assert_eq!(pop["queue"], "outbound", "{pop}");
        let caller = pop["caller"].as_str().expect("caller").to_string();
        assert!(
            caller == "+442079000001" || caller == "+442079000002",
            "a person is offered: {pop}"
        );
        let call = pop["call"].as_str().expect("call").to_string();
        ws.next_where(|f| {
            f["type"] == "call_phase" && f["phase"] == "connected" && f["call"] == call.as_str()
        })
        .await;
        (
            call,
            if caller.ends_with('1') {
                "human-1"
            } else {
                "human-2"
            },
        )
    });
    let other = if person == "human-1" { "human-2" } else { "human-1" };

    // Everything but the connected call finishes: the other person is abandoned, the busy lead is
    // tried twice, the machine is hung up on, the silent line gives up after its ring time.
    let rows = attempts_until(&platform, "every other attempt finished", |rows| {
        rows.len() >= 6 && rows.iter().filter(|r| r.outcome != "dialing").count() >= 5
    });
    let abandoned = of(&rows, other);
    assert_eq!(abandoned.len(), 1, "{rows:#?}");
    let abandoned = abandoned[0];
    assert_eq!(abandoned.outcome, "abandoned", "{abandoned:?}");
    assert!(abandoned.abandoned);
    assert_eq!(abandoned.amd_result.as_deref(), Some("human"));
    assert_eq!(abandoned.agent, None);
    // Verdict after "Hello?" and 0.8 s of silence, 2 s for an agent, then the whole message.
    let message = identification_message();
    let message_ms = (std::fs::metadata(&message).expect("message").len() as i64 - 44) / 16;
    let answered_to_bye = millis(abandoned.answered_at, abandoned.ended_at);
    assert!(
        answered_to_bye >= 2_000 + message_ms && answered_to_bye <= 2_000 + message_ms + 6_000,
        "the message ({message_ms} ms) was played after the 2 s and the call ended: {answered_to_bye} ms"
    );

    let busy = of(&rows, "busy");
    assert_eq!(busy.len(), 2, "busy is retried once: {busy:#?}");
    assert!(
        busy.iter()
            .all(|r| r.outcome == "busy" && r.answered_at.is_none())
    );
    assert_eq!((busy[0].attempt, busy[1].attempt), (1, 2));

    let machine = of(&rows, "machine");
    assert_eq!(machine.len(), 1);
    assert_eq!(machine[0].outcome, "machine");
    assert_eq!(machine[0].amd_result.as_deref(), Some("machine"));
    assert!(!machine[0].abandoned);

    let silent = of(&rows, "silent");
    assert_eq!(silent.len(), 1);
    assert_eq!(silent[0].outcome, "no_answer");
    let rang = millis(Some(silent[0].started_at), silent[0].ended_at);
    assert!((15_000..25_000).contains(&rang), "rang at least 15 s: {rang} ms");

    // The agent ends the call and saves the outcome, promising to call back personally in an hour.
    let callback_at = domain::Timestamp::now_utc().as_millis() + 3_600_000;
    rt.block_on(async {
        assert_eq!(
            ws.ask(json!({"type": "hangup", "id": 2, "call": call})).await["type"],
            "ack"
        );
        ws.next_where(|f| f["type"] == "call_phase" && f["phase"] == "wrap_up")
            .await;
        let f = ws
            .ask(json!({"type": "wrap_up", "id": 3, "call": call, "disposition": "sale", "notes": "Took the offer",
                        "callback": {"at": callback_at, "personal": true}}))
            .await;
        assert_eq!(f["type"], "ack", "{f}");
    });
    let rows = attempts_until(&platform, "the connected attempt finished", |rows| {
        rows.iter().all(|r| r.outcome != "dialing")
    });
    let connected = of(&rows, person);
    assert_eq!(connected.len(), 1);
    let connected = connected[0];
    assert_eq!(connected.id, call);
    assert_eq!(connected.outcome, "completed");
    assert_eq!(connected.amd_result.as_deref(), Some("human"));
    assert_eq!(connected.agent.as_ref().map(|a| a.as_str()), Some("1001"));
    assert!(!connected.abandoned);
    assert_eq!(
        connected.phone.expose(),
        if person == "human-1" {
            "+442079000001"
        } else {
            "+442079000002"
        }
    );

    assert_eq!(carrier.wait(), Some(0), "every call went as the network expected");
    assert_eq!(agent_phone.wait(), Some(0), "the agent's phone got the BYE");

    // The interactions: the connected one is an outbound call with the agent's disposition; the
    // abandoned one is flagged.
    let deadline = Instant::now() + Duration::from_secs(15);
    let interactions = loop {
        let all = platform.ended_interactions(6);
        let done = all
            .iter()
            .any(|i| i.row.id == call && i.row.disposition.is_some());
        if done {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "no disposition stored\n{}",
            platform.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let talked = interactions
        .iter()
        .find(|i| i.row.id == call)
        .expect("the connected interaction");
    assert_eq!(talked.row.direction.as_deref(), Some("outbound"));
    assert_eq!(talked.row.agent_id.as_deref(), Some("1001"));
    assert_eq!(talked.row.disposition.as_deref(), Some("sale"));
    assert_eq!(talked.row.campaign_id.as_deref(), Some("spring"));
    assert_eq!(talked.row.dial_outcome.as_deref(), Some("completed"));
    let dropped = interactions
        .iter()
        .find(|i| i.row.id == abandoned.id)
        .expect("the abandoned interaction");
    assert!(dropped.row.abandoned, "{:?}", dropped.row);
    assert_eq!(dropped.row.dial_outcome.as_deref(), Some("abandoned"));

    // The lead statuses: the busy lead is out of attempts, the connected person waits for the agent's
    // callback, the listed number is closed as do-not-call.
    let progress = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let crm = crm_store::CrmStore::connect(&url).await.expect("crm");
            crm.campaign_lead_progress(&domain::CampaignId::new("spring").expect("id"))
                .await
                .expect("progress")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let leads = loop {
        let leads = progress(&rt);
        let of = |id: &str| {
            leads
                .iter()
                .find(|(l, _)| l.id.as_str() == id)
                .map(|(_, p)| p.clone())
        };
        if of(person).is_some_and(|p| p.status == "callback") {
            break leads;
        }
        assert!(Instant::now() < deadline, "no callback stored: {leads:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let lead = |id: &str| {
        leads
            .iter()
            .find(|(l, _)| l.id.as_str() == id)
            .map(|(_, p)| p.clone())
            .expect("lead")
    };
    assert_eq!(lead("busy").status, "exhausted");
    assert_eq!((lead("busy").attempts, lead("busy").busy_attempts), (2, 2));
    let promised = lead(person);
    assert_eq!(promised.callback_at.map(|t| t.as_millis()), Some(callback_at));
    assert_eq!(promised.callback_agent.as_ref().map(|a| a.as_str()), Some("1001"));
    assert_eq!(promised.attempts, 1);
    assert_eq!(lead("machine").status, "machine");
    assert_eq!(lead("machine").machine_attempts, 1);
    assert_eq!(lead(other).status, "abandoned");
    assert!(lead(other).last_abandoned_at.is_some());
    assert_eq!(lead("listed").status, "dnc");
    assert_eq!(lead("listed").attempts, 0, "never dialled");

    // The runner's figures, by campaign only; no number in them or in the log.
    let (_, metrics) = platform.http_get("/metrics");
    for line in [
        "dialer_dials_total{campaign=\"spring\"} 6",
        "dialer_connects_total{campaign=\"spring\"} 1",
        "dialer_abandons_total{campaign=\"spring\"} 1",
        "dialer_outcomes_total{campaign=\"spring\",outcome=\"busy\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    // 1 abandoned of 2 people answered.
    assert!(
        metrics.contains("dialer_abandon_rate_ratio{campaign=\"spring\"} 0.5"),
        "{metrics}"
    );
    assert!(!metrics.contains("+44207900000"), "numbers in metrics");
    let (_, body) = platform.http_get_as("/api/v1/campaigns", &supervisor);
    let figures: serde_json::Value = serde_json::from_str(&body).expect("json");
    let spring = &figures["campaigns"][0];
    assert_eq!(
        (
            &spring["dials"],
            &spring["connects"],
            &spring["abandons"],
            &spring["machines"]
        ),
        (&json!(6), &json!(1), &json!(1), &json!(1)),
        "{figures}"
    );
    assert_eq!(spring["abandon_rate"], 0.5);
    // The wallboard shows the same figures.
    rt.block_on(async {
        let mut board = CtiClient::connect(platform.http, "/ws/supervisor", &supervisor).await;
        let frame = board.next_of("campaigns").await;
        assert_eq!(frame["campaigns"][0]["abandons"], 1, "{frame}");
        assert_eq!(frame["campaigns"][0]["connects"], 1, "{frame}");
    });
    // Stopped is final.
    let (status, _) = platform.http_post("/api/v1/campaigns/spring/stop", "", Some(&supervisor));
    assert_eq!(status, 200);
    let (status, body) = platform.http_post("/api/v1/campaigns/spring/resume", "", Some(&supervisor));
    assert_eq!(status, 409, "{body}");
    assert!(!platform.log().contains("+44207900000"), "numbers in the log");
}
