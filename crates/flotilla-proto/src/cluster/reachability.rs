//! Reachability: what each member's failure detector says about the members it monitors.
//!
//! Only an observer writes its own rows, and every change bumps that observer's version, so two
//! tables merge by taking, per observer, the rows of whichever side has the newer version. A
//! subject is unreachable when **any** observer says so, and reachable again only when **all**
//! observers that said so have changed their minds (their rows are then dropped).

use std::collections::BTreeMap;

use flotilla_core::UniqueAddress;

/// What one observer says of one subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReachabilityStatus {
    /// Heartbeats arrive.
    Reachable,
    /// The failure detector gave up on it.
    Unreachable,
    /// It was downed or removed: final.
    Terminated,
}

/// One observer's rows and the version of its latest change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ObserverRows {
    version: u64,
    /// Only subjects it does not find reachable: a Reachable row is dropped.
    rows: BTreeMap<UniqueAddress, ReachabilityStatus>,
}

/// The whole table, as gossip carries it. Ordered maps: iteration is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reachability {
    observers: BTreeMap<UniqueAddress, ObserverRows>,
}

impl Reachability {
    /// Everyone reachable.
    pub fn new() -> Self {
        Self::default()
    }

    fn change(
        &mut self,
        observer: &UniqueAddress,
        subject: &UniqueAddress,
        to: ReachabilityStatus,
    ) {
        let entry = self.observers.entry(observer.clone()).or_default();
        let now = entry
            .rows
            .get(subject)
            .copied()
            .unwrap_or(ReachabilityStatus::Reachable);
        if now == to || now == ReachabilityStatus::Terminated {
            return; // no change, or final
        }
        entry.version += 1;
        if to == ReachabilityStatus::Reachable {
            entry.rows.remove(subject);
        } else {
            entry.rows.insert(subject.clone(), to);
        }
    }

    /// `observer`'s failure detector gave up on `subject`.
    pub fn unreachable(&mut self, observer: &UniqueAddress, subject: &UniqueAddress) {
        self.change(observer, subject, ReachabilityStatus::Unreachable);
    }

    /// `observer` hears `subject` again.
    pub fn reachable(&mut self, observer: &UniqueAddress, subject: &UniqueAddress) {
        self.change(observer, subject, ReachabilityStatus::Reachable);
    }

    /// `subject` was downed or removed (by `observer`'s view): final for it.
    pub fn terminated(&mut self, observer: &UniqueAddress, subject: &UniqueAddress) {
        self.change(observer, subject, ReachabilityStatus::Terminated);
    }

    /// The combined status of `subject`: Terminated if anyone says so, else Unreachable if
    /// anyone says so, else Reachable.
    pub fn status(&self, subject: &UniqueAddress) -> ReachabilityStatus {
        self.observers
            .values()
            .filter_map(|o| o.rows.get(subject).copied())
            .max()
            .unwrap_or(ReachabilityStatus::Reachable)
    }

    /// Every observer's version and rows (subjects it does not find reachable), in order: the
    /// table's content, for encoding.
    pub fn observer_rows(
        &self,
    ) -> impl Iterator<
        Item = (
            &UniqueAddress,
            u64,
            &BTreeMap<UniqueAddress, ReachabilityStatus>,
        ),
    > {
        self.observers.iter().map(|(o, r)| (o, r.version, &r.rows))
    }

    /// A table from [`Reachability::observer_rows`] content (Reachable rows are dropped).
    pub fn from_observer_rows(
        rows: impl IntoIterator<
            Item = (
                UniqueAddress,
                u64,
                BTreeMap<UniqueAddress, ReachabilityStatus>,
            ),
        >,
    ) -> Self {
        let observers = rows
            .into_iter()
            .map(|(o, version, mut rows)| {
                rows.retain(|_, s| *s != ReachabilityStatus::Reachable);
                (o, ObserverRows { version, rows })
            })
            .collect();
        Self { observers }
    }

    /// What `observer` itself says of `subject`.
    pub fn observed(
        &self,
        observer: &UniqueAddress,
        subject: &UniqueAddress,
    ) -> ReachabilityStatus {
        self.observers
            .get(observer)
            .and_then(|o| o.rows.get(subject).copied())
            .unwrap_or(ReachabilityStatus::Reachable)
    }

