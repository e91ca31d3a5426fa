//! Settings for tests and demos: failures show within a second instead of tens of seconds.

use std::time::Duration;

use flotilla_core::{FailureDetectorSettings, RemoteSettings};

/// Remoting settings with a fast failure detector (100 ms heartbeats, 500 ms acceptable pause),
/// a 300 ms gate, a 2 s handshake timeout and one remoting thread.
pub fn fast_settings() -> RemoteSettings {
    RemoteSettings {
        retry_gate_closed_for: Duration::from_millis(300),
        handshake_timeout: Duration::from_secs(2),
        threads: 1,
        watch_failure_detector: FailureDetectorSettings {
            heartbeat_interval: Duration::from_millis(100),
            acceptable_heartbeat_pause: Duration::from_millis(500),
            first_heartbeat_estimate: Duration::from_millis(100),
            ..FailureDetectorSettings::default()
        },
        ..RemoteSettings::default()
    }
}
