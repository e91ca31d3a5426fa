//! The lease holder: one owner's view of one lease, as a pure state machine.
//!
//! ```text
//!             acquire()                 Granted
//!  Released ───────────▶ Acquiring ─────────────────▶ Held ──renew every heartbeat-interval──┐
//!     ▲  ▲                │  │ Denied                  │ ▲                                   │
//!     │  │                │  └──────────▶ Released     │ └── Renewed (or retried on failure ─┘
//!     │  │   Unknown /    │                            │      while inside the deadline)
//!     │  │   op timeout   ▼                            │
//!     │  └──────────── Releasing (abandon: no zombie)  ├── deadline passed ─▶ Lost(expired) ─▶ Releasing (abandon)
//!     │                   ▲                            ├── backend shows another owner ─▶ Lost(taken over)
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
//! - **One failed renewal does not lose the lease.** Failed or unanswered renewals are retried with
//!   backoff while the deadline has not passed. The lease is lost only at the deadline, or at once
//!   when the backend shows another owner. `Lost` is emitted exactly once per grant.
//! - **No zombie from an uncertain acquire.** An `Unknown` answer, or no answer within
//!   `lease-operation-timeout`, is reported as unknown (not acquired) and the lease is released in
//!   case the backend did grant it; a grant that arrives after its acquisition was given up is
//!   released too. A new acquisition waits until that clean-up is done. Because a request held
//!   up in the network (or in a paused server) can still be applied after that release was
//!   answered, the holder keeps **sweeping** — one ownerless release every heartbeat interval —
//!   until a sweep removes a hold, or until one TTL has passed since the uncertain attempt was
//!   sent (a hold created from it expires by then unless renewed, and nobody renews it). A sweep
//!   runs only while the lease is released here; a new acquisition ends it (a late grant then
//!   simply is this owner's hold), after the sweep in flight, if any, has answered. A
//!   `NotSent` answer (the request never left this process) is certain: not acquired, nothing
//!   to clean up.
//! - **Release is awaited and bounded.** It is retried with backoff until
//!   `lease-operation-timeout`; releasing a lease not held answers `NotHeld`. A release asked for
//!   while an acquisition is in flight waits for its answer first, so the release cannot overtake
//!   the grant at the backend.

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

use flotilla_core::{LeaseSettings, StateMachine};

pub mod table;
#[cfg(test)]
mod tests;

pub use table::{Hold, LeaseTable};

/// A fencing token: strictly increases every time the lease changes owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies one backend operation this machine asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(u64);

/// A backend operation for the driver to run. Every operation gets exactly one
/// [`HolderInput::Reply`]: the driver turns its own request timeout into [`BackendReply::Unknown`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOp {
    /// Take the lease for this owner (granted at once if this owner already holds it).
    Acquire,
    /// Extend this owner's hold by a full TTL.
    Renew {
        /// The token of the hold being renewed.
        token: FencingToken,
    },
    /// Give the lease up if this owner still holds it.
    Release {
        /// The token of the hold, if known.
        token: Option<FencingToken>,
    },
}

/// What the backend answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendReply {
    /// Acquire: granted to this owner.
    Granted {
        /// The hold's fencing token.
        token: FencingToken,
    },
    /// Renew: extended.
    Renewed,
    /// Acquire or renew: certainly held by someone else (or, for renew, no longer ours).
    Denied {
        /// The current holder, if the backend says.
        holder: Option<String>,
    },
    /// Release: done; `was_held` tells whether this owner still held it.
    Released {
        /// Whether the lease was still this owner's when released.
        was_held: bool,
    },
    /// No certain answer: an error, a timeout, an unreachable backend.
    Unknown {
        /// What happened, in words.
        reason: String,
    },
    /// The request never left this process — there is no connection to the backend yet —
    /// so nothing changed at the backend: certainly not granted, renewed or released.
    NotSent {
        /// Why, in words.
        reason: String,
    },
}

/// Inputs of the [`LeaseHolder`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolderInput {
    /// The caller wants the lease. Joins an acquisition in progress.
    Acquire,
    /// The caller gives the lease up. Joins a release in progress.
    Release,
    /// The backend answered an operation.
    Reply {
        /// Which operation.
        op: OpId,
        /// The answer.
        reply: BackendReply,
    },
}

