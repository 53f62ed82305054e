//! System tests: the real `callcenter` binary against SIPp, baresip and hand-made SIP messages.

use std::time::Duration;
use system_tests::*;

const USERS: &str = "[[sip.user]]\nname = \"1001\"\npassword = \"secret1001\"\n";

fn open_limits() -> String {
    "[sip.limits]\nmax_calls_per_second = 0\nper_source_requests_per_second = 0\n".to_string()
}

fn forward_to(port: u16) -> String {
    format!("[[route]]\nnumber = \"900\"\nforward = \"sip:uas@127.0.0.1:{port}\"\n")
}

#[test]
fn forwarded_calls_all_complete_through_the_b2bua() {
    require_command("sipp");
    let callee = SippServer::start("uas", 200);
    let platform = Platform::start(&format!("{}{}", open_limits(), forward_to(callee.port)));
    let run = uac(&platform, "uac", "900", 200, &["-r", "50", "-d", "200"]);
    run.assert_succeeded(200, &platform);
    assert_eq!(run.exit_code, Some(0));
    assert_eq!(callee.wait(), Some(0));
    let (code, metrics) = platform.http_get("/metrics");
    assert_eq!(code, 200);
    assert!(metrics.contains("sip_calls_total 200"), "{metrics}");
}

/// One call from a SIPp caller scenario through a forward route to a SIPp callee scenario; both
/// scenarios must complete (each checks what it receives).
fn forwarded_call(callee_scenario: &str, caller_scenario: &str, what_the_callee_checks: &str) {
    require_command("sipp");
    let callee = SippServer::start(callee_scenario, 1);
    let platform = Platform::start(&format!("{}{}", open_limits(), forward_to(callee.port)));
    let run = uac(&platform, caller_scenario, "900", 1, &[]);
    run.assert_succeeded(1, &platform);
    assert_eq!(callee.wait(), Some(0), "{what_the_callee_checks}");
}

#[test]
fn cancel_before_answer_reaches_the_callee_and_the_caller_gets_487() {
    forwarded_call(
        "uas_ring_cancel.xml",
        "uac_cancel.xml",
        "the callee must see CANCEL and answer 487",
    );
}

#[test]
fn bye_from_the_callee_ends_the_callers_leg() {
    forwarded_call(
        "uas_bye.xml",
        "uac_wait_bye.xml",
        "the callee's BYE must be answered",
    );
}

#[test]
fn reinvite_hold_is_relayed_across_the_bridge() {
    forwarded_call(
        "uas_hold.xml",
        "uac_hold.xml",
        "the callee must receive the sendonly re-INVITE",
    );
}

#[test]
fn register_with_digest_auth_right_wrong_and_stale() {
    require_command("sipp");
    // The default nonce lifetime (minutes): whatever the machine's load, a right answer is never stale.
    let platform = Platform::start(&format!(
        "{}[sip.registrar]\nmin_expires_secs = 60\n{USERS}",
        open_limits()
    ));
    let cases = [
        ("register.xml", "1001", "secret1001", "right password"),
        ("register_denied.xml", "1001", "nope", "wrong password"),
        (
            "register_denied.xml",
            "4040",
            "nope",
            "unknown user looks like a wrong password",
        ),
    ];
    for (scenario, user, password, what) in cases {
        let run = uac(&platform, scenario, user, 1, &["-au", user, "-ap", password]);
        assert_eq!(
            (run.successful, run.failed),
            (1, 0),
            "{what}: {}\n{}",
            run.output,
            platform.log()
        );
    }
    // Stale: the phone holds its first nonce past the lifetime (SIPp pauses -d ms, always longer), gets
    // 401 stale=true with a fresh nonce and answers it at once; "at once" has the whole lifetime (5 s) to
    // happen, so a busy machine cannot turn the fresh nonce stale too.
    let platform = Platform::start(&format!(
        "{}[sip.registrar]\nnonce_lifetime_secs = 5\nmin_expires_secs = 60\n{USERS}",
        open_limits()
    ));
    let run = uac(
        &platform,
        "register_stale.xml",
        "1001",
        1,
        &["-au", "1001", "-ap", "secret1001", "-d", "5600"],
    );
    assert_eq!(
        (run.successful, run.failed),
        (1, 0),
        "stale nonce, then the fresh one: {}\n{}",
        run.output,
        platform.log()
    );
}

