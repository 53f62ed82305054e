//! Compliance rules for predictive dialing, as pure logic: what counts as an abandoned call, how long a
//! number must ring, when an abandoned number may be dialled again, and the abandonment rate over the
//! rolling window (30 days per campaign under US rules, 24 hours under UK rules).

use domain::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// Which regulator's definitions apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RuleSet {
    /// FCC 47 CFR 64.1200 / FTC TSR: 3% of live-answered calls per campaign per 30 days.
    #[default]
    Us,
    /// Ofcom persistent-misuse policy: 3% per campaign per 24 hours, AMD false positives counted,
    /// no re-dial within 72 hours of an abandoned call.
    Uk,
}

/// Per-campaign compliance settings as written in a configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ComplianceConfig {
    #[serde(default)]
    pub rules: RuleSet,
    /// Maximum abandonment rate, a fraction (default 0.03).
    pub max_abandon_rate: Option<f64>,
    /// Seconds of ringing before giving up (at least 15).
    pub ring_secs: Option<u64>,
    /// UK: the share of answering-machine verdicts estimated to be people (from AMD calibration).
    pub amd_false_positive_share: Option<f64>,
}

/// Why a compliance configuration is rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ComplianceError {
    #[error("max_abandon_rate must be a fraction between 0 and 0.03, got {0}")]
    AbandonRate(f64),
    #[error("ring_secs must be at least 15 seconds, got {0}")]
    RingTooShort(u64),
    #[error("amd_false_positive_share must be between 0 and 1, got {0}")]
    FalsePositiveShare(f64),
}

/// Validated compliance rules of one campaign.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComplianceRules {
    pub rule_set: RuleSet,
    pub max_abandon_rate: f64,
    /// The rolling window over which the rate is held.
    pub window: Duration,
    /// A person must reach an agent within this time after the end of their greeting.
    pub connect_within: Duration,
    /// How long a number rings before the dialer may give up.
    pub ring_time: Duration,
    /// After an abandoned call, the number may not be dialled again for this long (UK).
    pub redial_block: Option<Duration>,
    /// Share of machine verdicts counted as abandoned people (UK).
    pub amd_false_positive_share: f64,
}

/// The legal minimum ring time.
pub const MIN_RING: Duration = Duration::from_secs(15);
const DAY: Duration = Duration::from_secs(24 * 3600);

impl ComplianceRules {
    /// Default US rules.
    pub fn us() -> Self {
        Self {
            rule_set: RuleSet::Us,
            max_abandon_rate: 0.03,
            window: DAY * 30,
            connect_within: Duration::from_secs(2),
            ring_time: MIN_RING,
            redial_block: None,
            amd_false_positive_share: 0.0,
        }
    }

    /// Default UK rules with the given estimate of AMD false positives among machine verdicts.
    pub fn uk(amd_false_positive_share: f64) -> Self {
        Self {
            rule_set: RuleSet::Uk,
            window: DAY,
            redial_block: Some(Duration::from_secs(72 * 3600)),
            amd_false_positive_share: amd_false_positive_share.clamp(0.0, 1.0),
            ..Self::us()
        }
    }

    /// Parses a configuration into rules.
    pub fn from_config(config: &ComplianceConfig) -> Result<Self, ComplianceError> {
        let share = config.amd_false_positive_share.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&share) {
            return Err(ComplianceError::FalsePositiveShare(share));
        }
        let mut rules = match config.rules {
            RuleSet::Us => Self::us(),
            RuleSet::Uk => Self::uk(share),
        };
        if let Some(rate) = config.max_abandon_rate {
            if !(0.0..=0.03).contains(&rate) {
                return Err(ComplianceError::AbandonRate(rate));
            }
            rules.max_abandon_rate = rate;
        }
        if let Some(secs) = config.ring_secs {
            if secs < MIN_RING.as_secs() {
                return Err(ComplianceError::RingTooShort(secs));
            }
            rules.ring_time = Duration::from_secs(secs);
        }
        Ok(rules)
    }

    /// The instant by which a person whose greeting ended at `greeting_end` must be with an agent; after it
    /// the dialer plays the identification message and the call is abandoned.
    pub fn connect_deadline(&self, greeting_end: Timestamp) -> Timestamp {
        greeting_end + self.connect_within
    }

    /// Whether a call answered by a person counts as abandoned.
    pub fn is_abandoned(&self, greeting_end: Timestamp, connected_at: Option<Timestamp>) -> bool {
        connected_at.is_none_or(|at| at > self.connect_deadline(greeting_end))
    }

    /// Whether a ringing call placed at `dialed_at` may be given up at `now`.
    pub fn may_stop_ringing(&self, dialed_at: Timestamp, now: Timestamp) -> bool {
        now.since(dialed_at) >= self.ring_time
    }

    /// Whether a number whose last abandoned call was at `last_abandoned` may be dialled at `now`.
    pub fn may_redial(&self, last_abandoned: Option<Timestamp>, now: Timestamp) -> bool {
        match (self.redial_block, last_abandoned) {
            (Some(block), Some(at)) => now.since(at) >= block,
            _ => true,
        }
    }
}