/// How an acquisition ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// This owner holds the lease.
    Granted {
        /// The hold's fencing token.
        token: FencingToken,
    },
    /// Another owner certainly holds it.
    Denied {
        /// Who, if known.
        holder: Option<String>,
    },
    /// No certain answer: treat as not acquired. Any late grant is released.
    Unknown {
        /// Why.
        reason: String,
    },
}

/// How a release ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// Released: this owner held it and no longer does.
    Released,
    /// This owner did not hold it (nothing to do).
    NotHeld,
    /// No certain answer within `lease-operation-timeout`. The lease expires by its TTL at worst.
    Unknown {
        /// Why.
        reason: String,
    },
}

/// Why a held lease was lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostCause {
    /// The backend shows another owner (the lease was taken over or broken).
    TakenOver {
        /// The new holder, if known.
        holder: Option<String>,
    },
    /// No renewal was confirmed in time: the holder's deadline passed.
    Expired {
        /// How long ago the last confirmed renewal (or the grant) was sent.
        since_confirmed: Duration,
        /// The last renewal failure, if any.
        last_error: Option<String>,
    },
}

impl fmt::Display for LostCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TakenOver { holder: Some(h) } => write!(f, "the lease is now held by {h}"),
            Self::TakenOver { holder: None } => f.write_str("the lease is no longer ours"),
            Self::Expired {
                since_confirmed,
                last_error,
            } => {
                write!(f, "no renewal confirmed for {since_confirmed:?}")?;
                match last_error {
                    Some(e) => write!(f, " (last error: {e})"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Events for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseEvent {
    /// Granted after `took`.
    Acquired {
        /// The fencing token.
        token: FencingToken,
        /// From the acquire request to the grant.
        took: Duration,
    },
    /// A renewal was confirmed.
    Renewed {
        /// From the renew request to its confirmation.
        took: Duration,
    },
    /// A renewal failed; it is retried while the lease is still safely held.
    RenewalRetried {
        /// How many renewals failed in a row.
        attempt: u32,
        /// The failure.
        reason: String,
        /// Time left before the holder's deadline.
        remaining: Duration,
    },
    /// A held lease was lost. Exactly once per grant.
    Lost {
        /// Why.
        cause: LostCause,
    },
    /// A release finished.
    Released {
        /// From the first release request to the answer.
        took: Duration,
    },
    /// A release gave up without a certain answer.
    ReleaseFailed {
        /// The last failure.
        reason: String,
    },
}

/// Outputs of the [`LeaseHolder`], in the order produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HolderOutput {
    /// Run this operation against the backend and reply with its answer.
    Op {
        /// Its id, to quote in the reply.
        id: OpId,
        /// The operation.
        op: LeaseOp,
    },
    /// The acquisition every waiting `acquire` caller joined has ended.
    AcquireDone(AcquireOutcome),
    /// The release every waiting `release` caller joined has ended.
    ReleaseDone(ReleaseOutcome),
    /// Something to log and count.
    Event(LeaseEvent),
}

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
        token: Option<FencingToken>,
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

/// One owner's view of one lease. See the [module docs](self).
#[derive(Debug)]
pub struct LeaseHolder {
    settings: LeaseSettings,
    state: State,
    next_op: u64,
    /// Acquisitions given up as unknown whose reply has not come yet: a grant among them is
    /// released (unless this owner holds or is acquiring the lease again by then).
    abandoned: BTreeSet<OpId>,
    /// Sweeping for a zombie of an uncertain acquisition until this instant.
    sweep_until: Option<Instant>,
    /// When the next sweep is due.
    sweep_due: Option<Instant>,
    /// The sweep on its way, if any.
    sweep_op: Option<OpId>,
    /// An acquisition was asked for while a sweep was on its way: start it after the answer.
    acquire_after_sweep: bool,
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
            acquire_after_sweep: false,
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
        self.sweep_due = Some(first_due);
    }

    fn end_sweep(&mut self) {
        self.sweep_until = None;
        self.sweep_due = None;
        // A sweep still in flight is answered into the void: nothing depends on it.
        self.sweep_op = None;
    }

    fn on_sweep_reply(&mut self, now: Instant, reply: BackendReply) {
        self.sweep_op = None;
        if self.acquire_after_sweep {
            self.acquire_after_sweep = false;
            self.end_sweep();
            self.start_acquiring(now);
            return;
        }
        match reply {
            BackendReply::Released { was_held: true } => self.end_sweep(),
            _ => self.sweep_due = Some(now + self.settings.heartbeat_interval),
        }
    }

    fn start_acquiring(&mut self, now: Instant) {
        if self.sweep_op.is_some() {
            // Let the ownerless release in flight answer first, or it could remove this grant.
            self.acquire_after_sweep = true;
            return;
        }
        self.end_sweep();
        let op = self.op(LeaseOp::Acquire);
        self.state = State::Acquiring {
            op,
            sent: now,
            deadline: now + self.settings.operation_timeout(),
            then_release: false,
        };
    }

    fn start_releasing(&mut self, now: Instant, token: Option<FencingToken>, owed: bool) {
        let op = self.op(LeaseOp::Release { token });
        self.state = State::Releasing {
            token,
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
            State::Released if self.acquire_after_sweep => {} // joins the acquisition waiting
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
            State::Released if self.acquire_after_sweep => {
                // The waiting acquisition is called off: it was never sent.
                self.acquire_after_sweep = false;
                self.emit(HolderOutput::AcquireDone(AcquireOutcome::Unknown {
                    reason: "released before the acquisition was sent".into(),
                }));
                self.emit(HolderOutput::ReleaseDone(ReleaseOutcome::NotHeld));
            }
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
        if self.sweep_op == Some(op) {
            self.on_sweep_reply(now, reply);
            return;
        }
        match &self.state {
            State::Acquiring { op: current, .. } if *current == op => {
                self.on_acquire_reply(now, reply)
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
            // A reply to an operation this machine no longer waits for (a clean-up release, or
            // a superseded renewal): nothing depends on it.
            _ => {}
        }
    }

    /// A late answer to an acquisition that was given up as unknown.
    fn on_abandoned_reply(&mut self, now: Instant, reply: BackendReply) {
        let BackendReply::Granted { token } = reply else {
            return;
        };
        match self.state {
            // This owner wants the lease again (or has it): the late grant is its own hold.
            State::Acquiring { .. } | State::Held { .. } => {}
            State::Releasing { .. } => {} // a release of this owner's hold is already running
            State::Released => self.start_releasing(now, Some(token), false),
        }
    }

    fn on_acquire_reply(&mut self, now: Instant, reply: BackendReply) {
        let State::Acquiring {
            sent, then_release, ..
        } = self.state
        else {
            return;
        };
        match reply {
            BackendReply::Granted { token } if then_release => {
                self.emit(HolderOutput::AcquireDone(AcquireOutcome::Unknown {
                    reason: "released while the acquisition was in flight".into(),
                }));
                self.start_releasing(now, Some(token), true);
            }
            BackendReply::Granted { token } => {
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
            other @ (BackendReply::Renewed | BackendReply::Released { .. }) => {
                self.emit(HolderOutput::AcquireDone(AcquireOutcome::Unknown {
                    reason: format!("the backend answered an acquire with {other:?}"),
                }));
                self.start_releasing(now, None, then_release);
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
            other @ BackendReply::Released { .. } => {
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
            started,
            attempt,
            deadline,
            ..
        } = self.state
        else {
            return;
        };
        match reply {
            BackendReply::Released { was_held } => {
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
            other => {
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
            token,
            ..
        } = self.state
        else {
            return;
        };
        self.state = State::Released;
        if token.is_none() && outcome == ReleaseOutcome::Released {
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
                    self.sweep_op = Some(self.op(LeaseOp::Release { token: None }));
                }
            }
            State::Acquiring {
                op,
                sent,
                deadline,
                then_release,
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
                    let op = self.op(LeaseOp::Release { token });
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
