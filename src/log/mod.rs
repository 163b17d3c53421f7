//! The segment log: recovery at open, appends with group commit, reads.
//!
//! Segments are preallocated files mapped into memory. The writer copies each record into the
//! newest segment's mapping; durability comes from syncing the written range. A full segment
//! is sealed with a seal record after its successor exists, and fully synced, so every segment
//! but the newest is durable and complete.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

mod compact;
mod recovery;
mod report;
mod scan;
mod segment;
mod writer;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock};

pub(crate) use compact::Kept;
pub use report::{Finding, FindingKind, RecoveryReport};
pub(crate) use scan::Visit;
pub(crate) use writer::Appended;

use crate::error::{Error, Result};
use crate::format::{FORMAT_VERSION, RecordHeader, RecordKind};
use crate::options::RecoveryMode;
use crate::storage::Storage;

pub(crate) use segment::Segment;
use writer::Writer;

/// The file that marks a directory as a cairn store: `cairn store\nformat_version 2\n`.
pub(crate) const MARKER_FILE: &str = "CAIRN";
/// The temporary name the marker is written under before it is renamed into place.
pub(crate) const MARKER_TMP_FILE: &str = "CAIRN.tmp";
const MARKER_PREFIX: &str = "cairn store\nformat_version ";

/// Called with a record's segment id, offset, header and body.
pub(crate) type RecordVisitor<'a> = dyn FnMut(&RecordRef<'_>) -> Result<()> + 'a;

/// A valid record as readers see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordRef<'a> {
    pub segment_id: u64,
    pub offset: u64,
    /// The format version of the record's segment, which decides how its body decodes.
    pub version: u16,
    pub header: RecordHeader,
    pub body: &'a [u8],
}

/// Group-commit state, shared by savers waiting for durability.
#[derive(Debug)]
struct SyncState {
    /// Every record with a sequence number up to this one is durable.
    synced_seq: u64,
    /// A saver is syncing on behalf of everyone.
    syncing: bool,
    /// Set by the first failed write or sync; the log then refuses to write.
    poisoned: Option<String>,
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
    /// The cap on the bytes of all segment files, checked before a new segment is created.
    size_limit: Option<u64>,
    /// Bytes of files a compaction has on disk besides the segments in `segments`: the
    /// compacted file while it is written, then the replaced files until they are removed.
    /// They count against the size limit.
    compaction_bytes: std::sync::atomic::AtomicU64,
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
        let empty = entries.iter().all(|entry| entry.name == MARKER_TMP_FILE);
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

    /// Writes the marker of a store of this build's format version. A writer calls it for a
    /// new store, and once recovery has accepted an older store: this build writes segments
    /// that older readers cannot read, and the marker says so.
    pub fn write_marker(storage: &dyn Storage, dir: &Path) -> Result<()> {
        let marker = dir.join(MARKER_FILE);
        storage
            .write_small_file(
                &marker,
                format!("{MARKER_PREFIX}{FORMAT_VERSION}\n").as_bytes(),
            )
            .map_err(|e| Error::io("write marker file", &marker, e))
    }

