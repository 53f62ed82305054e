//! `/ws/agent`: one agent's desktop. After the upgrade the server sends `welcome` (state and calls,
//! so a reloaded page picks up a call in progress), then pushes state changes, offers with their
//! screen pop and call phases, and answers each request with `ack` or `error`. A request that is not
//! valid now changes nothing. The agent's call does not depend on the socket: it stays up through a
//! reload or a network drop and the next socket re-attaches to it.
//!
//! Ready means reachable: an agent on a SIP phone that is not registered (and with the browser
//! softphone off) is refused `ready` and `login` (`not_reachable`), and an available agent whose
//! phone lapses is made not ready (`no-phone`); the desktop is told either way. The desktop also
//! gets its agent's queues (callers waiting, oldest wait) whenever they change, and the calls the
//! router holds back from the agent after a failed, missed or rejected offer (with the moment each
//! may be offered again, so the page counts down without asking).

use crate::protocol::{
    AgentFrame, AgentInfo, AgentRequest, MAX_FRAME_BYTES, PROTOCOL_VERSION, PreviewView, QueueStrip,
    Reachability, StateView, TRANSPORT_MAX_BYTES, codes,
};
use crate::{ApiError, DeskServices, Session, SessionWatch, authenticate, request_token};
use acd::{AcdError, ReasonCode};
use axum::Router;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use call_control::AgentChange;
use call_control::PreviewChoice;
use call_control::desk::{AgentCommand, AgentMedia, CampaignWrapUp, DeskEvent};
use domain::{AgentId, Pii};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tracing::{Instrument, debug, info, info_span};

/// The wrap-up disposition that means the called person asked not to be called again.
const DNC_DISPOSITION: &str = "dnc";

/// Keep-alive pings on an idle socket (a dead network is noticed within about twice this).
const PING_EVERY: Duration = Duration::from_secs(20);

/// How often a phone agent's registration is looked at again (a phone that lapses or comes back).
const REACHABLE_EVERY: Duration = Duration::from_secs(3);

/// The not-ready reason given to an available agent whose phone stopped being registered.
const NO_PHONE_REASON: &str = "no-phone";

/// Whether a call offered now could reach the agent. The browser softphone always can (the page is
/// attached); a phone agent needs a live SIP registration. A desk that places no calls cannot tell,
/// and a state store that cannot answer does not block the agent.
pub(crate) async fn reachability(desk: &DeskServices, agent: &AgentId, media: AgentMedia) -> Reachability {
    if media == AgentMedia::Browser || desk.calls.is_none() {
        return Reachability::REACHABLE;
    }
    let Ok(aor) = state_store::Aor::new(agent.as_str()) else {
        return Reachability::NO_PHONE;
    };
    match desk.state.live_bindings(&aor, domain::Timestamp::now_utc()).await {
        Ok(bindings) if bindings.is_empty() => Reachability::NO_PHONE,
        Ok(_) => Reachability::REACHABLE,
        Err(e) => {
            debug!(error = %e, "registrations unreadable; the agent is taken as reachable");
            Reachability::REACHABLE
        }
    }
}

/// The agent's queues (all queues when the configuration names none for them).
fn queue_strip(desk: &DeskServices, agent: &AgentId, k: &acd::KpiSnapshot) -> Vec<QueueStrip> {
    let mine = desk.desktop.agent_queues.get(agent);
    k.queues
        .iter()
        .filter(|q| mine.is_none_or(|m| m.contains(&q.queue)))
        .map(|q| QueueStrip {
            queue: q.queue.clone(),
            waiting: q.waiting + q.offering,
            // As a moment (to the second), so the strip changes only when the queue does.
            oldest_since: q
                .oldest_wait_ms
                .map(|w| domain::Timestamp::from_millis((k.at.as_millis() - w as i64) / 1000 * 1000)),
            estimated_wait_ms: q.estimated_wait_ms,
        })
        .collect()
}

pub(crate) fn routes(desk: Arc<DeskServices>) -> Router {
    Router::new().route("/ws/agent", get(upgrade)).with_state(desk)
}

#[derive(Debug, Deserialize)]
struct Params {
    #[serde(default)]
    media: AgentMedia,
}

async fn upgrade(
    State(desk): State<Arc<DeskServices>>,
    headers: HeaderMap,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // The edge has refused a cookie-authorised upgrade from a foreign page already.
    let (session, _) = authenticate(&desk, &headers).await?;
    let token = request_token(&headers).map(|(t, _)| t).unwrap_or_default();
    let Query(params) =
        params.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.body_text()))?;
    Ok(ws
        .max_message_size(TRANSPORT_MAX_BYTES)
        .max_frame_size(TRANSPORT_MAX_BYTES)
        .on_upgrade(move |socket| {
            let span = info_span!("desk", agent = %session.user);
            run(socket, desk, session, token, params.media).instrument(span)
        }))
}

