//! One shard on one node, as a pure state machine: its lease, its entities and their
//! passivation, and its hand-off. Messages are opaque (`M`): the machine only decides whether
//! one is delivered, held, or handed back to the region.
//!
//! ```text
//!  AcquiringLease ── granted ──▶ Active ── HandOff ──▶ HandingOff: StopEntity for each entity
//!   │ messages held (bounded)     │ (entities start     │ (the hand-off stop message), until
//!   │ denied / unknown: retry     │  on their first     │ all stopped or handoff-timeout
//!   │  every lease-retry-interval │  message)           ▼
//!   │ HandOff: answered at once   │ lease lost ──▶   Releasing: ReleaseLease, awaited
//!   │  (release what may have     │  StopEntity for    ▼
//!   │   been granted, awaited)    │  all at once;    Stopped (HandedOff)
//!   ▼                             ▼  then Stopped (LeaseLost)
//! ```
//!
//! The promises, each tested: no entity starts before the lease is granted; none runs after
//! the lease is lost (all are told to stop the moment it is, and nothing more is delivered);
//! a hand-off is answered even while the lease is still being acquired; the lease release
//! is awaited before the shard reports it has stopped, so the next home can take the lease at
//! once. Messages the shard cannot deliver any more (it is stopping) go back to the region,
//! which holds them until the shard's next home is known.
//!
//! Passivation: an entity idle for `idle-timeout`, or the least recently active one when
//! `active-entity-limit` would be exceeded, or one that asks, is sent its stop message;
//! messages that arrive meanwhile are held and delivered to its next incarnation, started as
//! soon as the old one has stopped.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use flotilla_core::StateMachine;

use crate::cluster::LogLevel;

/// An entity's id.
pub type EntityId = String;

/// How a shard behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardSettings {
    /// Whether the shard runs only while it holds its lease.
    pub use_lease: bool,
    /// How long after a denied or unanswered acquisition it tries again (default 5 s).
    pub lease_retry_interval: Duration,
    /// How long the entities may take to stop on hand-off (default 60 s).
    pub handoff_timeout: Duration,
    /// Passivate an entity idle this long (default 120 s; `None`: never).
    pub idle_timeout: Option<Duration>,
    /// At most this many entities run; the least recently active is passivated (default none).
    pub active_entity_limit: Option<usize>,
    /// Messages held while the lease is acquired (default 100 000); beyond, the newest are
    /// handed back as dropped.
    pub buffer_limit: usize,
}

impl Default for ShardSettings {
    fn default() -> Self {
        Self {
            use_lease: false,
            lease_retry_interval: Duration::from_secs(5),
            handoff_timeout: Duration::from_secs(60),
            idle_timeout: Some(Duration::from_secs(120)),
            active_entity_limit: None,
            buffer_limit: 100_000,
        }
    }
}

/// Inputs of a [`Shard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardInput<M> {
    /// A message for an entity of this shard.
    Deliver {
        /// The entity.
        entity: EntityId,
        /// The message.
        msg: M,
    },
    /// The answer to [`ShardOutput::AcquireLease`].
    LeaseAcquired(bool),
    /// The lease that was held is lost.
    LeaseLost,
    /// The release asked for is done (whatever its outcome: the driver logs a failure).
    LeaseReleased,
    /// An entity has stopped (passivated, handed off, or on its own).
    EntityStopped(EntityId),
    /// An entity asks to be passivated.
    Passivate(EntityId),
    /// The coordinator moves this shard away.
    HandOff,
}

/// Why a shard ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It was handed off (and its lease released): tell the coordinator ShardStopped.
    HandedOff,
    /// Its lease was lost: its entities have stopped; the region must have it re-allocated.
    LeaseLost,
}

