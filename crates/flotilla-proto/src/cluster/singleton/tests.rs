//! Singleton managers of several nodes, wired together by hand: messages and the lease answer
//! at once, time moves only when a test says so. Checked after every step: the singleton never
//! runs on two nodes at once, and with a lease it runs only where the lease is held.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use flotilla_core::Address;
use flotilla_core::machine::drain;

use super::*;

struct Node {
    manager: SingletonManager,
    running: bool,
    /// Starts and stops, in order.
    history: Vec<&'static str>,
    done: bool,
}

struct World {
    now: Instant,
    nodes: Vec<Node>,
    /// Who holds the lease.
    lease: Option<usize>,
    /// Whether the lease backend answers "granted" to a free lease.
    lease_available: bool,
    /// Pending (node, input).
    queue: VecDeque<(usize, SingletonInput)>,
    /// Messages to and from these nodes are lost.
    cut: BTreeSet<usize>,
    sent: Vec<(usize, SingletonMsg)>,
}

fn unique(i: usize) -> UniqueAddress {
    UniqueAddress {
        address: Address::remote("sim", "10.0.0.1", 2551 + i as u16)
            .unwrap_or_else(|e| panic!("{e}")),
        uid: 100 + i as u64,
    }
}

fn member(i: usize, status: MemberStatus, up_number: u64) -> Member {
    Member {
        node: unique(i),
        status,
        roles: BTreeSet::new(),
        app_version: "1".into(),
        up_number,
    }
}

/// Members 0..n, Up, with up-numbers in index order (node 0 is the oldest).
fn up(n: usize) -> Vec<Member> {
    (0..n)
        .map(|i| member(i, MemberStatus::Up, i as u64 + 1))
        .collect()
}

impl World {
    fn new(n: usize, settings: &SingletonSettings) -> Self {
        Self {
            now: crate::testing::epoch(),
            nodes: (0..n)
                .map(|i| Node {
                    manager: SingletonManager::new(unique(i), settings.clone()),
                    running: false,
                    history: Vec::new(),
                    done: false,
                })
                .collect(),
            lease: None,
            lease_available: true,
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            sent: Vec::new(),
        }
    }

    fn index(to: &UniqueAddress) -> usize {
        (to.uid - 100) as usize
    }

    fn input(&mut self, i: usize, input: SingletonInput) {
        self.queue.push_back((i, input));
        self.settle();
    }

    /// Everyone sees the same members.
    fn members(&mut self, members: &[Member]) {
        for i in 0..self.nodes.len() {
            if members.iter().any(|m| m.node == unique(i)) {
                self.queue
                    .push_back((i, SingletonInput::Members(members.to_vec())));
            }
        }
        self.settle();
    }

    fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let next = self
                .nodes
                .iter()
                .filter_map(|n| n.manager.poll_timeout())
                .filter(|t| *t <= end)
                .min();
            let Some(t) = next else { break };
            self.now = t;
            for i in 0..self.nodes.len() {
                if self.nodes[i].manager.poll_timeout().is_some_and(|d| d <= t) {
                    self.nodes[i].manager.handle_timeout(t);
                    self.carry_out(i);
                }
            }
            self.settle();
        }
        self.now = end;
    }

    fn settle(&mut self) {
        for _ in 0..10_000 {
            let Some((i, input)) = self.queue.pop_front() else {
                return;
            };
            self.nodes[i].manager.handle(self.now, input);
            self.carry_out(i);
        }
        panic!("the managers did not settle");
    }

    fn carry_out(&mut self, i: usize) {
        for out in drain(&mut self.nodes[i].manager) {
            match out {
                SingletonOutput::Start => {
                    let others: Vec<usize> = (0..self.nodes.len())
                        .filter(|&j| j != i && self.nodes[j].running)
                        .collect();
                    assert!(others.is_empty(), "node {i} starts while {others:?} run it");
                    assert!(!self.nodes[i].running, "node {i} started twice");
                    self.nodes[i].running = true;
                    self.nodes[i].history.push("start");
                }
                SingletonOutput::Stop | SingletonOutput::StopNow => {
                    self.nodes[i].running = false;
                    self.nodes[i]
                        .history
                        .push(if matches!(out, SingletonOutput::StopNow) {
                            "stop-now"
                        } else {
                            "stop"
                        });
                    self.queue.push_back((i, SingletonInput::SingletonStopped));
                }
                SingletonOutput::Send { to, msg } => {
                    let j = Self::index(&to);
                    self.sent.push((j, msg.clone()));
                    if !self.cut.contains(&j) && !self.cut.contains(&i) {
                        self.queue.push_back((j, SingletonInput::Received(msg)));
                    }
                }
                SingletonOutput::AcquireLease => {
                    let granted =
                        self.lease_available && (self.lease.is_none() || self.lease == Some(i));
                    if granted {
                        self.lease = Some(i);
                    }
                    self.queue
                        .push_back((i, SingletonInput::LeaseAcquired(granted)));
                }
                SingletonOutput::ReleaseLease => {
                    if self.lease == Some(i) {
                        self.lease = None;
                    }
                    self.queue.push_back((i, SingletonInput::LeaseReleased));
                }
                SingletonOutput::Done => self.nodes[i].done = true,
                SingletonOutput::Log { .. } => {}
            }
        }
        for (j, n) in self.nodes.iter().enumerate() {
            if n.running && self.nodes[j].manager.settings.use_lease {
                assert_eq!(self.lease, Some(j), "node {j} runs it without the lease");
            }
        }
    }

    fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].running)
            .collect()
    }
}

fn leased() -> SingletonSettings {
    SingletonSettings {
        use_lease: true,
        ..SingletonSettings::default()
    }
}

