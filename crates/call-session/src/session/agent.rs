//! The agent on the call: leaving (to wrap-up), hanging up, consultations, supervisors, and every
//! desktop command (accept, reject, hang up, hold, mute, transfer, consult, monitor, wrap-up).

use super::*;

// ----- the agent on the call -----
impl CallSession {
    /// The agent leaves the call: supervisor and consulted party go, the recording closes, the
    /// agent's leg is hung up, the router hears the call ended, and the agent's wrap-up starts now.
    pub(super) fn leave(&mut self, agent: &AgentId) {
        let Phase::Talking(t) = &self.phase else { return };
        if &t.agent != agent {
            return;
        }
        let t = (**t).clone();
        if t.supervisor.is_some() {
            self.drop_supervisor();
        }
        if let Some(c) = t.consult {
            if c.joined {
                self.push(Command::LeaveConsult);
            }
            self.hang_up(c.leg);
        }
        if let Some((l, request, _)) = t.transferring {
            self.hang_up(l);
            self.reply(request, refuse("call_ended", "the call has ended"));
        }
        if let Some((l, request)) = t.reattaching {
            self.hang_up(l);
            self.reply(request, refuse("call_ended", "the call has ended"));
        }
        if t.recording {
            self.push(Command::StopRecording);
            self.closing += 1;
        }
        self.hang_up(t.leg);
        // Queued or placed by the agent, the router holds the agent on the call until it hears so.
        self.push(Command::Acd(acd::Input::CallEnded {
            call: self.id.clone(),
        }));
        self.phase = Phase::SelfService;
        self.start_wrap_up(t.agent, t.desk);
    }

    pub(super) fn start_wrap_up(&mut self, agent: AgentId, desk: Option<AgentMedia>) {
        let restore = self.restore.clone();
        if desk.is_none() {
            // Nobody to fill in a form: done at once.
            self.push(Command::DeskRelease { agent });
            if let Some(restore) = restore {
                self.push(Command::Acd(restore));
            }
            return;
        }
        self.push(Command::DeskPhase {
            agent: agent.clone(),
            phase: CallPhase::WrapUp,
        });
        self.wrap_ups.retain(|w| w.agent != agent);
        self.wrap_ups.push(WrapUp {
            agent,
            until: self.now + self.settings.wrap_up_window,
            restore,
        });
    }

    /// The agent hung up (phone or desktop): the survey follows if the flow has one.
    pub(super) fn agent_hung_up(&mut self) {
        let Phase::Talking(t) = &self.phase else { return };
        let agent = t.agent.clone();
        self.leave(&agent);
        if self.ivr.is_some() {
            self.ivr_event(IvrEvent::AgentHungUp);
            if self.ivr.as_ref().is_some_and(|s| s.outcome().is_some()) {
                self.end(EndedBy::Agent, "agent hung up");
            }
        } else {
            self.end(EndedBy::Agent, "agent hung up");
        }
    }

    pub(super) fn end_consult(&mut self) {
        let Phase::Talking(t) = &mut self.phase else {
            return;
        };
        let Some(c) = t.consult.take() else { return };
        let resumed = t.held == Some(HeldBy::Consult);
        if resumed {
            t.held = None;
        }
        let agent = t.agent.clone();
        if c.joined {
            self.push(Command::LeaveConsult);
        }
        self.hang_up(c.leg);
        if resumed {
            self.push(Command::Resume);
            self.log(InteractionEventKind::Resumed);
        }
        self.push(Command::DeskPhase {
            agent,
            phase: CallPhase::Connected,
        });
    }

    pub(super) fn drop_supervisor(&mut self) {
        let Phase::Talking(t) = &mut self.phase else {
            return;
        };
        let Some(sv) = t.supervisor.take() else { return };
        if sv.joined {
            self.push(Command::StopMonitor);
        }
        if let Some(request) = sv.pending {
            self.reply(
                request,
                refuse("not_on_call", "the agent is not talking to anyone"),
            );
        }
        self.hang_up(sv.leg);
        self.log(InteractionEventKind::Monitored {
            supervisor: sv.supervisor,
            mode: "stopped".into(),
        });
    }

