//! Outbound dialer: pure pacing policies, campaign and compliance rules, and a discrete-event simulator.
//!
//! Everything here is sans-IO and takes time as an input. The owner (call control) feeds events in and acts
//! on the answers; the simulator does the same on virtual time to compare pacing policies on identical
//! call outcomes.

pub mod campaign;
pub mod compliance;
pub mod estimate;
pub mod pacing;
pub mod rng;
pub mod sim;
