//! Fault schedules drawn from a seed.
//!
//! A [`Scenario`] is a list of [`Fault`]s, each starting at a point of the fault phase and
//! lasting a while. [`Scenario::generate`] draws one from a seed within [`ScenarioSettings`]'
//! bounds: how long the phase is, how many faults, how far a clock may jump. The kinds:
//! symmetric partitions (a random split), asymmetric ones (one direction of one link),
//! flapping partitions (cut and healed every few seconds), lossy, duplicating and reordering
//! networks, clock jumps, crashes with a restart as a new incarnation (or none until the phase
//! ends), a machine lost for good (in a quarter of the scenarios, on top of the others), long pauses (`SIGSTOP`), graceful leaves followed by a restart, a slow lease backend
//! (slower than the client's request timeout, so requests are applied after their callers gave
//! up), a lease backend outage, and one node cut off from the backend.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::sim::World;

/// One fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Every link between the two groups is cut, both ways.
    Partition {
        /// One side.
        a: Vec<usize>,
        /// The other.
        b: Vec<usize>,
    },
    /// Frames from `from` to `to` are lost; the other direction works.
    OneWay {
        /// The sender whose frames are lost.
        from: usize,
        /// Their destination.
        to: usize,
    },
    /// A partition between the groups that is cut and healed every `period`.
    Flapping {
        /// One side.
        a: Vec<usize>,
        /// The other.
        b: Vec<usize>,
        /// How long each cut and each healed spell lasts.
        period: Duration,
    },
    /// Frames are lost, duplicated and reordered at these rates.
    Lossy {
        /// Loss, in millionths.
        loss_ppm: u32,
        /// Duplication, in millionths.
        duplicate_ppm: u32,
        /// Extra random delay (reordering).
        jitter: Duration,
    },
    /// Node's clock jumps ahead (instantaneous; the duration is ignored).
    ClockJump {
        /// The node.
        node: usize,
        /// By how much.
        by: Duration,
    },
    /// The node crashes and restarts as a new incarnation at the end of the fault.
    Crash {
        /// The node.
        node: usize,
    },
    /// The node is paused for the fault's duration.
    Freeze {
        /// The node.
        node: usize,
    },
    /// The node leaves gracefully and restarts at the end of the fault.
    Leave {
        /// The node.
        node: usize,
    },
    /// Every lease request is delayed this much on its way to the backend.
    SlowBackend {
        /// The delay.
        latency: Duration,
    },
    /// The lease backend answers nothing.
    BackendOutage,
    /// One node's lease requests and answers are lost.
    BackendCut {
        /// The node.
        node: usize,
    },
}

/// A fault and when it applies, within the fault phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// When it starts, from the start of the fault phase.
    pub at: Duration,
    /// How long it lasts (ended at the end of the phase at the latest).
    pub lasts: Duration,
    /// The fault.
    pub fault: Fault,
}

/// Bounds of a generated scenario.
#[derive(Debug, Clone)]
pub struct ScenarioSettings {
    /// How long the fault phase lasts.
    pub phase: Duration,
    /// How many faults, at most (at least one).
    pub max_faults: usize,
    /// The longest clock jump.
    pub max_clock_jump: Duration,
    /// The longest single fault.
    pub max_fault: Duration,
}

impl Default for ScenarioSettings {
    fn default() -> Self {
        Self {
            phase: Duration::from_secs(60),
            max_faults: 6,
            max_clock_jump: Duration::from_secs(1),
            max_fault: Duration::from_secs(30),
        }
    }
}

/// A fault schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// The faults, by start.
    pub faults: Vec<Scheduled>,
    /// How long the fault phase lasts.
    pub phase: Duration,
    /// A node whose machine dies for good at this point of the phase (a quarter of the
    /// scenarios): the others must remove it and take over its shards for good, with nobody
    /// answering at its address again.
    pub lost: Option<(Duration, usize)>,
}

/// A small deterministic generator (the world's own stays untouched by generation).
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, lo: Duration, hi: Duration) -> Duration {
        let lo_ms = u64::try_from(lo.as_millis()).unwrap_or(0);
        let hi_ms = u64::try_from(hi.as_millis())
            .unwrap_or(lo_ms)
            .max(lo_ms + 1);
        Duration::from_millis(lo_ms + self.below(hi_ms - lo_ms))
    }

    /// A random split of `0..n` into two non-empty groups.
    fn split(&mut self, n: usize) -> (Vec<usize>, Vec<usize>) {
        loop {
            let mask = self.next();
            let (a, b): (Vec<usize>, Vec<usize>) = (0..n).partition(|i| mask >> i & 1 == 1);
            if !a.is_empty() && !b.is_empty() {
                return (a, b);
            }
        }
    }
}

