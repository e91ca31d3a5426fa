//! Settings for tests and demos: a cluster that forms, notices failures and decides within a
//! few seconds instead of tens.

use std::time::Duration;

use flotilla_core::{ClusterSettings, FailureDetectorSettings};

/// Cluster settings scaled down about fivefold: gossip and leader actions every 200 ms, the first
/// seed forms a cluster after 1 s, heartbeats every 200 ms with a 1 s acceptable pause, the
/// split-brain resolver acts after 2 s of a stable view.
pub fn fast_settings() -> ClusterSettings {
    let mut s = ClusterSettings {
        seed_node_timeout: Duration::from_secs(1),
        retry_unsuccessful_join_after: Duration::from_secs(2),
        gossip_interval: Duration::from_millis(200),
        leader_actions_interval: Duration::from_millis(200),
        allow_weakly_up_members: Duration::from_secs(2),
        failure_detector: FailureDetectorSettings {
            heartbeat_interval: Duration::from_millis(200),
            acceptable_heartbeat_pause: Duration::from_secs(1),
            first_heartbeat_estimate: Duration::from_millis(200),
            ..FailureDetectorSettings::cluster()
        },
        ..ClusterSettings::default()
    };
    s.split_brain_resolver.stable_after = Duration::from_secs(2).into();
    s
}
