//! The audio part of SDP (RFC 4566) and offer/answer (RFC 3264) for G.711 legs: parse a peer's offer, pick a
//! common codec and `telephone-event`, and write our answer (or offer) with our address and RTP port.
//!
//! Only what a G.711 leg needs is modelled; unknown lines are ignored, malformed ones named by line number.
//! Every `m=` line is remembered ([`MediaLine`]) so that an answer has one line per offered line, in order,
//! with the ones we do not use rejected with port 0 (RFC 3264 §6); the first *usable* audio line is the one
//! answered. [`answer_offer`] also answers SDES-SRTP (`RTP/SAVP` with `a=crypto`, RFC 4568).

use crate::g711::G711;
use crate::sdes::{CryptoAttribute, answer_crypto, crypto_attribute_format, crypto_attribute_parse};
use crate::srtp::SrtpKeys;
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use thiserror::Error;

/// Why an SDP body cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SdpError {
    #[error("SDP line {line}: {reason}")]
    BadLine { line: usize, reason: &'static str },
    #[error("SDP has no usable audio stream (m=audio with RTP/AVP)")]
    NoAudio,
    #[error("no common codec: the offer has neither PCMU nor PCMA")]
    NoCommonCodec,
    #[error("SDP has no connection address for the audio stream")]
    NoConnection,
}

/// The direction attribute of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MediaDirection {
    #[default]
    SendRecv,
    SendOnly,
    RecvOnly,
    Inactive,
}

impl MediaDirection {
    /// The attribute name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SendRecv => "sendrecv",
            Self::SendOnly => "sendonly",
            Self::RecvOnly => "recvonly",
            Self::Inactive => "inactive",
        }
    }
    fn parse(attribute: &str) -> Option<Self> {
        match attribute {
            "sendrecv" => Some(Self::SendRecv),
            "sendonly" => Some(Self::SendOnly),
            "recvonly" => Some(Self::RecvOnly),
            "inactive" => Some(Self::Inactive),
            _ => None,
        }
    }
    /// The direction an answer takes to an offer in this direction (RFC 3264 6.1).
    pub fn answer(self) -> Self {
        match self {
            Self::SendRecv => Self::SendRecv,
            Self::SendOnly => Self::RecvOnly,
            Self::RecvOnly => Self::SendOnly,
            Self::Inactive => Self::Inactive,
        }
    }
    /// Whether the side holding this direction sends media.
    pub fn sends(self) -> bool {
        matches!(self, Self::SendRecv | Self::SendOnly)
    }
    /// Whether the side holding this direction receives media.
    pub fn receives(self) -> bool {
        matches!(self, Self::SendRecv | Self::RecvOnly)
    }
}

/// One `a=rtpmap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpMap {
    pub payload_type: u8,
    pub encoding: String,
    pub clock_rate: u32,
}

/// The first audio stream of a session description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioStream {
    /// Connection address (media-level, else session-level).
    pub address: Option<IpAddr>,
    pub port: u16,
    /// Payload types in the offerer's order of preference.
    pub payload_types: Vec<u8>,
    pub rtpmaps: Vec<RtpMap>,
    pub ptime_ms: Option<u32>,
    pub direction: MediaDirection,
    /// Position of its `m=` line among all the description's media lines (0-based).
    pub index: usize,
    /// `RTP/SAVP`: the offerer requires SRTP (keys in `crypto`).
    pub secure: bool,
    /// `a=crypto` attributes that parsed (on `RTP/AVP` too: best-effort SRTP).
    pub crypto: Vec<CryptoAttribute>,
}

impl AudioStream {
    /// The G.711 law a payload type stands for here (static numbers or an rtpmap).
    pub fn law_of(&self, pt: u8) -> Option<G711> {
        match self.rtpmaps.iter().find(|m| m.payload_type == pt) {
            Some(map) if map.clock_rate == 8000 => match map.encoding.to_ascii_uppercase().as_str() {
                "PCMU" => Some(G711::Pcmu),
                "PCMA" => Some(G711::Pcma),
                _ => None,
            },
            Some(_) => None,
            None => G711::from_payload_type(pt),
        }
    }

