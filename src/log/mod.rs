//! The segment log: recovery at open, appends with group commit, reads.
//!
//! Segments are preallocated files mapped into memory for reading. The writer writes each record
//! (`pwrite`, never through the map) at the end of the newest segment; durability comes from
//! syncing the written range. A full segment is sealed with a seal record after its successor
//! exists and its records are synced, so every segment but the newest is durable and complete,
//! and its seal says so.
//!
//! Every sync of the log goes through [`Log::sync_segment`]: syncs never overlap, the first
//! failure poisons the log, and once poisoned the log never counts anything as durable again
//! (after a failed fsync, Linux may have dropped the dirty pages and reports the error once; a
//! later sync "succeeds" without writing them). After a successful sync the log writes a mark
//! record, so that the records the sync covered are proven durable on disk too.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

mod compact;
mod record;
mod recovery;
mod report;
mod scan;
mod segment;
mod shape;
mod writer;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

/// What records hold, as the store builds and reads them; their encoding is `format`'s.
pub(crate) use crate::format::{BodyError, CheckpointBody, EventBody, MAX_DECOMPRESSED_BYTES};
/// The disk a log lives on: the store chooses it (the real file system, or a simulated or
/// faulty one in tests) and hands it to the log, which alone uses it.
pub(crate) use crate::storage::{FsStorage, Storage};
pub(crate) use compact::Kept;
pub(crate) use record::{
    CheckpointRecord, Contents, EventRecord, NewRecord, RecordRef, SnapshotRecord,
};
pub use report::{Finding, FindingKind, RecoveryReport};
pub(crate) use scan::Visit;
pub(crate) use writer::Appended;

use crate::error::{Error, Result};
use crate::format::FORMAT_VERSION;
use crate::options::RecoveryMode;
use crate::storage::DirLock;

pub(crate) use segment::Segment;
pub(crate) use shape::{SHAPE_FILE, Shape, ShapeSource};
use writer::Writer;

/// The file that marks a directory as a cairn store: `cairn store\nformat_version <n>\n`,
/// where `<n>` is the newest segment format a writer of the store has used. This build writes
/// [`FORMAT_VERSION`], for a new store and over an older store's marker once it has opened that
/// store for writing; a store whose marker names a newer format is refused.
pub(crate) const MARKER_FILE: &str = "CAIRN";
/// The temporary name older builds wrote the marker under before renaming it into place.
pub(crate) const MARKER_TMP_FILE: &str = "CAIRN.tmp";

/// Whether `name` is a leftover of writing the marker: [`MARKER_TMP_FILE`], or the unique
/// `CAIRN.<pid>-<n>.tmp` of this build.
pub(crate) fn is_marker_tmp(name: &str) -> bool {
    name == MARKER_TMP_FILE || crate::storage::is_small_file_tmp(name, MARKER_FILE)
}
const MARKER_PREFIX: &str = "cairn store\nformat_version ";

/// Called with every valid record of the segments read, in log order.
pub(crate) type RecordVisitor<'a> = dyn FnMut(&RecordRef<'_>) -> Result<()> + 'a;

/// Group-commit state, shared by savers waiting for durability.
#[derive(Debug)]
struct SyncState {
    /// Every record with a sequence number up to this one is durable. It never moves once
    /// the log is poisoned.
    synced_seq: u64,
    /// A saver is syncing on behalf of everyone (the group-commit leader).
    syncing: bool,
    /// Set by the first failed write or sync; the log then refuses to write.
    poisoned: Option<String>,
}

