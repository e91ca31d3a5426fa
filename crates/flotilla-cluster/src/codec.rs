//! Membership messages ↔ bytes: [`encode`] and [`decode`].
//!
//! The wire form ([`flotilla_wire::ClusterPdu`]) names each node once per message and refers to
//! it by index; decoding validates every address and index, so a malformed message is an error
//! the caller logs and counts, never a panic and never a half-read gossip.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_core::UniqueAddress;
use flotilla_proto::cluster::reachability::ReachabilityStatus;
use flotilla_proto::cluster::{
    ClusterMsg, Gossip, Member, MemberStatus, Reachability, VectorClock,
};
use flotilla_remote::convert::{from_wire_unique, to_wire_unique};
use flotilla_wire::{ClusterPdu, WireGossip, WireMember, WireObserver, WireUniqueAddress};

/// Why a membership message could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The bytes are not a membership message of this wire version.
    #[error("undecodable cluster message: {0}")]
    Undecodable(String),
    /// A node index points outside the message's node table.
    #[error("cluster message refers to node #{index} but names only {len} nodes")]
    BadIndex {
        /// The index.
        index: u32,
        /// How many nodes the message names.
        len: usize,
    },
    /// An address in the message is not a valid node address.
    #[error("cluster message holds an invalid address: {0}")]
    BadAddress(String),
    /// A status byte has no meaning.
    #[error("cluster message holds unknown status {0}")]
    BadStatus(u8),
    /// A join request that does not hold exactly the joining member.
    #[error("join request without its member")]
    BadJoin,
    /// This node's address is local-only and cannot be put on the wire.
    #[error("a local-only address cannot travel in a cluster message: {0}")]
    LocalAddress(String),
}

const STATUSES: [MemberStatus; 7] = [
    MemberStatus::Joining,
    MemberStatus::WeaklyUp,
    MemberStatus::Up,
    MemberStatus::Leaving,
    MemberStatus::Exiting,
    MemberStatus::Down,
    MemberStatus::Removed,
];

fn status_byte(s: MemberStatus) -> u8 {
    STATUSES.iter().position(|x| *x == s).map_or(0, |i| i as u8)
}

fn reach_byte(s: ReachabilityStatus) -> u8 {
    match s {
        ReachabilityStatus::Reachable => 0,
        ReachabilityStatus::Unreachable => 1,
        ReachabilityStatus::Terminated => 2,
    }
}

/// Builds a message's node table while encoding.
#[derive(Default)]
struct Table {
    nodes: Vec<WireUniqueAddress>,
    index: BTreeMap<UniqueAddress, u32>,
}

impl Table {
    fn idx(&mut self, node: &UniqueAddress) -> Result<u32, CodecError> {
        if let Some(i) = self.index.get(node) {
            return Ok(*i);
        }
        let wire =
            to_wire_unique(node).ok_or_else(|| CodecError::LocalAddress(node.to_string()))?;
        let i = u32::try_from(self.nodes.len()).map_err(|_| CodecError::BadIndex {
            index: u32::MAX,
            len: self.nodes.len(),
        })?;
        self.nodes.push(wire);
        self.index.insert(node.clone(), i);
        Ok(i)
    }
}

fn one(node: &UniqueAddress) -> Result<WireUniqueAddress, CodecError> {
    to_wire_unique(node).ok_or_else(|| CodecError::LocalAddress(node.to_string()))
}

fn member_to_wire(t: &mut Table, m: &Member) -> Result<WireMember, CodecError> {
    Ok(WireMember {
        node: t.idx(&m.node)?,
        status: status_byte(m.status),
        roles: m.roles.iter().cloned().collect(),
        app_version: m.app_version.clone(),
        up_number: m.up_number,
    })
}

fn version_to_wire(t: &mut Table, v: &VectorClock) -> Result<Vec<(u32, u64)>, CodecError> {
    v.entries().map(|(n, c)| Ok((t.idx(n)?, c))).collect()
}

fn seen_to_wire(t: &mut Table, seen: &BTreeSet<UniqueAddress>) -> Result<Vec<u32>, CodecError> {
    seen.iter().map(|n| t.idx(n)).collect()
}

