//! Remote actors: references to actors on other nodes, and this node's side of remoting.
//!
//! A system built with [`ActorSystemBuilder::remote`](crate::ActorSystemBuilder::remote) starts
//! `flotilla-remote` on its own threads with the system's UID. Then:
//!
//! - [`ActorSystem::expose`](crate::ActorSystem::expose) makes a local actor reachable from other
//!   nodes, for a message type that implements [`RemoteMessage`];
//! - [`ActorSystem::remote_ref`](crate::ActorSystem::remote_ref) gives an [`ActorRef`] to an actor
//!   on another node, used exactly like a local one: `tell`, `ask` (the [`ReplyTo`] inside the
//!   message travels as a reference to the waiting asker) and
//!   [`Context::watch`](crate::Context::watch), which delivers `Terminated` when the remote actor
//!   stops or when the failure detector declares its node dead.
//!
//! Messages are serialized with postcard and carry their type's stable
//! [`RemoteMessage::MANIFEST`]. A message whose recipient is not exposed, whose manifest is not the
//! recipient's, or whose bytes do not decode is dropped, logged and counted
//! (`flotilla_remote_inbound_dropped_total{reason}`); the association stays up.
//!
//! Remote deathwatch rides on reliable system messages (`flotilla.Watch`, `flotilla.Unwatch`,
//! `flotilla.Terminated`), exactly once and in order per pair of incarnations. Association
//! changes and quarantine notices are published on the event stream as [`AssociationEvent`] and
//! [`ThisSystemQuarantined`].

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use flotilla_core::{ActorPath, Address, UniqueAddress};
use flotilla_proto::association::StateName;
use flotilla_remote::{Inbound, RemoteNode, SystemPayload};
use flotilla_wire::UserEnvelopeRef;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, oneshot};

use crate::actor_ref::{ActorId, ActorRef, AskError, ReplyInner, ReplyTo, Target};
use crate::cell::{Children, Erased, Signal};
use crate::dead_letters::DeadLetterReason;
use crate::system::SystemInner;

/// A message type that can travel between nodes.
///
/// ```
/// use flotilla_actor::{RemoteMessage, ReplyTo};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// enum CounterMsg {
///     Add(u64),
///     Get(ReplyTo<u64>),
/// }
/// impl RemoteMessage for CounterMsg {
///     const MANIFEST: &'static str = "demo.Counter";
/// }
/// ```
pub trait RemoteMessage: Serialize + DeserializeOwned + Send + 'static {
    /// The type's name on the wire: stable across releases and unique in a cluster. Renaming
    /// the Rust type does not change it; changing it breaks compatibility with running nodes.
    const MANIFEST: &'static str;
}

/// An association changed state (published on the event stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssociationEvent {
    /// The remote node.
    pub remote: Address,
    /// The state before.
    pub from: StateName,
    /// The state after.
    pub to: StateName,
    /// Why, in words.
    pub cause: String,
}

/// A remote node quarantined this one: it cannot talk to that node again until this node
/// restarts (published on the event stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThisSystemQuarantined {
    /// The quarantining node.
    pub by: UniqueAddress,
    /// Its reason.
    pub reason: String,
}

/// Why a remote reference could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteRefError {
    /// The system was built without remoting.
    #[error("this actor system has no remoting (build it with ActorSystemBuilder::remote)")]
    NoRemoting,
    /// Not a path of the form `flotilla://system@host:port/user/...`.
    #[error("{0:?} is not a remote actor path (flotilla://system@host:port/user/name)")]
    BadPath(String),
}

/// The prefix of the recipient of an answer to a remote `ask`.
const ASK_PREFIX: &str = "/temp/ask/";
const WATCH: &str = "flotilla.Watch";
const UNWATCH: &str = "flotilla.Unwatch";
const TERMINATED: &str = "flotilla.Terminated";

/// A deathwatch system message: `watchee` (an actor path on the receiving or sending node) and
/// `watcher` (path elements on the other node).
#[derive(Debug, Serialize, Deserialize)]
struct WatchMsg {
    watchee: String,
    watcher: String,
}

