//! The shard coordinator's state: which regions exist, which only proxy, and where each shard
//! lives. It changes only by [`CoordinatorState::apply`] of a [`CoordinatorEvent`], which first
//! checks that the event keeps every invariant and refuses it otherwise — so the state can be
//! rebuilt by folding the same events, and a bug shows up as a refused event instead of a
//! shard with two homes.
//!
//! Invariants, after every event:
//! - every allocated shard's home is a registered region;
//! - a region's shard list and the shard → home map say the same thing;
//! - no shard has two homes; a region and a proxy are never the same node.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_core::UniqueAddress;

use super::shard_id::ShardId;

/// A change of the coordinator's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoordinatorEvent {
    /// A region that hosts shards registered.
    RegionRegistered(UniqueAddress),
    /// A proxy-only region (hosts no shards) registered.
    ProxyRegistered(UniqueAddress),
    /// A region is gone (its node left or was removed): its shards have no home now.
    RegionTerminated(UniqueAddress),
    /// A proxy is gone.
    ProxyTerminated(UniqueAddress),
    /// The shard lives in this region from now on.
    ShardHomeAllocated {
        /// The shard.
        shard: ShardId,
        /// Its home.
        region: UniqueAddress,
    },
    /// The shard has no home (it was handed off and stopped).
    ShardHomeDeallocated(ShardId),
}

/// Why an event was refused: applying it would break an invariant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvariantViolation {
    /// The region is registered already.
    #[error("region {0} is registered already")]
    RegionExists(UniqueAddress),
    /// The proxy is registered already.
    #[error("proxy {0} is registered already")]
    ProxyExists(UniqueAddress),
    /// The node is registered as the other kind (region vs proxy).
    #[error("{0} is registered as the other kind of region")]
    KindConflict(UniqueAddress),
    /// No such region.
    #[error("region {0} is not registered")]
    NoSuchRegion(UniqueAddress),
    /// No such proxy.
    #[error("proxy {0} is not registered")]
    NoSuchProxy(UniqueAddress),
    /// The shard has a home already.
    #[error("shard {shard} already lives in {home}")]
    AlreadyAllocated {
        /// The shard.
        shard: ShardId,
        /// Its home.
        home: UniqueAddress,
    },
    /// The shard has no home.
    #[error("shard {0} has no home")]
    NotAllocated(ShardId),
}

/// The coordinator's state. See the [module docs](self).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoordinatorState {
    regions: BTreeMap<UniqueAddress, BTreeSet<ShardId>>,
    proxies: BTreeSet<UniqueAddress>,
    shards: BTreeMap<ShardId, UniqueAddress>,
}

impl CoordinatorState {
    /// Every region with its shards.
    pub fn regions(&self) -> &BTreeMap<UniqueAddress, BTreeSet<ShardId>> {
        &self.regions
    }

    /// The proxies.
    pub fn proxies(&self) -> &BTreeSet<UniqueAddress> {
        &self.proxies
    }

    /// Where `shard` lives, if anywhere.
    pub fn home(&self, shard: &ShardId) -> Option<&UniqueAddress> {
        self.shards.get(shard)
    }

    /// Every allocated shard with its home.
    pub fn shards(&self) -> &BTreeMap<ShardId, UniqueAddress> {
        &self.shards
    }