fn gossip_to_wire(g: &Gossip) -> Result<WireGossip, CodecError> {
    let mut t = Table::default();
    let members = g
        .members()
        .map(|m| member_to_wire(&mut t, m))
        .collect::<Result<_, _>>()?;
    let seen = seen_to_wire(&mut t, g.seen_by())?;
    let mut reachability = Vec::new();
    for (observer, version, rows) in g.reachability().observer_rows() {
        let observer = t.idx(observer)?;
        let rows = rows
            .iter()
            .map(|(s, st)| Ok((t.idx(s)?, reach_byte(*st))))
            .collect::<Result<_, CodecError>>()?;
        reachability.push(WireObserver {
            observer,
            version,
            rows,
        });
    }
    let version = version_to_wire(&mut t, g.version())?;
    let tombstones = g
        .tombstones()
        .iter()
        .map(|(n, at)| Ok((t.idx(n)?, *at)))
        .collect::<Result<_, CodecError>>()?;
    Ok(WireGossip {
        nodes: t.nodes,
        members,
        seen,
        reachability,
        version,
        tombstones,
    })
}

/// The wire form of a membership message.
pub fn to_pdu(msg: &ClusterMsg) -> Result<ClusterPdu, CodecError> {
    Ok(match msg {
        ClusterMsg::InitJoin { from } => ClusterPdu::InitJoin { from: one(from)? },
        ClusterMsg::InitJoinAck { from } => ClusterPdu::InitJoinAck { from: one(from)? },
        ClusterMsg::InitJoinNack { from } => ClusterPdu::InitJoinNack { from: one(from)? },
        ClusterMsg::Join { member } => {
            let mut t = Table::default();
            let m = member_to_wire(&mut t, member)?;
            ClusterPdu::Join {
                member: WireGossip {
                    nodes: t.nodes,
                    members: vec![m],
                    ..WireGossip::default()
                },
            }
        }
        ClusterMsg::Welcome { from, to, gossip } => ClusterPdu::Welcome {
            from: one(from)?,
            to: one(to)?,
            gossip: gossip_to_wire(gossip)?,
        },
        ClusterMsg::Gossip { from, to, gossip } => ClusterPdu::Gossip {
            from: one(from)?,
            to: one(to)?,
            gossip: gossip_to_wire(gossip)?,
        },
        ClusterMsg::GossipStatus {
            from,
            to,
            version,
            seen,
        } => {
            let mut t = Table::default();
            let version = version_to_wire(&mut t, version)?;
            ClusterPdu::GossipStatus {
                from: one(from)?,
                to: one(to)?,
                digest: WireGossip {
                    nodes: t.nodes,
                    version,
                    ..WireGossip::default()
                },
                seen: seen.clone(),
            }
        }
        ClusterMsg::Heartbeat { from, to, seq } => ClusterPdu::Heartbeat {
            from: one(from)?,
            to: one(to)?,
            seq: *seq,
        },
        ClusterMsg::HeartbeatRsp { from, to, seq } => ClusterPdu::HeartbeatRsp {
            from: one(from)?,
            to: one(to)?,
            seq: *seq,
        },
    })
}

fn addr(a: &WireUniqueAddress) -> Result<UniqueAddress, CodecError> {
    from_wire_unique(a).map_err(|e| CodecError::BadAddress(e.0))
}

/// The decoded node table of one message.
struct Nodes(Vec<UniqueAddress>);

impl Nodes {
    fn new(wire: &[WireUniqueAddress]) -> Result<Self, CodecError> {
        wire.iter().map(addr).collect::<Result<_, _>>().map(Self)
    }

    fn get(&self, index: u32) -> Result<UniqueAddress, CodecError> {
        self.0
            .get(index as usize)
            .cloned()
            .ok_or(CodecError::BadIndex {
                index,
                len: self.0.len(),
            })
    }
}

fn member_from_wire(n: &Nodes, m: WireMember) -> Result<Member, CodecError> {
    let status = *STATUSES
        .get(usize::from(m.status))
        .ok_or(CodecError::BadStatus(m.status))?;
    Ok(Member {
        node: n.get(m.node)?,
        status,
        roles: m.roles.into_iter().collect(),
        app_version: m.app_version,
        up_number: m.up_number,
    })
}

