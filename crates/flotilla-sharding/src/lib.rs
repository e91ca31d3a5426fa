//! Cluster sharding for Flotilla: entities addressed by id, placed in shards, shards placed on
//! the cluster's nodes and moved as nodes come and go — with, optionally, a lease per shard so
//! that a shard runs on at most one node at a time.
//!
//! ```text
//!  EntityRef::tell ─▶ region (this node) ─▶ shard home here: the shard ─▶ the entity (a child)
//!                                        └▶ home elsewhere: that node's region
//!                                        └▶ unknown: held, the coordinator asked
//!  coordinator: a cluster singleton (on the oldest member with the role), driving the pure
//!  ShardCoordinator; regions register with it and re-register when it moves.
//! ```
//!
//! Start it on every node with [`ClusterSharding::start`]; nodes without the role run a proxy
//! region that only routes. Every decision is a pure machine in
//! [`flotilla_proto::sharding`]; this crate carries their messages and does what they ask.
//!
//! Coordinated shutdown's `cluster-sharding-shutdown-region` phase hands every shard of the
//! node off (entities stopped, leases released and awaited) before the node leaves.

mod coordinator;
mod region;
pub mod store;
mod wire;

use std::sync::Arc;
use std::time::Duration;

use flotilla_actor::{
    Actor, ActorRef, ActorSystem, AskError, Phase, Props, RemoteMessage, ReplyTo, SpawnError,
    SupervisorStrategy,
};
use flotilla_cluster::{Cluster, ClusterSingleton, SingletonError};
use flotilla_core::{ShardingSettings, SingletonConfig};
use flotilla_lease::{FencingToken, Lease, LeaseBackend, LeaseClient, LeaseRecord};
use flotilla_proto::sharding::{
    CoordinatorSettings, LeastShardAllocation, ShardCoordinator, ShardId,
};
use tokio::sync::oneshot;

use coordinator::{CoordinatorActor, now};
use region::{Factory, RegionActor, RegionLocal, RegionMsg, StopMessage};
pub use store::{MemoryEntityStore, RememberEntitiesStore, StoreError};

/// Why sharding could not start for an entity type.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShardingError {
    /// The region actor could not be spawned (the type name is taken or not a valid name).
    #[error("cannot start the shard region of {type_name:?}: {source}")]
    Spawn {
        /// The entity type.
        type_name: String,
        /// Why.
        source: SpawnError,
    },
    /// The coordinator's singleton could not start.
    #[error("cannot start the shard coordinator: {0}")]
    Coordinator(#[from] SingletonError),
    /// The `[sharding]` settings are not valid.
    #[error("invalid sharding settings: {0}")]
    Config(String),
    /// Coordinated shutdown has already begun.
    #[error("coordinated shutdown has already begun")]
    ShuttingDown,
}

/// What an entity knows of itself: its id, its shard, a way to ask for its own passivation,
/// and its shard's fencing token when leases are on.
pub struct EntityContext<M: Send + 'static> {
    entity_id: String,
    shard_id: ShardId,
    region: ActorRef<RegionMsg<M>>,
    lease: Option<Lease>,
}

impl<M: Send + 'static> EntityContext<M> {
    /// The entity's id.
    pub fn entity_id(&self) -> &str {
        &self.entity_id
    }

    /// Its shard's id.
    pub fn shard_id(&self) -> &str {
        &self.shard_id.0
    }

    /// Asks the shard to passivate this entity: it is sent its stop message, and messages that
    /// arrive meanwhile start its next incarnation. Cheap to clone into the actor.
    pub fn passivator(&self) -> Passivator<M> {
        Passivator {
            region: self.region.clone(),
            shard: self.shard_id.clone(),
            entity: self.entity_id.clone(),
        }
    }

    /// The shard's lease, to read its fencing token before a write to an external store
    /// ([`Lease::token`]); `None` without leases.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// The fencing token of the shard's current lease hold, if any.
    pub fn fencing_token(&self) -> Option<FencingToken> {
        self.lease.as_ref().and_then(Lease::token)
    }
}

/// Asks for one entity's passivation (see [`EntityContext::passivator`]).
pub struct Passivator<M: Send + 'static> {
    region: ActorRef<RegionMsg<M>>,
    shard: ShardId,
    entity: String,
}

