//! Timers owned by an actor: single and periodic, by key, cancelled on stop and restart.
//!
//! Starting a timer with a key that is already active replaces it, and a message of the replaced
//! or cancelled timer that is already on its way is discarded (each start gets a new generation).
//! A periodic timer never piles up: a tick is skipped while the previous one is still undelivered.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::task::AbortHandle;
use tokio::time::MissedTickBehavior;

use crate::cell::SysMsg;
use crate::sys_lane::SysTx;

/// A timer message on its way to the actor.
pub(crate) struct TimerFire<M> {
    key: String,
    generation: u64,
    msg: M,
    /// For periodic timers: cleared when the tick is taken, so the next one may be sent.
    in_flight: Option<Arc<AtomicBool>>,
}

struct Active {
    generation: u64,
    periodic: bool,
    task: AbortHandle,
}

/// The timers of one actor, reached through [`Context::timers`](crate::Context::timers).
pub struct Timers<M: Send + 'static> {
    sys: SysTx<M>,
    runtime: tokio::runtime::Handle,
    active: BTreeMap<String, Active>,
    next_generation: u64,
}

impl<M: Send + 'static> Timers<M> {
    pub(crate) fn new(sys: SysTx<M>, runtime: tokio::runtime::Handle) -> Self {
        Self {
            sys,
            runtime,
            active: BTreeMap::new(),
            next_generation: 0,
        }
    }

    /// Delivers `msg` to this actor once, after `delay`. Replaces any timer with the same key.
    pub fn start_single(&mut self, key: impl Into<String>, msg: M, delay: Duration) {
        let key = key.into();
        let generation = self.bump(&key);
        let sys = self.sys.clone();
        let task_key = key.clone();
        let task = self.runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            let fire = TimerFire {
                key: task_key,
                generation,
                msg,
                in_flight: None,
            };
            sys.send(SysMsg::Timer(fire));
        });
        self.active.insert(
            key,
            Active {
                generation,
                periodic: false,
                task: task.abort_handle(),
            },
        );
    }

    /// Delivers a clone of `msg` every `interval`, the first after one `interval`. Replaces any
    /// timer with the same key.
    pub fn start_periodic(&mut self, key: impl Into<String>, msg: M, interval: Duration)
    where
        M: Clone + Sync,
    {
        let key = key.into();
        let generation = self.bump(&key);
        let sys = self.sys.clone();
        let task_key = key.clone();
        let interval = interval.max(Duration::from_millis(1));
        let in_flight = Arc::new(AtomicBool::new(false));
        let task = self.runtime.spawn(async move {
            let mut ticks =
                tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if in_flight.swap(true, Ordering::AcqRel) {
                    continue; // the previous tick is still queued: skip, never pile up
                }
                let fire = TimerFire {
                    key: task_key.clone(),
                    generation,
                    msg: msg.clone(),
                    in_flight: Some(Arc::clone(&in_flight)),
                };
                if !sys.send(SysMsg::Timer(fire)) {
                    return;
                }
            }
        });
        self.active.insert(
            key,
            Active {
                generation,
                periodic: true,
                task: task.abort_handle(),
            },
        );
    }

    /// Cancels the timer with this key, if any. A message of it already on its way is discarded.
    pub fn cancel(&mut self, key: &str) {
        if let Some(a) = self.active.remove(key) {
            a.task.abort();
        }
    }

    /// True while a timer with this key is active (a single timer until its message is taken).
    pub fn is_active(&self, key: &str) -> bool {
        self.active.contains_key(key)
    }

    /// Cancels every timer.
    pub fn cancel_all(&mut self) {
        for (_, a) in std::mem::take(&mut self.active) {
            a.task.abort();
        }
    }

    fn bump(&mut self, key: &str) -> u64 {
        self.cancel(key);
        self.next_generation += 1;
        self.next_generation
    }

    /// Takes a fired timer's message if that timer is still the current one for its key.
    pub(crate) fn accept(&mut self, fire: TimerFire<M>) -> Option<M> {
        if let Some(flag) = &fire.in_flight {
            flag.store(false, Ordering::Release);
        }
        let current = self.active.get(&fire.key)?;
        if current.generation != fire.generation {
            return None;
        }
        if !current.periodic {
            self.active.remove(&fire.key);
        }
        Some(fire.msg)
    }
}

impl<M: Send + 'static> Drop for Timers<M> {
    fn drop(&mut self) {
        self.cancel_all();
    }
}
