//! The coordinator driven by hand: regions are node numbers, messages are compared as data.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_core::machine::drain;

use super::*;
use crate::sharding::LeastShardAllocation;
use crate::testing::{epoch, node};

fn shard(n: u32) -> ShardId {
    ShardId(n.to_string())
}

fn shards(ns: &[u32]) -> BTreeSet<ShardId> {
    ns.iter().map(|n| shard(*n)).collect()
}

struct T {
    c: ShardCoordinator,
    now: Instant,
}

impl T {
    fn new() -> Self {
        let now = epoch();
        Self {
            c: ShardCoordinator::new(
                CoordinatorSettings::default(),
                Box::new(LeastShardAllocation::default()),
                now,
            ),
            now,
        }
    }

    fn members(&mut self, ns: &[u16]) {
        let members = ns.iter().map(|n| node(*n)).collect();
        self.c.handle(self.now, CoordinatorInput::Members(members));
    }

    fn from(&mut self, n: u16, msg: ToCoordinator) -> Vec<(u16, ToRegion)> {
        self.c
            .handle(self.now, CoordinatorInput::Received { from: node(n), msg });
        self.sent()
    }

    fn terminated(&mut self, n: u16) -> Vec<(u16, ToRegion)> {
        self.c
            .handle(self.now, CoordinatorInput::Terminated(node(n)));
        self.sent()
    }

    fn advance(&mut self, d: Duration) -> Vec<(u16, ToRegion)> {
        self.now += d;
        self.c.handle_timeout(self.now);
        self.sent()
    }

    /// Sends since the last call, as (node number, message); events and logs are checked
    /// through the state.
    fn sent(&mut self) -> Vec<(u16, ToRegion)> {
        drain(&mut self.c)
            .into_iter()
            .filter_map(|o| match o {
                CoordinatorOutput::Send { to, msg } => {
                    Some((u16::try_from(to.uid - 100).unwrap_or(u16::MAX), msg))
                }
                _ => None,
            })
            .collect()
    }

    fn home(&self, s: u32) -> Option<UniqueAddress> {
        self.c.state().home(&shard(s)).cloned()
    }
}

fn home_msg(s: u32, r: u16) -> ToRegion {
    ToRegion::ShardHome {
        shard: shard(s),
        region: node(r),
    }
}

#[test]
fn nothing_is_allocated_before_the_members_are_known() {
    let mut t = T::new();
    t.from(1, ToCoordinator::Register(shards(&[])));
    assert!(t.from(1, ToCoordinator::GetShardHome(shard(7))).is_empty());
    let sent = {
        t.members(&[1]);
        t.sent()
    };
    assert_eq!(
        sent,
        [(1, ToRegion::HostShard(shard(7))), (1, home_msg(7, 1))]
    );
}

#[test]
fn a_shard_is_allocated_once_every_member_has_registered_and_then_answered_from_state() {
    let mut t = T::new();
    t.members(&[1, 2]);
    assert_eq!(
        t.from(1, ToCoordinator::Register(shards(&[]))),
        [(1, ToRegion::RegisterAck)]
    );
    // Node 2 has not registered: the question waits.
    assert!(t.from(1, ToCoordinator::GetShardHome(shard(7))).is_empty());
    assert_eq!(t.home(7), None);
    let sent = t.from(2, ToCoordinator::Register(shards(&[])));
    assert_eq!(
        sent,
        [
            (2, ToRegion::RegisterAck),
            (1, ToRegion::HostShard(shard(7))),
            (1, home_msg(7, 1)),
        ]
    );
    // Known now: answered at once, no second HostShard.
    assert_eq!(
        t.from(2, ToCoordinator::GetShardHome(shard(7))),
        [(2, home_msg(7, 1))]
    );
    // The next goes to the region with fewer shards.
    let sent = t.from(1, ToCoordinator::GetShardHome(shard(8)));
    assert_eq!(
        sent,
        [(2, ToRegion::HostShard(shard(8))), (1, home_msg(8, 2))]
    );
    // HostShard is sent again until acknowledged.
    assert_eq!(
        t.advance(Duration::from_secs(1)),
        [
            (1, ToRegion::HostShard(shard(7))),
            (2, ToRegion::HostShard(shard(8)))
        ]
    );
    t.from(1, ToCoordinator::ShardStarted(shard(7)));
    t.from(2, ToCoordinator::ShardStarted(shard(8)));
    assert!(t.advance(Duration::from_secs(1)).is_empty());
    // An unregistered node gets no answer, only a request to register.
    assert_eq!(
        t.from(9, ToCoordinator::GetShardHome(shard(7))),
        [(9, ToRegion::RegisterAgain)]
    );
}

