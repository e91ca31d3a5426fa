//! A shard that loses its lease stops its entities at once — also one that is in the middle
//! of a long handler (waiting on I/O): the message in hand is abandoned, not finished without
//! the lease.

mod common;

use std::time::Duration;

use common::{CounterMsg, Lives, cluster_with, get, running, wait_until};
use flotilla_lease::{LeaseName, MemoryBackend};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_stalled_in_its_handler_stops_at_once_when_its_shard_loses_the_lease() {
    let backend = MemoryBackend::new();
    let lives = Lives::default();
    let nodes = cluster_with(1, &backend, &lives, |e| e).await;
    let region = &nodes[0].region;
    let (_, shard, _) = get(region, "stalled").await;
    region.entity_ref("stalled").tell(CounterMsg::Stall(600));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(running(&lives).contains_key("stalled"));

    // Another owner takes the lease: the next renewal finds it gone.
    let name =
        LeaseName::new(&format!("sharded-shard-counter-{shard}")).unwrap_or_else(|e| panic!("{e}"));
    let taken = tokio::time::Instant::now();
    backend.take_over(
        &name,
        "flotilla://sharded@10.9.9.9:2552",
        Duration::from_secs(60),
    );
    wait_until("the stalled entity stopped", || {
        !running(&lives).contains_key("stalled")
    })
    .await;
    let after = taken.elapsed();
    // A renewal every 300 ms notices; the handler had ten minutes to go.
    assert!(
        after < Duration::from_secs(3),
        "stopped {after:?} after the loss"
    );
    for n in nodes {
        n.system.terminate().await;
    }
}
