//! Typed handles to actors: `tell`, `send`, `ask`.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use flotilla_core::ActorPath;
use tokio::sync::oneshot;

use crate::cell::{Cell, Erased, Signal};
use crate::remote::RemoteRef;

/// Identifies one actor incarnation within a system. Two actors that lived at the same path one
/// after the other have different ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActorId(pub(crate) u64);

impl fmt::Display for ActorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Why an `ask` gave no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AskError {
    /// No reply within the timeout. The target may still be working on it.
    #[error("no reply from {target} within {timeout:?}")]
    Timeout {
        /// Who was asked.
        target: ActorPath,
        /// How long the caller waited.
        timeout: Duration,
    },
    /// The target had stopped, or stopped before replying; the question went to dead letters or
    /// was dropped with its mailbox.
    #[error("{target} is stopped: the question was not answered")]
    TargetDead {
        /// Who was asked.
        target: ActorPath,
    },
    /// The target is alive but dropped the reply handle without answering.
    #[error("{target} dropped the reply handle without answering")]
    NoReply {
        /// Who was asked.
        target: ActorPath,
    },
    /// The target's bounded mailbox was full and drops new messages.
    #[error("{target}'s mailbox is full: the question went to dead letters")]
    MailboxFull {
        /// Who was asked.
        target: ActorPath,
    },
}

/// The reply handle carried inside an `ask` message. Answer with [`ReplyTo::send`].
///
/// It travels to other nodes too: inside a message sent to a remote actor it is serialized as a
/// reference to the waiting asker, and the remote actor's answer comes back over the network
/// (the reply type must then be `Serialize + DeserializeOwned`).
pub struct ReplyTo<R>(pub(crate) ReplyInner<R>);

pub(crate) enum ReplyInner<R> {
    /// The asker waits on this node. The sender is taken out when the handle is serialized for
    /// another node (the asker's side then waits for the answer from the network).
    Local(std::sync::Mutex<Option<oneshot::Sender<R>>>),
    /// The asker waits on another node: the answer is serialized and sent there.
    Remote(Box<dyn FnOnce(R) -> bool + Send>),
}

impl<R> fmt::Debug for ReplyTo<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.0 {
            ReplyInner::Local(_) => "ReplyTo(local)",
            ReplyInner::Remote(_) => "ReplyTo(remote)",
        })
    }
}

impl<R> ReplyTo<R> {
    /// Sends the answer. Returns false when the asker has stopped waiting (for example after
    /// its timeout) or cannot be reached; the answer is then dropped.
    pub fn send(self, reply: R) -> bool {
        match self.0 {
            ReplyInner::Local(tx) => tx
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some_and(|tx| tx.send(reply).is_ok()),
            ReplyInner::Remote(send) => send(reply),
        }
    }

    /// A reply handle and the receiver it answers to, for code that forwards a question.
    pub fn channel() -> (Self, oneshot::Receiver<R>) {
        let (tx, rx) = oneshot::channel();
        (Self(ReplyInner::Local(std::sync::Mutex::new(Some(tx)))), rx)
    }
}

/// A typed handle to an actor, on this node or another. Cheap to clone; compares by actor
/// identity. `tell`, `ask` and [`Context::watch`](crate::Context::watch) work the same on both;
/// see [`ActorSystem::remote_ref`](crate::ActorSystem::remote_ref) for references to remote
/// actors.
pub struct ActorRef<M: Send + 'static> {
    pub(crate) target: Target<M>,
}

pub(crate) enum Target<M: Send + 'static> {
    Local(Arc<Cell<M>>),
    Remote(Arc<RemoteRef<M>>),
    /// Another actor, reached through a conversion (see [`ActorRef::adapt`]).
    Adapted(Arc<dyn Adapter<M>>),
}

type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// An actor of another message type, seen through a conversion.
pub(crate) trait Adapter<M>: Send + Sync + 'static {
    fn tell(&self, msg: M);
    fn send(&self, msg: M) -> BoxFuture<'_, bool>;
    fn stop(&self);
    fn stop_now(&self);
    fn stopped(&self) -> BoxFuture<'_, ()>;
    fn is_stopped(&self) -> bool;
    fn path(&self) -> &ActorPath;
    fn id(&self) -> ActorId;
    fn erased(&self) -> Arc<dyn Erased>;
}

struct Mapped<M, N: Send + 'static> {
    inner: ActorRef<N>,
    convert: Box<dyn Fn(M) -> N + Send + Sync>,
}

impl<M: Send + 'static, N: Send + 'static> Adapter<M> for Mapped<M, N> {
    fn tell(&self, msg: M) {
        self.inner.tell((self.convert)(msg));
    }