type Deliver =
    Box<dyn Fn(&UserEnvelopeRef<'_>, &UniqueAddress) -> Result<(), Refusal> + Send + Sync>;

/// Why an inbound message was dropped.
#[derive(Debug)]
enum Refusal {
    NotExposed,
    WrongManifest(String),
    Undecodable(String),
    Stopped,
}

impl Refusal {
    fn label(&self) -> &'static str {
        match self {
            Self::NotExposed => "not-exposed",
            Self::WrongManifest(_) => "unknown-manifest",
            Self::Undecodable(_) => "undecodable",
            Self::Stopped => "recipient-stopped",
        }
    }
}

struct Exposed {
    deliver: Deliver,
    erased: Arc<dyn Erased>,
}

/// A pending remote `ask`: the answer's decoder, while the asker waits.
trait PendingAsk: Send {
    fn answer(self: Box<Self>, bytes: &[u8]) -> Result<(), String>;
    fn abandoned(&self) -> bool;
}

/// An ask waiting for its answer, and the node that was asked.
type AskedOf = (Address, Box<dyn PendingAsk>);

struct Waiting<R>(oneshot::Sender<R>);

impl<R: DeserializeOwned + Send> PendingAsk for Waiting<R> {
    fn answer(self: Box<Self>, bytes: &[u8]) -> Result<(), String> {
        let r: R = postcard::from_bytes(bytes).map_err(|e| e.to_string())?;
        let _ = self.0.send(r);
        Ok(())
    }

    fn abandoned(&self) -> bool {
        self.0.is_closed()
    }
}

/// This node's remoting, as the actor runtime uses it.
pub(crate) struct RemoteSupport {
    pub(crate) node: RemoteNode,
    exposed: RwLock<HashMap<String, Exposed>>,
    /// Asks waiting for their answer, with the node that was asked: only it may answer.
    asks: Mutex<HashMap<u64, AskedOf>>,
    next_ask: AtomicU64,
    /// The ids this node gives remote actor paths, and their watch state.
    remotes: Mutex<HashMap<ActorPath, Arc<Watchee>>>,
    /// The ids this node gives remote watchers of its actors.
    proxies: Mutex<HashMap<ActorPath, ActorId>>,
    system: Weak<SystemInner>,
}

thread_local! {
    /// Set while a message is encoded for, or decoded from, another node: where a [`ReplyTo`]
    /// inside registers its asker, or sends its answer.
    static CONTEXT: RefCell<Option<(Arc<RemoteSupport>, Address)>> = const { RefCell::new(None) };
}

fn with_context<T>(support: &Arc<RemoteSupport>, peer: &Address, f: impl FnOnce() -> T) -> T {
    let previous = CONTEXT.with(|c| c.replace(Some((Arc::clone(support), peer.clone()))));
    let out = f();
    CONTEXT.with(|c| *c.borrow_mut() = previous);
    out
}

fn context() -> Option<(Arc<RemoteSupport>, Address)> {
    CONTEXT.with(|c| c.borrow().clone())
}

impl<R: DeserializeOwned + Send + 'static> Serialize for ReplyTo<R> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error as _;
        let ReplyInner::Local(tx) = &self.0 else {
            return Err(S::Error::custom(
                "a reply handle from another node cannot be forwarded to a third",
            ));
        };
        let Some((support, asked)) = context() else {
            return Err(S::Error::custom(
                "a reply handle is serialized only when sent to a remote actor",
            ));
        };
        let tx = tx
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or_else(|| S::Error::custom("this reply handle was already sent"))?;
        let id = support.register_ask(asked, Box::new(Waiting(tx)));
        s.serialize_u64(id)
    }
}

impl<'de, R: Serialize + Send + 'static> Deserialize<'de> for ReplyTo<R> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let id = u64::deserialize(d)?;
        let (support, asker) = context().ok_or_else(|| {
            D::Error::custom("a reply handle is decoded only from a remote message")
        })?;
        Ok(Self(ReplyInner::Remote(Box::new(move |answer: R| {
            support.answer(&asker, id, &answer)
        }))))
    }
}

