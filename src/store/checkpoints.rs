//! Saving and reading checkpoints.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::index::{Index, JobEntry, Location, RecordError, time_from_micros};
use super::metrics::Counters;
use super::visibility::Update;
use super::{JobSummary, Store};
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::job::{JobType, Trigger};
use crate::log::{CheckpointBody, Contents, MAX_DECOMPRESSED_BYTES, NewRecord};
use crate::options::Durability;

/// The most a save's JSON buffer starts with: a hint never makes a small save allocate much.
const MAX_JSON_HINT_BYTES: usize = 64 * 1024;

thread_local! {
    /// About the size of this thread's last checkpoint as JSON: a saver usually saves data of
    /// one shape, and a buffer allocated at the right size once costs less than growing one
    /// from serde_json's 128 bytes (four reallocations and copies for a 1 KiB checkpoint).
    static JSON_LEN_HINT: std::cell::Cell<usize> = const { std::cell::Cell::new(256) };
}

/// `data` as JSON, in a buffer sized by the thread's last save.
fn to_json<T: Serialize + ?Sized>(data: &T) -> serde_json::Result<Vec<u8>> {
    let mut json = Vec::with_capacity(JSON_LEN_HINT.get());
    serde_json::to_writer(&mut json, data)?;
    JSON_LEN_HINT.set((json.len() + json.len() / 8 + 16).min(MAX_JSON_HINT_BYTES));
    Ok(json)
}

impl Store {
    /// Saves a checkpoint of `job` in `phase` and returns its sequence number. With the default
    /// [`Durability::Sync`] the checkpoint is on stable storage when this returns. The trigger
    /// recorded is [`Trigger::Manual`]; see [`Store::save_with`].
    ///
    /// Fails without writing anything when the job name or phase breaks the limits, when the
    /// data does not serialize to JSON, when it is larger than the payload limit, or when the
    /// job's registered [`JobType`] refuses it.
    pub fn save<T: Serialize + ?Sized>(&self, job: &str, phase: &str, data: &T) -> Result<u64> {
        self.save_with(job, phase, data, Trigger::Manual)
    }

    /// Saves a checkpoint, recording what caused it (a finished batch, a rate limit, ...).
    ///
    /// When a [`JobType`] is registered for the job, the data is first checked by its
    /// validator against the job's latest checkpoint, then trimmed to its essential fields, and
    /// saved with its current format version. A refused checkpoint is counted in
    /// [`Metrics::validation_failures`](crate::Metrics::validation_failures).
    pub fn save_with<T: Serialize + ?Sized>(
        &self,
        job: &str,
        phase: &str,
        data: &T,
        trigger: Trigger,
    ) -> Result<u64> {
        self.check_writable()?;
        self.check_names(job, phase)?;
        let serialize_error = |source| Error::Serialize {
            job: job.into(),
            source,
        };
        let (data_json, data_version) = match self.job_type(job) {
            None => (to_json(data).map_err(serialize_error)?, 1),
            Some(job_type) => {
                let value = serde_json::to_value(data).map_err(serialize_error)?;
                let value = self.validate_and_trim(job, phase, value, &job_type)?;
                let json = serde_json::to_vec(&value).map_err(serialize_error)?;
                (json, job_type.migrations().current_version())
            }
        };
        let options = &self.inner.options;
        let compress = data_json.len() as u64 > options.compress_above_bytes;
        let json_len = data_json.len();
        if json_len > MAX_DECOMPRESSED_BYTES {
            return Err(self.too_large(job, json_len as u64, MAX_DECOMPRESSED_BYTES as u64));
        }
        let time = now();
        let body = CheckpointBody {
            job: job.into(),
            phase: phase.into(),
            at_micros: time.timestamp_micros(),
            data_version,
            trigger: trigger.code(),
            data_json,
        };
        let record = NewRecord::checkpoint(&body, compress)
            .map_err(|reason| Error::invalid("checkpoint", reason.to_string()))?;
        self.check_size(job, record.data_len(), record.body_len())?;
        let inner = &self.inner;
        let appended = self.append(&record, false, &|appended| {
            let at = Location {
                seq: appended.seq,
                segment_id: appended.segment_id,
                offset: appended.offset,
            };
            inner.record_written(Update::Checkpoint {
                job: job.into(),
                at,
                time,
                phase: phase.into(),
                trigger,
                bytes: appended.bytes,
            });
        })?;
        Counters::add(&inner.counters.checkpoints_saved, 1);
        Counters::add(&inner.counters.compressed_saves, u64::from(compress));
        Counters::add(&inner.counters.bytes_appended, record.body_len() as u64);
        self.wait_durable(appended.seq)?;
        Ok(appended.seq)
    }

