//! The conformance suite every lease backend must pass (feature `testing`).
//!
//! A backend crate implements [`Target`] for its backend — how to build it, and how to disturb it
//! (take a lease over on the server side, make the server unreachable, fail calls transiently) —
//! and calls [`run_all`], or the checks one by one. The checks use real time and the backend's
//! real timing (an etcd TTL cannot go below 2 s), so keep [`Target::settings`] short.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use flotilla_core::LeaseSettings;

use crate::backend::{BackendReply, BoxFuture, LeaseBackend, LeaseName, OwnerId};
use crate::{AcquireOutcome, LeaseClient, LostCause, ReleaseOutcome};

/// A transient fault a target can inject into the next calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransientFault {
    /// The next `n` calls fail without being applied.
    FailNext(u32),
    /// The next `n` calls are applied but their answer is lost (a client-side timeout on a write
    /// that succeeded).
    AppliedButLostNext(u32),
}

/// A backend under test, and the means to disturb it.
pub trait Target: Send + Sync {
    /// The backend.
    fn backend(&self) -> Arc<dyn LeaseBackend>;
    /// Short timings this backend supports.
    fn settings(&self) -> LeaseSettings;
    /// Gives `lease` to `owner` on the server side, as an operator or another cluster would.
    fn take_over<'a>(&'a self, lease: &'a LeaseName, owner: &'a str) -> BoxFuture<'a, ()>;
    /// Makes the backend unreachable or hanging until [`Target::restore`].
    fn disrupt(&self) -> BoxFuture<'_, ()>;
    /// Ends [`Target::disrupt`].
    fn restore(&self) -> BoxFuture<'_, ()>;
    /// Injects a transient fault; false if this target cannot (the check is then done with a
    /// short [`Target::disrupt`]).
    fn inject(&self, fault: TransientFault) -> bool;
}

