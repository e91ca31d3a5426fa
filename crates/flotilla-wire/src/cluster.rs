//! Cluster membership messages on the wire (postcard, part of wire format [`crate::pdu::VERSION`]).
//!
//! A gossip names every node once, in a table at its start, and refers to nodes by their index
//! in that table everywhere else (members, seen-set, reachability, version, tombstones): a
//! 500-member gossip carries 500 addresses, not thousands. Decoding checks every index; a bad
//! one makes the whole message undecodable, never a panic.

use serde::{Deserialize, Serialize};

use crate::pdu::WireUniqueAddress;

/// A member in a gossip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMember {
    /// Index into the node table.
    pub node: u32,
    /// Status: 0 Joining, 1 WeaklyUp, 2 Up, 3 Leaving, 4 Exiting, 5 Down, 6 Removed.
    pub status: u8,
    /// Roles.
    pub roles: Vec<String>,
    /// Application version.
    pub app_version: String,
    /// Order of becoming Up (`u64::MAX` before).
    pub up_number: u64,
}

/// One observer's reachability rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireObserver {
    /// Index of the observer.
    pub observer: u32,
    /// The version of its rows.
    pub version: u64,
    /// (subject index, status: 1 Unreachable, 2 Terminated).
    pub rows: Vec<(u32, u8)>,
}

/// A whole gossip.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireGossip {
    /// Every node the gossip mentions.
    pub nodes: Vec<WireUniqueAddress>,
    /// The members.
    pub members: Vec<WireMember>,
    /// Indices of the nodes that have seen this version.
    pub seen: Vec<u32>,
    /// The reachability table.
    pub reachability: Vec<WireObserver>,
    /// The version: (node index, counter).
    pub version: Vec<(u32, u64)>,
    /// Removed incarnations: (node index, when).
    pub tombstones: Vec<(u32, u64)>,
}

/// A cluster membership message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterPdu {
    /// "Are you in a cluster?"
    InitJoin {
        /// The node asking.
        from: WireUniqueAddress,
    },
    /// "Yes, join through me."
    InitJoinAck {
        /// The seed.
        from: WireUniqueAddress,
    },
    /// "Not yet."
    InitJoinNack {
        /// The seed.
        from: WireUniqueAddress,
    },
    /// The request to join; the gossip holds just the joiner's member entry.
    Join {
        /// The joiner as a one-member gossip.
        member: WireGossip,
    },
    /// The answer to a join.
    Welcome {
        /// The member that added the joiner.
        from: WireUniqueAddress,
        /// The joiner.
        to: WireUniqueAddress,
        /// The gossip.
        gossip: WireGossip,
    },
    /// A whole gossip.
    Gossip {
        /// The sender.
        from: WireUniqueAddress,
        /// The receiver.
        to: WireUniqueAddress,
        /// The gossip.
        gossip: WireGossip,
    },
    /// A gossip's version and seen-set.
    GossipStatus {
        /// The sender.
        from: WireUniqueAddress,
        /// The receiver.
        to: WireUniqueAddress,
        /// The version: `nodes` and `version` only.
        digest: WireGossip,
        /// One bit per member in address order: who has seen that version.
        #[serde(with = "serde_bytes")]
        seen: Vec<u8>,
    },
    /// A failure-detector heartbeat.
    Heartbeat {
        /// The monitor.
        from: WireUniqueAddress,
        /// The monitored incarnation.
        to: WireUniqueAddress,
        /// Echoed in the reply.
        seq: u64,
    },
    /// The reply to a heartbeat.
    HeartbeatRsp {
        /// The monitored member.
        from: WireUniqueAddress,
        /// The monitor.
        to: WireUniqueAddress,
        /// The heartbeat's counter.
        seq: u64,
    },
}

/// A cluster message's bytes.
pub fn encode_cluster(pdu: &ClusterPdu) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(pdu)
}

/// A cluster message from bytes.
pub fn decode_cluster(bytes: &[u8]) -> Result<ClusterPdu, postcard::Error> {
    postcard::from_bytes(bytes)
}
