//! Carrying out the session's [`Command`]s: each becomes SIP, media, ACD, desktop or CRM work.
//! Work with an answer (placing a leg, opening a softphone, a CRM lookup, closing a recording) is
//! awaited here or spawned, and its result goes back to the session as the next input.

use super::legs::{self, LegIo, PHONE_RING};
use super::{Done, Driver};
use crate::desk::{DeskEvent, IvrPop, ScreenPop};
use crate::queue_audio::QueueAudioPlayer;
use call_session::{CampaignNote, Command, CustomerSummary, Input, LegRef, Refusal, SuperviseMode};
use domain::{InteractionEventKind, Pii, QualityReport, Timestamp};
use ivr::IvrCommand;
use media::engine::{BridgeSide, MonitorMode};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tracing::{info, warn};

fn monitor_mode(mode: SuperviseMode) -> MonitorMode {
    match mode {
        SuperviseMode::Listen => MonitorMode::Listen,
        SuperviseMode::Whisper => MonitorMode::Whisper,
        SuperviseMode::Barge => MonitorMode::Barge,
    }
}

impl Driver {
    pub(super) async fn execute(&mut self, command: Command) {
        match command {
            Command::Log(mut event) => {
                match &mut event.kind {
                    InteractionEventKind::Ended { quality, by, reason } => {
                        info!(?by, %reason, "call ended");
                        if let Some(c) = self.caller.as_ref() {
                            let q = c.rtp.quality();
                            *quality = Some(QualityReport {
                                loss: q.loss_fraction,
                                jitter_ms: q.jitter_ms,
                                mos: q.mos,
                            });
                        }
                    }
                    InteractionEventKind::Answered { agent } if self.outcome.connected.is_none() => {
                        self.outcome.connected = Some((agent.clone(), event.at));
                    }
                    InteractionEventKind::DialAttempt { outcome, .. } => {
                        self.outcome.dial_outcome = Some(outcome.clone());
                    }
                    _ => {}
                }
                self.inner.log(event);
            }
            Command::Reply { request, result } => {
                if let Err(refusal) = &result {
                    info!(code = refusal.code, "desktop request refused");
                }
                if let Some(reply) = self.replies.remove(&request) {
                    let _ = reply.send(result);
                }
            }
            Command::Play {
                prompts,
                looped,
                barge_in,
            } => {
                let loaded = self.load(&prompts);
                match self.caller.as_ref() {
                    Some(c) if !loaded.is_empty() => c.rtp.play(loaded, looped, barge_in),
                    // Nothing to play: the session hears it at once rather than wait.
                    _ => self.feed(Input::NothingToPlay),
                }
            }
            Command::PlayHoldMusic => {
                let music = self.hold_music();
                if let Some(c) = self.caller.as_ref().filter(|_| !music.is_empty()) {
                    c.rtp.play(music, true, false);
                }
            }
            Command::StopPlayback => {
                if let Some(c) = self.caller.as_ref() {
                    c.rtp.stop_playback();
                }
            }
            Command::StartVoicemail { name, beep } => self.start_voicemail(&name, beep),
            Command::StopVoicemail => {
                let path = match self.voicemail.take() {
                    Some(recording) => match recording.stop_with_summary().await {
                        // Nothing but silence (a caller who never spoke, or a spoofed call never
                        // acknowledged): no message, no file.
                        Ok(summary) if summary.is_silent() => {
                            crate::media_rules::drop_silent(&summary.path);
                            None
                        }
                        Ok(summary) => Some(summary.path.display().to_string()),
                        Err(e) => {
                            warn!(error = %e, "voicemail not closed");
                            None
                        }
                    },
                    None => None,
                };
                self.feed(Input::VoicemailStopped { path });
            }
            Command::Ivr(c) => self.ivr_work(c),
            Command::SaveIvrState(state) => self.save_ivr_state(&state).await,
            Command::DeleteIvrState => {
                let _ = self
                    .inner
                    .state
                    .delete_blob(crate::IVR_STATE_NAMESPACE, self.id.as_str(), None)
                    .await;
            }
            Command::IdentifyCaller { number } => {
                let card = self.find_customer(&number).await;
                let summary = card.as_ref().map(|card| CustomerSummary {
                    id: card.customer.id.clone(),
                    tier: card.customer.tier.as_str().to_string(),
                    queue_priority: card.queue_priority,
                    account_manager: card.customer.account_manager.clone(),
                });
                self.card = card;
                self.feed(Input::CallerIdentified(summary));
            }
            Command::Enqueue(request) => {
                let queue = request.queue.clone();
                self.notices = Some(self.inner.acd.enqueue(request));
                if let Some(c) = self.caller.as_ref() {
                    self.queue_audio =
                        QueueAudioPlayer::start(&self.inner, &c.rtp, c.law, &queue, self.session.ivr_state());
                }
            }
            Command::Acd(input) => self.acd(input).await,
            Command::Abandon => {
                self.leave_queue_audio();
                let found = self.inner.acd.abandon(self.id.clone()).await;
                if let Some(a) = &found {
                    info!(queue = %a.queue, position = a.position, waited_ms = a.waited_ms, "caller abandoned the queue");
                }
                self.feed(Input::Abandoned(found.map(|a| call_session::Abandonment {
                    queue: a.queue,
                    position: a.position,
                    waited_ms: a.waited_ms,
                })));
            }
            Command::ForgetQueue => {
                self.leave_queue_audio().notices = None;
                self.inner.acd.forget(self.id.clone());
            }
            Command::KeepPlaceForCallback { queue, number } => {
                match self.leave_queue_audio().notices.take() {
                    // The caller keeps their place: the callback waits in line for them.
                    Some(notices) => {
                        crate::callback::spawn(self.inner.clone(), self.id.clone(), queue, notices, number, 0)
                    }
                    None => self.inner.acd.forget(self.id.clone()),
                }
            }
            Command::SettleCallback { status } => crate::callback::settle(&self.inner, &self.id, status),
            Command::RingPhone { leg, agent, shown_as } => {
                let placed = legs::place(&self.inner, agent.as_str().to_string(), shown_as, PHONE_RING).await;
                self.placed(leg, placed, false, Some(agent));
            }
            Command::Dial {
                leg,
                uri,
                from,
                ring,
                customer,
            } => {
                let from = from.unwrap_or_else(|| self.caller_number.expose().clone());
                let placed = legs::place(&self.inner, uri, from, ring).await;
                self.placed(leg, placed, customer, None);
            }
            Command::OpenBrowser {
                leg,
                agent: _,
                sdp,
                attach_to,
            } => self.open_browser(leg, sdp, attach_to),
            Command::HangUp { leg } => {
                if self.caller_ref == Some(leg) {
                    if let Some(c) = self.caller.as_ref() {
                        c.leg.hangup();
                    }
                } else {
                    self.drop_leg(leg);
                }
            }
            Command::HangUpCaller => {
                if let Some(c) = self.caller.as_ref() {
                    c.leg.hangup();
                }
            }
            Command::Bridge { leg } => {
                // The old bridge goes first, so the new one is the caller's only partner; the caller
                // no longer waits, so their queue audio ends.
                self.bridge = None;
                self.leave_queue_audio();
                let bridge = match (self.caller.as_ref(), self.legs.get(&leg)) {
                    (Some(c), Some(io)) => Some(self.inner.media.bridge(&c.rtp, &io.rtp)),
                    _ => None,
                };
                match bridge {
                    Some(b) => {
                        info!("bridged");
                        self.bridge = Some((leg, b));
                    }
                    None => warn!("nothing to bridge"),
                }
            }
            Command::Hold => {
                let music = self.hold_music();
                if let Some((_, b)) = self.bridge.as_ref().filter(|(_, b)| !b.is_held()) {
                    b.hold(BridgeSide::A, music);
                }
            }
            Command::Resume => {
                if let Some((_, b)) = self.bridge.as_ref().filter(|(_, b)| b.is_held()) {
                    b.resume();
                }
            }
            Command::Mute(muted) => {
                if let Some((_, b)) = self.bridge.as_ref() {
                    b.mute(BridgeSide::B, muted);
                }
            }
            Command::JoinMonitor { leg, mode } => {
                self.monitor = self.join(leg, monitor_mode(mode));
                if self.monitor.is_some() {
                    info!(mode = mode.name(), "supervisor joined");
                }
            }
            Command::MonitorMode(mode) => {
                if let Some(Err(e)) = self.monitor.as_ref().map(|m| m.set_mode(monitor_mode(mode))) {
                    warn!(error = %e, "monitor mode not changed");
                }
            }
            Command::StopMonitor => {
                if let Some(m) = self.monitor.take() {
                    m.stop();
                }
            }
            Command::JoinConsult { leg } => {
                self.consult = self.join(leg, MonitorMode::Barge);
                if self.consult.is_some() {
                    info!("consultation: the consulted party answered");
                }
            }
            Command::LeaveConsult => {
                if let Some(m) = self.consult.take() {
                    m.stop();
                }
            }
            Command::StartRecording { paused } => {
                if let Some((_, b)) = self.bridge.as_ref() {
                    match b.start_recording(self.id.as_str()) {
                        Ok(handle) => {
                            if paused {
                                handle.pause();
                            }
                            self.recording = Some(handle);
                        }
                        Err(e) => warn!(error = %e, "recording not started"),
                    }
                }
            }
            Command::PauseRecording => {
                if let Some(r) = self.recording.as_ref() {
                    r.pause();
                }
            }
            Command::ResumeRecording => {
                if let Some(r) = self.recording.as_ref() {
                    r.resume();
                }
            }
            Command::StopRecording => {
                let path = match self.recording.take() {
                    Some(r) => match r.stop().await {
                        Ok(path) => Some(path.display().to_string()),
                        Err(e) => {
                            warn!(error = %e, "recording not closed");
                            None
                        }
                    },
                    None => None,
                };
                self.feed(Input::RecordingStopped { path });
            }
            Command::DeskOffer {
                agent,
                queue,
                explanation,
                waited_ms,
            } => {
                let pop = self.screen_pop(queue, explanation, waited_ms);
                let tx = self.commands_tx.clone();
                self.inner.desks.offer(&agent, pop, tx, Timestamp::now_utc());
            }
            Command::DeskWithdraw { agent, reason } => self.inner.desks.withdraw(&self.id, &agent, &reason),
            Command::DeskPhase { agent, phase } => {
                self.inner
                    .desks
                    .set_phase(&self.id, &agent, phase, Timestamp::now_utc())
            }
            Command::DeskRelease { agent } => self.inner.desks.release(&self.id, &agent),
            Command::DeskMediaAnswer { agent, sdp } => self.inner.desks.notify(
                &agent,
                DeskEvent::MediaAnswer {
                    call: self.id.clone(),
                    sdp,
                },
            ),
            Command::WrapUpDone { agent } => {
                // A late disposition must not end the after-call work of a newer call.
                if !self.inner.acd.agent_has_other_call(&agent, &self.id).await {
                    let _ = self.inner.acd.request(acd::Input::WrapUpDone { agent }).await;
                }
            }
            Command::Campaign(note) => self.campaign_note(note),
            Command::Finished => {}
        }
    }

