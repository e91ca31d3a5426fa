//! Flotilla cluster membership outside the pure machine.
//!
//! # Layout
//! - [`cluster`]: [`Cluster`], the driver of the membership machine on a running node — join,
//!   leave, down, state, event subscriptions, coordinated shutdown's cluster phases.
//! - [`codec`]: membership messages to bytes and back, validated.
//! - [`testing`]: fast settings for tests and demos.
//!
//! # What this crate is not
//! It makes no membership decision: joining, gossip, leader actions and downing are the pure
//! [`flotilla_proto::cluster::Membership`] machine's. This crate carries its messages and does
//! what it asks.

pub mod cluster;
pub mod codec;
pub mod testing;

pub use cluster::{Cluster, ClusterBuilder, ClusterError, ClusterEvents, Snapshot};
pub use codec::{CodecError, decode, encode};
pub use flotilla_proto::cluster::{ClusterEvent, CurrentClusterState, Member, MemberStatus};
