//! The task that runs one actor: its message loop, supervision and stop sequence.
//!
//! ```text
//!  spawn ─▶ pre_start ─▶ running ──failure──▶ supervise ─┬─ Resume ──────────▶ running
//!                          │  ▲                          ├─ Restart: pre_restart, stop children,
//!                          │  └──────────────────────────┤  backoff, new instance, pre_start,
//!                          │                             │  post_restart ────▶ running
//!                          │                             ├─ Stop / limit ───▶ stopping
//!                          │                             └─ Escalate ───────▶ stopping (+ parent fails)
//!                          └── Stop signal / ctx.stop() ───────────────────▶ stopping
//!  stopping: stop children (await all) ─▶ post_stop ─▶ mailbox to dead letters
//!            ─▶ Terminated to every watcher ─▶ free the name ─▶ tell the parent
//! ```
//!
//! The system lane is drained before every user message, so stops, death notices and escalations
//! never wait behind a long mailbox.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use flotilla_proto::supervision::{RestartBudget, RestartDecision};

use crate::actor::{Actor, ActorError, Failure, Terminated};
use crate::actor_ref::ActorId;
use crate::cell::{Erased, Signal, SysMsg};
use crate::context::Context;
use crate::dead_letters::DeadLetterReason;
use crate::mailbox::MailboxRx;
use crate::props::{Directive, Props};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    Stop,
}

/// What the run loop took from its lanes (`None`: the lane closed).
enum Next<M> {
    Sys(Option<SysMsg<M>>),
    User(Option<M>),
}

/// The result of one handler or signal: go on, stop, or a failure to supervise.
enum Step {
    Continue,
    Stop,
    Failed(Failure),
}

pin_project_lite::pin_project! {
    /// Polls a future, turning a panic inside it into `Err(message)`. A plain future rather than
    /// an `async fn`, so the hot path has one state machine less to move messages through.
    pub(crate) struct Guarded<F> {
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for Guarded<F> {
    type Output = Result<F::Output, String>;

    #[inline]
    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let fut = self.project().fut;
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(panic_message(payload.as_ref()))),
        }
    }
}

/// Wraps a future so that a panic inside it becomes `Err(message)`.
#[inline]
pub(crate) fn guarded<F: Future>(fut: F) -> Guarded<F> {
    Guarded { fut }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".to_owned())
}

#[inline]
fn outcome(r: Result<Result<(), ActorError>, String>) -> Result<(), Failure> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Failure::from_error(e)),
        Err(panic) => Err(Failure::Panic(panic)),
    }
}

impl Step {
    #[inline]
    fn after(r: Result<(), Failure>, stop_requested: bool) -> Self {
        match r {
            Ok(()) if stop_requested => Self::Stop,
            Ok(()) => Self::Continue,
            Err(f) => Self::Failed(f),
        }
    }
}

pub(crate) struct Runner<A: Actor> {
    pub(crate) actor: A,
    pub(crate) ctx: Context<A::Msg>,
    pub(crate) props: Props<A>,
    pub(crate) budget: RestartBudget,
    pub(crate) sys_rx: crate::sys_lane::SysRx<A::Msg>,
    pub(crate) mailbox: MailboxRx<A::Msg>,
    pub(crate) parent: Option<Arc<dyn Erased>>,
    /// Actors watching this one: each gets one `Terminated` when it stops.
    pub(crate) watchers: BTreeMap<ActorId, Arc<dyn Erased>>,
    /// Signals that arrived while the actor was between instances (restart backoff).
    pub(crate) stash: VecDeque<Signal>,
    /// Set when this actor stops because it escalated a failure to its parent.
    pub(crate) escalated: Option<Failure>,
    /// Raised by [`crate::ActorRef::stop_now`]: the handler in progress is abandoned.
    pub(crate) abort: Arc<crate::cell::Abort>,
}

impl<A: Actor> Runner<A> {
    pub(crate) async fn run(mut self) {
        tracing::debug!(path = %self.ctx.path(), "actor started");
        let started = outcome(guarded(self.actor.pre_start(&mut self.ctx)).await);
        let mut flow = self
            .settle_boxed(Step::after(started, self.ctx.stop_requested))
            .await;
        if flow == Flow::Continue {
            flow = self.main_loop().await;
        }
        debug_assert_eq!(flow, Flow::Stop);
        self.finish().await;
    }

