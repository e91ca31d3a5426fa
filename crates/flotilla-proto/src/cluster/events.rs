//! Cluster events and the current state, as subscribers see them.
//!
//! A subscriber first gets a [`CurrentClusterState`], then the events that lead from it to each
//! later state. Events are the difference of two states ([`diff`]), so a subscriber that replays
//! them onto the state it was given arrives at the same state as the publisher.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_core::{Address, UniqueAddress};

use super::gossip::Gossip;
use super::member::{Member, MemberStatus};
use super::reachability::ReachabilityStatus;

/// Something changed in the cluster, as this member sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A node asked to join.
    MemberJoined(Member),
    /// A joining member was moved to WeaklyUp (the cluster could not converge).
    MemberWeaklyUp(Member),
    /// A member is Up.
    MemberUp(Member),
    /// A member is leaving.
    MemberLeft(Member),
    /// A member has handed over and is about to be removed.
    MemberExited(Member),
    /// A member was declared down.
    MemberDowned(Member),
    /// A member is gone for good.
    MemberRemoved {
        /// The member as it was last listed (status Removed).
        member: Member,
        /// Its status before removal.
        previous: MemberStatus,
    },
    /// Some member's failure detector gave up on this member.
    UnreachableMember(Member),
    /// Every observer hears this member again.
    ReachableMember(Member),
    /// The leader changed (none while no member can lead).
    LeaderChanged(Option<Address>),
    /// The leader among the members with a role changed.
    RoleLeaderChanged {
        /// The role.
        role: String,
        /// Its leader.
        leader: Option<Address>,
    },
}

impl ClusterEvent {
    /// The event's name, for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MemberJoined(_) => "MemberJoined",
            Self::MemberWeaklyUp(_) => "MemberWeaklyUp",
            Self::MemberUp(_) => "MemberUp",
            Self::MemberLeft(_) => "MemberLeft",
            Self::MemberExited(_) => "MemberExited",
            Self::MemberDowned(_) => "MemberDowned",
            Self::MemberRemoved { .. } => "MemberRemoved",
            Self::UnreachableMember(_) => "UnreachableMember",
            Self::ReachableMember(_) => "ReachableMember",
            Self::LeaderChanged(_) => "LeaderChanged",
            Self::RoleLeaderChanged { .. } => "RoleLeaderChanged",
        }
    }
}

/// The cluster as one member sees it at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentClusterState {
    /// Every member, in address order.
    pub members: Vec<Member>,
    /// The members some observer finds unreachable (Down members excluded).
    pub unreachable: Vec<Member>,
    /// The members that have seen the current gossip.
    pub seen_by: BTreeSet<Address>,
    /// The leader.
    pub leader: Option<Address>,
    /// The leader of each role any member has.
    pub role_leaders: BTreeMap<String, Option<Address>>,
}

impl CurrentClusterState {
    /// The state `gossip` describes as `self_node` sees it.
    pub fn of(gossip: &Gossip, self_node: &UniqueAddress) -> Self {
        let members: Vec<Member> = gossip.members().cloned().collect();
        let unreachable = members
            .iter()
            .filter(|m| {
                m.node != *self_node
                    && m.status != MemberStatus::Down
                    && gossip.reachability().status(&m.node) != ReachabilityStatus::Reachable
            })
            .cloned()
            .collect();
        let roles: BTreeSet<&String> = members.iter().flat_map(|m| &m.roles).collect();
        let role_leaders = roles
            .into_iter()
            .map(|role| {
                let leader = gossip
                    .role_leader(self_node, role)
                    .map(|n| n.address.clone());
                (role.clone(), leader)
            })
            .collect();
        Self {
            seen_by: gossip.seen_by().iter().map(|n| n.address.clone()).collect(),
            leader: gossip.leader(self_node).map(|n| n.address.clone()),
            members,
            unreachable,
            role_leaders,
        }
    }

    /// The member at `address`, if listed.
    pub fn member(&self, address: &Address) -> Option<&Member> {
        self.members.iter().find(|m| &m.node.address == address)
    }

