//! `cairn demo`: the crash-recovery demonstration. It runs a GitHub-style and a Jira-style
//! extraction against a deterministic synthetic source, in a child process (the extractor,
//! `cairn demo-worker`) that it kills with SIGKILL at random points, several times. Each new
//! run resumes through `Store::plan_with`: the GitHub job from its exact cursor, the Jira job by
//! a full restart with idempotent writes. At the end it checks that every source record is in
//! the sink (SQLite) exactly once and that processed counts never went down.
//!
//! The demo works in `<DIR>/demo` (the store in `store/`, the sink in `sink.sqlite`), never
//! in the store `<DIR>` itself, and starts afresh each time: it deletes `<DIR>/demo` first,
//! but only when that directory holds the demo's marker file, so it never deletes anything
//! it did not create.

mod protocol;
mod report;
mod sink;
mod source;
mod worker;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};

use crate::output::{print, write_json_line};
use crate::{BadInput, GlobalArgs};
use protocol::{DemoJob, Line};
use report::{AuditInput, RunOutcome, RunRecord, Tally};
use source::{PR_PAGE_SIZE, Rng, Source};

/// The most crashes and injected API errors a demo may ask for.
const MAX_CRASHES: i64 = 50;
const MAX_API_ERRORS: i64 = 10;
/// Segment size of the demo's store unless `--segment-size` says otherwise: the demo writes
/// little, so small preallocated segments keep its directory small.
const DEMO_SEGMENT_SIZE_BYTES: u64 = 4 << 20;
/// The file that marks `<DIR>/demo` as the demo's own, safe to delete.
const WORKSPACE_MARKER: &str = "CAIRN_DEMO";

/// Arguments of `cairn demo`.
#[derive(Debug, Args)]
#[command(
    after_help = "The demo works in DIR/demo (store in DIR/demo/store, sink in \
    DIR/demo/sink.sqlite), which it deletes and recreates on every run; it refuses to touch \
    DIR/demo if it did not create it, and never touches the store in DIR. Its store uses 4 MiB \
    segments unless --segment-size says otherwise.\n\
    Exit status: 0 when every record is in the sink exactly once and every check passes, \
    1 otherwise."
)]
pub struct DemoArgs {
    /// Seed of the synthetic source and of the crash points [default: from the clock; printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Size of the source: 4 repositories and 3 projects (about 600 records) per unit.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=i64::from(source::MAX_SCALE)))]
    scale: u32,
    /// How many times to kill the extractor with SIGKILL.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(0..=MAX_CRASHES))]
    crashes: u32,
    /// How many runs fail on an injected API error (HTTP 502), to be retried with backoff.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=MAX_API_ERRORS))]
    api_errors: u32,
}

/// Arguments of the hidden `cairn demo-worker`, the extractor `cairn demo` starts; the store
/// is the global `--dir`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The sink database.
    #[arg(long)]
    sink: PathBuf,
    #[arg(long)]
    seed: u64,
    #[arg(long)]
    scale: u32,
    /// The run's number.
    #[arg(long)]
    run: u32,
    /// Fail this request of the run with an HTTP 502.
    #[arg(long)]
    fail_at_request: Option<u64>,
}

/// Runs the extractor (the child).
pub fn worker(
    global: &GlobalArgs,
    options: cairn::Options,
    args: &WorkerArgs,
) -> anyhow::Result<ExitCode> {
    let config = worker::WorkerConfig {
        seed: args.seed,
        scale: args.scale,
        run: args.run,
        fail_at_request: args.fail_at_request,
        sink: args.sink.clone(),
    };
    worker::run(&global.dir, options, &config)
}

/// The demo's directory: `<DIR>/demo`.
struct Workspace {
    root: PathBuf,
    store: PathBuf,
    sink: PathBuf,
}

