//! One node's remoting, as a pure state machine: an [`Association`] per remote address, a
//! reliable system-message [`Sender`] and [`Receiver`] per remote incarnation, and the quarantine
//! notices between them.
//!
//! ```text
//!  user message ──▶ Association(addr) ──Transmit──▶ Transmit{to: addr#uid, User}
//!  system message ─▶ Sender(addr#uid) ──Transmit──▶ Transmit{to: addr#uid, System{seq}} (only
//!                   (waits for a uid; resent on     while associated with that uid; the sender
//!                    reconnect and every interval)   resends what is lost)
//!  frame from addr#uid ─▶ quarantined uid? dropped and counted
//!                      ─▶ User → DeliverUser, System → Receiver → DeliverSystem + SystemAck,
//!                         SystemAck → Sender, QuarantineNotice for this node → ThisSystemQuarantined,
//!                         Heartbeat → HeartbeatReply, HeartbeatReply → the watched node's detector
//!  Sender gave up ─▶ quarantine addr#uid (system message delivery failed)
//!  watched node's detector says dead ─▶ AddressTerminated, quarantine addr#uid
//!    (never for a cluster member: its death is the cluster's to decide, see
//!     [`RemoteInput::ClusterMembers`])
//! ```
//!
//! The transport (a tokio driver, or the simulator) turns [`RemoteOutput::Connect`] into a
//! connection and a handshake, reports [`RemoteInput::Connected`] / [`RemoteInput::Accepted`] /
//! [`RemoteInput::ConnectFailed`] / [`RemoteInput::ConnectionLost`], writes
//! [`RemoteOutput::Transmit`] frames on the lane their kind belongs to, and feeds every decoded
//! frame back as [`RemoteInput::Received`]. Message payloads `M` (user) and `S` (system) are
//! opaque here.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

use flotilla_core::{Address, RemoteSettings, StateMachine, UniqueAddress};

use crate::association::{
    Association, AssociationEvent, AssociationInput, AssociationOutput, AssociationSnapshot,
    DeadLetterReason, QuarantineReason, StateName,
};
use crate::failure_detector::PhiAccrual;
use crate::system_messages::{Received, Receiver, Sender, SenderInput, SenderOutput, Seq};

#[cfg(test)]
mod tests;

/// A frame's content, both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu<M, S> {
    /// An ordinary message (ordinary lane).
    User(M),
    /// A numbered system message (control lane).
    System {
        /// Its sequence number for this pair of incarnations.
        seq: Seq,
        /// The message.
        msg: S,
    },
    /// Cumulative acknowledgement of system messages (control lane).
    SystemAck {
        /// Everything up to here arrived.
        upto: Seq,
    },
    /// A heartbeat of remote deathwatch (control lane).
    Heartbeat {
        /// A counter, echoed in the reply.
        seq: u64,
    },
    /// The answer to a heartbeat (control lane).
    HeartbeatReply {
        /// The heartbeat's counter.
        seq: u64,
    },
    /// "I have quarantined you" (control lane).
    QuarantineNotice {
        /// The quarantined incarnation.
        to_uid: u64,
        /// Why, in words.
        reason: String,
    },
    /// A cluster membership message, opaque here (control lane, at most once: the membership
    /// protocol repeats what matters).
    Cluster(Vec<u8>),
}

