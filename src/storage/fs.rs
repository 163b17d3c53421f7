//! The real file system: `std::fs` for files and directories, `pwrite` and `fdatasync` to write
//! and sync segments, read-only memmap2 mappings to read them, `posix_fallocate` to reserve
//! segment space.
//!
//! No byte is ever written through a mapping. A write through a shared mapping that needs new
//! blocks (btrfs needs some on the first write of a page even inside a preallocated extent,
//! for checksums and metadata) cannot fail with an error: on a full disk the page fault ends
//! the process with SIGBUS. `pwrite` reports the same shortage as ENOSPC, and the unified page
//! cache makes the written bytes visible through the read-only mapping at once. LMDB makes the
//! same choice by default (its write-through-the-map mode is opt-in for this reason).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use super::{DirEntry, SegmentFile, Storage};

const PAGE_BYTES: u64 = 4096;
/// Zeros written per `pwrite` when a range is cleared by writing.
const ZERO_CHUNK_BYTES: u64 = 64 * 1024;
static ZEROS: [u8; ZERO_CHUNK_BYTES as usize] = [0; ZERO_CHUNK_BYTES as usize];

/// [`Storage`] on the operating system's file system.
#[derive(Debug, Default)]
pub(crate) struct FsStorage;

/// A segment file: written with `pwrite`, read through a read-only shared mapping.
#[derive(Debug)]
struct MappedFile {
    /// `None` for an empty file, which cannot be mapped.
    map: Option<MmapRaw>,
    len: u64,
    /// Kept open for the life of the mapping; writes and syncs go through it.
    file: File,
}

fn out_of_range(offset: u64, len: u64, file_len: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("range {offset}+{len} outside a file of {file_len} bytes"),
    )
}

impl MappedFile {
    /// Maps `file` read-only, whether or not it is open for writing.
    fn new(file: File) -> io::Result<Self> {
        let len = file.metadata()?.len();
        let map = if len == 0 {
            None
        } else {
            Some(MmapOptions::new().map_raw_read_only(&file)?)
        };
        Ok(MappedFile { map, len, file })
    }

    fn check_range(&self, offset: u64, len: u64) -> io::Result<()> {
        if offset.checked_add(len).is_some_and(|end| end <= self.len) {
            Ok(())
        } else {
            Err(out_of_range(offset, len, self.len))
        }
    }

    /// Writes zeros over `start..end` with `pwrite`.
    fn write_zeros(&self, start: u64, end: u64) -> io::Result<()> {
        let mut pos = start;
        while pos < end {
            let len = (end - pos).min(ZERO_CHUNK_BYTES);
            #[expect(
                clippy::indexing_slicing,
                reason = "len <= ZERO_CHUNK_BYTES, the length of ZEROS"
            )]
            let zeros = &ZEROS[..len as usize];
            self.write(pos, zeros)?;
            pos += len;
        }
        Ok(())
    }
}

impl SegmentFile for MappedFile {
    fn len(&self) -> u64 {
        self.len
    }

    #[expect(
        unsafe_code,
        reason = "a slice of the memory map, which memmap2 hands out as a pointer"
    )]
    fn read(&self, offset: u64, len: usize) -> io::Result<&[u8]> {
        if len == 0 {
            return Ok(&[]);
        }
        self.check_range(offset, len as u64)?;
        let map = self
            .map
            .as_ref()
            .ok_or_else(|| out_of_range(offset, len as u64, self.len))?;
        // SAFETY: the range is inside the mapping (checked above), the mapping lives as long as
        // `self`, and writers never modify bytes that a reader may be looking at (see the
        // `SegmentFile` contract: appends only go past the published end).
        Ok(unsafe { std::slice::from_raw_parts(map.as_ptr().add(offset as usize), len) })
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.check_range(offset, data.len() as u64)?;
        // pwrite, never a store through the mapping: a file system that needs new blocks and
        // has none answers ENOSPC here. The bytes are in the page cache the mapping shares, so
        // readers see them as soon as the writer publishes them.
        self.file.write_all_at(data, offset)
    }

    fn sync(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.check_range(offset, len)?;
        // fdatasync covers the whole file, which is more than the range asked for; only the
        // writer writes, so the rest is bytes it wrote anyway. It also makes durable the file
        // length and extent changes needed to read the data back (unwritten extents converted
        // to written by the first write of a preallocated block).
        self.file.sync_data()
    }

    fn zero_to_end(&self, from: u64) -> io::Result<()> {
        if from >= self.len {
            return Ok(());
        }
        let page_end = from.next_multiple_of(PAGE_BYTES).min(self.len);
        self.write_zeros(from, page_end)?;
        if page_end < self.len && punch_hole(&self.file, page_end, self.len).is_err() {
            // FALLOC_FL_PUNCH_HOLE is missing here: clear what may hold data by writing
            // zeros (which leaves those blocks allocated; the rest stays as it was).
            for (start, end) in self.data_ranges(page_end) {
                self.write_zeros(start, end)?;
            }
        }
        self.file.sync_data()
    }

    fn reserve(&self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.check_range(offset, len)?;
        allocate(&self.file, offset, len)
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
#[expect(
    unsafe_code,
    reason = "lseek(SEEK_DATA/SEEK_HOLE) has no safe wrapper in std"
)]
fn seek(file: &File, offset: u64, whence: libc::c_int) -> Option<u64> {
    let offset = libc::off_t::try_from(offset).ok()?;
    // SAFETY: plain system call on a valid, open descriptor; it does not touch memory.
    let rc = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    u64::try_from(rc).ok()
}

