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
mod visibility;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::{RecordKind, decode_checkpoint_body, decode_event_body};
use crate::job::{JobStatus, JobType};
use crate::log::{Log, RecoveryReport};
use crate::options::{Durability, Options, RecoveryMode};
use crate::storage::{DirLock, FsStorage, Storage};

pub use compact::{CompactionPhase, CompactionProgress, CompactionReport, StoreStats};
use compactor::Compactor;
use flusher::Flusher;
use index::Index;
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
    _lock: Option<DirLock>,
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
        options: Options,
        read_only: bool,
    ) -> Result<Store> {
        options.validate()?;
        let store_version = Log::prepare_dir(storage.as_ref(), dir, !read_only)?;
        let lock = if read_only {
            None
        } else {
            storage.lock_dir(dir)?
        };
        let segment_size = (!read_only).then_some(options.segment_size_bytes);
        let open_log = || {
            let mut index = Index::new(options.retention.keep_last);
            let (log, report) = Log::open(
                storage.clone(),
                dir,
                options.recovery,
                segment_size,
                options.retention.max_bytes,
                &mut |record| index.replay(record),
            )?;
            Ok((log, report, index))
        };
        let (log, report, index) = if read_only {
            look_again(open_log, |_| true)?
        } else {
            open_log()?
        };
        if !read_only && store_version < crate::format::FORMAT_VERSION {
            Log::write_marker(storage.as_ref(), dir)?;
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
            _lock: lock,
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
                index.replay(record)?;
                let json = match record.header.kind {
                    RecordKind::Checkpoint => {
                        decode_checkpoint_body(record.version, record.body)?.data_json
                    }
                    RecordKind::JobEvent => decode_event_body(record.body)?.event_json,
                    RecordKind::Snapshot | RecordKind::SnapshotPart => record.body.to_vec(),
                    RecordKind::Seal | RecordKind::Mark => return Ok(()),
                };
                serde_json::from_slice::<serde::de::IgnoredAny>(&json)
                    .map_err(|e| format!("record {} holds invalid JSON: {e}", record.header.seq))?;
                Ok(())
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

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.inner.options
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
        kind: RecordKind,
        body: &[u8],
        deletion: bool,
        on_written: &dyn Fn(&crate::log::Appended),
    ) -> Result<crate::log::Appended> {
        let inner = &self.inner;
        let limited = inner.options.retention.max_bytes.is_some() && !deletion;
        // Compact while there is still room beside the files for a compacted segment as
        // large as the last one: its output is written before the files it replaces go.
        let reserve = inner.log.last_compacted_bytes();
        if limited
            && inner.log.needs_new_segment(body.len())
            && inner
                .log
                .check_room(inner.options.segment_size_bytes + reserve)
                .is_err()
        {
            self.compact_for_room()?;
        }
        let mut appended = inner.log.append(kind, body, deletion, |a| on_written(a));
        if limited && matches!(appended, Err(Error::StoreFull { .. })) {
            // Another saver took the room made above: one more compaction, then the verdict.
            self.compact_for_room()?;
            appended = inner.log.append(kind, body, deletion, |a| on_written(a));
        }
        self.after_append(&appended);
        appended
    }

    fn compact_for_room(&self) -> Result<()> {
        self.inner.compact_unattended().map(|_| ())
    }

    /// After a record was appended: notes a refused save for health, and wakes the
    /// compactor when the log moved to a new segment and a threshold is crossed.
    fn after_append(&self, appended: &Result<crate::log::Appended>) {
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
    matches!(error, Error::Io { op: "open segment", source, .. }
        if source.kind() == std::io::ErrorKind::NotFound)
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::storage::faulty::FaultyStorage;

    fn faulty_store(dir: &Path, options: Options) -> (Store, Arc<crate::storage::faulty::Faults>) {
        let storage = FaultyStorage::default();
        let faults = storage.faults.clone();
        (
            Store::open_on(Arc::new(storage), dir, options, false).unwrap(),
            faults,
        )
    }

    #[test]
    fn a_failed_sync_poisons_the_store_and_loses_nothing_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let (store, faults) = faulty_store(dir.path(), Options::default());
        for i in 0..10 {
            store.save("job", "p", &i).unwrap();
        }
        faults.fail_sync.store(true, Ordering::SeqCst);
        let err = store.save("job", "p", &10).expect_err("sync fails");
        assert!(matches!(err, Error::Poisoned { .. }), "{err}");
        assert!(err.to_string().contains("close and re-open"), "{err}");
        // The failure is not retried blindly, even once the disk would work again.
        faults.fail_sync.store(false, Ordering::SeqCst);
        assert!(matches!(
            store.save("job", "p", &11),
            Err(Error::Poisoned { .. })
        ));
        assert!(matches!(store.flush(), Err(Error::Poisoned { .. })));
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let history = store.history("job").unwrap();
        let values: Vec<_> = history.iter().map(|c| c.data.as_u64().unwrap()).collect();
        assert_eq!(&values[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
        assert!(
            values.len() <= 11,
            "only the failed save may be there besides: {values:?}"
        );
    }

    #[test]
    fn a_full_disk_at_rollover_is_a_clear_error_and_the_store_carries_on() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options::default().segment_size(64 * 1024);
        let (store, faults) = faulty_store(dir.path(), options.clone());
        let payload = "x".repeat(1000);
        let mut acknowledged = 0;
        faults.disk_full.store(true, Ordering::SeqCst);
        let err = loop {
            match store.save("job", "p", &payload) {
                Ok(_) => acknowledged += 1,
                Err(err) => break err,
            }
        };
        assert!(
            matches!(
                err,
                Error::DiskFull {
                    needed_bytes: 65536,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("free space and retry"), "{err}");
        assert_eq!(store.segment_count(), 1);
        faults.disk_full.store(false, Ordering::SeqCst);
        store
            .save("job", "p", &payload)
            .expect("works again once space is free");
        acknowledged += 1;
        assert_eq!(store.segment_count(), 2);
        drop(store);
        let store = Store::open_with(dir.path(), options).unwrap();
        assert!(store.recovery_report().is_clean());
        assert_eq!(store.history("job").unwrap().len(), acknowledged);
    }
}
