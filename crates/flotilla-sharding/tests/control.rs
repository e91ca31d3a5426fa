//! A region's control messages (the coordinator's protocol, lease answers, queries) go ahead of
//! entity traffic in its mailbox: a region with a backlog of entity messages still answers at
//! once, so a hand-off is never stuck behind traffic.

mod common;

use std::time::Duration;

use common::{CounterMsg, LIMIT, cluster_of};
use flotilla_lease::MemoryBackend;
use flotilla_sharding::ShardRegion;

/// Shards and running entities of the region.
async fn counts(region: &ShardRegion<CounterMsg>) -> (usize, usize) {
    let state = region.state().await;
    (
        state.shards.len(),
        state.shards.values().map(Vec::len).sum(),
    )
}

async fn wait_for(region: &ShardRegion<CounterMsg>, want: (usize, usize)) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let now = counts(region).await;
        if now == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "(shards, entities) {now:?}, not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_with_a_backlog_of_entity_messages_answers_a_query_ahead_of_it() {
    const WARM: usize = 300;
    const ENTITIES: usize = 20_000;
    let backend = MemoryBackend::new();
    let nodes = cluster_of(1, &backend).await;
    let region = &nodes[0].region;
    // Every shard started (with its lease) and its home known before the flood, so that the
    // flood waits in the region's mailbox, not for homes.
    for i in 0..WARM {
        region
            .entity_ref(&format!("warm-{i}"))
            .tell(CounterMsg::Add(1));
    }
    wait_for(region, (30, WARM)).await;
    // 200 000 messages to 20 000 new entities, queued in the region at once.
    let refs: Vec<_> = (0..ENTITIES)
        .map(|i| region.entity_ref(&format!("e{i}")))
        .collect();
    for _ in 0..10 {
        for r in &refs {
            r.tell(CounterMsg::Add(1));
        }
    }
    // The question is queued behind all of them, and answered before most are handled.
    let (_, started) = tokio::time::timeout(Duration::from_secs(5), counts(region))
        .await
        .unwrap_or_else(|_| panic!("the region did not answer within 5 s"));
    assert!(
        started < WARM + ENTITIES,
        "answered only after the backlog: {started} entities already running"
    );
    // And the backlog is handled too.
    wait_for(region, (30, WARM + ENTITIES)).await;
    nodes[0].system.terminate().await;
}

/// 90 000 messages held in a region while no shard can be allocated (another member's region
/// has not started yet), released at once when it has: carried out in one loop (this once
/// nested a call per released message, and overflowed the stack).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_releases_ninety_thousand_held_messages_at_once() {
    const ENTITIES: usize = 10_000;
    const EACH: u64 = 9;
    let backend = MemoryBackend::new();
    let lives = common::Lives::default();
    let mut formed = common::form(2).await;
    let (system, cluster) = formed.remove(0);
    let first = common::with_region(system, cluster, &backend, &lives, &|e| e);
    let refs: Vec<_> = (0..ENTITIES)
        .map(|i| first.region.entity_ref(&format!("e{i}")))
        .collect();
    for _ in 0..EACH {
        for r in &refs {
            r.tell(CounterMsg::Add(1));
        }
    }
    let deadline = tokio::time::Instant::now() + LIMIT;
    while first.region.state().await.held < ENTITIES * EACH as usize {
        assert!(tokio::time::Instant::now() < deadline, "not all held");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (system, cluster) = formed.remove(0);
    let second = common::with_region(system, cluster, &backend, &lives, &|e| e);
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        let (a, b) = (counts(&first.region).await, counts(&second.region).await);
        if a.1 + b.1 == ENTITIES && a.0 + b.0 == 30 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{a:?} {b:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in ["e0", "e7", "e9999"] {
        let (_, _, total) = common::get(&first.region, id).await;
        assert_eq!(total, EACH, "every message of {id} delivered");
    }
    second.system.terminate().await;
    first.system.terminate().await;
}
