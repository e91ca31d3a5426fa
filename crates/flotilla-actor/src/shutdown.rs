//! Coordinated shutdown: the tokio driver of [`flotilla_proto::shutdown::ShutdownPlan`].
//!
//! Register tasks in phases with [`CoordinatedShutdown::add_task`]; start shutdown with
//! [`CoordinatedShutdown::run`] (or [`ActorSystem::terminate`](crate::ActorSystem::terminate), or a
//! signal once [`CoordinatedShutdown::install_signal_handlers`] was called). Phases run in the
//! fixed order of [`Phase::ALL`]; the tasks of one phase run concurrently and are **awaited**
//! before the next phase starts, up to the phase's timeout. A task that overruns is named in a
//! warning and in the returned report, and shutdown goes on. Shutdown runs once however often it
//! is triggered; every trigger gets the same report.
//!
//! This is the mechanism that makes lease releases, hand-offs and cluster leave finish before a
//! node exits: their tasks sit in the phases before `actor-system-terminate`.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use flotilla_core::{CoordinatedShutdownSettings, StateMachine};
pub use flotilla_proto::shutdown::{
    AddTaskError, Phase, PhaseReport, ShutdownReason, ShutdownReport, TaskId,
};
use flotilla_proto::shutdown::{ShutdownInput, ShutdownOutput, ShutdownPlan};
use tokio::sync::{mpsc, watch};

use crate::runner::guarded;

type TaskFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type TaskFn = Box<dyn FnOnce() -> TaskFuture + Send>;

/// The result of one coordinated shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownOutcome {
    /// What triggered it (the first trigger, if there were several).
    pub reason: ShutdownReason,
    /// What happened in each phase.
    pub report: ShutdownReport,
}

/// A registered task, for [`CoordinatedShutdown::cancel_task`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskHandle(TaskId);

struct State {
    plan: ShutdownPlan,
    tasks: BTreeMap<TaskId, TaskFn>,
    reason: Option<ShutdownReason>,
}

struct Inner {
    state: Mutex<State>,
    done: watch::Sender<Option<Arc<ShutdownOutcome>>>,
    runtime: tokio::runtime::Handle,
}

/// Coordinated shutdown of one actor system. Cheap to clone.
#[derive(Clone)]
pub struct CoordinatedShutdown {
    inner: Arc<Inner>,
}

impl fmt::Debug for CoordinatedShutdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoordinatedShutdown")
            .field("reason", &self.reason())
            .finish()
    }
}

impl CoordinatedShutdown {
    pub(crate) fn new(
        settings: CoordinatedShutdownSettings,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        let (done, _) = watch::channel(None);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    plan: ShutdownPlan::new(settings),
                    tasks: BTreeMap::new(),
                    reason: None,
                }),
                done,
                runtime,
            }),
        }
    }

    /// Registers a task in `phase`. It runs when shutdown reaches that phase, concurrently with
    /// the phase's other tasks. Fails once shutdown has reached or passed the phase.
    pub fn add_task<F, Fut>(
        &self,
        phase: Phase,
        name: &str,
        task: F,
    ) -> Result<TaskHandle, AddTaskError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.add_fallible_task(phase, name, move || async move {
            task().await;
            Ok::<(), std::convert::Infallible>(())
        })
    }

    /// Registers a task that can fail; its error is logged and reported, and shutdown goes on.
    pub fn add_fallible_task<F, Fut, E>(
        &self,
        phase: Phase,
        name: &str,
        task: F,
    ) -> Result<TaskHandle, AddTaskError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display,
    {
        let mut state = self.lock();
        let id = state.plan.add_task(phase, name)?;
        let boxed: TaskFn = Box::new(move || {
            Box::pin(async move { task().await.map_err(|e| e.to_string()) }) as TaskFuture
        });
        state.tasks.insert(id, boxed);
        Ok(TaskHandle(id))
    }

    /// Removes a task whose phase has not started. Returns whether it was removed.
    pub fn cancel_task(&self, handle: TaskHandle) -> bool {
        let mut state = self.lock();
        let removed = state.plan.cancel_task(handle.0);
        if removed {
            state.tasks.remove(&handle.0);
        }
        removed
    }

    /// Why shutdown was started, once it has been.
    pub fn reason(&self) -> Option<ShutdownReason> {
        self.lock().reason.clone()
    }

    /// Starts shutdown (the first call only; later calls just wait) and returns a future of its
    /// outcome. Shutdown proceeds whether or not the future is awaited.
    pub fn run(
        &self,
        reason: ShutdownReason,
    ) -> impl Future<Output = Arc<ShutdownOutcome>> + Send + 'static {
        let first = {
            let mut state = self.lock();
            if state.reason.is_none() {
                state.reason = Some(reason.clone());
                true
            } else {
                false
            }
        };
        if first {
            tracing::info!(%reason, "coordinated shutdown started: {reason}");
            self.inner
                .runtime
                .spawn(drive(Arc::clone(&self.inner), reason));
        } else {
            tracing::debug!(%reason, "coordinated shutdown already running; waiting for it");
        }
        self.completed()
    }

    /// A future of the outcome of shutdown, once some trigger has started it.
    pub fn completed(&self) -> impl Future<Output = Arc<ShutdownOutcome>> + Send + 'static {
        let mut rx = self.inner.done.subscribe();
        async move {
            loop {
                if let Some(outcome) = rx.borrow_and_update().as_ref() {
                    return Arc::clone(outcome);
                }
                if rx.changed().await.is_err() {
                    // The sender lives in `Inner`, which this receiver's owner keeps alive.
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// Starts shutdown on SIGTERM or Ctrl-C (SIGINT), with reason [`ShutdownReason::Signal`].
    pub fn install_signal_handlers(&self) {
        // Register before returning, so a signal that arrives right after this call is caught.
        let listener = {
            let _guard = self.inner.runtime.enter();
            SignalListener::register()
        };
        let cs = self.clone();
        self.inner.runtime.spawn(async move {
            let signal = listener.wait().await;
            cs.run(ShutdownReason::Signal(signal.to_owned())).await;
        });
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.inner)
    }
}

fn lock(inner: &Inner) -> MutexGuard<'_, State> {
    inner
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SIGTERM and SIGINT listeners, registered with the OS at once.
#[cfg(unix)]
struct SignalListener {
    term: Option<tokio::signal::unix::Signal>,
    int: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl SignalListener {
    fn register() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate())
            .map_err(|e| tracing::warn!("cannot listen for SIGTERM ({e})"))
            .ok();
        let int = signal(SignalKind::interrupt())
            .map_err(|e| tracing::warn!("cannot listen for SIGINT ({e})"))
            .ok();
        Self { term, int }
    }

    async fn wait(mut self) -> &'static str {
        async fn recv(s: Option<&mut tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(self.term.as_mut()) => "SIGTERM",
            () = recv(self.int.as_mut()) => "SIGINT (Ctrl-C)",
        }
    }
}

