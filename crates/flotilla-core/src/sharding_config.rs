//! Cluster sharding settings (`[sharding]`), with Akka's defaults where Akka has the setting.
//!
//! ```toml
//! [sharding]
//! # Entities go to shards by a stable hash of their id modulo this (never change it on a
//! # running cluster: every entity would move).
//! number-of-shards = 1000
//! # Only members with this role host shards ("" = every member); others run proxies.
//! role = ""
//! # How often the coordinator may start a rebalance round, and how much one round moves:
//! # at most max(1, min(absolute-limit, relative-limit x all shards)) shards.
//! rebalance-interval = "10s"
//! rebalance-absolute-limit = 20
//! rebalance-relative-limit = 0.1
//! # How long a hand-off may take (entities stopping, lease released) before it is abandoned.
//! handoff-timeout = "60s"
//! # Entities idle this long are passivated ("0s": never); at most this many run per region
//! # (0: no limit), the least recently active passivated first.
//! passivation-idle-timeout = "120s"
//! active-entity-limit = 0
//! # Messages a region holds while their shards' homes are unknown or moving.
//! buffer-size = 100000
//! # How often unanswered registrations and questions to the coordinator are sent again.
//! retry-interval = "2s"
//! # With a lease per shard (<system>-shard-<type>-<shard>): a shard starts its entities only
//! # while it holds it; a denied or unanswered acquisition is tried again this often.
//! use-lease = false
//! lease-retry-interval = "5s"
//! # Remember entities: each shard keeps its entity ids in a store (given in code) and starts
//! # them again wherever it runs next, without waiting for a message. Automatic passivation
//! # (idle timeout, active-entity limit) is then off: entities run until they passivate
//! # themselves. One that stops without passivating starts again after this backoff.
//! remember-entities = false
//! entity-restart-backoff = "10s"
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ConfigError;

/// Cluster sharding settings. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ShardingSettings {
    /// Shards per entity type (default 1000).
    pub number_of_shards: u32,
    /// Only members with this role host shards ("" = every member).
    pub role: String,
    /// How often a rebalance round may start (default 10 s).
    #[serde(with = "humantime_serde")]
    pub rebalance_interval: Duration,
    /// At most this many shards move per round (default 20).
    pub rebalance_absolute_limit: usize,
    /// At most this fraction of all shards moves per round (default 0.1).
    pub rebalance_relative_limit: f64,
    /// How long a hand-off may take (default 60 s).
    #[serde(with = "humantime_serde")]
    pub handoff_timeout: Duration,
    /// Passivate entities idle this long (default 120 s; zero: never).
    #[serde(with = "humantime_serde")]
    pub passivation_idle_timeout: Duration,
    /// At most this many entities per shard region run (default 0: no limit).
    pub active_entity_limit: usize,
    /// Messages a region holds while homes are unknown (default 100 000).
    pub buffer_size: usize,
    /// How often unanswered messages to the coordinator are sent again (default 2 s).
    #[serde(with = "humantime_serde")]
    pub retry_interval: Duration,
    /// Whether each shard runs only while it holds its lease (default false).
    pub use_lease: bool,
    /// How often a denied or unanswered lease acquisition is tried again (default 5 s).
    #[serde(with = "humantime_serde")]
    pub lease_retry_interval: Duration,
    /// Whether shards remember their entities and start them again where they run next
    /// (default false).
    pub remember_entities: bool,
    /// With remember entities, how long after stopping on its own an entity starts again
    /// (default 10 s).
    #[serde(with = "humantime_serde")]
    pub entity_restart_backoff: Duration,
}

impl Default for ShardingSettings {
    fn default() -> Self {
        Self {
            number_of_shards: 1000,
            role: String::new(),
            rebalance_interval: Duration::from_secs(10),
            rebalance_absolute_limit: 20,
            rebalance_relative_limit: 0.1,
            handoff_timeout: Duration::from_secs(60),
            passivation_idle_timeout: Duration::from_secs(120),
            active_entity_limit: 0,
            buffer_size: 100_000,
            retry_interval: Duration::from_secs(2),
            use_lease: false,
            lease_retry_interval: Duration::from_secs(5),
            remember_entities: false,
            entity_restart_backoff: Duration::from_secs(10),
        }
    }
}

impl ShardingSettings {
    /// Checks every value's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, reason: &str| {
            Err(ConfigError::Value {
                key: format!("sharding.{key}"),
                reason: reason.to_owned(),
            })
        };
        if self.number_of_shards == 0 {
            return bad("number-of-shards", "must be at least 1");
        }
        if self.buffer_size == 0 {
            return bad("buffer-size", "must be at least 1");
        }
        if !(self.rebalance_relative_limit > 0.0 && self.rebalance_relative_limit <= 1.0) {
            return bad("rebalance-relative-limit", "must be in (0, 1]");
        }
        for (key, d) in [
            ("rebalance-interval", self.rebalance_interval),
            ("handoff-timeout", self.handoff_timeout),
            ("retry-interval", self.retry_interval),
            ("lease-retry-interval", self.lease_retry_interval),
            ("entity-restart-backoff", self.entity_restart_backoff),
        ] {
            if d.is_zero() {
                return bad(key, "must be greater than zero");
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
    fn the_documented_example_is_the_default() {
        let doc = crate::documented_toml(include_str!("sharding_config.rs"));
        let c = FlotillaConfig::from_toml_str(&doc).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.sharding, ShardingSettings::default());
        let err = FlotillaConfig::from_toml_str("[sharding]\nnumber-of-shards = 0")
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(err.contains("sharding.number-of-shards"), "{err}");
    }
}
