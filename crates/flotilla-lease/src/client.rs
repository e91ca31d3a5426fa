//! The lease client: one backend, one owner identity, many leases.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use flotilla_core::{ConfigError, LeaseSettings};

use crate::backend::{LeaseBackend, LeaseName, OwnerId};
use crate::lease::{Lease, ReleaseOutcome, start};

/// Why a lease client or lease could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// The lease settings are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A lease client must be created inside a tokio runtime.
    #[error("a lease client must be created inside a tokio runtime")]
    NoRuntime,
    /// The client has shut down: it hands out no more leases.
    #[error("the {0} lease client has shut down")]
    Stopped(&'static str),
}

struct Inner {
    backend: Arc<dyn LeaseBackend>,
    settings: LeaseSettings,
    owner: OwnerId,
    runtime: tokio::runtime::Handle,
    leases: Mutex<BTreeMap<LeaseName, (Lease, tokio::task::JoinHandle<()>)>>,
    stopped: AtomicBool,
}

/// Hands out [`Lease`]s of one backend for one owner identity, and releases them all when it
/// shuts down. Cheap to clone.
///
/// ```
/// use std::sync::Arc;
/// use flotilla_lease::{AcquireOutcome, LeaseClient, LeaseName, MemoryBackend, OwnerId};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let client = LeaseClient::new(
///     Arc::new(MemoryBackend::new()),
///     flotilla_core::LeaseSettings::default(),
///     OwnerId::new("flotilla://orders@10.0.0.2:2552")?,
/// )?;
/// let lease = client.lease(LeaseName::new("orders-shard-7")?)?;
/// // The callback runs if the lease is lost while held (expired, taken over).
/// match lease.acquire(|event| eprintln!("lost: {event:?}")).await {
///     AcquireOutcome::Granted { token } => {
///         // Work only while `lease.check_lease()`; write `token` with every change.
///         assert!(lease.check_lease());
///         # let _ = token;
///     }
///     other => eprintln!("not granted: {other:?}"),
/// }
/// client.shutdown().await; // releases every lease, awaited
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct LeaseClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for LeaseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseClient")
            .field("backend", &self.inner.backend.kind())
            .field("owner", &self.inner.owner)
            .finish_non_exhaustive()
    }
}

impl LeaseClient {
    /// A client on its own. Call [`LeaseClient::shutdown`] when done — or start it with an
    /// actor system (`flotilla_cluster::LeaseClientExt::start`), which releases every lease
    /// when the system stops.
    pub fn new(
        backend: Arc<dyn LeaseBackend>,
        mut settings: LeaseSettings,
        owner: OwnerId,
    ) -> Result<Self, LeaseError> {
        if settings.lease_operation_timeout.is_none() {
            settings.lease_operation_timeout = Some(backend.default_operation_timeout());
        }
        settings.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| LeaseError::NoRuntime)?;
        Ok(Self {
            inner: Arc::new(Inner {
                backend,
                settings,
                owner,
                runtime,
                leases: Mutex::new(BTreeMap::new()),
                stopped: AtomicBool::new(false),
            }),
        })
    }

    /// The lease called `name`. Every call for the same name returns the same holder.
    pub fn lease(&self, name: LeaseName) -> Result<Lease, LeaseError> {
        if self.inner.stopped.load(Ordering::Acquire) {
            return Err(LeaseError::Stopped(self.inner.backend.kind()));
        }
        let mut leases = self
            .inner
            .leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = leases.entry(name.clone()).or_insert_with(|| {
            start(
                Arc::clone(&self.inner.backend),
                self.inner.settings.clone(),
                name,
                self.inner.owner.clone(),
                &self.inner.runtime,
            )
        });
        Ok(entry.0.clone())
    }

    /// The settings in force (with the backend's operation timeout filled in if none was set).
    pub fn settings(&self) -> &LeaseSettings {
        &self.inner.settings
    }

    /// The owner identity this client acquires for.
    pub fn owner(&self) -> &OwnerId {
        &self.inner.owner
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn LeaseBackend> {
        &self.inner.backend
    }

    /// Releases every lease concurrently and waits for all of them (each bounded by
    /// `lease-operation-timeout`), then stops. Later calls return at once with nothing.
    pub async fn shutdown(&self) -> Vec<(LeaseName, ReleaseOutcome)> {
        if self.inner.stopped.swap(true, Ordering::AcqRel) {
            return Vec::new();
        }
        let leases = std::mem::take(
            &mut *self
                .inner
                .leases
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let releases: Vec<_> = leases
            .values()
            .map(|(lease, _)| {
                let lease = lease.clone();
                self.inner
                    .runtime
                    .spawn(async move { (lease.name().clone(), lease.release().await) })
            })
            .collect();
        let mut outcomes = Vec::with_capacity(releases.len());
        for release in releases {
            if let Ok(outcome) = release.await {
                outcomes.push(outcome);
            }
        }
        for (_, (_, driver)) in leases {
            driver.abort();
        }
        let held: Vec<_> = outcomes
            .iter()
            .filter(|(_, o)| *o == ReleaseOutcome::Released)
            .map(|(n, _)| n.as_str())
            .collect();
        tracing::info!(
            backend = self.inner.backend.kind(),
            released = held.len(),
            "{} lease client stopped after releasing [{}]",
            self.inner.backend.kind(),
            held.join(", ")
        );
        outcomes
    }
}
