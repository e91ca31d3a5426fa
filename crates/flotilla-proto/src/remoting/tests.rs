//! Remoting between whole nodes on a deterministic simulated network and clock.
//!
//! The simulator owns virtual time, a seeded generator for latencies, the connections between
//! nodes, and faults (one-way or two-way blackholes, disconnects, kill and restart with a new
//! UID). Every run is a pure function of its seed; a failing scenario prints the seed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use flotilla_core::machine::drain;

use super::*;

type Node = Remoting<String, String>;
type Out = RemoteOutput<String, String>;

/// A tiny seeded generator (xorshift64*): deterministic, no OS randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn latency(&mut self) -> Duration {
        Duration::from_micros(500 + self.next() % 9_500)
    }
}

struct SimNode {
    remoting: Node,
    alive: bool,
    users: Vec<(UniqueAddress, String)>,
    systems: Vec<(UniqueAddress, String)>,
    events: Vec<Out>,
}

struct Sim {
    seed: u64,
    rng: Rng,
    start: Instant,
    now: Instant,
    settings: RemoteSettings,
    nodes: Vec<SimNode>,
    /// Inputs in flight: (due, sequence) → (node index, input).
    queue: BTreeMap<(Instant, u64), (usize, RemoteInput<String, String>)>,
    seq: u64,
    /// Open links per unordered node pair, by id. Both nodes may connect at once; as in the
    /// transport, either link serves and the association is lost only with the last one.
    connections: BTreeMap<(usize, usize), BTreeSet<u64>>,
    next_link: u64,
    /// Directed links that lose everything.
    blackholes: BTreeSet<(usize, usize)>,
    /// Per directed link, the last scheduled delivery: keeps each link FIFO like TCP.
    last_delivery: BTreeMap<(usize, usize), Instant>,
    trace: Vec<String>,
}

fn address(i: usize) -> Address {
    Address::remote("sim", &format!("10.0.0.{i}"), 2552).unwrap_or_else(|e| panic!("{e}"))
}

impl Sim {
    fn new(seed: u64, n: usize, settings: RemoteSettings) -> Self {
        let start = crate::testing::epoch();
        let mut sim = Self {
            seed,
            rng: Rng(seed | 1),
            start,
            now: start,
            settings,
            nodes: Vec::new(),
            queue: BTreeMap::new(),
            seq: 0,
            connections: BTreeMap::new(),
            next_link: 1,
            blackholes: BTreeSet::new(),
            last_delivery: BTreeMap::new(),
            trace: Vec::new(),
        };
        for i in 0..n {
            let node = sim.fresh(i);
            sim.nodes.push(node);
        }
        sim
    }

    fn fresh(&mut self, i: usize) -> SimNode {
        let uid = self.rng.next();
        SimNode {
            remoting: Remoting::new(
                UniqueAddress {
                    address: address(i),
                    uid,
                },
                self.settings.clone(),
            ),
            alive: true,
            users: Vec::new(),
            systems: Vec::new(),
            events: Vec::new(),
        }
    }

    fn uid(&self, i: usize) -> u64 {
        self.nodes[i].remoting.local().uid
    }

    fn unique(&self, i: usize) -> UniqueAddress {
        self.nodes[i].remoting.local().clone()
    }

    fn index_of(&self, a: &Address) -> Option<usize> {
        (0..self.nodes.len()).find(|&i| address(i) == *a)
    }

    fn pair(a: usize, b: usize) -> (usize, usize) {
        (a.min(b), a.max(b))
    }

    fn schedule(&mut self, at: Instant, node: usize, input: RemoteInput<String, String>) {
        self.seq += 1;
        self.queue.insert((at, self.seq), (node, input));
    }

    fn deliver_later(&mut self, from: usize, to: usize, input: RemoteInput<String, String>) {
        let at = (self.now + self.rng.latency()).max(
            self.last_delivery
                .get(&(from, to))
                .map_or(self.now, |t| *t + Duration::from_nanos(1)),
        );
        self.last_delivery.insert((from, to), at);
        self.schedule(at, to, input);
    }

