//! Fuzzes membership messages from the network: the validated decoder, re-encoding, and the
//! gossip merge of a formed (simulated) three-node cluster fed the message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flotilla_cluster::fuzzing::gossip(data);
});
