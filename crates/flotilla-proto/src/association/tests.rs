use super::*;
use flotilla_core::machine::drain;

type Out = AssociationOutput<&'static str>;

const GATE: Duration = Duration::from_secs(5);
const HANDSHAKE: Duration = Duration::from_secs(20);

fn remote() -> Address {
    Address::remote("orders", "10.0.0.2", 2552).unwrap_or_else(|e| panic!("{e}"))
}

fn assoc(t0: Instant) -> Association<&'static str> {
    Association::new(remote(), RemoteSettings::default(), t0)
}

fn send(a: &mut Association<&'static str>, now: Instant, msg: &'static str) -> Vec<Out> {
    a.handle(now, AssociationInput::Send(msg));
    drain(a)
}

fn input(
    a: &mut Association<&'static str>,
    now: Instant,
    i: AssociationInput<&'static str>,
) -> Vec<Out> {
    a.handle(now, i);
    drain(a)
}

fn tick(a: &mut Association<&'static str>, now: Instant) -> Vec<Out> {
    a.handle_timeout(now);
    drain(a)
}

fn transition(from: StateName, to: StateName, cause: Cause) -> Out {
    AssociationOutput::Event(AssociationEvent {
        remote: remote(),
        from,
        to,
        cause,
    })
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// What an Idle association says when something first needs the connection.
fn connecting() -> Vec<Out> {
    vec![
        AssociationOutput::Connect,
        transition(
            StateName::Idle,
            StateName::Active,
            Cause::FirstOutboundMessage,
        ),
    ]
}

/// Idle → Active: connect, buffer, flush in order once the handshake is done.
fn active(t0: Instant, uid: u64) -> Association<&'static str> {
    let mut a = assoc(t0);
    send(&mut a, t0, "m0");
    input(&mut a, t0, AssociationInput::Connected { uid });
    a
}

#[test]
fn the_first_message_connects_and_messages_wait_for_the_handshake_in_order() {
    let t0 = crate::testing::epoch();
    let mut a = assoc(t0);
    assert_eq!(a.state(), StateName::Idle);
    assert_eq!(send(&mut a, t0, "one"), connecting());
    assert_eq!(
        send(&mut a, t0, "two"),
        vec![],
        "queued, not connected again"
    );
    assert_eq!(a.poll_timeout(), Some(t0 + HANDSHAKE));
    assert_eq!(
        input(&mut a, t0 + s(1), AssociationInput::Connected { uid: 7 }),
        vec![
            AssociationOutput::Transmit { uid: 7, msg: "one" },
            AssociationOutput::Transmit { uid: 7, msg: "two" },
        ],
        "no second event: still Active, now with a uid"
    );
    assert_eq!(a.uid(), Some(7));
    assert_eq!(
        send(&mut a, t0 + s(1), "three"),
        vec![AssociationOutput::Transmit {
            uid: 7,
            msg: "three"
        }]
    );
}

#[test]
fn connection_loss_gates_then_the_gate_opens_to_idle_and_the_next_message_reconnects() {
    let t0 = crate::testing::epoch();
    let mut a = active(t0, 7);
    let lost = Cause::ConnectionLost("reset by peer".into());
    assert_eq!(
        input(
            &mut a,
            t0 + s(1),
            AssociationInput::ConnectionLost {
                reason: "reset by peer".into()
            }
        ),
        vec![transition(
            StateName::Active,
            StateName::Gated,
            lost.clone()
        )]
    );
    assert_eq!(
        send(&mut a, t0 + s(2), "late"),
        vec![AssociationOutput::DeadLetter {
            msg: "late",
            reason: DeadLetterReason::Gated {
                remaining: s(4),
                cause: lost
            }
        }],
        "no connection attempt while gated"
    );
    assert_eq!(a.poll_timeout(), Some(t0 + s(1) + GATE));
    assert_eq!(
        tick(&mut a, t0 + s(6)),
        vec![transition(
            StateName::Gated,
            StateName::Idle,
            Cause::GateOpened
        )]
    );
    assert_eq!(
        send(&mut a, t0 + s(7), "again")[0],
        AssociationOutput::Connect
    );
}

