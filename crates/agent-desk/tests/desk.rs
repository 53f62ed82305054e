//! Protocol and authorisation tests of the desk over real HTTP and WebSocket connections: an
//! in-process server over an in-memory state store, an in-memory SQLite CRM and a running ACD task.
//! Every CTI request type and every refusal is exercised; calls themselves (offers, hold, wrap-up)
//! are covered by the system tests, which place real SIP calls.

use agent_desk::{Auth, AuthConfig, DeskServices, Http};
use call_control::{AcdHandle, DeskHub};
use crm_store::{CrmStore, Role};
use domain::{AgentId, Timestamp};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Message, http};
use tokio_util::sync::CancellationToken;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Server {
    addr: SocketAddr,
    desks: DeskHub,
    crm: CrmStore,
    auth: Auth,
    _stop: tokio_util::sync::DropGuard,
}

async fn start() -> Server {
    start_with_ttl(Duration::from_secs(600)).await
}

async fn start_with_ttl(session_ttl: Duration) -> Server {
    let crm = CrmStore::connect("sqlite::memory:").await.expect("crm");
    crm.migrate().await.expect("migrations");
    let state = state_store::StateStore::memory();
    let config: acd::AcdConfig = serde_json::from_value(json!({
        "queues": [{"id": "support"}, {"id": "sales"}],
        "agents": [
            {"id": "1001", "queues": [{"queue": "support", "rank": 1}]},
            {"id": "1002", "queues": [{"queue": "support", "rank": 1}, {"queue": "sales", "rank": 1}]}
        ]
    }))
    .expect("acd config");
    let acd = AcdHandle::start(config, false, None).expect("acd");
    let auth = Auth::new(
        crm.clone(),
        state.clone(),
        AuthConfig {
            session_ttl,
            max_failures: 3,
            lockout: Duration::from_secs(60),
            ..AuthConfig::default()
        },
    )
    .expect("auth");
    let now = Timestamp::now_utc();
    for (id, role, pw) in [
        ("1001", Role::Agent, "agent-one"),
        ("1002", Role::Agent, "agent-two"),
        ("super", Role::Supervisor, "supervisor"),
    ] {
        let created = auth
            .seed_user(&AgentId::new(id).expect("id"), id, role, pw, now)
            .await
            .expect("seed");
        assert!(created);
    }
    let desks = DeskHub::new();
    let http =
        Http::new(telemetry::Telemetry::new(), Arc::new(AtomicBool::new(true))).with_desk(DeskServices {
            crm: crm.clone(),
            state,
            acd,
            desks: desks.clone(),
            auth: auth.clone(),
            calls: None,
            demo_services: true,
            demo_token: Some("demo-service-token".into()),
            campaigns: Vec::new(),
            customers: Default::default(),
            desktop: Default::default(),
        });
    let stop = CancellationToken::new();
    let (addr, _task) = http
        .serve("127.0.0.1:0".parse().expect("addr"), stop.clone())
        .await
        .expect("serve");
    Server {
        addr,
        desks,
        crm,
        auth,
        _stop: stop.drop_guard(),
    }
}

/// One HTTP/1.1 request; returns the status, the headers (lower-case names) and the body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Vec<(String, String)>, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