    /// This state as the events that lead to it from an empty cluster (Akka's
    /// `InitialStateAsEvents`): each member's status event, the unreachable members, the
    /// leaders. A subscriber that prints these and then every change has seen every member.
    pub fn as_events(&self) -> Vec<ClusterEvent> {
        diff(&Self::default(), self)
    }
}

fn status_event(m: &Member) -> Option<ClusterEvent> {
    let m = m.clone();
    Some(match m.status {
        MemberStatus::Joining => ClusterEvent::MemberJoined(m),
        MemberStatus::WeaklyUp => ClusterEvent::MemberWeaklyUp(m),
        MemberStatus::Up => ClusterEvent::MemberUp(m),
        MemberStatus::Leaving => ClusterEvent::MemberLeft(m),
        MemberStatus::Exiting => ClusterEvent::MemberExited(m),
        MemberStatus::Down => ClusterEvent::MemberDowned(m),
        MemberStatus::Removed => return None,
    })
}

/// The events that lead from `old` to `new`: member changes (in address order), removals,
/// reachability changes, then leader changes.
pub fn diff(old: &CurrentClusterState, new: &CurrentClusterState) -> Vec<ClusterEvent> {
    let mut out = Vec::new();
    let before: BTreeMap<&UniqueAddress, &Member> =
        old.members.iter().map(|m| (&m.node, m)).collect();
    let after: BTreeMap<&UniqueAddress, &Member> =
        new.members.iter().map(|m| (&m.node, m)).collect();
    for (node, m) in &after {
        if before.get(node).is_none_or(|b| b.status != m.status) {
            out.extend(status_event(m));
        }
    }
    for (node, m) in &before {
        if !after.contains_key(node) {
            out.push(ClusterEvent::MemberRemoved {
                member: Member {
                    status: MemberStatus::Removed,
                    ..(*m).clone()
                },
                previous: m.status,
            });
        }
    }
    let was: BTreeSet<&UniqueAddress> = old.unreachable.iter().map(|m| &m.node).collect();
    let is: BTreeSet<&UniqueAddress> = new.unreachable.iter().map(|m| &m.node).collect();
    for m in &new.unreachable {
        if !was.contains(&m.node) {
            out.push(ClusterEvent::UnreachableMember(m.clone()));
        }
    }
    for m in &old.unreachable {
        if !is.contains(&m.node)
            && let Some(now) = after.get(&m.node)
            && now.status != MemberStatus::Down
        {
            out.push(ClusterEvent::ReachableMember((*now).clone()));
        }
    }
    if old.leader != new.leader {
        out.push(ClusterEvent::LeaderChanged(new.leader.clone()));
    }
    for (role, leader) in &new.role_leaders {
        if old.role_leaders.get(role) != Some(leader) {
            out.push(ClusterEvent::RoleLeaderChanged {
                role: role.clone(),
                leader: leader.clone(),
            });
        }
    }
    for role in old.role_leaders.keys() {
        if !new.role_leaders.contains_key(role) {
            out.push(ClusterEvent::RoleLeaderChanged {
                role: role.clone(),
                leader: None,
            });
        }
    }
    out
}

