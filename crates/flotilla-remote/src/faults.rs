//! Fault injection on the real transport, for tests: drop traffic to or from a node (a
//! blackhole, both ways or one way), delay it, or cut its connections (a clean disconnect, or an
//! abort that resets them).
//!
//! A [`FaultInjector`] is handed to a node at start ([`crate::StartOptions::faults`]) and acts on
//! that node's side of its links only; to cut two nodes apart both ways, blackhole each from the
//! other, or one side with [`Direction::Both`]. Rules apply to whole frames, so framing is never
//! broken and healing ([`FaultInjector::pass_through`]) resumes traffic on the same connections.
//!
//! What each fault looks like to the protocol:
//!
//! | fault | established links | new connections |
//! | --- | --- | --- |
//! | blackhole (`Send`) | frames to the node are dropped before writing | connect attempts hang until `handshake-timeout`, as a dropped SYN does |
//! | blackhole (`Receive`) | frames from the node are dropped after reading | as above; an accepted connection from the node is closed after its handshake |
//! | delay | frames to the node are written at least the delay after they were queued | unaffected |
//! | disconnect | both connections close cleanly (FIN); the node sees the peer close | unaffected |
//! | abort | both connections are reset (RST); the node sees "connection reset" | unaffected |
//!
//! Not for production: a node without an injector pays nothing for this module.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::time::Duration;

use flotilla_core::Address;
use tokio_util::sync::CancellationToken;

/// Which traffic a blackhole drops, seen from the node that holds the injector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Frames to and from the remote node.
    Both,
    /// Frames to the remote node.
    Send,
    /// Frames from the remote node.
    Receive,
}

/// The faults in force towards one remote node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rule {
    /// Frames to the node are dropped.
    pub drop_outbound: bool,
    /// Frames from the node are dropped.
    pub drop_inbound: bool,
    /// Frames to the node wait at least this long before they are written.
    pub delay: Duration,
}

impl Rule {
    fn is_clear(&self) -> bool {
        *self == Self::default()
    }
}

/// Faults injected into one node's links. Cheap to clone: clones share the rules.
#[derive(Debug, Clone, Default)]
pub struct FaultInjector {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    rules: RwLock<HashMap<Address, Rule>>,
    links: Mutex<HashMap<u64, LinkEntry>>,
    /// Frames dropped by blackholes so far.
    dropped: AtomicU64,
}

/// What it takes to cut one live link.
#[derive(Debug)]
struct LinkEntry {
    remote: Address,
    /// Duplicates of the link's TCP sockets: setting `SO_LINGER` to zero on one makes the final
    /// close of the socket a reset.
    sockets: Vec<socket2::Socket>,
    cancel: CancellationToken,
    why: Arc<OnceLock<&'static str>>,
}

/// A live link's entry; dropping it (with the link) forgets the link.
#[derive(Debug)]
pub(crate) struct Registration {
    inner: Weak<Inner>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.upgrade() {
            inner
                .links
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&self.id);
        }
    }
}

impl FaultInjector {
    /// An injector with no faults in force.
    pub fn new() -> Self {
        Self::default()
    }

    /// Drops frames between this node and `remote` in `direction`, on live links and later ones,
    /// until [`FaultInjector::pass_through`].
    pub fn blackhole(&self, remote: &Address, direction: Direction) {
        tracing::warn!(%remote, ?direction, "fault injection: blackhole towards {remote} ({direction:?})");
        self.update(remote, |r| {
            match direction {
                Direction::Both => (r.drop_outbound, r.drop_inbound) = (true, true),
                Direction::Send => r.drop_outbound = true,
                Direction::Receive => r.drop_inbound = true,
            };
        });
    }

    /// Delays every frame to `remote` by at least `by` (zero removes the delay).
    pub fn delay(&self, remote: &Address, by: Duration) {
        tracing::warn!(%remote, "fault injection: frames to {remote} delayed by {by:?}");
        self.update(remote, |r| r.delay = by);
    }

    /// Removes every rule towards `remote`: traffic flows again on the links still open.
    pub fn pass_through(&self, remote: &Address) {
        tracing::warn!(%remote, "fault injection: traffic with {remote} passes again");
        self.update(remote, |r| *r = Rule::default());
    }

