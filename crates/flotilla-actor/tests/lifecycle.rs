//! Hierarchy, names, deathwatch and stop order.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

mod common;

use std::time::Duration;

use common::{Probe, ms, probe};
use flotilla_actor::{
    Actor, ActorError, ActorRef, ActorSystem, Context, Props, ReplyTo, SpawnError, Terminated,
};

/// Spawns children on request, watches on request, records its own lifecycle.
struct Node {
    name: String,
    probe: Probe,
}

enum NodeMsg {
    Spawn(String, ReplyTo<Result<ActorRef<Self>, SpawnError>>),
    Watch(ActorRef<Self>),
    Unwatch(ActorRef<Self>),
    /// Stops the target, waits until it is dead (its death notice is then queued here), and
    /// unwatches it in the same handler.
    StopThenUnwatch(ActorRef<Self>),
    Ping(ReplyTo<()>),
}

fn node(name: &str, probe: &Probe) -> Props<Node> {
    let (name, probe) = (name.to_owned(), probe.clone());
    Props::new(move || Node {
        name: name.clone(),
        probe: probe.clone(),
    })
}

impl Actor for Node {
    type Msg = NodeMsg;

    async fn handle(&mut self, msg: NodeMsg, ctx: &mut Context<NodeMsg>) -> Result<(), ActorError> {
        match msg {
            NodeMsg::Spawn(name, reply) => {
                reply.send(ctx.spawn(&name, node(&name, &self.probe)));
            }
            NodeMsg::Watch(target) => ctx.watch(&target),
            NodeMsg::Unwatch(target) => ctx.unwatch(&target),
            NodeMsg::StopThenUnwatch(target) => {
                target.stop();
                target.stopped().await;
                ctx.unwatch(&target);
            }
            NodeMsg::Ping(reply) => {
                reply.send(());
            }
        }
        Ok(())
    }

    async fn on_terminated(
        &mut self,
        t: Terminated,
        _ctx: &mut Context<NodeMsg>,
    ) -> Result<(), ActorError> {
        self.probe
            .say(format!("{} saw {} terminate", self.name, t.path.name()));
        Ok(())
    }

    async fn post_stop(&mut self, ctx: &mut Context<NodeMsg>) {
        assert!(
            ctx.children().is_empty(),
            "children stop before their parent's post_stop"
        );
        self.probe.say(format!("{} stopped", self.name));
    }
}

async fn spawn_under(
    parent: &ActorRef<NodeMsg>,
    name: &str,
) -> Result<ActorRef<NodeMsg>, SpawnError> {
    let name = name.to_owned();
    parent
        .ask(|r| NodeMsg::Spawn(name, r), Duration::from_secs(1))
        .await
        .unwrap()
}

