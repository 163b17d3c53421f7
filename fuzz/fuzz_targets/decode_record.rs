//! Fuzz target `decode_record`: see `cairn_fuzz::checks::check_decode` and docs/FUZZING.md.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cairn_fuzz::checks::check_decode(data));
