//! The lease holder: one owner's view of one lease, as a pure state machine.
//!
//! ```text
//!             acquire()                 Granted
//!  Released ───────────▶ Acquiring ─────────────────▶ Held ──renew every heartbeat-interval──┐
//!     ▲  ▲                │  │ Denied                  │ ▲                                   │
//!     │  │                │  └──────────▶ Released     │ └── Renewed (or retried on failure ─┘
//!     │  │   Unknown /    │                            │      while inside the deadline)
//!     │  │   op timeout   ▼                            │
//!     │  └──────────── Releasing (clean-up: find      ├── deadline passed ─▶ Lost(expired) ─▶ Releasing
//!     │                   ▲       the hold, release)   ├── backend shows another owner ─▶ Lost(taken over)
//!     └─── release done ──┴──────── release() ─────────┘
//! ```
//!
//! Inputs ([`HolderInput`]): the caller's `Acquire` and `Release`, and the backend's replies to
//! the operations this machine asked for. Outputs ([`HolderOutput`]): backend operations to run
//! (each with an [`OpId`]; replies to superseded operations are recognised and handled or
//! ignored), the outcome of each acquisition and release for the callers, and events.
//!
//! Rules this machine enforces:
//! - **The held deadline counts from when a request was sent**, never from when its reply came:
//!   `sent + heartbeat-timeout − safety-margin`. [`LeaseHolder::check_lease`] is true only before
//!   it.
//! - **Every operation names its hold.** Every grant is a hold of its own with a new fencing
//!   token (also when this owner acquires the lease again); renewals and releases carry the
//!   token of the hold they mean. A request can be applied long after its caller gave up on it
//!   (held up in the network, or in a paused server): named so, it can only ever touch the hold
//!   it was meant for, never a later one that this owner believes in.
//! - **One failed renewal does not lose the lease.** Failed or unanswered renewals are retried with
//!   backoff while the deadline has not passed. The lease is lost only at the deadline, or at once
//!   when the backend shows another owner. `Lost` is emitted exactly once per grant.
//! - **No zombie from an uncertain acquire.** An `Unknown` answer, or no answer within
//!   `lease-operation-timeout`, is reported as unknown (not acquired), and the holder cleans up:
//!   it asks the backend for this owner's hold (`Inspect`) and releases the hold it names. A
//!   grant that arrives after its acquisition was given up is released too. Because the
//!   uncertain request may still be applied after that, the holder keeps **sweeping** — one
//!   inspection (and release of what it finds) every heartbeat interval while the lease is
//!   released here — until a sweep removes a hold, or until one TTL has passed since the
//!   uncertain attempt was sent. A new acquisition ends the sweep; an answer to an inspection
//!   sent before it is ignored. A `NotSent` answer (the request never left this process) is
//!   certain: not acquired, nothing to clean up.
//! - **Release is awaited and bounded.** It is retried with backoff until
//!   `lease-operation-timeout`; releasing a lease not held answers `NotHeld`. A release asked for
//!   while an acquisition is in flight waits for its answer first, so the release cannot overtake
//!   the grant at the backend.
//!
//! The safety argument, and the assumptions it rests on, are in `docs/design/leases.md`.

