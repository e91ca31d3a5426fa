//! One cluster node as a process, behind `flotilla node`: an actor system with remoting and the
//! cluster, joined through seed nodes, reporting what it sees as one line per fact on stdout.
//!
//! The lines are meant for people and for scripts (the multi-process tests and the failover
//! benchmark read them):
//!
//! ```text
//! listening flotilla://demo@127.0.0.1:2552#8391...   this node's unique address
//! event MemberUp flotilla://demo@127.0.0.1:2553#12...  every cluster event, with its member
//! event LeaderChanged flotilla://demo@127.0.0.1:2552   (or "none")
//! quarantined flotilla://demo@127.0.0.1:2554#77...    a removed member's incarnation is
//!                                                      quarantined by remoting
//! management http://127.0.0.1:8558                    the management endpoint (API, metrics,
//!                                                      dashboard), unless disabled
//! shutdown the node was downed by the cluster          coordinated shutdown finished, and why
//! ```
//!
//! SIGTERM or Ctrl-C runs coordinated shutdown: the node leaves the cluster gracefully first.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use flotilla_cluster::{Cluster, ClusterEvent};
use flotilla_core::{Address, FlotillaConfig};

/// How to run a node.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The actor system's name (every node of a cluster has the same).
    pub system: String,
    /// The host to listen on and be reached at.
    pub host: String,
    /// The port (0 picks a free one).
    pub port: u16,
    /// Seed nodes; none means this node forms a cluster by joining itself.
    pub seeds: Vec<Address>,
    /// A TOML configuration file.
    pub config: Option<PathBuf>,
    /// Use the fast timings of tests and demos (failures noticed within seconds) instead of
    /// the configured ones; everything else, the security settings first, stays as configured
    /// (see [`fast_remote`]).
    pub fast: bool,
    /// Run sharded counters too (see [`ShardedCounters`]).
    pub counters: Option<ShardedCounters>,
    /// The management endpoint's port, instead of `management.port` (0 picks a free one).
    pub management_port: Option<u16>,
    /// Azure Blob Storage for the node's leases, the counters' among them (see [`AzureLease`]).
    pub lease_azure: Option<AzureLease>,
    /// Run the durable `ledger` entity type and its workload too (see [`crate::ledger`]).
    pub ledger: Option<LedgerOptions>,
    /// Take fault-injection commands on stdin (see [`crate::chaos::control`]): for the chaos
    /// harness only.
    pub chaos_control: bool,
    /// Allow remoting without credentials (`remote.insecure = true`): anyone who can reach the
    /// port can join, quarantine or down nodes. For a trusted network or a test only.
    pub insecure: bool,
}

/// Azure Blob Storage for a node's leases (`--lease-azure`, `--lease-azure-file`): the
/// `[lease.azure]` settings of the configuration, with `[lease] backend = "azure"`. The connection
/// string is never an argument, which every user of the machine can read: it comes from the
/// configuration (`[lease.azure] connection-string`, or the environment variable
/// `FLOTILLA__LEASE__AZURE__CONNECTION_STRING`) or from a file.
#[derive(Debug, Clone, Default)]
pub struct AzureLease {
    /// A file holding the connection string, instead of the configuration's.
    pub connection_string_file: Option<PathBuf>,
}

/// The durable ledger entities on a node, with their leases and records in etcd.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// How many entities the workload reaches.
    pub entities: u32,
    /// How many shards.
    pub shards: u32,
    /// Additions this node asks for per second.
    pub rate: u32,
    /// The etcd that holds the shards' leases and the records.
    pub etcd: flotilla_lease_etcd::EtcdSettings,
}

