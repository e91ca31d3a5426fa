//! The shared, type-erased part of a live actor: identity, lanes and children registry.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use flotilla_core::ActorPath;
use tokio::sync::Notify;

use crate::actor::Failure;
use crate::actor_ref::ActorId;
use crate::dead_letters::DeadLetterReason;
use crate::mailbox::MailboxTx;
use crate::sys_lane::SysTx;
use crate::system::SystemInner;
use crate::timers::TimerFire;

/// Runtime signals. They travel on the system lane, which an actor drains before each user
/// message, so a stop or a death notice never waits behind a long mailbox.
pub(crate) enum Signal {
    Stop,
    Watch { watcher: Arc<dyn Erased> },
    Unwatch { watcher: ActorId },
    Terminated { id: ActorId, path: ActorPath },
    ChildTerminated,
    ChildFailed { child: ActorPath, failure: Failure },
}

/// What travels on an actor's system lane.
pub(crate) enum SysMsg<M> {
    Signal(Signal),
    Timer(TimerFire<M>),
}

/// The children an actor has, by name. Names are reserved here, synchronously, at spawn time, and
/// freed by the child itself when it has fully stopped.
#[derive(Default)]
pub(crate) struct Children {
    pub(crate) by_name: BTreeMap<String, Arc<dyn Erased>>,
    /// Set when the parent starts stopping: no child can be added any more.
    pub(crate) closed: bool,
    /// Set while the parent waits for its children to stop (restart or stop). A child that stops
    /// signals its parent only then, so a parent that is not waiting is not woken for nothing.
    pub(crate) awaited: bool,
    pub(crate) anonymous_counter: u64,
}

/// The view of an actor that does not depend on its message type.
pub(crate) trait Erased: Send + Sync + 'static {
    fn id(&self) -> ActorId;
    fn path(&self) -> &ActorPath;
    /// Delivers a signal; false when the actor has stopped.
    fn signal(&self, signal: Signal) -> bool;
    fn children(&self) -> MutexGuard<'_, Children>;
}

pub(crate) struct Cell<M> {
    pub(crate) id: ActorId,
    pub(crate) path: ActorPath,
    pub(crate) mailbox: MailboxTx<M>,
    pub(crate) sys: SysTx<M>,
    pub(crate) system: Arc<SystemInner>,
    children: Mutex<Children>,
    /// Set when the actor stops taking messages (before its mailbox is drained to dead letters).
    closing: AtomicBool,
    dead: AtomicBool,
    stopped: Notify,
}

impl<M: Send + 'static> Cell<M> {
    pub(crate) fn new(
        id: ActorId,
        path: ActorPath,
        mailbox: MailboxTx<M>,
        sys: SysTx<M>,
        system: Arc<SystemInner>,
    ) -> Self {
        Self {
            id,
            path,
            mailbox,
            sys,
            system,
            children: Mutex::new(Children::default()),
            closing: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            stopped: Notify::new(),
        }
    }

    /// Sends a message to dead letters: counted, published, logged with rate limiting.
    pub(crate) fn dead_letter(&self, msg: M, reason: DeadLetterReason) {
        drop(msg);
        self.system.dead_letters.record(
            &self.system,
            &self.path,
            std::any::type_name::<M>(),
            reason,
        );
    }

    pub(crate) fn mark_closing(&self) {
        self.closing.store(true, Ordering::Release);
    }

    pub(crate) fn mailbox_closed(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Marks the actor stopped and wakes everyone awaiting it.
    pub(crate) fn mark_stopped(&self) {
        self.dead.store(true, Ordering::Release);
        self.stopped.notify_waiters();
    }

    /// Completes once the actor has fully stopped.
    pub(crate) async fn wait_stopped(&self) {
        wait_until(&self.stopped, || self.is_dead()).await;
    }
}

/// Completes once `done` holds, re-checking each time `notify` wakes its waiters (registered
/// before each check, so a wake between the check and the wait is not missed).
pub(crate) async fn wait_until(notify: &Notify, done: impl Fn() -> bool) {
    loop {
        let notified = notify.notified();
        let mut notified = std::pin::pin!(notified);
        notified.as_mut().enable();
        if done() {
            return;
        }
        notified.await;
    }
}

impl<M: Send + 'static> Erased for Cell<M> {
    fn id(&self) -> ActorId {
        self.id
    }

    fn path(&self) -> &ActorPath {
        &self.path
    }

    fn signal(&self, signal: Signal) -> bool {
        self.sys.send(SysMsg::Signal(signal))
    }

    fn children(&self) -> MutexGuard<'_, Children> {
        // A poisoned registry only means some thread panicked while holding the lock; the map
        // itself is always left consistent (single insert/remove operations).
        self.children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
