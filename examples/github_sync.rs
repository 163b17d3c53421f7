//! A GitHub-style sync with cairn: pull requests paged through with opaque cursors, progress
//! kept in a `WorkQueue` inside the checkpoint, and a precise resume after a crash: finished
//! repositories are skipped and the one in flight continues from its cursor.
//!
//! The crash is simulated in the process: the first run stops dead after a few pages, without
//! recording an outcome, which is what a killed process leaves behind. (`cairn demo` does the
//! same with real `kill -9`s.) Run it with `cargo run --example github_sync`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use cairn::job::{WorkQueue, idempotency_key, presets};
use cairn::{RunPlan, Store, Trigger};
use serde::{Deserialize, Serialize};

const JOB: &str = "github_sync";
const PAGE_SIZE: usize = 20;

/// A tiny fake GitHub: repositories and the numbers of their pull requests.
struct FakeGithub {
    repos: Vec<(&'static str, Vec<u64>)>,
}

impl FakeGithub {
    fn new() -> FakeGithub {
        FakeGithub {
            repos: vec![
                ("acme/api", (1..=45).collect()),
                ("acme/web", (100..130).collect()),
                ("acme/cli", (7..19).collect()),
            ],
        }
    }

    fn repositories(&self) -> Vec<String> {
        self.repos
            .iter()
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// A page of pull request numbers from `cursor`, and the cursor of the next page.
    fn pull_requests(&self, repo: &str, cursor: Option<&str>) -> (Vec<u64>, Option<String>) {
        let numbers = &self
            .repos
            .iter()
            .find(|(name, _)| *name == repo)
            .expect("known")
            .1;
        // The cursor is opaque to the client; here it hides an offset.
        let start: usize =
            cursor.map_or(0, |c| c.trim_start_matches("after:").parse().expect("ours"));
        let end = (start + PAGE_SIZE).min(numbers.len());
        let next = (end < numbers.len()).then(|| format!("after:{end}"));
        (numbers[start..end].to_vec(), next)
    }

    fn pull_request_count(&self) -> usize {
        self.repos.iter().map(|(_, numbers)| numbers.len()).sum()
    }
}

/// The warehouse: one row per idempotency key, with how many times it was written.
#[derive(Default)]
struct Warehouse {
    rows: BTreeMap<String, u32>,
}

impl Warehouse {
    /// An upsert: writing a row again overwrites it.
    fn upsert(&mut self, key: String) {
        *self.rows.entry(key).or_default() += 1;
    }
}

/// The checkpoint, in the format `presets::github_extractor()` validates.
#[derive(Debug, Serialize, Deserialize)]
struct Progress {
    repo_processing_queue: WorkQueue,
    last_repo_sync_checkpoint: Option<String>,
    github_pr_cursor: Option<String>,
    total_prs_processed: u64,
}

/// Opens the store as every process of the job does: register the job type, then the
/// deploy-time dry run of the migrations against every checkpoint kept.
fn open(dir: &Path) -> cairn::Result<Store> {
    let store = Store::open(dir)?;
    store.register(JOB, presets::github_extractor())?;
    let check = store.check_migrations()?;
    assert!(
        check.is_ok(),
        "checkpoints the new code cannot read: {:?}",
        check.failures
    );
    println!(
        "open: {} checkpoint(s) pass the migration dry run",
        check.checked
    );
    Ok(store)
}

/// Where this run starts: the checkpoint's exact position after a crash, else a new queue of
/// every repository.
fn start(store: &Store, api: &FakeGithub) -> cairn::Result<Progress> {
    match store.plan(JOB)? {
        RunPlan::Resume { checkpoint } => {
            let progress: Progress = checkpoint.data_as()?;
            let queue = &progress.repo_processing_queue;
            let position = match queue.in_flight() {
                Some(unit) => format!("{} at cursor {:?}", unit.name, unit.cursor),
                None => "the next repository".to_owned(),
            };
            println!(
                "resume from checkpoint {}: {} PRs done, {} of {} repositories finished, \
                 continuing with {position}",
                checkpoint.seq,
                progress.total_prs_processed,
                queue.done().count(),
                queue.len()
            );
            Ok(progress)
        }
        RunPlan::FreshStart | RunPlan::Normal => {
            println!("fresh start");
            let progress = Progress {
                repo_processing_queue: WorkQueue::new(api.repositories()).expect("unique names"),
                last_repo_sync_checkpoint: None,
                github_pr_cursor: None,
                total_prs_processed: 0,
            };
            store.save_with(
                JOB,
                "repository_discovery",
                &progress,
                Trigger::PhaseCompleted,
            )?;
            Ok(progress)
        }
        other => panic!("nothing in this example fails: {other:?}"),
    }
}

/// One run of the sync. With `crash_after_pages`, it stops dead after that many pages.
/// Returns the processed count it started from.
fn run(
    store: &Store,
    api: &FakeGithub,
    warehouse: &mut Warehouse,
    crash_after_pages: Option<usize>,
) -> cairn::Result<u64> {
    let mut progress = start(store, api)?;
    let started_from = progress.total_prs_processed;
    store.start_run(JOB)?;
    let mut checkpointer = presets::github_extractor().checkpointer(Instant::now());
    let mut pages = 0;
    while let Some(unit) = progress.repo_processing_queue.next_unit() {
        let (repo, mut cursor) = (unit.name.clone(), unit.cursor.clone());
        progress.last_repo_sync_checkpoint = Some(repo.clone());
        loop {
            if crash_after_pages == Some(pages) {
                println!(
                    "  crash after {pages} pages, {} PRs written",
                    warehouse.rows.len()
                );
                return Ok(started_from);
            }
            let (numbers, next) = api.pull_requests(&repo, cursor.as_deref());
            // The warehouse first, then the checkpoint that covers the page: a crash between
            // the two writes the page again (harmless: upserts), never loses it.
            for number in &numbers {
                warehouse.upsert(idempotency_key(JOB, &repo, &number.to_string()));
            }
            pages += 1;
            let count = numbers.len() as u64;
            progress
                .repo_processing_queue
                .advance(&repo, next.clone(), count)
                .expect("the unit in flight");
            progress.total_prs_processed += count;
            progress.github_pr_cursor = next.clone();
            let due = checkpointer.items(count, Instant::now());
            let trigger = match &next {
                Some(_) => due,
                None => {
                    progress
                        .repo_processing_queue
                        .finish(&repo)
                        .expect("the unit in flight");
                    checkpointer.unit_finished().or(due)
                }
            };
            if let Some(trigger) = trigger {
                store.save_with(JOB, "pr_extraction", &progress, trigger)?;
                checkpointer.saved(Instant::now());
            }
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    store.save_with(JOB, "pr_extraction", &progress, Trigger::PhaseCompleted)?;
    store.succeed_run(JOB)?;
    println!("  done: {} PRs", progress.total_prs_processed);
    Ok(started_from)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let api = FakeGithub::new();
    let mut warehouse = Warehouse::default();

    // The first process crashes midway: the store is dropped with the run still "running".
    let store = open(dir.path())?;
    run(&store, &api, &mut warehouse, Some(4))?;
    let before_crash = store.latest(JOB)?.expect("saved");
    drop(store);

    // The next process resumes from the exact position.
    let store = open(dir.path())?;
    let resumed_from = run(&store, &api, &mut warehouse, None)?;

    // Recovery validation: the resumed run started from the last checkpoint's count, and every
    // pull request is in the warehouse exactly once (some were written twice: redelivered).
    let expected = api.pull_request_count();
    let redelivered: u32 = warehouse.rows.values().map(|writes| writes - 1).sum();
    let latest = store.latest(JOB)?.expect("saved");
    let progress: Progress = latest.data_as()?;
    assert_eq!(
        resumed_from,
        before_crash.data["total_prs_processed"]
            .as_u64()
            .expect("count")
    );
    assert_eq!(warehouse.rows.len(), expected, "a pull request is missing");
    assert_eq!(progress.total_prs_processed, expected as u64);
    let counts: Vec<u64> = store
        .history(JOB)?
        .iter()
        .filter_map(|c| c.data["total_prs_processed"].as_u64())
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "the count went down: {counts:?}"
    );
    assert_eq!(
        store.job(JOB).map(|s| s.status),
        Some(cairn::JobStatus::Succeeded)
    );
    println!(
        "ok: {expected} PRs in the warehouse, each exactly once ({redelivered} written twice \
         after the crash); {} checkpoints, counts never went down",
        counts.len()
    );
    Ok(())
}
