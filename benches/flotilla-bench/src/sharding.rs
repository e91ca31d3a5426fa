//! Cluster sharding in one process, three nodes on 127.0.0.1 with the default `[sharding]`
//! settings (100 shards): message throughput through `EntityRef::tell` to an entity on the same
//! node and on another node, against a plain `ActorRef::tell` to a local actor measured in the
//! same run; the rate at which new entities are activated; memory per idle entity; and the time
//! from a node's graceful shutdown to every one of its entities answering from the others.
//!
//! ```sh
//! cargo run --release -p flotilla-bench --bin flotilla-sharding-bench
//! ```

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use flotilla::cluster::{Cluster, MemberStatus};
use flotilla::core::{FlotillaConfig, ShardingSettings};
use flotilla::{Actor, ActorError, ActorSystem, Context, Props, RemoteMessage, ReplyTo};
use flotilla_sharding::{ClusterSharding, Entity, ShardRegion};
use serde::{Deserialize, Serialize};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Cluster sharding: tell throughput, activation rate, memory, graceful hand-over")]
struct Cli {
    /// Messages per throughput run.
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Entities activated (and measured for memory).
    #[arg(long, default_value_t = 20_000)]
    entities: u64,
}

#[derive(Debug, Serialize, Deserialize)]
enum Msg {
    Add(u64),
    /// Its node and total.
    Get(ReplyTo<(String, u64)>),
}

impl RemoteMessage for Msg {
    const MANIFEST: &'static str = "bench.Counter";
}

struct Counter {
    node: String,
    total: u64,
}

impl Actor for Counter {
    type Msg = Msg;
    async fn handle(&mut self, msg: Msg, _ctx: &mut Context<Msg>) -> Result<(), ActorError> {
        match msg {
            Msg::Add(n) => self.total += n,
            Msg::Get(reply) => {
                reply.send((self.node.clone(), self.total));
            }
        }
        Ok(())
    }
}

struct Node {
    system: ActorSystem,
    region: ShardRegion<Msg>,
    address: String,
}

