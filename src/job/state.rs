//! [`JobState`]: the fold of a job's events (its docs have the table of transitions).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::event::{ErrorContext, JobEvent, Trigger};

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobStatus {
    /// Never run, or set back for a full restart.
    Pending,
    /// A run started and has not reported an outcome. After a crash this means "interrupted".
    Running,
    /// The last run failed.
    Failed,
    /// The last run succeeded.
    Succeeded,
}

impl JobStatus {
    /// The status's name, as in its JSON form: `pending`, `running`, `failed`, `succeeded`.
    pub fn name(self) -> &'static str {
        match self {
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Failed => "failed",
            JobStatus::Succeeded => "succeeded",
        }
    }
}

/// What the state remembers of one checkpoint (its data lives in the checkpoint record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CheckpointMeta {
    /// The sequence number passed to [`JobState::apply`] with the `CheckpointSaved` event:
    /// the checkpoint record's own sequence number.
    pub seq: u64,
    /// The phase the job was in.
    pub phase: String,
    /// When it was saved.
    pub at: DateTime<Utc>,
    /// Why it was saved.
    pub trigger: Trigger,
}

/// The record of a job's last failed run: what went wrong, where, and when (from its
/// `RunFailed` event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct RunFailure {
    /// The error message.
    pub message: String,
    /// Where it failed and whether a retry can help.
    pub context: ErrorContext,
    /// When the failure was recorded.
    pub at: DateTime<Utc>,
}

/// A retry that was scheduled and has not started yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ScheduledRetry {
    /// The attempt the retry will be.
    pub attempt: u32,
    /// How long to wait before it, in milliseconds.
    pub delay_ms: u64,
    /// When it was scheduled: the retry is due at `at + delay_ms`.
    pub at: DateTime<Utc>,
}

/// The current state of one job: the fold of its events. Pure and deterministic: the same
/// events in the same order always give the same state, whether applied one by one as they
/// happen or replayed from the log after a restart.
///
/// # Transitions
///
/// | event               | status                                   | other fields                                                                 |
/// |---------------------|------------------------------------------|------------------------------------------------------------------------------|
/// | `RunStarted`        | `Running`                                | `attempt` set, `runs_started` + 1, `scheduled_retry` cleared                 |
/// | `CheckpointSaved`   | `Running`, except that `Failed` stays    | `latest_checkpoint` and `last_checkpoint_at` set, `checkpoints_saved` + 1    |
/// | `RunFailed`         | `Failed`                                 | `retry_count` + 1, `last_error` set                                          |
/// | `RunSucceeded`      | `Succeeded`                              | `retry_count` reset to 0, `scheduled_retry` cleared, `last_success_seq` set  |
/// | `CheckpointCleared` | `Pending`                                | `latest_checkpoint` moved to `cleared_checkpoint`, `clear_reason` set        |
/// | `RetryScheduled`    | unchanged (`Failed` until the retry runs) | `scheduled_retry` set                                                       |
/// | `JobDeleted`        | `Pending`                                | every field back to a new job's (the store also forgets the job)             |
///
/// Every event also sets `last_seq` and counts in `events_applied`.
///
/// # Example
///
/// ```
/// use cairn::{JobEvent, JobState, JobStatus, Trigger};
/// let at = chrono::Utc::now();
/// let mut state = JobState::new("github_sync");
/// state.apply(1, at, &JobEvent::RunStarted { attempt: 1 });
/// state.apply(2, at, &JobEvent::CheckpointSaved {
///     phase: "pr_extraction".into(),
///     trigger: Trigger::BatchCompleted,
/// });
/// assert_eq!(state.status, JobStatus::Running);
/// assert_eq!(state.latest_checkpoint.as_ref().map(|c| c.seq), Some(2));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct JobState {
    /// The job's name.
    pub job: String,
    /// Where the job stands.
    pub status: JobStatus,
    /// The checkpoint to resume from, if any. `None` after a `CheckpointCleared`.
    pub latest_checkpoint: Option<CheckpointMeta>,
    /// When the last checkpoint was saved. Kept across a `CheckpointCleared`: it is history.
    pub last_checkpoint_at: Option<DateTime<Utc>>,
    /// Failures since the last success: + 1 on `RunFailed`, reset by `RunSucceeded`.
    pub retry_count: u32,
    /// The attempt number of the latest `RunStarted` (0 before any run).
    pub attempt: u32,
    /// The last failure, kept after a later success for reference.
    pub last_error: Option<RunFailure>,
    /// The checkpoint set aside by the last `CheckpointCleared` that had one to set aside,
    /// kept for reference (the Jira full restart).
    pub cleared_checkpoint: Option<CheckpointMeta>,
    /// The reason given by the last `CheckpointCleared`.
    pub clear_reason: Option<String>,
    /// A retry scheduled and not started yet.
    pub scheduled_retry: Option<ScheduledRetry>,
    /// How many runs started.
    pub runs_started: u64,
    /// How many checkpoints were saved.
    pub checkpoints_saved: u64,
    /// How many events were applied.
    pub events_applied: u64,
    /// The sequence number of the last event applied.
    pub last_seq: Option<u64>,
    /// When the last event was applied.
    pub updated_at: Option<DateTime<Utc>>,
    /// The sequence number of the last `RunSucceeded`: checkpoints before it belong to a
    /// finished run, so the next run's first checkpoint is not compared with them.
    #[serde(default)]
    pub last_success_seq: Option<u64>,
}