    fn send(&self, msg: M) -> BoxFuture<'_, bool> {
        let msg = (self.convert)(msg);
        Box::pin(self.inner.send(msg))
    }

    fn stop(&self) {
        self.inner.stop();
    }

    fn stop_now(&self) {
        self.inner.stop_now();
    }

    fn stopped(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.inner.stopped())
    }

    fn is_stopped(&self) -> bool {
        self.inner.is_stopped()
    }

    fn path(&self) -> &ActorPath {
        self.inner.path()
    }

    fn id(&self) -> ActorId {
        self.inner.id()
    }

    fn erased(&self) -> Arc<dyn Erased> {
        self.inner.erased()
    }
}

impl<M: Send + 'static> Clone for ActorRef<M> {
    fn clone(&self) -> Self {
        Self {
            target: match &self.target {
                Target::Local(c) => Target::Local(Arc::clone(c)),
                Target::Remote(r) => Target::Remote(Arc::clone(r)),
                Target::Adapted(a) => Target::Adapted(Arc::clone(a)),
            },
        }
    }
}

impl<M: Send + 'static> ActorRef<M> {
    /// Sends a message without waiting. Messages from one sender arrive in the order sent.
    ///
    /// Never blocks. A message that cannot be enqueued (the actor has stopped, or its bounded
    /// mailbox is full) goes to dead letters: counted, published and logged — never silently lost.
    ///
    /// To a remote actor, the message is serialized and sent at most once; one that cannot be
    /// encoded or sent goes to dead letters the same way.
    #[inline]
    pub fn tell(&self, msg: M) {
        match &self.target {
            Target::Local(cell) => {
                if let Err((msg, reason)) = cell.mailbox.try_send(msg) {
                    cell.dead_letter(msg, reason);
                }
            }
            Target::Remote(r) => r.tell(msg),
            Target::Adapted(a) => a.tell(msg),
        }
    }

    /// A reference that takes messages of type `T` and delivers them to this actor converted by
    /// `convert` — Akka's message adapter. It is the same actor: same path, same id (watching
    /// it watches this actor), stopping it stops this actor.
    ///
    /// This is how an actor with an internal protocol offers a narrower public one:
    /// ```
    /// # use flotilla_actor::{ActorRef};
    /// enum Internal { Public(u64), Tick }
    /// fn public(me: &ActorRef<Internal>) -> ActorRef<u64> {
    ///     me.adapt(Internal::Public)
    /// }
    /// ```
    pub fn adapt<T: Send + 'static>(
        &self,
        convert: impl Fn(T) -> M + Send + Sync + 'static,
    ) -> ActorRef<T> {
        ActorRef {
            target: Target::Adapted(Arc::new(Mapped {
                inner: self.clone(),
                convert: Box::new(convert),
            })),
        }
    }

    pub(crate) fn local(cell: Arc<Cell<M>>) -> Self {
        Self {
            target: Target::Local(cell),
        }
    }

    /// The local actor's cell; `None` for a remote reference.
    pub(crate) fn local_cell(&self) -> Option<&Arc<Cell<M>>> {
        match &self.target {
            Target::Local(c) => Some(c),
            Target::Remote(_) | Target::Adapted(_) => None,
        }
    }

    /// Sends a message, waiting for space if the mailbox is bounded with
    /// [`Overflow::Wait`](crate::Overflow::Wait). Returns whether it was enqueued; if not, it went
    /// to dead letters.
    ///
    /// To a remote actor it is the same as [`ActorRef::tell`] (true when the message was handed
    /// to remoting).
    pub async fn send(&self, msg: M) -> bool {
        let cell = match &self.target {
            Target::Local(c) => c,
            Target::Remote(r) => return r.send(msg),
            Target::Adapted(a) => return a.send(msg).await,
        };
        match cell.mailbox.send(msg).await {
            Ok(()) => true,
            Err((msg, reason)) => {
                cell.dead_letter(msg, reason);
                false
            }
        }
    }

    /// Asks a question and awaits the answer for at most `timeout`.
    ///
    /// `make` builds the message around the [`ReplyTo`] the target answers through:
    /// `actor.ask(|reply| Msg::Get { reply }, Duration::from_secs(1)).await`.
    pub async fn ask<R>(
        &self,
        make: impl FnOnce(ReplyTo<R>) -> M,
        timeout: Duration,
    ) -> Result<R, AskError> {
        let target = || self.path().clone();
        let (reply, rx) = ReplyTo::channel();
        let cell = match &self.target {
            Target::Local(c) => c,
            Target::Remote(r) => return r.ask(make(reply), rx, timeout).await,
            Target::Adapted(a) => return adapted_ask(a.as_ref(), make(reply), rx, timeout).await,
        };
        // The timeout covers waiting for mailbox space as well as waiting for the answer.
        let exchange = async {
            if let Err((msg, reason)) = cell.mailbox.send(make(reply)).await {
                cell.dead_letter(msg, reason);
                return Err(match reason {
                    crate::DeadLetterReason::MailboxFull => {
                        AskError::MailboxFull { target: target() }
                    }
                    _ => AskError::TargetDead { target: target() },
                });
            }
            match rx.await {
                Ok(answer) => Ok(answer),
                Err(_) if cell.is_dead() || cell.mailbox_closed() => {
                    Err(AskError::TargetDead { target: target() })
                }
                Err(_) => Err(AskError::NoReply { target: target() }),
            }
        };
        within(timeout, self.path(), exchange).await
    }

    /// Asks the actor to stop: it finishes the message in hand, stops its children, runs
    /// `post_stop` and notifies its watchers. Queued messages go to dead letters.
    ///
    /// A remote actor is stopped by its own node (as in Akka, where stopping is not a message
    /// one node sends another's actor): here the call is logged and ignored.
    pub fn stop(&self) {
        match &self.target {
            Target::Local(cell) => {
                cell.signal(Signal::Stop);
            }
            Target::Remote(r) => tracing::warn!(
                actor = %r.path,
                "stop() on remote actor {} ignored: an actor is stopped by its own node",
                r.path
            ),
            Target::Adapted(a) => a.stop(),
        }
    }

    /// Stops the actor at once: as [`ActorRef::stop`], except that a message it is handling
    /// is abandoned at its next `.await` (the handler's future is dropped) and no queued
    /// message is handled any more. For work that must not be finished once the actor has
    /// lost the right to do it — a sharded entity whose shard lost its lease. `post_stop` still
    /// runs, possibly on state the abandoned handler had half changed.
    ///
    /// A remote actor is stopped by its own node: ignored, as [`ActorRef::stop`].
    pub fn stop_now(&self) {
        match &self.target {
            Target::Local(cell) => cell.stop_now(),
            Target::Remote(r) => tracing::warn!(
                actor = %r.path,
                "stop_now() on remote actor {} ignored: an actor is stopped by its own node",
                r.path
            ),
            Target::Adapted(a) => a.stop_now(),
        }
    }

    /// Completes once the actor has fully stopped (at once if it already has). For a remote
    /// actor: once this node has learnt that it stopped or that its node died (watch it first).
    pub async fn stopped(&self) {
        match &self.target {
            Target::Local(cell) => cell.wait_stopped().await,
            Target::Remote(r) => r.wait_stopped().await,
            Target::Adapted(a) => a.stopped().await,
        }
    }

    /// True once the actor has fully stopped (for a remote actor: once this node knows it).
    pub fn is_stopped(&self) -> bool {
        match &self.target {
            Target::Local(cell) => cell.is_dead(),
            Target::Remote(r) => r.is_stopped(),
            Target::Adapted(a) => a.is_stopped(),
        }
    }

    /// The actor's path.
    pub fn path(&self) -> &ActorPath {
        match &self.target {
            Target::Local(cell) => &cell.path,
            Target::Remote(r) => &r.path,
            Target::Adapted(a) => a.path(),
        }
    }

    /// The actor's id (for a remote actor: an id this node gives its path).
    pub fn id(&self) -> ActorId {
        match &self.target {
            Target::Local(cell) => cell.id,
            Target::Remote(r) => r.id,
            Target::Adapted(a) => a.id(),
        }
    }

    pub(crate) fn erased(&self) -> Arc<dyn Erased> {
        match &self.target {
            Target::Local(cell) => Arc::clone(cell) as Arc<dyn Erased>,
            Target::Remote(r) => r.watchee(),
            Target::Adapted(a) => a.erased(),
        }
    }
}

