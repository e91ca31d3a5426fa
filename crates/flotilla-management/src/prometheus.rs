//! The Prometheus exposition: Flotilla's counters, gauges and histograms (recorded through the
//! `metrics` facade everywhere in the runtime) plus gauges read from the node's state at each
//! scrape (members by status, phi, associations by state, shards and entities per region,
//! zombie leases), labelled with the node's address so several nodes in one process stay apart.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::NodeView;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Histogram buckets for latencies in seconds: 1 ms to 30 s.
const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every metric Flotilla records: its kind, name and help text. A test checks that every name
/// recorded anywhere in the workspace is here.
pub(crate) const METRICS: &[(Kind, &str, &str)] = &[
    (
        Kind::Counter,
        "flotilla_actor_abandoned_messages_total",
        "Messages abandoned mid-handler by an actor stopped at once (a sharded entity or singleton whose lease was lost).",
    ),
    (
        Kind::Counter,
        "flotilla_actor_failures_total",
        "Actor failures handled by supervisors.",
    ),
    (
        Kind::Counter,
        "flotilla_actor_restarts_total",
        "Actor restarts by supervisors.",
    ),
    (
        Kind::Counter,
        "flotilla_cluster_bytes_sent_total",
        "Bytes of cluster protocol messages sent.",
    ),
    (
        Kind::Counter,
        "flotilla_cluster_events_total",
        "Cluster events published, by kind.",
    ),
    (
        Kind::Gauge,
        "flotilla_cluster_members",
        "Members in this node's view.",
    ),
    (
        Kind::Gauge,
        "flotilla_cluster_members_by_status",
        "Members in a node's view, by status.",
    ),
    (
        Kind::Counter,
        "flotilla_cluster_messages_dropped_total",
        "Cluster protocol messages dropped (undecodable or unexpected).",
    ),
    (
        Kind::Counter,
        "flotilla_cluster_messages_received_total",
        "Cluster protocol messages received.",
    ),
    (
        Kind::Counter,
        "flotilla_cluster_messages_sent_total",
        "Cluster protocol messages sent.",
    ),
    (
        Kind::Gauge,
        "flotilla_cluster_phi",
        "Failure detector phi of each monitored member (unreachable above the threshold).",
    ),
    (
        Kind::Gauge,
        "flotilla_cluster_unreachable",
        "Members some node finds unreachable, in a node's view.",
    ),
    (
        Kind::Gauge,
        "flotilla_cluster_unreachable_members",
        "Members some node finds unreachable, in this node's view.",
    ),
    (
        Kind::Counter,
        "flotilla_dead_letter_events_dropped_total",
        "Dead-letter events not published because the event stream was full.",
    ),
    (
        Kind::Counter,
        "flotilla_dead_letters_total",
        "Messages that went to dead letters.",
    ),
    (
        Kind::Histogram,
        "flotilla_lease_acquire_seconds",
        "Time to acquire a lease, seconds.",
    ),
    (
        Kind::Counter,
        "flotilla_lease_acquired_total",
        "Leases acquired.",
    ),
    (
        Kind::Counter,
        "flotilla_lease_backend_connect_failed_total",
        "Failed attempts to connect to a lease backend not reachable when the node started.",
    ),
    (
        Kind::Counter,
        "flotilla_lease_lost_total",
        "Leases lost (expired or taken over), by cause.",
    ),
    (
        Kind::Counter,
        "flotilla_lease_release_failed_total",
        "Lease releases that gave up (the lease expires by its TTL).",
    ),
    (
        Kind::Histogram,
        "flotilla_lease_release_seconds",
        "Time to release a lease, seconds.",
    ),
    (
        Kind::Counter,
        "flotilla_lease_released_total",
        "Leases released.",
    ),
    (
        Kind::Histogram,
        "flotilla_lease_renew_seconds",
        "Time of one lease renewal, seconds.",
    ),
    (
        Kind::Counter,
        "flotilla_lease_renewal_retried_total",
        "Lease renewals retried after a failure, the lease still held.",
    ),
    (
        Kind::Counter,
        "flotilla_lease_renewed_total",
        "Lease renewals.",
    ),
    (
        Kind::Gauge,
        "flotilla_lease_zombies",
        "Leases held by owners that are not current cluster members.",
    ),
    (
        Kind::Counter,
        "flotilla_management_connections_dropped_total",
        "Management endpoint connections closed by the endpoint: over max-connections (limit), no request head within header-read-timeout, idle keep-alive included (timeout), a failed TLS handshake (tls).",
    ),
    (
        Kind::Counter,
        "flotilla_management_requests_refused_total",
        "Management requests refused: a Host not allowed (host, DNS rebinding protection), a mutating request without the bearer token (token).",
    ),
    (
        Kind::Counter,
        "flotilla_remote_association_transitions_total",
        "Association state changes, by state entered.",
    ),
    (
        Kind::Gauge,
        "flotilla_remote_associations",
        "Associations of a node, by state.",
    ),
    (
        Kind::Counter,
        "flotilla_remote_cluster_messages_dropped_total",
        "Cluster messages remoting dropped (no cluster listening, or no link).",
    ),
    (
        Kind::Counter,
        "flotilla_remote_dead_letters_total",
        "Outbound messages remoting sent to dead letters.",
    ),
    (
        Kind::Counter,
        "flotilla_remote_fault_injected_drops_total",
        "Frames dropped by fault injection (tests).",
    ),
    (
        Kind::Counter,
        "flotilla_remote_frames_received_total",
        "Frames received, by lane.",
    ),
    (
        Kind::Counter,
        "flotilla_remote_frames_sent_total",
        "Frames sent, by lane.",
    ),
    (
        Kind::Counter,
        "flotilla_remote_framing_errors_total",
        "Connections closed on a framing error.",
    ),
    (
        Kind::Counter,
        "flotilla_remote_handshakes_refused_total",
        "Inbound handshakes refused.",
    ),
    (
        Kind::Counter,
        "flotilla_remote_connections_dropped_total",
        "Inbound connections closed by a limit, by reason (max-inbound-connections, max-handshakes-in-progress).",
    ),
    (
        Kind::Counter,
        "flotilla_remote_frames_dropped_total",
        "Frames dropped, by reason: misattributed (naming another sender than the link's peer), control-lane-full.",
    ),
    (
        Kind::Counter,
        "flotilla_remote_inbound_dropped_total",
        "Inbound messages dropped (no such recipient, or quarantined sender).",
    ),
    (
        Kind::Counter,
        "flotilla_remote_late_answers_total",
        "Answers that arrived after their ask had timed out.",
    ),
    (
        Kind::Counter,
        "flotilla_remote_quarantined_frames_dropped_total",
        "Frames from quarantined incarnations dropped.",
    ),
    (
        Kind::Counter,
        "flotilla_remote_undecodable_frames_total",
        "Frames that did not decode, dropped.",
    ),
    (
        Kind::Counter,
        "flotilla_sharding_dropped_total",
        "Sharding messages dropped, by reason.",
    ),
    (
        Kind::Counter,
        "flotilla_sharding_handoffs_total",
        "Shards handed off to another node.",
    ),
    (
        Kind::Counter,
        "flotilla_sharding_lease_acquire_failures_total",
        "Shard lease acquisitions denied or failed (retried).",
    ),
    (
        Kind::Histogram,
        "flotilla_sharding_lease_acquire_seconds",
        "Time for a shard to get its lease, seconds.",
    ),
    (
        Kind::Counter,
        "flotilla_sharding_lease_lost_total",
        "Shards stopped because their lease was lost.",
    ),
    (
        Kind::Counter,
        "flotilla_sharding_lease_release_failures_total",
        "Shard lease releases that failed in the end.",
    ),
    (
        Kind::Histogram,
        "flotilla_sharding_lease_release_seconds",
        "Time for a shard to release its lease, seconds.",
    ),
    (
        Kind::Gauge,
        "flotilla_sharding_region_entities",
        "Entities running in a node's region.",
    ),
    (
        Kind::Gauge,
        "flotilla_sharding_region_shards",
        "Shards hosted by a node's region.",
    ),
    (
        Kind::Counter,
        "flotilla_sharding_remember_store_failures_total",
        "Remember-entities store operations that failed.",
    ),
    (
        Kind::Histogram,
        "flotilla_sharding_remember_update_seconds",
        "Time of one remember-entities store update, seconds.",
    ),
    (
        Kind::Gauge,
        "flotilla_sharding_shards",
        "Shards hosted here, by entity type.",
    ),
    (
        Kind::Gauge,
        "flotilla_sharding_shards_waiting_for_lease",
        "Shards waiting for their lease.",
    ),
    (
        Kind::Counter,
        "flotilla_singleton_dropped_total",
        "Messages to a singleton dropped.",
    ),
    (
        Kind::Counter,
        "flotilla_singleton_proxy_dropped_total",
        "Messages a singleton proxy dropped (buffer full).",
    ),
    (
        Kind::Gauge,
        "flotilla_singleton_running",
        "Whether a singleton runs on this node.",
    ),
];

