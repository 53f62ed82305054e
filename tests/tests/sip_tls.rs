//! SIP over TLS with real TLS stacks: baresip and PJSIP register over TLS and call the IVR with
//! SDES-SRTP required (baresip's decrypted prompt is audible, PJSIP's stream is RTP/SAVP); PJSIP, which
//! verifies the server, refuses a gateway certificate from an authority it does not trust and an expired
//! one. Python's `ssl` and OpenSSL's client check that requests over TLS are answered and screened by
//! the guard like UDP, that the per-source limit holds over TCP, and that the certificate changes on
//! SIGHUP without a restart, that TLS connections are capped per source and closed when idle (Debian's SIPp is built without OpenSSL, so it cannot be the TLS peer); a
//! Python TLS trunk checks that outbound TLS trusts only unexpired certificates from the configured
//! authorities.
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

#[test]
fn baresip_registers_over_tls_and_calls_the_ivr_with_mandatory_srtp() {
    require_command("baresip");
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(certs.path(), "sip.example");
    let tls_port = free_port();
    let flows = test_flows();
    let platform = Platform::start_with_flows(
        &tls_config(
            tls_port,
            &cert,
            &key,
            "[[sip.user]]\nname = \"1001\"\npassword = \"secret1001\"\n[[route]]\nnumber = \"800\"\nivr = \"main\"\n",
        ),
        flows.path(),
    );
    // baresip registers over TLS (trusting the gateway's certificate), then calls the IVR with SRTP
    // required: the call is set up only if the answer carries RTP/SAVP with a key it accepts.
    let (mut phone, dumps) = peers::baresip(
        &format!(
            "<sip:1001@127.0.0.1:{tls_port};transport=tls>;auth_pass=secret1001;mediaenc=srtp-mand;regint=300"
        ),
        &format!("sip_cafile\t{}\n", cert.display()),
    );
    assert!(
        phone.wait_for("200 OK", &["failed", "488", "403"]),
        "baresip did not register over TLS:\n{}\n{}",
        phone.seen,
        platform.log()
    );
    phone.send(&format!("/dial sip:800@127.0.0.1:{tls_port}"));
    assert!(
        phone.wait_for("Call established", &["Call terminated", "failed"]),
        "no SRTP call:\n{}\n{}",
        phone.seen,
        platform.log()
    );
    assert!(
        phone.seen.contains("SRTP is Enabled") && phone.seen.contains(";transport=tls"),
        "{}",
        phone.seen
    );
    // Event: baresip's decoded-audio dump (what it received, not its own tone) grows with the IVR's prompt, decrypted from SRTP.
    let deadline = Instant::now() + Duration::from_secs(20);
    let loud = loop {
        let loudest = peers::decoded_peak(&dumps);
        if loudest > 1000 || Instant::now() > deadline {
            break loudest;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        loud > 1000,
        "no audible prompt in baresip's dumps ({loud}):\n{}\n{}",
        phone.seen,
        platform.log()
    );
}

/// A certificate authority and a certificate it signs for `name` (and 127.0.0.1), valid until
/// `expires` (year, month, day); written as `<file>.ca.crt`, `<file>.crt` and `<file>.key` under `dir`.
fn signed_certificate(
    dir: &Path,
    file: &str,
    name: &str,
    expires: (i32, u8, u8),
) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // Distinct names: a leaf whose subject equals its issuer's looks self-issued to OpenSSL.
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{file} test authority"));
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string(), "127.0.0.1".into()]).expect("params");
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(expires.0, expires.1, expires.2);
    let cert = params.signed_by(&key, &issuer).expect("sign");
    let paths = (
        dir.join(format!("{file}.ca.crt")),
        dir.join(format!("{file}.crt")),
        dir.join(format!("{file}.key")),
    );
    std::fs::write(&paths.0, ca_cert.pem()).expect("ca");
    std::fs::write(&paths.1, cert.pem()).expect("cert");
    std::fs::write(&paths.2, key.serialize_pem()).expect("key");
    paths
}

