//! The extractor: the child process that `cairn demo` starts and kills. Each run opens the
//! store, registers the two job types, asks [`cairn::Store::plan_with`] what to do for each
//! job and does it, writing every record to the sink before saving the checkpoint that covers
//! it. It reports what it does on stdout (see [`super::protocol`]).
//!
//! - `github_sync` resumes precisely: the checkpoint holds the repository queue (a
//!   [`WorkQueue`]: finished repositories, the one in flight and its cursor) and the count.
//! - `jira_sync` restarts: the checkpoint is set aside with `clear_checkpoint` (kept for
//!   reference) and every issue is extracted again; the sink's upserts absorb the repeats.

use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn::job::{Checkpointer, StartPoint, WorkQueue, idempotency_key, presets};
use cairn::{Checkpoint, ErrorContext, RetryPolicy, RunPlan, Store, Trigger};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::protocol::{DemoJob, Line};
use super::sink::{Sink, SinkRecord};
use super::source::{Api, ApiError, Source};

/// Exit status of a run that failed and recorded it with `fail_run` (a retry will follow).
pub const FAILED_RUN_STATUS: u8 = 3;

/// What one extractor run is told.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub seed: u64,
    pub scale: u32,
    /// The run's number, recorded in the sink's rows.
    pub run: u32,
    /// Fail this request (1-based, counted over the run) with an HTTP 502.
    pub fail_at_request: Option<u64>,
    pub sink: PathBuf,
}

/// The retry policy, scaled down from the default's seconds to milliseconds for the demo.
pub fn retry_policy() -> RetryPolicy {
    RetryPolicy::new(
        5,
        Duration::from_millis(20),
        Duration::from_millis(200),
        0.2,
    )
}

/// Runs the extractor on the store in `store_dir`.
pub fn run(
    store_dir: &std::path::Path,
    options: cairn::Options,
    config: &WorkerConfig,
) -> anyhow::Result<ExitCode> {
    let began = Instant::now();
    let store = Store::open_with(store_dir, options)?;
    let open_us = micros(began.elapsed());
    store.register(DemoJob::Github.name(), presets::github_extractor())?;
    store.register(DemoJob::Jira.name(), presets::jira_extractor())?;
    let mut out = Out {
        stdout: io::stdout(),
        gate: Some(io::stdin().lock()),
    };
    let report = store.recovery_report();
    out.emit(&Line::Open {
        open_us,
        recovery_us: micros(report.duration),
        findings: report.findings.len() as u64,
        discarded_bytes: report.bytes_discarded,
    })?;
    let source = Source::new(config.seed, config.scale);
    let mut extractor = Extractor {
        store: &store,
        api: Api::new(&source, config.fail_at_request),
        sink: Sink::open(&config.sink)?,
        out,
        run: config.run,
        open_us,
        last_operation: None,
    };
    for job in DemoJob::ALL {
        let Some(start) = extractor.prepare(job)? else {
            continue;
        };
        let outcome = match job {
            DemoJob::Github => extract_github(&mut extractor, start)?,
            DemoJob::Jira => extract_jira(&mut extractor, start)?,
        };
        if outcome == Outcome::Failed {
            return Ok(ExitCode::from(FAILED_RUN_STATUS));
        }
    }
    store.close()?;
    Ok(ExitCode::SUCCESS)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Where a job's run starts, once the plan and the job type's strategy are applied.
enum Start {
    Fresh,
    Resume(Checkpoint),
    Restart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    /// The run failed and recorded it; the process should exit.
    Failed,
}

/// Checkpoint data of a job: serializable, with a phase and a processed count, and a place
/// for the rate-limit and error contexts.
trait Progress: Serialize {
    fn phase(&self) -> &str;
    fn processed(&self) -> u64;
    fn note_rate_limit(&mut self, _reset_time: DateTime<Utc>) {}
    fn clear_rate_limit(&mut self) {}
    fn note_error(&mut self, _context: &ErrorContext) {}
}

/// Stdout, one flushed line per event, and stdin, where the demo says when to go on.
struct Out {
    stdout: io::Stdout,
    /// After each page the extractor waits for a line here, so that it can never run ahead
    /// of a demo that means to kill it (on a RAM disk it would otherwise finish first). At
    /// the end of stdin it stops waiting.
    gate: Option<io::StdinLock<'static>>,
}

impl Out {
    fn emit(&mut self, line: &Line) -> anyhow::Result<()> {
        let mut out = self.stdout.lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .context("could not report to the demo")
    }

    /// Waits for the demo's go-ahead.
    fn wait(&mut self) {
        if let Some(gate) = &mut self.gate {
            let mut line = String::new();
            if !matches!(gate.read_line(&mut line), Ok(n) if n > 0) {
                self.gate = None;
            }
        }
    }
}

struct Extractor<'a> {
    store: &'a Store,
    api: Api<'a>,
    sink: Sink,
    out: Out,
    run: u32,
    open_us: u64,
    /// The last API operation that succeeded, for error contexts.
    last_operation: Option<&'static str>,
}