impl<M: Send + 'static> Clone for Passivator<M> {
    fn clone(&self) -> Self {
        Self {
            region: self.region.clone(),
            shard: self.shard.clone(),
            entity: self.entity.clone(),
        }
    }
}

impl<M: Send + 'static> Passivator<M> {
    /// Passivates the entity.
    pub fn passivate(&self) {
        self.region.tell(RegionMsg::Local(RegionLocal::Passivate {
            shard: self.shard.clone(),
            entity: self.entity.clone(),
        }));
    }
}

/// One entity type: its name, how its entities are made, and options.
///
/// ```no_run
/// # use flotilla_actor::{Actor, ActorError, Context, Props, ReplyTo, RemoteMessage};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Msg;
/// # impl RemoteMessage for Msg { const MANIFEST: &'static str = "doc.Msg"; }
/// # struct Account(u64);
/// # impl Actor for Account { type Msg = Msg;
/// #   async fn handle(&mut self, _: Msg, _: &mut Context<Msg>) -> Result<(), ActorError> { Ok(()) } }
/// # fn run(leases: flotilla_lease::LeaseClient) {
/// use flotilla_core::ShardingSettings;
/// use flotilla_sharding::Entity;
///
/// let accounts = Entity::new("account", |ctx| {
///     // The shard's fencing token: write it with every change to an external store.
///     let token = ctx.fencing_token();
///     # let _ = token;
///     Props::new(|| Account(0))
/// })
/// .settings(ShardingSettings {
///     number_of_shards: 100,
///     use_lease: true, // a shard runs only while it holds its lease
///     ..ShardingSettings::default()
/// })
/// .lease_client(leases);
/// # let _ = accounts;
/// # }
/// ```
pub struct Entity<A: Actor> {
    type_name: String,
    factory: Factory<A>,
    settings: Option<ShardingSettings>,
    lease_client: Option<LeaseClient>,
    stop_message: StopMessage<A::Msg>,
    store: Option<Arc<dyn RememberEntitiesStore>>,
}

impl<A: Actor> Entity<A>
where
    A::Msg: RemoteMessage,
{
    /// Entities of `type_name`, each made by `factory` from its context.
    pub fn new(
        type_name: &str,
        factory: impl Fn(&EntityContext<A::Msg>) -> Props<A> + Send + Sync + 'static,
    ) -> Self {
        Self {
            type_name: type_name.to_owned(),
            factory: Arc::new(factory),
            settings: None,
            lease_client: None,
            stop_message: None,
            store: None,
        }
    }

    /// The entity type's name.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// Whether a lease client was given ([`Entity::lease_client`]).
    pub fn has_lease_client(&self) -> bool {
        self.lease_client.is_some()
    }

    /// The store of remembered entities (used when `remember-entities` is on; see
    /// [`store`]). Every node must use the same store.
    #[must_use]
    pub fn remember_entities_store(mut self, store: impl RememberEntitiesStore) -> Self {
        self.store = Some(Arc::new(store));
        self
    }

    /// Uses these settings instead of the system's `[sharding]`.
    #[must_use]
    pub fn settings(mut self, settings: ShardingSettings) -> Self {
        self.settings = Some(settings);
        self
    }

    /// The lease backend for the shards' leases (used when `use-lease` is on).
    #[must_use]
    pub fn lease_client(mut self, client: LeaseClient) -> Self {
        self.lease_client = Some(client);
        self
    }

    /// The message entities get on hand-off and passivation, instead of being stopped.
    #[must_use]
    pub fn stop_message(mut self, make: impl Fn() -> A::Msg + Send + Sync + 'static) -> Self {
        self.stop_message = Some(Arc::new(make));
        self
    }
}

