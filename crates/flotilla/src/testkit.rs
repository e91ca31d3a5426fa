//! A cluster of nodes in one process for tests (feature `testkit`): what Orleans' TestCluster
//! and Akka's multi-node testkit give, on 127.0.0.1 with fast timings and in-memory leases.
//!
//! ```
//! use flotilla::sharding::Entity;
//! use flotilla::testkit::TestCluster;
//! use flotilla::{Actor, ActorError, Context, Props, RemoteMessage, ReplyTo};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Ping(ReplyTo<String>);
//! impl RemoteMessage for Ping {
//!     const MANIFEST: &'static str = "example.Ping";
//! }
//! struct Echo;
//! impl Actor for Echo {
//!     type Msg = Ping;
//!     async fn handle(&mut self, Ping(reply): Ping, _: &mut Context<Ping>) -> Result<(), ActorError> {
//!         let _ = reply.send("pong".into());
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = TestCluster::builder(3)
//!     .entity(|| Entity::new("echo", |_| Props::new(|| Echo)))
//!     .start()
//!     .await?;
//! cluster.wait_up().await?;
//! let answer = cluster
//!     .entity_ref::<Ping>(0, "echo", "e1")
//!     .ask(Ping, std::time::Duration::from_secs(5))
//!     .await?;
//! assert_eq!(answer, "pong");
//! cluster.shutdown().await;
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flotilla_core::{Address, FlotillaConfig, LeaseSettings, ShardingSettings};
use flotilla_lease::MemoryBackend;
use flotilla_lease::backend::{
    BackendReply, BoxFuture, FencingToken, LeaseBackend, LeaseName, LeaseRecord, OwnerId,
};
use flotilla_remote::{Direction, FaultInjector};
use flotilla_sharding::{Entity, EntityRef};

use crate::{Actor, Node, NodeBuilder, NodeError, RemoteMessage};

/// Why a test cluster did not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestClusterError {
    /// A node could not start.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The cluster did not reach the state in time.
    #[error("{what} not within {within:?}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        within: Duration,
    },
}

type Register = Arc<dyn Fn(NodeBuilder) -> NodeBuilder + Send + Sync>;

/// Builds a [`TestCluster`].
#[must_use = "nothing starts until start() is awaited"]
pub struct TestClusterBuilder {
    size: usize,
    system: String,
    config: FlotillaConfig,
    registrations: Vec<Register>,
    backend: Option<Arc<dyn LeaseBackend>>,
}

