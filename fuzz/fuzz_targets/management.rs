//! Fuzzes the management API's requests (method, path, token, content type, body) against the
//! real router of a real node, without a socket.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

static HARNESS: OnceLock<flotilla_management::fuzzing::Harness> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    HARNESS
        .get_or_init(flotilla_management::fuzzing::Harness::new)
        .request(data);
});
