//! The [`Actor`] trait and what a failure is.

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use flotilla_core::ActorPath;

use crate::actor_ref::ActorId;
use crate::context::Context;

/// What a handler returns when it fails: any error, boxed. `?` works on every error type.
pub type ActorError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A typed actor: state plus an async handler for one message type.
///
/// The runtime calls the methods of one instance one at a time, never concurrently, so `&mut self`
/// needs no locking. Call order of one instance:
///
/// ```text
/// pre_start ─▶ [post_restart, if this instance replaced a failed one]
///           ─▶ handle / on_terminated …  (interleaved, one at a time)
///           ─▶ pre_restart (this instance failed and is replaced)  |  post_stop (the actor stopped)
/// ```
///
/// A handler that returns `Err` or panics fails the actor; what happens next is decided by the
/// actor's [`SupervisorStrategy`](crate::SupervisorStrategy). Handlers must not block the thread;
/// a handler that never returns holds the actor (and its shutdown) forever.
pub trait Actor: Send + Sized + 'static {
    /// The messages this actor accepts.
    type Msg: Send + 'static;

    /// Handles one message.
    fn handle(
        &mut self,
        msg: Self::Msg,
        ctx: &mut Context<Self::Msg>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send;

    /// Runs before the first message of every new instance (also after a restart).
    fn pre_start(
        &mut self,
        ctx: &mut Context<Self::Msg>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = ctx;
        async { Ok(()) }
    }

    /// Runs on a new instance that replaced a failed one, after its `pre_start`.
    fn post_restart(
        &mut self,
        ctx: &mut Context<Self::Msg>,
        cause: &Failure,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = (ctx, cause);
        async { Ok(()) }
    }

    /// Runs on a failed instance before it is replaced. Its children are stopped right after.
    fn pre_restart(
        &mut self,
        ctx: &mut Context<Self::Msg>,
        cause: &Failure,
    ) -> impl Future<Output = ()> + Send {
        let _ = (ctx, cause);
        async {}
    }

    /// Runs once when the actor stops, after all its children have stopped.
    fn post_stop(&mut self, ctx: &mut Context<Self::Msg>) -> impl Future<Output = ()> + Send {
        let _ = ctx;
        async {}
    }

    /// A watched actor stopped. Delivered exactly once per watch, never after `unwatch`.
    ///
    /// The default fails this actor with a [`DeathPact`] error, as an unhandled `Terminated` does
    /// in Akka: an actor that watches another and does not say what to do when it dies should not
    /// carry on as if nothing happened.
    fn on_terminated(
        &mut self,
        terminated: Terminated,
        ctx: &mut Context<Self::Msg>,
    ) -> impl Future<Output = Result<(), ActorError>> + Send {
        let _ = ctx;
        async move { Err(Box::new(DeathPact(terminated.path)) as ActorError) }
    }
}

/// A watched actor has stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    /// The stopped actor's id (compare with [`ActorRef::id`](crate::ActorRef::id)).
    pub id: ActorId,
    /// Where it lived.
    pub path: ActorPath,
}

/// The error an unhandled [`Terminated`] fails the watcher with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("watched actor {0} stopped and the watcher does not handle Terminated (death pact)")]
pub struct DeathPact(pub ActorPath);

/// Why an actor failed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Failure {
    /// A handler or hook returned an error.
    Error(Arc<dyn std::error::Error + Send + Sync + 'static>),
    /// A handler or hook panicked; the payload's text.
    Panic(String),
    /// A child failed and its strategy escalated the failure to this actor.
    Escalated {
        /// The child that failed (and has stopped).
        child: ActorPath,
        /// Its failure.
        cause: Box<Self>,
    },
}

impl Failure {
    pub(crate) fn from_error(e: ActorError) -> Self {
        Self::Error(Arc::from(e))
    }

    /// True when the failure was a panic.
    pub fn is_panic(&self) -> bool {
        matches!(self, Self::Panic(_))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error(e) => write!(f, "{e}"),
            Self::Panic(p) => write!(f, "panicked: {p}"),
            Self::Escalated { child, cause } => write!(f, "child {child} failed: {cause}"),
        }
    }
}

/// The message type of an actor that accepts no messages (the guardians).
#[derive(Debug)]
pub enum Never {}
