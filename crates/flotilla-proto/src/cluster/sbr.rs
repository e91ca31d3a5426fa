//! The split-brain resolver: which side of a partition survives, as pure functions of one view.
//!
//! When members become unreachable nobody can tell a crash from a partition. Each side's leader
//! waits until the set of unreachable members has not changed for `stable-after`, then decides
//! on its own view. The rules are Akka's (`akka.cluster.sbr`), and the scenarios of Akka's
//! `SplitBrainResolverSpec` check them (`testdata/sbr_*.txt`), with one deliberate difference
//! where Akka can keep both sides (below). A decision depends only on the
//! gossip a side holds, never on which of its members decides, and the two sides of a clean
//! split count the same members, so they reach complementary decisions and at most one side
//! keeps running:
//!
//! | strategy | the side that survives |
//! |---|---|
//! | keep-majority | more members (of the role); on a tie, the side with the lowest address. Nobody if this side would lose with its Leaving members uncounted and the other side's Joining and WeaklyUp members — and the members downed while cut off — counted (membership changed during the partition), or if no member has the role |
//! | static-quorum | at least `quorum-size` members (of the role); with more than 2 × quorum − 1 of them, nobody |
//! | keep-oldest | the side with the oldest member (of the role); with `down-if-alone`, the other side when the oldest is alone and the other side has two or more. Nobody if that win does not hold with Leaving members uncounted (and, with `down-if-alone`, Joining and WeaklyUp members counted) and the members downed while cut off counted on the other side, or if no member has the role |
//! | down-all | nobody |
//! | lease-majority | the side that acquires the lease; the minority (counted as keep-majority counts) asks only after a delay |
//!
//! Members count when they are Up or Leaving. Joining and WeaklyUp members do not vote but go
//! down with their side; Exiting members neither count nor are downed (they are on their way
//! out); Down members are gone already.
//!
//! A member is *indirectly connected* when it is both an observer and a subject of
//! unreachability, or when it observes a member that has seen the current gossip (and so talks
//! to someone), that member included. Neither happens in a clean split or a crash. When
//! there are any, keep-majority, keep-oldest and static-quorum (and lease-majority once it holds
//! the lease) down them, then decide a second time without the observations between them: the
//! members unreachable for another reason (a crash, a clean split in the same window) go down
//! if that second decision says so, and the indirectly connected members still count there, on
//! whichever side the remaining observations put them (Flotilla: see below). If members are still indirectly connected
//! on the second look, every member is downed. lease-majority without the lease downs its own
//! side and the indirectly connected members; down-all downs every member in any case.
//!
//! **Stricter than Akka.** A member downed while it was unreachable (Down, not yet removed, still
//! observed unreachable) may never have heard of it, nor may the members beside it: over there
//! it may still count. Akka forgets it; Flotilla counts it on the other side when it checks a
//! keep-majority or keep-oldest win against membership having changed during the partition, so a
//! side that downed part of the cluster a moment before a new partition cannot win against the
//! very members it downed (simulation seed 9835, where Akka's rules left two clusters). And
//! the second look below the indirectly connected members is always taken, counting on the
//! other side those of them that may be there: found unreachable by this side's other members,
//! or linked by an observation to one that is and not having seen this side's gossip (seeds
//! 28336 and 97074).
//!
//! [`decide`] is the decision; [`Stability`] tracks when a view has been stable long enough.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use flotilla_core::{SplitBrainResolverSettings, UniqueAddress};

use super::gossip::Gossip;
use super::member::{Member, MemberStatus};
use super::reachability::ReachabilityStatus;
use strategy::{Scene, Verdict};

