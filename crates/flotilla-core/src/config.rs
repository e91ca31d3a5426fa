//! Configuration, read from TOML, with documented defaults.
//!
//! Every section and key is optional; what is left out takes the default shown below. Unknown keys
//! are refused, so a typo is an error and not a silently ignored setting.
//!
//! ```toml
//! [actor.dead-letters]
//! # Dead letters logged before logging is suspended (all are still counted and published).
//! log-first = 10
//! # How long logging stays suspended; then one line reports how many were not logged.
//! log-suspend = "5m"
//!
//! [lease]
//! # The lease's time to live: a holder that stops renewing loses it after this long. It bounds
//! # how long a crashed node's shards and singletons stay unavailable (Akka's default is 120 s;
//! # see docs/design/leases.md, "Default timings").
//! heartbeat-timeout = "15s"
//! # How often a holder renews; must be less than heartbeat-timeout / 2.
//! heartbeat-interval = "3s"
//! # How long acquire and release may take, retries included, before they answer "unknown".
//! lease-operation-timeout = "5s"
//! # The holder counts the lease as lost this long before the TTL of its last confirmed renewal
//! # runs out (some backends accept a late renewal of a lapsed lease). Default: TTL / 10.
//! # safety-margin = "1500ms"
//!
//! [coordinated-shutdown]
//! # Timeout of every phase not listed under `phases`.
//! default-phase-timeout = "5s"
//!
//! # Per-phase overrides. Defaults: cluster-sharding-shutdown-region, cluster-exiting and
//! # actor-system-terminate 10 s; every other phase `default-phase-timeout`.
//! [coordinated-shutdown.phases.cluster-sharding-shutdown-region]
//! timeout = "10s"
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{LeaseSettings, ManagementSettings};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TOML text does not parse, or holds an unknown key or a value of the wrong type.
    #[error("invalid configuration: {0}")]
    Toml(#[from] toml::de::Error),
    /// A value parses but is out of range.
    #[error("invalid configuration value for {key}: {reason}")]
    Value {
        /// The offending key, dotted from the root.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The keys whose values are secrets: given in the environment, they are always strings.
const SECRET_KEYS: [&str; 4] = ["password", "secret", "token", "connection-string"];

/// The root of Flotilla's configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct FlotillaConfig {
    /// Local actor runtime settings.
    pub actor: ActorSettings,
    /// Coordinated shutdown phases and timeouts.
    pub coordinated_shutdown: CoordinatedShutdownSettings,
    /// Lease timing shared by every lease backend.
    pub lease: LeaseSettings,
    /// Remoting: associations, system messages, remote deathwatch.
    pub remote: RemoteSettings,
    /// Cluster membership, failure detection and the split-brain resolver.
    pub cluster: crate::ClusterSettings,
    /// Cluster sharding.
    pub sharding: crate::ShardingSettings,
    /// The management HTTP endpoint (API, metrics, dashboard) of `flotilla node`.
    pub management: ManagementSettings,
}

impl FlotillaConfig {
    /// Parses and validates a TOML document.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document (empty for all defaults) and lays environment variables over it,
    /// then validates. A variable `FLOTILLA__<SECTION>__<KEY>` sets `<section>.<key>` (lower
    /// case, `_` read as `-`; more `__` for deeper tables): `FLOTILLA__MANAGEMENT__PORT=9000`
    /// sets `management.port`. The value is read as a TOML value (`9000`, `true`, `"5s"`,
    /// `["a", "b"]`) and, when it is not one, as a string (`5s`). Other variables are ignored.
    pub fn from_toml_and_env(
        text: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = toml::from_str(text)?;
        for (name, value) in vars {
            let Some(path) = name.strip_prefix("FLOTILLA__") else {
                continue;
            };
            let keys: Vec<String> = path
                .split("__")
                .map(|k| k.to_ascii_lowercase().replace('_', "-"))
                .collect();
            if keys.iter().any(String::is_empty) {
                return Err(ConfigError::Value {
                    key: name.clone(),
                    reason: "an empty key in the variable's name".into(),
                });
            }
            let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
                .ok()
                .and_then(|mut t| t.remove("v"));
            // A secret is a string even when it looks like a number or a boolean: read as one,
            // it would be refused with its value quoted in the error.
            let secret = SECRET_KEYS.contains(&keys[keys.len() - 1].as_str());
            let parsed = match parsed {
                Some(v) if !secret || v.is_str() => v,
                _ => toml::Value::String(value),
            };
            let mut at = &mut table;
            for key in &keys[..keys.len() - 1] {
                let entry = at
                    .entry(key.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                at = entry.as_table_mut().ok_or_else(|| ConfigError::Value {
                    key: name.clone(),
                    reason: format!("{key} is not a table"),
                })?;
            }
            at.insert(keys[keys.len() - 1].clone(), parsed);
        }
        let config: Self = table.try_into()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.lease.validate()?;
        self.remote.validate()?;
        self.cluster.validate()?;
        self.sharding.validate()?;
        self.management.validate()?;
        for phase in Phase::ALL {
            if self.coordinated_shutdown.phase_timeout(phase).is_zero() {
                return Err(ConfigError::Value {
                    key: format!("coordinated-shutdown.phases.{phase}.timeout"),
                    reason: "must be greater than zero".into(),
                });
            }
        }
        Ok(())
    }
}

/// Local actor runtime settings.
///
/// There is no "throughput" setting: an actor yields its worker thread whenever tokio's
/// cooperative budget is spent (after at most 128 messages or signals in a row), which keeps its
/// neighbours fair without extra yields.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ActorSettings {
    /// Dead-letter logging.
    pub dead_letters: DeadLetterSettings,
}

/// How dead letters are logged. Every dead letter is counted and published whatever these say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct DeadLetterSettings {
    /// How many dead letters are logged before logging is suspended (default 10; 0 logs none).
    pub log_first: u32,
    /// How long logging stays suspended after `log_first` lines (default 5 minutes).
    #[serde(with = "humantime_serde")]
    pub log_suspend: Duration,
}

