//! The store's shape: the options that define its files (today the segment size), recorded in
//! the `SHAPE` file when the store is created, so that later opens, and every CLI command, make
//! new segments like the store's own unless the user explicitly says otherwise.
//!
//! `SHAPE` is a small text file (docs/FORMAT.md, "The shape file"):
//!
//! ```text
//! cairn shape
//! segment_size 67108864
//! ```
//!
//! A first line `cairn shape`, then one `key value` line per option, each ending in `\n`;
//! values are decimal. This build reads `segment_size` and ignores other keys (an option that
//! older builds must not ignore comes with a format version bump instead). It is written like
//! the marker: a temporary file, fsync, rename, fsync of the directory.
//!
//! A store without a readable shape (made by an older build, or whose first open crashed
//! before writing it) takes the declared length of its newest uncompacted segment, and a
//! writer records that.

use std::path::Path;

use crate::error::{Error, Result};
use crate::format::decode_segment_header;
use crate::storage::Storage;

use super::segment::parse_segment_file_name;

/// The file that records the store's shape.
pub(crate) const SHAPE_FILE: &str = "SHAPE";
const SHAPE_FIRST_LINE: &str = "cairn shape";
const SEGMENT_SIZE_KEY: &str = "segment_size";

/// The options that define a store's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Declared length of new (uncompacted) segments.
    pub segment_size_bytes: u64,
}

/// Where a store's shape comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShapeSource {
    /// The `SHAPE` file.
    Recorded,
    /// No readable `SHAPE` file: the newest uncompacted segment's header.
    NewestSegment,
}

/// Whether `name` is a leftover of writing the shape file.
pub(crate) fn is_shape_tmp(name: &str) -> bool {
    crate::storage::is_small_file_tmp(name, SHAPE_FILE)
}

impl Shape {
    /// The bytes of the shape file.
    pub fn encode(self) -> String {
        format!(
            "{SHAPE_FIRST_LINE}\n{SEGMENT_SIZE_KEY} {}\n",
            self.segment_size_bytes
        )
    }

    /// Reads a shape file's bytes; `None` when they are not a shape this build understands.
    pub fn decode(bytes: &[u8]) -> Option<Shape> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.strip_suffix('\n')?.split('\n');
        if lines.next()? != SHAPE_FIRST_LINE {
            return None;
        }
        let mut segment_size_bytes = None;
        for line in lines {
            let (key, value) = line.split_once(' ')?;
            if key == SEGMENT_SIZE_KEY {
                // Only canonical decimal: a bit flip that leaves digits still changes the
                // value, which the range check of the caller may catch; nothing durable
                // depends on it (it sizes new segments only).
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                segment_size_bytes = Some(value.parse().ok()?);
            }
        }
        Some(Shape {
            segment_size_bytes: segment_size_bytes?,
        })
    }

    /// The store's shape, and where it comes from: its `SHAPE` file, or when that is missing
    /// or unreadable (`valid` says whether a segment size is acceptable), its newest
    /// uncompacted segment. `None` for a store without either (a new store).
    pub fn of_store(
        storage: &dyn Storage,
        dir: &Path,
        valid: impl Fn(u64) -> bool,
    ) -> Result<Option<(Shape, ShapeSource)>> {
        let path = dir.join(SHAPE_FILE);
        let recorded = match storage.read_small_file(&path) {
            Ok(bytes) => bytes.as_deref().and_then(Shape::decode),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io("read shape file", &path, e)),
        };
        match recorded {
            Some(shape) if valid(shape.segment_size_bytes) => {
                Ok(Some((shape, ShapeSource::Recorded)))
            }
            _ => Ok(
                newest_segment_len(storage, dir, valid).map(|segment_size_bytes| {
                    (Shape { segment_size_bytes }, ShapeSource::NewestSegment)
                }),
            ),
        }
    }

    /// Records the shape durably.
    pub fn write(self, storage: &dyn Storage, dir: &Path) -> Result<()> {
        let path = dir.join(SHAPE_FILE);
        storage
            .write_small_file(&path, self.encode().as_bytes())
            .map_err(|e| Error::io("write shape file", &path, e))
    }
}

/// The declared length of the newest segment that is not compacted and whose header is
/// intact, if any. Damaged or foreign files are recovery's business: they are skipped here.
fn newest_segment_len(
    storage: &dyn Storage,
    dir: &Path,
    valid: impl Fn(u64) -> bool,
) -> Option<u64> {
    let mut ids: Vec<(u64, std::path::PathBuf)> = storage
        .read_dir(dir)
        .ok()?
        .into_iter()
        .filter_map(|entry| parse_segment_file_name(&entry.name).map(|id| (id, entry.path)))
        .collect();
    ids.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    ids.into_iter().find_map(|(_, path)| {
        let file = storage.open_segment(&path, false).ok()?;
        let head = file
            .read(
                0,
                crate::format::SEGMENT_HEADER_LEN.min(file.len() as usize),
            )
            .ok()?;
        let header = decode_segment_header(head).ok()?;
        (!header.compacted && valid(header.segment_len)).then_some(header.segment_len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let shape = Shape {
            segment_size_bytes: 1 << 20,
        };
        assert_eq!(shape.encode(), "cairn shape\nsegment_size 1048576\n");
        assert_eq!(Shape::decode(shape.encode().as_bytes()), Some(shape));
        assert_eq!(
            Shape::decode(b"cairn shape\nsegment_size 4096\nfuture_key x\n"),
            Some(Shape {
                segment_size_bytes: 4096
            }),
            "unknown keys are ignored"
        );
        for bad in [
            &b""[..],
            b"cairn shape\n",
            b"cairn shape\nsegment_size 1048576",
            b"cairn shape\nsegment_size +1048576\n",
            b"cairn shape\nsegment_size 10485x6\n",
            b"cairn shapf\nsegment_size 1048576\n",
            b"cairn shape\nsegment_size\n",
            b"cairn shape\nsegment_size 99999999999999999999999\n",
            b"\xffcairn shape\nsegment_size 1\n",
        ] {
            assert_eq!(Shape::decode(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_single_bit_flip_outside_the_digits_is_refused() {
        let text = Shape {
            segment_size_bytes: 1 << 20,
        }
        .encode();
        let digits = text.find("1048576").expect("digits")..text.len() - 1;
        let bytes = text.into_bytes();
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            if let Some(byte) = flipped.get_mut(bit / 8) {
                *byte ^= 1 << (bit % 8);
            }
            // A flip inside the digits may give another size, which the open checks against
            // the segment size limits (it decides only the size of new segments); anywhere
            // else the file is refused and the newest segment decides.
            if let Some(shape) = Shape::decode(&flipped) {
                assert!(digits.contains(&(bit / 8)), "bit {bit} accepted");
                assert_ne!(shape.segment_size_bytes, 1 << 20, "bit {bit}");
            }
        }
    }
}
