//! The one shape every sans-IO protocol machine has.
//!
//! A machine is fed inputs with [`StateMachine::handle`] and timer expiries with
//! [`StateMachine::handle_timeout`]; it never reads a clock, never draws OS randomness, never spawns
//! and never awaits. The caller drains [`StateMachine::poll_output`] after every input and sleeps
//! until [`StateMachine::poll_timeout`]. One tokio pump and one simulation stepper drive every
//! machine the same way:
//!
//! ```text
//!   loop {
//!       wait for (next input) or (poll_timeout reached)
//!       handle(now, input)  |  handle_timeout(now)
//!       while let Some(out) = poll_output() { carry it out }
//!   }
//! ```

use std::time::Instant;

/// A deterministic protocol state machine.
pub trait StateMachine {
    /// Events fed to the machine.
    type Input;
    /// Actions and events the machine asks its driver to carry out or publish.
    type Output;

    /// Advances the machine with one input observed at `now`.
    fn handle(&mut self, now: Instant, input: Self::Input);

    /// Tells the machine that `now` has been reached. Spurious calls are harmless no-ops.
    fn handle_timeout(&mut self, now: Instant);

    /// The earliest instant at which [`StateMachine::handle_timeout`] must be called, if any.
    fn poll_timeout(&self) -> Option<Instant>;

    /// The next output, in the order the machine produced them.
    fn poll_output(&mut self) -> Option<Self::Output>;
}

/// Drains every pending output of a machine, in order. Handy in drivers and tests.
pub fn drain<M: StateMachine + ?Sized>(machine: &mut M) -> Vec<M::Output> {
    std::iter::from_fn(|| machine.poll_output()).collect()
}
