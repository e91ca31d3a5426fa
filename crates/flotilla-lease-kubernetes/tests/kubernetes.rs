//! The lease conformance suite and Kubernetes-specific behaviour, against the in-repo API server
//! that implements the Lease resource; and, where `KUBECONFIG` points at a real cluster, against
//! that cluster.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use flotilla_core::LeaseSettings;
use flotilla_lease::backend::BackendReply;
use flotilla_lease::testing::{Faulty, ServerTarget};
use flotilla_lease::{LeaseBackend, LeaseName, OwnerId};
use flotilla_lease_kubernetes::testing::{FakeApiServer, take_over};
use flotilla_lease_kubernetes::{KubernetesBackend, KubernetesError, KubernetesSettings};

const TTL: Duration = Duration::from_secs(4);

type Kubernetes = ServerTarget<KubernetesBackend, FakeApiServer>;

fn settings(server: &FakeApiServer) -> KubernetesSettings {
    KubernetesSettings {
        api_server: Some(server.url().to_owned()),
        namespace: Some("flotilla-test".into()),
        request_timeout: Duration::from_millis(500),
    }
}

fn lease_settings() -> LeaseSettings {
    LeaseSettings::new(TTL, Duration::from_secs(1))
        .unwrap()
        .with_operation_timeout(Duration::from_secs(2))
}

async fn start() -> Kubernetes {
    let server = FakeApiServer::start().await.unwrap();
    let backend = KubernetesBackend::connect(settings(&server)).await.unwrap();
    ServerTarget {
        server,
        backend: Arc::new(Faulty::new(backend)),
        settings: lease_settings(),
        take_over,
    }
}

flotilla_lease::conformance_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    start().await
);

fn name(n: &str) -> LeaseName {
    LeaseName::new(n).unwrap()
}

/// Two writers race on one Lease object: the API server's resourceVersion check lets exactly one
/// through, and the loser re-reads and answers denied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_writes_are_decided_by_resource_version() {
    let k8s = start().await;
    let backend = k8s.backend.inner();
    let (a, b) = (
        OwnerId::new("node-a").unwrap(),
        OwnerId::new("node-b").unwrap(),
    );
    // A released lease, so both contenders go for the PUT path rather than the create path.
    let BackendReply::Granted { token } = backend.acquire(&name("race"), &a, TTL).await else {
        panic!("first acquire")
    };
    backend.release(&name("race"), &a, Some(token)).await;
    let race = name("race");
    for round in 0..10 {
        let (ra, rb) = tokio::join!(
            backend.acquire(&race, &a, TTL),
            backend.acquire(&race, &b, TTL)
        );
        let granted = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, BackendReply::Granted { .. }))
            .count();
        assert_eq!(granted, 1, "round {round}: {ra:?} {rb:?}");
        let (winner, t) = match (ra, rb) {
            (BackendReply::Granted { token }, _) => (&a, token),
            (_, BackendReply::Granted { token }) => (&b, token),
            _ => unreachable!(),
        };
        assert_eq!(
            backend.release(&name("race"), winner, Some(t)).await,
            BackendReply::Released { was_held: true }
        );
    }
    assert!(
        k8s.server.conflicts() > 0,
        "the contenders never raced on a write"
    );
    let record = backend.list().await.unwrap();
    assert!(record.is_empty(), "all released: {record:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_are_refused_at_connect() {
    let malformed = KubernetesBackend::connect(KubernetesSettings {
        api_server: Some("not a url at all".into()),
        ..KubernetesSettings::default()
    })
    .await;
    assert!(
        matches!(malformed, Err(KubernetesError::Config(_))),
        "{malformed:?}"
    );
    assert!(malformed.is_err_and(|e| !e.is_unreachable()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = KubernetesBackend::connect(KubernetesSettings {
        api_server: Some(format!("http://127.0.0.1:{port}")),
        request_timeout: Duration::from_millis(300),
        ..KubernetesSettings::default()
    })
    .await;
    assert!(
        matches!(unreachable, Err(KubernetesError::Unusable { .. })),
        "{unreachable:?}"
    );
    assert!(unreachable.is_err_and(|e| e.is_unreachable()));
}

/// Runs the whole suite against the cluster `KUBECONFIG` points at (namespace
/// `$FLOTILLA_K8S_NAMESPACE`, default `default`). Needs get/list/create/update on leases.
/// Run with `cargo test -p flotilla-lease-kubernetes -- --ignored` where a cluster exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real Kubernetes cluster: set KUBECONFIG and run with --ignored"]
async fn conformance_against_a_real_cluster() {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "set KUBECONFIG to a cluster to run this test"
    );
    let backend = KubernetesBackend::connect(KubernetesSettings {
        namespace: std::env::var("FLOTILLA_K8S_NAMESPACE").ok(),
        ..KubernetesSettings::default()
    })
    .await
    .unwrap();
    let target = RealCluster(Arc::new(Faulty::new(backend)));
    flotilla_lease::testing::contenders_get_exactly_one_grant(&target).await;
    flotilla_lease::testing::release_lets_another_owner_in_at_once_with_a_higher_token(&target)
        .await;
    flotilla_lease::testing::a_crashed_holders_lease_is_free_after_the_ttl_and_not_before(&target)
        .await;
    flotilla_lease::testing::transient_renewal_failures_keep_the_lease(&target).await;
    flotilla_lease::testing::release_is_idempotent(&target).await;
    flotilla_lease::testing::the_same_owner_gets_its_unexpired_lease_back_after_a_restart(&target)
        .await;
}

/// A real cluster cannot be paused or taken over from here: those checks run against the fake
/// API server only.
struct RealCluster(Arc<Faulty<KubernetesBackend>>);

impl flotilla_lease::testing::Target for RealCluster {
    fn backend(&self) -> Arc<dyn LeaseBackend> {
        Arc::clone(&self.0) as Arc<dyn LeaseBackend>
    }
    fn settings(&self) -> LeaseSettings {
        lease_settings()
    }
    fn take_over<'a>(
        &'a self,
        _: &'a LeaseName,
        _: &'a str,
    ) -> flotilla_lease::backend::BoxFuture<'a, ()> {
        Box::pin(async { panic!("not supported against a real cluster") })
    }
    fn disrupt(&self) -> flotilla_lease::backend::BoxFuture<'_, ()> {
        Box::pin(async { panic!("not supported against a real cluster") })
    }
    fn restore(&self) -> flotilla_lease::backend::BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn inject(&self, fault: flotilla_lease::testing::TransientFault) -> bool {
        self.0.inject(fault);
        true
    }
}
