//! The in-memory backend: the embedded default for one process. Cheap to clone; clones share the
//! same leases, so several actor systems in one process (the demo, tests) contend for real.
//!
//! It keeps time with tokio's clock, so tests on paused time are exact. Faults can be injected
//! for tests: latency, failures (`Unknown` without applying), "applied but answered `Unknown`"
//! (a client-side timeout on a write that succeeded), hanging calls, and a takeover by another
//! owner. Like some real backends, it accepts a late renewal of a lapsed hold that nobody else
//! took: the holder must not rely on the backend to refuse it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::backend::{
    BackendReply, BoxFuture, FencingToken, LeaseBackend, LeaseName, LeaseRecord, OwnerId,
};

#[derive(Debug, Clone)]
struct Hold {
    owner: String,
    token: FencingToken,
    expires: Instant,
    acquired_at: SystemTime,
}

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
    holds: BTreeMap<LeaseName, Hold>,
    /// The last token handed out per lease: tokens strictly increase per lease.
    last_token: BTreeMap<LeaseName, u64>,
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
        let mut store = self.lock();
        let token = next_token(&mut store, lease);
        store.holds.insert(
            lease.clone(),
            Hold {
                owner: owner.to_owned(),
                token,
                expires: Instant::now() + ttl,
                acquired_at: SystemTime::now(),
            },
        );
        token
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
        apply: impl FnOnce(&mut Store, Instant) -> BackendReply + Send + 'static,
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
                    let _ = apply(&mut this.lock(), Instant::now());
                });
                BackendReply::Unknown {
                    reason: "injected: no answer, the request is still on its way".into(),
                }
            }
            Fault::AppliedButUnknown => {
                let _ = apply(&mut self.lock(), Instant::now());
                BackendReply::Unknown {
                    reason: "injected: applied, answer lost".into(),
                }
            }
            Fault::None => apply(&mut self.lock(), Instant::now()),
        }
    }
}

/// The record of a live hold; `None` once it has expired.
fn record(name: &LeaseName, h: &Hold, now: Instant) -> Option<LeaseRecord> {
    (h.expires > now).then(|| LeaseRecord {
        name: name.clone(),
        owner: h.owner.clone(),
        token: h.token,
        acquired_at: Some(h.acquired_at),
        expires_in: Some(h.expires - now),
    })
}

fn next_token(store: &mut Store, lease: &LeaseName) -> FencingToken {
    let last = store.last_token.entry(lease.clone()).or_insert(0);
    *last += 1;
    FencingToken(*last)
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
            match store.holds.get_mut(&lease) {
                Some(h) if h.expires > now && h.owner != owner.as_str() => {
                    return BackendReply::Denied {
                        holder: Some(h.owner.clone()),
                    };
                }
                Some(h) if h.expires > now => {
                    h.expires = now + ttl;
                    return BackendReply::Granted { token: h.token };
                }
                _ => {}
            }
            let token = next_token(store, &lease);
            store.holds.insert(
                lease,
                Hold {
                    owner: owner.as_str().to_owned(),
                    token,
                    expires: now + ttl,
                    acquired_at: SystemTime::now(),
                },
            );
            BackendReply::Granted { token }
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
        Box::pin(
            self.call(move |store, now| match store.holds.get_mut(&lease) {
                // A late renewal of a lapsed hold nobody took is accepted, as some backends do.
                Some(h) if h.owner == owner.as_str() && h.token == token => {
                    h.expires = now + ttl;
                    BackendReply::Renewed
                }
                Some(h) => BackendReply::Denied {
                    holder: Some(h.owner.clone()),
                },
                None => BackendReply::Denied { holder: None },
            }),
        )
    }

    fn release<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        token: Option<FencingToken>,
    ) -> BoxFuture<'a, BackendReply> {
        let (lease, owner) = (lease.clone(), owner.clone());
        Box::pin(self.call(move |store, now| {
            let ours = store
                .holds
                .get(&lease)
                .is_some_and(|h| h.owner == owner.as_str() && token.is_none_or(|t| t == h.token));
            let live = store.holds.get(&lease).is_some_and(|h| h.expires > now);
            if ours {
                store.holds.remove(&lease);
            }
            BackendReply::Released {
                was_held: ours && live,
            }
        }))
    }

    fn describe<'a>(
        &'a self,
        lease: &'a LeaseName,
    ) -> BoxFuture<'a, Result<Option<LeaseRecord>, String>> {
        Box::pin(async move {
            let store = self.lock();
            let now = Instant::now();
            Ok(store.holds.get(lease).and_then(|h| record(lease, h, now)))
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<LeaseRecord>, String>> {
        Box::pin(async move {
            let store = self.lock();
            let now = Instant::now();
            Ok(store
                .holds
                .iter()
                .filter_map(|(name, h)| record(name, h, now))
                .collect())
        })
    }
}
