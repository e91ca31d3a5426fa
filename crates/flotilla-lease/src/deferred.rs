//! A backend that is not reachable yet: connects in the background and answers until then.
//!
//! A node whose lease backend is down when it starts should still start — join its cluster,
//! serve what needs no lease — and take its leases once the backend answers, as it does when the
//! backend goes away later. [`DeferredBackend`] stands in for the real backend until a
//! connection attempt succeeds. Until then every call answers `NotSent` (the holder then acquires
//! nothing, with nothing to clean up, and retries as after any backend failure) and listings
//! fail; attempts are made when
//! a call comes and the last failure is older than the retry interval, which starts at
//! [`DeferredBackend::FIRST_RETRY`] and doubles up to [`DeferredBackend::MAX_RETRY`]. An attempt
//! runs in a task of its own, so a caller that gives up (the driver's request timeout) does not
//! cancel it; callers that arrive while it runs wait for its outcome.
//!
//! Settings errors are not for this type: a caller connects eagerly first and fails at once on
//! a malformed endpoint or refused credentials, deferring only when the backend cannot be
//! reached.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::backend::{
    BackendReply, BoxFuture, FencingToken, LeaseBackend, LeaseName, LeaseRecord, OwnerId,
};

/// Makes one attempt to connect to the real backend; the error says why it failed.
pub type Connect =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Arc<dyn LeaseBackend>, String>> + Send + Sync>;

/// What the stand-in knows about its attempts to reach the real backend.
#[derive(Debug)]
struct Attempts {
    /// Whether an attempt is running.
    connecting: bool,
    /// When the next attempt may start (after the last one failed).
    next: Instant,
    /// The wait after the last failure.
    interval: Duration,
    /// Why the last attempt failed.
    last_error: String,
    /// Failed attempts so far.
    failures: u64,
}

struct Shared {
    kind: &'static str,
    connect: Connect,
    backend: OnceLock<Arc<dyn LeaseBackend>>,
    attempts: Mutex<Attempts>,
    /// Counts finished attempts, for callers waiting on the one that runs.
    finished: watch::Sender<u64>,
}

/// A lease backend that connects to the real one in the background. See the
/// [module docs](self).
pub struct DeferredBackend {
    shared: Arc<Shared>,
    request_timeout: Duration,
    default_operation_timeout: Duration,
}

impl std::fmt::Debug for DeferredBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredBackend")
            .field("kind", &self.shared.kind)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl DeferredBackend {
    /// The wait after the first failed attempt.
    pub const FIRST_RETRY: Duration = Duration::from_secs(1);
    /// The longest wait between attempts.
    pub const MAX_RETRY: Duration = Duration::from_secs(5);

    /// A stand-in for a `kind` backend ("etcd", …) whose first connection attempt failed with
    /// `first_error`; it tries `connect` again from [`Self::FIRST_RETRY`] on. `request_timeout`
    /// and `default_operation_timeout` are the real backend's, from its settings.
    pub fn new(
        kind: &'static str,
        request_timeout: Duration,
        default_operation_timeout: Duration,
        first_error: String,
        connect: Connect,
    ) -> Self {
        tracing::warn!(
            backend = kind,
            "the {kind} lease backend cannot be reached ({first_error}); starting without it: \
             leases are taken once it answers, tried again every {:?} to {:?}",
            Self::FIRST_RETRY,
            Self::MAX_RETRY
        );
        metrics::counter!("flotilla_lease_backend_connect_failed_total", "backend" => kind)
            .increment(1);
        Self {
            shared: Arc::new(Shared {
                kind,
                connect,
                backend: OnceLock::new(),
                attempts: Mutex::new(Attempts {
                    connecting: false,
                    next: Instant::now() + Self::FIRST_RETRY,
                    interval: Self::FIRST_RETRY,
                    last_error: first_error,
                    failures: 1,
                }),
                finished: watch::Sender::new(0),
            }),
            request_timeout,
            default_operation_timeout,
        }
    }

    /// Whether an attempt has succeeded: calls now go to the real backend.
    pub fn is_connected(&self) -> bool {
        self.shared.backend.get().is_some()
    }

    /// The real backend, or why there is none yet (after an attempt, if one was due).
    async fn backend(&self) -> Result<Arc<dyn LeaseBackend>, String> {
        if let Some(b) = self.shared.backend.get() {
            return Ok(Arc::clone(b));
        }
        // Subscribed before looking, so the end of an attempt started meanwhile is not missed.
        let mut finished = self.shared.finished.subscribe();
        {
            let mut attempts = self
                .shared
                .attempts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(b) = self.shared.backend.get() {
                return Ok(Arc::clone(b));
            }
            if !attempts.connecting {
                if Instant::now() < attempts.next {
                    return Err(self.not_reachable(&attempts.last_error));
                }
                attempts.connecting = true;
                tokio::spawn(attempt(Arc::clone(&self.shared)));
            }
        }
        // The attempt ends by itself (the real backend's connect is bounded); the driver's
        // request timeout bounds this wait too.
        let _ = finished.changed().await;
        if let Some(b) = self.shared.backend.get() {
            return Ok(Arc::clone(b));
        }
        let attempts = self
            .shared
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Err(if attempts.connecting {
            self.not_reachable("still connecting")
        } else {
            self.not_reachable(&attempts.last_error)
        })
    }

    fn not_reachable(&self, why: &str) -> String {
        format!(
            "the {} lease backend has not been reached yet: {why}",
            self.shared.kind
        )
    }
}

