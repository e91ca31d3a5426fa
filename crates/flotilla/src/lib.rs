//! Flotilla: an actor cluster runtime for Rust.
//!
//! Typed local actors with supervision, deathwatch and coordinated shutdown; remoting over TCP
//! (optionally mutual TLS); cluster membership with gossip, a failure detector and a
//! split-brain resolver; cluster singletons; and cluster sharding whose shards run only while
//! they hold a lease, with fencing tokens.
//!
//! # Layout
//! - everything from [`flotilla_actor`] at the top level: [`ActorSystem`], [`Actor`],
//!   [`ActorRef`], [`Props`], [`SupervisorStrategy`], [`CoordinatedShutdown`], …
//! - [`cluster`]: membership on a running node ([`cluster::Cluster`]) and singletons;
//!   [`sharding`]: entities spread over the cluster ([`sharding::ClusterSharding`]);
//!   [`remote`]: remoting; [`discovery`]: finding the seed nodes.
//! - [`lease`]: the lease API ([`lease::LeaseClient`]) and the in-memory backend; the other
//!   backends behind features: `lease_etcd` (feature `etcd`), `lease_azure` (`azure`),
//!   `lease_kubernetes` (`kubernetes`).
//! - [`management`]: the HTTP management endpoint (API, Prometheus metrics, dashboard).
//! - [`core`]: addresses, actor paths, configuration; [`proto`]: the pure protocol machines.
//!
//! # Features
//!
//! None is on by default: the in-memory lease backend is always there.
//!
//! | feature | adds |
//! | --- | --- |
//! | `etcd` | leases on etcd v3, the remember-entities store on etcd ([`etcd`]: the client) |
//! | `azure` | leases on Azure Blob Storage |
//! | `kubernetes` | leases on Kubernetes `Lease` objects; discovery of pods through the API |
//! | `testkit` | `testkit::TestCluster`: N nodes in one process for tests |

mod lease_backend;
pub mod node;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use flotilla_actor::*;
pub use flotilla_cluster as cluster;
pub use flotilla_core as core;
pub use flotilla_discovery as discovery;
#[cfg(feature = "etcd")]
pub use flotilla_etcd as etcd;
pub use flotilla_lease as lease;
#[cfg(feature = "azure")]
pub use flotilla_lease_azure as lease_azure;
#[cfg(feature = "etcd")]
pub use flotilla_lease_etcd as lease_etcd;
#[cfg(feature = "kubernetes")]
pub use flotilla_lease_kubernetes as lease_kubernetes;
pub use flotilla_management as management;
pub use flotilla_proto as proto;
pub use flotilla_remote as remote;
pub use flotilla_sharding as sharding;
pub use lease_backend::{
    connect as connect_lease_backend, connect_now as connect_lease_backend_now,
};
pub use node::{Node, NodeBuilder, NodeError};