/// Inputs of a [`Remoting`] machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteInput<M, S> {
    /// Send an ordinary message to whichever incarnation lives at `to`.
    SendUser {
        /// The remote node.
        to: Address,
        /// The message.
        msg: M,
    },
    /// Send a system message reliably to the incarnation of `to` this node is (or will be)
    /// associated with.
    SendSystem {
        /// The remote node.
        to: Address,
        /// The message.
        msg: S,
    },
    /// Our outbound connection to `remote` completed its handshake with incarnation `uid`.
    Connected {
        /// The remote node.
        remote: Address,
        /// Its UID.
        uid: u64,
    },
    /// An inbound connection from `remote` completed its handshake.
    Accepted {
        /// The remote incarnation.
        remote: UniqueAddress,
    },
    /// Our outbound connection to `remote` failed.
    ConnectFailed {
        /// The remote node.
        remote: Address,
        /// What happened.
        reason: String,
    },
    /// The connection to `remote` broke.
    ConnectionLost {
        /// The remote node.
        remote: Address,
        /// What happened.
        reason: String,
    },
    /// A frame arrived from `from`.
    Received {
        /// The sending incarnation.
        from: UniqueAddress,
        /// The frame's content.
        pdu: Pdu<M, S>,
    },
    /// Frames arrived from `from` that the driver delivered itself (ordinary messages on an
    /// admitted connection): keeps the association's silence clock current. Drivers report it
    /// at most about once a second per connection.
    Heard {
        /// The sending incarnation.
        from: UniqueAddress,
    },
    /// Start watching node `remote` (one more actor there is watched): heartbeats begin and
    /// feed a failure detector.
    WatchNode {
        /// The remote node.
        remote: Address,
    },
    /// One watch of node `remote` fewer; at zero the heartbeats stop.
    UnwatchNode {
        /// The remote node.
        remote: Address,
    },
    /// The nodes that are members of this node's cluster now (sent by the cluster on every
    /// change). Remote deathwatch leaves them to the cluster: no heartbeats, no failure
    /// detector, no quarantine of its own — the cluster's failure detector and split-brain
    /// resolver decide, and the cluster terminates their actors when it removes them. Otherwise
    /// remoting's faster detector would declare a member dead and get it downed behind the
    /// resolver's back, on both sides of a partition.
    ClusterMembers {
        /// Their addresses.
        members: BTreeSet<Address>,
    },
    /// Quarantine `remote` (failure detector, cluster removal, an explicit call).
    Quarantine {
        /// The incarnation.
        remote: UniqueAddress,
        /// Why.
        reason: QuarantineReason,
    },
    /// Send a cluster membership message to the incarnation at `to`, at most once: at once
    /// while Active, after the connection otherwise (at most [`CLUSTER_BUFFER`] wait per node,
    /// the oldest dropped first); dropped while the association is Gated or Quarantined.
    SendCluster {
        /// The remote node.
        to: Address,
        /// The encoded message.
        bytes: Vec<u8>,
    },
}

/// How many cluster messages wait per remote node for its connection.
pub const CLUSTER_BUFFER: usize = 64;

/// Outputs of a [`Remoting`] machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteOutput<M, S> {
    /// Open a connection to `to` and handshake.
    Connect {
        /// The remote node.
        to: Address,
    },
    /// Write a frame to incarnation `to`.
    Transmit {
        /// The incarnation.
        to: UniqueAddress,
        /// The frame's content.
        pdu: Pdu<M, S>,
    },
    /// Close the connections to `remote` (to `uid`, or the pending one when `None`).
    Disconnect {
        /// The remote node.
        remote: Address,
        /// The incarnation, if known.
        uid: Option<u64>,
    },
    /// An ordinary message for a local actor.
    DeliverUser {
        /// The sender.
        from: UniqueAddress,
        /// The message.
        msg: M,
    },
    /// A system message for the local system, in order, exactly once.
    DeliverSystem {
        /// The sender.
        from: UniqueAddress,
        /// The message.
        msg: S,
    },
    /// An ordinary message that cannot be sent.
    DeadLetter {
        /// Its destination.
        to: Address,
        /// The message.
        msg: M,
        /// Why.
        reason: DeadLetterReason,
    },
    /// A frame from a quarantined incarnation was dropped.
    DroppedInbound {
        /// The incarnation.
        from: UniqueAddress,
    },
    /// An association changed state.
    Association(AssociationEvent),
    /// The failure detector declared a watched node dead: every watcher of an actor there gets
    /// `Terminated`. Its incarnation, if one was known, is quarantined.
    AddressTerminated {
        /// The node.
        remote: Address,
        /// Its incarnation, if one was ever reached.
        uid: Option<u64>,
    },
    /// A remote node quarantined this one: only a restart (a new UID) recovers.
    ThisSystemQuarantined {
        /// The quarantining node.
        by: UniqueAddress,
        /// Its reason.
        reason: String,
    },
    /// A cluster membership message for the local cluster.
    DeliverCluster {
        /// The sender.
        from: UniqueAddress,
        /// The encoded message.
        bytes: Vec<u8>,
    },
    /// A cluster membership message could not be sent (the association is Gated or
    /// Quarantined, or too many waited for a connection).
    DroppedCluster {
        /// Its destination.
        to: Address,
        /// Why, in words.
        reason: &'static str,
    },
}

