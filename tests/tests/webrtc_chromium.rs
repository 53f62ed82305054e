//! Real-browser interop of the WebRTC agent leg: headless Chromium (fake microphone) offers, the media engine's
//! WebRTC endpoint answers, and audio flows both ways through an engine RTP leg. Packet counts are compared
//! with the browser's own `getStats()`.
//!
//! Drives Chromium through chromedriver's W3C WebDriver HTTP interface with a small client of its own (three
//! commands and JSON over loopback HTTP/1.1).

use media::engine::{MediaConfig, MediaEngine};
use media::g711::G711;
use media::prompt::Prompt;
use media::webrtc::{WebRtcConfig, WebRtcEndpoint, WebRtcEvent};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use system_tests::require_command;

const DEADLINE: Duration = Duration::from_secs(20);

/// One HTTP/1.1 exchange with chromedriver; the JSON `value` of the answer, or its WebDriver error.
fn webdriver_call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
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
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
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
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
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
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
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

    fn command(&self, command: &str, body: &Value) -> Result<Value, String> {
        webdriver_call(
            self.addr,
            "POST",
            &format!("/session/{}/{command}", self.session),
            Some(body),
        )
    }

    /// Runs `script` (its last argument is the completion callback) and returns what it passed to it; a
    /// `{ error }` result is a test failure with the browser's message.
    fn run(&self, script: &str, args: Value) -> Value {
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

/// Serves one blank page over loopback HTTP: a secure context (getUserMedia needs one), unlike `data:` URLs.
fn serve_blank_page() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("page listener");
    let addr = listener.local_addr().expect("page address");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let page = "<!doctype html><title>agent softphone test</title>";
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    addr
}

const OFFER: &str = r#"
const done = arguments[arguments.length - 1];
(async () => {
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
  const pc = new RTCPeerConnection({ iceServers: [] });
  window.pc = pc;
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== 'complete') {
    await new Promise((resolve) => pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    }));
  }
  done({ sdp: pc.localDescription.sdp });
})().catch((e) => done({ error: String(e) }));
"#;

const ANSWER: &str = r#"
const [sdp, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  await pc.setRemoteDescription({ type: 'answer', sdp });
  await new Promise((resolve, reject) => {
    const check = () => {
      if (pc.connectionState === 'connected') resolve();
      else if (pc.connectionState === 'failed') reject(new Error('connection failed'));
    };
    pc.addEventListener('connectionstatechange', check);
    check();
  });
  done({ state: pc.connectionState });
})().catch((e) => done({ error: String(e) }));
"#;

/// Audio RTP counts from getStats once both reach `arguments[0]` (and the inbound codec).
const STATS: &str = r#"
const [want, done] = [arguments[0], arguments[arguments.length - 1]];
(async () => {
  for (;;) {
    const report = await pc.getStats();
    let inbound = null, outbound = null;
    report.forEach((s) => {
      if (s.type === 'inbound-rtp' && s.kind === 'audio') inbound = s;
      if (s.type === 'outbound-rtp' && s.kind === 'audio') outbound = s;
    });
    const received = inbound ? inbound.packetsReceived : 0;
    const sent = outbound ? outbound.packetsSent : 0;
    if (received >= want && sent >= want) {
      const codec = inbound.codecId ? report.get(inbound.codecId) : null;
      done({ received, sent, codec: codec ? codec.mimeType : '' });
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
})().catch((e) => done({ error: String(e) }));
"#;

/// Stops the microphone track: the browser sends no more RTP.
const STOP_SENDING: &str = r#"
const done = arguments[arguments.length - 1];
(async () => {
  for (const sender of pc.getSenders()) await sender.replaceTrack(null);
  done({});
})().catch((e) => done({ error: String(e) }));
"#;

fn count(value: &Value, key: &str) -> u64 {
    value[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no {key} in {value}"))
}

/// Waits until `condition` holds: for counters that have no event of their own.
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < DEADLINE, "not before the deadline: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn chromium_talks_to_the_webrtc_endpoint_through_an_engine_leg() {
    require_command("chromium");
    require_command("chromedriver");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let _guard = runtime.enter();
    let engine = MediaEngine::new(MediaConfig {
        port_min: 46400,
        port_max: 46499,
        ..MediaConfig::default()
    })
    .expect("engine");
    let endpoint = WebRtcEndpoint::new(WebRtcConfig::default()).expect("endpoint");

    let page = serve_blank_page();
    let browser = Browser::start();
    browser
        .command("url", &json!({ "url": format!("http://{page}/") }))
        .expect("open page");

    let offer = browser.run(OFFER, json!([]));
    let offer = offer["sdp"].as_str().expect("offer sdp");
    let (mut leg, answer) = endpoint
        .accept_offer(offer)
        .expect("the endpoint accepts Chromium's offer");
    assert_eq!(leg.law(), G711::Pcmu, "Chromium lists PCMU before PCMA");
    assert_eq!(browser.run(ANSWER, json!([answer]))["state"], "connected");
    let first = runtime
        .block_on(async { tokio::time::timeout(DEADLINE, leg.next_event()).await })
        .expect("an event before the deadline");
    assert_eq!(first, Some(WebRtcEvent::Connected));

    // Link the browser with an engine leg and play it a looping prompt.
    let (rtp, _rtp_events) = engine.allocate_leg().expect("engine leg");
    leg.connect_plain(&rtp).expect("connect");
    let samples: Vec<i16> = (0..8000).map(|i| ((i % 40) as i16 - 20) * 600).collect();
    rtp.play(
        vec![Prompt::from_samples("tone", G711::Pcmu, &samples)],
        true,
        false,
    );

    // Both directions flow: the browser counts what we send, we and the engine leg count what it sends.
    let stats = browser.run(STATS, json!([25]));
    assert_eq!(stats["codec"], "audio/PCMU", "{stats}");
    assert!(count(&stats, "received") >= 25, "{stats}");
    eventually("the engine leg receives the browser's audio", || {
        rtp.quality().packets_received >= 25
    });
    assert!(leg.stats().packets_from_browser >= 25, "{:?}", leg.stats());

    // Stop both directions; then our counts and the browser's agree.
    rtp.stop_playback();
    browser.run(STOP_SENDING, json!([]));
    let mut last = Value::Null;
    eventually("our counters match the browser's getStats", || {
        last = browser.run(STATS, json!([0]));
        let ours = leg.stats();
        count(&last, "received") == ours.packets_to_browser
            && count(&last, "sent") == ours.packets_from_browser
    });
    let ours = leg.stats();
    eprintln!(
        "browser: received {} sent {}; endpoint: to browser {} from browser {}",
        last["received"], last["sent"], ours.packets_to_browser, ours.packets_from_browser
    );
    assert_eq!(rtp.quality().packets_received, ours.packets_to_engine);

    runtime.block_on(leg.close());
    assert_eq!(endpoint.peer_count(), 0);
}
