//! Actors on two nodes (two actor systems with remoting, in one process, over 127.0.0.1): remote
//! references are used like local ones.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

mod common;

use std::time::Duration;

use common::{Probe, ProbeRx, probe};
use flotilla_actor::{
    Actor, ActorError, ActorRef, ActorSystem, AssociationEvent, Context, Props, RemoteMessage,
    ReplyTo, Terminated,
};
use flotilla_core::FlotillaConfig;
use flotilla_proto::association::StateName;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
enum CounterMsg {
    Add(u64),
    Get(ReplyTo<u64>),
    /// Never answered: the asker times out.
    Ignore(ReplyTo<u64>),
    /// Kept until [`CounterMsg::Answer`].
    Hold(ReplyTo<u64>),
    /// Answers the oldest held ask with the value.
    Answer(u64),
    Stop,
}

impl RemoteMessage for CounterMsg {
    const MANIFEST: &'static str = "test.Counter";
}

/// Another type, sent to the counter's path by mistake.
#[derive(Debug, Serialize, Deserialize)]
struct Stranger(String);

impl RemoteMessage for Stranger {
    const MANIFEST: &'static str = "test.Stranger";
}

#[derive(Default)]
struct Counter {
    total: u64,
    seen: Vec<u64>,
    held: std::collections::VecDeque<ReplyTo<u64>>,
}

impl Actor for Counter {
    type Msg = CounterMsg;
    async fn handle(
        &mut self,
        msg: CounterMsg,
        ctx: &mut Context<CounterMsg>,
    ) -> Result<(), ActorError> {
        match msg {
            CounterMsg::Add(n) => {
                self.total += n;
                self.seen.push(n);
            }
            CounterMsg::Get(reply) => {
                // Everything added before arrived first, in order.
                let in_order = self.seen.windows(2).all(|w| w[0] < w[1]);
                reply.send(if in_order { self.total } else { u64::MAX });
            }
            CounterMsg::Ignore(_) => {}
            CounterMsg::Hold(reply) => self.held.push_back(reply),
            CounterMsg::Answer(n) => {
                if let Some(reply) = self.held.pop_front() {
                    reply.send(n);
                }
            }
            CounterMsg::Stop => ctx.stop(),
        }
        Ok(())
    }
}

/// Watches whatever it is given; says "terminated <path>" when it stops.
struct Watcher(Probe);

impl Actor for Watcher {
    type Msg = ActorRef<CounterMsg>;
    async fn handle(
        &mut self,
        target: ActorRef<CounterMsg>,
        ctx: &mut Context<Self::Msg>,
    ) -> Result<(), ActorError> {
        ctx.watch(&target);
        self.0.say("watching");
        Ok(())
    }

    async fn on_terminated(
        &mut self,
        t: Terminated,
        _ctx: &mut Context<Self::Msg>,
    ) -> Result<(), ActorError> {
        self.0.say(format!("terminated {}", t.path));
        Ok(())
    }
}

fn config() -> FlotillaConfig {
    FlotillaConfig {
        remote: flotilla_remote::testing::fast_settings(),
        ..FlotillaConfig::default()
    }
}

fn node(name: &str) -> ActorSystem {
    ActorSystem::builder(name)
        .config(config())
        .remote("127.0.0.1", 0)
        .build()
        .unwrap()
}

/// Nodes a and b with `config` and fault injectors, b with an exposed counter (returned), a with a
/// reference to it.
struct FaultyPair {
    a: ActorSystem,
    b: ActorSystem,
    a_faults: flotilla_remote::FaultInjector,
    b_faults: flotilla_remote::FaultInjector,
    counter: ActorRef<CounterMsg>,
    remote: ActorRef<CounterMsg>,
}

fn faulty_pair(config: &FlotillaConfig) -> FaultyPair {
    let build = |faults: &flotilla_remote::FaultInjector| {
        ActorSystem::builder("app")
            .config(config.clone())
            .remote("127.0.0.1", 0)
            .fault_injector(faults.clone())
            .build()
            .unwrap()
    };
    let (a_faults, b_faults) = Default::default();
    let (a, b) = (build(&a_faults), build(&b_faults));
    let counter = b.spawn("counter", Props::<Counter>::default()).unwrap();
    b.expose(&counter);
    let remote = a
        .remote_ref::<CounterMsg>(&format!("{}/user/counter", b.address()))
        .unwrap();
    FaultyPair {
        a,
        b,
        a_faults,
        b_faults,
        counter,
        remote,
    }
}

/// An actor on `a` that watches `remote`; its probe.
async fn watch_from(a: &ActorSystem, remote: &ActorRef<CounterMsg>) -> ProbeRx {
    let (p, mut rx) = probe();
    let watcher = a
        .spawn("watcher", Props::new(move || Watcher(p.clone())))
        .unwrap();
    watcher.tell(remote.clone());
    assert_eq!(rx.next().await, "watching");
    rx
}

