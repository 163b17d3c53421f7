//! Job semantics through the Store, each test on the real file system and on the simulated
//! disk: events folded into a `JobState` that a replay rebuilds exactly, recovery planning,
//! full restarts, validation, migrations, compression, essential fields and metrics.

mod common;

use std::time::Duration;

use cairn::job::{Migrations, Validator};
use cairn::{Error, ErrorContext, JobStatus, JobType, Options, RetryPolicy, RunPlan, Trigger};
use serde_json::{Value, json};

use common::disk::Disk;

on_both_disks!(
    replay_rebuilds_the_state_the_live_process_had,
    planning_follows_the_decision_table,
    the_retry_budget_runs_out,
    a_full_restart_keeps_the_old_checkpoint_for_reference,
    validation_refuses_bad_checkpoints_writes_nothing_and_counts_them,
    old_checkpoints_are_migrated_on_read_and_newer_ones_refused,
    large_checkpoints_are_compressed_and_the_limit_applies_to_what_is_stored,
    metrics_count_what_happened,
    a_new_run_after_a_success_starts_over,
);

fn github_checkpoint(processed: u64, cursor: &str) -> Value {
    json!({
        "repo_processing_queue": [
            {"name": "acme/api", "finished": true, "last_cursor": null},
            {"name": "acme/web", "finished": false, "last_cursor": cursor},
        ],
        "last_repo_sync_checkpoint": "acme/web",
        "github_pr_cursor": cursor,
        "total_prs_processed": processed,
        "current_phase": "pr_extraction",
        "scratch": "dropped by the essential fields",
    })
}

fn policy() -> RetryPolicy {
    RetryPolicy::default()
}

fn replay_rebuilds_the_state_the_live_process_had(disk: Disk) {
    let live = {
        let store = disk.open().unwrap();
        assert_eq!(store.start_run("github_sync").unwrap(), 1);
        store
            .save_with(
                "github_sync",
                "pr_extraction",
                &json!({"n": 1}),
                Trigger::BatchCompleted,
            )
            .unwrap();
        store
            .save_with(
                "github_sync",
                "pr_extraction",
                &json!({"n": 2}),
                Trigger::RateLimitReached,
            )
            .unwrap();
        let context = ErrorContext::recoverable()
            .last_successful_operation("pr page 2")
            .failure_point("pr page 3");
        store
            .fail_run("github_sync", "HTTP 502 from the API", context)
            .unwrap();
        store
            .schedule_retry("github_sync", 2, Duration::from_secs(2))
            .unwrap();
        store.job("github_sync").unwrap()
    };
    assert_eq!(live.status, JobStatus::Failed);
    assert_eq!(live.retry_count, 1);
    assert_eq!(
        live.latest_checkpoint.as_ref().map(|c| c.trigger),
        Some(Trigger::RateLimitReached)
    );
    let store = disk.open().unwrap();
    assert_eq!(
        store.job("github_sync").unwrap(),
        live,
        "replay must give the live state"
    );
    let latest = store.latest("github_sync").unwrap().unwrap();
    assert_eq!(latest.trigger, Some(Trigger::RateLimitReached));
}

fn planning_follows_the_decision_table(disk: Disk) {
    let store = disk.open().unwrap();
    // Never seen, or no checkpoint: a fresh start.
    assert_eq!(
        store.plan_with("jira_sync", &policy()).unwrap(),
        RunPlan::FreshStart
    );
    store.start_run("jira_sync").unwrap();
    assert_eq!(
        store.plan_with("jira_sync", &policy()).unwrap(),
        RunPlan::FreshStart
    );
    // Running with a checkpoint and no outcome (the process died): resume from it.
    let seq = store
        .save("jira_sync", "issues", &json!({"n": 100}))
        .unwrap();
    match store.plan_with("jira_sync", &policy()).unwrap() {
        RunPlan::Resume { checkpoint } => assert_eq!(checkpoint.seq, seq),
        other => panic!("expected Resume, got {other:?}"),
    }
    // A recoverable failure: retry with backoff, from the checkpoint.
    store
        .fail_run("jira_sync", "timeout", ErrorContext::recoverable())
        .unwrap();
    match store.plan_with("jira_sync", &policy()).unwrap() {
        RunPlan::RetryWithBackoff {
            attempt,
            delay,
            checkpoint,
        } => {
            assert_eq!(attempt, 1);
            assert!(delay <= policy().max_delay);
            assert_eq!(checkpoint.map(|c| c.seq), Some(seq));
        }
        other => panic!("expected RetryWithBackoff, got {other:?}"),
    }
    // A clean finish: a normal run next time.
    assert_eq!(store.start_run("jira_sync").unwrap(), 2);
    store.succeed_run("jira_sync").unwrap();
    assert_eq!(
        store.plan_with("jira_sync", &policy()).unwrap(),
        RunPlan::Normal
    );
    // A failure that cannot be recovered: give up, with the reason; the job stays inspectable.
    store.start_run("jira_sync").unwrap();
    store
        .fail_run(
            "jira_sync",
            "credentials revoked",
            ErrorContext::unrecoverable(),
        )
        .unwrap();
    match store.plan_with("jira_sync", &policy()).unwrap() {
        RunPlan::GiveUp { reason } => {
            assert!(reason.contains("credentials revoked"), "{reason}")
        }
        other => panic!("expected GiveUp, got {other:?}"),
    }
    assert_eq!(
        store.job("jira_sync").unwrap().last_error.unwrap().message,
        "credentials revoked"
    );
}

