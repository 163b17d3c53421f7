//! What a store's segment files take on disk, shared by the soak and scale examples.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The segment files of a store: segments, and a compacted (`.seg.compacting`) or new
/// (`.seg.creating`) one being written; not the marker, shape and lock files (under 100 bytes
/// each). Each inode once: a file renamed during the listing is not counted twice.
pub struct DiskUse {
    /// Their lengths: what the size limit is on (a segment's declared size).
    pub length_bytes: u64,
    /// The blocks allocated to them, as `du` counts (segments take space as they fill).
    pub allocated_bytes: u64,
    /// How many segments there are.
    pub segments: usize,
}

/// The segment files in `dir` (nothing when it cannot be listed).
pub fn disk_use(dir: &Path) -> DiskUse {
    let mut usage = DiskUse {
        length_bytes: 0,
        allocated_bytes: 0,
        segments: 0,
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return usage;
    };
    let mut inodes = std::collections::HashSet::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(metadata) = entry.metadata() else {
            continue; // removed by a compaction since the listing
        };
        if name.contains(".seg") && metadata.is_file() && inodes.insert(metadata.ino()) {
            usage.length_bytes += metadata.len();
            usage.allocated_bytes += metadata.blocks() * 512;
            usage.segments += usize::from(name.ends_with(".seg"));
        }
    }
    usage
}
