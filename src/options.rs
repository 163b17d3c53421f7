//! Options of a store: durability, recovery and limits. Every default is documented on its
//! setter and in the `Default` impl.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};

/// When a save counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// `save` returns only once the record is on stable storage (msync of what it wrote).
    /// Concurrent savers share one sync (group commit). The default.
    Sync,
    /// `save` returns once the record is in the page cache; a background thread syncs at least
    /// every `interval`. A crash of the machine may lose up to `interval` of saves; a crash of
    /// the process alone loses nothing.
    Buffered {
        /// The longest time a save stays unsynced.
        interval: Duration,
    },
    /// `save` returns once the record is in the page cache; cairn syncs only when a segment is
    /// sealed, on [`Store::flush`](crate::Store::flush) and on close. The operating system
    /// writes the rest back when it pleases. Fastest; a machine crash may lose recent saves.
    OsOnly,
}

/// What recovery does with damaged records, modelled on RocksDB's WAL recovery modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum RecoveryMode {
    /// A partially written tail of the newest segment (expected after a crash) is cut off and
    /// reported; any other damage is an error. The default.
    TolerateTornTail,
    /// Stop at the first damaged record anywhere: the store holds the valid prefix of the log,
    /// and everything after the damage is discarded (reported; later segments are set aside,
    /// not deleted).
    PointInTime,
    /// Skip damaged records and keep every valid one, wherever it is. Reported.
    SkipCorrupted,
    /// Any damage, a torn tail included, is an error.
    AbsoluteConsistency,
}

impl RecoveryMode {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            RecoveryMode::TolerateTornTail => "tolerate-torn-tail",
            RecoveryMode::PointInTime => "point-in-time",
            RecoveryMode::SkipCorrupted => "skip-corrupted",
            RecoveryMode::AbsoluteConsistency => "absolute-consistency",
        }
    }
}

/// The smallest segment a store accepts.
pub const MIN_SEGMENT_SIZE_BYTES: u64 = crate::format::MIN_SEGMENT_LEN;
/// The largest segment a store accepts.
pub const MAX_SEGMENT_SIZE_BYTES: u64 = crate::format::MAX_SEGMENT_LEN;
/// The hard ceiling on job names, whatever the options say.
pub const MAX_JOB_NAME_BYTES: usize = 4096;
/// The hard ceiling on phase names, whatever the options say.
pub const MAX_PHASE_BYTES: usize = 4096;

/// How a store is opened. Build one with `Options::default()` and the setters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    pub(crate) durability: Durability,
    pub(crate) recovery: RecoveryMode,
    pub(crate) segment_size_bytes: u64,
    pub(crate) max_payload_bytes: u64,
    pub(crate) max_job_name_bytes: usize,
    pub(crate) max_phase_bytes: usize,
    pub(crate) compress_above_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Sync,
            recovery: RecoveryMode::TolerateTornTail,
            segment_size_bytes: 64 * 1024 * 1024,
            max_payload_bytes: 1024 * 1024,
            max_job_name_bytes: 256,
            max_phase_bytes: 128,
            compress_above_bytes: 64 * 1024,
        }
    }
}

impl Options {
    /// When a save counts as done. Default: [`Durability::Sync`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// What recovery does with damage. Default: [`RecoveryMode::TolerateTornTail`].
    pub fn recovery(mut self, recovery: RecoveryMode) -> Self {
        self.recovery = recovery;
        self
    }

