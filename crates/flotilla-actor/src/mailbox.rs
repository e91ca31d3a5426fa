//! The user-message lane of an actor: unbounded, or bounded with an overflow policy.

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};

use crate::dead_letters::DeadLetterReason;
use crate::props::{MailboxConfig, Overflow};

pub(crate) enum MailboxTx<M> {
    Unbounded(mpsc::UnboundedSender<M>),
    Bounded(mpsc::Sender<M>, Overflow),
}

pub(crate) enum MailboxRx<M> {
    Unbounded(mpsc::UnboundedReceiver<M>),
    Bounded(mpsc::Receiver<M>),
}

pub(crate) fn mailbox<M>(config: MailboxConfig) -> (MailboxTx<M>, MailboxRx<M>) {
    match config {
        MailboxConfig::Unbounded => {
            let (tx, rx) = mpsc::unbounded_channel();
            (MailboxTx::Unbounded(tx), MailboxRx::Unbounded(rx))
        }
        MailboxConfig::Bounded { capacity, overflow } => {
            let (tx, rx) = mpsc::channel(capacity.max(1));
            (MailboxTx::Bounded(tx, overflow), MailboxRx::Bounded(rx))
        }
    }
}

impl<M> MailboxTx<M> {
    /// Enqueues without waiting. On failure the message comes back with the reason.
    #[inline]
    pub(crate) fn try_send(&self, msg: M) -> Result<(), (M, DeadLetterReason)> {
        match self {
            Self::Unbounded(tx) => tx
                .send(msg)
                .map_err(|e| (e.0, DeadLetterReason::RecipientStopped)),
            Self::Bounded(tx, _) => tx.try_send(msg).map_err(|e| match e {
                TrySendError::Full(m) => (m, DeadLetterReason::MailboxFull),
                TrySendError::Closed(m) => (m, DeadLetterReason::RecipientStopped),
            }),
        }
    }

    /// Enqueues, waiting for space when the mailbox is bounded with [`Overflow::Wait`].
    pub(crate) async fn send(&self, msg: M) -> Result<(), (M, DeadLetterReason)> {
        match self {
            Self::Bounded(tx, Overflow::Wait) => tx
                .send(msg)
                .await
                .map_err(|e| (e.0, DeadLetterReason::RecipientStopped)),
            _ => self.try_send(msg),
        }
    }
}

impl<M> MailboxRx<M> {
    /// Only for draining a closed mailbox: on an open one, `try_recv` can park the thread while
    /// a sender is mid-write.
    pub(crate) fn try_recv(&mut self) -> Result<M, TryRecvError> {
        match self {
            Self::Unbounded(rx) => rx.try_recv(),
            Self::Bounded(rx) => rx.try_recv(),
        }
    }

    #[inline]
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<M>> {
        match self {
            Self::Unbounded(rx) => rx.poll_recv(cx),
            Self::Bounded(rx) => rx.poll_recv(cx),
        }
    }

    /// Refuses new messages; those already queued can still be drained.
    pub(crate) fn close(&mut self) {
        match self {
            Self::Unbounded(rx) => rx.close(),
            Self::Bounded(rx) => rx.close(),
        }
    }
}
