//! Compaction and retention: which records stay, and the switch to the compacted segment.
//!
//! A compaction takes every sealed segment (all but the one being written), decides with the
//! retention policy which checkpoints stay, folds every job event into one snapshot record of
//! all jobs' states, and has the log write them into one compacted segment that takes the id
//! of the newest segment it replaces. Records keep their sequence numbers. docs/FORMAT.md
//! ("Compaction") gives the protocol and why a crash at any step loses nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::index::{Index, RangeCheckpoint};
use super::{Inner, Store};
use crate::error::{Error, Result};
use crate::format::{RecordKind, decode_checkpoint_meta};
use crate::log::{Kept, Log, Segment};
use crate::options::Retention;

/// What a compaction did, or (dry run) would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CompactionReport {
    /// Nothing was changed: this is what a compaction would do.
    pub dry_run: bool,
    /// Segments were rewritten (false when there was nothing to gain).
    pub compacted: bool,
    /// Segment files before.
    pub segments_before: usize,
    /// Segment files after.
    pub segments_after: usize,
    /// Bytes of segment files before.
    pub bytes_before: u64,
    /// Bytes of segment files after.
    pub bytes_after: u64,
    /// `bytes_before - bytes_after`.
    pub bytes_freed: u64,
    /// Checkpoints of the compacted segments that were kept.
    pub checkpoints_kept: u64,
    /// Checkpoints dropped by the retention policy or with their deleted job.
    pub checkpoints_dropped: u64,
    /// Job events folded into the snapshot record.
    pub events_folded: u64,
    /// Jobs in the snapshot.
    pub jobs: usize,
    /// Records the snapshot takes: 1, or more when the job states are more than one record
    /// body may hold (64 MiB) and the snapshot is written in parts (docs/FORMAT.md).
    pub snapshot_records: usize,
    /// Records up to this sequence number were compacted.
    pub upto_seq: u64,
    /// The size limit cannot be met even with only each job's latest checkpoint kept.
    pub over_limit: bool,
    /// Time taken, in microseconds.
    pub duration_us: u64,
    /// Files of replaced segments that could not be removed after the compaction committed
    /// (a warning is logged). The compaction succeeded and readers use the compacted segment;
    /// the files take disk space until the next writer to open the store removes them.
    pub replaced_files_left: usize,
}

/// How far a compaction got, for progress bars: reported as it reads the segments it
/// compacts, and once more when it writes the compacted one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CompactionProgress {
    /// `"scan"` while reading, `"write"` once writing.
    pub phase: &'static str,
    /// Bytes of the compacted segments read so far.
    pub done_bytes: u64,
    /// Bytes of records in the segments being compacted.
    pub total_bytes: u64,
}

/// The space a store takes and what compaction could free, from [`Store::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StoreStats {
    /// Segment files.
    pub segments: usize,
    /// Bytes of segment files on disk (they are preallocated).
    pub storage_bytes: u64,
    /// Valid records in the log.
    pub records: u64,
    /// Bytes of those records.
    pub record_bytes: u64,
    /// Bytes of records a compaction would keep (and every record of the segment being
    /// written).
    pub live_bytes: u64,
    /// Bytes of records a compaction would drop or fold into its snapshot.
    pub dead_bytes: u64,
    /// Jobs in the store.
    pub jobs: usize,
    /// Bytes of disk a compaction would free now.
    pub reclaimable_bytes: u64,
    /// The size limit, if any.
    pub size_limit_bytes: Option<u64>,
    /// Even after a compaction, the size limit would leave no room for a new segment: the
    /// next save that needs one fails with [`Error::StoreFull`](crate::Error::StoreFull).
    pub full: bool,
    /// Compactions the store ran on its own (the background compactor, or a save making room
    /// under the size limit) that failed since this store was opened.
    pub compaction_failures: u64,
    /// Why the last of those failed, unless one has succeeded since.
    pub last_compaction_error: Option<String>,
}

/// A checkpoint of the compacted range.
struct Candidate {
    job: String,
    seq: u64,
    at_micros: i64,
    segment: Arc<Segment>,
    offset: u64,
    bytes: u64,
    keep: bool,
    /// The job's newest checkpoint: kept whatever the policy says.
    latest: bool,
}

