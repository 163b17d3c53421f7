//! An independent encoder and decoder of cairn's on-disk format (versions 1 to 4), written
//! from docs/FORMAT.md rather than from the code: the fuzz targets build segment images with
//! it and compare what cairn decodes with what the specification says.

/// Length of a segment header.
pub const SEGMENT_HEADER_LEN: usize = 64;
/// Length of a record header.
pub const RECORD_HEADER_LEN: usize = 32;
/// Record kinds.
pub const KIND_CHECKPOINT: u8 = 1;
pub const KIND_SEAL: u8 = 2;
pub const KIND_JOB_EVENT: u8 = 3;
/// A snapshot record: the last record of a compacted segment (format 3).
pub const KIND_SNAPSHOT: u8 = 4;
/// A mark record: proves records up to its `durable_seq` durable (format 4).
pub const KIND_MARK: u8 = 5;
/// A snapshot part: a record of a snapshot before its last one, in a compacted segment
/// (format 4).
pub const KIND_SNAPSHOT_PART: u8 = 6;
/// The newest segment format: this build writes it and reads it and every older one.
pub const FORMAT_VERSION: u16 = 4;
/// Checkpoint data codecs (format version 2).
pub const CODEC_JSON: u8 = 0;
pub const CODEC_LZ4: u8 = 1;
/// The format's ceiling on decompressed checkpoint data.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;
/// Sequence numbers (of records, and segments' `first_seq`) are below this.
pub const SEQ_LIMIT: u64 = 1 << 63;
/// Segment ids are below this: a name with a larger id is not a segment name.
pub const SEGMENT_ID_LIMIT: u64 = 1 << 62;
/// The format's ceiling on a record body.
pub const MAX_BODY_BYTES: u32 = 64 * 1024 * 1024;
/// The format's ceiling on a checkpoint envelope.
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;
/// The segment size of the stores the targets build (the smallest cairn accepts).
pub const SEGMENT_LEN: u64 = 64 * 1024;
/// The store marker file's exact content, for a store of format `version`.
pub fn marker(version: u16) -> Vec<u8> {
    format!("cairn store\nformat_version {version}\n").into_bytes()
}

/// CRC32 of `salt` (little-endian) followed by `bytes`.
pub fn salted_crc(salt: u32, bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(bytes);
    hasher.finalize()
}

fn le_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn le_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

/// The fields of a segment header, including the ones a valid header fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub version: u16,
    pub header_len: u16,
    pub segment_id: u64,
    pub first_seq: u64,
    pub segment_len: u64,
    pub created_at_micros: i64,
    pub salt: u32,
}

impl SegmentHeader {
    /// A valid header.
    pub fn valid(version: u16, segment_id: u64, first_seq: u64, salt: u32) -> Self {
        SegmentHeader {
            version,
            header_len: SEGMENT_HEADER_LEN as u16,
            segment_id,
            first_seq,
            segment_len: SEGMENT_LEN,
            created_at_micros: 1_700_000_000_000_000,
            salt,
        }
    }

    /// The 64 header bytes, with a correct header CRC.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN] {
        let mut out = [0u8; SEGMENT_HEADER_LEN];
        out[0..8].copy_from_slice(b"CAIRNSEG");
        out[8..10].copy_from_slice(&self.version.to_le_bytes());
        out[10..12].copy_from_slice(&self.header_len.to_le_bytes());
        out[16..24].copy_from_slice(&self.segment_id.to_le_bytes());
        out[24..32].copy_from_slice(&self.first_seq.to_le_bytes());
        out[32..40].copy_from_slice(&self.segment_len.to_le_bytes());
        out[40..48].copy_from_slice(&self.created_at_micros.to_le_bytes());
        out[48..52].copy_from_slice(&self.salt.to_le_bytes());
        fix_segment_header_crc(&mut out);
        out
    }

    /// Decodes a header whose CRC and fixed fields check out (FORMAT.md's checks 1 to 6; the
    /// id in the file name is the caller's business).
    pub fn decode(bytes: &[u8]) -> Option<SegmentHeader> {
        let head = bytes.get(..SEGMENT_HEADER_LEN)?;
        let crc = crc32fast::hash(&head[..60]);
        let header = SegmentHeader {
            version: le_u16(head, 8)?,
            header_len: le_u16(head, 10)?,
            segment_id: le_u64(head, 16)?,
            first_seq: le_u64(head, 24)?,
            segment_len: le_u64(head, 32)?,
            created_at_micros: le_u64(head, 40)? as i64,
            salt: le_u32(head, 48)?,
        };
        // Compacted segments (flag bit 0, format 3) are not modelled here: the targets never
        // build one, so a header with any flag set counts as invalid.
        let valid = &head[0..8] == b"CAIRNSEG"
            && (1..=FORMAT_VERSION).contains(&header.version)
            && le_u32(head, 12)? == 0
            && le_u32(head, 60)? == crc
            && usize::from(header.header_len) == SEGMENT_HEADER_LEN
            && (64 * 1024..=1 << 30).contains(&header.segment_len)
            && (1..SEQ_LIMIT).contains(&header.first_seq);
        valid.then_some(header)
    }
}

