//! The failover demo behind `flotilla demo`: a three-node cluster with lease-guarded sharded
//! counters under steady load; one node shuts down gracefully, another crashes; a timeline of
//! what happened; checks that no lease was left behind and no shard ran on two nodes at once.
//!
//! # How the nodes run
//!
//! The three nodes run inside the demo's process, each a complete node: its own actor system
//! on its own tokio runtime (its own threads), its own remoting threads and TCP port on
//! 127.0.0.1, its own cluster membership, shard region and lease client — they talk to each
//! other over real TCP exactly as separate processes do. They share one process so that they can
//! share the embedded in-memory lease backend (it lives in memory; processes cannot share it),
//! and so that the demo needs nothing installed. With `--backend etcd` every node has its own
//! etcd client instead.
//!
//! A **crash** stops a node the way `kill -9` stops a process, as far as everyone else can
//! tell: its sockets close at once, its threads stop (its runtime is shut down without running
//! anything more: no actor's stop hook, no coordinated shutdown, no lease release), and its
//! lease calls stop reaching the backend. What it held stays held until the backend expires it.
//!
//! # What it measures
//!
//! Each shard is probed every 200 ms by an ask to one of its entities; a shard is unavailable
//! from its last timely answer (within 200 ms) to the first answer after — an over-estimate by at
//! most the probing interval. Every entity start and stop, every lease call's outcome, every
//! cluster event seen by the surviving node and every association change go to one journal,
//! from which the timeline and the checks are computed ([`check`], [`timeline`]).

pub mod check;
pub mod journal;
pub mod timeline;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use flotilla_actor::{
    Actor, ActorError, ActorSystem, AssociationEvent, Context, Props, RemoteMessage, ReplyTo,
};
use flotilla_cluster::LeaseClientExt as _;
use flotilla_cluster::{Cluster, MemberStatus};
use flotilla_core::{Address, FlotillaConfig};
use flotilla_lease::{LeaseBackend, LeaseClient, MemoryBackend, OwnerId};
use flotilla_management::Management;
use flotilla_sharding::{ClusterSharding, Entity, ShardRegion};
use serde::{Deserialize, Serialize};

use check::Probe;
use journal::{Fact, Journal, NodeIx, Recorded};
use timeline::Names;

/// Where the shards' leases live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoBackend {
    /// The embedded in-memory backend, shared by the three nodes.
    Memory,
    /// A real etcd: its client URLs.
    Etcd(Vec<String>),
}

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The lease backend.
    pub backend: DemoBackend,
    /// Counter entities (default 10 000).
    pub entities: u32,
    /// Shards (default 100).
    pub shards: u32,
    /// Messages per second each node sends to the counters (default 1000).
    pub rate: u32,
    /// The surviving node's management port (dashboard and API; default 8558, a free one if
    /// it is taken; 0 picks a free one).
    pub management_port: u16,
    /// Seconds of steady load before, between and after the steps (default 3).
    pub steady: Duration,
    /// Fast failure detection and short leases (seconds instead of tens of seconds) instead of
    /// the defaults.
    pub fast: bool,
    /// Keep the surviving node and its dashboard running at the end until Ctrl-C or SIGTERM.
    pub hold: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            backend: DemoBackend::Memory,
            entities: 10_000,
            shards: 100,
            rate: 1000,
            management_port: 8558,
            steady: Duration::from_secs(3),
            fast: false,
            hold: false,
        }
    }
}

/// One of the final checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked, in words.
    pub claim: String,
    /// Whether it held.
    pub passed: bool,
    /// The evidence, in words.
    pub detail: String,
}

/// What one step did to the shards.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepFigures {
    /// Shards that moved to another node.
    pub moved: usize,
    /// How long each moved shard was unavailable.
    pub unavailable: Vec<Duration>,
    /// The longest outage of a shard that did not move (zero when none).
    pub others_worst: Duration,
    /// From the step's start until every shard answered again.
    pub all_serving_after: Option<Duration>,
}

/// What the demo found.
#[derive(Debug, Clone, Default)]
pub struct DemoReport {
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// The graceful shutdown.
    pub graceful: StepFigures,
    /// The crash.
    pub crash: StepFigures,
    /// Counter messages sent.
    pub messages: u64,
}

impl DemoReport {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }
}

/// The demo's counter entity's messages.
#[derive(Debug, Serialize, Deserialize)]
pub enum CounterMsg {
    /// Add to the total.
    Add(u64),
    /// A probe: answers with the index of the node it runs on and its shard's fencing token.
    Probe(ReplyTo<(u32, Option<u64>)>),
}

impl RemoteMessage for CounterMsg {
    const MANIFEST: &'static str = "flotilla.demo.FailoverCounter";
}

