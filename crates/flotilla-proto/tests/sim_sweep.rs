//! The deterministic simulation sweep: the whole cluster (remoting, membership, split-brain
//! resolver, singleton, sharding, in-memory leases) under a generated fault scenario per seed,
//! every invariant of `flotilla_proto::sim::invariants` checked.
//!
//! - CI runs seeds `1..=`[`DEFAULT_SEEDS`] and the seeds that once found a bug ([`FOUND_BUGS`]);
//!   `FLOTILLA_SIM_SEEDS=<n>` runs `1..=n`, `FLOTILLA_SIM_SEEDS=<from>..<to>` runs that range
//!   (and those, either way);
//!   `FLOTILLA_SIM_SEED=<s>` runs one seed (add `FLOTILLA_SIM_TRACE=1` to print its trace).
//! - A failure prints the seed, its scenario, what broke, and the one-line replay command.
//! - Seeds run on one thread per core (`FLOTILLA_SIM_THREADS=<n>` to choose); each is a world of
//!   its own, so the outcome does not depend on it. Past 1 000 seeds only failures and progress
//!   are printed, then the summary: seeds, wall time, message storms, failures.
//! - The determinism self-check runs a seed twice and compares the trace hashes.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use flotilla_proto::sim::invariants::storms;
use flotilla_proto::sim::sweep::{self, Outcome, SweepSettings};

/// Seeds CI sweeps.
const DEFAULT_SEEDS: u64 = 64;

/// Seeds beyond the default range that once broke a promise (docs/reliability.md, "Found and
/// fixed"): CI runs them too, so the scenarios that found a bug keep being played.
const FOUND_BUGS: &[u64] = &[
    98, 198, 295, 313, 317, 405, 509, 539, 598, 647, 659, 809, 4388, 4405, 6043, 6124, 6157, 7594,
    7600, 8897, 9399, 9799, 9826, 9835, 28336, 28405, 38565, 53949, 57693, 85969, 90269, 93442,
    97074,
];

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// `FLOTILLA_SIM_SEEDS`: `<n>` is `1..=n`, `<from>..<to>` is `from..to` (`to` excluded), and
/// `<from>..=<to>` includes `to`.
fn seed_range() -> std::ops::RangeInclusive<u64> {
    let Ok(text) = std::env::var("FLOTILLA_SIM_SEEDS") else {
        return 1..=DEFAULT_SEEDS;
    };
    let parse = |s: &str| {
        s.trim().parse::<u64>().unwrap_or_else(|_| {
            panic!("FLOTILLA_SIM_SEEDS={text:?}: expected <n>, <from>..<to> or <from>..=<to>")
        })
    };
    if let Some((from, to)) = text.split_once("..=") {
        parse(from)..=parse(to)
    } else if let Some((from, to)) = text.split_once("..") {
        parse(from)..=parse(to).saturating_sub(1)
    } else {
        1..=parse(&text)
    }
}

fn seeds() -> Vec<u64> {
    if let Some(one) = env("FLOTILLA_SIM_SEED") {
        return vec![one];
    }
    let mut seeds: Vec<u64> = seed_range().collect();
    for &s in FOUND_BUGS {
        if !seeds.contains(&s) {
            seeds.push(s);
        }
    }
    seeds
}

#[allow(clippy::disallowed_methods)] // reason: only an origin; the simulation looks at differences
fn origin() -> Instant {
    Instant::now()
}

fn replay(seed: u64) -> String {
    format!(
        "FLOTILLA_SIM_SEED={seed} FLOTILLA_SIM_TRACE=1 cargo test -p flotilla-proto --test sim_sweep -- --nocapture"
    )
}

fn report(o: &Outcome) -> String {
    let problems: Vec<String> = o
        .problems
        .iter()
        .map(|(name, what)| format!("  [{name}] {what}"))
        .collect();
    format!(
        "seed {} broke {} promise(s):\n{}\nscenario:\n{}replay: {}",
        o.seed,
        o.problems.len(),
        problems.join("\n"),
        o.scenario,
        replay(o.seed)
    )
}