struct Peer<M, S> {
    association: Association<M>,
    /// The reliable sender towards the current incarnation.
    sender: Option<(u64, Sender<S>)>,
    /// System messages waiting for the first incarnation to be known.
    pending: Vec<S>,
    /// Reliable receivers, per incarnation heard from.
    receivers: BTreeMap<u64, Receiver>,
    /// The last incarnation this node was associated with (it outlives a gate).
    last_uid: Option<u64>,
    /// Cluster messages waiting for the connection.
    cluster: VecDeque<Vec<u8>>,
}

/// Remote deathwatch of one node.
struct Watched {
    watches: usize,
    detector: PhiAccrual,
    /// Since when it is watched: without any reply by `first-heartbeat-estimate` later, the
    /// detector starts anyway, so a node that never answers is still declared dead.
    since: Instant,
    next_beat: Instant,
    seq: u64,
    /// The incarnation that last answered.
    uid: Option<u64>,
}

/// One node's remoting. See the [module docs](self).
pub struct Remoting<M, S> {
    local: UniqueAddress,
    settings: RemoteSettings,
    peers: BTreeMap<Address, Peer<M, S>>,
    watched: BTreeMap<Address, Watched>,
    /// Members of this node's cluster: deathwatch of them is the cluster's.
    cluster_members: BTreeSet<Address>,
    quarantined_by: BTreeMap<UniqueAddress, String>,
    outputs: VecDeque<RemoteOutput<M, S>>,
}

