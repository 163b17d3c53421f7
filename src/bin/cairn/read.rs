//! The reading commands `get`, `jobs` and `history`. They open the store read-only, so they
//! work beside a running writer and never change a byte on disk, even when it is damaged.

use std::io::Write;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::Args;

use crate::GlobalArgs;
use crate::output::{print, timestamp, write_json_line, write_table};

/// Arguments of `cairn get`.
#[derive(Debug, Args)]
#[command(after_help = "Exit status 1 when the job has no checkpoint.")]
pub struct GetArgs {
    /// The job.
    job: String,
}

/// Arguments of `cairn history`.
#[derive(Debug, Args)]
#[command(after_help = "Exit status 1 when the job has no checkpoint.")]
pub struct HistoryArgs {
    /// The job.
    job: String,
    /// Show only the N most recent checkpoints (still oldest first).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    limit: Option<u64>,
}

/// Runs `cairn get`: the latest checkpoint of a job.
pub fn get(
    global: &GlobalArgs,
    options: cairn::Options,
    args: &GetArgs,
) -> anyhow::Result<ExitCode> {
    let store = cairn::Store::open_read_only_with(&global.dir, options)?;
    let checkpoint = store
        .latest(&args.job)?
        .ok_or_else(|| no_checkpoint(&args.job))?;
    print(|out| {
        if global.json {
            return write_json_line(out, &checkpoint);
        }
        // Continuation lines of the data line up under its first line.
        let data = serde_json::to_string_pretty(&checkpoint.data)?.replace('\n', "\n         ");
        let fields = [
            ("job", checkpoint.job.clone()),
            ("seq", checkpoint.seq.to_string()),
            ("phase", checkpoint.phase.clone()),
            ("at", timestamp(&checkpoint.at)),
            ("version", checkpoint.version.to_string()),
            ("data", data),
        ];
        for (name, value) in fields {
            writeln!(out, "{name:<8} {value}")?;
        }
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `cairn jobs`: every job with its latest checkpoint.
pub fn jobs(global: &GlobalArgs, options: cairn::Options) -> anyhow::Result<ExitCode> {
    let store = cairn::Store::open_read_only_with(&global.dir, options)?;
    let jobs = store.jobs()?;
    print(|out| {
        if global.json {
            return write_json_line(out, &jobs);
        }
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .map(|job| {
                vec![
                    job.job.clone(),
                    job.latest_seq.to_string(),
                    job.phase.clone(),
                    timestamp(&job.at),
                    job.checkpoints.to_string(),
                ]
            })
            .collect();
        let headers = ["job", "latest seq", "phase", "at", "checkpoints"];
        write_table(out, &headers, &rows)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `cairn history`: the checkpoints of a job, oldest first.
pub fn history(
    global: &GlobalArgs,
    options: cairn::Options,
    args: &HistoryArgs,
) -> anyhow::Result<ExitCode> {
    let store = cairn::Store::open_read_only_with(&global.dir, options)?;
    let mut checkpoints = store.history(&args.job)?;
    if checkpoints.is_empty() {
        return Err(no_checkpoint(&args.job));
    }
    if let Some(limit) = args.limit {
        let keep = usize::try_from(limit).unwrap_or(usize::MAX);
        let skip = checkpoints.len().saturating_sub(keep);
        checkpoints.drain(..skip);
    }
    print(|out| {
        if global.json {
            return write_json_line(out, &checkpoints);
        }
        let rows: Vec<Vec<String>> = checkpoints
            .iter()
            .map(|checkpoint| {
                vec![
                    checkpoint.seq.to_string(),
                    checkpoint.phase.clone(),
                    timestamp(&checkpoint.at),
                    checkpoint.version.to_string(),
                    checkpoint.data.to_string(),
                ]
            })
            .collect();
        write_table(out, &["seq", "phase", "at", "version", "data"], &rows)
    })?;
    Ok(ExitCode::SUCCESS)
}

fn no_checkpoint(job: &str) -> anyhow::Error {
    anyhow!("job {job:?} has no checkpoint")
}
