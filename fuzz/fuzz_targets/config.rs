//! Fuzzes configuration parsing: TOML plus FLOTILLA__ environment overrides, validation, and
//! the round trip through TOML.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    flotilla_core::fuzzing::config(data);
});
