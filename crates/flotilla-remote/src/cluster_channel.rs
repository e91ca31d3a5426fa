//! The channel from remoting to the cluster driver: cluster messages are bounded (a peer that
//! sends them faster than the cluster handles them loses some, as a lossy network would — they
//! are at most once, and gossip is sent again); notices of quarantine are never dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flotilla_core::UniqueAddress;
use flotilla_proto::association::QuarantineReason;
use tokio::sync::mpsc;

/// Cluster messages that may wait for the cluster driver; more are dropped and counted.
pub(crate) const CLUSTER_MESSAGES: usize = 4096;

/// What remoting hands to the cluster (see [`crate::RemoteNode::cluster_inbound`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterInbound {
    /// A cluster membership message.
    Message {
        /// The sending incarnation.
        from: UniqueAddress,
        /// The encoded message.
        bytes: Vec<u8>,
    },
    /// This node quarantined a remote incarnation (for whatever reason: the cluster's own
    /// removal, failed system messages, remote deathwatch, an operator).
    Quarantined {
        /// The incarnation.
        node: UniqueAddress,
        /// Why.
        reason: QuarantineReason,
    },
    /// A remote node quarantined this one: the cluster must down this node.
    QuarantinedBy {
        /// The quarantining node.
        by: UniqueAddress,
        /// Its reason.
        reason: String,
    },
}

/// Remoting's end.
#[derive(Debug)]
pub(crate) struct ClusterSender {
    tx: mpsc::UnboundedSender<ClusterInbound>,
    /// Messages sent and not received yet.
    waiting: Arc<AtomicUsize>,
}

/// The cluster driver's end (see [`crate::RemoteNode::cluster_inbound`]).
#[derive(Debug)]
pub struct ClusterInboundReceiver {
    rx: mpsc::UnboundedReceiver<ClusterInbound>,
    waiting: Arc<AtomicUsize>,
}

/// A new channel.
pub(crate) fn channel() -> (ClusterSender, ClusterInboundReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let waiting = Arc::new(AtomicUsize::new(0));
    (
        ClusterSender {
            tx,
            waiting: Arc::clone(&waiting),
        },
        ClusterInboundReceiver { rx, waiting },
    )
}

impl ClusterSender {
    /// Hands a cluster message over, unless [`CLUSTER_MESSAGES`] wait already or the driver is
    /// gone (the reason, as a metric label).
    pub(crate) fn message(&self, from: UniqueAddress, bytes: Vec<u8>) -> Result<(), &'static str> {
        if self.waiting.load(Ordering::Relaxed) >= CLUSTER_MESSAGES {
            return Err("cluster-behind");
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        self.tx
            .send(ClusterInbound::Message { from, bytes })
            .map_err(|_| {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                "no-cluster"
            })
    }

    /// Hands a quarantine notice over (never dropped while the driver runs).
    pub(crate) fn notice(&self, notice: ClusterInbound) {
        let _ = self.tx.send(notice);
    }
}

impl ClusterInboundReceiver {
    /// The next item; `None` once remoting has stopped.
    pub async fn recv(&mut self) -> Option<ClusterInbound> {
        let item = self.rx.recv().await?;
        if matches!(item, ClusterInbound::Message { .. }) {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_beyond_the_limit_are_refused_and_notices_always_pass() {
        let (tx, mut rx) = channel();
        let from = UniqueAddress {
            address: flotilla_core::Address::remote("c", "127.0.0.1", 1)
                .unwrap_or_else(|e| panic!("{e}")),
            uid: 1,
        };
        for _ in 0..CLUSTER_MESSAGES {
            assert_eq!(tx.message(from.clone(), vec![1]), Ok(()));
        }
        assert_eq!(tx.message(from.clone(), vec![2]), Err("cluster-behind"));
        tx.notice(ClusterInbound::QuarantinedBy {
            by: from.clone(),
            reason: "r".into(),
        });
        assert!(matches!(
            rx.recv().await,
            Some(ClusterInbound::Message { .. })
        ));
        assert_eq!(tx.message(from, vec![3]), Ok(()), "room again");
    }
}