struct Counter {
    node: NodeIx,
    entity: String,
    shard: String,
    token: Option<u64>,
    total: u64,
    journal: Journal,
}

impl Counter {
    fn record(&self, started: bool) {
        self.journal.record(Fact::Entity {
            node: self.node,
            entity: self.entity.clone(),
            shard: self.shard.clone(),
            token: self.token,
            started,
        });
    }
}

impl Actor for Counter {
    type Msg = CounterMsg;

    async fn pre_start(&mut self, _ctx: &mut Context<CounterMsg>) -> Result<(), ActorError> {
        self.record(true);
        Ok(())
    }

    async fn handle(
        &mut self,
        msg: CounterMsg,
        _ctx: &mut Context<CounterMsg>,
    ) -> Result<(), ActorError> {
        match msg {
            CounterMsg::Add(n) => self.total = self.total.wrapping_add(n),
            CounterMsg::Probe(reply) => {
                reply.send((u32::try_from(self.node).unwrap_or(u32::MAX), self.token));
            }
        }
        Ok(())
    }

    async fn post_stop(&mut self, _ctx: &mut Context<CounterMsg>) {
        self.record(false);
    }
}

/// One node of the demo.
struct DemoNode {
    ix: NodeIx,
    name: String,
    runtime: Option<tokio::runtime::Runtime>,
    system: ActorSystem,
    cluster: Cluster,
    region: ShardRegion<CounterMsg>,
    lease: Arc<Recorded>,
    owner: OwnerId,
    management: Option<Management>,
}

impl DemoNode {
    fn address(&self) -> &Address {
        self.cluster.self_address()
    }

    fn alive(&self) -> bool {
        self.runtime.is_some()
    }

    /// Runs `f` on the node's own runtime.
    async fn on<T: Send + 'static>(
        &self,
        f: impl Future<Output = T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let rt = self
            .runtime
            .as_ref()
            .with_context(|| format!("{} is not running", self.name))?;
        rt.spawn(f)
            .await
            .with_context(|| format!("a task on {} failed", self.name))
    }
}

fn node_config(options: &DemoOptions) -> FlotillaConfig {
    let mut config = FlotillaConfig::default();
    if options.fast {
        config.remote = flotilla_remote::testing::fast_settings();
        config.cluster = flotilla_cluster::testing::fast_settings();
        config.lease.heartbeat_timeout = Duration::from_secs(3);
        config.lease.heartbeat_interval = Duration::from_millis(300);
        config.sharding.lease_retry_interval = Duration::from_millis(500);
    }
    // The three nodes run in this process and share a secret drawn for it: they authenticate
    // each other as a real cluster's nodes do, and nothing outside the process can join.
    config.remote.secret = Some(flotilla_remote::testing::secret().to_owned());
    config.sharding.number_of_shards = options.shards;
    config.sharding.use_lease = true;
    config
}

/// Starts node `ix` on its own runtime; `seed` is the node to join (none: it forms the
/// cluster).
async fn start_node(
    ix: NodeIx,
    config: FlotillaConfig,
    backend: Arc<dyn LeaseBackend>,
    journal: &Journal,
    seed: Option<Address>,
) -> anyhow::Result<DemoNode> {
    let name = format!("node-{}", ix + 1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name.clone())
        .enable_all()
        .build()
        .with_context(|| format!("cannot start {name}'s runtime"))?;
    let j = journal.clone();
    let started = runtime.spawn(async move {
        let system = ActorSystem::builder("demo")
            .config(config)
            .remote("127.0.0.1", 0)
            .build()
            .context("cannot start the actor system")?;
        let cluster = Cluster::start(&system).context("cannot start the cluster")?;
        // The node's view, into the journal: cluster events and association changes.
        let mut events = cluster.subscribe().await;
        let jc = j.clone();
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                let member = crate::node::subject(&e);
                jc.record(Fact::Member {
                    observer: ix,
                    kind: e.kind(),
                    member,
                });
            }
        });
        let mut associations = system
            .event_stream()
            .subscribe_channel::<AssociationEvent>();
        let ja = j.clone();
        tokio::spawn(async move {
            while let Some(a) = associations.recv().await {
                ja.record(Fact::Association {
                    observer: ix,
                    remote: a.remote.to_string(),
                    from: a.from.to_string(),
                    to: a.to.to_string(),
                    cause: a.cause,
                });
            }
        });
        match seed {
            Some(seed) => cluster.join_seed_nodes(vec![seed]),
            None => cluster.join(cluster.self_address().clone()),
        }
        let recorded = Arc::new(Recorded::new(backend, ix, j.clone()));
        let owner = OwnerId::for_node(&system.config().lease, cluster.self_address())
            .context("no lease owner id")?;
        let client = LeaseClient::start(
            &system,
            Arc::clone(&recorded) as Arc<dyn LeaseBackend>,
            system.config().lease.clone(),
            owner.clone(),
        )
        .context("cannot start the lease client")?;
        let je = j.clone();
        let entity = Entity::new("counter", move |ctx| {
            let (entity, shard, token, journal) = (
                ctx.entity_id().to_owned(),
                ctx.shard_id().to_owned(),
                ctx.fencing_token().map(|t| t.0),
                je.clone(),
            );
            Props::new(move || Counter {
                node: ix,
                entity: entity.clone(),
                shard: shard.clone(),
                token,
                total: 0,
                journal: journal.clone(),
            })
        })
        .settings(system.config().sharding.clone())
        .lease_client(client);
        let region =
            ClusterSharding::start(&system, &cluster, entity).context("cannot start sharding")?;
        anyhow::Ok((system, cluster, region, recorded, owner))
    });
    let (system, cluster, region, lease, owner) = started
        .await
        .with_context(|| format!("{name} failed to start"))?
        .with_context(|| format!("{name} failed to start"))?;
    Ok(DemoNode {
        ix,
        name,
        runtime: Some(runtime),
        system,
        cluster,
        region,
        lease,
        owner,
        management: None,
    })
}

