#![doc = include_str!("../README.md")]
#![deny(missing_docs, unsafe_code)]
#![deny(clippy::host_endian_bytes, clippy::big_endian_bytes)]
#![deny(clippy::unwrap_used, clippy::indexing_slicing, clippy::too_many_lines)]

mod checkpoint;
#[cfg(test)]
mod crate_tests;
mod error;
mod format;
pub mod job;
mod log;
mod options;
mod storage;
mod store;

// The store, and what its methods take and return. The ETL toolkit (validation, migrations,
// policies, work queues, idempotency keys, backoff, planning, presets) is in `job`.
pub use checkpoint::Checkpoint;
pub use error::{Error, IoKind, Result};
pub use job::event::{ErrorContext, JobEvent, Trigger};
pub use job::job_type::JobType;
pub use job::plan::{RetryPolicy, RunPlan};
pub use job::state::{CheckpointMeta, JobState, JobStatus, RunFailure, ScheduledRetry};
pub use log::{Finding, FindingKind, RecoveryReport};
pub use options::{
    AutoCompact, Durability, MAX_EVENT_BYTES, MAX_JOB_NAME_BYTES, MAX_PHASE_BYTES,
    MAX_SEGMENT_SIZE_BYTES, MIN_SEGMENT_SIZE_BYTES, Options, RecoveryMode, Retention,
};
pub use store::{
    CompactionPhase, CompactionProgress, CompactionReport, JobSummary, Metrics, MigrationCheck,
    MigrationFailure, Store, StoreStats,
};

// The Rust examples in docs/ are compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../docs/JOBS.md")]
struct JobsGuideDoctests;

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

    /// A record decoded by [`decode_record`].
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct DecodedRecord {
        /// Its sequence number.
        pub seq: u64,
        /// For a checkpoint, its job and JSON data; `None` for a seal.
        pub checkpoint: Option<(String, Vec<u8>)>,
    }

    /// Decodes `bytes` as one record of a segment whose salt is `salt`, the way recovery does:
    /// header, checksum, then (for a checkpoint) the body. Returns the sequence number and, for
    /// a checkpoint, the job name and JSON data; `None` when anything does not check out. For
    /// fuzzing: it must never panic, whatever the bytes.
    pub fn decode_record(salt: u32, bytes: &[u8]) -> Option<DecodedRecord> {
        use crate::format::{
            RECORD_HEADER_LEN, RecordKind, check_record, decode_checkpoint_body,
            decode_record_header,
        };
        let header = decode_record_header(salt, bytes).ok()?;
        if !check_record(salt, bytes) {
            return None;
        }
        let body = bytes.get(RECORD_HEADER_LEN..RECORD_HEADER_LEN + header.body_len as usize)?;
        match header.kind {
            RecordKind::Checkpoint => {
                let body = decode_checkpoint_body(crate::format::FORMAT_VERSION, body).ok()?;
                Some(DecodedRecord {
                    seq: header.seq,
                    checkpoint: Some((body.job, body.data_json)),
                })
            }
            RecordKind::Seal
            | RecordKind::JobEvent
            | RecordKind::Snapshot
            | RecordKind::SnapshotPart
            | RecordKind::Mark => Some(DecodedRecord {
                seq: header.seq,
                checkpoint: None,
            }),
        }
    }

    /// Encodes one checkpoint record as cairn writes it, for seeding fuzz corpora.
    pub fn encode_checkpoint_record(salt: u32, seq: u64, job: &str, data_json: &[u8]) -> Vec<u8> {
        use crate::format::{
            CheckpointBody, RecordHeader, RecordKind, encode_checkpoint_body, encode_record,
        };
        let body = CheckpointBody {
            job: job.into(),
            phase: "fuzz".into(),
            at_micros: 0,
            data_version: 1,
            trigger: 0,
            data_json: data_json.to_vec(),
        };
        let mut encoded = Vec::new();
        encode_checkpoint_body(&body, false, &mut encoded).expect("small envelope");
        let header = RecordHeader {
            seq,
            durable_seq: seq - 1,
            body_len: encoded.len() as u32,
            kind: RecordKind::Checkpoint,
        };
        let mut out = Vec::new();
        encode_record(salt, &header, &encoded, &mut out);
        out
    }
}