impl TestClusterBuilder {
    /// Shares this lease backend instead of a fresh in-memory one (a real etcd, say).
    pub fn lease_backend(mut self, backend: Arc<dyn LeaseBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// The actor system name (default `test`).
    pub fn system(mut self, name: &str) -> Self {
        self.system = name.to_owned();
        self
    }

    /// Changes the configuration every node starts with (already fast: failures are noticed
    /// within about a second, leases live 3 s).
    pub fn configure(mut self, change: impl FnOnce(&mut FlotillaConfig)) -> Self {
        change(&mut self.config);
        self
    }

    /// Runs this entity type on every node (`make` is called once per node).
    pub fn entity<A: Actor>(mut self, make: impl Fn() -> Entity<A> + Send + Sync + 'static) -> Self
    where
        A::Msg: RemoteMessage,
    {
        self.registrations
            .push(Arc::new(move |b: NodeBuilder| b.entity(make())));
        self
    }

    /// Adds anything else to every node's builder (a singleton, say).
    pub fn each_node(
        mut self,
        f: impl Fn(NodeBuilder) -> NodeBuilder + Send + Sync + 'static,
    ) -> Self {
        self.registrations.push(Arc::new(f));
        self
    }

    /// Starts the nodes: the first forms the cluster, the others join it. Call
    /// [`TestCluster::wait_up`] to wait until every member is Up.
    pub async fn start(self) -> Result<TestCluster, TestClusterError> {
        let backend = self
            .backend
            .unwrap_or_else(|| Arc::new(MemoryBackend::new()));
        let mut cluster = TestCluster {
            system: self.system,
            config: self.config,
            registrations: self.registrations,
            backend,
            nodes: Vec::new(),
        };
        for _ in 0..self.size {
            cluster.add_node().await?;
        }
        Ok(cluster)
    }
}

/// A node's lease backend: the cluster's shared one, until the node crashes.
struct NodeBackend {
    shared: Arc<dyn LeaseBackend>,
    cut: Arc<AtomicBool>,
}

impl NodeBackend {
    fn cut<T>(&self, answer: impl FnOnce() -> T, cut: T) -> T {
        if self.cut.load(Ordering::Acquire) {
            cut
        } else {
            answer()
        }
    }
}

fn gone() -> BackendReply {
    BackendReply::Unknown {
        reason: "the node crashed (test cluster)".into(),
    }
}

impl LeaseBackend for NodeBackend {
    fn kind(&self) -> &'static str {
        self.shared.kind()
    }

    fn request_timeout(&self) -> Duration {
        self.shared.request_timeout()
    }

    fn acquire<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        ttl: Duration,
    ) -> BoxFuture<'a, BackendReply> {
        self.cut(
            || self.shared.acquire(lease, owner, ttl),
            Box::pin(async { gone() }),
        )
    }

    fn renew<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        ttl: Duration,
        token: FencingToken,
    ) -> BoxFuture<'a, BackendReply> {
        self.cut(
            || self.shared.renew(lease, owner, ttl, token),
            Box::pin(async { gone() }),
        )
    }

    fn release<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        token: Option<FencingToken>,
    ) -> BoxFuture<'a, BackendReply> {
        self.cut(
            || self.shared.release(lease, owner, token),
            Box::pin(async { gone() }),
        )
    }

    fn inspect<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
    ) -> BoxFuture<'a, BackendReply> {
        self.cut(
            || self.shared.inspect(lease, owner),
            Box::pin(async { gone() }),
        )
    }

    fn describe<'a>(
        &'a self,
        lease: &'a LeaseName,
    ) -> BoxFuture<'a, Result<Option<LeaseRecord>, String>> {
        self.shared.describe(lease)
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<LeaseRecord>, String>> {
        self.shared.list()
    }
}

struct TestNode {
    node: Node,
    address: Address,
    faults: FaultInjector,
    cut: Arc<AtomicBool>,
    stopped: bool,
}

/// N nodes in this process, each with its own actor system, remoting port on 127.0.0.1 and
/// fault injector, sharing one in-memory lease backend.
pub struct TestCluster {
    system: String,
    config: FlotillaConfig,
    registrations: Vec<Register>,
    backend: Arc<dyn LeaseBackend>,
    nodes: Vec<TestNode>,
}

