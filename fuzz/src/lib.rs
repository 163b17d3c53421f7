//! The checks behind cairn's fuzz targets. Each `check_*` function takes the fuzzer's bytes and
//! panics when cairn misbehaves; the targets in `fuzz_targets/` call them, and the stable test
//! `tests/fuzz_corpus.rs` runs every committed corpus file through the same functions.

pub mod checks;
