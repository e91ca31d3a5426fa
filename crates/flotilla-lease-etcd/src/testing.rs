//! A real etcd server on 127.0.0.1 for the backend's tests (feature `testing`): the server of
//! [`flotilla_etcd::testing`], pausable for the lease conformance suite.

use std::time::Duration;

pub use flotilla_etcd::testing::{ServerError, ServerOptions};

/// A running etcd server ([`flotilla_etcd::testing::EtcdServer`]; everything it offers is
/// reached through `Deref`), which the conformance suite can pause.
#[derive(Debug)]
pub struct EtcdServer(pub flotilla_etcd::testing::EtcdServer);

impl EtcdServer {
    /// Starts a server and waits until it answers. Needs `etcd` on the PATH (or in `$ETCD_BIN`).
    pub async fn start() -> Result<Self, ServerError> {
        flotilla_etcd::testing::EtcdServer::start().await.map(Self)
    }

    /// Starts a server run as `options` say (TLS, client certificates, more arguments) and
    /// waits until it answers.
    pub async fn start_with(options: ServerOptions) -> Result<Self, ServerError> {
        flotilla_etcd::testing::EtcdServer::start_with(options)
            .await
            .map(Self)
    }
}

impl std::ops::Deref for EtcdServer {
    type Target = flotilla_etcd::testing::EtcdServer;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for EtcdServer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// SIGSTOP and SIGCONT.
impl flotilla_lease::testing::Pausable for EtcdServer {
    fn pause(&self) {
        self.0.pause();
    }

    fn resume(&self) {
        self.0.resume();
    }
}

/// Gives `lease` to `owner` on the server side, as another cluster or an operator would:
/// deletes the key and creates it again for `owner`, on a fresh etcd lease of `ttl`.
pub fn take_over<'a>(
    backend: &'a crate::EtcdBackend,
    _server: &'a EtcdServer,
    lease: &'a flotilla_lease::LeaseName,
    owner: &'a str,
    ttl: Duration,
) -> flotilla_lease::backend::BoxFuture<'a, Result<(), String>> {
    Box::pin(async move {
        take_over_now(backend, lease, owner, ttl)
            .await
            .map_err(|e| e.to_string())
    })
}

async fn take_over_now(
    backend: &crate::EtcdBackend,
    lease: &flotilla_lease::LeaseName,
    owner: &str,
    ttl: Duration,
) -> Result<(), flotilla_etcd::EtcdError> {
    let client = &backend.client;
    let key = backend.key(lease);
    client.delete(key.clone()).await?;
    let grant = client.lease_grant(flotilla_etcd::ttl_secs(ttl)).await?;
    let value = serde_json::json!({ "owner": owner, "acquired_at_unix_ms": 0 }).to_string();
    client.put(key, value, Some(grant)).await?;
    Ok(())
}