/// Regions 1 and 2 registered, 1 hosting `ns`.
fn with_shards_on_1(ns: &[u32]) -> T {
    let mut t = T::new();
    t.members(&[1, 2]);
    t.from(1, ToCoordinator::Register(shards(ns)));
    t.from(2, ToCoordinator::Register(shards(&[])));
    t
}

#[test]
fn a_rebalance_hands_off_through_begin_ack_handoff_stopped_and_questions_wait_for_it() {
    let mut t = with_shards_on_1(&(0..30).collect::<Vec<_>>());
    // 30 shards, optimum 15, limit 10 % of 30 = 3 per round.
    let sent = t.advance(Duration::from_secs(10));
    let begun: BTreeSet<ShardId> = sent
        .iter()
        .filter_map(|(_, m)| match m {
            ToRegion::BeginHandOff(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(begun.len(), 3, "{sent:?}");
    assert_eq!(sent.len(), 6, "BeginHandOff to both regions");
    let s = begun.iter().next().cloned().unwrap_or_else(|| shard(0));
    // Asked during the hand-off: no answer yet.
    assert!(t.from(2, ToCoordinator::GetShardHome(s.clone())).is_empty());
    assert!(
        t.from(1, ToCoordinator::BeginHandOffAck(s.clone()))
            .is_empty()
    );
    assert_eq!(
        t.from(2, ToCoordinator::BeginHandOffAck(s.clone())),
        [(1, ToRegion::HandOff(s.clone()))]
    );
    // A ShardStopped from the wrong region is stale.
    assert!(t.from(2, ToCoordinator::ShardStopped(s.clone())).is_empty());
    assert_eq!(t.c.state().home(&s), Some(&node(1)));
    // The real one: deallocated, and the waiting question allocates it anew, to region 2.
    let sent = t.from(1, ToCoordinator::ShardStopped(s.clone()));
    assert_eq!(
        sent,
        [
            (2, ToRegion::HostShard(s.clone())),
            (
                2,
                ToRegion::ShardHome {
                    shard: s.clone(),
                    region: node(2)
                }
            )
        ]
    );
    // A late duplicate ShardStopped changes nothing.
    assert!(t.from(1, ToCoordinator::ShardStopped(s.clone())).is_empty());
    assert_eq!(t.c.state().home(&s), Some(&node(2)));
    // No new round while two hand-offs are still in progress (their unanswered BeginHandOff
    // is sent again, nothing else is begun).
    let in_progress = t.c.handoffs();
    assert_eq!(in_progress.len(), 2);
    assert!(
        !t.advance(Duration::from_secs(10))
            .iter()
            .any(|(_, m)| matches!(m, ToRegion::BeginHandOff(s) if !in_progress.contains(s)))
    );
}

/// Found by the whole-cluster simulation: a BeginHandOff lost on the way (a lossy network
/// during a rebalance) left the hand-off waiting for the whole hand-off timeout, and the
/// shard unreachable meanwhile. What is unanswered is now sent again every host-retry.
#[test]
fn unanswered_handoff_messages_are_sent_again() {
    let mut t = with_shards_on_1(&[1, 2]);
    t.from(1, ToCoordinator::GracefulShutdownReq);
    t.from(1, ToCoordinator::BeginHandOffAck(shard(1)));
    // Region 2's ack of shard 1 was lost: BeginHandOff again, to region 2 only.
    let sent = t.advance(Duration::from_secs(1));
    let again: Vec<_> = sent
        .iter()
        .filter(|(_, m)| *m == ToRegion::BeginHandOff(shard(1)))
        .collect();
    assert_eq!(again, [&(2, ToRegion::BeginHandOff(shard(1)))], "{sent:?}");
    assert_eq!(
        t.from(2, ToCoordinator::BeginHandOffAck(shard(1))),
        [(1, ToRegion::HandOff(shard(1)))]
    );
    // The HandOff (or the ShardStopped answering it) was lost: HandOff again.
    let sent = t.advance(Duration::from_secs(1));
    assert!(sent.contains(&(1, ToRegion::HandOff(shard(1)))), "{sent:?}");
    t.from(1, ToCoordinator::ShardStopped(shard(1)));
    assert_eq!(t.home(1), None);
    let sent = t.advance(Duration::from_secs(1));
    assert!(
        !sent.iter().any(
            |(_, m)| matches!(m, ToRegion::HandOff(s) | ToRegion::BeginHandOff(s) if *s == shard(1))
        ),
        "{sent:?}"
    );
}

#[test]
fn a_handoff_that_does_not_finish_is_abandoned_and_the_shard_stays() {
    let mut t = with_shards_on_1(&[1, 2, 3, 4]);
    t.from(1, ToCoordinator::GracefulShutdownReq);
    for s in 1..=4 {
        t.from(1, ToCoordinator::BeginHandOffAck(shard(s)));
        t.from(2, ToCoordinator::BeginHandOffAck(shard(s)));
    }
    t.from(1, ToCoordinator::ShardStopped(shard(1)));
    assert_eq!(t.home(1), None);
    let sent = t.advance(Duration::from_secs(60));
    // Every region is told the three unfinished shards still live in region 1.
    assert_eq!(
        sent.iter()
            .filter(|(_, m)| matches!(m, ToRegion::ShardHome { region, .. } if *region == node(1)))
            .count(),
        6,
        "{sent:?}"
    );
    assert!(t.c.handoffs().is_empty());
    assert_eq!(t.home(2), Some(node(1)));
}

#[test]
fn a_region_shutting_down_hands_off_everything_and_gets_nothing_new() {
    let mut t = with_shards_on_1(&[1, 2, 3]);
    let sent = t.from(1, ToCoordinator::GracefulShutdownReq);
    assert_eq!(
        sent.iter()
            .filter(|(_, m)| matches!(m, ToRegion::BeginHandOff(_)))
            .count(),
        6,
        "all three, to both regions, beyond the rebalance limit"
    );
    for s in 1..=3 {
        t.from(1, ToCoordinator::BeginHandOffAck(shard(s)));
        t.from(2, ToCoordinator::BeginHandOffAck(shard(s)));
        t.from(1, ToCoordinator::ShardStopped(shard(s)));
    }
    assert!(t.c.state().regions()[&node(1)].is_empty());
    // New shards go to region 2 only, though region 1 has fewer.
    for s in 10..14 {
        let sent = t.from(1, ToCoordinator::GetShardHome(shard(s)));
        assert_eq!(sent[0], (2, ToRegion::HostShard(shard(s))));
    }
}

#[test]
fn a_terminated_region_loses_its_shards_and_its_handoffs_end() {
    let mut t = with_shards_on_1(&[1, 2]);
    t.from(2, ToCoordinator::GetShardHome(shard(5)));
    t.from(1, ToCoordinator::GracefulShutdownReq);
    t.from(1, ToCoordinator::BeginHandOffAck(shard(1)));
    // Region 2 goes before acknowledging: shard 5's home is gone, hand-offs from 1 continue
    // without its ack.
    let sent = t.terminated(2);
    assert_eq!(t.home(5), None);
    assert!(sent.contains(&(1, ToRegion::HandOff(shard(1)))), "{sent:?}");
    // Region 1 goes too: its shards and hand-offs are gone.
    t.terminated(1);
    assert!(t.c.handoffs().is_empty());
    assert!(t.c.state().shards().is_empty());
    assert_eq!(t.c.state().consistent(), Ok(()));
}

#[test]
fn only_a_region_of_an_up_member_registers() {
    // As Akka's coordinator: a region whose member is not Up here is not taken in. Its member
    // may never be seen Up (it joined during a partition and was downed), and then no
    // Terminated would ever take its shards away.
    let mut t = T::new();
    t.members(&[1]);
    assert_eq!(t.from(2, ToCoordinator::Register(shards(&[]))), []);
    assert!(!t.c.state().regions().contains_key(&node(2)));
    // Up now: its next attempt registers.
    t.members(&[1, 2]);
    assert_eq!(
        t.from(2, ToCoordinator::Register(shards(&[]))),
        [(2, ToRegion::RegisterAck)]
    );
}

#[test]
fn a_new_incarnation_up_at_a_regions_address_ends_that_region() {
    // Node 2 crashed and came back as a new incarnation; this node never saw the old one
    // removed. The new incarnation being Up is proof enough: the old region's shards go.
    let mut t = with_shards_on_1(&[]);
    t.from(2, ToCoordinator::Register(shards(&[3])));
    assert_eq!(t.home(3), Some(node(2)));
    let reborn = UniqueAddress {
        uid: node(2).uid + 1000,
        ..node(2)
    };
    t.c.handle(t.now, CoordinatorInput::Members([node(1), reborn].into()));
    assert_eq!(t.home(3), None);
    assert!(!t.c.state().regions().contains_key(&node(2)));
    assert_eq!(t.c.state().consistent(), Ok(()));
    // The old incarnation cannot register again.
    assert_eq!(t.from(2, ToCoordinator::Register(shards(&[3]))), []);
}

#[test]
fn a_second_claimant_is_told_to_hand_off_until_it_says_it_stopped() {
    // Region 2 comes back claiming shard 3, which lives in region 1 (it started it on a
    // message meant for its previous incarnation). A lost HandOff would leave the second copy
    // running — holding the lease the home waits for — so it is sent again until answered.
    let mut t = with_shards_on_1(&[3]);
    let sent = t.from(2, ToCoordinator::Register(shards(&[3])));
    assert_eq!(
        sent,
        [(2, ToRegion::HandOff(shard(3))), (2, ToRegion::RegisterAck)]
    );
    let retry = CoordinatorSettings::default().host_retry;
    assert_eq!(t.advance(retry), [(2, ToRegion::HandOff(shard(3)))]);
    assert_eq!(t.from(2, ToCoordinator::ShardStopped(shard(3))), []);
    assert_eq!(t.advance(retry), [], "answered: not sent again");
    assert_eq!(t.home(3), Some(node(1)));
}

#[test]
fn a_new_coordinator_rebuilds_the_allocations_from_re_registrations() {
    let mut old = with_shards_on_1(&[]);
    for s in 0..10 {
        old.from(
            1 + u16::try_from(s % 2).unwrap_or(0),
            ToCoordinator::GetShardHome(shard(s)),
        );
    }
    let before = old.c.state().clone();
    // The coordinator moved: the new one learns the homes from the regions, and allocates
    // nothing before every member's region is back.
    let mut new = T::new();
    new.members(&[1, 2]);
    let on = |r: u16| -> BTreeSet<ShardId> { before.regions()[&node(r)].iter().cloned().collect() };
    new.from(1, ToCoordinator::Register(on(1)));
    assert!(
        new.from(1, ToCoordinator::GetShardHome(shard(99)))
            .is_empty()
    );
    // Region 2 also claims a shard of region 1 (a split that healed): told to hand it off.
    let mut claims = on(2);
    let stolen = on(1).into_iter().next().unwrap_or_else(|| shard(0));
    claims.insert(stolen.clone());
    let sent = new.from(2, ToCoordinator::Register(claims));
    assert!(
        sent.contains(&(2, ToRegion::HandOff(stolen.clone()))),
        "{sent:?}"
    );
    assert_eq!(new.c.state().home(&stolen), Some(&node(1)));
    for (s, r) in before.shards() {
        assert_eq!(new.c.state().home(s), Some(r));
    }
    // And the waiting question is answered now.
    assert!(
        sent.iter()
            .any(|(_, m)| matches!(m, ToRegion::ShardHome { shard, .. } if *shard == shard_99()))
    );
}

fn shard_99() -> ShardId {
    shard(99)
}

#[test]
fn stale_acks_and_stops_are_ignored() {
    let mut t = with_shards_on_1(&[1]);
    assert!(
        t.from(2, ToCoordinator::BeginHandOffAck(shard(1)))
            .is_empty()
    );
    assert!(t.from(1, ToCoordinator::ShardStopped(shard(1))).is_empty());
    assert_eq!(t.home(1), Some(node(1)));
    assert!(t.c.handoffs().is_empty());
}

#[test]
fn with_remember_entities_shards_are_kept_allocated_after_a_handoff_and_a_lost_region() {
    let now = epoch();
    let mut t = T {
        c: ShardCoordinator::new(
            CoordinatorSettings {
                remember_entities: true,
                ..CoordinatorSettings::default()
            },
            Box::new(LeastShardAllocation::default()),
            now,
        ),
        now,
    };
    t.members(&[1, 2]);
    // The store names shard 5: it is started as soon as allocation is possible.
    t.c.handle(t.now, CoordinatorInput::RememberedShards(shards(&[5])));
    assert!(
        t.sent().is_empty(),
        "not before every member has registered"
    );
    t.from(1, ToCoordinator::Register(shards(&[])));
    let sent = t.from(2, ToCoordinator::Register(shards(&[])));
    assert_eq!(
        sent,
        [
            (2, ToRegion::RegisterAck),
            (1, ToRegion::HostShard(shard(5)))
        ]
    );
    t.from(1, ToCoordinator::ShardStarted(shard(5)));
    // A shard asked for is remembered too.
    t.from(2, ToCoordinator::GetShardHome(shard(6)));
    assert_eq!(t.home(6), Some(node(2)));
    // Region 1 shuts down: after the hand-off, shard 5 starts in region 2 at once.
    t.from(1, ToCoordinator::GracefulShutdownReq);
    t.from(1, ToCoordinator::BeginHandOffAck(shard(5)));
    t.from(2, ToCoordinator::BeginHandOffAck(shard(5)));
    assert_eq!(
        t.from(1, ToCoordinator::ShardStopped(shard(5))),
        [(2, ToRegion::HostShard(shard(5)))]
    );
    assert_eq!(t.home(5), Some(node(2)));
    // Region 2 is lost and region 3 takes its place: both shards start there.
    t.members(&[3]);
    t.from(3, ToCoordinator::Register(shards(&[])));
    let sent = t.terminated(2);
    assert_eq!(
        sent,
        [
            (3, ToRegion::HostShard(shard(5))),
            (3, ToRegion::HostShard(shard(6)))
        ]
    );
}

#[test]
fn a_question_from_a_region_it_does_not_know_asks_that_region_to_register() {
    // A coordinator that has just started (moved with the oldest member) hears a region's
    // question before its registration, which went to the old one: no answer, but no waiting
    // for the region's retry either.
    let mut t = T::new();
    t.members(&[1, 2]);
    assert_eq!(
        t.from(2, ToCoordinator::GetShardHome(shard(7))),
        [(2, ToRegion::RegisterAgain)]
    );
    assert_eq!(
        t.from(2, ToCoordinator::Register(shards(&[]))),
        [(2, ToRegion::RegisterAck)]
    );
}

/// Found by the whole-cluster simulation: a leaving node's region registered again after the
/// coordinator had been told its member was removed (it still ran until it learned so itself).
/// Taken back in, it was awaited by every later hand-off, each of which stalled for the whole
/// hand-off timeout — and the shards it moved with them.
#[test]
fn a_region_of_a_removed_member_cannot_register_again_nor_stall_a_handoff() {
    let mut t = with_shards_on_1(&[1, 2, 3, 4]);
    t.members(&[1, 2, 3]);
    t.from(3, ToCoordinator::Register(shards(&[])));
    t.terminated(3);
    // Late messages from the removed region: no RegisterAck, no RegisterAgain.
    assert_eq!(t.from(3, ToCoordinator::Register(shards(&[]))), []);
    assert_eq!(t.from(3, ToCoordinator::RegisterProxy), []);
    assert_eq!(t.from(3, ToCoordinator::GetShardHome(shard(1))), []);
    assert!(!t.c.state().regions().contains_key(&node(3)));
    // A hand-off waits for regions 1 and 2 only.
    t.from(1, ToCoordinator::GracefulShutdownReq);
    t.from(1, ToCoordinator::BeginHandOffAck(shard(1)));
    assert_eq!(
        t.from(2, ToCoordinator::BeginHandOffAck(shard(1))),
        [(1, ToRegion::HandOff(shard(1)))]
    );
}
