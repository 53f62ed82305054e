//! Real-browser interop of the WebRTC agent leg: headless Chromium (fake microphone) offers, the media engine's
//! WebRTC endpoint answers, and audio flows both ways through an engine RTP leg. Packet counts are compared
//! with the browser's own `getStats()`.
//!
//! Drives Chromium through chromedriver with the system tests' WebDriver client.

use media::engine::{MediaConfig, MediaEngine};
use media::g711::G711;
use media::prompt::Prompt;
use media::webrtc::{WebRtcConfig, WebRtcEndpoint, WebRtcEvent};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};
use system_tests::browser::{Browser, DEADLINE};
use system_tests::require_command;

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
