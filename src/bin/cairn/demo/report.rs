//! The demo's verdict: what the extractor runs reported (a [`Tally`] of their lines), the
//! final audit of the sink and the store, and the summary for people or for `--json`.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::Path;

use cairn::{Checkpoint, JobStatus, Store};
use serde::Serialize;

use super::protocol::{DemoJob, Line};
use super::sink::{Audit, Sink};
use super::source::Source;

/// How a run of the extractor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Killed with SIGKILL by the demo.
    Killed,
    /// Failed on an (injected) API error and recorded it: a retry follows.
    Failed,
    /// Exited cleanly: every job is done.
    Finished,
}

/// One run of the extractor, as the parent saw it.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub number: u32,
    pub lines: Vec<Line>,
    pub outcome: RunOutcome,
    /// For a killed run: the job and page count at which the kill was sent.
    pub killed_after: Option<(DemoJob, u64)>,
}

/// Totals over every run's lines.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub runs: u32,
    pub crashes: u32,
    pub api_failures: u32,
    /// Job runs that continued from a checkpoint (cursor resume) or restarted after a
    /// crash or a failure.
    pub resumes: u32,
    pub cursor_resumes: u32,
    pub restarts: u32,
    pub retries: u32,
    pub rate_limit_waits: u32,
    /// Problems the store's recovery found at open (torn writes cut off) and their bytes.
    pub recovery_findings: u64,
    pub recovery_discarded_bytes: u64,
    /// Time to recover of each resume, in microseconds.
    pub recover_us: Vec<u64>,
    /// `(job, seq)` of every checkpoint a run reported durable.
    pub acknowledged: Vec<(DemoJob, u64)>,
    /// The highest processed count of a durable GitHub checkpoint.
    pub github_checkpointed: u64,
    pub done: BTreeSet<DemoJob>,
}

impl Tally {
    pub fn add(&mut self, run: &RunRecord) {
        self.runs += 1;
        match run.outcome {
            RunOutcome::Killed => self.crashes += 1,
            RunOutcome::Failed => self.api_failures += 1,
            RunOutcome::Finished => {}
        }
        for line in &run.lines {
            match line {
                Line::Ready {
                    decision,
                    from_seq,
                    recover_us,
                    ..
                } => {
                    let recovering = decision == "resume" || decision == "retry_with_backoff";
                    if recovering {
                        self.resumes += 1;
                        self.recover_us.push(*recover_us);
                    }
                    self.retries += u32::from(decision == "retry_with_backoff");
                    self.cursor_resumes += u32::from(from_seq.is_some());
                }
                Line::Restart { .. } => self.restarts += 1,
                Line::RateLimited { .. } => self.rate_limit_waits += 1,
                Line::Saved {
                    job,
                    seq,
                    processed,
                    ..
                } => {
                    self.acknowledged.push((*job, *seq));
                    if *job == DemoJob::Github {
                        self.github_checkpointed = self.github_checkpointed.max(*processed);
                    }
                }
                Line::Done { job, .. } | Line::Skipped { job } => {
                    self.done.insert(*job);
                }
                Line::Open {
                    findings,
                    discarded_bytes,
                    ..
                } => {
                    self.recovery_findings += findings;
                    self.recovery_discarded_bytes += discarded_bytes;
                }
                Line::Page { .. } | Line::Failed { .. } => {}
            }
        }
    }
}

/// One job's part of the report.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub job: &'static str,
    pub strategy: &'static str,
    pub records: u64,
    #[serde(flatten)]
    pub audit: Audit,
    pub checkpoints: u64,
    pub status: &'static str,
}

/// The demo's result; `--json` prints it as one line.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ok: bool,
    pub seed: u64,
    pub scale: u32,
    pub records: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub redelivered: u64,
    pub crashes: u32,
    pub resumes: u32,
    pub cursor_resumes: u32,
    pub restarts: u32,
    pub retries: u32,
    pub api_errors: u32,
    pub rate_limit_waits: u32,
    pub torn_writes_repaired: u64,
    pub runs: u32,
    pub checkpoints_written: u64,
    pub bytes_written: u64,
    pub recovery_ms_avg: f64,
    pub recovery_ms_max: f64,
    pub elapsed_ms: u64,
    pub jobs: Vec<JobReport>,
    pub problems: Vec<String>,
    pub dir: String,
}

/// Everything the audit needs besides the store and the sink.
pub struct AuditInput<'a> {
    pub seed: u64,
    pub scale: u32,
    pub source: &'a Source,
    pub tally: &'a Tally,
    pub store_dir: &'a Path,
    pub sink_path: &'a Path,
    pub workspace: &'a Path,
    pub options: cairn::Options,
}

