//! Real processes over 127.0.0.1: an echo node in its own process, killed with SIGKILL and
//! restarted on the same port with a new incarnation.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{fast_settings, next};
use flotilla_core::Address;
use flotilla_proto::association::StateName;
use flotilla_remote::{Inbound, RemoteNode};
use flotilla_wire::UserEnvelope;

/// An echo node process, killed when dropped.
struct Echo(Child);

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A file holding this process's test secret, for the echo processes.
fn secret_file() -> &'static std::path::Path {
    static FILE: std::sync::OnceLock<tempfile::NamedTempFile> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), flotilla_remote::testing::secret()).unwrap();
        file
    })
    .path()
}

/// Starts an echo node on `port`; returns it and the UID it printed.
fn echo(port: u16) -> (Echo, u64) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flotilla-remote-echo"))
        .args(["sim", &port.to_string(), "--secret-file"])
        .arg(secret_file())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let uid = line
        .trim()
        .rsplit('#')
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
    (Echo(child), uid)
}

fn msg(n: u32) -> UserEnvelope {
    UserEnvelope {
        recipient: "/user/echo".into(),
        sender: None,
        manifest: "test.N".into(),
        payload: n.to_be_bytes().to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_then_restart_with_a_new_uid() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let remote = Address::remote("sim", "127.0.0.1", port).unwrap();
    let settings = fast_settings();
    let (me, mut inbound) =
        RemoteNode::start(&Address::remote("sim", "127.0.0.1", 0).unwrap(), settings).unwrap();

    let (first, first_uid) = echo(port);
    me.watch_node(&remote).unwrap();
    for n in 0..100 {
        me.send_user(&remote, msg(n)).unwrap();
    }
    for n in 0..100u32 {
        let back = next(&mut inbound, |x| match x {
            Inbound::User { messages, from } => Some((common::only(&messages), from)),
            other => {
                eprintln!("skip0 {other:?}");
                None
            }
        })
        .await;
        assert_eq!(back.0.payload, n.to_be_bytes());
        assert_eq!(back.1.uid, first_uid);
    }

    // SIGKILL: no goodbye. The connection drops, the association gates, the watch fires.
    drop(first);
    next(&mut inbound, |x| match x {
        Inbound::Association {
            to: StateName::Gated,
            ..
        } => Some(()),
        _ => None,
    })
    .await;
    let (dead, uid) = next(&mut inbound, |x| match x {
        Inbound::AddressTerminated { remote, uid } => Some((remote, uid)),
        other => {
            eprintln!("skip {other:?}");
            None
        }
    })
    .await;
    assert_eq!((dead, uid), (remote.clone(), Some(first_uid)));

    // The same port, a new incarnation: it associates normally once the gate is open.
    let (_second, second_uid) = echo(port);
    assert_ne!(second_uid, first_uid);
    let mut n = 1000;
    let from = loop {
        me.send_user(&remote, msg(n)).unwrap();
        let got = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                if let Some(Inbound::User { from, .. }) = inbound.recv().await {
                    return from;
                }
            }
        })
        .await;
        if let Ok(from) = got {
            break from;
        }
        n += 1;
        assert!(n < 1040, "the restarted node never answered");
    };
    assert_eq!(from.uid, second_uid);
    let snapshot = me.associations().await.unwrap();
    assert_eq!(snapshot[0].state, StateName::Active);
    assert_eq!(snapshot[0].uid, Some(second_uid));
    assert!(
        snapshot[0].quarantined.contains(&first_uid),
        "the old incarnation stays quarantined"
    );
}
