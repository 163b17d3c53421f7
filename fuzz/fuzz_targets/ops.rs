//! Fuzz target `ops`: see `cairn_fuzz::checks::check_ops` and docs/FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::checks::check_ops(data));
