#![doc = include_str!("../README.md")]
#![warn(missing_docs)]
#![deny(clippy::host_endian_bytes, clippy::big_endian_bytes)]

mod checkpoint;
mod error;
mod format;
mod log;
mod options;
mod storage;
mod store;

pub use checkpoint::Checkpoint;
pub use error::{Error, Result};
pub use log::{Finding, FindingKind, RecoveryReport};
pub use options::{
    Durability, MAX_JOB_NAME_BYTES, MAX_PHASE_BYTES, MAX_SEGMENT_SIZE_BYTES,
    MIN_SEGMENT_SIZE_BYTES, Options, RecoveryMode,
};
pub use store::{JobSummary, Store};

/// Test support: a simulated disk with crash states and fault injection, and a way to open a
/// store on it. Enabled by the `testing` feature, which cairn's own tests and fuzz targets
/// turn on; not part of the stable API.
#[cfg(feature = "testing")]
#[doc(hidden)]
pub mod testing {
    use std::path::Path;
    use std::sync::Arc;

    pub use crate::storage::sim::{CrashMode, Fault, SimDisk, Step};

    /// Opens a store on a simulated disk.
    pub fn open(
        disk: &SimDisk,
        dir: &Path,
        options: crate::Options,
        read_only: bool,
    ) -> crate::Result<crate::Store> {
        crate::Store::open_on(Arc::new(disk.clone()), dir, options, read_only)
    }
}