    pub(super) fn talking_as(&self, agent: &AgentId) -> bool {
        matches!(&self.phase, Phase::Talking(t) if &t.agent == agent)
    }

    pub(super) fn command(&mut self, request: RequestId, agent: AgentId, command: AgentCommand) {
        // An agent whose part in the call is over (in wrap-up on it, or the call has ended) may only
        // wrap up: anything else is told the call ended, not that they are "not connected".
        let part_over = (self.wrap_ups.iter().any(|w| w.agent == agent) && !self.talking_as(&agent))
            || matches!(self.phase, Phase::Ended { .. });
        if part_over && !matches!(command, AgentCommand::WrapUp { .. }) {
            self.reply(request, refuse("call_ended", "the call has ended"));
            return;
        }
        let answer: Option<CommandResult> = match command {
            AgentCommand::Accept { sdp } => self.accept(request, &agent, sdp),
            AgentCommand::Reject => Some(self.reject(&agent)),
            AgentCommand::Hangup => Some(self.hangup_command(&agent)),
            AgentCommand::Hold => Some(self.hold(&agent, true)),
            AgentCommand::Unhold => Some(self.hold(&agent, false)),
            AgentCommand::Mute(muted) => Some(self.mute(&agent, muted)),
            AgentCommand::Transfer(target) => self.transfer(request, &agent, target),
            AgentCommand::Consult(target) => self.consult(request, &agent, target),
            AgentCommand::ConsultComplete => Some(self.consult_complete(&agent)),
            AgentCommand::ConsultCancel => Some(self.consult_cancel(&agent)),
            AgentCommand::Monitor {
                supervisor,
                mode,
                sdp,
            } => self.monitor(request, supervisor, mode, sdp),
            AgentCommand::MonitorMode(mode) => Some(self.monitor_mode(mode)),
            AgentCommand::StopMonitor => Some(self.stop_monitor()),
            AgentCommand::WrapUp {
                disposition,
                notes,
                campaign,
            } => Some(self.wrap_up(&agent, disposition, notes, campaign)),
        };
        if let Some(result) = answer {
            self.reply(request, result);
        }
    }

    pub(super) fn accept(
        &mut self,
        request: RequestId,
        agent: &AgentId,
        sdp: Option<String>,
    ) -> Option<CommandResult> {
        let offered = match &self.phase {
            Phase::Queued { offers, .. } => offers.iter().find(|o| &o.agent == agent).cloned(),
            _ => None,
        };
        if let Some(o) = offered {
            return match o.via {
                Via::Phone { .. } => Some(refuse(
                    "answer_on_phone",
                    "this call rings your SIP phone: answer it there",
                )),
                Via::Browser { opening: Some(_) } => {
                    Some(refuse("already_accepting", "the softphone is being connected"))
                }
                Via::Browser { opening: None } => {
                    let leg = self.new_leg();
                    self.push(Command::OpenBrowser {
                        leg,
                        agent: agent.clone(),
                        sdp,
                        attach_to: None,
                    });
                    if let Phase::Queued { offers, .. } = &mut self.phase
                        && let Some(o) = offers.iter_mut().find(|o| &o.agent == agent)
                    {
                        o.via = Via::Browser {
                            opening: Some((leg, request)),
                        };
                    }
                    None
                }
            };
        }
        let Phase::Talking(t) = &mut self.phase else {
            return Some(refuse("no_offer", "this call is not being offered to you"));
        };
        if &t.agent != agent {
            return Some(refuse("no_offer", "this call is not being offered to you"));
        }
        if !t.browser {
            // The phone may answer before the desktop's accept arrives: same answer.
            return Some(refuse("answer_on_phone", "this call is on your SIP phone"));
        }
        if t.reattaching.is_some() {
            return Some(refuse("already_accepting", "the softphone is being connected"));
        }
        let attach_to = t.leg;
        let leg = LegRef(self.next_leg);
        self.next_leg = self.next_leg.saturating_add(1);
        self.legs_open.insert(leg);
        if let Phase::Talking(t) = &mut self.phase {
            t.reattaching = Some((leg, request));
        }
        self.push(Command::OpenBrowser {
            leg,
            agent: agent.clone(),
            sdp,
            attach_to: Some(attach_to),
        });
        None
    }

