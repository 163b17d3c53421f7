//! [`JobType`]: everything cairn knows about one kind of job, in one value: how it resumes,
//! its phases, when it saves, how it retries, what its checkpoints must look like and how
//! their format evolved. Two ready-made ones are in [`presets`](super::presets).

use std::collections::HashSet;
use std::time::Instant;

use serde_json::Value;

use super::essentials::keep_essential_fields;
use super::migration::{MigrationError, Migrations};
use super::plan::{RetryPolicy, RunPlan, plan_next_run};
use super::policy::{CheckpointPolicy, Checkpointer};
use super::state::JobState;
use super::strategy::{ResumeStrategy, StartPoint};
use super::validation::{ValidationFailure, Validator};
use crate::error::{Error, Result};

/// The most phases a job type may declare.
pub const MAX_PHASES: usize = 64;
/// The longest job type name or phase name, in bytes of UTF-8.
pub const MAX_JOB_TYPE_NAME_BYTES: usize = 256;

/// One kind of job: its name, [`ResumeStrategy`], ordered phases, [`CheckpointPolicy`],
/// [`RetryPolicy`], [`Validator`], [`Migrations`] and, optionally, the fields a checkpoint
/// keeps. Build one with [`JobType::builder`], or take a ready-made one from
/// [`job::presets`](crate::job::presets).
///
/// ```
/// use cairn::JobType;
/// use cairn::job::{ResumeStrategy, Validator};
/// let job_type = JobType::builder("zendesk")
///     .strategy(ResumeStrategy::CursorResume)
///     .phases(["tickets", "comments"])
///     .validator(Validator::new().require("cursor").monotonic("/tickets_processed"))
///     .build()?;
/// assert_eq!(job_type.phases(), ["tickets", "comments"]);
/// # Ok::<(), cairn::Error>(())
/// ```
#[derive(Debug)]
pub struct JobType {
    name: String,
    strategy: ResumeStrategy,
    checkpoint_policy: CheckpointPolicy,
    retry_policy: RetryPolicy,
    /// Holds the phases, so that they are declared once.
    validator: Validator,
    migrations: Migrations,
    essential_fields: Option<Vec<String>>,
}

/// Builds a [`JobType`]; every setting has a default (listed on its setter).
#[derive(Debug)]
#[must_use = "call build() to get the JobType"]
pub struct JobTypeBuilder {
    name: String,
    strategy: ResumeStrategy,
    phases: Option<Vec<String>>,
    checkpoint_policy: CheckpointPolicy,
    retry_policy: RetryPolicy,
    validator: Validator,
    migrations: Migrations,
    essential_fields: Option<Vec<String>>,
}

impl JobTypeBuilder {
    /// How the job resumes. Default: [`ResumeStrategy::CursorResume`].
    pub fn strategy(mut self, strategy: ResumeStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// The job's phases, in order; they replace any declared on the validator. Default: the
    /// validator's (none: any phase goes). At most [`MAX_PHASES`], unique and non-empty.
    pub fn phases<I, S>(mut self, phases: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.phases = Some(phases.into_iter().map(Into::into).collect());
        self
    }

    /// When the job saves. Default: [`CheckpointPolicy::default`] (boundaries and errors).
    pub fn checkpoint_policy(mut self, policy: CheckpointPolicy) -> Self {
        self.checkpoint_policy = policy;
        self
    }

    /// How failed runs are retried. Default: [`RetryPolicy::default`].
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry_policy = policy;
        self
    }

    /// The rules checkpoint data must follow. Default: none.
    pub fn validator(mut self, validator: Validator) -> Self {
        self.validator = validator;
        self
    }

    /// The checkpoint format versions. Default: version 1, no steps.
    pub fn migrations(mut self, migrations: Migrations) -> Self {
        self.migrations = migrations;
        self
    }

    /// The top-level fields a checkpoint keeps (see [`JobType::trim`]). Default: all. They
    /// must include every required field and the top of every monotonic field.
    pub fn essential_fields<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.essential_fields = Some(fields.into_iter().map(Into::into).collect());
        self
    }

    /// The job type, once its settings are checked: a name and phases of 1 to
    /// [`MAX_JOB_TYPE_NAME_BYTES`] bytes, unique phases, at most [`MAX_PHASES`], valid
    /// policies, and essential fields that keep what validation needs. Fails with
    /// [`Error::InvalidInput`].
    pub fn build(self) -> Result<JobType> {
        let job_type = self.assemble();
        job_type.check()?;
        Ok(job_type)
    }

    /// The job type without checks (for the ready-made ones in `presets`, checked by tests).
    pub(super) fn assemble(self) -> JobType {
        let validator = match self.phases {
            Some(phases) => self.validator.phases(phases),
            None => self.validator,
        };
        JobType {
            name: self.name,
            strategy: self.strategy,
            checkpoint_policy: self.checkpoint_policy,
            retry_policy: self.retry_policy,
            validator,
            migrations: self.migrations,
            essential_fields: self.essential_fields,
        }
    }
}

