//! Fuzz target `open_segments`: see `cairn_fuzz::checks::check_open_segments` and docs/FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::checks::check_open_segments(data));
