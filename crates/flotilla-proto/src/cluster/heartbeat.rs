//! Failure detection between members: who heartbeats whom, and what the detectors say.
//!
//! Members are placed on a ring ordered by a stable hash of their address, so each member's
//! monitors are spread over the cluster rather than all being its address neighbours. A member
//! sends heartbeats to the next `monitored-by-nr-of-members` members on the ring that it finds
//! reachable, plus every member between them that it finds unreachable (to notice when they come
//! back). Each monitored member has a phi-accrual detector fed by its replies.
//!
//! [`Heartbeats`] is a plain value: the membership machine tells it the members, asks it which
//! heartbeats to send, feeds it replies, and asks which monitored members changed reachability.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use flotilla_core::{FailureDetectorSettings, UniqueAddress};

use crate::failure_detector::PhiAccrual;

/// FNV-1a over the address text: stable across processes and versions.
fn ring_hash(node: &UniqueAddress) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in node
        .address
        .to_string()
        .bytes()
        .chain(node.uid.to_le_bytes())
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The members `self_node` monitors: going round the ring from it, until `n` reachable ones
/// are found; unreachable ones passed on the way are monitored too.
pub fn receivers(
    self_node: &UniqueAddress,
    nodes: &BTreeSet<UniqueAddress>,
    unreachable: &BTreeSet<UniqueAddress>,
    n: usize,
) -> BTreeSet<UniqueAddress> {
    let mut ring: Vec<(u64, &UniqueAddress)> = nodes
        .iter()
        .chain(std::iter::once(self_node))
        .map(|node| (ring_hash(node), node))
        .collect();
    ring.sort();
    ring.dedup();
    let Some(at) = ring.iter().position(|(_, node)| *node == self_node) else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    let mut reachable = 0;
    for i in 1..ring.len() {
        if reachable == n {
            break;
        }
        let node = ring[(at + i) % ring.len()].1;
        if !unreachable.contains(node) {
            reachable += 1;
        }
        out.insert(node.clone());
    }
    out
}

/// A monitored member's detector changed its verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The detector gave up on it.
    Unreachable(UniqueAddress),
    /// It answers again.
    Reachable(UniqueAddress),
}

/// The monitoring side of failure detection. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct Heartbeats {
    settings: FailureDetectorSettings,
    monitored_by: usize,
    detectors: BTreeMap<UniqueAddress, PhiAccrual>,
    seq: u64,
    /// The members and unreachable set the monitored ones were last chosen from.
    chosen_from: (BTreeSet<UniqueAddress>, BTreeSet<UniqueAddress>),
}

impl Heartbeats {
    /// Monitoring nobody yet.
    pub fn new(settings: FailureDetectorSettings, monitored_by: usize) -> Self {
        Self {
            settings,
            monitored_by,
            detectors: BTreeMap::new(),
            seq: 0,
            chosen_from: (BTreeSet::new(), BTreeSet::new()),
        }
    }

    /// The members are `nodes` (this node excluded or not), of which `unreachable` are
    /// unreachable as this node observes them: monitor the right ones from `now`. A member newly
    /// monitored starts as if it had just answered, so silence from then on is detected.
    pub fn set_members(
        &mut self,
        self_node: &UniqueAddress,
        nodes: &BTreeSet<UniqueAddress>,
        unreachable: &BTreeSet<UniqueAddress>,
        now: Instant,
    ) {
        if self.chosen_from.0 == *nodes && self.chosen_from.1 == *unreachable {
            return; // same members, same ring: nothing to re-choose
        }
        self.chosen_from = (nodes.clone(), unreachable.clone());
        let wanted = receivers(self_node, nodes, unreachable, self.monitored_by);
        self.detectors.retain(|node, _| wanted.contains(node));
        for node in wanted {
            self.detectors.entry(node).or_insert_with(|| {
                let mut d = PhiAccrual::new(self.settings.clone());
                d.heartbeat(now);
                d
            });
        }
    }

