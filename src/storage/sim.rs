//! A simulated disk for crash and fault tests (feature `testing`).
//!
//! Every file has a *live* image (what the running program sees: the page cache), a *durable*
//! image (what survives a power loss), and a set of *dirty* pages (written since they were last
//! written back). A write changes the live image and marks its pages dirty; a sync copies the
//! dirty pages of its range from live to durable and marks them clean. Directory operations
//! change the live namespace at once and the durable namespace only at a directory sync.
//!
//! A failed sync behaves as Linux does (Rebello et al., "Can applications recover from fsync
//! failures?", USENIX ATC '20; the PostgreSQL fsync lesson): the kernel reports the error once
//! and marks *every* dirty page of the file clean without writing it (fdatasync writes back the
//! whole file, so one failed write-back can cost any page of it). Those bytes stay in the live
//! image, so reads still return them, but they never reach the durable image unless they are
//! written again: a later sync "succeeds" without writing them, and a crash loses them. Nothing
//! retries a failed write-back for the program.
//!
//! [`SimDisk::crash`] builds the disk as it could be found after a power loss at this moment:
//! every durable byte is kept; every sector of a dirty page that differs from the durable image
//! is lost, kept, or (torn) some of each, in any order; a clean page that never reached the
//! durable image (its sync failed) is lost; directory operations since the last directory sync
//! survive as a prefix. A crash of the process alone, with the machine up, is a reopen on the
//! same `SimDisk`: the new process reads the live images. Faults fail the n-th write or sync
//! (EIO, or ENOSPC at write-back) or file creation, or make a write short.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{DirEntry, DirLock, SegmentFile, Storage};

/// Granularity of torn writes.
const SECTOR_BYTES: usize = 512;
/// Granularity of syncs (the page cache writes whole pages back).
const PAGE_BYTES: u64 = 4096;

/// What a power loss keeps of the dirty pages (written, not yet written back). Pages whose
/// write-back failed are clean and never survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashMode {
    /// No dirty page survives.
    LoseUnsynced,
    /// Every dirty page survives (the kernel wrote everything back just before the power
    /// loss). A crash of the process alone is a reopen on the same disk instead.
    KeepUnsynced,
    /// Each changed 512-byte sector of a dirty page independently survives or not.
    TornSectors,
    /// Each changed dirty 4 KiB page independently survives or not.
    TornPages,
}

/// An operation of the simulated disk, as reported to the step hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Bytes were written to a file.
    Write,
    /// A file range was synced.
    Sync,
    /// A file was created.
    Create,
    /// A file was renamed.
    Rename,
    /// A file was removed.
    Remove,
    /// A directory was synced.
    SyncDir,
}

/// A fault to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The n-th write (counting from 1, from now) fails with EIO, changing nothing.
    FailWrite(u64),
    /// The n-th write writes only its first half, then fails with EIO.
    ShortWrite(u64),
    /// The n-th sync fails with EIO. As on Linux, every dirty page of the file is marked clean
    /// without being written: reads still return those bytes, a later sync does not write
    /// them, and a crash loses them.
    FailSync(u64),
    /// The n-th sync fails with ENOSPC (a file system that allocates at write-back, such as
    /// btrfs, found no room), with the same consequences as [`Fault::FailSync`].
    SyncNoSpace(u64),
    /// The n-th file creation or extension fails with ENOSPC.
    NoSpace(u64),
    /// The n-th reservation of a segment's space as it grows (counting from 1, from now)
    /// fails with ENOSPC, changing nothing. Counted apart from [`Fault::NoSpace`], so that
    /// growth does not shift the creations a test counts.
    NoSpaceToGrow(u64),
    /// The n-th removal of an existing file (counting from 1, from now) fails with EIO,
    /// removing nothing.
    FailRemove(u64),
}

/// A file's live bytes at a stable address, so reads can hand out slices like a mapping.
struct LiveBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: writes happen only under the disk's state lock, and readers only read ranges that
// no one writes concurrently (the `SegmentFile` contract), exactly as with a real mapping.
#[expect(
    unsafe_code,
    reason = "the simulated mapping is shared between threads like a real one"
)]
unsafe impl Sync for LiveBuf {}
// SAFETY: the buffer is plain owned memory.
#[expect(
    unsafe_code,
    reason = "the simulated mapping is a raw pointer to owned memory"
)]
unsafe impl Send for LiveBuf {}