/// Where an incarnation's ask ids start: a random point. Answers are addressed to the asker's
/// address, and a late one may reach the next incarnation there: ids counted from one in every
/// incarnation would hand it to whichever ask of the new one has the same id (the wrong answer,
/// seen by the chaos harness after a restart). From a random start two incarnations' ids never
/// meet in practice, and nothing another node knows (the UID, say) tells it the ids in use.
fn first_ask_id() -> u64 {
    rand::random()
}

impl RemoteSupport {
    pub(crate) fn start(
        system: &Arc<SystemInner>,
        node: RemoteNode,
        inbound: flotilla_remote::InboundReceiver,
    ) -> Arc<Self> {
        let first_ask = first_ask_id();
        let support = Arc::new(Self {
            node,
            exposed: RwLock::default(),
            asks: Mutex::default(),
            next_ask: AtomicU64::new(first_ask),
            remotes: Mutex::default(),
            proxies: Mutex::default(),
            system: Arc::downgrade(system),
        });
        system
            .runtime
            .spawn(dispatch(Arc::downgrade(&support), inbound));
        support
    }

    /// Waits (at most `remote.shutdown-flush-timeout`) for the system messages still on their
    /// way — the `Terminated` notices of the actors that just stopped — to be acknowledged.
    pub(crate) async fn flush(&self) {
        self.node.flush().await;
    }

    /// Stops remoting once the system's actors have stopped and the last notices were flushed.
    /// Watchers on nodes that did not acknowledge in time learn of this node's actors through
    /// their failure detectors, as after a crash.
    pub(crate) fn stop(&self) {
        self.exposed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        lock(&self.asks).clear();
        self.node.shutdown();
    }

    fn register_ask(&self, asked: Address, pending: Box<dyn PendingAsk>) -> u64 {
        let id = self.next_ask.fetch_add(1, Ordering::Relaxed);
        let mut asks = lock(&self.asks);
        asks.retain(|_, (_, p)| !p.abandoned()); // askers that timed out
        asks.insert(id, (asked, pending));
        id
    }

