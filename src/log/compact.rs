//! Compaction at the log level: which segments may be compacted, writing the compacted
//! segment that replaces them, and switching readers over to it. What to keep is the store's
//! decision (`store/compact.rs`); the protocol is in docs/FORMAT.md, "Compaction".

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::format::{
    EncodeError, FORMAT_VERSION, MAX_RECORD_BODY_BYTES, MAX_SEGMENT_LEN, MIN_COMPACTED_LEN,
    RecordHeader, RecordKind, SEGMENT_HEADER_LEN, SegmentHeader, decode_checkpoint_body,
    encode_checkpoint_body, encode_record, padded_record_len,
};
use crate::storage::{SegmentFile, Storage};

use super::segment::{CreateFailure, Segment, compacting_file_name, segment_file_name};
use super::{Log, RecordVisitor, lock};

/// A record compaction keeps: where it is now.
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    pub segment: Arc<Segment>,
    pub offset: u64,
}

impl Log {
    /// The segments no longer written to, oldest first: every segment before the writer's
    /// current one (for a read-only log, every segment but the newest).
    pub fn sealed_segments(&self) -> Vec<Arc<Segment>> {
        let current = match &self.writer {
            Some(writer) => lock(writer).segment_id(),
            None => self
                .segments_read()
                .keys()
                .next_back()
                .copied()
                .unwrap_or(0),
        };
        self.segments_read()
            .range(..current)
            .map(|(_, segment)| segment.clone())
            .collect()
    }

    /// Every segment, oldest first.
    pub fn all_segments(&self) -> Vec<Arc<Segment>> {
        self.segments_read().values().cloned().collect()
    }

    /// Bytes of disk taken by the segments after `upto` (those a compaction up to it keeps).
    pub fn bytes_after(&self, upto: u64) -> u64 {
        self.segments_read()
            .range(upto + 1..)
            .map(|(_, s)| s.file.len())
            .sum()
    }

    /// The first sequence number of the segment after `id`.
    pub fn first_seq_after(&self, id: u64) -> Option<u64> {
        self.segments_read()
            .range(id + 1..)
            .next()
            .map(|(_, s)| s.header.first_seq)
    }

    /// The length of the compacted segment, if there is one: about what the next compaction
    /// writes beside the files it replaces.
    pub fn last_compacted_bytes(&self) -> u64 {
        self.segments_read()
            .values()
            .find(|s| s.header.compacted)
            .map_or(0, |s| s.file.len())
    }

    /// Counts `bytes` of a compacted file about to be written against the size limit, and
    /// returns the bytes of segment files at that moment. Under the writer lock: a saver
    /// checks the limit and creates its segment under it, so the two never interleave.
    pub fn reserve_compaction(&self, bytes: u64) -> u64 {
        let _writer = self.writer.as_ref().map(lock);
        self.compaction_bytes.store(bytes, Ordering::Release);
        self.storage_bytes()
    }

    /// Whether the next record of `body_len` bytes would need a new segment.
    pub fn needs_new_segment(&self, body_len: usize) -> bool {
        self.writer
            .as_ref()
            .is_some_and(|writer| !lock(writer).fits(body_len))
    }