#[test]
fn an_inbound_connection_opens_the_gate_at_once() {
    let t0 = crate::testing::epoch();
    let mut a = active(t0, 7);
    input(
        &mut a,
        t0,
        AssociationInput::ConnectionLost {
            reason: "eof".into(),
        },
    );
    assert_eq!(
        input(&mut a, t0 + s(1), AssociationInput::Accepted { uid: 7 }),
        vec![transition(
            StateName::Gated,
            StateName::Active,
            Cause::InboundAccepted { uid: 7 }
        )]
    );
    assert_eq!(
        send(&mut a, t0 + s(1), "x"),
        vec![AssociationOutput::Transmit { uid: 7, msg: "x" }]
    );
}

#[test]
fn a_refused_connect_or_a_handshake_timeout_gates_and_dead_letters_the_queue() {
    let t0 = crate::testing::epoch();
    let mut a = assoc(t0);
    send(&mut a, t0, "q1");
    let out = input(
        &mut a,
        t0 + s(1),
        AssociationInput::ConnectFailed {
            reason: "connection refused".into(),
        },
    );
    let refused = Cause::ConnectFailed("connection refused".into());
    assert_eq!(
        out,
        vec![
            AssociationOutput::DeadLetter {
                msg: "q1",
                reason: DeadLetterReason::ConnectionFailed(refused.clone())
            },
            transition(StateName::Active, StateName::Gated, refused)
        ]
    );

    let mut b = assoc(t0);
    send(&mut b, t0, "q2");
    let out = tick(&mut b, t0 + HANDSHAKE);
    assert_eq!(out[0], AssociationOutput::Disconnect { uid: None });
    assert_eq!(
        out.last(),
        Some(&transition(
            StateName::Active,
            StateName::Gated,
            Cause::HandshakeTimeout(HANDSHAKE)
        ))
    );
}

#[test]
fn a_full_queue_sends_the_overflow_to_dead_letters() {
    let t0 = crate::testing::epoch();
    let settings = RemoteSettings {
        outbound_message_queue_size: 2,
        ..RemoteSettings::default()
    };
    let mut a = Association::new(remote(), settings, t0);
    send(&mut a, t0, "a");
    send(&mut a, t0, "b");
    assert_eq!(
        send(&mut a, t0, "c"),
        vec![AssociationOutput::DeadLetter {
            msg: "c",
            reason: DeadLetterReason::QueueFull { capacity: 2 }
        }]
    );
}

#[test]
fn quarantine_is_per_incarnation_tells_the_remote_and_is_permanent_for_that_uid() {
    let t0 = crate::testing::epoch();
    let mut a = active(t0, 7);
    let reason = QuarantineReason::SystemMessageDeliveryFailed("buffer overflow".into());
    assert_eq!(
        input(
            &mut a,
            t0 + s(1),
            AssociationInput::Quarantine {
                uid: 7,
                reason: reason.clone()
            }
        ),
        vec![
            AssociationOutput::SendQuarantineNotice {
                uid: 7,
                reason: reason.clone()
            },
            AssociationOutput::Disconnect { uid: Some(7) },
            transition(
                StateName::Active,
                StateName::Quarantined,
                Cause::Quarantined {
                    uid: 7,
                    reason: reason.clone()
                }
            ),
        ]
    );
    // Frames from it are dropped; messages to it are dead letters.
    assert_eq!(
        input(&mut a, t0 + s(2), AssociationInput::Heard { uid: 7 }),
        vec![AssociationOutput::DroppedInbound { uid: 7 }]
    );
    assert_eq!(
        send(&mut a, t0 + s(2), "m"),
        vec![AssociationOutput::DeadLetter {
            msg: "m",
            reason: DeadLetterReason::Quarantined { uid: 7 }
        }],
        "no probe before the gate period"
    );
    // The same incarnation connecting again is refused and reminded.
    let out = input(&mut a, t0 + s(3), AssociationInput::Accepted { uid: 7 });
    assert_eq!(
        out,
        vec![
            AssociationOutput::SendQuarantineNotice { uid: 7, reason },
            AssociationOutput::Disconnect { uid: Some(7) },
        ]
    );
    assert_eq!(a.state(), StateName::Quarantined);
    // A second quarantine of the same uid changes nothing.
    assert_eq!(
        input(
            &mut a,
            t0 + s(4),
            AssociationInput::Quarantine {
                uid: 7,
                reason: QuarantineReason::FailureDetector
            }
        ),
        vec![]
    );
}

