//! The checks of the fuzz targets, shared by `fuzz_targets/*.rs` (through the `cairn_fuzz`
//! library) and by the stable test `tests/fuzz_corpus.rs` (which includes this module by
//! path), so the corpora run through exactly the code the fuzzer ran.

mod decode;
pub mod format;
pub mod image;
mod input;
pub mod open_segments;
pub mod ops;
pub mod seeds;

pub use decode::check_decode;
pub use open_segments::check_open_segments;
pub use ops::check_ops;

/// A target's check: panics when cairn misbehaves on this input.
pub type Check = fn(&[u8]);

/// The targets, by name, with their check function.
pub const TARGETS: [(&str, Check); 3] = [
    ("decode_record", check_decode),
    ("open_segments", check_open_segments),
    ("ops", check_ops),
];
