//! Record framing. Every record starts on an 8-byte boundary with this 32-byte header:
//!
//! | offset | size | field        | meaning                                                      |
//! |--------|------|--------------|--------------------------------------------------------------|
//! | 0      | 4    | record_crc   | CRC32 of salt ++ bytes 4..padded_len of the record           |
//! | 4      | 4    | header_crc   | CRC32 of salt ++ bytes 8..32 of the record                   |
//! | 8      | 8    | seq          | u64 global sequence number, strictly increasing              |
//! | 16     | 8    | durable_seq  | u64, highest seq known durable when this record was written  |
//! | 24     | 4    | body_len     | u32 length of the body                                       |
//! | 28     | 1    | kind         | 1 checkpoint, 2 seal, 3 job event (format 2), 4 snapshot     |
//! |        |      |              | (format 3, compacted segments only), 5 mark (format 4),      |
//! |        |      |              | 6 snapshot part (format 4, compacted segments only)          |
//! | 29     | 1    | flags        | 0 (reserved)                                                 |
//! | 30     | 2    | reserved     | 0                                                            |
//! | 32     | n    | body         | `body_len` bytes, see `body.rs`                              |
//! | 32+n   | p    | padding      | zero bytes up to the next multiple of 8                      |
//!
//! `salt` is the 4-byte little-endian salt from the segment header, so a record copied from
//! another segment (or left over from an earlier use of the bytes) never checks out.

use super::{MAX_RECORD_BODY_BYTES, put, read_u32, read_u64, salted_crc};

pub(crate) const RECORD_HEADER_LEN: usize = 32;
pub(crate) const RECORD_ALIGN: usize = 8;

const RECORD_CRC_OFFSET: usize = 0;
const HEADER_CRC_OFFSET: usize = RECORD_CRC_OFFSET + 4;
const SEQ_OFFSET: usize = HEADER_CRC_OFFSET + 4;
const DURABLE_SEQ_OFFSET: usize = SEQ_OFFSET + 8;
const BODY_LEN_OFFSET: usize = DURABLE_SEQ_OFFSET + 8;
const KIND_OFFSET: usize = BODY_LEN_OFFSET + 4;
const FLAGS_OFFSET: usize = KIND_OFFSET + 1;
const RESERVED_OFFSET: usize = FLAGS_OFFSET + 1;
const _: () = assert!(RESERVED_OFFSET + 2 == RECORD_HEADER_LEN);
const _: () = assert!(RECORD_HEADER_LEN.is_multiple_of(RECORD_ALIGN));

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// A checkpoint of one job; body per `body.rs`.
    Checkpoint = 1,
    /// The last record of a full segment: the next record is in the next segment. Empty body.
    Seal = 2,
    /// An event in a job's life (run started, failed, ...); body per `body.rs`. Format 2.
    JobEvent = 3,
    /// The last record of a compacted segment: the folded state of every job as of its
    /// sequence number (JSON, see `body.rs`). It ends the segment like a seal. Format 3.
    /// From format 4 it is the final part of a snapshot that may also have parts before it.
    Snapshot = 4,
    /// A proof of durability written after a sync: every record up to its `durable_seq` is
    /// durable. It carries the sequence number the next record takes and does not use it up.
    /// Empty body; never in a compacted segment. Format 4.
    Mark = 5,
    /// A part of a snapshot other than the last, in a compacted segment of format 4 or later:
    /// a subset of the job states, with the snapshot's sequence number. The parts come right
    /// before the final `Snapshot` record. (Kind 5 is the mark record of format 4.)
    SnapshotPart = 6,
}

impl RecordKind {
    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(RecordKind::Checkpoint),
            2 => Some(RecordKind::Seal),
            3 => Some(RecordKind::JobEvent),
            4 => Some(RecordKind::Snapshot),
            5 => Some(RecordKind::Mark),
            6 => Some(RecordKind::SnapshotPart),
            _ => None,
        }
    }
}

/// The decoded, header-checksum-verified fixed part of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordHeader {
    pub seq: u64,
    pub durable_seq: u64,
    pub body_len: u32,
    pub kind: RecordKind,
}

