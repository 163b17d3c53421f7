//! Recovery on open: read every segment in order, rebuild state through a visitor, decide
//! what the recovery mode makes of each problem, and (for a writer) repair the tail so that
//! new records never land after garbage.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::format::{
    HeaderError, RECORD_HEADER_LEN, RecordKind, SEGMENT_HEADER_LEN, decode_segment_header,
};
use crate::options::RecoveryMode;
use crate::storage::Storage;

use super::report::{Finding, FindingKind, RecoveryReport};
use super::scan::{ScanOutcome, ScanRules, Visit, scan_segment};
use super::segment::{
    COMPACTING_SUFFIX, CREATING_SUFFIX, DISCARDED_SUFFIX, Segment, parse_segment_file_name,
    sync_error,
};

/// Files of a store directory that are not segments but belong there.
const KNOWN_FILES: [&str; 3] = [
    crate::storage::LOCK_FILE,
    super::MARKER_FILE,
    super::SHAPE_FILE,
];

/// Where the writer continues after recovery.
#[derive(Debug)]
pub(crate) struct Tail {
    pub segment: Arc<Segment>,
    pub valid_end: u64,
    pub sealed: bool,
    /// Records it holds, marks not counted.
    pub records: u64,
}

/// The outcome of recovery.
#[derive(Debug)]
pub(crate) struct Recovered {
    /// The segments whose records are live, in order.
    pub segments: Vec<Arc<Segment>>,
    /// The last kept segment, if it can take more records.
    pub tail: Option<Tail>,
    /// The next sequence number to hand out.
    pub next_seq: u64,
    /// The highest `durable_seq` of the records kept: what the log proves durable.
    pub proven_seq: u64,
    /// The highest segment id still in use after repairs; the next segment gets the one after.
    pub max_segment_id: u64,
    pub report: RecoveryReport,
}

/// What a writer must change on disk once the scan is done.
#[derive(Debug, Default)]
struct Repairs {
    remove: Vec<PathBuf>,
    /// Segments replaced by a compacted one, removed only after everything else.
    superseded: Vec<PathBuf>,
    set_aside: Vec<PathBuf>,
    /// Zero `from..to` of the tail segment.
    zero: Option<(u64, u64)>,
    /// Grow the tail segment's file back to its declared length.
    extend: Option<u64>,
}

struct Listing {
    segments: Vec<(u64, PathBuf)>,
    leftovers: Vec<PathBuf>,
}

fn list(storage: &dyn Storage, dir: &Path, report: &mut RecoveryReport) -> Result<Listing> {
    let entries = storage
        .read_dir(dir)
        .map_err(|e| Error::io("list store directory", dir, e))?;
    let mut listing = Listing {
        segments: Vec::new(),
        leftovers: Vec::new(),
    };
    for entry in entries {
        if let Some(id) = parse_segment_file_name(&entry.name) {
            if !entry.is_file {
                return Err(Error::NotASegment {
                    path: entry.path,
                    reason: "not a regular file".into(),
                });
            }
            listing.segments.push((id, entry.path));
        } else if entry.name.ends_with(CREATING_SUFFIX) || entry.name.ends_with(COMPACTING_SUFFIX) {
            listing.leftovers.push(entry.path);
        } else if entry.name.contains(DISCARDED_SUFFIX) {
            report.notes.push(format!(
                "{} was set aside by an earlier recovery",
                entry.name
            ));
        } else if !KNOWN_FILES.contains(&entry.name.as_str())
            && !super::is_marker_tmp(&entry.name)
            && !super::shape::is_shape_tmp(&entry.name)
        {
            report
                .notes
                .push(format!("ignored foreign file {}", entry.name));
        }
    }
    listing.segments.sort_by_key(|(id, _)| *id);
    Ok(listing)
}

