//! The agent desktop end to end: a known customer calls the queue (SIPp), the agent's desktop (a
//! CTI WebSocket client) gets the offer with the customer's CRM record, the agent's SIP phone (SIPp)
//! answers, the agent holds, resumes and hangs up from the desktop, saves a disposition in wrap-up,
//! and the CRM interaction holds every step.

use serde_json::json;
use std::time::Duration;
use system_tests::cti::CtiClient;
use system_tests::*;

const CONFIG: &str = r#"
[sip.limits]
max_calls_per_second = 0
per_source_requests_per_second = 0

[[sip.user]]
name = "1001"
password = "agent1001"

[[acd.queues]]
id = "sales"
offer_timeout_secs = 15
wrap_up_secs = 120

[[acd.agents]]
id = "1001"
queues = [{ queue = "sales", rank = 1 }]

[[route]]
number = "801"
queue = "sales"

[desk]
hold_music = "HOLD_MUSIC"

[[desk.user]]
id = "1001"
name = "Alice Agent"
role = "agent"
password = "agent1001"
"#;

/// The desk test configuration with the demo's hold music.
fn desk_config() -> String {
    CONFIG.replace(
        "HOLD_MUSIC",
        &ivr_dir().join("prompts/hold-music.wav").display().to_string(),
    )
}

/// `config` with a carrier trunk at `port` that agents' outside numbers go through.
fn with_carrier(config: String, port: u16, caller_id: Option<&str>) -> String {
    let caller_id = caller_id
        .map(|c| format!("caller_id = \"{c}\"\n"))
        .unwrap_or_default();
    let config =
        config + &format!("\n[[trunk]]\nname = \"carrier\"\nuri = \"sip:127.0.0.1:{port}\"\n{caller_id}");
    config.replace("[desk]\n", "[desk]\noutbound_trunk = \"carrier\"\n")
}