/// How many seeds run at once: `FLOTILLA_SIM_THREADS`, else one per core. Every seed is a world
/// of its own, so the results do not depend on it.
fn threads(seeds: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let n = env("FLOTILLA_SIM_THREADS").map_or(cores, |n| usize::try_from(n).unwrap_or(1));
    n.clamp(1, seeds.max(1))
}

/// Runs `seeds` on `threads` threads; their outcomes in seed order.
fn run_all(seeds: &[u64], settings: &SweepSettings, threads: usize) -> Vec<Outcome> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done = std::sync::atomic::AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            let tx = tx.clone();
            let (next, done) = (&next, &done);
            scope.spawn(move || {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&seed) = seeds.get(i) else { break };
                    let o = sweep::run(seed, settings, origin());
                    let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    if seeds.len() > 1000 && n.is_multiple_of(1000) {
                        eprintln!("… {n} of {} seeds run", seeds.len());
                    }
                    if tx.send((i, o)).is_err() {
                        break;
                    }
                }
            });
        }
    });
    drop(tx);
    let mut outcomes: Vec<(usize, Outcome)> = rx.into_iter().collect();
    outcomes.sort_by_key(|(i, _)| *i);
    outcomes.into_iter().map(|(_, o)| o).collect()
}

#[test]
fn every_seed_keeps_every_promise() {
    let settings = SweepSettings {
        trace: env("FLOTILLA_SIM_TRACE").is_some(),
        ..SweepSettings::default()
    };
    let seeds = seeds();
    let threads = threads(seeds.len());
    let started = origin();
    let outcomes = run_all(&seeds, &settings, threads);
    let wall = started.elapsed();
    let mut failures = Vec::new();
    let (mut worst_settle, mut worst_serve) = (Duration::ZERO, Duration::ZERO);
    let mut busiest = (0, 0);
    let mut simulated = Duration::ZERO;
    let mut faults = 0;
    let mut storms = 0;
    let quiet = seeds.len() > 1000;
    for o in &outcomes {
        if settings.trace {
            for line in &o.trace {
                eprintln!("{line}");
            }
        }
        faults += o.scenario.faults.len();
        simulated += o.simulated;
        worst_settle = worst_settle.max(o.settled_after.unwrap_or_default());
        worst_serve = worst_serve.max(o.served_after.unwrap_or_default());
        busiest = busiest.max((o.busiest_second, o.seed));
        storms += usize::from(o.problems.iter().any(|(name, _)| *name == storms::NAME));
        if !quiet || !o.ok() {
            eprintln!(
                "seed {}: {} fault(s), settled {:?} after, every shard served {:?} later, {} sent / {} delivered, {} frames ({} lost, {} duplicated, at most {} in a second), {} crash(es){}, {}",
                o.seed,
                o.scenario.faults.len(),
                o.settled_after,
                o.served_after,
                o.counters.sent,
                o.counters.delivered,
                o.counters.frames,
                o.counters.frames_lost,
                o.counters.frames_duplicated,
                o.busiest_second,
                o.counters.crashes,
                o.scenario
                    .lost
                    .map(|(_, n)| format!(", node {n} lost for good"))
                    .unwrap_or_default(),
                if o.ok() { "ok" } else { "FAILED" }
            );
        }
        if !o.ok() {
            eprintln!("{}", report(o));
            failures.push(report(o));
        }
    }
    eprintln!(
        "{} seed(s) on {threads} thread(s) in {wall:.1?}: {faults} fault(s), {simulated:?} simulated; worst settle {worst_settle:?}, worst serve {worst_serve:?}, busiest second {} frames (seed {}); {storms} message storm(s); {} failed",
        seeds.len(),
        busiest.0,
        busiest.1,
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_seed_run_twice_gives_the_same_trace() {
    let seed = env("FLOTILLA_SIM_SEED").unwrap_or(7);
    let settings = SweepSettings::default();
    let a = sweep::run(seed, &settings, origin());
    let b = sweep::run(seed, &settings, origin());
    assert_eq!(
        (a.hash, a.counters, a.simulated),
        (b.hash, b.counters, b.simulated),
        "seed {seed} is not deterministic; replay: {}",
        replay(seed)
    );
    assert!(a.counters.delivered > 0, "nothing was delivered");
}
