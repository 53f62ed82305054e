//! Calls an agent places from the desktop (click-to-dial; preview outbound). The agent's own leg
//! comes first: their SIP phone rings, or their browser softphone's offer is answered at once; then
//! the customer is dialled through the outbound trunk. Once the customer answers, the call runs like
//! any other (hold, transfer, hang-up, wrap-up with a disposition), with the customer as "caller".
//!
//! The ACD does not offer calls to the agent meanwhile: the agent is not ready with reason
//! `outbound` for the length of the call, and afterwards back to the state they dialled from.
//!
//! A preview campaign's lead is dialled the same way, with the campaign's caller id; the agent goes
//! back to ready afterwards (for the next lead), and the call records its campaign attempt
//! ([`PreviewDial`]).

use crate::Inner;
use crate::call::{AgentLeg, Call, PhoneRing, negotiate, open_browser_leg, ring_phone};
use crate::campaign_runner::PreviewDial;
use crate::desk::{
    AgentCommand, AgentMedia, CallPhase, CommandRequest, DeskEvent, DialNumber, Refusal, ScreenPop,
};
use dialer::campaign::Disposition;
use domain::{
    AgentId, CallId, Channel, Direction, EndedBy, InteractionEventKind, InteractionId, Pii, Timestamp,
};
use media::engine::RtpLeg;
use sip_gateway::{LegEvent, LegHandle, OriginateRequest};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{Instrument, info, info_span, warn};

/// The reason code an agent is not ready with while on a call they placed.
pub const OUTBOUND_REASON: &str = "outbound";

/// How long the customer's phone may ring.
const CUSTOMER_RING: Duration = Duration::from_secs(45);

/// Places a call for `agent` to `number`. Returns once the dial is under way; the desktop follows it
/// through the usual frames (the pop, then `dialing`, `connected`, `wrap_up`).
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
    if inner.desks.busy(&agent) {
        return Err(Refusal::new(
            "illegal_transition",
            "you are on a call: one call at a time",
        ));
    }
    // Where the agent is now decides where they go back to.
    let before = inner
        .acd
        .kpis()
        .await
        .and_then(|k| k.agents.into_iter().find(|a| a.agent == agent))
        .map(|a| a.state)
        .ok_or_else(|| Refusal::new("unknown_agent", "you are not an agent of the ACD"))?;
    let restore = match before {
        // A preview campaign's agent is not ready (`preview`) while deciding, and ready for the next
        // lead after the call.
        acd::AgentState::NotReady { .. } if preview.is_some() => {
            acd::Input::AgentReady { agent: agent.clone() }
        }
        acd::AgentState::Available | acd::AgentState::WrapUp { .. } => {
            acd::Input::AgentReady { agent: agent.clone() }
        }
        acd::AgentState::NotReady { reason } => acd::Input::AgentNotReady {
            agent: agent.clone(),
            reason,
        },
        other => {
            return Err(Refusal::new(
                "illegal_transition",
                format!("you cannot place a call while {}", other.kind().name()),
            ));
        }
    };
    let outbound =
        acd::ReasonCode::new(OUTBOUND_REASON).map_err(|e| Refusal::new("unavailable", e.to_string()))?;
    inner
        .acd
        .request(acd::Input::AgentNotReady {
            agent: agent.clone(),
            reason: outbound,
        })
        .await
        .map_err(|e| Refusal::new("illegal_transition", e.to_string()))?;

    let now = Timestamp::now_utc();
    let id = CallId::generate(&inner.node, now, inner.next_counter(), rand::random());
    let Ok(interaction) = InteractionId::new(id.as_str()) else {
        inner.acd.input(restore);
        return Err(Refusal::new("unavailable", "no call id"));
    };
    let mut timeline = crate::Timeline::new(interaction);
    let shown_as = match &preview {
        Some(p) => p.caller_id().to_string(),
        None => trunk
            .caller_id
            .clone()
            .unwrap_or_else(|| agent.as_str().to_string()),
    };
    inner.log(timeline.event(
        now,
        InteractionEventKind::Arrived {
            channel: Channel::Voice,
            direction: Direction::Outbound,
            from: Pii::new(shown_as.clone()),
            to: Pii::new(number.expose().to_string()),
        },
    ));
    let customer = tokio::time::timeout(
        Duration::from_millis(500),
        inner.crm.find_customer_by_phone(number.expose()),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .flatten();
    if let Some(card) = &customer {
        inner.log(timeline.event(
            Timestamp::now_utc(),
            InteractionEventKind::CustomerIdentified {
                customer: card.customer.id.clone(),
                tier: card.customer.tier.as_str().to_string(),
            },
        ));
    }
    let pop = Arc::new(ScreenPop {
        call: id.clone(),
        direction: Direction::Outbound,
        queue: None,
        caller: Pii::new(number.expose().to_string()),
        called: Pii::new(shown_as.clone()),
        waited_ms: 0,
        explanation: if preview.is_some() {
            "campaign lead dialled from the preview".into()
        } else {
            "placed by the agent".into()
        },
        customer,
        ivr: None,
        campaign: preview.as_ref().map(PreviewDial::pop),
    });
    let (commands_tx, commands_rx) = mpsc::unbounded_channel();
    inner.desks.offer(&agent, pop, commands_tx.clone(), now);

    // The agent's leg: the browser's answer goes back at once; a phone must be picked up first.
    let agent_side = match media {
        AgentMedia::Browser => {
            let opened = open_browser_leg(&inner, sdp).and_then(|(browser, answer)| {
                let (agent_rtp, _events) = inner
                    .media
                    .allocate_leg()
                    .map_err(|e| Refusal::new("unavailable", e.to_string()))?;
                browser
                    .connect_plain(&agent_rtp)
                    .map_err(|e| Refusal::new("unavailable", e.to_string()))?;
                Ok((browser, answer, agent_rtp))
            });
            match opened {
                Ok((browser, answer, agent_rtp)) => {
                    inner.desks.notify(
                        &agent,
                        DeskEvent::MediaAnswer {
                            call: id.clone(),
                            sdp: answer,
                        },
                    );
                    AgentSide::Ready(
                        AgentLeg::Browser {
                            leg: Some(browser),
                            lost_at: None,
                        },
                        agent_rtp,
                    )
                }
                Err(refusal) => {
                    inner.desks.release(&id, &agent);
                    inner.acd.input(restore);
                    return Err(refusal);
                }
            }
        }
        AgentMedia::Phone => match ring_phone(&inner, &agent, number.expose()).await {
            Some(phone) => AgentSide::Ringing(phone),
            None => {
                inner.desks.release(&id, &agent);
                inner.acd.input(restore);
                return Err(Refusal::new(
                    "phone_unreachable",
                    "your SIP phone is not registered",
                ));
            }
        },
    };
    let span = info_span!("call", call = %id, direction = "outbound");
    let call_id = id.clone();
    if let Some(p) = &preview {
        p.placed();
    }
    let row = preview.as_ref().map(|p| p.row(&id, now));
    tokio::spawn(
        async move {
            let placed = Placed {
                preview,
                row,
                inner,
                id,
                timeline,
                agent,
                number,
                shown_as,
                restore,
                commands_tx,
                commands_rx,
            };
            placed.run(agent_side).await;
        }
        .instrument(span),
    );
    Ok(call_id)
}