    fn answer<R: Serialize>(&self, asker: &Address, id: u64, answer: &R) -> bool {
        let payload = match postcard::to_stdvec(answer) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(%asker, "cannot encode the answer to an ask from {asker}: {e}");
                return false;
            }
        };
        let envelope = UserEnvelopeRef {
            recipient: &format!("{ASK_PREFIX}{id}"),
            sender: None,
            manifest: "flotilla.AskReply",
            payload: &payload,
        };
        self.node.send_user_ref(asker, envelope).is_ok()
    }

    /// The reference to `path` on another node.
    pub(crate) fn remote_ref<M: RemoteMessage>(self: &Arc<Self>, path: ActorPath) -> ActorRef<M> {
        let watchee = self.watchee(&path);
        ActorRef {
            target: Target::Remote(Arc::new(RemoteRef {
                id: watchee.id,
                recipient: elements(&path),
                outbound: self.node.outbound(path.address()).ok(),
                path,
                watchee,
                support: Arc::clone(self),
                manifest: M::MANIFEST,
                encode: encode::<M>,
            })),
        }
    }

    /// The watch state of the actor at `path`: shared by every live reference to it. Once that
    /// actor is known to have stopped, a new reference gets a new one (and a new id): it is for
    /// whatever lives at the path now — a restarted actor, or the node's next incarnation — while
    /// the old references stay stopped.
    fn watchee(self: &Arc<Self>, path: &ActorPath) -> Arc<Watchee> {
        let mut remotes = lock(&self.remotes);
        if let Some(w) = remotes
            .get(path)
            .filter(|w| !w.stopped.load(Ordering::Acquire))
        {
            return Arc::clone(w);
        }
        let id = self
            .system
            .upgrade()
            .map_or(ActorId(u64::MAX), |s| s.new_actor_id());
        let w = Arc::new(Watchee {
            id,
            path: path.clone(),
            support: Arc::downgrade(self),
            watchers: Mutex::default(),
            stopped: AtomicBool::new(false),
            notify: Notify::new(),
            children: Mutex::default(),
        });
        remotes.insert(path.clone(), Arc::clone(&w));
        w
    }

    pub(crate) fn expose<M: RemoteMessage>(self: &Arc<Self>, actor: &ActorRef<M>) {
        let Some(cell) = actor.local_cell() else {
            return;
        };
        let target = actor.clone();
        let weak = Arc::downgrade(self);
        let deliver: Deliver = Box::new(move |env, from| {
            if env.manifest != M::MANIFEST {
                return Err(Refusal::WrongManifest(env.manifest.to_owned()));
            }
            let Some(support) = weak.upgrade() else {
                return Err(Refusal::Stopped);
            };
            let msg: M = with_context(&support, &from.address, || {
                postcard::from_bytes(env.payload)
            })
            .map_err(|e| Refusal::Undecodable(e.to_string()))?;
            if target.is_stopped() {
                return Err(Refusal::Stopped);
            }
            target.tell(msg);
            Ok(())
        });
        let key = elements(&cell.path);
        tracing::debug!(actor = %cell.path, "{} is reachable from other nodes", cell.path);
        self.exposed
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                key,
                Exposed {
                    deliver,
                    erased: Arc::clone(cell) as Arc<dyn Erased>,
                },
            );
    }

    fn on_user(self: &Arc<Self>, from: &UniqueAddress, env: &UserEnvelopeRef<'_>) {
        if let Some(id) = env.recipient.strip_prefix(ASK_PREFIX) {
            let pending = {
                let mut asks = lock(&self.asks);
                let id = id.parse::<u64>().ok();
                match id.and_then(|id| asks.get(&id)) {
                    // Only the node that was asked answers; an answer from any other is
                    // dropped and the ask still waits for the real one.
                    Some((asked, _)) if *asked != from.address => {
                        metrics::counter!("flotilla_remote_inbound_dropped_total", "reason" => "answer-from-another-node").increment(1);
                        tracing::warn!(%from, "dropped an answer from {from} to an ask sent to {asked}");
                        return;
                    }
                    Some(_) => id.and_then(|id| asks.remove(&id)).map(|(_, p)| p),
                    None => None,
                }
            };
            match pending.map(|p| p.answer(env.payload)) {
                Some(Ok(())) => {}
                Some(Err(e)) => dropped(from, env, &Refusal::Undecodable(e)),
                None => {
                    // The asker gave up (timeout): the late answer is a dead letter.
                    metrics::counter!("flotilla_remote_late_answers_total").increment(1);
                    tracing::debug!(%from, "an answer from {from} came after its asker stopped waiting");
                }
            }
            return;
        }
        let result = {
            let exposed = self.exposed.read().unwrap_or_else(|e| e.into_inner());
            match exposed.get(env.recipient) {
                Some(e) => (e.deliver)(env, from),
                None => Err(Refusal::NotExposed),
            }
        };
        if let Err(why) = result {
            dropped(from, env, &why);
        }
    }

    fn on_system(self: &Arc<Self>, from: &UniqueAddress, payload: &SystemPayload) {
        let msg: WatchMsg = match postcard::from_bytes(&payload.payload) {
            Ok(m) => m,
            Err(e) => {
                metrics::counter!("flotilla_remote_inbound_dropped_total", "reason" => "undecodable").increment(1);
                tracing::warn!(%from, "dropped a system message {} from {from}: {e}", payload.manifest);
                return;
            }
        };
        match payload.manifest.as_str() {
            WATCH | UNWATCH => {
                let watchee = self
                    .exposed
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&msg.watchee)
                    .map(|e| Arc::clone(&e.erased));
                let proxy = Arc::new(WatcherProxy {
                    id: self.proxy_id(&from.address, &msg.watcher),
                    path: remote_path(&from.address, &msg.watcher),
                    watchee: msg.watchee.clone(),
                    support: Arc::downgrade(self),
                    children: Mutex::default(),
                });
                match (payload.manifest.as_str(), watchee) {
                    (WATCH, Some(w)) => {
                        if !w.signal(Signal::Watch {
                            watcher: Arc::clone(&proxy) as Arc<dyn Erased>,
                        }) {
                            proxy.terminated();
                        }
                    }
                    (WATCH, None) => proxy.terminated(), // nothing there: as if stopped
                    (_, Some(w)) => {
                        w.signal(Signal::Unwatch { watcher: proxy.id });
                    }
                    (_, None) => {}
                }
            }
            TERMINATED => {
                let path = remote_path(&from.address, &msg.watchee);
                let watchee = lock(&self.remotes).get(&path).cloned();
                if let Some(w) = watchee {
                    w.terminated(&format!("{path} stopped"));
                }
            }
            other => {
                metrics::counter!("flotilla_remote_inbound_dropped_total", "reason" => "unknown-manifest").increment(1);
                tracing::warn!(%from, "dropped a system message with unknown manifest {other} from {from}");
            }
        }
    }

    /// The failure detector declared `remote` dead: every actor watched there is terminated.
    fn on_address_terminated(&self, remote: &Address) {
        self.address_terminated(remote, &format!("its node {remote} was declared dead"));
    }

    pub(crate) fn address_terminated(&self, remote: &Address, why: &str) {
        let dead: Vec<Arc<Watchee>> = lock(&self.remotes)
            .iter()
            .filter(|(p, _)| p.address() == remote)
            .map(|(_, w)| Arc::clone(w))
            .collect();
        for w in dead {
            w.terminated(why);
        }
    }

    /// The id of a remote watcher: the same for its `Watch` and its `Unwatch`.
    fn proxy_id(&self, node: &Address, watcher: &str) -> ActorId {
        let path = remote_path(node, watcher);
        let mut proxies = lock(&self.proxies);
        *proxies.entry(path).or_insert_with(|| {
            self.system
                .upgrade()
                .map_or(ActorId(u64::MAX), |s| s.new_actor_id())
        })
    }

    fn send_system(&self, to: &Address, manifest: &str, msg: &WatchMsg) {
        match postcard::to_stdvec(msg) {
            Ok(payload) => {
                let _ = self.node.send_system(
                    to,
                    SystemPayload {
                        manifest: manifest.to_owned(),
                        payload,
                    },
                );
            }
            Err(e) => tracing::warn!("cannot encode {manifest}: {e}"),
        }
    }

    fn publish<E: Clone + Send + 'static>(&self, event: E) {
        if let Some(system) = self.system.upgrade() {
            system.event_stream.publish(event);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A path's elements as sent on the wire: `/user/counter`.
fn elements(path: &ActorPath) -> String {
    let mut out = String::new();
    for e in path.elements() {
        out.push('/');
        out.push_str(e);
    }
    out
}

/// The path at `node` with elements `/a/b`.
fn remote_path(node: &Address, elements: &str) -> ActorPath {
    elements
        .split('/')
        .filter(|e| !e.is_empty())
        .fold(ActorPath::root(node.clone()), |p, e| p.child(e))
}

/// Parses `flotilla://system@host:port/user/name`.
pub(crate) fn parse_remote_path(s: &str) -> Result<ActorPath, RemoteRefError> {
    let bad = || RemoteRefError::BadPath(s.to_owned());
    let rest = s.strip_prefix("flotilla://").ok_or_else(bad)?;
    let slash = rest.find('/').ok_or_else(bad)?;
    let address: Address = format!("flotilla://{}", &rest[..slash])
        .parse()
        .map_err(|_| bad())?;
    if address.port().is_none() || rest[slash..].len() < 2 {
        return Err(bad());
    }
    Ok(remote_path(&address, &rest[slash..]))
}

fn dropped(from: &UniqueAddress, env: &UserEnvelopeRef<'_>, why: &Refusal) {
    metrics::counter!("flotilla_remote_inbound_dropped_total", "reason" => why.label())
        .increment(1);
    let detail = match why {
        Refusal::NotExposed => "no actor there is exposed to other nodes".to_owned(),
        Refusal::WrongManifest(m) => format!("manifest {m} is not the recipient's message type"),
        Refusal::Undecodable(e) => format!("the message does not decode: {e}"),
        Refusal::Stopped => "the recipient has stopped".to_owned(),
    };
    tracing::warn!(%from, recipient = %env.recipient, "dropped a message from {from} to {}: {detail}", env.recipient);
}

/// Serializes a message to `to` (remote actor references inside it are written for that node).
fn encode<M: RemoteMessage>(
    support: &Arc<RemoteSupport>,
    to: &ActorPath,
    msg: &M,
) -> Result<Vec<u8>, String> {
    with_context(support, to.address(), || postcard::to_stdvec(msg)).map_err(|e| e.to_string())
}

/// Reads what remoting delivers until the system or remoting stops.
async fn dispatch(support: Weak<RemoteSupport>, mut inbound: flotilla_remote::InboundReceiver) {
    while let Some(item) = inbound.recv().await {
        let Some(support) = support.upgrade() else {
            return;
        };
        match item {
            Inbound::User { from, messages } => {
                for envelope in messages.iter_checked() {
                    match envelope {
                        Ok(envelope) => support.on_user(&from, &envelope),
                        Err(e) => flotilla_remote::undecodable_dropped(&from, &e),
                    }
                }
            }
            Inbound::System { from, payload } => support.on_system(&from, &payload),
            Inbound::AddressTerminated { remote, .. } => support.on_address_terminated(&remote),
            Inbound::Association {
                remote,
                from,
                to,
                cause,
            } => support.publish(AssociationEvent {
                remote,
                from,
                to,
                cause,
            }),
            Inbound::ThisSystemQuarantined { by, reason } => {
                support.publish(ThisSystemQuarantined { by, reason });
            }
            Inbound::DeadLetter {
                to,
                envelope,
                reason,
            } => {
                if let Some(system) = support.system.upgrade() {
                    let path = remote_path(&to, &envelope.recipient);
                    system.dead_letters.record(
                        &system,
                        &path,
                        "remote message",
                        DeadLetterReason::Undeliverable,
                    );
                }
                tracing::debug!(remote = %to, "message to {to}{} not sent: {reason}", envelope.recipient);
            }
        }
    }
}

/// Serializes a message for the node of the path (see [`encode`]).
type Encode<M> = fn(&Arc<RemoteSupport>, &ActorPath, &M) -> Result<Vec<u8>, String>;

/// The remote side of an [`ActorRef`].
pub(crate) struct RemoteRef<M> {
    pub(crate) id: ActorId,
    pub(crate) path: ActorPath,
    watchee: Arc<Watchee>,
    support: Arc<RemoteSupport>,
    /// The path's elements as the envelope names the recipient (`/user/a`), built once.
    recipient: String,
    /// The way to the remote node, looked up once (`None` for a path without host and port).
    outbound: Option<flotilla_remote::Outbound>,
    manifest: &'static str,
    encode: Encode<M>,
}

impl<M: Send + 'static> RemoteRef<M> {
    fn dead_letter(&self, reason: &str) {
        if let Some(system) = self.support.system.upgrade() {
            system.dead_letters.record(
                &system,
                &self.path,
                std::any::type_name::<M>(),
                DeadLetterReason::Undeliverable,
            );
        }
        tracing::debug!(actor = %self.path, "message to {} not sent: {reason}", self.path);
    }

    pub(crate) fn send(&self, msg: M) -> bool {
        let payload = match (self.encode)(&self.support, &self.path, &msg) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(actor = %self.path, "cannot encode a message to {}: {e}", self.path);
                self.dead_letter(&e);
                return false;
            }
        };
        let envelope = UserEnvelopeRef {
            recipient: &self.recipient,
            sender: None,
            manifest: self.manifest,
            payload: &payload,
        };
        let sent = match &self.outbound {
            Some(outbound) => outbound.send_user_ref(envelope),
            None => self
                .support
                .node
                .send_user_ref(self.path.address(), envelope),
        };
        match sent {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(actor = %self.path, "cannot send to {}: {e}", self.path);
                self.dead_letter(&e.to_string());
                false
            }
        }
    }

    pub(crate) fn tell(&self, msg: M) {
        self.send(msg);
    }

    pub(crate) async fn ask<R>(
        &self,
        msg: M,
        rx: oneshot::Receiver<R>,
        timeout: Duration,
    ) -> Result<R, AskError> {
        let target = || self.path.clone();
        if !self.send(msg) {
            return Err(AskError::TargetDead { target: target() });
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            // The handle was not serialized (a message without it), or its answer was dropped.
            Ok(Err(_)) => Err(AskError::NoReply { target: target() }),
            Err(_) => Err(AskError::Timeout {
                target: target(),
                timeout,
            }),
        }
    }

    pub(crate) fn is_stopped(&self) -> bool {
        self.watchee.stopped.load(Ordering::Acquire)
    }

    pub(crate) async fn wait_stopped(&self) {
        crate::cell::wait_until(&self.watchee.notify, || self.is_stopped()).await;
    }

    pub(crate) fn watchee(&self) -> Arc<dyn Erased> {
        Arc::clone(&self.watchee) as Arc<dyn Erased>
    }
}

