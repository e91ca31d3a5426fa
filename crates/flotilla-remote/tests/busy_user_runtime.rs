//! Remoting runs on its own threads: a user runtime that is completely blocked cannot delay
//! heartbeats, so the failure detector raises no false alarm.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::time::{Duration, Instant};

use flotilla_core::{Address, FailureDetectorSettings, RemoteSettings};
use flotilla_remote::{Inbound, RemoteNode};

fn settings() -> RemoteSettings {
    RemoteSettings {
        watch_failure_detector: FailureDetectorSettings {
            heartbeat_interval: Duration::from_millis(100),
            acceptable_heartbeat_pause: Duration::from_millis(300),
            first_heartbeat_estimate: Duration::from_millis(100),
            min_std_deviation: Duration::from_millis(50),
            ..FailureDetectorSettings::default()
        },
        secret: Some(flotilla_remote::testing::secret().to_owned()),
        ..RemoteSettings::default()
    }
}

/// The test itself runs on a current-thread runtime, which it then blocks for 3 s — ten times
/// the acceptable heartbeat pause. Had remoting shared that runtime, its heartbeats would stop
/// and each node would declare the other dead.
#[tokio::test(flavor = "current_thread")]
async fn a_blocked_user_runtime_causes_no_false_failure_detection() {
    let addr = Address::remote("sim", "127.0.0.1", 0).unwrap();
    let (a, mut a_in) = RemoteNode::start(&addr, settings()).unwrap();
    let (b, mut b_in) = RemoteNode::start(&addr, settings()).unwrap();
    a.watch_node(&b.local().address).unwrap();
    b.watch_node(&a.local().address).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await; // monitoring starts

    // Saturate: this thread is the whole user runtime, and it does not yield for 3 s.
    let started = Instant::now();
    let mut spins = 0u64;
    while started.elapsed() < Duration::from_secs(3) {
        spins = std::hint::black_box(spins.wrapping_add(1));
    }

    for (name, rx) in [("a", &mut a_in), ("b", &mut b_in)] {
        while let Ok(item) = rx.try_recv() {
            assert!(
                !matches!(item, Inbound::AddressTerminated { .. }),
                "{name} falsely declared its peer dead: {item:?}"
            );
        }
    }
    // And the detectors are really running: a real death is still seen.
    let b_address = b.local().address.clone();
    drop(b);
    let dead = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Inbound::AddressTerminated { remote, .. }) = a_in.recv().await {
                return remote;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(dead, b_address);
}
