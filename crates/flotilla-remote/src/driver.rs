//! The driver of the pure [`Remoting`] machine: one task on remoting's runtime that takes the
//! handles' commands and the connections' events, feeds them to the machine, and carries out
//! what it asks — connecting, writing frames into lanes, delivering, opening and closing the fast
//! paths.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use flotilla_core::{Address, RemoteSettings, StateMachine, UniqueAddress};
use flotilla_proto::association::{AssociationSnapshot, Cause, QuarantineReason, StateName};
use flotilla_proto::remoting::{Pdu, RemoteInput, RemoteOutput, Remoting};
use flotilla_wire::pdu;
use flotilla_wire::{
    Heartbeat, HeartbeatReply, Kind, QuarantineNotice, SystemAck, SystemEnvelope, UserBatch,
    UserEnvelope,
};
use tokio::sync::{mpsc, oneshot};

use crate::cluster_channel::{ClusterInbound, ClusterSender};
use crate::convert::to_wire_unique;
use crate::inbound::{Inbound, InboundSender, SystemPayload};
use crate::link::{self, Conn, ConnEvent, Dialer};
use crate::paths::{Paths, path};
use crate::queue::Push;

/// What the handles ask of the driver.
pub(crate) enum Command {
    SendUser(Address, UserEnvelope),
    SendSystem(Address, SystemPayload),
    WatchNode(Address),
    UnwatchNode(Address),
    Quarantine(UniqueAddress, QuarantineReason),
    ClusterMembers(BTreeSet<Address>),
    SendCluster(Address, Vec<u8>),
    Associations(oneshot::Sender<Vec<AssociationSnapshot>>),
    /// Answer once no system message to a reachable node waits for its acknowledgement.
    Flushed(oneshot::Sender<()>),
}

pub(crate) struct Driver {
    pub(crate) remoting: Remoting<UserEnvelope, SystemPayload>,
    pub(crate) settings: RemoteSettings,
    /// Opens links.
    pub(crate) dialer: Dialer,
    /// Open links per remote, by id: both nodes may connect at once, and either link serves;
    /// the oldest is used for writing.
    pub(crate) conns: BTreeMap<Address, BTreeMap<u64, Conn>>,
    /// The fast paths of ordinary messages, per node.
    pub(crate) paths: Paths,
    /// Nodes whose fast paths may have changed since they were last set.
    pub(crate) touched: BTreeSet<Address>,
    pub(crate) inbound: InboundSender,
    /// Where cluster messages go, once a cluster has taken the channel (`cluster_open`).
    pub(crate) cluster: ClusterSender,
    pub(crate) cluster_open: Arc<std::sync::atomic::AtomicBool>,
    /// Who waits for every system message to be acknowledged.
    pub(crate) flushes: Vec<oneshot::Sender<()>>,
}

