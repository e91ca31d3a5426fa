//! Two nodes in one process, each with its own remoting threads, over 127.0.0.1.

#![allow(clippy::unwrap_used)] // reason: in tests a panic is the failure report

mod common;

use std::time::Duration;

use common::{fast_settings, next};
use flotilla_core::Address;
use flotilla_proto::association::StateName;
use flotilla_remote::{Inbound, RemoteNode, SendError, SystemPayload};
use flotilla_wire::UserEnvelope;
use tokio::sync::mpsc::UnboundedReceiver;

fn start(system: &str) -> (RemoteNode, UnboundedReceiver<Inbound>) {
    let address = Address::remote(system, "127.0.0.1", 0).unwrap();
    RemoteNode::start(&address, fast_settings(), 1).unwrap()
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
async fn entered(rx: &mut UnboundedReceiver<Inbound>, state: StateName) -> String {
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
            Inbound::User { from, envelope } => Some((from, envelope)),
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
