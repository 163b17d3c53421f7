//! A store's files on the real file system, and the records of a segment image walked through
//! the documented format (docs/FORMAT.md), not through cairn's internals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bytes of a segment header: the first record starts here.
pub const SEGMENT_HEADER_BYTES: usize = 64;
/// Bytes of a record header.
pub const RECORD_HEADER_BYTES: usize = 32;
/// The `kind` byte of a checkpoint record.
pub const CHECKPOINT: u8 = 1;
/// The `kind` byte of a snapshot record.
pub const SNAPSHOT: u8 = 4;
/// The `kind` byte of a mark record.
pub const MARK: u8 = 5;

/// Every file of `dir` with its bytes.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("list dir")
        .map(|entry| {
            let path = entry.expect("entry").path();
            let bytes = std::fs::read(&path).expect("read file");
            (path, bytes)
        })
        .collect()
}

/// The segment files of `dir`, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    segments.sort();
    segments
}

/// The name of segment `id`.
pub fn segment_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// The id of the segment file at `path`; `None` for any other file.
pub fn segment_id(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(".seg").filter(|d| d.len() == 20)?;
    digits.parse().ok()
}

/// A record of a segment image, as its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Where its header starts.
    pub offset: usize,
    pub seq: u64,
    pub durable_seq: u64,
    pub body_len: usize,
    pub kind: u8,
}

impl Record {
    /// Where the next record starts: after the body, padded to 8 bytes.
    pub fn end(&self) -> usize {
        self.offset + (RECORD_HEADER_BYTES + self.body_len).next_multiple_of(8)
    }
}

/// The records of a segment image, marks included, walked per FORMAT.md: records start after
/// the segment header, each has a 32-byte header (u64 `seq` at 8, u64 `durable_seq` at 16,
/// u32 body length at 24, kind at 28), padded to 8 bytes; a zero header ends the data. No
/// checksum is checked.
pub fn records(bytes: &[u8]) -> Vec<Record> {
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_BYTES;
    while pos + RECORD_HEADER_BYTES <= bytes.len()
        && bytes[pos..pos + RECORD_HEADER_BYTES]
            .iter()
            .any(|&b| b != 0)
    {
        let record = Record {
            offset: pos,
            seq: u64_at(pos + 8),
            durable_seq: u64_at(pos + 16),
            body_len: u32::from_le_bytes(bytes[pos + 24..pos + 28].try_into().unwrap()) as usize,
            kind: bytes[pos + 28],
        };
        pos = record.end();
        out.push(record);
    }
    out
}
