//! The cluster on a running node: the tokio driver of the pure [`Membership`] machine.
//!
//! ```text
//!  Cluster (handle) ──commands──▶ driver task (on remoting's runtime) ◀── cluster frames,
//!   join / leave / down /          │ owns Membership (pure)                quarantines
//!   subscribe / state              │ Send → codec → RemoteNode::send_cluster (control lane)
//!                                  │ Event → subscribers, the state watch, the log
//!                                  │ Quarantine → remoting; MemberRemoved → Terminated for
//!                                  │   every watcher of an actor on that node
//!                                  │ AcquireLease / ReleaseLease → the lease (lease-majority)
//!                                  └ SelfDowned / SelfRemoved → coordinated shutdown
//! ```
//!
//! The driver runs on remoting's own threads, so user actors that saturate the application's
//! runtime cannot delay gossip, heartbeats or downing decisions. It makes no decision itself.
//!
//! Coordinated shutdown drives a graceful exit: in `cluster-leave` the node asks to leave and
//! waits until it is Exiting, in `cluster-exiting` until the leader has seen that, and in
//! `cluster-shutdown` until it is Removed; each wait is bounded by its phase's timeout. A node
//! that is downed, or removed without having asked, runs coordinated shutdown itself.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use flotilla_actor::{ActorSystem, Phase, ShutdownReason};
use flotilla_core::{Address, ClusterSettings, ConfigError, StateMachine, UniqueAddress};
use flotilla_lease::{AcquireOutcome, Lease, ReleaseOutcome};
use flotilla_proto::association::QuarantineReason;
use flotilla_proto::cluster::{
    ClusterEvent, ClusterInput, ClusterMsg, ClusterOutput, CurrentClusterState, LogLevel, Member,
    MemberStatus, Membership,
};
use flotilla_remote::{ClusterInbound, RemoteNode};
use tokio::sync::{mpsc, oneshot, watch};

use crate::codec;

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The actor system has no remoting.
    #[error("the actor system has no remoting: build it with ActorSystemBuilder::remote")]
    NoRemoting,
    /// A cluster already runs on this actor system.
    #[error("a cluster already runs on this actor system")]
    AlreadyStarted,
    /// The `[cluster]` configuration is not valid.
    #[error("invalid cluster configuration: {0}")]
    Config(#[from] ConfigError),
    /// The lease-majority strategy needs a lease.
    #[error(
        "split-brain-resolver.active-strategy = \"lease-majority\" needs a lease: give one with ClusterBuilder::lease"
    )]
    LeaseRequired,
    /// A shutdown task could not be registered (shutdown has already begun).
    #[error("coordinated shutdown has already begun")]
    ShuttingDown,
}

/// What this node knows of the cluster, as the driver last published it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// The cluster as this node sees it.
    pub state: CurrentClusterState,
    /// This node's own member entry, once it has one.
    pub self_member: Option<Member>,
    /// Whether this node was removed from the cluster (or the driver stopped).
    pub removed: bool,
}

impl Snapshot {
    fn self_status(&self) -> Option<MemberStatus> {
        self.self_member.as_ref().map(|m| m.status)
    }

    /// This node is Exiting and no other member could lead (every other is Down or Exiting, or
    /// there is none): nobody will ever remove it — it is the last member leaving.
    fn nobody_left_to_remove_self(&self) -> bool {
        let Some(me) = &self.self_member else {
            return false;
        };
        me.status == MemberStatus::Exiting
            && self.state.members.iter().all(|m| {
                m.node == me.node || matches!(m.status, MemberStatus::Down | MemberStatus::Exiting)
            })
    }
}

/// The cluster events one subscriber receives: the state when it subscribed, then every change
/// after it, in order, with nothing left out between the two.
#[derive(Debug)]
pub struct ClusterEvents {
    initial: CurrentClusterState,
    rx: mpsc::UnboundedReceiver<ClusterEvent>,
}

impl ClusterEvents {
    /// The cluster as it was when this subscription began.
    pub fn initial_state(&self) -> &CurrentClusterState {
        &self.initial
    }