#[test]
fn a_new_incarnation_at_the_same_address_becomes_active() {
    let t0 = crate::testing::epoch();
    let mut a = active(t0, 7);
    input(
        &mut a,
        t0,
        AssociationInput::Quarantine {
            uid: 7,
            reason: QuarantineReason::FailureDetector,
        },
    );
    // After the gate period an outbound message probes for a restarted remote.
    let out = send(&mut a, t0 + s(6), "hello?");
    assert_eq!(out.last(), Some(&AssociationOutput::Connect));
    assert_eq!(
        input(&mut a, t0 + s(7), AssociationInput::Connected { uid: 8 }),
        vec![transition(
            StateName::Quarantined,
            StateName::Active,
            Cause::NewIncarnation { uid: 8 }
        )]
    );
    assert!(a.is_quarantined(7) && !a.is_quarantined(8));
    assert_eq!(
        send(&mut a, t0 + s(7), "hi"),
        vec![AssociationOutput::Transmit { uid: 8, msg: "hi" }]
    );
}

#[test]
fn a_restart_seen_while_active_retires_the_old_incarnation() {
    let t0 = crate::testing::epoch();
    let mut a = active(t0, 7);
    input(&mut a, t0 + s(1), AssociationInput::Accepted { uid: 9 });
    assert_eq!(a.uid(), Some(9));
    assert!(a.is_quarantined(7), "the old incarnation is gone for good");
    assert_eq!(
        input(&mut a, t0 + s(2), AssociationInput::Heard { uid: 7 }),
        vec![AssociationOutput::DroppedInbound { uid: 7 }]
    );
}

#[test]
fn a_remote_silent_for_too_long_is_quarantined_with_the_figure() {
    let t0 = crate::testing::epoch();
    let settings = RemoteSettings {
        quarantine_after_silence: s(100),
        ..RemoteSettings::default()
    };
    let mut a = Association::new(remote(), settings, t0);
    send(&mut a, t0, "m");
    input(&mut a, t0, AssociationInput::Connected { uid: 7 });
    input(&mut a, t0 + s(50), AssociationInput::Heard { uid: 7 });
    assert_eq!(a.poll_timeout(), Some(t0 + s(150)));
    assert_eq!(tick(&mut a, t0 + s(149)), vec![]);
    let out = tick(&mut a, t0 + s(150));
    let cause = Cause::Quarantined {
        uid: 7,
        reason: QuarantineReason::Silent(s(100)),
    };
    assert_eq!(
        out.last(),
        Some(&transition(
            StateName::Active,
            StateName::Quarantined,
            cause.clone()
        ))
    );
    assert!(
        cause.to_string().contains("silent for too long (100s)"),
        "{cause}"
    );
}

#[test]
fn the_snapshot_reports_state_uid_since_and_cause() {
    let t0 = crate::testing::epoch();
    let mut a = active(t0, 7);
    input(
        &mut a,
        t0 + s(3),
        AssociationInput::ConnectionLost {
            reason: "eof".into(),
        },
    );
    let snap = a.snapshot();
    assert_eq!(snap.state, StateName::Gated);
    assert_eq!(snap.since, t0 + s(3));
    assert_eq!(snap.last_cause, Some(Cause::ConnectionLost("eof".into())));
    assert_eq!(snap.uid, None);
}

