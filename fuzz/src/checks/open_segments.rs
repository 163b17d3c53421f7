//! Target `open_segments`: open a store directory whose segment files hold arbitrary bytes.
//!
//! The first input byte picks how the segment files are made (the rest of the input drives it;
//! see [`build_log`] and [`raw_segments`]), then the remaining bytes are damage applied to the
//! files ([`damage`]):
//!
//! - 0: a valid log (1 to 3 segments, sealed but for the last) written with the reference
//!   encoder of docs/FORMAT.md; only the damage is arbitrary. Its checkpoints are the only
//!   valid records there are, so the strict checks apply.
//! - 1: the same log with header and record fields chosen by the fuzzer (ids, sequence
//!   numbers, `durable_seq`, kinds, lengths, segment lengths, versions, bodies, timestamps)
//!   and checksums that still match: recovery's decisions, not the CRCs, are what is fuzzed.
//! - 2: segment files of raw bytes, optionally with their header and record CRCs fixed up.
//!
//! Then the directory is opened read-only and as a writer in every recovery mode. Checked:
//! nothing panics; a read-only open changes no byte; reader and writer agree on whether the
//! store opens and on its contents; every checkpoint returned is exactly a record that checks
//! out somewhere in the files (so never wrong data); reads of an opened store succeed unless a
//! valid record holds data that is only checked when read (JSON, timestamp); the read calls
//! agree with one another; a writer that opened takes a save numbered after everything, and
//! reopens with the same contents plus that save. With a valid log (0), in every mode but
//! skip-corrupted, the store holds a prefix of the log.

use std::collections::BTreeMap;
use std::path::Path;

use cairn::testing;
use cairn::{Checkpoint, RecoveryMode, Store};

use super::format::{
    self, CODEC_JSON, CODEC_LZ4, CheckpointBody, FORMAT_VERSION, KIND_CHECKPOINT, KIND_JOB_EVENT,
    KIND_SEAL, RecordHeader, SEGMENT_HEADER_LEN, SEGMENT_LEN, SegmentHeader,
};
use super::image::{self, DIR, Image, MODES, Present};
use super::input::Input;

/// The checkpoints of a valid log, by sequence number.
pub type Written = BTreeMap<u64, CheckpointBody>;

const JOBS: [&str; 4] = ["alpha", "beta", "jira_sync", "sync ü/2"];
const MAX_SEGMENTS: u8 = 3;
const MAX_RECORDS_PER_SEGMENT: u8 = 16;
const MAX_DAMAGE_OPS: usize = 8;
const MARKER_FILE: &str = "CAIRN";
/// The largest declared segment length a writer is tried on (see [`check_image`]).
const MAX_WRITER_SEGMENT_LEN: u64 = 4 << 20;

pub fn check_open_segments(data: &[u8]) {
    let (image, written) = build_image(data);
    check_image(&image, written.as_ref());
}

/// The store directory an input describes, and the checkpoints of its log when the input
/// describes a valid log (before damage).
pub fn build_image(data: &[u8]) -> (Image, Option<Written>) {
    let mut input = Input::new(data);
    let (mut image, written) = match input.u8() % 3 {
        0 => {
            let (image, written) = build_log(&mut input, false);
            (image, Some(written))
        }
        1 => (build_log(&mut input, true).0, None),
        _ => (raw_segments(&mut input), None),
    };
    damage(&mut image, &mut input);
    (image, written)
}

/// Opens `image` in every mode and checks everything listed in the module docs.
pub fn check_image(image: &Image, written: Option<&Written>) {
    let contents = image::contents_of(image);
    // A writer restores a truncated file to the length its header declares, which on the
    // simulated disk is memory: writers are not tried on images declaring more than 4 MiB (a
    // limit of this harness, not of cairn).
    let skip_writer = image::segment_lens(image).any(|len| len > MAX_WRITER_SEGMENT_LEN);
    for mode in MODES {
        let checks = Checks {
            skip_writer,
            mode,
            present: &contents.checkpoints,
            written,
            reads_may_fail: contents.unreadable,
        };
        check_mode(image, &checks);
    }
}

