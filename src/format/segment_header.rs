//! The 64-byte header at the start of every segment file.
//!
//! | offset | size | field              | meaning                                              |
//! |--------|------|--------------------|------------------------------------------------------|
//! | 0      | 8    | magic              | `b"CAIRNSEG"`                                        |
//! | 8      | 2    | format_version     | u16: 4 (this build writes); 1 to 3 are still read     |
//! | 10     | 2    | header_len         | u16, 64                                              |
//! | 12     | 4    | flags              | u32: bit 0 `COMPACTED` (format 3); other bits zero    |
//! | 16     | 8    | segment_id         | u64, equals the number in the file name              |
//! | 24     | 8    | first_seq          | u64, sequence number of the segment's first record   |
//! | 32     | 8    | segment_len        | u64, preallocated file length in bytes               |
//! |        |      |                    | (64 KiB..=1 GiB; a compacted segment: 4 KiB..=1 GiB)  |
//! | 40     | 8    | created_at_micros  | i64, creation time, microseconds since the Unix epoch|
//! | 48     | 4    | salt               | u32, random; seeds every record CRC of this segment  |
//! | 52     | 8    | reserved           | zero                                                 |
//! | 60     | 4    | header_crc         | u32, CRC32 of bytes 0..60                            |

use super::{put, read_u16, read_u32, read_u64};

pub(crate) const MAGIC: [u8; 8] = *b"CAIRNSEG";
/// The segment format this build writes; it reads every version from 1 up to this one.
/// Version 2 added job event records, the checkpoint trigger and compressed data; version 3
/// added compacted segments (the `COMPACTED` flag) and snapshot records; version 4 added mark
/// records (proofs of durability), seals that prove their whole segment durable, and snapshot
/// parts (a snapshot split over several records).
pub(crate) const FORMAT_VERSION: u16 = 4;
/// The first format version with mark records.
pub(crate) const MARK_VERSION: u16 = 4;
/// The first format version whose compacted segments may split their snapshot into parts.
pub(crate) const SNAPSHOT_PARTS_VERSION: u16 = 4;
/// The first format version with compacted segments.
const COMPACTION_VERSION: u16 = 3;
/// Header flag: the segment was written by compaction. It replaces every segment with a lower
/// id, its records keep their sequence numbers (strictly increasing, with gaps), and it ends
/// with a snapshot record.
pub(crate) const FLAG_COMPACTED: u32 = 1;
/// The smallest length a compacted segment may declare.
pub(crate) const MIN_COMPACTED_LEN: u64 = 4096;
pub(crate) const SEGMENT_HEADER_LEN: usize = 64;
/// The smallest segment length a header may declare.
pub(crate) const MIN_SEGMENT_LEN: u64 = 64 * 1024;
/// The largest segment length a header may declare.
pub(crate) const MAX_SEGMENT_LEN: u64 = 1024 * 1024 * 1024;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const HEADER_LEN_OFFSET: usize = VERSION_OFFSET + 2;
const FLAGS_OFFSET: usize = HEADER_LEN_OFFSET + 2;
const SEGMENT_ID_OFFSET: usize = FLAGS_OFFSET + 4;
const FIRST_SEQ_OFFSET: usize = SEGMENT_ID_OFFSET + 8;
const SEGMENT_LEN_OFFSET: usize = FIRST_SEQ_OFFSET + 8;
const CREATED_AT_OFFSET: usize = SEGMENT_LEN_OFFSET + 8;
const SALT_OFFSET: usize = CREATED_AT_OFFSET + 8;
const RESERVED_OFFSET: usize = SALT_OFFSET + 4;
const HEADER_CRC_OFFSET: usize = RESERVED_OFFSET + 8;
const _: () = assert!(HEADER_CRC_OFFSET + 4 == SEGMENT_HEADER_LEN);

/// A decoded segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// The format of the records in this segment.
    pub version: u16,
    pub segment_id: u64,
    pub first_seq: u64,
    pub segment_len: u64,
    pub created_at_micros: i64,
    pub salt: u32,
    /// Written by compaction (format 3): see [`FLAG_COMPACTED`].
    pub compacted: bool,
}

/// Why a header could not be decoded. The caller maps these to public errors with the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Fewer than 64 bytes.
    TooShort,
    /// All 64 bytes are zero: a file that was created but never got its header.
    Blank,
    /// The magic is wrong: not a cairn segment.
    BadMagic,
    /// A version this build does not know.
    UnsupportedVersion(u16),
    /// The header checksum or a header field does not check out.
    Damaged(DamagedHeader),
}

