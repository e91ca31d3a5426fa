//! Whole sharding clusters on a deterministic in-memory network: a coordinator, a region per
//! node, their shards, a lease table and entities that stop one hop after being told. Messages
//! travel in FIFO order, one at a time; time moves in 100 ms steps. Checked after every step: no
//! shard is active on two nodes, no entity runs on two nodes, a shard is active only on the
//! node that holds its lease. Checked at the end: every message sent was delivered exactly once.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use flotilla_core::{StateMachine, UniqueAddress};

use super::*;
use crate::testing::{epoch, node};

/// The messages entities get: a unique number.
type Msg = u64;

enum Wire {
    ToCoordinator(usize, ToCoordinator),
    ToRegion(usize, RegionInput<Msg>),
    Acquire(usize, ShardId),
    Release(usize, ShardId),
    EntityStopped(usize, ShardId, EntityId),
    Load(usize, ShardId),
    Update(usize, ShardId, BTreeSet<EntityId>, BTreeSet<EntityId>),
}

struct SimNode {
    region: Region<Msg>,
    shards: BTreeMap<ShardId, Shard<Msg>>,
    running: BTreeSet<EntityId>,
    done: bool,
}

struct Sim {
    now: std::time::Instant,
    rng: u64,
    coordinator: ShardCoordinator,
    coordinator_at: usize,
    nodes: BTreeMap<usize, SimNode>,
    wire: VecDeque<Wire>,
    leases: BTreeMap<ShardId, usize>,
    shard_settings: ShardSettings,
    delivered: BTreeMap<Msg, usize>,
    dropped: BTreeSet<Msg>,
    next_msg: Msg,
    shards: u32,
    remember: bool,
    /// Remember entities: the store, per shard.
    store: BTreeMap<ShardId, BTreeSet<EntityId>>,
}

fn id(i: usize) -> UniqueAddress {
    node(u16::try_from(i).unwrap_or(u16::MAX))
}

fn index(u: &UniqueAddress) -> usize {
    usize::try_from(u.uid - 100).unwrap_or(usize::MAX)
}

impl Sim {
    fn new(seed: u64, nodes: usize, shards: u32) -> Self {
        Self::with(seed, nodes, shards, false)
    }

    /// With remember entities on or off.
    fn with(seed: u64, nodes: usize, shards: u32, remember: bool) -> Self {
        let now = epoch();
        let mut sim = Self {
            now,
            rng: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            coordinator: ShardCoordinator::new(
                CoordinatorSettings {
                    remember_entities: remember,
                    ..CoordinatorSettings::default()
                },
                Box::new(LeastShardAllocation::default()),
                now,
            ),
            coordinator_at: 0,
            nodes: BTreeMap::new(),
            wire: VecDeque::new(),
            leases: BTreeMap::new(),
            shard_settings: ShardSettings {
                use_lease: true,
                lease_retry_interval: Duration::from_secs(1),
                // Remembered entities run until they are passivated (as with the real driver).
                idle_timeout: (!remember).then_some(Duration::from_secs(30)),
                remember_entities: remember,
                ..ShardSettings::default()
            },
            delivered: BTreeMap::new(),
            dropped: BTreeSet::new(),
            next_msg: 0,
            shards,
            remember,
            store: BTreeMap::new(),
        };
        for i in 0..nodes {
            sim.add_node(i);
        }
        sim.run(Duration::from_secs(1));
        sim
    }

