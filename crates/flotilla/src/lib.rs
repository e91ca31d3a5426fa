//! Flotilla: an actor cluster runtime for Rust.
//!
//! This facade re-exports the local actor runtime ([`flotilla_actor`]) and the shared values
//! ([`core`]); and leases; remoting, cluster membership and sharding join it as they land. The
//! `flotilla` binary built from this crate runs nodes and the demo (`flotilla demo`).
//!
//! # Layout
//! - everything from [`flotilla_actor`] at the top level: [`ActorSystem`], [`Actor`],
//!   [`ActorRef`], [`Props`], [`SupervisorStrategy`], [`CoordinatedShutdown`], …
//! - [`core`]: addresses, actor paths, configuration.
//! - [`proto`]: the pure protocol state machines.
//! - [`lease`]: the lease API and the in-memory backend; [`lease_etcd`], [`lease_azure`],
//!   [`lease_kubernetes`]: the other backends.
//! - [`demo`]: the failover demo behind `flotilla demo`: three nodes, sharded counters with
//!   leases, a graceful shutdown and a crash, a timeline and checks.
//! - [`pipeline`]: a supervised local-actor pipeline behind `flotilla pipeline`.
//! - [`leases`]: listing leases, behind `flotilla leases`.
//! - [`cluster`]: cluster membership on a running node; [`remote`]: remoting.
//! - [`node`]: one cluster node as a process, behind `flotilla node`.
//! - [`ledger`]: a durable sharded entity (records in etcd, written under the shard's fencing
//!   token); [`chaos`]: the real-process chaos harness behind `flotilla chaos`.

pub use flotilla_actor::*;
pub use flotilla_cluster as cluster;
pub use flotilla_core as core;
pub use flotilla_discovery as discovery;
pub use flotilla_lease as lease;
pub use flotilla_lease_azure as lease_azure;
pub use flotilla_lease_etcd as lease_etcd;
pub use flotilla_lease_kubernetes as lease_kubernetes;
pub use flotilla_management as management;
pub use flotilla_proto as proto;
pub use flotilla_remote as remote;
pub use flotilla_sharding as sharding;

pub mod chaos;
pub mod demo;
pub mod leases;
pub mod ledger;
pub mod node;
pub mod ops;
pub mod pipeline;