    async fn main_loop(&mut self) -> Flow {
        loop {
            // One poll of both lanes, system lane first. `poll_recv` never blocks the thread (a
            // `try_recv` racing a sender mid-write parks the worker) and spends tokio's
            // cooperative budget, so a busy actor still yields to its neighbours.
            let next = {
                let (sys, mailbox) = (&mut self.sys_rx, &mut self.mailbox);
                std::future::poll_fn(|cx| {
                    if sys.has_pending()
                        && let Poll::Ready(m) = sys.poll_recv(cx)
                    {
                        return Poll::Ready(Next::Sys(m));
                    }
                    if let Poll::Ready(m) = mailbox.poll_recv(cx) {
                        return Poll::Ready(Next::User(m));
                    }
                    // The mailbox is empty: wait on the system lane too.
                    sys.poll_recv(cx).map(Next::Sys)
                })
                .await
            };
            let step = match next {
                // The cell holds a sender of each lane, so they close only in `finish`.
                Next::Sys(None) | Next::User(None) => return Flow::Stop,
                Next::Sys(Some(m)) => self.on_sys(m).await,
                // Inline rather than through `on_message`: one async layer less per message.
                Next::User(Some(msg)) => {
                    let handled = self
                        .abort
                        .guard(guarded(self.actor.handle(msg, &mut self.ctx)))
                        .await;
                    match handled {
                        Some(r) => Step::after(outcome(r), self.ctx.stop_requested),
                        None => self.abandoned(),
                    }
                }
            };
            match step {
                Step::Continue => {}
                step => {
                    if self.settle_boxed(step).await == Flow::Stop {
                        return Flow::Stop;
                    }
                }
            }
        }
    }

    async fn on_message(&mut self, msg: A::Msg) -> Step {
        let handled = self
            .abort
            .guard(guarded(self.actor.handle(msg, &mut self.ctx)))
            .await;
        match handled {
            Some(r) => Step::after(outcome(r), self.ctx.stop_requested),
            None => self.abandoned(),
        }
    }

    /// The actor was stopped at once ([`crate::ActorRef::stop_now`]) with a message in hand.
    #[cold]
    fn abandoned(&self) -> Step {
        let path = self.ctx.path();
        tracing::debug!(%path, "actor {path} stopped at once: the message in hand was abandoned");
        metrics::counter!("flotilla_actor_abandoned_messages_total").increment(1);
        Step::Stop
    }

    async fn on_sys(&mut self, m: SysMsg<A::Msg>) -> Step {
        match m {
            SysMsg::Timer(fire) => match self.ctx.timers.accept(fire) {
                Some(msg) => self.on_message(msg).await,
                None => Step::Continue,
            },
            SysMsg::Signal(s) => self.on_signal(s).await,
        }
    }

    async fn on_signal(&mut self, s: Signal) -> Step {
        match s {
            Signal::Stop => Step::Stop,
            Signal::Watch { watcher } => {
                self.watchers.insert(watcher.id(), watcher);
                Step::Continue
            }
            Signal::Unwatch { watcher } => {
                self.watchers.remove(&watcher);
                Step::Continue
            }
            Signal::Terminated { id, path } => {
                if self.ctx.watching.remove(&id).is_none() {
                    return Step::Continue; // unwatched, or already notified
                }
                let t = Terminated { id, path };
                let r = outcome(guarded(self.actor.on_terminated(t, &mut self.ctx)).await);
                Step::after(r, self.ctx.stop_requested)
            }
            Signal::ChildTerminated => Step::Continue,
            Signal::ChildFailed { child, failure } => Step::Failed(Failure::Escalated {
                child,
                cause: Box::new(failure),
            }),
        }
    }

    /// [`Self::settle`] behind a box: failures are the cold path, and keeping supervision's
    /// states (restart backoff, hook futures) out of the run future makes every spawn cheaper.
    async fn settle_boxed(&mut self, step: Step) -> Flow {
        match step {
            Step::Continue => Flow::Continue,
            Step::Stop => Flow::Stop,
            failed => Box::pin(self.settle(failed)).await,
        }
    }