impl SyncState {
    fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            Some(cause) => Err(Error::Poisoned {
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// The log of one store directory.
#[derive(Debug)]
pub(crate) struct Log {
    dir: PathBuf,
    storage: Arc<dyn Storage>,
    segments: RwLock<BTreeMap<u64, Arc<Segment>>>,
    /// `None` for a read-only log.
    writer: Option<Mutex<Writer>>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// Held for every sync of a segment, so that syncs never overlap: a sync that starts
    /// after another one failed sees the poison before it could count anything as durable.
    /// Lock order: the writer lock (if taken) before this one, never the other way round.
    sync_gate: Mutex<()>,
    /// The cap on the bytes of all segment files, checked before a new segment is created.
    size_limit: Option<u64>,
    /// Bytes of files a compaction has on disk besides the segments in `segments`: the
    /// compacted file while it is written, then the replaced files until they are removed.
    /// They count against the size limit.
    compaction_bytes: std::sync::atomic::AtomicU64,
    /// A writer's lock on the store directory (`LOCK`), released when the log is dropped.
    _dir_lock: Option<DirLock>,
}

/// Counts every record up to `seq` as durable, unless the log is poisoned: a failure of
/// another path (a write) may have poisoned it meanwhile, and then nothing counts as durable
/// any more.
fn publish_durable(sync: &mut SyncState, seq: u64) {
    if sync.poisoned.is_none() {
        sync.synced_seq = sync.synced_seq.max(seq);
    }
}

/// The group-commit leader's duty: whatever happens to its sync, even a panic, the leader flag
/// is cleared and the waiters are woken, so none of them waits for a sync no one runs.
struct Leading<'a>(&'a Log);

impl Leading<'_> {
    /// The leader's sync and its mark succeeded: counts every record up to `seq` as durable
    /// (unless the log was poisoned meanwhile), gives up the leader role and wakes the
    /// waiters, all in one critical section and with one wakeup per batch: the waiters find
    /// both changes at once instead of waking twice, once for each.
    fn finish(self, seq: u64) {
        let log = self.0;
        std::mem::forget(self);
        let mut sync = lock(&log.sync);
        publish_durable(&mut sync, seq);
        sync.syncing = false;
        drop(sync);
        log.synced.notify_all();
    }
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        lock(&self.0.sync).syncing = false;
        self.0.synced.notify_all();
    }
}