/// Applies events to a state, as a subscriber that keeps its own copy would.
pub fn apply(state: &mut CurrentClusterState, event: &ClusterEvent) {
    let put = |state: &mut CurrentClusterState, m: &Member| {
        match state.members.iter_mut().find(|x| x.node == m.node) {
            Some(x) => *x = m.clone(),
            None => {
                state.members.push(m.clone());
                state.members.sort_by(|a, b| a.node.cmp(&b.node));
            }
        }
        if let Some(x) = state.unreachable.iter_mut().find(|x| x.node == m.node) {
            *x = m.clone();
        }
        if m.status == MemberStatus::Down {
            state.unreachable.retain(|x| x.node != m.node);
        }
    };
    match event {
        ClusterEvent::MemberJoined(m)
        | ClusterEvent::MemberWeaklyUp(m)
        | ClusterEvent::MemberUp(m)
        | ClusterEvent::MemberLeft(m)
        | ClusterEvent::MemberExited(m)
        | ClusterEvent::MemberDowned(m) => put(state, m),
        ClusterEvent::MemberRemoved { member, .. } => {
            state.members.retain(|x| x.node != member.node);
            state.unreachable.retain(|x| x.node != member.node);
        }
        ClusterEvent::UnreachableMember(m) => {
            state.unreachable.push(m.clone());
            state.unreachable.sort_by(|a, b| a.node.cmp(&b.node));
        }
        ClusterEvent::ReachableMember(m) => state.unreachable.retain(|x| x.node != m.node),
        ClusterEvent::LeaderChanged(l) => state.leader.clone_from(l),
        ClusterEvent::RoleLeaderChanged { role, leader } => {
            if leader.is_none() && !state.members.iter().any(|m| m.has_role(role)) {
                state.role_leaders.remove(role);
            } else {
                state.role_leaders.insert(role.clone(), leader.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{member, node};
    use MemberStatus::*;

    fn gossip(members: &[Member], unreachable: &[(u16, u16)]) -> Gossip {
        let mut g = Gossip::new();
        for m in members {
            g.put_member(m.clone());
        }
        for &(observer, subject) in unreachable {
            g.reachability_mut()
                .unreachable(&node(observer), &node(subject));
        }
        g
    }

    #[test]
    fn a_state_as_events_names_each_member_the_unreachable_and_the_leader() {
        let g = gossip(
            &[
                member(1, Up, &[]),
                member(2, Joining, &[]),
                member(3, Up, &[]),
            ],
            &[(1, 3)],
        );
        let state = CurrentClusterState::of(&g, &node(1));
        let kinds: Vec<&str> = state.as_events().iter().map(ClusterEvent::kind).collect();
        assert_eq!(
            kinds,
            [
                "MemberUp",
                "MemberJoined",
                "MemberUp",
                "UnreachableMember",
                "LeaderChanged"
            ]
        );
    }

    #[test]
    fn diff_names_every_change_and_replays_to_the_same_state() {
        let old = gossip(
            &[
                member(1, Up, &["a"]),
                member(2, Up, &["a"]),
                member(3, Joining, &[]),
                member(4, Up, &[]),
            ],
            &[(2, 4)],
        );
        let new = gossip(
            &[
                member(2, Leaving, &["a"]),
                member(3, Up, &[]),
                member(4, Up, &[]),
                member(5, Joining, &["b"]),
            ],
            &[(2, 3)],
        );
        let (a, b) = (
            CurrentClusterState::of(&old, &node(2)),
            CurrentClusterState::of(&new, &node(2)),
        );
        let events = diff(&a, &b);
        let kinds: Vec<String> = events
            .iter()
            .map(|e| match e {
                ClusterEvent::MemberRemoved { member, previous } => {
                    format!(
                        "removed {} (was {previous})",
                        member.node.address.port().unwrap_or(0)
                    )
                }
                other => other.kind().to_owned(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "MemberLeft",
                "MemberUp",
                "MemberJoined",
                "removed 2551 (was Up)",
                "UnreachableMember",
                "ReachableMember",
                "LeaderChanged",
                "RoleLeaderChanged",
                "RoleLeaderChanged",
            ]
        );
        let mut replayed = a;
        for e in &events {
            apply(&mut replayed, e);
        }
        assert_eq!(replayed.members, b.members);
        assert_eq!(replayed.unreachable, b.unreachable);
        assert_eq!(replayed.leader, b.leader);
        assert_eq!(replayed.role_leaders, b.role_leaders);
    }

    #[test]
    fn no_change_no_events() {
        let g = gossip(&[member(1, Up, &[]), member(2, Up, &[])], &[(1, 2)]);
        let s = CurrentClusterState::of(&g, &node(1));
        assert!(diff(&s, &s).is_empty());
        assert_eq!(s.unreachable.len(), 1);
        assert_eq!(s.leader, Some(node(1).address));
    }
}
