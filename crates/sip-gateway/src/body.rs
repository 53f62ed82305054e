//! Message bodies: which ones the gateway can use, the SDP inside a `multipart/mixed` or
//! `multipart/alternative` body (RFC 5621, as carriers send SDP with ISUP), and answers shaped as
//! RFC 3264 asks. Pure: text in, text out, no panic on any input.
//!
//! - [`offer_of`] finds the session description of a request (`application/sdp`, or the SDP part of a
//!   multipart body); anything else is [`BodyError::Unsupported`] (answered 415 with [`ACCEPT`]).
//! - [`replace_sdp`] swaps the SDP part of a multipart body for another, keeping the other parts (ISUP,
//!   XML) for the forwarded leg.
//! - [`mirror_offer`] gives an answer one `m=` line per offered line, in order, rejecting with port 0
//!   the lines the answerer left out.

/// The body types we take, for `Accept` in a 415.
pub const ACCEPT: &str = "application/sdp, multipart/mixed, multipart/alternative";

/// Why a body cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("unsupported body type {0}")]
    Unsupported(String),
    #[error("unsupported content encoding {0}")]
    Encoding(String),
    #[error("malformed multipart body")]
    BadMultipart,
}

/// One part of a multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The part's Content-Type, as written (`application/sdp` when absent, RFC 2046's default is text).
    pub content_type: String,
    /// The part's header lines, as written (Content-Type, Content-Disposition, ...).
    pub headers: Vec<String>,
    pub body: Vec<u8>,
}

/// The media type of a Content-Type value, lower-cased, without parameters.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A parameter of a Content-Type value (`boundary`), unquoted; whitespace around `;` and `=` allowed.
pub fn parameter(content_type: &str, name: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case(name) {
            return None;
        }
        let v = v.trim();
        let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
        Some(v.to_string())
    })
}

