//! `flotilla leases` against real servers: etcd and Azurite started on 127.0.0.1, and the
//! in-repo Kubernetes API server.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::process::Command;
use std::time::Duration;

use flotilla::lease::{LeaseBackend, LeaseName, OwnerId};
use flotilla::lease_azure::testing::AzuriteServer;
use flotilla::lease_azure::{AzureBackend, AzureSettings};
use flotilla::lease_etcd::testing::EtcdServer;
use flotilla::lease_etcd::{EtcdBackend, EtcdSettings};
use flotilla::lease_kubernetes::testing::FakeApiServer;
use flotilla::lease_kubernetes::{KubernetesBackend, KubernetesSettings};

async fn hold_two(backend: &dyn LeaseBackend) {
    let ttl = Duration::from_secs(60);
    for (lease, owner) in [
        ("shard-1", "flotilla://orders@10.0.0.1:2552"),
        ("shard-2", "node-b"),
    ] {
        let reply = backend
            .acquire(
                &LeaseName::new(lease).unwrap(),
                &OwnerId::new(owner).unwrap(),
                ttl,
            )
            .await;
        assert!(
            matches!(
                reply,
                flotilla::lease::backend::BackendReply::Granted { .. }
            ),
            "{reply:?}"
        );
    }
}

fn flotilla(args: &[&str]) -> (bool, String, String) {
    flotilla_with_env(args, None)
}

/// Runs `flotilla <args>`, with `env` (name, value) as the only Azure connection string in the
/// environment, if given.
fn flotilla_with_env(args: &[&str], env: Option<(&str, &str)>) -> (bool, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    cmd.args(args)
        .env_remove("AZURE_STORAGE_CONNECTION_STRING")
        .env_remove("FLOTILLA__LEASE__AZURE__CONNECTION_STRING");
    if let Some((name, value)) = env {
        cmd.env(name, value);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_listed(stdout: &str) {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(lines[0].starts_with("NAME"), "{stdout}");
    assert!(
        lines[1].starts_with("shard-1") && lines[1].contains("flotilla://orders@10.0.0.1:2552"),
        "{stdout}"
    );
    assert!(
        lines[2].starts_with("shard-2") && lines[2].contains("node-b"),
        "{stdout}"
    );
    // Held for a 60 s TTL just now: expiry a minute away (Azure adds a second of slack).
    assert!(
        ["59s", "1m00s", "1m01s"]
            .iter()
            .any(|e| lines[1].ends_with(e)),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_etcd_leases() {
    let server = EtcdServer::start().await.unwrap();
    let backend = EtcdBackend::connect(EtcdSettings::new([server.endpoint()]))
        .await
        .unwrap();
    hold_two(&backend).await;
    let endpoint = server.endpoint();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        flotilla(&["leases", "--backend", "etcd", "--endpoint", &endpoint])
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    assert_listed(&stdout);
    // With the first owner a member, only the other's lease is a zombie.
    let endpoint = server.endpoint();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        flotilla(&[
            "leases",
            "--backend",
            "etcd",
            "--endpoint",
            &endpoint,
            "--zombies",
            "--member",
            "flotilla://orders@10.0.0.1:2552",
        ])
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[1].starts_with("shard-2") && lines[1].contains("node-b"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_azure_leases() {
    let server = AzuriteServer::start().await.unwrap();
    let backend = AzureBackend::connect(AzureSettings {
        connection_string: server.connection_string(),
        ..AzureSettings::default()
    })
    .await
    .unwrap();
    hold_two(&backend).await;
    // The connection string, a secret, is never an argument: it comes from a file or from the
    // environment.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure");
    std::fs::write(&file, server.connection_string()).unwrap();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        let file = file.display().to_string();
        flotilla(&[
            "leases",
            "--backend",
            "azure",
            "--connection-string-file",
            &file,
        ])
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    assert_listed(&stdout);
    for var in [
        "FLOTILLA__LEASE__AZURE__CONNECTION_STRING",
        "AZURE_STORAGE_CONNECTION_STRING",
    ] {
        let cs = server.connection_string();
        let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
            flotilla_with_env(&["leases", "--backend", "azure"], Some((var, &cs)))
        })
        .await
        .unwrap();
        assert!(ok, "{var}: {stderr}");
        assert_listed(&stdout);
    }
    // The old option that took it as an argument is gone.
    let (ok, _, _) = flotilla(&[
        "leases",
        "--backend",
        "azure",
        "--connection-string",
        "UseDevelopmentStorage=true",
    ]);
    assert!(!ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_kubernetes_leases() {
    let server = FakeApiServer::start().await.unwrap();
    let backend = KubernetesBackend::connect(KubernetesSettings {
        api_server: Some(server.url().to_owned()),
        namespace: Some("orders".into()),
        ..KubernetesSettings::default()
    })
    .await
    .unwrap();
    hold_two(&backend).await;
    let url = server.url().to_owned();
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || {
        flotilla(&[
            "leases",
            "--backend",
            "kubernetes",
            "--api-server",
            &url,
            "--namespace",
            "orders",
        ])
    })
    .await
    .unwrap();
    assert!(ok, "{stderr}");
    assert_listed(&stdout);
}

#[test]
fn an_unreachable_backend_is_a_clear_error_not_a_panic() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let (ok, _, stderr) = flotilla(&["leases", "--backend", "etcd", "--endpoint", &endpoint]);
    assert!(!ok);
    assert!(
        stderr.contains("cannot use the etcd lease backend"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (ok, _, stderr) = flotilla_with_env(
        &["leases", "--backend", "azure"],
        Some(("AZURE_STORAGE_CONNECTION_STRING", "AccountName=x")),
    );
    assert!(!ok);
    assert!(stderr.contains("has no AccountKey"), "{stderr}");
    let (ok, _, stderr) = flotilla(&[
        "leases",
        "--backend",
        "azure",
        "--connection-string-file",
        "/nonexistent/azure",
    ]);
    assert!(!ok);
    assert!(stderr.contains("/nonexistent/azure"), "{stderr}");
}
