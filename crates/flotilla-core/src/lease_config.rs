//! The `[lease]` section: lease timing shared by every backend, which backend a node uses, and
//! each backend's settings (`[lease.etcd]`, `[lease.azure]`, `[lease.kubernetes]`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
#[cfg(test)]
use crate::FlotillaConfig;

/// Lease timing, shared by every lease backend (defaults as Kubernetes' leader election's, not
/// Akka's 120 s: see `docs/design/leases.md`, "Default timings").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct LeaseSettings {
    /// The lease's time to live: without renewal it expires this long after the last renewal was
    /// sent (default 15 s).
    #[serde(with = "humantime_serde")]
    pub heartbeat_timeout: Duration,
    /// How often the holder renews (default 3 s); must be less than `heartbeat_timeout / 2`.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// How long acquire and release may take, retries included (default: the backend's
    /// recommendation, 5 s for most and 15 s for Azure Blob Storage; see
    /// [`LeaseSettings::operation_timeout`]).
    #[serde(with = "humantime_serde")]
    pub lease_operation_timeout: Option<Duration>,
    /// How long before the TTL runs out the holder stops trusting its lease (default TTL / 10).
    #[serde(with = "humantime_serde")]
    pub safety_margin: Option<Duration>,
    /// Who this node is to the lease backends. It must stay the same across restarts of the
    /// node, so that a restarted node gets its own unexpired leases back at once, and differ
    /// from every other running node's (default: the
    /// node's address without its incarnation UID, `flotilla://<system>@<host>:<port>`).
    pub owner: Option<String>,
    /// Where a node's leases live (default `memory`: the embedded backend, shared only by the
    /// nodes of one process). The chosen backend's own table configures it.
    pub backend: LeaseBackendKind,
    /// The etcd backend (`backend = "etcd"`).
    pub etcd: EtcdSettings,
    /// The Azure Blob Storage backend (`backend = "azure"`).
    pub azure: AzureSettings,
    /// The Kubernetes backend (`backend = "kubernetes"`).
    pub kubernetes: KubernetesSettings,
}

/// Where a node's leases live (`[lease] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum LeaseBackendKind {
    /// The embedded in-memory backend: leases are shared only by the nodes of one process.
    #[default]
    Memory,
    /// etcd v3 (`[lease.etcd]`; Flotilla's `etcd` feature).
    Etcd,
    /// Azure Blob Storage (`[lease.azure]`; the `azure` feature).
    Azure,
    /// Kubernetes `Lease` objects (`[lease.kubernetes]`; the `kubernetes` feature).
    Kubernetes,
}

impl LeaseBackendKind {
    /// Its name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Etcd => "etcd",
            Self::Azure => "azure",
            Self::Kubernetes => "kubernetes",
        }
    }
}

impl Default for LeaseSettings {
    fn default() -> Self {
        Self {
            heartbeat_timeout: Duration::from_secs(15),
            heartbeat_interval: Duration::from_secs(3),
            lease_operation_timeout: None,
            safety_margin: None,
            owner: None,
            backend: LeaseBackendKind::Memory,
            etcd: EtcdSettings::default(),
            azure: AzureSettings::default(),
            kubernetes: KubernetesSettings::default(),
        }
    }
}

impl LeaseSettings {
    /// Settings with this TTL and renewal interval, other values default; validated.
    pub fn new(
        heartbeat_timeout: Duration,
        heartbeat_interval: Duration,
    ) -> Result<Self, ConfigError> {
        let settings = Self {
            heartbeat_timeout,
            heartbeat_interval,
            ..Self::default()
        };
        settings.validate()?;
        Ok(settings)
    }

