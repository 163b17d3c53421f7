//! Compaction: the switch from the sealed segments to one compacted segment.
//!
//! A compaction takes every sealed segment (all but the one being written), decides with the
//! retention policy which checkpoints stay, folds every job event into one snapshot record of
//! all jobs' states, and has the log write them into one compacted segment that takes the id
//! of the newest segment it replaces. Records keep their sequence numbers. docs/FORMAT.md
//! ("Compaction") gives the protocol and why a crash at any step loses nothing.
//!
//! The steps: `plan` reads the range (`scan`), lets `retention.rs` decide the fate of each
//! checkpoint, encodes the snapshot and predicts the outcome (`predict`); `carry_out` has the
//! log write the compacted segment (its rename is the commit point), switches readers over
//! (`swap_index`), removes the replaced files and reports.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use super::index::{Index, RangeCheckpoint};
use super::retention::{self, Candidate, Fate, JobFacts, Rules};
use super::{Inner, Store};
use crate::error::{Error, Result};
use crate::log::{BodyError, Contents, Kept, Log, RecordRef, Segment};
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
    /// What the compaction is doing.
    pub phase: CompactionPhase,
    /// Bytes of the compacted segments read so far.
    pub done_bytes: u64,
    /// Bytes of records in the segments being compacted.
    pub total_bytes: u64,
}

/// What a compaction is doing, in [`CompactionProgress`]. Displayed as `scan` and `write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CompactionPhase {
    /// Reading the segments it compacts.
    Scan,
    /// Writing the compacted segment.
    Write,
}

impl std::fmt::Display for CompactionPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CompactionPhase::Scan => "scan",
            CompactionPhase::Write => "write",
        })
    }
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

/// A decided compaction.
struct Plan {
    range: Vec<Arc<Segment>>,
    /// The range's checkpoints, oldest first; `locations` and `fates` in the same order.
    candidates: Vec<Candidate>,
    /// Where each candidate is.
    locations: Vec<Kept>,
    /// What the compaction does with each candidate.
    fates: Vec<Fate>,
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

/// What a compaction read of its range.
struct Scan {
    /// Every record of the range replayed into an index of its own.
    folded: Index,
    /// The range's checkpoints, oldest first, and where each is.
    candidates: Vec<Candidate>,
    locations: Vec<Kept>,
    /// The sequence number of the range's last record.
    last_seq: u64,
    /// Job events read (all are folded into the snapshot).
    events: u64,
    /// Bytes of records that no policy keeps: job events, seals, snapshots.
    dead_bytes: u64,
    /// Bytes of records read.
    scanned_bytes: u64,
}

/// What a compaction needs to know of a record it reads.
enum Scanned {
    Checkpoint {
        job: String,
        at_micros: i64,
    },
    JobEvent,
    /// Anything else (a seal, a snapshot or a part of one): dropped.
    Other,
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
            stats.record_bytes += record.len_bytes();
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
        let Some(plan) = self.plan(retention, dry_run, progress)? else {
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
        self.carry_out(plan, report, retention, progress, started)
    }

    /// Carries out a decided compaction: makes what it relies on durable, reserves its room,
    /// writes the compacted segment (`write_segment`, the commit point), switches readers over
    /// (`swap_index`), removes the replaced files and reports.
    fn carry_out(
        &self,
        mut plan: Plan,
        mut report: CompactionReport,
        retention: &Retention,
        progress: &mut dyn FnMut(&CompactionProgress),
        started: Instant,
    ) -> Result<CompactionReport> {
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
            phase: CompactionPhase::Write,
            done_bytes: plan.scanned_bytes,
            total_bytes: plan.scanned_bytes,
        });
        let (segment, offsets) = self.write_segment(&plan)?;
        self.swap_index(&plan, segment, offsets);
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

    /// Has the log write the compacted segment: the kept checkpoints, then the snapshot. The
    /// log renames it into place, the commit point. Returns it with the offsets of the kept
    /// checkpoints in it, in order.
    fn write_segment(&self, plan: &Plan) -> Result<(Arc<Segment>, Vec<u64>)> {
        let kept: Vec<Kept> = plan
            .locations
            .iter()
            .zip(&plan.fates)
            .filter(|(_, fate)| fate.is_kept())
            .map(|(location, _)| location.clone())
            .collect();
        self.log
            .write_compacted(&plan.range, &kept, plan.upto_seq, &plan.snapshot)
    }

