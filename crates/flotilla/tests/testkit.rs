//! The test cluster as a user's tests would use it: an entity survives the crash of its node
//! (it runs elsewhere once its lease has expired, under a higher token), and a node cut off
//! from the others by a partition is downed while the majority carries on.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::time::Duration;

use flotilla::sharding::Entity;
use flotilla::testkit::TestCluster;
use flotilla::{Actor, ActorError, Context, Props, RemoteMessage, ReplyTo};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    /// The shard's fencing token.
    Token(ReplyTo<u64>),
}

impl RemoteMessage for Msg {
    const MANIFEST: &'static str = "test.Tokened";
}

struct Tokened(u64);

impl Actor for Tokened {
    type Msg = Msg;

    async fn handle(&mut self, msg: Msg, _: &mut Context<Msg>) -> Result<(), ActorError> {
        let Msg::Token(reply) = msg;
        let _ = reply.send(self.0);
        Ok(())
    }
}

fn entity() -> Entity<Tokened> {
    Entity::new("tokened", |ctx| {
        let token = ctx.fencing_token().map_or(0, |t| t.0);
        Props::new(move || Tokened(token))
    })
}

async fn token(cluster: &TestCluster, via: usize, id: &str) -> u64 {
    let started = tokio::time::Instant::now();
    loop {
        match cluster
            .entity_ref::<Msg>(via, "tokened", id)
            .ask(Msg::Token, Duration::from_millis(1000))
            .await
        {
            Ok(t) => return t,
            Err(e) => assert!(started.elapsed() < Duration::from_secs(60), "{id}: {e}"),
        }
    }
}

async fn host(cluster: &TestCluster, id: &str) -> usize {
    for i in 0..cluster.len() {
        let region = cluster.node(i).region::<Msg>("tokened").unwrap();
        let state = region.state().await;
        if state.shards.values().any(|ids| ids.iter().any(|e| e == id)) {
            return i;
        }
    }
    panic!("{id} runs nowhere")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_runs_again_after_its_node_crashed_under_a_higher_token() {
    let mut cluster = TestCluster::builder(3)
        .system("crash")
        .entity(entity)
        .start()
        .await
        .unwrap();
    cluster.wait_up().await.unwrap();
    let before = token(&cluster, 0, "e1").await;
    assert!(before > 0);
    let victim = host(&cluster, "e1").await;
    cluster.crash(victim);
    let survivor = (victim + 1) % 3;
    let crashed = tokio::time::Instant::now();
    let after = token(&cluster, survivor, "e1").await;
    assert!(after > before, "{after} after {before}");
    // Not before the crashed node's lease could have expired.
    assert!(
        crashed.elapsed() >= Duration::from_secs(2),
        "{:?}",
        crashed.elapsed()
    );
    cluster.wait_up().await.unwrap();
    assert_eq!(cluster.node(survivor).cluster().state().members.len(), 2);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_partitioned_from_the_majority_is_downed() {
    let mut cluster = TestCluster::builder(3)
        .system("split")
        .entity(entity)
        .start()
        .await
        .unwrap();
    cluster.wait_up().await.unwrap();
    cluster.partition(0, 2);
    cluster.partition(1, 2);
    let lone = cluster.node(2).cluster().self_address().clone();
    cluster
        .wait("node 2 removed by the majority", || {
            (0..2).all(|i| cluster.node(i).cluster().state().member(&lone).is_none())
        })
        .await
        .unwrap();
    cluster
        .wait("node 2 stopped itself", || {
            cluster
                .node(2)
                .system()
                .coordinated_shutdown()
                .reason()
                .is_some()
        })
        .await
        .unwrap();
    cluster.heal(0, 2);
    cluster.heal(1, 2);
    let t = token(&cluster, 0, "e2").await;
    assert!(t > 0);
    cluster.stop(0).await;
    cluster.stop(1).await;
}