/// One connection attempt; its outcome goes into `shared`.
async fn attempt(shared: Arc<Shared>) {
    let outcome = (shared.connect)().await;
    {
        let mut attempts = shared
            .attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        attempts.connecting = false;
        match outcome {
            Ok(backend) => {
                tracing::info!(
                    backend = shared.kind,
                    "the {} lease backend answers now (after {} failed connection attempts); \
                     leases can be taken",
                    shared.kind,
                    attempts.failures
                );
                let _ = shared.backend.set(backend);
            }
            Err(e) => {
                tracing::debug!(
                    backend = shared.kind,
                    "{} lease backend still unreachable: {e}",
                    shared.kind
                );
                metrics::counter!("flotilla_lease_backend_connect_failed_total", "backend" => shared.kind)
                    .increment(1);
                attempts.interval = (attempts.interval * 2).min(DeferredBackend::MAX_RETRY);
                attempts.next = Instant::now() + attempts.interval;
                attempts.last_error = e;
                attempts.failures += 1;
            }
        }
    }
    shared.finished.send_modify(|n| *n += 1);
}

fn not_sent(reason: String) -> BackendReply {
    BackendReply::NotSent { reason }
}

impl LeaseBackend for DeferredBackend {
    fn kind(&self) -> &'static str {
        self.shared.kind
    }

    fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    fn default_operation_timeout(&self) -> Duration {
        self.default_operation_timeout
    }

    fn acquire<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        ttl: Duration,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(async move {
            match self.backend().await {
                Ok(b) => b.acquire(lease, owner, ttl).await,
                Err(e) => not_sent(e),
            }
        })
    }

    fn renew<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        ttl: Duration,
        token: FencingToken,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(async move {
            match self.backend().await {
                Ok(b) => b.renew(lease, owner, ttl, token).await,
                Err(e) => not_sent(e),
            }
        })
    }

    fn release<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        token: Option<FencingToken>,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(async move {
            match self.backend().await {
                Ok(b) => b.release(lease, owner, token).await,
                Err(e) => not_sent(e),
            }
        })
    }

    fn inspect<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(async move {
            match self.backend().await {
                Ok(b) => b.inspect(lease, owner).await,
                Err(e) => not_sent(e),
            }
        })
    }

    fn describe<'a>(
        &'a self,
        lease: &'a LeaseName,
    ) -> BoxFuture<'a, Result<Option<LeaseRecord>, String>> {
        Box::pin(async move { self.backend().await?.describe(lease).await })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<LeaseRecord>, String>> {
        Box::pin(async move { self.backend().await?.list().await })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use super::*;
    use crate::MemoryBackend;

    const TTL: Duration = Duration::from_secs(10);

    fn name() -> LeaseName {
        LeaseName::new("shard-1").unwrap()
    }

    fn owner() -> OwnerId {
        OwnerId::new("node-a").unwrap()
    }

    /// A stand-in whose connect succeeds once `up` is set, counting attempts.
    fn deferred(
        up: &Arc<AtomicBool>,
        attempts: &Arc<AtomicU32>,
        real: &MemoryBackend,
    ) -> DeferredBackend {
        let (up, attempts, real) = (Arc::clone(up), Arc::clone(attempts), real.clone());
        let connect: Connect = Arc::new(move || {
            let (up, attempts, real) = (Arc::clone(&up), Arc::clone(&attempts), real.clone());
            Box::pin(async move {
                attempts.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                if up.load(Ordering::SeqCst) {
                    Ok(Arc::new(real) as Arc<dyn LeaseBackend>)
                } else {
                    Err("connection refused".to_owned())
                }
            })
        });
        DeferredBackend::new(
            "memory",
            Duration::from_secs(2),
            Duration::from_secs(15),
            "connection refused".into(),
            connect,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn answers_unknown_until_reachable_then_delegates() {
        let (up, attempts, real) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU32::new(0)),
            MemoryBackend::new(),
        );
        let backend = deferred(&up, &attempts, &real);
        assert_eq!(backend.kind(), "memory");
        assert_eq!(backend.request_timeout(), Duration::from_secs(2));
        assert_eq!(backend.default_operation_timeout(), Duration::from_secs(15));

        // Before the first retry is due: no attempt, an answer at once.
        let reply = backend.acquire(&name(), &owner(), TTL).await;
        assert!(
            matches!(&reply, BackendReply::NotSent { reason } if reason.contains("connection refused")),
            "{reply:?}"
        );
        assert!(backend.list().await.is_err());
        assert_eq!(attempts.load(Ordering::SeqCst), 0);

        // Due: one attempt, which fails; the next waits twice as long.
        tokio::time::sleep(DeferredBackend::FIRST_RETRY).await;
        let reply = backend.acquire(&name(), &owner(), TTL).await;
        assert!(matches!(reply, BackendReply::NotSent { .. }), "{reply:?}");
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        tokio::time::sleep(DeferredBackend::FIRST_RETRY).await;
        let _ = backend.renew(&name(), &owner(), TTL, FencingToken(1)).await;
        assert_eq!(attempts.load(Ordering::SeqCst), 1, "retried too soon");
        tokio::time::sleep(DeferredBackend::FIRST_RETRY).await;
        let _ = backend.release(&name(), &owner(), None).await;
        assert_eq!(attempts.load(Ordering::SeqCst), 2);
        assert!(!backend.is_connected());

        // The interval never grows past the maximum.
        for _ in 0..6 {
            tokio::time::sleep(DeferredBackend::MAX_RETRY).await;
            let _ = backend.describe(&name()).await;
        }
        assert_eq!(attempts.load(Ordering::SeqCst), 8);

        // Reachable: the next due attempt connects, and the call that made it is answered by
        // the real backend; no attempt after that.
        up.store(true, Ordering::SeqCst);
        tokio::time::sleep(DeferredBackend::MAX_RETRY).await;
        let reply = backend.acquire(&name(), &owner(), TTL).await;
        assert!(matches!(reply, BackendReply::Granted { .. }), "{reply:?}");
        assert!(backend.is_connected());
        let records = backend.list().await.unwrap();
        assert_eq!(records.len(), 1);
        let held = |r: &[LeaseRecord]| {
            r.iter()
                .map(|r| (r.name.clone(), r.owner.clone(), r.token))
                .collect::<Vec<_>>()
        };
        assert_eq!(held(&real.list().await.unwrap()), held(&records));
        assert!(matches!(
            backend.release(&name(), &owner(), None).await,
            BackendReply::Released { was_held: true }
        ));
        assert_eq!(attempts.load(Ordering::SeqCst), 9);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_attempt_that_outlives_a_caller_giving_up() {
        let (up, attempts, real) = (
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicU32::new(0)),
            MemoryBackend::new(),
        );
        let backend = Arc::new(deferred(&up, &attempts, &real));
        tokio::time::sleep(DeferredBackend::FIRST_RETRY).await;

        // A caller that gives up before the attempt ends does not cancel it.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(10),
            backend.acquire(&name(), &owner(), TTL),
        )
        .await;
        assert!(gave_up.is_err());
        let calls: Vec<_> = (0..4)
            .map(|_| {
                let b = Arc::clone(&backend);
                tokio::spawn(async move { b.describe(&name()).await })
            })
            .collect();
        for call in calls {
            assert_eq!(call.await.unwrap(), Ok(None));
        }
        assert_eq!(attempts.load(Ordering::SeqCst), 1);
        assert!(backend.is_connected());
    }
}
