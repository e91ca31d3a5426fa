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
//! (`flotilla%3A%2F%2Fsys%40127.0.0.1%3A2552`); `sys@host:port` is accepted too.
//!
//! # Who may ask
//! - With a [token](flotilla_core::ManagementSettings::token) configured, every request but
//!   `GET` and `HEAD` needs `Authorization: Bearer <token>`. An endpoint on anything but a
//!   loopback address refuses to start without a token ([`ManagementError::Unprotected`])
//!   unless [`insecure`](flotilla_core::ManagementSettings::insecure) is set; on loopback
//!   without one, the mutating endpoints are open to local processes and the start says so.
//! - A request whose `Host` names neither an IP address, `localhost`, the bound hostname nor
//!   one of [`allowed_hosts`](flotilla_core::ManagementSettings::allowed_hosts) is answered
//!   421: DNS rebinding cannot turn a browser into a client (see `guard.rs`).
//! - At most [`max_connections`](flotilla_core::ManagementSettings::max_connections) are
//!   served at once, and each must send its request head within
//!   [`header_read_timeout`](flotilla_core::ManagementSettings::header_read_timeout) (see
//!   `listen.rs`).
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
mod guard;
mod listen;
mod prometheus;
mod server;
mod tls;

use std::net::{IpAddr, SocketAddr};
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
    /// The settings given in code are out of range.
    #[error("the management endpoint's settings: {0}")]
    Settings(#[from] flotilla_core::ConfigError),
    /// The endpoint would listen beyond this machine without a token, so that whoever reaches
    /// it could make members leave or declare them down. The operator fixes it with one of the
    /// three settings the message names.
    #[error(
        "the management endpoint would listen on {addr}, which is not a loopback address, without a token: anyone who reaches it could make members leave or declare them down. Set management.token (environment: FLOTILLA__MANAGEMENT__TOKEN), or listen on loopback only (management.hostname = \"127.0.0.1\"), or set management.insecure = true to allow it knowingly"
    )]
    Unprotected {
        /// The non-loopback address it would listen on.
        addr: SocketAddr,
    },
}

/// Who can reach an endpoint, by the addresses it listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Only processes on this machine: every address is a loopback address.
    Loopback,
    /// Other machines too (an unspecified address such as 0.0.0.0 or `::` included).
    Network,
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Whether an endpoint on `addrs` may start with `settings`' token and `insecure`, and how far
/// it reaches.
fn reach(addrs: &[SocketAddr], settings: &ManagementSettings) -> Result<Reach, ManagementError> {
    match addrs.iter().find(|a| !is_loopback(a.ip())) {
        None => Ok(Reach::Loopback),
        Some(_) if settings.token.is_some() || settings.insecure => Ok(Reach::Network),
        Some(&addr) => Err(ManagementError::Unprotected { addr }),
    }
}

/// The addresses `hostname:port` stands for (`[::1]` and `::1` alike).
async fn resolve(settings: &ManagementSettings) -> Result<Vec<SocketAddr>, ManagementError> {
    let host = settings
        .hostname
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let addr = format!("{}:{}", settings.hostname, settings.port);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, settings.port))
        .await
        .map_err(|source| ManagementError::Bind {
            addr: addr.clone(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(ManagementError::Bind {
            addr,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the host name resolves to no address",
            ),
        });
    }
    Ok(addrs)
}

/// What the handlers read: the node and its parts.
pub(crate) struct NodeView {
    pub(crate) system: ActorSystem,
    pub(crate) cluster: Cluster,
    pub(crate) regions: Vec<Arc<dyn RegionQueries>>,
    pub(crate) leases: Option<Arc<dyn LeaseBackend>>,
    pub(crate) token: Option<String>,
    /// The names a request's `Host` may carry.
    pub(crate) hosts: guard::HostPolicy,
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
    ///
    /// Refuses to start ([`ManagementError::Unprotected`]) when the hostname stands for any
    /// address but a loopback one and there is neither a token nor `insecure`.
    pub async fn start(self) -> Result<Management, ManagementError> {
        self.settings.validate()?;
        let addrs = resolve(&self.settings).await?;
        let reach = reach(&addrs, &self.settings)?;
        let tls = match &self.settings.tls {
            Some(files) => Some(tls::acceptor(files).map_err(ManagementError::Tls)?),
            None => None,
        };
        let addr = format!("{}:{}", self.settings.hostname, self.settings.port);
        let listener = tokio::net::TcpListener::bind(&addrs[..])
            .await
            .map_err(|source| ManagementError::Bind {
                addr: addr.clone(),
                source,
            })?;
        let local = listener
            .local_addr()
            .map_err(|source| ManagementError::Bind { addr, source })?;
        match (reach, &self.settings.token) {
            (_, Some(_)) => {}
            (Reach::Loopback, None) => tracing::warn!(
                "the management endpoint on {local} has no token: any process on this machine can make members leave or declare them down (set management.token to require one)"
            ),
            (Reach::Network, None) => tracing::warn!(
                "the management endpoint on {local} has no token and management.insecure is set: anyone who reaches it can make members leave or declare them down"
            ),
        }
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
            hosts: guard::HostPolicy::new(&self.settings.hostname, &self.settings.allowed_hosts),
            events: events.clone(),
        });
        let router = server::router(Arc::clone(&view));
        let scheme = if tls.is_some() { "https" } else { "http" };
        {
            // The actor system's end is the endpoint's end too.
            let stop = stop.clone();
            let system = self.system.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = stop.cancelled() => {}
                    () = system.when_terminated() => stop.cancel(),
                }
            });
        }
        let limits = listen::Limits {
            max_connections: self.settings.max_connections,
            header_read_timeout: self.settings.header_read_timeout,
        };
        tokio::spawn(listen::serve(listener, tls, router, limits, stop.clone()));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(token: Option<&str>, insecure: bool) -> ManagementSettings {
        ManagementSettings {
            token: token.map(Into::into),
            insecure,
            ..ManagementSettings::default()
        }
    }

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn beyond_loopback_a_token_or_insecure_is_required() {
        let loopback = addrs(&["127.0.0.1:8558", "[::1]:8558", "[::ffff:127.0.0.1]:1"]);
        assert_eq!(
            reach(&loopback, &settings(None, false)).ok(),
            Some(Reach::Loopback)
        );
        for open in [
            addrs(&["0.0.0.0:8558"]),
            addrs(&["[::]:8558"]),
            addrs(&["10.0.0.7:8558"]),
            addrs(&["127.0.0.1:8558", "192.168.1.2:8558"]),
        ] {
            let refused = reach(&open, &settings(None, false)).unwrap_err();
            assert!(
                matches!(refused, ManagementError::Unprotected { .. }),
                "{open:?}"
            );
            let text = refused.to_string();
            for fix in [
                "management.token",
                "FLOTILLA__MANAGEMENT__TOKEN",
                "127.0.0.1",
                "management.insecure = true",
            ] {
                assert!(text.contains(fix), "{text}");
            }
            assert_eq!(
                reach(&open, &settings(Some("t"), false)).ok(),
                Some(Reach::Network)
            );
            assert_eq!(
                reach(&open, &settings(None, true)).ok(),
                Some(Reach::Network)
            );
        }
    }
}
