//! An inbound call: the gateway hands over the caller's INVITE; its offer is answered with an
//! engine leg, and the call runs as a [`call_session::CallSession`] (an IVR flow, or straight into
//! a queue) driven by [`crate::driver`].

use crate::Inner;
use crate::driver::{CallerIo, Driver, PopStyle, legs};
use call_session::{CallSession, Entry, Input, Origin};
use domain::{CallId, Direction, Timestamp};
use ivr::IvrSession;
use sip_gateway::{InboundCall, RouteTarget};
use std::sync::Arc;
use tracing::{Instrument, info, info_span, warn};

/// Runs an inbound call until it has ended (the agents' wrap-up goes on in a task of its own).
pub(crate) async fn run(inner: Arc<Inner>, call: InboundCall) {
    let now = Timestamp::now_utc();
    let id = CallId::generate(&inner.node, now, inner.next_counter(), rand::random());
    let span = info_span!("call", call = %id);
    async move {
        let entry = match &call.target {
            RouteTarget::Ivr(flow) => {
                let info = ivr::CallInfo {
                    caller: call.from.clone(),
                    called: call.to.clone(),
                };
                match IvrSession::new(inner.flows.current(), flow, info) {
                    Ok(session) => Entry::Ivr(Box::new(session)),
                    Err(e) => {
                        warn!(error = %e, "IVR flow cannot start");
                        Entry::Nowhere {
                            reason: "IVR flow missing".into(),
                        }
                    }
                }
            }
            RouteTarget::Queue(q) => match domain::QueueId::new(q) {
                Ok(queue) => Entry::Queue(queue),
                Err(_) => Entry::Nowhere {
                    reason: "bad queue name".into(),
                },
            },
            RouteTarget::Forward(_) => Entry::Nowhere {
                reason: "forward routes are bridged by the gateway".into(),
            },
        };
        let session = match CallSession::new(
            id,
            now,
            Origin::Inbound { entry },
            call.from.clone(),
            call.to.clone(),
            Driver::settings(&inner),
        ) {
            Ok(s) => s,
            Err(_) => return call.leg.reject(500),
        };
        let style = PopStyle {
            direction: Direction::Inbound,
            prefix: "",
        };
        // Media: answer the caller's offer with our own RTP leg.
        let Some((rtp, media, law, answer)) = legs::answer_offer(&inner, &call.leg, &call.offer) else {
            call.leg.reject(488);
            let mut driver = Driver::new(inner, session, call.from, call.to, None, style);
            driver.feed(Input::CallerRefused {
                reason: "no acceptable media".into(),
            });
            driver.run().await;
            return;
        };
        if !call.leg.answer(answer.into_bytes()).await {
            let mut driver = Driver::new(inner, session, call.from, call.to, None, style);
            driver.feed(Input::CallerHungUp);
            driver.run().await;
            return;
        }
        info!(target = ?call.target, "answered");
        let caller = CallerIo::new(call.leg, rtp, law, media);
        let mut driver = Driver::new(inner, session, call.from, call.to, Some(caller), style);
        driver.feed(Input::CallerAnswered);
        driver.run().await;
        driver.wrap_up_later();
    }
    .instrument(span)
    .await
}
