//! Tests of the crate as a whole: its layering, and failures of the write path followed
//! through every layer. They sit at the crate root, which may import every module.

mod layering;
mod write_failures;
