//! Compaction at the log level: which segments may be compacted, writing the compacted
//! segment that replaces them, and switching readers over to it. What to keep is the store's
//! decision (`store/compact.rs`); the protocol is in docs/FORMAT.md, "Compaction".

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::format::{
    FORMAT_VERSION, MAX_SEGMENT_LEN, MIN_COMPACTED_LEN, RecordHeader, RecordKind,
    SEGMENT_HEADER_LEN, SegmentHeader, decode_checkpoint_body, encode_checkpoint_body,
    encode_record, padded_record_len,
};

use super::segment::{Segment, segment_file_name};
use super::{Log, RecordVisitor, lock};

/// A record compaction keeps: where it is now.
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    pub segment: Arc<Segment>,
    pub offset: u64,
}

impl Log {
    /// The segments no longer written to, oldest first: every segment before the writer's
    /// current one (for a read-only log, every segment but the newest).
    pub fn sealed_segments(&self) -> Vec<Arc<Segment>> {
        let current = match &self.writer {
            Some(writer) => lock(writer).segment_id(),
            None => self
                .segments_read()
                .keys()
                .next_back()
                .copied()
                .unwrap_or(0),
        };
        self.segments_read()
            .range(..current)
            .map(|(_, segment)| segment.clone())
            .collect()
    }

    /// Every segment, oldest first.
    pub fn all_segments(&self) -> Vec<Arc<Segment>> {
        self.segments_read().values().cloned().collect()
    }

    /// Bytes of disk taken by the segments after `upto` (those a compaction up to it keeps).
    pub fn bytes_after(&self, upto: u64) -> u64 {
        self.segments_read()
            .range(upto + 1..)
            .map(|(_, s)| s.file.len())
            .sum()
    }

    /// The first sequence number of the segment after `id`.
    pub fn first_seq_after(&self, id: u64) -> Option<u64> {
        self.segments_read()
            .range(id + 1..)
            .next()
            .map(|(_, s)| s.header.first_seq)
    }

    /// The length of the compacted segment, if there is one: about what the next compaction
    /// writes beside the files it replaces.
    pub fn last_compacted_bytes(&self) -> u64 {
        self.segments_read()
            .values()
            .find(|s| s.header.compacted)
            .map_or(0, |s| s.file.len())
    }

    /// Counts `bytes` of a compacted file about to be written against the size limit, and
    /// returns the bytes of segment files at that moment. Under the writer lock: a saver
    /// checks the limit and creates its segment under it, so the two never interleave.
    pub fn reserve_compaction(&self, bytes: u64) -> u64 {
        let _writer = self.writer.as_ref().map(lock);
        self.compaction_bytes.store(bytes, Ordering::Release);
        self.storage_bytes()
    }

    /// Whether the next record of `body_len` bytes would need a new segment.
    pub fn needs_new_segment(&self, body_len: usize) -> bool {
        self.writer
            .as_ref()
            .is_some_and(|writer| !lock(writer).fits(body_len))
    }

