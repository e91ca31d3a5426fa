//! Settings for tests and demos: failures show within a second instead of tens of seconds, and
//! nodes authenticate with a cluster secret as in production.

use std::sync::OnceLock;
use std::time::Duration;

use flotilla_core::{FailureDetectorSettings, RemoteSettings};

/// A cluster secret drawn at random once per process: every node a test starts in this process
/// shares it, and nothing outside the process knows it.
pub fn secret() -> &'static str {
    static SECRET: OnceLock<String> = OnceLock::new();
    SECRET.get_or_init(random_secret)
}

/// A new random cluster secret: 32 random bytes, hex-encoded.
pub fn random_secret() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Remoting settings with a fast failure detector (100 ms heartbeats, 500 ms acceptable pause),
/// a 300 ms gate, a 2 s handshake timeout, one remoting thread, and this process's [`secret`].
pub fn fast_settings() -> RemoteSettings {
    RemoteSettings {
        retry_gate_closed_for: Duration::from_millis(300),
        handshake_timeout: Duration::from_secs(2),
        threads: 1,
        secret: Some(secret().to_owned()),
        watch_failure_detector: FailureDetectorSettings {
            heartbeat_interval: Duration::from_millis(100),
            acceptable_heartbeat_pause: Duration::from_millis(500),
            first_heartbeat_estimate: Duration::from_millis(100),
            ..FailureDetectorSettings::default()
        },
        ..RemoteSettings::default()
    }
}
