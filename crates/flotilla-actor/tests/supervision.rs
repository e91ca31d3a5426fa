//! Supervision: resume, restart with backoff and a limit, stop, escalate, panics, hooks.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

mod common;

use std::time::Duration;

use common::{Probe, ms, probe};
use flotilla_actor::{
    Actor, ActorError, ActorSystem, Context, Directive, Failure, Props, ReplyTo, RestartSettings,
    SupervisorStrategy,
};
use tokio::time::Instant;

enum Msg {
    Fail,
    Panic,
    Add(u32),
    Get(ReplyTo<u32>),
}

struct Worker {
    name: &'static str,
    probe: Probe,
    state: u32,
    started: Instant,
}

impl Actor for Worker {
    type Msg = Msg;

    async fn pre_start(&mut self, _ctx: &mut Context<Msg>) -> Result<(), ActorError> {
        let t = self.started.elapsed().as_millis();
        self.probe.say(format!("{} pre_start at {t}ms", self.name));
        Ok(())
    }

    async fn handle(&mut self, msg: Msg, _ctx: &mut Context<Msg>) -> Result<(), ActorError> {
        match msg {
            Msg::Fail => return Err("bad input".into()),
            Msg::Panic => panic!("handler panicked on purpose"),
            Msg::Add(n) => self.state += n,
            Msg::Get(reply) => {
                reply.send(self.state);
            }
        }
        Ok(())
    }

    async fn pre_restart(&mut self, _ctx: &mut Context<Msg>, cause: &Failure) {
        self.probe
            .say(format!("{} pre_restart: {cause}", self.name));
    }

    async fn post_restart(
        &mut self,
        _ctx: &mut Context<Msg>,
        cause: &Failure,
    ) -> Result<(), ActorError> {
        self.probe
            .say(format!("{} post_restart: {cause}", self.name));
        Ok(())
    }

    async fn post_stop(&mut self, _ctx: &mut Context<Msg>) {
        self.probe.say(format!("{} post_stop", self.name));
    }
}

fn worker(name: &'static str, probe: &Probe) -> Props<Worker> {
    let probe = probe.clone();
    let started = Instant::now();
    Props::new(move || Worker {
        name,
        probe: probe.clone(),
        state: 0,
        started,
    })
}

