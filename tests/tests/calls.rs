//! End to end through call control: a caller reaches a queue (directly or through the IVR with RFC 4733
//! digits), the ACD offers the call to an agent's registered SIP phone, the legs are bridged, and the
//! interaction with its steps lands in the CRM store.

use system_tests::*;

const AGENT: &str = "[[sip.user]]\nname = \"1001\"\npassword = \"agent1001\"\n\n[[acd.queues]]\nid = \"sales\"\noffer_timeout_secs = 10\n\n[[acd.agents]]\nid = \"1001\"\nqueues = [{ queue = \"sales\", rank = 1 }]\n";

fn limits() -> &'static str {
    "[sip.limits]\nmax_calls_per_second = 0\nper_source_requests_per_second = 0\n"
}

#[test]
fn queue_call_is_routed_to_the_agents_phone_and_recorded_in_the_crm() {
    require_command("sipp");
    let agent_phone = SippServer::start("uas", 1);
    let platform = Platform::start(&format!(
        "{}{AGENT}[[route]]\nnumber = \"801\"\nqueue = \"sales\"\n",
        limits()
    ));
    register_agent_phone(&platform, "1001", "agent1001", agent_phone.port);
    let run = uac(&platform, "uac", "801", 1, &["-d", "1500"]);
    run.assert_succeeded(1, &platform);
    assert_eq!(
        agent_phone.wait(),
        Some(0),
        "the agent's phone was rung, answered and hung up"
    );

    let interactions = platform.ended_interactions(1);
    assert_eq!(interactions.len(), 1, "{}", platform.log());
    let i = &interactions[0];
    assert_eq!(
        i.kinds(),
        vec!["arrived", "enqueued", "offered", "answered", "recording", "ended"],
        "{:?}",
        i.events
    );
    // The bridged call was recorded: a stereo WAV (caller left, agent right) whose path is in the CRM.
    let path = i.row.recording_path.clone().unwrap_or_default();
    let wav =
        std::fs::read(platform.dir.path().join(&path)).unwrap_or_else(|e| panic!("recording {path}: {e}"));
    assert_eq!(&wav[..4], b"RIFF", "{path}");
    assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 2, "two channels");
    assert_eq!(i.row.agent_id.as_deref(), Some("1001"));
    assert_eq!(i.row.queue_id.as_deref(), Some("sales"));
    assert_eq!(i.row.ended_by.as_deref(), Some("caller"));
    let explanation = i.row.routing_explanation.clone().unwrap_or_default();
    assert!(
        explanation.contains("1001") || explanation.contains("longest"),
        "explanation: {explanation}"
    );
}

#[test]
fn ivr_digit_from_rfc4733_routes_the_caller_to_sales_and_every_step_is_stored() {
    require_command("sipp");
    let flows = test_flows();
    let agent_phone = SippServer::start("uas", 1);
    let platform = Platform::start_with_flows(
        &format!("{}{AGENT}[[route]]\nnumber = \"800\"\nivr = \"main\"\n", limits()),
        flows.path(),
    );
    register_agent_phone(&platform, "1001", "agent1001", agent_phone.port);
    let run = uac(&platform, "uac_dtmf_1.xml", "800", 1, &[]);
    run.assert_succeeded(1, &platform);

    let interactions = platform.ended_interactions(1);
    assert_eq!(interactions.len(), 1, "{}", platform.log());
    let i = &interactions[0];
    let kinds = i.kinds();
    assert_eq!(kinds.first().map(String::as_str), Some("arrived"));
    // The menu node, then the sales node entered with the key 1.
    let sales = i
        .events
        .iter()
        .find(|e| e.kind == "ivr_node" && e.payload["node"] == "sales")
        .unwrap_or_else(|| panic!("no sales node in {:?}\n{}", i.events, platform.log()));
    assert_eq!(sales.payload["key"], "1", "{:?}", sales.payload);
    assert!(kinds.contains(&"enqueued".to_string()), "{kinds:?}");
    assert!(
        kinds.contains(&"answered".to_string()),
        "{kinds:?}\n{}",
        platform.log()
    );
    assert_eq!(kinds.last().map(String::as_str), Some("ended"));
    assert!(i.row.ivr_path.contains("menu"), "ivr path: {}", i.row.ivr_path);
    assert_eq!(i.row.agent_id.as_deref(), Some("1001"));
    assert_eq!(agent_phone.wait(), Some(0));
}

