//! One region driven by hand.

use flotilla_core::machine::drain;

use super::*;
use crate::testing::{epoch, node};

type Out = RegionOutput<u32>;

fn shard(n: u32) -> ShardId {
    ShardId(n.to_string())
}

fn region() -> (Region<u32>, Instant) {
    let now = epoch();
    let mut r = Region::new(node(1), RegionSettings::default());
    r.handle(now, RegionInput::Coordinator(Some(node(9))));
    (r, now)
}

fn outs(r: &mut Region<u32>) -> Vec<Out> {
    drain(r)
        .into_iter()
        .filter(|o| !matches!(o, RegionOutput::Log { .. }))
        .collect()
}

fn to_c(msg: ToCoordinator) -> Out {
    RegionOutput::ToCoordinator { to: node(9), msg }
}

fn deliver(r: &mut Region<u32>, now: Instant, s: u32, entity: &str, msg: u32) -> Vec<Out> {
    r.handle(
        now,
        RegionInput::Deliver {
            shard: shard(s),
            entity: entity.into(),
            msg,
        },
    );
    outs(r)
}

fn from_c(r: &mut Region<u32>, now: Instant, msg: ToRegion) -> Vec<Out> {
    r.handle(now, RegionInput::FromCoordinator { from: node(9), msg });
    outs(r)
}

#[test]
fn messages_wait_for_registration_and_the_home_then_go_there_in_order() {
    let (mut r, now) = region();
    assert_eq!(
        outs(&mut r),
        [to_c(ToCoordinator::Register(BTreeSet::new()))]
    );
    // Not registered yet: held, nothing asked.
    assert!(deliver(&mut r, now, 1, "a", 10).is_empty());
    assert_eq!(
        from_c(&mut r, now, ToRegion::RegisterAck),
        [to_c(ToCoordinator::GetShardHome(shard(1)))]
    );
    assert!(deliver(&mut r, now, 1, "b", 11).is_empty(), "asked once");
    assert_eq!(r.held(), 2);
    let got = from_c(
        &mut r,
        now,
        ToRegion::ShardHome {
            shard: shard(1),
            region: node(2),
        },
    );
    let forward = |entity: &str, msg| RegionOutput::Forward {
        to: node(2),
        shard: shard(1),
        entity: entity.into(),
        msg,
    };
    assert_eq!(got, [forward("a", 10), forward("b", 11)]);
    assert_eq!(deliver(&mut r, now, 1, "a", 12), [forward("a", 12)]);
    assert_eq!(r.held(), 0);
}

#[test]
fn a_hosted_shard_starts_gets_its_messages_and_hands_off_on_request() {
    let (mut r, now) = region();
    from_c(&mut r, now, ToRegion::RegisterAck);
    deliver(&mut r, now, 3, "a", 1);
    let got = from_c(&mut r, now, ToRegion::HostShard(shard(3)));
    assert_eq!(
        got,
        [
            RegionOutput::StartShard(shard(3)),
            to_c(ToCoordinator::ShardStarted(shard(3))),
            RegionOutput::ToShard {
                shard: shard(3),
                entity: "a".into(),
                msg: 1
            },
        ]
    );
    // Hand-off: stop routing (ack), then the shard hands off, then ShardStopped.
    assert_eq!(
        from_c(&mut r, now, ToRegion::BeginHandOff(shard(3))),
        [to_c(ToCoordinator::BeginHandOffAck(shard(3)))]
    );
    assert_eq!(
        deliver(&mut r, now, 3, "a", 2),
        [to_c(ToCoordinator::GetShardHome(shard(3)))],
        "held while the home moves"
    );
    assert_eq!(
        from_c(&mut r, now, ToRegion::HandOff(shard(3))),
        [RegionOutput::HandOffShard(shard(3))]
    );
    r.handle(
        now,
        RegionInput::ShardEnded {
            shard: shard(3),
            why: Ended::HandedOff,
        },
    );
    assert_eq!(outs(&mut r), [to_c(ToCoordinator::ShardStopped(shard(3)))]);
    // HandOff of a shard not here: stopped at once.
    assert_eq!(
        from_c(&mut r, now, ToRegion::HandOff(shard(4))),
        [to_c(ToCoordinator::ShardStopped(shard(4)))]
    );
}

#[test]
fn unanswered_questions_and_registrations_are_sent_again() {
    let (mut r, now) = region();
    outs(&mut r);
    r.handle_timeout(now + Duration::from_secs(2));
    assert_eq!(
        outs(&mut r),
        [to_c(ToCoordinator::Register(BTreeSet::new()))]
    );
    from_c(&mut r, now, ToRegion::RegisterAck);
    deliver(&mut r, now, 1, "a", 1);
    r.handle_timeout(now + Duration::from_secs(4));
    assert_eq!(outs(&mut r), [to_c(ToCoordinator::GetShardHome(shard(1)))]);
    // A new coordinator: register again, with the shards hosted here.
    from_c(&mut r, now, ToRegion::HostShard(shard(5)));
    outs(&mut r);
    r.handle(now, RegionInput::Coordinator(Some(node(8))));
    assert_eq!(
        outs(&mut r),
        [RegionOutput::ToCoordinator {
            to: node(8),
            msg: ToCoordinator::Register([shard(5)].into())
        }]
    );
}

