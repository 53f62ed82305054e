//! The web edge's own defences, in front of every route: who the client is (its address and whether
//! it reached us over HTTPS, believing a reverse proxy's `X-Forwarded-*` headers only from the
//! configured proxy addresses), security headers on every response, and the Origin check on every
//! request a browser's cookie authorises that changes something (POST, PUT, PATCH, DELETE and the
//! WebSocket upgrades) or that logs in.
//!
//! The decisions are pure functions of the request's facts ([`resolve_client`], [`origin_allowed`],
//! [`safe_next`]); the middleware ([`guard`]) only applies them. See `docs/security.md`.

use crate::{ApiError, Credential, request_token};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The Content-Security-Policy of every response: our own scripts, styles and sockets only; no
/// inline script or style, no plugins, no framing, forms post only to us.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; media-src 'self' blob:; form-action 'self'; base-uri 'none'; \
frame-ancestors 'none'";

/// How long browsers remember to use HTTPS only (sent on HTTPS responses).
const HSTS: &str = "max-age=31536000";

/// The connection as the listener saw it: the peer's address and whether TLS was ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    pub tls: bool,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Peer {
            addr: *stream.remote_addr(),
            tls: false,
        }
    }
}

/// The client as the routes see it: its address (for limits per source) and whether its browser
/// talks HTTPS to us (for `Secure` cookies and HSTS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Client {
    pub ip: IpAddr,
    pub https: bool,
}

/// What the edge trusts and allows, from `[http]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeConfig {
    /// Reverse proxies whose `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Forwarded-Host` are
    /// believed. Nobody else's are.
    pub trusted_proxies: Vec<IpAddr>,
    /// Origins (`https://desk.example.com`) allowed besides the request's own host.
    pub allowed_origins: Vec<String>,
}

/// Who the client is. Behind a trusted proxy the client is the last address in `X-Forwarded-For`
/// that is not itself a trusted proxy, and the scheme is the proxy's `X-Forwarded-Proto`; from any
/// other peer those headers are ignored (anyone can send them).
pub fn resolve_client(peer: Peer, headers: &HeaderMap, trusted: &[IpAddr]) -> Client {
    let direct = Client {
        ip: peer.addr.ip(),
        https: peer.tls,
    };
    if !trusted.contains(&peer.addr.ip()) {
        return direct;
    }
    let https = match last_header(headers, "x-forwarded-proto") {
        Some(proto) => proto.eq_ignore_ascii_case("https"),
        None => peer.tls,
    };
    // Walk the chain from the nearest hop: the first address not a trusted proxy is the client.
    let mut ip = peer.addr.ip();
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(addr) if trusted.contains(&addr) => ip = addr,
            Ok(addr) => {
                ip = addr;
                break;
            }
            // A garbled entry: stop at the last address we could read.
            Err(_) => break,
        }
    }
    Client { ip, https }
}

/// The last value of a header that a proxy may have appended to.
fn last_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .next_back()
}

/// The host the browser addressed: `Host`, or a trusted proxy's `X-Forwarded-Host`.
fn public_host<'a>(headers: &'a HeaderMap, peer: Peer, trusted: &[IpAddr]) -> Option<&'a str> {
    if trusted.contains(&peer.addr.ip())
        && let Some(host) = last_header(headers, "x-forwarded-host")
    {
        return Some(host);
    }
    headers.get(header::HOST).and_then(|v| v.to_str().ok())
}

/// `host[:port]` with the scheme's default port made explicit and the host in lower case.
fn authority_with_port(authority: &str, https: bool) -> String {
    let authority = authority.trim().to_ascii_lowercase();
    // The port is what follows a ':' after the host (after the brackets of an IPv6 address).
    let host_end = authority.rfind(']').map_or(0, |i| i + 1);
    if authority[host_end..].contains(':') {
        authority
    } else {
        format!("{authority}:{}", if https { 443 } else { 80 })
    }
}

