//! Coordinated shutdown as a pure state machine.
//!
//! Tasks are registered in named [`Phase`]s. Once started, the plan runs the phases in their fixed
//! order. All tasks of one phase run concurrently and the next phase starts only when every one of
//! them has finished, or when the phase's timeout fires: then the stragglers are reported by name
//! and shutdown goes on. Phases without tasks pass at once.
//!
//! ```text
//!            Start                      every task finished, or deadline
//! NotStarted ─────▶ Running{phase 0} ─────────────────────────────────────▶ Running{phase 1} ─▶ …
//!                                                                   last phase ─▶ Finished
//! ```
//!
//! Inputs: [`ShutdownInput::Start`] (a second `Start` is a no-op: shutdown runs once however often
//! it is triggered) and [`ShutdownInput::TaskFinished`]. Outputs, in order:
//! [`ShutdownOutput::RunTasks`] (the driver starts those tasks), [`ShutdownOutput::PhaseFinished`],
//! and exactly one [`ShutdownOutput::Finished`] with the whole report.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::time::{Duration, Instant};

pub use flotilla_core::Phase;
use flotilla_core::{CoordinatedShutdownSettings, StateMachine};

/// Identifies one registered task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(u32);

/// Why shutdown was started.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShutdownReason {
    /// The application asked for it through the API.
    ApplicationRequest,
    /// The actor system was asked to terminate.
    ActorSystemTerminate,
    /// The process received SIGTERM or Ctrl-C.
    Signal(String),
    /// The node left the cluster.
    ClusterLeaving,
    /// The node was downed by the cluster.
    ClusterDowning,
    /// Anything else, in words.
    Other(String),
}

impl fmt::Display for ShutdownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ApplicationRequest => f.write_str("the application requested shutdown"),
            Self::ActorSystemTerminate => f.write_str("the actor system was asked to terminate"),
            Self::Signal(s) => write!(f, "the process received {s}"),
            Self::ClusterLeaving => f.write_str("the node left the cluster"),
            Self::ClusterDowning => f.write_str("the node was downed by the cluster"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// A task could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddTaskError {
    /// Shutdown has already reached or passed the task's phase, so the task would never run.
    #[error("cannot add task {name:?} to phase {phase}: shutdown is already at phase {current}")]
    PhaseAlreadyStarted {
        /// The task's name.
        name: String,
        /// The phase it was meant for.
        phase: Phase,
        /// The phase shutdown is in (or the last one, once finished).
        current: Phase,
    },
}

/// What happened in one phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseReport {
    /// The phase.
    pub phase: Phase,
    /// From the phase's start to its end.
    pub elapsed: Duration,
    /// Tasks that finished in time, in completion order.
    pub completed: Vec<String>,
    /// Tasks that failed (returned an error or panicked) in time, with the failure.
    pub failed: Vec<(String, String)>,
    /// Tasks still running when the phase timed out, in registration order.
    pub timed_out: Vec<String>,
}

/// What happened in a whole shutdown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// One report per phase, in run order (phases without tasks included).
    pub phases: Vec<PhaseReport>,
}

impl ShutdownReport {
    /// Every task that overran its phase, with that phase.
    pub fn timed_out_tasks(&self) -> Vec<(Phase, String)> {
        self.phases
            .iter()
            .flat_map(|p| p.timed_out.iter().map(move |t| (p.phase, t.clone())))
            .collect()
    }

    /// Every task that failed, with its phase and failure.
    pub fn failed_tasks(&self) -> Vec<(Phase, String, String)> {
        self.phases
            .iter()
            .flat_map(|p| {
                p.failed
                    .iter()
                    .map(move |(t, e)| (p.phase, t.clone(), e.clone()))
            })
            .collect()
    }

    /// True when every task finished successfully within its phase.
    pub fn is_clean(&self) -> bool {
        self.phases
            .iter()
            .all(|p| p.timed_out.is_empty() && p.failed.is_empty())
    }
}

/// Inputs of the [`ShutdownPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShutdownInput {
    /// Begin shutdown. Later `Start`s are ignored.
    Start,
    /// A task returned: `Ok(())`, or `Err` with the failure in words.
    TaskFinished {
        /// Which task.
        task: TaskId,
        /// Its outcome.
        result: Result<(), String>,
    },
}

/// Outputs of the [`ShutdownPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShutdownOutput {
    /// Start these tasks now, concurrently.
    RunTasks {
        /// The phase they belong to.
        phase: Phase,
        /// The tasks, in registration order.
        tasks: Vec<TaskId>,
        /// How long the phase waits for them.
        timeout: Duration,
    },
    /// A phase ended.
    PhaseFinished(PhaseReport),
    /// The last phase ended. Emitted exactly once.
    Finished(ShutdownReport),
}

#[derive(Debug)]
struct Registered {
    phase: Phase,
    name: String,
}

#[derive(Debug)]
enum PlanState {
    NotStarted,
    Running {
        /// Index into [`Phase::ALL`].
        index: usize,
        started: Instant,
        deadline: Instant,
        pending: BTreeMap<TaskId, String>,
        completed: Vec<String>,
        failed: Vec<(String, String)>,
    },
    Finished,
}

/// The coordinated-shutdown state machine. See the [module docs](self).
#[derive(Debug)]
pub struct ShutdownPlan {
    settings: CoordinatedShutdownSettings,
    tasks: BTreeMap<TaskId, Registered>,
    next_id: u32,
    state: PlanState,
    reports: Vec<PhaseReport>,
    outputs: VecDeque<ShutdownOutput>,
}