fn version_from_wire(n: &Nodes, v: Vec<(u32, u64)>) -> Result<VectorClock, CodecError> {
    let entries = v
        .into_iter()
        .map(|(i, c)| Ok((n.get(i)?, c)))
        .collect::<Result<Vec<_>, CodecError>>()?;
    Ok(VectorClock::from_entries(entries))
}

fn seen_from_wire(n: &Nodes, seen: Vec<u32>) -> Result<BTreeSet<UniqueAddress>, CodecError> {
    seen.into_iter().map(|i| n.get(i)).collect()
}

fn gossip_from_wire(w: WireGossip) -> Result<Gossip, CodecError> {
    let n = Nodes::new(&w.nodes)?;
    let members = w
        .members
        .into_iter()
        .map(|m| member_from_wire(&n, m))
        .collect::<Result<Vec<_>, _>>()?;
    let seen = seen_from_wire(&n, w.seen)?;
    let mut observers = Vec::new();
    for o in w.reachability {
        let mut rows = BTreeMap::new();
        for (s, st) in o.rows {
            let st = match st {
                1 => ReachabilityStatus::Unreachable,
                2 => ReachabilityStatus::Terminated,
                other => return Err(CodecError::BadStatus(other)),
            };
            rows.insert(n.get(s)?, st);
        }
        observers.push((n.get(o.observer)?, o.version, rows));
    }
    let version = version_from_wire(&n, w.version)?;
    let tombstones = w
        .tombstones
        .into_iter()
        .map(|(i, at)| Ok((n.get(i)?, at)))
        .collect::<Result<_, CodecError>>()?;
    Ok(Gossip::from_parts(
        members,
        seen,
        Reachability::from_observer_rows(observers),
        version,
        tombstones,
    ))
}

/// A membership message from its wire form, validated.
pub fn from_pdu(pdu: ClusterPdu) -> Result<ClusterMsg, CodecError> {
    Ok(match pdu {
        ClusterPdu::InitJoin { from } => ClusterMsg::InitJoin { from: addr(&from)? },
        ClusterPdu::InitJoinAck { from } => ClusterMsg::InitJoinAck { from: addr(&from)? },
        ClusterPdu::InitJoinNack { from } => ClusterMsg::InitJoinNack { from: addr(&from)? },
        ClusterPdu::Join { member } => {
            let n = Nodes::new(&member.nodes)?;
            let mut members = member.members.into_iter();
            let (Some(m), None) = (members.next(), members.next()) else {
                return Err(CodecError::BadJoin);
            };
            ClusterMsg::Join {
                member: member_from_wire(&n, m)?,
            }
        }
        ClusterPdu::Welcome { from, to, gossip } => ClusterMsg::Welcome {
            from: addr(&from)?,
            to: addr(&to)?,
            gossip: Box::new(gossip_from_wire(gossip)?),
        },
        ClusterPdu::Gossip { from, to, gossip } => ClusterMsg::Gossip {
            from: addr(&from)?,
            to: addr(&to)?,
            gossip: Box::new(gossip_from_wire(gossip)?),
        },
        ClusterPdu::GossipStatus {
            from,
            to,
            digest,
            seen,
        } => {
            let n = Nodes::new(&digest.nodes)?;
            ClusterMsg::GossipStatus {
                from: addr(&from)?,
                to: addr(&to)?,
                version: version_from_wire(&n, digest.version)?,
                seen,
            }
        }
        ClusterPdu::Heartbeat { from, to, seq } => ClusterMsg::Heartbeat {
            from: addr(&from)?,
            to: addr(&to)?,
            seq,
        },
        ClusterPdu::HeartbeatRsp { from, to, seq } => ClusterMsg::HeartbeatRsp {
            from: addr(&from)?,
            to: addr(&to)?,
            seq,
        },
    })
}

/// A membership message's bytes.
pub fn encode(msg: &ClusterMsg) -> Result<Vec<u8>, CodecError> {
    flotilla_wire::encode_cluster(&to_pdu(msg)?).map_err(|e| CodecError::Undecodable(e.to_string()))
}

/// A membership message from bytes.
pub fn decode(bytes: &[u8]) -> Result<ClusterMsg, CodecError> {
    let pdu =
        flotilla_wire::decode_cluster(bytes).map_err(|e| CodecError::Undecodable(e.to_string()))?;
    from_pdu(pdu)
}