    /// The payload type of `telephone-event/8000`, if offered.
    pub fn telephone_event(&self) -> Option<u8> {
        self.payload_types.iter().copied().find(|pt| {
            self.rtpmaps.iter().any(|m| {
                m.payload_type == *pt
                    && m.encoding.eq_ignore_ascii_case("telephone-event")
                    && m.clock_rate == 8000
            })
        })
    }

    /// Where to send RTP; `None` when the peer holds the call with a null address or gave port 0.
    pub fn remote(&self) -> Option<SocketAddr> {
        let address = self.address?;
        if address.is_unspecified() || self.port == 0 {
            return None;
        }
        Some(SocketAddr::new(address, self.port))
    }
}

/// One `m=` line as offered: enough to reject it in an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLine {
    /// `audio`, `video`, `application`, ...
    pub kind: String,
    pub port: u16,
    /// `RTP/AVP`, `RTP/SAVP`, `UDP/TLS/RTP/SAVPF`, ...
    pub proto: String,
    pub formats: Vec<String>,
}

/// A parsed session description: every media line, and the audio streams we could use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDescription {
    /// The first active plain `RTP/AVP` audio stream (else the first `RTP/SAVP` one).
    pub audio: AudioStream,
    /// Every active audio stream over `RTP/AVP` or `RTP/SAVP`, in the order offered.
    pub audio_streams: Vec<AudioStream>,
    /// Every `m=` line, in order.
    pub media: Vec<MediaLine>,
}

fn parse_address(value: &str, line: usize) -> Result<IpAddr, SdpError> {
    // c=IN IP4 192.0.2.1[/ttl]
    let mut parts = value.split_whitespace();
    let (Some("IN"), Some(kind), Some(addr)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(SdpError::BadLine {
            line,
            reason: "c= must be 'IN IP4|IP6 address'",
        });
    };
    let addr = addr.split('/').next().unwrap_or(addr);
    let ip: IpAddr = addr.parse().map_err(|_| SdpError::BadLine {
        line,
        reason: "connection address is not an IP address",
    })?;
    match (kind, ip) {
        ("IP4", IpAddr::V4(_)) | ("IP6", IpAddr::V6(_)) => Ok(ip),
        _ => Err(SdpError::BadLine {
            line,
            reason: "address type does not match the address",
        }),
    }
}

