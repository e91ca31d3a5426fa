//! Service discovery for Flotilla clusters, and the bootstrap that joins a node with what it
//! finds.
//!
//! A node that does not know its seed nodes in advance (pods that come and go, an autoscaled
//! group) asks a [`ServiceDiscovery`] for its *contact points* — the other nodes of the service —
//! and [`bootstrap`] joins once enough of them are seen and the set has stopped changing, with
//! the lowest address first (the only seed that may form a new cluster; see
//! [`flotilla_proto::cluster::bootstrap`] for why this is safe).
//!
//! # Methods
//! - [`StaticDiscovery`]: a fixed list (`endpoints`).
//! - [`DnsDiscovery`]: A/AAAA records of `service-name`, or with `port-name` its SRV records
//!   `_<port-name>._<protocol>.<service-name>` (target and port of each), through
//!   `hickory-resolver` — the system's resolver configuration, or the given name servers.
//!   A Kubernetes headless service publishes exactly these.
//! - [`KubernetesDiscovery`]: the pods matching `pod-label-selector` in the namespace, listed
//!   from the API server: only Running pods that are not being deleted, by pod IP, with the port
//!   of the container port named `port-name` when one is.
//!
//! Configure it in `[cluster.discovery]` and call [`bootstrap::start_from_config`] after
//! starting the cluster.
//!
//! # What this crate is not
//! It decides nothing about membership: the pure [`Bootstrap`](flotilla_proto::cluster::bootstrap::Bootstrap)
//! machine decides when to join, and the cluster's join protocol does the rest.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use flotilla_core::{Address, DiscoveryMethod, DiscoverySettings};

pub mod bootstrap;
mod dns;
#[cfg(feature = "kubernetes")]
mod kubernetes;
#[cfg(feature = "testing")]
pub mod testing;

pub use dns::DnsDiscovery;
#[cfg(feature = "kubernetes")]
pub use kubernetes::KubernetesDiscovery;

/// A boxed future, for the object-safe [`ServiceDiscovery`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One node of the service as discovery found it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContactPoint {
    /// Its IP address or host name.
    pub host: String,
    /// Its remoting port, when discovery knows it (SRV records, a named container port).
    pub port: Option<u16>,
}

impl ContactPoint {
    /// The node's address in actor system `system`, with `default_port` when discovery gave
    /// none.
    pub fn address(&self, system: &str, default_port: u16) -> Result<Address, DiscoveryError> {
        let port = self.port.unwrap_or(default_port);
        Address::remote(system, &self.host, port)
            .map_err(|e| DiscoveryError::Invalid(format!("{}:{port}: {e}", self.host)))
    }
}

/// Why a lookup found nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The `[cluster.discovery]` settings cannot work.
    #[error("invalid discovery configuration: {0}")]
    Config(String),
    /// The lookup failed (the name server or API server said no, or did not answer).
    #[error("{method} lookup of {what} failed: {reason}")]
    Lookup {
        /// dns, kubernetes.
        method: &'static str,
        /// What was looked up.
        what: String,
        /// Why, in words.
        reason: String,
    },
    /// The lookup gave an answer that is not a node address.
    #[error("discovery returned an invalid contact point: {0}")]
    Invalid(String),
}

/// Finds the contact points of this node's service. Implementations are cheap to call
/// repeatedly: the bootstrap asks every `interval` until it joins.
pub trait ServiceDiscovery: Send + Sync {
    /// The method's name, for logs.
    fn method(&self) -> &'static str;

    /// The contact points now.
    fn lookup(&self) -> BoxFuture<'_, Result<Vec<ContactPoint>, DiscoveryError>>;
}

/// A fixed list of contact points.
#[derive(Debug, Clone)]
pub struct StaticDiscovery {
    points: Vec<ContactPoint>,
}

