//! [`Store`]: the handle users hold. It joins the log (durable records), the in-memory index
//! (each job's latest checkpoint and folded state) and the job types registered for jobs.

mod checkpoints;
mod compact;
mod compactor;
mod flusher;
mod index;
mod jobs;
mod metrics;
mod retention;
mod shape;
mod visibility;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, IoKind, Result};
use crate::job::{JobStatus, JobType};
use crate::log::{
    Appended, Contents, FsStorage, Log, NewRecord, RecordRef, RecoveryReport, Storage,
};
use crate::options::{Durability, Options, RecoveryMode};

pub use compact::{CompactionPhase, CompactionProgress, CompactionReport, StoreStats};
use compactor::Compactor;
use flusher::Flusher;
use index::{Index, RecordError};
pub use jobs::{MigrationCheck, MigrationFailure};
use metrics::Counters;
pub use metrics::Metrics;

/// A summary of one job, as listed by [`Store::jobs`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct JobSummary {
    /// The job name.
    pub job: String,
    /// Sequence number of its latest checkpoint.
    pub latest_seq: u64,
    /// Phase of its latest checkpoint.
    pub phase: String,
    /// Time of its latest checkpoint.
    pub at: DateTime<Utc>,
    /// Checkpoints of this job in the log.
    pub checkpoints: u64,
    /// Where the job stands, from its events.
    pub status: JobStatus,
}

/// An embedded, crash-safe checkpoint store in one directory.
///
/// `Store` is `Send + Sync`: share it between threads with an `Arc` (or by reference).
/// Concurrent saves share syncs (group commit).
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// let store = cairn::Store::open(dir.path())?;
/// let seq = store.save("github_sync", "pr_extraction", &serde_json::json!({"cursor": "Y3Vy"}))?;
/// let latest = store.latest("github_sync")?.expect("just saved");
/// assert_eq!(latest.seq, seq);
/// assert_eq!(latest.data["cursor"], "Y3Vy");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Store {
    inner: Arc<Inner>,
    /// The background compaction thread (writers with automatic compaction only).
    compactor: Option<Compactor>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: Options,
    log: Arc<Log>,
    index: RwLock<Index>,
    /// Index updates of records not yet durable (`Sync` mode), in sequence order.
    pending: visibility::Pending,
    job_types: RwLock<HashMap<String, Arc<JobType>>>,
    counters: Counters,
    report: RecoveryReport,
    read_only: bool,
    flusher: Option<Flusher>,
    /// Compactions take turns.
    compaction: Mutex<()>,
    /// The last save was refused because the store is full (health).
    full: std::sync::atomic::AtomicBool,
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
};

