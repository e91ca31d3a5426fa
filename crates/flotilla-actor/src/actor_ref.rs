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
}

impl<M: Send + 'static> Clone for ActorRef<M> {
    fn clone(&self) -> Self {
        Self {
            target: match &self.target {
                Target::Local(c) => Target::Local(Arc::clone(c)),
                Target::Remote(r) => Target::Remote(Arc::clone(r)),
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
            Target::Remote(_) => None,
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
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(AskError::Timeout {
                    target: target(),
                    timeout,
                })
            })
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
        }
    }

    /// Completes once the actor has fully stopped (at once if it already has). For a remote
    /// actor: once this node has learnt that it stopped or that its node died (watch it first).
    pub async fn stopped(&self) {
        match &self.target {
            Target::Local(cell) => cell.wait_stopped().await,
            Target::Remote(r) => r.wait_stopped().await,
        }
    }

    /// True once the actor has fully stopped (for a remote actor: once this node knows it).
    pub fn is_stopped(&self) -> bool {
        match &self.target {
            Target::Local(cell) => cell.is_dead(),
            Target::Remote(r) => r.is_stopped(),
        }
    }

    /// The actor's path.
    pub fn path(&self) -> &ActorPath {
        match &self.target {
            Target::Local(cell) => &cell.path,
            Target::Remote(r) => &r.path,
        }
    }

    /// The actor's id (for a remote actor: an id this node gives its path).
    pub fn id(&self) -> ActorId {
        match &self.target {
            Target::Local(cell) => cell.id,
            Target::Remote(r) => r.id,
        }
    }

    pub(crate) fn erased(&self) -> Arc<dyn Erased> {
        match &self.target {
            Target::Local(cell) => Arc::clone(cell) as Arc<dyn Erased>,
            Target::Remote(r) => r.watchee(),
        }
    }
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