fn check_name(what: &'static str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_JOB_TYPE_NAME_BYTES {
        return Err(Error::invalid(
            what,
            format!("{name:?} must be 1 to {MAX_JOB_TYPE_NAME_BYTES} bytes long"),
        ));
    }
    Ok(())
}

impl JobType {
    /// A builder for a job type named `name`.
    pub fn builder(name: impl Into<String>) -> JobTypeBuilder {
        JobTypeBuilder {
            name: name.into(),
            strategy: ResumeStrategy::CursorResume,
            phases: None,
            checkpoint_policy: CheckpointPolicy::default(),
            retry_policy: RetryPolicy::default(),
            validator: Validator::new(),
            migrations: Migrations::default(),
            essential_fields: None,
        }
    }

    /// Checks the settings (see [`JobTypeBuilder::build`]).
    pub(super) fn check(&self) -> Result<()> {
        check_name("job type name", &self.name)?;
        let phases = self.phases();
        if phases.len() > MAX_PHASES {
            return Err(Error::invalid(
                "phases",
                format!("{} phases, over the limit of {MAX_PHASES}", phases.len()),
            ));
        }
        let mut seen = HashSet::new();
        for phase in phases {
            check_name("phase", phase)?;
            if !seen.insert(phase.as_str()) {
                return Err(Error::invalid(
                    "phases",
                    format!("{phase:?} is declared twice"),
                ));
            }
        }
        self.retry_policy.validate()?;
        self.checkpoint_policy.validate()?;
        self.check_essentials()
    }

    /// Trimming to the essential fields must not remove what validation reads.
    fn check_essentials(&self) -> Result<()> {
        let Some(essential) = &self.essential_fields else {
            return Ok(());
        };
        let monotonic_tops = self
            .validator
            .monotonic_fields()
            .iter()
            .filter_map(|pointer| {
                // "/a/b" → "a"; JSON pointer escapes (~0, ~1) are resolved.
                let top = pointer.strip_prefix('/')?.split('/').next()?;
                Some(top.replace("~1", "/").replace("~0", "~"))
            });
        let needed = self
            .validator
            .required_fields()
            .iter()
            .cloned()
            .chain(monotonic_tops);
        for field in needed {
            if !essential.contains(&field) {
                return Err(Error::invalid(
                    "essential fields",
                    format!("{field:?} is validated but would be trimmed away"),
                ));
            }
        }
        Ok(())
    }

    /// The job type's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How the job resumes.
    pub fn strategy(&self) -> ResumeStrategy {
        self.strategy
    }

    /// The declared phases, in order (empty: any phase goes).
    pub fn phases(&self) -> &[String] {
        self.validator.declared_phases()
    }

    /// When the job saves.
    pub fn checkpoint_policy(&self) -> &CheckpointPolicy {
        &self.checkpoint_policy
    }