/// Opens and checks the header of one segment. `Ok(None)` for a blank or too-short header
/// (a file whose creation never completed).
fn open_segment(
    storage: &dyn Storage,
    path: &Path,
    id: u64,
    writable: bool,
) -> Result<Result<Segment, String>> {
    let file = storage
        .open_segment(path, writable)
        .map_err(|e| Error::open_segment(path, e))?;
    let head = file
        .read(0, SEGMENT_HEADER_LEN.min(file.len() as usize))
        .unwrap_or_default();
    match decode_segment_header(head) {
        Ok(header) if header.segment_id != id => Ok(Err(format!(
            "header says segment {} but the file name says {id}",
            header.segment_id
        ))),
        Ok(header) => Ok(Ok(Segment::new(path.to_path_buf(), header, file))),
        Err(HeaderError::BadMagic) => Err(Error::NotASegment {
            path: path.to_path_buf(),
            reason: "it does not start with the CAIRNSEG magic".into(),
        }),
        Err(HeaderError::UnsupportedVersion(found)) => Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            supported: crate::format::FORMAT_VERSION,
        }),
        Err(HeaderError::TooShort) => Ok(Err(format!("file is only {} bytes long", file.len()))),
        Err(HeaderError::Blank) => Ok(Err("header is all zero bytes".into())),
        Err(HeaderError::Damaged(reason)) => Ok(Err(reason.to_string())),
    }
}

/// True when the segment holds no record at all: its first record slot is blank.
fn holds_no_records(segment: &Segment) -> bool {
    segment
        .file
        .read(SEGMENT_HEADER_LEN as u64, RECORD_HEADER_LEN)
        .is_ok_and(|b| b.iter().all(|&x| x == 0))
}

/// The recovery pass over a whole store directory: check every segment header, drop the
/// segments a committed compaction superseded, scan the rest in order (the records go to
/// `visit`), decide where the writer continues, and, for a writer, apply the repairs.
pub(crate) fn recover<E: Display>(
    storage: &dyn Storage,
    dir: &Path,
    mode: RecoveryMode,
    writable: bool,
    visit: &mut Visit<'_, E>,
) -> Result<Recovered> {
    let started = Instant::now();
    let mut report = RecoveryReport::new(mode);
    let listing = list(storage, dir, &mut report)?;
    let mut repairs = Repairs::default();
    for leftover in &listing.leftovers {
        report.notes.push(format!(
            "{} is left by an interrupted segment creation or compaction (a writer removes it)",
            leftover.display()
        ));
        repairs.remove.push(leftover.clone());
    }
    let mut pass = Pass::new(mode, report);
    // Every header is checked before any record is read, so a foreign or newer file is refused
    // before anything is half-read.
    let opened = open_all(storage, &listing, writable)?;
    let opened = pass.drop_superseded(opened, &mut repairs);
    let count = opened.len();
    let tail_outcome = pass.scan_all(opened, &mut repairs, visit)?;
    let tail = finish_tail(&mut pass, tail_outcome, &mut repairs);
    let max_segment_id = max_segment_id(&listing, &repairs);
    let Pass {
        mut report,
        mut kept,
        next_seq,
        proven_seq,
        ..
    } = pass;
    report.last_seq = next_seq - 1;
    report.segments_scanned = count;
    report.segments_superseded = repairs.superseded.len();
    let mut tail = tail;
    if writable {
        repair(
            storage,
            dir,
            &repairs,
            &kept,
            proven_seq,
            &mut tail,
            &mut report,
        )?;
    }
    if let (Some(tail), Some(last)) = (tail.as_ref(), kept.last_mut()) {
        *last = tail.segment.clone();
    }
    report.duration = started.elapsed();
    Ok(Recovered {
        segments: kept,
        tail,
        next_seq,
        proven_seq,
        max_segment_id,
        report,
    })
}

/// The highest segment id still in use, which new segments follow; removed and set-aside ones
/// are gone.
fn max_segment_id(listing: &Listing, repairs: &Repairs) -> u64 {
    listing
        .segments
        .iter()
        .filter(|(_, path)| !repairs.remove.contains(path) && !repairs.set_aside.contains(path))
        .map(|(id, _)| *id)
        .max()
        .unwrap_or(0)
}

/// A segment file of the listing, its header checked.
struct Opened {
    path: PathBuf,
    /// The segment, or why its header is unusable.
    segment: Result<Segment, String>,
    /// The file holds only zero bytes (or none): its creation never completed.
    blank: bool,
}

/// Opens every segment of the listing and checks its header.
fn open_all(storage: &dyn Storage, listing: &Listing, writable: bool) -> Result<Vec<Opened>> {
    let mut opened = Vec::with_capacity(listing.segments.len());
    for (id, path) in &listing.segments {
        let segment = open_segment(storage, path, *id, writable)?;
        let blank = segment.is_err() && blank_file(storage, path);
        opened.push(Opened {
            path: path.clone(),
            segment,
            blank,
        });
    }
    Ok(opened)
}

