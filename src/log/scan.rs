//! Scanning one segment: walk its records from the header to the end of valid data, classify
//! anything that does not check out, and find where the dirty bytes end.
//!
//! The end of valid data is the first position holding an all-zero record header with only
//! zero bytes after it, or the seal record. Anything else that does not check out is damage,
//! classified with the `durable_seq` of every valid record after it: if any of them was
//! written when the damaged sequence number was already durable (a record, a mark written
//! after a sync, a seal), durable data was lost (bit rot, a lost block); otherwise the damage
//! lies in a window that was never proven synced, which in the newest segment is a torn write.
//!
//! Mark records (format 4) are checked like any record but not visited: they carry no data,
//! only their `durable_seq`, and take no sequence number of their own.

use std::fmt::Display;

use crate::format::{
    HeaderProblem, MARK_VERSION, RECORD_ALIGN, RECORD_HEADER_LEN, RecordHeader, RecordKind,
    SEGMENT_HEADER_LEN, SNAPSHOT_PARTS_VERSION, check_record, decode_record_header,
};

use super::RecordRef;
use super::report::FindingKind;
use super::segment::Segment;

/// Called for every valid record in log order (marks aside). An `Err`, which says why, marks the
/// record as damaged: its body does not make sense to the caller.
pub(crate) type Visit<'a, E> = dyn FnMut(&RecordRef<'_>) -> Result<(), E> + 'a;

/// One damaged stretch of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub offset: u64,
    pub len_bytes: u64,
    pub kind: FindingKind,
    pub detail: String,
}

/// The result of scanning one segment.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScanOutcome {
    /// Offset just past the last valid record kept.
    pub valid_end: u64,
    /// Sequence number of the last valid record kept (the seal or snapshot included).
    pub last_seq: Option<u64>,
    pub records: u64,
    pub record_bytes: u64,
    /// The segment ends with a seal (or, compacted, with its snapshot).
    pub sealed: bool,
    /// End of the last non-zero byte at or after `valid_end` (equal to it when the rest of the
    /// segment is clean). The writer zeroes `valid_end..dirty_end` before appending.
    pub dirty_end: u64,
    pub damage: Vec<Damage>,
    /// The highest `durable_seq` of the records kept: what they prove durable.
    pub proven_seq: u64,
    /// The valid records after the first damage, kept or not: what they prove and hold.
    pub after_damage: Option<Survey>,
}

/// The valid records found after a damaged one, up to the end of the segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Survey {
    /// Records found, marks not counted.
    pub records: u64,
    /// Their highest sequence number (0 when there are none).
    pub max_seq: u64,
    /// Their highest `durable_seq`: every record up to it had been durable.
    pub max_durable_seq: u64,
}

/// Walks every valid record at or after `from` with a sequence number of at least `min_seq`.
fn survey(segment: &Segment, from: u64, min_seq: u64, usable: u64) -> Survey {
    let mut found = Survey::default();
    let mut pos = from;
    while let Some((offset, header)) = find_next_valid(segment, pos, min_seq, usable) {
        if header.kind != RecordKind::Mark {
            found.records += 1;
            found.max_seq = found.max_seq.max(header.seq);
        }
        found.max_durable_seq = found.max_durable_seq.max(header.durable_seq);
        pos = offset + header.padded_len() as u64;
    }
    found
}

/// How to scan.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScanRules {
    /// Keep going after damage (skip-corrupted recovery, verify).
    pub skip: bool,
    /// The segment is the newest one, where a torn tail is expected after a crash.
    pub is_last: bool,
}

enum Step {
    Record(RecordHeader, u64),
    /// A valid record whose sequence number jumps ahead of the expected one.
    Gap(RecordHeader, u64),
    End,
    Bad(String),
}

/// Where a scan stands: the offset of the next record and the sequence number it must carry.
struct Cursor {
    pos: u64,
    expected: u64,
}

/// What a scan does after a record.
enum Next {
    Continue,
    /// The end of valid data, or the record that ends the segment.
    Done,
    /// The record at the cursor is damaged; the text says how.
    Damage(String),
}

