//! A node's remoting: the listener, the connections and the driver of the pure
//! [`Remoting`] machine, all on remoting's own runtime threads.
//!
//! ```text
//!  RemoteNode (handle) ──commands──▶ driver ◀──connection events── reader tasks
//!   (node.rs)                        (driver.rs)                       (link.rs, one per
//!                                     │ owns Remoting (pure)             connection)
//!                                     │ Transmit → encode → lane ──▶ writer tasks (batched,
//!                                     │                               control lane first)
//!                                     │ Connect → connect task (TCP + handshake, bounded;
//!                                     │           accept.rs for the accepting side)
//!                                     └ deliveries, events ──▶ the inbound channel (inbound.rs)
//! ```
//!
//! The runtime is separate from the user's: actors that saturate theirs cannot delay heartbeats,
//! acknowledgements or failure detection here.
//!
//! Ordinary messages take a fast path while an association is Active: the sending handle writes
//! the encoded frame straight into the connection's ordinary lane, and the reader hands a decoded
//! message straight to the local runtime. The driver decides when a path is open (it
//! installs a node's lane once the association is Active with an incarnation, and admits a
//! connection's reader only for that incarnation) and everything else — connecting, buffering,
//! gating, quarantine, dead letters — goes through the machine. Each side counts the messages it
//! handed to the driver and takes the fast path only when none are outstanding, so a message
//! never overtakes an earlier one from the same sender.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use flotilla_core::{Address, RemoteSettings, UniqueAddress};
use flotilla_proto::association::{AssociationSnapshot, QuarantineReason};
use flotilla_proto::remoting::Remoting;
use flotilla_wire::pdu;
use flotilla_wire::{Kind, UserEnvelope, UserEnvelopeRef};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::accept::accept_loop;
pub use crate::cluster_channel::{ClusterInbound, ClusterInboundReceiver};
use crate::credentials::{SecretError, SecretSource};
use crate::driver::{Command, Driver};
use crate::faults::FaultInjector;
use crate::inbound::{self, InboundReceiver, InboundSender};
pub use crate::inbound::{Inbound, SystemPayload, undecodable_dropped};
use crate::link::{self, Dialer, Wiring};
use crate::paths::{Path, Paths, path};
use crate::queue::{FrameQueue, Push};
use crate::tls::Tls;

/// Why a message was not accepted for sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Larger than `maximum-frame-size`.
    #[error("a message of {len} bytes exceeds remote.maximum-frame-size ({max} bytes)")]
    TooLarge {
        /// The encoded frame's length.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The node has shut down.
    #[error("remoting has shut down")]
    Stopped,
    /// The destination has no host and port.
    #[error("{0} is not a network address")]
    NotRemote(Address),
    /// The message could not be encoded.
    #[error("cannot encode the message: {0}")]
    Encode(String),
}

/// Why remoting could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The address has no host and port.
    #[error("{0} is not a network address (flotilla://system@host:port)")]
    NotRemote(Address),
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime threads could not start.
    #[error("cannot start remoting's threads: {0}")]
    Runtime(std::io::Error),
    /// The TLS certificates could not be loaded.
    #[error("cannot use TLS: {0}")]
    Tls(crate::tls::TlsError),
    /// The cluster secret could not be read or is not usable.
    #[error("cannot use the cluster secret: {0}")]
    Secret(SecretError),
    /// Neither a secret nor TLS is configured, and `insecure` is not set.
    #[error(
        "remoting on {address} has no credentials, so peers could not prove who they are: anyone who can reach the port could join, quarantine or down nodes. \
         Create credentials with `flotilla certs --out <dir> <host>...` and configure [remote.tls] (mutual TLS) and/or `remote.secret-file`; \
         or, on a trusted network or in a test only, start with `--insecure` (`remote.insecure = true`)"
    )]
    NoCredentials {
        /// The address remoting was to listen on.
        address: Address,
    },
}

thread_local! {
    /// Where a message that was not queued is encoded to check its size: no allocation per
    /// message.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn send_error(e: flotilla_wire::WireError) -> SendError {
    match e {
        flotilla_wire::WireError::Frame(flotilla_wire::FrameError::TooLarge { len, max }) => {
            SendError::TooLarge { len, max }
        }
        e => SendError::Encode(e.to_string()),
    }
}

