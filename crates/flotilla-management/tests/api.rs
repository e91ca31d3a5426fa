//! The management API against a real two-node cluster in one process (127.0.0.1, real TCP),
//! with a sharded entity type whose shards hold leases in the in-memory backend: every
//! endpoint's answer, bad input (4xx with a JSON error, never a panic), the bearer token,
//! leave through the API, and `/metrics` checked by `promtool check metrics`.

// The helpers below are test code too: a panic there is the failure report.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use flotilla_cluster::MemberStatus;
use flotilla_core::ManagementSettings;
use flotilla_lease::MemoryBackend;
use flotilla_management::Management;
use flotilla_management::api::{ApiError, Operation};
use flotilla_management::client::{Client, ClientError};

mod common;
use common::{LIMIT, Msg, eventually, node};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_bad_input_is_refused_and_leave_works() {
    let backend = MemoryBackend::new();
    let a = node(&backend).await;
    let b = node(&backend).await;
    let seed = a.cluster.self_address().clone();
    a.cluster.join_seed_nodes(vec![seed.clone()]);
    b.cluster.join_seed_nodes(vec![seed]);
    let management = common::management(&a, &backend, "s3cret").await;
    let url = management.url();
    let client = Client::new(&url, Some("s3cret".into()), None, LIMIT).unwrap();

    // Ready once both are Up and the region is registered.
    eventually("ready", async || {
        let h = client.ready().await.unwrap();
        let members = a.cluster.state().members;
        (h.ok && members.len() == 2 && members.iter().all(|m| m.status == MemberStatus::Up))
            .then_some(())
    })
    .await;
    for i in 0..40 {
        a.region.entity_ref(&format!("e{i}")).tell(Msg::Add(1));
    }
    let shards = eventually("40 entities on the two nodes", async || {
        let s = client.shards().await.unwrap();
        let total: usize = s.regions[0].cluster.iter().map(|n| n.entities).sum();
        (total == 40 && s.regions[0].cluster.len() == 2).then_some(s)
    })
    .await;
    assert_eq!(shards.regions[0].type_name, "counter");
    assert!(shards.regions[0].registered);

    let members = client.members().await.unwrap();
    assert_eq!(members.self_node, a.cluster.self_node().to_string());
    assert_eq!(members.members.len(), 2);
    assert!(
        members
            .members
            .iter()
            .all(|m| m.status == "Up" && m.reachable)
    );
    let status = client.status().await.unwrap();
    assert_eq!(status.members_by_status.get("Up"), Some(&2));
    assert!(status.ready);
    let assoc = client.associations().await.unwrap();
    assert!(
        assoc
            .associations
            .iter()
            .any(|x| x.remote == b.cluster.self_address().to_string() && x.state == "Active"),
        "{assoc:?}"
    );
    let leases = client.leases().await.unwrap();
    assert_eq!(leases.backend.as_deref(), Some("memory"));
    assert!(!leases.leases.is_empty());
    assert_eq!(leases.zombies, 0, "{leases:?}");
    let events = client.events(0).await.unwrap();
    assert!(
        events
            .events
            .iter()
            .any(|e| e.kind == "member" && e.text.contains("is up")),
        "{events:?}"
    );

    // Bad input: a JSON error and a 4xx, never a panic.
    let http = reqwest::Client::new();
    let b_addr = flotilla_management::client::percent_encode(&b.cluster.self_address().to_string());
    let put = |path: String, token: Option<&str>, body: &str| {
        let mut r = http
            .put(format!("{url}{path}"))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let cases = [
        (
            put(
                format!("/cluster/members/{b_addr}"),
                None,
                r#"{"operation":"leave"}"#,
            )
            .await,
            401,
        ),
        (
            put(
                format!("/cluster/members/{b_addr}"),
                Some("wrong"),
                r#"{"operation":"leave"}"#,
            )
            .await,
            401,
        ),
        (
            put(
                "/cluster/members/not%20an%20address".into(),
                Some("s3cret"),
                r#"{"operation":"leave"}"#,
            )
            .await,
            400,
        ),
        (
            put(
                format!("/cluster/members/{b_addr}"),
                Some("s3cret"),
                r#"{"operation":"explode"}"#,
            )
            .await,
            400,
        ),
        (
            put(
                format!("/cluster/members/{b_addr}"),
                Some("s3cret"),
                "not json",
            )
            .await,
            400,
        ),
        (
            put(
                "/cluster/members/mgmt%40127.0.0.1%3A1".into(),
                Some("s3cret"),
                r#"{"operation":"down"}"#,
            )
            .await,
            404,
        ),
        (http.get(format!("{url}/no/such/thing")).send().await, 404),
        (
            http.get(format!("{url}/events?after=yesterday"))
                .send()
                .await,
            400,
        ),
    ];
    for (response, want) in cases {
        let response = response.unwrap();
        assert_eq!(response.status().as_u16(), want);
        let body: ApiError = response.json().await.unwrap();
        assert!(!body.error.is_empty());
    }
    // The typed client reports a refusal with the endpoint's words.
    let anonymous = Client::new(&url, None, None, LIMIT).unwrap();
    let refused = anonymous
        .member_operation(&b.cluster.self_address().to_string(), Operation::Leave)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ClientError::Refused { status: 401, .. }),
        "{refused}"
    );

    // The dashboard page is served, embedded.
    let page = http.get(&url).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("<title>Flotilla dashboard</title>"));

    // /metrics passes promtool's checks.
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "flotilla_cluster_members_by_status",
        "flotilla_remote_associations",
        "flotilla_sharding_region_shards",
        "flotilla_lease_zombies",
        "flotilla_remote_frames_sent_total",
        "flotilla_lease_acquire_seconds_bucket",
    ] {
        assert!(
            metrics.contains(name),
            "{name} missing from /metrics:\n{metrics}"
        );
    }
    promtool_check(&metrics);

    // Leave through the API: b goes, a sees it removed.
    let accepted = client
        .member_operation(&b.cluster.self_address().to_string(), Operation::Leave)
        .await
        .unwrap();
    assert!(accepted.message.contains("leave"));
    eventually("b removed", async || {
        let m = client.members().await.unwrap();
        (m.members.len() == 1).then_some(())
    })
    .await;
    b.system.when_terminated().await;
    management.stop();
    a.system.terminate().await;
}

