//! Links: the two TCP connections between two nodes, how they are opened and paired, and the
//! tasks that read and write them.
//!
//! ```text
//!  connecting side                                   accepting side
//!  ───────────────                                   ──────────────
//!  TCP + (TLS) + Handshake{lane: Control, link: L} ──▶ checked, answered, parked under (uid, L)
//!  TCP + (TLS) + Handshake{lane: Ordinary, link: L} ─▶ checked, answered, paired with the parked
//!  both answered by the same incarnation: link Up      half: link Up
//! ```
//!
//! Each connection has its own writer and reader task. The control connection carries
//! heartbeats, system messages, acknowledgements and quarantine notices; the ordinary
//! connection carries user messages; so however many user messages wait for the socket, a
//! heartbeat is written at once. Either connection failing takes the whole link down. A half
//! whose partner does not arrive within `handshake-timeout` is closed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use flotilla_core::{Address, RemoteSettings, UniqueAddress};
use flotilla_proto::remoting::Pdu;
use flotilla_wire::pdu::{self, HandshakeReply};
use flotilla_wire::{
    FrameDecoder, Heartbeat, HeartbeatReply, Kind, Lane, QuarantineNotice, SystemAck,
    SystemEnvelope, UserBatch, UserEnvelope,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::credentials::SecretSource;
use crate::faults::{FaultInjector, Registration};
use crate::handshake::{self, Opening, initiate};
use crate::inbound::{Inbound, InboundSender, SystemPayload, undecodable};
use crate::io::{FrameSource, ReadError, fill, write_lane};
use crate::queue::FrameQueue;
use crate::tls::Tls;

/// A connection's byte stream: plain TCP, or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub(crate) type Stream = Box<dyn Io>;

static LINK_IDS: AtomicU64 = AtomicU64::new(1);

/// What connection tasks report to the driver.
pub(crate) enum ConnEvent {
    Up {
        remote: UniqueAddress,
        outbound: bool,
        conn: Conn,
    },
    ConnectFailed {
        remote: Address,
        reason: String,
    },
    Received {
        from: UniqueAddress,
        pdu: Pdu<UserEnvelope, SystemPayload>,
        /// For an ordinary message: the reader's state, whose in-flight count this message holds.
        reader: Option<Arc<ReaderShared>>,
    },
    /// Ordinary messages from `from` were delivered directly (reported about once a second).
    Heard {
        from: UniqueAddress,
    },
    Lost {
        remote: Address,
        conn_id: u64,
        reason: String,
    },
}

/// Where connections report: the driver, and (for directly delivered messages) the local
/// runtime.
#[derive(Clone)]
pub(crate) struct Wiring {
    pub(crate) events: mpsc::Sender<ConnEvent>,
    pub(crate) inbound: InboundSender,
}

/// Everything needed to open links, shared by the accept loop and every connect attempt.
#[derive(Clone)]
pub(crate) struct Dialer {
    pub(crate) local: UniqueAddress,
    pub(crate) max_frame: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) queue: usize,
    pub(crate) secret: Arc<SecretSource>,
    /// Inbound connections open now, and the most allowed.
    pub(crate) inbound: Arc<AtomicUsize>,
    pub(crate) max_inbound: usize,
    pub(crate) max_handshaking: usize,
    pub(crate) tls: Option<Arc<Tls>>,
    pub(crate) faults: Option<FaultInjector>,
    pub(crate) wiring: Wiring,
}

impl Dialer {
    pub(crate) fn new(
        local: UniqueAddress,
        settings: &RemoteSettings,
        secret: Arc<SecretSource>,
        tls: Option<Arc<Tls>>,
        faults: Option<FaultInjector>,
        wiring: Wiring,
    ) -> Self {
        Self {
            local,
            max_frame: settings.maximum_frame_size,
            handshake_timeout: settings.handshake_timeout,
            queue: settings.outbound_message_queue_size,
            secret,
            inbound: Arc::default(),
            max_inbound: settings.max_inbound_connections,
            max_handshaking: settings.max_handshakes_in_progress,
            tls,
            faults,
            wiring,
        }
    }

