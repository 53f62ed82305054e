//! A small HTTP/1.1 client for IVR webhooks: POST a JSON body to an `http://` URL and read a JSON
//! reply, within a deadline. Only plain HTTP to hosts the operator configured in a flow.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a webhook gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookError {
    BadUrl,
    Unreachable,
    Timeout,
    Status(u16),
    BadReply,
}

fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() {
        return None;
    }
    let host = if host.contains(':') {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Some((host, path.to_string()))
}

/// POSTs `body` and returns the JSON reply.
pub async fn post_json(
    url: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, WebhookError> {
    let (host, path) = split_url(url).ok_or(WebhookError::BadUrl)?;
    let work = async {
        let mut stream = tokio::net::TcpStream::connect(&host)
            .await
            .map_err(|_| WebhookError::Unreachable)?;
        let payload = body.to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
            payload.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|_| WebhookError::Unreachable)?;
        let mut reply = Vec::new();
        stream
            .take(1 << 20)
            .read_to_end(&mut reply)
            .await
            .map_err(|_| WebhookError::Unreachable)?;
        parse_reply(&reply)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| WebhookError::Timeout)?
}

fn parse_reply(reply: &[u8]) -> Result<serde_json::Value, WebhookError> {
    let text = std::str::from_utf8(reply).map_err(|_| WebhookError::BadReply)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or(WebhookError::BadReply)?;
    let status: u16 = head
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or(WebhookError::BadReply)?;
    if !(200..300).contains(&status) {
        return Err(WebhookError::Status(status));
    }
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked {
        dechunk(body).ok_or(WebhookError::BadReply)?
    } else {
        body.to_string()
    };
    serde_json::from_str(&body).map_err(|_| WebhookError::BadReply)
}

fn dechunk(mut body: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n")?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        body = rest.get(n + 2..)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_replies_are_parsed_strictly() {
        assert_eq!(
            split_url("http://127.0.0.1:8089/balance"),
            Some(("127.0.0.1:8089".into(), "/balance".into()))
        );
        assert_eq!(split_url("https://x/y"), None);
        assert_eq!(split_url("http:///y"), None);
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"balance\":\"12.50\"}";
        assert_eq!(parse_reply(ok).unwrap()["balance"], "12.50");
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\n2\r\n1}\r\n0\r\n\r\n";
        assert_eq!(parse_reply(chunked).unwrap()["a"], 1);
        assert_eq!(
            parse_reply(b"HTTP/1.1 500 Oops\r\n\r\n"),
            Err(WebhookError::Status(500))
        );
        assert_eq!(parse_reply(b"garbage"), Err(WebhookError::BadReply));
    }

    #[tokio::test]
    async fn posts_to_a_real_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(req.starts_with("POST /hook HTTP/1.1"));
            assert!(req.ends_with("{\"account\":\"42\"}"));
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
                .await
                .unwrap();
        });
        let reply = post_json(
            &format!("http://{addr}/hook"),
            &serde_json::json!({"account": "42"}),
            Duration::from_secs(2),
        )
        .await;
        assert_eq!(reply.unwrap()["ok"], true);
        let unreachable = post_json(
            "http://127.0.0.1:9/x",
            &serde_json::json!({}),
            Duration::from_secs(2),
        )
        .await;
        assert!(matches!(
            unreachable,
            Err(WebhookError::Unreachable | WebhookError::Timeout)
        ));
    }
}