#[test]
fn leaving_asks_for_a_graceful_shutdown_until_every_shard_is_gone() {
    let (mut r, now) = region();
    from_c(&mut r, now, ToRegion::RegisterAck);
    from_c(&mut r, now, ToRegion::HostShard(shard(1)));
    outs(&mut r);
    r.handle(now, RegionInput::Leave);
    assert_eq!(outs(&mut r), [to_c(ToCoordinator::GracefulShutdownReq)]);
    r.handle_timeout(now + Duration::from_secs(2));
    assert_eq!(outs(&mut r), [to_c(ToCoordinator::GracefulShutdownReq)]);
    // No new shard while leaving.
    assert!(from_c(&mut r, now, ToRegion::HostShard(shard(2))).is_empty());
    from_c(&mut r, now, ToRegion::HandOff(shard(1)));
    r.handle(
        now,
        RegionInput::ShardEnded {
            shard: shard(1),
            why: Ended::HandedOff,
        },
    );
    assert_eq!(
        outs(&mut r),
        [
            to_c(ToCoordinator::ShardStopped(shard(1))),
            RegionOutput::Done
        ]
    );
}

#[test]
fn a_leaving_region_passes_on_what_it_holds_before_it_is_done() {
    let (mut r, now) = region();
    from_c(&mut r, now, ToRegion::RegisterAck);
    from_c(&mut r, now, ToRegion::HostShard(shard(1)));
    outs(&mut r);
    r.handle(now, RegionInput::Leave);
    from_c(&mut r, now, ToRegion::HandOff(shard(1)));
    // The stopping shard hands a message back; then it ends.
    r.handle(
        now,
        RegionInput::Bounced {
            shard: shard(1),
            entity: "a".into(),
            msg: 7,
        },
    );
    r.handle(
        now,
        RegionInput::ShardEnded {
            shard: shard(1),
            why: Ended::HandedOff,
        },
    );
    let got = outs(&mut r);
    assert!(!got.contains(&RegionOutput::Done), "{got:?}");
    let got = from_c(
        &mut r,
        now,
        ToRegion::ShardHome {
            shard: shard(1),
            region: node(2),
        },
    );
    assert_eq!(
        got,
        [
            RegionOutput::Forward {
                to: node(2),
                shard: shard(1),
                entity: "a".into(),
                msg: 7
            },
            RegionOutput::Done
        ]
    );
}

#[test]
fn only_the_followed_coordinator_acknowledges_the_registration() {
    let (mut r, now) = region();
    outs(&mut r);
    r.handle(
        now,
        RegionInput::FromCoordinator {
            from: node(8),
            msg: ToRegion::RegisterAck,
        },
    );
    assert!(!r.is_registered(), "an ack from another coordinator");
    from_c(&mut r, now, ToRegion::RegisterAck);
    assert!(r.is_registered());
}

#[test]
fn homes_on_a_node_that_is_gone_are_forgotten() {
    let (mut r, now) = region();
    from_c(&mut r, now, ToRegion::RegisterAck);
    let home = |region| ToRegion::ShardHome {
        shard: shard(1),
        region,
    };
    from_c(&mut r, now, home(node(3)));
    assert!(matches!(
        deliver(&mut r, now, 1, "a", 1)[..],
        [RegionOutput::Forward { .. }]
    ));
    r.handle(now, RegionInput::Gone(node(3)));
    assert_eq!(
        deliver(&mut r, now, 1, "a", 2),
        [to_c(ToCoordinator::GetShardHome(shard(1)))],
        "held, and its new home asked for"
    );
}

