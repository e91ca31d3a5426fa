//! Sharding across `flotilla node` processes on 127.0.0.1 with shard leases in a real backend:
//! three nodes, 100 shards, 10 000 entities under traffic.
//!
//! - With etcd (chosen in the configuration file, `[lease] backend = "etcd"`): one node shuts down gracefully, and when its process has exited no lease is
//!   owned by it and every entity it ran runs again on another node; in a fresh cluster, one
//!   node is killed with SIGKILL, and its entities run elsewhere but never before its leases
//!   could have expired; in a fresh cluster, every node is restarted in turn at its own address
//!   (a rolling restart), each leaving no lease behind and getting shards back.
//! - With Azurite (Azure Blob Storage): the same graceful shutdown.
//! - With etcd down when a node starts: the node starts and joins all the same, runs nothing
//!   that needs a lease while etcd is down, and runs every entity once etcd answers.
//!
//! Throughout, an external checker reads every entity start and stop the processes print: no
//! entity ever ran on two nodes (two processes) at once, and each shard's fencing tokens never
//! go back and strictly increase whenever the shard changes process.
//!
//! Every process is started here and ended here, by PID. Every wait is bounded. The scenarios
//! run one at a time (a lock here, a nextest test group in `.config/nextest.toml`): more than
//! three debug-build node processes at once are too many for a two-core machine.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use flotilla::lease::LeaseBackend;
use flotilla::lease_azure::testing::AzuriteServer;
use flotilla::lease_azure::{AzureBackend, AzureSettings};
use flotilla::lease_etcd::testing::EtcdServer;
use flotilla::lease_etcd::{EtcdBackend, EtcdSettings};
use flotilla_cli::node::NodeProcess;

const LIMIT: Duration = Duration::from_secs(90);
const ENTITIES: u32 = 10_000;

/// Where the shards' leases live, and how to read them back.
struct Leases {
    /// The node's option that names the backend: `--lease-etcd <url>` or `--lease-azure-file
    /// <file holding the connection string>` (none when the configuration file names it).
    arg: Vec<String>,
    /// Lines appended to the nodes' configuration file, after its `[lease]` keys.
    config: String,
    backend: Arc<dyn LeaseBackend>,
    /// Keeps the server running.
    _server: Box<dyn std::any::Any>,
}

impl Leases {
    fn etcd(runtime: &tokio::runtime::Runtime) -> Self {
        let etcd = runtime
            .block_on(EtcdServer::start())
            .unwrap_or_else(|e| panic!("{e}"));
        let endpoint = etcd.endpoint();
        let backend = runtime
            .block_on(EtcdBackend::connect(EtcdSettings::new([endpoint.clone()])))
            .unwrap_or_else(|e| panic!("{e}"));
        Self {
            arg: vec!["--lease-etcd".into(), endpoint],
            config: String::new(),
            backend: Arc::new(backend),
            _server: Box::new(etcd),
        }
    }

    /// etcd, chosen and configured in the nodes' configuration file as an operator would
    /// (`[lease] backend = "etcd"`, `[lease.etcd]`), not by a command-line option.
    fn etcd_in_config(runtime: &tokio::runtime::Runtime) -> Self {
        let mut leases = Self::etcd(runtime);
        leases.config = format!(
            "backend = \"etcd\"\n[lease.etcd]\nendpoints = [\"{}\"]\n[sharding]\nuse-lease = true\n",
            leases.arg[1]
        );
        leases.arg.clear();
        leases
    }

    fn azurite(runtime: &tokio::runtime::Runtime) -> Self {
        let azurite = runtime
            .block_on(AzuriteServer::start())
            .unwrap_or_else(|e| panic!("{e}"));
        let connection_string = azurite.connection_string();
        let backend = runtime
            .block_on(AzureBackend::connect(AzureSettings {
                connection_string: connection_string.clone(),
                ..AzureSettings::default()
            }))
            .unwrap_or_else(|e| panic!("{e}"));
        // The connection string is a secret: in a file, never an argument.
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("azure-connection-string");
        std::fs::write(&file, connection_string).unwrap_or_else(|e| panic!("{e}"));
        Self {
            arg: vec!["--lease-azure-file".into(), file.display().to_string()],
            config: String::new(),
            backend: Arc::new(backend),
            _server: Box::new((azurite, dir)),
        }
    }