/// Starts `node`'s management endpoint on `port`; when that port is taken, on a free one.
async fn start_management(node: &mut DemoNode, port: u16) -> anyhow::Result<()> {
    let start = |port: u16| {
        let mut settings = node.system.config().management.clone();
        settings.port = port;
        let builder = Management::builder(&node.system, &node.cluster)
            .settings(settings)
            .region(node.region.clone())
            .lease_backend(Arc::clone(&node.lease) as Arc<dyn LeaseBackend>);
        node.on(builder.start())
    };
    let management = match start(port).await? {
        Ok(m) => m,
        Err(e) if port != 0 => {
            tracing::info!("management port {port} unavailable ({e}); using a free one");
            start(0).await??
        }
        Err(e) => return Err(e.into()),
    };
    node.management = Some(management);
    Ok(())
}

/// A probe answered later than this waited for a shard that was not serving.
const LATE: Duration = Duration::from_millis(200);

/// The probes of every shard.
type Probes = Arc<Mutex<BTreeMap<String, Vec<Probe>>>>;

/// The first entity of each shard among `c0` … `c<entities-1>`.
fn probe_targets(entities: u32, shards: u32) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for i in 0..entities {
        let id = format!("c{i}");
        let shard = flotilla_proto::sharding::shard_of(&id, shards);
        out.entry(shard.0).or_insert(id);
        if out.len() == shards as usize {
            break;
        }
    }
    out
}

/// The demo's moving parts and what it has seen.
struct Demo<'a> {
    options: DemoOptions,
    journal: Journal,
    nodes: Vec<DemoNode>,
    names: Names,
    crashed: BTreeMap<NodeIx, Duration>,
    probes: Probes,
    sent: Arc<AtomicU64>,
    survivor: NodeIx,
    /// How many shards are probed.
    targets: usize,
    say: &'a (dyn Fn(&str) + Sync),
    progress_at: Duration,
}

