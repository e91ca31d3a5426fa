//! The simulated world: nodes made of the real machines, the network between them, the lease
//! backend, and one clock. See the [module docs](super).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use flotilla_core::{
    Address, ClusterSettings, LeaseSettings, RemoteSettings, StateMachine, UniqueAddress,
};

use crate::association::{AssociationEvent, Cause, QuarantineReason, StateName};
use crate::cluster::singleton::{
    SingletonInput, SingletonManager, SingletonMsg, SingletonOutput, SingletonSettings, oldest,
};
use crate::cluster::{ClusterEvent, ClusterInput, ClusterMsg, ClusterOutput, Member, MemberStatus};
use crate::cluster::{Membership, sim::address};
use crate::lease::{
    AcquireOutcome, BackendReply, FencingToken, HolderInput, HolderOutput, LeaseEvent, LeaseHolder,
    LeaseOp, LeaseTable, OpId,
};
use crate::remoting::{Pdu, RemoteInput, RemoteOutput, Remoting};
use crate::sharding::{
    CoordinatorInput, CoordinatorOutput, CoordinatorSettings, EntityId, LeastShardAllocation,
    Region, RegionInput, RegionOutput, RegionSettings, Shard, ShardCoordinator, ShardId,
    ShardInput, ShardOutput, ShardSettings, ToCoordinator, ToRegion, shard_of,
};
use crate::sim::seeded::{SeededRng, TraceHash};

/// An entity's message in the workload: a number unique in the run.
pub type Payload = u64;

/// What travels on the ordinary lane between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserMsg {
    /// A region to the coordinator.
    ToCoordinator(ToCoordinator),
    /// The coordinator to a region.
    ToRegion(ToRegion),
    /// A region forwards an entity's message to the shard's home.
    Deliver {
        /// The shard.
        shard: ShardId,
        /// The entity.
        entity: EntityId,
        /// The message.
        msg: Payload,
    },
    /// Between the coordinator's singleton managers.
    Singleton(SingletonMsg),
}

/// System messages: a counter per sender, checked to arrive once and in order.
pub type SystemMsg = u64;

/// The faults in force on the network and the lease backend.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// Links that drop every frame and never complete a connection (from, to).
    pub blocked: BTreeSet<(usize, usize)>,
    /// Nodes cut off from the lease backend (their requests never arrive).
    pub backend_blocked: BTreeSet<usize>,
    /// The lease backend answers nothing (every request times out unapplied).
    pub backend_down: bool,
    /// Added to every lease request on its way to the backend (a slow backend: past the
    /// request timeout, requests are applied after the caller gave up on them).
    pub backend_latency: Duration,
    /// Probability, in millionths, that a frame is lost.
    pub loss_ppm: u32,
    /// Probability, in millionths, that a frame is delivered twice.
    pub duplicate_ppm: u32,
    /// Extra random delay of up to this much per frame, without FIFO order (reordering).
    pub jitter: Duration,
}

/// Settings of a simulated world.
#[derive(Debug, Clone)]
pub struct WorldSettings {
    /// How many nodes.
    pub nodes: usize,
    /// The seed nodes by index (default: every node, as discovery gives them; with a shorter
    /// static list, restarting every seed while other nodes run forms a second cluster, as in
    /// Akka).
    pub seeds: Vec<usize>,
    /// Shards of the one entity type.
    pub shards: u32,
    /// Cluster settings of every node.
    pub cluster: ClusterSettings,
    /// Remote settings of every node.
    pub remote: RemoteSettings,
    /// Lease settings of every shard's lease.
    pub lease: LeaseSettings,
    /// Settings of every shard.
    pub shard: ShardSettings,
    /// The backend client's request timeout (an unanswered request is `Unknown` after it).
    pub lease_request_timeout: Duration,
    /// One-way network latency, drawn uniformly from this range.
    pub latency: (Duration, Duration),
    /// How long coordinated shutdown may take before the process exits anyway.
    pub shutdown_timeout: Duration,
    /// How long a graceful leave may take before the node shuts down anyway.
    pub leave_timeout: Duration,
}

impl Default for WorldSettings {
    fn default() -> Self {
        let mut cluster = ClusterSettings::default();
        cluster.split_brain_resolver.stable_after = Duration::from_secs(7).into();
        Self {
            nodes: 5,
            seeds: (0..5).collect(),
            shards: 20,
            cluster,
            remote: RemoteSettings::default(),
            lease: LeaseSettings::default(),
            shard: ShardSettings {
                use_lease: true,
                ..ShardSettings::default()
            },
            lease_request_timeout: Duration::from_secs(2),
            latency: (Duration::from_micros(200), Duration::from_millis(5)),
            shutdown_timeout: Duration::from_secs(10),
            leave_timeout: Duration::from_secs(25),
        }
    }
}

/// Something the invariant checks look at, recorded as it happens (simulated time since start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A shard's lease was granted to a node (the grant reached the holder).
    Granted {
        /// The node.
        node: usize,
        /// Its incarnation.
        uid: u64,
        /// The shard.
        shard: ShardId,
        /// The hold's token.
        token: FencingToken,
    },
    /// An entity got a message.
    Delivered {
        /// The node.
        node: usize,
        /// The shard.
        shard: ShardId,
        /// The entity.
        entity: EntityId,
        /// The message.
        msg: Payload,
        /// The token of the node's hold of the shard's lease, if it has one.
        token: Option<FencingToken>,
        /// Whether the node's holder still trusted its lease.
        lease_valid: bool,
    },
    /// An association changed state.
    Association {
        /// The node whose association it is.
        node: usize,
        /// The change.
        event: AssociationEvent,
        /// The incarnation it is active with afterwards, if any.
        active_uid: Option<u64>,
    },
    /// A system message arrived.
    System {
        /// The receiving node and incarnation.
        node: usize,
        /// Its incarnation.
        uid: u64,
        /// The sending incarnation.
        from: UniqueAddress,
        /// The sender's counter.
        seq: SystemMsg,
    },
}

/// A violation found while the world ran, with when and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The invariant's name.
    pub invariant: &'static str,
    /// Simulated time since the start.
    pub at: Duration,
    /// What was seen.
    pub what: String,
}

#[derive(Debug)]
enum Ev {
    Frame {
        from: UniqueAddress,
        to: usize,
        to_uid: u64,
        pdu: Pdu<UserMsg, SystemMsg>,
    },
    Connected {
        node: usize,
        uid: u64,
        remote: Address,
        remote_uid: u64,
    },
    Accepted {
        node: usize,
        uid: u64,
        remote: UniqueAddress,
    },
    ConnectFailed {
        node: usize,
        uid: u64,
        remote: Address,
        reason: String,
    },
    ConnectionLost {
        node: usize,
        uid: u64,
        remote: Address,
    },
    LeaseArrives {
        node: usize,
        uid: u64,
        lease: String,
        op: OpId,
        request: LeaseOp,
    },
    LeaseAnswer {
        node: usize,
        uid: u64,
        lease: String,
        op: OpId,
        reply: BackendReply,
    },
    EntityStopped {
        node: usize,
        uid: u64,
        shard: ShardId,
        entity: EntityId,
    },
    Exit {
        node: usize,
        uid: u64,
    },
    Thaw {
        node: usize,
        uid: u64,
        until: Instant,
    },
    /// A graceful leave's coordinated shutdown ran out of phase time.
    LeaveTimeout {
        node: usize,
        uid: u64,
    },
    /// A member's removal reaches the coordinator or the region of node `node`. In the real
    /// drivers each follows the membership on its own, so either may hear of it first: the
    /// simulator delivers each one after its own random delay.
    Removed {
        node: usize,
        uid: u64,
        gone: UniqueAddress,
        to_region: bool,
    },
}

impl Ev {
    fn target(&self) -> (usize, u64) {
        match self {
            Self::Frame { to, to_uid, .. } => (*to, *to_uid),
            Self::Connected { node, uid, .. }
            | Self::Accepted { node, uid, .. }
            | Self::ConnectFailed { node, uid, .. }
            | Self::ConnectionLost { node, uid, .. }
            | Self::LeaseArrives { node, uid, .. }
            | Self::LeaseAnswer { node, uid, .. }
            | Self::EntityStopped { node, uid, .. }
            | Self::Exit { node, uid }
            | Self::Thaw { node, uid, .. }
            | Self::Removed { node, uid, .. }
            | Self::LeaveTimeout { node, uid } => (*node, *uid),
        }
    }
}

