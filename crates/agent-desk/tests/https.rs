//! HTTPS and WSS served directly, with a self-signed certificate made by the test: the client
//! verifies it against that certificate alone; cookies are `Secure`, HSTS is sent, the agent socket
//! works over WSS. And the reverse-proxy case: `X-Forwarded-Proto: https` counts only from a
//! configured proxy address.

use agent_desk::{Auth, AuthConfig, DeskServices, EdgeConfig, Http};
use call_control::{AcdHandle, DeskHub};
use crm_store::{CrmStore, Role};
use domain::{AgentId, Timestamp};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::rustls;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

async fn desk() -> DeskServices {
    let crm = CrmStore::connect("sqlite::memory:").await.expect("crm");
    crm.migrate().await.expect("migrations");
    let state = state_store::StateStore::memory();
    let config: acd::AcdConfig = serde_json::from_value(json!({
        "queues": [{"id": "support"}],
        "agents": [{"id": "1001", "queues": [{"queue": "support", "rank": 1}]}]
    }))
    .expect("acd config");
    let acd = AcdHandle::start(config, false, None).expect("acd");
    let auth = Auth::new(crm.clone(), state.clone(), AuthConfig::default()).expect("auth");
    auth.seed_user(
        &AgentId::new("1001").expect("id"),
        "Alice",
        Role::Agent,
        "agent-one",
        Timestamp::now_utc(),
    )
    .await
    .expect("seed");
    DeskServices {
        crm,
        state,
        acd,
        desks: DeskHub::new(),
        auth,
        calls: None,
        demo_services: false,
        demo_token: None,
        campaigns: Vec::new(),
        customers: Default::default(),
        desktop: Default::default(),
    }
}

/// One HTTP/1.1 exchange over any stream; the status and the head (lower case) and body.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &str) -> (u16, String, String) {
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn login_request(host: &str, extra: &str) -> String {
    let body = json!({"user": "1001", "password": "agent-one"}).to_string();
    format!(
        "POST /api/v1/login HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

struct Tls {
    connector: tokio_rustls::TlsConnector,
    cert_pem: String,
    key_pem: String,
}

fn self_signed() -> Tls {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("certificate");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Tls {
        connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
        cert_pem: cert.cert.pem(),
        key_pem: cert.signing_key.serialize_pem(),
    }
}

async fn tls_connect(tls: &Tls, addr: SocketAddr) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    tls.connector
        .connect(name, tcp)
        .await
        .expect("TLS handshake verified against our certificate")
}

#[tokio::test]
async fn https_and_wss_with_a_self_signed_certificate() {
    let tls = self_signed();
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, &tls.cert_pem).expect("cert");
    std::fs::write(&key, &tls.key_pem).expect("key");
    let server = agent_desk::tls::server_config(&cert, &key).expect("TLS configuration");
    let stop = CancellationToken::new();
    let (addr, _task) = Http::new(telemetry::Telemetry::new(), Arc::new(AtomicBool::new(true)))
        .with_tls(server)
        .with_desk(desk().await)
        .serve("127.0.0.1:0".parse().expect("addr"), stop.clone())
        .await
        .expect("serve");
    let _stop = stop.drop_guard();

    // Plain HTTP to the TLS port gets no page.
    let plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (status, _, _) = exchange(
        plain,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 0, "no HTTP answer without TLS");

    let (status, head, body) = exchange(
        tls_connect(&tls, addr).await,
        &login_request("localhost", "Origin: https://localhost\r\n"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let cookie_line = head
        .lines()
        .find(|l| l.starts_with("set-cookie:"))
        .expect("cookie")
        .to_string();
    assert!(
        cookie_line.contains("; secure") && cookie_line.contains("httponly"),
        "{cookie_line}"
    );
    assert!(head.contains("strict-transport-security: max-age="), "{head}");
    let token = serde_json::from_str::<Value>(&body).expect("json")["token"]
        .as_str()
        .expect("token")
        .to_string();

    // The agent socket over WSS, authorised by the cookie from our own https page.
    let mut req = "wss://localhost/ws/agent".into_client_request().expect("request");
    let h = req.headers_mut();
    h.insert("cookie", format!("cc_session={token}").parse().expect("header"));
    h.insert("origin", "https://localhost".parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::client_async(req, tls_connect(&tls, addr).await)
        .await
        .expect("wss upgrade");
    let welcome = ws.next().await.expect("frame").expect("frame");
    assert!(
        welcome.to_text().expect("text").contains("\"welcome\""),
        "{welcome:?}"
    );
    // An http:// page of the same host is another origin.
    let mut req = "wss://localhost/ws/agent".into_client_request().expect("request");
    let h = req.headers_mut();
    h.insert("cookie", format!("cc_session={token}").parse().expect("header"));
    h.insert("origin", "http://localhost".parse().expect("header"));
    assert!(
        tokio_tungstenite::client_async(req, tls_connect(&tls, addr).await)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_forwarded_scheme_counts_only_from_a_trusted_proxy() {
    let serve = |trusted: Vec<std::net::IpAddr>| async move {
        let stop = CancellationToken::new();
        let (addr, _task) = Http::new(telemetry::Telemetry::new(), Arc::new(AtomicBool::new(true)))
            .with_edge(EdgeConfig {
                trusted_proxies: trusted,
                allowed_origins: Vec::new(),
            })
            .with_desk(desk().await)
            .serve("127.0.0.1:0".parse().expect("addr"), stop.clone())
            .await
            .expect("serve");
        (addr, stop.drop_guard())
    };
    let forwarded = "X-Forwarded-Proto: https\r\nX-Forwarded-Host: desk.example.com\r\nX-Forwarded-For: 203.0.113.9\r\nOrigin: https://desk.example.com\r\n";

    // Behind the configured proxy (this test connects from 127.0.0.1): Secure cookie, HSTS, and
    // the browser's origin is the proxy's public one.
    let (addr, _guard) = serve(vec!["127.0.0.1".parse().expect("ip")]).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (status, head, body) = exchange(tcp, &login_request("127.0.0.1", forwarded)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.lines()
            .any(|l| l.starts_with("set-cookie:") && l.contains("; secure")),
        "{head}"
    );
    assert!(head.contains("strict-transport-security"), "{head}");

    // The same headers from anyone else are ignored: plain cookie, and the claimed origin is foreign.
    let (addr, _guard) = serve(Vec::new()).await;
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (status, _, _) = exchange(tcp, &login_request("127.0.0.1", forwarded)).await;
    assert_eq!(
        status, 403,
        "the forged https origin does not match http://127.0.0.1"
    );
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (status, head, _) = exchange(tcp, &login_request("127.0.0.1", "X-Forwarded-Proto: https\r\n")).await;
    assert_eq!(status, 200);
    assert!(
        !head.contains("; secure") && !head.contains("strict-transport-security"),
        "{head}"
    );
}
