//! One entity type's shard region on one node, as a pure state machine: it routes messages to
//! the shards' homes, asks the coordinator where unknown shards live, holds messages while a
//! home is unknown or moving, hosts the shards the coordinator gives it, and takes part in
//! hand-offs. Messages are opaque (`M`); which shard an entity belongs to is the driver's
//! extractor's answer, given with each message.
//!
//! ```text
//!  Deliver(shard, entity, msg) ─▶ home here: ToShard   home elsewhere: Forward to that region
//!  Forwarded(…) (from a region that names this one the home): as Deliver; with a home elsewhere,
//!                                 Forward once more, then forget that home and ask for it
//!                                 home unknown / moving: hold (bounded, all shards together),
//!                                 GetShardHome (again every retry-interval while unanswered)
//!  ShardHome(s, r) ─▶ remember, release what is held for s (r removed from the cluster, or an
//!                     earlier incarnation of this node: keep holding, ask again at the retry —
//!                     the coordinator lags)
//!  HostShard(s) ─▶ StartShard(s), ShardStarted
//!  BeginHandOff(s) ─▶ forget s's home (hold from now), BeginHandOffAck
//!  HandOff(s) ─▶ the local shard hands off; its end ─▶ ShardStopped (at once when not here)
//!  Leave ─▶ GracefulShutdownReq (again every retry-interval) until no shard is left here and
//!          nothing is held ─▶ Done
//!  coordinator moved ─▶ Register again, with the shards hosted here
//! ```
//!
//! A proxy region hosts nothing: it registers as a proxy and only routes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use flotilla_core::{StateMachine, UniqueAddress};

use super::shard::{Ended, EntityId};
use super::shard_coordinator::{ToCoordinator, ToRegion};
use super::shard_id::ShardId;
use crate::cluster::LogLevel;

/// How a region behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionSettings {
    /// Whether it hosts shards (false: a proxy).
    pub hosts_shards: bool,
    /// How often registration, unanswered GetShardHome and GracefulShutdownReq are sent again
    /// (default 2 s).
    pub retry_interval: Duration,
    /// Messages held in all while homes are unknown (default 100 000); beyond, dropped.
    pub buffer_size: usize,
    /// Remember entities: a shard that lost its lease is asked for again at once (it starts
    /// again where the coordinator says, and waits for its lease there), instead of on its next
    /// message.
    pub remember_entities: bool,
}

impl Default for RegionSettings {
    fn default() -> Self {
        Self {
            hosts_shards: true,
            retry_interval: Duration::from_secs(2),
            buffer_size: 100_000,
            remember_entities: false,
        }
    }
}

/// Inputs of a [`Region`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionInput<M> {
    /// A message for an entity from a local sender.
    Deliver {
        /// Its shard.
        shard: ShardId,
        /// The entity.
        entity: EntityId,
        /// The message.
        msg: M,
    },
    /// A message for an entity that another region forwarded here: that region believes this
    /// one is the shard's home.
    Forwarded {
        /// Its shard.
        shard: ShardId,
        /// The entity.
        entity: EntityId,
        /// The message.
        msg: M,
    },
    /// Where the coordinator runs now (`None`: unknown, e.g. while the singleton moves).
    Coordinator(Option<UniqueAddress>),
    /// A message from the coordinator on node `from`. A RegisterAck counts only from the
    /// coordinator this region follows (one that is handing over could otherwise leave the
    /// region registered with nobody).
    FromCoordinator {
        /// The coordinator's node.
        from: UniqueAddress,
        /// The message.
        msg: ToRegion,
    },
    /// A local shard handed a message back (it is stopping).
    Bounced {
        /// Its shard.
        shard: ShardId,
        /// The entity.
        entity: EntityId,
        /// The message.
        msg: M,
    },
    /// A local shard ended.
    ShardEnded {
        /// The shard.
        shard: ShardId,
        /// Why.
        why: Ended,
    },
    /// This node is leaving: hand every shard off, then say Done.
    Leave,
    /// The node `0` left the cluster (removed): every home there is forgotten, so messages for
    /// its shards are held and their new homes asked for, instead of being sent to a dead node.
    Gone(UniqueAddress),
}