impl RecordHeader {
    /// Length of the whole record on disk, header and padding included.
    pub fn padded_len(&self) -> usize {
        padded_record_len(self.body_len as usize)
    }
}

/// Length on disk of a record with a body of `body_len` bytes.
pub(crate) const fn padded_record_len(body_len: usize) -> usize {
    (RECORD_HEADER_LEN + body_len).next_multiple_of(RECORD_ALIGN)
}

/// Why the bytes at a position are not a valid record header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderProblem {
    /// Fewer than 32 bytes remain.
    TooShort,
    /// All 32 bytes are zero: nothing was ever written here.
    Blank,
    /// The header does not check out.
    Invalid(InvalidHeader),
}

/// How a record header that is not blank fails to check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum InvalidHeader {
    #[error("record header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    #[error("reserved header bytes are not zero")]
    ReservedNotZero,
    #[error("sequence numbers out of order (seq {seq}, durable {durable_seq})")]
    SeqOutOfOrder { seq: u64, durable_seq: u64 },
    #[error("body length {body_len} over the format limit")]
    BodyTooLong { body_len: u32 },
}

impl std::fmt::Display for HeaderProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderProblem::TooShort => f.write_str("record header cut off"),
            HeaderProblem::Blank => f.write_str("record header is all zero bytes"),
            HeaderProblem::Invalid(invalid) => invalid.fmt(f),
        }
    }
}

/// Encodes a complete record (header, body, padding) into `out`, which is cleared first.
pub(crate) fn encode_record(salt: u32, header: &RecordHeader, body: &[u8], out: &mut Vec<u8>) {
    assert_eq!(
        header.body_len as usize,
        body.len(),
        "body_len must match the body"
    );
    assert!(
        header.durable_seq < header.seq,
        "durable_seq must precede seq"
    );
    assert!(
        header.body_len <= MAX_RECORD_BODY_BYTES,
        "record body over the format limit"
    );
    out.clear();
    out.resize(header.padded_len(), 0);
    let (head, rest) = out.split_at_mut(RECORD_HEADER_LEN);
    if let Some(dst) = rest.get_mut(..body.len()) {
        dst.copy_from_slice(body);
    }
    write_header_fields(head, header);
    let header_crc = salted_crc(salt, head.get(SEQ_OFFSET..).unwrap_or_default());
    put(head, HEADER_CRC_OFFSET, &header_crc.to_le_bytes());
    let record_crc = salted_crc(salt, out.get(HEADER_CRC_OFFSET..).unwrap_or_default());
    put(out, RECORD_CRC_OFFSET, &record_crc.to_le_bytes());
    debug_assert!(
        decode_record_header(salt, out).is_ok_and(|h| h == *header && check_record(salt, out)),
        "a freshly encoded record must decode and check out"
    );
}

fn write_header_fields(head: &mut [u8], header: &RecordHeader) {
    put(head, SEQ_OFFSET, &header.seq.to_le_bytes());
    put(head, DURABLE_SEQ_OFFSET, &header.durable_seq.to_le_bytes());
    put(head, BODY_LEN_OFFSET, &header.body_len.to_le_bytes());
    put(head, KIND_OFFSET, &[header.kind as u8]);
    put(head, FLAGS_OFFSET, &[0]);
    put(head, RESERVED_OFFSET, &[0, 0]);
}

