//! [`JobType`]: everything cairn knows about one kind of job, in one value: how it resumes,
//! its phases, when it saves, how it retries, what its checkpoints must look like and how
//! their format evolved. Two ready-made examples follow the seed: [`JobType::github`] and
//! [`JobType::jira`].

use std::collections::HashSet;
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::essentials::keep_essential_fields;
use super::migration::{MigrationError, Migrations};
use super::plan::{RecoveryDecision, RetryPolicy, plan_recovery};
use super::policy::{CheckpointPolicy, Checkpointer};
use super::queue::WorkQueue;
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
/// keeps. Build one with [`JobType::builder`].
///
/// ```
/// use cairn::{JobType, ResumeStrategy, Validator};
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

    /// The job type without checks (for the ready-made ones, checked by tests).
    fn assemble(self) -> JobType {
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

    fn check(&self) -> Result<()> {
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

    /// The seed's GitHub sync: precise cursor resume; phases `repository_discovery`,
    /// `pr_extraction`, `commit_extraction`, `review_extraction`, `pr_issue_linking`;
    /// [`CheckpointPolicy::github`]; requires `repo_processing_queue` (the seed's list of
    /// `{name, finished, last_cursor}` or a [`WorkQueue`]) and `last_repo_sync_checkpoint`
    /// (null, or a repository of the queue); `total_prs_processed` never decreases.
    pub fn github() -> JobType {
        let validator = Validator::new()
            .require("repo_processing_queue")
            .require("last_repo_sync_checkpoint")
            .typed::<GithubCheckpoint>()
            .monotonic("/total_prs_processed")
            .custom("last_repo_sync_checkpoint", last_repo_is_queued);
        JobType::builder("github")
            .strategy(ResumeStrategy::CursorResume)
            .phases([
                "repository_discovery",
                "pr_extraction",
                "commit_extraction",
                "review_extraction",
                "pr_issue_linking",
            ])
            .checkpoint_policy(CheckpointPolicy::github())
            .validator(validator)
            .essential_fields([
                "repo_processing_queue",
                "last_repo_sync_checkpoint",
                "github_pr_cursor",
                "total_prs_processed",
                "current_phase",
                "rate_limit_context",
            ])
            .assemble()
    }

    /// The seed's Jira sync: complete restart with the old checkpoint kept for reference;
    /// phases `project_discovery`, `issues`, `dev_status`, `users`, `transformation`;
    /// [`CheckpointPolicy::jira`]; requires `last_sync_at` (an RFC 3339 time or null) and
    /// `extraction_phase`; `total_issues_processed` never decreases.
    pub fn jira() -> JobType {
        let validator = Validator::new()
            .require("last_sync_at")
            .require("extraction_phase")
            .typed::<JiraCheckpoint>()
            .monotonic("/total_issues_processed");
        JobType::builder("jira")
            .strategy(ResumeStrategy::FullRestart)
            .phases([
                "project_discovery",
                "issues",
                "dev_status",
                "users",
                "transformation",
            ])
            .checkpoint_policy(CheckpointPolicy::jira())
            .validator(validator)
            .essential_fields([
                "last_sync_at",
                "total_issues_processed",
                "current_project",
                "projects_completed",
                "extraction_phase",
                "error_context",
            ])
            .assemble()
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

    /// What the next run should do, with this job type's retry policy; see
    /// [`plan_recovery`].
    pub fn plan(&self, state: &JobState, jitter_seed: u64) -> RecoveryDecision {
        plan_recovery(state, &self.retry_policy, jitter_seed)
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

/// The shape of a GitHub checkpoint, as its typed rule checks it.
#[derive(Deserialize)]
#[expect(dead_code, reason = "only the shape is checked")]
struct GithubCheckpoint {
    repo_processing_queue: RepoQueue,
    last_repo_sync_checkpoint: Option<String>,
    #[serde(default)]
    total_prs_processed: Option<u64>,
}

/// The seed's queue format, or a [`WorkQueue`].
#[derive(Deserialize)]
#[serde(untagged)]
#[expect(dead_code, reason = "only the shape is checked")]
enum RepoQueue {
    Seed(Vec<SeedRepo>),
    Queue(WorkQueue),
}

#[derive(Deserialize)]
#[expect(dead_code, reason = "only the shape is checked")]
struct SeedRepo {
    name: String,
    finished: bool,
    #[serde(default)]
    last_cursor: Option<String>,
}

/// The shape of a Jira checkpoint, as its typed rule checks it.
#[derive(Deserialize)]
#[expect(dead_code, reason = "only the shape is checked")]
struct JiraCheckpoint {
    last_sync_at: Option<DateTime<Utc>>,
    extraction_phase: String,
    #[serde(default)]
    total_issues_processed: Option<u64>,
    #[serde(default)]
    projects_completed: Option<Vec<String>>,
}

/// `last_repo_sync_checkpoint`, when set, must name a repository of the queue.
fn last_repo_is_queued(data: &Value) -> std::result::Result<(), String> {
    let Some(Value::String(last)) = data.get("last_repo_sync_checkpoint") else {
        return Ok(());
    };
    let queued = data
        .get("repo_processing_queue")
        .and_then(Value::as_array)
        .is_some_and(|repos| {
            repos
                .iter()
                .any(|repo| repo.get("name").and_then(Value::as_str) == Some(last.as_str()))
        });
    if queued {
        Ok(())
    } else {
        Err(format!("{last:?} is not in repo_processing_queue"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::event::{ErrorContext, JobEvent, Trigger};
    use serde_json::json;

    fn github_data(total: u64) -> Value {
        json!({
            "repo_processing_queue": [
                {"name": "wexinc/repo1", "finished": true, "last_cursor": null},
                {"name": "wexinc/repo2", "finished": false, "last_cursor": "Y3Vyc29yOjE2NzM5NzI4MDA="}
            ],
            "last_repo_sync_checkpoint": "wexinc/repo2",
            "github_pr_cursor": "Y3Vyc29yOjE2NzM5NzI4MDA=",
            "total_prs_processed": total,
            "current_phase": "pr_extraction",
            "rate_limit_context": {"remaining_calls": 30, "reset_time": "2025-01-16T11:00:00Z"},
            "debug_trace": ["dropped by trim"]
        })
    }

    fn jira_data(total: u64) -> Value {
        json!({
            "last_sync_at": "2025-01-16T10:30:00Z",
            "total_issues_processed": total,
            "current_project": "PROJ-123",
            "projects_completed": ["PROJ-001", "PROJ-002"],
            "extraction_phase": "issues",
            "error_context": {
                "last_successful_operation": "project_extraction",
                "failure_point": "issue_processing",
                "recoverable": true
            }
        })
    }

    #[test]
    fn ready_made_job_types_pass_their_own_checks() {
        for job_type in [JobType::github(), JobType::jira()] {
            job_type.check().expect("valid");
        }
    }

    #[test]
    fn github_accepts_the_seed_checkpoint_and_resumes_precisely() {
        let github = JobType::github();
        assert_eq!(github.name(), "github");
        assert_eq!(github.strategy(), ResumeStrategy::CursorResume);
        assert_eq!(github.phases().len(), 5);
        assert_eq!(github.checkpoint_policy(), &CheckpointPolicy::github());
        let before = github_data(400);
        github
            .validate(
                "pr_extraction",
                &github_data(450),
                Some(("pr_extraction", &before)),
            )
            .expect("valid");
        let failure = github
            .validate(
                "pr_extraction",
                &github_data(300),
                Some(("pr_extraction", &before)),
            )
            .expect_err("went down");
        assert_eq!(failure.field, "total_prs_processed");
        assert_eq!(
            github.start_point(Some(4)),
            StartPoint::FromCheckpoint { seq: 4 }
        );
    }

    #[test]
    fn github_accepts_a_work_queue_as_its_repo_queue() {
        let mut queue = WorkQueue::new(["wexinc/repo1", "wexinc/repo2"]).expect("queue");
        queue.next_unit();
        let data = json!({
            "repo_processing_queue": queue,
            "last_repo_sync_checkpoint": "wexinc/repo1",
            "total_prs_processed": 0
        });
        JobType::github()
            .validate("pr_extraction", &data, None)
            .expect("valid");
    }

    #[test]
    fn github_rejects_malformed_checkpoints() {
        let github = JobType::github();
        let mut missing = github_data(1);
        missing
            .as_object_mut()
            .expect("object")
            .remove("last_repo_sync_checkpoint");
        let failure = github
            .validate("pr_extraction", &missing, None)
            .expect_err("missing");
        assert_eq!(failure.field, "last_repo_sync_checkpoint");

        let mut wrong_queue = github_data(1);
        wrong_queue["repo_processing_queue"] = json!("wexinc/repo1");
        let failure = github
            .validate("pr_extraction", &wrong_queue, None)
            .expect_err("bad type");
        assert_eq!(failure.field, crate::job::validation::WHOLE_DATA_FIELD);

        let mut unknown_repo = github_data(1);
        unknown_repo["last_repo_sync_checkpoint"] = json!("wexinc/elsewhere");
        let failure = github
            .validate("pr_extraction", &unknown_repo, None)
            .expect_err("unknown");
        assert_eq!(failure.field, "last_repo_sync_checkpoint");
        assert!(
            failure.rule.contains("not in repo_processing_queue"),
            "{}",
            failure.rule
        );

        let failure = github
            .validate("issues", &github_data(1), None)
            .expect_err("jira phase");
        assert_eq!(failure.field, "phase");
        let failure = github
            .validate(
                "pr_extraction",
                &github_data(1),
                Some(("review_extraction", &github_data(1))),
            )
            .expect_err("backwards");
        assert_eq!(failure.field, "phase");
    }

    #[test]
    fn jira_accepts_the_seed_checkpoint_and_restarts_fully() {
        let jira = JobType::jira();
        assert_eq!(jira.strategy(), ResumeStrategy::FullRestart);
        assert_eq!(
            jira.phases(),
            [
                "project_discovery",
                "issues",
                "dev_status",
                "users",
                "transformation"
            ]
        );
        jira.validate(
            "issues",
            &jira_data(1250),
            Some(("project_discovery", &jira_data(0))),
        )
        .expect("valid");
        let mut bad_time = jira_data(1);
        bad_time["last_sync_at"] = json!("yesterday");
        let failure = jira
            .validate("issues", &bad_time, None)
            .expect_err("bad time");
        assert!(failure.rule.contains("JiraCheckpoint"), "{}", failure.rule);
        let failure = jira
            .validate("issues", &jira_data(10), Some(("issues", &jira_data(1250))))
            .expect_err("went down");
        assert_eq!(failure.rule, "must never decrease (was 1250, now 10)");
        assert_eq!(
            jira.start_point(Some(4)),
            StartPoint::Restart { reference_seq: 4 }
        );
    }

    #[test]
    fn trim_keeps_the_essentials_and_the_trimmed_data_still_validates() {
        let github = JobType::github();
        let trimmed = github.trim(&github_data(5));
        assert!(trimmed.get("debug_trace").is_none());
        assert_eq!(trimmed["total_prs_processed"], 5);
        github
            .validate("pr_extraction", &trimmed, None)
            .expect("still valid");
        let jira = JobType::jira();
        jira.validate("issues", &jira.trim(&jira_data(5)), None)
            .expect("still valid");
        let untrimmed = JobType::builder("x").build().expect("valid");
        assert_eq!(untrimmed.trim(&github_data(5)), github_data(5));
        assert_eq!(untrimmed.essential_fields(), None);
    }

    #[test]
    fn plan_and_checkpointer_use_the_job_types_policies() {
        let github = JobType::github();
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
            github.plan(&state, 0),
            RecoveryDecision::Resume { checkpoint_seq: 2 }
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
            github.plan(&state, 0),
            RecoveryDecision::RetryWithBackoff { attempt: 1, .. }
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
            .checkpoint_policy(CheckpointPolicy::jira())
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