    /// Every (observer, subject) pair where the observer finds the subject unreachable, in order.
    pub fn unreachable_records(&self) -> Vec<(UniqueAddress, UniqueAddress)> {
        self.observers
            .iter()
            .flat_map(|(o, rows)| {
                rows.rows
                    .iter()
                    .filter(|(_, s)| **s == ReachabilityStatus::Unreachable)
                    .map(move |(subject, _)| (o.clone(), subject.clone()))
            })
            .collect()
    }

    /// Every subject some observer finds unreachable (or terminated), in address order.
    pub fn all_unreachable(&self) -> Vec<UniqueAddress> {
        let mut out: Vec<UniqueAddress> = self
            .observers
            .values()
            .flat_map(|o| o.rows.keys().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The observers that find `subject` unreachable, in address order.
    pub fn observers_of(&self, subject: &UniqueAddress) -> Vec<UniqueAddress> {
        self.observers
            .iter()
            .filter(|(_, o)| o.rows.contains_key(subject))
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Per observer, the rows of the side with the newer version.
    #[must_use]
    pub fn merge(&self, other: &Self) -> Self {
        let mut observers = self.observers.clone();
        for (node, theirs) in &other.observers {
            match observers.get(node) {
                Some(ours) if ours.version >= theirs.version => {}
                _ => {
                    observers.insert(node.clone(), theirs.clone());
                }
            }
        }
        Self { observers }
    }

    /// Drops everything `node` observed and every row about it (once it is removed).
    #[must_use]
    pub fn remove(mut self, node: &UniqueAddress) -> Self {
        self.observers.remove(node);
        for o in self.observers.values_mut() {
            o.rows.remove(node);
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::node;
    use ReachabilityStatus::*;
    use proptest::prelude::*;

    #[test]
    fn unreachable_if_any_observer_says_so_and_reachable_only_when_all_agree() {
        let (a, b, c, x) = (node(1), node(2), node(3), node(9));
        let mut r = Reachability::new();
        assert_eq!(r.status(&x), Reachable);
        r.unreachable(&a, &x);
        r.unreachable(&b, &x);
        assert_eq!(r.status(&x), Unreachable);
        assert_eq!(r.observers_of(&x), vec![a.clone(), b.clone()]);
        r.reachable(&a, &x);
        assert_eq!(r.status(&x), Unreachable, "b still says so");
        r.reachable(&b, &x);
        assert_eq!(r.status(&x), Reachable);
        r.unreachable(&c, &x);
        r.terminated(&c, &x);
        r.reachable(&c, &x);
        assert_eq!(r.status(&x), Terminated, "final");
        assert_eq!(r.all_unreachable(), vec![x.clone()]);
        assert_eq!(r.clone().remove(&x).status(&x), Reachable);
    }

    #[test]
    fn a_merge_keeps_each_observers_newest_rows() {
        let (a, b, x) = (node(1), node(2), node(9));
        let mut old = Reachability::new();
        old.unreachable(&a, &x);
        let mut new = old.clone();
        new.reachable(&a, &x); // a changed its mind later
        new.unreachable(&b, &x);
        assert_eq!(old.merge(&new), new);
        assert_eq!(new.merge(&old), new);
        assert_eq!(new.merge(&old).observers_of(&x), vec![b]);
    }

    /// Histories in which each observer writes only its own rows, as in a cluster.
    fn arb_views() -> impl Strategy<Value = Vec<Reachability>> {
        let op = (0u16..3, 3u16..6, 0u8..3);
        prop::collection::vec(prop::collection::vec(op, 0..8), 3).prop_map(|per_view| {
            // One shared history per observer; each view has seen a prefix of it.
            let mut base = Reachability::new();
            let mut views = Vec::new();
            for ops in per_view {
                for (o, s, kind) in ops {
                    let (o, s) = (node(o), node(s));
                    match kind {
                        0 => base.unreachable(&o, &s),
                        1 => base.reachable(&o, &s),
                        _ => base.terminated(&o, &s),
                    }
                }
                views.push(base.clone());
            }
            views
        })
    }

    proptest! {
        #[test]
        fn reachability_merge_is_commutative_associative_and_idempotent(views in arb_views()) {
            let (a, b, c) = (&views[0], &views[1], &views[2]);
            prop_assert_eq!(a.merge(b), b.merge(a));
            prop_assert_eq!(a.merge(b).merge(c), a.merge(&b.merge(c)));
            prop_assert_eq!(&a.merge(a), a);
            prop_assert_eq!(&a.merge(c), c, "the later view wins");
        }
    }
}
