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