    /// How failed runs are retried.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.retry_policy
    }

    /// The rules checkpoint data must follow.
    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// The checkpoint format versions.
    pub fn migrations(&self) -> &Migrations {
        &self.migrations
    }

    /// The top-level fields a checkpoint keeps, if limited.
    pub fn essential_fields(&self) -> Option<&[String]> {
        self.essential_fields.as_deref()
    }

    /// Checks a checkpoint against the validator; see [`Validator::validate`].
    pub fn validate(
        &self,
        phase: &str,
        data: &Value,
        previous: Option<(&str, &Value)>,
    ) -> std::result::Result<(), ValidationFailure> {
        self.validator.validate(phase, data, previous)
    }

    /// Upgrades data saved in format `version` to the current one; see
    /// [`Migrations::upgrade`].
    pub fn upgrade(&self, version: u32, data: Value) -> std::result::Result<Value, MigrationError> {
        self.migrations.upgrade(version, data)
    }

    /// The data with only the essential fields, or unchanged if the job type keeps all.
    pub fn trim(&self, data: &Value) -> Value {
        match &self.essential_fields {
            Some(fields) => {
                let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
                keep_essential_fields(data, &fields)
            }
            None => data.clone(),
        }
    }

    /// What the next run of the job in `state` should do, with this job type's retry
    /// policy; see [`plan_next_run`](super::plan_next_run).
    pub fn plan_next_run(&self, state: &JobState) -> RunPlan<u64> {
        plan_next_run(state, &self.retry_policy)
    }

    /// Where the next run starts given the checkpoint planning chose; see
    /// [`ResumeStrategy::start_point`].
    pub fn start_point(&self, checkpoint_seq: Option<u64>) -> StartPoint {
        self.strategy.start_point(checkpoint_seq)
    }

    /// A [`Checkpointer`] applying this job type's checkpoint policy from `now`.
    pub fn checkpointer(&self, now: Instant) -> Checkpointer {
        Checkpointer::new(self.checkpoint_policy, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::event::{ErrorContext, JobEvent, Trigger};
    use crate::job::presets;
    use chrono::Utc;
    use serde_json::json;

    #[test]
    fn plan_and_checkpointer_use_the_job_types_policies() {
        let github = presets::github_extractor();
        let at = chrono::DateTime::<Utc>::UNIX_EPOCH;
        let mut state = JobState::new("github_sync");
        state.apply(1, at, &JobEvent::RunStarted { attempt: 1 });
        state.apply(
            2,
            at,
            &JobEvent::CheckpointSaved {
                phase: "pr_extraction".into(),
                trigger: Trigger::Timer,
            },
        );
        assert_eq!(
            github.plan_next_run(&state),
            RunPlan::Resume { checkpoint: 2 }
        );
        state.apply(
            3,
            at,
            &JobEvent::RunFailed {
                error: "x".into(),
                context: ErrorContext::recoverable(),
            },
        );
        assert!(matches!(
            github.plan_next_run(&state),
            RunPlan::RetryWithBackoff { attempt: 1, .. }
        ));
        let mut checkpointer = github.checkpointer(Instant::now());
        let now = Instant::now();
        let triggers: Vec<_> = (0..50).filter_map(|_| checkpointer.item(now)).collect();
        assert_eq!(triggers, [Trigger::BatchCompleted]);
    }

    #[test]
    fn builder_sets_everything_and_phases_override_the_validators() {
        let job_type = JobType::builder("custom")
            .strategy(ResumeStrategy::FullRestart)
            .validator(Validator::new().phases(["old"]).require("a"))
            .phases(["one", "two"])
            .checkpoint_policy(presets::jira_checkpoint_policy())
            .retry_policy(RetryPolicy::default())
            .migrations(Migrations::new(2).register(1, Ok))
            .essential_fields(["a", "b"])
            .build()
            .expect("valid");
        assert_eq!(job_type.phases(), ["one", "two"]);
        assert_eq!(job_type.validator().required_fields(), ["a"]);
        assert_eq!(job_type.migrations().current_version(), 2);
        assert_eq!(job_type.upgrade(1, json!({"a": 1})), Ok(json!({"a": 1})));
        assert_eq!(job_type.retry_policy(), &RetryPolicy::default());
        assert_eq!(
            job_type.essential_fields(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let too_many = (0..=MAX_PHASES).map(|i| format!("p{i}"));
        let bad = [
            JobType::builder(""),
            JobType::builder("x".repeat(MAX_JOB_TYPE_NAME_BYTES + 1)),
            JobType::builder("x").phases(["a", "a"]),
            JobType::builder("x").phases(["a", ""]),
            JobType::builder("x").phases(too_many),
            JobType::builder("x").retry_policy(RetryPolicy::new(
                1,
                std::time::Duration::ZERO,
                std::time::Duration::ZERO,
                0.0,
            )),
            JobType::builder("x").checkpoint_policy(CheckpointPolicy {
                every_items: Some(0),
                ..CheckpointPolicy::default()
            }),
            JobType::builder("x")
                .validator(Validator::new().require("a"))
                .essential_fields(["b"]),
            JobType::builder("x")
                .validator(Validator::new().monotonic("/stats/n"))
                .essential_fields(["n"]),
        ];
        for builder in bad {
            let err = builder.build().expect_err("must be refused");
            assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        }
        JobType::builder("x")
            .validator(Validator::new().monotonic("/a~1b/n"))
            .essential_fields(["a/b"])
            .build()
            .expect("escaped pointer resolved");
    }
}
