//! The in-memory index: for each job, where its latest checkpoint is and the fold of its
//! events ([`JobState`]). Memory grows with jobs (and the retention window), not with records.

use std::collections::{HashMap, VecDeque};

use chrono::{DateTime, Utc};

use crate::job::{JobEvent, JobState, Trigger};
use crate::log::{BodyError, CheckpointRecord, Contents, EventRecord, RecordRef, SnapshotRecord};

/// Where a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Location {
    pub seq: u64,
    pub segment_id: u64,
    pub offset: u64,
}

/// What the index knows of one job.
#[derive(Debug, Clone)]
pub(crate) struct JobEntry {
    /// The latest checkpoint record, cleared or not.
    pub latest: Option<Location>,
    /// Checkpoints of the job in the log (since its last deletion).
    pub checkpoints: u64,
    pub state: JobState,
    /// Records of the job up to this sequence number belong to a deleted job of the same name.
    pub since_seq: u64,
    /// The job was deleted and nothing was saved under its name since.
    deleted: bool,
    /// Sizes of the job's newest checkpoints (as many as retention keeps), for the estimate
    /// of dead bytes. A record is at most 64 MiB and its header, so a `u32` holds its size.
    window: VecDeque<u32>,
}

impl JobEntry {
    /// What the entry holds on the heap.
    fn heap_bytes(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        let state = &self.state;
        let failure = state.last_error.as_ref().map_or(0, |e| {
            e.message.capacity()
                + text(&e.context.last_successful_operation)
                + text(&e.context.failure_point)
        });
        state.job.capacity()
            + state
                .latest_checkpoint
                .as_ref()
                .map_or(0, |c| c.phase.capacity())
            + state
                .cleared_checkpoint
                .as_ref()
                .map_or(0, |c| c.phase.capacity())
            + text(&state.clear_reason)
            + failure
            + self.window.capacity() * size_of::<u32>()
    }
}

