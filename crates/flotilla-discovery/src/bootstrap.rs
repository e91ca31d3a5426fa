//! The driver of the pure [`Bootstrap`] machine: asks discovery, feeds the answers, and joins
//! the cluster with the seed nodes it decides on.

use std::sync::Arc;
use std::time::Instant;

use flotilla_cluster::Cluster;
use flotilla_core::{DiscoverySettings, StateMachine};
use flotilla_proto::cluster::LogLevel;
use flotilla_proto::cluster::bootstrap::{
    Bootstrap, BootstrapInput, BootstrapOutput, BootstrapSettings,
};
use tokio::task::JoinHandle;

use crate::{DiscoveryError, ServiceDiscovery, addresses};

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Starts bootstrapping `cluster` from `discovery`: a task that looks the contact points up
/// every `interval` and, once at least `required-contact-point-nr` of them have stayed the same
/// for `stable-margin`, joins with them as seed nodes (lowest address first). Contact points
/// without a port get `settings.port`, else this node's own port. The task ends once it has
/// asked to join, or when the cluster stops.
pub fn start(
    cluster: &Cluster,
    discovery: Arc<dyn ServiceDiscovery>,
    settings: &DiscoverySettings,
) -> JoinHandle<()> {
    let machine = Bootstrap::new(BootstrapSettings {
        required_contact_points: settings.required_contact_point_nr,
        stable_margin: settings.stable_margin,
        lookup_interval: settings.interval,
    });
    let me = cluster.self_address();
    let system = me.system().to_owned();
    let port = settings.port.or(me.port()).unwrap_or(0);
    tokio::spawn(run(cluster.clone(), discovery, machine, system, port))
}

/// Starts bootstrapping from the cluster's `[cluster.discovery]` settings; `Ok(None)` when its
/// method is "none" (the node joins through `seed-nodes`).
pub async fn start_from_config(
    cluster: &Cluster,
) -> Result<Option<JoinHandle<()>>, DiscoveryError> {
    let settings = cluster.settings().discovery.clone();
    let Some(discovery) = crate::from_settings(&settings).await? else {
        return Ok(None);
    };
    tracing::info!(
        node = %cluster.self_node(),
        "bootstrapping the cluster from {} discovery (required contact points {}, stable margin {:?})",
        discovery.method(),
        settings.required_contact_point_nr,
        settings.stable_margin
    );
    Ok(Some(start(cluster, discovery, &settings)))
}

async fn run(
    cluster: Cluster,
    discovery: Arc<dyn ServiceDiscovery>,
    mut machine: Bootstrap,
    system: String,
    port: u16,
) {
    let node = cluster.self_node().clone();
    loop {
        while let Some(out) = machine.poll_output() {
            match out {
                BootstrapOutput::Lookup => {
                    let input = match discovery.lookup().await {
                        Ok(points) => match addresses(&points, &system, port) {
                            Ok(found) => BootstrapInput::Discovered(found),
                            Err(e) => BootstrapInput::LookupFailed(e.to_string()),
                        },
                        Err(e) => BootstrapInput::LookupFailed(e.to_string()),
                    };
                    machine.handle(now(), input);
                }
                BootstrapOutput::JoinSeeds(seeds) => {
                    cluster.join_seed_nodes(seeds);
                    return;
                }
                BootstrapOutput::Log { level, text } => match level {
                    LogLevel::Info => tracing::info!(%node, "bootstrap: {text}"),
                    LogLevel::Warn => tracing::warn!(%node, "bootstrap: {text}"),
                },
            }
        }
        if cluster.snapshot().removed {
            return;
        }
        let Some(at) = machine.poll_timeout() else {
            return;
        };
        tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
        machine.handle_timeout(now());
    }
}