impl Default for DeadLetterSettings {
    fn default() -> Self {
        Self {
            log_first: 10,
            log_suspend: Duration::from_secs(300),
        }
    }
}

/// The phases of coordinated shutdown, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Before the node stops accepting requests.
    BeforeServiceUnbind,
    /// Stop accepting new incoming requests (unbind HTTP, etc.).
    ServiceUnbind,
    /// Wait for requests in progress to finish.
    ServiceRequestsDone,
    /// Final clean-up of services.
    ServiceStop,
    /// Before the node leaves the cluster.
    BeforeClusterShutdown,
    /// Shard regions hand off their shards (and release their leases).
    ClusterShardingShutdownRegion,
    /// The node asks to leave the cluster.
    ClusterLeave,
    /// The node is Exiting: singletons hand over.
    ClusterExiting,
    /// The node has finished exiting.
    ClusterExitingDone,
    /// Cluster extensions shut down.
    ClusterShutdown,
    /// Last application tasks before actors are stopped.
    BeforeActorSystemTerminate,
    /// Every actor is stopped: user actors first, then the runtime's own.
    ActorSystemTerminate,
}

impl Phase {
    /// Every phase in the order it runs.
    pub const ALL: [Self; 12] = [
        Self::BeforeServiceUnbind,
        Self::ServiceUnbind,
        Self::ServiceRequestsDone,
        Self::ServiceStop,
        Self::BeforeClusterShutdown,
        Self::ClusterShardingShutdownRegion,
        Self::ClusterLeave,
        Self::ClusterExiting,
        Self::ClusterExitingDone,
        Self::ClusterShutdown,
        Self::BeforeActorSystemTerminate,
        Self::ActorSystemTerminate,
    ];