/// A decided compaction.
struct Plan {
    range: Vec<Arc<Segment>>,
    candidates: Vec<Candidate>,
    /// The snapshot's record bodies: the parts, then the final one.
    snapshot: Vec<Vec<u8>>,
    upto_seq: u64,
    dead_before: u64,
    report: CompactionReport,
    /// Bytes of records dropped or folded.
    dead_bytes: u64,
    /// Bytes of records read.
    scanned_bytes: u64,
}

impl Store {
    /// Compacts the store with its retention policy ([`Options::retention`](crate::Options::retention))
    /// and reports what it freed. The segment being written is sealed first (when it holds
    /// records and the size limit leaves room for a new one), so the policy applies to every
    /// record saved so far. Saves from other threads carry on meanwhile, except for a short
    /// pause while the compacted segment is switched in.
    pub fn compact(&self) -> Result<CompactionReport> {
        self.compact_with(&self.inner.options.retention)
    }

    /// Compacts with the given retention policy instead of the store's.
    pub fn compact_with(&self, retention: &Retention) -> Result<CompactionReport> {
        self.check_writable()?;
        self.inner.compact(retention, How::Explicit, &mut |_| {})
    }

    /// [`Store::compact_with`] (or, `dry_run`, [`Store::compaction_plan`]) calling `progress`
    /// as it goes, e.g. to draw a progress bar.
    pub fn compact_with_progress(
        &self,
        retention: &Retention,
        dry_run: bool,
        progress: &mut dyn FnMut(&CompactionProgress),
    ) -> Result<CompactionReport> {
        let how = if dry_run {
            How::DryRun
        } else {
            self.check_writable()?;
            How::Explicit
        };
        self.inner.compact(retention, how, progress)
    }

    /// What [`Store::compact_with`] would do, without changing anything. Works on read-only
    /// stores too.
    pub fn compaction_plan(&self, retention: &Retention) -> Result<CompactionReport> {
        self.inner.compact(retention, How::DryRun, &mut |_| {})
    }

    /// Segments, bytes, records and jobs, with what compaction (with the store's retention
    /// policy) would free. Reads every record.
    pub fn stats(&self) -> Result<StoreStats> {
        let inner = &self.inner;
        let plan = inner.plan(&inner.options.retention, true, &mut |_| {})?;
        let mut stats = StoreStats {
            segments: inner.log.segment_count(),
            storage_bytes: inner.log.storage_bytes(),
            jobs: self.index().len(),
            size_limit_bytes: inner.options.retention.max_bytes,
            compaction_failures: inner.counters.compaction_failures(),
            last_compaction_error: inner.counters.last_compaction_error(),
            ..StoreStats::default()
        };
        inner.log.for_each_record(&mut |record| {
            stats.records += 1;
            stats.record_bytes += record.header.padded_len() as u64;
            Ok(())
        })?;
        if let Some(plan) = plan {
            stats.dead_bytes = plan.dead_bytes;
            stats.reclaimable_bytes = plan.report.bytes_freed;
        }
        // Two passes over a log that may change in between: never underflow.
        stats.live_bytes = stats.record_bytes.saturating_sub(stats.dead_bytes);
        if let Some(max) = stats.size_limit_bytes {
            let after = stats.storage_bytes - stats.reclaimable_bytes.min(stats.storage_bytes);
            stats.full = after + inner.options.segment_size_bytes > max;
        }
        Ok(stats)
    }
}

/// Which compaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum How {
    /// Asked for: seal the segment being written first, so that every record saved so far is
    /// compacted.
    Explicit,
    /// The background compactor, or a save that needs room: the sealed segments only (no new
    /// segment just for the compaction).
    Background,
    /// Change nothing: what an explicit compaction would do.
    DryRun,
}