    /// An agent-placed call's agent goes back as they were, unless a newer call has them; anything
    /// else goes to the router as it is.
    async fn acd(&mut self, input: acd::Input) {
        if self.restore.as_ref() == Some(&input) {
            let newer = match &input {
                acd::Input::AgentReady { agent } | acd::Input::AgentNotReady { agent, .. } => {
                    self.inner.acd.agent_has_other_call(agent, &self.id).await
                }
                _ => false,
            };
            if !newer {
                let _ = self.inner.acd.request(input).await;
            }
            return;
        }
        self.inner.acd.input(input);
    }

    fn campaign_note(&mut self, note: CampaignNote) {
        let Some(link) = self.campaign.as_ref() else {
            return;
        };
        match note {
            CampaignNote::Connected { at, .. } => link.connected(at),
            CampaignNote::Abandoned => {
                info!("no agent within the connect time; playing the identification message");
                self.outcome.abandoned = true;
                link.abandoned();
            }
            CampaignNote::WrappedUp { agent, wants } => link.wrapped_up(&agent, wants),
        }
    }

    /// Feeds the result of placing `leg` back to the session.
    fn placed(
        &mut self,
        leg: LegRef,
        placed: Option<(
            sip_gateway::LegHandle,
            media::engine::RtpLeg,
            tokio::sync::mpsc::Receiver<media::engine::LegEvent>,
        )>,
        customer: bool,
        agent: Option<domain::AgentId>,
    ) {
        match placed {
            Some((sip, rtp, media)) => {
                self.legs.insert(
                    leg,
                    LegIo {
                        sip: Some(sip),
                        web: None,
                        rtp,
                        media: customer.then_some(media),
                        agent,
                    },
                );
                self.feed(Input::LegStarted { leg });
            }
            None => self.feed(Input::LegFailed {
                leg,
                reason: "not placed".into(),
            }),
        }
    }