    /// Writes the compacted segment that replaces `range` (the oldest segments, up to and
    /// including the last one of the range, whose id it takes): `kept` in order, each with
    /// its sequence number, then the snapshot with `snapshot_seq` (the last sequence number of
    /// the range): `snapshot_parts` but the last as snapshot part records, the last as the
    /// snapshot record that ends the segment. Returns the segment, renamed into place and
    /// durable, and the offset of each kept record in it.
    ///
    /// Every size and order that depends on the data is checked before the file is created,
    /// and fails with an error; on any failure (a panic included) the `.seg.compacting` file
    /// is removed and segment `id` is unchanged.
    pub fn write_compacted(
        &self,
        range: &[Arc<Segment>],
        kept: &[Kept],
        snapshot_seq: u64,
        snapshot_parts: &[Vec<u8>],
    ) -> Result<(Arc<Segment>, Vec<u64>)> {
        let (Some(first), Some(last)) = (range.first(), range.last()) else {
            return Err(Error::invalid("compaction", "nothing to compact"));
        };
        let records = self.kept_records(kept, snapshot_seq)?;
        let header = compacted_header(first, last, &records, snapshot_parts)?;
        let mut offsets = Vec::with_capacity(records.len());
        self.compaction_bytes
            .store(header.segment_len, Ordering::Release);
        let _unwinding = RemoveIfUnwinding {
            storage: self.storage.as_ref(),
            path: self.dir.join(compacting_file_name(last.id)),
        };
        let segment = Segment::create_compacted(self.storage.as_ref(), &self.dir, header, |file| {
            let records = records.iter().map(|(old, body)| (old.seq, body.as_ref()));
            let mut out = CompactedWriter::new(file, header.salt);
            offsets.extend(out.write_all(RecordKind::Checkpoint, records)?);
            // The parts share the snapshot's number; the last one ends the segment.
            let (last_part, parts) = snapshot_parts
                .split_last()
                .ok_or_else(|| std::io::Error::other("a snapshot has at least one part"))?;
            let parts = parts.iter().map(|part| (snapshot_seq, part.as_slice()));
            out.write_all(RecordKind::SnapshotPart, parts)?;
            out.write(snapshot_seq, RecordKind::Snapshot, last_part)?;
            Ok(out.pos)
        });
        let segment = segment.map_err(|failure| {
            self.compaction_bytes.store(0, Ordering::Release);
            // A failed directory sync after the rename leaves the directory in an unknown
            // state: refuse writes, as after any failed sync.
            if let CreateFailure::AfterRename(error) = &failure {
                self.poison(error.to_string());
            }
            failure.into_error()
        })?;
        Ok((Arc::new(segment), offsets))
    }

