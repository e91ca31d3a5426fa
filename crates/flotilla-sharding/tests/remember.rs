//! Remember entities on three in-process nodes with an in-memory lease backend and the
//! in-memory store: entities started once run again on the survivors after a node shuts down,
//! without any message; a passivated entity is forgotten and stays stopped; one that stops on
//! its own starts again after the backoff. No entity ever runs on two nodes at once.

mod common;

use std::time::Duration;

use common::{CounterMsg, Lives, cluster_with, get, running, settings, starts, wait_until};
use flotilla_core::ShardingSettings;
use flotilla_lease::MemoryBackend;
use flotilla_sharding::MemoryEntityStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remembered_entities_run_again_on_the_survivors_without_a_message() {
    let backend = MemoryBackend::new();
    let store = MemoryEntityStore::new();
    let lives = Lives::default();
    let nodes = cluster_with(3, &backend, &lives, |e| {
        e.settings(ShardingSettings {
            remember_entities: true,
            entity_restart_backoff: Duration::from_millis(500),
            ..settings()
        })
        .remember_entities_store(store.clone())
    })
    .await;
    let ids: Vec<String> = (0..60).map(|i| format!("counter-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        nodes[i % 3].region.entity_ref(id).tell(CounterMsg::Add(1));
    }
    wait_until("every entity runs", || running(&lives).len() == 60).await;
    assert_eq!(
        store.all("counter").len(),
        60,
        "every started entity is remembered"
    );
    let on_leaver: Vec<String> = running(&lives)
        .into_iter()
        .filter(|(_, node)| *node == nodes[2].owner)
        .map(|(id, _)| id)
        .collect();
    assert!(!on_leaver.is_empty());

    // Node 2 shuts down. Nobody sends anything: its entities start on the others by themselves.
    let outcome = nodes[2].system.terminate().await;
    assert!(!format!("{:?}", outcome.report).contains("TimedOut"));
    wait_until("the leaver's entities run on the survivors", || {
        let now = running(&lives);
        now.len() == 60 && now.values().all(|node| *node != nodes[2].owner)
    })
    .await;
    assert_eq!(store.all("counter").len(), 60, "nothing forgotten");

    // A passivated entity is forgotten and stays stopped.
    let first = &ids[0];
    let starts_before = starts(&lives, first);
    nodes[0]
        .region
        .entity_ref(first)
        .tell(CounterMsg::Passivate);
    wait_until("passivated and forgotten", || {
        !running(&lives).contains_key(first) && !store.all("counter").contains(first)
    })
    .await;
    // One that stops on its own is still remembered, and starts again after the backoff.
    let second = &ids[1];
    let second_starts = starts(&lives, second);
    nodes[1].region.entity_ref(second).tell(CounterMsg::Stop);
    wait_until("stopped, then started again", || {
        starts(&lives, second) == second_starts + 1 && running(&lives).contains_key(second)
    })
    .await;
    assert!(store.all("counter").contains(second));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        starts(&lives, first),
        starts_before,
        "a passivated entity does not start by itself"
    );
    // Asked for, it starts again (and is remembered again).
    let (_, _, total) = get(&nodes[0].region, first).await;
    assert_eq!(total, 0);
    assert!(store.all("counter").contains(first));
    running(&lives);
    for n in &nodes[..2] {
        n.system.terminate().await;
    }
}
