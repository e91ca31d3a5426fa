//! The accepting side of links: the listener, the limits that keep strangers from exhausting
//! the node, the handshake of each accepted connection, and the pairing of a link's two
//! connections.
//!
//! Limits, each counted in a metric when it bites:
//! - `max-inbound-connections`: inbound connections open at once (authenticated or not); a
//!   connection beyond it is closed as it arrives.
//! - `max-handshakes-in-progress`: connections still in their handshake; a new one beyond it
//!   closes the *oldest*, so connections that never speak cannot keep a peer out — a peer's
//!   handshake takes a few milliseconds, an idle stranger's lasts until it is pushed out.
//! - before authentication a connection buffers at most one handshake frame (1 KiB) and must
//!   finish within `handshake-timeout`.
//!
//! Refusals are logged at warn, at most [`REFUSALS_LOGGED`] per [`REFUSAL_WINDOW`] (the rest are
//! counted and summed up in the next line logged), so a flood of strangers cannot flood the log.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flotilla_core::UniqueAddress;
use flotilla_wire::Lane;
use flotilla_wire::pdu::HandshakeRefusal;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::credentials::certificate_valid_for;
use crate::handshake::{self, Opening, accept};
use crate::link::{Dialer, Half, Slot, Stream, dup, open};

/// At most this many authenticated connections wait for their partner at once; more are closed.
const MAX_UNPAIRED: usize = 1024;

/// Refusals logged per window; the rest are counted and summed up.
pub(crate) const REFUSALS_LOGGED: u64 = 10;
/// The window of [`REFUSALS_LOGGED`].
pub(crate) const REFUSAL_WINDOW: Duration = Duration::from_secs(10);

/// Connections in their handshake, oldest first, each with the token that closes it.
#[derive(Default)]
struct Handshaking {
    next: u64,
    open: VecDeque<(u64, CancellationToken)>,
}

/// Logs refusals, but not too many.
struct RefusalLog {
    window: Mutex<(Instant, u64)>,
    suppressed: AtomicU64,
}

impl RefusalLog {
    fn new() -> Self {
        Self {
            window: Mutex::new((Instant::now(), 0)),
            suppressed: AtomicU64::new(0),
        }
    }

    fn refused(&self, peer: std::net::SocketAddr, why: &str) {
        metrics::counter!("flotilla_remote_handshakes_refused_total").increment(1);
        let log = {
            let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
            if w.0.elapsed() >= REFUSAL_WINDOW {
                *w = (Instant::now(), 0);
            }
            w.1 += 1;
            w.1 <= REFUSALS_LOGGED
        };
        if !log {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let why = why.escape_debug();
        match self.suppressed.swap(0, Ordering::Relaxed) {
            0 => tracing::warn!(%peer, "inbound connection from {peer} refused: {why}"),
            n => tracing::warn!(
                %peer,
                "inbound connection from {peer} refused: {why} ({n} more refusals not logged)"
            ),
        }
    }
}

/// Accepts connections for ever: each is handshaken (bounded by `handshake-timeout`) and paired
/// with its link's other connection before the link is reported up.
pub(crate) async fn accept_loop(listener: TcpListener, dialer: Dialer) {
    let unpaired: Unpaired = Arc::default();
    let handshaking: Arc<Mutex<Handshaking>> = Arc::default();
    let refusals = Arc::new(RefusalLog::new());
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if dialer.inbound.fetch_add(1, Ordering::SeqCst) >= dialer.max_inbound {
            dialer.inbound.fetch_sub(1, Ordering::SeqCst);
            metrics::counter!("flotilla_remote_connections_dropped_total", "reason" => "max-inbound-connections").increment(1);
            refusals.refused(
                peer,
                &format!(
                    "{} inbound connections are open already (remote.max-inbound-connections)",
                    dialer.max_inbound
                ),
            );
            continue;
        }
        let slot = Slot(Arc::clone(&dialer.inbound));
        let cancel = CancellationToken::new();
        let id = {
            let mut h = handshaking.lock().unwrap_or_else(PoisonError::into_inner);
            while h.open.len() >= dialer.max_handshaking {
                if let Some((_, oldest)) = h.open.pop_front() {
                    metrics::counter!("flotilla_remote_connections_dropped_total", "reason" => "max-handshakes-in-progress").increment(1);
                    oldest.cancel();
                }
            }
            h.next += 1;
            let id = h.next;
            h.open.push_back((id, cancel.clone()));
            id
        };
        let (dialer, unpaired, handshaking, refusals) = (
            dialer.clone(),
            Arc::clone(&unpaired),
            Arc::clone(&handshaking),
            Arc::clone(&refusals),
        );
        tokio::spawn(async move {
            let timeout = dialer.handshake_timeout;
            let outcome = tokio::select! {
                r = tokio::time::timeout(timeout, accept_half(tcp, slot, &dialer)) => Some(r),
                () = cancel.cancelled() => None,
            };
            handshaking
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .open
                .retain(|(i, _)| *i != id);
            match outcome {
                Some(Ok(Ok((remote, opening, half)))) => {
                    if dialer.blackholed(&remote.address) {
                        tracing::debug!(%remote, "fault injection: closed a connection from blackholed {remote}");
                        return;
                    }
                    pair(remote, opening, half, &dialer, &unpaired).await;
                }
                Some(Ok(Err(e))) => refusals.refused(peer, &e),
                Some(Err(_)) => refusals.refused(
                    peer,
                    &format!("no handshake within {timeout:?} (remote.handshake-timeout)"),
                ),
                None => {
                    tracing::debug!(%peer, "closed the oldest unfinished handshake (from {peer}) to make room (remote.max-handshakes-in-progress)")
                }
            }
        });
    }
}

