//! The actor system: identity, guardians, spawning and termination.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use flotilla_core::path::validate_actor_name;
use flotilla_core::{
    ActorPath, Address, AddressParseError, FlotillaConfig, InvalidActorName, UniqueAddress,
};
use flotilla_proto::supervision::RestartBudget;
use tokio::sync::Notify;

use crate::actor::{Actor, ActorError, Never};
use crate::actor_ref::{ActorId, ActorRef};
use crate::cell::{Cell, Erased};
use crate::context::Context;
use crate::dead_letters::DeadLetterOffice;
use crate::event_stream::EventStream;
use crate::mailbox::mailbox;
use crate::props::{Props, SupervisorStrategy};
use crate::remote::{RemoteMessage, RemoteRefError, RemoteSupport, parse_remote_path};
use crate::runner::Runner;
use crate::shutdown::{CoordinatedShutdown, Phase, ShutdownOutcome, ShutdownReason};
use flotilla_remote::RemoteNode;

/// Why an actor could not be spawned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The name is not a valid actor name.
    #[error(transparent)]
    InvalidName(#[from] InvalidActorName),
    /// A live sibling already has this name.
    #[error("an actor named {name:?} already exists under {parent}")]
    NameTaken {
        /// The requested name.
        name: String,
        /// The parent's path.
        parent: ActorPath,
    },
    /// The actor's factory panicked.
    #[error("the actor's factory panicked: {0}")]
    CreationFailed(String),
    /// The parent is stopping (or the system terminating): no new children.
    #[error("{parent} is stopping and accepts no new children")]
    ParentStopping {
        /// The parent's path.
        parent: ActorPath,
    },
}