impl Extractor<'_> {
    /// Plans the job's run and applies the plan: `None` when the job has nothing to do.
    fn prepare(&mut self, job: DemoJob) -> anyhow::Result<Option<Start>> {
        let began = Instant::now();
        let name = job.name();
        let mut waited = Duration::ZERO;
        let plan = self.store.plan_with(name, &retry_policy())?;
        let decision = plan.name();
        let checkpoint = match plan {
            RunPlan::FreshStart => None,
            RunPlan::Resume { checkpoint } => Some(checkpoint),
            RunPlan::RetryWithBackoff {
                attempt,
                delay,
                checkpoint,
            } => {
                self.store.schedule_retry(name, attempt, delay)?;
                std::thread::sleep(delay);
                waited = delay;
                checkpoint
            }
            RunPlan::Normal => {
                // Only after a success: this job finished in an earlier run of this demo.
                self.out.emit(&Line::Skipped { job })?;
                return Ok(None);
            }
            RunPlan::GiveUp { reason } => bail!("{name}: the store says to give up: {reason}"),
            other => bail!("{name}: unexpected run plan {other:?}"),
        };
        let job_type = self
            .store
            .job_type(name)
            .with_context(|| format!("{name} has no job type registered"))?;
        let start = match (
            job_type.start_point(checkpoint.as_ref().map(|c| c.seq)),
            checkpoint,
        ) {
            (StartPoint::Fresh, _) => Start::Fresh,
            (StartPoint::FromCheckpoint { .. }, Some(checkpoint)) => Start::Resume(checkpoint),
            (StartPoint::Restart { reference_seq }, _) => {
                // The Jira way: set the checkpoint aside (it stays in the log for reference)
                // and extract everything again; the sink's upserts make that harmless.
                self.store
                    .clear_checkpoint(name, "full restart: the previous run did not finish")?;
                self.out.emit(&Line::Restart { job, reference_seq })?;
                Start::Restart
            }
            (point, _) => bail!("{name}: unexpected start point {point:?}"),
        };
        let attempt = self.store.start_run(name)?;
        let from_seq = match &start {
            Start::Resume(checkpoint) => Some(checkpoint.seq),
            Start::Fresh | Start::Restart => None,
        };
        self.out.emit(&Line::Ready {
            job,
            decision: decision.into(),
            attempt,
            from_seq,
            recover_us: self.open_us + micros(began.elapsed().saturating_sub(waited)),
        })?;
        Ok(Some(start))
    }

    /// Saves a checkpoint of `job` and reports it once durable.
    fn save(
        &mut self,
        job: DemoJob,
        checkpointer: &mut Checkpointer,
        progress: &impl Progress,
        trigger: Trigger,
    ) -> anyhow::Result<()> {
        let seq = self
            .store
            .save_with(job.name(), progress.phase(), progress, trigger)?;
        checkpointer.saved(Instant::now());
        self.out.emit(&Line::Saved {
            job,
            seq,
            processed: progress.processed(),
            trigger: trigger.name().into(),
        })
    }

    /// Saves a checkpoint if `trigger` says one is due.
    fn save_if(
        &mut self,
        job: DemoJob,
        checkpointer: &mut Checkpointer,
        progress: &impl Progress,
        trigger: Option<Trigger>,
    ) -> anyhow::Result<()> {
        match trigger {
            Some(trigger) => self.save(job, checkpointer, progress, trigger),
            None => Ok(()),
        }
    }

    /// Calls the API, waiting out rate limits (with a checkpoint first when the policy says
    /// so). On a server error it saves an error checkpoint, records the failed run and returns
    /// `None`: the process then exits and the next run retries with backoff.
    fn call<T, P: Progress>(
        &mut self,
        job: DemoJob,
        checkpointer: &mut Checkpointer,
        progress: &mut P,
        operation: &'static str,
        mut request: impl FnMut(&mut Api<'_>) -> Result<T, ApiError>,
    ) -> anyhow::Result<Option<T>> {
        loop {
            let error = match request(&mut self.api) {
                Ok(value) => {
                    self.last_operation = Some(operation);
                    return Ok(Some(value));
                }
                Err(error) => error,
            };
            match error {
                ApiError::RateLimited { reset_after } => {
                    let trigger = checkpointer.rate_limited();
                    if let Some(trigger) = trigger {
                        progress.note_rate_limit(Utc::now() + reset_after);
                        self.save(job, checkpointer, progress, trigger)?;
                        progress.clear_rate_limit();
                    }
                    self.out.emit(&Line::RateLimited {
                        job,
                        saved: trigger.is_some(),
                    })?;
                    std::thread::sleep(reset_after);
                }
                ApiError::Unavailable { .. } => {
                    let mut context = ErrorContext::recoverable().failure_point(operation);
                    if let Some(last) = self.last_operation {
                        context = context.last_successful_operation(last);
                    }
                    progress.note_error(&context);
                    if let Some(trigger) = checkpointer.error() {
                        self.save(job, checkpointer, progress, trigger)?;
                    }
                    let message = error.to_string();
                    self.store.fail_run(job.name(), &message, context)?;
                    self.out.emit(&Line::Failed {
                        job,
                        error: message,
                    })?;
                    return Ok(None);
                }
                ApiError::BadRequest { .. } => {
                    let context = ErrorContext::unrecoverable().failure_point(operation);
                    self.store
                        .fail_run(job.name(), &error.to_string(), context)?;
                    bail!("{}: {error}", job.name());
                }
            }
        }
    }

    /// Writes a page to the sink (durably) and reports it; `last` for the job's last page.
    fn write_page(
        &mut self,
        job: DemoJob,
        records: &[SinkRecord],
        last: bool,
    ) -> anyhow::Result<()> {
        self.sink.upsert_page(job.name(), self.run, records)?;
        self.out.emit(&Line::Page {
            job,
            records: records.len() as u64,
            last,
        })?;
        self.out.wait();
        Ok(())
    }

    fn finish(&mut self, job: DemoJob, processed: u64) -> anyhow::Result<Outcome> {
        self.store.succeed_run(job.name())?;
        self.out.emit(&Line::Done { job, processed })?;
        Ok(Outcome::Done)
    }
}

