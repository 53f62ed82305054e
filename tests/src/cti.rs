//! A CTI WebSocket client for system tests: logs in over HTTP, opens `/ws/agent` or
//! `/ws/supervisor`, and reads frames by type. Frames that arrive while waiting for another kind are
//! kept, so a test never depends on the order of frames that come from different places.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a test waits for an expected frame.
pub const FRAME_WAIT: Duration = Duration::from_secs(20);

/// One open desk socket.
pub struct CtiClient {
    ws: Socket,
    kept: VecDeque<Value>,
}

impl CtiClient {
    /// Opens `path` (`/ws/agent?media=phone`, `/ws/supervisor`) at `http` with a bearer token.
    pub async fn connect(http: SocketAddr, path: &str, token: &str) -> CtiClient {
        let mut req = format!("ws://{http}{path}")
            .into_client_request()
            .expect("request");
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        let (ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("websocket upgrade");
        let mut client = CtiClient {
            ws,
            kept: VecDeque::new(),
        };
        // The server attaches the desktop before it sends `welcome`: once it is here, every offer
        // and change from now on reaches this socket (the upgrade alone does not promise that).
        let welcome = client.next_of("welcome").await;
        client.kept.push_front(welcome);
        client
    }

    async fn read(&mut self, deadline: tokio::time::Instant) -> Value {
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("a frame in time")
                .expect("socket open")
                .expect("frame");
            if let Message::Text(t) = msg {
                return serde_json::from_str(t.as_str()).expect("JSON frame");
            }
        }
    }

    /// The first frame (kept or new) for which `wanted` holds; others stay for later.
    pub async fn next_where(&mut self, wanted: impl Fn(&Value) -> bool) -> Value {
        if let Some(i) = self.kept.iter().position(&wanted) {
            return self.kept.remove(i).expect("index in range");
        }
        let deadline = tokio::time::Instant::now() + FRAME_WAIT;
        loop {
            let f = self.read(deadline).await;
            if wanted(&f) {
                return f;
            }
            self.kept.push_back(f);
        }
    }

    /// The next frame (kept ones first), or None when none arrives before `deadline`.
    pub async fn next_before(&mut self, deadline: tokio::time::Instant) -> Option<Value> {
        if let Some(f) = self.kept.pop_front() {
            return Some(f);
        }
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?
                .expect("socket open")
                .expect("frame");
            if let Message::Text(t) = msg {
                return Some(serde_json::from_str(t.as_str()).expect("JSON frame"));
            }
        }
    }

    /// The next frame of type `kind`.
    pub async fn next_of(&mut self, kind: &str) -> Value {
        self.next_where(|f| f["type"] == kind).await
    }

    /// Sends a request (which must have an `id`) and returns its `ack` or `error`.
    pub async fn ask(&mut self, frame: Value) -> Value {
        let id = frame["id"].clone();
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("send");
        self.next_where(|f| (f["type"] == "ack" || f["type"] == "error") && f["id"] == id)
            .await
    }
}