#[test]
fn caller_hanging_up_in_the_queue_is_recorded_as_abandoned() {
    require_command("sipp");
    // The only agent has no registered phone: the offer fails, the caller waits, then hangs up.
    let platform = Platform::start(&format!(
        "{}{AGENT}[[route]]\nnumber = \"801\"\nqueue = \"sales\"\n",
        limits()
    ));
    let run = uac(&platform, "uac", "801", 1, &["-d", "1000"]);
    run.assert_succeeded(1, &platform);
    let interactions = platform.ended_interactions(1);
    assert_eq!(interactions.len(), 1, "{}", platform.log());
    let i = &interactions[0];
    assert!(i.kinds().contains(&"enqueued".to_string()));
    assert!(!i.kinds().contains(&"answered".to_string()), "{:?}", i.kinds());
    assert_eq!(i.row.ended_by.as_deref(), Some("caller"));
    assert!(i.row.abandoned, "{:?}", i.row);
}

#[test]
fn sighup_reloads_valid_flows_and_keeps_the_running_ones_when_the_new_set_is_broken() {
    let flows = test_flows();
    let platform = Platform::start_with_flows(&format!("{}{AGENT}", limits()), flows.path());
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !platform.log().contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {needle:?} in\n{}",
                platform.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    // A broken edit is refused, with the file and the problem in the log.
    let main = flows.path().join("main.toml");
    let good = std::fs::read_to_string(&main).expect("flow");
    std::fs::write(
        &main,
        good.replace("exhausted = \"goodbye\"", "exhausted = \"nowhere\""),
    )
    .expect("edit");
    platform.signal(libc::SIGHUP);
    wait_for("IVR reload refused");
    assert!(platform.log().contains("nowhere"), "{}", platform.log());
    // A valid edit is taken.
    std::fs::write(&main, good.replace("timeout = \"10s\"", "timeout = \"12s\"")).expect("edit");
    platform.signal(libc::SIGHUP);
    wait_for("IVR flows reloaded");
}