/// Sends ordinary messages to one remote node without looking its path up per message
/// ([`RemoteNode::outbound`]). It keeps remoting running while it exists, as a [`RemoteNode`]
/// handle does.
#[derive(Clone)]
pub struct Outbound {
    node: RemoteNode,
    path: Arc<Path>,
    to: Address,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound").field("to", &self.to).finish()
    }
}

impl Outbound {
    /// The remote node.
    pub fn address(&self) -> &Address {
        &self.to
    }

    /// [`RemoteNode::send_user_ref`] to this node.
    pub fn send_user_ref(&self, envelope: UserEnvelopeRef<'_>) -> Result<(), SendError> {
        self.node.send_on(&self.to, &self.path, envelope)
    }

    /// [`RemoteNode::send_user`] to this node.
    pub fn send_user(&self, envelope: &UserEnvelope) -> Result<(), SendError> {
        self.send_user_ref(envelope.borrowed())
    }

    /// [`Outbound::send_user_ref`], except that when the outbound queue is full it waits for
    /// room instead of dropping the message to dead letters: backpressure for a sender of many
    /// messages, which then goes at the pace of the connection (as a writer to a TCP socket
    /// does). Waiting applies while the association is Active; before that the message takes
    /// the slow path as with [`Outbound::send_user_ref`] (held while the association opens, up to
    /// `outbound-message-queue-size`, dead letters beyond), so a bulk sender opens the
    /// association with one message first. Delivery is still at most once: what is queued when
    /// the link fails is lost.
    pub async fn send_user_ref_waiting(
        &self,
        envelope: UserEnvelopeRef<'_>,
    ) -> Result<(), SendError> {
        loop {
            match self.node.push_fast(&self.path, &envelope)? {
                Fast::Queued => return Ok(()),
                Fast::Full(lane) => lane.wait_for_room().await,
                Fast::NoLane => return self.node.not_queued(&self.to, &self.path, envelope, false),
            }
        }
    }
}

/// What became of a frame offered to the fast path.
enum Fast {
    Queued,
    /// The lane holds `outbound-message-queue-size` frames already.
    Full(Arc<FrameQueue>),
    /// No Active link, or earlier messages took the slow path.
    NoLane,
}

/// A running node's remoting. Dropping the last handle stops it.
#[derive(Clone)]
pub struct RemoteNode {
    local: UniqueAddress,
    max_frame: usize,
    flush_timeout: std::time::Duration,
    commands: mpsc::UnboundedSender<Command>,
    paths: Paths,
    inbound: InboundSender,
    cluster: Arc<std::sync::Mutex<Option<ClusterInboundReceiver>>>,
    cluster_open: Arc<std::sync::atomic::AtomicBool>,
    runtime: tokio::runtime::Handle,
    _runtime: Arc<RuntimeGuard>,
}

struct RuntimeGuard(std::sync::Mutex<Option<tokio::runtime::Runtime>>);

impl RuntimeGuard {
    fn shutdown(&self) {
        let rt = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(rt) = rt {
            rt.shutdown_background();
        }
    }
}

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl std::fmt::Debug for RemoteNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteNode")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

/// How to start a node, beyond its settings.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The incarnation UID (an actor system's own); a random one when `None`.
    pub uid: Option<u64>,
    /// Faults to inject into this node's links, for tests.
    pub faults: Option<FaultInjector>,
}

impl RemoteNode {
    /// Binds `address` (port 0 picks a free one) and starts remoting on `remote.threads`
    /// dedicated worker threads. Returns the handle and the channel of what arrives for the local
    /// runtime.
    pub fn start(
        address: &Address,
        settings: RemoteSettings,
    ) -> Result<(Self, InboundReceiver), StartError> {
        Self::start_with(address, settings, StartOptions::default())
    }

    /// As [`RemoteNode::start`], with the incarnation UID given (an actor system's own).
    pub fn start_with_uid(
        address: &Address,
        settings: RemoteSettings,
        uid: u64,
    ) -> Result<(Self, InboundReceiver), StartError> {
        Self::start_with(
            address,
            settings,
            StartOptions {
                uid: Some(uid),
                faults: None,
            },
        )
    }