/// A lease name no other check (or earlier run against the same server) uses.
pub fn unique_lease(check: &str) -> LeaseName {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!(
        "conformance-{check}-{}-{nanos}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    LeaseName::new(&name).unwrap_or_else(|e| panic!("{e}"))
}

fn owner(name: &str) -> OwnerId {
    OwnerId::new(name).unwrap_or_else(|e| panic!("{e}"))
}

fn client(t: &dyn Target, who: &str) -> LeaseClient {
    LeaseClient::new(t.backend(), t.settings(), owner(who)).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs every check in turn.
pub async fn run_all(t: &dyn Target) {
    contenders_get_exactly_one_grant(t).await;
    release_lets_another_owner_in_at_once_with_a_higher_token(t).await;
    a_crashed_holders_lease_is_free_after_the_ttl_and_not_before(t).await;
    a_lease_taken_over_on_the_server_is_lost_once_within_an_interval(t).await;
    transient_renewal_failures_keep_the_lease(t).await;
    an_unreachable_backend_gives_bounded_unknowns_and_leaves_no_zombie(t).await;
    release_is_idempotent(t).await;
    the_same_owner_gets_its_unexpired_lease_back_after_a_restart(t).await;
    every_operation_touches_only_the_hold_it_names(t).await;
}

/// N ≥ 5 concurrent contenders: exactly one granted, the rest denied.
pub async fn contenders_get_exactly_one_grant(t: &dyn Target) {
    let name = unique_lease("contend");
    let clients: Vec<_> = (0..5)
        .map(|i| client(t, &format!("contender-{i}")))
        .collect();
    let tasks: Vec<_> = clients
        .iter()
        .map(|c| {
            let lease = c.lease(name.clone()).unwrap_or_else(|e| panic!("{e}"));
            tokio::spawn(async move { lease.acquire(|_| {}).await })
        })
        .collect();
    let mut granted = 0;
    let mut denied = 0;
    for task in tasks {
        match task.await.unwrap_or_else(|e| panic!("{e}")) {
            AcquireOutcome::Granted { .. } => granted += 1,
            AcquireOutcome::Denied { .. } => denied += 1,
            AcquireOutcome::Unknown { reason } => {
                panic!("a contender got no certain answer: {reason}")
            }
        }
    }
    assert_eq!(
        (granted, denied),
        (1, 4),
        "exactly one of five contenders may hold the lease"
    );
    for c in clients {
        c.shutdown().await;
    }
}

/// Release, then another owner acquires at once; fencing tokens strictly increase.
pub async fn release_lets_another_owner_in_at_once_with_a_higher_token(t: &dyn Target) {
    let name = unique_lease("handover");
    let (a, b) = (client(t, "node-a"), client(t, "node-b"));
    let (la, lb) = (
        a.lease(name.clone()).unwrap_or_else(|e| panic!("{e}")),
        b.lease(name.clone()).unwrap_or_else(|e| panic!("{e}")),
    );
    let AcquireOutcome::Granted { token: first } = la.acquire(|_| {}).await else {
        panic!("a first acquire must be granted")
    };
    assert!(
        matches!(lb.acquire(|_| {}).await, AcquireOutcome::Denied { .. }),
        "b must be denied while a holds it"
    );
    assert_eq!(la.release().await, ReleaseOutcome::Released);
    assert!(!la.check_lease());
    let AcquireOutcome::Granted { token: second } = lb.acquire(|_| {}).await else {
        panic!("b must get the lease as soon as a released it")
    };
    assert!(
        second > first,
        "fencing tokens must increase across owners: {first} then {second}"
    );
    assert_eq!(lb.release().await, ReleaseOutcome::Released);
    let AcquireOutcome::Granted { token: third } = la.acquire(|_| {}).await else {
        panic!("a must get it back")
    };
    assert!(
        third > second,
        "fencing tokens must increase: {second} then {third}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

/// The holder stops renewing (a crash): another owner acquires after the TTL, never before.
pub async fn a_crashed_holders_lease_is_free_after_the_ttl_and_not_before(t: &dyn Target) {
    let name = unique_lease("crash");
    let backend = t.backend();
    let ttl = t.settings().heartbeat_timeout;
    let crashed = owner("crashed-node");
    // A raw acquire with no holder behind it: nobody will ever renew it.
    let reply = backend.acquire(&name, &crashed, ttl).await;
    assert!(
        matches!(reply, BackendReply::Granted { .. }),
        "raw acquire: {reply:?}"
    );
    let started = tokio::time::Instant::now();
    let b = client(t, "survivor");
    let lb = b.lease(name.clone()).unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(ttl / 2).await;
    assert!(
        matches!(lb.acquire(|_| {}).await, AcquireOutcome::Denied { .. }),
        "taken before the TTL ran out"
    );
    let mut attempts = 0;
    loop {
        attempts += 1;
        match lb.acquire(|_| {}).await {
            AcquireOutcome::Granted { .. } => break,
            _ if attempts < 100 => tokio::time::sleep(ttl / 20).await,
            other => panic!("the crashed holder's lease never became free: {other:?}"),
        }
    }
    let waited = started.elapsed();
    assert!(
        waited >= ttl,
        "acquired after {waited:?}, before the TTL of {ttl:?}"
    );
    assert!(
        waited <= ttl * 2,
        "acquired only after {waited:?}, TTL {ttl:?}"
    );
    b.shutdown().await;
}

/// The lease is taken over on the server side: `on_lost` fires once within a heartbeat interval
/// and `check_lease` turns false.
pub async fn a_lease_taken_over_on_the_server_is_lost_once_within_an_interval(t: &dyn Target) {
    let name = unique_lease("takeover");
    let a = client(t, "node-a");
    let la = a.lease(name.clone()).unwrap_or_else(|e| panic!("{e}"));
    let lost = Arc::new(AtomicU32::new(0));
    let (tx, rx) = tokio::sync::oneshot::channel::<LostCause>();
    let tx = std::sync::Mutex::new(Some(tx));
    let l = Arc::clone(&lost);
    let outcome = la
        .acquire(move |cause| {
            l.fetch_add(1, Ordering::SeqCst);
            if let Some(tx) = tx.lock().ok().and_then(|mut g| g.take()) {
                let _ = tx.send(cause);
            }
        })
        .await;
    assert!(
        matches!(outcome, AcquireOutcome::Granted { .. }),
        "{outcome:?}"
    );
    t.take_over(&name, "intruder").await;
    let settings = t.settings();
    let within = settings.heartbeat_interval + t.backend().request_timeout();
    let cause = tokio::time::timeout(within, rx)
        .await
        .unwrap_or_else(|_| panic!("on_lost did not fire within {within:?}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(matches!(cause, LostCause::TakenOver { .. }), "{cause:?}");
    assert!(!la.check_lease());
    tokio::time::sleep(settings.heartbeat_interval * 2).await;
    assert_eq!(lost.load(Ordering::SeqCst), 1, "on_lost fires exactly once");
    assert_eq!(
        la.release().await,
        ReleaseOutcome::NotHeld,
        "a lost lease is not ours to release"
    );
    a.shutdown().await;
}

/// Transient renewal failures inside the TTL keep the lease, and so does a renewal that timed
/// out on the client but was applied on the server.
pub async fn transient_renewal_failures_keep_the_lease(t: &dyn Target) {
    let name = unique_lease("transient");
    let settings = t.settings();
    let a = client(t, "node-a");
    let la = a.lease(name.clone()).unwrap_or_else(|e| panic!("{e}"));
    let lost = Arc::new(AtomicU32::new(0));
    let l = Arc::clone(&lost);
    let outcome = la
        .acquire(move |_| {
            l.fetch_add(1, Ordering::SeqCst);
        })
        .await;
    assert!(
        matches!(outcome, AcquireOutcome::Granted { .. }),
        "{outcome:?}"
    );
    for fault in [
        TransientFault::FailNext(2),
        TransientFault::AppliedButLostNext(2),
    ] {
        if !t.inject(fault) {
            t.disrupt().await;
            tokio::time::sleep(settings.heartbeat_interval * 2).await;
            t.restore().await;
        }
        tokio::time::sleep(settings.heartbeat_interval * 4).await;
        assert!(
            la.check_lease(),
            "{fault:?} inside the TTL must not lose the lease"
        );
    }
    assert_eq!(lost.load(Ordering::SeqCst), 0);
    assert_eq!(la.release().await, ReleaseOutcome::Released);
    a.shutdown().await;
}

/// Backend unreachable or hanging: acquire and release return within `lease-operation-timeout`
/// with a clear "unknown", nothing panics, and no zombie is left once the backend is back.
pub async fn an_unreachable_backend_gives_bounded_unknowns_and_leaves_no_zombie(t: &dyn Target) {
    let name = unique_lease("unreachable");
    let settings = t.settings();
    let bound = settings.operation_timeout() + Duration::from_millis(500);
    let a = client(t, "node-a");
    let la = a.lease(name.clone()).unwrap_or_else(|e| panic!("{e}"));
    t.disrupt().await;
    let started = tokio::time::Instant::now();
    let outcome = la.acquire(|_| {}).await;
    assert!(
        started.elapsed() <= bound,
        "acquire took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(outcome, AcquireOutcome::Unknown { .. }),
        "{outcome:?}"
    );
    assert!(!la.check_lease());
    t.restore().await;
    // The holder releases in case the unanswered acquire was applied; give it its time.
    tokio::time::sleep(settings.operation_timeout() * 2).await;
    let record = t
        .backend()
        .describe(&name)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        record.as_ref().is_none_or(|r| r.owner != "node-a"),
        "a zombie lease was left by the unanswered acquire: {record:?}"
    );
    // Release while unreachable: bounded too.
    assert!(matches!(
        la.acquire(|_| {}).await,
        AcquireOutcome::Granted { .. }
    ));
    t.disrupt().await;
    let started = tokio::time::Instant::now();
    let outcome = la.release().await;
    assert!(
        started.elapsed() <= bound,
        "release took {:?}",
        started.elapsed()
    );
    assert!(
        matches!(outcome, ReleaseOutcome::Unknown { .. }),
        "{outcome:?}"
    );
    t.restore().await;
    a.shutdown().await;
}

/// Releasing twice, or a lease never held, answers `NotHeld`.
pub async fn release_is_idempotent(t: &dyn Target) {
    let name = unique_lease("idempotent");
    let a = client(t, "node-a");
    let la = a.lease(name).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(la.release().await, ReleaseOutcome::NotHeld);
    assert!(matches!(
        la.acquire(|_| {}).await,
        AcquireOutcome::Granted { .. }
    ));
    assert_eq!(la.release().await, ReleaseOutcome::Released);
    assert_eq!(la.release().await, ReleaseOutcome::NotHeld);
    a.shutdown().await;
}

/// A node restarted with the same owner identity gets its unexpired lease back at once, as a new
/// hold with a higher token; the hold of the first incarnation is gone.
pub async fn the_same_owner_gets_its_unexpired_lease_back_after_a_restart(t: &dyn Target) {
    let name = unique_lease("restart");
    let backend = t.backend();
    let me = owner("node-a");
    // The first incarnation acquired it and died without releasing.
    let first = backend
        .acquire(&name, &me, t.settings().heartbeat_timeout)
        .await;
    let BackendReply::Granted { token: first } = first else {
        panic!("raw acquire: {first:?}")
    };
    let again = client(t, "node-a");
    let lease = again.lease(name.clone()).unwrap_or_else(|e| panic!("{e}"));
    let outcome = lease.acquire(|_| {}).await;
    let AcquireOutcome::Granted { token } = outcome else {
        panic!("the same owner is not kept waiting: {outcome:?}")
    };
    assert!(token > first, "a new hold: {token} after {first}");
    assert!(lease.check_lease());
    again.shutdown().await;
}

/// Every grant is a hold of its own, and renewals, releases and inspections name the hold they
/// mean: a late request for an earlier hold of the same owner never touches a later one.
pub async fn every_operation_touches_only_the_hold_it_names(t: &dyn Target) {
    let name = unique_lease("names");
    let backend = t.backend();
    let ttl = t.settings().heartbeat_timeout;
    let (a, b) = (owner("node-a"), owner("node-b"));
    let grant = |reply: BackendReply| match reply {
        BackendReply::Granted { token } => token,
        other => panic!("expected a grant: {other:?}"),
    };
    let first = grant(backend.acquire(&name, &a, ttl).await);
    let second = grant(backend.acquire(&name, &a, ttl).await);
    assert!(second > first, "{second} after {first}");
    assert_eq!(
        backend.release(&name, &a, Some(first)).await,
        BackendReply::Released { was_held: false },
        "a release of the earlier hold"
    );
    assert!(
        matches!(
            backend.renew(&name, &a, ttl, first).await,
            BackendReply::Denied { .. }
        ),
        "a renewal of the earlier hold"
    );
    assert_eq!(
        backend.inspect(&name, &a).await,
        BackendReply::Inspected {
            token: Some(second)
        }
    );
    assert_eq!(
        backend.inspect(&name, &b).await,
        BackendReply::Inspected { token: None }
    );
    assert!(
        matches!(
            backend.acquire(&name, &b, ttl).await,
            BackendReply::Denied { .. }
        ),
        "the later hold stands"
    );
    assert_eq!(
        backend.release(&name, &a, Some(second)).await,
        BackendReply::Released { was_held: true }
    );
    assert_eq!(
        backend.inspect(&name, &a).await,
        BackendReply::Inspected { token: None }
    );
}

/// Wraps a real backend and injects [`TransientFault`]s into its next calls, so that the
/// "failed" and "applied but answer lost" cases run against real servers too.
pub struct Faulty<B> {
    inner: B,
    faults: std::sync::Mutex<(u32, u32)>,
}

impl<B: LeaseBackend> Faulty<B> {
    /// `inner`, with no fault pending.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            faults: std::sync::Mutex::new((0, 0)),
        }
    }

    /// The next calls get `fault`.
    pub fn inject(&self, fault: TransientFault) {
        let mut f = self
            .faults
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match fault {
            TransientFault::FailNext(n) => f.0 = n,
            TransientFault::AppliedButLostNext(n) => f.1 = n,
        }
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Runs `call` under the pending fault, if any.
    async fn call<'a>(&'a self, call: BoxFuture<'a, BackendReply>) -> BackendReply {
        let fault = {
            let mut f = self
                .faults
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if f.0 > 0 {
                f.0 -= 1;
                Some(false)
            } else if f.1 > 0 {
                f.1 -= 1;
                Some(true)
            } else {
                None
            }
        };
        match fault {
            None => call.await,
            Some(false) => BackendReply::Unknown {
                reason: "injected failure".into(),
            },
            Some(true) => {
                let applied = call.await;
                BackendReply::Unknown {
                    reason: format!("injected: the answer {applied:?} was lost"),
                }
            }
        }
    }
}

impl<B: LeaseBackend> LeaseBackend for Faulty<B> {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn request_timeout(&self) -> Duration {
        self.inner.request_timeout()
    }

    fn default_operation_timeout(&self) -> Duration {
        self.inner.default_operation_timeout()
    }

    fn acquire<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        ttl: Duration,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(self.call(self.inner.acquire(lease, owner, ttl)))
    }

    fn renew<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        ttl: Duration,
        token: crate::backend::FencingToken,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(self.call(self.inner.renew(lease, owner, ttl, token)))
    }

    fn release<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        token: Option<crate::backend::FencingToken>,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(self.call(self.inner.release(lease, owner, token)))
    }

    fn inspect<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(self.call(self.inner.inspect(lease, owner)))
    }

    fn describe<'a>(
        &'a self,
        lease: &'a LeaseName,
    ) -> BoxFuture<'a, Result<Option<crate::backend::LeaseRecord>, String>> {
        self.inner.describe(lease)
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<crate::backend::LeaseRecord>, String>> {
        self.inner.list()
    }
}

