//! The agent desktop in a real browser: headless Chromium (fake microphone) logs in as an agent,
//! turns on the softphone, logs in to the queues; a known customer calls through SIPp; the page
//! shows the offer with the CRM record; the agent clicks Answer and the call's audio flows through
//! the WebRTC leg both ways (SIPp echoes what it hears, so the browser receives its own audio back
//! only if it crossed the platform to SIPp and returned); the agent hangs up and saves a
//! disposition, which the CRM interaction holds. Screenshots of the agent page and the wallboard are
//! saved as test artifacts.

use serde_json::json;
use std::time::{Duration, Instant};
use system_tests::browser::Browser;
use system_tests::*;

const CONFIG: &str = r#"
[sip.limits]
max_calls_per_second = 0
per_source_requests_per_second = 0

[agents]
ready_on_start = false

[[acd.queues]]
id = "sales"
offer_timeout_secs = 30
wrap_up_secs = 120

[[acd.agents]]
id = "1001"
queues = [{ queue = "sales", rank = 1 }]

[[route]]
number = "801"
queue = "sales"

[[desk.user]]
id = "1001"
name = "Alice Agent"
role = "agent"
password = "agent1001"

[[desk.user]]
id = "super"
name = "Sam Supervisor"
role = "supervisor"
password = "supervisor"
"#;

/// The browser softphone's audio counts from getStats once both reach `arguments[0]`.
const STATS: &str = r#"
const [want, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  for (;;) {
    if (typeof pc !== 'undefined' && pc) {
      const report = await pc.getStats();
      let inbound = null, outbound = null;
      report.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') inbound = s;
        if (s.type === 'outbound-rtp' && s.kind === 'audio') outbound = s;
      });
      const received = inbound ? inbound.packetsReceived : 0;
      const sent = outbound ? outbound.packetsSent : 0;
      if (received >= want && sent >= want) { done({ received, sent }); return; }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
})().catch((e) => done({ error: String(e) }));
"#;

fn log_in(browser: &Browser, platform: &Platform, user: &str, password: &str, lands_on: &str) {
    browser.open(&format!("http://{}/", platform.http));
    browser.type_into("#user", user);
    browser.type_into("#password", password);
    browser.click("#login-button");
    browser.wait_for(
        &format!("{user} lands on {lands_on}"),
        &format!("return location.pathname === '{lands_on}' && document.readyState === 'complete';"),
    );
}

