//! One segment file: its header, its mapping, and reading a record at a known offset.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::format::{
    RecordHeader, SEGMENT_HEADER_LEN, SegmentHeader, check_record, decode_record_header,
    encode_segment_header,
};
use crate::storage::{SegmentFile, Storage};

/// File name suffix of segment files.
pub(crate) const SEGMENT_SUFFIX: &str = ".seg";
/// Suffix of a segment being created; such a file never holds acknowledged data.
pub(crate) const CREATING_SUFFIX: &str = ".seg.creating";
/// Suffix of a compacted segment being written; it becomes a segment only by its rename.
pub(crate) const COMPACTING_SUFFIX: &str = ".seg.compacting";
/// Suffix given to segments that point-in-time recovery set aside.
pub(crate) const DISCARDED_SUFFIX: &str = ".seg.discarded";
const ID_DIGITS: usize = 20;

/// The file name of segment `id`: twenty decimal digits, so names sort by id.
pub(crate) fn segment_file_name(id: u64) -> String {
    format!("{id:0ID_DIGITS$}{SEGMENT_SUFFIX}")
}

/// The name of the compacted segment `id` while it is written.
pub(crate) fn compacting_file_name(id: u64) -> String {
    format!("{id:0ID_DIGITS$}{COMPACTING_SUFFIX}")
}

/// Bytes of a new segment reserved on disk when it is created (a page); the writer reserves
/// more ahead of itself as it writes ([`GROWTH_STEP_BYTES`]). The rest of the file is a hole.
pub(crate) const INITIAL_RESERVED_BYTES: u64 = 4096;
/// How far ahead of its write position the writer reserves a segment's space at a time: a
/// record that would end past the reservation first extends it by at least this much.
pub(crate) const GROWTH_STEP_BYTES: u64 = 1 << 20;

/// Segment ids stay below this, so that the next id never overflows.
pub(crate) const MAX_SEGMENT_ID: u64 = 1 << 62;

/// The id in a segment file name, or `None` when the name is not one (ids from
/// [`MAX_SEGMENT_ID`] up are never written, so such names are not cairn's).
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != ID_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&id| id < MAX_SEGMENT_ID)
}

/// An open segment.
#[derive(Debug)]
pub(crate) struct Segment {
    pub id: u64,
    pub path: PathBuf,
    pub header: SegmentHeader,
    pub file: Box<dyn SegmentFile>,
    /// Bytes below this offset are known durable.
    synced_end: AtomicU64,
    /// Bytes below this offset hold records readers may see; writers only write past it.
    published_end: AtomicU64,
    /// Ranges `start..end` that skip-corrupted recovery stepped over; readers skip them too.
    pub skipped: Vec<(u64, u64)>,
}

impl Segment {
    pub fn new(path: PathBuf, header: SegmentHeader, file: Box<dyn SegmentFile>) -> Self {
        Segment {
            id: header.segment_id,
            path,
            header,
            file,
            synced_end: AtomicU64::new(0),
            published_end: AtomicU64::new(SEGMENT_HEADER_LEN as u64),
            skipped: Vec::new(),
        }
    }

    /// Creates segment `id` in `dir` durably: written under a temporary name, synced, renamed,
    /// and the directory synced, so a crash leaves either no segment or a complete one. On
    /// failure nothing is left behind (best effort) and the log is unchanged: no record was
    /// written to the new file, so the caller may simply try again later.
    pub fn create(
        storage: &dyn Storage,
        dir: &Path,
        id: u64,
        first_seq: u64,
        len: u64,
        salt: u32,
    ) -> Result<Segment> {
        let header = SegmentHeader {
            version: crate::format::FORMAT_VERSION,
            segment_id: id,
            first_seq,
            segment_len: len,
            created_at_micros: chrono::Utc::now().timestamp_micros(),
            salt,
            compacted: false,
        };
        let tmp = dir.join(format!("{id:0ID_DIGITS$}{CREATING_SUFFIX}"));
        Segment::create_with(
            storage,
            dir,
            &tmp,
            header,
            |_| Ok(SEGMENT_HEADER_LEN as u64),
        )
        .map_err(CreateFailure::into_error)
    }