    fn random(&mut self, n: u64) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % n.max(1)
    }

    fn add_node(&mut self, i: usize) {
        let mut region = Region::new(
            id(i),
            RegionSettings {
                remember_entities: self.remember,
                ..RegionSettings::default()
            },
        );
        region.handle(
            self.now,
            RegionInput::Coordinator(Some(id(self.coordinator_at))),
        );
        self.nodes.insert(
            i,
            SimNode {
                region,
                shards: BTreeMap::new(),
                running: BTreeSet::new(),
                done: false,
            },
        );
        self.members();
        self.pump_region(i);
    }

    fn members(&mut self) {
        let members = self.nodes.keys().map(|i| id(*i)).collect();
        self.coordinator
            .handle(self.now, CoordinatorInput::Members(members));
        self.pump_coordinator();
    }

    /// A message for a random entity, from a random node.
    fn send_random(&mut self) {
        let entity = format!("e{}", self.random(500));
        let live: Vec<usize> = self.nodes.keys().copied().collect();
        let from = live[usize::try_from(self.random(live.len() as u64)).unwrap_or(0)];
        let shard = shard_of(&entity, self.shards);
        self.next_msg += 1;
        let msg = self.next_msg;
        self.wire.push_back(Wire::ToRegion(
            from,
            RegionInput::Deliver { shard, entity, msg },
        ));
    }

    fn pump_coordinator(&mut self) {
        while let Some(o) = self.coordinator.poll_output() {
            if let CoordinatorOutput::Send { to, msg } = o {
                self.wire.push_back(Wire::ToRegion(
                    index(&to),
                    RegionInput::FromCoordinator {
                        from: id(self.coordinator_at),
                        msg,
                    },
                ));
            }
        }
    }

    fn pump_region(&mut self, i: usize) {
        loop {
            let Some(n) = self.nodes.get_mut(&i) else {
                return;
            };
            let Some(o) = n.region.poll_output() else {
                return;
            };
            match o {
                RegionOutput::ToCoordinator { to, msg } => {
                    assert_eq!(index(&to), self.coordinator_at);
                    self.wire.push_back(Wire::ToCoordinator(i, msg));
                }
                RegionOutput::StartShard(s) => {
                    let shard = Shard::new(&s.0, self.shard_settings.clone());
                    n.shards.insert(s.clone(), shard);
                    self.pump_shard(i, &s);
                }
                RegionOutput::HandOffShard(s) => {
                    if let Some(shard) = n.shards.get_mut(&s) {
                        shard.handle(self.now, ShardInput::HandOff);
                    }
                    self.pump_shard(i, &s);
                }
                RegionOutput::ToShard { shard, entity, msg } => {
                    let s = shard.clone();
                    match n.shards.get_mut(&shard) {
                        Some(sh) => sh.handle(self.now, ShardInput::Deliver { entity, msg }),
                        None => panic!("region {i} routed to shard {shard}, which does not run"),
                    }
                    self.pump_shard(i, &s);
                }
                RegionOutput::Forward {
                    to,
                    shard,
                    entity,
                    msg,
                } => self.wire.push_back(Wire::ToRegion(
                    index(&to),
                    RegionInput::Forwarded { shard, entity, msg },
                )),
                RegionOutput::Dropped { msg, .. } => {
                    self.dropped.insert(msg);
                }
                RegionOutput::Done => n.done = true,
                RegionOutput::Log { .. } => {}
            }
        }
    }

    fn pump_shard(&mut self, i: usize, s: &ShardId) {
        loop {
            let Some(n) = self.nodes.get_mut(&i) else {
                return;
            };
            let Some(shard) = n.shards.get_mut(s) else {
                return;
            };
            let Some(o) = shard.poll_output() else {
                return;
            };
            match o {
                ShardOutput::AcquireLease => self.wire.push_back(Wire::Acquire(i, s.clone())),
                ShardOutput::ReleaseLease => self.wire.push_back(Wire::Release(i, s.clone())),
                ShardOutput::StartEntity(e) => {
                    for (j, other) in &self.nodes {
                        assert!(
                            *j == i || !other.running.contains(&e),
                            "entity {e} started on node {i} while it runs on node {j}"
                        );
                    }
                    let n = self.nodes.get_mut(&i).unwrap_or_else(|| panic!("node {i}"));
                    assert!(n.running.insert(e.clone()), "{e} started twice on {i}");
                }
                ShardOutput::Deliver { entity, msg } => {
                    assert!(n.running.contains(&entity), "delivered to stopped {entity}");
                    let before = self.delivered.insert(msg, i);
                    assert_eq!(before, None, "message {msg} delivered twice");
                }
                ShardOutput::StopEntity(e)
                | ShardOutput::ForceStop(e)
                | ShardOutput::AbortEntity(e) => {
                    self.wire.push_back(Wire::EntityStopped(i, s.clone(), e));
                }
                ShardOutput::Bounce { entity, msg } => {
                    n.region.handle(
                        self.now,
                        RegionInput::Bounced {
                            shard: s.clone(),
                            entity,
                            msg,
                        },
                    );
                    self.pump_region(i);
                }
                ShardOutput::Dropped { msg, .. } => {
                    self.dropped.insert(msg);
                }
                ShardOutput::Ended(why) => {
                    n.shards.remove(s);
                    n.region.handle(
                        self.now,
                        RegionInput::ShardEnded {
                            shard: s.clone(),
                            why,
                        },
                    );
                    self.pump_region(i);
                    return;
                }
                ShardOutput::LoadRemembered => self.wire.push_back(Wire::Load(i, s.clone())),
                ShardOutput::UpdateRemembered { add, remove } => {
                    self.wire.push_back(Wire::Update(i, s.clone(), add, remove));
                }
                ShardOutput::Log { .. } => {}
            }
        }
    }

    /// Carries one message; false when none is in flight.
    fn step(&mut self) -> bool {
        let Some(w) = self.wire.pop_front() else {
            return false;
        };
        match w {
            Wire::ToCoordinator(from, msg) => {
                if self.nodes.contains_key(&from) {
                    self.coordinator.handle(
                        self.now,
                        CoordinatorInput::Received {
                            from: id(from),
                            msg,
                        },
                    );
                    self.pump_coordinator();
                }
            }
            Wire::ToRegion(to, input) => {
                if let Some(n) = self.nodes.get_mut(&to) {
                    n.region.handle(self.now, input);
                    self.pump_region(to);
                } else if let RegionInput::Deliver { msg, .. }
                | RegionInput::Forwarded { msg, .. } = input
                {
                    // A node that left: the sender's message is lost, as over a real network.
                    self.dropped.insert(msg);
                }
            }
            Wire::Acquire(i, s) => {
                let granted = match self.leases.get(&s) {
                    None => {
                        self.leases.insert(s.clone(), i);
                        true
                    }
                    Some(holder) => *holder == i,
                };
                if let Some(sh) = self.nodes.get_mut(&i).and_then(|n| n.shards.get_mut(&s)) {
                    sh.handle(self.now, ShardInput::LeaseAcquired(granted));
                    self.pump_shard(i, &s);
                }
            }
            Wire::Release(i, s) => {
                if self.leases.get(&s) == Some(&i) {
                    self.leases.remove(&s);
                }
                if let Some(sh) = self.nodes.get_mut(&i).and_then(|n| n.shards.get_mut(&s)) {
                    sh.handle(self.now, ShardInput::LeaseReleased);
                    self.pump_shard(i, &s);
                }
            }
            Wire::Load(i, s) => {
                let ids = self
                    .store
                    .get(&s)
                    .map(|e| e.iter().cloned().collect())
                    .unwrap_or_default();
                if let Some(sh) = self.nodes.get_mut(&i).and_then(|n| n.shards.get_mut(&s)) {
                    sh.handle(self.now, ShardInput::RememberedLoaded(ids));
                    self.pump_shard(i, &s);
                }
            }
            Wire::Update(i, s, add, remove) => {
                if let Some(n) = self.nodes.get_mut(&i) {
                    let entry = self.store.entry(s.clone()).or_default();
                    entry.extend(add);
                    entry.retain(|e| !remove.contains(e));
                    if let Some(sh) = n.shards.get_mut(&s) {
                        sh.handle(self.now, ShardInput::StoreUpdated);
                    }
                    self.pump_shard(i, &s);
                }
            }
            Wire::EntityStopped(i, s, e) => {
                if let Some(n) = self.nodes.get_mut(&i) {
                    n.running.remove(&e);
                    if let Some(sh) = n.shards.get_mut(&s) {
                        sh.handle(self.now, ShardInput::EntityStopped(e));
                    }
                    self.pump_shard(i, &s);
                }
            }
        }
        self.check();
        true
    }

    fn check(&self) {
        let mut active: BTreeMap<&ShardId, usize> = BTreeMap::new();
        for (i, n) in &self.nodes {
            for (s, shard) in &n.shards {
                if shard.is_active() {
                    if let Some(j) = active.insert(s, *i) {
                        panic!("shard {s} active on nodes {j} and {i}");
                    }
                    assert_eq!(
                        self.leases.get(s),
                        Some(i),
                        "shard {s} active on {i} without its lease"
                    );
                }
            }
        }
    }

    /// Carries messages and advances time for `d`.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            let mut budget = 1_000_000;
            while self.step() {
                budget -= 1;
                assert!(budget > 0, "messages never settle");
            }
            self.now += Duration::from_millis(100);
            self.coordinator.handle_timeout(self.now);
            self.pump_coordinator();
            let ids: Vec<usize> = self.nodes.keys().copied().collect();
            for i in ids {
                if let Some(n) = self.nodes.get_mut(&i) {
                    n.region.handle_timeout(self.now);
                    let shards: Vec<ShardId> = n.shards.keys().cloned().collect();
                    for s in &shards {
                        if let Some(sh) = n.shards.get_mut(s) {
                            sh.handle_timeout(self.now);
                        }
                    }
                    self.pump_region(i);
                    for s in &shards {
                        self.pump_shard(i, s);
                    }
                }
            }
        }
    }

    /// Sends `count` messages over `d`, spread evenly.
    fn traffic(&mut self, count: u32, d: Duration) {
        let step = d / count.max(1);
        for _ in 0..count {
            self.send_random();
            self.run(step);
        }
    }

    fn shard_counts(&self) -> Vec<usize> {
        self.nodes.values().map(|n| n.shards.len()).collect()
    }

    /// Every message sent was delivered once (none was dropped here: nothing overflows).
    fn all_delivered(&self) {
        assert!(self.dropped.is_empty(), "dropped: {:?}", self.dropped);
        let missing: Vec<Msg> = (1..=self.next_msg)
            .filter(|m| !self.delivered.contains_key(m))
            .collect();
        assert!(missing.is_empty(), "never delivered: {missing:?}");
    }
}