/// Cluster sharding's entry point.
///
/// ```no_run
/// use std::time::Duration;
/// use flotilla_actor::{Actor, ActorError, ActorSystem, Context, Props, RemoteMessage, ReplyTo};
/// use flotilla_cluster::Cluster;
/// use flotilla_sharding::{ClusterSharding, Entity};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum Cart {
///     Add(String),
///     Items(ReplyTo<Vec<String>>),
/// }
/// impl RemoteMessage for Cart {
///     const MANIFEST: &'static str = "shop.Cart";
/// }
///
/// #[derive(Default)]
/// struct Items(Vec<String>);
/// impl Actor for Items {
///     type Msg = Cart;
///     async fn handle(&mut self, msg: Cart, _: &mut Context<Cart>) -> Result<(), ActorError> {
///         match msg {
///             Cart::Add(item) => self.0.push(item),
///             Cart::Items(reply) => drop(reply.send(self.0.clone())),
///         }
///         Ok(())
///     }
/// }
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let system = ActorSystem::builder("shop").remote("127.0.0.1", 2552).build()?;
/// let cluster = Cluster::start(&system)?;
/// cluster.join(cluster.self_address().clone());
/// // Every node starts the same entity type; each entity runs on one node at a time.
/// let carts = ClusterSharding::start(
///     &system,
///     &cluster,
///     Entity::new("cart", |_| Props::new(Items::default)),
/// )?;
/// let cart = carts.entity_ref("cart-17");
/// cart.tell(Cart::Add("tea".into()));
/// let items = cart.ask(Cart::Items, Duration::from_secs(5)).await?;
/// # let _ = items;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ClusterSharding;

impl ClusterSharding {
    /// Starts sharding for `entity` on this node: its region (hosting shards when the node has
    /// the role, a proxy otherwise) and its coordinator's singleton. Call it on every node.
    pub fn start<A: Actor>(
        system: &ActorSystem,
        cluster: &Cluster,
        entity: Entity<A>,
    ) -> Result<ShardRegion<A::Msg>, ShardingError>
    where
        A::Msg: RemoteMessage,
    {
        let settings = entity
            .settings
            .unwrap_or_else(|| system.config().sharding.clone());
        settings
            .validate()
            .map_err(|e| ShardingError::Config(e.to_string()))?;
        if settings.use_lease && entity.lease_client.is_none() {
            return Err(ShardingError::Config(
                "use-lease needs a lease client: give one with Entity::lease_client".into(),
            ));
        }
        let store = if settings.remember_entities {
            let Some(store) = entity.store.clone() else {
                return Err(ShardingError::Config(
                    "remember-entities needs a store: give one with Entity::remember_entities_store".into(),
                ));
            };
            if !settings.passivation_idle_timeout.is_zero() || settings.active_entity_limit > 0 {
                tracing::info!(
                    entity_type = %entity.type_name,
                    "remember-entities is on: automatic passivation (idle timeout, active-entity limit) is off for {}; entities run until they passivate themselves",
                    entity.type_name
                );
            }
            Some(store)
        } else {
            None
        };
        let type_name = entity.type_name.clone();
        let hosts = settings.role.is_empty() || cluster.settings().roles.contains(&settings.role);
        let spawn_error = |source| ShardingError::Spawn {
            type_name: type_name.clone(),
            source,
        };
        // The coordinator reaches this node's region directly (set once the region exists).
        let coordinator_settings = CoordinatorSettings {
            rebalance_interval: settings.rebalance_interval,
            handoff_timeout: settings.handoff_timeout,
            host_retry: Duration::from_secs(1),
            remember_entities: store.is_some(),
        };
        let strategy = LeastShardAllocation {
            absolute_limit: settings.rebalance_absolute_limit,
            relative_limit: settings.rebalance_relative_limit,
        };
        let local_region: Arc<std::sync::OnceLock<ActorRef<RegionMsg<A::Msg>>>> = Arc::default();
        let singleton_config = SingletonConfig {
            role: settings.role.clone(),
            ..cluster.settings().singleton.clone()
        };
        let (c, name, region_slot, coordinator_store) = (
            cluster.clone(),
            type_name.clone(),
            Arc::clone(&local_region),
            store.clone(),
        );
        let role = settings.role.clone();
        let retry_interval = settings.retry_interval;
        let singleton =
            ClusterSingleton::builder(&format!("sharding-{type_name}-coordinator"), move || {
                let (c, name, slot, role, store) = (
                    c.clone(),
                    name.clone(),
                    Arc::clone(&region_slot),
                    role.clone(),
                    coordinator_store.clone(),
                );
                let (cs, st) = (coordinator_settings.clone(), strategy.clone());
                Props::new(move || CoordinatorActor::<A::Msg> {
                    type_name: name.clone(),
                    role: role.clone(),
                    machine: ShardCoordinator::new(cs.clone(), Box::new(st.clone()), now()),
                    cluster: c.clone(),
                    local_region: Arc::clone(&slot),
                    store: store.clone(),
                    retry_interval,
                })
                .with_supervisor(SupervisorStrategy::stop())
            })
            .settings(singleton_config)
            .start(system, cluster)?;
        let coordinator = singleton.proxy().clone();
        let region_actor = RegionActor::<A>::new(
            type_name.clone(),
            cluster.clone(),
            settings,
            hosts,
            region::EntityParts {
                factory: entity.factory,
                stop_message: entity.stop_message,
                lease_client: entity.lease_client,
                store,
            },
            coordinator,
        );
        let mut region_actor = Some(region_actor);
        let props = Props::new(move || region_actor.take().expect("the region is never restarted"))
            .with_supervisor(SupervisorStrategy::stop())
            .with_control_messages(RegionMsg::<A::Msg>::is_control);
        let region = system
            .spawn(&format!("sharding-{type_name}"), props)
            .map_err(spawn_error)?;
        system.expose(&region);
        let _ = local_region.set(region.clone());
        let r = region.clone();
        system
            .coordinated_shutdown()
            .add_task(
                Phase::ClusterShardingShutdownRegion,
                &format!("sharding-{type_name}-hand-off"),
                move || async move {
                    let (done, wait) = oneshot::channel();
                    r.tell(RegionMsg::Local(RegionLocal::Leave(done)));
                    let _ = wait.await;
                },
            )
            .map_err(|_| ShardingError::ShuttingDown)?;
        Ok(ShardRegion {
            type_name,
            region,
            system: system.clone(),
            cluster: cluster.clone(),
            _coordinator: Arc::new(singleton),
        })
    }
}

