//! Call quality: RFC 3550 reception statistics (loss, interarrival jitter) per leg, and an ITU-T G.107 E-model
//! estimate of the R-factor and MOS for G.711.
//!
//! Pure: arrival times come in as arguments (microseconds on any monotonic clock).

use crate::rtcp::ReportBlock;
use domain::QualityReport;

/// A sequence jump this large (in packets) is a restart of the source, not loss (RFC 3550 A.1).
const MAX_DROPOUT: u16 = 3000;
/// A sequence number this far behind is a late or duplicate packet.
const MAX_MISORDER: u16 = 100;

/// Receive-side statistics of one RTP source.
#[derive(Debug, Clone, Default)]
pub struct ReceptionStats {
    started: bool,
    base_sequence: u32,
    max_sequence: u16,
    cycles: u32,
    bad_sequence: Option<u16>,
    received: u64,
    expected_prior: u64,
    received_prior: u64,
    last_transit: Option<i64>,
    /// Jitter in timestamp units, scaled by 16 as in RFC 3550 A.8 to keep integer precision.
    jitter_q4: i64,
    /// What earlier sources (before an SSRC change or a restart) delivered, for the call's totals.
    earlier_expected: u64,
    earlier_received: u64,
}

impl ReceptionStats {
    /// Statistics before the first packet.
    pub fn new() -> Self {
        Self::default()
    }

    fn restart(&mut self, sequence: u16) {
        self.earlier_expected += self.expected();
        self.earlier_received += self.received;
        self.started = true;
        self.base_sequence = u32::from(sequence);
        self.max_sequence = sequence;
        self.cycles = 0;
        self.bad_sequence = None;
        self.received = 0;
        self.expected_prior = 0;
        self.received_prior = 0;
    }

    /// Records one packet: its sequence number, RTP timestamp, and arrival time in microseconds.
    /// Returns false for a packet treated as late, duplicate or from a restarted source being confirmed.
    pub fn on_packet(&mut self, sequence: u16, rtp_timestamp: u32, arrival_us: i64) -> bool {
        if !self.started {
            self.restart(sequence);
        } else {
            let delta = sequence.wrapping_sub(self.max_sequence);
            if delta == 0 {
                return false; // duplicate
            } else if delta < MAX_DROPOUT {
                if sequence < self.max_sequence {
                    self.cycles = self.cycles.wrapping_add(1 << 16);
                }
                self.max_sequence = sequence;
            } else if delta <= u16::MAX - MAX_MISORDER {
                // A big jump: accept only if the next packet follows it (the source restarted).
                if self.bad_sequence == Some(sequence) {
                    self.restart(sequence);
                } else {
                    self.bad_sequence = Some(sequence.wrapping_add(1));
                    return false;
                }
            }
            // else: late packet within the misorder window, counted but does not move max.
        }
        self.received += 1;
        // Interarrival jitter (RFC 3550 6.4.1, A.8), with arrival converted to 8 kHz timestamp units.
        let arrival_units = arrival_us.saturating_mul(8) / 1000;
        let transit = arrival_units - i64::from(rtp_timestamp);
        if let Some(last) = self.last_transit {
            // The RTP timestamp wraps at 2^32: reduce the difference into that range.
            let d = (transit - last) as i32 as i64;
            self.jitter_q4 += d.abs() - ((self.jitter_q4 + 8) >> 4);
        }
        self.last_transit = Some(transit);
        true
    }

    /// Starts counting a new source (its SSRC changed, e.g. after a re-INVITE); the call totals keep what the
    /// earlier sources delivered, the per-source counters (for RTCP report blocks) start afresh.
    pub fn start_new_source(&mut self) {
        *self = Self {
            earlier_expected: self.earlier_expected + self.expected(),
            earlier_received: self.earlier_received + self.received,
            ..Self::default()
        };
    }

    /// Packets expected over the whole call, every source included.
    pub fn call_expected(&self) -> u64 {
        self.earlier_expected + self.expected()
    }

    /// Packets received over the whole call, every source included.
    pub fn call_received(&self) -> u64 {
        self.earlier_received + self.received
    }

    /// Share of the call's expected packets that were lost, 0.0-1.0.
    pub fn call_loss_fraction(&self) -> f64 {
        let expected = self.call_expected();
        let lost = expected.saturating_sub(self.call_received());
        if expected == 0 {
            0.0
        } else {
            (lost as f64 / expected as f64).min(1.0)
        }
    }

    /// Packets received (duplicates excluded).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Highest sequence number seen, extended with the wrap count.
    pub fn extended_max_sequence(&self) -> u32 {
        self.cycles.wrapping_add(u32::from(self.max_sequence))
    }

