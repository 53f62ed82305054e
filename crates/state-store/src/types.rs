//! Plain values exchanged with the state store: registrations, versioned records, queue entries, leases
//! and fencing tokens, stream entries; and the checks that turn caller strings into usable key parts.

use crate::error::{StateError, StateResult};
use domain::{CallId, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

/// Longest name (namespace, topic, stream, group, consumer, lease, holder) accepted as a key part.
pub const MAX_NAME_LEN: usize = 128;
/// Longest free-form key (blob key, contact URI, address of record) accepted.
pub const MAX_KEY_LEN: usize = 1024;

/// Checks a name that becomes a middle part of a key: short, printable, and without the `:` separator
/// (so `a:b` + `c` can never collide with `a` + `b:c`).
pub(crate) fn check_name(what: &'static str, name: &str) -> StateResult<()> {
    let reason = if name.is_empty() {
        "is empty".to_string()
    } else if name.len() > MAX_NAME_LEN {
        format!("is longer than {MAX_NAME_LEN} bytes")
    } else if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-_.@+/".contains(*c)))
    {
        format!("has the character {c:?}; use letters, digits, '-', '_', '.', '@', '+' or '/'")
    } else {
        return Ok(());
    };
    Err(StateError::Invalid { what, reason })
}

/// Checks a free-form key that becomes the last part of a key or a hash field: any text, bounded.
pub(crate) fn check_key(what: &'static str, key: &str) -> StateResult<()> {
    let reason = if key.is_empty() {
        "is empty"
    } else if key.len() > MAX_KEY_LEN {
        "is too long"
    } else if key.chars().any(char::is_control) {
        "has a control character"
    } else {
        return Ok(());
    };
    Err(StateError::Invalid {
        what,
        reason: reason.to_string(),
    })
}

/// A SIP address of record: the user whose contacts are registered (e.g. `1001` or `sip:1001@example.com`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Aor(String);

impl Aor {
    /// Parses an address of record: non-empty, at most [`MAX_KEY_LEN`] bytes, no whitespace or control.
    pub fn new(s: impl Into<String>) -> StateResult<Self> {
        let s = s.into();
        check_key("address of record", &s)?;
        if s.chars().any(char::is_whitespace) {
            return Err(StateError::Invalid {
                what: "address of record",
                reason: "has whitespace".to_string(),
            });
        }
        Ok(Self(s))
    }
    /// The address as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Aor {
    type Error = StateError;
    fn try_from(s: String) -> StateResult<Self> {
        Self::new(s)
    }
}
impl From<Aor> for String {
    fn from(a: Aor) -> String {
        a.0
    }
}
impl fmt::Debug for Aor {
    // An AOR names a person's phone; keep it out of debug output.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Aor(***)")
    }
}

/// SIP transport a contact registered over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
    Ws,
    Wss,
}

/// One registered contact of an address of record.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The Contact URI as registered; identifies the binding within its address of record.
    pub contact: String,
    /// When the binding lapses unless refreshed (exclusive: at this instant it is already gone).
    pub expires_at: Timestamp,
    /// Call-ID of the REGISTER that created or refreshed it.
    pub call_id: String,
    /// CSeq number of that REGISTER.
    pub cseq: u32,
    /// Address the REGISTER came from (where requests are sent behind NAT).
    pub source: SocketAddr,
    /// Transport the REGISTER came over.
    pub transport: Transport,
}

impl Binding {
    /// Whether the binding still stands at `now`.
    pub fn is_live(&self, now: Timestamp) -> bool {
        self.expires_at > now
    }
}

impl fmt::Debug for Binding {
    // Contact URIs and addresses can identify a person; show only what helps debugging.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binding")
            .field("expires_at", &self.expires_at)
            .field("cseq", &self.cseq)
            .field("transport", &self.transport)
            .finish_non_exhaustive()
    }
}

/// A stored value with the version it was written at. Versions come from one counter per store, so a
/// version is never reused, even after a delete: compare-and-set can never be fooled by an old number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned<T> {
    pub version: u64,
    pub value: T,
}

/// What a write requires of the current version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expect {
    /// Write whatever is there.
    #[default]
    Any,
    /// Write only if nothing (live) is stored.
    Absent,
    /// Write only if the stored version is this one.
    Version(u64),
}

/// Outcome of a conditional write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// Written; the value now has this version.
    Written { version: u64 },
    /// Not written: the stored version (None when absent) is not the expected one.
    Conflict { current: Option<u64> },
}