    /// The next event; `None` once the cluster has stopped.
    pub async fn recv(&mut self) -> Option<ClusterEvent> {
        self.rx.recv().await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<ClusterEvent> {
        self.rx.try_recv().ok()
    }
}

enum Command {
    Input(ClusterInput),
    Subscribe(oneshot::Sender<ClusterEvents>),
    Phis(oneshot::Sender<Vec<(UniqueAddress, f64)>>),
}

/// Starts a [`Cluster`] with options.
#[derive(Debug, Default)]
pub struct ClusterBuilder {
    lease: Option<Lease>,
    seed: Option<u64>,
    settings: Option<ClusterSettings>,
}

impl ClusterBuilder {
    /// The lease the lease-majority strategy competes for (required with that strategy).
    #[must_use]
    pub fn lease(mut self, lease: Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// The seed of the membership machine's choices (gossip targets); random by default.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Uses these settings instead of the actor system's `[cluster]` section.
    #[must_use]
    pub fn settings(mut self, settings: ClusterSettings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Starts the cluster on `system`'s remoting. With `seed-nodes` configured the node starts
    /// joining at once; otherwise call [`Cluster::join`] or [`Cluster::join_seed_nodes`].
    pub fn start(self, system: &ActorSystem) -> Result<Cluster, ClusterError> {
        let node = system
            .remote_node()
            .ok_or(ClusterError::NoRemoting)?
            .clone();
        let settings = self
            .settings
            .unwrap_or_else(|| system.config().cluster.clone());
        settings.validate()?;
        let seeds = settings.seeds()?;
        let strategy = settings.split_brain_resolver.active_strategy;
        if strategy == flotilla_core::Strategy::LeaseMajority && self.lease.is_none() {
            return Err(ClusterError::LeaseRequired);
        }
        let inbound = node.cluster_inbound().ok_or(ClusterError::AlreadyStarted)?;
        let self_node = node.local().clone();
        let membership = Membership::new(
            self_node.clone(),
            settings.clone(),
            self.seed.unwrap_or_else(rand::random),
            now(),
        );
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (snapshot_tx, snapshot) = watch::channel(Snapshot::default());
        let (lease_tx, lease_rx) = mpsc::unbounded_channel();
        let driver = Driver {
            membership,
            node: node.clone(),
            system: system.clone(),
            subscribers: Vec::new(),
            snapshot: snapshot_tx,
            lease: self.lease,
            lease_answers: lease_tx,
            leaving: false,
            members_told: BTreeSet::new(),
        };
        node.runtime()
            .spawn(driver.run(command_rx, inbound, lease_rx));
        let cluster = Cluster {
            inner: Arc::new(Inner {
                self_node,
                settings,
                commands,
                snapshot,
            }),
        };
        cluster.register_shutdown(system)?;
        if !seeds.is_empty() {
            cluster.join_seed_nodes(seeds);
        }
        Ok(cluster)
    }
}

struct Inner {
    self_node: UniqueAddress,
    settings: ClusterSettings,
    commands: mpsc::UnboundedSender<Command>,
    snapshot: watch::Receiver<Snapshot>,
}

/// This node's membership in a cluster. Cheap to clone: clones are handles to the same driver.
///
/// ```no_run
/// use flotilla_actor::ActorSystem;
/// use flotilla_cluster::{Cluster, ClusterEvent};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let system = ActorSystem::builder("orders").remote("10.0.0.2", 2552).build()?;
/// let cluster = Cluster::start(&system)?;
/// let mut events = cluster.subscribe().await;
/// cluster.join_seed_nodes(vec!["flotilla://orders@10.0.0.1:2552".parse()?]);
/// if cluster.when_up().await {
///     println!("Up among {} members", cluster.state().members.len());
/// }
/// while let Some(event) = events.recv().await {
///     if let ClusterEvent::MemberRemoved { member, .. } = event {
///         println!("{} left", member.node);
///     }
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("self", &self.inner.self_node)
            .field("status", &self.snapshot().self_status())
            .finish()
    }
}

impl Cluster {
    /// A builder (lease, seed, settings).
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// Starts the cluster on `system` with its `[cluster]` settings.
    pub fn start(system: &ActorSystem) -> Result<Self, ClusterError> {
        Self::builder().start(system)
    }