    /// Packets expected from the sequence numbers.
    pub fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        (u64::from(self.cycles) + u64::from(self.max_sequence) + 1)
            .saturating_sub(u64::from(self.base_sequence))
    }

    /// Packets lost (negative with duplicates from a misbehaving source).
    pub fn lost(&self) -> i64 {
        self.expected() as i64 - self.received as i64
    }

    /// Share of expected packets lost, 0.0-1.0.
    pub fn loss_fraction(&self) -> f64 {
        let expected = self.expected();
        if expected == 0 {
            0.0
        } else {
            (self.lost().max(0) as f64 / expected as f64).min(1.0)
        }
    }

    /// Interarrival jitter in timestamp units.
    pub fn jitter_units(&self) -> u32 {
        u32::try_from(self.jitter_q4 >> 4).unwrap_or(0)
    }

    /// Interarrival jitter in milliseconds (8 kHz clock).
    pub fn jitter_ms(&self) -> f64 {
        self.jitter_q4 as f64 / 16.0 / 8.0
    }

    /// A report block for our next RTCP report about this source; updates the "since last report" counters.
    pub fn report_block(&mut self, ssrc: u32, last_sr: u32, delay_since_last_sr: u32) -> ReportBlock {
        let expected = self.expected();
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: self.lost().clamp(-(1 << 23), (1 << 23) - 1) as i32,
            extended_highest_sequence: self.extended_max_sequence(),
            jitter: self.jitter_units(),
            last_sr,
            delay_since_last_sr,
        }
    }
}

/// E-model R-factor for G.711 with packet-loss concealment (ITU-T G.107, simplified: default values for every
/// impairment except delay and loss). `one_way_delay_ms` is mouth-to-ear.
pub fn r_factor(loss_fraction: f64, one_way_delay_ms: f64) -> f64 {
    const R0_MINUS_IS: f64 = 93.2;
    // G.711 equipment impairment and packet-loss robustness with PLC (G.113 Appendix I).
    const IE: f64 = 0.0;
    const BPL: f64 = 25.1;
    let d = one_way_delay_ms.max(0.0);
    let id = 0.024 * d + if d > 177.3 { 0.11 * (d - 177.3) } else { 0.0 };
    let ppl = (loss_fraction * 100.0).clamp(0.0, 100.0);
    let ie_eff = IE + (95.0 - IE) * ppl / (ppl + BPL);
    R0_MINUS_IS - id - ie_eff
}

/// Mean opinion score (1.0-4.5) from an R-factor (G.107 Annex B).
pub fn mos_from_r(r: f64) -> f64 {
    if r <= 0.0 {
        1.0
    } else if r >= 100.0 {
        4.5
    } else {
        (1.0 + 0.035 * r + 7.0e-6 * r * (r - 60.0) * (100.0 - r)).clamp(1.0, 4.5)
    }
}

/// Quality of what one leg received.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CallQuality {
    pub packets_received: u64,
    pub packets_expected: u64,
    pub packets_lost: i64,
    pub loss_fraction: f64,
    pub jitter_ms: f64,
    /// Round-trip time from RTCP, when the peer reported one.
    pub round_trip_ms: Option<f64>,
    pub r_factor: f64,
    pub mos: f64,
}

impl CallQuality {
    /// Summarises the call's reception (all sources; jitter of the current one). Mouth-to-ear delay is estimated as half the round trip (or 20 ms if unknown) plus
    /// one 20 ms packet and a jitter buffer of twice the jitter.
    pub fn from_stats(stats: &ReceptionStats, round_trip_ms: Option<f64>) -> Self {
        let jitter_ms = stats.jitter_ms();
        let delay = round_trip_ms.map_or(20.0, |rtt| rtt / 2.0) + 20.0 + 2.0 * jitter_ms;
        let loss_fraction = stats.call_loss_fraction();
        let r = r_factor(loss_fraction, delay);
        Self {
            packets_received: stats.call_received(),
            packets_expected: stats.call_expected(),
            packets_lost: stats.call_expected() as i64 - stats.call_received() as i64,
            loss_fraction,
            jitter_ms,
            round_trip_ms,
            r_factor: r,
            mos: mos_from_r(r),
        }
    }

