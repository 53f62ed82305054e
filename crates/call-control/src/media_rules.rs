//! Where a SIP leg's signalling meets its RTP leg's source rules (issue: RTP hijack and reflection).
//!
//! Every offer/answer of a SIP leg is applied to its RTP leg through [`apply`]: media is accepted only from
//! the address the SDP names or, for a phone behind NAT, from the IP its SIP signalling comes from
//! ([`LatchPolicy::for_signalling_source`]); the first valid packet from such a source latches the leg and
//! nobody can take it over until an offer names another address. The RTP leg sends within its unconfirmed
//! budget until the SIP dialog is confirmed (the ACK of our 2xx); [`apply`] confirms it then. A dialog never
//! confirmed is hung up by the gateway after Timer H, and a voicemail of pure silence is not kept
//! ([`drop_silent`]).

use media::engine::{LatchPolicy, RtpLeg};
use media::sdp::Negotiated;
use sip_gateway::LegHandle;

/// The source rules of `sip`'s media: the SDP's address, or any port of the signalling source's IP.
pub(crate) fn policy(sip: &LegHandle) -> LatchPolicy {
    LatchPolicy::for_signalling_source(sip.signalling_source())
}

/// Applies one offer/answer of `sip` to `rtp` with the source rules of [`policy`], and confirms `rtp`
/// once `sip`'s dialog is confirmed (now, if it already is). Call it for the first offer and every re-offer.
pub(crate) fn apply(rtp: &RtpLeg, sip: &LegHandle, negotiated: Negotiated) {
    rtp.set_remote_with_policy(negotiated, policy(sip));
    let confirmer = rtp.confirmer();
    sip.on_confirmed(move || confirmer.confirm());
}

/// A voicemail that holds nothing but silence is not kept: its file is deleted and no message is logged
/// (a caller who never spoke, or the silence an unacknowledged, spoofed INVITE would otherwise leave on disk).
pub(crate) fn drop_silent(path: &std::path::Path) {
    tracing::info!("voicemail held only silence: not kept");
    if let Err(e) = std::fs::remove_file(path) {
        tracing::warn!(error = %e, "silent voicemail not deleted");
    }
}