    /// As [`RemoteNode::start`], with options.
    pub fn start_with(
        address: &Address,
        settings: RemoteSettings,
        options: StartOptions,
    ) -> Result<(Self, InboundReceiver), StartError> {
        let secret = SecretSource::new(&settings).map_err(StartError::Secret)?;
        if !secret.is_set() && settings.tls.is_none() && !settings.insecure {
            return Err(StartError::NoCredentials {
                address: address.clone(),
            });
        }
        let uid = options.uid.unwrap_or_else(rand::random::<u64>);
        let (Some(host), Some(port)) = (address.host(), address.port()) else {
            return Err(StartError::NotRemote(address.clone()));
        };
        let bind = format!("{host}:{port}");
        let std_listener =
            std::net::TcpListener::bind(&bind).map_err(|source| StartError::Bind {
                addr: bind.clone(),
                source,
            })?;
        let port = std_listener
            .local_addr()
            .map_err(|source| StartError::Bind {
                addr: bind.clone(),
                source,
            })?
            .port();
        std_listener
            .set_nonblocking(true)
            .map_err(|source| StartError::Bind {
                addr: bind.clone(),
                source,
            })?;
        let local = UniqueAddress {
            address: Address::remote(address.system(), host, port)
                .map_err(|_| StartError::NotRemote(address.clone()))?,
            uid,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.threads.max(1))
            .thread_name("flotilla-remote")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(std_listener)
                .map_err(|source| StartError::Bind { addr: bind, source })?
        };
        let tls = match &settings.tls {
            Some(t) => Some(Arc::new(Tls::new(t.clone()).map_err(StartError::Tls)?)),
            None => None,
        };
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (inbound_tx, inbound) = inbound::channel();
        let (events_tx, events) = mpsc::channel(link::EVENTS);
        let (cluster_tx, cluster_rx) = crate::cluster_channel::channel();
        let cluster_open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let max_frame = settings.maximum_frame_size;
        let flush_timeout = settings.shutdown_flush_timeout;
        let paths = Paths::default();
        let (tls_set, secret_set) = (settings.tls.is_some(), secret.is_set());
        let credentials = match (tls_set, secret_set) {
            (true, true) => "mutual TLS and the cluster secret",
            (true, false) => "mutual TLS",
            (false, true) => "the cluster secret (not encrypted: add TLS against eavesdroppers)",
            (false, false) => "NO CREDENTIALS (remote.insecure)",
        };
        if !tls_set && !secret_set {
            tracing::warn!(%local, "remoting runs without credentials (remote.insecure): anyone who can reach {} can join, quarantine or down nodes", local.address);
        }
        let dialer = Dialer::new(
            local.clone(),
            &settings,
            Arc::new(secret),
            tls.clone(),
            options.faults,
            Wiring {
                events: events_tx,
                inbound: inbound_tx.clone(),
            },
        );
        let driver = Driver {
            remoting: Remoting::new(local.clone(), settings.clone()),
            settings,
            dialer: dialer.clone(),
            conns: BTreeMap::new(),
            paths: Arc::clone(&paths),
            touched: BTreeSet::new(),
            inbound: inbound_tx.clone(),
            cluster: cluster_tx,
            cluster_open: Arc::clone(&cluster_open),
            flushes: Vec::new(),
        };
        runtime.spawn(accept_loop(listener, dialer));
        if let Some(tls) = tls {
            runtime.spawn(async move {
                let mut tick = tokio::time::interval(tls.reload_interval());
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    tls.reload_if_changed();
                }
            });
        }
        runtime.spawn(driver.run(command_rx, events));
        tracing::info!(%local, "remoting listening on {}; peers authenticate with {credentials}", local.address);
        Ok((
            Self {
                local,
                max_frame,
                flush_timeout,
                commands,
                paths,
                inbound: inbound_tx,
                cluster: Arc::new(std::sync::Mutex::new(Some(cluster_rx))),
                cluster_open,
                runtime: runtime.handle().clone(),
                _runtime: Arc::new(RuntimeGuard(std::sync::Mutex::new(Some(runtime)))),
            },
            inbound,
        ))
    }

    /// Stops remoting at once: the listener and every connection close, and later calls on any
    /// handle fail with [`SendError::Stopped`]. Remote nodes see the connections close (their
    /// associations gate) and, if they watch this node, declare it dead.
    pub fn shutdown(&self) {
        tracing::info!(local = %self.local, "remoting of {} stopped", self.local);
        self._runtime.shutdown();
    }

    /// Waits, at most `remote.shutdown-flush-timeout`, until every system message sent to a
    /// node this one is Active with has been acknowledged; returns whether they all were. Call it
    /// before [`RemoteNode::shutdown`] so that the last notices — `Terminated` for the actors
    /// that just stopped, say — reach their watchers instead of leaving them to their failure
    /// detectors.
    pub async fn flush(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.command(Command::Flushed(tx)).is_err() {
            return false;
        }
        let flushed = tokio::time::timeout(self.flush_timeout, rx).await;
        let done = matches!(flushed, Ok(Ok(())));
        if !done {
            tracing::warn!(local = %self.local, "system messages still unacknowledged after remote.shutdown-flush-timeout ({:?}); remote watchers will learn of this node's actors from their failure detectors", self.flush_timeout);
        }
        done
    }

    /// This node's unique address (with the port actually bound).
    pub fn local(&self) -> &UniqueAddress {
        &self.local
    }

    /// Sends an ordinary message, at most once. Refuses one larger than the maximum frame size.
    ///
    /// While the association is Active the frame goes straight to the connection's ordinary lane;
    /// when that lane already holds `outbound-message-queue-size` frames the message goes to dead
    /// letters (the reader of the inbound channel gets [`Inbound::DeadLetter`]).
    pub fn send_user(&self, to: &Address, envelope: UserEnvelope) -> Result<(), SendError> {
        self.send_user_ref(to, envelope.borrowed())
    }

    /// [`RemoteNode::send_user`] from borrowed fields: while the association is Active nothing
    /// is allocated, the envelope is encoded straight into the lane's frame queue. An owned copy
    /// is made only when the message takes the slow path (the association is not Active) or goes
    /// to dead letters.
    pub fn send_user_ref(
        &self,
        to: &Address,
        envelope: UserEnvelopeRef<'_>,
    ) -> Result<(), SendError> {
        if to.port().is_none() {
            return Err(SendError::NotRemote(to.clone()));
        }
        self.send_on(to, &path(&self.paths, to), envelope)
    }

    /// A handle for sending to `to` that skips the per-message lookup of the node's path: keep
    /// one per remote node a sender talks to often.
    pub fn outbound(&self, to: &Address) -> Result<Outbound, SendError> {
        if to.port().is_none() {
            return Err(SendError::NotRemote(to.clone()));
        }
        Ok(Outbound {
            node: self.clone(),
            path: path(&self.paths, to),
            to: to.clone(),
        })
    }

    fn send_on(
        &self,
        to: &Address,
        path: &Path,
        envelope: UserEnvelopeRef<'_>,
    ) -> Result<(), SendError> {
        match self.push_fast(path, &envelope)? {
            Fast::Queued => Ok(()),
            Fast::Full(_) => self.not_queued(to, path, envelope, true),
            Fast::NoLane => self.not_queued(to, path, envelope, false),
        }
    }

    /// The fast path: the frame is encoded straight into the ordinary lane of the Active link.
    fn push_fast(&self, path: &Path, envelope: &UserEnvelopeRef<'_>) -> Result<Fast, SendError> {
        if path.slow.load(Ordering::SeqCst) != 0 {
            return Ok(Fast::NoLane);
        }
        let lane = path.lane.read().unwrap_or_else(|e| e.into_inner());
        let Some(lane) = lane.as_ref() else {
            return Ok(Fast::NoLane);
        };
        let pushed = lane
            .push_with(|out| pdu::encode(Kind::User, envelope, self.max_frame, out))
            .map_err(send_error)?;
        Ok(match pushed {
            Push::Queued => Fast::Queued,
            Push::Full => Fast::Full(Arc::clone(lane)),
            Push::Closed => Fast::NoLane,
        })
    }

    /// A message the lane did not take: refused if it could never be sent; to dead letters if
    /// the lane is `full`; otherwise handed to the driver.
    fn not_queued(
        &self,
        to: &Address,
        path: &Path,
        envelope: UserEnvelopeRef<'_>,
        full: bool,
    ) -> Result<(), SendError> {
        // Refuse a message that could never be sent before anything else.
        SCRATCH.with_borrow_mut(|frame| {
            frame.clear();
            pdu::encode(Kind::User, &envelope, self.max_frame, frame).map_err(send_error)
        })?;
        if full {
            metrics::counter!("flotilla_remote_dead_letters_total").increment(1);
            tracing::debug!(remote = %to, "the outbound queue to {to} is full; message to {} dropped", envelope.recipient);
            self.inbound.send(Inbound::DeadLetter {
                to: to.clone(),
                envelope: envelope.to_envelope(),
                reason: "the outbound queue is full (remote.outbound-message-queue-size)"
                    .to_owned(),
            });
            return Ok(());
        }
        // The link just closed, or no path is open: the driver knows what comes next.
        path.slow.fetch_add(1, Ordering::SeqCst);
        self.command(Command::SendUser(to.clone(), envelope.to_envelope()))
    }

    /// Sends a system message reliably: exactly once, in order, to the incarnation at `to`.
    pub fn send_system(&self, to: &Address, payload: SystemPayload) -> Result<(), SendError> {
        self.command(Command::SendSystem(to.clone(), payload))
    }

    /// Watches node `remote` (heartbeats and the failure detector); counted per call.
    pub fn watch_node(&self, remote: &Address) -> Result<(), SendError> {
        self.command(Command::WatchNode(remote.clone()))
    }

    /// Undoes one [`RemoteNode::watch_node`].
    pub fn unwatch_node(&self, remote: &Address) -> Result<(), SendError> {
        self.command(Command::UnwatchNode(remote.clone()))
    }

    /// Tells remoting which nodes are members of this node's cluster now: remote deathwatch
    /// leaves those to the cluster (see [`RemoteInput::ClusterMembers`](flotilla_proto::remoting::RemoteInput::ClusterMembers)).
    pub fn set_cluster_members(&self, members: BTreeSet<Address>) -> Result<(), SendError> {
        self.command(Command::ClusterMembers(members))
    }

    /// Quarantines an incarnation for good.
    pub fn quarantine(&self, remote: &UniqueAddress, reason: &str) -> Result<(), SendError> {
        self.quarantine_for(remote, QuarantineReason::Explicit(reason.to_owned()))
    }

    /// Quarantines an incarnation for good, for a reason given as such (the cluster's removal,
    /// say).
    pub fn quarantine_for(
        &self,
        remote: &UniqueAddress,
        reason: QuarantineReason,
    ) -> Result<(), SendError> {
        self.command(Command::Quarantine(remote.clone(), reason))
    }

    /// Sends a cluster membership message to the incarnation at `to`, at most once, on the
    /// control lane (see [`RemoteInput::SendCluster`](flotilla_proto::remoting::RemoteInput::SendCluster)). Refuses one larger than the maximum
    /// frame size.
    pub fn send_cluster(&self, to: &Address, bytes: Vec<u8>) -> Result<(), SendError> {
        if to.port().is_none() {
            return Err(SendError::NotRemote(to.clone()));
        }
        let len = bytes.len() + 1;
        if len > self.max_frame {
            return Err(SendError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        self.command(Command::SendCluster(to.clone(), bytes))
    }

    /// The channel of cluster messages and quarantine notices for the cluster driver. There is
    /// one: the first call takes it, later calls get `None`. Until it is taken, cluster messages
    /// are dropped and counted.
    pub fn cluster_inbound(&self) -> Option<ClusterInboundReceiver> {
        let taken = self
            .cluster
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if taken.is_some() {
            self.cluster_open.store(true, Ordering::SeqCst);
        }
        taken
    }

    /// Remoting's own runtime, where the cluster's internals run too: busy user actors cannot
    /// delay them.
    pub fn runtime(&self) -> &tokio::runtime::Handle {
        &self.runtime
    }

    /// Every association: state, UID, since-when, last cause, quarantined UIDs.
    pub async fn associations(&self) -> Result<Vec<AssociationSnapshot>, SendError> {
        let (tx, rx) = oneshot::channel();
        self.command(Command::Associations(tx))?;
        rx.await.map_err(|_| SendError::Stopped)
    }

    fn command(&self, c: Command) -> Result<(), SendError> {
        self.commands.send(c).map_err(|_| SendError::Stopped)
    }
}