enum AgentSide {
    Ringing(PhoneRing),
    Ready(AgentLeg, RtpLeg),
}

/// An agent-placed call before the customer answers.
struct Placed {
    /// A preview campaign's call and its attempt row.
    preview: Option<PreviewDial>,
    row: Option<crm_store::DialAttempt>,
    inner: Arc<Inner>,
    id: CallId,
    timeline: crate::Timeline,
    agent: AgentId,
    number: DialNumber,
    shown_as: String,
    restore: acd::Input,
    commands_tx: mpsc::UnboundedSender<CommandRequest>,
    commands_rx: mpsc::UnboundedReceiver<CommandRequest>,
}

impl Placed {
    fn log(&mut self, kind: InteractionEventKind) {
        let ev = self.timeline.event(Timestamp::now_utc(), kind);
        self.inner.log(ev);
    }

    /// Ends a call that never reached the customer (for a campaign lead, the attempt ends with
    /// `disposition`).
    fn give_up(mut self, by: EndedBy, reason: &str, disposition: Disposition) {
        info!(reason, "placed call ended before the customer answered");
        if let Some(p) = &self.preview {
            let event = p.dial_event(disposition);
            self.log(event);
        }
        if let (Some(p), Some(row)) = (self.preview.take(), self.row.take()) {
            let inner = self.inner.clone();
            tokio::spawn(async move { p.finish(&inner, row, disposition).await }.in_current_span());
        }
        self.log(InteractionEventKind::Ended {
            by,
            reason: reason.to_string(),
            quality: None,
        });
        self.inner.desks.release(&self.id, &self.agent);
        self.inner.acd.input(self.restore.clone());
    }

    /// Answers a desktop command while nothing is connected: only hang-up (cancel) means anything.
    fn refuse_or_cancel(&self, request: CommandRequest) -> bool {
        let cancel = matches!(request.command, AgentCommand::Hangup) && request.agent == self.agent;
        let answer = if cancel {
            Ok(None)
        } else {
            Err(Refusal::new("not_connected", "the call is not connected yet"))
        };
        let _ = request.reply.send(answer);
        cancel
    }