    /// Opens a softphone leg; `attach_to` feeds an existing agent leg's engine leg (re-attach).
    fn open_browser(&mut self, leg: LegRef, sdp: Option<String>, attach_to: Option<LegRef>) {
        let opened = legs::open_browser(&self.inner, sdp).and_then(|(web, answer)| {
            let rtp = match attach_to.and_then(|l| self.legs.get(&l)) {
                Some(_) => None,
                None => Some(
                    self.inner
                        .media
                        .allocate_leg()
                        .map_err(|e| Refusal::new("unavailable", e.to_string()))?
                        .0,
                ),
            };
            let feeds = match (&rtp, attach_to.and_then(|l| self.legs.get(&l))) {
                (Some(rtp), _) => rtp,
                (None, Some(io)) => &io.rtp,
                (None, None) => {
                    return Err(Refusal::new(
                        "not_connected",
                        "you are not talking to this caller",
                    ));
                }
            };
            web.connect_plain(feeds)
                .map_err(|e| Refusal::new("unavailable", e.to_string()))?;
            Ok((web, answer, rtp))
        });
        match opened {
            Ok((web, answer_sdp, Some(rtp))) => {
                self.legs.insert(
                    leg,
                    LegIo {
                        sip: None,
                        web: Some(web),
                        rtp,
                        media: None,
                        agent: None,
                    },
                );
                self.feed(Input::BrowserOpened { leg, answer_sdp });
            }
            Ok((web, answer_sdp, None)) => {
                if let Some(io) = attach_to.and_then(|l| self.legs.get_mut(&l)) {
                    info!("browser media re-attached");
                    io.web = Some(web);
                }
                self.feed(Input::BrowserOpened { leg, answer_sdp });
            }
            Err(refusal) => self.feed(Input::BrowserFailed { leg, refusal }),
        }
    }

