//! A test-only [`Storage`] that runs on the real file system but fails on command: syncs with
//! EIO or ENOSPC, segment creation and writes with ENOSPC. The crash-state simulator builds on
//! the same seam.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{DirEntry, FsStorage, SegmentFile, Storage};

/// Switches for the faults to inject.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub fail_sync: AtomicBool,
    /// Segment creation fails with ENOSPC.
    pub disk_full: AtomicBool,
    /// A segment's growth ([`SegmentFile::reserve`]) fails with ENOSPC.
    pub grow_full: AtomicBool,
    /// Writing a small file (the marker, the shape) fails with ENOSPC.
    pub small_file_full: AtomicBool,
    /// Writes store the first half of their bytes, then fail with ENOSPC (as a `pwrite` that
    /// runs out of space part-way).
    pub write_full: AtomicBool,
    /// Writes of 32 bytes or fewer (a mark, a seal) fail with ENOSPC, writing nothing.
    pub small_write_full: AtomicBool,
    /// Syncs of records fail with ENOSPC (btrfs refusing space at write-back). The sync of a
    /// new segment (from offset 0) still works, so that a rollover reaches its seal's sync.
    pub sync_full: AtomicBool,
}

#[derive(Debug, Default)]
pub(crate) struct FaultyStorage {
    inner: FsStorage,
    pub faults: Arc<Faults>,
}

#[derive(Debug)]
struct FaultyFile {
    inner: Box<dyn SegmentFile>,
    faults: Arc<Faults>,
}

impl SegmentFile for FaultyFile {
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read(&self, offset: u64, len: usize) -> io::Result<&[u8]> {
        self.inner.read(offset, len)
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.len() <= 32 && self.faults.small_write_full.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        if self.faults.write_full.load(Ordering::SeqCst) {
            let half = data.get(..data.len() / 2).unwrap_or_default();
            self.inner.write(offset, half)?;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.write(offset, data)
    }
    fn sync(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.faults.fail_sync.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        if offset > 0 && self.faults.sync_full.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.sync(offset, len)
    }
    fn zero_to_end(&self, from: u64) -> io::Result<()> {
        self.inner.zero_to_end(from)
    }
    fn reserve(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.faults.grow_full.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.reserve(offset, len)
    }
}

impl FaultyStorage {
    fn wrap(&self, file: Box<dyn SegmentFile>) -> Box<dyn SegmentFile> {
        Box::new(FaultyFile {
            inner: file,
            faults: self.faults.clone(),
        })
    }
}

impl Storage for FaultyStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        self.inner.read_dir(dir)
    }
    fn create_segment(
        &self,
        path: &Path,
        len: u64,
        reserved: u64,
    ) -> io::Result<Box<dyn SegmentFile>> {
        if self.faults.disk_full.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(self.wrap(self.inner.create_segment(path, len, reserved)?))
    }
    fn open_segment(&self, path: &Path, writable: bool) -> io::Result<Box<dyn SegmentFile>> {
        Ok(self.wrap(self.inner.open_segment(path, writable)?))
    }
    fn extend_file(&self, path: &Path, len: u64) -> io::Result<()> {
        self.inner.extend_file(path, len)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_file(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock_dir(&self, dir: &Path) -> crate::Result<Option<super::DirLock>> {
        self.inner.lock_dir(dir)
    }
    fn read_small_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        self.inner.read_small_file(path)
    }
    fn write_small_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if self.faults.small_file_full.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.write_small_file(path, bytes)
    }
}