/// Outputs of a [`Region`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionOutput<M> {
    /// Send to the coordinator.
    ToCoordinator {
        /// Where it runs.
        to: UniqueAddress,
        /// What.
        msg: ToCoordinator,
    },
    /// Start a local shard.
    StartShard(ShardId),
    /// Tell a local shard to hand off.
    HandOffShard(ShardId),
    /// Give a message to a local shard.
    ToShard {
        /// The shard.
        shard: ShardId,
        /// The entity.
        entity: EntityId,
        /// The message.
        msg: M,
    },
    /// Send a message to the region at `to`, which hosts its shard.
    Forward {
        /// The home region.
        to: UniqueAddress,
        /// The shard.
        shard: ShardId,
        /// The entity.
        entity: EntityId,
        /// The message.
        msg: M,
    },
    /// The hold buffer is full: to dead letters, counted.
    Dropped {
        /// The entity.
        entity: EntityId,
        /// The message.
        msg: M,
    },
    /// After [`RegionInput::Leave`]: every local shard is handed off.
    Done,
    /// A line for the log.
    Log {
        /// How loud.
        level: LogLevel,
        /// What happened and why.
        text: String,
    },
}

/// One region. See the [module docs](self).
#[derive(Debug)]
pub struct Region<M> {
    me: UniqueAddress,
    settings: RegionSettings,
    coordinator: Option<UniqueAddress>,
    registered: bool,
    /// Known homes.
    homes: BTreeMap<ShardId, UniqueAddress>,
    /// Shards running here (started, not ended).
    local: BTreeSet<ShardId>,
    /// Shards told to hand off, not ended yet.
    handing_off: BTreeSet<ShardId>,
    /// Held messages per shard, and how many in all.
    held: BTreeMap<ShardId, VecDeque<(EntityId, M)>>,
    held_count: usize,
    /// GetShardHome sent and unanswered (shard → when to ask again).
    asked: BTreeMap<ShardId, Instant>,
    /// Nodes removed from the cluster (an incarnation never comes back): a home there is
    /// never taken, whoever names it.
    gone: BTreeSet<UniqueAddress>,
    leaving: bool,
    done: bool,
    next_retry: Option<Instant>,
    out: VecDeque<RegionOutput<M>>,
}

impl<M> Region<M> {
    /// Whether `node` is certainly dead: removed from the cluster, or an earlier incarnation of
    /// this node.
    fn is_dead(&self, node: &UniqueAddress) -> bool {
        self.gone.contains(node) || (node.address == self.me.address && *node != self.me)
    }

    /// The region of node `me`.
    pub fn new(me: UniqueAddress, settings: RegionSettings) -> Self {
        Self {
            me,
            settings,
            coordinator: None,
            registered: false,
            homes: BTreeMap::new(),
            local: BTreeSet::new(),
            handing_off: BTreeSet::new(),
            held: BTreeMap::new(),
            held_count: 0,
            asked: BTreeMap::new(),
            gone: BTreeSet::new(),
            leaving: false,
            done: false,
            next_retry: None,
            out: VecDeque::new(),
        }
    }

    /// The shards running here.
    pub fn local_shards(&self) -> &BTreeSet<ShardId> {
        &self.local
    }

    /// How many messages wait for a home.
    pub fn held(&self) -> usize {
        self.held_count
    }

    /// Whether the coordinator has acknowledged this region's registration.
    pub fn is_registered(&self) -> bool {
        self.registered
    }

    /// The coordinator this region follows, once it knows one.
    pub fn coordinator(&self) -> Option<&UniqueAddress> {
        self.coordinator.as_ref()
    }

    fn log(&mut self, level: LogLevel, text: String) {
        self.out.push_back(RegionOutput::Log { level, text });
    }

    fn tell_coordinator(&mut self, msg: ToCoordinator) {
        if let Some(c) = self.coordinator.clone() {
            self.out
                .push_back(RegionOutput::ToCoordinator { to: c, msg });
        }
    }

    fn register(&mut self, now: Instant) {
        let msg = if self.settings.hosts_shards {
            ToCoordinator::Register(self.local.clone())
        } else {
            ToCoordinator::RegisterProxy
        };
        self.tell_coordinator(msg);
        self.arm(now);
    }

    fn arm(&mut self, now: Instant) {
        if self.next_retry.is_none() {
            self.next_retry = Some(now + self.settings.retry_interval);
        }
    }

    fn deliver(&mut self, now: Instant, shard: ShardId, entity: EntityId, msg: M) {
        match self.homes.get(&shard) {
            Some(home) if *home == self.me && self.local.contains(&shard) => {
                self.out
                    .push_back(RegionOutput::ToShard { shard, entity, msg });
            }
            Some(home) if *home != self.me => {
                let to = home.clone();
                self.out.push_back(RegionOutput::Forward {
                    to,
                    shard,
                    entity,
                    msg,
                });
            }
            _ => self.hold(now, shard, entity, msg),
        }
    }

    fn hold(&mut self, now: Instant, shard: ShardId, entity: EntityId, msg: M) {
        if self.hold_quietly(shard.clone(), entity, msg) {
            self.ask(now, &shard);
        }
    }