use std::collections::{BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use flotilla_core::{LeaseSettings, StateMachine};

pub mod table;
#[cfg(test)]
mod tests;
mod types;

pub use table::{Hold, LeaseTable};
pub use types::{
    AcquireOutcome, BackendReply, FencingToken, HolderInput, HolderOutput, LeaseEvent, LeaseOp,
    LostCause, OpId, ReleaseOutcome,
};

#[derive(Debug)]
enum Renewal {
    /// The next renewal is due at this instant.
    Idle { due: Instant },
    /// A renewal is on its way.
    InFlight { op: OpId, sent: Instant },
    /// The last renewal failed; the next try is due at this instant.
    Backoff { due: Instant },
}

#[derive(Debug)]
enum State {
    /// Not held (never acquired, released, or lost and cleaned up).
    Released,
    /// An acquisition is on its way.
    Acquiring {
        op: OpId,
        sent: Instant,
        deadline: Instant,
        /// A release was asked for meanwhile: release once the acquire has answered.
        then_release: bool,
        /// The highest grant of an earlier, abandoned acquisition that answered meanwhile: it
        /// may have replaced the hold this acquisition makes.
        late_grant: Option<FencingToken>,
    },
    /// Held until `confirmed + ttl - margin`.
    Held {
        token: FencingToken,
        /// When the last confirmed acquire or renewal was sent.
        confirmed: Instant,
        renewal: Renewal,
        failures: u32,
        last_error: Option<String>,
    },
    /// Giving the lease up (for a caller, or to clean up after an uncertain or lost hold).
    Releasing {
        /// The hold to release; `None` while it is being looked up (`Inspect`), after an
        /// acquisition without a certain answer.
        token: Option<FencingToken>,
        /// Started without a token: a clean-up after an uncertain acquisition.
        cleanup: bool,
        op: Option<OpId>,
        retry_at: Option<Instant>,
        attempt: u32,
        started: Instant,
        deadline: Instant,
        /// A caller awaits the outcome.
        owed: bool,
        /// An acquisition was asked for meanwhile: start it once the release is done.
        then_acquire: bool,
        last_error: Option<String>,
    },
}

/// A sweep's request on its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SweepOp {
    /// Asking for this owner's hold.
    Inspect(OpId),
    /// Releasing the hold an inspection found.
    Release(OpId),
}

impl SweepOp {
    fn id(self) -> OpId {
        match self {
            Self::Inspect(op) | Self::Release(op) => op,
        }
    }
}

/// One owner's view of one lease. See the [module docs](self).
#[derive(Debug)]
pub struct LeaseHolder {
    settings: LeaseSettings,
    state: State,
    next_op: u64,
    /// Acquisitions given up as unknown whose reply has not come yet: a grant among them is
    /// released (or, while acquiring again, taken as this acquisition's hold).
    abandoned: BTreeSet<OpId>,
    /// Sweeping for a zombie of an uncertain acquisition until this instant.
    sweep_until: Option<Instant>,
    /// When the next sweep is due.
    sweep_due: Option<Instant>,
    /// The sweep's request on its way, if any.
    sweep_op: Option<SweepOp>,
    outputs: VecDeque<HolderOutput>,
}

impl LeaseHolder {
    /// A holder that does not hold the lease.
    pub fn new(settings: LeaseSettings) -> Self {
        Self {
            settings,
            state: State::Released,
            next_op: 0,
            abandoned: BTreeSet::new(),
            sweep_until: None,
            sweep_due: None,
            sweep_op: None,
            outputs: VecDeque::new(),
        }
    }

    /// True only while this owner is certain it holds the lease.
    pub fn check_lease(&self, now: Instant) -> bool {
        matches!(&self.state, State::Held { confirmed, .. } if now < self.held_deadline(*confirmed))
    }

    /// The fencing token of the current hold.
    pub fn token(&self) -> Option<FencingToken> {
        match &self.state {
            State::Held { token, .. } => Some(*token),
            _ => None,
        }
    }

