//! Every lease event is counted, with its labels and durations. (One test in this binary: it
//! installs the process-wide metrics recorder.)

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use flotilla_core::LeaseSettings;
use flotilla_lease::memory::Faults;
use flotilla_lease::{
    AcquireOutcome, LeaseBackend, LeaseClient, LeaseName, MemoryBackend, OwnerId, ReleaseOutcome,
};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[tokio::test(start_paused = true)]
async fn every_event_is_counted_with_its_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let backend = MemoryBackend::new();
    let settings = LeaseSettings::new(Duration::from_secs(10), Duration::from_secs(1))
        .unwrap()
        .with_operation_timeout(Duration::from_secs(1));
    let client = LeaseClient::new(
        Arc::new(backend.clone()),
        settings,
        OwnerId::new("node-a").unwrap(),
    )
    .unwrap();
    let name = LeaseName::new("shard-1").unwrap();
    let lease = client.lease(name.clone()).unwrap();

    assert!(matches!(
        lease.acquire(|_| {}).await,
        AcquireOutcome::Granted { .. }
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await; // one renewal
    backend.set_faults(Faults {
        fail_next: 1,
        ..Faults::default()
    });
    tokio::time::sleep(Duration::from_secs(1)).await; // a failed renewal, retried
    backend.take_over(&name, "intruder", Duration::from_secs(10));
    tokio::time::sleep(Duration::from_secs(2)).await; // lost: taken over
    backend
        .release(&name, &OwnerId::new("intruder").unwrap(), None)
        .await;
    assert!(matches!(
        lease.acquire(|_| {}).await,
        AcquireOutcome::Granted { .. }
    ));
    assert_eq!(lease.release().await, ReleaseOutcome::Released);
    assert!(matches!(
        lease.acquire(|_| {}).await,
        AcquireOutcome::Granted { .. }
    ));
    backend.set_faults(Faults {
        hang: true,
        ..Faults::default()
    });
    assert!(matches!(
        lease.release().await,
        ReleaseOutcome::Unknown { .. }
    ));

    let snapshot = snapshotter.snapshot().into_vec();
    let counter = |name: &str, label: Option<(&str, &str)>| -> u64 {
        snapshot
            .iter()
            .filter(|(key, ..)| key.key().name() == name)
            .filter(|(key, ..)| {
                key.key()
                    .labels()
                    .any(|l| l.key() == "backend" && l.value() == "memory")
            })
            .filter(|(key, ..)| {
                label
                    .is_none_or(|(k, v)| key.key().labels().any(|l| l.key() == k && l.value() == v))
            })
            .map(|(.., value)| match value {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum()
    };
    let histogram = |name: &str| -> usize {
        snapshot
            .iter()
            .filter(|(key, ..)| key.key().name() == name)
            .map(|(.., value)| match value {
                DebugValue::Histogram(v) => v.len(),
                _ => 0,
            })
            .sum()
    };
    assert_eq!(
        counter("flotilla_lease_acquired_total", Some(("lease", "shard-1"))),
        3
    );
    assert!(counter("flotilla_lease_renewed_total", None) >= 1);
    assert!(counter("flotilla_lease_renewal_retried_total", None) >= 1);
    assert_eq!(
        counter("flotilla_lease_lost_total", Some(("cause", "taken-over"))),
        1
    );
    assert_eq!(counter("flotilla_lease_released_total", None), 1);
    assert_eq!(counter("flotilla_lease_release_failed_total", None), 1);
    assert_eq!(histogram("flotilla_lease_acquire_seconds"), 3);
    assert!(histogram("flotilla_lease_renew_seconds") >= 1);
    assert_eq!(histogram("flotilla_lease_release_seconds"), 1);
}
