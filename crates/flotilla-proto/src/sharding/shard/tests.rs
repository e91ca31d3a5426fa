//! One shard driven by hand, with its outputs checked as data and its promises checked after
//! every step by a small world that plays the entities and the lease.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_core::machine::drain;

use super::*;
use crate::testing::epoch;

type Out = ShardOutput<u32>;

/// The shard and what its outputs did: which entities run, whether the lease is held.
struct World {
    shard: Shard<u32>,
    now: Instant,
    lease_held: bool,
    lease_lost: bool,
    /// An acquisition was asked for and not answered yet.
    acquiring: bool,
    running: BTreeSet<EntityId>,
    delivered: Vec<(EntityId, u32)>,
    log: Vec<Out>,
}

impl World {
    fn new(settings: ShardSettings) -> Self {
        let mut w = Self {
            shard: Shard::new("7", settings),
            now: epoch(),
            lease_held: false,
            lease_lost: false,
            acquiring: false,
            running: BTreeSet::new(),
            delivered: Vec::new(),
            log: Vec::new(),
        };
        w.collect();
        w
    }

    fn leased() -> Self {
        Self::new(ShardSettings {
            use_lease: true,
            ..ShardSettings::default()
        })
    }

    /// Feeds an input, records the outputs and checks the promises; returns the outputs
    /// without logs.
    fn input(&mut self, i: ShardInput<u32>) -> Vec<Out> {
        if let ShardInput::LeaseAcquired(granted) = i {
            self.lease_held |= granted;
            self.acquiring = false;
        }
        if i == ShardInput::LeaseLost {
            self.lease_held = false;
            self.lease_lost = true;
        }
        if i == ShardInput::LeaseReleased {
            // The release also covers a grant that arrived after it was asked for.
            self.lease_held = false;
        }
        if let ShardInput::EntityStopped(id) = &i {
            self.running.remove(id);
        }
        self.shard.handle(self.now, i);
        self.collect()
    }

    fn msg(&mut self, entity: &str, msg: u32) -> Vec<Out> {
        self.input(ShardInput::Deliver {
            entity: entity.into(),
            msg,
        })
    }

    fn advance(&mut self, d: Duration) -> Vec<Out> {
        self.now += d;
        self.shard.handle_timeout(self.now);
        self.collect()
    }

    fn collect(&mut self) -> Vec<Out> {
        let outs: Vec<Out> = drain(&mut self.shard)
            .into_iter()
            .filter(|o| !matches!(o, ShardOutput::Log { .. }))
            .collect();
        for o in &outs {
            match o {
                ShardOutput::StartEntity(id) => {
                    assert!(
                        !self.shard.settings.use_lease || self.lease_held,
                        "entity {id} started without the lease"
                    );
                    assert!(
                        !self.lease_lost,
                        "entity {id} started after the lease was lost"
                    );
                    assert!(self.running.insert(id.clone()), "{id} started twice");
                }
                ShardOutput::Deliver { entity, msg } => {
                    assert!(
                        self.running.contains(entity),
                        "delivered to stopped {entity}"
                    );
                    assert!(!self.lease_lost, "delivered after the lease was lost");
                    self.delivered.push((entity.clone(), *msg));
                }
                ShardOutput::AcquireLease => self.acquiring = true,
                ShardOutput::Ended(Ended::HandedOff) => {
                    assert!(!self.lease_held, "handed off while holding the lease");
                    assert!(self.running.is_empty(), "handed off with entities running");
                }
                _ => {}
            }
        }
        self.log.extend(outs.iter().cloned());
        outs
    }
}

