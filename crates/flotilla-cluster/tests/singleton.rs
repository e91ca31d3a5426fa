//! Cluster singletons on clusters of actor systems in one process, on 127.0.0.1: the singleton
//! runs on the oldest member and every proxy reaches it (buffering until it is found); the
//! oldest leaving hands it over; a crashed oldest is taken over after its removal and the
//! removal margin; with a lease it runs only while the lease is held, stops at once when the
//! lease is lost, comes back when it is re-acquired, and the proxies follow.
//!
//! Every instance records its start and stop in one shared log, and the tests check that log
//! for the singleton's promise: never two instances at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_actor::{
    Actor, ActorError, ActorRef, ActorSystem, Context, Props, RemoteMessage, ReplyTo,
};
use flotilla_cluster::LeaseClientExt as _;
use flotilla_cluster::{Cluster, ClusterSingleton, MemberStatus, testing};
use flotilla_core::{FlotillaConfig, LeaseSettings, SingletonConfig};
use flotilla_lease::{LeaseClient, LeaseName, MemoryBackend, OwnerId};
use serde::{Deserialize, Serialize};

const LIMIT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
enum CounterMsg {
    Add(u64),
    /// The node it runs on and its total.
    Where(ReplyTo<(String, u64)>),
}

impl RemoteMessage for CounterMsg {
    const MANIFEST: &'static str = "test.SingletonCounter";
}

/// Start and stop of every instance, in order: ("start" | "stop", node).
type Log = Arc<Mutex<Vec<(&'static str, String)>>>;

struct Counter {
    node: String,
    total: u64,
    log: Log,
}

impl Actor for Counter {
    type Msg = CounterMsg;

    async fn pre_start(&mut self, _ctx: &mut Context<CounterMsg>) -> Result<(), ActorError> {
        record(&self.log, "start", &self.node);
        Ok(())
    }

    async fn handle(
        &mut self,
        msg: CounterMsg,
        _ctx: &mut Context<CounterMsg>,
    ) -> Result<(), ActorError> {
        match msg {
            CounterMsg::Add(n) => self.total += n,
            CounterMsg::Where(reply) => {
                reply.send((self.node.clone(), self.total));
            }
        }
        Ok(())
    }

    async fn post_stop(&mut self, _ctx: &mut Context<CounterMsg>) {
        record(&self.log, "stop", &self.node);
    }
}

fn record(log: &Log, what: &'static str, node: &str) {
    let mut log = log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    log.push((what, node.to_owned()));
    let mut running = 0i32;
    for (w, _) in log.iter() {
        running += if *w == "start" { 1 } else { -1 };
        assert!(running <= 1, "two instances ran at once: {log:?}");
    }
}

fn starts(log: &Log) -> Vec<String> {
    log.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|(w, _)| *w == "start")
        .map(|(_, n)| n.clone())
        .collect()
}

fn system(name: &str, faults: Option<&flotilla_remote::FaultInjector>) -> ActorSystem {
    let mut cluster = testing::fast_settings();
    cluster.singleton = SingletonConfig {
        identification_interval: Duration::from_millis(200),
        hand_over_retry_interval: Duration::from_millis(200),
        lease_retry_interval: Duration::from_millis(300),
        ..SingletonConfig::default()
    };
    let config = FlotillaConfig {
        remote: flotilla_remote::testing::fast_settings(),
        cluster,
        ..FlotillaConfig::default()
    };
    let mut builder = ActorSystem::builder(name)
        .config(config)
        .remote("127.0.0.1", 0);
    if let Some(faults) = faults {
        builder = builder.fault_injector(faults.clone());
    }
    builder.build().unwrap_or_else(|e| panic!("{e}"))
}

struct Node {
    system: ActorSystem,
    cluster: Cluster,
    counter: ClusterSingleton<CounterMsg>,
    address: String,
}

/// Options for one test's singleton.
#[derive(Clone, Default)]
struct Setup {
    /// Shared by the nodes' lease clients, when the singleton uses a lease.
    lease: Option<(MemoryBackend, LeaseSettings)>,
    /// The first node's fault injector.
    faults: Option<flotilla_remote::FaultInjector>,
}