/// Why a record the log handed over does not make sense to the store: its body does not
/// decode, or what it holds is out of range or out of order.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    #[error("record {seq} is not newer than record {last}")]
    NotNewer { seq: u64, last: u64 },
    #[error(transparent)]
    Body(#[from] BodyError),
    #[error("timestamp {0} out of range")]
    Timestamp(i64),
    #[error("record {seq}: job event does not decode: {source}")]
    Event {
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("record {seq}: snapshot does not decode: {source}")]
    Snapshot {
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
    #[error("checkpoint data is not JSON: {0}")]
    CheckpointData(#[source] serde_json::Error),
    #[error("record {seq} holds invalid JSON: {source}")]
    InvalidJson {
        seq: u64,
        #[source]
        source: serde_json::Error,
    },
}

/// A checkpoint of the compacted range, and whether compaction kept it.
#[derive(Debug, Clone)]
pub(crate) struct RangeCheckpoint<'a> {
    /// Borrowed from the compaction's plan: there is one of these per checkpoint of the
    /// range, so no copy of the name (memory per record of the range).
    pub job: &'a str,
    pub seq: u64,
    /// Its offset in the compacted segment, when kept.
    pub new_offset: Option<u64>,
}

#[derive(Debug)]
pub(crate) struct Index {
    jobs: HashMap<String, JobEntry>,
    /// The newest record replayed by recovery.
    last_replayed_seq: u64,
    /// The newest record readers see: every checkpoint and job event up to it is in the index
    /// (updates are applied in sequence order), and none after it.
    visible_seq: u64,
    /// How many checkpoints per job retention keeps (for the dead-bytes estimate).
    keep_last: usize,
    /// Estimated bytes of records that compaction would drop: job events (folded into a
    /// snapshot), checkpoints pushed out of the retention window, deleted jobs' records.
    dead_bytes: u64,
    /// The sequence number of the snapshot whose parts are being replayed: its next part (or
    /// final record) carries the same number.
    snapshot_in_parts: Option<u64>,
}

/// Timestamps are stored in microseconds; the live index uses the same precision so that a
/// replay builds exactly the state the live process had.
pub(crate) fn time_from_micros(micros: i64) -> Result<DateTime<Utc>, RecordError> {
    DateTime::from_timestamp_micros(micros).ok_or(RecordError::Timestamp(micros))
}

impl Index {
    pub fn new(keep_last: usize) -> Index {
        Index {
            jobs: HashMap::new(),
            last_replayed_seq: 0,
            visible_seq: 0,
            keep_last: keep_last.max(1),
            dead_bytes: 0,
            snapshot_in_parts: None,
        }
    }

    /// The entry of a job the store knows (deleted jobs are unknown).
    pub fn get(&self, job: &str) -> Option<&JobEntry> {
        self.jobs.get(job).filter(|entry| !entry.deleted)
    }

    /// Every job the store knows.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &JobEntry)> {
        self.jobs.iter().filter(|(_, entry)| !entry.deleted)
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// An estimate of the bytes the index takes: the hash table (its capacity, one control byte
    /// per slot) and what each entry holds on the heap (names, phases, error texts, the
    /// retention window). Allocator overhead aside. It depends on the jobs, their names and
    /// errors and the retention window, never on how many records were saved.
    pub fn memory_bytes(&self) -> usize {
        let slot = size_of::<String>() + size_of::<JobEntry>() + 1;
        let heap: usize = self
            .jobs
            .iter()
            .map(|(job, entry)| job.capacity() + entry.heap_bytes())
            .sum();
        size_of::<Index>() + self.jobs.capacity() * slot + heap
    }

    /// The newest record readers see; later records are not in the index yet.
    pub fn visible_seq(&self) -> u64 {
        self.visible_seq
    }

    /// Estimated bytes of records compaction would drop.
    pub fn dead_bytes(&self) -> u64 {
        self.dead_bytes
    }

    /// The sequence number of the deletion of `job`, if it was deleted after `after`.
    pub fn deleted_after(&self, job: &str, after: u64) -> Option<u64> {
        self.jobs
            .get(job)
            .map(|entry| entry.since_seq)
            .filter(|&since| since > after)
    }

    /// Records of `job` up to this sequence number belong to a deleted job of that name.
    pub fn since_seq(&self, job: &str) -> u64 {
        self.jobs.get(job).map_or(0, |entry| entry.since_seq)
    }

    /// The states of every known job, for a snapshot record.
    pub fn states(&self) -> Vec<JobState> {
        let mut states: Vec<JobState> = self.iter().map(|(_, e)| e.state.clone()).collect();
        states.sort_by(|a, b| a.job.cmp(&b.job));
        states
    }

    /// The entry of `job`, created if needed. The name is copied only for a new job: every
    /// record of a recovery comes through here, and most name a job already known.
    fn entry(&mut self, job: &str) -> &mut JobEntry {
        if !self.jobs.contains_key(job) {
            self.jobs.insert(
                job.to_owned(),
                JobEntry {
                    latest: None,
                    checkpoints: 0,
                    state: JobState::new(job),
                    since_seq: 0,
                    deleted: false,
                    window: VecDeque::new(),
                },
            );
        }
        let entry = self
            .jobs
            .get_mut(job)
            .expect("the entry of the job was just inserted");
        entry.deleted = false;
        entry
    }

    /// A checkpoint record of `bytes` bytes was written (or replayed).
    pub fn checkpoint(
        &mut self,
        job: &str,
        at: Location,
        time: DateTime<Utc>,
        phase: &str,
        trigger: Trigger,
        bytes: u64,
    ) {
        self.visible_seq = self.visible_seq.max(at.seq);
        let keep_last = self.keep_last;
        let entry = self.entry(job);
        assert!(
            entry.latest.is_none_or(|l| l.seq < at.seq),
            "checkpoints indexed out of order"
        );
        entry.latest = Some(at);
        entry.checkpoints += 1;
        let event = JobEvent::CheckpointSaved {
            phase: phase.to_owned(),
            trigger,
        };
        entry.state.apply(at.seq, time, &event);
        entry
            .window
            .push_back(u32::try_from(bytes).unwrap_or(u32::MAX));
        let pushed_out = if entry.window.len() > keep_last {
            entry.window.pop_front().unwrap_or(0)
        } else {
            0
        };
        self.dead_bytes += u64::from(pushed_out);
    }

    /// A job event record of `bytes` bytes was written (or replayed).
    pub fn event(
        &mut self,
        job: &str,
        seq: u64,
        time: DateTime<Utc>,
        event: &JobEvent,
        bytes: u64,
    ) {
        self.visible_seq = self.visible_seq.max(seq);
        // Every event is folded into a snapshot by compaction.
        self.dead_bytes += bytes;
        if let JobEvent::JobDeleted { .. } = event {
            if let Some(entry) = self.jobs.get_mut(job) {
                self.dead_bytes += entry.window.iter().copied().map(u64::from).sum::<u64>();
                *entry = JobEntry {
                    latest: None,
                    checkpoints: 0,
                    state: JobState::new(job),
                    since_seq: seq,
                    deleted: true,
                    window: VecDeque::new(),
                };
            }
            return;
        }
        self.entry(job).state.apply(seq, time, event);
    }

    /// A snapshot record was replayed: it holds the state of every job as of its sequence
    /// number, and is the last record of a compacted segment, after the checkpoints it kept.
    fn snapshot(&mut self, states: Vec<JobState>) {
        // A compacted store opens with one snapshot of every job: make room for them at once
        // rather than moving the table (and every entry) at each doubling.
        self.jobs
            .reserve(states.len().saturating_sub(self.jobs.len()));
        for state in states {
            let entry = self.entry(&state.job);
            entry.state = state;
        }
    }

    /// Applies a compaction of every record up to `upto_seq` into the compacted segment
    /// `segment_id`: the latest checkpoints it moved get their new locations, the counts lose
    /// what it dropped, deletions it made final are forgotten. `dead_before` is the dead-bytes
    /// estimate when the compaction began.
    pub fn compacted(
        &mut self,
        upto_seq: u64,
        segment_id: u64,
        range: &[RangeCheckpoint<'_>],
        dead_before: u64,
    ) {
        let moved: HashMap<u64, u64> = range
            .iter()
            .filter_map(|c| c.new_offset.map(|offset| (c.seq, offset)))
            .collect();
        let mut counted: HashMap<&str, (u64, u64)> = HashMap::new();
        for checkpoint in range {
            let Some(entry) = self.jobs.get(checkpoint.job) else {
                continue;
            };
            if checkpoint.seq > entry.since_seq {
                let counts = counted.entry(checkpoint.job).or_default();
                counts.0 += 1;
                counts.1 += u64::from(checkpoint.new_offset.is_some());
            }
        }
        self.jobs.retain(|job, entry| {
            if entry.deleted && entry.since_seq <= upto_seq {
                return false;
            }
            if let Some(latest) = entry.latest.as_mut()
                && latest.seq <= upto_seq
            {
                let offset = moved.get(&latest.seq).copied();
                assert!(
                    offset.is_some(),
                    "compaction dropped the latest checkpoint {} of {job}",
                    latest.seq
                );
                if let Some(offset) = offset {
                    *latest = Location {
                        seq: latest.seq,
                        segment_id,
                        offset,
                    };
                }
            }
            if let Some((before, after)) = counted.get(job.as_str()) {
                entry.checkpoints = entry.checkpoints - before + after;
            }
            true
        });
        self.dead_bytes = self.dead_bytes.saturating_sub(dead_before);
    }

    /// Replays one record during recovery (or a compaction's fold of the records it compacts).
    pub fn replay_record(&mut self, record: &RecordRef<'_>) -> Result<(), RecordError> {
        let seq = record.seq();
        let contents = record.contents();
        // Recovery hands records over in increasing order; bytes that claim otherwise are
        // damage, not a reason to panic.
        let next_part =
            matches!(contents, Contents::Snapshot(_)) && self.snapshot_in_parts == Some(seq);
        if seq <= self.last_replayed_seq && !next_part {
            return Err(RecordError::NotNewer {
                seq,
                last: self.last_replayed_seq,
            });
        }
        self.snapshot_in_parts = None;
        match contents {
            Contents::Checkpoint(checkpoint) => self.replay_checkpoint(record, checkpoint)?,
            Contents::Event(event) => self.replay_event(record, event)?,
            Contents::Snapshot(snapshot) => self.replay_snapshot(seq, snapshot)?,
            Contents::Seal | Contents::Mark => {}
        }
        self.last_replayed_seq = seq;
        self.visible_seq = seq;
        Ok(())
    }

    fn replay_checkpoint(
        &mut self,
        record: &RecordRef<'_>,
        checkpoint: CheckpointRecord<'_>,
    ) -> Result<(), RecordError> {
        let body = checkpoint.decode_envelope()?;
        let at = Location {
            seq: record.seq(),
            segment_id: record.segment_id,
            offset: record.offset,
        };
        let trigger = Trigger::from_code(body.trigger).unwrap_or(Trigger::Manual);
        let time = time_from_micros(body.at_micros)?;
        self.checkpoint(
            &body.job,
            at,
            time,
            &body.phase,
            trigger,
            record.len_bytes(),
        );
        Ok(())
    }

    fn replay_event(
        &mut self,
        record: &RecordRef<'_>,
        event: EventRecord<'_>,
    ) -> Result<(), RecordError> {
        let seq = record.seq();
        let body = event.decode()?;
        let event: JobEvent = serde_json::from_slice(&body.event_json)
            .map_err(|source| RecordError::Event { seq, source })?;
        let time = time_from_micros(body.at_micros)?;
        self.event(&body.job, seq, time, &event, record.len_bytes());
        Ok(())
    }

    fn replay_snapshot(
        &mut self,
        seq: u64,
        snapshot: SnapshotRecord<'_>,
    ) -> Result<(), RecordError> {
        let states = snapshot
            .states::<JobState>()
            .map_err(|source| RecordError::Snapshot { seq, source })?;
        self.snapshot(states);
        if snapshot.is_part() {
            self.snapshot_in_parts = Some(seq);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save_rounds(index: &mut Index, jobs: u64, rounds: u64, seq: &mut u64) {
        let time = time_from_micros(1_700_000_000_000_000).unwrap();
        for _ in 0..rounds {
            for job in 0..jobs {
                *seq += 1;
                let at = Location {
                    seq: *seq,
                    segment_id: *seq / 1000,
                    offset: *seq * 8,
                };
                let name = format!("job-{job}");
                index.checkpoint(&name, at, time, "extract", Trigger::Manual, 300);
            }
        }
    }

    /// Ten times the saves over the same jobs leave the index the same size: it grows with
    /// jobs (and the retention window), not with records.
    #[test]
    fn memory_follows_jobs_not_records() {
        let (jobs, keep_last) = (500, 10);
        let mut seq = 0;
        let mut index = Index::new(keep_last);
        save_rounds(&mut index, jobs, 20, &mut seq);
        let after_n = index.memory_bytes();
        save_rounds(&mut index, jobs, 180, &mut seq);
        let after_10n = index.memory_bytes();
        assert_eq!(
            after_n, after_10n,
            "{after_n} B after N saves, {after_10n} B after 10 N"
        );
        let per_job = after_10n / usize::try_from(jobs).unwrap();
        assert!(per_job < 1024, "{per_job} B per job");
        assert_eq!(index.jobs["job-7"].window.len(), keep_last);
    }

    /// Twice the jobs, about twice the memory.
    #[test]
    fn memory_grows_with_jobs() {
        let mut seq = 0;
        let mut small = Index::new(10);
        save_rounds(&mut small, 1_000, 3, &mut seq);
        let mut large = Index::new(10);
        save_rounds(&mut large, 2_000, 3, &mut seq);
        let (small, large) = (small.memory_bytes(), large.memory_bytes());
        assert!(
            large > small * 3 / 2 && large < small * 5 / 2,
            "{small} B, {large} B"
        );
    }
}