    /// Writes a compacted segment: `fill` writes its records after the header and returns
    /// where they end; everything is synced, then the file is renamed over segment `id` and
    /// the directory synced. The rename is the commit point of a compaction (docs/FORMAT.md).
    /// On failure before the rename the temporary file is removed (best effort) and segment
    /// `id` is unchanged; after it (the directory sync failed), the compacted segment stays.
    pub fn create_compacted(
        storage: &dyn Storage,
        dir: &Path,
        header: SegmentHeader,
        fill: impl FnOnce(&dyn SegmentFile) -> std::io::Result<u64>,
    ) -> Result<Segment, CreateFailure> {
        assert!(header.compacted, "a compacted segment's header says so");
        let id = header.segment_id;
        let tmp = dir.join(compacting_file_name(id));
        Segment::create_with(storage, dir, &tmp, header, fill)
    }

    fn create_with(
        storage: &dyn Storage,
        dir: &Path,
        tmp: &Path,
        header: SegmentHeader,
        fill: impl FnOnce(&dyn SegmentFile) -> std::io::Result<u64>,
    ) -> Result<Segment, CreateFailure> {
        let path = dir.join(segment_file_name(header.segment_id));
        // A leftover of an earlier failed attempt by this writer (it holds the lock).
        let _ = storage.remove_file(tmp);
        let created = Segment::create_file(storage, dir, tmp, &path, &header, fill);
        let (file, end) = match created {
            Ok(created) => created,
            Err(failure @ CreateFailure::BeforeRename(_)) => {
                let _ = storage.remove_file(tmp);
                return Err(failure);
            }
            Err(failure @ CreateFailure::AfterRename(_)) => {
                // The rename happened but may not be durable: a regular segment is removed
                // again (it holds no record); a compacted one stays, as it may be the only
                // copy of what it replaced once the rename is durable.
                if !header.compacted {
                    let _ = storage.remove_file(&path);
                }
                return Err(failure);
            }
        };
        let segment = Segment::new(path, header, file);
        segment.publish(end);
        segment.synced_end.store(end, Ordering::Release);
        Ok(segment)
    }

    fn create_file(
        storage: &dyn Storage,
        dir: &Path,
        tmp: &Path,
        path: &Path,
        header: &SegmentHeader,
        fill: impl FnOnce(&dyn SegmentFile) -> std::io::Result<u64>,
    ) -> Result<(Box<dyn SegmentFile>, u64), CreateFailure> {
        let before = CreateFailure::BeforeRename;
        let len = header.segment_len;
        // A compacted segment is written whole at once, sized to its contents: all reserved.
        let reserved = if header.compacted {
            len
        } else {
            INITIAL_RESERVED_BYTES.min(len)
        };
        let file = storage
            .create_segment(tmp, len, reserved)
            .map_err(|source| {
                before(if is_disk_full(&source) {
                    Error::DiskFull {
                        path: path.to_path_buf(),
                        needed_bytes: len,
                        source,
                    }
                } else {
                    Error::io("create segment", tmp, source)
                })
            })?;
        let bytes = encode_segment_header(header);
        file.write(0, &bytes).map_err(|e| {
            before(Error::io_or_disk_full(
                "write segment header",
                tmp,
                bytes.len() as u64,
                e,
            ))
        })?;
        let end = fill(file.as_ref())
            .map_err(|e| before(Error::io_or_disk_full("write records of", tmp, 0, e)))?;
        assert!(end >= SEGMENT_HEADER_LEN as u64 && end <= len);
        file.sync(0, end)
            .map_err(|e| before(sync_error("sync new segment", tmp, e)))?;
        storage
            .rename(tmp, path)
            .map_err(|e| before(Error::io("rename new segment", path, e)))?;
        storage
            .sync_dir(dir)
            .map_err(|e| CreateFailure::AfterRename(Error::io("sync directory", dir, e)))?;
        Ok((file, end))
    }

