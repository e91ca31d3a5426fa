//! The lease conformance suite and Azure-specific behaviour, against a real Azurite blob service
//! started on 127.0.0.1 for each test.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use flotilla_core::LeaseSettings;
use flotilla_lease::backend::BackendReply;
use flotilla_lease::testing::{Faulty, ServerTarget};
use flotilla_lease::{LeaseBackend, LeaseName, OwnerId};
use flotilla_lease_azure::auth::{DEV_ACCOUNT, DEV_KEY};
use flotilla_lease_azure::testing::{AzuriteServer, take_over};
use flotilla_lease_azure::{AzureBackend, AzureError, AzureSettings};

const TTL: Duration = Duration::from_secs(4);

type Azure = ServerTarget<AzureBackend, AzuriteServer>;

fn settings(server: &AzuriteServer) -> AzureSettings {
    AzureSettings {
        connection_string: server.connection_string(),
        request_timeout: Duration::from_secs(1),
        ..AzureSettings::default()
    }
}

async fn start() -> Azure {
    let server = AzuriteServer::start().await.unwrap();
    let backend = AzureBackend::connect(settings(&server)).await.unwrap();
    ServerTarget {
        server,
        backend: Arc::new(Faulty::new(backend)),
        settings: LeaseSettings::new(TTL, Duration::from_secs(1))
            .unwrap()
            .with_operation_timeout(Duration::from_secs(2)),
        take_over,
    }
}

flotilla_lease::conformance_tests!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    start().await
);

/// Without a configured operation timeout, a client on Azure uses the backend's 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operation_timeout_defaults_to_azures_fifteen_seconds() {
    let azure = start().await;
    let client = flotilla_lease::LeaseClient::new(
        Arc::clone(&azure.backend) as Arc<dyn LeaseBackend>,
        LeaseSettings::default(),
        OwnerId::new("node-a").unwrap(),
    )
    .unwrap();
    assert_eq!(
        client.settings().operation_timeout(),
        Duration::from_secs(15)
    );
    let configured = flotilla_lease::LeaseClient::new(
        Arc::clone(&azure.backend) as Arc<dyn LeaseBackend>,
        LeaseSettings::default().with_operation_timeout(Duration::from_secs(7)),
        OwnerId::new("node-a").unwrap(),
    )
    .unwrap();
    assert_eq!(
        configured.settings().operation_timeout(),
        Duration::from_secs(7)
    );
}

