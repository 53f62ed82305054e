//! Login guessing, throttled: a pure record of failed logins per key (a user from one address, one
//! address for every user, one user from every address) with a lockout that doubles.
//!
//! Arithmetic: failures are counted within a window (24 h by default) from the first one. Once a
//! key has `threshold` failures it is locked for `base × 2^(failures − threshold)`, capped at
//! `max_lockout`; every further failure (possible only after a lockout ends) doubles it. With the
//! defaults (5 failures, 60 s, 24 h) one user from one address gets 5 guesses, then one more after
//! 1 min, 2 min, 4 min, ...: about 15 guesses a day instead of a guess a second, so slow guessing
//! stops too. The wider keys (an address for every user, a user from every address) have higher
//! thresholds: they stop spraying one password over many accounts and guessing one account from
//! many addresses, while a user mistyping does not lock their colleagues behind the same NAT.
//!
//! A login is *charged* to its user-and-address key before the password is checked, so parallel
//! guesses cannot all pass the check before the first failure is written; a success clears that key.
//! Time is an input; nothing here reads the clock.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The limits of one kind of key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottlePolicy {
    /// Failures within the window before the first lockout.
    pub threshold: u32,
    /// The first lockout; each further failure doubles it.
    pub base_lockout: Duration,
    /// The longest lockout.
    pub max_lockout: Duration,
    /// Failures older than this (from the first one counted) are forgotten.
    pub window: Duration,
}

impl ThrottlePolicy {
    /// A policy of `threshold` failures with the shared lockout and window settings.
    pub fn with_threshold(self, threshold: u32) -> Self {
        Self { threshold, ..self }
    }
}

/// Failed logins of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FailureRecord {
    /// Failures counted in the current window.
    pub failures: u32,
    /// When the window started (the first counted failure), ms since 1970.
    pub first_ms: i64,
    /// Locked until then, ms since 1970 (0: not locked).
    pub locked_until_ms: i64,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl FailureRecord {
    /// The record as it stands at `now_ms`: a window that has passed (and any lockout in it that
    /// has ended) is forgotten.
    pub fn at(self, now_ms: i64, policy: &ThrottlePolicy) -> Self {
        let window_over = self.failures > 0 && now_ms.saturating_sub(self.first_ms) >= millis(policy.window);
        if window_over && now_ms >= self.locked_until_ms {
            Self::default()
        } else {
            self
        }
    }

    /// Seconds left of a lockout at `now_ms` (at least 1), or None when not locked.
    pub fn locked_for(&self, now_ms: i64) -> Option<u64> {
        let left = self.locked_until_ms.saturating_sub(now_ms);
        (left > 0).then(|| (left as u64).div_ceil(1000).max(1))
    }

    /// The record after one more failure at `now_ms`.
    pub fn fail(self, now_ms: i64, policy: &ThrottlePolicy) -> Self {
        let current = self.at(now_ms, policy);
        let failures = current.failures.saturating_add(1);
        let first_ms = if current.failures == 0 {
            now_ms
        } else {
            current.first_ms
        };
        let threshold = policy.threshold.max(1);
        let locked_until_ms = if failures >= threshold {
            let doublings = (failures - threshold).min(40);
            let lockout = millis(policy.base_lockout)
                .saturating_mul(1i64 << doublings)
                .min(millis(policy.max_lockout));
            now_ms.saturating_add(lockout)
        } else {
            current.locked_until_ms
        };
        Self {
            failures,
            first_ms,
            locked_until_ms,
        }
    }

    /// How long the record must be kept: until its window is over and any lockout has ended.
    pub fn keep_for(&self, now_ms: i64, policy: &ThrottlePolicy) -> Duration {
        let until = self
            .first_ms
            .saturating_add(millis(policy.window))
            .max(self.locked_until_ms);
        Duration::from_millis(until.saturating_sub(now_ms).max(1000) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIN: i64 = 60_000;

    fn policy() -> ThrottlePolicy {
        ThrottlePolicy {
            threshold: 5,
            base_lockout: Duration::from_secs(60),
            max_lockout: Duration::from_secs(24 * 3600),
            window: Duration::from_secs(24 * 3600),
        }
    }

    #[test]
    fn five_failures_lock_for_a_minute_then_each_failure_doubles_it() {
        let p = policy();
        let mut r = FailureRecord::default();
        for i in 0..4 {
            r = r.fail(i * 1000, &p);
            assert_eq!(r.locked_for(i * 1000), None, "failure {}", i + 1);
        }
        r = r.fail(4000, &p);
        assert_eq!(r.locked_for(4000), Some(60));
        // After the minute, one more failure locks for two, then four.
        r = r.fail(4000 + MIN, &p);
        assert_eq!(r.locked_for(4000 + MIN), Some(120));
        let t = 4000 + 3 * MIN;
        r = r.fail(t, &p);
        assert_eq!(r.locked_for(t), Some(240));
    }

    #[test]
    fn slow_guessing_gets_about_fifteen_guesses_a_day() {
        let p = policy();
        let mut r = FailureRecord::default();
        let mut now = 0i64;
        let mut guesses = 0;
        let day = 24 * 3600 * 1000;
        while now < day {
            // The guesser tries once a second, or as soon as a lockout ends.
            match r.at(now, &p).locked_for(now) {
                Some(wait) => now += wait as i64 * 1000,
                None => {
                    r = r.fail(now, &p);
                    guesses += 1;
                    now += 1000;
                }
            }
        }
        assert!(guesses <= 16, "{guesses} guesses in a day");
    }

    #[test]
    fn a_window_passed_forgets_failures() {
        let p = policy();
        let r = FailureRecord::default().fail(0, &p).fail(1000, &p);
        assert_eq!(r.failures, 2);
        let later = r.at(25 * 3600 * 1000, &p);
        assert_eq!(later, FailureRecord::default());
        // A lockout outlasting the window is kept until it ends.
        let capped = ThrottlePolicy {
            max_lockout: Duration::from_secs(48 * 3600),
            ..p
        };
        let mut r = FailureRecord::default();
        for _ in 0..16 {
            r = r.fail(0, &capped);
        }
        assert!(
            r.at(25 * 3600 * 1000, &capped)
                .locked_for(25 * 3600 * 1000)
                .is_some()
        );
    }

    proptest! {
        #[test]
        fn lockouts_never_shrink_and_stay_capped(steps in proptest::collection::vec(0i64..100_000, 1..60)) {
            let p = policy();
            let mut r = FailureRecord::default();
            let mut now = 0i64;
            let mut last_lock = 0i64;
            for step in steps {
                now += step;
                let before = r.at(now, &p);
                r = r.fail(now, &p);
                let lock = r.locked_until_ms.saturating_sub(now);
                prop_assert!(lock <= millis(p.max_lockout));
                if before.failures >= p.threshold && before.failures > 0 {
                    prop_assert!(lock >= last_lock.min(millis(p.max_lockout)));
                }
                if r.failures >= p.threshold { last_lock = lock; } else { last_lock = 0; }
                prop_assert!(r.keep_for(now, &p) >= Duration::from_millis(lock.max(0) as u64));
            }
        }
    }
}