impl Inner {
    /// Runs (or plans) one compaction. Compactions take turns.
    pub(super) fn compact(
        &self,
        retention: &Retention,
        how: How,
        progress: &mut dyn FnMut(&CompactionProgress),
    ) -> Result<CompactionReport> {
        let _turn = super::lock_mutex(&self.compaction);
        let started = Instant::now();
        let dry_run = how == How::DryRun;
        let (segments_before, bytes_before) = (self.log.segment_count(), self.log.storage_bytes());
        if how == How::Explicit {
            self.log.seal_current()?;
        }
        let Some(mut plan) = self.plan(retention, dry_run, progress)? else {
            return Ok(CompactionReport {
                dry_run,
                segments_before: self.log.segment_count(),
                segments_after: self.log.segment_count(),
                bytes_before: self.log.storage_bytes(),
                bytes_after: self.log.storage_bytes(),
                duration_us: elapsed_us(started),
                ..CompactionReport::default()
            });
        };
        let mut report = plan.report.clone();
        report.dry_run = dry_run;
        report.segments_before = segments_before;
        report.bytes_before = bytes_before;
        report.bytes_freed = bytes_before.saturating_sub(report.bytes_after);
        if dry_run || !report.compacted {
            report.duration_us = elapsed_us(started);
            return Ok(report);
        }
        // Every record the decisions relied on (newer checkpoints, deletions) must be durable
        // before anything is dropped because of it.
        self.log.sync_all()?;
        // The index swapped at the commit must hold every record compacted.
        self.publish_compacted(plan.upto_seq)?;
        // Whatever counts against the size limit from here on is released however this ends.
        let _reservation = self.log.compaction_reservation();
        if let Some(max) = retention.max_bytes {
            self.reserve_room(&mut plan, &mut report, max);
        }
        progress(&CompactionProgress {
            phase: "write",
            done_bytes: plan.scanned_bytes,
            total_bytes: plan.scanned_bytes,
        });
        let kept: Vec<Kept> = plan
            .candidates
            .iter()
            .filter(|c| c.keep)
            .map(|c| Kept {
                segment: c.segment.clone(),
                offset: c.offset,
            })
            .collect();
        let (segment, offsets) =
            self.log
                .write_compacted(&plan.range, &kept, plan.upto_seq, &plan.snapshot)?;
        let mut offsets = offsets.into_iter();
        let range: Vec<RangeCheckpoint> = plan
            .candidates
            .iter()
            .map(|c| RangeCheckpoint {
                job: c.job.clone(),
                seq: c.seq,
                new_offset: if c.keep { offsets.next() } else { None },
            })
            .collect();
        let segment_id = segment.id;
        {
            // Readers look up a location and read it under the index lock: they see the old
            // segments with the old locations, or the new one with the new.
            let mut index = self.index_mut();
            self.log.install_compacted(segment);
            index.compacted(plan.upto_seq, segment_id, &range, plan.dead_before);
        }
        // Committed: a replaced file that cannot be removed is left for the next writer.
        report.replaced_files_left = self.log.remove_replaced(&plan.range)?;
        report.segments_after = self.log.segment_count();
        report.bytes_after = self.log.storage_bytes();
        report.bytes_freed = report.bytes_before.saturating_sub(report.bytes_after);
        report.duration_us = elapsed_us(started);
        tracing::info!(
            dir = %self.dir.display(),
            upto_seq = report.upto_seq,
            bytes_freed = report.bytes_freed,
            checkpoints_dropped = report.checkpoints_dropped,
            events_folded = report.events_folded,
            duration_us = report.duration_us,
            "cairn: compacted"
        );
        Ok(report)
    }

