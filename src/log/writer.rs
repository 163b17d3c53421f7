//! The single writer: appends records to the newest segment and rolls over to a new segment
//! when it is full.

use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{
    MARK_VERSION, RecordHeader, RecordKind, SEGMENT_HEADER_LEN, encode_record, padded_record_len,
};
use crate::storage::Storage;

use super::recovery::Tail;
use super::segment::{GROWTH_STEP_BYTES, INITIAL_RESERVED_BYTES, Segment};

/// Length of a seal record (an empty body).
const SEAL_LEN: u64 = padded_record_len(0) as u64;
/// Length of a mark record (an empty body).
const MARK_LEN: u64 = padded_record_len(0) as u64;
/// Room kept free after every record: two marks and the seal, so that none of them is ever
/// refused for lack of space. Two marks can follow a record: one from the group-commit leader
/// whose sync began before the record was written (it proves less), then one from the next
/// leader, which proves the record. Leaders are serialized up to their mark, and once a mark
/// proves the last record no further mark is needed until a new record.
const TAIL_RESERVE: u64 = 2 * MARK_LEN + SEAL_LEN;
// A new segment's first reservation holds its header and the tail reserve: the marks and the
// seal never need a reservation of their own.
const _: () = assert!(SEGMENT_HEADER_LEN as u64 + TAIL_RESERVE <= INITIAL_RESERVED_BYTES);

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    pub seq: u64,
    pub segment_id: u64,
    pub offset: u64,
    /// Bytes the record takes on disk, header and padding included.
    pub bytes: u64,
    /// It is the first record of its segment (marks aside): the log moved to a new segment.
    pub first_in_segment: bool,
}

/// A failed write: `Clean` left the log as it was (e.g. no space for a new segment);
/// `Poisoning` may have left bytes of unknown state and must poison the log.
#[derive(Debug)]
pub(crate) enum WriteFailure {
    Clean(Error),
    Poisoning(Error),
}

#[derive(Debug)]
pub(crate) struct Writer {
    segment: Arc<Segment>,
    /// Where the next record goes.
    offset: u64,
    next_seq: u64,
    /// Records in the current segment, marks not counted.
    segment_records: u64,
    /// The highest `durable_seq` that a record in the log carries: what the log itself proves
    /// durable. A mark is written only to prove more than this.
    proven_seq: u64,
    /// Bytes of the current segment below this offset have their disk space reserved. Always
    /// at least `offset + TAIL_RESERVE`, so marks and the seal land in reserved space; a record
    /// that would end past it grows the reservation first (a full disk there is clean).
    reserved_end: u64,
    segment_size: u64,
    /// Reused encoding buffer.
    buf: Vec<u8>,
}

/// A random salt for a new segment.
pub(crate) fn new_salt() -> u32 {
    // RandomState is seeded from the OS per process; hashing a counter-like value gives
    // independent salts for successive segments.
    let value = RandomState::new().hash_one(std::time::SystemTime::now());
    (value ^ (value >> 32)) as u32
}

impl Writer {
    /// Positions the writer after recovery: at the end of the tail segment, or in a new
    /// segment when there is none, or it is sealed or compacted. A compacted segment
    /// never takes new records, even when skip-corrupted recovery could not find its snapshot.
    pub fn resume(
        storage: &dyn Storage,
        dir: &Path,
        tail: Option<Tail>,
        next_seq: u64,
        proven_seq: u64,
        max_segment_id: u64,
        segment_size: u64,
    ) -> Result<Writer> {
        // A tail with room for its seal is continued even if no record fits any more: the
        // caller then rolls over, which seals it. (A mark may have taken the room of the
        // last record's mark.)
        let (segment, offset, segment_records, reserved_end) = match tail {
            Some(tail)
                if !tail.sealed
                    && !tail.segment.header.compacted
                    && tail.valid_end + SEAL_LEN <= tail.segment.usable_len() =>
            {
                // What an earlier writer reserved is unknown (recovery gave back the space
                // after the valid records): reserve again below.
                (tail.segment, tail.valid_end, tail.records, tail.valid_end)
            }
            _ => {
                let segment = Segment::create(
                    storage,
                    dir,
                    max_segment_id + 1,
                    next_seq,
                    segment_size,
                    new_salt(),
                )?;
                let reserved = INITIAL_RESERVED_BYTES.min(segment_size);
                (Arc::new(segment), SEGMENT_HEADER_LEN as u64, 0, reserved)
            }
        };
        assert!(
            proven_seq < next_seq,
            "the log cannot prove a record it does not hold"
        );
        let mut writer = Writer {
            segment,
            offset,
            next_seq,
            segment_records,
            proven_seq,
            reserved_end,
            segment_size,
            buf: Vec::new(),
        };
        // Room for the marks and the seal that may follow the last record. In a segment with
        // too little room left for them, the caller rolls over and seals in what is left.
        // Only that: at most one new block, when these bytes cross into the next page (on a
        // full disk the open then fails with `DiskFull`; docs/FORMAT.md).
        let tail_end = (offset + TAIL_RESERVE).min(writer.segment.usable_len());
        writer
            .reserve_to(tail_end, 0)
            .map_err(|failure| match failure {
                WriteFailure::Clean(error) | WriteFailure::Poisoning(error) => error,
            })?;
        Ok(writer)
    }