impl std::fmt::Debug for TestCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCluster")
            .field(
                "nodes",
                &self.nodes.iter().map(|n| &n.address).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// How long [`TestCluster`]'s waits wait.
pub const WAIT: Duration = Duration::from_secs(30);

/// The fast configuration test clusters start with.
pub fn fast_config() -> FlotillaConfig {
    let mut config = FlotillaConfig {
        remote: flotilla_remote::testing::fast_settings(),
        cluster: flotilla_cluster::testing::fast_settings(),
        lease: LeaseSettings {
            heartbeat_timeout: Duration::from_secs(3),
            heartbeat_interval: Duration::from_millis(300),
            ..LeaseSettings::default()
        },
        sharding: ShardingSettings {
            number_of_shards: 20,
            retry_interval: Duration::from_millis(200),
            lease_retry_interval: Duration::from_millis(300),
            use_lease: true,
            ..ShardingSettings::default()
        },
        ..FlotillaConfig::default()
    };
    config.management.enabled = false;
    config
}

impl TestCluster {
    /// A builder for `size` nodes, with [`fast_config`] and shards guarded by leases.
    pub fn builder(size: usize) -> TestClusterBuilder {
        TestClusterBuilder {
            size,
            system: "test".into(),
            config: fast_config(),
            registrations: Vec::new(),
            backend: None,
        }
    }

    /// Starts one more node, joining through the first; returns its index.
    pub async fn add_node(&mut self) -> Result<usize, TestClusterError> {
        let faults = FaultInjector::new();
        let cut = Arc::new(AtomicBool::new(false));
        let backend = NodeBackend {
            shared: Arc::clone(&self.backend),
            cut: Arc::clone(&cut),
        };
        let hook = faults.clone();
        let mut builder = Node::builder(&self.system)
            .config(self.config.clone())
            .remote("127.0.0.1", 0)
            .lease_backend(Arc::new(backend))
            .handle_signals(false)
            .system_builder(move |b| b.fault_injector(hook));
        if let Some(first) = self.nodes.iter().find(|n| !n.stopped) {
            builder = builder.seed_nodes([first.address.clone()]);
        }
        for register in &self.registrations {
            builder = register(builder);
        }
        let node = builder.start().await?;
        let address = node.cluster().self_address().clone();
        self.nodes.push(TestNode {
            node,
            address,
            faults,
            cut,
            stopped: false,
        });
        Ok(self.nodes.len() - 1)
    }

    /// Node `i` (in start order; stopped and crashed nodes keep their index).
    ///
    /// # Panics
    /// If there is no node `i`.
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i].node
    }

    /// How many nodes were started.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was started.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The shared lease backend (to look at the leases).
    pub fn lease_backend(&self) -> &Arc<dyn LeaseBackend> {
        &self.backend
    }

    /// A reference to entity `id` of `type_name`, through node `i`'s region.
    ///
    /// # Panics
    /// If node `i` has no entity type `type_name` with messages `M`.
    pub fn entity_ref<M: RemoteMessage>(
        &self,
        i: usize,
        type_name: &str,
        id: &str,
    ) -> EntityRef<M> {
        let region = self.nodes[i]
            .node
            .region::<M>(type_name)
            .unwrap_or_else(|| panic!("node {i} has no entity type {type_name} of these messages"));
        region.entity_ref(id)
    }

    /// Waits until every running node sees every running node Up (and nothing unreachable).
    pub async fn wait_up(&self) -> Result<(), TestClusterError> {
        let running: Vec<&TestNode> = self.nodes.iter().filter(|n| !n.stopped).collect();
        self.wait("every member Up", || {
            running.iter().all(|n| {
                let s = n.node.cluster().state();
                s.unreachable.is_empty()
                    && running.iter().all(|o| {
                        s.member(&o.address)
                            .is_some_and(|m| m.status == flotilla_cluster::MemberStatus::Up)
                    })
                    && s.members.len() == running.len()
            })
        })
        .await
    }

    /// Waits until `done` holds, checking every 50 ms for at most [`WAIT`].
    pub async fn wait(
        &self,
        what: &str,
        mut done: impl FnMut() -> bool,
    ) -> Result<(), TestClusterError> {
        let started = tokio::time::Instant::now();
        while !done() {
            if started.elapsed() > WAIT {
                return Err(TestClusterError::Timeout {
                    what: what.to_owned(),
                    within: WAIT,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stops node `i` gracefully: it leaves, its shards hand off, its leases are released.
    pub async fn stop(&mut self, i: usize) {
        self.nodes[i].node.leave().await;
        self.nodes[i].stopped = true;
    }

    /// Crashes node `i`: from now on no frame reaches it or leaves it and its lease backend no
    /// longer answers, as with `kill -9` — the others find it unreachable, the split-brain
    /// resolver downs it, and its shards move once their leases have expired.
    pub fn crash(&mut self, i: usize) {
        let victim = self.nodes[i].address.clone();
        self.nodes[i].cut.store(true, Ordering::Release);
        for (j, n) in self.nodes.iter().enumerate() {
            if j != i {
                n.faults.blackhole(&victim, Direction::Both);
                self.nodes[i].faults.blackhole(&n.address, Direction::Both);
            }
        }
        self.nodes[i].stopped = true;
        // What is left of it stops in the background: it cannot reach anyone.
        let system = self.nodes[i].node.system().clone();
        tokio::spawn(async move {
            system.terminate().await;
        });
    }

    /// Cuts every link between nodes `a` and `b` (both ways) until [`TestCluster::heal`].
    pub fn partition(&self, a: usize, b: usize) {
        self.nodes[a]
            .faults
            .blackhole(&self.nodes[b].address, Direction::Both);
        self.nodes[b]
            .faults
            .blackhole(&self.nodes[a].address, Direction::Both);
    }

    /// Lets traffic between `a` and `b` pass again.
    pub fn heal(&self, a: usize, b: usize) {
        self.nodes[a].faults.pass_through(&self.nodes[b].address);
        self.nodes[b].faults.pass_through(&self.nodes[a].address);
    }

    /// Stops every running node gracefully, one after another.
    pub async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            if !self.nodes[i].stopped {
                self.stop(i).await;
            }
        }
    }
}