/// The agent's current state, straight from the router (consistent with the change stream that was
/// subscribed before asking).
async fn current_state(desk: &DeskServices, agent: &AgentId) -> Option<StateView> {
    let k = desk.acd.kpis().await?;
    k.agents
        .into_iter()
        .find(|a| &a.agent == agent)
        .map(|a| StateView {
            state: a.state,
            since: a.since,
        })
}

fn frame_text(frame: &AgentFrame) -> String {
    // Our frames are plain data: serialising them cannot fail.
    serde_json::to_string(frame)
        .unwrap_or_else(|_| r#"{"type":"error","code":"internal","message":"unserialisable"}"#.into())
}

fn error(id: Option<serde_json::Value>, code: &str, message: impl Into<String>) -> AgentFrame {
    AgentFrame::Error {
        id,
        code: code.to_string(),
        message: message.into(),
    }
}

async fn run(socket: WebSocket, desk: Arc<DeskServices>, session: Session, token: String, media: AgentMedia) {
    let agent = session.user.clone();
    let (mut tx, mut rx) = socket.split();
    // Subscribe before reading the state, so no change falls between the two.
    let mut states = desk.acd.subscribe_agent_states();
    let mut attachment = desk.desks.attach(&agent, media);
    info!(?media, calls = attachment.calls.len(), "desktop attached");
    let welcome = AgentFrame::Welcome {
        protocol: PROTOCOL_VERSION,
        agent: AgentInfo {
            id: agent.clone(),
            name: session.name.expose().clone(),
            role: session.role,
        },
        media,
        state: current_state(&desk, &agent).await,
        calls: std::mem::take(&mut attachment.calls),
        preview: attachment
            .preview
            .take()
            .map(|p| PreviewView::of(&p, session.role)),
        settings: desk.desktop.clone(),
        reachable: reachability(&desk, &agent, media).await,
    };
    if tx.send(Message::Text(frame_text(&welcome).into())).await.is_err() {
        desk.desks.detach(&agent, attachment.generation);
        return;
    }
    let mut watch = SessionWatch::new(token, &session);
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut reach_check = tokio::time::interval(REACHABLE_EVERY);
    reach_check.tick().await;
    let mut reachable = reachability(&desk, &agent, media).await;
    let mut kpis = desk.acd.live_kpis();
    let mut strip: Option<Vec<QueueStrip>> = None;
    // The page starts with nothing held back (it clears its list on `welcome`): only a list
    // with something in it, or a change, is sent.
    let mut held_back: Vec<acd::HeldBack> = Vec::new();
    // A frame to send after the one a wake-up produced (a KPI change can bring two).
    let mut also: Option<AgentFrame> = None;
    kpis.mark_changed();
    loop {
        let out: Option<AgentFrame> = tokio::select! {
            msg = rx.next() => match msg {
                Some(Ok(Message::Text(text))) => Some(handle(&desk, &agent, media, text.as_str()).await),
                Some(Ok(Message::Binary(_))) => Some(error(None, codes::BAD_REQUEST, "frames are JSON text")),
                Some(Ok(Message::Close(_))) | None => break,
                Some(Ok(_)) => None,
                Some(Err(e)) => {
                    debug!(error = %e, "desktop socket failed");
                    break;
                }
            },
            ev = attachment.events.recv() => match ev {
                Some(DeskEvent::Replaced) | None => {
                    let _ = tx.send(Message::Text(frame_text(&AgentFrame::Replaced).into())).await;
                    let _ = tx.send(Message::Close(None)).await;
                    // The new desktop owns the agent now: do not detach it.
                    return;
                }
                Some(ev) => Some(desk_frame(ev, session.role)),
            },
            change = states.recv() => match change {
                Ok(c) if c.agent == agent => Some(AgentFrame::State(StateView { state: c.to, since: c.at })),
                Ok(_) => None,
                Err(RecvError::Lagged(_)) => current_state(&desk, &agent).await.map(AgentFrame::State),
                Err(RecvError::Closed) => break,
            },
            _ = watch.lapsed(&desk) => {
                let _ = tx.send(Message::Text(frame_text(&error(None, "session_expired", "log in again")).into())).await;
                break;
            }
            _ = ping.tick() => {
                if tx.send(Message::Ping(Vec::new().into())).await.is_err() { break }
                None
            }
            _ = reach_check.tick() => {
                let now = reachability(&desk, &agent, media).await;
                if now == reachable {
                    None
                } else {
                    reachable = now;
                    if !now.ok {
                        unreachable_not_ready(&desk, &agent).await;
                    }
                    Some(AgentFrame::Reachable(now))
                }
            }
            changed = kpis.changed() => {
                if changed.is_err() {
                    None
                } else {
                    let k = Arc::clone(&kpis.borrow_and_update());
                    let held = k
                        .agents
                        .iter()
                        .find(|a| a.agent == agent)
                        .map(|a| a.held_back.clone())
                        .unwrap_or_default();
                    if held_back != held {
                        held_back = held.clone();
                        also = Some(AgentFrame::HeldBack { calls: held });
                    }
                    let next = queue_strip(&desk, &agent, &k);
                    if strip.as_ref() == Some(&next) {
                        None
                    } else {
                        strip = Some(next.clone());
                        Some(AgentFrame::Queues { queues: next })
                    }
                }
            }
        };
        if let Some(frame) = out
            && tx.send(Message::Text(frame_text(&frame).into())).await.is_err()
        {
            break;
        }
        if let Some(frame) = also.take()
            && tx.send(Message::Text(frame_text(&frame).into())).await.is_err()
        {
            break;
        }
    }
    desk.desks.detach(&agent, attachment.generation);
    info!("desktop detached");
}

/// An available agent who can no longer be reached is made not ready, so no call waits on them.
async fn unreachable_not_ready(desk: &DeskServices, agent: &AgentId) {
    let available = current_state(desk, agent)
        .await
        .is_some_and(|s| s.state == acd::AgentState::Available);
    if !available {
        return;
    }
    if let Ok(reason) = ReasonCode::new(NO_PHONE_REASON)
        && let Err(e) = desk.acd.change_agent(agent, AgentChange::NotReady(reason)).await
    {
        debug!(error = %e, "unreachable agent not made not ready");
    }
}

fn desk_frame(ev: DeskEvent, role: crm_store::Role) -> AgentFrame {
    match ev {
        DeskEvent::Preview(offer) => AgentFrame::Preview {
            preview: PreviewView::of(&offer, role),
        },
        DeskEvent::PreviewWithdrawn {
            campaign,
            lead,
            reason,
        } => AgentFrame::PreviewWithdrawn {
            campaign,
            lead,
            reason,
        },
        DeskEvent::Offered(pop) => AgentFrame::Offer { pop },
        DeskEvent::OfferWithdrawn { call, reason } => AgentFrame::OfferWithdrawn { call, reason },
        DeskEvent::Phase { call, phase } => AgentFrame::CallPhase { call, phase },
        DeskEvent::Released { call } => AgentFrame::Released { call },
        DeskEvent::MediaAnswer { call, sdp } => AgentFrame::MediaAnswer { call, sdp },
        DeskEvent::Replaced => AgentFrame::Replaced,
    }
}

/// The router's refusal as an error code and message.
pub(crate) fn acd_refusal(e: AcdError) -> (&'static str, String) {
    match e {
        AcdError::IllegalTransition { source, .. } => (codes::ILLEGAL_TRANSITION, source.to_string()),
        AcdError::UnknownAgent(a) => (
            codes::UNKNOWN_AGENT,
            format!("agent {a} is not configured in the ACD"),
        ),
        other => (codes::UNAVAILABLE, other.to_string()),
    }
}

async fn handle(desk: &DeskServices, agent: &AgentId, media: AgentMedia, text: &str) -> AgentFrame {
    if text.len() > MAX_FRAME_BYTES {
        return error(
            None,
            codes::TOO_LARGE,
            format!("frames are at most {MAX_FRAME_BYTES} bytes"),
        );
    }
    let request = match AgentRequest::parse(text) {
        Ok(r) => r,
        Err(bad) => return error(bad.id, codes::BAD_REQUEST, bad.message),
    };
    let id = request.id();
    let state_change = match &request {
        AgentRequest::Login { .. } => Some(AgentChange::Login),
        AgentRequest::Logout { .. } => Some(AgentChange::Logout),
        AgentRequest::Ready { .. } => Some(AgentChange::Ready),
        AgentRequest::NotReady { reason, .. } => match ReasonCode::new(reason.clone()) {
            Ok(reason) => Some(AgentChange::NotReady(reason)),
            Err(e) => return error(id, codes::BAD_REQUEST, e.to_string()),
        },
        AgentRequest::ExtendWrapUp { secs, .. } => Some(AgentChange::ExtendWrapUp(*secs)),
        _ => None,
    };
    if let Some(change) = state_change {
        if change.makes_available() && !reachability(desk, agent, media).await.ok {
            return error(
                id,
                codes::NOT_REACHABLE,
                "no SIP phone is registered for you and the browser softphone is off",
            );
        }
        return match desk.acd.change_agent(agent, change).await {
            Ok(()) => AgentFrame::Ack { id },
            Err(e) => {
                let (code, message) = acd_refusal(e);
                error(id, code, message)
            }
        };
    }
    let (call, command) = match request {
        AgentRequest::Accept { call, sdp, .. } => (call, AgentCommand::Accept { sdp }),
        AgentRequest::Reject { call, .. } => (call, AgentCommand::Reject),
        AgentRequest::Hangup { call, .. } => (call, AgentCommand::Hangup),
        AgentRequest::Hold { call, .. } => (call, AgentCommand::Hold),
        AgentRequest::Unhold { call, .. } => (call, AgentCommand::Unhold),
        AgentRequest::Transfer { call, to, .. } => (call, AgentCommand::Transfer(to)),
        AgentRequest::Mute { call, muted, .. } => (call, AgentCommand::Mute(muted)),
        AgentRequest::Consult { call, to, .. } => (call, AgentCommand::Consult(to)),
        AgentRequest::ConsultComplete { call, .. } => (call, AgentCommand::ConsultComplete),
        AgentRequest::ConsultCancel { call, .. } => (call, AgentCommand::ConsultCancel),
        AgentRequest::WrapUp {
            call,
            disposition,
            notes,
            do_not_call,
            callback,
            ..
        } => {
            let disposition = disposition.trim().to_string();
            if let Some(cb) = &callback {
                // A little slack for clocks; a callback is promised for the coming year at most.
                let now = domain::Timestamp::now_utc();
                let earliest = now.as_millis() - 60_000;
                let latest = now.as_millis() + 366 * 86_400_000;
                if !(earliest..=latest).contains(&cb.at.as_millis()) {
                    return error(
                        id,
                        codes::BAD_REQUEST,
                        "callback.at must be a time (ms since 1970) from now to a year ahead",
                    );
                }
                if do_not_call || disposition == DNC_DISPOSITION {
                    return error(
                        id,
                        codes::BAD_REQUEST,
                        "a callback and do_not_call exclude each other",
                    );
                }
            }
            let campaign = CampaignWrapUp {
                do_not_call: do_not_call || disposition == DNC_DISPOSITION,
                callback,
            };
            (
                call,
                AgentCommand::WrapUp {
                    disposition,
                    notes: Pii::new(notes),
                    campaign,
                },
            )
        }
        AgentRequest::Ping { .. } => return AgentFrame::Pong { id },
        AgentRequest::Dial { number, sdp, .. } => {
            let Some(calls) = desk.calls.as_ref() else {
                return error(id, codes::UNAVAILABLE, "this node places no calls");
            };
            return match calls.dial(agent.clone(), number, media, sdp).await {
                Ok(_) => AgentFrame::Ack { id },
                Err(refusal) => error(id, refusal.code, refusal.message),
            };
        }
        AgentRequest::PreviewDial {
            campaign, lead, sdp, ..
        } => {
            return preview(
                desk,
                agent,
                id,
                &campaign,
                lead,
                PreviewChoice::Dial { media, sdp },
            )
            .await;
        }
        AgentRequest::PreviewSkip { campaign, lead, .. } => {
            return preview(desk, agent, id, &campaign, lead, PreviewChoice::Skip).await;
        }
        AgentRequest::Login { .. }
        | AgentRequest::Logout { .. }
        | AgentRequest::Ready { .. }
        | AgentRequest::NotReady { .. }
        | AgentRequest::ExtendWrapUp { .. } => return AgentFrame::Ack { id },
    };
    match desk.desks.command(agent, &call, command).await {
        Ok(_) => AgentFrame::Ack { id },
        Err(refusal) => error(id, refusal.code, refusal.message),
    }
}

/// An agent's decision on a previewed lead, passed to the campaign's runner that previewed it (on
/// this node, or on a cluster the node that dials the campaign).
async fn preview(
    desk: &DeskServices,
    agent: &AgentId,
    id: Option<serde_json::Value>,
    campaign: &domain::CampaignId,
    lead: domain::LeadId,
    choice: PreviewChoice,
) -> AgentFrame {
    match desk.desks.preview(agent, campaign, lead, choice).await {
        // Dialled or skipped: the runner ends the preview in the desk hub, which closes the lead's
        // record (a dialled call shows its own pop).
        Ok(()) => AgentFrame::Ack { id },
        Err(refusal) => error(id, refusal.code, refusal.message),
    }
}