    /// This node's incarnation.
    pub fn self_node(&self) -> &UniqueAddress {
        &self.inner.self_node
    }

    /// This node's address.
    pub fn self_address(&self) -> &Address {
        &self.inner.self_node.address
    }

    /// The settings in force.
    pub fn settings(&self) -> &ClusterSettings {
        &self.inner.settings
    }

    /// Joins through these seed nodes: the first may form a new cluster when no other answers
    /// within `seed-node-timeout`.
    pub fn join_seed_nodes(&self, seeds: Vec<Address>) {
        self.input(ClusterInput::JoinSeeds(seeds));
    }

    /// Joins the cluster that the node at `address` is a member of (or forms one, when
    /// `address` is this node).
    pub fn join(&self, address: Address) {
        self.input(ClusterInput::Join(address));
    }

    /// Asks the member at `address` to leave gracefully (Leaving → Exiting → Removed).
    pub fn leave(&self, address: Address) {
        self.input(ClusterInput::Leave(address));
    }

    /// Declares the member at `address` down: the leader removes it without waiting for it.
    pub fn down(&self, address: Address) {
        self.input(ClusterInput::Down(address));
    }

    /// The cluster as this node sees it now: members, unreachable members, leader, seen-by.
    pub fn state(&self) -> CurrentClusterState {
        self.inner.snapshot.borrow().state.clone()
    }

    /// This node's member entry, once it has joined.
    pub fn self_member(&self) -> Option<Member> {
        self.inner.snapshot.borrow().self_member.clone()
    }

    /// Everything [`Cluster::state`] and [`Cluster::self_member`] say, at once.
    pub fn snapshot(&self) -> Snapshot {
        self.inner.snapshot.borrow().clone()
    }

    /// Subscribes to cluster events: the current state first
    /// ([`ClusterEvents::initial_state`]), then every change.
    pub async fn subscribe(&self) -> ClusterEvents {
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.commands.send(Command::Subscribe(tx));
        match rx.await {
            Ok(events) => events,
            Err(_) => {
                // The driver has stopped: the last state, and no events.
                let (_, rx) = mpsc::unbounded_channel();
                ClusterEvents {
                    initial: self.state(),
                    rx,
                }
            }
        }
    }

    /// The failure detector's phi for each member this node monitors by heartbeats (empty once
    /// the cluster has stopped). Above `failure-detector.threshold`, the member is unreachable.
    pub async fn phi_values(&self) -> Vec<(UniqueAddress, f64)> {
        let (tx, rx) = oneshot::channel();
        let _ = self.inner.commands.send(Command::Phis(tx));
        rx.await.unwrap_or_default()
    }

    /// Waits until this node is Up (or later: Leaving, Exiting). Returns `false` if it was
    /// downed or removed first.
    pub async fn when_up(&self) -> bool {
        let snapshot = self.wait_for(|s| {
            s.removed
                || matches!(
                    s.self_status(),
                    Some(
                        MemberStatus::Up
                            | MemberStatus::Leaving
                            | MemberStatus::Exiting
                            | MemberStatus::Down
                    )
                )
        });
        let s = snapshot.await;
        !s.removed && s.self_status() != Some(MemberStatus::Down)
    }

    /// Waits until this node has been removed from the cluster.
    pub async fn when_removed(&self) {
        self.wait_for(|s| s.removed).await;
    }

    async fn wait_for(&self, done: impl Fn(&Snapshot) -> bool) -> Snapshot {
        let mut rx = self.inner.snapshot.clone();
        match rx.wait_for(|s| done(s)).await {
            Ok(s) => s.clone(),
            Err(_) => Snapshot {
                removed: true,
                ..self.snapshot()
            },
        }
    }

    /// Every snapshot the driver publishes, as a watch: the current one at once, then each
    /// change (for extensions that follow membership, such as singletons and sharding).
    pub fn snapshots(&self) -> watch::Receiver<Snapshot> {
        self.inner.snapshot.clone()
    }

