//! The gossip: the cluster state that members exchange, merge, and agree on.
//!
//! A gossip holds the members, who has seen this version, the reachability table, the version
//! (a vector clock) and tombstones of removed members. Two concurrent gossips merge into one
//! that is after both; the merge is commutative, associative and idempotent, so it does not
//! matter in which order or how often gossips meet. The leader acts only at *convergence*:
//! when every member that counts has seen the current version and no member that counts is
//! unreachable.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_core::UniqueAddress;

use super::member::{Member, MemberStatus};
use super::reachability::Reachability;
use super::vclock::VectorClock;

/// The cluster state as gossip carries it. Ordered maps: iteration is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Gossip {
    members: BTreeMap<UniqueAddress, Member>,
    seen: BTreeSet<UniqueAddress>,
    reachability: Reachability,
    version: VectorClock,
    /// Removed incarnations and when (milliseconds of the remover's wall clock), so a stale
    /// gossip cannot bring them back; pruned by the driver after a while.
    tombstones: BTreeMap<UniqueAddress, u64>,
}

impl Gossip {
    /// A gossip with no members.
    pub fn new() -> Self {
        Self::default()
    }

    /// A gossip from its parts, as decoded from the wire. Members with a tombstone are dropped,
    /// and only members can have seen it.
    pub fn from_parts(
        members: impl IntoIterator<Item = Member>,
        seen: impl IntoIterator<Item = UniqueAddress>,
        reachability: Reachability,
        version: VectorClock,
        tombstones: BTreeMap<UniqueAddress, u64>,
    ) -> Self {
        let mut members: BTreeMap<UniqueAddress, Member> =
            members.into_iter().map(|m| (m.node.clone(), m)).collect();
        members.retain(|n, _| !tombstones.contains_key(n));
        let seen = seen
            .into_iter()
            .filter(|n| members.contains_key(n))
            .collect();
        Self {
            members,
            seen,
            reachability,
            version,
            tombstones,
        }
    }

    /// Every member, in address order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// The member with that incarnation.
    pub fn member(&self, node: &UniqueAddress) -> Option<&Member> {
        self.members.get(node)
    }

    /// The reachability table.
    pub fn reachability(&self) -> &Reachability {
        &self.reachability
    }

    /// The reachability table, to record an observation (the caller then bumps the version).
    pub fn reachability_mut(&mut self) -> &mut Reachability {
        &mut self.reachability
    }

    /// The version.
    pub fn version(&self) -> &VectorClock {
        &self.version
    }

    /// Who has seen this version.
    pub fn seen_by(&self) -> &BTreeSet<UniqueAddress> {
        &self.seen
    }

    /// The tombstones: removed incarnations and when they were removed.
    pub fn tombstones(&self) -> &BTreeMap<UniqueAddress, u64> {
        &self.tombstones
    }

    /// Adds or replaces a member (unless it has a tombstone) — a change: bump the version after.
    pub fn put_member(&mut self, member: Member) {
        if !self.tombstones.contains_key(&member.node) {
            self.members.insert(member.node.clone(), member);
        }
    }

    /// Removes a member for good, leaving a tombstone stamped `at_ms`.
    pub fn remove_member(&mut self, node: &UniqueAddress, at_ms: u64) {
        self.members.remove(node);
        self.seen.remove(node);
        self.reachability = std::mem::take(&mut self.reachability).remove(node);
        self.version = std::mem::take(&mut self.version).prune(node);
        self.tombstones.insert(node.clone(), at_ms);
    }

    /// Drops tombstones stamped before `before_ms`.
    pub fn prune_tombstones(&mut self, before_ms: u64) {
        self.tombstones.retain(|_, at| *at >= before_ms);
    }

    /// This gossip changed at `node`: its version advances and only `node` has seen it.
    pub fn bump(&mut self, node: &UniqueAddress) {
        self.version = std::mem::take(&mut self.version).increment(node);
        self.seen.clear();
        self.seen.insert(node.clone());
    }

    /// `node` has seen this version.
    pub fn see(&mut self, node: &UniqueAddress) {
        self.seen.insert(node.clone());
    }

