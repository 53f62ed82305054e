//! `/ws/supervisor`: the live wallboard. Supervisors and admins only. The server pushes a `stats`
//! frame (every queue's figures, every agent's state and time in state) whenever the ACD publishes
//! new figures, at most every 250 ms and at least once a second; supervisors can force an agent ready
//! or not ready and log an agent out. Every such change is written to the audit log. On a node that
//! runs outbound campaigns a `campaigns` frame carries their live figures (at once, then at most once a
//! second when they change).

use crate::agent_ws::acd_refusal;
use crate::protocol::{
    AgentInfo, ForcedState, MAX_FRAME_BYTES, PROTOCOL_VERSION, SupervisorFrame, SupervisorRequest,
    TRANSPORT_MAX_BYTES, codes,
};
use crate::{ApiError, DeskServices, Session, SessionWatch, authenticate, request_token};
use acd::ReasonCode;
use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use call_control::AgentChange;
use call_control::desk::AgentCommand;
use domain::Timestamp;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use tracing::{Instrument, info_span, warn};

pub(crate) fn routes(desk: Arc<DeskServices>) -> Router {
    Router::new()
        .route("/ws/supervisor", get(upgrade))
        .with_state(desk)
}

async fn upgrade(
    State(desk): State<Arc<DeskServices>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // The edge has refused a cookie-authorised upgrade from a foreign page already.
    let (session, _) = authenticate(&desk, &headers).await?;
    if !session.is_supervisor() {
        return Err(ApiError::forbidden());
    }
    let token = request_token(&headers).map(|(t, _)| t).unwrap_or_default();
    Ok(ws
        .max_message_size(TRANSPORT_MAX_BYTES)
        .max_frame_size(TRANSPORT_MAX_BYTES)
        .on_upgrade(move |socket| {
            let span = info_span!("wallboard", user = %session.user);
            run(socket, desk, session, token).instrument(span)
        }))
}

fn text(frame: &SupervisorFrame) -> String {
    serde_json::to_string(frame)
        .unwrap_or_else(|_| r#"{"type":"error","code":"internal","message":"unserialisable"}"#.into())
}

async fn run(socket: WebSocket, desk: Arc<DeskServices>, session: Session, token: String) {
    let (mut tx, mut rx) = socket.split();
    let welcome = SupervisorFrame::Welcome {
        protocol: PROTOCOL_VERSION,
        user: AgentInfo {
            id: session.user.clone(),
            name: session.name.expose().clone(),
            role: session.role,
        },
    };
    if tx.send(Message::Text(text(&welcome).into())).await.is_err() {
        return;
    }
    let mut kpis = desk.acd.live_kpis();
    kpis.mark_unchanged();
    // The first figures go out at once, fresh from the router.
    if let Some(snapshot) = desk.acd.kpis().await
        && tx
            .send(Message::Text(
                text(&SupervisorFrame::stats(&snapshot, |c| desk.desks.call_node(c))).into(),
            ))
            .await
            .is_err()
    {
        return;
    }
    let mut watch = SessionWatch::new(token, &session);
    let mut campaign_tick = tokio::time::interval(std::time::Duration::from_secs(1));
    let mut campaigns_sent: Option<Vec<call_control::CampaignLiveStats>> = None;
    loop {
        let out = tokio::select! {
            _ = campaign_tick.tick(), if !desk.campaigns.is_empty() => {
                let now: Vec<_> = desk.campaigns.iter().map(|c| c.stats()).collect();
                if campaigns_sent.as_ref() == Some(&now) {
                    None
                } else {
                    campaigns_sent = Some(now.clone());
                    Some(SupervisorFrame::Campaigns { campaigns: now })
                }
            }
            changed = kpis.changed() => {
                if changed.is_err() { break }
                let snapshot = kpis.borrow_and_update().clone();
                Some(SupervisorFrame::stats(&snapshot, |c| desk.desks.call_node(c)))
            }
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(t))) => Some(handle(&desk, &session, t.as_str()).await),
                Some(Ok(Message::Binary(_))) => Some(error(None, codes::BAD_REQUEST, "frames are JSON text")),
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => None,
            },
            _ = watch.lapsed(&desk) => {
                let _ = tx.send(Message::Text(text(&error(None, "session_expired", "log in again")).into())).await;
                break;
            }
        };
        if let Some(frame) = out
            && tx.send(Message::Text(text(&frame).into())).await.is_err()
        {
            break;
        }
    }
}