/// `n` nodes of system `name`, each with the singleton started before it joins (so the first
/// messages wait in the proxies' buffers); returns once all see each other Up.
async fn cluster_of(name: &str, n: usize, log: &Log, setup: &Setup) -> Vec<Node> {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..n {
        let system = system(name, setup.faults.as_ref().filter(|_| i == 0));
        let cluster = Cluster::start(&system).unwrap_or_else(|e| panic!("{e}"));
        let address = cluster.self_address().to_string();
        let (node, log2) = (address.clone(), Arc::clone(log));
        let mut builder = ClusterSingleton::builder("counter", move || {
            let (node, log) = (node.clone(), Arc::clone(&log2));
            Props::new(move || Counter {
                node: node.clone(),
                total: 0,
                log: Arc::clone(&log),
            })
        });
        if let Some((backend, settings)) = &setup.lease {
            let owner = OwnerId::new(&address).unwrap_or_else(|e| panic!("{e}"));
            let client =
                LeaseClient::start(&system, Arc::new(backend.clone()), settings.clone(), owner)
                    .unwrap_or_else(|e| panic!("{e}"));
            let lease = client
                .lease(LeaseName::new("counter-singleton").unwrap_or_else(|e| panic!("{e}")))
                .unwrap_or_else(|e| panic!("{e}"));
            builder = builder.lease(lease);
        }
        let counter = builder
            .start(&system, &cluster)
            .unwrap_or_else(|e| panic!("{e}"));
        nodes.push(Node {
            system,
            cluster,
            counter,
            address,
        });
    }
    // Sent before there is a cluster: held by the proxy until the singleton is found.
    for k in 1..=5 {
        nodes[n - 1].counter.proxy().tell(CounterMsg::Add(k));
    }
    let seed = nodes[0].cluster.self_address().clone();
    for node in &nodes {
        node.cluster.join_seed_nodes(vec![seed.clone()]);
        // One at a time, so that the first node is the oldest.
        assert!(node.cluster.when_up().await);
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
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asks through `proxy` until the singleton answers from `expected` (a node's address).
async fn answers_from(proxy: &ActorRef<CounterMsg>, expected: &str) -> u64 {
    let start = tokio::time::Instant::now();
    loop {
        let answer = proxy
            .ask(CounterMsg::Where, Duration::from_millis(500))
            .await;
        match answer {
            Ok((node, total)) if node == expected => return total,
            other => assert!(
                start.elapsed() < LIMIT,
                "no answer from {expected} through {proxy:?} within {LIMIT:?}: last {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn running_on(nodes: &[Node]) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| n.counter.is_running_here())
        .map(|n| n.address.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_singleton_runs_on_the_oldest_and_every_proxy_reaches_it() {
    let log = Log::default();
    let nodes = cluster_of("single", 3, &log, &Setup::default()).await;
    let oldest = nodes[0].address.clone();
    wait_until("the singleton runs", || !running_on(&nodes).is_empty()).await;
    assert_eq!(running_on(&nodes), std::slice::from_ref(&oldest));
    // The five messages sent before the cluster formed arrived, once each.
    assert_eq!(answers_from(nodes[2].counter.proxy(), &oldest).await, 15);
    for node in &nodes {
        node.counter.proxy().tell(CounterMsg::Add(100));
    }
    for node in &nodes {
        let total = answers_from(node.counter.proxy(), &oldest).await;
        assert!(total >= 15, "{total}");
    }
    assert_eq!(answers_from(nodes[1].counter.proxy(), &oldest).await, 315);
    assert_eq!(starts(&log), [oldest]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_leaving_hands_the_singleton_over_to_the_next_oldest() {
    let log = Log::default();
    let nodes = cluster_of("handover", 3, &log, &Setup::default()).await;
    let (first, second) = (nodes[0].address.clone(), nodes[1].address.clone());
    answers_from(nodes[2].counter.proxy(), &first).await;
    let outcome = nodes[0].system.terminate().await;
    let report = format!("{:?}", outcome.report);
    assert!(!report.contains("TimedOut"), "{report}");
    // The hand-over finished within the leaver's shutdown: the instance there had stopped
    // before the next oldest started it (the log would have failed otherwise).
    assert!(!nodes[0].counter.is_running_here());
    wait_until("the next oldest runs it", || {
        running_on(&nodes) == [second.clone()]
    })
    .await;
    for node in &nodes[1..] {
        answers_from(node.counter.proxy(), &second).await;
    }
    assert_eq!(starts(&log), [first, second]);
}

/// The survivors (every node but the first) remove the first; then the next oldest starts the
/// singleton only after the removal margin, and every survivor's proxy finds it.
async fn survivors_take_over(nodes: &[Node], log: &Log) {
    let (first, second) = (nodes[0].address.clone(), nodes[1].address.clone());
    let gone = nodes[0].cluster.self_node().clone();
    wait_until("the survivors remove the first node", || {
        nodes[1..]
            .iter()
            .all(|n| n.cluster.state().members.iter().all(|m| m.node != gone))
    })
    .await;
    let removed = tokio::time::Instant::now();
    for node in &nodes[1..] {
        answers_from(node.counter.proxy(), &second).await;
    }
    let waited = removed.elapsed();
    let margin = testing::fast_settings()
        .split_brain_resolver
        .stable_after_for(nodes.len());
    assert!(
        waited + Duration::from_millis(500) >= margin,
        "started {waited:?} after the removal, before the removal margin {margin:?}"
    );
    assert_eq!(starts(log), [first, second.clone()]);
    assert_eq!(running_on(nodes), [second]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_oldest_is_taken_over_after_its_removal() {
    let log = Log::default();
    let nodes = cluster_of("takeover", 3, &log, &Setup::default()).await;
    answers_from(nodes[2].counter.proxy(), &nodes[0].address).await;
    // A crash: the network goes first, then everything else, with no word to anyone.
    nodes[0]
        .system
        .remote_node()
        .unwrap_or_else(|| panic!("remoting"))
        .shutdown();
    let crashed = nodes[0].system.clone();
    tokio::spawn(async move { crashed.terminate().await });
    survivors_take_over(&nodes, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_oldest_stops_its_singleton_before_the_majority_starts_one() {
    let log = Log::default();
    let faults = flotilla_remote::FaultInjector::new();
    let setup = Setup {
        faults: Some(faults.clone()),
        ..Setup::default()
    };
    let nodes = cluster_of("partition", 3, &log, &setup).await;
    answers_from(nodes[2].counter.proxy(), &nodes[0].address).await;
    // The oldest is cut off from the others but keeps running: alone, a minority, its resolver
    // downs it, and it stops its singleton; the majority's starts only after the margin. The
    // shared log fails the test if both ever run.
    for node in &nodes[1..] {
        faults.blackhole(
            node.cluster.self_address(),
            flotilla_remote::Direction::Both,
        );
    }
    survivors_take_over(&nodes, &log).await;
    let down = tokio::time::timeout(LIMIT, nodes[0].system.when_terminated()).await;
    assert!(down.is_ok(), "the partitioned oldest did not down itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_lease_the_singleton_stops_when_it_is_lost_and_the_proxies_follow_it_back() {
    let log = Log::default();
    let backend = MemoryBackend::new();
    let lease_settings = LeaseSettings {
        heartbeat_timeout: Duration::from_secs(3),
        heartbeat_interval: Duration::from_millis(200),
        ..LeaseSettings::default()
    };
    let setup = Setup {
        lease: Some((backend.clone(), lease_settings)),
        ..Setup::default()
    };
    let nodes = cluster_of("leased", 3, &log, &setup).await;
    let (first, second) = (nodes[0].address.clone(), nodes[1].address.clone());
    assert_eq!(answers_from(nodes[1].counter.proxy(), &first).await, 15);
    let name = LeaseName::new("counter-singleton").unwrap_or_else(|e| panic!("{e}"));
    // Someone else takes the lease (an operator, or a split brain): the instance stops at once.
    backend.take_over(&name, "intruder", Duration::from_secs(1));
    wait_until("the singleton stops on losing its lease", || {
        running_on(&nodes).is_empty()
    })
    .await;
    // When the intruder's hold lapses the oldest gets the lease back and starts it again; the
    // proxies find the new instance.
    for node in &nodes {
        assert_eq!(answers_from(node.counter.proxy(), &first).await, 0);
    }
    assert_eq!(starts(&log), [first.clone(), first.clone()]);
    // Leaving: the lease release is awaited before the next oldest is told to start, so it
    // gets the lease at once.
    let outcome = nodes[0].system.terminate().await;
    let report = format!("{:?}", outcome.report);
    assert!(!report.contains("TimedOut"), "{report}");
    answers_from(nodes[2].counter.proxy(), &second).await;
    assert_eq!(starts(&log), [first.clone(), first, second]);
}
