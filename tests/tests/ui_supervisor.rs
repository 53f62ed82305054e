//! What a supervisor does in a real browser (headless Chromium), on SQLite and on PostgreSQL: real
//! calls through SIPp fill the day (two answered by the agent's SIP phone, one of them rated in the
//! post-call survey, one abandoned while the supervisor had made the agent not ready from the
//! wallboard), then every figure of the wallboard and of each report page is checked non-zero, the
//! reports agree with `callcenter report` and with the live wallboard for the same period, the
//! search finds the calls and plays a recording by HTTP range (the playback is audited), a customer
//! is created (a bad number refused with a clear error) and a duplicate merged into it, and the
//! supervisor switches to Chinese, which is kept on the user. Screenshots at 1920×1080 and 1366×768
//! are saved as test artifacts.

use serde_json::{Value, json};
use system_tests::browser::Browser;
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
offer_timeout_secs = 10
wrap_up_secs = 1

[[acd.agents]]
id = "1001"
queues = [{ queue = "sales", rank = 1 }]

[[route]]
number = "800"
ivr = "main"

[[route]]
number = "801"
queue = "sales"

[[desk.user]]
id = "1001"
name = "Li Lei"
role = "agent"
password = "agent1001"

[[desk.user]]
id = "super"
name = "Sam Supervisor"
role = "supervisor"
password = "supervisor"

[desk.wallboard.thresholds]
service_level_min = 0.8
oldest_wait_max_secs = 30
abandon_rate_max = 0.05
"#;

enum Db {
    Sqlite,
    Postgres { url: String, schema: String },
}

/// Sizes the window so the page itself (the viewport a screenshot shows) is `width`×`height`.
fn size(browser: &Browser, width: u32, height: u32) {
    let set = |w: i64, h: i64| {
        browser
            .command("window/rect", &json!({ "width": w, "height": h }))
            .unwrap_or_else(|e| panic!("window size: {e}"));
    };
    let (w, h) = (i64::from(width), i64::from(height));
    set(w, h);
    let inner = browser.eval("return [window.innerWidth, window.innerHeight];", json!([]));
    let (iw, ih) = (inner[0].as_i64().unwrap_or(w), inner[1].as_i64().unwrap_or(h));
    if (iw, ih) != (w, h) {
        set(2 * w - iw, 2 * h - ih);
    }
}

/// Selects agent 1001's tile and clicks an action (in the page, so a redraw between finding and
/// clicking cannot miss).
fn act(browser: &Browser, action: &str) {
    browser.eval(
        "const t = document.querySelector('.atile[data-agent=\"1001\"]'); if (!t.classList.contains('selected')) t.click();",
        json!([]),
    );
    browser.wait_for(
        &format!("the {action} button is offered"),
        &format!("const b = document.querySelector('#actions button[data-act=\"{action}\"]'); if (b) b.click(); return !!b;"),
    );
}

fn log_in(browser: &Browser, platform: &Platform) {
    browser.open(&format!("http://{}/", platform.http));
    browser.type_into("#user", "super");
    browser.type_into("#password", "supervisor");
    browser.click("#login-button");
    browser.wait_for(
        "the supervisor lands on the wallboard",
        "return location.pathname === '/wallboard' && document.readyState === 'complete';",
    );
}

/// Opens a report page and returns what it fetched (`{period, report}`).
fn report(browser: &Browser, platform: &Platform, kind: &str, interval: u32) -> Value {
    browser.open(&format!(
        "http://{}/reports?kind={kind}&interval={interval}",
        platform.http
    ));
    browser.wait_for(
        &format!("the {kind} report is drawn"),
        "return window.reports && window.reports.last && document.querySelectorAll('#report tbody tr').length > 0;",
    );
    browser.eval("return window.reports.last;", json!([]))
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing or empty in {v}"))
}

fn sums(rows: &Value, keys: &[&str]) -> Vec<f64> {
    let rows = rows.as_array().expect("rows");
    keys.iter()
        .map(|k| rows.iter().map(|r| r[k].as_f64().unwrap_or(0.0)).sum())
        .collect()
}

