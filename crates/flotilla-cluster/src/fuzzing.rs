//! The body of the `gossip` fuzz target (`fuzz/fuzz_targets/gossip.rs`), here so that the
//! corpus replay test runs exactly the same code on every test run.
//!
//! An input is one membership message as it arrives from the network. The validated decoder
//! must refuse it or accept it; an accepted message must encode again to the same message; and
//! fed to a member of a formed three-node cluster (simulated, deterministic), it must not make
//! any node panic or send a message it cannot encode, over ten simulated seconds.

use std::time::{Duration, Instant};

use flotilla_proto::cluster::sim::ClusterSim;
use flotilla_proto::cluster::{ClusterInput, ClusterMsg};

use crate::codec::{decode, encode};

/// The simulation's seed: the corpus's seed messages come from a cluster with the same seed,
/// so their addresses and UIDs are the formed cluster's own.
const SEED: u64 = 7;

/// Every message a node sends must encode and decode to itself (the simulation's meter).
fn reencode(msg: &ClusterMsg) -> usize {
    let bytes = encode(msg).unwrap_or_else(|e| panic!("a node sent what it cannot encode: {e}"));
    let back = decode(&bytes).unwrap_or_else(|e| panic!("an encoded message does not decode: {e}"));
    assert_eq!(&back, msg, "an encoded message decodes to another");
    bytes.len()
}

/// Three nodes started, joining through the first; every message sent goes through `meter`.
fn started(meter: fn(&ClusterMsg) -> usize) -> ClusterSim {
    #[allow(clippy::disallowed_methods)] // reason: an arbitrary origin for simulated time
    let t0 = Instant::now();
    let mut sim = ClusterSim::new(SEED, 3, crate::testing::fast_settings(), t0);
    sim.set_meter(meter);
    sim.set_seeds(&[0]);
    for i in 0..3 {
        sim.start(i);
    }
    sim
}

/// Three members, all Up.
fn formed() -> ClusterSim {
    let mut sim = started(reencode);
    let up = sim.run_until_true(Duration::from_secs(60), |s| s.all_up(&[0, 1, 2]));
    assert!(up, "the simulated cluster did not form");
    sim
}

/// Feeds one arbitrary message to node 0 of a formed cluster (see the module docs).
pub fn gossip(data: &[u8]) {
    let Ok(msg) = decode(data) else {
        return;
    };
    reencode(&msg);
    let mut sim = formed();
    sim.input(0, ClusterInput::Received(msg));
    sim.run_for(Duration::from_secs(10));
}

/// Seed inputs: every distinct kind of message of a short cluster life (join, gossip,
/// heartbeats, a leave, a partition and downing), encoded, from the fuzzed cluster's seed.
pub fn seed_messages() -> Vec<Vec<u8>> {
    use std::cell::RefCell;
    thread_local! {
        static SEEN: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }
    fn keep(msg: &ClusterMsg) -> usize {
        let size = reencode(msg);
        let encoded = encode(msg).unwrap_or_default();
        SEEN.with_borrow_mut(|seen| seen.push(encoded));
        size
    }
    SEEN.with_borrow_mut(Vec::clear);
    let mut sim = started(keep);
    sim.run_for(Duration::from_secs(10));
    sim.input(
        0,
        ClusterInput::Leave(flotilla_proto::cluster::sim::address(2)),
    );
    sim.run_for(Duration::from_secs(10));
    sim.start(2);
    sim.run_for(Duration::from_secs(10));
    sim.partition(&[0, 1], &[2]);
    sim.run_for(Duration::from_secs(20));
    let all = SEEN.with_borrow_mut(std::mem::take);
    // Per kind of message (the first byte is postcard's variant index), the smallest and the
    // largest: variety enough, and a small corpus.
    let mut by_kind: std::collections::BTreeMap<u8, (Vec<u8>, Vec<u8>)> =
        std::collections::BTreeMap::new();
    for m in all {
        let Some(&kind) = m.first() else { continue };
        let entry = by_kind
            .entry(kind)
            .or_insert_with(|| (m.clone(), m.clone()));
        if m.len() < entry.0.len() {
            entry.0 = m.clone();
        }
        if m.len() > entry.1.len() {
            entry.1 = m;
        }
    }
    let mut out = Vec::new();
    for (small, large) in by_kind.into_values() {
        if small != large {
            out.push(small);
        }
        out.push(large);
    }
    out
}
