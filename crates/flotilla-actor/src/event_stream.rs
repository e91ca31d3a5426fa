//! Publish/subscribe by event type, within one actor system.
//!
//! Subscribers are actors (subscribed with their [`ActorRef`]) or channels. An actor subscriber
//! that has stopped is dropped from the stream silently — publishing to it is not a dead letter.
//! Later issues publish association, membership, shard and lease events here.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::actor_ref::{ActorId, ActorRef};

type Deliver = Arc<dyn Fn(&dyn Any) -> bool + Send + Sync>;

struct Subscriber {
    serial: u64,
    actor: Option<ActorId>,
    deliver: Deliver,
}

/// The event stream of one actor system.
#[derive(Default)]
pub struct EventStream {
    subscribers: Mutex<HashMap<TypeId, Vec<Subscriber>>>,
    next_serial: AtomicU64,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    /// Subscribes an actor to events of type `E`.
    pub fn subscribe<E: Clone + Send + 'static>(&self, subscriber: &ActorRef<E>) {
        self.subscribe_with(subscriber, |e: E| e);
    }

    /// Subscribes an actor to events of type `E`, wrapped into its own message type.
    pub fn subscribe_with<E, M>(&self, subscriber: &ActorRef<M>, wrap: fn(E) -> M)
    where
        E: Clone + Send + 'static,
        M: Send + 'static,
    {
        let target = subscriber.clone();
        // A dead-letter event that does not fit its subscriber's mailbox is not itself a dead
        // letter: that would publish another event to the same full mailbox, without end.
        let is_dead_letter_event = TypeId::of::<E>() == TypeId::of::<crate::DeadLetter>();
        let deliver: Deliver = Arc::new(move |event: &dyn Any| {
            let Some(event) = event.downcast_ref::<E>() else {
                return true;
            };
            let Some(cell) = target.local_cell() else {
                // A remote subscriber: sent like any message (at most once).
                target.tell(wrap(event.clone()));
                return true;
            };
            match cell.mailbox.try_send(wrap(event.clone())) {
                Ok(()) => true,
                Err((msg, crate::DeadLetterReason::MailboxFull)) => {
                    if is_dead_letter_event {
                        metrics::counter!("flotilla_dead_letter_events_dropped_total").increment(1);
                    } else {
                        cell.dead_letter(msg, crate::DeadLetterReason::MailboxFull);
                    }
                    true
                }
                Err(_) => false,
            }
        });
        self.add::<E>(Some(subscriber.id()), deliver);
    }

    /// Subscribes a channel to events of type `E`. Dropping the receiver unsubscribes it.
    pub fn subscribe_channel<E: Clone + Send + 'static>(&self) -> mpsc::UnboundedReceiver<E> {
        let (tx, rx) = mpsc::unbounded_channel();
        let deliver: Deliver = Arc::new(move |event: &dyn Any| {
            event
                .downcast_ref::<E>()
                .is_none_or(|e| tx.send(e.clone()).is_ok())
        });
        self.add::<E>(None, deliver);
        rx
    }

    /// Removes an actor's subscription to events of type `E`.
    pub fn unsubscribe<E: 'static, M: Send + 'static>(&self, subscriber: &ActorRef<M>) {
        let mut subs = self.lock();
        if let Some(list) = subs.get_mut(&TypeId::of::<E>()) {
            list.retain(|s| s.actor != Some(subscriber.id()));
        }
    }

    /// Publishes an event to every subscriber of its type. Returns how many received it.
    ///
    /// Delivery happens outside the stream's lock, so a subscriber's dead letter (which is itself
    /// published here) cannot deadlock.
    pub fn publish<E: Clone + Send + 'static>(&self, event: E) -> usize {
        let targets: Vec<(u64, Deliver)> = match self.lock().get(&TypeId::of::<E>()) {
            Some(list) => list
                .iter()
                .map(|s| (s.serial, Arc::clone(&s.deliver)))
                .collect(),
            None => return 0,
        };
        let gone: Vec<u64> = targets
            .iter()
            .filter(|(_, deliver)| !deliver(&event))
            .map(|(serial, _)| *serial)
            .collect();
        if !gone.is_empty()
            && let Some(list) = self.lock().get_mut(&TypeId::of::<E>())
        {
            list.retain(|s| !gone.contains(&s.serial));
        }
        targets.len() - gone.len()
    }

    /// How many subscribers events of type `E` have.
    pub fn subscriber_count<E: 'static>(&self) -> usize {
        self.lock().get(&TypeId::of::<E>()).map_or(0, Vec::len)
    }

    fn add<E: 'static>(&self, actor: Option<ActorId>, deliver: Deliver) {
        let serial = self.next_serial.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .entry(TypeId::of::<E>())
            .or_default()
            .push(Subscriber {
                serial,
                actor,
                deliver,
            });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TypeId, Vec<Subscriber>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