async fn start(n: usize) -> anyhow::Result<Vec<Node>> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        let config = FlotillaConfig {
            remote: flotilla_remote::testing::fast_settings(),
            cluster: flotilla_cluster::testing::fast_settings(),
            sharding: ShardingSettings {
                number_of_shards: 100,
                ..ShardingSettings::default()
            },
            ..FlotillaConfig::default()
        };
        let system = ActorSystem::builder("bench")
            .config(config)
            .remote("127.0.0.1", 0)
            .build()?;
        let cluster = Cluster::start(&system)?;
        nodes.push((system, cluster));
    }
    let seed = nodes[0].1.self_address().clone();
    for (_, c) in &nodes {
        c.join_seed_nodes(vec![seed.clone()]);
        if !c.when_up().await {
            bail!("a node did not come up");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for (_, c) in &nodes {
        while !c
            .state()
            .members
            .iter()
            .all(|m| m.status == MemberStatus::Up)
            || c.state().members.len() < n
        {
            if Instant::now() > deadline {
                bail!("the cluster did not form");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut out = Vec::new();
    for (system, cluster) in nodes {
        let address = cluster.self_address().to_string();
        let node = address.clone();
        let entity = Entity::new("counter", move |_ctx| {
            let node = node.clone();
            Props::new(move || Counter {
                node: node.clone(),
                total: 0,
            })
        });
        let region = ClusterSharding::start(&system, &cluster, entity)?;
        out.push(Node {
            system,
            region,
            address,
        });
    }
    Ok(out)
}

async fn get(region: &ShardRegion<Msg>, id: &str) -> anyhow::Result<(String, u64)> {
    for _ in 0..100 {
        if let Ok(a) = region
            .entity_ref(id)
            .ask(Msg::Get, Duration::from_secs(2))
            .await
        {
            return Ok(a);
        }
    }
    bail!("{id} never answered")
}

/// Sends `n` Add(1) to `id` through `from`, then waits until the entity has counted them all.
async fn throughput(from: &ShardRegion<Msg>, id: &str, n: u64) -> anyhow::Result<f64> {
    let (_, before) = get(from, id).await?;
    let started = Instant::now();
    let e = from.entity_ref(id);
    for _ in 0..n {
        e.tell(Msg::Add(1));
    }
    loop {
        let (_, total) = get(from, id).await?;
        if total >= before + n {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("only {} of {n} arrived", total - before);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let nodes = start(3).await.context("cannot start the cluster")?;

    // Baseline: a plain local actor, in the same process and run.
    let plain = nodes[0].system.spawn(
        "plain",
        Props::new(|| Counter {
            node: String::new(),
            total: 0,
        }),
    )?;
    let started = Instant::now();
    for _ in 0..cli.messages {
        plain.tell(Msg::Add(1));
    }
    let _ = plain.ask(Msg::Get, Duration::from_secs(60)).await?;
    let baseline = cli.messages as f64 / started.elapsed().as_secs_f64();

    // An entity hosted on node 0, found by asking.
    let mut local_id = None;
    for i in 0..1000 {
        let id = format!("probe-{i}");
        if get(&nodes[0].region, &id).await?.0 == nodes[0].address {
            local_id = Some(id);
            break;
        }
    }
    let id = local_id.context("no entity landed on node 0")?;
    let local = throughput(&nodes[0].region, &id, cli.messages).await?;
    let remote = throughput(&nodes[1].region, &id, cli.messages).await?;

    // Activation: new entities, one message each; counted by the regions themselves (no
    // question per entity), until all of them run.
    let running = |stats: &std::collections::BTreeMap<String, (usize, usize)>| {
        stats.values().map(|(_, e)| *e).sum::<usize>()
    };
    let before = running(&nodes[0].region.cluster_stats(Duration::from_secs(5)).await);
    let rss0 = rss_bytes();
    let started = Instant::now();
    for i in 0..cli.entities {
        nodes[(i % 3) as usize]
            .region
            .entity_ref(&format!("new-{i}"))
            .tell(Msg::Add(1));
    }
    let want = before + cli.entities as usize;
    while running(&nodes[0].region.cluster_stats(Duration::from_secs(5)).await) < want {
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the entities did not all start");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let activation = cli.entities as f64 / started.elapsed().as_secs_f64();
    let per_entity = match (rss0, rss_bytes()) {
        (Some(a), Some(b)) if b > a => format!("{} bytes", (b - a) / cli.entities),
        _ => "unknown".into(),
    };

    // Graceful shutdown of node 2: from terminate() until every entity it hosted runs again
    // on the others (one message to each, all at once; counted by the regions).
    let state = nodes[2].region.state().await;
    let hosted: Vec<String> = state.shards.values().flatten().cloned().collect();
    let survivors_before: usize = {
        let stats = nodes[0].region.cluster_stats(Duration::from_secs(5)).await;
        stats
            .iter()
            .filter(|(a, _)| **a != nodes[2].address)
            .map(|(_, (_, e))| *e)
            .sum()
    };
    let started = Instant::now();
    let leaving = nodes[2].system.clone();
    let shutdown = tokio::spawn(async move {
        leaving.terminate().await;
        started.elapsed()
    });
    // Sent while the node hands its shards off: held until each shard's new home is known.
    for id in &hosted {
        nodes[0].region.entity_ref(id).tell(Msg::Add(1));
    }
    // Messages are at most once: one that reached the leaving node after its region was done is
    // lost with it, so the senders try again every second, as a client would.
    let want = survivors_before + hosted.len();
    let mut resent = Instant::now();
    let on_survivors = |stats: std::collections::BTreeMap<String, (usize, usize)>| {
        stats
            .iter()
            .filter(|(a, _)| **a != nodes[2].address)
            .map(|(_, (_, e))| *e)
            .sum::<usize>()
    };
    while on_survivors(nodes[0].region.cluster_stats(Duration::from_secs(5)).await) < want {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the moved entities did not all start elsewhere");
        }
        if resent.elapsed() > Duration::from_secs(1) {
            for id in &hosted {
                nodes[0].region.entity_ref(id).tell(Msg::Add(0));
            }
            resent = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let moved = started.elapsed();
    let shutdown = shutdown.await?;

    println!(
        "# Cluster sharding, 3 nodes in one process on 127.0.0.1, default [sharding] (100 shards)\n"
    );
    println!("| measure | value | vs plain ActorRef::tell |");
    println!("| --- | ---: | ---: |");
    println!("| plain ActorRef::tell to a local actor (baseline) | {baseline:.0} msgs/s | 1.00x |");
    println!(
        "| EntityRef::tell, entity on the same node | {local:.0} msgs/s | {:.2}x |",
        local / baseline
    );
    println!(
        "| EntityRef::tell, entity on another node | {remote:.0} msgs/s | {:.2}x |",
        remote / baseline
    );
    println!(
        "| activation of {} new entities (one message each, spread over 3 nodes) | {activation:.0} entities/s | - |",
        cli.entities
    );
    println!(
        "| memory per idle entity (RSS growth / entities, whole process) | {per_entity} | - |"
    );
    println!(
        "| graceful shutdown of a node with {} entities (fast cluster timings): terminate() returned | {:.0} ms | - |",
        hosted.len(),
        shutdown.as_secs_f64() * 1000.0
    );
    println!(
        "| from its start until every one of them ran again on another node | {:.0} ms | target < 2000 ms |",
        moved.as_secs_f64() * 1000.0
    );
    Ok(())
}
