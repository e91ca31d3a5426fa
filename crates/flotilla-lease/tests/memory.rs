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

macro_rules! conformance {
    ($($check:ident),* $(,)?) => {$(
        #[tokio::test(start_paused = true)]
        async fn $check() {
            testing::$check(&Memory(MemoryBackend::new())).await;
        }
    )*};
}

conformance!(
    contenders_get_exactly_one_grant,
    release_lets_another_owner_in_at_once_with_a_higher_token,
    a_crashed_holders_lease_is_free_after_the_ttl_and_not_before,
    a_lease_taken_over_on_the_server_is_lost_once_within_an_interval,
    transient_renewal_failures_keep_the_lease,
    an_unreachable_backend_gives_bounded_unknowns_and_leaves_no_zombie,
    release_is_idempotent,
    the_same_owner_gets_its_unexpired_lease_back_after_a_restart,
);

#[tokio::test(start_paused = true)]
async fn the_whole_suite_runs_in_one_go() {
    testing::run_all(&Memory(MemoryBackend::new())).await;
}
