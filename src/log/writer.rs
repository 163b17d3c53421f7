//! The single writer: appends records to the newest segment and rolls over to a new segment
//! when it is full.

use std::hash::{BuildHasher, RandomState};
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::{
    RecordHeader, RecordKind, SEGMENT_HEADER_LEN, encode_record, padded_record_len,
};
use crate::storage::Storage;

use super::recovery::Tail;
use super::segment::Segment;

/// Room kept free at the end of every segment for its seal record.
const SEAL_LEN: u64 = padded_record_len(0) as u64;

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    pub seq: u64,
    pub segment_id: u64,
    pub offset: u64,
    /// Bytes the record takes on disk, header and padding included.
    pub bytes: u64,
}

/// A failed write: `Clean` left the log as it was (e.g. no space for a new segment);
/// `Poisoning` may have left bytes of unknown state and must poison the log.
#[derive(Debug)]
pub(crate) enum WriteFailure {
    Clean(Error),
    Poisoning(Error),
}

impl WriteFailure {
    /// The error, for callers that stop using the writer on any failure.
    pub fn into_error(self) -> Error {
        match self {
            WriteFailure::Clean(error) | WriteFailure::Poisoning(error) => error,
        }
    }
}

#[derive(Debug)]
pub(crate) struct Writer {
    segment: Arc<Segment>,
    /// Where the next record goes.
    offset: u64,
    next_seq: u64,
    segment_size: u64,
    /// Reused encoding buffer.
    buf: Vec<u8>,
}

/// A random salt for a new segment.
pub(crate) fn new_salt() -> u32 {
    // RandomState is seeded from the OS per process; hashing a counter-like value gives
    // independent salts for successive segments.
    let value = RandomState::new().hash_one(std::time::SystemTime::now());
    (value ^ (value >> 32)) as u32
}

impl Writer {
    /// Positions the writer after recovery: at the end of the tail segment, or in a new
    /// segment when there is none or it cannot take more records.
    pub fn resume(
        storage: &dyn Storage,
        dir: &Path,
        tail: Option<Tail>,
        next_seq: u64,
        max_segment_id: u64,
        segment_size: u64,
    ) -> Result<Writer> {
        let (segment, offset) = match tail {
            Some(tail)
                if !tail.sealed && tail.valid_end + SEAL_LEN <= tail.segment.usable_len() =>
            {
                (tail.segment, tail.valid_end)
            }
            _ => {
                let segment = Segment::create(
                    storage,
                    dir,
                    max_segment_id + 1,
                    next_seq,
                    segment_size,
                    new_salt(),
                )?;
                (Arc::new(segment), SEGMENT_HEADER_LEN as u64)
            }
        };
        Ok(Writer {
            segment,
            offset,
            next_seq,
            segment_size,
            buf: Vec::new(),
        })
    }

    pub fn segment(&self) -> Arc<Segment> {
        self.segment.clone()
    }