async fn accept_half(
    tcp: TcpStream,
    slot: Slot,
    dialer: &Dialer,
) -> Result<(UniqueAddress, Opening, Half), String> {
    let _ = tcp.set_nodelay(true);
    let socket = dup(&tcp, dialer);
    // With TLS, the peer's certificate (already checked against the CA) must also be valid for
    // the host the peer claims as its address.
    let (mut stream, certificate): (Stream, _) = match &dialer.tls {
        Some(tls) => {
            let tls_stream = tokio_rustls::TlsAcceptor::from(tls.configs().server)
                .accept(tcp)
                .await
                .map_err(|e| format!("TLS handshake failed: {e}"))?;
            let certificate = tls_stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.clone().into_owned());
            (Box::new(tls_stream), Some(certificate))
        }
        None => (Box::new(tcp), None),
    };
    let mut decoder = handshake::decoder();
    let admit = |claimed: &UniqueAddress| match &certificate {
        None => Ok(()),
        Some(certificate) => {
            let host = claimed.address.host().unwrap_or_default();
            certificate
                .as_ref()
                .ok_or_else(|| "it presented no TLS certificate".to_owned())
                .and_then(|c| certificate_valid_for(c, host))
                .map_err(|why| HandshakeRefusal::NotAuthorized {
                    claimed: claimed.address.to_string(),
                    why,
                })
        }
    };
    let (remote, opening) = accept(
        &mut stream,
        &mut decoder,
        &dialer.local,
        dialer.secret.current(),
        admit,
    )
    .await
    .map_err(|e| e.to_string())?;
    handshake::raise(&mut decoder, dialer.max_frame);
    Ok((
        remote,
        opening,
        Half {
            stream,
            decoder,
            socket,
            slot: Some(slot),
        },
    ))
}

/// Accepted connections waiting for their link's other connection, by (incarnation, link).
type Unpaired = Arc<Mutex<HashMap<(u64, u64), oneshot::Sender<(Lane, Half)>>>>;

/// The first connection of a link waits for the second; the second hands itself over.
async fn pair(
    remote: UniqueAddress,
    opening: Opening,
    half: Half,
    dialer: &Dialer,
    unpaired: &Unpaired,
) {
    let key = (remote.uid, opening.link);
    let waiting = {
        let mut all = unpaired.lock().unwrap_or_else(PoisonError::into_inner);
        match all.remove(&key) {
            Some(partner) => Err(partner),
            None if all.len() >= MAX_UNPAIRED => {
                tracing::warn!(%remote, "{MAX_UNPAIRED} connections already wait for their partner; closed one from {remote}");
                return;
            }
            None => {
                let (tx, rx) = oneshot::channel();
                all.insert(key, tx);
                Ok(rx)
            }
        }
    };
    let rx = match waiting {
        Err(partner) => {
            // The other half is waiting: it opens the link.
            let _ = partner.send((opening.lane, half));
            return;
        }
        Ok(rx) => rx,
    };
    let other = tokio::time::timeout(dialer.handshake_timeout, rx).await;
    unpaired
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&key);
    let Ok(Ok((other_lane, other))) = other else {
        tracing::warn!(%remote, "the {:?} connection from {remote} came without its partner within {:?}; closed", opening.lane, dialer.handshake_timeout);
        return;
    };
    let (control, ordinary) = match (opening.lane, other_lane) {
        (Lane::Control, Lane::Ordinary) => (half, other),
        (Lane::Ordinary, Lane::Control) => (other, half),
        (lane, _) => {
            tracing::warn!(%remote, "{remote} opened two {lane:?} connections for one link; both closed");
            return;
        }
    };
    open(control, ordinary, remote, dialer, false).await;
}