    pub(crate) fn blackholed(&self, remote: &Address) -> bool {
        self.faults.as_ref().is_some_and(|f| {
            let r = f.rule(remote);
            r.drop_inbound || r.drop_outbound
        })
    }
}

/// One connection after its handshake, not yet reading or writing.
pub(crate) struct Half {
    pub(crate) stream: Stream,
    pub(crate) decoder: FrameDecoder,
    /// A duplicate of the TCP socket, kept only for fault injection.
    pub(crate) socket: Option<socket2::Socket>,
    /// For an accepted connection: its place among the inbound connections, given back when
    /// the connection's reader ends.
    pub(crate) slot: Option<Slot>,
}

/// Frames the control lane of a link holds before new ones are dropped.
pub(crate) const CONTROL_LANE_FRAMES: usize = 8192;

/// Events from connection tasks the driver has not taken yet; a reader waits beyond.
pub(crate) const EVENTS: usize = 4096;

/// One inbound connection's place in `max-inbound-connections`.
#[derive(Debug)]
pub(crate) struct Slot(pub(crate) Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An established link. Dropping it stops reading at once and closes the lanes: each writer
/// sends what is already queued (a quarantine notice, say) and then closes its socket.
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) uid: u64,
    /// Bounded ([`CONTROL_LANE_FRAMES`]): a peer that does not read its control connection
    /// loses frames (each of which is resent or superseded), not this node's memory.
    pub(crate) control: mpsc::Sender<Vec<u8>>,
    pub(crate) ordinary: Arc<FrameQueue>,
    pub(crate) shared: Arc<ReaderShared>,
    _stop_reading: tokio_util::sync::DropGuard,
    _registration: Option<Registration>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Senders fall back to the driver, which knows the link is gone.
        self.ordinary.close();
    }
}

/// What a link's readers share with the driver.
#[derive(Debug, Default)]
pub(crate) struct ReaderShared {
    /// The association is Active with this link's incarnation: ordinary messages may go
    /// straight to the local runtime.
    pub(crate) admitted: AtomicBool,
    /// Ordinary messages handed to the driver and not processed yet: the readers deliver
    /// directly only when there are none, so nothing overtakes.
    pub(crate) in_flight: AtomicUsize,
}

/// Opens a link to `to` (both connections, within `handshake-timeout`) and reports it, or why
/// it failed, to the driver.
pub(crate) fn connect(to: Address, dialer: Dialer) {
    tokio::spawn(async move {
        let timeout = dialer.handshake_timeout;
        let attempt = async {
            if dialer.blackholed(&to) {
                // As a dropped SYN: nothing comes back.
                std::future::pending::<()>().await;
            }
            let link = rand::random::<u64>();
            let (remote, control) = connect_half(&to, Lane::Control, link, &dialer).await?;
            let (again, ordinary) = connect_half(&to, Lane::Ordinary, link, &dialer).await?;
            if again != remote {
                return Err(format!(
                    "{remote} answered the control connection but {again} the ordinary one"
                ));
            }
            Ok((remote, control, ordinary))
        };
        let event = match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok((remote, control, ordinary))) => {
                open(control, ordinary, remote, &dialer, true).await;
                return;
            }
            Ok(Err(reason)) => ConnEvent::ConnectFailed { remote: to, reason },
            Err(_) => ConnEvent::ConnectFailed {
                remote: to,
                reason: format!("no handshake within {timeout:?}"),
            },
        };
        let _ = dialer.wiring.events.send(event).await;
    });
}

