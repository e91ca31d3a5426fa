//! HTTPS for the management endpoint: a listener that completes each TLS handshake on its own
//! task (bounded in time), so one slow client cannot hold up the others.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flotilla_core::ManagementTls;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// An acceptor from the PEM files.
pub(crate) fn acceptor(files: &ManagementTls) -> Result<TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.certificate)
        .map_err(|e| format!("{}: {e}", files.certificate.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", files.certificate.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in it",
            files.certificate.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.private_key)
        .map_err(|e| format!("{}: {e}", files.private_key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| e.to_string())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Accepted TLS connections, handshaken.
pub(crate) struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    _accepting: tokio_util::sync::DropGuard,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, acceptor: TlsAcceptor) -> Self {
        let (tx, ready) = mpsc::channel(64);
        let local = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let stop = tokio_util::sync::CancellationToken::new();
        let guard = stop.clone().drop_guard();
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::debug!("management endpoint: accept failed: {e}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(
                                "management endpoint: TLS handshake with {peer} failed: {e}"
                            );
                        }
                        Err(_) => {
                            tracing::debug!(
                                "management endpoint: TLS handshake with {peer} timed out"
                            );
                        }
                    }
                });
            }
        });
        Self {
            ready,
            local,
            _accepting: guard,
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accepting task only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
