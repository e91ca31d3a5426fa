//! Fuzzes the frame decoder and every PDU decoder, handshake checks included: arbitrary bytes,
//! split at arbitrary points, must never panic, and must never yield a frame over the limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flotilla_wire::fuzzing::decode_everything(data);
});
