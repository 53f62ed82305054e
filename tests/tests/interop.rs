//! Interop with real SIP stacks other than SIPp (the rows of `docs/interop.md`): a PJSIP phone (the
//! pjsua2 binding from PyPI) and baresip (Debian), each as the caller and as the agent's phone. The
//! caller reaches the IVR, presses 1 (RFC 4733), waits in the queue, the ACD rings the agent's
//! registered phone, which answers; hold and resume go through; either side hangs up; the interaction
//! lands in the CRM with its steps; baresip as the agent's phone holds, resumes and hangs up, and transfers the caller with REFER. Once more with Kamailio (`deploy/kamailio/`) in front, and once with
//! SRTP required by PJSIP.

use system_tests::peers::{self, Phone};
use system_tests::*;

const AGENT: &str = "[[sip.user]]\nname = \"1001\"\npassword = \"agent1001\"\n\n[[acd.queues]]\nid = \"sales\"\noffer_timeout_secs = 10\n\n[[acd.agents]]\nid = \"1001\"\nqueues = [{ queue = \"sales\", rank = 1 }]\n";

fn platform(flows: &tempfile::TempDir) -> Platform {
    Platform::start_with_flows(
        &format!(
            "[sip.limits]\nmax_calls_per_second = 0\nper_source_requests_per_second = 0\n{AGENT}\
[[route]]\nnumber = \"800\"\nivr = \"main\"\n"
        ),
        flows.path(),
    )
}

fn expect(phone: &mut Phone, what: &str, platform: &Platform) {
    assert!(
        phone.wait_for(what, &["DISCONNECTED", "command failed"]),
        "no {what:?}:\n{}\n{}",
        phone.seen,
        platform.log()
    );
}

/// The interaction went menu → sales on key 1 → queue → answered by 1001 → ended.
fn assert_queued_and_answered(platform: &Platform) {
    let interactions = platform.ended_interactions(1);
    assert_eq!(interactions.len(), 1, "{}", platform.log());
    let i = &interactions[0];
    let sales = i
        .events
        .iter()
        .find(|e| e.kind == "ivr_node" && e.payload["node"] == "sales")
        .unwrap_or_else(|| panic!("no sales node in {:?}\n{}", i.events, platform.log()));
    assert_eq!(sales.payload["key"], "1", "{:?}", sales.payload);
    let kinds = i.kinds();
    for step in ["enqueued", "answered", "ended"] {
        assert!(kinds.contains(&step.to_string()), "{step} missing: {kinds:?}");
    }
    assert_eq!(i.row.agent_id.as_deref(), Some("1001"));
}

#[test]
fn pjsip_caller_through_ivr_and_queue_to_a_baresip_agent_with_hold_resume_and_caller_hang_up() {
    require_command("baresip");
    let flows = test_flows();
    let platform = platform(&flows);
    let gw = platform.sip.to_string();
    let (mut agent, _) = peers::baresip(
        &format!("<sip:1001@{gw};transport=udp>;auth_pass=agent1001;answermode=auto;regint=300"),
        "",
    );
    expect(&mut agent, "200 OK", &platform);

    let mut caller = peers::pjsua(&gw, "caller", "-", false);
    expect(&mut caller, "ready", &platform);
    caller.send(&format!("call sip:800@{gw}"));
    expect(&mut caller, "state CONFIRMED", &platform);
    caller.send("dtmf 1");
    // Event: the agent's phone rings through the queue and baresip answers it.
    expect(&mut agent, "Call established", &platform);
    caller.send("hold");
    expect(&mut caller, "media held", &platform);
    caller.send("unhold");
    expect(&mut caller, "media active", &platform);
    caller.send("hangup");
    expect(&mut caller, "state DISCONNECTED", &platform);
    // baresip reports the BYE it received as "session closed".
    assert!(
        agent.wait_for("session closed", &[]),
        "the agent's call did not end:\n{}",
        agent.seen
    );
    assert_queued_and_answered(&platform);
}