/// The GitHub extractor's checkpoint, with a [`WorkQueue`] as its repository queue.
#[derive(Debug, Serialize, Deserialize)]
struct GithubProgress {
    repo_processing_queue: WorkQueue,
    last_repo_sync_checkpoint: Option<String>,
    github_pr_cursor: Option<String>,
    total_prs_processed: u64,
    current_phase: String,
    rate_limit_context: Option<RateLimitContext>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RateLimitContext {
    remaining_calls: u64,
    reset_time: DateTime<Utc>,
}

impl Progress for GithubProgress {
    fn phase(&self) -> &str {
        &self.current_phase
    }

    fn processed(&self) -> u64 {
        self.total_prs_processed
    }

    fn note_rate_limit(&mut self, reset_time: DateTime<Utc>) {
        self.rate_limit_context = Some(RateLimitContext {
            remaining_calls: 0,
            reset_time,
        });
    }

    fn clear_rate_limit(&mut self) {
        self.rate_limit_context = None;
    }
}

const REPOSITORY_DISCOVERY: &str = "repository_discovery";
const PR_EXTRACTION: &str = "pr_extraction";

fn extract_github(x: &mut Extractor<'_>, start: Start) -> anyhow::Result<Outcome> {
    let job = DemoJob::Github;
    let mut checkpointer = presets::github_extractor().checkpointer(Instant::now());
    let mut progress = match start {
        Start::Resume(checkpoint) => checkpoint.data_as::<GithubProgress>()?,
        Start::Fresh | Start::Restart => GithubProgress {
            repo_processing_queue: WorkQueue::new(Vec::<String>::new())?,
            last_repo_sync_checkpoint: None,
            github_pr_cursor: None,
            total_prs_processed: 0,
            current_phase: REPOSITORY_DISCOVERY.into(),
            rate_limit_context: None,
        },
    };
    // A checkpoint of the discovery phase with an empty queue was saved before the list came
    // (on a rate limit or an error): discover again.
    if progress.current_phase == REPOSITORY_DISCOVERY && progress.repo_processing_queue.is_empty() {
        let call = x.call(
            job,
            &mut checkpointer,
            &mut progress,
            REPOSITORY_DISCOVERY,
            |api| api.repositories(),
        )?;
        let Some(repos) = call else {
            return Ok(Outcome::Failed);
        };
        progress.repo_processing_queue = WorkQueue::new(repos)?;
        let trigger = checkpointer.phase_finished();
        x.save_if(job, &mut checkpointer, &progress, trigger)?;
    }
    progress.current_phase = PR_EXTRACTION.into();
    // The queue hands out the repository in flight first, from its cursor, and skips the
    // finished ones: the precise resume.
    while let Some(unit) = progress.repo_processing_queue.next_unit() {
        let (repo, cursor) = (unit.name.clone(), unit.cursor.clone());
        progress.last_repo_sync_checkpoint = Some(repo.clone());
        if extract_repository(x, &mut checkpointer, &mut progress, &repo, cursor)?
            == Outcome::Failed
        {
            return Ok(Outcome::Failed);
        }
    }
    let trigger = checkpointer.phase_finished();
    x.save_if(job, &mut checkpointer, &progress, trigger)?;
    x.finish(job, progress.total_prs_processed)
}

/// Pages through one repository's pull requests from `cursor` to the end.
fn extract_repository(
    x: &mut Extractor<'_>,
    checkpointer: &mut Checkpointer,
    progress: &mut GithubProgress,
    repo: &str,
    mut cursor: Option<String>,
) -> anyhow::Result<Outcome> {
    let job = DemoJob::Github;
    loop {
        let call = x.call(job, checkpointer, progress, PR_EXTRACTION, |api| {
            api.pull_requests(repo, cursor.as_deref())
        })?;
        let Some(page) = call else {
            return Ok(Outcome::Failed);
        };
        let records = page_records(job, repo, &page.items, |pr| pr.number.to_string())?;
        let last =
            page.next_cursor.is_none() && progress.repo_processing_queue.pending().next().is_none();
        // The sink first, then the checkpoint that covers the page: a crash in between
        // delivers the page again, never loses it.
        x.write_page(job, &records, last)?;
        let count = records.len() as u64;
        let queue = &mut progress.repo_processing_queue;
        queue.advance(repo, page.next_cursor.clone(), count)?;
        progress.total_prs_processed += count;
        progress.github_pr_cursor = page.next_cursor.clone();
        debug_assert_eq!(progress.total_prs_processed, queue.processed_total());
        let due = checkpointer.items(count, Instant::now());
        let Some(next) = page.next_cursor else {
            queue.finish(repo)?;
            let trigger = checkpointer.unit_finished().or(due);
            x.save_if(job, checkpointer, progress, trigger)?;
            return Ok(Outcome::Done);
        };
        x.save_if(job, checkpointer, progress, due)?;
        cursor = Some(next);
    }
}

/// The sink records of a page of `unit`'s items, keyed by `idempotency_key(job, unit, id)`.
fn page_records<T: Serialize>(
    job: DemoJob,
    unit: &str,
    items: &[T],
    id: impl Fn(&T) -> String,
) -> anyhow::Result<Vec<SinkRecord>> {
    items
        .iter()
        .map(|item| {
            let item_id = id(item);
            Ok(SinkRecord {
                key: idempotency_key(job.name(), unit, &item_id),
                unit: unit.to_owned(),
                item: item_id,
                payload: serde_json::to_string(item)?,
            })
        })
        .collect()
}

/// The Jira extractor's checkpoint.
#[derive(Debug, Serialize, Deserialize)]
struct JiraProgress {
    last_sync_at: Option<DateTime<Utc>>,
    total_issues_processed: u64,
    current_project: Option<String>,
    projects_completed: Vec<String>,
    extraction_phase: String,
    error_context: Option<ErrorContext>,
}

impl Progress for JiraProgress {
    fn phase(&self) -> &str {
        &self.extraction_phase
    }

