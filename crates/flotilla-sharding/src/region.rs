//! A shard region on a running node: the pure [`Region`] and its [`Shard`]s inside one actor,
//! whose children are the entities.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use flotilla_actor::{
    Actor, ActorError, ActorId, ActorRef, Context, Props, RemoteMessage, ReplyTo, Terminated,
};
use flotilla_cluster::Cluster;
use flotilla_core::{Address, ShardingSettings, StateMachine, UniqueAddress};
use flotilla_lease::{AcquireOutcome, Lease, LeaseClient, LeaseName, ReleaseOutcome};
use flotilla_proto::cluster::LogLevel;
use flotilla_proto::cluster::singleton;
use flotilla_proto::sharding::{
    Ended, EntityId, Region, RegionInput, RegionOutput, Shard, ShardId, ShardInput, ShardOutput,
    ShardSettings, ToRegion, shard_of,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::coordinator::{CoordinatorMsg, now};
use crate::store::RememberEntitiesStore;
use crate::wire::{WireToCoordinator, WireToRegion};
use crate::{EntityContext, RegionState};

/// Where the region of `type_name` lives on the node at `node`.
pub(crate) fn region_path(node: &Address, type_name: &str) -> String {
    format!("{node}/user/sharding-{type_name}")
}

/// What a region receives.
#[derive(Serialize, Deserialize)]
#[serde(bound(serialize = "M: Serialize", deserialize = "M: DeserializeOwned"))]
pub(crate) enum RegionMsg<M> {
    /// For an entity of a shard this region hosts (or should know the home of).
    Deliver {
        shard: String,
        entity: String,
        msg: M,
    },
    /// From the coordinator (its unique address).
    FromCoordinator { from: String, msg: WireToRegion },
    /// How many shards and running entities this region has.
    Stats(ReplyTo<(usize, usize)>),
    #[serde(skip)]
    Local(RegionLocal<M>),
}

impl<M> RegionMsg<M> {
    /// Everything but messages for entities and the request to leave: the coordinator's
    /// protocol, lease and store answers, timers and queries. They go ahead of entity traffic
    /// in the region's mailbox, so that a region flooded with messages still answers a
    /// hand-off at once. Leave stays behind the traffic sent before it, so that the leaving
    /// region passes on every message it was given before it says it is done.
    pub(crate) fn is_control(&self) -> bool {
        !matches!(
            self,
            Self::Deliver { .. } | Self::Local(RegionLocal::Tell { .. } | RegionLocal::Leave(_))
        )
    }
}

impl<M: Serialize + DeserializeOwned + Send + 'static> RemoteMessage for RegionMsg<M> {
    const MANIFEST: &'static str = "flotilla.ShardRegion";
}

pub(crate) enum RegionLocal<M> {
    /// From an `EntityRef` on this node.
    Tell {
        entity: String,
        msg: M,
    },
    /// Where the coordinator runs now (the oldest member with the role).
    CoordinatorAt(Option<UniqueAddress>),
    LeaseAcquired {
        shard: ShardId,
        generation: u64,
        granted: bool,
    },
    LeaseLost {
        shard: ShardId,
        generation: u64,
    },
    LeaseReleased {
        shard: ShardId,
        generation: u64,
    },
    Passivate {
        shard: ShardId,
        entity: EntityId,
    },
    /// The remember-entities store answered a shard (RememberedLoaded, StoreUpdated or
    /// StoreFailed).
    Store {
        shard: ShardId,
        generation: u64,
        answer: ShardInput<M>,
    },
    Leave(oneshot::Sender<()>),
    /// A member was removed from the cluster.
    Gone(UniqueAddress),
    State(oneshot::Sender<RegionState>),
    Tick,
}

/// The stop message entities get on hand-off and passivation (`None`: they are stopped).
pub(crate) type StopMessage<M> = Option<Arc<dyn Fn() -> M + Send + Sync>>;

/// Makes an entity's props.
pub(crate) type Factory<A> =
    Arc<dyn Fn(&EntityContext<<A as Actor>::Msg>) -> Props<A> + Send + Sync>;