    /// The phase's kebab-case name, as used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BeforeServiceUnbind => "before-service-unbind",
            Self::ServiceUnbind => "service-unbind",
            Self::ServiceRequestsDone => "service-requests-done",
            Self::ServiceStop => "service-stop",
            Self::BeforeClusterShutdown => "before-cluster-shutdown",
            Self::ClusterShardingShutdownRegion => "cluster-sharding-shutdown-region",
            Self::ClusterLeave => "cluster-leave",
            Self::ClusterExiting => "cluster-exiting",
            Self::ClusterExitingDone => "cluster-exiting-done",
            Self::ClusterShutdown => "cluster-shutdown",
            Self::BeforeActorSystemTerminate => "before-actor-system-terminate",
            Self::ActorSystemTerminate => "actor-system-terminate",
        }
    }

    /// The built-in timeout of this phase when configuration does not override it.
    pub fn builtin_timeout(self, default_phase_timeout: Duration) -> Duration {
        match self {
            Self::ClusterShardingShutdownRegion
            | Self::ClusterExiting
            | Self::ActorSystemTerminate => Duration::from_secs(10),
            _ => default_phase_timeout,
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Phase {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| format!("unknown coordinated-shutdown phase {s:?}"))
    }
}

/// Coordinated shutdown settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct CoordinatedShutdownSettings {
    /// Timeout of phases without an override or built-in default (default 5 s).
    #[serde(with = "humantime_serde")]
    pub default_phase_timeout: Duration,
    /// Per-phase overrides.
    pub phases: BTreeMap<Phase, PhaseSettings>,
}

impl Default for CoordinatedShutdownSettings {
    fn default() -> Self {
        Self {
            default_phase_timeout: Duration::from_secs(5),
            phases: BTreeMap::new(),
        }
    }
}

impl CoordinatedShutdownSettings {
    /// The timeout in force for `phase`.
    pub fn phase_timeout(&self, phase: Phase) -> Duration {
        self.phases
            .get(&phase)
            .and_then(|p| p.timeout)
            .unwrap_or_else(|| phase.builtin_timeout(self.default_phase_timeout))
    }

    /// Sets one phase's timeout (builder style, for code and tests).
    #[must_use]
    pub fn with_phase_timeout(mut self, phase: Phase, timeout: Duration) -> Self {
        self.phases.entry(phase).or_default().timeout = Some(timeout);
        self
    }
}

