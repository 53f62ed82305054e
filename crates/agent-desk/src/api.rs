//! The REST API under `/api/v1` (documented in `docs/openapi.yaml`): login and logout, the caller's
//! own session, live queue and agent figures (supervisors), outbound campaigns' live figures and
//! their pause / resume / stop (supervisors, audited), and customers' records and history (agents
//! and up).

use crate::access::{self, Decision, Lookup};
use crate::auth::LoginError;
use crate::edge::{Client, cookie_attributes, safe_next};
use crate::protocol::mask_number;
use crate::protocol::{AgentInfo, SupervisorFrame};
use crate::{ApiError, Credential, DeskServices, SESSION_COOKIE, authenticate, request_token};
use axum::extract::rejection::JsonRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crm_store::CustomerCard;
use domain::{CustomerId, Timestamp};
use serde::Deserialize;
use std::sync::Arc;

type Desk = State<Arc<DeskServices>>;

/// Every path of the API (each is documented in `docs/openapi.yaml`; a test checks).
pub const PATHS: [&str; 10] = [
    "/api/v1/login",
    "/api/v1/logout",
    "/api/v1/me",
    "/api/v1/queues",
    "/api/v1/agents",
    "/api/v1/stats",
    "/api/v1/customers",
    "/api/v1/customers/{id}/interactions",
    "/api/v1/campaigns",
    "/api/v1/campaigns/{id}/{action}",
];

pub(crate) fn routes(desk: Arc<DeskServices>) -> Router {
    let [
        login_path,
        logout_path,
        me_path,
        queues_path,
        agents_path,
        stats_path,
        customers_path,
        history_path,
        campaigns_path,
        campaign_action_path,
    ] = PATHS;
    Router::new()
        .route(login_path, post(login))
        .route(logout_path, post(logout))
        .route(me_path, get(me))
        .route(queues_path, get(queues))
        .route(agents_path, get(agents))
        .route(stats_path, get(stats))
        .route(customers_path, get(find_customer))
        .route(history_path, get(customer_interactions))
        .route(campaigns_path, get(campaigns))
        .route(campaign_action_path, post(campaign_action))
        .with_state(desk)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    user: String,
    password: String,
    /// Where the login page wants to go afterwards; kept only if it is a path of this site.
    #[serde(default)]
    next: Option<String>,
}

fn bad_json(e: JsonRejection) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text())
}

async fn login(
    State(desk): Desk,
    Extension(client): Extension<Client>,
    body: Result<Json<LoginRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(req) = body.map_err(bad_json)?;
    if req.user.len() > 64 || req.password.len() > 256 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "user or password too long",
        ));
    }
    let now = Timestamp::now_utc();
    let (token, session) = desk
        .auth
        .login(&req.user, &req.password, client.ip, now)
        .await
        .map_err(|e| match e {
            LoginError::BadCredentials => {
                ApiError::new(StatusCode::UNAUTHORIZED, "bad_credentials", e.to_string())
            }
            LoginError::LockedOut { retry_after_secs } => ApiError {
                retry_after_secs: Some(retry_after_secs),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "locked_out", e.to_string())
            },
            LoginError::Busy => ApiError {
                retry_after_secs: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
            },
            LoginError::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e.to_string())
            }
        })?;
    let max_age = desk.auth.config().session_ttl.as_secs();
    let cookie = format!(
        "{SESSION_COOKIE}={token}; {}; Max-Age={max_age}",
        cookie_attributes(&client)
    );
    let home = if session.role == crm_store::Role::Agent {
        "/agent"
    } else {
        "/wallboard"
    };
    let redirect = req.next.as_deref().and_then(safe_next).unwrap_or(home);
    let body = serde_json::json!({
        "token": token,
        "redirect": redirect,
        "user": AgentInfo { id: session.user.clone(), name: session.name.expose().clone(), role: session.role },
        "expires_at": session.expires_at,
    });
    let mut response = (StatusCode::OK, Json(body)).into_response();
    if let Ok(v) = header::HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

async fn logout(
    State(desk): Desk,
    Extension(client): Extension<Client>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let (token, _) = request_token(&headers).ok_or_else(ApiError::unauthorized)?;
    desk.auth.logout(&token).await;
    let clear = format!("{SESSION_COOKIE}=; {}; Max-Age=0", cookie_attributes(&client));
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = header::HeaderValue::from_str(&clear) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(response)
}