const SEEDS: [u64; 4] = [1, 2, 3, 4];

#[test]
fn messages_reach_their_entities_exactly_once_and_shards_spread_over_the_nodes() {
    for seed in SEEDS {
        let mut sim = Sim::new(seed, 3, 30);
        sim.traffic(2000, Duration::from_secs(20));
        sim.run(Duration::from_secs(60));
        sim.all_delivered();
        let counts = sim.shard_counts();
        let (min, max) = (
            counts.iter().min().copied().unwrap_or(0),
            counts.iter().max().copied().unwrap_or(0),
        );
        assert!(max - min <= 1 && max > 0, "seed {seed}: {counts:?}");
    }
}

#[test]
fn a_joining_node_gets_shards_by_rebalancing_without_losing_or_doubling_a_message() {
    for seed in SEEDS {
        let mut sim = Sim::new(seed, 2, 30);
        sim.traffic(1000, Duration::from_secs(10));
        sim.add_node(2);
        sim.traffic(3000, Duration::from_secs(60));
        sim.run(Duration::from_secs(30));
        sim.all_delivered();
        let counts = sim.shard_counts();
        assert_eq!(counts, [10, 10, 10], "seed {seed}");
    }
}

#[test]
fn a_leaving_node_hands_every_shard_over_with_its_lease_released_first() {
    for seed in SEEDS {
        let mut sim = Sim::new(seed, 3, 30);
        sim.traffic(1000, Duration::from_secs(10));
        if let Some(n) = sim.nodes.get_mut(&2) {
            n.region.handle(sim.now, RegionInput::Leave);
        }
        sim.pump_region(2);
        for _ in 0..300 {
            sim.traffic(10, Duration::from_millis(100));
            if sim.nodes.get(&2).is_some_and(|n| n.done) {
                break;
            }
        }
        assert!(
            sim.nodes.get(&2).is_some_and(|n| n.done),
            "seed {seed}: never done"
        );
        assert!(
            !sim.leases.values().any(|holder| *holder == 2),
            "seed {seed}: the leaver still holds a lease"
        );
        // The node goes; the coordinator learns it.
        sim.nodes.remove(&2);
        sim.coordinator
            .handle(sim.now, CoordinatorInput::Terminated(id(2)));
        sim.members();
        sim.traffic(2000, Duration::from_secs(20));
        sim.run(Duration::from_secs(30));
        // Messages forwarded to the leaver in its last moments may be lost with it; none that
        // reached a region after it was done, and none in the shards.
        assert_eq!(sim.shard_counts().iter().sum::<usize>(), 30, "seed {seed}");
        let lost: Vec<Msg> = (1..=sim.next_msg)
            .filter(|m| !sim.delivered.contains_key(m) && !sim.dropped.contains(m))
            .collect();
        assert!(lost.is_empty(), "seed {seed}: lost {lost:?}");
    }
}