fn the_retry_budget_runs_out(disk: Disk) {
    let store = disk.open().unwrap();
    let policy = RetryPolicy::new(2, Duration::from_millis(10), Duration::from_secs(1), 0.2);
    store.save("job", "p", &json!({})).unwrap();
    let mut delays = Vec::new();
    for _ in 0..3 {
        store.start_run("job").unwrap();
        store
            .fail_run("job", "flaky", ErrorContext::recoverable())
            .unwrap();
        match store.plan_with("job", &policy).unwrap() {
            RunPlan::RetryWithBackoff { delay, .. } => delays.push(delay),
            RunPlan::GiveUp { reason } => {
                assert!(reason.contains("3"), "{reason}");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(delays.len(), 2, "two retries, then give up");
}

fn a_full_restart_keeps_the_old_checkpoint_for_reference(disk: Disk) {
    let store = disk.open().unwrap();
    store
        .register("jira_sync", cairn::job::presets::jira_extractor())
        .unwrap();
    let old = json!({"last_sync_at": "2025-01-16T10:30:00Z", "extraction_phase": "issues", "total_issues_processed": 1250});
    let seq = store.save("jira_sync", "dev_status", &old).unwrap();
    let reference = store
        .clear_checkpoint("jira_sync", "full restart")
        .unwrap()
        .unwrap();
    assert_eq!(reference.seq, seq);
    let state = store.job("jira_sync").unwrap();
    assert_eq!(state.latest_checkpoint, None);
    assert_eq!(state.cleared_checkpoint.map(|c| c.seq), Some(seq));
    assert_eq!(
        store.plan_with("jira_sync", &policy()).unwrap(),
        RunPlan::FreshStart
    );
    // After a restart the phase may go back and counts start over.
    let fresh =
        json!({"last_sync_at": null, "extraction_phase": "issues", "total_issues_processed": 0});
    store
        .save("jira_sync", "project_discovery", &fresh)
        .expect("a restart may go back");
    assert_eq!(
        store.history("jira_sync").unwrap().len(),
        2,
        "the old checkpoint stays in the log"
    );
}

fn validation_refuses_bad_checkpoints_writes_nothing_and_counts_them(disk: Disk) {
    let store = disk.open().unwrap();
    store
        .register("github_sync", cairn::job::presets::github_extractor())
        .unwrap();
    store
        .save("github_sync", "pr_extraction", &github_checkpoint(50, "c1"))
        .unwrap();
    let before = store.last_seq();
    let refuse =
        |phase: &str, data: Value, field: &str| match store.save("github_sync", phase, &data) {
            Err(Error::Validation { field: f, rule, .. }) => assert_eq!(f, field, "{rule}"),
            other => panic!("expected a validation error on {field}, got {other:?}"),
        };
    let mut missing = github_checkpoint(60, "c2");
    missing
        .as_object_mut()
        .unwrap()
        .remove("repo_processing_queue");
    refuse("pr_extraction", missing, "repo_processing_queue");
    refuse(
        "pr_extraction",
        github_checkpoint(40, "c2"),
        "total_prs_processed",
    );
    refuse("repository_discovery", github_checkpoint(60, "c2"), "phase");
    refuse("no_such_phase", github_checkpoint(60, "c2"), "phase");
    assert_eq!(store.last_seq(), before, "nothing written");
    assert_eq!(store.metrics().validation_failures, 4);
    store
        .save(
            "github_sync",
            "commit_extraction",
            &github_checkpoint(60, "c2"),
        )
        .unwrap();
    // Only the essential fields were kept.
    let latest = store.latest("github_sync").unwrap().unwrap();
    assert!(latest.data.get("scratch").is_none(), "{}", latest.data);
    assert_eq!(latest.data["total_prs_processed"], 60);
}

fn versioned(current: u32) -> JobType {
    let migrations = Migrations::new(current)
        .register(1, |mut v| {
            v["count"] = v["n"].take();
            Ok(v)
        })
        .register(2, |mut v| {
            let count = v["count"].as_u64().ok_or("count is not a number")?;
            v["count"] = json!({"value": count});
            Ok(v)
        });
    JobType::builder("versioned")
        .migrations(migrations)
        .validator(Validator::new())
        .build()
        .unwrap()
}

fn old_checkpoints_are_migrated_on_read_and_newer_ones_refused(disk: Disk) {
    {
        let store = disk.open().unwrap();
        store.register("job", versioned(1)).unwrap();
        store.save("job", "p", &json!({"n": 7})).unwrap();
        store.save("bad", "p", &json!({"n": "seven"})).unwrap();
    }
    let store = disk.open().unwrap();
    store.register("job", versioned(3)).unwrap();
    store.register("bad", versioned(3)).unwrap();
    let latest = store.latest("job").unwrap().unwrap();
    assert_eq!(
        (latest.version, &latest.data),
        (3, &json!({"n": null, "count": {"value": 7}}))
    );
    // The deploy-time dry run names the checkpoint that the new code could not read.
    let check = store.check_migrations().unwrap();
    assert_eq!(check.checked, 2);
    assert_eq!(check.failures.len(), 1, "{check:?}");
    assert_eq!(check.failures[0].job, "bad");
    assert!(
        check.failures[0].error.contains("count is not a number"),
        "{check:?}"
    );
    // Data written by v3 code is refused by v1 code, never misread.
    store
        .save("job", "p", &json!({"count": {"value": 8}}))
        .unwrap();
    drop(store);
    let store = disk.open().unwrap();
    store.register("job", versioned(1)).unwrap();
    match store.latest("job") {
        Err(Error::UnsupportedCheckpointVersion {
            found: 3,
            supported: 1,
            ..
        }) => {}
        other => panic!("expected UnsupportedCheckpointVersion, got {other:?}"),
    }
}

fn large_checkpoints_are_compressed_and_the_limit_applies_to_what_is_stored(disk: Disk) {
    let options = Options::default()
        .compress_above(1024)
        .max_payload(64 * 1024);
    let store = disk.open_with(options.clone()).unwrap();
    let queue: Vec<Value> = (0..5000)
        .map(|i| json!({"name": format!("acme/repo{i}"), "finished": i < 2500}))
        .collect();
    let data = json!({"repo_processing_queue": queue});
    assert!(
        serde_json::to_vec(&data).unwrap().len() > 64 * 1024,
        "over the limit uncompressed"
    );
    store
        .save("github_sync", "pr_extraction", &data)
        .expect("fits once compressed");
    assert_eq!(store.metrics().compressed_saves, 1);
    drop(store);
    let store = disk.open_with(options).unwrap();
    assert_eq!(store.latest("github_sync").unwrap().unwrap().data, data);
    assert!(disk.verify().unwrap().is_clean());
}

fn metrics_count_what_happened(disk: Disk) {
    let store = disk.open().unwrap();
    store.start_run("a").unwrap();
    store.save("a", "p", &1).unwrap();
    store.save("b", "p", &2).unwrap();
    let metrics = store.metrics();
    assert_eq!(
        (
            metrics.checkpoints_saved,
            metrics.events_recorded,
            metrics.jobs
        ),
        (2, 1, 2)
    );
    assert_eq!(metrics.last_seq, 3);
    assert_eq!(metrics.segments, 1);
    assert_eq!(metrics.storage_bytes, 64 * 1024 * 1024);
    assert!(metrics.is_healthy());
    assert_eq!(
        store
            .jobs()
            .unwrap()
            .iter()
            .map(|j| j.status)
            .collect::<Vec<_>>(),
        [JobStatus::Running, JobStatus::Running]
    );
}

fn a_new_run_after_a_success_starts_over(disk: Disk) {
    let store = disk.open().unwrap();
    store
        .register("github_sync", cairn::job::presets::github_extractor())
        .unwrap();
    store.start_run("github_sync").unwrap();
    store
        .save(
            "github_sync",
            "pr_issue_linking",
            &github_checkpoint(500, "c9"),
        )
        .unwrap();
    store.succeed_run("github_sync").unwrap();
    assert_eq!(store.plan("github_sync").unwrap(), RunPlan::Normal);
    // The next sync begins again at the first phase with its counts at zero.
    store.start_run("github_sync").unwrap();
    store
        .save(
            "github_sync",
            "repository_discovery",
            &github_checkpoint(0, "c0"),
        )
        .expect("a finished run's checkpoint does not constrain the next run");
    // Within the new run the rules apply again.
    let err = store
        .save("github_sync", "pr_extraction", &json!({}))
        .expect_err("required fields");
    assert!(matches!(err, Error::Validation { .. }), "{err}");
}
