//! Members and strangers, message by message: gossips that differ under one version, gossip of
//! another cluster, a removed incarnation asking to join again, and a joining node that learns
//! it was removed.

use std::collections::BTreeSet;
use std::time::Duration;

use flotilla_core::StateMachine;
use flotilla_core::machine::drain;

use super::tests::{alone, sends, settings, unique};
use super::*;
use crate::cluster::sim::address;
use crate::testing::epoch;

#[test]
fn a_gossip_that_differs_under_the_same_version_is_merged_under_a_new_one() {
    // Node 3 was welcomed by a member removed a moment later: the entry under which its joining
    // was recorded left the version with that member, so a gossip that has node 3 carries the
    // same version as one that has not. Merged, not taken as "the same": node 3 stays in, and
    // the merge gets a version of its own, so that one version never stands for two states.
    let (mut m, t0) = alone();
    let mut theirs = m.gossip().clone();
    theirs.put_member(Member::joining(unique(3, 9), BTreeSet::new(), "1"));
    assert_eq!(theirs.version(), m.gossip().version());
    let before = m.gossip().version().clone();
    m.handle(
        t0,
        ClusterInput::Received(ClusterMsg::Gossip {
            from: unique(3, 9),
            to: unique(0, 1),
            gossip: Box::new(theirs),
        }),
    );
    let _ = drain(&mut m);
    assert!(m.gossip().member(&unique(3, 9)).is_some(), "kept");
    assert_eq!(m.gossip().version().compare(&before), Causality::After);
}

#[test]
fn gossip_of_a_cluster_without_this_node_is_ignored() {
    let (mut m, t0) = alone();
    let mut other = Gossip::default();
    other.put_member(Member::joining(unique(3, 9), BTreeSet::new(), "1"));
    other.bump(&unique(3, 9));
    let before = m.gossip().clone();
    m.handle(
        t0,
        ClusterInput::Received(ClusterMsg::Gossip {
            from: unique(3, 9),
            to: unique(0, 1),
            gossip: Box::new(other),
        }),
    );
    let _ = drain(&mut m);
    assert_eq!(*m.gossip(), before);
    assert_eq!(m.stats().foreign_gossip, 1);
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