/// What the user gave about the entity type.
pub(crate) struct EntityParts<A: Actor> {
    pub(crate) factory: Factory<A>,
    pub(crate) stop_message: StopMessage<A::Msg>,
    pub(crate) lease_client: Option<LeaseClient>,
    pub(crate) store: Option<Arc<dyn RememberEntitiesStore>>,
}

struct ShardDriver<M> {
    machine: Shard<M>,
    lease: Option<Lease>,
    generation: u64,
}

pub(crate) struct RegionActor<A: Actor> {
    type_name: String,
    me: UniqueAddress,
    settings: ShardingSettings,
    machine: Region<A::Msg>,
    factory: Factory<A>,
    stop_message: StopMessage<A::Msg>,
    coordinator: ActorRef<CoordinatorMsg>,
    cluster: Cluster,
    lease_client: Option<LeaseClient>,
    store: Option<Arc<dyn RememberEntitiesStore>>,
    shards: BTreeMap<ShardId, ShardDriver<A::Msg>>,
    /// Shards whose machine took an input since its outputs were last carried out.
    dirty: VecDeque<ShardId>,
    entities: BTreeMap<(ShardId, EntityId), ActorRef<A::Msg>>,
    by_actor: BTreeMap<ActorId, (ShardId, EntityId)>,
    leave_waiters: Vec<oneshot::Sender<()>>,
    done: bool,
    next_generation: u64,
}

