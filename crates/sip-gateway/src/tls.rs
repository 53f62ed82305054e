//! The TLS listener: the certificate and key from `[sip.tls]`, reloaded on SIGHUP, and the authorities
//! trusted for outbound TLS. With UDP enabled the gateway accepts TLS itself (`stream.rs`, the same
//! per-source cap and idle timeout as TCP); without it the stack's own listener serves, because the
//! stack takes its Via address from a listener.

use crate::GatewayError;
use crate::config::TlsConfig;
use rsipstack::transport::TransportLayer;
use rsipstack::transport::tls::{ReloadableCertResolver, TlsListenerConnection};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_rustls::rustls::ServerConfig;
use tracing::{info, warn};

/// Where the certificate lives, for SIGHUP.
pub(crate) enum TlsListener {
    /// Our accept loop: its acceptor resolves certificates through this resolver.
    Own(Arc<ReloadableCertResolver>),
    /// The stack's listener.
    Stack(TlsListenerConnection),
}

/// A TLS listener bound by us: the socket and the acceptor `stream::serve` needs.
pub(crate) struct OwnTls {
    pub listener: tokio::net::TcpListener,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

fn read(what: &str, path: &std::path::Path) -> Result<Vec<u8>, GatewayError> {
    std::fs::read(path).map_err(|e| GatewayError::Config(format!("sip.tls.{what} {}: {e}", path.display())))
}

/// Sets TLS up on `layer`: our own listener (`own`) or the stack's, and the outbound authorities.
pub(crate) async fn listen(
    layer: &TransportLayer,
    tls: &TlsConfig,
    advertised: Option<SocketAddr>,
    own: bool,
) -> Result<(TlsListener, Option<OwnTls>), GatewayError> {
    let cert = read("certificate", &tls.certificate)?;
    let key = read("private_key", &tls.private_key)?;
    if let Some(path) = &tls.ca_certificates {
        let ca = read("ca_certificates", path)?;
        // Outbound TLS connections verify the peer against these authorities (and its name and
        // validity dates: rustls refuses the rest).
        layer.set_tls_config(rsipstack::transport::tls::TlsConfig {
            ca_certs: Some(ca),
            ..Default::default()
        });
    }
    let bind = |source: std::io::Error| GatewayError::Bind {
        addr: tls.listen,
        transport: "tls",
        source,
    };
    if !own {
        let config = rsipstack::transport::tls::TlsConfig {
            cert: Some(cert),
            key: Some(key),
            ..Default::default()
        };
        let listener = TlsListenerConnection::new(tls.listen, advertised, config)
            .await
            .map_err(|e| bind(std::io::Error::other(e.to_string())))?;
        layer.add_transport(listener.clone().into());
        return Ok((TlsListener::Stack(listener), None));
    }
    let provider = ServerConfig::builder().crypto_provider().clone();
    let resolver = Arc::new(
        ReloadableCertResolver::new(&cert, &key, provider)
            .map_err(|e| GatewayError::Config(format!("sip.tls: {e}")))?,
    );
    let server = ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let socket = if tls.listen.is_ipv6() {
        tokio::net::TcpSocket::new_v6()
    } else {
        tokio::net::TcpSocket::new_v4()
    }
    .map_err(bind)?;
    socket.set_reuseaddr(true).map_err(bind)?;
    socket.bind(tls.listen).map_err(bind)?;
    let listener = socket.listen(1024).map_err(bind)?;
    Ok((TlsListener::Own(resolver), Some(OwnTls { listener, acceptor })))
}

/// Reads the certificate and key again and puts them in the listener (on SIGHUP); connections already
/// open keep theirs. A file that cannot be read or does not parse leaves the old pair in place.
pub(crate) async fn reload(listener: &TlsListener, tls: &TlsConfig) {
    let (cert, key) = match (std::fs::read(&tls.certificate), std::fs::read(&tls.private_key)) {
        (Ok(c), Ok(k)) => (c, k),
        (Err(e), _) | (_, Err(e)) => {
            warn!(error = %e, "TLS certificate not reloaded: cannot read the files");
            return;
        }
    };
    let reloaded = match listener {
        TlsListener::Own(resolver) => resolver.reload(&cert, &key),
        TlsListener::Stack(listener) => listener.reload_tls_config(cert, key).await,
    };
    match reloaded {
        Ok(()) => info!("TLS certificate reloaded"),
        Err(e) => warn!(error = %e, "TLS certificate not reloaded"),
    }
}
