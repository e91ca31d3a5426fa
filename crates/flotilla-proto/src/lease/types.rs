//! The holder's vocabulary: what it asks of a backend, what a backend answers, and what the
//! holder tells its callers.

use std::fmt;
use std::time::Duration;

/// A fencing token: strictly increases with every grant of the lease — every hold has its own,
/// also when the same owner acquires the lease again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FencingToken(pub u64);

impl fmt::Display for FencingToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Identifies one backend operation this machine asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub(super) u64);

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
    /// Give up this owner's hold `token`, if the lease is still that hold.
    Release {
        /// The hold to give up. A release always names its hold: one applied late (after its
        /// caller gave up waiting) can then never remove a later hold of the same owner.
        token: FencingToken,
    },
    /// Tell the token of this owner's live hold, if it has one (to clean up a hold whose
    /// acquisition had no certain answer).
    Inspect,
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
    /// Inspect: the token of this owner's live hold, if it has one.
    Inspected {
        /// The hold's token; `None` when the lease is free, expired or another owner's.
        token: Option<FencingToken>,
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

/// Inputs of the [`LeaseHolder`](super::LeaseHolder).
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

/// Outputs of the [`LeaseHolder`](super::LeaseHolder), in the order produced.
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
