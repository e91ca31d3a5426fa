//! `flotilla-gossip-bench`: how fast membership gossip converges and how many bytes it costs,
//! for clusters of 5, 50 and 500 nodes on the seeded simulator (real membership machines, a
//! simulated network with 1–10 ms latency, messages measured with the real codec).
//!
//! For each size:
//! - **join**: every node starts at once and joins through two seeds; simulated time until every
//!   node lists every node Up on a converged gossip.
//! - **spread of one change**: one member leaves; simulated time until every other member lists
//!   it Leaving, in gossip rounds and as a ratio to log₂(n) rounds (the spread of an ideal
//!   epidemic that doubles every round).
//! - **steady state**: gossip bytes per second of a quiet cluster (full gossips and gossip
//!   status digests), per node and as a ratio to the same run's naive baseline — every node
//!   sending its whole gossip once per gossip interval; heartbeat bytes separately.
//!
//! Also printed: the wall-clock time each simulation took. Simulated time is exact and the
//! same for a seed on every machine.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use flotilla_core::ClusterSettings;
use flotilla_proto::cluster::sim::{ClusterSim, NetStats, address};
use flotilla_proto::cluster::{ClusterInput, ClusterMsg, MemberStatus};

#[derive(Parser, Debug)]
#[command(about = "Flotilla gossip: convergence time and bytes per second at 5, 50 and 500 nodes")]
struct Opts {
    /// Cluster sizes.
    #[arg(long, value_delimiter = ',', default_value = "5,50,500")]
    sizes: Vec<usize>,
    /// Seed of the simulation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulated seconds of steady state to measure.
    #[arg(long, default_value_t = 60)]
    steady_secs: u64,
}

fn encoded_len(msg: &ClusterMsg) -> usize {
    flotilla_cluster::encode(msg).map_or(0, |b| b.len())
}

struct Row {
    n: usize,
    join: Duration,
    spread: Duration,
    bytes_per_sec: f64,
    heartbeat_bytes_per_sec: f64,
    naive_bytes_per_sec: f64,
    gossip_size: usize,
    msgs_per_sec: f64,
    wall: Duration,
}

fn run(n: usize, seed: u64, steady: Duration) -> anyhow::Result<Row> {
    #[allow(clippy::disallowed_methods)] // reason: wall-clock time of the simulation itself
    let wall = Instant::now();
    #[allow(clippy::disallowed_methods)] // reason: an arbitrary origin for simulated time
    let t0 = Instant::now();
    let settings = ClusterSettings::default();
    let interval = settings.gossip_interval;
    let mut sim = ClusterSim::new(seed, n, settings, t0);
    sim.set_meter(encoded_len);
    sim.set_seeds(&[0, 1]);
    for i in 0..n {
        sim.start(i);
    }
    let all: Vec<usize> = (0..n).collect();
    if !sim.run_until_true(Duration::from_secs(600), |sim| sim.all_up(&all)) {
        bail!("{n} nodes did not converge within 600 simulated seconds");
    }
    let join = sim.elapsed();

    // steady state
    let before: NetStats = sim.net;
    sim.run_for(steady);
    let per_sec = |x: u64| x as f64 / steady.as_secs_f64();
    let bytes = per_sec(
        (sim.net.gossip_bytes + sim.net.status_bytes) - (before.gossip_bytes + before.status_bytes),
    );
    let heartbeat_bytes = per_sec(sim.net.heartbeat_bytes - before.heartbeat_bytes);
    let msgs = ((sim.net.gossip + sim.net.status + sim.net.heartbeat + sim.net.other)
        - (before.gossip + before.status + before.heartbeat + before.other)) as f64
        / steady.as_secs_f64();
    let gossip = sim.machine(0).context("node 0 stopped")?.gossip().clone();
    let gossip_size = encoded_len(&ClusterMsg::Gossip {
        from: sim.nodes[0].unique(),
        to: sim.nodes[1].unique(),
        gossip: Box::new(gossip),
    });
    let naive = (n * gossip_size) as f64 / interval.as_secs_f64();

    // spread of one change
    let leaver = n - 1;
    let start = sim.elapsed();
    sim.input(leaver, ClusterInput::Leave(address(leaver)));
    let others: Vec<usize> = (0..leaver).collect();
    let spread_ok = sim.run_until_true(Duration::from_secs(120), |sim| {
        others.iter().all(|&i| {
            sim.machine(i).is_some_and(|m| {
                m.gossip()
                    .members()
                    .any(|x| x.node.address == address(leaver) && x.status >= MemberStatus::Leaving)
            })
        })
    });
    if !spread_ok {
        bail!("a leave did not reach all {n} nodes within 120 simulated seconds");
    }
    let spread = sim.elapsed() - start;
    Ok(Row {
        n,
        join,
        spread,
        bytes_per_sec: bytes,
        heartbeat_bytes_per_sec: heartbeat_bytes,
        naive_bytes_per_sec: naive,
        gossip_size,
        msgs_per_sec: msgs,
        wall: wall.elapsed(),
    })
}

fn main() -> anyhow::Result<()> {
    let opts = Opts::parse();
    let steady = Duration::from_secs(opts.steady_secs);
    println!(
        "{:>5}  {:>9}  {:>15}  {:>12}  {:>13}  {:>12}  {:>14}  {:>11}  {:>8}",
        "nodes",
        "join",
        "spread (rounds)",
        "÷ log2(n)",
        "bytes/s",
        "per node",
        "÷ naive gossip",
        "gossip size",
        "wall"
    );
    for &n in &opts.sizes {
        if n < 2 {
            bail!("a cluster needs at least two nodes to gossip");
        }
        let r = run(n, opts.seed, steady)?;
        // one gossip round per gossip interval (1 s); the spread is measured in whole seconds
        let rounds = r.spread.as_secs_f64();
        let ideal = (r.n as f64).log2().ceil();
        println!(
            "{:>5}  {:>8.1}s  {:>14.1}   {:>11.2}x  {:>13.0}  {:>12.0}  {:>13.3}x  {:>10}B  {:>7.2}s",
            r.n,
            r.join.as_secs_f64(),
            rounds,
            rounds / ideal,
            r.bytes_per_sec,
            r.bytes_per_sec / r.n as f64,
            r.bytes_per_sec / r.naive_bytes_per_sec,
            r.gossip_size,
            r.wall.as_secs_f64(),
        );
        println!(
            "       heartbeats: {:.0} bytes/s ({:.0} per node); {:.0} messages/s in all",
            r.heartbeat_bytes_per_sec,
            r.heartbeat_bytes_per_sec / r.n as f64,
            r.msgs_per_sec
        );
    }
    Ok(())
}