/// Declares one test per conformance check. `$make` builds a fresh [`Target`] for each (it may
/// `.await`); the attribute is the test attribute to use:
///
/// ```text
/// flotilla_lease::conformance_tests!(#[tokio::test(start_paused = true)] Memory::new());
/// ```
#[macro_export]
macro_rules! conformance_tests {
    (#[$attr:meta] $make:expr) => {
        $crate::conformance_tests!(@each #[$attr] $make;
            contenders_get_exactly_one_grant,
            release_lets_another_owner_in_at_once_with_a_higher_token,
            a_crashed_holders_lease_is_free_after_the_ttl_and_not_before,
            a_lease_taken_over_on_the_server_is_lost_once_within_an_interval,
            transient_renewal_failures_keep_the_lease,
            an_unreachable_backend_gives_bounded_unknowns_and_leaves_no_zombie,
            release_is_idempotent,
            the_same_owner_gets_its_unexpired_lease_back_after_a_restart,
            every_operation_touches_only_the_hold_it_names,
        );
    };
    (@each #[$attr:meta] $make:expr; $($check:ident),* $(,)?) => {$(
        #[$attr]
        async fn $check() {
            $crate::testing::$check(&$make).await;
        }
    )*};
}

/// A real server a test started, which it can freeze and thaw.
pub trait Pausable: Send + Sync {
    /// Freezes the server (its connections stay open; requests hang).
    fn pause(&self);
    /// Thaws it.
    fn resume(&self);
}