/// A sharded demo entity type, `counter`, on the node: entities `c0` … `c<n-1>` get a message
/// from every node in turn (each entity about every 10 s, from each node), and every entity start and stop is
/// printed with its shard's fencing token and the wall-clock time, so that a checker outside
/// the processes can prove that no entity ran on two nodes at once:
///
/// ```text
/// entity-start c17 42 7 1764060000123456789   entity, shard, fencing token (- without a lease), ns
/// entity-stop c17 42 1764060001123456789
/// ```
#[derive(Debug, Clone)]
pub struct ShardedCounters {
    /// How many entities the traffic reaches.
    pub entities: u32,
    /// How many shards (`sharding.number-of-shards`).
    pub shards: u32,
    /// A lease backend: each shard then holds the lease `<system>-shard-counter-<shard>` there.
    /// Without one, the shards hold leases in the configured backend when `--lease-azure` names
    /// it ([`NodeOptions::lease_azure`]) or `sharding.use-lease` asks for them.
    pub lease: Option<crate::leases::BackendChoice>,
}

/// Loads the configuration the options name.
pub fn config(options: &NodeOptions) -> anyhow::Result<FlotillaConfig> {
    // FLOTILLA__SECTION__KEY environment variables override the file.
    let env = std::env::vars().filter(|(k, _)| k.starts_with("FLOTILLA__"));
    let mut config = match &options.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            FlotillaConfig::from_toml_and_env(&text, env).with_context(|| {
                format!(
                    "invalid configuration in {} (or the FLOTILLA__ environment)",
                    path.display()
                )
            })?
        }
        None => FlotillaConfig::from_toml_and_env("", env)
            .context("invalid configuration in the FLOTILLA__ environment variables")?,
    };
    if let Some(port) = options.management_port {
        config.management.port = port;
    }
    if let Some(azure) = &options.lease_azure {
        config.lease.backend = flotilla_core::LeaseBackendKind::Azure;
        if let Some(path) = &azure.connection_string_file {
            config.lease.azure.connection_string =
                crate::leases::read_secret_file("Azure connection string", path)?;
        }
        config
            .lease
            .validate()
            .context("invalid Azure lease settings")?;
    }
    if options.insecure {
        config.remote.insecure = true;
    }
    if options.fast {
        config.remote = fast_remote(config.remote);
        // Fast timings; how the node finds the cluster stays as configured.
        let configured = std::mem::replace(
            &mut config.cluster,
            flotilla_cluster::testing::fast_settings(),
        );
        config.cluster.seed_nodes = configured.seed_nodes;
        config.cluster.discovery = configured.discovery;
        config.cluster.roles = configured.roles;
        config.cluster.min_nr_of_members = configured.min_nr_of_members;
    }
    Ok(config)
}

/// The remoting settings of `--fast`: the fast timings of tests and demos
/// ([`flotilla_remote::testing::fast_settings`]) laid over the configured settings. Only the
/// timings change: the shared secret, mutual TLS and every other setting stay as configured, so
/// that `--fast` never turns security off (nor gives a node the secret the tests of one process
/// share, which another node process would not know).
pub fn fast_remote(configured: flotilla_core::RemoteSettings) -> flotilla_core::RemoteSettings {
    let fast = flotilla_remote::testing::fast_settings();
    flotilla_core::RemoteSettings {
        retry_gate_closed_for: fast.retry_gate_closed_for,
        handshake_timeout: fast.handshake_timeout,
        threads: fast.threads,
        watch_failure_detector: fast.watch_failure_detector,
        ..configured
    }
}

