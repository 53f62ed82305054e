//! The login page in a real browser (headless Chromium): `?next=` sends the browser only to a path
//! of this site, whatever is put in it (script URLs, other hosts, backslash and tab tricks); the
//! pages run under the strict Content-Security-Policy (their own scripts and sockets work, an
//! injected inline script does not run).

use serde_json::json;
use system_tests::browser::Browser;
use system_tests::*;

const CONFIG: &str = r#"
[agents]
ready_on_start = false

[[acd.queues]]
id = "sales"

[[acd.agents]]
id = "1001"
queues = [{ queue = "sales", rank = 1 }]

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

/// Percent-encodes everything but unreserved characters (as a link's query would carry it).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Opens the login page with `next`, logs in, and returns where the browser landed (origin, path).
fn log_in_with_next(
    browser: &Browser,
    platform: &Platform,
    user: &str,
    password: &str,
    next: &str,
) -> (String, String) {
    let origin = format!("http://{}", platform.http);
    browser.open(&format!("{origin}/?next={}", encode(next)));
    browser.wait_for(
        "the login page",
        "return document.readyState === 'complete' && !!document.getElementById('user');",
    );
    browser.type_into("#user", user);
    browser.type_into("#password", password);
    browser.click("#login-button");
    browser.wait_for(
        &format!("{user} leaves the login page (next={next:?})"),
        "return location.pathname !== '/' && document.readyState === 'complete';",
    );
    let landed = browser.eval(
        "return [location.origin, location.pathname + location.search];",
        json!([]),
    );
    (
        landed[0].as_str().unwrap_or_default().to_string(),
        landed[1].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn next_sends_the_browser_only_to_a_path_of_this_site() {
    require_command("chromium");
    require_command("chromedriver");
    let platform = Platform::start(CONFIG);
    let origin = format!("http://{}", platform.http);
    let browser = Browser::start();

    let hostile = [
        "javascript:localStorage.setItem('pwned','1')",
        "JavaScript:localStorage.setItem('pwned','1')",
        " javascript:localStorage.setItem('pwned','1')",
        "data:text/html,<script>opener.localStorage.setItem('pwned','1')</script>",
        "//example.invalid/",
        "///example.invalid/",
        "/\\example.invalid/",
        "\\\\example.invalid/",
        "/\t/example.invalid/",
        "http://example.invalid/",
        "https:example.invalid",
        "http:/\\example.invalid",
    ];
    for next in hostile {
        let (landed_origin, path) = log_in_with_next(&browser, &platform, "1001", "agent1001", next);
        assert_eq!(landed_origin, origin, "next={next:?} left the site");
        assert_eq!(path, "/agent", "next={next:?}: the agent's own page instead");
        let pwned = browser.eval("return localStorage.getItem('pwned');", json!([]));
        assert!(pwned.is_null(), "next={next:?} ran script in our origin");
    }
    // A path of this site is kept.
    let (landed_origin, path) =
        log_in_with_next(&browser, &platform, "super", "supervisor", "/wallboard?from=link");
    assert_eq!(
        (landed_origin.as_str(), path.as_str()),
        (origin.as_str(), "/wallboard?from=link")
    );
    browser.save_screenshot("web_login_next_wallboard");
}

#[test]
fn the_pages_work_under_the_content_security_policy_and_inline_script_does_not() {
    require_command("chromium");
    require_command("chromedriver");
    let platform = Platform::start(CONFIG);
    let browser = Browser::start();
    let (_, path) = log_in_with_next(&browser, &platform, "1001", "agent1001", "");
    assert_eq!(path, "/agent");
    // The page's own script ran and its socket connected (connect-src 'self' covers ws:).
    browser.wait_for(
        "the desktop connects",
        "return window.desk && window.desk.media === 'phone';",
    );
    let inline = browser.eval(
        "const s = document.createElement('script'); s.textContent = 'window.inlineRan = 1;'; \
         document.body.appendChild(s); return window.inlineRan === 1;",
        json!([]),
    );
    assert_eq!(inline, json!(false), "an injected inline script must not run");
    let handler = browser.eval(
        "const d = document.createElement('div'); d.setAttribute('onclick', 'window.handlerRan = 1'); \
         document.body.appendChild(d); d.click(); return window.handlerRan === 1;",
        json!([]),
    );
    assert_eq!(handler, json!(false), "an injected inline handler must not run");
    browser.save_screenshot("web_agent_under_csp");
}