#[test]
fn an_agent_handles_a_known_customers_call_from_the_desktop_and_the_disposition_lands_in_the_crm() {
    require_command("sipp");
    let music = ivr_dir().join("prompts/hold-music.wav");
    let platform = Platform::start(&CONFIG.replace("HOLD_MUSIC", &music.display().to_string()));
    let rt = runtime();

    // The caller is a key customer with an account manager.
    let url = format!("sqlite:{}/cc.db", platform.dir.path().display());
    rt.block_on(async {
        let crm = crm_store::CrmStore::connect(&url).await.expect("crm");
        let customer = crm_store::Customer {
            id: domain::CustomerId::new("cust-erika").expect("id"),
            account_number: Some("ACC-1".into()),
            name: domain::Pii::new("Erika Mustermann".into()),
            phones: vec![domain::Pii::new("+4930123456".into())],
            email: None,
            tier: crm_store::Tier::Key,
            account_manager: Some(domain::AgentId::new("1001").expect("id")),
            lifetime_value_cents: 1_000_000,
            notes: None,
        };
        crm.save_customer(&customer, "test", domain::Timestamp::now_utc())
            .await
            .expect("customer");
    });

    let agent_phone = SippServer::start("uas", 1);
    register_agent_phone(&platform, "1001", "agent1001", agent_phone.port);
    let token = platform.login("1001", "agent1001");

    let mut ws = rt.block_on(async {
        let mut ws = CtiClient::connect(platform.http, "/ws/agent", &token).await;
        let welcome = ws.next_of("welcome").await;
        assert_eq!(welcome["agent"]["name"], "Alice Agent");
        // Phone agents are ready from the start in this configuration.
        assert_eq!(welcome["state"]["state"], "available", "{welcome}");
        ws
    });

    std::thread::scope(|scope| {
        let caller = scope.spawn(|| uac(&platform, "uac_customer_wait_bye.xml", "801", 1, &[]));
        rt.block_on(async {
            let offer = ws.next_of("offer").await;
            let pop = &offer["pop"];
            let call = pop["call"].as_str().expect("call id").to_string();
            assert_eq!(pop["caller"], "+4930123456");
            assert_eq!(pop["queue"], "sales");
            assert_eq!(pop["customer"]["customer"]["name"], "Erika Mustermann", "{pop}");
            assert_eq!(pop["customer"]["customer"]["tier"], "key");
            assert!(
                pop["explanation"].as_str().is_some_and(|e| e.contains("preferred")),
                "the account manager is offered the call first: {pop}"
            );
            // Desktop commands that do not fit the moment are refused.
            let f = ws.ask(json!({"type": "accept", "id": 1, "call": call})).await;
            assert_eq!(f["code"], "answer_on_phone", "{f}");

            // The SIPp phone answers on its own.
            let phase = ws.next_of("call_phase").await;
            assert_eq!((phase["call"].as_str(), phase["phase"].as_str()), (Some(call.as_str()), Some("connected")));
            let f = ws.ask(json!({"type": "reject", "id": 2, "call": call})).await;
            assert_eq!(f["code"], "no_offer");
            let f = ws.ask(json!({"type": "wrap_up", "id": 3, "call": call, "disposition": "resolved"})).await;
            assert_eq!(f["code"], "not_in_wrap_up");
            let f = ws.ask(json!({"type": "unhold", "id": 4, "call": call})).await;
            assert_eq!(f["code"], "not_held");
            let f = ws
                .ask(json!({"type": "transfer", "id": 40, "call": call, "to": {"number": "+4930999888"}}))
                .await;
            assert_eq!(f["code"], "no_trunk", "this node has no outbound trunk: {f}");
            let f = ws.ask(json!({"type": "dial", "id": 41, "number": "+4930999888"})).await;
            assert_eq!(f["code"], "no_trunk");
            let f = ws.ask(json!({"type": "transfer", "id": 42, "call": call, "to": {"queue": "nowhere"}})).await;
            assert_eq!(f["code"], "unknown_queue");
            let f = ws.ask(json!({"type": "transfer", "id": 43, "call": call, "to": {"agent": "1001"}})).await;
            assert_eq!(f["code"], "bad_target", "not to oneself");

            assert_eq!(ws.ask(json!({"type": "hold", "id": 5, "call": call})).await["type"], "ack");
            assert_eq!(ws.next_of("call_phase").await["phase"], "held");
            let f = ws.ask(json!({"type": "hold", "id": 6, "call": call})).await;
            assert_eq!(f["code"], "already_held");
            assert_eq!(ws.ask(json!({"type": "unhold", "id": 7, "call": call})).await["type"], "ack");
            assert_eq!(ws.next_of("call_phase").await["phase"], "connected");

            // A reload: the socket goes away, the call stays up, the next socket picks it up.
            drop(std::mem::replace(&mut ws, CtiClient::connect(platform.http, "/ws/agent", &token).await));
            let welcome = ws.next_of("welcome").await;
            let calls = welcome["calls"].as_array().cloned().unwrap_or_default();
            assert_eq!(calls.len(), 1, "{welcome}");
            assert_eq!(calls[0]["phase"], "connected");
            assert_eq!(calls[0]["pop"]["call"], call.as_str());
            assert_eq!(welcome["state"]["state"], "on_call");

            assert_eq!(ws.ask(json!({"type": "hangup", "id": 8, "call": call})).await["type"], "ack");
            assert_eq!(ws.next_of("call_phase").await["phase"], "wrap_up");
            ws.next_where(|f| f["type"] == "state" && f["state"] == "wrap_up").await;
            let f = ws.ask(json!({"type": "hangup", "id": 9, "call": call})).await;
            assert_eq!(f["code"], "call_ended");

            let f = ws.ask(
                json!({"type": "wrap_up", "id": 10, "call": call, "disposition": "resolved", "notes": "Upgraded the plan"}),
            )
            .await;
            assert_eq!(f["type"], "ack", "{f}");
            assert_eq!(ws.next_of("released").await["call"], call.as_str());
            // Saving the disposition ends after-call work.
            ws.next_where(|f| f["type"] == "state" && f["state"] == "available").await;
        });
        let run = caller.join().expect("caller");
        run.assert_succeeded(1, &platform);
    });
    assert_eq!(
        agent_phone.wait(),
        Some(0),
        "the phone got the BYE from the desktop's hang-up"
    );

    // The CRM interaction: the customer, the hold, who ended it, the disposition and notes.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let i = loop {
        let found = platform.ended_interactions(1).into_iter().next();
        if let Some(i) = found.filter(|i| i.row.disposition.is_some()) {
            break i;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no disposition stored\n{}",
            platform.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let kinds = i.kinds();
    for k in [
        "customer_identified",
        "enqueued",
        "offered",
        "answered",
        "held",
        "resumed",
        "ended",
        "wrapped_up",
    ] {
        assert!(kinds.contains(&k.to_string()), "{k} missing from {kinds:?}");
    }
    assert_eq!(i.row.customer_id.as_deref(), Some("cust-erika"));
    assert_eq!(i.row.disposition.as_deref(), Some("resolved"));
    assert_eq!(i.row.notes.as_deref(), Some("Upgraded the plan"));
    assert_eq!(i.row.ended_by.as_deref(), Some("agent"));
    assert_eq!(
        i.row.priority,
        Some(i64::from(crm_store::Tier::Key.queue_priority()))
    );
    assert!(i.row.hold_ms > 0, "{:?}", i.row);
}

#[test]
fn a_blind_transfer_to_an_outside_number_goes_out_through_the_trunk_and_the_agent_is_freed() {
    require_command("sipp");
    let carrier = SippServer::start("uas_trunk_number.xml", 1);
    let config = with_carrier(desk_config(), carrier.port, Some("+4930000000"));
    let platform = Platform::start(&config);
    let agent_phone = SippServer::start("uas", 1);
    register_agent_phone(&platform, "1001", "agent1001", agent_phone.port);
    let token = platform.login("1001", "agent1001");
    let rt = runtime();
    let mut ws = rt.block_on(CtiClient::connect(platform.http, "/ws/agent", &token));
    std::thread::scope(|scope| {
        let caller = scope.spawn(|| uac(&platform, "uac_customer_wait_bye.xml", "801", 1, &[]));
        rt.block_on(async {
            let call = ws.next_of("offer").await["pop"]["call"]
                .as_str()
                .expect("call")
                .to_string();
            assert_eq!(ws.next_of("call_phase").await["phase"], "connected");
            let f = ws
                .ask(json!({"type": "transfer", "id": 1, "call": call, "to": {"number": "sip:evil@example"}}))
                .await;
            assert_eq!(f["code"], "bad_request", "{f}");
            let f = ws
                .ask(json!({"type": "transfer", "id": 2, "call": call, "to": {"number": "+4930999888"}}))
                .await;
            assert_eq!(f["type"], "ack", "{f}");
            // The agent is done with the call at once: wrap-up, phone hung up.
            ws.next_where(|f| f["type"] == "state" && f["state"] == "wrap_up")
                .await;
        });
        assert_eq!(agent_phone.wait(), Some(0), "the agent's phone got its BYE");
        // The carrier answered the right number and hung up; the caller got the BYE.
        let run = caller.join().expect("caller");
        run.assert_succeeded(1, &platform);
    });
    assert_eq!(
        carrier.wait(),
        Some(0),
        "the carrier saw an INVITE for +4930999888"
    );
    let i = platform
        .ended_interactions(1)
        .into_iter()
        .next()
        .expect("interaction");
    let transferred = i
        .events
        .iter()
        .find(|e| e.kind == "transferred")
        .unwrap_or_else(|| panic!("no transfer in {:?}", i.kinds()));
    assert_eq!(
        transferred.payload["target"], "number:+4930999888",
        "{:?}",
        transferred.payload
    );
    assert_eq!(i.row.ended_by.as_deref(), Some("system"));
    assert_eq!(i.row.agent_id.as_deref(), Some("1001"));
}

#[test]
fn an_agent_places_a_call_from_the_desktop_and_returns_to_ready_after_wrap_up() {
    require_command("sipp");
    let carrier = SippServer::start("uas_customer_answers.xml", 1);
    let config = with_carrier(desk_config(), carrier.port, Some("+4930000000"));
    let platform = Platform::start(&config);
    let agent_phone = SippServer::start("uas", 1);
    register_agent_phone(&platform, "1001", "agent1001", agent_phone.port);
    let token = platform.login("1001", "agent1001");
    let rt = runtime();
    rt.block_on(async {
        let mut ws = CtiClient::connect(platform.http, "/ws/agent", &token).await;
        assert_eq!(ws.next_of("welcome").await["state"]["state"], "available");
        let f = ws.ask(json!({"type": "dial", "id": 1, "number": "+4930123456"})).await;
        assert_eq!(f["type"], "ack", "{f}");
        // The ACD has the agent on the call they placed: on a call, so offered nothing meanwhile.
        ws.next_where(|f| f["type"] == "state" && f["state"] == "on_call").await;
        let pop = ws.next_of("offer").await["pop"].clone();
        assert_eq!(pop["direction"], "outbound");
        let call = pop["call"].as_str().expect("call").to_string();
        // The agent's phone answers (SIPp), then the customer (the carrier) does.
        ws.next_where(|f| f["type"] == "call_phase" && f["phase"] == "dialing").await;
        ws.next_where(|f| f["type"] == "call_phase" && f["phase"] == "connected").await;
        let f = ws.ask(json!({"type": "dial", "id": 2, "number": "+4930123456"})).await;
        assert_eq!(f["code"], "illegal_transition", "one call at a time: {f}");
        assert_eq!(ws.ask(json!({"type": "hangup", "id": 3, "call": call})).await["type"], "ack");
        ws.next_where(|f| f["type"] == "call_phase" && f["phase"] == "wrap_up").await;
        let f = ws
            .ask(json!({"type": "wrap_up", "id": 4, "call": call, "disposition": "callback_agreed", "notes": "Calls back Monday"}))
            .await;
        assert_eq!(f["type"], "ack", "{f}");
        ws.next_where(|f| f["type"] == "state" && f["state"] == "available").await;
    });
    assert_eq!(
        agent_phone.wait(),
        Some(0),
        "the agent's phone was rung and hung up"
    );
    assert_eq!(
        carrier.wait(),
        Some(0),
        "the carrier got an INVITE for +4930123456 and a BYE"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let i = loop {
        let found = platform.ended_interactions(1).into_iter().next();
        if let Some(i) = found.filter(|i| i.row.disposition.is_some()) {
            break i;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no disposition stored\n{}",
            platform.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(i.row.direction.as_deref(), Some("outbound"));
    assert_eq!(i.row.called_number.as_deref(), Some("+4930123456"));
    assert_eq!(i.row.agent_id.as_deref(), Some("1001"));
    assert_eq!(i.row.disposition.as_deref(), Some("callback_agreed"));
    assert_eq!(i.row.ended_by.as_deref(), Some("agent"));
    assert!(i.kinds().contains(&"answered".to_string()), "{:?}", i.kinds());
}

#[test]
fn a_supervisor_listens_whispers_and_barges_into_an_agents_call_and_every_step_is_recorded() {
    require_command("sipp");
    let config = desk_config()
        + "\n[[sip.user]]\nname = \"super\"\npassword = \"supervisor1\"\n\n[[desk.user]]\nid = \"super\"\nname = \"Sam Supervisor\"\nrole = \"supervisor\"\npassword = \"supervisor\"\n";
    let platform = Platform::start(&config);
    let agent_phone = SippServer::start("uas", 1);
    register_agent_phone(&platform, "1001", "agent1001", agent_phone.port);
    let supervisor_phone = SippServer::start("uas", 1);
    register_agent_phone(&platform, "super", "supervisor1", supervisor_phone.port);
    let (agent_token, sup_token) = (
        platform.login("1001", "agent1001"),
        platform.login("super", "supervisor"),
    );
    let rt = runtime();
    let (mut agent, mut board) = rt.block_on(async {
        (
            CtiClient::connect(platform.http, "/ws/agent", &agent_token).await,
            CtiClient::connect(platform.http, "/ws/supervisor", &sup_token).await,
        )
    });
    std::thread::scope(|scope| {
        let caller = scope.spawn(|| uac(&platform, "uac_customer_wait_bye.xml", "801", 1, &[]));
        rt.block_on(async {
            let f = board
                .ask(json!({"type": "monitor", "id": 1, "agent": "1001", "mode": "listen"}))
                .await;
            assert_eq!(f["code"], "not_on_call", "nobody to listen to yet: {f}");
            let call = agent.next_of("offer").await["pop"]["call"]
                .as_str()
                .expect("call")
                .to_string();
            agent
                .next_where(|f| f["type"] == "call_phase" && f["phase"] == "connected")
                .await;

            // The agent's mute.
            assert_eq!(
                agent
                    .ask(json!({"type": "mute", "id": 1, "call": call, "muted": true}))
                    .await["type"],
                "ack"
            );
            assert_eq!(
                agent
                    .ask(json!({"type": "mute", "id": 2, "call": call, "muted": false}))
                    .await["type"],
                "ack"
            );

            // The supervisor's phone rings and answers (SIPp), then the modes.
            let f = board
                .ask(json!({"type": "monitor", "id": 2, "agent": "1001", "mode": "listen"}))
                .await;
            assert_eq!(f["type"], "ack", "{f}");
            let f = board
                .ask(json!({"type": "monitor", "id": 3, "agent": "1001", "mode": "barge"}))
                .await;
            assert_eq!(f["code"], "already_monitored");
            // The phone answering has no frame of its own: ask until the supervisor has joined.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let mut n = 10;
            loop {
                n += 1;
                let f = board
                    .ask(json!({"type": "monitor_mode", "id": n, "agent": "1001", "mode": "whisper"}))
                    .await;
                if f["type"] == "ack" {
                    break;
                }
                assert_eq!(f["code"], "not_monitoring", "{f}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the supervisor's phone never joined"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let f = board
                .ask(json!({"type": "monitor_mode", "id": 100, "agent": "1001", "mode": "barge"}))
                .await;
            assert_eq!(f["type"], "ack", "{f}");
            let f = board
                .ask(json!({"type": "monitor_stop", "id": 101, "agent": "1001"}))
                .await;
            assert_eq!(f["type"], "ack", "{f}");
            let f = board
                .ask(json!({"type": "monitor_stop", "id": 102, "agent": "1001"}))
                .await;
            assert_eq!(f["code"], "not_monitoring");

            assert_eq!(
                agent.ask(json!({"type": "hangup", "id": 3, "call": call})).await["type"],
                "ack"
            );
            let f = agent
                .ask(json!({"type": "mute", "id": 4, "call": call, "muted": true}))
                .await;
            assert_eq!(f["code"], "call_ended", "{f}");
        });
        let run = caller.join().expect("caller");
        run.assert_succeeded(1, &platform);
    });
    assert_eq!(
        supervisor_phone.wait(),
        Some(0),
        "the supervisor's phone joined and was hung up"
    );
    assert_eq!(agent_phone.wait(), Some(0));
    let i = platform
        .ended_interactions(1)
        .into_iter()
        .next()
        .expect("interaction");
    let monitored: Vec<(String, String)> = i
        .events
        .iter()
        .filter(|e| e.kind == "monitored")
        .map(|e| {
            (
                e.payload["supervisor"].as_str().unwrap_or("").to_string(),
                e.payload["mode"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = ["listen", "whisper", "barge", "stopped"]
        .iter()
        .map(|m| ("super".to_string(), m.to_string()))
        .collect();
    assert_eq!(monitored, expected);
}

#[test]
fn a_consultative_transfer_holds_the_caller_talks_to_the_target_and_hands_the_caller_over() {
    require_command("sipp");
    // The consulted party: a number the carrier answers (SIPp checks it is +4930123456).
    let carrier = SippServer::start("uas_customer_answers.xml", 1);
    let config = with_carrier(desk_config(), carrier.port, None);
    let platform = Platform::start(&config);
    let agent_phone = SippServer::start("uas", 1);
    register_agent_phone(&platform, "1001", "agent1001", agent_phone.port);
    let token = platform.login("1001", "agent1001");
    let rt = runtime();
    let mut ws = rt.block_on(CtiClient::connect(platform.http, "/ws/agent", &token));
    std::thread::scope(|scope| {
        // The caller stays 8 s, then hangs up (talking to the consulted party by then).
        let caller = scope.spawn(|| uac(&platform, "uac", "801", 1, &["-d", "8000"]));
        rt.block_on(async {
            let call = ws.next_of("offer").await["pop"]["call"]
                .as_str()
                .expect("call")
                .to_string();
            ws.next_where(|f| f["type"] == "call_phase" && f["phase"] == "connected")
                .await;
            let f = ws
                .ask(json!({"type": "consult_complete", "id": 1, "call": call}))
                .await;
            assert_eq!(f["code"], "not_consulting");
            let f = ws
                .ask(json!({"type": "consult", "id": 2, "call": call, "to": {"queue": "sales"}}))
                .await;
            assert_eq!(f["code"], "bad_target");
            let f = ws
                .ask(json!({"type": "consult", "id": 3, "call": call, "to": {"number": "+4930123456"}}))
                .await;
            assert_eq!(f["type"], "ack", "{f}");
            ws.next_where(|f| f["type"] == "call_phase" && f["phase"] == "consulting")
                .await;
            let f = ws
                .ask(json!({"type": "consult", "id": 4, "call": call, "to": {"number": "+4930123456"}}))
                .await;
            assert_eq!(f["code"], "already_consulting");
            // The carrier's answer has no frame of its own: complete once it has answered.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let mut n = 10;
            loop {
                n += 1;
                let f = ws
                    .ask(json!({"type": "consult_complete", "id": n, "call": call}))
                    .await;
                if f["type"] == "ack" {
                    break;
                }
                assert_eq!(f["code"], "not_answered", "{f}");
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the consulted party never answered"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            ws.next_where(|f| f["type"] == "state" && f["state"] == "wrap_up")
                .await;
        });
        assert_eq!(agent_phone.wait(), Some(0), "the agent left the call");
        let run = caller.join().expect("caller");
        run.assert_succeeded(1, &platform);
    });
    assert_eq!(
        carrier.wait(),
        Some(0),
        "the consulted party talked to the caller until the caller hung up"
    );
    let i = platform
        .ended_interactions(1)
        .into_iter()
        .next()
        .expect("interaction");
    let kinds = i.kinds();
    for k in ["answered", "held", "transferred", "resumed", "ended"] {
        assert!(kinds.contains(&k.to_string()), "{k} missing from {kinds:?}");
    }
    let transferred = i
        .events
        .iter()
        .find(|e| e.kind == "transferred")
        .expect("transfer");
    assert_eq!(transferred.payload["target"], "consult:number:+4930123456");
    assert_eq!(i.row.ended_by.as_deref(), Some("caller"));
}

#[test]
fn a_caller_who_asks_for_a_callback_keeps_their_place_and_is_called_back_when_an_agent_is_free() {
    require_command("sipp");
    let flows = test_flows();
    // The customer's phone, reached through the carrier when the agent takes the callback.
    let carrier = SippServer::start("uas_customer_answers.xml", 1);
    let config = with_carrier(
        desk_config() + "\n[agents]\nready_on_start = false\n\n[[route]]\nnumber = \"800\"\nivr = \"main\"\n",
        carrier.port,
        Some("+4930000000"),
    );
    let platform = Platform::start_with_flows(&config, flows.path());
    let agent_phone = SippServer::start("uas", 1);
    register_agent_phone(&platform, "1001", "agent1001", agent_phone.port);
    // Nobody is logged in: the caller waits, asks for a callback, confirms and hangs up.
    let run = uac(&platform, "uac_callback.xml", "800", 1, &[]);
    run.assert_succeeded(1, &platform);
    let first = platform
        .ended_interactions(1)
        .into_iter()
        .next()
        .expect("the caller's interaction");
    assert!(
        first.kinds().contains(&"callback_requested".to_string()),
        "{:?}",
        first.kinds()
    );
    assert!(
        !first.row.abandoned,
        "a callback is not an abandon: {:?}",
        first.row
    );

    // The agent logs in: the router offers the kept place, the phone answers, the customer is called.
    let token = platform.login("1001", "agent1001");
    let rt = runtime();
    rt.block_on(async {
        let mut ws = CtiClient::connect(platform.http, "/ws/agent", &token).await;
        assert_eq!(ws.next_of("welcome").await["state"]["state"], "logged_out");
        assert_eq!(ws.ask(json!({"type": "login", "id": 1})).await["type"], "ack");
        let pop = ws.next_of("offer").await["pop"].clone();
        assert_eq!(pop["caller"], "+4930123456", "{pop}");
        assert!(
            pop["explanation"]
                .as_str()
                .is_some_and(|e| e.starts_with("callback")),
            "{pop}"
        );
        let call = pop["call"].as_str().expect("call").to_string();
        ws.next_where(|f| f["type"] == "call_phase" && f["phase"] == "connected")
            .await;
        assert_eq!(
            ws.ask(json!({"type": "hangup", "id": 2, "call": call})).await["type"],
            "ack"
        );
        ws.next_where(|f| f["type"] == "call_phase" && f["phase"] == "wrap_up")
            .await;
        let f = ws
            .ask(json!({"type": "wrap_up", "id": 3, "call": call, "disposition": "callback_done"}))
            .await;
        assert_eq!(f["type"], "ack", "{f}");
    });
    assert_eq!(agent_phone.wait(), Some(0));
    assert_eq!(
        carrier.wait(),
        Some(0),
        "the customer was called back at +4930123456"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let back = loop {
        let found = platform
            .ended_interactions(2)
            .into_iter()
            .find(|i| i.row.id.ends_with("-cb") && i.row.disposition.is_some());
        if let Some(i) = found {
            break i;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no completed callback\n{}",
            platform.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(back.row.direction.as_deref(), Some("outbound"));
    assert_eq!(back.row.agent_id.as_deref(), Some("1001"));
    assert_eq!(back.row.queue_id.as_deref(), Some("sales"));
    assert_eq!(back.row.disposition.as_deref(), Some("callback_done"));
    assert!(
        back.kinds().contains(&"answered".to_string()),
        "{:?}",
        back.kinds()
    );
}

#[test]
fn the_interval_report_agrees_with_the_live_figures_for_the_same_calls() {
    require_command("sipp");
    let config = desk_config()
        + "\n[[desk.user]]\nid = \"super\"\nname = \"Sam Supervisor\"\nrole = \"supervisor\"\npassword = \"supervisor\"\n";
    let platform = Platform::start(&config);
    let agent_phone = SippServer::start("uas", 1);
    register_agent_phone(&platform, "1001", "agent1001", agent_phone.port);
    let token = platform.login("super", "supervisor");
    let rt = runtime();
    let mut board = rt.block_on(CtiClient::connect(platform.http, "/ws/supervisor", &token));
    let on_call = |f: &serde_json::Value| {
        f["type"] == "stats"
            && f["agents"]
                .as_array()
                .is_some_and(|a| a.iter().any(|r| r["agent"] == "1001" && r["state"] == "on_call"))
    };
    std::thread::scope(|scope| {
        // One caller is answered and talks 3 s; while the only agent is busy, a second caller gives
        // up after a second in the queue.
        let answered = scope.spawn(|| uac(&platform, "uac", "801", 1, &["-d", "3000"]));
        rt.block_on(board.next_where(on_call));
        let abandoned = uac(&platform, "uac", "801", 1, &["-d", "1000"]);
        assert_eq!(
            (abandoned.successful, abandoned.failed),
            (1, 0),
            "{}",
            abandoned.output
        );
        let run = answered.join().expect("caller");
        run.assert_succeeded(1, &platform);
    });
    let live = rt.block_on(board.next_where(|f| {
        f["type"] == "stats"
            && f["queues"].as_array().is_some_and(|q| {
                q.iter().any(|r| {
                    r["queue"] == "sales" && r["counters"]["answered"] == 1 && r["counters"]["abandoned"] == 1
                })
            })
    }));
    let sales = live["queues"]
        .as_array()
        .and_then(|q| q.iter().find(|r| r["queue"] == "sales").cloned())
        .expect("sales figures");
    let interactions = platform.ended_interactions(2);
    assert_eq!(interactions.len(), 2, "{}", platform.log());
    let url = format!("sqlite:{}/cc.db", platform.dir.path().display());
    let report = rt.block_on(async {
        let crm = crm_store::CrmStore::connect(&url).await.expect("crm");
        let now = domain::Timestamp::now_utc();
        crm.interval_report(
            domain::Timestamp::from_millis(now.as_millis() - 3_600_000),
            domain::Timestamp::from_millis(now.as_millis() + 60_000),
            crm_store::IntervalLength::Minutes60,
            crm_store::ServiceLevelSpec::default(),
        )
        .await
        .expect("report")
    });
    let rows: Vec<&crm_store::QueueIntervalRow> = report.rows.iter().filter(|r| r.queue == "sales").collect();
    let offered: u64 = rows.iter().map(|r| r.offered).sum();
    let answered: u64 = rows.iter().map(|r| r.answered).sum();
    let abandoned: u64 = rows.iter().map(|r| r.abandoned).sum();
    assert_eq!(
        (offered, answered, abandoned),
        (
            sales["counters"]["queued"].as_u64().unwrap_or(0),
            sales["counters"]["answered"].as_u64().unwrap_or(0),
            sales["counters"]["abandoned"].as_u64().unwrap_or(0)
        ),
        "report {rows:?} vs live {sales}"
    );
    assert_eq!((offered, answered, abandoned), (2, 1, 1));
    // Average speed of answer: the router's clock and the CRM's timestamps agree to a few ms.
    let live_asa = sales["asa_ms"].as_f64().expect("live ASA");
    let report_asa = rows.iter().find_map(|r| r.asa_ms).expect("report ASA");
    assert!(
        (live_asa - report_asa).abs() <= 100.0,
        "ASA live {live_asa} ms, report {report_asa} ms"
    );
    assert_eq!(agent_phone.wait(), Some(0));
}

#[test]
fn a_node_killed_with_sigkill_comes_back_from_redis_with_the_callback_in_line_and_the_agent_not_ready() {
    require_command("sipp");
    let Some(redis) = redis_url("the ACD restart test") else {
        return;
    };
    let prefix = format!("ccacd{}x{}", std::process::id(), free_port());
    let flows = test_flows();
    let carrier = SippServer::start("uas_customer_answers.xml", 1);
    let config = with_carrier(
        desk_config()
            + "\n[agents]\nready_on_start = false\n\n[[route]]\nnumber = \"800\"\nivr = \"main\"\n"
            + &format!(
                "\n[state]\nbackend = \"redis\"\nredis_url = \"{redis}\"\nkey_prefix = \"{prefix}\"\n"
            ),
        carrier.port,
        Some("+4930000000"),
    );
    let first = Platform::start_with_flows(&config, flows.path());
    let agent_phone = SippServer::start("uas", 1);
    register_agent_phone(&first, "1001", "agent1001", agent_phone.port);
    let token = first.login("1001", "agent1001");
    let rt = runtime();
    rt.block_on(async {
        let mut ws = CtiClient::connect(first.http, "/ws/agent", &token).await;
        ws.next_of("welcome").await;
        assert_eq!(ws.ask(json!({"type": "login", "id": 1})).await["type"], "ack");
        let f = ws
            .ask(json!({"type": "not_ready", "id": 2, "reason": "training"}))
            .await;
        assert_eq!(f["type"], "ack", "{f}");
    });
    // The agent is away: the caller asks for a callback and hangs up, keeping their place.
    let run = uac(&first, "uac_callback.xml", "800", 1, &[]);
    run.assert_succeeded(1, &first);
    let caller = first.ended_interactions(1).remove(0).row.id;
    // The router's saved state holds the place before the node is killed.
    rt.block_on(async {
        let store = state_store::StateStore::connect(&state_store::StateConfig::redis(&redis, &prefix))
            .await
            .expect("redis");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let saved = store
                .get_blob("acd", "node1", domain::Timestamp::now_utc())
                .await
                .expect("read the saved state");
            if saved.is_some_and(|b| String::from_utf8_lossy(&b.value).contains(&caller)) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the ACD never saved the callback"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let dir = first.kill();

    // A new process on the same store and database: the session, the agent's state and the
    // callback's place are all still there.
    let second = Platform::start_in(dir, &config, flows.path());
    rt.block_on(async {
        let mut ws = CtiClient::connect(second.http, "/ws/agent", &token).await;
        let welcome = ws.next_of("welcome").await;
        assert_eq!(welcome["state"]["state"], "not_ready", "{welcome}");
        assert_eq!(welcome["state"]["reason"], "training", "{welcome}");
        assert_eq!(ws.ask(json!({"type": "ready", "id": 1})).await["type"], "ack");
        let pop = ws.next_of("offer").await["pop"].clone();
        assert_eq!(pop["call"], caller.as_str(), "{pop}");
        assert_eq!(pop["caller"], "+4930123456", "{pop}");
        let call = pop["call"].as_str().expect("call").to_string();
        ws.next_where(|f| f["type"] == "call_phase" && f["phase"] == "connected")
            .await;
        assert_eq!(
            ws.ask(json!({"type": "hangup", "id": 2, "call": call})).await["type"],
            "ack"
        );
    });
    assert_eq!(agent_phone.wait(), Some(0));
    assert_eq!(
        carrier.wait(),
        Some(0),
        "the customer was called back after the restart"
    );
}
