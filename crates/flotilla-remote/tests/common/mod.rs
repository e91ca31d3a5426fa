//! Helpers shared by the integration tests.

#![allow(dead_code)] // reason: each test binary uses a different subset

use std::time::Duration;

use flotilla_core::{FailureDetectorSettings, RemoteSettings};
use flotilla_remote::Inbound;
use tokio::sync::mpsc::UnboundedReceiver;

/// Remoting settings with a fast failure detector (100 ms heartbeats, 500 ms pause) and a short
/// gate, so that failures show within a second.
pub(crate) fn fast_settings() -> RemoteSettings {
    RemoteSettings {
        retry_gate_closed_for: Duration::from_millis(300),
        handshake_timeout: Duration::from_secs(2),
        watch_failure_detector: FailureDetectorSettings {
            heartbeat_interval: Duration::from_millis(100),
            acceptable_heartbeat_pause: Duration::from_millis(500),
            first_heartbeat_estimate: Duration::from_millis(100),
            ..FailureDetectorSettings::default()
        },
        ..RemoteSettings::default()
    }
}

/// The next inbound item that `pick` accepts, within 15 s.
pub(crate) async fn next<T>(
    rx: &mut UnboundedReceiver<Inbound>,
    mut pick: impl FnMut(Inbound) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let Some(t) = pick(rx.recv().await.expect("remoting stopped")) {
                return t;
            }
        }
    })
    .await
    .expect("nothing arrived in time")
}
