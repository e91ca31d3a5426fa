//! Sharding across `flotilla node` processes on 127.0.0.1 with shard leases in a real etcd:
//! three nodes, 100 shards, 10 000 entities under traffic. One node shuts down gracefully:
//! when its process has exited no lease in etcd is owned by it, and every entity it ran runs
//! again on another node. Then, in a fresh cluster, one node is killed with SIGKILL: its
//! entities run elsewhere, but never before its leases could have expired. Throughout, an external checker reads every entity start and stop
//! the processes print: no entity ever ran on two nodes at once, and each shard's fencing
//! tokens never go back and strictly increase whenever the shard changes node.
//!
//! Every process is started here and ended here, by PID. Every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use flotilla::lease::LeaseBackend;
use flotilla::lease_etcd::testing::EtcdServer;
use flotilla::lease_etcd::{EtcdBackend, EtcdSettings};
use flotilla::node::NodeProcess;

const LIMIT: Duration = Duration::from_secs(90);
const ENTITIES: u32 = 10_000;

fn start(seed: Option<&str>, etcd: &str, config: &std::path::Path) -> NodeProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    cmd.args(["node", "--system", "shards", "--port", "0", "--fast"]);
    cmd.arg("--config").arg(config);
    cmd.args([
        "--sharded-counters",
        &ENTITIES.to_string(),
        "--shards",
        "100",
    ]);
    cmd.args(["--lease-etcd", etcd]);
    if let Some(seed) = seed {
        cmd.args(["--seed", seed]);
    }
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

/// Three nodes (etcd, 100 shards, 10 000 entities) with leases that expire 6 s after their last
/// renewal, formed and running every entity. Nobody is Up (and no traffic starts) before all
/// three have joined, so shards are allocated over all three from the start.
fn three_nodes(
    runtime: &tokio::runtime::Runtime,
) -> (EtcdServer, tempfile::TempDir, Vec<NodeProcess>) {
    let etcd = runtime
        .block_on(EtcdServer::start())
        .unwrap_or_else(|e| panic!("{e}"));
    let endpoint = etcd.endpoint();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "[cluster]\nmin-nr-of-members = 3\n[lease]\nheartbeat-timeout = \"6s\"\nheartbeat-interval = \"1s\"\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut nodes = vec![start(None, &endpoint, &config)];
    let seed = nodes[0].address().to_owned();
    nodes.push(start(Some(&seed), &endpoint, &config));
    nodes.push(start(Some(&seed), &endpoint, &config));
    wait_until("every entity runs", &mut nodes, |all| {
        all.len() == ENTITIES as usize
    });
    (etcd, dir, nodes)
}

/// Both scenarios in one test, one after the other: six debug-build node processes at once are
/// too many for a two-core machine.
#[test]
fn graceful_shutdown_then_kill_9() {
    a_node_that_shuts_down_leaves_no_lease_and_its_entities_run_elsewhere_never_twice();
    a_killed_nodes_entities_run_elsewhere_only_once_its_leases_have_expired();
}

fn a_killed_nodes_entities_run_elsewhere_only_once_its_leases_have_expired() {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let (_etcd, _dir, mut nodes) = three_nodes(&runtime);
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
    for node in &mut nodes[..2] {
        node.terminate().unwrap_or_else(|e| panic!("{e:#}"));
    }
    for node in &mut nodes[..2] {
        let status = node.wait_exit(LIMIT).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(status.success(), "{status}");
    }
}

fn a_node_that_shuts_down_leaves_no_lease_and_its_entities_run_elsewhere_never_twice() {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let (etcd, _dir, mut nodes) = three_nodes(&runtime);
    let endpoint = etcd.endpoint();
    let on_leaver = running_on(&mut nodes, 2);

    let leaver = nodes[2].address().to_owned();
    let started = Instant::now();
    nodes[2].terminate().unwrap_or_else(|e| panic!("{e:#}"));
    let status = nodes[2]
        .wait_exit(LIMIT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(status.success(), "{status}");
    let exited = started.elapsed();

    // When the process has exited, etcd holds no lease of it.
    let backend = runtime
        .block_on(EtcdBackend::connect(EtcdSettings::new([endpoint])))
        .unwrap_or_else(|e| panic!("{e}"));
    let records = runtime
        .block_on(backend.list())
        .unwrap_or_else(|e| panic!("{e}"));
    let held: Vec<&str> = records
        .iter()
        .filter(|r| r.owner == leaver)
        .map(|r| r.name.as_str())
        .collect();
    assert!(held.is_empty(), "the exited node still owns {held:?}");
    assert!(
        records.len() >= 60,
        "shards in use hold leases: {}",
        records.len()
    );

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
    for node in &mut nodes[..2] {
        node.terminate().unwrap_or_else(|e| panic!("{e:#}"));
    }
    for node in &mut nodes[..2] {
        let status = node.wait_exit(LIMIT).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(status.success(), "{status}");
    }
    check(&stays(&mut nodes));
}