    /// Closes every live link with `remote` cleanly; returns how many.
    pub fn disconnect(&self, remote: &Address) -> usize {
        self.cut(remote, false)
    }

    /// Resets every live link with `remote` (TCP RST); returns how many.
    pub fn abort(&self, remote: &Address) -> usize {
        self.cut(remote, true)
    }

    /// Frames dropped by blackholes so far.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// The rule towards `remote`.
    pub fn rule(&self, remote: &Address) -> Rule {
        self.inner
            .rules
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(remote)
            .copied()
            .unwrap_or_default()
    }

    pub(crate) fn count_drop(&self) {
        self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("flotilla_remote_fault_injected_drops_total").increment(1);
    }

    /// Remembers a live link so that it can be cut; forgotten when the registration drops.
    pub(crate) fn register(
        &self,
        id: u64,
        remote: Address,
        sockets: Vec<socket2::Socket>,
        cancel: CancellationToken,
        why: Arc<OnceLock<&'static str>>,
    ) -> Registration {
        self.inner
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                id,
                LinkEntry {
                    remote,
                    sockets,
                    cancel,
                    why,
                },
            );
        Registration {
            inner: Arc::downgrade(&self.inner),
            id,
        }
    }

    fn update(&self, remote: &Address, change: impl FnOnce(&mut Rule)) {
        let mut rules = self
            .inner
            .rules
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let rule = rules.entry(remote.clone()).or_default();
        change(rule);
        if rule.is_clear() {
            rules.remove(remote);
        }
    }

    fn cut(&self, remote: &Address, reset: bool) -> usize {
        let cut: Vec<LinkEntry> = {
            let mut links = self
                .inner
                .links
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let ids: Vec<u64> = links
                .iter()
                .filter(|(_, l)| &l.remote == remote)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| links.remove(id)).collect()
        };
        let how = if reset { "aborted" } else { "disconnected" };
        tracing::warn!(%remote, "fault injection: {} link(s) with {remote} {how}", cut.len());
        for link in &cut {
            if reset {
                for s in &link.sockets {
                    // The reset happens when the link's tasks let go of the socket.
                    if let Err(e) = s.set_linger(Some(Duration::ZERO)) {
                        tracing::warn!(error = %e, "cannot set SO_LINGER for an abort");
                    }
                }
            }
            let _ = link.why.set(if reset {
                "aborted by fault injection"
            } else {
                "disconnected by fault injection"
            });
            link.cancel.cancel();
        }
        cut.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16) -> Address {
        Address::remote("orders", "127.0.0.1", port).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn rules_combine_per_node_and_pass_through_clears_them() {
        let f = FaultInjector::new();
        assert_eq!(f.rule(&node(1)), Rule::default());
        f.blackhole(&node(1), Direction::Send);
        f.delay(&node(1), Duration::from_millis(5));
        assert_eq!(
            f.rule(&node(1)),
            Rule {
                drop_outbound: true,
                drop_inbound: false,
                delay: Duration::from_millis(5)
            }
        );
        f.blackhole(&node(1), Direction::Receive);
        assert!(f.rule(&node(1)).drop_inbound);
        assert_eq!(f.rule(&node(2)), Rule::default(), "other nodes untouched");
        f.pass_through(&node(1));
        assert_eq!(f.rule(&node(1)), Rule::default());
        assert!(
            f.inner
                .rules
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty(),
            "no empty rules kept"
        );
    }

    #[test]
    fn cutting_cancels_only_the_node_s_links_and_forgets_them() {
        let f = FaultInjector::new();
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        let why = Arc::new(OnceLock::new());
        let _ra = f.register(1, node(1), Vec::new(), a.clone(), Arc::clone(&why));
        let rb = f.register(2, node(2), Vec::new(), b.clone(), Arc::new(OnceLock::new()));
        assert_eq!(f.abort(&node(1)), 1);
        assert!(a.is_cancelled() && !b.is_cancelled());
        assert_eq!(why.get(), Some(&"aborted by fault injection"));
        assert_eq!(f.abort(&node(1)), 0, "already cut");
        drop(rb);
        assert_eq!(f.disconnect(&node(2)), 0, "a dropped link is forgotten");
    }
}