impl Store {
    /// Opens (creating if needed) the store in `dir` with default [`Options`].
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(dir, Options::default())
    }

    /// Opens (creating if needed) the store in `dir` for writing. Fails with
    /// [`Error::Locked`] if another process is writing to it.
    pub fn open_with(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Store::open_on(Arc::new(FsStorage), dir.as_ref(), options, false)
    }

    /// Opens an existing store read-only with default options. Works while another process
    /// writes; shows the state as of the open. Never changes a byte on disk.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open_read_only_with(dir, Options::default())
    }

    /// Opens an existing store read-only with the given recovery mode and limits.
    pub fn open_read_only_with(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Store::open_on(Arc::new(FsStorage), dir.as_ref(), options, true)
    }

    /// Opens a store on any [`Storage`]: the real file system, or a faulty or simulated one
    /// in tests.
    pub(crate) fn open_on(
        storage: Arc<dyn Storage>,
        dir: &Path,
        mut options: Options,
        read_only: bool,
    ) -> Result<Store> {
        options.validate()?;
        let store_version = Log::prepare_dir(storage.as_ref(), dir, !read_only)?;
        let new_shape = shape::resolve(storage.as_ref(), dir, &mut options)?;
        options.validate()?;
        let segment_size = (!read_only).then_some(options.segment_size_bytes);
        let open_log = || {
            let mut index = Index::new(options.retention.keep_last);
            let (log, report) = Log::open(
                storage.clone(),
                dir,
                options.recovery,
                segment_size,
                options.retention.max_bytes,
                &mut |record| index.replay_record(record),
            )?;
            Ok((log, report, index))
        };
        let (log, report, index) = if read_only {
            look_again(open_log, |_| true)?
        } else {
            open_log()?
        };
        if !read_only {
            Log::upgrade_marker(storage.as_ref(), dir, store_version)?;
            // After the first segment exists: a crash before this leaves a store whose newest
            // segment says the same size.
            if let Some(shape) = new_shape
                && let Err(error) = log.record_shape(shape)
            {
                // Not a failed open: the shape only sizes new segments, and the newest
                // segment says it until a later writer records it. An open on a full disk
                // (to compact, to read) must still work.
                tracing::warn!(%error, "cairn: could not record the store's shape");
            }
        }
        log_report(dir, &report);
        let log = Arc::new(log);
        let flusher = match (read_only, options.durability) {
            (false, Durability::Buffered { interval }) => {
                Some(Flusher::start(log.clone(), interval)?)
            }
            _ => None,
        };
        let auto_compact = !read_only && options.auto_compact.enabled;
        let inner = Arc::new(Inner {
            dir: dir.to_path_buf(),
            options,
            log,
            index: RwLock::new(index),
            pending: visibility::Pending::default(),
            job_types: RwLock::new(HashMap::new()),
            counters: Counters::default(),
            report,
            read_only,
            flusher,
            compaction: Mutex::new(()),
            full: std::sync::atomic::AtomicBool::new(false),
        });
        let compactor = if auto_compact {
            Some(Compactor::start(Arc::downgrade(&inner))?)
        } else {
            None
        };
        Ok(Store { inner, compactor })
    }

    /// Scans every record of the store in `dir` without changing anything and reports every
    /// problem found (a torn tail included). Clean when `report.is_clean()`.
    ///
    /// Safe beside a writer in another process: like a read-only open, it scans again (up to
    /// 8 times, pausing a little longer each time) when it finds damage, which may be a record
    /// in flight, or a segment file gone, which a compaction replaced. Damage it reports was
    /// there at every look.
    pub fn verify(dir: impl AsRef<Path>) -> Result<RecoveryReport> {
        let dir = dir.as_ref();
        let storage: Arc<dyn Storage> = Arc::new(FsStorage);
        Log::prepare_dir(storage.as_ref(), dir, false)?;
        look_again(
            || Store::verify_once(storage.clone(), dir),
            RecoveryReport::is_clean,
        )
    }

    /// One scan of [`Store::verify`].
    fn verify_once(storage: Arc<dyn Storage>, dir: &Path) -> Result<RecoveryReport> {
        let mut index = Index::new(1);
        let (_, report) = Log::open(
            storage,
            dir,
            RecoveryMode::SkipCorrupted,
            None,
            None,
            &mut |record| {
                index.replay_record(record)?;
                check_checkpoint_data(record)
            },
        )?;
        Ok(report)
    }

    /// Makes every save so far durable, whatever the durability mode.
    pub fn flush(&self) -> Result<()> {
        self.inner.log.sync_all()?;
        self.inner.publish_durable(0);
        Ok(())
    }

    /// Flushes and closes the store, reporting a failure of the final sync (which `drop`
    /// can only log). A clean close leaves a synced mark record proving every record durable
    /// (docs/FORMAT.md, "Mark records"), so damage found later is never taken for a torn write.
    pub fn close(self) -> Result<()> {
        self.inner.log.close()
    }

    /// What recovery found and did when this store was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.inner.report
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The options the store was opened with, its segment size resolved: the store's own
    /// unless one was set (see [`Options::segment_size`]).
    pub fn options(&self) -> &Options {
        &self.inner.options
    }

    /// The size of the segments this store makes from now on, in bytes: the store's recorded
    /// shape unless [`Options::segment_size`] set another.
    pub fn segment_size(&self) -> u64 {
        self.inner.options.segment_size_bytes
    }

    /// The sequence number of the last record written (0 for an empty store).
    pub fn last_seq(&self) -> u64 {
        self.inner.log.last_seq()
    }

    /// The number of segment files in use.
    pub fn segment_count(&self) -> usize {
        self.inner.log.segment_count()
    }

    /// Counters since open, storage use and health.
    pub fn metrics(&self) -> Metrics {
        let counters = self.inner.counters.values();
        let report = &self.inner.report;
        Metrics {
            checkpoints_saved: counters.checkpoints_saved,
            events_recorded: counters.events_recorded,
            validation_failures: counters.validation_failures,
            compressed_saves: counters.compressed_saves,
            bytes_appended: counters.bytes_appended,
            jobs: self.index().len(),
            segments: self.inner.log.segment_count(),
            storage_bytes: self.inner.log.storage_bytes(),
            last_seq: self.last_seq(),
            recovery_findings: report.findings.len(),
            recovery_bytes_discarded: report.bytes_discarded,
            recovery_duration_us: u64::try_from(report.duration.as_micros()).unwrap_or(u64::MAX),
            poisoned: self.inner.log.poisoned(),
            dead_bytes_estimate: self.index().dead_bytes(),
            index_bytes_estimate: u64::try_from(self.index().memory_bytes()).unwrap_or(u64::MAX),
            size_limit_bytes: self.inner.options.retention.max_bytes,
            full: self.inner.full.load(std::sync::atomic::Ordering::Relaxed),
            compaction_failures: self.inner.counters.compaction_failures(),
            last_compaction_error: self.inner.counters.last_compaction_error(),
        }
    }

    /// Appends a record; `on_written` takes its index update under the writer lock. Under a size
    /// limit, a record that needs a new segment for which there is no room waits for a
    /// compaction first (the background compactor normally runs well before this), and is
    /// refused with [`Error::StoreFull`] only if there is still no room after it.
    ///
    /// A job deletion is never refused for the limit: deleting jobs is how a full store gets
    /// room again. It may take the store one segment past the limit until the next
    /// compaction drops the job.
    fn append(
        &self,
        record: &NewRecord,
        deletion: bool,
        on_written: &dyn Fn(&Appended),
    ) -> Result<Appended> {
        let inner = &self.inner;
        let limited = inner.options.retention.max_bytes.is_some() && !deletion;
        // Compact while there is still room beside the files for a compacted segment as
        // large as the last one: its output is written before the files it replaces go.
        let reserve = inner.log.last_compacted_bytes();
        if limited
            && inner.log.needs_new_segment(record.body_len())
            && inner
                .log
                .check_room(inner.options.segment_size_bytes + reserve)
                .is_err()
        {
            self.compact_for_room()?;
        }
        let mut appended = inner.log.append(record, deletion, |a| on_written(a));
        if limited && matches!(appended, Err(Error::StoreFull { .. })) {
            // Another saver took the room made above: one more compaction, then the verdict.
            self.compact_for_room()?;
            appended = inner.log.append(record, deletion, |a| on_written(a));
        }
        self.after_append(&appended);
        appended
    }

    fn compact_for_room(&self) -> Result<()> {
        self.inner.compact_unattended().map(|_| ())
    }

    /// After a record was appended: notes a refused save for health, and wakes the
    /// compactor when the log moved to a new segment and a threshold is crossed.
    fn after_append(&self, appended: &Result<Appended>) {
        use std::sync::atomic::Ordering;
        let inner = &self.inner;
        let appended = match appended {
            Err(Error::StoreFull { .. }) => {
                inner.full.store(true, Ordering::Relaxed);
                return;
            }
            Err(_) => return,
            Ok(appended) => appended,
        };
        if !appended.first_in_segment {
            return;
        }
        inner.full.store(false, Ordering::Relaxed);
        let Some(compactor) = &self.compactor else {
            return;
        };
        let auto = inner.options.auto_compact;
        let storage_bytes = inner.log.storage_bytes() + inner.log.last_compacted_bytes();
        let over_half_limit = inner
            .options
            .retention
            .max_bytes
            .is_some_and(|max| storage_bytes.saturating_mul(2) >= max);
        if inner.log.segment_count() >= auto.segments
            || self.index().dead_bytes() >= auto.dead_bytes
            || over_half_limit
        {
            compactor.request();
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.inner.read_only {
            Err(Error::ReadOnly)
        } else {
            Ok(())
        }
    }

    fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.inner.index()
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // The compactor holds only a weak reference; stop it before the store goes.
        if let Some(compactor) = self.compactor.take() {
            compactor.stop();
        }
    }
}

