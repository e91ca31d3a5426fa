//! After the faults stop, the cluster converges and every shard serves within a bounded time.
//!
//! [`await_settled`] runs the fault-free world (restarting what exits) until [`views::settled`](super::views::settled)
//! holds; [`await_every_shard`] then sends one probe message per shard from every live node (to
//! an entity of that shard, again every second until it arrives) and waits until each has been
//! delivered. Both report how long they took in virtual time, or fail at their bound.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::sharding::{ShardId, shard_of};
use crate::sim::{Payload, Record, World};

/// The invariant's name in reports.
pub const NAME: &str = "every shard serves again once the faults stop";

/// Runs until the cluster has settled, at most `limit`; how long it took. Meanwhile a
/// supervisor (systemd, Kubernetes) starts every node whose process has exited again — downed
/// nodes shut down, and after a down-all decision every node does.
pub fn await_settled(world: &mut World, limit: Duration) -> Result<Duration, String> {
    let start = world.now();
    let step = Duration::from_millis(250);
    loop {
        for i in 0..world.nodes.len() {
            if !world.alive(i) {
                world.start(i);
            }
        }
        if super::views::settled(world) {
            return Ok(world.now() - start);
        }
        if world.now() - start >= limit {
            return Err(format!(
                "the cluster did not settle within {limit:?} after the faults stopped: {}",
                describe(world)
            ));
        }
        world.run_for(step);
    }
}

/// One entity per shard, `entity-<k>` with the lowest `k` that falls in it.
pub fn probe_entities(shards: u32) -> BTreeMap<ShardId, String> {
    let mut by_shard = BTreeMap::new();
    let mut k = 0u64;
    while by_shard.len() < shards as usize && k < u64::from(shards) * 1000 {
        let entity = format!("probe-{k}");
        by_shard.entry(shard_of(&entity, shards)).or_insert(entity);
        k += 1;
    }
    by_shard
}

/// Probes every shard from every live node until each has delivered a probe from each, at most
/// `limit`; how long it took. From every node, because each region routes on its own: one whose
/// route to a shard is stale must not hide behind another that routes right.
pub fn await_every_shard(world: &mut World, limit: Duration) -> Result<Duration, String> {
    let start = world.now();
    let entities = probe_entities(world.settings.shards);
    let alive: Vec<usize> = (0..world.nodes.len()).filter(|i| world.alive(*i)).collect();
    if alive.is_empty() {
        return Err("no node runs".into());
    }
    let mut waiting: BTreeSet<(ShardId, usize)> = entities
        .keys()
        .flat_map(|s| alive.iter().map(move |i| (s.clone(), *i)))
        .collect();
    let mut probes: BTreeMap<Payload, (ShardId, usize)> = BTreeMap::new();
    let mut seen = world.records.len();
    while !waiting.is_empty() {
        if world.now() - start >= limit {
            return Err(format!(
                "{} shard(s) did not serve within {limit:?} of the cluster settling (shard, from node): {:?}",
                waiting
                    .iter()
                    .map(|(s, _)| s)
                    .collect::<BTreeSet<_>>()
                    .len(),
                waiting
            ));
        }
        // A node that stopped meanwhile has nothing more to prove.
        waiting.retain(|(_, i)| world.alive(*i));
        for (shard, from) in waiting.clone() {
            if let Some(msg) = world.send(from, &entities[&shard]) {
                probes.insert(msg, (shard, from));
            }
        }
        world.run_for(Duration::from_secs(1));
        for (_, r) in &world.records[seen..] {
            if let Record::Delivered { msg, .. } = r
                && let Some(probe) = probes.get(msg)
            {
                waiting.remove(probe);
            }
        }
        seen = world.records.len();
    }
    Ok(world.now() - start)
}

fn describe(world: &World) -> String {
    world
        .nodes
        .iter()
        .map(|n| match n.live.as_ref() {
            None => format!("node {}: down", n.index),
            Some(inc) => {
                let m = &inc.membership;
                let members: Vec<String> = m
                    .gossip()
                    .members()
                    .map(|x| format!("{}:{:?}", x.node.address.port().unwrap_or(0), x.status))
                    .collect();
                format!(
                    "node {} (uid {}): {} members [{}], unreachable {}, converged {}, leader {:?}{}",
                    n.index,
                    inc.me.uid,
                    members.len(),
                    members.join(" "),
                    m.state().unreachable.len(),
                    m.gossip().converged(m.self_node()),
                    m.state().leader.as_ref().and_then(flotilla_core::Address::port),
                    if inc.shutting_down.is_some() { ", shutting down" } else { "" }
                )
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}