    /// The size of new segments.
    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    pub fn segment_id(&self) -> u64 {
        self.segment.id
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Whether a record with this body fits in the current segment, with room for the seal.
    pub fn fits(&self, body_len: usize) -> bool {
        self.offset + padded_record_len(body_len) as u64 + SEAL_LEN <= self.segment.usable_len()
    }

    /// Writes one record at the end of the current segment. The caller checked `fits`.
    pub fn append(
        &mut self,
        kind: RecordKind,
        body: &[u8],
        durable_seq: u64,
    ) -> Result<Appended, WriteFailure> {
        assert!(
            self.fits(body.len()),
            "append without room: the caller must roll over first"
        );
        self.write_record(kind, body, durable_seq)
    }

    fn write_record(
        &mut self,
        kind: RecordKind,
        body: &[u8],
        durable_seq: u64,
    ) -> Result<Appended, WriteFailure> {
        assert!(self.offset + padded_record_len(body.len()) as u64 <= self.segment.usable_len());
        let header = RecordHeader {
            seq: self.next_seq,
            durable_seq,
            body_len: u32::try_from(body.len())
                .map_err(|_| WriteFailure::Clean(Error::invalid("record", "body over 4 GiB")))?,
            kind,
        };
        encode_record(self.segment.header.salt, &header, body, &mut self.buf);
        self.segment
            .file
            .write(self.offset, &self.buf)
            .map_err(|e| self.write_failure(e))?;
        let appended = Appended {
            seq: self.next_seq,
            segment_id: self.segment.id,
            offset: self.offset,
            bytes: self.buf.len() as u64,
        };
        self.offset += self.buf.len() as u64;
        self.next_seq += 1;
        self.segment.publish(self.offset);
        Ok(appended)
    }

    /// What a failed record write means. A full disk (ENOSPC, EDQUOT: `pwrite` reports it, where
    /// a store through a mapping would have been a SIGBUS) is clean: `offset` and `next_seq`
    /// stay where they were, so the next record overwrites whatever part of this one reached
    /// the page cache. Those bytes lie past the published end, so no reader sees them; if the
    /// process dies first they are an incomplete record that fails its CRC, and recovery
    /// treats garbage after the last valid record as a torn tail, which proves nothing durable
    /// and is cut off. Any other error leaves the file in an unknown state and poisons.
    fn write_failure(&self, e: std::io::Error) -> WriteFailure {
        if super::segment::is_disk_full(&e) {
            WriteFailure::Clean(Error::DiskFull {
                path: self.segment.path.clone(),
                needed_bytes: self.buf.len() as u64,
                source: e,
            })
        } else {
            WriteFailure::Poisoning(Error::io("write record", &self.segment.path, e))
        }
    }

    /// Creates the next segment, then seals and fully syncs the current one, and switches.
    /// Returns the seal's sequence number: everything up to it is now durable.
    ///
    /// The order matters: if the new segment cannot be created (a full disk) nothing has
    /// changed; a crash after creation but before the seal is durable leaves an empty newest
    /// segment, which recovery recognizes and removes.
    pub fn rollover(
        &mut self,
        storage: &dyn Storage,
        dir: &Path,
        durable_seq: u64,
    ) -> Result<u64, WriteFailure> {
        let seal_seq = self.next_seq;
        let next = Segment::create(
            storage,
            dir,
            self.segment.id + 1,
            seal_seq + 1,
            self.segment_size,
            new_salt(),
        )
        .map_err(WriteFailure::Clean)?;
        let appended = match self.write_record(RecordKind::Seal, &[], durable_seq) {
            Ok(appended) => appended,
            // The seal did not fit on the disk: take the new, empty segment back, so that the
            // log on disk is what it was. If that fails, the empty segment would follow an
            // unsealed one: poison, and let the next open sort it out (FORMAT.md).
            Err(WriteFailure::Clean(error)) => {
                let removed = storage
                    .remove_file(&next.path)
                    .and_then(|()| storage.sync_dir(dir));
                return Err(match removed {
                    Ok(()) => WriteFailure::Clean(error),
                    Err(_) => WriteFailure::Poisoning(error),
                });
            }
            Err(failure) => return Err(failure),
        };
        debug_assert_eq!(appended.seq, seal_seq);
        self.segment.sync_to(self.offset).map_err(|e| {
            WriteFailure::Poisoning(super::segment::sync_error(
                "sync sealed segment",
                &self.segment.path,
                e,
            ))
        })?;
        self.segment = Arc::new(next);
        self.offset = SEGMENT_HEADER_LEN as u64;
        assert_eq!(self.segment.header.first_seq, self.next_seq);
        Ok(seal_seq)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::storage::faulty::{Faults, FaultyStorage};
    use crate::{Durability, Options, Store};

    fn faulty_store(dir: &std::path::Path, options: Options) -> (Store, Arc<Faults>) {
        let storage = FaultyStorage::default();
        let faults = storage.faults.clone();
        let store = Store::open_on(Arc::new(storage), dir, options, false).expect("open");
        (store, faults)
    }

    fn values(store: &Store) -> Vec<u64> {
        let history = store.history("job").expect("history");
        history.iter().filter_map(|c| c.data.as_u64()).collect()
    }

    #[test]
    fn a_full_disk_at_a_record_write_is_clean_and_saves_resume_once_space_is_free() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, faults) = faulty_store(dir.path(), Options::default());
        for i in 0..5u64 {
            store.save("job", "p", &i).expect("save");
        }
        faults.write_full.store(true, Ordering::SeqCst);
        for _ in 0..2 {
            // Not poisoned: every attempt tries again and fails the same clean way.
            let err = store
                .save("job", "p", &99u64)
                .expect_err("the disk is full");
            assert!(
                matches!(err, Error::DiskFull { needed_bytes, .. } if needed_bytes > 0),
                "{err:?}"
            );
            assert!(err.to_string().contains("free space and retry"), "{err}");
        }
        assert_eq!(
            values(&store),
            [0, 1, 2, 3, 4],
            "a failed save is not visible"
        );
        faults.write_full.store(false, Ordering::SeqCst);
        // Space is free again: the same store, without a reopen, takes saves, and the next
        // record overwrites the partial bytes the failed writes left.
        for i in 5..8u64 {
            store.save("job", "p", &i).expect("save once space is free");
        }
        store.close().expect("close");
        let store = Store::open(dir.path()).expect("reopen");
        assert!(store.recovery_report().is_clean(), "no damage left behind");
        assert_eq!(values(&store), [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn a_full_disk_at_a_seal_sync_is_disk_full_and_poisons() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Unsynced saves: the only sync is the seal's, at the rollover.
        let options = Options::default()
            .segment_size(64 * 1024)
            .durability(Durability::OsOnly);
        let (store, faults) = faulty_store(dir.path(), options.clone());
        faults.sync_full.store(true, Ordering::SeqCst);
        let payload = "x".repeat(1000);
        let mut acknowledged = 0u64;
        let err = loop {
            match store.save("job", "p", &payload) {
                Ok(_) => acknowledged += 1,
                Err(err) => break err,
            }
        };
        assert!(
            matches!(err, Error::DiskFull { .. }),
            "the failed sync is disk full: {err:?}"
        );
        let again = store.save("job", "p", &payload).expect_err("poisoned");
        assert!(
            matches!(&again, Error::Poisoned { cause } if cause.contains("disk full")),
            "the poisoned store says why: {again:?}"
        );
        faults.sync_full.store(false, Ordering::SeqCst);
        drop(store);
        let store = Store::open_with(dir.path(), options).expect("reopen");
        let history = store.history("job").expect("history");
        assert!(
            history.len() as u64 >= acknowledged,
            "nothing acknowledged is lost"
        );
    }
}