    /// The operation timeout used when neither the configuration nor the backend sets one.
    pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);

    /// Sets the operation timeout (builder style); validate afterwards.
    #[must_use]
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.lease_operation_timeout = Some(timeout);
        self
    }

    /// The operation timeout in force: the configured one, or 5 s. A lease client fills in its
    /// backend's recommendation when none is configured.
    pub fn operation_timeout(&self) -> Duration {
        self.lease_operation_timeout
            .unwrap_or(Self::DEFAULT_OPERATION_TIMEOUT)
    }

    /// Sets the safety margin (builder style); validate afterwards.
    #[must_use]
    pub fn with_safety_margin(mut self, margin: Duration) -> Self {
        self.safety_margin = Some(margin);
        self
    }

    /// The margin in force: the configured one, or TTL / 10.
    pub fn effective_safety_margin(&self) -> Duration {
        self.safety_margin.unwrap_or(self.heartbeat_timeout / 10)
    }

    /// Checks the relations between the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| {
            Err(ConfigError::Value {
                key: format!("lease.{key}"),
                reason,
            })
        };
        if self.heartbeat_interval.is_zero() {
            return bad("heartbeat-interval", "must be greater than zero".into());
        }
        if self.heartbeat_interval >= self.heartbeat_timeout / 2 {
            return bad(
                "heartbeat-interval",
                format!(
                    "{:?} must be less than heartbeat-timeout / 2 ({:?}), so that a renewal can fail \
                     and be retried before the lease expires",
                    self.heartbeat_interval,
                    self.heartbeat_timeout / 2
                ),
            );
        }
        if self.operation_timeout().is_zero() {
            return bad(
                "lease-operation-timeout",
                "must be greater than zero".into(),
            );
        }
        let margin = self.effective_safety_margin();
        if margin >= self.heartbeat_timeout - self.heartbeat_interval {
            return bad(
                "safety-margin",
                format!(
                    "{margin:?} must be less than heartbeat-timeout - heartbeat-interval ({:?})",
                    self.heartbeat_timeout - self.heartbeat_interval
                ),
            );
        }
        // The chosen backend's settings; the others are not used.
        let backend = match self.backend {
            LeaseBackendKind::Memory => Ok(()),
            LeaseBackendKind::Etcd => self.etcd.check(),
            LeaseBackendKind::Azure => self.azure.check(),
            LeaseBackendKind::Kubernetes => self.kubernetes.check(),
        };
        if let Err(reason) = backend {
            return bad(self.backend.as_str(), reason);
        }
        Ok(())
    }
}

#[cfg(test)]
mod lease_tests {
    use super::*;

    #[test]
    fn lease_defaults_are_documented_and_valid() {
        let s = LeaseSettings::default();
        assert_eq!(s.heartbeat_timeout, Duration::from_secs(15));
        assert_eq!(s.heartbeat_interval, Duration::from_secs(3));
        assert_eq!(s.operation_timeout(), Duration::from_secs(5));
        assert_eq!(s.effective_safety_margin(), Duration::from_millis(1500));
        s.validate().unwrap();
    }

    #[test]
    fn an_interval_of_half_the_timeout_or_more_is_refused_clearly() {
        let err = LeaseSettings::new(Duration::from_secs(10), Duration::from_secs(5)).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("lease.heartbeat-interval") && text.contains("heartbeat-timeout / 2"),
            "{text}"
        );
        let err = FlotillaConfig::from_toml_str(
            "[lease]\nheartbeat-timeout = \"20s\"\nheartbeat-interval = \"12s\"",
        );
        assert!(err.is_err());
        let ok = FlotillaConfig::from_toml_str(
            "[lease]\nheartbeat-timeout = \"20s\"\nheartbeat-interval = \"2s\"",
        )
        .unwrap();
        assert_eq!(ok.lease.effective_safety_margin(), Duration::from_secs(2));
        assert!(
            LeaseSettings::default()
                .with_safety_margin(Duration::from_secs(110))
                .validate()
                .is_err()
        );
        assert!(
            LeaseSettings::default()
                .with_operation_timeout(Duration::ZERO)
                .validate()
                .is_err()
        );
    }
}