fn run(db: Db, tag: &str) {
    require_command("sipp");
    require_command("chromium");
    require_command("chromedriver");
    let flows = test_flows();
    let env = match &db {
        Db::Sqlite => Vec::new(),
        Db::Postgres { url, schema } => {
            let sep = if url.contains('?') { '&' } else { '?' };
            vec![(
                "CALLCENTER_CRM__DATABASE_URL".to_string(),
                format!("{url}{sep}options=-c%20search_path%3D{schema}"),
            )]
        }
    };
    let rt = runtime();
    if let Db::Postgres { url, schema } = &db {
        rt.block_on(async {
            let store = crm_store::CrmStore::connect_in_schema(url, schema)
                .await
                .expect("postgres schema");
            store.close().await;
        });
    }
    // The agent's SIP phone answers each call and hangs up a moment later.
    let agent_phone = SippServer::start("uas_bye.xml", 2);
    let platform = Platform::start_with_env(CONFIG, flows.path(), &env);
    register_agent_phone(&platform, "1001", "agent1001", agent_phone.port);

    let browser = Browser::start();
    size(&browser, 1920, 1080);
    log_in(&browser, &platform);
    browser.wait_for(
        "the agent's tile shows their name",
        "const t = document.querySelector('.atile[data-agent=\"1001\"]'); return t && t.textContent.includes('Li Lei') && t.dataset.state === 'available';",
    );

    // Two answered calls: one through the IVR with the survey after the agent hangs up, one straight
    // to the queue (it waits while the agent wraps the first up).
    let survey = uac(&platform, "uac_survey.xml", "800", 1, &[]);
    survey.assert_succeeded(1, &platform);
    let second = uac(&platform, "uac_wait_bye.xml", "801", 1, &[]);
    second.assert_succeeded(1, &platform);
    assert_eq!(
        agent_phone.wait(),
        Some(0),
        "the agent's phone answered both calls"
    );

    // The supervisor makes the agent not ready from the wallboard; the next caller abandons.
    browser.wait_for(
        "the agent is back from wrap-up",
        "const a = window.wallboard.agents.find((a) => a.agent === '1001'); return a && a.state === 'available';",
    );
    act(&browser, "not_ready");
    browser.wait_for(
        "the agent is not ready",
        "const a = window.wallboard.agents.find((a) => a.agent === '1001'); return a && a.state === 'not_ready' && a.reason === 'supervisor';",
    );
    let abandoned = uac(&platform, "uac", "801", 1, &["-d", "1500"]);
    assert_eq!(
        (abandoned.successful, abandoned.failed),
        (1, 0),
        "{}",
        abandoned.output
    );
    act(&browser, "ready");
    browser.wait_for(
        "the agent is ready again",
        "const a = window.wallboard.agents.find((a) => a.agent === '1001'); return a && a.state === 'available';",
    );

    // The wallboard: the day's figures from the CRM beside the live ones, the abandon rate over its
    // threshold flags the queue and raises an alert, the charts have points.
    let tile = browser.wait_for(
        "the queue tile shows the day's three calls and its alert",
        "const d = window.wallboard.today; const q = d && d.queues.find((q) => q.queue === 'sales'); \
         const t = document.querySelector('.qtile[data-queue=\"sales\"]'); \
         return q && q.offered === 3 && t && t.classList.contains('alert') && window.wallboard.alerts.length > 0 ? {q, alerts: window.wallboard.alerts} : null;",
    );
    let q = &tile["q"];
    assert_eq!((num(q, "answered"), num(q, "abandoned")), (2.0, 1.0), "{q}");
    assert!(
        num(q, "service_level") > 0.0 && num(q, "asa_ms") > 0.0 && num(q, "aht_ms") > 0.0,
        "{q}"
    );
    assert!((num(q, "abandon_rate") - 1.0 / 3.0).abs() < 1e-9, "{q}");
    let alerts = tile["alerts"].to_string();
    assert!(alerts.contains("sales: abandon rate"), "{alerts}");
    let chart_points = browser.eval(
        "return document.querySelectorAll('#chart-volume canvas, #chart-service canvas, #chart-states canvas').length;",
        json!([]),
    );
    assert_eq!(chart_points, json!(3), "three charts drawn");
    let states = browser.eval("return window.wallboard.today.states;", json!([]));
    let [on_call, not_ready] = [sums(&states, &["on_call"])[0], sums(&states, &["not_ready"])[0]];
    assert!(on_call > 0.0 && not_ready > 0.0, "agents by state: {states}");
    browser.save_screenshot(&format!("ui_supervisor-{tag}-wallboard-en-1920x1080"));

    // The live wallboard's counters and the report of the same period agree.
    let token = platform.login("super", "supervisor");
    let (status, stats) = platform.http_get_as("/api/v1/stats", &token);
    assert_eq!(status, 200, "{stats}");
    let stats: Value = serde_json::from_str(&stats).expect("stats");
    let live = stats["queues"]
        .as_array()
        .and_then(|qs| qs.iter().find(|q| q["queue"] == "sales"))
        .expect("sales")["counters"]
        .clone();
    assert_eq!(
        (
            num(&live, "queued"),
            num(&live, "answered"),
            num(&live, "abandoned")
        ),
        (num(q, "offered"), num(q, "answered"), num(q, "abandoned")),
        "live {live} vs day {q}"
    );

    // Report pages: every figure non-zero.
    let interval = report(&browser, &platform, "interval", 15);
    let rows = &interval["report"]["rows"];
    assert_eq!(
        sums(rows, &["offered", "answered", "abandoned"]),
        vec![3.0, 2.0, 1.0],
        "{rows}"
    );
    for row in rows
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["answered"].as_u64() > Some(0))
    {
        for key in [
            "service_level",
            "asa_ms",
            "aht_ms",
            "max_wait_ms",
            "answered_within_threshold",
        ] {
            assert!(num(row, key) > 0.0, "{key} in {row}");
        }
    }
    assert!(
        rows.as_array()
            .expect("rows")
            .iter()
            .any(|r| num(r, "abandon_rate") > 0.0)
    );
    browser.save_screenshot(&format!("ui_supervisor-{tag}-reports-interval-en-1920x1080"));
    // `callcenter report` prints the same figures for the same calls.
    let cli = std::process::Command::new(callcenter_bin())
        .args([
            "report",
            "interval",
            "--interval",
            "15",
            "--hours",
            "2",
            "--config",
        ])
        .arg(platform.dir.path().join("callcenter.toml"))
        .current_dir(platform.dir.path())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("callcenter report");
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    let cli: Value = serde_json::from_slice(&cli.stdout).expect("report JSON");
    let keys = [
        "offered",
        "answered",
        "abandoned",
        "answered_within_threshold",
        "max_wait_ms",
    ];
    assert_eq!(
        sums(&cli["rows"], &keys),
        sums(rows, &keys),
        "CLI {cli} vs page {rows}"
    );

    let queues = report(&browser, &platform, "queues", 60);
    let sales = &queues["report"]["rows"][0];
    for key in [
        "offered",
        "answered",
        "abandoned",
        "abandon_rate",
        "service_level",
        "asa_ms",
        "aht_ms",
        "max_wait_ms",
    ] {
        assert!(num(sales, key) > 0.0, "{key} in {sales}");
    }

    let agents = report(&browser, &platform, "agents", 60);
    let a = agents["report"]["rows"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["agent"] == "1001"))
        .cloned()
        .expect("agent 1001");
    for key in [
        "handled",
        "talk_ms",
        "aht_ms",
        "login_ms",
        "available_ms",
        "not_ready_ms",
        "reserved_ms",
        "on_call_ms",
        "wrap_up_ms",
        "occupancy",
        "adherence_ready",
    ] {
        assert!(num(&a, key) > 0.0, "{key} in {a}");
    }
    assert_eq!(num(&a, "handled"), 2.0, "{a}");
    assert!(a["not_ready_by_reason"]["supervisor"].as_i64() > Some(0), "{a}");
    browser.save_screenshot(&format!("ui_supervisor-{tag}-reports-agents-en-1920x1080"));

    let surveys = report(&browser, &platform, "surveys", 60);
    let all = &surveys["report"]["rows"][0];
    assert_eq!(
        (num(all, "responses"), num(all, "average"), num(all, "score_5")),
        (1.0, 5.0, 1.0),
        "{all}"
    );
    // A CSV of the same report.
    let csv = browser.run(
        "const done = arguments[arguments.length - 1]; fetch(document.getElementById('csv').href).then((r) => r.text()).then((t) => done(t));",
        json!([]),
    );
    assert!(
        csv.as_str()
            .unwrap_or_default()
            .starts_with("group,responses,average"),
        "{csv}"
    );

    // Search: the three calls, one with a recording played by range.
    browser.open(&format!("http://{}/search?queue=sales", platform.http));
    let found = browser.wait_for(
        "three interactions found",
        "return window.search && window.search.found.length === 3 ? window.search.found : null;",
    );
    let recorded = found
        .as_array()
        .and_then(|f| f.iter().find(|i| i["has_recording"] == true))
        .cloned()
        .expect("a recorded call");
    let id = recorded["id"].as_str().expect("id").to_string();
    browser.click(&format!("#results tr[data-id=\"{id}\"]"));
    browser.wait_for(
        "the timeline and the player are shown",
        "return document.querySelectorAll('#timeline li').length > 3 && !document.getElementById('player').hidden && document.getElementById('player').src;",
    );
    let head = browser.run(
        "const done = arguments[arguments.length - 1]; fetch(document.getElementById('player').src, { headers: { Range: 'bytes=0-43' } })\
         .then(async (r) => { const b = new Uint8Array(await r.arrayBuffer()); done({ status: r.status, len: b.length, riff: String.fromCharCode(...b.slice(0, 4)), range: r.headers.get('content-range') }); });",
        json!([]),
    );
    assert_eq!(
        (head["status"].clone(), head["len"].clone(), head["riff"].clone()),
        (json!(206), json!(44), json!("RIFF")),
        "{head}"
    );
    browser.save_screenshot(&format!("ui_supervisor-{tag}-search-en-1920x1080"));

    // Customers: a bad number is refused with the server's code, then the record is saved; a
    // duplicate is merged into it.
    browser.open(&format!("http://{}/customers", platform.http));
    browser.wait_for(
        "the customer page is ready",
        "return window.customersPage && document.getElementById('c-manager').options.length > 1;",
    );
    browser.click("#new");
    browser.type_into("#c-name", "王芳");
    browser.type_into("#c-phones", "12");
    browser.click("#save");
    browser.wait_for(
        "the bad number is refused",
        "return document.getElementById('form-error').textContent.includes('phone number is not valid');",
    );
    browser.eval("document.getElementById('c-phones').value = '+8613800138000'; document.getElementById('c-tier').value = 'key'; document.getElementById('c-manager').value = '1001';", json!([]));
    browser.click("#save");
    let kept = browser.wait_for("the customer is saved", "return window.customersPage.editing;");
    let (status, body) = platform.http_post(
        "/api/v1/admin/customers",
        &json!({"id": "dup-1", "name": "Wang Fang", "phones": ["+8613900139000"], "tier": "normal"})
            .to_string(),
        Some(&token),
    );
    assert_eq!(status, 201, "{body}");
    browser.type_into("#duplicate", "dup-1");
    browser.click("#merge-button");
    browser.wait_for(
        "the duplicate is merged",
        "return document.getElementById('form-error').textContent.includes('dup-1') && window.customersPage.list.length === 1;",
    );
    let kept = kept.as_str().expect("customer id").to_string();
    browser.save_screenshot(&format!("ui_supervisor-{tag}-customers-en-1920x1080"));

    // The audit log holds the playback, the customer changes and the merge.
    let audit = rt.block_on(async {
        let store = match &db {
            Db::Sqlite => {
                crm_store::CrmStore::connect(&format!("sqlite:{}/cc.db", platform.dir.path().display()))
                    .await
                    .expect("crm")
            }
            Db::Postgres { url, schema } => crm_store::CrmStore::connect_in_schema(url, schema)
                .await
                .expect("crm"),
        };
        let log = store.audit_log(domain::Timestamp::ZERO).await.expect("audit");
        let card = store
            .find_customer_by_phone("+8613900139000")
            .await
            .expect("lookup");
        store.close().await;
        (log, card)
    });
    let (log, card) = audit;
    assert!(
        log.iter()
            .any(|e| e.action == "recording.play" && e.entity_id == id && e.actor == "super"),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|e| e.action == "customer.merge" && e.entity_id == kept),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|e| e.action == "agent.force_state" && e.detail.contains("not_ready")),
        "{log:?}"
    );
    assert_eq!(
        card.map(|c| c.customer.id.to_string()),
        Some(kept.clone()),
        "the duplicate's number finds the kept record"
    );

    // Chinese: chosen in the bar, kept on the user, used by every page.
    browser.eval(
        "const s = document.getElementById('lang'); s.value = 'zh-CN'; s.dispatchEvent(new Event('change'));",
        json!([]),
    );
    browser.wait_for(
        "the page is in Chinese",
        "return document.documentElement.lang === 'zh-CN' && document.title === '客户管理';",
    );
    let (status, lang) = platform.http_get_as("/api/v1/me/language", &token);
    assert_eq!((status, lang.contains("zh-CN")), (200, true), "{lang}");
    size(&browser, 1366, 768);
    browser.save_screenshot(&format!("ui_supervisor-{tag}-customers-zh-1366x768"));
    browser.open(&format!("http://{}/wallboard", platform.http));
    browser.wait_for(
        "the wallboard is in Chinese with its figures",
        "return document.documentElement.lang === 'zh-CN' && document.querySelector('.atile[data-agent=\"1001\"]') && window.wallboard.today && document.getElementById('alerts').textContent.includes('放弃率');",
    );
    browser.save_screenshot(&format!("ui_supervisor-{tag}-wallboard-zh-1366x768"));
    size(&browser, 1920, 1080);
    browser.save_screenshot(&format!("ui_supervisor-{tag}-wallboard-zh-1920x1080"));
    size(&browser, 1366, 768);
    let agents_zh = report(&browser, &platform, "agents", 60);
    assert_eq!(
        agents_zh["report"]["rows"][0]["handled"], a["handled"],
        "the same figures in Chinese"
    );
    let heading = browser.eval(
        "return document.querySelector('#report thead').textContent;",
        json!([]),
    );
    assert!(
        heading.as_str().unwrap_or_default().contains("占用率"),
        "{heading}"
    );
    browser.save_screenshot(&format!("ui_supervisor-{tag}-reports-agents-zh-1366x768"));
    browser.open(&format!("http://{}/search?queue=sales", platform.http));
    browser.wait_for("search in Chinese", "return window.search && window.search.found.length === 3 && document.getElementById('count').textContent.includes('共');");
    browser.click(&format!("#results tr[data-id=\"{id}\"]"));
    browser.wait_for(
        "the timeline in Chinese",
        "return document.getElementById('timeline').textContent.includes('接通');",
    );
    browser.save_screenshot(&format!("ui_supervisor-{tag}-search-zh-1366x768"));
}

