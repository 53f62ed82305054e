//! The platform's only HTTP server: health (`/healthz`, `/readyz`), Prometheus metrics (`/metrics`),
//! and, with the desk services attached, the REST API under `/api/v1` ([`api`]), the agent CTI socket
//! `/ws/agent` ([`agent_ws`]), the supervisor wallboard socket `/ws/supervisor` ([`supervisor_ws`])
//! and the static web UI ([`ui`]); supervisors' reports, search, recordings and customer admin are
//! under [`supervisor_api`]. Every API and socket request is authorised by the session's role
//! ([`auth`]). In front of every route the edge ([`edge`]) resolves the client behind trusted
//! proxies, refuses cross-site requests a cookie would authorise, and adds the security headers.

pub mod access;
pub mod agent_ws;
pub mod api;
pub mod auth;
pub mod demo;
pub mod edge;
pub mod hasher;
pub mod protocol;
pub mod supervision;
pub mod supervisor_api;
pub mod supervisor_ws;
pub mod throttle;
pub mod tls;
pub mod ui;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use call_control::{AcdHandle, DeskHub};
use crm_store::CrmStore;
use domain::Timestamp;
pub use edge::{Client, EdgeConfig, Peer};
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
    /// Demo mode: serve the demo IVR's helper services (`/demo/balance`), to sessions and to the
    /// holder of `demo_token`.
    pub demo_services: bool,
    /// The token the node's own IVR presents to the demo services (`Authorization: Bearer`).
    pub demo_token: Option<String>,
    /// The outbound campaigns running on this node (live figures, pause / resume / stop).
    pub campaigns: Vec<call_control::CampaignHandle>,
    /// Who may read which customer records, and how often.
    pub customers: access::CustomerPolicy,
    /// Disposition codes, not-ready reasons and each agent's queues, for the agent desktop.
    pub desktop: Arc<protocol::DesktopSettings>,
}

/// Shared state of the HTTP edge.
#[derive(Clone)]
pub struct Http {
    telemetry: telemetry::Telemetry,
    ready: Arc<AtomicBool>,
    desk: Option<Arc<DeskServices>>,
    edge: Arc<EdgeConfig>,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    supervision: Arc<supervision::Supervision>,
}

impl Http {
    /// `ready` is raised once every part of the node is serving and lowered when it drains.
    pub fn new(telemetry: telemetry::Telemetry, ready: Arc<AtomicBool>) -> Self {
        Self {
            telemetry,
            ready,
            desk: None,
            edge: Arc::new(EdgeConfig::default()),
            tls: None,
            supervision: Arc::new(supervision::Supervision::default()),
        }
    }

    /// The supervisor side's settings (wallboard thresholds, recordings folder), shared with the
    /// state-history task ([`supervision::spawn_state_history`]).
    pub fn with_supervision(mut self, supervision: Arc<supervision::Supervision>) -> Self {
        self.supervision = supervision;
        self
    }

    /// Serves HTTPS and WSS with this TLS configuration (see [`tls::server_config`]).
    pub fn with_tls(mut self, tls: Arc<tokio_rustls::rustls::ServerConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Trusted proxies and extra allowed origins (`[http]`).
    pub fn with_edge(mut self, edge: EdgeConfig) -> Self {
        self.edge = Arc::new(edge);
        self
    }

    /// Serves the API, the CTI and wallboard sockets and the web UI over these services.
    pub fn with_desk(mut self, desk: DeskServices) -> Self {
        desk.auth.metrics().register(&self.telemetry);
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
        let edge = edge::Edge {
            config: self.edge.clone(),
        };
        let routes = match &self.desk {
            Some(desk) => health
                .merge(if desk.demo_services {
                    demo::routes(desk.clone())
                } else {
                    Router::new()
                })
                .merge(api::routes(desk.clone()))
                .merge(supervisor_api::routes(desk.clone(), self.supervision.clone()))
                .merge(agent_ws::routes(desk.clone()))
                .merge(supervisor_ws::routes(desk.clone()))
                .merge(ui::routes()),
            None => health,
        };
        routes.layer(axum::middleware::from_fn_with_state(edge, edge::guard))
    }

    /// Binds `listen` and serves (over TLS when configured) until `shutdown` fires. Returns the
    /// bound address.
    pub async fn serve(
        self,
        listen: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let tls = self.tls.clone();
        let app = self.router().into_make_service_with_connect_info::<Peer>();
        let handle = match tls {
            Some(config) => {
                let listener = tls::TlsListener::new(listener, config)?;
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app)
                        .with_graceful_shutdown(shutdown.cancelled_owned())
                        .await;
                })
            }
            None => tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown.cancelled_owned())
                    .await;
            }),
        };
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
                    match desk.auth.check_session(&self.token, Timestamp::now_utc()).await {
                        Ok(Some(_)) => {}
                        Ok(None) => return,
                        // Checked again at the next tick; the session's own expiry still ends it.
                        // Debug, not warn: every open desktop would log this every 5 s while the
                        // store is away, and the store's own failures are logged where they occur.
                        Err(error) => tracing::debug!(%error, "the desktop's session could not be checked; it stays"),
                    }
                }
            }
        }
    }
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
}
