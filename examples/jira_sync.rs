//! A Jira-style sync with cairn: after any interruption or failure the job restarts from
//! scratch, trading refetching for simplicity and consistency. The old
//! checkpoint is set aside with `clear_checkpoint`, kept for reference, and everything is
//! extracted again; idempotent upserts keep the warehouse free of duplicates.
//!
//! Three runs: the first crashes midway (simulated in the process: it stops dead without
//! recording an outcome), the second restarts and fails on an API error (it records the
//! failure), the third retries after a backoff, restarts again and finishes. Run it with
//! `cargo run --example jira_sync`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cairn::job::{StartPoint, idempotency_key, presets};
use cairn::{ErrorContext, RetryPolicy, RunPlan, Store, Trigger};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

const JOB: &str = "jira_sync";
const PAGE_SIZE: u64 = 50;

/// A tiny fake Jira: projects and their issue counts, and one request that fails once.
struct FakeJira {
    projects: Vec<(&'static str, u64)>,
    /// `(project, start_at)` of a request that fails once with HTTP 502.
    flaky: Cell<Option<(&'static str, u64)>>,
}

impl FakeJira {
    /// Issue keys of one page of a project, from `start_at`, and the project's total.
    fn issues(&self, project: &str, start_at: u64) -> Result<(Vec<String>, u64), String> {
        if let Some((flaky, at)) = self.flaky.get()
            && (flaky, at) == (project, start_at)
        {
            self.flaky.set(None);
            return Err(format!(
                "HTTP 502 Bad Gateway on {project} startAt={start_at}"
            ));
        }
        let total = self
            .projects
            .iter()
            .find(|(key, _)| *key == project)
            .expect("known")
            .1;
        let end = (start_at + PAGE_SIZE).min(total);
        Ok((
            (start_at + 1..=end)
                .map(|n| format!("{project}-{n}"))
                .collect(),
            total,
        ))
    }

    fn issue_count(&self) -> u64 {
        self.projects.iter().map(|(_, count)| count).sum()
    }
}

/// The checkpoint, in the format `presets::jira_extractor()` validates.
#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    last_sync_at: Option<DateTime<Utc>>,
    total_issues_processed: u64,
    current_project: Option<String>,
    projects_completed: Vec<String>,
    extraction_phase: String,
    error_context: Option<ErrorContext>,
}

/// The warehouse: one row per idempotency key, with how many times it was written.
type Warehouse = BTreeMap<String, u32>;

/// Opens the store as every process of the job does: register the job type, then the
/// deploy-time dry run of the migrations against every checkpoint kept.
fn open(dir: &Path) -> cairn::Result<Store> {
    let store = Store::open(dir)?;
    store.register(JOB, presets::jira_extractor())?;
    let check = store.check_migrations()?;
    assert!(
        check.is_ok(),
        "checkpoints the new code cannot read: {:?}",
        check.failures
    );
    Ok(store)
}

/// How this example retries: a few times, after milliseconds rather than seconds.
fn retry_policy() -> RetryPolicy {
    RetryPolicy::new(
        3,
        Duration::from_millis(10),
        Duration::from_millis(100),
        0.2,
    )
}

/// Plans the run and applies the job type's strategy: a full restart whenever there is a
/// checkpoint to continue from.
fn prepare(store: &Store) -> Result<(), Box<dyn std::error::Error>> {
    let checkpoint = match store.plan_with(JOB, &retry_policy())? {
        RunPlan::FreshStart | RunPlan::Normal => None,
        RunPlan::Resume { checkpoint } => Some(checkpoint),
        RunPlan::RetryWithBackoff {
            attempt,
            delay,
            checkpoint,
        } => {
            println!("retry {attempt} after {delay:.1?}");
            store.schedule_retry(JOB, attempt, delay)?;
            std::thread::sleep(delay);
            checkpoint
        }
        RunPlan::GiveUp { reason } => return Err(reason.into()),
        other => return Err(format!("unexpected plan {other:?}").into()),
    };
    let job_type = store.job_type(JOB).expect("registered");
    match job_type.start_point(checkpoint.as_ref().map(|c| c.seq)) {
        StartPoint::Restart { reference_seq } => {
            let reference = store
                .clear_checkpoint(JOB, "full restart")?
                .expect("a checkpoint");
            println!(
                "full restart; checkpoint {reference_seq} kept for reference ({} issues, phase {})",
                reference.data["total_issues_processed"], reference.phase
            );
        }
        _ => println!("fresh start"),
    }
    Ok(())
}

/// One run of the sync. With `crash_after_pages`, it stops dead after that many pages.
/// Returns false when the run failed (and recorded it).
fn run(
    store: &Store,
    api: &FakeJira,
    warehouse: &mut Warehouse,
    crash_after_pages: Option<usize>,
) -> Result<bool, Box<dyn std::error::Error>> {
    prepare(store)?;
    store.start_run(JOB)?;
    let mut checkpointer = presets::jira_extractor().checkpointer(Instant::now());
    let mut progress = Progress {
        last_sync_at: Some(Utc::now()),
        total_issues_processed: 0,
        current_project: None,
        projects_completed: Vec::new(),
        extraction_phase: "project_discovery".into(),
        error_context: None,
    };
    store.save_with(JOB, "project_discovery", &progress, Trigger::PhaseCompleted)?;
    progress.extraction_phase = "issues".into();
    let mut pages = 0;
    for &(project, _) in &api.projects {
        progress.current_project = Some(project.into());
        let mut start_at = 0;
        loop {
            if crash_after_pages == Some(pages) {
                println!("  crash after {pages} pages");
                return Ok(false);
            }
            let (keys, total) = match api.issues(project, start_at) {
                Ok(page) => page,
                Err(error) => {
                    let failure_point = format!("{project} startAt={start_at}");
                    fail(store, &mut progress, &error, failure_point)?;
                    return Ok(false);
                }
            };
            for key in &keys {
                *warehouse
                    .entry(idempotency_key(JOB, project, key))
                    .or_default() += 1;
            }
            pages += 1;
            start_at += keys.len() as u64;
            progress.total_issues_processed += keys.len() as u64;
            let due = checkpointer.items(keys.len() as u64, Instant::now());
            let finished = start_at >= total;
            if finished {
                progress.projects_completed.push(project.into());
            }
            let trigger = if finished {
                checkpointer.unit_finished().or(due)
            } else {
                due
            };
            if let Some(trigger) = trigger {
                store.save_with(JOB, "issues", &progress, trigger)?;
                checkpointer.saved(Instant::now());
            }
            if finished {
                break;
            }
        }
    }
    progress.current_project = None;
    store.save_with(JOB, "issues", &progress, Trigger::PhaseCompleted)?;
    store.succeed_run(JOB)?;
    println!("  done: {} issues", progress.total_issues_processed);
    Ok(true)
}

/// Records a failed run: a checkpoint with the error context first (saved with the
/// `ApiError` trigger), then the failure, which plans a retry with backoff.
fn fail(
    store: &Store,
    progress: &mut Progress,
    error: &str,
    failure_point: String,
) -> cairn::Result<()> {
    let context = ErrorContext::recoverable()
        .last_successful_operation("issue_page")
        .failure_point(failure_point);
    progress.error_context = Some(context.clone());
    store.save_with(JOB, "issues", progress, Trigger::ApiError)?;
    store.fail_run(JOB, error, context)?;
    println!("  failed: {error}");
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let api = FakeJira {
        projects: vec![("CORE", 120), ("OPS", 70), ("DATA", 40)],
        flaky: Cell::new(Some(("OPS", 50))),
    };
    let mut warehouse = Warehouse::new();

    // The first process crashes midway: the store is dropped with the run still "running".
    let store = open(dir.path())?;
    assert!(!run(&store, &api, &mut warehouse, Some(3))?);
    drop(store);

    // The next process restarts, fails on an API error, and the one after retries.
    let store = open(dir.path())?;
    assert!(!run(&store, &api, &mut warehouse, None)?);
    drop(store);
    let store = open(dir.path())?;
    assert!(run(&store, &api, &mut warehouse, None)?);

    // Recovery validation: every issue once in the warehouse (the restarts wrote most of
    // them again: upserts), the last extraction counted them all, and the job succeeded.
    let expected = api.issue_count();
    let redelivered: u32 = warehouse.values().map(|writes| writes - 1).sum();
    let latest = store.latest(JOB)?.expect("saved");
    assert_eq!(warehouse.len() as u64, expected, "an issue is missing");
    assert_eq!(
        latest.data["total_issues_processed"].as_u64(),
        Some(expected)
    );
    let state = store.job(JOB).expect("known");
    assert_eq!(state.status, cairn::JobStatus::Succeeded);
    assert!(
        state.cleared_checkpoint.is_some(),
        "the reference checkpoint is remembered"
    );
    println!(
        "ok: {expected} issues in the warehouse, each exactly once ({redelivered} rewritten by \
         the restarts); {} runs, {} checkpoints",
        state.runs_started, state.checkpoints_saved
    );
    Ok(())
}
