//! Answering a browser's SDP offer: one str0m `Rtc` per peer (ICE-lite, DTLS-SRTP, G.711 only), its answer, and
//! the audio stream and codec it agreed to.
//!
//! This runs on the caller's thread, before the peer is handed to the endpoint task; it does no IO. Anything in
//! the offer that str0m or we cannot use is an error, never a panic (property-tested below).

use super::WebRtcError;
use crate::g711::G711;
use std::net::SocketAddr;
use std::time::Instant;
use str0m::change::SdpOffer;
use str0m::config::DtlsCert;
use str0m::format::Codec;
use str0m::media::{MediaKind, Mid, Pt};
use str0m::net::Transmit;
use str0m::{Candidate, IceCreds, Output, Rtc, RtcConfig};

/// Largest offer we look at; a browser's audio offer is a few kilobytes.
pub(crate) const MAX_OFFER_LEN: usize = 64 * 1024;

/// A peer whose offer has been answered, not yet connected.
pub(crate) struct Answered {
    pub(crate) rtc: Rtc,
    pub(crate) answer: String,
    /// Our ICE username fragment: STUN from the browser names it first in USERNAME.
    pub(crate) ufrag: String,
    pub(crate) mid: Mid,
    /// Payload type and law we send to the browser (its first G.711 choice).
    pub(crate) pt: Pt,
    pub(crate) law: G711,
    /// Output str0m produced while answering (normally none for ICE-lite), to send once the task has the peer.
    pub(crate) pending: Vec<Transmit>,
    pub(crate) next_timeout: Instant,
}

/// The G.711 law of a str0m codec.
pub(crate) fn law_of(codec: Codec) -> Option<G711> {
    match codec {
        Codec::PCMU => Some(G711::Pcmu),
        Codec::PCMA => Some(G711::Pcma),
        _ => None,
    }
}

/// The `a=mid` of each audio m-line our answer accepted (port not 0), in order. Reads str0m's own output.
fn accepted_audio_mids(answer: &str) -> impl Iterator<Item = &str> {
    answer.split("\nm=").skip(1).filter_map(|section| {
        let mut words = section.split_whitespace();
        let accepted = words.next() == Some("audio") && words.next().is_some_and(|port| port != "0");
        if !accepted {
            return None;
        }
        section
            .lines()
            .find_map(|line| line.trim_end().strip_prefix("a=mid:"))
            .filter(|mid| !mid.is_empty())
    })
}