#[cfg(not(unix))]
struct SignalListener;

#[cfg(not(unix))]
impl SignalListener {
    fn register() -> Self {
        Self
    }

    async fn wait(self) -> &'static str {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

/// Pumps the plan: starts each phase's tasks, feeds their completions and the phase deadlines
/// back, and publishes the outcome. Makes no decision of its own.
async fn drive(inner: Arc<Inner>, reason: ShutdownReason) {
    let (finished_tx, mut finished_rx) = mpsc::unbounded_channel::<(TaskId, Result<(), String>)>();
    lock(&inner).plan.handle(now(), ShutdownInput::Start);
    loop {
        let (outputs, mut to_run) = {
            let mut state = lock(&inner);
            let outputs: Vec<_> = std::iter::from_fn(|| state.plan.poll_output()).collect();
            let mut to_run = Vec::new();
            for o in &outputs {
                if let ShutdownOutput::RunTasks { tasks, .. } = o {
                    for id in tasks {
                        let name = state.plan.task_name(*id).unwrap_or("?").to_owned();
                        to_run.push((*id, name, state.tasks.remove(id)));
                    }
                }
            }
            (outputs, to_run)
        };
        for o in outputs {
            match o {
                ShutdownOutput::RunTasks {
                    phase,
                    tasks,
                    timeout,
                } => {
                    let names: Vec<&str> = to_run.iter().map(|(_, n, _)| n.as_str()).collect();
                    tracing::info!(%phase, tasks = tasks.len(), "coordinated shutdown phase {phase}: running {} task(s) [{}], waiting up to {timeout:?}", tasks.len(), names.join(", "));
                    for (id, name, task) in to_run.drain(..) {
                        let tx = finished_tx.clone();
                        inner.runtime.spawn(async move {
                            let result = match task {
                                Some(task) => match guarded(task()).await {
                                    Ok(r) => r,
                                    Err(panic) => Err(format!("panicked: {panic}")),
                                },
                                None => Err(format!("task {name} has no body")),
                            };
                            let _ = tx.send((id, result));
                        });
                    }
                }
                ShutdownOutput::PhaseFinished(report) => log_phase(&report),
                ShutdownOutput::Finished(report) => {
                    let timed_out = report.timed_out_tasks();
                    if report.is_clean() {
                        tracing::info!(
                            "coordinated shutdown finished: every task completed in time"
                        );
                    } else {
                        tracing::warn!(
                            timed_out = timed_out.len(),
                            failed = report.failed_tasks().len(),
                            "coordinated shutdown finished with {} task(s) that overran their phase and {} that failed",
                            timed_out.len(),
                            report.failed_tasks().len()
                        );
                    }
                    let outcome = Arc::new(ShutdownOutcome { reason, report });
                    inner.done.send_replace(Some(outcome));
                    return;
                }
            }
        }
        let deadline = lock(&inner).plan.poll_timeout();
        let Some(deadline) = deadline else {
            // Not finished and no deadline cannot happen: a running phase always has one.
            debug_assert!(false, "shutdown plan is running without a deadline");
            return;
        };
        tokio::select! {
            Some((task, result)) = finished_rx.recv() => {
                lock(&inner).plan.handle(now(), ShutdownInput::TaskFinished { task, result });
            }
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)) => {
                lock(&inner).plan.handle_timeout(now());
            }
        }
    }
}

fn log_phase(r: &PhaseReport) {
    let phase = r.phase;
    for (task, error) in &r.failed {
        tracing::warn!(%phase, task, error, "coordinated shutdown task {task} in phase {phase} failed: {error}; going on");
    }
    if !r.timed_out.is_empty() {
        tracing::warn!(%phase, tasks = ?r.timed_out, "coordinated shutdown phase {phase} timed out after {:?}; still running: {}; going on without them", r.elapsed, r.timed_out.join(", "));
    } else if !r.completed.is_empty() || !r.failed.is_empty() {
        tracing::info!(%phase, "coordinated shutdown phase {phase} done in {:?}", r.elapsed);
    }
}
