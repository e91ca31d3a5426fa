//! At most one live incarnation of a shard at any instant.
//!
//! A node serves a shard while the shard is active there, the node runs (a frozen process runs
//! nothing) and its holder still trusts the lease ([`World::serving`]). A shard starts serving
//! only in a step of its node, so checking that node's shards after each of its steps finds a
//! second server the moment it appears. Every delivery must also happen under a valid lease.

use crate::sim::{Record, World};

/// The invariant's name in reports.
pub const NAME: &str = "one live incarnation per shard";

/// After a step of node `i`: none of its serving shards is served elsewhere too.
pub fn check_node(world: &mut World, i: usize) {
    let Some(shards) = world.nodes[i]
        .live
        .as_ref()
        .map(|inc| inc.shards.keys().cloned().collect::<Vec<_>>())
    else {
        return;
    };
    let mut found = Vec::new();
    for shard in shards {
        if !world.serving(i, &shard) {
            continue;
        }
        for j in 0..world.nodes.len() {
            if j != i && world.serving(j, &shard) {
                found.push(format!("shard {shard} serves on nodes {i} and {j} at once"));
            }
        }
    }
    for what in found {
        world.report(NAME, what);
    }
}

/// Over the records: every delivery happened while the delivering node's lease was valid.
pub fn check_records(world: &World) -> Vec<String> {
    world
        .records
        .iter()
        .filter_map(|(t, r)| match r {
            Record::Delivered {
                node,
                shard,
                entity,
                msg,
                lease_valid: false,
                ..
            } => Some(format!(
                "at {t:?}: node {node} delivered message {msg} to {entity} of shard {shard} without a valid lease"
            )),
            _ => None,
        })
        .collect()
}
