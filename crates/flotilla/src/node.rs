//! One cluster node, started from its configuration in one call: [`Node::builder`].
//!
//! The builder reads the configuration (a TOML file or text, with `FLOTILLA__<SECTION>__<KEY>`
//! environment variables laid over it), starts the actor system with remoting, the cluster and
//! its join (the given seeds, `[cluster] seed-nodes`, `[cluster.discovery]`, or a cluster of its
//! own), the lease backend `[lease] backend` names with a lease client that releases every lease
//! at shutdown, the entity types and singletons registered with it, and the management endpoint
//! (`[management]`). SIGTERM and Ctrl-C run coordinated shutdown: the node leaves the cluster
//! gracefully, its shards hand off and its leases are released.
//!
//! A lease-guarded sharded entity type, its node configured from TOML:
//!
//! ```no_run
//! use flotilla::sharding::Entity;
//! use flotilla::{Actor, ActorError, Context, Node, Props, RemoteMessage, ReplyTo};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! enum Account {
//!     Deposit(u64),
//!     Balance(ReplyTo<u64>),
//! }
//! impl RemoteMessage for Account {
//!     const MANIFEST: &'static str = "bank.Account";
//! }
//!
//! struct Balance(u64);
//! impl Actor for Balance {
//!     type Msg = Account;
//!     async fn handle(&mut self, msg: Account, _: &mut Context<Account>) -> Result<(), ActorError> {
//!         match msg {
//!             Account::Deposit(n) => self.0 += n,
//!             Account::Balance(reply) => drop(reply.send(self.0)),
//!         }
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // bank.toml: [sharding] use-lease = true, [lease] backend = "etcd", [lease.etcd] …
//!     let node = Node::builder("bank")
//!         .config_file("bank.toml")
//!         .entity(Entity::new("account", |_| Props::new(|| Balance(0))))
//!         .start()
//!         .await?;
//!     let accounts = node.region::<Account>("account").expect("registered above");
//!     accounts.entity_ref("alice").tell(Account::Deposit(10));
//!     node.terminated().await; // until SIGTERM: leave, hand off, release
//!     Ok(())
//! }
//! ```

use std::any::Any;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use flotilla_actor::{Actor, ActorSystem, RemoteMessage, ShutdownOutcome, ShutdownReason};
use flotilla_cluster::{Cluster, ClusterSingleton, LeaseClientExt as _, SingletonBuilder};
use flotilla_core::{Address, ConfigError, FlotillaConfig};
use flotilla_lease::{LeaseBackend, LeaseClient, OwnerId};
use flotilla_management::{Management, ManagementBuilder};
use flotilla_sharding::{ClusterSharding, Entity, ShardRegion};