async fn connect_half(
    to: &Address,
    lane: Lane,
    link: u64,
    dialer: &Dialer,
) -> Result<(UniqueAddress, Half), String> {
    let (Some(host), Some(port)) = (to.host(), to.port()) else {
        return Err(format!("{to} is not a network address"));
    };
    let addr: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let tcp = TcpStream::connect(&addr[..])
        .await
        .map_err(|e| format!("connect to {host}:{port} failed: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let socket = dup(&tcp, dialer);
    let mut stream: Stream = match &dialer.tls {
        Some(tls) => {
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| format!("{host} cannot be checked against a certificate: {e}"))?;
            Box::new(
                tokio_rustls::TlsConnector::from(tls.configs().client)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake with {host}:{port} failed: {e}"))?,
            )
        }
        None => Box::new(tcp),
    };
    let mut decoder = handshake::decoder();
    let remote = initiate(
        &mut stream,
        &mut decoder,
        &dialer.local,
        to,
        dialer.secret.current(),
        Opening { lane, link },
    )
    .await
    .map_err(|e| e.to_string())?;
    handshake::raise(&mut decoder, dialer.max_frame);
    Ok((
        remote,
        Half {
            stream,
            decoder,
            socket,
            slot: None,
        },
    ))
}

/// A duplicate of the socket, when faults may need to reset it.
pub(crate) fn dup(tcp: &TcpStream, dialer: &Dialer) -> Option<socket2::Socket> {
    dialer.faults.as_ref()?;
    socket2::SockRef::from(tcp).try_clone().ok()
}

/// Starts the writers of a link, reports it up, and only then starts its readers: the control
/// task always learns of a link before it can learn of its loss.
pub(crate) async fn open(
    control: Half,
    ordinary: Half,
    remote: UniqueAddress,
    dialer: &Dialer,
    outbound: bool,
) {
    let id = LINK_IDS.fetch_add(1, Ordering::Relaxed);
    let kill = CancellationToken::new();
    let stop_reading = CancellationToken::new();
    let why = Arc::new(OnceLock::new());
    let registration = dialer.faults.as_ref().map(|f| {
        // The duplicates taken at connect time (only made when faults may be injected).
        let sockets = [control.socket, ordinary.socket]
            .into_iter()
            .flatten()
            .collect();
        f.register(
            id,
            remote.address.clone(),
            sockets,
            kill.clone(),
            Arc::clone(&why),
        )
    });
    let (control_read, control_write) = tokio::io::split(control.stream);
    let (ordinary_read, ordinary_write) = tokio::io::split(ordinary.stream);
    let (control_tx, control_rx) = mpsc::channel(CONTROL_LANE_FRAMES);
    // User messages beyond `outbound-message-queue-size` waiting for the socket are dropped to
    // dead letters (at most once, as Akka's outbound queue).
    let ordinary_queue = Arc::new(FrameQueue::new(dialer.queue));
    spawn_writer(control_write, control_rx, &remote, dialer, &kill, || {});
    let closing = Arc::clone(&ordinary_queue);
    spawn_writer(
        ordinary_write,
        Arc::clone(&ordinary_queue),
        &remote,
        dialer,
        &kill,
        move || closing.close(),
    );
    let shared = Arc::new(ReaderShared::default());
    let conn = Conn {
        id,
        uid: remote.uid,
        control: control_tx,
        ordinary: ordinary_queue,
        shared: Arc::clone(&shared),
        _stop_reading: stop_reading.clone().drop_guard(),
        _registration: registration,
    };
    let _ = dialer
        .wiring
        .events
        .send(ConnEvent::Up {
            remote: remote.clone(),
            outbound,
            conn,
        })
        .await;
    let ended = Arc::new(AtomicU8::new(0));
    for (read, decoder, lane, slot) in [
        (control_read, control.decoder, Lane::Control, control.slot),
        (
            ordinary_read,
            ordinary.decoder,
            Lane::Ordinary,
            ordinary.slot,
        ),
    ] {
        let reading = Reading {
            _slot: slot,
            local_uid: dialer.local.uid,
            decoder,
            lane,
            remote: remote.clone(),
            shared: Arc::clone(&shared),
            wiring: dialer.wiring.clone(),
            faults: dialer.faults.clone(),
            kill: kill.clone(),
            stop: stop_reading.clone(),
            why: Arc::clone(&why),
            ended: Arc::clone(&ended),
            grace: dialer.handshake_timeout,
            id,
        };
        tokio::spawn(reading.run(read));
    }
}

/// Writes a lane to its connection; with faults, through a shaper that drops or delays frames.
/// `on_end` runs when writing ends.
fn spawn_writer<S: FrameSource + 'static>(
    mut write: tokio::io::WriteHalf<Stream>,
    lane: S,
    remote: &UniqueAddress,
    dialer: &Dialer,
    cancel: &CancellationToken,
    on_end: impl FnOnce() + Send + 'static,
) {
    let cancel = cancel.clone();
    match &dialer.faults {
        None => {
            tokio::spawn(async move {
                tokio::select! {
                    _ = write_lane(&mut write, lane) => {}
                    () = cancel.cancelled() => {}
                }
                on_end();
            });
        }
        Some(faults) => {
            let (tx, rx) = mpsc::channel(dialer.queue.max(1));
            let (faults, remote) = (faults.clone(), remote.address.clone());
            let shaper_cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = shape(lane, tx, faults, remote) => {}
                    () = shaper_cancel.cancelled() => {}
                }
            });
            tokio::spawn(async move {
                tokio::select! {
                    _ = write_lane(&mut write, rx) => {}
                    () = cancel.cancelled() => {}
                }
                on_end();
            });
        }
    }
}