pub(crate) fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed stdout (the reader went away) must not stop the node.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Runs a node until coordinated shutdown completes (SIGTERM, Ctrl-C, or the cluster downing
/// or removing it). Must be called inside a tokio runtime. The node is started by
/// [`flotilla::Node::builder`], as an application's would be.
pub async fn run(options: NodeOptions) -> anyhow::Result<()> {
    let config = config(&options)?;
    let faults = options
        .chaos_control
        .then(flotilla_remote::FaultInjector::new);
    let sharding = config.sharding.clone();
    let mut builder = flotilla::Node::builder(&options.system)
        .config(config)
        .remote(&options.host, options.port)
        .seed_nodes(options.seeds.clone());
    if let Some(f) = &faults {
        let f = f.clone();
        builder = builder.system_builder(move |b| b.fault_injector(f));
    }
    // The backend the command line names (the ledger's leases are in its etcd, the one
    // `--lease-etcd` names).
    let choice = options
        .counters
        .as_ref()
        .and_then(|c| c.lease.clone())
        .or_else(|| {
            options
                .ledger
                .as_ref()
                .map(|l| crate::leases::BackendChoice::Etcd(l.etcd.clone()))
        });
    if let Some(choice) = choice {
        builder = builder.lease_backend(
            crate::leases::connect_for_node(choice)
                .await
                .context("cannot use the shards' lease backend")?,
        );
    }
    if let Some(c) = &options.counters {
        let leased = c.lease.is_some() || options.lease_azure.is_some();
        builder = builder.entity(counters(c, &sharding, leased));
    }
    if let Some(l) = &options.ledger {
        builder = builder.entity(ledger(l, &sharding).await?);
    }
    let node = builder.start().await.context("cannot start the node")?;
    let (system, cluster) = (node.system().clone(), node.cluster().clone());
    say(&format!("listening {}", cluster.self_node()));
    let mut events = cluster.subscribe().await;
    if let Some(f) = faults {
        crate::chaos::control::listen(f);
    }
    if let Some(url) = node.management_url() {
        say(&format!("management {url}"));
    }
    let mut traffic = Vec::new();
    if let Some(c) = &options.counters
        && let Some(region) = node.region::<CounterMsg>("counter")
    {
        traffic.push(counter_traffic(&cluster, region, c.entities));
    }
    if let Some(l) = &options.ledger
        && let Some(region) = node.region::<crate::ledger::LedgerMsg>(crate::ledger::TYPE_NAME)
    {
        let (c, l) = (cluster.clone(), l.clone());
        let seed = cluster.self_node().uid;
        traffic.push(tokio::spawn(async move {
            if c.when_up().await {
                crate::ledger::workload(region, l.entities, l.rate, seed).await;
            }
        }));
    }
    // The node has joined already: what happened before the subscription comes first, as
    // events.
    for event in events.initial_state().as_events() {
        say(&format!("event {}", describe(&event)));
    }
    let watcher = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            say(&format!("event {}", describe(&event)));
            if let ClusterEvent::MemberRemoved { member, .. } = &event {
                let quarantined = system.associations().await.iter().any(|a| {
                    a.remote == member.node.address && a.quarantined.contains(&member.node.uid)
                });
                if quarantined {
                    say(&format!("quarantined {}", member.node));
                }
            }
        }
    });
    let outcome = node.terminated().await;
    watcher.abort();
    for t in traffic {
        t.abort();
    }
    say(&format!("shutdown {}", outcome.reason));
    Ok(())
}

/// The demo counter entity (see [`ShardedCounters`]).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum CounterMsg {
    /// Add to the total.
    Add(u64),
}

impl flotilla_actor::RemoteMessage for CounterMsg {
    const MANIFEST: &'static str = "flotilla.demo.Counter";
}

struct Counter {
    entity: String,
    shard: String,
    token: String,
    total: u64,
}

pub(crate) fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

impl flotilla_actor::Actor for Counter {
    type Msg = CounterMsg;

    async fn pre_start(
        &mut self,
        _ctx: &mut flotilla_actor::Context<CounterMsg>,
    ) -> Result<(), flotilla_actor::ActorError> {
        say(&format!(
            "entity-start {} {} {} {}",
            self.entity,
            self.shard,
            self.token,
            nanos()
        ));
        Ok(())
    }

    async fn handle(
        &mut self,
        msg: CounterMsg,
        _ctx: &mut flotilla_actor::Context<CounterMsg>,
    ) -> Result<(), flotilla_actor::ActorError> {
        let CounterMsg::Add(n) = msg;
        self.total += n;
        Ok(())
    }

    async fn post_stop(&mut self, _ctx: &mut flotilla_actor::Context<CounterMsg>) {
        say(&format!(
            "entity-stop {} {} {}",
            self.entity,
            self.shard,
            nanos()
        ));
    }
}