/// What the resolver decides over: one member's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The deciding member.
    pub self_node: UniqueAddress,
    /// Every member that is not Down or Removed.
    pub members: Vec<Member>,
    /// The members other than `self_node` that some observer finds unreachable: what the
    /// stable-after clock watches. (The decision itself also counts `self_node` as unreachable
    /// when others observe it so, so that it does not depend on who decides.)
    pub unreachable: BTreeSet<UniqueAddress>,
    /// (observer, subject) pairs of unreachability between members, Down ones included.
    pub records: Vec<(UniqueAddress, UniqueAddress)>,
    /// Who has seen the current gossip.
    pub seen: BTreeSet<UniqueAddress>,
    /// Down members not yet removed that some observer finds unreachable: downed while cut off,
    /// so neither they nor the members beside them may know — over there they may still count.
    pub downed_unreachable: Vec<Member>,
}

impl View {
    /// The view `gossip` gives `self_node`.
    pub fn of(gossip: &Gossip, self_node: &UniqueAddress) -> Self {
        let members: Vec<Member> = gossip
            .members()
            .filter(|m| !matches!(m.status, MemberStatus::Down | MemberStatus::Removed))
            .cloned()
            .collect();
        let unreachable = members
            .iter()
            .filter(|m| {
                m.node != *self_node
                    && gossip.reachability().status(&m.node) != ReachabilityStatus::Reachable
            })
            .map(|m| m.node.clone())
            .collect();
        // Observations of and by Down members stay, as in Akka: a member that observes a Down
        // member which has seen the gossip is indirectly connected all the same.
        let known: BTreeSet<&UniqueAddress> = gossip.members().map(|m| &m.node).collect();
        let records = gossip
            .reachability()
            .unreachable_records()
            .into_iter()
            .filter(|(o, s)| known.contains(o) && known.contains(s))
            .collect();
        let downed_unreachable = gossip
            .members()
            .filter(|m| {
                m.status == MemberStatus::Down
                    && m.node != *self_node
                    && gossip.reachability().status(&m.node) != ReachabilityStatus::Reachable
            })
            .cloned()
            .collect();
        Self {
            self_node: self_node.clone(),
            members,
            unreachable,
            records,
            seen: gossip.seen_by().clone(),
            downed_unreachable,
        }
    }

    /// The members that are indirectly connected (see the [module docs](self)).
    pub fn indirectly_connected(&self) -> BTreeSet<UniqueAddress> {
        Scene::of(self).indirectly_connected()
    }
}

impl fmt::Display for View {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |nodes: &mut dyn Iterator<Item = &UniqueAddress>| {
            nodes
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(
            f,
            "reachable [{}], unreachable [{}]",
            list(
                &mut self
                    .members
                    .iter()
                    .map(|m| &m.node)
                    .filter(|n| !self.unreachable.contains(n))
            ),
            list(&mut self.unreachable.iter())
        )?;
        if !self.records.is_empty() {
            let records: Vec<String> = self
                .records
                .iter()
                .map(|(o, s)| format!("{o} → {s}"))
                .collect();
            write!(f, ", observations [{}]", records.join(", "))?;
        }
        Ok(())
    }
}

/// Which members a decision downs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionKind {
    /// The other side: this side survives.
    DownUnreachable,
    /// This side, this node included: the other side survives.
    DownReachable,
    /// Everyone.
    DownAll,
    /// The indirectly connected members, and whoever a second look without the observations
    /// between them downs (see the [module docs](self)).
    DownIndirectlyConnected,
    /// This side and the indirectly connected members: lease-majority without the lease when
    /// some members are indirectly connected (Akka's `ReverseDownIndirectlyConnected`).
    DownReachableAndIndirectlyConnected,
}

/// A decision, with the members it downs and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The kind.
    pub kind: DecisionKind,
    /// The members to down, this node included if it is one of them.
    pub down: BTreeSet<UniqueAddress>,
    /// Why, in words.
    pub reason: String,
}

impl Decision {
    /// Down every member of `view` that can be downed (all but Exiting ones), for `reason`:
    /// what `down-all-when-unstable` does.
    pub fn down_all(view: &View, reason: String) -> Self {
        Self {
            kind: DecisionKind::DownAll,
            down: view
                .members
                .iter()
                .filter(|m| !matches!(m.status, MemberStatus::Exiting | MemberStatus::Down))
                .map(|m| m.node.clone())
                .collect(),
            reason,
        }
    }
}