/// Outputs of a [`Shard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardOutput<M> {
    /// Acquire the shard's lease (answer [`ShardInput::LeaseAcquired`]).
    AcquireLease,
    /// Release it and answer [`ShardInput::LeaseReleased`] when done.
    ReleaseLease,
    /// Start the entity.
    StartEntity(EntityId),
    /// Deliver to the (running) entity.
    Deliver {
        /// The entity.
        entity: EntityId,
        /// The message.
        msg: M,
    },
    /// Send the entity its stop message (answer [`ShardInput::EntityStopped`] once it has
    /// stopped).
    StopEntity(EntityId),
    /// The entity did not stop within handoff-timeout: stop it now, without its stop message
    /// (it finishes the message in hand). The hand-off still waits for
    /// [`ShardInput::EntityStopped`], so no entity ever runs in two places.
    ForceStop(EntityId),
    /// A message this shard will not deliver: it is stopping, so the region holds it for the
    /// shard's next home.
    Bounce {
        /// The entity.
        entity: EntityId,
        /// The message.
        msg: M,
    },
    /// The hold buffer is full: this message is dropped (to dead letters, counted).
    Dropped {
        /// The entity.
        entity: EntityId,
        /// The message.
        msg: M,
    },
    /// The shard has ended; nothing more comes from it.
    Ended(Ended),
    /// A line for the log.
    Log {
        /// How loud.
        level: LogLevel,
        /// What happened and why.
        text: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    AcquiringLease {
        asked: bool,
        retry_at: Option<Instant>,
    },
    Active,
    /// Entities are stopping: for a hand-off (release the lease after) or a lost lease.
    Stopping {
        why: Ended,
        deadline: Option<Instant>,
    },
    /// Waiting for the lease release before reporting the hand-off.
    Releasing,
    Stopped,
}

#[derive(Debug)]
enum Entity<M> {
    Running {
        last_active: Instant,
    },
    /// Told to stop; messages for its next incarnation wait here.
    Stopping {
        held: VecDeque<M>,
    },
}

/// One shard on one node. See the [module docs](self).
#[derive(Debug)]
pub struct Shard<M> {
    id: String,
    settings: ShardSettings,
    phase: Phase,
    entities: BTreeMap<EntityId, Entity<M>>,
    /// Messages held while the lease is acquired.
    held: VecDeque<(EntityId, M)>,
    out: VecDeque<ShardOutput<M>>,
}

impl<M> Shard<M> {
    /// Shard `id`, starting now: it asks for its lease first when it uses one.
    pub fn new(id: &str, settings: ShardSettings) -> Self {
        let mut shard = Self {
            id: id.to_owned(),
            phase: Phase::Active,
            settings,
            entities: BTreeMap::new(),
            held: VecDeque::new(),
            out: VecDeque::new(),
        };
        if shard.settings.use_lease {
            shard.phase = Phase::AcquiringLease {
                asked: true,
                retry_at: None,
            };
            shard.out.push_back(ShardOutput::AcquireLease);
        }
        shard
    }

    /// Whether entities may run now.
    pub fn is_active(&self) -> bool {
        self.phase == Phase::Active
    }

    /// The running entities.
    pub fn running(&self) -> impl Iterator<Item = &EntityId> {
        self.entities
            .iter()
            .filter(|(_, e)| matches!(e, Entity::Running { .. }))
            .map(|(id, _)| id)
    }