    /// Runs the job type's validator against the latest checkpoint, then trims the data.
    fn validate_and_trim(
        &self,
        job: &str,
        phase: &str,
        value: Value,
        job_type: &JobType,
    ) -> Result<Value> {
        // After a full restart (`CheckpointCleared`) or a finished run (`RunSucceeded`) the
        // job starts over: there is nothing to compare with.
        let resumable = self.index().get(job).is_some_and(|entry| {
            let state = &entry.state;
            let after_success = |seq| state.last_success_seq.is_none_or(|done| seq > done);
            state
                .latest_checkpoint
                .as_ref()
                .is_some_and(|latest| after_success(latest.seq))
        });
        let previous = if resumable { self.latest(job)? } else { None };
        let previous = previous.as_ref().map(|c| (c.phase.as_str(), &c.data));
        if let Err(failure) = job_type.validate(phase, &value, previous) {
            Counters::add(&self.inner.counters.validation_failures, 1);
            tracing::warn!(job, field = %failure.field, rule = %failure.rule, "cairn: checkpoint refused");
            return Err(failure.into_error(job));
        }
        Ok(job_type.trim(&value))
    }

    /// The payload limit applies to the data as stored (after trimming and compression); the
    /// whole record must also fit in a segment.
    fn check_size(&self, job: &str, stored_len: usize, body_len: usize) -> Result<()> {
        let options = &self.inner.options;
        if stored_len as u64 > options.max_payload_bytes {
            return Err(self.too_large(job, stored_len as u64, options.max_payload_bytes));
        }
        let max_body = options.max_record_body_bytes();
        if body_len as u64 > max_body {
            let overhead = (body_len - stored_len) as u64;
            return Err(self.too_large(job, stored_len as u64, max_body.saturating_sub(overhead)));
        }
        Ok(())
    }

    fn too_large(&self, job: &str, size_bytes: u64, limit_bytes: u64) -> Error {
        Error::PayloadTooLarge {
            job: job.into(),
            size_bytes,
            limit_bytes,
        }
    }

