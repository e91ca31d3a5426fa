//! The management HTTP endpoint of a Flotilla node: a JSON API for operators and scripts, the
//! Prometheus `/metrics` exposition, and a live dashboard page, all served by one axum router.
//!
//! | method and path | what |
//! | --- | --- |
//! | `GET /` | the dashboard (one page, assets embedded, refreshes itself) |
//! | `GET /status` | one-call overview |
//! | `GET /cluster/members` | members with status, reachability and phi |
//! | `PUT /cluster/members/{address}` | `{"operation":"leave"}` or `{"operation":"down"}` |
//! | `GET /cluster/shards` | this node's regions and the shard distribution |
//! | `GET /remote/associations` | the association to each remote node, with its cause |
//! | `GET /leases` | the lease backend's leases, zombies flagged |
//! | `GET /events?after=N` | the recent event log |
//! | `GET /health/alive`, `GET /health/ready` | liveness; readiness (Up, regions registered) |
//! | `GET /metrics` | Prometheus text exposition |
//!
//! The address in `PUT /cluster/members/{address}` is percent-encoded
//! (`flotilla%3A%2F%2Fsys%40127.0.0.1%3A2552`); `sys@host:port` is accepted too. With a
//! [token](flotilla_core::ManagementSettings::token) configured, mutating requests need
//! `Authorization: Bearer <token>`.
//!
//! `/metrics` exposes what the `metrics` facade records once Flotilla's Prometheus recorder is
//! installed: call [`install_recorder`] before building the actor system (starting the
//! endpoint installs it too, but metric handles taken before then record nothing).
//!
//! ```no_run
//! # async fn demo(system: flotilla_actor::ActorSystem, cluster: flotilla_cluster::Cluster) -> Result<(), flotilla_management::ManagementError> {
//! let management = flotilla_management::Management::builder(&system, &cluster)
//!     .settings(system.config().management.clone())
//!     .start()
//!     .await?;
//! println!("dashboard: {}", management.url());
//! # Ok(()) }
//! ```

pub mod api;
pub mod client;
mod events;
pub mod fuzzing;
mod prometheus;
mod server;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use flotilla_actor::ActorSystem;
use flotilla_cluster::Cluster;
use flotilla_core::ManagementSettings;
use flotilla_lease::LeaseBackend;
use flotilla_sharding::RegionQueries;
use tokio_util::sync::CancellationToken;

pub use events::EventLog;
pub use prometheus::install_recorder;
pub use server::ROUTES;

/// The OpenAPI 3.1 description of the API, as checked in (`openapi.json` in this crate).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManagementError {
    /// The address could not be bound.
    #[error("cannot listen on {addr} for the management endpoint: {source}")]
    Bind {
        /// What was asked for.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be used.
    #[error("cannot use the management endpoint's TLS files: {0}")]
    Tls(String),
}

/// What the handlers read: the node and its parts.
pub(crate) struct NodeView {
    pub(crate) system: ActorSystem,
    pub(crate) cluster: Cluster,
    pub(crate) regions: Vec<Arc<dyn RegionQueries>>,
    pub(crate) leases: Option<Arc<dyn LeaseBackend>>,
    pub(crate) token: Option<String>,
    pub(crate) events: EventLog,
}

/// Starts a [`Management`] endpoint.
#[must_use = "nothing is served until start() is awaited"]
pub struct ManagementBuilder {
    system: ActorSystem,
    cluster: Cluster,
    settings: ManagementSettings,
    regions: Vec<Arc<dyn RegionQueries>>,
    leases: Option<Arc<dyn LeaseBackend>>,
}

impl ManagementBuilder {
    /// Where and how to listen (default: [`ManagementSettings::default`], 127.0.0.1:8558).
    pub fn settings(mut self, settings: ManagementSettings) -> Self {
        self.settings = settings;
        self
    }

    /// A shard region to report (any entity type; repeat for each).
    pub fn region(mut self, region: impl RegionQueries) -> Self {
        self.regions.push(Arc::new(region));
        self
    }

    /// A shard region to report, already shared.
    pub fn region_queries(mut self, region: Arc<dyn RegionQueries>) -> Self {
        self.regions.push(region);
        self
    }

    /// The lease backend whose leases `GET /leases` lists.
    pub fn lease_backend(mut self, backend: Arc<dyn LeaseBackend>) -> Self {
        self.leases = Some(backend);
        self
    }

    /// Binds and serves on the node's runtime until [`Management::stop`] or the actor system
    /// terminates.
    pub async fn start(self) -> Result<Management, ManagementError> {
        let addr = format!("{}:{}", self.settings.hostname, self.settings.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| ManagementError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local = listener
            .local_addr()
            .map_err(|source| ManagementError::Bind { addr, source })?;
        let tls = match &self.settings.tls {
            Some(files) => Some(tls::acceptor(files).map_err(ManagementError::Tls)?),
            None => None,
        };
        install_recorder();
        let stop = CancellationToken::new();
        let events = EventLog::new(1000);
        events::follow(&self.system, &self.cluster, &self.regions, &events, &stop).await;
        let view = Arc::new(NodeView {
            system: self.system.clone(),
            cluster: self.cluster,
            regions: self.regions,
            leases: self.leases,
            token: self.settings.token,
            events: events.clone(),
        });
        let router = server::router(Arc::clone(&view));
        let scheme = if tls.is_some() { "https" } else { "http" };
        {
            let stop = stop.clone();
            let system = self.system.clone();
            tokio::spawn(async move {
                let shutdown = async move {
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = system.when_terminated() => {}
                    }
                };
                let served = match tls {
                    Some(acceptor) => {
                        axum::serve(tls::TlsListener::new(listener, acceptor), router)
                            .with_graceful_shutdown(shutdown)
                            .await
                    }
                    None => {
                        axum::serve(listener, router)
                            .with_graceful_shutdown(shutdown)
                            .await
                    }
                };
                if let Err(e) = served {
                    tracing::warn!("the management endpoint stopped: {e}");
                }
            });
        }
        tracing::info!(
            "management endpoint on {scheme}://{local} (dashboard at /, metrics at /metrics)"
        );
        Ok(Management {
            local,
            scheme,
            stop,
            events,
        })
    }
}

/// A running management endpoint. Dropping it leaves it running; [`Management::stop`] ends it.
#[derive(Debug)]
pub struct Management {
    local: SocketAddr,
    scheme: &'static str,
    stop: CancellationToken,
    events: EventLog,
}

impl Management {
    /// An endpoint for this node: add regions and a lease backend, then start it.
    pub fn builder(system: &ActorSystem, cluster: &Cluster) -> ManagementBuilder {
        ManagementBuilder {
            system: system.clone(),
            cluster: cluster.clone(),
            settings: ManagementSettings::default(),
            regions: Vec::new(),
            leases: None,
        }
    }

    /// The address it listens on (with the port actually bound).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Its base URL, `http://127.0.0.1:8558` (the dashboard).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.local)
    }

    /// The event log the dashboard shows (add application events to it).
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// Stops serving and following the node.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}
