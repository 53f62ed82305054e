//! The call's course: starting, identifying the caller, queueing and offers, the caller leaving,
//! the IVR beside the call, voicemail.

use super::*;

// ----- the call's course -----
impl CallSession {
    /// Agent-placed calls ring the agent once the customer is identified; callbacks wait in line.
    pub(super) fn start(&mut self) {
        if self.phase != Phase::Arriving {
            return;
        }
        match self.origin_kind {
            OriginKind::ClickToDial => self.ask_customer(),
            OriginKind::Callback => {
                let queue = self.callback_queue.clone();
                if let Some(queue) = queue {
                    self.phase = Phase::Queued {
                        queue,
                        offers: Vec::new(),
                    };
                }
            }
            OriginKind::Inbound | OriginKind::Campaign => {}
        }
    }

    pub(super) fn caller_answered(&mut self) {
        if self.phase != Phase::Arriving {
            return;
        }
        self.phase = Phase::SelfService;
        self.caller_up = true;
        if self.ivr.is_some() {
            self.ivr_event(IvrEvent::Started);
        } else if self.origin_kind == OriginKind::Campaign {
            if let Some(queue) = self.waiting_queue.take() {
                let preferred = self.campaign_preferred.clone();
                self.enqueue(queue, acd::Priority::MAX.get(), None, preferred);
            }
        } else if self.waiting_queue.is_some() {
            // No IVR to ask the CRM: the tier sets the priority, the account manager goes first.
            self.ask_customer();
            self.route_waiting_queue();
        } else {
            let reason = self
                .nowhere
                .take()
                .unwrap_or_else(|| "no IVR flow or queue".into());
            self.end(EndedBy::Error, &reason);
        }
    }

    pub(super) fn customer_known(&self) -> bool {
        matches!(self.customer, Some(Some(_)))
    }

    pub(super) fn ask_customer(&mut self) {
        if self.customer.is_none() {
            self.customer = Some(None);
            let number = self.caller.clone();
            self.push(Command::IdentifyCaller { number });
        }
    }

    pub(super) fn identified(&mut self, found: Option<CustomerSummary>) {
        if self.customer != Some(None) {
            return;
        }
        // The IVR's own lookup has already put the customer on the interaction.
        let known_to_ivr = |id: &CustomerId| {
            self.ivr.as_ref().is_some_and(|s| {
                s.state().vars.get("customer.id") == Some(&ivr::Value::Text(id.as_str().to_string()))
            })
        };
        if let Some(c) = found.as_ref().filter(|c| !known_to_ivr(&c.id)) {
            let (customer, tier) = (c.id.clone(), c.tier.clone());
            self.log(InteractionEventKind::CustomerIdentified { customer, tier });
        }
        self.customer = Some(Some(found));
        self.route_waiting_queue();
        for (offer, media) in std::mem::take(&mut self.waiting_offers) {
            self.offer(offer, media);
        }
        if self.origin_kind == OriginKind::ClickToDial && self.phase == Phase::Arriving {
            self.ring_placing_agent();
        }
    }

    pub(super) fn route_waiting_queue(&mut self) {
        if !self.customer_known() || self.origin_kind != OriginKind::Inbound {
            return;
        }
        if let Some(queue) = self.waiting_queue.take() {
            let (priority, manager) = match self.customer() {
                Some(c) => (c.queue_priority, c.account_manager.clone()),
                None => (0, None),
            };
            self.enqueue(queue, priority, None, manager);
        }
    }

    /// Click-to-dial: the agent's own leg first. Their desktop shows the call once that leg is up
    /// ([`Self::show_placed_call`]): an agent whose phone cannot be reached gets an error, no offer.
    pub(super) fn ring_placing_agent(&mut self) {
        let Some((agent, media, sdp, shown_as)) = self.click.clone() else {
            return;
        };
        let leg = self.new_leg();
        let side = match media {
            AgentMedia::Browser => {
                self.push(Command::OpenBrowser {
                    leg,
                    agent: agent.clone(),
                    sdp,
                    attach_to: None,
                });
                AgentSide::Opening(leg)
            }
            AgentMedia::Phone => {
                let shown_as = self.caller.expose().clone();
                self.push(Command::RingPhone {
                    leg,
                    agent: agent.clone(),
                    shown_as,
                });
                AgentSide::Ringing(leg)
            }
        };
        let _ = shown_as;
        self.phase = Phase::Dialing {
            agent,
            desk: Some(media),
            side,
            customer: None,
        };
    }