impl Demo<'_> {
    fn t(&self) -> String {
        format!("{:>7.2} s", self.journal.now().as_secs_f64())
    }

    /// Shards whose last answer is older than `within`, and the shards probed.
    fn not_serving(&self, within: Duration) -> (usize, usize) {
        let now = self.journal.now();
        let probes = self.probes.lock().unwrap_or_else(PoisonError::into_inner);
        let stale = probes
            .values()
            .filter(|ps| {
                ps.iter()
                    .filter_map(|p| p.answered)
                    .max()
                    .is_none_or(|a| now.saturating_sub(a) > within)
            })
            .count();
        (stale, probes.len())
    }

    /// Whether every probed shard answered within the last 0.5 s.
    fn all_answering(&self) -> bool {
        self.not_serving(Duration::from_millis(500)) == (0, self.targets)
    }

    /// A one-line status: members, shards per node, entities, load, shards not answering.
    async fn status(&self) -> String {
        let survivor = &self.nodes[self.survivor];
        let members = survivor.cluster.state().members;
        let up = members
            .iter()
            .filter(|m| m.status == MemberStatus::Up)
            .count();
        let mut per_node = Vec::new();
        let mut entities = 0;
        for n in self.nodes.iter().filter(|n| n.alive()) {
            let state = tokio::time::timeout(Duration::from_secs(1), n.region.state()).await;
            match state {
                Ok(s) => {
                    entities += s.shards.values().map(Vec::len).sum::<usize>();
                    per_node.push(format!("{} {}", n.name, s.shards.len()));
                }
                Err(_) => per_node.push(format!("{} ?", n.name)),
            }
        }
        let (stale, probed) = self.not_serving(Duration::from_secs(1));
        format!(
            "{} of {} members up · shards: {} · {entities} entities running · {} messages sent · {}",
            up,
            members.len(),
            per_node.join(", "),
            self.sent.load(Ordering::Relaxed),
            if probed == 0 {
                "not probing yet".to_owned()
            } else if stale == 0 {
                format!("all {probed} shards answering")
            } else {
                format!("{stale} of {probed} shards not answering")
            }
        )
    }

    /// Shows progress at most every 2 s.
    async fn progress(&mut self, what: &str) {
        let now = self.journal.now();
        if now.saturating_sub(self.progress_at) >= Duration::from_secs(2) {
            self.progress_at = now;
            let status = self.status().await;
            (self.say)(&format!("  {}  … {what}: {status}", self.t()));
        }
    }

    /// Waits until `done` holds, showing progress; an error after `limit`.
    async fn wait_until(
        &mut self,
        what: &str,
        limit: Duration,
        mut done: impl AsyncFnMut(&Self) -> bool,
    ) -> anyhow::Result<Duration> {
        let start = self.journal.now();
        loop {
            if done(&*self).await {
                return Ok(self.journal.now() - start);
            }
            anyhow::ensure!(
                self.journal.now() - start < limit,
                "gave up after {limit:?} waiting for: {what}\nlast status: {}",
                self.status().await
            );
            self.progress(what).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Steady load for `d`, showing progress.
    async fn steady(&mut self, d: Duration) {
        let until = self.journal.now() + d;
        while self.journal.now() < until {
            self.progress("steady load").await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends probes to every shard every 200 ms, through the surviving node's region.
    fn start_probes(&self) -> tokio::task::JoinHandle<()> {
        let targets = probe_targets(self.options.entities, self.options.shards);
        let region = self.nodes[self.survivor].region.clone();
        let (probes, journal) = (Arc::clone(&self.probes), self.journal.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            loop {
                tick.tick().await;
                for (shard, entity) in &targets {
                    let sent = journal.now();
                    let i = {
                        let mut all = probes.lock().unwrap_or_else(PoisonError::into_inner);
                        let list = all.entry(shard.clone()).or_default();
                        list.push(Probe {
                            sent,
                            answered: None,
                        });
                        list.len() - 1
                    };
                    let (r, probes, journal, shard) = (
                        region.entity_ref(entity),
                        Arc::clone(&probes),
                        journal.clone(),
                        shard.clone(),
                    );
                    tokio::spawn(async move {
                        if r.ask(CounterMsg::Probe, Duration::from_secs(90))
                            .await
                            .is_ok()
                        {
                            let at = journal.now();
                            let mut all = probes.lock().unwrap_or_else(PoisonError::into_inner);
                            if let Some(p) = all.get_mut(&shard).and_then(|l| l.get_mut(i)) {
                                p.answered = Some(at);
                            }
                        }
                    });
                }
            }
        })
    }

    /// Every node sends `rate` messages a second to the counters, in turn.
    fn start_load(&self) -> anyhow::Result<()> {
        for n in &self.nodes {
            let rt = n.runtime.as_ref().context("a node is not running")?;
            let (region, sent, entities) = (
                n.region.clone(),
                Arc::clone(&self.sent),
                self.options.entities.max(1),
            );
            let per_tick = (self.options.rate / 10).max(1);
            let mut next = u32::try_from(n.ix).unwrap_or(0) * (entities / 3);
            rt.spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(100));
                loop {
                    tick.tick().await;
                    for _ in 0..per_tick {
                        region
                            .entity_ref(&format!("c{next}"))
                            .tell(CounterMsg::Add(1));
                        next = (next + 1) % entities;
                    }
                    sent.fetch_add(u64::from(per_tick), Ordering::Relaxed);
                }
            });
        }
        Ok(())
    }

    /// Leases the backend holds for `owner`.
    async fn leases_of(&self, owner: &OwnerId) -> anyhow::Result<usize> {
        let records = self.nodes[self.survivor]
            .lease
            .list()
            .await
            .map_err(anyhow::Error::msg)
            .context("cannot list the leases")?;
        Ok(records
            .iter()
            .filter(|r| r.owner == owner.as_str() && r.expires_in.is_none_or(|d| !d.is_zero()))
            .count())
    }

    /// The figures of a step over `window`: shards that moved and how long requests to them
    /// waited.
    fn figures(&self, window: (Duration, Duration)) -> StepFigures {
        let runs = check::shard_runs(&self.journal.entries(), &self.crashed);
        let moved: BTreeSet<&String> = runs
            .iter()
            .filter(|(_, rs)| {
                rs.windows(2).any(|w| {
                    w[1].node != w[0].node && w[1].from >= window.0 && w[1].from < window.1
                })
            })
            .map(|(s, _)| s)
            .collect();
        let probes = self.probes.lock().unwrap_or_else(PoisonError::into_inner);
        let mut figures = StepFigures {
            moved: moved.len(),
            ..StepFigures::default()
        };
        let mut back = Some(window.0);
        for (shard, ps) in probes.iter() {
            let w = check::waits(ps, window, LATE, window.1);
            if w.unanswered {
                back = None;
            } else if let (Some(b), Some(at)) = (back, w.back_at) {
                back = Some(b.max(at));
            }
            if moved.contains(shard) {
                figures.unavailable.push(w.longest);
            } else {
                figures.others_worst = figures.others_worst.max(w.longest);
            }
        }
        figures.all_serving_after = back.map(|b| b.saturating_sub(window.0));
        figures
    }

    fn print_step(&self, title: &str, window: (Duration, Duration), figures: &StepFigures) {
        let entries = self.journal.entries();
        let runs = check::shard_runs(&entries, &self.crashed);
        let lines = timeline::lines(&entries, &runs, window, self.survivor, &self.names);
        (self.say)(&format!("\n{title} — what happened:"));
        (self.say)(timeline::render(&lines).trim_end());
        let u = &figures.unavailable;
        (self.say)(&format!(
            "  unavailability — the longest a request waited, from probes every 0.2 s (the truth may be up to 0.2 s longer): {} moved, \
             p50 {:.2} s · p90 {:.2} s · max {:.2} s; the {} others: at most {:.2} s",
            match figures.moved {
                1 => "1 shard".to_owned(),
                n => format!("{n} shards"),
            },
            check::quantile(u, 0.5).as_secs_f64(),
            check::quantile(u, 0.9).as_secs_f64(),
            check::quantile(u, 1.0).as_secs_f64(),
            self.options.shards as usize - figures.moved.min(self.options.shards as usize),
            figures.others_worst.as_secs_f64(),
        ));
    }

    /// Crashes node `ix`: its lease calls stop, its sockets close, its threads stop.
    /// Crashes node `ix`: from now on nothing it does reaches the lease backend, its sockets
    /// close and its threads stop. Its "after the crash" starts once its threads have stopped:
    /// a task in the middle of a step when the crash comes may still finish that step (as a
    /// process's last instructions before `kill -9` do), and that is not activity after it.
    async fn crash(&mut self, ix: NodeIx) {
        let node = &mut self.nodes[ix];
        node.lease.crash();
        if let Some(remote) = node.system.remote_node() {
            remote.shutdown();
        }
        if let Some(rt) = node.runtime.take() {
            let stopped = tokio::task::spawn_blocking(move || {
                rt.shutdown_timeout(Duration::from_secs(5));
            });
            if stopped.await.is_err() {
                tracing::warn!("the crashed node's runtime did not stop cleanly");
            }
        }
        node.lease.confirm_dead();
        self.crashed.insert(ix, self.journal.now());
    }
}

