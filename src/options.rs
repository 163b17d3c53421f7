//! Options of a store: durability, recovery and limits. Every default is documented on its
//! setter and in the `Default` impl.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};

/// When a save counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Durability {
    /// `save` returns only once the record is on stable storage (fdatasync of what it wrote).
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

/// What recovery, the check and repair of the log when a store is opened, does with damaged
/// records; modelled on RocksDB's WAL recovery modes. (Planning a job's next run after a
/// crash is another matter: [`Store::plan`](crate::Store::plan).)
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
/// The hard ceiling on a job event's JSON (the error message of a failed run, the reason of a
/// cleared checkpoint, ...), whatever [`Options::max_payload`] says: a job's state holds the
/// text of at most four events, and must fit one snapshot record (64 MiB) at compaction.
pub const MAX_EVENT_BYTES: u64 = 8 * 1024 * 1024;
// A job state: four event texts, its name and phases (escaped, at most doubled) and fixed
// fields well under 64 KiB. It must fit a record body, so that no snapshot part overflows.
const _: () = assert!(
    4 * MAX_EVENT_BYTES + 2 * (MAX_JOB_NAME_BYTES + 2 * MAX_PHASE_BYTES) as u64 + 65_536
        <= crate::format::MAX_RECORD_BODY_BYTES as u64
);

/// What compaction keeps. **The latest checkpoint and the state of every job that was not
/// deleted are always kept**, whatever the policy says; the policy only trims history.
///
/// Each setting has a setter named for it and a getter of the same name with `get_` in front
/// ([`Retention::keep_last`], [`Retention::get_keep_last`]), as [`Options`] has.
///
/// ```
/// use std::time::Duration;
/// let retention = cairn::Retention::default()
///     .keep_last(5)
///     .max_age(Duration::from_secs(7 * 24 * 3600))
///     .max_bytes(256 * 1024 * 1024);
/// assert_eq!(retention.get_keep_last(), 5);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Retention {
    pub(crate) keep_last: usize,
    pub(crate) max_age: Option<Duration>,
    pub(crate) max_bytes: Option<u64>,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            keep_last: 10,
            max_age: None,
            max_bytes: None,
        }
    }
}

impl Retention {
    /// Keep at most the newest `n` checkpoints of each job (at least 1: the latest is always
    /// kept). Default: 10.
    pub fn keep_last(mut self, n: usize) -> Self {
        self.keep_last = n.max(1);
        self
    }

    /// Drop checkpoints older than `age` (except each job's latest). Default: no age limit.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Cap the store's disk use (all segment files) at `bytes`. Compaction drops the oldest
    /// history first to stay within it; if the live data alone (each job's latest checkpoint
    /// and state) does not fit, saves are refused with [`Error::StoreFull`] instead of
    /// dropping live state. Default: no cap. It must be at least three segments
    /// ([`Options::segment_size`]); four or more is sensible.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// How many checkpoints per job are kept.
    pub fn get_keep_last(&self) -> usize {
        self.keep_last
    }

    /// The age limit, if any.
    pub fn get_max_age(&self) -> Option<Duration> {
        self.max_age
    }

    /// The disk-use cap, if any.
    pub fn get_max_bytes(&self) -> Option<u64> {
        self.max_bytes
    }
}

/// When compaction runs by itself, in a background thread. It is checked each time the log
/// moves to a new segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct AutoCompact {
    pub(crate) enabled: bool,
    pub(crate) segments: usize,
    pub(crate) dead_bytes: u64,
}

impl Default for AutoCompact {
    fn default() -> Self {
        AutoCompact {
            enabled: true,
            segments: 8,
            dead_bytes: 64 * 1024 * 1024,
        }
    }
}

impl AutoCompact {
    /// No automatic compaction: only [`Store::compact`](crate::Store::compact) compacts. A
    /// [`Retention::max_bytes`] cap is still enforced at the moment a save needs room.
    pub fn disabled() -> Self {
        AutoCompact {
            enabled: false,
            ..AutoCompact::default()
        }
    }

    /// Compact when the store has this many segment files. Default: 8.
    pub fn segments(mut self, n: usize) -> Self {
        self.segments = n.max(2);
        self
    }

    /// Compact when an estimated this many bytes of records are dead (job events, checkpoints
    /// beyond the retention window, deleted jobs). Default: 64 MiB.
    pub fn dead_bytes(mut self, bytes: u64) -> Self {
        self.dead_bytes = bytes;
        self
    }

    /// Whether compaction runs by itself.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
}

