//! The single writer: appends records to the newest segment and rolls over to a new segment
//! when it is full.

use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{
    RecordHeader, RecordKind, SEGMENT_HEADER_LEN, encode_record, padded_record_len,
};
use crate::storage::Storage;

use super::recovery::Tail;
use super::segment::Segment;

/// Room kept free at the end of every segment for its seal record.
const SEAL_LEN: u64 = padded_record_len(0) as u64;

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    pub seq: u64,
    pub segment_id: u64,
    pub offset: u64,
    /// Bytes the record takes on disk, header and padding included.
    pub bytes: u64,
}

/// A failed write: `Clean` left the log as it was (e.g. no space for a new segment);
/// `Poisoning` may have left bytes of unknown state and must poison the log.
#[derive(Debug)]
pub(crate) enum WriteFailure {
    Clean(Error),
    Poisoning(Error),
}

impl WriteFailure {
    /// The error, for callers that stop using the writer on any failure.
    pub fn into_error(self) -> Error {
        match self {
            WriteFailure::Clean(error) | WriteFailure::Poisoning(error) => error,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Writer {
    segment: Arc<Segment>,
    /// Where the next record goes.
    offset: u64,
    next_seq: u64,
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
    /// segment when there is none or it cannot take more records.
    pub fn resume(
        storage: &dyn Storage,
        dir: &Path,
        tail: Option<Tail>,
        next_seq: u64,
        max_segment_id: u64,
        segment_size: u64,
    ) -> Result<Writer> {
        let (segment, offset) = match tail {
            Some(tail)
                if !tail.sealed && tail.valid_end + SEAL_LEN <= tail.segment.usable_len() =>
            {
                (tail.segment, tail.valid_end)
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
                (Arc::new(segment), SEGMENT_HEADER_LEN as u64)
            }
        };
        Ok(Writer {
            segment,
            offset,
            next_seq,
            segment_size,
            buf: Vec::new(),
        })
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

    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Whether a record with this body fits in the current segment, with room for the seal.
    pub fn fits(&self, body_len: usize) -> bool {
        self.offset + padded_record_len(body_len) as u64 + SEAL_LEN <= self.segment.usable_len()
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
        self.segment
            .file
            .write(self.offset, &self.buf)
            .map_err(|e| {
                WriteFailure::Poisoning(Error::io("write record", &self.segment.path, e))
            })?;
        let appended = Appended {
            seq: self.next_seq,
            segment_id: self.segment.id,
            offset: self.offset,
            bytes: self.buf.len() as u64,
        };
        self.offset += self.buf.len() as u64;
        self.next_seq += 1;
        self.segment.publish(self.offset);
        Ok(appended)
    }

    /// Creates the next segment, then seals and fully syncs the current one, and switches.
    /// Returns the seal's sequence number: everything up to it is now durable.
    ///
    /// The order matters: if the new segment cannot be created (a full disk) nothing has
    /// changed; a crash after creation but before the seal is durable leaves an empty newest
    /// segment, which recovery recognizes and removes.
    pub fn rollover(
        &mut self,
        storage: &dyn Storage,
        dir: &Path,
        durable_seq: u64,
    ) -> Result<u64, WriteFailure> {
        let seal_seq = self.next_seq;
        let next = Segment::create(
            storage,
            dir,
            self.segment.id + 1,
            seal_seq + 1,
            self.segment_size,
            new_salt(),
        )
        .map_err(WriteFailure::Clean)?;
        let appended = self.write_record(RecordKind::Seal, &[], durable_seq)?;
        debug_assert_eq!(appended.seq, seal_seq);
        self.segment.sync_to(self.offset).map_err(|e| {
            WriteFailure::Poisoning(Error::io("sync sealed segment", &self.segment.path, e))
        })?;
        self.segment = Arc::new(next);
        self.offset = SEGMENT_HEADER_LEN as u64;
        assert_eq!(self.segment.header.first_seq, self.next_seq);
        Ok(seal_seq)
    }
}