    fn input(&self, input: ClusterInput) {
        let _ = self.inner.commands.send(Command::Input(input));
    }

    /// The cluster's tasks in coordinated shutdown.
    fn register_shutdown(&self, system: &ActorSystem) -> Result<(), ClusterError> {
        let cs = system.coordinated_shutdown();
        let c = self.clone();
        cs.add_task(Phase::ClusterLeave, "leave", move || async move {
            let status = c.snapshot().self_status();
            let member = matches!(
                status,
                Some(MemberStatus::Joining | MemberStatus::WeaklyUp | MemberStatus::Up)
            );
            if member {
                tracing::info!(node = %c.self_node(), "coordinated shutdown: leaving the cluster");
                c.leave(c.self_address().clone());
            }
            if status.is_some() {
                c.wait_for(|s| {
                    s.removed
                        || matches!(
                            s.self_status(),
                            Some(MemberStatus::Exiting | MemberStatus::Down)
                        )
                })
                .await;
            }
        })
        .map_err(|_| ClusterError::ShuttingDown)?;
        let c = self.clone();
        cs.add_task(Phase::ClusterShutdown, "wait-removed", move || async move {
            if c.snapshot().self_member.is_some() {
                let s = c.wait_for(|s| s.removed || s.nobody_left_to_remove_self()).await;
                if s.removed {
                    tracing::info!(node = %c.self_node(), "coordinated shutdown: this node is out of the cluster");
                } else {
                    tracing::info!(node = %c.self_node(), "coordinated shutdown: this node is exiting and no other member is left to remove it; leaving the cluster as the last member");
                }
            }
        })
        .map_err(|_| ClusterError::ShuttingDown)?;
        Ok(())
    }
}

struct Driver {
    membership: Membership,
    node: RemoteNode,
    system: ActorSystem,
    subscribers: Vec<mpsc::UnboundedSender<ClusterEvent>>,
    snapshot: watch::Sender<Snapshot>,
    lease: Option<Lease>,
    lease_answers: mpsc::UnboundedSender<bool>,
    /// Whether this node asked to leave (its removal is then expected, not a surprise).
    leaving: bool,
    /// The members remoting was last told of.
    members_told: BTreeSet<Address>,
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut inbound: flotilla_remote::ClusterInboundReceiver,
        mut lease_answers: mpsc::UnboundedReceiver<bool>,
    ) {
        loop {
            let deadline = self.membership.poll_timeout();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(c) = commands.recv() => self.on_command(c),
                i = inbound.recv() => match i {
                    Some(i) => self.on_inbound(i),
                    None => break, // remoting stopped
                },
                Some(acquired) = lease_answers.recv() => {
                    self.membership.handle(now(), ClusterInput::LeaseAcquired(acquired));
                }
                () = sleep => self.membership.handle_timeout(now()),
            }
            self.carry_out();
        }
        self.snapshot.send_modify(|s| s.removed = true);
        tracing::debug!(node = %self.membership.self_node(), "cluster driver stopped: remoting has stopped");
    }

    fn on_command(&mut self, c: Command) {
        match c {
            Command::Input(input) => {
                if let ClusterInput::Leave(a) = &input
                    && *a == self.membership.self_node().address
                {
                    self.leaving = true;
                }
                self.membership.handle(now(), input);
            }
            Command::Phis(reply) => {
                let _ = reply.send(self.membership.phis(now()));
            }
            Command::Subscribe(reply) => {
                let (tx, rx) = mpsc::unbounded_channel();
                let events = ClusterEvents {
                    initial: self.membership.state().clone(),
                    rx,
                };
                if reply.send(events).is_ok() {
                    self.subscribers.push(tx);
                }
            }
        }
    }

    fn on_inbound(&mut self, i: ClusterInbound) {
        match i {
            ClusterInbound::Message { from, bytes } => match codec::decode(&bytes) {
                Ok(msg) => {
                    if msg.from() != &from {
                        metrics::counter!("flotilla_cluster_messages_dropped_total", "reason" => "wrong-sender").increment(1);
                        tracing::warn!(%from, "dropped a cluster message from {from} that claims to come from {}", msg.from());
                        return;
                    }
                    metrics::counter!("flotilla_cluster_messages_received_total", "kind" => msg.kind()).increment(1);
                    self.membership.handle(now(), ClusterInput::Received(msg));
                }
                Err(e) => {
                    metrics::counter!("flotilla_cluster_messages_dropped_total", "reason" => "undecodable").increment(1);
                    tracing::warn!(%from, "dropped an undecodable cluster message from {from}: {e}");
                }
            },
            ClusterInbound::QuarantinedBy { by, reason } => {
                tracing::warn!(%by, "{by} quarantined this node ({reason})");
                self.membership
                    .handle(now(), ClusterInput::QuarantinedBy(by));
            }
            ClusterInbound::Quarantined { node, reason } => self.on_quarantined(&node, &reason),
        }
    }

    /// Remoting quarantined a member's incarnation on its own (failed system messages, remote
    /// deathwatch, an operator): the two can never exchange messages again, so the member is
    /// as good as dead to this node, and the cluster must take it out.
    fn on_quarantined(&mut self, node: &UniqueAddress, reason: &QuarantineReason) {
        if matches!(reason, QuarantineReason::RemovedFromCluster) {
            return; // this driver's own doing, already explained
        }
        let Some(member) = self.membership.gossip().member(node).cloned() else {
            return;
        };
        if matches!(
            member.status,
            MemberStatus::Down | MemberStatus::Removed | MemberStatus::Exiting
        ) {
            return;
        }
        let roles: Vec<&str> = member.roles.iter().map(String::as_str).collect();
        tracing::warn!(
            member = %node,
            "Marking node {node} as TERMINATED due to quarantine (roles [{}]): this node quarantined that incarnation because {reason}. \
             A quarantined incarnation can never exchange messages with this node again, so it is downed and will be removed from the cluster. \
             If that node is still running, it must be restarted (it then joins as a new incarnation).",
            roles.join(", ")
        );
        self.membership
            .handle(now(), ClusterInput::Down(node.address.clone()));
    }

    fn carry_out(&mut self) {
        while let Some(out) = self.membership.poll_output() {
            match out {
                ClusterOutput::Send { to, msg } => self.send(&to, &msg),
                ClusterOutput::Event(event) => self.publish(event),
                ClusterOutput::Quarantine { node, reason } => {
                    tracing::warn!(member = %node, "quarantining {node}: {reason}");
                    let _ = self
                        .node
                        .quarantine_for(&node, QuarantineReason::RemovedFromCluster);
                    self.system.address_terminated(
                        &node.address,
                        &format!("its node {} was removed from the cluster", node.address),
                    );
                }
                ClusterOutput::AcquireLease => self.acquire_lease(),
                ClusterOutput::ReleaseLease => self.release_lease(),
                ClusterOutput::SelfDowned { reason } => {
                    tracing::warn!(node = %self.membership.self_node(), "this node was downed: {reason}; it shuts down");
                    let cs = self.system.coordinated_shutdown().clone();
                    drop(cs.run(ShutdownReason::ClusterDowning));
                }
                ClusterOutput::SelfRemoved => {
                    tracing::info!(node = %self.membership.self_node(), "this node was removed from the cluster");
                    if !self.leaving {
                        let cs = self.system.coordinated_shutdown().clone();
                        drop(cs.run(ShutdownReason::ClusterLeaving));
                    }
                }
                ClusterOutput::Log { level, text } => match level {
                    LogLevel::Info => {
                        tracing::info!(node = %self.membership.self_node(), "{text}")
                    }
                    LogLevel::Warn => {
                        tracing::warn!(node = %self.membership.self_node(), "{text}")
                    }
                },
            }
        }
        // The published state changes without events too (who has seen the gossip).
        let membership = &self.membership;
        self.snapshot.send_if_modified(|s| {
            let removed = s.removed || membership.is_removed();
            let self_member = membership.self_member();
            if s.state == *membership.state()
                && s.self_member.as_ref() == self_member
                && s.removed == removed
            {
                return false;
            }
            s.state = membership.state().clone();
            s.self_member = self_member.cloned();
            s.removed = removed;
            metrics::gauge!("flotilla_cluster_members").set(s.state.members.len() as f64);
            metrics::gauge!("flotilla_cluster_unreachable_members")
                .set(s.state.unreachable.len() as f64);
            true
        });
        // Remote deathwatch leaves members to the cluster (see RemoteInput::ClusterMembers).
        let me = &membership.self_node().address;
        let members: BTreeSet<Address> = membership
            .state()
            .members
            .iter()
            .map(|m| m.node.address.clone())
            .filter(|a| a != me)
            .collect();
        if members != self.members_told {
            let _ = self.node.set_cluster_members(members.clone());
            self.members_told = members;
        }
    }

    fn send(&self, to: &Address, msg: &ClusterMsg) {
        let bytes = match codec::encode(msg) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(remote = %to, "cannot encode a {} message for {to}: {e}", msg.kind());
                return;
            }
        };
        metrics::counter!("flotilla_cluster_messages_sent_total", "kind" => msg.kind())
            .increment(1);
        metrics::counter!("flotilla_cluster_bytes_sent_total", "kind" => msg.kind())
            .increment(bytes.len() as u64);
        if let Err(e) = self.node.send_cluster(to, bytes) {
            tracing::warn!(remote = %to, "cannot send a {} message to {to}: {e}", msg.kind());
        }
    }

    fn publish(&mut self, event: ClusterEvent) {
        metrics::counter!("flotilla_cluster_events_total", "kind" => event.kind()).increment(1);
        tracing::info!(node = %self.membership.self_node(), "{}", describe(&event));
        self.subscribers.retain(|s| s.send(event.clone()).is_ok());
    }

    fn acquire_lease(&self) {
        let Some(lease) = self.lease.clone() else {
            let _ = self.lease_answers.send(false);
            return;
        };
        let answers = self.lease_answers.clone();
        let me = self.membership.self_node().clone();
        tokio::spawn(async move {
            let outcome = lease
                .acquire(move |cause| {
                    tracing::warn!(node = %me, "the split-brain resolver's lease was lost: {cause}");
                })
                .await;
            let granted = matches!(outcome, AcquireOutcome::Granted { .. });
            if !granted {
                tracing::warn!(
                    "the split-brain resolver did not get lease {}: {outcome:?}",
                    lease.name()
                );
            }
            let _ = answers.send(granted);
        });
    }

    fn release_lease(&self) {
        let Some(lease) = self.lease.clone() else {
            return;
        };
        tokio::spawn(async move {
            match lease.release().await {
                ReleaseOutcome::Released | ReleaseOutcome::NotHeld => {}
                other => tracing::warn!(
                    "the split-brain resolver's lease {} may still be held ({other:?}): the other side of a future partition waits for it to expire",
                    lease.name()
                ),
            }
        });
    }
}