/// Audits the sink and the store after the last run.
pub fn audit(input: &AuditInput<'_>) -> anyhow::Result<Report> {
    let mut problems = Vec::new();
    let sink = Sink::open(input.sink_path)?;
    let store = Store::open_read_only_with(input.store_dir, input.options.clone())?;
    let jobs = DemoJob::ALL
        .into_iter()
        .map(|job| audit_job(job, input, &sink, &store, &mut problems))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let checkpoints_written = jobs.iter().map(|j| j.checkpoints).sum();
    let bytes_written = store.recovery_report().bytes_scanned;
    drop(store);
    let verify = Store::verify(input.store_dir)?;
    if !verify.is_clean() {
        problems.push(format!(
            "the store does not verify clean: {} finding(s)",
            verify.findings.len()
        ));
    }
    let tally = input.tally;
    let sum = |f: fn(&JobReport) -> u64| jobs.iter().map(f).sum::<u64>();
    let recover_ms: Vec<f64> = tally
        .recover_us
        .iter()
        .map(|&us| us as f64 / 1000.0)
        .collect();
    let recovery_ms_max = recover_ms.iter().copied().fold(0.0, f64::max);
    let recovery_ms_avg = if recover_ms.is_empty() {
        0.0
    } else {
        recover_ms.iter().sum::<f64>() / recover_ms.len() as f64
    };
    let lost = sum(|j| j.audit.lost);
    let duplicated = sum(|j| j.audit.duplicated);
    Ok(Report {
        ok: lost == 0 && duplicated == 0 && problems.is_empty(),
        seed: input.seed,
        scale: input.scale,
        records: sum(|j| j.records),
        lost,
        duplicated,
        redelivered: sum(|j| j.audit.redelivered),
        crashes: tally.crashes,
        resumes: tally.resumes,
        cursor_resumes: tally.cursor_resumes,
        restarts: tally.restarts,
        retries: tally.retries,
        api_errors: tally.api_failures,
        rate_limit_waits: tally.rate_limit_waits,
        torn_writes_repaired: tally.recovery_findings,
        runs: tally.runs,
        checkpoints_written,
        bytes_written,
        recovery_ms_avg: round3(recovery_ms_avg),
        recovery_ms_max: round3(recovery_ms_max),
        elapsed_ms: 0,
        jobs,
        problems,
        dir: input.workspace.display().to_string(),
    })
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// Audits one job: its rows in the sink, its checkpoint history and its final state.
fn audit_job(
    job: DemoJob,
    input: &AuditInput<'_>,
    sink: &Sink,
    store: &Store,
    problems: &mut Vec<String>,
) -> anyhow::Result<JobReport> {
    let (expected, strategy) = match job {
        DemoJob::Github => (input.source.pull_request_records(), "cursor_resume"),
        DemoJob::Jira => (input.source.issue_records(), "full_restart"),
    };
    let audit = sink.audit(job.name(), &expected)?;
    for example in &audit.examples {
        problems.push(format!("sink: {example}"));
    }
    let history = store.history(job.name())?;
    check_history(job, &history, expected.len() as u64, problems);
    let status = store.job(job.name()).map(|state| state.status);
    if status != Some(JobStatus::Succeeded) {
        problems.push(format!(
            "{} ended {}, not succeeded",
            job.name(),
            status.map_or("unknown", JobStatus::name)
        ));
    }
    // Every save a killed extractor reported durable must have survived the kill.
    let seqs: BTreeSet<u64> = history.iter().map(|c| c.seq).collect();
    let missing = input
        .tally
        .acknowledged
        .iter()
        .filter(|(j, seq)| *j == job && !seqs.contains(seq))
        .count();
    if missing > 0 {
        problems.push(format!(
            "{}: {missing} checkpoint(s) reported durable are not in the store",
            job.name()
        ));
    }
    Ok(JobReport {
        job: job.name(),
        strategy,
        records: expected.len() as u64,
        audit,
        checkpoints: history.len() as u64,
        status: status.map_or("unknown", JobStatus::name),
    })
}

/// The processed count of a checkpoint, by the job's field name.
fn processed(job: DemoJob, checkpoint: &Checkpoint) -> Option<u64> {
    let field = match job {
        DemoJob::Github => "total_prs_processed",
        DemoJob::Jira => "total_issues_processed",
    };
    checkpoint
        .data
        .get(field)
        .and_then(serde_json::Value::as_u64)
}

/// Checks a job's checkpoint history: the processed count never goes down (for Jira, within
/// one extraction: a full restart starts a new one, recognised by its new `last_sync_at`,
/// at 0), and the last checkpoint counts every source record.
fn check_history(job: DemoJob, history: &[Checkpoint], records: u64, problems: &mut Vec<String>) {
    let name = job.name();
    let mut previous: Option<(u64, &Checkpoint)> = None;
    for checkpoint in history {
        let Some(count) = processed(job, checkpoint) else {
            problems.push(format!(
                "{name}: checkpoint {} has no processed count",
                checkpoint.seq
            ));
            continue;
        };
        if let Some((before, last)) = previous {
            let new_extraction = job == DemoJob::Jira
                && checkpoint.data.get("last_sync_at") != last.data.get("last_sync_at");
            if new_extraction && count != 0 {
                problems.push(format!(
                    "{name}: checkpoint {} starts a new extraction at {count}, not 0",
                    checkpoint.seq
                ));
            }
            if !new_extraction && count < before {
                problems.push(format!(
                    "{name}: the processed count went down from {before} (checkpoint {}) to \
                     {count} (checkpoint {})",
                    last.seq, checkpoint.seq
                ));
            }
        }
        previous = Some((count, checkpoint));
    }
    match previous {
        Some((count, _)) if count == records => {}
        Some((count, last)) => problems.push(format!(
            "{name}: the last checkpoint ({}) counts {count} records, the source has {records}",
            last.seq
        )),
        None => problems.push(format!("{name}: no checkpoint at all")),
    }
}

/// One run as people read it.
pub fn describe_run(run: &RunRecord) -> String {
    let mut parts = Vec::new();
    let mut set_aside = None;
    for line in &run.lines {
        let part = match line {
            Line::Restart { reference_seq, .. } => {
                set_aside = Some(*reference_seq);
                continue;
            }
            Line::Ready {
                job,
                decision,
                from_seq,
                recover_us,
                ..
            } => {
                let from = match (from_seq, set_aside.take()) {
                    (Some(seq), _) => format!("from checkpoint {seq}"),
                    (None, Some(seq)) => {
                        format!("by a full restart (checkpoint {seq} kept for reference)")
                    }
                    (None, None) => "from scratch".to_owned(),
                };
                let how = match decision.as_str() {
                    "fresh_start" => "fresh start".to_owned(),
                    "resume" => format!("resumed {from}"),
                    "retry_with_backoff" => format!("retried after backoff {from}"),
                    other => other.to_owned(),
                };
                let time = if decision == "fresh_start" {
                    String::new()
                } else {
                    format!(", recovered in {:.1} ms", *recover_us as f64 / 1000.0)
                };
                format!("{} {how}{time}", job.name())
            }
            Line::Skipped { job } => format!("{} already done", job.name()),
            Line::Done { job, processed } => format!("{} done ({processed} records)", job.name()),
            Line::Failed { job, error } => format!("{} failed: {error}", job.name()),
            _ => continue,
        };
        parts.push(part);
    }
    let end = match (run.outcome, run.killed_after) {
        (RunOutcome::Killed, Some((job, pages))) => {
            format!("KILLED (SIGKILL) after {pages} {} page(s)", job.name())
        }
        (RunOutcome::Killed, None) => "KILLED (SIGKILL)".to_owned(),
        (RunOutcome::Failed, _) => "exited with the failure recorded".to_owned(),
        (RunOutcome::Finished, _) => "finished".to_owned(),
    };
    parts.push(end);
    format!("run {:>2}: {}", run.number, parts.join("; "))
}

/// The summary as people read it.
pub fn write_summary(out: &mut impl Write, report: &Report) -> io::Result<()> {
    writeln!(out)?;
    writeln!(
        out,
        "records      {} in the sink: {} lost, {} duplicated ({} redelivered after crashes, \
         absorbed by idempotent upserts)",
        report.records, report.lost, report.duplicated, report.redelivered
    )?;
    writeln!(
        out,
        "crashes      {} kill -9, {} API failure(s); {} resume(s): {} cursor resume(s), {} full \
         restart(s) ({} after a retry backoff)",
        report.crashes,
        report.api_errors,
        report.resumes,
        report.cursor_resumes,
        report.restarts,
        report.retries
    )?;
    if report.torn_writes_repaired > 0 {
        writeln!(
            out,
            "torn writes  {} cut off by recovery at open (a kill in the middle of a save)",
            report.torn_writes_repaired
        )?;
    }
    writeln!(
        out,
        "recovery     avg {:.2} ms, max {:.2} ms (open the store + plan, per resumed job)",
        report.recovery_ms_avg, report.recovery_ms_max
    )?;
    writeln!(
        out,
        "checkpoints  {} written, {} bytes of log records; {} rate-limit pause(s)",
        report.checkpoints_written, report.bytes_written, report.rate_limit_waits
    )?;
    for job in &report.jobs {
        writeln!(
            out,
            "  {:<12} {:<14} {} records, {} rows, {} redelivered, {} checkpoints, {}",
            job.job,
            job.strategy,
            job.records,
            job.audit.rows,
            job.audit.redelivered,
            job.checkpoints,
            job.status
        )?;
    }
    write_checks(out, report)?;
    writeln!(
        out,
        "elapsed      {:.2} s",
        report.elapsed_ms as f64 / 1000.0
    )?;
    writeln!(
        out,
        "look inside  cairn --dir {dir}/store history github_sync; the sink is {dir}/sink.sqlite",
        dir = report.dir
    )
}

/// The summary's `checks` line: ok, or each problem found.
fn write_checks(out: &mut impl Write, report: &Report) -> io::Result<()> {
    if report.ok {
        writeln!(
            out,
            "checks       ok: every record exactly once, processed counts never went down, \
             both jobs succeeded, the store verifies clean"
        )
    } else {
        writeln!(out, "checks       FAILED:")?;
        for problem in &report.problems {
            writeln!(out, "  - {problem}")?;
        }
        Ok(())
    }
}
