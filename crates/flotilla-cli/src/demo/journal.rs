//! What the demo saw, in the order it happened: one journal of facts shared by every node, and
//! the lease backend wrapper that writes each node's lease calls into it (and can make a node's
//! lease calls fail at once, as a crashed process's would).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flotilla_lease::{
    BoxFuture, FencingToken, LeaseBackend, LeaseName, LeaseRecord, OwnerId, backend::BackendReply,
};

/// A node of the demo, by its index (0 is `node-1`).
pub type NodeIx = usize;

/// What happened to a lease call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseFact {
    /// Acquired, with the hold's fencing token.
    Acquired(u64),
    /// Refused: someone else holds it.
    Denied(Option<String>),
    /// A renewal was refused: the lease is no longer this node's.
    RenewDenied,
    /// Given up; `false` when it was not this node's any more.
    Released(bool),
    /// No certain answer (an error or a timeout), for the named call.
    Failed(&'static str, String),
}

/// One fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// A lease call's outcome on `node`.
    Lease {
        /// The calling node.
        node: NodeIx,
        /// The lease's shard (the number at the end of its name), or the whole name.
        shard: String,
        /// What happened.
        what: LeaseFact,
    },
    /// An entity started or stopped on `node`.
    Entity {
        /// Its node.
        node: NodeIx,
        /// The entity.
        entity: String,
        /// Its shard.
        shard: String,
        /// Its shard's fencing token (none without leases).
        token: Option<u64>,
        /// Started (true) or stopped.
        started: bool,
    },
    /// A cluster event as `observer` saw it.
    Member {
        /// Who saw it.
        observer: NodeIx,
        /// The event's kind (`MemberUp`, `UnreachableMember`, …).
        kind: &'static str,
        /// The member's address (or the leader's, or "none").
        member: String,
    },
    /// An association of `observer` changed state.
    Association {
        /// Whose association.
        observer: NodeIx,
        /// The remote node's address.
        remote: String,
        /// The state before.
        from: String,
        /// The state after.
        to: String,
        /// Why.
        cause: String,
    },
    /// Something the demo did or concluded, in words, about `node` if any.
    Note {
        /// The node it concerns.
        node: Option<NodeIx>,
        /// What.
        text: String,
    },
}

/// A fact with the time it happened, since the demo started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Since the start.
    pub at: Duration,
    /// What.
    pub fact: Fact,
}

/// The shared journal.
#[derive(Debug, Clone)]
pub struct Journal {
    epoch: Instant,
    entries: Arc<Mutex<Vec<Entry>>>,
}

impl Journal {
    /// An empty journal whose clock starts now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            entries: Arc::default(),
        }
    }

    /// Time since the start.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Writes a fact, timed now.
    pub fn record(&self, fact: Fact) {
        let at = self.now();
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Entry { at, fact });
    }

    /// Writes a note, timed now.
    pub fn note(&self, node: Option<NodeIx>, text: impl Into<String>) {
        self.record(Fact::Note {
            node,
            text: text.into(),
        });
    }

    /// Every entry so far, in time order.
    pub fn entries(&self) -> Vec<Entry> {
        let mut out = self
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        // Writers on different threads may push slightly out of order.
        out.sort_by_key(|e| e.at);
        out
    }
}

impl Default for Journal {
    fn default() -> Self {
        Self::new()
    }
}

/// The shard of a shard lease (`<system>-shard-<type>-<shard>`): the part after the last dash.
pub fn shard_of_lease(lease: &LeaseName) -> String {
    let name = lease.as_str();
    name.rsplit('-').next().unwrap_or(name).to_owned()
}

/// One node's view of the shared lease backend: every call's outcome goes to the journal, and
/// once [`crash`](Self::crash)ed every call fails at once without reaching the backend — what a
/// process that died looks like to the backend: nothing more from it.
pub struct Recorded {
    inner: Arc<dyn LeaseBackend>,
    node: NodeIx,
    journal: Journal,
    crashed: AtomicBool,
    /// Set once the crashed node's threads have stopped: calls from then on are counted.
    dead: AtomicBool,
    after_crash: AtomicU64,
}

impl Recorded {
    /// Wraps `inner` for `node`.
    pub fn new(inner: Arc<dyn LeaseBackend>, node: NodeIx, journal: Journal) -> Self {
        Self {
            inner,
            node,
            journal,
            crashed: AtomicBool::new(false),
            dead: AtomicBool::new(false),
            after_crash: AtomicU64::new(0),
        }
    }

    /// From now on, nothing this node does reaches the backend.
    pub fn crash(&self) {
        self.crashed.store(true, Ordering::SeqCst);
    }

    /// The crashed node's threads have stopped: a call from now on is activity after the crash.
    pub fn confirm_dead(&self) {
        self.dead.store(true, Ordering::SeqCst);
    }

    /// Calls attempted once the crashed node was dead (it should make none).
    pub fn calls_after_crash(&self) -> u64 {
        self.after_crash.load(Ordering::SeqCst)
    }

