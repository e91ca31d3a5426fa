//! Flotilla's local actor runtime on tokio.
//!
//! # Layout
//! - [`Actor`]: state plus an async handler for one message type, with lifecycle hooks.
//! - [`ActorRef`]: `tell` (never blocks; FIFO per sender), `send` (waits on a full bounded
//!   mailbox), `ask` with a timeout and typed [`AskError`]s.
//! - [`ActorSystem`]: name, 64-bit incarnation UID, `/user` and `/system` guardians, event stream,
//!   dead letters and [`CoordinatedShutdown`].
//! - [`Props`] and [`SupervisorStrategy`]: how an actor is created, re-created and what happens
//!   when it fails (Resume, Restart with backoff and a limit, Stop, Escalate).
//! - [`Context`]: spawn children, watch and unwatch, timers, stop.
//!
//! # A first actor
//! ```
//! use std::time::Duration;
//! use flotilla_actor::{Actor, ActorError, ActorSystem, Context, Props, ReplyTo};
//!
//! enum CounterMsg {
//!     Add(u64),
//!     Get(ReplyTo<u64>),
//! }
//!
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl Actor for Counter {
//!     type Msg = CounterMsg;
//!     async fn handle(&mut self, msg: CounterMsg, _ctx: &mut Context<CounterMsg>) -> Result<(), ActorError> {
//!         match msg {
//!             CounterMsg::Add(n) => self.0 += n,
//!             CounterMsg::Get(reply) => { reply.send(self.0); }
//!         }
//!         Ok(())
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let system = ActorSystem::new("docs")?;
//! let counter = system.spawn("counter", Props::<Counter>::default())?;
//! counter.tell(CounterMsg::Add(2));
//! counter.tell(CounterMsg::Add(3));
//! let total = counter.ask(CounterMsg::Get, Duration::from_secs(1)).await?;
//! assert_eq!(total, 5);
//! assert_eq!(counter.path().to_string(), "flotilla://docs/user/counter");
//! system.terminate().await;
//! # Ok(())
//! # }
//! ```
//!
//! # What this crate is not
//! It makes no protocol decisions of its own where a pure machine exists: restart budgets and
//! shutdown phase sequencing come from `flotilla-proto`, and remoting (`flotilla-remote`, with
//! the association, reliable delivery and failure-detector machines) carries messages between
//! nodes. Cluster membership and sharding build on it in other crates.
//!
//! # Remote actors
//! A system built with [`ActorSystemBuilder::remote`] listens for other nodes. An actor
//! [exposed](ActorSystem::expose) there is reached from another node through
//! [`ActorSystem::remote_ref`], and used like a local one (`tell`, `ask`, `watch`); its messages
//! implement [`RemoteMessage`].

mod actor;
mod actor_ref;
mod cell;
mod context;
mod dead_letters;
mod event_stream;
mod mailbox;
mod props;
mod remote;
mod runner;
pub mod shutdown;
mod sys_lane;
mod system;
mod timers;

pub use actor::{Actor, ActorError, DeathPact, Failure, Never, Terminated};
pub use actor_ref::{ActorId, ActorRef, AskError, ReplyTo};
pub use context::Context;
pub use dead_letters::{DeadLetter, DeadLetterReason};
pub use event_stream::EventStream;
pub use props::{
    Directive, MailboxConfig, Overflow, Props, RestartSettings, RestartSettingsError,
    SupervisorStrategy,
};
pub use remote::{AssociationEvent, RemoteMessage, RemoteRefError, ThisSystemQuarantined};
pub use shutdown::{CoordinatedShutdown, Phase, ShutdownOutcome, ShutdownReason, ShutdownReport};
pub use system::{ActorSystem, ActorSystemBuilder, SpawnError, SystemError};
pub use timers::Timers;