/// The writer's repairs, once the scan succeeded: leftovers removed and segments set aside,
/// every kept record made durable, the tail fit to take new records.
fn repair(
    storage: &dyn Storage,
    dir: &Path,
    repairs: &Repairs,
    kept: &[Arc<Segment>],
    proven_seq: u64,
    tail: &mut Option<Tail>,
    report: &mut RecoveryReport,
) -> Result<()> {
    apply_repairs(storage, dir, repairs, report)?;
    // Records no record proves durable may be only in the page cache: left there by a
    // process that crashed (dirty pages, which a sync writes), or by one whose sync failed
    // earlier in this boot (pages the kernel marked clean without writing them, which no
    // sync will ever write). Writing them again makes them dirty, so that the sync below
    // really makes everything recovered durable before anything new is acknowledged.
    for segment in kept {
        rewrite_unproven(segment, proven_seq, report)?;
        segment
            .sync_to(segment.published_end())
            .map_err(|e| sync_error("sync recovered segment", &segment.path, e))?;
    }
    if let Some(tail) = tail.as_mut() {
        repair_tail(storage, tail, repairs, report)?;
    }
    Ok(())
}

/// Writes the records of `segment` that no record proves durable (those numbered above
/// `proven_seq`, marks included) again, byte for byte, so that the next sync writes them.
fn rewrite_unproven(segment: &Segment, proven_seq: u64, report: &mut RecoveryReport) -> Result<()> {
    let end = segment.published_end();
    let Some(unproven) = first_record_above(segment, proven_seq, end)? else {
        return Ok(());
    };
    let bytes = segment
        .file
        .read(unproven.offset, (end - unproven.offset) as usize)
        .map_err(|e| Error::io("read recovered records of", &segment.path, e))?
        .to_vec();
    segment
        .file
        .write(unproven.offset, &bytes)
        .map_err(|e| sync_error("write recovered records again to", &segment.path, e))?;
    report.bytes_rewritten += bytes.len() as u64;
    // Only marks (the proof a clean close leaves) is the normal case, not worth a note.
    if let Some(seq) = unproven.first_record_seq {
        report.notes.push(format!(
            "{}: no record proves records from {seq} on durable (the last writer did not close \
             cleanly); a writer wrote their {} bytes again and synced them",
            segment.path.display(),
            bytes.len()
        ));
    }
    Ok(())
}

/// Where the records numbered above some sequence number start.
struct Unproven {
    offset: u64,
    /// The first of them that is not a mark, if any.
    first_record_seq: Option<u64>,
}

/// The first record of `segment` below `end` numbered above `seq`, stepping over what
/// recovery skipped.
fn first_record_above(segment: &Segment, seq: u64, end: u64) -> Result<Option<Unproven>> {
    let mut pos = SEGMENT_HEADER_LEN as u64;
    let mut found: Option<Unproven> = None;
    while pos < end {
        if let Some(&(_, skip_to)) = segment.skipped.iter().find(|(start, _)| *start == pos) {
            pos = skip_to;
            continue;
        }
        let (header, _) = segment.read_record(pos)?;
        if header.seq > seq {
            let unproven = found.get_or_insert(Unproven {
                offset: pos,
                first_record_seq: None,
            });
            if header.kind != RecordKind::Mark {
                unproven.first_record_seq = Some(header.seq);
                break;
            }
        }
        pos += header.padded_len() as u64;
    }
    Ok(found)
}

fn blank_file(storage: &dyn Storage, path: &Path) -> bool {
    storage.open_segment(path, false).is_ok_and(|file| {
        let len = file.len();
        len == 0
            || file
                .read(0, len as usize)
                .is_ok_and(|b| b.iter().all(|&x| x == 0))
    })
}

/// State of the recovery pass across segments.
struct Pass {
    mode: RecoveryMode,
    report: RecoveryReport,
    kept: Vec<Arc<Segment>>,
    next_seq: u64,
    /// The highest `durable_seq` of the records kept.
    proven_seq: u64,
    /// Point-in-time recovery met damage: everything after is set aside.
    stopped: bool,
}

