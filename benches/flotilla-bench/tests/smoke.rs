//! The benchmark binary runs every subject and workload and reports every ratio. A smoke run with
//! tiny sizes: it checks that the benchmark works, not how fast anything is.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::process::Command;

#[test]
fn a_tiny_run_reports_every_subject_in_both_flavours() {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla-bench"))
        .args([
            "--messages",
            "2000",
            "--asks",
            "200",
            "--spawns",
            "50",
            "--runs",
            "1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for flavour in ["multi-thread", "current-thread"] {
        for workload in [
            "tell 1->1 throughput",
            "sequential ask round trips",
            "spawn + stop",
        ] {
            assert!(
                stdout.contains(&format!("## {workload}, {flavour}")),
                "{workload} {flavour}: {stdout}"
            );
        }
    }
    for subject in ["baseline", "flotilla", "actix", "ractor", "kameo"] {
        assert_eq!(
            stdout.matches(&format!("| {subject} |")).count(),
            6,
            "{subject}: {stdout}"
        );
    }
    assert_eq!(
        stdout.matches("flotilla throughput relative to: ").count(),
        6
    );
}

#[test]
fn a_tiny_lease_run_reports_every_backend() {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla-lease-bench"))
        .args(["--iterations", "5", "--ttl", "2s", "--takeovers", "1"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for backend in ["memory", "etcd", "azure (Azurite)", "kubernetes"] {
        assert_eq!(
            stdout.matches(&format!("| {backend}")).count(),
            3,
            "{backend}: {stdout}"
        );
    }
}