/// How a segment header with the right magic fails to check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DamagedHeader {
    #[error("header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("format version 0 is not valid")]
    VersionZero,
    #[error("header length {0}, expected 64")]
    HeaderLength(u16),
    #[error("unknown flags {flags:#x} for format version {version}")]
    UnknownFlags { flags: u32, version: u16 },
    #[error("segment length {segment_len} outside {min_len}..={MAX_SEGMENT_LEN}")]
    SegmentLength { segment_len: u64, min_len: u64 },
    #[error("first sequence number {0} out of range")]
    FirstSeq(u64),
}

pub(crate) fn encode_segment_header(header: &SegmentHeader) -> [u8; SEGMENT_HEADER_LEN] {
    let out = encode_fields(header);
    debug_assert_eq!(decode_segment_header(&out), Ok(*header));
    out
}

/// The header bytes of `header`, whether or not a reader would accept them.
fn encode_fields(header: &SegmentHeader) -> [u8; SEGMENT_HEADER_LEN] {
    let mut out = [0u8; SEGMENT_HEADER_LEN];
    put(&mut out, MAGIC_OFFSET, &MAGIC);
    put(&mut out, VERSION_OFFSET, &header.version.to_le_bytes());
    put(
        &mut out,
        HEADER_LEN_OFFSET,
        &(SEGMENT_HEADER_LEN as u16).to_le_bytes(),
    );
    let flags = if header.compacted { FLAG_COMPACTED } else { 0 };
    put(&mut out, FLAGS_OFFSET, &flags.to_le_bytes());
    put(
        &mut out,
        SEGMENT_ID_OFFSET,
        &header.segment_id.to_le_bytes(),
    );
    put(&mut out, FIRST_SEQ_OFFSET, &header.first_seq.to_le_bytes());
    put(
        &mut out,
        SEGMENT_LEN_OFFSET,
        &header.segment_len.to_le_bytes(),
    );
    put(
        &mut out,
        CREATED_AT_OFFSET,
        &header.created_at_micros.to_le_bytes(),
    );
    put(&mut out, SALT_OFFSET, &header.salt.to_le_bytes());
    let crc = crc32fast::hash(out.get(..HEADER_CRC_OFFSET).unwrap_or_default());
    put(&mut out, HEADER_CRC_OFFSET, &crc.to_le_bytes());
    out
}

/// Decodes and checks a segment header. A version newer than this build's is reported as
/// such only when the header checksum, which every version keeps at bytes 60..64, checks out;
/// otherwise the header is damaged.
pub(crate) fn decode_segment_header(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
    let bytes = bytes
        .get(..SEGMENT_HEADER_LEN)
        .ok_or(HeaderError::TooShort)?;
    let version = check_frame(bytes)?;
    let header = read_fields(bytes, version)?;
    check_fields(&header)?;
    Ok(header)
}

/// Checks what every format version keeps in place (the magic, the version and the header
/// checksum) and returns the version.
fn check_frame(bytes: &[u8]) -> Result<u16, HeaderError> {
    if bytes.iter().all(|&b| b == 0) {
        return Err(HeaderError::Blank);
    }
    if bytes.get(MAGIC_OFFSET..MAGIC_OFFSET + 8) != Some(&MAGIC[..]) {
        return Err(HeaderError::BadMagic);
    }
    let version = read_u16(bytes, VERSION_OFFSET).ok_or(HeaderError::TooShort)?;
    let stored = read_u32(bytes, HEADER_CRC_OFFSET).ok_or(HeaderError::TooShort)?;
    let computed = crc32fast::hash(bytes.get(..HEADER_CRC_OFFSET).unwrap_or_default());
    // Every format version keeps the magic, the version and the header checksum where they
    // are, so a newer header still checks out here, while a bit flip in the version field
    // does not: damage is never mistaken for a file from the future.
    if version > FORMAT_VERSION && stored == computed {
        return Err(HeaderError::UnsupportedVersion(version));
    }
    if stored != computed {
        return Err(HeaderError::Damaged(DamagedHeader::Checksum {
            stored,
            computed,
        }));
    }
    if version == 0 {
        return Err(HeaderError::Damaged(DamagedHeader::VersionZero));
    }
    Ok(version)
}

