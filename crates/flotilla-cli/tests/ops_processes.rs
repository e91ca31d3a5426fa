//! The operator commands against real `flotilla node` processes on 127.0.0.1: `status`,
//! `members`, `shards`, `associations`, `leases` as tables and as JSON, exit codes, a clear
//! error for an unreachable endpoint, and `leave` through one node's endpoint for another.
//!
//! Every process is started here and ended here, by PID. Every wait is bounded.

use std::process::Command;
use std::time::{Duration, Instant};

use flotilla_cli::node::NodeProcess;

const LIMIT: Duration = Duration::from_secs(60);

fn start(seed: Option<&str>) -> NodeProcess {
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_flotilla"));
    NodeProcess::start_fast(
        binary,
        "ops",
        seed,
        &["--sharded-counters", "200", "--shards", "10"],
        LIMIT,
    )
    .unwrap_or_else(|e| panic!("{e:#}"))
}

fn endpoint(node: &mut NodeProcess) -> String {
    let (_, line) = node
        .wait_for(LIMIT, |l| l.starts_with("management "))
        .unwrap_or_else(|e| panic!("{e:#}"));
    line["management ".len()..].to_owned()
}

/// Runs `flotilla <args>`; returns (success, stdout, stderr).
fn flotilla(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .args(args)
        .env_remove("FLOTILLA_ENDPOINT")
        .output()
        .unwrap_or_else(|e| panic!("cannot run flotilla: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_operator_commands_show_the_cluster_and_make_a_member_leave() {
    let mut a = start(None);
    let seed = a.address().to_owned();
    let mut b = start(Some(&seed));
    let (ea, b_address) = (endpoint(&mut a), b.address().to_owned());

    until("two Up members, shards on both", || {
        let (ok, out, _) = flotilla(&["members", "--endpoint", &ea, "--json"]);
        let (ok2, shards, _) = flotilla(&["shards", "--endpoint", &ea, "--json"]);
        ok && ok2
            && serde_json::from_str::<serde_json::Value>(&out).is_ok_and(|v| {
                v["members"]
                    .as_array()
                    .is_some_and(|m| m.len() == 2 && m.iter().all(|x| x["status"] == "Up"))
            })
            && serde_json::from_str::<serde_json::Value>(&shards).is_ok_and(|v| {
                v["regions"][0]["cluster"].as_array().is_some_and(|c| {
                    c.len() == 2 && c.iter().all(|n| n["entities"].as_u64() > Some(0))
                })
            })
            && {
                let (ok, status, _) = flotilla(&["status", "--endpoint", &ea, "--json"]);
                ok && serde_json::from_str::<serde_json::Value>(&status)
                    .is_ok_and(|v| v["ready"] == true)
            }
    });

    let (ok, table, _) = flotilla(&["members", "--endpoint", &ea]);
    assert!(ok);
    assert!(table.starts_with("ADDRESS"), "{table}");
    assert!(
        table.contains(&b_address) && table.contains("leader"),
        "{table}"
    );
    let (ok, status, _) = flotilla(&["status", "--endpoint", &ea]);
    assert!(
        ok && status.contains("2 Up") && status.contains("(ready)"),
        "{status}"
    );
    let (ok, shards, _) = flotilla(&["shards", "--endpoint", &ea]);
    assert!(
        ok && shards.contains("counter:") && shards.contains("NODE"),
        "{shards}"
    );
    let (ok, assoc, _) = flotilla(&["associations", "--endpoint", &ea]);
    assert!(
        ok && assoc.contains(&b_address) && assoc.contains("Active"),
        "{assoc}"
    );
    let (ok, leases, _) = flotilla(&["leases", "--node", &ea]);
    // A node always has a lease backend: the in-memory one unless configured otherwise.
    assert!(ok && leases.contains("in memory"), "{leases}");

    // An unreachable endpoint: exit code 1 and a message that says what to check.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (ok, _, err) = flotilla(&["status", "--endpoint", &format!("127.0.0.1:{closed}")]);
    assert!(!ok);
    assert!(
        err.contains("cannot reach the management endpoint"),
        "{err}"
    );
    // A bad member address: refused by the endpoint, exit code 1.
    let (ok, _, err) = flotilla(&["leave", "not-an-address", "--endpoint", &ea]);
    assert!(!ok && err.contains("400"), "{err}");

    // Leave b through a's endpoint: b exits by itself.
    let (ok, out, err) = flotilla(&["leave", &b_address, "--endpoint", &ea]);
    assert!(ok, "{err}");
    assert!(out.contains("asked to leave"), "{out}");
    let status = b.wait_exit(LIMIT).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(status.success(), "{status}");
    until("one member left", || {
        let (ok, out, _) = flotilla(&["members", "--endpoint", &ea, "--json"]);
        ok && serde_json::from_str::<serde_json::Value>(&out)
            .is_ok_and(|v| v["members"].as_array().is_some_and(|m| m.len() == 1))
    });
    a.terminate().unwrap_or_else(|e| panic!("{e:#}"));
    let status = a.wait_exit(LIMIT).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(status.success(), "{status}");
}