    /// Turns a step into a flow, supervising failures. Iterative: a failure while replaying
    /// stashed signals after a restart is supervised by the same loop.
    async fn settle(&mut self, step: Step) -> Flow {
        let mut failure = match step {
            Step::Continue => return Flow::Continue,
            Step::Stop => return Flow::Stop,
            Step::Failed(f) => f,
        };
        loop {
            let path = self.ctx.path().clone();
            let directive = self.props.strategy.decide(&failure);
            metrics::counter!("flotilla_actor_failures_total").increment(1);
            match directive {
                Directive::Resume => {
                    tracing::warn!(%path, %failure, "actor {path} failed: {failure}; resuming it with its current state (supervision: resume)");
                    return Flow::Continue;
                }
                Directive::Stop => {
                    tracing::error!(%path, %failure, "actor {path} failed: {failure}; stopping it (supervision: stop)");
                    return Flow::Stop;
                }
                Directive::Escalate => {
                    tracing::error!(%path, %failure, "actor {path} failed: {failure}; stopping it and escalating the failure to its parent");
                    self.escalated = Some(failure);
                    return Flow::Stop;
                }
                Directive::Restart => match self.restart(failure).await {
                    Step::Continue => return Flow::Continue,
                    Step::Stop => return Flow::Stop,
                    Step::Failed(f) => failure = f,
                },
            }
        }
    }

    /// Replaces the failed instance, retrying while the new one fails to start. Returns
    /// `Failed` when replaying signals stashed during the backoff fails the new instance.
    async fn restart(&mut self, mut failure: Failure) -> Step {
        let path = self.ctx.path().clone();
        loop {
            let now = tokio::time::Instant::now().into_std();
            let within = self.budget.settings().within();
            let max = self.budget.settings().max_restarts();
            match self.budget.on_failure(now, rand::random::<f64>()) {
                RestartDecision::GiveUp { restarts } => {
                    tracing::error!(%path, %failure, restarts, "actor {path} failed: {failure}; it already restarted {restarts} times within {within:?}, the limit: stopping it");
                    return Step::Stop;
                }
                RestartDecision::Restart { backoff, attempt } => {
                    tracing::warn!(%path, %failure, attempt, ?backoff, "actor {path} failed: {failure}; restarting it in {backoff:?} (restart {attempt} of at most {max} within {within:?})");
                    metrics::counter!("flotilla_actor_restarts_total").increment(1);
                    if let Err(p) = guarded(self.actor.pre_restart(&mut self.ctx, &failure)).await {
                        tracing::error!(%path, "pre_restart of {path} panicked: {p}");
                    }
                    self.ctx.timers.cancel_all();
                    let stop_seen = self.stop_children().await;
                    if stop_seen || self.wait_backoff(backoff).await == Flow::Stop {
                        return Step::Stop;
                    }
                    let fresh = std::panic::catch_unwind(AssertUnwindSafe(&mut self.props.factory));
                    let started = match fresh {
                        Err(p) => Err(Failure::Panic(panic_message(p.as_ref()))),
                        Ok(actor) => {
                            self.actor = actor;
                            self.ctx.stop_requested = false;
                            match outcome(guarded(self.actor.pre_start(&mut self.ctx)).await) {
                                Ok(()) => outcome(
                                    guarded(self.actor.post_restart(&mut self.ctx, &failure)).await,
                                ),
                                Err(f) => Err(f),
                            }
                        }
                    };
                    match started {
                        Ok(()) => {
                            tracing::info!(%path, attempt, "actor {path} restarted");
                            return self.replay_stash().await;
                        }
                        Err(f) => failure = f,
                    }
                }
            }
        }
    }