#[test]
fn the_oldest_of_a_new_cluster_starts_it_and_only_it() {
    for settings in [SingletonSettings::default(), leased()] {
        let mut w = World::new(3, &settings);
        w.members(&up(3));
        assert_eq!(w.running(), [0]);
        assert_eq!(w.nodes[1].manager.state_name(), "younger");
        assert_eq!(w.nodes[2].manager.oldest(), Some(&unique(0)));
    }
}

#[test]
fn a_leaving_oldest_hands_over_to_the_next_oldest() {
    for settings in [SingletonSettings::default(), leased()] {
        let mut w = World::new(3, &settings);
        w.members(&up(3));
        let mut members = up(3);
        members[0].status = MemberStatus::Leaving;
        w.members(&members);
        assert_eq!(w.running(), [1], "{}", w.nodes[1].manager.state_name());
        assert_eq!(w.nodes[0].history, ["start", "stop"]);
        if settings.use_lease {
            assert_eq!(w.lease, Some(1));
        }
        // Node 0's shutdown waits for nothing more.
        w.input(0, SingletonInput::Leave);
        assert!(w.nodes[0].done);
    }
}

#[test]
fn the_new_oldest_asks_again_every_interval_until_the_previous_one_answers() {
    let settings = SingletonSettings::default();
    let mut w = World::new(2, &settings);
    w.members(&up(2));
    w.cut.insert(0); // node 0 can neither hear nor be heard for a while
    let mut members = up(2);
    members[0].status = MemberStatus::Leaving;
    w.members(&members);
    assert!(
        w.running().is_empty(),
        "node 0 stopped it, node 1 has not heard"
    );
    w.advance(Duration::from_millis(3500));
    let asks = w
        .sent
        .iter()
        .filter(|(to, m)| *to == 0 && matches!(m, SingletonMsg::HandOverToMe { .. }))
        .count();
    assert_eq!(asks, 4, "at once, then every second");
    assert!(
        w.running().is_empty(),
        "no take-over while the previous oldest is a member"
    );
    w.cut.clear();
    w.advance(Duration::from_secs(1));
    assert_eq!(w.running(), [1]);
}

#[test]
fn a_crashed_oldest_is_taken_over_only_after_its_removal_and_the_margin() {
    let settings = SingletonSettings {
        removal_margin: Duration::from_secs(20).into(),
        ..SingletonSettings::default()
    };
    let mut w = World::new(3, &settings);
    w.members(&up(3));
    w.cut.insert(0);
    // Node 0 crashes: it stays running in this model (a crashed node's singleton is gone with
    // it, but nothing here may assume so).
    w.nodes[0].running = false;
    let mut members = up(3);
    members[0].status = MemberStatus::Down;
    w.members(&members);
    assert!(w.running().is_empty(), "Down is not removed yet");
    w.advance(Duration::from_secs(5));
    assert!(w.running().is_empty());
    w.members(&up(3)[1..]); // removed
    w.advance(Duration::from_secs(19));
    assert!(w.running().is_empty(), "inside the removal margin");
    w.advance(Duration::from_secs(1));
    assert_eq!(w.running(), [1]);
}

#[test]
fn without_the_lease_it_does_not_start_and_it_stops_at_once_when_the_lease_is_lost() {
    let settings = leased();
    let mut w = World::new(2, &settings);
    w.lease_available = false;
    w.members(&up(2));
    assert!(w.running().is_empty());
    w.advance(Duration::from_secs(5));
    assert!(w.running().is_empty(), "retried and denied again");
    w.lease_available = true;
    w.advance(Duration::from_secs(5));
    assert_eq!(w.running(), [0]);
    // The lease is lost (its backend says someone else has it now).
    w.lease = None;
    w.lease_available = false;
    w.input(0, SingletonInput::LeaseLost);
    assert!(w.running().is_empty(), "stopped at once");
    w.lease_available = true;
    w.advance(Duration::from_secs(5));
    assert_eq!(w.running(), [0], "re-acquired and started again");
    assert_eq!(
        w.nodes[0].history,
        ["start", "stop-now", "start"],
        "a lost lease abandons what the instance was doing"
    );
}

#[test]
fn the_last_member_leaving_stops_it_and_releases_the_lease_before_it_is_done() {
    let mut w = World::new(1, &leased());
    w.members(&up(1));
    assert_eq!(w.running(), [0]);
    w.input(0, SingletonInput::Leave);
    assert!(w.running().is_empty());
    assert_eq!(w.lease, None, "released");
    assert!(w.nodes[0].done);
}

#[test]
fn a_lost_hand_over_done_is_answered_again() {
    let mut w = World::new(2, &SingletonSettings::default());
    w.members(&up(2));
    let mut members = up(2);
    members[0].status = MemberStatus::Leaving;
    w.cut.insert(1); // node 1 misses the first HandOverDone
    w.members(&members);
    assert!(w.running().is_empty());
    w.cut.clear();
    w.advance(Duration::from_secs(1));
    assert_eq!(w.running(), [1]);
}

#[test]
fn a_younger_member_never_starts_it_while_an_unreachable_oldest_is_up() {
    // Unreachability does not change member status: the oldest stays the oldest.
    let mut w = World::new(3, &SingletonSettings::default());
    w.members(&up(3));
    w.cut.insert(0);
    w.advance(Duration::from_secs(60));
    assert_eq!(w.running(), [0]);
    assert_eq!(w.nodes[1].manager.state_name(), "younger");
}

#[test]
fn a_role_restricts_where_it_runs() {
    let settings = SingletonSettings {
        role: "backend".into(),
        ..SingletonSettings::default()
    };
    let mut w = World::new(3, &settings);
    let mut members = up(3);
    members[2].roles.insert("backend".into());
    w.members(&members);
    assert_eq!(w.running(), [2]);
}
