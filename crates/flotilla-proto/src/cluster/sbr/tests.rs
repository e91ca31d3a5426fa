//! The resolver's decisions as a table: strategy, view, expected decision.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_core::{SplitBrainResolverSettings, Strategy};

use super::*;
use crate::testing::{epoch, node};
use MemberStatus::*;

/// One row: who is a member (number, status), which are unreachable from node 1's side and who
/// observed it, and what node 1 decides.
struct Case {
    why: &'static str,
    strategy: Strategy,
    members: &'static [(u16, MemberStatus)],
    /// (observer, subject); node 1 decides.
    records: &'static [(u16, u16)],
    seen: &'static [u16],
    lease: Option<bool>,
    expect: Expect,
}

#[derive(Debug, PartialEq)]
enum Expect {
    Down(DecisionKind, &'static [u16]),
    Lease(u64),
}

fn settings(strategy: Strategy) -> SplitBrainResolverSettings {
    let mut s = SplitBrainResolverSettings {
        active_strategy: strategy,
        ..Default::default()
    };
    s.static_quorum.quorum_size = 3;
    s
}

fn view(case: &Case) -> View {
    let members = case
        .members
        .iter()
        .map(|&(n, status)| Member {
            status,
            up_number: if matches!(status, Joining | WeaklyUp) {
                u64::MAX
            } else {
                // node 5 is the oldest in every table
                if n == 5 { 0 } else { u64::from(n) }
            },
            ..Member::joining(node(n), BTreeSet::new(), "1")
        })
        .filter(|m| m.status != Down)
        .collect();
    let records: Vec<_> = case
        .records
        .iter()
        .map(|&(o, s)| (node(o), node(s)))
        .collect();
    View {
        self_node: node(1),
        members,
        unreachable: records
            .iter()
            .map(|(_, s)| s.clone())
            .filter(|s| *s != node(1))
            .collect(),
        records,
        seen: case.seen.iter().map(|&n| node(n)).collect(),
        downed_unreachable: Vec::new(),
    }
}

const FIVE: &[(u16, MemberStatus)] = &[(1, Up), (2, Up), (3, Up), (4, Up), (5, Up)];
const FOUR: &[(u16, MemberStatus)] = &[(1, Up), (2, Up), (3, Up), (4, Up)];

#[test]
fn decision_table() {
    use DecisionKind::*;
    use Expect::{Down as D, Lease};
    use Strategy::{KeepMajority, KeepOldest, LeaseMajority, StaticQuorum};
    let cases = [
        Case {
            why: "a 3|2 split: the majority downs the minority",
            strategy: KeepMajority,
            members: FIVE,
            records: &[(1, 4), (2, 5)],
            seen: &[1, 2, 3],
            lease: None,
            expect: D(DownUnreachable, &[4, 5]),
        },
        Case {
            why: "a 2|3 split: the minority downs itself",
            strategy: KeepMajority,
            members: FIVE,
            records: &[(1, 3), (1, 4), (2, 5)],
            seen: &[1, 2],
            lease: None,
            expect: D(DownReachable, &[1, 2]),
        },
        Case {
            why: "a 2|2 tie: the side with the lowest address (node 1) survives",
            strategy: KeepMajority,
            members: FOUR,
            records: &[(1, 3), (2, 4)],
            seen: &[1, 2],
            lease: None,
            expect: D(DownUnreachable, &[3, 4]),
        },
        Case {
            why: "joining members do not vote but go down with their side",
            strategy: KeepMajority,
            members: &[(1, Up), (2, Joining), (3, WeaklyUp), (4, Up), (5, Up)],
            records: &[(1, 4), (1, 5)],
            seen: &[1],
            lease: None,
            expect: D(DownReachable, &[1, 2, 3]),
        },
        Case {
            why: "down members do not count",
            strategy: KeepMajority,
            members: &[(1, Up), (2, Up), (3, Down), (4, Up)],
            records: &[(1, 4)],
            seen: &[1, 2],
            lease: None,
            expect: D(DownUnreachable, &[4]),
        },
        Case {
            why: "static-quorum 3: three on this side survive",
            strategy: StaticQuorum,
            members: FIVE,
            records: &[(1, 4), (1, 5)],
            seen: &[1],
            lease: None,
            expect: D(DownUnreachable, &[4, 5]),
        },
        Case {
            why: "static-quorum 3: two on this side go down",
            strategy: StaticQuorum,
            members: FIVE,
            records: &[(1, 3), (1, 4), (1, 5)],
            seen: &[1],
            lease: None,
            expect: D(DownReachable, &[1, 2]),
        },
        Case {
            why: "static-quorum 3 with six members: both sides might have quorum, so down all",
            strategy: StaticQuorum,
            members: &[(1, Up), (2, Up), (3, Up), (4, Up), (5, Up), (6, Up)],
            records: &[(1, 4), (1, 5), (1, 6)],
            seen: &[1],
            lease: None,
            expect: D(DownAll, &[1, 2, 3, 4, 5, 6]),
        },
        Case {
            why: "keep-oldest: the oldest (5) is on the other side, even as a minority",
            strategy: KeepOldest,
            members: FIVE,
            records: &[(1, 4), (1, 5)],
            seen: &[1],
            lease: None,
            expect: D(DownReachable, &[1, 2, 3]),
        },
        Case {
            why: "keep-oldest: the oldest is on this side",
            strategy: KeepOldest,
            members: FIVE,
            records: &[(1, 3), (1, 4)],
            seen: &[1],
            lease: None,
            expect: D(DownUnreachable, &[3, 4]),
        },
        Case {
            why: "keep-oldest, down-if-alone: the oldest alone on the other side is downed",
            strategy: KeepOldest,
            members: FIVE,
            records: &[(1, 5)],
            seen: &[1],
            lease: None,
            expect: D(DownUnreachable, &[5]),
        },
        Case {
            why: "down-all",
            strategy: Strategy::DownAll,
            members: FOUR,
            records: &[(1, 4)],
            seen: &[1],
            lease: None,
            expect: D(DownAll, &[1, 2, 3, 4]),
        },
        Case {
            why: "lease-majority: the majority asks for the lease at once",
            strategy: LeaseMajority,
            members: FIVE,
            records: &[(1, 4), (1, 5)],
            seen: &[1],
            lease: None,
            expect: Lease(0),
        },
        Case {
            why: "lease-majority: the minority waits before asking",
            strategy: LeaseMajority,
            members: FIVE,
            records: &[(1, 3), (1, 4), (1, 5)],
            seen: &[1],
            lease: None,
            expect: Lease(2),
        },
        Case {
            why: "lease-majority: the minority that got the lease survives",
            strategy: LeaseMajority,
            members: FIVE,
            records: &[(1, 3), (1, 4), (1, 5)],
            seen: &[1],
            lease: Some(true),
            expect: D(DownUnreachable, &[3, 4, 5]),
        },
        Case {
            why: "lease-majority: the majority without the lease goes down",
            strategy: LeaseMajority,
            members: FIVE,
            records: &[(1, 4), (1, 5)],
            seen: &[1],
            lease: Some(false),
            expect: D(DownReachable, &[1, 2, 3]),
        },
        Case {
            why: "3 and 4 see each other as unreachable but both saw the gossip: only they go",
            strategy: KeepMajority,
            members: FIVE,
            records: &[(3, 4), (4, 3)],
            seen: &[1, 2, 3, 4, 5],
            lease: None,
            expect: D(DownIndirectlyConnected, &[3, 4]),
        },
        Case {
            why: "an indirectly connected pair plus a crashed node: the pair goes and the \
                  strategy, deciding again without the pair's observations, downs the crashed one",
            strategy: KeepMajority,
            members: FIVE,
            records: &[(3, 4), (4, 3), (1, 5)],
            seen: &[1, 2, 3, 4],
            lease: None,
            expect: D(DownIndirectlyConnected, &[3, 4, 5]),
        },
        Case {
            // Found by the whole-cluster simulation (seed 317): 1 is cut off from everyone,
            // and 2, 3, 4 had seen 5 unreachable (a flapping link) before. 2, 3 and 4 are both
            // observers and subjects, and stay so once the observations between them are set
            // aside (they all observe 5, not each other): as in Akka, 1 downs every member.
            // Cut off as it is, that downs 1 itself; the others decide on their own view.
            why: "a lone node cut off from members that stay indirectly connected on a second \
                  look downs everyone",
            strategy: KeepMajority,
            members: FIVE,
            records: &[(2, 5), (3, 5), (4, 5), (1, 2), (1, 3), (1, 4), (1, 5)],
            seen: &[1],
            lease: None,
            expect: D(DownAll, &[1, 2, 3, 4, 5]),
        },
        Case {
            // Seed 647: every other member is both an observer and a subject, and nobody is
            // unreachable for another reason. Akka downs the indirectly connected members and
            // keeps 1, which nobody observes, alone. Flotilla looks again without the
            // observations between them: 1 still finds 3, 4 and 5 unreachable, two against
            // three, so 1 goes too (seed 28336: the same shortcut kept both sides of a
            // partition).
            why: "a node that every other member is indirectly connected to downs them all, \
                  and itself when it loses the count without their observations of each other",
            strategy: KeepMajority,
            members: FIVE,
            records: &[
                (2, 3),
                (2, 4),
                (2, 5),
                (3, 2),
                (4, 2),
                (5, 2),
                (1, 3),
                (1, 4),
                (1, 5),
            ],
            seen: &[1],
            lease: None,
            expect: D(DownIndirectlyConnected, &[1, 2, 3, 4, 5]),
        },
    ];
    for case in &cases {
        let got = match decide(&settings(case.strategy), &view(case), case.lease) {
            Outcome::Decide(d) => {
                assert!(!d.reason.is_empty());
                let down: Vec<u16> = d
                    .down
                    .iter()
                    .map(|n| n.address.port().unwrap_or(0) - 2550)
                    .collect();
                (Some((d.kind, down)), None)
            }
            Outcome::AcquireLease { delay } => (None, Some(delay.as_secs())),
        };
        let want = match &case.expect {
            Expect::Down(kind, down) => (Some((*kind, down.to_vec())), None),
            Lease(s) => (None, Some(*s)),
        };
        assert_eq!(got, want, "{}", case.why);
    }
}

#[test]
fn both_sides_of_every_split_never_both_survive() {
    // For every split of five members and every strategy but down-all, the decisions taken on
    // the two sides never keep both sides running.
    let all: Vec<u16> = (1..=5).collect();
    for strategy in [
        Strategy::KeepMajority,
        Strategy::StaticQuorum,
        Strategy::KeepOldest,
        Strategy::LeaseMajority,
    ] {
        for mask in 1u32..31 {
            let a: Vec<u16> = all
                .iter()
                .copied()
                .filter(|n| mask & (1 << (n - 1)) != 0)
                .collect();
            let b: Vec<u16> = all
                .iter()
                .copied()
                .filter(|n| mask & (1 << (n - 1)) == 0)
                .collect();
            let survives = |side: &[u16], other: &[u16], lease: Option<bool>| {
                let me = side[0];
                let members = all
                    .iter()
                    .map(|&n| Member {
                        status: Up,
                        up_number: if n == 5 { 0 } else { u64::from(n) },
                        ..Member::joining(node(n), BTreeSet::new(), "1")
                    })
                    .collect();
                let v = View {
                    self_node: node(me),
                    members,
                    unreachable: other.iter().map(|&n| node(n)).collect(),
                    records: other.iter().map(|&n| (node(me), node(n))).collect(),
                    seen: [node(me)].into(),
                    downed_unreachable: Vec::new(),
                };
                match decide(&settings(strategy), &v, lease) {
                    Outcome::Decide(d) => !d.down.contains(&node(me)),
                    Outcome::AcquireLease { .. } => unreachable!("lease given"),
                }
            };
            let (la, lb) = if strategy == Strategy::LeaseMajority {
                (Some(true), Some(false))
            } else {
                (None, None)
            };
            assert!(
                !(survives(&a, &b, la) && survives(&b, &a, lb)),
                "{:?}: {a:?} | {b:?}",
                strategy
            );
        }
    }
}

#[test]
fn stability_waits_for_an_unchanged_view_and_gives_up_on_a_restless_one() {
    let t0 = epoch();
    let s = |n| t0 + Duration::from_secs(n);
    // Akka's fixed 20 s stable-after, down-all 15 s after that.
    let settings = SplitBrainResolverSettings {
        stable_after: Duration::from_secs(20).into(),
        ..SplitBrainResolverSettings::default()
    };
    let stable_after = settings.stable_after_for(3);
    let mut st = Stability::new(t0);
    assert_eq!(st.stable_at(stable_after), None);
    st.observe(s(1), &[node(2)].into());
    assert_eq!(st.stable_at(stable_after), Some(s(21)));
    assert_eq!(st.down_all_at(&settings, 3), Some(s(36)));
    // the view keeps changing: the stable point keeps moving, the down-all point does not
    for t in (5..40).step_by(5) {
        let set: BTreeSet<_> = if t % 10 == 0 {
            [node(2)].into()
        } else {
            [node(2), node(3)].into()
        };
        st.observe(s(t), &set);
    }
    assert_eq!(st.stable_at(stable_after), Some(s(55)));
    assert_eq!(st.down_all_at(&settings, 3), Some(s(36)));
    st.decided(s(40));
    assert_eq!(st.down_all_at(&settings, 3), None);
    st.observe(s(41), &BTreeSet::new());
    assert_eq!(st.stable_at(stable_after), None);
}

/// Found by the whole-cluster simulation (seed 98): 5 was leaving when 1, 2 | 3, 4, 5 split.
/// The side of 1 and 2 had already seen 5 Exiting (not counted): two against two, and the
/// lowest address (1) won. The side of 3, 4, 5 still saw 5 Leaving: three against two, it won
/// too — both stayed. As in Akka, a win that depends on a leaving member of this side (which
/// may be Exiting over there) is no win: that side downs everyone.
#[test]
fn a_win_that_counts_a_leaving_member_of_this_side_is_no_win() {
    let member = |n: u16, status| Member {
        status,
        up_number: u64::from(n),
        ..Member::joining(node(n), BTreeSet::new(), "1")
    };
    let view = |self_n: u16, five: MemberStatus, unreachable: &[u16]| {
        let members = vec![
            member(1, Up),
            member(2, Up),
            member(3, Up),
            member(4, Up),
            member(5, five),
        ];
        let me = node(self_n);
        let records: Vec<_> = unreachable.iter().map(|&u| (me.clone(), node(u))).collect();
        View {
            self_node: me.clone(),
            members,
            unreachable: unreachable.iter().map(|&u| node(u)).collect(),
            records,
            seen: [me].into(),
            downed_unreachable: Vec::new(),
        }
    };
    let decide_kind = |v: &View| match decide(&settings(Strategy::KeepMajority), v, None) {
        Outcome::Decide(d) => d.kind,
        Outcome::AcquireLease { .. } => panic!("no lease here"),
    };
    // The side of 3, 4, 5, where 5 is still Leaving: three against two, but two against two at
    // worst and the lowest address is over there: down all.
    assert_eq!(
        decide_kind(&view(3, Leaving, &[1, 2])),
        DecisionKind::DownAll
    );
    // The side of 1 and 2, where 5 is Exiting: it keeps its tie-break win.
    assert_eq!(
        decide_kind(&view(1, Exiting, &[3, 4, 5])),
        DecisionKind::DownUnreachable
    );
    // Without a membership change the majority simply wins.
    assert_eq!(
        decide_kind(&view(3, Up, &[1, 2])),
        DecisionKind::DownUnreachable
    );
}

/// Akka's resolver tests of `down-all-when-unstable` and of `stable-after`, replayed on the
/// stable-after clock: 2 s stable-after, with down-all 1 s or 500 ms after it.
#[test]
fn stable_after_and_down_all_when_unstable_time_as_akka_does() {
    use flotilla_core::DownAllWhenUnstable;
    let t0 = epoch();
    let ms = |n| t0 + Duration::from_millis(n);
    let settings = |down_all_ms| SplitBrainResolverSettings {
        stable_after: Duration::from_secs(2).into(),
        down_all_when_unstable: DownAllWhenUnstable::After(Duration::from_millis(down_all_ms)),
        ..SplitBrainResolverSettings::default()
    };
    let stable_after = Duration::from_secs(2);
    let d: BTreeSet<_> = [node(4)].into();
    let de: BTreeSet<_> = [node(4), node(5)].into();
    let due = |st: &Stability, s: &SplitBrainResolverSettings, at| {
        (
            st.stable_at(stable_after).is_some_and(|t| t <= at),
            st.down_all_at(s, 5).is_some_and(|t| t <= at),
        )
    };

    // "down all when unstable, scenario 1": D and E, then D, then D and E, then D, a second
    // apart. The view never holds still for 2 s; 3 s after the first change everyone goes.
    let s = settings(1000);
    let mut st = Stability::new(t0);
    for (t, set) in [(0, &de), (1000, &d), (2000, &de)] {
        st.observe(ms(t), set);
        assert_eq!(due(&st, &s, ms(t)), (false, false), "at {t} ms");
    }
    st.observe(ms(3000), &d);
    assert_eq!(due(&st, &s, ms(3000)), (false, true));

    // "down all when unstable, scenario 2": with down-all 500 ms after stable-after, the
    // set changes at 1.2 s and 1.8 s; at 2.8 s it has not held still for 2 s, and 2.5 s have
    // passed since the first change.
    let s = settings(500);
    let mut st = Stability::new(t0);
    for (t, set) in [(0, &de), (600, &de), (1200, &d), (1800, &de)] {
        st.observe(ms(t), set);
        assert_eq!(due(&st, &s, ms(t)), (false, false), "at {t} ms");
    }
    st.observe(ms(2800), &de);
    assert_eq!(due(&st, &s, ms(2800)), (false, true));

    // "not down all when becoming stable again": everyone reachable again ends the
    // instability; nothing is due later.
    let s = settings(1000);
    let mut st = Stability::new(t0);
    st.observe(ms(0), &de);
    st.observe(ms(1000), &d);
    st.observe(ms(1600), &BTreeSet::new());
    assert_eq!(due(&st, &s, ms(5000)), (false, false));

    // "down unreachable after specified duration": B unreachable, due 2 s later.
    let mut st = Stability::new(t0);
    let b: BTreeSet<_> = [node(2)].into();
    st.observe(ms(0), &b);
    assert_eq!(due(&st, &s, ms(1000)), (false, false));
    assert_eq!(due(&st, &s, ms(2000)), (true, false));

    // "not down when unreachable become reachable inbetween detection and specified
    // duration" (and "... is removed inbetween": a removed member leaves the set the same way).
    let mut st = Stability::new(t0);
    st.observe(ms(0), &b);
    st.observe(ms(500), &BTreeSet::new());
    assert_eq!(due(&st, &s, ms(3000)), (false, false));
}

proptest::proptest! {
    /// Every member that may decide for its side decides the same from the same gossip, however
    /// the members, their statuses and the observations are drawn.
    #[test]
    fn the_decision_does_not_depend_on_who_decides(
        statuses in proptest::collection::vec(0u8..5, 2..7),
        roles in proptest::collection::vec(proptest::bool::ANY, 6),
        records in proptest::collection::vec((0usize..6, 0usize..6), 0..10),
        seen in proptest::collection::vec(proptest::bool::ANY, 6),
        strategy in 0usize..5,
        with_role in proptest::bool::ANY,
    ) {
        use crate::cluster::gossip::Gossip;
        let n = statuses.len();
        let mut g = Gossip::new();
        for (i, st) in statuses.iter().enumerate() {
            let status = [Joining, WeaklyUp, Up, Leaving, Exiting][usize::from(*st)];
            let roles: &[&str] = if roles[i] { &["r"] } else { &[] };
            g.put_member(crate::testing::member(i as u16 + 1, status, roles));
        }
        for (o, s) in records.iter().filter(|(o, s)| o != s && *o < n && *s < n) {
            g.reachability_mut().unreachable(&node(*o as u16 + 1), &node(*s as u16 + 1));
        }
        for i in (0..n).filter(|i| seen[*i]) {
            g.see(&node(i as u16 + 1));
        }
        let mut s = settings(
            [
                Strategy::KeepMajority,
                Strategy::StaticQuorum,
                Strategy::KeepOldest,
                Strategy::DownAll,
                Strategy::LeaseMajority,
            ][strategy],
        );
        if with_role {
            s.keep_majority.role = "r".to_owned();
            s.static_quorum.role = "r".to_owned();
            s.keep_oldest.role = "r".to_owned();
            s.lease_majority.role = "r".to_owned();
        }
        let answers: Vec<_> = g
            .members()
            .filter(|m| m.status != Exiting)
            .map(|m| {
                let v = View::of(&g, &m.node);
                (decide(&s, &v, None), decide(&s, &v, Some(true)), decide(&s, &v, Some(false)))
            })
            .collect();
        for a in &answers {
            proptest::prop_assert_eq!(a, &answers[0]);
        }
    }
}
