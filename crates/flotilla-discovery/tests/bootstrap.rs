//! Clusters that form from service discovery alone, on 127.0.0.1: three nodes started together
//! find each other through DNS SRV records served by a real DNS server and form one cluster;
//! a node started later finds the running cluster through a static list and joins it.

use std::time::Duration;

use flotilla_actor::ActorSystem;
use flotilla_cluster::{Cluster, MemberStatus, testing};
use flotilla_core::{DiscoveryMethod, DiscoverySettings, FlotillaConfig};
use flotilla_discovery::bootstrap;
use flotilla_discovery::testing::{DnsServer, Record};

const LIMIT: Duration = Duration::from_secs(30);

fn node(discovery: &DiscoverySettings) -> (ActorSystem, Cluster) {
    let mut cluster = testing::fast_settings();
    cluster.discovery = discovery.clone();
    let config = FlotillaConfig {
        remote: flotilla_remote::testing::fast_settings(),
        cluster,
        ..FlotillaConfig::default()
    };
    let system = ActorSystem::builder("boot")
        .config(config)
        .remote("127.0.0.1", 0)
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let cluster = Cluster::start(&system).unwrap_or_else(|e| panic!("{e}"));
    (system, cluster)
}

async fn all_up(nodes: &[(ActorSystem, Cluster)], n: usize) {
    let start = tokio::time::Instant::now();
    for (_, c) in nodes {
        loop {
            let s = c.state();
            if s.members.len() == n && s.members.iter().all(|m| m.status == MemberStatus::Up) {
                break;
            }
            assert!(
                start.elapsed() < LIMIT,
                "not one cluster of {n} within {LIMIT:?}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_started_together_form_one_cluster_from_dns_srv_records() {
    // The ports are only known once the nodes listen: start them, then serve their records.
    let pending = DiscoverySettings::default();
    let mut nodes: Vec<_> = (0..3).map(|_| node(&pending)).collect();
    let mut records = Vec::new();
    for (i, (_, c)) in nodes.iter().enumerate() {
        let name = format!("node-{i}.flotilla.test");
        records.push(Record::Ip {
            name: name.clone(),
            ip: "127.0.0.1".parse().unwrap_or_else(|e| panic!("{e}")),
        });
        records.push(Record::Srv {
            name: "_remoting._tcp.boot.flotilla.test".into(),
            target: name,
            port: c.self_address().port().unwrap_or_else(|| panic!("no port")),
        });
    }
    let dns = DnsServer::start(&records)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let discovery = DiscoverySettings {
        method: DiscoveryMethod::Dns,
        service_name: "boot.flotilla.test".into(),
        port_name: "remoting".into(),
        nameservers: vec![dns.address()],
        required_contact_point_nr: 3,
        stable_margin: Duration::from_millis(500),
        interval: Duration::from_millis(100),
        ..DiscoverySettings::default()
    };
    let mut tasks = Vec::new();
    for (_, c) in &nodes {
        let d = flotilla_discovery::from_settings(&discovery)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("no discovery"));
        tasks.push(bootstrap::start(c, d, &discovery));
    }
    for t in tasks {
        tokio::time::timeout(LIMIT, t)
            .await
            .unwrap_or_else(|_| panic!("the bootstrap did not decide"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    all_up(&nodes, 3).await;
    // The node with the lowest address formed it: it is the oldest (up-number 0… the lowest).
    let lowest = nodes
        .iter()
        .map(|(_, c)| c.self_address().clone())
        .min()
        .unwrap_or_else(|| panic!("no nodes"));
    let state = nodes[0].1.state();
    let oldest = state
        .members
        .iter()
        .min_by_key(|m| m.up_number)
        .map(|m| m.node.address.clone());
    assert_eq!(oldest, Some(lowest));

    // A fourth node, later, from a static list of everyone: it joins the running cluster.
    let mut endpoints: Vec<String> = nodes
        .iter()
        .map(|(_, c)| format!("127.0.0.1:{}", c.self_address().port().unwrap_or(0)))
        .collect();
    let (late_system, late) = node(&DiscoverySettings::default());
    endpoints.push(format!(
        "127.0.0.1:{}",
        late.self_address().port().unwrap_or(0)
    ));
    let mut settings = late.settings().discovery.clone();
    settings.method = DiscoveryMethod::Static;
    settings.endpoints = endpoints;
    settings.required_contact_point_nr = 2;
    settings.stable_margin = Duration::from_millis(200);
    let d = flotilla_discovery::from_settings(&settings)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no discovery"));
    bootstrap::start(&late, d, &settings);
    nodes.push((late_system, late));
    all_up(&nodes, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_from_config_reads_cluster_discovery_and_none_means_seed_nodes() {
    let first = node(&DiscoverySettings::default());
    let started = bootstrap::start_from_config(&first.1).await;
    assert!(matches!(started, Ok(None)), "{started:?}");
    first.1.join(first.1.self_address().clone());
    let existing = format!("127.0.0.1:{}", first.1.self_address().port().unwrap_or(0));
    let discovery = DiscoverySettings {
        method: DiscoveryMethod::Static,
        endpoints: vec![existing],
        required_contact_point_nr: 1,
        stable_margin: Duration::from_millis(100),
        interval: Duration::from_millis(50),
        ..DiscoverySettings::default()
    };
    let second = node(&discovery);
    let task = bootstrap::start_from_config(&second.1)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("static discovery did not start"));
    tokio::time::timeout(LIMIT, task)
        .await
        .unwrap_or_else(|_| panic!("no decision"))
        .unwrap_or_else(|e| panic!("{e}"));
    all_up(&[first, second], 2).await;
}