#[test]
fn the_callers_ivr_state_is_kept_in_the_shared_store_during_the_call_and_removed_after() {
    require_command("sipp");
    let Some(redis) = redis_url("the IVR state test") else {
        return;
    };
    let prefix = format!("ivrtest{}x{}", std::process::id(), free_port());
    let flows = test_flows();
    let platform = Platform::start_with_flows(
        &format!(
            "{}{AGENT}[[route]]\nnumber = \"800\"\nivr = \"main\"\n[state]\nbackend = \"redis\"\nredis_url = \"{redis}\"\nkey_prefix = \"{prefix}\"\n",
            limits()
        ),
        flows.path(),
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let store = rt
        .block_on(state_store::StateStore::connect(&state_store::StateConfig {
            backend: state_store::BackendConfig::Redis {
                url: redis.clone(),
                prefix: prefix.clone(),
            },
        }))
        .expect("redis");
    std::thread::scope(|scope| {
        // The caller presses 1 after a second and waits in the sales queue (no agent phone is registered).
        let caller = scope.spawn(|| uac(&platform, "uac_dtmf_1.xml", "800", 1, &[]));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(4);
        let mut seen = None;
        while seen.is_none() && std::time::Instant::now() < deadline {
            for id in platform.interaction_ids() {
                let blob = rt
                    .block_on(store.get_blob("ivr", &id, domain::Timestamp::now_utc()))
                    .expect("read");
                if let Some(b) = blob {
                    let state: serde_json::Value = serde_json::from_slice(&b.value).expect("json");
                    if state["node"] == "sales" {
                        seen = Some((id, state));
                    }
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let (id, state) =
            seen.unwrap_or_else(|| panic!("no IVR state reached the sales node\n{}", platform.log()));
        assert_eq!(state["flow"], "main", "{state}");
        let run = caller.join().expect("caller");
        assert_eq!((run.successful, run.failed), (1, 0), "{}", run.output);
        // After the call the state is gone.
        let ended = platform.ended_interactions(1);
        assert_eq!(ended.len(), 1);
        let blob = rt
            .block_on(store.get_blob("ivr", &id, domain::Timestamp::now_utc()))
            .expect("read");
        assert!(blob.is_none(), "IVR state left behind after the call");
    });
}

#[test]
fn after_the_agent_hangs_up_the_caller_rates_the_call_and_the_score_is_stored() {
    require_command("sipp");
    let flows = test_flows();
    // The agent's phone answers and hangs up itself a moment later.
    let agent_phone = SippServer::start("uas_bye.xml", 1);
    let platform = Platform::start_with_flows(
        &format!("{}{AGENT}[[route]]\nnumber = \"800\"\nivr = \"main\"\n", limits()),
        flows.path(),
    );
    register_agent_phone(&platform, "1001", "agent1001", agent_phone.port);
    let run = uac(&platform, "uac_survey.xml", "800", 1, &[]);
    run.assert_succeeded(1, &platform);
    assert_eq!(agent_phone.wait(), Some(0));
    let interactions = platform.ended_interactions(1);
    let i = interactions
        .first()
        .unwrap_or_else(|| panic!("no interaction\n{}", platform.log()));
    let kinds = i.kinds();
    let answered = kinds.iter().position(|k| k == "answered").expect("answered");
    let survey = kinds
        .iter()
        .position(|k| k == "survey")
        .unwrap_or_else(|| panic!("no survey in {kinds:?}"));
    assert!(answered < survey, "{kinds:?}");
    assert_eq!(i.row.survey_score, Some(5), "{:?}", i.row);
    assert_eq!(i.row.agent_id.as_deref(), Some("1001"));
    let survey_node = i
        .events
        .iter()
        .find(|e| e.kind == "ivr_node" && e.payload["node"] == "survey")
        .expect("the survey node was entered");
    assert_eq!(survey_node.payload["flow"], "main");
}

#[test]
fn an_ivr_transfer_node_bridges_the_caller_to_an_outside_number_through_the_trunk() {
    require_command("sipp");
    let flows = test_flows();
    let carrier = SippServer::start("uas_trunk_number.xml", 1);
    let platform = Platform::start_with_flows(
        &format!(
            "{}{AGENT}[[route]]\nnumber = \"800\"\nivr = \"main\"\n[desk]\noutbound_trunk = \"carrier\"\n[[trunk]]\nname = \"carrier\"\nuri = \"sip:127.0.0.1:{}\"\n",
            limits(),
            carrier.port
        ),
        flows.path(),
    );
    let run = uac(&platform, "uac_dtmf_2_wait_bye.xml", "800", 1, &[]);
    run.assert_succeeded(1, &platform);
    assert_eq!(
        carrier.wait(),
        Some(0),
        "the carrier was called at +4930999888\n{}",
        platform.log()
    );
    let interactions = platform.ended_interactions(1);
    let i = interactions
        .first()
        .unwrap_or_else(|| panic!("no interaction\n{}", platform.log()));
    let transferred = i
        .events
        .iter()
        .find(|e| e.kind == "transferred")
        .unwrap_or_else(|| panic!("no transfer in {:?}", i.kinds()));
    assert_eq!(transferred.payload["target"], "number:+4930999888");
    assert_eq!(
        i.row.end_reason.as_deref(),
        Some("the transferred-to party hung up")
    );
}

#[test]
fn a_caller_leaves_a_voicemail_that_is_recorded_and_logged_on_the_interaction() {
    require_command("sipp");
    let flows = test_flows();
    let platform = Platform::start_with_flows(
        &format!("{}{AGENT}[[route]]\nnumber = \"800\"\nivr = \"main\"\n", limits()),
        flows.path(),
    );
    // The caller presses 3, then speaks; the mailbox takes 3 s and the platform hangs up.
    let run = uac(&platform, "uac_voicemail.xml", "800", 1, &[]);
    run.assert_succeeded(1, &platform);
    let interactions = platform.ended_interactions(1);
    let i = interactions
        .first()
        .unwrap_or_else(|| panic!("no interaction\n{}", platform.log()));
    let voicemail = i
        .events
        .iter()
        .find(|e| e.kind == "voicemail")
        .unwrap_or_else(|| panic!("no voicemail in {:?}\n{}", i.kinds(), platform.log()));
    assert_eq!(voicemail.payload["mailbox"], "sales");
    let length = voicemail.payload["duration_ms"].as_u64().unwrap_or(0);
    assert!((2900..4000).contains(&length), "3 s mailbox limit: {length} ms");
    assert_eq!(i.row.end_reason.as_deref(), Some("voicemail left"));
    // A mono WAV with the caller's voice in it.
    let path = i.row.recording_path.clone().unwrap_or_default();
    assert_eq!(voicemail.payload["path"], path.as_str());
    let wav =
        std::fs::read(platform.dir.path().join(&path)).unwrap_or_else(|e| panic!("voicemail {path}: {e}"));
    assert_eq!(&wav[..4], b"RIFF");
    assert_eq!(u16::from_le_bytes([wav[22], wav[23]]), 1, "mono");
    let samples: Vec<i16> = wav[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert!(
        samples.len() >= 8000 * 2,
        "at least 2 s of audio: {} samples",
        samples.len()
    );
    let peak = samples.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
    assert!(peak > 1000, "the caller's voice is in the message (peak {peak})");
}

/// The IVR asks this node's own demo service for a caller's balance: the webhook's URL is a path, so
/// call control sends it to the node's HTTP server with the node's service token, which the demo
/// service takes (it refuses anyone without a credential).
#[test]
fn the_ivr_gets_a_balance_from_the_nodes_own_demo_service_with_its_token() {
    require_command("sipp");
    let flows = test_flows();
    std::fs::write(
        flows.path().join("balance.toml"),
        r#"[flow]
start = "who"

[nodes.who]
type = "set"
vars = { account = "ACC-77" }
next = "find"

[nodes.find]
type = "lookup"
by = "${account}"
timeout = "2s"
next = "balance"
not_found = "unknown_customer"
error = "unknown_customer"

[nodes.balance]
type = "webhook"
url = "/demo/balance"
timeout = "5s"
send = ["account", "customer.id"]
sets = ["balance"]
next = "balance_told"
error = "balance_unavailable"

[nodes.balance_told]
type = "hangup"

[nodes.balance_unavailable]
type = "hangup"

[nodes.unknown_customer]
type = "hangup"
"#,
    )
    .expect("write flow");
    let platform = Platform::start_with_flows(
        &format!(
            "{}[[route]]\nnumber = \"805\"\nivr = \"balance\"\n[desk]\ndemo_services = true\n\n[[desk.user]]\nid = \"sup\"\nname = \"Sam Supervisor\"\nrole = \"supervisor\"\npassword = \"supervisor-pw\"\n",
            limits()
        ),
        flows.path(),
    );
    let token = platform.login("sup", "supervisor-pw");
    let (status, body) = platform.http_post(
        "/api/v1/admin/customers",
        &serde_json::json!({"id": "c-77", "name": "Erika", "account_number": "ACC-77", "tier": "normal"})
            .to_string(),
        Some(&token),
    );
    assert_eq!(status, 201, "{body}");
    // Nobody else gets the demo service's answer.
    assert_eq!(platform.http_post("/demo/balance", "{}", None).0, 401);

    let run = uac(&platform, "uac_wait_bye.xml", "805", 1, &[]);
    run.assert_succeeded(1, &platform);
    let interactions = platform.ended_interactions(1);
    assert_eq!(interactions.len(), 1, "{}", platform.log());
    let nodes: Vec<String> = interactions[0]
        .events
        .iter()
        .filter(|e| e.kind == "ivr_node")
        .filter_map(|e| e.payload["node"].as_str().map(str::to_string))
        .collect();
    assert!(
        nodes.iter().any(|n| n == "balance_told"),
        "the webhook answered: {nodes:?}\n{}",
        platform.log()
    );
    assert!(!nodes.iter().any(|n| n == "balance_unavailable"), "{nodes:?}");
}
