//! Three-node sharding clusters in one process, on 127.0.0.1, for the tests of this crate: a
//! counter entity, cluster formation, and waiting helpers.

#![allow(dead_code)] // reason: each test binary uses a different subset

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_actor::{Actor, ActorError, ActorSystem, Context, Props, RemoteMessage, ReplyTo};
use flotilla_cluster::LeaseClientExt as _;
use flotilla_cluster::{Cluster, MemberStatus, testing};
use flotilla_core::{FlotillaConfig, LeaseSettings, ShardingSettings};
use flotilla_lease::{LeaseClient, MemoryBackend, OwnerId};
use flotilla_sharding::{ClusterSharding, Entity, Passivator, ShardRegion};
use serde::{Deserialize, Serialize};

pub(crate) const LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum CounterMsg {
    Add(u64),
    /// The node it runs on, its shard, its total.
    Get(ReplyTo<(String, String, u64)>),
    /// Asks for its own passivation.
    Passivate,
    /// Stops itself, without passivation.
    Stop,
    /// Waits this many seconds in its handler (I/O that takes long), then adds one.
    Stall(u64),
}

impl RemoteMessage for CounterMsg {
    const MANIFEST: &'static str = "test.ShardedCounter";
}

/// Every entity incarnation: (entity, node, started, stopped) in the order they happened.
pub(crate) type Lives = Arc<Mutex<Vec<(String, String, bool)>>>;

pub(crate) struct Counter {
    node: String,
    shard: String,
    id: String,
    total: u64,
    passivator: Passivator<CounterMsg>,
    lives: Lives,
}

impl Actor for Counter {
    type Msg = CounterMsg;

    async fn pre_start(&mut self, _ctx: &mut Context<CounterMsg>) -> Result<(), ActorError> {
        self.record(true);
        Ok(())
    }

    async fn handle(
        &mut self,
        msg: CounterMsg,
        ctx: &mut Context<CounterMsg>,
    ) -> Result<(), ActorError> {
        match msg {
            CounterMsg::Add(n) => self.total += n,
            CounterMsg::Get(reply) => {
                reply.send((self.node.clone(), self.shard.clone(), self.total));
            }
            CounterMsg::Passivate => self.passivator.passivate(),
            CounterMsg::Stop => ctx.stop(),
            CounterMsg::Stall(secs) => {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                self.total += 1;
            }
        }
        Ok(())
    }

    async fn post_stop(&mut self, _ctx: &mut Context<CounterMsg>) {
        self.record(false);
    }
}

impl Counter {
    fn record(&self, started: bool) {
        self.lives
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((self.id.clone(), self.node.clone(), started));
    }
}

/// The entities running now, with their node, from the lives; panics if one ran on two nodes
/// at once.
pub(crate) fn running(lives: &Lives) -> BTreeMap<String, String> {
    let mut now: BTreeMap<String, String> = BTreeMap::new();
    for (id, node, started) in lives
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
    {
        if *started {
            if let Some(other) = now.insert(id.clone(), node.clone()) {
                panic!("{id} started on {node} while it ran on {other}");
            }
        } else {
            now.remove(id);
        }
    }
    now
}

/// How many times each entity started.
pub(crate) fn starts(lives: &Lives, id: &str) -> usize {
    lives
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|(i, _, started)| i == id && *started)
        .count()
}

pub(crate) struct Node {
    pub(crate) system: ActorSystem,
    pub(crate) cluster: Cluster,
    pub(crate) region: ShardRegion<CounterMsg>,
    pub(crate) owner: String,
}

pub(crate) fn settings() -> ShardingSettings {
    ShardingSettings {
        number_of_shards: 30,
        rebalance_interval: Duration::from_secs(1),
        retry_interval: Duration::from_millis(200),
        lease_retry_interval: Duration::from_millis(300),
        use_lease: true,
        ..ShardingSettings::default()
    }
}

