//! A campaign's control record: the supervisor's pause, resume or stop, kept in the state store so
//! that it reaches every node's runner of the campaign, not only the one that took the request.
//!
//! Only the lease holder dials, but any node may take a supervisor's request, and the lease may move
//! at any time. So the request is not a message to one runner: it is a record (`campaign-control`,
//! keyed by campaign) written with compare-and-set, which never lapses. Every runner reads it on
//! every tick before deciding to dial, and follows it; a node started later (or one that lost its
//! connection for a while) reads the same record, so a stopped campaign is stopped everywhere and
//! for good. A runner that cannot read the record does not dial that tick.

use super::CampaignAction;
use dialer::campaign::{CampaignError, CampaignState};
use domain::{CampaignId, Timestamp};
use state_store::{BlobWrite, Expect, StateStore, WriteOutcome};

/// Namespace of the campaigns' control records (keyed by campaign id).
pub const CONTROL_NAMESPACE: &str = "campaign-control";

/// How many times a request is tried again when another node's changed the record meanwhile.
const CONFLICT_RETRIES: usize = 8;

/// The state a supervisor's action leads to from `state`: a stopped campaign stays stopped (the
/// campaign's own rules, so the refusal reads the same on every node).
pub(super) fn next_state(state: CampaignState, action: CampaignAction) -> Result<CampaignState, String> {
    match (state, action) {
        (_, CampaignAction::Stop) => Ok(CampaignState::Stopped),
        (CampaignState::Stopped, CampaignAction::Pause) => {
            Err(CampaignError::BadTransition(state, "pause").to_string())
        }
        (CampaignState::Stopped, CampaignAction::Resume) => {
            Err(CampaignError::BadTransition(state, "resume").to_string())
        }
        (_, CampaignAction::Pause) => Ok(CampaignState::Paused),
        (_, CampaignAction::Resume) => Ok(CampaignState::Running),
    }
}

fn encode(state: CampaignState) -> &'static [u8] {
    match state {
        CampaignState::Running => b"running",
        CampaignState::Paused => b"paused",
        CampaignState::Stopped => b"stopped",
    }
}

fn decode(bytes: &[u8]) -> Option<CampaignState> {
    match bytes {
        b"running" => Some(CampaignState::Running),
        b"paused" => Some(CampaignState::Paused),
        b"stopped" => Some(CampaignState::Stopped),
        _ => None,
    }
}

/// The state the supervisors last set for `campaign` (None: never set, or unreadable content).
pub(super) async fn read(store: &StateStore, campaign: &CampaignId) -> Result<Option<CampaignState>, String> {
    let blob = store
        .get_blob(CONTROL_NAMESPACE, campaign.as_str(), Timestamp::now_utc())
        .await
        .map_err(|e| e.to_string())?;
    Ok(blob.and_then(|b| decode(&b.value)))
}

/// Applies `action` to the stored record (`local` is the state when none is stored yet) and returns
/// the state written. Concurrent requests on other nodes are read again and reapplied, so a stop is
/// never overwritten by a resume that raced it.
pub(super) async fn change(
    store: &StateStore,
    campaign: &CampaignId,
    local: CampaignState,
    action: CampaignAction,
) -> Result<CampaignState, String> {
    for _ in 0..CONFLICT_RETRIES {
        let now = Timestamp::now_utc();
        let stored = store
            .get_blob(CONTROL_NAMESPACE, campaign.as_str(), now)
            .await
            .map_err(|e| format!("the campaign's state cannot be read: {e}"))?;
        let (current, expect) = match &stored {
            Some(b) => (decode(&b.value).unwrap_or(local), Expect::Version(b.version)),
            None => (local, Expect::Absent),
        };
        let next = next_state(current, action)?;
        let write = BlobWrite::new().expect(expect);
        match store
            .put_blob(CONTROL_NAMESPACE, campaign.as_str(), encode(next), &write, now)
            .await
        {
            Ok(WriteOutcome::Written { .. }) => return Ok(next),
            Ok(WriteOutcome::Conflict { .. }) => continue,
            Err(e) => return Err(format!("the campaign's state cannot be stored: {e}")),
        }
    }
    Err("the campaign changed on another node meanwhile; try again".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_campaign_stays_stopped_and_the_others_move_freely() {
        use CampaignAction::*;
        use CampaignState::*;
        assert_eq!(next_state(Running, Pause), Ok(Paused));
        assert_eq!(next_state(Paused, Pause), Ok(Paused));
        assert_eq!(next_state(Paused, Resume), Ok(Running));
        assert_eq!(next_state(Running, Stop), Ok(Stopped));
        assert_eq!(next_state(Stopped, Stop), Ok(Stopped));
        assert!(next_state(Stopped, Resume).is_err());
        assert!(next_state(Stopped, Pause).is_err());
        for s in [Running, Paused, Stopped] {
            assert_eq!(decode(encode(s)), Some(s));
        }
        assert_eq!(decode(b"bogus"), None);
    }

    #[tokio::test]
    async fn requests_on_two_nodes_meet_in_one_record() {
        let store = StateStore::memory();
        let id = CampaignId::new("spring").unwrap();
        assert_eq!(read(&store, &id).await, Ok(None));
        let paused = change(&store, &id, CampaignState::Running, CampaignAction::Pause).await;
        assert_eq!(paused, Ok(CampaignState::Paused));
        // Another node, whose own state still says running, reads the record, not its state.
        assert_eq!(read(&store, &id).await, Ok(Some(CampaignState::Paused)));
        let stopped = change(&store, &id, CampaignState::Running, CampaignAction::Stop).await;
        assert_eq!(stopped, Ok(CampaignState::Stopped));
        let resumed = change(&store, &id, CampaignState::Running, CampaignAction::Resume).await;
        assert!(resumed.is_err(), "{resumed:?}");
        assert_eq!(read(&store, &id).await, Ok(Some(CampaignState::Stopped)));
    }
}
