//! Failover time of a real cluster: `--nodes` processes on 127.0.0.1 (this binary, re-run as
//! `node`), one killed with SIGKILL; prints, as the survivors saw it, the time from the kill to
//! UnreachableMember, to MemberDowned (the split-brain resolver's decision) and to
//! MemberRemoved, next to Akka's expected failover time for the same settings: failure
//! detection + stable-after + down-removal-margin (≈ 5 + 20 + 20 = 45 s at Akka's defaults).
//!
//! With `--sharding`, every node also runs sharded counters (100 shards, 10 000 entities under
//! traffic) whose shards hold leases in a real etcd (started here on 127.0.0.1; Debian's
//! `etcd-server`), and the benchmark reports the time from the kill until every shard the killed
//! node ran serves again on a survivor (an entity of it started there), with default settings:
//! the number the shards' users see.
//!
//! ```sh
//! cargo run --release -p flotilla-bench --bin flotilla-failover-bench -- --nodes 5
//! cargo run --release -p flotilla-bench --bin flotilla-failover-bench -- --nodes 5 --fast
//! cargo run --release -p flotilla-bench --bin flotilla-failover-bench -- --sharding --nodes 3 --victim youngest
//! cargo run --release -p flotilla-bench --bin flotilla-failover-bench -- --sharding --nodes 3 --victim oldest
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use flotilla_cli::node::NodeProcess;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Failover time of a real cluster after kill -9, against Akka's formula")]
struct Cli {
    #[command(subcommand)]
    role: Option<Role>,
    /// How many nodes (at least 3, so that the survivors are a majority).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Use the fast test settings instead of the defaults (Akka's).
    #[arg(long)]
    fast: bool,
    /// How long to wait for each step before giving up.
    #[arg(long, default_value = "120", value_name = "SECONDS")]
    limit: u64,
    /// Run sharded counters with shard leases in etcd, and measure until the killed node's
    /// shards serve elsewhere.
    #[arg(long)]
    sharding: bool,
    /// Which node is killed: the youngest, or the oldest (which runs the shard coordinator).
    #[arg(long, value_enum, default_value_t = Victim::Youngest)]
    victim: Victim,
    /// With --sharding: how many times to form a cluster and kill one of its nodes.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Victim {
    /// The last node to join.
    Youngest,
    /// The first node, where the cluster singletons (the shard coordinator) run.
    Oldest,
}

/// Entities and shards of the sharded workload.
const ENTITIES: u32 = 10_000;
const SHARDS: u32 = 100;