/// Connection settings of an etcd client, and the key prefix of the store that uses it
/// (`[lease.etcd]` in TOML for the lease backend).
///
/// `Debug` never shows the password.
///
/// ```
/// let s: flotilla_core::EtcdSettings = toml::from_str(r#"
///     endpoints = ["https://etcd-0.etcd:2379", "https://etcd-1.etcd:2379"]
///     user = "flotilla"
///     password = "s3cret"
///     [tls]
///     ca-file = "/etc/flotilla/etcd-ca.pem"
/// "#).unwrap();
/// assert!(!format!("{s:?}").contains("s3cret"));
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct EtcdSettings {
    /// Client URLs of the etcd members (`http://` or `https://`). Default:
    /// `["http://127.0.0.1:2379"]`.
    pub endpoints: Vec<String>,
    /// Key prefix under which the store keeps its keys; it must end with `/`. Default:
    /// `/flotilla/leases/`.
    pub prefix: String,
    /// Timeout of one backend call (it may make several etcd requests). Default: 2 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Timeout for establishing the connection. Default: 2 s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// User name, when etcd authentication is on. Default: none.
    pub user: Option<String>,
    /// Password of `user`. Default: none. Never logged.
    pub password: Option<String>,
    /// TLS for `https://` endpoints. Default: none — `https://` endpoints are then checked
    /// against the public web roots, with no client certificate.
    pub tls: Option<EtcdTls>,
}

/// TLS settings of an etcd client (`[lease.etcd.tls]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct EtcdTls {
    /// PEM file of the certificate authority that signed the etcd servers' certificates.
    /// Default: none (the public web roots).
    pub ca_file: Option<PathBuf>,
    /// PEM file of this client's certificate, for etcd's `--client-cert-auth`. Default: none.
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key; given with `cert-file`. Default: none.
    pub key_file: Option<PathBuf>,
    /// The name the servers' certificates must carry, when it is not the endpoints' host.
    /// Default: none (the host of each endpoint).
    pub server_name: Option<String>,
}

/// Whether an endpoint URL carries credentials (`https://user:password@host:2379`).
fn has_userinfo(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.contains('@')
}

/// An endpoint as it may be shown: without what precedes `@` in its authority.
fn shown_endpoint(endpoint: &str) -> String {
    if !has_userinfo(endpoint) {
        return endpoint.to_owned();
    }
    let (scheme, rest) = endpoint.split_once("://").unwrap_or(("", endpoint));
    let host = rest.split_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://<redacted>@{host}")
}

impl std::fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let endpoints: Vec<String> = self.endpoints.iter().map(|e| shown_endpoint(e)).collect();
        f.debug_struct("EtcdSettings")
            .field("endpoints", &endpoints)
            .field("prefix", &self.prefix)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl Default for EtcdSettings {
    fn default() -> Self {
        Self {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: "/flotilla/leases/".into(),
            request_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            user: None,
            password: None,
            tls: None,
        }
    }
}

impl EtcdSettings {
    /// Settings for these endpoints, the rest default.
    pub fn new(endpoints: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Every problem these settings have that a connection attempt need not be made to find.
    pub fn check(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("no endpoints given".into());
        }
        for e in &self.endpoints {
            if has_userinfo(e) {
                // Not repeated: what precedes '@' is a user name and password.
                return Err(format!(
                    "endpoint {:?} carries credentials: give them as user and password",
                    shown_endpoint(e)
                ));
            }
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(format!(
                    "endpoint {e:?} must be a URL such as http://127.0.0.1:2379"
                ));
            }
            if e.starts_with("http://") && self.tls.is_some() {
                return Err(format!(
                    "endpoint {e:?} is plain http, but TLS settings are given: use https://"
                ));
            }
        }
        if self.prefix.is_empty() || !self.prefix.ends_with('/') {
            return Err(format!(
                "prefix {:?} must be non-empty and end with '/'",
                self.prefix
            ));
        }
        if self.request_timeout.is_zero() {
            return Err("request-timeout must be positive".into());
        }
        if self.connect_timeout.is_zero() {
            return Err("connect-timeout must be positive".into());
        }
        if self.user.is_some() != self.password.is_some() {
            return Err("user and password must be given together".into());
        }
        if let Some(tls) = &self.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            return Err("tls cert-file and key-file must be given together".into());
        }
        Ok(())
    }
}

/// The Azure Blob Storage backend's settings (`[lease.azure]`).
///
/// `Debug` never shows the connection string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct AzureSettings {
    /// A storage connection string (account key or SAS). Default:
    /// `UseDevelopmentStorage=true` (Azurite on 127.0.0.1:10000). Never logged.
    pub connection_string: String,
    /// The container holding the lease records; created if missing. Default: `flotilla-leases`.
    pub container: String,
    /// Timeout of one backend call. Default: 6 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl std::fmt::Debug for AzureSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureSettings")
            .field("container", &self.container)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for AzureSettings {
    fn default() -> Self {
        Self {
            connection_string: "UseDevelopmentStorage=true".into(),
            container: "flotilla-leases".into(),
            request_timeout: Duration::from_secs(6),
        }
    }
}

