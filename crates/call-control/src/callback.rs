//! Callbacks: a caller who asked to be called back hangs up but keeps their place in line. Their
//! call stays in the ACD queue under its own id; when the router offers it, the offered agent's phone
//! rings (or their browser desktop shows the offer), and once the agent answers the customer is
//! dialled through the outbound trunk. The call back is an interaction of its own (outbound); the
//! caller's first interaction ends with `callback_requested`.

use crate::Inner;
use crate::acd_task::QueueNotice;
use crate::call::{AgentLeg, Call, PhoneRing, negotiate, open_browser_leg, ring_phone};
use crate::desk::{AgentCommand, AgentMedia, CommandRequest, DeskEvent, Refusal, ScreenPop};
use domain::{
    AgentId, CallId, Channel, Direction, EndedBy, InteractionEventKind, InteractionId, Pii, QueueId,
    Timestamp,
};
use sip_gateway::LegEvent;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span};

/// How long the customer's phone may ring when called back.
const CUSTOMER_RING: Duration = Duration::from_secs(45);

/// An agent being offered the callback.
struct Offered {
    agent: AgentId,
    phone: Option<PhoneRing>,
}

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
    mut notices: mpsc::UnboundedReceiver<QueueNotice>,
    number: Pii<String>,
    first_seq: u32,
) {
    let now = Timestamp::now_utc();
    let Ok(interaction) = InteractionId::new(format!("{}-cb", call.as_str())) else {
        return;
    };
    let mut timeline = crate::Timeline::resuming(interaction, first_seq);
    let shown_as = inner
        .outbound
        .as_ref()
        .and_then(|t| t.caller_id.clone())
        .unwrap_or_else(|| "callcenter".into());
    inner.log(timeline.event(
        now,
        InteractionEventKind::Arrived {
            channel: Channel::Voice,
            direction: Direction::Outbound,
            from: Pii::new(shown_as.clone()),
            to: number.clone(),
        },
    ));
    inner.log(timeline.event(
        now,
        InteractionEventKind::Enqueued {
            queue: queue.clone(),
            priority: 0,
        },
    ));
    info!("waiting in line for a callback");
    let (commands_tx, mut commands_rx) = mpsc::unbounded_channel::<CommandRequest>();
    let mut offered: Vec<Offered> = Vec::new();
    // Until an agent takes it: offers, cancellations, the agents' phones and desktops.
    let (agent, agent_leg, agent_rtp) = loop {
        tokio::select! {
            notice = notices.recv() => match notice {
                Some(QueueNotice::Offer(offer)) => {
                    let explanation = offer.explanation.sentence();
                    let pop = Arc::new(ScreenPop {
                        call: call.clone(),
                        direction: Direction::Outbound,
                        queue: Some(offer.queue.clone()),
                        caller: number.clone(),
                        called: Pii::new(shown_as.clone()),
                        waited_ms: offer.explanation.waited_ms,
                        explanation: format!("callback: {explanation}"),
                        customer: None,
                        ivr: None,
                        campaign: None,
                    });
                    for agent in offer.agents {
                        inner.log(timeline.event(
                            Timestamp::now_utc(),
                            InteractionEventKind::Offered { agent: agent.clone(), explanation: explanation.clone() },
                        ));
                        inner.desks.offer(&agent, pop.clone(), commands_tx.clone(), Timestamp::now_utc());
                        if inner.desks.desk_media(&agent) == Some(AgentMedia::Browser) {
                            offered.push(Offered { agent, phone: None });
                            continue;
                        }
                        match ring_phone(&inner, &agent, number.expose()).await {
                            Some(phone) => offered.push(Offered { agent, phone: Some(phone) }),
                            None => {
                                inner.desks.withdraw(&call, &agent, "phone not registered");
                                inner.acd.input(acd::Input::OfferRejected { call: call.clone(), agent });
                            }
                        }
                    }
                }
                Some(QueueNotice::OfferCancelled { agent, reason }) => {
                    if let Some(i) = offered.iter().position(|o| o.agent == agent) {
                        let o = offered.remove(i);
                        if let Some(p) = o.phone {
                            p.leg.hangup();
                        }
                        inner.desks.withdraw(&call, &agent, &reason);
                    }
                }
                Some(QueueNotice::Position { .. }) => {}
                Some(QueueNotice::Overflowed { target, .. }) => {
                    inner.log(timeline.event(Timestamp::now_utc(), InteractionEventKind::Overflowed { from: queue.clone(), to: target }));
                    settle(&inner, &call, "failed");
                    return give_up(&inner, &call, &mut timeline, offered, "the queue sent the callback elsewhere");
                }
                None => return give_up(&inner, &call, &mut timeline, offered, "the queue is gone"),
            },
            (i, ev) = next_phone(&mut offered) => match ev {
                Some(LegEvent::Answered { sdp }) => {
                    let o = offered.remove(i);
                    let Some(phone) = o.phone else { continue };
                    match negotiate(&sdp) {
                        Some(n) => {
                            phone.rtp.set_remote(n);
                            break (o.agent, AgentLeg::Phone(phone.leg), phone.rtp);
                        }
                        None => {
                            phone.leg.hangup();
                            inner.desks.withdraw(&call, &o.agent, "no common codec");
                            inner.acd.input(acd::Input::OfferRejected { call: call.clone(), agent: o.agent });
                        }
                    }
                }
                Some(LegEvent::Ringing | LegEvent::Reoffer { .. }) => {}
                Some(LegEvent::Failed { .. } | LegEvent::Hangup) | None => {
                    let o = offered.remove(i);
                    inner.desks.withdraw(&call, &o.agent, "phone did not answer");
                    inner.acd.input(acd::Input::OfferRejected { call: call.clone(), agent: o.agent });
                }
            },
            Some(request) = commands_rx.recv() => {
                let i = offered.iter().position(|o| o.agent == request.agent);
                match (request.command, i) {
                    (AgentCommand::Accept { sdp }, Some(i)) if offered[i].phone.is_none() => {
                        let opened = open_browser_leg(&inner, sdp).and_then(|(browser, answer)| {
                            let (rtp, _events) = inner.media.allocate_leg().map_err(|e| Refusal::new("unavailable", e.to_string()))?;
                            browser.connect_plain(&rtp).map_err(|e| Refusal::new("unavailable", e.to_string()))?;
                            Ok((browser, answer, rtp))
                        });
                        match opened {
                            Ok((browser, answer, rtp)) => {
                                let o = offered.remove(i);
                                inner.desks.notify(&o.agent, DeskEvent::MediaAnswer { call: call.clone(), sdp: answer });
                                let _ = request.reply.send(Ok(None));
                                break (o.agent, AgentLeg::Browser { leg: Some(browser), lost_at: None }, rtp);
                            }
                            Err(refusal) => { let _ = request.reply.send(Err(refusal)); }
                        }
                    }
                    (AgentCommand::Accept { .. }, Some(_)) => {
                        let _ = request.reply.send(Err(Refusal::new("answer_on_phone", "this call rings your SIP phone: answer it there")));
                    }
                    (AgentCommand::Reject, Some(i)) => {
                        let o = offered.remove(i);
                        if let Some(p) = o.phone {
                            p.leg.hangup();
                        }
                        inner.desks.withdraw(&call, &o.agent, "rejected by the agent");
                        inner.acd.input(acd::Input::OfferRejected { call: call.clone(), agent: o.agent });
                        let _ = request.reply.send(Ok(None));
                    }
                    _ => {
                        let _ = request.reply.send(Err(Refusal::new("no_offer", "this callback is not being offered to you")));
                    }
                }
            }
        }
    };
    // The agent has it: nobody else rings, the router knows, then the customer is dialled.
    for o in offered.drain(..) {
        if let Some(p) = o.phone {
            p.leg.hangup();
        }
        inner.desks.withdraw(&call, &o.agent, "answered elsewhere");
    }
    inner.acd.input(acd::Input::OfferAccepted {
        call: call.clone(),
        agent: agent.clone(),
    });
    info!(%agent, "callback taken; calling the customer");
    let dialled = crate::outbound::dial_number(&inner, number.expose(), &shown_as, CUSTOMER_RING).await;
    let Some((customer_leg, customer_rtp, media_events)) = dialled else {
        agent_leg.hang_up();
        return not_reached(
            &inner,
            &call,
            &agent,
            &mut timeline,
            "the customer could not be dialled",
        );
    };
    let mut customer_leg = customer_leg;
    let law = loop {
        tokio::select! {
            ev = customer_leg.next_event() => match ev {
                Some(LegEvent::Answered { sdp }) => match negotiate(&sdp) {
                    Some(n) => {
                        let law = n.law;
                        customer_rtp.set_remote(n);
                        break law;
                    }
                    None => {
                        customer_leg.hangup();
                        agent_leg.hang_up();
                        return not_reached(&inner, &call, &agent, &mut timeline, "no common codec");
                    }
                },
                Some(LegEvent::Ringing | LegEvent::Reoffer { .. }) => {}
                Some(LegEvent::Failed { .. } | LegEvent::Hangup) | None => {
                    agent_leg.hang_up();
                    return not_reached(&inner, &call, &agent, &mut timeline, "the customer did not answer");
                }
            },
            Some(request) = commands_rx.recv() => {
                let cancel = matches!(request.command, AgentCommand::Hangup) && request.agent == agent;
                let _ = request.reply.send(if cancel { Ok(None) } else { Err(Refusal::new("not_connected", "the customer has not answered yet")) });
                if cancel {
                    customer_leg.hangup();
                    agent_leg.hang_up();
                    return not_reached(&inner, &call, &agent, &mut timeline, "cancelled by the agent");
                }
            }
        }
    };
    info!("the customer answered the callback");
    settle(&inner, &call, "done");
    let (mut c, done_rx) = Call::new(
        inner,
        call,
        timeline,
        customer_leg,
        customer_rtp,
        law,
        number,
        Pii::new(shown_as),
    );
    c.acd_accepted = true;
    c.use_command_channel(commands_tx, commands_rx);
    c.connect_agent(agent, agent_leg, agent_rtp).await;
    c.run_loop(media_events, done_rx).await;
    c.finish().await;
    c.into_wrap_up();
}