fn name(n: &str) -> LeaseName {
    LeaseName::new(n).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_and_wrong_credentials_are_refused_at_connect() {
    let server = AzuriteServer::start().await.unwrap();
    let wrong_key = AzureBackend::connect(AzureSettings {
        connection_string: format!(
            "AccountName={DEV_ACCOUNT};AccountKey={};BlobEndpoint={}",
            DEV_KEY.replace('E', "F"),
            server.blob_endpoint()
        ),
        ..AzureSettings::default()
    })
    .await;
    let err = wrong_key.unwrap_err();
    assert!(
        matches!(err, AzureError::Unauthorized { status: 403, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("check the account"), "{err}");
    assert!(
        !err.is_unreachable(),
        "refused credentials need an operator"
    );

    for (cs, expect) in [
        ("AccountName=x;AccountKey=%%%", "not valid base64"),
        ("nonsense", "malformed connection string"),
        ("AccountName=x", "has no AccountKey"),
    ] {
        let err = AzureBackend::connect(AzureSettings {
            connection_string: cs.into(),
            ..AzureSettings::default()
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains(expect), "{cs}: {err}");
    }
    let bad_container = AzureBackend::connect(AzureSettings {
        container: "Bad_Name".into(),
        ..settings(&server)
    })
    .await;
    assert!(matches!(bad_container, Err(AzureError::Config(_))));
    assert!(bad_container.is_err_and(|e| !e.is_unreachable()));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = AzureBackend::connect(AzureSettings {
        connection_string: format!(
            "AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};\
             BlobEndpoint=http://127.0.0.1:{port}/{DEV_ACCOUNT}"
        ),
        request_timeout: Duration::from_millis(500),
        ..AzureSettings::default()
    })
    .await;
    assert!(
        matches!(unreachable, Err(AzureError::Unreachable { .. })),
        "{unreachable:?}"
    );
    assert!(unreachable.is_err_and(|e| e.is_unreachable()));
}

/// The record is never deleted, so tokens keep increasing across release and re-acquire by
/// different owners; listing shows live holds only; another cluster's record is respected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_listing_and_foreign_blobs() {
    let azure = start().await;
    let backend = azure.backend.inner();
    let (a, b) = (
        OwnerId::new("node-a").unwrap(),
        OwnerId::new("node-b").unwrap(),
    );
    let mut last = 0;
    for (i, who) in [&a, &b, &a, &b].into_iter().enumerate() {
        let BackendReply::Granted { token } = backend.acquire(&name("shard-3"), who, TTL).await
        else {
            panic!("acquire {i}")
        };
        assert!(token.0 > last, "token {token} after {last}");
        last = token.0;
        if i < 3 {
            assert_eq!(
                backend.release(&name("shard-3"), who, Some(token)).await,
                BackendReply::Released { was_held: true }
            );
        }
    }
    backend.acquire(&name("shard-4"), &a, TTL).await;
    backend.release(&name("shard-4"), &a, None).await;
    let records = backend.list().await.unwrap();
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].name.as_str(), "shard-3");
    assert_eq!(records[0].owner, "node-b");
    assert!(
        records[0]
            .expires_in
            .is_some_and(|e| e <= TTL + Duration::from_secs(1))
    );

    // A blob that is not a lease record is held by nobody we know: never overwritten.
    let http = reqwest::Client::new();
    let _ = http; // the record writer below uses the backend's own signed requests
    take_over(backend, &azure.server, &name("foreign"), "x", TTL)
        .await
        .unwrap();
    assert!(matches!(
        backend.acquire(&name("foreign"), &a, TTL).await,
        BackendReply::Denied { .. }
    ));
}

/// No error — of connect, or of a lease operation that failed afterwards — carries the SAS token
/// or the account key, neither in its text nor in its `Debug`: a request URL carries the SAS
/// token in its query, and an HTTP error names its URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_error_carries_the_sas_token_or_the_account_key() {
    let server = AzuriteServer::start().await.unwrap();
    let sas = server.sas_connection_string();
    let signature = sas.rsplit_once("sig=").unwrap().1.to_owned();
    let wrong_key = DEV_KEY.replace('E', "F");
    let clean = |what: &str, text: &str| {
        for secret in [
            signature.as_str(),
            "sig=",
            DEV_KEY,
            &wrong_key,
            "AccountKey=",
        ] {
            assert!(!text.contains(secret), "{what} shows {secret:?}: {text}");
        }
    };
    let connect = |connection_string: String| {
        AzureBackend::connect(AzureSettings {
            connection_string,
            request_timeout: Duration::from_millis(500),
            ..AzureSettings::default()
        })
    };

    // A SAS token works: the backend creates its container and takes a lease with it.
    let backend = connect(sas.clone()).await.unwrap();
    let owner = OwnerId::new("node-a").unwrap();
    let reply = backend.acquire(&name("sas"), &owner, TTL).await;
    assert!(matches!(reply, BackendReply::Granted { .. }), "{reply:?}");

    // Nothing listens: unreachable, with the SAS token in the request URL.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let closed = sas.replace(
        &server.blob_endpoint(),
        &format!("http://127.0.0.1:{port}/x"),
    );
    let err = connect(closed).await.unwrap_err();
    assert!(err.is_unreachable(), "{err}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
    clean("unreachable", &format!("{err} {err:?}"));

    // A forged signature, and a wrong account key: refused.
    let forged = sas.replace(&signature, "Rm9yZ2VkU2lnbmF0dXJl");
    let err = connect(forged).await.unwrap_err();
    assert!(matches!(err, AzureError::Unauthorized { .. }), "{err}");
    clean("forged SAS", &format!("{err} {err:?}"));
    assert!(!err.to_string().contains("Rm9yZ2Vk"), "{err}");
    let err = connect(format!(
        "AccountName={DEV_ACCOUNT};AccountKey={wrong_key};BlobEndpoint={}",
        server.blob_endpoint()
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, AzureError::Unauthorized { .. }), "{err}");
    clean("wrong key", &format!("{err} {err:?}"));

    // A SAS URL given as the blob endpoint is refused without being repeated.
    let token = sas.rsplit_once("SharedAccessSignature=").unwrap().1;
    let err = connect(format!(
        "AccountName={DEV_ACCOUNT};AccountKey={DEV_KEY};BlobEndpoint={}?{token}",
        server.blob_endpoint()
    ))
    .await
    .unwrap_err();
    assert!(matches!(err, AzureError::Config(_)), "{err}");
    clean("SAS in the endpoint", &format!("{err} {err:?}"));

    // The service goes away: every operation's answer says why, without the token.
    drop(server);
    let token = match backend.acquire(&name("sas-2"), &owner, TTL).await {
        BackendReply::Unknown { reason } => {
            clean("acquire", &reason);
            assert!(reason.contains("Azure request failed"), "{reason}");
            None
        }
        other => Some(other),
    };
    assert_eq!(token, None, "acquire without a service");
    for reply in [
        backend
            .renew(&name("sas"), &owner, TTL, flotilla_lease::FencingToken(1))
            .await,
        backend.release(&name("sas"), &owner, None).await,
    ] {
        assert!(matches!(reply, BackendReply::Unknown { .. }), "{reply:?}");
        clean("renew or release", &format!("{reply:?}"));
    }
    let err = backend.describe(&name("sas")).await.unwrap_err();
    clean("describe", &err);
    let err = backend.list().await.unwrap_err();
    clean("list", &err);
}
