//! Cluster membership: who is in the cluster, as gossip spreads it.
//!
//! Pure data and decisions only, like the rest of this crate: the gossip driver, failure
//! detection and the split-brain resolver build on these.
//!
//! - [`vclock`]: vector clocks, the version of a gossip.
//! - [`member`]: members and the lifecycle of their status (Joining … Removed), with the merge
//!   rule that gossip uses for two views of the same member.
//! - [`gossip`]: the cluster state members exchange — merge, convergence, leader.
//! - [`reachability`]: what each observer's failure detector says of the members it monitors;
//!   unreachable when any observer says so, reachable when all agree.

pub mod gossip;
pub mod member;
pub mod reachability;
pub mod vclock;

pub use gossip::Gossip;
pub use member::{IllegalTransition, Member, MemberStatus};
pub use reachability::{Reachability, ReachabilityStatus};
pub use vclock::{Causality, VectorClock};
