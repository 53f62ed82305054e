//! Time and the end: deadlines that fire, the campaign's connect deadline, tearing the call down and
//! finishing once every answer is in.

use super::*;

// ----- time and the end -----
impl CallSession {
    /// Fires everything due by `now`, earliest first.
    pub(super) fn fire_due(&mut self) {
        loop {
            let Some(at) = self.next_deadline().filter(|at| *at <= self.now) else {
                return;
            };
            let timer = self.ivr_timers.iter().find(|(_, t)| **t == at).map(|(id, _)| *id);
            if let Some(id) = timer {
                self.ivr_timers.remove(&id);
                self.ivr_event(IvrEvent::TimerFired(id));
                continue;
            }
            if let Some(i) = self.wrap_ups.iter().position(|w| w.until == at) {
                // The window is over without a disposition.
                let w = self.wrap_ups.remove(i);
                self.push(Command::DeskRelease { agent: w.agent });
                if let Some(restore) = w.restore {
                    self.push(Command::Acd(restore));
                }
                continue;
            }
            match &self.phase {
                Phase::Voicemail { until, .. } if *until == at => {
                    self.stop_voicemail();
                    self.end(EndedBy::System, "voicemail left");
                    // `end` takes effect in `settle`; leave the phase so the deadline goes.
                    self.settle();
                    continue;
                }
                Phase::Talking(t) if t.lost_at.map(|l| l + self.settings.reattach_grace) == Some(at) => {
                    // The browser agent's media did not come back in time.
                    self.agent_hung_up();
                    self.settle();
                    continue;
                }
                Phase::Queued { .. } => {
                    self.campaign_abandon();
                    continue;
                }
                _ => return,
            }
        }
    }

    /// A campaign call got no agent by its deadline: it leaves the queue as abandoned and the
    /// identification message plays (the call ends when it has).
    pub(super) fn campaign_abandon(&mut self) {
        let Some((_, _, message)) = self.campaign.clone() else {
            return;
        };
        self.stop_all_offers("no agent in time");
        self.push(Command::Abandon);
        self.push(Command::ForgetQueue);
        self.closing += 1;
        self.push(Command::Campaign(CampaignNote::Abandoned));
        self.push(Command::Play {
            prompts: vec![message],
            looped: false,
            barge_in: false,
        });
        self.phase = Phase::Abandoning;
    }

    /// Carries out an end decided meanwhile, and finishes once every answer is in.
    pub(super) fn settle(&mut self) {
        if let Some((by, reason)) = self.ending.take() {
            self.tear_down(by, reason);
        }
        if let Phase::Ended { by, reason } = &self.phase
            && self.closing == 0
            && !self.ended_logged
        {
            let (by, reason) = (*by, reason.clone());
            self.ended_logged = true;
            self.log(InteractionEventKind::Ended {
                by,
                reason,
                quality: None,
            });
            if let Some(link) = self.campaign_outcome() {
                self.log(link);
            }
        }
        if self.ended_logged && self.wrap_ups.is_empty() && !self.finished {
            self.finished = true;
            for leg in std::mem::take(&mut self.legs_open) {
                self.push(Command::HangUp { leg });
            }
            self.push(Command::Finished);
        }
    }

    pub(super) fn campaign_outcome(&self) -> Option<InteractionEventKind> {
        let link = self
            .preview
            .clone()
            .or_else(|| self.campaign.as_ref().map(|c| c.0.clone()))?;
        let answered = self.answered;
        let outcome = if answered || self.campaign_connected {
            "completed"
        } else if self.preview.is_some() {
            return None;
        } else {
            "abandoned"
        };
        Some(InteractionEventKind::DialAttempt {
            campaign: link.campaign,
            lead: link.lead,
            outcome: outcome.into(),
        })
    }

    pub(super) fn tear_down(&mut self, by: EndedBy, reason: String) {
        if let Some(request) = self.dial_request.take() {
            self.reply(
                request,
                refuse("call_ended", "the call ended before it was placed"),
            );
        }
        if by != EndedBy::Caller && self.caller_up {
            self.push(Command::HangUpCaller);
        }
        self.stop_voicemail();
        if let Phase::Talking(t) = &self.phase {
            let agent = t.agent.clone();
            self.leave(&agent);
        }
        let phase = std::mem::replace(&mut self.phase, Phase::SelfService);
        match phase {
            Phase::Queued { queue, offers } => {
                self.phase = Phase::Queued {
                    queue: queue.clone(),
                    offers,
                };
                self.stop_all_offers("caller hung up");
                match self.callback.take() {
                    // The caller keeps their place: a callback session waits in line for them.
                    Some(number) => self.push(Command::KeepPlaceForCallback { queue, number }),
                    None => {
                        self.push(Command::Acd(acd::Input::CallAbandoned {
                            call: self.id.clone(),
                        }));
                        self.push(Command::ForgetQueue);
                    }
                }
            }
            Phase::External { leg, .. } => self.hang_up(leg),
            Phase::Dialing { .. } => {
                self.phase = phase;
                self.not_reached(by, &reason, "failed");
            }
            _ => {}
        }
        if self.ivr.is_some() {
            self.push(Command::DeleteIvrState);
        }
        self.ivr_timers.clear();
        self.phase = Phase::Ended { by, reason };
    }
}
