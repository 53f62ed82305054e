//! The engine's metrics, registered under the `media` prefix. Labels are sources, reasons and decisions only.
//!
//! Leg tasks count packets locally and add their counts here once a second, so the relay hot path never
//! touches a counter shared between cores.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SourceLabel {
    pub(crate) source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    pub(crate) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DecisionLabel {
    pub(crate) decision: &'static str,
    pub(crate) reason: &'static str,
}

/// Handles to every media metric; cheap to clone (clones share the values).
#[derive(Clone)]
pub struct MediaMetrics {
    pub(crate) legs_active: Gauge,
    pub(crate) legs_opened: Counter,
    pub(crate) legs_on_kept_sockets: Counter,
    pub(crate) ports_exhausted: Counter,
    pub(crate) packets_received: Counter,
    pub(crate) packets_relayed: Counter,
    pub(crate) packets_ignored: Counter,
    pub(crate) packets_sent_local: Counter,
    pub(crate) rtp_foreign_packets: Counter,
    pub(crate) rtcp_foreign_packets: Counter,
    pub(crate) unconfirmed_sends_dropped: Counter,
    pub(crate) srtp_rejected: Family<ReasonLabel, Counter>,
    pub(crate) dtmf_digits: Family<SourceLabel, Counter>,
    pub(crate) media_timeouts: Counter,
    pub(crate) amd_results: Family<DecisionLabel, Counter>,
    pub(crate) leg_mos: Histogram,
    pub(crate) leg_loss: Histogram,
    pub(crate) monitors_active: Gauge,
    pub(crate) frames_mixed: Counter,
}

impl Default for MediaMetrics {
    fn default() -> Self {
        Self {
            legs_active: Gauge::default(),
            legs_opened: Counter::default(),
            legs_on_kept_sockets: Counter::default(),
            ports_exhausted: Counter::default(),
            packets_received: Counter::default(),
            packets_relayed: Counter::default(),
            packets_ignored: Counter::default(),
            packets_sent_local: Counter::default(),
            rtp_foreign_packets: Counter::default(),
            rtcp_foreign_packets: Counter::default(),
            unconfirmed_sends_dropped: Counter::default(),
            srtp_rejected: Family::default(),
            dtmf_digits: Family::default(),
            media_timeouts: Counter::default(),
            amd_results: Family::default(),
            leg_mos: Histogram::new([1.0, 2.0, 2.5, 3.0, 3.5, 3.8, 4.0, 4.2, 4.4]),
            leg_loss: Histogram::new([0.0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2]),
            monitors_active: Gauge::default(),
            frames_mixed: Counter::default(),
        }
    }
}

impl MediaMetrics {
    /// Registers these handles with `telemetry` under `media_`.
    pub fn register(&self, telemetry: &telemetry::Telemetry) {
        let m = self.clone();
        telemetry.register("media", |r| {
            r.register("legs_active", "RTP legs open now", m.legs_active);
            r.register("legs_opened", "RTP legs opened", m.legs_opened);
            r.register(
                "legs_on_kept_sockets",
                "RTP legs opened on a port pair whose sockets were kept bound from an earlier leg",
                m.legs_on_kept_sockets,
            );
            r.register(
                "ports_exhausted",
                "Leg requests refused for lack of a free port pair",
                m.ports_exhausted,
            );
            r.register(
                "packets_received",
                "RTP packets accepted from latched peers",
                m.packets_received,
            );
            r.register(
                "packets_relayed",
                "RTP packets relayed across bridges",
                m.packets_relayed,
            );
            r.register(
                "packets_ignored",
                "Datagrams from an allowed source ignored: not RTP, or a payload type not negotiated",
                m.packets_ignored,
            );
            r.register(
                "packets_sent_local",
                "RTP packets of prompts, music and DTMF sent",
                m.packets_sent_local,
            );
            r.register(
                "rtp_foreign_packets",
                "RTP datagrams dropped because they came from neither the SDP's address, the signalling IP nor the latched peer",
                m.rtp_foreign_packets,
            );
            r.register(
                "rtcp_foreign_packets",
                "RTCP datagrams dropped because they came from a source the leg's rules do not allow",
                m.rtcp_foreign_packets,
            );
            r.register(
                "unconfirmed_sends_dropped",
                "Datagrams not sent because the leg's dialog was unconfirmed and its send budget spent",
                m.unconfirmed_sends_dropped,
            );
            r.register(
                "srtp_rejected",
                "SRTP/SRTCP datagrams dropped: reason unauthentic (tag did not verify, or malformed) or replayed",
                m.srtp_rejected,
            );
            r.register("dtmf_digits", "DTMF digits received, by source", m.dtmf_digits);
            r.register(
                "media_timeouts",
                "Legs that went silent past the media timeout",
                m.media_timeouts,
            );
            r.register(
                "amd_results",
                "Answering-machine analyses, by decision and reason",
                m.amd_results,
            );
            r.register(
                "leg_mos",
                "E-model MOS estimate of each closed leg that received audio",
                m.leg_mos,
            );
            r.register(
                "leg_loss",
                "Packet loss fraction of each closed leg that received audio",
                m.leg_loss,
            );
            r.register(
                "monitors_active",
                "Supervisors attached to bridged calls now (listen, whisper or barge)",
                m.monitors_active,
            );
            r.register(
                "frames_mixed",
                "20 ms frames mixed for a party of a monitored call and sent",
                m.frames_mixed,
            );
        });
    }
}

/// Per-leg counts, added to the shared metrics once a second and at close.
#[derive(Debug, Default)]
pub(crate) struct LocalCounts {
    pub(crate) received: u64,
    pub(crate) relayed: u64,
    pub(crate) ignored: u64,
    pub(crate) sent_local: u64,
    pub(crate) foreign_rtp: u64,
    pub(crate) foreign_rtcp: u64,
    pub(crate) srtp_unauthentic: u64,
    pub(crate) srtp_replayed: u64,
}

impl LocalCounts {
    pub(crate) fn flush(&mut self, metrics: &MediaMetrics) {
        metrics.packets_received.inc_by(self.received);
        metrics.packets_relayed.inc_by(self.relayed);
        metrics.packets_ignored.inc_by(self.ignored);
        metrics.packets_sent_local.inc_by(self.sent_local);
        metrics.rtp_foreign_packets.inc_by(self.foreign_rtp);
        metrics.rtcp_foreign_packets.inc_by(self.foreign_rtcp);
        for (reason, count) in [
            ("unauthentic", self.srtp_unauthentic),
            ("replayed", self.srtp_replayed),
        ] {
            if count > 0 {
                metrics
                    .srtp_rejected
                    .get_or_create(&ReasonLabel { reason })
                    .inc_by(count);
            }
        }
        *self = Self::default();
    }
}