    /// Waits out a restart backoff while still answering stops and watches.
    async fn wait_backoff(&mut self, backoff: Duration) -> Flow {
        let sleep = tokio::time::sleep(backoff);
        let mut sleep = std::pin::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                m = self.sys_rx.recv() => match m {
                    None => return Flow::Stop,
                    Some(SysMsg::Timer(_)) => {} // timers were cancelled with the old instance
                    Some(SysMsg::Signal(s)) => if self.absorb(s) == Flow::Stop {
                        return Flow::Stop;
                    },
                },
                () = &mut sleep => return Flow::Continue,
            }
        }
    }

    /// Handles a signal while there is no instance to run hooks on: bookkeeping now, the rest
    /// stashed for the next instance.
    fn absorb(&mut self, s: Signal) -> Flow {
        match s {
            Signal::Stop => return Flow::Stop,
            Signal::Watch { watcher } => {
                self.watchers.insert(watcher.id(), watcher);
            }
            Signal::Unwatch { watcher } => {
                self.watchers.remove(&watcher);
            }
            Signal::ChildTerminated => {}
            Signal::ChildFailed { child, failure } => {
                tracing::warn!(path = %self.ctx.path(), %child, %failure, "child {child} failed ({failure}) while its parent was restarting; the child has stopped");
            }
            t @ Signal::Terminated { .. } => self.stash.push_back(t),
        }
        Flow::Continue
    }

    async fn replay_stash(&mut self) -> Step {
        while let Some(s) = self.stash.pop_front() {
            match self.on_signal(s).await {
                Step::Continue => {}
                other => return other,
            }
        }
        Step::Continue
    }

    /// Stops every child and waits until all have fully stopped. Returns whether a stop of this
    /// actor was requested meanwhile.
    async fn stop_children(&mut self) -> bool {
        let me = self.ctx.myself.erased();
        let kids: Vec<Arc<dyn Erased>> = {
            let mut children = me.children();
            children.awaited = true;
            children.by_name.values().cloned().collect()
        };
        for kid in &kids {
            kid.signal(Signal::Stop);
        }
        let mut stop_seen = false;
        while !me.children().by_name.is_empty() {
            match self.sys_rx.recv().await {
                None => break,
                Some(SysMsg::Timer(_)) => {}
                Some(SysMsg::Signal(s)) => stop_seen |= self.absorb(s) == Flow::Stop,
            }
        }
        me.children().awaited = false;
        stop_seen
    }

    async fn finish(&mut self) {
        let path = self.ctx.path().clone();
        let me = self.ctx.myself.erased();
        me.children().closed = true;
        self.ctx.timers.cancel_all();
        self.stop_children().await;
        if let Err(p) = guarded(self.actor.post_stop(&mut self.ctx)).await {
            tracing::error!(%path, "post_stop of {path} panicked: {p}");
        }
        let me_id = self.ctx.myself.id();
        let cell = self.ctx.myself.local_cell().cloned();
        if let Some(cell) = &cell {
            cell.mark_closing();
        }
        self.mailbox.close();
        while let Ok(msg) = self.mailbox.try_recv() {
            if let Some(cell) = &cell {
                cell.dead_letter(msg, DeadLetterReason::RecipientStopped);
            }
        }
        self.sys_rx.close();
        while let Some(m) = self.sys_rx.try_recv() {
            if let SysMsg::Signal(Signal::Watch { watcher }) = m {
                self.watchers.insert(watcher.id(), watcher);
            }
        }
        for (_, target) in std::mem::take(&mut self.ctx.watching) {
            target.signal(Signal::Unwatch { watcher: me_id });
        }
        for (_, watcher) in std::mem::take(&mut self.watchers) {
            watcher.signal(Signal::Terminated {
                id: me_id,
                path: path.clone(),
            });
        }
        if let Some(parent) = &self.parent {
            let mut siblings = parent.children();
            if siblings
                .by_name
                .get(path.name())
                .is_some_and(|c| c.id() == me_id)
            {
                siblings.by_name.remove(path.name());
            }
        }
        self.ctx.system.inner.actor_stopped();
        if let Some(cell) = &cell {
            cell.mark_stopped();
        }
        tracing::debug!(%path, "actor stopped");
        if let Some(parent) = &self.parent {
            match self.escalated.take() {
                Some(failure) => parent.signal(Signal::ChildFailed {
                    child: path,
                    failure,
                }),
                None => parent.signal(Signal::ChildTerminated),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    struct Tiny;

    impl crate::Actor for Tiny {
        type Msg = u64;
        async fn handle(
            &mut self,
            _: u64,
            _: &mut crate::Context<u64>,
        ) -> Result<(), crate::ActorError> {
            Ok(())
        }
    }

    /// tokio copies an actor's whole run future into its task at spawn, so its size is part of
    /// the cost of every spawn. Supervision's states are boxed to keep it small; this guards that.
    #[tokio::test]
    async fn the_run_future_of_a_small_actor_stays_small() {
        let system = crate::ActorSystem::new("size").unwrap();
        let path = system.inner.root.child("tiny");
        let props = crate::Props::new(|| Tiny);
        let (_actor, runner) = crate::system::prepare(&system, None, path, Tiny, props);
        let run = runner.run();
        let bytes = size_of_val(&run);
        assert!(
            bytes <= 1536,
            "the run future grew to {bytes} bytes (was 1200)"
        );
        drop(run);
    }
}
