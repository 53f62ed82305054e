//! What the session's legs report: placed, failed, answered, ended; browser softphones opened,
//! failed or losing their media; connecting an agent and agent-first calls not reaching the customer.

use super::*;

// ----- legs -----
impl CallSession {
    pub(super) fn leg_started(&mut self, leg: LegRef) {
        if !self.legs_open.contains(&leg) {
            return;
        }
        if let Phase::Queued { offers, .. } = &mut self.phase {
            for o in offers.iter_mut() {
                if let Via::Phone { leg: l, started } = &mut o.via
                    && *l == leg
                {
                    *started = true;
                }
            }
        }
        if let Phase::Dialing {
            agent,
            side: AgentSide::Ringing(l),
            ..
        } = &self.phase
            && *l == leg
            && let Some(request) = self.dial_request.take()
        {
            let agent = agent.clone();
            self.show_placed_call(&agent);
            self.reply(request, Ok(None));
        }
        if let Phase::External { leg: l, started, .. } = &mut self.phase
            && *l == leg
        {
            *started = true;
        }
        let Phase::Talking(t) = &mut self.phase else {
            return;
        };
        if let Some((l, request, described)) = t.transferring.clone()
            && l == leg
        {
            // The number rings: the agent leaves, the caller hears hold music meanwhile.
            t.transferring = None;
            let agent = t.agent.clone();
            self.reply(request, Ok(None));
            self.leave(&agent);
            self.log(InteractionEventKind::Transferred {
                target: Pii::new(described),
            });
            self.push(Command::PlayHoldMusic);
            self.phase = Phase::External {
                leg,
                started: true,
                bridged: false,
            };
            return;
        }
        if let Some(c) = t.consult.as_mut()
            && c.leg == leg
            && let Some(request) = c.pending.take()
        {
            let agent = t.agent.clone();
            let hold = t.held.is_none();
            if hold {
                t.held = Some(HeldBy::Consult);
            }
            self.reply(request, Ok(None));
            if hold {
                self.push(Command::Hold);
                self.log(InteractionEventKind::Held);
            }
            self.push(Command::DeskPhase {
                agent,
                phase: CallPhase::Consulting,
            });
            return;
        }
        if let Some(sv) = t.supervisor.as_mut()
            && sv.leg == leg
            && let Some(request) = sv.pending.take()
        {
            self.reply(request, Ok(None));
        }
    }

