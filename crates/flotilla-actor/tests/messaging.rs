//! tell / send / ask, mailboxes, dead letters and the event stream.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

mod common;

use std::time::Duration;

use common::ms;
use flotilla_actor::{
    Actor, ActorError, ActorRef, ActorSystem, AskError, Context, DeadLetter, DeadLetterReason,
    MailboxConfig, Overflow, Props, ReplyTo,
};
use tokio::sync::{Semaphore, mpsc};

enum Msg {
    Item(u64),
    /// Waits for a permit before going on: lets a test hold the actor busy.
    Block(std::sync::Arc<Semaphore>),
    Slow(ReplyTo<()>, Duration),
    Ignore(ReplyTo<()>),
    Collected(ReplyTo<Vec<u64>>),
}

#[derive(Default)]
struct Collector {
    items: Vec<u64>,
}

impl Actor for Collector {
    type Msg = Msg;

    async fn handle(&mut self, msg: Msg, _ctx: &mut Context<Msg>) -> Result<(), ActorError> {
        match msg {
            Msg::Item(n) => self.items.push(n),
            Msg::Block(gate) => drop(gate.acquire().await?),
            Msg::Slow(reply, d) => {
                tokio::time::sleep(d).await;
                reply.send(());
            }
            Msg::Ignore(reply) => drop(reply),
            Msg::Collected(reply) => {
                reply.send(std::mem::take(&mut self.items));
            }
        }
        Ok(())
    }
}