impl AzureSettings {
    /// Every problem these settings have that a connection attempt need not be made to find
    /// (the connection string itself is read by the backend).
    pub fn check(&self) -> Result<(), String> {
        if self.connection_string.trim().is_empty() {
            return Err("connection-string is empty".into());
        }
        if self.container.is_empty() {
            return Err("container is empty".into());
        }
        if self.request_timeout.is_zero() {
            return Err("request-timeout must be positive".into());
        }
        Ok(())
    }
}

/// The Kubernetes backend's settings (`[lease.kubernetes]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct KubernetesSettings {
    /// The namespace of the Lease objects. Default: the client configuration's namespace (the
    /// pod's own namespace in a cluster, else `default`).
    pub namespace: Option<String>,
    /// An API server URL to use instead of the inferred configuration, without credentials.
    /// Default: none.
    pub api_server: Option<String>,
    /// Timeout of one API request. Default: 2 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        Self {
            namespace: None,
            api_server: None,
            request_timeout: Duration::from_secs(2),
        }
    }
}

impl KubernetesSettings {
    /// The timeout the lease driver puts on one backend call: a call may read and write (and
    /// once more after a conflict), so twice `request-timeout`.
    pub fn call_timeout(&self) -> Duration {
        self.request_timeout * 2
    }

