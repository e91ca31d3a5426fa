//! What remoting hands to the local runtime ([`Inbound`]), and the channel it goes through: FIFO, many senders, one receiver, bounded for
//! what peers send.
//!
//! Readers of connections wait for room (`InboundSender::has_room`,
//! `InboundSender::wait_for_room`) before they read more from their socket once
//! [`CAPACITY`] items wait, so a runtime that falls behind slows its peers down (TCP
//! backpressure) instead of buffering without limit. What remoting itself reports (association
//! changes, dead letters) is never held back.
//!
//! A reader hands over the user messages of one read as one item (a
//! [`UserBatch`]: one lock, at most one wake-up); the receiver takes
//! everything waiting in one swap and then pops without locking, where a general-purpose
//! channel pays atomic operations and a wake-up check for each item.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;
pub use tokio::sync::mpsc::error::TryRecvError;

use flotilla_core::{Address, UniqueAddress};
use flotilla_proto::association::StateName;
use flotilla_wire::{UserBatch, UserEnvelope};

/// A system message's payload: what the runtime serialized, and how to read it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemPayload {
    /// The serializer manifest.
    pub manifest: String,
    /// The bytes.
    pub payload: Vec<u8>,
}

/// Logs and counts an ordinary message from `from` that did not decode (the receiver of an
/// [`Inbound::User`] found it): it is dropped, and the association stays up.
pub fn undecodable_dropped(from: &UniqueAddress, e: &flotilla_wire::WireError) {
    undecodable(from, e);
}

/// An undecodable frame is dropped, logged and counted; the connection stays up.
pub(crate) fn undecodable(remote: &UniqueAddress, e: &flotilla_wire::WireError) {
    metrics::counter!("flotilla_remote_undecodable_frames_total").increment(1);
    tracing::warn!(remote = %remote, "dropped a frame from {remote}: {e}");
}

/// What remoting hands to the local runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// An ordinary message for a local actor.
    User {
        /// The sending incarnation.
        from: UniqueAddress,
        /// The messages, in the order they were sent (everything one read brought, handed over
        /// at once, not yet decoded): iterate to decode each in place. A receiver that wants to
        /// report a message that does not decode iterates with
        /// [`UserBatch::iter_checked`] and hands each error to [`undecodable_dropped`].
        messages: UserBatch,
    },
    /// A system message, exactly once and in order per incarnation.
    System {
        /// The sending incarnation.
        from: UniqueAddress,
        /// The message.
        payload: SystemPayload,
    },
    /// A watched node was declared dead by the failure detector.
    AddressTerminated {
        /// The node.
        remote: Address,
        /// Its incarnation, if one was reached.
        uid: Option<u64>,
    },
    /// A remote node quarantined this one: restart this node.
    ThisSystemQuarantined {
        /// The quarantining node.
        by: UniqueAddress,
        /// Its reason.
        reason: String,
    },
    /// An ordinary message could not be sent.
    DeadLetter {
        /// Its destination.
        to: Address,
        /// The message.
        envelope: UserEnvelope,
        /// Why, in words.
        reason: String,
    },
    /// An association changed state.
    Association {
        /// The remote node.
        remote: Address,
        /// The state before.
        from: StateName,
        /// The state after.
        to: StateName,
        /// Why, in words.
        cause: String,
    },
}

/// Items (a user message batch is one item: one read's worth, at most 64 KiB) that may wait
/// before readers stop reading their sockets.
pub const CAPACITY: usize = 4096;

#[derive(Debug)]
struct Shared {
    queue: Mutex<VecDeque<Inbound>>,
    /// Signalled when the queue goes from empty to not empty, and when the last sender goes.
    ready: Notify,
    /// Signalled when the receiver takes what waits.
    room: Notify,
    senders: AtomicUsize,
}

/// The sending side; clones share the channel, and the receiver sees the end once all are gone.
#[derive(Debug)]
pub(crate) struct InboundSender {
    shared: Arc<Shared>,
}

/// What remoting hands to the local runtime, in order.
#[derive(Debug)]
pub struct InboundReceiver {
    shared: Arc<Shared>,
    /// Taken from the queue in one swap; popped without locking.
    taken: VecDeque<Inbound>,
}

/// A new channel.
pub(crate) fn channel() -> (InboundSender, InboundReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::new(VecDeque::new()),
        ready: Notify::new(),
        room: Notify::new(),
        senders: AtomicUsize::new(1),
    });
    (
        InboundSender {
            shared: Arc::clone(&shared),
        },
        InboundReceiver {
            shared,
            taken: VecDeque::new(),
        },
    )
}

impl InboundSender {
    /// Appends one item.
    pub(crate) fn send(&self, item: Inbound) {
        let was_empty = {
            let mut q = self.lock();
            q.push_back(item);
            q.len() == 1
        };
        if was_empty {
            self.shared.ready.notify_one();
        }
    }

    /// Whether fewer than [`CAPACITY`] items wait.
    pub(crate) fn has_room(&self) -> bool {
        self.lock().len() < CAPACITY
    }

