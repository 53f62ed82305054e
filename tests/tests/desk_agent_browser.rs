//! The agent desktop as an agent lives with it, in headless Chromium at 1366×768 (screenshots are
//! test artifacts): a phone agent without a registered phone cannot go ready and is told why; an
//! offer rings and raises a notification; a missed offer says why the agent is now not ready; the
//! call and hold times tick; notes typed on call A stay on A although call B is offered and taken
//! while A's wrap-up form is still open; an agent asks for more wrap-up time until the queue's
//! longest and is told when no more can be added; after a rejected offer the desktop counts down the
//! time the router holds that caller back from the agent, and the wallboard shows it on the agent's
//! tile. axe-core finds no serious accessibility violation on any of these views, in English and in
//! Chinese.

use serde_json::{Value, json};
use system_tests::browser::Browser;
use system_tests::*;

const CONFIG: &str = r#"
[sip.limits]
max_calls_per_second = 0
per_source_requests_per_second = 0

[agents]
ready_on_start = false

[[sip.user]]
name = "1001"
password = "agent1001"

[[acd.queues]]
id = "sales"
offer_timeout_secs = 4
wrap_up_secs = 3
decline_pause_secs = 1

[[acd.agents]]
id = "1001"
queues = [{ queue = "sales", rank = 1 }]

[[route]]
number = "801"
queue = "sales"

[desk]
dispositions = ["resolved", "sale", "complaint"]
not_ready_reasons = ["break", "lunch", "coaching"]

[[desk.user]]
id = "1001"
name = "Alice Agent"
role = "agent"
password = "agent1001"
"#;

fn log_in(browser: &Browser, platform: &Platform) {
    browser.resize(1366, 768);
    browser.open(&format!("http://{}/", platform.http));
    browser.type_into("#user", "1001");
    browser.type_into("#password", "agent1001");
    browser.click("#login-button");
    browser.wait_for(
        "the agent lands on the desktop",
        "return location.pathname === '/agent' && window.desk && window.desk.connected;",
    );
}

fn no_serious_violations(browser: &Browser, view: &str) {
    let violations = browser.serious_accessibility_violations();
    assert!(
        violations.is_empty(),
        "{view}: axe-core found serious violations:\n{}",
        violations.join("\n")
    );
}