    /// Whether `event` may be applied now (nothing changes).
    pub fn check(&self, event: &CoordinatorEvent) -> Result<(), InvariantViolation> {
        use CoordinatorEvent as E;
        use InvariantViolation as V;
        match event {
            E::RegionRegistered(r) if self.regions.contains_key(r) => {
                Err(V::RegionExists(r.clone()))
            }
            E::RegionRegistered(r) if self.proxies.contains(r) => Err(V::KindConflict(r.clone())),
            E::ProxyRegistered(p) if self.proxies.contains(p) => Err(V::ProxyExists(p.clone())),
            E::ProxyRegistered(p) if self.regions.contains_key(p) => {
                Err(V::KindConflict(p.clone()))
            }
            E::RegionTerminated(r) if !self.regions.contains_key(r) => {
                Err(V::NoSuchRegion(r.clone()))
            }
            E::ProxyTerminated(p) if !self.proxies.contains(p) => Err(V::NoSuchProxy(p.clone())),
            E::ShardHomeAllocated { region, .. } if !self.regions.contains_key(region) => {
                Err(V::NoSuchRegion(region.clone()))
            }
            E::ShardHomeAllocated { shard, .. } => match self.shards.get(shard) {
                Some(home) => Err(V::AlreadyAllocated {
                    shard: shard.clone(),
                    home: home.clone(),
                }),
                None => Ok(()),
            },
            E::ShardHomeDeallocated(s) if !self.shards.contains_key(s) => {
                Err(V::NotAllocated(s.clone()))
            }
            _ => Ok(()),
        }
    }

    /// Applies `event` if it keeps every invariant; refuses it (and changes nothing) if not.
    pub fn apply(&mut self, event: &CoordinatorEvent) -> Result<(), InvariantViolation> {
        use CoordinatorEvent as E;
        self.check(event)?;
        match event {
            E::RegionRegistered(r) => {
                self.regions.insert(r.clone(), BTreeSet::new());
            }
            E::ProxyRegistered(p) => {
                self.proxies.insert(p.clone());
            }
            E::RegionTerminated(r) => {
                for shard in self.regions.remove(r).unwrap_or_default() {
                    self.shards.remove(&shard);
                }
            }
            E::ProxyTerminated(p) => {
                self.proxies.remove(p);
            }
            E::ShardHomeAllocated { shard, region } => {
                self.shards.insert(shard.clone(), region.clone());
                if let Some(shards) = self.regions.get_mut(region) {
                    shards.insert(shard.clone());
                }
            }
            E::ShardHomeDeallocated(shard) => {
                if let Some(region) = self.shards.remove(shard)
                    && let Some(shards) = self.regions.get_mut(&region)
                {
                    shards.remove(shard);
                }
            }
        }
        debug_assert_eq!(self.consistent(), Ok(()));
        Ok(())
    }