impl Pass {
    fn new(mode: RecoveryMode, report: RecoveryReport) -> Pass {
        Pass {
            mode,
            report,
            kept: Vec::new(),
            next_seq: 1,
            proven_seq: 0,
            stopped: false,
        }
    }

    /// Records a finding and applies the mode: an error, a stop, or carry on.
    fn damage(
        &mut self,
        segment: &Path,
        offset: u64,
        len_bytes: u64,
        kind: FindingKind,
        detail: String,
    ) -> Result<()> {
        let finding = Finding {
            kind,
            segment: segment.to_path_buf(),
            offset,
            len_bytes,
            detail,
        };
        let tolerated = match self.mode {
            RecoveryMode::AbsoluteConsistency => false,
            RecoveryMode::TolerateTornTail => kind == FindingKind::TornTail,
            RecoveryMode::PointInTime | RecoveryMode::SkipCorrupted => true,
        };
        if !tolerated {
            return Err(Error::Corrupt {
                segment: finding.segment,
                offset,
                reason: format!(
                    "{:?}: {}; the {} recovery mode does not tolerate this. Run `cairn verify` \
                     to see all damage, or open with point-in-time or skip-corrupted recovery \
                     to keep what is intact",
                    kind,
                    finding.detail,
                    self.mode.name()
                ),
            });
        }
        if self.mode == RecoveryMode::PointInTime && kind != FindingKind::TornTail {
            self.stopped = true;
        }
        self.report.add(finding);
        Ok(())
    }

    fn set_aside(&mut self, path: &Path, repairs: &mut Repairs) {
        self.report.notes.push(format!(
            "{} is after the point-in-time recovery point; a writer sets it aside",
            path.display()
        ));
        repairs.set_aside.push(path.to_path_buf());
    }

    fn check_continuity(&mut self, segment: &Segment, prev_id: Option<u64>) -> Result<()> {
        let path = &segment.path;
        if let Some(prev) = prev_id
            && segment.id != prev + 1
        {
            self.damage(
                path,
                0,
                0,
                FindingKind::MissingSegment,
                format!("segments {}..={} are missing", prev + 1, segment.id - 1),
            )?;
        } else if prev_id.is_none()
            && ((segment.id != 1 && !segment.header.compacted) || segment.header.first_seq != 1)
        {
            self.damage(
                path,
                0,
                0,
                FindingKind::MissingSegment,
                format!(
                    "the oldest segment is {} starting at sequence number {}; the log starts at \
                 segment 1 (or a compacted segment), sequence number 1",
                    segment.id, segment.header.first_seq
                ),
            )?;
        } else if !self.kept.is_empty() && segment.header.first_seq != self.next_seq {
            self.damage(
                path,
                0,
                0,
                FindingKind::MissingSegment,
                format!(
                    "segment starts at sequence number {}, the previous one ended before {}",
                    segment.header.first_seq, self.next_seq
                ),
            )?;
        }
        Ok(())
    }

    /// Drops the segments a compacted segment replaces (every one with a lower id): what a
    /// compaction that committed (renamed its output into place) had not deleted yet when it
    /// stopped.
    fn drop_superseded(&mut self, mut opened: Vec<Opened>, repairs: &mut Repairs) -> Vec<Opened> {
        let newest_compacted = opened.iter().rposition(|opened| {
            opened
                .segment
                .as_ref()
                .is_ok_and(|segment| segment.header.compacted)
        });
        if let Some(newest) = newest_compacted {
            for superseded in opened.drain(..newest) {
                self.report.notes.push(format!(
                    "{} was replaced by a compaction that committed; a writer removes it",
                    superseded.path.display()
                ));
                repairs.superseded.push(superseded.path);
            }
        }
        opened
    }