/// What the store's contents are checked against, in one recovery mode.
struct Checks<'a> {
    mode: RecoveryMode,
    present: &'a [Present],
    written: Option<&'a Written>,
    /// Reads of an opened store may fail: a valid record holds data that is only checked when
    /// read, or a known bug.
    reads_may_fail: bool,
    /// Writer opens are not checked (see [`check_image`]).
    skip_writer: bool,
}

fn check_mode(image: &Image, checks: &Checks) {
    let mode = checks.mode;
    let dir = Path::new(DIR);
    let disk = image::disk_with(image);
    let before = image::disk_files(&disk);
    let reader = testing::open(&disk, dir, image::options(mode), true);
    let read = reader.as_ref().ok().map(|s| checked_contents(s, checks));
    drop(reader);
    assert_eq!(
        image::disk_files(&disk),
        before,
        "{mode:?}: a read-only open changed the disk"
    );

    if checks.skip_writer {
        return;
    }
    let writer = testing::open(&disk, dir, image::options(mode), false);
    match (&read, &writer) {
        (Some(_), Ok(_)) | (None, Err(_)) => {}
        (read, writer) => panic!(
            "{mode:?}: the reader opened: {}, the writer: {:?}",
            read.is_some(),
            writer.as_ref().map(|s| s.recovery_report())
        ),
    }
    let Ok(writer) = writer else {
        return;
    };
    let seen = checked_contents(&writer, checks);
    assert_eq!(
        seen,
        read.flatten(),
        "{mode:?}: reader and writer see different contents"
    );
    let before_save = writer.last_seq();
    let data = serde_json::json!({"after": "open"});
    let seq = writer
        .save("fuzz-new", "p", &data)
        .unwrap_or_else(|e| panic!("{mode:?}: save after a writer open: {e}"));
    assert!(
        seq > before_save,
        "{mode:?}: save numbered {seq}, last was {before_save}"
    );
    if let Some(last) = seen.as_ref().and_then(|s| s.last()) {
        assert!(
            seq > last.seq,
            "{mode:?}: save numbered {seq} after checkpoint {}",
            last.seq
        );
    }
    drop(writer);

    let again = testing::open(&disk, dir, image::options(mode), false)
        .unwrap_or_else(|e| panic!("{mode:?}: reopen after a writer open and a save: {e}"));
    let Some(seen) = seen else {
        return;
    };
    let mut seen_again = image::contents(&again)
        .unwrap_or_else(|e| panic!("{mode:?}: reads after the reopen fail: {e}"));
    let new = seen_again.pop_if(|c| c.seq == seq);
    let new = new.unwrap_or_else(|| panic!("{mode:?}: the save numbered {seq} is lost"));
    assert_eq!(
        (&new.job, &new.data),
        (&"fuzz-new".to_string(), &data),
        "{mode:?}: the new save reads back wrong"
    );
    assert_eq!(
        seen_again, seen,
        "{mode:?}: the reopen changed the contents"
    );
}

/// The store's contents, checked against the files. `None` when a read failed, which only
/// a record that is checked when read may cause.
fn checked_contents(store: &Store, checks: &Checks) -> Option<Vec<Checkpoint>> {
    let Checks {
        mode,
        present,
        written,
        ..
    } = *checks;
    let all = match image::contents(store) {
        Ok(all) => all,
        Err(e) => {
            assert!(
                checks.reads_may_fail,
                "{mode:?}: a read of an opened store failed: {e}"
            );
            return None;
        }
    };
    for checkpoint in &all {
        assert!(
            present.iter().any(|p| image::matches(checkpoint, p)),
            "{mode:?}: checkpoint {checkpoint:?} is not in the files"
        );
    }
    if let Some(written) = written
        && mode != RecoveryMode::SkipCorrupted
    {
        let last = all.last().map_or(0, |c| c.seq);
        let prefix: Vec<u64> = written.range(..=last).map(|(seq, _)| *seq).collect();
        let found: Vec<u64> = all.iter().map(|c| c.seq).collect();
        assert_eq!(found, prefix, "{mode:?}: not a prefix of the log");
    }
    Some(all)
}

