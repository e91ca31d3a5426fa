//! Cluster membership: who is in the cluster, as gossip spreads it, who is unreachable, and who
//! must go.
//!
//! Pure data and decisions only, like the rest of this crate; a driver (tokio, or [`sim`]) does
//! the I/O.
//!
//! - [`vclock`]: vector clocks, the version of a gossip.
//! - [`member`]: members and the lifecycle of their status (Joining … Removed), with the merge
//!   rule that gossip uses for two views of the same member.
//! - [`gossip`]: the cluster state members exchange — merge, convergence, leader.
//! - [`reachability`]: what each observer's failure detector says of the members it monitors;
//!   unreachable when any observer says so, reachable when all agree.
//! - [`heartbeat`]: who monitors whom (a ring over the members) and the detectors' verdicts.
//! - [`sbr`]: the split-brain resolver's strategies as pure decisions over one view, and the
//!   stable-after clock.
//! - [`events`]: cluster events and the current state subscribers get.
//! - [`protocol`]: messages between members, and the machine's inputs and outputs.
//! - [`membership`]: one node's membership machine — join, gossip, leader actions, failure
//!   detection, downing — composed from the above.
//! - [`sim`]: a seeded simulator of a whole cluster of membership machines.
//! - [`singleton`]: where a cluster singleton runs, and its hand-over, take-over and lease.
//! - [`bootstrap`]: when a node that found its contact points through service discovery joins,
//!   and with which seed nodes.

pub mod bootstrap;
pub mod events;
pub mod gossip;
pub mod heartbeat;
pub mod member;
pub mod membership;
pub mod protocol;
pub mod reachability;
pub mod sbr;
pub mod sim;
pub mod singleton;
pub mod vclock;

pub use events::{ClusterEvent, CurrentClusterState};
pub use gossip::Gossip;
pub use member::{IllegalTransition, Member, MemberStatus};
pub use membership::{Membership, MembershipStats};
pub use protocol::{ClusterInput, ClusterMsg, ClusterOutput, LogLevel};
pub use reachability::{Reachability, ReachabilityStatus};
pub use vclock::{Causality, VectorClock};
