//! The log's records as the store sees them: a [`NewRecord`] to append (its body encoded, so
//! that its size can be checked first), and a [`RecordRef`] read back, whose [`Contents`] say
//! what it holds and decode on demand. The bytes and their layout stay in `format/`.

use serde::de::DeserializeOwned;

use crate::format::{
    BodyError, CheckpointBody, EncodeError, EventBody, RecordHeader, RecordKind,
    decode_checkpoint_body, decode_checkpoint_envelope, decode_event_body, decode_snapshot_body,
    encode_checkpoint_body, encode_event_body,
};

/// A record to append: its kind and its encoded body.
#[derive(Debug)]
pub(crate) struct NewRecord {
    pub(super) kind: RecordKind,
    pub(super) body: Vec<u8>,
    /// Bytes of the body that the data takes (a checkpoint's data once compressed).
    data_len: usize,
}

impl NewRecord {
    /// A checkpoint, its data compressed with LZ4 when `compress` is set.
    pub fn checkpoint(body: &CheckpointBody, compress: bool) -> Result<NewRecord, EncodeError> {
        let capacity = body.data_json.len() + body.job.len() + body.phase.len() + 64;
        let mut encoded = Vec::with_capacity(capacity);
        let data_len = encode_checkpoint_body(body, compress, &mut encoded)?;
        Ok(NewRecord {
            kind: RecordKind::Checkpoint,
            body: encoded,
            data_len,
        })
    }

    /// A job event.
    pub fn event(body: &EventBody) -> Result<NewRecord, EncodeError> {
        let mut encoded = Vec::with_capacity(body.event_json.len() + body.job.len() + 32);
        encode_event_body(body, &mut encoded)?;
        Ok(NewRecord {
            kind: RecordKind::JobEvent,
            data_len: body.event_json.len(),
            body: encoded,
        })
    }

    /// Bytes of the encoded body (the record's header and padding not included).
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Bytes of the body that the data takes once stored.
    pub fn data_len(&self) -> usize {
        self.data_len
    }
}

/// A valid record as readers see it: where it is, and (through [`RecordRef::contents`]) what
/// it holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordRef<'a> {
    pub segment_id: u64,
    pub offset: u64,
    /// The format version of the record's segment, which decides how its body decodes.
    version: u16,
    header: RecordHeader,
    body: &'a [u8],
}

/// What a record holds. Its body is decoded only when asked: recovery reads a checkpoint's
/// envelope and never its data.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Contents<'a> {
    Checkpoint(CheckpointRecord<'a>),
    Event(EventRecord<'a>),
    /// A snapshot record, or a part of a snapshot split over several records.
    Snapshot(SnapshotRecord<'a>),
    /// The seal that ends a full segment: no data.
    Seal,
    /// A proof of durability: no data. Readers are never handed one; only a read at a wrong
    /// location could find it.
    Mark,
}

/// The body of a checkpoint record, not yet decoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CheckpointRecord<'a> {
    version: u16,
    body: &'a [u8],
}

/// The body of a job event record, not yet decoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EventRecord<'a> {
    body: &'a [u8],
}

/// The body of a snapshot record or snapshot part, not yet decoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SnapshotRecord<'a> {
    part: bool,
    body: &'a [u8],
}

impl<'a> RecordRef<'a> {
    pub(super) fn new(
        segment_id: u64,
        offset: u64,
        version: u16,
        header: RecordHeader,
        body: &'a [u8],
    ) -> Self {
        RecordRef {
            segment_id,
            offset,
            version,
            header,
            body,
        }
    }

    /// Its sequence number (the parts of a snapshot share the snapshot's).
    pub fn seq(&self) -> u64 {
        self.header.seq
    }

    /// Bytes the record takes on disk, header and padding included.
    pub fn len_bytes(&self) -> u64 {
        self.header.padded_len() as u64
    }

    /// What the record holds.
    pub fn contents(&self) -> Contents<'a> {
        let body = self.body;
        match self.header.kind {
            RecordKind::Checkpoint => Contents::Checkpoint(CheckpointRecord {
                version: self.version,
                body,
            }),
            RecordKind::JobEvent => Contents::Event(EventRecord { body }),
            RecordKind::Snapshot => Contents::Snapshot(SnapshotRecord { part: false, body }),
            RecordKind::SnapshotPart => Contents::Snapshot(SnapshotRecord { part: true, body }),
            RecordKind::Seal => Contents::Seal,
            RecordKind::Mark => Contents::Mark,
        }
    }
}

impl CheckpointRecord<'_> {
    /// The whole checkpoint, its data decompressed.
    pub fn decode(&self) -> Result<CheckpointBody, BodyError> {
        decode_checkpoint_body(self.version, self.body)
    }

    /// The checkpoint without its data (`data_json` is empty): cheaper, for recovery.
    pub fn decode_envelope(&self) -> Result<CheckpointBody, BodyError> {
        decode_checkpoint_envelope(self.version, self.body)
    }
}

impl EventRecord<'_> {
    /// The event's job, time and JSON.
    pub fn decode(&self) -> Result<EventBody, BodyError> {
        decode_event_body(self.body)
    }
}

impl SnapshotRecord<'_> {
    /// A part of a snapshot other than its last record: the next record carries the same
    /// sequence number.
    pub fn is_part(&self) -> bool {
        self.part
    }

    /// The job states this record holds, read as `T`.
    pub fn states<T: DeserializeOwned>(&self) -> Result<Vec<T>, serde_json::Error> {
        decode_snapshot_body(self.body)
    }
}