/// Rewrites the header CRC of a segment image (if it is long enough to hold one).
pub fn fix_segment_header_crc(segment: &mut [u8]) {
    if segment.len() >= SEGMENT_HEADER_LEN {
        let crc = crc32fast::hash(&segment[..60]);
        segment[60..64].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A checkpoint body: envelope fields and data. `data` is the JSON text as stored, before
/// compression (`codec` 1 compresses it when encoding and expands it when decoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointBody {
    pub job: String,
    pub phase: String,
    pub at_micros: i64,
    pub data_version: u32,
    /// Version 2 only (reads as 0 in version 1).
    pub trigger: u8,
    /// Version 2 only (reads as 0 in version 1).
    pub codec: u8,
    pub data: Vec<u8>,
}

impl CheckpointBody {
    /// The body as a segment of format `version` holds it.
    pub fn encode(&self, version: u16) -> Vec<u8> {
        let mut envelope = Vec::new();
        envelope.extend_from_slice(&(self.job.len() as u64).to_le_bytes());
        envelope.extend_from_slice(self.job.as_bytes());
        envelope.extend_from_slice(&(self.phase.len() as u64).to_le_bytes());
        envelope.extend_from_slice(self.phase.as_bytes());
        envelope.extend_from_slice(&self.at_micros.to_le_bytes());
        envelope.extend_from_slice(&self.data_version.to_le_bytes());
        if version >= 2 {
            envelope.extend_from_slice(&[self.trigger, self.codec]);
        }
        let mut out = (envelope.len() as u32).to_le_bytes().to_vec();
        out.extend_from_slice(&envelope);
        if version >= 2 && self.codec == CODEC_LZ4 {
            out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&lz4_flex::block::compress(&self.data));
        } else {
            out.extend_from_slice(&self.data);
        }
        out
    }

    /// Decodes a body of a segment of format `version` as FORMAT.md describes it: `None` when
    /// the envelope is malformed or names an unknown codec, `Some(Err(envelope))` when only the
    /// data does not decompress (recovery does not look at the data; a read does).
    pub fn decode(version: u16, body: &[u8]) -> Option<Result<CheckpointBody, CheckpointBody>> {
        let meta_len = le_u32(body, 0)? as usize;
        if meta_len > MAX_ENVELOPE_BYTES {
            return None;
        }
        let envelope = body.get(4..4 + meta_len)?;
        let mut at = 0;
        let string = |at: &mut usize| -> Option<String> {
            let len = usize::try_from(le_u64(envelope, *at)?).ok()?;
            let start = *at + 8;
            let bytes = envelope.get(start..start.checked_add(len)?)?;
            *at = start + len;
            String::from_utf8(bytes.to_vec()).ok()
        };
        let job = string(&mut at)?;
        let phase = string(&mut at)?;
        let at_micros = le_u64(envelope, at)? as i64;
        let data_version = le_u32(envelope, at + 8)?;
        at += 12;
        let (trigger, codec) = if version >= 2 {
            at += 2;
            (*envelope.get(at - 2)?, *envelope.get(at - 1)?)
        } else {
            (0, CODEC_JSON)
        };
        if at != meta_len {
            return None;
        }
        let stored = &body[4 + meta_len..];
        let data = match codec {
            CODEC_JSON => Some(stored.to_vec()),
            CODEC_LZ4 => decompress(stored),
            _ => return None,
        };
        let mut decoded = CheckpointBody {
            job,
            phase,
            at_micros,
            data_version,
            trigger,
            codec,
            data: Vec::new(),
        };
        Some(match data {
            Some(data) => {
                decoded.data = data;
                Ok(decoded)
            }
            None => Err(decoded),
        })
    }
}