    /// Every problem these settings have that a connection attempt need not be made to find.
    pub fn check(&self) -> Result<(), String> {
        if self.request_timeout.is_zero() {
            return Err("request-timeout must be positive".into());
        }
        if self.namespace.as_deref().is_some_and(str::is_empty) {
            return Err("namespace is empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod etcd_tests {
    use super::*;

    #[test]
    fn settings_have_documented_defaults_and_parse_from_toml() {
        let s: EtcdSettings = toml::from_str(
            r#"
            endpoints = ["http://10.0.0.1:2379"]
            request-timeout = "3s"
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.endpoints, ["http://10.0.0.1:2379"]);
        assert_eq!(s.request_timeout, Duration::from_secs(3));
        assert_eq!(s.prefix, "/flotilla/leases/");
        assert_eq!(s.tls, None);
        assert!(toml::from_str::<EtcdSettings>("endpoint = 1").is_err());
        assert!(s.check().is_ok());
    }

    #[test]
    fn unusable_settings_are_named() {
        let bad = |f: fn(&mut EtcdSettings)| {
            let mut s = EtcdSettings::default();
            f(&mut s);
            s.check().unwrap_err()
        };
        assert!(bad(|s| s.endpoints.clear()).contains("no endpoints"));
        assert!(bad(|s| s.endpoints = vec!["127.0.0.1:2379".into()]).contains("must be a URL"));
        assert!(bad(|s| s.prefix = "x".into()).contains("end with '/'"));
        assert!(bad(|s| s.user = Some("u".into())).contains("together"));
        assert!(bad(|s| s.tls = Some(EtcdTls::default())).contains("use https://"));
        let half = |s: &mut EtcdSettings| {
            s.endpoints = vec!["https://etcd:2379".into()];
            s.tls = Some(EtcdTls {
                cert_file: Some("c.pem".into()),
                ..EtcdTls::default()
            });
        };
        assert!(bad(half).contains("key-file"));
    }

    #[test]
    fn debug_hides_the_password() {
        let s = EtcdSettings {
            user: Some("flotilla".into()),
            password: Some("hunter2".into()),
            ..EtcdSettings::default()
        };
        let shown = format!("{s:?}");
        assert!(
            shown.contains("flotilla") && !shown.contains("hunter2"),
            "{shown}"
        );
    }

    #[test]
    fn credentials_in_an_endpoint_are_refused_and_never_shown() {
        let s = EtcdSettings::new(["https://root:Hunter2Pw@etcd-0:2379/x?y=1"]);
        let err = s.check().unwrap_err();
        assert!(
            err.contains("carries credentials") && !err.contains("Hunter2Pw"),
            "{err}"
        );
        let shown = format!("{s:?}");
        assert!(
            shown.contains("etcd-0:2379")
                && !shown.contains("Hunter2Pw")
                && !shown.contains("root"),
            "{shown}"
        );
        // An '@' after the authority is not a credential.
        assert!(EtcdSettings::new(["http://etcd:2379/a@b"]).check().is_ok());
    }
}

#[cfg(test)]
mod azure_tests {
    use super::*;

    #[test]
    fn debug_hides_the_connection_string() {
        for connection_string in [
            "DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=S3cretKeyBase64==",
            "BlobEndpoint=https://acme.blob.core.windows.net;SharedAccessSignature=sv=2023-11-03&sig=S3cretSig%3D",
        ] {
            let s = AzureSettings {
                connection_string: connection_string.into(),
                ..AzureSettings::default()
            };
            let shown = format!("{s:?} {s:#?}");
            assert!(
                shown.contains("flotilla-leases") && !shown.contains("S3cret"),
                "{shown}"
            );
        }
    }
}

#[cfg(test)]
mod kubernetes_tests {
    use super::*;

    /// The Kubernetes settings hold no credential: the client's (a service account token, a
    /// kubeconfig) are read by the client and never part of them.
    #[test]
    fn the_settings_hold_no_credential() {
        let s: KubernetesSettings =
            toml::from_str("namespace = \"orders\"").unwrap_or_else(|e| panic!("{e}"));
        assert!(
            toml::from_str::<KubernetesSettings>("token = \"x\"").is_err(),
            "no token key"
        );
        assert!(format!("{s:?}").contains("orders"));
    }
}

#[cfg(test)]
mod backend_tests {
    use super::*;

    /// Secrets come from the environment as they are: a numeric password stays a string (read
    /// as a number it would be refused, with its value quoted in the error), and an Azure
    /// connection string needs no quoting.
    #[test]
    fn secrets_from_the_environment_are_strings() {
        let vars = [
            ("FLOTILLA__LEASE__BACKEND", "azure"),
            ("FLOTILLA__LEASE__ETCD__USER", "\"root\""),
            ("FLOTILLA__LEASE__ETCD__PASSWORD", "20250101"),
            (
                "FLOTILLA__LEASE__AZURE__CONNECTION_STRING",
                "AccountName=acme;AccountKey=S3cret==;EndpointSuffix=core.windows.net",
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let config = FlotillaConfig::from_toml_and_env("", vars).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config.lease.etcd.user.as_deref(),
            Some("root"),
            "TOML strings still work"
        );
        assert_eq!(config.lease.etcd.password.as_deref(), Some("20250101"));
        assert_eq!(
            config.lease.azure.connection_string,
            "AccountName=acme;AccountKey=S3cret==;EndpointSuffix=core.windows.net"
        );
    }

    #[test]
    fn the_backend_and_its_settings_come_from_the_lease_section() {
        let config = FlotillaConfig::from_toml_str(
            r#"
            [lease]
            backend = "etcd"
            [lease.etcd]
            endpoints = ["https://etcd-0:2379"]
            user = "flotilla"
            password = "s3cret"
            [lease.etcd.tls]
            ca-file = "/etc/flotilla/ca.pem"
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.lease.backend, LeaseBackendKind::Etcd);
        assert_eq!(config.lease.etcd.endpoints, ["https://etcd-0:2379"]);
        assert!(
            !format!("{config:?}").contains("s3cret"),
            "no secret in Debug"
        );
        // Only the chosen backend's settings are checked, with the key named.
        let err = FlotillaConfig::from_toml_str(
            "[lease]\nbackend = \"etcd\"\n[lease.etcd]\nendpoints = [\"etcd:2379\"]",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("lease.etcd") && err.contains("must be a URL"),
            "{err}"
        );
        assert!(FlotillaConfig::from_toml_str("[lease.etcd]\nendpoints = [\"etcd:2379\"]").is_ok());
        let err = FlotillaConfig::from_toml_str("[lease]\nbackend = \"zookeeper\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("zookeeper"), "{err}");
        let azure = FlotillaConfig::from_toml_str(
            "[lease]\nbackend = \"azure\"\n[lease.azure]\nconnection-string = \"AccountKey=hush\"",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{azure:?}").contains("hush"));
    }
}
