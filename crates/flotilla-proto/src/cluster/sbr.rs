//! The split-brain resolver: which side of a partition survives, as pure functions of one view.
//!
//! When members become unreachable nobody can tell a crash from a partition. Each side's leader
//! waits until the set of unreachable members has not changed for `stable-after`, then decides
//! with the same rules on its own view, so that both sides reach complementary decisions and at
//! most one side keeps running:
//!
//! | strategy | the side that survives |
//! |---|---|
//! | keep-majority | more members (of the role); on a tie, the side with the lowest address; nobody if this side would not win with its leaving members uncounted and the other side's joining ones counted (as Akka) |
//! | static-quorum | at least `quorum-size` members; with more than 2 × quorum − 1 members, nobody |
//! | keep-oldest | the side with the oldest member — unless it is alone there (`down-if-alone`) |
//! | down-all | nobody |
//! | lease-majority | the side that acquires the lease; the minority tries only after a delay |
//!
//! Members count when they are Up or Leaving (WeaklyUp and Joining members do not vote but go
//! down with their side; Down members are gone already). A member is *indirectly connected* when
//! it is both an observer and a subject of unreachability, or when a member that observers find
//! unreachable has seen the current gossip (so it does talk to someone): such members are downed
//! in any case, and the strategy decides over the rest as if they were not members (so a crash
//! elsewhere is still judged on the clean split).
//!
//! [`decide`] is the decision; [`Stability`] tracks when a view has been stable long enough.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use flotilla_core::{SplitBrainResolverSettings, Strategy, UniqueAddress};

use super::gossip::Gossip;
use super::member::{Member, MemberStatus};
use super::reachability::ReachabilityStatus;

/// What the resolver decides over: one member's view of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// The deciding member.
    pub self_node: UniqueAddress,
    /// Every member that is not Down or Removed.
    pub members: Vec<Member>,
    /// The members that some observer finds unreachable.
    pub unreachable: BTreeSet<UniqueAddress>,
    /// (observer, subject) pairs of unreachability.
    pub records: Vec<(UniqueAddress, UniqueAddress)>,
    /// Who has seen the current gossip.
    pub seen: BTreeSet<UniqueAddress>,
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
        let live: BTreeSet<&UniqueAddress> = members.iter().map(|m| &m.node).collect();
        let records = gossip
            .reachability()
            .unreachable_records()
            .into_iter()
            .filter(|(o, s)| live.contains(o) && live.contains(s))
            .collect();
        Self {
            self_node: self_node.clone(),
            members,
            unreachable,
            records,
            seen: gossip.seen_by().clone(),
        }
    }

    /// The members that are indirectly connected (see the [module docs](self)).
    pub fn indirectly_connected(&self) -> BTreeSet<UniqueAddress> {
        let observers: BTreeSet<&UniqueAddress> = self.records.iter().map(|(o, _)| o).collect();
        let subjects: BTreeSet<&UniqueAddress> = self.records.iter().map(|(_, s)| s).collect();
        let mut out: BTreeSet<UniqueAddress> = observers
            .intersection(&subjects)
            .map(|n| (*n).clone())
            .collect();
        for (o, s) in &self.records {
            if self.seen.contains(s) {
                out.insert(o.clone());
                out.insert(s.clone());
            }
        }
        out
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
    /// Only the indirectly connected members.
    DownIndirectlyConnected,
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

fn voters<'a>(
    view: &'a View,
    role: &'a str,
    unreachable: &'a BTreeSet<UniqueAddress>,
    on_reachable_side: bool,
) -> impl Iterator<Item = &'a Member> + 'a {
    view.members.iter().filter(move |m| {
        matches!(m.status, MemberStatus::Up | MemberStatus::Leaving)
            && (role.is_empty() || m.has_role(role))
            && unreachable.contains(&m.node) != on_reachable_side
    })
}