#[test]
fn open_connects_an_idle_association_without_a_message() {
    let t0 = crate::testing::epoch();
    let mut a = assoc(t0);
    assert_eq!(input(&mut a, t0, AssociationInput::Open), connecting());
    assert_eq!(
        input(&mut a, t0, AssociationInput::Open),
        vec![],
        "already connecting"
    );
}

#[test]
fn quarantining_the_last_incarnation_after_it_went_away_quarantines_the_association() {
    let t0 = crate::testing::epoch();
    let mut a = active(t0, 7);
    input(
        &mut a,
        t0 + s(1),
        AssociationInput::ConnectionLost {
            reason: "reset".into(),
        },
    );
    assert_eq!(a.state(), StateName::Gated);
    // The member is removed while the association is gated: no connection to tell, but the
    // association is Quarantined at once, and stays so past the gate.
    let reason = QuarantineReason::FailureDetector;
    assert_eq!(
        input(
            &mut a,
            t0 + s(2),
            AssociationInput::Quarantine {
                uid: 7,
                reason: reason.clone()
            }
        ),
        vec![transition(
            StateName::Gated,
            StateName::Quarantined,
            Cause::Quarantined { uid: 7, reason }
        )]
    );
    assert_eq!(tick(&mut a, t0 + s(2) + GATE + s(1)), vec![]);
    assert_eq!(a.state(), StateName::Quarantined);
    assert_eq!(a.uid(), Some(7));
    // A restarted remote (new uid) is still found.
    input(&mut a, t0 + s(30), AssociationInput::Accepted { uid: 8 });
    assert_eq!((a.state(), a.uid()), (StateName::Active, Some(8)));
    // An incarnation never reached is only remembered: the association is left as it is.
    input(
        &mut a,
        t0 + s(31),
        AssociationInput::Quarantine {
            uid: 99,
            reason: QuarantineReason::FailureDetector,
        },
    );
    assert_eq!(a.state(), StateName::Active);
    assert!(a.is_quarantined(99));
}

#[test]
fn quarantining_the_last_incarnation_while_reconnecting_turns_the_attempt_into_a_probe() {
    let t0 = crate::testing::epoch();
    let mut a = active(t0, 7);
    input(
        &mut a,
        t0 + s(1),
        AssociationInput::ConnectionLost {
            reason: "reset".into(),
        },
    );
    tick(&mut a, t0 + s(1) + GATE);
    assert_eq!(a.state(), StateName::Idle);
    send(&mut a, t0 + s(7), "m1");
    let out = input(
        &mut a,
        t0 + s(8),
        AssociationInput::Quarantine {
            uid: 7,
            reason: QuarantineReason::FailureDetector,
        },
    );
    assert!(
        out.contains(&AssociationOutput::DeadLetter {
            msg: "m1",
            reason: DeadLetterReason::Quarantined { uid: 7 }
        }),
        "{out:?}"
    );
    assert_eq!(a.state(), StateName::Quarantined);
    // The attempt in flight fails: quarantined still, waiting a gate period for the next probe.
    input(
        &mut a,
        t0 + s(9),
        AssociationInput::ConnectFailed {
            reason: "refused".into(),
        },
    );
    assert_eq!(a.state(), StateName::Quarantined);
    assert_eq!(a.poll_timeout(), None);
}

#[test]
fn only_the_latest_quarantined_incarnations_are_remembered() {
    let t0 = crate::testing::epoch();
    let mut a = active(t0, 1);
    // A remote that restarts again and again: each new incarnation replaces the last.
    let restarts = u64::try_from(MAX_QUARANTINED_INCARNATIONS).unwrap_or(0) + 50;
    for uid in 2..=restarts + 1 {
        input(&mut a, t0 + s(1), AssociationInput::Accepted { uid });
    }
    assert_eq!(a.snapshot().quarantined.len(), MAX_QUARANTINED_INCARNATIONS);
    assert!(!a.is_quarantined(1), "the oldest are forgotten");
    assert!(a.is_quarantined(restarts), "the latest are kept");
    assert!(
        !a.is_quarantined(restarts + 1),
        "the current one is not quarantined"
    );
}