async fn ping(a: &ActorRef<NodeMsg>) {
    a.ask(NodeMsg::Ping, Duration::from_secs(1)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn paths_follow_the_hierarchy_and_names_are_unique_among_siblings() {
    let system = ActorSystem::builder("tree")
        .host_port("127.0.0.1", 2552)
        .build()
        .unwrap();
    let (p, _rx) = probe();
    let a = system.spawn("a", node("a", &p)).unwrap();
    let b = spawn_under(&a, "b").await.unwrap();
    assert_eq!(
        a.path().to_string(),
        "flotilla://tree@127.0.0.1:2552/user/a"
    );
    assert_eq!(
        b.path().to_string(),
        "flotilla://tree@127.0.0.1:2552/user/a/b"
    );
    assert_eq!(
        system.spawn("a", node("a", &p)).unwrap_err(),
        SpawnError::NameTaken {
            name: "a".into(),
            parent: a.path().parent()
        }
    );
    assert!(matches!(
        spawn_under(&a, "b").await,
        Err(SpawnError::NameTaken { .. })
    ));
    assert!(matches!(
        system.spawn("bad/name", node("x", &p)),
        Err(SpawnError::InvalidName(_))
    ));
    assert!(matches!(
        system.spawn("$reserved", node("x", &p)),
        Err(SpawnError::InvalidName(_))
    ));
    let anon = system.spawn_anonymous(node("anon", &p)).unwrap();
    assert!(anon.path().name().starts_with('$'));
    let sys_actor = system
        .spawn_system_actor("lease-client", node("sys", &p))
        .unwrap();
    assert_eq!(
        sys_actor.path().to_string(),
        "flotilla://tree@127.0.0.1:2552/system/lease-client"
    );

    // A name is free again once its actor has fully stopped.
    b.stop();
    b.stopped().await;
    let b2 = spawn_under(&a, "b").await.unwrap();
    assert_ne!(b2.id(), b.id());
    system.terminate().await;
}

#[tokio::test(start_paused = true)]
async fn stopping_a_parent_stops_its_children_first() {
    let system = ActorSystem::new("tree").unwrap();
    let (p, mut rx) = probe();
    let root = system.spawn("root", node("root", &p)).unwrap();
    let mid = spawn_under(&root, "mid").await.unwrap();
    let leaf1 = spawn_under(&mid, "leaf1").await.unwrap();
    let leaf2 = spawn_under(&mid, "leaf2").await.unwrap();
    let live_before = system.live_actors();
    root.stop();
    root.stopped().await;
    let order = rx.drain();
    assert_eq!(order.len(), 4, "{order:?}");
    let pos = |s: &str| order.iter().position(|o| o == s).unwrap();
    assert!(pos("leaf1 stopped") < pos("mid stopped"));
    assert!(pos("leaf2 stopped") < pos("mid stopped"));
    assert!(pos("mid stopped") < pos("root stopped"));
    assert!(leaf1.is_stopped() && leaf2.is_stopped() && mid.is_stopped());
    assert_eq!(system.live_actors(), live_before - 4);
    system.terminate().await;
}

#[tokio::test(start_paused = true)]
async fn terminated_arrives_exactly_once_per_watch() {
    let system = ActorSystem::new("watch").unwrap();
    let (p, mut rx) = probe();
    let watcher = system.spawn("watcher", node("watcher", &p)).unwrap();
    let target = system.spawn("target", node("target", &p)).unwrap();
    watcher.tell(NodeMsg::Watch(target.clone()));
    watcher.tell(NodeMsg::Watch(target.clone())); // watching twice is watching once
    ping(&watcher).await;
    target.stop();
    assert_eq!(rx.next().await, "target stopped");
    assert_eq!(rx.next().await, "watcher saw target terminate");
    rx.expect_none(ms(500)).await;
    system.terminate().await;
}

#[tokio::test(start_paused = true)]
async fn watching_an_already_dead_actor_delivers_terminated_at_once() {
    let system = ActorSystem::new("watch").unwrap();
    let (p, mut rx) = probe();
    let target = system.spawn("target", node("target", &p)).unwrap();
    target.stop();
    target.stopped().await;
    assert_eq!(rx.next().await, "target stopped");
    let watcher = system.spawn("watcher", node("watcher", &p)).unwrap();
    watcher.tell(NodeMsg::Watch(target.clone()));
    assert_eq!(rx.next().await, "watcher saw target terminate");
    rx.expect_none(ms(500)).await;
    system.terminate().await;
}

#[tokio::test(start_paused = true)]
async fn no_terminated_after_unwatch() {
    let system = ActorSystem::new("watch").unwrap();
    let (p, mut rx) = probe();
    let watcher = system.spawn("watcher", node("watcher", &p)).unwrap();
    let target = system.spawn("target", node("target", &p)).unwrap();
    watcher.tell(NodeMsg::Watch(target.clone()));
    watcher.tell(NodeMsg::Unwatch(target.clone()));
    ping(&watcher).await;
    target.stop();
    assert_eq!(rx.next().await, "target stopped");
    rx.expect_none(ms(500)).await;

    // Unwatch while the death notice is already queued: the notice is discarded.
    let target2 = system.spawn("target2", node("target2", &p)).unwrap();
    watcher.tell(NodeMsg::Watch(target2.clone()));
    watcher.tell(NodeMsg::StopThenUnwatch(target2.clone()));
    assert_eq!(rx.next().await, "target2 stopped");
    ping(&watcher).await;
    rx.expect_none(ms(500)).await;
    system.terminate().await;
}

struct Careless;

impl Actor for Careless {
    type Msg = ActorRef<NodeMsg>;

    async fn handle(
        &mut self,
        target: ActorRef<NodeMsg>,
        ctx: &mut Context<Self::Msg>,
    ) -> Result<(), ActorError> {
        ctx.watch(&target);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn an_unhandled_terminated_is_a_death_pact() {
    let system = ActorSystem::new("watch").unwrap();
    let (p, _rx) = probe();
    let target = system.spawn("target", node("target", &p)).unwrap();
    let careless = system.spawn("careless", Props::new(|| Careless)).unwrap();
    careless.tell(target.clone());
    target.stop();
    careless.stopped().await; // default strategy: stop on the DeathPact failure
    system.terminate().await;
}

#[tokio::test(start_paused = true)]
async fn terminate_stops_every_actor_user_actors_before_system_actors() {
    let system = ActorSystem::new("term").unwrap();
    let (p, mut rx) = probe();
    let a = system.spawn("a", node("a", &p)).unwrap();
    spawn_under(&a, "a1").await.unwrap();
    system
        .spawn_system_actor("infra", node("infra", &p))
        .unwrap();
    let outcome = system.terminate().await;
    assert!(outcome.report.is_clean(), "{:?}", outcome.report);
    system.when_terminated().await;
    assert!(system.is_terminated());
    assert_eq!(system.live_actors(), 0);
    assert_eq!(rx.drain(), vec!["a1 stopped", "a stopped", "infra stopped"]);
    assert!(matches!(
        system.spawn("late", node("late", &p)),
        Err(SpawnError::ParentStopping { .. })
    ));
}

/// Awaits for a minute in each message, saying when it starts and ends one.
struct Slow {
    probe: Probe,
}

impl Actor for Slow {
    type Msg = u32;

    async fn handle(&mut self, n: u32, _ctx: &mut Context<u32>) -> Result<(), ActorError> {
        self.probe.say(format!("begin {n}"));
        tokio::time::sleep(Duration::from_secs(60)).await;
        self.probe.say(format!("end {n}"));
        Ok(())
    }

    async fn post_stop(&mut self, _ctx: &mut Context<u32>) {
        self.probe.say("stopped");
    }
}

#[tokio::test(start_paused = true)]
async fn stop_now_abandons_the_message_in_hand_where_stop_lets_it_finish() {
    let system = ActorSystem::new("lifecycle").unwrap();
    let (p, mut rx) = probe();
    let slow = {
        let p = p.clone();
        system
            .spawn("slow", Props::new(move || Slow { probe: p.clone() }))
            .unwrap()
    };
    slow.tell(1);
    slow.tell(2);
    assert_eq!(rx.next().await, "begin 1");
    slow.stop_now();
    tokio::time::timeout(ms(10), slow.stopped())
        .await
        .expect("stopped at once, not after the handler's minute");
    assert_eq!(rx.drain(), ["stopped"], "1 abandoned, 2 never handled");

    // stop() is a request between messages: the message in hand finishes first.
    let patient = system
        .spawn("patient", Props::new(move || Slow { probe: p.clone() }))
        .unwrap();
    patient.tell(1);
    assert_eq!(rx.next().await, "begin 1");
    patient.stop();
    patient.stopped().await;
    assert_eq!(rx.drain(), ["end 1", "stopped"]);

    // An idle actor stops at once too, and stop_now on a stopped actor is harmless.
    let (quiet, _rx) = probe();
    let idle = system
        .spawn(
            "idle",
            Props::new(move || Slow {
                probe: quiet.clone(),
            }),
        )
        .unwrap();
    idle.stop_now();
    tokio::time::timeout(ms(10), idle.stopped()).await.unwrap();
    idle.stop_now();
}
