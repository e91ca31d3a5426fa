//! Sharding on three actor systems in one process, on 127.0.0.1, with a lease per shard from a
//! shared in-memory backend: every entity is reachable from every node; a node that shuts down
//! hands its shards off and, when its shutdown returns, holds no lease; its entities then answer
//! from the other nodes.

mod common;

use std::time::Duration;

use common::{CounterMsg, LIMIT, cluster_of, get};
use flotilla_lease::{LeaseBackend, MemoryBackend};

async fn held_by(backend: &MemoryBackend, owner: &str) -> Vec<String> {
    backend
        .list()
        .await
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.owner == owner && r.expires_in.is_some_and(|d| !d.is_zero()))
        .map(|r| r.name.as_str().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_answer_from_every_node_and_a_leaving_node_releases_every_lease_before_it_exits() {
    // The one test in this binary: it installs the process-wide metrics recorder.
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap_or_else(|e| panic!("{e}"));
    let backend = MemoryBackend::new();
    let nodes = cluster_of(3, &backend).await;
    let ids: Vec<String> = (0..60).map(|i| format!("counter-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        nodes[i % 3].region.entity_ref(id).tell(CounterMsg::Add(1));
    }
    // Asked through another node's region: the question may overtake the Add (they travel
    // different paths), so ask until it has arrived — exactly once.
    let mut hosts = std::collections::BTreeSet::new();
    for (i, id) in ids.iter().enumerate() {
        let start = tokio::time::Instant::now();
        let (node, total) = loop {
            let (node, _, total) = get(&nodes[(i + 1) % 3].region, id).await;
            if total > 0 || start.elapsed() > LIMIT {
                break (node, total);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(total, 1, "{id}");
        hosts.insert(node);
    }
    assert_eq!(hosts.len(), 3, "entities run on every node");
    // Each shard runs in one place, under its lease.
    let mut per_node = Vec::new();
    for n in &nodes {
        let state = n.region.state().await;
        per_node.push(state.shards.len());
        assert_eq!(held_by(&backend, &n.owner).await.len(), state.shards.len());
    }
    assert!(per_node.iter().all(|c| *c > 0), "{per_node:?}");
    // The same, asked of every region from one node.
    let stats = nodes[1].region.cluster_stats(Duration::from_secs(5)).await;
    assert_eq!(stats.len(), 3, "{stats:?}");
    assert_eq!(
        stats.values().map(|(_, e)| e).sum::<usize>(),
        60,
        "{stats:?}"
    );
    assert_eq!(
        stats
            .values()
            .map(|(s, _)| *s)
            .collect::<Vec<_>>()
            .iter()
            .sum::<usize>(),
        per_node.iter().sum::<usize>()
    );

    // Node 2 shuts down: its shards are handed off and every lease released before it exits.
    let leaving = nodes[2].owner.clone();
    let outcome = nodes[2].system.terminate().await;
    let report = format!("{:?}", outcome.report);
    assert!(!report.contains("TimedOut"), "{report}");
    assert!(
        held_by(&backend, &leaving).await.is_empty(),
        "the leaver still holds {:?}",
        held_by(&backend, &leaving).await
    );
    // Its entities answer from the others (their state started afresh: entities are not
    // persistent here).
    for id in &ids {
        let (node, _, _) = get(&nodes[0].region, id).await;
        assert_ne!(node, leaving, "{id}");
    }
    let remaining: usize = {
        let mut total = 0;
        for n in &nodes[..2] {
            total += n.region.state().await.shards.len();
        }
        total
    };
    assert!(remaining >= 20, "{remaining} shards live on the survivors");
    // Lease operations were measured; no shard is left waiting for its lease.
    let names: Vec<(String, f64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, _, _, v)| {
            let value = match v {
                metrics_util::debugging::DebugValue::Gauge(g) => g.into_inner(),
                metrics_util::debugging::DebugValue::Counter(c) => c as f64,
                metrics_util::debugging::DebugValue::Histogram(h) => h.len() as f64,
            };
            (k.key().name().to_owned(), value)
        })
        .collect();
    let value = |name: &str| {
        names
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .collect::<Vec<_>>()
    };
    assert!(
        value("flotilla_sharding_lease_acquire_seconds")
            .iter()
            .sum::<f64>()
            >= 30.0
    );
    assert!(
        value("flotilla_sharding_lease_release_seconds")
            .iter()
            .sum::<f64>()
            >= 1.0
    );
    assert_eq!(
        value("flotilla_sharding_shards_waiting_for_lease")
            .iter()
            .sum::<f64>(),
        0.0,
        "{names:?}"
    );
    // No zombie: every lease is held by a member. One taken by a stranger is one.
    let zombies = flotilla_sharding::zombie_leases(&nodes[0].cluster, &backend).await;
    assert_eq!(zombies.map(|z| z.len()), Ok(0));
    let name = flotilla_lease::LeaseName::new("sharded-shard-counter-999")
        .unwrap_or_else(|e| panic!("{e}"));
    backend.take_over(
        &name,
        "flotilla://sharded@10.9.9.9:2552",
        Duration::from_secs(60),
    );
    let zombies = flotilla_sharding::zombie_leases(&nodes[0].cluster, &backend)
        .await
        .unwrap_or_default();
    assert_eq!(zombies.len(), 1);
    assert_eq!(zombies[0].owner, "flotilla://sharded@10.9.9.9:2552");
}
