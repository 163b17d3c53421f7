//! The ETL toolkit: the rules a job follows between the checkpoints it saves in a
//! [`Store`](crate::Store). Everything here is pure (nothing reads a file or a clock; a caller
//! that needs the time passes `now`), so a job's logic can be tested without a store.
//!
//! The types a store's methods take and return ([`JobType`],
//! [`JobEvent`], [`JobState`], [`RunPlan`],
//! [`RetryPolicy`], ...) are at the crate root; this module holds the
//! tools that build and use them.
//!
//! # Describing a kind of job
//!
//! A [`JobType`], built with a [`JobTypeBuilder`] and registered with
//! [`Store::register`](crate::Store::register), gathers everything below for one kind of
//! job; the store then validates every save and upgrades every read with it. [`presets`]
//! holds two ready-made ones, a GitHub-style and a Jira-style extractor.
//!
//! - **Resuming**: a [`ResumeStrategy`] says whether a job continues from the exact position
//!   its checkpoint records (cursor resume) or sets the checkpoint aside and starts over
//!   (full restart); [`ResumeStrategy::start_point`] turns a plan's checkpoint into the
//!   [`StartPoint`] of the next run.
//! - **When to save**: a [`CheckpointPolicy`] (every N items, every so often, at unit and
//!   phase boundaries, on errors and rate limits), applied during a run by a
//!   [`Checkpointer`], which answers with the [`Trigger`] of the next save.
//! - **Validation**: a [`Validator`] holds the rules checkpoint data must follow before it is
//!   saved: declared phases in order, required fields, a serde type, numbers that must never
//!   decrease, and [`CustomRule`]s. A refused checkpoint is a [`ValidationFailure`].
//! - **Migrations**: [`Migrations`] declares a checkpoint format's current version and one
//!   [`MigrationStep`] per older version; data saved by older code is upgraded step by step
//!   when read, and data from newer code is refused with a [`MigrationError`].
//! - **Size**: [`keep_essential_fields`] trims checkpoint data to the fields a resume needs.
//!
//! # Planning the next run
//!
//! [`plan_next_run`] decides from a job's state whether its next run starts fresh, resumes,
//! retries after a backoff, runs normally or gives up (the rules are in its docs);
//! [`Store::plan`](crate::Store::plan) applies the same rules and hands back the checkpoint
//! itself. [`backoff_delay`] computes a retry's delay: exponential, capped at most at
//! [`MAX_RETRY_DELAY`], with jitter.
//!
//! # Doing the work exactly once
//!
//! - **Work queue**: a [`WorkQueue`] of [`WorkUnit`]s (repositories, projects), each
//!   [pending, in flight or done](UnitState), with its own cursor and count. Saved inside the
//!   checkpoint data, it lets a resume skip exactly the finished units and continue the one
//!   in flight. Misuse is a [`QueueError`].
//! - **Idempotency keys**: [`idempotency_key`] names each write stably, so that a sink that
//!   upserts by it receives every record once, however often a resumed or restarted run
//!   writes it again.
//!
//! ```
//! # let dir = tempfile::tempdir()?;
//! use cairn::job::{ResumeStrategy, Validator};
//! use cairn::{JobType, RunPlan, Store};
//!
//! let store = Store::open(dir.path())?;
//! let zendesk = JobType::builder("zendesk")
//!     .strategy(ResumeStrategy::CursorResume)
//!     .phases(["tickets", "comments"])
//!     .validator(Validator::new().require("cursor").monotonic("/tickets_processed"))
//!     .build()?;
//! store.register("zendesk_sync", zendesk)?;
//! assert_eq!(store.plan("zendesk_sync")?, RunPlan::FreshStart);
//! store.start_run("zendesk_sync")?;
//! store.save("zendesk_sync", "tickets", &serde_json::json!({"cursor": "c1", "tickets_processed": 100}))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod essentials;
pub(crate) mod event;
pub(crate) mod idempotency;
pub(crate) mod job_type;
pub(crate) mod migration;
pub(crate) mod plan;
pub(crate) mod policy;
pub mod presets;
pub(crate) mod queue;
pub(crate) mod state;
pub(crate) mod strategy;
pub(crate) mod validation;

pub use essentials::keep_essential_fields;
pub use idempotency::idempotency_key;
pub use job_type::{JobTypeBuilder, MAX_JOB_TYPE_NAME_BYTES, MAX_PHASES};
pub use migration::{MigrationError, MigrationStep, Migrations};
pub use plan::{MAX_RETRY_DELAY, backoff_delay, plan_next_run};
pub use policy::{CheckpointPolicy, Checkpointer};
pub use queue::{MAX_WORK_UNITS, QueueError, UnitState, WorkQueue, WorkUnit};
pub use strategy::{ResumeStrategy, StartPoint};
pub use validation::{CustomRule, ValidationFailure, Validator};

// The job types a store's methods take and return are public at the crate root; these paths
// are for the rest of the crate.
pub(crate) use event::{ErrorContext, JobEvent, Trigger};
pub(crate) use job_type::JobType;
pub(crate) use plan::{RetryPolicy, RunPlan};
pub(crate) use state::{JobState, JobStatus};
