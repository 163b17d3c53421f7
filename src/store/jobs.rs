//! Job semantics on top of the log: job types, events, the folded job state, planning the
//! next run and the migration dry run.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::Store;
use super::checkpoints::now;
use super::metrics::Counters;
use super::visibility::Update;
use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::job::{ErrorContext, JobEvent, JobState, JobType, RetryPolicy, RunPlan, plan_next_run};
use crate::log::{EventBody, NewRecord};

/// One checkpoint that would not pass the current migrations and validators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MigrationFailure {
    /// The job.
    pub job: String,
    /// The checkpoint's sequence number.
    pub seq: u64,
    /// The format version it was saved with.
    pub version: u32,
    /// What went wrong.
    pub error: String,
}

/// The result of [`Store::check_migrations`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct MigrationCheck {
    /// Checkpoints checked (of jobs with a registered job type).
    pub checked: u64,
    /// Those that would fail.
    pub failures: Vec<MigrationFailure>,
}

impl MigrationCheck {
    /// True when every checkpoint passed.
    pub fn is_ok(&self) -> bool {
        self.failures.is_empty()
    }
}

impl Store {
    /// Registers the [`JobType`] of `job`: its validator, migrations and essential fields then
    /// apply to the job's saves and reads. Registration lives in memory; register again after
    /// every open (typically right after it).
    pub fn register(&self, job: &str, job_type: JobType) -> Result<()> {
        self.check_job_name(job)?;
        self.inner
            .job_types
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(job.to_owned(), Arc::new(job_type));
        Ok(())
    }

    /// The job type registered for `job`.
    pub fn job_type(&self, job: &str) -> Option<Arc<JobType>> {
        let types = self
            .inner
            .job_types
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        types.get(job).cloned()
    }

    /// Appends a job event and returns its sequence number; durable on return under
    /// [`Durability::Sync`](crate::Durability::Sync). The helpers below cover the usual ones.
    /// An event whose JSON is longer than [`Options::max_payload`](crate::Options::max_payload)
    /// or [`MAX_EVENT_BYTES`](crate::MAX_EVENT_BYTES) is refused with
    /// [`Error::PayloadTooLarge`].
    pub fn record(&self, job: &str, event: &JobEvent) -> Result<u64> {
        self.check_writable()?;
        self.check_job_name(job)?;
        let event_json = serde_json::to_vec(event).map_err(|source| Error::Serialize {
            job: job.into(),
            source,
        })?;
        // Also bounded whatever the options say, so that a job's state fits a snapshot record.
        let limit = (self.inner.options.max_payload_bytes).min(crate::options::MAX_EVENT_BYTES);
        if event_json.len() as u64 > limit {
            return Err(Error::PayloadTooLarge {
                job: job.into(),
                size_bytes: event_json.len() as u64,
                limit_bytes: limit,
            });
        }
        let time = now();
        let body = EventBody {
            job: job.into(),
            at_micros: time.timestamp_micros(),
            event_json,
        };
        let record = NewRecord::event(&body)
            .map_err(|reason| Error::invalid("job event", reason.to_string()))?;
        let max_body = self.inner.options.max_record_body_bytes();
        if record.body_len() as u64 > max_body {
            return Err(Error::PayloadTooLarge {
                job: job.into(),
                size_bytes: record.body_len() as u64,
                limit_bytes: max_body,
            });
        }
        let deletion = matches!(event, JobEvent::JobDeleted { .. });
        let appended = self.append(&record, deletion, &|appended| {
            self.inner.record_written(Update::Event {
                job: job.into(),
                seq: appended.seq,
                time,
                event: event.clone(),
                bytes: appended.bytes,
            });
        })?;
        Counters::add(&self.inner.counters.events_recorded, 1);
        Counters::add(
            &self.inner.counters.bytes_appended,
            record.body_len() as u64,
        );
        self.wait_durable(appended.seq)?;
        Ok(appended.seq)
    }

    /// Records that a run of `job` started; returns its attempt number (1 for a first run,
    /// one more than the failures since the last success for a retry).
    pub fn start_run(&self, job: &str) -> Result<u32> {
        let attempt = self.job(job).map_or(0, |state| state.retry_count) + 1;
        self.record(job, &JobEvent::RunStarted { attempt })?;
        Ok(attempt)
    }

    /// Records that the current run of `job` failed.
    pub fn fail_run(&self, job: &str, error: &str, context: ErrorContext) -> Result<u64> {
        self.record(
            job,
            &JobEvent::RunFailed {
                error: error.into(),
                context,
            },
        )
    }