/// Passes a lane's frames on, dropping them while the node is blackholed and holding each for
/// the delay in force, counted from when the frame was taken from the lane (order is kept).
async fn shape<S: FrameSource>(
    mut lane: S,
    out: mpsc::Sender<Vec<u8>>,
    faults: FaultInjector,
    remote: Address,
) {
    let mut held: std::collections::VecDeque<(tokio::time::Instant, Vec<u8>)> =
        std::collections::VecDeque::new();
    let mut open = true;
    while open || !held.is_empty() {
        let due = held.front().map(|(t, _)| *t);
        tokio::select! {
            frame = lane.next_chunk(), if open && held.len() < 4096 => {
                let Some(frame) = frame else {
                    open = false;
                    continue;
                };
                let rule = faults.rule(&remote);
                if rule.drop_outbound {
                    faults.count_drop();
                    continue;
                }
                held.push_back((tokio::time::Instant::now() + rule.delay, frame));
            }
            () = async {
                match due {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                while let Some((t, _)) = held.front() {
                    if *t > tokio::time::Instant::now() {
                        break;
                    }
                    if let Some((_, frame)) = held.pop_front()
                        && out.send(frame).await.is_err()
                    {
                        return;
                    }
                }
            }
        }
    }
}

/// One connection's reader.
struct Reading {
    /// Given back when the reader ends.
    _slot: Option<Slot>,
    /// This node's incarnation.
    local_uid: u64,
    decoder: FrameDecoder,
    lane: Lane,
    remote: UniqueAddress,
    shared: Arc<ReaderShared>,
    wiring: Wiring,
    faults: Option<FaultInjector>,
    /// Cut by fault injection.
    kill: CancellationToken,
    /// The link was dropped: stop without reporting.
    stop: CancellationToken,
    why: Arc<OnceLock<&'static str>>,
    /// How many of the link's readers saw their connection closed cleanly.
    ended: Arc<AtomicU8>,
    /// How long a cleanly closed connection waits for its partner to close too.
    grace: Duration,
    id: u64,
}

impl Reading {
    async fn run(self, mut read: ReadHalf<Stream>) {
        let Self {
            _slot,
            local_uid,
            mut decoder,
            lane,
            remote,
            shared: mine,
            wiring: Wiring { events, inbound },
            faults,
            kill,
            stop,
            why,
            ended,
            grace,
            id,
        } = self;
        let mut reported = Instant::now();
        let mut misattributed_logged = false;
        // User messages from one read, handed over together.
        let mut users = UserBatch::new();
        let killed = kill.cancelled();
        tokio::pin!(killed);
        let stopped = stop.cancelled();
        tokio::pin!(stopped);
        let lane_label = match lane {
            Lane::Control => "control",
            Lane::Ordinary => "ordinary",
        };
        let received =
            metrics::counter!("flotilla_remote_frames_received_total", "lane" => lane_label);
        let reason = 'read: loop {
            // Every complete frame in the buffer, read in place; then more bytes.
            let mut frames = 0u64;
            loop {
                let (kind, body) = match decoder.next_frame_ref() {
                    Ok(Some(frame)) => {
                        frames += 1;
                        frame
                    }
                    Ok(None) => break,
                    Err(e) => {
                        metrics::counter!("flotilla_remote_framing_errors_total").increment(1);
                        break 'read format!("closed: {e}");
                    }
                };
                if let Some(f) = &faults
                    && f.rule(&remote.address).drop_inbound
                {
                    f.count_drop();
                    continue;
                }
                let direct = kind == Kind::User
                    && mine.in_flight.load(Ordering::SeqCst) == 0
                    && mine.admitted.load(Ordering::SeqCst);
                if direct {
                    // Decoded once, by the receiver, which reports one that does not decode.
                    if let Err(e) = users.push_raw(body) {
                        undecodable(&remote, &e);
                    }
                    continue;
                }
                match decode(kind, body, &remote, local_uid) {
                    Ok(Some(pdu)) => {
                        // What was delivered directly goes first.
                        deliver(&inbound, &remote, &mut users);
                        let reader = matches!(pdu, Pdu::User(_)).then(|| {
                            mine.in_flight.fetch_add(1, Ordering::SeqCst);
                            Arc::clone(&mine)
                        });
                        // Bounded: a peer that sends faster than this node handles waits.
                        let _ = events
                            .send(ConnEvent::Received {
                                from: remote.clone(),
                                pdu,
                                reader,
                            })
                            .await;
                    }
                    Ok(None) => {}
                    Err(Rejected::Undecodable(e)) => undecodable(&remote, &e),
                    Err(Rejected::Misattributed(what)) => {
                        metrics::counter!("flotilla_remote_frames_dropped_total", "reason" => "misattributed").increment(1);
                        if !misattributed_logged {
                            misattributed_logged = true;
                            tracing::warn!(remote = %remote, "dropped {what} (further ones on this connection are only counted)");
                        }
                    }
                }
            }
            received.increment(frames);
            if !users.is_empty() && reported.elapsed() >= Duration::from_secs(1) {
                // Delivered directly, so the driver would not know the link is in use.
                reported = Instant::now();
                let _ = events
                    .send(ConnEvent::Heard {
                        from: remote.clone(),
                    })
                    .await;
            }
            deliver(&inbound, &remote, &mut users);
            // The runtime is behind: read no more until it takes what waits.
            let full = !inbound.has_room();
            tokio::select! {
                biased;
                () = &mut stopped => return,
                () = &mut killed => {
                    break why.get().copied().unwrap_or("closed").to_owned();
                }
                () = inbound.wait_for_room(), if full => {}
                r = fill(&mut read, &mut decoder), if !full => match r {
                    Ok(()) => {}
                    Err(ReadError::Closed) => {
                        // A clean close: the peer closes both connections after writing what it
                        // had queued, so the link is lost once both are read to the end (the
                        // last frames of either are not cut off), or when the other stays open
                        // too long.
                        if ended.fetch_add(1, Ordering::SeqCst) == 1 {
                            break "the peer closed the connection".to_owned();
                        }
                        tokio::select! {
                            () = &mut stopped => return,
                            () = &mut killed => {}
                            () = tokio::time::sleep(grace) => {}
                        }
                        break format!("the peer closed the {lane:?} connection but not the other");
                    }
                    Err(e) => break e.to_string(),
                },
            }
        };
        deliver(&inbound, &remote, &mut users);
        let _ = events
            .send(ConnEvent::Lost {
                remote: remote.address.clone(),
                conn_id: id,
                reason,
            })
            .await;
    }
}