    pub(super) fn reject(&mut self, agent: &AgentId) -> CommandResult {
        let offered =
            matches!(&self.phase, Phase::Queued { offers, .. } if offers.iter().any(|o| &o.agent == agent));
        if !offered {
            return refuse("no_offer", "this call is not being offered to you");
        }
        self.offer_failed(agent, "rejected by the agent");
        Ok(None)
    }

    pub(super) fn hangup_command(&mut self, agent: &AgentId) -> CommandResult {
        // Cancelling a call the agent placed, or a callback not connected yet.
        if let Phase::Dialing { agent: a, .. } = &self.phase
            && a == agent
        {
            if let Some(request) = self.dial_request.take() {
                self.reply(request, refuse("call_ended", "cancelled by the agent"));
            }
            let disposition = if matches!(
                &self.phase,
                Phase::Dialing {
                    customer: Some(_),
                    ..
                }
            ) {
                "no_answer"
            } else {
                "failed"
            };
            self.not_reached(EndedBy::Agent, "cancelled by the agent", disposition);
            return Ok(None);
        }
        if !self.talking_as(agent) {
            return not_connected();
        }
        self.agent_hung_up();
        Ok(None)
    }

    pub(super) fn hold(&mut self, agent: &AgentId, hold: bool) -> CommandResult {
        let Phase::Talking(t) = &mut self.phase else {
            return not_connected();
        };
        if &t.agent != agent {
            return not_connected();
        }
        match (hold, t.held.is_some()) {
            (true, true) => return refuse("already_held", "the caller is already on hold"),
            (false, false) => return refuse("not_held", "the caller is not on hold"),
            (true, false) => t.held = Some(HeldBy::Agent),
            (false, true) => t.held = None,
        }
        let (command, kind, phase) = if hold {
            (Command::Hold, InteractionEventKind::Held, CallPhase::Held)
        } else {
            (
                Command::Resume,
                InteractionEventKind::Resumed,
                CallPhase::Connected,
            )
        };
        self.push(command);
        self.log(kind);
        self.push(Command::DeskPhase {
            agent: agent.clone(),
            phase,
        });
        Ok(None)
    }

    pub(super) fn mute(&mut self, agent: &AgentId, muted: bool) -> CommandResult {
        let Phase::Talking(t) = &mut self.phase else {
            return not_connected();
        };
        if &t.agent != agent {
            return not_connected();
        }
        t.muted = muted;
        self.push(Command::Mute(muted));
        Ok(None)
    }

    pub(super) fn transfer(
        &mut self,
        request: RequestId,
        agent: &AgentId,
        target: TransferTarget,
    ) -> Option<CommandResult> {
        if !self.talking_as(agent) {
            return Some(not_connected());
        }
        let (queue, preferred) = match &target {
            TransferTarget::Number(number) => {
                let Some(trunk) = self.settings.trunk.clone() else {
                    return Some(refuse(
                        "no_trunk",
                        "no outbound trunk is configured for outside numbers",
                    ));
                };
                if let Phase::Talking(t) = &self.phase
                    && t.transferring.is_some()
                {
                    return Some(refuse("already_transferring", "a transfer is under way"));
                }
                let uri = format!("sip:{}@{}", number.expose(), trunk.host);
                let leg = self.dial(uri, trunk.caller_id, false);
                let described = format!("number:{}", number.expose());
                if let Phase::Talking(t) = &mut self.phase {
                    t.transferring = Some((leg, request, described));
                }
                return None;
            }
            TransferTarget::Queue(q) => (q.clone(), None),
            TransferTarget::Agent(a) if a == agent => {
                return Some(refuse("bad_target", "you cannot transfer a call to yourself"));
            }
            TransferTarget::Agent(a) => match &self.last_queue {
                Some((q, _)) => (q.clone(), Some(a.clone())),
                None => return Some(refuse("bad_target", "the call came through no queue")),
            },
        };
        if !self.settings.queues.contains(&queue) {
            return Some(refuse("unknown_queue", &format!("there is no queue {queue}")));
        }
        self.leave(agent);
        let described = match &target {
            TransferTarget::Queue(q) => format!("queue:{q}"),
            TransferTarget::Agent(a) => format!("agent:{a}"),
            TransferTarget::Number(n) => format!("number:{}", n.expose()),
        };
        self.log(InteractionEventKind::Transferred {
            target: Pii::new(described),
        });
        let priority = self.last_queue.as_ref().map_or(0, |(_, p)| *p);
        self.enqueue(queue, priority, None, preferred);
        Some(Ok(None))
    }