async fn login(addr: SocketAddr, user: &str, password: &str) -> (u16, Value) {
    let body = json!({"user": user, "password": password}).to_string();
    let (status, _, body) = request(addr, "POST", "/api/v1/login", &[], &body).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

async fn token(addr: SocketAddr, user: &str, password: &str) -> String {
    let (status, body) = login(addr, user, password).await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().expect("token").to_string()
}

async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Result<Socket, u16> {
    let mut req = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("request");
    for (k, v) in headers {
        req.headers_mut().insert(
            http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
            http::HeaderValue::from_str(v).expect("value"),
        );
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(e) => panic!("websocket: {e}"),
    }
}

async fn agent_socket(addr: SocketAddr, token: &str) -> Socket {
    let bearer = format!("Bearer {token}");
    connect(addr, "/ws/agent", &[("authorization", &bearer)])
        .await
        .expect("upgrade")
}

/// The next text frame, as JSON (pings and pongs skipped, and the queue strip's `queues` frames,
/// which come whenever the live figures change, in between any two others).
async fn next(socket: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("frame");
        match msg {
            Message::Text(t) => {
                let frame: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
                if frame["type"] != "queues" {
                    return frame;
                }
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// The next frame of `kind`, skipping others (e.g. stats frames while waiting for an ack).
async fn next_of(socket: &mut Socket, kind: &str) -> Value {
    loop {
        let f = next(socket).await;
        if f["type"] == kind {
            return f;
        }
    }
}

async fn send(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::Text(frame.to_string().into()))
        .await
        .expect("send");
}

/// Sends a request and returns its answer (ack, error or pong), skipping pushed frames.
async fn ask(socket: &mut Socket, frame: Value) -> Value {
    let id = frame["id"].clone();
    send(socket, frame).await;
    loop {
        let f = next(socket).await;
        if ["ack", "error", "pong"].contains(&f["type"].as_str().unwrap_or("")) && f["id"] == id {
            return f;
        }
    }
}

#[tokio::test]
async fn login_answers_alike_for_unknown_users_and_locks_out_after_failures() {
    let s = start().await;
    let (status, wrong) = login(s.addr, "1001", "nope").await;
    assert_eq!(status, 401);
    let (status, unknown) = login(s.addr, "nobody", "nope").await;
    assert_eq!(status, 401);
    assert_eq!(wrong, unknown, "probing reveals nothing about which users exist");
    assert_eq!(wrong["error"]["code"], "bad_credentials");

    // Three failures allowed (max_failures = 3), then the bucket is empty: locked out.
    for _ in 0..3 {
        let (status, _) = login(s.addr, "1002", "guess").await;
        assert_eq!(status, 401);
    }
    let body = json!({"user": "1002", "password": "agent-two"}).to_string();
    let (status, headers, body) = request(s.addr, "POST", "/api/v1/login", &[], &body).await;
    assert_eq!(
        status, 429,
        "even the right password waits out the lockout: {body}"
    );
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "retry-after" && v.parse::<u64>().is_ok_and(|s| s > 0))
    );

    let (status, ok) = login(s.addr, "1001", "agent-one").await;
    assert_eq!(status, 200);
    assert_eq!(ok["user"]["role"], "agent");
    let (status, _, body) = request(s.addr, "POST", "/api/v1/login", &[], "{not json").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn sessions_expire_and_logout_ends_them() {
    let s = start().await;
    let t = token(s.addr, "1001", "agent-one").await;
    let now = Timestamp::now_utc();
    assert!(s.auth.session(&t, now).await.is_some());
    let later = Timestamp::from_millis(now.as_millis() + 601_000);
    let t2 = token(s.addr, "1002", "agent-two").await;
    assert!(
        s.auth.session(&t2, later).await.is_none(),
        "lapsed after the configured ttl"
    );

    let bearer = format!("Bearer {t}");
    let (status, _, me) = request(s.addr, "GET", "/api/v1/me", &[("authorization", &bearer)], "").await;
    assert_eq!(status, 200);
    assert!(me.contains("\"1001\""), "{me}");
    let (status, _, _) = request(
        s.addr,
        "POST",
        "/api/v1/logout",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(status, 204);
    let (status, _, _) = request(s.addr, "GET", "/api/v1/me", &[("authorization", &bearer)], "").await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn every_route_is_authorised_by_role() {
    let s = start().await;
    let agent = format!("Bearer {}", token(s.addr, "1001", "agent-one").await);
    let sup = format!("Bearer {}", token(s.addr, "super", "supervisor").await);
    // (path, status without a session, as an agent, as a supervisor)
    let routes = [
        ("/api/v1/me", 401, 200, 200),
        ("/api/v1/queues", 401, 403, 200),
        ("/api/v1/agents", 401, 403, 200),
        ("/api/v1/stats", 401, 403, 200),
        // An agent with no call on their desktop reads no customer (whether one exists or not).
        ("/api/v1/customers?phone=%2B15550100", 401, 403, 404),
        ("/api/v1/customers?phone=1&account=2", 401, 400, 400),
        ("/api/v1/customers/c-unknown/interactions", 401, 403, 404),
    ];
    for (path, anonymous, as_agent, as_supervisor) in routes {
        let (a, _, _) = request(s.addr, "GET", path, &[], "").await;
        let (b, _, _) = request(s.addr, "GET", path, &[("authorization", &agent)], "").await;
        let (c, _, body) = request(s.addr, "GET", path, &[("authorization", &sup)], "").await;
        assert_eq!((a, b, c), (anonymous, as_agent, as_supervisor), "{path}: {body}");
    }
    let (_, _, queues) = request(s.addr, "GET", "/api/v1/queues", &[("authorization", &sup)], "").await;
    let queues: Value = serde_json::from_str(&queues).expect("json");
    let names: Vec<&str> = queues["queues"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|q| q["queue"].as_str())
        .collect();
    assert_eq!(names, ["support", "sales"], "in configuration order");

    assert_eq!(connect(s.addr, "/ws/agent", &[]).await.err(), Some(401));
    assert_eq!(connect(s.addr, "/ws/supervisor", &[]).await.err(), Some(401));
    assert_eq!(
        connect(s.addr, "/ws/supervisor", &[("authorization", &agent)])
            .await
            .err(),
        Some(403),
        "an agent cannot read the wallboard"
    );
    // The browser's cookie only counts on a socket opened by our own pages.
    let cookie = format!("cc_session={}", agent.trim_start_matches("Bearer "));
    assert_eq!(
        connect(
            s.addr,
            "/ws/agent",
            &[("cookie", &cookie), ("origin", "http://evil.example")]
        )
        .await
        .err(),
        Some(403)
    );
    let origin = format!("http://{}", s.addr);
    assert!(
        connect(s.addr, "/ws/agent", &[("cookie", &cookie), ("origin", &origin)])
            .await
            .is_ok()
    );

    for page in [
        "/",
        "/agent",
        "/wallboard",
        "/static/agent.js",
        "/static/wallboard.js",
        "/static/style.css",
    ] {
        let (status, headers, _) = request(s.addr, "GET", page, &[], "").await;
        assert_eq!(status, 200, "{page}");
        assert!(headers.iter().any(|(k, _)| k == "content-type"), "{page}");
    }
}

#[tokio::test]
async fn the_agent_protocol_answers_every_request_and_refuses_what_is_not_valid_now() {
    let s = start().await;
    let t = token(s.addr, "1001", "agent-one").await;
    let mut ws = agent_socket(s.addr, &t).await;
    let welcome = next(&mut ws).await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["protocol"], 1);
    assert_eq!(welcome["agent"]["id"], "1001");
    assert_eq!(welcome["media"], "phone");
    assert_eq!(welcome["state"]["state"], "logged_out");
    assert_eq!(welcome["calls"], json!([]));

    let refused = ask(&mut ws, json!({"type": "ready", "id": 1})).await;
    assert_eq!(
        (refused["type"].as_str(), refused["code"].as_str()),
        (Some("error"), Some("illegal_transition"))
    );
    assert!(
        refused["message"].as_str().unwrap_or("").contains("logged out"),
        "{refused}"
    );

    assert_eq!(
        ask(&mut ws, json!({"type": "login", "id": 2})).await["type"],
        "ack"
    );
    let state = next_of(&mut ws, "state").await;
    assert_eq!(state["state"], "available");
    assert!(state["since"].as_i64().is_some());

    let again = ask(&mut ws, json!({"type": "login", "id": 3})).await;
    assert_eq!(again["code"], "illegal_transition");
    let already = ask(&mut ws, json!({"type": "ready", "id": 4})).await;
    assert_eq!(already["code"], "illegal_transition");

    let bad_reason = ask(
        &mut ws,
        json!({"type": "not_ready", "id": 5, "reason": "two words"}),
    )
    .await;
    assert_eq!(bad_reason["code"], "bad_request");
    assert_eq!(
        ask(&mut ws, json!({"type": "not_ready", "id": 6, "reason": "lunch"})).await["type"],
        "ack"
    );
    let state = next_of(&mut ws, "state").await;
    assert_eq!(
        (state["state"].as_str(), state["reason"].as_str()),
        (Some("not_ready"), Some("lunch"))
    );
    assert_eq!(
        ask(&mut ws, json!({"type": "ready", "id": 7})).await["type"],
        "ack"
    );
    assert_eq!(next_of(&mut ws, "state").await["state"], "available");

    // Call commands for calls that are not this agent's change nothing.
    for (i, kind) in ["accept", "reject", "hangup", "hold", "unhold"]
        .iter()
        .enumerate()
    {
        let f = ask(
            &mut ws,
            json!({"type": kind, "id": 100 + i, "call": "someone-elses-call"}),
        )
        .await;
        assert_eq!(f["code"], "not_your_call", "{kind}: {f}");
    }
    let f = ask(
        &mut ws,
        json!({"type": "transfer", "id": 110, "call": "c1", "to": {"queue": "sales"}}),
    )
    .await;
    assert_eq!(f["code"], "not_your_call");
    let f = ask(
        &mut ws,
        json!({"type": "wrap_up", "id": 111, "call": "c1", "disposition": "resolved", "notes": "n"}),
    )
    .await;
    assert_eq!(f["code"], "not_your_call");
    let f = ask(
        &mut ws,
        json!({"type": "wrap_up", "id": 112, "call": "c1", "disposition": ""}),
    )
    .await;
    assert_eq!(f["code"], "bad_request");
    let f = ask(
        &mut ws,
        json!({"type": "dial", "id": 113, "number": "not a number"}),
    )
    .await;
    assert_eq!(f["code"], "bad_request");
    let f = ask(
        &mut ws,
        json!({"type": "dial", "id": 114, "number": "+4930123456"}),
    )
    .await;
    assert_eq!(f["code"], "unavailable", "no call control behind this desk");

    // Malformed frames: each answered with an error, none closes the socket.
    send(&mut ws, json!("just a string")).await;
    assert_eq!(next(&mut ws).await["code"], "bad_request");
    send(&mut ws, json!({"type": "teleport", "id": 9})).await;
    let f = next(&mut ws).await;
    assert_eq!((f["code"].as_str(), &f["id"]), (Some("bad_request"), &json!(9)));
    ws.send(Message::Text("{{{".into())).await.expect("send");
    assert_eq!(next(&mut ws).await["code"], "bad_request");
    ws.send(Message::Binary(vec![1u8, 2, 3].into()))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await["code"], "bad_request");
    let f = ask(&mut ws, json!({"type": "ping", "id": "p"})).await;
    assert_eq!(f["type"], "pong");

    assert_eq!(
        ask(&mut ws, json!({"type": "logout", "id": 8})).await["type"],
        "ack"
    );
    assert_eq!(next_of(&mut ws, "state").await["state"], "logged_out");
    let f = ask(&mut ws, json!({"type": "not_ready", "id": 10, "reason": "break"})).await;
    assert_eq!(f["code"], "illegal_transition");
}

#[tokio::test]
async fn a_second_desktop_replaces_the_first() {
    let s = start().await;
    let t = token(s.addr, "1001", "agent-one").await;
    let mut first = agent_socket(s.addr, &t).await;
    assert_eq!(next(&mut first).await["type"], "welcome");
    let mut second = agent_socket(s.addr, &t).await;
    assert_eq!(next(&mut second).await["type"], "welcome");
    assert_eq!(next(&mut first).await["type"], "replaced");
    // The new one is the live one.
    assert_eq!(
        ask(&mut second, json!({"type": "login", "id": 1})).await["type"],
        "ack"
    );
    assert_eq!(next_of(&mut second, "state").await["state"], "available");
}

#[tokio::test]
async fn the_wallboard_shows_every_agent_and_supervisors_can_force_states() {
    let s = start().await;
    let agent_token = token(s.addr, "1001", "agent-one").await;
    let mut agent = agent_socket(s.addr, &agent_token).await;
    assert_eq!(next(&mut agent).await["type"], "welcome");
    assert_eq!(
        ask(&mut agent, json!({"type": "login", "id": 1})).await["type"],
        "ack"
    );
    assert_eq!(next_of(&mut agent, "state").await["state"], "available");

    let sup = format!("Bearer {}", token(s.addr, "super", "supervisor").await);
    let mut board = connect(s.addr, "/ws/supervisor", &[("authorization", &sup)])
        .await
        .expect("upgrade");
    let welcome = next(&mut board).await;
    assert_eq!(
        (welcome["type"].as_str(), welcome["user"]["role"].as_str()),
        (Some("welcome"), Some("supervisor"))
    );
    // The first figures come at once, with both queues and both agents.
    let stats = next_of(&mut board, "stats").await;
    let agents: Vec<(String, String)> = stats["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .map(|a| {
            (
                a["agent"].as_str().unwrap_or("").to_string(),
                a["state"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(
        agents,
        [
            ("1001".into(), "available".into()),
            ("1002".into(), "logged_out".into())
        ]
    );
    assert_eq!(stats["queues"].as_array().map(|q| q.len()), Some(2));

    let f = ask(
        &mut board,
        json!({"type": "force_state", "id": 1, "agent": "1001", "state": "not_ready", "reason": "meeting"}),
    )
    .await;
    assert_eq!(f["type"], "ack", "{f}");
    let state = next_of(&mut agent, "state").await;
    assert_eq!(
        (state["state"].as_str(), state["reason"].as_str()),
        (Some("not_ready"), Some("meeting"))
    );
    // The wallboard's next figures show it.
    loop {
        let stats = next_of(&mut board, "stats").await;
        let row = stats["agents"]
            .as_array()
            .and_then(|a| a.iter().find(|r| r["agent"] == "1001").cloned());
        if row.as_ref().is_some_and(|r| r["state"] == "not_ready") {
            break;
        }
    }
    let f = ask(
        &mut board,
        json!({"type": "force_state", "id": 2, "agent": "9999", "state": "ready"}),
    )
    .await;
    assert_eq!(f["code"], "unknown_agent");
    let f = ask(
        &mut board,
        json!({"type": "force_state", "id": 3, "agent": "1002", "state": "ready"}),
    )
    .await;
    assert_eq!(
        f["code"], "illegal_transition",
        "a logged-out agent cannot be made ready"
    );
    let f = ask(
        &mut board,
        json!({"type": "logout_agent", "id": 4, "agent": "1001"}),
    )
    .await;
    assert_eq!(f["type"], "ack");
    assert_eq!(next_of(&mut agent, "state").await["state"], "logged_out");
    send(&mut board, json!({"type": "nonsense"})).await;
    assert_eq!(next_of(&mut board, "error").await["code"], "bad_request");

    let audit = s.crm.audit_log(Timestamp::from_millis(0)).await.expect("audit");
    let forced: Vec<(&str, &str, &str)> = audit
        .iter()
        .filter(|e| e.action == "agent.force_state")
        .map(|e| (e.actor.as_str(), e.entity_id.as_str(), e.detail.as_str()))
        .collect();
    assert_eq!(
        forced,
        [
            ("super", "1001", "not_ready(meeting)"),
            ("super", "1001", "logged_out")
        ]
    );
}

#[test]
fn every_route_and_request_type_is_documented() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let openapi = std::fs::read_to_string(docs.join("openapi.yaml")).expect("openapi.yaml");
    for path in agent_desk::api::PATHS {
        assert!(
            openapi.contains(&format!("  {path}:")),
            "{path} is not in docs/openapi.yaml"
        );
    }
    let cti = std::fs::read_to_string(docs.join("cti-protocol.md")).expect("cti-protocol.md");
    for kind in agent_desk::protocol::AgentRequest::TYPES
        .iter()
        .chain(&agent_desk::protocol::SupervisorRequest::TYPES)
    {
        assert!(
            cti.contains(&format!("`{kind}`")),
            "{kind} is not in docs/cti-protocol.md"
        );
    }
}

#[tokio::test]
async fn oversized_frames_are_refused_and_a_lapsed_session_closes_the_socket() {
    let s = start().await;
    let t = token(s.addr, "1001", "agent-one").await;
    let mut ws = agent_socket(s.addr, &t).await;
    assert_eq!(next(&mut ws).await["type"], "welcome");
    // Beyond the protocol's limit the frame is answered `too_large` and the socket stays open.
    let big = json!({"type": "ping", "id": 1, "pad": "x".repeat(70 * 1024)}).to_string();
    ws.send(Message::Text(big.into())).await.expect("send");
    let f = next_of(&mut ws, "error").await;
    assert_eq!(f["code"], "too_large", "{f}");
    let pong = ask(&mut ws, json!({"type": "ping", "id": 2})).await;
    assert_eq!(pong["type"], "pong", "the socket still works: {pong}");
    // Far beyond it the transport gives up (bounded memory per socket).
    let huge = json!({"type": "ping", "pad": "x".repeat(300 * 1024)}).to_string();
    let _ = ws.send(Message::Text(huge.into())).await;
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert_eq!(closed, Ok(true), "a huge frame ends the connection");

    let t = token(s.addr, "super", "supervisor").await;
    let bearer = format!("Bearer {t}");
    let mut board = connect(s.addr, "/ws/supervisor", &[("authorization", &bearer)])
        .await
        .expect("upgrade");
    let big = json!({"type": "ping", "id": 1, "pad": "x".repeat(70 * 1024)}).to_string();
    board.send(Message::Text(big.into())).await.expect("send");
    let f = next_of(&mut board, "error").await;
    assert_eq!(f["code"], "too_large", "{f}");
    let pong = ask(&mut board, json!({"type": "ping", "id": 2})).await;
    assert_eq!(pong["type"], "pong", "{pong}");

    // The session lapses while the socket is open: the server says so and closes.
    let short = start_with_ttl(Duration::from_secs(3)).await;
    let t = token(short.addr, "1001", "agent-one").await;
    let mut ws = agent_socket(short.addr, &t).await;
    assert_eq!(next(&mut ws).await["type"], "welcome");
    let f = next_of(&mut ws, "error").await;
    assert_eq!(f["code"], "session_expired");
}

#[tokio::test]
async fn the_demo_balance_webhook_answers_from_the_crm() {
    let s = start().await;
    let customer = crm_store::Customer {
        id: domain::CustomerId::new("cust-7").expect("id"),
        account_number: Some("1234567".into()),
        name: domain::Pii::new("Ann Example".into()),
        phones: vec![],
        email: None,
        tier: crm_store::Tier::Normal,
        account_manager: None,
        lifetime_value_cents: 4_250,
        notes: None,
    };
    s.crm
        .save_customer(&customer, "test", Timestamp::now_utc())
        .await
        .expect("customer");
    let body = json!({"account": "1234567", "customer.id": "cust-7"}).to_string();
    // Never without a credential: no session, a wrong token, a cookie from a foreign page.
    let (status, _, _) = request(s.addr, "POST", "/demo/balance", &[], &body).await;
    assert_eq!(status, 401);
    let wrong = [("authorization", "Bearer not-the-token")];
    let (status, _, _) = request(s.addr, "POST", "/demo/balance", &wrong, &body).await;
    assert_eq!(status, 401);
    let agent = token(s.addr, "1001", "agent-one").await;
    let cookie = format!("cc_session={agent}");
    let foreign = [("cookie", cookie.as_str()), ("origin", "http://evil.example")];
    let (status, _, _) = request(s.addr, "POST", "/demo/balance", &foreign, &body).await;
    assert_eq!(status, 403);
    // The IVR's service token, or a user's session.
    let service = [("authorization", "Bearer demo-service-token")];
    let (status, _, reply) = request(s.addr, "POST", "/demo/balance", &service, &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        serde_json::from_str::<Value>(&reply).expect("json")["balance"],
        42
    );
    let user = format!("Bearer {agent}");
    let (status, _, _) = request(
        s.addr,
        "POST",
        "/demo/balance",
        &[("authorization", &user)],
        &body,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = request(
        s.addr,
        "POST",
        "/demo/balance",
        &service,
        r#"{"customer.id":"nobody"}"#,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = request(s.addr, "POST", "/demo/balance", &service, "not json").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn logging_out_ends_the_open_sockets_of_that_session() {
    let s = start().await;
    let t = token(s.addr, "super", "supervisor").await;
    let bearer = format!("Bearer {t}");
    let mut board = connect(s.addr, "/ws/supervisor", &[("authorization", &bearer)])
        .await
        .expect("upgrade");
    assert_eq!(next(&mut board).await["type"], "welcome");
    let (status, _, _) = request(
        s.addr,
        "POST",
        "/api/v1/logout",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(status, 204);
    // Within one recheck period the socket says so (skipping figures pushed meanwhile).
    let f = next_of(&mut board, "error").await;
    assert_eq!(f["code"], "session_expired");
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let s = start().await;
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/agent"),
        ("GET", "/static/login.js"),
        ("GET", "/api/v1/me"),
        ("GET", "/no/such/page"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("POST", "/api/v1/login"),
    ] {
        let (status, headers, _) = request(s.addr, method, path, &[], "").await;
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let csp = get("content-security-policy");
        assert!(
            csp.contains("frame-ancestors 'none'")
                && csp.contains("script-src 'self'")
                && !csp.contains("unsafe-inline"),
            "{method} {path} ({status}): {csp:?}"
        );
        assert_eq!(get("x-frame-options"), "DENY", "{path}");
        assert_eq!(get("referrer-policy"), "no-referrer", "{path}");
        assert_eq!(get("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(
            get("strict-transport-security"),
            "",
            "plain HTTP: no HSTS ({path})"
        );
    }
    // No page carries inline script, style or handlers (the policy would block them).
    for page in ["/", "/agent", "/wallboard"] {
        let (_, _, html) = request(s.addr, "GET", page, &[], "").await;
        let lower = html.to_ascii_lowercase();
        assert!(
            !lower.contains("<script>") && !lower.contains("style=") && !lower.contains(" onclick="),
            "{page}"
        );
        assert!(!lower.contains("<style"), "{page}");
    }
}

#[tokio::test]
async fn cookie_authorised_changes_need_a_page_of_ours() {
    let s = start().await;
    let sup = token(s.addr, "super", "supervisor").await;
    let cookie = format!("cc_session={sup}");
    let ours = format!("http://{}", s.addr);
    // A forged form post from another site, a missing Origin, and an Origin of another port: refused.
    for origin in [
        Some("http://evil.example"),
        None,
        Some("null"),
        Some(&*format!("http://127.0.0.1:{}", s.addr.port() + 1)),
    ] {
        let mut headers = vec![("cookie", cookie.as_str())];
        if let Some(o) = origin {
            headers.push(("origin", o));
        }
        let (status, _, body) = request(s.addr, "POST", "/api/v1/campaigns/c1/pause", &headers, "").await;
        assert_eq!(status, 403, "{origin:?}: {body}");
        assert!(body.contains("cross_site"), "{body}");
        let (status, _, _) = request(s.addr, "POST", "/api/v1/logout", &headers, "").await;
        assert_eq!(status, 403, "logout is a change too ({origin:?})");
    }
    // From our own page it goes through (to the route's own answer).
    let (status, _, body) = request(
        s.addr,
        "POST",
        "/api/v1/campaigns/c1/pause",
        &[("cookie", &cookie), ("origin", &ours)],
        "",
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // Reads with the cookie need no Origin; bearer clients are not browsers.
    let (status, _, _) = request(s.addr, "GET", "/api/v1/me", &[("cookie", &cookie)], "").await;
    assert_eq!(status, 200);
    let bearer = format!("Bearer {sup}");
    let (status, _, _) = request(
        s.addr,
        "POST",
        "/api/v1/campaigns/c1/pause",
        &[("authorization", &bearer), ("origin", "http://evil.example")],
        "",
    )
    .await;
    assert_eq!(status, 404);
    // A foreign page cannot log a browser in to an account of its choosing.
    let body = json!({"user": "1001", "password": "agent-one"}).to_string();
    let (status, _, _) = request(
        s.addr,
        "POST",
        "/api/v1/login",
        &[("origin", "http://evil.example")],
        &body,
    )
    .await;
    assert_eq!(status, 403);
    let (status, headers, reply) =
        request(s.addr, "POST", "/api/v1/login", &[("origin", &ours)], &body).await;
    assert_eq!(status, 200, "{reply}");
    let cookie = headers
        .iter()
        .find(|(k, _)| k == "set-cookie")
        .map(|(_, v)| v.clone())
        .expect("cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && !cookie.contains("Secure"),
        "{cookie}"
    );
    // The socket upgrades are checked the same way.
    let cookie = format!("cc_session={sup}");
    assert_eq!(
        connect(
            s.addr,
            "/ws/supervisor",
            &[("cookie", &cookie), ("origin", "http://evil.example")]
        )
        .await
        .err(),
        Some(403)
    );
    assert_eq!(
        connect(s.addr, "/ws/supervisor", &[("cookie", &cookie)])
            .await
            .err(),
        Some(403)
    );
}

#[tokio::test]
async fn login_keeps_next_only_when_it_is_a_path_of_this_site() {
    let s = start().await;
    for (next, expected) in [
        (json!("/wallboard?view=1"), "/wallboard?view=1"),
        (json!("javascript:alert(1)"), "/agent"),
        (json!("//evil.example/"), "/agent"),
        (json!("/\\evil.example"), "/agent"),
        (json!("http://evil.example/"), "/agent"),
        (Value::Null, "/agent"),
    ] {
        let body = json!({"user": "1001", "password": "agent-one", "next": next}).to_string();
        let (status, _, reply) = request(s.addr, "POST", "/api/v1/login", &[], &body).await;
        assert_eq!(status, 200, "{reply}");
        let reply: Value = serde_json::from_str(&reply).expect("json");
        assert_eq!(reply["redirect"], expected, "{next}");
    }
}

fn customer(id: &str, phone: &str, account: &str) -> crm_store::Customer {
    crm_store::Customer {
        id: domain::CustomerId::new(id).expect("id"),
        account_number: Some(account.into()),
        name: domain::Pii::new(format!("Customer {id}")),
        phones: vec![domain::Pii::new(phone.into())],
        email: None,
        tier: crm_store::Tier::Normal,
        account_manager: None,
        lifetime_value_cents: 1_000,
        notes: None,
    }
}

#[tokio::test]
async fn an_agent_reads_only_the_customer_whose_call_is_on_their_desktop() {
    let s = start().await;
    let now = Timestamp::now_utc();
    for c in [
        customer("c-erika", "+4930123456", "ACC-1"),
        customer("c-max", "+4930999999", "ACC-2"),
    ] {
        s.crm.save_customer(&c, "test", now).await.expect("customer");
    }
    let agent = token(s.addr, "1001", "agent-one").await;
    let bearer = format!("Bearer {agent}");
    let get = |path: &'static str| {
        let bearer = bearer.clone();
        async move {
            let (status, _, body) = request(s.addr, "GET", path, &[("authorization", &bearer)], "").await;
            (status, body)
        }
    };
    assert_eq!(get("/api/v1/customers?phone=%2B4930123456").await.0, 403);

    // Erika calls: the offer (with her pop) reaches the agent's desktop.
    let mut ws = agent_socket(s.addr, &agent).await;
    assert_eq!(next(&mut ws).await["type"], "welcome");
    let card = s
        .crm
        .find_customer_by_phone("+4930123456")
        .await
        .expect("lookup")
        .expect("card");
    let call = domain::CallId::new("call-erika").expect("call id");
    let pop = Arc::new(call_control::desk::ScreenPop {
        call: call.clone(),
        direction: domain::Direction::Inbound,
        queue: Some(domain::QueueId::new("support").expect("queue")),
        caller: domain::Pii::new("+4930123456".into()),
        called: domain::Pii::new("800".into()),
        waited_ms: 1_000,
        explanation: "test".into(),
        customer: Some(card),
        ivr: None,
        campaign: None,
    });
    let (commands, _command_rx) = tokio::sync::mpsc::unbounded_channel();
    let agent_id = AgentId::new("1001").expect("id");
    s.desks.offer(&agent_id, pop, commands, now);
    assert_eq!(next_of(&mut ws, "offer").await["pop"]["call"], "call-erika");

    let (status, body) = get("/api/v1/customers?phone=%2B4930123456").await;
    assert_eq!(status, 200, "{body}");
    let shown: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(shown["customer"]["id"], "c-erika");
    assert_eq!(
        shown["customer"]["phones"][0], "+••••••••56",
        "agents see numbers masked"
    );
    assert_eq!(get("/api/v1/customers?account=ACC-1").await.0, 200);
    assert_eq!(get("/api/v1/customers/c-erika/interactions").await.0, 200);
    // Anyone else stays closed, existing or not.
    assert_eq!(get("/api/v1/customers?phone=%2B4930999999").await.0, 403);
    assert_eq!(get("/api/v1/customers?account=ACC-2").await.0, 403);
    assert_eq!(get("/api/v1/customers/c-max/interactions").await.0, 403);
    assert_eq!(get("/api/v1/customers?phone=%2B4930555555").await.0, 403);

    // Supervisors read anyone, numbers whole.
    let sup = format!("Bearer {}", token(s.addr, "super", "supervisor").await);
    let (status, _, body) = request(
        s.addr,
        "GET",
        "/api/v1/customers?account=ACC-2",
        &[("authorization", &sup)],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(body.contains("+4930999999"), "{body}");

    // The call ends: the record closes again.
    s.desks.release(&call, &agent_id);
    assert_eq!(next_of(&mut ws, "released").await["call"], "call-erika");
    assert_eq!(get("/api/v1/customers?phone=%2B4930123456").await.0, 403);

    // Every lookup was audited with its outcome, without the number.
    let log = s.crm.audit_log(now).await.expect("audit log");
    let lookups: Vec<_> = log
        .iter()
        .filter(|e| e.action == "customer.lookup" || e.action == "customer.history")
        .collect();
    assert_eq!(lookups.len(), 10, "{lookups:?}");
    assert!(
        lookups
            .iter()
            .any(|e| e.actor == "1001" && e.entity_id == "c-erika" && e.detail.ends_with("outcome=shown"))
    );
    assert!(
        lookups
            .iter()
            .any(|e| e.actor == "1001" && e.entity_id == "-" && e.detail.ends_with("outcome=forbidden"))
    );
    assert!(
        lookups.iter().all(|e| !e.detail.contains("4930")),
        "no numbers in the audit"
    );
}

#[tokio::test]
async fn customer_lookups_are_rate_limited_per_user() {
    let s = start().await;
    let sup = format!("Bearer {}", token(s.addr, "super", "supervisor").await);
    let mut limited = None;
    // The default burst is 20 and one more a second: a loop faster than that reaches the limit.
    for i in 0..500 {
        let (status, headers, _) = request(
            s.addr,
            "GET",
            "/api/v1/customers?account=NOPE",
            &[("authorization", &sup)],
            "",
        )
        .await;
        if status == 429 {
            assert!(headers.iter().any(|(k, _)| k == "retry-after"));
            limited = Some(i);
            break;
        }
        assert_eq!(status, 404);
    }
    assert!(limited.is_some_and(|i| i >= 20), "{limited:?}");
    // Another user is not affected.
    let other = format!("Bearer {}", token(s.addr, "1002", "agent-two").await);
    let (status, _, _) = request(
        s.addr,
        "GET",
        "/api/v1/customers?account=NOPE",
        &[("authorization", &other)],
        "",
    )
    .await;
    assert_eq!(status, 403);
}