/// Gives a lease to another owner on the server side, through the backend or the server.
pub type TakeOver<B, S> =
    for<'a> fn(&'a B, &'a S, &'a LeaseName, &'a str, Duration) -> BoxFuture<'a, Result<(), String>>;

/// A [`Target`] for a backend on a real server: faults are injected by a [`Faulty`] wrapper,
/// disruption pauses the server.
pub struct ServerTarget<B, S> {
    /// The server.
    pub server: S,
    /// The backend, wrapped for fault injection.
    pub backend: Arc<Faulty<B>>,
    /// Lease settings short enough for tests, within what the backend supports.
    pub settings: LeaseSettings,
    /// Server-side takeover.
    pub take_over: TakeOver<B, S>,
}

impl<B: LeaseBackend, S: Pausable> Target for ServerTarget<B, S> {
    fn backend(&self) -> Arc<dyn LeaseBackend> {
        Arc::clone(&self.backend) as Arc<dyn LeaseBackend>
    }

    fn settings(&self) -> LeaseSettings {
        self.settings.clone()
    }

    fn take_over<'a>(&'a self, lease: &'a LeaseName, owner: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let ttl = self.settings.heartbeat_timeout;
            (self.take_over)(self.backend.inner(), &self.server, lease, owner, ttl)
                .await
                .unwrap_or_else(|e| panic!("server-side takeover failed: {e}"));
        })
    }

    fn disrupt(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.server.pause() })
    }

    fn restore(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.server.resume() })
    }

    fn inject(&self, fault: TransientFault) -> bool {
        self.backend.inject(fault);
        true
    }
}