#[test]
fn unknown_number_gets_404_and_options_gets_200() {
    let platform = Platform::start(&format!("{}{USERS}", open_limits()));
    let sip = RawSip::new(platform.sip);
    let resp = sip
        .exchange(sip.options("opt-1").as_bytes())
        .expect("OPTIONS answered");
    assert_eq!(status_of(&resp), Some(200), "{resp}");
    assert!(resp.contains("Allow: "), "{resp}");
    let invite = sip.invite("555", "inv-404");
    let resp = sip.exchange(invite.as_bytes()).expect("INVITE answered");
    assert_eq!(status_of(&resp), Some(404), "{resp}");
    // A known user with no registered phone looks exactly like an unknown number.
    let invite = sip.invite("1001", "inv-1001");
    let resp = sip.exchange(invite.as_bytes()).expect("INVITE answered");
    assert_eq!(status_of(&resp), Some(404), "{resp}");
    // A method we know but do not take out of dialog: 405 with Allow.
    let message = sip.options("msg-1").replace("OPTIONS", "MESSAGE");
    let resp = sip.exchange(message.as_bytes()).expect("MESSAGE answered");
    assert_eq!(status_of(&resp), Some(405), "{resp}");
    assert!(resp.contains("Allow: "), "{resp}");
}

#[test]
fn forwarding_to_a_trunk_answers_its_digest_challenge() {
    require_command("sipp");
    let carrier = SippServer::start("uas_auth.xml", 1);
    let platform = Platform::start(&format!(
        "{}[[route]]\nnumber = \"900\"\nforward = \"sip:+15550100@127.0.0.1:{port}\"\n[[trunk]]\nname = \"carrier\"\nuri = \"sip:127.0.0.1:{port}\"\nusername = \"acct-42\"\npassword = \"trunksecret\"\n",
        open_limits(),
        port = carrier.port
    ));
    let run = uac(&platform, "uac", "900", 1, &["-d", "200"]);
    run.assert_succeeded(1, &platform);
    assert_eq!(carrier.wait(), Some(0), "the carrier must accept our credentials");
}

