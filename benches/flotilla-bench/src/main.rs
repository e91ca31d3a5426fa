//! `flotilla-bench`: Flotilla's actor runtime against a bare tokio baseline and against actix,
//! ractor and kameo, measured in one run on one machine.
//!
//! Workloads (each the median of `--runs` runs after one warm-up):
//! - **tell**: one sender tells N small messages (`u64`) to one actor, which counts them; timed
//!   from the first send until the actor has handled the last.
//! - **ask**: one task asks one actor N times in sequence and awaits each reply, every subject
//!   with the same 30 s reply timeout.
//! - **spawn+stop**: N times, spawn an actor, stop it and wait until it has stopped.
//!
//! Baseline: one `tokio::sync::mpsc` unbounded channel per actor, read by one spawned task, with
//! the same message shape as the subjects (asks use a `oneshot` per question).
//!
//! Every workload runs twice: with Flotilla, ractor, kameo and the baseline on a tokio
//! multi-thread runtime (one worker per core), then on a current-thread runtime. actix always runs
//! on its own single-threaded `System`, as actix applications do, so the current-thread table is
//! the like-for-like comparison with it.

mod peers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;

/// Command-line options.
#[derive(Parser, Debug, Clone)]
#[command(about = "Flotilla actor benchmarks against a tokio baseline and actix, ractor, kameo")]
struct Opts {
    /// Messages in the tell workload.
    #[arg(long, default_value_t = 10_000_000)]
    messages: u64,
    /// Round trips in the ask workload.
    #[arg(long, default_value_t = 200_000)]
    asks: u64,
    /// Actors in the spawn+stop workload.
    #[arg(long, default_value_t = 100_000)]
    spawns: u64,
    /// Timed runs per figure (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Runtime flavours to measure: multi, current, or both.
    #[arg(long, default_value = "both")]
    flavour: String,
    /// Only these subjects (comma-separated: baseline,flotilla,actix,ractor,kameo).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// One implementation of the three workloads.
pub(crate) trait Subject {
    fn name(&self) -> &'static str;
    fn tell(&self, n: u64) -> Duration;
    fn ask(&self, n: u64) -> Duration;
    fn spawn_stop(&self, n: u64) -> Duration;
}

static CURRENT_THREAD: AtomicBool = AtomicBool::new(false);

/// The tokio runtime of the flavour being measured.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    let mut builder = if CURRENT_THREAD.load(Ordering::Relaxed) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot build the tokio runtime: {e}"))
}

/// Times an async workload on a fresh tokio runtime of the flavour being measured. The workload
/// runs as a task on the runtime, as senders and askers do in an actor system, not from
/// `block_on` on an outside thread.
pub(crate) fn timed_tokio<F, Fut>(f: F) -> Duration
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Duration> + Send + 'static,
{
    let rt = runtime();
    let task = rt.spawn(f());
    rt.block_on(task)
        .unwrap_or_else(|e| panic!("the workload failed: {e}"))
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn measure(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let _warm_up = f();
    median((0..runs.max(1)).map(|_| f()).collect())
}

struct Row {
    subject: &'static str,
    time: Duration,
}

fn report(title: &str, unit: &str, n: u64, rows: &[Row]) {
    println!("\n## {title} ({n} {unit})");
    println!("| subject | median time | {unit}/s | vs baseline |");
    println!("| --- | ---: | ---: | ---: |");
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let baseline = rows
        .iter()
        .find(|r| r.subject == "baseline")
        .map(|r| rate(r.time));
    for r in rows {
        let vs = baseline.map_or("-".to_owned(), |b| format!("{:.2}x", rate(r.time) / b));
        println!(
            "| {} | {:.3?} | {:.0} | {} |",
            r.subject,
            r.time,
            rate(r.time),
            vs
        );
    }
    if let Some(f) = rows.iter().find(|r| r.subject == "flotilla") {
        let ratios: Vec<String> = rows
            .iter()
            .filter(|r| r.subject != "flotilla")
            .map(|r| format!("{:.2}x {}", rate(f.time) / rate(r.time), r.subject))
            .collect();
        println!("flotilla throughput relative to: {}", ratios.join(", "));
    }
}

fn main() {
    let opts = Opts::parse();
    let subjects: Vec<Box<dyn Subject>> = peers::all()
        .into_iter()
        .filter(|s| opts.only.is_empty() || opts.only.iter().any(|o| o == s.name()))
        .collect();
    println!(
        "# flotilla-bench: {} cores, {} timed runs per figure (median), {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        opts.runs,
        if cfg!(debug_assertions) {
            "DEBUG build: figures are not meaningful"
        } else {
            "release build"
        }
    );
    let started = Instant::now();
    let flavours = [
        (false, "multi-thread", "multi"),
        (true, "current-thread", "current"),
    ];
    for (current, flavour, _) in flavours
        .into_iter()
        .filter(|f| matches!(opts.flavour.as_str(), "both") || opts.flavour == f.2)
    {
        CURRENT_THREAD.store(current, Ordering::Relaxed);
        println!("\n# tokio {flavour} runtime (actix: its own single-threaded System)");
        let mut rows = Vec::new();
        for s in &subjects {
            let time = measure(opts.runs, || s.tell(opts.messages));
            rows.push(Row {
                subject: s.name(),
                time,
            });
        }
        report(
            &format!("tell 1->1 throughput, {flavour}"),
            "messages",
            opts.messages,
            &rows,
        );
        let mut rows = Vec::new();
        for s in &subjects {
            let time = measure(opts.runs, || s.ask(opts.asks));
            rows.push(Row {
                subject: s.name(),
                time,
            });
        }
        report(
            &format!("sequential ask round trips, {flavour}"),
            "asks",
            opts.asks,
            &rows,
        );
        let mut rows = Vec::new();
        for s in &subjects {
            let time = measure(opts.runs, || s.spawn_stop(opts.spawns));
            rows.push(Row {
                subject: s.name(),
                time,
            });
        }
        report(
            &format!("spawn + stop, {flavour}"),
            "actors",
            opts.spawns,
            &rows,
        );
    }
    println!("\ntotal benchmark time {:.1?}", started.elapsed());
}