impl<A: Actor> RegionActor<A>
where
    A::Msg: Serialize + DeserializeOwned,
{
    pub(crate) fn new(
        type_name: String,
        cluster: Cluster,
        settings: ShardingSettings,
        hosts_shards: bool,
        parts: EntityParts<A>,
        coordinator: ActorRef<CoordinatorMsg>,
    ) -> Self {
        let EntityParts {
            factory,
            stop_message,
            lease_client,
            store,
        } = parts;
        let me = cluster.self_node().clone();
        let machine = Region::new(
            me.clone(),
            flotilla_proto::sharding::RegionSettings {
                hosts_shards,
                retry_interval: settings.retry_interval,
                buffer_size: settings.buffer_size,
                remember_entities: store.is_some(),
            },
        );
        Self {
            type_name,
            me,
            settings,
            machine,
            factory,
            stop_message,
            coordinator,
            cluster,
            lease_client,
            store,
            shards: BTreeMap::new(),
            dirty: VecDeque::new(),
            entities: BTreeMap::new(),
            by_actor: BTreeMap::new(),
            leave_waiters: Vec::new(),
            done: false,
            next_generation: 0,
        }
    }

    fn shard_settings(&self) -> ShardSettings {
        let s = &self.settings;
        // Remembered entities run until they passivate themselves (as in Akka).
        let remember = self.store.is_some();
        ShardSettings {
            use_lease: s.use_lease && self.lease_client.is_some(),
            lease_retry_interval: s.lease_retry_interval,
            handoff_timeout: s.handoff_timeout,
            idle_timeout: (!remember && !s.passivation_idle_timeout.is_zero())
                .then_some(s.passivation_idle_timeout),
            active_entity_limit: (!remember && s.active_entity_limit > 0)
                .then_some(s.active_entity_limit),
            buffer_limit: s.buffer_size,
            remember_entities: remember,
            entity_restart_backoff: s.entity_restart_backoff,
            store_retry_interval: s.retry_interval,
        }
    }

    /// The lease of `shard`: `<system>-shard-<type>-<shard>`, lower-cased, other characters
    /// as `-`.
    fn lease_for(&self, shard: &ShardId) -> Option<Lease> {
        let client = self.lease_client.as_ref()?;
        let raw = format!(
            "{}-shard-{}-{}",
            self.me.address.system(),
            self.type_name,
            shard
        );
        let name: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        match LeaseName::new(&name)
            .map_err(|e| e.to_string())
            .and_then(|n| client.lease(n).map_err(|e| e.to_string()))
        {
            Ok(lease) => Some(lease),
            Err(e) => {
                tracing::error!(entity_type = %self.type_name, "no lease for shard {shard} ({name}): {e}");
                None
            }
        }
    }

    fn region_input(&mut self, ctx: &mut Context<RegionMsg<A::Msg>>, input: RegionInput<A::Msg>) {
        self.machine.handle(now(), input);
        self.pump(ctx);
    }

    /// Carries out what the region machine and its shards' machines ask for until neither has
    /// anything left. One loop, not calls into each other: releasing many held messages at once
    /// (every one a ToShard, every shard answering) must not nest one call per message — it
    /// once overflowed the stack with a few thousand held messages.
    fn pump(&mut self, ctx: &mut Context<RegionMsg<A::Msg>>) {
        loop {
            let mut busy = false;
            while let Some(out) = self.machine.poll_output() {
                busy = true;
                self.on_region_output(ctx, out);
            }
            while let Some(shard) = self.dirty.pop_front() {
                busy = true;
                self.drain_shard(ctx, &shard);
            }
            if !busy {
                return;
            }
        }
    }

    /// Gives a shard machine an input; its outputs are carried out by [`Self::pump`].
    fn feed(&mut self, shard: &ShardId, input: ShardInput<A::Msg>) {
        if let Some(d) = self.shards.get_mut(shard) {
            d.machine.handle(now(), input);
            self.dirty.push_back(shard.clone());
        }
    }

    fn on_region_output(&mut self, ctx: &Context<RegionMsg<A::Msg>>, out: RegionOutput<A::Msg>) {
        match out {
            RegionOutput::ToCoordinator { msg, .. } => {
                self.coordinator.tell(CoordinatorMsg::FromRegion {
                    from: self.me.to_string(),
                    msg: WireToCoordinator::from(&msg),
                });
            }
            RegionOutput::StartShard(shard) => {
                self.next_generation += 1;
                let driver = ShardDriver {
                    machine: Shard::new(&shard.0, self.shard_settings()),
                    lease: if self.settings.use_lease {
                        self.lease_for(&shard)
                    } else {
                        None
                    },
                    generation: self.next_generation,
                };
                metrics::gauge!("flotilla_sharding_shards", "entity_type" => self.type_name.clone())
                        .increment(1.0);
                self.shards.insert(shard.clone(), driver);
                self.dirty.push_back(shard);
                self.update_waiting();
            }
            RegionOutput::HandOffShard(shard) => self.feed(&shard, ShardInput::HandOff),
            RegionOutput::ToShard { shard, entity, msg } => {
                self.feed(&shard, ShardInput::Deliver { entity, msg });
            }
            RegionOutput::Forward {
                to,
                shard,
                entity,
                msg,
            } => {
                let path = region_path(&to.address, &self.type_name);
                match ctx.system().remote_ref::<RegionMsg<A::Msg>>(&path) {
                    Ok(region) => region.tell(RegionMsg::Deliver {
                        shard: shard.0,
                        entity,
                        msg,
                    }),
                    Err(e) => tracing::warn!("cannot reach region {path}: {e}"),
                }
            }
            RegionOutput::Dropped { entity, .. } => {
                metrics::counter!("flotilla_sharding_dropped_total", "reason" => "buffer-full")
                    .increment(1);
                tracing::warn!(entity_type = %self.type_name, "message for entity {entity} dropped: the region's buffer ({}) is full", self.settings.buffer_size);
            }
            RegionOutput::Done => {
                self.done = true;
                for w in self.leave_waiters.drain(..) {
                    let _ = w.send(());
                }
            }
            RegionOutput::Log { level, text } => log(&self.type_name, level, &text),
        }
    }

    fn shard_input(
        &mut self,
        ctx: &mut Context<RegionMsg<A::Msg>>,
        shard: &ShardId,
        input: ShardInput<A::Msg>,
    ) {
        self.feed(shard, input);
        self.pump(ctx);
    }

    /// Carries out a shard machine's outputs (a shard that ended tells the region machine,
    /// whose outputs [`Self::pump`] takes next).
    fn drain_shard(&mut self, ctx: &mut Context<RegionMsg<A::Msg>>, shard: &ShardId) {
        loop {
            let Some(d) = self.shards.get_mut(shard) else {
                return;
            };
            let Some(out) = d.machine.poll_output() else {
                break;
            };
            let generation = d.generation;
            match out {
                ShardOutput::AcquireLease => {
                    let me = ctx.myself().clone();
                    let shard = shard.clone();
                    match d.lease.clone() {
                        Some(lease) => {
                            tokio::spawn(async move {
                                let lost_to = me.clone();
                                let lost_shard = shard.clone();
                                let started = std::time::Instant::now();
                                let outcome = lease
                                    .acquire(move |cause| {
                                        tracing::warn!(
                                            "shard {lost_shard} lost its lease: {cause}"
                                        );
                                        lost_to.tell(RegionMsg::Local(RegionLocal::LeaseLost {
                                            shard: lost_shard,
                                            generation,
                                        }));
                                    })
                                    .await;
                                let granted = matches!(outcome, AcquireOutcome::Granted { .. });
                                metrics::histogram!("flotilla_sharding_lease_acquire_seconds")
                                    .record(started.elapsed().as_secs_f64());
                                if !granted {
                                    metrics::counter!(
                                        "flotilla_sharding_lease_acquire_failures_total"
                                    )
                                    .increment(1);
                                    tracing::info!(
                                        "shard {shard}: lease {} not acquired: {outcome:?}",
                                        lease.name()
                                    );
                                }
                                me.tell(RegionMsg::Local(RegionLocal::LeaseAcquired {
                                    shard,
                                    generation,
                                    granted,
                                }));
                            });
                        }
                        None => me.tell(RegionMsg::Local(RegionLocal::LeaseAcquired {
                            shard,
                            generation,
                            granted: false,
                        })),
                    }
                }
                ShardOutput::ReleaseLease => {
                    let me = ctx.myself().clone();
                    let shard = shard.clone();
                    let lease = d.lease.clone();
                    tokio::spawn(async move {
                        if let Some(lease) = lease {
                            let started = std::time::Instant::now();
                            match lease.release().await {
                                ReleaseOutcome::Released | ReleaseOutcome::NotHeld => {}
                                failed => {
                                    metrics::counter!(
                                        "flotilla_sharding_lease_release_failures_total"
                                    )
                                    .increment(1);
                                    tracing::warn!(
                                        "shard {shard}: releasing lease {} (owner {}) failed: {failed:?}; no other node can start this shard until the lease expires",
                                        lease.name(),
                                        lease.owner()
                                    );
                                }
                            }
                            metrics::histogram!("flotilla_sharding_lease_release_seconds")
                                .record(started.elapsed().as_secs_f64());
                        }
                        me.tell(RegionMsg::Local(RegionLocal::LeaseReleased {
                            shard,
                            generation,
                        }));
                    });
                }
                ShardOutput::LoadRemembered => {
                    let (me, shard, type_name) =
                        (ctx.myself().clone(), shard.clone(), self.type_name.clone());
                    let store = self.store.clone();
                    tokio::spawn(async move {
                        let answer = match store {
                            Some(store) => match store.entities(&type_name, &shard.0).await {
                                Ok(ids) => ShardInput::RememberedLoaded(ids.into_iter().collect()),
                                Err(e) => {
                                    store_failed(&type_name, &shard, &e);
                                    ShardInput::StoreFailed
                                }
                            },
                            None => ShardInput::RememberedLoaded(Vec::new()),
                        };
                        me.tell(RegionMsg::Local(RegionLocal::Store {
                            shard,
                            generation,
                            answer,
                        }));
                    });
                }
                ShardOutput::UpdateRemembered { add, remove } => {
                    let (me, shard, type_name) =
                        (ctx.myself().clone(), shard.clone(), self.type_name.clone());
                    let store = self.store.clone();
                    tokio::spawn(async move {
                        let started = std::time::Instant::now();
                        let answer = match store {
                            Some(store) => {
                                match store.update(&type_name, &shard.0, &add, &remove).await {
                                    Ok(()) => ShardInput::StoreUpdated,
                                    Err(e) => {
                                        store_failed(&type_name, &shard, &e);
                                        ShardInput::StoreFailed
                                    }
                                }
                            }
                            None => ShardInput::StoreUpdated,
                        };
                        metrics::histogram!("flotilla_sharding_remember_update_seconds")
                            .record(started.elapsed().as_secs_f64());
                        me.tell(RegionMsg::Local(RegionLocal::Store {
                            shard,
                            generation,
                            answer,
                        }));
                    });
                }
                ShardOutput::StartEntity(entity) => self.start_entity(ctx, shard, entity),
                ShardOutput::Deliver { entity, msg } => {
                    // As for a start, a message is delivered only under a lease held now: a
                    // process that was paused (SIGSTOP, a stalled machine) resumes with its
                    // mailbox full and its timers not yet run, the loss of the lease still on
                    // its way. The message goes back to the region, which holds it until the
                    // shard has ended and then asks where the shard lives.
                    let lease_gone = self
                        .shards
                        .get(shard)
                        .and_then(|d| d.lease.as_ref())
                        .is_some_and(|l| !l.check_lease());
                    if lease_gone {
                        tracing::warn!(entity_type = %self.type_name, "shard {shard}: a message for {entity} not delivered: the shard's lease is no longer held; stopping the shard");
                        self.machine.handle(
                            now(),
                            RegionInput::Bounced {
                                shard: shard.clone(),
                                entity,
                                msg,
                            },
                        );
                        self.feed(shard, ShardInput::LeaseLost);
                    } else if let Some(e) = self.entities.get(&(shard.clone(), entity)) {
                        e.tell(msg);
                    } else {
                        // Its start was refused (the lease ran out, or spawning failed).
                        metrics::counter!("flotilla_sharding_dropped_total", "reason" => "entity-not-started")
                            .increment(1);
                    }
                }
                ShardOutput::StopEntity(entity) => {
                    if let Some(e) = self.entities.get(&(shard.clone(), entity)) {
                        match &self.stop_message {
                            Some(make) => e.tell(make()),
                            None => e.stop(),
                        }
                    }
                }
                ShardOutput::ForceStop(entity) => {
                    if let Some(e) = self.entities.get(&(shard.clone(), entity)) {
                        e.stop();
                    }
                }
                ShardOutput::AbortEntity(entity) => {
                    if let Some(e) = self.entities.get(&(shard.clone(), entity)) {
                        e.stop_now();
                    }
                }
                ShardOutput::Bounce { entity, msg } => {
                    self.machine.handle(
                        now(),
                        RegionInput::Bounced {
                            shard: shard.clone(),
                            entity,
                            msg,
                        },
                    );
                }
                ShardOutput::Dropped { entity, .. } => {
                    metrics::counter!("flotilla_sharding_dropped_total", "reason" => "shard-buffer-full")
                        .increment(1);
                    tracing::warn!(
                        "shard {shard}: message for {entity} dropped: buffer full while acquiring the lease"
                    );
                }
                ShardOutput::Ended(why) => {
                    self.shards.remove(shard);
                    metrics::gauge!("flotilla_sharding_shards", "entity_type" => self.type_name.clone())
                        .decrement(1.0);
                    self.machine.handle(
                        now(),
                        RegionInput::ShardEnded {
                            shard: shard.clone(),
                            why,
                        },
                    );
                    if why == Ended::LeaseLost {
                        metrics::counter!("flotilla_sharding_lease_lost_total").increment(1);
                    }
                    if why == Ended::HandedOff {
                        metrics::counter!("flotilla_sharding_handoffs_total", "entity_type" => self.type_name.clone())
                            .increment(1);
                    }
                    self.update_waiting();
                    break;
                }
                ShardOutput::Log { level, text } => log(&self.type_name, level, &text),
            }
        }
    }

    fn start_entity(
        &mut self,
        ctx: &mut Context<RegionMsg<A::Msg>>,
        shard: &ShardId,
        entity: EntityId,
    ) {
        let ectx = EntityContext {
            entity_id: entity.clone(),
            shard_id: shard.clone(),
            region: ctx.myself().clone(),
            lease: self.shards.get(shard).and_then(|d| d.lease.clone()),
        };
        // The shard machine starts entities only once the lease is granted, but the lease may
        // have run out since (a renewal that could not be made in time) with the loss still on
        // its way here: no entity may start without its lease.
        if let Some(lease) = &ectx.lease
            && !lease.check_lease()
        {
            tracing::warn!(entity_type = %self.type_name, "shard {shard}: entity {entity} not started: the shard's lease {} is no longer held; stopping the shard", lease.name());
            self.feed(shard, ShardInput::EntityStopped(entity));
            self.feed(shard, ShardInput::LeaseLost);
            return;
        }
        let props = (self.factory)(&ectx);
        match ctx.spawn_anonymous(props) {
            Ok(r) => {
                ctx.watch(&r);
                self.by_actor
                    .insert(r.id(), (shard.clone(), entity.clone()));
                self.entities.insert((shard.clone(), entity), r);
            }
            Err(e) => {
                tracing::error!(entity_type = %self.type_name, "entity {entity} could not start: {e}");
                // Carried out by the pump this runs in.
                self.feed(shard, ShardInput::EntityStopped(entity));
            }
        }
    }
}