#[test]
fn a_lost_lease_stops_the_shard_and_it_comes_back_when_the_lease_is_free() {
    for seed in SEEDS {
        let mut sim = Sim::new(seed, 2, 10);
        sim.traffic(500, Duration::from_secs(5));
        let (s, holder) = sim
            .leases
            .iter()
            .next()
            .map(|(s, h)| (s.clone(), *h))
            .unwrap_or_else(|| panic!("no lease held"));
        // Someone else takes the lease: the holder learns it has lost it.
        sim.leases.insert(s.clone(), 99);
        if let Some(sh) = sim
            .nodes
            .get_mut(&holder)
            .and_then(|n| n.shards.get_mut(&s))
        {
            sh.handle(sim.now, ShardInput::LeaseLost);
        }
        sim.pump_shard(holder, &s);
        sim.run(Duration::from_secs(2));
        assert!(
            sim.nodes
                .values()
                .all(|n| n.shards.get(&s).is_none_or(|sh| !sh.is_active())),
            "seed {seed}: shard {s} still active without its lease"
        );
        // The intruder lets go; traffic for the shard starts it again.
        sim.leases.remove(&s);
        sim.traffic(500, Duration::from_secs(10));
        sim.run(Duration::from_secs(10));
        sim.all_delivered();
    }
}

