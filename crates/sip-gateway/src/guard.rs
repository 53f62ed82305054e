//! The first look at every datagram, before the SIP stack parses it.
//!
//! The stack drops what it cannot parse without a word; a gateway facing the public network must do
//! better: answer 4xx/5xx where a response can be built (it needs the Via, From, To, Call-ID and CSeq
//! lines), drop and count the rest, and never let a broken message stall or crash anything.
//! [`screen`] is pure (fuzzed and property-tested); [`GuardedUdpSocket`] applies it on the socket
//! the SIP stack reads from.

use crate::admission::SourceLimiter;
use crate::metrics::GatewayMetrics;
use std::net::SocketAddr;
use std::sync::Arc;

/// Methods this gateway knows; anything else that is a well-formed token gets 501.
const KNOWN_METHODS: &[&str] = &[
    "INVITE",
    "ACK",
    "BYE",
    "CANCEL",
    "OPTIONS",
    "REGISTER",
    "INFO",
    "UPDATE",
    "PRACK",
    "REFER",
    "NOTIFY",
    "SUBSCRIBE",
    "MESSAGE",
    "PUBLISH",
];

/// Option tags we support in `Require`/`Proxy-Require`: none yet.
const SUPPORTED_EXTENSIONS: &[&str] = &[];

/// Why a datagram was not passed on; used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    Oversized,
    Truncated,
    NotUtf8,
    BadStartLine,
    UnknownMethod,
    MissingHeader,
    BadCSeq,
    BadContentLength,
    BadMaxForwards,
    TooManyHops,
    UnsupportedExtension,
    Unparseable,
    RateLimited,
    /// A TCP connection from a source that already holds its cap of connections.
    TooManyConnections,
}

impl RejectReason {
    /// Stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Oversized => "oversized",
            Self::Truncated => "truncated",
            Self::NotUtf8 => "not_utf8",
            Self::BadStartLine => "bad_start_line",
            Self::UnknownMethod => "unknown_method",
            Self::MissingHeader => "missing_header",
            Self::BadCSeq => "bad_cseq",
            Self::BadContentLength => "bad_content_length",
            Self::BadMaxForwards => "bad_max_forwards",
            Self::TooManyHops => "too_many_hops",
            Self::UnsupportedExtension => "unsupported_extension",
            Self::TooManyConnections => "too_many_connections",
            Self::Unparseable => "unparseable",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// What to do with one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Screened {
    /// Hand it to the SIP stack as it is.
    Pass,
    /// Hand this corrected form to the SIP stack (line folding undone, surplus body trimmed).
    Rewrite(Vec<u8>),
    /// Send this response back to the source and drop the request.
    Respond { response: Vec<u8>, reason: RejectReason },
    /// Drop it silently (nothing to answer to, or not worth answering).
    Drop(RejectReason),
}

/// Limits for [`screen`].
#[derive(Debug, Clone, Copy)]
pub struct ScreenLimits {
    pub max_message_bytes: usize,
    pub max_headers: usize,
}

impl Default for ScreenLimits {
    fn default() -> Self {
        Self {
            max_message_bytes: 8000,
            max_headers: 100,
        }
    }
}

struct Head<'a> {
    start_line: &'a str,
    headers: Vec<(&'a str, &'a str)>,
}

impl<'a> Head<'a> {
    fn values<'s>(&'s self, long: &'s str, compact: Option<&'s str>) -> impl Iterator<Item = &'a str> + 's {
        self.headers.iter().filter_map(move |(n, v)| {
            let hit = n.eq_ignore_ascii_case(long) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c));
            hit.then_some(*v)
        })
    }
    fn first(&self, long: &str, compact: Option<&str>) -> Option<&'a str> {
        self.values(long, compact).next()
    }
    fn raw_lines(&self, long: &str, compact: Option<&str>) -> Vec<(&'a str, &'a str)> {
        self.headers
            .iter()
            .filter(|(n, _)| {
                n.eq_ignore_ascii_case(long) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c))
            })
            .copied()
            .collect()
    }
}

