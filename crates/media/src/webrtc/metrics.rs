//! The WebRTC endpoint's metrics, registered under the `media_webrtc` prefix. No labels: nothing per peer.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// Handles to every WebRTC metric; cheap to clone (clones share the values).
#[derive(Clone, Debug, Default)]
pub struct WebRtcMetrics {
    pub(crate) peers_active: Gauge,
    pub(crate) peers_opened: Counter,
    pub(crate) offers_rejected: Counter,
    pub(crate) handshakes_completed: Counter,
    pub(crate) handshakes_failed: Counter,
    pub(crate) packets_in: Counter,
    pub(crate) packets_out: Counter,
    pub(crate) datagrams_ignored: Counter,
    pub(crate) media_timeouts: Counter,
}

impl WebRtcMetrics {
    /// Registers these handles with `telemetry` under `media_webrtc_`.
    pub fn register(&self, telemetry: &telemetry::Telemetry) {
        let m = self.clone();
        telemetry.register("media_webrtc", |r| {
            r.register(
                "peers_active",
                "WebRTC peers (browser legs) open now",
                m.peers_active,
            );
            r.register("peers_opened", "Browser offers answered", m.peers_opened);
            r.register(
                "offers_rejected",
                "Browser offers refused: malformed, no audio, no G.711, or too many peers",
                m.offers_rejected,
            );
            r.register(
                "handshakes_completed",
                "Peers whose ICE and DTLS came up",
                m.handshakes_completed,
            );
            r.register(
                "handshakes_failed",
                "Peers that ended before ICE and DTLS came up (timeout or error)",
                m.handshakes_failed,
            );
            r.register(
                "packets_in",
                "Audio packets received from browsers (decrypted)",
                m.packets_in,
            );
            r.register("packets_out", "Audio packets sent to browsers", m.packets_out);
            r.register(
                "datagrams_ignored",
                "Datagrams on the WebRTC or relay sockets that belong to no peer",
                m.datagrams_ignored,
            );
            r.register(
                "media_timeouts",
                "Connected peers that went silent past the media timeout",
                m.media_timeouts,
            );
        });
    }
}
