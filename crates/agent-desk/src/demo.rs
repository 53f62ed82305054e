//! Services the demo IVR calls, so the embedded default works out of the box: `POST /demo/balance`
//! answers the balance webhook of `ivr-scripts/main.toml` from the CRM (the customer's lifetime
//! value, in whole euros). Off unless `[desk] demo_services` is set; a real deployment points its
//! flows at its billing system instead.

use crate::DeskServices;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
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
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> (StatusCode, Json<serde_json::Value>) {
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
