//! Automatic call distribution: a pure routing core for queues, agents, skills and priorities, with KPIs.
//!
//! The crate has no IO, no async runtime and no clock. Its owner (the ACD task in `call-control`) feeds
//! it events with the current time and carries out what comes back:
//!
//! ```
//! use acd::{Acd, AcdConfig, AgentConfig, CallRequest, Input, Output, QueueConfig, QueueMembership};
//! use domain::{AgentId, CallId, QueueId, Timestamp};
//!
//! let support = QueueId::new("support").unwrap();
//! let alice = AgentId::new("alice").unwrap();
//! let config = AcdConfig {
//!     queues: vec![QueueConfig::new(support.clone())],
//!     agents: vec![AgentConfig {
//!         id: alice.clone(),
//!         skills: Default::default(),
//!         queues: vec![QueueMembership { queue: support.clone(), rank: 1 }],
//!     }],
//!     random_seed: 1,
//! };
//! let mut acd = Acd::new(config).unwrap();
//! acd.handle(Timestamp::from_secs(0), Input::AgentLogin { agent: alice.clone() }).unwrap();
//! let call = CallId::new("c1").unwrap();
//! acd.handle(Timestamp::from_secs(5), Input::CallEnqueued(CallRequest::new(call.clone(), support))).unwrap();
//! let offer = acd.drain_outputs().find_map(|o| match o { Output::Offer(o) => Some(o), _ => None }).unwrap();
//! assert_eq!(offer.agents, vec![alice.clone()]);
//! println!("{}", offer.explanation.sentence());
//! acd.handle(Timestamp::from_secs(8), Input::OfferAccepted { call, agent: alice }).unwrap();
//! ```
//!
//! * [`Acd::handle`]`(now, `[`Input`]`)` applies one event: calls enqueued, abandoned, ended; agents
//!   logging in and out, ready, not ready; offers accepted, rejected or withdrawn; wrap-up done; configuration
//!   changes; [`Input::Tick`]; [`Input::Resumed`] after a time no router ran. Timers due by `now`
//!   fire first (except on [`Input::Resumed`], which moves the ringing offers' first). A refused input returns an [`AcdError`]
//!   (unknown ids, illegal agent transitions with their reason) and changes nothing.
//! * [`Acd::poll_output`] / [`Acd::drain_outputs`] yield [`Output`]s in order: offers (with an
//!   [`Explanation`] that serialises to JSON and reads as one sentence), cancelled offers, answers,
//!   abandons (with position and wait), overflows, announcements and agent state changes.
//! * [`Acd::next_deadline`] says when to send the next [`Input::Tick`].
//! * [`Acd::kpis`] computes the live [`KpiSnapshot`] (per queue: waiting, oldest wait, estimated wait,
//!   service level by the queue's formula, ASA, abandon rate, AHT, agents by state; per agent: occupancy,
//!   handled calls).
//! * [`Acd::snapshot`] / [`Acd::restore`] persist and resume the whole state; a restored router behaves
//!   exactly like the original, so no caller loses their place.
//!
//! Routing rules: the next call for an agent is the one with the highest effective priority (priority plus
//! aging), then the longest waiting, across all queues the agent serves. The agent for a call is chosen by
//! the queue's [`Strategy`] among the lowest-rank eligible agents, where eligibility comes from the call's
//! skill requirement ([`SkillExpr`]) and the routing step in effect ([`RoutingStep`]), which widens the
//! pool as the call waits. A preferred agent gets the call first, for a while. An offer not answered in
//! time (RONA) or rejected returns the call to its original place; the agent is not offered the same call
//! again during the queue's decline pause and, on no answer, becomes NotReady("no-answer").
//!
//! The router is deterministic: the same inputs at the same times give the same outputs (the random
//! strategy draws from a seeded generator kept in the state). So an owner can persist a snapshot now and
//! then plus a journal of `(now, input)` since, and replay the journal onto the restored snapshot. Configuration is plain serde ([`AcdConfig`]).
//!
//! The [`erlang`] module sizes queues with Erlang C.

pub mod agent;
pub mod config;
pub mod erlang;
pub mod expr;
pub mod io;
pub mod kpi;
pub mod notice;
pub mod rng;
pub mod router;

/// How long an offer rings at least after [`Input::Resumed`]: an answer given while no router ran
/// is still on its way (a node retries an input the store did not confirm, backing off to a second
/// at most), and must arrive before the offer rings out.
pub const RESUME_ANSWER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub use agent::{AgentEvent, AgentState, AgentStateKind, IllegalTransition};
pub use config::{
    AcdConfig, AgentConfig, ConfigError, OverflowConfig, OverflowTarget, Priority, Proficiency, QueueConfig,
    QueueMembership, ReasonCode, RoutingStep, ServiceLevelFormula, ServiceLevelTarget, Strategy,
};
pub use expr::{ParseError, SkillExpr};
pub use io::{
    CallRequest, CancelReason, Explanation, Input, Offer, OfferId, Output, OverflowReason, PreferredAgent,
    Rule, Score, Trigger,
};
pub use kpi::{AgentKpi, HeldBack, KpiSnapshot, QueueCounters, QueueKpi};
pub use notice::{Abandonment, AgentStateEvent, QueueNotice};
pub use router::{Acd, AcdError, AcdSnapshot, CallPhase, HeldCall, RestoreError};