/// Scans `segment`, calling `visit` for each valid record.
pub(crate) fn scan_segment<E: Display>(
    segment: &Segment,
    rules: ScanRules,
    visit: &mut Visit<'_, E>,
) -> ScanOutcome {
    let usable = segment.usable_len();
    let mut out = ScanOutcome::default();
    let mut at = Cursor {
        pos: SEGMENT_HEADER_LEN as u64,
        expected: segment.header.first_seq,
    };
    out.valid_end = at.pos;
    loop {
        match take_record(segment, rules, &mut out, &mut at, visit) {
            Next::Continue => {}
            Next::Done => break,
            Next::Damage(problem) => {
                if !stop_or_skip(segment, rules, &mut out, &mut at, problem, usable) {
                    break;
                }
            }
        }
    }
    out.dirty_end = if out.sealed {
        out.valid_end
    } else {
        last_nonzero_end(segment, out.valid_end, usable)
    };
    out
}

/// Reads the record at the cursor; a valid one is visited (unless it is a mark), counted in
/// `out`, and the cursor moves past it.
fn take_record<E: Display>(
    segment: &Segment,
    rules: ScanRules,
    out: &mut ScanOutcome,
    at: &mut Cursor,
    visit: &mut Visit<'_, E>,
) -> Next {
    let (header, len) = match next_record(segment, at.pos, at.expected, segment.usable_len()) {
        Step::End => return Next::Done,
        Step::Record(header, len) => (header, len),
        // Skip-corrupted keeps a valid record after a gap, and reports the gap.
        Step::Gap(header, len) if rules.skip => {
            out.damage.push(Damage {
                offset: at.pos,
                len_bytes: 0,
                kind: FindingKind::DamagedRecord,
                detail: format!(
                    "sequence numbers {}..{} are missing",
                    at.expected,
                    header.seq - 1
                ),
            });
            (header, len)
        }
        Step::Gap(header, _) => {
            return Next::Damage(format!(
                "sequence number {} where {} was expected",
                header.seq, at.expected
            ));
        }
        Step::Bad(problem) => return Next::Damage(problem),
    };
    if header.kind == RecordKind::Mark {
        at.pos += len;
        out.valid_end = at.pos;
        out.proven_seq = out.proven_seq.max(header.durable_seq);
        return Next::Continue;
    }
    let body = record_body(segment, at.pos, &header);
    if let Err(reason) = visit(&segment.record_ref(at.pos, header, body)) {
        return Next::Damage(format!("record {} does not decode: {reason}", header.seq));
    }
    at.pos += len;
    // The parts of a snapshot share its sequence number.
    at.expected = header.seq + u64::from(header.kind != RecordKind::SnapshotPart);
    out.valid_end = at.pos;
    out.last_seq = Some(header.seq);
    out.records += 1;
    out.record_bytes += len;
    out.proven_seq = out.proven_seq.max(header.durable_seq);
    if matches!(header.kind, RecordKind::Seal | RecordKind::Snapshot) {
        out.sealed = true;
        return Next::Done;
    }
    Next::Continue
}

/// Records the damage at the cursor and, when skipping and a valid record follows, moves to it
/// and returns true; returns false when the scan stops here.
fn stop_or_skip(
    segment: &Segment,
    rules: ScanRules,
    out: &mut ScanOutcome,
    at: &mut Cursor,
    problem: String,
    usable: u64,
) -> bool {
    let (pos, next_seq) = (at.pos, at.expected);
    let resync = find_next_valid(segment, pos + RECORD_ALIGN as u64, next_seq, usable);
    // Every valid record after the first damage, for the proof of durability. One survey
    // serves every later damage too: records between two damaged ones precede the second, so
    // their `durable_seq` is below its sequence number and cannot prove it.
    let later = *out
        .after_damage
        .get_or_insert_with(|| survey(segment, pos + RECORD_ALIGN as u64, next_seq, usable));
    // Skipping ends the damage at the next valid record; stopping discards everything up to
    // the last byte written.
    let damage_end = match resync {
        Some((offset, _)) if rules.skip => offset,
        _ => last_nonzero_end(segment, pos, usable),
    };
    let (kind, detail) = classify(problem, next_seq, later, rules.is_last);
    out.damage.push(Damage {
        offset: pos,
        len_bytes: damage_end.saturating_sub(pos),
        kind,
        detail,
    });
    match resync {
        Some((offset, next)) if rules.skip => {
            at.pos = offset;
            at.expected = next.seq;
            true
        }
        _ => false,
    }
}