    /// Holds a message for `shard` without asking where it lives; false if the buffer is full
    /// (the message is dropped).
    fn hold_quietly(&mut self, shard: ShardId, entity: EntityId, msg: M) -> bool {
        if self.held_count >= self.settings.buffer_size {
            self.out.push_back(RegionOutput::Dropped { entity, msg });
            return false;
        }
        self.held_count += 1;
        self.held.entry(shard).or_default().push_back((entity, msg));
        true
    }

    /// Asks where `shard` lives, unless that question is pending or a hand-off of it is.
    fn ask(&mut self, now: Instant, shard: &ShardId) {
        if self.asked.contains_key(shard) || !self.registered {
            return;
        }
        self.asked
            .insert(shard.clone(), now + self.settings.retry_interval);
        self.tell_coordinator(ToCoordinator::GetShardHome(shard.clone()));
        self.arm(now);
    }

    /// Sends what is held for `shard` where it now goes.
    fn release_held(&mut self, now: Instant, shard: &ShardId) {
        if let Some(msgs) = self.held.remove(shard) {
            self.held_count -= msgs.len();
            for (entity, msg) in msgs {
                self.deliver(now, shard.clone(), entity, msg);
            }
        }
    }

    fn on_coordinator_msg(&mut self, now: Instant, msg: ToRegion) {
        match msg {
            ToRegion::RegisterAgain => {
                self.registered = false;
                self.register(now);
            }
            ToRegion::RegisterAck => {
                if !self.registered {
                    self.registered = true;
                    self.log(LogLevel::Info, "registered with the coordinator".into());
                    let pending: Vec<ShardId> = self.held.keys().cloned().collect();
                    for shard in pending {
                        self.ask(now, &shard);
                    }
                    if self.leaving {
                        self.tell_coordinator(ToCoordinator::GracefulShutdownReq);
                    }
                }
            }
            ToRegion::ShardHome { shard, region } if self.is_dead(&region) => {
                // The coordinator has not yet learned that the member was removed (it hears of
                // it on its own, and maybe on another node). Taken, the home would send the
                // shard's messages to a dead node from now on, and nothing would ever ask
                // again: the question stays open and is asked again at the retry. An earlier
                // incarnation of this very node is dead for certain (this one runs at its
                // address), whether or not this incarnation ever saw it removed: taken, the
                // home would send the shard's messages to this node's own address, where they
                // would be forwarded again, for ever.
                self.log(
                    LogLevel::Info,
                    format!("the coordinator named {region} as the home of shard {shard}, but that member was removed: asking again in {:?}", self.settings.retry_interval),
                );
                self.homes.remove(&shard);
                self.asked.insert(shard, now + self.settings.retry_interval);
                self.arm(now);
            }
            ToRegion::ShardHome { shard, region } => {
                self.asked.remove(&shard);
                if region == self.me && !self.local.contains(&shard) {
                    // Ours, and not running (it ended, or this region restarted): start it.
                    self.start(&shard);
                }
                self.homes.insert(shard.clone(), region);
                self.release_held(now, &shard);
                self.check_done();
            }
            ToRegion::HostShard(shard) => {
                if self.leaving {
                    // Going away: hosting it would only delay the shutdown.
                    return;
                }
                if !self.local.contains(&shard) {
                    self.start(&shard);
                }
                self.homes.insert(shard.clone(), self.me.clone());
                self.tell_coordinator(ToCoordinator::ShardStarted(shard.clone()));
                self.release_held(now, &shard);
            }
            ToRegion::BeginHandOff(shard) => {
                self.homes.remove(&shard);
                self.asked.remove(&shard);
                self.tell_coordinator(ToCoordinator::BeginHandOffAck(shard));
            }
            ToRegion::HandOff(shard) => {
                self.homes.remove(&shard);
                if self.local.contains(&shard) {
                    if self.handing_off.insert(shard.clone()) {
                        self.out.push_back(RegionOutput::HandOffShard(shard));
                    }
                } else {
                    self.tell_coordinator(ToCoordinator::ShardStopped(shard));
                }
            }
        }
    }

    fn start(&mut self, shard: &ShardId) {
        self.local.insert(shard.clone());
        self.out.push_back(RegionOutput::StartShard(shard.clone()));
    }