/// Whether a browser request carrying `origin` comes from one of our own pages: the same scheme and
/// host (and port) the client used to reach us, or an origin the operator allowed.
pub fn origin_allowed(origin: &str, client_https: bool, host: Option<&str>, allowed: &[String]) -> bool {
    let origin = origin.trim();
    if allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
    {
        return true;
    }
    let Some(host) = host else { return false };
    let (scheme_https, rest) = if let Some(rest) = origin.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = origin.strip_prefix("http://") {
        (false, rest)
    } else {
        // `null` (sandboxed frames, data: pages) and every other scheme.
        return false;
    };
    if scheme_https != client_https || rest.is_empty() || rest.contains(['/', '@', '\\', '?', '#']) {
        return false;
    }
    authority_with_port(rest, scheme_https) == authority_with_port(host, client_https)
}

/// Where the login page may send the browser afterwards: only a path of this site (`/agent`,
/// `/wallboard?x=1`). Anything that a browser could read as another origin or as script is refused:
/// `javascript:`/`data:` URLs, `//host` and `/\host` (both mean another host to a browser), any
/// backslash, control character or space (browsers drop tabs and newlines inside URLs, so `/\t/host`
/// becomes `//host`), and non-ASCII text.
pub fn safe_next(raw: &str) -> Option<&str> {
    const MAX_LEN: usize = 512;
    let bytes = raw.as_bytes();
    let single_slash = bytes.first() == Some(&b'/') && !matches!(bytes.get(1), Some(b'/' | b'\\'));
    let plain = bytes.iter().all(|b| (0x21..=0x7e).contains(b) && *b != b'\\');
    (raw.len() <= MAX_LEN && single_slash && plain).then_some(raw)
}

/// Shared state of the edge middleware.
#[derive(Debug, Clone, Default)]
pub struct Edge {
    pub config: Arc<EdgeConfig>,
}

/// Whether this request is one a browser's ambient cookie could be abused for: it changes something
/// or opens a socket.
fn state_changing(method: &Method, headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) || upgrade
}

/// Resolves the client, refuses cross-site requests that a cookie would authorise (and cross-site
/// logins), and adds the security headers to whatever the route answers.
pub async fn guard(
    State(edge): State<Edge>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    mut request: Request,
    next: Next,
) -> Response {
    let config = &edge.config;
    let client = resolve_client(peer, request.headers(), &config.trusted_proxies);
    let headers = request.headers();
    let by_cookie = matches!(request_token(headers), Some((_, Credential::Cookie)));
    let is_login = request.uri().path() == "/api/v1/login";
    if state_changing(request.method(), headers) && (by_cookie || is_login) {
        let host = public_host(headers, peer, &config.trusted_proxies);
        let allowed = match headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
            Some(origin) => origin_allowed(origin, client.https, host, &config.allowed_origins),
            // Browsers send Origin on every POST and socket; a cookie without one is not from a
            // page of ours. A login without either comes from a script or tool, not a forged form.
            None => !by_cookie,
        };
        if !allowed {
            tracing::info!(method = %request.method(), path = request.uri().path(), "cross-site request refused");
            let refusal = ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "cross_site",
                "this request must come from a page of this site",
            );
            return with_security_headers(refusal.into_response(), client.https, false);
        }
    }
    let api = request.uri().path().starts_with("/api/");
    request.extensions_mut().insert(client);
    with_security_headers(next.run(request).await, client.https, api)
}

