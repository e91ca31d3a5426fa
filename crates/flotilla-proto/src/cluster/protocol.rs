//! What the membership machine exchanges with other members and with its driver.
//!
//! Messages ([`ClusterMsg`]) travel between members over remoting; each names its sender's
//! incarnation, and those meant for one incarnation name it too, so a message for an earlier run
//! of a node is recognized and dropped. Inputs ([`ClusterInput`]) are API calls and what the
//! transport and the lease deliver; outputs ([`ClusterOutput`]) are messages to send, events to
//! publish, quarantines, lease operations and log lines in words an operator understands.

use flotilla_core::{Address, UniqueAddress};

use super::events::ClusterEvent;
use super::gossip::Gossip;
use super::member::Member;
use super::vclock::VectorClock;

/// A message between members (or a would-be member and the seeds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterMsg {
    /// "Are you in a cluster?" — sent to the seed nodes by a node that wants to join.
    InitJoin {
        /// The node asking.
        from: UniqueAddress,
    },
    /// "Yes, join through me."
    InitJoinAck {
        /// The seed that is a member.
        from: UniqueAddress,
    },
    /// "Not yet": the seed is not a member of a cluster itself.
    InitJoinNack {
        /// The seed.
        from: UniqueAddress,
    },
    /// The request to join, sent to one member.
    Join {
        /// The joining node, as it wants to be listed (Joining, its roles and app version).
        member: Member,
    },
    /// The answer to a join: the joiner is in the gossip now.
    Welcome {
        /// The member that added it.
        from: UniqueAddress,
        /// The joiner's incarnation.
        to: UniqueAddress,
        /// The gossip with the joiner in it.
        gossip: Box<Gossip>,
    },
    /// A whole gossip.
    Gossip {
        /// The sender.
        from: UniqueAddress,
        /// The receiving incarnation.
        to: UniqueAddress,
        /// The sender's view.
        gossip: Box<Gossip>,
    },
    /// Only the version and seen-set of the sender's gossip: cheap when both have the same.
    GossipStatus {
        /// The sender.
        from: UniqueAddress,
        /// The receiving incarnation.
        to: UniqueAddress,
        /// The sender's gossip version.
        version: VectorClock,
        /// Who the sender knows has seen that version, as [`Gossip::seen_bits`]: meaningful
        /// only to a receiver with the same version.
        seen: Vec<u8>,
    },
    /// A failure-detector heartbeat.
    Heartbeat {
        /// The monitoring member.
        from: UniqueAddress,
        /// The monitored incarnation.
        to: UniqueAddress,
        /// A counter echoed in the reply.
        seq: u64,
    },
    /// The reply to a heartbeat.
    HeartbeatRsp {
        /// The monitored member.
        from: UniqueAddress,
        /// The monitoring incarnation.
        to: UniqueAddress,
        /// The heartbeat's counter.
        seq: u64,
    },
}

impl ClusterMsg {
    /// The sender's incarnation.
    pub fn from(&self) -> &UniqueAddress {
        match self {
            Self::InitJoin { from }
            | Self::InitJoinAck { from }
            | Self::InitJoinNack { from }
            | Self::Welcome { from, .. }
            | Self::Gossip { from, .. }
            | Self::GossipStatus { from, .. }
            | Self::Heartbeat { from, .. }
            | Self::HeartbeatRsp { from, .. } => from,
            Self::Join { member } => &member.node,
        }
    }

    /// The message's kind, for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InitJoin { .. } => "init-join",
            Self::InitJoinAck { .. } => "init-join-ack",
            Self::InitJoinNack { .. } => "init-join-nack",
            Self::Join { .. } => "join",
            Self::Welcome { .. } => "welcome",
            Self::Gossip { .. } => "gossip",
            Self::GossipStatus { .. } => "gossip-status",
            Self::Heartbeat { .. } => "heartbeat",
            Self::HeartbeatRsp { .. } => "heartbeat-rsp",
        }
    }
}

/// Inputs of the membership machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterInput {
    /// Join through these seed nodes (the first may form a new cluster).
    JoinSeeds(Vec<Address>),
    /// Join the cluster that this node is a member of.
    Join(Address),
    /// Ask the member at this address to leave gracefully.
    Leave(Address),
    /// Declare the member at this address down.
    Down(Address),
    /// A message from another node.
    Received(ClusterMsg),
    /// Remoting learned that `by` quarantined this node: this node must down itself.
    QuarantinedBy(UniqueAddress),
    /// The answer to [`ClusterOutput::AcquireLease`].
    LeaseAcquired(bool),
}

/// How loud a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// A normal state change.
    Info,
    /// Something an operator should look at.
    Warn,
}

/// Outputs of the membership machine, in the order it produced them.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterOutput {
    /// Send this message to the node at `to`.
    Send {
        /// Where to.
        to: Address,
        /// What.
        msg: ClusterMsg,
    },
    /// Publish this event to subscribers.
    Event(ClusterEvent),
    /// Tell remoting to quarantine this incarnation for good.
    Quarantine {
        /// The incarnation.
        node: UniqueAddress,
        /// Why, in words.
        reason: String,
    },
    /// The split-brain resolver wants the lease: answer with [`ClusterInput::LeaseAcquired`].
    AcquireLease,
    /// The split-brain resolver is done with the lease.
    ReleaseLease,
    /// This node was downed: it must shut down (coordinated shutdown), since the cluster no
    /// longer counts it.
    SelfDowned {
        /// Why, in words.
        reason: String,
    },
    /// This node was removed from the cluster (after a graceful leave, or a down).
    SelfRemoved,
    /// A line for the log.
    Log {
        /// How loud.
        level: LogLevel,
        /// What happened and why.
        text: String,
    },
}
