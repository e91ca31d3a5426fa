//! Real-process chaos, behind `flotilla chaos`: five `flotilla node` processes on 127.0.0.1
//! with their shard leases and durable [`ledger`](crate::ledger) records in a real etcd, a
//! workload on every node that records each acknowledged addition with its fencing token, and a
//! seeded fault schedule ([`schedule`]): `kill -9` and restart, `SIGSTOP`/`SIGCONT`, graceful
//! restarts, etcd paused, partitions — in the kernel, with each node in a network namespace of
//! its own ([`netns`]) where the machine allows it, otherwise through each node's
//! fault-injection layer ([`control`]). Then the faults stop, every shard must serve again, every node leaves, and the
//! [`check`]er decides from the records.
//!
//! ```text
//!  etcd ─ node 0 … node 4 (ports fixed for the run: a restart keeps the address, not the UID)
//!  warm-up │ fault phase (schedule from the seed) │ quiet: every shard acknowledges again │
//!  every node leaves (SIGTERM, one by one) │ records read: leases left? ledger totals │ check
//! ```
//!
//! Bounded: every wait has a limit, and every process started here (etcd, each node
//! incarnation) is ended here by its PID — also on an error or a panic (they are killed when
//! dropped).

pub mod check;
pub mod control;
pub mod netns;
pub mod schedule;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use flotilla_etcd::testing::EtcdServer;
use flotilla_lease_etcd::{EtcdBackend, EtcdSettings};
use nix::sys::signal::Signal;

use crate::node::NodeProcess;
use check::{Finding, Nanos};
use schedule::{Fault, Scheduled};

/// How a chaos run goes.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// The `flotilla` binary that runs the nodes.
    pub binary: PathBuf,
    /// The fault schedule's seed.
    pub seed: u64,
    /// Node processes.
    pub nodes: usize,
    /// How long faults are applied.
    pub phase: Duration,
    /// Ledger entities.
    pub entities: u32,
    /// Shards.
    pub shards: u32,
    /// Additions each node asks for per second.
    pub rate: u32,
    /// The nodes' `--fast` settings (failures noticed within seconds, short leases) instead of
    /// the defaults.
    pub fast: bool,
    /// The bound on the cluster forming, and on every shard serving again after the faults.
    pub settle_limit: Duration,
    /// A directory for each node process's log (`node-<n>-<process>.log`, at `info`).
    pub logs: Option<PathBuf>,
    /// How partitions are made.
    pub partitions: Partitions,
}

/// How a chaos run cuts the network.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Partitions {
    /// Network namespaces if they can be made here (root, or `CAP_NET_ADMIN`, and iproute2),
    /// otherwise the fault-injection layer.
    #[default]
    Auto,
    /// Every node in a network namespace of its own; a partition drops the packets in the
    /// kernel ([`netns`]). The run fails if the namespaces cannot be made.
    Namespaces,
    /// Every node on 127.0.0.1; a partition drops the frames in each node's fault-injection
    /// layer ([`control`]).
    Injector,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        Self {
            binary: PathBuf::from("flotilla"),
            seed: 1,
            nodes: 5,
            phase: Duration::from_secs(120),
            entities: 200,
            shards: 20,
            rate: 20,
            fast: false,
            settle_limit: Duration::from_secs(120),
            logs: None,
            partitions: Partitions::Auto,
        }
    }
}

/// What a chaos run saw.
#[derive(Debug, Clone, Default)]
pub struct ChaosReport {
    /// The faults applied.
    pub faults: Vec<Scheduled>,
    /// Broken promises.
    pub findings: Vec<Finding>,
    /// Acknowledged additions.
    pub acks: usize,
    /// Entity incarnations started.
    pub entity_starts: usize,
    /// Node processes started (incarnations).
    pub processes: usize,
    /// From the end of the faults until every shard had acknowledged an addition again.
    pub served_again_after: Option<Duration>,
    /// The longest a shard went without an acknowledgement during the fault phase, and which.
    pub longest_gap: Option<(Duration, String)>,
    /// Leases held once every node had left.
    pub leases_left: usize,
    /// Per `kill -9`: from the kill until every shard the killed process ran had acknowledged
    /// an addition again.
    pub crash_recoveries: Vec<Duration>,
    /// Per graceful restart: the longest a shard the leaving process ran went without an
    /// acknowledgement, from the SIGTERM until 10 s after it.
    pub leave_gaps: Vec<Duration>,
    /// The longest a stale incarnation of a resumed process ran beside the entity's next home.
    pub stale_after_pause: Option<Duration>,
    /// How many such stale spells there were.
    pub stale_spells: usize,
    /// How partitions were made: in network namespaces (`true`) or by the fault-injection
    /// layer.
    pub namespaces: bool,
}

