//! One dial attempt from placing the call to its end (ringing, the greeting's verdict, the answered
//! person handed to a call session), and the links a campaign's calls report through.

use super::*;

/// The stored and metric name of a disposition.
pub fn disposition_name(d: Disposition) -> &'static str {
    match d {
        Disposition::Busy => "busy",
        Disposition::NoAnswer => "no_answer",
        Disposition::Machine => "machine",
        Disposition::Abandoned => "abandoned",
        Disposition::Completed => "completed",
        Disposition::Failed => "failed",
        Disposition::DoNotCallRequest => "do_not_call",
    }
}

/// What a campaign's call (a live dialer's answered person, or a preview's placed call) tells its
/// runner; the call's session says when ([`call_session::CampaignNote`]).
pub(crate) struct CallLink {
    pub(super) campaign: CampaignId,
    pub(super) lead: LeadId,
    /// When the greeting was judged a person's (live dialer); waits are counted from it.
    pub(super) verdict_at: Option<Timestamp>,
    pub(super) tx: mpsc::UnboundedSender<Report>,
}

impl CallLink {
    /// An agent took the call at `at`.
    pub(crate) fn connected(&self, at: Timestamp) {
        let waited = self.verdict_at.map(|v| at.since(v)).unwrap_or_default();
        let _ = self.tx.send(Report::Connected {
            lead: self.lead.clone(),
            waited,
        });
    }

    /// Nobody in time: the identification message plays.
    pub(crate) fn abandoned(&self) {
        let _ = self.tx.send(Report::Abandoned {
            lead: self.lead.clone(),
        });
    }

    /// The agent's wrap-up asks the campaign to close the lead (do not call) or call it back.
    pub(crate) fn wrapped_up(&self, agent: &AgentId, wants: crate::desk::CampaignWrapUp) {
        let _ = self.tx.send(Report::WrappedUp {
            lead: self.lead.clone(),
            agent: agent.clone(),
            wish: WrapUpWish {
                do_not_call: wants.do_not_call,
                callback: wants.callback.map(|c| (c.at, c.personal)),
            },
        });
    }

    /// The campaign and lead, for the agent's screen pop.
    pub(crate) fn pop(&self) -> crate::desk::CampaignPop {
        crate::desk::CampaignPop {
            campaign: self.campaign.clone(),
            lead: self.lead.clone(),
        }
    }
}

/// The disposition a session's `dial_attempt` outcome names.
pub(super) fn disposition_named(name: &str) -> Option<Disposition> {
    [
        Disposition::Completed,
        Disposition::Busy,
        Disposition::NoAnswer,
        Disposition::Machine,
        Disposition::Abandoned,
        Disposition::Failed,
        Disposition::DoNotCallRequest,
    ]
    .into_iter()
    .find(|d| disposition_name(*d) == name)
}

/// A preview campaign's call, placed by its agent through the click-to-dial path
/// ([`crate::outbound`]): what it shows and records for the campaign (the attempt row, the lead's
/// result); the session logs the interaction's `dial_attempt` events.
#[derive(Clone)]
pub(crate) struct PreviewDial {
    pub(super) spec: Arc<CampaignSpec>,
    pub(super) agent: AgentId,
    pub(super) lead: LeadId,
    pub(super) phone: Pii<String>,
    pub(super) attempt: u32,
    pub(super) tx: mpsc::UnboundedSender<Report>,
}

impl PreviewDial {
    /// The number the called person sees.
    pub(crate) fn caller_id(&self) -> &str {
        &self.spec.caller_id
    }

    /// The campaign and lead, as the session knows them.
    pub(crate) fn session_link(&self) -> call_session::CampaignLink {
        call_session::CampaignLink {
            campaign: self.spec.id.clone(),
            lead: self.lead.clone(),
        }
    }

    /// The call's link to the runner: the agent is on the line first, so a connection waited for
    /// nothing.
    pub(crate) fn link(&self) -> CallLink {
        CallLink {
            campaign: self.spec.id.clone(),
            lead: self.lead.clone(),
            verdict_at: None,
            tx: self.tx.clone(),
        }
    }

    /// The call is under way: the runner counts the attempt (before the call can report its end).
    pub(crate) fn placed(&self) {
        let _ = self.tx.send(Report::PreviewPlaced {
            lead: self.lead.clone(),
            agent: self.agent.clone(),
        });
    }

