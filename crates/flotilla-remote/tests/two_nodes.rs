//! Two nodes in one process, each with its own remoting threads, over 127.0.0.1.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

mod common;

use std::time::Duration;

use common::{fast_settings, next};
use flotilla_core::Address;
use flotilla_proto::association::StateName;
use flotilla_remote::{Inbound, RemoteNode, SendError, SystemPayload};
use flotilla_wire::UserEnvelope;

fn start(system: &str) -> (RemoteNode, flotilla_remote::InboundReceiver) {
    let address = Address::remote(system, "127.0.0.1", 0).unwrap();
    RemoteNode::start(&address, fast_settings()).unwrap()
}

fn user(recipient: &str, payload: &[u8]) -> UserEnvelope {
    UserEnvelope {
        recipient: recipient.into(),
        sender: None,
        manifest: "test.Bytes".into(),
        payload: payload.to_vec(),
    }
}

/// Waits until an association of this node enters `state`; returns the cause.
async fn entered(rx: &mut flotilla_remote::InboundReceiver, state: StateName) -> String {
    next(rx, |x| match x {
        Inbound::Association { to, cause, .. } if to == state => Some(cause),
        _ => None,
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_messages_arrive_in_order_and_system_messages_exactly_once() {
    let (a, _a_in) = start("sim");
    let (b, mut b_in) = start("sim");
    let to_b = b.local().address.clone();
    for i in 0..500u32 {
        a.send_user(&to_b, user("/user/counter", &i.to_be_bytes()))
            .unwrap();
    }
    for i in 0..500u32 {
        let (from, env) = next(&mut b_in, |x| match x {
            Inbound::User { from, messages } => Some((from, common::only(&messages))),
            _ => None,
        })
        .await;
        assert_eq!(from, *a.local());
        assert_eq!(env.payload, i.to_be_bytes(), "per-recipient FIFO");
    }
    for i in 0..20u8 {
        a.send_system(
            &to_b,
            SystemPayload {
                manifest: "test.Sys".into(),
                payload: vec![i],
            },
        )
        .unwrap();
    }
    for i in 0..20u8 {
        let p = next(&mut b_in, |x| match x {
            Inbound::System { payload, .. } => Some(payload),
            _ => None,
        })
        .await;
        assert_eq!(p.payload, [i]);
    }
    let assoc = a.associations().await.unwrap();
    assert_eq!(assoc.len(), 1);
    assert_eq!(assoc[0].state, StateName::Active);
    assert_eq!(assoc[0].uid, Some(b.local().uid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_message_is_refused_at_the_sender() {
    let (a, _) = start("sim");
    let to = Address::remote("sim", "127.0.0.1", 9).unwrap();
    let err = a
        .send_user(&to, user("/user/x", &vec![0; 300 * 1024]))
        .unwrap_err();
    assert!(
        matches!(err, SendError::TooLarge { max: 262_144, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("remote.maximum-frame-size"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_goes_away_gates_its_association_and_a_watch_declares_it_dead() {
    let (a, mut a_in) = start("sim");
    let (b, _b_in) = start("sim");
    let to_b = b.local().address.clone();
    let b_uid = b.local().uid;
    a.watch_node(&to_b).unwrap();
    a.send_user(&to_b, user("/user/x", b"hi")).unwrap();
    entered(&mut a_in, StateName::Active).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // heartbeats flow
    drop(b);
    let cause = entered(&mut a_in, StateName::Gated).await;
    assert!(cause.contains("connection lost"), "{cause}");
    let (remote, uid) = next(&mut a_in, |x| match x {
        Inbound::AddressTerminated { remote, uid } => Some((remote, uid)),
        _ => None,
    })
    .await;
    assert_eq!((remote, uid), (to_b, Some(b_uid)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quarantined_node_is_told_and_a_wrong_system_cannot_associate() {
    let (a, mut a_in) = start("sim");
    let (b, mut b_in) = start("sim");
    a.send_user(&b.local().address, user("/user/x", b"hi"))
        .unwrap();
    next(&mut b_in, |x| {
        matches!(x, Inbound::User { .. }).then_some(())
    })
    .await;
    a.quarantine(b.local(), "test").unwrap();
    let (by, reason) = next(&mut b_in, |x| match x {
        Inbound::ThisSystemQuarantined { by, reason } => Some((by, reason)),
        _ => None,
    })
    .await;
    assert_eq!(by, *a.local());
    assert!(reason.contains("test"), "{reason}");
    entered(&mut a_in, StateName::Quarantined).await;

    // Another actor system at a's port: the handshake is refused, the association gates.
    let (c, mut c_in) = start("other");
    let wrong = Address::remote("other", "127.0.0.1", a.local().address.port().unwrap()).unwrap();
    c.send_user(&wrong, user("/user/x", b"nope")).unwrap();
    let cause = entered(&mut c_in, StateName::Gated).await;
    assert!(cause.contains("wrong actor system"), "{cause}");
}

/// Messages sent while the association opens are buffered by the machine, later ones go
/// straight to the connection: none overtakes another, in either direction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_holds_while_the_association_opens_and_the_fast_path_takes_over() {
    // Queues large enough that nothing is dropped: the sender floods without pause, so many
    // messages are still on their way through the machine when the fast path opens.
    const N: u32 = 100_000;
    let settings = flotilla_core::RemoteSettings {
        outbound_message_queue_size: N as usize,
        ..fast_settings()
    };
    let address = Address::remote("sim", "127.0.0.1", 0).unwrap();
    let (a, mut a_in) = RemoteNode::start(&address, settings.clone()).unwrap();
    let (b, mut b_in) = RemoteNode::start(&address, settings).unwrap();
    let to_b = b.local().address.clone();
    let to_a = a.local().address.clone();
    let sender = std::thread::spawn(move || {
        for i in 0..N {
            a.send_user(&to_b, user("/user/counter", &i.to_be_bytes()))
                .unwrap();
        }
        a
    });
    let mut expected = 0u32;
    while expected < N {
        let env = next(&mut b_in, |x| match x {
            Inbound::User { messages, .. } => Some(common::only(&messages)),
            _ => None,
        })
        .await;
        assert_eq!(env.payload, expected.to_be_bytes(), "per-recipient FIFO");
        expected += 1;
        // Answer every message: b's replies take b's own path from its first message on.
        b.send_user(&to_a, env).unwrap();
    }
    let _a = sender.join().unwrap();
    for i in 0..N {
        let env = next(&mut a_in, |x| match x {
            Inbound::User { messages, .. } => Some(common::only(&messages)),
            Inbound::DeadLetter { reason, .. } => panic!("dead letter: {reason}"),
            _ => None,
        })
        .await;
        assert_eq!(
            env.payload,
            i.to_be_bytes(),
            "per-recipient FIFO of the replies"
        );
    }
}

/// A peer that completes the handshake and then never reads: once the socket buffers and the
/// outbound queue are full, messages go to dead letters with the reason, and the node goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_outbound_queue_sends_messages_to_dead_letters() {
    use flotilla_core::UniqueAddress;
    use flotilla_remote::handshake::accept;
    use flotilla_remote::io::read_frame;
    use flotilla_wire::{FrameDecoder, Kind, Lane};
    use tokio::io::AsyncWriteExt;

    let settings = flotilla_core::RemoteSettings {
        outbound_message_queue_size: 16,
        ..fast_settings()
    };
    let (a, mut a_in) =
        RemoteNode::start(&Address::remote("sim", "127.0.0.1", 0).unwrap(), settings).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stuck = Address::remote("sim", "127.0.0.1", port).unwrap();
    let me = UniqueAddress {
        address: stuck.clone(),
        uid: 7,
    };
    // A peer that accepts the link and never reads its ordinary connection.
    let peer = tokio::spawn(async move {
        let mut halves = Vec::new();
        for _ in 0..2 {
            let (mut s, _) = listener.accept().await.unwrap();
            let secrets =
                flotilla_proto::handshake::Secrets::new([flotilla_remote::testing::secret()])
                    .unwrap();
            let (_, opening) = accept(
                &mut s,
                &mut flotilla_remote::handshake::decoder(),
                &me,
                Some(secrets),
                |_| Ok(()),
            )
            .await
            .unwrap();
            halves.push((opening.lane, s));
        }
        halves.sort_by_key(|(lane, _)| *lane == Lane::Ordinary);
        let mut halves = halves.into_iter().map(|(_, s)| s);
        (halves.next().unwrap(), halves.next().unwrap())
    });
    a.send_user(&stuck, user("/user/x", b"first")).unwrap();
    entered(&mut a_in, StateName::Active).await;
    let (mut control, _ordinary) = peer.await.unwrap();
    let big = vec![0u8; 64 * 1024];
    let mut reason = None;
    for _ in 0..2000 {
        a.send_user(&stuck, user("/user/x", &big)).unwrap();
        if let Ok(Inbound::DeadLetter { reason: r, .. }) = a_in.try_recv() {
            reason = Some(r);
            break;
        }
        tokio::task::yield_now().await;
    }
    let reason = reason.expect("some message went to dead letters");
    assert!(reason.contains("outbound-message-queue-size"), "{reason}");
    assert_eq!(a.associations().await.unwrap()[0].state, StateName::Active);

    // The ordinary connection is jammed, yet the control connection answers a heartbeat at once.
    let mut frame = Vec::new();
    flotilla_wire::pdu::encode(
        Kind::Heartbeat,
        &flotilla_wire::Heartbeat {
            from_uid: 7,
            seq: 1,
        },
        1 << 20,
        &mut frame,
    )
    .unwrap();
    control.write_all(&frame).await.unwrap();
    let mut decoder = FrameDecoder::new(1 << 20);
    let reply = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let f = read_frame(&mut control, &mut decoder).await.unwrap();
            if f.kind == Kind::HeartbeatReply {
                return f;
            }
        }
    })
    .await
    .expect("a heartbeat reply while user messages wait");
    let reply: flotilla_wire::HeartbeatReply =
        flotilla_wire::pdu::decode(reply.kind, &reply.body).unwrap();
    assert_eq!(reply.seq, 1);
}

/// With a queue of 16 messages, a sender that waits for room loses nothing of 20 000 messages on
/// an Active association, in order, where `send_user_ref` would drop most to dead letters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_waits_for_room_loses_nothing_through_a_small_queue() {
    const N: u32 = 20_000;
    let settings = flotilla_core::RemoteSettings {
        outbound_message_queue_size: 16,
        ..fast_settings()
    };
    let (a, mut a_in) = RemoteNode::start(
        &Address::remote("sim", "127.0.0.1", 0).unwrap(),
        settings.clone(),
    )
    .unwrap();
    let (b, mut b_in) =
        RemoteNode::start(&Address::remote("sim", "127.0.0.1", 0).unwrap(), settings).unwrap();
    let to = a.outbound(&b.local().address).unwrap();
    // Waiting applies to an Active association (before, messages take the slow path, buffered
    // up to the queue size while it opens): open it first.
    to.send_user(&user("/user/x", b"hello")).unwrap();
    next(&mut b_in, |x| {
        matches!(x, Inbound::User { .. }).then_some(())
    })
    .await;
    let sender = tokio::spawn(async move {
        for i in 0..N {
            let payload = i.to_be_bytes();
            to.send_user_ref_waiting(flotilla_wire::UserEnvelopeRef {
                recipient: "/user/x",
                sender: None,
                manifest: "m",
                payload: &payload,
            })
            .await
            .unwrap();
        }
        to
    });
    let mut next = 0u32;
    tokio::time::timeout(Duration::from_secs(30), async {
        while next < N {
            if let Some(Inbound::User { messages, .. }) = b_in.recv().await {
                for m in &messages {
                    assert_eq!(m.payload, next.to_be_bytes(), "in order, none lost");
                    next += 1;
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("only {next} of {N} arrived"));
    let _to = sender.await.unwrap();
    while let Ok(item) = a_in.try_recv() {
        assert!(
            !matches!(item, Inbound::DeadLetter { .. }),
            "nothing went to dead letters: {item:?}"
        );
    }
}