/// Settings of one coordinated-shutdown phase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct PhaseSettings {
    /// How long the phase waits for its tasks before it logs the stragglers and moves on.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn environment_variables_override_the_file() {
        let c = FlotillaConfig::from_toml_and_env(
            "[management]\nport = 9000\nhostname = \"0.0.0.0\"\n",
            vars(&[
                ("FLOTILLA__MANAGEMENT__PORT", "9100"),
                ("FLOTILLA__MANAGEMENT__TOKEN", "s3cret"),
                ("FLOTILLA__LEASE__HEARTBEAT_TIMEOUT", "20s"),
                ("FLOTILLA__CLUSTER__ROLES", "[\"a\", \"b\"]"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.management.port, 9100);
        assert_eq!(c.management.hostname, "0.0.0.0", "the file's value stays");
        assert_eq!(c.management.token.as_deref(), Some("s3cret"));
        assert_eq!(c.lease.heartbeat_timeout, Duration::from_secs(20));
        assert_eq!(c.cluster.roles.len(), 2);
    }

    #[test]
    fn a_bad_environment_override_is_a_clear_error() {
        let e = FlotillaConfig::from_toml_and_env(
            "",
            vars(&[("FLOTILLA__MANAGEMENT__PORT", "not-a-port")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("port"), "{e}");
        let e =
            FlotillaConfig::from_toml_and_env("", vars(&[("FLOTILLA__MANAGEMENT__NO_SUCH", "1")]))
                .unwrap_err();
        assert!(e.to_string().contains("no-such"), "{e}");
        assert!(FlotillaConfig::from_toml_and_env("", vars(&[("FLOTILLA____X", "1")])).is_err());
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let c = FlotillaConfig::from_toml_str("").unwrap();
        let cs = &c.coordinated_shutdown;
        assert_eq!(
            cs.phase_timeout(Phase::ClusterShardingShutdownRegion),
            Duration::from_secs(10)
        );
        assert_eq!(
            cs.phase_timeout(Phase::ClusterExiting),
            Duration::from_secs(10)
        );
        assert_eq!(
            cs.phase_timeout(Phase::ActorSystemTerminate),
            Duration::from_secs(10)
        );
        assert_eq!(
            cs.phase_timeout(Phase::ServiceUnbind),
            Duration::from_secs(5)
        );
        assert_eq!(c.actor.dead_letters.log_first, 10);
    }

    #[test]
    fn the_doc_example_parses_and_overrides_apply() {
        let text = r#"
            [actor.dead-letters]
            log-first = 3
            log-suspend = "1m"
            [coordinated-shutdown]
            default-phase-timeout = "2s"
            [coordinated-shutdown.phases.cluster-leave]
            timeout = "750ms"
        "#;
        let c = FlotillaConfig::from_toml_str(text).unwrap();
        let cs = &c.coordinated_shutdown;
        assert_eq!(
            cs.phase_timeout(Phase::ClusterLeave),
            Duration::from_millis(750)
        );
        assert_eq!(cs.phase_timeout(Phase::ServiceStop), Duration::from_secs(2));
        assert_eq!(
            cs.phase_timeout(Phase::ClusterExiting),
            Duration::from_secs(10)
        );
        assert_eq!(c.actor.dead_letters.log_suspend, Duration::from_secs(60));
    }

    #[test]
    fn unknown_keys_and_phases_and_zero_timeouts_are_refused() {
        let typo =
            FlotillaConfig::from_toml_str("[actor.dead-letters]\nlog-frist = 3").unwrap_err();
        assert!(typo.to_string().contains("log-frist"), "{typo}");
        let phase =
            FlotillaConfig::from_toml_str("[coordinated-shutdown.phases.nope]\ntimeout = \"1s\"");
        assert!(phase.is_err());
        let zero = FlotillaConfig::from_toml_str(
            "[coordinated-shutdown.phases.service-stop]\ntimeout = \"0s\"",
        )
        .unwrap_err();
        assert!(zero.to_string().contains("service-stop"), "{zero}");
    }

    #[test]
    fn phases_run_in_the_documented_order() {
        let names: Vec<_> = Phase::ALL.iter().map(|p| p.as_str()).collect();
        assert_eq!(names.first(), Some(&"before-service-unbind"));
        assert_eq!(names.last(), Some(&"actor-system-terminate"));
        let mut sorted = Phase::ALL;
        sorted.sort();
        assert_eq!(sorted, Phase::ALL, "Ord follows run order");
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>(), Ok(p));
        }
    }
}

/// Phi-accrual failure detector settings (defaults as Akka's remote watch failure detector).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct FailureDetectorSettings {
    /// How often heartbeats are sent (default 1 s).
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Phi above which the monitored node counts as unavailable (default 10.0; 8 to 12 are
    /// usual — lower detects faster and errs more often).
    pub threshold: f64,
    /// How many heartbeat intervals the detector remembers (default 200).
    pub max_sample_size: usize,
    /// The least standard deviation assumed, so that very regular heartbeats do not make the
    /// detector jumpy (default 100 ms).
    #[serde(with = "humantime_serde")]
    pub min_std_deviation: Duration,
    /// A pause in heartbeats that is tolerated as normal, e.g. a GC or a network hiccup; added to
    /// the mean interval (default 10 s).
    #[serde(with = "humantime_serde")]
    pub acceptable_heartbeat_pause: Duration,
    /// The interval assumed before two heartbeats have arrived (default 1 s).
    #[serde(with = "humantime_serde")]
    pub first_heartbeat_estimate: Duration,
}

impl Default for FailureDetectorSettings {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            threshold: 10.0,
            max_sample_size: 200,
            min_std_deviation: Duration::from_millis(100),
            acceptable_heartbeat_pause: Duration::from_secs(10),
            first_heartbeat_estimate: Duration::from_secs(1),
        }
    }
}

impl FailureDetectorSettings {
    /// The defaults between cluster members (Akka's cluster failure detector): threshold 8,
    /// 1000 samples, acceptable pause 3 s; the rest as [`Default`].
    pub fn cluster() -> Self {
        Self {
            threshold: 8.0,
            max_sample_size: 1000,
            acceptable_heartbeat_pause: Duration::from_secs(3),
            ..Self::default()
        }
    }