/// A metric's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

fn describe_all() {
    for (kind, name, help) in METRICS {
        match kind {
            Kind::Counter => metrics::describe_counter!(*name, *help),
            Kind::Gauge => metrics::describe_gauge!(*name, *help),
            Kind::Histogram => metrics::describe_histogram!(*name, *help),
        }
    }
}

/// Installs the process's Prometheus recorder, once; later calls do nothing. Returns whether
/// Flotilla's recorder is the one installed (not when the application installed its own
/// `metrics` recorder first: then `/metrics` answers 503 and says so).
pub fn install_recorder() -> bool {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(SECONDS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe_all();
                    Some(handle)
                }
                Err(_) => {
                    tracing::warn!("another metrics recorder is installed: the management endpoint's /metrics cannot expose Flotilla's metrics");
                    None
                }
            }
        })
        .is_some()
}

/// The exposition text, after refreshing the state gauges; `None` without the recorder.
pub(crate) async fn render(view: &NodeView) -> Option<String> {
    let handle = HANDLE.get()?.as_ref()?;
    refresh(view).await;
    Some(handle.render())
}

async fn refresh(view: &NodeView) {
    let node = view.cluster.self_address().to_string();
    let state = view.cluster.state();
    for status in [
        "Joining", "WeaklyUp", "Up", "Leaving", "Exiting", "Down", "Removed",
    ] {
        let n = state
            .members
            .iter()
            .filter(|m| m.status.to_string() == status)
            .count();
        metrics::gauge!("flotilla_cluster_members_by_status", "node" => node.clone(), "status" => status)
            .set(n as f64);
    }
    metrics::gauge!("flotilla_cluster_unreachable", "node" => node.clone())
        .set(state.unreachable.len() as f64);
    for (member, phi) in view.cluster.phi_values().await {
        // An infinite phi (long silence) is exposed as a large finite number.
        let phi = if phi.is_finite() { phi } else { f64::MAX };
        metrics::gauge!("flotilla_cluster_phi", "node" => node.clone(), "member" => member.address.to_string())
            .set(phi);
    }
    let associations = view.system.associations().await;
    for s in ["Idle", "Active", "Gated", "Quarantined"] {
        let n = associations
            .iter()
            .filter(|a| a.state.to_string() == s)
            .count();
        metrics::gauge!("flotilla_remote_associations", "node" => node.clone(), "state" => s)
            .set(n as f64);
    }
    for r in &view.regions {
        let st = r.state().await;
        let entities: usize = st.shards.values().map(Vec::len).sum();
        metrics::gauge!("flotilla_sharding_region_shards", "node" => node.clone(), "entity_type" => r.type_name().to_owned())
            .set(st.shards.len() as f64);
        metrics::gauge!("flotilla_sharding_region_entities", "node" => node.clone(), "entity_type" => r.type_name().to_owned())
            .set(entities as f64);
    }
    if view.leases.is_some() {
        let zombies = crate::server::leases(view).await.map_or(0, |l| l.zombies);
        metrics::gauge!("flotilla_lease_zombies", "node" => node).set(zombies as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `counter!`, `gauge!` and `histogram!` name in the workspace's sources.
    fn recorded() -> std::collections::BTreeSet<(String, String)> {
        let crates = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut out = std::collections::BTreeSet::new();
        let mut dirs = vec![crates];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    if !path.ends_with("tests") && !path.ends_with("target") {
                        dirs.push(path);
                    }
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                for kind in ["counter", "gauge", "histogram"] {
                    let macro_call = format!("metrics::{kind}!(");
                    for (i, _) in text.match_indices(&macro_call) {
                        let rest = text[i + macro_call.len()..].trim_start();
                        if let Some(rest) = rest.strip_prefix('"')
                            && let Some(end) = rest.find('"')
                        {
                            out.insert((kind.to_owned(), rest[..end].to_owned()));
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn every_recorded_metric_is_described_with_its_kind() {
        let described: std::collections::BTreeSet<(String, String)> = METRICS
            .iter()
            .map(|(k, n, _)| (format!("{k:?}").to_lowercase(), (*n).to_owned()))
            .collect();
        let recorded = recorded();
        assert!(
            recorded.len() > 40,
            "the scan found {} metrics",
            recorded.len()
        );
        let missing: Vec<_> = recorded.difference(&described).collect();
        assert!(
            missing.is_empty(),
            "recorded but not described: {missing:?}"
        );
    }
}