    /// The phase's name, for logs and queries.
    pub fn phase_name(&self) -> &'static str {
        match self.phase {
            Phase::AcquiringLease { .. } => "acquiring-lease",
            Phase::Active => "active",
            Phase::Stopping { .. } => "stopping",
            Phase::Releasing => "releasing-lease",
            Phase::Stopped => "stopped",
        }
    }

    fn log(&mut self, level: LogLevel, text: String) {
        self.out.push_back(ShardOutput::Log { level, text });
    }

    fn deliver(&mut self, now: Instant, entity: EntityId, msg: M) {
        match &mut self.phase {
            Phase::AcquiringLease { .. } => {
                if self.held.len() >= self.settings.buffer_limit {
                    self.out.push_back(ShardOutput::Dropped { entity, msg });
                } else {
                    self.held.push_back((entity, msg));
                }
                return;
            }
            Phase::Active => {}
            Phase::Stopping { .. } | Phase::Releasing | Phase::Stopped => {
                self.out.push_back(ShardOutput::Bounce { entity, msg });
                return;
            }
        }
        match self.entities.get_mut(&entity) {
            Some(Entity::Running { last_active }) => {
                *last_active = now;
                self.out.push_back(ShardOutput::Deliver { entity, msg });
            }
            Some(Entity::Stopping { held }) => held.push_back(msg),
            None => {
                self.make_room(now);
                self.entities
                    .insert(entity.clone(), Entity::Running { last_active: now });
                self.out.push_back(ShardOutput::StartEntity(entity.clone()));
                self.out.push_back(ShardOutput::Deliver { entity, msg });
            }
        }
    }

    /// Passivates the least recently active entity while the limit would be exceeded.
    fn make_room(&mut self, now: Instant) {
        let Some(limit) = self.settings.active_entity_limit else {
            return;
        };
        while self.running().count() >= limit.max(1) {
            let lru = self
                .entities
                .iter()
                .filter_map(|(id, e)| match e {
                    Entity::Running { last_active } => Some((*last_active, id.clone())),
                    Entity::Stopping { .. } => None,
                })
                .min();
            let Some((_, id)) = lru else {
                return;
            };
            self.passivate(now, &id, "the active-entity limit is reached");
        }
    }

    fn passivate(&mut self, _now: Instant, id: &EntityId, why: &str) {
        if let Some(e @ Entity::Running { .. }) = self.entities.get_mut(id) {
            *e = Entity::Stopping {
                held: VecDeque::new(),
            };
            self.out.push_back(ShardOutput::StopEntity(id.clone()));
            self.log(LogLevel::Info, format!("passivating entity {id}: {why}"));
        }
    }

    fn on_entity_stopped(&mut self, now: Instant, id: EntityId) {
        let Some(entity) = self.entities.remove(&id) else {
            return;
        };
        if let Entity::Stopping { held } = entity
            && !held.is_empty()
        {
            if self.phase == Phase::Active {
                // Its messages go to its next incarnation.
                for msg in held {
                    self.deliver(now, id.clone(), msg);
                }
            } else {
                for msg in held {
                    self.out.push_back(ShardOutput::Bounce {
                        entity: id.clone(),
                        msg,
                    });
                }
            }
        }
        self.maybe_stopped();
    }

    /// Stops every entity at once (the stop message to each running one).
    fn stop_all(&mut self, now: Instant, why: Ended) {
        let running: Vec<EntityId> = self.running().cloned().collect();
        for id in &running {
            self.entities.insert(
                id.clone(),
                Entity::Stopping {
                    held: VecDeque::new(),
                },
            );
            self.out.push_back(ShardOutput::StopEntity(id.clone()));
        }
        let deadline = (why == Ended::HandedOff).then(|| now + self.settings.handoff_timeout);
        self.phase = Phase::Stopping { why, deadline };
        self.maybe_stopped();
    }

    /// Every entity has stopped: release the lease (hand-off) or end (lease lost).
    fn maybe_stopped(&mut self) {
        let Phase::Stopping { why, .. } = self.phase else {
            return;
        };
        if !self.entities.is_empty() {
            return;
        }
        match why {
            Ended::HandedOff => self.release(),
            Ended::LeaseLost => self.end(Ended::LeaseLost),
        }
    }

    fn release(&mut self) {
        if self.settings.use_lease {
            self.phase = Phase::Releasing;
            self.out.push_back(ShardOutput::ReleaseLease);
        } else {
            self.end(Ended::HandedOff);
        }
    }

    fn end(&mut self, why: Ended) {
        self.phase = Phase::Stopped;
        for (entity, msg) in std::mem::take(&mut self.held) {
            self.out.push_back(ShardOutput::Bounce { entity, msg });
        }
        self.out.push_back(ShardOutput::Ended(why));
    }

    fn on_lease_acquired(&mut self, now: Instant, granted: bool) {
        if !matches!(self.phase, Phase::AcquiringLease { asked: true, .. }) {
            return;
        }
        if granted {
            self.phase = Phase::Active;
            self.log(
                LogLevel::Info,
                format!("shard {} acquired its lease: starting", self.id),
            );
            for (entity, msg) in std::mem::take(&mut self.held) {
                self.deliver(now, entity, msg);
            }
        } else {
            let retry = self.settings.lease_retry_interval;
            self.log(
                LogLevel::Warn,
                format!(
                    "shard {} did not get its lease; trying again in {retry:?} ({} message(s) held)",
                    self.id,
                    self.held.len()
                ),
            );
            self.phase = Phase::AcquiringLease {
                asked: false,
                retry_at: Some(now + retry),
            };
        }
    }

    fn on_handoff(&mut self, now: Instant) {
        match self.phase {
            // Answered at once: what an unanswered acquisition may have granted is released
            // (and awaited); with no acquisition under way nothing is held.
            Phase::AcquiringLease { asked: true, .. } => {
                self.log(
                    LogLevel::Info,
                    format!("shard {} handed off while acquiring its lease", self.id),
                );
                self.release();
            }
            Phase::AcquiringLease { asked: false, .. } => self.end(Ended::HandedOff),
            Phase::Active => {
                self.log(
                    LogLevel::Info,
                    format!(
                        "shard {} handing off: stopping {} entities",
                        self.id,
                        self.entities.len()
                    ),
                );
                self.stop_all(now, Ended::HandedOff);
            }
            // Already on its way out; a lost lease ends it as a hand-off would.
            Phase::Stopping { .. } | Phase::Releasing | Phase::Stopped => {}
        }
    }
}

