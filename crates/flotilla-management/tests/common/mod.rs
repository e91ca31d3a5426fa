//! A cluster node with a sharded, lease-guarded entity type and the waiting helper, shared by
//! this crate's integration tests.

#![allow(dead_code)] // reason: each test binary uses a different subset
#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use flotilla_actor::{Actor, ActorError, ActorSystem, Context, Props, RemoteMessage};
use flotilla_cluster::LeaseClientExt as _;
use flotilla_cluster::{Cluster, testing};
use flotilla_core::{FlotillaConfig, LeaseSettings, ShardingSettings};
use flotilla_lease::{LeaseClient, MemoryBackend, OwnerId};
use flotilla_sharding::{ClusterSharding, Entity, ShardRegion};
use serde::{Deserialize, Serialize};

pub(crate) const LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Msg {
    Add(u64),
}

impl RemoteMessage for Msg {
    const MANIFEST: &'static str = "test.management.Counter";
}

pub(crate) struct Counter(u64);

impl Actor for Counter {
    type Msg = Msg;

    async fn handle(&mut self, msg: Msg, _ctx: &mut Context<Msg>) -> Result<(), ActorError> {
        let Msg::Add(n) = msg;
        self.0 += n;
        Ok(())
    }
}

pub(crate) struct Node {
    pub(crate) system: ActorSystem,
    pub(crate) cluster: Cluster,
    pub(crate) region: ShardRegion<Msg>,
}

pub(crate) async fn node(backend: &MemoryBackend) -> Node {
    let config = FlotillaConfig {
        remote: flotilla_remote::testing::fast_settings(),
        cluster: testing::fast_settings(),
        ..FlotillaConfig::default()
    };
    let system = ActorSystem::builder("mgmt")
        .config(config)
        .remote("127.0.0.1", 0)
        .build()
        .unwrap();
    let cluster = Cluster::start(&system).unwrap();
    let client = LeaseClient::start(
        &system,
        Arc::new(backend.clone()),
        LeaseSettings {
            heartbeat_timeout: Duration::from_secs(3),
            heartbeat_interval: Duration::from_millis(300),
            ..LeaseSettings::default()
        },
        OwnerId::new(&cluster.self_address().to_string()).unwrap(),
    )
    .unwrap();
    let entity = Entity::new("counter", |_| Props::new(|| Counter(0)))
        .settings(ShardingSettings {
            number_of_shards: 10,
            use_lease: true,
            lease_retry_interval: Duration::from_millis(300),
            ..ShardingSettings::default()
        })
        .lease_client(client);
    let region = ClusterSharding::start(&system, &cluster, entity).unwrap();
    Node {
        system,
        cluster,
        region,
    }
}

pub(crate) async fn eventually<T>(what: &str, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The management endpoint of `node` on a free port, with bearer `token` and `backend`'s leases.
pub(crate) async fn management(
    node: &Node,
    backend: &MemoryBackend,
    token: &str,
) -> flotilla_management::Management {
    flotilla_management::Management::builder(&node.system, &node.cluster)
        .settings(flotilla_core::ManagementSettings {
            port: 0,
            token: Some(token.into()),
            ..flotilla_core::ManagementSettings::default()
        })
        .region(node.region.clone())
        .lease_backend(Arc::new(backend.clone()))
        .start()
        .await
        .unwrap()
}
