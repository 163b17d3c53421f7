//! [`Store`]: the handle users hold. It joins the log (durable records) and the in-memory
//! index (where each job's latest checkpoint is).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::format::{
    CheckpointBody, RecordHeader, RecordKind, decode_checkpoint_body, decode_event_body,
    encode_checkpoint_body,
};
use crate::log::{Log, RecordRef, RecoveryReport};
use crate::options::{Durability, Options, RecoveryMode};
use crate::storage::{DirLock, FsStorage, Storage};

/// Where a job's latest checkpoint is.
#[derive(Debug, Clone, Copy)]
struct JobEntry {
    seq: u64,
    segment_id: u64,
    offset: u64,
    checkpoints: u64,
}

type Index = HashMap<String, JobEntry>;

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
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    options: Options,
    log: Arc<Log>,
    index: RwLock<Index>,
    report: RecoveryReport,
    read_only: bool,
    flusher: Option<Flusher>,
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
        Store::open_inner(dir.as_ref(), options, false)
    }

    /// Opens an existing store read-only with default options. Works while another process
    /// writes; shows the state as of the open. Never changes a byte on disk.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open_read_only_with(dir, Options::default())
    }

    /// Opens an existing store read-only with the given recovery mode and limits.
    pub fn open_read_only_with(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Store::open_inner(dir.as_ref(), options, true)
    }

    fn open_inner(dir: &Path, options: Options, read_only: bool) -> Result<Store> {
        Store::open_on(Arc::new(FsStorage), dir, options, read_only)
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
        Log::prepare_dir(storage.as_ref(), dir, !read_only)?;
        let lock = if read_only {
            None
        } else {
            storage.lock_dir(dir)?
        };
        let mut index = Index::new();
        let segment_size = (!read_only).then_some(options.segment_size_bytes);
        let (log, report) = Log::open(
            storage,
            dir,
            options.recovery,
            segment_size,
            &mut |record| index_record(&mut index, record),
        )?;
        log_report(dir, &report);
        let log = Arc::new(log);
        let flusher = match (read_only, options.durability) {
            (false, Durability::Buffered { interval }) => {
                Some(Flusher::start(log.clone(), interval))
            }
            _ => None,
        };
        Ok(Store {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                options,
                log,
                index: RwLock::new(index),
                report,
                read_only,
                flusher,
                _lock: lock,
            }),
        })
    }

    /// Scans every record of the store in `dir` without changing anything and reports every
    /// problem found (a torn tail included). Clean when `report.is_clean()`.
    pub fn verify(dir: impl AsRef<Path>) -> Result<RecoveryReport> {
        let dir = dir.as_ref();
        let storage = FsStorage;
        Log::prepare_dir(&storage, dir, false)?;
        let mut index = Index::new();
        let (_, report) = Log::open(
            Arc::new(storage),
            dir,
            RecoveryMode::SkipCorrupted,
            None,
            &mut |record| {
                index_record(&mut index, record)?;
                let json = match record.header.kind {
                    RecordKind::Checkpoint => {
                        decode_checkpoint_body(record.version, record.body)?.data_json
                    }
                    RecordKind::JobEvent => decode_event_body(record.body)?.event_json,
                    RecordKind::Seal => return Ok(()),
                };
                serde_json::from_slice::<serde::de::IgnoredAny>(&json)
                    .map_err(|e| format!("record {} holds invalid JSON: {e}", record.header.seq))?;
                Ok(())
            },
        )?;
        Ok(report)
    }

    /// Saves a checkpoint of `job` in `phase` and returns its sequence number. With the default
    /// [`Durability::Sync`] the checkpoint is on stable storage when this returns.
    ///
    /// Fails without writing anything when the job name or phase breaks the limits, when the
    /// data does not serialize to JSON, or when it is larger than the payload limit.
    pub fn save<T: Serialize + ?Sized>(&self, job: &str, phase: &str, data: &T) -> Result<u64> {
        let inner = &self.inner;
        if inner.read_only {
            return Err(Error::ReadOnly);
        }
        check_name("job name", job, inner.options.max_job_name_bytes, false)?;
        check_name("phase", phase, inner.options.max_phase_bytes, true)?;
        let data_json = serde_json::to_vec(data).map_err(|source| Error::Serialize {
            job: job.into(),
            source,
        })?;
        let too_large = |size: usize, limit: u64| Error::PayloadTooLarge {
            job: job.into(),
            size_bytes: size as u64,
            limit_bytes: limit,
        };
        if data_json.len() as u64 > inner.options.max_payload_bytes {
            return Err(too_large(data_json.len(), inner.options.max_payload_bytes));
        }
        let data_len = data_json.len();
        let body = CheckpointBody {
            job: job.into(),
            phase: phase.into(),
            at_micros: Utc::now().timestamp_micros(),
            data_version: 1,
            trigger: 0,
            data_json,
        };
        let mut encoded = Vec::with_capacity(data_len + job.len() + phase.len() + 64);
        encode_checkpoint_body(&body, false, &mut encoded)
            .map_err(|reason| Error::invalid("checkpoint", reason))?;
        let max_body = inner.options.max_record_body_bytes();
        if encoded.len() as u64 > max_body {
            let overhead = (encoded.len() - data_len) as u64;
            return Err(too_large(data_len, max_body.saturating_sub(overhead)));
        }
        let appended = inner
            .log
            .append(RecordKind::Checkpoint, &encoded, |appended| {
                let mut index = inner
                    .index
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let entry = index.entry(body.job.clone()).or_insert(JobEntry {
                    seq: 0,
                    segment_id: 0,
                    offset: 0,
                    checkpoints: 0,
                });
                entry.seq = appended.seq;
                entry.segment_id = appended.segment_id;
                entry.offset = appended.offset;
                entry.checkpoints += 1;
            })?;
        if inner.options.durability == Durability::Sync {
            inner.log.wait_durable(appended.seq)?;
        }
        Ok(appended.seq)
    }

    /// The latest checkpoint of `job`, or `None` if it has none.
    pub fn latest(&self, job: &str) -> Result<Option<Checkpoint>> {
        let entry = self.index().get(job).copied();
        entry.map(|entry| self.read_checkpoint(&entry)).transpose()
    }

    fn read_checkpoint(&self, entry: &JobEntry) -> Result<Checkpoint> {
        let log = &self.inner.log;
        log.read_at(entry.segment_id, entry.offset, |record| {
            to_checkpoint(record)
                .map_err(|reason| log.corrupt(entry.segment_id, entry.offset, reason))
        })
    }

    /// Every checkpoint of `job` still in the log, oldest first.
    pub fn history(&self, job: &str) -> Result<Vec<Checkpoint>> {
        if !self.index().contains_key(job) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let log = &self.inner.log;
        log.for_each_record(&mut |record| {
            if record.header.kind != RecordKind::Checkpoint {
                return Ok(());
            }
            let corrupt = |reason| log.corrupt(record.segment_id, record.offset, reason);
            let body = decode_checkpoint_body(record.version, record.body)
                .map_err(|e| corrupt(format!("record {}: {e}", record.header.seq)))?;
            // Only this job's records are parsed further.
            if body.job == job {
                out.push(checkpoint_from(&record.header, body).map_err(corrupt)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Every job with at least one checkpoint, sorted by name.
    pub fn jobs(&self) -> Result<Vec<JobSummary>> {
        let mut entries: Vec<(String, JobEntry)> = self
            .index()
            .iter()
            .map(|(job, entry)| (job.clone(), *entry))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
            .into_iter()
            .map(|(job, entry)| {
                let latest = self.read_checkpoint(&entry)?;
                Ok(JobSummary {
                    job,
                    latest_seq: entry.seq,
                    phase: latest.phase,
                    at: latest.at,
                    checkpoints: entry.checkpoints,
                })
            })
            .collect()
    }

    /// Makes every save so far durable, whatever the durability mode.
    pub fn flush(&self) -> Result<()> {
        self.inner.log.sync_all()
    }

    /// Flushes and closes the store, reporting a failure of the final sync (which `drop`
    /// can only log).
    pub fn close(self) -> Result<()> {
        self.flush()
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

    fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.inner
            .index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(flusher) = self.flusher.take() {
            flusher.stop();
        }
        if !self.read_only
            && let Err(error) = self.log.sync_all()
        {
            tracing::error!(%error, dir = %self.dir.display(), "cairn: final sync at close failed");
        }
    }
}

/// Rebuilds the index from one record during recovery.
fn index_record(index: &mut Index, record: &RecordRef<'_>) -> Result<(), String> {
    if record.header.kind != RecordKind::Checkpoint {
        return Ok(());
    }
    let body = decode_checkpoint_body(record.version, record.body)?;
    let entry = index.entry(body.job).or_insert(JobEntry {
        seq: 0,
        segment_id: record.segment_id,
        offset: record.offset,
        checkpoints: 0,
    });
    entry.seq = record.header.seq;
    entry.segment_id = record.segment_id;
    entry.offset = record.offset;
    entry.checkpoints += 1;
    Ok(())
}

/// Decodes a checked checkpoint record; an error says what was malformed.
fn to_checkpoint(record: &RecordRef<'_>) -> Result<Checkpoint, String> {
    let body = decode_checkpoint_body(record.version, record.body)
        .map_err(|e| format!("record {}: {e}", record.header.seq))?;
    checkpoint_from(&record.header, body)
}

/// Builds a checkpoint from a decoded record body; an error says what was malformed.
fn checkpoint_from(header: &RecordHeader, body: CheckpointBody) -> Result<Checkpoint, String> {
    let seq = header.seq;
    let data = serde_json::from_slice(&body.data_json)
        .map_err(|e| format!("record {seq}: checkpoint data is not JSON: {e}"))?;
    let at = DateTime::from_timestamp_micros(body.at_micros)
        .ok_or_else(|| format!("record {seq}: timestamp out of range"))?;
    Ok(Checkpoint {
        job: body.job,
        seq: header.seq,
        phase: body.phase,
        at,
        version: body.data_version,
        data,
    })
}

/// Checks a job name or phase: within `limit` bytes, no control characters, and non-empty
/// unless `may_be_empty`.
fn check_name(what: &'static str, value: &str, limit: usize, may_be_empty: bool) -> Result<()> {
    if value.is_empty() && !may_be_empty {
        return Err(Error::invalid(what, "must not be empty"));
    }
    if value.len() > limit {
        return Err(Error::invalid(
            what,
            format!("{} bytes, over the limit of {limit}", value.len()),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(Error::invalid(
            what,
            format!("contains the control character {c:?}"),
        ));
    }
    Ok(())
}

fn log_report(dir: &Path, report: &RecoveryReport) {
    let dir = dir.display();
    if report.is_clean() {
        tracing::info!(%dir, segments = report.segments_scanned, records = report.records_scanned,
            duration_us = report.duration.as_micros() as u64, "cairn: store opened");
    } else {
        tracing::warn!(%dir, segments = report.segments_scanned, records = report.records_scanned,
            bytes_discarded = report.bytes_discarded, findings = report.findings.len(),
            duration_us = report.duration.as_micros() as u64, "cairn: store opened with damage");
        for finding in &report.findings {
            tracing::warn!(kind = ?finding.kind, segment = %finding.segment.display(),
                offset = finding.offset, len_bytes = finding.len_bytes, detail = %finding.detail,
                "cairn: recovery finding");
        }
    }
    for note in &report.notes {
        tracing::info!(%dir, %note, "cairn: recovery note");
    }
}

/// The background thread of [`Durability::Buffered`].
#[derive(Debug)]
struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: JoinHandle<()>,
}

impl Flusher {
    fn start(log: Arc<Log>, interval: Duration) -> Flusher {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let handle = std::thread::Builder::new()
            .name("cairn-flusher".into())
            .spawn(move || {
                let (lock, cvar) = &*signal;
                let mut stopped = lock
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                while !*stopped {
                    let (guard, _) = cvar
                        .wait_timeout(stopped, interval)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    stopped = guard;
                    if let Err(error) = log.sync_all() {
                        tracing::error!(%error, "cairn: background sync failed");
                        break;
                    }
                }
            })
            .expect("spawning the flusher thread");
        Flusher { stop, handle }
    }

    fn stop(self) {
        let (lock, cvar) = &*self.stop;
        *lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        cvar.notify_all();
        let _ = self.handle.join();
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
