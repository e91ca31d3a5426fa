//! The client against a real etcd server started on 127.0.0.1 for each test: reads, writes,
//! transactions and etcd leases; TLS with a client certificate, and with a server certificate
//! only; authentication whose token expires, and whose password no error shows; a paused server.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::time::{Duration, Instant};

use flotilla_etcd::testing::{EtcdServer, ServerOptions};
use flotilla_etcd::{Client, Compare, CompareOp, EtcdError, EtcdSettings, Txn, TxnOp};

async fn client(server: &EtcdServer) -> Client {
    Client::connect(&server.client_settings()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_writes_transactions_and_leases() {
    let etcd = EtcdServer::start().await.unwrap();
    let c = client(&etcd).await;

    let revision = c.put("/t/a", "1", None).await.unwrap();
    assert!(revision > 0);
    let kv = c.get("/t/a").await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision),
        (&b"1"[..], revision)
    );
    assert_eq!(c.get("/t/missing").await.unwrap(), None);
    c.put("/t/b", "2", None).await.unwrap();
    c.put("/u/c", "3", None).await.unwrap();
    let keys: Vec<_> = c.get_prefix("/t/", true).await.unwrap();
    assert_eq!(
        keys.iter().map(|kv| kv.key.as_slice()).collect::<Vec<_>>(),
        [&b"/t/a"[..], b"/t/b"]
    );
    assert!(keys.iter().all(|kv| kv.value.is_empty()), "keys only");
    assert_eq!(c.count("/t/").await.unwrap(), 2);

    // Create-if-absent: the first succeeds, the second finds the key.
    let create = || {
        Txn::new()
            .when([Compare::create_revision("/t/new", CompareOp::Equal, 0)])
            .and_then([TxnOp::put("/t/new", "first", None)])
            .or_else([TxnOp::get("/t/new")])
    };
    let first = c.txn(create()).await.unwrap();
    assert!(first.succeeded);
    let second = c.txn(create()).await.unwrap();
    assert!(!second.succeeded);
    // Compare-and-swap on the mod revision.
    let written = first.header.unwrap().revision;
    let swap = |rev| {
        Txn::new()
            .when([Compare::mod_revision("/t/new", CompareOp::Equal, rev)])
            .and_then([TxnOp::put("/t/new", "second", None)])
    };
    assert!(c.txn(swap(written)).await.unwrap().succeeded);
    assert!(!c.txn(swap(written)).await.unwrap().succeeded, "stale");
    assert!(
        c.txn(Txn::new().when([Compare::value("/t/new", CompareOp::Equal, "second")]))
            .await
            .unwrap()
            .succeeded
    );
    assert_eq!(c.delete("/t/new").await.unwrap(), 1);
    assert_eq!(c.delete("/t/new").await.unwrap(), 0);

    // A key on an etcd lease lives as long as the lease.
    let lease = c.lease_grant(5).await.unwrap();
    c.put("/t/leased", "x", Some(lease)).await.unwrap();
    let ttl = c.lease_time_to_live(lease).await.unwrap().unwrap();
    assert!((1..=5).contains(&ttl), "{ttl}");
    assert_eq!(c.lease_keep_alive(lease).await.unwrap(), Some(5));
    c.lease_revoke(lease).await.unwrap();
    assert_eq!(c.get("/t/leased").await.unwrap(), None);
    assert_eq!(c.lease_keep_alive(lease).await.unwrap(), None, "gone");
    assert_eq!(c.lease_time_to_live(lease).await.unwrap(), None);
    assert!(c.status().await.unwrap().header.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let etcd = EtcdServer::start_with(ServerOptions {
        tls: true,
        client_cert_auth: true,
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    assert!(etcd.endpoint().starts_with("https://"));
    let c = client(&etcd).await;
    c.put("/tls/k", "v", None).await.unwrap();
    assert!(c.get("/tls/k").await.unwrap().is_some());

    // Without the client certificate the server refuses the handshake (reported by the
    // handshake or, as TLS 1.3 lets a server refuse after the client finished, by the first
    // request).
    let mut anonymous = etcd.client_settings();
    if let Some(tls) = anonymous.tls.as_mut() {
        tls.cert_file = None;
        tls.key_file = None;
    }
    let err = Client::connect(&anonymous).await.unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    // Without the authority (the public web roots) the server's certificate is not trusted.
    let untrusting = EtcdSettings {
        tls: None,
        ..etcd.client_settings()
    };
    let err = Client::connect(&untrusting).await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");
    // A missing file is a settings error that names it.
    let mut missing = etcd.client_settings();
    if let Some(tls) = missing.tls.as_mut() {
        tls.ca_file = Some("/nonexistent/ca.pem".into());
    }
    let err = Client::connect(&missing).await.unwrap_err();
    assert!(matches!(err, EtcdError::Config(_)), "{err}");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

/// TLS with a server certificate only (no `--client-cert-auth`): a client that trusts the
/// authority needs no certificate of its own; with authentication on, a password goes over the
/// encrypted connection, and a wrong one is refused without being shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_server_certificate_only_and_a_password() {
    let etcd = EtcdServer::start_with(ServerOptions {
        tls: true,
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let mut settings = etcd.client_settings();
    if let Some(tls) = settings.tls.as_mut() {
        tls.cert_file = None;
        tls.key_file = None;
    }
    let c = Client::connect(&settings).await.unwrap();
    c.put("/tls/k", "v", None).await.unwrap();

    const PASSWORD: &str = "Pw-only-in-this-test-5e1d";
    etcd.enable_auth("root", PASSWORD).await.unwrap();
    let with_password = |password: &str| EtcdSettings {
        user: Some("root".into()),
        password: Some(password.into()),
        ..settings.clone()
    };
    let c = Client::connect(&with_password(PASSWORD)).await.unwrap();
    assert!(c.get("/tls/k").await.unwrap().is_some());
    assert!(!format!("{c:?}").contains(PASSWORD));
    let wrong = "Wrong-pw-only-in-this-test-0b7c";
    let err = Client::connect(&with_password(wrong)).await.unwrap_err();
    assert!(matches!(err, EtcdError::Refused { .. }), "{err}");
    let shown = format!("{err} {err:?}");
    assert!(
        shown.contains("authentication failed")
            && !shown.contains(wrong)
            && !shown.contains(PASSWORD),
        "{shown}"
    );
    // Without a password, nothing is read.
    let err = Client::connect(&settings).await.unwrap_err();
    assert!(!err.is_unreachable(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_authentication_token_is_renewed() {
    let etcd = EtcdServer::start_with(ServerOptions {
        args: vec!["--auth-token-ttl=1".into()],
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    etcd.enable_auth("root", "pa55word").await.unwrap();
    let settings = EtcdSettings {
        user: Some("root".into()),
        password: Some("pa55word".into()),
        ..etcd.client_settings()
    };
    let c = Client::connect(&settings).await.unwrap();
    assert!(!format!("{c:?}").contains("pa55word"));
    c.put("/auth/k", "1", None).await.unwrap();
    // etcd forgets an unused simple token after its TTL (checked about every second).
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(c.get("/auth/k").await.unwrap().is_some());

    let wrong = EtcdSettings {
        password: Some("guess".into()),
        ..settings.clone()
    };
    let err = Client::connect(&wrong).await.unwrap_err();
    assert!(matches!(err, EtcdError::Refused { .. }), "{err}");
    assert!(!err.is_unreachable());
    assert!(!format!("{err} {err:?}").contains("guess"), "{err:?}");
    // Without credentials, nothing is read.
    let err = Client::connect(&etcd.client_settings()).await.unwrap_err();
    assert!(!err.is_unreachable(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_server_times_out_and_a_missing_one_is_unreachable() {
    let etcd = EtcdServer::start().await.unwrap();
    let settings = EtcdSettings {
        request_timeout: Duration::from_millis(500),
        ..etcd.client_settings()
    };
    let c = Client::connect(&settings).await.unwrap();
    etcd.pause();
    // SIGSTOP takes effect as the process is next scheduled.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let err = c.get("/p/k").await.unwrap_err();
    etcd.resume();
    assert!(matches!(err, EtcdError::Timeout { .. }), "{err}");
    assert!(err.is_unreachable());
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(c.get("/p/k").await.unwrap(), None, "answers once resumed");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Client::connect(&EtcdSettings {
        connect_timeout: Duration::from_millis(500),
        ..EtcdSettings::new([format!("http://127.0.0.1:{port}")])
    })
    .await
    .unwrap_err();
    assert!(err.is_unreachable(), "{err}");
}
