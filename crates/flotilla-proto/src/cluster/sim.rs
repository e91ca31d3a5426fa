//! A deterministic simulator of a whole cluster: membership machines on a simulated network and
//! clock, driven by one seed.
//!
//! Every node runs a real [`Membership`] machine; the simulator plays the transport (per-link
//! FIFO delivery after a seeded latency, dropped links for partitions), remoting's quarantine
//! (a quarantined incarnation's messages are dropped and it is told so), an in-memory lease for
//! lease-majority, and the node's shutdown when it is downed or removed. Time jumps from one
//! event or timer to the next, so an hour of cluster life runs in well under a second, and the
//! same seed replays the same run exactly ([`ClusterSim::trace_hash`]).
//!
//! Scenario tests and the gossip benchmark use it; it is not a production transport.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use flotilla_core::{Address, ClusterSettings, StateMachine, UniqueAddress};

use super::events::ClusterEvent;
use super::member::MemberStatus;
use super::membership::Membership;
use super::protocol::{ClusterInput, ClusterMsg, ClusterOutput, LogLevel};
use crate::sim::seeded::{SeededRng, TraceHash};

/// What happens to a node at a point in simulated time.
#[derive(Debug, Clone)]
enum SimEvent {
    Deliver {
        from: usize,
        msg: ClusterMsg,
    },
    Input(ClusterInput),
    /// The node finished shutting down (it was downed).
    Shutdown,
}

/// One simulated node: its current incarnation and what it did.
#[derive(Debug)]
pub struct SimNode {
    /// Its address (stable across restarts).
    pub address: Address,
    /// The running machine; `None` while the node is down or crashed.
    pub machine: Option<Membership>,
    /// Every incarnation's UID, oldest first; the last one is current.
    pub uids: Vec<u64>,
    /// Events published, with the simulated time since start.
    pub events: Vec<(Duration, ClusterEvent)>,
    /// Log lines, with the simulated time since start.
    pub logs: Vec<(Duration, LogLevel, String)>,
    /// Incarnations this node's remoting quarantined.
    pub quarantined: BTreeSet<UniqueAddress>,
    /// When the current incarnation was downed (it shuts down).
    pub downed_at: Option<Duration>,
    /// When the current incarnation learned it was removed.
    pub removed_at: Option<Duration>,
    /// Frozen until then (a long pause: no timers, inbound messages lost).
    pub frozen_until: Option<Instant>,
}

impl SimNode {
    /// The current incarnation.
    pub fn unique(&self) -> UniqueAddress {
        UniqueAddress {
            address: self.address.clone(),
            uid: self.uids.last().copied().unwrap_or(0),
        }
    }
}

/// Counters of the simulated network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Full gossips (and welcomes) delivered.
    pub gossip: u64,
    /// Gossip status messages delivered.
    pub status: u64,
    /// Heartbeats and replies delivered.
    pub heartbeat: u64,
    /// Every other message delivered.
    pub other: u64,
    /// Members carried by delivered full gossips (a measure of gossip size).
    pub gossip_members: u64,
    /// Messages dropped by partitions, dead nodes or quarantine.
    pub dropped: u64,
    /// Bytes of delivered full gossips (and welcomes), as the meter (see
    /// [`ClusterSim::set_meter`]) counts them.
    pub gossip_bytes: u64,
    /// Bytes of delivered gossip status messages.
    pub status_bytes: u64,
    /// Bytes of delivered heartbeats and replies.
    pub heartbeat_bytes: u64,
    /// Bytes of every other delivered message.
    pub other_bytes: u64,
}

/// The simulated cluster. See the [module docs](self).
#[derive(Debug)]
pub struct ClusterSim {
    /// The seed of this run.
    pub seed: u64,
    rng: SeededRng,
    start: Instant,
    now: Instant,
    settings: ClusterSettings,
    /// The nodes, by index.
    pub nodes: Vec<SimNode>,
    queue: BTreeMap<(Instant, u64), (usize, SimEvent)>,
    seq: u64,
    last_delivery: BTreeMap<(usize, usize), Instant>,
    blocked: BTreeSet<(usize, usize)>,
    latency: (Duration, Duration),
    lease: Option<(usize, u64, Instant)>,
    lease_ttl: Duration,
    seeds: Vec<usize>,
    /// Network counters.
    pub net: NetStats,
    meter: Option<fn(&ClusterMsg) -> usize>,
    hash: TraceHash,
}

