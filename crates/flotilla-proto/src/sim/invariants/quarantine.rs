//! A quarantined UID never becomes Active again.
//!
//! Each incarnation keeps the UIDs its remoting quarantined, per remote address (from the
//! associations' events); after each of its steps, no association may be active with one of
//! them. The records are checked too: no association event leaves an association active with a
//! quarantined UID.

use std::collections::{BTreeMap, BTreeSet};

use flotilla_core::Address;

use crate::association::StateName;
use crate::sim::{Record, World};

/// The invariant's name in reports.
pub const NAME: &str = "a quarantined UID never becomes Active again";

/// After a step of node `i`.
pub fn check_node(world: &mut World, i: usize) {
    let Some(inc) = world.nodes[i].live.as_ref() else {
        return;
    };
    let mut found = Vec::new();
    for (address, uids) in &inc.quarantined {
        if let Some(uid) = inc.remoting.active_uid(address)
            && uids.contains(&uid)
        {
            found.push(format!(
                "node {i}'s association to {address} is active with uid {uid}, which it quarantined"
            ));
        }
    }
    for what in found {
        world.report(NAME, what);
    }
}

/// Over the records, per node (a restart of the node starts a new, empty history).
pub fn check_records(world: &World) -> Vec<String> {
    let mut problems = Vec::new();
    let mut quarantined: BTreeMap<(usize, Address), BTreeSet<u64>> = BTreeMap::new();
    for (t, r) in &world.records {
        let Record::Association {
            node,
            event,
            active_uid,
        } = r
        else {
            continue;
        };
        let key = (*node, event.remote.clone());
        if let crate::association::Cause::Quarantined { uid, .. } = &event.cause {
            quarantined.entry(key.clone()).or_default().insert(*uid);
        }
        if event.to == StateName::Active
            && let Some(uid) = active_uid
            && quarantined.get(&key).is_some_and(|q| q.contains(uid))
        {
            problems.push(format!(
                "at {t:?}: node {node}'s association to {} became active with quarantined uid {uid}",
                event.remote
            ));
        }
    }
    problems
}
