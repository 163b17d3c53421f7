//! A job that saves its progress with cairn, is killed with SIGKILL several times at random
//! moments, and resumes each time from its last checkpoint. At the end it checks that every
//! item was processed, that the processed count never went down, and that every checkpoint
//! the killed processes were told was durable is in the store.
//!
//! Run it with `cargo run --release --example crash_resume [-- STORE_DIR]`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

const JOB: &str = "example_extract";
const TOTAL_ITEMS: u64 = 3000;
const CHECKPOINT_EVERY: u64 = 25;
const CRASHES: u32 = 5;

/// The job's progress: where to resume.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Progress {
    /// Items fully processed; the next run starts at this one.
    processed: u64,
    /// An opaque source cursor, as an API would hand out.
    cursor: String,
}

/// The worker: resumes from the latest checkpoint and processes items, saving progress every
/// `CHECKPOINT_EVERY` items and printing `ack <seq> <processed>` once each save is durable.
fn worker(dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let store = cairn::Store::open(dir)?;
    let start: Progress = match store.latest(JOB)? {
        Some(checkpoint) => checkpoint.data_as()?,
        None => Progress::default(),
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let report = store.recovery_report();
    writeln!(
        out,
        "resume {} {}",
        start.processed,
        report.duration.as_micros()
    )?;
    let mut processed = start.processed;
    while processed < TOTAL_ITEMS {
        // "Process" one item: a little work that a crash can interrupt.
        std::thread::sleep(Duration::from_micros(200));
        processed += 1;
        if processed.is_multiple_of(CHECKPOINT_EVERY) || processed == TOTAL_ITEMS {
            let progress = Progress {
                processed,
                cursor: format!("cursor:{processed:08}"),
            };
            let seq = store.save(JOB, "extract", &progress)?;
            writeln!(out, "ack {seq} {processed}")?;
            out.flush()?;
        }
    }
    Ok(())
}

/// What one worker run did.
struct Run {
    /// `(seq, processed)` of every acknowledged checkpoint.
    acks: Vec<(u64, u64)>,
    /// Where it resumed and how long its recovery took, in microseconds.
    resumed_at: Option<(u64, u64)>,
    killed: bool,
}

/// Runs one worker; kills it after `kill_after` unless it finishes first.
fn run_worker(dir: &Path, kill_after: Option<Duration>) -> Result<Run, Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .arg("--worker")
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut acks = Vec::new();
        let mut resumed_at = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let mut parts = line.split_whitespace();
            let kind = parts.next();
            let numbers = (parts.next().map(str::parse), parts.next().map(str::parse));
            match (kind, numbers) {
                (Some("ack"), (Some(Ok(a)), Some(Ok(b)))) => acks.push((a, b)),
                (Some("resume"), (Some(Ok(a)), Some(Ok(b)))) => resumed_at = Some((a, b)),
                _ => {}
            }
        }
        (acks, resumed_at)
    });
    let killed = match kill_after {
        Some(delay) => {
            std::thread::sleep(delay);
            let still_running = child.try_wait()?.is_none();
            if still_running {
                child.kill()?; // SIGKILL: no destructor, no flush, no goodbye.
            }
            still_running
        }
        None => false,
    };
    let status = child.wait()?;
    if !killed && !status.success() {
        return Err(format!("worker failed: {status}").into());
    }
    let (acks, resumed_at) = reader.join().map_err(|_| "reader thread panicked")?;
    Ok(Run {
        acks,
        resumed_at,
        killed,
    })
}

fn describe(run: &Run, delay: Duration) -> String {
    let resumed = match run.resumed_at {
        Some((0, us)) => format!("fresh start (open took {us} us)"),
        Some((item, us)) => format!("resumed at item {item} (recovery took {us} us)"),
        None => "killed before it opened the store".into(),
    };
    let last = run
        .acks
        .last()
        .map_or("none".to_string(), |a| format!("item {}", a.1));
    let killed = if run.killed {
        format!(", killed with SIGKILL after {delay:?}")
    } else {
        String::new()
    };
    format!("{resumed}, last durable checkpoint: {last}{killed}")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--worker") {
        return worker(Path::new(args.get(2).ok_or("--worker needs a directory")?));
    }
    let dir: PathBuf = args.get(1).map_or_else(
        || std::env::temp_dir().join("cairn-crash-resume-example"),
        PathBuf::from,
    );
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    println!(
        "cairn crash/resume example: {TOTAL_ITEMS} items, checkpoint every {CHECKPOINT_EVERY}, store in {}",
        dir.display()
    );
    let mut acked = Vec::new();
    let mut crashes = 0;
    let mut seed = u64::from(std::process::id()) | 1;
    while crashes < CRASHES {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_millis(50 + seed % 150);
        let run = run_worker(&dir, Some(delay))?;
        println!("  run {}: {}", crashes + 1, describe(&run, delay));
        acked.extend(run.acks);
        crashes += u32::from(run.killed);
    }
    let started = Instant::now();
    let run = run_worker(&dir, None)?;
    println!(
        "  final run: {}, finished in {:?}",
        describe(&run, Duration::ZERO),
        started.elapsed()
    );
    acked.extend(run.acks);

    // Check: every acknowledged checkpoint survived, counts never went down, the job is done.
    let store = cairn::Store::open_read_only(&dir)?;
    let history = store.history(JOB)?;
    let mut lost = 0;
    for (seq, processed) in &acked {
        match history.iter().find(|c| c.seq == *seq) {
            Some(c) if c.data_as::<Progress>()?.processed == *processed => {}
            _ => lost += 1,
        }
    }
    let went_down = history.windows(2).filter(|w| {
        let (a, b) = (
            w[0].data["processed"].as_u64(),
            w[1].data["processed"].as_u64(),
        );
        b < a
    });
    let regressions = went_down.count();
    let done: Progress = store
        .latest(JOB)?
        .ok_or("no checkpoint at all")?
        .data_as()?;
    println!(
        "result: {crashes} crashes, {} acknowledged checkpoints, {lost} lost, {regressions} regressions, processed {}/{TOTAL_ITEMS}",
        acked.len(),
        done.processed
    );
    if lost > 0 || regressions > 0 || done.processed != TOTAL_ITEMS {
        return Err("data was lost".into());
    }
    println!("ok: every acknowledged checkpoint survived {crashes} kill -9 crashes");
    Ok(())
}