/// A remote actor as local watchers see it: `Watch` registers the watcher here and tells the
/// remote node (and starts the failure detector on it); `Terminated` comes back as a system
/// message, or from the failure detector.
struct Watchee {
    id: ActorId,
    path: ActorPath,
    support: Weak<RemoteSupport>,
    watchers: Mutex<BTreeMap<ActorId, Arc<dyn Erased>>>,
    stopped: AtomicBool,
    notify: Notify,
    children: Mutex<Children>,
}

impl Watchee {
    fn terminated(&self, why: &str) {
        self.stopped.store(true, Ordering::Release);
        self.notify.notify_waiters();
        let watchers = std::mem::take(&mut *lock(&self.watchers));
        if !watchers.is_empty() {
            tracing::info!(actor = %self.path, "remote actor {} terminated: {why}", self.path);
        }
        if let Some(support) = self.support.upgrade() {
            for _ in 0..watchers.len() {
                let _ = support.node.unwatch_node(self.path.address());
            }
        }
        for (_, w) in watchers {
            w.signal(Signal::Terminated {
                id: self.id,
                path: self.path.clone(),
            });
        }
    }
}

impl Erased for Watchee {
    fn id(&self) -> ActorId {
        self.id
    }

    fn path(&self) -> &ActorPath {
        &self.path
    }