/// An event in words, for the log.
fn describe(e: &ClusterEvent) -> String {
    match e {
        ClusterEvent::MemberJoined(m) => format!("member {} is joining", m.node),
        ClusterEvent::MemberWeaklyUp(m) => format!("member {} is weakly up", m.node),
        ClusterEvent::MemberUp(m) => format!("member {} is up", m.node),
        ClusterEvent::MemberLeft(m) => format!("member {} is leaving", m.node),
        ClusterEvent::MemberExited(m) => format!("member {} is exiting", m.node),
        ClusterEvent::MemberDowned(m) => format!("member {} is down", m.node),
        ClusterEvent::MemberRemoved { member, previous } => {
            format!("member {} was removed (it was {previous})", member.node)
        }
        ClusterEvent::UnreachableMember(m) => format!("member {} is unreachable", m.node),
        ClusterEvent::ReachableMember(m) => format!("member {} is reachable again", m.node),
        ClusterEvent::LeaderChanged(Some(l)) => format!("the leader is now {l}"),
        ClusterEvent::LeaderChanged(None) => "there is no leader".to_owned(),
        ClusterEvent::RoleLeaderChanged { role, leader } => match leader {
            Some(l) => format!("the leader of role {role} is now {l}"),
            None => format!("role {role} has no leader"),
        },
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}