    /// A compaction the store runs on its own (the background compactor, or a save making
    /// room under the size limit), with the store's retention policy. A failure is counted in
    /// the metrics and logged, as no caller may be there to see it. A panic is caught as a
    /// last line of defence: it is a bug whose effect on the store is unknown, so it poisons
    /// the store (reopen it) and comes back as `Error::Poisoned`.
    pub(super) fn compact_unattended(&self) -> Result<CompactionReport> {
        let retention = self.options.retention;
        let run = || self.compact(&retention, How::Background, &mut |_| {});
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "no message".into());
                let cause = format!("a compaction panicked ({message}); reopen the store");
                self.log.poison(cause.clone());
                Err(Error::Poisoned { cause })
            });
        match &result {
            Ok(_) => self.counters.compaction_succeeded(),
            Err(error) => {
                self.counters.compaction_failed(error.to_string());
                tracing::error!(%error, dir = %self.dir.display(), "cairn: compaction failed");
            }
        }
        result
    }

    /// Decides a compaction of every sealed segment; `None` when there is none.
    /// Under a size limit: reserves the compacted file's bytes against the limit (savers that
    /// need a new segment now count them), then, if the files on disk and the compacted one
    /// would pass the limit plus one segment (saves went on while the plan was made), drops
    /// more history so that they do not.
    fn reserve_room(&self, plan: &mut Plan, report: &mut CompactionReport, max: u64) {
        let snapshot_len = snapshot_bytes(&plan.snapshot);
        let kept_bytes =
            |c: &[Candidate]| -> u64 { c.iter().filter(|c| c.keep).map(|c| c.bytes).sum() };
        let len = compacted_len(kept_bytes(&plan.candidates), snapshot_len);
        let on_disk = self.log.reserve_compaction(len);
        let room = (max + self.options.segment_size_bytes).saturating_sub(on_disk);
        if len <= room {
            return;
        }
        report.over_limit |= !fit_budget(&mut plan.candidates, snapshot_len, room);
        self.log
            .reserve_compaction(compacted_len(kept_bytes(&plan.candidates), snapshot_len));
        let dropped = plan.candidates.iter().filter(|c| !c.keep).count() as u64;
        report.checkpoints_kept = plan.candidates.len() as u64 - dropped;
        report.checkpoints_dropped = dropped;
    }

    /// Decides a compaction of the sealed segments or (`whole_log`, for a prediction of an
    /// explicit compaction) of every segment.
    fn plan(
        &self,
        retention: &Retention,
        whole_log: bool,
        progress: &mut dyn FnMut(&CompactionProgress),
    ) -> Result<Option<Plan>> {
        let range = if whole_log {
            self.log.all_segments()
        } else {
            self.log.sealed_segments()
        };
        let Some(last) = range.last() else {
            return Ok(None);
        };
        let total_bytes: u64 = range.iter().map(|s| s.published_end()).sum();
        let mut scanned_bytes = 0;
        let upto_id = last.id;
        let by_id: HashMap<u64, Arc<Segment>> = range.iter().map(|s| (s.id, s.clone())).collect();
        let mut folded = Index::new(retention.keep_last);
        let mut candidates = Vec::new();
        let (mut upto_seq, mut events, mut dead_bytes) = (0, 0, 0);
        let log = &self.log;
        Log::for_each_record_in(&range, &mut |record| {
            let corrupt = |reason| log.corrupt(record.segment_id, record.offset, reason);
            folded.replay(record).map_err(corrupt)?;
            upto_seq = record.header.seq;
            let bytes = record.header.padded_len() as u64;
            scanned_bytes += bytes;
            progress(&CompactionProgress {
                phase: "scan",
                done_bytes: scanned_bytes,
                total_bytes,
            });
            match record.header.kind {
                RecordKind::Checkpoint => {
                    let meta =
                        decode_checkpoint_meta(record.version, record.body).map_err(corrupt)?;
                    let segment = by_id
                        .get(&record.segment_id)
                        .cloned()
                        .ok_or_else(|| corrupt("record outside the compacted segments".into()))?;
                    candidates.push(Candidate {
                        job: meta.job,
                        seq: record.header.seq,
                        at_micros: meta.at_micros,
                        segment,
                        offset: record.offset,
                        bytes,
                        keep: false,
                        latest: false,
                    });
                }
                RecordKind::JobEvent => {
                    events += 1;
                    dead_bytes += bytes;
                }
                RecordKind::Seal
                | RecordKind::Snapshot
                | RecordKind::SnapshotPart
                | RecordKind::Mark => {
                    dead_bytes += bytes;
                }
            }
            Ok(())
        })?;
        // The snapshot takes the number of the range's seal: the one before the next
        // segment's first. (After skip-corrupted recovery the seal itself may be missing; its
        // number is still free.)
        // (For a prediction over the whole log, the seal an explicit compaction would write.)
        let snapshot_seq = self
            .log
            .first_seq_after(upto_id)
            .map_or(upto_seq + 1, |first| first - 1);
        if snapshot_seq < upto_seq
            || candidates
                .last()
                .is_some_and(|c: &Candidate| c.seq >= snapshot_seq)
        {
            return Err(self.log.corrupt(
                upto_id,
                0,
                format!(
                    "the segment after it starts at {}, not after its last record {upto_seq}; \
                     cannot compact",
                    snapshot_seq + 1
                ),
            ));
        }
        let upto_seq = snapshot_seq;
        let (live_counts, deleted_later, dead_before) = {
            let index = self.index();
            let mut counts = HashMap::new();
            let mut deleted = HashMap::new();
            for c in &candidates {
                if counts.contains_key(&c.job) {
                    continue;
                }
                counts.insert(
                    c.job.clone(),
                    index.get(&c.job).map_or(0, |e| e.checkpoints),
                );
                if let Some(at) = index.deleted_after(&c.job, upto_seq) {
                    deleted.insert(c.job.clone(), at);
                }
            }
            for state in folded.states() {
                if let Some(at) = index.deleted_after(&state.job, upto_seq) {
                    deleted.insert(state.job.clone(), at);
                }
            }
            (counts, deleted, index.dead_bytes())
        };
        decide(
            &mut candidates,
            retention,
            &folded,
            &live_counts,
            &deleted_later,
        );
        let states: Vec<_> = folded
            .states()
            .into_iter()
            .filter(|state| !deleted_later.contains_key(&state.job))
            .collect();
        let jobs = states.len();
        let snapshot = snapshot_parts(&states)?;
        drop(states);
        // What stays besides the compacted segment: the segments after the range, or, for the
        // whole log, the new segment an explicit compaction seals the current one for.
        let bytes_after_range = if whole_log {
            self.options.segment_size_bytes
        } else {
            self.log.bytes_after(upto_id)
        };
        let mut over_limit = false;
        if let Some(max) = retention.max_bytes {
            // Afterwards: the compacted segment, the segments after it and room for the next
            // one fit the limit. Meanwhile: the compacted file is written beside every file it
            // replaces, and that peak stays within the limit plus one segment.
            let steady = max
                .saturating_sub(bytes_after_range)
                .saturating_sub(self.options.segment_size_bytes);
            let peak =
                (max + self.options.segment_size_bytes).saturating_sub(self.log.storage_bytes());
            let budget = steady.min(peak);
            over_limit = !fit_budget(&mut candidates, snapshot_bytes(&snapshot), budget);
        }
        let kept_bytes: u64 = candidates.iter().filter(|c| c.keep).map(|c| c.bytes).sum();
        let dropped = candidates.iter().filter(|c| !c.keep).count() as u64;
        dead_bytes += candidates
            .iter()
            .filter(|c| !c.keep)
            .map(|c| c.bytes)
            .sum::<u64>();
        let segments_before = self.log.segment_count();
        let bytes_before = self.log.storage_bytes();
        let compacted_len = compacted_len(kept_bytes, snapshot_bytes(&snapshot));
        let already_compact = range.len() == 1 && last.header.compacted;
        let worth_it = !(already_compact && dropped == 0 && events == 0);
        let bytes_after = bytes_after_range + compacted_len;
        let report = CompactionReport {
            dry_run: false,
            compacted: worth_it,
            segments_before,
            segments_after: if whole_log {
                2
            } else {
                segments_before - range.len() + 1
            },
            bytes_before,
            bytes_after,
            bytes_freed: bytes_before.saturating_sub(bytes_after),
            checkpoints_kept: candidates.len() as u64 - dropped,
            checkpoints_dropped: dropped,
            events_folded: events,
            jobs,
            snapshot_records: snapshot.len(),
            upto_seq,
            over_limit,
            duration_us: 0,
            replaced_files_left: 0,
        };
        let report = if worth_it {
            report
        } else {
            CompactionReport {
                segments_after: segments_before,
                bytes_after: bytes_before,
                bytes_freed: 0,
                ..report
            }
        };
        Ok(Some(Plan {
            range,
            candidates,
            snapshot,
            upto_seq,
            dead_before,
            report,
            dead_bytes,
            scanned_bytes,
        }))
    }
}