    /// Scans the segments in order; returns the outcome of the last one scanned.
    fn scan_all<E: Display>(
        &mut self,
        opened: Vec<Opened>,
        repairs: &mut Repairs,
        visit: &mut Visit<'_, E>,
    ) -> Result<Option<ScanOutcome>> {
        let count = opened.len();
        let mut tail_outcome: Option<ScanOutcome> = None;
        let mut prev_id: Option<u64> = None;
        let mut iter = opened.into_iter().enumerate().peekable();
        while let Some((i, opened)) = iter.next() {
            let Opened {
                path,
                segment,
                blank,
            } = opened;
            if self.stopped {
                self.set_aside(&path, repairs);
                continue;
            }
            let is_last = i + 1 == count;
            let segment = match segment {
                Ok(segment) => segment,
                Err(reason) => {
                    self.unusable_header(path, reason, is_last && blank, repairs)?;
                    continue;
                }
            };
            self.check_continuity(&segment, prev_id)?;
            if self.stopped {
                self.set_aside(&path, repairs);
                continue;
            }
            prev_id = Some(segment.id);
            // An empty newest segment after an unsealed one is the leftover of a rollover that
            // was interrupted before the old segment was sealed: the old one is the real tail.
            let next_is_empty_last = i + 2 == count
                && iter.peek().is_some_and(|(_, next)| match &next.segment {
                    Ok(next) => holds_no_records(next),
                    Err(_) => next.blank,
                });
            let outcome = self.scan(segment, is_last || next_is_empty_last, visit)?;
            if next_is_empty_last
                && !outcome.sealed
                && !self.stopped
                && let Some((_, next)) = iter.next()
            {
                self.report.notes.push(format!(
                    "{}: an empty segment left by an interrupted rollover; a writer removes it",
                    next.path.display()
                ));
                repairs.remove.push(next.path);
            }
            tail_outcome = Some(outcome);
        }
        Ok(tail_outcome)
    }

    /// A segment whose header is unusable: a blank newest file is the leftover of a creation
    /// that never completed (a writer removes it); anything else is a damaged header.
    fn unusable_header(
        &mut self,
        path: PathBuf,
        reason: String,
        blank_last: bool,
        repairs: &mut Repairs,
    ) -> Result<()> {
        if blank_last && self.mode != RecoveryMode::AbsoluteConsistency {
            self.report.notes.push(format!(
                "{}: an empty segment file with no header ({reason}); a writer removes it",
                path.display()
            ));
            repairs.remove.push(path);
            return Ok(());
        }
        self.damage(&path, 0, 0, FindingKind::DamagedSegmentHeader, reason)?;
        if self.stopped {
            self.set_aside(&path, repairs);
        }
        Ok(())
    }

    fn scan<E: Display>(
        &mut self,
        segment: Segment,
        is_last: bool,
        visit: &mut Visit<'_, E>,
    ) -> Result<ScanOutcome> {
        let rules = ScanRules {
            skip: self.mode == RecoveryMode::SkipCorrupted,
            is_last,
        };
        let outcome = scan_segment(&segment, rules, visit);
        segment.publish(outcome.valid_end);
        let mut segment = segment;
        // What skip-corrupted stepped over inside the kept records, readers step over too.
        segment.skipped = outcome
            .damage
            .iter()
            .filter(|damage| damage.offset < outcome.valid_end && damage.len_bytes > 0)
            .map(|damage| (damage.offset, damage.offset + damage.len_bytes))
            .collect();
        self.report.records_scanned += outcome.records;
        self.report.bytes_scanned += outcome.record_bytes;
        self.report_findings(&segment, &outcome, is_last)?;
        self.proven_seq = self.proven_seq.max(outcome.proven_seq);
        if let Some(last) = outcome.last_seq {
            self.next_seq = self.next_seq.max(last + 1);
        } else {
            self.next_seq = self.next_seq.max(segment.header.first_seq);
        }
        self.kept.push(Arc::new(segment));
        Ok(outcome)
    }

    /// Applies the mode to what the scan of `segment` found: a cut-off file, damaged records,
    /// a missing seal or snapshot.
    fn report_findings(
        &mut self,
        segment: &Segment,
        outcome: &ScanOutcome,
        is_last: bool,
    ) -> Result<()> {
        let path = &segment.path;
        // A cut-off file explains the damage at its end: report the cause first.
        let file_len = segment.file.len();
        if file_len < segment.header.segment_len {
            self.damage(
                path,
                file_len,
                segment.header.segment_len - file_len,
                FindingKind::Truncated,
                format!(
                    "file is {file_len} bytes, its header says {}",
                    segment.header.segment_len
                ),
            )?;
        }
        for damage in &outcome.damage {
            if self.stopped {
                break;
            }
            let (offset, len_bytes) = (damage.offset, damage.len_bytes);
            self.damage(path, offset, len_bytes, damage.kind, damage.detail.clone())?;
        }
        if segment.header.compacted && !outcome.sealed && !self.stopped {
            self.damage(
                path,
                outcome.valid_end,
                0,
                FindingKind::DamagedRecord,
                "a compacted segment does not end with its snapshot record".into(),
            )?;
        } else if !outcome.sealed && !is_last && !self.stopped {
            self.damage(
                path,
                outcome.valid_end,
                0,
                FindingKind::MissingSeal,
                "a segment followed by another one does not end with a seal record".into(),
            )?;
        }
        Ok(())
    }
}

