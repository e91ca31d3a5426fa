//! Flotilla cluster membership outside the pure machine.
//!
//! # Layout
//! - [`cluster`]: [`Cluster`], the driver of the membership machine on a running node — join,
//!   leave, down, state, event subscriptions, coordinated shutdown's cluster phases.
//! - [`singleton`]: [`ClusterSingleton`], one actor in the whole cluster, on its oldest member,
//!   with hand-over, take-over, an optional lease and a proxy that finds it wherever it runs.
//! - [`codec`]: membership messages to bytes and back, validated.
//! - [`testing`]: fast settings for tests and demos.
//! - [`fuzzing`]: the body of the `gossip` fuzz target and its seed inputs.
//!
//! # What this crate is not
//! It makes no membership decision: joining, gossip, leader actions and downing are the pure
//! [`flotilla_proto::cluster::Membership`] machine's. This crate carries its messages and does
//! what it asks.

pub mod cluster;
pub mod codec;
pub mod fuzzing;
pub mod lease_client;
pub mod singleton;
pub mod testing;

pub use cluster::{Cluster, ClusterBuilder, ClusterError, ClusterEvents, Snapshot};
pub use codec::{CodecError, decode, encode};
pub use flotilla_proto::cluster::{ClusterEvent, CurrentClusterState, Member, MemberStatus};
pub use lease_client::{LeaseClientExt, StartLeaseClientError};
pub use singleton::{ClusterSingleton, SingletonBuilder, SingletonError};