    /// Reads the records to keep, in order, re-encoding bodies of format 1 in this build's
    /// format. Anything that would break the compacted segment's rules (a record that is not a
    /// checkpoint, numbers out of order or not below the snapshot's, a body over the record
    /// limit) is an error, before anything is written.
    fn kept_records<'a>(
        &self,
        kept: &'a [Kept],
        snapshot_seq: u64,
    ) -> Result<Vec<(RecordHeader, Cow<'a, [u8]>)>> {
        let mut records = Vec::with_capacity(kept.len());
        let mut previous = 0;
        for item in kept {
            let (header, body) = item.segment.read_record(item.offset)?;
            let corrupt = |reason: String| self.corrupt(item.segment.id, item.offset, reason);
            if header.kind != RecordKind::Checkpoint {
                return Err(corrupt(format!(
                    "record {} to keep is not a checkpoint; cannot compact",
                    header.seq
                )));
            }
            if header.seq <= previous || header.seq >= snapshot_seq {
                return Err(corrupt(format!(
                    "record {} to keep is out of order (after {previous}, before the snapshot \
                     {snapshot_seq}); cannot compact",
                    header.seq
                )));
            }
            previous = header.seq;
            let body = if item.segment.header.version < 2 {
                let decoded = decode_checkpoint_body(item.segment.header.version, body)
                    .map_err(|e| corrupt(e.to_string()))?;
                let mut encoded = Vec::new();
                encode_checkpoint_body(&decoded, false, &mut encoded)
                    .map_err(|e| corrupt(e.to_string()))?;
                if encoded.len() > MAX_RECORD_BODY_BYTES as usize {
                    return Err(corrupt(format!(
                        "record {} grows past the record limit when re-encoded; cannot compact",
                        header.seq
                    )));
                }
                Cow::Owned(encoded)
            } else {
                Cow::Borrowed(body)
            };
            records.push((header, body));
        }
        Ok(records)
    }

    /// Holds what a compaction counts against the size limit (see `compaction_bytes`) until
    /// it is dropped, whichever way the compaction ends.
    pub fn compaction_reservation(&self) -> CompactionReservation<'_> {
        CompactionReservation(&self.compaction_bytes)
    }

    /// Switches readers to the compacted segment: the segments it replaces leave the log.
    /// Readers that hold one of them keep a valid mapping until they let go.
    pub fn install_compacted(&self, segment: Arc<Segment>) {
        let mut segments = self.segments_write();
        let replaced: Vec<u64> = segments.range(..=segment.id).map(|(id, _)| *id).collect();
        // The replaced files stay on disk until `remove_replaced` (the last one is already
        // gone: the compacted segment took its name).
        let mut left_on_disk = 0;
        for id in replaced {
            if let Some(old) = segments.remove(&id)
                && id != segment.id
            {
                left_on_disk += old.file.len();
            }
        }
        self.compaction_bytes.store(left_on_disk, Ordering::Release);
        segments.insert(segment.id, segment);
    }

    /// Removes the files of the replaced segments (all but the last of `range`, whose name
    /// the compacted segment took), then syncs the directory. Returns how many files could not
    /// be removed: the compaction has committed, so a failed removal only leaves a file that
    /// recovery knows is replaced, and that the next writer to open the store removes. A
    /// failed directory sync poisons the store (its state on disk is unknown) and is returned.
    pub fn remove_replaced(&self, range: &[Arc<Segment>]) -> Result<usize> {
        let Some((_, older)) = range.split_last() else {
            return Ok(0);
        };
        // Counted as removed even if a removal fails: the files are no longer segments.
        let _removed = self.compaction_reservation();
        let mut left = 0;
        for segment in older {
            let path = self.dir.join(segment_file_name(segment.id));
            if let Err(error) = self.storage.remove_file(&path) {
                left += 1;
                tracing::warn!(
                    path = %path.display(),
                    %error,
                    "cairn: compaction committed, but a replaced segment could not be removed; \
                     the next writer to open the store removes it"
                );
            }
        }
        self.storage.sync_dir(&self.dir).map_err(|e| {
            let error = Error::io("sync directory", &self.dir, e);
            self.poison(error.to_string());
            error
        })?;
        Ok(left)
    }

    /// Refuses further writes after a failure whose effect on disk is unknown.
    pub fn poison(&self, cause: String) {
        tracing::error!(%cause, "cairn: store refuses further writes");
        let mut sync = lock(&self.sync);
        sync.poisoned.get_or_insert(cause);
        self.synced.notify_all();
    }

    /// Calls `f` for every valid record of `segments` in order (see
    /// [`Log::for_each_record`]).
    pub fn for_each_record_in(segments: &[Arc<Segment>], f: &mut RecordVisitor<'_>) -> Result<()> {
        for segment in segments {
            let end = segment.published_end();
            let mut pos = SEGMENT_HEADER_LEN as u64;
            while pos < end {
                if let Some(&(_, skip_to)) = segment.skipped.iter().find(|(start, _)| *start == pos)
                {
                    pos = skip_to;
                    continue;
                }
                let (header, body) = segment.read_record(pos)?;
                // Marks prove durability to recovery; readers have nothing to see in them.
                if header.kind != RecordKind::Mark {
                    f(&segment.record_ref(pos, header, body))?;
                }
                pos += header.padded_len() as u64;
            }
        }
        Ok(())
    }
}