    /// Folds `events` from the empty state, refusing at the first that breaks an invariant.
    pub fn fold<'a>(
        events: impl IntoIterator<Item = &'a CoordinatorEvent>,
    ) -> Result<Self, InvariantViolation> {
        let mut state = Self::default();
        for e in events {
            state.apply(e)?;
        }
        Ok(state)
    }

    /// The events that rebuild this state from nothing (regions, proxies, then homes).
    pub fn to_events(&self) -> Vec<CoordinatorEvent> {
        let regions = self
            .regions
            .keys()
            .map(|r| CoordinatorEvent::RegionRegistered(r.clone()));
        let proxies = self
            .proxies
            .iter()
            .map(|p| CoordinatorEvent::ProxyRegistered(p.clone()));
        let homes =
            self.shards
                .iter()
                .map(|(shard, region)| CoordinatorEvent::ShardHomeAllocated {
                    shard: shard.clone(),
                    region: region.clone(),
                });
        regions.chain(proxies).chain(homes).collect()
    }

    /// Checks the invariants of the [module docs](self) on the whole state.
    pub fn consistent(&self) -> Result<(), String> {
        for (shard, home) in &self.shards {
            match self.regions.get(home) {
                None => return Err(format!("shard {shard} lives in unregistered {home}")),
                Some(list) if !list.contains(shard) => {
                    return Err(format!("{home}'s shard list lacks {shard}"));
                }
                Some(_) => {}
            }
        }
        for (region, list) in &self.regions {
            if self.proxies.contains(region) {
                return Err(format!("{region} is both a region and a proxy"));
            }
            for shard in list {
                if self.shards.get(shard) != Some(region) {
                    return Err(format!("{region} lists {shard}, whose home is elsewhere"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testing::node;

    fn shard(n: u16) -> ShardId {
        ShardId(n.to_string())
    }

    #[test]
    fn events_that_would_break_an_invariant_are_refused_and_change_nothing() {
        use CoordinatorEvent as E;
        let mut s = CoordinatorState::default();
        let home = |sh: u16, r: u16| E::ShardHomeAllocated {
            shard: shard(sh),
            region: node(r),
        };
        assert_eq!(
            s.apply(&home(1, 1)),
            Err(InvariantViolation::NoSuchRegion(node(1)))
        );
        s.apply(&E::RegionRegistered(node(1)))
            .unwrap_or_else(|e| panic!("{e}"));
        s.apply(&E::RegionRegistered(node(2)))
            .unwrap_or_else(|e| panic!("{e}"));
        s.apply(&E::ProxyRegistered(node(3)))
            .unwrap_or_else(|e| panic!("{e}"));
        s.apply(&home(1, 1)).unwrap_or_else(|e| panic!("{e}"));
        let before = s.clone();
        let refused = [
            (
                E::RegionRegistered(node(1)),
                InvariantViolation::RegionExists(node(1)),
            ),
            (
                E::RegionRegistered(node(3)),
                InvariantViolation::KindConflict(node(3)),
            ),
            (
                E::ProxyRegistered(node(2)),
                InvariantViolation::KindConflict(node(2)),
            ),
            (
                E::ProxyRegistered(node(3)),
                InvariantViolation::ProxyExists(node(3)),
            ),
            (
                E::ProxyTerminated(node(1)),
                InvariantViolation::NoSuchProxy(node(1)),
            ),
            (
                E::RegionTerminated(node(9)),
                InvariantViolation::NoSuchRegion(node(9)),
            ),
            (
                home(1, 2),
                InvariantViolation::AlreadyAllocated {
                    shard: shard(1),
                    home: node(1),
                },
            ),
            (
                E::ShardHomeDeallocated(shard(2)),
                InvariantViolation::NotAllocated(shard(2)),
            ),
        ];
        for (event, why) in refused {
            assert_eq!(s.apply(&event), Err(why), "{event:?}");
            assert_eq!(s, before, "a refused {event:?} changed the state");
        }
        // A terminated region's shards have no home any more.
        s.apply(&E::RegionTerminated(node(1)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.home(&shard(1)), None);
        s.apply(&home(1, 2)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.home(&shard(1)), Some(&node(2)));
        s.apply(&E::ShardHomeDeallocated(shard(1)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(s.regions()[&node(2)].is_empty());
    }

    fn event() -> impl Strategy<Value = CoordinatorEvent> {
        use CoordinatorEvent as E;
        let n = || 1u16..6;
        prop_oneof![
            n().prop_map(|r| E::RegionRegistered(node(r))),
            n().prop_map(|r| E::ProxyRegistered(node(r))),
            n().prop_map(|r| E::RegionTerminated(node(r))),
            n().prop_map(|r| E::ProxyTerminated(node(r))),
            (0u16..12, n()).prop_map(|(s, r)| E::ShardHomeAllocated {
                shard: shard(s),
                region: node(r),
            }),
            (0u16..12).prop_map(|s| E::ShardHomeDeallocated(shard(s))),
        ]
    }

    proptest! {
        /// Whatever events arrive, in whatever order, the accepted ones keep the state
        /// consistent, the state is the fold of exactly those, and it is rebuilt from its own
        /// summary.
        #[test]
        fn any_sequence_keeps_the_invariants_and_folds_back(events in prop::collection::vec(event(), 0..200)) {
            let mut state = CoordinatorState::default();
            let mut accepted = Vec::new();
            for e in &events {
                let before = state.clone();
                match state.apply(e) {
                    Ok(()) => accepted.push(e.clone()),
                    Err(_) => prop_assert_eq!(&state, &before),
                }
                prop_assert_eq!(state.consistent(), Ok(()));
            }
            prop_assert_eq!(CoordinatorState::fold(&accepted), Ok(state.clone()));
            prop_assert_eq!(CoordinatorState::fold(&state.to_events()), Ok(state));
        }
    }
}