    /// The state's name, for logs and the management API.
    pub fn state_name(&self) -> &'static str {
        match &self.state {
            State::Released => "released",
            State::Acquiring { .. } => "acquiring",
            State::Held { .. } => "held",
            State::Releasing { .. } => "releasing",
        }
    }

    fn held_deadline(&self, confirmed: Instant) -> Instant {
        confirmed + self.settings.heartbeat_timeout - self.settings.effective_safety_margin()
    }

    fn op(&mut self, op: LeaseOp) -> OpId {
        let id = OpId(self.next_op);
        self.next_op += 1;
        self.outputs.push_back(HolderOutput::Op { id, op });
        id
    }

    fn emit(&mut self, o: HolderOutput) {
        self.outputs.push_back(o);
    }

    fn event(&mut self, e: LeaseEvent) {
        self.outputs.push_back(HolderOutput::Event(e));
    }

    /// Whether a sweep for a zombie grant is still going on.
    pub fn sweeping(&self) -> bool {
        self.sweep_until.is_some()
    }

    /// An acquisition sent at `sent` got no certain answer: sweep for one TTL from then.
    fn start_sweep(&mut self, sent: Instant, first_due: Instant) {
        let until = sent + self.settings.heartbeat_timeout;
        self.sweep_until = Some(self.sweep_until.map_or(until, |u| u.max(until)));
        self.sweep_due = Some(self.sweep_due.map_or(first_due, |d| d.min(first_due)));
    }

    fn end_sweep(&mut self) {
        self.sweep_until = None;
        self.sweep_due = None;
        // A sweep still in flight is answered into the void: an inspection sent before an
        // acquisition could name the hold that acquisition makes.
        self.sweep_op = None;
    }

    fn on_sweep_reply(&mut self, now: Instant, step: SweepOp, reply: BackendReply) {
        self.sweep_op = None;
        let next = now + self.settings.heartbeat_interval;
        match (step, reply) {
            // Only while released here: then no acquisition was sent since the inspection, and
            // any hold of this owner is one nobody here believes in.
            (SweepOp::Inspect(_), BackendReply::Inspected { token: Some(token) })
                if matches!(self.state, State::Released) =>
            {
                self.sweep_op = Some(SweepOp::Release(self.op(LeaseOp::Release { token })));
            }
            (SweepOp::Release(_), BackendReply::Released { was_held: true }) => self.end_sweep(),
            _ => self.sweep_due = Some(next),
        }
    }

    fn start_acquiring(&mut self, now: Instant) {
        self.end_sweep();
        let op = self.op(LeaseOp::Acquire);
        self.state = State::Acquiring {
            op,
            sent: now,
            deadline: now + self.settings.operation_timeout(),
            then_release: false,
            late_grant: None,
        };
    }

    /// Releases hold `token`, or (`None`) looks this owner's hold up first and releases that.
    fn start_releasing(&mut self, now: Instant, token: Option<FencingToken>, owed: bool) {
        let op = self.op(token.map_or(LeaseOp::Inspect, |token| LeaseOp::Release { token }));
        self.state = State::Releasing {
            token,
            cleanup: token.is_none(),
            op: Some(op),
            retry_at: None,
            attempt: 1,
            started: now,
            deadline: now + self.settings.operation_timeout(),
            owed,
            then_acquire: false,
            last_error: None,
        };
    }

    fn hold(&mut self, token: FencingToken, sent: Instant) {
        self.state = State::Held {
            token,
            confirmed: sent,
            renewal: Renewal::Idle {
                due: sent + self.settings.heartbeat_interval,
            },
            failures: 0,
            last_error: None,
        };
    }

    /// Backoff before renewal retry `attempt` (1-based): a tenth of the interval, doubling, at most
    /// half the interval.
    fn renew_backoff(&self, attempt: u32) -> Duration {
        let base = (self.settings.heartbeat_interval / 10).max(Duration::from_millis(10));
        let cap = self.settings.heartbeat_interval / 2;
        base.saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(cap)
    }

    /// Backoff before release retry `attempt` (1-based): 100 ms doubling, at most 1 s.
    fn release_backoff(attempt: u32) -> Duration {
        Duration::from_millis(100)
            .saturating_mul(1 << attempt.saturating_sub(1).min(16))
            .min(Duration::from_secs(1))
    }

    fn on_acquire(&mut self, now: Instant) {
        match &mut self.state {
            State::Released => self.start_acquiring(now),
            State::Acquiring { .. } => {} // joins the acquisition in progress
            State::Held { token, .. } => {
                let token = *token;
                self.emit(HolderOutput::AcquireDone(AcquireOutcome::Granted { token }));
            }
            State::Releasing { then_acquire, .. } => *then_acquire = true,
        }
    }

    fn on_release(&mut self, now: Instant) {
        match &mut self.state {
            State::Released => self.emit(HolderOutput::ReleaseDone(ReleaseOutcome::NotHeld)),
            State::Acquiring { then_release, .. } => *then_release = true,
            State::Held { token, .. } => {
                let token = *token;
                self.start_releasing(now, Some(token), true);
            }
            State::Releasing {
                owed, then_acquire, ..
            } => {
                *owed = true;
                *then_acquire = false;
            }
        }
    }

    fn on_reply(&mut self, now: Instant, op: OpId, reply: BackendReply) {
        if self.abandoned.remove(&op) {
            self.on_abandoned_reply(now, reply);
            return;
        }
        if let Some(step) = self.sweep_op.filter(|s| s.id() == op) {
            self.on_sweep_reply(now, step, reply);
            return;
        }
        match &self.state {
            State::Acquiring { op: current, .. } if *current == op => {
                self.on_acquire_reply(now, reply);
            }
            State::Held {
                renewal: Renewal::InFlight { op: current, .. },
                ..
            } if *current == op => {
                self.on_renew_reply(now, reply);
            }
            State::Releasing {
                op: Some(current), ..
            } if *current == op => {
                self.on_release_reply(now, reply);
            }
            // A reply to an operation this machine no longer waits for (a clean-up release, a
            // superseded renewal, an inspection sent before an acquisition): nothing depends
            // on it.
            _ => {}
        }
    }

    /// A late answer to an acquisition that was given up as unknown.
    fn on_abandoned_reply(&mut self, now: Instant, reply: BackendReply) {
        let BackendReply::Granted { token } = reply else {
            return;
        };
        match &mut self.state {
            State::Released => self.start_releasing(now, Some(token), false),
            State::Acquiring { late_grant, .. } => {
                *late_grant = Some(late_grant.map_or(token, |t| t.max(token)));
            }
            State::Held { token: held, .. } if token > *held => {
                // Applied after this hold was granted: the late grant replaced it at the
                // backend. The new hold is this owner's too, so nobody else can have taken the
                // lease meanwhile; but the hold believed in is gone, and renewing it would fail.
                self.event(LeaseEvent::Lost {
                    cause: LostCause::TakenOver { holder: None },
                });
                self.start_releasing(now, Some(token), false);
            }
            // Applied before the current hold, which replaced it: nothing is left of it.
            State::Held { .. } => {}
            State::Releasing { .. } => {
                // Not the hold being released: find and release it once released here.
                self.start_sweep(now, now);
            }
        }
    }

    fn on_acquire_reply(&mut self, now: Instant, reply: BackendReply) {
        let State::Acquiring {
            sent,
            then_release,
            late_grant,
            ..
        } = self.state
        else {
            return;
        };
        match reply {
            BackendReply::Granted { token } => {
                // A late grant of an earlier acquisition applied after this one replaced its
                // hold; that hold is this owner's, granted after this request was sent, so it
                // lasts at least as long as this one would have.
                let token = late_grant.map_or(token, |late| late.max(token));
                if then_release {
                    self.emit(HolderOutput::AcquireDone(AcquireOutcome::Unknown {
                        reason: "released while the acquisition was in flight".into(),
                    }));
                    self.start_releasing(now, Some(token), true);
                    return;
                }
                self.hold(token, sent);
                self.event(LeaseEvent::Acquired {
                    token,
                    took: now.saturating_duration_since(sent),
                });
                self.emit(HolderOutput::AcquireDone(AcquireOutcome::Granted { token }));
            }
            BackendReply::Denied { holder } => {
                self.state = State::Released;
                self.emit(HolderOutput::AcquireDone(AcquireOutcome::Denied { holder }));
                if then_release {
                    self.emit(HolderOutput::ReleaseDone(ReleaseOutcome::NotHeld));
                }
            }
            BackendReply::Unknown { reason } => {
                self.emit(HolderOutput::AcquireDone(AcquireOutcome::Unknown {
                    reason,
                }));
                self.start_releasing(now, None, then_release);
                self.start_sweep(sent, now + self.settings.heartbeat_interval);
            }
            BackendReply::NotSent { reason } => {
                // Nothing reached the backend: no hold can have come of it, nothing to clean up.
                self.state = State::Released;
                self.emit(HolderOutput::AcquireDone(AcquireOutcome::Unknown {
                    reason,
                }));
                if then_release {
                    self.emit(HolderOutput::ReleaseDone(ReleaseOutcome::NotHeld));
                }
            }
            other @ (BackendReply::Renewed
            | BackendReply::Released { .. }
            | BackendReply::Inspected { .. }) => {
                self.emit(HolderOutput::AcquireDone(AcquireOutcome::Unknown {
                    reason: format!("the backend answered an acquire with {other:?}"),
                }));
                self.start_releasing(now, None, then_release);
                self.start_sweep(sent, now + self.settings.heartbeat_interval);
            }
        }
    }

    fn on_renew_reply(&mut self, now: Instant, reply: BackendReply) {
        let State::Held {
            renewal: Renewal::InFlight { sent, .. },
            ..
        } = self.state
        else {
            return;
        };
        match reply {
            BackendReply::Renewed | BackendReply::Granted { .. } => {
                if let State::Held {
                    confirmed,
                    renewal,
                    failures,
                    last_error,
                    ..
                } = &mut self.state
                {
                    *confirmed = sent;
                    *renewal = Renewal::Idle {
                        due: sent + self.settings.heartbeat_interval,
                    };
                    *failures = 0;
                    *last_error = None;
                }
                self.event(LeaseEvent::Renewed {
                    took: now.saturating_duration_since(sent),
                });
            }
            BackendReply::Denied { holder } => {
                self.state = State::Released;
                self.event(LeaseEvent::Lost {
                    cause: LostCause::TakenOver { holder },
                });
            }
            BackendReply::Unknown { reason } | BackendReply::NotSent { reason } => {
                self.renewal_failed(now, reason);
            }
            other @ (BackendReply::Released { .. } | BackendReply::Inspected { .. }) => {
                self.renewal_failed(
                    now,
                    format!("the backend answered a renewal with {other:?}"),
                );
            }
        }
    }

    fn renewal_failed(&mut self, now: Instant, reason: String) {
        let State::Held {
            confirmed,
            failures,
            ..
        } = self.state
        else {
            return;
        };
        let deadline = self.held_deadline(confirmed);
        let attempt = failures + 1;
        let due = (now + self.renew_backoff(attempt)).min(deadline);
        if let State::Held {
            renewal,
            failures,
            last_error,
            ..
        } = &mut self.state
        {
            *renewal = Renewal::Backoff { due };
            *failures = attempt;
            *last_error = Some(reason.clone());
        }
        self.event(LeaseEvent::RenewalRetried {
            attempt,
            reason,
            remaining: deadline.saturating_duration_since(now),
        });
    }

    fn on_release_reply(&mut self, now: Instant, reply: BackendReply) {
        let State::Releasing {
            token,
            started,
            attempt,
            deadline,
            ..
        } = self.state
        else {
            return;
        };
        match (token, reply) {
            (_, BackendReply::Released { was_held }) => {
                self.event(LeaseEvent::Released {
                    took: now.saturating_duration_since(started),
                });
                let outcome = if was_held {
                    ReleaseOutcome::Released
                } else {
                    ReleaseOutcome::NotHeld
                };
                self.finish_release(now, outcome);
            }
            // The clean-up's inspection: release the hold it names, at once.
            (None, BackendReply::Inspected { token: Some(found) }) => {
                let op = self.op(LeaseOp::Release { token: found });
                if let State::Releasing {
                    token, op: current, ..
                } = &mut self.state
                {
                    *token = Some(found);
                    *current = Some(op);
                }
            }
            (None, BackendReply::Inspected { token: None }) => {
                self.finish_release(now, ReleaseOutcome::NotHeld);
            }
            (_, other) => {
                let reason = match other {
                    BackendReply::Unknown { reason } | BackendReply::NotSent { reason } => reason,
                    other => format!("the backend answered a release with {other:?}"),
                };
                let retry = now + Self::release_backoff(attempt);
                if let State::Releasing {
                    op,
                    retry_at,
                    last_error,
                    ..
                } = &mut self.state
                {
                    *op = None;
                    *last_error = Some(reason);
                    if retry < deadline {
                        *retry_at = Some(retry);
                    }
                }
                if retry >= deadline {
                    self.give_up_release(now);
                }
            }
        }
    }

    fn give_up_release(&mut self, now: Instant) {
        let State::Releasing { last_error, .. } = &self.state else {
            return;
        };
        let reason = last_error
            .clone()
            .unwrap_or_else(|| format!("no answer within {:?}", self.settings.operation_timeout()));
        self.event(LeaseEvent::ReleaseFailed {
            reason: reason.clone(),
        });
        self.finish_release(now, ReleaseOutcome::Unknown { reason });
    }

    fn finish_release(&mut self, now: Instant, outcome: ReleaseOutcome) {
        let State::Releasing {
            owed,
            then_acquire,
            cleanup,
            ..
        } = self.state
        else {
            return;
        };
        self.state = State::Released;
        if cleanup && outcome == ReleaseOutcome::Released {
            self.end_sweep(); // the clean-up removed the zombie itself
        }
        if owed {
            self.emit(HolderOutput::ReleaseDone(outcome));
        }
        if then_acquire {
            self.start_acquiring(now);
        }
    }

    fn lose(&mut self, now: Instant) {
        let State::Held {
            token,
            confirmed,
            last_error,
            ..
        } = &self.state
        else {
            return;
        };
        let (token, confirmed, last_error) = (*token, *confirmed, last_error.clone());
        self.event(LeaseEvent::Lost {
            cause: LostCause::Expired {
                since_confirmed: now.saturating_duration_since(confirmed),
                last_error,
            },
        });
        // The backend may still count the lease as ours (renewals applied, answers lost):
        // release it so that nobody waits for the TTL.
        self.start_releasing(now, Some(token), false);
    }
}