    fn input(&mut self, node: usize, input: RemoteInput<String, String>) {
        if !self.nodes[node].alive {
            return;
        }
        self.nodes[node].remoting.handle(self.now, input);
        self.carry_out(node);
    }

    fn carry_out(&mut self, node: usize) {
        let outputs = drain(&mut self.nodes[node].remoting);
        for out in outputs {
            let at = self.now.saturating_duration_since(self.start);
            self.trace.push(format!("{at:?} n{node} {out:?}"));
            match &out {
                RemoteOutput::Connect { to } => self.connect(node, to),
                RemoteOutput::Transmit { to, pdu } => {
                    if let Some(peer) = self.index_of(&to.address) {
                        let open = self.connections.contains_key(&Self::pair(node, peer));
                        let live = self.nodes[peer].alive && self.uid(peer) == to.uid;
                        if open && live && !self.blackholes.contains(&(node, peer)) {
                            let from = self.unique(node);
                            self.deliver_later(
                                node,
                                peer,
                                RemoteInput::Received {
                                    from,
                                    pdu: pdu.clone(),
                                },
                            );
                        }
                    }
                }
                RemoteOutput::Disconnect { remote, .. } => {
                    if let Some(peer) = self.index_of(remote)
                        && self.connections.remove(&Self::pair(node, peer)).is_some()
                    {
                        let lost = RemoteInput::ConnectionLost {
                            remote: address(node),
                            reason: "closed by peer".into(),
                        };
                        self.deliver_later(node, peer, lost);
                    }
                }
                RemoteOutput::DeliverUser { from, msg } => {
                    self.nodes[node].users.push((from.clone(), msg.clone()));
                }
                RemoteOutput::DeliverSystem { from, msg } => {
                    self.nodes[node].systems.push((from.clone(), msg.clone()));
                }
                _ => {}
            }
            self.nodes[node].events.push(out);
        }
    }

    fn connect(&mut self, from: usize, to: &Address) {
        let Some(peer) = self.index_of(to) else {
            return;
        };
        if !self.nodes[peer].alive {
            let failed = RemoteInput::ConnectFailed {
                remote: to.clone(),
                reason: "connection refused".into(),
            };
            let at = self.now + self.rng.latency();
            self.schedule(at, from, failed);
            return;
        }
        if self.blackholes.contains(&(from, peer)) || self.blackholes.contains(&(peer, from)) {
            return; // the handshake never completes: the association's timeout decides
        }
        self.next_link += 1;
        self.connections
            .entry(Self::pair(from, peer))
            .or_default()
            .insert(self.next_link);
        let accepted = RemoteInput::Accepted {
            remote: self.unique(from),
        };
        self.deliver_later(from, peer, accepted);
        let connected = RemoteInput::Connected {
            remote: to.clone(),
            uid: self.uid(peer),
        };
        self.deliver_later(peer, from, connected);
    }