fn with_security_headers(mut response: Response, https: bool, api: bool) -> Response {
    let h = response.headers_mut();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    ];
    for (name, value) in fixed {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "permissions-policy",
        HeaderValue::from_static("microphone=(self), camera=(), geolocation=(), payment=()"),
    );
    if https {
        h.insert(header::STRICT_TRANSPORT_SECURITY, HeaderValue::from_static(HSTS));
    }
    if api {
        // Customer records and tokens are not for shared caches or the back button.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The session cookie's attributes: always HttpOnly and SameSite=Strict, `Secure` whenever the
/// browser reached us over HTTPS (directly or through a trusted proxy).
pub fn cookie_attributes(client: &Client) -> &'static str {
    if client.https {
        "Path=/; HttpOnly; SameSite=Strict; Secure"
    } else {
        "Path=/; HttpOnly; SameSite=Strict"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().expect("header"));
        }
        h
    }

    fn peer(addr: &str, tls: bool) -> Peer {
        Peer {
            addr: addr.parse().expect("addr"),
            tls,
        }
    }

    #[test]
    fn next_accepts_only_paths_of_this_site() {
        for good in ["/agent", "/wallboard?x=1#top", "/a/b/../c", "/%2F%2Fevil.example"] {
            assert_eq!(safe_next(good), Some(good), "{good}");
        }
        for bad in [
            "",
            "agent",
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "//evil.example",
            "///evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "\\/evil.example",
            "/a\\b",
            "http://evil.example/",
            "https:evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            " /agent",
            "/agent two",
            "/\u{ff0f}evil.example",
            &format!("/{}", "a".repeat(600)),
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
    }

    proptest! {
        /// Whatever is accepted, a browser's URL parser resolves it to this origin.
        #[test]
        fn an_accepted_next_never_leaves_the_origin(raw in "\\PC{0,40}|[/\\\\:a-z.%\t]{0,12}") {
            let base = url::Url::parse("https://desk.example:8443/").expect("base");
            if let Some(path) = safe_next(&raw) {
                let target = base.join(path).expect("joins");
                prop_assert_eq!(target.origin(), base.origin());
            }
        }

        #[test]
        fn the_checks_never_panic(raw in "\\PC{0,60}", host in "\\PC{0,20}") {
            let _ = safe_next(&raw);
            let _ = origin_allowed(&raw, true, Some(&host), &[]);
            let _ = origin_allowed(&raw, false, None, &[]);
        }
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.5".parse().expect("ip");
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.9, 10.0.0.5"),
            ("x-forwarded-proto", "https"),
        ]);
        // From a stranger: ignored.
        let c = resolve_client(peer("198.51.100.7:5000", false), &h, &[proxy]);
        assert_eq!(
            c,
            Client {
                ip: "198.51.100.7".parse().expect("ip"),
                https: false
            }
        );
        // From the proxy: the client is the nearest untrusted hop, the scheme the proxy's.
        let c = resolve_client(peer("10.0.0.5:5000", false), &h, &[proxy]);
        assert_eq!(
            c,
            Client {
                ip: "203.0.113.9".parse().expect("ip"),
                https: true
            }
        );
        // A client cannot pose as another by prepending an address: the last untrusted hop counts.
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-for", "203.0.113.9")]);
        let c = resolve_client(peer("10.0.0.5:5000", false), &h, &[proxy]);
        assert_eq!(c.ip, "203.0.113.9".parse::<IpAddr>().expect("ip"));
        // Our own TLS is HTTPS whatever anyone says.
        let c = resolve_client(peer("198.51.100.7:5000", true), &HeaderMap::new(), &[]);
        assert!(c.https);
    }

    #[test]
    fn origins_must_match_scheme_host_and_port() {
        let host = Some("127.0.0.1:8080");
        assert!(origin_allowed("http://127.0.0.1:8080", false, host, &[]));
        assert!(!origin_allowed("https://127.0.0.1:8080", false, host, &[]));
        assert!(!origin_allowed("http://127.0.0.1:8081", false, host, &[]));
        assert!(!origin_allowed("http://evil.example", false, host, &[]));
        assert!(!origin_allowed("null", false, host, &[]));
        assert!(!origin_allowed(
            "http://127.0.0.1:8080@evil.example",
            false,
            host,
            &[]
        ));
        assert!(!origin_allowed("http://127.0.0.1:8080", false, None, &[]));
        // Default ports written or not.
        assert!(origin_allowed(
            "https://desk.example",
            true,
            Some("desk.example:443"),
            &[]
        ));
        assert!(origin_allowed(
            "https://Desk.Example:443",
            true,
            Some("desk.example"),
            &[]
        ));
        assert!(origin_allowed(
            "http://[::1]:8080",
            false,
            Some("[::1]:8080"),
            &[]
        ));
        assert!(origin_allowed("http://[::1]", false, Some("[::1]:80"), &[]));
        // Configured extra origins.
        let extra = vec!["https://desk.example.com".to_string()];
        assert!(origin_allowed("https://desk.example.com", false, host, &extra));
    }

    #[test]
    fn cookies_are_secure_over_https() {
        let ip = "127.0.0.1".parse().expect("ip");
        assert!(cookie_attributes(&Client { ip, https: true }).ends_with("Secure"));
        assert!(!cookie_attributes(&Client { ip, https: false }).contains("Secure"));
    }
}
