//! Cluster singletons on running nodes: the driver of the pure [`SingletonManager`] machine,
//! and the proxy that routes messages to wherever the singleton runs.
//!
//! ```text
//!  every node (with the role)                     every node
//!  /user/<name>  manager actor                    /user/<name>-proxy  proxy actor
//!   │ owns SingletonManager (pure)                 │ asks the oldest member's manager where
//!   │ members ← the cluster's snapshot             │   the singleton is (every
//!   │ HandOverToMe / InProgress / Done ↔ other     │   identification-interval until found),
//!   │   nodes' managers (remote messages)          │   watches it, sends to it; buffers up to
//!   │ Start → spawn /user/<name>/singleton          │   buffer-size messages meanwhile
//!   │ Stop → stop it; Terminated → SingletonStopped│ Terminated (moved, lease lost, node gone)
//!   │ AcquireLease / ReleaseLease → the Lease       │   → identify again
//!   └ Done → coordinated shutdown's cluster-exiting task may return
//! ```
//!
//! Start one on every node with [`SingletonBuilder::start`]: it starts the manager when this
//! node may run the singleton (it has the role) and always a proxy, and returns a
//! [`ClusterSingleton`] whose [`proxy`](ClusterSingleton::proxy) is an `ActorRef` of the
//! singleton's own message type, usable from anywhere in the cluster.
//!
//! Messages through the proxy are delivered at most once, like every remote message: those in
//! flight while the singleton moves are lost, those sent while the proxy does not know where it
//! runs wait in its buffer.
//!
//! With a lease the singleton starts only once the lease is granted, stops at once when it is
//! lost, and on hand-over the lease release is awaited before the new oldest is told to start;
//! a failed release is logged with what it means (the next oldest waits for the lease to
//! expire).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla_actor::{
    Actor, ActorError, ActorRef, ActorSystem, Context, Phase, Props, RemoteMessage, ReplyTo,
    SpawnError, SupervisorStrategy, Terminated,
};
use flotilla_core::{SingletonConfig, StateMachine, UniqueAddress};
use flotilla_lease::{AcquireOutcome, Lease, ReleaseOutcome};
use flotilla_proto::cluster::LogLevel;
use flotilla_proto::cluster::Member;
use flotilla_proto::cluster::singleton::{
    self, SingletonInput, SingletonManager, SingletonMsg, SingletonOutput, SingletonSettings,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::Cluster;

/// Why a singleton could not start on this node.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SingletonError {
    /// The name cannot be an actor name, or an actor already has it.
    #[error("cannot start singleton {name:?}: {source}")]
    Spawn {
        /// The singleton's name.
        name: String,
        /// Why the actor could not be spawned.
        source: SpawnError,
    },
    /// The `[cluster.singleton]` settings are not valid.
    #[error("invalid cluster.singleton settings: {0}")]
    Config(String),
    /// Coordinated shutdown has already begun.
    #[error("coordinated shutdown has already begun")]
    ShuttingDown,
}

/// Starts a cluster singleton (its manager and a proxy) on one node.
pub struct SingletonBuilder<A: Actor> {
    name: String,
    props: Arc<dyn Fn() -> Props<A> + Send + Sync>,
    settings: Option<SingletonConfig>,
    lease: Option<Lease>,
}

impl<A: Actor> std::fmt::Debug for SingletonBuilder<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingletonBuilder")
            .field("name", &self.name)
            .field("settings", &self.settings)
            .field("lease", &self.lease)
            .finish()
    }
}

