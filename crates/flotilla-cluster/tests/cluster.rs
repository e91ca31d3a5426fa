//! Clusters of actor systems in one process, on 127.0.0.1: join, events, graceful leave through
//! coordinated shutdown, a crashed node downed by the split-brain resolver and quarantined, the
//! down API, and a quarantined node downing itself.
//!
//! Every wait is bounded; a node is "crashed" by stopping its remoting at once, which closes
//! its connections without a goodbye, as a killed process does.

use std::time::Duration;

use flotilla_actor::{
    Actor, ActorError, ActorRef, ActorSystem, Context, Props, RemoteMessage, ShutdownReason,
    Terminated,
};
use flotilla_cluster::{Cluster, ClusterEvent, MemberStatus, testing};
use flotilla_core::{Address, FlotillaConfig};

const LIMIT: Duration = Duration::from_secs(30);

fn system(name: &str) -> ActorSystem {
    // Remote deathwatch's own detector is fast here (1 s), faster than the cluster's downing:
    // it must leave members alone, so that a Terminated for an actor on a crashed member comes
    // only from the cluster's removal of that member, never behind the resolver's back.
    let config = FlotillaConfig {
        remote: flotilla_remote::testing::fast_settings(),
        cluster: testing::fast_settings(),
        ..FlotillaConfig::default()
    };
    ActorSystem::builder(name)
        .config(config)
        .remote("127.0.0.1", 0)
        .build()
        .unwrap_or_else(|e| panic!("{e}"))
}

struct Node {
    system: ActorSystem,
    cluster: Cluster,
}

