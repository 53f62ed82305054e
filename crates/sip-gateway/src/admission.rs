//! Overload and abuse control, pure apart from atomics: token buckets take `now` in milliseconds.
//!
//! Global calls per second and concurrent calls protect the node (503 with Retry-After); a bucket per
//! source address keeps one noisy peer from starving the rest (its excess is dropped and counted).

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate_per_ms: f64,
    burst: f64,
    tokens: f64,
    last_ms: i64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate_per_sec: f64, burst: f64, now_ms: i64) -> Self {
        Self {
            rate_per_ms: rate_per_sec / 1000.0,
            burst,
            tokens: burst,
            last_ms: now_ms,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now_ms: i64) -> bool {
        let elapsed = (now_ms - self.last_ms).max(0) as f64;
        self.tokens = (self.tokens + elapsed * self.rate_per_ms).min(self.burst);
        self.last_ms = now_ms.max(self.last_ms);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Per-source request rate limits. A rate of 0 disables the limit.
pub struct SourceLimiter {
    rate_per_sec: f64,
    burst: f64,
    exempt: Vec<IpAddr>,
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

impl SourceLimiter {
    /// Sources in `exempt` (trunks, load balancers) are never limited.
    pub fn new(rate_per_sec: u32, burst: u32, exempt: Vec<IpAddr>) -> Self {
        Self {
            rate_per_sec: rate_per_sec as f64,
            burst: burst.max(1) as f64,
            exempt,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a request from `ip` may go on.
    pub fn allow(&self, ip: IpAddr, now_ms: i64) -> bool {
        if self.rate_per_sec <= 0.0 || self.exempt.contains(&ip) {
            return true;
        }
        let mut buckets = self.buckets.lock();
        if buckets.len() > 100_000 {
            // Forget idle sources rather than grow without bound under a spoofed-address flood.
            buckets.retain(|_, b| now_ms - b.last_ms < 10_000);
        }
        buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(self.rate_per_sec, self.burst, now_ms))
            .try_take(now_ms)
    }
}

/// Why a new call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Draining,
    TooManyCalls,
    RateExceeded,
}

impl Refusal {
    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Draining => "draining",
            Refusal::TooManyCalls => "concurrent_limit",
            Refusal::RateExceeded => "cps_limit",
        }
    }
}

/// Admission of new calls: global CPS, concurrent calls and the drain switch.
pub struct CallAdmission {
    cps: Mutex<Option<TokenBucket>>,
    max_concurrent: usize,
    active: AtomicUsize,
    draining: AtomicBool,
}

/// Holding one counts the call as active; dropping it releases the slot.
pub struct CallSlot<'a> {
    admission: &'a CallAdmission,
}

impl Drop for CallSlot<'_> {
    fn drop(&mut self) {
        self.admission.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl CallAdmission {
    /// `max_cps` 0 disables the rate limit; `max_concurrent` 0 disables the concurrency limit.
    pub fn new(max_cps: u32, max_concurrent: usize, now_ms: i64) -> Self {
        let cps = (max_cps > 0).then(|| TokenBucket::new(max_cps as f64, max_cps as f64, now_ms));
        Self {
            cps: Mutex::new(cps),
            max_concurrent,
            active: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
        }
    }

    /// Admits a call or says why not.
    pub fn admit(&self, now_ms: i64) -> Result<CallSlot<'_>, Refusal> {
        if self.draining.load(Ordering::Acquire) {
            return Err(Refusal::Draining);
        }
        let n = self.active.fetch_add(1, Ordering::AcqRel);
        let slot = CallSlot { admission: self };
        if self.max_concurrent > 0 && n >= self.max_concurrent {
            return Err(Refusal::TooManyCalls);
        }
        if let Some(bucket) = self.cps.lock().as_mut()
            && !bucket.try_take(now_ms)
        {
            return Err(Refusal::RateExceeded);
        }
        Ok(slot)
    }

    /// Stops admitting calls (graceful shutdown).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether draining has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Calls in progress.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_rate_and_caps_at_burst() {
        let mut b = TokenBucket::new(10.0, 2.0, 0);
        assert!(b.try_take(0));
        assert!(b.try_take(0));
        assert!(!b.try_take(0));
        assert!(!b.try_take(50));
        assert!(b.try_take(100));
        assert!(b.try_take(10_000));
        assert!(b.try_take(10_000));
        assert!(!b.try_take(10_000));
    }

    #[test]
    fn admission_limits_concurrency_rate_and_drains() {
        let a = CallAdmission::new(0, 2, 0);
        let s1 = a.admit(0).unwrap();
        let _s2 = a.admit(0).unwrap();
        assert_eq!(a.admit(0).err(), Some(Refusal::TooManyCalls));
        drop(s1);
        assert_eq!(a.active(), 1);
        let _s3 = a.admit(0).unwrap();
        a.start_draining();
        assert_eq!(a.admit(0).err(), Some(Refusal::Draining));

        let r = CallAdmission::new(1, 0, 0);
        let _x = r.admit(0).unwrap();
        assert_eq!(r.admit(10).err(), Some(Refusal::RateExceeded));
        assert!(r.admit(1_100).is_ok());
    }

    #[test]
    fn source_limiter_is_per_address_and_honours_exemptions() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let l = SourceLimiter::new(1, 1, vec![b]);
        assert!(l.allow(a, 0));
        assert!(!l.allow(a, 1));
        for t in 0..10 {
            assert!(l.allow(b, t));
        }
    }
}