#[test]
fn a_supervisor_reads_reports_searches_and_admins_customers_in_two_languages_on_sqlite() {
    run(Db::Sqlite, "sqlite");
}

#[test]
fn a_supervisor_reads_reports_searches_and_admins_customers_in_two_languages_on_postgresql() {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        eprintln!("DATABASE_URL unset: the PostgreSQL run is SKIPPED");
        assert!(std::env::var("CI").is_err(), "CI must provide DATABASE_URL");
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    // Its own schema in the shared test database (left for inspection; the name is unique).
    let schema = format!("ui_supervisor_{}_{nanos}", std::process::id());
    run(Db::Postgres { url, schema }, "postgres");
}

/// The wall screen: fifty agents and the queue fit a 1920×1080 screen without scrolling.
#[test]
fn fifty_agents_fit_the_wallboard_on_a_1920x1080_screen() {
    require_command("chromium");
    require_command("chromedriver");
    let mut config = String::from(
        "[[acd.queues]]\nid = \"sales\"\n\n[[desk.user]]\nid = \"super\"\nname = \"Sam Supervisor\"\nrole = \"supervisor\"\npassword = \"supervisor\"\n",
    );
    for n in 0..50 {
        config.push_str(&format!(
            "\n[[acd.agents]]\nid = \"{}\"\nqueues = [{{ queue = \"sales\", rank = 1 }}]\n",
            2000 + n
        ));
    }
    let platform = Platform::start(&config);
    let browser = Browser::start();
    size(&browser, 1920, 1080);
    log_in(&browser, &platform);
    let fit = browser.wait_for(
        "fifty tiles drawn",
        "const t = [...document.querySelectorAll('.atile')]; if (t.length !== 50 || !window.wallboard.today) return null; \
         return { bottom: Math.max(...t.map((e) => e.getBoundingClientRect().bottom)), height: window.innerHeight, \
                  queue: document.querySelector('.qtile').getBoundingClientRect().bottom };",
    );
    // Saved first, so a failure leaves the picture of what did not fit.
    browser.save_screenshot("ui_supervisor-wallboard-50-agents-1920x1080");
    assert!(
        fit["bottom"].as_f64() <= fit["height"].as_f64(),
        "every agent tile is on the screen: {fit}"
    );
}