    /// The placing agent's leg is up (their phone rings, or the softphone answered): their desktop
    /// shows the call.
    pub(super) fn show_placed_call(&mut self, agent: &AgentId) {
        let explanation = if self.preview.is_some() {
            "campaign lead dialled from the preview"
        } else {
            "placed by the agent"
        };
        self.push(Command::DeskOffer {
            agent: agent.clone(),
            queue: None,
            explanation: explanation.into(),
            waited_ms: 0,
        });
    }

    pub(crate) fn enqueue(
        &mut self,
        queue: QueueId,
        priority: u8,
        skills: Option<String>,
        preferred: Option<AgentId>,
    ) {
        let mut request = acd::CallRequest::new(self.id.clone(), queue.clone());
        request.priority = acd::Priority::new(priority.min(9)).unwrap_or_default();
        request.requirement = skills.as_deref().and_then(|s| acd::SkillExpr::parse(s).ok());
        request.preferred = preferred.map(|agent| acd::PreferredAgent {
            agent,
            timeout_secs: 30,
        });
        self.push(Command::Enqueue(request));
        self.last_queue = Some((queue.clone(), priority));
        self.log(InteractionEventKind::Enqueued {
            queue: queue.clone(),
            priority,
        });
        self.phase = Phase::Queued {
            queue,
            offers: Vec::new(),
        };
    }

    /// The ACD offers the call to these agents: phones ring, desktops show it.
    pub(super) fn offer(&mut self, offer: acd::Offer, media: DeskMedia) {
        if !matches!(self.phase, Phase::Queued { .. }) {
            // The caller left meanwhile: the router hears it from the abandon or the end.
            return;
        }
        let explanation = offer.explanation.sentence();
        for agent in offer.agents {
            let already = matches!(&self.phase, Phase::Queued { offers, .. } if offers.iter().any(|o| o.agent == agent));
            if already {
                continue;
            }
            let desk = media.iter().find(|(a, _)| a == &agent).and_then(|(_, m)| *m);
            self.log(InteractionEventKind::Offered {
                agent: agent.clone(),
                explanation: explanation.clone(),
            });
            self.push(Command::DeskOffer {
                agent: agent.clone(),
                queue: Some(offer.queue.clone()),
                explanation: explanation.clone(),
                waited_ms: offer.explanation.waited_ms,
            });
            let via = if desk == Some(AgentMedia::Browser) {
                // The desktop answers with the softphone; no SIP phone rings.
                Via::Browser { opening: None }
            } else {
                let leg = self.new_leg();
                let shown_as = match self.origin_kind {
                    OriginKind::Callback => self.caller.expose().clone(),
                    _ => "callcenter".to_string(),
                };
                self.push(Command::RingPhone {
                    leg,
                    agent: agent.clone(),
                    shown_as,
                });
                Via::Phone { leg, started: false }
            };
            if let Phase::Queued { offers, .. } = &mut self.phase {
                offers.push(Offer { agent, via, desk });
            }
        }
    }

    /// Takes the offer to `agent` back (if any); their phone stops, their desktop is told.
    pub(super) fn take_offer(&mut self, agent: &AgentId, reason: &str) -> Option<Offer> {
        let Phase::Queued { offers, .. } = &mut self.phase else {
            return None;
        };
        let i = offers.iter().position(|o| &o.agent == agent)?;
        let o = offers.remove(i);
        match &o.via {
            Via::Phone { leg, .. } => self.hang_up(*leg),
            Via::Browser {
                opening: Some((leg, request)),
            } => {
                let (leg, request) = (*leg, *request);
                self.hang_up(leg);
                self.reply(request, refuse("no_offer", "the offer was withdrawn"));
            }
            Via::Browser { opening: None } => {}
        }
        self.push(Command::DeskWithdraw {
            agent: agent.clone(),
            reason: reason.to_string(),
        });
        Some(o)
    }