#[test]
fn malformed_and_tortuous_messages_get_the_right_answer_and_the_gateway_keeps_serving() {
    let platform = Platform::start(&open_limits());
    let sip = RawSip::new(platform.sip);
    let l = sip.local();
    let t = platform.sip;
    let base = |method: &str, call: &str, extra: &str| {
        format!(
            "{method} sip:gw@{t} SIP/2.0\r\nVia: SIP/2.0/UDP {l};branch=z9hG4bK{call}\r\nMax-Forwards: 70\r\nFrom: <sip:a@{l}>;tag=f{call}\r\nTo: <sip:gw@{t}>\r\nCall-ID: {call}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    };
    // (message, expected status or None for "dropped")
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        ("unknown method", base("FROB", "m1", "").into_bytes(), Some(501)),
        (
            "unsupported Require",
            base("OPTIONS", "m2", "Require: 100rel, foo\r\n").into_bytes(),
            Some(420),
        ),
        (
            "CSeq method mismatch",
            base("OPTIONS", "m3", "")
                .replace("1 OPTIONS", "1 INVITE")
                .into_bytes(),
            Some(400),
        ),
        (
            "Content-Length larger than body",
            base("OPTIONS", "m4", "")
                .replace("Content-Length: 0", "Content-Length: 400")
                .into_bytes(),
            Some(400),
        ),
        (
            "Max-Forwards zero",
            base("OPTIONS", "m5", "")
                .replace("Max-Forwards: 70", "Max-Forwards: 0")
                .into_bytes(),
            Some(483),
        ),
        (
            "huge header",
            base("OPTIONS", "m6", &format!("X-Huge: {}\r\n", "x".repeat(7990))).into_bytes(),
            Some(513),
        ),
        (
            "missing From tag",
            base("OPTIONS", "m7", "").replace(";tag=fm7", "").into_bytes(),
            Some(400),
        ),
        (
            "missing Call-ID",
            base("OPTIONS", "m8", "")
                .replace("Call-ID: m8\r\n", "")
                .into_bytes(),
            None,
        ),
        (
            "missing Via",
            base("OPTIONS", "m9", "")
                .replace(&format!("Via: SIP/2.0/UDP {l};branch=z9hG4bKm9\r\n"), "")
                .into_bytes(),
            None,
        ),
        (
            "truncated datagram",
            base("OPTIONS", "m10", "").as_bytes()[..70].to_vec(),
            None,
        ),
        (
            "garbage bytes",
            vec![0x00, 0xff, 0x13, 0x37, 0x0d, 0x0a, 0x0d, 0x0a, 0x80],
            None,
        ),
        (
            "non-UTF-8 header",
            {
                let mut b = base("OPTIONS", "m12", "Subject: \u{1}\r\n").into_bytes();
                if let Some(p) = b.iter().position(|x| *x == 1) {
                    b[p] = 0xfe;
                }
                b
            },
            Some(400),
        ),
        (
            // RFC 3261 §21.5.6, RFC 4475 §3.1.2.16: another SIP version gets 505.
            "unknown SIP version",
            base("OPTIONS", "m13", "")
                .replace(" SIP/2.0\r\nVia", " SIP/3.0\r\nVia")
                .into_bytes(),
            Some(505),
        ),
    ];
    for (name, bytes, expected) in cases {
        sip.socket.send_to(&bytes, platform.sip).expect("send");
        let got = sip.receive();
        match expected {
            Some(code) => {
                let resp = got.unwrap_or_else(|| panic!("{name}: no response"));
                assert_eq!(status_of(&resp), Some(code), "{name}: {resp}");
            }
            None => assert!(got.is_none(), "{name}: expected a silent drop, got {got:?}"),
        }
    }
    // Tortuous but valid: folded header lines and compact forms are understood.
    let folded = format!(
        "OPTIONS sip:gw@{t} SIP/2.0\r\nv: SIP/2.0/UDP {l};branch=z9hG4bKfold\r\nMax-Forwards: 70\r\nf: <sip:a@{l}>\r\n ;tag=fold\r\nt: <sip:gw@{t}>\r\ni: fold\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n"
    );
    let resp = sip.exchange(folded.as_bytes()).expect("folded OPTIONS answered");
    assert_eq!(status_of(&resp), Some(200), "{resp}");
    // And the gateway still answers.
    let resp = sip
        .exchange(sip.options("after").as_bytes())
        .expect("still answering");
    assert_eq!(status_of(&resp), Some(200));
    let (_, metrics) = platform.http_get("/metrics");
    assert!(
        metrics.contains("sip_rejected_messages_total{reason=\"unknown_method\"} 1"),
        "{metrics}"
    );
}

#[test]
fn overload_answers_503_with_retry_after() {
    let platform = Platform::start(
        "[sip.limits]\nmax_calls_per_second = 1\nper_source_requests_per_second = 0\nretry_after_secs = 7\n[[route]]\nnumber = \"900\"\nforward = \"sip:nobody@127.0.0.1:9\"\n",
    );
    let sip = RawSip::new(platform.sip);
    let mut codes = Vec::new();
    for i in 0..3 {
        let invite = sip.invite("900", &format!("ovl-{i}"));
        sip.socket.send_to(invite.as_bytes(), platform.sip).expect("send");
        if i > 0 {
            let resp = sip.receive().expect("answered");
            codes.push(status_of(&resp));
            assert!(resp.contains("Retry-After: 7"), "{resp}");
        }
    }
    assert_eq!(codes, vec![Some(503), Some(503)]);
}

#[test]
fn sigterm_drains_new_calls_get_503_and_the_process_exits_0() {
    require_command("sipp");
    let callee = SippServer::start("uas", 1);
    let mut platform = Platform::start(&format!("{}{}", open_limits(), forward_to(callee.port)));
    // A call in progress (held 3 s) while we ask the node to stop.
    let target = platform.sip.to_string();
    let port = free_port().to_string();
    let media = free_media_port().to_string();
    let mut caller = std::process::Command::new("sipp")
        .args([
            "-sn",
            "uac",
            "-i",
            "127.0.0.1",
            "-p",
            &port,
            "-mp",
            &media,
            "-s",
            "900",
            "-m",
            "1",
            "-d",
            "3000",
            "-nostdin",
            "-timeout",
            "30s",
            "-timeout_error",
            &target,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sipp");
    // Wait (by observation, not by a fixed sleep) until the call is admitted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !platform.http_get("/metrics").1.contains("sip_calls_total 1") {
        assert!(std::time::Instant::now() < deadline, "call never admitted");
        std::thread::sleep(Duration::from_millis(20));
    }
    platform.signal(libc::SIGTERM);
    // The node reports not-ready once it has begun draining.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while platform.http_get("/readyz").0 != 503 {
        assert!(std::time::Instant::now() < deadline, "never started draining");
        std::thread::sleep(Duration::from_millis(10));
    }
    let sip = RawSip::new(platform.sip);
    let invite = sip.invite("900", "drain-1");
    let resp = sip.exchange(invite.as_bytes()).expect("answered while draining");
    assert_eq!(status_of(&resp), Some(503), "{resp}");
    assert_eq!(
        caller.wait().ok().and_then(|s| s.code()),
        Some(0),
        "the running call finishes"
    );
    assert_eq!(
        platform.wait(Duration::from_secs(20)),
        Some(0),
        "{}",
        platform.log()
    );
}

#[test]
fn baresip_registers_and_answers_a_call_through_the_gateway() {
    require_command("baresip");
    require_command("sipp");
    // SIPp rings the agent's phone directly, which a node allows only when told to.
    let platform = Platform::start(&format!(
        "allow_direct_user_calls = true\n{}{USERS}",
        open_limits()
    ));
    let home = tempfile::tempdir().expect("tempdir");
    let conf = home.path().join(".baresip");
    std::fs::create_dir_all(&conf).expect("mkdir");
    let sip_port = free_port();
    std::fs::write(
        conf.join("config"),
        format!(
            "poll_method\tepoll\nnet_interface\t127.0.0.1\nsip_listen\t127.0.0.1:{sip_port}\naudio_player\taufile,/dev/null\naudio_source\tausine,440\nausrc_srate\t48000\nauplay_srate\t48000\nausrc_channels\t2\nauplay_channels\t2\naudio_alert\taufile,/dev/null\nmodule_path\t/usr/lib/baresip/modules\nmodule\tg711.so\nmodule\tausine.so\nmodule\taufile.so\nmodule_app\taccount.so\nmodule_app\tmenu.so\n"
        ),
    )
    .expect("config");
    std::fs::write(
        conf.join("accounts"),
        format!(
            "<sip:1001@{};transport=udp>;auth_pass=secret1001;answermode=auto;regint=300\n",
            platform.sip
        ),
    )
    .expect("accounts");
    std::fs::write(conf.join("contacts"), "").expect("contacts");
    let mut baresip = std::process::Command::new("baresip")
        .args(["-f", conf.to_str().unwrap_or_default()])
        .env("HOME", home.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("baresip");
    let stdout = baresip.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // Event: baresip prints the registrar's 200 OK.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut seen = String::new();
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .unwrap_or_default();
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("200 OK") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "baresip did not register:\n{seen}\n{}",
            platform.log()
        );
    }
    let run = uac(&platform, "uac", "1001", 1, &["-d", "1000"]);
    let _ = baresip.kill();
    let _ = baresip.wait();
    let rest: String = rx.try_iter().collect::<Vec<_>>().join("\n");
    assert_eq!(
        (run.successful, run.failed),
        (1, 0),
        "{}\n{}\n{rest}",
        run.output,
        platform.log()
    );
    assert!(
        rest.contains("Call established"),
        "baresip did not answer:\n{rest}"
    );
}

#[test]
fn registrations_in_redis_survive_a_restart_of_the_node() {
    require_command("sipp");
    let Some(redis) = redis_url("the Redis restart test") else {
        return;
    };
    let prefix = format!("cctest{}x{}", std::process::id(), free_port());
    let state = format!(
        "allow_direct_user_calls = true\n[state]\nbackend = \"redis\"\nredis_url = \"{redis}\"\nkey_prefix = \"{prefix}\"\n{}[sip.registrar]\nmin_expires_secs = 60\n[[sip.user]]\nname = \"1001\"\npassword = \"agent1001\"\n",
        open_limits()
    );
    let phone = SippServer::start("uas", 1);
    let mut first = Platform::start(&state);
    register_agent_phone(&first, "1001", "agent1001", phone.port);
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait(Duration::from_secs(20)), Some(0), "{}", first.log());
    // A new process on the same store still knows where 1001 is.
    let second = Platform::start(&state);
    let run = uac(&second, "uac", "1001", 1, &["-d", "200"]);
    run.assert_succeeded(1, &second);
    assert_eq!(phone.wait(), Some(0));
}