/// Node `i`'s address in a simulated cluster.
pub fn address(i: usize) -> Address {
    let port = 2551 + u16::try_from(i).unwrap_or(u16::MAX - 2551);
    Address::remote("sim", "10.0.0.1", port)
        .unwrap_or_else(|e| unreachable!("a valid address: {e}"))
}

impl ClusterSim {
    /// `n` nodes, not started, with `settings`; `seed` decides every latency, UID and choice.
    pub fn new(seed: u64, n: usize, settings: ClusterSettings, start: Instant) -> Self {
        let mut sim = Self {
            seed,
            rng: SeededRng::new(seed),
            start,
            now: start,
            settings,
            nodes: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            last_delivery: BTreeMap::new(),
            blocked: BTreeSet::new(),
            latency: (Duration::from_millis(1), Duration::from_millis(10)),
            lease: None,
            lease_ttl: Duration::from_secs(20),
            seeds: Vec::new(),
            net: NetStats::default(),
            meter: None,
            hash: TraceHash::default(),
        };
        for i in 0..n {
            sim.nodes.push(SimNode {
                address: address(i),
                machine: None,
                uids: Vec::new(),
                events: Vec::new(),
                logs: Vec::new(),
                quarantined: BTreeSet::new(),
                downed_at: None,
                removed_at: None,
                frozen_until: None,
            });
        }
        sim
    }

    fn random(&mut self) -> u64 {
        self.rng.next_u64()
    }

    fn mix(&mut self, text: &str) {
        self.hash.add(text.as_bytes());
    }

    /// A digest of everything that happened: equal for two runs of the same seed.
    pub fn trace_hash(&self) -> u64 {
        self.hash.value()
    }

    /// Simulated time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// The current simulated instant.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Measures every delivered message (e.g. its encoded size) into [`NetStats`]'s byte counters; a
    /// codec test can also check each message there.
    pub fn set_meter(&mut self, meter: fn(&ClusterMsg) -> usize) {
        self.meter = Some(meter);
    }

    /// The seed nodes by index, for starts and restarts.
    pub fn set_seeds(&mut self, seeds: &[usize]) {
        self.seeds = seeds.to_vec();
    }

    /// Starts node `i` as a new incarnation and asks it to join through the seed nodes.
    pub fn start(&mut self, i: usize) {
        let uid = self.random() | 1;
        let node_seed = self.random();
        let me = UniqueAddress {
            address: self.nodes[i].address.clone(),
            uid,
        };
        self.mix(&format!("start {i} {uid}"));
        let node = &mut self.nodes[i];
        node.uids.push(uid);
        node.downed_at = None;
        node.removed_at = None;
        node.frozen_until = None;
        node.machine = Some(Membership::new(
            me,
            self.settings.clone(),
            node_seed,
            self.now,
        ));
        let seeds = self.seeds.iter().map(|s| address(*s)).collect();
        self.input(i, ClusterInput::JoinSeeds(seeds));
    }

    /// Feeds an input to node `i` now.
    pub fn input(&mut self, i: usize, input: ClusterInput) {
        let at = self.now;
        self.schedule(at, i, SimEvent::Input(input));
    }

    /// Crashes node `i` (as `kill -9`).
    pub fn kill(&mut self, i: usize) {
        self.mix(&format!("kill {i}"));
        self.nodes[i].machine = None;
    }

    /// Pauses node `i` for `d`: no timers run and inbound messages are lost meanwhile.
    pub fn freeze(&mut self, i: usize, d: Duration) {
        self.nodes[i].frozen_until = Some(self.now + d);
    }

    /// Drops every message between the two groups, both ways.
    pub fn partition(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
    }

    /// Drops messages from `from` to `to` only.
    pub fn block(&mut self, from: usize, to: usize) {
        self.blocked.insert((from, to));
    }

    /// Ends every partition.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Whether node `i` runs.
    pub fn alive(&self, i: usize) -> bool {
        self.nodes[i].machine.is_some()
    }

    /// Node `i`'s machine.
    pub fn machine(&self, i: usize) -> Option<&Membership> {
        self.nodes[i].machine.as_ref()
    }

    /// The indices of the members node `i` lists with `status`.
    pub fn with_status(&self, i: usize, status: MemberStatus) -> Vec<usize> {
        let Some(m) = self.machine(i) else {
            return Vec::new();
        };
        m.gossip()
            .members()
            .filter(|x| x.status == status)
            .filter_map(|x| self.index_of(&x.node.address))
            .collect()
    }