    /// Opens the log: recovery, then (for a writer) positioning after the last valid record.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        mode: RecoveryMode,
        writer_segment_size: Option<u64>,
        size_limit: Option<u64>,
        visit: &mut Visit<'_>,
    ) -> Result<(Log, RecoveryReport)> {
        let writable = writer_segment_size.is_some();
        let recovered = recovery::recover(storage.as_ref(), dir, mode, writable, visit)?;
        let mut segments: BTreeMap<u64, Arc<Segment>> = recovered
            .segments
            .iter()
            .map(|s| (s.id, s.clone()))
            .collect();
        let mut last_seq = recovered.next_seq - 1;
        let writer = match writer_segment_size {
            None => None,
            Some(segment_size) => {
                let mut writer = Writer::resume(
                    storage.as_ref(),
                    dir,
                    recovered.tail,
                    recovered.next_seq,
                    recovered.max_segment_id,
                    segment_size,
                )?;
                if writer.segment().header.version < FORMAT_VERSION {
                    // Records of this build's format never go into an older segment: seal it
                    // (everything in it is synced) and continue in a new one.
                    last_seq = writer
                        .rollover(storage.as_ref(), dir, last_seq)
                        .map_err(writer::WriteFailure::into_error)?;
                }
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
            size_limit,
            compaction_bytes: std::sync::atomic::AtomicU64::new(0),
        };
        Ok((log, recovered.report))
    }

    /// Appends one record. `on_written` runs under the writer lock once the record is in the
    /// log (not yet durable), so index updates happen in sequence order.
    ///
    /// `past_limit` lets the record take a new segment even when the size limit says no: for
    /// a job deletion, which is how space is freed.
    pub fn append(
        &self,
        kind: RecordKind,
        body: &[u8],
        past_limit: bool,
        on_written: impl FnOnce(&Appended),
    ) -> Result<Appended> {
        let writer = self.writer.as_ref().ok_or(Error::ReadOnly)?;
        let mut writer = lock(writer);
        let mut durable_seq = {
            let sync = lock(&self.sync);
            if let Some(cause) = &sync.poisoned {
                return Err(Error::Poisoned {
                    cause: cause.clone(),
                });
            }
            sync.synced_seq
        };
        if !writer.fits(body.len()) {
            if !past_limit {
                self.check_room(writer.segment_size())?;
            }
            durable_seq = self.roll_over(&mut writer, durable_seq)?;
        }
        let appended = self.poison_on_err(writer.append(kind, body, durable_seq))?;
        on_written(&appended);
        Ok(appended)
    }

    /// Seals the writer's segment and continues in a new one, if it holds any record and the
    /// size limit leaves room: so that a compaction can take every record written so far.
    pub fn seal_current(&self) -> Result<()> {
        let writer = self.writer.as_ref().ok_or(Error::ReadOnly)?;
        let mut writer = lock(writer);
        let durable_seq = {
            let sync = lock(&self.sync);
            if let Some(cause) = &sync.poisoned {
                return Err(Error::Poisoned {
                    cause: cause.clone(),
                });
            }
            sync.synced_seq
        };
        let empty = writer.offset() == crate::format::SEGMENT_HEADER_LEN as u64;
        if empty || self.check_room(writer.segment_size()).is_err() {
            return Ok(());
        }
        self.roll_over(&mut writer, durable_seq).map(|_| ())
    }

    /// Seals the current segment and switches to a new one; returns the seal's number, up to
    /// which everything is durable. The caller checked the size limit.
    fn roll_over(&self, writer: &mut Writer, durable_seq: u64) -> Result<u64> {
        let sealed_seq =
            self.poison_on_err(writer.rollover(self.storage.as_ref(), &self.dir, durable_seq))?;
        self.mark_synced(sealed_seq);
        let segment = writer.segment();
        self.segments_write().insert(segment.id, segment);
        Ok(sealed_seq)
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

    fn mark_synced(&self, seq: u64) {
        let mut sync = lock(&self.sync);
        sync.synced_seq = sync.synced_seq.max(seq);
        self.synced.notify_all();
    }

    /// Returns once every record up to `seq` is durable. Concurrent callers share syncs: one
    /// of them syncs everything written so far while the others wait (group commit).
    pub fn wait_durable(&self, seq: u64) -> Result<()> {
        let Some(writer) = self.writer.as_ref() else {
            return Ok(());
        };
        let mut sync = lock(&self.sync);
        loop {
            if sync.synced_seq >= seq {
                return Ok(());
            }
            if let Some(cause) = &sync.poisoned {
                return Err(Error::Poisoned {
                    cause: cause.clone(),
                });
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
            let (segment, end, last_seq) = {
                let writer = lock(writer);
                (writer.segment(), writer.offset(), writer.last_seq())
            };
            let result = segment.sync_to(end);
            sync = lock(&self.sync);
            sync.syncing = false;
            match result {
                Ok(()) => sync.synced_seq = sync.synced_seq.max(last_seq),
                Err(e) => {
                    let cause = format!("sync of {} failed: {e}", segment.path.display());
                    tracing::error!(%cause, "cairn: store refuses further writes");
                    sync.poisoned.get_or_insert(cause);
                }
            }
            self.synced.notify_all();
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

    /// Every record with a sequence number up to this one is durable.
    pub fn durable_seq(&self) -> u64 {
        lock(&self.sync).synced_seq
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