fn is_multipart(media: &str) -> bool {
    media == "multipart/mixed" || media == "multipart/alternative" || media == "multipart/related"
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Splits a multipart body on its boundary (RFC 2046 §5.1.1). Preamble and epilogue are ignored.
pub fn parse_multipart(content_type: &str, body: &[u8]) -> Result<Vec<Part>, BodyError> {
    let boundary = parameter(content_type, "boundary")
        .filter(|b| !b.is_empty() && b.len() <= 70)
        .ok_or(BodyError::BadMultipart)?;
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut parts = Vec::new();
    let mut at = find(body, delimiter, 0).ok_or(BodyError::BadMultipart)?;
    loop {
        let after = at + delimiter.len();
        if body[after..].starts_with(b"--") {
            return Ok(parts); // the close delimiter
        }
        // Skip transport padding and the line break after the delimiter.
        let line_end = find(body, b"\n", after).ok_or(BodyError::BadMultipart)?;
        let start = line_end + 1;
        let next = find(body, delimiter, start).ok_or(BodyError::BadMultipart)?;
        // The line break before the next delimiter belongs to it.
        let mut end = next;
        if end > start && body[end - 1] == b'\n' {
            end -= 1;
            if end > start && body[end - 1] == b'\r' {
                end -= 1;
            }
        }
        parts.push(parse_part(&body[start..end])?);
        if parts.len() > 16 {
            return Err(BodyError::BadMultipart);
        }
        at = next;
    }
}

fn parse_part(raw: &[u8]) -> Result<Part, BodyError> {
    // Headers end at the first empty line; a part may have none (then it starts with the empty line).
    let (head, body) = if raw.starts_with(b"\r\n") {
        (&raw[..0], &raw[2..])
    } else if raw.starts_with(b"\n") {
        (&raw[..0], &raw[1..])
    } else if let Some(i) = find(raw, b"\r\n\r\n", 0) {
        (&raw[..i], &raw[i + 4..])
    } else if let Some(i) = find(raw, b"\n\n", 0) {
        (&raw[..i], &raw[i + 2..])
    } else {
        return Err(BodyError::BadMultipart);
    };
    let head = std::str::from_utf8(head).map_err(|_| BodyError::BadMultipart)?;
    let headers: Vec<String> = head
        .split('\n')
        .map(|l| l.trim_end_matches('\r').to_string())
        .filter(|l| !l.is_empty())
        .collect();
    let content_type = headers
        .iter()
        .find_map(|h| {
            let (name, value) = h.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_else(|| "text/plain".to_string());
    Ok(Part {
        content_type,
        headers,
        body: body.to_vec(),
    })
}

/// The SDP of a request or response body: `Ok(None)` for no body (a late offer) or a multipart body
/// without SDP; an error for a body we cannot use.
pub fn offer_of(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
) -> Result<Option<Vec<u8>>, BodyError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    if let Some(encoding) = content_encoding.map(str::trim)
        && !encoding.is_empty()
        && !encoding.eq_ignore_ascii_case("identity")
    {
        return Err(BodyError::Encoding(encoding.to_string()));
    }
    // RFC 3261 §20.15: a body without Content-Type is an error; SDP is what peers mean by it.
    let content_type = content_type.unwrap_or("application/sdp");
    let media = media_type(content_type);
    if media == "application/sdp" {
        return Ok(Some(body.to_vec()));
    }
    if is_multipart(&media) {
        let parts = parse_multipart(content_type, body)?;
        return Ok(parts
            .into_iter()
            .find(|p| media_type(&p.content_type) == "application/sdp")
            .map(|p| p.body));
    }
    Err(BodyError::Unsupported(media))
}

/// The multipart `body` with its SDP part's content replaced by `sdp`; other parts byte-for-byte.
pub fn replace_sdp(content_type: &str, body: &[u8], sdp: &[u8]) -> Result<Vec<u8>, BodyError> {
    let boundary = parameter(content_type, "boundary").ok_or(BodyError::BadMultipart)?;
    let parts = parse_multipart(content_type, body)?;
    let mut out = Vec::with_capacity(body.len() + sdp.len());
    for part in parts {
        out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        for h in &part.headers {
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        if media_type(&part.content_type) == "application/sdp" {
            out.extend_from_slice(sdp);
        } else {
            out.extend_from_slice(&part.body);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Ok(out)
}

struct MLine<'a> {
    kind: &'a str,
    port: &'a str,
    proto: &'a str,
    formats: Vec<&'a str>,
}

fn m_line(line: &str) -> Option<MLine<'_>> {
    let rest = line.strip_prefix("m=")?;
    let mut parts = rest.split_whitespace();
    Some(MLine {
        kind: parts.next()?,
        port: parts.next()?,
        proto: parts.next()?,
        formats: parts.collect(),
    })
}

/// Splits SDP text into its session section and one section per `m=` line.
fn sections(sdp: &str) -> (Vec<&str>, Vec<Vec<&str>>) {
    let mut session = Vec::new();
    let mut media: Vec<Vec<&str>> = Vec::new();
    for line in sdp.split('\n').map(|l| l.trim_end_matches('\r')) {
        if line.is_empty() {
            continue;
        }
        if line.starts_with("m=") {
            media.push(vec![line]);
        } else if let Some(m) = media.last_mut() {
            m.push(line);
        } else {
            session.push(line);
        }
    }
    (session, media)
}

/// Gives `answer` one `m=` line per line of `offer`, in the offer's order (RFC 3264 §6): the answer's
/// audio section goes in the place of the offered line it answers (same transport, a common format),
/// every other offered line is rejected with port 0. An answer that already has as many lines as the
/// offer, or that cannot be matched, is returned as it is.
pub fn mirror_offer(offer: &str, answer: &str) -> String {
    let (_, offered) = sections(offer);
    let (session, answered) = sections(answer);
    if answered.len() >= offered.len() {
        return answer.to_string();
    }
    let [ours] = answered.as_slice() else {
        return answer.to_string();
    };
    let Some(our_line) = ours.first().and_then(|l| m_line(l)) else {
        return answer.to_string();
    };
    let candidates: Vec<(usize, MLine<'_>)> = offered
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.first().and_then(|l| m_line(l)).map(|m| (i, m)))
        .filter(|(_, m)| m.kind == our_line.kind && m.proto == our_line.proto && m.port != "0")
        .collect();
    let chosen = candidates
        .iter()
        .find(|(_, m)| m.formats.iter().any(|f| our_line.formats.contains(f)))
        .or(candidates.first())
        .map(|(i, _)| *i);
    let Some(chosen) = chosen else {
        return answer.to_string();
    };
    let mut out = String::with_capacity(answer.len() + 64 * offered.len());
    for line in session {
        out.push_str(line);
        out.push_str("\r\n");
    }
    for (i, section) in offered.iter().enumerate() {
        if i == chosen {
            for line in ours {
                out.push_str(line);
                out.push_str("\r\n");
            }
            continue;
        }
        let Some(m) = section.first().and_then(|l| m_line(l)) else {
            continue;
        };
        let formats = if m.formats.is_empty() {
            "0".to_string()
        } else {
            m.formats.join(" ")
        };
        out.push_str(&format!("m={} 0 {} {}\r\n", m.kind, m.proto, formats));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SDP: &str =
        "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n";

    fn isup_body(boundary: &str) -> String {
        format!(
            "--{boundary}\r\nContent-Type: application/sdp\r\n\r\n{SDP}\r\n--{boundary}\r\n\
Content-Type: application/ISUP;version=itu-t92+\r\nContent-Disposition: signal;handling=optional\r\n\r\n\
\u{1}\u{2}\u{3}\r\n--{boundary}--\r\n"
        )
    }

    #[test]
    fn sdp_is_found_in_plain_and_multipart_bodies() {
        assert_eq!(
            offer_of(Some("application/sdp"), None, SDP.as_bytes()),
            Ok(Some(SDP.as_bytes().to_vec()))
        );
        assert_eq!(offer_of(Some("application/sdp"), None, b""), Ok(None));
        let ct = "multipart/mixed ; boundary = \"unique-boundary-1\"";
        let body = isup_body("unique-boundary-1");
        assert_eq!(
            offer_of(Some(ct), None, body.as_bytes()),
            Ok(Some(SDP.as_bytes().to_vec()))
        );
        let alt = "multipart/alternative;boundary=b1";
        assert_eq!(
            offer_of(Some(alt), None, isup_body("b1").as_bytes()),
            Ok(Some(SDP.as_bytes().to_vec()))
        );
    }

    #[test]
    fn unusable_bodies_are_named() {
        assert_eq!(
            offer_of(Some("application/xml"), None, b"<x/>"),
            Err(BodyError::Unsupported("application/xml".into()))
        );
        assert_eq!(
            offer_of(Some("application/sdp"), Some("gzip"), b"x"),
            Err(BodyError::Encoding("gzip".into()))
        );
        assert_eq!(
            offer_of(Some("multipart/mixed"), None, b"--x\r\n\r\nabc"),
            Err(BodyError::BadMultipart)
        );
        // A multipart body with no SDP part is a request without an offer.
        let body = "--b\r\nContent-Type: application/ISUP\r\n\r\nxx\r\n--b--\r\n";
        assert_eq!(
            offer_of(Some("multipart/mixed;boundary=b"), None, body.as_bytes()),
            Ok(None)
        );
    }

    #[test]
    fn replacing_the_sdp_keeps_the_other_parts() {
        let ct = "multipart/mixed;boundary=b1";
        let body = isup_body("b1");
        let new = "v=0\r\nc=IN IP4 10.0.0.1\r\nm=audio 5000 RTP/AVP 0\r\n";
        let out = replace_sdp(ct, body.as_bytes(), new.as_bytes()).unwrap();
        let parts = parse_multipart(ct, &out).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].body, new.as_bytes());
        assert_eq!(parts[1].body, b"\x01\x02\x03");
        assert_eq!(
            parts[1].headers[1],
            "Content-Disposition: signal;handling=optional"
        );
    }

    #[test]
    fn answers_get_one_line_per_offered_line() {
        let offer = "v=0\r\nc=IN IP4 192.0.2.1\r\nm=video 4000 RTP/AVP 96\r\nm=audio 4002 RTP/AVP 18\r\n\
m=audio 4004 RTP/AVP 0 101\r\n";
        let answer = "v=0\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\nm=audio 5000 RTP/AVP 0 101\r\na=sendrecv\r\n";
        let out = mirror_offer(offer, answer);
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("m=")).collect();
        assert_eq!(
            lines,
            [
                "m=video 0 RTP/AVP 96",
                "m=audio 0 RTP/AVP 18",
                "m=audio 5000 RTP/AVP 0 101"
            ]
        );
        assert!(out.contains("m=audio 5000 RTP/AVP 0 101\r\na=sendrecv\r\n"));
        // Already complete: unchanged.
        assert_eq!(mirror_offer(SDP, SDP), SDP);
    }

    proptest! {
        #[test]
        fn never_panics(ct in "[ -~]{0,60}", body in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = offer_of(Some(&ct), None, &body);
            let _ = replace_sdp(&ct, &body, b"v=0");
            let text = String::from_utf8_lossy(&body);
            let _ = mirror_offer(&text, SDP);
            let _ = mirror_offer(SDP, &text);
        }

        #[test]
        fn multipart_with_arbitrary_parts_never_panics(parts in proptest::collection::vec("[ -~\r\n]{0,80}", 0..5)) {
            let mut body = String::new();
            for p in &parts {
                body.push_str("--zz\r\n");
                body.push_str(p);
                body.push_str("\r\n");
            }
            body.push_str("--zz--\r\n");
            let _ = offer_of(Some("multipart/mixed;boundary=zz"), None, body.as_bytes());
        }
    }
}
