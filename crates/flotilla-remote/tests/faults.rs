//! Fault injection on the real transport between two nodes over 127.0.0.1: blackholes both ways
//! and one way, delay, disconnect and abort, and what the association makes of each.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

mod common;

use std::time::{Duration, Instant};

use common::{fast_settings, next};
use flotilla_core::{Address, UniqueAddress};
use flotilla_proto::association::StateName;
use flotilla_remote::{Direction, FaultInjector, Inbound, RemoteNode, StartOptions};
use flotilla_wire::UserEnvelope;

struct Node {
    node: RemoteNode,
    inbound: flotilla_remote::InboundReceiver,
    faults: FaultInjector,
}

impl Node {
    fn start() -> Self {
        Self::start_with(fast_settings())
    }

    fn start_with(settings: flotilla_core::RemoteSettings) -> Self {
        let faults = FaultInjector::new();
        let (node, inbound) = RemoteNode::start_with(
            &Address::remote("sim", "127.0.0.1", 0).unwrap(),
            settings,
            StartOptions {
                uid: None,
                faults: Some(faults.clone()),
            },
        )
        .unwrap();
        Self {
            node,
            inbound,
            faults,
        }
    }

    fn addr(&self) -> Address {
        self.node.local().address.clone()
    }

    fn send(&self, to: &Self, n: u32) {
        self.node
            .send_user(
                &to.addr(),
                UserEnvelope {
                    recipient: "/user/x".into(),
                    sender: None,
                    manifest: "test.N".into(),
                    payload: n.to_be_bytes().to_vec(),
                },
            )
            .unwrap();
    }

    /// The next user message's number and sender.
    async fn received(&mut self) -> (UniqueAddress, u32) {
        next(&mut self.inbound, |x| match x {
            Inbound::User { from, messages } => Some((
                from,
                u32::from_be_bytes(common::only(&messages).payload.try_into().unwrap()),
            )),
            _ => None,
        })
        .await
    }

    /// Nothing from a user arrives within `wait`.
    async fn nothing_for(&mut self, wait: Duration) {
        let got = tokio::time::timeout(wait, async {
            loop {
                if let Some(Inbound::User { messages, .. }) = self.inbound.recv_one().await {
                    return common::only(&messages);
                }
            }
        })
        .await;
        assert!(got.is_err(), "a message got through: {got:?}");
    }

    /// Waits until the association enters `state`; returns the cause.
    async fn entered(&mut self, state: StateName) -> String {
        next(&mut self.inbound, |x| match x {
            Inbound::Association { to, cause, .. } if to == state => Some(cause),
            _ => None,
        })
        .await
    }

    async fn state(&self, of: &Self) -> StateName {
        self.node
            .associations()
            .await
            .unwrap()
            .into_iter()
            .find(|a| a.remote == of.addr())
            .map(|a| a.state)
            .unwrap()
    }
}

/// Two nodes whose association is Active both ways.
async fn pair() -> (Node, Node) {
    pair_with(fast_settings()).await
}

