//! Pure encoding and decoding of cairn's on-disk structures: bytes in, values out, no I/O.
//!
//! docs/FORMAT.md is the byte-level specification; each submodule repeats its part of the table.
//! All integers are little-endian.

#![deny(clippy::unwrap_used, clippy::indexing_slicing)]

mod body;
mod record;
mod segment_header;
mod snapshot;

pub(crate) use body::{
    BodyError, CheckpointBody, EncodeError, EventBody, MAX_DECOMPRESSED_BYTES,
    decode_checkpoint_body, decode_checkpoint_envelope, decode_event_body, encode_checkpoint_body,
    encode_event_body,
};
pub(crate) use record::{
    HeaderProblem, RECORD_ALIGN, RECORD_HEADER_LEN, RecordHeader, RecordKind, check_record,
    decode_record_header, encode_record, padded_record_len,
};
pub(crate) use segment_header::{
    FORMAT_VERSION, HeaderError, MARK_VERSION, MAX_SEGMENT_LEN, MIN_COMPACTED_LEN, MIN_SEGMENT_LEN,
    SEGMENT_HEADER_LEN, SNAPSHOT_PARTS_VERSION, SegmentHeader, decode_segment_header,
    encode_segment_header,
};
pub(crate) use snapshot::{decode_snapshot_body, encode_snapshot_parts};

/// Sequence numbers stay below this, so that `seq + 1` never overflows; larger ones on disk
/// are damage.
pub(crate) const MAX_SEQ: u64 = 1 << 63;

/// The largest record body the format allows, whatever the options say. Lengths read from disk
/// above this are rejected before anything is allocated for them.
pub(crate) const MAX_RECORD_BODY_BYTES: u32 = 64 * 1024 * 1024;

/// Copies `bytes` into `buf` at `offset`; a range outside `buf` is a bug in the caller.
fn put(buf: &mut [u8], offset: usize, bytes: &[u8]) {
    let dst = buf.get_mut(offset..offset + bytes.len());
    assert!(
        dst.is_some(),
        "field at {offset} outside a buffer of {}",
        buf.len()
    );
    if let Some(dst) = dst {
        dst.copy_from_slice(bytes);
    }
}

/// Reads a little-endian `u16` at `offset`, or `None` when `bytes` is too short.
fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    let raw = bytes.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_le_bytes(raw.try_into().ok()?))
}

/// Reads a little-endian `u32` at `offset`, or `None` when `bytes` is too short.
fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let raw = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(raw.try_into().ok()?))
}

/// Reads a little-endian `u64` at `offset`, or `None` when `bytes` is too short.
fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let raw = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(raw.try_into().ok()?))
}

/// CRC32 (IEEE, as computed by crc32fast) of `salt` followed by `bytes`.
fn salted_crc(salt: u32, bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(bytes);
    hasher.finalize()
}
