//! How to create an actor: its factory, supervision strategy and mailbox.

use std::fmt;
use std::sync::Arc;

pub use flotilla_proto::supervision::{RestartSettings, RestartSettingsError};

use crate::actor::{Actor, Failure};

/// What to do with a failed actor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    /// Keep the instance and its state; drop the message that failed and go on.
    Resume,
    /// Replace the instance with a fresh one from the factory, after the strategy's backoff; the
    /// children are stopped first. Past the restart limit the actor stops.
    Restart,
    /// Stop the actor (and its children).
    Stop,
    /// Stop the actor and fail its parent with [`Failure::Escalated`].
    Escalate,
}

type Decider = Arc<dyn Fn(&Failure) -> Directive + Send + Sync>;

/// How an actor's own failures are handled. Each actor carries its own strategy, chosen by
/// whoever spawns it (as `Behaviors.supervise` does in Akka Typed).
#[derive(Clone)]
pub struct SupervisorStrategy {
    decider: Decider,
    restart: RestartSettings,
}

impl SupervisorStrategy {
    /// Stop on every failure. The default, as in Akka Typed.
    pub fn stop() -> Self {
        Self::from_decider(|_| Directive::Stop)
    }

    /// Resume on every failure: log it, drop the failing message, keep the state.
    pub fn resume() -> Self {
        Self::from_decider(|_| Directive::Resume)
    }

    /// Escalate every failure to the parent.
    pub fn escalate() -> Self {
        Self::from_decider(|_| Directive::Escalate)
    }

    /// Restart on every failure with exponential backoff, stopping past the restart limit.
    pub fn restart(settings: RestartSettings) -> Self {
        Self {
            decider: Arc::new(|_| Directive::Restart),
            restart: settings,
        }
    }

    /// Decide per failure. [`Directive::Restart`] uses [`RestartSettings::default`] unless
    /// [`SupervisorStrategy::with_restart_settings`] says otherwise.
    pub fn from_decider(decider: impl Fn(&Failure) -> Directive + Send + Sync + 'static) -> Self {
        Self {
            decider: Arc::new(decider),
            restart: RestartSettings::default(),
        }
    }

    /// Sets the backoff and limit used when the decider says [`Directive::Restart`].
    #[must_use]
    pub fn with_restart_settings(mut self, settings: RestartSettings) -> Self {
        self.restart = settings;
        self
    }

    pub(crate) fn decide(&self, failure: &Failure) -> Directive {
        (self.decider)(failure)
    }

    pub(crate) fn restart_settings(&self) -> &RestartSettings {
        &self.restart
    }
}

impl Default for SupervisorStrategy {
    fn default() -> Self {
        Self::stop()
    }
}

impl fmt::Debug for SupervisorStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisorStrategy")
            .field("restart", &self.restart)
            .finish_non_exhaustive()
    }
}

/// What a bounded mailbox does with a message when it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// [`ActorRef::send`](crate::ActorRef::send) and `ask` wait for space (backpressure).
    /// [`ActorRef::tell`](crate::ActorRef::tell) never waits: on a full mailbox its message goes
    /// to dead letters.
    Wait,
    /// The new message goes to dead letters, whichever way it was sent.
    DropNewest,
}

/// An actor's mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MailboxConfig {
    /// No limit (the default).
    #[default]
    Unbounded,
    /// At most `capacity` queued messages.
    Bounded {
        /// The limit; at least 1.
        capacity: usize,
        /// What happens to a message that does not fit.
        overflow: Overflow,
    },
}

/// Everything needed to create, and re-create on restart, an actor.
pub struct Props<A: Actor> {
    pub(crate) factory: Box<dyn FnMut() -> A + Send>,
    pub(crate) strategy: SupervisorStrategy,
    pub(crate) mailbox: MailboxConfig,
    pub(crate) control: Option<fn(&A::Msg) -> bool>,
}

impl<A: Actor> Props<A> {
    /// Props whose instances come from `factory` (called again on every restart).
    pub fn new(factory: impl FnMut() -> A + Send + 'static) -> Self {
        Self {
            factory: Box::new(factory),
            strategy: SupervisorStrategy::default(),
            mailbox: MailboxConfig::default(),
            control: None,
        }
    }

    /// Sets the supervision strategy.
    #[must_use]
    pub fn with_supervisor(mut self, strategy: SupervisorStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Names the actor's control messages (a control-aware mailbox, as Akka's): those for which
    /// `is_control` is true go into a lane of their own, unbounded, that the actor reads before
    /// its ordinary mailbox, so that they never wait behind ordinary traffic. They may overtake
    /// ordinary messages sent before them, also by the same sender. For an actor that takes both
    /// protocol messages and bulk traffic (a shard region, say).
    #[must_use]
    pub fn with_control_messages(mut self, is_control: fn(&A::Msg) -> bool) -> Self {
        self.control = Some(is_control);
        self
    }

    /// Sets the mailbox. A bounded capacity of 0 is raised to 1.
    #[must_use]
    pub fn with_mailbox(mut self, mailbox: MailboxConfig) -> Self {
        self.mailbox = match mailbox {
            MailboxConfig::Bounded { capacity, overflow } => MailboxConfig::Bounded {
                capacity: capacity.max(1),
                overflow,
            },
            unbounded => unbounded,
        };
        self
    }
}

impl<A: Actor + Default> Default for Props<A> {
    fn default() -> Self {
        Self::new(A::default)
    }
}

impl<A: Actor> fmt::Debug for Props<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Props")
            .field("actor", &std::any::type_name::<A>())
            .field("strategy", &self.strategy)
            .field("mailbox", &self.mailbox)
            .field("control_aware", &self.control.is_some())
            .finish()
    }
}