/// `n` nodes formed into one cluster, each with a counter region whose shards take leases in
/// `backend`; `customize` adds to each node's entity type. Entity lives go to `lives`.
pub(crate) async fn cluster_with(
    n: usize,
    backend: &MemoryBackend,
    lives: &Lives,
    customize: impl Fn(Entity<Counter>) -> Entity<Counter>,
) -> Vec<Node> {
    form(n)
        .await
        .into_iter()
        .map(|(system, cluster)| with_region(system, cluster, backend, lives, &customize))
        .collect()
}

/// `n` nodes formed into one cluster (every member Up), without regions yet.
pub(crate) async fn form(n: usize) -> Vec<(ActorSystem, Cluster)> {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let mut nodes = Vec::new();
    for _ in 0..n {
        let config = FlotillaConfig {
            remote: flotilla_remote::testing::fast_settings(),
            cluster: testing::fast_settings(),
            ..FlotillaConfig::default()
        };
        let system = ActorSystem::builder("sharded")
            .config(config)
            .remote("127.0.0.1", 0)
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let cluster = Cluster::start(&system).unwrap_or_else(|e| panic!("{e}"));
        nodes.push((system, cluster));
    }
    let seed = nodes[0].1.self_address().clone();
    for (_, c) in &nodes {
        c.join_seed_nodes(vec![seed.clone()]);
        assert!(c.when_up().await);
    }
    for (_, c) in &nodes {
        wait_until("all Up", || {
            let s = c.state();
            s.members.len() == n && s.members.iter().all(|m| m.status == MemberStatus::Up)
        })
        .await;
    }
    nodes
}

/// Starts the counter region on a formed node (see [`cluster_with`]).
pub(crate) fn with_region(
    system: ActorSystem,
    cluster: Cluster,
    backend: &MemoryBackend,
    lives: &Lives,
    customize: &impl Fn(Entity<Counter>) -> Entity<Counter>,
) -> Node {
    let owner = cluster.self_address().to_string();
    let client = LeaseClient::start(
        &system,
        Arc::new(backend.clone()),
        LeaseSettings {
            heartbeat_timeout: Duration::from_secs(3),
            heartbeat_interval: Duration::from_millis(300),
            ..LeaseSettings::default()
        },
        OwnerId::new(&owner).unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (node, lives) = (owner.clone(), Arc::clone(lives));
    let entity = Entity::new("counter", move |ctx| {
        let (node, shard, id) = (
            node.clone(),
            ctx.shard_id().to_owned(),
            ctx.entity_id().to_owned(),
        );
        let (passivator, lives) = (ctx.passivator(), Arc::clone(&lives));
        Props::new(move || Counter {
            node: node.clone(),
            shard: shard.clone(),
            id: id.clone(),
            total: 0,
            passivator: passivator.clone(),
            lives: Arc::clone(&lives),
        })
    })
    .settings(settings())
    .lease_client(client);
    let region = ClusterSharding::start(&system, &cluster, customize(entity))
        .unwrap_or_else(|e| panic!("{e}"));
    Node {
        system,
        cluster,
        region,
        owner,
    }
}

/// `n` nodes with the default counter entities.
pub(crate) async fn cluster_of(n: usize, backend: &MemoryBackend) -> Vec<Node> {
    cluster_with(n, backend, &Lives::default(), |e| e).await
}

pub(crate) async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < LIMIT, "not within {LIMIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asks entity `id` through `region` until it answers.
pub(crate) async fn get(region: &ShardRegion<CounterMsg>, id: &str) -> (String, String, u64) {
    let start = tokio::time::Instant::now();
    loop {
        match region
            .entity_ref(id)
            .ask(CounterMsg::Get, Duration::from_millis(1000))
            .await
        {
            Ok(answer) => return answer,
            Err(e) => assert!(start.elapsed() < LIMIT, "{id} never answered: {e}"),
        }
    }
}
