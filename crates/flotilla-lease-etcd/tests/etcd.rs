//! The lease conformance suite and etcd-specific behaviour, against a real etcd server started
//! on 127.0.0.1 for each test.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use flotilla_core::LeaseSettings;
use flotilla_lease::backend::BackendReply;
use flotilla_lease::testing::{Faulty, ServerTarget, Target};
use flotilla_lease::{
    AcquireOutcome, LeaseBackend, LeaseClient, LeaseName, OwnerId, ReleaseOutcome,
};
use flotilla_lease_etcd::testing::{EtcdServer, ServerOptions, take_over};
use flotilla_lease_etcd::{EtcdBackend, EtcdError, EtcdSettings};

const TTL: Duration = Duration::from_secs(4);

type Etcd = ServerTarget<EtcdBackend, EtcdServer>;

async fn start() -> Etcd {
    let server = EtcdServer::start().await.unwrap();
    let backend = EtcdBackend::connect(settings(&server)).await.unwrap();
    ServerTarget {
        server,
        backend: Arc::new(Faulty::new(backend)),
        settings: lease_settings(),
        take_over,
    }
}

fn settings(server: &EtcdServer) -> EtcdSettings {
    EtcdSettings {
        request_timeout: Duration::from_secs(1),
        ..EtcdSettings::new([server.endpoint()])
    }
}

fn lease_settings() -> LeaseSettings {
    LeaseSettings::new(TTL, Duration::from_secs(1))
        .unwrap()
        .with_operation_timeout(Duration::from_secs(2))
}

flotilla_lease::conformance_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    start().await
);

fn name(n: &str) -> LeaseName {
    LeaseName::new(n).unwrap()
}

fn owner(n: &str) -> OwnerId {
    OwnerId::new(n).unwrap()
}