#[test]
fn baresip_caller_through_ivr_and_queue_to_a_pjsip_agent_who_holds_resumes_and_hangs_up() {
    require_command("baresip");
    let flows = test_flows();
    let platform = platform(&flows);
    baresip_caller_to_pjsip_agent(&platform, &platform.sip.to_string());
}

#[test]
fn through_kamailio_a_baresip_caller_reaches_a_pjsip_agent_registered_through_it_too() {
    require_command("baresip");
    let flows = test_flows();
    let platform = platform(&flows);
    let kamailio = kamailio::Kamailio::start(&[platform.sip]);
    kamailio.wait_for(platform.sip, 'A', "in rotation");
    baresip_caller_to_pjsip_agent(&platform, &kamailio.sip.to_string());
}

/// The PJSIP agent registers at `entry`, the baresip caller calls the IVR at `entry`, presses 1, the
/// agent is rung and answers, holds, resumes and hangs up; the caller hangs up in the survey.
fn baresip_caller_to_pjsip_agent(platform: &Platform, entry: &str) {
    let mut agent = peers::pjsua(entry, "1001", "agent1001", false);
    expect(&mut agent, "reg 200", platform);

    let (mut caller, dumps) = peers::baresip(&format!("<sip:caller@{entry}>;regint=0"), "");
    expect(&mut caller, "baresip is ready", platform);
    caller.send(&format!("/dial sip:800@{entry}"));
    expect(&mut caller, "Call established", platform);
    caller.send("1");
    // Event: the ACD rings the PJSIP phone, which answers.
    expect(&mut agent, "incoming", platform);
    expect(&mut agent, "state CONFIRMED", platform);
    agent.send("hold");
    expect(&mut agent, "media held", platform);
    agent.send("unhold");
    expect(&mut agent, "media active", platform);
    agent.send("hangup");
    expect(&mut agent, "state DISCONNECTED", platform);
    // The caller is back in the IVR for the survey; baresip hangs up there.
    caller.send("b");
    assert!(
        caller.wait_for("terminate", &[]),
        "the caller's call did not end:\n{}",
        caller.seen
    );
    // The caller heard the IVR (baresip decoded audible audio).
    assert!(peers::decoded_peak(&dumps) > 1000, "{}", caller.seen);
    assert_queued_and_answered(platform);
}

#[test]
fn pjsip_calls_the_ivr_with_mandatory_srtp_and_decrypts_its_audio() {
    let flows = test_flows();
    let platform = platform(&flows);
    srtp_call_to_the_ivr(&platform, &platform.sip.to_string());
}

#[test]
fn through_kamailio_pjsip_calls_the_ivr_with_mandatory_srtp_and_decrypts_its_audio() {
    let flows = test_flows();
    let platform = platform(&flows);
    let kamailio = kamailio::Kamailio::start(&[platform.sip]);
    kamailio.wait_for(platform.sip, 'A', "in rotation");
    srtp_call_to_the_ivr(&platform, &kamailio.sip.to_string());
}

/// A PJSIP caller that requires SRTP calls the IVR at `gw` and decrypts what it hears.
fn srtp_call_to_the_ivr(platform: &Platform, gw: &str) {
    let mut caller = peers::pjsua(gw, "caller", "-", true);
    expect(&mut caller, "ready", platform);
    caller.send(&format!("call sip:800@{gw}"));
    // PJSIP requires SRTP: the call is confirmed only if our answer carries a key it accepts.
    expect(&mut caller, "state CONFIRMED", platform);
    // Event: its stream counts RTP packets only once they pass SRTP authentication and decryption.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let received = loop {
        caller.send("rx");
        assert!(caller.wait_for("rx ", &[]), "{}", caller.seen);
        let last = caller
            .seen
            .lines()
            .rev()
            .find(|l| l.starts_with("rx "))
            .unwrap_or("");
        let mut words = last.split_whitespace().skip(1);
        let n: u64 = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        assert_eq!(words.next(), Some("SAVP"), "{}", caller.seen);
        if n > 10 || std::time::Instant::now() > deadline {
            break n;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        received > 10,
        "{received} packets:\n{}\n{}",
        caller.seen,
        platform.log()
    );
    caller.send("hangup");
    expect(&mut caller, "state DISCONNECTED", platform);
}

