//! The promises checked on every simulated run, one module each. Checks that must hold at every
//! instant run after every step of a node (they find a violation the moment it happens); the
//! others read the run's records, or the world once it has settled.
//!
//! - [`single_incarnation`]: at most one node serves a shard at any instant; no entity gets a
//!   message on a node whose lease is not valid.
//! - [`fencing`]: fencing tokens strictly increase per shard whenever the lease changes hands,
//!   and no message is delivered under an older token after a newer one was used.
//! - [`quarantine`]: a quarantined incarnation never becomes Active again.
//! - [`system_messages`]: system messages arrive at most once and in order per pair of
//!   incarnations.
//! - [`views`]: members with the same gossip version agree on the members and their statuses;
//!   converged members agree on the leader.
//! - [`liveness`]: once the faults stop, the cluster converges and every shard serves again
//!   within a bounded virtual time.
//! - [`leases`]: after settling, no lease is held by a node that is not a running member, and
//!   none is held without its shard running there (no zombie).
//! - [`storms`]: no simulated second sends more than a bounded number of frames (a livelock
//!   fails its seed even when every shard answers in the end).

pub mod fencing;
pub mod leases;
pub mod liveness;
pub mod quarantine;
pub mod single_incarnation;
pub mod storms;
pub mod system_messages;
pub mod views;
