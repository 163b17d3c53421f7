//! The writer lock: one writing process per store directory.
//!
//! `LOCK` in the store directory is locked with `flock` (through `File::try_lock`) for as long
//! as the writer lives, and holds `pid=<pid> host=<host>` so that a refused opener can name the
//! holder. The kernel drops the lock when the holder dies, so a stale file never blocks anyone.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

pub(crate) const LOCK_FILE: &str = "LOCK";

/// Held for the life of a writable store; dropping it releases the lock.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub fn acquire(dir: &Path) -> Result<DirLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Locked {
                    path,
                    holder: if holder.is_empty() {
                        "unknown holder".into()
                    } else {
                        holder.into()
                    },
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
        write_holder(&mut file, &path)?;
        Ok(DirLock { _file: file })
    }
}

fn write_holder(file: &mut File, path: &PathBuf) -> Result<()> {
    let text = format!("pid={} host={}\n", std::process::id(), hostname());
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(text.as_bytes()))
        .map_err(|e| Error::io_or_disk_full("write lock file", path, text.len() as u64, e))
}

#[expect(unsafe_code, reason = "gethostname has no safe wrapper in std")]
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or
    // truncates, and we stop at the first NUL either way.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(buf.get(..end).unwrap_or_default()).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder_and_release_frees_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = DirLock::acquire(dir.path()).expect("first lock");
        let err = DirLock::acquire(dir.path()).expect_err("second lock must fail");
        match err {
            Error::Locked { holder, .. } => {
                assert!(
                    holder.contains(&format!("pid={}", std::process::id())),
                    "{holder}"
                );
                assert!(holder.contains("host="), "{holder}");
            }
            other => panic!("unexpected error {other}"),
        }
        drop(first);
        DirLock::acquire(dir.path()).expect("lock free again after release");
    }
}