    /// The merge of two concurrent gossips: members merged per incarnation (the view further
    /// along wins), reachability per observer (the newer rows), versions merged, tombstones
    /// united (and their members dropped). Nobody has seen the result yet.
    #[must_use]
    pub fn merge(&self, other: &Self) -> Self {
        let mut tombstones = self.tombstones.clone();
        for (node, at) in &other.tombstones {
            let e = tombstones.entry(node.clone()).or_insert(*at);
            *e = (*e).max(*at);
        }
        let mut members = self.members.clone();
        for (node, theirs) in &other.members {
            let merged = match members.get(node) {
                Some(ours) => ours.merge(theirs),
                None => theirs.clone(),
            };
            members.insert(node.clone(), merged);
        }
        members.retain(|node, _| !tombstones.contains_key(node));
        let mut reachability = self.reachability.merge(&other.reachability);
        let mut version = self.version.merge(&other.version);
        for node in tombstones.keys() {
            reachability = reachability.remove(node);
            version = version.prune(node);
        }
        Self {
            members,
            seen: BTreeSet::new(),
            reachability,
            version,
            tombstones,
        }
    }

    /// Whether the gossip has converged as `self_node` sees it: no member that counts is
    /// unreachable (Down and Exiting members, and this node itself, do not count), and every
    /// Up or Leaving member has seen this version.
    pub fn converged(&self, self_node: &UniqueAddress) -> bool {
        let unreachable_ok = self.reachability.all_unreachable().iter().all(|node| {
            node == self_node
                || self
                    .members
                    .get(node)
                    .is_none_or(|m| matches!(m.status, MemberStatus::Down | MemberStatus::Exiting))
        });
        let all_seen = self.members.values().all(|m| {
            !matches!(m.status, MemberStatus::Up | MemberStatus::Leaving)
                || self.seen.contains(&m.node)
        });
        unreachable_ok && all_seen
    }

    /// The leader as `self_node` sees it: of the reachable members that are not Down (this node
    /// counts as reachable to itself), the first Up or Leaving one in address order, or else the
    /// first one of any status.
    pub fn leader(&self, self_node: &UniqueAddress) -> Option<&UniqueAddress> {
        self.leader_among(self_node, |_| true)
    }

    /// The leader among the members with `role`, chosen as [`Gossip::leader`] chooses.
    pub fn role_leader(&self, self_node: &UniqueAddress, role: &str) -> Option<&UniqueAddress> {
        self.leader_among(self_node, |m| m.has_role(role))
    }

    fn leader_among(
        &self,
        self_node: &UniqueAddress,
        include: impl Fn(&Member) -> bool,
    ) -> Option<&UniqueAddress> {
        let candidates: Vec<&Member> = self
            .members
            .values()
            .filter(|m| !matches!(m.status, MemberStatus::Down | MemberStatus::Exiting))
            .filter(|m| include(m))
            .filter(|m| {
                &m.node == self_node
                    || self.reachability.status(&m.node)
                        == super::reachability::ReachabilityStatus::Reachable
            })
            .collect();
        candidates
            .iter()
            .find(|m| matches!(m.status, MemberStatus::Up | MemberStatus::Leaving))
            .or_else(|| candidates.first())
            .map(|m| &m.node)
    }

    /// Whether every reachable Up or Leaving member has seen this version (convergence but for
    /// the unreachable members): enough for the leader to move joiners to WeaklyUp.
    pub fn converged_except_unreachable(&self) -> bool {
        self.members.values().all(|m| {
            !matches!(m.status, MemberStatus::Up | MemberStatus::Leaving)
                || self.seen.contains(&m.node)
                || self.reachability.status(&m.node)
                    != super::reachability::ReachabilityStatus::Reachable
        })
    }

    /// Forgets the tombstone of `node` (it was removed long enough ago).
    pub fn drop_tombstone(&mut self, node: &UniqueAddress) {
        self.tombstones.remove(node);
    }

    /// Who has seen this version, as one bit per member in address order (bit `i % 8` of byte
    /// `i / 8`): compact, and unambiguous between two nodes with the same version, which have
    /// the same members.
    pub fn seen_bits(&self) -> Vec<u8> {
        let mut bits = vec![0u8; self.members.len().div_ceil(8)];
        for (i, node) in self.members.keys().enumerate() {
            if self.seen.contains(node) {
                bits[i / 8] |= 1 << (i % 8);
            }
        }
        bits
    }