/// The ledger entity type: its shards hold their leases in the node's backend (the etcd that
/// also keeps its records).
async fn ledger(
    l: &LedgerOptions,
    configured: &flotilla_core::ShardingSettings,
) -> anyhow::Result<flotilla_sharding::Entity<crate::ledger::Ledger>> {
    let records = crate::ledger::Records::connect(&l.etcd).await?;
    let settings = flotilla_core::ShardingSettings {
        number_of_shards: l.shards,
        use_lease: true,
        ..configured.clone()
    };
    Ok(crate::ledger::entity(records).settings(settings))
}

/// The counter entity type.
fn counters(
    c: &ShardedCounters,
    configured: &flotilla_core::ShardingSettings,
    leased: bool,
) -> flotilla_sharding::Entity<Counter> {
    let mut settings = configured.clone();
    settings.number_of_shards = c.shards;
    if leased {
        settings.use_lease = true;
    }
    flotilla_sharding::Entity::new("counter", |ctx| {
        let (entity, shard) = (ctx.entity_id().to_owned(), ctx.shard_id().to_owned());
        let token = ctx
            .fencing_token()
            .map_or_else(|| "-".to_owned(), |t| t.0.to_string());
        flotilla_actor::Props::new(move || Counter {
            entity: entity.clone(),
            shard: shard.clone(),
            token: token.clone(),
            total: 0,
        })
    })
    .settings(settings)
}