/// A TLS server (Python's `ssl`) on a free port with `cert`/`key` that prints one line per event:
/// `handshake failed: ...` or the first line of each SIP request it reads.
fn tls_trunk(cert: &Path, key: &Path) -> (std::process::Child, u16, std::sync::mpsc::Receiver<String>) {
    const SERVER: &str = r#"
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(sys.argv[1], sys.argv[2])
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(8)
print("port", srv.getsockname()[1], flush=True)
while True:
    raw, _ = srv.accept()
    try:
        tls = ctx.wrap_socket(raw, server_side=True)
    except (ssl.SSLError, OSError) as e:
        print("handshake failed:", e, flush=True)
        raw.close()
        continue
    data = tls.recv(65536)
    print("request:", data.split(b"\r\n")[0].decode(errors="replace"), flush=True)
    tls.close()
"#;
    let mut child = Command::new("python3")
        .args([
            "-c",
            SERVER,
            cert.to_str().unwrap_or_default(),
            key.to_str().unwrap_or_default(),
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(10)).expect("server port");
    let port = first
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .expect("port line");
    (child, port, rx)
}

/// What the TLS trunk saw when the gateway forwarded a call to it, with `ca` trusted.
fn forward_over_tls(trunk_cert: &Path, trunk_key: &Path, ca: &Path, name: &str) -> String {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(certs.path(), "sip.example");
    let (mut trunk, trunk_port, seen) = tls_trunk(trunk_cert, trunk_key);
    let platform = Platform::start(&tls_config(
        free_port(),
        &cert,
        &key,
        &format!(
            "ca_certificates = \"{}\"\n[[route]]\nnumber = \"700\"\nforward = \"sip:700@{name}:{trunk_port};transport=tls\"\n",
            ca.display()
        ),
    ));
    let raw = RawSip::new(platform.sip);
    raw.socket
        .send_to(raw.invite("700", "fwdtls").as_bytes(), raw.target)
        .expect("send");
    // Event: the trunk reports the handshake's outcome (refused, or the INVITE it read).
    let line = seen
        .recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("the trunk saw nothing:\n{}", platform.log()));
    let _ = trunk.kill();
    let _ = trunk.wait();
    line
}

#[test]
fn outbound_tls_trusts_only_valid_certificates_from_the_configured_authorities() {
    require_command("python3");
    let certs = tempfile::tempdir().expect("tempdir");
    let valid_until = (2099, 1, 1);
    let (ca, cert, key) = signed_certificate(certs.path(), "good", "trunk.example", valid_until);
    let (other_ca, _, _) = signed_certificate(certs.path(), "other", "trunk.example", valid_until);
    let (expired_ca, expired_cert, expired_key) =
        signed_certificate(certs.path(), "expired", "trunk.example", (2021, 1, 1));

    // A certificate from a trusted authority for the address dialled: the INVITE goes through.
    let seen = forward_over_tls(&cert, &key, &ca, "127.0.0.1");
    assert!(seen.starts_with("request: INVITE sip:700@"), "{seen}");
    // The same certificate when another authority is the one trusted: refused in the handshake.
    let seen = forward_over_tls(&cert, &key, &other_ca, "127.0.0.1");
    assert!(seen.starts_with("handshake failed"), "{seen}");
    // An expired certificate from the trusted authority: refused.
    let seen = forward_over_tls(&expired_cert, &expired_key, &expired_ca, "127.0.0.1");
    assert!(seen.starts_with("handshake failed"), "{seen}");
}

#[test]
fn pjsip_registers_over_tls_only_when_it_trusts_the_gateways_certificate_and_calls_with_srtp() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(certs.path(), "sip.example");
    let (other, _) = certificate(certs.path(), "other.example");
    let tls_port = free_port();
    let flows = test_flows();
    let platform = Platform::start_with_flows(
        &tls_config(
            tls_port,
            &cert,
            &key,
            "[[sip.user]]\nname = \"1001\"\npassword = \"secret1001\"\n[[route]]\nnumber = \"800\"\nivr = \"main\"\n",
        ),
        flows.path(),
    );
    let gw = format!("127.0.0.1:{tls_port}");
    // PJSIP verifies the server: a certificate from an authority it does not trust is refused and
    // the registration fails.
    let mut doubtful = peers::pjsua_with(&gw, "1001", "secret1001", false, Some(&other));
    assert!(doubtful.wait_for("reg ", &[]), "{}", doubtful.seen);
    assert!(
        doubtful.seen.contains("PJSIP_TLS_ECERTVERIF") && !doubtful.seen.contains("reg 200"),
        "{}\n{}",
        doubtful.seen,
        platform.log()
    );
    drop(doubtful);
    // Trusting the gateway's certificate it registers, then calls the IVR over TLS with SRTP required.
    let mut phone = peers::pjsua_with(&gw, "1001", "secret1001", true, Some(&cert));
    assert!(
        phone.wait_for("reg 200", &["reg 4", "reg 5", "reg 1"]),
        "{}\n{}",
        phone.seen,
        platform.log()
    );
    phone.send(&format!("call sip:800@{gw};transport=tls"));
    assert!(
        phone.wait_for("state CONFIRMED", &["DISCONNECTED"]),
        "{}\n{}",
        phone.seen,
        platform.log()
    );
    phone.send("rx");
    assert!(phone.wait_for("rx ", &[]), "{}", phone.seen);
    assert!(phone.seen.contains(" SAVP"), "{}", phone.seen);
    phone.send("hangup");
    assert!(phone.wait_for("state DISCONNECTED", &[]), "{}", phone.seen);
}