/// keep-majority over `unreachable`: true when the reachable side survives, and why.
fn majority(view: &View, role: &str, unreachable: &BTreeSet<UniqueAddress>) -> (bool, String) {
    let r: Vec<&Member> = voters(view, role, unreachable, true).collect();
    let u: Vec<&Member> = voters(view, role, unreachable, false).collect();
    let what = if role.is_empty() {
        "members".to_owned()
    } else {
        format!("members with role {role}")
    };
    if r.len() != u.len() {
        return (
            r.len() > u.len(),
            format!(
                "{} of {} {what} are on this side",
                r.len(),
                r.len() + u.len()
            ),
        );
    }
    let lowest = r
        .iter()
        .chain(&u)
        .map(|m| &m.node)
        .min()
        .or_else(|| view.members.iter().map(|m| &m.node).min());
    let ours = lowest.is_some_and(|n| !unreachable.contains(n));
    (
        ours,
        format!(
            "the sides are equal ({} {what} each); the side with the lowest address ({}) survives",
            r.len(),
            lowest.map_or_else(|| "none".to_owned(), ToString::to_string)
        ),
    )
}

/// keep-majority counted against this side: Leaving members here may already be Exiting on
/// the other side (not counted there), Joining and WeaklyUp members there may already be Up.
/// True when this side still wins.
fn majority_at_worst(view: &View, role: &str, unreachable: &BTreeSet<UniqueAddress>) -> bool {
    let with_role = |m: &&Member| role.is_empty() || m.has_role(role);
    let ours: Vec<&Member> = view
        .members
        .iter()
        .filter(with_role)
        .filter(|m| !unreachable.contains(&m.node) && m.status == MemberStatus::Up)
        .collect();
    let theirs: Vec<&Member> = view
        .members
        .iter()
        .filter(with_role)
        .filter(|m| {
            unreachable.contains(&m.node)
                && matches!(
                    m.status,
                    MemberStatus::Up
                        | MemberStatus::Leaving
                        | MemberStatus::Joining
                        | MemberStatus::WeaklyUp
                )
        })
        .collect();
    if ours.len() != theirs.len() {
        return ours.len() > theirs.len();
    }
    ours.iter()
        .chain(&theirs)
        .map(|m| &m.node)
        .min()
        .is_some_and(|n| !unreachable.contains(n))
}

fn keep_side(survive: bool, reason: String) -> (DecisionKind, String) {
    if survive {
        (DecisionKind::DownUnreachable, reason)
    } else {
        (DecisionKind::DownReachable, reason)
    }
}

/// The strategy's decision over `unreachable`, or the need for the lease.
fn strategy(
    settings: &SplitBrainResolverSettings,
    view: &View,
    unreachable: &BTreeSet<UniqueAddress>,
    lease: Option<bool>,
) -> Result<(DecisionKind, String), Duration> {
    let role = settings.role();
    Ok(match settings.active_strategy {
        Strategy::KeepMajority => {
            let (survive, why) = majority(view, role, unreachable);
            if survive && !majority_at_worst(view, role, unreachable) {
                // As Akka does: a member leaving on this side may be Exiting (no longer
                // counted) on the other, a joiner on the other side may be Up there. Counted
                // that way this side would not win: the two sides may each think they won, so
                // the safe decision is that neither stays.
                (
                    DecisionKind::DownAll,
                    format!(
                        "keep-majority: {why}, but not when this side's leaving members are not counted and the other side's joining ones are (membership changed during the partition)"
                    ),
                )
            } else {
                keep_side(survive, format!("keep-majority: {why}"))
            }
        }
        Strategy::StaticQuorum => {
            let q = settings.static_quorum.quorum_size;
            let r = voters(view, role, unreachable, true).count();
            let total = r + voters(view, role, unreachable, false).count();
            if total > q * 2 - 1 {
                (
                    DecisionKind::DownAll,
                    format!(
                        "static-quorum: {total} members is more than 2 × quorum-size {q} − 1, so both sides could have a quorum"
                    ),
                )
            } else {
                keep_side(
                    r >= q,
                    format!("static-quorum: {r} members on this side, quorum-size {q}"),
                )
            }
        }
        Strategy::KeepOldest => {
            let all: Vec<&Member> = voters(view, role, unreachable, true)
                .chain(voters(view, role, unreachable, false))
                .collect();
            let Some(oldest) = all
                .iter()
                .copied()
                .min_by(|a, b| (a.up_number, &a.node).cmp(&(b.up_number, &b.node)))
            else {
                return Ok((
                    DecisionKind::DownAll,
                    "keep-oldest: no member is Up".to_owned(),
                ));
            };
            let oldest_reachable = !unreachable.contains(&oldest.node);
            let side = voters(view, "", unreachable, oldest_reachable).count();
            let others = voters(view, "", unreachable, !oldest_reachable).count();
            let alone = settings.keep_oldest.down_if_alone && side == 1 && others > 0;
            let why = format!(
                "keep-oldest: the oldest member {} is {}{}",
                oldest.node,
                if oldest_reachable {
                    "on this side"
                } else {
                    "on the other side"
                },
                if alone {
                    " but alone there (down-if-alone)"
                } else {
                    ""
                }
            );
            keep_side(oldest_reachable != alone, why)
        }
        Strategy::DownAll => (
            DecisionKind::DownAll,
            "down-all: every member is downed".to_owned(),
        ),
        Strategy::LeaseMajority => {
            let (majority_side, why) = majority(view, role, unreachable);
            match lease {
                None => {
                    return Err(if majority_side {
                        Duration::ZERO
                    } else {
                        settings.lease_majority.acquire_lease_delay_for_minority
                    });
                }
                Some(acquired) => keep_side(
                    acquired,
                    format!(
                        "lease-majority: this side {} the lease ({why})",
                        if acquired {
                            "acquired"
                        } else {
                            "did not acquire"
                        }
                    ),
                ),
            }
        }
    })
}

