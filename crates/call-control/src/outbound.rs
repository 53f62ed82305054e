//! Calls an agent places from the desktop (click-to-dial; preview outbound). What may be dialled,
//! and where the agent goes back to afterwards, is read from the ACD here; the call itself is a
//! [`call_session::CallSession`] of origin `ClickToDial` driven by [`crate::driver`]: the agent's
//! own leg first (their SIP phone rings, or their browser softphone's offer is answered), then the
//! customer through the outbound trunk. Once the customer answers, the call runs like any other
//! (hold, transfer, hang-up, wrap-up with a disposition), with the customer as "caller".
//!
//! The ACD knows the agent is on the call (`acd::Input::CallPlaced` before anything is dialled, the
//! session's `CallEnded` when it ends), so it offers them no queue call meanwhile, its KPIs count
//! the talk and the after-call work, and afterwards the agent is back in the state they dialled
//! from.
//!
//! A preview campaign's lead is dialled the same way, with the campaign's caller id; the agent goes
//! back to ready afterwards (for the next lead), and the call records its campaign attempt
//! ([`PreviewDial`]).

use crate::Inner;
use crate::campaign_runner::PreviewDial;
use crate::desk::{AgentMedia, DialNumber, Refusal};
use crate::driver::{Driver, PopStyle};
use call_session::{CallSession, Input, Origin, RequestId};
use domain::{AgentId, CallId, Direction, Pii, Timestamp};
use std::sync::Arc;
use tokio::sync::oneshot;
use tracing::{Instrument, info_span};

/// The dial request of the placing agent, answered once their leg is up or failed.
const DIAL_REQUEST: RequestId = RequestId(1);

/// Places a call for `agent` to `number`. Returns once the agent's leg is up (their phone rings, or
/// the softphone is answered); the desktop follows the call through the usual frames (the pop, then
/// `dialing`, `connected`, `wrap_up`). An agent whose phone cannot be reached gets an error.
pub(crate) async fn dial(
    inner: Arc<Inner>,
    agent: AgentId,
    number: DialNumber,
    media: AgentMedia,
    sdp: Option<String>,
    preview: Option<PreviewDial>,
) -> Result<CallId, Refusal> {
    let Some(trunk) = inner.outbound.clone() else {
        return Err(Refusal::new(
            "no_trunk",
            "no outbound trunk is configured for outside numbers",
        ));
    };
    if inner.gateway.get().is_none() {
        return Err(Refusal::new("unavailable", "the SIP gateway is not running"));
    }
    // The router is the judge of where the agent is: whether they may dial, and where they go
    // back to afterwards.
    let before = inner
        .acd
        .agent_now(&agent)
        .await
        .ok_or_else(|| Refusal::new("unknown_agent", "you are not an agent of the ACD"))?;
    if before.call.is_some() || matches!(before.state, acd::AgentState::Reserved | acd::AgentState::OnCall) {
        return Err(Refusal::new(
            "illegal_transition",
            "you are on a call: one call at a time",
        ));
    }
    let (restore, then_not_ready) = match before.state {
        // A preview campaign's agent is not ready (`preview`) while deciding, and ready for the next
        // lead after the call.
        acd::AgentState::NotReady { .. } if preview.is_some() => {
            (acd::Input::AgentReady { agent: agent.clone() }, None)
        }
        acd::AgentState::Available | acd::AgentState::WrapUp { .. } => {
            (acd::Input::AgentReady { agent: agent.clone() }, None)
        }
        acd::AgentState::NotReady { reason } => (
            acd::Input::AgentNotReady {
                agent: agent.clone(),
                reason: reason.clone(),
            },
            Some(reason),
        ),
        other => {
            return Err(Refusal::new(
                "illegal_transition",
                format!("you cannot place a call while {}", other.kind().name()),
            ));
        }
    };
    let now = Timestamp::now_utc();
    let id = CallId::generate(&inner.node, now, inner.next_counter(), rand::random());
    // The router holds the agent on this call (no queue call is offered to them) until the session
    // says it ended; then after-call work as long as the session's wrap-up window.
    let wrap_up_secs = u32::try_from(inner.wrap_up_window.as_secs()).unwrap_or(u32::MAX);
    inner
        .acd
        .request(acd::Input::CallPlaced {
            agent: agent.clone(),
            call: id.clone(),
            wrap_up_secs,
            then_not_ready,
        })
        .await
        .map_err(|e| Refusal::new("illegal_transition", e.to_string()))?;

    let shown_as = match &preview {
        Some(p) => p.caller_id().to_string(),
        None => trunk
            .caller_id
            .clone()
            .unwrap_or_else(|| agent.as_str().to_string()),
    };
    let customer = Pii::new(number.expose().to_string());
    let origin = Origin::ClickToDial {
        agent: agent.clone(),
        number: customer.clone(),
        media,
        sdp,
        shown_as: shown_as.clone(),
        request: DIAL_REQUEST,
        restore: Some(restore.clone()),
        preview: preview.as_ref().map(PreviewDial::session_link),
    };
    let session = match CallSession::new(
        id.clone(),
        now,
        origin,
        customer.clone(),
        Pii::new(shown_as.clone()),
        Driver::settings(&inner),
    ) {
        Ok(s) => s,
        Err(_) => {
            inner.acd.input(acd::Input::CallEnded { call: id });
            inner.acd.input(restore);
            return Err(Refusal::new("unavailable", "no call id"));
        }
    };
    let style = PopStyle {
        direction: Direction::Outbound,
        prefix: "",
    };
    let mut driver =
        Driver::new(inner.clone(), session, customer, Pii::new(shown_as), None, style).with_restore(restore);
    if let Some(p) = &preview {
        driver = driver.with_campaign(p.link());
    }
    let (reply_tx, reply_rx) = oneshot::channel();
    driver.expect_reply(DIAL_REQUEST, reply_tx);
    driver.feed(Input::Start);
    let (placed_tx, placed_rx) = oneshot::channel::<bool>();
    let span = info_span!("call", call = %id, direction = "outbound");
    let row = preview.as_ref().map(|p| p.row(&id, now));
    let finish = preview.clone();
    let task_inner = inner.clone();
    tokio::spawn(
        async move {
            driver.run().await;
            // A preview's attempt counts once it was placed (the runner heard so first).
            if let (Some(p), Some(row), Ok(true)) = (finish, row, placed_rx.await) {
                p.finish_call(&task_inner, row, driver.outcome()).await;
            }
            driver.wrap_up_later();
        }
        .instrument(span),
    );
    match reply_rx.await {
        Ok(Ok(_)) => {
            if let Some(p) = &preview {
                p.placed();
                p.store(&inner, &p.row(&id, now)).await;
            }
            let _ = placed_tx.send(true);
            Ok(id)
        }
        Ok(Err(refusal)) => Err(refusal),
        Err(_) => Err(Refusal::new("unavailable", "the call ended before it was placed")),
    }
}