    /// Grows the reservation of the current segment to cover `..end`: by at least `step`,
    /// page-aligned, never past the segment. A failure (a full disk) changes nothing: the
    /// writer has not moved and no byte was written.
    fn reserve_to(&mut self, end: u64, step: u64) -> Result<(), WriteFailure> {
        if end <= self.reserved_end {
            return Ok(());
        }
        let usable = self.segment.usable_len();
        let new_end = end
            .max(self.reserved_end + step)
            .next_multiple_of(4096)
            .min(usable);
        assert!(new_end >= end, "a reservation never goes past the segment");
        let len = new_end - self.reserved_end;
        self.segment
            .file
            .reserve(self.reserved_end, len)
            .map_err(|e| {
                WriteFailure::Clean(Error::io_or_disk_full(
                    "reserve space in segment",
                    &self.segment.path,
                    len,
                    e,
                ))
            })?;
        self.reserved_end = new_end;
        Ok(())
    }

    pub fn segment(&self) -> Arc<Segment> {
        self.segment.clone()
    }

    /// The size of new segments.
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    pub fn segment_id(&self) -> u64 {
        self.segment.id
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether a record with this body fits in an empty segment, with room for the marks and
    /// the seal after it (`TAIL_RESERVE`). The store's limits (`Options::max_record_body_bytes`) make sure it
    /// does; the log checks again rather than trust every caller.
    pub fn fits_a_new_segment(&self, body_len: usize) -> bool {
        (SEGMENT_HEADER_LEN + padded_record_len(body_len)) as u64 + TAIL_RESERVE
            <= self.segment_size
    }

    /// Whether the log proves every record written durable.
    pub fn proves_all(&self) -> bool {
        self.proven_seq == self.next_seq - 1
    }

    /// Whether the current segment holds a record (marks aside).
    pub fn holds_records(&self) -> bool {
        self.segment_records > 0
    }

    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Whether a record with this body fits in the current segment, with room for the marks
    /// and the seal after it (`TAIL_RESERVE`).
    pub fn fits(&self, body_len: usize) -> bool {
        self.offset + padded_record_len(body_len) as u64 + TAIL_RESERVE <= self.segment.usable_len()
    }

    /// Writes one record at the end of the current segment. The caller checked `fits`.
    pub fn append(
        &mut self,
        kind: RecordKind,
        body: &[u8],
        durable_seq: u64,
    ) -> Result<Appended, WriteFailure> {
        assert!(
            self.fits(body.len()),
            "append without room: the caller must roll over first"
        );
        let end = self.offset + padded_record_len(body.len()) as u64 + TAIL_RESERVE;
        self.reserve_to(end, GROWTH_STEP_BYTES)?;
        self.write_record(kind, body, durable_seq)
    }

    fn write_record(
        &mut self,
        kind: RecordKind,
        body: &[u8],
        durable_seq: u64,
    ) -> Result<Appended, WriteFailure> {
        assert!(self.offset + padded_record_len(body.len()) as u64 <= self.segment.usable_len());
        let header = RecordHeader {
            seq: self.next_seq,
            durable_seq,
            body_len: u32::try_from(body.len())
                .map_err(|_| WriteFailure::Clean(Error::invalid("record", "body over 4 GiB")))?,
            kind,
        };
        encode_record(self.segment.header.salt, &header, body, &mut self.buf);
        let len = self.buf.len() as u64;
        self.segment
            .file
            .write(self.offset, &self.buf)
            .map_err(|e| write_failure("write record", &self.segment.path, e, len))?;
        let appended = Appended {
            seq: self.next_seq,
            segment_id: self.segment.id,
            offset: self.offset,
            bytes: len,
            first_in_segment: self.segment_records == 0,
        };
        self.offset += len;
        self.next_seq += 1;
        self.segment_records += 1;
        self.proven_seq = self.proven_seq.max(durable_seq);
        self.segment.publish(self.offset);
        Ok(appended)
    }

    /// Writes a mark record saying that every record up to `durable_seq` is durable, unless
    /// the log proves that already or the segment has no room left for it. The caller has just seen a sync covering those records
    /// succeed. A mark is not synced on its own: it reaches the disk with the next sync, and
    /// until then survives a crash of the process (it is in the page cache). Returns whether a
    /// mark was written.
    ///
    /// Without marks, damage to the last records before a crash could not be told from a torn
    /// write (docs/FORMAT.md, "Mark records").
    pub fn append_mark(&mut self, durable_seq: u64) -> Result<bool, WriteFailure> {
        if durable_seq <= self.proven_seq {
            return Ok(false);
        }
        assert!(
            durable_seq < self.next_seq,
            "a mark proves only records written"
        );
        assert!(
            self.segment.header.version >= MARK_VERSION && !self.segment.header.compacted,
            "marks go only into current-format, uncompacted segments"
        );
        // TAIL_RESERVE makes room for every mark the log writes; should that reasoning ever
        // fail, a missing mark costs only a proof, and a clean close seals the segment, which
        // proves it whole: never a panic in a save.
        let room = self.offset + MARK_LEN + SEAL_LEN <= self.segment.usable_len();
        debug_assert!(room, "no room for a mark: the tail reserve is too small");
        if !room {
            return Ok(false);
        }
        let header = RecordHeader {
            seq: self.next_seq,
            durable_seq,
            body_len: 0,
            kind: RecordKind::Mark,
        };
        encode_record(self.segment.header.salt, &header, &[], &mut self.buf);
        self.segment
            .file
            .write(self.offset, &self.buf)
            .map_err(|e| {
                // Unlike a record, a mark that is not written poisons even on a full disk: the
                // sync it follows made records durable that would otherwise be acknowledged
                // (or reported failed but published by a later saver) without a proof.
                match write_failure("write mark record", &self.segment.path, e, MARK_LEN) {
                    WriteFailure::Clean(error) | WriteFailure::Poisoning(error) => {
                        WriteFailure::Poisoning(error)
                    }
                }
            })?;
        self.offset += self.buf.len() as u64;
        self.proven_seq = durable_seq;
        self.segment.publish(self.offset);
        Ok(true)
    }

    /// First step of a rollover: creates the next segment. On failure nothing has changed
    /// (no record is involved), so the caller may try again later.
    ///
    /// A rollover is, in order (the log runs the syncs): create the next segment; sync every
    /// record of the current one; write the seal, whose `durable_seq` is the record before it,
    /// so that a valid seal proves its whole segment durable; sync the seal; switch. A crash
    /// after creation but before the seal is durable leaves an empty newest segment, which
    /// recovery recognizes and removes.
    pub fn create_next(&self, storage: &dyn Storage, dir: &Path) -> Result<Segment> {
        Segment::create(
            storage,
            dir,
            self.segment.id + 1,
            self.next_seq + 1,
            self.segment_size,
            new_salt(),
        )
    }

    /// Writes the seal of the current segment; every record before it must be durable, which
    /// the seal's `durable_seq` then says. Returns the seal's sequence number.
    pub fn write_seal(&mut self) -> Result<u64, WriteFailure> {
        let seal_seq = self.next_seq;
        let appended = self.write_record(RecordKind::Seal, &[], seal_seq - 1)?;
        debug_assert_eq!(appended.seq, seal_seq);
        Ok(seal_seq)
    }

    /// Last step of a rollover: continues in `next`, created by [`Writer::create_next`] before
    /// the seal was written.
    pub fn switch_to(&mut self, next: Segment) {
        assert_eq!(next.header.first_seq, self.next_seq);
        assert_eq!(next.id, self.segment.id + 1);
        self.reserved_end = INITIAL_RESERVED_BYTES.min(next.header.segment_len);
        self.segment = Arc::new(next);
        self.offset = SEGMENT_HEADER_LEN as u64;
        self.segment_records = 0;
        // The seal holds no data: no mark needs to prove it (the next record's durable_seq
        // will, as a side effect).
        self.proven_seq = self.proven_seq.max(self.next_seq - 1);
    }
}

/// A failed write: no space is clean (the writer did not move, and the next record overwrites
/// whatever part was written); anything else leaves bytes of unknown state and poisons.
fn write_failure(op: &'static str, path: &Path, e: std::io::Error, len: u64) -> WriteFailure {
    match Error::io_or_disk_full(op, path, len, e) {
        error @ Error::DiskFull { .. } => WriteFailure::Clean(error),
        error => WriteFailure::Poisoning(error),
    }
}
