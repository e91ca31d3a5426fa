//! Failover time of a real cluster: `--nodes` processes on 127.0.0.1 (this binary, re-run as
//! `node`), one killed with SIGKILL; prints, as the survivors saw it, the time from the kill to
//! UnreachableMember, to MemberDowned (the split-brain resolver's decision) and to
//! MemberRemoved, next to Akka's expected failover time for the same settings: failure
//! detection + stable-after + down-removal-margin (≈ 5 + 20 + 20 = 45 s at Akka's defaults).
//!
//! ```sh
//! cargo run --release -p flotilla-bench --bin flotilla-failover-bench -- --nodes 5
//! cargo run --release -p flotilla-bench --bin flotilla-failover-bench -- --nodes 5 --fast
//! ```

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use flotilla::node::NodeProcess;

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
}

#[derive(Subcommand)]
enum Role {
    /// Run one node (used by the benchmark itself).
    Node {
        #[arg(long)]
        seed: Option<String>,
        #[arg(long)]
        fast: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Role::Node { seed, fast }) = cli.role {
        let seeds = seed
            .map(|s| s.parse().context("bad seed"))
            .transpose()?
            .into_iter()
            .collect();
        let runtime = tokio::runtime::Runtime::new()?;
        return runtime.block_on(flotilla::node::run(flotilla::node::NodeOptions {
            system: "failover".into(),
            host: "127.0.0.1".into(),
            port: 0,
            seeds,
            config: None,
            fast,
            counters: None,
        }));
    }
    if cli.nodes < 3 {
        bail!("--nodes must be at least 3");
    }
    let limit = Duration::from_secs(cli.limit);
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let start = |seed: Option<&str>| {
        let mut cmd = Command::new(&exe);
        cmd.arg("node");
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
    let config = flotilla::node::config(&flotilla::node::NodeOptions {
        system: String::new(),
        host: String::new(),
        port: 0,
        seeds: Vec::new(),
        config: None,
        fast: cli.fast,
        counters: None,
    })?;
    let fd = &config.cluster.failure_detector;
    let stable = config.cluster.split_brain_resolver.stable_after;
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
    for p in &procs {
        p.terminate()?;
    }
    for p in &mut procs {
        let _ = p.wait_for(limit, |l| l.starts_with("shutdown "));
    }
    Ok(())
}