    /// Checks every value's range; `section` names the TOML table in errors.
    pub fn validate(&self, section: &str) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: &str| {
            Err(ConfigError::Value {
                key: format!("{section}.{key}"),
                reason: reason.to_owned(),
            })
        };
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return bad("threshold", "must be a positive number");
        }
        if self.max_sample_size == 0 {
            return bad("max-sample-size", "must be at least 1");
        }
        if self.min_std_deviation.is_zero() {
            return bad("min-std-deviation", "must be greater than zero");
        }
        if self.heartbeat_interval.is_zero() {
            return bad("heartbeat-interval", "must be greater than zero");
        }
        if self.first_heartbeat_estimate.is_zero() {
            return bad("first-heartbeat-estimate", "must be greater than zero");
        }
        Ok(())
    }
}

/// Reads `[cluster.failure-detector]` over [`FailureDetectorSettings::cluster`]: a key left
/// out keeps the cluster's default, not the remote watch's.
pub(crate) fn cluster_failure_detector<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<FailureDetectorSettings, D::Error> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Partial {
        #[serde(default, with = "humantime_serde")]
        heartbeat_interval: Option<Duration>,
        #[serde(default)]
        threshold: Option<f64>,
        #[serde(default)]
        max_sample_size: Option<usize>,
        #[serde(default, with = "humantime_serde")]
        min_std_deviation: Option<Duration>,
        #[serde(default, with = "humantime_serde")]
        acceptable_heartbeat_pause: Option<Duration>,
        #[serde(default, with = "humantime_serde")]
        first_heartbeat_estimate: Option<Duration>,
    }
    let p = Partial::deserialize(d)?;
    let base = FailureDetectorSettings::cluster();
    Ok(FailureDetectorSettings {
        heartbeat_interval: p.heartbeat_interval.unwrap_or(base.heartbeat_interval),
        threshold: p.threshold.unwrap_or(base.threshold),
        max_sample_size: p.max_sample_size.unwrap_or(base.max_sample_size),
        min_std_deviation: p.min_std_deviation.unwrap_or(base.min_std_deviation),
        acceptable_heartbeat_pause: p
            .acceptable_heartbeat_pause
            .unwrap_or(base.acceptable_heartbeat_pause),
        first_heartbeat_estimate: p
            .first_heartbeat_estimate
            .unwrap_or(base.first_heartbeat_estimate),
    })
}

#[cfg(test)]
mod failure_detector_tests {
    use super::*;

    #[test]
    fn defaults_are_akkas_and_bad_values_are_named() {
        let s = FailureDetectorSettings::default();
        assert_eq!(s.threshold, 10.0);
        assert_eq!(s.max_sample_size, 200);
        assert_eq!(s.acceptable_heartbeat_pause, Duration::from_secs(10));
        s.validate("remote.watch-failure-detector").unwrap();
        let bad = FailureDetectorSettings {
            threshold: f64::NAN,
            ..s
        };
        let err = bad.validate("remote.watch-failure-detector").unwrap_err();
        assert!(
            err.to_string()
                .contains("remote.watch-failure-detector.threshold"),
            "{err}"
        );
    }

    #[test]
    fn a_partial_cluster_detector_table_keeps_the_cluster_defaults() {
        let c = FlotillaConfig::from_toml_str(
            "[cluster.failure-detector]\nacceptable-heartbeat-pause = \"5s\"\n",
        )
        .unwrap();
        let fd = &c.cluster.failure_detector;
        assert_eq!(fd.acceptable_heartbeat_pause, Duration::from_secs(5));
        assert_eq!((fd.threshold, fd.max_sample_size), (8.0, 1000));
        let err = FlotillaConfig::from_toml_str("[cluster.failure-detector]\nthreshhold = 9\n")
            .unwrap_err();
        assert!(err.to_string().contains("threshhold"), "{err}");
    }
}