/// The header of the compacted segment replacing `first..=last`, once the records to keep
/// and the snapshot are known to fit: each snapshot part in a record, everything in a
/// compacted segment.
fn compacted_header(
    first: &Segment,
    last: &Segment,
    records: &[(RecordHeader, Cow<'_, [u8]>)],
    snapshot_parts: &[Vec<u8>],
) -> Result<SegmentHeader> {
    let too_large = |len: usize| len > MAX_RECORD_BODY_BYTES as usize;
    if snapshot_parts.is_empty() || snapshot_parts.iter().any(|part| too_large(part.len())) {
        return Err(Error::invalid(
            "compaction",
            "the snapshot of the job states is not in parts that each fit a record; \
             nothing was changed",
        ));
    }
    let records_len: u64 = records
        .iter()
        .map(|(_, body)| padded_record_len(body.len()) as u64)
        .sum();
    let snapshot_len: u64 = snapshot_parts
        .iter()
        .map(|part| padded_record_len(part.len()) as u64)
        .sum();
    let needed = SEGMENT_HEADER_LEN as u64 + records_len + snapshot_len;
    if needed > MAX_SEGMENT_LEN {
        return Err(Error::invalid(
            "compaction",
            format!(
                "the records to keep take {needed} bytes, more than a compacted segment may \
                 hold ({MAX_SEGMENT_LEN}); keep fewer checkpoints per job"
            ),
        ));
    }
    Ok(SegmentHeader {
        version: FORMAT_VERSION,
        segment_id: last.id,
        first_seq: first.header.first_seq,
        segment_len: needed.next_multiple_of(4096).max(MIN_COMPACTED_LEN),
        created_at_micros: chrono::Utc::now().timestamp_micros(),
        salt: super::writer::new_salt(),
        compacted: true,
    })
}

/// Writes the records of a compacted segment one after the other, after its header. Each
/// record proves the one before it durable: the whole file is synced before its rename.
struct CompactedWriter<'a> {
    file: &'a dyn SegmentFile,
    salt: u32,
    /// Where the next record goes.
    pos: u64,
    buf: Vec<u8>,
}

impl<'a> CompactedWriter<'a> {
    fn new(file: &'a dyn SegmentFile, salt: u32) -> Self {
        CompactedWriter {
            file,
            salt,
            pos: SEGMENT_HEADER_LEN as u64,
            buf: Vec::new(),
        }
    }

    /// Writes one record and returns its offset.
    fn write(&mut self, seq: u64, kind: RecordKind, body: &[u8]) -> std::io::Result<u64> {
        let record = RecordHeader {
            seq,
            durable_seq: seq - 1,
            body_len: u32::try_from(body.len()).map_err(std::io::Error::other)?,
            kind,
        };
        encode_record(self.salt, &record, body, &mut self.buf);
        self.file.write(self.pos, &self.buf)?;
        let at = self.pos;
        self.pos += self.buf.len() as u64;
        Ok(at)
    }

    /// Writes records of one kind, each `(seq, body)`, and returns their offsets.
    fn write_all<'b>(
        &mut self,
        kind: RecordKind,
        records: impl Iterator<Item = (u64, &'b [u8])>,
    ) -> std::io::Result<Vec<u64>> {
        records
            .map(|(seq, body)| self.write(seq, kind, body))
            .collect()
    }
}

/// Sets the bytes a compaction counts against the size limit back to zero when dropped.
pub(crate) struct CompactionReservation<'a>(&'a AtomicU64);

impl Drop for CompactionReservation<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}

/// Removes a compaction's temporary file if the thread unwinds while it exists (errors remove
/// it on their own path, see `Segment::create_compacted`).
struct RemoveIfUnwinding<'a> {
    storage: &'a dyn Storage,
    path: PathBuf,
}

impl Drop for RemoveIfUnwinding<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.storage.remove_file(&self.path);
        }
    }
}

/// Sizing and encoding a compaction plans with before it writes (used by `store/compact.rs`,
/// so that it needs none of the format's constants).
impl Log {
    /// The file length of a compacted segment whose records (the kept checkpoints and the
    /// snapshot, each padded) take `records_bytes`: what `write_compacted` creates for them.
    pub fn compacted_segment_len(records_bytes: u64) -> u64 {
        (SEGMENT_HEADER_LEN as u64 + records_bytes)
            .next_multiple_of(4096)
            .max(MIN_COMPACTED_LEN)
    }

    /// Bytes of the records that hold these bodies, each padded (e.g. a snapshot's parts).
    pub fn records_len(bodies: &[Vec<u8>]) -> u64 {
        bodies
            .iter()
            .map(|body| padded_record_len(body.len()) as u64)
            .sum()
    }

    /// A snapshot of job states, given each state's JSON, as the record bodies
    /// `write_compacted` takes, each within the format's record body limit (docs/FORMAT.md,
    /// "Snapshot body"): the parts, then the final one. Fails with the reason when one state
    /// alone is too large for a record.
    pub fn snapshot_bodies(
        states_json: &[Vec<u8>],
    ) -> std::result::Result<Vec<Vec<u8>>, EncodeError> {
        crate::format::encode_snapshot_parts(states_json, MAX_RECORD_BODY_BYTES as usize)
    }
}