async fn pair_with(settings: flotilla_core::RemoteSettings) -> (Node, Node) {
    let (mut a, mut b) = (
        Node::start_with(settings.clone()),
        Node::start_with(settings),
    );
    a.send(&b, 0);
    assert_eq!(b.received().await, (a.node.local().clone(), 0));
    b.send(&a, 0);
    assert_eq!(a.received().await, (b.node.local().clone(), 0));
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_way_blackhole_is_found_by_the_failure_detector_and_healing_does_not_undo_quarantine()
{
    let (mut a, b) = pair().await;
    a.node.watch_node(&b.addr()).unwrap();
    // Heartbeats flow first: the detector has a history before the blackhole.
    tokio::time::sleep(Duration::from_millis(500)).await;
    a.faults.blackhole(&b.addr(), Direction::Both);
    let started = Instant::now();
    let (remote, uid) = next(&mut a.inbound, |x| match x {
        Inbound::AddressTerminated { remote, uid } => Some((remote, uid)),
        _ => None,
    })
    .await;
    assert_eq!((remote, uid), (b.addr(), Some(b.node.local().uid)));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "declared dead after {:?}",
        started.elapsed()
    );
    assert_eq!(a.state(&b).await, StateName::Quarantined);
    assert!(a.faults.dropped() > 0, "the blackhole dropped heartbeats");
    // The connections were never closed, but the incarnation stays quarantined.
    a.faults.pass_through(&b.addr());
    a.send(&b, 1);
    a.nothing_for(Duration::from_millis(300)).await;
    assert_eq!(a.state(&b).await, StateName::Quarantined);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_way_blackhole_drops_only_that_direction_and_heals_on_the_same_link() {
    let (mut a, mut b) = pair().await;
    a.faults.blackhole(&b.addr(), Direction::Send);
    a.send(&b, 1);
    b.send(&a, 2);
    assert_eq!(a.received().await.1, 2, "b to a still flows");
    b.nothing_for(Duration::from_millis(300)).await;
    a.faults.pass_through(&b.addr());
    a.send(&b, 3);
    assert_eq!(b.received().await.1, 3, "a to b flows again");
    assert_eq!(a.state(&b).await, StateName::Active);

    // Receive-only: a drops what b sends, and b still hears a.
    a.faults.blackhole(&b.addr(), Direction::Receive);
    b.send(&a, 4);
    a.send(&b, 5);
    assert_eq!(b.received().await.1, 5);
    a.nothing_for(Duration::from_millis(300)).await;
    a.faults.pass_through(&b.addr());
    b.send(&a, 6);
    assert_eq!(a.received().await.1, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_holds_every_frame_back_and_keeps_order() {
    let (a, mut b) = pair().await;
    let delay = Duration::from_millis(250);
    a.faults.delay(&b.addr(), delay);
    let sent = Instant::now();
    for n in 1..=100 {
        a.send(&b, n);
    }
    for n in 1..=100 {
        assert_eq!(b.received().await.1, n, "order");
        if n == 1 {
            assert!(
                sent.elapsed() >= delay,
                "arrived after {:?}",
                sent.elapsed()
            );
        }
    }
    assert!(
        sent.elapsed() < delay * 4,
        "100 messages are delayed together, not one after another: {:?}",
        sent.elapsed()
    );
    a.faults.delay(&b.addr(), Duration::ZERO);
    let sent = Instant::now();
    a.send(&b, 101);
    assert_eq!(b.received().await.1, 101);
    assert!(sent.elapsed() < delay, "no delay once removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_and_abort_gate_both_sides_with_their_causes_and_traffic_resumes() {
    let (mut a, mut b) = pair().await;
    assert_eq!(a.faults.disconnect(&b.addr()), 1, "one link");
    let cause = a.entered(StateName::Gated).await;
    assert!(cause.contains("disconnected by fault injection"), "{cause}");
    let cause = b.entered(StateName::Gated).await;
    assert!(cause.contains("closed"), "{cause}");
    // The gate (300 ms) passes; the next message opens a new link.
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.send(&b, 1);
    assert_eq!(b.received().await.1, 1);

    assert_eq!(b.faults.abort(&a.addr()), 1);
    let cause = b.entered(StateName::Gated).await;
    assert!(cause.contains("aborted by fault injection"), "{cause}");
    let cause = a.entered(StateName::Gated).await;
    assert!(
        cause.to_lowercase().contains("reset"),
        "a reset, not a close: {cause}"
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.send(&a, 2);
    assert_eq!(a.received().await.1, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_into_a_blackhole_times_out_and_gates() {
    let (mut a, mut b) = (Node::start(), Node::start());
    a.faults.blackhole(&b.addr(), Direction::Both);
    let started = Instant::now();
    a.send(&b, 1);
    let cause = a.entered(StateName::Gated).await;
    assert!(cause.contains("no handshake within"), "{cause}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "after handshake-timeout"
    );
    a.faults.pass_through(&b.addr());
    tokio::time::sleep(Duration::from_millis(400)).await;
    a.send(&b, 2);
    assert_eq!(b.received().await.1, 2);
}

fn system(n: u8) -> flotilla_remote::SystemPayload {
    flotilla_remote::SystemPayload {
        manifest: "test.Sys".into(),
        payload: vec![n],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_asymmetric_partition_quarantines_once_system_messages_give_up_and_the_other_side_learns_it()
 {
    let settings = flotilla_core::RemoteSettings {
        give_up_system_message_after: Duration::from_secs(1),
        ..fast_settings()
    };
    let (mut a, mut b) = pair_with(settings).await;
    // a's frames to b vanish; b's frames to a (acknowledgements included) still arrive.
    a.faults.blackhole(&b.addr(), Direction::Send);
    a.node.send_system(&b.addr(), system(1)).unwrap();
    let cause = a.entered(StateName::Quarantined).await;
    assert!(cause.contains("system message delivery failed"), "{cause}");
    // Healed, the quarantined side is told when it next connects (a closed the link when it
    // quarantined, so b first waits out its gate), and does not quarantine back.
    a.faults.pass_through(&b.addr());
    let told = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            b.send(&a, 1);
            tokio::time::sleep(Duration::from_millis(200)).await;
            while let Ok(item) = b.inbound.try_recv() {
                if let Inbound::ThisSystemQuarantined { by, reason } = item {
                    return (by, reason);
                }
            }
        }
    })
    .await;
    let (by, _) = told.expect("b was told it is quarantined");
    assert_eq!(by, *a.node.local());
    assert_ne!(b.state(&a).await, StateName::Quarantined);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_message_buffer_overflow_behind_a_blackhole_quarantines() {
    let settings = flotilla_core::RemoteSettings {
        system_message_buffer_size: 10,
        ..fast_settings()
    };
    let (mut a, b) = pair_with(settings).await;
    a.faults.blackhole(&b.addr(), Direction::Both);
    for n in 0..11 {
        a.node.send_system(&b.addr(), system(n)).unwrap();
    }
    let cause = a.entered(StateName::Quarantined).await;
    assert!(cause.contains("system message delivery failed"), "{cause}");
    assert_eq!(a.state(&b).await, StateName::Quarantined);
}