/// How a store is opened. Build one with `Options::default()` and the setters.
///
/// Each option has a setter named for it, which documents its default, and a getter of the
/// same name with `get_` in front: [`Options::segment_size`] sets what
/// [`Options::get_segment_size`] returns. [`Retention`] follows the same convention.
///
/// ```
/// use cairn::{Durability, Options, Retention};
/// let options = Options::default()
///     .durability(Durability::OsOnly)
///     .segment_size(16 * 1024 * 1024)
///     .retention(Retention::default().keep_last(3));
/// assert_eq!(options.get_durability(), Durability::OsOnly);
/// assert_eq!(options.get_segment_size(), 16 * 1024 * 1024);
/// assert_eq!(options.get_retention().get_keep_last(), 3);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    pub(crate) durability: Durability,
    pub(crate) recovery: RecoveryMode,
    pub(crate) segment_size_bytes: u64,
    /// The user set the segment size: it overrides the store's recorded shape.
    pub(crate) segment_size_set: bool,
    pub(crate) max_payload_bytes: u64,
    pub(crate) max_job_name_bytes: usize,
    pub(crate) max_phase_bytes: usize,
    pub(crate) compress_above_bytes: u64,
    pub(crate) retention: Retention,
    pub(crate) auto_compact: AutoCompact,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            durability: Durability::Sync,
            recovery: RecoveryMode::TolerateTornTail,
            segment_size_bytes: 64 * 1024 * 1024,
            segment_size_set: false,
            max_payload_bytes: 1024 * 1024,
            max_job_name_bytes: 256,
            max_phase_bytes: 128,
            compress_above_bytes: 64 * 1024,
            retention: Retention::default(),
            auto_compact: AutoCompact::default(),
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

    /// Size of each segment file, a multiple of 4096 between [`MIN_SEGMENT_SIZE_BYTES`] and
    /// [`MAX_SEGMENT_SIZE_BYTES`]. A segment takes disk space as it fills (in steps of at
    /// most 1 MiB ahead of its last record), not its whole size at once.
    ///
    /// The segment size is part of a store's **shape**: it is recorded in the store when the
    /// store is created (its `SHAPE` file, docs/FORMAT.md), and an open that does not call
    /// this setter makes new segments of the store's recorded size, not of the default. An
    /// explicit size that differs from the store's is applied to new segments and recorded as
    /// the store's new shape (a writer only), and the open logs a warning saying so.
    /// Existing segments keep the size they were created with. A store made by an older build
    /// (without a recorded shape) takes the size of its newest segment.
    ///
    /// Default: 64 MiB for a new store.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size_bytes = bytes;
        self.segment_size_set = true;
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

    /// What compaction keeps. Default: [`Retention::default`] (the newest 10 checkpoints per
    /// job, no age limit, no size cap).
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// When compaction runs by itself. Default: [`AutoCompact::default`].
    pub fn auto_compact(mut self, auto_compact: AutoCompact) -> Self {
        self.auto_compact = auto_compact;
        self
    }

    /// The retention policy in force.
    pub fn get_retention(&self) -> Retention {
        self.retention
    }

    /// The automatic compaction thresholds in force.
    pub fn get_auto_compact(&self) -> AutoCompact {
        self.auto_compact
    }

    /// The size above which checkpoint data is compressed.
    pub fn get_compress_above(&self) -> u64 {
        self.compress_above_bytes
    }

    /// The durability mode in force.
    pub fn get_durability(&self) -> Durability {
        self.durability
    }

    /// The recovery mode in force.
    pub fn get_recovery(&self) -> RecoveryMode {
        self.recovery
    }

    /// The segment size for new segments, in bytes: the one set with
    /// [`Options::segment_size`] or the default. (An open without an explicit size uses the
    /// store's own: [`Store::segment_size`](crate::Store::segment_size) tells it.)
    pub fn get_segment_size(&self) -> u64 {
        self.segment_size_bytes
    }

    /// The largest checkpoint data accepted, in bytes as stored (after compression).
    pub fn get_max_payload(&self) -> u64 {
        self.max_payload_bytes
    }

    /// The longest job name accepted, in bytes.
    pub fn get_max_job_name(&self) -> usize {
        self.max_job_name_bytes
    }

    /// The longest phase accepted, in bytes.
    pub fn get_max_phase(&self) -> usize {
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
        // Under the limit go the segment being written, room for the next one, and the
        // compacted segment: less than three segments leaves nothing for the data.
        if let Some(max) = self.retention.max_bytes
            && max < 3 * self.segment_size_bytes
        {
            return Err(Error::invalid(
                "store size limit",
                format!(
                    "{max} bytes is less than three segments of {} bytes (the one being \
                     written, room for the next, and the compacted data)",
                    self.segment_size_bytes
                ),
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
    /// segment header, and after the record for two marks and the seal that ends a full segment
    /// (docs/FORMAT.md, "Finding the end of valid data").
    pub(crate) fn max_record_body_bytes(&self) -> u64 {
        // Header, the record's own header, two marks, a seal, and the record's padding.
        let overhead = (SEGMENT_HEADER_LEN + 4 * RECORD_HEADER_LEN + 8) as u64;
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
