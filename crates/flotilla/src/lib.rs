//! Flotilla: an actor cluster runtime for Rust.
//!
//! This facade re-exports the local actor runtime ([`flotilla_actor`]) and the shared values
//! ([`core`]); remoting, cluster membership, leases and sharding join it as they land. The
//! `flotilla` binary built from this crate runs nodes and the demo (`flotilla demo`).
//!
//! # Layout
//! - everything from [`flotilla_actor`] at the top level: [`ActorSystem`], [`Actor`],
//!   [`ActorRef`], [`Props`], [`SupervisorStrategy`], [`CoordinatedShutdown`], …
//! - [`core`]: addresses, actor paths, configuration.
//! - [`proto`]: the pure protocol state machines.
//! - [`demo`]: the supervised-pipeline demo behind `flotilla demo`.

pub use flotilla_actor::*;
pub use flotilla_core as core;
pub use flotilla_proto as proto;

pub mod demo;