#[expect(
    unsafe_code,
    reason = "readers get slices of the simulated mapping at a stable address, as with a real map"
)]
impl LiveBuf {
    fn new(bytes: Vec<u8>) -> Arc<LiveBuf> {
        let len = bytes.len();
        let ptr = Box::into_raw(bytes.into_boxed_slice()).cast::<u8>();
        Arc::new(LiveBuf { ptr, len })
    }

    fn len(&self) -> usize {
        self.len
    }

    fn slice(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset + len <= self.len, "read outside the simulated file");
        // SAFETY: in bounds (asserted); see the `Sync` impl for aliasing.
        unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len) }
    }

    /// Copies `data` in. Callers hold the state lock.
    fn write(&self, offset: usize, data: &[u8]) {
        assert!(
            offset + data.len() <= self.len,
            "write outside the simulated file"
        );
        // SAFETY: in bounds (asserted); writers are serialized by the state lock and no reader
        // looks at a range being written.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(offset), data.len()) }
    }

    fn to_vec(&self) -> Vec<u8> {
        self.slice(0, self.len).to_vec()
    }
}

#[expect(unsafe_code, reason = "frees the boxed slice `LiveBuf::new` leaked")]
impl Drop for LiveBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` came from `Box::into_raw` of a boxed slice of this length.
        drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(self.ptr, self.len)) });
    }
}

struct SimFile {
    live: Arc<LiveBuf>,
    durable: Vec<u8>,
    /// Indexes of the pages written since they were last written back or dropped.
    dirty: BTreeSet<usize>,
}

impl SimFile {
    /// A file whose live and durable images are both `bytes`.
    fn clean(bytes: Vec<u8>) -> SimFile {
        SimFile {
            live: LiveBuf::new(bytes.clone()),
            durable: bytes,
            dirty: BTreeSet::new(),
        }
    }

    /// The byte range of page `page`, cut at the end of the file.
    fn page_range(&self, page: usize) -> std::ops::Range<usize> {
        let start = page * PAGE_BYTES as usize;
        start..(start + PAGE_BYTES as usize).min(self.durable.len())
    }

    /// Writes back the dirty pages among `pages` (a successful sync) from `live`, the image
    /// the syncing handle maps (the file's own, unless it was extended since).
    fn write_back(&mut self, live: &LiveBuf, pages: std::ops::Range<usize>) {
        let due: Vec<usize> = self.dirty.range(pages).copied().collect();
        for page in due {
            let range = self.page_range(page);
            let end = range.end.min(live.len());
            if range.start < end {
                #[expect(
                    clippy::indexing_slicing,
                    reason = "the durable image has the file's length, and `end` is within it"
                )]
                self.durable[range.start..end]
                    .copy_from_slice(live.slice(range.start, end - range.start));
            }
            self.dirty.remove(&page);
        }
    }
}

enum DirOp {
    Create(PathBuf, u64),
    Rename(PathBuf, PathBuf),
    Remove(PathBuf),
}

#[derive(Default)]
struct DiskState {
    files: BTreeMap<u64, SimFile>,
    live_names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    pending_dir_ops: Vec<DirOp>,
    dirs: Vec<PathBuf>,
    next_id: u64,
    faults: Vec<Fault>,
    writes: u64,
    syncs: u64,
    creates: u64,
    reserves: u64,
    steps: u64,
}

type Hook = Box<dyn FnMut(&SimDisk, Step) + Send>;
type ConcurrentHook = Arc<dyn Fn(&SimDisk, Step) + Send + Sync>;

struct DiskInner {
    state: Mutex<DiskState>,
    hook: Mutex<Option<Hook>>,
    concurrent_hook: Mutex<Option<ConcurrentHook>>,
}

thread_local! {
    /// Set while this thread runs a concurrent hook, so that operations the hook makes do not
    /// call it again.
    static IN_CONCURRENT_HOOK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A simulated disk. Cloning gives another handle to the same disk.
#[derive(Clone)]
pub struct SimDisk {
    inner: Arc<DiskInner>,
}

impl std::fmt::Debug for SimDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimDisk")
            .field("steps", &self.steps())
            .finish()
    }
}

impl Default for SimDisk {
    fn default() -> Self {
        SimDisk::new()
    }
}

fn eio() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found on the simulated disk", path.display()),
    )
}

/// Counts a file creation or extension, failing it with ENOSPC when a fault is due.
fn allocate(state: &mut DiskState) -> io::Result<()> {
    state.creates += 1;
    let count = state.creates;
    match take_fault(
        &mut state.faults,
        |f| matches!(f, Fault::NoSpace(n) if *n == count),
    ) {
        Some(_) => Err(io::Error::from_raw_os_error(libc::ENOSPC)),
        None => Ok(()),
    }
}

/// Counts one removal down on every armed `FailRemove`; true when one of them is due now.
fn fail_this_removal(faults: &mut Vec<Fault>) -> bool {
    let mut due = false;
    faults.retain_mut(|fault| match fault {
        Fault::FailRemove(1) => {
            due = true;
            false
        }
        Fault::FailRemove(n) => {
            *n -= 1;
            true
        }
        _ => true,
    });
    due
}

/// Marks the pages of `file` that `len` bytes written at `offset` touch as dirty.
fn mark_dirty(state: &mut DiskState, file: u64, offset: usize, len: usize) {
    if len == 0 {
        return;
    }
    if let Some(file) = state.files.get_mut(&file) {
        let page = PAGE_BYTES as usize;
        file.dirty
            .extend(offset / page..(offset + len).div_ceil(page));
    }
}

/// Takes the fault due at this count, if any.
fn take_fault(faults: &mut Vec<Fault>, matches: impl Fn(&Fault) -> bool) -> Option<Fault> {
    let index = faults.iter().position(matches)?;
    Some(faults.remove(index))
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> SimDisk {
        SimDisk {
            inner: Arc::new(DiskInner {
                state: Mutex::new(DiskState::default()),
                hook: Mutex::new(None),
                concurrent_hook: Mutex::new(None),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, DiskState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Calls `hook` after every operation, with the disk and what the operation was. The hook
    /// may call [`SimDisk::crash`]; it must not operate on this disk's files.
    pub fn set_hook(&self, hook: impl FnMut(&SimDisk, Step) + Send + 'static) {
        *self
            .inner
            .hook
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Box::new(hook));
    }

    /// Calls `hook` after every operation of every thread, even while another thread is inside
    /// it: so a test can hold one thread at a chosen step (holding whatever locks it holds
    /// there) while others go on. An operation the hook itself makes does not call it again.
    /// Independent of [`SimDisk::set_hook`], whose calls never overlap.
    pub fn set_concurrent_hook(&self, hook: impl Fn(&SimDisk, Step) + Send + Sync + 'static) {
        *self
            .inner
            .concurrent_hook
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(hook));
    }

    /// Removes both hooks.
    pub fn clear_hook(&self) {
        *self
            .inner
            .concurrent_hook
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        *self
            .inner
            .hook
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }

    /// Operations performed so far.
    pub fn steps(&self) -> u64 {
        self.state().steps
    }

    /// Arms a fault. Counts start at the next operation of the fault's kind.
    pub fn inject(&self, fault: Fault) {
        let mut state = self.state();
        let fault = match fault {
            Fault::FailWrite(n) => Fault::FailWrite(state.writes + n),
            Fault::ShortWrite(n) => Fault::ShortWrite(state.writes + n),
            Fault::FailSync(n) => Fault::FailSync(state.syncs + n),
            Fault::SyncNoSpace(n) => Fault::SyncNoSpace(state.syncs + n),
            Fault::NoSpace(n) => Fault::NoSpace(state.creates + n),
            Fault::NoSpaceToGrow(n) => Fault::NoSpaceToGrow(state.reserves + n),
            // Counted down by each removal instead of against a running count.
            Fault::FailRemove(n) => Fault::FailRemove(n),
        };
        state.faults.push(fault);
    }

    /// Disarms every fault.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    fn after(&self, step: Step) {
        self.state().steps += 1;
        let concurrent = self
            .inner
            .concurrent_hook
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if let Some(hook) = concurrent
            && !IN_CONCURRENT_HOOK.with(|inside| inside.replace(true))
        {
            hook(self, step);
            IN_CONCURRENT_HOOK.with(|inside| inside.set(false));
        }
        let hook = self
            .inner
            .hook
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut hook) = hook {
            hook(self, step);
            let mut slot = self
                .inner
                .hook
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if slot.is_none() {
                *slot = Some(hook);
            }
        }
    }

    /// The disk as a power loss now could leave it. `seed` drives the random choices.
    pub fn crash(&self, mode: CrashMode, seed: u64) -> SimDisk {
        let mut rng = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut coin = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng & 1 == 1
        };
        let state = self.state();
        let mut names = state.durable_names.clone();
        let survivors = if state.pending_dir_ops.is_empty() {
            0
        } else {
            // An ordered journal: some prefix of the directory operations survives.
            (0..=state.pending_dir_ops.len()).filter(|_| coin()).count()
        };
        for op in state.pending_dir_ops.iter().take(survivors) {
            apply_dir_op(&mut names, op);
        }
        let mut crashed = DiskState {
            dirs: state.dirs.clone(),
            next_id: state.next_id,
            ..DiskState::default()
        };
        for (path, id) in &names {
            let Some(file) = state.files.get(id) else {
                continue;
            };
            let bytes = crash_image(file, mode, &mut coin);
            crashed.files.insert(*id, SimFile::clean(bytes));
            crashed.live_names.insert(path.clone(), *id);
        }
        crashed.durable_names = crashed.live_names.clone();
        SimDisk {
            inner: Arc::new(DiskInner {
                state: Mutex::new(crashed),
                hook: Mutex::new(None),
                concurrent_hook: Mutex::new(None),
            }),
        }
    }

    /// The live bytes of a file, for tests that damage or inspect files.
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let state = self.state();
        let id = state.live_names.get(path)?;
        Some(state.files.get(id)?.live.to_vec())
    }

    /// Replaces a file's bytes, live and durable (a test damaging the disk).
    pub fn overwrite_file(&self, path: &Path, bytes: Vec<u8>) {
        let mut state = self.state();
        let id = state.next_id;
        state.next_id += 1;
        state.files.insert(id, SimFile::clean(bytes));
        state.live_names.insert(path.to_path_buf(), id);
        state.durable_names.insert(path.to_path_buf(), id);
    }

    /// Names of the files in the live namespace.
    pub fn file_names(&self) -> Vec<PathBuf> {
        self.state().live_names.keys().cloned().collect()
    }
}

fn apply_dir_op(names: &mut BTreeMap<PathBuf, u64>, op: &DirOp) {
    match op {
        DirOp::Create(path, id) => {
            names.insert(path.clone(), *id);
        }
        DirOp::Rename(from, to) => {
            if let Some(id) = names.remove(from) {
                names.insert(to.clone(), id);
            }
        }
        DirOp::Remove(path) => {
            names.remove(path);
        }
    }
}

/// The durable image with some of the dirty pages' changed sectors or pages applied. Pages
/// that are not dirty are not written back by anyone: their live bytes are lost.
#[expect(
    clippy::indexing_slicing,
    reason = "the durable image has the file's length, and its dirty pages lie inside it"
)]
fn crash_image(file: &SimFile, mode: CrashMode, coin: &mut impl FnMut() -> bool) -> Vec<u8> {
    let mut image = file.durable.clone();
    let unit = match mode {
        CrashMode::LoseUnsynced => return image,
        CrashMode::KeepUnsynced => PAGE_BYTES as usize,
        CrashMode::TornSectors => SECTOR_BYTES,
        CrashMode::TornPages => PAGE_BYTES as usize,
    };
    for &page in &file.dirty {
        let range = file.page_range(page);
        let live = file.live.slice(range.start, range.len());
        for (i, chunk) in live.chunks(unit).enumerate() {
            let start = range.start + i * unit;
            let end = start + chunk.len();
            if image[start..end] != *chunk && (mode == CrashMode::KeepUnsynced || coin()) {
                image[start..end].copy_from_slice(chunk);
            }
        }
    }
    image
}

/// A file of the simulated disk, as the log sees it.
struct SimSegment {
    disk: SimDisk,
    id: u64,
    live: Arc<LiveBuf>,
}

impl std::fmt::Debug for SimSegment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimSegment").field("id", &self.id).finish()
    }
}

impl SimSegment {
    fn check(&self, offset: u64, len: u64) -> io::Result<(usize, usize)> {
        let end = offset.checked_add(len).filter(|&end| end <= self.len());
        match end {
            Some(_) => Ok((offset as usize, len as usize)),
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range outside the simulated file",
            )),
        }
    }
}

impl SegmentFile for SimSegment {
    fn len(&self) -> u64 {
        self.live.len() as u64
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<&[u8]> {
        let (offset, len) = self.check(offset, len as u64)?;
        Ok(self.live.slice(offset, len))
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let (start, len) = self.check(offset, data.len() as u64)?;
        {
            let mut state = self.disk.state();
            state.writes += 1;
            let count = state.writes;
            let fault = take_fault(
                &mut state.faults,
                |f| matches!(f, Fault::FailWrite(n) | Fault::ShortWrite(n) if *n == count),
            );
            match fault {
                Some(Fault::FailWrite(_)) => return Err(eio()),
                Some(Fault::ShortWrite(_)) => {
                    let half = len / 2;
                    let (first_half, _) = data.split_at(half);
                    self.live.write(start, first_half);
                    mark_dirty(&mut state, self.id, start, half);
                    drop(state);
                    self.disk.after(Step::Write);
                    return Err(eio());
                }
                _ => {
                    self.live.write(start, data);
                    mark_dirty(&mut state, self.id, start, len);
                }
            }
        }
        self.disk.after(Step::Write);
        Ok(())
    }

    fn sync(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)?;
        {
            let mut state = self.disk.state();
            state.syncs += 1;
            let count = state.syncs;
            let fault = take_fault(
                &mut state.faults,
                |f| matches!(f, Fault::FailSync(n) | Fault::SyncNoSpace(n) if *n == count),
            );
            let file = state.files.get_mut(&self.id);
            if let Some(fault) = fault {
                // The kernel gives up on every dirty page of the file and reports it once.
                if let Some(file) = file {
                    file.dirty.clear();
                }
                return Err(match fault {
                    Fault::SyncNoSpace(_) => io::Error::from_raw_os_error(libc::ENOSPC),
                    _ => eio(),
                });
            }
            let first = (offset / PAGE_BYTES) as usize;
            let end = (offset + len).div_ceil(PAGE_BYTES) as usize;
            if let Some(file) = file {
                file.write_back(&self.live, first..end);
            }
        }
        self.disk.after(Step::Sync);
        Ok(())
    }

    fn reserve(&self, offset: u64, len: u64) -> io::Result<()> {
        self.check(offset, len)?;
        {
            let mut state = self.disk.state();
            state.reserves += 1;
            let count = state.reserves;
            if take_fault(
                &mut state.faults,
                |f| matches!(f, Fault::NoSpaceToGrow(n) if *n == count),
            )
            .is_some()
            {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        // Space is not modelled: a reservation changes no byte, so a crash right after it
        // leaves the same images as a crash right before it, and it is no crash point.
        Ok(())
    }

    fn zero_to_end(&self, from: u64) -> io::Result<()> {
        if from >= self.len() {
            return Ok(());
        }
        let zeros = vec![0u8; (self.len() - from) as usize];
        self.write(from, &zeros)?;
        self.sync(from, self.len() - from)
    }
}

impl Storage for SimDisk {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut state = self.state();
        if !state.dirs.iter().any(|d| d == dir) {
            state.dirs.push(dir.to_path_buf());
        }
        Ok(())
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<DirEntry>> {
        let state = self.state();
        if !state.dirs.iter().any(|d| d == dir) {
            return Err(not_found(dir));
        }
        Ok(state
            .live_names
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .map(|path| DirEntry {
                name: path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path: path.clone(),
                is_file: true,
            })
            .collect())
    }

    fn create_segment(
        &self,
        path: &Path,
        len: u64,
        _reserved: u64,
    ) -> io::Result<Box<dyn SegmentFile>> {
        let live = {
            let mut state = self.state();
            allocate(&mut state)?;
            if state.live_names.contains_key(path) {
                return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
            }
            let id = state.next_id;
            state.next_id += 1;
            let file = SimFile::clean(vec![0; len as usize]);
            let live = file.live.clone();
            state.files.insert(id, file);
            state.live_names.insert(path.to_path_buf(), id);
            state
                .pending_dir_ops
                .push(DirOp::Create(path.to_path_buf(), id));
            (id, live)
        };
        self.after(Step::Create);
        Ok(Box::new(SimSegment {
            disk: self.clone(),
            id: live.0,
            live: live.1,
        }))
    }

    fn open_segment(&self, path: &Path, _writable: bool) -> io::Result<Box<dyn SegmentFile>> {
        let state = self.state();
        let id = *state.live_names.get(path).ok_or_else(|| not_found(path))?;
        let live = state
            .files
            .get(&id)
            .ok_or_else(|| not_found(path))?
            .live
            .clone();
        Ok(Box::new(SimSegment {
            disk: self.clone(),
            id,
            live,
        }))
    }

    fn extend_file(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut state = self.state();
        allocate(&mut state)?;
        let id = *state.live_names.get(path).ok_or_else(|| not_found(path))?;
        let file = state.files.get_mut(&id).ok_or_else(|| not_found(path))?;
        let mut bytes = file.live.to_vec();
        bytes.resize(len as usize, 0);
        file.durable.resize(len as usize, 0);
        file.live = LiveBuf::new(bytes);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        {
            let mut state = self.state();
            let id = state
                .live_names
                .remove(from)
                .ok_or_else(|| not_found(from))?;
            state.live_names.insert(to.to_path_buf(), id);
            state
                .pending_dir_ops
                .push(DirOp::Rename(from.to_path_buf(), to.to_path_buf()));
        }
        self.after(Step::Rename);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        {
            let mut state = self.state();
            if !state.live_names.contains_key(path) {
                return Err(not_found(path));
            }
            if fail_this_removal(&mut state.faults) {
                return Err(eio());
            }
            state.live_names.remove(path);
            state
                .pending_dir_ops
                .push(DirOp::Remove(path.to_path_buf()));
        }
        self.after(Step::Remove);
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        {
            let mut state = self.state();
            state.durable_names = state.live_names.clone();
            state.pending_dir_ops.clear();
        }
        self.after(Step::SyncDir);
        Ok(())
    }

    fn read_small_file(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        Ok(self.read_file(path))
    }

    fn write_small_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        // Written durably in one step, as the real implementation does with a temporary
        // file, fsync, rename and a directory sync.
        self.overwrite_file(path, bytes.to_vec());
        Ok(())
    }

    fn lock_dir(&self, _dir: &Path) -> crate::Result<Option<DirLock>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "/sim/file";
    const LEN: u64 = 4 * PAGE_BYTES;

    fn disk_with_file() -> (SimDisk, Box<dyn SegmentFile>) {
        let disk = SimDisk::new();
        disk.create_dir_all(Path::new("/sim")).unwrap();
        let file = disk.create_segment(Path::new(FILE), LEN, LEN).unwrap();
        disk.sync_dir(Path::new("/sim")).unwrap();
        (disk, file)
    }

    /// The bytes a power loss in `mode` leaves at `offset..offset + len` of the file.
    fn after_crash(disk: &SimDisk, mode: CrashMode, offset: usize, len: usize) -> Vec<u8> {
        let crashed = disk.crash(mode, 1);
        let bytes = crashed
            .read_file(Path::new(FILE))
            .expect("the file survives");
        bytes[offset..offset + len].to_vec()
    }

    #[test]
    fn a_synced_write_survives_every_crash_and_an_unsynced_one_only_some() {
        let (disk, file) = disk_with_file();
        file.write(100, b"synced").unwrap();
        file.sync(0, LEN).unwrap();
        file.write(5000, b"unsynced").unwrap();
        for mode in [
            CrashMode::LoseUnsynced,
            CrashMode::KeepUnsynced,
            CrashMode::TornSectors,
            CrashMode::TornPages,
        ] {
            assert_eq!(after_crash(&disk, mode, 100, 6), b"synced", "{mode:?}");
        }
        assert_eq!(after_crash(&disk, CrashMode::LoseUnsynced, 5000, 8), [0; 8]);
        assert_eq!(
            after_crash(&disk, CrashMode::KeepUnsynced, 5000, 8),
            b"unsynced"
        );
    }

    #[test]
    fn a_sync_writes_back_only_the_dirty_pages_of_its_range() {
        let (disk, file) = disk_with_file();
        file.write(10, b"first page").unwrap();
        file.write(PAGE_BYTES * 2 + 10, b"third page").unwrap();
        file.sync(PAGE_BYTES * 2, 20).unwrap();
        let crashed = disk.crash(CrashMode::LoseUnsynced, 0);
        let bytes = crashed.read_file(Path::new(FILE)).unwrap();
        assert_eq!(&bytes[10..20], [0; 10], "outside the synced range");
        let third = (PAGE_BYTES * 2 + 10) as usize;
        assert_eq!(&bytes[third..third + 10], b"third page");
    }

    #[test]
    fn a_failed_sync_drops_every_dirty_page_of_the_file_for_good() {
        let (disk, file) = disk_with_file();
        file.write(10, b"acknowledged").unwrap();
        file.sync(0, PAGE_BYTES).unwrap();
        // Two dirty pages: one in the range of the sync that fails, one outside it.
        file.write(PAGE_BYTES + 10, b"failed").unwrap();
        file.write(PAGE_BYTES * 3 + 10, b"elsewhere").unwrap();
        disk.inject(Fault::FailSync(1));
        let err = file.sync(PAGE_BYTES, 100).expect_err("the fault fires");
        assert_eq!(err.raw_os_error(), Some(libc::EIO));
        // The error is reported once: a later sync of the same range and of the whole file
        // succeeds, and writes nothing.
        file.sync(PAGE_BYTES, 100).unwrap();
        file.sync(0, LEN).unwrap();
        // The page cache still returns the bytes.
        assert_eq!(file.read(PAGE_BYTES + 10, 6).unwrap(), b"failed");
        assert_eq!(file.read(PAGE_BYTES * 3 + 10, 9).unwrap(), b"elsewhere");
        for mode in [
            CrashMode::LoseUnsynced,
            CrashMode::KeepUnsynced,
            CrashMode::TornSectors,
            CrashMode::TornPages,
        ] {
            let at = PAGE_BYTES as usize;
            assert_eq!(after_crash(&disk, mode, at + 10, 6), [0; 6], "{mode:?}");
            assert_eq!(after_crash(&disk, mode, 3 * at + 10, 9), [0; 9], "{mode:?}");
            assert_eq!(
                after_crash(&disk, mode, 10, 12),
                b"acknowledged",
                "{mode:?}"
            );
        }
    }

    #[test]
    fn a_page_written_again_after_a_failed_sync_is_written_back_whole() {
        let (disk, file) = disk_with_file();
        file.write(10, b"lost").unwrap();
        disk.inject(Fault::FailSync(1));
        file.sync(0, PAGE_BYTES).unwrap_err();
        // A new write to the same page dirties it again: its write-back carries the whole
        // page, the dropped bytes included, as the kernel writes whole pages.
        file.write(20, b"again").unwrap();
        file.sync(0, PAGE_BYTES).unwrap();
        assert_eq!(after_crash(&disk, CrashMode::LoseUnsynced, 10, 4), b"lost");
        assert_eq!(after_crash(&disk, CrashMode::LoseUnsynced, 20, 5), b"again");
    }

    #[test]
    fn a_sync_without_space_fails_with_enospc_and_drops_the_pages_too() {
        let (disk, file) = disk_with_file();
        file.write(10, b"no room").unwrap();
        disk.inject(Fault::SyncNoSpace(1));
        let err = file.sync(0, PAGE_BYTES).expect_err("the fault fires");
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC));
        file.sync(0, PAGE_BYTES).unwrap();
        assert_eq!(file.read(10, 7).unwrap(), b"no room");
        assert_eq!(after_crash(&disk, CrashMode::KeepUnsynced, 10, 7), [0; 7]);
    }

    #[test]
    fn a_torn_crash_keeps_only_bytes_that_were_written() {
        let (disk, file) = disk_with_file();
        let data = vec![0xab; LEN as usize];
        file.write(0, &data).unwrap();
        for seed in 0..8 {
            for mode in [CrashMode::TornSectors, CrashMode::TornPages] {
                let crashed = disk.crash(mode, seed);
                let bytes = crashed.read_file(Path::new(FILE)).unwrap();
                let unit = if mode == CrashMode::TornPages {
                    PAGE_BYTES as usize
                } else {
                    SECTOR_BYTES
                };
                for chunk in bytes.chunks(unit) {
                    assert!(
                        chunk.iter().all(|&b| b == 0) || chunk.iter().all(|&b| b == 0xab),
                        "{mode:?} seed {seed}: a unit is torn inside"
                    );
                }
            }
        }
    }
}