impl Inner {
    fn index(&self) -> RwLockReadGuard<'_, Index> {
        self.index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        self.index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Locks a mutex, treating poisoning (a panic in another thread) as a bug.
fn lock_mutex<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(flusher) = self.flusher.take() {
            flusher.stop();
        }
        if !self.read_only
            && let Err(error) = self.log.close()
        {
            tracing::error!(%error, dir = %self.dir.display(), "cairn: final sync at close failed");
        }
    }
}

/// Opens a store for reading, looking again when what it finds may be a writer's work in
/// progress rather than damage: `open` is called again (up to 8 more times) while it fails
/// with damage or with a vanished segment file, or its outcome is not `settled`.
///
/// A reader may list the directory just before a writer's compaction removes the segments it
/// replaced: listing again sees the compacted segment instead. A reader can also catch a writer
/// in another process mid-record: damage in a scan of a live store may be a record in flight,
/// so it pauses (a little longer each time) and looks again before believing it.
fn look_again<T>(mut open: impl FnMut() -> Result<T>, settled: impl Fn(&T) -> bool) -> Result<T> {
    const MAX_RETRIES: u64 = 8;
    let pause = |attempts: u64| std::thread::sleep(std::time::Duration::from_millis(2 * attempts));
    let mut attempts = 0;
    loop {
        match open() {
            Ok(opened) if settled(&opened) || attempts >= MAX_RETRIES => return Ok(opened),
            Ok(_) => {
                attempts += 1;
                pause(attempts);
            }
            Err(error) if attempts < MAX_RETRIES && vanished(&error) => attempts += 1,
            Err(error) if attempts < MAX_RETRIES && error.is_corruption() => {
                attempts += 1;
                pause(attempts);
            }
            Err(error) => return Err(error),
        }
    }
}