/// Why a system could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SystemError {
    /// The system name or host is not valid in an address.
    #[error(transparent)]
    Address(#[from] AddressParseError),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] flotilla_core::ConfigError),
    /// No tokio runtime is running on this thread.
    #[error("an actor system must be created inside a tokio runtime")]
    NoRuntime,
    /// Remoting could not start (the port is taken, the TLS files are unusable, ...).
    #[error("remoting cannot start: {0}")]
    Remote(#[from] flotilla_remote::StartError),
}

struct Guardians {
    user: ActorRef<Never>,
    system: ActorRef<Never>,
}

pub(crate) struct SystemInner {
    pub(crate) unique: UniqueAddress,
    pub(crate) root: ActorPath,
    pub(crate) config: FlotillaConfig,
    pub(crate) runtime: tokio::runtime::Handle,
    next_id: AtomicU64,
    live: AtomicUsize,
    pub(crate) dead_letters: DeadLetterOffice,
    pub(crate) event_stream: EventStream,
    guardians: Mutex<Option<Guardians>>,
    pub(crate) shutdown: CoordinatedShutdown,
    terminated: AtomicBool,
    terminated_notify: Notify,
    pub(crate) remote: std::sync::OnceLock<Arc<RemoteSupport>>,
}

impl SystemInner {
    /// A fresh actor id, unique in this system.
    pub(crate) fn new_actor_id(&self) -> ActorId {
        ActorId(self.next_id.fetch_add(1, Ordering::Relaxed))
    }

    pub(crate) fn actor_stopped(&self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A running actor system. Cheap to clone: every clone is a handle to the same system.
#[derive(Clone)]
pub struct ActorSystem {
    pub(crate) inner: Arc<SystemInner>,
}

impl std::fmt::Debug for ActorSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ActorSystem({})", self.inner.unique)
    }
}

/// Builds an [`ActorSystem`].
#[derive(Debug, Clone)]
pub struct ActorSystemBuilder {
    name: String,
    config: FlotillaConfig,
    host_port: Option<(String, u16)>,
    remote: bool,
    faults: Option<flotilla_remote::FaultInjector>,
}

impl ActorSystemBuilder {
    /// Uses this configuration instead of the defaults.
    #[must_use]
    pub fn config(mut self, config: FlotillaConfig) -> Self {
        self.config = config;
        self
    }

    /// Gives the system a network address `flotilla://name@host:port` (the default is a
    /// local-only address `flotilla://name`).
    #[must_use]
    pub fn host_port(mut self, host: &str, port: u16) -> Self {
        self.host_port = Some((host.to_owned(), port));
        self
    }

    /// Starts remoting: the system listens on `host:port` (port 0 picks a free one; the
    /// system's address has the port actually bound) with the `[remote]` settings, on
    /// remoting's own threads, and can reach actors on other nodes.
    #[must_use]
    pub fn remote(mut self, host: &str, port: u16) -> Self {
        self.host_port = Some((host.to_owned(), port));
        self.remote = true;
        self
    }

    /// Injects faults into this system's remoting (blackholes, delay, disconnects), for tests;
    /// see [`flotilla_remote::faults`].
    #[must_use]
    pub fn fault_injector(mut self, faults: flotilla_remote::FaultInjector) -> Self {
        self.faults = Some(faults);
        self
    }

    /// Starts the system. Must be called inside a tokio runtime.
    pub fn build(self) -> Result<ActorSystem, SystemError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| SystemError::NoRuntime)?;
        self.config.validate()?;
        let address = match &self.host_port {
            None => Address::local(&self.name)?,
            Some((host, port)) => Address::remote(&self.name, host, *port)?,
        };
        let uid = rand::random::<u64>();
        let remoting = if self.remote {
            Some(RemoteNode::start_with(
                &address,
                self.config.remote.clone(),
                flotilla_remote::StartOptions {
                    uid: Some(uid),
                    faults: self.faults,
                },
            )?)
        } else {
            None
        };
        // With remoting, the address has the port actually bound.
        let address = remoting
            .as_ref()
            .map_or(address, |(node, _)| node.local().address.clone());
        let unique = UniqueAddress {
            address: address.clone(),
            uid,
        };
        let shutdown =
            CoordinatedShutdown::new(self.config.coordinated_shutdown.clone(), runtime.clone());
        let inner = Arc::new(SystemInner {
            unique,
            root: ActorPath::root(address),
            dead_letters: DeadLetterOffice::new(self.config.actor.dead_letters.clone()),
            config: self.config,
            runtime,
            next_id: AtomicU64::new(1),
            live: AtomicUsize::new(0),
            event_stream: EventStream::default(),
            guardians: Mutex::new(None),
            shutdown,
            terminated: AtomicBool::new(false),
            terminated_notify: Notify::new(),
            remote: std::sync::OnceLock::new(),
        });
        if let Some((node, inbound)) = remoting {
            let support = RemoteSupport::start(&inner, node, inbound);
            let _ = inner.remote.set(support);
        }
        let system = ActorSystem { inner };
        let user = spawn_guardian(&system, "user");
        let sys = spawn_guardian(&system, "system");
        *system.guardians() = Some(Guardians { user, system: sys });
        let weak = Arc::downgrade(&system.inner);
        system
            .inner
            .shutdown
            .add_task(
                Phase::ActorSystemTerminate,
                "stop-all-actors",
                move || async move {
                    if let Some(inner) = weak.upgrade() {
                        ActorSystem { inner }.stop_all_actors().await;
                    }
                },
            )
            .map_err(|_| SystemError::NoRuntime)?;
        tracing::info!(address = %system.inner.unique, "actor system {} started", system.inner.unique);
        Ok(system)
    }
}

impl ActorSystem {
    /// A builder for a system called `name` with default configuration.
    pub fn builder(name: &str) -> ActorSystemBuilder {
        ActorSystemBuilder {
            name: name.to_owned(),
            config: FlotillaConfig::default(),
            host_port: None,
            remote: false,
            faults: None,
        }
    }

