//! The connection loop: accepts TCP connections, holds each to the limits, completes the TLS
//! handshake when there is one, and serves HTTP/1.1 with hyper on its own task.
//!
//! Limits (rule 8: everything is bounded):
//! - **Connections at once** ([`Limits::max_connections`]): a semaphore permit is taken on
//!   accept, before any byte is read, and held until the connection's task ends. A connection
//!   that finds none is closed at once (not queued: a queue would be one more thing to bound)
//!   and counted as `flotilla_management_connections_dropped_total{reason="limit"}`.
//! - **Time to a request head** ([`Limits::header_read_timeout`]): hyper's HTTP/1 header-read
//!   timer starts whenever the connection waits for a request head, both after accept and
//!   after each answer on a kept-alive connection, so it bounds slowloris clients, silent
//!   connections and idle keep-alive alike (`reason="timeout"`). The TLS handshake gets the same
//!   time (`reason="tls"` when it fails or runs out).
//! - **Shutdown**: when `stop` is cancelled, the listener closes, idle connections close, and
//!   one in the middle of a request gets [`GRACE`] to finish.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How long a connection in the middle of a request may take to finish once the endpoint stops.
const GRACE: Duration = Duration::from_secs(5);

/// How long the loop pauses after a failed accept (out of file descriptors, say), so that it
/// does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The bounds every connection is held to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections served at once.
    pub(crate) max_connections: usize,
    /// Time to send a request head (and to complete the TLS handshake).
    pub(crate) header_read_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` is cancelled.
pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: Limits,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!("management endpoint: accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            metrics::counter!("flotilla_management_connections_dropped_total", "reason" => "limit")
                .increment(1);
            tracing::debug!(
                "management endpoint: {} connections are open, the limit; closed the one from {peer}",
                limits.max_connections
            );
            drop(tcp);
            continue;
        };
        let connection = Connection {
            http: http.clone(),
            router: router.clone(),
            stop: stop.clone(),
            peer,
            _permit: permit,
        };
        tokio::spawn(connection.run(tcp, tls.clone(), limits.header_read_timeout));
    }
}

/// One accepted connection and what it needs to be served.
struct Connection {
    http: http1::Builder,
    router: Router,
    stop: CancellationToken,
    peer: SocketAddr,
    /// Its place among `max_connections`, given back when the connection ends.
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(self, tcp: TcpStream, tls: Option<TlsAcceptor>, handshake_timeout: Duration) {
        let _ = tcp.set_nodelay(true);
        let Some(acceptor) = tls else {
            return self.serve(tcp).await;
        };
        match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => self.serve(stream).await,
            Ok(Err(e)) => {
                metrics::counter!("flotilla_management_connections_dropped_total", "reason" => "tls")
                    .increment(1);
                tracing::debug!(
                    "management endpoint: TLS handshake with {} failed: {e}",
                    self.peer
                );
            }
            Err(_) => {
                metrics::counter!("flotilla_management_connections_dropped_total", "reason" => "tls")
                    .increment(1);
                tracing::debug!(
                    "management endpoint: TLS handshake with {} timed out",
                    self.peer
                );
            }
        }
    }

    async fn serve<I>(self, io: I)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = TowerToHyperService::new(self.router);
        let conn = self.http.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let served = tokio::select! {
            served = conn.as_mut() => served,
            () = self.stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                match tokio::time::timeout(GRACE, conn.as_mut()).await {
                    Ok(served) => served,
                    Err(_) => return,
                }
            }
        };
        match served {
            Ok(()) => {}
            Err(e) if e.is_timeout() => {
                metrics::counter!("flotilla_management_connections_dropped_total", "reason" => "timeout")
                    .increment(1);
                tracing::debug!(
                    "management endpoint: closed the connection from {}: no request head within the header-read timeout",
                    self.peer
                );
            }
            Err(e) => {
                tracing::debug!(
                    "management endpoint: the connection from {} ended: {e}",
                    self.peer
                );
            }
        }
    }
}
