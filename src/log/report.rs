//! What recovery found: the public [`RecoveryReport`].

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::options::RecoveryMode;

/// The kind of a problem recovery found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum FindingKind {
    /// A partially written tail of the newest segment: expected after a crash, never holding a
    /// save that was acknowledged as durable.
    TornTail,
    /// A damaged record (checksum, header or sequence number) in the middle of the log.
    DamagedRecord,
    /// Records that a later record proves were durable are missing or damaged.
    DurableRecordsLost,
    /// A full segment that does not end with its seal record: its tail was lost.
    MissingSeal,
    /// A gap between segments: a segment file is missing or sequence numbers jump.
    MissingSegment,
    /// A segment file is shorter than its header says: its end was cut off.
    Truncated,
    /// A segment header that does not check out.
    DamagedSegmentHeader,
}

/// One problem found by recovery or `verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// What was found.
    pub kind: FindingKind,
    /// The segment file.
    pub segment: PathBuf,
    /// Byte offset of the problem within the segment.
    pub offset: u64,
    /// How many bytes it spans (what was discarded or skipped).
    pub len_bytes: u64,
    /// A readable description.
    pub detail: String,
}

/// What opening a store found and did. Logged with `tracing` at open and returned by
/// [`Store::recovery_report`](crate::Store::recovery_report).
#[derive(Debug, Clone, Serialize)]
pub struct RecoveryReport {
    /// The recovery mode in force.
    pub mode: RecoveryMode,
    /// Segment files read.
    pub segments_scanned: usize,
    /// Segment files left by a compaction that committed but had not removed them yet: they
    /// are not read (a compacted segment holds what they held), and a writer removes them.
    pub segments_superseded: usize,
    /// Valid records read.
    pub records_scanned: u64,
    /// Bytes of valid records read, headers included.
    pub bytes_scanned: u64,
    /// Bytes cut off or skipped because they did not check out, within the segments read
    /// (segments set aside whole are listed in `notes`, not counted here).
    pub bytes_discarded: u64,
    /// Sequence number of the last valid record (0 for an empty store).
    pub last_seq: u64,
    /// Bytes of recovered records that no record proved durable, which a writer wrote again
    /// before syncing them (they may have been only in the page cache).
    pub bytes_rewritten: u64,
    /// Every problem found, in log order.
    pub findings: Vec<Finding>,
    /// Benign observations: leftovers of interrupted operations cleaned up, ignored files.
    pub notes: Vec<String>,
    /// Whether recovery changed the files (cut a torn tail, removed leftovers). Read-only opens
    /// never do.
    pub repaired: bool,
    /// Time taken, in microseconds.
    #[serde(rename = "duration_us", serialize_with = "as_micros")]
    pub duration: Duration,
}

fn as_micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl RecoveryReport {
    pub(crate) fn new(mode: RecoveryMode) -> Self {
        RecoveryReport {
            mode,
            segments_scanned: 0,
            segments_superseded: 0,
            records_scanned: 0,
            bytes_scanned: 0,
            bytes_discarded: 0,
            last_seq: 0,
            bytes_rewritten: 0,
            findings: Vec::new(),
            notes: Vec::new(),
            repaired: false,
            duration: Duration::ZERO,
        }
    }

    /// True when nothing at all was found: no torn tail, no damage.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    pub(crate) fn add(&mut self, finding: Finding) {
        self.bytes_discarded += finding.len_bytes;
        self.findings.push(finding);
    }
}
