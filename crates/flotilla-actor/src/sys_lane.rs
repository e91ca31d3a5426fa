//! The system lane: an unbounded channel plus a count of queued signals.
//!
//! The count lets the run loop skip polling an empty system lane while its mailbox has work: it
//! costs one atomic load per message instead of a channel poll and a waker registration. The
//! count is raised *before* each send and lowered *after* each receive, so it is never lower than
//! the number of queued signals, and a signal is never missed: when the mailbox is empty the loop
//! polls the system lane anyway (and registers its waker there).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::cell::SysMsg;

pub(crate) struct SysTx<M> {
    tx: mpsc::UnboundedSender<SysMsg<M>>,
    pending: Arc<AtomicUsize>,
}

impl<M> Clone for SysTx<M> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            pending: Arc::clone(&self.pending),
        }
    }
}

pub(crate) struct SysRx<M> {
    rx: mpsc::UnboundedReceiver<SysMsg<M>>,
    pending: Arc<AtomicUsize>,
}

pub(crate) fn sys_lane<M>() -> (SysTx<M>, SysRx<M>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let pending = Arc::new(AtomicUsize::new(0));
    (
        SysTx {
            tx,
            pending: Arc::clone(&pending),
        },
        SysRx { rx, pending },
    )
}

impl<M> SysTx<M> {
    /// Sends; false when the receiving actor has stopped.
    pub(crate) fn send(&self, msg: SysMsg<M>) -> bool {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(msg).is_ok() {
            true
        } else {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            false
        }
    }
}

impl<M> SysRx<M> {
    fn took(&self, m: Option<SysMsg<M>>) -> Option<SysMsg<M>> {
        if m.is_some() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
        m
    }

    /// True when a signal may be queued (cheap: one atomic load).
    #[inline]
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }

    #[inline]
    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<SysMsg<M>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(m) => Poll::Ready(self.took(m)),
            Poll::Pending => Poll::Pending,
        }
    }

    pub(crate) async fn recv(&mut self) -> Option<SysMsg<M>> {
        let m = self.rx.recv().await;
        self.took(m)
    }

    /// Refuses new signals; those already queued can still be drained with `try_recv`.
    pub(crate) fn close(&mut self) {
        self.rx.close();
    }

    /// Only for draining a closed lane (see `MailboxRx::try_recv`).
    pub(crate) fn try_recv(&mut self) -> Option<SysMsg<M>> {
        let m = self.rx.try_recv().ok();
        self.took(m)
    }
}
