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

use crate::format::{
    RECORD_ALIGN, RECORD_HEADER_LEN, RecordHeader, RecordKind, SEGMENT_HEADER_LEN, check_record,
    decode_record_header,
};

use super::RecordRef;
use super::report::FindingKind;
use super::segment::Segment;

/// Called for every valid record in log order with the segment id, the record's offset, its
/// header and its body. An `Err` marks the record as damaged (its body does not decode).
pub(crate) type Visit<'a> = dyn FnMut(&RecordRef<'_>) -> Result<(), String> + 'a;

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

/// Scans `segment`, calling `visit` for each valid record.
pub(crate) fn scan_segment(
    segment: &Segment,
    rules: ScanRules,
    visit: &mut Visit<'_>,
) -> ScanOutcome {
    let usable = segment.usable_len();
    let mut out = ScanOutcome::default();
    let mut pos = SEGMENT_HEADER_LEN as u64;
    let mut expected = segment.header.first_seq;
    out.valid_end = pos;
    loop {
        let record = match next_record(segment, pos, expected, usable) {
            Step::End => break,
            Step::Record(header, len) => Ok((header, len)),
            // Skip-corrupted keeps a valid record after a gap, and reports the gap.
            Step::Gap(header, len) if rules.skip => {
                out.damage.push(Damage {
                    offset: pos,
                    len_bytes: 0,
                    kind: FindingKind::DamagedRecord,
                    detail: format!(
                        "sequence numbers {expected}..{} are missing",
                        header.seq - 1
                    ),
                });
                Ok((header, len))
            }
            Step::Gap(header, _) => Err(format!(
                "sequence number {} where {expected} was expected",
                header.seq
            )),
            Step::Bad(problem) => Err(problem),
        };
        let problem = match record {
            Ok((header, len)) if header.kind == RecordKind::Mark => {
                pos += len;
                out.valid_end = pos;
                out.proven_seq = out.proven_seq.max(header.durable_seq);
                continue;
            }
            Ok((header, len)) => {
                let body = record_body(segment, pos, &header);
                match visit(&segment.record_ref(pos, header, body)) {
                    Ok(()) => {
                        pos += len;
                        // The parts of a snapshot share its sequence number.
                        expected = header.seq + u64::from(header.kind != RecordKind::SnapshotPart);
                        out.valid_end = pos;
                        out.last_seq = Some(header.seq);
                        out.records += 1;
                        out.record_bytes += len;
                        out.proven_seq = out.proven_seq.max(header.durable_seq);
                        if matches!(header.kind, RecordKind::Seal | RecordKind::Snapshot) {
                            out.sealed = true;
                            break;
                        }
                        continue;
                    }
                    Err(reason) => format!("record {} does not decode: {reason}", header.seq),
                }
            }
            Err(problem) => problem,
        };
        if !stop_or_skip(
            segment,
            rules,
            &mut out,
            &mut pos,
            &mut expected,
            problem,
            usable,
        ) {
            break;
        }
    }
    out.dirty_end = if out.sealed {
        out.valid_end
    } else {
        last_nonzero_end(segment, out.valid_end, usable)
    };
    out
}

/// Records the damage at `pos` and, when skipping and a valid record follows, moves to it and
/// returns true; returns false when the scan stops here.
fn stop_or_skip(
    segment: &Segment,
    rules: ScanRules,
    out: &mut ScanOutcome,
    pos: &mut u64,
    expected: &mut u64,
    problem: String,
    usable: u64,
) -> bool {
    let (at, next_seq) = (*pos, *expected);
    let resync = find_next_valid(segment, at + RECORD_ALIGN as u64, next_seq, usable);
    // Every valid record after the first damage, for the proof of durability. One survey
    // serves every later damage too: records between two damaged ones precede the second, so
    // their `durable_seq` is below its sequence number and cannot prove it.
    let later = *out
        .after_damage
        .get_or_insert_with(|| survey(segment, at + RECORD_ALIGN as u64, next_seq, usable));
    // Skipping ends the damage at the next valid record; stopping discards everything up to
    // the last byte written.
    let damage_end = match resync {
        Some((offset, _)) if rules.skip => offset,
        _ => last_nonzero_end(segment, at, usable),
    };
    let (kind, detail) = if later.max_durable_seq >= next_seq {
        (
            FindingKind::DurableRecordsLost,
            format!(
                "{problem}; {} valid records follow it (up to sequence number {}), and one \
                 of them was written when records up to {} were durable, so durable records \
                 from {next_seq} on are damaged or lost",
                later.records, later.max_seq, later.max_durable_seq
            ),
        )
    } else if rules.is_last {
        (
            FindingKind::TornTail,
            format!(
                "{problem}; no later record proves that record {next_seq} or any after it \
                 was ever synced: a write torn by a crash"
            ),
        )
    } else {
        (FindingKind::DamagedRecord, problem)
    };
    out.damage.push(Damage {
        offset: at,
        len_bytes: damage_end.saturating_sub(at),
        kind,
        detail,
    });
    match resync {
        Some((offset, next)) if rules.skip => {
            *pos = offset;
            *expected = next.seq;
            true
        }
        _ => false,
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
    let salt = segment.header.salt;
    if pos + RECORD_HEADER_LEN as u64 > usable {
        return if last_nonzero_end(segment, pos, usable) > pos {
            Step::Bad("non-zero bytes in the last bytes of the segment".into())
        } else {
            Step::End
        };
    }
    let Ok(head) = segment.file.read(pos, RECORD_HEADER_LEN) else {
        return Step::Bad("record header unreadable".into());
    };
    let header = match decode_record_header(salt, head) {
        Ok(header) => header,
        Err(crate::format::HeaderProblem::Blank) => {
            return if last_nonzero_end(segment, pos, usable) > pos {
                Step::Bad("zeroed bytes followed by data".into())
            } else {
                Step::End
            };
        }
        Err(problem) => return Step::Bad(format!("{problem:?}")),
    };
    let len = header.padded_len() as u64;
    if pos + len > usable {
        return Step::Bad(format!(
            "record {} runs past the end of the segment",
            header.seq
        ));
    }
    let Ok(record) = segment.file.read(pos, len as usize) else {
        return Step::Bad("record unreadable".into());
    };
    if !check_record(salt, record) {
        return Step::Bad(format!("record {} checksum mismatch", header.seq));
    }
    if header.kind == RecordKind::JobEvent && segment.header.version < 2 {
        return Step::Bad(format!(
            "record {} is a job event in a format 1 segment",
            header.seq
        ));
    }
    if header.kind == RecordKind::Mark
        && (segment.header.version < crate::format::MARK_VERSION || segment.header.compacted)
    {
        return Step::Bad(format!(
            "record {} is a mark in a segment of format {}{}",
            header.seq,
            segment.header.version,
            if segment.header.compacted {
                ", compacted"
            } else {
                ""
            }
        ));
    }
    // A mark takes the number the next record takes: exactly the expected one.
    if header.kind == RecordKind::Mark && header.seq != expected {
        return Step::Bad(format!(
            "mark numbered {} where {expected} was expected",
            header.seq
        ));
    }
    if header.kind == RecordKind::Snapshot && !segment.header.compacted {
        return Step::Bad(format!(
            "record {} is a snapshot outside a compacted segment",
            header.seq
        ));
    }
    if header.kind == RecordKind::SnapshotPart
        && (!segment.header.compacted
            || segment.header.version < crate::format::SNAPSHOT_PARTS_VERSION)
    {
        return Step::Bad(format!(
            "record {} is a snapshot part outside a compacted segment of format 4 or later",
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
