//! The real-process chaos harness in its bounded CI form: `flotilla chaos` with five node
//! processes, a real etcd and a seeded fault schedule (kill -9 and restart, SIGSTOP/SIGCONT,
//! graceful restarts, etcd paused, partitions) with the nodes' fast settings; it must end by
//! itself and find every promise kept. Seed 4 applies every kind of fault in its minute;
//! partitions are made in network namespaces where the machine allows it. Longer runs, with the default settings, are a documented
//! command (docs/reliability.md).

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_seeded_chaos_run_keeps_every_promise() {
    let seed = std::env::var("FLOTILLA_CHAOS_SEED").unwrap_or_else(|_| "4".into());
    let started = Instant::now();
    // Kept for a failure's post-mortem, beside the other tests' artifacts.
    let logs = format!(
        "{}/../../target/test-artifacts/chaos-seed-{seed}",
        env!("CARGO_MANIFEST_DIR")
    );
    let _ = std::fs::remove_dir_all(&logs);
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(["chaos", "--seed", &seed, "--fast", "--duration", "60"])
        .args(["--entities", "100", "--shards", "10", "--rate", "10"])
        .args(["--settle-secs", "90"])
        .args(["--logs", &logs])
        .output()
        .unwrap_or_else(|e| panic!("cannot run flotilla chaos: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "chaos seed {seed} failed (node logs in {logs}):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("Every promise held."), "{stdout}");
    for expected in [
        "fault: ",
        "over: ",
        "every shard serves again",
        "acknowledged additions",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(600),
        "the run is bounded"
    );
    eprintln!("{stdout}");
}