/// Finds the end of the header section: index of the blank line and the body start.
fn split_head(data: &[u8]) -> Option<(usize, usize)> {
    if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((i, i + 4));
    }
    data.windows(2).position(|w| w == b"\n\n").map(|i| (i, i + 2))
}

/// Parses the header section, unfolding continuation lines. Returns None when a line is not a header.
fn parse_head(head: &str, unfolded: &mut String) -> Option<bool> {
    // First pass: detect folding; if present build an unfolded copy.
    let mut folded = false;
    for line in head.split('\n').skip(1) {
        if line.starts_with(' ') || line.starts_with('\t') {
            folded = true;
            break;
        }
    }
    if folded {
        for line in head.split('\n') {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.starts_with(' ') || line.starts_with('\t') {
                unfolded.push(' ');
                unfolded.push_str(line.trim_start());
            } else {
                if !unfolded.is_empty() {
                    unfolded.push_str("\r\n");
                }
                unfolded.push_str(line);
            }
        }
    }
    Some(folded)
}

fn lines_to_head(text: &str, max_headers: usize) -> Result<Head<'_>, RejectReason> {
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = lines.next().unwrap_or_default();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(RejectReason::Unparseable);
        };
        let name = name.trim();
        if name.is_empty() || !name.bytes().all(is_token_byte) {
            return Err(RejectReason::Unparseable);
        }
        headers.push((name, value.trim()));
        if headers.len() > max_headers {
            return Err(RejectReason::Oversized);
        }
    }
    Ok(Head { start_line, headers })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Looks at one datagram. Pure: the same bytes always give the same answer (tags in built responses
/// come from `tag`).
pub fn screen(data: &[u8], limits: ScreenLimits, tag: &str) -> Screened {
    if data.iter().all(|b| b.is_ascii_whitespace()) {
        return Screened::Pass; // keep-alive; the stack answers it
    }
    if data.len() > limits.max_message_bytes {
        // Too large, and possibly cut short by the receive buffer: answer 513 from the header lines
        // that arrived whole, when they are enough to build a response.
        let head = match split_head(data) {
            Some((end, _)) => &data[..end],
            // Cut short: the last line may be partial, so leave it out.
            None => data
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(data, |i| &data[..i]),
        };
        let text = String::from_utf8_lossy(head);
        return match build_from_text(&text, 513, "Message Too Large", limits, tag) {
            Some(response) => Screened::Respond {
                response,
                reason: RejectReason::Oversized,
            },
            None => Screened::Drop(RejectReason::Oversized),
        };
    }
    let Some((head_end, body_start)) = split_head(data) else {
        // No end of headers: a truncated datagram or garbage. Nothing trustworthy to answer.
        return Screened::Drop(RejectReason::Truncated);
    };
    let head_bytes = &data[..head_end];
    let body = &data[body_start..];
    let head_text = match std::str::from_utf8(head_bytes) {
        Ok(t) => t,
        Err(_) => {
            // Answer 400 if the lines we need are intact.
            let lossy = String::from_utf8_lossy(head_bytes);
            return match build_from_text(&lossy, 400, "Bad Request (invalid UTF-8)", limits, tag) {
                Some(response) => Screened::Respond {
                    response,
                    reason: RejectReason::NotUtf8,
                },
                None => Screened::Drop(RejectReason::NotUtf8),
            };
        }
    };
    let mut unfolded = String::new();
    let folded = parse_head(head_text, &mut unfolded).unwrap_or(false);
    let text: &str = if folded { &unfolded } else { head_text };
    let head = match lines_to_head(text, limits.max_headers) {
        Ok(h) => h,
        Err(reason) => return Screened::Drop(reason),
    };
    let respond = |code: u16, phrase: &str, reason: RejectReason, extra: &[String]| -> Screened {
        match build_response(&head, code, phrase, extra, tag) {
            Some(response) => Screened::Respond { response, reason },
            None => Screened::Drop(reason),
        }
    };

    if head.start_line.starts_with("SIP/2.0 ") {
        // A response: the stack matches it to a transaction or drops it. One whose CSeq number is out
        // of range (RFC 4475 §3.1.2.5) matches nothing we sent.
        let cseq_ok = head
            .first("CSeq", None)
            .and_then(|c| c.split_whitespace().next())
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n < (1 << 31));
        if !cseq_ok {
            return Screened::Drop(RejectReason::BadCSeq);
        }
        return finish(data, folded, &unfolded, body, &head);
    }

    // Request line: METHOD SP URI SP SIP/2.0
    let mut parts = head.start_line.split(' ');
    let (Some(method), Some(uri), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return respond(400, "Bad Request Line", RejectReason::BadStartLine, &[]);
    };
    if version != "SIP/2.0" && version.starts_with("SIP/") && !method.is_empty() {
        return respond(505, "Version Not Supported", RejectReason::BadStartLine, &[]);
    }
    if method.is_empty() || !method.bytes().all(is_token_byte) || uri.is_empty() || version != "SIP/2.0" {
        return respond(400, "Bad Request Line", RejectReason::BadStartLine, &[]);
    }
    // RFC 3261 §19.1.1/§25.1: a Request-URI is not enclosed in <> and carries no header part.
    let lower = uri.to_ascii_lowercase();
    // The user part may hold '?'; headers start after the host.
    let host_part = uri.split_once('@').map_or(uri, |(_, host)| host);
    if uri.starts_with('<')
        || ((lower.starts_with("sip:") || lower.starts_with("sips:")) && host_part.contains('?'))
    {
        return respond(400, "Bad Request-URI", RejectReason::BadStartLine, &[]);
    }
    let is_ack = method == "ACK";
    if head.first("Via", Some("v")).is_none() {
        return Screened::Drop(RejectReason::MissingHeader);
    }
    for (long, compact) in [
        ("From", Some("f")),
        ("To", Some("t")),
        ("Call-ID", Some("i")),
        ("CSeq", None),
    ] {
        if head.first(long, compact).is_none() {
            return if is_ack {
                Screened::Drop(RejectReason::MissingHeader)
            } else {
                respond(400, &format!("Missing {long}"), RejectReason::MissingHeader, &[])
            };
        }
    }
    if !crate::syntax::has_tag(head.first("From", Some("f")).unwrap_or_default()) {
        // RFC 3261 §8.1.1.3: the stack keys transactions on it; without one the request would vanish.
        return if is_ack {
            Screened::Drop(RejectReason::MissingHeader)
        } else {
            respond(400, "Missing From tag", RejectReason::MissingHeader, &[])
        };
    }
    // From, To and Contact as the grammar says: quotes closed, no white space inside <>, no empty
    // parameter, a display name of tokens or a quoted string (RFC 4475 §3.1.2.1, .6, .13-.15).
    for (long, compact) in [("From", Some("f")), ("To", Some("t")), ("Contact", Some("m"))] {
        for value in head.values(long, compact) {
            if let Err(why) = crate::syntax::check_addresses(value, long == "Contact") {
                return if is_ack {
                    Screened::Drop(RejectReason::Unparseable)
                } else {
                    respond(400, &format!("Bad {long}: {why}"), RejectReason::Unparseable, &[])
                };
            }
        }
    }
    if !KNOWN_METHODS.contains(&method) {
        return respond(501, "Not Implemented", RejectReason::UnknownMethod, &[]);
    }
    // CSeq: number and a method equal to the request's.
    let cseq = head.first("CSeq", None).unwrap_or_default();
    let mut cs = cseq.split_whitespace();
    let cseq_ok = match (cs.next().map(str::parse::<u32>), cs.next(), cs.next()) {
        (Some(Ok(n)), Some(m), None) => n < (1 << 31) && m == method,
        _ => false,
    };
    if !cseq_ok {
        return if is_ack {
            Screened::Drop(RejectReason::BadCSeq)
        } else {
            respond(400, "Bad CSeq", RejectReason::BadCSeq, &[])
        };
    }
    if let Some(mf) = head.first("Max-Forwards", None) {
        match mf.parse::<u32>() {
            Ok(0) if !is_ack => return respond(483, "Too Many Hops", RejectReason::TooManyHops, &[]),
            Ok(n) if n <= 255 => {}
            Ok(0) => return Screened::Drop(RejectReason::TooManyHops),
            _ => {
                return if is_ack {
                    Screened::Drop(RejectReason::BadMaxForwards)
                } else {
                    respond(400, "Bad Max-Forwards", RejectReason::BadMaxForwards, &[])
                };
            }
        }
    }
    // Content-Length must not promise more than arrived (UDP: the rest is lost).
    let mut body = body;
    let mut trimmed = false;
    if let Some(cl) = head.first("Content-Length", Some("l")) {
        match cl.parse::<usize>() {
            Ok(n) if n <= body.len() => {
                if n < body.len() {
                    body = &body[..n]; // RFC 3261 §18.3: ignore surplus bytes of a datagram
                    trimmed = true;
                }
            }
            _ => {
                return if is_ack {
                    Screened::Drop(RejectReason::BadContentLength)
                } else {
                    respond(400, "Bad Content-Length", RejectReason::BadContentLength, &[])
                };
            }
        }
    }
    if !is_ack && method != "CANCEL" {
        let unsupported: Vec<&str> = head
            .values("Require", None)
            .chain(head.values("Proxy-Require", None))
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !SUPPORTED_EXTENSIONS.iter().any(|s| s.eq_ignore_ascii_case(t)))
            .collect();
        if !unsupported.is_empty() {
            let extra = [format!("Unsupported: {}", unsupported.join(", "))];
            return respond(420, "Bad Extension", RejectReason::UnsupportedExtension, &extra);
        }
    }
    // The stack reads `;tag=` literally: white space around a From/To parameter's `;` and `=` (legal,
    // RFC 4475 §3.1.1.1) is taken out, which leaves the header equal under RFC 3261's comparison rules.
    let normalized = normalize_address_params(text);
    if trimmed || folded || normalized.is_some() {
        let text = normalized.as_deref().unwrap_or(text);
        let mut out = Vec::with_capacity(text.len() + 4 + body.len());
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
        return checked(out, &head, tag, is_ack);
    }
    // Last word: the stack's own parser must accept it, or it would vanish silently.
    if !stack_accepts(data) {
        return if is_ack {
            Screened::Drop(RejectReason::Unparseable)
        } else {
            respond(400, "Bad Request", RejectReason::Unparseable, &[])
        };
    }
    Screened::Pass
}