/// A salt per segment (fixed, so that inputs replay exactly).
fn salt(index: u64) -> u32 {
    0x5a17_0000 ^ (index as u32).wrapping_mul(0x9e37_79b9)
}

fn pick<T: Copy>(input: &mut Input, choices: &[T]) -> T {
    choices[usize::from(input.u8()) % choices.len()]
}

/// A log of up to three segments and the store marker. Without `semantic`, a valid one:
/// per segment a byte (bits 0..4: record count; bit 6: format version 1 instead of 2; bit 7:
/// seal the last segment too), then per record a kind byte (bits 0..2: job; bits 2..6:
/// trigger; bit 6: a job event instead of a checkpoint; bit 7: LZ4-compressed data; the
/// version 2 features only in version 2 segments) and a payload size byte. With `semantic`, a
/// flags byte before each segment's and each record's bytes overrides fields.
fn build_log(input: &mut Input, semantic: bool) -> (Image, Written) {
    let mut image = Image::new();
    let mut written = Written::new();
    let segments = 1 + u64::from(input.u8() % MAX_SEGMENTS);
    let mut next_seq = 1u64;
    let mut newest_version = 1;
    for index in 0..segments {
        let count = input.u8();
        let version = if count & 0x40 != 0 { 1 } else { FORMAT_VERSION };
        let mut header = SegmentHeader::valid(version, index + 1, next_seq, salt(index));
        let mut file_len = SEGMENT_LEN as usize;
        let mut break_crc = false;
        if semantic {
            (file_len, break_crc) = override_header(input, &mut header, next_seq);
        }
        newest_version = newest_version.max(header.version.clamp(1, FORMAT_VERSION));
        let mut bytes = vec![0u8; SEGMENT_LEN as usize];
        bytes[..SEGMENT_HEADER_LEN].copy_from_slice(&header.encode());
        if break_crc {
            bytes[60] ^= 0x55;
        }
        let seal = index + 1 < segments || count & 0x80 != 0;
        let mut expected = header.first_seq;
        let mut pos = SEGMENT_HEADER_LEN;
        for _ in 0..count % MAX_RECORDS_PER_SEGMENT {
            let seq = expected;
            let (kind, body) = record_body(input, header.version, seq);
            let (record, valid) = if semantic {
                semantic_record(input, &header, seq, kind, body.clone())
            } else {
                let head = RecordHeader {
                    seq,
                    durable_seq: seq - 1,
                    body_len: 0,
                    kind,
                };
                (
                    encode(header.salt, head, &body.encode_as(kind, header.version)),
                    true,
                )
            };
            // Room for the seal, as the writer keeps it.
            if pos + record.len() + 32 > bytes.len() {
                break;
            }
            bytes[pos..pos + record.len()].copy_from_slice(&record);
            pos += record.len();
            if valid && kind == KIND_CHECKPOINT {
                written.insert(seq, body);
            }
            let Some(next) = record_seq(&record).and_then(|s| s.checked_add(1)) else {
                break;
            };
            expected = next;
        }
        if seal {
            let head = RecordHeader {
                seq: expected,
                durable_seq: expected.saturating_sub(1),
                body_len: 0,
                kind: KIND_SEAL,
            };
            bytes[pos..pos + 32].copy_from_slice(&head.encode(header.salt, &[]));
            expected = expected.saturating_add(1);
        }
        bytes.truncate(file_len);
        image.insert(image::segment_name(header.segment_id), bytes);
        next_seq = expected;
    }
    image.insert(MARKER_FILE.into(), format::marker(newest_version));
    (image, written)
}