/// Hands the user messages gathered so far to the runtime as one item.
fn deliver(inbound: &InboundSender, from: &UniqueAddress, users: &mut UserBatch) {
    if !users.is_empty() {
        inbound.send(Inbound::User {
            from: from.clone(),
            messages: std::mem::take(users),
        });
    }
}

/// Why a frame was not taken.
enum Rejected {
    Undecodable(flotilla_wire::WireError),
    /// It claims to come from, or be meant for, an incarnation other than the link's two.
    Misattributed(String),
}

impl From<flotilla_wire::WireError> for Rejected {
    fn from(e: flotilla_wire::WireError) -> Self {
        Self::Undecodable(e)
    }
}

/// Checks that a frame's sender is the link's authenticated peer.
fn from_peer(kind: Kind, claimed: u64, remote: &UniqueAddress) -> Result<(), Rejected> {
    if claimed == remote.uid {
        Ok(())
    } else {
        Err(Rejected::Misattributed(format!(
            "a {kind:?} frame claiming to come from uid {claimed} on the link of {remote}"
        )))
    }
}

/// A frame's body as the machine's PDU; `Ok(None)` for kinds the machine does not take. Every
/// frame that names its sender must name the link's authenticated peer, and a system message
/// must be meant for this incarnation (`local_uid`).
fn decode(
    kind: Kind,
    body: &[u8],
    remote: &UniqueAddress,
    local_uid: u64,
) -> Result<Option<Pdu<UserEnvelope, SystemPayload>>, Rejected> {
    Ok(Some(match kind {
        Kind::User => Pdu::User(pdu::decode(kind, body)?),
        Kind::System => {
            let s: SystemEnvelope = pdu::decode(kind, body)?;
            from_peer(kind, s.from_uid, remote)?;
            if s.to_uid != local_uid {
                return Err(Rejected::Misattributed(format!(
                    "a system message for uid {} reached uid {local_uid}",
                    s.to_uid
                )));
            }
            Pdu::System {
                seq: s.seq,
                msg: SystemPayload {
                    manifest: s.manifest,
                    payload: s.payload,
                },
            }
        }
        Kind::SystemAck => {
            let a: SystemAck = pdu::decode(kind, body)?;
            from_peer(kind, a.from_uid, remote)?;
            Pdu::SystemAck { upto: a.upto }
        }
        Kind::Heartbeat => {
            let h: Heartbeat = pdu::decode(kind, body)?;
            from_peer(kind, h.from_uid, remote)?;
            Pdu::Heartbeat { seq: h.seq }
        }
        Kind::HeartbeatReply => {
            let h: HeartbeatReply = pdu::decode(kind, body)?;
            from_peer(kind, h.from_uid, remote)?;
            Pdu::HeartbeatReply { seq: h.seq }
        }
        Kind::QuarantineNotice => {
            let n: QuarantineNotice = pdu::decode(kind, body)?;
            let by = crate::convert::from_wire_unique(&n.from).ok();
            if by.as_ref() != Some(remote) {
                return Err(Rejected::Misattributed(format!(
                    "a quarantine notice claiming to come from {}@{}:{}#{} on the link of {remote}",
                    n.from.address.system.escape_debug(),
                    n.from.address.host.escape_debug(),
                    n.from.address.port,
                    n.from.uid
                )));
            }
            Pdu::QuarantineNotice {
                to_uid: n.to_uid,
                reason: n.reason,
            }
        }
        Kind::Cluster => Pdu::Cluster(body.to_vec()),
        Kind::Handshake | Kind::HandshakeReply => {
            let _ = pdu::decode::<HandshakeReply>(kind, body);
            return Ok(None);
        }
    }))
}
