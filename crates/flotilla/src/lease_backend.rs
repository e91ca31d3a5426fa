//! The lease backend `[lease] backend` names, connected.

use std::sync::Arc;
use std::time::Duration;

use flotilla_core::{LeaseBackendKind, LeaseSettings};
use flotilla_lease::{DeferredBackend, LeaseBackend, MemoryBackend};

use crate::NodeError;

/// Why one connection attempt failed, and whether trying again later can help.
struct Failed {
    unreachable: bool,
    message: String,
}

#[cfg(any(feature = "etcd", feature = "azure", feature = "kubernetes"))]
fn failed<E: std::error::Error>(unreachable: fn(&E) -> bool) -> impl FnOnce(E) -> Failed {
    move |e| Failed {
        unreachable: unreachable(&e),
        message: e.to_string(),
    }
}

fn missing(kind: LeaseBackendKind) -> NodeError {
    NodeError::FeatureMissing {
        what: format!("lease backend {:?}", kind.as_str()),
        feature: kind.as_str(),
    }
}

async fn try_connect(settings: &LeaseSettings) -> Result<Arc<dyn LeaseBackend>, Failed> {
    match settings.backend {
        #[cfg(feature = "etcd")]
        LeaseBackendKind::Etcd => Ok(Arc::new(
            flotilla_lease_etcd::EtcdBackend::connect(settings.etcd.clone())
                .await
                .map_err(failed(flotilla_lease_etcd::EtcdError::is_unreachable))?,
        )),
        #[cfg(feature = "azure")]
        LeaseBackendKind::Azure => Ok(Arc::new(
            flotilla_lease_azure::AzureBackend::connect(settings.azure.clone())
                .await
                .map_err(failed(flotilla_lease_azure::AzureError::is_unreachable))?,
        )),
        #[cfg(feature = "kubernetes")]
        LeaseBackendKind::Kubernetes => Ok(Arc::new(
            flotilla_lease_kubernetes::KubernetesBackend::connect(settings.kubernetes.clone())
                .await
                .map_err(failed(
                    flotilla_lease_kubernetes::KubernetesError::is_unreachable,
                ))?,
        )),
        _ => Ok(Arc::new(MemoryBackend::new())),
    }
}

/// The request timeout and recommended operation timeout of the configured backend.
fn timeouts(settings: &LeaseSettings) -> (Duration, Duration) {
    let default = LeaseSettings::DEFAULT_OPERATION_TIMEOUT;
    match settings.backend {
        LeaseBackendKind::Etcd => (settings.etcd.request_timeout, default),
        // Azure Blob Storage's recommendation (see flotilla-lease-azure).
        LeaseBackendKind::Azure => (settings.azure.request_timeout, Duration::from_secs(15)),
        LeaseBackendKind::Kubernetes => (settings.kubernetes.call_timeout(), default),
        _ => (default, default),
    }
}

/// Connects to the backend `settings` names now: an error if it cannot be reached, refuses the
/// settings or credentials, or is not compiled in (for tools that need an answer at once).
pub async fn connect_now(settings: &LeaseSettings) -> Result<Arc<dyn LeaseBackend>, NodeError> {
    compiled(settings.backend)?;
    try_connect(settings)
        .await
        .map_err(|f| NodeError::LeaseBackend {
            kind: settings.backend.as_str(),
            reason: f.message,
        })
}

fn compiled(kind: LeaseBackendKind) -> Result<(), NodeError> {
    // reason: which arms are true depends on the features compiled in
    #[allow(clippy::match_like_matches_macro)]
    let compiled = match kind {
        LeaseBackendKind::Etcd => cfg!(feature = "etcd"),
        LeaseBackendKind::Azure => cfg!(feature = "azure"),
        LeaseBackendKind::Kubernetes => cfg!(feature = "kubernetes"),
        _ => true,
    };
    if compiled { Ok(()) } else { Err(missing(kind)) }
}

/// Connects to the backend `settings` names (`[lease] backend`, and its table).
///
/// Unusable settings or refused credentials are an error. A backend that cannot be reached yet
/// does not keep a node from starting: it gets a [`DeferredBackend`] that keeps connecting in
/// the background, and shards take their leases once the backend answers. A backend whose cargo
/// feature is off is an error that names the feature.
pub async fn connect(settings: &LeaseSettings) -> Result<Arc<dyn LeaseBackend>, NodeError> {
    let kind = settings.backend;
    compiled(kind)?;
    let first = match try_connect(settings).await {
        Ok(backend) => return Ok(backend),
        Err(Failed {
            unreachable: true,
            message,
        }) => message,
        Err(Failed { message, .. }) => {
            return Err(NodeError::LeaseBackend {
                kind: kind.as_str(),
                reason: message,
            });
        }
    };
    // DeferredBackend says, once, that it starts without the backend.
    let (request_timeout, operation_timeout) = timeouts(settings);
    let retry = settings.clone();
    let connect: flotilla_lease::deferred::Connect = Arc::new(move || {
        let settings = retry.clone();
        Box::pin(async move { try_connect(&settings).await.map_err(|f| f.message) })
    });
    Ok(Arc::new(DeferredBackend::new(
        kind.as_str(),
        request_timeout,
        operation_timeout,
        first,
        connect,
    )))
}