/// `u32 json_len` and an LZ4 block that expands to exactly that many bytes (at most 64 MiB).
fn decompress(stored: &[u8]) -> Option<Vec<u8>> {
    let json_len = le_u32(stored, 0)? as usize;
    if json_len > MAX_DECOMPRESSED_BYTES {
        return None;
    }
    let mut data = vec![0u8; json_len];
    let written = lz4_flex::block::decompress_into(&stored[4..], &mut data).ok()?;
    (written == json_len).then_some(data)
}

/// The fixed fields of a record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub seq: u64,
    pub durable_seq: u64,
    pub body_len: u32,
    pub kind: u8,
}

/// `round_up(32 + body_len, 8)`.
pub fn padded_len(body_len: u32) -> usize {
    (RECORD_HEADER_LEN + body_len as usize).next_multiple_of(8)
}

impl RecordHeader {
    /// The record: header, `body`, zero padding, both CRCs. `body_len` need not match
    /// `body.len()`: the body is cut or zero-filled to `body_len` bytes.
    pub fn encode(&self, salt: u32, body: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; padded_len(self.body_len)];
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.durable_seq.to_le_bytes());
        out[24..28].copy_from_slice(&self.body_len.to_le_bytes());
        out[28] = self.kind;
        let body_room = self.body_len as usize;
        let copied = body.len().min(body_room);
        out[RECORD_HEADER_LEN..RECORD_HEADER_LEN + copied].copy_from_slice(&body[..copied]);
        fix_record_crcs(salt, &mut out);
        out
    }

    /// The 32 header bytes alone, with a matching header CRC (and no record CRC): for a
    /// record whose declared body runs past the end of any segment.
    pub fn encode_header_only(&self, salt: u32) -> [u8; RECORD_HEADER_LEN] {
        let mut out = [0u8; RECORD_HEADER_LEN];
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.durable_seq.to_le_bytes());
        out[24..28].copy_from_slice(&self.body_len.to_le_bytes());
        out[28] = self.kind;
        let header_crc = salted_crc(salt, &out[8..]);
        out[4..8].copy_from_slice(&header_crc.to_le_bytes());
        out
    }
}

/// Rewrites both CRCs of the record at the start of `bytes`, trusting its `body_len`. Returns
/// the record's padded length, or `None` (nothing changed) when it does not fit in `bytes`.
pub fn fix_record_crcs(salt: u32, bytes: &mut [u8]) -> Option<usize> {
    let body_len = le_u32(bytes, 24)?;
    let len = padded_len(body_len);
    let record = bytes.get_mut(..len)?;
    let header_crc = salted_crc(salt, &record[8..RECORD_HEADER_LEN]);
    record[4..8].copy_from_slice(&header_crc.to_le_bytes());
    let record_crc = salted_crc(salt, &record[4..]);
    record[0..4].copy_from_slice(&record_crc.to_le_bytes());
    Some(len)
}

/// What the specification makes of the bytes at the start of `bytes` as one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Not a valid record (FORMAT.md, "A record is valid when"; the expected sequence number
    /// is the caller's business).
    Invalid,
    Seal {
        seq: u64,
        durable_seq: u64,
        len: usize,
    },
    /// A checkpoint whose CRCs match but whose envelope does not decode: damage, but only the
    /// body tells.
    BadBody { seq: u64 },
    /// A checkpoint whose envelope decodes but whose compressed data does not: valid for
    /// recovery, which does not decompress; reading it fails.
    BadData { seq: u64 },
    /// A snapshot record (valid only as the last record of a compacted segment).
    Snapshot { seq: u64, len: usize },
    /// A mark (format 4, never in a compacted segment): numbered like the record after it.
    Mark {
        seq: u64,
        durable_seq: u64,
        len: usize,
    },
    /// A snapshot part (valid only right before another part or the snapshot record, with
    /// the same sequence number, in a compacted segment of format 4 or later).
    SnapshotPart { seq: u64, len: usize },
    /// A job event: recovery does not decode its body (FORMAT.md: `verify` does).
    JobEvent {
        seq: u64,
        durable_seq: u64,
        len: usize,
    },
    Checkpoint {
        seq: u64,
        durable_seq: u64,
        len: usize,
        body: CheckpointBody,
    },
}

