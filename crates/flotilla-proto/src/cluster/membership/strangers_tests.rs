//! Members and strangers, message by message: gossip from a node this cluster does not know, a
//! removed incarnation asking to join again, and a joining node that learns it was removed.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_core::StateMachine;
use flotilla_core::machine::drain;

use super::tests::{alone, sends, settings, unique};
use super::*;
use crate::cluster::sim::address;
use crate::testing::epoch;

#[test]
fn gossip_from_a_node_this_cluster_does_not_know_is_ignored() {
    // Node 3 joined through a member that had already been removed from this cluster (it woke
    // from a pause believing it led): its gossip knows node 0, node 0 does not know node 3.
    let (mut m, t0) = alone();
    let mut theirs = m.gossip().clone();
    theirs.put_member(Member::joining(unique(3, 9), BTreeSet::new(), "1"));
    theirs.bump(&unique(3, 9));
    let before = m.gossip().clone();
    m.handle(
        t0,
        ClusterInput::Received(ClusterMsg::Gossip {
            from: unique(3, 9),
            to: unique(0, 1),
            gossip: Box::new(theirs),
        }),
    );
    let out = drain(&mut m);
    assert_eq!(*m.gossip(), before, "nothing merged");
    assert_eq!(m.stats().foreign_gossip, 1);
    assert!(
        out.iter().any(
            |o| matches!(o, ClusterOutput::Log { text, .. } if text.contains("not a member of this cluster"))
        ),
        "{out:?}"
    );
}

#[test]
fn a_removed_incarnation_that_asks_to_join_again_is_quarantined() {
    let (mut m, t0) = alone();
    let joiner = Member::joining(unique(2, 7), BTreeSet::new(), "1");
    m.handle(
        t0,
        ClusterInput::Received(ClusterMsg::Join {
            member: joiner.clone(),
        }),
    );
    m.handle(t0, ClusterInput::Down(address(2)));
    // The leader removes the Down member at its next round.
    let mut now = t0;
    for _ in 0..10 {
        now += Duration::from_secs(1);
        m.handle_timeout(now);
    }
    let _ = drain(&mut m);
    assert!(m.gossip().tombstones().contains_key(&unique(2, 7)));
    // Its welcome was lost: it asks again, as it would for ever.
    m.handle(
        now,
        ClusterInput::Received(ClusterMsg::Join { member: joiner }),
    );
    let out = drain(&mut m);
    assert!(sends(&out).is_empty(), "no welcome: {out:?}");
    assert!(
        out.iter().any(|o| matches!(
            o,
            ClusterOutput::Quarantine { node, .. } if *node == unique(2, 7)
        )),
        "{out:?}"
    );
}

#[test]
fn a_joining_node_quarantined_by_its_contact_stops_to_start_again_as_a_new_incarnation() {
    let t0 = epoch();
    let mut m = Membership::new(unique(1, 5), settings(), 1, t0);
    m.handle(t0, ClusterInput::JoinSeeds(vec![address(0), address(1)]));
    m.handle(
        t0,
        ClusterInput::Received(ClusterMsg::InitJoinAck { from: unique(0, 1) }),
    );
    assert_eq!(sends(&drain(&mut m)).last(), Some(&(address(0), "join")));
    m.handle(t0, ClusterInput::QuarantinedBy(unique(0, 1)));
    let out = drain(&mut m);
    assert!(
        out.iter().any(|o| matches!(o, ClusterOutput::SelfRemoved)),
        "{out:?}"
    );
    // Nothing more from this incarnation.
    m.handle_timeout(t0 + Duration::from_secs(30));
    assert!(sends(&drain(&mut m)).is_empty());
}
