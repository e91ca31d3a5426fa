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
//!
//! Remember entities (optional): the shard keeps the ids of its entities in a store, so that
//! they run again wherever the shard runs next.
//!
//! ```text
//!  (lease granted) ─▶ Loading: LoadRemembered ─▶ RememberedLoaded(ids) ─▶ Active: every id
//!                     messages held; a failed     started at once, then the held messages
//!                     load is tried again
//!  first message for a new entity ─▶ UpdateRemembered{add} ─▶ StoreUpdated ─▶ StartEntity
//!  (its messages wait meanwhile)
//!  passivated (asked, idle, limit) ─▶ stopped ─▶ UpdateRemembered{remove}
//!  stopped on its own ─▶ started again after entity-restart-backoff
//!  hand-off, lost lease ─▶ stopped, still remembered (the next home starts them)
//! ```
//!
//! One update is in flight at a time; what changes meanwhile goes into the next one, and only
//! an entity's latest wish (remembered or not) is written, so updates never overtake each
//! other. A failed update is sent again after `store-retry-interval`. A hand-off ends only once
//! its removals are written (or, at the hand-off timeout, given up with a warning); a lost
//! lease ends at once, writing nothing more.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
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
    /// Whether entity ids are kept in a store and started again wherever the shard runs next
    /// (default false).
    pub remember_entities: bool,
    /// With remember entities, an entity that stopped without being passivated starts again
    /// after this long (default 10 s).
    pub entity_restart_backoff: Duration,
    /// How long after a failed store load or update it is tried again (default 2 s).
    pub store_retry_interval: Duration,
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
            remember_entities: false,
            entity_restart_backoff: Duration::from_secs(10),
            store_retry_interval: Duration::from_secs(2),
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
    /// The answer to [`ShardOutput::LoadRemembered`]: the remembered entity ids.
    RememberedLoaded(Vec<EntityId>),
    /// The update asked for by [`ShardOutput::UpdateRemembered`] is written.
    StoreUpdated,
    /// The store load or update under way failed (it is tried again later).
    StoreFailed,
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
    /// Read the remembered entity ids (answer [`ShardInput::RememberedLoaded`] or
    /// [`ShardInput::StoreFailed`]).
    LoadRemembered,
    /// Write these changes to the remembered entity ids (answer [`ShardInput::StoreUpdated`]
    /// or [`ShardInput::StoreFailed`]). Never two at once.
    UpdateRemembered {
        /// Ids to remember.
        add: BTreeSet<EntityId>,
        /// Ids to forget.
        remove: BTreeSet<EntityId>,
    },
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
    /// The lease was lost: stop the entity at once, without its stop message, abandoning the
    /// message in hand at its next await (it must not finish work it can no longer do under
    /// the lease). Answer [`ShardInput::EntityStopped`] once it has stopped.
    AbortEntity(EntityId),
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
    /// The lease is held (or none is used): the remembered entities are being read.
    Loading {
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
    /// Remember entities: waiting for its id to be written before it starts.
    Starting {
        held: VecDeque<M>,
    },
    /// Told to stop; messages for its next incarnation wait here. `forget`: it was passivated
    /// (with remember entities, its id is removed once it has stopped).
    Stopping {
        held: VecDeque<M>,
        forget: bool,
    },
    /// Remember entities: it stopped on its own and starts again at `until`.
    Backoff {
        until: Instant,
        held: VecDeque<M>,
    },
}

#[cfg(test)]
impl<M> Entity<M> {
    fn held(&self) -> usize {
        match self {
            Self::Running { .. } => 0,
            Self::Starting { held } | Self::Stopping { held, .. } | Self::Backoff { held, .. } => {
                held.len()
            }
        }
    }
}

/// The remembered-entities writes: one batch in flight, the next one gathering.
#[derive(Debug, Default)]
struct Store {
    /// Each entity's latest wish: remembered (`true`) or forgotten.
    pending: BTreeMap<EntityId, bool>,
    /// The update under way.
    writing: Option<(BTreeSet<EntityId>, BTreeSet<EntityId>)>,
    /// The update under way failed: send it again then.
    retry_at: Option<Instant>,
    /// Nothing more is written (the lease is lost).
    closed: bool,
}