impl ChaosReport {
    /// Whether every promise held.
    pub fn passed(&self) -> bool {
        self.findings.is_empty()
    }
}

fn now_ns() -> Nanos {
    crate::node::nanos()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One node process (one incarnation), and what happened to it.
struct Proc {
    node: usize,
    process: NodeProcess,
    ended: Option<Nanos>,
    paused: Vec<(Nanos, Nanos)>,
    paused_since: Option<Nanos>,
    /// Told to leave by the schedule: not restarted by the supervisor.
    leaving: bool,
}

/// The run's moving parts.
struct Harness<'a> {
    options: &'a ChaosOptions,
    etcd: EtcdServer,
    endpoint: String,
    addresses: Vec<String>,
    procs: Vec<Proc>,
    /// The running process of each node (an index into `procs`).
    current: Vec<Option<usize>>,
    say: &'a (dyn Fn(&str) + Sync),
    started: Instant,
    findings: Vec<Finding>,
    /// Processes the schedule killed or told to leave.
    stops: Vec<Stop>,
    /// The nodes' network namespaces, if partitions are made in the kernel (last: deleted
    /// after every process has been ended).
    net: Option<netns::Namespaces>,
}

/// A process the schedule stopped: killed (`crash`) or told to leave, at `at`.
#[derive(Debug, Clone, Copy)]
struct Stop {
    crash: bool,
    process: usize,
    at: Nanos,
}