    pub(super) fn offer_cancelled(&mut self, agent: &AgentId, reason: &str) {
        if self.take_offer(agent, reason).is_some() {
            self.log(InteractionEventKind::OfferFailed {
                agent: agent.clone(),
                reason: reason.to_string(),
            });
        }
    }

    /// The offer failed on our side (phone unreachable, rejected, no codec): the ACD hears it.
    pub(super) fn offer_failed(&mut self, agent: &AgentId, reason: &str) {
        if self.take_offer(agent, reason).is_some() {
            self.push(Command::Acd(acd::Input::OfferRejected {
                call: self.id.clone(),
                agent: agent.clone(),
            }));
            self.log(InteractionEventKind::OfferFailed {
                agent: agent.clone(),
                reason: reason.to_string(),
            });
        }
    }

    pub(super) fn stop_all_offers(&mut self, reason: &str) {
        let agents: Vec<AgentId> = match &self.phase {
            Phase::Queued { offers, .. } => offers.iter().map(|o| o.agent.clone()).collect(),
            _ => Vec::new(),
        };
        for agent in agents {
            self.take_offer(&agent, reason);
        }
    }

    pub(super) fn overflowed(&mut self, target: String) {
        let Some(queue) = self.queued().cloned() else {
            return;
        };
        self.stop_all_offers("the queue sent the call elsewhere");
        self.log(InteractionEventKind::Overflowed {
            from: queue.clone(),
            to: target,
        });
        self.push(Command::ForgetQueue);
        self.phase = Phase::SelfService;
        if self.origin_kind == OriginKind::Callback {
            self.push(Command::SettleCallback { status: "failed" });
            self.end(EndedBy::System, "the queue sent the callback elsewhere");
        } else if self.ivr.is_some() {
            self.ivr_event(IvrEvent::QueueEvent(ivr::QueueEvent::Rejected));
        } else {
            self.end(EndedBy::System, "queue overflow");
        }
    }

    pub(super) fn caller_hung_up(&mut self) {
        if matches!(self.phase, Phase::Ended { .. }) || self.ending.is_some() {
            return;
        }
        self.end(EndedBy::Caller, "caller hung up");
        // A caller waiting for their callback keeps the place in line.
        if self.queued().is_some() && self.callback.is_none() {
            self.stop_all_offers("caller hung up");
            self.push(Command::Abandon);
            self.push(Command::ForgetQueue);
            self.closing += 1;
            self.phase = Phase::SelfService;
        }
        if let Some(ivr) = self.ivr.as_mut() {
            let commands = ivr.handle(self.now, IvrEvent::CallerHungUp);
            for c in commands {
                if let IvrCommand::Log(l) = c {
                    self.log(l.to_event_kind());
                }
            }
        }
    }

    // ----- the IVR -----

    pub(super) fn ivr_event(&mut self, event: IvrEvent) {
        let Some(ivr) = self.ivr.as_mut() else { return };
        let commands = ivr.handle(self.now, event);
        let state = Box::new(ivr.state().clone());
        self.push(Command::SaveIvrState(state));
        for c in commands {
            self.ivr_command(c);
        }
        let done = self.ivr.as_ref().is_some_and(|s| s.outcome().is_some());
        let busy = matches!(
            self.phase,
            Phase::Talking(_) | Phase::Queued { .. } | Phase::External { .. } | Phase::Voicemail { .. }
        );
        if done && !busy {
            self.end(EndedBy::System, "IVR finished");
        }
    }

