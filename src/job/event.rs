//! [`JobEvent`]: what happened to a job, as recorded in the log. Events are facts; the
//! [`JobState`](crate::JobState) fold turns them into the job's current state.

use serde::{Deserialize, Serialize};

/// Something that happened to a job. The store appends one record per event; folding a job's
/// events in log order gives its [`JobState`](crate::JobState).
///
/// Serialized as JSON with an `event` tag, e.g.
/// `{"event":"run_started","attempt":1}` or
/// `{"event":"checkpoint_saved","phase":"pr_extraction","trigger":"batch_completed"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobEvent {
    /// A run of the job began. `attempt` is 1 for a first run and counts up on retries.
    RunStarted {
        /// Which attempt this run is (1 for the first).
        attempt: u32,
    },
    /// A checkpoint was saved. The data itself is stored in the checkpoint record; the event
    /// carries only its metadata.
    CheckpointSaved {
        /// The phase the job was in.
        phase: String,
        /// Why the checkpoint was taken.
        trigger: Trigger,
    },
    /// The run failed.
    RunFailed {
        /// The error message.
        error: String,
        /// Where and how it failed, and whether a retry can help.
        context: ErrorContext,
    },
    /// The run finished successfully.
    RunSucceeded,
    /// The job's checkpoint was set aside for a full restart. The previous checkpoint is kept
    /// for reference (logging, analysis) but no longer used to resume.
    CheckpointCleared {
        /// Why, e.g. "full restart after failure".
        reason: String,
    },
    /// A retry was scheduled after a failure.
    RetryScheduled {
        /// The attempt the retry will be (the failure count so far).
        attempt: u32,
        /// How long to wait before starting it, in milliseconds.
        delay_ms: u64,
    },
    /// The job was deleted: its checkpoints and state are gone from the store's view at once,
    /// and compaction drops its records. Saving under the name again starts a new job.
    JobDeleted {
        /// Why, for the operator.
        reason: String,
    },
}

impl JobEvent {
    /// The event's tag, as in its JSON form: `run_started`, `checkpoint_saved`, ….
    pub fn kind(&self) -> &'static str {
        match self {
            JobEvent::RunStarted { .. } => "run_started",
            JobEvent::CheckpointSaved { .. } => "checkpoint_saved",
            JobEvent::RunFailed { .. } => "run_failed",
            JobEvent::RunSucceeded => "run_succeeded",
            JobEvent::CheckpointCleared { .. } => "checkpoint_cleared",
            JobEvent::RetryScheduled { .. } => "retry_scheduled",
            JobEvent::JobDeleted { .. } => "job_deleted",
        }
    }
}

/// Why a checkpoint was taken, recorded with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Trigger {
    /// A batch of items was processed (every N issues or pull requests).
    BatchCompleted,
    /// A phase of the job was completed (e.g. `project_discovery_complete`).
    PhaseCompleted,
    /// A unit of work was completed (a project, a repository).
    UnitCompleted,
    /// The API's rate limit was reached: a good moment to save before waiting.
    RateLimitReached,
    /// An API call failed: progress up to the failure is saved.
    ApiError,
    /// The checkpoint interval elapsed.
    Timer,
    /// Someone asked for it explicitly.
    Manual,
}

impl Trigger {
    /// Every trigger, in declaration order.
    pub const ALL: [Trigger; 7] = [
        Trigger::BatchCompleted,
        Trigger::PhaseCompleted,
        Trigger::UnitCompleted,
        Trigger::RateLimitReached,
        Trigger::ApiError,
        Trigger::Timer,
        Trigger::Manual,
    ];

    /// The trigger's one-byte code as stored in checkpoint records: 1 to 7 in declaration
    /// order. 0 is left for "no trigger recorded" (format 1 records, plain saves). These
    /// codes are on disk: never change or reuse one.
    pub fn code(self) -> u8 {
        match self {
            Trigger::BatchCompleted => 1,
            Trigger::PhaseCompleted => 2,
            Trigger::UnitCompleted => 3,
            Trigger::RateLimitReached => 4,
            Trigger::ApiError => 5,
            Trigger::Timer => 6,
            Trigger::Manual => 7,
        }
    }

    /// The trigger with this [`code`](Trigger::code); `None` for 0 (no trigger recorded,
    /// best treated as [`Trigger::Manual`]) and for codes this build does not know.
    pub fn from_code(code: u8) -> Option<Trigger> {
        Trigger::ALL
            .into_iter()
            .find(|trigger| trigger.code() == code)
    }