/// The resolver's decision over `view`; `lease` is the result of acquiring the lease, once
/// lease-majority has asked for it.
pub fn decide(settings: &SplitBrainResolverSettings, view: &View, lease: Option<bool>) -> Outcome {
    let indirect = view.indirectly_connected();
    let clean: BTreeSet<UniqueAddress> = view.unreachable.difference(&indirect).cloned().collect();
    let cut_off: BTreeSet<&UniqueAddress> = view
        .records
        .iter()
        .filter(|(o, _)| *o == view.self_node)
        .map(|(_, s)| s)
        .collect();
    let (theirs, ours): (BTreeSet<UniqueAddress>, BTreeSet<UniqueAddress>) =
        indirect.iter().cloned().partition(|n| cut_off.contains(n));
    // Only indirectly connected members are unreachable, and this node reaches every one of
    // them itself: they go, the rest stays.
    if !indirect.is_empty() && clean.is_empty() && theirs.is_empty() {
        return Outcome::Decide(Decision {
            kind: DecisionKind::DownIndirectlyConnected,
            down: indirect.clone(),
            reason: format!(
                "{} member(s) are indirectly connected (they see some members but are unreachable from others): downing them",
                indirect.len()
            ),
        });
    }
    // The strategy decides over the rest. Indirectly connected members are left out (they go
    // down in any case) — except those this node itself finds unreachable: they stay on the
    // other side. Leaving them out too would make this side look bigger than it is: a lone
    // node cut off from four others, three of which had seen the fifth unreachable, would
    // count one against one and win the tie by its address, while the four downed it.
    let rest = View {
        members: view
            .members
            .iter()
            .filter(|m| !ours.contains(&m.node))
            .cloned()
            .collect(),
        unreachable: clean.union(&theirs).cloned().collect(),
        ..view.clone()
    };
    let (kind, reason) = match strategy(settings, &rest, &rest.unreachable, lease) {
        Ok(d) => d,
        Err(delay) => return Outcome::AcquireLease { delay },
    };
    let live = |pred: &dyn Fn(&UniqueAddress) -> bool| -> BTreeSet<UniqueAddress> {
        rest.members
            .iter()
            .map(|m| &m.node)
            .filter(|n| pred(n))
            .cloned()
            .collect()
    };
    let mut down = match kind {
        DecisionKind::DownUnreachable => live(&|n| rest.unreachable.contains(n)),
        DecisionKind::DownReachable => live(&|n| !rest.unreachable.contains(n)),
        DecisionKind::DownAll | DecisionKind::DownIndirectlyConnected => live(&|_| true),
    };
    let mut reason = reason;
    if !indirect.is_empty() {
        // Those on this side go down with it, or for being indirectly connected; those on the
        // other side are already in `down` when that side goes, and are not this side's to
        // down when it stays.
        down.extend(ours.iter().cloned());
        if kind == DecisionKind::DownUnreachable {
            down.extend(theirs.iter().cloned());
        }
        reason.push_str(&format!(
            "; also downing {} indirectly connected member(s)",
            indirect.len()
        ));
    }
    Outcome::Decide(Decision { kind, down, reason })
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

#[cfg(test)]
mod tests;