#[test]
fn pjsip_caller_to_a_baresip_agent_who_holds_resumes_and_hangs_up() {
    require_command("baresip");
    let flows = test_flows();
    let platform = platform(&flows);
    let gw = platform.sip.to_string();
    let (mut agent, _) = peers::baresip(
        &format!("<sip:1001@{gw};transport=udp>;auth_pass=agent1001;answermode=auto;regint=300"),
        "",
    );
    expect(&mut agent, "200 OK", &platform);
    let mut caller = peers::pjsua(&gw, "caller", "-", false);
    expect(&mut caller, "ready", &platform);
    caller.send(&format!("call sip:800@{gw}"));
    expect(&mut caller, "state CONFIRMED", &platform);
    caller.send("dtmf 1");
    expect(&mut agent, "Call established", &platform);
    // baresip's hold and resume are re-INVITEs (sendonly, then sendrecv); it updates its stream only
    // once our 200 answers them (a refusal would close the session).
    for command in ["hold", "resume"] {
        agent.send(&format!("/{command}"));
        for line in [format!("call: {command}"), "stream: update 'audio'".to_string()] {
            assert!(
                agent.wait_for(&line, &["session closed"]),
                "no {line:?} after /{command}:\n{}\n{}",
                agent.seen,
                platform.log()
            );
        }
    }
    // The agent hangs up; the caller is still connected (back in the IVR for the survey) and hangs up.
    agent.send("b");
    assert!(
        agent.wait_for("terminate", &[]),
        "the agent's call did not end:\n{}",
        agent.seen
    );
    caller.send("hangup");
    expect(&mut caller, "state DISCONNECTED", &platform);
    assert_queued_and_answered(&platform);
}

#[test]
fn a_baresip_agent_transfers_the_caller_blind_with_refer_to_an_outside_number() {
    require_command("baresip");
    require_command("sipp");
    let flows = test_flows();
    // The carrier checks the number dialled, answers, and hangs up a moment later.
    let carrier = SippServer::start("uas_trunk_number.xml", 1);
    let platform = Platform::start_with_flows(
        &format!(
            "[sip.limits]\nmax_calls_per_second = 0\nper_source_requests_per_second = 0\n{AGENT}\
[[route]]\nnumber = \"800\"\nivr = \"main\"\n[desk]\noutbound_trunk = \"carrier\"\n\
[[trunk]]\nname = \"carrier\"\nuri = \"sip:127.0.0.1:{}\"\n",
            carrier.port
        ),
        flows.path(),
    );
    let gw = platform.sip.to_string();
    let (mut agent, _) = peers::baresip(
        &format!("<sip:1001@{gw};transport=udp>;auth_pass=agent1001;answermode=auto;regint=300"),
        "",
    );
    expect(&mut agent, "200 OK", &platform);
    let mut caller = peers::pjsua(&gw, "caller", "-", false);
    expect(&mut caller, "ready", &platform);
    caller.send(&format!("call sip:800@{gw}"));
    expect(&mut caller, "state CONFIRMED", &platform);
    caller.send("dtmf 1");
    expect(&mut agent, "Call established", &platform);
    // baresip sends REFER; the gateway accepts it (202) and the platform dials the number through the
    // trunk; baresip ends its own call once our NOTIFY says 200 (it prints nothing for that).
    agent.send(&format!("/transfer sip:+4930999888@{gw}"));
    expect(&mut agent, "transferring call", &platform);
    // The carrier answered and hung up: the caller's call ends with it.
    expect(&mut caller, "state DISCONNECTED", &platform);
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
        .unwrap_or_else(|| panic!("no transfer in {:?}\n{}", i.kinds(), platform.log()));
    assert_eq!(transferred.payload["target"], "number:+4930999888");
    assert_eq!(i.row.agent_id.as_deref(), Some("1001"));
    let metrics = platform.http_get("/metrics").1;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("method=\"REFER\"") && l.contains("code=\"202\"")),
        "{metrics}"
    );
}

