//! System tests of media anchoring: a forwarded call's RTP runs through the platform's own ports.
//!
//! These need the `callcenter` binary to anchor forwarded calls with `adapters::EngineAnchor`
//! (rebuild it with `cargo build -p callcenter` before `cargo test -p system-tests --test media`).

use std::process::{Child, Command};
use std::time::{Duration, Instant};
use system_tests::*;

/// Packets in `/usr/share/sip-tester/g711a.pcap` (A-law, 30 ms each, 7.05 s).
const PCAP_PACKETS: u64 = 236;

/// The test platform's RTP range; the scenarios' SDP checks match it (`421[0-9][0-9]`).
const RTP_RANGE: &str = "[rtp]\nport_min = 42100\nport_max = 42199\n";

fn open_limits() -> &'static str {
    "[sip.limits]\nmax_calls_per_second = 0\nper_source_requests_per_second = 0\n"
}

fn forward_to(port: u16) -> String {
    format!("[[route]]\nnumber = \"900\"\nforward = \"sip:uas@127.0.0.1:{port}\"\n")
}

/// A SIPp callee run with `-rtp_echo`: every RTP packet reaching its media port goes back to its sender.
struct EchoCallee {
    child: Child,
    port: u16,
}

impl EchoCallee {
    fn start(scenario: &str) -> EchoCallee {
        let (child, port) = listening_sipp(|port, media| {
            let mut cmd = Command::new("sipp");
            cmd.arg("-sf")
                .arg(scenarios_dir().join(scenario))
                .args(["-i", "127.0.0.1", "-p", &port.to_string()])
                .args(["-mp", &media.to_string(), "-rtp_echo", "-m", "1", "-nostdin"])
                .args(["-timeout", "60s"]);
            cmd
        });
        EchoCallee { child, port }
    }

    /// SIPp's exit code once its one call is done (0: every check in the scenario passed).
    fn wait(mut self) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for EchoCallee {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of an unlabelled metric in an OpenMetrics text.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map(|value| value as u64)
}

/// The platform's metrics once every RTP leg has closed (legs add their packet counts when they close).
fn metrics_after_legs_closed(platform: &Platform) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, text) = platform.http_get("/metrics");
        assert_eq!(code, 200);
        let closed = metric(&text, "media_legs_active") == Some(0)
            && metric(&text, "media_legs_opened_total").unwrap_or(0) > 0;
        if closed || Instant::now() > deadline {
            return text;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn caller(platform: &Platform, scenario: &str) -> SippRun {
    let port = free_port().to_string();
    let media = free_media_port().to_string();
    let target = platform.sip.to_string();
    let sf = scenarios_dir().join(scenario);
    sipp(&[
        "-sf",
        sf.to_str().unwrap_or_default(),
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
        &target,
    ])
}

#[test]
fn forwarded_call_audio_is_relayed_end_to_end_through_the_platforms_rtp_ports() {
    require_command("sipp");
    let callee = EchoCallee::start("media_uas_echo.xml");
    let platform = Platform::start(&format!(
        "{}{}{}",
        open_limits(),
        RTP_RANGE,
        forward_to(callee.port)
    ));

    // Both scenarios check that the SDP they got names 127.0.0.1 and a port of 42100-42199.
    let run = caller(&platform, "media_uac_pcap.xml");
    run.assert_succeeded(1, &platform);
    assert_eq!(callee.wait(), Some(0), "the callee saw an anchored offer");

    // The caller's 236 packets reach leg A and are relayed out of leg B to the callee; the callee's echo
    // of each one reaches leg B and is relayed out of leg A back to the caller.
    let metrics = metrics_after_legs_closed(&platform);
    let received = metric(&metrics, "media_packets_received_total").unwrap_or(0);
    let relayed = metric(&metrics, "media_packets_relayed_total").unwrap_or(0);
    let ignored = metric(&metrics, "media_packets_ignored_total").unwrap_or(0);
    let opened = metric(&metrics, "media_legs_opened_total").unwrap_or(0);
    eprintln!("media packets: received {received}, relayed {relayed}, ignored {ignored}");
    assert_eq!(opened, 2, "one leg facing each side\n{metrics}");
    let both_ways = 2 * PCAP_PACKETS;
    // Loopback loses nothing in practice; allow 2% for a loaded machine.
    let floor = both_ways * 98 / 100;
    assert!(
        (floor..=both_ways).contains(&received),
        "received {received} of {both_ways} (ignored {ignored})\n{metrics}"
    );
    assert!(
        relayed >= received * 98 / 100 && relayed <= received,
        "relayed {relayed} of {received} received\n{metrics}"
    );
    // Only the echo proves the callee got our relayed audio: without it at most one way's worth arrives.
    assert!(
        received > PCAP_PACKETS,
        "the callee's echo came back through leg B"
    );
}

#[test]
fn a_call_finding_no_free_rtp_ports_is_answered_503() {
    require_command("sipp");
    let callee = SippServer::start("uas", 1);
    // One port pair: a bridged call needs two.
    let platform = Platform::start(&format!(
        "{}[rtp]\nport_min = 42200\nport_max = 42201\n{}",
        open_limits(),
        forward_to(callee.port)
    ));
    let run = caller(&platform, "media_uac_503.xml");
    run.assert_succeeded(1, &platform);
    let (_, metrics) = platform.http_get("/metrics");
    assert_eq!(
        metric(&metrics, "media_ports_exhausted_total"),
        Some(1),
        "{metrics}"
    );
}