impl Sim {
    /// Every entity in the store runs on some node.
    fn remembered_all_run(&self) -> Result<(), Vec<EntityId>> {
        let missing: Vec<EntityId> = self
            .store
            .values()
            .flatten()
            .filter(|e| !self.nodes.values().any(|n| n.running.contains(*e)))
            .cloned()
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing)
        }
    }

    fn remembered_count(&self) -> usize {
        self.store.values().map(BTreeSet::len).sum()
    }
}

#[test]
fn remembered_entities_run_again_after_a_leave_and_a_crash_without_a_message() {
    for seed in SEEDS {
        let mut sim = Sim::with(seed, 3, 30, true);
        sim.traffic(1000, Duration::from_secs(10));
        sim.run(Duration::from_secs(2));
        let remembered = sim.remembered_count();
        assert!(remembered > 300, "seed {seed}: {remembered} remembered");
        assert_eq!(sim.remembered_all_run(), Ok(()), "seed {seed}");

        // Node 2 leaves; no message is sent afterwards, yet all its entities run elsewhere.
        if let Some(n) = sim.nodes.get_mut(&2) {
            n.region.handle(sim.now, RegionInput::Leave);
        }
        sim.pump_region(2);
        for _ in 0..300 {
            sim.run(Duration::from_millis(100));
            if sim.nodes.get(&2).is_some_and(|n| n.done) {
                break;
            }
        }
        assert!(
            sim.nodes.get(&2).is_some_and(|n| n.done),
            "seed {seed}: never done"
        );
        sim.nodes.remove(&2);
        sim.coordinator
            .handle(sim.now, CoordinatorInput::Terminated(id(2)));
        sim.members();
        sim.run(Duration::from_secs(5));
        assert_eq!(
            sim.remembered_count(),
            remembered,
            "seed {seed}: nothing forgotten"
        );
        assert_eq!(
            sim.remembered_all_run(),
            Ok(()),
            "seed {seed}: after the leave"
        );

        // Node 1 crashes: its leases expire, it is removed; its entities run on node 0.
        sim.nodes.remove(&1);
        sim.leases.retain(|_, holder| *holder != 1);
        sim.coordinator
            .handle(sim.now, CoordinatorInput::Terminated(id(1)));
        sim.members();
        sim.run(Duration::from_secs(5));
        assert_eq!(
            sim.remembered_all_run(),
            Ok(()),
            "seed {seed}: after the crash"
        );
        assert_eq!(sim.shard_counts(), [30], "seed {seed}");
        sim.all_delivered();
    }
}

#[test]
fn a_new_coordinator_starts_the_shards_the_store_names() {
    let mut sim = Sim::with(1, 2, 10, true);
    sim.traffic(200, Duration::from_secs(5));
    sim.run(Duration::from_secs(2));
    let shards: BTreeSet<ShardId> = sim.store.keys().cloned().collect();
    // Every node restarts at once (a full cluster restart): nothing runs, the store remains.
    let mut next = Sim::with(2, 2, 10, true);
    next.store = sim.store.clone();
    next.coordinator
        .handle(next.now, CoordinatorInput::RememberedShards(shards));
    next.pump_coordinator();
    next.run(Duration::from_secs(5));
    assert!(next.remembered_count() > 50);
    assert_eq!(next.remembered_all_run(), Ok(()));
}
