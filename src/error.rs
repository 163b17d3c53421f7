//! The one public error type of cairn.
//!
//! Every variant carries the context an operator needs to act: which file, which offset, which
//! limit. Corrupt bytes on disk always become an [`Error`], never a panic.

use std::io;
use std::path::PathBuf;

/// ENOSPC or EDQUOT: the file system (or the user's quota) has no room.
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == io::ErrorKind::StorageFull
}

fn disk_full_detail(path: &std::path::Path, needed_bytes: u64) -> String {
    if needed_bytes == 0 {
        format!("no room left for {}", path.display())
    } else {
        format!(
            "could not reserve {needed_bytes} bytes for {}",
            path.display()
        )
    }
}

/// What kind of operation an [`Error::Io`] failed in: for code that must tell failures apart,
/// which the text of `op` is not for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IoKind {
    /// Opening a segment file found in the store directory. A read-only open can find one
    /// gone (`NotFound`) that a writer's compaction replaced since the directory was listed.
    OpenSegment,
    /// Any other operation; `op` says which.
    Other,
}

/// Result alias used throughout cairn.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong when using a cairn store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system call failed.
    #[error("I/O error while trying to {op} {}: {source}", path.display())]
    Io {
        /// What cairn was doing, e.g. "create segment", for people to read.
        op: &'static str,
        /// What cairn was doing, for code to match on.
        kind: IoKind,
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The file system has no room: for a new segment, for a record, or for a sync (btrfs can
    /// refuse space when it writes cached pages back). Nothing acknowledged before was lost.
    /// When only a write failed, the save can be retried once space is free; when a sync failed,
    /// the store is also poisoned ([`Error::Poisoned`] says disk full) and must be re-opened.
    #[error(
        "disk full: {}; free space and retry ({source})",
        disk_full_detail(path, *needed_bytes)
    )]
    DiskFull {
        /// The file that could not be written or synced.
        path: PathBuf,
        /// How many bytes were requested; 0 when unknown (a sync).
        needed_bytes: u64,
        /// The underlying error (ENOSPC or EDQUOT).
        #[source]
        source: io::Error,
    },

    /// The store's size limit ([`Retention::max_bytes`](crate::Retention::max_bytes)) leaves
    /// no room for a new segment even after compaction: the live data (each job's latest
    /// checkpoint and state, and history the retention policy still keeps) fills it. Nothing
    /// was written and nothing acknowledged was lost; raise the limit or delete jobs.
    #[error(
        "store {} is full: {used_bytes} bytes in use after compaction, and a new segment of \
         {segment_bytes} bytes would pass the limit of {limit_bytes} bytes; raise the limit \
         (Retention::max_bytes) or delete jobs",
        dir.display()
    )]
    StoreFull {
        /// The store directory.
        dir: PathBuf,
        /// Bytes of segment files in use.
        used_bytes: u64,
        /// The size of the segment that did not fit.
        segment_bytes: u64,
        /// The limit in force.
        limit_bytes: u64,
    },

    /// The directory exists but is not a cairn store, or no store exists where one was expected.
    #[error("{} is not a cairn store: {reason}", path.display())]
    NotAStore {
        /// The directory.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },

    /// A file named like a segment does not start with the cairn segment magic.
    #[error("{} is not a cairn segment file: {reason}", path.display())]
    NotASegment {
        /// The offending file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },

    /// A segment (or the store) was written by a newer cairn whose format this build does not
    /// know. It is refused rather than half-read; upgrade cairn to read it.
    #[error(
        "{} uses format version {found}, this cairn reads up to version {supported}; upgrade cairn",
        path.display()
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found on disk.
        found: u16,
        /// The newest version this build understands.
        supported: u16,
    },

    /// Damaged data that the chosen [`RecoveryMode`](crate::RecoveryMode) does not tolerate.
    #[error("corruption in {} at offset {offset}: {reason}", segment.display())]
    Corrupt {
        /// The segment file holding the damage.
        segment: PathBuf,
        /// Byte offset of the damage within that file.
        offset: u64,
        /// What was found.
        reason: String,
    },

    /// Another process holds the writer lock of this store.
    #[error(
        "store {} is locked by another writer ({holder}); only one process may write at a time \
         (open it read-only to inspect it)",
        path.display()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as written in the lock file (process id and host).
        holder: String,
    },

    /// A previous write or sync failed, so the store refuses further writes: the state of the
    /// unsynced pages is unknown and retrying could hide lost data. Everything acknowledged
    /// before the failure is safe; close and re-open the store to continue.
    #[error("store is poisoned by an earlier I/O failure ({cause}); close and re-open it")]
    Poisoned {
        /// The failure that poisoned the store.
        cause: String,
    },

    /// The store was opened read-only.
    #[error("store was opened read-only; open it with Store::open to write")]
    ReadOnly,

    /// An argument broke one of cairn's rules (a job name, a phase, an option).
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// Which input, e.g. "job name".
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },

    /// A checkpoint's data is larger than the configured limit. Nothing was written.
    #[error(
        "checkpoint data for job {job:?} is {size_bytes} bytes, over the limit of {limit_bytes} bytes"
    )]
    PayloadTooLarge {
        /// The job.
        job: String,
        /// Size of the serialized JSON.
        size_bytes: u64,
        /// The limit in force.
        limit_bytes: u64,
    },

    /// The checkpoint data could not be serialized to JSON. Nothing was written.
    #[error("checkpoint data for job {job:?} does not serialize to JSON: {source}")]
    Serialize {
        /// The job.
        job: String,
        /// The serde_json error.
        #[source]
        source: serde_json::Error,
    },

    /// Stored checkpoint data does not deserialize into the requested type.
    #[error(
        "checkpoint {seq} of job {job:?} does not deserialize into the requested type: {source}"
    )]
    Deserialize {
        /// The job.
        job: String,
        /// The checkpoint's sequence number.
        seq: u64,
        /// The serde_json error.
        #[source]
        source: serde_json::Error,
    },

    /// Checkpoint data broke one of its job type's validation rules. Nothing was written.
    #[error("checkpoint of job {job:?} rejected: field {field:?}: {rule}")]
    Validation {
        /// The job.
        job: String,
        /// The field that broke the rule (or `phase`, or `(data)` for the whole data).
        field: String,
        /// The rule, with the values involved, e.g. `must never decrease (was 50, now 40)`.
        rule: String,
    },

    /// Checkpoint data was saved in a format version newer than the job's code knows. It is
    /// refused rather than misread; upgrade the job's code.
    #[error(
        "checkpoint of job {job:?} uses format version {found}, this build reads up to \
         version {supported}; upgrade the job's code"
    )]
    UnsupportedCheckpointVersion {
        /// The job.
        job: String,
        /// The data's format version.
        found: u32,
        /// The newest version the job's code reads.
        supported: u32,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            kind: IoKind::Other,
            path: path.into(),
            source,
        }
    }

    /// An [`Error::Io`] of opening a segment file ([`IoKind::OpenSegment`]).
    pub(crate) fn open_segment(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op: "open segment",
            kind: IoKind::OpenSegment,
            path: path.into(),
            source,
        }
    }

    /// [`Error::DiskFull`] when `source` is ENOSPC or EDQUOT, else [`Error::io`].
    pub(crate) fn io_or_disk_full(
        op: &'static str,
        path: impl Into<PathBuf>,
        needed_bytes: u64,
        source: io::Error,
    ) -> Self {
        if is_disk_full(&source) {
            Error::DiskFull {
                path: path.into(),
                needed_bytes,
                source,
            }
        } else {
            Error::io(op, path, source)
        }
    }

    pub(crate) fn invalid(what: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            what,
            reason: reason.into(),
        }
    }

    /// True when the error says the bytes on disk are damaged (as opposed to an I/O failure or
    /// a bad argument).
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }
}
