//! The in-memory model of the store: what every job's state and history must be after the
//! operations so far, and what a compaction with given rules keeps.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use cairn::{Checkpoint, JobEvent, JobState, Trigger};

/// A checkpoint as the model knows it: what `latest`/`history` must return.
#[derive(Debug, Clone, PartialEq)]
pub struct Saved {
    pub seq: u64,
    pub phase: String,
    pub data: Value,
    pub at: DateTime<Utc>,
}

impl Saved {
    pub fn of(checkpoint: &Checkpoint) -> Saved {
        Saved {
            seq: checkpoint.seq,
            phase: checkpoint.phase.clone(),
            data: checkpoint.data.clone(),
            at: checkpoint.at,
        }
    }
}

/// One incarnation of a job (a deletion ends it).
#[derive(Debug, Clone)]
pub struct JobModel {
    /// The fold of the job's events, with the Unix epoch for every event time.
    pub state: JobState,
    /// The sequence number of the incarnation's first record.
    pub first_seq: u64,
    /// Exact mode: the checkpoints the store must hold. Background mode: every checkpoint
    /// saved (the store holds a subset).
    pub checkpoints: Vec<Saved>,
}

/// What the model expects a compaction report to count.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub kept: u64,
    pub dropped: u64,
    pub jobs: usize,
    pub events: u64,
}

#[derive(Debug, Default)]
pub struct Model {
    pub jobs: BTreeMap<String, JobModel>,
    /// Checkpoints of deleted incarnations still in the log: the next compaction that covers
    /// them drops them.
    pub buried: Vec<u64>,
    /// Job event records not folded into a snapshot yet.
    pub unfolded_events: Vec<u64>,
    pub last_seq: u64,
    pub last_at: Option<DateTime<Utc>>,
    pub counter: u64,
}

impl Model {
    pub fn job_mut(&mut self, job: &str, seq: u64) -> &mut JobModel {
        self.jobs.entry(job.to_owned()).or_insert_with(|| JobModel {
            state: JobState::new(job),
            first_seq: seq,
            checkpoints: Vec::new(),
        })
    }

    pub fn new_seq(&mut self, seq: u64, ctx: &str) {
        assert!(
            seq > self.last_seq,
            "{ctx}: sequence number {seq} after {}",
            self.last_seq
        );
        self.last_seq = seq;
    }

    pub fn saved(&mut self, job: &str, saved: Saved) {
        self.last_at = Some(saved.at);
        let model = self.job_mut(job, saved.seq);
        let event = JobEvent::CheckpointSaved {
            phase: saved.phase.clone(),
            trigger: Trigger::Manual,
        };
        model.state.apply(saved.seq, saved.at, &event);
        model.checkpoints.push(saved);
    }

    pub fn event(&mut self, job: &str, seq: u64, event: &JobEvent) {
        self.unfolded_events.push(seq);
        self.job_mut(job, seq)
            .state
            .apply(seq, DateTime::UNIX_EPOCH, event);
    }

    pub fn deleted(&mut self, job: &str, seq: u64) {
        self.unfolded_events.push(seq);
        if let Some(model) = self.jobs.remove(job) {
            self.buried
                .extend(model.checkpoints.iter().map(|checkpoint| checkpoint.seq));
        }
    }

    pub fn latest(&self, job: &str) -> Option<&Saved> {
        self.jobs.get(job).and_then(|m| m.checkpoints.last())
    }

    /// Applies the retention rules to the checkpoints up to `upto` (the compacted range).
    pub fn compact(&mut self, upto: u64, keep_last: usize, all_too_old: bool) -> Tally {
        let mut tally = Tally::default();
        for model in self.jobs.values_mut() {
            let newer = model
                .checkpoints
                .iter()
                .filter(|checkpoint| checkpoint.seq > upto)
                .count();
            let mut keep = vec![true; model.checkpoints.len()];
            let mut rank = 0;
            for (i, checkpoint) in model.checkpoints.iter().enumerate().rev() {
                if checkpoint.seq > upto {
                    continue;
                }
                let latest = newer == 0 && rank == 0;
                keep[i] = latest || (!all_too_old && newer + rank < keep_last);
                if keep[i] {
                    tally.kept += 1;
                } else {
                    tally.dropped += 1;
                }
                rank += 1;
            }
            let mut decisions = keep.into_iter();
            model
                .checkpoints
                .retain(|_| decisions.next().unwrap_or(true));
            if model.first_seq <= upto {
                tally.jobs += 1;
            }
        }
        let buried = self.buried.iter().filter(|&&seq| seq <= upto).count() as u64;
        tally.dropped += buried;
        self.buried.retain(|&seq| seq > upto);
        tally.events = self
            .unfolded_events
            .iter()
            .filter(|&&seq| seq <= upto)
            .count() as u64;
        self.unfolded_events.retain(|&seq| seq > upto);
        tally
    }
}

/// A job state with every time set to the Unix epoch (the model does not know event times).
pub fn timeless(mut state: JobState) -> JobState {
    let epoch = DateTime::UNIX_EPOCH;
    if let Some(checkpoint) = state.latest_checkpoint.as_mut() {
        checkpoint.at = epoch;
    }
    if let Some(checkpoint) = state.cleared_checkpoint.as_mut() {
        checkpoint.at = epoch;
    }
    if let Some(error) = state.last_error.as_mut() {
        error.at = epoch;
    }
    if let Some(retry) = state.scheduled_retry.as_mut() {
        retry.at = epoch;
    }
    state.last_checkpoint_at = state.last_checkpoint_at.map(|_| epoch);
    state.updated_at = state.updated_at.map(|_| epoch);
    state
}
