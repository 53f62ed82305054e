//! The IVR webhooks' client: POST a JSON body to an `http://` or `https://` URL and read a JSON
//! reply, within a deadline: hosts the operator configured in a flow, or a path on this node's own
//! HTTP server (`/demo/balance`), which alone is sent the node's service token: a flow can never hand
//! the token to another host. HTTPS trusts the system's roots and, if configured, the operator's CA
//! file; nothing else. The HTTP itself is `reqwest`'s (a maintained client: chunked replies,
//! keep-alive, limits), not ours.

use std::sync::OnceLock;
use std::time::Duration;

/// Why a webhook gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookError {
    BadUrl,
    Unreachable,
    Timeout,
    Status(u16),
    BadReply,
}

/// Replies larger than this are refused (a flow's webhook answers with a few fields).
const MAX_REPLY_BYTES: usize = 1 << 20;

/// A webhook client: it keeps connections to the flows' hosts alive between calls, follows no
/// redirect, and over HTTPS trusts the system's roots plus `extra_roots_pem` (an operator's CA
/// file, PEM, for billing systems on a private CA).
pub fn client(extra_roots_pem: Option<&[u8]>) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none());
    if let Some(pem) = extra_roots_pem {
        let roots =
            reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("CA certificates: {e}"))?;
        if roots.is_empty() {
            return Err("CA certificates: no certificate in the file".into());
        }
        for root in roots {
            builder = builder.add_root_certificate(root);
        }
    }
    builder.build().map_err(|e| format!("webhook client: {e}"))
}

/// The client used when none was configured: the system's roots only.
pub fn default_client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| client(None).unwrap_or_else(|_| reqwest::Client::new()))
}

/// This node's own HTTP server, for webhooks whose URL is a path: where it listens and the
/// service token it accepts from the node's IVR (demo mode).
#[derive(Clone)]
pub struct OwnHttp {
    base: reqwest::Url,
    token: Option<String>,
}

impl OwnHttp {
    /// The server listening on `listen` (an unspecified address is reached on loopback).
    pub fn new(listen: std::net::SocketAddr, token: Option<String>) -> Self {
        let ip = match listen.ip() {
            std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
            ip => ip,
        };
        let base = std::net::SocketAddr::new(ip, listen.port());
        let base = reqwest::Url::parse(&format!("http://{base}/")).unwrap_or_else(|_| {
            // A socket address always prints as a valid authority; keep a harmless fallback.
            reqwest::Url::parse("http://127.0.0.1/").expect("a literal URL")
        });
        Self { base, token }
    }
}

impl std::fmt::Debug for OwnHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnHttp")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<secret>"))
            .finish()
    }
}

/// Where a flow's URL goes, and the token sent with it (only to this node's own server).
fn resolve(url: &str, own: Option<&OwnHttp>) -> Result<(reqwest::Url, Option<String>), WebhookError> {
    if url.starts_with('/') && !url.starts_with("//") {
        let own = own.ok_or(WebhookError::BadUrl)?;
        let joined = own.base.join(url).map_err(|_| WebhookError::BadUrl)?;
        // `join` of a path keeps the scheme and authority; check it anyway, the token rides on it.
        if joined.origin() != own.base.origin() {
            return Err(WebhookError::BadUrl);
        }
        return Ok((joined, own.token.clone()));
    }
    Ok((parse_url(url)?, None))
}

/// Checks the URL: `http://host[:port]/path` or `https://host[:port]/path` only.
fn parse_url(url: &str) -> Result<reqwest::Url, WebhookError> {
    // The URL parser would read `http:///y` as host `y`; a flow author meant no host at all.
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or(WebhookError::BadUrl)?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(WebhookError::BadUrl);
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| WebhookError::BadUrl)?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(WebhookError::BadUrl);
    }
    Ok(parsed)
}