/// The leases in `backend` held by owners that are not members of `cluster` now — zombie
/// leases, which block their shards until they expire. Members' owner ids are derived as a
/// node derives its own (`lease.owner` is per node; this assumes the default, the node's
/// address without its incarnation). The same check is `flotilla leases --zombies`.
pub async fn zombie_leases(
    cluster: &Cluster,
    backend: &dyn LeaseBackend,
) -> Result<Vec<LeaseRecord>, String> {
    let members: std::collections::BTreeSet<String> = cluster
        .state()
        .members
        .iter()
        .map(|m| m.node.address.to_string())
        .collect();
    let records = backend.list().await?;
    Ok(flotilla_lease::zombies(&records, &members)
        .into_iter()
        .cloned()
        .collect())
}

/// Calls `on_change` with the cluster's state now and after every change, with the members that
/// went away since the last call, until it returns false or the cluster stops.
pub(crate) fn follow_members(
    cluster: &Cluster,
    mut on_change: impl FnMut(
        &flotilla_cluster::CurrentClusterState,
        Vec<flotilla_core::UniqueAddress>,
    ) -> bool
    + Send
    + 'static,
) {
    let mut snapshots = cluster.snapshots();
    tokio::spawn(async move {
        let mut known = std::collections::BTreeSet::new();
        loop {
            let state = snapshots.borrow_and_update().state.clone();
            let present: std::collections::BTreeSet<_> =
                state.members.iter().map(|m| m.node.clone()).collect();
            let gone = known.difference(&present).cloned().collect();
            known = present;
            if !on_change(&state, gone) || snapshots.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Shards and entities of this node's region, for queries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionState {
    /// Each shard hosted here, with its running entities.
    pub shards: std::collections::BTreeMap<String, Vec<String>>,
    /// Messages waiting for a shard's home.
    pub held: usize,
    /// Whether the coordinator has acknowledged this region's registration (a proxy registers
    /// too).
    pub registered: bool,
    /// The coordinator the region follows (its unique address), once it knows one.
    pub coordinator: Option<String>,
}

/// This node's region of one entity type.
pub struct ShardRegion<M: Send + 'static> {
    type_name: String,
    region: ActorRef<RegionMsg<M>>,
    system: ActorSystem,
    cluster: Cluster,
    _coordinator: Arc<ClusterSingleton<coordinator::CoordinatorMsg>>,
}

impl<M: Send + 'static> Clone for ShardRegion<M> {
    fn clone(&self) -> Self {
        Self {
            type_name: self.type_name.clone(),
            region: self.region.clone(),
            system: self.system.clone(),
            cluster: self.cluster.clone(),
            _coordinator: Arc::clone(&self._coordinator),
        }
    }
}

impl<M: RemoteMessage> ShardRegion<M> {
    /// The entity type.
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The entity `id`, wherever it runs.
    pub fn entity_ref(&self, id: &str) -> EntityRef<M> {
        EntityRef {
            id: id.to_owned(),
            region: self.region.clone(),
        }
    }

    /// Shards and running entities per member's region, asked of every Up member (a region
    /// that does not answer within `timeout` is left out).
    pub async fn cluster_stats(
        &self,
        timeout: Duration,
    ) -> std::collections::BTreeMap<String, (usize, usize)> {
        let mut out = std::collections::BTreeMap::new();
        for m in self.cluster.state().members {
            if m.status != flotilla_cluster::MemberStatus::Up {
                continue;
            }
            let region = if m.node == *self.cluster.self_node() {
                Some(self.region.clone())
            } else {
                self.system
                    .remote_ref::<RegionMsg<M>>(&region::region_path(
                        &m.node.address,
                        &self.type_name,
                    ))
                    .ok()
            };
            if let Some(r) = region
                && let Ok(stats) = r.ask(RegionMsg::Stats, timeout).await
            {
                out.insert(m.node.address.to_string(), stats);
            }
        }
        out
    }

    /// The shards hosted here and their running entities.
    pub async fn state(&self) -> RegionState {
        let (tx, rx) = oneshot::channel();
        self.region.tell(RegionMsg::Local(RegionLocal::State(tx)));
        rx.await.unwrap_or_default()
    }
}

/// A region seen without its message type: what operations tooling (the management API, the
/// dashboard) asks of every region of a node, whatever its entities.
pub trait RegionQueries: Send + Sync + 'static {
    /// The entity type.
    fn type_name(&self) -> &str;
    /// The shards hosted here and their running entities.
    fn state(&self) -> flotilla_lease::BoxFuture<'_, RegionState>;
    /// Shards and running entities per member's region (see [`ShardRegion::cluster_stats`]).
    fn cluster_stats(
        &self,
        timeout: Duration,
    ) -> flotilla_lease::BoxFuture<'_, std::collections::BTreeMap<String, (usize, usize)>>;
}