/// The retention decisions, job by job: dead with a deleted job, else kept when it is the
/// job's latest, or among its newest `keep_last` and not older than `max_age`.
fn decide(
    candidates: &mut [Candidate],
    retention: &Retention,
    folded: &Index,
    live_counts: &HashMap<String, u64>,
    deleted_later: &HashMap<String, u64>,
) {
    let cutoff_micros = retention.max_age.map(|age| {
        let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        chrono::Utc::now()
            .checked_sub_signed(age)
            .map_or(i64::MIN, |t| t.timestamp_micros())
    });
    let mut by_job: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, c) in candidates.iter().enumerate() {
        by_job.entry(c.job.as_str()).or_default().push(i);
    }
    let mut decisions: Vec<(usize, bool, bool)> = Vec::new();
    for (job, indices) in by_job {
        if deleted_later.contains_key(job) {
            decisions.extend(indices.iter().map(|&i| (i, false, false)));
            continue;
        }
        let since = folded.since_seq(job);
        let in_range = folded.get(job).map_or(0, |e| e.checkpoints);
        // Checkpoints of the job in the segments after the range (the live index counts them
        // all, the fold only the range's).
        let newer = live_counts
            .get(job)
            .copied()
            .unwrap_or(0)
            .saturating_sub(in_range);
        let mut rank = 0u64;
        for &i in indices.iter().rev() {
            let c = &candidates[i];
            if c.seq <= since {
                decisions.push((i, false, false));
                continue;
            }
            let latest = newer == 0 && rank == 0;
            let young = cutoff_micros.is_none_or(|cutoff| c.at_micros >= cutoff);
            let keep = latest || ((newer + rank) < retention.keep_last as u64 && young);
            decisions.push((i, keep, latest));
            rank += 1;
        }
    }
    for (i, keep, latest) in decisions {
        candidates[i].keep = keep;
        candidates[i].latest = latest;
    }
}

