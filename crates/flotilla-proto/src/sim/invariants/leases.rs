//! No lease held by a removed member, and no zombie lease, once the cluster has settled.
//!
//! Every live hold of a shard's lease must belong (by owner, the node's address) to a node that
//! runs now as an Up member, and that node must have the shard, with a holder that holds the
//! lease — a hold nobody uses is a zombie that would keep the shard from starting elsewhere
//! until it expires.

use crate::cluster::MemberStatus;
use crate::sharding::ShardId;
use crate::sim::World;

/// The invariant's name in reports.
pub const NAME: &str = "no lease held by a removed member or by nobody";

/// Checks the backend's live holds against the running members now.
pub fn check_settled(world: &World) -> Vec<String> {
    let now = world.now();
    let mut problems = Vec::new();
    for (lease, hold) in world.table.live(now) {
        let Some(shard) = lease.strip_prefix("sim-shard-") else {
            continue;
        };
        let node = world
            .nodes
            .iter()
            .find(|n| n.address.to_string() == hold.owner);
        let Some(node) = node else {
            problems.push(format!("{lease} is held by {}, not a node", hold.owner));
            continue;
        };
        let Some(inc) = node.live.as_ref() else {
            problems.push(format!(
                "{lease} (token {}) is held by node {}, which is not running",
                hold.token, node.index
            ));
            continue;
        };
        let up = inc
            .membership
            .self_member()
            .is_some_and(|m| m.status == MemberStatus::Up);
        if !up || inc.shutting_down.is_some() {
            problems.push(format!(
                "{lease} (token {}) is held by node {}, which is not an Up member",
                hold.token, node.index
            ));
            continue;
        }
        let shard = ShardId(shard.to_owned());
        let used = inc.shards.contains_key(&shard)
            && world
                .holder(node.index, &shard)
                .is_some_and(|h| h.token() == Some(hold.token));
        if !used {
            problems.push(format!(
                "{lease} (token {}) is held by node {} without its shard running there: a zombie",
                hold.token, node.index
            ));
        }
    }
    problems
}
