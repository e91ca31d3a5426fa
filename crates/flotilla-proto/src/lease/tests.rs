use super::*;
use flotilla_core::machine::drain;

const TTL: Duration = Duration::from_secs(10);
const INTERVAL: Duration = Duration::from_secs(2);
const OP_TIMEOUT: Duration = Duration::from_secs(1);
const MARGIN: Duration = Duration::from_secs(1);

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn holder() -> LeaseHolder {
    let settings = LeaseSettings::new(TTL, INTERVAL)
        .unwrap()
        .with_operation_timeout(OP_TIMEOUT)
        .with_safety_margin(MARGIN);
    settings.validate().unwrap();
    LeaseHolder::new(settings)
}

/// The one operation among `out`, with its id.
fn the_op(out: &[HolderOutput]) -> (OpId, LeaseOp) {
    let ops: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            HolderOutput::Op { id, op } => Some((*id, op.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(ops.len(), 1, "expected exactly one operation in {out:?}");
    ops[0].clone()
}

fn reply(h: &mut LeaseHolder, now: Instant, op: OpId, r: BackendReply) -> Vec<HolderOutput> {
    h.handle(now, HolderInput::Reply { op, reply: r });
    drain(h)
}

fn input(h: &mut LeaseHolder, now: Instant, i: HolderInput) -> Vec<HolderOutput> {
    h.handle(now, i);
    drain(h)
}

fn tick(h: &mut LeaseHolder, now: Instant) -> Vec<HolderOutput> {
    h.handle_timeout(now);
    drain(h)
}

fn granted(token: u64) -> BackendReply {
    BackendReply::Granted {
        token: FencingToken(token),
    }
}

fn unknown(reason: &str) -> BackendReply {
    BackendReply::Unknown {
        reason: reason.into(),
    }
}

/// Acquires at `t0` with the grant answered at `t0 + answer_after`.
fn acquired(t0: Instant, answer_after: Duration) -> LeaseHolder {
    let mut h = holder();
    let (op, _) = the_op(&input(&mut h, t0, HolderInput::Acquire));
    reply(&mut h, t0 + answer_after, op, granted(7));
    h
}

#[test]
fn acquire_grant_then_renew_every_interval() {
    let t0 = crate::testing::epoch();
    let mut h = holder();
    let out = input(&mut h, t0, HolderInput::Acquire);
    assert_eq!(
        out,
        vec![HolderOutput::Op {
            id: OpId(0),
            op: LeaseOp::Acquire
        }]
    );
    assert!(!h.check_lease(t0), "not held before the grant");

    let out = reply(&mut h, t0 + ms(300), OpId(0), granted(7));
    assert_eq!(
        out,
        vec![
            HolderOutput::Event(LeaseEvent::Acquired {
                token: FencingToken(7),
                took: ms(300)
            }),
            HolderOutput::AcquireDone(AcquireOutcome::Granted {
                token: FencingToken(7)
            }),
        ]
    );
    assert!(h.check_lease(t0 + ms(300)));
    assert_eq!(h.token(), Some(FencingToken(7)));

    // The first renewal is due one interval after the acquire was sent.
    assert_eq!(h.poll_timeout(), Some(t0 + INTERVAL));
    assert_eq!(tick(&mut h, t0 + ms(1999)), vec![]);
    let out = tick(&mut h, t0 + INTERVAL);
    assert_eq!(
        out,
        vec![HolderOutput::Op {
            id: OpId(1),
            op: LeaseOp::Renew {
                token: FencingToken(7)
            }
        }]
    );
    let out = reply(
        &mut h,
        t0 + INTERVAL + ms(50),
        OpId(1),
        BackendReply::Renewed,
    );
    assert_eq!(
        out,
        vec![HolderOutput::Event(LeaseEvent::Renewed { took: ms(50) })]
    );
    assert_eq!(h.poll_timeout(), Some(t0 + INTERVAL + INTERVAL));
}

#[test]
fn the_deadline_counts_from_when_the_request_was_sent() {
    let t0 = crate::testing::epoch();
    // The grant takes 800 ms to come back: the deadline still counts from t0.
    let h = acquired(t0, ms(800));
    let deadline = t0 + TTL - MARGIN;
    assert!(h.check_lease(deadline - ms(1)));
    assert!(
        !h.check_lease(deadline),
        "certain only strictly before send + ttl - margin"
    );
}

#[test]
fn transient_renewal_failures_inside_the_ttl_keep_the_lease() {
    let t0 = crate::testing::epoch();
    let mut h = acquired(t0, ms(10));
    let (r1, _) = the_op(&tick(&mut h, t0 + s(2)));
    let out = reply(&mut h, t0 + s(2) + ms(100), r1, unknown("connection reset"));
    assert_eq!(
        out,
        vec![HolderOutput::Event(LeaseEvent::RenewalRetried {
            attempt: 1,
            reason: "connection reset".into(),
            remaining: t0 + TTL - MARGIN - (t0 + s(2) + ms(100)),
        })]
    );
    assert!(
        h.check_lease(t0 + s(3)),
        "one failed renewal does not surrender a valid lease"
    );
    // Retried after a tenth of the interval (200 ms).
    assert_eq!(h.poll_timeout(), Some(t0 + s(2) + ms(300)));
    let (r2, op) = the_op(&tick(&mut h, t0 + s(2) + ms(300)));
    assert_eq!(
        op,
        LeaseOp::Renew {
            token: FencingToken(7)
        }
    );
    let out = reply(&mut h, t0 + s(3), r2, BackendReply::Renewed);
    assert!(matches!(
        out[..],
        [HolderOutput::Event(LeaseEvent::Renewed { .. })]
    ));
    // Confirmed as of the retry's send time.
    assert!(h.check_lease(t0 + s(2) + ms(300) + TTL - MARGIN - ms(1)));
}

#[test]
fn the_lease_is_lost_once_at_the_deadline_when_renewals_keep_failing_and_then_released() {
    let t0 = crate::testing::epoch();
    let mut h = acquired(t0, ms(10));
    let deadline = t0 + TTL - MARGIN;
    let mut now = t0;
    let mut lost = Vec::new();
    let mut release_ops = Vec::new();
    // Drive time forward; every renewal fails.
    for _ in 0..200 {
        let Some(next) = h.poll_timeout() else { break };
        now = next;
        for o in tick(&mut h, now) {
            match o {
                HolderOutput::Op {
                    id,
                    op: LeaseOp::Renew { .. },
                } => {
                    let out = reply(&mut h, now + ms(5), id, unknown("etcd unreachable"));
                    assert!(out.iter().all(|o| matches!(
                        o,
                        HolderOutput::Event(LeaseEvent::RenewalRetried { .. })
                    )));
                }
                HolderOutput::Op {
                    id,
                    op: LeaseOp::Release { token },
                } => release_ops.push((id, token)),
                HolderOutput::Event(LeaseEvent::Lost { cause }) => lost.push((now, cause)),
                other => panic!("unexpected {other:?}"),
            }
        }
        if !release_ops.is_empty() {
            break;
        }
    }
    assert_eq!(lost.len(), 1, "lost exactly once: {lost:?}");
    let (at, cause) = &lost[0];
    assert_eq!(*at, deadline);
    assert!(
        matches!(cause, LostCause::Expired { since_confirmed, last_error: Some(e) } if *since_confirmed == TTL - MARGIN && e == "etcd unreachable"),
        "{cause:?}"
    );
    assert!(!h.check_lease(deadline));
    assert_eq!(
        release_ops.len(),
        1,
        "a best-effort release so that nobody waits for the TTL"
    );
    assert_eq!(release_ops[0].1, FencingToken(7));
    // Its answer owes nobody anything: no ReleaseDone.
    let out = reply(
        &mut h,
        now + ms(10),
        release_ops[0].0,
        BackendReply::Released { was_held: true },
    );
    assert!(
        out.iter()
            .all(|o| matches!(o, HolderOutput::Event(LeaseEvent::Released { .. }))),
        "{out:?}"
    );
    assert_eq!(h.state_name(), "released");
}

#[test]
fn another_owner_on_the_backend_loses_the_lease_at_once() {
    let t0 = crate::testing::epoch();
    let mut h = acquired(t0, ms(10));
    let (r, _) = the_op(&tick(&mut h, t0 + s(2)));
    let out = reply(
        &mut h,
        t0 + s(2),
        r,
        BackendReply::Denied {
            holder: Some("node-b".into()),
        },
    );
    assert_eq!(
        out,
        vec![HolderOutput::Event(LeaseEvent::Lost {
            cause: LostCause::TakenOver {
                holder: Some("node-b".into())
            }
        })]
    );
    assert!(!h.check_lease(t0 + s(2)));
    assert_eq!(
        h.poll_timeout(),
        None,
        "no release of someone else's lease, no more renewals"
    );
}

#[test]
fn denied_acquire_is_certain_and_leaves_nothing_to_clean_up() {
    let t0 = crate::testing::epoch();
    let mut h = holder();
    let (op, _) = the_op(&input(&mut h, t0, HolderInput::Acquire));
    let out = reply(
        &mut h,
        t0,
        op,
        BackendReply::Denied {
            holder: Some("node-a".into()),
        },
    );
    assert_eq!(
        out,
        vec![HolderOutput::AcquireDone(AcquireOutcome::Denied {
            holder: Some("node-a".into())
        })]
    );
    assert_eq!(h.poll_timeout(), None);
}

#[test]
fn an_unknown_acquire_is_not_acquired_and_is_released_in_case_it_was() {
    let t0 = crate::testing::epoch();
    let mut h = holder();
    let (op, _) = the_op(&input(&mut h, t0, HolderInput::Acquire));
    let out = reply(&mut h, t0 + ms(100), op, unknown("request timed out"));
    assert_eq!(
        out[0],
        HolderOutput::AcquireDone(AcquireOutcome::Unknown {
            reason: "request timed out".into()
        })
    );
    // The clean-up asks for this owner's hold, then releases exactly that hold.
    let (look, what) = the_op(&out);
    assert_eq!(what, LeaseOp::Inspect);
    assert!(!h.check_lease(t0 + ms(100)));
    // A new acquisition waits until the clean-up has answered.
    assert_eq!(input(&mut h, t0 + ms(150), HolderInput::Acquire), vec![]);
    let out = reply(
        &mut h,
        t0 + ms(160),
        look,
        BackendReply::Inspected {
            token: Some(FencingToken(4)),
        },
    );
    let (rel, what) = the_op(&out);
    assert_eq!(
        what,
        LeaseOp::Release {
            token: FencingToken(4)
        }
    );
    let out = reply(
        &mut h,
        t0 + ms(200),
        rel,
        BackendReply::Released { was_held: true },
    );
    assert_eq!(
        out[0],
        HolderOutput::Event(LeaseEvent::Released { took: ms(100) })
    );
    assert_eq!(
        the_op(&out).1,
        LeaseOp::Acquire,
        "the waiting acquisition starts now"
    );
}

#[test]
fn an_acquire_never_sent_is_not_acquired_and_leaves_nothing_to_clean_up() {
    let t0 = crate::testing::epoch();
    let mut h = holder();
    let (op, _) = the_op(&input(&mut h, t0, HolderInput::Acquire));
    let not_sent = BackendReply::NotSent {
        reason: "no connection yet".into(),
    };
    let out = reply(&mut h, t0 + ms(1), op, not_sent.clone());
    assert_eq!(
        out,
        vec![HolderOutput::AcquireDone(AcquireOutcome::Unknown {
            reason: "no connection yet".into()
        })],
        "no clean-up release"
    );
    assert!(!h.check_lease(t0 + ms(1)));
    assert_eq!(h.poll_timeout(), None, "no sweep");
    // The next acquisition goes out at once; a release asked for meanwhile answers not held.
    let (op, next) = the_op(&input(&mut h, t0 + s(1), HolderInput::Acquire));
    assert_eq!(next, LeaseOp::Acquire);
    assert_eq!(input(&mut h, t0 + s(1), HolderInput::Release), vec![]);
    assert_eq!(
        reply(&mut h, t0 + s(1), op, not_sent),
        vec![
            HolderOutput::AcquireDone(AcquireOutcome::Unknown {
                reason: "no connection yet".into()
            }),
            HolderOutput::ReleaseDone(ReleaseOutcome::NotHeld),
        ]
    );
}

#[test]
fn a_grant_that_arrives_after_the_acquire_was_given_up_is_released() {
    let t0 = crate::testing::epoch();
    let mut h = holder();
    let (op, _) = the_op(&input(&mut h, t0, HolderInput::Acquire));
    let out = tick(&mut h, t0 + OP_TIMEOUT);
    assert_eq!(
        out,
        vec![HolderOutput::AcquireDone(AcquireOutcome::Unknown {
            reason: "no answer within 1s".into()
        })]
    );
    let out = reply(&mut h, t0 + s(3), op, granted(9));
    assert_eq!(
        out,
        vec![HolderOutput::Op {
            id: OpId(1),
            op: LeaseOp::Release {
                token: FencingToken(9)
            }
        }],
        "the zombie grant is released"
    );
    assert!(!h.check_lease(t0 + s(3)));
}

#[test]
fn a_late_grant_is_kept_when_the_owner_is_acquiring_again() {
    // Every grant is a hold of its own: the abandoned acquisition landed after the new one and
    // replaced its hold (token 9 after 8). The hold that counts is the later one, this owner's
    // too, and granted after the new acquisition was sent.
    let t0 = crate::testing::epoch();
    let mut h = holder();
    let (first, _) = the_op(&input(&mut h, t0, HolderInput::Acquire));
    tick(&mut h, t0 + OP_TIMEOUT);
    let (second, _) = the_op(&input(&mut h, t0 + s(2), HolderInput::Acquire));
    assert_eq!(
        reply(&mut h, t0 + s(2), first, granted(9)),
        vec![],
        "not released: ours again"
    );
    let out = reply(&mut h, t0 + s(2), second, granted(8));
    assert_eq!(
        out[1],
        HolderOutput::AcquireDone(AcquireOutcome::Granted {
            token: FencingToken(9)
        })
    );
    assert_eq!(h.token(), Some(FencingToken(9)));
}

#[test]
fn a_late_grant_that_replaced_the_held_lease_loses_it_and_is_released() {
    let t0 = crate::testing::epoch();
    let mut h = holder();
    let (first, _) = the_op(&input(&mut h, t0, HolderInput::Acquire));
    tick(&mut h, t0 + OP_TIMEOUT);
    let (second, _) = the_op(&input(&mut h, t0 + s(2), HolderInput::Acquire));
    reply(&mut h, t0 + s(2), second, granted(8));
    assert!(h.check_lease(t0 + s(2)));
    // The abandoned acquisition lands now, after hold 8: hold 8 is gone at the backend.
    let out = reply(&mut h, t0 + s(3), first, granted(9));
    assert_eq!(
        out,
        vec![
            HolderOutput::Event(LeaseEvent::Lost {
                cause: LostCause::TakenOver { holder: None }
            }),
            HolderOutput::Op {
                id: OpId(2),
                op: LeaseOp::Release {
                    token: FencingToken(9)
                }
            },
        ]
    );
    assert!(!h.check_lease(t0 + s(3)));
}

#[test]
fn a_late_grant_older_than_the_held_lease_changes_nothing() {
    let t0 = crate::testing::epoch();
    let mut h = holder();
    let (first, _) = the_op(&input(&mut h, t0, HolderInput::Acquire));
    tick(&mut h, t0 + OP_TIMEOUT);
    let (second, _) = the_op(&input(&mut h, t0 + s(2), HolderInput::Acquire));
    reply(&mut h, t0 + s(2), second, granted(8));
    // Granted before hold 8, which replaced it.
    assert_eq!(reply(&mut h, t0 + s(3), first, granted(7)), vec![]);
    assert!(h.check_lease(t0 + s(3)));
    assert_eq!(h.token(), Some(FencingToken(8)));
}

#[test]
fn release_of_a_held_lease_is_awaited_and_idempotent() {
    let t0 = crate::testing::epoch();
    let mut h = acquired(t0, ms(10));
    let out = input(&mut h, t0 + s(1), HolderInput::Release);
    let (op, relop) = the_op(&out);
    assert_eq!(
        relop,
        LeaseOp::Release {
            token: FencingToken(7)
        }
    );
    assert!(
        !h.check_lease(t0 + s(1)),
        "not trusted once its release has begun"
    );
    assert_eq!(
        input(&mut h, t0 + s(1), HolderInput::Release),
        vec![],
        "joins the release in flight"
    );
    let out = reply(
        &mut h,
        t0 + s(1) + ms(40),
        op,
        BackendReply::Released { was_held: true },
    );
    assert_eq!(
        out,
        vec![
            HolderOutput::Event(LeaseEvent::Released { took: ms(40) }),
            HolderOutput::ReleaseDone(ReleaseOutcome::Released),
        ]
    );
    assert_eq!(
        input(&mut h, t0 + s(2), HolderInput::Release),
        vec![HolderOutput::ReleaseDone(ReleaseOutcome::NotHeld)]
    );
    assert_eq!(h.poll_timeout(), None);
}

#[test]
fn release_is_retried_with_backoff_until_the_operation_timeout() {
    let t0 = crate::testing::epoch();
    let mut h = acquired(t0, ms(10));
    let start = t0 + s(1);
    let (mut op, _) = the_op(&input(&mut h, start, HolderInput::Release));
    let mut now = start;
    let mut sent = vec![start];
    loop {
        let out = reply(&mut h, now + ms(10), op, unknown("503"));
        if out
            .iter()
            .any(|o| matches!(o, HolderOutput::ReleaseDone(_)))
        {
            assert_eq!(
                out,
                vec![
                    HolderOutput::Event(LeaseEvent::ReleaseFailed {
                        reason: "503".into()
                    }),
                    HolderOutput::ReleaseDone(ReleaseOutcome::Unknown {
                        reason: "503".into()
                    }),
                ]
            );
            break;
        }
        now = h.poll_timeout().unwrap();
        op = the_op(&tick(&mut h, now)).0;
        sent.push(now);
    }
    // 100, 200, 400 ms backoffs: tries at 0, 110, 320, 730 ms; the next would pass 1 s.
    let offsets: Vec<_> = sent.iter().map(|t| t.duration_since(start)).collect();
    assert_eq!(offsets, vec![ms(0), ms(110), ms(320), ms(730)]);
    assert_eq!(h.poll_timeout(), None);
}

#[test]
fn a_release_that_gets_no_answer_at_all_ends_at_the_operation_timeout() {
    let t0 = crate::testing::epoch();
    let mut h = acquired(t0, ms(10));
    the_op(&input(&mut h, t0 + s(1), HolderInput::Release));
    assert_eq!(h.poll_timeout(), Some(t0 + s(1) + OP_TIMEOUT));
    let out = tick(&mut h, t0 + s(1) + OP_TIMEOUT);
    assert!(
        matches!(
            out.last(),
            Some(HolderOutput::ReleaseDone(ReleaseOutcome::Unknown { .. }))
        ),
        "{out:?}"
    );
}

#[test]
fn release_during_an_acquisition_waits_for_its_answer_then_releases() {
    let t0 = crate::testing::epoch();
    let mut h = holder();
    let (acq, _) = the_op(&input(&mut h, t0, HolderInput::Acquire));
    assert_eq!(
        input(&mut h, t0 + ms(10), HolderInput::Release),
        vec![],
        "no release may overtake the acquire"
    );
    let out = reply(&mut h, t0 + ms(50), acq, granted(3));
    assert_eq!(
        out,
        vec![
            HolderOutput::AcquireDone(AcquireOutcome::Unknown {
                reason: "released while the acquisition was in flight".into()
            }),
            HolderOutput::Op {
                id: OpId(1),
                op: LeaseOp::Release {
                    token: FencingToken(3)
                }
            },
        ]
    );
    let out = reply(
        &mut h,
        t0 + ms(60),
        OpId(1),
        BackendReply::Released { was_held: true },
    );
    assert_eq!(
        out.last(),
        Some(&HolderOutput::ReleaseDone(ReleaseOutcome::Released))
    );
}

#[test]
fn release_during_a_denied_acquisition_has_nothing_to_release() {
    let t0 = crate::testing::epoch();
    let mut h = holder();
    let (acq, _) = the_op(&input(&mut h, t0, HolderInput::Acquire));
    input(&mut h, t0, HolderInput::Release);
    let out = reply(&mut h, t0, acq, BackendReply::Denied { holder: None });
    assert_eq!(
        out,
        vec![
            HolderOutput::AcquireDone(AcquireOutcome::Denied { holder: None }),
            HolderOutput::ReleaseDone(ReleaseOutcome::NotHeld),
        ]
    );
}

#[test]
fn acquire_while_held_is_granted_at_once_and_acquire_while_releasing_waits() {
    let t0 = crate::testing::epoch();
    let mut h = acquired(t0, ms(10));
    assert_eq!(
        input(&mut h, t0 + s(1), HolderInput::Acquire),
        vec![HolderOutput::AcquireDone(AcquireOutcome::Granted {
            token: FencingToken(7)
        })]
    );
    let (rel, _) = the_op(&input(&mut h, t0 + s(1), HolderInput::Release));
    assert_eq!(input(&mut h, t0 + s(1), HolderInput::Acquire), vec![]);
    let out = reply(
        &mut h,
        t0 + s(1),
        rel,
        BackendReply::Released { was_held: true },
    );
    assert_eq!(out[1], HolderOutput::ReleaseDone(ReleaseOutcome::Released));
    assert_eq!(the_op(&out).1, LeaseOp::Acquire);
}

#[test]
fn replies_to_superseded_operations_change_nothing() {
    let t0 = crate::testing::epoch();
    let mut h = acquired(t0, ms(10));
    let (r, _) = the_op(&tick(&mut h, t0 + s(2)));
    let (rel, _) = the_op(&input(&mut h, t0 + s(2), HolderInput::Release));
    // The renewal's answer arrives after the release began: ignored.
    assert_eq!(reply(&mut h, t0 + s(2), r, BackendReply::Renewed), vec![]);
    assert_eq!(reply(&mut h, t0 + s(2), OpId(999), granted(1)), vec![]);
    let out = reply(
        &mut h,
        t0 + s(2),
        rel,
        BackendReply::Released { was_held: true },
    );
    assert_eq!(
        out.last(),
        Some(&HolderOutput::ReleaseDone(ReleaseOutcome::Released))
    );
}

#[test]
fn an_unanswered_acquire_is_swept_every_interval_for_one_ttl() {
    let t0 = crate::testing::epoch();
    let mut h = holder();
    the_op(&input(&mut h, t0, HolderInput::Acquire));
    tick(&mut h, t0 + OP_TIMEOUT);
    assert!(h.sweeping());
    // The first sweep goes out at once, then one per interval while nothing was removed.
    let mut sweeps = 0;
    let mut now = t0 + OP_TIMEOUT;
    while let Some(at) = h.poll_timeout() {
        assert!(at >= now, "time runs forwards");
        now = at;
        let out = tick(&mut h, now);
        if out.is_empty() {
            continue;
        }
        let (op, what) = the_op(&out);
        assert_eq!(what, LeaseOp::Inspect);
        sweeps += 1;
        reply(
            &mut h,
            now + ms(10),
            op,
            BackendReply::Inspected { token: None },
        );
        now += ms(10);
    }
    assert!(!h.sweeping(), "the sweep ends one TTL after the attempt");
    assert!(now <= t0 + TTL + INTERVAL, "swept until {now:?}");
    // t0+1s, then every 2s until t0+10s: 1, 3, 5, 7, 9.
    assert_eq!(sweeps, 5);
}

#[test]
fn a_sweep_that_removes_the_zombie_ends_the_sweep() {
    let t0 = crate::testing::epoch();
    let mut h = holder();
    let (op, _) = the_op(&input(&mut h, t0, HolderInput::Acquire));
    // The backend answers "unknown" (the write was in fact applied later).
    let out = reply(&mut h, t0 + ms(100), op, unknown("connection reset"));
    let (cleanup, _) = the_op(&out);
    reply(
        &mut h,
        t0 + ms(200),
        cleanup,
        BackendReply::Inspected { token: None },
    );
    assert!(h.sweeping());
    let (sweep, what) = the_op(&tick(&mut h, t0 + ms(100) + INTERVAL));
    assert_eq!(what, LeaseOp::Inspect);
    // The write has landed meanwhile: the sweep finds the hold and releases exactly it.
    let out = reply(
        &mut h,
        t0 + s(3),
        sweep,
        BackendReply::Inspected {
            token: Some(FencingToken(5)),
        },
    );
    let (rel, what) = the_op(&out);
    assert_eq!(
        what,
        LeaseOp::Release {
            token: FencingToken(5)
        }
    );
    assert!(h.sweeping());
    reply(
        &mut h,
        t0 + s(3),
        rel,
        BackendReply::Released { was_held: true },
    );
    assert!(!h.sweeping());
    assert_eq!(h.poll_timeout(), None);
}

#[test]
fn an_acquisition_ends_the_sweep_and_an_inspection_sent_before_it_is_ignored() {
    let t0 = crate::testing::epoch();
    let mut h = holder();
    the_op(&input(&mut h, t0, HolderInput::Acquire));
    tick(&mut h, t0 + OP_TIMEOUT);
    let (sweep, what) = the_op(&tick(&mut h, t0 + OP_TIMEOUT));
    assert_eq!(what, LeaseOp::Inspect);
    // A new acquisition goes out at once: no earlier request can touch the hold it makes.
    let (acq, what) = the_op(&input(&mut h, t0 + s(2), HolderInput::Acquire));
    assert_eq!(what, LeaseOp::Acquire);
    assert!(!h.sweeping(), "a new acquisition ends the sweep");
    reply(&mut h, t0 + s(2) + ms(10), acq, granted(6));
    // The inspection was applied after the grant and names the new hold: releasing it would
    // remove the hold this owner believes in. It is ignored.
    assert_eq!(
        reply(
            &mut h,
            t0 + s(2) + ms(50),
            sweep,
            BackendReply::Inspected {
                token: Some(FencingToken(6))
            }
        ),
        vec![]
    );
    assert!(h.check_lease(t0 + s(2) + ms(50)));
}