impl Driver {
    pub(crate) async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::Receiver<ConnEvent>,
    ) {
        loop {
            let deadline = self.remoting.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            // What this step's processing owes: a handle's slow-path count, a reader's.
            let mut slow_send = None;
            let mut slow_read = None;
            tokio::select! {
                c = commands.recv() => match c {
                    Some(c) => {
                        if let Command::SendUser(to, _) = &c {
                            slow_send = Some(to.clone());
                        }
                        self.on_command(c);
                    }
                    None => return, // every handle is gone
                },
                Some(mut e) = events.recv() => {
                    if let ConnEvent::Received { reader, .. } = &mut e {
                        slow_read = reader.take();
                    }
                    self.on_event(e);
                }
                () = sleep => self.remoting.handle_timeout(now()),
            }
            self.carry_out();
            // Paths change only after what the machine emitted is in the lanes and the inbound
            // channel; the counts drop only then too.
            self.refresh_paths();
            if let Some(to) = slow_send {
                path(&self.paths, &to).slow.fetch_sub(1, Ordering::SeqCst);
            }
            if let Some(reader) = slow_read {
                reader.in_flight.fetch_sub(1, Ordering::SeqCst);
            }
            if !self.flushes.is_empty() && self.remoting.unacknowledged_system_messages() == 0 {
                for waiting in self.flushes.drain(..) {
                    let _ = waiting.send(());
                }
            }
        }
    }

    /// Opens or closes the fast paths of the nodes touched by the last step: a node's lane is
    /// the oldest connection to the incarnation it is Active with, and only connections to
    /// that incarnation deliver directly.
    fn refresh_paths(&mut self) {
        for remote in std::mem::take(&mut self.touched) {
            let active = self.remoting.active_uid(&remote);
            let open = self.conns.get(&remote);
            for c in open.into_iter().flat_map(|o| o.values()) {
                c.shared
                    .admitted
                    .store(Some(c.uid) == active, Ordering::SeqCst);
            }
            let lane = active
                .and_then(|uid| open?.values().find(|c| c.uid == uid))
                .map(|c| c.ordinary.clone());
            let existing = self
                .paths
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&remote)
                .cloned();
            let path = match existing {
                Some(p) => p,
                None if lane.is_some() => path(&self.paths, &remote),
                None => continue,
            };
            *path.lane.write().unwrap_or_else(|e| e.into_inner()) = lane;
        }
    }

    fn on_command(&mut self, c: Command) {
        let input = match c {
            Command::SendUser(to, msg) => RemoteInput::SendUser { to, msg },
            Command::SendSystem(to, msg) => RemoteInput::SendSystem { to, msg },
            Command::WatchNode(remote) => RemoteInput::WatchNode { remote },
            Command::UnwatchNode(remote) => RemoteInput::UnwatchNode { remote },
            Command::Quarantine(remote, reason) => RemoteInput::Quarantine { remote, reason },
            Command::ClusterMembers(members) => RemoteInput::ClusterMembers { members },
            Command::SendCluster(to, bytes) => RemoteInput::SendCluster { to, bytes },
            Command::Associations(reply) => {
                let _ = reply.send(self.remoting.associations());
                return;
            }
            Command::Flushed(reply) => {
                self.flushes.push(reply);
                return;
            }
        };
        self.remoting.handle(now(), input);
    }

    fn on_event(&mut self, e: ConnEvent) {
        let input = match e {
            ConnEvent::Up {
                remote,
                outbound,
                conn,
            } => {
                self.touched.insert(remote.address.clone());
                self.conns
                    .entry(remote.address.clone())
                    .or_default()
                    .insert(conn.id, conn);
                if outbound {
                    RemoteInput::Connected {
                        remote: remote.address,
                        uid: remote.uid,
                    }
                } else {
                    RemoteInput::Accepted { remote }
                }
            }
            ConnEvent::ConnectFailed { remote, reason } => {
                RemoteInput::ConnectFailed { remote, reason }
            }
            ConnEvent::Received { from, pdu, .. } => RemoteInput::Received { from, pdu },
            ConnEvent::Heard { from } => RemoteInput::Heard { from },
            ConnEvent::Lost {
                remote,
                conn_id,
                reason,
            } => {
                // The association is lost only with its last connection.
                self.touched.insert(remote.clone());
                let Some(open) = self.conns.get_mut(&remote) else {
                    return;
                };
                if open.remove(&conn_id).is_none() {
                    return;
                }
                if !open.is_empty() {
                    return;
                }
                self.conns.remove(&remote);
                RemoteInput::ConnectionLost { remote, reason }
            }
        };
        self.remoting.handle(now(), input);
    }

    fn carry_out(&mut self) {
        while let Some(out) = self.remoting.poll_output() {
            match out {
                RemoteOutput::Connect { to } => link::connect(to, self.dialer.clone()),
                RemoteOutput::Transmit { to, pdu } => self.transmit(&to, pdu),
                RemoteOutput::Disconnect { remote, uid } => {
                    self.touched.insert(remote.clone());
                    if let Some(open) = self.conns.get_mut(&remote) {
                        open.retain(|_, c| uid.is_some_and(|u| u != c.uid));
                        if open.is_empty() {
                            self.conns.remove(&remote);
                        }
                    }
                }
                RemoteOutput::DeliverUser { from, msg } => {
                    let mut messages = UserBatch::new();
                    match messages.push(&msg.borrowed()) {
                        Ok(()) => self.inbound.send(Inbound::User { from, messages }),
                        Err(e) => crate::inbound::undecodable(&from, &e),
                    }
                }
                RemoteOutput::DeliverSystem { from, msg } => {
                    self.inbound.send(Inbound::System { from, payload: msg });
                }
                RemoteOutput::DeadLetter { to, msg, reason } => {
                    metrics::counter!("flotilla_remote_dead_letters_total").increment(1);
                    let reason = format!("{reason:?}");
                    tracing::debug!(remote = %to, "message to {} dropped to dead letters: {reason}", msg.recipient);
                    self.inbound.send(Inbound::DeadLetter {
                        to,
                        envelope: msg,
                        reason,
                    });
                }
                RemoteOutput::DroppedInbound { from } => {
                    metrics::counter!("flotilla_remote_quarantined_frames_dropped_total")
                        .increment(1);
                    tracing::debug!(%from, "dropped a frame from quarantined {from}");
                }
                RemoteOutput::Association(e) => {
                    self.touched.insert(e.remote.clone());
                    metrics::counter!("flotilla_remote_association_transitions_total", "to" => e.to.to_string()).increment(1);
                    if let Cause::Quarantined { uid, reason } = &e.cause
                        && self.cluster_open.load(Ordering::SeqCst)
                    {
                        self.cluster.notice(ClusterInbound::Quarantined {
                            node: UniqueAddress {
                                address: e.remote.clone(),
                                uid: *uid,
                            },
                            reason: reason.clone(),
                        });
                    }
                    match e.to {
                        StateName::Quarantined => {
                            tracing::warn!(remote = %e.remote, "association with {} {} -> {}: {}", e.remote, e.from, e.to, e.cause)
                        }
                        StateName::Gated => {
                            tracing::warn!(remote = %e.remote, "association with {} {} -> {}: {}; no connection attempt for {:?}", e.remote, e.from, e.to, e.cause, self.settings.retry_gate_closed_for)
                        }
                        _ => {
                            tracing::info!(remote = %e.remote, "association with {} {} -> {}: {}", e.remote, e.from, e.to, e.cause)
                        }
                    }
                    self.inbound.send(Inbound::Association {
                        remote: e.remote,
                        from: e.from,
                        to: e.to,
                        cause: e.cause.to_string(),
                    });
                }
                RemoteOutput::AddressTerminated { remote, uid } => {
                    tracing::warn!(%remote, "the failure detector declared {remote} dead");
                    self.inbound
                        .send(Inbound::AddressTerminated { remote, uid });
                }
                RemoteOutput::ThisSystemQuarantined { by, reason } => {
                    tracing::error!(%by, "this node was quarantined by {by} ({reason}); it cannot talk to that node again until this node restarts");
                    if self.cluster_open.load(Ordering::SeqCst) {
                        self.cluster.notice(ClusterInbound::QuarantinedBy {
                            by: by.clone(),
                            reason: reason.clone(),
                        });
                    }
                    self.inbound
                        .send(Inbound::ThisSystemQuarantined { by, reason });
                }
                RemoteOutput::DeliverCluster { from, bytes } => {
                    let open = self.cluster_open.load(Ordering::SeqCst);
                    let reason = if open {
                        self.cluster.message(from, bytes).err()
                    } else {
                        Some("no-cluster")
                    };
                    if let Some(reason) = reason {
                        metrics::counter!("flotilla_remote_cluster_messages_dropped_total", "reason" => reason).increment(1);
                    }
                }
                RemoteOutput::DroppedCluster { to, reason } => {
                    metrics::counter!("flotilla_remote_cluster_messages_dropped_total", "reason" => "not-sent").increment(1);
                    tracing::debug!(remote = %to, "a cluster message to {to} was not sent: {reason}");
                }
            }
        }
    }

    fn transmit(&self, to: &UniqueAddress, pdu: Pdu<UserEnvelope, SystemPayload>) {
        // The oldest connection, so that the one in use changes only when it dies: messages to
        // one recipient never overtake each other on two connections.
        let oldest = self
            .conns
            .get(&to.address)
            .and_then(|open| open.values().find(|c| c.uid == to.uid));
        let Some(conn) = oldest else {
            return; // no connection to that incarnation: system messages are resent later
        };
        let local_uid = self.remoting.local().uid;
        let max = self.settings.maximum_frame_size;
        let mut frame = Vec::new();
        let encoded = match &pdu {
            Pdu::User(env) => pdu::encode(Kind::User, env, max, &mut frame),
            Pdu::System { seq, msg } => pdu::encode(
                Kind::System,
                &SystemEnvelope {
                    from_uid: local_uid,
                    to_uid: to.uid,
                    seq: *seq,
                    manifest: msg.manifest.clone(),
                    payload: msg.payload.clone(),
                },
                max,
                &mut frame,
            ),
            Pdu::SystemAck { upto } => pdu::encode(
                Kind::SystemAck,
                &SystemAck {
                    from_uid: local_uid,
                    upto: *upto,
                },
                max,
                &mut frame,
            ),
            Pdu::Heartbeat { seq } => pdu::encode(
                Kind::Heartbeat,
                &Heartbeat {
                    from_uid: local_uid,
                    seq: *seq,
                },
                max,
                &mut frame,
            ),
            Pdu::HeartbeatReply { seq } => pdu::encode(
                Kind::HeartbeatReply,
                &HeartbeatReply {
                    from_uid: local_uid,
                    seq: *seq,
                },
                max,
                &mut frame,
            ),
            Pdu::Cluster(bytes) => {
                flotilla_wire::frame::encode(Kind::Cluster, bytes, max, &mut frame)
                    .map_err(flotilla_wire::WireError::from)
            }
            Pdu::QuarantineNotice { to_uid, reason } => match to_wire_unique(self.remoting.local())
            {
                Some(from) => pdu::encode(
                    Kind::QuarantineNotice,
                    &QuarantineNotice {
                        from,
                        to_uid: *to_uid,
                        reason: reason.clone(),
                    },
                    max,
                    &mut frame,
                ),
                None => return,
            },
        };
        if let Err(e) = encoded {
            tracing::warn!(remote = %to, "cannot encode a frame for {to}: {e}");
            return;
        }
        match pdu {
            Pdu::User(envelope) => {
                let queued = conn.ordinary.push_with(|out| {
                    out.extend_from_slice(&frame);
                    Ok::<(), std::convert::Infallible>(())
                });
                if queued != Ok(Push::Queued) {
                    // As on the fast path: the sender learns of it through dead letters.
                    metrics::counter!("flotilla_remote_dead_letters_total").increment(1);
                    tracing::debug!(remote = %to, "the outbound queue to {to} is full; message to {} dropped", envelope.recipient);
                    self.inbound.send(Inbound::DeadLetter {
                        to: to.address.clone(),
                        envelope,
                        reason: "the outbound queue is full (remote.outbound-message-queue-size)"
                            .to_owned(),
                    });
                }
            }
            _ => {
                match conn.control.try_send(frame) {
                    Ok(()) => {
                        metrics::counter!("flotilla_remote_frames_sent_total", "lane" => "control")
                            .increment(1);
                    }
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // Heartbeats, acknowledgements and gossip are superseded and system
                        // messages resent: dropping one costs nothing but time.
                        metrics::counter!("flotilla_remote_frames_dropped_total", "reason" => "control-lane-full").increment(1);
                        tracing::debug!(remote = %to, "the control lane to {to} is full ({} frames): the peer does not read; a frame was dropped", link::CONTROL_LANE_FRAMES);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {}
                }
            }
        }
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
