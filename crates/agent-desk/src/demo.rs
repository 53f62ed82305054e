//! Services the demo IVR calls, so the embedded default works out of the box: `POST /demo/balance`
//! answers the balance webhook of `ivr-scripts/main.toml` from the CRM (the customer's lifetime
//! value, in whole euros). Served only in demo mode (`[desk] demo_services = true`), and never
//! without a credential: a live session (any role; a cookie only from our own pages, see
//! [`crate::edge`]) or the node's demo service token as `Authorization: Bearer`, which the binary
//! makes at start for its own IVR. A real deployment points its flows at its billing system.

use crate::DeskServices;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use domain::CustomerId;
use std::sync::Arc;

pub(crate) fn routes(desk: Arc<DeskServices>) -> Router {
    Router::new()
        .route("/demo/balance", post(balance))
        .with_state(desk)
}

/// The IVR posts the call's variables; `customer.id` names the customer the flow looked up.
async fn balance(
    State(desk): State<Arc<DeskServices>>,
    headers: HeaderMap,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> (StatusCode, Json<serde_json::Value>) {
    if !authorised(&desk, &headers).await {
        return (
            StatusCode::UNAUTHORIZED,
            Json(serde_json::json!({"error": "log in first, or present the demo service token"})),
        );
    }
    let Ok(Json(vars)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "a JSON object"})),
        );
    };
    let id = vars
        .get("customer.id")
        .and_then(|v| v.as_str())
        .and_then(|s| CustomerId::new(s).ok());
    let Some(id) = id else {
        return (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "no customer"})),
        );
    };
    match desk.crm.customer(&id).await {
        Ok(Some(c)) => (
            StatusCode::OK,
            Json(serde_json::json!({"balance": c.lifetime_value_cents / 100})),
        ),
        Ok(None) => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "no customer"})),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "the CRM store is unavailable"})),
        ),
    }
}

/// A live session, or the demo service token (compared as hashes: timing tells nothing of it).
async fn authorised(desk: &DeskServices, headers: &HeaderMap) -> bool {
    use sha2::{Digest, Sha256};
    let Some((token, how)) = crate::request_token(headers) else {
        return false;
    };
    if how == crate::Credential::Bearer
        && let Some(service) = &desk.demo_token
        && Sha256::digest(token.as_bytes()) == Sha256::digest(service.as_bytes())
    {
        return true;
    }
    crate::authenticate(desk, headers).await.is_ok()
}

/// A fresh random service token (32 bytes, hex) for the node's own IVR to call the demo services.
pub fn new_service_token() -> String {
    let mut raw = [0u8; 32];
    rand::fill(&mut raw);
    raw.iter().map(|b| format!("{b:02x}")).collect()
}