/// Decides where the writer continues and what must be repaired there.
fn finish_tail(
    pass: &mut Pass,
    outcome: Option<ScanOutcome>,
    repairs: &mut Repairs,
) -> Option<Tail> {
    let segment = pass.kept.last()?.clone();
    let outcome = outcome?;
    // A compacted segment never takes new records, and its bytes are never zeroed, even when
    // skip-corrupted recovery could not find its snapshot: the writer starts a new segment.
    if segment.header.compacted {
        return None;
    }
    if outcome.dirty_end > outcome.valid_end && !outcome.sealed {
        repairs.zero = Some((outcome.valid_end, outcome.dirty_end));
    }
    if segment.file.len() < segment.header.segment_len {
        repairs.extend = Some(segment.header.segment_len);
    }
    Some(Tail {
        segment,
        valid_end: outcome.valid_end,
        sealed: outcome.sealed,
        records: outcome.records,
    })
}

fn apply_repairs(
    storage: &dyn Storage,
    dir: &Path,
    repairs: &Repairs,
    report: &mut RecoveryReport,
) -> Result<()> {
    for path in &repairs.remove {
        storage
            .remove_file(path)
            .map_err(|e| Error::io("remove leftover", path, e))?;
    }
    for path in &repairs.set_aside {
        let mut name = path.as_os_str().to_owned();
        // A unique name: ids set aside once are reused by new segments, which may be set
        // aside again later.
        let stamp = chrono::Utc::now().timestamp_micros();
        name.push(format!(
            "{}-{stamp}",
            DISCARDED_SUFFIX.trim_start_matches(".seg")
        ));
        storage
            .rename(path, Path::new(&name))
            .map_err(|e| Error::io("set aside segment", path, e))?;
    }
    // The compacted segment that replaces these is durable (it was renamed into place and the
    // directory synced before any of them was removed).
    for path in &repairs.superseded {
        storage
            .remove_file(path)
            .map_err(|e| Error::io("remove replaced segment", path, e))?;
    }
    if !repairs.remove.is_empty() || !repairs.set_aside.is_empty() || !repairs.superseded.is_empty()
    {
        storage
            .sync_dir(dir)
            .map_err(|e| Error::io("sync directory", dir, e))?;
        report.repaired = true;
    }
    Ok(())
}

/// Makes the tail segment fit to take new records: its full length restored, garbage after
/// the valid data zeroed, and everything recovered synced.
fn repair_tail(
    storage: &dyn Storage,
    tail: &mut Tail,
    repairs: &Repairs,
    report: &mut RecoveryReport,
) -> Result<()> {
    if let Some(len) = repairs.extend {
        let path = tail.segment.path.clone();
        storage
            .extend_file(&path, len)
            .map_err(|e| sync_error("restore segment length", &path, e))?;
        let file = storage
            .open_segment(&path, true)
            .map_err(|e| Error::open_segment(&path, e))?;
        tail.segment = Arc::new(tail.segment.remapped(file));
        report.repaired = true;
        report.notes.push(format!(
            "restored {} to its full length of {len} bytes",
            tail.segment.path.display()
        ));
    }
    let segment = &tail.segment;
    if let Some((from, to)) = repairs.zero {
        report.repaired = true;
        report.notes.push(format!(
            "zeroed {} bytes after the end of valid data in {}",
            to - from,
            segment.path.display()
        ));
    }
    // Recovered records may sit unsynced in the page cache after a process crash: make them
    // durable before anything new is acknowledged on top of them. Then clear everything after
    // them, garbage or not, so new records never land before stale bytes.
    segment
        .sync_to(tail.valid_end)
        .and_then(|()| segment.file.zero_to_end(tail.valid_end))
        .map_err(|e| sync_error("cut off the tail of", &segment.path, e))?;
    Ok(())
}