    /// Switches readers to the compacted `segment`, where the kept checkpoints are at
    /// `offsets` (in order). Readers look up a location and read it under the index lock:
    /// they see the old segments with the old locations, or the new one with the new.
    fn swap_index(&self, plan: &Plan, segment: Arc<Segment>, offsets: Vec<u64>) {
        let mut offsets = offsets.into_iter();
        let range: Vec<RangeCheckpoint> = plan
            .candidates
            .iter()
            .zip(&plan.fates)
            .map(|(c, fate)| RangeCheckpoint {
                job: &c.job,
                seq: c.seq,
                new_offset: if fate.is_kept() { offsets.next() } else { None },
            })
            .collect();
        let segment_id = segment.id;
        let mut index = self.index_mut();
        self.log.install_compacted(segment);
        index.compacted(plan.upto_seq, segment_id, &range, plan.dead_before);
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

    /// Under a size limit, as the compaction starts writing: reserves the compacted file's
    /// bytes against the limit (savers that need a new segment now count them), then, if the
    /// files on disk and the compacted one would pass the limit plus one segment (saves went
    /// on while the plan was made), drops more history so that they do not.
    fn reserve_room(&self, plan: &mut Plan, report: &mut CompactionReport, max: u64) {
        let snapshot_len = Log::records_len(&plan.snapshot);
        let compacted_len = |candidates: &[Candidate], fates: &[Fate]| {
            Log::compacted_segment_len(retention::kept_bytes(candidates, fates) + snapshot_len)
        };
        let len = compacted_len(&plan.candidates, &plan.fates);
        let on_disk = self.log.reserve_compaction(len);
        let room = retention::room_beside(max, self.options.segment_size_bytes, on_disk);
        if len <= room {
            return;
        }
        let fits = |kept: u64| Log::compacted_segment_len(kept + snapshot_len) <= room;
        report.over_limit |= !retention::fit(&plan.candidates, &mut plan.fates, fits);
        self.log
            .reserve_compaction(compacted_len(&plan.candidates, &plan.fates));
        let dropped = retention::dropped_count(&plan.fates);
        report.checkpoints_kept = plan.candidates.len() as u64 - dropped;
        report.checkpoints_dropped = dropped;
    }

    /// Decides a compaction of the sealed segments or (`whole_log`, for a prediction of an
    /// explicit compaction) of every segment; `None` when there is none.
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
        let Some(upto_id) = range.last().map(|last| last.id) else {
            return Ok(None);
        };
        let scan = self.scan(&range, retention.keep_last, progress)?;
        let upto_seq = self.snapshot_seq(upto_id, &scan)?;
        let (jobs, dead_before) = self.job_facts(&scan, upto_seq);
        let rules = Rules::new(retention, chrono::Utc::now());
        let fates = retention::decide(&scan.candidates, &jobs, &rules);
        let states: Vec<_> = scan
            .folded
            .states()
            .into_iter()
            .filter(|state| retention::state_in_snapshot(&jobs, &state.job))
            .collect();
        let mut plan = Plan {
            snapshot: snapshot_parts(&states)?,
            report: CompactionReport {
                events_folded: scan.events,
                jobs: states.len(),
                upto_seq,
                ..CompactionReport::default()
            },
            range,
            candidates: scan.candidates,
            locations: scan.locations,
            fates,
            upto_seq,
            dead_before,
            dead_bytes: scan.dead_bytes,
            scanned_bytes: scan.scanned_bytes,
        };
        drop(states);
        // What stays besides the compacted segment: the segments after the range, or, for the
        // whole log, the new segment an explicit compaction seals the current one for.
        let bytes_after_range = if whole_log {
            self.options.segment_size_bytes
        } else {
            self.log.bytes_after(upto_id)
        };
        self.predict(&mut plan, retention, whole_log, bytes_after_range);
        Ok(Some(plan))
    }