/// How often the region's and its shards' timers are checked. A fixed tick, not each machine's
/// next deadline: finding that deadline is a walk over every shard and entity, too much to do
/// for every message; every deadline here is a second or more, so 100 ms late is harmless.
const TICK: std::time::Duration = std::time::Duration::from_millis(100);

fn arm<M: Send + 'static>(ctx: &mut Context<RegionMsg<M>>) {
    ctx.timers()
        .start_single("tick", RegionMsg::Local(RegionLocal::Tick), TICK);
}

fn store_failed(type_name: &str, shard: &ShardId, e: &crate::StoreError) {
    metrics::counter!("flotilla_sharding_remember_store_failures_total").increment(1);
    tracing::warn!(entity_type = %type_name, "shard {shard}: {e}");
}

fn log(type_name: &str, level: LogLevel, text: &str) {
    match level {
        LogLevel::Info => tracing::info!(entity_type = %type_name, "sharding {type_name}: {text}"),
        LogLevel::Warn => tracing::warn!(entity_type = %type_name, "sharding {type_name}: {text}"),
    }
}

impl<A: Actor> Actor for RegionActor<A>
where
    A::Msg: Serialize + DeserializeOwned,
{
    type Msg = RegionMsg<A::Msg>;

    async fn pre_start(&mut self, ctx: &mut Context<Self::Msg>) -> Result<(), ActorError> {
        arm(ctx);
        // The coordinator runs on the oldest member with the role: follow it.
        let me = ctx.myself().clone();
        let role = self.settings.role.clone();
        let mut last: Option<Option<UniqueAddress>> = None;
        crate::follow_members(&self.cluster, move |state, gone| {
            for node in gone {
                me.tell(RegionMsg::Local(RegionLocal::Gone(node)));
            }
            let oldest = singleton::oldest(&state.members, &role).map(|m| m.node.clone());
            if last.as_ref() != Some(&oldest) {
                me.tell(RegionMsg::Local(RegionLocal::CoordinatorAt(oldest.clone())));
                last = Some(oldest);
            }
            !me.is_stopped()
        });
        Ok(())
    }

    async fn handle(
        &mut self,
        msg: Self::Msg,
        ctx: &mut Context<Self::Msg>,
    ) -> Result<(), ActorError> {
        match msg {
            RegionMsg::Deliver { shard, entity, msg } => {
                // Only ever sent by another region, forwarding.
                self.region_input(
                    ctx,
                    RegionInput::Forwarded {
                        shard: ShardId(shard),
                        entity,
                        msg,
                    },
                );
            }
            RegionMsg::FromCoordinator { from, msg } => {
                let parsed = ToRegion::try_from(msg);
                match (from.parse::<UniqueAddress>(), parsed) {
                    (Ok(from), Ok(msg)) => {
                        tracing::debug!(entity_type = %self.type_name, "from the coordinator at {from}: {msg:?}");
                        self.region_input(ctx, RegionInput::FromCoordinator { from, msg });
                    }
                    (Err(e), _) => bad(&format!("sender {from:?}: {e}")),
                    (_, Err(e)) => bad(&e),
                }
            }
            RegionMsg::Stats(reply) => {
                reply.send((self.machine.local_shards().len(), self.entities.len()));
            }
            RegionMsg::Local(local) => self.on_local(ctx, local),
        }
        Ok(())
    }

    async fn on_terminated(
        &mut self,
        t: Terminated,
        ctx: &mut Context<Self::Msg>,
    ) -> Result<(), ActorError> {
        if let Some((shard, entity)) = self.by_actor.remove(&t.id) {
            self.entities.remove(&(shard.clone(), entity.clone()));
            self.shard_input(ctx, &shard, ShardInput::EntityStopped(entity));
        }
        Ok(())
    }

    async fn post_stop(&mut self, _ctx: &mut Context<Self::Msg>) {
        for w in self.leave_waiters.drain(..) {
            let _ = w.send(());
        }
    }
}