impl StaticDiscovery {
    /// From `host:port` or `host` entries (an IPv6 address in brackets: `[::1]:2552`).
    pub fn new(endpoints: &[String]) -> Result<Self, DiscoveryError> {
        let points = endpoints
            .iter()
            .map(|e| parse_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        if points.is_empty() {
            return Err(DiscoveryError::Config(
                "static discovery needs at least one endpoint".into(),
            ));
        }
        Ok(Self { points })
    }
}

impl ServiceDiscovery for StaticDiscovery {
    fn method(&self) -> &'static str {
        "static"
    }

    fn lookup(&self) -> BoxFuture<'_, Result<Vec<ContactPoint>, DiscoveryError>> {
        Box::pin(async move { Ok(self.points.clone()) })
    }
}

fn parse_endpoint(e: &str) -> Result<ContactPoint, DiscoveryError> {
    let bad = |why: &str| DiscoveryError::Config(format!("endpoint {e:?}: {why}"));
    let e = e.trim();
    if e.is_empty() {
        return Err(bad("empty"));
    }
    let (host, port) = if let Some(rest) = e.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad("no closing ']'"))?;
        match after.strip_prefix(':') {
            Some(p) => (host, Some(p)),
            None if after.is_empty() => (host, None),
            None => return Err(bad("junk after ']'")),
        }
    } else {
        match e.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => (e, None), // a bare IPv6 address
            Some((h, p)) => (h, Some(p)),
            None => (e, None),
        }
    };
    let port = port
        .map(|p| {
            p.parse::<u16>()
                .map_err(|_| bad("the port is not a number from 0 to 65535"))
        })
        .transpose()?;
    Ok(ContactPoint {
        host: host.to_owned(),
        port,
    })
}

/// The addresses of `points` in actor system `system` (duplicates removed).
pub fn addresses(
    points: &[ContactPoint],
    system: &str,
    default_port: u16,
) -> Result<BTreeSet<Address>, DiscoveryError> {
    points
        .iter()
        .map(|p| p.address(system, default_port))
        .collect()
}

/// The discovery `settings` ask for; `None` for method "none".
pub async fn from_settings(
    settings: &DiscoverySettings,
) -> Result<Option<Arc<dyn ServiceDiscovery>>, DiscoveryError> {
    settings
        .validate()
        .map_err(|e| DiscoveryError::Config(e.to_string()))?;
    Ok(match settings.method {
        DiscoveryMethod::None => None,
        DiscoveryMethod::Static => Some(Arc::new(StaticDiscovery::new(&settings.endpoints)?)),
        DiscoveryMethod::Dns => Some(Arc::new(DnsDiscovery::new(settings)?)),
        #[cfg(feature = "kubernetes")]
        DiscoveryMethod::Kubernetes => {
            Some(Arc::new(KubernetesDiscovery::connect(settings).await?))
        }
        #[cfg(not(feature = "kubernetes"))]
        DiscoveryMethod::Kubernetes => {
            return Err(DiscoveryError::Config(
                "method \"kubernetes\" needs Flotilla built with its `kubernetes` feature".into(),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(host: &str, port: Option<u16>) -> ContactPoint {
        ContactPoint {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn endpoints_parse_with_and_without_ports_and_ipv6() {
        let cases = [
            ("10.0.0.1:2552", point("10.0.0.1", Some(2552))),
            ("node-a", point("node-a", None)),
            ("[::1]:2552", point("::1", Some(2552))),
            ("[::1]", point("::1", None)),
            ("fe80::1", point("fe80::1", None)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_endpoint(text), Ok(expected), "{text}");
        }
        for bad in ["", "h:x", "h:70000", "[::1", "[::1]x"] {
            assert!(
                matches!(parse_endpoint(bad), Err(DiscoveryError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn addresses_take_the_default_port_when_discovery_gave_none() {
        let points = [point("10.0.0.2", None), point("10.0.0.1", Some(2553))];
        let got = addresses(&points, "app", 2552).unwrap_or_else(|e| panic!("{e}"));
        let text: Vec<String> = got.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "flotilla://app@10.0.0.1:2553",
                "flotilla://app@10.0.0.2:2552"
            ]
        );
    }
}