impl Harness<'_> {
    fn t(&self) -> String {
        format!("{:>7.2} s", self.started.elapsed().as_secs_f64())
    }

    fn start_node(&mut self, node: usize) -> anyhow::Result<()> {
        let o = self.options;
        let (host, port) = self.addresses[node]
            .trim_start_matches("flotilla://chaos@")
            .rsplit_once(':')
            .map(|(h, p)| (h.to_owned(), p.to_owned()))
            .unwrap_or_default();
        let mut cmd = match &self.net {
            Some(net) => net.command(node, &o.binary),
            None => std::process::Command::new(&o.binary),
        };
        cmd.args(["node", "--system", "chaos", "--host", &host]);
        // The nodes authenticate each other with a secret drawn for this run.
        crate::node::with_test_secret(&mut cmd);
        cmd.args(["--port", &port, "--management-port", "0", "--chaos-control"]);
        cmd.args(["--ledger-entities", &o.entities.to_string()]);
        cmd.args(["--ledger-rate", &o.rate.to_string()]);
        cmd.args(["--shards", &o.shards.to_string()]);
        cmd.args(["--lease-etcd", &self.endpoint]);
        if o.fast {
            cmd.arg("--fast");
        }
        for a in &self.addresses {
            cmd.args(["--seed", a]);
        }
        let stderr = match &o.logs {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                let path = dir.join(format!("node-{node}-{}.log", self.procs.len()));
                cmd.env("RUST_LOG", "info");
                std::fs::File::create(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?
                    .into()
            }
            None => std::process::Stdio::null(),
        };
        let process = NodeProcess::spawn_with_stderr(cmd, Duration::from_secs(60), stderr)
            .with_context(|| format!("cannot start node {node}"))?;
        (self.say)(&format!(
            "{}  node {node} starts: {} (pid {})",
            self.t(),
            process.unique(),
            process.pid()
        ));
        self.procs.push(Proc {
            node,
            process,
            ended: None,
            paused: Vec::new(),
            paused_since: None,
            leaving: false,
        });
        self.current[node] = Some(self.procs.len() - 1);
        Ok(())
    }

    fn proc_of(&mut self, node: usize) -> Option<&mut Proc> {
        self.current[node].map(|i| &mut self.procs[i])
    }

    /// Sends a fault-injection command to the node's process; one that has exited meanwhile
    /// (downed, it shut itself down) is skipped: the supervisor starts it again, healed.
    fn command(&mut self, node: usize, line: &str) -> anyhow::Result<()> {
        if let Some(p) = self.proc_of(node)
            && !p.process.has_exited()
        {
            p.process.send_line(line)?;
        }
        Ok(())
    }

    /// As a supervisor (systemd, Kubernetes) would: a node whose process exited by itself (the
    /// cluster downed it and it shut down) is started again. Nodes the schedule stopped wait
    /// for their fault's end.
    fn supervise(&mut self) -> anyhow::Result<()> {
        for n in 0..self.current.len() {
            let exited = self.proc_of(n).is_some_and(|p| {
                p.paused_since.is_none()
                    && !p.leaving
                    && p.ended.is_none()
                    && p.process.has_exited()
            });
            if exited {
                if let Some(p) = self.proc_of(n) {
                    p.ended = Some(now_ns());
                }
                let why = self
                    .proc_of(n)
                    .and_then(|p| {
                        p.process
                            .lines()
                            .iter()
                            .rev()
                            .find(|(_, l)| l.starts_with("shutdown "))
                            .map(|(_, l)| l.clone())
                    })
                    .unwrap_or_else(|| "no shutdown line".into());
                (self.say)(&format!(
                    "{}  node {n} exited by itself ({why}): restarting it",
                    self.t()
                ));
                self.current[n] = None;
                self.start_node(n)?;
            }
        }
        Ok(())
    }

    /// Sleeps until `until`, supervising meanwhile.
    fn sleep_until(&mut self, until: Instant) -> anyhow::Result<()> {
        loop {
            self.supervise()?;
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(Duration::from_millis(250)));
        }
    }

    fn partition(&mut self, a: &[usize], b: &[usize], cut: bool) -> anyhow::Result<()> {
        if let Some(net) = &mut self.net {
            for &x in a {
                for &y in b {
                    for (from, to) in [(x, y), (y, x)] {
                        if cut {
                            net.cut(from, to)?;
                        } else {
                            net.heal(from, to)?;
                        }
                    }
                }
            }
            return Ok(());
        }
        let verb = if cut { "blackhole" } else { "heal" };
        for &x in a {
            for &y in b {
                let (ax, ay) = (self.addresses[x].clone(), self.addresses[y].clone());
                self.command(x, &format!("{verb} {ay}"))?;
                self.command(y, &format!("{verb} {ax}"))?;
            }
        }
        Ok(())
    }

    fn begin(&mut self, fault: &Fault) -> anyhow::Result<()> {
        (self.say)(&format!("{}  fault: {}", self.t(), describe(fault)));
        match fault {
            Fault::Kill(n) => {
                if let Some(i) = self.current[*n] {
                    let p = &mut self.procs[i];
                    p.process.kill()?;
                    let at = now_ns();
                    p.ended = Some(at);
                    self.stops.push(Stop {
                        crash: true,
                        process: i,
                        at,
                    });
                }
                self.current[*n] = None;
            }
            Fault::Pause(n) => {
                if let Some(p) = self.proc_of(*n) {
                    p.process.signal(Signal::SIGSTOP)?;
                    p.paused_since = Some(now_ns());
                }
            }
            Fault::Restart(n) => {
                if let Some(i) = self.current[*n] {
                    let p = &mut self.procs[i];
                    p.leaving = true;
                    p.process.terminate()?;
                    self.stops.push(Stop {
                        crash: false,
                        process: i,
                        at: now_ns(),
                    });
                }
            }
            Fault::EtcdPause => self.etcd.pause(),
            Fault::Partition(a, b) => self.partition(a, b, true)?,
        }
        Ok(())
    }

    fn end(&mut self, fault: &Fault) -> anyhow::Result<()> {
        (self.say)(&format!("{}  over: {}", self.t(), describe(fault)));
        match fault {
            Fault::Kill(n) => self.start_node(*n)?,
            Fault::Pause(n) => {
                if let Some(p) = self.proc_of(*n) {
                    p.process.signal(Signal::SIGCONT)?;
                    if let Some(since) = p.paused_since.take() {
                        p.paused.push((since, now_ns()));
                    }
                }
            }
            Fault::Restart(n) => {
                self.leave(*n);
                self.start_node(*n)?;
            }
            Fault::EtcdPause => self.etcd.resume(),
            Fault::Partition(a, b) => self.partition(a, b, false)?,
        }
        Ok(())
    }

    /// Waits for node `n`'s process to finish leaving (coordinated shutdown is bounded by its
    /// phase timeouts); one that does not within 90 s is a finding, and is killed.
    fn leave(&mut self, n: usize) {
        let Some(p) = self.current[n].map(|i| &mut self.procs[i]) else {
            return;
        };
        let status = p.process.wait_exit(Duration::from_secs(90));
        p.ended = Some(now_ns());
        if let Err(e) = status {
            let _ = p.process.kill();
            self.findings.push(Finding {
                promise: "a graceful leave ends",
                what: format!("node {n}: {e:#}"),
            });
        }
        self.current[n] = None;
    }

    /// Every acknowledgement printed so far.
    fn acks(&mut self) -> Vec<check::Ack> {
        let mut out = Vec::new();
        for (i, p) in self.procs.iter_mut().enumerate() {
            let lines: Vec<String> = p.process.lines().iter().map(|(_, l)| l.clone()).collect();
            out.extend(check::read(i, &lines, now_ns()).acks);
        }
        out
    }
}

