//! The deterministic simulation sweep: the whole cluster (remoting, membership, split-brain
//! resolver, singleton, sharding, in-memory leases) under a generated fault scenario per seed,
//! every invariant of `flotilla_proto::sim::invariants` checked.
//!
//! - CI runs seeds `1..=`[`DEFAULT_SEEDS`] and the seeds that once found a bug ([`FOUND_BUGS`]);
//!   `FLOTILLA_SIM_SEEDS=<n>` runs `1..=n`, `FLOTILLA_SIM_SEEDS=<from>..<to>` runs that range
//!   (and those, either way);
//!   `FLOTILLA_SIM_SEED=<s>` runs one seed (add `FLOTILLA_SIM_TRACE=1` to print its trace).
//! - A failure prints the seed, its scenario, what broke, and the one-line replay command.
//! - The determinism self-check runs a seed twice and compares the trace hashes.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use flotilla_proto::sim::sweep::{self, Outcome, SweepSettings};

/// Seeds CI sweeps.
const DEFAULT_SEEDS: u64 = 64;

/// Seeds beyond the default range that once broke a promise (docs/reliability.md, "Found and
/// fixed"): CI runs them too, so the scenarios that found a bug keep being played.
const FOUND_BUGS: &[u64] = &[
    98, 198, 295, 313, 317, 405, 509, 598, 647, 659, 4388, 4405, 6124, 6157, 7600, 8897, 9399,
    9799, 9826, 9835,
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

#[test]
fn every_seed_keeps_every_promise() {
    let settings = SweepSettings {
        trace: env("FLOTILLA_SIM_TRACE").is_some(),
        ..SweepSettings::default()
    };
    let mut failures = Vec::new();
    let (mut worst_settle, mut worst_serve) = (Duration::ZERO, Duration::ZERO);
    let mut busiest = 0;
    let mut simulated = Duration::ZERO;
    let mut faults = 0;
    for seed in seeds() {
        let o = sweep::run(seed, &settings, origin());
        if settings.trace {
            for line in &o.trace {
                eprintln!("{line}");
            }
        }
        faults += o.scenario.faults.len();
        simulated += o.simulated;
        worst_settle = worst_settle.max(o.settled_after.unwrap_or_default());
        worst_serve = worst_serve.max(o.served_after.unwrap_or_default());
        busiest = busiest.max(o.busiest_second);
        eprintln!(
            "seed {seed}: {} fault(s), settled {:?} after, every shard served {:?} later, {} sent / {} delivered, {} frames ({} lost, {} duplicated, at most {} in a second), {} crash(es){}, {}",
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
        if !o.ok() {
            eprintln!("{}", report(&o));
            failures.push(report(&o));
        }
    }
    eprintln!(
        "{} seed(s), {faults} fault(s), {simulated:?} simulated; worst settle {worst_settle:?}, worst serve {worst_serve:?}, busiest second {busiest} frames; {} failed",
        seeds().len(),
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