    pub(crate) fn row(&self, id: &CallId, started: Timestamp) -> crm_store::DialAttempt {
        crm_store::DialAttempt {
            id: id.to_string(),
            campaign: self.spec.id.clone(),
            lead: self.lead.clone(),
            attempt: self.attempt,
            phone: self.phone.clone(),
            started_at: started,
            answered_at: None,
            amd_result: None,
            agent: None,
            connected_at: None,
            ended_at: None,
            outcome: "dialing".into(),
            abandoned: false,
        }
    }

    pub(crate) async fn store(&self, inner: &Inner, row: &crm_store::DialAttempt) {
        store_attempt(inner, row).await;
    }

    /// The call has ended: its row is completed from how it went and the runner records the lead's
    /// result.
    pub(crate) async fn finish_call(
        &self,
        inner: &Inner,
        mut row: crm_store::DialAttempt,
        outcome: &crate::driver::Outcome,
    ) {
        if let Some((agent, at)) = &outcome.connected {
            row.agent = Some(agent.clone());
            row.answered_at = Some(*at);
            row.connected_at = Some(*at);
        }
        let disposition = match outcome.dial_outcome.as_deref().and_then(disposition_named) {
            Some(d) => d,
            None if outcome.connected.is_some() => Disposition::Completed,
            None => Disposition::Failed,
        };
        row.ended_at = Some(Timestamp::now_utc());
        row.outcome = disposition_name(disposition).to_string();
        store_attempt(inner, &row).await;
        let _ = self.tx.send(Report::Finished {
            lead: self.lead.clone(),
            disposition,
        });
    }
}

pub(super) async fn store_attempt(inner: &Inner, row: &crm_store::DialAttempt) {
    match tokio::time::timeout(Duration::from_secs(5), inner.crm.record_dial_attempt(row)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "dial attempt not stored"),
        Err(_) => warn!("dial attempt not stored in time"),
    }
}

/// One dial attempt, from placing the call to its end.
pub(super) struct Attempt {
    pub(super) inner: Arc<Inner>,
    pub(super) spec: Arc<CampaignSpec>,
    pub(super) tx: mpsc::UnboundedSender<Report>,
    pub(super) id: CallId,
    pub(super) request: DialRequest,
    pub(super) started: Timestamp,
}

/// How the ringing ended.
pub(super) enum Rung {
    Answered(media::sdp::Negotiated),
    NotAnswered(Disposition, DialResult),
}

impl Attempt {
    pub(super) fn row(&self) -> crm_store::DialAttempt {
        crm_store::DialAttempt {
            id: self.id.to_string(),
            campaign: self.spec.id.clone(),
            lead: self.request.lead.clone(),
            attempt: self.request.attempt,
            phone: self.request.phone.clone(),
            started_at: self.started,
            answered_at: None,
            amd_result: None,
            agent: None,
            connected_at: None,
            ended_at: None,
            outcome: "dialing".into(),
            abandoned: false,
        }
    }

    pub(super) async fn store(&self, row: &crm_store::DialAttempt) {
        store_attempt(&self.inner, row).await;
    }

    pub(super) fn note(&self, note: Report) {
        let _ = self.tx.send(note);
    }

    pub(super) fn resolved(&self, result: DialResult) {
        self.note(Report::Resolved {
            lead: self.request.lead.clone(),
            dialed_at: self.started,
            result,
        });
    }

    pub(super) fn dial_event(&self, outcome: &str) -> InteractionEventKind {
        InteractionEventKind::DialAttempt {
            campaign: self.spec.id.clone(),
            lead: self.request.lead.clone(),
            outcome: outcome.to_string(),
        }
    }