/// Locks a mutex, treating poisoning (a panic in another thread) as a bug.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Log {
    /// Checks (or, for a writer, creates) the store directory and its marker file.
    ///
    /// Returns the store's format version as the marker says (this build's for a new store).
    pub fn prepare_dir(storage: &dyn Storage, dir: &Path, writable: bool) -> Result<u16> {
        let not_a_store = |reason: &str| Error::NotAStore {
            path: dir.to_path_buf(),
            reason: reason.into(),
        };
        let entries = match storage.read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound && writable => {
                create_dir_durably(storage, dir)?;
                Vec::new()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(not_a_store("the directory does not exist"));
            }
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                return Err(not_a_store("it is not a directory"));
            }
            Err(e) => return Err(Error::io("list store directory", dir, e)),
        };
        let marker = dir.join(MARKER_FILE);
        // A marker's temporary file alone is a store whose creation was interrupted.
        let empty = entries
            .iter()
            .all(|entry| is_marker_tmp(&entry.name) || shape::is_shape_tmp(&entry.name));
        match storage
            .read_small_file(&marker)
            .map_err(|e| Error::io("read marker file", &marker, e))?
        {
            Some(bytes) => check_marker(&marker, &bytes),
            None if empty && writable => {
                Log::write_marker(storage, dir)?;
                Ok(FORMAT_VERSION)
            }
            None if empty => Err(not_a_store("the directory is empty")),
            None => Err(not_a_store(
                "the directory is not empty and has no CAIRN marker file; refusing to touch it",
            )),
        }
    }

    /// Writes the marker of a store of this build's format version, for a new store.
    fn write_marker(storage: &dyn Storage, dir: &Path) -> Result<()> {
        let marker = dir.join(MARKER_FILE);
        storage
            .write_small_file(
                &marker,
                format!("{MARKER_PREFIX}{FORMAT_VERSION}\n").as_bytes(),
            )
            .map_err(|e| Error::io("write marker file", &marker, e))
    }

    /// Rewrites the marker of a store whose marker says `store_version` (what
    /// [`Log::prepare_dir`] returned) if that is older than this build's format. A writer calls
    /// it once recovery has accepted the store: this build writes segments that older readers
    /// cannot read, and the marker says so.
    pub fn upgrade_marker(storage: &dyn Storage, dir: &Path, store_version: u16) -> Result<()> {
        if store_version < FORMAT_VERSION {
            Log::write_marker(storage, dir)?;
        }
        Ok(())
    }

    /// Records the store's shape (a writer, once the store is open).
    pub fn record_shape(&self, shape: Shape) -> Result<()> {
        shape.write(self.storage.as_ref(), &self.dir)
    }

    /// Opens the log: for a writer (`writer_segment_size` given) takes the store's writer lock,
    /// then recovery, handing every valid record to `visit`, then (for a writer) positioning
    /// after the last valid record. An error from `visit` marks its record as damaged.
    pub fn open<E: std::fmt::Display>(
        storage: Arc<dyn Storage>,
        dir: &Path,
        mode: RecoveryMode,
        writer_segment_size: Option<u64>,
        size_limit: Option<u64>,
        visit: &mut Visit<'_, E>,
    ) -> Result<(Log, RecoveryReport)> {
        let writable = writer_segment_size.is_some();
        // One writing process per store, for as long as the log lives.
        let dir_lock = if writable {
            storage.lock_dir(dir)?
        } else {
            None
        };
        let recovered = recovery::recover(storage.as_ref(), dir, mode, writable, visit)?;
        let mut segments: BTreeMap<u64, Arc<Segment>> = recovered
            .segments
            .iter()
            .map(|s| (s.id, s.clone()))
            .collect();
        let last_seq = recovered.next_seq - 1;
        let writer = match writer_segment_size {
            None => None,
            Some(segment_size) => {
                let writer = Writer::resume(
                    storage.as_ref(),
                    dir,
                    recovered.tail,
                    recovered.next_seq,
                    recovered.proven_seq,
                    recovered.max_segment_id,
                    segment_size,
                )?;
                segments.insert(writer.segment_id(), writer.segment());
                Some(Mutex::new(writer))
            }
        };
        let log = Log {
            dir: dir.to_path_buf(),
            storage,
            segments: RwLock::new(segments),
            writer,
            sync: Mutex::new(SyncState {
                synced_seq: last_seq,
                syncing: false,
                poisoned: None,
            }),
            synced: Condvar::new(),
            sync_gate: Mutex::new(()),
            size_limit,
            compaction_bytes: std::sync::atomic::AtomicU64::new(0),
            _dir_lock: dir_lock,
        };
        log.start_writing(last_seq)?;
        Ok((log, recovered.report))
    }

    /// After recovery, for a writer: records of this build's format never go into an older
    /// segment, and what recovery kept is proven durable on disk.
    fn start_writing(&self, last_seq: u64) -> Result<()> {
        let Some(writer) = self.writer.as_ref() else {
            return Ok(());
        };
        let mut writer = lock(writer);
        // Seal an older-format tail (recovery synced everything in it) and continue in a new
        // segment.
        if writer.segment().header.version < FORMAT_VERSION {
            self.roll_over(&mut writer)?;
        }
        // Recovery made every record it kept durable: prove it on disk, so that damage to
        // them is never taken for a torn write, even if this process dies at once.
        self.write_mark(&mut writer, last_seq)
    }

    /// Appends one record. `on_written` runs under the writer lock once the record is in the
    /// log (not yet durable), so index updates happen in sequence order.
    ///
    /// `past_limit` lets the record take a new segment even when the size limit says no: for
    /// a job deletion, which is how space is freed.
    pub fn append(
        &self,
        record: &NewRecord,
        past_limit: bool,
        on_written: impl FnOnce(&Appended),
    ) -> Result<Appended> {
        let body = record.body.as_slice();
        let writer = self.writer.as_ref().ok_or(Error::ReadOnly)?;
        let mut writer = lock(writer);
        lock(&self.sync).check_poisoned()?;
        if !writer.fits_a_new_segment(body.len()) {
            return Err(Error::invalid(
                "record",
                format!(
                    "a body of {} bytes does not fit a segment of {} bytes",
                    body.len(),
                    writer.segment_size()
                ),
            ));
        }
        if !writer.fits(body.len()) {
            if !past_limit {
                self.check_room(writer.segment_size())?;
            }
            self.roll_over(&mut writer)?;
        }
        let durable_seq = self.durable_seq();
        let appended = self.poison_on_err(writer.append(record.kind, body, durable_seq))?;
        on_written(&appended);
        Ok(appended)
    }

    /// Seals the writer's segment and continues in a new one, if it holds any record and the
    /// size limit leaves room: so that a compaction can take every record written so far.
    pub fn seal_current(&self) -> Result<()> {
        let writer = self.writer.as_ref().ok_or(Error::ReadOnly)?;
        let mut writer = lock(writer);
        lock(&self.sync).check_poisoned()?;
        if !writer.holds_records() || self.check_room(writer.segment_size()).is_err() {
            return Ok(());
        }
        self.roll_over(&mut writer)
    }

    /// Seals the current segment and switches to a new one (the steps are on
    /// [`Writer::create_next`]); afterwards everything written is durable. The caller checked
    /// the size limit.
    fn roll_over(&self, writer: &mut Writer) -> Result<()> {
        let next = writer.create_next(self.storage.as_ref(), &self.dir)?;
        let segment = writer.segment();
        // Nothing is published before the seal, the proof of this sync, is written and synced:
        // a saver acknowledged in between could lose its proof in a crash.
        self.sync_segment(&segment, writer.offset(), None)?;
        let seal_seq = self.poison_on_err(writer.write_seal())?;
        self.sync_segment(&segment, writer.offset(), Some(seal_seq))?;
        writer.switch_to(next);
        let segment = writer.segment();
        self.segments_write().insert(segment.id, segment);
        Ok(())
    }

    /// Syncs `segment` up to `end`. The only path by which anything in the log becomes
    /// durable: serialized by the sync gate, refused once the log is poisoned, and poisoning
    /// it on failure. With `publish`, records up to that number count as durable at once;
    /// without, the caller publishes once the proof of the sync is written (a mark, a seal).
    fn sync_segment(&self, segment: &Segment, end: u64, publish: Option<u64>) -> Result<()> {
        let _gate = lock(&self.sync_gate);
        lock(&self.sync).check_poisoned()?;
        let result = segment.sync_to(end);
        let mut sync = lock(&self.sync);
        match result {
            Ok(()) => {
                if let Some(seq) = publish {
                    publish_durable(&mut sync, seq);
                    drop(sync);
                    self.synced.notify_all();
                }
                // Without `publish` nothing a waiter looks at changed: the caller publishes
                // and wakes them once the proof of this sync is written.
                Ok(())
            }
            Err(e) => {
                let error = segment::sync_error("sync segment", &segment.path, e);
                let cause = error.to_string();
                tracing::error!(%cause, "cairn: sync failed, store refuses further writes");
                sync.poisoned.get_or_insert(cause.clone());
                // A full disk is told as such (the store is poisoned all the same); any other
                // failure as the poison it causes, whose message says what to do.
                drop(sync);
                self.synced.notify_all();
                Err(match error {
                    Error::DiskFull { .. } => error,
                    _ => Error::Poisoned { cause },
                })
            }
        }
    }

    /// Every record up to this sequence number is durable.
    pub fn durable_seq(&self) -> u64 {
        lock(&self.sync).synced_seq
    }

    /// Writes a mark proving records up to `durable_seq` durable, if the log does not prove
    /// that already. The caller saw a sync covering them succeed.
    fn write_mark(&self, writer: &mut Writer, durable_seq: u64) -> Result<()> {
        if lock(&self.sync).poisoned.is_some() {
            return Ok(());
        }
        self.poison_on_err(writer.append_mark(durable_seq))?;
        Ok(())
    }

    /// Refuses a new segment that would take the store past its size limit.
    pub fn check_room(&self, segment_bytes: u64) -> Result<()> {
        let Some(limit_bytes) = self.size_limit else {
            return Ok(());
        };
        let used_bytes = self.storage_bytes()
            + self
                .compaction_bytes
                .load(std::sync::atomic::Ordering::Acquire);
        if used_bytes + segment_bytes > limit_bytes {
            return Err(Error::StoreFull {
                dir: self.dir.clone(),
                used_bytes,
                segment_bytes,
                limit_bytes,
            });
        }
        Ok(())
    }

    fn segments_write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Arc<Segment>>> {
        self.segments
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn segments_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Arc<Segment>>> {
        self.segments
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Poisons the log when a write or sync failed: what the failed call left in the page
    /// cache is unknown, so nothing more may be acknowledged.
    fn poison_on_err<T>(&self, result: Result<T, writer::WriteFailure>) -> Result<T> {
        result.map_err(|failure| match failure {
            writer::WriteFailure::Clean(error) => error,
            writer::WriteFailure::Poisoning(error) => {
                let cause = error.to_string();
                tracing::error!(%cause, "cairn: write or sync failed, store refuses further writes");
                let mut sync = lock(&self.sync);
                sync.poisoned.get_or_insert(cause);
                self.synced.notify_all();
                error
            }
        })
    }

    /// Returns once every record up to `seq` is durable. Concurrent callers share syncs: one
    /// of them (the leader) syncs everything written so far while the others wait (group
    /// commit). A poisoned log acknowledges nothing, whatever was synced before.
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        let Some(writer) = self.writer.as_ref() else {
            return Ok(());
        };
        let mut sync = lock(&self.sync);
        loop {
            sync.check_poisoned()?;
            if sync.synced_seq >= seq {
                return Ok(());
            }
            if sync.syncing {
                sync = self
                    .synced
                    .wait(sync)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            sync.syncing = true;
            drop(sync);
            let leading = Leading(self);
            let (segment, end, last_seq) = {
                let writer = lock(writer);
                (writer.segment(), writer.offset(), writer.last_seq())
            };
            self.sync_segment(&segment, end, None)?;
            // The savers this sync covered are acknowledged only once the mark proving it is
            // written (in the page cache, so it survives a crash of the process). Lock order:
            // the gate is released; the writer lock comes before the sync state.
            let mut writer = lock(writer);
            let covered = last_seq.max(self.durable_seq());
            self.write_mark(&mut writer, covered)?;
            leading.finish(covered);
            drop(writer);
            sync = lock(&self.sync);
        }
    }

    /// Makes everything written so far durable.
    pub fn sync_all(&self) -> Result<()> {
        let Some(writer) = self.writer.as_ref() else {
            return Ok(());
        };
        let last = lock(writer).last_seq();
        self.wait_durable(last)
    }

    /// Makes everything written so far durable, and the mark that proves it too: after a
    /// clean close, damage anywhere in the log is reported as corruption, never taken for a
    /// torn write.
    pub fn close(&self) -> Result<()> {
        let Some(writer) = self.writer.as_ref() else {
            return Ok(());
        };
        self.sync_all()?;
        let mut writer = lock(writer);
        if !writer.proves_all() {
            // The segment had no room left for the mark: seal it, which proves it whole.
            self.roll_over(&mut writer)?;
        }
        self.sync_segment(&writer.segment(), writer.offset(), Some(writer.last_seq()))
    }

    /// A corruption error at a record of this log.
    pub fn corrupt(&self, segment_id: u64, offset: u64, reason: String) -> Error {
        Error::Corrupt {
            segment: self.dir.join(segment::segment_file_name(segment_id)),
            offset,
            reason,
        }
    }

    /// Reads and checks the record at a known location.
    pub fn read_at<T>(
        &self,
        segment_id: u64,
        offset: u64,
        f: impl FnOnce(&RecordRef<'_>) -> Result<T>,
    ) -> Result<T> {
        let segment = self
            .segments_read()
            .get(&segment_id)
            .cloned()
            .ok_or_else(|| self.corrupt(segment_id, offset, "segment no longer exists".into()))?;
        let (header, body) = segment.read_record(offset)?;
        f(&segment.record_ref(offset, header, body))
    }

    /// Calls `f` for every valid record in log order, stepping over what recovery skipped. A
    /// record damaged since the store was opened is an error, never silently left out.
    pub fn for_each_record(&self, f: &mut RecordVisitor<'_>) -> Result<()> {
        let segments: Vec<Arc<Segment>> = self.segments_read().values().cloned().collect();
        Log::for_each_record_in(&segments, f)
    }

    /// Segments in the log, with their file lengths.
    pub fn segment_count(&self) -> usize {
        self.segments_read().len()
    }

    /// Bytes of disk the segment files take (their preallocated lengths).
    pub fn storage_bytes(&self) -> u64 {
        self.segments_read().values().map(|s| s.file.len()).sum()
    }

    /// Why the log refuses writes, if it does.
    pub fn poisoned(&self) -> Option<String> {
        lock(&self.sync).poisoned.clone()
    }

    /// The sequence number of the last record written (0 when none).
    pub fn last_seq(&self) -> u64 {
        match &self.writer {
            Some(writer) => lock(writer).last_seq(),
            None => lock(&self.sync).synced_seq,
        }
    }
}

/// Creates `dir` and any missing parents, and syncs the parent of each directory created, so
/// that the new directories survive a power loss too.
fn create_dir_durably(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let parent_of = |path: &Path| -> PathBuf {
        match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        }
    };
    let mut missing = vec![dir.to_path_buf()];
    loop {
        let parent = parent_of(missing.last().map_or(dir, PathBuf::as_path));
        let absent = storage
            .read_dir(&parent)
            .is_err_and(|e| e.kind() == io::ErrorKind::NotFound);
        if !absent || missing.contains(&parent) || missing.len() > 64 {
            break;
        }
        missing.push(parent);
    }
    storage
        .create_dir_all(dir)
        .map_err(|e| Error::io("create store directory", dir, e))?;
    // Parents first, each entry made durable in the directory that holds it.
    for created in missing.iter().rev() {
        let parent = parent_of(created);
        storage
            .sync_dir(&parent)
            .map_err(|e| Error::io("sync parent directory", &parent, e))?;
    }
    Ok(())
}

/// Checks the marker file and returns the store's format version.
fn check_marker(path: &Path, bytes: &[u8]) -> Result<u16> {
    let text = std::str::from_utf8(bytes).unwrap_or_default();
    let version = text
        .strip_prefix(MARKER_PREFIX)
        .and_then(|rest| rest.trim_end().parse::<u16>().ok())
        .ok_or_else(|| Error::NotAStore {
            path: path.parent().unwrap_or(path).to_path_buf(),
            reason: format!("{} is not a cairn marker file", path.display()),
        })?;
    if version > FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(version)
}