impl<M: RemoteMessage> RegionQueries for ShardRegion<M> {
    fn type_name(&self) -> &str {
        Self::type_name(self)
    }

    fn state(&self) -> flotilla_lease::BoxFuture<'_, RegionState> {
        Box::pin(Self::state(self))
    }

    fn cluster_stats(
        &self,
        timeout: Duration,
    ) -> flotilla_lease::BoxFuture<'_, std::collections::BTreeMap<String, (usize, usize)>> {
        Box::pin(Self::cluster_stats(self, timeout))
    }
}

/// One entity, addressed by id: messages go through this node's region to wherever it runs.
///
/// ```no_run
/// # use std::time::Duration;
/// # use flotilla_actor::{ReplyTo, RemoteMessage};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # enum Account { Deposit(u64), Balance(ReplyTo<u64>) }
/// # impl RemoteMessage for Account { const MANIFEST: &'static str = "doc.Account"; }
/// # async fn run(accounts: flotilla_sharding::ShardRegion<Account>) -> Result<(), Box<dyn std::error::Error>> {
/// let alice = accounts.entity_ref("alice");
/// alice.tell(Account::Deposit(10)); // started where its shard lives, if it is not running
/// let balance = alice.ask(Account::Balance, Duration::from_secs(5)).await?;
/// # let _ = balance;
/// # Ok(())
/// # }
/// ```
pub struct EntityRef<M: Send + 'static> {
    id: String,
    region: ActorRef<RegionMsg<M>>,
}

impl<M: Send + 'static> Clone for EntityRef<M> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            region: self.region.clone(),
        }
    }
}

impl<M: Send + 'static> EntityRef<M> {
    /// The entity's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Sends a message, at most once.
    pub fn tell(&self, msg: M) {
        self.region.tell(RegionMsg::Local(RegionLocal::Tell {
            entity: self.id.clone(),
            msg,
        }));
    }

    /// Asks and waits at most `timeout` for the answer.
    pub async fn ask<R: Send + 'static>(
        &self,
        make: impl FnOnce(ReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError> {
        let (reply, rx) = ReplyTo::channel();
        self.tell(make(reply));
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(AskError::NoReply {
                target: self.region.path().clone(),
            }),
            Err(_) => Err(AskError::Timeout {
                target: self.region.path().clone(),
                timeout,
            }),
        }
    }
}
