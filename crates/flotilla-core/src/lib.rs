//! Values every Flotilla crate shares.
//!
//! # Layout
//! - [`address`]: [`Address`] (`flotilla://system@host:port`) and [`UniqueAddress`] (an address plus
//!   the 64-bit incarnation UID of one run of a node).
//! - [`path`]: [`ActorPath`], the location of one actor in a system's hierarchy.
//! - [`machine`]: the [`StateMachine`] trait that every sans-IO protocol in `flotilla-proto`
//!   implements.
//! - [`config`]: TOML configuration with documented defaults and validated constructors;
//!   [`cluster_config`] holds the `[cluster]` section, [`lease_config`] the `[lease]` section,
//!   [`management_config`] the `[management]` section.
//! - [`fuzzing`]: the body of the `config` fuzz target.
//!
//! # What this crate is not
//! It holds no runtime, does no I/O, reads no clock and spawns nothing. It depends only on `std`,
//! `serde`, `toml` and `thiserror`, so the pure protocol crate can stand on it.

pub mod address;
pub mod cluster_config;
pub mod config;
mod error_text;
pub mod fuzzing;
pub mod lease_config;
pub mod machine;
pub mod management_config;
pub mod path;
pub mod sharding_config;

pub use address::{Address, AddressParseError, UniqueAddress};
pub use cluster_config::{
    ClusterSettings, DiscoveryMethod, DiscoverySettings, DownAllWhenUnstable, KeepOldestSettings,
    LeaseMajoritySettings, RoleOnly, SingletonConfig, SplitBrainResolverSettings, StableAfter,
    StaticQuorumSettings, Strategy,
};
pub use config::{
    ActorSettings, ConfigError, CoordinatedShutdownSettings, DeadLetterSettings,
    FailureDetectorSettings, FlotillaConfig, Phase, PhaseSettings, RemoteSettings, TlsSettings,
};
pub use error_text::error_chain;
pub use lease_config::{
    AzureSettings, EtcdSettings, EtcdTls, KubernetesSettings, LeaseBackendKind, LeaseSettings,
};
pub use machine::StateMachine;
pub use management_config::{ManagementSettings, ManagementTls};
pub use path::{ActorPath, InvalidActorName};
pub use sharding_config::ShardingSettings;

/// The first ```` ```toml ```` block of a module's doc comment, for tests that check that the
/// documented example parses.
#[cfg(test)]
pub(crate) fn documented_toml(source: &str) -> String {
    source
        .lines()
        .skip_while(|l| !l.starts_with("//! ```toml"))
        .skip(1)
        .take_while(|l| !l.starts_with("//! ```"))
        .map(|l| {
            l.strip_prefix("//! ")
                .unwrap_or(l.trim_start_matches("//!"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}