    fn on_shard_ended(&mut self, now: Instant, shard: ShardId, why: Ended) {
        if !self.local.remove(&shard) {
            return;
        }
        let handed_off = self.handing_off.remove(&shard);
        match why {
            Ended::HandedOff if handed_off => {
                self.tell_coordinator(ToCoordinator::ShardStopped(shard.clone()));
            }
            Ended::HandedOff => {}
            Ended::LeaseLost => {
                let when = if self.settings.remember_entities {
                    "at once (its entities are remembered)"
                } else {
                    "on its next message"
                };
                self.log(
                    LogLevel::Warn,
                    format!("shard {shard} stopped: its lease was lost; it starts again {when}, once the lease can be acquired"),
                );
                self.homes.remove(&shard);
            }
        }
        if self.held.contains_key(&shard)
            || (why == Ended::LeaseLost && self.settings.remember_entities && !self.leaving)
        {
            self.ask(now, &shard);
        }
        self.check_done();
    }

    /// Done once no shard runs here and nothing is held: messages the leaving region still
    /// holds (handed back by its stopping shards, or arrived meanwhile) go to their new homes
    /// first.
    fn check_done(&mut self) {
        if self.leaving && !self.done && self.local.is_empty() && self.held_count == 0 {
            self.done = true;
            self.log(
                LogLevel::Info,
                "every shard of this region is handed off and every held message passed on".into(),
            );
            self.out.push_back(RegionOutput::Done);
        }
    }
}

impl<M> StateMachine for Region<M> {
    type Input = RegionInput<M>;
    type Output = RegionOutput<M>;

    fn handle(&mut self, now: Instant, input: RegionInput<M>) {
        match input {
            RegionInput::Deliver { shard, entity, msg } => self.deliver(now, shard, entity, msg),
            RegionInput::Forwarded { shard, entity, msg } => {
                if self.homes.get(&shard).is_some_and(|home| *home != self.me) {
                    // The sender believes this region is the home, this region believes another
                    // one is: one of the two is stale. Passed on once more (the home known here
                    // may well be right), but forgotten and asked for again: were the two to
                    // name each other, the shard's messages would go back and forth between
                    // them until one of them heard from the coordinator.
                    self.deliver(now, shard.clone(), entity, msg);
                    self.homes.remove(&shard);
                    self.ask(now, &shard);
                } else {
                    self.deliver(now, shard, entity, msg);
                }
            }
            RegionInput::Bounced { shard, entity, msg } => {
                self.homes.remove(&shard);
                if self.local.contains(&shard) {
                    // The shard is stopping here: held until it has ended, then asked for. Asking
                    // now would only hear "here" again from a coordinator that has not yet been
                    // told, and the message would go round between the shard, this region and
                    // the coordinator until the shard ends.
                    self.hold_quietly(shard, entity, msg);
                } else {
                    self.hold(now, shard, entity, msg);
                }
            }
            RegionInput::Coordinator(at) => {
                if at != self.coordinator {
                    self.coordinator = at;
                    self.registered = false;
                    self.asked.clear();
                    if self.coordinator.is_some() {
                        self.register(now);
                    }
                }
            }
            RegionInput::FromCoordinator { from, msg } => {
                let stale_ack =
                    msg == ToRegion::RegisterAck && self.coordinator.as_ref() != Some(&from);
                // Until registered, only the answer to the registration counts: anything else
                // was meant for an earlier incarnation of this node (messages go by address),
                // or is a late word of a coordinator that has since moved. Taken, a HostShard
                // for the previous incarnation started a shard here that no coordinator knew of.
                let unexpected = !self.registered
                    && !matches!(msg, ToRegion::RegisterAck | ToRegion::RegisterAgain);
                if unexpected {
                    self.log(
                        LogLevel::Info,
                        format!("ignored {msg:?} from the coordinator at {from}: this region is not registered with it"),
                    );
                } else if !stale_ack {
                    self.on_coordinator_msg(now, msg);
                }
            }
            RegionInput::ShardEnded { shard, why } => self.on_shard_ended(now, shard, why),
            RegionInput::Gone(node) => {
                self.homes.retain(|_, home| *home != node);
                self.gone.insert(node);
            }
            RegionInput::Leave => {
                if !self.leaving {
                    self.leaving = true;
                    self.tell_coordinator(ToCoordinator::GracefulShutdownReq);
                    self.arm(now);
                    self.check_done();
                }
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        let Some(at) = self.next_retry else {
            return;
        };
        if at > now {
            return;
        }
        self.next_retry = None;
        if !self.registered {
            self.register(now);
            return;
        }
        let due: Vec<ShardId> = self
            .asked
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(s, _)| s.clone())
            .collect();
        for shard in due {
            self.asked.remove(&shard);
            self.ask(now, &shard);
        }
        if self.leaving && !self.done {
            self.tell_coordinator(ToCoordinator::GracefulShutdownReq);
            self.arm(now);
        }
        if !self.asked.is_empty() {
            self.arm(now);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.next_retry
    }

    fn poll_output(&mut self) -> Option<RegionOutput<M>> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests;