    pub(super) fn consult(
        &mut self,
        request: RequestId,
        agent: &AgentId,
        target: TransferTarget,
    ) -> Option<CommandResult> {
        let Phase::Talking(t) = &self.phase else {
            return Some(not_connected());
        };
        if &t.agent != agent {
            return Some(not_connected());
        }
        if t.consult.is_some() {
            return Some(refuse(
                "already_consulting",
                "finish the consultation you have first",
            ));
        }
        if t.supervisor.is_some() {
            return Some(refuse("already_monitored", "a supervisor is on this call"));
        }
        let (leg, described) = match &target {
            TransferTarget::Agent(a) if a == agent => {
                return Some(refuse("bad_target", "you cannot consult yourself"));
            }
            TransferTarget::Agent(a) => {
                let leg = self.new_leg();
                self.push(Command::RingPhone {
                    leg,
                    agent: a.clone(),
                    shown_as: agent.as_str().to_string(),
                });
                (leg, format!("agent:{a}"))
            }
            TransferTarget::Number(n) => {
                let Some(trunk) = self.settings.trunk.clone() else {
                    return Some(refuse(
                        "no_trunk",
                        "no outbound trunk is configured for outside numbers",
                    ));
                };
                let uri = format!("sip:{}@{}", n.expose(), trunk.host);
                (
                    self.dial(uri, trunk.caller_id, false),
                    format!("number:{}", n.expose()),
                )
            }
            TransferTarget::Queue(_) => {
                return Some(refuse(
                    "bad_target",
                    "consult an agent or a number; transfer to queues",
                ));
            }
        };
        if let Phase::Talking(t) = &mut self.phase {
            t.consult = Some(Consult {
                leg,
                described,
                pending: Some(request),
                joined: false,
            });
        }
        None
    }

    pub(super) fn consult_complete(&mut self, agent: &AgentId) -> CommandResult {
        let Phase::Talking(t) = &mut self.phase else {
            return not_connected();
        };
        if &t.agent != agent {
            return not_connected();
        }
        let Some(c) = t.consult.as_ref() else {
            return refuse("not_consulting", "you are not consulting anyone");
        };
        if !c.joined {
            return refuse("not_answered", "the consulted party has not answered yet");
        }
        let Some(c) = t.consult.take() else {
            return refuse("not_consulting", "you are not consulting anyone");
        };
        // The consulted party is the caller's partner from now on; the agent leaves to wrap-up.
        self.push(Command::LeaveConsult);
        self.legs_open.remove(&c.leg);
        self.leave(agent);
        self.legs_open.insert(c.leg);
        self.log(InteractionEventKind::Transferred {
            target: Pii::new(format!("consult:{}", c.described)),
        });
        self.push(Command::StopPlayback);
        self.push(Command::Bridge { leg: c.leg });
        self.log(InteractionEventKind::Resumed);
        self.phase = Phase::External {
            leg: c.leg,
            started: true,
            bridged: true,
        };
        Ok(None)
    }