#[test]
fn a_home_on_a_removed_node_named_by_a_lagging_coordinator_is_not_taken() {
    // The region hears that node 3 was removed before the coordinator does: the coordinator
    // still names node 3 as the home. Taking it would send the shard's messages to a dead node
    // for good; the region keeps holding them and asks again at the retry.
    let (mut r, now) = region();
    from_c(&mut r, now, ToRegion::RegisterAck);
    let home = |region| ToRegion::ShardHome {
        shard: shard(1),
        region,
    };
    from_c(&mut r, now, home(node(3)));
    r.handle(now, RegionInput::Gone(node(3)));
    assert_eq!(
        deliver(&mut r, now, 1, "a", 1),
        [to_c(ToCoordinator::GetShardHome(shard(1)))]
    );
    assert_eq!(from_c(&mut r, now, home(node(3))), [], "still held");
    assert_eq!(r.held(), 1);
    assert_eq!(
        deliver(&mut r, now, 1, "a", 2),
        [],
        "held, the question is open"
    );
    let retry = now + RegionSettings::default().retry_interval;
    assert_eq!(r.poll_timeout(), Some(retry));
    r.handle_timeout(retry);
    assert_eq!(
        outs(&mut r),
        [to_c(ToCoordinator::GetShardHome(shard(1)))],
        "asked again"
    );
    // The coordinator has caught up: the shard lives here now.
    let out = from_c(&mut r, retry, home(node(1)));
    assert_eq!(out[0], RegionOutput::StartShard(shard(1)));
    let delivered: Vec<u32> = out
        .iter()
        .filter_map(|o| match o {
            RegionOutput::ToShard { msg, .. } => Some(*msg),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, [1, 2], "every held message, in order");
    assert_eq!(r.held(), 0);
}

#[test]
fn a_home_on_an_earlier_incarnation_of_this_node_is_never_taken() {
    // This node crashed and restarted; the coordinator has not heard yet that the old
    // incarnation is gone, and this incarnation never saw it removed. Taken, the home would
    // send the shard's messages to this node's own address, to be forwarded again for ever.
    let (mut r, now) = region();
    from_c(&mut r, now, ToRegion::RegisterAck);
    let old_me = UniqueAddress {
        uid: node(1).uid + 1,
        ..node(1)
    };
    assert_eq!(
        deliver(&mut r, now, 1, "a", 1),
        [to_c(ToCoordinator::GetShardHome(shard(1)))]
    );
    let stale = ToRegion::ShardHome {
        shard: shard(1),
        region: old_me,
    };
    assert_eq!(from_c(&mut r, now, stale), [], "still held");
    assert_eq!(r.held(), 1);
    let retry = now + RegionSettings::default().retry_interval;
    r.handle_timeout(retry);
    assert_eq!(
        outs(&mut r),
        [to_c(ToCoordinator::GetShardHome(shard(1)))],
        "asked again"
    );
}

#[test]
fn a_message_forwarded_here_for_a_home_elsewhere_goes_on_once_and_the_home_is_asked_again() {
    // Node 3 forwarded a message here, believing this region is shard 1's home; this region
    // believes node 3 is (the coordinator told each something different, one of them before
    // the shard moved). Forwarding for ever would bounce every message of the shard between
    // the two until one heard from the coordinator.
    let (mut r, now) = region();
    from_c(&mut r, now, ToRegion::RegisterAck);
    from_c(
        &mut r,
        now,
        ToRegion::ShardHome {
            shard: shard(1),
            region: node(3),
        },
    );
    r.handle(
        now,
        RegionInput::Forwarded {
            shard: shard(1),
            entity: "a".into(),
            msg: 7,
        },
    );
    assert_eq!(
        outs(&mut r),
        [
            RegionOutput::Forward {
                to: node(3),
                shard: shard(1),
                entity: "a".into(),
                msg: 7
            },
            to_c(ToCoordinator::GetShardHome(shard(1)))
        ],
        "passed on once, and the home asked for"
    );
    // Until the answer, the shard's messages wait here; coming back, so does this one.
    r.handle(
        now,
        RegionInput::Forwarded {
            shard: shard(1),
            entity: "a".into(),
            msg: 7,
        },
    );
    assert_eq!(outs(&mut r), []);
    assert_eq!(deliver(&mut r, now, 1, "b", 8), []);
    assert_eq!(r.held(), 2);
    // The coordinator says: here.
    let out = from_c(
        &mut r,
        now,
        ToRegion::ShardHome {
            shard: shard(1),
            region: node(1),
        },
    );
    assert_eq!(out[0], RegionOutput::StartShard(shard(1)));
    assert_eq!(r.held(), 0);
}

#[test]
fn a_region_not_yet_registered_ignores_what_the_coordinator_meant_for_another_incarnation() {
    // The coordinator allocated a shard to this node's previous incarnation; the HostShard,
    // sent by address, reaches this one before it has registered. Taken, it would start a copy
    // of the shard that no coordinator knows of.
    let (mut r, now) = region();
    let _ = outs(&mut r);
    assert_eq!(from_c(&mut r, now, ToRegion::HostShard(shard(4))), []);
    assert!(r.local_shards().is_empty());
    from_c(&mut r, now, ToRegion::RegisterAck);
    let out = from_c(&mut r, now, ToRegion::HostShard(shard(4)));
    assert_eq!(
        out[0],
        RegionOutput::StartShard(shard(4)),
        "registered: taken"
    );
}

#[test]
fn the_hold_buffer_is_bounded_across_shards() {
    let now = epoch();
    let mut r = Region::new(
        node(1),
        RegionSettings {
            buffer_size: 2,
            ..RegionSettings::default()
        },
    );
    deliver(&mut r, now, 1, "a", 1);
    deliver(&mut r, now, 2, "b", 2);
    assert_eq!(
        deliver(&mut r, now, 3, "c", 3),
        [RegionOutput::Dropped {
            entity: "c".into(),
            msg: 3
        }]
    );
}

#[test]
fn with_remember_entities_a_shard_that_lost_its_lease_is_asked_for_at_once() {
    for remember in [false, true] {
        let now = epoch();
        let mut r = Region::new(
            node(1),
            RegionSettings {
                remember_entities: remember,
                ..RegionSettings::default()
            },
        );
        r.handle(now, RegionInput::Coordinator(Some(node(9))));
        from_c(&mut r, now, ToRegion::RegisterAck);
        from_c(&mut r, now, ToRegion::HostShard(shard(3)));
        r.handle(
            now,
            RegionInput::ShardEnded {
                shard: shard(3),
                why: Ended::LeaseLost,
            },
        );
        let asked = outs(&mut r) == [to_c(ToCoordinator::GetShardHome(shard(3)))];
        assert_eq!(asked, remember);
        if remember {
            // The coordinator still has it here: it starts here again (and waits for its lease).
            assert_eq!(
                from_c(
                    &mut r,
                    now,
                    ToRegion::ShardHome {
                        shard: shard(3),
                        region: node(1)
                    }
                ),
                [RegionOutput::StartShard(shard(3))]
            );
        }
    }
}

#[test]
fn a_coordinator_that_does_not_know_the_region_gets_its_registration_at_once() {
    let (mut r, now) = region();
    outs(&mut r);
    from_c(&mut r, now, ToRegion::RegisterAck);
    from_c(&mut r, now, ToRegion::HostShard(shard(5)));
    outs(&mut r);
    assert_eq!(
        from_c(&mut r, now, ToRegion::RegisterAgain),
        [to_c(ToCoordinator::Register([shard(5)].into()))]
    );
    // Not registered until acknowledged: questions wait, as after any registration.
    assert!(deliver(&mut r, now, 1, "a", 10).is_empty());
    assert_eq!(
        from_c(&mut r, now, ToRegion::RegisterAck),
        [to_c(ToCoordinator::GetShardHome(shard(1)))]
    );
}

/// Found by the whole-cluster simulation (a node thawed after a long pause: its shard's lease
/// had expired, its coordinator still placed the shard here): a message the stopping shard
/// handed back was asked for, answered "here", delivered to the stopping shard, handed back…
/// without end. It now waits until the shard has ended, and is asked for once.
#[test]
fn a_message_handed_back_by_a_stopping_shard_waits_for_its_end_before_asking() {
    let (mut r, now) = region();
    from_c(&mut r, now, ToRegion::RegisterAck);
    from_c(&mut r, now, ToRegion::HostShard(shard(4)));
    outs(&mut r);
    // The shard lost its lease and is stopping: it hands a message back.
    r.handle(
        now,
        RegionInput::Bounced {
            shard: shard(4),
            entity: "a".into(),
            msg: 1,
        },
    );
    assert_eq!(
        outs(&mut r),
        [],
        "nothing asked while the shard is still stopping"
    );
    // A new message for it meanwhile is asked for; the coordinator still says "here".
    assert_eq!(
        deliver(&mut r, now, 4, "b", 2),
        [to_c(ToCoordinator::GetShardHome(shard(4)))]
    );
    let got = from_c(
        &mut r,
        now,
        ToRegion::ShardHome {
            shard: shard(4),
            region: node(1),
        },
    );
    // Both go to the (still stopping) shard, which hands them back: held, not asked again.
    assert_eq!(got.len(), 2, "{got:?}");
    for (entity, msg) in [("a", 1), ("b", 2)] {
        r.handle(
            now,
            RegionInput::Bounced {
                shard: shard(4),
                entity: entity.into(),
                msg,
            },
        );
    }
    assert_eq!(outs(&mut r), []);
    // Once it has ended, one question; the answer starts it again and delivers both, in order.
    r.handle(
        now,
        RegionInput::ShardEnded {
            shard: shard(4),
            why: Ended::LeaseLost,
        },
    );
    assert_eq!(outs(&mut r), [to_c(ToCoordinator::GetShardHome(shard(4)))]);
    let got = from_c(
        &mut r,
        now,
        ToRegion::ShardHome {
            shard: shard(4),
            region: node(1),
        },
    );
    assert_eq!(
        got,
        [
            RegionOutput::StartShard(shard(4)),
            RegionOutput::ToShard {
                shard: shard(4),
                entity: "a".into(),
                msg: 1
            },
            RegionOutput::ToShard {
                shard: shard(4),
                entity: "b".into(),
                msg: 2
            },
        ]
    );
}