async fn me(State(desk): Desk, headers: HeaderMap) -> Result<Response, ApiError> {
    let (session, how) = authenticate(&desk, &headers).await?;
    Ok(Json(serde_json::json!({
        "user": AgentInfo { id: session.user.clone(), name: session.name.expose().clone(), role: session.role },
        "expires_at": session.expires_at,
        "via": match how { Credential::Bearer => "bearer", Credential::Cookie => "cookie" },
    }))
    .into_response())
}

async fn supervisor(desk: &DeskServices, headers: &HeaderMap) -> Result<crate::Session, ApiError> {
    let (session, _) = authenticate(desk, headers).await?;
    if session.is_supervisor() {
        Ok(session)
    } else {
        Err(ApiError::forbidden())
    }
}

async fn snapshot(desk: &DeskServices) -> Result<acd::KpiSnapshot, ApiError> {
    desk.acd.kpis().await.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the ACD is not running",
        )
    })
}

async fn queues(State(desk): Desk, headers: HeaderMap) -> Result<Response, ApiError> {
    supervisor(&desk, &headers).await?;
    let k = snapshot(&desk).await?;
    Ok(Json(serde_json::json!({"at": k.at, "queues": k.queues})).into_response())
}

async fn agents(State(desk): Desk, headers: HeaderMap) -> Result<Response, ApiError> {
    supervisor(&desk, &headers).await?;
    let k = snapshot(&desk).await?;
    match SupervisorFrame::stats(&k, |c| desk.desks.call_node(c)) {
        SupervisorFrame::Stats { at, agents, .. } => {
            Ok(Json(serde_json::json!({"at": at, "agents": agents})).into_response())
        }
        _ => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "unexpected frame",
        )),
    }
}

async fn stats(State(desk): Desk, headers: HeaderMap) -> Result<Response, ApiError> {
    supervisor(&desk, &headers).await?;
    let k = snapshot(&desk).await?;
    Ok(Json(SupervisorFrame::stats(&k, |c| desk.desks.call_node(c))).into_response())
}

async fn campaigns(State(desk): Desk, headers: HeaderMap) -> Result<Response, ApiError> {
    supervisor(&desk, &headers).await?;
    let figures: Vec<_> = desk.campaigns.iter().map(|c| c.stats()).collect();
    Ok(Json(serde_json::json!({"campaigns": figures})).into_response())
}

/// Pauses, resumes or stops a campaign; audited with the supervisor as actor.
async fn campaign_action(
    State(desk): Desk,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let session = supervisor(&desk, &headers).await?;
    let action: call_control::CampaignAction = action
        .parse()
        .map_err(|e: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e))?;
    let Some(campaign) = desk.campaigns.iter().find(|c| c.id.as_str() == id) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such campaign on this node",
        ));
    };
    let state = campaign
        .control(action)
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "illegal_transition", e))?;
    let state = format!("{state:?}").to_lowercase();
    let entry = crm_store::AuditEntry {
        at: Timestamp::now_utc(),
        actor: session.user.as_str().to_string(),
        action: format!("campaign.{}", format!("{action:?}").to_lowercase()),
        entity: "campaign".into(),
        entity_id: campaign.id.to_string(),
        detail: format!("state={state}"),
    };
    if let Err(e) = desk.crm.audit(&entry).await {
        tracing::warn!(error = %e, "audit entry not written");
    }
    Ok(Json(serde_json::json!({"campaign": campaign.id, "state": state})).into_response())
}

#[derive(Debug, Deserialize)]
struct CustomerQuery {
    phone: Option<String>,
    account: Option<String>,
}

fn store_error(e: crm_store::StoreError) -> ApiError {
    tracing::warn!(error = %e, "CRM request failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the CRM store is unavailable",
    )
}