    /// Reads every record of `range`: folds them into an index of their own and collects the
    /// checkpoints, reporting progress as it goes.
    fn scan(
        &self,
        range: &[Arc<Segment>],
        keep_last: usize,
        progress: &mut dyn FnMut(&CompactionProgress),
    ) -> Result<Scan> {
        let total_bytes: u64 = range.iter().map(|s| s.published_end()).sum();
        let by_id: HashMap<u64, Arc<Segment>> = range.iter().map(|s| (s.id, s.clone())).collect();
        let mut scan = Scan {
            folded: Index::new(keep_last),
            candidates: Vec::new(),
            locations: Vec::new(),
            last_seq: 0,
            events: 0,
            dead_bytes: 0,
            scanned_bytes: 0,
        };
        let log = &self.log;
        // One copy of each job's name for all of its checkpoints in the range.
        let mut names: HashMap<String, Arc<str>> = HashMap::new();
        Log::for_each_record_in(range, &mut |record| {
            let corrupt = |reason| log.corrupt(record.segment_id, record.offset, reason);
            scan.folded
                .replay_record(record)
                .map_err(|e| corrupt(e.to_string()))?;
            scan.last_seq = record.seq();
            let bytes = record.len_bytes();
            scan.scanned_bytes += bytes;
            progress(&CompactionProgress {
                phase: CompactionPhase::Scan,
                done_bytes: scan.scanned_bytes,
                total_bytes,
            });
            match classify(record).map_err(|e| corrupt(e.to_string()))? {
                Scanned::Checkpoint { job, at_micros } => {
                    let segment = by_id
                        .get(&record.segment_id)
                        .cloned()
                        .ok_or_else(|| corrupt("record outside the compacted segments".into()))?;
                    let (seq, offset) = (record.seq(), record.offset);
                    scan.candidates.push(Candidate {
                        job: intern(&mut names, job),
                        seq,
                        at_micros,
                        bytes,
                    });
                    scan.locations.push(Kept { segment, offset });
                }
                Scanned::JobEvent => {
                    scan.events += 1;
                    scan.dead_bytes += bytes;
                }
                Scanned::Other => scan.dead_bytes += bytes,
            }
            Ok(())
        })?;
        Ok(scan)
    }

    /// The sequence number the snapshot takes: the number of the range's seal, the one before
    /// the next segment's first. (After skip-corrupted recovery the seal itself may be
    /// missing; its number is still free.) (For a prediction over the whole log, the seal an
    /// explicit compaction would write.)
    fn snapshot_seq(&self, upto_id: u64, scan: &Scan) -> Result<u64> {
        let last_seq = scan.last_seq;
        let snapshot_seq = self
            .log
            .first_seq_after(upto_id)
            .map_or(last_seq + 1, |first| first - 1);
        if snapshot_seq < last_seq
            || scan
                .candidates
                .last()
                .is_some_and(|c| c.seq >= snapshot_seq)
        {
            return Err(self.log.corrupt(
                upto_id,
                0,
                format!(
                    "the segment after it starts at {}, not after its last record {last_seq}; \
                     cannot compact",
                    snapshot_seq + 1
                ),
            ));
        }
        Ok(snapshot_seq)
    }

    /// What retention needs to know of every job of the range besides its checkpoints there,
    /// with the dead-bytes estimate as the compaction begins; under the index lock, briefly.
    fn job_facts(&self, scan: &Scan, upto_seq: u64) -> (HashMap<String, JobFacts>, u64) {
        let index = self.index();
        let mut jobs = HashMap::new();
        let candidate_jobs = scan.candidates.iter().map(|c| &*c.job);
        for job in candidate_jobs.chain(scan.folded.iter().map(|(job, _)| job.as_str())) {
            if jobs.contains_key(job) {
                continue;
            }
            // The live index counts the job's checkpoints in the whole log, the fold only the
            // range's.
            let in_log = index.get(job).map_or(0, |e| e.checkpoints);
            let in_range = scan.folded.get(job).map_or(0, |e| e.checkpoints);
            let facts = JobFacts {
                deleted_up_to_seq: scan.folded.since_seq(job),
                checkpoints_after_range: in_log.saturating_sub(in_range),
                deleted_after_range: index.deleted_after(job, upto_seq).is_some(),
            };
            jobs.insert(job.to_owned(), facts);
        }
        (jobs, index.dead_bytes())
    }