    pub(super) fn leg_failed(&mut self, leg: LegRef, reason: String) {
        let _ = reason;
        // An offered agent's phone.
        let offered = match &self.phase {
            Phase::Queued { offers, .. } => offers
                .iter()
                .find(|o| matches!(o.via, Via::Phone { leg: l, .. } if l == leg))
                .map(|o| o.agent.clone()),
            _ => None,
        };
        if let Some(agent) = offered {
            return self.offer_failed(&agent, "phone not registered");
        }
        match &mut self.phase {
            Phase::Dialing { side, customer, .. } => {
                if matches!(side, AgentSide::Ringing(l) if *l == leg) {
                    if let Some(request) = self.dial_request.take() {
                        self.reply(
                            request,
                            refuse("phone_unreachable", "your SIP phone is not registered"),
                        );
                    }
                    self.not_reached(EndedBy::Agent, "the agent's phone did not answer", "failed");
                } else if *customer == Some(leg) {
                    self.not_reached(EndedBy::Error, "the customer could not be dialled", "failed");
                }
            }
            Phase::External { leg: l, started, .. } if *l == leg => {
                if *started {
                    self.external_failed("the transferred-to number did not answer");
                } else {
                    self.end(EndedBy::System, "transfer failed");
                }
            }
            Phase::Talking(t) => {
                if let Some((l, request, _)) = t.transferring.clone()
                    && l == leg
                {
                    t.transferring = None;
                    self.push(Command::StopPlayback);
                    self.reply(request, refuse("unavailable", "the number could not be dialled"));
                } else if t.consult.as_ref().is_some_and(|c| c.leg == leg) {
                    let c = t.consult.take();
                    if let Some(request) = c.and_then(|c| c.pending) {
                        self.reply(
                            request,
                            refuse("unreachable", "the consulted party cannot be called"),
                        );
                    }
                } else if t.supervisor.as_ref().is_some_and(|s| s.leg == leg) {
                    let sv = t.supervisor.take();
                    if let Some(request) = sv.and_then(|s| s.pending) {
                        self.reply(
                            request,
                            refuse("phone_unreachable", "your SIP phone is not registered"),
                        );
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn leg_answered(&mut self, leg: LegRef, usable: bool) {
        // An offered agent's phone.
        let offered = match &self.phase {
            Phase::Queued { offers, .. } => offers
                .iter()
                .find(|o| matches!(o.via, Via::Phone { leg: l, .. } if l == leg))
                .cloned(),
            _ => None,
        };
        if let Some(o) = offered {
            if !usable {
                return self.offer_failed(&o.agent, "no common codec");
            }
            if let Phase::Queued { offers, .. } = &mut self.phase {
                offers.retain(|x| x.agent != o.agent);
            }
            return self.agent_took(o.agent, leg, o.desk, false);
        }
        match self.phase.clone() {
            Phase::Dialing {
                agent,
                desk,
                side,
                customer,
            } => {
                if matches!(side, AgentSide::Ringing(l) if l == leg) {
                    if !usable {
                        self.hang_up(leg);
                        return self.not_reached(
                            EndedBy::Error,
                            "the agent's phone has no common codec",
                            "failed",
                        );
                    }
                    self.agent_ready(agent, desk, leg, false);
                } else if customer == Some(leg) {
                    if !usable {
                        self.hang_up(leg);
                        return self.not_reached(
                            EndedBy::Error,
                            "the customer's side has no common codec",
                            "failed",
                        );
                    }
                    // The customer is on the line: they are the call's caller from now on.
                    self.leg_gone(leg);
                    self.caller_up = true;
                    if self.origin_kind == OriginKind::Callback {
                        self.push(Command::SettleCallback { status: "done" });
                    }
                    let (agent_leg, browser) = match side {
                        AgentSide::Ready { leg, browser } => (leg, browser),
                        AgentSide::Ringing(l) | AgentSide::Opening(l) => (l, false),
                    };
                    self.connect(agent, agent_leg, desk, browser);
                }
            }
            Phase::External {
                leg: l,
                bridged: false,
                ..
            } if l == leg => {
                if !usable {
                    self.hang_up(leg);
                    return self.external_failed("no common codec");
                }
                self.push(Command::StopPlayback);
                self.push(Command::Bridge { leg });
                self.phase = Phase::External {
                    leg,
                    started: true,
                    bridged: true,
                };
            }
            Phase::Talking(mut t) => {
                if let Some(c) = t.consult.as_mut()
                    && c.leg == leg
                    && !c.joined
                {
                    if usable {
                        c.joined = true;
                        self.push(Command::JoinConsult { leg });
                        self.phase = Phase::Talking(t);
                    } else {
                        self.phase = Phase::Talking(t);
                        self.end_consult();
                    }
                } else if let Some(sv) = t.supervisor.as_mut()
                    && sv.leg == leg
                    && !sv.joined
                {
                    if usable {
                        sv.joined = true;
                        let (supervisor, mode) = (sv.supervisor.clone(), sv.mode);
                        self.phase = Phase::Talking(t);
                        self.push(Command::JoinMonitor { leg, mode });
                        self.log(InteractionEventKind::Monitored {
                            supervisor,
                            mode: mode.name().into(),
                        });
                    } else {
                        self.phase = Phase::Talking(t);
                        self.drop_supervisor();
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn leg_ended(&mut self, leg: LegRef, code: Option<u16>) {
        let offered = match &self.phase {
            Phase::Queued { offers, .. } => offers
                .iter()
                .find(|o| matches!(o.via, Via::Phone { leg: l, .. } if l == leg))
                .map(|o| o.agent.clone()),
            _ => None,
        };
        if let Some(agent) = offered {
            let reason = match code {
                Some(code) => format!("phone answered {code}"),
                None => "phone hung up".to_string(),
            };
            return self.offer_failed(&agent, &reason);
        }
        match self.phase.clone() {
            Phase::Dialing { side, customer, .. } => {
                let agent_leg = match side {
                    AgentSide::Ringing(l) | AgentSide::Opening(l) => l,
                    AgentSide::Ready { leg, .. } => leg,
                };
                if agent_leg == leg {
                    if let Some(request) = self.dial_request.take() {
                        self.reply(
                            request,
                            refuse("phone_unreachable", "your SIP phone did not answer"),
                        );
                    }
                    self.not_reached(EndedBy::Agent, "the agent's phone did not answer", "failed");
                } else if customer == Some(leg) {
                    let (reason, disposition) = match code {
                        Some(486 | 600 | 603) => ("busy", "busy"),
                        Some(408 | 480 | 487) | None => ("no answer", "no_answer"),
                        Some(_) => ("the call failed", "failed"),
                    };
                    let reason = if self.origin_kind == OriginKind::Callback {
                        "the customer did not answer"
                    } else {
                        reason
                    };
                    self.not_reached(EndedBy::System, reason, disposition);
                }
            }
            Phase::External { leg: l, bridged, .. } if l == leg => {
                if bridged {
                    self.end(EndedBy::System, "the transferred-to party hung up");
                } else {
                    self.external_failed("the transferred-to number did not answer");
                }
            }
            Phase::Talking(t) => {
                if t.leg == leg {
                    self.agent_hung_up();
                } else if t.consult.as_ref().is_some_and(|c| c.leg == leg) {
                    self.end_consult();
                } else if t.supervisor.as_ref().is_some_and(|s| s.leg == leg) {
                    self.drop_supervisor();
                } else if t.transferring.as_ref().is_some_and(|(l, _, _)| *l == leg) {
                    self.leg_failed(leg, "ended".into());
                }
            }
            _ => {}
        }
    }

    pub(super) fn browser_opened(&mut self, leg: LegRef, answer_sdp: String) {
        // An offered browser agent accepted.
        let offered = match &self.phase {
            Phase::Queued { offers, .. } => offers
                .iter()
                .find(|o| matches!(o.via, Via::Browser { opening: Some((l, _)) } if l == leg))
                .cloned(),
            _ => None,
        };
        if let Some(o) = offered {
            if let Phase::Queued { offers, .. } = &mut self.phase {
                offers.retain(|x| x.agent != o.agent);
            }
            if let Via::Browser {
                opening: Some((_, request)),
            } = o.via
            {
                self.reply(request, Ok(None));
            }
            self.push(Command::DeskMediaAnswer {
                agent: o.agent.clone(),
                sdp: answer_sdp,
            });
            return self.agent_took(o.agent, leg, o.desk, true);
        }
        match self.phase.clone() {
            Phase::Dialing {
                agent,
                desk,
                side: AgentSide::Opening(l),
                ..
            } if l == leg => {
                self.show_placed_call(&agent);
                if let Some(request) = self.dial_request.take() {
                    self.reply(request, Ok(None));
                }
                self.push(Command::DeskMediaAnswer {
                    agent: agent.clone(),
                    sdp: answer_sdp,
                });
                self.agent_ready(agent, desk, leg, true);
            }
            Phase::Talking(mut t) => {
                if let Some((l, request)) = t.reattaching
                    && l == leg
                {
                    // The new browser leg feeds the same engine leg: bridge and recording go on.
                    t.reattaching = None;
                    self.leg_gone(leg);
                    let resumed = t.lost_at.take().is_some() && t.held == Some(HeldBy::MediaLoss);
                    if resumed {
                        t.held = None;
                    }
                    let agent = t.agent.clone();
                    self.phase = Phase::Talking(t);
                    if resumed {
                        self.push(Command::Resume);
                    }
                    self.push(Command::DeskMediaAnswer {
                        agent,
                        sdp: answer_sdp,
                    });
                    self.reply(request, Ok(None));
                } else if let Some(sv) = t.supervisor.as_mut()
                    && sv.leg == leg
                    && !sv.joined
                {
                    sv.joined = true;
                    let (supervisor, mode, request) = (sv.supervisor.clone(), sv.mode, sv.pending.take());
                    self.phase = Phase::Talking(t);
                    self.push(Command::JoinMonitor { leg, mode });
                    self.log(InteractionEventKind::Monitored {
                        supervisor,
                        mode: mode.name().into(),
                    });
                    if let Some(request) = request {
                        self.reply(request, Ok(Some(answer_sdp)));
                    }
                }
            }
            _ => self.hang_up(leg),
        }
    }

    pub(super) fn browser_failed(&mut self, leg: LegRef, refusal: Refusal) {
        if let Phase::Queued { offers, .. } = &mut self.phase
            && let Some(o) = offers
                .iter_mut()
                .find(|o| matches!(o.via, Via::Browser { opening: Some((l, _)) } if l == leg))
        {
            if let Via::Browser {
                opening: Some((_, request)),
            } = std::mem::replace(&mut o.via, Via::Browser { opening: None })
            {
                // Still offered: the agent may try again.
                self.reply(request, Err(refusal));
            }
            return;
        }
        match &mut self.phase {
            Phase::Dialing {
                side: AgentSide::Opening(l),
                ..
            } if *l == leg => {
                if let Some(request) = self.dial_request.take() {
                    self.reply(request, Err(refusal));
                }
                self.not_reached(EndedBy::Agent, "the browser softphone could not start", "failed");
            }
            Phase::Talking(t) => {
                if let Some((l, request)) = t.reattaching
                    && l == leg
                {
                    t.reattaching = None;
                    self.reply(request, Err(refusal));
                } else if t.supervisor.as_ref().is_some_and(|s| s.leg == leg) {
                    let sv = t.supervisor.take();
                    if let Some(request) = sv.and_then(|s| s.pending) {
                        self.reply(request, Err(refusal));
                    }
                }
            }
            _ => {}
        }
    }

    pub(super) fn browser_media_lost(&mut self, leg: LegRef) {
        let now = self.now;
        match &mut self.phase {
            Phase::Talking(t) if t.leg == leg && t.browser && t.lost_at.is_none() => {
                t.lost_at = Some(now);
                if t.held.is_none() {
                    t.held = Some(HeldBy::MediaLoss);
                    self.push(Command::Hold);
                }
            }
            Phase::Talking(t) if t.supervisor.as_ref().is_some_and(|s| s.leg == leg) => {
                self.drop_supervisor();
            }
            _ => {}
        }
    }

    /// A callback's or an agent-placed call's agent is on their leg: now the customer is dialled.
    pub(super) fn agent_ready(
        &mut self,
        agent: AgentId,
        desk: Option<AgentMedia>,
        leg: LegRef,
        browser: bool,
    ) {
        let Some(trunk) = self.settings.trunk.clone() else {
            self.hang_up(leg);
            return self.not_reached(EndedBy::Error, "the customer could not be dialled", "failed");
        };
        let uri = format!("sip:{}@{}", self.caller.expose(), trunk.host);
        let shown = self.called.expose().clone();
        let customer = self.dial(uri, Some(shown), true);
        self.push(Command::DeskPhase {
            agent: agent.clone(),
            phase: CallPhase::Dialing,
        });
        self.phase = Phase::Dialing {
            agent,
            desk,
            side: AgentSide::Ready { leg, browser },
            customer: Some(customer),
        };
    }

    /// An offered agent answered (phone) or accepted (browser).
    pub(super) fn agent_took(
        &mut self,
        agent: AgentId,
        leg: LegRef,
        desk: Option<AgentMedia>,
        browser: bool,
    ) {
        self.stop_all_offers("answered elsewhere");
        if self.origin_kind == OriginKind::Callback {
            // The router hears it now; the customer is called next.
            self.push(Command::Acd(acd::Input::OfferAccepted {
                call: self.id.clone(),
                agent: agent.clone(),
            }));
            self.acd_accepted = true;
            self.push(Command::ForgetQueue);
            self.agent_ready(agent, desk, leg, browser);
            return;
        }
        self.connect(agent, leg, desk, browser);
    }

    /// The agent talks to the caller: bridged, recorded, the ACD and the desktop told.
    pub(super) fn connect(&mut self, agent: AgentId, leg: LegRef, desk: Option<AgentMedia>, browser: bool) {
        self.push(Command::StopPlayback);
        self.push(Command::Bridge { leg });
        self.stop_all_offers("answered elsewhere");
        if !self.outbound && !self.acd_accepted {
            self.push(Command::Acd(acd::Input::OfferAccepted {
                call: self.id.clone(),
                agent: agent.clone(),
            }));
        }
        self.answered = true;
        self.log(InteractionEventKind::Answered { agent: agent.clone() });
        if self.campaign.is_some() && !self.campaign_connected {
            self.campaign_connected = true;
            self.push(Command::Campaign(CampaignNote::Connected {
                agent: agent.clone(),
                at: self.now,
            }));
        }
        if self.origin_kind != OriginKind::Callback {
            self.push(Command::ForgetQueue);
        }
        self.push(Command::DeskPhase {
            agent: agent.clone(),
            phase: CallPhase::Connected,
        });
        let recording = self.settings.record_calls;
        if recording {
            self.push(Command::StartRecording {
                paused: self.recording_paused,
            });
        }
        self.phase = Phase::Talking(Box::new(Talking {
            agent: agent.clone(),
            leg,
            desk,
            browser,
            lost_at: None,
            reattaching: None,
            held: None,
            muted: false,
            recording,
            consult: None,
            supervisor: None,
            transferring: None,
        }));
        self.ivr_event(IvrEvent::QueueEvent(ivr::QueueEvent::AgentAnswered { agent }));
    }

    /// An agent-first call that never reached the customer: the agent goes to wrap-up (callback) or
    /// back as they were (placed calls).
    pub(super) fn not_reached(&mut self, by: EndedBy, reason: &str, disposition: &str) {
        let (agent, desk, legs) = match &self.phase {
            Phase::Dialing {
                agent,
                desk,
                side,
                customer,
            } => {
                let l = match side {
                    AgentSide::Ringing(l) | AgentSide::Opening(l) => *l,
                    AgentSide::Ready { leg, .. } => *leg,
                };
                (agent.clone(), *desk, [Some(l), *customer])
            }
            _ => return,
        };
        for leg in legs.into_iter().flatten() {
            self.hang_up(leg);
        }
        if let Some(link) = self.preview.clone() {
            self.log(InteractionEventKind::DialAttempt {
                campaign: link.campaign,
                lead: link.lead,
                outcome: disposition.to_string(),
            });
        }
        if self.origin_kind == OriginKind::Callback {
            self.push(Command::SettleCallback { status: "failed" });
            self.push(Command::Acd(acd::Input::CallEnded {
                call: self.id.clone(),
            }));
            self.push(Command::ForgetQueue);
            self.push(Command::DeskRelease { agent });
        } else {
            self.push(Command::DeskRelease { agent });
            if let Some(restore) = self.restore.clone() {
                // The router put the agent on the call they placed: it ends, and they go back.
                self.push(Command::Acd(acd::Input::CallEnded {
                    call: self.id.clone(),
                }));
                self.push(Command::Acd(restore));
            }
        }
        let _ = desk;
        self.end(by, reason);
        self.phase = Phase::SelfService;
    }

    /// The outside number never answered: the caller is not dropped but queued again.
    pub(super) fn external_failed(&mut self, reason: &str) {
        if let Phase::External { leg, .. } = self.phase {
            self.hang_up(leg);
        }
        self.push(Command::StopPlayback);
        self.phase = Phase::SelfService;
        match self.last_queue.clone() {
            Some((queue, priority)) => self.enqueue(queue, priority, None, None),
            None => self.end(EndedBy::System, reason),
        }
    }
}
