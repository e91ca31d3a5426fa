//! A cluster of `flotilla node` processes on 127.0.0.1: three nodes join, one is killed with
//! SIGKILL and the survivors remove and quarantine it; the rest leave gracefully on SIGTERM.
//!
//! Every process is started here and ended here, by PID. Every wait is bounded.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);

struct Node {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    unique: String,
}

impl Node {
    fn start(seed: Option<&str>) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
        cmd.args(["node", "--system", "procs", "--port", "0", "--fast"]);
        if let Some(seed) = seed {
            cmd.args(["--seed", seed]);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start flotilla node: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let mut node = Self {
            child,
            lines,
            seen: Vec::new(),
            unique: String::new(),
        };
        let listening = node.wait_for(|l| l.starts_with("listening "));
        node.unique = listening["listening ".len()..].to_owned();
        node
    }

    fn address(&self) -> &str {
        self.unique.split('#').next().unwrap_or_default()
    }

    /// Waits for a line that satisfies `want` (also among those already read).
    fn wait_for(&mut self, want: impl Fn(&str) -> bool) -> String {
        if let Some(l) = self.seen.iter().find(|l| want(l)) {
            return l.clone();
        }
        let deadline = Instant::now() + LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no expected line within {LIMIT:?}; node {} printed:\n{}",
                    self.unique,
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn terminate(&self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill -TERM {pid}");
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "node {} did not exit",
                self.unique
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Only our own child, by PID, and only if it still runs.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[test]
fn a_killed_node_is_removed_and_quarantined_and_the_rest_leave_gracefully() {
    let mut nodes = vec![Node::start(None)];
    let seed = nodes[0].address().to_owned();
    nodes.push(Node::start(Some(&seed)));
    nodes.push(Node::start(Some(&seed)));
    let uniques: Vec<String> = nodes.iter().map(|n| n.unique.clone()).collect();
    for node in &mut nodes {
        for u in &uniques {
            node.wait_for(|l| l == format!("event MemberUp {u}"));
        }
    }

    // kill -9: no goodbye, the connections just die.
    let victim = uniques[2].clone();
    nodes[2].child.kill().unwrap_or_else(|e| panic!("{e}"));
    let _ = nodes[2].child.wait();
    let killed = Instant::now();
    for node in &mut nodes[..2] {
        node.wait_for(|l| l == format!("event UnreachableMember {victim}"));
        node.wait_for(|l| l == format!("event MemberDowned {victim}"));
        node.wait_for(|l| l == format!("event MemberRemoved {victim}"));
        node.wait_for(|l| l == format!("quarantined {victim}"));
    }
    eprintln!(
        "kill -9 to removal and quarantine on both survivors: {:?} (fast settings)",
        killed.elapsed()
    );

    // SIGTERM: coordinated shutdown leaves the cluster, the other node sees it go.
    let leaver = uniques[1].clone();
    nodes[1].terminate();
    let status = nodes[1].wait_exit();
    assert!(status.success(), "{status}");
    nodes[1].wait_for(|l| l.starts_with("shutdown "));
    nodes[0].wait_for(|l| l == format!("event MemberLeft {leaver}"));
    nodes[0].wait_for(|l| l == format!("event MemberRemoved {leaver}"));

    nodes[0].terminate();
    let status = nodes[0].wait_exit();
    assert!(status.success(), "{status}");
}
