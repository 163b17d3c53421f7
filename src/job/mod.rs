//! The functional core of cairn's job semantics: pure ETL rules, no I/O. Events in,
//! decisions out; nothing here reads a file or a clock (a caller that needs the time passes
//! `now`), so every rule is tested without a store.
//!
//! - [`event`]: [`JobEvent`], what happened to a job (a run started, a checkpoint was saved,
//!   a run failed or succeeded, the checkpoint was cleared, a retry was scheduled), and the
//!   checkpoint [`Trigger`]s.
//! - [`state`]: [`JobState`], the fold of a job's events; replaying them gives the same state
//!   as applying them live.
//! - [`plan`]: [`plan_recovery`], what the next run does (fresh start, resume, retry with
//!   backoff, normal run, give up), with [`RetryPolicy`] and [`backoff_delay`].
//! - [`strategy`]: [`ResumeStrategy`], precise cursor resume (GitHub) or full restart (Jira).
//! - [`queue`]: [`WorkQueue`], units of work embedded in checkpoint data, resumable exactly.
//! - [`idempotency`]: [`idempotency_key`], stable keys that make replayed writes harmless.
//! - [`policy`]: [`CheckpointPolicy`] and [`Checkpointer`], when to save.
//! - [`validation`]: [`Validator`], the rules checkpoint data must follow.
//! - [`migration`]: [`Migrations`], versioned checkpoint formats upgraded step by step.
//! - [`essentials`]: [`keep_essential_fields`], trimming checkpoint data.
//! - [`job_type`]: [`JobType`], all of the above for one kind of job, with the seed's GitHub
//!   and Jira examples.
//!
//! The store joins this core to the log: it records events, folds them into a `JobState`,
//! asks for a plan, validates data before a save and upgrades it after a read.

pub(crate) mod essentials;
pub(crate) mod event;
pub(crate) mod idempotency;
pub(crate) mod job_type;
pub(crate) mod migration;
pub(crate) mod plan;
pub(crate) mod policy;
pub(crate) mod queue;
pub(crate) mod state;
pub(crate) mod strategy;
pub(crate) mod validation;

pub use essentials::keep_essential_fields;
pub use event::{ErrorContext, JobEvent, Trigger};
pub use idempotency::idempotency_key;
pub use job_type::{JobType, JobTypeBuilder, MAX_JOB_TYPE_NAME_BYTES, MAX_PHASES};
pub use migration::{MigrationError, MigrationStep, Migrations};
pub use plan::{
    MAX_RETRIES_LIMIT, MAX_RETRY_DELAY, RecoveryDecision, RetryPolicy, backoff_delay, jitter_seed,
    plan_recovery,
};
pub use policy::{CheckpointPolicy, Checkpointer};
pub use queue::{MAX_WORK_UNITS, QueueError, UnitState, WorkQueue, WorkUnit};
pub use state::{CheckpointMeta, JobState, JobStatus, RunFailure, ScheduledRetry};
pub use strategy::{ResumeStrategy, StartPoint};
pub use validation::{CustomRule, ValidationFailure, Validator, WHOLE_DATA_FIELD};