/// What happened to an answered call, for the abandonment ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnsweredCall {
    /// A person reached an agent in time.
    Connected,
    /// A person got no agent in time.
    Abandoned,
    /// The analyser said answering machine (UK counts a share of these as abandoned people).
    MachineVerdict,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    start: i64,
    connected: u64,
    abandoned: u64,
    machine: u64,
}

/// Counts of answered calls in hourly buckets over the rolling window, giving the abandonment rate as the
/// rules define it. Memory is bounded by the window (720 buckets for 30 days).
#[derive(Debug, Clone)]
pub struct AbandonLedger {
    rules: ComplianceRules,
    buckets: VecDeque<Bucket>,
}

const BUCKET_MS: i64 = 3_600_000;

impl AbandonLedger {
    pub fn new(rules: ComplianceRules) -> Self {
        Self {
            rules,
            buckets: VecDeque::new(),
        }
    }

    fn evict(&mut self, now: Timestamp) {
        let window_ms = i64::try_from(self.rules.window.as_millis()).unwrap_or(i64::MAX);
        let oldest_kept = now.as_millis().saturating_sub(window_ms);
        while self
            .buckets
            .front()
            .is_some_and(|b| b.start + BUCKET_MS <= oldest_kept)
        {
            self.buckets.pop_front();
        }
    }

    /// Records one answered call at `now`.
    pub fn record(&mut self, now: Timestamp, call: AnsweredCall) {
        self.evict(now);
        let start = now.as_millis().div_euclid(BUCKET_MS) * BUCKET_MS;
        if self.buckets.back().is_none_or(|b| b.start < start) {
            self.buckets.push_back(Bucket {
                start,
                ..Bucket::default()
            });
        }
        // Calls reported late (older than the newest bucket) are counted in the newest one.
        if let Some(bucket) = self.buckets.back_mut() {
            match call {
                AnsweredCall::Connected => bucket.connected += 1,
                AnsweredCall::Abandoned => bucket.abandoned += 1,
                AnsweredCall::MachineVerdict => bucket.machine += 1,
            }
        }
    }

    /// (abandoned, answered by a person) in the window, the UK estimate of false positives included.
    pub fn counts(&mut self, now: Timestamp) -> (f64, f64) {
        self.evict(now);
        let (mut connected, mut abandoned, mut machine) = (0u64, 0u64, 0u64);
        for b in &self.buckets {
            connected += b.connected;
            abandoned += b.abandoned;
            machine += b.machine;
        }
        let false_positives = match self.rules.rule_set {
            RuleSet::Us => 0.0,
            RuleSet::Uk => machine as f64 * self.rules.amd_false_positive_share,
        };
        let abandoned = abandoned as f64 + false_positives;
        (abandoned, connected as f64 + abandoned)
    }

    /// The abandonment rate over the window (0 with no answered calls).
    pub fn rate(&mut self, now: Timestamp) -> f64 {
        let (abandoned, answered) = self.counts(now);
        if answered > 0.0 { abandoned / answered } else { 0.0 }
    }