impl StateMachine for LeaseHolder {
    type Input = HolderInput;
    type Output = HolderOutput;

    fn handle(&mut self, now: Instant, input: HolderInput) {
        match input {
            HolderInput::Acquire => self.on_acquire(now),
            HolderInput::Release => self.on_release(now),
            HolderInput::Reply { op, reply } => self.on_reply(now, op, reply),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match &self.state {
            State::Released => {
                if self.sweep_until.is_some_and(|until| now >= until) {
                    if self.sweep_op.is_none() {
                        self.end_sweep();
                    }
                } else if self.sweep_op.is_none() && self.sweep_due.is_some_and(|d| now >= d) {
                    self.sweep_due = None;
                    self.sweep_op = Some(SweepOp::Inspect(self.op(LeaseOp::Inspect)));
                }
            }
            State::Acquiring {
                op,
                sent,
                deadline,
                then_release,
                ..
            } => {
                if now >= *deadline {
                    let (op, then_release, sent) = (*op, *then_release, *sent);
                    self.abandoned.insert(op);
                    self.state = State::Released;
                    self.start_sweep(sent, now);
                    let reason =
                        format!("no answer within {:?}", self.settings.operation_timeout());
                    self.emit(HolderOutput::AcquireDone(AcquireOutcome::Unknown {
                        reason: reason.clone(),
                    }));
                    if then_release {
                        self.emit(HolderOutput::ReleaseDone(ReleaseOutcome::Unknown {
                            reason,
                        }));
                    }
                }
            }
            State::Held {
                token,
                confirmed,
                renewal,
                ..
            } => {
                let (token, confirmed) = (*token, *confirmed);
                if now >= self.held_deadline(confirmed) {
                    self.lose(now);
                    return;
                }
                let due = match renewal {
                    Renewal::Idle { due } | Renewal::Backoff { due } => Some(*due),
                    Renewal::InFlight { .. } => None,
                };
                if due.is_some_and(|due| now >= due) {
                    let op = self.op(LeaseOp::Renew { token });
                    if let State::Held { renewal, .. } = &mut self.state {
                        *renewal = Renewal::InFlight { op, sent: now };
                    }
                }
            }
            State::Releasing {
                retry_at,
                deadline,
                token,
                attempt,
                ..
            } => {
                if now >= *deadline {
                    self.give_up_release(now);
                } else if retry_at.is_some_and(|at| now >= at) {
                    let (token, attempt) = (*token, *attempt);
                    let op =
                        self.op(token.map_or(LeaseOp::Inspect, |token| LeaseOp::Release { token }));
                    if let State::Releasing {
                        op: current,
                        retry_at,
                        attempt: a,
                        ..
                    } = &mut self.state
                    {
                        *current = Some(op);
                        *retry_at = None;
                        *a = attempt + 1;
                    }
                }
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Released if self.sweep_op.is_some() => None,
            State::Released => self
                .sweep_due
                .zip(self.sweep_until)
                .map(|(due, until)| due.min(until)),
            State::Acquiring { deadline, .. } => Some(*deadline),
            State::Held {
                confirmed, renewal, ..
            } => {
                let deadline = self.held_deadline(*confirmed);
                Some(match renewal {
                    Renewal::Idle { due } | Renewal::Backoff { due } => (*due).min(deadline),
                    Renewal::InFlight { .. } => deadline,
                })
            }
            State::Releasing {
                retry_at, deadline, ..
            } => Some(retry_at.map_or(*deadline, |r| r.min(*deadline))),
        }
    }

    fn poll_output(&mut self) -> Option<HolderOutput> {
        self.outputs.pop_front()
    }
}