impl WriteOutcome {
    /// The new version if the write happened.
    pub fn version(self) -> Option<u64> {
        match self {
            Self::Written { version } => Some(version),
            Self::Conflict { .. } => None,
        }
    }
}

/// Monotonic number handed out with each grant of a lease: a later grant has a larger token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Proof of holding a lease, presented with a fenced write. The write is accepted only while no later
/// grant of the same lease exists, so a paused or partitioned former holder cannot overwrite its successor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Fence {
    pub lease: String,
    pub token: FencingToken,
}

/// A granted lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub token: FencingToken,
    /// The lease lapses at this instant unless renewed.
    pub expires_at: Timestamp,
}

impl Lease {
    /// The fence to present with writes made under this lease.
    pub fn fence(&self) -> Fence {
        Fence {
            lease: self.name.clone(),
            token: self.token,
        }
    }
}

/// Options of a blob write: a time to live, a version condition and a fence, all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobWrite {
    pub ttl: Option<Duration>,
    pub expect: Expect,
    pub fence: Option<Fence>,
}

impl BlobWrite {
    /// An unconditional write that never expires.
    pub fn new() -> Self {
        Self::default()
    }
    /// The blob lapses `ttl` after the write's `now`.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
    /// Write only if the current version matches.
    pub fn expect(mut self, expect: Expect) -> Self {
        self.expect = expect;
        self
    }
    /// Write only while `fence` is the latest grant of its lease.
    pub fn fenced(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }
}

/// A token bucket: up to `capacity` tokens, refilled at `refill_per_sec`; each request takes some.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenBucket {
    pub capacity: u32,
    pub refill_per_sec: u32,
}

impl TokenBucket {
    /// A bucket; both numbers must be positive.
    pub fn new(capacity: u32, refill_per_sec: u32) -> StateResult<Self> {
        if capacity == 0 || refill_per_sec == 0 {
            return Err(StateError::Invalid {
                what: "token bucket",
                reason: "capacity and refill rate must be positive".to_string(),
            });
        }
        Ok(Self {
            capacity,
            refill_per_sec,
        })
    }

    /// Milliseconds an empty bucket takes to fill; longer idle gaps add nothing.
    pub(crate) fn fill_ms(self) -> i64 {
        ceil_div(i64::from(self.capacity) * 1000, i64::from(self.refill_per_sec))
    }

    /// The pure bucket step shared by the memory backend and mirrored by the Redis script: from the
    /// stored level (millitokens) and time of the last take, the decision and the new level.
    pub(crate) fn take(self, stored: Option<(i64, i64)>, cost: u32, now_ms: i64) -> (RateDecision, i64) {
        let full = i64::from(self.capacity) * 1000;
        let level = match stored {
            None => full,
            Some((milli, last_ms)) => {
                let elapsed = (now_ms - last_ms).clamp(0, self.fill_ms());
                (milli + elapsed * i64::from(self.refill_per_sec)).min(full)
            }
        };
        let need = i64::from(cost) * 1000;
        if level >= need {
            let left = level - need;
            (
                RateDecision {
                    allowed: true,
                    remaining: u32::try_from(left / 1000).unwrap_or(0),
                    retry_after_ms: 0,
                },
                left,
            )
        } else {
            let wait = ceil_div(need - level, i64::from(self.refill_per_sec));
            (
                RateDecision {
                    allowed: false,
                    remaining: u32::try_from(level / 1000).unwrap_or(0),
                    retry_after_ms: u64::try_from(wait).unwrap_or(0),
                },
                level,
            )
        }
    }
}

/// `a / b` rounded up, for positive `a` and `b`.
fn ceil_div(a: i64, b: i64) -> i64 {
    (a + b - 1) / b
}

/// The answer of a rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub allowed: bool,
    /// Whole tokens left after this request.
    pub remaining: u32,
    /// When refused: how long until the request would be allowed (for `Retry-After`).
    pub retry_after_ms: u64,
}

/// Largest magnitude of a queue ordering key: Redis keeps scores as doubles, exact up to 2^53.
pub const MAX_QUEUE_ORDER: i64 = 1 << 53;

/// Position key of a queue entry: smaller goes first; ties go by call id. The caller builds it, e.g.
/// from priority and enqueue time, so a call put back (RONA) keeps its original place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueOrder(i64);