/// Why a node could not start. Each variant says who can act: the configuration (an operator),
/// the environment (a backend or port), or the program.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The configuration file could not be read.
    #[error("cannot read the configuration file {path}: {source}")]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid configuration ({origin}): {source}")]
    Config {
        /// Where it came from.
        origin: String,
        /// What is wrong, with the key.
        source: ConfigError,
    },
    /// Something the configuration asks for is not compiled in.
    #[error("{what} needs Flotilla built with its `{feature}` cargo feature")]
    FeatureMissing {
        /// What was asked for.
        what: String,
        /// The feature.
        feature: &'static str,
    },
    /// The lease backend refused the settings or credentials.
    #[error("cannot use the {kind} lease backend: {reason}")]
    LeaseBackend {
        /// The backend.
        kind: &'static str,
        /// Its words.
        reason: String,
    },
    /// The actor system could not start (a bad address, a port in use, bad TLS files).
    #[error("cannot start the actor system: {0}")]
    System(#[from] flotilla_actor::SystemError),
    /// The cluster could not start.
    #[error("cannot start the cluster: {0}")]
    Cluster(#[from] flotilla_cluster::ClusterError),
    /// Discovery (`[cluster.discovery]`) could not start.
    #[error("cannot start cluster bootstrap from [cluster.discovery]: {0}")]
    Discovery(#[from] flotilla_discovery::DiscoveryError),
    /// The lease client could not start.
    #[error("cannot start the lease client: {0}")]
    Leases(#[from] flotilla_cluster::StartLeaseClientError),
    /// The lease owner identity could not be made from `[lease] owner` or the address.
    #[error("no lease owner identity: {0}")]
    Owner(String),
    /// An entity type could not start.
    #[error("cannot start sharding of {type_name}: {source}")]
    Sharding {
        /// The entity type.
        type_name: String,
        /// Why.
        source: flotilla_sharding::ShardingError,
    },
    /// A singleton could not start.
    #[error("cannot start the singleton {name}: {source}")]
    Singleton {
        /// Its name.
        name: String,
        /// Why.
        source: flotilla_cluster::SingletonError,
    },
    /// The management endpoint could not start.
    #[error("cannot start the management endpoint: {0}")]
    Management(#[from] flotilla_management::ManagementError),
}

/// What a registration needs to start.
struct Parts<'a> {
    system: &'a ActorSystem,
    cluster: &'a Cluster,
    leases: &'a LeaseClient,
}

type Started = (
    Box<dyn Any + Send + Sync>,
    Option<Arc<dyn flotilla_sharding::RegionQueries>>,
);
type Start = Box<dyn FnOnce(&Parts<'_>) -> Result<Started, NodeError> + Send>;
type Configure = Box<dyn FnOnce(&mut FlotillaConfig) + Send>;
type SystemHook = Box<
    dyn FnOnce(flotilla_actor::ActorSystemBuilder) -> flotilla_actor::ActorSystemBuilder + Send,
>;

enum ConfigSource {
    None,
    File(PathBuf),
    Text(String),
    Value(Box<FlotillaConfig>),
}

/// Builds a [`Node`]; see the [module docs](self).
#[must_use = "nothing starts until start() is awaited"]
pub struct NodeBuilder {
    system: String,
    source: ConfigSource,
    env: bool,
    remote: Option<(String, u16)>,
    seeds: Option<Vec<Address>>,
    backend: Option<Arc<dyn LeaseBackend>>,
    signals: bool,
    configure: Vec<Configure>,
    system_hook: Option<SystemHook>,
    entities: Vec<(String, Start)>,
    singletons: Vec<(String, Start)>,
}

impl NodeBuilder {
    /// Reads the configuration from this TOML file (environment overrides still apply).
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.source = ConfigSource::File(path.into());
        self
    }

    /// Reads the configuration from this TOML text (environment overrides still apply).
    pub fn config_toml(mut self, text: impl Into<String>) -> Self {
        self.source = ConfigSource::Text(text.into());
        self
    }

    /// Uses this configuration as it is (no environment overrides).
    pub fn config(mut self, config: FlotillaConfig) -> Self {
        self.source = ConfigSource::Value(Box::new(config));
        self
    }

    /// Whether `FLOTILLA__<SECTION>__<KEY>` environment variables override the file or text
    /// (default: yes).
    pub fn env_overrides(mut self, on: bool) -> Self {
        self.env = on;
        self
    }

    /// Changes the configuration after it is read (for settings a program decides).
    pub fn configure(mut self, change: impl FnOnce(&mut FlotillaConfig) + Send + 'static) -> Self {
        self.configure.push(Box::new(change));
        self
    }

    /// The host to listen on and be reached at, and the port (0 picks a free one). Default:
    /// 127.0.0.1 and 2552.
    pub fn remote(mut self, host: &str, port: u16) -> Self {
        self.remote = Some((host.to_owned(), port));
        self
    }

    /// Joins through these seed nodes instead of `[cluster] seed-nodes` or discovery.
    pub fn seed_nodes(mut self, seeds: impl IntoIterator<Item = Address>) -> Self {
        self.seeds = Some(seeds.into_iter().collect());
        self
    }

    /// Uses this lease backend instead of the one `[lease] backend` names (nodes of one process
    /// sharing one in-memory backend, a backend of the program's own).
    pub fn lease_backend(mut self, backend: Arc<dyn LeaseBackend>) -> Self {
        self.backend = Some(backend);
        self
    }

    /// Whether SIGTERM and Ctrl-C run coordinated shutdown (default: yes). Nodes of one
    /// process started by tests turn it off.
    pub fn handle_signals(mut self, on: bool) -> Self {
        self.signals = on;
        self
    }

    /// Adjusts the actor system's builder before it is built (fault injection in tests).
    pub fn system_builder(
        mut self,
        hook: impl FnOnce(flotilla_actor::ActorSystemBuilder) -> flotilla_actor::ActorSystemBuilder
        + Send
        + 'static,
    ) -> Self {
        self.system_hook = Some(Box::new(hook));
        self
    }

    /// Runs this entity type on the node (on every node of the cluster, each registering it).
    /// Without a lease client of its own it gets the node's, used when `[sharding] use-lease`
    /// (or the entity's own settings) says so. [`Node::region`] reaches it.
    pub fn entity<A: Actor>(mut self, entity: Entity<A>) -> Self
    where
        A::Msg: RemoteMessage,
    {
        let type_name = entity.type_name().to_owned();
        let name = type_name.clone();
        let start: Start = Box::new(move |parts| {
            let entity = if entity.has_lease_client() {
                entity
            } else {
                entity.lease_client(parts.leases.clone())
            };
            let region = ClusterSharding::start(parts.system, parts.cluster, entity)
                .map_err(|source| NodeError::Sharding { type_name, source })?;
            let queries: Arc<dyn flotilla_sharding::RegionQueries> = Arc::new(region.clone());
            Ok((Box::new(region), Some(queries)))
        });
        self.entities.push((name, start));
        self
    }

    /// Runs this singleton in the cluster (every node registers it; one instance runs).
    /// [`Node::singleton`] reaches it.
    pub fn singleton<A: Actor>(mut self, name: &str, singleton: SingletonBuilder<A>) -> Self
    where
        A::Msg: RemoteMessage,
    {
        let owned = name.to_owned();
        let start: Start = Box::new(move |parts| {
            let s: ClusterSingleton<A::Msg> = singleton
                .start(parts.system, parts.cluster)
                .map_err(|source| NodeError::Singleton {
                    name: owned,
                    source,
                })?;
            Ok((Box::new(s), None))
        });
        self.singletons.push((name.to_owned(), start));
        self
    }

    fn read_config(&mut self) -> Result<FlotillaConfig, NodeError> {
        let env: Vec<(String, String)> = if self.env {
            std::env::vars()
                .filter(|(k, _)| k.starts_with("FLOTILLA__"))
                .collect()
        } else {
            Vec::new()
        };
        let (text, origin) = match std::mem::replace(&mut self.source, ConfigSource::None) {
            ConfigSource::Value(config) => return Ok(*config),
            ConfigSource::None => (String::new(), "the FLOTILLA__ environment".to_owned()),
            ConfigSource::Text(text) => (
                text,
                "the given TOML or the FLOTILLA__ environment".to_owned(),
            ),
            ConfigSource::File(path) => {
                let text =
                    std::fs::read_to_string(&path).map_err(|source| NodeError::ReadConfig {
                        path: path.clone(),
                        source,
                    })?;
                (
                    text,
                    format!("{} or the FLOTILLA__ environment", path.display()),
                )
            }
        };
        FlotillaConfig::from_toml_and_env(&text, env)
            .map_err(|source| NodeError::Config { origin, source })
    }

    /// Starts the node (see the [module docs](self)). Must be called inside a tokio runtime.
    pub async fn start(mut self) -> Result<Node, NodeError> {
        let mut config = self.read_config()?;
        for change in std::mem::take(&mut self.configure) {
            change(&mut config);
        }
        config.validate().map_err(|source| NodeError::Config {
            origin: "the program's changes".into(),
            source,
        })?;
        let (host, port) = self.remote.clone().unwrap_or(("127.0.0.1".into(), 2552));
        let mut builder = ActorSystem::builder(&self.system)
            .config(config)
            .remote(&host, port);
        if let Some(hook) = self.system_hook.take() {
            builder = hook(builder);
        }
        let system = builder.build()?;
        if self.signals {
            system.coordinated_shutdown().install_signal_handlers();
        }
        let cluster = Cluster::start(&system)?;
        tracing::info!(node = %cluster.self_node(), "node {} started", cluster.self_node());
        let backend = match self.backend.take() {
            Some(b) => b,
            None => crate::lease_backend::connect(&system.config().lease).await?,
        };
        let owner = OwnerId::for_node(&system.config().lease, cluster.self_address())
            .map_err(|e| NodeError::Owner(e.to_string()))?;
        let leases = LeaseClient::start(
            &system,
            Arc::clone(&backend),
            system.config().lease.clone(),
            owner,
        )?;
        let parts = Parts {
            system: &system,
            cluster: &cluster,
            leases: &leases,
        };
        let mut regions = BTreeMap::new();
        let mut queries = Vec::new();
        for (name, start) in self.entities {
            let (region, q) = start(&parts)?;
            regions.insert(name, region);
            queries.extend(q);
        }
        let mut singletons = BTreeMap::new();
        for (name, start) in self.singletons {
            singletons.insert(name, start(&parts)?.0);
        }
        let management = if system.config().management.enabled {
            let mut m: ManagementBuilder = Management::builder(&system, &cluster)
                .settings(system.config().management.clone())
                .lease_backend(Arc::clone(&backend));
            for q in queries {
                m = m.region_queries(q);
            }
            Some(m.start().await?)
        } else {
            None
        };
        join(&cluster, self.seeds).await?;
        Ok(Node {
            system,
            cluster,
            leases,
            backend,
            regions,
            singletons,
            management,
        })
    }
}

/// Joins the cluster: the given seeds, else `[cluster] seed-nodes` (joined by the cluster
/// itself), else discovery, else a cluster of its own.
async fn join(cluster: &Cluster, seeds: Option<Vec<Address>>) -> Result<(), NodeError> {
    if let Some(seeds) = seeds.filter(|s| !s.is_empty()) {
        cluster.join_seed_nodes(seeds);
    } else if cluster.settings().seed_nodes.is_empty() {
        let bootstrap = flotilla_discovery::bootstrap::start_from_config(cluster).await?;
        if bootstrap.is_none() {
            cluster.join(cluster.self_address().clone());
        }
    }
    Ok(())
}

/// A running node: its actor system, cluster, lease client, entity types, singletons and
/// management endpoint.
pub struct Node {
    system: ActorSystem,
    cluster: Cluster,
    leases: LeaseClient,
    backend: Arc<dyn LeaseBackend>,
    regions: BTreeMap<String, Box<dyn Any + Send + Sync>>,
    singletons: BTreeMap<String, Box<dyn Any + Send + Sync>>,
    management: Option<Management>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node", &self.cluster.self_node())
            .field("entity_types", &self.regions.keys().collect::<Vec<_>>())
            .field("singletons", &self.singletons.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A builder for a node of actor system `system` (every node of a cluster has the same
    /// system name: it is part of every address).
    pub fn builder(system: &str) -> NodeBuilder {
        NodeBuilder {
            system: system.to_owned(),
            source: ConfigSource::None,
            env: true,
            remote: None,
            seeds: None,
            backend: None,
            signals: true,
            configure: Vec::new(),
            system_hook: None,
            entities: Vec::new(),
            singletons: Vec::new(),
        }
    }

    /// The actor system.
    pub fn system(&self) -> &ActorSystem {
        &self.system
    }

    /// The cluster membership of this node.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// The lease client the node's shards use.
    pub fn lease_client(&self) -> &LeaseClient {
        &self.leases
    }

    /// The lease backend.
    pub fn lease_backend(&self) -> &Arc<dyn LeaseBackend> {
        &self.backend
    }

    /// The region of entity type `type_name`, if it was registered with messages of type `M`.
    pub fn region<M: RemoteMessage>(&self, type_name: &str) -> Option<ShardRegion<M>> {
        self.regions
            .get(type_name)?
            .downcast_ref::<ShardRegion<M>>()
            .cloned()
    }

    /// The singleton `name`, if it was registered with messages of type `M`.
    pub fn singleton<M: RemoteMessage>(&self, name: &str) -> Option<&ClusterSingleton<M>> {
        self.singletons.get(name)?.downcast_ref()
    }

    /// The management endpoint's URL, when it runs.
    pub fn management_url(&self) -> Option<String> {
        self.management.as_ref().map(Management::url)
    }

    /// Waits until this node is Up in the cluster; `false` if it stopped first.
    pub async fn wait_up(&self) -> bool {
        self.cluster.when_up().await
    }

    /// Leaves the cluster gracefully and waits until coordinated shutdown has finished: shards
    /// handed off, leases released, the system stopped.
    pub async fn leave(&self) -> Arc<ShutdownOutcome> {
        self.system
            .coordinated_shutdown()
            .run(ShutdownReason::ClusterLeaving)
            .await
    }

    /// Waits until the node has stopped (a signal, a leave, the cluster downing it).
    pub async fn terminated(&self) -> Arc<ShutdownOutcome> {
        let outcome = self.system.coordinated_shutdown().completed().await;
        if let Some(m) = &self.management {
            m.stop();
        }
        outcome
    }
}