    /// Whether the rate is over the campaign's cap.
    pub fn over_cap(&mut self, now: Timestamp) -> bool {
        self.rate(now) > self.rules.max_abandon_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn two_second_rule_and_ring_time() {
        let rules = ComplianceRules::us();
        let greeting_end = Timestamp::from_secs(100);
        assert!(!rules.is_abandoned(greeting_end, Some(Timestamp::from_millis(101_999))));
        assert!(!rules.is_abandoned(greeting_end, Some(Timestamp::from_secs(102))));
        assert!(rules.is_abandoned(greeting_end, Some(Timestamp::from_millis(102_001))));
        assert!(rules.is_abandoned(greeting_end, None));
        assert!(!rules.may_stop_ringing(Timestamp::ZERO, Timestamp::from_secs(14)));
        assert!(rules.may_stop_ringing(Timestamp::ZERO, Timestamp::from_secs(15)));
    }

    #[test]
    fn uk_blocks_redial_for_72_hours_and_us_does_not() {
        let uk = ComplianceRules::uk(0.0);
        let abandoned = Some(Timestamp::from_secs(0));
        assert!(!uk.may_redial(abandoned, Timestamp::from_secs(71 * 3600)));
        assert!(uk.may_redial(abandoned, Timestamp::from_secs(72 * 3600)));
        assert!(uk.may_redial(None, Timestamp::ZERO));
        assert!(ComplianceRules::us().may_redial(abandoned, Timestamp::from_secs(1)));
    }

    #[test]
    fn config_is_parsed_and_bad_values_rejected() {
        let ok: ComplianceConfig = toml::from_str("rules = \"uk\"\namd_false_positive_share = 0.02").unwrap();
        let rules = ComplianceRules::from_config(&ok).unwrap();
        assert_eq!(rules.window, Duration::from_secs(86_400));
        assert_eq!(rules.redial_block, Some(Duration::from_secs(72 * 3600)));
        let short = ComplianceConfig {
            ring_secs: Some(10),
            ..ComplianceConfig::default()
        };
        assert_eq!(
            ComplianceRules::from_config(&short),
            Err(ComplianceError::RingTooShort(10))
        );
        let high = ComplianceConfig {
            max_abandon_rate: Some(0.1),
            ..ComplianceConfig::default()
        };
        assert_eq!(
            ComplianceRules::from_config(&high),
            Err(ComplianceError::AbandonRate(0.1))
        );
        assert!(toml::from_str::<ComplianceConfig>("rules = \"fr\"").is_err());
    }

    #[test]
    fn ledger_counts_uk_false_positives_and_forgets_old_calls() {
        let mut uk = AbandonLedger::new(ComplianceRules::uk(0.05));
        let t = Timestamp::from_secs(3600);
        for _ in 0..97 {
            uk.record(t, AnsweredCall::Connected);
        }
        uk.record(t, AnsweredCall::Abandoned);
        for _ in 0..20 {
            uk.record(t, AnsweredCall::MachineVerdict);
        }
        // (1 + 20 * 0.05) / (97 + 1 + 1) = 2 / 99.
        assert!((uk.rate(t) - 2.0 / 99.0).abs() < 1e-12);
        assert!(!uk.over_cap(t));
        // A day and an hour later the window is empty.
        assert_eq!(uk.rate(t + Duration::from_secs(25 * 3600)), 0.0);

        let mut us = AbandonLedger::new(ComplianceRules::us());
        us.record(t, AnsweredCall::Abandoned);
        us.record(t, AnsweredCall::MachineVerdict);
        assert_eq!(us.rate(t), 1.0);
        assert!(us.over_cap(t));
    }

    proptest! {
        #[test]
        fn ledger_rate_is_a_fraction(calls in proptest::collection::vec((0i64..200_000_000, 0u8..3), 0..200)) {
            let mut ledger = AbandonLedger::new(ComplianceRules::uk(0.3));
            let mut sorted = calls.clone();
            sorted.sort();
            for (ms, kind) in sorted {
                let call = match kind { 0 => AnsweredCall::Connected, 1 => AnsweredCall::Abandoned, _ => AnsweredCall::MachineVerdict };
                ledger.record(Timestamp::from_millis(ms), call);
                let rate = ledger.rate(Timestamp::from_millis(ms));
                prop_assert!((0.0..=1.0).contains(&rate));
            }
        }
    }
}
