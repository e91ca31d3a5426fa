//! Where shards go: the allocation strategy the coordinator asks when a shard needs a home,
//! and every `rebalance-interval` (10 s) for the shards to move.
//!
//! [`LeastShardAllocation`] is Akka's newer least-shard strategy. A new shard goes to the region
//! with the fewest shards. A rebalance round moves at most
//! `max(1, min(absolute-limit, relative-limit × all shards))` shards, in two phases:
//!
//! 1. from every region above the optimum `⌈shards / regions⌉`, the shards above it;
//! 2. only when phase 1 finds nothing: since the optimum is rounded up, regions can still
//!    differ by two (say 4, 4, 2 with an optimum of 4); one shard from each region at the
//!    optimum, as many as regions are two or more below it.
//!
//! No round starts while a previous one's hand-offs are in progress, so shards move a few at a
//! time and the cluster converges to regions that differ by at most one shard.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_core::UniqueAddress;

use super::shard_id::ShardId;

/// Regions (by node) and the shards each hosts.
pub type Allocations = BTreeMap<UniqueAddress, BTreeSet<ShardId>>;

/// How the coordinator places and moves shards. Implementations are pure: the same inputs give
/// the same answer.
pub trait ShardAllocationStrategy: Send + Sync {
    /// The region to start `shard` in, among `current` (only regions that may take shards);
    /// `requester` is the region that asked. `None` when there is no region.
    fn allocate(
        &self,
        requester: &UniqueAddress,
        shard: &ShardId,
        current: &Allocations,
    ) -> Option<UniqueAddress>;

    /// The shards to hand off now so that they are allocated again; empty while `in_progress`
    /// (shards still being handed off) is not.
    fn rebalance(
        &self,
        current: &Allocations,
        in_progress: &BTreeSet<ShardId>,
    ) -> BTreeSet<ShardId>;
}

/// Akka's least-shard allocation with per-round limits. See the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct LeastShardAllocation {
    /// At most this many shards move per round (default 20).
    pub absolute_limit: usize,
    /// At most this fraction of all shards move per round (default 0.1).
    pub relative_limit: f64,
}

impl Default for LeastShardAllocation {
    fn default() -> Self {
        Self {
            absolute_limit: 20,
            relative_limit: 0.1,
        }
    }
}

impl LeastShardAllocation {
    /// How many shards one round may move when there are `shards` in all.
    pub fn limit(&self, shards: usize) -> usize {
        // The product is at most `shards`, so the conversion back is exact enough.
        #[allow(
            clippy::cast_precision_loss,
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss
        )]
        let relative = (self.relative_limit * shards as f64) as usize;
        relative.min(self.absolute_limit).max(1)
    }
}