    /// Marks the members whose bits are set in `bits` (from [`Gossip::seen_bits`] of a gossip
    /// with the same version) as having seen it.
    pub fn see_bits(&mut self, bits: &[u8]) {
        for (i, node) in self.members.keys().enumerate() {
            if bits.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0) {
                self.seen.insert(node.clone());
            }
        }
    }

    /// Whether `bits` (of a gossip with the same version) marks every member this one has
    /// seen as having seen it.
    pub fn seen_within(&self, bits: &[u8]) -> bool {
        self.seen_bits()
            .iter()
            .enumerate()
            .all(|(i, ours)| ours & !bits.get(i).copied().unwrap_or(0) == 0)
    }

    /// Merges another seen-set for the same version.
    pub fn see_all<'a>(&mut self, nodes: impl IntoIterator<Item = &'a UniqueAddress>) {
        for n in nodes {
            if self.members.contains_key(n) {
                self.seen.insert(n.clone());
            }
        }
    }

    /// The member at `address`, whatever its incarnation.
    pub fn member_at(&self, address: &flotilla_core::Address) -> Option<&Member> {
        self.members.values().find(|m| &m.node.address == address)
    }

    /// Sets a member's status (the lifecycle must allow it) — a change: bump the version after.
    pub fn set_status(
        &mut self,
        node: &UniqueAddress,
        to: MemberStatus,
    ) -> Result<(), super::member::IllegalTransition> {
        if let Some(m) = self.members.get(node) {
            let changed = m.become_(to)?;
            self.members.insert(node.clone(), changed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::node;
    use MemberStatus::*;
    use proptest::prelude::*;

    fn member(n: u16, status: MemberStatus) -> Member {
        crate::testing::member(n, status, &[])
    }

    fn gossip(members: &[(u16, MemberStatus)], seen: &[u16]) -> Gossip {
        let mut g = Gossip::new();
        for &(n, s) in members {
            g.put_member(member(n, s));
        }
        for &n in seen {
            g.see(&node(n));
        }
        g
    }

    /// Convergence as a decision table: members and their statuses, who has seen the version,
    /// who is unreachable, and the verdict from node 1.
    #[test]
    fn convergence_decision_table() {
        struct Case {
            why: &'static str,
            members: &'static [(u16, MemberStatus)],
            seen: &'static [u16],
            unreachable: &'static [u16],
            converged: bool,
        }
        let cases = [
            Case {
                why: "every Up member has seen it",
                members: &[(1, Up), (2, Up), (3, Up)],
                seen: &[1, 2, 3],
                unreachable: &[],
                converged: true,
            },
            Case {
                why: "an Up member has not seen it",
                members: &[(1, Up), (2, Up), (3, Up)],
                seen: &[1, 2],
                unreachable: &[],
                converged: false,
            },
            Case {
                why: "Joining members need not have seen it",
                members: &[(1, Up), (2, Joining)],
                seen: &[1],
                unreachable: &[],
                converged: true,
            },
            Case {
                why: "a Leaving member must have seen it",
                members: &[(1, Up), (2, Leaving)],
                seen: &[1],
                unreachable: &[],
                converged: false,
            },
            Case {
                why: "an unreachable Up member blocks convergence",
                members: &[(1, Up), (2, Up), (3, Up)],
                seen: &[1, 2, 3],
                unreachable: &[3],
                converged: false,
            },
            Case {
                why: "an unreachable Down member does not",
                members: &[(1, Up), (2, Up), (3, Down)],
                seen: &[1, 2],
                unreachable: &[3],
                converged: true,
            },
            Case {
                why: "an unreachable Exiting member does not",
                members: &[(1, Up), (2, Up), (3, Exiting)],
                seen: &[1, 2],
                unreachable: &[3],
                converged: true,
            },
        ];
        for c in cases {
            let mut g = gossip(c.members, c.seen);
            for &u in c.unreachable {
                g.reachability_mut().unreachable(&node(2), &node(u));
            }
            assert_eq!(g.converged(&node(1)), c.converged, "{}", c.why);
        }
    }

    #[test]
    fn seen_bits_carry_the_seen_set_between_equal_versions() {
        let members: Vec<(u16, MemberStatus)> = (1..=11).map(|n| (n, Up)).collect();
        let a = gossip(&members, &[1, 3, 10]);
        let bits = a.seen_bits();
        assert_eq!(bits, [0b0000_0101, 0b0000_0010]);
        let mut b = gossip(&members, &[2]);
        assert!(!b.seen_within(&bits));
        b.see_bits(&bits);
        assert_eq!(
            b.seen_by().iter().map(|n| n.uid - 100).collect::<Vec<_>>(),
            [1, 2, 3, 10]
        );
        assert!(a.seen_within(&b.seen_bits()));
        b.see_bits(&[0xff; 4]); // bits past the members are ignored
        assert_eq!(b.seen_by().len(), 11);
    }

    #[test]
    fn the_leader_is_the_first_reachable_up_or_leaving_member() {
        let mut g = gossip(&[(1, Joining), (2, Up), (3, Up)], &[]);
        assert_eq!(g.leader(&node(3)), Some(&node(2)));
        g.reachability_mut().unreachable(&node(3), &node(2));
        assert_eq!(g.leader(&node(3)), Some(&node(3)), "2 is unreachable");
        assert_eq!(
            g.leader(&node(2)),
            Some(&node(2)),
            "but reachable to itself"
        );
        let g = gossip(&[(1, Joining), (2, Joining)], &[]);
        assert_eq!(
            g.leader(&node(2)),
            Some(&node(1)),
            "nobody Up: the first member"
        );
        let g = gossip(&[(1, Down), (2, Leaving)], &[]);
        assert_eq!(
            g.leader(&node(2)),
            Some(&node(2)),
            "Down members never lead"
        );
    }

    #[test]
    fn a_removed_member_stays_removed_through_merges_until_its_tombstone_is_pruned() {
        let mut a = gossip(&[(1, Up), (2, Up), (3, Down)], &[]);
        a.bump(&node(3));
        a.reachability_mut().unreachable(&node(1), &node(3));
        let stale = a.clone();
        a.remove_member(&node(3), 1_000);
        a.bump(&node(1));
        let m = stale.merge(&a);
        assert!(
            m.member(&node(3)).is_none(),
            "the stale gossip does not bring it back"
        );
        assert_eq!(
            m.version().version(&node(3)),
            0,
            "its clock entry is pruned"
        );
        assert!(m.reachability().all_unreachable().is_empty());
        assert!(m.seen_by().is_empty(), "nobody has seen a merge yet");
        let mut pruned = m.clone();
        pruned.prune_tombstones(2_000);
        assert!(pruned.tombstones().is_empty());
        assert_eq!(m.tombstones().get(&node(3)), Some(&1_000));
    }

    fn arb_gossip() -> impl Strategy<Value = Gossip> {
        let member = (1u16..6, 0usize..7, 0u64..3);
        let statuses = [Joining, WeaklyUp, Up, Leaving, Exiting, Down, Removed];
        (
            prop::collection::vec(member, 0..5),
            prop::collection::vec(1u16..6, 0..3),
            prop::collection::vec(1u16..6, 0..2),
        )
            .prop_map(move |(ms, bumps, removed)| {
                let mut g = Gossip::new();
                for (n, s, up) in ms {
                    g.put_member(Member {
                        status: statuses[s],
                        up_number: up,
                        ..Member::joining(node(n), BTreeSet::new(), "1")
                    });
                }
                for b in bumps {
                    g.bump(&node(b));
                }
                for r in removed {
                    g.remove_member(&node(r), u64::from(r) * 10);
                }
                g
            })
    }

    proptest! {
        #[test]
        fn gossip_merge_is_commutative_associative_and_idempotent(
            a in arb_gossip(), b in arb_gossip(), c in arb_gossip()
        ) {
            prop_assert_eq!(a.merge(&b), b.merge(&a));
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            let once = a.merge(&b);
            prop_assert_eq!(&once.merge(&b), &once, "merging again changes nothing");
            // No member of the merge is behind the same member in either input.
            for m in once.members() {
                for input in [&a, &b] {
                    if let Some(x) = input.member(&m.node) {
                        prop_assert_eq!(m.merge(x), m.clone());
                    }
                }
            }
        }
    }
}
