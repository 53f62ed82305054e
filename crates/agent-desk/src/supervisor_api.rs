//! The supervisors' and admins' REST API (documented in `docs/openapi.yaml`, listed in [`PATHS`]):
//! historical reports over a date range in a time zone (JSON or CSV) and the day so far, interaction
//! search with each interaction's timeline and its recording (played with HTTP ranges, every
//! playback audited), customer admin (list, create, edit, merge; validated, audited), the users'
//! names, a user's preferred language, the wallboard's thresholds, and "not ready after this call".
//!
//! Query strings are parsed into types first ([`Period::parse`] and friends); a bad one is a 400
//! with a code the pages translate.

use crate::supervision::Supervision;
use crate::{ApiError, DeskServices, Session, authenticate};
use acd::{AgentState, ReasonCode};
use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use crm_store::{
    Customer, CustomerFilter, InteractionFilter, IntervalLength, ServiceLevelFormula, ServiceLevelSpec, Tier,
};
use domain::{AgentId, CustomerId, InteractionId, Pii, Timestamp};
use serde::Deserialize;
use std::sync::Arc;

/// Every path this module serves (each is documented in `docs/openapi.yaml`; a test checks).
pub const PATHS: [&str; 13] = [
    "/api/v1/reports/{kind}",
    "/api/v1/reports/today",
    "/api/v1/interactions",
    "/api/v1/interactions/{id}",
    "/api/v1/interactions/{id}/recording",
    "/api/v1/admin/customers",
    "/api/v1/admin/customers/{id}",
    "/api/v1/admin/customers/{id}/merge",
    "/api/v1/users",
    "/api/v1/me/language",
    "/api/v1/wallboard/config",
    "/api/v1/agents/{id}/not-ready-after-call",
    "/api/v1/agents/live",
];

#[derive(Clone)]
struct Ctx {
    desk: Arc<DeskServices>,
    sup: Arc<Supervision>,
}

type S = State<Ctx>;

pub(crate) fn routes(desk: Arc<DeskServices>, sup: Arc<Supervision>) -> Router {
    let [
        report,
        today,
        interactions,
        interaction,
        recording,
        customers,
        customer_path,
        merge,
        users,
        language,
        wallboard,
        after_call,
        live,
    ] = PATHS;
    Router::new()
        .route(today, get(report_today))
        .route(report, get(report_kind))
        .route(interactions, get(search))
        .route(interaction, get(interaction_detail))
        .route(recording, get(play_recording))
        .route(customers, get(list_customers).post(create_customer))
        .route(customer_path, get(get_customer).put(update_customer))
        .route(merge, post(merge_customers))
        .route(users, get(list_users))
        .route(language, get(get_language).put(set_language))
        .route(wallboard, get(wallboard_config))
        .route(after_call, post(not_ready_after_call))
        .route(live, get(live_agents))
        .with_state(Ctx { desk, sup })
}

fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

fn store_error(e: crm_store::StoreError) -> ApiError {
    match e {
        crm_store::StoreError::Invalid(m) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
        e => {
            tracing::warn!(error = %e, "CRM request failed");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the CRM store is unavailable",
            )
        }
    }
}

async fn supervisor(desk: &DeskServices, headers: &HeaderMap) -> Result<Session, ApiError> {
    let (session, _) = authenticate(desk, headers).await?;
    if session.is_supervisor() {
        Ok(session)
    } else {
        Err(ApiError::forbidden())
    }
}

async fn audit(desk: &DeskServices, session: &Session, action: &str, entity: &str, id: &str, detail: String) {
    let entry = crm_store::AuditEntry {
        at: Timestamp::now_utc(),
        actor: session.user.as_str().to_string(),
        action: action.into(),
        entity: entity.into(),
        entity_id: id.into(),
        detail,
    };
    if let Err(e) = desk.crm.audit(&entry).await {
        tracing::warn!(error = %e, "audit entry not written");
    }
}

