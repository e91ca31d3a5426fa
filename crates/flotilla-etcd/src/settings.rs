//! How to reach etcd: endpoints, timeouts, credentials, TLS (`[lease.etcd]` in a node's TOML).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Connection settings of an etcd client, and the key prefix of the store that uses it
/// (`[lease.etcd]` in TOML for the lease backend).
///
/// `Debug` never shows the password.
///
/// ```
/// let s: flotilla_etcd::EtcdSettings = toml::from_str(r#"
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

impl std::fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.endpoints)
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
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("no endpoints given".into());
        }
        for e in &self.endpoints {
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

#[cfg(test)]
mod tests {
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
}