    /// Runs until `until` (virtual time), delivering in order and firing timers.
    fn run_until(&mut self, until: Instant) {
        for _ in 0..1_000_000 {
            let next_delivery = self.queue.keys().next().map(|(t, _)| *t);
            let next_timer = (0..self.nodes.len())
                .filter(|&i| self.nodes[i].alive)
                .filter_map(|i| self.nodes[i].remoting.poll_timeout().map(|t| (t, i)))
                .min();
            let step = match (next_delivery, next_timer) {
                (Some(d), Some((t, _))) if t < d => next_timer.map(|(t, i)| (t, Some(i))),
                (Some(d), _) => Some((d, None)),
                (None, Some((t, i))) => Some((t, Some(i))),
                (None, None) => None,
            };
            let Some((at, timer)) = step.filter(|(at, _)| *at <= until) else {
                self.now = until;
                return;
            };
            self.now = self.now.max(at);
            match timer {
                Some(i) => {
                    self.nodes[i].remoting.handle_timeout(self.now);
                    self.carry_out(i);
                }
                None => {
                    if let Some(((_, _), (node, input))) = self.queue.pop_first() {
                        self.input(node, input);
                    }
                }
            }
        }
        panic!("seed {}: the simulation did not settle", self.seed);
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn send_user(&mut self, from: usize, to: usize, msg: &str) {
        self.input(
            from,
            RemoteInput::SendUser {
                to: address(to),
                msg: msg.into(),
            },
        );
    }

    fn send_system(&mut self, from: usize, to: usize, msg: &str) {
        self.input(
            from,
            RemoteInput::SendSystem {
                to: address(to),
                msg: msg.into(),
            },
        );
    }

    fn drop_connection(&mut self, a: usize, b: usize) {
        if self.connections.remove(&Self::pair(a, b)).is_some() {
            // Like TCP: the reset reaches each side after whatever that link already carried.
            for (x, y) in [(a, b), (b, a)] {
                let lost = RemoteInput::ConnectionLost {
                    remote: address(y),
                    reason: "connection reset".into(),
                };
                self.deliver_later(y, x, lost);
            }
        }
    }

    /// Closes the oldest link between `a` and `b`; the association is lost only if it was the
    /// last one.
    fn drop_oldest_link(&mut self, a: usize, b: usize) {
        let pair = Self::pair(a, b);
        let Some(links) = self.connections.get_mut(&pair) else {
            return;
        };
        links.pop_first();
        if links.is_empty() {
            self.connections.remove(&pair);
            for (x, y) in [(a, b), (b, a)] {
                let lost = RemoteInput::ConnectionLost {
                    remote: address(y),
                    reason: "connection reset".into(),
                };
                self.deliver_later(y, x, lost);
            }
        }
    }

    fn links(&self, a: usize, b: usize) -> usize {
        self.connections
            .get(&Self::pair(a, b))
            .map_or(0, BTreeSet::len)
    }

    fn kill(&mut self, i: usize) {
        self.nodes[i].alive = false;
        let peers: Vec<usize> = self
            .connections
            .keys()
            .filter_map(|&(a, b)| (a == i).then_some(b).or((b == i).then_some(a)))
            .collect();
        for p in peers {
            self.drop_connection(i, p);
        }
    }

    fn restart(&mut self, i: usize) {
        self.kill(i);
        let node = self.fresh(i);
        self.nodes[i] = node;
    }

    fn state(&self, of: usize, towards: usize) -> Option<StateName> {
        self.nodes[of].remoting.state(&address(towards))
    }

    fn transitions(&self, of: usize) -> Vec<(StateName, StateName)> {
        self.nodes[of]
            .events
            .iter()
            .filter_map(|e| match e {
                RemoteOutput::Association(ev) => Some((ev.from, ev.to)),
                _ => None,
            })
            .collect()
    }

    fn hash(&self) -> u64 {
        // FNV-1a over the trace: equal traces, equal hashes.
        self.trace
            .iter()
            .flat_map(|l| l.bytes())
            .fold(0xcbf2_9ce4_8422_2325, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
    }
}

fn settings() -> RemoteSettings {
    RemoteSettings {
        retry_gate_closed_for: Duration::from_secs(5),
        handshake_timeout: Duration::from_secs(2),
        ..RemoteSettings::default()
    }
}

/// Seeds 1..=24, or 1..=`$FLOTILLA_SIM_SEEDS` for a longer sweep.
fn seeds() -> std::ops::RangeInclusive<u64> {
    let n = std::env::var("FLOTILLA_SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    1..=n
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn connection_loss_gates_then_idle_then_active_again() {
    use StateName::*;
    for seed in seeds() {
        let mut sim = Sim::new(seed, 2, settings());
        sim.send_user(0, 1, "hello");
        sim.run_for(s(1));
        assert_eq!(sim.nodes[1].users.len(), 1, "seed {seed}");
        sim.drop_connection(0, 1);
        sim.run_for(s(1));
        assert_eq!(sim.state(0, 1), Some(Gated), "seed {seed}");
        sim.send_user(0, 1, "while gated"); // dead letter, no connection attempt
        sim.run_for(s(5));
        assert_eq!(sim.state(0, 1), Some(Idle), "seed {seed}");
        sim.send_user(0, 1, "again");
        sim.run_for(s(1));
        assert_eq!(sim.state(0, 1), Some(Active), "seed {seed}");
        let got: Vec<&str> = sim.nodes[1].users.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(
            got,
            ["hello", "again"],
            "seed {seed}: at most once, gated one dropped"
        );
        assert_eq!(
            sim.transitions(0),
            [
                (Idle, Active),
                (Active, Gated),
                (Gated, Idle),
                (Idle, Active)
            ],
            "seed {seed}"
        );
    }
}

#[test]
fn an_inbound_connection_opens_the_gate_at_once() {
    for seed in seeds() {
        let mut sim = Sim::new(seed, 2, settings());
        sim.send_user(0, 1, "a");
        sim.run_for(s(1));
        sim.drop_connection(0, 1);
        sim.run_for(Duration::from_millis(100));
        assert_eq!(sim.state(0, 1), Some(StateName::Gated), "seed {seed}");
        // Node 1 connects to node 0 while 0 is gated towards 1.
        sim.nodes[1].remoting.handle(
            sim.now,
            RemoteInput::ConnectionLost {
                remote: address(0),
                reason: "reset".into(),
            },
        );
        sim.carry_out(1);
        sim.run_for(s(6)); // node 1's own gate
        sim.send_user(1, 0, "inbound");
        sim.run_for(Duration::from_millis(100));
        assert_eq!(sim.state(0, 1), Some(StateName::Active), "seed {seed}");
        assert!(
            sim.nodes[0].users.iter().any(|(_, m)| m == "inbound"),
            "seed {seed}"
        );
    }
}

#[test]
fn simultaneous_connects_make_two_links_and_either_serves_until_the_last_is_lost() {
    use StateName::*;
    for seed in seeds() {
        let mut sim = Sim::new(seed, 2, settings());
        // Both nodes open an association to the other at the same instant.
        sim.send_user(0, 1, "a0");
        sim.send_user(1, 0, "b0");
        sim.send_system(0, 1, "sa0");
        sim.send_system(1, 0, "sb0");
        assert_eq!(sim.links(0, 1), 2, "seed {seed}: two links");
        sim.run_for(s(1));
        for (x, y) in [(0, 1), (1, 0)] {
            assert_eq!(sim.state(x, y), Some(Active), "seed {seed}");
            assert_eq!(sim.transitions(x), [(Idle, Active)], "seed {seed}");
        }
        for i in 1..=10 {
            sim.send_user(0, 1, &format!("a{i}"));
            sim.send_user(1, 0, &format!("b{i}"));
            sim.send_system(0, 1, &format!("sa{i}"));
        }
        sim.run_for(s(1));
        // One link goes: the other carries on, nobody notices.
        sim.drop_oldest_link(0, 1);
        for i in 11..=20 {
            sim.send_user(0, 1, &format!("a{i}"));
            sim.send_system(0, 1, &format!("sa{i}"));
        }
        sim.run_for(s(1));
        assert_eq!(sim.state(0, 1), Some(Active), "seed {seed}");
        assert_eq!(sim.state(1, 0), Some(Active), "seed {seed}");
        let users = |n: usize| -> Vec<String> {
            sim.nodes[n].users.iter().map(|(_, m)| m.clone()).collect()
        };
        let expected: Vec<String> = (0..=20).map(|i| format!("a{i}")).collect();
        assert_eq!(users(1), expected, "seed {seed}: in order, once");
        let expected: Vec<String> = (0..=10).map(|i| format!("b{i}")).collect();
        assert_eq!(users(0), expected, "seed {seed}");
        let systems: Vec<String> = sim.nodes[1]
            .systems
            .iter()
            .map(|(_, m)| m.clone())
            .collect();
        let expected: Vec<String> = (0..=20).map(|i| format!("sa{i}")).collect();
        assert_eq!(systems, expected, "seed {seed}: exactly once, in order");
        // The last link goes: now both sides gate.
        sim.drop_oldest_link(0, 1);
        sim.run_for(Duration::from_millis(100));
        assert_eq!(sim.state(0, 1), Some(Gated), "seed {seed}");
        assert_eq!(sim.state(1, 0), Some(Gated), "seed {seed}");
    }
}

#[test]
fn unacknowledged_system_messages_count_only_towards_reachable_nodes() {
    for seed in seeds() {
        let mut sim = Sim::new(seed, 3, settings());
        sim.send_user(0, 1, "hello");
        sim.run_for(s(1));
        sim.send_system(0, 1, "watch");
        sim.send_system(0, 1, "terminated");
        assert_eq!(
            sim.nodes[0].remoting.unacknowledged_system_messages(),
            2,
            "seed {seed}: on their way"
        );
        sim.run_for(s(1));
        assert_eq!(
            sim.nodes[0].remoting.unacknowledged_system_messages(),
            0,
            "seed {seed}: acknowledged"
        );
        // Node 2 is dead: what waits for it is not worth waiting for at shutdown.
        sim.kill(2);
        sim.send_system(0, 2, "watch");
        sim.run_for(s(1));
        assert_eq!(sim.state(0, 2), Some(StateName::Gated), "seed {seed}");
        assert_eq!(
            sim.nodes[0].remoting.unacknowledged_system_messages(),
            0,
            "seed {seed}"
        );
    }
}

#[test]
fn system_messages_arrive_exactly_once_in_order_across_reconnects() {
    for seed in seeds() {
        let mut sim = Sim::new(seed, 2, settings());
        for i in 0..5 {
            sim.send_system(0, 1, &format!("sys-{i}"));
        }
        sim.run_for(Duration::from_millis(5));
        sim.drop_connection(0, 1); // some frames lost with the connection
        sim.run_for(s(6));
        for i in 5..10 {
            sim.send_system(0, 1, &format!("sys-{i}"));
        }
        sim.run_for(s(10));
        let got: Vec<&str> = sim.nodes[1]
            .systems
            .iter()
            .map(|(_, m)| m.as_str())
            .collect();
        let want: Vec<String> = (0..10).map(|i| format!("sys-{i}")).collect();
        assert_eq!(got, want, "seed {seed}");
    }
}

#[test]
fn a_restarted_remote_with_a_new_uid_associates_while_the_old_stays_quarantined() {
    for seed in seeds() {
        let mut sim = Sim::new(seed, 2, settings());
        sim.send_user(0, 1, "to the first");
        sim.run_for(s(1));
        let old = sim.unique(1);
        sim.input(
            0,
            RemoteInput::Quarantine {
                remote: old.clone(),
                reason: QuarantineReason::FailureDetector,
            },
        );
        sim.run_for(s(1));
        assert_eq!(sim.state(0, 1), Some(StateName::Quarantined), "seed {seed}");
        sim.restart(1);
        assert_ne!(sim.uid(1), old.uid);
        sim.run_for(s(6)); // the probe waits one gate period
        sim.send_user(0, 1, "probe"); // dead letter, but starts a probe
        sim.run_for(s(1));
        assert_eq!(sim.state(0, 1), Some(StateName::Active), "seed {seed}");
        sim.send_user(0, 1, "to the second");
        sim.run_for(s(1));
        assert_eq!(
            sim.nodes[1]
                .users
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>(),
            ["to the second"],
            "seed {seed}"
        );
        let snapshot = &sim.nodes[0].remoting.associations()[0];
        assert!(snapshot.quarantined.contains(&old.uid), "seed {seed}");
    }
}

#[test]
fn a_system_message_buffer_overflow_quarantines_and_the_quarantined_side_learns_it() {
    for seed in seeds() {
        let mut sim = Sim::new(
            seed,
            2,
            RemoteSettings {
                system_message_buffer_size: 5,
                ..settings()
            },
        );
        sim.send_user(0, 1, "hi");
        sim.run_for(s(1));
        // Acknowledgements from 1 never arrive: one-way blackhole 1 → 0.
        sim.blackholes.insert((1, 0));
        for i in 0..6 {
            sim.send_system(0, 1, &format!("watch-{i}"));
        }
        sim.run_for(s(1));
        assert_eq!(sim.state(0, 1), Some(StateName::Quarantined), "seed {seed}");
        let noticed = sim.nodes[1].events.iter().find_map(|e| match e {
            RemoteOutput::ThisSystemQuarantined { by, reason } => {
                Some((by.clone(), reason.clone()))
            }
            _ => None,
        });
        let (by, reason) = noticed.unwrap_or_else(|| panic!("seed {seed}: node 1 never learned"));
        assert_eq!(by, sim.unique(0));
        assert!(
            reason.contains("system-message-buffer-size"),
            "seed {seed}: {reason}"
        );
        // The quarantined side does not quarantine back.
        assert_ne!(sim.state(1, 0), Some(StateName::Quarantined), "seed {seed}");
        // Frames from the quarantined incarnation are dropped and counted.
        sim.blackholes.clear();
        sim.send_user(1, 0, "ignored");
        sim.run_for(s(1));
        assert!(sim.nodes[0].users.is_empty(), "seed {seed}");
    }
}

#[test]
fn an_asymmetric_partition_ends_in_quarantine_when_system_messages_cannot_get_through() {
    for seed in seeds() {
        let mut sim = Sim::new(
            seed,
            2,
            RemoteSettings {
                give_up_system_message_after: s(30),
                ..settings()
            },
        );
        sim.send_user(0, 1, "hi");
        sim.run_for(s(1));
        sim.blackholes.insert((0, 1)); // 0 → 1 loses everything; 1 → 0 still works
        sim.send_system(0, 1, "watch");
        sim.send_user(0, 1, "lost");
        sim.run_for(s(29));
        assert_eq!(
            sim.state(0, 1),
            Some(StateName::Active),
            "seed {seed}: resending"
        );
        sim.run_for(s(2));
        assert_eq!(sim.state(0, 1), Some(StateName::Quarantined), "seed {seed}");
        assert!(sim.nodes[1].systems.is_empty(), "seed {seed}");
        assert_eq!(sim.nodes[1].users.len(), 1, "seed {seed}: only the first");
    }
}

#[test]
fn a_connect_to_a_dead_or_unreachable_node_gates() {
    for seed in seeds() {
        let mut sim = Sim::new(seed, 3, settings());
        sim.kill(1);
        sim.send_user(0, 1, "refused");
        sim.blackholes.insert((0, 2));
        sim.send_user(0, 2, "unanswered");
        sim.run_for(s(3));
        assert_eq!(sim.state(0, 1), Some(StateName::Gated), "seed {seed}");
        assert_eq!(
            sim.state(0, 2),
            Some(StateName::Gated),
            "seed {seed}: handshake timeout"
        );
        let dead: Vec<&str> = sim.nodes[0]
            .events
            .iter()
            .filter_map(|e| match e {
                RemoteOutput::DeadLetter { msg, .. } => Some(msg.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(dead.len(), 2, "seed {seed}: {dead:?}");
    }
}

#[test]
fn a_run_replays_exactly_from_its_seed() {
    let run = |seed| {
        let mut sim = Sim::new(seed, 3, settings());
        for i in 0..20 {
            sim.send_user(i % 3, (i + 1) % 3, &format!("m{i}"));
            sim.send_system((i + 1) % 3, i % 3, &format!("s{i}"));
            if i == 7 {
                sim.drop_connection(0, 1);
            }
            sim.run_for(Duration::from_millis(300));
        }
        sim.run_for(s(10));
        (sim.hash(), sim.trace.len())
    };
    for seed in seeds() {
        assert_eq!(run(seed), run(seed), "seed {seed} did not replay");
    }
    assert_ne!(run(1).0, run(2).0, "different seeds, different runs");
}

fn terminated(sim: &Sim, of: usize) -> Vec<(Address, Option<u64>)> {
    sim.nodes[of]
        .events
        .iter()
        .filter_map(|e| match e {
            RemoteOutput::AddressTerminated { remote, uid } => Some((remote.clone(), *uid)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_watched_node_that_dies_is_declared_dead_after_the_acceptable_pause() {
    for seed in seeds() {
        let mut sim = Sim::new(seed, 2, settings());
        sim.input(0, RemoteInput::WatchNode { remote: address(1) });
        sim.run_for(s(5));
        assert!(
            terminated(&sim, 0).is_empty(),
            "seed {seed}: alive and answering"
        );
        let uid = sim.uid(1);
        sim.kill(1);
        let killed = sim.now;
        sim.run_for(s(10));
        assert!(
            terminated(&sim, 0).is_empty(),
            "seed {seed}: within the acceptable pause"
        );
        sim.run_for(s(10));
        assert_eq!(
            terminated(&sim, 0),
            [(address(1), Some(uid))],
            "seed {seed}"
        );
        let when = sim.nodes[0]
            .events
            .iter()
            .position(|e| matches!(e, RemoteOutput::AddressTerminated { .. }));
        assert!(when.is_some());
        assert!(sim.now - killed <= s(20));
        assert!(
            sim.nodes[0].remoting.associations()[0]
                .quarantined
                .contains(&uid),
            "seed {seed}"
        );
    }
}

#[test]
fn a_watched_cluster_member_is_left_to_the_cluster_until_it_is_no_longer_a_member() {
    for seed in seeds() {
        let mut sim = Sim::new(seed, 2, settings());
        let members = [address(0), address(1)].into_iter().collect();
        sim.input(0, RemoteInput::ClusterMembers { members });
        sim.input(0, RemoteInput::WatchNode { remote: address(1) });
        sim.send_user(0, 1, "hello");
        sim.run_for(s(5));
        let uid = sim.uid(1);
        sim.kill(1);
        // Long past remoting's own acceptable pause: nothing, the cluster decides.
        sim.run_for(s(60));
        assert!(terminated(&sim, 0).is_empty(), "seed {seed}");
        let associations = sim.nodes[0].remoting.associations();
        assert!(
            associations.iter().all(|a| !a.quarantined.contains(&uid)),
            "seed {seed}: {associations:?}"
        );
        // Removed from the cluster: remoting watches it again, from now.
        let members = [address(0)].into_iter().collect();
        sim.input(0, RemoteInput::ClusterMembers { members });
        sim.run_for(s(30));
        assert_eq!(
            terminated(&sim, 0),
            [(address(1), Some(uid))],
            "seed {seed}"
        );
    }
}

#[test]
fn a_healthy_watched_node_is_never_declared_dead() {
    for seed in seeds() {
        let mut sim = Sim::new(seed, 2, settings());
        sim.input(0, RemoteInput::WatchNode { remote: address(1) });
        for i in 0..120 {
            sim.send_user(1, 0, &format!("busy {i}"));
            sim.run_for(Duration::from_millis(500));
        }
        assert!(terminated(&sim, 0).is_empty(), "seed {seed}");
        let replies = sim.nodes[1]
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    RemoteOutput::Transmit {
                        pdu: Pdu::HeartbeatReply { .. },
                        ..
                    }
                )
            })
            .count();
        assert!(
            replies >= 55,
            "seed {seed}: about one heartbeat a second, got {replies}"
        );
    }
}

#[test]
fn a_watched_node_that_never_answers_is_declared_dead_too() {
    for seed in seeds() {
        let mut sim = Sim::new(seed, 2, settings());
        sim.blackholes.insert((0, 1));
        sim.blackholes.insert((1, 0));
        sim.input(0, RemoteInput::WatchNode { remote: address(1) });
        sim.run_for(s(30));
        assert_eq!(terminated(&sim, 0), [(address(1), None)], "seed {seed}");
    }
}

#[test]
fn unwatching_stops_the_heartbeats() {
    let mut sim = Sim::new(7, 2, settings());
    sim.input(0, RemoteInput::WatchNode { remote: address(1) });
    sim.input(0, RemoteInput::WatchNode { remote: address(1) });
    sim.run_for(s(3));
    sim.input(0, RemoteInput::UnwatchNode { remote: address(1) });
    sim.run_for(s(3));
    let beats = |sim: &Sim| {
        sim.nodes[0]
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    RemoteOutput::Transmit {
                        pdu: Pdu::Heartbeat { .. },
                        ..
                    }
                )
            })
            .count()
    };
    let still = beats(&sim);
    assert!(still >= 5, "one watch is left: heartbeats go on ({still})");
    sim.input(0, RemoteInput::UnwatchNode { remote: address(1) });
    let before = beats(&sim);
    sim.kill(1);
    sim.run_for(s(30));
    assert_eq!(beats(&sim), before, "no watch left: no heartbeat");
    assert!(terminated(&sim, 0).is_empty(), "and nobody to tell");
}

#[test]
fn a_node_that_dies_before_its_first_heartbeat_reply_is_named_by_its_last_incarnation() {
    for seed in seeds() {
        let mut sim = Sim::new(seed, 2, settings());
        sim.input(0, RemoteInput::WatchNode { remote: address(1) });
        sim.send_user(0, 1, "hello");
        sim.run_for(Duration::from_millis(50)); // associated; no heartbeat answered yet
        let uid = sim.uid(1);
        sim.kill(1);
        sim.run_for(s(30));
        assert_eq!(
            terminated(&sim, 0),
            [(address(1), Some(uid))],
            "seed {seed}"
        );
    }
}

fn cluster_received(sim: &Sim, at: usize) -> Vec<(UniqueAddress, Vec<u8>)> {
    sim.nodes[at]
        .events
        .iter()
        .filter_map(|e| match e {
            RemoteOutput::DeliverCluster { from, bytes } => Some((from.clone(), bytes.clone())),
            _ => None,
        })
        .collect()
}

fn cluster_dropped(sim: &Sim, at: usize) -> usize {
    sim.nodes[at]
        .events
        .iter()
        .filter(|e| matches!(e, RemoteOutput::DroppedCluster { .. }))
        .count()
}

#[test]
fn cluster_messages_wait_for_the_connection_and_arrive_in_order() {
    for seed in seeds() {
        let mut sim = Sim::new(seed, 2, settings());
        for i in 0..3u8 {
            sim.input(
                0,
                RemoteInput::SendCluster {
                    to: address(1),
                    bytes: vec![i],
                },
            );
        }
        sim.run_for(s(1));
        let got = cluster_received(&sim, 1);
        let from = sim.unique(0);
        assert_eq!(
            got,
            vec![
                (from.clone(), vec![0]),
                (from.clone(), vec![1]),
                (from, vec![2])
            ],
            "seed {seed}"
        );
        assert_eq!(cluster_dropped(&sim, 0), 0, "seed {seed}");
    }
}

#[test]
fn cluster_messages_to_an_unreachable_node_are_dropped_and_counted_not_queued_forever() {
    for seed in seeds() {
        let mut sim = Sim::new(seed, 2, settings());
        sim.kill(1);
        for i in 0..(CLUSTER_BUFFER as u8 + 3) {
            sim.input(
                0,
                RemoteInput::SendCluster {
                    to: address(1),
                    bytes: vec![i],
                },
            );
        }
        assert_eq!(
            cluster_dropped(&sim, 0),
            3,
            "seed {seed}: beyond the buffer"
        );
        sim.run_for(s(3));
        assert_eq!(sim.state(0, 1), Some(StateName::Gated), "seed {seed}");
        assert_eq!(
            cluster_dropped(&sim, 0),
            CLUSTER_BUFFER + 3,
            "seed {seed}: the buffer is dropped when the connection fails"
        );
        sim.input(
            0,
            RemoteInput::SendCluster {
                to: address(1),
                bytes: vec![9],
            },
        );
        assert_eq!(
            cluster_dropped(&sim, 0),
            CLUSTER_BUFFER + 4,
            "seed {seed}: gated"
        );
    }
}
