//! Cluster sharding's decisions, as pure data and functions: which shard an entity belongs to,
//! the shard coordinator's state (a fold over its events, with its invariants checked on every
//! event), and where shards go — allocation and rebalancing.
//!
//! - [`shard_id`]: entity id → shard id, by a hash that is the same in every process and
//!   every version.
//! - [`coordinator`]: the coordinator's state — regions, proxies, shard homes — as a pure fold
//!   over [`CoordinatorEvent`]s that refuses any event that would break an invariant.
//! - [`shard_coordinator`]: the coordinator of one entity type as a state machine — allocation,
//!   rebalancing and the hand-off protocol, re-registration after it moves.
//! - [`region`]: one entity type's region on one node — routing, holding messages while a
//!   home is unknown or moving, hosting shards, hand-offs, leaving.
//! - [`shard`]: one shard on one node — its lease (no entity before it, none after losing it,
//!   the release awaited on hand-off), its entities and their passivation.
//! - [`allocation`]: the [`ShardAllocationStrategy`] trait and Akka's newer least-shard
//!   strategy, with relative and absolute limits per rebalance round.

pub mod allocation;
pub mod coordinator;
pub mod region;
pub mod shard;
pub mod shard_coordinator;
pub mod shard_id;

#[cfg(test)]
mod sim_tests;

pub use allocation::{LeastShardAllocation, ShardAllocationStrategy};
pub use coordinator::{CoordinatorEvent, CoordinatorState, InvariantViolation};
pub use region::{Region, RegionInput, RegionOutput, RegionSettings};
pub use shard::{Ended, EntityId, Shard, ShardInput, ShardOutput, ShardSettings};
pub use shard_coordinator::{
    CoordinatorInput, CoordinatorOutput, CoordinatorSettings, ShardCoordinator, ToCoordinator,
    ToRegion,
};
pub use shard_id::{ShardId, shard_of};