    /// Fits the plan to the size limit, if any, and fills in its report: what the compaction
    /// would leave, and whether it is worth running (not when the range is one compacted
    /// segment with nothing to drop or fold).
    fn predict(
        &self,
        plan: &mut Plan,
        retention: &Retention,
        whole_log: bool,
        bytes_after_range: u64,
    ) {
        let snapshot_len = Log::records_len(&plan.snapshot);
        if let Some(max) = retention.max_bytes {
            let segment_size = self.options.segment_size_bytes;
            let storage_bytes = self.log.storage_bytes();
            let budget =
                retention::size_budget(max, segment_size, bytes_after_range, storage_bytes);
            let fits = |kept: u64| Log::compacted_segment_len(kept + snapshot_len) <= budget;
            plan.report.over_limit = !retention::fit(&plan.candidates, &mut plan.fates, fits);
        }
        let kept_bytes = retention::kept_bytes(&plan.candidates, &plan.fates);
        let dropped = retention::dropped_count(&plan.fates);
        plan.dead_bytes += plan.candidates.iter().map(|c| c.bytes).sum::<u64>() - kept_bytes;
        let segments_before = self.log.segment_count();
        let bytes_before = self.log.storage_bytes();
        let already_compact =
            plan.range.len() == 1 && plan.range.last().is_some_and(|s| s.header.compacted);
        let report = &mut plan.report;
        report.compacted = !(already_compact && dropped == 0 && report.events_folded == 0);
        report.checkpoints_kept = plan.candidates.len() as u64 - dropped;
        report.checkpoints_dropped = dropped;
        report.snapshot_records = plan.snapshot.len();
        report.segments_before = segments_before;
        report.bytes_before = bytes_before;
        if report.compacted {
            report.segments_after = if whole_log {
                2
            } else {
                segments_before - plan.range.len() + 1
            };
            report.bytes_after =
                bytes_after_range + Log::compacted_segment_len(kept_bytes + snapshot_len);
        } else {
            report.segments_after = segments_before;
            report.bytes_after = bytes_before;
        }
        report.bytes_freed = bytes_before.saturating_sub(report.bytes_after);
    }
}

/// What `record` is, as far as a compaction needs to know: the one place it looks at record
/// kinds and bodies.
fn classify(record: &RecordRef<'_>) -> std::result::Result<Scanned, BodyError> {
    Ok(match record.contents() {
        Contents::Checkpoint(checkpoint) => {
            let meta = checkpoint.decode_envelope()?;
            Scanned::Checkpoint {
                job: meta.job,
                at_micros: meta.at_micros,
            }
        }
        Contents::Event(_) => Scanned::JobEvent,
        Contents::Seal | Contents::Snapshot(_) | Contents::Mark => Scanned::Other,
    })
}

/// The snapshot of `states` as record bodies, each within the format's body limit (docs/FORMAT.md,
/// "Snapshot body"). A job state too large for a record alone cannot be written by this build
/// (job events are limited, see `MAX_EVENT_BYTES`); an older store's may be, and is an error.
/// The shared copy of `job` in `names`, made on its first use.
fn intern(names: &mut HashMap<String, Arc<str>>, job: String) -> Arc<str> {
    if let Some(name) = names.get(&job) {
        return name.clone();
    }
    let name: Arc<str> = Arc::from(job.as_str());
    names.insert(job, name.clone());
    name
}

fn snapshot_parts(states: &[crate::job::JobState]) -> Result<Vec<Vec<u8>>> {
    let states_json = states
        .iter()
        .map(serde_json::to_vec)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid("snapshot", e.to_string()))?;
    Log::snapshot_bodies(&states_json).map_err(|reason| {
        Error::invalid(
            "snapshot",
            format!("{reason}; delete the job with the oversized state, then compact"),
        )
    })
}

fn elapsed_us(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}