/// Reads the fields of a header whose frame checked out; only the header length and the flags
/// are checked here, as they decide how the rest reads.
fn read_fields(bytes: &[u8], version: u16) -> Result<SegmentHeader, HeaderError> {
    let field = |r: Option<u64>| r.ok_or(HeaderError::TooShort);
    let header_len = read_u16(bytes, HEADER_LEN_OFFSET).ok_or(HeaderError::TooShort)?;
    if usize::from(header_len) != SEGMENT_HEADER_LEN {
        return Err(HeaderError::Damaged(DamagedHeader::HeaderLength(
            header_len,
        )));
    }
    let header = SegmentHeader {
        version,
        segment_id: field(read_u64(bytes, SEGMENT_ID_OFFSET))?,
        first_seq: field(read_u64(bytes, FIRST_SEQ_OFFSET))?,
        segment_len: field(read_u64(bytes, SEGMENT_LEN_OFFSET))?,
        created_at_micros: field(read_u64(bytes, CREATED_AT_OFFSET))? as i64,
        salt: read_u32(bytes, SALT_OFFSET).ok_or(HeaderError::TooShort)?,
        compacted: false,
    };
    let flags = read_u32(bytes, FLAGS_OFFSET).ok_or(HeaderError::TooShort)?;
    let known_flags = if version >= COMPACTION_VERSION {
        FLAG_COMPACTED
    } else {
        0
    };
    if flags & !known_flags != 0 {
        return Err(HeaderError::Damaged(DamagedHeader::UnknownFlags {
            flags,
            version,
        }));
    }
    Ok(SegmentHeader {
        compacted: flags & FLAG_COMPACTED != 0,
        ..header
    })
}

/// Checks the values of a decoded header: its length and first sequence number in range.
fn check_fields(header: &SegmentHeader) -> Result<(), HeaderError> {
    let min_len = if header.compacted {
        MIN_COMPACTED_LEN
    } else {
        MIN_SEGMENT_LEN
    };
    if !(min_len..=MAX_SEGMENT_LEN).contains(&header.segment_len) {
        return Err(HeaderError::Damaged(DamagedHeader::SegmentLength {
            segment_len: header.segment_len,
            min_len,
        }));
    }
    if header.first_seq == 0 || header.first_seq >= super::MAX_SEQ {
        return Err(HeaderError::Damaged(DamagedHeader::FirstSeq(
            header.first_seq,
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentHeader {
        SegmentHeader {
            version: FORMAT_VERSION,
            segment_id: 7,
            first_seq: 1234,
            segment_len: 1 << 20,
            created_at_micros: 1_700_000_000_000_000,
            salt: 0xdead_beef,
            compacted: false,
        }
    }

    #[test]
    fn compacted_flag_round_trips_and_is_format_3_only() {
        let header = SegmentHeader {
            compacted: true,
            segment_len: MIN_COMPACTED_LEN,
            ..sample()
        };
        let bytes = encode_segment_header(&header);
        assert_eq!(decode_segment_header(&bytes), Ok(header));
        let old = SegmentHeader {
            version: 2,
            ..header
        };
        assert!(matches!(
            decode_segment_header(&encode_fields(&old)),
            Err(HeaderError::Damaged(_))
        ));
        // A regular segment may not be that small.
        let small = SegmentHeader {
            compacted: false,
            ..header
        };
        assert!(matches!(
            decode_segment_header(&encode_fields(&small)),
            Err(HeaderError::Damaged(_))
        ));
    }

    #[test]
    fn round_trip() {
        let bytes = encode_segment_header(&sample());
        assert_eq!(&bytes[..8], b"CAIRNSEG");
        assert_eq!(decode_segment_header(&bytes), Ok(sample()));
    }

    #[test]
    fn every_single_bit_flip_is_noticed() {
        let bytes = encode_segment_header(&sample());
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut damaged = bytes;
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_segment_header(&damaged).is_err(),
                "flip of bit {bit} went unnoticed"
            );
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = encode_segment_header(&sample());
        for len in 0..SEGMENT_HEADER_LEN {
            assert_eq!(
                decode_segment_header(&bytes[..len]),
                Err(HeaderError::TooShort)
            );
        }
    }

    #[test]
    fn newer_version_is_reported_as_such() {
        let mut bytes = encode_segment_header(&sample());
        let newer = FORMAT_VERSION + 1;
        bytes[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&newer.to_le_bytes());
        let crc = crc32fast::hash(&bytes[..HEADER_CRC_OFFSET]);
        bytes[HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode_segment_header(&bytes),
            Err(HeaderError::UnsupportedVersion(newer))
        );
    }

    #[test]
    fn a_flipped_version_bit_is_damage_not_a_newer_format() {
        let mut bytes = encode_segment_header(&sample());
        bytes[VERSION_OFFSET] ^= 0x04;
        assert!(matches!(
            decode_segment_header(&bytes),
            Err(HeaderError::Damaged(_))
        ));
    }

    #[test]
    fn foreign_and_blank_headers() {
        assert_eq!(decode_segment_header(&[0u8; 64]), Err(HeaderError::Blank));
        assert_eq!(
            decode_segment_header(&[b'x'; 64]),
            Err(HeaderError::BadMagic)
        );
    }
}
