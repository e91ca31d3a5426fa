//! A cluster of `flotilla node` processes on 127.0.0.1: three nodes join, one is killed with
//! SIGKILL and the survivors remove and quarantine it; the rest leave gracefully on SIGTERM.
//!
//! Every process is started here and ended here, by PID. Every wait is bounded.

use std::time::{Duration, Instant};

use flotilla_cli::node::NodeProcess;

const LIMIT: Duration = Duration::from_secs(60);

fn start(seed: Option<&str>) -> NodeProcess {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_flotilla"));
    NodeProcess::start_fast(binary, "procs", seed, &[], LIMIT).unwrap_or_else(|e| panic!("{e:#}"))
}

fn expect(node: &mut NodeProcess, line: &str) {
    if let Err(e) = node.wait_for(LIMIT, |l| l == line) {
        panic!("waiting for {line:?}: {e:#}");
    }
}

#[test]
fn a_killed_node_is_removed_and_quarantined_and_the_rest_leave_gracefully() {
    let mut nodes = vec![start(None)];
    let seed = nodes[0].address().to_owned();
    nodes.push(start(Some(&seed)));
    nodes.push(start(Some(&seed)));
    let uniques: Vec<String> = nodes.iter().map(|n| n.unique().to_owned()).collect();
    for node in &mut nodes {
        for u in &uniques {
            expect(node, &format!("event MemberUp {u}"));
        }
    }

    // kill -9: no goodbye, the connections just die.
    let victim = uniques[2].clone();
    nodes[2].kill().unwrap_or_else(|e| panic!("{e:#}"));
    let killed = Instant::now();
    for node in &mut nodes[..2] {
        expect(node, &format!("event UnreachableMember {victim}"));
        expect(node, &format!("event MemberDowned {victim}"));
        expect(node, &format!("event MemberRemoved {victim}"));
        expect(node, &format!("quarantined {victim}"));
    }
    eprintln!(
        "kill -9 to removal and quarantine on both survivors: {:?} (fast settings)",
        killed.elapsed()
    );

    // SIGTERM: coordinated shutdown leaves the cluster, the other node sees it go.
    let leaver = uniques[1].clone();
    nodes[1].terminate().unwrap_or_else(|e| panic!("{e:#}"));
    let status = nodes[1]
        .wait_exit(LIMIT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(status.success(), "{status}");
    if let Err(e) = nodes[1].wait_for(LIMIT, |l| l.starts_with("shutdown ")) {
        panic!("{e:#}");
    }
    expect(&mut nodes[0], &format!("event MemberLeft {leaver}"));
    expect(&mut nodes[0], &format!("event MemberRemoved {leaver}"));

    nodes[0].terminate().unwrap_or_else(|e| panic!("{e:#}"));
    let status = nodes[0]
        .wait_exit(LIMIT)
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(status.success(), "{status}");
}