#[test]
fn pjsip_accepts_a_valid_gateway_certificate_from_an_authority_it_trusts_and_refuses_an_expired_one() {
    let certs = tempfile::tempdir().expect("tempdir");
    // The same kind of certificate, from an authority PJSIP trusts, valid and then expired.
    for (file, expires, registers) in [("valid", (2099, 1, 1), true), ("expired", (2021, 1, 1), false)] {
        let (ca, cert, key) = signed_certificate(certs.path(), file, "sip.example", expires);
        let tls_port = free_port();
        let platform = Platform::start(&tls_config(
            tls_port,
            &cert,
            &key,
            "[[sip.user]]\nname = \"1001\"\npassword = \"secret1001\"\n",
        ));
        let gw = format!("127.0.0.1:{tls_port}");
        let mut phone = peers::pjsua_with(&gw, "1001", "secret1001", false, Some(&ca));
        assert!(phone.wait_for("reg ", &[]), "{}", phone.seen);
        let refused = phone.seen.contains("PJSIP_TLS_ECERTVERIF");
        assert_eq!(
            (phone.seen.contains("reg 200"), refused),
            (registers, !registers),
            "{file}: {}\n{}",
            phone.seen,
            platform.log()
        );
    }
}

#[test]
fn a_source_holds_at_most_its_cap_of_tcp_connections() {
    require_command("python3");
    let platform = Platform::start(
        "[sip.limits]\nmax_calls_per_second = 0\nper_source_requests_per_second = 0\nmax_connections_per_source = 2\n",
    );
    let port = platform.sip.port();
    // Two connections are answered; a third from the same address is closed unanswered; once one of
    // the first two is closed, a new one is answered again (retried until the gateway has seen the
    // close: an event, bounded).
    const CLIENT: &str = r#"
import socket, sys, time
port, request = int(sys.argv[1]), sys.argv[2].encode()
asked = 0
def ask(conn):
    # A new transaction each time (Call-ID, tag and branch hold "cap").
    global asked
    asked += 1
    try:
        conn.sendall(request.replace(b"cap", b"cap%d" % asked))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return "closed"
            data += chunk
        return data.split(b"\r\n")[0].decode()
    except OSError:
        return "closed"
def connect():
    return socket.create_connection(("127.0.0.1", port), timeout=10)
first, second, third = connect(), connect(), connect()
print("first", ask(first))
print("second", ask(second))
print("third", ask(third))
first.close()
deadline = time.time() + 10
while True:
    again = connect()
    answer = ask(again)
    if answer.startswith("SIP/2.0 200") or time.time() > deadline:
        break
    again.close()
    time.sleep(0.05)
print("after close", answer)
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            CLIENT,
            &port.to_string(),
            &options_over(port, "cap", "OPTIONS", "tcp"),
        ])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("first SIP/2.0 200"), "{text}\n{}", platform.log());
    assert!(text.contains("second SIP/2.0 200"), "{text}");
    assert!(text.contains("third closed"), "{text}");
    assert!(
        text.contains("after close SIP/2.0 200"),
        "{text}\n{}",
        platform.log()
    );
    assert!(
        platform
            .http_get("/metrics")
            .1
            .contains("reason=\"too_many_connections\""),
        "{}",
        platform.http_get("/metrics").1
    );
}

#[test]
fn sip_over_tcp_alone_is_answered() {
    require_command("python3");
    // Without UDP the stack's own TCP listener serves (its Via address comes from a listener).
    let platform = Platform::start(
        "transports = [\"tcp\"]\n[sip.limits]\nmax_calls_per_second = 0\nper_source_requests_per_second = 0\n",
    );
    let port = platform.sip.port();
    let statuses = over_tls(
        port,
        Path::new(""),
        "",
        &[options_over(port, "tcponly", "OPTIONS", "tcp")],
    );
    assert_eq!(statuses, ["SIP/2.0 200 OK"], "{}", platform.log());
}