/// The coordinator and the region of a node hear of a member's removal each within this long
/// (µs) of the node's membership, in either order.
const REMOVAL_SPREAD_MICROS: u64 = 500_000;

/// An input for one of a node's machines, queued while the node works through a step.
enum Local {
    Cluster(ClusterInput),
    Remote(RemoteInput<UserMsg, SystemMsg>),
    Region(RegionInput<Payload>),
    Shard(ShardId, ShardInput<Payload>),
    Holder(ShardId, HolderInput),
    Singleton(SingletonInput),
    Coordinator(CoordinatorInput),
}

impl Local {
    fn describe(&self) -> String {
        match self {
            Self::Cluster(i) => format!("cluster {i:?}"),
            Self::Remote(i) => format!("remote {i:?}"),
            Self::Region(i) => format!("region {i:?}"),
            Self::Shard(s, i) => format!("shard {s} {i:?}"),
            Self::Holder(s, i) => format!("holder {s} {i:?}"),
            Self::Singleton(i) => format!("singleton {i:?}"),
            Self::Coordinator(i) => format!("coordinator {i:?}"),
        }
    }
}

/// A lease's holder on one node, with the backend requests it waits for.
struct HolderSlot {
    holder: LeaseHolder,
    /// Requests sent: answered by the backend's reply or by the request timeout, whichever
    /// comes first.
    pending: BTreeMap<OpId, Instant>,
}

/// One incarnation of a node: every machine it runs.
pub struct Incarnation {
    /// Its address and UID.
    pub me: UniqueAddress,
    /// Remoting.
    pub remoting: Remoting<UserMsg, SystemMsg>,
    /// Cluster membership.
    pub membership: Membership,
    singleton: SingletonManager,
    coordinator: Option<ShardCoordinator>,
    /// The region of the one entity type (gone once the node shuts down).
    pub region: Option<Region<Payload>>,
    /// Its shards.
    pub shards: BTreeMap<ShardId, Shard<Payload>>,
    holders: BTreeMap<ShardId, HolderSlot>,
    /// Entities running, per shard.
    pub entities: BTreeMap<ShardId, BTreeSet<EntityId>>,
    /// The coordinator location told to the region last.
    told_coordinator: Option<Option<UniqueAddress>>,
    /// Cluster members told to remoting last.
    told_members: BTreeSet<Address>,
    /// The members of the last state followed (those missing from the next are removed).
    present: BTreeSet<UniqueAddress>,
    /// Shutting down since, and whether it was a graceful leave.
    pub shutting_down: Option<Instant>,
    leaving: bool,
    /// Incarnations this node's remoting quarantined, by address.
    pub quarantined: BTreeMap<Address, BTreeSet<u64>>,
    /// The next system message counter per remote address.
    system_seq: BTreeMap<Address, SystemMsg>,
    next_system_at: Instant,
    /// Cached: the earliest timer of any machine (local time).
    next_timer: Option<Instant>,
}

/// A simulated node: an address and its incarnations over time.
pub struct Node {
    /// Its index.
    pub index: usize,
    /// Its address (stable across restarts).
    pub address: Address,
    /// The running incarnation, if the process runs.
    pub live: Option<Incarnation>,
    /// Every UID it ran with, oldest first.
    pub uids: Vec<u64>,
    /// Frozen (SIGSTOP) until then: nothing runs; what arrives waits.
    pub frozen_until: Option<Instant>,
    /// How far its clock runs ahead of the true time (jumps only forward).
    pub clock_offset: Duration,
    /// What arrived while it was frozen, in order: delivered when it thaws.
    parked: Vec<Ev>,
    /// Its machine is gone for good ([`World::lose`]): it never starts again.
    pub lost: bool,
}

impl Node {
    /// Its local clock at the true instant `now`.
    pub fn local(&self, now: Instant) -> Instant {
        now + self.clock_offset
    }

    /// The running incarnation's UID.
    pub fn uid(&self) -> Option<u64> {
        self.live.as_ref().map(|l| l.me.uid)
    }
}

/// Counters of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames delivered.
    pub frames: u64,
    /// Frames lost by faults, dead or restarted targets.
    pub frames_lost: u64,
    /// Frames duplicated by faults.
    pub frames_duplicated: u64,
    /// Lease requests that reached the backend.
    pub lease_requests: u64,
    /// Lease requests answered by the request timeout.
    pub lease_timeouts: u64,
    /// Workload messages sent.
    pub sent: u64,
    /// Workload messages delivered to an entity.
    pub delivered: u64,
    /// Messages dropped by regions or shards (buffers full, no home).
    pub dropped: u64,
    /// Node crashes.
    pub crashes: u64,
    /// Node starts (the first ones included).
    pub starts: u64,
}

/// The world. See the [module docs](super).
pub struct World {
    /// The seed of the run.
    pub seed: u64,
    rng: SeededRng,
    start: Instant,
    now: Instant,
    /// Its settings.
    pub settings: WorldSettings,
    /// The nodes, by index.
    pub nodes: Vec<Node>,
    queue: BTreeMap<(Instant, u64), Ev>,
    seq: u64,
    last_frame: BTreeMap<(usize, usize), Instant>,
    /// The faults in force.
    pub conditions: Conditions,
    /// The lease backend.
    pub table: LeaseTable,
    /// Cluster messages in flight, by handle (remoting carries their handle as bytes).
    cluster_msgs: BTreeMap<u64, ClusterMsg>,
    next_handle: u64,
    /// What happened, for the invariant checks.
    pub records: Vec<(Duration, Record)>,
    /// Violations found as things happened.
    pub violations: Vec<Violation>,
    /// Counters.
    pub counters: Counters,
    hash: TraceHash,
    next_payload: Payload,
    /// Workload messages sent, by payload: (entity, when).
    pub sent: BTreeMap<Payload, (EntityId, Duration)>,
    /// A line of log per notable step, when tracing is on (for replaying a failure).
    pub trace: Option<Vec<String>>,
    /// Stopped: time could not move on.
    pub stalled: bool,
    /// Frames sent, by kind and link, when tracing is on (to find a message storm's source).
    pub frame_kinds: Option<BTreeMap<String, u64>>,
    /// Frames sent (lost ones included) in each second of simulated time since the start.
    pub frames_per_second: Vec<u64>,
}

/// Seconds of simulated time whose frames [`World::frames_per_second`] counts (a run is a few
/// minutes; this bounds the table whatever a caller does).
const MAX_SECONDS_COUNTED: usize = 24 * 3600;

/// A frame's kind and link, for [`World::frame_kinds`].
fn frame_kind(from: usize, to: usize, pdu: &Pdu<UserMsg, SystemMsg>) -> String {
    let what = match pdu {
        Pdu::User(UserMsg::ToCoordinator(m)) => format!("to coordinator {m:?}"),
        Pdu::User(UserMsg::ToRegion(m)) => format!("to region {m:?}"),
        Pdu::User(UserMsg::Deliver { shard, .. }) => format!("deliver shard {shard}"),
        Pdu::User(UserMsg::Singleton(m)) => format!("singleton {m:?}"),
        Pdu::System { .. } => "system".into(),
        Pdu::SystemAck { .. } => "system ack".into(),
        Pdu::Heartbeat { .. } | Pdu::HeartbeatReply { .. } => "heartbeat".into(),
        Pdu::QuarantineNotice { .. } => "quarantine notice".into(),
        Pdu::Cluster(_) => "cluster".into(),
    };
    format!("{from}->{to} {what}")
}

/// The lease of shard `s`.
pub fn lease_name(shard: &str) -> String {
    format!("sim-shard-{shard}")
}

fn index_of(a: &Address, n: usize) -> Option<usize> {
    a.port()
        .and_then(|p| p.checked_sub(2551))
        .map(usize::from)
        .filter(|i| *i < n)
}