    /// Attaches `leg`'s engine leg to the bridge's mixer.
    fn join(&self, leg: LegRef, mode: MonitorMode) -> Option<media::engine::MonitorHandle> {
        let (_, bridge) = self.bridge.as_ref()?;
        let io = self.legs.get(&leg)?;
        match bridge.monitor(&io.rtp, mode) {
            Ok(handle) => Some(handle),
            Err(e) => {
                warn!(error = %e, "leg not joined to the bridge");
                None
            }
        }
    }

    fn load(&self, prompts: &[PathBuf]) -> Vec<media::prompt::Prompt> {
        let Some(law) = self.caller.as_ref().map(|c| c.law) else {
            return Vec::new();
        };
        prompts
            .iter()
            .filter_map(|p| match self.inner.media.prompts().get(p, law) {
                Ok(prompt) => Some(prompt),
                Err(e) => {
                    warn!(prompt = %p.display(), error = %e, "prompt cannot be played");
                    None
                }
            })
            .collect()
    }

    /// The looping music a held caller hears (silence when none is configured or it cannot load).
    fn hold_music(&self) -> Vec<media::prompt::Prompt> {
        match self.inner.hold_music.as_ref() {
            Some(path) => self.load(std::slice::from_ref(path)),
            None => Vec::new(),
        }
    }

    /// Records the caller's message into `name`, after a beep when `beep`.
    fn start_voicemail(&mut self, name: &str, beep: bool) {
        let Some(c) = self.caller.as_ref() else {
            return self.feed(Input::VoicemailFailed);
        };
        if beep {
            // 400 ms at 1 kHz: the classic "speak after the tone".
            let samples: Vec<i16> = (0..3200)
                .map(|i| ((i as f32 * 2.0 * std::f32::consts::PI * 1000.0 / 8000.0).sin() * 8000.0) as i16)
                .collect();
            let tone = media::prompt::Prompt::from_samples("beep", c.law, &samples);
            c.rtp.play(vec![tone], false, false);
        }
        match self.inner.media.record_leg(&c.rtp, name) {
            Ok(recording) => {
                info!("recording a voicemail");
                self.voicemail = Some(recording);
            }
            Err(e) => {
                warn!(error = %e, "voicemail not recorded");
                self.feed(Input::VoicemailFailed);
            }
        }
    }