/// A segment file listed a moment ago is gone: a writer's compaction removed it.
fn vanished(error: &Error) -> bool {
    matches!(error, Error::Io { kind: IoKind::OpenSegment, source, .. }
        if source.kind() == std::io::ErrorKind::NotFound)
}

/// What [`Store::verify`] checks beyond recovery's replay: a checkpoint's data decompresses and
/// is JSON (the replay reads only its envelope). Job events and snapshots the replay parsed
/// whole already.
fn check_checkpoint_data(record: &RecordRef<'_>) -> Result<(), RecordError> {
    let Contents::Checkpoint(checkpoint) = record.contents() else {
        return Ok(());
    };
    let json = checkpoint.decode()?.data_json;
    serde_json::from_slice::<serde::de::IgnoredAny>(&json).map_err(|source| {
        RecordError::InvalidJson {
            seq: record.seq(),
            source,
        }
    })?;
    Ok(())
}

fn log_report(dir: &Path, report: &RecoveryReport) {
    let dir = dir.display();
    let duration_us = u64::try_from(report.duration.as_micros()).unwrap_or(u64::MAX);
    let (segments, records) = (report.segments_scanned, report.records_scanned);
    // A torn tail is what a crash leaves: expected, so not a warning.
    let only_torn_tail = report
        .findings
        .iter()
        .all(|f| f.kind == crate::FindingKind::TornTail);
    if report.is_clean() {
        tracing::info!(%dir, segments, records, duration_us, "cairn: store opened");
    } else if only_torn_tail {
        tracing::info!(%dir, segments, records, duration_us, bytes_discarded = report.bytes_discarded,
            "cairn: store opened after a crash; the torn tail of the log was cut off");
    } else {
        tracing::warn!(%dir, segments, records, duration_us, bytes_discarded = report.bytes_discarded,
            findings = report.findings.len(), "cairn: store opened with damage");
    }
    for finding in &report.findings {
        let (kind, segment) = (finding.kind, finding.segment.display());
        let (offset, len_bytes, detail) = (finding.offset, finding.len_bytes, &finding.detail);
        if only_torn_tail {
            tracing::info!(?kind, %segment, offset, len_bytes, %detail, "cairn: recovery finding");
        } else {
            tracing::warn!(?kind, %segment, offset, len_bytes, %detail, "cairn: recovery finding");
        }
    }
    for note in &report.notes {
        tracing::info!(%dir, %note, "cairn: recovery note");
    }
}
