//! The platform's only HTTP server. So far: health (`/healthz`, `/readyz`) and Prometheus metrics
//! (`/metrics`). The agent CTI protocol, wallboard, admin API and web UI are built on this router.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_util::sync::CancellationToken;

/// Shared state of the HTTP edge.
#[derive(Clone)]
pub struct Http {
    telemetry: telemetry::Telemetry,
    ready: Arc<AtomicBool>,
}

impl Http {
    /// `ready` is raised once every part of the node is serving and lowered when it drains.
    pub fn new(telemetry: telemetry::Telemetry, ready: Arc<AtomicBool>) -> Self {
        Self { telemetry, ready }
    }

    /// The routes.
    pub fn router(self) -> Router {
        Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(self)
    }

    /// Binds `listen` and serves until `shutdown` fires. Returns the bound address through `bound`.
    pub async fn serve(
        self,
        listen: SocketAddr,
        shutdown: CancellationToken,
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let app = self.router();
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
