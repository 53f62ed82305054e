//! One call's life as a pure state machine: the customer's leg, the IVR beside it, the place in the
//! ACD queue, the agents it is offered to, the agent who talks, holds, mutes, transfers, consults or
//! is supervised, voicemail, campaign connect deadlines, callbacks, and each agent's wrap-up.
//!
//! The session does no IO and never reads the clock. Its owner (the async driver in call control)
//! feeds it what happened with the time, and carries out what it asks:
//!
//! ```text
//! driver --handle(now, Input)--> CallSession --poll_command()--> Command --> SIP, media, ACD, desk, CRM
//!        <--next_deadline()----                                     (results come back as Inputs)
//! ```
//!
//! * Every leg the session asks for gets a fresh [`LegRef`]; the driver keeps `LegRef -> handle`.
//!   An input about a leg the session no longer tracks is stale: ignored (an answered stale leg is
//!   hung up, so nothing leaks).
//! * Work the old driver awaited inline (placing a leg, opening a browser leg, a CRM lookup) is a
//!   command now and an input later. The session is never blocked: a desktop command that arrives
//!   meanwhile is answered from the current state.
//! * Every desktop request ([`Input::Command`]) gets exactly one [`Command::Reply`], at once or
//!   once the leg it started is up or failed.
//! * The session numbers the interaction's events itself ([`Timeline`]) and emits them as
//!   [`Command::Log`], so the events of one call leave it in order.
//! * An agent who leaves the call (hang-up, blind transfer, consult handed over, the caller goes to
//!   the survey) starts after-call work at that moment: [`CallSession::wrap_ups`].
//!
//! Invariants (checked by [`CallSession::check_invariants`] in the property tests): at most one
//! agent talks; an agent being offered the call is never also the one talking; an agent is never
//! both talking and in wrap-up; every leg the session rang is answered or hung up by the end.

pub mod desk;
mod session;
pub mod timeline;

pub use desk::{
    AgentCommand, AgentMedia, CallPhase, CallbackRequest, CampaignWrapUp, CommandResult, DialNumber,
    QueueNotice, Refusal, SuperviseMode, TransferTarget,
};
pub use session::{
    Abandonment, AgentSide, CallSession, CampaignLink, CampaignNote, Command, CustomerSummary, DeskMedia,
    Entry, HeldBy, Input, LegRef, Offer, Origin, Phase, RequestId, Settings, Talking, Trunk, Via, WrapUp,
};
pub use timeline::Timeline;