impl<M, S> std::fmt::Debug for Remoting<M, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remoting")
            .field("local", &self.local)
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl<M, S: Clone> Remoting<M, S> {
    /// The remoting of the node `local`.
    pub fn new(local: UniqueAddress, settings: RemoteSettings) -> Self {
        Self {
            local,
            settings,
            peers: BTreeMap::new(),
            watched: BTreeMap::new(),
            cluster_members: BTreeSet::new(),
            quarantined_by: BTreeMap::new(),
            outputs: VecDeque::new(),
        }
    }

    /// This node.
    pub fn local(&self) -> &UniqueAddress {
        &self.local
    }

    /// Every association, for queries.
    pub fn associations(&self) -> Vec<AssociationSnapshot> {
        self.peers
            .values()
            .map(|p| p.association.snapshot())
            .collect()
    }

    /// The association state with `remote`, if there is one.
    pub fn state(&self, remote: &Address) -> Option<StateName> {
        self.peers.get(remote).map(|p| p.association.state())
    }

    /// The incarnation `remote` is actively associated with: ordinary messages to it may be
    /// written straight to its connection, and ordinary messages from it delivered straight to
    /// the local runtime, while this holds.
    pub fn active_uid(&self, remote: &Address) -> Option<u64> {
        let a = &self.peers.get(remote)?.association;
        (a.state() == StateName::Active).then(|| a.uid()).flatten()
    }

    /// System messages sent to nodes this one is Active with and not acknowledged yet: what a
    /// shutdown waits for (messages to unreachable nodes would wait in vain).
    pub fn unacknowledged_system_messages(&self) -> usize {
        self.peers
            .values()
            .filter(|p| p.association.state() == StateName::Active)
            .filter_map(|p| p.sender.as_ref())
            .map(|(_, sender)| sender.unacknowledged())
            .sum()
    }

    /// Whether a remote node has quarantined this one.
    pub fn is_quarantined_by_anyone(&self) -> bool {
        !self.quarantined_by.is_empty()
    }

    fn peer(&mut self, now: Instant, remote: &Address) -> &mut Peer<M, S> {
        let settings = &self.settings;
        self.peers.entry(remote.clone()).or_insert_with(|| Peer {
            association: Association::new(remote.clone(), settings.clone(), now),
            sender: None,
            pending: Vec::new(),
            receivers: BTreeMap::new(),
            last_uid: None,
            cluster: VecDeque::new(),
        })
    }

    fn unique(remote: &Address, uid: u64) -> UniqueAddress {
        UniqueAddress {
            address: remote.clone(),
            uid,
        }
    }

    /// Feeds the association of `remote` and routes everything it says.
    fn associate(&mut self, now: Instant, remote: &Address, input: AssociationInput<M>) {
        let peer = self.peer(now, remote);
        let before = (peer.association.state(), peer.association.uid());
        peer.association.handle(now, input);
        self.route_association(now, remote, before);
    }

    fn route_association(
        &mut self,
        now: Instant,
        remote: &Address,
        before: (StateName, Option<u64>),
    ) {
        let Some(peer) = self.peers.get_mut(remote) else {
            return;
        };
        let mut outputs = Vec::new();
        while let Some(o) = peer.association.poll_output() {
            outputs.push(o);
        }
        let after = (peer.association.state(), peer.association.uid());
        if after.0 == StateName::Active && after.1.is_some() {
            peer.last_uid = after.1;
        }
        for o in outputs {
            let out = match o {
                AssociationOutput::Connect => RemoteOutput::Connect { to: remote.clone() },
                AssociationOutput::Transmit { uid, msg } => RemoteOutput::Transmit {
                    to: Self::unique(remote, uid),
                    pdu: Pdu::User(msg),
                },
                AssociationOutput::DeadLetter { msg, reason } => RemoteOutput::DeadLetter {
                    to: remote.clone(),
                    msg,
                    reason,
                },
                AssociationOutput::Disconnect { uid } => RemoteOutput::Disconnect {
                    remote: remote.clone(),
                    uid,
                },
                AssociationOutput::SendQuarantineNotice { uid, reason } => RemoteOutput::Transmit {
                    to: Self::unique(remote, uid),
                    pdu: Pdu::QuarantineNotice {
                        to_uid: uid,
                        reason: reason.to_string(),
                    },
                },
                AssociationOutput::DroppedInbound { uid } => RemoteOutput::DroppedInbound {
                    from: Self::unique(remote, uid),
                },
                AssociationOutput::Event(e) => RemoteOutput::Association(e),
            };
            self.outputs.push_back(out);
        }
        // Newly associated with an incarnation: its reliable sender starts (or resumes), and
        // the cluster messages that waited go.
        if after.0 == StateName::Active
            && let Some(uid) = after.1
            && before != after
        {
            for bytes in std::mem::take(&mut peer.cluster) {
                self.outputs.push_back(RemoteOutput::Transmit {
                    to: Self::unique(remote, uid),
                    pdu: Pdu::Cluster(bytes),
                });
            }
            self.start_sender(now, remote, uid);
        } else if matches!(after.0, StateName::Gated | StateName::Quarantined) {
            for _ in std::mem::take(&mut peer.cluster) {
                self.outputs.push_back(RemoteOutput::DroppedCluster {
                    to: remote.clone(),
                    reason: "the association failed before the message could be sent",
                });
            }
        }
    }

    fn send_cluster(&mut self, now: Instant, to: Address, bytes: Vec<u8>) {
        if let Some(uid) = self.active_uid(&to) {
            self.outputs.push_back(RemoteOutput::Transmit {
                to: Self::unique(&to, uid),
                pdu: Pdu::Cluster(bytes),
            });
            return;
        }
        let peer = self.peer(now, &to);
        match peer.association.state() {
            StateName::Gated | StateName::Quarantined => {
                self.outputs.push_back(RemoteOutput::DroppedCluster {
                    to,
                    reason: "the association is gated or quarantined",
                });
            }
            _ => {
                peer.cluster.push_back(bytes);
                if peer.cluster.len() > CLUSTER_BUFFER {
                    peer.cluster.pop_front();
                    self.outputs.push_back(RemoteOutput::DroppedCluster {
                        to: to.clone(),
                        reason: "too many cluster messages waited for the connection",
                    });
                }
                self.associate(now, &to, AssociationInput::Open);
            }
        }
    }

    fn start_sender(&mut self, now: Instant, remote: &Address, uid: u64) {
        let settings = self.settings.clone();
        let Some(peer) = self.peers.get_mut(remote) else {
            return;
        };
        match &mut peer.sender {
            Some((current, sender)) if *current == uid => {
                sender.handle(now, SenderInput::Reconnected);
            }
            slot => {
                // A new incarnation: what was owed to the old one is moot (it is gone), but what
                // waited for a first incarnation goes to this one.
                let mut sender = Sender::new(&settings);
                for msg in peer.pending.drain(..) {
                    sender.handle(now, SenderInput::Send(msg));
                }
                *slot = Some((uid, sender));
            }
        }
        self.route_sender(now, remote);
    }

    fn route_sender(&mut self, now: Instant, remote: &Address) {
        let Some(peer) = self.peers.get_mut(remote) else {
            return;
        };
        let Some((uid, sender)) = &mut peer.sender else {
            return;
        };
        let uid = *uid;
        let connected =
            peer.association.state() == StateName::Active && peer.association.uid() == Some(uid);
        let mut gave_up = None;
        while let Some(o) = sender.poll_output() {
            match o {
                SenderOutput::Transmit { seq, msg } if connected => {
                    self.outputs.push_back(RemoteOutput::Transmit {
                        to: Self::unique(remote, uid),
                        pdu: Pdu::System { seq, msg },
                    });
                }
                SenderOutput::Transmit { .. } => {} // resent once connected again
                SenderOutput::GaveUp(why) => gave_up = Some(why),
            }
        }
        if let Some(why) = gave_up {
            self.associate(
                now,
                remote,
                AssociationInput::Quarantine {
                    uid,
                    reason: QuarantineReason::SystemMessageDeliveryFailed(why.to_string()),
                },
            );
        }
    }

    fn on_received(&mut self, now: Instant, from: UniqueAddress, pdu: Pdu<M, S>) {
        let remote = from.address.clone();
        let uid = from.uid;
        if let Pdu::QuarantineNotice { to_uid, reason } = &pdu {
            // Read even from an incarnation we quarantined: it is news about us.
            if *to_uid == self.local.uid && !self.quarantined_by.contains_key(&from) {
                // Only whether anyone did matters after the first few.
                if self.quarantined_by.len() < 64 {
                    self.quarantined_by.insert(from.clone(), reason.clone());
                }
                self.outputs.push_back(RemoteOutput::ThisSystemQuarantined {
                    by: from,
                    reason: reason.clone(),
                });
            }
            return;
        }
        let quarantined = self
            .peers
            .get(&remote)
            .is_some_and(|p| p.association.is_quarantined(uid));
        self.associate(now, &remote, AssociationInput::Heard { uid });
        if quarantined {
            return; // the association reported the drop
        }
        match pdu {
            Pdu::User(msg) => self
                .outputs
                .push_back(RemoteOutput::DeliverUser { from, msg }),
            Pdu::System { seq, msg } => {
                let peer = self.peer(now, &remote);
                if !peer.receivers.contains_key(&uid) {
                    // A new incarnation: the receivers of quarantined ones (a restarted
                    // node's old incarnations) will never deliver again.
                    let association = &peer.association;
                    peer.receivers
                        .retain(|u, _| !association.is_quarantined(*u));
                }
                let received = peer.receivers.entry(uid).or_default().receive(seq, msg);
                let upto = match received {
                    Received::Deliver { msg, upto } => {
                        self.outputs.push_back(RemoteOutput::DeliverSystem {
                            from: from.clone(),
                            msg,
                        });
                        upto
                    }
                    Received::Drop { upto } => upto,
                };
                self.outputs.push_back(RemoteOutput::Transmit {
                    to: from,
                    pdu: Pdu::SystemAck { upto },
                });
            }
            Pdu::SystemAck { upto } => {
                if let Some(peer) = self.peers.get_mut(&remote)
                    && let Some((current, sender)) = &mut peer.sender
                    && *current == uid
                {
                    sender.handle(now, SenderInput::Ack { upto });
                }
                self.route_sender(now, &remote);
            }
            Pdu::Heartbeat { seq } => self.outputs.push_back(RemoteOutput::Transmit {
                to: from,
                pdu: Pdu::HeartbeatReply { seq },
            }),
            Pdu::HeartbeatReply { .. } => {
                if let Some(w) = self.watched.get_mut(&remote) {
                    w.detector.heartbeat(now);
                    w.uid = Some(uid);
                }
            }
            Pdu::QuarantineNotice { .. } => {}
            Pdu::Cluster(bytes) => self
                .outputs
                .push_back(RemoteOutput::DeliverCluster { from, bytes }),
        }
    }

    /// Sends due heartbeats and declares dead the watched nodes whose detector says so.
    fn watch_tick(&mut self, now: Instant) {
        let interval = self.settings.watch_failure_detector.heartbeat_interval;
        let first_estimate = self
            .settings
            .watch_failure_detector
            .first_heartbeat_estimate;
        let mut dead = Vec::new();
        let mut beats = Vec::new();
        for (remote, w) in &mut self.watched {
            if self.cluster_members.contains(remote) {
                continue;
            }
            if !w.detector.is_monitoring() && now >= w.since + first_estimate {
                // No answer yet: start the clock as if one had come, as Akka does.
                w.detector.heartbeat(now);
            }
            if w.detector.is_monitoring() && !w.detector.is_available(now) {
                dead.push((remote.clone(), w.uid));
                continue;
            }
            if now >= w.next_beat {
                w.seq += 1;
                w.next_beat = now + interval;
                beats.push((remote.clone(), w.seq));
            }
        }
        for (remote, seq) in beats {
            let target = self.peers.get(&remote).and_then(|p| {
                (p.association.state() == StateName::Active)
                    .then(|| p.association.uid())
                    .flatten()
            });
            match target {
                Some(uid) => self.outputs.push_back(RemoteOutput::Transmit {
                    to: Self::unique(&remote, uid),
                    pdu: Pdu::Heartbeat { seq },
                }),
                None => self.associate(now, &remote, AssociationInput::Open),
            }
        }
        for (remote, answered) in dead {
            self.watched.remove(&remote);
            let uid = answered.or_else(|| self.peers.get(&remote).and_then(|p| p.last_uid));
            self.outputs.push_back(RemoteOutput::AddressTerminated {
                remote: remote.clone(),
                uid,
            });
            if let Some(uid) = uid {
                self.associate(
                    now,
                    &remote,
                    AssociationInput::Quarantine {
                        uid,
                        reason: QuarantineReason::FailureDetector,
                    },
                );
            }
        }
    }
}