/// One cluster singleton as this node sees it: the proxy, and whether the instance runs here.
///
/// ```no_run
/// # use std::time::Duration;
/// # use flotilla_actor::{Actor, ActorError, ActorSystem, Context, Props, ReplyTo, RemoteMessage};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # enum Seq { Next(ReplyTo<u64>) }
/// # impl RemoteMessage for Seq { const MANIFEST: &'static str = "doc.Seq"; }
/// # #[derive(Default)] struct Sequencer(u64);
/// # impl Actor for Sequencer { type Msg = Seq;
/// #   async fn handle(&mut self, m: Seq, _: &mut Context<Seq>) -> Result<(), ActorError> {
/// #     let Seq::Next(r) = m; self.0 += 1; let _ = r.send(self.0); Ok(()) } }
/// # async fn run(system: ActorSystem, cluster: flotilla_cluster::Cluster) -> Result<(), Box<dyn std::error::Error>> {
/// use flotilla_cluster::ClusterSingleton;
///
/// // Every node starts it; one instance runs, on the oldest member (with the role, if any).
/// let sequencer = ClusterSingleton::builder("sequencer", || Props::new(Sequencer::default))
///     .start(&system, &cluster)?;
/// let next = sequencer
///     .proxy()
///     .ask(Seq::Next, Duration::from_secs(5))
///     .await?;
/// # let _ = next;
/// # Ok(())
/// # }
/// ```
pub struct ClusterSingleton<M: Send + 'static> {
    name: String,
    proxy: ActorRef<M>,
    local: Option<watch::Receiver<Option<ActorRef<M>>>>,
}

impl<M: Send + 'static> std::fmt::Debug for ClusterSingleton<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSingleton")
            .field("name", &self.name)
            .field("running_here", &self.is_running_here())
            .finish()
    }
}

impl<M: Send + 'static> ClusterSingleton<M> {
    /// A builder for the singleton called `name`, whose instances `props` makes (each time it
    /// starts on a node).
    pub fn builder<A: Actor<Msg = M>>(
        name: &str,
        props: impl Fn() -> Props<A> + Send + Sync + 'static,
    ) -> SingletonBuilder<A> {
        SingletonBuilder {
            name: name.to_owned(),
            props: Arc::new(props),
            settings: None,
            lease: None,
        }
    }

    /// The singleton's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sends to the singleton wherever it runs (through this node's proxy).
    pub fn proxy(&self) -> &ActorRef<M> {
        &self.proxy
    }

    /// The instance, when it runs on this node.
    pub fn local_instance(&self) -> Option<ActorRef<M>> {
        let local = self.local.as_ref()?;
        let instance = local.borrow().clone();
        instance.filter(|r| !r.is_stopped())
    }

    /// Whether the instance runs on this node now.
    pub fn is_running_here(&self) -> bool {
        self.local_instance().is_some()
    }
}

