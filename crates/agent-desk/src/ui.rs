//! The web UI: static files compiled into the binary (no build step, nothing to install). The pages
//! talk to the API and the sockets; they hold no secrets (the session is an HttpOnly cookie). No
//! page has inline script, style or event handlers: the Content-Security-Policy (see [`crate::edge`])
//! allows only these files.

use axum::Router;
use axum::http::header;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;

const INDEX: &str = include_str!("../static/index.html");
const LOGIN_JS: &str = include_str!("../static/login.js");
const AGENT: &str = include_str!("../static/agent.html");
const AGENT_JS: &str = include_str!("../static/agent.js");
const WALLBOARD: &str = include_str!("../static/wallboard.html");
const WALLBOARD_JS: &str = include_str!("../static/wallboard.js");
const STYLE: &str = include_str!("../static/style.css");

fn page(body: &'static str, content_type: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}

pub(crate) fn routes() -> Router {
    const HTML: &str = "text/html; charset=utf-8";
    const JS: &str = "text/javascript; charset=utf-8";
    Router::new()
        .route("/", get(|| async { page(INDEX, HTML) }))
        .route("/login", get(|| async { Redirect::to("/") }))
        .route("/agent", get(|| async { page(AGENT, HTML) }))
        .route("/wallboard", get(|| async { page(WALLBOARD, HTML) }))
        .route("/static/login.js", get(|| async { page(LOGIN_JS, JS) }))
        .route("/static/agent.js", get(|| async { page(AGENT_JS, JS) }))
        .route("/static/wallboard.js", get(|| async { page(WALLBOARD_JS, JS) }))
        .route(
            "/static/style.css",
            get(|| async { page(STYLE, "text/css; charset=utf-8") }),
        )
}