    pub(super) fn consult_cancel(&mut self, agent: &AgentId) -> CommandResult {
        let Phase::Talking(t) = &self.phase else {
            return not_connected();
        };
        if &t.agent != agent {
            return not_connected();
        }
        if t.consult.is_none() {
            return refuse("not_consulting", "you are not consulting anyone");
        }
        if let Some(request) = t.consult.as_ref().and_then(|c| c.pending) {
            self.reply(request, refuse("call_ended", "the consultation was cancelled"));
        }
        self.end_consult();
        Ok(None)
    }

    pub(super) fn monitor(
        &mut self,
        request: RequestId,
        supervisor: AgentId,
        mode: SuperviseMode,
        sdp: Option<String>,
    ) -> Option<CommandResult> {
        let Phase::Talking(t) = &self.phase else {
            return Some(refuse("not_on_call", "the agent is not talking to anyone"));
        };
        if t.supervisor.is_some() {
            return Some(refuse(
                "already_monitored",
                "a supervisor is already on this call",
            ));
        }
        if supervisor == t.agent {
            return Some(refuse("bad_target", "you cannot monitor yourself"));
        }
        let leg = self.new_leg();
        let browser = sdp.is_some();
        if browser {
            self.push(Command::OpenBrowser {
                leg,
                agent: supervisor.clone(),
                sdp,
                attach_to: None,
            });
        } else {
            self.push(Command::RingPhone {
                leg,
                agent: supervisor.clone(),
                shown_as: "monitor".into(),
            });
        }
        if let Phase::Talking(t) = &mut self.phase {
            t.supervisor = Some(Supervisor {
                supervisor,
                mode,
                leg,
                browser,
                pending: Some(request),
                joined: false,
            });
        }
        None
    }

    pub(super) fn monitor_mode(&mut self, mode: SuperviseMode) -> CommandResult {
        let Phase::Talking(t) = &mut self.phase else {
            return refuse("not_monitoring", "no supervisor is on this call yet");
        };
        let Some(sv) = t.supervisor.as_mut().filter(|s| s.joined) else {
            return refuse("not_monitoring", "no supervisor is on this call yet");
        };
        sv.mode = mode;
        let supervisor = sv.supervisor.clone();
        self.push(Command::MonitorMode(mode));
        self.log(InteractionEventKind::Monitored {
            supervisor,
            mode: mode.name().into(),
        });
        Ok(None)
    }

    pub(super) fn stop_monitor(&mut self) -> CommandResult {
        let monitored = matches!(&self.phase, Phase::Talking(t) if t.supervisor.is_some());
        if !monitored {
            return refuse("not_monitoring", "no supervisor is on this call");
        }
        self.drop_supervisor();
        Ok(None)
    }

    pub(super) fn wrap_up(
        &mut self,
        agent: &AgentId,
        disposition: String,
        notes: Pii<String>,
        wants: CampaignWrapUp,
    ) -> CommandResult {
        let Some(i) = self.wrap_ups.iter().position(|w| &w.agent == agent) else {
            if self.talking_as(agent) {
                return refuse("not_in_wrap_up", "the call is still going on: hang up first");
            }
            return refuse("call_ended", "the call has ended");
        };
        if !wants.is_empty() {
            if self.campaign.is_none() && self.preview.is_none() {
                return refuse(
                    "not_campaign_call",
                    "do_not_call and callback are for campaign calls",
                );
            }
            self.push(Command::Campaign(CampaignNote::WrappedUp {
                agent: agent.clone(),
                wants,
            }));
        }
        let w = self.wrap_ups.remove(i);
        self.log(InteractionEventKind::WrappedUp {
            agent: agent.clone(),
            disposition,
            notes,
        });
        match w.restore {
            // An agent-placed call: back to the state the agent dialled from.
            Some(restore) => {
                self.push(Command::DeskRelease { agent: w.agent });
                self.push(Command::Acd(restore));
            }
            None => {
                self.push(Command::WrapUpDone {
                    agent: w.agent.clone(),
                });
                self.push(Command::DeskRelease { agent: w.agent });
            }
        }
        Ok(None)
    }
}