impl<A: Actor> SingletonBuilder<A>
where
    A::Msg: RemoteMessage,
{
    /// Uses these settings instead of the cluster's `[cluster.singleton]` section.
    #[must_use]
    pub fn settings(mut self, settings: SingletonConfig) -> Self {
        self.settings = Some(settings);
        self
    }

    /// Runs the singleton only while this lease is held (a lease of the same name on every
    /// node, each for its own owner).
    #[must_use]
    pub fn lease(mut self, lease: Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    /// Starts the manager (when this node has the singleton's role) and the proxy.
    pub fn start(
        self,
        system: &ActorSystem,
        cluster: &Cluster,
    ) -> Result<ClusterSingleton<A::Msg>, SingletonError> {
        let config = self
            .settings
            .unwrap_or_else(|| cluster.settings().singleton.clone());
        if config.buffer_size == 0 {
            return Err(SingletonError::Config(
                "buffer-size must be at least 1".into(),
            ));
        }
        let settings = SingletonSettings {
            role: config.role.clone(),
            hand_over_retry_interval: config.hand_over_retry_interval,
            removal_margin: config.removal_margin.map_or(
                cluster.settings().split_brain_resolver.stable_after,
                Into::into,
            ),
            use_lease: self.lease.is_some(),
            lease_retry_interval: config.lease_retry_interval,
        };
        let spawn_error = |source| SingletonError::Spawn {
            name: self.name.clone(),
            source,
        };
        let has_role = config.role.is_empty() || cluster.settings().roles.contains(&config.role);
        let local = if has_role {
            let (published, local) = watch::channel(None);
            let manager = Manager {
                name: self.name.clone(),
                machine: SingletonManager::new(cluster.self_node().clone(), settings),
                props: Arc::clone(&self.props),
                lease: self.lease,
                cluster: cluster.clone(),
                instance: None,
                published,
                leave_waiters: Vec::new(),
                done: false,
            };
            let mut manager = Some(manager);
            let props = Props::new(move || manager.take().expect("the manager is never restarted"))
                .with_supervisor(SupervisorStrategy::stop());
            let manager = system.spawn(&self.name, props).map_err(spawn_error)?;
            system.expose(&manager);
            register_hand_over(system, &self.name, &manager)?;
            Some(local)
        } else {
            None
        };
        let proxy = Proxy {
            name: self.name.clone(),
            role: config.role,
            cluster: cluster.clone(),
            local: local.clone(),
            target: None,
            buffer: VecDeque::new(),
            capacity: config.buffer_size,
            interval: config.identification_interval,
            asked: 0,
        };
        let mut proxy = Some(proxy);
        let props = Props::new(move || proxy.take().expect("the proxy is never restarted"))
            .with_supervisor(SupervisorStrategy::stop());
        let proxy = system
            .spawn(&format!("{}-proxy", self.name), props)
            .map_err(spawn_error)?;
        Ok(ClusterSingleton {
            name: self.name,
            proxy: proxy.adapt(ProxyMsg::Deliver),
            local,
        })
    }
}

/// In `cluster-exiting`, hands the singleton over (or stops it, when no other member can take
/// it) and waits until its lease is released.
fn register_hand_over(
    system: &ActorSystem,
    name: &str,
    manager: &ActorRef<ManagerMsg>,
) -> Result<(), SingletonError> {
    let manager = manager.clone();
    let task = format!("singleton-{name}-hand-over");
    system
        .coordinated_shutdown()
        .add_task(Phase::ClusterExiting, &task, move || async move {
            let (done, wait) = oneshot::channel();
            manager.tell(ManagerMsg::Local(Local::Leave(done)));
            // An error means the manager has stopped: nothing runs here any more.
            let _ = wait.await;
        })
        .map(|_| ())
        .map_err(|_| SingletonError::ShuttingDown)
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The manager's messages: from other nodes' managers and from proxies (on the wire), and its
/// own (never on the wire).
#[derive(Serialize, Deserialize)]
enum ManagerMsg {
    /// From the new oldest (its unique address).
    HandOverToMe(String),
    /// From the previous oldest.
    HandOverInProgress(String),
    /// From the previous oldest.
    HandOverDone(String),
    /// From a proxy: the singleton's path, if it runs on this node.
    Identify(ReplyTo<Option<String>>),
    #[serde(skip)]
    Local(Local),
}

impl RemoteMessage for ManagerMsg {
    const MANIFEST: &'static str = "flotilla.SingletonManager";
}

enum Local {
    Members(Vec<Member>),
    LeaseAcquired(bool),
    LeaseLost,
    LeaseReleased,
    Leave(oneshot::Sender<()>),
    Tick,
}

struct Manager<A: Actor> {
    name: String,
    machine: SingletonManager,
    props: Arc<dyn Fn() -> Props<A> + Send + Sync>,
    lease: Option<Lease>,
    cluster: Cluster,
    instance: Option<ActorRef<A::Msg>>,
    published: watch::Sender<Option<ActorRef<A::Msg>>>,
    leave_waiters: Vec<oneshot::Sender<()>>,
    done: bool,
}

impl<A: Actor> Actor for Manager<A>
where
    A::Msg: RemoteMessage,
{
    type Msg = ManagerMsg;

    async fn pre_start(&mut self, ctx: &mut Context<ManagerMsg>) -> Result<(), ActorError> {
        // The members, now and after every change the cluster publishes.
        let mut snapshots = self.cluster.snapshots();
        let me = ctx.myself().clone();
        tokio::spawn(async move {
            loop {
                let members = snapshots.borrow_and_update().state.members.clone();
                me.tell(ManagerMsg::Local(Local::Members(members)));
                if snapshots.changed().await.is_err() || me.is_stopped() {
                    return;
                }
            }
        });
        Ok(())
    }

    async fn handle(
        &mut self,
        msg: ManagerMsg,
        ctx: &mut Context<ManagerMsg>,
    ) -> Result<(), ActorError> {
        let input = match msg {
            ManagerMsg::HandOverToMe(from) => self
                .peer(&from)
                .map(|from| SingletonInput::Received(SingletonMsg::HandOverToMe { from })),
            ManagerMsg::HandOverInProgress(from) => self
                .peer(&from)
                .map(|from| SingletonInput::Received(SingletonMsg::HandOverInProgress { from })),
            ManagerMsg::HandOverDone(from) => self
                .peer(&from)
                .map(|from| SingletonInput::Received(SingletonMsg::HandOverDone { from })),
            ManagerMsg::Identify(reply) => {
                let here = self
                    .instance
                    .as_ref()
                    .filter(|i| self.machine.is_running() && !i.is_stopped())
                    .map(|_| self.instance_path());
                reply.send(here);
                None
            }
            ManagerMsg::Local(local) => match local {
                Local::Members(members) => Some(SingletonInput::Members(members)),
                Local::LeaseAcquired(granted) => Some(SingletonInput::LeaseAcquired(granted)),
                Local::LeaseLost => Some(SingletonInput::LeaseLost),
                Local::LeaseReleased => Some(SingletonInput::LeaseReleased),
                Local::Leave(done) => {
                    if self.done {
                        let _ = done.send(());
                        None
                    } else {
                        self.leave_waiters.push(done);
                        Some(SingletonInput::Leave)
                    }
                }
                Local::Tick => {
                    self.machine.handle_timeout(now());
                    None
                }
            },
        };
        if let Some(input) = input {
            self.machine.handle(now(), input);
        }
        self.drive(ctx);
        Ok(())
    }

    async fn on_terminated(
        &mut self,
        t: Terminated,
        ctx: &mut Context<ManagerMsg>,
    ) -> Result<(), ActorError> {
        if self.instance.as_ref().is_some_and(|i| i.id() == t.id) {
            self.stopped();
            self.machine.handle(now(), SingletonInput::SingletonStopped);
            self.drive(ctx);
        }
        Ok(())
    }

    async fn post_stop(&mut self, _ctx: &mut Context<ManagerMsg>) {
        self.stopped();
        for waiter in self.leave_waiters.drain(..) {
            let _ = waiter.send(());
        }
    }
}

impl<A: Actor> Manager<A>
where
    A::Msg: RemoteMessage,
{
    /// The sender of a message from another node's manager, or a logged, counted drop.
    fn peer(&self, from: &str) -> Option<UniqueAddress> {
        match from.parse() {
            Ok(node) => Some(node),
            Err(e) => {
                metrics::counter!("flotilla_singleton_dropped_total", "reason" => "bad-sender")
                    .increment(1);
                tracing::warn!(singleton = %self.name, "dropped a message from another node's singleton manager: {e}");
                None
            }
        }
    }

    /// Where the instance runs, as other nodes address it.
    fn instance_path(&self) -> String {
        format!(
            "{}/user/{}/singleton",
            self.cluster.self_address(),
            self.name
        )
    }

    fn stopped(&mut self) {
        if self.instance.take().is_some() {
            self.published.send_replace(None);
            metrics::gauge!("flotilla_singleton_running", "singleton" => self.name.clone())
                .set(0.0);
        }
    }

    /// Carries out what the machine asks, then arms its next timer.
    fn drive(&mut self, ctx: &mut Context<ManagerMsg>) {
        while let Some(output) = self.machine.poll_output() {
            match output {
                SingletonOutput::Start => self.start_instance(ctx),
                SingletonOutput::Stop => {
                    if let Some(i) = &self.instance {
                        i.stop();
                    }
                }
                SingletonOutput::StopNow => {
                    if let Some(i) = &self.instance {
                        i.stop_now();
                    }
                }
                SingletonOutput::Send { to, msg } => self.send(ctx.system(), &to, msg),
                SingletonOutput::AcquireLease => self.acquire_lease(ctx),
                SingletonOutput::ReleaseLease => self.release_lease(ctx),
                SingletonOutput::Done => {
                    self.done = true;
                    for waiter in self.leave_waiters.drain(..) {
                        let _ = waiter.send(());
                    }
                }
                SingletonOutput::Log { level, text } => {
                    let node = self.cluster.self_node();
                    match level {
                        LogLevel::Info => {
                            tracing::info!(singleton = %self.name, %node, "singleton {}: {text}", self.name);
                        }
                        LogLevel::Warn => {
                            tracing::warn!(singleton = %self.name, %node, "singleton {}: {text}", self.name);
                        }
                    }
                }
            }
        }
        match self.machine.poll_timeout() {
            Some(at) => {
                let delay = at.saturating_duration_since(now());
                ctx.timers()
                    .start_single("tick", ManagerMsg::Local(Local::Tick), delay);
            }
            None => ctx.timers().cancel("tick"),
        }
    }

    fn start_instance(&mut self, ctx: &mut Context<ManagerMsg>) {
        match ctx.spawn("singleton", (self.props)()) {
            Ok(instance) => {
                ctx.system().expose(&instance);
                ctx.watch(&instance);
                self.published.send_replace(Some(instance.clone()));
                self.instance = Some(instance);
                metrics::gauge!("flotilla_singleton_running", "singleton" => self.name.clone())
                    .set(1.0);
            }
            Err(e) => {
                tracing::error!(singleton = %self.name, "singleton {} could not be started on this node: {e}", self.name);
                self.machine.handle(now(), SingletonInput::SingletonStopped);
            }
        }
    }

    fn send(&self, system: &ActorSystem, to: &UniqueAddress, msg: SingletonMsg) {
        let path = format!("{}/user/{}", to.address, self.name);
        let wire = match msg {
            SingletonMsg::HandOverToMe { from } => ManagerMsg::HandOverToMe(from.to_string()),
            SingletonMsg::HandOverInProgress { from } => {
                ManagerMsg::HandOverInProgress(from.to_string())
            }
            SingletonMsg::HandOverDone { from } => ManagerMsg::HandOverDone(from.to_string()),
        };
        match system.remote_ref::<ManagerMsg>(&path) {
            Ok(manager) => manager.tell(wire),
            Err(e) => {
                tracing::warn!(singleton = %self.name, "cannot reach the singleton manager at {path}: {e}");
            }
        }
    }

    fn acquire_lease(&self, ctx: &Context<ManagerMsg>) {
        let me = ctx.myself().clone();
        let Some(lease) = self.lease.clone() else {
            me.tell(ManagerMsg::Local(Local::LeaseAcquired(false)));
            return;
        };
        let name = self.name.clone();
        tokio::spawn(async move {
            let lost = me.clone();
            let lost_name = name.clone();
            let outcome = lease
                .acquire(move |cause| {
                    tracing::warn!(singleton = %lost_name, "singleton {lost_name} lost its lease: {cause}");
                    lost.tell(ManagerMsg::Local(Local::LeaseLost));
                })
                .await;
            let granted = matches!(outcome, AcquireOutcome::Granted { .. });
            if !granted {
                tracing::info!(singleton = %name, "singleton {name}: lease {} not acquired: {outcome:?}", lease.name());
            }
            me.tell(ManagerMsg::Local(Local::LeaseAcquired(granted)));
        });
    }

    fn release_lease(&self, ctx: &Context<ManagerMsg>) {
        let me = ctx.myself().clone();
        let Some(lease) = self.lease.clone() else {
            me.tell(ManagerMsg::Local(Local::LeaseReleased));
            return;
        };
        let name = self.name.clone();
        tokio::spawn(async move {
            match lease.release().await {
                ReleaseOutcome::Released | ReleaseOutcome::NotHeld => {
                    tracing::info!(singleton = %name, "singleton {name}: lease {} released", lease.name());
                }
                failed => tracing::warn!(
                    singleton = %name,
                    "singleton {name}: releasing lease {} failed ({failed:?}); the next oldest cannot start the singleton until the lease expires",
                    lease.name()
                ),
            }
            me.tell(ManagerMsg::Local(Local::LeaseReleased));
        });
    }
}

/// The proxy's messages.
enum ProxyMsg<M: Send + 'static> {
    /// For the singleton.
    Deliver(M),
    /// Ask again where the singleton is, if still unknown.
    Tick,
    /// The answer to identification number `asked`.
    Identified { asked: u64, found: ActorRef<M> },
}

struct Proxy<M: Send + 'static> {
    name: String,
    role: String,
    cluster: Cluster,
    /// The instance on this node, when this node has a manager.
    local: Option<watch::Receiver<Option<ActorRef<M>>>>,
    target: Option<ActorRef<M>>,
    buffer: VecDeque<M>,
    capacity: usize,
    interval: Duration,
    /// How many identifications were started; only the latest one's answer counts.
    asked: u64,
}