fn bad(why: &str) {
    metrics::counter!("flotilla_sharding_dropped_total", "reason" => "undecodable").increment(1);
    tracing::warn!("shard region dropped a coordinator message: {why}");
}

impl<A: Actor> RegionActor<A>
where
    A::Msg: Serialize + DeserializeOwned,
{
    fn on_local(&mut self, ctx: &mut Context<RegionMsg<A::Msg>>, local: RegionLocal<A::Msg>) {
        match local {
            RegionLocal::Tell { entity, msg } => {
                let shard = shard_of(&entity, self.settings.number_of_shards);
                self.region_input(ctx, RegionInput::Deliver { shard, entity, msg });
            }
            RegionLocal::CoordinatorAt(at) => {
                self.region_input(ctx, RegionInput::Coordinator(at));
            }
            RegionLocal::LeaseAcquired {
                shard,
                generation,
                granted,
            } => {
                if self.current(&shard, generation) {
                    self.shard_input(ctx, &shard, ShardInput::LeaseAcquired(granted));
                }
                self.update_waiting();
            }
            RegionLocal::LeaseLost { shard, generation } => {
                if self.current(&shard, generation) {
                    self.shard_input(ctx, &shard, ShardInput::LeaseLost);
                }
            }
            RegionLocal::LeaseReleased { shard, generation } => {
                if self.current(&shard, generation) {
                    self.shard_input(ctx, &shard, ShardInput::LeaseReleased);
                }
            }
            RegionLocal::Passivate { shard, entity } => {
                self.shard_input(ctx, &shard, ShardInput::Passivate(entity));
            }
            RegionLocal::Store {
                shard,
                generation,
                answer,
            } => {
                if self.current(&shard, generation) {
                    self.shard_input(ctx, &shard, answer);
                }
            }
            RegionLocal::Gone(node) => self.region_input(ctx, RegionInput::Gone(node)),
            RegionLocal::Leave(done) => {
                if self.done {
                    let _ = done.send(());
                } else {
                    self.leave_waiters.push(done);
                    self.region_input(ctx, RegionInput::Leave);
                }
            }
            RegionLocal::State(reply) => {
                let mut shards: BTreeMap<String, Vec<String>> = self
                    .machine
                    .local_shards()
                    .iter()
                    .map(|s| (s.0.clone(), Vec::new()))
                    .collect();
                for (shard, entity) in self.entities.keys() {
                    shards
                        .entry(shard.0.clone())
                        .or_default()
                        .push(entity.clone());
                }
                let _ = reply.send(RegionState {
                    shards,
                    held: self.machine.held(),
                    registered: self.machine.is_registered(),
                    coordinator: self.machine.coordinator().map(ToString::to_string),
                });
            }
            RegionLocal::Tick => {
                self.machine.handle_timeout(now());
                for (id, d) in &mut self.shards {
                    d.machine.handle_timeout(now());
                    self.dirty.push_back(id.clone());
                }
                self.pump(ctx);
                arm(ctx);
            }
        }
    }

    /// The gauge of shards waiting for their lease (updated when a lease answer or a shard's
    /// start or end may have changed it).
    fn update_waiting(&self) {
        let waiting = self
            .shards
            .values()
            .filter(|d| d.machine.phase_name() == "acquiring-lease")
            .count();
        #[allow(clippy::cast_precision_loss)] // a count of shards
        metrics::gauge!("flotilla_sharding_shards_waiting_for_lease", "entity_type" => self.type_name.clone())
            .set(waiting as f64);
    }

    fn current(&self, shard: &ShardId, generation: u64) -> bool {
        self.shards
            .get(shard)
            .is_some_and(|d| d.generation == generation)
    }
}
