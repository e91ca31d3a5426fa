//! Converged views agree.
//!
//! Between any two running members: the same gossip version means the same members with the
//! same statuses; both converged on it means the same leader. Checked every simulated second
//! while the run goes on ([`check`]); [`settled`] is the stronger state a fault-free phase must
//! reach: every running node a member, all Up, every one listing exactly the running nodes,
//! converged, one leader.

use std::collections::BTreeSet;

use flotilla_core::UniqueAddress;

use crate::cluster::{MemberStatus, Membership};
use crate::sim::World;

/// The invariant's name in reports.
pub const NAME: &str = "converged views agree";

fn running_members(world: &World) -> Vec<(usize, &Membership)> {
    world
        .nodes
        .iter()
        .filter_map(|n| {
            let inc = n.live.as_ref()?;
            let m = &inc.membership;
            (inc.shutting_down.is_none()
                && m.is_member()
                && m.self_member()
                    .is_some_and(|s| s.status != MemberStatus::Down))
            .then_some((n.index, m))
        })
        .collect()
}

/// What disagrees between any two of `members` (index, machine): the same gossip version
/// with different members or statuses, or both converged on it with different leaders. The
/// membership-only simulator ([`ClusterSim`](crate::cluster::sim::ClusterSim)) checks the same.
pub fn disagreements(members: &[(usize, &Membership)]) -> Vec<String> {
    let list = |m: &Membership| -> Vec<(UniqueAddress, MemberStatus)> {
        m.gossip()
            .members()
            .map(|x| (x.node.clone(), x.status))
            .collect()
    };
    let mut found = Vec::new();
    for (x, (a, ma)) in members.iter().enumerate() {
        for (b, mb) in &members[x + 1..] {
            if ma.gossip().version() != mb.gossip().version() {
                continue;
            }
            if list(ma) != list(mb) {
                found.push(format!(
                    "nodes {a} and {b} have the same gossip version but different members: {:?} vs {:?}",
                    list(ma),
                    list(mb)
                ));
            }
            if ma.gossip().converged(ma.self_node())
                && mb.gossip().converged(mb.self_node())
                && ma.state().leader != mb.state().leader
            {
                found.push(format!(
                    "nodes {a} and {b} converged on one version with different leaders"
                ));
            }
        }
    }
    found
}

/// Checks every pair of running members now; reports what disagrees.
pub fn check(world: &mut World) {
    let found = disagreements(&running_members(world));
    for what in found {
        world.report(NAME, what);
    }
}

/// Whether the cluster has settled: every node runs as an Up member of one converged view of
/// exactly the running nodes, with one leader.
pub fn settled(world: &World) -> bool {
    let alive: BTreeSet<usize> = (0..world.nodes.len()).filter(|i| world.alive(*i)).collect();
    let members = running_members(world);
    if members.len() != alive.len() || alive.is_empty() {
        return false;
    }
    let leaders: BTreeSet<_> = members
        .iter()
        .map(|(_, m)| m.state().leader.clone())
        .collect();
    let current: BTreeSet<UniqueAddress> = world
        .nodes
        .iter()
        .filter_map(|n| n.live.as_ref().map(|inc| inc.me.clone()))
        .collect();
    leaders.len() == 1
        && members.iter().all(|(_, m)| {
            let listed: BTreeSet<UniqueAddress> = m
                .gossip()
                .members()
                .filter(|x| x.status == MemberStatus::Up)
                .map(|x| x.node.clone())
                .collect();
            listed == current
                && m.gossip().members().count() == current.len()
                && m.gossip().converged(m.self_node())
                && m.state().unreachable.is_empty()
        })
}
