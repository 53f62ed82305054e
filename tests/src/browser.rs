//! A small W3C WebDriver client for headless Chromium (through chromedriver): start a browser with a
//! fake microphone, open pages, find and click elements, type, run scripts, take screenshots. Plain
//! JSON over loopback HTTP/1.1.

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the browser helpers wait for a page to get somewhere.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The W3C key of a WebDriver element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// One read, again if a signal interrupted it: the test process gets signals (a child exiting), and
/// a plain `read` hands the interruption back as an error.
fn read_some(stream: &mut TcpStream, chunk: &mut [u8]) -> Result<usize, String> {
    loop {
        match stream.read(chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other.map_err(|e| e.to_string()),
        }
    }
}

/// One HTTP/1.1 exchange with chromedriver; the JSON `value` of the answer, or its WebDriver error.
pub fn webdriver_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(90)))
        .map_err(|e| e.to_string())?;
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json; charset=utf-8\r\n\
Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    // chromedriver keeps the connection open: read the header, then exactly the body it announces.
    let mut response = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = read_some(&mut stream, &mut chunk)?;
        if n == 0 {
            return Err("connection closed before the response header ended".into());
        }
        response.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&response[..header_end]).to_ascii_lowercase();
    let length = head.lines().find_map(|line| {
        line.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head.contains("transfer-encoding: chunked");
    loop {
        let body = &response[header_end..];
        let complete = match length {
            Some(length) => body.len() >= length,
            None if chunked => body.ends_with(b"0\r\n\r\n"),
            None => false,
        };
        if complete {
            break;
        }
        let n = read_some(&mut stream, &mut chunk)?;
        if n == 0 {
            break; // closed: what we have is the body
        }
        response.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&response[header_end..]).to_string();
    let payload = if chunked { dechunk(&body)? } else { body };
    let json: Value = serde_json::from_str(&payload).map_err(|e| format!("{e}: {payload}"))?;
    let value = json.get("value").cloned().unwrap_or(Value::Null);
    if let Some(error) = value.get("error") {
        return Err(format!(
            "{error}: {}",
            value.get("message").unwrap_or(&Value::Null)
        ));
    }
    Ok(value)
}

fn dechunk(mut body: &str) -> Result<String, String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").ok_or("bad chunk")?;
        let size = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).ok_or("short chunk")?);
        body = rest.get(size + 2..).ok_or("short chunk")?;
    }
}

