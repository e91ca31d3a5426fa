//! Typed handles to actors: `tell`, `send`, `ask`.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use flotilla_core::ActorPath;
use tokio::sync::oneshot;

use crate::cell::{Cell, Erased, Signal};

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
#[derive(Debug)]
pub struct ReplyTo<R>(oneshot::Sender<R>);

impl<R> ReplyTo<R> {
    /// Sends the answer. Returns false when the asker has stopped waiting (for example after
    /// its timeout); the answer is then dropped.
    pub fn send(self, reply: R) -> bool {
        self.0.send(reply).is_ok()
    }

    /// A reply handle and the receiver it answers to, for code that forwards a question.
    pub fn channel() -> (Self, oneshot::Receiver<R>) {
        let (tx, rx) = oneshot::channel();
        (Self(tx), rx)
    }
}

/// A typed handle to an actor. Cheap to clone; compares by actor identity.
pub struct ActorRef<M: Send + 'static> {
    pub(crate) cell: Arc<Cell<M>>,
}

impl<M: Send + 'static> Clone for ActorRef<M> {
    fn clone(&self) -> Self {
        Self {
            cell: Arc::clone(&self.cell),
        }
    }
}

impl<M: Send + 'static> ActorRef<M> {
    /// Sends a message without waiting. Messages from one sender arrive in the order sent.
    ///
    /// Never blocks. A message that cannot be enqueued (the actor has stopped, or its bounded
    /// mailbox is full) goes to dead letters: counted, published and logged — never silently lost.
    #[inline]
    pub fn tell(&self, msg: M) {
        if let Err((msg, reason)) = self.cell.mailbox.try_send(msg) {
            self.cell.dead_letter(msg, reason);
        }
    }

    /// Sends a message, waiting for space if the mailbox is bounded with
    /// [`Overflow::Wait`](crate::Overflow::Wait). Returns whether it was enqueued; if not, it went
    /// to dead letters.
    pub async fn send(&self, msg: M) -> bool {
        match self.cell.mailbox.send(msg).await {
            Ok(()) => true,
            Err((msg, reason)) => {
                self.cell.dead_letter(msg, reason);
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
        // The timeout covers waiting for mailbox space as well as waiting for the answer.
        let exchange = async {
            if let Err((msg, reason)) = self.cell.mailbox.send(make(reply)).await {
                self.cell.dead_letter(msg, reason);
                return Err(match reason {
                    crate::DeadLetterReason::MailboxFull => {
                        AskError::MailboxFull { target: target() }
                    }
                    _ => AskError::TargetDead { target: target() },
                });
            }
            match rx.await {
                Ok(answer) => Ok(answer),
                Err(_) if self.cell.is_dead() || self.cell.mailbox_closed() => {
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
    pub fn stop(&self) {
        self.cell.signal(Signal::Stop);
    }

    /// Completes once the actor has fully stopped (at once if it already has).
    pub async fn stopped(&self) {
        self.cell.wait_stopped().await;
    }

    /// True once the actor has fully stopped.
    pub fn is_stopped(&self) -> bool {
        self.cell.is_dead()
    }

    /// The actor's path.
    pub fn path(&self) -> &ActorPath {
        &self.cell.path
    }

    /// The actor's id.
    pub fn id(&self) -> ActorId {
        self.cell.id
    }

    pub(crate) fn erased(&self) -> Arc<dyn Erased> {
        Arc::clone(&self.cell) as Arc<dyn Erased>
    }
}

impl<M: Send + 'static> PartialEq for ActorRef<M> {
    fn eq(&self, other: &Self) -> bool {
        self.cell.id == other.cell.id
    }
}

impl<M: Send + 'static> Eq for ActorRef<M> {}

impl<M: Send + 'static> Hash for ActorRef<M> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.cell.id.hash(state);
    }
}

impl<M: Send + 'static> fmt::Debug for ActorRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorRef({}{})", self.cell.path, self.cell.id)
    }
}

impl<M: Send + 'static> fmt::Display for ActorRef<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.cell.path, f)
    }
}