fn error(id: Option<serde_json::Value>, code: &str, message: impl Into<String>) -> SupervisorFrame {
    SupervisorFrame::Error {
        id,
        code: code.to_string(),
        message: message.into(),
    }
}

async fn handle(desk: &DeskServices, session: &Session, frame: &str) -> SupervisorFrame {
    if frame.len() > MAX_FRAME_BYTES {
        return error(
            None,
            codes::TOO_LARGE,
            format!("frames are at most {MAX_FRAME_BYTES} bytes"),
        );
    }
    let request = match SupervisorRequest::parse(frame) {
        Ok(r) => r,
        Err(bad) => return error(bad.id, codes::BAD_REQUEST, bad.message),
    };
    let id = request.id();
    let monitor = match &request {
        SupervisorRequest::Monitor { agent, mode, sdp, .. } => Some((
            agent.clone(),
            AgentCommand::Monitor {
                supervisor: session.user.clone(),
                mode: *mode,
                sdp: sdp.clone(),
            },
            format!("monitor({})", mode.name()),
        )),
        SupervisorRequest::MonitorMode { agent, mode, .. } => Some((
            agent.clone(),
            AgentCommand::MonitorMode(*mode),
            format!("monitor({})", mode.name()),
        )),
        SupervisorRequest::MonitorStop { agent, .. } => Some((
            agent.clone(),
            AgentCommand::StopMonitor,
            "monitor(stopped)".to_string(),
        )),
        _ => None,
    };
    if let Some((agent, command, detail)) = monitor {
        let answer = match desk.desks.supervise(&agent, command).await {
            Ok(Some(sdp)) => SupervisorFrame::MonitorAnswer {
                id: id.clone(),
                agent: agent.clone(),
                sdp,
            },
            Ok(None) => SupervisorFrame::Ack { id: id.clone() },
            Err(refusal) => return error(id, refusal.code, refusal.message),
        };
        audit(desk, session, "agent.monitor", &agent, detail).await;
        return answer;
    }
    let (agent, change, detail) = match request {
        SupervisorRequest::Ping { .. } => return SupervisorFrame::Pong { id },
        SupervisorRequest::Monitor { .. }
        | SupervisorRequest::MonitorMode { .. }
        | SupervisorRequest::MonitorStop { .. } => {
            return error(id, codes::BAD_REQUEST, "handled above");
        }
        SupervisorRequest::ForceState {
            agent,
            state: ForcedState::Ready,
            ..
        } => (agent, AgentChange::Ready, "ready".to_string()),
        SupervisorRequest::ForceState {
            agent,
            state: ForcedState::NotReady,
            reason,
            ..
        } => {
            let reason = match ReasonCode::new(reason.unwrap_or_else(|| "supervisor".into())) {
                Ok(r) => r,
                Err(e) => return error(id, codes::BAD_REQUEST, e.to_string()),
            };
            let detail = format!("not_ready({reason})");
            (agent, AgentChange::NotReady(reason), detail)
        }
        SupervisorRequest::LogoutAgent { agent, .. } => {
            (agent, AgentChange::Logout, "logged_out".to_string())
        }
    };
    if let Err(e) = desk.acd.change_agent(&agent, change).await {
        let (code, message) = acd_refusal(e);
        return error(id, code, message);
    }
    audit(desk, session, "agent.force_state", &agent, detail).await;
    SupervisorFrame::Ack { id }
}

/// Writes a supervisor's action on an agent to the audit log.
async fn audit(
    desk: &DeskServices,
    session: &Session,
    action: &str,
    agent: &domain::AgentId,
    detail: String,
) {
    let entry = crm_store::AuditEntry {
        at: Timestamp::now_utc(),
        actor: session.user.as_str().to_string(),
        action: action.into(),
        entity: "agent".into(),
        entity_id: agent.as_str().to_string(),
        detail,
    };
    if let Err(e) = desk.crm.audit(&entry).await {
        warn!(error = %e, "audit entry not written");
    }
}
