//! `flotilla demo` as a user runs it: the three-node failover demo with its default settings,
//! and against a real etcd. Each run is bounded; the demo's own checks decide its exit status.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A demo run: its whole stdout, and its exit status.
struct Run {
    stdout: String,
    success: bool,
    /// The dashboard's endpoint was answering while the demo ran.
    dashboard_answered: bool,
}

/// Runs `flotilla demo <args>`, asking the dashboard's API for the members once it is printed;
/// fails the test past `limit`.
fn demo(args: &[&str], limit: Duration) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .arg("demo")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut stdout = String::new();
    let mut dashboard_answered = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(rest) = line.strip_prefix("Dashboard (live while the demo runs): ") {
                    let url = rest
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .trim_end_matches('/');
                    dashboard_answered = dashboard_lists_three_members(url);
                }
                stdout.push_str(&line);
                stdout.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the demo did not finish within {limit:?}; it printed:\n{stdout}");
            }
        }
    }
    let status = child.wait().unwrap();
    Run {
        stdout,
        success: status.success(),
        dashboard_answered,
    }
}

/// Whether the dashboard's API answers with the cluster's members (all three, soon after start).
fn dashboard_lists_three_members(url: &str) -> bool {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client =
            flotilla::management::client::Client::new(url, None, None, Duration::from_secs(5))
                .unwrap();
        let page = page_is_served(url).await;
        for _ in 0..50 {
            if let Ok(m) = client.members().await
                && m.members.len() == 3
            {
                return page;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    })
}

/// Whether the dashboard page itself is served.
async fn page_is_served(url: &str) -> bool {
    let Ok(addr) = url
        .trim_start_matches("http://")
        .parse::<std::net::SocketAddr>()
    else {
        return false;
    };
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut body = String::new();
    let _ = s.read_to_string(&mut body).await;
    body.starts_with("HTTP/1.1 200") && body.contains("<html")
}

fn assert_story(out: &str) {
    for expected in [
        "Flotilla demo: 3 nodes on 127.0.0.1, 10000 counter entities in 100 shards",
        "▶ step 1: node-1 shuts down gracefully",
        "Step 1 (node-1 shuts down gracefully) — what happened:",
        "node-1  begins coordinated shutdown, holding",
        "node-1  released",
        "acquired",
        "sees node-1 leaving",
        "sees node-1 removed from the cluster",
        "its shutdown phases:",
        "crashes, holding",
        "lost",
        "unreachable",
        "downed",
        // Gated, Idle or connecting when the removal quarantines it, depending on the gate.
        "→ Quarantined (uid ",
        "unavailability — the longest a request waited",
        "✓ node-1 left no lease behind",
        "✓ no shard ran on two nodes at once",
        "✓ every shard that moved holds a newer fencing token than before",
        "✓ every shard serves again",
        "✓ no lease is owned by a node that is gone",
        "Every check held.",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    assert!(!out.contains('✗'), "{out}");
    // Progress while waiting.
    assert!(out.contains(" … "), "{out}");
}

#[test]
fn the_demo_shows_a_graceful_shutdown_and_a_crash_and_its_checks_hold() {
    let run = demo(&["--management-port", "0"], Duration::from_secs(240));
    assert!(run.success, "{}", run.stdout);
    assert_story(&run.stdout);
    assert!(
        run.stdout
            .contains("Settings: defaults; lease heartbeat-timeout 15 s"),
        "{}",
        run.stdout
    );
    assert!(
        run.dashboard_answered,
        "the dashboard did not answer while the demo ran"
    );
}

#[test]
fn the_demo_runs_against_a_real_etcd() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let etcd = runtime
        .block_on(flotilla::lease_etcd::testing::EtcdServer::start())
        .unwrap();
    let endpoint = etcd.endpoint();
    let run = demo(
        &[
            "--backend",
            "etcd",
            "--etcd-endpoint",
            &endpoint,
            "--fast",
            "--management-port",
            "0",
        ],
        Duration::from_secs(240),
    );
    assert!(run.success, "{}", run.stdout);
    assert_story(&run.stdout);
    assert!(
        run.stdout.contains(&format!("etcd at {endpoint}")),
        "{}",
        run.stdout
    );
    drop(etcd);
}
