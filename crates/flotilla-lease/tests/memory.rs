//! The conformance suite against the in-memory backend, on tokio's paused clock.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use flotilla_core::LeaseSettings;
use flotilla_lease::backend::BoxFuture;
use flotilla_lease::memory::Faults;
use flotilla_lease::testing::{self, Target, TransientFault};
use flotilla_lease::{LeaseBackend, LeaseName, MemoryBackend};

struct Memory(MemoryBackend);

impl Target for Memory {
    fn backend(&self) -> Arc<dyn LeaseBackend> {
        Arc::new(self.0.clone())
    }

    fn settings(&self) -> LeaseSettings {
        LeaseSettings::new(Duration::from_secs(4), Duration::from_millis(500))
            .unwrap()
            .with_operation_timeout(Duration::from_secs(1))
    }

    fn take_over<'a>(&'a self, lease: &'a LeaseName, owner: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.0.take_over(lease, owner, Duration::from_secs(4));
        })
    }

    fn disrupt(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.0.set_faults(Faults {
                hang: true,
                ..Faults::default()
            })
        })
    }

    fn restore(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.0.set_faults(Faults::default()) })
    }

    fn inject(&self, fault: TransientFault) -> bool {
        self.0.set_faults(match fault {
            TransientFault::FailNext(n) => Faults {
                fail_next: n,
                ..Faults::default()
            },
            TransientFault::AppliedButLostNext(n) => Faults {
                applied_but_unknown_next: n,
                ..Faults::default()
            },
        });
        true
    }
}

flotilla_lease::conformance_tests!(
    #[tokio::test(start_paused = true)]
    Memory(MemoryBackend::new())
);

#[tokio::test(start_paused = true)]
async fn the_whole_suite_runs_in_one_go() {
    testing::run_all(&Memory(MemoryBackend::new())).await;
}

/// An acquire that answers "unknown" but lands at the backend later (held up in the network):
/// the holder's sweep removes the hold it creates, well before its TTL.
#[tokio::test(start_paused = true)]
async fn a_late_landing_acquire_is_swept_away() {
    use flotilla_lease::{AcquireOutcome, LeaseClient, OwnerId};
    let backend = MemoryBackend::new();
    let target = Memory(backend.clone());
    let settings = target.settings();
    let client = LeaseClient::new(
        Arc::new(backend.clone()),
        settings.clone(),
        OwnerId::new("node-a").unwrap(),
    )
    .unwrap();
    let name = LeaseName::new("late").unwrap();
    let lease = client.lease(name.clone()).unwrap();
    backend.set_faults(Faults {
        apply_late_next: 1,
        apply_late_by: Duration::from_millis(1750),
        ..Faults::default()
    });
    assert!(matches!(
        lease.acquire(|_| {}).await,
        AcquireOutcome::Unknown { .. }
    ));
    // Sweeps run every 500 ms from the unknown answer: at 1.5 s and 2 s, around the landing.
    tokio::time::sleep(Duration::from_millis(1800)).await;
    assert_eq!(
        backend.describe(&name).await.unwrap().map(|r| r.owner),
        Some("node-a".to_owned()),
        "the late request created a hold"
    );
    tokio::time::sleep(settings.heartbeat_interval * 2).await;
    assert_eq!(
        backend.describe(&name).await.unwrap(),
        None,
        "the sweep removed the zombie long before its TTL ({:?})",
        settings.heartbeat_timeout
    );
    assert!(!lease.check_lease());
    client.shutdown().await;
}