    /// Writes the compacted segment that replaces `range` (the oldest segments, up to and
    /// including the last one of the range, whose id it takes): `kept` in order, each with
    /// its sequence number, then a snapshot record with `snapshot_seq` (the last sequence
    /// number of the range) and body `snapshot`. Returns the segment, renamed into place and
    /// durable, and the offset of each kept record in it.
    pub fn write_compacted(
        &self,
        range: &[Arc<Segment>],
        kept: &[Kept],
        snapshot_seq: u64,
        snapshot: &[u8],
    ) -> Result<(Arc<Segment>, Vec<u64>)> {
        let (Some(first), Some(last)) = (range.first(), range.last()) else {
            return Err(Error::invalid("compaction", "nothing to compact"));
        };
        // Bodies of format-1 segments are re-encoded in this build's format.
        let mut records: Vec<(RecordHeader, std::borrow::Cow<'_, [u8]>)> =
            Vec::with_capacity(kept.len());
        for item in kept {
            let (header, body) = item.segment.read_record(item.offset)?;
            let body = if item.segment.header.version < 2 {
                let decoded = decode_checkpoint_body(item.segment.header.version, body)
                    .map_err(|e| self.corrupt(item.segment.id, item.offset, e))?;
                let mut encoded = Vec::new();
                encode_checkpoint_body(&decoded, false, &mut encoded)
                    .map_err(|e| self.corrupt(item.segment.id, item.offset, e))?;
                std::borrow::Cow::Owned(encoded)
            } else {
                std::borrow::Cow::Borrowed(body)
            };
            assert_eq!(
                header.kind,
                RecordKind::Checkpoint,
                "compaction keeps checkpoints"
            );
            records.push((header, body));
        }
        let records_len: u64 = records
            .iter()
            .map(|(_, body)| padded_record_len(body.len()) as u64)
            .sum();
        let needed =
            SEGMENT_HEADER_LEN as u64 + records_len + padded_record_len(snapshot.len()) as u64;
        if needed > MAX_SEGMENT_LEN {
            return Err(Error::invalid(
                "compaction",
                format!(
                    "the records to keep take {needed} bytes, more than a compacted segment may \
                     hold ({MAX_SEGMENT_LEN}); keep fewer checkpoints per job"
                ),
            ));
        }
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            segment_id: last.id,
            first_seq: first.header.first_seq,
            segment_len: needed.next_multiple_of(4096).max(MIN_COMPACTED_LEN),
            created_at_micros: chrono::Utc::now().timestamp_micros(),
            salt: super::writer::new_salt(),
            compacted: true,
        };
        let mut offsets = Vec::with_capacity(records.len());
        self.compaction_bytes
            .store(header.segment_len, Ordering::Release);
        let segment = Segment::create_compacted(self.storage.as_ref(), &self.dir, header, |file| {
            let mut buf = Vec::new();
            let mut pos = SEGMENT_HEADER_LEN as u64;
            let mut previous = 0;
            for (old, body) in &records {
                assert!(old.seq > previous, "kept records in sequence order");
                previous = old.seq;
                let record = RecordHeader {
                    seq: old.seq,
                    durable_seq: old.seq - 1,
                    body_len: u32::try_from(body.len()).map_err(std::io::Error::other)?,
                    kind: RecordKind::Checkpoint,
                };
                encode_record(header.salt, &record, body, &mut buf);
                file.write(pos, &buf)?;
                offsets.push(pos);
                pos += buf.len() as u64;
            }
            assert!(snapshot_seq > previous, "the snapshot is the last record");
            let record = RecordHeader {
                seq: snapshot_seq,
                durable_seq: snapshot_seq - 1,
                body_len: u32::try_from(snapshot.len()).map_err(std::io::Error::other)?,
                kind: RecordKind::Snapshot,
            };
            encode_record(header.salt, &record, snapshot, &mut buf);
            file.write(pos, &buf)?;
            Ok(pos + buf.len() as u64)
        });
        let segment = segment.inspect_err(|error| {
            self.compaction_bytes.store(0, Ordering::Release);
            // A failed directory sync after the rename leaves the directory in an unknown
            // state: refuse writes, as after any failed sync.
            if matches!(error, Error::Io { op, .. } if *op == "sync directory") {
                self.poison(error.to_string());
            }
        })?;
        Ok((Arc::new(segment), offsets))
    }

    /// Switches readers to the compacted segment: the segments it replaces leave the log.
    /// Readers that hold one of them keep a valid mapping until they let go.
    pub fn install_compacted(&self, segment: Arc<Segment>) {
        let mut segments = self.segments_write();
        let replaced: Vec<u64> = segments.range(..=segment.id).map(|(id, _)| *id).collect();
        // The replaced files stay on disk until `remove_replaced` (the last one is already
        // gone: the compacted segment took its name).
        let mut left_on_disk = 0;
        for id in replaced {
            if let Some(old) = segments.remove(&id)
                && id != segment.id
            {
                left_on_disk += old.file.len();
            }
        }
        self.compaction_bytes.store(left_on_disk, Ordering::Release);
        segments.insert(segment.id, segment);
    }

    /// Removes the files of the replaced segments (all but the last of `range`, whose name
    /// the compacted segment took), then syncs the directory. A crash before this ends leaves
    /// files that recovery knows are replaced and removes.
    pub fn remove_replaced(&self, range: &[Arc<Segment>]) -> Result<()> {
        let Some((_, older)) = range.split_last() else {
            return Ok(());
        };
        // Counted as removed even if a removal fails: recovery removes what is left.
        let _removed = ClearOnDrop(&self.compaction_bytes);
        for segment in older {
            let path = self.dir.join(segment_file_name(segment.id));
            self.storage
                .remove_file(&path)
                .map_err(|e| Error::io("remove compacted segment", &path, e))?;
        }
        self.storage.sync_dir(&self.dir).map_err(|e| {
            let error = Error::io("sync directory", &self.dir, e);
            self.poison(error.to_string());
            error
        })
    }

    /// Refuses further writes after a failure whose effect on disk is unknown.
    pub fn poison(&self, cause: String) {
        tracing::error!(%cause, "cairn: store refuses further writes");
        let mut sync = lock(&self.sync);
        sync.poisoned.get_or_insert(cause);
        self.synced.notify_all();
    }

    /// Calls `f` for every valid record of `segments` in order (see
    /// [`Log::for_each_record`]).
    pub fn for_each_record_in(segments: &[Arc<Segment>], f: &mut RecordVisitor<'_>) -> Result<()> {
        for segment in segments {
            let end = segment.published_end();
            let mut pos = SEGMENT_HEADER_LEN as u64;
            while pos < end {
                if let Some(&(_, skip_to)) = segment.skipped.iter().find(|(start, _)| *start == pos)
                {
                    pos = skip_to;
                    continue;
                }
                let (header, body) = segment.read_record(pos)?;
                // Marks prove durability to recovery; readers have nothing to see in them.
                if header.kind != RecordKind::Mark {
                    f(&segment.record_ref(pos, header, body))?;
                }
                pos += header.padded_len() as u64;
            }
        }
        Ok(())
    }
}

/// Sets a byte count back to zero when dropped.
struct ClearOnDrop<'a>(&'a AtomicU64);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::Release);
    }
}
