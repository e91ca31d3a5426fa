//! Fuzzes both sides of the handshake machine: arbitrary frames at every step must never panic,
//! the accepting side's first answer must name no one, and a side with the cluster secret must
//! never go past a step without the secret's proof for this connection.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flotilla_proto::handshake::fuzzing::handshake(data);
});