/// The wallboard's tile of agent 1001: its "cannot be reached" words, or null.
const UNREACHABLE_1001: &str = r#"
const el = document.querySelector('.atile[data-agent="1001"] .unreachable');
return el ? el.innerText : null;
"#;

/// An agent logged in (ready on start) whose only phone is a SIP phone that is not registered: the
/// wallboard says in words that calls cannot reach them, in English and in Chinese, and stops saying
/// so once the phone registers.
#[test]
fn the_wallboard_says_when_a_logged_in_agent_cannot_be_reached() {
    require_command("sipp");
    require_command("chromium");
    require_command("chromedriver");
    let platform = Platform::start(CONFIG);
    let browser = Browser::start();
    size(&browser, 1366, 768);
    log_in(&browser, &platform);
    let words = browser.wait_for("the unreachable agent is flagged", UNREACHABLE_1001);
    assert_eq!(words, "Unreachable: no phone");
    let tile = browser.eval(
        "const t = document.querySelector('.atile[data-agent=\"1001\"]'); return [t.dataset.state, t.classList.contains('unreachable'), t.querySelector('.unreachable').title];",
        json!([]),
    );
    assert_eq!(tile[0], "available", "{tile}");
    assert_eq!(tile[1], true, "{tile}");
    assert!(
        tile[2]
            .as_str()
            .unwrap_or_default()
            .contains("no SIP phone is registered"),
        "{tile}"
    );
    let shot = browser.save_screenshot("ui_supervisor-wallboard-unreachable-en-1366x768");

    browser.open(&format!("http://{}/wallboard?lang=zh-CN", platform.http));
    let words = browser.wait_for("the Chinese wallboard flags the agent", UNREACHABLE_1001);
    assert_eq!(words, "无法接通：无话机");
    let shot_zh = browser.save_screenshot("ui_supervisor-wallboard-unreachable-zh-1366x768");

    // The phone registers: the words go.
    register_agent_phone(&platform, "1001", "agent1001", free_port());
    browser.wait_for(
        "the registration is seen",
        &format!(
            "return document.querySelector('.atile[data-agent=\"1001\"]') !== null && (function () {{ {UNREACHABLE_1001} }})() === null;"
        ),
    );
    eprintln!("screenshots: {} {}", shot.display(), shot_zh.display());
}