/// Decodes the record header at the start of `bytes` and checks its own checksum and fields.
/// The body is not checked: see [`check_record`].
pub(crate) fn decode_record_header(salt: u32, bytes: &[u8]) -> Result<RecordHeader, HeaderProblem> {
    let head = bytes
        .get(..RECORD_HEADER_LEN)
        .ok_or(HeaderProblem::TooShort)?;
    if head.iter().all(|&b| b == 0) {
        return Err(HeaderProblem::Blank);
    }
    let invalid = HeaderProblem::Invalid;
    let stored = read_u32(head, HEADER_CRC_OFFSET).ok_or(HeaderProblem::TooShort)?;
    let computed = salted_crc(salt, head.get(SEQ_OFFSET..).unwrap_or_default());
    if stored != computed {
        return Err(invalid(InvalidHeader::Checksum { stored, computed }));
    }
    let seq = read_u64(head, SEQ_OFFSET).ok_or(HeaderProblem::TooShort)?;
    let durable_seq = read_u64(head, DURABLE_SEQ_OFFSET).ok_or(HeaderProblem::TooShort)?;
    let body_len = read_u32(head, BODY_LEN_OFFSET).ok_or(HeaderProblem::TooShort)?;
    let kind_byte = *head.get(KIND_OFFSET).ok_or(HeaderProblem::TooShort)?;
    let kind = RecordKind::from_byte(kind_byte)
        .ok_or_else(|| invalid(InvalidHeader::UnknownKind(kind_byte)))?;
    if head.get(FLAGS_OFFSET..RECORD_HEADER_LEN) != Some(&[0, 0, 0][..]) {
        return Err(invalid(InvalidHeader::ReservedNotZero));
    }
    if seq == 0 || seq >= super::MAX_SEQ || durable_seq >= seq {
        return Err(invalid(InvalidHeader::SeqOutOfOrder { seq, durable_seq }));
    }
    if body_len > MAX_RECORD_BODY_BYTES {
        return Err(invalid(InvalidHeader::BodyTooLong { body_len }));
    }
    Ok(RecordHeader {
        seq,
        durable_seq,
        body_len,
        kind,
    })
}

/// Checks the whole-record checksum of the record at the start of `bytes`, whose header has
/// already been decoded. False when the record is damaged or runs past the end of `bytes`.
pub(crate) fn check_record(salt: u32, bytes: &[u8]) -> bool {
    let Ok(header) = decode_record_header(salt, bytes) else {
        return false;
    };
    let Some(record) = bytes.get(..header.padded_len()) else {
        return false;
    };
    let stored = read_u32(record, RECORD_CRC_OFFSET);
    let actual = salted_crc(salt, record.get(HEADER_CRC_OFFSET..).unwrap_or_default());
    stored == Some(actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: u32 = 0x1234_5678;

    fn encoded(body: &[u8]) -> Vec<u8> {
        let header = RecordHeader {
            seq: 42,
            durable_seq: 40,
            body_len: body.len() as u32,
            kind: RecordKind::Checkpoint,
        };
        let mut out = Vec::new();
        encode_record(SALT, &header, body, &mut out);
        out
    }

    #[test]
    fn round_trip_and_alignment() {
        for len in 0..40 {
            let body: Vec<u8> = (0..len as u8).collect();
            let rec = encoded(&body);
            assert_eq!(rec.len() % RECORD_ALIGN, 0);
            let header = decode_record_header(SALT, &rec).expect("valid header");
            assert_eq!(header.seq, 42);
            assert_eq!(header.body_len as usize, len);
            assert!(check_record(SALT, &rec));
            assert_eq!(&rec[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len], &body[..]);
        }
    }

    #[test]
    fn every_single_bit_flip_is_noticed() {
        let rec = encoded(b"{\"cursor\":\"abc\"}");
        for bit in 0..rec.len() * 8 {
            let mut damaged = rec.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                !check_record(SALT, &damaged),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_is_noticed() {
        let rec = encoded(b"some body bytes");
        for len in 0..rec.len() {
            assert!(
                !check_record(SALT, &rec[..len]),
                "truncation to {len} went unnoticed"
            );
        }
    }

    #[test]
    fn another_salt_does_not_check_out() {
        let rec = encoded(b"x");
        assert!(decode_record_header(SALT + 1, &rec).is_err());
        assert!(!check_record(SALT + 1, &rec));
    }

    #[test]
    fn blank_and_oversized() {
        assert_eq!(
            decode_record_header(SALT, &[0u8; 32]),
            Err(HeaderProblem::Blank)
        );
        assert_eq!(
            decode_record_header(SALT, &[0u8; 31]),
            Err(HeaderProblem::TooShort)
        );
    }
}
