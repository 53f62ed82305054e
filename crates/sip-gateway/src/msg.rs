//! Small helpers over the SIP stack's message types: header lookup by name, building responses with
//! our To tag, and in-dialog requests.

use rsipstack::sip::headers::make_header;
use rsipstack::sip::prelude::*;
use rsipstack::sip::{Header, Request, Response, StatusCode};
use rsipstack::transaction::endpoint::EndpointInner;

/// Methods we announce in Allow.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, REFER, NOTIFY";

/// A header built from its name and value text.
pub fn header(name: &str, value: impl Into<String>) -> Header {
    make_header(name, value.into())
}

/// The value of the first header called `name` (case-insensitive), if any.
pub fn value_of(headers: &rsipstack::sip::Headers, name: &str) -> Option<String> {
    headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value().to_string())
}

/// All values of headers called `name`, in order.
pub fn values_of(headers: &rsipstack::sip::Headers, name: &str) -> Vec<String> {
    headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case(name))
        .map(|h| h.value().to_string())
        .collect()
}

/// Call-ID text of a message.
pub fn call_id<M: HeadersExt>(m: &M) -> Option<String> {
    m.call_id_header().ok().map(|c| c.value().to_string())
}

/// To-tag of a message, if present.
pub fn to_tag<M: HeadersExt>(m: &M) -> Option<String> {
    m.to_header()
        .ok()
        .and_then(|t| t.tag().ok().flatten())
        .map(|t| t.to_string())
}

/// A response to `req` whose To carries `tag` (for finals and provisionals alike), with optional body.
pub fn response(
    endpoint: &EndpointInner,
    req: &Request,
    code: u16,
    tag: Option<&str>,
    body: Option<(&str, Vec<u8>)>,
) -> Response {
    let (content_type, body) = match body {
        Some((ct, b)) => (Some(ct), Some(b)),
        None => (None, None),
    };
    let mut resp = endpoint.make_response(req, StatusCode::from(code), body);
    if let Some(tag) = tag {
        // The request's To, byte for byte, with our tag added unless it has one (RFC 4475 §3.1.1.3:
        // re-rendering the URI would escape its %-escapes again; §3.1.1.1: `; tag = x` is a tag).
        for h in resp.headers.iter_mut() {
            if let Header::To(to) = h {
                let raw = crate::syntax::restore_user_escapes(to.value());
                if !crate::syntax::has_tag(&raw) {
                    *h = header("To", format!("{raw};tag={tag}"));
                }
            }
        }
    }
    if let Some(ct) = content_type {
        resp.headers.push(header("Content-Type", ct));
    }
    resp
}

/// The status code number of a response.
pub fn code(resp: &Response) -> u16 {
    resp.status_code.code()
}