/// What damage where record `next_seq` was expected means, given the valid records found after
/// it (`later`): durable records lost if one of them proves `next_seq` durable; else, in the
/// newest segment, a write torn by a crash; else a damaged record.
fn classify(problem: String, next_seq: u64, later: Survey, is_last: bool) -> (FindingKind, String) {
    if later.max_durable_seq >= next_seq {
        (
            FindingKind::DurableRecordsLost,
            format!(
                "{problem}; {} valid records follow it (up to sequence number {}), and one \
                 of them was written when records up to {} were durable, so durable records \
                 from {next_seq} on are damaged or lost",
                later.records, later.max_seq, later.max_durable_seq
            ),
        )
    } else if is_last {
        (
            FindingKind::TornTail,
            format!(
                "{problem}; no later record proves that record {next_seq} or any after it \
                 was ever synced: a write torn by a crash"
            ),
        )
    } else {
        (FindingKind::DamagedRecord, problem)
    }
}

fn record_body<'a>(segment: &'a Segment, pos: u64, header: &RecordHeader) -> &'a [u8] {
    let start = pos + RECORD_HEADER_LEN as u64;
    segment
        .file
        .read(start, header.body_len as usize)
        .unwrap_or_default()
}

/// Decodes and fully checks the record at `pos`.
fn next_record(segment: &Segment, pos: u64, expected: u64, usable: u64) -> Step {
    let (header, len) = match checked_record(segment, pos, usable) {
        Ok(record) => record,
        Err(step) => return step,
    };
    if let Some(problem) = kind_problem(segment, &header) {
        return Step::Bad(problem);
    }
    in_sequence(segment, header, len, expected)
}

/// The record at `pos` with its header and checksums verified and its length within the
/// segment; `Err` is the end of valid data or damage.
fn checked_record(segment: &Segment, pos: u64, usable: u64) -> Result<(RecordHeader, u64), Step> {
    let salt = segment.header.salt;
    if pos + RECORD_HEADER_LEN as u64 > usable {
        return Err(if last_nonzero_end(segment, pos, usable) > pos {
            Step::Bad("non-zero bytes in the last bytes of the segment".into())
        } else {
            Step::End
        });
    }
    let Ok(head) = segment.file.read(pos, RECORD_HEADER_LEN) else {
        return Err(Step::Bad("record header unreadable".into()));
    };
    let header = match decode_record_header(salt, head) {
        Ok(header) => header,
        Err(HeaderProblem::Blank) => {
            return Err(if last_nonzero_end(segment, pos, usable) > pos {
                Step::Bad("zeroed bytes followed by data".into())
            } else {
                Step::End
            });
        }
        Err(problem) => return Err(Step::Bad(problem.to_string())),
    };
    let len = header.padded_len() as u64;
    if pos + len > usable {
        return Err(Step::Bad(format!(
            "record {} runs past the end of the segment",
            header.seq
        )));
    }
    let Ok(record) = segment.file.read(pos, len as usize) else {
        return Err(Step::Bad("record unreadable".into()));
    };
    if !check_record(salt, record) {
        return Err(Step::Bad(format!(
            "record {} checksum mismatch",
            header.seq
        )));
    }
    Ok((header, len))
}

/// Why a record of this kind may not be in this segment, if it may not.
fn kind_problem(segment: &Segment, header: &RecordHeader) -> Option<String> {
    let (version, compacted, seq) = (segment.header.version, segment.header.compacted, header.seq);
    match header.kind {
        RecordKind::JobEvent if version < 2 => {
            Some(format!("record {seq} is a job event in a format 1 segment"))
        }
        RecordKind::Mark if version < MARK_VERSION || compacted => Some(format!(
            "record {seq} is a mark in a segment of format {version}{}",
            if compacted { ", compacted" } else { "" }
        )),
        RecordKind::Snapshot if !compacted => Some(format!(
            "record {seq} is a snapshot outside a compacted segment"
        )),
        RecordKind::SnapshotPart if !compacted || version < SNAPSHOT_PARTS_VERSION => {
            Some(format!(
                "record {seq} is a snapshot part outside a compacted segment of format 4 or later"
            ))
        }
        _ => None,
    }
}

