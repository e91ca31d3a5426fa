use super::*;
use flotilla_core::machine::drain;
use proptest::prelude::*;

fn settings(capacity: usize) -> RemoteSettings {
    RemoteSettings {
        system_message_buffer_size: capacity,
        system_message_resend_interval: Duration::from_secs(1),
        give_up_system_message_after: Duration::from_secs(60),
        ..RemoteSettings::default()
    }
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn tx(seq: Seq, msg: &'static str) -> SenderOutput<&'static str> {
    SenderOutput::Transmit { seq, msg }
}

#[test]
fn messages_are_numbered_resent_every_interval_and_dropped_once_acknowledged() {
    let t0 = crate::testing::epoch();
    let mut s_ = Sender::new(&settings(10));
    s_.handle(t0, SenderInput::Send("watch"));
    s_.handle(t0, SenderInput::Send("unwatch"));
    assert_eq!(drain(&mut s_), vec![tx(1, "watch"), tx(2, "unwatch")]);
    assert_eq!(s_.poll_timeout(), Some(t0 + s(1)));
    s_.handle_timeout(t0 + s(1));
    assert_eq!(drain(&mut s_), vec![tx(1, "watch"), tx(2, "unwatch")]);
    s_.handle(t0 + s(1), SenderInput::Ack { upto: 1 });
    s_.handle_timeout(t0 + s(2));
    assert_eq!(
        drain(&mut s_),
        vec![tx(2, "unwatch")],
        "only the unacknowledged"
    );
    s_.handle(t0 + s(2), SenderInput::Ack { upto: 2 });
    assert_eq!(s_.unacknowledged(), 0);
    assert_eq!(
        s_.poll_timeout(),
        None,
        "nothing to resend, nothing to give up on"
    );
}

#[test]
fn an_acknowledgement_of_messages_never_sent_is_ignored() {
    let t0 = crate::testing::epoch();
    let mut s_ = Sender::new(&settings(10));
    s_.handle(t0, SenderInput::Send("watch"));
    drain(&mut s_);
    s_.handle(t0, SenderInput::Ack { upto: u64::MAX });
    s_.handle(t0, SenderInput::Ack { upto: 2 });
    assert_eq!(
        s_.unacknowledged(),
        1,
        "still waiting for a real acknowledgement"
    );
    s_.handle_timeout(t0 + s(1));
    assert_eq!(drain(&mut s_), vec![tx(1, "watch")]);
    s_.handle(t0 + s(1), SenderInput::Ack { upto: 1 });
    assert_eq!(s_.unacknowledged(), 0);
}

#[test]
fn a_reconnect_resends_at_once() {
    let t0 = crate::testing::epoch();
    let mut s_ = Sender::new(&settings(10));
    s_.handle(t0, SenderInput::Send("terminated"));
    drain(&mut s_);
    s_.handle(t0 + Duration::from_millis(10), SenderInput::Reconnected);
    assert_eq!(drain(&mut s_), vec![tx(1, "terminated")]);
}

#[test]
fn overflowing_the_buffer_gives_up_once() {
    let t0 = crate::testing::epoch();
    let mut s_ = Sender::new(&settings(2));
    for m in ["a", "b", "c", "d"] {
        s_.handle(t0, SenderInput::Send(m));
    }
    let out = drain(&mut s_);
    assert_eq!(
        out,
        vec![
            tx(1, "a"),
            tx(2, "b"),
            SenderOutput::GaveUp(GiveUp::BufferOverflow { capacity: 2 })
        ]
    );
    assert!(s_.has_given_up());
    assert!(
        GiveUp::BufferOverflow { capacity: 2 }
            .to_string()
            .contains("system-message-buffer-size")
    );
}

#[test]
fn a_message_unacknowledged_for_too_long_gives_up() {
    let t0 = crate::testing::epoch();
    let mut s_ = Sender::new(&settings(10));
    s_.handle(t0, SenderInput::Send("watch"));
    drain(&mut s_);
    let mut now = t0;
    while let Some(at) = s_.poll_timeout() {
        now = at;
        s_.handle_timeout(now);
        if s_.has_given_up() {
            break;
        }
        drain(&mut s_);
    }
    assert_eq!(now, t0 + s(60));
    assert_eq!(
        drain(&mut s_),
        vec![SenderOutput::GaveUp(GiveUp::Unacknowledged {
            waited: s(60)
        })]
    );
}

#[test]
fn the_receiver_delivers_in_order_once_and_acknowledges_what_it_has() {
    let mut r = Receiver::new();
    assert_eq!(r.receive(2, "b"), Received::Drop { upto: 0 }, "a gap");
    assert_eq!(r.receive(1, "a"), Received::Deliver { msg: "a", upto: 1 });
    assert_eq!(r.receive(1, "a"), Received::Drop { upto: 1 }, "a duplicate");
    assert_eq!(r.receive(2, "b"), Received::Deliver { msg: "b", upto: 2 });
    assert_eq!(r.delivered(), 2);
}

proptest! {
    /// Over a link that loses, duplicates and reorders frames both ways, every message arrives
    /// exactly once and in order, as long as the link delivers something now and then.
    #[test]
    fn exactly_once_in_order_over_a_bad_link(
        n in 1usize..60,
        seed in any::<u64>(),
        loss_pct in 0u64..60,
    ) {
        let t0 = crate::testing::epoch();
        let mut rng = seed;
        let mut roll = move |pct: u64| {
            // xorshift: deterministic per seed.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % 100 < pct
        };
        // Give-up is not under test here: allow all the time the bad link needs.
        let mut sender = Sender::new(&RemoteSettings {
            give_up_system_message_after: Duration::from_secs(1_000_000),
            ..settings(1000)
        });
        let mut receiver = Receiver::new();
        let mut delivered = Vec::new();
        let mut to_receiver: Vec<(Seq, usize)> = Vec::new();
        let mut to_sender: Vec<Seq> = Vec::new();
        let mut now = t0;
        for i in 0..n {
            sender.handle(now, SenderInput::Send(i));
        }
        for _round in 0..5000 {
            for out in drain(&mut sender) {
                if let SenderOutput::Transmit { seq, msg } = out {
                    if !roll(loss_pct) { to_receiver.push((seq, msg)); }
                    if roll(10) { to_receiver.push((seq, msg)); } // duplicate
                } else {
                    prop_assert!(false, "gave up: {out:?}");
                }
            }
            if roll(50) { to_receiver.reverse(); } // reorder
            for (seq, msg) in to_receiver.drain(..) {
                let upto = match receiver.receive(seq, msg) {
                    Received::Deliver { msg, upto } => { delivered.push(msg); upto }
                    Received::Drop { upto } => upto,
                };
                if !roll(loss_pct) { to_sender.push(upto); }
            }
            for upto in to_sender.drain(..) {
                sender.handle(now, SenderInput::Ack { upto });
            }
            if sender.unacknowledged() == 0 { break; }
            now += Duration::from_secs(1);
            sender.handle_timeout(now);
        }
        prop_assert_eq!(delivered, (0..n).collect::<Vec<_>>());
        prop_assert_eq!(sender.unacknowledged(), 0);
    }
}