    /// The IVR's async work; its answer comes back as [`Input::Ivr`].
    fn ivr_work(&self, command: IvrCommand) {
        let tx = self.done_tx.clone();
        match command {
            IvrCommand::Lookup {
                request,
                key,
                timeout,
            } => {
                let crm = self.inner.crm.clone();
                tokio::spawn(async move {
                    let result = tokio::time::timeout(timeout, lookup(crm, key))
                        .await
                        .unwrap_or(ivr::LookupResult::Failed);
                    let _ = tx.send(Done(ivr::IvrEvent::LookupResult { request, result }));
                });
            }
            IvrCommand::Webhook {
                request,
                url,
                body,
                timeout,
            } => {
                let own = self.inner.own_http.get().cloned();
                let client = self
                    .inner
                    .webhook_client
                    .get()
                    .unwrap_or_else(|| crate::webhook::default_client())
                    .clone();
                tokio::spawn(async move {
                    let result =
                        match crate::webhook::post_json(&client, &url, own.as_ref(), body.expose(), timeout)
                            .await
                        {
                            Ok(v) => ivr::WebhookResult::Reply(Pii::new(v)),
                            Err(e) => {
                                warn!(?e, "webhook failed");
                                ivr::WebhookResult::Failed
                            }
                        };
                    let _ = tx.send(Done(ivr::IvrEvent::WebhookResult { request, result }));
                });
            }
            IvrCommand::QueryQueue { request, queue } => {
                let acd = self.inner.acd.clone();
                tokio::spawn(async move {
                    let (waiting, available, ewt) = acd.queue_state(&queue).await.unwrap_or((0, 0, None));
                    let state = ivr::QueueSnapshot {
                        agents_available: available,
                        waiting,
                        estimated_wait: Duration::from_millis(ewt.unwrap_or(0)),
                    };
                    let _ = tx.send(Done(ivr::IvrEvent::QueueState { request, state }));
                });
            }
            _ => {}
        }
    }

    /// Keeps the IVR's state (never sensitive digits) in the state store, where the agent desktop
    /// and other nodes read what the caller did.
    async fn save_ivr_state(&self, state: &ivr::IvrState) {
        let Ok(bytes) = serde_json::to_vec(state) else {
            return;
        };
        let write = state_store::BlobWrite::new().ttl(Duration::from_secs(4 * 3600));
        let put = self.inner.state.put_blob(
            crate::IVR_STATE_NAMESPACE,
            self.id.as_str(),
            &bytes,
            &write,
            Timestamp::now_utc(),
        );
        match tokio::time::timeout(Duration::from_millis(500), put).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => warn!(error = %e, "IVR state not saved"),
            Err(_) => warn!("IVR state not saved in time"),
        }
    }

    /// The caller's CRM record by their number, within 500 ms (a slow or failing CRM never holds
    /// the call up).
    async fn find_customer(&self, number: &Pii<String>) -> Option<crm_store::CustomerCard> {
        let lookup = self.inner.crm.find_customer_by_phone(number.expose());
        match tokio::time::timeout(Duration::from_millis(500), lookup).await {
            Ok(Ok(card)) => card,
            Ok(Err(e)) => {
                warn!(error = %e, "CRM lookup of the caller failed");
                None
            }
            Err(_) => {
                warn!("CRM lookup of the caller timed out");
                None
            }
        }
    }

    /// What the agent's desktop shows for an offer.
    fn screen_pop(
        &self,
        queue: Option<domain::QueueId>,
        explanation: String,
        waited_ms: u64,
    ) -> Arc<ScreenPop> {
        let ivr = self.session.ivr_state().map(|state| IvrPop {
            flow: state.flow.clone(),
            node: state.node.clone(),
            language: state.language.clone(),
            variables: state.vars.clone(),
        });
        Arc::new(ScreenPop {
            call: self.id.clone(),
            direction: self.pop.direction,
            queue,
            caller: self.caller_number.clone(),
            called: self.called_number.clone(),
            waited_ms,
            explanation: format!("{}{explanation}", self.pop.prefix),
            customer: self.card.clone(),
            ivr,
            campaign: self.campaign.as_ref().map(|l| l.pop()),
        })
    }
}

async fn lookup(crm: crm_store::CrmStore, key: ivr::LookupKey) -> ivr::LookupResult {
    let found = match &key {
        ivr::LookupKey::CallerNumber(n) => crm.find_customer_by_phone(n.expose()).await,
        ivr::LookupKey::AccountNumber(a) => crm.find_customer_by_account(a.expose()).await,
    };
    match found {
        Ok(Some(card)) => ivr::LookupResult::Found(ivr::CustomerRecord {
            id: card.customer.id.clone(),
            name: card.customer.name.clone(),
            tier: format!("{:?}", card.customer.tier).to_lowercase(),
            account_manager: card.customer.account_manager.clone(),
            open_cases: 0,
        }),
        Ok(None) => ivr::LookupResult::NotFound,
        Err(e) => {
            warn!(error = %e, "CRM lookup failed");
            ivr::LookupResult::Failed
        }
    }
}