impl ShutdownPlan {
    /// A plan with no tasks yet.
    pub fn new(settings: CoordinatedShutdownSettings) -> Self {
        Self {
            settings,
            tasks: BTreeMap::new(),
            next_id: 0,
            state: PlanState::NotStarted,
            reports: Vec::new(),
            outputs: VecDeque::new(),
        }
    }

    /// Registers a task in `phase`. Fails once shutdown has reached or passed that phase.
    pub fn add_task(&mut self, phase: Phase, name: &str) -> Result<TaskId, AddTaskError> {
        let current = match &self.state {
            PlanState::NotStarted => None,
            PlanState::Running { index, .. } => Some(Phase::ALL[*index]),
            PlanState::Finished => Some(Phase::ActorSystemTerminate),
        };
        if let Some(current) = current.filter(|c| *c >= phase) {
            return Err(AddTaskError::PhaseAlreadyStarted {
                name: name.to_owned(),
                phase,
                current,
            });
        }
        let id = TaskId(self.next_id);
        self.next_id += 1;
        self.tasks.insert(
            id,
            Registered {
                phase,
                name: name.to_owned(),
            },
        );
        Ok(id)
    }

    /// Removes a task that has not started yet. Returns whether it was removed.
    pub fn cancel_task(&mut self, task: TaskId) -> bool {
        let Some(reg) = self.tasks.get(&task) else {
            return false;
        };
        let started = match &self.state {
            PlanState::NotStarted => false,
            PlanState::Running { index, .. } => Phase::ALL[*index] >= reg.phase,
            PlanState::Finished => true,
        };
        !started && self.tasks.remove(&task).is_some()
    }

    /// The name a task was registered with.
    pub fn task_name(&self, task: TaskId) -> Option<&str> {
        self.tasks.get(&task).map(|r| r.name.as_str())
    }

    /// True once [`ShutdownInput::Start`] was handled.
    pub fn is_started(&self) -> bool {
        !matches!(self.state, PlanState::NotStarted)
    }

    /// True once the last phase has ended.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, PlanState::Finished)
    }

    /// Enters phase `index` (or finishes), passing through phases without tasks.
    fn enter(&mut self, now: Instant, mut index: usize) {
        while index < Phase::ALL.len() {
            let phase = Phase::ALL[index];
            let pending: BTreeMap<TaskId, String> = self
                .tasks
                .iter()
                .filter(|(_, r)| r.phase == phase)
                .map(|(id, r)| (*id, r.name.clone()))
                .collect();
            if pending.is_empty() {
                self.finish_phase(PhaseReport {
                    phase,
                    elapsed: Duration::ZERO,
                    completed: Vec::new(),
                    failed: Vec::new(),
                    timed_out: Vec::new(),
                });
                index += 1;
                continue;
            }
            let timeout = self.settings.phase_timeout(phase);
            self.outputs.push_back(ShutdownOutput::RunTasks {
                phase,
                tasks: pending.keys().copied().collect(),
                timeout,
            });
            self.state = PlanState::Running {
                index,
                started: now,
                deadline: now + timeout,
                pending,
                completed: Vec::new(),
                failed: Vec::new(),
            };
            return;
        }
        self.state = PlanState::Finished;
        self.outputs
            .push_back(ShutdownOutput::Finished(ShutdownReport {
                phases: self.reports.clone(),
            }));
    }

    fn finish_phase(&mut self, report: PhaseReport) {
        self.reports.push(report.clone());
        self.outputs
            .push_back(ShutdownOutput::PhaseFinished(report));
    }

    /// Ends the running phase if it is complete or `timed_out`, then enters the next one.
    fn maybe_advance(&mut self, now: Instant, timed_out: bool) {
        let PlanState::Running {
            index,
            started,
            pending,
            completed,
            failed,
            ..
        } = &mut self.state
        else {
            return;
        };
        if !pending.is_empty() && !timed_out {
            return;
        }
        let index = *index;
        let report = PhaseReport {
            phase: Phase::ALL[index],
            elapsed: now.saturating_duration_since(*started),
            completed: std::mem::take(completed),
            failed: std::mem::take(failed),
            timed_out: std::mem::take(pending).into_values().collect(),
        };
        self.finish_phase(report);
        self.enter(now, index + 1);
    }
}

impl StateMachine for ShutdownPlan {
    type Input = ShutdownInput;
    type Output = ShutdownOutput;

    fn handle(&mut self, now: Instant, input: ShutdownInput) {
        match input {
            ShutdownInput::Start => {
                if matches!(self.state, PlanState::NotStarted) {
                    self.enter(now, 0);
                }
            }
            ShutdownInput::TaskFinished { task, result } => {
                let PlanState::Running {
                    pending,
                    completed,
                    failed,
                    ..
                } = &mut self.state
                else {
                    return;
                };
                // A task of an earlier phase that finishes after its phase timed out is ignored:
                // it was already reported as timed out.
                let Some(name) = pending.remove(&task) else {
                    return;
                };
                match result {
                    Ok(()) => completed.push(name),
                    Err(e) => failed.push((name, e)),
                }
                self.maybe_advance(now, false);
            }
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let PlanState::Running { deadline, .. } = &self.state
            && now >= *deadline
        {
            self.maybe_advance(now, true);
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            PlanState::Running { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    fn poll_output(&mut self) -> Option<ShutdownOutput> {
        self.outputs.pop_front()
    }
}

#[cfg(test)]
mod tests;