#[test]
fn an_agent_takes_a_call_in_the_browser_softphone_with_audio_both_ways() {
    require_command("sipp");
    require_command("chromium");
    require_command("chromedriver");
    let platform = Platform::start(CONFIG);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let url = format!("sqlite:{}/cc.db", platform.dir.path().display());
    rt.block_on(async {
        let crm = crm_store::CrmStore::connect(&url).await.expect("crm");
        let customer = crm_store::Customer {
            id: domain::CustomerId::new("cust-erika").expect("id"),
            account_number: Some("ACC-1".into()),
            name: domain::Pii::new("Erika Mustermann".into()),
            phones: vec![domain::Pii::new("+4930123456".into())],
            email: None,
            tier: crm_store::Tier::Major,
            account_manager: None,
            lifetime_value_cents: 250_000,
            notes: None,
        };
        crm.save_customer(&customer, "test", domain::Timestamp::now_utc())
            .await
            .expect("customer");
    });

    let browser = Browser::start();
    log_in(&browser, &platform, "1001", "agent1001", "/agent");
    browser.wait_for("the desktop connects", "return window.desk.media === 'phone';");
    // The softphone: the desktop reconnects as a browser agent.
    browser.click("#softphone");
    browser.wait_for("the softphone is on", "return window.desk.media === 'browser';");
    browser.wait_for(
        "logged out of the queues",
        "return window.desk.state === 'logged_out';",
    );
    browser.click("#btn-login");
    browser.wait_for("ready for calls", "return window.desk.state === 'available';");

    std::thread::scope(|scope| {
        // SIPp echoes every RTP packet it receives back to where it came from.
        let caller = scope.spawn(|| uac(&platform, "uac_customer_wait_bye.xml", "801", 1, &["-rtp_echo"]));

        browser.wait_for("the offer is shown", "return window.desk.phase === 'offered';");
        let customer = browser.wait_for(
            "the screen pop shows the customer",
            "return document.getElementById('pop-customer').innerText;",
        );
        assert!(
            customer
                .as_str()
                .is_some_and(|t| t.contains("Erika Mustermann") && t.contains("major")),
            "{customer}"
        );
        let caller_shown = browser.eval(
            "return document.getElementById('pop-caller').innerText;",
            json!([]),
        );
        assert_eq!(caller_shown, "+4930123456");
        let offer_shot = browser.save_screenshot("agent-offer");

        browser.click("#btn-accept");
        browser.wait_for("connected", "return window.desk.phase === 'connected';");
        // Audio both ways: the browser's microphone reaches SIPp, whose echo comes back.
        let stats = browser.run(STATS, json!([25]));
        assert!(stats["received"].as_u64().is_some_and(|n| n >= 25), "{stats}");
        assert!(stats["sent"].as_u64().is_some_and(|n| n >= 25), "{stats}");
        let call_shot = browser.save_screenshot("agent-on-call");

        // A reload mid-call: the call stays up and the page brings the softphone back to it.
        browser.eval("location.reload(); return true;", json!([]));
        browser.wait_for(
            "the reloaded page is back on the call",
            "return window.desk && window.desk.phase === 'connected' && window.desk.media === 'browser';",
        );
        let stats = browser.run(STATS, json!([25]));
        assert!(
            stats["received"].as_u64().is_some_and(|n| n >= 25),
            "audio again after the reload: {stats}"
        );

        // Notes typed during the call go with it into its wrap-up form.
        browser.type_into("#call-notes", "Sold the family plan");
        browser.click("#btn-hangup");
        browser.wait_for(
            "wrap-up",
            "return window.desk.phase === null && window.desk.wrapups.length === 1;",
        );
        browser.eval(
            "const f = document.querySelector('#wrapup-list form'); f.querySelector('.wu-disposition').value = 'sale'; return true;",
            json!([]),
        );
        browser.click("#wrapup-list form .wu-save");
        browser.wait_for(
            "the call is released",
            "return window.desk.wrapups.length === 0 && window.desk.state === 'available';",
        );

        let run = caller.join().expect("caller");
        run.assert_succeeded(1, &platform);
        eprintln!("screenshots: {} {}", offer_shot.display(), call_shot.display());
    });

    // The wallboard after the call: the supervisor sees the queue's figures and the agent.
    log_in(&browser, &platform, "super", "supervisor", "/wallboard");
    browser.wait_for(
        "the wallboard shows the answered call",
        // The queue's tile: its eighth figure is the day's answered calls.
        "const f = document.querySelector('#queues .qtile[data-queue=\"sales\"] .figs'); return f !== null && f.children[7].querySelector('b').innerText === '1';",
    );
    browser.wait_for(
        "the agent card",
        "return document.querySelector('[data-agent=\"1001\"]') !== null;",
    );
    let board = browser.save_screenshot("wallboard");
    eprintln!("screenshot: {}", board.display());

    // The CRM holds the disposition and notes the browser saved.
    let deadline = Instant::now() + Duration::from_secs(15);
    let i = loop {
        let found = platform.ended_interactions(1).into_iter().next();
        if let Some(i) = found.filter(|i| i.row.disposition.is_some()) {
            break i;
        }
        assert!(
            Instant::now() < deadline,
            "no disposition stored\n{}",
            platform.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(i.row.disposition.as_deref(), Some("sale"));
    assert_eq!(i.row.notes.as_deref(), Some("Sold the family plan"));
    assert_eq!(i.row.agent_id.as_deref(), Some("1001"));
    assert_eq!(i.row.customer_id.as_deref(), Some("cust-erika"));
    assert_eq!(i.row.ended_by.as_deref(), Some("agent"));
    // The recording's agent channel (right) carries the browser's audio.
    let path = i.row.recording_path.clone().unwrap_or_default();
    let wav =
        std::fs::read(platform.dir.path().join(&path)).unwrap_or_else(|e| panic!("recording {path}: {e}"));
    let samples: Vec<i16> = wav[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let right_peak = samples
        .iter()
        .skip(1)
        .step_by(2)
        .map(|s| s.unsigned_abs())
        .max()
        .unwrap_or(0);
    assert!(
        right_peak > 1000,
        "the agent channel is silent (peak {right_peak})"
    );
}
