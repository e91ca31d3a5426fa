//! One seed end to end: a five-node cluster forms and takes traffic, a generated scenario
//! breaks it, the faults stop, and every invariant is checked.
//!
//! ```text
//!  warm-up (the cluster forms, shards start, traffic)    ─┐
//!  fault phase: the scenario's faults, traffic,           │ invariants checked after every
//!    views checked every simulated second                 │ step of every node
//!  faults stop: links healed, backend back, nodes         │
//!    restarted                                            │
//!  liveness: settled within a bound, then every shard    ─┘
//!    serves a probe within a bound
//!  settled checks (leases), then the record checks (fencing, deliveries, quarantine,
//!    system messages)
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::sim::invariants::{
    fencing, leases, liveness, quarantine, single_incarnation, storms, system_messages, views,
};
use crate::sim::scenario::{self, Scenario, ScenarioSettings};
use crate::sim::{Counters, World, WorldSettings};

/// How a seed is run.
#[derive(Debug, Clone)]
pub struct SweepSettings {
    /// The world.
    pub world: WorldSettings,
    /// The scenario's bounds.
    pub scenario: ScenarioSettings,
    /// How long the cluster runs before the faults start.
    pub warmup: Duration,
    /// The bound on settling once the faults stop.
    pub settle_limit: Duration,
    /// The bound on every shard serving once settled.
    pub serve_limit: Duration,
    /// Workload messages per simulated second.
    pub rate: u32,
    /// Keep a trace of notable steps (for a replay).
    pub trace: bool,
}

impl Default for SweepSettings {
    fn default() -> Self {
        Self {
            world: WorldSettings::default(),
            scenario: ScenarioSettings::default(),
            warmup: Duration::from_secs(30),
            settle_limit: Duration::from_secs(90),
            serve_limit: Duration::from_secs(60),
            rate: 10,
            trace: false,
        }
    }
}

/// What a seed's run found.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The faults it drew.
    pub scenario: Scenario,
    /// Broken promises: (invariant, what).
    pub problems: Vec<(&'static str, String)>,
    /// The run's trace hash (equal for two runs of one seed).
    pub hash: u64,
    /// How long the cluster took to settle after the faults stopped.
    pub settled_after: Option<Duration>,
    /// How long, after settling, until every shard had served a probe.
    pub served_after: Option<Duration>,
    /// The run's counters.
    pub counters: Counters,
    /// The most frames sent in one simulated second.
    pub busiest_second: u64,
    /// Virtual time simulated.
    pub simulated: Duration,
    /// Notable steps, when traced.
    pub trace: Vec<String>,
}

impl Outcome {
    /// Whether every promise held.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn workload(world: &mut World, per_tick: u32) {
    for _ in 0..per_tick {
        let n = world.nodes.len() as u64;
        let from = world.below(n) as usize;
        let entity = format!("entity-{}", world.below(100));
        let _ = world.send(from, &entity);
    }
}

/// Runs `seed` under `settings`.
pub fn run(seed: u64, settings: &SweepSettings, start: Instant) -> Outcome {
    let scenario = Scenario::generate(seed, settings.world.nodes, &settings.scenario);
    let mut world = World::new(seed, settings.world.clone(), start);
    if settings.trace {
        world.trace = Some(Vec::new());
        world.frame_kinds = Some(BTreeMap::new());
    }
    let per_tick = (settings.rate / 10).max(1);
    // The first seed node forms the cluster; the others join a moment later.
    world.start(0);
    world.run_for(Duration::from_secs(1));
    for i in 1..world.nodes.len() {
        world.start(i);
    }
    let warm_end = world.now() + settings.warmup;
    while world.now() < warm_end && !world.stalled {
        workload(&mut world, per_tick);
        world.run_for(Duration::from_millis(100));
    }
    let mut ticks = 0u32;
    scenario::play(&mut world, &scenario, |w| {
        workload(w, per_tick);
        ticks += 1;
        if ticks.is_multiple_of(10) {
            views::check(w);
        }
    });
    let mut problems: Vec<(&'static str, String)> = Vec::new();
    let settled_after = match liveness::await_settled(&mut world, settings.settle_limit) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push((liveness::NAME, e));
            None
        }
    };
    let served_after = if settled_after.is_some() {
        match liveness::await_every_shard(&mut world, settings.serve_limit) {
            Ok(d) => Some(d),
            Err(e) => {
                problems.push((liveness::NAME, e));
                None
            }
        }
    } else {
        None
    };
    if served_after.is_some() {
        // A release or clean-up may be a moment from done: a zombie is one that stays.
        let first = leases::check_settled(&world);
        if !first.is_empty() {
            world.run_for(Duration::from_secs(12));
            let second = leases::check_settled(&world);
            problems.extend(
                second
                    .into_iter()
                    .filter(|p| first.contains(p))
                    .map(|p| (leases::NAME, p)),
            );
        }
    }
    views::check(&mut world);
    problems.extend(
        world
            .violations
            .iter()
            .map(|v| (v.invariant, format!("at {:?}: {}", v.at, v.what))),
    );
    for (name, found) in [
        (
            single_incarnation::NAME,
            single_incarnation::check_records(&world),
        ),
        (fencing::NAME, fencing::check_records(&world)),
        (quarantine::NAME, quarantine::check_records(&world)),
        (
            system_messages::NAME,
            system_messages::check_records(&world),
        ),
        (storms::NAME, storms::check_records(&world)),
    ] {
        problems.extend(found.into_iter().map(|p| (name, p)));
    }
    if let (Some(trace), Some(kinds)) = (&mut world.trace, &world.frame_kinds) {
        let mut top: Vec<(&String, &u64)> = kinds.iter().collect();
        top.sort_by(|a, b| b.1.cmp(a.1));
        for (kind, n) in top.into_iter().take(12) {
            trace.push(format!("frames: {n:>9} {kind}"));
        }
    }
    Outcome {
        seed,
        scenario,
        problems,
        hash: world.trace_hash(),
        settled_after,
        served_after,
        counters: world.counters,
        busiest_second: storms::busiest_second(&world),
        simulated: world.elapsed(),
        trace: world.trace.take().unwrap_or_default(),
    }
}