/// A platform whose outbound trunk is `carrier` (a SIPp UAS on that port).
fn platform_with_trunk(flows: &tempfile::TempDir, carrier: u16) -> Platform {
    Platform::start_with_flows(
        &format!(
            "[sip.limits]\nmax_calls_per_second = 0\nper_source_requests_per_second = 0\n{AGENT}\
[[route]]\nnumber = \"800\"\nivr = \"main\"\n[desk]\noutbound_trunk = \"carrier\"\n\
[[trunk]]\nname = \"carrier\"\nuri = \"sip:127.0.0.1:{carrier}\"\n"
        ),
        flows.path(),
    )
}

#[test]
fn a_pjsip_agent_transfers_the_caller_blind_with_refer_to_an_outside_number() {
    require_command("baresip");
    require_command("sipp");
    let flows = test_flows();
    let carrier = SippServer::start("uas_trunk_number.xml", 1);
    let platform = platform_with_trunk(&flows, carrier.port);
    let gw = platform.sip.to_string();
    pjsip_agent_transfers(&platform, &gw, carrier);
}

#[test]
fn through_kamailio_a_pjsip_agent_transfers_the_caller_blind_with_refer() {
    require_command("baresip");
    require_command("sipp");
    let flows = test_flows();
    let carrier = SippServer::start("uas_trunk_number.xml", 1);
    let platform = platform_with_trunk(&flows, carrier.port);
    let kamailio = kamailio::Kamailio::start(&[platform.sip]);
    kamailio.wait_for(platform.sip, 'A', "in rotation");
    pjsip_agent_transfers(&platform, &kamailio.sip.to_string(), carrier);
}

/// The PJSIP agent registers at `entry`, a baresip caller calls the IVR there and presses 1; the agent
/// answers and transfers the caller (REFER) to +4930999888, which the carrier answers and hangs up.
fn pjsip_agent_transfers(platform: &Platform, entry: &str, carrier: SippServer) {
    let mut agent = peers::pjsua(entry, "1001", "agent1001", false);
    expect(&mut agent, "reg 200", platform);
    let (mut caller, _) = peers::baresip(&format!("<sip:caller@{entry}>;regint=0"), "");
    expect(&mut caller, "baresip is ready", platform);
    caller.send(&format!("/dial sip:800@{entry}"));
    expect(&mut caller, "Call established", platform);
    caller.send("1");
    expect(&mut agent, "state CONFIRMED", platform);
    // PJSIP sends REFER; our NOTIFY tells it the transfer was taken.
    agent.send(&format!("transfer sip:+4930999888@{entry}"));
    expect(&mut agent, "xfer 200", platform);
    // The carrier answered and hung up: the caller's call ends with it.
    assert!(
        caller.wait_for("session closed", &[]),
        "the caller's call did not end:\n{}\n{}",
        caller.seen,
        platform.log()
    );
    assert_eq!(carrier.wait(), Some(0), "{}", platform.log());
    let interactions = platform.ended_interactions(1);
    let i = interactions
        .first()
        .unwrap_or_else(|| panic!("no interaction\n{}", platform.log()));
    let transferred = i
        .events
        .iter()
        .find(|e| e.kind == "transferred")
        .unwrap_or_else(|| panic!("no transfer in {:?}\n{}", i.kinds(), platform.log()));
    assert_eq!(transferred.payload["target"], "number:+4930999888");
    assert_eq!(i.row.agent_id.as_deref(), Some("1001"));
}