    fn signal(&self, signal: Signal) -> bool {
        let Some(support) = self.support.upgrade() else {
            return false;
        };
        match signal {
            Signal::Watch { watcher } => {
                if self.stopped.load(Ordering::Acquire) {
                    return false;
                }
                let msg = WatchMsg {
                    watchee: elements(&self.path),
                    watcher: elements(watcher.path()),
                };
                if lock(&self.watchers).insert(watcher.id(), watcher).is_none() {
                    let _ = support.node.watch_node(self.path.address());
                    support.send_system(self.path.address(), WATCH, &msg);
                }
                true
            }
            Signal::Unwatch { watcher } => {
                if let Some(w) = lock(&self.watchers).remove(&watcher) {
                    let _ = support.node.unwatch_node(self.path.address());
                    let msg = WatchMsg {
                        watchee: elements(&self.path),
                        watcher: elements(w.path()),
                    };
                    support.send_system(self.path.address(), UNWATCH, &msg);
                }
                true
            }
            _ => true,
        }
    }

    fn children(&self) -> MutexGuard<'_, Children> {
        lock(&self.children)
    }
}

/// A watcher on another node, as a local actor's watcher list sees it: its `Terminated` notice
/// goes back as a system message.
struct WatcherProxy {
    id: ActorId,
    path: ActorPath,
    /// The watched local actor's path elements.
    watchee: String,
    support: Weak<RemoteSupport>,
    children: Mutex<Children>,
}

impl WatcherProxy {
    fn terminated(&self) {
        if let Some(support) = self.support.upgrade() {
            let msg = WatchMsg {
                watchee: self.watchee.clone(),
                watcher: elements(&self.path),
            };
            support.send_system(self.path.address(), TERMINATED, &msg);
        }
    }
}

impl Erased for WatcherProxy {
    fn id(&self) -> ActorId {
        self.id
    }

    fn path(&self) -> &ActorPath {
        &self.path
    }

    fn signal(&self, signal: Signal) -> bool {
        if let Signal::Terminated { .. } = signal {
            self.terminated();
        }
        true
    }

    fn children(&self) -> MutexGuard<'_, Children> {
        lock(&self.children)
    }
}