/// Parses an SDP body: every media line, and each active `RTP/AVP` or `RTP/SAVP` audio stream.
pub fn parse(text: &str) -> Result<SessionDescription, SdpError> {
    let mut session_address = None;
    let mut session_direction = None;
    let mut media: Vec<MediaLine> = Vec::new();
    let mut streams: Vec<(AudioStream, Option<MediaDirection>)> = Vec::new();
    // Whether the current m= section is an audio stream we keep (the last of `streams`).
    let mut in_kept_audio = false;
    let mut in_media = false;

    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let raw = raw.trim_end_matches('\r');
        if raw.is_empty() {
            continue;
        }
        let Some((kind, value)) = raw.split_once('=') else {
            return Err(SdpError::BadLine {
                line,
                reason: "not of the form x=value",
            });
        };
        match kind {
            "c" => {
                let address = parse_address(value, line)?;
                if !in_media {
                    session_address = Some(address);
                } else if in_kept_audio && let Some((a, _)) = streams.last_mut() {
                    a.address = Some(address);
                }
            }
            "m" => {
                in_media = true;
                in_kept_audio = false;
                let mut parts = value.split_whitespace();
                let kind = parts.next().unwrap_or_default();
                let port_text = parts.next().unwrap_or_default();
                let proto = parts.next().unwrap_or_default();
                let formats: Vec<&str> = parts.collect();
                let port = port_text.split('/').next().unwrap_or_default().parse::<u16>();
                let secure = proto == "RTP/SAVP";
                let usable = kind == "audio" && (proto == "RTP/AVP" || secure);
                let port = match port {
                    Ok(p) => p,
                    Err(_) if usable => {
                        return Err(SdpError::BadLine {
                            line,
                            reason: "m= port is not a number",
                        });
                    }
                    Err(_) => 0,
                };
                media.push(MediaLine {
                    kind: kind.to_string(),
                    port,
                    proto: proto.to_string(),
                    formats: formats.iter().map(|f| f.to_string()).collect(),
                });
                if !usable || port == 0 {
                    continue; // not ours, or a rejected stream
                }
                let payload_types = formats
                    .iter()
                    .map(|p| p.parse::<u8>().ok().filter(|pt| *pt < 128))
                    .collect::<Option<Vec<u8>>>()
                    .ok_or(SdpError::BadLine {
                        line,
                        reason: "m= payload type is not 0-127",
                    })?;
                streams.push((
                    AudioStream {
                        address: None,
                        port,
                        payload_types,
                        rtpmaps: Vec::new(),
                        ptime_ms: None,
                        direction: MediaDirection::SendRecv,
                        index: media.len() - 1,
                        secure,
                        crypto: Vec::new(),
                    },
                    None,
                ));
                in_kept_audio = true;
            }
            "a" => {
                let (name, attr_value) = value.split_once(':').unwrap_or((value, ""));
                if let Some(direction) = MediaDirection::parse(name) {
                    if !in_media {
                        session_direction = Some(direction);
                    } else if in_kept_audio && let Some((_, d)) = streams.last_mut() {
                        *d = Some(direction);
                    }
                    continue;
                }
                let Some((stream, _)) = streams.last_mut().filter(|_| in_kept_audio) else {
                    continue;
                };
                match name {
                    "rtpmap" => {
                        // a=rtpmap:101 telephone-event/8000[/channels]
                        let bad = SdpError::BadLine {
                            line,
                            reason: "a=rtpmap must be 'pt encoding/rate'",
                        };
                        let (pt, spec) = attr_value.split_once(' ').ok_or(bad.clone())?;
                        let payload_type = pt.trim().parse::<u8>().map_err(|_| bad.clone())?;
                        let mut spec = spec.trim().split('/');
                        let encoding = spec.next().unwrap_or_default().to_string();
                        let clock_rate = spec.next().and_then(|r| r.parse().ok()).ok_or(bad)?;
                        stream.rtpmaps.push(RtpMap {
                            payload_type,
                            encoding,
                            clock_rate,
                        });
                    }
                    "ptime" => {
                        stream.ptime_ms = attr_value.trim().parse().ok();
                    }
                    "crypto" => {
                        // One we cannot read is skipped: another attribute may still be usable.
                        if let Ok(crypto) = crypto_attribute_parse(attr_value) {
                            stream.crypto.push(crypto);
                        }
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let mut audio_streams = Vec::with_capacity(streams.len());
    for (mut stream, direction) in streams {
        if stream.address.is_none() {
            stream.address = session_address;
        }
        stream.direction = direction.or(session_direction).unwrap_or_default();
        if stream.address.is_some() {
            audio_streams.push(stream);
        }
    }
    let audio = audio_streams
        .iter()
        .find(|s| !s.secure)
        .or_else(|| audio_streams.first())
        .cloned();
    let Some(audio) = audio else {
        // An active RTP audio line whose address is missing, or no such line at all.
        return Err(if audio_streams_possible(&media) {
            SdpError::NoConnection
        } else {
            SdpError::NoAudio
        });
    };
    Ok(SessionDescription {
        audio,
        audio_streams,
        media,
    })
}

fn audio_streams_possible(media: &[MediaLine]) -> bool {
    media
        .iter()
        .any(|m| m.kind == "audio" && m.port != 0 && (m.proto == "RTP/AVP" || m.proto == "RTP/SAVP"))
}

/// What offer/answer agreed for a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub law: G711,
    /// The payload type the peer uses for it (normally 0 or 8).
    pub payload_type: u8,
    pub telephone_event: Option<u8>,
    /// Where to send RTP (None while the peer holds with a null address).
    pub remote: Option<SocketAddr>,
    /// Our direction in the answer.
    pub direction: MediaDirection,
    pub ptime_ms: u32,
}

/// What a stream agrees to: the first offered G.711 codec that is in `supported`, and telephone-event.
fn negotiate_stream(audio: &AudioStream, supported: &[G711]) -> Option<Negotiated> {
    let (payload_type, law) = audio.payload_types.iter().find_map(|pt| {
        audio
            .law_of(*pt)
            .filter(|law| supported.contains(law))
            .map(|law| (*pt, law))
    })?;
    Some(Negotiated {
        law,
        payload_type,
        telephone_event: audio.telephone_event(),
        remote: audio.remote(),
        direction: audio.direction.answer(),
        ptime_ms: 20,
    })
}

/// Picks the first plain (`RTP/AVP`) audio stream with a codec in `supported` (the first offered one of
/// those), and telephone-event if offered. Streams that require SRTP are left to [`answer_offer`].
pub fn negotiate(offer: &SessionDescription, supported: &[G711]) -> Result<Negotiated, SdpError> {
    let mut plain = offer.audio_streams.iter().filter(|s| !s.secure).peekable();
    if plain.peek().is_none() {
        return Err(SdpError::NoAudio);
    }
    plain
        .find_map(|s| negotiate_stream(s, supported))
        .ok_or(SdpError::NoCommonCodec)
}

/// How we take SRTP on a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SrtpPolicy {
    /// Answer `RTP/SAVP` and `a=crypto` offers with SRTP; plain RTP otherwise.
    #[default]
    WhenOffered,
    /// Plain RTP only: `RTP/SAVP` streams are rejected (port 0).
    Never,
}

/// Our full answer to an offer (RFC 3264): the chosen stream's media, its SRTP keys, and the text.
#[derive(Debug, Clone)]
pub struct Answer {
    pub negotiated: Negotiated,
    /// Set when the chosen stream is protected: apply with `RtpLeg::set_srtp`.
    pub srtp: Option<SrtpKeys>,
    /// Index of the answered `m=` line.
    pub index: usize,
    pub sdp: String,
}

/// Answers `offer` as RFC 3264 asks: the first *usable* audio stream (a G.711 codec in `supported`; with
/// `RTP/SAVP`, also a usable `a=crypto`) is answered with our address; every other `m=` line is answered in
/// its place with port 0. An `RTP/AVP` stream carrying `a=crypto` gets SRTP too (best-effort SRTP).
pub fn answer_offer(
    offer: &SessionDescription,
    supported: &[G711],
    policy: SrtpPolicy,
    local: SocketAddr,
    session_id: u64,
    session_version: u64,
) -> Result<Answer, SdpError> {
    let mut chosen = None;
    for stream in &offer.audio_streams {
        if stream.secure && policy == SrtpPolicy::Never {
            continue;
        }
        let Some(negotiated) = negotiate_stream(stream, supported) else {
            continue;
        };
        let crypto = match policy {
            SrtpPolicy::WhenOffered => answer_crypto(&stream.crypto),
            SrtpPolicy::Never => None,
        };
        if stream.secure && crypto.is_none() {
            continue; // SRTP required and no suite we can take
        }
        chosen = Some((stream, negotiated, crypto));
        break;
    }
    let Some((stream, negotiated, crypto)) = chosen else {
        return Err(if offer.audio_streams.is_empty() {
            SdpError::NoAudio
        } else {
            SdpError::NoCommonCodec
        });
    };
    let addr = address_line(local.ip());
    let mut out = String::with_capacity(320);
    let _ = write!(
        out,
        "v=0\r\no=- {session_id} {session_version} {addr}\r\ns=-\r\nc={addr}\r\nt=0 0\r\n"
    );
    for (i, line) in offer.media.iter().enumerate() {
        if i != stream.index {
            write_rejected(&mut out, line);
            continue;
        }
        let proto = if stream.secure { "RTP/SAVP" } else { "RTP/AVP" };
        write_audio(
            &mut out,
            local.port(),
            proto,
            &[(negotiated.payload_type, negotiated.law)],
            negotiated.telephone_event,
            negotiated.direction,
        );
        if let Some((attribute, _)) = &crypto {
            let _ = write!(out, "a={}\r\n", crypto_attribute_format(attribute));
        }
    }
    Ok(Answer {
        negotiated,
        srtp: crypto.map(|(_, keys)| keys),
        index: stream.index,
        sdp: out,
    })
}

/// A refused stream: port 0, the offered transport and formats (RFC 3264 §6).
fn write_rejected(out: &mut String, line: &MediaLine) {
    let formats = if line.formats.is_empty() {
        "0".to_string()
    } else {
        line.formats.join(" ")
    };
    let _ = write!(out, "m={} 0 {} {}\r\n", line.kind, line.proto, formats);
}

fn address_line(address: IpAddr) -> String {
    match address {
        IpAddr::V4(a) => format!("IN IP4 {a}"),
        IpAddr::V6(a) => format!("IN IP6 {a}"),
    }
}

/// Writes a session description with one audio stream (our answer or our offer).
/// `session_version` must grow with each new description in the same dialog (re-INVITE).
pub fn write(
    local: SocketAddr,
    session_id: u64,
    session_version: u64,
    codecs: &[(u8, G711)],
    telephone_event: Option<u8>,
    direction: MediaDirection,
) -> String {
    let addr = address_line(local.ip());
    let mut out = String::with_capacity(256);
    let _ = write!(
        out,
        "v=0\r\no=- {session_id} {session_version} {addr}\r\ns=-\r\nc={addr}\r\nt=0 0\r\n"
    );
    write_audio(
        &mut out,
        local.port(),
        "RTP/AVP",
        codecs,
        telephone_event,
        direction,
    );
    out
}

fn write_audio(
    out: &mut String,
    port: u16,
    proto: &str,
    codecs: &[(u8, G711)],
    telephone_event: Option<u8>,
    direction: MediaDirection,
) {
    let _ = write!(out, "m=audio {port} {proto}");
    for (pt, _) in codecs {
        let _ = write!(out, " {pt}");
    }
    if let Some(pt) = telephone_event {
        let _ = write!(out, " {pt}");
    }
    out.push_str("\r\n");
    for (pt, law) in codecs {
        let name = match law {
            G711::Pcmu => "PCMU",
            G711::Pcma => "PCMA",
        };
        let _ = write!(out, "a=rtpmap:{pt} {name}/8000\r\n");
    }
    if let Some(pt) = telephone_event {
        let _ = write!(out, "a=rtpmap:{pt} telephone-event/8000\r\na=fmtp:{pt} 0-16\r\n");
    }
    let _ = write!(out, "a=ptime:20\r\na={}\r\n", direction.as_str());
}

/// Our answer to a negotiated offer.
pub fn answer(negotiated: &Negotiated, local: SocketAddr, session_id: u64, session_version: u64) -> String {
    write(
        local,
        session_id,
        session_version,
        &[(negotiated.payload_type, negotiated.law)],
        negotiated.telephone_event,
        negotiated.direction,
    )
}

/// Our offer: PCMU, PCMA and telephone-event 101.
pub fn offer(local: SocketAddr, session_id: u64, session_version: u64, direction: MediaDirection) -> String {
    write(
        local,
        session_id,
        session_version,
        &[(0, G711::Pcmu), (8, G711::Pcma)],
        Some(crate::dtmf::rfc4733::DEFAULT_PAYLOAD_TYPE),
        direction,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SIPP_OFFER: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.1.1\r\ns=-\r\nc=IN IP4 127.0.1.1\r\n\
t=0 0\r\nm=audio 6000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-11,16\r\na=ptime:20\r\n";

    #[test]
    fn parses_a_typical_offer() {
        let sdp = parse(SIPP_OFFER).unwrap();
        let audio = &sdp.audio;
        assert_eq!(audio.remote(), Some("127.0.1.1:6000".parse().unwrap()));
        assert_eq!(audio.payload_types, [8, 0, 101]);
        assert_eq!(audio.telephone_event(), Some(101));
        assert_eq!(audio.ptime_ms, Some(20));
        assert_eq!(audio.direction, MediaDirection::SendRecv);
        let n = negotiate(&sdp, &[G711::Pcmu, G711::Pcma]).unwrap();
        assert_eq!(
            (n.law, n.payload_type, n.telephone_event),
            (G711::Pcma, 8, Some(101))
        );
        // If we only do mu-law, the second offered codec is picked.
        assert_eq!(negotiate(&sdp, &[G711::Pcmu]).unwrap().law, G711::Pcmu);
    }

    #[test]
    fn answer_mirrors_the_choice_with_our_address() {
        let n = negotiate(&parse(SIPP_OFFER).unwrap(), &[G711::Pcmu, G711::Pcma]).unwrap();
        let text = answer(&n, "10.0.0.5:30000".parse().unwrap(), 42, 1);
        assert!(text.contains("c=IN IP4 10.0.0.5\r\n"), "{text}");
        assert!(text.contains("m=audio 30000 RTP/AVP 8 101\r\n"), "{text}");
        assert!(text.contains("a=rtpmap:101 telephone-event/8000\r\n"));
        assert!(text.contains("a=sendrecv\r\n"));
        // Our own answer parses back to the same choice.
        let back = negotiate(&parse(&text).unwrap(), &[G711::Pcmu, G711::Pcma]).unwrap();
        assert_eq!((back.law, back.telephone_event), (G711::Pcma, Some(101)));
        assert_eq!(back.remote, Some("10.0.0.5:30000".parse().unwrap()));
    }

    #[test]
    fn directions_hold_and_dynamic_maps() {
        let hold =
            "v=0\r\nc=IN IP4 192.0.2.1\r\na=sendonly\r\nm=audio 4000 RTP/AVP 96\r\na=rtpmap:96 pcmu/8000\r\n";
        let sdp = parse(hold).unwrap();
        assert_eq!(sdp.audio.direction, MediaDirection::SendOnly);
        let n = negotiate(&sdp, &[G711::Pcmu]).unwrap();
        assert_eq!(
            (n.law, n.payload_type, n.direction),
            (G711::Pcmu, 96, MediaDirection::RecvOnly)
        );
        assert_eq!(n.telephone_event, None);

        let old_hold = "v=0\r\nc=IN IP4 0.0.0.0\r\nm=audio 4000 RTP/AVP 0\r\na=inactive\r\n";
        let sdp = parse(old_hold).unwrap();
        assert_eq!(sdp.audio.remote(), None);
        assert_eq!(sdp.audio.direction, MediaDirection::Inactive);
        assert!(!MediaDirection::Inactive.sends() && MediaDirection::RecvOnly.receives());

        let media_level = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 5000 RTP/AVP 96\r\nc=IN IP4 192.0.2.9\r\n\
m=audio 4002 RTP/AVP 0\r\nc=IN IP6 2001:db8::1\r\na=recvonly\r\n";
        let sdp = parse(media_level).unwrap();
        assert_eq!(sdp.audio.remote(), Some("[2001:db8::1]:4002".parse().unwrap()));
        assert_eq!(sdp.audio.direction, MediaDirection::RecvOnly);
    }

    #[test]
    fn errors_are_specific() {
        assert_eq!(parse("v=0\r\nc=IN IP4 1.2.3.4\r\n"), Err(SdpError::NoAudio));
        assert_eq!(
            parse("v=0\r\nm=audio 4000 RTP/AVP 0\r\n"),
            Err(SdpError::NoConnection)
        );
        // SRTP required: plain negotiation refuses it; answer_offer takes it only with a usable a=crypto.
        let savp = parse("v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/SAVP 0\r\n").unwrap();
        assert_eq!(negotiate(&savp, &[G711::Pcmu]), Err(SdpError::NoAudio));
        assert!(
            answer_offer(
                &savp,
                &[G711::Pcmu],
                SrtpPolicy::WhenOffered,
                LOCAL.parse().unwrap(),
                1,
                1
            )
            .is_err()
        );
        assert_eq!(
            parse("v=0\r\nc=IN IP4 nowhere\r\n"),
            Err(SdpError::BadLine {
                line: 2,
                reason: "connection address is not an IP address"
            })
        );
        assert!(matches!(
            parse("v=0\r\ngarbage\r\n"),
            Err(SdpError::BadLine { line: 2, .. })
        ));
        let g729 = parse(
            "v=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 4000 RTP/AVP 18 101\r\na=rtpmap:101 telephone-event/8000\r\n",
        )
        .unwrap();
        assert_eq!(
            negotiate(&g729, &[G711::Pcmu, G711::Pcma]),
            Err(SdpError::NoCommonCodec)
        );
    }

    #[test]
    fn our_offer_lists_both_laws() {
        let text = offer("127.0.0.1:20000".parse().unwrap(), 1, 2, MediaDirection::SendRecv);
        let sdp = parse(&text).unwrap();
        assert_eq!(sdp.audio.payload_types, [0, 8, 101]);
        assert_eq!(sdp.audio.law_of(8), Some(G711::Pcma));
    }

    const LOCAL: &str = "10.0.0.5:30000";

    fn answered(offer: &str) -> Answer {
        let sdp = parse(offer).unwrap();
        answer_offer(
            &sdp,
            &[G711::Pcmu, G711::Pcma],
            SrtpPolicy::WhenOffered,
            LOCAL.parse().unwrap(),
            7,
            1,
        )
        .unwrap()
    }

    fn m_lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| l.starts_with("m=")).collect()
    }

    #[test]
    fn answer_has_one_line_per_offered_line_in_order_with_rejected_ones_at_port_0() {
        let offer = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n\
m=video 4002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n\
m=audio 4004 RTP/AVP 8\r\n";
        let a = answered(offer);
        assert_eq!(
            m_lines(&a.sdp),
            [
                "m=audio 30000 RTP/AVP 0 101",
                "m=video 0 RTP/AVP 96",
                "m=audio 0 RTP/AVP 8"
            ]
        );
        assert_eq!(
            (a.index, a.negotiated.law, a.srtp.is_none()),
            (0, G711::Pcmu, true)
        );
        // Our answer parses back to the same single usable stream.
        assert_eq!(parse(&a.sdp).unwrap().audio_streams.len(), 1);
    }

    #[test]
    fn the_first_usable_audio_line_is_chosen() {
        // The first audio line offers only G.729; the second PCMU: the second is answered.
        let offer = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/AVP 18\r\nm=audio 4002 RTP/AVP 0\r\n";
        let a = answered(offer);
        assert_eq!(
            m_lines(&a.sdp),
            ["m=audio 0 RTP/AVP 18", "m=audio 30000 RTP/AVP 0"]
        );
        assert_eq!(a.negotiated.remote, Some("192.0.2.1:4002".parse().unwrap()));
        let n = negotiate(&parse(offer).unwrap(), &[G711::Pcmu]).unwrap();
        assert_eq!(n.remote, Some("192.0.2.1:4002".parse().unwrap()));
        // An unknown transport is rejected in place.
        let offer = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 UDP/TLS/RTP/SAVPF 111\r\n\
m=audio 4002 RTP/AVP 8\r\nm=application 5000 UDP/BFCP *\r\n";
        assert_eq!(
            m_lines(&answered(offer).sdp),
            [
                "m=audio 0 UDP/TLS/RTP/SAVPF 111",
                "m=audio 30000 RTP/AVP 8",
                "m=application 0 UDP/BFCP *"
            ]
        );
    }

    #[test]
    fn directions_at_session_and_media_level_are_honoured_in_the_answer() {
        let offer = "v=0\r\nc=IN IP4 192.0.2.1\r\na=sendonly\r\nm=audio 4000 RTP/AVP 0\r\n";
        assert!(answered(offer).sdp.contains("a=recvonly\r\n"));
        let offer = "v=0\r\nc=IN IP4 192.0.2.1\r\na=sendonly\r\nm=audio 4000 RTP/AVP 0\r\na=inactive\r\n";
        assert!(answered(offer).sdp.contains("a=inactive\r\n"));
    }

    #[test]
    fn srtp_offers_are_answered_with_our_key_and_the_keys_agree() {
        let theirs = crate::sdes::offer_crypto();
        let offer = format!(
            "v=0\r\nc=IN IP4 192.0.2.1\r\nm=audio 4000 RTP/SAVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n\
a={}\r\na={}\r\n",
            crypto_attribute_format(&theirs[0]),
            crypto_attribute_format(&theirs[1])
        );
        let a = answered(&offer);
        assert_eq!(m_lines(&a.sdp), ["m=audio 30000 RTP/SAVP 0 101"]);
        let keys = a.srtp.clone().unwrap();
        // What we wrote is what we send with; the peer derives the same pair from our answer.
        let ours = parse(&a.sdp).unwrap().audio.crypto;
        assert_eq!(ours.len(), 1);
        let peer = crate::sdes::keys_from_answer(&theirs, &ours[0]).unwrap();
        assert_eq!(
            (peer.local.clone(), peer.remote.clone()),
            (keys.remote, keys.local)
        );
        // With SRTP refused by policy, a SAVP-only offer has nothing usable.
        let sdp = parse(&offer).unwrap();
        assert!(
            answer_offer(
                &sdp,
                &[G711::Pcmu],
                SrtpPolicy::Never,
                LOCAL.parse().unwrap(),
                1,
                1
            )
            .is_err()
        );
        // SAVP first, AVP fallback second: policy Never takes the plain one and rejects the other.
        let both = format!("{offer}m=audio 4002 RTP/AVP 0\r\n");
        let a = answer_offer(
            &parse(&both).unwrap(),
            &[G711::Pcmu],
            SrtpPolicy::Never,
            LOCAL.parse().unwrap(),
            1,
            1,
        )
        .unwrap();
        assert_eq!(
            m_lines(&a.sdp),
            ["m=audio 0 RTP/SAVP 0 101", "m=audio 30000 RTP/AVP 0"]
        );
        assert!(a.srtp.is_none());
        // Best-effort SRTP: RTP/AVP with a=crypto is answered with a key.
        let best_effort = offer.replace("RTP/SAVP", "RTP/AVP");
        let a = answered(&best_effort);
        assert!(
            a.srtp.is_some()
                && a.sdp.contains("m=audio 30000 RTP/AVP 0 101")
                && a.sdp.contains("a=crypto:1 ")
        );
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "(([vocmat]=[ -~]{0,40})\r\n){0,12}") {
            if let Ok(sdp) = parse(&text) {
                let _ = negotiate(&sdp, &[G711::Pcmu, G711::Pcma]);
                let local = "127.0.0.1:1".parse().unwrap();
                let _ = answer_offer(&sdp, &[G711::Pcmu], SrtpPolicy::WhenOffered, local, 1, 1);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&String::from_utf8_lossy(&bytes));
        }
    }
}