impl Store {
    fn idle(&self) -> bool {
        self.pending.is_empty() && self.writing.is_none()
    }
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
    store: Store,
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
            store: Store::default(),
            out: VecDeque::new(),
        };
        if shard.settings.use_lease {
            shard.phase = Phase::AcquiringLease {
                asked: true,
                retry_at: None,
            };
            shard.out.push_back(ShardOutput::AcquireLease);
        } else {
            shard.begin();
        }
        shard
    }

    /// The lease is held, or none is used: load the remembered entities, or run.
    fn begin(&mut self) {
        if self.settings.remember_entities {
            self.phase = Phase::Loading {
                asked: true,
                retry_at: None,
            };
            self.out.push_back(ShardOutput::LoadRemembered);
        } else {
            self.phase = Phase::Active;
        }
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
            Phase::Loading { .. } => "loading-entities",
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
            Phase::AcquiringLease { .. } | Phase::Loading { .. } => {
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
            Some(
                Entity::Starting { held }
                | Entity::Stopping { held, .. }
                | Entity::Backoff { held, .. },
            ) => held.push_back(msg),
            None if self.settings.remember_entities => {
                self.make_room(now);
                self.entities.insert(
                    entity.clone(),
                    Entity::Starting {
                        held: VecDeque::from([msg]),
                    },
                );
                self.store.pending.insert(entity, true);
                self.flush();
            }
            None => {
                self.make_room(now);
                self.entities
                    .insert(entity.clone(), Entity::Running { last_active: now });
                self.out.push_back(ShardOutput::StartEntity(entity.clone()));
                self.out.push_back(ShardOutput::Deliver { entity, msg });
            }
        }
    }

    /// Starts `entity` now and delivers what waited for it.
    fn run(&mut self, now: Instant, entity: &EntityId, held: VecDeque<M>) {
        self.entities
            .insert(entity.clone(), Entity::Running { last_active: now });
        self.out.push_back(ShardOutput::StartEntity(entity.clone()));
        for msg in held {
            self.out.push_back(ShardOutput::Deliver {
                entity: entity.clone(),
                msg,
            });
        }
    }

    /// Sends the next remembered-entities update, unless one is under way or waits to be
    /// sent again.
    fn flush(&mut self) {
        if self.store.closed {
            self.store.pending.clear();
            return;
        }
        if self.store.writing.is_some() || self.store.pending.is_empty() {
            return;
        }
        let (mut add, mut remove) = (BTreeSet::new(), BTreeSet::new());
        for (id, remembered) in std::mem::take(&mut self.store.pending) {
            if remembered {
                add.insert(id);
            } else {
                remove.insert(id);
            }
        }
        self.store.writing = Some((add.clone(), remove.clone()));
        self.out
            .push_back(ShardOutput::UpdateRemembered { add, remove });
    }

    fn on_store_updated(&mut self, now: Instant) {
        let Some((add, _)) = self.store.writing.take() else {
            return;
        };
        self.store.retry_at = None;
        for id in add {
            if let Some(Entity::Starting { .. }) = self.entities.get(&id)
                && let Some(Entity::Starting { held }) = self.entities.remove(&id)
            {
                self.run(now, &id, held);
            }
        }
        self.flush();
        self.maybe_stopped();
    }

    fn on_store_failed(&mut self, now: Instant) {
        let retry = self.settings.store_retry_interval;
        match self.phase {
            Phase::Loading { asked: true, .. } => {
                self.log(
                    LogLevel::Warn,
                    format!(
                        "shard {}: the remembered entities could not be read; trying again in {retry:?} ({} message(s) held)",
                        self.id,
                        self.held.len()
                    ),
                );
                self.phase = Phase::Loading {
                    asked: false,
                    retry_at: Some(now + retry),
                };
            }
            _ if self.store.writing.is_some() && self.store.retry_at.is_none() => {
                self.log(
                    LogLevel::Warn,
                    format!(
                        "shard {}: the remembered entities could not be updated; trying again in {retry:?} (new entities wait meanwhile)",
                        self.id
                    ),
                );
                self.store.retry_at = Some(now + retry);
            }
            _ => {}
        }
    }

    fn on_loaded(&mut self, now: Instant, ids: Vec<EntityId>) {
        if !matches!(self.phase, Phase::Loading { asked: true, .. }) {
            return;
        }
        self.phase = Phase::Active;
        if !ids.is_empty() {
            self.log(
                LogLevel::Info,
                format!(
                    "shard {}: starting its {} remembered entities",
                    self.id,
                    ids.len()
                ),
            );
        }
        for id in ids {
            if !self.entities.contains_key(&id) {
                self.run(now, &id, VecDeque::new());
            }
        }
        for (entity, msg) in std::mem::take(&mut self.held) {
            self.deliver(now, entity, msg);
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
                    _ => None,
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
                forget: true,
            };
            self.out.push_back(ShardOutput::StopEntity(id.clone()));
            self.log(LogLevel::Info, format!("passivating entity {id}: {why}"));
        }
    }

    fn on_entity_stopped(&mut self, now: Instant, id: EntityId) {
        let Some(entity) = self.entities.remove(&id) else {
            return;
        };
        let remember = self.settings.remember_entities;
        match entity {
            Entity::Stopping { held, forget } => {
                if remember && forget {
                    self.store.pending.insert(id.clone(), false);
                }
                if self.phase == Phase::Active {
                    // Its messages go to its next incarnation.
                    for msg in held {
                        self.deliver(now, id.clone(), msg);
                    }
                } else {
                    self.bounce(&id, held);
                }
                self.flush();
            }
            Entity::Running { .. } if remember && self.phase == Phase::Active => {
                // Stopped on its own: a remembered entity runs until it is passivated.
                let backoff = self.settings.entity_restart_backoff;
                self.log(
                    LogLevel::Info,
                    format!("entity {id} stopped without being passivated: it starts again in {backoff:?}"),
                );
                self.entities.insert(
                    id,
                    Entity::Backoff {
                        until: now + backoff,
                        held: VecDeque::new(),
                    },
                );
            }
            other @ (Entity::Starting { .. } | Entity::Backoff { .. }) => {
                // Not running, so it cannot have stopped: a stale report changes nothing.
                self.entities.insert(id, other);
                return;
            }
            Entity::Running { .. } => {}
        }
        self.maybe_stopped();
    }

    fn bounce(&mut self, id: &EntityId, held: VecDeque<M>) {
        for msg in held {
            self.out.push_back(ShardOutput::Bounce {
                entity: id.clone(),
                msg,
            });
        }
    }

    /// Stops every entity at once (the stop message to each running one).
    fn stop_all(&mut self, now: Instant, why: Ended) {
        let lost = why == Ended::LeaseLost;
        // Without the lease, entities already stopping (a hand-off, a passivation) must not
        // finish what they are doing either.
        let stopping: Vec<EntityId> = self
            .entities
            .iter()
            .filter(|(_, e)| lost && matches!(e, Entity::Stopping { .. }))
            .map(|(id, _)| id.clone())
            .collect();
        let running: Vec<EntityId> = self.running().cloned().collect();
        for id in &running {
            self.entities.insert(
                id.clone(),
                Entity::Stopping {
                    held: VecDeque::new(),
                    forget: false,
                },
            );
        }
        let mut ids: Vec<EntityId> = running.into_iter().chain(stopping).collect();
        ids.sort();
        for id in ids {
            self.out.push_back(if lost {
                ShardOutput::AbortEntity(id)
            } else {
                ShardOutput::StopEntity(id)
            });
        }
        // Entities not running are dropped and their messages go back to the region: one
        // waiting for its restart stays remembered; one waiting for its id to be written never
        // ran, so it is not (its messages start it at the next home, which remembers it).
        let idle: Vec<EntityId> = self
            .entities
            .iter()
            .filter(|(_, e)| matches!(e, Entity::Starting { .. } | Entity::Backoff { .. }))
            .map(|(id, _)| id.clone())
            .collect();
        for id in idle {
            match self.entities.remove(&id) {
                Some(Entity::Starting { held }) => {
                    self.store.pending.insert(id.clone(), false);
                    self.bounce(&id, held);
                }
                Some(Entity::Backoff { held, .. }) => self.bounce(&id, held),
                _ => {}
            }
        }
        if why == Ended::LeaseLost && !self.store.idle() {
            self.log(
                LogLevel::Warn,
                format!(
                    "shard {} lost its lease with {} remembered-entities change(s) not confirmed: they may be lost",
                    self.id,
                    self.store.pending.len()
                        + self
                            .store
                            .writing
                            .as_ref()
                            .map_or(0, |(a, r)| a.len() + r.len())
                ),
            );
        }
        if why == Ended::LeaseLost {
            self.store = Store {
                closed: true,
                ..Store::default()
            };
        }
        self.flush();
        let deadline = (why == Ended::HandedOff).then(|| now + self.settings.handoff_timeout);
        self.phase = Phase::Stopping { why, deadline };
        self.maybe_stopped();
    }

    /// Every entity has stopped: release the lease (hand-off) or end (lease lost).
    fn maybe_stopped(&mut self) {
        let Phase::Stopping { why, .. } = self.phase else {
            return;
        };
        if !self.entities.is_empty() || !self.store.idle() {
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
            self.log(
                LogLevel::Info,
                format!("shard {} acquired its lease: starting", self.id),
            );
            self.begin();
            if self.phase == Phase::Active {
                for (entity, msg) in std::mem::take(&mut self.held) {
                    self.deliver(now, entity, msg);
                }
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
            // The lease is held; no entity has started yet.
            Phase::Loading { .. } => self.release(),
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
                Phase::Loading { .. } | Phase::Active | Phase::Stopping { .. } => {
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
            ShardInput::RememberedLoaded(ids) => self.on_loaded(now, ids),
            ShardInput::StoreUpdated => self.on_store_updated(now),
            ShardInput::StoreFailed => self.on_store_failed(now),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(at) = self.store.retry_at
            && at <= now
        {
            self.store.retry_at = None;
            if let Some((add, remove)) = self.store.writing.clone() {
                self.out
                    .push_back(ShardOutput::UpdateRemembered { add, remove });
            }
        }
        match self.phase.clone() {
            Phase::Loading {
                asked: false,
                retry_at: Some(at),
            } if at <= now => {
                self.phase = Phase::Loading {
                    asked: true,
                    retry_at: None,
                };
                self.out.push_back(ShardOutput::LoadRemembered);
            }
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
                if !self.store.idle() {
                    self.log(
                        LogLevel::Warn,
                        format!(
                            "shard {}: remembered-entities changes not written within handoff-timeout are given up: passivated entities may start again at the next home",
                            self.id
                        ),
                    );
                    self.store = Store::default();
                }
                self.phase = Phase::Stopping {
                    why: Ended::HandedOff,
                    deadline: None,
                };
                self.maybe_stopped();
            }
            Phase::Active => {
                let due: Vec<EntityId> = self
                    .entities
                    .iter()
                    .filter(|(_, e)| matches!(e, Entity::Backoff { until, .. } if *until <= now))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in due {
                    if let Some(Entity::Backoff { held, .. }) = self.entities.remove(&id) {
                        self.run(now, &id, held);
                    }
                }
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
        let phase = match &self.phase {
            Phase::AcquiringLease { retry_at, .. } | Phase::Loading { retry_at, .. } => *retry_at,
            Phase::Stopping { deadline, .. } => *deadline,
            Phase::Active => {
                let idle = self.settings.idle_timeout;
                self.entities
                    .values()
                    .filter_map(|e| match e {
                        Entity::Running { last_active } => idle.map(|i| *last_active + i),
                        Entity::Backoff { until, .. } => Some(*until),
                        Entity::Starting { .. } | Entity::Stopping { .. } => None,
                    })
                    .min()
            }
            Phase::Releasing | Phase::Stopped => None,
        };
        [phase, self.store.retry_at].into_iter().flatten().min()
    }

    fn poll_output(&mut self) -> Option<ShardOutput<M>> {
        self.out.pop_front()
    }
}

#[cfg(test)]
mod tests;
