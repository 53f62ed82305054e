//! Outbound dialer: pure pacing policies, campaign and compliance rules, and a discrete-event simulator.
//!
//! Everything here is sans-IO and takes time as an input (`now: Timestamp`); nothing reads a clock.
//!
//! - [`campaign`]: leads, calling windows in the lead's time zone, do-not-call checks, retries, callbacks,
//!   pause / resume / stop ([`campaign::Campaign::next_to_dial`], [`campaign::Campaign::record_result`]).
//! - [`compliance`]: abandonment definitions (US, UK), ring time, the UK 72-hour re-dial block, and the
//!   rolling-window [`compliance::AbandonLedger`].
//! - [`pacing`]: the [`pacing::PacingPolicy`] trait and its policies; the owner calls
//!   `observe(&event)` as calls progress and `dials_to_place(&snapshot)` to know how many to dial.
//! - [`driver`]: a live campaign's decisions ([`driver::CampaignDriver`]): dials in flight, people
//!   waiting, attempts running, deferred wrap-ups, previews, and when and how many to dial; the
//!   runner in call control only does its IO.
//! - [`sim`]: the simulator ([`sim::simulate`]) and the benchmark grid ([`sim::grid::run_grid`]).

pub mod campaign;
pub mod compliance;
pub mod driver;
pub mod estimate;
pub mod pacing;
pub mod rng;
pub mod sim;