/// The header section with From/To parameters written without white space, if any had some.
fn normalize_address_params(text: &str) -> Option<String> {
    // Most messages need nothing: find the lines that change before copying any (this runs on every
    // datagram).
    let normalized: Vec<(usize, String)> = text
        .split("\r\n")
        .enumerate()
        .filter_map(|(index, line)| {
            let (name, value) = line.split_once(':')?;
            let n = name.trim();
            if !["from", "f", "to", "t"].iter().any(|h| n.eq_ignore_ascii_case(h)) {
                return None;
            }
            crate::syntax::normalize_params(value.trim()).map(|v| (index, format!("{n}: {v}")))
        })
        .collect();
    if normalized.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    for (index, line) in text.split("\r\n").enumerate() {
        if index > 0 {
            out.push_str("\r\n");
        }
        match normalized.iter().find(|(changed, _)| *changed == index) {
            Some((_, replacement)) => out.push_str(replacement),
            None => out.push_str(line),
        }
    }
    Some(out)
}

fn checked(out: Vec<u8>, head: &Head<'_>, tag: &str, is_ack: bool) -> Screened {
    if stack_accepts(&out) {
        return Screened::Rewrite(out);
    }
    if is_ack {
        return Screened::Drop(RejectReason::Unparseable);
    }
    match build_response(head, 400, "Bad Request", &[], tag) {
        Some(response) => Screened::Respond {
            response,
            reason: RejectReason::Unparseable,
        },
        None => Screened::Drop(RejectReason::Unparseable),
    }
}