    fn processed(&self) -> u64 {
        self.total_issues_processed
    }

    fn note_error(&mut self, context: &ErrorContext) {
        self.error_context = Some(context.clone());
    }
}

const PROJECT_DISCOVERY: &str = "project_discovery";
const ISSUES: &str = "issues";

fn extract_jira(x: &mut Extractor<'_>, start: Start) -> anyhow::Result<Outcome> {
    let job = DemoJob::Jira;
    if let Start::Resume(checkpoint) = start {
        bail!(
            "{}: a full-restart job was asked to resume from checkpoint {}",
            job.name(),
            checkpoint.seq
        );
    }
    // Fresh or restarted, the extraction starts from nothing.
    let mut checkpointer = presets::jira_extractor().checkpointer(Instant::now());
    let mut progress = JiraProgress {
        last_sync_at: Some(Utc::now()),
        total_issues_processed: 0,
        current_project: None,
        projects_completed: Vec::new(),
        extraction_phase: PROJECT_DISCOVERY.into(),
        error_context: None,
    };
    let call = x.call(
        job,
        &mut checkpointer,
        &mut progress,
        PROJECT_DISCOVERY,
        |api| api.projects(),
    )?;
    let Some(projects) = call else {
        return Ok(Outcome::Failed);
    };
    let trigger = checkpointer.phase_finished();
    x.save_if(job, &mut checkpointer, &progress, trigger)?;
    progress.extraction_phase = ISSUES.into();
    for (index, project) in projects.iter().enumerate() {
        progress.current_project = Some(project.clone());
        let last_project = index + 1 == projects.len();
        let outcome = extract_project(x, &mut checkpointer, &mut progress, project, last_project)?;
        if outcome == Outcome::Failed {
            return Ok(Outcome::Failed);
        }
    }
    let trigger = checkpointer.phase_finished();
    x.save_if(job, &mut checkpointer, &progress, trigger)?;
    x.finish(job, progress.total_issues_processed)
}

/// Pages through every issue of one project.
fn extract_project(
    x: &mut Extractor<'_>,
    checkpointer: &mut Checkpointer,
    progress: &mut JiraProgress,
    project: &str,
    last_project: bool,
) -> anyhow::Result<Outcome> {
    let job = DemoJob::Jira;
    let mut start_at = 0;
    loop {
        let call = x.call(job, checkpointer, progress, ISSUES, |api| {
            api.issues(project, start_at)
        })?;
        let Some(page) = call else {
            return Ok(Outcome::Failed);
        };
        let records = page_records(job, project, &page.items, |issue| issue.key.clone())?;
        let last = last_project && start_at + records.len() as u64 >= page.total;
        x.write_page(job, &records, last)?;
        let count = records.len() as u64;
        start_at += count;
        progress.total_issues_processed += count;
        let due = checkpointer.items(count, Instant::now());
        if start_at >= page.total || count == 0 {
            progress.projects_completed.push(project.to_owned());
            progress.current_project = None;
            let trigger = checkpointer.unit_finished().or(due);
            x.save_if(job, checkpointer, progress, trigger)?;
            return Ok(Outcome::Done);
        }
        x.save_if(job, checkpointer, progress, due)?;
    }
}