    fn index_of(&self, a: &Address) -> Option<usize> {
        a.port()
            .and_then(|p| p.checked_sub(2551))
            .map(usize::from)
            .filter(|i| *i < self.nodes.len())
    }

    fn schedule(&mut self, at: Instant, node: usize, event: SimEvent) {
        self.seq += 1;
        self.queue.insert((at, self.seq), (node, event));
    }

    fn latency(&mut self) -> Duration {
        let (lo, hi) = self.latency;
        let span = (hi - lo).as_micros().max(1) as u64;
        lo + Duration::from_micros(self.random() % span)
    }

    fn send(&mut self, from: usize, to: &Address, msg: ClusterMsg) {
        let Some(to) = self.index_of(to) else {
            self.net.dropped += 1;
            return;
        };
        if self.blocked.contains(&(from, to)) {
            self.net.dropped += 1;
            return;
        }
        let at = self.now + self.latency();
        let at = self
            .last_delivery
            .get(&(from, to))
            .map_or(at, |last| at.max(*last));
        self.last_delivery.insert((from, to), at);
        self.schedule(at, to, SimEvent::Deliver { from, msg });
    }

    fn carry_out(&mut self, i: usize) {
        loop {
            let Some(out) = self.nodes[i]
                .machine
                .as_mut()
                .and_then(StateMachine::poll_output)
            else {
                return;
            };
            let t = self.elapsed();
            match out {
                ClusterOutput::Send { to, msg } => self.send(i, &to, msg),
                ClusterOutput::Event(e) => {
                    self.mix(&format!("{i} {t:?} {e:?}"));
                    self.nodes[i].events.push((t, e));
                }
                ClusterOutput::Quarantine { node, .. } => {
                    self.mix(&format!("{i} quarantines {node}"));
                    self.nodes[i].quarantined.insert(node);
                }
                ClusterOutput::AcquireLease => {
                    let now = self.now;
                    let mine = self.nodes[i].uids.last().copied().unwrap_or(0);
                    let free = match self.lease {
                        None => true,
                        Some((holder, uid, since)) => {
                            (holder == i && uid == mine) || since + self.lease_ttl <= now
                        }
                    };
                    if free {
                        self.lease = Some((i, mine, now));
                    }
                    self.mix(&format!("{i} lease {free}"));
                    let at = now + self.latency();
                    self.schedule(at, i, SimEvent::Input(ClusterInput::LeaseAcquired(free)));
                }
                ClusterOutput::ReleaseLease => {
                    if self.lease.is_some_and(|(holder, _, _)| holder == i) {
                        self.lease = None;
                    }
                }
                ClusterOutput::SelfDowned { .. } => {
                    self.nodes[i].downed_at = Some(t);
                    self.mix(&format!("{i} downed"));
                    // Coordinated shutdown takes a moment; the node keeps gossiping meanwhile.
                    let at = self.now + Duration::from_secs(1);
                    self.schedule(at, i, SimEvent::Shutdown);
                }
                ClusterOutput::SelfRemoved => {
                    self.nodes[i].removed_at = Some(t);
                    self.mix(&format!("{i} removed"));
                    self.nodes[i].machine = None;
                    return;
                }
                ClusterOutput::Log { level, text } => self.nodes[i].logs.push((t, level, text)),
            }
        }
    }

    fn frozen(&self, i: usize) -> bool {
        self.nodes[i].frozen_until.is_some_and(|t| t > self.now)
    }

    fn deliver(&mut self, i: usize, event: SimEvent) {
        if self.nodes[i].machine.is_none() || self.frozen(i) {
            if matches!(event, SimEvent::Deliver { .. }) {
                self.net.dropped += 1;
            }
            return;
        }
        match event {
            SimEvent::Shutdown => {
                self.mix(&format!("{i} shut down"));
                self.nodes[i].machine = None;
                return;
            }
            SimEvent::Input(input) => {
                let now = self.now;
                if let Some(m) = self.nodes[i].machine.as_mut() {
                    m.handle(now, input);
                }
            }
            SimEvent::Deliver { from, msg } => {
                let sender = msg.from().clone();
                if self.nodes[i].quarantined.contains(&sender) {
                    // Remoting drops it and tells the sender it is quarantined.
                    self.net.dropped += 1;
                    if self.nodes[from].unique() == sender && self.nodes[from].machine.is_some() {
                        let by = self.nodes[i].unique();
                        let at = self.now + self.latency();
                        self.schedule(at, from, SimEvent::Input(ClusterInput::QuarantinedBy(by)));
                    }
                    return;
                }
                let size = self.meter.map_or(0, |meter| meter(&msg) as u64);
                match &msg {
                    ClusterMsg::Gossip { gossip, .. } | ClusterMsg::Welcome { gossip, .. } => {
                        self.net.gossip += 1;
                        self.net.gossip_bytes += size;
                        self.net.gossip_members += gossip.members().count() as u64;
                    }
                    ClusterMsg::GossipStatus { .. } => {
                        self.net.status += 1;
                        self.net.status_bytes += size;
                    }
                    ClusterMsg::Heartbeat { .. } | ClusterMsg::HeartbeatRsp { .. } => {
                        self.net.heartbeat += 1;
                        self.net.heartbeat_bytes += size;
                    }
                    _ => {
                        self.net.other += 1;
                        self.net.other_bytes += size;
                    }
                }
                let now = self.now;
                if let Some(m) = self.nodes[i].machine.as_mut() {
                    m.handle(now, ClusterInput::Received(msg));
                }
            }
        }
        self.carry_out(i);
    }