// ---------------------------------------------------------------------------------------------
// Periods and report parameters

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD`, checked (month 1-12, day within the month).
pub fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.trim().splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: i64 = parts.next()?.parse().ok()?;
    let d: i64 = parts.next()?.parse().ok()?;
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || d < 1 {
        return None;
    }
    let next_month = if m == 12 {
        days_from_civil(y + 1, 1, 1)
    } else {
        days_from_civil(y, m + 1, 1)
    };
    let days = days_from_civil(y, m, d);
    (days < next_month).then_some(days)
}

/// A report's period: `[from, to)` and the time zone its dates and intervals are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: Timestamp,
    pub to: Timestamp,
    /// Minutes east of UTC (China: 480).
    pub tz_minutes: i32,
}

/// The longest period a report covers.
pub const MAX_PERIOD_DAYS: i64 = 92;

impl Period {
    /// From dates `from` and `to` (inclusive) in the zone `tz` (minutes east of UTC, -840..=840).
    pub fn parse(
        from: Option<&str>,
        to: Option<&str>,
        tz: Option<&str>,
        now: Timestamp,
    ) -> Result<Period, ApiError> {
        let tz_minutes = match tz {
            None | Some("") => 0,
            Some(t) => t
                .parse::<i32>()
                .ok()
                .filter(|m| (-840..=840).contains(m))
                .ok_or_else(|| bad("bad_tz", "tz is minutes east of UTC, -840 to 840"))?,
        };
        let offset = i64::from(tz_minutes) * 60_000;
        let today = (now.as_millis() + offset).div_euclid(86_400_000);
        let day = |text: Option<&str>, what: &'static str| -> Result<i64, ApiError> {
            match text {
                None | Some("") => Ok(today),
                Some(t) => parse_date(t).ok_or_else(|| bad(what, "dates are YYYY-MM-DD")),
            }
        };
        let first = day(from, "bad_from")?;
        let last = day(to, "bad_to")?;
        if last < first {
            return Err(bad("bad_range", "the period ends before it starts"));
        }
        if last - first >= MAX_PERIOD_DAYS {
            return Err(bad(
                "bad_range",
                format!("a report covers at most {MAX_PERIOD_DAYS} days"),
            ));
        }
        Ok(Period {
            from: Timestamp::from_millis(first * 86_400_000 - offset),
            to: Timestamp::from_millis((last + 1) * 86_400_000 - offset),
            tz_minutes,
        })
    }

    /// Today in zone `tz`, from its midnight to `now`.
    pub fn today(tz_minutes: i32, now: Timestamp) -> Period {
        let offset = i64::from(tz_minutes) * 60_000;
        let day = (now.as_millis() + offset).div_euclid(86_400_000);
        Period {
            from: Timestamp::from_millis(day * 86_400_000 - offset),
            to: Timestamp::from_millis(now.as_millis() + 1),
            tz_minutes,
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"from_ms": self.from.as_millis(), "to_ms": self.to.as_millis(), "tz_minutes": self.tz_minutes})
    }
}

#[derive(Debug, Deserialize, Default)]
struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    tz: Option<String>,
    interval: Option<u32>,
    sl_seconds: Option<i64>,
    format: Option<String>,
}

fn interval_of(q: &ReportQuery) -> Result<IntervalLength, ApiError> {
    IntervalLength::from_minutes(q.interval.unwrap_or(60))
        .ok_or_else(|| bad("bad_interval", "interval is 15, 30 or 60"))
}

fn spec_of(q: &ReportQuery) -> Result<ServiceLevelSpec, ApiError> {
    let secs = q.sl_seconds.unwrap_or(20);
    if !(1..=3600).contains(&secs) {
        return Err(bad("bad_sl", "sl_seconds is 1 to 3600"));
    }
    Ok(ServiceLevelSpec {
        formula: ServiceLevelFormula::AnsweredWithinOverAnswered,
        threshold_ms: secs * 1000,
    })
}

fn csv_response(name: &str, body: String) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}.csv\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

async fn report_kind(
    State(ctx): S,
    headers: HeaderMap,
    Path(kind): Path<String>,
    query: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    supervisor(&ctx.desk, &headers).await?;
    let Query(q) = query.map_err(|e| bad("bad_request", e.body_text()))?;
    let period = Period::parse(
        q.from.as_deref(),
        q.to.as_deref(),
        q.tz.as_deref(),
        Timestamp::now_utc(),
    )?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(_) => return Err(bad("bad_format", "format is json or csv")),
    };
    let crm = &ctx.desk.crm;
    let (from, to) = (period.from, period.to);
    let (json, text) = match kind.as_str() {
        "interval" => {
            // Intervals start at the zone's quarter hours (every zone is a whole quarter hour off UTC).
            let r = crm
                .interval_report(from, to, interval_of(&q)?, spec_of(&q)?)
                .await
                .map_err(store_error)?;
            (
                serde_json::to_value(&r),
                if csv { Some(r.to_csv()) } else { None },
            )
        }
        "queues" => {
            let r = crm
                .queue_report(from, to, spec_of(&q)?)
                .await
                .map_err(store_error)?;
            (
                serde_json::to_value(&r),
                if csv { Some(r.to_csv()) } else { None },
            )
        }
        "agents" => {
            let r = crm.agent_report(from, to).await.map_err(store_error)?;
            (
                serde_json::to_value(&r),
                if csv { Some(r.to_csv()) } else { None },
            )
        }
        "surveys" => {
            let r = crm.survey_report(from, to).await.map_err(store_error)?;
            (
                serde_json::to_value(&r),
                if csv { Some(r.to_csv()) } else { None },
            )
        }
        "campaigns" => {
            let r = crm.campaign_report(from, to).await.map_err(store_error)?;
            (
                serde_json::to_value(&r),
                if csv { Some(r.to_csv()) } else { None },
            )
        }
        "states" => {
            let rows = crm
                .state_series(from, to, interval_of(&q)?)
                .await
                .map_err(store_error)?;
            let text = if csv {
                Some(crm_store::reports::rows_to_csv(&rows))
            } else {
                None
            };
            (serde_json::to_value(&rows), text)
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such report",
            ));
        }
    };
    if let Some(text) = text {
        return Ok(csv_response(&kind, text.map_err(store_error)?));
    }
    let json =
        json.map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(Json(serde_json::json!({"period": period.json(), "report": json})).into_response())
}

/// The day so far (the wallboard's charts and totals): 15-minute intervals, per-queue totals,
/// agents by state and the agent report, from the CRM, so they survive a restart.
async fn report_today(
    State(ctx): S,
    headers: HeaderMap,
    query: Result<Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    supervisor(&ctx.desk, &headers).await?;
    let Query(q) = query.map_err(|e| bad("bad_request", e.body_text()))?;
    let tz = Period::parse(None, None, q.tz.as_deref(), Timestamp::now_utc())?.tz_minutes;
    let period = Period::today(tz, Timestamp::now_utc());
    let spec = spec_of(&q)?;
    let interval = IntervalLength::from_minutes(q.interval.unwrap_or(15))
        .ok_or_else(|| bad("bad_interval", "interval is 15, 30 or 60"))?;
    let crm = &ctx.desk.crm;
    let (from, to) = (period.from, period.to);
    let intervals = crm
        .interval_report(from, to, interval, spec)
        .await
        .map_err(store_error)?;
    let queues = crm.queue_report(from, to, spec).await.map_err(store_error)?;
    let states = crm.state_series(from, to, interval).await.map_err(store_error)?;
    let agents = crm.agent_report(from, to).await.map_err(store_error)?;
    Ok(Json(serde_json::json!({
        "period": period.json(),
        "intervals": intervals.rows,
        "queues": queues.rows,
        "states": states,
        "agents": agents.rows,
    }))
    .into_response())
}

// ---------------------------------------------------------------------------------------------
// Interaction search, timeline, recordings

#[derive(Debug, Deserialize, Default)]
struct SearchQuery {
    number: Option<String>,
    customer: Option<String>,
    agent: Option<String>,
    queue: Option<String>,
    disposition: Option<String>,
    from: Option<String>,
    to: Option<String>,
    tz: Option<String>,
    limit: Option<i64>,
}

fn nonempty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

async fn search(
    State(ctx): S,
    headers: HeaderMap,
    query: Result<Query<SearchQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let session = supervisor(&ctx.desk, &headers).await?;
    let Query(q) = query.map_err(|e| bad("bad_request", e.body_text()))?;
    let dated = nonempty(&q.from).is_some() || nonempty(&q.to).is_some();
    let period = if dated {
        let from = nonempty(&q.from).or(nonempty(&q.to));
        let to = nonempty(&q.to).or(nonempty(&q.from));
        Some(Period::parse(from, to, q.tz.as_deref(), Timestamp::now_utc())?)
    } else {
        None
    };
    let filter = InteractionFilter {
        number: nonempty(&q.number).map(str::to_string),
        customer: nonempty(&q.customer)
            .map(CustomerId::new)
            .transpose()
            .map_err(|e| bad("bad_customer", e.to_string()))?,
        agent: nonempty(&q.agent)
            .map(AgentId::new)
            .transpose()
            .map_err(|e| bad("bad_agent", e.to_string()))?,
        queue: nonempty(&q.queue).map(str::to_string),
        disposition: nonempty(&q.disposition).map(str::to_string),
        from: period.map(|p| p.from),
        to: period.map(|p| p.to),
        limit: q.limit,
    };
    let found = ctx
        .desk
        .crm
        .search_interactions(&filter)
        .await
        .map_err(store_error)?;
    // Searching by number or customer reads personal data: audited, without the number.
    audit(
        &ctx.desk,
        &session,
        "interaction.search",
        "interaction",
        "-",
        format!(
            "by_number={} by_customer={} found={}",
            filter.number.is_some(),
            filter.customer.is_some(),
            found.len()
        ),
    )
    .await;
    Ok(Json(serde_json::json!({"interactions": found})).into_response())
}

async fn interaction_detail(
    State(ctx): S,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    supervisor(&ctx.desk, &headers).await?;
    let id = InteractionId::new(&id).map_err(|e| bad("bad_request", e.to_string()))?;
    let Some(row) = ctx.desk.crm.interaction(&id).await.map_err(store_error)? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such interaction",
        ));
    };
    let timeline = ctx
        .desk
        .crm
        .interaction_timeline(&id)
        .await
        .map_err(store_error)?;
    Ok(Json(serde_json::json!({
        "interaction": {
            "id": row.id, "channel": row.channel, "direction": row.direction, "customer_id": row.customer_id,
            "caller_number": row.caller_number, "called_number": row.called_number,
            "arrived_at": row.arrived_at, "queued_at": row.queued_at, "answered_at": row.answered_at,
            "ended_at": row.ended_at, "wrapped_at": row.wrapped_at, "ivr_path": row.ivr_path,
            "queue_id": row.queue_id, "agent_id": row.agent_id, "wait_ms": row.wait_ms, "talk_ms": row.talk_ms,
            "hold_ms": row.hold_ms, "wrap_ms": row.wrap_ms, "abandoned": row.abandoned,
            "disposition": row.disposition, "notes": row.notes, "survey_score": row.survey_score,
            "ended_by": row.ended_by, "has_recording": row.recording_path.is_some(),
        },
        "timeline": timeline,
    }))
    .into_response())
}

/// A byte range of a file of `len` bytes: `bytes=a-b`, `bytes=a-` or `bytes=-n` (one range).
pub fn parse_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            if n == 0 {
                return None;
            }
            (len.saturating_sub(n), len - 1)
        }
        (a, "") => (a.parse().ok()?, len - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(len - 1)),
    };
    (start <= end && start < len).then_some((start, end))
}

async fn play_recording(
    State(ctx): S,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = supervisor(&ctx.desk, &headers).await?;
    let id = InteractionId::new(&id).map_err(|e| bad("bad_request", e.to_string()))?;
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "no_recording",
            "this interaction has no recording",
        )
    };
    let Some(dir) = &ctx.sup.recordings_dir else {
        return Err(not_found());
    };
    let row = ctx
        .desk
        .crm
        .interaction(&id)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    let path = row.recording_path.ok_or_else(not_found)?;
    // Only files under the recordings folder are served, whatever the row says.
    let (Ok(dir), Ok(file)) = (std::fs::canonicalize(dir), std::fs::canonicalize(&path)) else {
        return Err(not_found());
    };
    if !file.starts_with(&dir) {
        return Err(not_found());
    }
    let bytes = tokio::fs::read(&file).await.map_err(|_| not_found())?;
    let len = bytes.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|r| parse_range(r, len).ok_or(r.to_string()));
    // Every playback is audited (the first request of a playback and every range after it).
    let detail = match &range {
        Some(Ok((a, b))) => format!("bytes={a}-{b}"),
        Some(Err(_)) => "bytes=unsatisfiable".into(),
        None => "whole".into(),
    };
    audit(
        &ctx.desk,
        &session,
        "recording.play",
        "interaction",
        id.as_str(),
        detail,
    )
    .await;
    let mut response = match range {
        None => (StatusCode::OK, Body::from(bytes)).into_response(),
        Some(Err(_)) => {
            let mut r = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
        Some(Ok((a, b))) => {
            let part = bytes
                .get(a as usize..=b as usize)
                .map(<[u8]>::to_vec)
                .unwrap_or_default();
            let mut r = (StatusCode::PARTIAL_CONTENT, Body::from(part)).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {a}-{b}/{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            r
        }
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("audio/wav"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// Customer admin

#[derive(Debug, Deserialize, Default)]
struct CustomerListQuery {
    text: Option<String>,
    tier: Option<String>,
    manager: Option<String>,
}

async fn list_customers(
    State(ctx): S,
    headers: HeaderMap,
    query: Result<Query<CustomerListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let session = supervisor(&ctx.desk, &headers).await?;
    let Query(q) = query.map_err(|e| bad("bad_request", e.body_text()))?;
    let filter = CustomerFilter {
        text: nonempty(&q.text).map(str::to_string),
        tier: nonempty(&q.tier)
            .map(str::parse::<Tier>)
            .transpose()
            .map_err(|e| bad("invalid_tier", e.to_string()))?,
        account_manager: nonempty(&q.manager)
            .map(AgentId::new)
            .transpose()
            .map_err(|e| bad("bad_agent", e.to_string()))?,
        limit: None,
    };
    let found = ctx.desk.crm.list_customers(&filter).await.map_err(store_error)?;
    audit(
        &ctx.desk,
        &session,
        "customer.list",
        "customer",
        "-",
        format!("found={}", found.len()),
    )
    .await;
    Ok(Json(serde_json::json!({"customers": found})).into_response())
}

/// A customer as the admin page sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerForm {
    #[serde(default)]
    id: Option<String>,
    name: String,
    #[serde(default)]
    account_number: Option<String>,
    #[serde(default)]
    phones: Vec<String>,
    #[serde(default)]
    email: Option<String>,
    tier: String,
    #[serde(default)]
    account_manager: Option<String>,
    #[serde(default)]
    notes: Option<String>,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

/// Checks a form and turns it into a customer (the id given, or the form's, or a new one).
async fn customer_of(ctx: &Ctx, form: CustomerForm, id: Option<CustomerId>) -> Result<Customer, ApiError> {
    let name = form.name.trim().to_string();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(invalid("invalid_name", "the name is 1 to 200 characters"));
    }
    let mut phones = Vec::new();
    for (i, raw) in form
        .phones
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .enumerate()
    {
        let n = crm_store::normalize_phone(raw, ctx.desk.crm.default_country())
            .map_err(|e| invalid("invalid_phone", format!("phone {}: {e}", i + 1)))?;
        phones.push(Pii::new(n.into_string()));
    }
    let email = nonempty(&form.email).map(str::to_string);
    if let Some(e) = &email
        && (!e.contains('@') || e.len() > 254 || e.contains(char::is_whitespace))
    {
        return Err(invalid("invalid_email", "the e-mail address is not one"));
    }
    let tier = form
        .tier
        .parse::<Tier>()
        .map_err(|e| invalid("invalid_tier", e.to_string()))?;
    let account_manager = match nonempty(&form.account_manager) {
        None => None,
        Some(m) => {
            let id = AgentId::new(m).map_err(|e| invalid("unknown_account_manager", e.to_string()))?;
            if ctx.desk.crm.user(&id).await.map_err(store_error)?.is_none() {
                return Err(invalid("unknown_account_manager", "no user has that login"));
            }
            Some(id)
        }
    };
    let id = match id.or(nonempty(&form.id)
        .map(CustomerId::new)
        .transpose()
        .map_err(|e| invalid("invalid_id", e.to_string()))?)
    {
        Some(id) => id,
        None => CustomerId::new(format!("cust-{:016x}", rand::random::<u64>()))
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?,
    };
    let account_number = nonempty(&form.account_number).map(str::to_string);
    if let Some(acc) = &account_number
        && let Some(other) = ctx
            .desk
            .crm
            .find_customer_by_account(acc)
            .await
            .map_err(store_error)?
        && other.customer.id != id
    {
        return Err(invalid(
            "duplicate_account",
            "another customer has that account number",
        ));
    }
    Ok(Customer {
        id,
        account_number,
        name: Pii::new(name),
        phones,
        email: email.map(Pii::new),
        tier,
        account_manager,
        lifetime_value_cents: 0,
        notes: nonempty(&form.notes).map(|n| Pii::new(n.to_string())),
    })
}

fn form_of(body: Result<Json<CustomerForm>, JsonRejection>) -> Result<CustomerForm, ApiError> {
    body.map(|Json(f)| f)
        .map_err(|e| bad("bad_request", e.body_text()))
}

async fn create_customer(
    State(ctx): S,
    headers: HeaderMap,
    body: Result<Json<CustomerForm>, JsonRejection>,
) -> Result<Response, ApiError> {
    let session = supervisor(&ctx.desk, &headers).await?;
    let form = form_of(body)?;
    let customer = customer_of(&ctx, form, None).await?;
    if ctx
        .desk
        .crm
        .customer(&customer.id)
        .await
        .map_err(store_error)?
        .is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "duplicate_id",
            "a customer has that id",
        ));
    }
    ctx.desk
        .crm
        .save_customer(&customer, session.user.as_str(), Timestamp::now_utc())
        .await
        .map_err(store_error)?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"customer": customer})),
    )
        .into_response())
}

async fn get_customer(
    State(ctx): S,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = supervisor(&ctx.desk, &headers).await?;
    let id = CustomerId::new(&id).map_err(|e| bad("bad_request", e.to_string()))?;
    let customer = ctx.desk.crm.customer(&id).await.map_err(store_error)?;
    let merged_into = ctx.desk.crm.merged_into(&id).await.map_err(store_error)?;
    audit(
        &ctx.desk,
        &session,
        "customer.read",
        "customer",
        id.as_str(),
        String::new(),
    )
    .await;
    match customer {
        Some(c) => Ok(Json(serde_json::json!({"customer": c, "merged_into": merged_into})).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such customer",
        )),
    }
}

async fn update_customer(
    State(ctx): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<CustomerForm>, JsonRejection>,
) -> Result<Response, ApiError> {
    let session = supervisor(&ctx.desk, &headers).await?;
    let id = CustomerId::new(&id).map_err(|e| bad("bad_request", e.to_string()))?;
    let Some(old) = ctx.desk.crm.customer(&id).await.map_err(store_error)? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such customer",
        ));
    };
    let form = form_of(body)?;
    let mut customer = customer_of(&ctx, form, Some(id)).await?;
    customer.lifetime_value_cents = old.lifetime_value_cents;
    ctx.desk
        .crm
        .save_customer(&customer, session.user.as_str(), Timestamp::now_utc())
        .await
        .map_err(store_error)?;
    Ok(Json(serde_json::json!({"customer": customer})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeForm {
    duplicate: String,
}

async fn merge_customers(
    State(ctx): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<MergeForm>, JsonRejection>,
) -> Result<Response, ApiError> {
    let session = supervisor(&ctx.desk, &headers).await?;
    let keep = CustomerId::new(&id).map_err(|e| bad("bad_request", e.to_string()))?;
    let Json(form) = body.map_err(|e| bad("bad_request", e.body_text()))?;
    let dup = CustomerId::new(form.duplicate.trim()).map_err(|e| invalid("invalid_id", e.to_string()))?;
    ctx.desk
        .crm
        .merge_customers(&keep, &dup, session.user.as_str(), Timestamp::now_utc())
        .await
        .map_err(|e| match e {
            crm_store::StoreError::Invalid(m) => invalid("merge_refused", m),
            e => store_error(e),
        })?;
    let customer = ctx.desk.crm.customer(&keep).await.map_err(store_error)?;
    Ok(Json(serde_json::json!({"customer": customer, "merged": dup})).into_response())
}

// ---------------------------------------------------------------------------------------------
// Users, languages, wallboard settings, not ready after the call

async fn list_users(State(ctx): S, headers: HeaderMap) -> Result<Response, ApiError> {
    supervisor(&ctx.desk, &headers).await?;
    let users = ctx.desk.crm.list_users().await.map_err(store_error)?;
    let users: Vec<_> = users
        .into_iter()
        .map(|(id, name, role)| serde_json::json!({"id": id, "name": name.expose(), "role": role}))
        .collect();
    Ok(Json(serde_json::json!({"users": users})).into_response())
}

async fn get_language(State(ctx): S, headers: HeaderMap) -> Result<Response, ApiError> {
    let (session, _) = authenticate(&ctx.desk, &headers).await?;
    let language = ctx
        .desk
        .crm
        .user_language(&session.user)
        .await
        .map_err(store_error)?;
    Ok(Json(serde_json::json!({"language": language})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LanguageForm {
    language: Option<String>,
}

/// Any user sets their own language (`null`: follow the browser).
async fn set_language(
    State(ctx): S,
    headers: HeaderMap,
    body: Result<Json<LanguageForm>, JsonRejection>,
) -> Result<Response, ApiError> {
    let (session, _) = authenticate(&ctx.desk, &headers).await?;
    let Json(form) = body.map_err(|e| bad("bad_request", e.body_text()))?;
    let lang = form.language.as_deref().filter(|l| !l.is_empty());
    if let Some(l) = lang
        && !crm_store::admin::LANGUAGES.contains(&l)
    {
        return Err(invalid(
            "invalid_language",
            format!("use one of {}", crm_store::admin::LANGUAGES.join(", ")),
        ));
    }
    ctx.desk
        .crm
        .set_user_language(&session.user, lang, session.user.as_str(), Timestamp::now_utc())
        .await
        .map_err(store_error)?;
    Ok(Json(serde_json::json!({"language": lang})).into_response())
}

async fn wallboard_config(State(ctx): S, headers: HeaderMap) -> Result<Response, ApiError> {
    supervisor(&ctx.desk, &headers).await?;
    Ok(Json(serde_json::json!({
        "wallboard": ctx.sup.wallboard,
        "not_ready_after_call": ctx.sup.after_call_agents(),
    }))
    .into_response())
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AfterCallForm {
    #[serde(default)]
    reason: Option<String>,
}

/// Marks an agent to be made not ready when their call ends; an agent not on a call is made not
/// ready now. Audited.
async fn not_ready_after_call(
    State(ctx): S,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<AfterCallForm>>,
) -> Result<Response, ApiError> {
    let session = supervisor(&ctx.desk, &headers).await?;
    let agent = AgentId::new(&id).map_err(|e| bad("bad_agent", e.to_string()))?;
    let form = body.map(|Json(f)| f).unwrap_or_default();
    let reason = ReasonCode::new(form.reason.unwrap_or_else(|| "supervisor".into()))
        .map_err(|e| bad("bad_reason", e.to_string()))?;
    let k = ctx.desk.acd.kpis().await.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the ACD is not running",
        )
    })?;
    let Some(state) = k
        .agents
        .iter()
        .find(|a| a.agent == agent)
        .map(|a| a.state.clone())
    else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such agent"));
    };
    let when = match state {
        AgentState::OnCall | AgentState::Reserved => {
            ctx.sup.not_ready_after_call(&agent, reason.clone());
            "after_call"
        }
        AgentState::LoggedOut => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "logged_out",
                "the agent is logged out",
            ));
        }
        _ => {
            ctx.desk
                .acd
                .change_agent(&agent, call_control::AgentChange::NotReady(reason.clone()))
                .await
                .map_err(|e| ApiError::new(StatusCode::CONFLICT, "illegal_transition", e.to_string()))?;
            "now"
        }
    };
    audit(
        &ctx.desk,
        &session,
        "agent.not_ready_after_call",
        "agent",
        agent.as_str(),
        format!("reason={reason} when={when}"),
    )
    .await;
    Ok(Json(serde_json::json!({"agent": agent, "when": when})).into_response())
}

/// Every agent with their name, state, time in state, and the phase of the call on their desktop
/// (ringing, connected, held, wrap-up), for the wallboard's tiles.
async fn live_agents(State(ctx): S, headers: HeaderMap) -> Result<Response, ApiError> {
    supervisor(&ctx.desk, &headers).await?;
    let k = ctx.desk.acd.kpis().await.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the ACD is not running",
        )
    })?;
    let names: std::collections::HashMap<AgentId, String> = ctx
        .desk
        .crm
        .list_users()
        .await
        .map_err(store_error)?
        .into_iter()
        .map(|(id, name, _)| (id, name.expose().clone()))
        .collect();
    let after = ctx.sup.after_call_agents();
    // The call on each agent's desktop (this node's calls); the newest phase when several.
    let mut phases: std::collections::HashMap<AgentId, (call_control::desk::CallPhase, Timestamp)> =
        std::collections::HashMap::new();
    for (agent, phase, since) in ctx.desk.desks.phases() {
        let newer = phases.get(&agent).is_none_or(|(_, s)| since > *s);
        if newer {
            phases.insert(agent, (phase, since));
        }
    }
    // Whether a call offered now could reach each logged-in agent: through the browser softphone of
    // an attached desktop, else only through a registered SIP phone.
    let mut unreachable = std::collections::HashMap::new();
    for a in k.agents.iter().filter(|a| a.state != acd::AgentState::LoggedOut) {
        let media = ctx.desk.desks.desk_media(&a.agent).unwrap_or_default();
        let r = crate::agent_ws::reachability(&ctx.desk, &a.agent, media).await;
        if let Some(reason) = r.reason.filter(|_| !r.ok) {
            unreachable.insert(a.agent.clone(), reason);
        }
    }
    let agents: Vec<_> = k
        .agents
        .iter()
        .map(|a| {
            let (state, reason) = crate::supervision::state_name(&a.state);
            serde_json::json!({
                "unreachable": unreachable.get(&a.agent),
                "agent": a.agent, "name": names.get(&a.agent), "state": state, "reason": reason,
                "since": a.since, "handled": a.counters.handled, "occupancy": a.occupancy,
                "not_ready_after_call": after.contains(&a.agent),
                "call_phase": phases.get(&a.agent).map(|(p, _)| p),
                "phase_since": phases.get(&a.agent).map(|(_, s)| s),
            })
        })
        .collect();
    Ok(Json(serde_json::json!({"at": k.at, "agents": agents})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_and_periods_follow_the_zone() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2024-02-29"), Some(19_782));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2024-13-01"), None);
        assert_eq!(parse_date("2024-1"), None);
        let now = Timestamp::from_millis(19_782 * 86_400_000 + 3_600_000); // 01:00 UTC
        let p = Period::parse(Some("2024-02-29"), Some("2024-02-29"), Some("480"), now)
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(p.from.as_millis(), 19_782 * 86_400_000 - 8 * 3_600_000);
        assert_eq!(p.to.as_millis() - p.from.as_millis(), 86_400_000);
        assert!(Period::parse(Some("2024-03-02"), Some("2024-03-01"), None, now).is_err());
        assert!(Period::parse(None, None, Some("9999"), now).is_err());
        let today = Period::today(480, now);
        assert_eq!(today.from.as_millis(), 19_782 * 86_400_000 - 8 * 3_600_000);
    }

    #[test]
    fn ranges_parse() {
        assert_eq!(parse_range("bytes=0-99", 1000), Some((0, 99)));
        assert_eq!(parse_range("bytes=900-", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=-100", 1000), Some((900, 999)));
        assert_eq!(parse_range("bytes=0-5000", 1000), Some((0, 999)));
        assert_eq!(parse_range("bytes=1000-", 1000), None);
        assert_eq!(parse_range("bytes=5-1", 1000), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), None);
        assert_eq!(parse_range("items=0-1", 1000), None);
    }

    #[test]
    fn every_path_is_documented() {
        let openapi = include_str!("../../../docs/openapi.yaml");
        for path in PATHS {
            assert!(
                openapi.contains(&format!("  {path}:")),
                "{path} is not in docs/openapi.yaml"
            );
        }
    }
}