    /// The names of the leases `owner` holds now.
    fn owned_by(&self, runtime: &tokio::runtime::Runtime, owner: &str) -> (Vec<String>, usize) {
        let records = runtime
            .block_on(self.backend.list())
            .unwrap_or_else(|e| panic!("{e}"));
        let held = records
            .iter()
            .filter(|r| r.owner == owner)
            .map(|r| r.name.to_string())
            .collect();
        (held, records.len())
    }
}

fn start(seed: Option<&str>, port: u16, leases: &Leases, config: &std::path::Path) -> NodeProcess {
    start_with(seed, port, &leases.arg, config)
}

/// A node whose shards' leases are in the backend `lease_arg` names (see [`Leases::arg`]).
fn start_with(
    seed: Option<&str>,
    port: u16,
    lease_arg: &[String],
    config: &std::path::Path,
) -> NodeProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    cmd.args([
        "node",
        "--system",
        "shards",
        "--fast",
        "--management-port",
        "0",
    ]);
    cmd.args(["--port", &port.to_string()]);
    cmd.arg("--config").arg(config);
    cmd.args([
        "--sharded-counters",
        &ENTITIES.to_string(),
        "--shards",
        "100",
    ]);
    cmd.args(lease_arg);
    if let Some(seed) = seed {
        cmd.args(["--seed", seed]);
    }
    flotilla_cli::node::with_test_secret(&mut cmd);
    NodeProcess::spawn(cmd, LIMIT).unwrap_or_else(|e| panic!("{e:#}"))
}

/// One entity's stay on one node: from its start to its stop (or still running).
#[derive(Debug, Clone)]
struct Stay {
    node: usize,
    shard: String,
    token: u64,
    start: u128,
    stop: Option<u128>,
}

/// Every stay, per entity, from the lines of every node; stays on a killed node (node, wall
/// clock of the kill) end at the kill.
fn stays_with(nodes: &mut [NodeProcess], killed: &[(usize, u128)]) -> BTreeMap<String, Vec<Stay>> {
    let mut all = stays(nodes);
    for list in all.values_mut() {
        for s in list.iter_mut() {
            if let Some((_, at)) = killed.iter().find(|(n, _)| *n == s.node) {
                s.stop = Some(s.stop.unwrap_or(*at).min(*at));
            }
        }
    }
    all
}

fn wall() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Every stay, per entity, from the lines of every node.
fn stays(nodes: &mut [NodeProcess]) -> BTreeMap<String, Vec<Stay>> {
    let mut out: BTreeMap<String, Vec<Stay>> = BTreeMap::new();
    for (i, node) in nodes.iter_mut().enumerate() {
        for (_, line) in node.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["entity-start", entity, shard, token, at] => {
                    out.entry((*entity).to_owned()).or_default().push(Stay {
                        node: i,
                        shard: (*shard).to_owned(),
                        token: token.parse().unwrap_or_else(|_| panic!("no token: {line}")),
                        start: at.parse().unwrap_or_default(),
                        stop: None,
                    });
                }
                ["entity-stop", entity, _, at] => {
                    let at: u128 = at.parse().unwrap_or_default();
                    if let Some(stay) = out
                        .get_mut(*entity)
                        .and_then(|v| v.iter_mut().rev().find(|s| s.node == i && s.stop.is_none()))
                    {
                        stay.stop = Some(at);
                    }
                }
                _ => {}
            }
        }
    }
    for list in out.values_mut() {
        list.sort_by_key(|s| s.start);
    }
    out
}

