//! Test-only helpers: virtual clock, scripted agents, SIP and RTP test peers.

pub mod crash;