/// The rate limit, audit and decision every customer lookup goes through; `found` is only read
/// when the user may ask at all. Returns the record to show (numbers masked where the role says).
async fn guarded_lookup<F, Fut>(
    desk: &DeskServices,
    session: &crate::Session,
    lookup: Lookup,
    action: &'static str,
    found: F,
) -> Result<CustomerCard, ApiError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<Option<CustomerCard>, crm_store::StoreError>>,
{
    let now = Timestamp::now_utc();
    let policy = desk.customers.of(session.role);
    let bucket = state_store::TokenBucket::new(
        desk.customers.lookups_burst.max(1),
        desk.customers.lookups_per_sec.max(1),
    )
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let key = format!("customer-lookups:{}", session.user);
    let allowed = desk.state.rate_take(&key, bucket, 1, now).await.map_err(|e| {
        tracing::warn!(error = %e, "customer lookup limit unreadable");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "try again")
    })?;
    let by = match &lookup {
        Lookup::Phone(_) => "phone",
        Lookup::Account(_) => "account",
        Lookup::Id(_) => "id",
    };
    let audit = |entity_id: String, outcome: &str| crm_store::AuditEntry {
        at: now,
        actor: session.user.as_str().to_string(),
        action: action.into(),
        entity: "customer".into(),
        entity_id,
        detail: format!("by={by} outcome={outcome}"),
    };
    if !allowed.allowed {
        desk.auth.metrics().customer_lookup("rate_limited");
        if let Err(e) = desk.crm.audit(&audit("-".into(), "rate_limited")).await {
            tracing::warn!(error = %e, "audit entry not written");
        }
        return Err(ApiError {
            retry_after_secs: Some(allowed.retry_after_ms.div_ceil(1000).max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many customer lookups; wait a moment",
            )
        });
    }
    let shown = access::shown_to(&desk.desks, &session.user, desk.crm.default_country());
    // An agent with nothing on their desktop is refused without reading the store.
    let card = if policy.read_any_customer || shown.iter().any(|s| s.live) {
        found().await.map_err(store_error)?
    } else {
        None
    };
    let decision = access::decide(policy, &shown, &lookup, card.as_ref());
    let entity_id = card
        .as_ref()
        .filter(|_| decision == Decision::Show)
        .map_or_else(|| "-".to_string(), |c| c.customer.id.to_string());
    let outcome = match decision {
        Decision::Show => "shown",
        Decision::NotFound => "not_found",
        Decision::Forbidden => "forbidden",
    };
    desk.auth.metrics().customer_lookup(outcome);
    // Every lookup is audited, refused ones too; the detail names no number.
    if let Err(e) = desk.crm.audit(&audit(entity_id, outcome)).await {
        tracing::warn!(error = %e, "audit entry not written");
    }
    match (decision, card) {
        (Decision::Show, Some(mut card)) => {
            if !policy.full_numbers {
                for phone in &mut card.customer.phones {
                    *phone = domain::Pii::new(mask_number(phone.expose()));
                }
            }
            Ok(card)
        }
        (Decision::NotFound, _) | (Decision::Show, None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such customer",
        )),
        (Decision::Forbidden, _) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "not_your_customer",
            "customer records are open while their call is on your desktop",
        )),
    }
}

async fn find_customer(
    State(desk): Desk,
    headers: HeaderMap,
    query: Result<Query<CustomerQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let (session, _) = authenticate(&desk, &headers).await?;
    let Query(q) = query.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    let card = match (q.phone, q.account) {
        (Some(phone), None) => {
            let number = crm_store::normalize_phone(&phone, desk.crm.default_country())
                .ok()
                .map(|n| n.as_str().to_string());
            let crm = desk.crm.clone();
            guarded_lookup(
                &desk,
                &session,
                Lookup::Phone(number),
                "customer.lookup",
                || async move { crm.find_customer_by_phone(&phone).await },
            )
            .await?
        }
        (None, Some(account)) => {
            let crm = desk.crm.clone();
            let key = account.trim().to_string();
            guarded_lookup(
                &desk,
                &session,
                Lookup::Account(key),
                "customer.lookup",
                || async move { crm.find_customer_by_account(&account).await },
            )
            .await?
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "give exactly one of phone= or account=",
            ));
        }
    };
    Ok(Json(card).into_response())
}

async fn customer_interactions(
    State(desk): Desk,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (session, _) = authenticate(&desk, &headers).await?;
    let id = CustomerId::new(&id)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    let crm = desk.crm.clone();
    let wanted = id.clone();
    guarded_lookup(
        &desk,
        &session,
        Lookup::Id(id.clone()),
        "customer.history",
        || async move {
            let customer = crm.customer(&wanted).await?;
            Ok::<_, crm_store::StoreError>(customer.map(|customer| CustomerCard {
                customer,
                recent: Vec::new(),
                queue_priority: 0,
            }))
        },
    )
    .await?;
    let history = desk.crm.customer_history(&id, None).await.map_err(store_error)?;
    Ok(Json(serde_json::json!({"customer": id, "interactions": history})).into_response())
}
