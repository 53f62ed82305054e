//! Test-only helpers: free ports, Redis processes of a test's own, and the kill -9 harness.

pub mod crash;
mod ports;
pub mod redis;

pub use ports::free_port;