/// Messages to every counter in turn: each about every 10 s from each node.
fn counter_traffic(
    cluster: &Cluster,
    region: flotilla_sharding::ShardRegion<CounterMsg>,
    entities: u32,
) -> tokio::task::JoinHandle<()> {
    let (n, cluster) = (entities.max(1), cluster.clone());
    tokio::spawn(async move {
        if !cluster.when_up().await {
            return;
        }
        let mut next = 0u32;
        loop {
            for _ in 0..n.div_ceil(50) {
                region
                    .entity_ref(&format!("c{next}"))
                    .tell(CounterMsg::Add(1));
                next = (next + 1) % n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    })
}

fn describe(e: &ClusterEvent) -> String {
    format!("{} {}", e.kind(), subject(e))
}

/// Whom a cluster event is about: the member's unique address, or the new leader's address
/// ("none" when there is none).
pub(crate) fn subject(e: &ClusterEvent) -> String {
    match e {
        ClusterEvent::MemberJoined(m)
        | ClusterEvent::MemberWeaklyUp(m)
        | ClusterEvent::MemberUp(m)
        | ClusterEvent::MemberLeft(m)
        | ClusterEvent::MemberExited(m)
        | ClusterEvent::MemberDowned(m)
        | ClusterEvent::MemberRemoved { member: m, .. }
        | ClusterEvent::UnreachableMember(m)
        | ClusterEvent::ReachableMember(m) => m.node.to_string(),
        ClusterEvent::LeaderChanged(l) | ClusterEvent::RoleLeaderChanged { leader: l, .. } => l
            .as_ref()
            .map_or_else(|| "none".to_owned(), ToString::to_string),
    }
}

/// Gives a node process started by a test or benchmark this process's cluster secret
/// ([`flotilla_remote::testing::secret`]) in its environment (`FLOTILLA__REMOTE__SECRET`; never
/// on the command line), so that every node this process starts joins the others.
pub fn with_test_secret(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env(
        "FLOTILLA__REMOTE__SECRET",
        flotilla_remote::testing::secret(),
    )
}

/// A node process started by this one (tests, benchmarks): its output lines as they come, with
/// the instant each arrived. Dropping it kills the process if it still runs (only this child,
/// by its PID).
#[derive(Debug)]
pub struct NodeProcess {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<(std::time::Instant, String)>,
    seen: Vec<(std::time::Instant, String)>,
    unique: String,
}

impl NodeProcess {
    /// Starts `cmd` (a `node` command; its stdout is piped, stderr discarded) and waits, at
    /// most `limit`, for its `listening` line.
    pub fn spawn(cmd: std::process::Command, limit: std::time::Duration) -> anyhow::Result<Self> {
        Self::spawn_with_stderr(cmd, limit, std::process::Stdio::null())
    }

    /// As [`NodeProcess::spawn`], with the node's stderr (its log) going to `stderr`.
    pub fn spawn_with_stderr(
        mut cmd: std::process::Command,
        limit: std::time::Duration,
        stderr: std::process::Stdio,
    ) -> anyhow::Result<Self> {
        use std::io::BufRead as _;
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .spawn()
            .context("cannot start a node process")?;
        let stdout = child.stdout.take().context("the node has no stdout")?;
        let stdin = child.stdin.take();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send((std::time::Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        let mut node = Self {
            child,
            stdin,
            lines,
            seen: Vec::new(),
            unique: String::new(),
        };
        let (_, line) = node.wait_for(limit, |l| l.starts_with("listening "))?;
        node.unique = line["listening ".len()..].to_owned();
        Ok(node)
    }

    /// Starts `binary node` (the `flotilla` command) for system `system` on a free port with
    /// `--fast` settings and a management endpoint on a free port, joining `seed` (or forming a
    /// cluster), with `extra` arguments; waits at most `limit` for it to listen.
    pub fn start_fast(
        binary: &std::path::Path,
        system: &str,
        seed: Option<&str>,
        extra: &[&str],
        limit: std::time::Duration,
    ) -> anyhow::Result<Self> {
        let mut cmd = std::process::Command::new(binary);
        cmd.args(["node", "--system", system, "--port", "0", "--fast"]);
        with_test_secret(&mut cmd);
        cmd.args(["--management-port", "0"]);
        cmd.args(extra);
        if let Some(seed) = seed {
            cmd.args(["--seed", seed]);
        }
        Self::spawn(cmd, limit)
    }

    /// The node's unique address, as it printed it (`flotilla://…#uid`).
    pub fn unique(&self) -> &str {
        &self.unique
    }

    /// The node's address, without the incarnation.
    pub fn address(&self) -> &str {
        self.unique.split('#').next().unwrap_or_default()
    }

    /// The first line that satisfies `want` (also among those already read), with the instant
    /// it arrived; an error if none comes within `limit`.
    pub fn wait_for(
        &mut self,
        limit: std::time::Duration,
        want: impl Fn(&str) -> bool,
    ) -> anyhow::Result<(std::time::Instant, String)> {
        if let Some(hit) = self.seen.iter().find(|(_, l)| want(l)) {
            return Ok(hit.clone());
        }
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok((at, line)) = self.lines.recv_timeout(left) else {
                let printed: Vec<&str> = self.seen.iter().map(|(_, l)| l.as_str()).collect();
                anyhow::bail!(
                    "no expected line from node {} within {limit:?}; it printed:\n{}",
                    self.unique,
                    printed.join("\n")
                );
            };
            self.seen.push((at, line.clone()));
            if want(&line) {
                return Ok((at, line));
            }
        }
    }

    /// Every line printed so far (reading what has arrived, without waiting).
    pub fn lines(&mut self) -> &[(std::time::Instant, String)] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// Whether the process has exited.
    pub fn has_exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// The process id, while the process has not been reaped.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one line to the node's stdin (`--chaos-control` commands).
    pub fn send_line(&mut self, line: &str) -> anyhow::Result<()> {
        use std::io::Write as _;
        let stdin = self.stdin.as_mut().context("the node's stdin is closed")?;
        writeln!(stdin, "{line}").context("cannot write to the node's stdin")?;
        stdin.flush().context("cannot write to the node's stdin")?;
        Ok(())
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to the process, unless it has exited and been reaped.
    pub fn signal(&mut self, signal: nix::sys::signal::Signal) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.child.id()).context("a pid out of range")?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
            .with_context(|| format!("cannot send {signal} to {pid}"))?;
        Ok(())
    }

    /// Sends SIGTERM: the node leaves the cluster gracefully and exits. Does nothing to a
    /// process that has already exited and been reaped: its PID may belong to another by now.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let pid = self.child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("cannot run kill")?;
        anyhow::ensure!(status.success(), "kill -TERM {pid} failed: {status}");
        Ok(())
    }

    /// Sends SIGKILL and reaps the process: a crash, no goodbye.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        self.child.kill().context("kill -9")?;
        let _ = self.child.wait();
        Ok(())
    }

    /// Waits, at most `limit`, for the process to exit.
    pub fn wait_exit(
        &mut self,
        limit: std::time::Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "node {} did not exit within {limit:?}",
                self.unique
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // A stopped process dies of SIGKILL too; SIGCONT first does no harm.
            let _ = self.signal(nix::sys::signal::Signal::SIGCONT);
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(config: PathBuf, fast: bool) -> NodeOptions {
        NodeOptions {
            system: "fast".into(),
            host: "127.0.0.1".into(),
            port: 0,
            seeds: Vec::new(),
            config: Some(config),
            fast,
            counters: None,
            management_port: None,
            lease_azure: None,
            ledger: None,
            chaos_control: false,
            insecure: false,
        }
    }

    /// `--fast` changes timings only: the configured shared secret, mutual TLS, management
    /// token and TLS, and every other setting stay as configured.
    #[test]
    fn fast_keeps_the_configured_security_settings() {
        assert_eq!(
            fast_remote(flotilla_core::RemoteSettings::default()),
            flotilla_core::RemoteSettings {
                secret: None,
                ..flotilla_remote::testing::fast_settings()
            },
            "over the defaults, --fast gives the fast timings of tests (not the secret the \
             tests of one process share)"
        );
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            r#"
            [remote]
            secret = "a-shared-secret-of-the-cluster"
            outbound-message-queue-size = 100
            [remote.tls]
            certificate = "/etc/flotilla/node.crt"
            private-key = "/etc/flotilla/node.key"
            trusted-ca = "/etc/flotilla/ca.crt"
            [management]
            token = "a-management-token"
            [management.tls]
            certificate = "/etc/flotilla/management.crt"
            private-key = "/etc/flotilla/management.key"
            [cluster]
            roles = ["backend"]
            "#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let slow = config(&options(path.clone(), false)).unwrap_or_else(|e| panic!("{e:#}"));
        let fast = config(&options(path, true)).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(
            fast.remote.secret.as_deref(),
            Some("a-shared-secret-of-the-cluster")
        );
        assert!(fast.remote.tls.is_some());
        assert_eq!(fast.remote.tls, slow.remote.tls);
        assert_eq!(fast.remote.outbound_message_queue_size, 100);
        assert_eq!(fast.management, slow.management);
        assert_eq!(fast.management.token.as_deref(), Some("a-management-token"));
        assert!(fast.management.tls.is_some());
        assert_eq!(fast.cluster.roles, ["backend"]);
        // ... and the timings are the fast ones.
        let quick = flotilla_remote::testing::fast_settings();
        assert_eq!(fast.remote.handshake_timeout, quick.handshake_timeout);
        assert_ne!(slow.remote.handshake_timeout, quick.handshake_timeout);
        assert_eq!(
            fast.cluster.gossip_interval,
            flotilla_cluster::testing::fast_settings().gossip_interval
        );
    }

    /// `--lease-azure-file` reads the connection string from the file and chooses Azure.
    #[test]
    fn the_azure_connection_string_comes_from_a_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let (path, secret) = (dir.path().join("node.toml"), dir.path().join("azure"));
        std::fs::write(&path, "[lease.azure]\ncontainer = \"leases\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(&secret, "AccountName=acme;AccountKey=Zm9v\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let mut o = options(path, false);
        o.lease_azure = Some(AzureLease {
            connection_string_file: Some(secret),
        });
        let c = config(&o).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(c.lease.backend, flotilla_core::LeaseBackendKind::Azure);
        assert_eq!(
            c.lease.azure.connection_string,
            "AccountName=acme;AccountKey=Zm9v"
        );
        assert_eq!(c.lease.azure.container, "leases", "the rest as configured");
    }
}
