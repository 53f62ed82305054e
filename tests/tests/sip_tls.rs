//! SIP over TLS with real TLS stacks (Debian's SIPp is built without OpenSSL, so Python's `ssl` and
//! OpenSSL's client are the peers): requests over TLS are answered and screened by the guard like UDP,
//! and the certificate changes on SIGHUP without a restart.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use system_tests::*;

fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let made =
        rcgen::generate_simple_self_signed(vec![name.to_string(), "127.0.0.1".into()]).expect("certificate");
    let (cert, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&cert, made.cert.pem()).expect("cert");
    std::fs::write(&key, made.signing_key.serialize_pem()).expect("key");
    (cert, key)
}

fn tls_config(tls_port: u16, cert: &Path, key: &Path, extra: &str) -> String {
    format!(
        "[sip.limits]\nmax_calls_per_second = 0\nper_source_requests_per_second = 0\n\
[sip.tls]\nlisten = \"127.0.0.1:{tls_port}\"\ncertificate = \"{}\"\nprivate_key = \"{}\"\n{extra}",
        cert.display(),
        key.display()
    )
}

/// The names in the certificate a TLS client is shown at `port`.
fn served_names(port: u16) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} </dev/null 2>/dev/null | openssl x509 -noout -ext subjectAltName"
        ))
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Sends `requests` over one TLS connection (Python's `ssl`, verifying the gateway's certificate
/// against `ca` for `name`; plain TCP when `ca` is empty) and returns each response's status line, in
/// order.
fn over_tls(port: u16, ca: &Path, name: &str, requests: &[String]) -> Vec<String> {
    const CLIENT: &str = r#"
import contextlib, socket, ssl, sys
port, ca, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
    if ca:
        wrapped = ssl.create_default_context(cafile=ca).wrap_socket(raw, server_hostname=name)
    else:
        wrapped = contextlib.nullcontext(raw)
    with wrapped as tls:
        for message in sys.argv[4:]:
            tls.sendall(message.encode())
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = tls.recv(4096)
                    if not chunk:
                        sys.exit(0)
                    data += chunk
                head, _, data = data.partition(b"\r\n\r\n")
                status = head.split(b"\r\n")[0].decode()
                if not status.startswith("SIP/2.0 100 "):
                    print(status, flush=True)
                    break
"#;
    let mut cmd = Command::new("python3");
    cmd.args([
        "-c",
        CLIENT,
        &port.to_string(),
        ca.to_str().unwrap_or_default(),
        name,
    ]);
    cmd.args(requests);
    let out = cmd.output().expect("python3");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn options(port: u16, call: &str, cseq_method: &str) -> String {
    options_over(port, call, cseq_method, "tls")
}

fn options_over(port: u16, call: &str, cseq_method: &str, transport: &str) -> String {
    let via = transport.to_ascii_uppercase();
    format!(
        "OPTIONS sip:ping@127.0.0.1:{port};transport={transport} SIP/2.0\r\nVia: SIP/2.0/{via} 127.0.0.1:5999;branch=z9hG4bK{call}\r\n\
Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.1>;tag=t{call}\r\nTo: <sip:ping@127.0.0.1>\r\nCall-ID: {call}\r\n\
CSeq: 1 {cseq_method}\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn sip_over_tls_is_answered_and_screened_like_udp() {
    require_command("python3");
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(certs.path(), "sip.example");
    let tls_port = free_port();
    let platform = Platform::start(&tls_config(tls_port, &cert, &key, ""));
    // The certificate verifies for its name; a well-formed OPTIONS gets 200; one whose CSeq method is
    // not the request's gets the guard's 400 over the same connection (TLS goes through the guard too).
    let statuses = over_tls(
        tls_port,
        &cert,
        "sip.example",
        &[
            options(tls_port, "tls1", "OPTIONS"),
            options(tls_port, "tls2", "INVITE"),
        ],
    );
    assert_eq!(statuses.len(), 2, "{statuses:?}\n{}", platform.log());
    assert!(statuses[0].starts_with("SIP/2.0 200"), "{statuses:?}");
    assert!(statuses[1].starts_with("SIP/2.0 400"), "{statuses:?}");
}

#[test]
fn the_tls_certificate_is_reloaded_on_sighup() {
    require_command("openssl");
    let certs = tempfile::tempdir().expect("tempdir");
    let (first_cert, first_key) = certificate(certs.path(), "first.example");
    let (second_cert, second_key) = certificate(certs.path(), "second.example");
    let (cert, key) = (certs.path().join("live.crt"), certs.path().join("live.key"));
    std::fs::copy(&first_cert, &cert).expect("copy");
    std::fs::copy(&first_key, &key).expect("copy");
    let tls_port = free_port();
    let platform = Platform::start(&tls_config(tls_port, &cert, &key, ""));
    assert!(
        served_names(tls_port).contains("first.example"),
        "{}",
        platform.log()
    );

    std::fs::copy(&second_cert, &cert).expect("copy");
    std::fs::copy(&second_key, &key).expect("copy");
    platform.signal(libc::SIGHUP);
    // Event: the gateway logs the reload.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !platform.log().contains("TLS certificate reloaded") {
        assert!(Instant::now() < deadline, "no reload:\n{}", platform.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let names = served_names(tls_port);
    assert!(names.contains("second.example"), "{names}\n{}", platform.log());
}

#[test]
fn the_per_source_request_limit_holds_over_tcp_too() {
    require_command("python3");
    // One request a second with a burst of three: eight requests sent back to back on one TCP
    // connection cannot all fit, and the ones beyond the bucket get 503 with Retry-After.
    let platform = Platform::start(
        "[sip.limits]\nmax_calls_per_second = 0\nper_source_requests_per_second = 1\nper_source_burst = 3\n",
    );
    let port = platform.sip.port();
    let requests: Vec<String> = (0..8)
        .map(|i| options_over(port, &format!("tcp{i}"), "OPTIONS", "tcp"))
        .collect();
    let statuses = over_tls(port, Path::new(""), "", &requests);
    assert_eq!(statuses.len(), 8, "{statuses:?}\n{}", platform.log());
    assert!(statuses[0].starts_with("SIP/2.0 200"), "{statuses:?}");
    assert!(
        statuses.iter().any(|s| s.starts_with("SIP/2.0 503")),
        "{statuses:?}"
    );
}
