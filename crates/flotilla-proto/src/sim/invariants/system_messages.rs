//! System messages arrive at most once and in order, per pair of incarnations.
//!
//! Every node sends each Up member a numbered system message every two seconds (the counter
//! per remote address keeps counting across the remote's restarts); each receiving incarnation
//! must see, per sending incarnation, strictly increasing numbers: no duplicate, no reordering,
//! whatever the network lost, duplicated or reordered.

use std::collections::BTreeMap;

use flotilla_core::UniqueAddress;

use crate::sim::{Record, World};

/// The invariant's name in reports.
pub const NAME: &str = "system messages arrive once, in order";

/// Over the records.
pub fn check_records(world: &World) -> Vec<String> {
    let mut problems = Vec::new();
    let mut last: BTreeMap<(usize, u64, &UniqueAddress), u64> = BTreeMap::new();
    for (t, r) in &world.records {
        let Record::System {
            node,
            uid,
            from,
            seq,
        } = r
        else {
            continue;
        };
        if let Some(prev) = last.get(&(*node, *uid, from))
            && seq <= prev
        {
            problems.push(format!(
                "at {t:?}: node {node} got system message {seq} from {from} after {prev}"
            ));
        }
        last.insert((*node, *uid, from), *seq);
    }
    problems
}