fn e(id: &str) -> EntityId {
    id.to_owned()
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn no_entity_starts_before_the_lease_and_held_messages_follow_in_order() {
    let mut w = World::leased();
    assert_eq!(w.log, [ShardOutput::AcquireLease]);
    assert!(w.msg("a", 1).is_empty());
    assert!(w.msg("b", 2).is_empty());
    assert!(w.msg("a", 3).is_empty());
    let outs = w.input(ShardInput::LeaseAcquired(true));
    assert_eq!(
        outs,
        [
            ShardOutput::StartEntity(e("a")),
            ShardOutput::Deliver {
                entity: e("a"),
                msg: 1
            },
            ShardOutput::StartEntity(e("b")),
            ShardOutput::Deliver {
                entity: e("b"),
                msg: 2
            },
            ShardOutput::Deliver {
                entity: e("a"),
                msg: 3
            },
        ]
    );
}

#[test]
fn a_denied_or_unanswered_acquire_is_retried_every_interval() {
    let mut w = World::leased();
    w.msg("a", 1);
    assert!(w.input(ShardInput::LeaseAcquired(false)).is_empty());
    assert!(w.advance(s(4)).is_empty());
    assert_eq!(w.advance(s(1)), [ShardOutput::AcquireLease]);
    assert!(w.input(ShardInput::LeaseAcquired(false)).is_empty());
    assert_eq!(w.advance(s(5)), [ShardOutput::AcquireLease]);
    let outs = w.input(ShardInput::LeaseAcquired(true));
    assert_eq!(outs.len(), 2, "started a and delivered its held message");
    // A late answer to an acquisition that is not under way changes nothing.
    assert!(w.input(ShardInput::LeaseAcquired(true)).is_empty());
}

#[test]
fn a_lost_lease_stops_every_entity_at_once_and_nothing_more_is_delivered() {
    let mut w = World::leased();
    w.input(ShardInput::LeaseAcquired(true));
    w.msg("a", 1);
    w.msg("b", 2);
    let outs = w.input(ShardInput::LeaseLost);
    assert_eq!(
        outs,
        [
            ShardOutput::StopEntity(e("a")),
            ShardOutput::StopEntity(e("b"))
        ]
    );
    // Messages now go back to the region.
    assert_eq!(
        w.msg("a", 3),
        [ShardOutput::Bounce {
            entity: e("a"),
            msg: 3
        }]
    );
    assert!(w.input(ShardInput::EntityStopped(e("a"))).is_empty());
    assert_eq!(
        w.input(ShardInput::EntityStopped(e("b"))),
        [ShardOutput::Ended(Ended::LeaseLost)]
    );
    assert_eq!(w.shard.phase_name(), "stopped");
}

#[test]
fn a_handoff_while_acquiring_is_answered_at_once_and_releases_what_may_have_been_granted() {
    let mut w = World::leased();
    w.msg("a", 1);
    // The acquisition is under way: release (the holder waits for its answer), awaited.
    assert_eq!(w.input(ShardInput::HandOff), [ShardOutput::ReleaseLease]);
    // Its answer, arriving late, starts nothing; the release gives it back.
    assert!(w.input(ShardInput::LeaseAcquired(true)).is_empty());
    assert_eq!(
        w.input(ShardInput::LeaseReleased),
        [
            ShardOutput::Bounce {
                entity: e("a"),
                msg: 1
            },
            ShardOutput::Ended(Ended::HandedOff)
        ]
    );
    // Between retries nothing is held: ended at once.
    let mut w = World::leased();
    w.input(ShardInput::LeaseAcquired(false));
    assert_eq!(
        w.input(ShardInput::HandOff),
        [ShardOutput::Ended(Ended::HandedOff)]
    );
}

#[test]
fn a_handoff_stops_the_entities_then_awaits_the_release_before_it_ends() {
    let mut w = World::leased();
    w.input(ShardInput::LeaseAcquired(true));
    w.msg("a", 1);
    w.msg("b", 2);
    assert_eq!(
        w.input(ShardInput::HandOff),
        [
            ShardOutput::StopEntity(e("a")),
            ShardOutput::StopEntity(e("b"))
        ]
    );
    assert!(w.input(ShardInput::EntityStopped(e("a"))).is_empty());
    assert_eq!(
        w.input(ShardInput::EntityStopped(e("b"))),
        [ShardOutput::ReleaseLease]
    );
    assert_eq!(w.shard.phase_name(), "releasing-lease");
    assert_eq!(
        w.input(ShardInput::LeaseReleased),
        [ShardOutput::Ended(Ended::HandedOff)]
    );
}

#[test]
fn entities_that_do_not_stop_within_the_handoff_timeout_are_forced_and_still_awaited() {
    let mut w = World::new(ShardSettings::default());
    w.msg("a", 1);
    w.input(ShardInput::HandOff);
    assert!(w.advance(s(59)).is_empty());
    assert_eq!(w.advance(s(1)), [ShardOutput::ForceStop(e("a"))]);
    assert!(w.advance(s(600)).is_empty(), "no end while a still runs");
    assert_eq!(
        w.input(ShardInput::EntityStopped(e("a"))),
        [ShardOutput::Ended(Ended::HandedOff)]
    );
}

#[test]
fn idle_entities_are_passivated_and_messages_during_passivation_reach_the_next_incarnation() {
    let mut w = World::new(ShardSettings::default());
    w.msg("a", 1);
    w.advance(s(60));
    w.msg("b", 2);
    assert_eq!(w.advance(s(60)), [ShardOutput::StopEntity(e("a"))]);
    // While a stops, its messages wait; they start its next incarnation.
    assert!(w.msg("a", 3).is_empty());
    assert!(w.msg("a", 4).is_empty());
    assert_eq!(
        w.input(ShardInput::EntityStopped(e("a"))),
        [
            ShardOutput::StartEntity(e("a")),
            ShardOutput::Deliver {
                entity: e("a"),
                msg: 3
            },
            ShardOutput::Deliver {
                entity: e("a"),
                msg: 4
            },
        ]
    );
    // b, active 60 s ago, goes idle next; an entity may also ask.
    assert_eq!(w.advance(s(60)), [ShardOutput::StopEntity(e("b"))]);
    assert_eq!(
        w.input(ShardInput::Passivate(e("a"))),
        [ShardOutput::StopEntity(e("a"))]
    );
    assert!(w.input(ShardInput::EntityStopped(e("a"))).is_empty());
    assert_eq!(w.delivered.len(), 4);
}

#[test]
fn the_active_entity_limit_passivates_the_least_recently_active() {
    let mut w = World::new(ShardSettings {
        active_entity_limit: Some(2),
        idle_timeout: None,
        ..ShardSettings::default()
    });
    w.msg("a", 1);
    w.advance(s(1));
    w.msg("b", 2);
    w.advance(s(1));
    w.msg("a", 3); // a is now the most recent
    w.advance(s(1));
    let outs = w.msg("c", 4);
    assert_eq!(
        outs,
        [
            ShardOutput::StopEntity(e("b")),
            ShardOutput::StartEntity(e("c")),
            ShardOutput::Deliver {
                entity: e("c"),
                msg: 4
            },
        ]
    );
    assert_eq!(w.shard.poll_timeout(), None, "no idle timeout");
}

#[test]
fn the_hold_buffer_is_bounded() {
    let mut w = World::new(ShardSettings {
        use_lease: true,
        buffer_limit: 2,
        ..ShardSettings::default()
    });
    w.msg("a", 1);
    w.msg("a", 2);
    assert_eq!(
        w.msg("a", 3),
        [ShardOutput::Dropped {
            entity: e("a"),
            msg: 3
        }]
    );
}

#[test]
fn an_entity_that_stops_on_its_own_is_started_again_by_its_next_message() {
    let mut w = World::new(ShardSettings::default());
    w.msg("a", 1);
    assert!(w.input(ShardInput::EntityStopped(e("a"))).is_empty());
    assert_eq!(
        w.msg("a", 2),
        [
            ShardOutput::StartEntity(e("a")),
            ShardOutput::Deliver {
                entity: e("a"),
                msg: 2
            }
        ]
    );
}

mod random {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Msg(u8),
        Answer(bool),
        Lose,
        StopOne(u8),
        Passivate(u8),
        HandOff,
        Released,
        Wait(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..4).prop_map(Op::Msg),
            2 => any::<bool>().prop_map(Op::Answer),
            1 => Just(Op::Lose),
            2 => (0u8..4).prop_map(Op::StopOne),
            1 => (0u8..4).prop_map(Op::Passivate),
            1 => Just(Op::HandOff),
            1 => Just(Op::Released),
            2 => (0u8..200).prop_map(Op::Wait),
        ]
    }

    proptest! {
        /// Whatever happens, in whatever order: no entity without the lease, none after it is
        /// lost, a hand-off ends only with the lease released and every entity stopped, and
        /// every message is delivered, handed back or dropped — never lost in the machine.
        #[test]
        fn the_promises_hold_under_any_interleaving(ops in prop::collection::vec(op(), 0..120)) {
            let mut w = World::new(ShardSettings {
                use_lease: true,
                active_entity_limit: Some(2),
                idle_timeout: Some(s(30)),
                ..ShardSettings::default()
            });
            let mut sent = 0u32;
            for op in ops {
                // Only answers the world could really give.
                let asked = w.acquiring;
                match op {
                    Op::Msg(k) => {
                        sent += 1;
                        w.msg(&format!("e{k}"), sent);
                    }
                    Op::Answer(granted) if asked => {
                        w.input(ShardInput::LeaseAcquired(granted));
                    }
                    Op::Lose if w.lease_held && w.shard.phase_name() != "acquiring-lease" => {
                        w.input(ShardInput::LeaseLost);
                    }
                    Op::StopOne(k) => {
                        let id = format!("e{k}");
                        let stopping = w.log.iter().rev().find_map(|o| match o {
                            ShardOutput::StopEntity(x) | ShardOutput::ForceStop(x) if *x == id => Some(true),
                            ShardOutput::StartEntity(x) if *x == id => Some(false),
                            _ => None,
                        }) == Some(true);
                        if stopping && w.running.contains(&id) {
                            w.input(ShardInput::EntityStopped(id));
                        }
                    }
                    Op::Passivate(k) => {
                        w.input(ShardInput::Passivate(format!("e{k}")));
                    }
                    Op::HandOff => {
                        w.input(ShardInput::HandOff);
                    }
                    Op::Released if w.shard.phase_name() == "releasing-lease" => {
                        w.input(ShardInput::LeaseReleased);
                    }
                    Op::Wait(n) => {
                        w.advance(Duration::from_millis(u64::from(n) * 100));
                    }
                    _ => {}
                }
            }
            // Every message is accounted for once: delivered, handed back, dropped, or still
            // waiting in the shard.
            let out = w.log.iter().filter(|o| matches!(o,
                ShardOutput::Deliver { .. } | ShardOutput::Bounce { .. } | ShardOutput::Dropped { .. }
            )).count();
            let waiting = w.shard.held.len()
                + w.shard.entities.values().map(|e| match e {
                    Entity::Stopping { held } => held.len(),
                    Entity::Running { .. } => 0,
                }).sum::<usize>();
            prop_assert_eq!(out + waiting, sent as usize);
        }
    }
}