fn from_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl World {
    /// A world of `settings.nodes` nodes, none started yet.
    pub fn new(seed: u64, settings: WorldSettings, start: Instant) -> Self {
        let nodes = (0..settings.nodes)
            .map(|i| Node {
                index: i,
                address: address(i),
                live: None,
                uids: Vec::new(),
                frozen_until: None,
                clock_offset: Duration::ZERO,
                parked: Vec::new(),
                lost: false,
            })
            .collect();
        Self {
            seed,
            rng: SeededRng::new(seed),
            start,
            now: start,
            settings,
            nodes,
            queue: BTreeMap::new(),
            seq: 0,
            last_frame: BTreeMap::new(),
            conditions: Conditions::default(),
            table: LeaseTable::new(),
            cluster_msgs: BTreeMap::new(),
            next_handle: 0,
            records: Vec::new(),
            violations: Vec::new(),
            counters: Counters::default(),
            hash: TraceHash::default(),
            next_payload: 0,
            sent: BTreeMap::new(),
            trace: None,
            stalled: false,
            frame_kinds: None,
            frames_per_second: Vec::new(),
        }
    }

    /// A pseudo-random number (xorshift64*), from the seed only.
    pub fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// A random number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.random() % n.max(1)
    }

    fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && self.below(1_000_000) < u64::from(ppm)
    }

    fn mix(&mut self, values: &[u64]) {
        for v in values {
            self.hash.add(&v.to_le_bytes());
        }
    }

    fn mix_text(&mut self, text: &str) {
        self.hash.add(text.as_bytes());
        if let Some(trace) = &mut self.trace {
            trace.push(format!("[{:>10.3?}] {text}", self.now - self.start));
        }
    }

    /// A machine's log line, kept in the trace only (it is not part of the hash: the hash
    /// follows what happened, not how it is worded).
    fn note(&mut self, i: usize, who: &str, text: &str) {
        if let Some(trace) = &mut self.trace {
            trace.push(format!(
                "[{:>10.3?}] node {i} {who}: {text}",
                self.now - self.start
            ));
        }
    }

    /// A digest of everything that happened: equal for two runs of the same seed.
    pub fn trace_hash(&self) -> u64 {
        self.hash.value()
    }

    /// The true time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The true current instant.
    pub fn now(&self) -> Instant {
        self.now
    }

    fn violation(&mut self, invariant: &'static str, what: String) {
        let at = self.elapsed();
        self.mix_text(&format!("VIOLATION {invariant}: {what}"));
        self.violations.push(Violation {
            invariant,
            at,
            what,
        });
    }

    fn record(&mut self, r: Record) {
        let t = self.elapsed();
        self.records.push((t, r));
    }

    fn schedule(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.settings.latency;
        let span = from_micros(hi.saturating_sub(lo)).max(1);
        lo + Duration::from_micros(self.below(span))
    }

    /// Whether node `i`'s process runs (frozen or not).
    pub fn alive(&self, i: usize) -> bool {
        self.nodes[i].live.is_some()
    }

    /// Whether node `i` is frozen now.
    pub fn frozen(&self, i: usize) -> bool {
        self.nodes[i].frozen_until.is_some_and(|t| t > self.now)
    }

    /// Node `i`'s local clock now.
    pub fn local_now(&self, i: usize) -> Instant {
        self.nodes[i].local(self.now)
    }

    // ----------------------------------------------------------------------------------------
    // Process control.

    /// Starts node `i` as a new incarnation (a fresh UID) that joins through the seed nodes.
    /// A node that is [lost](Self::lose) does not start.
    pub fn start(&mut self, i: usize) {
        if self.alive(i) || self.nodes[i].lost {
            return;
        }
        let uid = self.random() | 1;
        let node_seed = self.random();
        let me = UniqueAddress {
            address: self.nodes[i].address.clone(),
            uid,
        };
        self.counters.starts += 1;
        self.mix_text(&format!("node {i} starts as uid {uid}"));
        let local = self.local_now(i);
        let settings = &self.settings;
        let region = Region::new(me.clone(), RegionSettings::default());
        let inc = Incarnation {
            me: me.clone(),
            remoting: Remoting::new(me.clone(), settings.remote.clone()),
            membership: Membership::new(me.clone(), settings.cluster.clone(), node_seed, local),
            singleton: SingletonManager::new(me, SingletonSettings::default()),
            coordinator: None,
            region: Some(region),
            shards: BTreeMap::new(),
            holders: BTreeMap::new(),
            entities: BTreeMap::new(),
            told_coordinator: None,
            told_members: BTreeSet::new(),
            present: BTreeSet::new(),
            shutting_down: None,
            leaving: false,
            quarantined: BTreeMap::new(),
            system_seq: BTreeMap::new(),
            next_system_at: local + Duration::from_secs(2),
            next_timer: None,
        };
        let node = &mut self.nodes[i];
        node.uids.push(uid);
        node.live = Some(inc);
        node.frozen_until = None;
        let seeds = self.settings.seeds.iter().map(|s| address(*s)).collect();
        self.step(i, vec![Local::Cluster(ClusterInput::JoinSeeds(seeds))]);
    }

    /// Crashes node `i` (`kill -9`): nothing more runs there, nothing is released. Peers with a
    /// connection to it see it close.
    pub fn crash(&mut self, i: usize) {
        if !self.alive(i) {
            return;
        }
        self.counters.crashes += 1;
        self.mix_text(&format!("node {i} crashes"));
        self.end_process(i);
    }

    /// Node `i`'s machine dies for good: it crashes and never starts again (no supervisor
    /// brings it back). Nothing answers at its address from now on, so whatever still routes
    /// there loses its messages.
    pub fn lose(&mut self, i: usize) {
        self.mix_text(&format!("node {i} is lost for good"));
        self.crash(i);
        self.nodes[i].lost = true;
    }

    fn end_process(&mut self, i: usize) {
        self.nodes[i].live = None;
        self.nodes[i].frozen_until = None;
        self.nodes[i].parked.clear();
        let gone = self.nodes[i].address.clone();
        for j in 0..self.nodes.len() {
            if j == i {
                continue;
            }
            let Some(uid) = self.nodes[j].uid() else {
                continue;
            };
            let connected = self.nodes[j]
                .live
                .as_ref()
                .is_some_and(|l| l.remoting.state(&gone) == Some(StateName::Active));
            if connected {
                let at = self.now + self.latency();
                self.schedule(
                    at,
                    Ev::ConnectionLost {
                        node: j,
                        uid,
                        remote: gone.clone(),
                    },
                );
            }
        }
    }

    /// Freezes node `i` for `d` (`SIGSTOP` … `SIGCONT`): no timer runs, arrivals wait.
    pub fn freeze(&mut self, i: usize, d: Duration) {
        let Some(uid) = self.nodes[i].uid() else {
            return;
        };
        self.mix_text(&format!("node {i} freezes for {d:?}"));
        let until = self.now + d;
        self.nodes[i].frozen_until = Some(until);
        self.schedule(
            until,
            Ev::Thaw {
                node: i,
                uid,
                until,
            },
        );
    }

    /// Lets a frozen node `i` run again now (`SIGCONT`); what arrived meanwhile comes in.
    pub fn thaw(&mut self, i: usize) {
        if self.nodes[i].frozen_until.is_none() {
            return;
        }
        self.mix_text(&format!("node {i} thaws"));
        self.nodes[i].frozen_until = None;
        let parked = std::mem::take(&mut self.nodes[i].parked);
        let now = self.now;
        for ev in parked {
            self.schedule(now, ev);
        }
    }

    /// Moves node `i`'s clock forward by `d`.
    pub fn jump_clock(&mut self, i: usize, d: Duration) {
        self.mix_text(&format!("node {i}'s clock jumps {d:?} ahead"));
        self.nodes[i].clock_offset += d;
        self.refresh_timer(i);
    }

    /// Node `i` leaves the cluster gracefully: its shards are handed off, then it leaves and
    /// exits once removed.
    pub fn leave(&mut self, i: usize) {
        let Some(inc) = self.nodes[i].live.as_mut() else {
            return;
        };
        if inc.leaving || inc.shutting_down.is_some() {
            return;
        }
        inc.leaving = true;
        let uid = inc.me.uid;
        self.mix_text(&format!("node {i} leaves"));
        // Coordinated shutdown bounds a leave by its phases' timeouts (region hand-off 10 s,
        // cluster-leave 5 s, cluster-exiting 10 s): a node that never sees its removal (the
        // last gossip was lost in a partition) still ends.
        let at = self.now + self.settings.leave_timeout;
        self.schedule(at, Ev::LeaveTimeout { node: i, uid });
        let address = self.nodes[i].address.clone();
        self.step(
            i,
            vec![
                Local::Region(RegionInput::Leave),
                Local::Singleton(SingletonInput::Leave),
                Local::Cluster(ClusterInput::Leave(address)),
            ],
        );
    }

    /// Sends one workload message to `entity` from node `from`'s region.
    pub fn send(&mut self, from: usize, entity: &str) -> Option<Payload> {
        let inc = self.nodes[from].live.as_ref()?;
        if inc.region.is_none() || self.frozen(from) {
            return None;
        }
        let msg = self.next_payload;
        self.next_payload += 1;
        self.counters.sent += 1;
        let t = self.elapsed();
        self.sent.insert(msg, (entity.to_owned(), t));
        let shard = shard_of(entity, self.settings.shards);
        self.step(
            from,
            vec![Local::Region(RegionInput::Deliver {
                shard,
                entity: entity.to_owned(),
                msg,
            })],
        );
        Some(msg)
    }

    // ----------------------------------------------------------------------------------------
    // Running.

    /// The machines whose timers are due now, per node (for a stall's report).
    fn due_machines(&self) -> String {
        let mut out = Vec::new();
        for n in &self.nodes {
            let Some(inc) = n.live.as_ref() else { continue };
            let local = n.local(self.now);
            let due = |t: Option<Instant>| t.is_some_and(|t| t <= local);
            let mut names = Vec::new();
            if due(inc.remoting.poll_timeout()) {
                names.push("remoting".to_owned());
            }
            if due(inc.membership.poll_timeout()) {
                names.push("membership".to_owned());
            }
            if due(inc.singleton.poll_timeout()) {
                names.push(format!("singleton ({})", inc.singleton.state_name()));
            }
            if due(inc
                .coordinator
                .as_ref()
                .and_then(StateMachine::poll_timeout))
            {
                names.push("coordinator".to_owned());
            }
            if due(inc.region.as_ref().and_then(StateMachine::poll_timeout)) {
                names.push("region".to_owned());
            }
            for (id, s) in &inc.shards {
                if due(s.poll_timeout()) {
                    names.push(format!("shard {id} ({})", s.phase_name()));
                }
            }
            for (id, h) in &inc.holders {
                if due(h.holder.poll_timeout()) {
                    names.push(format!("holder {id} ({})", h.holder.state_name()));
                }
            }
            if !names.is_empty() {
                out.push(format!("node {}: {}", n.index, names.join(", ")));
            }
        }
        out.join("; ")
    }

    fn refresh_timer(&mut self, i: usize) {
        let Some(inc) = self.nodes[i].live.as_mut() else {
            return;
        };
        let mut next = [
            inc.remoting.poll_timeout(),
            inc.membership.poll_timeout(),
            inc.singleton.poll_timeout(),
            inc.coordinator
                .as_ref()
                .and_then(StateMachine::poll_timeout),
            inc.region.as_ref().and_then(StateMachine::poll_timeout),
            Some(inc.next_system_at),
        ]
        .into_iter()
        .flatten()
        .min();
        for s in inc.shards.values() {
            next = next.into_iter().chain(s.poll_timeout()).min();
        }
        for h in inc.holders.values() {
            next = next.into_iter().chain(h.holder.poll_timeout()).min();
        }
        inc.next_timer = next;
    }

    /// The next instant (true time) some node has a timer due.
    fn next_timer(&self) -> Option<(Instant, usize)> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let local = n.live.as_ref()?.next_timer?;
                let due = local.checked_sub(n.clock_offset).unwrap_or(self.now);
                let due = due.max(n.frozen_until.unwrap_or(due));
                Some((due, n.index))
            })
            .min()
    }

    /// Runs until `until`: every delivery and timer in time order (timers first on a tie).
    pub fn run_until(&mut self, until: Instant) {
        let mut same_instant = (self.now, 0u64);
        loop {
            if self.stalled {
                // Nothing runs any more; time still passes so that every caller's loop ends.
                self.now = self.now.max(until);
                return;
            }
            if same_instant.0 == self.now {
                same_instant.1 += 1;
                if same_instant.1 > 200_000 {
                    let what = self.due_machines();
                    self.violation(
                        "time moves on",
                        format!(
                            "200 000 steps at one instant (a timer that never moves on?): {what}"
                        ),
                    );
                    self.stalled = true;
                    continue;
                }
            } else {
                same_instant = (self.now, 0);
            }
            let event = self.queue.keys().next().copied();
            let timer = self.next_timer();
            let timer_first = match (event, timer) {
                (None, None) => break,
                (Some((e, _)), Some((t, _))) => t <= e,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            if timer_first {
                let Some((t, i)) = timer else { break };
                if t > until {
                    break;
                }
                self.now = self.now.max(t);
                self.fire_timers(i);
            } else {
                let Some(key) = event else { break };
                if key.0 > until {
                    break;
                }
                let Some(ev) = self.queue.remove(&key) else {
                    break;
                };
                self.now = self.now.max(key.0);
                self.deliver(ev);
            }
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d`.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn fire_timers(&mut self, i: usize) {
        let local = self.local_now(i);
        let mut locals = Vec::new();
        let mut system = false;
        {
            let Some(inc) = self.nodes[i].live.as_mut() else {
                return;
            };
            let due = |t: Option<Instant>| t.is_some_and(|t| t <= local);
            if due(inc.remoting.poll_timeout()) {
                inc.remoting.handle_timeout(local);
            }
            if due(inc.membership.poll_timeout()) {
                inc.membership.handle_timeout(local);
            }
            if due(inc.singleton.poll_timeout()) {
                inc.singleton.handle_timeout(local);
            }
            if let Some(c) = inc.coordinator.as_mut()
                && due(c.poll_timeout())
            {
                c.handle_timeout(local);
            }
            if let Some(r) = inc.region.as_mut()
                && due(r.poll_timeout())
            {
                r.handle_timeout(local);
            }
            for s in inc.shards.values_mut() {
                if due(s.poll_timeout()) {
                    s.handle_timeout(local);
                }
            }
            for h in inc.holders.values_mut() {
                if due(h.holder.poll_timeout()) {
                    h.holder.handle_timeout(local);
                }
            }
            // Backend requests unanswered within the request timeout are Unknown.
            let timeout = self.settings.lease_request_timeout;
            for (shard, h) in &mut inc.holders {
                let expired: Vec<OpId> = h
                    .pending
                    .iter()
                    .filter(|(_, sent)| **sent + timeout <= local)
                    .map(|(op, _)| *op)
                    .collect();
                for op in expired {
                    h.pending.remove(&op);
                    self.counters.lease_timeouts += 1;
                    locals.push(Local::Holder(
                        shard.clone(),
                        HolderInput::Reply {
                            op,
                            reply: BackendReply::Unknown {
                                reason: "request timed out".into(),
                            },
                        },
                    ));
                }
            }
            if inc.next_system_at <= local {
                inc.next_system_at = local + Duration::from_secs(2);
                system = true;
            }
        }
        if system {
            locals.extend(self.system_messages(i));
        }
        self.mix(&[1, i as u64, from_micros(self.elapsed())]);
        self.step(i, locals);
    }

    /// Every two seconds each node sends a numbered system message to every other member.
    fn system_messages(&mut self, i: usize) -> Vec<Local> {
        let Some(inc) = self.nodes[i].live.as_mut() else {
            return Vec::new();
        };
        if inc.shutting_down.is_some() {
            return Vec::new();
        }
        let members: Vec<Address> = inc
            .membership
            .state()
            .members
            .iter()
            .filter(|m| m.node != inc.me && m.status == MemberStatus::Up)
            .map(|m| m.node.address.clone())
            .collect();
        members
            .into_iter()
            .map(|to| {
                let seq = inc.system_seq.entry(to.clone()).or_insert(0);
                *seq += 1;
                Local::Remote(RemoteInput::SendSystem { to, msg: *seq })
            })
            .collect()
    }

    fn deliver(&mut self, ev: Ev) {
        if let Ev::LeaseArrives {
            node,
            uid,
            lease,
            op,
            request,
        } = ev
        {
            // On the wire already: it reaches the backend whether or not the process that sent
            // it still runs (or is frozen); only the answer needs its sender.
            self.lease_arrives(node, uid, lease, op, request);
            return;
        }
        let (i, uid) = ev.target();
        if self.nodes[i].uid() != Some(uid) {
            if matches!(ev, Ev::Frame { .. }) {
                self.counters.frames_lost += 1;
            }
            return;
        }
        if let Ev::Thaw { until, .. } = ev {
            if self.nodes[i].frozen_until == Some(until) {
                self.thaw(i);
            }
            return;
        }
        if self.frozen(i) {
            // Waits in the socket buffers until the process runs again.
            self.nodes[i].parked.push(ev);
            return;
        }
        self.mix(&[2, i as u64, from_micros(self.elapsed())]);
        let local = match ev {
            Ev::Frame { from, pdu, .. } => {
                self.counters.frames += 1;
                Local::Remote(RemoteInput::Received { from, pdu })
            }
            Ev::Connected {
                remote, remote_uid, ..
            } => Local::Remote(RemoteInput::Connected {
                remote,
                uid: remote_uid,
            }),
            Ev::Accepted { remote, .. } => Local::Remote(RemoteInput::Accepted { remote }),
            Ev::ConnectFailed { remote, reason, .. } => {
                Local::Remote(RemoteInput::ConnectFailed { remote, reason })
            }
            Ev::ConnectionLost { remote, .. } => Local::Remote(RemoteInput::ConnectionLost {
                remote,
                reason: "connection closed by peer".into(),
            }),
            Ev::LeaseArrives { .. } => return, // handled above
            Ev::LeaseAnswer {
                lease, op, reply, ..
            } => {
                let shard = ShardId(lease.trim_start_matches("sim-shard-").to_owned());
                let pending = self.nodes[i]
                    .live
                    .as_mut()
                    .and_then(|inc| inc.holders.get_mut(&shard))
                    .is_some_and(|h| h.pending.remove(&op).is_some());
                if !pending {
                    return; // answered by the request timeout already
                }
                Local::Holder(shard, HolderInput::Reply { op, reply })
            }
            Ev::EntityStopped { shard, entity, .. } => {
                let was = self.nodes[i].live.as_mut().is_some_and(|inc| {
                    inc.entities
                        .get_mut(&shard)
                        .is_some_and(|set| set.remove(&entity))
                });
                if !was {
                    return;
                }
                Local::Shard(shard, ShardInput::EntityStopped(entity))
            }
            Ev::Exit { .. } => {
                self.mix_text(&format!("node {i} exits"));
                self.end_process(i);
                return;
            }
            Ev::Thaw { .. } => return,
            Ev::Removed {
                gone, to_region, ..
            } => {
                if to_region {
                    Local::Region(RegionInput::Gone(gone))
                } else {
                    Local::Coordinator(CoordinatorInput::Terminated(gone))
                }
            }
            Ev::LeaveTimeout { .. } => {
                self.mix_text(&format!(
                    "node {i}: the leave's shutdown phases ran out of time; it shuts down"
                ));
                let mut queue = VecDeque::new();
                self.shut_down(i, &mut queue);
                self.step(i, queue.into());
                return;
            }
        };
        self.step(i, vec![local]);
    }

    /// A lease request reaches the backend (the backend's time is the true time).
    fn lease_arrives(&mut self, node: usize, uid: u64, lease: String, op: OpId, request: LeaseOp) {
        if self.conditions.backend_down {
            return;
        }
        self.counters.lease_requests += 1;
        let owner = self.nodes[node].address.to_string();
        let ttl = self.settings.lease.heartbeat_timeout;
        let now = self.now;
        let reply = match &request {
            LeaseOp::Acquire => self.table.acquire(&lease, &owner, ttl, now),
            LeaseOp::Renew { token } => self.table.renew(&lease, &owner, ttl, *token, now),
            LeaseOp::Release { token } => self.table.release(&lease, &owner, Some(*token), now),
            LeaseOp::Inspect => self.table.inspect(&lease, &owner, now),
        };
        if let BackendReply::Granted { token } = &reply {
            let t = token.0;
            self.mix(&[3, node as u64, t]);
        }
        if self.trace.is_some() {
            self.note(
                node,
                "backend",
                &format!("{lease}: {request:?} (op {op:?}) -> {reply:?}"),
            );
        }
        if self.conditions.backend_blocked.contains(&node) {
            return; // applied, but the answer is lost on the way back
        }
        let at = self.now + self.latency();
        self.schedule(
            at,
            Ev::LeaseAnswer {
                node,
                uid,
                lease,
                op,
                reply,
            },
        );
    }

    // ----------------------------------------------------------------------------------------
    // One node's step: feed inputs to its machines and carry out what they ask for.

    fn step(&mut self, i: usize, inputs: Vec<Local>) {
        let mut queue: VecDeque<Local> = inputs.into();
        self.drain_all(i, &mut queue);
        let mut fed = 0u32;
        let mut recent: VecDeque<String> = VecDeque::new();
        while let Some(local) = queue.pop_front() {
            fed += 1;
            if fed > 99_990 {
                recent.push_back(local.describe());
            }
            if fed > 100_000 {
                let last: Vec<String> = recent.iter().cloned().collect();
                self.violation(
                    "a step ends",
                    format!("node {i}'s machines keep feeding each other without time passing; next inputs: {}", last.join(" | ")),
                );
                self.stalled = true;
                return;
            }
            self.feed(i, local, &mut queue);
            if self.nodes[i].live.is_none() {
                return;
            }
        }
        self.after_step(i);
        self.refresh_timer(i);
    }

    /// Drains the outputs every machine of node `i` may have (after timers).
    fn drain_all(&mut self, i: usize, queue: &mut VecDeque<Local>) {
        self.drain_remoting(i, queue);
        self.drain_membership(i, queue);
        self.drain_singleton(i, queue);
        self.drain_coordinator(i, queue);
        self.drain_region(i, queue);
        let shards: Vec<ShardId> = self.nodes[i]
            .live
            .as_ref()
            .map(|inc| inc.shards.keys().cloned().collect())
            .unwrap_or_default();
        for s in &shards {
            self.drain_shard(i, s, queue);
        }
        let holders: Vec<ShardId> = self.nodes[i]
            .live
            .as_ref()
            .map(|inc| inc.holders.keys().cloned().collect())
            .unwrap_or_default();
        for s in &holders {
            self.drain_holder(i, s, queue);
        }
    }

    fn feed(&mut self, i: usize, local: Local, queue: &mut VecDeque<Local>) {
        let now = self.local_now(i);
        let Some(inc) = self.nodes[i].live.as_mut() else {
            return;
        };
        match local {
            Local::Cluster(input) => {
                inc.membership.handle(now, input);
                self.drain_membership(i, queue);
            }
            Local::Remote(input) => {
                inc.remoting.handle(now, input);
                self.drain_remoting(i, queue);
            }
            Local::Region(input) => {
                let Some(r) = inc.region.as_mut() else {
                    return;
                };
                r.handle(now, input);
                self.drain_region(i, queue);
            }
            Local::Shard(shard, input) => {
                let Some(s) = inc.shards.get_mut(&shard) else {
                    return;
                };
                s.handle(now, input);
                self.drain_shard(i, &shard, queue);
            }
            Local::Holder(shard, input) => {
                let settings = self.settings.lease.clone();
                let slot = inc
                    .holders
                    .entry(shard.clone())
                    .or_insert_with(|| HolderSlot {
                        holder: LeaseHolder::new(settings),
                        pending: BTreeMap::new(),
                    });
                slot.holder.handle(now, input);
                self.drain_holder(i, &shard, queue);
            }
            Local::Singleton(input) => {
                inc.singleton.handle(now, input);
                self.drain_singleton(i, queue);
            }
            Local::Coordinator(input) => {
                let Some(c) = inc.coordinator.as_mut() else {
                    return;
                };
                c.handle(now, input);
                self.drain_coordinator(i, queue);
            }
        }
    }

    fn inc(&mut self, i: usize) -> Option<&mut Incarnation> {
        self.nodes[i].live.as_mut()
    }

    fn drain_remoting(&mut self, i: usize, queue: &mut VecDeque<Local>) {
        while let Some(out) = self.inc(i).and_then(|inc| inc.remoting.poll_output()) {
            self.remote_output(i, out, queue);
        }
    }

    fn remote_output(
        &mut self,
        i: usize,
        out: RemoteOutput<UserMsg, SystemMsg>,
        queue: &mut VecDeque<Local>,
    ) {
        let n = self.nodes.len();
        let Some(me) = self.nodes[i].live.as_ref().map(|inc| inc.me.clone()) else {
            return;
        };
        match out {
            RemoteOutput::Connect { to } => {
                let Some(j) = index_of(&to, n) else {
                    return;
                };
                if self.conditions.blocked.contains(&(i, j))
                    || self.conditions.blocked.contains(&(j, i))
                {
                    return; // no answer: the handshake times out
                }
                let at = self.now + self.latency();
                match self.nodes[j].uid() {
                    Some(remote_uid) if !self.frozen(j) => {
                        self.schedule(
                            at,
                            Ev::Connected {
                                node: i,
                                uid: me.uid,
                                remote: to,
                                remote_uid,
                            },
                        );
                        self.schedule(
                            at,
                            Ev::Accepted {
                                node: j,
                                uid: remote_uid,
                                remote: me,
                            },
                        );
                    }
                    Some(_) => {} // the kernel accepts, the frozen process never answers
                    None => self.schedule(
                        at,
                        Ev::ConnectFailed {
                            node: i,
                            uid: me.uid,
                            remote: to,
                            reason: "connection refused".into(),
                        },
                    ),
                }
            }
            RemoteOutput::Transmit { to, pdu } => self.transmit(i, me, to, pdu),
            RemoteOutput::Disconnect { remote, .. } => {
                if let Some(j) = index_of(&remote, n)
                    && let Some(uid) = self.nodes[j].uid()
                {
                    let at = self.now + self.latency();
                    self.schedule(
                        at,
                        Ev::ConnectionLost {
                            node: j,
                            uid,
                            remote: me.address,
                        },
                    );
                }
            }
            RemoteOutput::DeliverUser { from, msg } => Self::user_message(from, msg, queue),
            RemoteOutput::DeliverSystem { from, msg } => {
                self.record(Record::System {
                    node: i,
                    uid: me.uid,
                    from,
                    seq: msg,
                });
            }
            RemoteOutput::DeadLetter { .. } | RemoteOutput::DroppedInbound { .. } => {}
            RemoteOutput::DroppedCluster { .. } | RemoteOutput::AddressTerminated { .. } => {}
            RemoteOutput::Association(event) => {
                let active_uid = self.nodes[i]
                    .live
                    .as_ref()
                    .and_then(|inc| inc.remoting.active_uid(&event.remote));
                if let (StateName::Quarantined, Cause::Quarantined { uid, .. }) =
                    (event.to, &event.cause)
                    && let Some(inc) = self.nodes[i].live.as_mut()
                {
                    inc.quarantined
                        .entry(event.remote.clone())
                        .or_default()
                        .insert(*uid);
                }
                self.mix_text(&format!(
                    "node {i}: association to {}: {} -> {}: {}",
                    event.remote, event.from, event.to, event.cause
                ));
                self.record(Record::Association {
                    node: i,
                    event,
                    active_uid,
                });
            }
            RemoteOutput::ThisSystemQuarantined { by, .. } => {
                queue.push_back(Local::Cluster(ClusterInput::QuarantinedBy(by)));
            }
            RemoteOutput::DeliverCluster { from, bytes } => {
                let handle = bytes
                    .get(..8)
                    .and_then(|b| <[u8; 8]>::try_from(b).ok())
                    .map(u64::from_le_bytes);
                let Some(msg) = handle.and_then(|h| self.cluster_msgs.get(&h)).cloned() else {
                    return;
                };
                if *msg.from() == from {
                    queue.push_back(Local::Cluster(ClusterInput::Received(msg)));
                }
            }
        }
    }

    fn transmit(
        &mut self,
        i: usize,
        from: UniqueAddress,
        to: UniqueAddress,
        pdu: Pdu<UserMsg, SystemMsg>,
    ) {
        let Some(j) = index_of(&to.address, self.nodes.len()) else {
            return;
        };
        if self.conditions.blocked.contains(&(i, j)) {
            self.counters.frames_lost += 1;
            return;
        }
        if let Some(kinds) = &mut self.frame_kinds {
            *kinds.entry(frame_kind(i, j, &pdu)).or_insert(0) += 1;
        }
        let second = usize::try_from(self.elapsed().as_secs()).unwrap_or(usize::MAX);
        if self.frames_per_second.len() <= second && second < MAX_SECONDS_COUNTED {
            self.frames_per_second.resize(second + 1, 0);
        }
        if let Some(n) = self.frames_per_second.get_mut(second) {
            *n += 1;
        }
        let loss = self.conditions.loss_ppm;
        if self.chance(loss) {
            self.counters.frames_lost += 1;
            return;
        }
        let copies = if self.chance(self.conditions.duplicate_ppm) {
            self.counters.frames_duplicated += 1;
            2
        } else {
            1
        };
        for _ in 0..copies {
            let mut at = self.now + self.latency();
            if self.conditions.jitter.is_zero() {
                // One connection: frames arrive in order.
                at = self
                    .last_frame
                    .get(&(i, j))
                    .map_or(at, |last| at.max(*last));
                self.last_frame.insert((i, j), at);
            } else {
                let extra = self.below(from_micros(self.conditions.jitter).max(1));
                at += Duration::from_micros(extra);
            }
            self.schedule(
                at,
                Ev::Frame {
                    from: from.clone(),
                    to: j,
                    to_uid: to.uid,
                    pdu: pdu.clone(),
                },
            );
        }
    }

    fn user_message(from: UniqueAddress, msg: UserMsg, queue: &mut VecDeque<Local>) {
        match msg {
            UserMsg::ToCoordinator(msg) => {
                queue.push_back(Local::Coordinator(CoordinatorInput::Received { from, msg }));
            }
            UserMsg::ToRegion(msg) => {
                queue.push_back(Local::Region(RegionInput::FromCoordinator { from, msg }));
            }
            UserMsg::Deliver { shard, entity, msg } => {
                queue.push_back(Local::Region(RegionInput::Forwarded { shard, entity, msg }));
            }
            UserMsg::Singleton(msg) => {
                queue.push_back(Local::Singleton(SingletonInput::Received(msg)));
            }
        }
    }

    /// Sends `msg` to the node at `to`: handed over at once when it is this node.
    fn send_user(&self, i: usize, to: &UniqueAddress, msg: UserMsg, queue: &mut VecDeque<Local>) {
        let Some(me) = self.nodes[i].live.as_ref().map(|inc| inc.me.clone()) else {
            return;
        };
        if *to == me {
            Self::user_message(me, msg, queue);
        } else {
            queue.push_back(Local::Remote(RemoteInput::SendUser {
                to: to.address.clone(),
                msg,
            }));
        }
    }

    fn drain_membership(&mut self, i: usize, queue: &mut VecDeque<Local>) {
        let mut changed = false;
        while let Some(out) = self.inc(i).and_then(|inc| inc.membership.poll_output()) {
            match out {
                ClusterOutput::Send { to, msg } => {
                    let handle = self.next_handle;
                    self.next_handle += 1;
                    self.cluster_msgs.insert(handle, msg);
                    queue.push_back(Local::Remote(RemoteInput::SendCluster {
                        to,
                        bytes: handle.to_le_bytes().to_vec(),
                    }));
                }
                ClusterOutput::Event(e) => {
                    changed = true;
                    self.cluster_event(i, &e);
                }
                ClusterOutput::Quarantine { node, .. } => {
                    queue.push_back(Local::Remote(RemoteInput::Quarantine {
                        remote: node,
                        reason: QuarantineReason::RemovedFromCluster,
                    }));
                }
                ClusterOutput::AcquireLease => {
                    // Lease-majority's lease, from the same backend (answered at once here).
                    let owner = self.nodes[i].address.to_string();
                    let ttl = self.settings.lease.heartbeat_timeout;
                    let now = self.now;
                    let granted = matches!(
                        self.table.acquire("sim-sbr", &owner, ttl, now),
                        BackendReply::Granted { .. }
                    );
                    queue.push_back(Local::Cluster(ClusterInput::LeaseAcquired(granted)));
                }
                ClusterOutput::ReleaseLease => {
                    let owner = self.nodes[i].address.to_string();
                    let now = self.now;
                    let _ = self.table.release("sim-sbr", &owner, None, now);
                }
                ClusterOutput::SelfDowned { reason } => {
                    self.mix_text(&format!("node {i} was downed: {reason}"));
                    self.shut_down(i, queue);
                }
                ClusterOutput::SelfRemoved => {
                    self.mix_text(&format!("node {i} was removed"));
                    self.shut_down(i, queue);
                }
                ClusterOutput::Log { text, .. } => self.note(i, "cluster", &text),
            }
        }
        if changed {
            self.follow_members(i, queue);
        }
    }

    fn cluster_event(&mut self, i: usize, e: &ClusterEvent) {
        let text = match e {
            ClusterEvent::MemberUp(m) => format!("{} is up", m.node),
            ClusterEvent::MemberLeft(m) => format!("{} is leaving", m.node),
            ClusterEvent::MemberExited(m) => format!("{} is exiting", m.node),
            ClusterEvent::MemberDowned(m) => format!("{} was downed", m.node),
            ClusterEvent::MemberRemoved { member, .. } => format!("{} was removed", member.node),
            ClusterEvent::UnreachableMember(m) => format!("{} is unreachable", m.node),
            ClusterEvent::ReachableMember(m) => format!("{} is reachable again", m.node),
            ClusterEvent::LeaderChanged(l) => format!("leader is {l:?}"),
            _ => return,
        };
        self.mix_text(&format!("node {i}: {text}"));
    }

    /// What the cluster's state means to remoting, the singleton, the coordinator and the
    /// region (as the drivers do it).
    fn follow_members(&mut self, i: usize, queue: &mut VecDeque<Local>) {
        let Some(inc) = self.nodes[i].live.as_mut() else {
            return;
        };
        let state = inc.membership.state();
        let members: Vec<Member> = state.members.clone();
        let me = inc.me.clone();
        let addresses: BTreeSet<Address> = members
            .iter()
            .map(|m| m.node.address.clone())
            .filter(|a| *a != me.address)
            .collect();
        if addresses != inc.told_members {
            inc.told_members = addresses.clone();
            queue.push_back(Local::Remote(RemoteInput::ClusterMembers {
                members: addresses,
            }));
        }
        queue.push_back(Local::Singleton(SingletonInput::Members(members.clone())));
        let up: BTreeSet<UniqueAddress> = members
            .iter()
            .filter(|m| m.status == MemberStatus::Up)
            .map(|m| m.node.clone())
            .collect();
        queue.push_back(Local::Coordinator(CoordinatorInput::Members(up)));
        // Removed: members this incarnation knew that are gone from the state.
        let present: BTreeSet<UniqueAddress> = members.iter().map(|m| m.node.clone()).collect();
        let gone: Vec<UniqueAddress> = inc.present.difference(&present).cloned().collect();
        inc.present = present;
        let oldest = oldest(&members, "").map(|m| m.node.clone());
        if inc.told_coordinator.as_ref() != Some(&oldest) {
            inc.told_coordinator = Some(oldest.clone());
            queue.push_back(Local::Region(RegionInput::Coordinator(oldest)));
        }
        let uid = me.uid;
        for gone in gone {
            for to_region in [true, false] {
                let at = self.now + Duration::from_micros(self.below(REMOVAL_SPREAD_MICROS));
                self.schedule(
                    at,
                    Ev::Removed {
                        node: i,
                        uid,
                        gone: gone.clone(),
                        to_region,
                    },
                );
            }
        }
    }

    fn drain_singleton(&mut self, i: usize, queue: &mut VecDeque<Local>) {
        while let Some(out) = self.inc(i).and_then(|inc| inc.singleton.poll_output()) {
            match out {
                SingletonOutput::Start => {
                    let local = self.local_now(i);
                    self.mix_text(&format!("node {i}: the coordinator starts"));
                    let Some(inc) = self.nodes[i].live.as_mut() else {
                        return;
                    };
                    inc.coordinator = Some(ShardCoordinator::new(
                        CoordinatorSettings::default(),
                        Box::new(LeastShardAllocation::default()),
                        local,
                    ));
                    let up: BTreeSet<UniqueAddress> = inc
                        .membership
                        .state()
                        .members
                        .iter()
                        .filter(|m| m.status == MemberStatus::Up)
                        .map(|m| m.node.clone())
                        .collect();
                    queue.push_back(Local::Coordinator(CoordinatorInput::Members(up)));
                }
                SingletonOutput::Stop | SingletonOutput::StopNow => {
                    self.mix_text(&format!("node {i}: the coordinator stops"));
                    if let Some(inc) = self.nodes[i].live.as_mut() {
                        inc.coordinator = None;
                    }
                    queue.push_back(Local::Singleton(SingletonInput::SingletonStopped));
                }
                SingletonOutput::Send { to, msg } => {
                    self.send_user(i, &to, UserMsg::Singleton(msg), queue);
                }
                SingletonOutput::AcquireLease => {
                    queue.push_back(Local::Singleton(SingletonInput::LeaseAcquired(true)));
                }
                SingletonOutput::ReleaseLease => {
                    queue.push_back(Local::Singleton(SingletonInput::LeaseReleased));
                }
                SingletonOutput::Log { text, .. } => self.note(i, "singleton", &text),
                SingletonOutput::Done => {}
            }
        }
    }

    fn drain_coordinator(&mut self, i: usize, queue: &mut VecDeque<Local>) {
        while let Some(out) = self
            .inc(i)
            .and_then(|inc| inc.coordinator.as_mut())
            .and_then(StateMachine::poll_output)
        {
            match out {
                CoordinatorOutput::Send { to, msg } => {
                    self.send_user(i, &to, UserMsg::ToRegion(msg), queue);
                }
                CoordinatorOutput::Event(e) => {
                    self.mix_text(&format!("node {i}: coordinator: {e:?}"));
                }
                CoordinatorOutput::Log { text, .. } => self.note(i, "coordinator", &text),
            }
        }
    }

    fn drain_region(&mut self, i: usize, queue: &mut VecDeque<Local>) {
        while let Some(out) = self
            .inc(i)
            .and_then(|inc| inc.region.as_mut())
            .and_then(StateMachine::poll_output)
        {
            match out {
                RegionOutput::ToCoordinator { to, msg } => {
                    self.send_user(i, &to, UserMsg::ToCoordinator(msg), queue);
                }
                RegionOutput::StartShard(shard) => {
                    let settings = self.settings.shard.clone();
                    if let Some(inc) = self.nodes[i].live.as_mut() {
                        inc.shards
                            .insert(shard.clone(), Shard::new(&shard.0, settings));
                    }
                    self.drain_shard(i, &shard, queue);
                }
                RegionOutput::HandOffShard(shard) => {
                    queue.push_back(Local::Shard(shard, ShardInput::HandOff));
                }
                RegionOutput::ToShard { shard, entity, msg } => {
                    queue.push_back(Local::Shard(shard, ShardInput::Deliver { entity, msg }));
                }
                RegionOutput::Forward {
                    to,
                    shard,
                    entity,
                    msg,
                } => self.send_user(i, &to, UserMsg::Deliver { shard, entity, msg }, queue),
                RegionOutput::Dropped { .. } => self.counters.dropped += 1,
                RegionOutput::Done => {
                    self.mix_text(&format!("node {i}: the region has handed everything off"));
                }
                RegionOutput::Log { text, .. } => self.note(i, "region", &text),
            }
        }
    }

    fn drain_shard(&mut self, i: usize, shard: &ShardId, queue: &mut VecDeque<Local>) {
        while let Some(out) = self
            .inc(i)
            .and_then(|inc| inc.shards.get_mut(shard))
            .and_then(StateMachine::poll_output)
        {
            self.shard_output(i, shard, out, queue);
        }
    }

    fn shard_output(
        &mut self,
        i: usize,
        shard: &ShardId,
        out: ShardOutput<Payload>,
        queue: &mut VecDeque<Local>,
    ) {
        let local = self.local_now(i);
        match out {
            ShardOutput::AcquireLease => {
                queue.push_back(Local::Holder(shard.clone(), HolderInput::Acquire));
            }
            ShardOutput::ReleaseLease => {
                queue.push_back(Local::Holder(shard.clone(), HolderInput::Release));
            }
            ShardOutput::LoadRemembered => {
                queue.push_back(Local::Shard(
                    shard.clone(),
                    ShardInput::RememberedLoaded(Vec::new()),
                ));
            }
            ShardOutput::UpdateRemembered { .. } => {
                queue.push_back(Local::Shard(shard.clone(), ShardInput::StoreUpdated));
            }
            ShardOutput::StartEntity(entity) => {
                let valid = self.lease_valid(i, shard, local);
                if valid {
                    if let Some(inc) = self.nodes[i].live.as_mut() {
                        inc.entities
                            .entry(shard.clone())
                            .or_default()
                            .insert(entity);
                    }
                } else {
                    // As the driver does: no entity starts without its lease.
                    queue.push_back(Local::Shard(
                        shard.clone(),
                        ShardInput::EntityStopped(entity),
                    ));
                    queue.push_back(Local::Shard(shard.clone(), ShardInput::LeaseLost));
                }
            }
            ShardOutput::Deliver { entity, msg } => {
                let lease_valid = self.lease_valid(i, shard, local);
                if !lease_valid {
                    // As the driver does: delivered only under a lease held now (a thawed
                    // process runs what waited before its timers); back to the region.
                    queue.push_back(Local::Region(RegionInput::Bounced {
                        shard: shard.clone(),
                        entity,
                        msg,
                    }));
                    queue.push_back(Local::Shard(shard.clone(), ShardInput::LeaseLost));
                    return;
                }
                let token = self.nodes[i]
                    .live
                    .as_ref()
                    .and_then(|inc| inc.holders.get(shard))
                    .and_then(|h| h.holder.token());
                self.counters.delivered += 1;
                self.mix(&[4, i as u64, msg]);
                self.record(Record::Delivered {
                    node: i,
                    shard: shard.clone(),
                    entity,
                    msg,
                    token,
                    lease_valid,
                });
            }
            ShardOutput::StopEntity(entity)
            | ShardOutput::ForceStop(entity)
            | ShardOutput::AbortEntity(entity) => {
                if let Some(uid) = self.nodes[i].uid() {
                    let at = self.now + Duration::from_millis(1);
                    self.schedule(
                        at,
                        Ev::EntityStopped {
                            node: i,
                            uid,
                            shard: shard.clone(),
                            entity,
                        },
                    );
                }
            }
            ShardOutput::Bounce { entity, msg } => {
                queue.push_back(Local::Region(RegionInput::Bounced {
                    shard: shard.clone(),
                    entity,
                    msg,
                }));
            }
            ShardOutput::Dropped { .. } => self.counters.dropped += 1,
            ShardOutput::Ended(why) => {
                self.mix_text(&format!("node {i}: shard {shard} ended ({why:?})"));
                if let Some(inc) = self.nodes[i].live.as_mut() {
                    inc.shards.remove(shard);
                }
                queue.push_back(Local::Region(RegionInput::ShardEnded {
                    shard: shard.clone(),
                    why,
                }));
            }
            ShardOutput::Log { text, .. } => self.note(i, "shard", &text),
        }
    }

    fn lease_valid(&self, i: usize, shard: &ShardId, local: Instant) -> bool {
        if !self.settings.shard.use_lease {
            return true;
        }
        self.nodes[i]
            .live
            .as_ref()
            .and_then(|inc| inc.holders.get(shard))
            .is_some_and(|h| h.holder.check_lease(local))
    }

    fn drain_holder(&mut self, i: usize, shard: &ShardId, queue: &mut VecDeque<Local>) {
        let local = self.local_now(i);
        while let Some(out) = self
            .inc(i)
            .and_then(|inc| inc.holders.get_mut(shard))
            .and_then(|h| h.holder.poll_output())
        {
            match out {
                HolderOutput::Op { id, op } => {
                    let Some(uid) = self.nodes[i].uid() else {
                        return;
                    };
                    if let Some(h) = self.inc(i).and_then(|inc| inc.holders.get_mut(shard)) {
                        h.pending.insert(id, local);
                    }
                    if self.conditions.backend_blocked.contains(&i) {
                        continue; // lost on the way: the request timeout answers
                    }
                    let at = self.now + self.latency() + self.conditions.backend_latency;
                    self.schedule(
                        at,
                        Ev::LeaseArrives {
                            node: i,
                            uid,
                            lease: lease_name(&shard.0),
                            op: id,
                            request: op,
                        },
                    );
                }
                HolderOutput::AcquireDone(outcome) => {
                    let granted = match outcome {
                        AcquireOutcome::Granted { token } => {
                            let uid = self.nodes[i].uid().unwrap_or(0);
                            self.mix_text(&format!(
                                "node {i}: lease of shard {shard} granted, token {token}"
                            ));
                            self.record(Record::Granted {
                                node: i,
                                uid,
                                shard: shard.clone(),
                                token,
                            });
                            true
                        }
                        AcquireOutcome::Denied { .. } | AcquireOutcome::Unknown { .. } => false,
                    };
                    let has_shard = self.nodes[i]
                        .live
                        .as_ref()
                        .is_some_and(|inc| inc.shards.contains_key(shard));
                    if has_shard {
                        queue.push_back(Local::Shard(
                            shard.clone(),
                            ShardInput::LeaseAcquired(granted),
                        ));
                    } else if granted {
                        // Nobody wants it any more (the shard ended meanwhile): give it back.
                        queue.push_back(Local::Holder(shard.clone(), HolderInput::Release));
                    }
                }
                HolderOutput::ReleaseDone(_) => {
                    queue.push_back(Local::Shard(shard.clone(), ShardInput::LeaseReleased));
                }
                HolderOutput::Event(LeaseEvent::Lost { cause }) => {
                    self.mix_text(&format!("node {i}: lease of shard {shard} lost: {cause}"));
                    queue.push_back(Local::Shard(shard.clone(), ShardInput::LeaseLost));
                }
                HolderOutput::Event(_) => {}
            }
        }
    }

    /// Coordinated shutdown (downed, removed, quarantined): every entity stops at once, every
    /// lease is released (awaited, bounded), then the process exits.
    fn shut_down(&mut self, i: usize, queue: &mut VecDeque<Local>) {
        let timeout = self.settings.shutdown_timeout;
        let Some(uid) = self.nodes[i].uid() else {
            return;
        };
        let local = self.nodes[i].local(self.now);
        let Some(inc) = self.nodes[i].live.as_mut() else {
            return;
        };
        if inc.shutting_down.is_some() {
            return;
        }
        inc.shutting_down = Some(local);
        inc.region = None;
        inc.coordinator = None;
        inc.shards.clear();
        inc.entities.clear();
        let holders: Vec<ShardId> = inc.holders.keys().cloned().collect();
        for shard in holders {
            queue.push_back(Local::Holder(shard, HolderInput::Release));
        }
        let at = self.now + timeout;
        self.schedule(at, Ev::Exit { node: i, uid });
    }

    /// After a step of node `i`: the checks that must hold at every instant, and the end of
    /// a shutdown once every release is done.
    fn after_step(&mut self, i: usize) {
        crate::sim::invariants::single_incarnation::check_node(self, i);
        crate::sim::invariants::quarantine::check_node(self, i);
        let done = self.nodes[i].live.as_ref().is_some_and(|inc| {
            inc.shutting_down.is_some()
                && inc
                    .holders
                    .values()
                    .all(|h| h.pending.is_empty() && h.holder.state_name() == "released")
        });
        if done && let Some(uid) = self.nodes[i].uid() {
            let at = self.now + Duration::from_millis(100);
            self.schedule(at, Ev::Exit { node: i, uid });
        }
    }

    /// Whether node `i`'s shard `s` may run entities now: the shard is active and (with
    /// leases) its holder trusts its lease. Frozen nodes run nothing.
    pub fn serving(&self, i: usize, shard: &ShardId) -> bool {
        if self.frozen(i) {
            return false;
        }
        let local = self.local_now(i);
        self.nodes[i].live.as_ref().is_some_and(|inc| {
            inc.shutting_down.is_none() && inc.shards.get(shard).is_some_and(Shard::is_active)
        }) && self.lease_valid(i, shard, local)
    }

    /// Records a violation found by a check module.
    pub(crate) fn report(&mut self, invariant: &'static str, what: String) {
        self.violation(invariant, what);
    }

    /// The holder of node `i`'s lease of `shard`, if it has one.
    pub fn holder(&self, i: usize, shard: &ShardId) -> Option<&LeaseHolder> {
        self.nodes[i]
            .live
            .as_ref()
            .and_then(|inc| inc.holders.get(shard))
            .map(|h| &h.holder)
    }
}