    fn refused(&self) -> Option<BackendReply> {
        if self.crashed.load(Ordering::SeqCst) {
            if self.dead.load(Ordering::SeqCst) {
                self.after_crash.fetch_add(1, Ordering::SeqCst);
            }
            Some(BackendReply::Unknown {
                reason: "the node has crashed".into(),
            })
        } else {
            None
        }
    }

    fn log(&self, lease: &LeaseName, what: LeaseFact) {
        self.journal.record(Fact::Lease {
            node: self.node,
            shard: shard_of_lease(lease),
            what,
        });
    }
}

impl LeaseBackend for Recorded {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn request_timeout(&self) -> Duration {
        self.inner.request_timeout()
    }

    fn default_operation_timeout(&self) -> Duration {
        self.inner.default_operation_timeout()
    }

    fn acquire<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        ttl: Duration,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(async move {
            if let Some(r) = self.refused() {
                return r;
            }
            let reply = self.inner.acquire(lease, owner, ttl).await;
            let what = match &reply {
                BackendReply::Granted { token } => LeaseFact::Acquired(token.0),
                BackendReply::Denied { holder } => LeaseFact::Denied(holder.clone()),
                BackendReply::Unknown { reason } | BackendReply::NotSent { reason } => {
                    LeaseFact::Failed("acquire", reason.clone())
                }
                other => LeaseFact::Failed("acquire", format!("unexpected answer {other:?}")),
            };
            self.log(lease, what);
            reply
        })
    }

    fn renew<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        ttl: Duration,
        token: FencingToken,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(async move {
            if let Some(r) = self.refused() {
                return r;
            }
            let reply = self.inner.renew(lease, owner, ttl, token).await;
            // Renewals that work are the steady state: only their failures are facts.
            match &reply {
                BackendReply::Denied { .. } => self.log(lease, LeaseFact::RenewDenied),
                BackendReply::Unknown { reason } | BackendReply::NotSent { reason } => {
                    self.log(lease, LeaseFact::Failed("renew", reason.clone()));
                }
                _ => {}
            }
            reply
        })
    }

    fn release<'a>(
        &'a self,
        lease: &'a LeaseName,
        owner: &'a OwnerId,
        token: Option<FencingToken>,
    ) -> BoxFuture<'a, BackendReply> {
        Box::pin(async move {
            if let Some(r) = self.refused() {
                return r;
            }
            let reply = self.inner.release(lease, owner, token).await;
            let what = match &reply {
                BackendReply::Released { was_held } => LeaseFact::Released(*was_held),
                BackendReply::Unknown { reason } | BackendReply::NotSent { reason } => {
                    LeaseFact::Failed("release", reason.clone())
                }
                other => LeaseFact::Failed("release", format!("unexpected answer {other:?}")),
            };
            self.log(lease, what);
            reply
        })
    }

    fn describe<'a>(
        &'a self,
        lease: &'a LeaseName,
    ) -> BoxFuture<'a, Result<Option<LeaseRecord>, String>> {
        self.inner.describe(lease)
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<LeaseRecord>, String>> {
        // Listing is what operators and the demo's checks do, not the node: it keeps working.
        self.inner.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_lease::MemoryBackend;

    fn name(s: &str) -> LeaseName {
        LeaseName::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn owner(s: &str) -> OwnerId {
        OwnerId::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn calls_are_journaled_and_a_crashed_node_reaches_nothing() {
        let journal = Journal::new();
        let memory = MemoryBackend::new();
        let a = Recorded::new(Arc::new(memory.clone()), 0, journal.clone());
        let b = Recorded::new(Arc::new(memory.clone()), 1, journal.clone());
        let lease = name("demo-shard-counter-7");
        let ttl = Duration::from_secs(5);
        assert!(matches!(
            a.acquire(&lease, &owner("a"), ttl).await,
            BackendReply::Granted { .. }
        ));
        assert!(matches!(
            b.acquire(&lease, &owner("b"), ttl).await,
            BackendReply::Denied { .. }
        ));
        a.crash();
        // Its last steps while it dies are refused, not counted.
        assert!(matches!(
            a.release(&lease, &owner("a"), None).await,
            BackendReply::Unknown { .. }
        ));
        assert_eq!(a.calls_after_crash(), 0);
        a.confirm_dead();
        assert!(matches!(
            a.release(&lease, &owner("a"), None).await,
            BackendReply::Unknown { .. }
        ));
        assert_eq!(a.calls_after_crash(), 1);
        // The hold stays: nothing reached the backend.
        let held = memory.list().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(held.len(), 1);
        let facts: Vec<Fact> = journal.entries().into_iter().map(|e| e.fact).collect();
        assert_eq!(
            facts,
            vec![
                Fact::Lease {
                    node: 0,
                    shard: "7".into(),
                    what: LeaseFact::Acquired(held[0].token.0),
                },
                Fact::Lease {
                    node: 1,
                    shard: "7".into(),
                    what: LeaseFact::Denied(Some("a".into())),
                },
            ]
        );
    }
}