/// A record's kind and checkpoint body (for a job event, its job, time and data are used).
fn record_body(input: &mut Input, version: u16, seq: u64) -> (u8, CheckpointBody) {
    let kind_byte = input.u8();
    let pad = usize::from(input.u8()) * 8;
    let v2 = version >= 2;
    let kind = if v2 && kind_byte & 0x40 != 0 {
        KIND_JOB_EVENT
    } else {
        KIND_CHECKPOINT
    };
    let data = serde_json::json!({"seq": seq, "pad": "x".repeat(pad)});
    let body = CheckpointBody {
        job: JOBS[usize::from(kind_byte & 3)].into(),
        phase: "extract".into(),
        at_micros: 1_700_000_000_000_000_i64.wrapping_add(seq as i64),
        data_version: 1,
        trigger: if v2 { (kind_byte >> 2) & 0xf } else { 0 },
        codec: if v2 && kind_byte & 0x80 != 0 {
            CODEC_LZ4
        } else {
            CODEC_JSON
        },
        data: serde_json::to_vec(&data).expect("JSON"),
    };
    (kind, body)
}

trait EncodeAs {
    fn encode_as(&self, kind: u8, version: u16) -> Vec<u8>;
}

impl EncodeAs for CheckpointBody {
    /// The body of a record of `kind` made from this checkpoint.
    fn encode_as(&self, kind: u8, version: u16) -> Vec<u8> {
        match kind {
            KIND_JOB_EVENT => format::encode_event_body(&self.job, self.at_micros, &self.data),
            _ => self.encode(version),
        }
    }
}

/// The sequence number field of an encoded record.
fn record_seq(record: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(record.get(8..16)?.try_into().ok()?))
}

/// A record with `body` and `head.body_len` set to the body's length.
fn encode(salt: u32, head: RecordHeader, body: &[u8]) -> Vec<u8> {
    let head = RecordHeader {
        body_len: body.len() as u32,
        ..head
    };
    head.encode(salt, body)
}

/// Applies a header flags byte and its fields; returns the file length and whether to break
/// the header CRC.
fn override_header(input: &mut Input, header: &mut SegmentHeader, next_seq: u64) -> (usize, bool) {
    let flags = input.u8();
    let mut file_len = SEGMENT_LEN as usize;
    if flags & 1 != 0 {
        header.segment_id = pick(input, &[0, 1, 2, 3, 4, 5, u64::MAX - 1, u64::MAX]);
    }
    if flags & 2 != 0 {
        let raw = input.u64();
        let (before, after) = (next_seq.saturating_sub(1), next_seq.saturating_add(1));
        header.first_seq = pick(input, &[0, 1, before, after, u64::MAX, raw]);
    }
    if flags & 4 != 0 {
        let segment_lens = [
            0,
            32,
            64,
            96,
            4096,
            SEGMENT_LEN / 2,
            SEGMENT_LEN + 8,
            1 << 20,
        ];
        header.segment_len = pick(input, &segment_lens);
    }
    if flags & 8 != 0 {
        file_len = usize::from(input.u16());
    }
    if flags & 16 != 0 {
        header.version = pick(input, &[0, 1, FORMAT_VERSION, FORMAT_VERSION + 1]);
    }
    if flags & 32 != 0 {
        header.header_len = u16::from(input.u8());
    }
    if flags & 64 != 0 {
        header.created_at_micros = input.u64() as i64;
    }
    (file_len, flags & 128 != 0)
}

/// A record whose fields a flags byte may override; returns its bytes and whether it is
/// still the valid checkpoint `body` with sequence number `seq`.
fn semantic_record(
    input: &mut Input,
    segment: &SegmentHeader,
    seq: u64,
    kind: u8,
    mut body: CheckpointBody,
) -> (Vec<u8>, bool) {
    let salt = segment.salt;
    let flags = input.u8();
    let mut head = RecordHeader {
        seq,
        durable_seq: seq.saturating_sub(1),
        body_len: 0,
        kind,
    };
    if flags == 0 {
        let valid = seq != 0 && (1..=FORMAT_VERSION).contains(&segment.version);
        return (
            encode(salt, head, &body.encode_as(kind, segment.version)),
            valid,
        );
    }
    override_record_header(input, &mut head, flags);
    override_record_body(input, &mut body, flags);
    let mut encoded = body.encode_as(head.kind, segment.version.clamp(1, FORMAT_VERSION));
    if flags & 32 != 0 {
        let len = usize::from(input.u8());
        encoded = input.bytes(len).to_vec();
    }
    head.body_len = encoded.len() as u32;
    if flags & 64 != 0 {
        let len = head.body_len;
        head.body_len = pick(
            input,
            &[
                0,
                len.saturating_sub(1),
                len + 1,
                len + 8,
                1 << 20,
                u32::MAX,
            ],
        );
    }
    // A declared length past the segment only needs its header: clip what is materialized.
    let mut record = if format::padded_len(head.body_len) > SEGMENT_LEN as usize {
        head.encode_header_only(salt).to_vec()
    } else {
        head.encode(salt, &encoded)
    };
    if flags & 128 != 0 {
        let at = usize::from(input.u16()) % record.len();
        record[at] ^= input.u8() | 1;
    }
    (record, false)
}