/// Remoting settings (`[remote]`; defaults as Akka's where Akka has the same setting).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RemoteSettings {
    /// After a recoverable failure, how long no outbound connection is attempted to that remote
    /// and outbound messages go to dead letters (default 5 s).
    #[serde(with = "humantime_serde")]
    pub retry_gate_closed_for: Duration,
    /// How long a connection may take to complete its handshake (default 20 s).
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// A remote silent for longer than this is quarantined (default 2 days).
    #[serde(with = "humantime_serde")]
    pub quarantine_after_silence: Duration,
    /// Ordinary messages queued per remote while a connection is being made (default 3072);
    /// more go to dead letters.
    pub outbound_message_queue_size: usize,
    /// Unacknowledged system messages kept per remote incarnation; an overflow quarantines it
    /// (default 20000).
    pub system_message_buffer_size: usize,
    /// A system message unacknowledged for this long quarantines the remote (default 6 h).
    #[serde(with = "humantime_serde")]
    pub give_up_system_message_after: Duration,
    /// How often unacknowledged system messages are sent again (default 1 s).
    #[serde(with = "humantime_serde")]
    pub system_message_resend_interval: Duration,
    /// The largest frame sent or accepted, in bytes (default 256 KiB).
    pub maximum_frame_size: usize,
    /// The failure detector of remote deathwatch.
    pub watch_failure_detector: FailureDetectorSettings,
    /// A secret shared by every node of the cluster, given inline (default: none); prefer
    /// `secret-file`. Every connection's two sides prove to each other that they know it, over
    /// fresh nonces; a peer that cannot is refused before either side names itself. It does
    /// not encrypt — use mutual TLS for that (or as well). At least 16 bytes. Never logged.
    pub secret: Option<String>,
    /// A file holding the cluster secret (default: none): one per line, the first is proved and
    /// every one is accepted (two during a rotation); blank lines and `#` comments are skipped.
    /// Re-read when it changes. `flotilla certs` writes one.
    pub secret_file: Option<std::path::PathBuf>,
    /// Mutual TLS for every connection (default: off). A peer's certificate must chain to the
    /// trusted CA and be valid for the host the peer claims as its address.
    pub tls: Option<TlsSettings>,
    /// Allow remoting without any credentials (no secret and no TLS): anyone who can reach the
    /// port can then join, quarantine or down nodes. For a trusted network or a test only
    /// (default false: a node without credentials refuses to start).
    pub insecure: bool,
    /// Inbound connections open at once, authenticated or not (default 1024); more are closed
    /// as they arrive.
    pub max_inbound_connections: usize,
    /// Inbound connections still in their handshake at once (default 64); a new one beyond
    /// that closes the oldest, so idle connections cannot keep peers out.
    pub max_handshakes_in_progress: usize,
    /// Worker threads of remoting's own runtime, apart from the actors' (default 2): connections,
    /// heartbeats and failure detection run there, so busy actors cannot delay them.
    pub threads: usize,
    /// At shutdown, how long remoting waits for the system messages still unacknowledged by
    /// reachable nodes (the last `Terminated` notices, say) before it closes (default 1 s).
    #[serde(with = "humantime_serde")]
    pub shutdown_flush_timeout: Duration,
}

/// Mutual TLS (`[remote.tls]`): every node presents its certificate and accepts only peers whose
/// certificate is signed by the trusted CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsSettings {
    /// This node's certificate chain, PEM.
    pub certificate: std::path::PathBuf,
    /// This node's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub private_key: std::path::PathBuf,
    /// The CA certificates peers must chain to, PEM.
    pub trusted_ca: std::path::PathBuf,
    /// How often the three files are checked for changes and reloaded (default 1 min).
    #[serde(
        default = "TlsSettings::default_reload_interval",
        with = "humantime_serde"
    )]
    pub reload_interval: Duration,
}

impl TlsSettings {
    fn default_reload_interval() -> Duration {
        Duration::from_secs(60)
    }
}

impl fmt::Debug for RemoteSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteSettings")
            .field("retry_gate_closed_for", &self.retry_gate_closed_for)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("quarantine_after_silence", &self.quarantine_after_silence)
            .field(
                "outbound_message_queue_size",
                &self.outbound_message_queue_size,
            )
            .field(
                "system_message_buffer_size",
                &self.system_message_buffer_size,
            )
            .field(
                "give_up_system_message_after",
                &self.give_up_system_message_after,
            )
            .field(
                "system_message_resend_interval",
                &self.system_message_resend_interval,
            )
            .field("maximum_frame_size", &self.maximum_frame_size)
            .field("watch_failure_detector", &self.watch_failure_detector)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_file", &self.secret_file)
            .field("tls", &self.tls)
            .field("insecure", &self.insecure)
            .field("max_inbound_connections", &self.max_inbound_connections)
            .field(
                "max_handshakes_in_progress",
                &self.max_handshakes_in_progress,
            )
            .field("threads", &self.threads)
            .field("shutdown_flush_timeout", &self.shutdown_flush_timeout)
            .finish()
    }
}