    /// Starts a local-only system with default configuration.
    pub fn new(name: &str) -> Result<Self, SystemError> {
        Self::builder(name).build()
    }

    /// The system's name.
    pub fn name(&self) -> &str {
        self.inner.unique.address.system()
    }

    /// The random 64-bit incarnation UID drawn at start.
    pub fn uid(&self) -> u64 {
        self.inner.unique.uid
    }

    /// The system's address.
    pub fn address(&self) -> &Address {
        &self.inner.unique.address
    }

    /// The system's address plus its incarnation UID.
    pub fn unique_address(&self) -> &UniqueAddress {
        &self.inner.unique
    }

    /// The configuration the system runs with.
    pub fn config(&self) -> &FlotillaConfig {
        &self.inner.config
    }

    /// Spawns a top-level actor under `/user`.
    pub fn spawn<A: Actor>(
        &self,
        name: &str,
        props: Props<A>,
    ) -> Result<ActorRef<A::Msg>, SpawnError> {
        spawn_child(self, &self.guardian(Guardian::User)?, Some(name), props)
    }

    /// Spawns a top-level actor under `/user` with a generated name.
    pub fn spawn_anonymous<A: Actor>(
        &self,
        props: Props<A>,
    ) -> Result<ActorRef<A::Msg>, SpawnError> {
        spawn_child(self, &self.guardian(Guardian::User)?, None, props)
    }

    /// Spawns one of the runtime's own actors under `/system`. These stop after every user
    /// actor, so services that user actors rely on while stopping (lease clients, remoting)
    /// outlive them.
    pub fn spawn_system_actor<A: Actor>(
        &self,
        name: &str,
        props: Props<A>,
    ) -> Result<ActorRef<A::Msg>, SpawnError> {
        spawn_child(self, &self.guardian(Guardian::System)?, Some(name), props)
    }

    /// Makes a local actor reachable from other nodes at its path (`/user/...`), for messages
    /// of its type. Without remoting this does nothing.
    pub fn expose<M: RemoteMessage>(&self, actor: &ActorRef<M>) {
        if let Some(r) = self.inner.remote.get() {
            r.expose(actor);
        }
    }

    /// A reference to the actor at `path` on another node
    /// (`flotilla://system@host:port/user/name`), used like a local one. Nothing is checked on
    /// the network here: messages to an actor that is not there are dropped by that node, and
    /// watching it delivers `Terminated` at once.
    pub fn remote_ref<M: RemoteMessage>(&self, path: &str) -> Result<ActorRef<M>, RemoteRefError> {
        let support = self.inner.remote.get().ok_or(RemoteRefError::NoRemoting)?;
        let path = parse_remote_path(path)?;
        Ok(support.remote_ref(path))
    }