/// The checker: no entity on two nodes at once; per shard, tokens never go back and rise
/// whenever the shard changes node.
fn check(all: &BTreeMap<String, Vec<Stay>>) {
    for (entity, list) in all {
        for (a, x) in list.iter().enumerate() {
            for y in &list[a + 1..] {
                if x.node == y.node {
                    continue;
                }
                let x_end = x.stop.unwrap_or(u128::MAX);
                let y_end = y.stop.unwrap_or(u128::MAX);
                assert!(
                    x_end <= y.start || y_end <= x.start,
                    "entity {entity} ran on nodes {} and {} at once: {x:?} {y:?}",
                    x.node,
                    y.node
                );
            }
        }
    }
    let mut by_shard: BTreeMap<&str, Vec<&Stay>> = BTreeMap::new();
    for s in all.values().flatten() {
        by_shard.entry(&s.shard).or_default().push(s);
    }
    for (shard, mut list) in by_shard {
        list.sort_by_key(|s| s.start);
        for w in list.windows(2) {
            assert!(
                w[1].token >= w[0].token,
                "shard {shard}: token went back from {} to {}",
                w[0].token,
                w[1].token
            );
            if w[1].node != w[0].node {
                assert!(
                    w[1].token > w[0].token,
                    "shard {shard} moved from node {} to {} with the same token {}",
                    w[0].node,
                    w[1].node,
                    w[1].token
                );
            }
        }
    }
}

fn wait_until(
    what: &str,
    nodes: &mut [NodeProcess],
    done: impl Fn(&BTreeMap<String, Vec<Stay>>) -> bool,
) {
    wait_until_killed(what, nodes, &[], done);
}