#[derive(Subcommand)]
enum Role {
    /// Run one node (used by the benchmark itself).
    Node {
        #[arg(long)]
        seed: Option<String>,
        #[arg(long)]
        fast: bool,
        /// Run the sharded counters with shard leases in this etcd.
        #[arg(long)]
        lease_etcd: Option<String>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Role::Node {
        seed,
        fast,
        lease_etcd,
        config,
    }) = cli.role
    {
        let seeds = seed
            .map(|s| s.parse().context("bad seed"))
            .transpose()?
            .into_iter()
            .collect();
        let runtime = tokio::runtime::Runtime::new()?;
        return runtime.block_on(flotilla_cli::node::run(flotilla_cli::node::NodeOptions {
            management_port: Some(0),
            ledger: None,
            chaos_control: false,
            insecure: false,
            lease_azure: None,
            system: "failover".into(),
            host: "127.0.0.1".into(),
            port: 0,
            seeds,
            config,
            fast,
            counters: lease_etcd.map(|endpoint| flotilla_cli::node::ShardedCounters {
                entities: ENTITIES,
                shards: SHARDS,
                lease: Some(flotilla_cli::leases::BackendChoice::Etcd(
                    flotilla::lease_etcd::EtcdSettings::new([endpoint]),
                )),
            }),
        }));
    }
    if cli.nodes < 3 {
        bail!("--nodes must be at least 3");
    }
    if cli.sharding {
        return sharding(&cli);
    }
    let limit = Duration::from_secs(cli.limit);
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let start = |seed: Option<&str>| {
        let mut cmd = Command::new(&exe);
        cmd.arg("node");
        flotilla_cli::node::with_test_secret(&mut cmd);
        if let Some(seed) = seed {
            cmd.args(["--seed", seed]);
        }
        if cli.fast {
            cmd.arg("--fast");
        }
        NodeProcess::spawn(cmd, limit)
    };
    let started = Instant::now();
    let mut procs = vec![start(None)?];
    let seed = procs[0].address().to_owned();
    for _ in 1..cli.nodes {
        procs.push(start(Some(&seed))?);
    }
    let uniques: Vec<String> = procs.iter().map(|p| p.unique().to_owned()).collect();
    for p in &mut procs {
        for u in &uniques {
            p.wait_for(limit, |l| l == format!("event MemberUp {u}"))?;
        }
    }
    println!(
        "{} nodes up in {:.1} s ({} settings)",
        cli.nodes,
        started.elapsed().as_secs_f64(),
        if cli.fast { "fast test" } else { "default" }
    );
    // Let the failure detectors collect some heartbeat history first.
    std::thread::sleep(Duration::from_secs(5));
    let victim = uniques[cli.nodes - 1].clone();
    let killed = Instant::now();
    let mut last = procs.pop().context("no node")?;
    last.kill()?;
    let mut steps: Vec<(&str, Vec<f64>)> = vec![
        ("unreachable", Vec::new()),
        ("downed", Vec::new()),
        ("removed", Vec::new()),
    ];
    for p in &mut procs {
        for (i, event) in ["UnreachableMember", "MemberDowned", "MemberRemoved"]
            .iter()
            .enumerate()
        {
            let (at, _) = p.wait_for(limit, |l| l == format!("event {event} {victim}"))?;
            steps[i]
                .1
                .push(at.saturating_duration_since(killed).as_secs_f64());
        }
    }
    let config = flotilla_cli::node::config(&flotilla_cli::node::NodeOptions {
        management_port: Some(0),
        system: String::new(),
        host: String::new(),
        port: 0,
        seeds: Vec::new(),
        config: None,
        fast: cli.fast,
        counters: None,
        ledger: None,
        chaos_control: false,
        insecure: false,
        lease_azure: None,
    })?;
    let fd = &config.cluster.failure_detector;
    let stable = config
        .cluster
        .split_brain_resolver
        .stable_after_for(cli.nodes);
    // Akka: failure detection ≈ acceptable-heartbeat-pause + heartbeat-interval (+ a little),
    // then stable-after, then down-removal-margin (by default equal to stable-after).
    let detection = fd.acceptable_heartbeat_pause + fd.heartbeat_interval;
    let akka = detection.as_secs_f64() + 2.0 * stable.as_secs_f64();
    println!(
        "kill -9 of one node, as seen by the {} survivors (s):",
        procs.len()
    );
    println!("| step | min | max |");
    println!("| --- | ---: | ---: |");
    for (name, times) in &steps {
        let min = times.iter().copied().fold(f64::INFINITY, f64::min);
        let max = times.iter().copied().fold(0.0, f64::max);
        println!("| {name} | {min:.1} | {max:.1} |");
    }
    let removed = steps[2].1.iter().copied().fold(0.0, f64::max);
    println!(
        "Akka's expected failover for these settings: detection {:.1} + stable-after {:.1} + down-removal-margin {:.1} = {akka:.1} s; removal here took {removed:.1} s = {:.2}x of it",
        detection.as_secs_f64(),
        stable.as_secs_f64(),
        stable.as_secs_f64(),
        removed / akka
    );
    for p in &mut procs {
        p.terminate()?;
    }
    for p in &mut procs {
        let _ = p.wait_for(limit, |l| l.starts_with("shutdown "));
    }
    Ok(())
}

fn wall_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// One start of an entity, from an `entity-start <entity> <shard> <token> <ns>` line.
struct Start {
    entity: String,
    shard: String,
    at_ns: u128,
}

fn starts(node: &mut NodeProcess) -> Vec<Start> {
    node.lines()
        .iter()
        .filter_map(|(_, line)| {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["entity-start", entity, shard, _token, at] => Some(Start {
                    entity: (*entity).to_owned(),
                    shard: (*shard).to_owned(),
                    at_ns: at.parse().ok()?,
                }),
                _ => None,
            }
        })
        .collect()
}