    /// Size of each preallocated segment file. Default: 64 MiB. Between
    /// [`MIN_SEGMENT_SIZE_BYTES`] and [`MAX_SEGMENT_SIZE_BYTES`]. Existing segments keep the
    /// size they were created with.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size_bytes = bytes;
        self
    }

    /// Largest checkpoint data as stored: the JSON after a job type's essential-field trimming
    /// and after compression (see [`Options::compress_above`]). Default: 1 MiB. A record must
    /// also fit in one segment, so small segments lower the effective limit.
    pub fn max_payload(mut self, bytes: u64) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Longest job name in bytes of UTF-8. Default: 256; at most [`MAX_JOB_NAME_BYTES`].
    pub fn max_job_name(mut self, bytes: usize) -> Self {
        self.max_job_name_bytes = bytes;
        self
    }

    /// Longest phase name in bytes of UTF-8. Default: 128; at most [`MAX_PHASE_BYTES`].
    pub fn max_phase(mut self, bytes: usize) -> Self {
        self.max_phase_bytes = bytes;
        self
    }

    /// Checkpoint data larger than this many bytes of JSON is stored compressed (LZ4), and
    /// decompressed transparently when read. Default: 64 KiB. The payload limit applies to the
    /// stored (compressed) size, so compression lets larger checkpoints fit.
    pub fn compress_above(mut self, bytes: u64) -> Self {
        self.compress_above_bytes = bytes;
        self
    }

    /// The size above which checkpoint data is compressed.
    pub fn compress_above_bytes(&self) -> u64 {
        self.compress_above_bytes
    }

    /// The durability mode in force.
    pub fn durability_mode(&self) -> Durability {
        self.durability
    }

    /// The recovery mode in force.
    pub fn recovery_mode(&self) -> RecoveryMode {
        self.recovery
    }

    /// The segment size for new segments, in bytes.
    pub fn segment_size_bytes(&self) -> u64 {
        self.segment_size_bytes
    }

    /// The largest checkpoint data accepted, in bytes as stored (after compression).
    pub fn max_payload_bytes(&self) -> u64 {
        self.max_payload_bytes
    }

    /// The longest job name accepted, in bytes.
    pub fn max_job_name_bytes(&self) -> usize {
        self.max_job_name_bytes
    }

    /// The longest phase accepted, in bytes.
    pub fn max_phase_bytes(&self) -> usize {
        self.max_phase_bytes
    }

    /// Checks the options against each other and the hard limits.
    pub(crate) fn validate(&self) -> Result<()> {
        if !(MIN_SEGMENT_SIZE_BYTES..=MAX_SEGMENT_SIZE_BYTES).contains(&self.segment_size_bytes) {
            return Err(Error::invalid(
                "segment size",
                format!(
                    "{} bytes is outside {MIN_SEGMENT_SIZE_BYTES}..={MAX_SEGMENT_SIZE_BYTES}",
                    self.segment_size_bytes
                ),
            ));
        }
        if !self.segment_size_bytes.is_multiple_of(4096) {
            return Err(Error::invalid(
                "segment size",
                format!(
                    "{} bytes is not a multiple of 4096",
                    self.segment_size_bytes
                ),
            ));
        }
        if self.max_job_name_bytes == 0 || self.max_job_name_bytes > MAX_JOB_NAME_BYTES {
            return Err(Error::invalid(
                "job name limit",
                format!("must be between 1 and {MAX_JOB_NAME_BYTES} bytes"),
            ));
        }
        if self.max_phase_bytes == 0 || self.max_phase_bytes > MAX_PHASE_BYTES {
            return Err(Error::invalid(
                "phase limit",
                format!("must be between 1 and {MAX_PHASE_BYTES} bytes"),
            ));
        }
        if self.max_payload_bytes == 0 {
            return Err(Error::invalid("payload limit", "must be at least 1 byte"));
        }
        if let Durability::Buffered { interval } = self.durability
            && (interval.is_zero() || interval > Duration::from_secs(3600))
        {
            return Err(Error::invalid(
                "sync interval",
                "must be between 1 ns and 1 hour",
            ));
        }
        Ok(())
    }

    /// The largest record body that fits in one segment of this size, leaving room for the
    /// segment header and the seal record that ends a full segment.
    pub(crate) fn max_record_body_bytes(&self) -> u64 {
        let overhead = (SEGMENT_HEADER_LEN + 2 * RECORD_HEADER_LEN + 8) as u64;
        let fits_a_segment = self.segment_size_bytes.saturating_sub(overhead);
        fits_a_segment.min(u64::from(crate::format::MAX_RECORD_BODY_BYTES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Options::default().validate().expect("defaults valid");
    }

    #[test]
    fn out_of_range_options_are_refused() {
        let bad = [
            Options::default().segment_size(1024),
            Options::default().segment_size(MAX_SEGMENT_SIZE_BYTES * 2),
            Options::default().segment_size(MIN_SEGMENT_SIZE_BYTES + 1),
            Options::default().max_job_name(0),
            Options::default().max_job_name(MAX_JOB_NAME_BYTES + 1),
            Options::default().max_phase(0),
            Options::default().max_payload(0),
            Options::default().durability(Durability::Buffered {
                interval: Duration::ZERO,
            }),
        ];
        for options in bad {
            let err = options.validate().expect_err("must be refused");
            assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        }
    }
}