/// `fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)` of `start..end`: the range reads
/// as zeros afterwards and takes no disk space, and SEEK_DATA skips it, so that recovery need
/// not read it. The file's length does not change. The kernel drops the cached pages of the
/// range, so the mapping reads zeros too.
#[expect(unsafe_code, reason = "fallocate has no safe wrapper in std")]
fn punch_hole(file: &File, start: u64, end: u64) -> io::Result<()> {
    let offset = libc::off_t::try_from(start).map_err(io::Error::other)?;
    let len = libc::off_t::try_from(end - start).map_err(io::Error::other)?;
    let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    // SAFETY: plain system call on a valid, open descriptor; it does not touch our memory.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, offset, len) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reserves real disk space for `offset..offset + len` of `file` (`posix_fallocate`), growing
/// the file if it is shorter. Records are written with `pwrite`, so a full disk is an error
/// either way; the reservation makes it show when a segment is created or grows (ext4, XFS,
/// tmpfs), before the records that need the space are written. File systems without fallocate
/// (EOPNOTSUPP, EINVAL) only get the file extended: then a full disk shows as
/// `Error::DiskFull` at a record write.
#[expect(unsafe_code, reason = "posix_fallocate has no safe wrapper in std")]
fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let too_large = || io::Error::new(io::ErrorKind::InvalidInput, "segment length too large");
    let start = libc::off_t::try_from(offset).map_err(|_| too_large())?;
    let count = libc::off_t::try_from(len).map_err(|_| too_large())?;
    // SAFETY: plain system call on a valid, open descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), start, count) };
    match rc {
        0 => Ok(()),
        libc::EOPNOTSUPP | libc::EINVAL => {
            let end = offset.checked_add(len).ok_or_else(too_large)?;
            if file.metadata()?.len() < end {
                file.set_len(end)?;
            }
            Ok(())
        }
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// A temporary name for writing `path` that no other writer uses: two processes creating the
/// same store at once each write their own marker copy, and neither truncates the other's.
/// [`super::is_small_file_tmp`] recognises these names.
fn unique_tmp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!("{name}.{}-{n}.tmp", std::process::id()))
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

    fn create_segment(
        &self,
        path: &Path,
        len: u64,
        reserved: u64,
    ) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        // The full length at once (a hole past the reservation): the file never changes
        // length afterwards, so no crash can leave it shorter than its header says, and the
        // read-only mapping covers every byte the writer will ever write.
        let created = allocate(&file, 0, reserved.min(len)).and_then(|()| file.set_len(len));
        if let Err(e) = created {
            drop(file);
            // Best effort: a half-created file would only be cleaned up at the next open.
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(Box::new(MappedFile::new(file)?))
    }

    fn open_segment(&self, path: &Path, writable: bool) -> io::Result<Box<dyn SegmentFile>> {
        let file = OpenOptions::new().read(true).write(writable).open(path)?;
        Ok(Box::new(MappedFile::new(file)?))
    }

    fn extend_file(&self, path: &Path, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        if file.metadata()?.len() < len {
            file.set_len(len)?;
        }
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
        let tmp = unique_tmp_path(path);
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut file| {
                file.write_all(bytes)?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = written {
            // Best effort: a leftover is only a recognised, ignored file.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
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
        let seg = fs.create_segment(&path, 8192, 4096).expect("create");
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
            fs.create_segment(&path, 8192, 8192).is_err(),
            "create_new must not clobber"
        );
    }

    fn allocated_bytes(path: &Path) -> u64 {
        std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).expect("stat")) * 512
    }

    #[test]
    fn a_segment_takes_disk_space_only_as_it_is_reserved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.seg");
        let len = 64 << 20;
        let seg = FsStorage.create_segment(&path, len, 4096).expect("create");
        assert_eq!(seg.len(), len, "the file has its full length at once");
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), len);
        assert!(
            allocated_bytes(&path) < 1 << 20,
            "only the reservation is allocated"
        );
        seg.reserve(4096, 1 << 20).expect("reserve");
        assert!(
            allocated_bytes(&path) >= 1 << 20,
            "the reservation takes disk space"
        );
        assert!(allocated_bytes(&path) < 2 << 20);
        seg.write(len - 5, b"hello")
            .expect("a write past the reservation is a pwrite too");
        assert!(
            seg.reserve(len - 1, 2).is_err(),
            "reservations stay inside the file"
        );
        // Cutting off a tail gives the space back.
        seg.zero_to_end(8192).expect("zero");
        assert!(allocated_bytes(&path) <= 8192, "{}", allocated_bytes(&path));
        assert_eq!(seg.read(len - 5, 5).expect("read"), [0; 5]);
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), len);
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

    #[test]
    fn concurrent_writers_of_one_small_file_never_truncate_each_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("CAIRN");
        let contents = [vec![b'a'; 16 * 1024], vec![b'b'; 16 * 1024]];
        for round in 0..50 {
            let start = std::sync::Barrier::new(2);
            std::thread::scope(|scope| {
                for bytes in &contents {
                    let (start, path) = (&start, &path);
                    scope.spawn(move || {
                        start.wait();
                        FsStorage
                            .write_small_file(path, bytes)
                            .unwrap_or_else(|e| panic!("round {round}: {e}"));
                    });
                }
            });
            let found = std::fs::read(&path).expect("read");
            assert!(contents.contains(&found), "round {round}: a torn file");
        }
        let names: Vec<String> = FsStorage
            .read_dir(dir.path())
            .expect("list")
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["CAIRN"], "no temporary file is left");
    }

    #[test]
    fn temporary_names_are_unique_and_recognised() {
        let path = Path::new("/s/CAIRN");
        let (a, b) = (unique_tmp_path(path), unique_tmp_path(path));
        assert_ne!(a, b);
        for tmp in [a, b] {
            let name = tmp.file_name().expect("name").to_string_lossy();
            assert!(super::super::is_small_file_tmp(&name, "CAIRN"), "{name}");
        }
    }
}
