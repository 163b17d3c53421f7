//! The I/O seam. The log reaches files, mappings and directories only through [`Storage`] and
//! [`SegmentFile`], so the same log code runs on the real file system ([`FsStorage`]) and, in
//! crash tests, on a simulated disk.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};

#[cfg(test)]
pub(crate) mod faulty;
mod fs;
mod lock;
#[cfg(feature = "testing")]
pub mod sim;

pub(crate) use fs::FsStorage;
pub(crate) use lock::{DirLock, LOCK_FILE};

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DirEntry {
    pub name: String,
    pub path: PathBuf,
    pub is_file: bool,
}

/// Whether `name` is a temporary file of [`Storage::write_small_file`] writing the file named
/// `of`: `<of>.tmp` (older builds, and the simulated disk) or `<of>.<pid>-<n>.tmp`.
pub(crate) fn is_small_file_tmp(name: &str, of: &str) -> bool {
    let Some(rest) = name.strip_prefix(of).and_then(|r| r.strip_suffix(".tmp")) else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    rest.is_empty()
        || rest
            .strip_prefix('.')
            .and_then(|r| r.split_once('-'))
            .is_some_and(|(pid, n)| digits(pid) && digits(n))
}

/// A segment file: read through a read-only shared mapping of its full length, written with
/// `pwrite` on its descriptor (never through the mapping, so a full disk is an error, not a
/// SIGBUS), synced with `fdatasync`. The mapping and the writes share the page cache, so a
/// write is visible to [`SegmentFile::read`] as soon as it returns.
///
/// Writers only ever append: bytes below the published end of a segment are never modified
/// while readers may look at them, which is what makes [`SegmentFile::read`] sound.
pub(crate) trait SegmentFile: Send + Sync + Debug {
    /// Length of the mapping (the file's length when it was opened or created).
    fn len(&self) -> u64;

    /// The bytes `offset..offset + len`. Fails when the range is outside the file. The caller
    /// guarantees that no write to this range runs concurrently.
    fn read(&self, offset: u64, len: usize) -> io::Result<&[u8]>;

    /// Writes `data` into the file at `offset` (`pwrite`). Not durable until
    /// [`SegmentFile::sync`]. Fails with ENOSPC or EDQUOT when the file system has no room,
    /// possibly after writing part of `data`; the file's length never changes.
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Makes the bytes `offset..offset + len` durable. On the real file system this is
    /// `fdatasync`, which covers the whole file; btrfs can fail it with ENOSPC.
    fn sync(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Makes every byte from `from` to the end of the file zero, durably. Used to cut off a
    /// torn tail; on the real file system the part after `from`'s page is given back to the
    /// file system (a hole, which reads as zeros and takes no disk space), so that the
    /// segment's disk use follows its data again and later recoveries need not read it. The
    /// writer reserves what it writes next with [`SegmentFile::reserve`].
    fn zero_to_end(&self, from: u64) -> io::Result<()>;

    /// Reserves disk space for `offset..offset + len` (inside the file; its length never
    /// changes), so that writing there later does not need new blocks on file systems that
    /// honour the reservation (ext4, XFS, tmpfs). Fails with ENOSPC or EDQUOT when the file
    /// system has no room; a failure leaves the bytes as they were (zeros in a never-written
    /// range). This is how a segment grows: its file has its full length from creation, but
    /// only the part ahead of the writer is reserved (docs/FORMAT.md, "Segment growth").
    fn reserve(&self, offset: u64, len: u64) -> io::Result<()>;

    /// The ranges at or after `from` that may hold non-zero bytes, in order; every byte outside
    /// them is zero. A file system that cannot tell reports the whole rest of the file. Lets
    /// recovery skip the never-written part of a preallocated segment without reading it.
    fn data_ranges(&self, from: u64) -> Vec<(u64, u64)> {
        if from < self.len() {
            vec![(from, self.len())]
        } else {
            Vec::new()
        }
    }
}

/// Directory and file operations.
pub(crate) trait Storage: Send + Sync + Debug {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// Lists `dir`. Fails with `NotFound` when it does not exist.
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>>;

    /// Creates a new file of `len` bytes whose first `reserved` bytes have their blocks
    /// reserved (fallocate); the rest is a hole that takes no disk space until the writer
    /// reserves it ([`SegmentFile::reserve`]). A full disk shows here or at a reservation on
    /// file systems that honour it (ext4, XFS, tmpfs); btrfs may still refuse a later write or
    /// sync, which then fails with ENOSPC.
    fn create_segment(
        &self,
        path: &Path,
        len: u64,
        reserved: u64,
    ) -> io::Result<Box<dyn SegmentFile>>;

    /// Opens an existing file, for writing or not, and maps it read-only.
    fn open_segment(&self, path: &Path, writable: bool) -> io::Result<Box<dyn SegmentFile>>;

    /// Grows a file back to `len` bytes (repair of a truncated segment); the new part is a
    /// hole, reserved by the writer as it needs it.
    fn extend_file(&self, path: &Path, len: u64) -> io::Result<()>;

    /// Renames a file (atomic on POSIX file systems).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Makes the directory's entries durable (fsync on the directory).
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Reads a small file whole; `Ok(None)` when it does not exist.
    fn read_small_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>>;

    /// Writes a small file durably: a temporary file, fsync, rename, fsync of the directory.
    /// The temporary file's name is unique to the call (see [`is_small_file_tmp`]), so that two
    /// processes writing the same file never truncate each other's copy.
    fn write_small_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;

    /// Takes the single-writer lock of the store in `dir`, held until the returned value is
    /// dropped. `None` where no other process can reach the files (a simulated disk).
    fn lock_dir(&self, dir: &Path) -> crate::Result<Option<DirLock>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_file_temporary_names() {
        for name in ["CAIRN.tmp", "CAIRN.1234-0.tmp", "CAIRN.1-99.tmp"] {
            assert!(is_small_file_tmp(name, "CAIRN"), "{name}");
        }
        for name in [
            "CAIRN",
            "CAIRNX.tmp",
            "CAIRN.x-1.tmp",
            "CAIRN.1-.tmp",
            "CAIRN.12.tmp",
            "CAIRN.1-2.tmp.seg",
            "LOCK.1-2.tmp",
        ] {
            assert!(!is_small_file_tmp(name, "CAIRN"), "{name}");
        }
    }
}