impl Scenario {
    /// Draws a scenario for `nodes` nodes from `seed`.
    pub fn generate(seed: u64, nodes: usize, settings: &ScenarioSettings) -> Self {
        let mut d = Draw(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        for _ in 0..4 {
            d.next();
        }
        let count = 1 + d.below(settings.max_faults as u64) as usize;
        let node = |d: &mut Draw| d.below(nodes as u64) as usize;
        let mut faults = Vec::new();
        for _ in 0..count {
            let at = d.millis(Duration::ZERO, settings.phase * 3 / 4);
            let lasts = d.millis(Duration::from_secs(1), settings.max_fault);
            let fault = match d.below(12) {
                0 | 1 => {
                    let (a, b) = d.split(nodes);
                    Fault::Partition { a, b }
                }
                2 => {
                    let from = node(&mut d);
                    let to = (from + 1 + d.below(nodes as u64 - 1) as usize) % nodes;
                    Fault::OneWay { from, to }
                }
                3 => {
                    let (a, b) = d.split(nodes);
                    let period = d.millis(Duration::from_millis(500), Duration::from_secs(6));
                    Fault::Flapping { a, b, period }
                }
                4 => Fault::Lossy {
                    loss_ppm: d.below(200_000) as u32,
                    duplicate_ppm: d.below(100_000) as u32,
                    jitter: d.millis(Duration::ZERO, Duration::from_millis(200)),
                },
                5 => Fault::ClockJump {
                    node: node(&mut d),
                    by: d.millis(Duration::from_millis(1), settings.max_clock_jump),
                },
                6 => Fault::Crash { node: node(&mut d) },
                7 => Fault::Freeze { node: node(&mut d) },
                8 => Fault::Leave { node: node(&mut d) },
                9 => Fault::SlowBackend {
                    latency: d.millis(Duration::from_millis(100), Duration::from_secs(4)),
                },
                10 => Fault::BackendOutage,
                _ => Fault::BackendCut { node: node(&mut d) },
            };
            faults.push(Scheduled { at, lasts, fault });
        }
        faults.sort_by_key(|f| f.at);
        // Drawn apart, so that the faults above are the same whether or not a node is lost.
        let mut l = Draw(seed.wrapping_mul(0xd1b5_4a32_d192_ed03) | 1);
        for _ in 0..4 {
            l.next();
        }
        // Not the first seed node: with a static seed list it alone may form a new cluster, so
        // once it is gone for good a cluster that downed itself whole cannot form again — as
        // with Akka, that is the operator's to fix (or discovery's, which has no first seed).
        let lost = (nodes > 1 && l.below(4) == 0).then(|| {
            let at = l.millis(Duration::ZERO, settings.phase * 3 / 4);
            (at, 1 + l.below(nodes as u64 - 1) as usize)
        });
        Self {
            faults,
            phase: settings.phase,
            lost,
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.faults {
            writeln!(
                f,
                "  at {:>7.3?} for {:>7.3?}: {:?}",
                s.at, s.lasts, s.fault
            )?;
        }
        if let Some((at, node)) = self.lost {
            writeln!(f, "  at {at:>7.3?}: node {node} is lost for good")?;
        }
        Ok(())
    }
}

/// What is in force, counted so that overlapping faults end independently.
#[derive(Debug, Default)]
struct InForce {
    blocked: BTreeMap<(usize, usize), u32>,
    backend_cut: BTreeMap<usize, u32>,
    outages: u32,
    slow: Vec<Duration>,
    lossy: Vec<(u32, u32, Duration)>,
}

/// A change the runner applies at an instant.
#[derive(Debug, Clone)]
enum Change {
    Block(Vec<(usize, usize)>),
    Unblock(Vec<(usize, usize)>),
    Fault(Fault),
    End(Fault),
    Lose(usize),
}

/// Plays `scenario` on `world` from now on, over its fault phase; then every fault is over
/// (links healed, backend back, crashed and departed nodes restarted).
pub fn play(world: &mut World, scenario: &Scenario, mut each_tick: impl FnMut(&mut World)) {
    let start = world.now();
    let end = start + scenario.phase;
    let mut changes: Vec<(Duration, u64, Change)> = Vec::new();
    let mut order = 0u64;
    let mut push = |changes: &mut Vec<(Duration, u64, Change)>, at: Duration, c: Change| {
        order += 1;
        changes.push((at, order, c));
    };
    for s in &scenario.faults {
        let stop = (s.at + s.lasts).min(scenario.phase);
        match &s.fault {
            Fault::Flapping { a, b, period } => {
                let links = pairs(a, b);
                let mut t = s.at;
                while t < stop {
                    push(&mut changes, t, Change::Block(links.clone()));
                    let heal = (t + *period).min(stop);
                    push(&mut changes, heal, Change::Unblock(links.clone()));
                    t = heal + *period;
                }
            }
            fault => {
                push(&mut changes, s.at, Change::Fault(fault.clone()));
                push(&mut changes, stop, Change::End(fault.clone()));
            }
        }
    }
    if let Some((at, node)) = scenario.lost {
        push(&mut changes, at, Change::Lose(node));
    }
    changes.sort_by_key(|(at, order, _)| (*at, *order));
    let mut in_force = InForce::default();
    let tick = Duration::from_millis(100);
    let mut next_tick = start;
    let mut pending = changes.into_iter().peekable();
    while world.now() < end {
        while let Some((at, _, _)) = pending.peek() {
            if start + *at > world.now() {
                break;
            }
            if let Some((_, _, change)) = pending.next() {
                apply(world, &mut in_force, change);
            }
        }
        if world.now() >= next_tick {
            each_tick(world);
            next_tick += tick;
        }
        let next_change = pending.peek().map(|(at, _, _)| start + *at);
        let until = [Some(next_tick), next_change, Some(end)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(end);
        world.run_until(until.max(world.now()));
    }
    for (_, _, change) in pending {
        if let Change::End(_) | Change::Unblock(_) = change {
            apply(world, &mut in_force, change);
        }
    }
    world.conditions = crate::sim::Conditions::default();
    for i in 0..world.nodes.len() {
        if !world.alive(i) {
            world.start(i);
        }
    }
}

fn pairs(a: &[usize], b: &[usize]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for &x in a {
        for &y in b {
            out.push((x, y));
            out.push((y, x));
        }
    }
    out
}

fn apply(world: &mut World, f: &mut InForce, change: Change) {
    match change {
        Change::Lose(node) => world.lose(node),
        Change::Block(links) => {
            for l in links {
                *f.blocked.entry(l).or_insert(0) += 1;
            }
        }
        Change::Unblock(links) => {
            for l in links {
                if let Some(c) = f.blocked.get_mut(&l) {
                    *c = c.saturating_sub(1);
                }
            }
        }
        Change::Fault(fault) => match fault {
            Fault::Partition { a, b } => return apply(world, f, Change::Block(pairs(&a, &b))),
            Fault::OneWay { from, to } => {
                return apply(world, f, Change::Block(vec![(from, to)]));
            }
            Fault::Flapping { .. } => {}
            Fault::Lossy {
                loss_ppm,
                duplicate_ppm,
                jitter,
            } => f.lossy.push((loss_ppm, duplicate_ppm, jitter)),
            Fault::ClockJump { node, by } => world.jump_clock(node, by),
            Fault::Crash { node } => world.crash(node),
            Fault::Freeze { node } => {
                // Until the fault ends: thawed by its End.
                world.freeze(node, Duration::from_secs(3600));
            }
            Fault::Leave { node } => world.leave(node),
            Fault::SlowBackend { latency } => f.slow.push(latency),
            Fault::BackendOutage => f.outages += 1,
            Fault::BackendCut { node } => *f.backend_cut.entry(node).or_insert(0) += 1,
        },
        Change::End(fault) => match fault {
            Fault::Partition { a, b } => return apply(world, f, Change::Unblock(pairs(&a, &b))),
            Fault::OneWay { from, to } => {
                return apply(world, f, Change::Unblock(vec![(from, to)]));
            }
            Fault::Lossy {
                loss_ppm,
                duplicate_ppm,
                jitter,
            } => {
                if let Some(p) = f
                    .lossy
                    .iter()
                    .position(|x| *x == (loss_ppm, duplicate_ppm, jitter))
                {
                    f.lossy.remove(p);
                }
            }
            Fault::Crash { node } | Fault::Leave { node } => {
                if !world.alive(node) {
                    world.start(node);
                }
            }
            Fault::Freeze { node } => world.thaw(node),
            Fault::SlowBackend { latency } => {
                if let Some(p) = f.slow.iter().position(|x| *x == latency) {
                    f.slow.remove(p);
                }
            }
            Fault::BackendOutage => f.outages = f.outages.saturating_sub(1),
            Fault::BackendCut { node } => {
                if let Some(c) = f.backend_cut.get_mut(&node) {
                    *c = c.saturating_sub(1);
                }
            }
            Fault::ClockJump { .. } | Fault::Flapping { .. } => {}
        },
    }
    let c = &mut world.conditions;
    c.blocked = f
        .blocked
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(l, _)| *l)
        .collect();
    c.backend_blocked = f
        .backend_cut
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(n, _)| *n)
        .collect();
    c.backend_down = f.outages > 0;
    c.backend_latency = f.slow.iter().copied().max().unwrap_or_default();
    c.loss_ppm = f.lossy.iter().map(|x| x.0).max().unwrap_or(0);
    c.duplicate_ppm = f.lossy.iter().map(|x| x.1).max().unwrap_or(0);
    c.jitter = f.lossy.iter().map(|x| x.2).max().unwrap_or_default();
}
