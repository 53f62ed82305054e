//! Callbacks: a caller who asked to be called back hangs up but keeps their place in line. Their
//! call stays in the ACD queue under its own id; a [`call_session::CallSession`] of origin
//! `Callback` waits in line for them: when the router offers it, the offered agent's phone rings
//! (or their browser desktop shows the offer), and once the agent answers the customer is dialled
//! through the outbound trunk. The call back is an interaction of its own (outbound); the caller's
//! first interaction ends with `callback_requested`.

use crate::Inner;
use crate::acd_task::QueueNotice;
use crate::driver::{Driver, PopStyle};
use call_session::{CallSession, Input, Origin};
use domain::{CallId, Direction, InteractionId, Pii, QueueId, Timestamp};
use std::sync::Arc;
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span};

/// Takes over a caller's place in `queue` after they hung up, and calls them back when an agent
/// takes it.
pub(crate) fn spawn(
    inner: Arc<Inner>,
    call: CallId,
    queue: QueueId,
    notices: mpsc::UnboundedReceiver<QueueNotice>,
    number: Pii<String>,
    first_seq: u32,
) {
    let span = info_span!("callback", call = %call);
    tokio::spawn(run(inner, call, queue, notices, number, first_seq).instrument(span));
}

async fn run(
    inner: Arc<Inner>,
    call: CallId,
    queue: QueueId,
    notices: mpsc::UnboundedReceiver<QueueNotice>,
    number: Pii<String>,
    first_seq: u32,
) {
    let shown_as = inner
        .outbound
        .as_ref()
        .and_then(|t| t.caller_id.clone())
        .unwrap_or_else(|| "callcenter".into());
    let origin = Origin::Callback {
        number: number.clone(),
        queue,
        first_seq,
    };
    let Ok(session) = CallSession::new(
        call,
        Timestamp::now_utc(),
        origin,
        number.clone(),
        Pii::new(shown_as.clone()),
        Driver::settings(&inner),
    ) else {
        return;
    };
    info!("waiting in line for a callback");
    let style = PopStyle {
        direction: Direction::Outbound,
        prefix: "callback: ",
    };
    let mut driver =
        Driver::new(inner, session, number, Pii::new(shown_as), None, style).with_notices(notices);
    driver.feed(Input::Start);
    driver.run().await;
    driver.wrap_up_later();
}

/// Records in the CRM how the callback promised during the caller's interaction ended, so a restart
/// does not call the customer again (the write is off the call path).
pub(crate) fn settle(inner: &Inner, call: &CallId, status: &'static str) {
    let Ok(interaction) = InteractionId::new(call.as_str()) else {
        return;
    };
    let crm = inner.crm.clone();
    tokio::spawn(async move {
        if let Err(error) = crm.settle_callbacks_of(&interaction, status).await {
            tracing::warn!(%error, status, "the callback's status could not be saved");
        }
    });
}