impl<M: RemoteMessage> Actor for Proxy<M> {
    type Msg = ProxyMsg<M>;

    async fn pre_start(&mut self, ctx: &mut Context<ProxyMsg<M>>) -> Result<(), ActorError> {
        self.identify(ctx);
        Ok(())
    }

    async fn handle(
        &mut self,
        msg: ProxyMsg<M>,
        ctx: &mut Context<ProxyMsg<M>>,
    ) -> Result<(), ActorError> {
        match msg {
            ProxyMsg::Deliver(m) => match &self.target {
                Some(t) if !t.is_stopped() => t.tell(m),
                _ => self.hold(m),
            },
            ProxyMsg::Tick => {
                if self.target.is_none() {
                    self.identify(ctx);
                }
            }
            ProxyMsg::Identified { asked, found } => {
                if asked == self.asked && self.target.is_none() && !found.is_stopped() {
                    tracing::info!(singleton = %self.name, "singleton {} found at {}; sending it {} buffered message(s)", self.name, found.path(), self.buffer.len());
                    ctx.watch(&found);
                    for m in self.buffer.drain(..) {
                        found.tell(m);
                    }
                    self.target = Some(found);
                }
            }
        }
        Ok(())
    }

    async fn on_terminated(
        &mut self,
        t: Terminated,
        ctx: &mut Context<ProxyMsg<M>>,
    ) -> Result<(), ActorError> {
        if self.target.as_ref().is_some_and(|r| r.id() == t.id) {
            tracing::info!(singleton = %self.name, "singleton {} at {} stopped; looking for it again", self.name, t.path);
            self.target = None;
            self.identify(ctx);
        }
        Ok(())
    }
}

