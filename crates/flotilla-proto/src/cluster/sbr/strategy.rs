//! The strategies' rules over one [`Scene`]: who counts, which side wins, and who goes down.
//!
//! Nothing here knows which member decides. Every member of a side holds the same gossip, so
//! every member that may lead the side reaches the same decision; and the two sides of a clean
//! split, counting the same members, reach complementary ones.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_core::{SplitBrainResolverSettings, Strategy, UniqueAddress};

use super::{DecisionKind, View};
use crate::cluster::member::{Member, MemberStatus};

/// The members and observations one decision is taken over.
///
/// `unreachable` holds every subject of an observation, the deciding member included if others
/// observed it: a decision that left the decider out would depend on who decides.
#[derive(Debug, Clone)]
pub(super) struct Scene<'a> {
    members: &'a [Member],
    /// Down but unreachable (see [`View::downed_unreachable`]): counted on the other side
    /// when a win is checked against membership having changed during the partition.
    downed_unreachable: &'a [Member],
    records: Vec<(UniqueAddress, UniqueAddress)>,
    unreachable: BTreeSet<UniqueAddress>,
    seen: &'a BTreeSet<UniqueAddress>,
}

/// A strategy's answer, before the members it downs are worked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Down these members (see [`Scene::down`]).
    Down(DecisionKind),
    /// lease-majority: ask for the lease after `delay`; with it, down the unreachable side (or
    /// only the indirectly connected members and what a second look adds); without it, down
    /// this side (and the indirectly connected members).
    AcquireLease {
        /// How long to wait first.
        delay: Duration,
        /// Whether some members are indirectly connected.
        indirectly_connected: bool,
    },
}

/// Which members a count includes. By default those that are Up or Leaving: Joining and WeaklyUp
/// members do not vote, Exiting members are on their way out, Down ones are gone.
#[derive(Debug, Clone, Copy)]
struct Counting {
    /// Count Joining and WeaklyUp members too: the other side may have moved them Up while
    /// the link was already gone.
    possibly_up: bool,
    /// Leave Leaving members out: the other side may have moved them to Exiting (which does not
    /// count) while the link was already gone.
    without_leaving: bool,
}

const USUAL: Counting = Counting {
    possibly_up: false,
    without_leaving: false,
};

impl Counting {
    fn includes(self, m: &Member, role: &str) -> bool {
        let by_status = match m.status {
            MemberStatus::Up => true,
            MemberStatus::Leaving => !self.without_leaving,
            MemberStatus::Joining | MemberStatus::WeaklyUp => self.possibly_up,
            MemberStatus::Exiting | MemberStatus::Down | MemberStatus::Removed => false,
        };
        by_status && (role.is_empty() || m.has_role(role))
    }
}

impl<'a> Scene<'a> {
    /// The scene of a view.
    pub(super) fn of(view: &'a View) -> Self {
        let mut unreachable = view.unreachable.clone();
        unreachable.extend(view.records.iter().map(|(_, s)| s.clone()));
        Self {
            members: &view.members,
            downed_unreachable: &view.downed_unreachable,
            records: view.records.clone(),
            unreachable,
            seen: &view.seen,
        }
    }

    /// Members that are both an observer and a subject of unreachability: a cycle in the
    /// graph of observations, which a clean split or a crash never draws.
    fn in_a_cycle(&self) -> BTreeSet<UniqueAddress> {
        let observers: BTreeSet<&UniqueAddress> = self.records.iter().map(|(o, _)| o).collect();
        self.records
            .iter()
            .map(|(_, s)| s)
            .filter(|s| observers.contains(s))
            .cloned()
            .collect()
    }

    /// Both ends of every observation whose subject has seen the current gossip: the subject
    /// is unreachable to its observer, yet the gossip reached it through someone else.
    fn seen_past_a_cut(&self) -> BTreeSet<UniqueAddress> {
        self.records
            .iter()
            .filter(|(_, s)| self.seen.contains(s))
            .flat_map(|(o, s)| [o.clone(), s.clone()])
            .collect()
    }