    /// Runs until `until`, processing every delivery and timer in time order.
    pub fn run_until(&mut self, until: Instant) {
        loop {
            let next_event = self.queue.keys().next().map(|(t, _)| *t);
            let next_timer = (0..self.nodes.len())
                .filter_map(|i| {
                    let t = self.nodes[i].machine.as_ref()?.poll_timeout()?;
                    Some((t.max(self.nodes[i].frozen_until.unwrap_or(t)), i))
                })
                .min();
            let timer_first = match (next_event, next_timer) {
                (None, None) => break,
                (Some(e), Some((t, _))) => t < e,
                (None, Some(_)) => true,
                (Some(_), None) => false,
            };
            if timer_first {
                let Some((t, i)) = next_timer else { break };
                if t > until {
                    break;
                }
                self.now = self.now.max(t);
                let now = self.now;
                if let Some(m) = self.nodes[i].machine.as_mut() {
                    m.handle_timeout(now);
                }
                self.carry_out(i);
            } else {
                let Some((&key, _)) = self.queue.iter().next() else {
                    break;
                };
                if key.0 > until {
                    break;
                }
                let Some((node, event)) = self.queue.remove(&key) else {
                    break;
                };
                self.now = self.now.max(key.0);
                self.deliver(node, event);
            }
        }
        self.now = self.now.max(until);
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Runs in steps of one second until `done` holds or `limit` has passed; returns whether
    /// it holds.
    pub fn run_until_true(&mut self, limit: Duration, mut done: impl FnMut(&Self) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            if done(self) {
                return true;
            }
            self.run_for(Duration::from_secs(1));
        }
        done(self)
    }

    /// The live nodes that are members (not downed, not removed).
    pub fn running_members(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.machine(i).is_some_and(|m| {
                    m.is_member()
                        && m.self_member()
                            .is_some_and(|s| s.status != MemberStatus::Down)
                })
            })
            .collect()
    }

    /// Whether every running member lists exactly `expected` as Up, has converged on it and
    /// agrees on the leader.
    pub fn all_up(&self, expected: &[usize]) -> bool {
        let running = self.running_members();
        if running != expected {
            return false;
        }
        let leaders: BTreeSet<_> = running
            .iter()
            .filter_map(|&i| self.machine(i).map(|m| m.state().leader.clone()))
            .collect();
        leaders.len() == 1
            && running.iter().all(|&i| {
                self.with_status(i, MemberStatus::Up) == expected
                    && self.machine(i).is_some_and(|m| {
                        m.gossip().members().count() == expected.len()
                            && m.gossip().converged(m.self_node())
                    })
            })
    }

    /// Checks the invariants that must hold at every moment: running members with the same
    /// gossip version list the same members with the same statuses and agree on the leader.
    pub fn check_invariants(&self) -> Result<(), String> {
        let running: Vec<(usize, &Membership)> = self
            .running_members()
            .into_iter()
            .filter_map(|i| self.machine(i).map(|m| (i, m)))
            .collect();
        match crate::sim::invariants::views::disagreements(&running).first() {
            Some(what) => Err(format!("at {:?}: {what}", self.elapsed())),
            None => Ok(()),
        }
    }

    /// Runs for `d` checking [`ClusterSim::check_invariants`] every simulated second.
    pub fn run_checked(&mut self, d: Duration) -> Result<(), String> {
        let end = self.now + d;
        while self.now < end {
            let step = (end - self.now).min(Duration::from_secs(1));
            self.run_for(step);
            self.check_invariants()?;
        }
        Ok(())
    }
}