/// Runs a Python TLS client `script` against the gateway's TLS port (argv: port, CA file, a request
/// whose "cap" is replaced per transaction); returns what it printed.
fn python_tls_client(script: &str, port: u16, ca: &Path, request: &str) -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &port.to_string(),
            ca.to_str().unwrap_or_default(),
            request,
        ])
        .output()
        .expect("python3");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const TLS_CLIENT_COMMON: &str = r#"
import socket, ssl, sys, time
port, ca, request = int(sys.argv[1]), sys.argv[2], sys.argv[3].encode()
context = ssl.create_default_context(cafile=ca)
asked = 0
def connect():
    raw = socket.create_connection(("127.0.0.1", port), timeout=60)
    try:
        return context.wrap_socket(raw, server_hostname="sip.example")
    except (OSError, ssl.SSLError):
        raw.close()
        return None
def ask(conn):
    # A new transaction each time (Call-ID, tag and branch hold "cap").
    global asked
    if conn is None:
        return "closed"
    asked += 1
    try:
        conn.sendall(request.replace(b"cap", b"cap%d" % asked))
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return "closed"
            data += chunk
        return data.split(b"\r\n")[0].decode()
    except (OSError, ssl.SSLError):
        return "closed"
"#;

#[test]
fn a_source_holds_at_most_its_cap_of_tls_connections() {
    require_command("python3");
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(certs.path(), "sip.example");
    let tls_port = free_port();
    let platform = Platform::start(&tls_config(tls_port, &cert, &key, "").replacen(
        "[sip.limits]\n",
        "[sip.limits]\nmax_connections_per_source = 2\n",
        1,
    ));
    // Two TLS connections are answered; a third from the same address is closed before its handshake;
    // once one of the first two is closed, a new one is answered again (retried until the gateway has
    // seen the close: an event, bounded).
    let script = format!(
        "{TLS_CLIENT_COMMON}{}",
        r#"
first, second, third = connect(), connect(), connect()
print("first", ask(first))
print("second", ask(second))
print("third", ask(third))
first.close()
deadline = time.time() + 20
while True:
    again = connect()
    answer = ask(again)
    if answer.startswith("SIP/2.0 200") or time.time() > deadline:
        break
    if again is not None:
        again.close()
    time.sleep(0.05)
print("after close", answer)
"#
    );
    let text = python_tls_client(&script, tls_port, &cert, &options(tls_port, "cap", "OPTIONS"));
    assert!(text.contains("first SIP/2.0 200"), "{text}\n{}", platform.log());
    assert!(text.contains("second SIP/2.0 200"), "{text}");
    assert!(text.contains("third closed"), "{text}");
    assert!(
        text.contains("after close SIP/2.0 200"),
        "{text}\n{}",
        platform.log()
    );
    let metrics = platform.http_get("/metrics").1;
    assert!(metrics.contains("reason=\"too_many_connections\""), "{metrics}");
}

#[test]
fn an_idle_tls_connection_is_closed_after_the_idle_timeout() {
    require_command("python3");
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(certs.path(), "sip.example");
    let tls_port = free_port();
    let platform = Platform::start(&tls_config(tls_port, &cert, &key, "").replacen(
        "[sip.limits]\n",
        "[sip.limits]\nstream_idle_timeout_secs = 1\n",
        1,
    ));
    // One connection is answered and then left idle; one never starts its handshake. Both are closed
    // by the gateway: the client waits for the close (an event; its socket timeout is only a bound).
    let script = format!(
        "{TLS_CLIENT_COMMON}{}",
        r#"
tls = connect()
print("asked", ask(tls))
try:
    print("idle tls", "closed" if tls.recv(4096) == b"" else "data")
except socket.timeout:
    print("idle tls", "still open")
except (OSError, ssl.SSLError):
    print("idle tls", "closed")
raw = socket.create_connection(("127.0.0.1", port), timeout=60)
try:
    print("no handshake", "closed" if raw.recv(4096) == b"" else "data")
except socket.timeout:
    print("no handshake", "still open")
except OSError:
    print("no handshake", "closed")
"#
    );
    let text = python_tls_client(&script, tls_port, &cert, &options(tls_port, "cap", "OPTIONS"));
    assert!(text.contains("asked SIP/2.0 200"), "{text}\n{}", platform.log());
    assert!(text.contains("idle tls closed"), "{text}\n{}", platform.log());
    assert!(text.contains("no handshake closed"), "{text}\n{}", platform.log());
}
