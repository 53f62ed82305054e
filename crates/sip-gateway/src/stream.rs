//! SIP over TCP and TLS accepted by the gateway itself rather than by the stack's listeners, so that one
//! address holds at most `sip.limits.max_connections_per_source` connections at once on each listener
//! (trusted sources are not capped). One accept loop serves both: a TLS connection takes its slot before
//! the handshake, which must end within the idle timeout. Each connection is then handed to the stack,
//! which reads it and closes it when idle; its count is released when the stack retires it (the
//! connection's cancel token fires).

use crate::guard::RejectReason;
use crate::metrics::GatewayMetrics;
use parking_lot::Mutex;
use rsipstack::transport::tcp::TcpConnection;
use rsipstack::transport::tls::TlsConnection;
use rsipstack::transport::{SipAddr, SipConnection, TransportLayer};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Live connections per source address.
#[derive(Default)]
pub(crate) struct ConnectionCounts {
    per_source: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionCounts {
    /// Takes a slot for `ip` unless it already holds `cap` (0 = no cap).
    pub(crate) fn take(&self, ip: IpAddr, cap: usize) -> bool {
        let mut counts = self.per_source.lock();
        let n = counts.entry(ip).or_insert(0);
        if cap > 0 && *n >= cap {
            if *n == 0 {
                counts.remove(&ip);
            }
            return false;
        }
        *n += 1;
        true
    }

    pub(crate) fn release(&self, ip: IpAddr) {
        let mut counts = self.per_source.lock();
        if let Some(n) = counts.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&ip);
            }
        }
    }
}

/// What the accept loop needs.
pub(crate) struct StreamAccept {
    pub listener: tokio::net::TcpListener,
    /// The address the connections present as theirs (the advertised one when set).
    pub local: SipAddr,
    pub cap: usize,
    pub trusted: Vec<IpAddr>,
    pub metrics: GatewayMetrics,
    pub cancel: CancellationToken,
    /// TLS: the acceptor (its certificate resolver is the one SIGHUP reloads); None for TCP.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// How long a TLS handshake may take (the stream idle timeout): a connection that never
    /// completes one gives its slot back then.
    pub handshake_timeout: std::time::Duration,
}

/// Accepts connections until `cancel`, handing each to `layer` (the endpoint's transport layer).
pub(crate) async fn serve(accept: StreamAccept, layer: Arc<dyn Fn(SipConnection) + Send + Sync>) {
    let counts = Arc::new(ConnectionCounts::default());
    loop {
        let (stream, peer): (tokio::net::TcpStream, SocketAddr) = tokio::select! {
            _ = accept.cancel.cancelled() => break,
            got = accept.listener.accept() => match got {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "stream accept failed");
                    continue;
                }
            },
        };
        let ip = peer.ip();
        let cap = if accept.trusted.contains(&ip) {
            0
        } else {
            accept.cap
        };
        if !counts.take(ip, cap) {
            debug!(%peer, "stream connection refused: the source holds its cap of connections");
            accept.metrics.rejected(RejectReason::TooManyConnections);
            drop(stream);
            continue;
        }
        let token = accept.cancel.child_token();
        let Some(acceptor) = accept.tls.clone() else {
            match TcpConnection::from_stream(stream, accept.local.clone(), Some(token.clone())) {
                Ok(conn) => layer(SipConnection::Tcp(conn)),
                Err(e) => {
                    warn!(error = %e, "TCP connection not usable");
                    counts.release(ip);
                    continue;
                }
            }
            release_when_retired(counts.clone(), ip, token);
            continue;
        };
        // The handshake runs in its own task so a slow client holds only its own slot.
        let (local, layer, counts) = (accept.local.clone(), layer.clone(), counts.clone());
        let handshake_timeout = accept.handshake_timeout;
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    debug!(%peer, error = %e, "TLS handshake failed");
                    counts.release(ip);
                    return;
                }
                Err(_) => {
                    debug!(%peer, "TLS handshake not completed within the idle timeout");
                    counts.release(ip);
                    return;
                }
            };
            let remote = SipAddr {
                r#type: Some(rsipstack::sip::transport::Transport::Tls),
                addr: peer.into(),
            };
            match TlsConnection::from_server_stream(tls, local, remote, Some(token.clone())).await {
                Ok(conn) => layer(SipConnection::Tls(conn)),
                Err(e) => {
                    warn!(error = %e, "TLS connection not usable");
                    counts.release(ip);
                    return;
                }
            }
            token.cancelled().await;
            counts.release(ip);
        });
    }
}

/// Gives `ip`'s slot back once the stack retires the connection.
fn release_when_retired(counts: Arc<ConnectionCounts>, ip: IpAddr, token: CancellationToken) {
    tokio::spawn(async move {
        token.cancelled().await;
        counts.release(ip);
    });
}

/// Hands connections to the endpoint's transport layer.
pub(crate) fn into_layer(
    endpoint: Arc<rsipstack::transaction::endpoint::EndpointInner>,
) -> Arc<dyn Fn(SipConnection) + Send + Sync> {
    Arc::new(move |conn| {
        let layer: &TransportLayer = &endpoint.transport_layer;
        layer.add_connection(conn);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_per_address_and_released() {
        let counts = ConnectionCounts::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let b: IpAddr = "192.0.2.2".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        assert!(counts.take(a, 2));
        assert!(counts.take(a, 2));
        assert!(!counts.take(a, 2));
        assert!(counts.take(b, 2));
        counts.release(a);
        assert!(counts.take(a, 2));
        // No cap.
        assert!((0..10).all(|_| counts.take(b, 0)));
    }
}
