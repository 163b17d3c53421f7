//! Counters and gauges for monitoring a store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;

/// Counters kept while a store is open.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub checkpoints_saved: AtomicU64,
    pub events_recorded: AtomicU64,
    pub validation_failures: AtomicU64,
    pub compressed_saves: AtomicU64,
    pub bytes_appended: AtomicU64,
    /// Failed compactions the store ran on its own, and the last one's error until one
    /// succeeds.
    compaction_failures: AtomicU64,
    last_compaction_error: Mutex<Option<String>>,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn compaction_failed(&self, error: String) {
        Counters::add(&self.compaction_failures, 1);
        *self.last_error() = Some(error);
    }

    pub fn compaction_succeeded(&self) {
        *self.last_error() = None;
    }

    pub fn compaction_failures(&self) -> u64 {
        Counters::get(&self.compaction_failures)
    }

    pub fn last_compaction_error(&self) -> Option<String> {
        self.last_error().clone()
    }

    fn last_error(&self) -> MutexGuard<'_, Option<String>> {
        self.last_compaction_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A snapshot of a store's metrics and health, from [`Store::metrics`](crate::Store::metrics).
/// Counters count since the store was opened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Metrics {
    /// Checkpoints saved.
    pub checkpoints_saved: u64,
    /// Job events recorded.
    pub events_recorded: u64,
    /// Checkpoints refused by a job type's validation.
    pub validation_failures: u64,
    /// Checkpoints stored compressed.
    pub compressed_saves: u64,
    /// Bytes of records appended to the log.
    pub bytes_appended: u64,
    /// Jobs known to the store.
    pub jobs: usize,
    /// Segment files in use.
    pub segments: usize,
    /// Disk space taken by the segment files, in bytes (they are preallocated).
    pub storage_bytes: u64,
    /// The sequence number of the last record.
    pub last_seq: u64,
    /// Problems the recovery at open found (see the recovery report).
    pub recovery_findings: usize,
    /// Bytes the recovery at open discarded.
    pub recovery_bytes_discarded: u64,
    /// How long the recovery at open took, in microseconds.
    pub recovery_duration_us: u64,
    /// Why the store refuses writes, if it does (a failed sync or write).
    pub poisoned: Option<String>,
    /// Estimated bytes of records the next compaction would drop or fold (job events,
    /// checkpoints beyond the retention window, deleted jobs' records). [`Store::stats`](crate::Store::stats)
    /// gives the exact figure.
    pub dead_bytes_estimate: u64,
    /// Estimated bytes of the in-memory index (allocator overhead aside): a constant per job
    /// (its hash-table slot and entry, about 400 bytes, plus its name twice, its phase and
    /// error texts, and 4 bytes per checkpoint of the retention window: about 600 bytes a job
    /// in docs/PERFORMANCE.md's scale run), never a cost per record saved. Walks the index:
    /// it costs a pass over the jobs.
    pub index_bytes_estimate: u64,
    /// The store's size limit, if any.
    pub size_limit_bytes: Option<u64>,
    /// The last save that needed a new segment was refused because the live data fills the
    /// size limit ([`Error::StoreFull`](crate::Error::StoreFull)).
    pub full: bool,
    /// Compactions the store ran on its own (the background compactor, or a save making room
    /// under the size limit) that failed. Each is also logged with `tracing::error!`.
    pub compaction_failures: u64,
    /// Why the last of those failed, unless one has succeeded since.
    pub last_compaction_error: Option<String>,
}

impl Metrics {
    /// True when the store accepts writes, is not full, recovery found nothing wrong, and the
    /// last compaction the store ran on its own did not fail.
    pub fn is_healthy(&self) -> bool {
        self.poisoned.is_none()
            && self.recovery_findings == 0
            && !self.full
            && self.last_compaction_error.is_none()
    }
}

/// The parts of [`Metrics`] that come from the counters.
pub(crate) struct CounterValues {
    pub checkpoints_saved: u64,
    pub events_recorded: u64,
    pub validation_failures: u64,
    pub compressed_saves: u64,
    pub bytes_appended: u64,
}

impl Counters {
    pub fn values(&self) -> CounterValues {
        CounterValues {
            checkpoints_saved: Counters::get(&self.checkpoints_saved),
            events_recorded: Counters::get(&self.events_recorded),
            validation_failures: Counters::get(&self.validation_failures),
            compressed_saves: Counters::get(&self.compressed_saves),
            bytes_appended: Counters::get(&self.bytes_appended),
        }
    }
}