async fn next_phone(offered: &mut [Offered]) -> (usize, Option<LegEvent>) {
    if offered.iter().all(|o| o.phone.is_none()) {
        return std::future::pending().await;
    }
    std::future::poll_fn(|cx| {
        for (i, o) in offered.iter_mut().enumerate() {
            let Some(phone) = o.phone.as_mut() else { continue };
            if let std::task::Poll::Ready(ev) = phone.leg.poll_event(cx) {
                return std::task::Poll::Ready((i, ev));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// The callback left the queue before an agent took it.
fn give_up(
    inner: &Inner,
    call: &CallId,
    timeline: &mut crate::Timeline,
    offered: Vec<Offered>,
    reason: &str,
) {
    for o in offered {
        if let Some(p) = o.phone {
            p.leg.hangup();
        }
        inner.desks.withdraw(call, &o.agent, reason);
    }
    inner.acd.forget(call.clone());
    inner.log(timeline.event(
        Timestamp::now_utc(),
        InteractionEventKind::Ended {
            by: EndedBy::System,
            reason: reason.to_string(),
            quality: None,
        },
    ));
}

/// Records in the CRM how the callback promised during the caller's interaction ended, so a restart
/// does not call the customer again (the write is off the call path).
fn settle(inner: &Inner, call: &CallId, status: &'static str) {
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

/// An agent took the callback but the customer was not reached: the agent goes to wrap-up.
fn not_reached(inner: &Inner, call: &CallId, agent: &AgentId, timeline: &mut crate::Timeline, reason: &str) {
    info!(reason, "callback not completed");
    settle(inner, call, "failed");
    inner.acd.input(acd::Input::CallEnded { call: call.clone() });
    inner.acd.forget(call.clone());
    inner.desks.release(call, agent);
    inner.log(timeline.event(
        Timestamp::now_utc(),
        InteractionEventKind::Ended {
            by: EndedBy::System,
            reason: reason.to_string(),
            quality: None,
        },
    ));
}
