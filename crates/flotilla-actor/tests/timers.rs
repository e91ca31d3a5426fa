//! Timers: single, periodic, replace, cancel; cancelled on stop and restart.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

mod common;

use std::time::Duration;

use common::{Probe, ms, probe};
use flotilla_actor::{
    Actor, ActorError, ActorSystem, Context, Props, RestartSettings, SupervisorStrategy,
};
use tokio::time::Instant;

#[derive(Clone)]
enum Msg {
    StartSingle(&'static str, u64),
    StartPeriodic(&'static str, u64),
    Cancel(&'static str),
    Tick(&'static str),
    Fail,
}

struct Clock {
    probe: Probe,
    t0: Instant,
}

impl Actor for Clock {
    type Msg = Msg;

    async fn handle(&mut self, msg: Msg, ctx: &mut Context<Msg>) -> Result<(), ActorError> {
        match msg {
            Msg::StartSingle(key, after) => {
                ctx.timers().start_single(key, Msg::Tick(key), ms(after))
            }
            Msg::StartPeriodic(key, every) => {
                ctx.timers().start_periodic(key, Msg::Tick(key), ms(every))
            }
            Msg::Cancel(key) => ctx.timers().cancel(key),
            Msg::Tick(key) => {
                let at = self.t0.elapsed().as_millis();
                self.probe.say(format!("{key}@{at}"));
            }
            Msg::Fail => return Err("failing on purpose".into()),
        }
        Ok(())
    }
}

fn clock(p: &Probe) -> Props<Clock> {
    let p = p.clone();
    let t0 = Instant::now();
    Props::new(move || Clock {
        probe: p.clone(),
        t0,
    })
}

#[tokio::test(start_paused = true)]
async fn single_and_periodic_timers_fire_on_time() {
    let system = ActorSystem::new("timers").unwrap();
    let (p, mut rx) = probe();
    let c = system.spawn("c", clock(&p)).unwrap();
    c.tell(Msg::StartSingle("once", 250));
    c.tell(Msg::StartPeriodic("every", 100));
    let got: Vec<_> = [
        rx.next().await,
        rx.next().await,
        rx.next().await,
        rx.next().await,
    ]
    .into();
    assert_eq!(got, vec!["every@100", "every@200", "once@250", "every@300"]);
    c.tell(Msg::Cancel("every"));
    rx.expect_none(ms(1000)).await;
    system.terminate().await;
}

#[tokio::test(start_paused = true)]
async fn restarting_a_key_replaces_the_old_timer() {
    let system = ActorSystem::new("timers").unwrap();
    let (p, mut rx) = probe();
    let c = system.spawn("c", clock(&p)).unwrap();
    c.tell(Msg::StartSingle("k", 100));
    tokio::time::sleep(ms(50)).await;
    c.tell(Msg::StartSingle("k", 200)); // replaces: fires at 250, not 100
    assert_eq!(rx.next().await, "k@250");
    rx.expect_none(ms(1000)).await;
    system.terminate().await;
}

#[tokio::test(start_paused = true)]
async fn timers_are_cancelled_on_stop_and_on_restart() {
    let system = ActorSystem::new("timers").unwrap();
    let (p, mut rx) = probe();
    let settings = RestartSettings::immediate(5, Duration::from_secs(60)).unwrap();
    let c = system
        .spawn(
            "c",
            clock(&p).with_supervisor(SupervisorStrategy::restart(settings)),
        )
        .unwrap();
    c.tell(Msg::StartPeriodic("p", 100));
    assert_eq!(rx.next().await, "p@100");
    c.tell(Msg::Fail);
    rx.expect_none(ms(1000)).await; // the restart cancelled it

    c.tell(Msg::StartSingle("s", 100));
    tokio::time::sleep(ms(1)).await; // the timer is started; stop overtakes queued messages
    c.stop();
    c.stopped().await;
    rx.expect_none(ms(1000)).await;
    assert_eq!(
        system.dead_letter_count(),
        0,
        "a cancelled timer is not a dead letter"
    );
    system.terminate().await;
}
