//! Coordinated shutdown through the real driver: order, waiting, timeouts, run-once.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{ms, probe};
use flotilla_actor::shutdown::AddTaskError;
use flotilla_actor::{Actor, ActorError, ActorSystem, Context, Phase, Props, ShutdownReason};
use flotilla_core::{CoordinatedShutdownSettings, FlotillaConfig};
use tokio::time::Instant;

fn system_with(settings: CoordinatedShutdownSettings) -> ActorSystem {
    let config = FlotillaConfig {
        coordinated_shutdown: settings,
        ..FlotillaConfig::default()
    };
    ActorSystem::builder("cs").config(config).build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn phases_run_in_order_and_each_waits_for_its_slow_tasks() {
    let system = system_with(CoordinatedShutdownSettings::default());
    let cs = system.coordinated_shutdown();
    let (p, mut rx) = probe();
    let t0 = Instant::now();
    // Registered out of order on purpose.
    for (phase, name, delay) in [
        (Phase::ClusterLeave, "leave", 100),
        (Phase::ServiceUnbind, "unbind-slow", 300),
        (Phase::ServiceUnbind, "unbind-fast", 10),
        (
            Phase::ClusterShardingShutdownRegion,
            "release-leases",
            2_000,
        ),
        (Phase::BeforeActorSystemTerminate, "flush", 0),
    ] {
        let p = p.clone();
        cs.add_task(phase, name, move || async move {
            tokio::time::sleep(ms(delay)).await;
            p.say(format!("{name} done at {}ms", t0.elapsed().as_millis()));
        })
        .unwrap();
    }
    let outcome = system.terminate().await;
    assert_eq!(
        rx.drain(),
        vec![
            "unbind-fast done at 10ms",
            "unbind-slow done at 300ms",
            // The sharding phase waits the full 2 s for the release: its timeout is 10 s.
            "release-leases done at 2300ms",
            "leave done at 2400ms",
            "flush done at 2400ms",
        ]
    );
    assert!(outcome.report.is_clean(), "{:?}", outcome.report);
    assert_eq!(outcome.reason, ShutdownReason::ActorSystemTerminate);
    let order: Vec<_> = outcome.report.phases.iter().map(|r| r.phase).collect();
    assert_eq!(order, Phase::ALL.to_vec());
    assert!(system.is_terminated());
}

#[tokio::test(start_paused = true)]
async fn a_hung_task_is_reported_and_does_not_hang_shutdown() {
    let settings =
        CoordinatedShutdownSettings::default().with_phase_timeout(Phase::ServiceStop, ms(500));
    let system = system_with(settings);
    let cs = system.coordinated_shutdown();
    let (p, mut rx) = probe();
    let t0 = Instant::now();
    cs.add_task(Phase::ServiceStop, "hangs-forever", || {
        std::future::pending::<()>()
    })
    .unwrap();
    let p2 = p.clone();
    cs.add_task(Phase::ServiceStop, "quick", move || async move {
        p2.say("quick")
    })
    .unwrap();
    cs.add_fallible_task(Phase::ServiceStop, "fails", || async {
        Err::<(), _>("disk full")
    })
    .unwrap();
    cs.add_task(Phase::ServiceStop, "panics", || async {
        panic!("task bug")
    })
    .unwrap();
    cs.add_task(Phase::ClusterLeave, "next-phase", move || async move {
        p.say(format!("next phase at {}ms", t0.elapsed().as_millis()));
    })
    .unwrap();
    let outcome = system.terminate().await;
    assert_eq!(rx.drain(), vec!["quick", "next phase at 500ms"]);
    assert_eq!(
        outcome.report.timed_out_tasks(),
        vec![(Phase::ServiceStop, "hangs-forever".into())]
    );
    let failed = outcome.report.failed_tasks();
    assert_eq!(failed.len(), 2);
    assert!(failed.contains(&(Phase::ServiceStop, "fails".into(), "disk full".into())));
    assert!(
        failed
            .iter()
            .any(|(_, n, e)| n == "panics" && e.contains("task bug"))
    );
    assert!(
        system.is_terminated(),
        "shutdown went on to stop every actor"
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_runs_once_however_often_it_is_triggered() {
    let system = system_with(CoordinatedShutdownSettings::default());
    let cs = system.coordinated_shutdown().clone();
    let runs = Arc::new(AtomicU32::new(0));
    let r = runs.clone();
    cs.add_task(Phase::ServiceUnbind, "count", move || async move {
        r.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(ms(100)).await;
    })
    .unwrap();
    let first = cs.run(ShutdownReason::ApplicationRequest);
    let second = cs.run(ShutdownReason::Signal("SIGTERM".into()));
    let third = system.terminate();
    let (a, b, c) = tokio::join!(first, second, third);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(
        Arc::ptr_eq(&a, &b) && Arc::ptr_eq(&b, &c),
        "every trigger sees the same outcome"
    );
    assert_eq!(
        a.reason,
        ShutdownReason::ApplicationRequest,
        "the first trigger's reason"
    );
    assert_eq!(cs.reason(), Some(ShutdownReason::ApplicationRequest));
    let again = cs.run(ShutdownReason::ApplicationRequest).await;
    assert!(Arc::ptr_eq(&a, &again));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn tasks_cannot_be_added_to_a_phase_that_already_ran_and_can_be_cancelled() {
    let system = system_with(CoordinatedShutdownSettings::default());
    let cs = system.coordinated_shutdown().clone();
    let ran = Arc::new(AtomicU32::new(0));
    let r = ran.clone();
    let handle = cs
        .add_task(Phase::ServiceStop, "cancelled", move || async move {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    assert!(cs.cancel_task(handle));
    let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
    cs.add_task(Phase::ClusterLeave, "hold", move || async move {
        let _ = gate_rx.await;
    })
    .unwrap();
    let outcome = cs.run(ShutdownReason::ApplicationRequest);
    tokio::time::sleep(ms(10)).await; // now in cluster-leave
    let err = cs
        .add_task(Phase::ServiceStop, "late", || async {})
        .unwrap_err();
    assert!(matches!(
        err,
        AddTaskError::PhaseAlreadyStarted {
            current: Phase::ClusterLeave,
            ..
        }
    ));
    cs.add_task(Phase::ClusterShutdown, "still-ahead", || async {})
        .unwrap();
    gate_tx.send(()).unwrap();
    let outcome = outcome.await;
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    let shutdown_phase = outcome
        .report
        .phases
        .iter()
        .find(|r| r.phase == Phase::ClusterShutdown)
        .unwrap();
    assert_eq!(shutdown_phase.completed, vec!["still-ahead".to_string()]);
}

/// An actor whose stop takes a while: actor-system-terminate waits for it.
struct SlowToStop;

impl Actor for SlowToStop {
    type Msg = ();
    async fn handle(&mut self, _: (), _ctx: &mut Context<()>) -> Result<(), ActorError> {
        Ok(())
    }
    async fn post_stop(&mut self, _ctx: &mut Context<()>) {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn termination_completes_only_when_every_actor_has_stopped() {
    let system = system_with(CoordinatedShutdownSettings::default());
    let slow = system.spawn("slow", Props::new(|| SlowToStop)).unwrap();
    let t0 = Instant::now();
    let outcome = system.terminate().await;
    assert!(outcome.report.is_clean());
    assert!(t0.elapsed() >= Duration::from_secs(3));
    assert!(slow.is_stopped());
    assert_eq!(system.live_actors(), 0);

    // Past the terminate phase's timeout the report names the straggler, and
    // when_terminated still waits for the last actor.
    let settings = CoordinatedShutdownSettings::default()
        .with_phase_timeout(Phase::ActorSystemTerminate, Duration::from_secs(1));
    let system = system_with(settings);
    system.spawn("slow", Props::new(|| SlowToStop)).unwrap();
    let outcome = system.terminate().await;
    assert_eq!(
        outcome.report.timed_out_tasks(),
        vec![(Phase::ActorSystemTerminate, "stop-all-actors".into())]
    );
    assert!(!system.is_terminated());
    system.when_terminated().await;
    assert_eq!(system.live_actors(), 0);
}