/// POSTs `body` to `url` (absolute, or a path on `own`) with `client` and returns the JSON reply.
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    own: Option<&OwnHttp>,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, WebhookError> {
    let (url, token) = resolve(url, own)?;
    let work = async {
        let mut request = client
            .post(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let reply = request.send().await.map_err(|e| {
            if e.is_timeout() {
                WebhookError::Timeout
            } else {
                WebhookError::Unreachable
            }
        })?;
        let status = reply.status();
        if !status.is_success() {
            return Err(WebhookError::Status(status.as_u16()));
        }
        if reply.content_length().is_some_and(|n| n > MAX_REPLY_BYTES as u64) {
            return Err(WebhookError::BadReply);
        }
        let bytes = reply.bytes().await.map_err(|_| WebhookError::BadReply)?;
        if bytes.len() > MAX_REPLY_BYTES {
            return Err(WebhookError::BadReply);
        }
        serde_json::from_slice(&bytes).map_err(|_| WebhookError::BadReply)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| WebhookError::Timeout)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The address of a [`serve_once`] server.
    fn addr_of(url: &str) -> std::net::SocketAddr {
        url.trim_start_matches("http://")
            .trim_end_matches("/hook")
            .parse()
            .unwrap()
    }

    /// An empty JSON body to `url` with the default client, within 5 s.
    async fn post(url: &str, own: Option<&OwnHttp>) -> Result<serde_json::Value, WebhookError> {
        post_json(
            default_client(),
            url,
            own,
            &serde_json::json!({}),
            Duration::from_secs(5),
        )
        .await
    }

    #[test]
    fn only_http_and_https_urls_with_a_host_are_taken() {
        assert!(parse_url("http://127.0.0.1:8089/balance").is_ok());
        assert!(parse_url("https://billing.example/balance").is_ok());
        assert_eq!(parse_url("https:///y"), Err(WebhookError::BadUrl));
        assert_eq!(parse_url("ftp://x/y"), Err(WebhookError::BadUrl));
        assert_eq!(parse_url("http:///y"), Err(WebhookError::BadUrl));
        assert_eq!(parse_url("not a url"), Err(WebhookError::BadUrl));
    }

    /// A local HTTP server answering one request with `reply`; returns its address and the request.
    async fn serve_once(reply: &'static [u8]) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut buf = vec![0u8; 4096];
            // Read the head and the body its Content-Length announces.
            loop {
                let n = s.read(&mut buf).await.unwrap();
                request.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&request).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if body.len() >= length {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            s.write_all(reply).await.unwrap();
            String::from_utf8_lossy(&request).to_string()
        });
        (format!("http://{addr}/hook"), task)
    }

    #[tokio::test]
    async fn posts_json_to_a_local_server_and_reads_its_json_reply() {
        let (url, server) = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
        )
        .await;
        let reply = post_json(
            default_client(),
            &url,
            None,
            &serde_json::json!({"account": "42"}),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(reply.unwrap()["ok"], true);
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /hook HTTP/1.1"), "{request}");
        assert!(
            request
                .to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{request}"
        );
        assert!(request.ends_with("{\"account\":\"42\"}"), "{request}");
    }

    #[tokio::test]
    async fn chunked_replies_errors_and_garbage_are_told_apart() {
        let (url, _) = serve_once(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(post(&url, None).await.unwrap()["a"], 1);
        let (url, _) = serve_once(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n").await;
        assert_eq!(post(&url, None).await, Err(WebhookError::Status(500)));
        let (url, _) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ngarbage").await;
        assert_eq!(post(&url, None).await, Err(WebhookError::BadReply));
        let unreachable = post("http://127.0.0.1:9/x", None).await;
        assert!(matches!(
            unreachable,
            Err(WebhookError::Unreachable | WebhookError::Timeout)
        ));
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            // Keep the connection open without answering until the test is over.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let reply = post_json(
            default_client(),
            &format!("http://{addr}/slow"),
            None,
            &serde_json::json!({}),
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(reply, Err(WebhookError::Timeout));
    }

    #[tokio::test]
    async fn a_path_goes_to_this_nodes_own_server_with_its_token_and_no_other_host_gets_it() {
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"balance\":7}";
        let (url, server) = serve_once(reply).await;
        let listen = addr_of(&url);
        let own = OwnHttp::new(listen, Some("s3cret".into()));
        let got = post("/demo/balance", Some(&own)).await;
        assert_eq!(got.unwrap()["balance"], 7);
        let request = server.await.unwrap();
        assert!(request.starts_with("POST /demo/balance HTTP/1.1"), "{request}");
        assert!(
            request
                .to_ascii_lowercase()
                .contains("authorization: bearer s3cret"),
            "{request}"
        );

        // An absolute URL, even to the same server, is the flow author's: no token.
        let (url, server) = serve_once(reply).await;
        let listen = addr_of(&url);
        let own = OwnHttp::new(listen, Some("s3cret".into()));
        assert!(post(&url, Some(&own)).await.is_ok());
        let request = server.await.unwrap();
        assert!(
            !request.to_ascii_lowercase().contains("authorization"),
            "{request}"
        );
        assert!(
            !format!("{own:?}").contains("s3cret"),
            "the token stays out of Debug"
        );

        // A path without a node server, or one that names another host, is refused.
        assert_eq!(post("/demo/balance", None).await, Err(WebhookError::BadUrl));
        assert_eq!(
            resolve("//elsewhere.example/x", Some(&own)).map(|(u, _)| u.to_string()),
            Err(WebhookError::BadUrl)
        );
        let unspecified = OwnHttp::new("0.0.0.0:8080".parse().unwrap(), None);
        assert_eq!(
            resolve("/demo/balance", Some(&unspecified)).map(|(u, _)| u.to_string()),
            Ok("http://127.0.0.1:8080/demo/balance".to_string())
        );
    }

    /// A local HTTPS server with a self-signed certificate for `localhost`, answering one request
    /// with a JSON reply; returns its URL and the certificate (PEM).
    async fn serve_tls_once() -> (String, String, tokio::task::JoinHandle<()>) {
        use std::sync::Arc;
        use tokio_rustls::rustls;
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            // Each connection: a handshake (which an untrusting client aborts), then one reply.
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut buf = vec![0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\nConnection: close\r\n\r\n{\"balance\":9}",
                    )
                    .await;
                let _ = tls.shutdown().await;
            }
        });
        (format!("https://localhost:{port}/balance"), cert.cert.pem(), task)
    }

    #[tokio::test]
    async fn https_webhooks_trust_the_operators_ca_and_nothing_unknown() {
        let (url, ca, server) = serve_tls_once().await;
        let untrusting = client(None).unwrap();
        let refused = post_json(
            &untrusting,
            &url,
            None,
            &serde_json::json!({}),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(
            refused,
            Err(WebhookError::Unreachable),
            "a certificate nobody vouches for"
        );
        let trusting = client(Some(ca.as_bytes())).unwrap();
        let reply = post_json(
            &trusting,
            &url,
            None,
            &serde_json::json!({}),
            Duration::from_secs(5),
        )
        .await;
        assert_eq!(reply.unwrap()["balance"], 9);
        server.abort();
        assert!(
            client(Some(b"not a certificate")).is_err(),
            "a file with no certificate is an error"
        );
    }
}