    pub(super) async fn run(self) {
        let mut row = self.row();
        self.store(&row).await;
        let Ok(interaction) = InteractionId::new(self.id.as_str()) else {
            return self.finish(row, Disposition::Failed).await;
        };
        let mut timeline = Timeline::new(interaction);
        self.inner.log(timeline.event(
            self.started,
            InteractionEventKind::Arrived {
                channel: Channel::Voice,
                direction: Direction::Outbound,
                from: Pii::new(self.spec.caller_id.clone()),
                to: self.request.phone.clone(),
            },
        ));
        let ring = self.spec.rules.ring_time;
        let dialled = crate::driver::legs::dial_number(
            &self.inner,
            self.request.phone.expose(),
            &self.spec.caller_id,
            ring,
        )
        .await;
        let Some((mut leg, rtp, mut media)) = dialled else {
            self.resolved(DialResult::Failed);
            return self.not_reached(row, timeline, Disposition::Failed).await;
        };
        // Ringing, for at least the compliance ring time (the gateway cancels after it).
        let rung = loop {
            match leg.next_event().await {
                Some(LegEvent::Answered { sdp }) => match negotiate(&sdp) {
                    Some(n) => break Rung::Answered(n),
                    None => {
                        leg.hangup();
                        break Rung::NotAnswered(Disposition::Failed, DialResult::Failed);
                    }
                },
                // A trunk with `late_offer` offers in its 2xx: our answer goes back in the ACK.
                Some(LegEvent::Reoffer { sdp, reply }) => {
                    if let Some(answer) = crate::driver::legs::reanswer(&rtp, &leg, &sdp) {
                        let _ = reply.send(answer);
                    }
                }
                Some(LegEvent::Ringing) => {}
                // A dialled person cannot transfer a call not yet answered.
                Some(LegEvent::Refer { reply, .. }) => {
                    let _ = reply.send(false);
                }
                Some(LegEvent::Failed { code }) => {
                    break match code {
                        486 | 600 | 603 => Rung::NotAnswered(Disposition::Busy, DialResult::Busy),
                        408 | 480 | 487 => Rung::NotAnswered(Disposition::NoAnswer, DialResult::NoAnswer),
                        _ => Rung::NotAnswered(Disposition::Failed, DialResult::Failed),
                    };
                }
                Some(LegEvent::Hangup) | None => {
                    break Rung::NotAnswered(Disposition::NoAnswer, DialResult::NoAnswer);
                }
            }
        };
        let negotiated = match rung {
            Rung::Answered(n) => n,
            Rung::NotAnswered(disposition, result) => {
                self.resolved(result);
                return self.not_reached(row, timeline, disposition).await;
            }
        };
        let law = negotiated.law;
        crate::media_rules::apply(&rtp, &leg, negotiated);
        row.answered_at = Some(Timestamp::now_utc());
        info!("answered; analysing the greeting");
        // The greeting: a person says a word or two and waits, a machine talks on.
        rtp.detect_answering_machine(self.spec.amd);
        let analysis = Duration::from_millis(u64::from(self.spec.amd.total_analysis_ms) + 1000);
        let until = Instant::now() + analysis;
        let verdict = loop {
            tokio::select! {
                ev = media.recv() => match ev {
                    Some(MediaEvent::AnsweringMachine(r)) => break Some(r.decision),
                    Some(_) => {}
                    None => break None,
                },
                ev = leg.next_event() => match ev {
                    Some(LegEvent::Hangup) | None => break None,
                    Some(_) => {}
                },
                _ = tokio::time::sleep_until(until) => break Some(AmdDecision::NotSure),
            }
        };
        let verdict_at = Timestamp::now_utc();
        let Some(decision) = verdict else {
            // Hung up during the greeting: a person (probably), who got no agent.
            info!("hung up during the greeting");
            self.resolved(DialResult::Human);
            self.note(Report::Abandoned {
                lead: self.request.lead.clone(),
            });
            row.amd_result = Some("hung_up".into());
            row.abandoned = true;
            return self.not_reached(row, timeline, Disposition::Abandoned).await;
        };
        row.amd_result = Some(
            match decision {
                AmdDecision::Human => "human",
                AmdDecision::Machine => "machine",
                AmdDecision::NotSure => "notsure",
            }
            .into(),
        );
        info!(
            verdict = row.amd_result.as_deref().unwrap_or(""),
            "greeting analysed"
        );
        let agentless = self.spec.mode == CampaignMode::Agentless;
        if decision == AmdDecision::Machine {
            self.resolved(DialResult::Machine);
            if agentless {
                self.play_message(&rtp, &mut media, &mut leg, law).await;
            }
            leg.hangup();
            return self.not_reached(row, timeline, Disposition::Machine).await;
        }
        // A person (an unsure verdict is taken as one: the rules protect people).
        self.resolved(DialResult::Human);
        if agentless {
            self.play_message(&rtp, &mut media, &mut leg, law).await;
            leg.hangup();
            return self.not_reached(row, timeline, Disposition::Completed).await;
        }
        let Some(queue) = self.spec.queue.clone() else {
            leg.hangup();
            return self.not_reached(row, timeline, Disposition::Failed).await;
        };
        self.inner
            .log(timeline.event(verdict_at, self.dial_event("human")));
        // The person waits in the queue as a session of their own, numbering on from here.
        let origin = Origin::Campaign {
            link: call_session::CampaignLink {
                campaign: self.spec.id.clone(),
                lead: self.request.lead.clone(),
            },
            queue,
            preferred: self.request.agent.clone(),
            connect_by: verdict_at + self.spec.rules.connect_within,
            message: self.spec.message.clone(),
            first_seq: timeline.next_seq(),
        };
        let caller_id = Pii::new(self.spec.caller_id.clone());
        let session = match CallSession::new(
            self.id.clone(),
            verdict_at,
            origin,
            self.request.phone.clone(),
            caller_id.clone(),
            Driver::settings(&self.inner),
        ) {
            Ok(s) => s,
            Err(_) => {
                leg.hangup();
                return self.not_reached(row, timeline, Disposition::Failed).await;
            }
        };
        let link = CallLink {
            campaign: self.spec.id.clone(),
            lead: self.request.lead.clone(),
            verdict_at: Some(verdict_at),
            tx: self.tx.clone(),
        };
        self.note(Report::Waiting {
            lead: self.request.lead.clone(),
        });
        let style = PopStyle {
            direction: Direction::Outbound,
            prefix: "",
        };
        let caller = CallerIo::new(leg, rtp, law, media);
        let mut driver = Driver::new(
            self.inner.clone(),
            session,
            self.request.phone.clone(),
            caller_id,
            Some(caller),
            style,
        )
        .with_campaign(link);
        driver.feed(Input::CallerAnswered);
        driver.run().await;
        let outcome = driver.outcome();
        let disposition = match &outcome.connected {
            Some((agent, at)) => {
                row.agent = Some(agent.clone());
                row.connected_at = Some(*at);
                Disposition::Completed
            }
            None => {
                if !outcome.abandoned {
                    // The person hung up in the queue before the deadline: no agent reached them.
                    self.note(Report::Abandoned {
                        lead: self.request.lead.clone(),
                    });
                }
                row.abandoned = true;
                Disposition::Abandoned
            }
        };
        driver.wrap_up_later();
        self.finish(row, disposition).await;
    }