/// Builds a peer for `offer_sdp`: our host candidate is `candidate`, our DTLS certificate `cert`.
pub(crate) fn answer_offer(
    offer_sdp: &str,
    candidate: SocketAddr,
    cert: &DtlsCert,
    now: Instant,
) -> Result<Answered, WebRtcError> {
    if offer_sdp.len() > MAX_OFFER_LEN {
        return Err(WebRtcError::BadOffer("offer is too large".into()));
    }
    if offer_sdp.trim().is_empty() {
        return Err(WebRtcError::BadOffer("offer is empty".into()));
    }
    // str0m's parser errors quote the offending input (it may hold addresses): only say that it failed.
    let offer = SdpOffer::from_sdp_string(offer_sdp)
        .map_err(|_| WebRtcError::BadOffer("not a valid SDP session description".into()))?;
    let creds = IceCreds::new();
    let ufrag = creds.ufrag.clone();
    let mut rtc = RtcConfig::new()
        .set_ice_lite(true)
        .set_local_ice_credentials(creds)
        .set_dtls_cert(cert.clone())
        .clear_codecs()
        .enable_pcmu(true, false)
        .enable_pcma(true, false)
        .build(now);
    let host = Candidate::host(candidate, "udp")
        .map_err(|_| WebRtcError::InvalidConfig("the advertised address cannot be an ICE host candidate"))?;
    rtc.add_local_candidate(host);
    let answer = rtc
        .sdp_api()
        .accept_offer(offer)
        .map_err(|e| WebRtcError::BadOffer(e.to_string()))?;

    // Drain after the mutation (str0m's contract). Media events only come once SRTP is up.
    let mut pending = Vec::new();
    let next_timeout = loop {
        match rtc.poll_output() {
            Ok(Output::Timeout(at)) => break at,
            Ok(Output::Transmit(t)) => pending.push(t),
            Ok(Output::Event(_)) => {}
            Err(e) => return Err(WebRtcError::BadOffer(e.to_string())),
        }
    };
    let answer = answer.to_sdp_string();
    let mid = accepted_audio_mids(&answer)
        .map(Mid::from)
        .find(|mid| rtc.media(*mid).is_some_and(|m| m.kind() == MediaKind::Audio))
        .ok_or_else(|| {
            // An audio m-line we had to refuse (port 0) means it offered no codec we have.
            if answer.contains("\nm=audio ") {
                WebRtcError::NoCommonCodec
            } else {
                WebRtcError::NoAudio
            }
        })?;
    // The browser's preference order among what both sides support.
    let remote_pts = rtc
        .media(mid)
        .map(|m| m.remote_pts().to_vec())
        .unwrap_or_default();
    let (pt, law) = {
        let writer = rtc.writer(mid).ok_or(WebRtcError::NoAudio)?;
        let supported: Vec<(Pt, G711)> = writer
            .payload_params()
            .filter_map(|p| law_of(p.spec().codec).map(|law| (p.pt(), law)))
            .collect();
        remote_pts
            .iter()
            .find_map(|pt| supported.iter().find(|(s, _)| s == pt).copied())
            .or_else(|| supported.first().copied())
            .ok_or(WebRtcError::NoCommonCodec)?
    };
    Ok(Answered {
        rtc,
        answer,
        ufrag,
        mid,
        pt,
        law,
        pending,
        next_timeout,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the test's answer
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;
    use str0m::change::SdpApi;

    fn cert() -> &'static DtlsCert {
        static CERT: OnceLock<DtlsCert> = OnceLock::new();
        CERT.get_or_init(|| super::super::generate_certificate().unwrap())
    }

    fn candidate() -> SocketAddr {
        "127.0.0.1:40000".parse().unwrap()
    }

    /// An offer as a full-ICE client (the browser's role) would make it.
    fn client_offer(configure: impl FnOnce(RtcConfig) -> RtcConfig, media: &[MediaKind]) -> String {
        let mut rtc = configure(RtcConfig::new()).build(Instant::now());
        rtc.add_local_candidate(Candidate::host("127.0.0.1:5000".parse().unwrap(), "udp").unwrap());
        let mut change: SdpApi = rtc.sdp_api();
        for kind in media {
            change.add_media(*kind, str0m::media::Direction::SendRecv, None, None, None);
        }
        let (offer, _pending) = change.apply().unwrap();
        offer.to_sdp_string()
    }

    #[test]
    fn answers_a_pcmu_offer_as_ice_lite_with_our_candidate() {
        let offer = client_offer(
            |c| c.clear_codecs().enable_opus(true, false).enable_pcmu(true, false),
            &[MediaKind::Audio],
        );
        let answered = answer_offer(&offer, candidate(), cert(), Instant::now()).unwrap();
        assert_eq!(answered.law, G711::Pcmu);
        assert_eq!(*answered.pt, 0);
        let answer = &answered.answer;
        assert!(answer.contains("a=ice-lite"), "{answer}");
        assert!(answer.contains("127.0.0.1 40000 typ host"), "{answer}");
        assert!(
            answer.contains(&format!("a=ice-ufrag:{}", answered.ufrag)),
            "{answer}"
        );
        assert!(answer.contains("PCMU/8000"), "{answer}");
        assert!(!answer.contains("opus"), "{answer}");
    }

    #[test]
    fn prefers_the_offerers_first_law() {
        let offer = client_offer(
            |c| c.clear_codecs().enable_pcma(true, false).enable_pcmu(true, false),
            &[MediaKind::Audio],
        );
        let answered = answer_offer(&offer, candidate(), cert(), Instant::now()).unwrap();
        assert_eq!(answered.law, G711::Pcma);
        assert_eq!(*answered.pt, 8);
    }

    #[test]
    fn audio_mids_of_an_answer() {
        let answer = "v=0\r\ns=-\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:v\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\nm=audio 0 UDP/TLS/RTP/SAVPF 0\r\na=mid:x\r\n";
        assert_eq!(accepted_audio_mids(answer).collect::<Vec<_>>(), ["0"]);
        assert_eq!(accepted_audio_mids("").count(), 0);
    }

    #[test]
    fn bad_offers_are_errors() {
        let now = Instant::now();
        assert!(matches!(
            answer_offer("", candidate(), cert(), now),
            Err(WebRtcError::BadOffer(_))
        ));
        assert!(matches!(
            answer_offer("hello, I am not SDP", candidate(), cert(), now),
            Err(WebRtcError::BadOffer(_))
        ));
        let opus_only = client_offer(|c| c.clear_codecs().enable_opus(true, false), &[MediaKind::Audio]);
        assert!(matches!(
            answer_offer(&opus_only, candidate(), cert(), now),
            Err(WebRtcError::NoCommonCodec)
        ));
        let video_only = client_offer(|c| c, &[MediaKind::Video]);
        assert!(matches!(
            answer_offer(&video_only, candidate(), cert(), now),
            Err(WebRtcError::NoAudio)
        ));
        let good = client_offer(|c| c, &[MediaKind::Audio]);
        let no_fingerprint: String = good
            .lines()
            .filter(|l| !l.starts_with("a=fingerprint"))
            .map(|l| format!("{l}\r\n"))
            .collect();
        assert!(matches!(
            answer_offer(&no_fingerprint, candidate(), cert(), now),
            Err(WebRtcError::BadOffer(_))
        ));
        let huge = "v=0\r\n".repeat(MAX_OFFER_LEN);
        assert!(matches!(
            answer_offer(&huge, candidate(), cert(), now),
            Err(WebRtcError::BadOffer(_))
        ));
    }

    #[test]
    fn error_text_does_not_quote_the_offer() {
        let err = answer_offer(
            "v=0\r\nc=IN IP4 198.51.100.7\r\nzz",
            candidate(),
            cert(),
            Instant::now(),
        )
        .err()
        .unwrap();
        assert!(!err.to_string().contains("198.51.100.7"), "{err}");
    }

    fn real_offer() -> &'static str {
        static OFFER: OnceLock<String> = OnceLock::new();
        OFFER.get_or_init(|| client_offer(|c| c, &[MediaKind::Audio]))
    }

    fn mutate(offer: &str, cut: usize, garbage: &str) -> String {
        let lines: Vec<&str> = offer.lines().collect();
        let cut = cut % (lines.len() + 1);
        let mut out: Vec<String> = lines.iter().map(|l| (*l).to_string()).collect();
        out.insert(cut, garbage.to_string());
        out.join("\r\n")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_never_panics(text in "(([vosctamb]=[ -~]{0,60})\r\n){0,16}") {
            let _ = answer_offer(&text, candidate(), cert(), Instant::now());
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = answer_offer(&String::from_utf8_lossy(&bytes), candidate(), cert(), Instant::now());
        }

        #[test]
        fn a_real_offer_with_a_garbage_line_never_panics(cut in 0usize..64, garbage in "[a-z]=[ -~]{0,80}") {
            let _ = answer_offer(&mutate(real_offer(), cut, &garbage), candidate(), cert(), Instant::now());
        }

        #[test]
        fn a_real_offer_with_a_line_dropped_never_panics(drop_line in 0usize..64) {
            let offer = real_offer();
            let text: Vec<&str> = offer.lines().enumerate().filter(|(i, _)| *i != drop_line).map(|(_, l)| l).collect();
            let _ = answer_offer(&text.join("\r\n"), candidate(), cert(), Instant::now());
        }
    }
}
