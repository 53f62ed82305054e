//! Where SDP meets the media engine. The gateway asks a [`MediaAnchor`] to rewrite every offer and
//! answer crossing the bridge; until media is anchored, [`PassThrough`] leaves SDP unchanged so the
//! two endpoints exchange RTP directly.

/// Which leg of a bridged call an SDP came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The leg that called us.
    Caller,
    /// The leg we called.
    Callee,
}

/// Why media could not be set up; the call is refused with 488 or 503.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MediaError {
    #[error("no common codec")]
    NotAcceptable,
    #[error("no media ports left")]
    Exhausted,
    #[error("media error: {0}")]
    Other(String),
}

/// Rewrites SDP so media flows through us.
#[async_trait::async_trait]
pub trait MediaAnchor: Send + Sync {
    /// An offer from `from` on its way to the other leg.
    async fn offer(&self, call: &str, from: Side, sdp: &[u8]) -> Result<Vec<u8>, MediaError>;
    /// An answer from `from` on its way back to the offerer.
    async fn answer(&self, call: &str, from: Side, sdp: &[u8]) -> Result<Vec<u8>, MediaError>;
    /// The call ended: free its ports.
    async fn release(&self, call: &str);
    /// Where `side`'s SIP signalling comes from, once known: a phone behind NAT sends its media from
    /// that IP, so the leg facing it may latch onto any port of it (besides its SDP address).
    async fn signalling_source(&self, _call: &str, _side: Side, _source: std::net::SocketAddr) {}
    /// `side`'s dialog is confirmed (its ACK arrived, or we acknowledged its answer): the leg facing it
    /// may send without the unconfirmed budget from now on.
    async fn confirmed(&self, _call: &str, _side: Side) {}
}

/// Leaves SDP as it is: RTP goes end to end.
pub struct PassThrough;

#[async_trait::async_trait]
impl MediaAnchor for PassThrough {
    async fn offer(&self, _call: &str, _from: Side, sdp: &[u8]) -> Result<Vec<u8>, MediaError> {
        Ok(sdp.to_vec())
    }
    async fn answer(&self, _call: &str, _from: Side, sdp: &[u8]) -> Result<Vec<u8>, MediaError> {
        Ok(sdp.to_vec())
    }
    async fn release(&self, _call: &str) {}
}