async fn collected(a: &ActorRef<Msg>) -> Vec<u64> {
    a.ask(Msg::Collected, Duration::from_secs(5)).await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn messages_from_one_sender_arrive_in_order() {
    let system = ActorSystem::new("msg").unwrap();
    let c = system.spawn("c", Props::<Collector>::default()).unwrap();
    let senders: Vec<_> = (0..4u64)
        .map(|s| {
            let c = c.clone();
            tokio::spawn(async move {
                for i in 0..1000 {
                    c.tell(Msg::Item(s * 1_000_000 + i));
                    if i % 100 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for s in senders {
        s.await.unwrap();
    }
    let got = collected(&c).await;
    assert_eq!(got.len(), 4000);
    for s in 0..4u64 {
        let from_s: Vec<u64> = got.iter().copied().filter(|v| v / 1_000_000 == s).collect();
        let expected: Vec<u64> = (0..1000).map(|i| s * 1_000_000 + i).collect();
        assert_eq!(from_s, expected, "FIFO per sender");
    }
    system.terminate().await;
}

#[tokio::test(start_paused = true)]
async fn ask_reports_timeout_no_reply_and_dead_target() {
    let system = ActorSystem::new("ask").unwrap();
    let c = system.spawn("c", Props::<Collector>::default()).unwrap();
    c.ask(|r| Msg::Slow(r, ms(10)), Duration::from_secs(1))
        .await
        .unwrap();
    let err = c.ask(|r| Msg::Slow(r, ms(500)), ms(100)).await.unwrap_err();
    assert_eq!(
        err,
        AskError::Timeout {
            target: c.path().clone(),
            timeout: ms(100)
        }
    );
    let err = c
        .ask(Msg::Ignore, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AskError::NoReply {
            target: c.path().clone()
        }
    );
    c.stop();
    c.stopped().await;
    let err = c
        .ask(Msg::Ignore, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        AskError::TargetDead {
            target: c.path().clone()
        }
    );
    system.terminate().await;
}

#[tokio::test(start_paused = true)]
async fn a_question_queued_when_the_target_stops_fails_fast_as_target_dead() {
    let system = ActorSystem::new("ask").unwrap();
    let c = system.spawn("c", Props::<Collector>::default()).unwrap();
    let gate = std::sync::Arc::new(Semaphore::new(0));
    c.tell(Msg::Block(gate.clone()));
    let asking = {
        let c = c.clone();
        tokio::spawn(async move { c.ask(Msg::Ignore, Duration::from_secs(60)).await })
    };
    tokio::time::sleep(ms(10)).await;
    c.stop(); // takes effect after the blocked message; the question is still queued
    gate.add_permits(1);
    let started = tokio::time::Instant::now();
    let err = asking.await.unwrap().unwrap_err();
    assert_eq!(
        err,
        AskError::TargetDead {
            target: c.path().clone()
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "did not wait for the ask timeout"
    );
    system.terminate().await;
}

fn bounded(capacity: usize, overflow: Overflow) -> Props<Collector> {
    Props::<Collector>::default().with_mailbox(MailboxConfig::Bounded { capacity, overflow })
}

#[tokio::test(start_paused = true)]
async fn bounded_drop_newest_sends_overflow_to_dead_letters() {
    let system = ActorSystem::new("mb").unwrap();
    let mut dead = system.event_stream().subscribe_channel::<DeadLetter>();
    let c = system.spawn("c", bounded(2, Overflow::DropNewest)).unwrap();
    let gate = std::sync::Arc::new(Semaphore::new(0));
    c.tell(Msg::Block(gate.clone()));
    tokio::time::sleep(ms(1)).await; // the blocker is taken out of the mailbox
    for i in 0..5 {
        c.tell(Msg::Item(i));
    }
    assert!(
        !c.send(Msg::Item(99)).await,
        "send does not wait under DropNewest"
    );
    gate.add_permits(1);
    tokio::time::sleep(ms(1)).await; // let the actor empty its mailbox
    assert_eq!(collected(&c).await, vec![0, 1]);
    assert_eq!(system.dead_letter_count(), 4);
    for _ in 0..4 {
        let d = dead.recv().await.unwrap();
        assert_eq!(d.reason, DeadLetterReason::MailboxFull);
        assert_eq!(d.recipient, *c.path());
        assert!(d.message_type.ends_with("Msg"), "{}", d.message_type);
    }
    system.terminate().await;
}

#[tokio::test(start_paused = true)]
async fn bounded_wait_applies_backpressure_to_send_and_never_loses_a_message() {
    let system = ActorSystem::new("mb").unwrap();
    let c = system.spawn("c", bounded(2, Overflow::Wait)).unwrap();
    let gate = std::sync::Arc::new(Semaphore::new(0));
    c.tell(Msg::Block(gate.clone()));
    tokio::time::sleep(ms(1)).await;
    let producer = {
        let c = c.clone();
        tokio::spawn(async move {
            for i in 0..10 {
                assert!(c.send(Msg::Item(i)).await);
            }
        })
    };
    tokio::time::sleep(ms(50)).await;
    assert!(!producer.is_finished(), "the producer waits for space");
    // tell never waits: on a full Wait mailbox it dead-letters instead.
    c.tell(Msg::Item(1000));
    assert_eq!(system.dead_letter_count(), 1);
    gate.add_permits(1);
    producer.await.unwrap();
    assert_eq!(collected(&c).await, (0..10).collect::<Vec<_>>());
    system.terminate().await;
}

#[tokio::test(start_paused = true)]
async fn every_message_to_a_stopped_actor_is_a_counted_dead_letter() {
    let system = ActorSystem::new("dl").unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    struct DeadLetterWatcher(mpsc::UnboundedSender<DeadLetter>);
    impl Actor for DeadLetterWatcher {
        type Msg = DeadLetter;
        async fn handle(
            &mut self,
            d: DeadLetter,
            _ctx: &mut Context<DeadLetter>,
        ) -> Result<(), ActorError> {
            let _ = self.0.send(d);
            Ok(())
        }
    }
    let watcher = system
        .spawn(
            "dl-watcher",
            Props::new(move || DeadLetterWatcher(tx.clone())),
        )
        .unwrap();
    system.event_stream().subscribe(&watcher);
    let c = system.spawn("c", Props::<Collector>::default()).unwrap();
    let gate = std::sync::Arc::new(Semaphore::new(0));
    c.tell(Msg::Block(gate.clone()));
    tokio::time::sleep(ms(1)).await; // the actor is now inside the blocking handler
    for i in 0..3 {
        c.tell(Msg::Item(i)); // queued behind the blocker
    }
    c.stop();
    gate.add_permits(1);
    c.stopped().await;
    for i in 0..2 {
        c.tell(Msg::Item(10 + i)); // sent after the stop
    }
    for _ in 0..5 {
        let d = rx.recv().await.unwrap();
        assert_eq!(d.reason, DeadLetterReason::RecipientStopped);
    }
    assert_eq!(
        system.dead_letter_count(),
        5,
        "3 drained from the mailbox + 2 sent late"
    );
    system.terminate().await;
}

#[derive(Debug, Clone, PartialEq)]
struct MemberUp(u32);

#[tokio::test(start_paused = true)]
async fn event_stream_delivers_by_type_and_forgets_stopped_subscribers() {
    let system = ActorSystem::new("es").unwrap();
    let mut ups = system.event_stream().subscribe_channel::<MemberUp>();
    let mut strings = system.event_stream().subscribe_channel::<String>();
    assert_eq!(system.event_stream().publish(MemberUp(1)), 1);
    assert_eq!(system.event_stream().publish("hello".to_owned()), 1);
    assert_eq!(ups.recv().await, Some(MemberUp(1)));
    assert_eq!(strings.recv().await.as_deref(), Some("hello"));
    assert!(ups.try_recv().is_err(), "only its own type");

    let c = system.spawn("c", Props::<Collector>::default()).unwrap();
    system
        .event_stream()
        .subscribe_with(&c, |MemberUp(n)| Msg::Item(u64::from(n)));
    system.event_stream().publish(MemberUp(7));
    assert_eq!(collected(&c).await, vec![7]);
    system.event_stream().unsubscribe::<MemberUp, _>(&c);
    system.event_stream().publish(MemberUp(8));
    assert_eq!(collected(&c).await, Vec::<u64>::new());

    system
        .event_stream()
        .subscribe_with(&c, |MemberUp(n)| Msg::Item(u64::from(n)));
    c.stop();
    c.stopped().await;
    drop(strings);
    assert_eq!(
        system.event_stream().publish(MemberUp(9)),
        1,
        "only the channel remains"
    );
    assert_eq!(system.event_stream().subscriber_count::<MemberUp>(), 1);
    assert_eq!(system.event_stream().publish("gone".to_owned()), 0);
    assert_eq!(
        system.dead_letter_count(),
        0,
        "a stopped subscriber is not a dead letter"
    );
    system.terminate().await;
}

struct Busy(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Actor for Busy {
    type Msg = u64;
    async fn handle(&mut self, _: u64, _ctx: &mut Context<u64>) -> Result<(), ActorError> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// One thread, one actor with a huge backlog: its neighbour still answers promptly, because the
/// run loop spends tokio's cooperative budget and yields.
#[tokio::test(flavor = "current_thread")]
async fn a_flooded_actor_does_not_starve_its_neighbours() {
    const BACKLOG: u64 = 2_000_000;
    let system = ActorSystem::new("fair").unwrap();
    let handled = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let h = handled.clone();
    let busy = system
        .spawn("busy", Props::new(move || Busy(h.clone())))
        .unwrap();
    let quick = system
        .spawn("quick", Props::<Collector>::default())
        .unwrap();
    for i in 0..BACKLOG {
        busy.tell(i);
    }
    let answer = quick
        .ask(Msg::Collected, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(answer.is_empty());
    let when = handled.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        when < BACKLOG,
        "the neighbour answered only after the whole backlog ({when})"
    );
    // Termination's stop overtakes the backlog: what was not handled is a counted dead letter.
    system.terminate().await;
    let handled = handled.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        handled + system.dead_letter_count(),
        BACKLOG,
        "every message handled or counted"
    );
}

#[tokio::test(start_paused = true)]
async fn ask_times_out_while_waiting_for_space_in_a_full_mailbox() {
    let system = ActorSystem::new("ask").unwrap();
    let c = system.spawn("c", bounded(1, Overflow::Wait)).unwrap();
    let gate = std::sync::Arc::new(Semaphore::new(0));
    c.tell(Msg::Block(gate.clone()));
    tokio::time::sleep(ms(1)).await;
    c.tell(Msg::Item(1)); // fills the mailbox
    let started = tokio::time::Instant::now();
    let err = c.ask(Msg::Collected, ms(200)).await.unwrap_err();
    assert_eq!(
        err,
        AskError::Timeout {
            target: c.path().clone(),
            timeout: ms(200)
        }
    );
    assert_eq!(
        started.elapsed(),
        ms(200),
        "the timeout covers waiting for mailbox space"
    );
    gate.add_permits(1);
    system.terminate().await;
}

#[tokio::test(start_paused = true)]
async fn a_full_dead_letter_subscriber_does_not_feed_on_itself() {
    let system = ActorSystem::new("dl").unwrap();
    struct Slow(std::sync::Arc<Semaphore>);
    impl Actor for Slow {
        type Msg = DeadLetter;
        async fn handle(
            &mut self,
            _d: DeadLetter,
            _ctx: &mut Context<DeadLetter>,
        ) -> Result<(), ActorError> {
            drop(self.0.acquire().await?);
            Ok(())
        }
    }
    let gate = std::sync::Arc::new(Semaphore::new(0));
    let g = gate.clone();
    let slow = system
        .spawn(
            "slow",
            Props::new(move || Slow(g.clone())).with_mailbox(MailboxConfig::Bounded {
                capacity: 1,
                overflow: Overflow::DropNewest,
            }),
        )
        .unwrap();
    system.event_stream().subscribe(&slow);
    let c = system.spawn("c", Props::<Collector>::default()).unwrap();
    c.stop();
    c.stopped().await;
    for i in 0..100 {
        c.tell(Msg::Item(i));
    }
    assert_eq!(
        system.dead_letter_count(),
        100,
        "one per message, none for dropped events"
    );
    gate.add_permits(1_000);
    system.terminate().await;
}

/// The public face of [`Collector`] through an adapter: plain numbers and a question.
enum Public {
    Add(u64),
    Total(ReplyTo<Vec<u64>>),
}

#[tokio::test(start_paused = true)]
async fn an_adapted_reference_is_the_same_actor_with_another_message_type() {
    let system = ActorSystem::new("adapt").unwrap();
    let c = system.spawn("c", Props::<Collector>::default()).unwrap();
    let public: ActorRef<Public> = c.adapt(|m| match m {
        Public::Add(n) => Msg::Item(n * 10),
        Public::Total(reply) => Msg::Collected(reply),
    });
    assert_eq!(public.path(), c.path());
    assert_eq!(public.id(), c.id());
    public.tell(Public::Add(1));
    c.tell(Msg::Item(2));
    assert!(public.send(Public::Add(3)).await);
    let total = public.ask(Public::Total, Duration::from_secs(1)).await;
    assert_eq!(total.unwrap(), vec![10, 2, 30]);
    // Adapting an adapted reference works too.
    let doubled: ActorRef<u64> = public.adapt(|n| Public::Add(n * 2));
    doubled.tell(4);
    assert_eq!(collected(&c).await, vec![80]);
    // Stopping it stops the actor; questions then fail as to a dead actor.
    doubled.stop();
    public.stopped().await;
    assert!(c.is_stopped() && public.is_stopped());
    let late = public.ask(Public::Total, Duration::from_secs(1)).await;
    assert!(matches!(late, Err(AskError::TargetDead { .. })), "{late:?}");
    system.terminate().await;
}

/// Items 1000 and up are control messages here.
fn is_control(m: &Msg) -> bool {
    matches!(m, Msg::Item(n) if *n >= 1000)
}

#[tokio::test(start_paused = true)]
async fn control_messages_go_before_the_ordinary_traffic_queued_ahead_of_them() {
    let system = ActorSystem::new("ctl").unwrap();
    // A bounded mailbox full of ordinary traffic: control messages still get in, and first.
    let c = system
        .spawn(
            "c",
            bounded(100, Overflow::DropNewest).with_control_messages(is_control),
        )
        .unwrap();
    let full = c.clone();
    let gate = std::sync::Arc::new(Semaphore::new(0));
    c.tell(Msg::Block(gate.clone()));
    tokio::time::sleep(ms(1)).await;
    for i in 0..100 {
        c.tell(Msg::Item(i));
    }
    full.tell(Msg::Item(100));
    assert_eq!(system.dead_letter_count(), 1, "the ordinary lane is full");
    c.tell(Msg::Item(1000));
    c.tell(Msg::Item(1001));
    assert_eq!(system.dead_letter_count(), 1, "the control lane is another");
    gate.add_permits(1);
    tokio::time::sleep(ms(1)).await; // room again for the question
    let got = collected(&c).await;
    let mut want = vec![1000, 1001];
    want.extend(0..100);
    assert_eq!(
        got, want,
        "control messages first, in their order; then the rest in theirs"
    );
    system.terminate().await;
}
