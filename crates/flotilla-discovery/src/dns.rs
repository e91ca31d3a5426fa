//! DNS discovery through `hickory-resolver`.

use std::net::SocketAddr;
use std::time::Duration;

use flotilla_core::DiscoverySettings;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{LookupIpStrategy, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;

use crate::{BoxFuture, ContactPoint, DiscoveryError, ServiceDiscovery};

/// Contact points from DNS: the A/AAAA records of `service-name` (each IP a contact point,
/// without a port), or — with `port-name` — the SRV records `_<port-name>._<protocol>.<service-name>`
/// (each target, resolved to its IPs when it resolves, with the record's port).
///
/// Nothing is cached between lookups: every lookup asks the name servers, so a bootstrap sees
/// nodes come and go.
pub struct DnsDiscovery {
    resolver: TokioResolver,
    name: String,
    srv: bool,
    timeout: Duration,
}

impl std::fmt::Debug for DnsDiscovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsDiscovery")
            .field("name", &self.name)
            .field("srv", &self.srv)
            .finish_non_exhaustive()
    }
}

impl DnsDiscovery {
    /// A resolver for `settings` (`nameservers`, or the system's configuration when empty).
    pub fn new(settings: &DiscoverySettings) -> Result<Self, DiscoveryError> {
        let config_error = |e: String| DiscoveryError::Config(format!("dns: {e}"));
        if settings.service_name.is_empty() {
            return Err(config_error("service-name is required".into()));
        }
        let provider = TokioConnectionProvider::default();
        let mut builder = if settings.nameservers.is_empty() {
            TokioResolver::builder(provider).map_err(|e| {
                config_error(format!(
                    "cannot read the system's resolver configuration: {e}"
                ))
            })?
        } else {
            let mut config = ResolverConfig::new();
            for ns in &settings.nameservers {
                let addr: SocketAddr = ns
                    .parse()
                    .map_err(|_| config_error(format!("name server {ns:?} is not ip:port")))?;
                config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
                config.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            }
            TokioResolver::builder_with_config(config, provider)
        };
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.cache_size = 0;
        opts.timeout = settings.resolve_timeout;
        opts.attempts = 1;
        // Every node, whichever family its address is in.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let srv = !settings.port_name.is_empty();
        let name = if srv {
            format!(
                "_{}._{}.{}",
                settings.port_name, settings.protocol, settings.service_name
            )
        } else {
            settings.service_name.clone()
        };
        Ok(Self {
            resolver: builder.build(),
            name,
            srv,
            timeout: settings.resolve_timeout,
        })
    }

    /// The name it looks up.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn failed(&self, reason: impl std::fmt::Display) -> DiscoveryError {
        DiscoveryError::Lookup {
            method: "dns",
            what: self.name.clone(),
            reason: reason.to_string(),
        }
    }

    async fn a_records(&self) -> Result<Vec<ContactPoint>, DiscoveryError> {
        let ips = self
            .resolver
            .lookup_ip(self.name.as_str())
            .await
            .map_err(|e| self.failed(e))?;
        Ok(ips
            .iter()
            .map(|ip| ContactPoint {
                host: ip.to_string(),
                port: None,
            })
            .collect())
    }

    async fn srv_records(&self) -> Result<Vec<ContactPoint>, DiscoveryError> {
        let records = self
            .resolver
            .srv_lookup(self.name.as_str())
            .await
            .map_err(|e| self.failed(e))?;
        let mut points = Vec::new();
        for srv in records.iter() {
            let target = srv.target().to_utf8();
            let target = target.trim_end_matches('.');
            match self.resolver.lookup_ip(target).await {
                Ok(ips) => points.extend(ips.iter().map(|ip| ContactPoint {
                    host: ip.to_string(),
                    port: Some(srv.port()),
                })),
                // The target's name is still a contact point; remoting resolves it.
                Err(e) => {
                    tracing::debug!("SRV target {target} of {} does not resolve: {e}", self.name);
                    points.push(ContactPoint {
                        host: target.to_owned(),
                        port: Some(srv.port()),
                    });
                }
            }
        }
        Ok(points)
    }
}

impl ServiceDiscovery for DnsDiscovery {
    fn method(&self) -> &'static str {
        "dns"
    }

    fn lookup(&self) -> BoxFuture<'_, Result<Vec<ContactPoint>, DiscoveryError>> {
        Box::pin(async move {
            let lookup = async {
                if self.srv {
                    self.srv_records().await
                } else {
                    self.a_records().await
                }
            };
            tokio::time::timeout(self.timeout, lookup)
                .await
                .unwrap_or_else(
                    |_| Err(self.failed(format!("no answer within {:?}", self.timeout))),
                )
        })
    }
}