    async fn run(mut self, side: AgentSide) {
        let (agent_leg, agent_rtp) = match side {
            AgentSide::Ready(leg, rtp) => (leg, rtp),
            AgentSide::Ringing(mut phone) => loop {
                tokio::select! {
                    ev = phone.leg.next_event() => match ev {
                        Some(LegEvent::Answered { sdp }) => match negotiate(&sdp) {
                            Some(n) => {
                                phone.rtp.set_remote(n);
                                break (AgentLeg::Phone(phone.leg), phone.rtp);
                            }
                            None => {
                                phone.leg.hangup();
                                return self.give_up(EndedBy::Error, "the agent's phone has no common codec", Disposition::Failed);
                            }
                        },
                        Some(LegEvent::Ringing | LegEvent::Reoffer { .. }) => {}
                        Some(LegEvent::Failed { .. } | LegEvent::Hangup) | None => {
                            return self.give_up(EndedBy::Agent, "the agent's phone did not answer", Disposition::Failed);
                        }
                    },
                    Some(request) = self.commands_rx.recv() => {
                        if self.refuse_or_cancel(request) {
                            phone.leg.hangup();
                            return self.give_up(EndedBy::Agent, "cancelled by the agent", Disposition::Failed);
                        }
                    }
                }
            },
        };
        // Now the customer.
        if let (Some(p), Some(row)) = (&self.preview, &self.row) {
            p.store(&self.inner, row).await;
        }
        let Some((customer_leg, customer_rtp, media_events)) = self.dial_customer().await else {
            agent_leg.hang_up();
            return self.give_up(
                EndedBy::Error,
                "the customer could not be dialled",
                Disposition::Failed,
            );
        };
        self.inner
            .desks
            .set_phase(&self.id, &self.agent, CallPhase::Dialing, Timestamp::now_utc());
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
                            return self.give_up(EndedBy::Error, "the customer's side has no common codec", Disposition::Failed);
                        }
                    },
                    Some(LegEvent::Ringing | LegEvent::Reoffer { .. }) => {}
                    Some(LegEvent::Failed { code }) => {
                        agent_leg.hang_up();
                        let (reason, disposition) = match code {
                            486 | 600 | 603 => ("busy", Disposition::Busy),
                            408 | 480 | 487 => ("no answer", Disposition::NoAnswer),
                            _ => ("the call failed", Disposition::Failed),
                        };
                        return self.give_up(EndedBy::System, reason, disposition);
                    }
                    Some(LegEvent::Hangup) | None => {
                        agent_leg.hang_up();
                        return self.give_up(EndedBy::System, "no answer", Disposition::NoAnswer);
                    }
                },
                Some(request) = self.commands_rx.recv() => {
                    if self.refuse_or_cancel(request) {
                        customer_leg.hangup();
                        agent_leg.hang_up();
                        return self.give_up(EndedBy::Agent, "cancelled by the agent", Disposition::NoAnswer);
                    }
                }
            }
        };
        info!("the customer answered");
        let Placed {
            preview,
            mut row,
            inner,
            id,
            timeline,
            agent,
            number,
            shown_as,
            restore,
            commands_tx,
            commands_rx,
        } = self;
        let (mut call, done_rx) = Call::new(
            inner,
            id,
            timeline,
            customer_leg,
            customer_rtp,
            law,
            Pii::new(number.expose().to_string()),
            Pii::new(shown_as),
        );
        call.outbound = Some(restore);
        call.use_command_channel(commands_tx, commands_rx);
        if let Some(row) = row.as_mut() {
            row.answered_at = Some(Timestamp::now_utc());
        }
        call.campaign = preview.as_ref().map(PreviewDial::link);
        call.connect_agent(agent, agent_leg, agent_rtp).await;
        call.run_loop(media_events, done_rx).await;
        call.finish().await;
        let ended = match (&preview, row) {
            (Some(p), Some(mut row)) => {
                let disposition = PreviewDial::outcome(call.campaign.as_ref(), &mut row);
                call.log(p.dial_event(disposition));
                Some((row, disposition))
            }
            _ => None,
        };
        let inner = call.inner_handle();
        call.into_wrap_up();
        if let (Some(p), Some((row, disposition))) = (preview, ended) {
            p.finish(&inner, row, disposition).await;
        }
    }

    async fn dial_customer(&self) -> Option<(LegHandle, RtpLeg, mpsc::Receiver<media::engine::LegEvent>)> {
        dial_number(&self.inner, self.number.expose(), &self.shown_as, CUSTOMER_RING).await
    }
}

/// Dials an outside `number` through the outbound trunk with a fresh engine leg's offer, showing
/// `shown_as`; the leg, its engine leg and that leg's media events.
pub(crate) async fn dial_number(
    inner: &Inner,
    number: &str,
    shown_as: &str,
    ring: Duration,
) -> Option<(LegHandle, RtpLeg, mpsc::Receiver<media::engine::LegEvent>)> {
    let trunk = inner.outbound.as_ref()?;
    let gateway = inner.gateway.get()?.clone();
    let (rtp, events) = match inner.media.allocate_leg() {
        Ok(x) => x,
        Err(e) => {
            warn!(error = %e, "no RTP leg for an outside number");
            return None;
        }
    };
    let offer = media::sdp::offer(
        rtp.local_addr(),
        rand::random::<u32>() as u64,
        1,
        media::sdp::MediaDirection::SendRecv,
    );
    let request = OriginateRequest {
        target: Pii::new(format!("sip:{number}@{}", trunk.host)),
        from_user: Pii::new(shown_as.to_string()),
        sdp: offer.into_bytes(),
        ring_timeout: ring,
    };
    match gateway.originate(request).await {
        Ok(leg) => Some((leg, rtp, events)),
        Err(e) => {
            warn!(error = %e, "outside number not dialled");
            None
        }
    }
}