/// What one kill measured, in seconds after it.
struct Run {
    removed: f64,
    first_shard: f64,
    last_shard: f64,
    all_entities: f64,
    shards: usize,
}

/// `--sharding`: kill one node of a cluster that runs lease-guarded shards; time until every
/// shard of it serves on a survivor.
fn sharding(cli: &Cli) -> anyhow::Result<()> {
    let limit = Duration::from_secs(cli.limit);
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let config = flotilla_cli::node::config(&flotilla_cli::node::NodeOptions {
        management_port: Some(0),
        system: String::new(),
        host: String::new(),
        port: 0,
        seeds: Vec::new(),
        config: None,
        fast: cli.fast,
        counters: None,
        ledger: None,
        chaos_control: false,
        insecure: false,
        lease_azure: None,
    })?;
    let lease = &config.lease;
    let stable = config
        .cluster
        .split_brain_resolver
        .stable_after_for(cli.nodes);
    println!(
        "{} nodes, {SHARDS} shards, {ENTITIES} entities, shard leases in etcd; {} settings: lease TTL {:?} renewed every {:?}, stable-after {:?}, lease-retry-interval {:?}; killing the {}",
        cli.nodes,
        if cli.fast { "fast test" } else { "default" },
        lease.heartbeat_timeout,
        lease.heartbeat_interval,
        stable,
        config.sharding.lease_retry_interval,
        match cli.victim {
            Victim::Youngest => "youngest node",
            Victim::Oldest => "oldest node (the shard coordinator's)",
        }
    );
    let mut runs = Vec::new();
    for round in 1..=cli.repeat.max(1) {
        let etcd = runtime
            .block_on(flotilla::lease_etcd::testing::EtcdServer::start())
            .map_err(|e| anyhow::anyhow!("cannot start etcd (Debian's etcd-server): {e}"))?;
        let dir = tempfile::tempdir()?;
        let node_toml = dir.path().join("node.toml");
        // Only how many members must be there before anyone is Up; every timing is a default.
        std::fs::write(
            &node_toml,
            format!("[cluster]\nmin-nr-of-members = {}\n", cli.nodes),
        )?;
        let start = |seed: Option<&str>| {
            let mut cmd = Command::new(&exe);
            cmd.arg("node").arg("--config").arg(&node_toml);
            flotilla_cli::node::with_test_secret(&mut cmd);
            cmd.args(["--lease-etcd", &etcd.endpoint()]);
            if let Some(seed) = seed {
                cmd.args(["--seed", seed]);
            }
            if cli.fast {
                cmd.arg("--fast");
            }
            NodeProcess::spawn(cmd, limit)
        };
        let run = (|| -> anyhow::Result<Run> {
            let mut procs = vec![start(None)?];
            let seed = procs[0].address().to_owned();
            for _ in 1..cli.nodes {
                procs.push(start(Some(&seed))?);
            }
            let formed = Instant::now();
            let result = kill_one(cli, &mut procs, limit, formed);
            for p in &mut procs {
                let _ = p.terminate();
            }
            for p in &mut procs {
                if p.wait_exit(limit).is_err() {
                    let _ = p.kill();
                }
            }
            result
        })();
        let run = run.with_context(|| format!("round {round}"))?;
        println!(
            "round {round}: removed {:.1} s; its {} shards serve elsewhere from {:.1} s (first) to {:.1} s (last); all its entities run again at {:.1} s",
            run.removed, run.shards, run.first_shard, run.last_shard, run.all_entities
        );
        runs.push(run);
    }
    let range = |f: fn(&Run) -> f64| {
        let min = runs.iter().map(f).fold(f64::INFINITY, f64::min);
        let max = runs.iter().map(f).fold(0.0, f64::max);
        format!("{min:.1}–{max:.1}")
    };
    println!("| kill -9 → (s, over {} rounds) | range |", runs.len());
    println!("| --- | ---: |");
    println!("| removed from the cluster | {} |", range(|r| r.removed));
    println!(
        "| first of its shards serves elsewhere | {} |",
        range(|r| r.first_shard)
    );
    println!(
        "| **every one of its shards serves elsewhere** | {} |",
        range(|r| r.last_shard)
    );
    println!(
        "| every one of its entities runs again | {} |",
        range(|r| r.all_entities)
    );
    let worst = runs.iter().map(|r| r.last_shard).fold(0.0, f64::max);
    println!(
        "Akka's default failover ≈ 45 s (detection ≈ 5 + stable-after 20 + down-removal-margin 20, before its 120 s lease TTL): worst here {worst:.1} s = {:.2}x of it",
        worst / 45.0
    );
    Ok(())
}