/// chromedriver and one browser session; both end when this is dropped.
pub struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fake microphone and camera.
    pub fn start() -> Browser {
        let port = crate::free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let profile = tempfile::tempdir().expect("profile dir");
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            _profile: profile,
        };
        let start = Instant::now();
        loop {
            let ready = webdriver_call(addr, "GET", "/status", None)
                .ok()
                .and_then(|v| v.get("ready").and_then(Value::as_bool))
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(start.elapsed() < DEADLINE, "chromedriver did not become ready");
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = [
            "--headless".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--use-fake-device-for-media-stream".to_string(),
            "--use-fake-ui-for-media-stream".to_string(),
            "--disable-background-networking".to_string(),
            "--no-first-run".to_string(),
            "--window-size=1280,900".to_string(),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": { "binary": "/usr/bin/chromium", "args": args }
            }}
        });
        let session = webdriver_call(addr, "POST", "/session", Some(&capabilities)).expect("new session");
        browser.session = session["sessionId"].as_str().expect("session id").to_string();
        browser
            .command("timeouts", &json!({ "script": 60_000 }))
            .expect("set script timeout");
        browser
    }

    /// A session command (`url`, `execute/sync`, `element`, ...) with its JSON body.
    pub fn command(&self, command: &str, body: &Value) -> Result<Value, String> {
        webdriver_call(
            self.addr,
            "POST",
            &format!("/session/{}/{command}", self.session),
            Some(body),
        )
    }

    /// Runs `script` (its last argument is the completion callback) and returns what it passed to it; a
    /// `{ error }` result is a test failure with the browser's message.
    pub fn run(&self, script: &str, args: Value) -> Value {
        let result = self
            .command("execute/async", &json!({ "script": script, "args": args }))
            .unwrap_or_else(|e| panic!("script failed: {e}"));
        if let Some(error) = result.get("error") {
            panic!("browser: {error}");
        }
        result
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = webdriver_call(self.addr, "DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Opens `url`.
    pub fn open(&self, url: &str) {
        self.command("url", &json!({ "url": url }))
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs a synchronous script and returns its value.
    pub fn eval(&self, script: &str, args: Value) -> Value {
        self.command("execute/sync", &json!({ "script": script, "args": args }))
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Waits until `script` returns a truthy value (pages update on their own events) and returns it.
    pub fn wait_for(&self, what: &str, script: &str) -> Value {
        let start = Instant::now();
        loop {
            let v = self.eval(script, json!([]));
            let truthy = !matches!(v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
            if truthy {
                return v;
            }
            assert!(start.elapsed() < DEADLINE, "the page never got there: {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The element matching a CSS selector.
    pub fn find(&self, css: &str) -> String {
        let v = self
            .command("element", &json!({ "using": "css selector", "value": css }))
            .unwrap_or_else(|e| panic!("no element {css}: {e}"));
        v[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("element id of {css}: {v}"))
            .to_string()
    }

    /// Clicks the element matching `css`.
    pub fn click(&self, css: &str) {
        let id = self.find(css);
        self.command(&format!("element/{id}/click"), &json!({}))
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    /// Types `text` into the element matching `css`.
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css);
        self.command(&format!("element/{id}/value"), &json!({ "text": text }))
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// A PNG screenshot of the page.
    pub fn screenshot(&self) -> Vec<u8> {
        let v = webdriver_call(
            self.addr,
            "GET",
            &format!("/session/{}/screenshot", self.session),
            None,
        )
        .unwrap_or_else(|e| panic!("screenshot: {e}"));
        decode_base64(v.as_str().unwrap_or_default())
    }

    /// Saves a screenshot as a test artifact and returns its path.
    pub fn save_screenshot(&self, name: &str) -> PathBuf {
        let path = artifacts_dir().join(format!("{name}.png"));
        std::fs::write(&path, self.screenshot()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }
}

impl Browser {
    /// Sizes the window so the page itself (what a screenshot shows) is `width`×`height`
    /// (screenshots of the desktop are taken at 1366×768, the most common agent screen). The window
    /// is first set to that size, then grown by whatever the browser's own frame takes.
    pub fn resize(&self, width: u32, height: u32) {
        let set = |w: i64, h: i64| {
            self.command("window/rect", &json!({ "width": w, "height": h }))
                .unwrap_or_else(|e| panic!("resize: {e}"));
        };
        let (w, h) = (i64::from(width), i64::from(height));
        set(w, h);
        let inner = self.eval("return [window.innerWidth, window.innerHeight];", json!([]));
        let (iw, ih) = (inner[0].as_i64().unwrap_or(w), inner[1].as_i64().unwrap_or(h));
        if (iw, ih) != (w, h) {
            set(2 * w - iw, 2 * h - ih);
        }
    }

    /// Lets pages of `origin` raise notifications (as an agent who allowed them).
    pub fn allow_notifications(&self, origin: &str) {
        let grant = json!({
            "cmd": "Browser.grantPermissions",
            "params": { "origin": origin, "permissions": ["notifications"] }
        });
        self.command("goog/cdp/execute", &grant)
            .unwrap_or_else(|e| panic!("grant notifications: {e}"));
    }

    /// Runs axe-core (vendored in `tests/vendor/axe-core`, injected here, never served by the
    /// product) on the page and returns its violations of impact `serious` or `critical`, each as
    /// "rule: target (summary)".
    pub fn serious_accessibility_violations(&self) -> Vec<String> {
        const AXE: &str = include_str!("../vendor/axe-core/axe.min.js");
        self.eval(&format!("{AXE}\n;return true;"), json!([]));
        let result = self.run(
            r#"const done = arguments[arguments.length - 1];
axe.run(document, { resultTypes: ['violations'] }).then((r) => done(r.violations
  .filter((v) => v.impact === 'serious' || v.impact === 'critical')
  .flatMap((v) => v.nodes.map((n) => v.id + ': ' + n.target.join(' ') + ' (' + (n.failureSummary || '').replace(/\s+/g, ' ') + ')'))))
  .catch((e) => done({ error: String(e) }));"#,
            json!([]),
        );
        result
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Where tests leave artifacts (screenshots): `$TEST_ARTIFACTS`, or `test-artifacts/` in the cargo
/// target directory.
pub fn artifacts_dir() -> PathBuf {
    let dir = match std::env::var_os("TEST_ARTIFACTS") {
        Some(d) => PathBuf::from(d),
        None => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
            target.join("test-artifacts")
        }
    };
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    dir
}

/// Standard base64 (screenshots come as base64 PNG).
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for v in text.bytes().filter_map(value) {
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_decodes() {
        assert_eq!(super::decode_base64("aGVsbG8gd29ybGQ="), b"hello world");
        assert_eq!(super::decode_base64("iVBORw=="), [0x89, b'P', b'N', b'G']);
    }
}