fn finish(data: &[u8], folded: bool, unfolded: &str, body: &[u8], _head: &Head<'_>) -> Screened {
    if folded {
        let mut out = Vec::with_capacity(unfolded.len() + 4 + body.len());
        out.extend_from_slice(unfolded.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
        out.extend_from_slice(body);
        return Screened::Rewrite(out);
    }
    if !stack_accepts(data) {
        return Screened::Drop(RejectReason::Unparseable);
    }
    Screened::Pass
}

/// Whether the stack's parser (rsipstack `=0.7.14`, pinned) accepts `data`, without building the
/// message: the screen must know (a message the stack refuses vanishes without an answer), and the
/// stack parses every datagram again anyway, so parsing here too cost a second full parse with its
/// allocations per message. That parser fails only on these points (`sip/parser.rs`): no CRLF CRLF,
/// an empty or non-UTF-8 start line, and the start line's parts; header lines are kept as text and
/// never fail. `tests::stack_accepts_agrees_with_the_stacks_parser` holds the two equal; a new
/// rsipstack version must pass it before the pin moves.
fn stack_accepts(data: &[u8]) -> bool {
    use rsipstack::sip::{Method, StatusCode, Version, parse_uri};
    let Some(sep) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let header = &data[..sep];
    if header.is_empty() {
        return false;
    }
    let line = match header.iter().position(|b| *b == b'\n') {
        Some(lf) if lf > 0 && header[lf - 1] == b'\r' => &header[..lf - 1],
        Some(lf) => &header[..lf],
        None => header,
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return false;
    };
    let mut parts = line.splitn(3, [' ', '\t']);
    let (Some(first), Some(second)) = (parts.next(), parts.next()) else {
        return false;
    };
    if line.starts_with("SIP/") {
        let reason = parts.next().unwrap_or("").trim();
        first.parse::<Version>().is_ok()
            && second
                .parse::<u16>()
                .is_ok_and(|code| StatusCode::try_from((code, reason)).is_ok())
    } else {
        let Some(version) = parts.next() else {
            return false;
        };
        first.parse::<Method>().is_ok()
            && parse_uri(second.trim()).is_ok()
            && version.trim().parse::<Version>().is_ok()
    }
}

fn build_from_text(text: &str, code: u16, phrase: &str, limits: ScreenLimits, tag: &str) -> Option<Vec<u8>> {
    let head = lines_to_head_lenient(text, limits.max_headers);
    if head.start_line.starts_with("SIP/2.0") || head.start_line.starts_with("ACK ") {
        return None;
    }
    build_response(&head, code, phrase, &[], tag)
}

/// Like [`lines_to_head`] but skips lines it cannot read (used when answering broken input).
fn lines_to_head_lenient(text: &str, max_headers: usize) -> Head<'_> {
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let start_line = lines.next().unwrap_or_default();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim(), v.trim()))
        .filter(|(n, v)| !n.is_empty() && n.bytes().all(is_token_byte) && !v.contains('\u{FFFD}'))
        .take(max_headers)
        .collect();
    Head { start_line, headers }
}