/// `promtool check metrics` (Debian's `prometheus` package; scripts/install-test-deps.sh).
fn promtool_check(text: &str) {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}); run scripts/install-test-deps.sh"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool refused /metrics:\n{said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_a_clear_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = Client::new(
        &format!("127.0.0.1:{port}"),
        None,
        None,
        Duration::from_secs(2),
    )
    .unwrap();
    let e = client.status().await.unwrap_err();
    assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
    assert!(
        e.to_string()
            .contains("cannot reach the management endpoint"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_serves_https_with_the_configured_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("m.crt"), dir.path().join("m.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();

    let backend = MemoryBackend::new();
    let a = node(&backend).await;
    a.cluster.join(a.cluster.self_address().clone());
    let management = Management::builder(&a.system, &a.cluster)
        .settings(ManagementSettings {
            port: 0,
            tls: Some(flotilla_core::ManagementTls {
                certificate: cert_file,
                private_key: key_file,
            }),
            ..ManagementSettings::default()
        })
        .start()
        .await
        .unwrap();
    assert!(management.url().starts_with("https://127.0.0.1:"));
    let client = Client::new(&management.url(), None, Some(ca.pem().as_bytes()), LIMIT).unwrap();
    let status = client.status().await.unwrap();
    assert_eq!(status.self_node, a.cluster.self_node().to_string());
    // Without the CA, the certificate is not trusted: a clear error, not an answer.
    let untrusting = Client::new(&management.url(), None, None, LIMIT).unwrap();
    assert!(matches!(
        untrusting.status().await,
        Err(ClientError::Unreachable { .. })
    ));
    // Plain HTTP to it gets no answer either.
    let plain = Client::new(
        &format!("http://{}", management.local_addr()),
        None,
        None,
        Duration::from_secs(3),
    )
    .unwrap();
    assert!(plain.status().await.is_err());
    // Bad TLS files are refused at start.
    let refused = Management::builder(&a.system, &a.cluster)
        .settings(ManagementSettings {
            port: 0,
            tls: Some(flotilla_core::ManagementTls {
                certificate: dir.path().join("missing.crt"),
                private_key: dir.path().join("missing.key"),
            }),
            ..ManagementSettings::default()
        })
        .start()
        .await;
    assert!(matches!(
        refused,
        Err(flotilla_management::ManagementError::Tls(_))
    ));
    management.stop();
    a.system.terminate().await;
}