    /// Waits for durability as the durability mode says. In `Sync` mode the record (and every
    /// durable one before it) becomes visible to readers once it is durable, and never if
    /// the wait fails.
    pub(super) fn wait_durable(&self, seq: u64) -> Result<()> {
        match self.inner.options.durability {
            Durability::Sync => {
                self.inner.log.wait_durable(seq)?;
                self.inner.publish_durable(seq);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The latest checkpoint of `job`, or `None` if it has none. A checkpoint set aside by
    /// [`Store::clear_checkpoint`] is still the latest one saved; [`Store::job`] and
    /// [`Store::plan`] tell whether the job resumes from it.
    pub fn latest(&self, job: &str) -> Result<Option<Checkpoint>> {
        let index = self.index();
        let latest = index.get(job).and_then(|entry| entry.latest);
        latest
            .map(|at| self.read_checkpoint(&index, at))
            .transpose()
    }

    /// The checkpoint at `at`, upgraded to the job type's current format. The caller holds
    /// the index lock it found `at` under: a compaction moves records only under the write
    /// lock, so the location stays true while it is read.
    pub(super) fn read_checkpoint(&self, _index: &Index, at: Location) -> Result<Checkpoint> {
        let log = &self.inner.log;
        let checkpoint = log.read_at(at.segment_id, at.offset, |record| {
            let seq = record.seq();
            let corrupt = |reason| log.corrupt(at.segment_id, at.offset, reason);
            if seq != at.seq {
                return Err(corrupt(format!(
                    "record {seq} where record {} was expected",
                    at.seq
                )));
            }
            let Contents::Checkpoint(checkpoint) = record.contents() else {
                return Err(corrupt(format!("record {seq} is not a checkpoint")));
            };
            checkpoint
                .decode()
                .map_err(RecordError::from)
                .and_then(|body| checkpoint_from(seq, body))
                .map_err(|e| corrupt(format!("record {seq}: {e}")))
        })?;
        self.upgrade(checkpoint)
    }

    /// Applies the registered migrations to a checkpoint read from the log.
    pub(super) fn upgrade(&self, mut checkpoint: Checkpoint) -> Result<Checkpoint> {
        if let Some(job_type) = self.job_type(&checkpoint.job) {
            let current = job_type.migrations().current_version();
            if checkpoint.version != current {
                let data = std::mem::take(&mut checkpoint.data);
                checkpoint.data = job_type
                    .upgrade(checkpoint.version, data)
                    .map_err(|e| e.into_error(&checkpoint.job))?;
                checkpoint.version = current;
            }
        }
        Ok(checkpoint)
    }

    /// Every checkpoint of `job` still in the log, oldest first, upgraded to the job type's
    /// current format.
    pub fn history(&self, job: &str) -> Result<Vec<Checkpoint>> {
        self.raw_history(job)?
            .into_iter()
            .map(|c| self.upgrade(c))
            .collect()
    }

    /// Every checkpoint of `job` as stored, oldest first.
    pub(super) fn raw_history(&self, job: &str) -> Result<Vec<Checkpoint>> {
        // Records up to `since` belong to a deleted job of the same name; records after
        // `visible` are not durable yet (or their save failed).
        let (since, visible) = {
            let index = self.index();
            match index.get(job) {
                Some(entry) if entry.checkpoints > 0 => (entry.since_seq, index.visible_seq()),
                _ => return Ok(Vec::new()),
            }
        };
        let mut out = Vec::new();
        let log = &self.inner.log;
        log.for_each_record(&mut |record| {
            let Contents::Checkpoint(checkpoint) = record.contents() else {
                return Ok(());
            };
            let seq = record.seq();
            let corrupt = |e: RecordError| {
                log.corrupt(
                    record.segment_id,
                    record.offset,
                    format!("record {seq}: {e}"),
                )
            };
            let body = checkpoint.decode().map_err(|e| corrupt(e.into()))?;
            // Only this job's records are parsed further.
            if body.job == job && seq > since && seq <= visible {
                out.push(checkpoint_from(seq, body).map_err(corrupt)?);
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Every job with at least one checkpoint, sorted by name.
    pub fn jobs(&self) -> Result<Vec<JobSummary>> {
        let index = self.index();
        let mut entries: Vec<(String, JobEntry)> = index
            .iter()
            .filter(|(_, entry)| entry.latest.is_some())
            .map(|(job, entry)| (job.clone(), entry.clone()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        entries
            .into_iter()
            .filter_map(|(job, entry)| entry.latest.map(|at| (job, entry, at)))
            .map(|(job, entry, at)| {
                let latest = self.read_checkpoint(&index, at)?;
                Ok(JobSummary {
                    job,
                    latest_seq: at.seq,
                    phase: latest.phase,
                    at: latest.at,
                    checkpoints: entry.checkpoints,
                    status: entry.state.status,
                })
            })
            .collect()
    }

    fn check_names(&self, job: &str, phase: &str) -> Result<()> {
        self.check_job_name(job)?;
        check_name("phase", phase, self.inner.options.max_phase_bytes, true)
    }

    /// Checks a job name against the limits.
    pub(super) fn check_job_name(&self, job: &str) -> Result<()> {
        check_name(
            "job name",
            job,
            self.inner.options.max_job_name_bytes,
            false,
        )
    }
}

/// The current time at the precision of the log (microseconds), so the live index and a replay
/// see the same instant.
pub(super) fn now() -> DateTime<Utc> {
    let micros = Utc::now().timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or_default()
}

/// Builds the checkpoint numbered `seq` from its decoded record body.
fn checkpoint_from(seq: u64, body: CheckpointBody) -> Result<Checkpoint, RecordError> {
    let data = serde_json::from_slice(&body.data_json).map_err(RecordError::CheckpointData)?;
    let at = time_from_micros(body.at_micros)?;
    Ok(Checkpoint {
        job: body.job,
        seq,
        phase: body.phase,
        at,
        version: body.data_version,
        trigger: Trigger::from_code(body.trigger),
        data,
    })
}

/// Checks a job name or phase: within `limit` bytes, no control characters, and non-empty
/// unless `may_be_empty`.
fn check_name(what: &'static str, value: &str, limit: usize, may_be_empty: bool) -> Result<()> {
    if value.is_empty() && !may_be_empty {
        return Err(Error::invalid(what, "must not be empty"));
    }
    if value.len() > limit {
        return Err(Error::invalid(
            what,
            format!("{} bytes, over the limit of {limit}", value.len()),
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control()) {
        return Err(Error::invalid(
            what,
            format!("contains the control character {c:?}"),
        ));
    }
    Ok(())
}