    /// The indirectly connected members (see the [module docs](super)).
    pub(super) fn indirectly_connected(&self) -> BTreeSet<UniqueAddress> {
        let mut out = self.in_a_cycle();
        out.extend(self.seen_past_a_cut());
        out
    }

    /// The members a decision may down: every member that is not Exiting (it is leaving on
    /// its own) or Down already. Joining and WeaklyUp members go down with their side.
    fn downable(&self) -> BTreeSet<UniqueAddress> {
        self.members
            .iter()
            .filter(|m| !matches!(m.status, MemberStatus::Exiting | MemberStatus::Down))
            .map(|m| m.node.clone())
            .collect()
    }

    fn is_unreachable(&self, m: &Member) -> bool {
        self.unreachable.contains(&m.node) || self.is_downed_unreachable(m)
    }

    fn is_downed_unreachable(&self, m: &Member) -> bool {
        self.downed_unreachable.iter().any(|d| d.node == m.node)
    }

    /// The Down, unreachable members with `role`: on the other side at worst.
    fn downed_there(&self, role: &str) -> Vec<&'a Member> {
        self.downed_unreachable
            .iter()
            .filter(|m| role.is_empty() || m.has_role(role))
            .collect()
    }

    /// The members with `role` that `counting` includes, on this side (`Some(true)`), the other
    /// (`Some(false)`) or both (`None`).
    fn counted(&self, role: &str, counting: Counting, reachable: Option<bool>) -> Vec<&'a Member> {
        self.members
            .iter()
            .filter(|m| counting.includes(m, role))
            .filter(|m| reachable.is_none_or(|r| r != self.is_unreachable(m)))
            .collect()
    }

    /// The members that `kind` downs, and what a second look decided if there was one. For
    /// [`DecisionKind::DownIndirectlyConnected`] that is the indirectly connected members plus
    /// what the strategy decides on a second look without the observations between them; if
    /// some are still indirectly connected then, everyone must go (as in Akka): `Err` says why.
    pub(super) fn down(
        &self,
        settings: &SplitBrainResolverSettings,
        kind: DecisionKind,
    ) -> Result<(BTreeSet<UniqueAddress>, Option<String>), String> {
        let downable = self.downable();
        let indirect = self.indirectly_connected();
        let reachable = |n: &&UniqueAddress| !self.unreachable.contains(*n);
        Ok(match kind {
            DecisionKind::DownUnreachable => (
                downable.intersection(&self.unreachable).cloned().collect(),
                None,
            ),
            DecisionKind::DownReachable => {
                (downable.iter().filter(reachable).cloned().collect(), None)
            }
            DecisionKind::DownAll => (downable, None),
            DecisionKind::DownIndirectlyConnected => {
                let mut down: BTreeSet<UniqueAddress> =
                    downable.intersection(&indirect).cloned().collect();
                let second = self.second_look(settings, &downable, &indirect)?;
                let why = second.map(|(more, why)| {
                    down.extend(more);
                    why
                });
                (down, why)
            }
            DecisionKind::DownReachableAndIndirectlyConnected => (
                downable
                    .iter()
                    .filter(|n| indirect.contains(*n) || reachable(n))
                    .cloned()
                    .collect(),
                None,
            ),
        })
    }

    /// The indirectly connected members that may be on the other side: those the members of
    /// this side that are not indirectly connected find unreachable, and, in turn, those with
    /// an observation to or from one of them that have not seen this side's gossip (a member
    /// that has seen it talks to this side).
    fn beyond_this_side(&self, indirect: &BTreeSet<UniqueAddress>) -> BTreeSet<UniqueAddress> {
        let here: BTreeSet<&UniqueAddress> = self
            .members
            .iter()
            .map(|m| &m.node)
            .filter(|n| !indirect.contains(*n) && !self.unreachable.contains(*n))
            .collect();
        let mut beyond: BTreeSet<UniqueAddress> = self
            .records
            .iter()
            .filter(|(o, s)| here.contains(o) && indirect.contains(s))
            .map(|(_, s)| s.clone())
            .collect();
        // Bounded: each round adds a member or ends.
        for _ in 0..indirect.len() {
            let more: Vec<UniqueAddress> = self
                .records
                .iter()
                .filter(|(o, s)| indirect.contains(o) && indirect.contains(s))
                .filter(|(o, s)| beyond.contains(o) != beyond.contains(s))
                .map(|(o, s)| {
                    if beyond.contains(o) {
                        s.clone()
                    } else {
                        o.clone()
                    }
                })
                .filter(|n| !self.seen.contains(n))
                .collect();
            if more.is_empty() {
                break;
            }
            beyond.extend(more);
        }
        beyond
    }

    /// What the strategy downs besides the indirectly connected members, and why: it decides
    /// again without the observations between indirectly connected members (and those of
    /// members that cannot be downed), so a crash or a clean split in the same window is still
    /// judged. Unlike Akka, this look is taken also when every unreachable member is
    /// indirectly connected: the members that observe them from this side may be cut off from
    /// them by a partition, and then this side must still win the count (`None` when nothing
    /// is left to judge).
    fn second_look(
        &self,
        settings: &SplitBrainResolverSettings,
        downable: &BTreeSet<UniqueAddress>,
        indirect: &BTreeSet<UniqueAddress>,
    ) -> Result<Option<(BTreeSet<UniqueAddress>, String)>, String> {
        let cycle = self.in_a_cycle();
        let seen_past = self.seen_past_a_cut();
        let records: Vec<(UniqueAddress, UniqueAddress)> = self
            .records
            .iter()
            .filter(|(o, s)| downable.contains(o) && downable.contains(s))
            .filter(|(o, s)| !(cycle.contains(o) && cycle.contains(s)))
            .filter(|(o, s)| !(seen_past.contains(o) && seen_past.contains(s)))
            .cloned()
            .collect();
        // Unlike Akka: an indirectly connected member that this side's other members find
        // unreachable, or that is cut off from such a member and has not seen this side's
        // gossip, may in truth be over there, behind a partition this side has not fully
        // noticed yet (one failure detector lags another): it counts on the other side, where
        // Akka would count it here (simulation seed 97074).
        let mut unreachable: BTreeSet<UniqueAddress> =
            records.iter().map(|(_, s)| s.clone()).collect();
        unreachable.extend(self.beyond_this_side(indirect));
        let rest = Self {
            unreachable,
            records,
            ..self.clone()
        };
        if rest.unreachable.is_empty() {
            return Ok(None);
        }
        let (verdict, why) = verdict(settings, &rest);
        let kind = match verdict {
            Verdict::Down(DecisionKind::DownIndirectlyConnected)
            | Verdict::AcquireLease {
                indirectly_connected: true,
                ..
            } => {
                return Err(format!(
                    "members are still indirectly connected once the observations between them are set aside ({}): downing every member",
                    rest.indirectly_connected()
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            // The lease was acquired for the first look: the second downs the other side.
            Verdict::AcquireLease { .. } => DecisionKind::DownUnreachable,
            Verdict::Down(kind) => kind,
        };
        let (down, _) = rest.down(settings, kind)?;
        Ok(Some((down, format!("{why} ({kind:?})"))))
    }
}

fn what(role: &str) -> String {
    if role.is_empty() {
        "members".to_owned()
    } else {
        format!("members with role {role}")
    }
}

/// The active strategy's verdict over `scene`, and why.
pub(super) fn verdict(
    settings: &SplitBrainResolverSettings,
    scene: &Scene<'_>,
) -> (Verdict, String) {
    let role = settings.role();
    let indirect = scene.indirectly_connected();
    let indirect_why = || {
        format!(
            "{} member(s) are indirectly connected (unreachable from some members while others reach them)",
            indirect.len()
        )
    };
    let down = |kind, why: String| (Verdict::Down(kind), why);
    match settings.active_strategy {
        Strategy::DownAll => down(
            DecisionKind::DownAll,
            "down-all: every member is downed".to_owned(),
        ),
        Strategy::StaticQuorum => {
            let q = settings.static_quorum.quorum_size;
            let all = scene.counted(role, USUAL, None).len();
            if all > (q * 2).saturating_sub(1) {
                down(
                    DecisionKind::DownAll,
                    format!(
                        "static-quorum: {all} {} is more than 2 × quorum-size {q} − 1, so both sides could have a quorum",
                        what(role)
                    ),
                )
            } else if !indirect.is_empty() {
                down(
                    DecisionKind::DownIndirectlyConnected,
                    format!("static-quorum: {}", indirect_why()),
                )
            } else {
                let here = scene.counted(role, USUAL, Some(true)).len();
                let kind = if here >= q {
                    DecisionKind::DownUnreachable
                } else {
                    DecisionKind::DownReachable
                };
                down(
                    kind,
                    format!(
                        "static-quorum: {here} {} on this side, quorum-size {q}",
                        what(role)
                    ),
                )
            }
        }
        Strategy::KeepMajority if !indirect.is_empty() => down(
            DecisionKind::DownIndirectlyConnected,
            format!("keep-majority: {}", indirect_why()),
        ),
        Strategy::KeepMajority => keep_majority(scene, role),
        Strategy::KeepOldest if !indirect.is_empty() => down(
            DecisionKind::DownIndirectlyConnected,
            format!("keep-oldest: {}", indirect_why()),
        ),
        Strategy::KeepOldest => keep_oldest(scene, role, settings.keep_oldest.down_if_alone),
        Strategy::LeaseMajority if !indirect.is_empty() => (
            Verdict::AcquireLease {
                delay: Duration::ZERO,
                indirectly_connected: true,
            },
            format!("lease-majority: {}", indirect_why()),
        ),
        Strategy::LeaseMajority => {
            let all = scene.counted(role, USUAL, None);
            let there = scene.counted(role, USUAL, Some(false)).len();
            // With nobody to count, nobody waits.
            let minority = match all.iter().min_by_key(|m| &m.node) {
                None => false,
                Some(lowest) if there * 2 == all.len() => scene.is_unreachable(lowest),
                Some(_) => there * 2 > all.len(),
            };
            (
                Verdict::AcquireLease {
                    delay: if minority {
                        settings.lease_majority.acquire_lease_delay_for_minority
                    } else {
                        Duration::ZERO
                    },
                    indirectly_connected: false,
                },
                format!(
                    "lease-majority: {} of {} {} are on this side{}",
                    all.len() - there,
                    all.len(),
                    what(role),
                    if minority {
                        " (the minority waits before it asks)"
                    } else {
                        ""
                    }
                ),
            )
        }
    }
}

/// Which side a count of `here` against `there` keeps: the larger, or on a tie the one with
/// the lowest address.
fn majority(here: usize, there: usize, lowest_is_there: bool) -> DecisionKind {
    let here_wins = if here == there {
        !lowest_is_there
    } else {
        here > there
    };
    if here_wins {
        DecisionKind::DownUnreachable
    } else {
        DecisionKind::DownReachable
    }
}

fn keep_majority(scene: &Scene<'_>, role: &str) -> (Verdict, String) {
    let all = scene.counted(role, USUAL, None);
    let Some(lowest) = all.iter().min_by_key(|m| &m.node) else {
        return (
            Verdict::Down(DecisionKind::DownAll),
            format!("keep-majority: no {} are Up or Leaving", what(role)),
        );
    };
    let here = scene.counted(role, USUAL, Some(true)).len();
    let there = all.len() - here;
    let kind = majority(here, there, scene.is_unreachable(lowest));
    let why = if here == there {
        format!(
            "keep-majority: the sides are equal ({here} {} each); the side with the lowest address ({}) survives",
            what(role),
            lowest.node
        )
    } else {
        format!(
            "keep-majority: {here} of {} {} are on this side",
            all.len(),
            what(role)
        )
    };
    if kind != DecisionKind::DownUnreachable {
        return (Verdict::Down(kind), why);
    }
    // Membership may have changed on the other side just as the link went: count this side as
    // small and the other as large as they could be. A win that does not survive that count
    // could be a win on both sides, so neither stays.
    // Members this side downed while they were cut off count over there too: neither they
    // nor the members beside them may have heard, and over there they may still count (a
    // deliberate difference from Akka, which forgets them; docs/design/cluster.md).
    let mut firm = scene.counted(
        role,
        Counting {
            possibly_up: false,
            without_leaving: true,
        },
        None,
    );
    let downed = scene.downed_there(role);
    let here_least = firm.iter().filter(|m| !scene.is_unreachable(m)).count();
    let there_most = scene
        .counted(
            role,
            Counting {
                possibly_up: true,
                without_leaving: false,
            },
            Some(false),
        )
        .len()
        + downed.len();
    firm.extend(downed.iter().copied());
    let still = firm.iter().min_by_key(|m| &m.node).is_some_and(|lowest| {
        majority(here_least, there_most, scene.is_unreachable(lowest))
            == DecisionKind::DownUnreachable
    });
    if still {
        (Verdict::Down(kind), why)
    } else {
        (
            Verdict::Down(DecisionKind::DownAll),
            format!(
                "{why}, but not with this side's Leaving members uncounted and the other side's Joining and WeaklyUp ones, and the members downed while cut off, counted ({here_least} against {there_most}): membership changed during the partition"
            ),
        )
    }
}

/// keep-oldest's rule: the side of the oldest survives, unless (with `down_if_alone`) the
/// oldest is alone there and the other side has at least two members.
fn oldest_rule(down_if_alone: bool, oldest_here: bool, here: usize, there: usize) -> DecisionKind {
    let here_wins = if oldest_here {
        !(down_if_alone && here == 1 && there >= 2)
    } else {
        down_if_alone && there == 1 && here >= 2
    };
    if here_wins {
        DecisionKind::DownUnreachable
    } else {
        DecisionKind::DownReachable
    }
}

fn keep_oldest(scene: &Scene<'_>, role: &str, down_if_alone: bool) -> (Verdict, String) {
    let oldest_of = |ms: &[&'_ Member]| {
        ms.iter()
            .copied()
            .min_by(|a, b| (a.up_number, &a.node).cmp(&(b.up_number, &b.node)))
            .map(|m| (m.node.clone(), !scene.is_unreachable(m)))
    };
    let all = scene.counted(role, USUAL, None);
    let Some((oldest, oldest_here)) = oldest_of(&all) else {
        return (
            Verdict::Down(DecisionKind::DownAll),
            format!("keep-oldest: no {} are Up or Leaving", what(role)),
        );
    };
    let here = scene.counted(role, USUAL, Some(true)).len();
    let there = all.len() - here;
    let kind = oldest_rule(down_if_alone, oldest_here, here, there);
    // down-if-alone decided it when the rule without it decides otherwise.
    let alone = kind != oldest_rule(false, oldest_here, here, there);
    let why = format!(
        "keep-oldest: the oldest of the {} ({oldest}) is on {} side{}",
        what(role),
        if oldest_here { "this" } else { "the other" },
        if alone {
            ", alone on its side against two or more (down-if-alone)"
        } else {
            ""
        }
    );
    if kind != DecisionKind::DownUnreachable {
        return (Verdict::Down(kind), why);
    }
    // As for keep-majority: the oldest may be Exiting over there (Leaving here), and with
    // down-if-alone a joiner may be Up over there, which changes who is alone. A win that
    // does not survive that count could be a win on both sides.
    // And, unlike Akka, members downed while cut off may still count over there — the oldest
    // among them.
    let mut firm = scene.counted(
        role,
        Counting {
            possibly_up: false,
            without_leaving: true,
        },
        None,
    );
    let downed = scene.downed_there(role);
    firm.extend(downed.iter().copied());
    let counting = Counting {
        possibly_up: down_if_alone,
        without_leaving: true,
    };
    let still = oldest_of(&firm).is_some_and(|(_, firm_oldest_here)| {
        let here = scene.counted(role, counting, Some(true)).len();
        let there = scene.counted(role, counting, Some(false)).len() + downed.len();
        oldest_rule(down_if_alone, firm_oldest_here, here, there) == DecisionKind::DownUnreachable
    });
    if still {
        (Verdict::Down(kind), why)
    } else {
        (
            Verdict::Down(DecisionKind::DownAll),
            format!(
                "{why}, but not with Leaving members uncounted{} and the members downed while cut off counted: membership changed during the partition",
                if down_if_alone {
                    " and Joining and WeaklyUp ones counted"
                } else {
                    ""
                }
            ),
        )
    }
}