    /// The summary the call's end event carries to the CRM.
    pub fn to_report(&self) -> QualityReport {
        QualityReport {
            loss: self.loss_fraction,
            jitter_ms: self.jitter_ms,
            mos: self.mos,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn perfect_stream_has_no_loss_or_jitter() {
        let mut stats = ReceptionStats::new();
        for i in 0..100u32 {
            stats.on_packet(
                65500u16.wrapping_add(i as u16),
                1000 + i * 160,
                i64::from(i) * 20_000,
            );
        }
        assert_eq!((stats.expected(), stats.received(), stats.lost()), (100, 100, 0));
        assert_eq!(stats.extended_max_sequence(), 65536 + 63);
        assert_eq!(stats.jitter_units(), 0);
        let q = CallQuality::from_stats(&stats, None);
        assert!(q.mos > 4.3 && q.r_factor > 90.0, "{q:?}");
    }

    #[test]
    fn loss_is_counted_and_reported() {
        let mut stats = ReceptionStats::new();
        for i in (0..100u16).filter(|i| i % 10 != 3) {
            stats.on_packet(i, u32::from(i) * 160, i64::from(i) * 20_000);
        }
        assert_eq!((stats.expected(), stats.lost()), (100, 10));
        assert!((stats.loss_fraction() - 0.1).abs() < 1e-9);
        let block = stats.report_block(9, 0, 0);
        assert_eq!(
            (
                block.cumulative_lost,
                block.fraction_lost,
                block.extended_highest_sequence
            ),
            (10, 25, 99)
        );
        // Nothing new since the last report: fraction 0, cumulative unchanged.
        let again = stats.report_block(9, 0, 0);
        assert_eq!((again.fraction_lost, again.cumulative_lost), (0, 10));
        let q = CallQuality::from_stats(&stats, Some(100.0));
        assert!(q.mos < 3.6 && q.mos > 2.5, "{q:?}");
        assert_eq!(q.to_report().loss, q.loss_fraction);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let mut stats = ReceptionStats::new();
        // Arrivals alternate 10 ms early / late around a 20 ms grid: |D| = 20 ms = 160 units each step.
        for i in 0..400i64 {
            let offset = if i % 2 == 0 { 0 } else { 10_000 };
            stats.on_packet(i as u16, (i * 160) as u32, i * 20_000 + offset);
        }
        // J converges to 80 units mean |D| = 80 (|D| alternates +80, -80 units).
        assert!(
            (stats.jitter_units() as i64 - 80).abs() <= 1,
            "{}",
            stats.jitter_units()
        );
        assert!((stats.jitter_ms() - 10.0).abs() < 0.2);
    }

    #[test]
    fn duplicates_late_packets_and_restarts() {
        let mut stats = ReceptionStats::new();
        assert!(stats.on_packet(10, 0, 0));
        assert!(!stats.on_packet(10, 0, 0));
        assert!(stats.on_packet(12, 320, 40_000));
        assert!(stats.on_packet(11, 160, 41_000)); // late but within window
        assert_eq!((stats.expected(), stats.received()), (3, 3));
        // The source restarts at 40000: first packet held back, second confirms.
        assert!(!stats.on_packet(40_000, 0, 60_000));
        assert!(stats.on_packet(40_001, 160, 80_000));
        assert_eq!((stats.expected(), stats.received()), (1, 1));
    }

    #[test]
    fn call_totals_survive_source_changes() {
        let mut stats = ReceptionStats::new();
        for i in (0..50u16).filter(|i| *i != 20) {
            stats.on_packet(i, u32::from(i) * 160, i64::from(i) * 20_000);
        }
        stats.start_new_source();
        for i in (9000..9050u16).filter(|i| *i != 9010 && *i != 9011) {
            stats.on_packet(i, 0, 0);
        }
        // The new source's report block counts only its own two losses; the call lost three of 100.
        assert_eq!((stats.expected(), stats.lost()), (50, 2));
        assert_eq!((stats.call_expected(), stats.call_received()), (100, 97));
        let q = CallQuality::from_stats(&stats, None);
        assert_eq!((q.packets_expected, q.packets_lost), (100, 3));
        assert!((q.loss_fraction - 0.03).abs() < 1e-9);
    }

    #[test]
    fn e_model_reference_points() {
        assert!((r_factor(0.0, 0.0) - 93.2).abs() < 1e-9);
        assert!((mos_from_r(93.2) - 4.41).abs() < 0.01);
        assert!(r_factor(0.0, 300.0) < r_factor(0.0, 150.0));
        assert!(r_factor(0.05, 50.0) < r_factor(0.01, 50.0));
        assert_eq!(mos_from_r(-5.0), 1.0);
        assert_eq!(mos_from_r(120.0), 4.5);
    }

    proptest! {
        #[test]
        fn never_panics_and_stays_in_range(
            packets in proptest::collection::vec((any::<u16>(), any::<u32>(), any::<i64>()), 0..200),
            loss in 0.0f64..1.0, delay in 0.0f64..2000.0,
        ) {
            let mut stats = ReceptionStats::new();
            for (seq, ts, at) in packets {
                stats.on_packet(seq, ts, at / 1000);
            }
            let q = CallQuality::from_stats(&stats, None);
            prop_assert!((0.0..=1.0).contains(&q.loss_fraction));
            prop_assert!((1.0..=4.5).contains(&q.mos));
            let m = mos_from_r(r_factor(loss, delay));
            prop_assert!((1.0..=4.5).contains(&m));
        }
    }
}