    pub(super) fn ivr_command(&mut self, c: IvrCommand) {
        match c {
            IvrCommand::Play { prompts, barge_in } => self.push(Command::Play {
                prompts: prompts.into_iter().map(|p| p.path).collect(),
                looped: false,
                barge_in,
            }),
            IvrCommand::StopPlayback => self.push(Command::StopPlayback),
            IvrCommand::StartTimer { id, after } => {
                self.ivr_timers.insert(id, self.now + after);
            }
            IvrCommand::CancelTimer { id } => {
                self.ivr_timers.remove(&id);
            }
            c @ (IvrCommand::Lookup { .. } | IvrCommand::Webhook { .. } | IvrCommand::QueryQueue { .. }) => {
                self.push(Command::Ivr(c))
            }
            IvrCommand::Enqueue {
                queue,
                priority,
                skills,
                preferred_agent,
            } => self.enqueue(queue, priority, skills, preferred_agent),
            IvrCommand::LeaveQueue { .. } => {
                if self.queued().is_some() {
                    self.stop_all_offers("the caller left the queue");
                    self.push(Command::Acd(acd::Input::CallAbandoned {
                        call: self.id.clone(),
                    }));
                    self.push(Command::ForgetQueue);
                    self.phase = Phase::SelfService;
                }
            }
            IvrCommand::RequestCallback { number, .. } => {
                self.log(InteractionEventKind::CallbackRequested {
                    number: number.clone(),
                });
                if self.queued().is_some() && self.settings.trunk.is_some() {
                    self.callback = Some(number);
                }
            }
            IvrCommand::Voicemail {
                mailbox,
                max_length,
                beep,
            } => self.start_voicemail(&mailbox, max_length, beep),
            IvrCommand::Transfer { target } => {
                let (uri, described, from) = match &target {
                    ivr::TransferTarget::SipUri(uri) => (Some(uri.clone()), uri.clone(), None),
                    ivr::TransferTarget::Number(n) => (
                        self.settings
                            .trunk
                            .as_ref()
                            .map(|t| format!("sip:{n}@{}", t.host)),
                        format!("number:{n}"),
                        self.settings.trunk.as_ref().and_then(|t| t.caller_id.clone()),
                    ),
                };
                self.log(InteractionEventKind::Transferred {
                    target: Pii::new(described),
                });
                match uri {
                    Some(uri) => {
                        let leg = self.dial(uri, from, false);
                        self.phase = Phase::External {
                            leg,
                            started: false,
                            bridged: false,
                        };
                    }
                    None => self.end(EndedBy::System, "transfer failed"),
                }
            }
            IvrCommand::Hangup { reason } => self.end(EndedBy::System, &reason),
            IvrCommand::PauseRecording => {
                self.recording_paused = true;
                if matches!(&self.phase, Phase::Talking(t) if t.recording) {
                    self.push(Command::PauseRecording);
                }
            }
            IvrCommand::ResumeRecording => {
                self.recording_paused = false;
                if matches!(&self.phase, Phase::Talking(t) if t.recording) {
                    self.push(Command::ResumeRecording);
                }
            }
            IvrCommand::Log(l) => self.log(l.to_event_kind()),
        }
    }

    pub(super) fn dial(&mut self, uri: String, from: Option<String>, customer: bool) -> LegRef {
        let leg = self.new_leg();
        let ring = self.settings.customer_ring;
        self.push(Command::Dial {
            leg,
            uri,
            from,
            ring,
            customer,
        });
        leg
    }

    pub(super) fn start_voicemail(&mut self, mailbox: &str, max_length: Duration, beep: bool) {
        let safe: String = mailbox
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        let name = format!("voicemail-{safe}-{}", self.id.as_str());
        self.push(Command::StartVoicemail { name, beep });
        self.voicemail_started = Some(self.now);
        self.voicemail_recording = true;
        self.last_mailbox = safe.clone();
        self.phase = Phase::Voicemail {
            mailbox: safe,
            started: self.now,
            until: self.now + max_length,
        };
    }

    pub(super) fn stop_voicemail(&mut self) {
        if self.voicemail_recording {
            self.voicemail_recording = false;
            self.push(Command::StopVoicemail);
            self.closing += 1;
        }
    }
}
