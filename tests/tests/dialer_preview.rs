//! A preview campaign end to end. SIPp plays the telephone network behind the outbound trunk (the
//! dialled number picks a person or a busy line) and the agent's SIP phone; the agent is a CTI client.
//! The agent is shown each lead (number masked for the agent role) while not ready (`preview`), skips
//! one, dials a person and marks them do-not-call in the wrap-up (the number joins the list with
//! source `agent`, the lead is closed), dials a busy line (retried later), dials a person and promises
//! a personal callback, which comes back to the same agent as a preview when it is due. Every dial has
//! its attempt row, its outbound interaction and the lead's stored progress.

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use system_tests::cti::CtiClient;
use system_tests::outbound::{campaign_config, zone_at_noon};
use system_tests::pcap::{Audio, write_rtp_pcap};
use system_tests::*;

const CAMPAIGN_CONFIG: &str = r#"
[[trunk]]
name = "carrier"
uri = "sip:127.0.0.1:CARRIER_PORT"

[[campaign]]
id = "renewals"
mode = "preview"
queue = "outbound"
caller_id = "+442070000000"
leads = "LEADS"
message = "MESSAGE"
tick_ms = 200
preview_skip_secs = 3600
"#;

async fn preview_of(ws: &mut CtiClient, lead: &str) -> Value {
    ws.next_where(|f| f["type"] == "preview" && f["preview"]["lead"] == lead)
        .await["preview"]
        .clone()
}

/// Dials the previewed lead; returns the call id once the person is connected (or the call's end).
async fn dial(ws: &mut CtiClient, id: u64, lead: &str) -> String {
    let f = ws
        .ask(json!({"type": "preview_dial", "id": id, "campaign": "renewals", "lead": lead}))
        .await;
    assert_eq!(f["type"], "ack", "{f}");
    let pop = ws.next_of("offer").await["pop"].clone();
    assert_eq!(pop["direction"], "outbound", "{pop}");
    assert_eq!(
        pop["campaign"],
        json!({"campaign": "renewals", "lead": lead}),
        "{pop}"
    );
    assert_eq!(pop["called"], "+442070000000", "the campaign's caller id: {pop}");
    pop["call"].as_str().expect("call").to_string()
}

async fn talk_and_wrap_up(ws: &mut CtiClient, id: u64, call: &str, wrap_up: Value) {
    ws.next_where(|f| f["type"] == "call_phase" && f["phase"] == "connected" && f["call"] == call)
        .await;
    assert_eq!(
        ws.ask(json!({"type": "hangup", "id": id, "call": call})).await["type"],
        "ack"
    );
    ws.next_where(|f| f["type"] == "call_phase" && f["phase"] == "wrap_up" && f["call"] == call)
        .await;
    let mut frame = wrap_up;
    frame["type"] = json!("wrap_up");
    frame["id"] = json!(id + 1);
    frame["call"] = json!(call);
    let f = ws.ask(frame).await;
    assert_eq!(f["type"], "ack", "{f}");
}