impl<M, S: Clone> StateMachine for Remoting<M, S> {
    type Input = RemoteInput<M, S>;
    type Output = RemoteOutput<M, S>;

    fn handle(&mut self, now: Instant, input: RemoteInput<M, S>) {
        match input {
            RemoteInput::SendUser { to, msg } => {
                self.associate(now, &to, AssociationInput::Send(msg));
            }
            RemoteInput::SendSystem { to, msg } => {
                let peer = self.peer(now, &to);
                match &mut peer.sender {
                    Some((_, sender)) => {
                        sender.handle(now, SenderInput::Send(msg));
                        self.route_sender(now, &to);
                    }
                    None => peer.pending.push(msg),
                }
                self.associate(now, &to, AssociationInput::Open);
            }
            RemoteInput::Connected { remote, uid } => {
                self.associate(now, &remote, AssociationInput::Connected { uid });
            }
            RemoteInput::Accepted { remote } => {
                self.associate(
                    now,
                    &remote.address,
                    AssociationInput::Accepted { uid: remote.uid },
                );
            }
            RemoteInput::ConnectFailed { remote, reason } => {
                self.associate(now, &remote, AssociationInput::ConnectFailed { reason });
            }
            RemoteInput::ConnectionLost { remote, reason } => {
                self.associate(now, &remote, AssociationInput::ConnectionLost { reason });
            }
            RemoteInput::Received { from, pdu } => self.on_received(now, from, pdu),
            RemoteInput::Heard { from } => {
                let uid = from.uid;
                self.associate(now, &from.address, AssociationInput::Heard { uid });
            }
            RemoteInput::WatchNode { remote } => {
                let settings = self.settings.watch_failure_detector.clone();
                self.watched
                    .entry(remote)
                    .or_insert_with(|| Watched {
                        watches: 0,
                        detector: PhiAccrual::new(settings),
                        since: now,
                        next_beat: now,
                        seq: 0,
                        uid: None,
                    })
                    .watches += 1;
                self.watch_tick(now);
            }
            RemoteInput::UnwatchNode { remote } => {
                if let Some(w) = self.watched.get_mut(&remote) {
                    w.watches = w.watches.saturating_sub(1);
                    if w.watches == 0 {
                        self.watched.remove(&remote);
                    }
                }
            }
            RemoteInput::ClusterMembers { members } => {
                // A node that stops being a member (it was removed) is watched afresh, as if
                // from now: the cluster has already terminated what was watched there.
                let settings = &self.settings.watch_failure_detector;
                for (remote, w) in &mut self.watched {
                    if self.cluster_members.contains(remote) != members.contains(remote) {
                        w.detector = PhiAccrual::new(settings.clone());
                        w.since = now;
                        w.next_beat = now;
                    }
                }
                self.cluster_members = members;
            }
            RemoteInput::Quarantine { remote, reason } => {
                self.associate(
                    now,
                    &remote.address,
                    AssociationInput::Quarantine {
                        uid: remote.uid,
                        reason,
                    },
                );
            }
            RemoteInput::SendCluster { to, bytes } => self.send_cluster(now, to, bytes),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if self
            .watched
            .iter()
            .any(|(a, w)| now >= w.next_beat && !self.cluster_members.contains(a))
        {
            self.watch_tick(now);
        }
        let due: Vec<Address> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                let a = p.association.poll_timeout().is_some_and(|t| t <= now);
                let s = p
                    .sender
                    .as_ref()
                    .and_then(|(_, s)| s.poll_timeout())
                    .is_some_and(|t| t <= now);
                a || s
            })
            .map(|(a, _)| a.clone())
            .collect();
        for remote in due {
            let Some(peer) = self.peers.get_mut(&remote) else {
                continue;
            };
            let before = (peer.association.state(), peer.association.uid());
            peer.association.handle_timeout(now);
            self.route_association(now, &remote, before);
            if let Some(peer) = self.peers.get_mut(&remote)
                && let Some((_, sender)) = &mut peer.sender
            {
                sender.handle_timeout(now);
            }
            self.route_sender(now, &remote);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .values()
            .flat_map(|p| {
                [
                    p.association.poll_timeout(),
                    p.sender.as_ref().and_then(|(_, s)| s.poll_timeout()),
                ]
            })
            .chain(
                self.watched
                    .iter()
                    .filter(|(a, _)| !self.cluster_members.contains(*a))
                    .map(|(_, w)| Some(w.next_beat)),
            )
            .flatten()
            .min()
    }

    fn poll_output(&mut self) -> Option<RemoteOutput<M, S>> {
        self.outputs.pop_front()
    }
}
