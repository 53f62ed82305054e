//! The platform's only HTTP server: health (`/healthz`, `/readyz`), Prometheus metrics (`/metrics`),
//! and, with the desk services attached, the REST API under `/api/v1` ([`api`]), the agent CTI socket
//! `/ws/agent` ([`agent_ws`]), the supervisor wallboard socket `/ws/supervisor` ([`supervisor_ws`])
//! and the static web UI ([`ui`]). Every API and socket request is authorised by the session's role
//! ([`auth`]).

pub mod agent_ws;
pub mod api;
pub mod auth;
mod demo;
pub mod protocol;
pub mod supervisor_ws;
pub mod ui;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use call_control::{AcdHandle, DeskHub};
use crm_store::CrmStore;
use domain::Timestamp;
use state_store::StateStore;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

pub use auth::{Auth, AuthConfig, Session};

/// What the desk works with, built by the binary.
pub struct DeskServices {
    pub crm: CrmStore,
    pub state: StateStore,
    pub acd: AcdHandle,
    pub desks: DeskHub,
    pub auth: Auth,
    /// Places agents' calls (click-to-dial); None on a desk without call control.
    pub calls: Option<call_control::CallControl>,
    /// Serve the demo IVR's helper services (`/demo/balance`).
    pub demo_services: bool,
    /// The outbound campaigns running on this node (live figures, pause / resume / stop).
    pub campaigns: Vec<call_control::CampaignHandle>,
}

/// Shared state of the HTTP edge.
#[derive(Clone)]
pub struct Http {
    telemetry: telemetry::Telemetry,
    ready: Arc<AtomicBool>,
    desk: Option<Arc<DeskServices>>,
}

impl Http {
    /// `ready` is raised once every part of the node is serving and lowered when it drains.
    pub fn new(telemetry: telemetry::Telemetry, ready: Arc<AtomicBool>) -> Self {
        Self {
            telemetry,
            ready,
            desk: None,
        }
    }

    /// Serves the API, the CTI and wallboard sockets and the web UI over these services.
    pub fn with_desk(mut self, desk: DeskServices) -> Self {
        self.desk = Some(Arc::new(desk));
        self
    }

    /// The routes.
    pub fn router(self) -> Router {
        let health = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self.clone());
        match &self.desk {
            Some(desk) => health
                .merge(if desk.demo_services {
                    demo::routes(desk.clone())
                } else {
                    Router::new()
                })
                .merge(api::routes(desk.clone()))
                .merge(agent_ws::routes(desk.clone()))
                .merge(supervisor_ws::routes(desk.clone()))
                .merge(ui::routes()),
            None => health,
        }
    }

    /// Binds `listen` and serves until `shutdown` fires. Returns the bound address.
    pub async fn serve(
        self,
        listen: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let app = self.router().into_make_service_with_connect_info::<SocketAddr>();
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
        });
        Ok((addr, handle))
    }
}

async fn readyz(State(http): State<Http>) -> impl IntoResponse {
    if http.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

async fn metrics(State(http): State<Http>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        http.telemetry.encode(),
    )
}

/// The name of the session cookie the browser UI uses.
pub const SESSION_COOKIE: &str = "cc_session";

/// An API error: a status and a JSON body `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "log in first (session missing or expired)",
        )
    }
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "your role does not allow this",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after_secs
            && let Ok(v) = header::HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

/// How the request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// `Authorization: Bearer <token>` (API clients).
    Bearer,
    /// The session cookie (the browser UI).
    Cookie,
}

/// The session token a request carries, and how.
pub fn request_token(headers: &HeaderMap) -> Option<(String, Credential)> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(token) = v.strip_prefix("Bearer ")
    {
        return Some((token.trim().to_string(), Credential::Bearer));
    }
    for v in headers.get_all(header::COOKIE) {
        let Ok(text) = v.to_str() else { continue };
        for pair in text.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=')
                && name == SESSION_COOKIE
            {
                return Some((value.to_string(), Credential::Cookie));
            }
        }
    }
    None
}

/// The live session of a request, or 401.
pub async fn authenticate(
    desk: &DeskServices,
    headers: &HeaderMap,
) -> Result<(Session, Credential), ApiError> {
    let (token, how) = request_token(headers).ok_or_else(ApiError::unauthorized)?;
    let session = desk
        .auth
        .session(&token, Timestamp::now_utc())
        .await
        .ok_or_else(ApiError::unauthorized)?;
    Ok((session, how))
}

/// How often an open socket checks its session is still there (a logout elsewhere ends it).
pub const SESSION_RECHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Watches an open socket's session: [`SessionWatch::lapsed`] resolves when its expiry time passes
/// or, checked every [`SESSION_RECHECK`], when it was ended by a logout.
pub(crate) struct SessionWatch {
    token: String,
    expiry: std::pin::Pin<Box<tokio::time::Sleep>>,
    recheck: tokio::time::Interval,
}

impl SessionWatch {
    pub(crate) fn new(token: String, session: &Session) -> Self {
        let left_ms = session
            .expires_at
            .as_millis()
            .saturating_sub(Timestamp::now_utc().as_millis())
            .max(0) as u64;
        let start = tokio::time::Instant::now() + SESSION_RECHECK;
        Self {
            token,
            expiry: Box::pin(tokio::time::sleep(std::time::Duration::from_millis(left_ms))),
            recheck: tokio::time::interval_at(start, SESSION_RECHECK),
        }
    }

    /// Cancel-safe: its state lives in `self`, so a `select!` may drop and re-create the future.
    pub(crate) async fn lapsed(&mut self, desk: &DeskServices) {
        loop {
            tokio::select! {
                _ = &mut self.expiry => return,
                _ = self.recheck.tick() => {
                    if desk.auth.session(&self.token, Timestamp::now_utc()).await.is_none() {
                        return;
                    }
                }
            }
        }
    }
}

/// A browser sends cookies with any page's WebSocket: with cookie credentials, the socket must come
/// from a page of this server (cross-site WebSocket hijacking).
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // Not a browser: nothing to hijack.
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .unwrap_or("");
    origin_host == host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_bearer_or_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(request_token(&h), None);
        h.insert(
            header::COOKIE,
            "a=b; cc_session=tok1; c=d".parse().expect("header"),
        );
        assert_eq!(request_token(&h), Some(("tok1".into(), Credential::Cookie)));
        h.insert(header::AUTHORIZATION, "Bearer tok2".parse().expect("header"));
        assert_eq!(request_token(&h), Some(("tok2".into(), Credential::Bearer)));
    }

    #[test]
    fn cookie_sockets_must_come_from_our_pages() {
        let mut h = HeaderMap::new();
        assert!(same_origin(&h));
        h.insert(header::HOST, "127.0.0.1:8080".parse().expect("header"));
        h.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().expect("header"));
        assert!(same_origin(&h));
        h.insert(header::ORIGIN, "http://evil.example".parse().expect("header"));
        assert!(!same_origin(&h));
    }
}
