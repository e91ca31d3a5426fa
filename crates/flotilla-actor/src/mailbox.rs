//! The user-message lane of an actor: unbounded, or bounded with an overflow policy; and,
//! for an actor that names its control messages ([`Props::with_control_messages`]), a second,
//! unbounded lane for those, always read first.
//!
//! [`Props::with_control_messages`]: crate::Props::with_control_messages

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::{TryRecvError, TrySendError};

use crate::dead_letters::DeadLetterReason;
use crate::props::{MailboxConfig, Overflow};

enum LaneTx<M> {
    Unbounded(mpsc::UnboundedSender<M>),
    Bounded(mpsc::Sender<M>, Overflow),
}

enum LaneRx<M> {
    Unbounded(mpsc::UnboundedReceiver<M>),
    Bounded(mpsc::Receiver<M>),
}

/// Which messages are control messages.
pub(crate) type IsControl<M> = fn(&M) -> bool;

pub(crate) struct MailboxTx<M> {
    lane: LaneTx<M>,
    control: Option<(mpsc::UnboundedSender<M>, IsControl<M>)>,
}

pub(crate) struct MailboxRx<M> {
    lane: LaneRx<M>,
    control: Option<mpsc::UnboundedReceiver<M>>,
}

pub(crate) fn mailbox<M>(
    config: MailboxConfig,
    is_control: Option<IsControl<M>>,
) -> (MailboxTx<M>, MailboxRx<M>) {
    let (lane_tx, lane_rx) = match config {
        MailboxConfig::Unbounded => {
            let (tx, rx) = mpsc::unbounded_channel();
            (LaneTx::Unbounded(tx), LaneRx::Unbounded(rx))
        }
        MailboxConfig::Bounded { capacity, overflow } => {
            let (tx, rx) = mpsc::channel(capacity.max(1));
            (LaneTx::Bounded(tx, overflow), LaneRx::Bounded(rx))
        }
    };
    let (control_tx, control_rx) = match is_control {
        Some(f) => {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some((tx, f)), Some(rx))
        }
        None => (None, None),
    };
    (
        MailboxTx {
            lane: lane_tx,
            control: control_tx,
        },
        MailboxRx {
            lane: lane_rx,
            control: control_rx,
        },
    )
}

impl<M> MailboxTx<M> {
    /// Enqueues without waiting. On failure the message comes back with the reason.
    #[inline]
    pub(crate) fn try_send(&self, msg: M) -> Result<(), (M, DeadLetterReason)> {
        if let Some((tx, is_control)) = &self.control
            && is_control(&msg)
        {
            return tx
                .send(msg)
                .map_err(|e| (e.0, DeadLetterReason::RecipientStopped));
        }
        match &self.lane {
            LaneTx::Unbounded(tx) => tx
                .send(msg)
                .map_err(|e| (e.0, DeadLetterReason::RecipientStopped)),
            LaneTx::Bounded(tx, _) => tx.try_send(msg).map_err(|e| match e {
                TrySendError::Full(m) => (m, DeadLetterReason::MailboxFull),
                TrySendError::Closed(m) => (m, DeadLetterReason::RecipientStopped),
            }),
        }
    }

    /// Enqueues, waiting for space when the mailbox is bounded with [`Overflow::Wait`]
    /// (control messages never wait).
    pub(crate) async fn send(&self, msg: M) -> Result<(), (M, DeadLetterReason)> {
        let control = self.control.as_ref().is_some_and(|(_, f)| f(&msg));
        match &self.lane {
            LaneTx::Bounded(tx, Overflow::Wait) if !control => tx
                .send(msg)
                .await
                .map_err(|e| (e.0, DeadLetterReason::RecipientStopped)),
            _ => self.try_send(msg),
        }
    }
}

impl<M> MailboxRx<M> {
    /// Only for draining a closed mailbox: on an open one, `try_recv` can park the thread while
    /// a sender is mid-write. Control messages first.
    pub(crate) fn try_recv(&mut self) -> Result<M, TryRecvError> {
        if let Some(rx) = &mut self.control
            && let Ok(m) = rx.try_recv()
        {
            return Ok(m);
        }
        match &mut self.lane {
            LaneRx::Unbounded(rx) => rx.try_recv(),
            LaneRx::Bounded(rx) => rx.try_recv(),
        }
    }

    /// The next message: a waiting control message before any other.
    #[inline]
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<M>> {
        if let Some(rx) = &mut self.control
            && let std::task::Poll::Ready(Some(m)) = rx.poll_recv(cx)
        {
            return std::task::Poll::Ready(Some(m));
        }
        // The cell holds a sender of each lane, so neither closes before `close`; the ordinary
        // lane's end stands for both.
        match &mut self.lane {
            LaneRx::Unbounded(rx) => rx.poll_recv(cx),
            LaneRx::Bounded(rx) => rx.poll_recv(cx),
        }
    }

    /// Refuses new messages; those already queued can still be drained.
    pub(crate) fn close(&mut self) {
        if let Some(rx) = &mut self.control {
            rx.close();
        }
        match &mut self.lane {
            LaneRx::Unbounded(rx) => rx.close(),
            LaneRx::Bounded(rx) => rx.close(),
        }
    }
}