    /// The same segment on a new mapping of its file (after the file was grown), keeping what
    /// recovery learned of it.
    pub fn remapped(&self, file: Box<dyn SegmentFile>) -> Segment {
        let mut segment = Segment::new(self.path.clone(), self.header, file);
        segment.publish(self.published_end());
        segment.skipped = self.skipped.clone();
        segment
    }

    /// The length records may use: the mapping, but never past what the header declares.
    pub fn usable_len(&self) -> u64 {
        self.file.len().min(self.header.segment_len)
    }

    /// Makes records below `end` visible to readers.
    pub fn publish(&self, end: u64) {
        self.published_end.fetch_max(end, Ordering::AcqRel);
    }

    /// The end of the records readers may see.
    pub fn published_end(&self) -> u64 {
        self.published_end.load(Ordering::Acquire)
    }

    /// Makes `..end` durable, syncing only what was not synced yet.
    pub fn sync_to(&self, end: u64) -> std::io::Result<()> {
        let from = self.synced_end.load(Ordering::Acquire);
        if end > from {
            self.file.sync(from, end - from)?;
            self.synced_end.fetch_max(end, Ordering::AcqRel);
        }
        Ok(())
    }

    /// A reader's view of the record at `offset`.
    pub fn record_ref<'a>(
        &self,
        offset: u64,
        header: RecordHeader,
        body: &'a [u8],
    ) -> super::RecordRef<'a> {
        super::RecordRef::new(self.id, offset, self.header.version, header, body)
    }

    /// Reads and checks the record at `offset`, returning its header and body.
    pub fn read_record(&self, offset: u64) -> Result<(RecordHeader, &[u8])> {
        let corrupt = |reason: String| Error::Corrupt {
            segment: self.path.clone(),
            offset,
            reason,
        };
        let read = |len: usize| {
            self.file
                .read(offset, len)
                .map_err(|e| corrupt(format!("record out of bounds: {e}")))
        };
        let head = read(crate::format::RECORD_HEADER_LEN)?;
        let header = decode_record_header(self.header.salt, head)
            .map_err(|p| corrupt(format!("record header damaged since open: {p}")))?;
        let record = read(header.padded_len())?;
        if !check_record(self.header.salt, record) {
            return Err(corrupt(
                "record checksum mismatch (damaged since open)".into(),
            ));
        }
        let body_start = crate::format::RECORD_HEADER_LEN;
        let body = record
            .get(body_start..body_start + header.body_len as usize)
            .ok_or_else(|| corrupt("record body out of bounds".into()))?;
        Ok((header, body))
    }
}

/// How creating a segment failed: before its rename (nothing changed) or after it (the
/// directory sync failed: whether the new name is durable is unknown).
#[derive(Debug)]
pub(crate) enum CreateFailure {
    BeforeRename(Error),
    AfterRename(Error),
}

impl CreateFailure {
    pub fn into_error(self) -> Error {
        match self {
            CreateFailure::BeforeRename(error) | CreateFailure::AfterRename(error) => error,
        }
    }
}

pub(crate) use crate::error::is_disk_full;

/// The error of a failed sync (or of another step that makes bytes durable): disk full when
/// the file system had no room (btrfs can refuse space when it writes cached pages back), an
/// I/O error naming `op` otherwise. Either way the caller poisons the log if the sync covered
/// records: the failed pages are marked clean, and their bytes may never reach the disk.
pub(crate) fn sync_error(op: &'static str, path: &Path, e: std::io::Error) -> Error {
    Error::io_or_disk_full(op, path, 0, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip_and_sort() {
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(parse_segment_file_name(&segment_file_name(42)), Some(42));
        let largest = MAX_SEGMENT_ID - 1;
        assert_eq!(
            parse_segment_file_name(&segment_file_name(largest)),
            Some(largest)
        );
        // Ids that cairn never writes are not segment names: the next id could overflow.
        assert_eq!(parse_segment_file_name(&segment_file_name(u64::MAX)), None);
        assert!(segment_file_name(9) < segment_file_name(10));
        for bad in [
            "42.seg",
            "0000000000000000004x.seg",
            "00000000000000000042.log",
            "",
        ] {
            assert_eq!(parse_segment_file_name(bad), None, "{bad}");
        }
    }
}