impl Workspace {
    /// Deletes the previous demo's workspace (only if it is one) and creates a new one.
    fn prepare(dir: &Path) -> anyhow::Result<Workspace> {
        let root = dir.join("demo");
        match std::fs::symlink_metadata(&root) {
            Ok(_) if root.join(WORKSPACE_MARKER).is_file() => std::fs::remove_dir_all(&root)
                .with_context(|| format!("could not delete the old demo in {}", root.display()))?,
            Ok(_) => {
                return Err(BadInput(format!(
                    "{} exists and was not created by `cairn demo`; refusing to touch it \
                     (move it away or choose another --dir)",
                    root.display()
                ))
                .into());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("could not look at {}", root.display()));
            }
        }
        std::fs::create_dir_all(&root)
            .with_context(|| format!("could not create {}", root.display()))?;
        std::fs::write(
            root.join(WORKSPACE_MARKER),
            "This directory belongs to `cairn demo`, which deletes and recreates it.\n",
        )
        .with_context(|| format!("could not write in {}", root.display()))?;
        Ok(Workspace {
            store: root.join("store"),
            sink: root.join("sink.sqlite"),
            root,
        })
    }
}

/// When to kill a run: once `after_pages` pages of `job` are in the sink, after a delay of
/// `delay_fraction` of the shortest time a page took in this run, so that the kill lands
/// anywhere in the work on the next page (its request, its transaction in the sink, a
/// checkpoint's write or sync). The extractor waits for the demo's go-ahead after each page,
/// so it cannot run past the next page before the kill lands, however fast the disk.
#[derive(Debug, Clone, Copy)]
struct KillPlan {
    job: DemoJob,
    after_pages: u64,
    delay_fraction: f64,
}

#[derive(Debug, Clone, Copy, Default)]
struct RunPlan {
    kill: Option<KillPlan>,
    fail_at_request: Option<u64>,
}

/// Draws the crash points and the injected failures from the seed.
struct Planner {
    rng: Rng,
    /// The jobs the remaining kills aim at, GitHub first.
    targets: Vec<DemoJob>,
    api_errors_left: u32,
    pull_requests: u64,
    issue_pages: u64,
}

impl Planner {
    fn new(seed: u64, source: &Source, crashes: u32, api_errors: u32) -> Planner {
        let github = crashes.div_ceil(2) as usize;
        let mut targets = vec![DemoJob::Jira; crashes as usize];
        // Kills are taken from the back: GitHub's come first.
        targets
            .iter_mut()
            .rev()
            .take(github)
            .for_each(|job| *job = DemoJob::Github);
        Planner {
            rng: Rng::new(seed ^ 0x6b69_6c6c_2d39),
            targets,
            api_errors_left: api_errors,
            pull_requests: source.pull_request_count(),
            issue_pages: source.issue_pages(),
        }
    }

    fn next(&mut self, tally: &Tally) -> RunPlan {
        let github_done = tally.done.contains(&DemoJob::Github);
        let kill = self.targets.last().map(|&target| {
            let job = if github_done { DemoJob::Jira } else { target };
            let after_pages = match job {
                DemoJob::Github => {
                    // Spread the GitHub kills over what is left of its pages.
                    let remaining = self.pull_requests.saturating_sub(tally.github_checkpointed);
                    let pages = remaining.div_ceil(PR_PAGE_SIZE);
                    let kills_left = self
                        .targets
                        .iter()
                        .filter(|&&j| j == DemoJob::Github)
                        .count() as u64;
                    self.rng.range(1, (2 * pages / (kills_left + 1)).max(1))
                }
                // A full restart fetches every page again: any but the last will do.
                DemoJob::Jira => self.rng.range(1, self.issue_pages.saturating_sub(1)),
            };
            KillPlan {
                job,
                after_pages,
                delay_fraction: self.rng.range(0, 999) as f64 / 1000.0,
            }
        });
        let inject = self.api_errors_left > 0 && (kill.is_none() || self.rng.range(0, 1) == 0);
        RunPlan {
            kill,
            fail_at_request: inject.then(|| self.rng.range(2, 8)),
        }
    }

    fn after(&mut self, run: &RunRecord) {
        match run.outcome {
            RunOutcome::Killed => {
                self.targets.pop();
            }
            RunOutcome::Failed => self.api_errors_left = self.api_errors_left.saturating_sub(1),
            RunOutcome::Finished => {}
        }
    }
}

