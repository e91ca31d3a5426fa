//! The management HTTP endpoint's settings (`[management]`): the API behind `flotilla status`,
//! `/metrics` for Prometheus and the dashboard.
//!
//! ```toml
//! [management]
//! # Whether `flotilla node` serves it.
//! enabled = true
//! # The interface to listen on: loopback by default, so nothing outside the machine can reach
//! # it unless asked for.
//! hostname = "127.0.0.1"
//! # The port (0 picks a free one; the node prints the one it got).
//! port = 8558
//! # A bearer token the mutating endpoints (leave, down) require. Without one, they are open to
//! # every local process; an endpoint bound to anything but loopback refuses to start without
//! # one unless `insecure = true`. Environment: FLOTILLA__MANAGEMENT__TOKEN.
//! # token = "…"
//! # Start on a non-loopback address without a token, knowingly leaving leave and down open to
//! # whoever reaches the endpoint.
//! insecure = false
//! # Host names (no port) requests may carry in their Host header besides IP addresses,
//! # `localhost` and `hostname`: the names a browser uses to reach the endpoint. Any other
//! # name is refused with 421 (DNS rebinding protection).
//! allowed-hosts = []
//! # A client that has not sent a complete request head this long after connecting, or after
//! # its previous answer on a kept-alive connection, is disconnected.
//! header-read-timeout = "10s"
//! # Connections served at once (TLS handshakes included); more are closed at once.
//! max-connections = 128
//! # Serve HTTPS with this certificate chain and key (PEM).
//! # tls = { certificate = "mgmt.pem", private-key = "mgmt.key" }
//! ```

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// The management HTTP endpoint (`[management]`; see the [module docs](self) for the TOML).
///
/// `Debug` never prints the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManagementSettings {
    /// Whether `flotilla node` serves the endpoint (default true).
    pub enabled: bool,
    /// The interface to listen on (default 127.0.0.1).
    pub hostname: String,
    /// The port (default 8558; 0 picks a free one).
    pub port: u16,
    /// The bearer token mutating endpoints require (default none). Required when `hostname`
    /// is not a loopback address, unless `insecure` is set.
    pub token: Option<String>,
    /// Allow an endpoint on a non-loopback address without a token, whose mutating endpoints
    /// anyone who reaches it may call (default false: such an endpoint refuses to start).
    pub insecure: bool,
    /// Host names, besides IP addresses, `localhost` and `hostname`, that requests may name in
    /// their `Host` header (default none). Any other name is refused: a web page whose domain
    /// was rebound to this machine's address cannot talk to the endpoint.
    pub allowed_hosts: Vec<String>,
    /// How long a client may take to send a request's head, from connecting or from the end of
    /// its previous answer; then it is disconnected (default 10 s). It also bounds how long an
    /// idle kept-alive connection holds one of `max_connections`, and the TLS handshake.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Connections served at once (default 128); a connection beyond them is closed at once.
    pub max_connections: usize,
    /// HTTPS instead of HTTP (default none).
    pub tls: Option<ManagementTls>,
}

/// The certificate and key of an HTTPS management endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ManagementTls {
    /// The certificate chain, PEM.
    pub certificate: std::path::PathBuf,
    /// The private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub private_key: std::path::PathBuf,
}

impl Default for ManagementSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            hostname: "127.0.0.1".into(),
            port: 8558,
            token: None,
            insecure: false,
            allowed_hosts: Vec::new(),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 128,
            tls: None,
        }
    }
}

impl fmt::Debug for ManagementSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagementSettings")
            .field("enabled", &self.enabled)
            .field("hostname", &self.hostname)
            .field("port", &self.port)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("insecure", &self.insecure)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("max_connections", &self.max_connections)
            .field("tls", &self.tls)
            .finish()
    }
}

impl ManagementSettings {
    /// Checks every value's range ([`FlotillaConfig::from_toml_str`](crate::FlotillaConfig)
    /// does; the management endpoint checks settings given in code when it starts).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: String| {
            Err(ConfigError::Value {
                key: format!("management.{key}"),
                reason,
            })
        };
        if self.hostname.trim().is_empty() {
            return bad("hostname", "must not be empty".into());
        }
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return bad(
                "token",
                "must not be empty when set (leave it out for no token)".into(),
            );
        }
        if self.header_read_timeout.is_zero() {
            return bad("header-read-timeout", "must be greater than zero".into());
        }
        if self.max_connections == 0 {
            return bad("max-connections", "must be at least 1".into());
        }
        for host in &self.allowed_hosts {
            let name_like = !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
            if !name_like {
                return bad(
                    "allowed-hosts",
                    format!(
                        "{host:?} is not a host name: give names without scheme or port, such as \
                         \"flotilla.example.com\" (IP addresses are always allowed)"
                    ),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlotillaConfig;

    #[test]
    fn the_documented_example_is_the_default_and_loopback() {
        let doc = crate::documented_toml(include_str!("management_config.rs"));
        let c = FlotillaConfig::from_toml_str(&doc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.management, ManagementSettings::default());
        let m = FlotillaConfig::default().management;
        assert!(m.enabled && !m.insecure);
        assert_eq!((m.hostname.as_str(), m.port), ("127.0.0.1", 8558));
        assert!(m.token.is_none() && m.tls.is_none() && m.allowed_hosts.is_empty());
        assert_eq!(m.header_read_timeout, Duration::from_secs(10));
        assert_eq!(m.max_connections, 128);
    }

    #[test]
    fn out_of_range_values_are_refused_by_name() {
        for (text, key) in [
            ("token = \"\"", "management.token"),
            ("hostname = \" \"", "management.hostname"),
            (
                "header-read-timeout = \"0s\"",
                "management.header-read-timeout",
            ),
            ("max-connections = 0", "management.max-connections"),
            ("allowed-hosts = [\"\"]", "management.allowed-hosts"),
            (
                "allowed-hosts = [\"https://a.example\"]",
                "management.allowed-hosts",
            ),
            (
                "allowed-hosts = [\"a.example:80\"]",
                "management.allowed-hosts",
            ),
        ] {
            let err = FlotillaConfig::from_toml_str(&format!("[management]\n{text}\n"))
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let c = FlotillaConfig::from_toml_str(
            "[management]\nallowed-hosts = [\"Flotilla.example.com\", \"node-1\"]\n\
             header-read-timeout = \"300ms\"\nmax-connections = 1\ninsecure = true\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.management.allowed_hosts.len(), 2);
        assert_eq!(c.management.header_read_timeout, Duration::from_millis(300));
        assert!(c.management.insecure);
    }

    #[test]
    fn debug_never_prints_the_token() {
        let settings = ManagementSettings {
            token: Some("hunter2-management".into()),
            ..ManagementSettings::default()
        };
        let printed = format!("{settings:?}");
        assert!(!printed.contains("hunter2-management"), "{printed}");
        assert!(printed.contains("token: Some(\"<redacted>\")"), "{printed}");
        let pretty = format!("{settings:#?}");
        assert!(!pretty.contains("hunter2-management"), "{pretty}");
        let config = FlotillaConfig {
            management: settings,
            ..FlotillaConfig::default()
        };
        assert!(!format!("{config:?}").contains("hunter2-management"));
    }
}
