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

/// A segment file, mapped into memory at its full length.
///
/// Writers only ever append: bytes below the published end of a segment are never modified
/// while readers may look at them, which is what makes [`SegmentFile::read`] sound.
pub(crate) trait SegmentFile: Send + Sync + Debug {
    /// Length of the mapping (the file's length when it was opened or created).
    fn len(&self) -> u64;

    /// The bytes `offset..offset + len`. Fails when the range is outside the file. The caller
    /// guarantees that no write to this range runs concurrently.
    fn read(&self, offset: u64, len: usize) -> io::Result<&[u8]>;

    /// Copies `data` into the file at `offset`. Not durable until [`SegmentFile::sync`].
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()>;

    /// Makes the bytes `offset..offset + len` durable (msync with `MS_SYNC`).
    fn sync(&self, offset: u64, len: u64) -> io::Result<()>;

    /// Makes every byte from `from` to the end of the file zero, durably. Used to cut off a
    /// torn tail; on the real file system it also returns the never-used part of the segment
    /// to "unwritten" so that later recoveries need not read it.
    fn zero_to_end(&self, from: u64) -> io::Result<()>;

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

    /// Creates a new file of `len` bytes with its blocks reserved (fallocate), so that writing
    /// through the mapping can never hit a full disk, and maps it read-write.
    fn create_segment(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>>;

    /// Maps an existing file, read-write or read-only.
    fn open_segment(&self, path: &Path, writable: bool) -> io::Result<Box<dyn SegmentFile>>;

    /// Grows a file back to `len` bytes with its blocks reserved (repair of a truncated segment).
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
    fn write_small_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;

    /// Takes the single-writer lock of the store in `dir`, held until the returned value is
    /// dropped. `None` where no other process can reach the files (a simulated disk).
    fn lock_dir(&self, dir: &Path) -> crate::Result<Option<DirLock>>;
}