fn describe(f: &Fault) -> String {
    match f {
        Fault::Kill(n) => format!("kill -9 node {n} (restarted when over)"),
        Fault::Pause(n) => format!("SIGSTOP node {n}"),
        Fault::Restart(n) => format!("SIGTERM node {n}: it leaves (restarted when over)"),
        Fault::EtcdPause => "SIGSTOP etcd".into(),
        Fault::Partition(a, b) => format!("partition {a:?} | {b:?}"),
    }
}

/// Shard of each entity `l0` … `l<entities-1>`.
fn shard_map(entities: u32, shards: u32) -> BTreeMap<String, String> {
    (0..entities)
        .map(|i| {
            let id = format!("l{i}");
            let shard = flotilla_proto::sharding::shard_of(&id, shards).0;
            (id, shard)
        })
        .collect()
}

/// Runs the chaos scenario of `options.seed`, telling its progress through `say`. Blocking (it
/// runs its own small runtime for the etcd reads): call it outside any tokio runtime.
pub fn run(options: &ChaosOptions, say: &(dyn Fn(&str) + Sync)) -> anyhow::Result<ChaosReport> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a runtime")?;
    let net = match options.partitions {
        Partitions::Injector => None,
        Partitions::Namespaces => Some(netns::Namespaces::create(options.nodes)?),
        Partitions::Auto => match netns::Namespaces::create(options.nodes) {
            Ok(net) => Some(net),
            Err(e) => {
                say(&format!(
                    "Network namespaces cannot be made here ({e:#}); partitions go through each node's fault-injection layer instead."
                ));
                None
            }
        },
    };
    let etcd = runtime
        .block_on(EtcdServer::start_also_on(
            net.iter().map(netns::Namespaces::host_ip).collect(),
        ))
        .context("cannot start etcd (Debian's etcd-server, or $ETCD_BIN)")?;
    // The harness reads etcd on 127.0.0.1; nodes in namespaces reach it on the bridge.
    let settings = EtcdSettings::new([etcd.endpoint()]);
    let endpoint = net
        .as_ref()
        .map_or_else(|| etcd.endpoint(), |n| etcd.endpoint_at(n.host_ip()));
    let addresses = (0..options.nodes)
        .map(|n| {
            Ok(match &net {
                Some(net) => format!("flotilla://chaos@{}:2552", net.node_ip(n)),
                None => format!("flotilla://chaos@127.0.0.1:{}", free_port()?),
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let faults = schedule::generate(options.seed, options.nodes, options.phase, 3, 20);
    say(&format!(
        "Chaos seed {}: {} nodes, {} ledger entities in {} shards, {} additions/s per node, leases and records in etcd at {endpoint}, {} settings, partitions {}; {} faults over {:?}:",
        options.seed,
        options.nodes,
        options.entities,
        options.shards,
        options.rate,
        if options.fast { "fast" } else { "default" },
        if net.is_some() {
            "in the kernel (a network namespace per node)"
        } else {
            "by each node's fault-injection layer"
        },
        faults.len(),
        options.phase
    ));
    for f in &faults {
        say(&format!(
            "  at {:>6.1} s for {:>5.1} s: {}",
            f.at.as_secs_f64(),
            f.lasts.as_secs_f64(),
            describe(&f.fault)
        ));
    }
    let mut h = Harness {
        options,
        etcd,
        endpoint,
        addresses,
        procs: Vec::new(),
        current: vec![None; options.nodes],
        say,
        started: Instant::now(),
        findings: Vec::new(),
        stops: Vec::new(),
        net,
    };
    let shards = shard_map(options.entities, options.shards);
    let all_shards: BTreeSet<String> = shards.values().cloned().collect();

    // Warm-up: the first seed forms the cluster, the others join; every shard serves.
    for n in 0..options.nodes {
        h.start_node(n)?;
    }
    let warm = h.started.elapsed();
    let ready = wait_all_served(&mut h, &shards, &all_shards, 0, options.settle_limit)?;
    say(&format!(
        "{}  every shard serves ({:.1} s after the last node started)",
        h.t(),
        (ready.saturating_sub(warm)).as_secs_f64()
    ));

    // The fault phase.
    let phase_start = Instant::now();
    let phase_start_ns = now_ns();
    let mut events: Vec<(Duration, bool, usize)> = Vec::new();
    for (i, f) in faults.iter().enumerate() {
        events.push((f.at, true, i));
        events.push((f.at + f.lasts, false, i));
    }
    events.sort_by_key(|(at, begins, i)| (*at, *begins, *i));
    for (at, begins, i) in events {
        h.sleep_until(phase_start + at)?;
        if begins {
            h.begin(&faults[i].fault)?;
        } else {
            h.end(&faults[i].fault)?;
        }
    }
    h.sleep_until(phase_start + options.phase)?;
    let quiet_ns = now_ns();
    say(&format!("{}  the faults are over", h.t()));
    let quiet = h.started.elapsed();
    let served = wait_all_served(&mut h, &shards, &all_shards, quiet_ns, options.settle_limit);
    let served_again_after = served.as_ref().ok().map(|t| t.saturating_sub(quiet));
    let mut findings = std::mem::take(&mut h.findings);
    match &served {
        Ok(d) => say(&format!(
            "{}  every shard serves again, {:.1} s after the faults",
            h.t(),
            d.saturating_sub(quiet).as_secs_f64()
        )),
        Err(e) => findings.push(Finding {
            promise: "every shard serves again",
            what: format!("{e:#}"),
        }),
    }

    // No lease held by a node that is not running.
    let backend = runtime
        .block_on(EtcdBackend::connect(settings.clone()))
        .context("cannot read the leases")?;
    let running: BTreeSet<String> = (0..options.nodes)
        .filter(|n| h.current[*n].is_some())
        .map(|n| h.addresses[n].clone())
        .collect();
    let records = runtime
        .block_on(flotilla_lease::LeaseBackend::list(&backend))
        .map_err(anyhow::Error::msg)
        .context("cannot list the leases")?;
    for r in records
        .iter()
        .filter(|r| r.expires_in.is_none_or(|d| !d.is_zero()))
    {
        if !running.contains(r.owner.as_str()) {
            findings.push(Finding {
                promise: "no zombie lease",
                what: format!(
                    "lease {} is held by {}, which does not run",
                    r.name.as_str(),
                    r.owner
                ),
            });
        }
    }

    // Every node leaves, one by one; the last must release everything.
    for n in 0..options.nodes {
        if let Some(p) = h.proc_of(n) {
            p.leaving = true;
            p.process.terminate()?;
            h.leave(n);
            say(&format!("{}  node {n} has left", h.t()));
        }
    }
    findings.append(&mut h.findings);
    let records = runtime
        .block_on(flotilla_lease::LeaseBackend::list(&backend))
        .map_err(anyhow::Error::msg)
        .context("cannot list the leases")?;
    let left: Vec<String> = records
        .iter()
        .filter(|r| r.expires_in.is_none_or(|d| !d.is_zero()))
        .map(|r| format!("{} ({})", r.name.as_str(), r.owner))
        .collect();
    if !left.is_empty() {
        findings.push(Finding {
            promise: "no zombie lease",
            what: format!(
                "{} lease(s) still held after every node left: {}",
                left.len(),
                left.join(", ")
            ),
        });
    }

    // The records.
    let client = runtime
        .block_on(flotilla_etcd::Client::connect(&settings))
        .context("cannot read the ledger")?;
    let finals: BTreeMap<String, u64> = runtime
        .block_on(crate::ledger::totals(&client))?
        .into_iter()
        .map(|(e, (_, total))| (e, total))
        .collect();
    let end = now_ns();
    let mut acks = Vec::new();
    let mut spells = Vec::new();
    let mut paused = BTreeMap::new();
    for (i, p) in h.procs.iter_mut().enumerate() {
        let lines: Vec<String> = p.process.lines().iter().map(|(_, l)| l.clone()).collect();
        if let Some(dir) = &options.logs {
            let path = dir.join(format!("node-{}-{i}.out", p.node));
            let mut text = lines.join("\n");
            text.push('\n');
            std::fs::write(&path, text)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        let printed = check::read(i, &lines, p.ended.unwrap_or(end));
        acks.extend(printed.acks);
        spells.extend(printed.spells);
        paused.insert(i, p.paused.clone());
    }
    findings.extend(check::acks(&acks, &finals));
    let overlaps = check::spells(&spells, &paused);
    findings.extend(overlaps.findings);
    let stale_after_pause = overlaps.stale.iter().max().map(|n| nanos_to(*n));
    let longest_gap = longest_gap(&acks, &shards, phase_start_ns, quiet_ns);
    let (crash_recoveries, leave_gaps) = stop_figures(&h.stops, &acks, &spells, &shards);
    let report = ChaosReport {
        faults,
        findings,
        acks: acks.len(),
        entity_starts: spells.len(),
        processes: h.procs.len(),
        served_again_after,
        longest_gap,
        leases_left: left.len(),
        crash_recoveries,
        leave_gaps,
        stale_after_pause,
        stale_spells: overlaps.stale.len(),
        namespaces: h.net.is_some(),
    };
    if let Some(d) = report.stale_after_pause {
        say(&format!(
            "{} entity incarnation(s) of a resumed process still ran beside their next home, at most {:.1} ms after the SIGCONT, until the process noticed its leases had expired (fencing kept their writes out)",
            report.stale_spells,
            d.as_secs_f64() * 1000.0
        ));
    }
    let secs = |ds: &[Duration]| {
        ds.iter()
            .map(|d| format!("{:.1} s", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    say(&format!(
        "Every shard of a killed node served again after: [{}]; longest wait for a shard of a leaving node: [{}]",
        secs(&report.crash_recoveries),
        secs(&report.leave_gaps)
    ));
    say(&format!(
        "{}  {} node processes, {} acknowledged additions, {} entity incarnations, {} ledger records; longest a shard went unacknowledged during the faults: {}",
        h.t(),
        report.processes,
        report.acks,
        report.entity_starts,
        finals.len(),
        report.longest_gap.as_ref().map_or_else(
            || "-".to_owned(),
            |(d, s)| format!("{:.1} s (shard {s})", d.as_secs_f64())
        )
    ));
    if !report.passed() {
        say("Processes (as the findings number them):");
        for (i, p) in h.procs.iter().enumerate() {
            say(&format!(
                "  process {i}: node {} {} (pid {})",
                p.node,
                p.process.unique(),
                p.process.pid()
            ));
        }
    }
    drop(h);
    Ok(report)
}

/// Waits until every shard has an acknowledgement sent after `since`; when it had, from the
/// harness's start.
fn wait_all_served(
    h: &mut Harness<'_>,
    shards: &BTreeMap<String, String>,
    all: &BTreeSet<String>,
    since: Nanos,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + limit;
    loop {
        let served: BTreeSet<&String> = h
            .acks()
            .iter()
            .filter(|a| a.sent >= since)
            .filter_map(|a| shards.get(&a.entity))
            .collect();
        if served.len() == all.len() {
            return Ok(h.started.elapsed());
        }
        if Instant::now() >= deadline {
            let missing: Vec<&String> = all.iter().filter(|s| !served.contains(s)).collect();
            anyhow::bail!(
                "{} of {} shards acknowledged nothing within {limit:?}: {missing:?}",
                missing.len(),
                all.len()
            );
        }
        h.sleep_until(Instant::now() + Duration::from_millis(250))?;
    }
}

fn nanos_to(d: Nanos) -> Duration {
    Duration::from_nanos(u64::try_from(d).unwrap_or(u64::MAX))
}

/// The figures of the processes the schedule stopped (see [`ChaosReport`]).
fn stop_figures(
    stops: &[Stop],
    acks: &[check::Ack],
    spells: &[check::Spell],
    shards: &BTreeMap<String, String>,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut times: BTreeMap<&String, Vec<Nanos>> = BTreeMap::new();
    for a in acks {
        if let Some(s) = shards.get(&a.entity) {
            times.entry(s).or_default().push(a.acked);
        }
    }
    for ts in times.values_mut() {
        ts.sort_unstable();
    }
    let (mut crashes, mut leaves) = (Vec::new(), Vec::new());
    for stop in stops {
        let hosted: BTreeSet<&String> = spells
            .iter()
            .filter(|s| s.process == stop.process && s.from <= stop.at && s.to >= stop.at)
            .filter_map(|s| shards.get(&s.entity))
            .collect();
        if hosted.is_empty() {
            continue;
        }
        let empty = Vec::new();
        if stop.crash {
            // Every shard it ran: its first acknowledgement after the kill.
            let worst = hosted
                .iter()
                .map(|s| {
                    let ts = times.get(*s).unwrap_or(&empty);
                    ts.iter().find(|t| **t > stop.at).map(|t| t - stop.at)
                })
                .collect::<Option<Vec<Nanos>>>()
                .and_then(|v| v.into_iter().max());
            if let Some(w) = worst {
                crashes.push(nanos_to(w));
            }
        } else {
            let until = stop.at + 10_000_000_000;
            let worst = hosted
                .iter()
                .map(|s| {
                    let mut ts: Vec<Nanos> = times
                        .get(*s)
                        .unwrap_or(&empty)
                        .iter()
                        .copied()
                        .filter(|t| *t > stop.at && *t < until)
                        .collect();
                    ts.insert(0, stop.at);
                    ts.push(until);
                    ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
                })
                .max()
                .unwrap_or(0);
            leaves.push(nanos_to(worst));
        }
    }
    (crashes, leaves)
}

/// The longest a shard went without an acknowledgement between `from` and `to`.
fn longest_gap(
    acks: &[check::Ack],
    shards: &BTreeMap<String, String>,
    from: Nanos,
    to: Nanos,
) -> Option<(Duration, String)> {
    let mut times: BTreeMap<&String, Vec<Nanos>> = BTreeMap::new();
    for a in acks {
        if let Some(s) = shards.get(&a.entity) {
            times.entry(s).or_default().push(a.acked);
        }
    }
    let mut best: Option<(Nanos, String)> = None;
    for (shard, mut ts) in times {
        ts.retain(|t| *t >= from && *t <= to);
        ts.push(from);
        ts.push(to);
        ts.sort_unstable();
        let gap = ts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
        if best.as_ref().is_none_or(|(g, _)| gap > *g) {
            best = Some((gap, shard.clone()));
        }
    }
    best.map(|(g, s)| {
        (
            Duration::from_nanos(u64::try_from(g).unwrap_or(u64::MAX)),
            s,
        )
    })
}