impl ShardAllocationStrategy for LeastShardAllocation {
    fn allocate(
        &self,
        _requester: &UniqueAddress,
        _shard: &ShardId,
        current: &Allocations,
    ) -> Option<UniqueAddress> {
        // Fewest shards first; among equals the lowest address, so every coordinator agrees.
        current
            .iter()
            .min_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| a.0.cmp(b.0)))
            .map(|(region, _)| region.clone())
    }

    fn rebalance(
        &self,
        current: &Allocations,
        in_progress: &BTreeSet<ShardId>,
    ) -> BTreeSet<ShardId> {
        if !in_progress.is_empty() || current.is_empty() {
            return BTreeSet::new();
        }
        let total: usize = current.values().map(BTreeSet::len).sum();
        let regions = current.len();
        let optimal = total.div_ceil(regions);
        let limit = self.limit(total);
        // Most loaded first, then by address: the same answer on every coordinator.
        let mut sorted: Vec<(&UniqueAddress, &BTreeSet<ShardId>)> = current.iter().collect();
        sorted.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then_with(|| a.0.cmp(b.0)));
        let phase1: BTreeSet<ShardId> = sorted
            .iter()
            .filter(|(_, shards)| shards.len() > optimal)
            .flat_map(|(_, shards)| shards.iter().take(shards.len() - optimal))
            .take(limit)
            .cloned()
            .collect();
        if !phase1.is_empty() {
            return phase1;
        }
        let below = sorted
            .iter()
            .filter(|(_, shards)| shards.len() + 1 < optimal)
            .count();
        if below == 0 {
            return BTreeSet::new();
        }
        sorted
            .iter()
            .filter(|(_, shards)| shards.len() >= optimal)
            .filter_map(|(_, shards)| shards.iter().next())
            .take(below.min(limit))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testing::node;

    /// Regions 1.. with these shard counts; shard ids are unique across regions.
    fn layout(counts: &[usize]) -> Allocations {
        let mut next = 0usize;
        counts
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                let shards = (0..c)
                    .map(|_| {
                        next += 1;
                        ShardId(format!("{next:04}"))
                    })
                    .collect();
                (node(u16::try_from(i + 1).unwrap_or(u16::MAX)), shards)
            })
            .collect()
    }

    fn counts(a: &Allocations) -> Vec<usize> {
        a.values().map(BTreeSet::len).collect()
    }

    #[test]
    fn a_new_shard_goes_to_the_region_with_the_fewest_then_the_lowest_address() {
        let s = LeastShardAllocation::default();
        let a = layout(&[3, 1, 1, 2]);
        assert_eq!(s.allocate(&node(1), &ShardId::from("x"), &a), Some(node(2)));
        assert_eq!(
            s.allocate(&node(1), &ShardId::from("x"), &Allocations::new()),
            None
        );
    }

    #[test]
    fn rebalance_decision_table() {
        let s = LeastShardAllocation::default();
        let none = BTreeSet::new();
        // (why, counts, shards moved)
        let cases: &[(&str, &[usize], usize)] = &[
            ("balanced", &[3, 3, 3], 0),
            ("off by one is balanced", &[4, 3, 3], 0),
            (
                "phase 1: 6 above the optimum (4), limited to 10% of 12 (1)",
                &[10, 1, 1],
                1,
            ),
            (
                "phase 1: 30 above the optimum (40), limited to 10% of 120",
                &[70, 25, 25],
                12,
            ),
            ("phase 2: 4, 4, 2 with optimum 4", &[4, 4, 2], 1),
            (
                "phase 1: 5, 5, 2 (optimum 4), one per round below 20 shards",
                &[5, 5, 2],
                1,
            ),
            (
                "phase 1: 50, 50, 20 (optimum 40): 20 above, limit 12",
                &[50, 50, 20],
                12,
            ),
            (
                "phase 2: one region two below the optimum",
                &[3, 3, 3, 1],
                1,
            ),
            ("a new empty region", &[5, 5, 5, 0], 1),
            ("relative limit: 10% of 100", &[100, 0], 10),
            ("absolute limit: 20 of 1000", &[1000, 0], 20),
            ("at least one", &[3, 0], 1),
        ];
        for (why, c, moved) in cases {
            let got = s.rebalance(&layout(c), &none);
            assert_eq!(got.len(), *moved, "{why}: {c:?} → {got:?}");
        }
        let busy: BTreeSet<ShardId> = [ShardId::from("0001")].into();
        assert!(
            s.rebalance(&layout(&[10, 0]), &busy).is_empty(),
            "a round in progress"
        );
    }

    /// One rebalance round as the coordinator carries it out: the chosen shards leave their
    /// regions, then each is allocated again.
    fn round(s: &LeastShardAllocation, a: &mut Allocations) -> usize {
        let moving = s.rebalance(a, &BTreeSet::new());
        for shards in a.values_mut() {
            shards.retain(|x| !moving.contains(x));
        }
        for shard in &moving {
            if let Some(r) = s.allocate(&node(1), shard, a) {
                a.entry(r).or_default().insert(shard.clone());
            }
        }
        moving.len()
    }

    proptest! {
        /// From any layout, rounds converge to regions that differ by at most one shard, never
        /// move more than the limit per round, and lose no shard.
        #[test]
        fn rounds_converge_to_within_one_and_respect_the_limit(c in prop::collection::vec(0usize..60, 1..8)) {
            let s = LeastShardAllocation::default();
            let mut a = layout(&c);
            let total: usize = c.iter().sum();
            let mut rounds = 0;
            loop {
                let moved = round(&s, &mut a);
                prop_assert!(moved <= s.limit(total));
                prop_assert_eq!(counts(&a).iter().sum::<usize>(), total);
                if moved == 0 { break; }
                rounds += 1;
                prop_assert!(rounds < 200, "no convergence: {:?}", counts(&a));
            }
            let (min, max) = (counts(&a).into_iter().min().unwrap_or(0), counts(&a).into_iter().max().unwrap_or(0));
            prop_assert!(max - min <= 1, "not balanced: {:?}", counts(&a));
        }
    }
}
