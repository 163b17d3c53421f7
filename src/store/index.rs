//! The in-memory index: for each job, where its latest checkpoint is and the fold of its
//! events ([`JobState`]). Memory grows with jobs, not with records.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::format::{RecordKind, decode_checkpoint_meta, decode_event_body};
use crate::job::{JobEvent, JobState, Trigger};
use crate::log::RecordRef;

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
    pub checkpoints: u64,
    pub state: JobState,
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    jobs: HashMap<String, JobEntry>,
    /// The newest record replayed by recovery.
    last_replayed_seq: u64,
}

/// Timestamps are stored in microseconds; the live index uses the same precision so that a
/// replay builds exactly the state the live process had.
pub(crate) fn time_from_micros(micros: i64) -> Result<DateTime<Utc>, String> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| format!("timestamp {micros} out of range"))
}

impl Index {
    pub fn get(&self, job: &str) -> Option<&JobEntry> {
        self.jobs.get(job)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &JobEntry)> {
        self.jobs.iter()
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    fn entry(&mut self, job: &str) -> &mut JobEntry {
        self.jobs.entry(job.to_owned()).or_insert_with(|| JobEntry {
            latest: None,
            checkpoints: 0,
            state: JobState::new(job),
        })
    }

    /// A checkpoint record was written (or replayed).
    pub fn checkpoint(
        &mut self,
        job: &str,
        at: Location,
        time: DateTime<Utc>,
        phase: &str,
        trigger: Trigger,
    ) {
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
    }

    /// A job event record was written (or replayed).
    pub fn event(&mut self, job: &str, seq: u64, time: DateTime<Utc>, event: &JobEvent) {
        self.entry(job).state.apply(seq, time, event);
    }

    /// Replays one record during recovery.
    pub fn replay(&mut self, record: &RecordRef<'_>) -> Result<(), String> {
        let seq = record.header.seq;
        // Recovery hands records over in increasing order; bytes that claim otherwise are
        // damage, not a reason to panic.
        if seq <= self.last_replayed_seq {
            return Err(format!(
                "record {seq} is not newer than record {}",
                self.last_replayed_seq
            ));
        }
        match record.header.kind {
            RecordKind::Checkpoint => {
                let body = decode_checkpoint_meta(record.version, record.body)?;
                let at = Location {
                    seq,
                    segment_id: record.segment_id,
                    offset: record.offset,
                };
                let trigger = Trigger::from_code(body.trigger).unwrap_or(Trigger::Manual);
                self.checkpoint(
                    &body.job,
                    at,
                    time_from_micros(body.at_micros)?,
                    &body.phase,
                    trigger,
                );
            }
            RecordKind::JobEvent => {
                let body = decode_event_body(record.body)?;
                let event: JobEvent = serde_json::from_slice(&body.event_json)
                    .map_err(|e| format!("record {seq}: job event does not decode: {e}"))?;
                self.event(&body.job, seq, time_from_micros(body.at_micros)?, &event);
            }
            RecordKind::Seal => {}
        }
        self.last_replayed_seq = seq;
        Ok(())
    }
}
