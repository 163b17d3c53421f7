//! The real file system: `std::fs` for files and directories, memmap2 for the mappings,
//! `posix_fallocate` to reserve segment space.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

use memmap2::{MmapOptions, MmapRaw};

use super::{DirEntry, SegmentFile, Storage};

const PAGE_BYTES: u64 = 4096;
static ZEROS: [u8; PAGE_BYTES as usize] = [0; PAGE_BYTES as usize];

/// [`Storage`] on the operating system's file system.
#[derive(Debug, Default)]
pub(crate) struct FsStorage;

/// A memory-mapped segment file.
#[derive(Debug)]
struct MappedFile {
    /// `None` for an empty file, which cannot be mapped.
    map: Option<MmapRaw>,
    len: u64,
    /// Kept open for the life of the mapping.
    file: File,
}

fn out_of_range(offset: u64, len: u64, file_len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("range {offset}+{len} outside a file of {file_len} bytes"),
    )
}

impl MappedFile {
    fn new(file: File, writable: bool) -> io::Result<Self> {
        let len = file.metadata()?.len();
        let map = if len == 0 {
            None
        } else if writable {
            Some(MmapOptions::new().map_raw(&file)?)
        } else {
            Some(MmapOptions::new().map_raw_read_only(&file)?)
        };
        Ok(MappedFile { map, len, file })
    }

    fn check_range(&self, offset: u64, len: u64) -> io::Result<(&MmapRaw, usize)> {
        let fits = offset.checked_add(len).is_some_and(|end| end <= self.len);
        match &self.map {
            Some(map) if fits => Ok((map, offset as usize)),
            _ => Err(out_of_range(offset, len, self.len)),
        }
    }
}

impl SegmentFile for MappedFile {
    fn len(&self) -> u64 {
        self.len
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<&[u8]> {
        if len == 0 {
            return Ok(&[]);
        }
        let (map, start) = self.check_range(offset, len as u64)?;
        // SAFETY: the range is inside the mapping (checked above), the mapping lives as long as
        // `self`, and writers never modify bytes that a reader may be looking at (see the
        // `SegmentFile` contract: appends only go past the published end).
        Ok(unsafe { std::slice::from_raw_parts(map.as_ptr().add(start), len) })
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let (map, start) = self.check_range(offset, data.len() as u64)?;
        // SAFETY: in bounds (checked above); the single writer holds the log's writer lock, and
        // no reader looks at bytes past the published end, so nothing aliases this range.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), map.as_mut_ptr().add(start), data.len());
        }
        Ok(())
    }

    fn sync(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (map, start) = self.check_range(offset, len)?;
        map.flush_range(start, len as usize)
    }

    fn zero_to_end(&self, from: u64) -> io::Result<()> {
        if from >= self.len {
            return Ok(());
        }
        let page_end = from.next_multiple_of(PAGE_BYTES).min(self.len);
        self.write(from, &ZEROS[..(page_end - from) as usize])?;
        self.sync(from, page_end - from)?;
        if page_end < self.len {
            let offset = libc::off_t::try_from(page_end).map_err(io::Error::other)?;
            let len = libc::off_t::try_from(self.len - page_end).map_err(io::Error::other)?;
            let mode = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
            // SAFETY: plain system call on a valid, open descriptor. The kernel drops the
            // cached pages of the range, so the mapping reads zeros afterwards.
            let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset, len) };
            if rc == 0 {
                return self.file.sync_data();
            }
            // No ZERO_RANGE here: write zeros wherever the file may hold data.
            for (start, end) in self.data_ranges(page_end) {
                let mut pos = start;
                while pos < end {
                    let len = (end - pos).min(PAGE_BYTES);
                    self.write(pos, &ZEROS[..len as usize])?;
                    pos += len;
                }
                self.sync(start, end - start)?;
            }
        }
        Ok(())
    }

    fn data_ranges(&self, from: u64) -> Vec<(u64, u64)> {
        let mut ranges = Vec::new();
        let mut pos = from;
        while pos < self.len {
            // SEEK_DATA and SEEK_HOLE report preallocated, never-written extents as holes on
            // ext4, XFS and btrfs; elsewhere they report the whole file as data, which is
            // merely slower.
            let Some(data) = seek(&self.file, pos, libc::SEEK_DATA) else {
                break;
            };
            let hole = seek(&self.file, data, libc::SEEK_HOLE)
                .unwrap_or(self.len)
                .min(self.len);
            if hole <= data {
                ranges.push((data, self.len));
                break;
            }
            ranges.push((data, hole));
            pos = hole;
        }
        ranges
    }
}

/// `lseek` with `whence`; `None` when there is no such position (ENXIO) or on any error.
fn seek(file: &File, offset: u64, whence: libc::c_int) -> Option<u64> {
    let offset = libc::off_t::try_from(offset).ok()?;
    // SAFETY: plain system call on a valid, open descriptor; it does not touch memory.
    let rc = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    u64::try_from(rc).ok()
}

/// Reserves `len` bytes of real disk space for `file`, so later writes through a mapping cannot
/// fail for lack of space (which would be a SIGBUS, not an error).
fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment length too large"))?;
    // SAFETY: plain system call on a valid, open descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => Ok(()),
        // File systems without fallocate support: fall back to extending the file. The blocks
        // are then not reserved; docs/RECOVERY.md says so.
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(len as u64),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            entries.push(DirEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                path: entry.path(),
                is_file: entry.file_type()?.is_file(),
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    fn create_segment(&self, path: &Path, len: u64) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        if let Err(e) = preallocate(&file, len) {
            drop(file);
            // Best effort: a half-created file would only be cleaned up at the next open.
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(Box::new(MappedFile::new(file, true)?))
    }

    fn open_segment(&self, path: &Path, writable: bool) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        Ok(Box::new(MappedFile::new(file, writable)?))
    }

    fn extend_file(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        preallocate(&file, len)?;
        file.sync_all()
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // IMPORTANT: without this fsync a created, renamed or removed file may not survive a
        // power loss even though its contents were synced.
        File::open(dir)?.sync_all()
    }

    fn lock_dir(&self, dir: &Path) -> crate::Result<Option<super::DirLock>> {
        super::DirLock::acquire(dir).map(Some)
    }

    fn read_small_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_small_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        self.sync_dir(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_write_read_sync_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.seg");
        let fs = FsStorage;
        let seg = fs.create_segment(&path, 8192).expect("create");
        assert_eq!(seg.len(), 8192);
        seg.write(4096, b"hello").expect("write");
        seg.sync(4096, 5).expect("sync");
        assert_eq!(seg.read(4096, 5).expect("read"), b"hello");
        assert!(seg.read(8190, 5).is_err());
        assert!(seg.write(8190, b"hello").is_err());
        drop(seg);
        let again = fs.open_segment(&path, false).expect("open");
        assert_eq!(again.read(4096, 5).expect("read"), b"hello");
        assert!(
            fs.create_segment(&path, 8192).is_err(),
            "create_new must not clobber"
        );
    }

    #[test]
    fn empty_file_opens_with_nothing_to_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty.seg");
        File::create(&path).expect("create");
        let seg = FsStorage.open_segment(&path, false).expect("open");
        assert_eq!(seg.len(), 0);
        assert!(seg.read(0, 1).is_err());
    }
}