/// Drops kept history, oldest first, until the compacted segment fits `budget` bytes; each
/// job's latest checkpoint always stays. Returns false when even that does not fit.
fn fit_budget(candidates: &mut [Candidate], snapshot_len: u64, budget: u64) -> bool {
    let mut kept_bytes: u64 = candidates.iter().filter(|c| c.keep).map(|c| c.bytes).sum();
    for c in candidates.iter_mut() {
        if compacted_len(kept_bytes, snapshot_len) <= budget {
            return true;
        }
        if c.keep && !c.latest {
            c.keep = false;
            kept_bytes -= c.bytes;
        }
    }
    compacted_len(kept_bytes, snapshot_len) <= budget
}

/// The file length of a compacted segment holding `kept_bytes` of records and a snapshot of
/// `snapshot_len` bytes of records.
fn compacted_len(kept_bytes: u64, snapshot_len: u64) -> u64 {
    let needed = crate::format::SEGMENT_HEADER_LEN as u64 + kept_bytes + snapshot_len;
    needed
        .next_multiple_of(4096)
        .max(crate::format::MIN_COMPACTED_LEN)
}

/// The snapshot of `states` as record bodies, each within the format's body limit (docs/FORMAT.md,
/// "Snapshot body"). A job state too large for a record alone cannot be written by this build
/// (job events are limited, see `MAX_EVENT_BYTES`); an older store's may be, and is an error.
fn snapshot_parts(states: &[crate::job::JobState]) -> Result<Vec<Vec<u8>>> {
    let states_json = states
        .iter()
        .map(serde_json::to_vec)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid("snapshot", e.to_string()))?;
    let max_body = crate::format::MAX_RECORD_BODY_BYTES as usize;
    crate::format::encode_snapshot_parts(&states_json, max_body).map_err(|reason| {
        Error::invalid(
            "snapshot",
            format!("{reason}; delete the job with the oversized state, then compact"),
        )
    })
}

/// Bytes of the records that hold a snapshot in these bodies.
fn snapshot_bytes(parts: &[Vec<u8>]) -> u64 {
    parts
        .iter()
        .map(|part| crate::format::padded_record_len(part.len()) as u64)
        .sum()
}

fn elapsed_us(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}