fn page_text(browser: &Browser, id: &str) -> String {
    browser
        .eval(
            "const el = document.getElementById(arguments[0]); return el ? el.innerText : '';",
            json!([id]),
        )
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_phone_agent_without_a_registered_phone_cannot_go_ready_and_the_desktop_says_why() {
    require_command("sipp");
    require_command("chromium");
    require_command("chromedriver");
    let platform = Platform::start(CONFIG);
    let browser = Browser::start();
    log_in(&browser, &platform);
    browser.wait_for(
        "the desktop knows the phone is not registered",
        "return window.desk.media === 'phone' && window.desk.reachable === false;",
    );
    let why = page_text(&browser, "reach");
    assert!(why.contains("no SIP phone is registered"), "{why}");
    // The not-ready reasons are the configured ones.
    let reasons = browser.eval(
        "return [...document.querySelectorAll('#reason option')].map((o) => o.value);",
        json!([]),
    );
    assert_eq!(reasons, json!(["break", "lunch", "coaching"]));

    browser.click("#btn-login");
    browser.wait_for(
        "the refusal in plain words",
        "return document.getElementById('error').innerText.includes('cannot go ready');",
    );
    assert_eq!(browser.eval("return window.desk.state;", json!([])), "logged_out");
    let shot = browser.save_screenshot("agent-not-reachable");
    no_serious_violations(&browser, "not reachable (en)");

    // The same page in Chinese.
    browser.open(&format!("http://{}/agent?lang=zh-CN", platform.http));
    browser.wait_for(
        "the Chinese desktop",
        "return window.desk && window.desk.reachable === false && document.documentElement.lang === 'zh-CN';",
    );
    assert_eq!(page_text(&browser, "btn-ready"), "就绪");
    assert!(page_text(&browser, "reach").contains("SIP 话机未注册"));
    let shot_zh = browser.save_screenshot("agent-not-reachable-zh");
    no_serious_violations(&browser, "not reachable (zh-CN)");

    // Once the phone registers the desktop sees it, and the agent can log in.
    register_agent_phone(&platform, "1001", "agent1001", free_port());
    browser.wait_for(
        "the registration is seen",
        "return window.desk.reachable === true && document.getElementById('reach').classList.contains('hidden');",
    );
    browser.click("#btn-login");
    browser.wait_for("available", "return window.desk.state === 'available';");
    browser.wait_for(
        "the state timer ticks",
        "return /^\\d+:\\d\\d$/.test(document.getElementById('state-timer').innerText);",
    );
    let shot_ready = browser.save_screenshot("agent-available-zh");
    eprintln!(
        "screenshots: {} {} {}",
        shot.display(),
        shot_zh.display(),
        shot_ready.display()
    );
}

/// The wrap-up form of `call` on the page: its notes and disposition, or null.
const WRAP_UP_FORM: &str = r#"
const form = [...document.querySelectorAll('#wrapup-list form')].find((f) => f.dataset.call === arguments[0]);
return form ? { notes: form.querySelector('.wu-notes').value, disposition: form.querySelector('.wu-disposition').value } : null;
"#;

fn save_wrap_up(browser: &Browser, call: &str, disposition: &str) {
    browser.eval(
        r#"const form = [...document.querySelectorAll('#wrapup-list form')].find((f) => f.dataset.call === arguments[0]);
form.querySelector('.wu-disposition').value = arguments[1];
form.querySelector('.wu-save').click();
return true;"#,
        json!([call, disposition]),
    );
    browser.wait_for(
        "the wrap-up is saved",
        &format!("return !window.desk.wrapups.includes({});", json!(call)),
    );
}

#[test]
fn notes_typed_on_call_a_stay_on_a_when_call_b_is_offered_during_wrap_up() {
    require_command("sipp");
    require_command("chromium");
    require_command("chromedriver");
    let platform = Platform::start(CONFIG);
    let browser = Browser::start();
    browser.allow_notifications(&format!("http://{}", platform.http));
    log_in(&browser, &platform);
    browser.click("#softphone");
    browser.wait_for(
        "the softphone is on",
        "return window.desk.media === 'browser' && window.desk.reachable === true;",
    );
    browser.click("#btn-login");
    browser.wait_for("ready for calls", "return window.desk.state === 'available';");
    browser.wait_for(
        "the queue strip lists the agent's queue",
        "return document.querySelector('#queues tr[data-queue=\"sales\"]') !== null;",
    );

    std::thread::scope(|scope| {
        let caller_a = scope.spawn(|| uac(&platform, "uac_customer_wait_bye.xml", "801", 1, &["-rtp_echo"]));

        // The offer rings and raises a notification; the agent lets it ring out.
        browser.wait_for(
            "the offer rings",
            "return window.desk.phase === 'offered' && window.desk.ringing === true;",
        );
        browser.wait_for("a notification", "return window.desk.notified >= 1;");
        browser.wait_for(
            "the offer is announced to screen readers",
            "return window.desk.said.some((s) => s.startsWith('Incoming call from +4930123456'));",
        );
        let ringing = browser.save_screenshot("agent-offer-ringing");
        browser.wait_for(
            "the missed offer is explained",
            "return window.desk.state === 'not_ready' && window.desk.ringing === false && (window.desk.notice || '').includes('you are now not ready');",
        );
        let missed = browser.save_screenshot("agent-missed-offer");
        no_serious_violations(&browser, "missed offer");

        // Ready again: the same caller is offered again and answered in the browser.
        browser.click("#btn-ready");
        browser.wait_for("offered again", "return window.desk.phase === 'offered';");
        let call_a = browser
            .eval("return window.desk.call;", json!([]))
            .as_str()
            .expect("call id")
            .to_string();
        browser.click("#btn-accept");
        browser.wait_for("connected", "return window.desk.phase === 'connected';");
        browser.type_into("#call-notes", "Promised a refund to A");
        browser.wait_for(
            "the call timer ticks",
            "return /^\\d+:\\d\\d$/.test(document.getElementById('call-timer').innerText);",
        );
        browser.click("#btn-hold");
        browser.wait_for(
            "the hold timer shows",
            "return window.desk.phase === 'held' && !document.getElementById('hold-timer').classList.contains('hidden');",
        );
        let held = browser.save_screenshot("agent-on-hold");
        no_serious_violations(&browser, "on hold");
        browser.click("#btn-unhold");
        browser.wait_for("resumed", "return window.desk.phase === 'connected';");
        browser.click("#btn-hangup");
        browser.wait_for(
            "A's wrap-up form",
            &format!(
                "return window.desk.phase === null && window.desk.wrapups.includes({});",
                json!(call_a)
            ),
        );
        let form_a = browser.eval(WRAP_UP_FORM, json!([call_a]));
        assert_eq!(form_a["notes"], "Promised a refund to A", "{form_a}");

        // The wrap-up time runs out (the form stays) and B is offered while A's form is open.
        let caller_b = scope.spawn(|| uac(&platform, "uac_customer_wait_bye.xml", "801", 1, &["-rtp_echo"]));
        browser.wait_for(
            "B is offered during A's wrap-up",
            &format!(
                "return window.desk.phase === 'offered' && window.desk.call !== {};",
                json!(call_a)
            ),
        );
        let call_b = browser
            .eval("return window.desk.call;", json!([]))
            .as_str()
            .expect("call id")
            .to_string();
        let form_a = browser.eval(WRAP_UP_FORM, json!([call_a]));
        assert_eq!(
            form_a["notes"], "Promised a refund to A",
            "A's form survives B's offer: {form_a}"
        );
        assert_eq!(
            browser.eval("return document.getElementById('call-notes').value;", json!([])),
            "",
            "B starts with empty notes"
        );
        let offer_b = browser.save_screenshot("agent-offer-during-wrap-up");
        no_serious_violations(&browser, "offer during wrap-up");

        browser.click("#btn-accept");
        browser.wait_for("B connected", "return window.desk.phase === 'connected';");
        browser.type_into("#call-notes", "B asked about roaming");
        browser.click("#btn-hangup");
        browser.wait_for(
            "two wrap-up forms",
            "return window.desk.phase === null && window.desk.wrapups.length === 2;",
        );
        let both = browser.save_screenshot("agent-two-wrap-ups");
        no_serious_violations(&browser, "two wrap-ups");
        let form_b: Value = browser.eval(WRAP_UP_FORM, json!([call_b]));
        assert_eq!(form_b["notes"], "B asked about roaming", "{form_b}");

        save_wrap_up(&browser, &call_a, "sale");
        save_wrap_up(&browser, &call_b, "resolved");

        for (name, caller) in [("A", caller_a), ("B", caller_b)] {
            let run = caller.join().expect("caller");
            assert_eq!(
                (run.successful, run.failed),
                (1, 0),
                "caller {name}: {}\n{}",
                run.output,
                platform.log()
            );
        }
        eprintln!(
            "screenshots: {}",
            [ringing, missed, held, offer_b, both]
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        );

        // Each call's notes and disposition are on that call only.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let rows = loop {
            let rows = platform.ended_interactions(2);
            if rows.iter().filter(|i| i.row.disposition.is_some()).count() == 2 {
                break rows;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "dispositions not stored\n{}",
                platform.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let row = |call: &str| {
            rows.iter()
                .find(|i| i.row.id == call)
                .unwrap_or_else(|| panic!("no interaction {call}"))
        };
        assert_eq!(row(&call_a).row.disposition.as_deref(), Some("sale"));
        assert_eq!(row(&call_a).row.notes.as_deref(), Some("Promised a refund to A"));
        assert_eq!(row(&call_b).row.disposition.as_deref(), Some("resolved"));
        assert_eq!(row(&call_b).row.notes.as_deref(), Some("B asked about roaming"));
    });
}

/// More wrap-up time: each press moves the end by 30 s, up to the queue's `wrap_up_max_secs` after
/// the call's end; then the desktop says no more can be added.
#[test]
fn an_agent_extends_wrap_up_until_the_queues_longest() {
    require_command("sipp");
    require_command("chromium");
    require_command("chromedriver");
    let config = CONFIG.replace("wrap_up_secs = 3\n", "wrap_up_secs = 20\nwrap_up_max_secs = 50\n");
    assert!(config.contains("wrap_up_max_secs = 50"));
    let platform = Platform::start(&config);
    let browser = Browser::start();
    log_in(&browser, &platform);
    browser.click("#softphone");
    browser.wait_for(
        "the softphone is on",
        "return window.desk.media === 'browser' && window.desk.reachable === true;",
    );
    browser.click("#btn-login");
    browser.wait_for("ready for calls", "return window.desk.state === 'available';");
    std::thread::scope(|scope| {
        let caller = scope.spawn(|| uac(&platform, "uac_customer_wait_bye.xml", "801", 1, &["-rtp_echo"]));
        browser.wait_for("offered", "return window.desk.phase === 'offered';");
        browser.click("#btn-accept");
        browser.wait_for("connected", "return window.desk.phase === 'connected';");
        browser.click("#btn-hangup");
        browser.wait_for(
            "in wrap-up with its end and the button",
            "return window.desk.state === 'wrap_up' && window.desk.until > 0 && \
             !document.querySelector('#wrapup-list .wu-extend').classList.contains('hidden');",
        );
        let first_end = browser
            .eval("return window.desk.until;", json!([]))
            .as_i64()
            .expect("until");
        browser.click("#wrapup-list .wu-extend");
        browser.wait_for(
            "the end moved by 30 s",
            &format!("return window.desk.until === {};", first_end + 30_000),
        );
        // 20 s + 30 s is the longest (50 s): a second press is refused and the desktop says so.
        browser.click("#wrapup-list .wu-extend");
        browser.wait_for(
            "no more time",
            "return document.getElementById('error').innerText.includes('No more time can be added');",
        );
        assert_eq!(
            browser.eval("return window.desk.until;", json!([])).as_i64(),
            Some(first_end + 30_000)
        );
        let shot = browser.save_screenshot("agent-wrap-up-extended");
        no_serious_violations(&browser, "wrap-up extended");

        // The same form in Chinese (a reload keeps the wrap-up): the button and the countdown are
        // translated and whole.
        browser.open(&format!("http://{}/agent?lang=zh-CN", platform.http));
        browser.wait_for(
            "the Chinese wrap-up form with its button",
            "return document.documentElement.lang === 'zh-CN' && window.desk.wrapups.length === 1 && \
             !document.querySelector('#wrapup-list .wu-extend').classList.contains('hidden');",
        );
        let extend = browser.eval(
            "const b = document.querySelector('#wrapup-list .wu-extend'); \
             return { text: b.innerText, fits: b.scrollWidth <= b.clientWidth && b.scrollHeight <= b.clientHeight, \
                      countdown: document.querySelector('#wrapup-list .wu-countdown').innerText };",
            json!([]),
        );
        assert_eq!(extend["text"], "延长 30 秒", "{extend}");
        assert_eq!(extend["fits"], true, "the button's words fit it: {extend}");
        assert!(
            extend["countdown"]
                .as_str()
                .unwrap_or_default()
                .contains("后恢复就绪"),
            "{extend}"
        );
        let shot_zh = browser.save_screenshot("agent-wrap-up-extended-zh");
        no_serious_violations(&browser, "wrap-up extended (zh-CN)");
        eprintln!("screenshots: {} {}", shot.display(), shot_zh.display());
        let call = browser.eval("return window.desk.wrapups[0];", json!([]));
        save_wrap_up(&browser, call.as_str().expect("call id"), "resolved");
        let run = caller.join().expect("caller");
        run.assert_succeeded(1, &platform);
    });
}

/// Polls `script` until it returns true, for up to `secs` (for waits longer than the browser
/// helper's own deadline, such as a 30 s hold-back running out).
fn wait_long(browser: &Browser, what: &str, script: &str, secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while browser.eval(script, json!([])) != json!(true) {
        assert!(
            std::time::Instant::now() < deadline,
            "the page never got there: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Seconds left on the desktop's hold-back countdown ("… again for 0:27."), or null.
const HELD_BACK_SECS: &str = r#"
const m = /(\d+):(\d\d)/.exec(document.getElementById('held-back').innerText);
return m ? Number(m[1]) * 60 + Number(m[2]) : null;
"#;

/// The wallboard's tile of agent 1001: its hold-back line, or null.
const WALLBOARD_HELD_BACK: &str = r#"
const el = document.querySelector('.atile[data-agent="1001"] .held-back');
return el ? el.innerText : null;
"#;

/// After the agent rejects an offer, the router keeps that caller from them for the queue's
/// `decline_pause_secs` (45 s here): the desktop says so with a live countdown, the wallboard shows it on
/// the agent's tile, and both clear when the caller is offered to the agent again.
#[test]
fn a_rejected_offer_is_held_back_with_a_countdown_on_the_desktop_and_the_wallboard() {
    require_command("sipp");
    require_command("chromium");
    require_command("chromedriver");
    let config = CONFIG.replace("decline_pause_secs = 1\n", "decline_pause_secs = 45\n")
        + r#"
[[desk.user]]
id = "super"
name = "Sam Supervisor"
role = "supervisor"
password = "supervisor"
"#;
    assert!(config.contains("decline_pause_secs = 45"));
    let platform = Platform::start(&config);
    let browser = Browser::start();
    log_in(&browser, &platform);
    browser.click("#softphone");
    browser.wait_for(
        "the softphone is on",
        "return window.desk.media === 'browser' && window.desk.reachable === true;",
    );
    browser.click("#btn-login");
    browser.wait_for("ready for calls", "return window.desk.state === 'available';");

    let board = Browser::start();
    board.resize(1366, 768);
    board.open(&format!("http://{}/", platform.http));
    board.type_into("#user", "super");
    board.type_into("#password", "supervisor");
    board.click("#login-button");
    board.wait_for(
        "the wallboard shows agent 1001",
        "return location.pathname === '/wallboard' && document.querySelector('.atile[data-agent=\"1001\"]') !== null;",
    );

    std::thread::scope(|scope| {
        let caller = scope.spawn(|| uac(&platform, "uac_customer_wait_bye.xml", "801", 1, &["-rtp_echo"]));
        browser.wait_for("offered", "return window.desk.phase === 'offered';");
        browser.click("#btn-reject");
        browser.wait_for(
            "the desktop counts down the hold-back",
            "const el = document.getElementById('held-back'); return window.desk.heldBack.length === 1 && \
             !el.classList.contains('hidden') && el.innerText.includes('+4930123456') && \
             el.innerText.includes('will not be offered to you again for 0:');",
        );
        assert_eq!(browser.eval("return window.desk.state;", json!([])), "available");
        let until = browser
            .eval("return window.desk.heldBack[0].until;", json!([]))
            .as_i64()
            .expect("until");
        let left = browser
            .eval(HELD_BACK_SECS, json!([]))
            .as_i64()
            .expect("seconds left");
        assert!((1..=45).contains(&left), "{left} s left");
        // The page counts down on its own.
        browser.wait_for(
            "the countdown moves",
            &format!("const s = (function () {{ {HELD_BACK_SECS} }})(); return s !== null && s < {left};"),
        );
        browser.wait_for(
            "the hold-back is announced",
            "return window.desk.said.some((s) => s.startsWith('The call from +4930123456 will not be offered'));",
        );
        let desk_shot = browser.save_screenshot("agent-held-back");
        no_serious_violations(&browser, "held back");

        let line = board.wait_for("the wallboard shows the hold-back", WALLBOARD_HELD_BACK);
        let line = line.as_str().unwrap_or_default().to_string();
        assert!(line.starts_with("1 call held back"), "{line}");
        assert!(line.contains("0:") || line.ends_with(" s"), "{line}");
        let rows = board.eval(
            "return window.wallboard.agents.find((a) => a.agent === '1001').held_back;",
            json!([]),
        );
        assert_eq!(rows[0]["until"].as_i64(), Some(until), "{rows}");
        let board_shot = board.save_screenshot("wallboard-held-back-1366x768");

        // Both pages in Chinese. After a reload the desktop no longer knows who the caller was and
        // says "a call you missed"; the countdown comes back from the router.
        browser.open(&format!("http://{}/agent?lang=zh-CN", platform.http));
        browser.wait_for(
            "the Chinese desktop counts down",
            "return document.documentElement.lang === 'zh-CN' && \
             document.getElementById('held-back').innerText.startsWith('您错过的来电在 0:');",
        );
        let desk_shot_zh = browser.save_screenshot("agent-held-back-zh");
        no_serious_violations(&browser, "held back (zh-CN)");
        board.open(&format!("http://{}/wallboard?lang=zh-CN", platform.http));
        let line = board.wait_for("the Chinese wallboard shows the hold-back", WALLBOARD_HELD_BACK);
        assert!(
            line.as_str().unwrap_or_default().starts_with("1 个来电暂不转接"),
            "{line}"
        );
        let board_shot_zh = board.save_screenshot("wallboard-held-back-zh-1366x768");

        // When the 45 s are over the caller is offered to the agent again and both views clear.
        wait_long(
            &browser,
            "offered again after the hold-back",
            "return window.desk.phase === 'offered' && document.getElementById('held-back').classList.contains('hidden');",
            90,
        );
        wait_long(
            &board,
            "the wallboard's hold-back line goes",
            &format!("return (function () {{ {WALLBOARD_HELD_BACK} }})() === null;"),
            30,
        );
        browser.click("#btn-accept");
        browser.wait_for("connected", "return window.desk.phase === 'connected';");
        browser.wait_for(
            "nothing held back any more",
            "return window.desk.heldBack.length === 0;",
        );
        browser.click("#btn-hangup");
        browser.wait_for("the wrap-up form", "return window.desk.wrapups.length === 1;");
        let call = browser.eval("return window.desk.wrapups[0];", json!([]));
        save_wrap_up(&browser, call.as_str().expect("call id"), "resolved");
        let run = caller.join().expect("caller");
        run.assert_succeeded(1, &platform);
        eprintln!(
            "screenshots: {} {} {} {}",
            desk_shot.display(),
            board_shot.display(),
            desk_shot_zh.display(),
            board_shot_zh.display()
        );
    });
}