async fn get(w: &flotilla_actor::ActorRef<Msg>) -> u32 {
    w.ask(Msg::Get, Duration::from_secs(1)).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn restart_backs_off_exponentially_and_stops_past_the_limit() {
    let system = ActorSystem::new("sup").unwrap();
    let (p, mut rx) = probe();
    let settings =
        RestartSettings::new(ms(100), ms(1000), 0.0, 3, Duration::from_secs(10)).unwrap();
    let w = system
        .spawn(
            "w",
            worker("w", &p).with_supervisor(SupervisorStrategy::restart(settings)),
        )
        .unwrap();
    assert_eq!(rx.next().await, "w pre_start at 0ms");
    for _ in 0..4 {
        w.tell(Msg::Fail);
    }
    // Backoffs of 100, 200 and 400 ms: new instances start at 100, 300 and 700 ms.
    for at in [100, 300, 700] {
        assert_eq!(rx.next().await, "w pre_restart: bad input");
        assert_eq!(rx.next().await, format!("w pre_start at {at}ms"));
        assert_eq!(rx.next().await, "w post_restart: bad input");
    }
    // The fourth failure within the window exceeds the limit of 3: the actor stops.
    assert_eq!(rx.next().await, "w post_stop");
    w.stopped().await;
    system.terminate().await;
}

#[tokio::test(start_paused = true)]
async fn restart_gives_a_fresh_instance_and_keeps_queued_messages() {
    let system = ActorSystem::new("sup").unwrap();
    let (p, mut rx) = probe();
    let settings = RestartSettings::new(ms(50), ms(50), 0.0, 5, Duration::from_secs(10)).unwrap();
    let w = system
        .spawn(
            "w",
            worker("w", &p).with_supervisor(SupervisorStrategy::restart(settings)),
        )
        .unwrap();
    w.tell(Msg::Add(5));
    w.tell(Msg::Fail);
    w.tell(Msg::Add(2)); // queued during the backoff, handled by the new instance
    assert_eq!(
        get(&w).await,
        2,
        "state was reset by the restart, the queued message was kept"
    );
    rx.drain();
    system.terminate().await;
}

#[tokio::test(start_paused = true)]
async fn resume_keeps_state_and_a_panic_is_just_a_failure() {
    let system = ActorSystem::new("sup").unwrap();
    let (p, mut rx) = probe();
    let w = system
        .spawn(
            "w",
            worker("w", &p).with_supervisor(SupervisorStrategy::resume()),
        )
        .unwrap();
    w.tell(Msg::Add(3));
    w.tell(Msg::Panic);
    w.tell(Msg::Fail);
    w.tell(Msg::Add(4));
    assert_eq!(get(&w).await, 7);
    assert_eq!(
        rx.drain(),
        vec!["w pre_start at 0ms"],
        "no restart, no stop"
    );
    // The system is still healthy: new actors spawn and work.
    let other = system.spawn("other", worker("other", &p)).unwrap();
    other.tell(Msg::Add(1));
    assert_eq!(get(&other).await, 1);
    system.terminate().await;
}

#[tokio::test(start_paused = true)]
async fn stop_is_the_default_and_a_panic_stops_the_actor() {
    let system = ActorSystem::new("sup").unwrap();
    let (p, mut rx) = probe();
    let w = system.spawn("w", worker("w", &p)).unwrap();
    w.tell(Msg::Panic);
    w.stopped().await;
    assert_eq!(rx.drain(), vec!["w pre_start at 0ms", "w post_stop"]);
    let err = w.ask(Msg::Get, Duration::from_secs(1)).await.unwrap_err();
    assert!(
        matches!(err, flotilla_actor::AskError::TargetDead { .. }),
        "{err}"
    );
    system.terminate().await;
}

/// A parent that spawns one child and records what happens to itself.
struct Parent {
    probe: Probe,
    child_strategy: SupervisorStrategy,
}

enum ParentMsg {
    Spawned(ReplyTo<flotilla_actor::ActorRef<Msg>>),
}

impl Actor for Parent {
    type Msg = ParentMsg;

    async fn handle(
        &mut self,
        msg: ParentMsg,
        ctx: &mut Context<ParentMsg>,
    ) -> Result<(), ActorError> {
        let ParentMsg::Spawned(reply) = msg;
        let child = ctx.spawn(
            "child",
            worker("child", &self.probe).with_supervisor(self.child_strategy.clone()),
        )?;
        reply.send(child);
        Ok(())
    }

    async fn pre_restart(&mut self, _ctx: &mut Context<ParentMsg>, cause: &Failure) {
        self.probe.say(format!("parent pre_restart: {cause}"));
    }

    async fn post_stop(&mut self, _ctx: &mut Context<ParentMsg>) {
        self.probe.say("parent post_stop");
    }
}

#[tokio::test(start_paused = true)]
async fn escalate_stops_the_child_and_fails_the_parent() {
    let system = ActorSystem::new("sup").unwrap();
    let (p, mut rx) = probe();
    let probe2 = p.clone();
    let parent_strategy = SupervisorStrategy::from_decider(|f| match f {
        Failure::Escalated { .. } => Directive::Restart,
        _ => Directive::Stop,
    })
    .with_restart_settings(RestartSettings::immediate(5, Duration::from_secs(60)).unwrap());
    let parent = system
        .spawn(
            "parent",
            Props::new(move || Parent {
                probe: probe2.clone(),
                child_strategy: SupervisorStrategy::escalate(),
            })
            .with_supervisor(parent_strategy),
        )
        .unwrap();
    let child = parent
        .ask(ParentMsg::Spawned, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(child.path().to_string(), "flotilla://sup/user/parent/child");
    assert_eq!(rx.next().await, "child pre_start at 0ms");
    child.tell(Msg::Fail);
    assert_eq!(rx.next().await, "child post_stop");
    assert_eq!(
        rx.next().await,
        "parent pre_restart: child flotilla://sup/user/parent/child failed: bad input"
    );
    child.stopped().await;
    // The restarted parent can create a child with the same name again.
    let again = parent
        .ask(ParentMsg::Spawned, Duration::from_secs(1))
        .await
        .unwrap();
    assert_ne!(again.id(), child.id());
    system.terminate().await;
    assert_eq!(
        rx.drain(),
        vec![
            "child pre_start at 0ms",
            "child post_stop",
            "parent post_stop"
        ]
    );
}

struct FailsToStart {
    attempts: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl Actor for FailsToStart {
    type Msg = ();

    async fn pre_start(&mut self, _ctx: &mut Context<()>) -> Result<(), ActorError> {
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Err("cannot open the database".into())
    }

    async fn handle(&mut self, _msg: (), _ctx: &mut Context<()>) -> Result<(), ActorError> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn a_failing_pre_start_is_supervised_and_bounded_by_the_limit() {
    let system = ActorSystem::new("sup").unwrap();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let a = attempts.clone();
    let settings = RestartSettings::new(ms(10), ms(10), 0.0, 4, Duration::from_secs(60)).unwrap();
    let r = system
        .spawn(
            "db",
            Props::new(move || FailsToStart {
                attempts: a.clone(),
            })
            .with_supervisor(SupervisorStrategy::restart(settings)),
        )
        .unwrap();
    r.stopped().await;
    assert_eq!(
        attempts.load(std::sync::atomic::Ordering::SeqCst),
        5,
        "first start + 4 restarts"
    );
    system.terminate().await;
}
