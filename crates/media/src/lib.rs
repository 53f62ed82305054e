//! RTP media engine: port pool, G.711, RFC 4733 and in-band DTMF, prompts, bridge, recorder, answering-machine analysis,
//! and the WebRTC endpoint for browser agents.
//!
//! Pure parts (packet formats, codecs, detectors, analysers, statistics) live in their own modules and never do
//! IO or read a clock: time comes in as an argument. The async [`engine`] and the [`webrtc`] endpoint own every RTP
//! socket and drive them.
//!
//! | module | what |
//! |---|---|
//! | [`rtp`], [`rtcp`] | RFC 3550 packets: parse (never panics) and serialise |
//! | [`g711`] | PCMU/PCMA tables, law-to-law transcoding |
//! | [`dtmf`] | RFC 4733 receive/send, in-band Goertzel detector |
//! | [`wav`], [`prompt`] | prompt loading with errors naming the file, cache, 20 ms frame player |
//! | [`amd`] | answering-machine analyser (HUMAN / MACHINE / NOTSURE with a reason) |
//! | [`quality`] | RFC 3550 loss and jitter, E-model R-factor and MOS |
//! | [`sdp`] | audio offer parsing, negotiation, answer/offer writing |
//! | [`srtp`], [`sdes`] | SRTP/SRTCP (RFC 3711, AES-CM + HMAC-SHA1) and its SDES keys in `a=crypto` (RFC 4568) |
//! | [`latch`] | who may send media to a leg (SDP address, NAT signalling IP, one latch per offer/answer) and the send budget of an unconfirmed dialog |
//! | [`stream`] | outgoing SSRC/sequence/timestamp continuity across feed changes |
//! | [`recorder`] | stereo recording timeline and WAV writer |
//! | [`mixer`] | monitored calls: who hears whom (listen, whisper, barge, hold, mute), jitter queues, saturating mix |
//! | [`engine`] | [`engine::MediaEngine`], [`engine::RtpLeg`], [`engine::Bridge`], metrics |
//! | [`webrtc`] | the browser agent's leg: [`webrtc::WebRtcEndpoint`] (str0m, ICE-lite, DTLS-SRTP), linked to an engine leg |
//!
//! A SIP leg's life with the engine:
//! ```no_run
//! # async fn example(offer_text: &str) -> Result<(), Box<dyn std::error::Error>> {
//! use media::engine::{MediaConfig, MediaEngine};
//! use media::g711::G711;
//! let engine = MediaEngine::new(MediaConfig::default())?;
//! let (leg, mut events) = engine.allocate_leg()?; // PortsExhausted: answer 503
//! let offer = media::sdp::parse(offer_text)?;
//! let negotiated = media::sdp::negotiate(&offer, &[G711::Pcma, G711::Pcmu])?;
//! leg.set_remote(negotiated);
//! let answer_sdp = media::sdp::answer(&negotiated, leg.local_addr(), 1, 1);
//! # let _ = answer_sdp;
//! while let Some(event) = events.recv().await {
//!     // LegEvent::Dtmf { digit: Pii<DtmfDigit>, .. }, MediaTimeout, PlaybackFinished, ...
//! #   let _ = event;
//! }
//! # Ok(())
//! # }
//! ```

pub mod amd;
pub mod dtmf;
pub mod engine;
pub mod g711;
pub mod latch;
pub mod mixer;
pub mod prompt;
pub mod quality;
pub mod recorder;
pub mod rtcp;
pub mod rtp;
pub mod sdes;
pub mod sdp;
pub mod srtp;
pub mod stream;
pub mod wav;
pub mod webrtc;
