//! The floors: what the hardware and the kernel allow with no store at all, measured in the
//! same run as the stores so that their ratios survive a noisy machine.
//!
//! - raw: one thread, `pwrite` of the checkpoint's bytes at an advancing offset of a
//!   preallocated file, then `fdatasync`: the least a durable save can cost;
//! - group commit: N threads, one file, a simple leader/follower protocol, one `fdatasync` per
//!   batch: what a plain group commit gets from the same disk;
//! - copy + CRC: copy the bytes into an in-memory log and compute their CRC32: the least a
//!   save that only reaches the page cache can cost;
//! - pwrite: the raw floor's `pwrite` without its `fdatasync`: the least a save costs that
//!   must survive a crash of the process without writing through a shared map (cairn's
//!   `Buffered` and `OsOnly` promise that, and write with `pwrite`: ARCHITECTURE.md,
//!   "Writing records").

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::measure::{BenchResult, Peer, Saver};
use crate::payload::StampedJson;

/// The floors' files are as large as a cairn segment; offsets wrap around at the end.
const FILE_BYTES: u64 = 64 * 1024 * 1024;

/// A fresh file of `FILE_BYTES` in `dir`, allocated up front as cairn allocates a segment.
fn preallocated_file(dir: &Path, name: &str) -> BenchResult<File> {
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join(name))?;
    // SAFETY: a plain system call on a descriptor this function owns.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, FILE_BYTES as libc::off_t) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc).into());
    }
    Ok(file)
}

/// The offset of the `index`-th record of `len` bytes, wrapping around at the end of the file.
fn wrapped_offset(index: u64, len: u64) -> u64 {
    let records_per_file = FILE_BYTES / len;
    (index % records_per_file) * len
}

/// pwrite + fdatasync per save, one writer; or, as the pwrite floor, the `pwrite` alone.
pub struct RawFloor {
    file: File,
    json: StampedJson,
    sync: bool,
}

impl RawFloor {
    pub fn new(dir: &Path, json: &StampedJson) -> BenchResult<RawFloor> {
        let file = preallocated_file(dir, "raw-floor")?;
        Ok(RawFloor {
            file,
            json: json.clone(),
            sync: true,
        })
    }

    /// The `pwrite` floor: the least a save costs that must survive a crash of the process
    /// (it must reach the kernel before it returns) without writing through a shared map.
    pub fn pwrite_only(dir: &Path, json: &StampedJson) -> BenchResult<RawFloor> {
        let file = preallocated_file(dir, "pwrite-floor")?;
        Ok(RawFloor {
            file,
            json: json.clone(),
            sync: false,
        })
    }
}

impl Peer for RawFloor {
    fn saver(&self, writer: usize) -> BenchResult<Box<dyn Saver + '_>> {
        if writer != 0 {
            return Err("the raw floor has one writer".into());
        }
        Ok(Box::new(RawSaver {
            file: &self.file,
            json: self.json.clone(),
            sync: self.sync,
            index: 0,
        }))
    }
}

struct RawSaver<'a> {
    file: &'a File,
    json: StampedJson,
    sync: bool,
    index: u64,
}

impl Saver for RawSaver<'_> {
    fn save(&mut self) -> BenchResult<()> {
        let offset = wrapped_offset(self.index, self.json.len() as u64);
        self.file
            .write_all_at(self.json.stamp(self.index), offset)?;
        if self.sync {
            self.file.sync_data()?;
        }
        self.index += 1;
        Ok(())
    }
}

/// Leader/follower group commit on one file: a writer reserves an offset, writes its bytes
/// there, then either waits for a sync that started after its write, or, when no sync is
/// running, becomes the leader and syncs everything written so far.
pub struct GroupCommitFloor {
    file: File,
    json: StampedJson,
    state: Mutex<GroupState>,
    synced: Condvar,
    syncs: AtomicU64,
}

#[derive(Default)]
struct GroupState {
    /// Records given an offset so far.
    reserved: u64,
    /// Records whose write returned so far. Any sync that starts later covers them all.
    written: u64,
    /// Records known to be on stable storage: `written` as it was when the last finished sync
    /// started.
    durable: u64,
    syncing: bool,
}

impl GroupCommitFloor {
    pub fn new(dir: &Path, json: &StampedJson) -> BenchResult<GroupCommitFloor> {
        let file = preallocated_file(dir, "group-commit-floor")?;
        Ok(GroupCommitFloor {
            file,
            json: json.clone(),
            state: Mutex::new(GroupState::default()),
            synced: Condvar::new(),
            syncs: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, GroupState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn save(&self, bytes: &[u8]) -> BenchResult<()> {
        let index = {
            let mut state = self.lock();
            state.reserved += 1;
            state.reserved - 1
        };
        let offset = wrapped_offset(index, bytes.len() as u64);
        self.file.write_all_at(bytes, offset)?;
        let mut state = self.lock();
        state.written += 1;
        let mine = state.written;
        while state.durable < mine {
            if state.syncing {
                state = self
                    .synced
                    .wait(state)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            }
            state.syncing = true;
            let covered = state.written;
            drop(state);
            let result = self.file.sync_data();
            self.syncs.fetch_add(1, Ordering::Relaxed);
            state = self.lock();
            state.syncing = false;
            if result.is_ok() {
                state.durable = state.durable.max(covered);
            }
            self.synced.notify_all();
            result?;
        }
        Ok(())
    }
}

impl Peer for GroupCommitFloor {
    fn saver(&self, _writer: usize) -> BenchResult<Box<dyn Saver + '_>> {
        Ok(Box::new(GroupSaver {
            floor: self,
            json: self.json.clone(),
            save_number: 0,
        }))
    }

    fn syncs(&self) -> Option<u64> {
        Some(self.syncs.load(Ordering::Relaxed))
    }
}

struct GroupSaver<'a> {
    floor: &'a GroupCommitFloor,
    json: StampedJson,
    save_number: u64,
}

impl Saver for GroupSaver<'_> {
    fn save(&mut self) -> BenchResult<()> {
        self.save_number += 1;
        self.floor.save(self.json.stamp(self.save_number))
    }
}

/// Copy + CRC32 per save into an in-memory log, one writer.
pub struct CopyCrcFloor {
    json: StampedJson,
}

impl CopyCrcFloor {
    pub fn new(json: &StampedJson) -> CopyCrcFloor {
        CopyCrcFloor { json: json.clone() }
    }
}

impl Peer for CopyCrcFloor {
    fn saver(&self, writer: usize) -> BenchResult<Box<dyn Saver + '_>> {
        if writer != 0 {
            return Err("the copy + CRC floor has one writer".into());
        }
        // Touched once here, so that page faults do not land in the timed loop.
        let log = vec![1u8; FILE_BYTES as usize];
        Ok(Box::new(CopyCrcSaver {
            json: self.json.clone(),
            log,
            index: 0,
        }))
    }
}

struct CopyCrcSaver {
    json: StampedJson,
    log: Vec<u8>,
    index: u64,
}

impl Saver for CopyCrcSaver {
    fn save(&mut self) -> BenchResult<()> {
        let len = self.json.len();
        let offset = wrapped_offset(self.index, len as u64) as usize;
        let slot = self
            .log
            .get_mut(offset..offset + len)
            .ok_or("a record past the end of the in-memory log")?;
        slot.copy_from_slice(self.json.stamp(self.index));
        std::hint::black_box(crc32fast::hash(slot));
        self.index += 1;
        Ok(())
    }
}
