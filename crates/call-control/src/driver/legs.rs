//! The IO behind a session's [`LegRef`]s: placing SIP legs (an agent's phone, an outside number)
//! with a fresh engine leg's offer, opening browser softphone legs, negotiating answers, and
//! turning what those legs report into [`LegSignal`]s.

use crate::Inner;
use call_session::{LegRef, Refusal};
use domain::Pii;
use media::engine::{LegEvent as MediaEvent, RtpLeg};
use media::g711::G711;
use media::webrtc::{WebRtcEvent, WebRtcLeg};
use sip_gateway::{LegEvent, LegHandle, OriginateRequest};
use std::collections::BTreeMap;
use std::task::Poll;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::warn;

const SUPPORTED: [G711; 2] = [G711::Pcmu, G711::Pcma];

/// How long an agent's (or a supervisor's, or a consulted colleague's) phone may ring.
pub(crate) const PHONE_RING: Duration = Duration::from_secs(60);

/// One leg the session asked for.
pub(crate) struct LegIo {
    /// The SIP leg (phones, dialled numbers); None for browser legs.
    pub(crate) sip: Option<LegHandle>,
    /// The browser softphone; None once its media is gone (the engine leg stays for a re-attach).
    pub(crate) web: Option<WebRtcLeg>,
    /// The engine leg the party hears and speaks on.
    pub(crate) rtp: RtpLeg,
    /// Media events of a dialled customer's engine leg (it becomes the call's caller leg).
    pub(crate) media: Option<mpsc::Receiver<MediaEvent>>,
    /// The agent whose phone this leg rings (their REFER is their transfer).
    pub(crate) agent: Option<domain::AgentId>,
}

/// What a leg reported.
pub(crate) enum LegSignal {
    Sip(Option<LegEvent>),
    BrowserLost,
}

/// The negotiated media of an SDP body we received, if it offers G.711.
pub(crate) fn negotiate(sdp: &[u8]) -> Option<media::sdp::Negotiated> {
    std::str::from_utf8(sdp)
        .ok()
        .and_then(|t| media::sdp::parse(t).ok())
        .and_then(|s| media::sdp::negotiate(&s, &SUPPORTED).ok())
}

/// Answers the caller's offer with a fresh engine leg: the leg, its events, the law, our answer. The
/// answer follows RFC 3264 (one m= line per offered line) and takes SDES-SRTP when the phone offers it.
pub(crate) fn answer_offer(
    inner: &Inner,
    sip: &LegHandle,
    offer: &[u8],
) -> Option<(RtpLeg, mpsc::Receiver<MediaEvent>, G711, String)> {
    let sdp = media::sdp::parse(std::str::from_utf8(offer).ok()?).ok()?;
    let (rtp, events) = match inner.media.allocate_leg() {
        Ok(x) => x,
        Err(e) => {
            warn!(error = %e, "no RTP leg");
            return None;
        }
    };
    let answer = media::sdp::answer_offer(
        &sdp,
        &SUPPORTED,
        media::sdp::SrtpPolicy::WhenOffered,
        rtp.local_addr(),
        rand::random::<u32>() as u64,
        1,
    )
    .ok()?;
    let law = answer.negotiated.law;
    rtp.set_srtp(answer.srtp);
    crate::media_rules::apply(&rtp, sip, answer.negotiated);
    Some((rtp, events, law, answer.sdp))
}

/// What an agent's phone asked to transfer to (REFER): a SIP user is an agent, anything else a number.
pub(crate) fn refer_target(to: &str, user: bool) -> Option<call_session::TransferTarget> {
    if user {
        domain::AgentId::new(to)
            .ok()
            .map(call_session::TransferTarget::Agent)
    } else {
        call_session::DialNumber::try_from(to.to_string())
            .ok()
            .map(call_session::TransferTarget::Number)
    }
}

/// Answers a re-INVITE (hold, unhold, a new address) of `sip` on `rtp`, under the same source rules.
pub(crate) fn reanswer(rtp: &RtpLeg, sip: &LegHandle, sdp: &[u8]) -> Option<Vec<u8>> {
    let n = negotiate(sdp)?;
    let answer = media::sdp::answer(&n, rtp.local_addr(), rand::random::<u32>() as u64, 2);
    crate::media_rules::apply(rtp, sip, n);
    Some(answer.into_bytes())
}

/// Places a SIP leg to `target` (a registered agent's id or a SIP URI) showing `from`, with a fresh
/// engine leg's offer.
pub(crate) async fn place(
    inner: &Inner,
    target: String,
    from: String,
    ring: Duration,
) -> Option<(LegHandle, RtpLeg, mpsc::Receiver<MediaEvent>)> {
    let gateway = inner.gateway.get()?.clone();
    let (rtp, events) = match inner.media.allocate_leg() {
        Ok(x) => x,
        Err(e) => {
            warn!(error = %e, "no RTP leg for a placed leg");
            return None;
        }
    };
    let offer = media::sdp::offer(
        rtp.local_addr(),
        rand::random::<u32>() as u64,
        1,
        media::sdp::MediaDirection::SendRecv,
    );
    let request = OriginateRequest {
        target: Pii::new(target),
        from_user: Pii::new(from),
        sdp: offer.into_bytes(),
        ring_timeout: ring,
    };
    match gateway.originate(request).await {
        Ok(leg) => Some((leg, rtp, events)),
        Err(e) => {
            warn!(error = %e, "leg not placed");
            None
        }
    }
}

/// Dials an outside `number` through the outbound trunk, showing `shown_as`.
pub(crate) async fn dial_number(
    inner: &Inner,
    number: &str,
    shown_as: &str,
    ring: Duration,
) -> Option<(LegHandle, RtpLeg, mpsc::Receiver<MediaEvent>)> {
    let host = inner.outbound.as_ref()?.host.clone();
    place(inner, format!("sip:{number}@{host}"), shown_as.to_string(), ring).await
}

/// Opens a browser softphone leg for its SDP offer; returns it with our answer.
pub(crate) fn open_browser(inner: &Inner, sdp: Option<String>) -> Result<(WebRtcLeg, String), Refusal> {
    let Some(endpoint) = inner.webrtc.as_ref() else {
        return Err(Refusal::new(
            "media_unavailable",
            "the browser softphone is not enabled on this node",
        ));
    };
    let Some(sdp) = sdp else {
        return Err(Refusal::new("bad_sdp", "the browser brings its SDP offer"));
    };
    endpoint
        .accept_offer(&sdp)
        .map_err(|e| Refusal::new("bad_sdp", e.to_string()))
}

/// The next thing any leg reports; pending while none has anything.
pub(crate) async fn next_signal(legs: &mut BTreeMap<LegRef, LegIo>) -> (LegRef, LegSignal) {
    std::future::poll_fn(|cx| {
        for (leg, io) in legs.iter_mut() {
            if let Some(sip) = io.sip.as_mut()
                && let Poll::Ready(ev) = sip.poll_event(cx)
            {
                return Poll::Ready((*leg, LegSignal::Sip(ev)));
            }
            if let Some(web) = io.web.as_mut() {
                loop {
                    match web.events().poll_recv(cx) {
                        Poll::Ready(Some(WebRtcEvent::Connected | WebRtcEvent::Disconnected)) => {}
                        Poll::Ready(Some(WebRtcEvent::Closed { .. } | WebRtcEvent::MediaTimeout { .. }))
                        | Poll::Ready(None) => return Poll::Ready((*leg, LegSignal::BrowserLost)),
                        Poll::Pending => break,
                    }
                }
            }
        }
        Poll::Pending
    })
    .await
}