/// Builds a stateless response from the request's own lines; None when a needed line is missing.
fn build_response(head: &Head<'_>, code: u16, phrase: &str, extra: &[String], tag: &str) -> Option<Vec<u8>> {
    let vias = head.raw_lines("Via", Some("v"));
    let from = head.first("From", Some("f"))?;
    let to = head.first("To", Some("t"))?;
    let call_id = head.first("Call-ID", Some("i"))?;
    let cseq = head.first("CSeq", None)?;
    if vias.is_empty() {
        return None;
    }
    let mut out = format!("SIP/2.0 {code} {phrase}\r\n");
    for (_, v) in vias {
        out.push_str("Via: ");
        out.push_str(v);
        out.push_str("\r\n");
    }
    out.push_str("From: ");
    out.push_str(from);
    out.push_str("\r\nTo: ");
    out.push_str(to);
    if !crate::syntax::has_tag(to) {
        out.push_str(";tag=");
        out.push_str(tag);
    }
    out.push_str("\r\nCall-ID: ");
    out.push_str(call_id);
    out.push_str("\r\nCSeq: ");
    out.push_str(cseq);
    out.push_str("\r\n");
    for e in extra {
        out.push_str(e);
        out.push_str("\r\n");
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    Some(out.into_bytes())
}

/// Where a datagram came from, as the guard sees it.
pub fn is_request(data: &[u8]) -> bool {
    !data.starts_with(b"SIP/2.0") && data.iter().any(|b| !b.is_ascii_whitespace())
}

/// The UDP socket the SIP stack reads from: it screens every datagram and answers or drops the bad
/// ones itself, so the stack only ever sees messages it can handle.
pub struct GuardedUdpSocket {
    socket: tokio::net::UdpSocket,
    limits: ScreenLimits,
    sources: Arc<SourceLimiter>,
    metrics: GatewayMetrics,
}

impl GuardedUdpSocket {
    /// Wraps a bound socket.
    pub fn new(
        socket: tokio::net::UdpSocket,
        limits: ScreenLimits,
        sources: Arc<SourceLimiter>,
        metrics: GatewayMetrics,
    ) -> Self {
        Self {
            socket,
            limits,
            sources,
            metrics,
        }
    }
}

#[async_trait::async_trait]
impl rsipstack::platform::net::UdpSocket for GuardedUdpSocket {
    async fn recv_from(&self, buf: &mut [u8]) -> rsipstack::Result<(usize, SocketAddr)> {
        // Datagrams land straight in the stack's buffer: no copy and no allocation on the way in. One
        // that fills the buffer may have been cut short by the kernel, so the largest message we take
        // is one byte shorter than the buffer.
        let limits = ScreenLimits {
            max_message_bytes: self.limits.max_message_bytes.min(buf.len().saturating_sub(1)),
            ..self.limits
        };
        loop {
            let (len, src) = self.socket.recv_from(buf).await?;
            let data = &buf[..len];
            if is_request(data)
                && !self
                    .sources
                    .allow(src.ip(), domain::Timestamp::now_utc().as_millis())
            {
                self.metrics.rejected(RejectReason::RateLimited);
                continue;
            }
            let tag = crate::random_token(10);
            match screen(data, limits, &tag) {
                Screened::Pass => return Ok((len, src)),
                Screened::Rewrite(bytes) if bytes.len() <= buf.len() => {
                    buf[..bytes.len()].copy_from_slice(&bytes);
                    return Ok((bytes.len(), src));
                }
                Screened::Rewrite(_) => self.metrics.rejected(RejectReason::Oversized),
                Screened::Respond { response, reason } => {
                    self.metrics.rejected(reason);
                    let _ = self.socket.send_to(&response, src).await;
                }
                Screened::Drop(reason) => self.metrics.rejected(reason),
            }
        }
    }

    async fn send_to(&self, buf: &[u8], addr: SocketAddr) -> rsipstack::Result<usize> {
        Ok(self.socket.send_to(buf, addr).await?)
    }

    fn local_addr(&self) -> rsipstack::Result<SocketAddr> {
        Ok(self.socket.local_addr()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OPTIONS: &str = "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\nTo: <sip:gw@127.0.0.1>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    fn run(msg: &str) -> Screened {
        screen(msg.as_bytes(), ScreenLimits::default(), "t1")
    }

    fn status(s: &Screened) -> Option<u16> {
        match s {
            Screened::Respond { response, .. } => std::str::from_utf8(&response[8..11]).ok()?.parse().ok(),
            _ => None,
        }
    }

    #[test]
    fn well_formed_passes() {
        assert_eq!(run(OPTIONS), Screened::Pass);
    }

    #[test]
    fn missing_dialog_headers_are_dropped_bad_ones_get_400_with_copied_headers() {
        for line in [
            "Call-ID: c1\r\n",
            "CSeq: 1 OPTIONS\r\n",
            "To: <sip:gw@127.0.0.1>\r\n",
        ] {
            assert_eq!(
                run(&OPTIONS.replace(line, "")),
                Screened::Drop(RejectReason::MissingHeader),
                "{line}"
            );
        }
        let s = run(&OPTIONS.replace("From: <sip:a@x>;tag=1", "From: <sip:a@x>"));
        assert_eq!(status(&s), Some(400));
        if let Screened::Respond { response, .. } = s {
            let text = String::from_utf8(response).unwrap();
            assert!(text.starts_with("SIP/2.0 400 Missing From tag\r\n"), "{text}");
            assert!(text.contains("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1"));
            assert!(text.contains("To: <sip:gw@127.0.0.1>;tag=t1"));
            assert!(text.contains("CSeq: 1 OPTIONS"));
        }
    }

    #[test]
    fn missing_via_is_dropped() {
        assert_eq!(
            run(&OPTIONS.replace("Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n", "")),
            Screened::Drop(RejectReason::MissingHeader)
        );
    }

    #[test]
    fn unknown_method_gets_501() {
        let msg = OPTIONS
            .replace("OPTIONS sip", "FOOBAR sip")
            .replace("1 OPTIONS", "1 FOOBAR");
        assert_eq!(status(&run(&msg)), Some(501));
    }

    #[test]
    fn cseq_method_mismatch_gets_400() {
        assert_eq!(status(&run(&OPTIONS.replace("1 OPTIONS", "1 INVITE"))), Some(400));
        assert_eq!(
            status(&run(&OPTIONS.replace("1 OPTIONS", "99999999999 OPTIONS"))),
            Some(400)
        );
    }

    #[test]
    fn content_length_larger_than_body_gets_400_and_surplus_is_trimmed() {
        assert_eq!(
            status(&run(&OPTIONS.replace("Content-Length: 0", "Content-Length: 50"))),
            Some(400)
        );
        let with_surplus = format!("{}abc", OPTIONS);
        assert!(matches!(run(&with_surplus), Screened::Rewrite(_)));
        assert_eq!(
            status(&run(&OPTIONS.replace("Content-Length: 0", "Content-Length: x"))),
            Some(400)
        );
    }

    #[test]
    fn require_unknown_extension_gets_420_with_unsupported() {
        let msg = OPTIONS.replace(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRequire: foo, bar\r\n",
        );
        let s = run(&msg);
        assert_eq!(status(&s), Some(420));
        if let Screened::Respond { response, .. } = s {
            assert!(
                String::from_utf8(response)
                    .unwrap()
                    .contains("Unsupported: foo, bar")
            );
        }
    }

    #[test]
    fn max_forwards_zero_gets_483() {
        assert_eq!(
            status(&run(&OPTIONS.replace("Max-Forwards: 70", "Max-Forwards: 0"))),
            Some(483)
        );
    }

    #[test]
    fn folded_header_is_unfolded() {
        let msg = OPTIONS.replace("From: <sip:a@x>;tag=1\r\n", "From: <sip:a@x>\r\n ;tag=1\r\n");
        match run(&msg) {
            Screened::Rewrite(bytes) => {
                let text = String::from_utf8(bytes).unwrap();
                assert!(text.contains("From: <sip:a@x>;tag=1\r\n"), "{text}");
            }
            other => panic!("expected rewrite, got {other:?}"),
        }
    }

    #[test]
    fn compact_headers_are_understood() {
        let msg = "OPTIONS sip:gw@127.0.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK2\r\nf: <sip:a@x>;tag=1\r\nt: <sip:gw@127.0.0.1>\r\ni: c2\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n";
        assert!(!matches!(run(msg), Screened::Drop(_)), "{:?}", run(msg));
    }

    #[test]
    fn truncated_and_garbage_are_dropped_and_oversized_gets_513() {
        assert_eq!(run(&OPTIONS[..60]), Screened::Drop(RejectReason::Truncated));
        assert!(matches!(
            screen(&[0xff, 0x00, 0x13, 0x37], ScreenLimits::default(), "t"),
            Screened::Drop(_)
        ));
        let big = OPTIONS.replace(
            "Max-Forwards: 70\r\n",
            &format!("Max-Forwards: 70\r\nX-Pad: {}\r\n", "a".repeat(9000)),
        );
        assert_eq!(status(&run(&big)), Some(513));
        // Cut short by the receive buffer (no end of headers): still 513, built from whole lines only.
        let cut = format!(
            "{}X-Pad: {}",
            OPTIONS.replace("Content-Length: 0\r\n\r\n", ""),
            "b".repeat(9000)
        );
        match run(&cut[..8191]) {
            Screened::Respond {
                response,
                reason: RejectReason::Oversized,
            } => {
                let text = String::from_utf8(response).unwrap();
                assert!(text.starts_with("SIP/2.0 513 "), "{text}");
                assert!(text.contains("CSeq: 1 OPTIONS\r\n"), "{text}");
            }
            other => panic!("expected 513, got {other:?}"),
        }
    }

    #[test]
    fn non_utf8_header_gets_400() {
        let mut bytes = OPTIONS
            .replace("Max-Forwards: 70\r\n", "Max-Forwards: 70\r\nSubject: \u{1}X\r\n")
            .into_bytes();
        let pos = bytes.iter().position(|b| *b == 1).unwrap();
        bytes[pos] = 0xff;
        let s = screen(&bytes, ScreenLimits::default(), "t");
        assert_eq!(status(&s), Some(400), "{s:?}");
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = screen(&data, ScreenLimits::default(), "t");
        }

        #[test]
        fn stack_accepts_agrees_with_the_stacks_parser(
            base in 0usize..4,
            edits in proptest::collection::vec((0usize..400, any::<u8>()), 0..4),
            cut in 0usize..420,
            noise in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let starts = [
                OPTIONS.to_string(),
                OPTIONS.replacen("OPTIONS sip:gw@127.0.0.1 SIP/2.0", "SIP/2.0 200 OK", 1),
                OPTIONS.replacen("OPTIONS sip:gw@127.0.0.1 SIP/2.0", "SIP/2.0 999 Whatever", 1),
                OPTIONS.replacen(' ', "\t", 2),
            ];
            let mut data = starts[base].as_bytes().to_vec();
            // Mutations cluster on the start line, where the parser can fail.
            for (pos, byte) in edits {
                let len = data.len();
                let p = if pos < 200 { pos % 40 } else { pos };
                data[p % len] = byte;
            }
            data.truncate(cut.max(1).min(data.len()));
            data.extend_from_slice(&noise);
            prop_assert_eq!(
                stack_accepts(&data),
                rsipstack::sip::SipMessage::try_from(data.as_slice()).is_ok(),
                "{:?}", String::from_utf8_lossy(&data)
            );
        }

        #[test]
        fn stack_accepts_agrees_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(
                stack_accepts(&data),
                rsipstack::sip::SipMessage::try_from(data.as_slice()).is_ok()
            );
        }

        #[test]
        fn never_panics_on_mutated_requests(pos in 0usize..300, byte in any::<u8>(), cut in 0usize..320) {
            let mut data = OPTIONS.as_bytes().to_vec();
            let p = pos % data.len();
            data[p] = byte;
            data.truncate(cut.max(1).min(data.len()));
            let _ = screen(&data, ScreenLimits::default(), "t");
        }
    }
}