    /// Records that the current run of `job` finished cleanly.
    pub fn succeed_run(&self, job: &str) -> Result<u64> {
        self.record(job, &JobEvent::RunSucceeded)
    }

    /// Sets the checkpoint of `job` aside for a full restart, and returns it: it stays in the
    /// log for reference (and in [`JobState::cleared_checkpoint`]), but planning no longer
    /// resumes from it.
    pub fn clear_checkpoint(&self, job: &str, reason: &str) -> Result<Option<Checkpoint>> {
        let reference = self.latest(job)?;
        self.record(
            job,
            &JobEvent::CheckpointCleared {
                reason: reason.into(),
            },
        )?;
        Ok(reference)
    }

    /// Deletes `job`: from now on the store does not know it (no checkpoints, no state, not
    /// in [`Store::jobs`]), and the next compaction drops its records. Saving under the same
    /// name later starts a new job. Returns false, recording nothing, for a job the store
    /// does not know.
    pub fn delete_job(&self, job: &str, reason: &str) -> Result<bool> {
        self.check_writable()?;
        self.check_job_name(job)?;
        if self.index().get(job).is_none() {
            return Ok(false);
        }
        self.record(
            job,
            &JobEvent::JobDeleted {
                reason: reason.into(),
            },
        )?;
        Ok(true)
    }

    /// Records that a retry of `job` is planned after `delay`.
    pub fn schedule_retry(&self, job: &str, attempt: u32, delay: Duration) -> Result<u64> {
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.record(job, &JobEvent::RetryScheduled { attempt, delay_ms })
    }

    /// The state of `job`, folded from its events (`None` for a job the store never saw).
    /// A replay at open builds exactly the state the live process had.
    pub fn job(&self, job: &str) -> Option<JobState> {
        self.index().get(job).map(|entry| entry.state.clone())
    }

    /// Decides what the next run of `job` does, with the retry policy of the job's registered
    /// [`JobType`], or [`RetryPolicy::default`] when none is registered: start fresh, resume
    /// from its latest checkpoint, retry after a backoff, run normally, or give up (the rules
    /// are on [`plan_next_run`](crate::job::plan_next_run)). A job the store does not know
    /// starts fresh. The checkpoint of a plan is read like [`Store::latest`] reads it.
    pub fn plan(&self, job: &str) -> Result<RunPlan<Checkpoint>> {
        let policy = self
            .job_type(job)
            .map(|t| *t.retry_policy())
            .unwrap_or_default();
        self.plan_with(job, &policy)
    }

    /// [`Store::plan`] with the retry policy `policy`, whatever job type is registered.
    pub fn plan_with(&self, job: &str, policy: &RetryPolicy) -> Result<RunPlan<Checkpoint>> {
        let index = self.index();
        let Some(entry) = index.get(job).cloned() else {
            return Ok(RunPlan::FreshStart);
        };
        // The state's checkpoint is always the latest one saved (the index keeps them so).
        plan_next_run(&entry.state, policy).try_map_checkpoint(|seq| match entry.latest {
            Some(at) if at.seq == seq => self.read_checkpoint(&index, at),
            latest => Err(Error::invalid(
                "job state",
                format!("planned checkpoint {seq} of {job} is not its latest ({latest:?})"),
            )),
        })
    }

    /// The deploy-time dry run: passes every retained checkpoint of every job with a registered
    /// job type through its current migrations and validator (without the rules that compare
    /// with the previous checkpoint), and reports which would fail. Changes nothing.
    pub fn check_migrations(&self) -> Result<MigrationCheck> {
        let jobs: Vec<String> = self
            .inner
            .job_types
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        let mut check = MigrationCheck::default();
        for job in jobs {
            let Some(job_type) = self.job_type(&job) else {
                continue;
            };
            for checkpoint in self.raw_history(&job)? {
                check.checked += 1;
                let failure = |error: String| MigrationFailure {
                    job: job.clone(),
                    seq: checkpoint.seq,
                    version: checkpoint.version,
                    error,
                };
                match job_type.upgrade(checkpoint.version, checkpoint.data.clone()) {
                    Err(e) => check.failures.push(failure(e.to_string())),
                    Ok(data) => {
                        if let Err(e) = job_type.validate(&checkpoint.phase, &data, None) {
                            check.failures.push(failure(e.into_error(&job).to_string()));
                        }
                    }
                }
            }
        }
        Ok(check)
    }
}