/// A holder keeps its lease across an etcd restart: renewals fail while etcd is down, succeed
/// once it is back, and nothing is lost inside the TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_keeps_its_lease_across_an_etcd_restart() {
    let mut etcd = start().await;
    let client = LeaseClient::new(etcd.backend(), lease_settings(), owner("node-a")).unwrap();
    let lease = client.lease(name("shard-1")).unwrap();
    let lost = Arc::new(AtomicU32::new(0));
    let l = Arc::clone(&lost);
    let AcquireOutcome::Granted { token } = lease
        .acquire(move |_| {
            l.fetch_add(1, Ordering::SeqCst);
        })
        .await
    else {
        panic!("first acquire")
    };
    etcd.server.restart().await.unwrap();
    // Renewals reach the restarted server; give them two intervals.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(lease.check_lease(), "the lease survives an etcd restart");
    assert_eq!(lost.load(Ordering::SeqCst), 0);
    let record = etcd
        .backend
        .describe(&name("shard-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((record.owner.as_str(), record.token), ("node-a", token));
    assert_eq!(lease.release().await, ReleaseOutcome::Released);
    client.shutdown().await;
}

/// Documented etcd behaviour: a restart gives every lease its full TTL back, so a lease nobody
/// renews outlives its TTL by up to the time it had already run before the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_restart_gives_unrenewed_leases_their_full_ttl_back() {
    let mut etcd = start().await;
    let crashed = owner("crashed-node");
    let started = tokio::time::Instant::now();
    let reply = etcd.backend.acquire(&name("orphan"), &crashed, TTL).await;
    assert!(matches!(reply, BackendReply::Granted { .. }), "{reply:?}");
    tokio::time::sleep(TTL * 3 / 4).await;
    etcd.server.restart().await.unwrap();
    let restarted = tokio::time::Instant::now();
    // Past the original expiry, the lease still stands...
    tokio::time::sleep_until(started + TTL + Duration::from_millis(500)).await;
    let still = etcd.backend.describe(&name("orphan")).await.unwrap();
    assert_eq!(still.map(|r| r.owner), Some("crashed-node".to_owned()));
    // ...until a full TTL after the restart.
    let taker = owner("survivor");
    loop {
        match etcd.backend.acquire(&name("orphan"), &taker, TTL).await {
            BackendReply::Granted { .. } => break,
            BackendReply::Denied { .. } if restarted.elapsed() < TTL * 3 => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => panic!("never freed after the restart: {other:?}"),
        }
    }
    assert!(restarted.elapsed() >= TTL - Duration::from_millis(500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_and_credentials_are_refused_at_connect() {
    let no_scheme = EtcdBackend::connect(EtcdSettings::new(["127.0.0.1:2379"])).await;
    assert!(
        matches!(&no_scheme, Err(EtcdError::Config(m)) if m.contains("must be a URL")),
        "{no_scheme:?}"
    );
    let empty = EtcdBackend::connect(EtcdSettings::new(Vec::<String>::new())).await;
    assert!(matches!(empty, Err(EtcdError::Config(_))), "{empty:?}");
    assert!(empty.is_err_and(|e| !e.is_unreachable()));
    let malformed = EtcdBackend::connect(EtcdSettings::new(["http://[::1"])).await;
    assert!(malformed.is_err(), "{malformed:?}");

    // Nothing listens on a port just freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = tokio::time::Instant::now();
    let unreachable = EtcdBackend::connect(EtcdSettings {
        connect_timeout: Duration::from_millis(500),
        ..EtcdSettings::new([format!("http://127.0.0.1:{port}")])
    })
    .await;
    let err = unreachable.unwrap_err();
    assert!(matches!(err, EtcdError::Unreachable { .. }), "{err}");
    assert!(err.is_unreachable(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A server with authentication on: a wrong password is refused at connect, the right one works.
    let etcd = EtcdServer::start().await.unwrap();
    etcd.enable_auth("root", "s3cret").await.unwrap();
    let with_user = |password: &str| EtcdSettings {
        user: Some("root".into()),
        password: Some(password.into()),
        ..EtcdSettings::new([etcd.endpoint()])
    };
    let err = EtcdBackend::connect(with_user("wrong")).await.unwrap_err();
    assert!(matches!(err, EtcdError::Refused { .. }), "{err}");
    assert!(err.to_string().contains("authentication failed"), "{err}");
    assert!(
        !err.to_string().contains("wrong"),
        "no password in errors: {err}"
    );
    assert!(
        !err.is_unreachable(),
        "refused credentials need an operator: {err:?}"
    );
    let backend = EtcdBackend::connect(with_user("s3cret")).await.unwrap();
    let reply = backend
        .acquire(&name("secured"), &owner("node-a"), TTL)
        .await;
    assert!(matches!(reply, BackendReply::Granted { .. }), "{reply:?}");
    let half = EtcdBackend::connect(EtcdSettings {
        user: Some("flotilla".into()),
        ..EtcdSettings::new([etcd.endpoint()])
    })
    .await;
    assert!(matches!(half, Err(EtcdError::Config(_))), "{half:?}");
}

/// Listing shows owner, token and time left; keys not written by Flotilla are never taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_and_foreign_keys() {
    let etcd = start().await;
    let backend = etcd.backend.inner();
    let a = owner("node-a");
    let BackendReply::Granted { token } = backend.acquire(&name("shard-7"), &a, TTL).await else {
        panic!("acquire")
    };
    let records = backend.list().await.unwrap();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        (r.name.as_str(), r.owner.as_str(), r.token),
        ("shard-7", "node-a", token)
    );
    assert!(r.expires_in.is_some_and(|e| e <= TTL));
    assert!(r.acquired_at.is_some());

    let raw = flotilla_etcd::Client::connect(&EtcdSettings::new([etcd.server.endpoint()]))
        .await
        .unwrap();
    raw.put("/flotilla/leases/manual", "someone-by-hand", None)
        .await
        .unwrap();
    let reply = backend.acquire(&name("manual"), &a, TTL).await;
    assert_eq!(
        reply,
        BackendReply::Denied {
            holder: Some("someone-by-hand".into())
        }
    );
    assert_eq!(
        backend.release(&name("manual"), &a, None).await,
        BackendReply::Released { was_held: false }
    );
}

/// A password only these tests use, to look for in every error text.
const PASSWORD: &str = "Pw-only-in-etcd-tests-7f3a";

/// A server with authentication on (user `root`, [`PASSWORD`]) run as `options` say, and client
/// settings with its TLS files, if any, and the password.
async fn secured(options: ServerOptions) -> (EtcdServer, EtcdSettings) {
    let server = EtcdServer::start_with(options).await.unwrap();
    server.enable_auth("root", PASSWORD).await.unwrap();
    let settings = EtcdSettings {
        user: Some("root".into()),
        password: Some(PASSWORD.into()),
        request_timeout: Duration::from_secs(1),
        ..server.client_settings()
    };
    (server, settings)
}

/// The conformance suite over TLS, with a client certificate (etcd's `--client-cert-auth`) and
/// password authentication: what a production etcd asks of its clients.
mod over_tls_with_a_client_certificate_and_a_password {
    use super::*;

    async fn start() -> Etcd {
        let (server, settings) = secured(ServerOptions {
            tls: true,
            client_cert_auth: true,
            ..ServerOptions::default()
        })
        .await;
        assert!(settings.endpoints[0].starts_with("https://"));
        let backend = EtcdBackend::connect(settings).await.unwrap();
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
}

/// Over TLS with a server certificate only, and a password: leases work; a client that does not
/// trust the authority, or gives a wrong password, is refused at connect — and no error shows
/// a password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_a_server_certificate_and_a_password() {
    let (_server, settings) = secured(ServerOptions {
        tls: true,
        ..ServerOptions::default()
    })
    .await;
    let mut no_client_certificate = settings.clone();
    if let Some(tls) = no_client_certificate.tls.as_mut() {
        tls.cert_file = None;
        tls.key_file = None;
    }
    let backend = EtcdBackend::connect(no_client_certificate.clone())
        .await
        .unwrap();
    assert!(!format!("{backend:?}").contains(PASSWORD));
    let a = owner("node-a");
    let BackendReply::Granted { token } = backend.acquire(&name("tls-1"), &a, TTL).await else {
        panic!("acquire over TLS")
    };
    assert_eq!(
        backend.renew(&name("tls-1"), &a, TTL, token).await,
        BackendReply::Renewed
    );
    assert_eq!(
        backend.release(&name("tls-1"), &a, Some(token)).await,
        BackendReply::Released { was_held: true }
    );

    let wrong = "Wrong-pw-only-in-etcd-tests-91c2";
    let err = EtcdBackend::connect(EtcdSettings {
        password: Some(wrong.into()),
        ..no_client_certificate.clone()
    })
    .await
    .unwrap_err();
    assert!(matches!(err, EtcdError::Refused { .. }), "{err}");
    assert!(!err.is_unreachable(), "{err}");
    let shown = format!("{err} {err:?}");
    assert!(
        shown.contains("authentication failed")
            && !shown.contains(wrong)
            && !shown.contains(PASSWORD),
        "{shown}"
    );
    // Without the authority, the server's certificate is not trusted: unreachable, with the
    // password still nowhere.
    let err = EtcdBackend::connect(EtcdSettings {
        tls: None,
        connect_timeout: Duration::from_secs(1),
        ..no_client_certificate
    })
    .await
    .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(
        shown.contains("certificate") && !shown.contains(PASSWORD),
        "{shown}"
    );
}