/// Overrides the kind (flags bit 0), sequence number (bit 1) and durable sequence number (bit
/// 2) of `head` with values from `input`.
fn override_record_header(input: &mut Input, head: &mut RecordHeader, flags: u8) {
    let seq = head.seq;
    if flags & 1 != 0 {
        head.kind = pick(
            input,
            &[0, KIND_CHECKPOINT, KIND_SEAL, KIND_JOB_EVENT, 4, 255],
        );
    }
    if flags & 2 != 0 {
        let raw = input.u64();
        let near = [
            seq.saturating_sub(1),
            seq.saturating_add(1),
            seq.saturating_add(2),
        ];
        head.seq = pick(
            input,
            &[0, 1, near[0], near[1], near[2], u64::MAX - 1, u64::MAX, raw],
        );
    }
    if flags & 4 != 0 {
        let raw = input.u64();
        let s = head.seq;
        head.durable_seq = pick(
            input,
            &[0, s.saturating_sub(1), s, s.saturating_add(1), raw],
        );
    }
}

/// Overrides the time (flags bit 3), and the data, job and maybe codec (bit 4) of `body` with
/// values from `input`.
fn override_record_body(input: &mut Input, body: &mut CheckpointBody, flags: u8) {
    if flags & 8 != 0 {
        body.at_micros = pick(
            input,
            &[0, -1, i64::MIN, i64::MAX, 8_210_266_876_800_000_000],
        );
    }
    if flags & 16 != 0 {
        let len = usize::from(input.u8() % 64);
        body.data = input.bytes(len).to_vec();
        body.job = pick(input, &["", "a", "\u{0}", "x"]).to_string();
    }
    if flags & 16 != 0 && input.u8() & 1 == 1 {
        body.codec = pick(input, &[CODEC_JSON, CODEC_LZ4, 2, 255]);
    }
}

/// One to three segment files of raw bytes (a flags byte, a u16 length and the bytes each).
/// Flags: bit 0 zero-fills the file to the segment size, bit 1 fixes the header CRC, bit 2
/// fixes the CRCs of the chain of records from offset 64, bit 3 takes the id from the input.
fn raw_segments(input: &mut Input) -> Image {
    let mut image = Image::new();
    let segments = 1 + u64::from(input.u8() % MAX_SEGMENTS);
    for index in 0..segments {
        let flags = input.u8();
        let len = usize::from(input.u16());
        let mut bytes = input.bytes(len).to_vec();
        if flags & 1 != 0 && bytes.len() < SEGMENT_LEN as usize {
            bytes.resize(SEGMENT_LEN as usize, 0);
        }
        if flags & 2 != 0 {
            format::fix_segment_header_crc(&mut bytes);
        }
        if flags & 4 != 0 && bytes.len() >= SEGMENT_HEADER_LEN {
            let salt = u32::from_le_bytes(bytes[48..52].try_into().expect("4 bytes"));
            let mut pos = SEGMENT_HEADER_LEN;
            while let Some(rest) = bytes.get_mut(pos..)
                && rest.iter().take(32).any(|&b| b != 0)
                && let Some(len) = format::fix_record_crcs(salt, rest)
            {
                pos += len;
            }
        }
        let id = if flags & 8 != 0 {
            pick(input, &[0, 1, 2, 3, 4, u64::MAX])
        } else {
            index + 1
        };
        image.insert(image::segment_name(id), bytes);
    }
    image.insert(MARKER_FILE.into(), format::marker(FORMAT_VERSION));
    image
}