#[test]
fn a_preview_campaign_shows_each_lead_and_the_agent_dials_skips_blocks_and_calls_back() {
    require_command("sipp");
    let network = tempfile::tempdir().expect("tempdir");
    write_rtp_pcap(
        &network.path().join("human.pcap"),
        &[Audio::Voice { ms: 600 }, Audio::Silence { ms: 6000 }],
    )
    .expect("human.pcap");
    write_rtp_pcap(&network.path().join("machine.pcap"), &[Audio::Voice { ms: 4000 }]).expect("machine.pcap");
    // Three calls: a person, the busy line, a person.
    let carrier = SippServer::start_in("uas_campaign.xml", 3, network.path());
    let zone = zone_at_noon();
    let leads = network.path().join("leads.csv");
    let csv: String = [
        "a-skip,+442079000001,Ann Skip",
        "b-talk,+442079000002,Bob Talk",
        "c-busy,+442079000003,Cat Busy",
        "d-back,+442079000001,Dan Back",
    ]
    .iter()
    .map(|l| format!("{l},{zone}\n"))
    .collect();
    std::fs::write(&leads, format!("id,phone,name,timezone\n{csv}")).expect("leads");
    let platform = Platform::start(&campaign_config(CAMPAIGN_CONFIG, carrier.port, &leads));
    // The agent's phone answers the three dials.
    let agent_phone = SippServer::start("uas", 3);
    register_agent_phone(&platform, "1001", "agent1001", agent_phone.port);
    let token = platform.login("1001", "agent1001");
    let rt = runtime();
    let (callback_at, mut ws) = rt.block_on(async {
        let mut ws = CtiClient::connect(platform.http, "/ws/agent", &token).await;
        ws.next_of("welcome").await;
        assert_eq!(ws.ask(json!({"type": "login", "id": 1})).await["type"], "ack");

        // The first lead, masked for an agent; the agent is not ready while deciding.
        let shown = preview_of(&mut ws, "a-skip").await;
        assert_eq!(shown["name"], "Ann Skip", "{shown}");
        assert_eq!(shown["number"], "+••••••••••01", "{shown}");
        assert_eq!(shown["number_masked"], true);
        assert_eq!(shown["attempt"], 1);
        ws.next_where(|f| f["type"] == "state" && f["state"] == "not_ready" && f["reason"] == "preview")
            .await;
        let f = ws
            .ask(json!({"type": "preview_dial", "id": 2, "campaign": "renewals", "lead": "b-talk"}))
            .await;
        assert_eq!(f["code"], "no_preview", "only the lead shown can be dialled: {f}");
        let f = ws
            .ask(json!({"type": "preview_skip", "id": 3, "campaign": "renewals", "lead": "a-skip"}))
            .await;
        assert_eq!(f["type"], "ack", "{f}");

        // The next lead: dialled, talked to, marked do-not-call.
        preview_of(&mut ws, "b-talk").await;
        let call = dial(&mut ws, 4, "b-talk").await;
        talk_and_wrap_up(&mut ws, 5, &call, json!({"disposition": "dnc"})).await;

        // A busy line: the attempt ends and the next lead comes.
        preview_of(&mut ws, "c-busy").await;
        let busy = dial(&mut ws, 7, "c-busy").await;
        ws.next_where(|f| f["type"] == "released" && f["call"] == busy.as_str())
            .await;

        // A person who wants to be called back by this agent in a moment.
        preview_of(&mut ws, "d-back").await;
        let call = dial(&mut ws, 8, "d-back").await;
        let at = domain::Timestamp::now_utc().as_millis() + 4_000;
        talk_and_wrap_up(
            &mut ws,
            9,
            &call,
            json!({"disposition": "follow_up", "callback": {"at": at, "personal": true}}),
        )
        .await;
        // Nothing else is due: the callback comes back to the agent when it is.
        let again = preview_of(&mut ws, "d-back").await;
        assert!(
            domain::Timestamp::now_utc().as_millis() >= at,
            "not before the promised time"
        );
        assert_eq!(
            (&again["attempt"], &again["callback"]),
            (&json!(2), &json!(true)),
            "{again}"
        );
        (at, ws)
    });
    assert_eq!(carrier.wait(), Some(0), "every call went as the network expected");
    assert_eq!(agent_phone.wait(), Some(0), "the agent's phone got every BYE");

    // What the store holds.
    let url = format!("sqlite:{}/cc.db", platform.dir.path().display());
    let (rows, leads, dnc) = rt.block_on(async {
        let crm = crm_store::CrmStore::connect(&url).await.expect("crm");
        let id = domain::CampaignId::new("renewals").expect("id");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let rows = crm.dial_attempts(&id).await.expect("attempts");
            let leads = crm.campaign_lead_progress(&id).await.expect("leads");
            let settled = rows.len() == 3 && rows.iter().all(|r| r.outcome != "dialing");
            if settled {
                let dnc = crm.is_do_not_call("+442079000002").await.expect("dnc");
                break (rows, leads, dnc);
            }
            assert!(Instant::now() < deadline, "{rows:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let row = |lead: &str| rows.iter().find(|r| r.lead.as_str() == lead).expect("row");
    assert_eq!(row("b-talk").outcome, "completed");
    assert_eq!(row("b-talk").agent.as_ref().map(|a| a.as_str()), Some("1001"));
    assert!(row("b-talk").connected_at.is_some() && row("b-talk").answered_at.is_some());
    assert_eq!(row("c-busy").outcome, "busy");
    assert_eq!(row("d-back").outcome, "completed");
    assert!(rows.iter().all(|r| r.attempt == 1 && !r.abandoned));
    assert!(dnc, "the agent's do-not-call request is on the list");
    let lead = |id: &str| {
        leads
            .iter()
            .find(|(l, _)| l.id.as_str() == id)
            .map(|(_, p)| p.clone())
            .expect("lead")
    };
    assert_eq!(lead("a-skip").status, "new", "skipped: not an attempt");
    assert_eq!(lead("a-skip").attempts, 0);
    assert!(
        lead("a-skip").next_attempt_at.expect("next").as_millis()
            > domain::Timestamp::now_utc().as_millis() + 3_000_000,
        "skipped for an hour"
    );
    assert_eq!(lead("b-talk").status, "dnc");
    assert_eq!(
        (lead("c-busy").status.as_str(), lead("c-busy").busy_attempts),
        ("busy", 1)
    );
    let back = lead("d-back");
    assert_eq!(back.status, "callback");
    assert_eq!(back.callback_at.map(|t| t.as_millis()), Some(callback_at));
    assert_eq!(back.callback_agent.as_ref().map(|a| a.as_str()), Some("1001"));

    // The connected dials are outbound interactions of the campaign with the agent's outcome.
    let interactions = platform.ended_interactions(3);
    let talked = interactions
        .iter()
        .find(|i| i.row.id == row("b-talk").id)
        .expect("interaction");
    assert_eq!(talked.row.direction.as_deref(), Some("outbound"));
    assert_eq!(talked.row.campaign_id.as_deref(), Some("renewals"));
    assert_eq!(talked.row.dial_outcome.as_deref(), Some("completed"));
    assert_eq!(talked.row.agent_id.as_deref(), Some("1001"));
    let busy = interactions
        .iter()
        .find(|i| i.row.id == row("c-busy").id)
        .expect("interaction");
    assert_eq!(busy.row.dial_outcome.as_deref(), Some("busy"));

    // The number joins the do-not-call list while the agent looks at it: the dial is refused and the
    // lead closed.
    rt.block_on(async {
        let crm = crm_store::CrmStore::connect(&url).await.expect("crm");
        crm.add_do_not_call("+442079000001", "tps", "test", domain::Timestamp::now_utc())
            .await
            .expect("dnc");
        let f = ws
            .ask(json!({"type": "preview_dial", "id": 20, "campaign": "renewals", "lead": "d-back"}))
            .await;
        assert_eq!(f["code"], "do_not_call", "{f}");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let id = domain::CampaignId::new("renewals").expect("id");
            let leads = crm.campaign_lead_progress(&id).await.expect("leads");
            if leads
                .iter()
                .any(|(l, p)| l.id.as_str() == "d-back" && p.status == "dnc")
            {
                break;
            }
            assert!(Instant::now() < deadline, "{leads:#?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let log = platform.log();
    assert!(!log.contains("+44207900000"), "numbers in the log");
}