/// Runs `cairn demo`.
pub fn run(
    global: &GlobalArgs,
    options: cairn::Options,
    args: &DemoArgs,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let seed = args.seed.unwrap_or_else(clock_seed);
    let workspace = Workspace::prepare(&global.dir)?;
    let source = Source::new(seed, args.scale);
    if !global.json {
        print(|out| {
            writeln!(
                out,
                "cairn demo: seed {seed}, scale {}, in {}",
                args.scale,
                workspace.root.display()
            )?;
            writeln!(out, "source: {}", source::describe(&source))
        })?;
    }
    let tally = run_until_finished(global, &workspace, seed, args, &source)?;
    let mut report = report::audit(&AuditInput {
        seed,
        scale: args.scale,
        source: &source,
        tally: &tally,
        store_dir: &workspace.store,
        sink_path: &workspace.sink,
        workspace: &workspace.root,
        options,
    })?;
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    print(|out| {
        if global.json {
            write_json_line(out, &report)
        } else {
            report::write_summary(out, &report)
        }
    })?;
    if report.ok {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "cairn: demo failed (seed {seed}): {} lost, {} duplicated, {} problem(s)",
            report.lost,
            report.duplicated,
            report.problems.len()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// Runs the extractor again and again, killing it as planned, until a run finishes.
fn run_until_finished(
    global: &GlobalArgs,
    workspace: &Workspace,
    seed: u64,
    args: &DemoArgs,
    source: &Source,
) -> anyhow::Result<Tally> {
    let mut planner = Planner::new(seed, source, args.crashes, args.api_errors);
    let mut tally = Tally::default();
    let max_runs = args.crashes + 2 * args.api_errors + 3;
    for number in 1..=max_runs {
        let plan = planner.next(&tally);
        let run = run_extractor(global, workspace, seed, args.scale, number, plan)?;
        tally.add(&run);
        planner.after(&run);
        if !global.json {
            print(|out| writeln!(out, "{}", report::describe_run(&run)))?;
        }
        if run.outcome == RunOutcome::Finished {
            return Ok(tally);
        }
    }
    bail!("the extractor did not finish within {max_runs} runs")
}

/// A seed from the clock, small enough to type back.
fn clock_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    u64::from(nanos % 1_000_000)
}

/// Starts one extractor run, kills it as planned, and collects what it reported.
fn run_extractor(
    global: &GlobalArgs,
    workspace: &Workspace,
    seed: u64,
    scale: u32,
    number: u32,
    plan: RunPlan,
) -> anyhow::Result<RunRecord> {
    let exe = std::env::current_exe().context("could not find the cairn executable")?;
    let mut command = Command::new(exe);
    command
        .arg("--dir")
        .arg(&workspace.store)
        .args(store_flags(global))
        .arg("demo-worker")
        .arg("--sink")
        .arg(&workspace.sink)
        .args(["--seed", &seed.to_string()])
        .args(["--scale", &scale.to_string()])
        .args(["--run", &number.to_string()]);
    if let Some(request) = plan.fail_at_request {
        command.args(["--fail-at-request", &request.to_string()]);
    }
    if std::env::var_os("CAIRN_LOG").is_none() {
        // A torn tail cut off after a kill is expected here, and the summary counts it; the
        // extractor's warning about it would only get in the way.
        command.env("CAIRN_LOG", "error");
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("could not start the extractor")?;
    let result = watch(&mut child, plan);
    if result.is_err() {
        // Never leave an extractor behind.
        let _ = child.kill();
    }
    let (lines, killed_after) = result?;
    let status = child.wait().context("could not wait for the extractor")?;
    let outcome = if killed_by_sigkill(&status) {
        RunOutcome::Killed
    } else if status.code() == Some(i32::from(worker::FAILED_RUN_STATUS)) {
        RunOutcome::Failed
    } else if status.success() {
        RunOutcome::Finished
    } else {
        bail!("extractor run {number} failed ({status}); its error is above");
    };
    Ok(RunRecord {
        number,
        lines,
        outcome,
        killed_after: killed_after.filter(|_| outcome == RunOutcome::Killed),
    })
}

type Watched = (Vec<Line>, Option<(DemoJob, u64)>);

/// Reads the child's lines as they come, and sends SIGKILL when the plan says.
fn watch(child: &mut Child, plan: RunPlan) -> anyhow::Result<Watched> {
    let stdout = child.stdout.take().context("no pipe from the extractor")?;
    // Without a kill to place, the extractor need not wait for go-aheads: close its stdin.
    let mut gate = child.stdin.take().filter(|_| plan.kill.is_some());
    let (sender, receiver) = mpsc::channel();
    // A reader thread, so that the kill is decided as soon as a line arrives.
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut pages = 0;
    let mut killed_after = None;
    let mut last_page: Option<Instant> = None;
    let mut page_time: Option<Duration> = None;
    for text in receiver {
        let line: Line = text.parse().map_err(anyhow::Error::msg)?;
        if let Some(kill) = plan.kill
            && killed_after.is_none()
            && let Line::Page { job, last, .. } = line
        {
            let now = Instant::now();
            if let Some(before) = last_page.replace(now) {
                let took = now - before;
                page_time = Some(page_time.map_or(took, |shortest| shortest.min(took)));
            }
            let due = if job == kill.job {
                pages += 1;
                // Never after a job's last page: a kill after its `succeed_run` would leave
                // nothing to resume, so the next job's first page is taken instead.
                pages >= kill.after_pages && !last
            } else {
                // The aimed job (GitHub) finished early: the next job's first page will do.
                kill.job == DemoJob::Github
            };
            go_ahead(&mut gate);
            if due {
                let delay = page_time.unwrap_or_default().mul_f64(kill.delay_fraction);
                std::thread::sleep(delay);
                child.kill().context("could not kill the extractor")?; // SIGKILL
                killed_after = Some((job, if job == kill.job { pages } else { 1 }));
                gate = None;
            }
        }
        lines.push(line);
    }
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the reader thread panicked"))?;
    Ok((lines, killed_after))
}

/// Lets the extractor go on past the page it just reported. A write error means that it has
/// exited already (a failed run): then there is nothing left to let go on.
fn go_ahead(gate: &mut Option<std::process::ChildStdin>) {
    if let Some(stdin) = gate
        && stdin
            .write_all(b"go\n")
            .and_then(|()| stdin.flush())
            .is_err()
    {
        *gate = None;
    }
}

#[cfg(unix)]
fn killed_by_sigkill(status: &std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9)
}

#[cfg(not(unix))]
fn killed_by_sigkill(status: &std::process::ExitStatus) -> bool {
    // `Child::kill` terminates the process with exit code 1 on Windows.
    status.code() == Some(1)
}

/// The global store flags, passed on to the extractor so that it opens the store as asked.
fn store_flags(global: &GlobalArgs) -> Vec<String> {
    let name = |value: Option<clap::builder::PossibleValue>| {
        value.map_or_else(String::new, |v| v.get_name().to_owned())
    };
    let mut flags = vec![
        "--durability".to_owned(),
        name(global.durability.to_possible_value()),
        "--recovery".to_owned(),
        name(global.recovery.to_possible_value()),
        "--segment-size".to_owned(),
        global
            .segment_size
            .unwrap_or(DEMO_SEGMENT_SIZE_BYTES)
            .to_string(),
    ];
    if let Some(interval) = global.sync_interval {
        flags.push("--sync-interval".to_owned());
        flags.push(duration_flag(interval));
    }
    if let Some(bytes) = global.max_payload {
        flags.push("--max-payload".to_owned());
        flags.push(bytes.to_string());
    }
    flags
}

/// A duration as `--sync-interval` reads it: a whole number (at most `u32::MAX`) and a unit.
fn duration_flag(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    for (unit, per) in [("ns", 1u128), ("us", 1_000), ("ms", 1_000_000)] {
        if let Ok(n) = u32::try_from(nanos / per) {
            return format!("{n}{unit}");
        }
    }
    format!("{}s", duration.as_secs().min(u64::from(u32::MAX)))
}