    /// Waits until fewer than [`CAPACITY`] items wait.
    pub(crate) async fn wait_for_room(&self) {
        loop {
            let taken = self.shared.room.notified();
            tokio::pin!(taken);
            // Registered before the check, so a take in between is not missed.
            taken.as_mut().enable();
            if self.has_room() {
                return;
            }
            taken.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Inbound>> {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clone for InboundSender {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::SeqCst);
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl Drop for InboundSender {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.shared.ready.notify_one();
        }
    }
}

impl InboundReceiver {
    /// The next item; `None` once remoting has stopped and everything was taken.
    pub async fn recv(&mut self) -> Option<Inbound> {
        loop {
            match self.try_recv() {
                Ok(item) => return Some(item),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => self.shared.ready.notified().await,
            }
        }
    }

    /// The next item, with user messages one at a time: an [`Inbound::User`] holds exactly one
    /// message. Simpler to consume than [`InboundReceiver::recv`], and slower.
    pub async fn recv_one(&mut self) -> Option<Inbound> {
        let item = self.recv().await?;
        Some(self.one(item))
    }

    /// [`InboundReceiver::try_recv`], one user message at a time as [`InboundReceiver::recv_one`].
    pub fn try_recv_one(&mut self) -> Result<Inbound, TryRecvError> {
        let item = self.try_recv()?;
        Ok(self.one(item))
    }

    /// Splits the first message off a batch of several; the rest go back to the front.
    fn one(&mut self, item: Inbound) -> Inbound {
        match item {
            Inbound::User { from, mut messages } if messages.len() > 1 => {
                match messages.split_first() {
                    Some(first) => {
                        self.taken.push_front(Inbound::User {
                            from: from.clone(),
                            messages,
                        });
                        Inbound::User {
                            from,
                            messages: first,
                        }
                    }
                    None => Inbound::User { from, messages },
                }
            }
            other => other,
        }
    }

    /// The next item if one is waiting.
    pub fn try_recv(&mut self) -> Result<Inbound, TryRecvError> {
        if let Some(item) = self.taken.pop_front() {
            return Ok(item);
        }
        {
            let mut q = self
                .shared
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            std::mem::swap(&mut *q, &mut self.taken);
        }
        if !self.taken.is_empty() {
            self.shared.room.notify_waiters();
        }
        match self.taken.pop_front() {
            Some(item) => Ok(item),
            None if self.shared.senders.load(Ordering::SeqCst) == 0 => {
                Err(TryRecvError::Disconnected)
            }
            None => Err(TryRecvError::Empty),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_core::{Address, UniqueAddress};
    use flotilla_wire::{UserBatch, UserEnvelopeRef};

    fn item(n: u8) -> Inbound {
        Inbound::AddressTerminated {
            remote: Address::local("x").unwrap_or_else(|e| panic!("{e}")),
            uid: Some(u64::from(n)),
        }
    }

    fn uid(i: &Inbound) -> Option<u64> {
        match i {
            Inbound::AddressTerminated { uid, .. } => *uid,
            _ => None,
        }
    }

    #[tokio::test]
    async fn items_arrive_in_order_singly_and_in_batches_and_the_end_is_seen() {
        let (tx, mut rx) = channel();
        assert_eq!(rx.try_recv().err(), Some(TryRecvError::Empty));
        for n in 1..=3 {
            tx.send(item(n));
        }
        let other = tx.clone();
        let late = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            other.send(item(4));
        });
        for n in 1..=4 {
            assert_eq!(rx.recv().await.as_ref().and_then(uid), Some(n));
        }
        late.await.unwrap_or_else(|e| panic!("{e}"));
        drop(tx);
        assert!(rx.recv().await.is_none(), "all senders gone");
        assert_eq!(rx.try_recv().err(), Some(TryRecvError::Disconnected));
    }

    #[tokio::test]
    async fn a_full_channel_holds_readers_back_until_the_receiver_takes() {
        let (tx, mut rx) = channel();
        for n in 0..CAPACITY {
            tx.send(item(u8::try_from(n % 200).unwrap_or(0)));
        }
        assert!(!tx.has_room());
        let waiting = tokio::spawn({
            let tx = tx.clone();
            async move { tx.wait_for_room().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no room yet");
        assert!(rx.try_recv().is_ok());
        tokio::time::timeout(std::time::Duration::from_secs(2), waiting)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(tx.has_room());
    }

    #[tokio::test]
    async fn recv_one_splits_a_batch_in_order() {
        let (tx, mut rx) = channel();
        let from = UniqueAddress {
            address: Address::remote("x", "127.0.0.1", 1).unwrap_or_else(|e| panic!("{e}")),
            uid: 1,
        };
        let mut messages = UserBatch::new();
        for n in 0..3u8 {
            let env = UserEnvelopeRef {
                recipient: "/user/a",
                sender: None,
                manifest: "m",
                payload: &[n],
            };
            messages.push(&env).unwrap_or_else(|e| panic!("{e}"));
        }
        tx.send(Inbound::User { from, messages });
        tx.send(item(9));
        for n in 0..3u8 {
            match rx.recv_one().await {
                Some(Inbound::User { messages, .. }) => {
                    assert_eq!(messages.len(), 1);
                    assert_eq!(messages.first().map(|e| e.payload), Some(&[n][..]));
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(rx.try_recv_one().ok().as_ref().and_then(uid), Some(9));
    }
}