    /// Plays the identification message to its end (or until the other side hangs up).
    pub(super) async fn play_message(
        &self,
        rtp: &media::engine::RtpLeg,
        media: &mut mpsc::Receiver<MediaEvent>,
        leg: &mut sip_gateway::LegHandle,
        law: media::g711::G711,
    ) {
        let prompt = match self.inner.media.prompts().get(&self.spec.message, law) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "identification message cannot be played");
                return;
            }
        };
        rtp.play(vec![prompt], false, false);
        loop {
            tokio::select! {
                ev = media.recv() => match ev {
                    Some(MediaEvent::PlaybackFinished) | None => return,
                    Some(_) => {}
                },
                ev = leg.next_event() => match ev {
                    Some(LegEvent::Hangup) | None => return,
                    Some(_) => {}
                },
            }
        }
    }

    /// Ends an attempt that never reached the queue.
    pub(super) async fn not_reached(
        self,
        row: crm_store::DialAttempt,
        mut timeline: Timeline,
        disposition: Disposition,
    ) {
        let now = Timestamp::now_utc();
        self.inner
            .log(timeline.event(now, self.dial_event(disposition_name(disposition))));
        self.inner.log(timeline.event(
            now,
            InteractionEventKind::Ended {
                by: EndedBy::System,
                reason: disposition_name(disposition).to_string(),
                quality: None,
            },
        ));
        self.finish(row, disposition).await;
    }

    pub(super) async fn finish(self, mut row: crm_store::DialAttempt, disposition: Disposition) {
        row.ended_at = Some(Timestamp::now_utc());
        row.outcome = disposition_name(disposition).to_string();
        self.store(&row).await;
        self.note(Report::Finished {
            lead: self.request.lead.clone(),
            disposition,
        });
    }
}