    /// The members monitored now.
    pub fn monitored(&self) -> impl Iterator<Item = &UniqueAddress> {
        self.detectors.keys()
    }

    /// The next heartbeat counter; send one heartbeat with it to every monitored member.
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// A reply from `from` arrived at `now`.
    pub fn reply(&mut self, from: &UniqueAddress, now: Instant) {
        if let Some(d) = self.detectors.get_mut(from) {
            d.heartbeat(now);
        }
    }

    /// Each monitored member's phi at `now` (how suspicious its silence is; the detector gives
    /// up on it above `failure-detector.threshold`).
    pub fn phis(&self, now: Instant) -> Vec<(UniqueAddress, f64)> {
        self.detectors
            .iter()
            .map(|(node, d)| (node.clone(), d.phi(now)))
            .collect()
    }

    /// The monitored members whose verdict at `now` differs from `observed_unreachable` (what
    /// this node last published about them).
    pub fn verdicts(
        &self,
        observed_unreachable: &BTreeSet<UniqueAddress>,
        now: Instant,
    ) -> Vec<Verdict> {
        self.detectors
            .iter()
            .filter_map(|(node, d)| {
                let available = d.is_available(now);
                let marked = observed_unreachable.contains(node);
                match (available, marked) {
                    (false, false) => Some(Verdict::Unreachable(node.clone())),
                    (true, true) => Some(Verdict::Reachable(node.clone())),
                    _ => None,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{epoch, node};
    use std::time::Duration;

    fn nodes(ns: impl IntoIterator<Item = u16>) -> BTreeSet<UniqueAddress> {
        ns.into_iter().map(node).collect()
    }

    #[test]
    fn every_member_is_monitored_by_n_others_on_the_ring() {
        let all = nodes(1..=20);
        let mut monitors: BTreeMap<UniqueAddress, usize> = BTreeMap::new();
        for me in &all {
            let r = receivers(me, &all, &BTreeSet::new(), 5);
            assert_eq!(r.len(), 5);
            assert!(!r.contains(me));
            for m in r {
                *monitors.entry(m).or_default() += 1;
            }
        }
        assert!(monitors.values().all(|&c| c == 5), "{monitors:?}");
    }

    #[test]
    fn a_small_cluster_monitors_everyone_and_unreachable_members_are_kept_on_top() {
        let all = nodes(1..=4);
        assert_eq!(receivers(&node(1), &all, &BTreeSet::new(), 9), nodes(2..=4));
        let all = nodes(1..=12);
        let plain = receivers(&node(1), &all, &BTreeSet::new(), 3);
        let first = plain.iter().next().cloned().unwrap();
        let unreachable: BTreeSet<_> = [first.clone()].into();
        let with = receivers(&node(1), &all, &unreachable, 3);
        assert_eq!(
            with.len(),
            4,
            "three reachable ones plus the unreachable one"
        );
        assert!(with.contains(&first));
    }

    #[test]
    fn silence_makes_a_member_unreachable_and_replies_bring_it_back() {
        let t0 = epoch();
        let s = |n| t0 + Duration::from_secs(n);
        let mut hb = Heartbeats::new(FailureDetectorSettings::cluster(), 9);
        hb.set_members(&node(1), &nodes(1..=3), &BTreeSet::new(), t0);
        assert_eq!(hb.monitored().count(), 2);
        for t in 1..=5 {
            hb.reply(&node(2), s(t));
            hb.reply(&node(3), s(t));
        }
        assert!(hb.verdicts(&BTreeSet::new(), s(5)).is_empty());
        for t in 6..=12 {
            hb.reply(&node(2), s(t));
        }
        assert_eq!(
            hb.verdicts(&BTreeSet::new(), s(12)),
            vec![Verdict::Unreachable(node(3))]
        );
        let marked = nodes([3]);
        hb.reply(&node(3), s(13));
        hb.reply(&node(2), s(13));
        assert_eq!(
            hb.verdicts(&marked, s(13)),
            vec![Verdict::Reachable(node(3))]
        );
    }
}
