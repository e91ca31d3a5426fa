//! The whole cluster under one seeded simulator: every node runs the real machines — remoting
//! ([`Remoting`](crate::remoting::Remoting)), membership and the split-brain resolver
//! ([`Membership`](crate::cluster::Membership)), the singleton manager that places the shard
//! coordinator, the [`ShardCoordinator`](crate::sharding::ShardCoordinator), a
//! [`Region`](crate::sharding::Region), its [`Shard`](crate::sharding::Shard)s and one
//! [`LeaseHolder`](crate::lease::LeaseHolder) per shard — against the in-memory backend's
//! [`LeaseTable`](crate::lease::LeaseTable), on a simulated network and clock.
//!
//! What the simulator plays, as the drivers and the operating system would:
//! - **connections**: a connect to a live node completes its handshake after one latency; to a
//!   dead one it is refused; across a partition, or to a frozen process, it never answers (the
//!   association's handshake timeout decides). A process that ends closes its connections;
//!   frames to an old incarnation are lost.
//! - **frames**: one latency each, in order per link; faults add loss, duplication and jitter
//!   (reordering). Cluster messages ride remoting's cluster lane by handle.
//! - **the lease backend**: requests take a latency (plus a slow backend's delay) and are applied
//!   at the backend's (true) time; an unanswered request is `Unknown` after the client's request
//!   timeout — a request slower than that is applied after its caller gave up, as a held-up
//!   request would be.
//! - **processes**: crash (`kill -9`), freeze (`SIGSTOP`: no timer runs, arrivals wait in the
//!   socket buffers), restart with a new UID, a clock that jumps ahead, a graceful leave, and
//!   coordinated shutdown when a node is downed or removed (entities stop, leases released and
//!   awaited up to a timeout, then the process exits).
//!
//! Time jumps from one event or timer to the next; a run is a function of its seed
//! ([`World::trace_hash`]). [`scenario`] draws a fault schedule from a seed, [`invariants`]
//! holds one module per promise, and [`sweep`] runs a seed end to end.

pub mod invariants;
pub mod scenario;
pub mod seeded;
pub mod sweep;
mod world;

pub use world::{
    Conditions, Counters, Incarnation, Node, Payload, Record, SystemMsg, UserMsg, Violation, World,
    WorldSettings, lease_name,
};