/// `n` nodes of system `name`, joined through the first; returns once all see each other Up.
async fn cluster_of(name: &str, n: usize) -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for _ in 0..n {
        let system = system(name);
        let cluster = Cluster::start(&system).unwrap_or_else(|e| panic!("{e}"));
        nodes.push(Node { system, cluster });
    }
    let seed = nodes[0].cluster.self_address().clone();
    for node in &nodes {
        node.cluster.join_seed_nodes(vec![seed.clone()]);
    }
    for node in &nodes {
        wait_until("every node sees every node Up", || {
            let state = node.cluster.state();
            state.members.len() == n && state.members.iter().all(|m| m.status == MemberStatus::Up)
        })
        .await;
    }
    nodes
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < LIMIT, "not within {LIMIT:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn statuses(c: &Cluster) -> Vec<(Address, MemberStatus)> {
    c.state()
        .members
        .iter()
        .map(|m| (m.node.address.clone(), m.status))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_join_through_a_seed_and_agree_on_members_and_leader() {
    let nodes = cluster_of("agree", 3).await;
    let first = nodes[0].cluster.state();
    let leader = first.leader.clone();
    assert!(leader.is_some());
    let lowest = first.members.iter().map(|m| m.node.address.clone()).min();
    assert_eq!(
        leader, lowest,
        "the leader is the first Up member by address"
    );
    for node in &nodes {
        wait_until("the views converge", || {
            let s = node.cluster.state();
            s.leader == leader && s.seen_by.len() == 3
        })
        .await;
        assert_eq!(statuses(&node.cluster), statuses(&nodes[0].cluster));
        assert!(node.cluster.when_up().await);
        let up_numbers: Vec<u64> = node
            .cluster
            .state()
            .members
            .iter()
            .map(|m| m.up_number)
            .collect();
        assert!(up_numbers.iter().all(|n| *n != u64::MAX), "{up_numbers:?}");
    }
    // A subscriber gets the state first, then changes only.
    let mut events = nodes[1].cluster.subscribe().await;
    assert_eq!(events.initial_state().members.len(), 3);
    assert!(events.try_recv().is_none(), "no event without a change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_shuts_down_leaves_gracefully_and_its_shutdown_awaits_removal() {
    let nodes = cluster_of("leave", 3).await;
    let mut events = nodes[0].cluster.subscribe().await;
    let leaving = nodes[2].cluster.self_address().clone();
    let started = tokio::time::Instant::now();
    let outcome = nodes[2].system.terminate().await;
    let took = started.elapsed();
    assert_eq!(outcome.reason, ShutdownReason::ActorSystemTerminate);
    assert!(
        nodes[2].cluster.snapshot().removed,
        "shutdown returned only once the node was removed: {outcome:?} {:?}",
        nodes[2].cluster.snapshot()
    );
    assert!(took < Duration::from_secs(10), "leaving took {took:?}");
    let report = format!("{:?}", outcome.report);
    assert!(!report.contains("TimedOut"), "{report}");
    // The others saw Leaving → Exiting → Removed, in that order.
    let mut seen = Vec::new();
    wait_until("the leaver's removal is published", || {
        while let Some(e) = events.try_recv() {
            match e {
                ClusterEvent::MemberLeft(m) if m.node.address == leaving => seen.push("left"),
                ClusterEvent::MemberExited(m) if m.node.address == leaving => seen.push("exited"),
                ClusterEvent::MemberRemoved { member, .. } if member.node.address == leaving => {
                    seen.push("removed")
                }
                _ => {}
            }
        }
        seen.last() == Some(&"removed")
    })
    .await;
    assert_eq!(seen, ["left", "exited", "removed"]);
    for node in &nodes[..2] {
        wait_until("two members remain", || {
            node.cluster.state().members.len() == 2
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_member_leaves_without_waiting_for_a_removal_nobody_can_make() {
    let nodes = cluster_of("last", 1).await;
    let started = tokio::time::Instant::now();
    let outcome = nodes[0].system.terminate().await;
    let took = started.elapsed();
    let report = format!("{:?}", outcome.report);
    assert!(
        outcome.report.timed_out_tasks().is_empty(),
        "no phase may wait for the removal: {report}"
    );
    assert!(took < Duration::from_secs(5), "leaving took {took:?}");
    assert_eq!(
        nodes[0].cluster.snapshot().self_member.map(|m| m.status),
        Some(MemberStatus::Exiting)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_is_marked_unreachable_downed_removed_and_quarantined() {
    let nodes = cluster_of("crash", 3).await;
    let mut events = nodes[0].cluster.subscribe().await;
    let crashed = nodes[2].cluster.self_node().clone();
    let uid = crashed.uid;
    nodes[2]
        .system
        .remote_node()
        .unwrap_or_else(|| panic!("remoting"))
        .shutdown();
    let mut seen = Vec::new();
    wait_until("the crashed node is removed", || {
        while let Some(e) = events.try_recv() {
            match e {
                ClusterEvent::UnreachableMember(m) if m.node == crashed => seen.push("unreachable"),
                ClusterEvent::MemberDowned(m) if m.node == crashed => seen.push("downed"),
                ClusterEvent::MemberRemoved { member, .. } if member.node == crashed => {
                    seen.push("removed")
                }
                _ => {}
            }
        }
        seen.last() == Some(&"removed")
    })
    .await;
    assert_eq!(seen, ["unreachable", "downed", "removed"]);
    // Removed means quarantined for good: that incarnation cannot come back.
    let associations = nodes[0].system.associations().await;
    let a = associations
        .iter()
        .find(|a| a.remote == crashed.address)
        .unwrap_or_else(|| panic!("no association with {crashed}"));
    assert!(
        a.quarantined.contains(&uid),
        "{crashed} is not quarantined: {a:?}"
    );
    for node in &nodes[..2] {
        wait_until("two Up members remain", || {
            let s = node.cluster.state();
            s.members.len() == 2 && s.unreachable.is_empty()
        })
        .await;
        assert!(!node.system.is_terminated());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_downed_node_learns_it_and_shuts_itself_down() {
    let nodes = cluster_of("down", 3).await;
    let victim = nodes[1].cluster.self_address().clone();
    nodes[0].cluster.down(victim.clone());
    let outcome = tokio::time::timeout(LIMIT, nodes[1].system.when_terminated()).await;
    assert!(outcome.is_ok(), "the downed node did not shut down");
    assert_eq!(
        nodes[1].system.coordinated_shutdown().reason(),
        Some(ShutdownReason::ClusterDowning)
    );
    for node in [&nodes[0], &nodes[2]] {
        wait_until("the downed node is removed", || {
            node.cluster
                .state()
                .members
                .iter()
                .all(|m| m.node.address != victim)
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_quarantined_by_a_member_downs_itself() {
    let nodes = cluster_of("quarantined", 3).await;
    let victim = nodes[2].cluster.self_node().clone();
    // Remoting on node 0 quarantines node 2 on its own (as failed system-message delivery
    // would): node 0 marks it terminated and downs it, node 2 learns of the quarantine and
    // downs itself.
    nodes[0].system.quarantine(&victim, "a test quarantines it");
    let outcome = tokio::time::timeout(LIMIT, nodes[2].system.when_terminated()).await;
    assert!(outcome.is_ok(), "the quarantined node did not shut down");
    wait_until("the quarantined node is removed", || {
        nodes[1]
            .cluster
            .state()
            .members
            .iter()
            .all(|m| m.node != victim)
    })
    .await;
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Ping;

impl RemoteMessage for Ping {
    const MANIFEST: &'static str = "test.Ping";
}

struct Idle;

impl Actor for Idle {
    type Msg = Ping;
    async fn handle(&mut self, _: Ping, _: &mut Context<Ping>) -> Result<(), ActorError> {
        Ok(())
    }
}

/// Watches one actor and reports its Terminated.
struct Watcher {
    target: ActorRef<Ping>,
    report: tokio::sync::mpsc::UnboundedSender<Terminated>,
}

impl Actor for Watcher {
    type Msg = Ping;
    async fn pre_start(&mut self, ctx: &mut Context<Ping>) -> Result<(), ActorError> {
        ctx.watch(&self.target);
        Ok(())
    }
    async fn handle(&mut self, _: Ping, _: &mut Context<Ping>) -> Result<(), ActorError> {
        Ok(())
    }
    async fn on_terminated(
        &mut self,
        terminated: Terminated,
        _: &mut Context<Ping>,
    ) -> Result<(), ActorError> {
        let _ = self.report.send(terminated);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_of_an_actor_on_a_removed_member_get_terminated() {
    let nodes = cluster_of("watch", 3).await;
    let remote = nodes[2]
        .system
        .spawn("idle", Props::new(|| Idle))
        .unwrap_or_else(|e| panic!("{e}"));
    nodes[2].system.expose(&remote);
    let path = format!("{}/user/idle", nodes[2].cluster.self_address());
    let target = nodes[0]
        .system
        .remote_ref::<Ping>(&path)
        .unwrap_or_else(|e| panic!("{e}"));
    let (report, mut terminated) = tokio::sync::mpsc::unbounded_channel();
    let _watcher = nodes[0]
        .system
        .spawn(
            "watcher",
            Props::new(move || Watcher {
                target: target.clone(),
                report: report.clone(),
            }),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(300)).await; // the watch reaches node 2
    nodes[2]
        .system
        .remote_node()
        .unwrap_or_else(|| panic!("remoting"))
        .shutdown();
    let crashed = tokio::time::Instant::now();
    let got = tokio::time::timeout(LIMIT, terminated.recv())
        .await
        .unwrap_or_else(|_| panic!("no Terminated within {LIMIT:?}"))
        .unwrap_or_else(|| panic!("the watcher stopped"));
    assert_eq!(got.path.to_string(), path);
    // Remote deathwatch's detector (1 s) would have fired long before the resolver's
    // stable-after: the removal delivered it.
    let stable_after = testing::fast_settings()
        .split_brain_resolver
        .stable_after_for(nodes.len());
    assert!(
        crashed.elapsed() >= stable_after,
        "Terminated after {:?}, before the resolver could have decided",
        crashed.elapsed()
    );
    let gone = nodes[2].cluster.self_address().clone();
    wait_until("the crashed member is removed", || {
        nodes[0]
            .cluster
            .state()
            .members
            .iter()
            .all(|m| m.node.address != gone)
    })
    .await;
}
