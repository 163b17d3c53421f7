//! Ready-made job types for two common kinds of extraction, usable as they are or as models
//! for your own:
//!
//! - [`github_extractor`]: a GitHub-style sync that pages through each repository's pull
//!   requests behind opaque cursors, under a rate limit, and resumes at the exact cursor it
//!   reached ([`ResumeStrategy::CursorResume`]).
//! - [`jira_extractor`]: a Jira-style sync that walks projects and their issues and, after an
//!   interruption, starts over in full with the old checkpoint kept for reference
//!   ([`ResumeStrategy::FullRestart`]).
//!
//! Their checkpoint policies are available on their own too: [`github_checkpoint_policy`]
//! and [`jira_checkpoint_policy`].
//!
//! ```
//! # let dir = tempfile::tempdir()?;
//! use cairn::job::presets;
//! let store = cairn::Store::open(dir.path())?;
//! store.register("github_sync", presets::github_extractor())?;
//! store.register("jira_sync", presets::jira_extractor())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::job_type::JobType;
use super::policy::CheckpointPolicy;
use super::queue::WorkQueue;
use super::strategy::ResumeStrategy;
use super::validation::Validator;

/// A GitHub-style pull-request extractor, named `github`: precise cursor resume; phases
/// `repository_discovery`, `pr_extraction`, `commit_extraction`, `review_extraction`,
/// `pr_issue_linking`; [`github_checkpoint_policy`]; its checkpoints require
/// `repo_processing_queue` (a [`WorkQueue`], or a list of
/// `{"name", "finished", "last_cursor"}` objects) and `last_repo_sync_checkpoint` (null, or a
/// repository of the queue), and `total_prs_processed` never decreases. A checkpoint keeps
/// only `repo_processing_queue`, `last_repo_sync_checkpoint`, `github_pr_cursor`,
/// `total_prs_processed`, `current_phase` and `rate_limit_context`.
pub fn github_extractor() -> JobType {
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
        .checkpoint_policy(github_checkpoint_policy())
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

/// A Jira-style issue extractor, named `jira`: a complete restart after an interruption,
/// with the old checkpoint kept for reference; phases `project_discovery`, `issues`,
/// `dev_status`, `users`, `transformation`; [`jira_checkpoint_policy`]; its checkpoints
/// require `last_sync_at` (an RFC 3339 time or null) and `extraction_phase`, and
/// `total_issues_processed` never decreases. A checkpoint keeps only `last_sync_at`,
/// `total_issues_processed`, `current_project`, `projects_completed`, `extraction_phase` and
/// `error_context`.
pub fn jira_extractor() -> JobType {
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
        .checkpoint_policy(jira_checkpoint_policy())
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

/// The GitHub extractor's checkpoint policy: every 50 pull requests, every 3 minutes, after
/// each repository and phase, on API errors and when the rate limit is reached.
pub fn github_checkpoint_policy() -> CheckpointPolicy {
    CheckpointPolicy {
        every_items: Some(50),
        every: Some(Duration::from_secs(180)),
        at_unit_boundary: true,
        at_phase_boundary: true,
        on_error: true,
        on_rate_limit: true,
    }
}

/// The Jira extractor's checkpoint policy: every 100 issues, every 5 minutes, after each
/// project and phase, and when an error occurs.
pub fn jira_checkpoint_policy() -> CheckpointPolicy {
    CheckpointPolicy {
        every_items: Some(100),
        every: Some(Duration::from_secs(300)),
        at_unit_boundary: true,
        at_phase_boundary: true,
        on_error: true,
        on_rate_limit: false,
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

/// The repository queue: a list of repositories, or a [`WorkQueue`].
#[derive(Deserialize)]
#[serde(untagged)]
#[expect(dead_code, reason = "only the shape is checked")]
enum RepoQueue {
    List(Vec<QueuedRepo>),
    Queue(WorkQueue),
}

/// One repository of a queue given as a list.
#[derive(Deserialize)]
#[expect(dead_code, reason = "only the shape is checked")]
struct QueuedRepo {
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
    use crate::job::strategy::StartPoint;
    use crate::job::validation::WHOLE_DATA_FIELD;
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
        for job_type in [github_extractor(), jira_extractor()] {
            job_type.check().expect("valid");
        }
    }

    #[test]
    fn github_accepts_its_checkpoint_and_resumes_precisely() {
        let github = github_extractor();
        assert_eq!(github.name(), "github");
        assert_eq!(github.strategy(), ResumeStrategy::CursorResume);
        assert_eq!(github.phases().len(), 5);
        assert_eq!(github.checkpoint_policy(), &github_checkpoint_policy());
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
        github_extractor()
            .validate("pr_extraction", &data, None)
            .expect("valid");
    }

    #[test]
    fn github_rejects_malformed_checkpoints() {
        let github = github_extractor();
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
        assert_eq!(failure.field, WHOLE_DATA_FIELD);

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
    fn jira_accepts_its_checkpoint_and_restarts_fully() {
        let jira = jira_extractor();
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
        let github = github_extractor();
        let trimmed = github.trim(&github_data(5));
        assert!(trimmed.get("debug_trace").is_none());
        assert_eq!(trimmed["total_prs_processed"], 5);
        github
            .validate("pr_extraction", &trimmed, None)
            .expect("still valid");
        let jira = jira_extractor();
        jira.validate("issues", &jira.trim(&jira_data(5)), None)
            .expect("still valid");
        let untrimmed = JobType::builder("x").build().expect("valid");
        assert_eq!(untrimmed.trim(&github_data(5)), github_data(5));
        assert_eq!(untrimmed.essential_fields(), None);
    }

    #[test]
    fn checkpoint_policies_save_as_documented() {
        let jira = jira_checkpoint_policy();
        assert_eq!(
            (jira.every_items, jira.every),
            (Some(100), Some(Duration::from_secs(300)))
        );
        assert!(jira.at_unit_boundary && jira.at_phase_boundary && jira.on_error);
        assert!(!jira.on_rate_limit);
        let github = github_checkpoint_policy();
        assert_eq!(
            (github.every_items, github.every),
            (Some(50), Some(Duration::from_secs(180)))
        );
        assert!(github.at_unit_boundary && github.on_error && github.on_rate_limit);
        for policy in [jira, github] {
            policy.validate().expect("valid");
        }
    }
}
