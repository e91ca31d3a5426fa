//! Leases for Flotilla: one API over pluggable backends.
//!
//! Shards, singletons and the lease-majority split-brain strategy hold leases. A [`Lease`] is
//! acquired with a lost callback and answers **granted** (with a [`FencingToken`] that strictly
//! increases every time the lease changes owner), **denied** or **unknown**; it is renewed every
//! `heartbeat-interval` while held; [`Lease::check_lease`] is true only while the holder is
//! certain; [`Lease::release`] is awaited and bounded. The rules live in the pure
//! [`LeaseHolder`](flotilla_proto::lease::LeaseHolder) machine; this crate only drives it.
//!
//! # Layout
//! - [`backend`]: the [`LeaseBackend`] trait every backend implements, names and owners.
//! - [`memory`]: the in-memory backend (embedded default; fault injection for tests).
//! - [`deferred`]: a stand-in for a backend not reachable yet, connecting in the background.
//! - [`LeaseClient`]: one backend and owner identity, many leases; releases everything,
//!   concurrently and awaited, when it shuts down (started in an actor system with
//!   `flotilla_cluster::LeaseClientExt::start`, when the system stops).
//!
//! This crate knows no actors: lease backends depend on it alone.
//! - `testing` (feature `testing`): the conformance suite every backend must pass.
//!
//! # What this crate is not
//! It holds no backend client library: etcd, Azure Blob and Kubernetes adapters live in their own
//! crates so that an application builds only what it uses.

pub mod backend;
mod client;
pub mod deferred;
mod events;
mod lease;
pub mod memory;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use backend::{
    BoxFuture, FencingToken, LeaseBackend, LeaseName, LeaseRecord, NameError, OwnerId, zombies,
};
pub use client::{LeaseClient, LeaseError};
pub use deferred::DeferredBackend;
pub use lease::{AcquireOutcome, Lease, LeaseEvent, LostCause, ReleaseOutcome};
pub use memory::MemoryBackend;
