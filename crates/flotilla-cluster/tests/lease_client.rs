//! The lease client inside an actor system: it outlives every holder, and termination awaits
//! every release.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use flotilla_actor::{Actor, ActorError, ActorSystem, Context, Props};
use flotilla_cluster::LeaseClientExt as _;
use flotilla_core::LeaseSettings;
use flotilla_lease::memory::Faults;
use flotilla_lease::{
    AcquireOutcome, Lease, LeaseBackend, LeaseClient, LeaseName, MemoryBackend, OwnerId,
    ReleaseOutcome,
};
use tokio::sync::mpsc;

/// Holds a lease while it lives, like a shard: acquires in pre_start, releases in post_stop.
struct Holder {
    lease: Lease,
    report: mpsc::UnboundedSender<String>,
}

impl Actor for Holder {
    type Msg = ();

    async fn pre_start(&mut self, _ctx: &mut Context<()>) -> Result<(), ActorError> {
        let outcome = self.lease.acquire(|_| {}).await;
        self.report.send(format!(
            "acquired: {}",
            matches!(outcome, AcquireOutcome::Granted { .. })
        ))?;
        Ok(())
    }

    async fn handle(&mut self, _: (), _ctx: &mut Context<()>) -> Result<(), ActorError> {
        Ok(())
    }

    async fn post_stop(&mut self, _ctx: &mut Context<()>) {
        let outcome = self.lease.release().await;
        let _ = self
            .report
            .send(format!("released in post_stop: {outcome:?}"));
    }
}

fn settings() -> LeaseSettings {
    LeaseSettings::new(Duration::from_secs(20), Duration::from_secs(2)).unwrap()
}

fn name(n: &str) -> LeaseName {
    LeaseName::new(n).unwrap()
}

#[tokio::test(start_paused = true)]
async fn holders_release_while_stopping_and_termination_awaits_every_release() {
    let backend = MemoryBackend::new();
    let system = ActorSystem::new("leases").unwrap();
    let owner = OwnerId::new("flotilla://leases@127.0.0.1:2552").unwrap();
    let client = LeaseClient::start(&system, Arc::new(backend.clone()), settings(), owner).unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let lease = client.lease(name("shard-1")).unwrap();
    system
        .spawn(
            "shard-1",
            Props::new(move || Holder {
                lease: lease.clone(),
                report: tx.clone(),
            }),
        )
        .unwrap();
    assert_eq!(rx.recv().await.unwrap(), "acquired: true");
    // A second lease held directly, never released by its user: the client releases it.
    let orphan = client.lease(name("singleton")).unwrap();
    assert!(matches!(
        orphan.acquire(|_| {}).await,
        AcquireOutcome::Granted { .. }
    ));
    // Every release is slow: termination must still wait for them.
    backend.set_faults(Faults {
        latency: Duration::from_millis(800),
        ..Faults::default()
    });

    let outcome = system.terminate().await;
    assert!(outcome.report.is_clean(), "{:?}", outcome.report);
    assert_eq!(rx.recv().await.unwrap(), "released in post_stop: Released");
    for lease in ["shard-1", "singleton"] {
        assert_eq!(
            backend.describe(&name(lease)).await.unwrap(),
            None,
            "{lease} still held after termination"
        );
    }
    assert!(matches!(
        client.lease(name("late")),
        Err(flotilla_lease::LeaseError::Stopped("memory"))
    ));
    assert_eq!(
        orphan.release().await,
        ReleaseOutcome::Unknown {
            reason: "the lease client has stopped".into()
        }
    );
}

#[tokio::test(start_paused = true)]
async fn bad_settings_are_refused_when_the_client_is_built() {
    let bad = LeaseSettings {
        heartbeat_interval: Duration::from_secs(60),
        ..LeaseSettings::default()
    };
    let err = LeaseClient::new(
        Arc::new(MemoryBackend::new()),
        bad,
        OwnerId::new("a").unwrap(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("heartbeat-timeout / 2"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn one_backend_is_shared_by_two_systems_in_one_process() {
    let backend = MemoryBackend::new();
    let a = ActorSystem::new("a").unwrap();
    let b = ActorSystem::new("b").unwrap();
    let ca = LeaseClient::start(
        &a,
        Arc::new(backend.clone()),
        settings(),
        OwnerId::new("node-a").unwrap(),
    )
    .unwrap();
    let cb = LeaseClient::start(
        &b,
        Arc::new(backend.clone()),
        settings(),
        OwnerId::new("node-b").unwrap(),
    )
    .unwrap();
    let la = ca.lease(name("shard-9")).unwrap();
    let lb = cb.lease(name("shard-9")).unwrap();
    assert!(matches!(
        la.acquire(|_| {}).await,
        AcquireOutcome::Granted { .. }
    ));
    assert_eq!(
        lb.acquire(|_| {}).await,
        AcquireOutcome::Denied {
            holder: Some("node-a".into())
        }
    );
    // Node a shuts down: its release is awaited, so b can take the lease at once, not after the TTL.
    a.terminate().await;
    assert!(matches!(
        lb.acquire(|_| {}).await,
        AcquireOutcome::Granted { .. }
    ));
    assert!(lb.check_lease());
    b.terminate().await;
}