/// What [`decide`] answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Down these members.
    Decide(Decision),
    /// lease-majority: acquire the lease after `delay`, then decide again with the result.
    AcquireLease {
        /// How long to wait first (the minority side waits, so the majority wins a race).
        delay: Duration,
    },
}

/// The resolver's decision over `view`; `lease` is the result of acquiring the lease, once
/// lease-majority has asked for it (other strategies ignore it).
///
/// The decision does not depend on `view.self_node`: every member that may lead a side decides
/// the same from the same gossip.
pub fn decide(settings: &SplitBrainResolverSettings, view: &View, lease: Option<bool>) -> Outcome {
    let scene = Scene::of(view);
    let (verdict, why) = strategy::verdict(settings, &scene);
    let (kind, reason) = match (verdict, lease) {
        (Verdict::Down(kind), _) => (kind, why),
        (Verdict::AcquireLease { delay, .. }, None) => return Outcome::AcquireLease { delay },
        (
            Verdict::AcquireLease {
                indirectly_connected,
                ..
            },
            Some(acquired),
        ) => {
            let kind = match (acquired, indirectly_connected) {
                (true, false) => DecisionKind::DownUnreachable,
                (true, true) => DecisionKind::DownIndirectlyConnected,
                (false, false) => DecisionKind::DownReachable,
                (false, true) => DecisionKind::DownReachableAndIndirectlyConnected,
            };
            let held = if acquired {
                "this side acquired the lease"
            } else {
                "this side did not acquire the lease"
            };
            (kind, format!("{why}; {held}"))
        }
    };
    Outcome::Decide(match scene.down(settings, kind) {
        Ok((down, None)) => Decision { kind, down, reason },
        Ok((down, Some(second))) => Decision {
            kind,
            down,
            reason: format!("{reason}; without the observations between them: {second}"),
        },
        Err(why) => Decision::down_all(view, format!("{reason}; {why}")),
    })
}

/// Tracks whether the unreachable set has been stable for `stable-after`, and how long the
/// view has been unstable (for `down-all-when-unstable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stability {
    unreachable: BTreeSet<UniqueAddress>,
    stable_since: Instant,
    unstable_since: Option<Instant>,
}

impl Stability {
    /// Nothing unreachable, stable from `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            unreachable: BTreeSet::new(),
            stable_since: now,
            unstable_since: None,
        }
    }

    /// The unreachable set as of `now`; a change restarts the stable-after clock.
    pub fn observe(&mut self, now: Instant, unreachable: &BTreeSet<UniqueAddress>) {
        if *unreachable != self.unreachable {
            self.unreachable = unreachable.clone();
            self.stable_since = now;
            if unreachable.is_empty() {
                self.unstable_since = None;
            } else {
                self.unstable_since.get_or_insert(now);
            }
        }
    }

    /// A decision was carried out: instability is over.
    pub fn decided(&mut self, now: Instant) {
        self.unstable_since = None;
        self.stable_since = now;
    }

    /// When the current view will have been stable for `stable_after` (if anything is
    /// unreachable).
    pub fn stable_at(&self, stable_after: Duration) -> Option<Instant> {
        (!self.unreachable.is_empty()).then(|| self.stable_since + stable_after)
    }

    /// When instability has lasted too long and everyone must be downed, if ever, in a cluster
    /// of `members` members.
    pub fn down_all_at(
        &self,
        settings: &SplitBrainResolverSettings,
        members: usize,
    ) -> Option<Instant> {
        let after = settings.down_all_after(members)?;
        self.unstable_since
            .map(|t| t + settings.stable_after_for(members) + after)
    }
}

mod strategy;

#[cfg(test)]
mod fixture;
#[cfg(test)]
mod tests;