impl<M: RemoteMessage> Proxy<M> {
    fn hold(&mut self, m: M) {
        if self.buffer.len() >= self.capacity {
            self.buffer.pop_front();
            metrics::counter!("flotilla_singleton_proxy_dropped_total", "singleton" => self.name.clone())
                .increment(1);
            tracing::warn!(singleton = %self.name, "singleton {}'s proxy buffer is full ({} messages) while the singleton is not found: dropped the oldest", self.name, self.capacity);
        }
        self.buffer.push_back(m);
    }

    /// Asks the oldest member's manager whether the singleton runs there, and again every
    /// identification-interval until it is found.
    fn identify(&mut self, ctx: &mut Context<ProxyMsg<M>>) {
        ctx.timers()
            .start_single("identify", ProxyMsg::Tick, self.interval);
        self.asked += 1;
        let asked = self.asked;
        let state = self.cluster.state();
        let Some(oldest) = singleton::oldest(&state.members, &self.role) else {
            return;
        };
        let me = ctx.myself().clone();
        if oldest.node == *self.cluster.self_node() {
            let here = self.local.as_ref().and_then(|l| l.borrow().clone());
            if let Some(found) = here {
                me.tell(ProxyMsg::Identified { asked, found });
            }
            return;
        }
        let system = ctx.system().clone();
        let manager = format!("{}/user/{}", oldest.node.address, self.name);
        let timeout = self.interval;
        tokio::spawn(async move {
            let Ok(manager) = system.remote_ref::<ManagerMsg>(&manager) else {
                return;
            };
            if let Ok(Some(path)) = manager.ask(ManagerMsg::Identify, timeout).await {
                match system.remote_ref::<M>(&path) {
                    Ok(found) => me.tell(ProxyMsg::Identified { asked, found }),
                    Err(e) => tracing::warn!("a singleton manager gave a bad path {path:?}: {e}"),
                }
            }
        });
    }
}