fn wait_until_killed(
    what: &str,
    nodes: &mut [NodeProcess],
    killed: &[(usize, u128)],
    done: impl Fn(&BTreeMap<String, Vec<Stay>>) -> bool,
) {
    let start = Instant::now();
    loop {
        let all = stays_with(nodes, killed);
        check(&all);
        if done(&all) {
            return;
        }
        assert!(
            start.elapsed() < LIMIT,
            "not within {LIMIT:?}: {what} ({} entities seen)",
            all.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The entities running on node `i` now (at least one).
fn running_on(nodes: &mut [NodeProcess], i: usize) -> BTreeSet<String> {
    let on: BTreeSet<String> = stays(nodes)
        .iter()
        .filter(|(_, v)| v.last().is_some_and(|s| s.node == i && s.stop.is_none()))
        .map(|(e, _)| e.clone())
        .collect();
    assert!(!on.is_empty(), "node {i} runs no entity");
    on
}

/// Three nodes (100 shards, 10 000 entities, leases in `leases`) with leases that expire 6 s
/// after their last renewal, formed and running every entity. Nobody is Up (and no traffic
/// starts) before all three have joined, so shards are allocated over all three from the start.
fn three_nodes(leases: &Leases) -> (tempfile::TempDir, Vec<NodeProcess>) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[cluster]\nmin-nr-of-members = 3\n[lease]\nheartbeat-timeout = \"6s\"\nheartbeat-interval = \"1s\"\n{}",
            leases.config
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut nodes = vec![start(None, 0, leases, &config)];
    let seed = nodes[0].address().to_owned();
    nodes.push(start(Some(&seed), 0, leases, &config));
    nodes.push(start(Some(&seed), 0, leases, &config));
    wait_until("every entity runs", &mut nodes, |all| {
        all.len() == ENTITIES as usize
    });
    (dir, nodes)
}

/// One scenario at a time (for `cargo test`, which runs a binary's tests on threads).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Ends the live nodes gracefully: each exits 0.
fn end(nodes: &mut [NodeProcess]) {
    for node in nodes.iter_mut() {
        node.terminate().unwrap_or_else(|e| panic!("{e:#}"));
    }
    for node in nodes.iter_mut() {
        let status = node.wait_exit(LIMIT).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(status.success(), "{status}");
    }
}

#[test]
fn with_etcd_a_node_that_shuts_down_leaves_no_lease_and_its_entities_run_elsewhere() {
    let _one = one_at_a_time();
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    // Here the backend is chosen in the configuration file, not on the command line.
    graceful_shutdown(&runtime, &Leases::etcd_in_config(&runtime));
}

#[test]
fn with_azurite_a_node_that_shuts_down_leaves_no_lease_and_its_entities_run_elsewhere() {
    let _one = one_at_a_time();
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    graceful_shutdown(&runtime, &Leases::azurite(&runtime));
}

#[test]
fn with_etcd_a_killed_nodes_entities_run_elsewhere_only_once_its_leases_have_expired() {
    let _one = one_at_a_time();
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let leases = Leases::etcd(&runtime);
    let (_dir, mut nodes) = three_nodes(&leases);
    let on_victim = running_on(&mut nodes, 2);
    // The victim renewed its leases at most a heartbeat interval ago; they expire 6 s after.
    let killed_at = wall();
    let killed = Instant::now();
    nodes[2].kill().unwrap_or_else(|e| panic!("{e:#}"));
    let dead = [(2usize, killed_at)];
    wait_until_killed(
        "the victim's entities run elsewhere",
        &mut nodes,
        &dead,
        |all| {
            on_victim.iter().all(|e| {
                all.get(e)
                    .and_then(|v| v.last())
                    .is_some_and(|s| s.node != 2 && s.stop.is_none())
            })
        },
    );
    let all = stays_with(&mut nodes, &dead);
    let first_restart = on_victim
        .iter()
        .filter_map(|e| all.get(e)?.iter().find(|s| s.node != 2).map(|s| s.start))
        .min()
        .unwrap_or(u128::MAX);
    let earliest_allowed = killed_at + Duration::from_secs(5).as_nanos();
    assert!(
        first_restart >= earliest_allowed,
        "an entity of the killed node ran elsewhere {} ms after the kill, before its lease could expire",
        (first_restart - killed_at) / 1_000_000
    );
    eprintln!(
        "kill -9 to the first of its entities elsewhere: {} ms; to all {} of them: {:?}",
        (first_restart - killed_at) / 1_000_000,
        on_victim.len(),
        killed.elapsed()
    );
    check(&all);
    end(&mut nodes[..2]);
}

/// One node of three gets SIGTERM: once its process has exited, the backend holds no lease of
/// it, and every entity it ran runs again on another node.
fn graceful_shutdown(runtime: &tokio::runtime::Runtime, leases: &Leases) {
    let (_dir, mut nodes) = three_nodes(leases);
    let on_leaver = running_on(&mut nodes, 2);

    let leaver = nodes[2].address().to_owned();
    let started = Instant::now();
    nodes[2].terminate().unwrap_or_else(|e| panic!("{e:#}"));
    let status = nodes[2]
        .wait_exit(LIMIT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(status.success(), "{status}");
    let exited = started.elapsed();

    // When the process has exited, the backend holds no lease of it.
    let (held, all) = leases.owned_by(runtime, &leaver);
    assert!(held.is_empty(), "the exited node still owns {held:?}");
    assert!(all >= 60, "shards in use hold leases: {all}");

    // Every entity it ran runs again on another node.
    wait_until("the leaver's entities run elsewhere", &mut nodes, |all| {
        on_leaver.iter().all(|e| {
            all.get(e)
                .and_then(|v| v.last())
                .is_some_and(|s| s.node != 2 && s.stop.is_none())
        })
    });
    eprintln!(
        "SIGTERM to exit: {exited:?}; to all {} of its entities running elsewhere: {:?}",
        on_leaver.len(),
        started.elapsed()
    );
    check(&stays(&mut nodes));
    end(&mut nodes[..2]);
    check(&stays(&mut nodes));
}

/// Every node in turn gets SIGTERM and, once it has exited (owning no lease), starts again at
/// its own address (a new incarnation, the same lease owner) and gets shards back by
/// rebalancing before the next one goes. Every entity runs throughout, never twice.
#[test]
fn with_etcd_a_rolling_restart_of_every_node_runs_every_entity_never_twice() {
    let _one = one_at_a_time();
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let leases = Leases::etcd(&runtime);
    let (dir, mut nodes) = three_nodes(&leases);
    let config = dir.path().join("node.toml");
    // The processes of the live nodes, by position in `nodes` (which keeps the exited ones,
    // so the checker still reads what they printed).
    let mut live = vec![0usize, 1, 2];
    let started = Instant::now();
    for turn in 0..3 {
        let old = live[turn];
        let address = nodes[old].address().to_owned();
        let port: u16 = address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {address}"));
        let step = Instant::now();
        nodes[old].terminate().unwrap_or_else(|e| panic!("{e:#}"));
        let status = nodes[old]
            .wait_exit(LIMIT)
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert!(status.success(), "{status}");
        let (held, _) = leases.owned_by(&runtime, &address);
        assert!(held.is_empty(), "{address} exited owning {held:?}");
        // Back at the same address, joining through a node that stayed.
        let seed = nodes[live[(turn + 1) % 3]].address().to_owned();
        nodes.push(start(Some(&seed), port, &leases, &config));
        let new = nodes.len() - 1;
        live[turn] = new;
        let dead: Vec<usize> = (0..nodes.len()).filter(|i| !live.contains(i)).collect();
        wait_until(
            "every entity runs on a live node, some on the restarted one",
            &mut nodes,
            |all| {
                all.len() == ENTITIES as usize
                    && all.values().all(|v| {
                        v.last()
                            .is_some_and(|s| s.stop.is_none() && !dead.contains(&s.node))
                    })
                    && all
                        .values()
                        .any(|v| v.last().is_some_and(|s| s.node == new && s.stop.is_none()))
            },
        );
        eprintln!(
            "rolling restart, node {turn}: SIGTERM to every entity running again, some on its new incarnation: {:?}",
            step.elapsed()
        );
    }
    eprintln!("rolling restart of three nodes: {:?}", started.elapsed());
    assert_eq!(live, [3, 4, 5]);
    end(&mut nodes[3..]);
    check(&stays(&mut nodes));
}

/// etcd is down when the node starts: the node starts all the same (it does not exit), is Up,
/// and starts no entity — none holds a lease; once etcd answers, the shards take their leases
/// and every entity runs.
#[test]
fn with_etcd_down_at_start_a_node_starts_and_runs_every_entity_once_etcd_answers() {
    let _one = one_at_a_time();
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let mut etcd = runtime
        .block_on(EtcdServer::start())
        .unwrap_or_else(|e| panic!("{e}"));
    etcd.kill();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "").unwrap_or_else(|e| panic!("{e}"));
    let arg = ["--lease-etcd".to_owned(), etcd.endpoint()];
    let mut nodes = vec![start_with(None, 0, &arg, &config)];
    let unique = nodes[0].unique().to_owned();
    nodes[0]
        .wait_for(LIMIT, |l| l == format!("event MemberUp {unique}"))
        .unwrap_or_else(|e| panic!("{e:#}"));
    // Traffic runs from Up on; a few retry intervals without etcd.
    std::thread::sleep(Duration::from_secs(4));
    assert!(!nodes[0].has_exited(), "the node exited without etcd");
    assert!(stays(&mut nodes).is_empty(), "entities ran without a lease");

    let down = Instant::now();
    runtime
        .block_on(etcd.restart())
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until("every entity runs once etcd answers", &mut nodes, |all| {
        all.len() == ENTITIES as usize
    });
    eprintln!(
        "etcd back: every entity of the node that started without it runs after {:?}",
        down.elapsed()
    );
    let backend = runtime
        .block_on(EtcdBackend::connect(EtcdSettings::new([etcd.endpoint()])))
        .unwrap_or_else(|e| panic!("{e}"));
    let records = runtime
        .block_on(backend.list())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(records.len(), 100, "every shard holds its lease");
    end(&mut nodes);
    let records = runtime
        .block_on(backend.list())
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(records.is_empty(), "left behind: {records:?}");
}
