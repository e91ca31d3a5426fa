//! Kubernetes discovery against an in-process API server with the documented semantics of
//! pod listing: only Running pods that are not terminating and have an IP are contact points,
//! with the port of their named container port; the label selector and the namespace choose
//! the pods; a selector the server refuses and a server that is gone are lookup errors.

use std::time::Duration;

use flotilla_core::{DiscoveryMethod, DiscoverySettings};
use flotilla_discovery::testing::{FakeKubernetes, PodSpec};
use flotilla_discovery::{ContactPoint, DiscoveryError, KubernetesDiscovery, ServiceDiscovery};

fn settings(api: &FakeKubernetes, selector: &str, port_name: &str) -> DiscoverySettings {
    DiscoverySettings {
        method: DiscoveryMethod::Kubernetes,
        service_name: "shop".into(),
        port_name: port_name.into(),
        api_server: Some(api.url().to_owned()),
        namespace: Some("prod".into()),
        pod_label_selector: selector.into(),
        resolve_timeout: Duration::from_secs(2),
        ..DiscoverySettings::default()
    }
}

fn with_port(mut pod: PodSpec, port: u16) -> PodSpec {
    pod.ports = vec![("metrics".into(), 9090), ("remoting".into(), port)];
    pod
}

async fn lookup(s: &DiscoverySettings) -> Result<Vec<ContactPoint>, DiscoveryError> {
    let d = KubernetesDiscovery::connect(s)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut points = d.lookup().await?;
    points.sort();
    Ok(points)
}

fn hosts(points: &[ContactPoint]) -> Vec<(&str, Option<u16>)> {
    points.iter().map(|p| (p.host.as_str(), p.port)).collect()
}

async fn populated() -> FakeKubernetes {
    let api = FakeKubernetes::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let shop = [("app", "shop")];
    api.add_pod(
        "prod",
        &with_port(PodSpec::running("shop-0", "10.1.0.10", &shop), 2552),
    );
    api.add_pod(
        "prod",
        &with_port(PodSpec::running("shop-1", "10.1.0.11", &shop), 2553),
    );
    let mut pending = PodSpec::running("shop-2", "10.1.0.12", &shop);
    pending.phase = "Pending".into();
    api.add_pod("prod", &with_port(pending, 2552));
    let mut unscheduled = PodSpec::running("shop-3", "", &shop);
    unscheduled.ip = None;
    api.add_pod("prod", &with_port(unscheduled, 2552));
    let mut terminating = PodSpec::running("shop-4", "10.1.0.14", &shop);
    terminating.deleting = true;
    api.add_pod("prod", &with_port(terminating, 2552));
    // Running, but without the named port.
    api.add_pod("prod", &PodSpec::running("shop-5", "10.1.0.15", &shop));
    // Another service, and the same service in another namespace.
    api.add_pod(
        "prod",
        &with_port(
            PodSpec::running("cart-0", "10.1.0.20", &[("app", "cart")]),
            2552,
        ),
    );
    api.add_pod(
        "staging",
        &with_port(PodSpec::running("shop-0", "10.2.0.10", &shop), 2552),
    );
    let canary = [("app", "shop"), ("track", "canary")];
    api.add_pod(
        "prod",
        &with_port(PodSpec::running("shop-canary", "10.1.0.30", &canary), 2552),
    );
    api
}

#[tokio::test]
async fn running_pods_of_the_service_are_contact_points_with_their_named_port() {
    let api = populated().await;
    let got = lookup(&settings(&api, "app=%s", "remoting"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        hosts(&got),
        [
            ("10.1.0.10", Some(2552)),
            ("10.1.0.11", Some(2553)),
            ("10.1.0.30", Some(2552))
        ]
    );
    // Without a port name every running pod counts, with no port.
    let got = lookup(&settings(&api, "app=%s", ""))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        hosts(&got),
        [
            ("10.1.0.10", None),
            ("10.1.0.11", None),
            ("10.1.0.15", None),
            ("10.1.0.30", None)
        ]
    );
    // The selector is the API server's to apply.
    let got = lookup(&settings(&api, "app in (shop),!track", "remoting"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        hosts(&got),
        [("10.1.0.10", Some(2552)), ("10.1.0.11", Some(2553))]
    );
    // Pods come and go between lookups.
    api.remove_pod("prod", "shop-1");
    let got = lookup(&settings(&api, "app=shop,track notin (canary)", "remoting"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(hosts(&got), [("10.1.0.10", Some(2552))]);
    assert!(api.requests() >= 4);
}

#[tokio::test]
async fn a_refused_selector_and_a_gone_server_are_lookup_errors() {
    let api = populated().await;
    let refused = lookup(&settings(&api, "app in (shop", "remoting")).await;
    assert!(
        matches!(&refused, Err(DiscoveryError::Lookup { method: "kubernetes", reason, .. }) if reason.contains("unable to parse")),
        "{refused:?}"
    );
    let s = settings(&api, "app=%s", "remoting");
    drop(api);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let gone = lookup(&s).await;
    assert!(
        matches!(gone, Err(DiscoveryError::Lookup { .. })),
        "{gone:?}"
    );
}
