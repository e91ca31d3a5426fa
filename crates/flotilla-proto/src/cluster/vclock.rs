//! Vector clocks: the version of a gossip, one counter per node that changed it.
//!
//! Two gossips are ordered when one clock is at least the other in every entry; otherwise they are
//! concurrent and must be merged. Merging takes the larger counter per node, which is
//! commutative, associative and idempotent (the property tests below check all three).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use flotilla_core::UniqueAddress;

/// How two clocks relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causality {
    /// Every entry equal.
    Same,
    /// The left clock happened before the right one.
    Before,
    /// The left clock happened after the right one.
    After,
    /// Neither: each has an entry the other lacks or is behind on.
    Concurrent,
}

/// A vector clock over node incarnations. Ordered by node, so iteration is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VectorClock {
    versions: BTreeMap<UniqueAddress, u64>,
}

impl VectorClock {
    /// The empty clock: before every other one.
    pub fn new() -> Self {
        Self::default()
    }

    /// This clock with `node`'s counter advanced by one.
    #[must_use]
    pub fn increment(mut self, node: &UniqueAddress) -> Self {
        *self.versions.entry(node.clone()).or_insert(0) += 1;
        self
    }

    /// `node`'s counter (0 if it never changed the gossip).
    pub fn version(&self, node: &UniqueAddress) -> u64 {
        self.versions.get(node).copied().unwrap_or(0)
    }

    /// How many nodes have an entry.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// True for the empty clock.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }

    /// A clock with these counters (zero counters are left out).
    pub fn from_entries(entries: impl IntoIterator<Item = (UniqueAddress, u64)>) -> Self {
        Self {
            versions: entries.into_iter().filter(|(_, v)| *v > 0).collect(),
        }
    }

    /// The larger counter per node.
    #[must_use]
    pub fn merge(&self, other: &Self) -> Self {
        let mut versions = self.versions.clone();
        for (node, v) in &other.versions {
            let e = versions.entry(node.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
        Self { versions }
    }

    /// This clock without `node`'s entry: a removed member's entry is pruned once every member
    /// has seen its removal, so clocks do not grow with every node that ever joined.
    #[must_use]
    pub fn prune(mut self, node: &UniqueAddress) -> Self {
        self.versions.remove(node);
        self
    }

    /// How this clock relates to `other`.
    pub fn compare(&self, other: &Self) -> Causality {
        let mut le = true; // self <= other in every entry
        let mut ge = true; // self >= other in every entry
        let nodes = self.versions.keys().chain(other.versions.keys());
        for node in nodes {
            match self.version(node).cmp(&other.version(node)) {
                Ordering::Less => ge = false,
                Ordering::Greater => le = false,
                Ordering::Equal => {}
            }
            if !le && !ge {
                return Causality::Concurrent;
            }
        }
        match (le, ge) {
            (true, true) => Causality::Same,
            (true, false) => Causality::Before,
            (false, true) => Causality::After,
            (false, false) => Causality::Concurrent,
        }
    }

    /// Every entry, by node.
    pub fn entries(&self) -> impl Iterator<Item = (&UniqueAddress, u64)> {
        self.versions.iter().map(|(n, v)| (n, *v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::node;
    use proptest::prelude::*;

    fn clock(entries: &[(u16, u64)]) -> VectorClock {
        let mut c = VectorClock::new();
        for &(n, v) in entries {
            for _ in 0..v {
                c = c.increment(&node(n));
            }
        }
        c
    }

    #[test]
    fn clocks_compare_as_happened_before() {
        let a = clock(&[(1, 1)]);
        let b = clock(&[(1, 2)]);
        let c = clock(&[(1, 1), (2, 1)]);
        assert_eq!(a.compare(&a), Causality::Same);
        assert_eq!(VectorClock::new().compare(&a), Causality::Before);
        assert_eq!(a.compare(&b), Causality::Before);
        assert_eq!(b.compare(&a), Causality::After);
        assert_eq!(a.compare(&c), Causality::Before);
        assert_eq!(b.compare(&c), Causality::Concurrent);
        assert_eq!(c.compare(&b), Causality::Concurrent);
        let m = b.merge(&c);
        assert_eq!(m, clock(&[(1, 2), (2, 1)]));
        assert_eq!(b.compare(&m), Causality::Before);
        assert_eq!(c.compare(&m), Causality::Before);
        assert_eq!(m.clone().prune(&node(2)), b);
        assert_eq!(m.version(&node(3)), 0);
    }

    fn arb_clock() -> impl Strategy<Value = VectorClock> {
        prop::collection::vec((0u16..6, 0u64..4), 0..6).prop_map(|e| clock(&e))
    }

    proptest! {
        #[test]
        fn merge_is_commutative_associative_and_idempotent(
            a in arb_clock(), b in arb_clock(), c in arb_clock()
        ) {
            prop_assert_eq!(a.merge(&b), b.merge(&a));
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            // The merge is after (or the same as) both inputs.
            let m = a.merge(&b);
            prop_assert!(matches!(a.compare(&m), Causality::Before | Causality::Same));
            prop_assert!(matches!(b.compare(&m), Causality::Before | Causality::Same));
            prop_assert_eq!(a.merge(&a), a);
        }

        #[test]
        fn compare_is_antisymmetric(a in arb_clock(), b in arb_clock()) {
            let expected = match a.compare(&b) {
                Causality::Same => Causality::Same,
                Causality::Before => Causality::After,
                Causality::After => Causality::Before,
                Causality::Concurrent => Causality::Concurrent,
            };
            prop_assert_eq!(b.compare(&a), expected);
        }
    }
}