impl Default for RemoteSettings {
    fn default() -> Self {
        Self {
            retry_gate_closed_for: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(20),
            quarantine_after_silence: Duration::from_secs(2 * 24 * 3600),
            outbound_message_queue_size: 3072,
            system_message_buffer_size: 20_000,
            give_up_system_message_after: Duration::from_secs(6 * 3600),
            system_message_resend_interval: Duration::from_secs(1),
            maximum_frame_size: 256 * 1024,
            watch_failure_detector: FailureDetectorSettings::default(),
            secret: None,
            tls: None,
            threads: 2,
            shutdown_flush_timeout: Duration::from_secs(1),
            secret_file: None,
            insecure: false,
            max_inbound_connections: 1024,
            max_handshakes_in_progress: 64,
        }
    }
}

impl RemoteSettings {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: &str| {
            Err(ConfigError::Value {
                key: format!("remote.{key}"),
                reason: reason.to_owned(),
            })
        };
        for (key, d) in [
            ("retry-gate-closed-for", self.retry_gate_closed_for),
            ("handshake-timeout", self.handshake_timeout),
            ("quarantine-after-silence", self.quarantine_after_silence),
            (
                "give-up-system-message-after",
                self.give_up_system_message_after,
            ),
            (
                "system-message-resend-interval",
                self.system_message_resend_interval,
            ),
        ] {
            if d.is_zero() {
                return bad(key, "must be greater than zero");
            }
        }
        if self.system_message_buffer_size == 0 {
            return bad("system-message-buffer-size", "must be at least 1");
        }
        if self.secret.as_ref().is_some_and(|s| s.len() < 16) {
            return bad(
                "secret",
                "must be at least 16 bytes long (`flotilla certs` writes a random one)",
            );
        }
        if self.secret.is_some() && self.secret_file.is_some() {
            return bad(
                "secret-file",
                "give the secret inline or in a file, not both",
            );
        }
        if self.max_inbound_connections == 0 {
            return bad("max-inbound-connections", "must be at least 1");
        }
        if self.max_handshakes_in_progress == 0 {
            return bad("max-handshakes-in-progress", "must be at least 1");
        }
        if self.maximum_frame_size < 1024 {
            return bad("maximum-frame-size", "must be at least 1024 bytes");
        }
        if self.threads == 0 {
            return bad("threads", "must be at least 1");
        }
        self.watch_failure_detector
            .validate("remote.watch-failure-detector")
    }
}

#[cfg(test)]
mod remote_tests {
    use super::*;

    #[test]
    fn remote_defaults_and_toml() {
        let c = FlotillaConfig::from_toml_str(
            "[remote]\nretry-gate-closed-for = \"2s\"\n[remote.watch-failure-detector]\nthreshold = 12.0\n",
        )
        .unwrap();
        assert_eq!(c.remote.retry_gate_closed_for, Duration::from_secs(2));
        assert_eq!(c.remote.watch_failure_detector.threshold, 12.0);
        assert_eq!(c.remote.maximum_frame_size, 256 * 1024);
        assert_eq!(
            c.remote.quarantine_after_silence,
            Duration::from_secs(172_800)
        );
        let secret =
            FlotillaConfig::from_toml_str("[remote]\nsecret = \"hunter2-hunter2-hunter2\"\n")
                .unwrap();
        assert!(
            !format!("{:?}", secret.remote).contains("hunter2"),
            "never printed"
        );
        let err = FlotillaConfig::from_toml_str("[remote]\nsecret = \"short\"\n").unwrap_err();
        assert!(err.to_string().contains("at least 16 bytes"), "{err}");
        assert!(
            !err.to_string().contains("short\""),
            "the secret is not quoted: {err}"
        );
        let err = FlotillaConfig::from_toml_str("[remote]\nmaximum-frame-size = 10\n").unwrap_err();
        assert!(
            err.to_string().contains("remote.maximum-frame-size"),
            "{err}"
        );
    }
}