impl QueueOrder {
    /// Parses an ordering key; it must lie within ±2^53 so every backend keeps it exactly.
    pub fn new(key: i64) -> StateResult<Self> {
        if key.unsigned_abs() > MAX_QUEUE_ORDER.unsigned_abs() {
            return Err(StateError::Invalid {
                what: "queue order",
                reason: "is beyond ±2^53".to_string(),
            });
        }
        Ok(Self(key))
    }
    /// The ordering key.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// One call waiting in a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    pub call: CallId,
    pub order: QueueOrder,
    /// The caller's payload (e.g. JSON of the waiting call: priority, skills, enqueue time).
    pub payload: Vec<u8>,
}

/// Id of an entry of a durable stream; opaque, ordered as the backend orders it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StreamEntryId(pub String);

impl fmt::Display for StreamEntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of a durable stream, as delivered to a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    pub id: StreamEntryId,
    pub payload: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_reject_separators_and_oddities() {
        assert!(check_name("topic", "queue.sales/kpi").is_ok());
        assert!(check_name("topic", "a:b").is_err());
        assert!(check_name("topic", "").is_err());
        assert!(check_name("topic", &"x".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(check_key("key", "sip:1001@example.com;transport=tcp").is_ok());
        assert!(check_key("key", "a\nb").is_err());
    }

    #[test]
    fn queue_order_is_bounded_by_exact_doubles() {
        assert!(QueueOrder::new(MAX_QUEUE_ORDER).is_ok());
        assert!(QueueOrder::new(-MAX_QUEUE_ORDER).is_ok());
        assert!(QueueOrder::new(MAX_QUEUE_ORDER + 1).is_err());
        assert!(QueueOrder::new(i64::MIN).is_err());
    }

    #[test]
    fn debug_hides_addresses() {
        let aor = Aor::new("sip:+15551234567@example.com").unwrap();
        assert!(!format!("{aor:?}").contains("555"));
        let b = Binding {
            contact: "sip:+15551234567@10.0.0.1".into(),
            expires_at: Timestamp::from_secs(1),
            call_id: "c".into(),
            cseq: 1,
            source: "10.0.0.1:5060".parse().unwrap(),
            transport: Transport::Udp,
        };
        let shown = format!("{b:?}");
        assert!(!shown.contains("555") && !shown.contains("10.0.0.1"));
    }

    #[test]
    fn token_bucket_refills_at_its_rate() {
        let b = TokenBucket::new(2, 4).unwrap();
        let (d, level) = b.take(None, 1, 0);
        assert!(d.allowed);
        assert_eq!((d.remaining, level), (1, 1000));
        let (d, level) = b.take(Some((level, 0)), 1, 0);
        assert!(d.allowed);
        let (d, level) = b.take(Some((level, 0)), 1, 0);
        assert_eq!(
            d,
            RateDecision {
                allowed: false,
                remaining: 0,
                retry_after_ms: 250
            }
        );
        // 250 ms later one token is back; idle time never fills beyond capacity.
        assert!(b.take(Some((level, 0)), 1, 250).0.allowed);
        assert_eq!(b.take(Some((0, 0)), 1, 1_000_000).0.remaining, 1);
        assert!(TokenBucket::new(0, 1).is_err());
    }

    proptest! {
        #[test]
        fn check_name_never_panics_and_accepts_only_safe_text(s in "\\PC{0,200}") {
            if check_name("n", &s).is_ok() {
                prop_assert!(!s.contains(':') && !s.is_empty() && s.len() <= MAX_NAME_LEN);
            }
        }

        #[test]
        fn aor_roundtrips_through_json(s in "[a-z0-9:@.+]{1,60}") {
            let aor = Aor::new(s.clone()).unwrap();
            let json = serde_json::to_string(&aor).unwrap();
            let back: Aor = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back.as_str(), s.as_str());
        }

        #[test]
        fn token_bucket_never_overdraws(steps in prop::collection::vec((0..3u32, 0..500i64), 1..50)) {
            let b = TokenBucket::new(5, 10).unwrap();
            let (mut stored, mut now, mut allowed_cost) = (None, 0i64, 0u64);
            for (cost, dt) in steps {
                now += dt;
                let (d, level) = b.take(stored, cost, now);
                prop_assert!((0..=5000).contains(&level));
                if d.allowed { allowed_cost += u64::from(cost); }
                stored = Some((level, now));
            }
            // Never more than the initial burst plus what the elapsed time refilled.
            prop_assert!(allowed_cost <= 5 + u64::try_from(now).unwrap() * 10 / 1000);
        }

        #[test]
        fn queue_order_accepts_exactly_the_exact_range(k in any::<i64>()) {
            prop_assert_eq!(QueueOrder::new(k).is_ok(), k.unsigned_abs() <= 1u64 << 53);
        }
    }
}
