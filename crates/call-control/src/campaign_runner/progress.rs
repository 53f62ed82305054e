//! Lead progress and campaign status as the CRM store keeps them, saved in order by a writer task.

use super::*;

/// Saves lead progress and campaign status in the CRM store in the order the runner made the
/// changes, without holding the runner up.
pub(super) struct ProgressWriter {
    pub(super) tx: mpsc::UnboundedSender<Save>,
}

pub(super) enum Save {
    Lead(LeadId, crm_store::LeadProgress),
    Status(CampaignId, &'static str),
    DoNotCall(Pii<String>, AgentId, Timestamp),
}

impl ProgressWriter {
    pub(super) fn start(crm: crm_store::CrmStore, span: tracing::Span) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Save>();
        tokio::spawn(
            async move {
                while let Some(save) = rx.recv().await {
                    let done = match &save {
                        Save::Lead(lead, p) => {
                            tokio::time::timeout(Duration::from_secs(5), crm.save_lead_progress(lead, p))
                                .await
                        }
                        Save::Status(id, status) => {
                            tokio::time::timeout(Duration::from_secs(5), crm.set_campaign_status(id, status))
                                .await
                        }
                        Save::DoNotCall(number, agent, at) => tokio::time::timeout(
                            Duration::from_secs(5),
                            crm.add_do_not_call(number.expose(), "agent", agent.as_str(), *at),
                        )
                        .await
                        .map(|r| r.map(|()| true)),
                    };
                    match done {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => warn!(error = %e, "campaign progress not stored"),
                        Err(_) => warn!("campaign progress not stored in time"),
                    }
                }
            }
            .instrument(span),
        );
        Self { tx }
    }

    pub(super) fn lead(&self, lead: &Lead, last: Option<Disposition>, attempt_at: Option<Timestamp>) {
        let _ = self.tx.send(Save::Lead(
            lead.id.clone(),
            stored_progress(lead, last, attempt_at),
        ));
    }

    pub(super) fn do_not_call(&self, number: Pii<String>, agent: &AgentId, at: Timestamp) {
        let _ = self.tx.send(Save::DoNotCall(number, agent.clone(), at));
    }

    pub(super) fn status(&self, campaign: &CampaignId, state: CampaignState) {
        let _ = self.tx.send(Save::Status(campaign.clone(), stored_state(state)));
    }
}

/// The campaign status the CRM store keeps for a state.
pub(super) fn stored_state(state: CampaignState) -> &'static str {
    match state {
        CampaignState::Running => "running",
        CampaignState::Paused => "paused",
        CampaignState::Stopped => "finished",
    }
}

/// A lead's progress as the CRM store keeps it. `last` is how the attempt just finished (it names the
/// status of a lead that will be retried).
pub(super) fn stored_progress(
    lead: &Lead,
    last: Option<Disposition>,
    attempt_at: Option<Timestamp>,
) -> crm_store::LeadProgress {
    let by = |d| lead.attempts_by.get(&d).copied().unwrap_or(0);
    let status = match lead.status {
        LeadStatus::Pending if lead.callback.is_some() => "callback",
        LeadStatus::Pending if lead.attempts == 0 => "new",
        LeadStatus::Pending => last.map(disposition_name).unwrap_or("pending"),
        LeadStatus::InProgress => "dialing",
        LeadStatus::Done => "done",
        LeadStatus::Exhausted => "exhausted",
        LeadStatus::Blocked => "dnc",
    };
    crm_store::LeadProgress {
        status: status.to_string(),
        attempts: lead.attempts,
        busy_attempts: by(Disposition::Busy),
        no_answer_attempts: by(Disposition::NoAnswer),
        machine_attempts: by(Disposition::Machine),
        abandoned_attempts: by(Disposition::Abandoned),
        failed_attempts: by(Disposition::Failed),
        last_attempt_at: attempt_at,
        next_attempt_at: (lead.status == LeadStatus::Pending).then_some(lead.next_attempt_at),
        last_abandoned_at: lead.last_abandoned_at,
        callback_at: lead.callback.as_ref().map(|c| c.at),
        callback_agent: lead.callback.as_ref().and_then(|c| c.agent.clone()),
    }
}

/// The pure campaign's view of a stored lead, or None for a status the dialer does not know.
pub(super) fn restored_progress(p: &crm_store::LeadProgress) -> Option<LeadProgress> {
    let status = match p.status.as_str() {
        "new" | "pending" | "callback" | "busy" | "no_answer" | "machine" | "abandoned" | "failed" => {
            LeadStatus::Pending
        }
        "dialing" => LeadStatus::InProgress,
        "done" | "contacted" | "completed" | "do_not_call" => LeadStatus::Done,
        "exhausted" | "expired" => LeadStatus::Exhausted,
        "dnc" => LeadStatus::Blocked,
        _ => return None,
    };
    let attempts_by = [
        (Disposition::Busy, p.busy_attempts),
        (Disposition::NoAnswer, p.no_answer_attempts),
        (Disposition::Machine, p.machine_attempts),
        (Disposition::Abandoned, p.abandoned_attempts),
        (Disposition::Failed, p.failed_attempts),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect();
    Some(LeadProgress {
        status,
        attempts: p.attempts,
        attempts_by,
        next_attempt_at: p.next_attempt_at,
        last_abandoned_at: p.last_abandoned_at,
        callback: p.callback_at.map(|at| Callback {
            at,
            agent: p.callback_agent.clone(),
        }),
    })
}