/// Waits for every entity, kills the victim, and measures.
fn kill_one(
    cli: &Cli,
    procs: &mut [NodeProcess],
    limit: Duration,
    formed: Instant,
) -> anyhow::Result<Run> {
    // Every entity runs somewhere.
    loop {
        let running: BTreeSet<String> = procs
            .iter_mut()
            .flat_map(|p| starts(p).into_iter().map(|s| s.entity))
            .collect();
        if running.len() == ENTITIES as usize {
            break;
        }
        anyhow::ensure!(
            formed.elapsed() < limit,
            "only {} of {ENTITIES} entities ran within {limit:?}",
            running.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the failure detectors collect some heartbeat history first.
    std::thread::sleep(Duration::from_secs(5));
    let index = match cli.victim {
        Victim::Youngest => procs.len() - 1,
        Victim::Oldest => 0,
    };
    let victim = procs[index].unique().to_owned();
    // The victim's shards and entities: those whose latest start, of all nodes, is on it.
    let mut latest: BTreeMap<String, (u128, usize, String)> = BTreeMap::new();
    for (i, p) in procs.iter_mut().enumerate() {
        for s in starts(p) {
            let e = latest
                .entry(s.entity.clone())
                .or_insert((0, i, s.shard.clone()));
            if s.at_ns >= e.0 {
                *e = (s.at_ns, i, s.shard);
            }
        }
    }
    let entities: BTreeSet<String> = latest
        .iter()
        .filter(|(_, (_, i, _))| *i == index)
        .map(|(e, _)| e.clone())
        .collect();
    let shards: BTreeSet<String> = latest
        .values()
        .filter(|(_, i, _)| *i == index)
        .map(|(_, _, s)| s.clone())
        .collect();
    anyhow::ensure!(!shards.is_empty(), "the victim runs no shard");
    let killed_ns = wall_ns();
    let killed = Instant::now();
    procs[index].kill()?;
    let secs = |ns: u128| (ns.saturating_sub(killed_ns)) as f64 / 1e9;
    let mut first_elsewhere: BTreeMap<String, u128> = BTreeMap::new();
    let mut entities_elsewhere: BTreeSet<String> = BTreeSet::new();
    let mut last_entity_ns = 0;
    loop {
        for (i, p) in procs.iter_mut().enumerate() {
            if i == index {
                continue;
            }
            for s in starts(p) {
                if s.at_ns <= killed_ns {
                    continue;
                }
                if shards.contains(&s.shard) {
                    let f = first_elsewhere.entry(s.shard.clone()).or_insert(s.at_ns);
                    *f = (*f).min(s.at_ns);
                }
                if entities.contains(&s.entity) && entities_elsewhere.insert(s.entity.clone()) {
                    last_entity_ns = last_entity_ns.max(s.at_ns);
                }
            }
        }
        if first_elsewhere.len() == shards.len() && entities_elsewhere.len() == entities.len() {
            break;
        }
        anyhow::ensure!(
            killed.elapsed() < limit,
            "after {limit:?}, {} of the victim's {} shards and {} of its {} entities run elsewhere",
            first_elsewhere.len(),
            shards.len(),
            entities_elsewhere.len(),
            entities.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut removed = 0.0f64;
    for (i, p) in procs.iter_mut().enumerate() {
        if i == index {
            continue;
        }
        let (at, _) = p.wait_for(limit, |l| l == format!("event MemberRemoved {victim}"))?;
        removed = removed.max(at.saturating_duration_since(killed).as_secs_f64());
    }
    let first = first_elsewhere.values().copied().min().unwrap_or_default();
    let last = first_elsewhere.values().copied().max().unwrap_or_default();
    Ok(Run {
        removed,
        first_shard: secs(first),
        last_shard: secs(last),
        all_entities: secs(last_entity_ns),
        shards: shards.len(),
    })
}