/// Up to eight damage operations on the files, each an op byte, a file byte and operands.
fn damage(image: &mut Image, input: &mut Input) {
    for _ in 0..MAX_DAMAGE_OPS {
        if input.is_empty() {
            return;
        }
        let op = input.u8();
        // The marker stays as it is: this target is about segment files.
        let names: Vec<String> = image
            .keys()
            .filter(|n| *n != MARKER_FILE)
            .cloned()
            .collect();
        let Some(name) = names
            .get(usize::from(input.u8()) % names.len().max(1))
            .cloned()
        else {
            add_file(image, input, op);
            continue;
        };
        match op % 8 {
            0 => {
                let bytes = image.get_mut(&name).expect("listed");
                let at = offset(input, bytes.len());
                let xor = input.u8() | 1;
                if let Some(byte) = bytes.get_mut(at) {
                    *byte ^= xor;
                }
            }
            1 => {
                let bytes = image.get_mut(&name).expect("listed");
                let at = offset(input, bytes.len());
                let len = usize::from(input.u8() % 33);
                let data = input.bytes(len);
                let end = (at + data.len()).min(bytes.len());
                bytes[at..end].copy_from_slice(&data[..end - at]);
            }
            2 => {
                let bytes = image.get_mut(&name).expect("listed");
                let at = offset(input, bytes.len());
                let end = (at + usize::from(input.u16())).min(bytes.len());
                bytes[at..end].fill(0);
            }
            3 => {
                let bytes = image.get_mut(&name).expect("listed");
                let len = offset(input, bytes.len() + 1);
                bytes.truncate(len);
            }
            4 => {
                image.remove(&name);
            }
            5 => copy_range(image, input, &names, &name),
            6 => {
                let bytes = image.remove(&name).expect("listed");
                let to = match input.u8() % 4 {
                    0 => format!("{name}.creating"),
                    1 => format!("{name}.discarded"),
                    _ => image::segment_name(pick(input, &[0, 1, 2, 3, 4, 5, u64::MAX])),
                };
                image.insert(to, bytes);
            }
            _ => add_file(image, input, op),
        }
    }
}

/// An offset in a file of `len` bytes (0 for an empty one).
fn offset(input: &mut Input, len: usize) -> usize {
    usize::from(input.u16()) % len.max(1)
}

/// Copies up to 4 KiB from one file to an 8-aligned offset of another (or the same one).
fn copy_range(image: &mut Image, input: &mut Input, names: &[String], to: &str) {
    let from = &names[usize::from(input.u8()) % names.len()];
    let source = image[from].clone();
    let start = offset(input, source.len());
    let len = usize::from(input.u16() % 4096);
    let chunk = &source[start..(start + len).min(source.len())];
    let bytes = image.get_mut(to).expect("listed");
    let at = offset(input, bytes.len()) / 8 * 8;
    let end = (at + chunk.len()).min(bytes.len());
    bytes[at..end].copy_from_slice(&chunk[..end - at]);
}

/// Adds a file: an empty or blank next segment, a leftover of a segment creation, or a
/// foreign file.
fn add_file(image: &mut Image, input: &mut Input, op: u8) {
    let next_id = image
        .keys()
        .filter_map(|n| image::segment_id(n))
        .max()
        .unwrap_or(0);
    let next_id = next_id.saturating_add(1);
    let (name, bytes) = match (op >> 3) % 4 {
        0 => (image::segment_name(next_id), Vec::new()),
        1 => (image::segment_name(next_id), vec![0; SEGMENT_LEN as usize]),
        2 => (
            format!("{}.creating", image::segment_name(next_id)),
            vec![1; 100],
        ),
        _ => ("notes.txt".to_string(), input.bytes(16).to_vec()),
    };
    image.insert(name, bytes);
}
