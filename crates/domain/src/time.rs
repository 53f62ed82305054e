//! Time as a value. Pure cores never read a clock: their owner passes `now` in, so a simulation can run
//! hours of virtual time in milliseconds and a test can name the exact instant of every step.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::{Add, Sub};
use std::time::Duration;

/// Milliseconds since the Unix epoch (UTC). Wall-clock in production, virtual in simulations.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The epoch; the start of every simulation.
    pub const ZERO: Timestamp = Timestamp(0);

    /// From milliseconds since the epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Self(ms)
    }
    /// From whole seconds since the epoch.
    pub const fn from_secs(s: i64) -> Self {
        Self(s * 1000)
    }
    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }
    /// The time elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0 - earlier.0).unwrap_or(0))
    }
    /// Reads the system clock. Only IO edges call this; cores take `now` as an argument.
    pub fn now_utc() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

fn millis_i64(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(millis_i64(d)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(millis_i64(d)))
    }
}

/// The time from `earlier` to `self`, zero if `earlier` is later (as [`Timestamp::since`]).
impl Sub<Timestamp> for Timestamp {
    type Output = Duration;
    fn sub(self, earlier: Timestamp) -> Duration {
        self.since(earlier)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={}ms", self.0)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_since_is_never_negative() {
        let t = Timestamp::from_secs(10);
        assert_eq!((t + Duration::from_millis(1500)).as_millis(), 11_500);
        assert_eq!(t.since(Timestamp::from_secs(12)), Duration::ZERO);
        assert_eq!(Timestamp::from_secs(12).since(t), Duration::from_secs(2));
        assert_eq!(
            (Timestamp::from_millis(i64::MAX) + Duration::from_secs(1)).as_millis(),
            i64::MAX
        );
    }
}