/// An `ask` through an adapter: the question is delivered converted, the answer awaited here.
async fn adapted_ask<M: Send + 'static, R>(
    a: &dyn Adapter<M>,
    msg: M,
    rx: oneshot::Receiver<R>,
    timeout: Duration,
) -> Result<R, AskError> {
    let target = || a.path().clone();
    let exchange = async {
        if !a.send(msg).await {
            return Err(AskError::TargetDead { target: target() });
        }
        match rx.await {
            Ok(answer) => Ok(answer),
            Err(_) if a.is_stopped() => Err(AskError::TargetDead { target: target() }),
            Err(_) => Err(AskError::NoReply { target: target() }),
        }
    };
    within(timeout, a.path(), exchange).await
}

/// The answer of `exchange`, or [`AskError::Timeout`] after `timeout`.
async fn within<R>(
    timeout: Duration,
    target: &ActorPath,
    exchange: impl Future<Output = Result<R, AskError>>,
) -> Result<R, AskError> {
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(AskError::Timeout {
                target: target.clone(),
                timeout,
            })
        })
}

impl<M: Send + 'static> PartialEq for ActorRef<M> {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl<M: Send + 'static> Eq for ActorRef<M> {}

impl<M: Send + 'static> Hash for ActorRef<M> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id().hash(state);
    }
}

impl<M: Send + 'static> fmt::Debug for ActorRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorRef({}{})", self.path(), self.id())
    }
}

impl<M: Send + 'static> fmt::Display for ActorRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.path(), f)
    }
}