/// Checks a valid record's sequence number against the expected one.
fn in_sequence(segment: &Segment, header: RecordHeader, len: u64, expected: u64) -> Step {
    // A mark takes the number the next record takes: exactly the expected one.
    if header.kind == RecordKind::Mark && header.seq != expected {
        return Step::Bad(format!(
            "mark numbered {} where {expected} was expected",
            header.seq
        ));
    }
    // Compaction keeps the sequence numbers of the records it keeps: gaps are expected there.
    if header.seq > expected && segment.header.compacted {
        return Step::Record(header, len);
    }
    if header.seq > expected {
        return Step::Gap(header, len);
    }
    if header.seq != expected {
        return Step::Bad(format!(
            "sequence number {} where {expected} was expected",
            header.seq
        ));
    }
    Step::Record(header, len)
}

/// The first fully valid record at an aligned offset at or after `from` whose sequence number
/// is at least `min_seq`.
pub(crate) fn find_next_valid(
    segment: &Segment,
    from: u64,
    min_seq: u64,
    usable: u64,
) -> Option<(u64, RecordHeader)> {
    let salt = segment.header.salt;
    let mut pos = from.next_multiple_of(RECORD_ALIGN as u64);
    while pos + RECORD_HEADER_LEN as u64 <= usable {
        let head = segment.file.read(pos, RECORD_HEADER_LEN).ok()?;
        if head.iter().any(|&b| b != 0)
            && let Ok(header) = decode_record_header(salt, head)
            && header.seq >= min_seq
            && pos + header.padded_len() as u64 <= usable
            && segment
                .file
                .read(pos, header.padded_len())
                .is_ok_and(|record| check_record(salt, record))
        {
            return Some((pos, header));
        }
        pos += RECORD_ALIGN as u64;
    }
    None
}

/// The offset just past the last non-zero byte in `from..usable`, or `from` if all are zero.
fn last_nonzero_end(segment: &Segment, from: u64, usable: u64) -> u64 {
    // Read in chunks so a 1 GiB segment does not need one giant slice, and only where the
    // file may hold data.
    const CHUNK: u64 = 1 << 20;
    let mut last = from;
    for (start, end) in segment.file.data_ranges(from) {
        let (start, end) = (start.max(from), end.min(usable));
        let mut pos = start;
        while pos < end {
            let len = (end - pos).min(CHUNK);
            match segment.file.read(pos, len as usize) {
                Ok(bytes) => {
                    if let Some(end) = nonzero_end(bytes) {
                        last = pos + end as u64;
                    }
                }
                Err(_) => return end,
            }
            pos += len;
        }
    }
    last
}

/// One past the last non-zero byte of `bytes`, comparing eight bytes at a time.
fn nonzero_end(bytes: &[u8]) -> Option<usize> {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    if let Some(i) = tail.iter().rposition(|&b| b != 0) {
        return Some(bytes.len() - tail.len() + i + 1);
    }
    let word_count = bytes.len() / 8;
    let last_word = words.rev().position(|w| w != [0u8; 8])?;
    let start = (word_count - 1 - last_word) * 8;
    let word = bytes.get(start..start + 8)?;
    word.iter().rposition(|&b| b != 0).map(|i| start + i + 1)
}

#[cfg(test)]
mod tests {
    use super::nonzero_end;

    #[test]
    fn nonzero_end_finds_the_last_non_zero_byte() {
        assert_eq!(nonzero_end(&[]), None);
        assert_eq!(nonzero_end(&[0; 37]), None);
        for len in 1..40 {
            for at in 0..len {
                let mut bytes = vec![0u8; len];
                bytes[at] = 1;
                assert_eq!(nonzero_end(&bytes), Some(at + 1), "len {len} at {at}");
            }
        }
    }
}