    /// Every association of this node with another, with state, UID, since-when and last cause
    /// (empty without remoting).
    pub async fn associations(&self) -> Vec<flotilla_proto::association::AssociationSnapshot> {
        match self.inner.remote.get() {
            Some(r) => r.node.associations().await.unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// Quarantines a remote node's incarnation for good (the cluster's removal hook, or an
    /// operator's decision). Without remoting this does nothing.
    pub fn quarantine(&self, remote: &UniqueAddress, reason: &str) {
        if let Some(r) = self.inner.remote.get() {
            let _ = r.node.quarantine(remote, reason);
        }
    }

    /// This system's remoting, when it was built with [`ActorSystemBuilder::remote`]: what the
    /// cluster runs on.
    pub fn remote_node(&self) -> Option<&RemoteNode> {
        self.inner.remote.get().map(|r| &r.node)
    }

    /// Declares every actor on node `remote` dead: their local watchers get `Terminated`, as
    /// when remoting's failure detector gives up on a watched node. The cluster calls it when a
    /// member is removed, with `why` in words for the log.
    pub fn address_terminated(&self, remote: &Address, why: &str) {
        if let Some(r) = self.inner.remote.get() {
            r.address_terminated(remote, why);
        }
    }

    /// The event stream.
    pub fn event_stream(&self) -> &EventStream {
        &self.inner.event_stream
    }

    /// How many messages became dead letters since the system started.
    pub fn dead_letter_count(&self) -> u64 {
        self.inner.dead_letters.count()
    }

    /// How many actors are alive, guardians included.
    pub fn live_actors(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Coordinated shutdown of this system.
    pub fn coordinated_shutdown(&self) -> &CoordinatedShutdown {
        &self.inner.shutdown
    }

    /// Terminates the system by running coordinated shutdown (reason
    /// [`ShutdownReason::ActorSystemTerminate`]); its last phase stops every actor. Returns the
    /// shutdown's outcome; a second call returns the same outcome without running it again.
    pub async fn terminate(&self) -> Arc<ShutdownOutcome> {
        self.inner
            .shutdown
            .run(ShutdownReason::ActorSystemTerminate)
            .await
    }

    /// Completes once every actor has stopped (user actors first, then the runtime's own).
    pub async fn when_terminated(&self) {
        crate::cell::wait_until(&self.inner.terminated_notify, || self.is_terminated()).await;
    }

    /// True once every actor has stopped.
    pub fn is_terminated(&self) -> bool {
        self.inner.terminated.load(Ordering::Acquire)
    }

    async fn stop_all_actors(&self) {
        let guardians = self.guardians().take();
        if let Some(g) = guardians {
            g.user.stop();
            g.user.stopped().await;
            tracing::debug!("all user actors stopped");
            g.system.stop();
            g.system.stopped().await;
        }
        if let Some(remote) = self.inner.remote.get() {
            remote.flush().await;
            remote.stop();
        }
        self.inner.terminated.store(true, Ordering::Release);
        self.inner.terminated_notify.notify_waiters();
        tracing::info!(
            "actor system {} terminated: every actor has stopped",
            self.inner.unique
        );
    }

    fn guardians(&self) -> std::sync::MutexGuard<'_, Option<Guardians>> {
        self.inner
            .guardians
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `/user` or `/system` guardian, while the system is not terminating.
    fn guardian(&self, which: Guardian) -> Result<Arc<dyn Erased>, SpawnError> {
        let guardians = self.guardians();
        match (guardians.as_ref(), which) {
            (Some(g), Guardian::User) => Ok(g.user.erased()),
            (Some(g), Guardian::System) => Ok(g.system.erased()),
            (None, _) => {
                let name = if matches!(which, Guardian::User) {
                    "user"
                } else {
                    "system"
                };
                Err(SpawnError::ParentStopping {
                    parent: self.inner.root.child(name),
                })
            }
        }
    }
}

/// Which guardian.
#[derive(Clone, Copy)]
enum Guardian {
    User,
    System,
}

/// The actor above all actors of one kind (`/user` or `/system`). It never fails: failures
/// escalated to it are logged and it carries on.
struct GuardianActor;

impl Actor for GuardianActor {
    type Msg = Never;

    async fn handle(&mut self, msg: Never, _ctx: &mut Context<Never>) -> Result<(), ActorError> {
        match msg {}
    }
}

fn spawn_guardian(system: &ActorSystem, name: &str) -> ActorRef<Never> {
    let props = Props::new(|| GuardianActor).with_supervisor(SupervisorStrategy::resume());
    start(system, None, system.inner.root.child(name), props)
}

/// Spawns a child of `parent`, reserving its name first.
pub(crate) fn spawn_child<A: Actor>(
    system: &ActorSystem,
    parent: &Arc<dyn Erased>,
    name: Option<&str>,
    mut props: Props<A>,
) -> Result<ActorRef<A::Msg>, SpawnError> {
    if let Some(name) = name {
        validate_actor_name(name)?;
    }
    // User code runs before the registry lock is taken.
    let actor = std::panic::catch_unwind(std::panic::AssertUnwindSafe(&mut props.factory))
        .map_err(|p| SpawnError::CreationFailed(crate::runner::panic_message(p.as_ref())))?;
    let mut children = parent.children();
    if children.closed {
        return Err(SpawnError::ParentStopping {
            parent: parent.path().clone(),
        });
    }
    let name = match name {
        Some(name) if children.by_name.contains_key(name) => {
            return Err(SpawnError::NameTaken {
                name: name.to_owned(),
                parent: parent.path().clone(),
            });
        }
        Some(name) => name.to_owned(),
        None => loop {
            children.anonymous_counter += 1;
            let candidate = anonymous_name(children.anonymous_counter);
            if !children.by_name.contains_key(&candidate) {
                break candidate;
            }
        },
    };
    let path = parent.path().child(&name);
    let (actor_ref, runner) = prepare(system, Some(Arc::clone(parent)), path, actor, props);
    children.by_name.insert(name, actor_ref.erased());
    drop(children);
    system.inner.runtime.spawn(runner.run());
    Ok(actor_ref)
}

/// `$a`, `$b`, … `$z`, `$ba`, …: short, ordered and never a valid user-chosen name.
fn anonymous_name(mut n: u64) -> String {
    let mut digits = VecDeque::new();
    loop {
        digits.push_front(b'a' + u8::try_from(n % 26).unwrap_or(0));
        n /= 26;
        if n == 0 {
            break;
        }
    }
    let mut name = String::from("$");
    name.extend(digits.into_iter().map(char::from));
    name
}

fn start<A: Actor>(
    system: &ActorSystem,
    parent: Option<Arc<dyn Erased>>,
    path: ActorPath,
    mut props: Props<A>,
) -> ActorRef<A::Msg> {
    let actor = (props.factory)();
    let (actor_ref, runner) = prepare(system, parent, path, actor, props);
    system.inner.runtime.spawn(runner.run());
    actor_ref
}

pub(crate) fn prepare<A: Actor>(
    system: &ActorSystem,
    parent: Option<Arc<dyn Erased>>,
    path: ActorPath,
    actor: A,
    props: Props<A>,
) -> (ActorRef<A::Msg>, Runner<A>) {
    let id = ActorId(system.inner.next_id.fetch_add(1, Ordering::Relaxed));
    let (mailbox_tx, mailbox_rx) = mailbox(props.mailbox, props.control);
    let (sys_tx, sys_rx) = crate::sys_lane::sys_lane();
    let cell = Arc::new(Cell::new(
        id,
        path,
        mailbox_tx,
        sys_tx.clone(),
        Arc::clone(&system.inner),
    ));
    let abort = Arc::clone(&cell.abort);
    let actor_ref = ActorRef::local(cell);
    system.inner.live.fetch_add(1, Ordering::AcqRel);
    let ctx = Context {
        myself: actor_ref.clone(),
        system: system.clone(),
        watching: BTreeMap::new(),
        timers: crate::timers::Timers::new(sys_tx, system.inner.runtime.clone()),
        stop_requested: false,
    };
    let budget = RestartBudget::new(props.strategy.restart_settings().clone());
    let runner = Runner {
        actor,
        ctx,
        props,
        budget,
        sys_rx,
        mailbox: mailbox_rx,
        parent,
        watchers: BTreeMap::new(),
        stash: VecDeque::new(),
        escalated: None,
        abort,
    };
    (actor_ref, runner)
}

#[cfg(test)]
mod tests {
    use super::anonymous_name;

    #[test]
    fn anonymous_names_are_short_and_distinct() {
        assert_eq!(anonymous_name(1), "$b");
        assert_eq!(anonymous_name(25), "$z");
        assert_eq!(anonymous_name(26), "$ba");
        let names: std::collections::BTreeSet<_> = (1..2000).map(anonymous_name).collect();
        assert_eq!(names.len(), 1999);
    }
}