/// Runs the demo; `say` prints a line. The report's checks tell whether Flotilla kept its
/// promises; an error means the demo itself could not run (or a step never finished).
pub async fn run(options: DemoOptions, say: &(dyn Fn(&str) + Sync)) -> anyhow::Result<DemoReport> {
    anyhow::ensure!(options.shards >= 1, "the demo needs at least one shard");
    anyhow::ensure!(options.entities >= 1, "the demo needs at least one entity");
    let journal = Journal::new();
    // A prefix of this run's own: leases of an earlier run that crashed cannot get in the way.
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let etcd_prefix = format!("/flotilla/demo-{run_id:x}/leases/");
    let config = node_config(&options);
    let shared_memory: Arc<dyn LeaseBackend> = Arc::new(MemoryBackend::new());
    let backend_for = async |options: &DemoOptions| -> anyhow::Result<Arc<dyn LeaseBackend>> {
        Ok(match &options.backend {
            DemoBackend::Memory => Arc::clone(&shared_memory),
            DemoBackend::Etcd(endpoints) => {
                crate::leases::connect(crate::leases::BackendChoice::Etcd(
                    flotilla_lease_etcd::EtcdSettings {
                        endpoints: endpoints.clone(),
                        prefix: etcd_prefix.clone(),
                        ..flotilla_lease_etcd::EtcdSettings::default()
                    },
                ))
                .await?
            }
        })
    };
    say(&format!(
        "Flotilla demo: 3 nodes on 127.0.0.1, {} counter entities in {} shards, each shard guarded by a lease ({}).",
        options.entities,
        options.shards,
        match &options.backend {
            DemoBackend::Memory => "in-memory lease backend, shared by the nodes".to_owned(),
            DemoBackend::Etcd(e) => format!("etcd at {}", e.join(", ")),
        }
    ));
    say(
        "The nodes run in this process, each with its own runtime, threads and TCP port; they talk over TCP.",
    );
    say(&format!(
        "Settings: {}; lease heartbeat-timeout {} s, heartbeat-interval {:.1} s.",
        if options.fast {
            "fast failure detection (--fast)"
        } else {
            "defaults"
        },
        config.lease.heartbeat_timeout.as_secs(),
        config.lease.heartbeat_interval.as_secs_f64()
    ));
    let mut nodes = Vec::new();
    for ix in 0..3 {
        let seed = nodes.first().map(|n: &DemoNode| n.address().clone());
        let backend = backend_for(&options).await?;
        nodes.push(start_node(ix, config.clone(), backend, &journal, seed).await?);
    }
    let mut names = Names::default();
    for n in &nodes {
        names.nodes.push(n.name.clone());
        names
            .by_address
            .insert(n.address().to_string(), n.name.clone());
    }
    // node-1 (the oldest, which hosts the shard coordinator) leaves gracefully; of the other
    // two, the one with the higher address crashes: with two members left, keep-majority keeps
    // the side with the lowest address.
    let graceful = 0;
    let (survivor, victim) = if nodes[1].address() < nodes[2].address() {
        (1, 2)
    } else {
        (2, 1)
    };
    let mut demo = Demo {
        options: options.clone(),
        journal: journal.clone(),
        nodes,
        names,
        crashed: BTreeMap::new(),
        probes: Arc::default(),
        sent: Arc::default(),
        survivor,
        targets: probe_targets(options.entities, options.shards).len(),
        say,
        progress_at: Duration::ZERO,
    };
    let mut management_error = None;
    for ix in 0..3 {
        let port = if ix == survivor {
            options.management_port
        } else {
            0
        };
        if let Err(e) = start_management(&mut demo.nodes[ix], port).await {
            management_error = Some(e);
        }
    }
    for n in &demo.nodes {
        say(&format!(
            "  {:<7} {}{}",
            n.name,
            n.cluster.self_node(),
            n.management
                .as_ref()
                .map_or_else(String::new, |m| format!("  management {}", m.url()))
        ));
    }
    match (&demo.nodes[survivor].management, management_error) {
        (Some(m), _) => say(&format!(
            "Dashboard (live while the demo runs): {}/   API: {}/cluster/members, /cluster/shards, /leases, /metrics",
            m.url(),
            m.url()
        )),
        (None, Some(e)) => say(&format!("The dashboard is not available: {e:#}")),
        (None, None) => {}
    }
    say(&format!(
        "Plan: {} leaves gracefully (it is the oldest member and hosts the shard coordinator); then {} crashes and {} carries on.",
        demo.names.node(graceful),
        demo.names.node(victim),
        demo.names.node(survivor)
    ));

    // The cluster forms, the regions register, every entity starts.
    say(&format!("\n{} ▶ forming the cluster", demo.t()));
    demo.wait_until(
        "3 members up",
        Duration::from_secs(60),
        async |d: &Demo<'_>| {
            d.nodes.iter().all(|n| {
                let s = n.cluster.state();
                s.members.len() == 3 && s.members.iter().all(|m| m.status == MemberStatus::Up)
            })
        },
    )
    .await?;
    demo.wait_until(
        "regions registered",
        Duration::from_secs(60),
        async |d: &Demo<'_>| {
            for n in &d.nodes {
                if !n.region.state().await.registered {
                    return false;
                }
            }
            true
        },
    )
    .await?;
    say(&format!(
        "{} ▶ cluster up; starting {} entities",
        demo.t(),
        options.entities
    ));
    for i in 0..options.entities {
        let n = &demo.nodes[i as usize % 3];
        n.region
            .entity_ref(&format!("c{i}"))
            .tell(CounterMsg::Add(0));
    }
    let total = options.entities as usize;
    demo.wait_until(
        "every entity running",
        Duration::from_secs(90),
        async |d: &Demo<'_>| {
            let mut running = 0;
            for n in &d.nodes {
                running += n
                    .region
                    .state()
                    .await
                    .shards
                    .values()
                    .map(Vec::len)
                    .sum::<usize>();
            }
            running >= total
        },
    )
    .await?;
    let probing = demo.start_probes();
    demo.start_load()?;
    say(&format!(
        "{} ▶ every entity runs; load: {} messages/s from each node; probing every shard every 0.2 s",
        demo.t(),
        options.rate
    ));
    let steady = options.steady;
    demo.wait_until(
        "every shard answering",
        Duration::from_secs(30),
        async |d: &Demo<'_>| d.all_answering(),
    )
    .await?;
    demo.steady(steady).await;
    demo.progress_at = Duration::ZERO;
    demo.progress("before the first step").await;

    // Step 1: a graceful shutdown.
    let g = demo.names.node(graceful).to_owned();
    let step1 = demo.journal.now();
    say(&format!(
        "\n{} ▶ step 1: {g} shuts down gracefully (coordinated shutdown: hand off its shards, release their leases and wait for every release, leave the cluster)",
        demo.t()
    ));
    let held_before = demo.leases_of(&demo.nodes[graceful].owner).await?;
    demo.journal.note(
        Some(graceful),
        format!("begins coordinated shutdown, holding {held_before} shard leases"),
    );
    let system = demo.nodes[graceful].system.clone();
    let outcome = tokio::time::timeout(Duration::from_secs(120), system.terminate())
        .await
        .context("the graceful shutdown did not finish within 120 s")?;
    let shutdown_took = demo.journal.now() - step1;
    let left_behind = demo.leases_of(&demo.nodes[graceful].owner).await?;
    demo.journal.note(
        Some(graceful),
        format!(
            "finished its shutdown in {:.2} s ({}); {left_behind} of its leases left in the backend",
            shutdown_took.as_secs_f64(),
            outcome.reason
        ),
    );
    let timed_out = outcome.report.timed_out_tasks();
    let phases: Vec<String> = outcome
        .report
        .phases
        .iter()
        .filter(|p| !p.completed.is_empty() || !p.timed_out.is_empty() || !p.failed.is_empty())
        .map(|p| format!("{} {:.2} s", p.phase.as_str(), p.elapsed.as_secs_f64()))
        .collect();
    demo.journal.note(
        Some(graceful),
        format!("its shutdown phases: {}", phases.join(" · ")),
    );
    if let Some(rt) = demo.nodes[graceful].runtime.take() {
        rt.shutdown_background();
    }
    let sg = survivor;
    demo.wait_until(
        &format!("{g} removed and every shard answering"),
        Duration::from_secs(120),
        async |d: &Demo<'_>| d.nodes[sg].cluster.state().members.len() == 2 && d.all_answering(),
    )
    .await?;
    demo.steady(steady).await;
    let window1 = (step1, demo.journal.now());
    let figures1 = demo.figures(window1);
    demo.print_step(
        &format!("Step 1 ({g} shuts down gracefully)"),
        window1,
        &figures1,
    );

    // Step 2: a crash.
    let v = demo.names.node(victim).to_owned();
    let step2 = demo.journal.now();
    say(&format!(
        "\n{} ▶ step 2: {v} crashes (no goodbye: its sockets close, its threads stop, nothing is released)",
        demo.t()
    ));
    let victim_held = demo.leases_of(&demo.nodes[victim].owner).await?;
    demo.journal.note(
        Some(victim),
        format!("crashes, holding {victim_held} shard leases"),
    );
    demo.crash(victim).await;
    demo.wait_until(
        &format!("{v} removed and every shard answering again"),
        Duration::from_secs(if options.fast { 60 } else { 120 }),
        async |d: &Demo<'_>| d.nodes[sg].cluster.state().members.len() == 1 && d.all_answering(),
    )
    .await?;
    demo.steady(steady).await;
    let window2 = (step2, demo.journal.now());
    let figures2 = demo.figures(window2);
    demo.print_step(&format!("Step 2 ({v} crashes)"), window2, &figures2);
    probing.abort();

    // The checks.
    let entries = demo.journal.entries();
    let runs = check::shard_runs(&entries, &demo.crashed);
    let nodes_named = demo.names.nodes.clone();
    let mut checks = Vec::new();
    checks.push(Check {
        claim: format!("{g} left no lease behind: every release was awaited before it stopped"),
        passed: left_behind == 0 && timed_out.is_empty(),
        detail: if timed_out.is_empty() {
            format!(
                "held {held_before} leases; {left_behind} left after its shutdown ({:.2} s)",
                shutdown_took.as_secs_f64()
            )
        } else {
            format!("{left_behind} left; shutdown tasks that overran their phase: {timed_out:?}")
        },
    });
    let overlaps = check::shards_on_two_nodes(&entries, &demo.crashed, &nodes_named, 5);
    let lives = entries
        .iter()
        .filter(|e| matches!(e.fact, Fact::Entity { started: true, .. }))
        .count();
    checks.push(Check {
        claim: "no shard ran on two nodes at once".into(),
        passed: overlaps.is_empty(),
        detail: if overlaps.is_empty() {
            format!(
                "{} shard runs and {lives} entity starts checked",
                runs.values().map(Vec::len).sum::<usize>()
            )
        } else {
            overlaps.join("; ")
        },
    });
    let stale = check::tokens_that_did_not_grow(&runs, &nodes_named, 5);
    let moves: usize = runs
        .values()
        .map(|rs| rs.windows(2).filter(|w| w[0].node != w[1].node).count())
        .sum();
    checks.push(Check {
        claim: "every shard that moved holds a newer fencing token than before".into(),
        passed: stale.is_empty(),
        detail: if stale.is_empty() {
            format!("{moves} moves checked")
        } else {
            stale.join("; ")
        },
    });
    let after = check::activity_after_crash(&entries, &demo.crashed, &nodes_named);
    let calls_after = demo.nodes[victim].lease.calls_after_crash();
    checks.push(Check {
        claim: format!("{v} did nothing after its crash"),
        passed: after.is_empty() && calls_after == 0,
        detail: if after.is_empty() && calls_after == 0 {
            "no entity started or stopped and no lease call was made after it".into()
        } else {
            format!(
                "{} facts, {calls_after} lease calls after the crash; {}",
                after.len(),
                after.first().map_or("", String::as_str)
            )
        },
    });
    let survivor_name = demo.names.node(survivor).to_owned();
    let state = demo.nodes[survivor].region.state().await;
    let hosted = state.shards.len();
    let probed = probe_targets(options.entities, options.shards).len();
    let (not_answering, _) = demo.not_serving(Duration::from_secs(1));
    checks.push(Check {
        claim: "every shard serves again".into(),
        passed: not_answering == 0 && hosted == probed,
        detail: format!(
            "{hosted} of {probed} shards on {survivor_name}; {not_answering} not answering"
        ),
    });
    let zombies = flotilla_sharding::zombie_leases(
        &demo.nodes[survivor].cluster,
        demo.nodes[survivor].lease.as_ref(),
    )
    .await
    .map_err(anyhow::Error::msg)
    .context("cannot list the leases")?;
    let held_by_survivor = demo.leases_of(&demo.nodes[survivor].owner).await?;
    checks.push(Check {
        claim: "no lease is owned by a node that is gone".into(),
        passed: zombies.is_empty(),
        detail: if zombies.is_empty() {
            format!("{held_by_survivor} leases, all {survivor_name}'s")
        } else {
            format!(
                "{} zombie leases, e.g. {} owned by {}",
                zombies.len(),
                zombies[0].name,
                zombies[0].owner
            )
        },
    });

    let report = DemoReport {
        checks,
        graceful: figures1,
        crash: figures2,
        messages: demo.sent.load(Ordering::Relaxed),
    };
    say("\nChecks:");
    for c in &report.checks {
        say(&format!(
            "  {} {} — {}",
            if c.passed { "✓" } else { "✗" },
            c.claim,
            c.detail
        ));
    }
    let crash = &report.crash;
    say(&format!(
        "\nFigures: graceful shutdown — {} shards moved, each unavailable at most {:.2} s; crash — {} shards moved, \
         every shard served again {:.1} s after the crash (the crashed node's leases had to expire first: heartbeat-timeout {} s).",
        report.graceful.moved,
        check::quantile(&report.graceful.unavailable, 1.0).as_secs_f64(),
        crash.moved,
        crash.all_serving_after.unwrap_or_default().as_secs_f64(),
        config.lease.heartbeat_timeout.as_secs()
    ));
    if options.hold
        && let Some(m) = &demo.nodes[survivor].management
    {
        say(&format!(
            "\nHolding: {survivor_name} keeps running with its dashboard at {}/ — Ctrl-C or SIGTERM ends the demo.",
            m.url()
        ));
        wait_for_signal().await;
    }
    // The last node leaves, and takes its leases with it.
    let system = demo.nodes[survivor].system.clone();
    let _ = tokio::time::timeout(Duration::from_secs(60), system.terminate()).await;
    let remaining = demo
        .leases_of(&demo.nodes[survivor].owner)
        .await
        .unwrap_or(usize::MAX);
    say(&format!(
        "{} ▶ {survivor_name} shut down: released its leases ({} left).",
        demo.t(),
        remaining
    ));
    for n in &mut demo.nodes {
        if let Some(m) = n.management.take() {
            m.stop();
        }
        if let Some(rt) = n.runtime.take() {
            rt.shutdown_background();
        }
    }
    let mut report = report;
    report.checks.push(Check {
        claim: format!("{survivor_name} released every lease when it shut down"),
        passed: remaining == 0,
        detail: format!("{remaining} left"),
    });
    Ok(report)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shard_gets_a_probe_target_of_its_own() {
        let targets = probe_targets(10_000, 100);
        assert_eq!(targets.len(), 100);
        for (shard, entity) in &targets {
            assert_eq!(&flotilla_proto::sharding::shard_of(entity, 100).0, shard);
        }
    }
}
