//! Cluster members and the lifecycle of their status.
//!
//! ```text
//!  Joining ──► WeaklyUp ──► Up ──► Leaving ──► Exiting ──► Removed
//!     │           │          │        │           │           ▲
//!     └───────────┴──────────┴────────┴───────────┴─► Down ───┘
//! ```
//!
//! Joining may go straight to Up (the usual way, once the leader sees convergence), and every
//! status but Removed may go straight to Removed (a member that was never seen Up, or whose
//! removal another node already decided). Removed is final for that incarnation; the same address
//! joins again only with a new UID.

use std::collections::BTreeSet;
use std::fmt;

use flotilla_core::UniqueAddress;

/// Where a member is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberStatus {
    /// Asked to join; not yet moved Up by the leader.
    Joining,
    /// Joined while the cluster could not converge (an unreachable member): usable for work
    /// that tolerates it, not counted for quorum decisions.
    WeaklyUp,
    /// A full member.
    Up,
    /// Asked to leave; hands over its work.
    Leaving,
    /// Handed over; about to be removed.
    Exiting,
    /// Declared dead (by the split-brain resolver or an operator); will be removed.
    Down,
    /// Gone for good (kept as a tombstone for a while so gossip does not bring it back).
    Removed,
}

impl MemberStatus {
    /// Whether a member may go from this status to `to`.
    pub fn may_become(self, to: Self) -> bool {
        use MemberStatus::{Down, Exiting, Joining, Leaving, Removed, Up, WeaklyUp};
        match self {
            Joining => matches!(to, WeaklyUp | Up | Leaving | Down | Removed),
            WeaklyUp => matches!(to, Up | Leaving | Down | Removed),
            Up => matches!(to, Leaving | Down | Removed),
            Leaving => matches!(to, Exiting | Down | Removed),
            Exiting => matches!(to, Removed | Down),
            Down => to == Removed,
            Removed => false,
        }
    }

    /// Which of two views of the same member wins in a gossip merge: the one further along
    /// (Removed > Down > Exiting > Leaving > Up > WeaklyUp > Joining), so a merge never moves a
    /// member backwards.
    fn merge_rank(self) -> u8 {
        match self {
            Self::Joining => 0,
            Self::WeaklyUp => 1,
            Self::Up => 2,
            Self::Leaving => 3,
            Self::Exiting => 4,
            Self::Down => 5,
            Self::Removed => 6,
        }
    }
}

impl fmt::Display for MemberStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One member of the cluster as the gossip knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its address and incarnation.
    pub node: UniqueAddress,
    /// Its status.
    pub status: MemberStatus,
    /// Its roles (for role-scoped singletons, sharding and leaders).
    pub roles: BTreeSet<String>,
    /// The application version it runs (for rolling updates).
    pub app_version: String,
    /// The order in which members became Up: the lower, the older. `u64::MAX` until Up.
    pub up_number: u64,
}

/// An illegal status change was asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("member {node} cannot go from {from} to {to}")]
pub struct IllegalTransition {
    /// The member.
    pub node: UniqueAddress,
    /// Its status.
    pub from: MemberStatus,
    /// The status asked for.
    pub to: MemberStatus,
}

impl Member {
    /// A member that asked to join.
    pub fn joining(node: UniqueAddress, roles: BTreeSet<String>, app_version: &str) -> Self {
        Self {
            node,
            status: MemberStatus::Joining,
            roles,
            app_version: app_version.to_owned(),
            up_number: u64::MAX,
        }
    }

    /// This member with status `to`, if the lifecycle allows it.
    pub fn become_(&self, to: MemberStatus) -> Result<Self, IllegalTransition> {
        if self.status == to {
            return Ok(self.clone());
        }
        if !self.status.may_become(to) {
            return Err(IllegalTransition {
                node: self.node.clone(),
                from: self.status,
                to,
            });
        }
        Ok(Self {
            status: to,
            ..self.clone()
        })
    }

    /// This member moved Up as the `up_number`-th member.
    pub fn become_up(&self, up_number: u64) -> Result<Self, IllegalTransition> {
        let mut m = self.become_(MemberStatus::Up)?;
        m.up_number = m.up_number.min(up_number);
        Ok(m)
    }

    /// Whether this member is older than `other` (became Up first; ties by address).
    pub fn is_older_than(&self, other: &Self) -> bool {
        (self.up_number, &self.node) < (other.up_number, &other.node)
    }

    /// Whether it has the role.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.contains(role)
    }

    /// The view of the same member that a gossip merge keeps: the status further along, then the
    /// lower up-number; the result does not depend on the argument order.
    pub fn merge(&self, other: &Self) -> Self {
        debug_assert_eq!(self.node, other.node, "merging two different members");
        let key = |m: &Self| {
            (
                std::cmp::Reverse(m.status.merge_rank()),
                m.up_number,
                m.roles.clone(),
                m.app_version.clone(),
            )
        };
        if key(self) <= key(other) {
            self.clone()
        } else {
            other.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::node;
    use MemberStatus::*;
    use proptest::prelude::*;

    const ALL: [MemberStatus; 7] = [Joining, WeaklyUp, Up, Leaving, Exiting, Down, Removed];

    /// The whole transition table, as Akka documents it.
    #[test]
    fn the_lifecycle_allows_exactly_the_documented_transitions() {
        let allowed: &[(MemberStatus, &[MemberStatus])] = &[
            (Joining, &[WeaklyUp, Up, Leaving, Down, Removed]),
            (WeaklyUp, &[Up, Leaving, Down, Removed]),
            (Up, &[Leaving, Down, Removed]),
            (Leaving, &[Exiting, Down, Removed]),
            (Exiting, &[Removed, Down]),
            (Down, &[Removed]),
            (Removed, &[]),
        ];
        for (from, tos) in allowed {
            for to in ALL {
                assert_eq!(from.may_become(to), tos.contains(&to), "{from} -> {to}");
            }
        }
        let m = Member::joining(node(1), BTreeSet::new(), "1.0");
        let up = m.become_up(3).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((up.status, up.up_number), (Up, 3));
        let err = up.become_(Joining).err();
        assert_eq!(
            err.map(|e| e.to_string()),
            Some(format!("member {} cannot go from Up to Joining", node(1)))
        );
    }

    #[test]
    fn the_older_member_became_up_first() {
        let a = Member::joining(node(2), BTreeSet::new(), "1").become_up(1);
        let b = Member::joining(node(1), BTreeSet::new(), "1").become_up(2);
        let (a, b) = (
            a.unwrap_or_else(|e| panic!("{e}")),
            b.unwrap_or_else(|e| panic!("{e}")),
        );
        assert!(a.is_older_than(&b));
        assert!(!b.is_older_than(&a));
    }

    fn arb_member() -> impl Strategy<Value = Member> {
        (0usize..7, prop::option::of(0u64..5), prop::bool::ANY).prop_map(|(s, up, role)| Member {
            node: node(1),
            status: ALL[s],
            roles: if role {
                ["a".to_owned()].into()
            } else {
                BTreeSet::new()
            },
            app_version: "1".into(),
            up_number: up.unwrap_or(u64::MAX),
        })
    }

    proptest! {
        #[test]
        fn member_merge_is_commutative_associative_idempotent_and_never_goes_back(
            a in arb_member(), b in arb_member(), c in arb_member()
        ) {
            prop_assert_eq!(a.merge(&b), b.merge(&a));
            prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
            let m = a.merge(&b);
            prop_assert!(m.status.merge_rank() >= a.status.merge_rank().max(b.status.merge_rank()));
            prop_assert_eq!(a.merge(&a), a);
        }
    }
}
