//! The benchmark binary runs every subject and workload and reports every ratio. A smoke run with
//! tiny sizes: it checks that the benchmark works, not how fast anything is.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::process::Command;

/// Runs a benchmark binary to success and returns what it printed.
fn run(exe: &str, args: &[&str]) -> String {
    let out = Command::new(exe).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn a_tiny_run_reports_every_subject_in_both_flavours() {
    let stdout = run(
        env!("CARGO_BIN_EXE_flotilla-bench"),
        &[
            "--messages",
            "2000",
            "--asks",
            "200",
            "--spawns",
            "50",
            "--runs",
            "1",
        ],
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
    let stdout = run(
        env!("CARGO_BIN_EXE_flotilla-lease-bench"),
        &["--iterations", "5", "--ttl", "2s", "--takeovers", "1"],
    );
    for backend in ["memory", "etcd", "azure (Azurite)", "kubernetes"] {
        assert_eq!(
            stdout.matches(&format!("| {backend}")).count(),
            3,
            "{backend}: {stdout}"
        );
    }
}

#[test]
fn a_tiny_remoting_run_reports_every_subject_against_every_reference() {
    let stdout = run(
        env!("CARGO_BIN_EXE_flotilla-remote-bench"),
        &["--messages", "5000", "--rounds", "50", "--repeat", "1"],
    );
    for subject in [
        "raw tokio TCP (baseline)",
        "flotilla (TCP, insecure)",
        "flotilla (TCP, secret)",
        "flotilla (mutual TLS, secret)",
        "Erlang/OTP distribution",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {subject} |")))
            .unwrap_or_else(|| panic!("{subject}: {stdout}"));
        // Against raw TCP, the insecure subject and Erlang: throughput and p50 each.
        assert_eq!(row.matches('x').count(), 6, "six ratios: {row}");
        let flotilla = subject.starts_with("flotilla");
        assert_eq!(row.ends_with(" ms |"), flotilla, "first message: {row}");
    }
}
