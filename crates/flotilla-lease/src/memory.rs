//! The in-memory backend: the embedded default for one process. Cheap to clone; clones share the
//! same leases, so several actor systems in one process (the demo, tests) contend for real.
//!
//! It keeps time with tokio's clock, so tests on paused time are exact. Faults can be injected
//! for tests: latency, failures (`Unknown` without applying), "applied but answered `Unknown`"
//! (a client-side timeout on a write that succeeded), hanging calls, and a takeover by another
//! owner. Like some real backends, it accepts a late renewal of a lapsed hold that nobody else
//! took: the holder must not rely on the backend to refuse it. The table itself, and its rules,
//! are [`LeaseTable`]'s, shared with the whole-cluster simulator.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use flotilla_proto::lease::{Hold, LeaseTable};

use crate::backend::{
    BackendReply, BoxFuture, FencingToken, LeaseBackend, LeaseName, LeaseRecord, OwnerId,
};

/// Faults to inject into the next calls.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Added before every answer.
    pub latency: Duration,
    /// The next this-many calls fail with `Unknown` and change nothing.
    pub fail_next: u32,
    /// The next this-many calls are applied but answer `Unknown`.
    pub applied_but_unknown_next: u32,
    /// While set, calls never answer (the driver's request timeout fires).
    pub hang: bool,
    /// The next this-many calls answer `Unknown` at once and are applied `apply_late_by` later,
    /// like a request held up in the network or in a paused server.
    pub apply_late_next: u32,
    /// How late a late call is applied.
    pub apply_late_by: Duration,
}

#[derive(Debug, Default)]
struct Store {
    /// The leases, under the rules of [`LeaseTable`] (tokens strictly increase per lease).
    table: LeaseTable,
    faults: Faults,
    calls: u64,
}

/// The in-memory lease backend. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    store: Arc<Mutex<Store>>,
}

enum Fault {
    None,
    Fail,
    AppliedButUnknown,
    AppliedLate(Duration),
    Hang,
}

impl MemoryBackend {
    /// An empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Replaces the injected faults.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// How many calls the backend has received.
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// Gives `lease` to `owner` on the backend side, as an operator or a split brain would.
    pub fn take_over(&self, lease: &LeaseName, owner: &str, ttl: Duration) -> FencingToken {
        self.lock()
            .table
            .take_over(lease.as_str(), owner, ttl, now())
    }

    fn next_fault(&self) -> (Fault, Duration) {
        let mut store = self.lock();
        store.calls += 1;
        let f = &mut store.faults;
        let fault = if f.hang {
            Fault::Hang
        } else if f.fail_next > 0 {
            f.fail_next -= 1;
            Fault::Fail
        } else if f.apply_late_next > 0 {
            f.apply_late_next -= 1;
            Fault::AppliedLate(f.apply_late_by)
        } else if f.applied_but_unknown_next > 0 {
            f.applied_but_unknown_next -= 1;
            Fault::AppliedButUnknown
        } else {
            Fault::None
        };
        (fault, f.latency)
    }

    /// Runs `apply` under the injected faults.
    async fn call(
        &self,
        apply: impl FnOnce(&mut Store, std::time::Instant) -> BackendReply + Send + 'static,
    ) -> BackendReply {
        let (fault, latency) = self.next_fault();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match fault {
            Fault::Hang => std::future::pending().await,
            Fault::Fail => BackendReply::Unknown {
                reason: "injected failure".into(),
            },
            Fault::AppliedLate(by) => {
                let this = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(by).await;
                    let _ = apply(&mut this.lock(), now());
                });
                BackendReply::Unknown {
                    reason: "injected: no answer, the request is still on its way".into(),
                }
            }
            Fault::AppliedButUnknown => {
                let _ = apply(&mut self.lock(), now());
                BackendReply::Unknown {
                    reason: "injected: applied, answer lost".into(),
                }
            }
            Fault::None => apply(&mut self.lock(), now()),
        }
    }
}

/// The current instant on tokio's clock (paused in tests), as the table's time.
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

/// The record of a live hold.
fn record(name: &str, h: &Hold, now: std::time::Instant) -> Option<LeaseRecord> {
    let granted_ago = now.saturating_duration_since(h.granted);
    Some(LeaseRecord {
        name: LeaseName::new(name).ok()?,
        owner: h.owner.clone(),
        token: h.token,
        acquired_at: SystemTime::now().checked_sub(granted_ago),
        expires_in: Some(h.expires.saturating_duration_since(now)),
    })
}

impl LeaseBackend for MemoryBackend {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn request_timeout(&self) -> Duration {
        Duration::from_secs(2)
    }

    fn acquire<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        ttl: Duration,
    ) -> BoxFuture<'a, BackendReply> {
        let (lease, owner) = (lease.clone(), owner.clone());
        Box::pin(self.call(move |store, now| {
            store
                .table
                .acquire(lease.as_str(), owner.as_str(), ttl, now)
        }))
    }

    fn renew<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        ttl: Duration,
        token: FencingToken,
    ) -> BoxFuture<'a, BackendReply> {
        let (lease, owner) = (lease.clone(), owner.clone());
        Box::pin(self.call(move |store, now| {
            store
                .table
                .renew(lease.as_str(), owner.as_str(), ttl, token, now)
        }))
    }

    fn release<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        token: Option<FencingToken>,
    ) -> BoxFuture<'a, BackendReply> {
        let (lease, owner) = (lease.clone(), owner.clone());
        Box::pin(self.call(move |store, now| {
            store
                .table
                .release(lease.as_str(), owner.as_str(), token, now)
        }))
    }

    fn inspect<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
    ) -> BoxFuture<'a, BackendReply> {
        let (lease, owner) = (lease.clone(), owner.clone());
        Box::pin(
            self.call(move |store, now| store.table.inspect(lease.as_str(), owner.as_str(), now)),
        )
    }

    fn describe<'a>(
        &'a self,
        lease: &'a LeaseName,
    ) -> BoxFuture<'a, Result<Option<LeaseRecord>, String>> {
        Box::pin(async move {
            let store = self.lock();
            let now = now();
            Ok(store
                .table
                .holder(lease.as_str(), now)
                .and_then(|h| record(lease.as_str(), h, now)))
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<LeaseRecord>, String>> {
        Box::pin(async move {
            let store = self.lock();
            let now = now();
            Ok(store
                .table
                .live(now)
                .filter_map(|(name, h)| record(name, h, now))
                .collect())
        })
    }
}
