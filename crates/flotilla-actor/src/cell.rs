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

/// The flag behind [`crate::ActorRef::stop_now`]: set once, never cleared; the runner
/// abandons the handler in progress when it is set.
#[derive(Debug, Default)]
pub(crate) struct Abort {
    set: AtomicBool,
    notify: Notify,
}

impl Abort {
    pub(crate) fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    fn raise(&self) {
        self.set.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Runs `fut` to its end, or until the flag is raised (`None`). The fast path — a handler
    /// that completes at its first poll — costs one atomic load and no registration.
    pub(crate) async fn guard<F: Future>(&self, fut: F) -> Option<F::Output> {
        if self.is_set() {
            return None;
        }
        let mut fut = std::pin::pin!(fut);
        let mut notified = std::pin::pin!(None::<tokio::sync::futures::Notified<'_>>);
        std::future::poll_fn(|cx| {
            if let std::task::Poll::Ready(out) = fut.as_mut().poll(cx) {
                return std::task::Poll::Ready(Some(out));
            }
            loop {
                if self.is_set() {
                    return std::task::Poll::Ready(None);
                }
                let Some(n) = notified.as_mut().as_pin_mut() else {
                    // Registered before the flag is looked at again, so a raise in between
                    // is not missed.
                    notified.set(Some(self.notify.notified()));
                    if let Some(n) = notified.as_mut().as_pin_mut() {
                        n.enable();
                    }
                    continue;
                };
                match n.poll(cx) {
                    std::task::Poll::Pending => return std::task::Poll::Pending,
                    // Only a raise wakes it; look at the flag (and register anew) above.
                    std::task::Poll::Ready(()) => notified.set(None),
                }
            }
        })
        .await
    }
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
    pub(crate) abort: Arc<Abort>,
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
            abort: Arc::default(),
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

    /// Raises the abort flag and asks the actor to stop (an idle actor sees the signal).
    pub(crate) fn stop_now(&self) {
        self.abort.raise();
        self.signal(Signal::Stop);
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