/// Decodes one record of a segment of format `version` as FORMAT.md specifies it.
pub fn decode_record(version: u16, salt: u32, bytes: &[u8]) -> Record {
    let Some(header) = decode_header(salt, bytes) else {
        return Record::Invalid;
    };
    let len = padded_len(header.body_len);
    let Some(record) = bytes.get(..len) else {
        return Record::Invalid;
    };
    if le_u32(record, 0) != Some(salted_crc(salt, &record[4..])) {
        return Record::Invalid;
    }
    let body = &record[RECORD_HEADER_LEN..RECORD_HEADER_LEN + header.body_len as usize];
    decode_kind(version, &header, len, body)
}

/// The fields of a valid record header.
struct Header {
    seq: u64,
    durable_seq: u64,
    body_len: u32,
    kind: u8,
}

/// The header at the start of `bytes`, if it is valid (FORMAT.md: not all zero, its checksum
/// matches, a known kind, zero padding, sequence numbers in range, a body length in bounds).
fn decode_header(salt: u32, bytes: &[u8]) -> Option<Header> {
    let head = bytes.get(..RECORD_HEADER_LEN)?;
    let field = |at| le_u64(head, at).unwrap_or_default();
    let (seq, durable_seq) = (field(8), field(16));
    let body_len = le_u32(head, 24).unwrap_or_default();
    let kind = head[28];
    let header_ok = head.iter().any(|&b| b != 0)
        && le_u32(head, 4) == Some(salted_crc(salt, &head[8..]))
        && ((KIND_CHECKPOINT..=KIND_MARK).contains(&kind) || kind == KIND_SNAPSHOT_PART)
        && head[29..32] == [0, 0, 0]
        && (1..SEQ_LIMIT).contains(&seq)
        && durable_seq < seq
        && body_len <= MAX_BODY_BYTES;
    header_ok.then_some(Header {
        seq,
        durable_seq,
        body_len,
        kind,
    })
}

/// A record of `header`'s kind, `len` bytes long with `body`, in a segment of format
/// `version`: `Invalid` for a kind that format does not have.
fn decode_kind(version: u16, header: &Header, len: usize, body: &[u8]) -> Record {
    let Header {
        seq,
        durable_seq,
        kind,
        ..
    } = *header;
    match kind {
        // FORMAT.md gives a seal an empty body, but its list of what makes a record valid
        // does not require it, and cairn accepts a seal with a body: so does this reference.
        KIND_SEAL => Record::Seal {
            seq,
            durable_seq,
            len,
        },
        // FORMAT.md: marks exist from format 4 on, outside compacted segments (which the
        // caller knows about).
        KIND_MARK if version < 4 => Record::Invalid,
        KIND_MARK => Record::Mark {
            seq,
            durable_seq,
            len,
        },
        // FORMAT.md: snapshots exist from format 3 on, and only in compacted segments, which
        // the caller knows about (`testing::decode_record` accepts one on its own).
        KIND_SNAPSHOT if version < 3 => Record::Invalid,
        KIND_SNAPSHOT => Record::Snapshot { seq, len },
        // FORMAT.md: snapshot parts exist from format 4 on, in compacted segments only.
        KIND_SNAPSHOT_PART if version < 4 => Record::Invalid,
        KIND_SNAPSHOT_PART => Record::SnapshotPart { seq, len },
        // FORMAT.md: a job event in a version 1 segment is damage. Its body must decode to a
        // known event too, which this reference leaves to cairn: `testing::decode_record`
        // does not check it, and for the store a damaged event only hides what follows it.
        KIND_JOB_EVENT if version < 2 => Record::Invalid,
        KIND_JOB_EVENT => Record::JobEvent {
            seq,
            durable_seq,
            len,
        },
        _ => match CheckpointBody::decode(version, body) {
            Some(Ok(body)) => Record::Checkpoint {
                seq,
                durable_seq,
                len,
                body,
            },
            Some(Err(_)) => Record::BadData { seq },
            None => Record::BadBody { seq },
        },
    }
}

/// A job event body (format version 2): envelope `{ job, at_micros }`, then the event JSON.
pub fn encode_event_body(job: &str, at_micros: i64, event_json: &[u8]) -> Vec<u8> {
    let mut out = ((8 + job.len() + 8) as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&(job.len() as u64).to_le_bytes());
    out.extend_from_slice(job.as_bytes());
    out.extend_from_slice(&at_micros.to_le_bytes());
    out.extend_from_slice(event_json);
    out
}