/// Node b with an exposed counter; node a with a reference to it.
async fn pair() -> (ActorSystem, ActorSystem, ActorRef<CounterMsg>) {
    let (a, b) = (node("app"), node("app"));
    let counter = b.spawn("counter", Props::<Counter>::default()).unwrap();
    b.expose(&counter);
    let remote = a
        .remote_ref::<CounterMsg>(&format!("{}/user/counter", b.address()))
        .unwrap();
    (a, b, remote)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tell_and_ask_a_remote_actor_like_a_local_one() {
    let (a, b, remote) = pair().await;
    assert_eq!(
        remote.path().to_string(),
        format!("{}/user/counter", b.address())
    );
    for n in 1..=100 {
        remote.tell(CounterMsg::Add(n));
    }
    let total = remote
        .ask(CounterMsg::Get, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(total, 5050, "every tell arrived, in order, before the ask");
    // An unanswered question times out like a local one; the answer table does not keep it.
    let err = remote
        .ask(CounterMsg::Ignore, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no reply"), "{err}");
    assert_eq!(
        remote
            .ask(CounterMsg::Get, Duration::from_secs(10))
            .await
            .unwrap(),
        5050
    );
    let assoc = a.associations().await;
    assert_eq!(assoc.len(), 1);
    assert_eq!(assoc[0].state, StateName::Active);
    assert_eq!(
        assoc[0].uid,
        Some(b.uid()),
        "remoting uses the system's UID"
    );
    a.terminate().await;
    b.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_cannot_be_delivered_are_dropped_and_the_association_stays_up() {
    let (a, b, remote) = pair().await;
    // The wrong message type at the counter's path, and a path nobody exposed.
    let stranger = a
        .remote_ref::<Stranger>(&format!("{}/user/counter", b.address()))
        .unwrap();
    stranger.tell(Stranger("hello".into()));
    let nobody = a
        .remote_ref::<CounterMsg>(&format!("{}/user/nobody", b.address()))
        .unwrap();
    nobody.tell(CounterMsg::Add(1));
    let err = nobody
        .ask(CounterMsg::Get, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no reply"), "{err}");
    remote.tell(CounterMsg::Add(7));
    assert_eq!(
        remote
            .ask(CounterMsg::Get, Duration::from_secs(10))
            .await
            .unwrap(),
        7,
        "the association survived the drops"
    );
    assert!(a.remote_ref::<CounterMsg>("flotilla://app/user/x").is_err());
    assert!(
        ActorSystem::new("local")
            .unwrap()
            .remote_ref::<CounterMsg>(&format!("{}/user/counter", b.address()))
            .is_err()
    );
    a.terminate().await;
    b.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_a_remote_actor_delivers_terminated_when_it_stops() {
    let (a, b, remote) = pair().await;
    let mut rx = watch_from(&a, &remote).await;
    // Let the watch arrive before the stop (system messages are ordered, user messages apart).
    tokio::time::sleep(Duration::from_millis(200)).await;
    remote.tell(CounterMsg::Stop);
    assert_eq!(rx.next().await, format!("terminated {}", remote.path()));
    remote.stopped().await;
    assert!(remote.is_stopped());
    // A new actor at the same path: a reference made now is to it (a new id, not stopped), and
    // the old one stays stopped.
    // (The name is free once b has fully removed the old actor, which a may learn of first.)
    let mut tries = 0;
    let counter = loop {
        match b.spawn("counter", Props::<Counter>::default()) {
            Ok(c) => break c,
            Err(e) => {
                tries += 1;
                assert!(tries < 100, "the name never became free: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    b.expose(&counter);
    let again = a
        .remote_ref::<CounterMsg>(&format!("{}/user/counter", b.address()))
        .unwrap();
    assert!(!again.is_stopped() && remote.is_stopped());
    assert_ne!(again.id(), remote.id());
    again.tell(CounterMsg::Add(7));
    let total = again.ask(CounterMsg::Get, Duration::from_secs(5)).await;
    assert_eq!(total, Ok(7));
    a.terminate().await;
    b.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_terminates_the_watched_actors_there_and_events_tell_the_story() {
    let (a, b, remote) = pair().await;
    let mut events = a.event_stream().subscribe_channel::<AssociationEvent>();
    let mut rx = watch_from(&a, &remote).await;
    let active = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (active.from, active.to),
        (StateName::Idle, StateName::Active)
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // heartbeats flow
    b.terminate().await;
    drop(b); // the node's remoting stops with the system's last handle
    assert_eq!(rx.next().await, format!("terminated {}", remote.path()));
    let mut seen = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
        seen.push(e.to);
    }
    assert!(seen.contains(&StateName::Gated), "{seen:?}");
    a.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_is_declared_dead_and_its_actors_terminated() {
    let FaultyPair {
        a,
        b,
        a_faults,
        counter,
        remote,
        ..
    } = faulty_pair(&config());
    let mut rx = watch_from(&a, &remote).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // heartbeats flow
    // The node stays up, but nothing gets through any more.
    a_faults.blackhole(b.address(), flotilla_remote::Direction::Both);
    assert_eq!(rx.next().await, format!("terminated {}", remote.path()));
    assert!(!counter.is_stopped(), "the actor itself lives on at b");
    let assoc = a.associations().await;
    assert_eq!(assoc[0].state, StateName::Quarantined);
    a.terminate().await;
    b.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_shuts_down_tells_remote_watchers_before_it_goes() {
    // A failure detector too slow to matter here: only the Terminated notice can be in time.
    let mut slow = config();
    slow.remote
        .watch_failure_detector
        .acceptable_heartbeat_pause = Duration::from_secs(60);
    let FaultyPair {
        a,
        b,
        b_faults,
        remote,
        ..
    } = faulty_pair(&slow);
    let mut rx = watch_from(&a, &remote).await;
    tokio::time::sleep(Duration::from_millis(200)).await; // the watch arrives
    // b's frames to a take a while: b must wait for the notice to be acknowledged.
    b_faults.delay(a.address(), Duration::from_millis(300));
    let started = std::time::Instant::now();
    b.terminate().await;
    drop(b);
    assert_eq!(rx.next().await, format!("terminated {}", remote.path()));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "by the notice, not the detector: {:?}",
        started.elapsed()
    );
    a.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_answer_to_a_previous_incarnation_never_answers_the_next_ones_ask() {
    let (a, b, remote) = pair().await;
    let port = a.address().port().unwrap();
    // a asks, gives up, and goes away; b still holds the question.
    let first = remote
        .ask(CounterMsg::Hold, Duration::from_millis(300))
        .await;
    assert!(first.is_err(), "not answered yet");
    a.terminate().await;
    drop(a);
    // A new incarnation at the same address asks the same way.
    let mut again = None;
    for _ in 0..50 {
        match ActorSystem::builder("app")
            .config(config())
            .remote("127.0.0.1", port)
            .build()
        {
            Ok(s) => {
                again = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let a2 = again.expect("the port is free again");
    let remote2 = a2
        .remote_ref::<CounterMsg>(&format!("{}/user/counter", b.address()))
        .unwrap();
    let asking = tokio::spawn({
        let remote2 = remote2.clone();
        async move { remote2.ask(CounterMsg::Hold, Duration::from_secs(10)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await; // both questions are held
    // The old question's answer goes to the address, where the new incarnation runs now.
    remote2.tell(CounterMsg::Answer(7));
    tokio::time::sleep(Duration::from_millis(300)).await;
    remote2.tell(CounterMsg::Answer(9));
    assert_eq!(
        asking.await.unwrap().unwrap(),
        9,
        "the new incarnation got its own answer, not the one meant for the previous"
    );
    a2.terminate().await;
    b.terminate().await;
}

/// What a `CounterMsg` looks like on the wire, a reply handle being its ask id (only `Hold` is
/// read; the others keep the variant indices).
#[derive(Debug, Deserialize)]
#[allow(dead_code)] // reason: the variants before Hold only position it
enum CounterWire {
    Add(u64),
    Get(u64),
    Ignore(u64),
    Hold(u64),
}

/// An ask's answer counts only from the node that was asked: a third node of the same cluster
/// that learns the ask id and answers first is dropped, and the real answer still arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_from_a_node_that_was_not_asked_is_dropped() {
    use flotilla_remote::{Inbound, RemoteNode};
    let a = node("app");
    let raw = || {
        RemoteNode::start(
            &flotilla_core::Address::remote("app", "127.0.0.1", 0).unwrap(),
            flotilla_remote::testing::fast_settings(),
        )
        .unwrap()
    };
    let ((asked, mut asked_in), (other, _other_in)) = (raw(), raw());
    let remote = a
        .remote_ref::<CounterMsg>(&format!("{}/user/counter", asked.local().address))
        .unwrap();
    let asking = tokio::spawn({
        let remote = remote.clone();
        async move { remote.ask(CounterMsg::Hold, Duration::from_secs(10)).await }
    });
    // The asked node reads the ask id from the question.
    let id = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(Inbound::User { messages, .. }) = asked_in.recv_one().await
                && let Some(env) = messages.first()
                && let Ok(CounterWire::Hold(id)) = postcard::from_bytes(env.payload)
            {
                return id;
            }
        }
    })
    .await
    .unwrap();
    let answer = |n: u64| flotilla_wire::UserEnvelope {
        recipient: format!("/temp/ask/{id}"),
        sender: None,
        manifest: "flotilla.AskReply".into(),
        payload: postcard::to_stdvec(&n).unwrap(),
    };
    // Another node answers first; then the asked one.
    other.send_user(a.address(), answer(666)).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!asking.is_finished(), "the spoofed answer was not taken");
    asked.send_user(a.address(), answer(42)).unwrap();
    assert_eq!(asking.await.unwrap().unwrap(), 42);
    a.terminate().await;
}
