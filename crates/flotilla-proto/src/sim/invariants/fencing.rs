//! Fencing tokens strictly increase per shard.
//!
//! Every grant a holder receives is recorded with its token. Every grant is a hold of its own,
//! so its token must be higher than every token before — also when the same node acquires the
//! lease again (after a restart the owner is the same, the node's address). Only one hold
//! reported twice (a second caller joining a held lease) repeats a token.
//! Deliveries follow: once a shard has delivered under a token, no delivery under a lower one
//! may follow (a stale incarnation writing after its successor).

use std::collections::BTreeMap;

use crate::lease::FencingToken;
use crate::sim::{Record, World};

/// The invariant's name in reports.
pub const NAME: &str = "fencing tokens increase per shard";

/// Over the records, in time order.
pub fn check_records(world: &World) -> Vec<String> {
    let mut problems = Vec::new();
    let mut last_grant: BTreeMap<&str, (usize, FencingToken)> = BTreeMap::new();
    let mut last_delivery: BTreeMap<&str, FencingToken> = BTreeMap::new();
    for (t, r) in &world.records {
        match r {
            Record::Granted {
                node, shard, token, ..
            } => {
                if let Some((prev_node, prev)) = last_grant.get(shard.0.as_str()) {
                    let ok = token > prev || (prev_node == node && token == prev);
                    if !ok {
                        problems.push(format!(
                            "at {t:?}: shard {shard}'s lease went to node {node} with token {token} after node {prev_node} had token {prev}"
                        ));
                    }
                }
                last_grant.insert(&shard.0, (*node, *token));
            }
            Record::Delivered {
                node,
                shard,
                msg,
                token: Some(token),
                ..
            } => {
                if let Some(prev) = last_delivery.get(shard.0.as_str())
                    && token < prev
                {
                    problems.push(format!(
                        "at {t:?}: node {node} delivered message {msg} of shard {shard} under token {token} after token {prev} was used"
                    ));
                }
                let e = last_delivery.entry(&shard.0).or_insert(*token);
                *e = (*e).max(*token);
            }
            _ => {}
        }
    }
    problems
}