impl<M> StateMachine for Shard<M> {
    type Input = ShardInput<M>;
    type Output = ShardOutput<M>;

    fn handle(&mut self, now: Instant, input: ShardInput<M>) {
        match input {
            ShardInput::Deliver { entity, msg } => self.deliver(now, entity, msg),
            ShardInput::LeaseAcquired(granted) => self.on_lease_acquired(now, granted),
            ShardInput::LeaseLost => match self.phase {
                Phase::Active | Phase::Stopping { .. } => {
                    self.log(
                        LogLevel::Warn,
                        format!(
                            "shard {} lost its lease: stopping its {} entities at once",
                            self.id,
                            self.entities.len()
                        ),
                    );
                    self.stop_all(now, Ended::LeaseLost);
                }
                _ => {}
            },
            ShardInput::LeaseReleased => {
                if self.phase == Phase::Releasing {
                    self.end(Ended::HandedOff);
                }
            }
            ShardInput::EntityStopped(id) => self.on_entity_stopped(now, id),
            ShardInput::Passivate(id) => self.passivate(now, &id, "it asked to"),
            ShardInput::HandOff => self.on_handoff(now),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self.phase.clone() {
            Phase::AcquiringLease {
                asked: false,
                retry_at: Some(at),
            } if at <= now => {
                self.phase = Phase::AcquiringLease {
                    asked: true,
                    retry_at: None,
                };
                self.out.push_back(ShardOutput::AcquireLease);
            }
            Phase::Stopping {
                why: Ended::HandedOff,
                deadline: Some(at),
            } if at <= now => {
                self.log(
                    LogLevel::Warn,
                    format!(
                        "shard {}: {} entities did not stop within handoff-timeout; stopping them without their stop message (the hand-off ends when they have)",
                        self.id,
                        self.entities.len()
                    ),
                );
                let ids: Vec<EntityId> = self.entities.keys().cloned().collect();
                for id in ids {
                    self.out.push_back(ShardOutput::ForceStop(id));
                }
                self.phase = Phase::Stopping {
                    why: Ended::HandedOff,
                    deadline: None,
                };
            }
            Phase::Active => {
                if let Some(idle) = self.settings.idle_timeout {
                    let idle_ones: Vec<EntityId> = self
                        .entities
                        .iter()
                        .filter_map(|(id, e)| match e {
                            Entity::Running { last_active } if *last_active + idle <= now => {
                                Some(id.clone())
                            }
                            _ => None,
                        })
                        .collect();
                    for id in idle_ones {
                        self.passivate(now, &id, "idle for idle-timeout");
                    }
                }
            }
            _ => {}
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.phase {
            Phase::AcquiringLease { retry_at, .. } => *retry_at,
            Phase::Stopping { deadline, .. } => *deadline,
            Phase::Active => {
                let idle = self.settings.idle_timeout?;
                self.entities
                    .values()
                    .filter_map(|e| match e {
                        Entity::Running { last_active } => Some(*last_active + idle),
                        Entity::Stopping { .. } => None,
                    })
                    .min()
            }
            Phase::Releasing | Phase::Stopped => None,
        }
    }

    fn poll_output(&mut self) -> Option<ShardOutput<M>> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests;
