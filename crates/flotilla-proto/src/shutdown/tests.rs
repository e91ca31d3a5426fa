use super::*;
use flotilla_core::machine::drain;

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn plan() -> ShutdownPlan {
    ShutdownPlan::new(
        CoordinatedShutdownSettings::default()
            .with_phase_timeout(Phase::ServiceUnbind, s(2))
            .with_phase_timeout(Phase::ClusterLeave, s(3)),
    )
}

fn phases_run(outputs: &[ShutdownOutput]) -> Vec<Phase> {
    outputs
        .iter()
        .filter_map(|o| match o {
            ShutdownOutput::RunTasks { phase, .. } => Some(*phase),
            _ => None,
        })
        .collect()
}

#[test]
fn an_empty_plan_passes_every_phase_and_finishes_once() {
    let t0 = crate::testing::epoch();
    let mut p = plan();
    p.handle(t0, ShutdownInput::Start);
    let out = drain(&mut p);
    assert_eq!(out.len(), Phase::ALL.len() + 1);
    let ShutdownOutput::Finished(report) = out.last().unwrap() else {
        panic!("{out:?}")
    };
    let order: Vec<_> = report.phases.iter().map(|r| r.phase).collect();
    assert_eq!(order, Phase::ALL.to_vec());
    assert!(report.is_clean());
    assert!(p.is_finished());
    p.handle(t0, ShutdownInput::Start);
    assert_eq!(drain(&mut p), vec![], "a second start does nothing");
}

#[test]
fn phases_run_in_order_and_each_waits_for_all_its_tasks() {
    let t0 = crate::testing::epoch();
    let mut p = plan();
    let leave = p.add_task(Phase::ClusterLeave, "leave").unwrap();
    let unbind_a = p.add_task(Phase::ServiceUnbind, "unbind-a").unwrap();
    let unbind_b = p.add_task(Phase::ServiceUnbind, "unbind-b").unwrap();
    p.handle(t0, ShutdownInput::Start);
    let out = drain(&mut p);
    assert_eq!(
        out.last(),
        Some(&ShutdownOutput::RunTasks {
            phase: Phase::ServiceUnbind,
            tasks: vec![unbind_a, unbind_b],
            timeout: s(2)
        })
    );
    assert_eq!(p.poll_timeout(), Some(t0 + s(2)));

    p.handle(
        t0 + s(1),
        ShutdownInput::TaskFinished {
            task: unbind_b,
            result: Ok(()),
        },
    );
    assert_eq!(
        drain(&mut p),
        vec![],
        "one task of the phase is still running"
    );

    p.handle(
        t0 + s(1),
        ShutdownInput::TaskFinished {
            task: unbind_a,
            result: Err("boom".into()),
        },
    );
    let out = drain(&mut p);
    assert_eq!(
        out[0],
        ShutdownOutput::PhaseFinished(PhaseReport {
            phase: Phase::ServiceUnbind,
            elapsed: s(1),
            completed: vec!["unbind-b".into()],
            failed: vec![("unbind-a".into(), "boom".into())],
            timed_out: vec![],
        })
    );
    assert_eq!(phases_run(&out), vec![Phase::ClusterLeave]);
    assert_eq!(p.poll_timeout(), Some(t0 + s(1) + s(3)));

    p.handle(
        t0 + s(2),
        ShutdownInput::TaskFinished {
            task: leave,
            result: Ok(()),
        },
    );
    let out = drain(&mut p);
    let ShutdownOutput::Finished(report) = out.last().unwrap() else {
        panic!("{out:?}")
    };
    assert_eq!(
        report.failed_tasks(),
        vec![(Phase::ServiceUnbind, "unbind-a".into(), "boom".into())]
    );
    assert!(report.timed_out_tasks().is_empty());
    assert_eq!(p.poll_timeout(), None);
}

#[test]
fn a_hung_task_is_reported_by_name_and_shutdown_goes_on() {
    let t0 = crate::testing::epoch();
    let mut p = plan();
    let hung = p.add_task(Phase::ServiceUnbind, "hung").unwrap();
    let quick = p.add_task(Phase::ServiceUnbind, "quick").unwrap();
    let later = p.add_task(Phase::ServiceStop, "later").unwrap();
    p.handle(t0, ShutdownInput::Start);
    drain(&mut p);
    p.handle(
        t0,
        ShutdownInput::TaskFinished {
            task: quick,
            result: Ok(()),
        },
    );
    assert_eq!(drain(&mut p), vec![]);

    p.handle_timeout(t0 + s(1));
    assert_eq!(drain(&mut p), vec![], "a spurious early timeout is a no-op");

    p.handle_timeout(t0 + s(2));
    let out = drain(&mut p);
    assert!(matches!(
        &out[0],
        ShutdownOutput::PhaseFinished(r) if r.timed_out == vec!["hung".to_string()]
            && r.completed == vec!["quick".to_string()]
    ));
    assert_eq!(phases_run(&out), vec![Phase::ServiceStop]);

    // The hung task finishing late changes nothing.
    p.handle(
        t0 + s(3),
        ShutdownInput::TaskFinished {
            task: hung,
            result: Ok(()),
        },
    );
    assert_eq!(drain(&mut p), vec![]);

    p.handle(
        t0 + s(3),
        ShutdownInput::TaskFinished {
            task: later,
            result: Ok(()),
        },
    );
    let out = drain(&mut p);
    let ShutdownOutput::Finished(report) = out.last().unwrap() else {
        panic!("{out:?}")
    };
    assert_eq!(
        report.timed_out_tasks(),
        vec![(Phase::ServiceUnbind, "hung".into())]
    );
    assert!(!report.is_clean());
}

#[test]
fn tasks_cannot_join_a_phase_that_already_started() {
    let t0 = crate::testing::epoch();
    let mut p = plan();
    p.add_task(Phase::ClusterLeave, "leave").unwrap();
    let cancelled = p.add_task(Phase::ClusterExiting, "cancelled").unwrap();
    p.handle(t0, ShutdownInput::Start);
    drain(&mut p);
    assert_eq!(
        p.add_task(Phase::ServiceStop, "late"),
        Err(AddTaskError::PhaseAlreadyStarted {
            name: "late".into(),
            phase: Phase::ServiceStop,
            current: Phase::ClusterLeave
        })
    );
    assert!(p.add_task(Phase::ClusterLeave, "same-phase").is_err());
    let added = p.add_task(Phase::ClusterShutdown, "still-ahead").unwrap();
    assert_eq!(p.task_name(added), Some("still-ahead"));
    assert!(p.cancel_task(cancelled));
    assert!(!p.cancel_task(cancelled));

    p.handle_timeout(t0 + s(3));
    let out = drain(&mut p);
    assert_eq!(
        phases_run(&out),
        vec![Phase::ClusterShutdown],
        "the cancelled task never runs"
    );
}