    /// The trigger's name, as in its JSON form: `batch_completed`, `timer`, ….
    pub fn name(self) -> &'static str {
        match self {
            Trigger::BatchCompleted => "batch_completed",
            Trigger::PhaseCompleted => "phase_completed",
            Trigger::UnitCompleted => "unit_completed",
            Trigger::RateLimitReached => "rate_limit_reached",
            Trigger::ApiError => "api_error",
            Trigger::Timer => "timer",
            Trigger::Manual => "manual",
        }
    }
}

/// Where a run failed and whether retrying can help, recorded with a failed run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorContext {
    /// The last operation that completed, e.g. `project_extraction`.
    pub last_successful_operation: Option<String>,
    /// The operation that failed, e.g. `issue_processing`.
    pub failure_point: Option<String>,
    /// Whether a retry can succeed (a timeout, a rate limit) or not (bad credentials, a
    /// malformed response that will not change). An unrecoverable failure is never retried.
    pub recoverable: bool,
}

impl ErrorContext {
    /// A context for a failure that a retry may fix, with no operation names.
    pub fn recoverable() -> ErrorContext {
        ErrorContext {
            recoverable: true,
            ..ErrorContext::default()
        }
    }

    /// A context for a failure that no retry will fix, with no operation names.
    pub fn unrecoverable() -> ErrorContext {
        ErrorContext::default()
    }

    /// Sets the last operation that completed.
    pub fn last_successful_operation(mut self, operation: impl Into<String>) -> ErrorContext {
        self.last_successful_operation = Some(operation.into());
        self
    }

    /// Sets the operation that failed.
    pub fn failure_point(mut self, operation: impl Into<String>) -> ErrorContext {
        self.failure_point = Some(operation.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn every_event() -> Vec<JobEvent> {
        vec![
            JobEvent::RunStarted { attempt: 1 },
            JobEvent::CheckpointSaved {
                phase: "pr_extraction".into(),
                trigger: Trigger::BatchCompleted,
            },
            JobEvent::RunFailed {
                error: "HTTP 502".into(),
                context: ErrorContext::recoverable()
                    .last_successful_operation("project_extraction")
                    .failure_point("issue_processing"),
            },
            JobEvent::RunSucceeded,
            JobEvent::CheckpointCleared {
                reason: "full restart".into(),
            },
            JobEvent::RetryScheduled {
                attempt: 2,
                delay_ms: 1500,
            },
            JobEvent::JobDeleted {
                reason: "source retired".into(),
            },
        ]
    }

    #[test]
    fn events_round_trip_through_json() {
        for event in every_event() {
            let text = serde_json::to_string(&event).expect("serializes");
            let back: JobEvent = serde_json::from_str(&text).expect("deserializes");
            assert_eq!(back, event, "{text}");
        }
    }

    #[test]
    fn json_form_is_tagged_and_snake_case() {
        let event = JobEvent::CheckpointSaved {
            phase: "issues".into(),
            trigger: Trigger::RateLimitReached,
        };
        assert_eq!(
            serde_json::to_value(&event).expect("serializes"),
            json!({"event": "checkpoint_saved", "phase": "issues", "trigger": "rate_limit_reached"})
        );
        assert_eq!(
            serde_json::to_value(JobEvent::RunSucceeded).expect("serializes"),
            json!({"event": "run_succeeded"})
        );
    }

    #[test]
    fn kind_matches_the_json_tag() {
        for event in every_event() {
            let value = serde_json::to_value(&event).expect("serializes");
            assert_eq!(value["event"], event.kind());
        }
    }

    #[test]
    fn trigger_name_matches_the_json_form() {
        for trigger in Trigger::ALL {
            let value = serde_json::to_value(trigger).expect("serializes");
            assert_eq!(value, trigger.name());
        }
    }

    #[test]
    fn trigger_codes_are_stable_and_round_trip() {
        let codes: Vec<u8> = Trigger::ALL.iter().map(|trigger| trigger.code()).collect();
        assert_eq!(codes, [1, 2, 3, 4, 5, 6, 7]);
        for trigger in Trigger::ALL {
            assert_eq!(Trigger::from_code(trigger.code()), Some(trigger));
        }
        assert_eq!(Trigger::from_code(0), None);
        assert_eq!(Trigger::from_code(8), None);
        assert_eq!(Trigger::from_code(u8::MAX), None);
    }

    #[test]
    fn error_context_fields_default_when_absent() {
        let event: JobEvent = serde_json::from_value(json!({
            "event": "run_failed",
            "error": "boom",
            "context": {"recoverable": true}
        }))
        .expect("deserializes");
        assert_eq!(
            event,
            JobEvent::RunFailed {
                error: "boom".into(),
                context: ErrorContext::recoverable(),
            }
        );
    }

    #[test]
    fn unknown_event_is_an_error_not_a_panic() {
        let result: Result<JobEvent, _> = serde_json::from_value(json!({"event": "exploded"}));
        assert!(result.is_err());
    }
}