impl JobState {
    /// The state of a job with no events: pending, no checkpoint, no failures.
    pub fn new(job: impl Into<String>) -> JobState {
        JobState {
            job: job.into(),
            status: JobStatus::Pending,
            latest_checkpoint: None,
            last_checkpoint_at: None,
            retry_count: 0,
            attempt: 0,
            last_error: None,
            cleared_checkpoint: None,
            clear_reason: None,
            scheduled_retry: None,
            runs_started: 0,
            checkpoints_saved: 0,
            events_applied: 0,
            last_seq: None,
            updated_at: None,
            last_success_seq: None,
        }
    }

    /// Folds `events` (sequence number, time, event), in order, into a new state. Gives the
    /// same state as calling [`JobState::apply`] on each event as it happened.
    pub fn replay(
        job: impl Into<String>,
        events: impl IntoIterator<Item = (u64, DateTime<Utc>, JobEvent)>,
    ) -> JobState {
        let mut state = JobState::new(job);
        for (seq, at, event) in events {
            state.apply(seq, at, &event);
        }
        state
    }

    /// Applies one event recorded with sequence number `seq` at time `at`. Pure: reads no
    /// clock, touches nothing but `self`. Sequence numbers are expected to increase (the log
    /// guarantees it); the fold does not depend on it.
    ///
    /// For a `CheckpointSaved` event, `seq` must be the checkpoint record's own sequence
    /// number: it is what [`plan_next_run`](super::plan_next_run) hands back to resume from.
    pub fn apply(&mut self, seq: u64, at: DateTime<Utc>, event: &JobEvent) {
        match event {
            JobEvent::RunStarted { attempt } => {
                self.status = JobStatus::Running;
                self.attempt = *attempt;
                self.runs_started = self.runs_started.saturating_add(1);
                self.scheduled_retry = None;
            }
            JobEvent::CheckpointSaved { phase, trigger } => {
                // A checkpoint saved after a failure (the on-error save) must not hide it:
                // only a RunStarted begins the retry.
                if self.status != JobStatus::Failed {
                    self.status = JobStatus::Running;
                }
                self.latest_checkpoint = Some(CheckpointMeta {
                    seq,
                    phase: phase.clone(),
                    at,
                    trigger: *trigger,
                });
                self.last_checkpoint_at = Some(at);
                self.checkpoints_saved = self.checkpoints_saved.saturating_add(1);
            }
            JobEvent::RunFailed { error, context } => {
                self.status = JobStatus::Failed;
                self.retry_count = self.retry_count.saturating_add(1);
                self.last_error = Some(RunFailure {
                    message: error.clone(),
                    context: context.clone(),
                    at,
                });
            }
            JobEvent::RunSucceeded => {
                self.status = JobStatus::Succeeded;
                self.retry_count = 0;
                self.scheduled_retry = None;
                self.last_success_seq = Some(seq);
            }
            JobEvent::CheckpointCleared { reason } => {
                self.status = JobStatus::Pending;
                // Clearing twice keeps the first reference rather than forgetting it.
                if let Some(checkpoint) = self.latest_checkpoint.take() {
                    self.cleared_checkpoint = Some(checkpoint);
                }
                self.clear_reason = Some(reason.clone());
            }
            JobEvent::RetryScheduled { attempt, delay_ms } => {
                self.scheduled_retry = Some(ScheduledRetry {
                    attempt: *attempt,
                    delay_ms: *delay_ms,
                    at,
                });
            }
            JobEvent::JobDeleted { .. } => *self = JobState::new(&self.job),
        }
        self.events_applied = self.events_applied.saturating_add(1);
        self.last_seq = Some(seq);
        self.updated_at = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0)
            .single()
            .expect("valid time")
    }

    fn saved(phase: &str) -> JobEvent {
        JobEvent::CheckpointSaved {
            phase: phase.into(),
            trigger: Trigger::BatchCompleted,
        }
    }

    fn failed(recoverable: bool) -> JobEvent {
        JobEvent::RunFailed {
            error: "HTTP 502".into(),
            context: ErrorContext {
                recoverable,
                ..ErrorContext::default()
            },
        }
    }

    #[test]
    fn new_state_is_pending_and_empty() {
        let state = JobState::new("jira_sync");
        assert_eq!(state.job, "jira_sync");
        assert_eq!(state.status, JobStatus::Pending);
        assert_eq!(state.latest_checkpoint, None);
        assert_eq!(
            (state.retry_count, state.attempt, state.runs_started),
            (0, 0, 0)
        );
        assert_eq!(state.last_seq, None);
    }

    #[test]
    fn run_started_sets_running_and_attempt() {
        let mut state = JobState::new("j");
        state.apply(1, t(0), &JobEvent::RunStarted { attempt: 3 });
        assert_eq!(state.status, JobStatus::Running);
        assert_eq!((state.attempt, state.runs_started), (3, 1));
        assert_eq!((state.last_seq, state.updated_at), (Some(1), Some(t(0))));
    }

    #[test]
    fn checkpoint_saved_records_meta_and_keeps_running() {
        let mut state = JobState::new("j");
        state.apply(1, t(0), &JobEvent::RunStarted { attempt: 1 });
        state.apply(7, t(5), &saved("issues"));
        assert_eq!(state.status, JobStatus::Running);
        let latest = state.latest_checkpoint.clone().expect("checkpoint");
        assert_eq!(
            (latest.seq, latest.phase.as_str(), latest.at),
            (7, "issues", t(5))
        );
        assert_eq!(latest.trigger, Trigger::BatchCompleted);
        assert_eq!(state.last_checkpoint_at, Some(t(5)));
        assert_eq!(state.checkpoints_saved, 1);
    }

    #[test]
    fn checkpoint_without_run_started_means_running() {
        let mut state = JobState::new("j");
        state.apply(1, t(0), &saved("issues"));
        assert_eq!(state.status, JobStatus::Running);
        state.apply(2, t(1), &JobEvent::RunSucceeded);
        state.apply(3, t(2), &saved("issues"));
        assert_eq!(state.status, JobStatus::Running);
    }

    #[test]
    fn checkpoint_after_failure_does_not_hide_it() {
        let mut state = JobState::new("j");
        state.apply(1, t(0), &JobEvent::RunStarted { attempt: 1 });
        state.apply(2, t(1), &failed(true));
        state.apply(3, t(2), &saved("issues"));
        assert_eq!(state.status, JobStatus::Failed);
        assert_eq!(state.latest_checkpoint.map(|c| c.seq), Some(3));
    }

    #[test]
    fn run_failed_counts_and_records_the_error() {
        let mut state = JobState::new("j");
        state.apply(1, t(0), &JobEvent::RunStarted { attempt: 1 });
        state.apply(2, t(1), &failed(true));
        state.apply(3, t(2), &JobEvent::RunStarted { attempt: 2 });
        state.apply(4, t(3), &failed(false));
        assert_eq!(state.status, JobStatus::Failed);
        assert_eq!(state.retry_count, 2);
        let error = state.last_error.expect("error");
        assert_eq!((error.message.as_str(), error.at), ("HTTP 502", t(3)));
        assert!(!error.context.recoverable);
    }

    #[test]
    fn run_succeeded_resets_retries_but_keeps_the_last_error() {
        let mut state = JobState::new("j");
        state.apply(1, t(0), &failed(true));
        state.apply(
            2,
            t(1),
            &JobEvent::RetryScheduled {
                attempt: 1,
                delay_ms: 10,
            },
        );
        state.apply(3, t(2), &JobEvent::RunSucceeded);
        assert_eq!(state.status, JobStatus::Succeeded);
        assert_eq!(state.retry_count, 0);
        assert_eq!(state.scheduled_retry, None);
        assert!(state.last_error.is_some());
    }

    #[test]
    fn checkpoint_cleared_sets_the_checkpoint_aside_and_pends() {
        let mut state = JobState::new("j");
        state.apply(1, t(0), &JobEvent::RunStarted { attempt: 1 });
        state.apply(2, t(1), &saved("issues"));
        state.apply(3, t(2), &failed(true));
        state.apply(
            4,
            t(3),
            &JobEvent::CheckpointCleared {
                reason: "full restart".into(),
            },
        );
        assert_eq!(state.status, JobStatus::Pending);
        assert_eq!(state.latest_checkpoint, None);
        assert_eq!(state.cleared_checkpoint.as_ref().map(|c| c.seq), Some(2));
        assert_eq!(state.clear_reason.as_deref(), Some("full restart"));
        assert_eq!(state.last_checkpoint_at, Some(t(1)));
        assert_eq!(
            state.retry_count, 1,
            "a restart does not refill the retry budget"
        );

        state.apply(
            5,
            t(4),
            &JobEvent::CheckpointCleared {
                reason: "again".into(),
            },
        );
        assert_eq!(state.cleared_checkpoint.map(|c| c.seq), Some(2));
    }

    #[test]
    fn retry_scheduled_is_recorded_and_cleared_by_the_next_run() {
        let mut state = JobState::new("j");
        state.apply(1, t(0), &failed(true));
        state.apply(
            2,
            t(1),
            &JobEvent::RetryScheduled {
                attempt: 1,
                delay_ms: 1500,
            },
        );
        assert_eq!(state.status, JobStatus::Failed);
        let retry = state.scheduled_retry.expect("scheduled");
        assert_eq!((retry.attempt, retry.delay_ms, retry.at), (1, 1500, t(1)));
        state.apply(3, t(2), &JobEvent::RunStarted { attempt: 2 });
        assert_eq!(state.scheduled_retry, None);
        assert_eq!(state.status, JobStatus::Running);
    }

    #[test]
    fn counters_saturate_instead_of_overflowing() {
        let mut state = JobState::new("j");
        state.retry_count = u32::MAX;
        state.apply(1, t(0), &failed(true));
        assert_eq!(state.retry_count, u32::MAX);
    }

    #[test]
    fn state_serializes_to_json() {
        let mut state = JobState::new("j");
        state.apply(1, t(0), &saved("issues"));
        let value = serde_json::to_value(&state).expect("serializes");
        assert_eq!(value["status"], "running");
        assert_eq!(value["latest_checkpoint"]["phase"], "issues");
        assert_eq!(value["latest_checkpoint"]["trigger"], "batch_completed");
        let back: JobState = serde_json::from_value(value).expect("deserializes");
        assert_eq!(back, state);
    }

    fn any_event() -> impl Strategy<Value = JobEvent> {
        prop_oneof![
            (1u32..5).prop_map(|attempt| JobEvent::RunStarted { attempt }),
            (0usize..3, 0usize..7).prop_map(|(phase, trigger)| JobEvent::CheckpointSaved {
                phase: ["a", "b", "c"][phase].into(),
                trigger: Trigger::ALL[trigger],
            }),
            any::<bool>().prop_map(failed),
            Just(JobEvent::RunSucceeded),
            Just(JobEvent::CheckpointCleared {
                reason: "restart".into()
            }),
            (1u32..5, 0u64..10_000)
                .prop_map(|(attempt, delay_ms)| JobEvent::RetryScheduled { attempt, delay_ms }),
        ]
    }

    proptest! {
        #[test]
        fn replay_equals_live_application(events in prop::collection::vec(any_event(), 0..60)) {
            let timed: Vec<(u64, DateTime<Utc>, JobEvent)> = events
                .into_iter()
                .enumerate()
                .map(|(i, event)| (i as u64 + 1, t(i as i64), event))
                .collect();
            let mut live = JobState::new("j");
            for (seq, at, event) in &timed {
                live.apply(*seq, *at, event);
                // The state survives a JSON round trip at any point.
                let json = serde_json::to_string(&live).expect("serializes");
                let back: JobState = serde_json::from_str(&json).expect("deserializes");
                prop_assert_eq!(&back, &live);
            }
            let replayed = JobState::replay("j", timed.clone());
            prop_assert_eq!(&replayed, &live);
            prop_assert_eq!(replayed.events_applied, timed.len() as u64);
            // Replaying a prefix and then the rest live gives the same state too.
            let half = timed.len() / 2;
            let mut resumed = JobState::replay("j", timed[..half].to_vec());
            for (seq, at, event) in &timed[half..] {
                resumed.apply(*seq, *at, event);
            }
            prop_assert_eq!(resumed, live);
        }
    }
}
