//! The scale run of issue 11: many jobs, many saves, automatic compaction and a size limit on.
//! It reports what one store costs at that scale:
//!
//! - throughput (saves per second over the whole run, compactions included);
//! - memory: the peak resident set (`VmHWM` of /proc/self/status, which counts the pages of the
//!   memory-mapped segments the process touched as well as its heap), and the peak of the
//!   anonymous part alone (`RssAnon`, sampled every 100 ms: the heap, so the index), before and
//!   after the reopen;
//! - the disk high-water mark (the segment files, polled every 10 ms) and the compactions the
//!   store ran on its own (its `cairn: compacted` log events);
//! - the open at the end, from the page cache: a writer open of the closed store, timed, beside
//!   the raw floor of the same run: reading every segment file, walking its record frames and
//!   checking both CRCs of each with `crc32fast` (docs/FORMAT.md, "Record frame").
//!
//! Save `i` goes to job `i % jobs`; each thread saves the jobs `thread, thread + threads, ...`
//! in turn, so every job gets `saves / jobs` checkpoints. At the end every job's latest
//! checkpoint is checked after the reopen. Exits 1 if a save or a check failed.
//!
//! ```text
//! cargo run --release --example scale -- --json                          # 100,000 jobs, 10 M saves
//! cargo run --release --example scale -- --jobs 1000 --saves 100000      # a smoke run
//! cargo run --release --example scale -- --jobs 1000 --saves 10000000 --json  # memory vs records
//! ```

#[path = "support/disk_use.rs"]
mod disk_use;

use disk_use::{DiskUse, disk_use};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cairn::{AutoCompact, Durability, Options, Retention, Store};
use clap::{Parser, ValueEnum};
use serde::Serialize;
use serde_json::json;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Many jobs, many saves, automatic compaction and a size limit: throughput, memory, disk, open.
#[derive(Debug, Parser)]
struct Args {
    /// Jobs.
    #[arg(long, default_value_t = 100_000)]
    jobs: u64,
    /// Saves in all.
    #[arg(long, default_value_t = 10_000_000)]
    saves: u64,
    /// Saving threads.
    #[arg(long, default_value_t = 4)]
    threads: u64,
    /// Approximate bytes of each checkpoint's JSON.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Checkpoints kept per job (`Retention::keep_last`).
    #[arg(long, default_value_t = 2)]
    keep_last: usize,
    /// The size limit (`Retention::max_bytes`) in MiB.
    #[arg(long, default_value_t = 1024)]
    limit_mib: u64,
    /// Segment size in MiB.
    #[arg(long, default_value_t = 64)]
    segment_mib: u64,
    /// Durability of the saves.
    #[arg(long, value_enum, default_value_t = Mode::Buffered)]
    durability: Mode,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// No size limit and no automatic compaction: every save stays on disk (to build a large
    /// store for `--open-only`).
    #[arg(long)]
    no_compaction: bool,
    /// Only time the open of the existing store in `--dir` against the raw floor (best of
    /// `--open-runs`), and exit.
    #[arg(long, requires = "dir")]
    open_only: bool,
    /// Opens timed with `--open-only`.
    #[arg(long, default_value_t = 5)]
    open_runs: u32,
    /// Store directory (must not exist unless `--open-only`); a temporary one by default.
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    /// Every save waits for its fdatasync (shared by concurrent saves).
    Sync,
    /// Saves return from the page cache; a background thread syncs every 100 ms.
    Buffered,
    /// Saves return from the page cache; syncs at each new segment only.
    OsOnly,
}

impl Mode {
    fn durability(self) -> Durability {
        match self {
            Mode::Sync => Durability::Sync,
            Mode::Buffered => Durability::Buffered {
                interval: Duration::from_millis(100),
            },
            Mode::OsOnly => Durability::OsOnly,
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// Counts the `cairn: compacted` events.
#[derive(Default, Clone)]
struct Compactions(Arc<AtomicUsize>);

struct IsCompacted(bool);

impl tracing::field::Visit for IsCompacted {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}") == "cairn: compacted" {
            self.0 = true;
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Compactions {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = IsCompacted(false);
        event.record(&mut fields);
        if fields.0 {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A field of /proc/self/status, in bytes (the file gives kB).
fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// What the watcher thread saw: the disk high-water mark and the peak anonymous memory.
#[derive(Default)]
struct Peaks {
    disk_bytes: AtomicU64,
    segments: AtomicUsize,
    anon_bytes: AtomicU64,
}

fn watch(dir: &Path, peaks: &Peaks, stop: &AtomicBool) {
    let mut tick = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let DiskUse {
            allocated_bytes: bytes,
            segments,
            ..
        } = disk_use(dir);
        peaks.disk_bytes.fetch_max(bytes, Ordering::Relaxed);
        peaks.segments.fetch_max(segments, Ordering::Relaxed);
        if tick.is_multiple_of(10) {
            let anon = proc_status_bytes("RssAnon");
            peaks.anon_bytes.fetch_max(anon, Ordering::Relaxed);
        }
        tick += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn job_name(job: u64) -> String {
    format!("scale-job-{job:06}")
}

fn payload(job: u64, n: u64, pad: &str) -> serde_json::Value {
    json!({"cursor": format!("c{job}:{n:012}"), "processed": n * 100, "pad": pad})
}

/// Thread `thread` makes saves `thread, thread + threads, ...`: save `i` goes to job
/// `i % jobs`, with the data of its `i / jobs`-th checkpoint.
fn save_share(store: &Store, args: &Args, thread: u64, done: &AtomicU64) -> Result<(), String> {
    let pad = "x".repeat(args.payload_bytes.saturating_sub(60));
    let names: Vec<String> = (0..args.jobs).map(job_name).collect();
    let mut i = thread;
    while i < args.saves {
        let job = i % args.jobs;
        let name = names.get(usize::try_from(job).map_err(|e| e.to_string())?);
        let name = name.ok_or("job out of range")?;
        store
            .save(name, "extract", &payload(job, i / args.jobs, &pad))
            .map_err(|e| format!("save {i}: {e}"))?;
        done.fetch_add(1, Ordering::Relaxed);
        i += args.threads;
    }
    Ok(())
}

/// The raw floor of an open: read every segment file, walk its record frames, check both CRCs
/// of each. Returns the records and bytes read.
fn raw_read(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::io::Read;
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut file = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "seg") {
            continue;
        }
        file.clear();
        std::fs::File::open(&path)?.read_to_end(&mut file)?;
        bytes += file.len() as u64;
        records += walk_records(&file);
    }
    Ok((records, bytes))
}

fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Counts the records of one segment whose two CRCs check out, up to the first that does not.
fn walk_records(file: &[u8]) -> u64 {
    let Some(salt) = file.get(48..52) else {
        return 0;
    };
    let (mut offset, mut records) = (64usize, 0u64);
    loop {
        let Some(header) = file.get(offset..offset + 32) else {
            return records;
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(salt);
        crc.update(header.get(8..32).unwrap_or_default());
        if le_u32(header, 4) != Some(crc.finalize()) {
            return records;
        }
        let body_len = le_u32(header, 24).unwrap_or(0) as usize;
        let padded = (32 + body_len).div_ceil(8) * 8;
        let Some(record) = file.get(offset + 4..offset + padded) else {
            return records;
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(salt);
        crc.update(record);
        if le_u32(header, 0) != Some(crc.finalize()) {
            return records;
        }
        records += 1;
        offset += padded;
    }
}

/// The figures of one run.
#[derive(Debug, Serialize)]
struct Report {
    jobs: u64,
    saves: u64,
    threads: u64,
    payload_bytes: usize,
    keep_last: usize,
    limit_bytes: u64,
    segment_bytes: u64,
    durability: Mode,
    seconds: f64,
    saves_per_sec: f64,
    compactions: usize,
    compaction_failures: u64,
    disk_high_water_bytes: u64,
    segments_high_water: usize,
    disk_bytes_at_end: u64,
    peak_rss_bytes: u64,
    peak_anon_rss_bytes: u64,
    anon_rss_after_open_bytes: u64,
    index_bytes_estimate: u64,
    index_bytes_per_job: u64,
    open_ms: f64,
    raw_read_ms: f64,
    raw_read_bytes: u64,
    raw_records: u64,
    open_vs_raw: f64,
    checked_jobs: u64,
}

fn options(args: &Args) -> Options {
    let options = Options::default()
        .durability(args.durability.durability())
        .segment_size(args.segment_mib * MIB);
    if args.no_compaction {
        return options
            .retention(Retention::default().keep_last(args.keep_last))
            .auto_compact(AutoCompact::disabled());
    }
    options
        .retention(
            Retention::default()
                .keep_last(args.keep_last)
                .max_bytes(args.limit_mib * MIB),
        )
        .auto_compact(AutoCompact::default())
}

/// Saves, then closes: (seconds, compaction failures).
fn run_saves(dir: &Path, args: &Args) -> Result<(f64, u64), Box<dyn std::error::Error>> {
    let store = Store::open_with(dir, options(args))?;
    let done = AtomicU64::new(0);
    let started = Instant::now();
    let results: Vec<Result<(), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..args.threads)
            .map(|t| {
                let (store, done) = (&store, &done);
                scope.spawn(move || save_share(store, args, t, done))
            })
            .collect();
        if !args.json {
            while handles.iter().any(|h| !h.is_finished()) {
                std::thread::sleep(Duration::from_secs(5));
                let n = done.load(Ordering::Relaxed);
                let secs = started.elapsed().as_secs_f64();
                eprintln!("{n} saves, {secs:.0} s, {:.0}/s", n as f64 / secs);
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    for result in results {
        result?;
    }
    let failures = store.metrics().compaction_failures;
    store.close()?;
    Ok((seconds, failures))
}

/// Reopens, timed, and checks every job's latest checkpoint: (open ms, jobs checked, index
/// bytes).
fn reopen_and_check(
    dir: &Path,
    args: &Args,
) -> Result<(f64, u64, u64), Box<dyn std::error::Error>> {
    let started = Instant::now();
    let store = Store::open_with(dir, options(args))?;
    let open_ms = started.elapsed().as_secs_f64() * 1e3;
    let index_bytes = store.metrics().index_bytes_estimate;
    let per_job = args.saves / args.jobs;
    let extra = args.saves % args.jobs;
    let mut checked = 0;
    for job in 0..args.jobs.min(args.saves) {
        let n = per_job + u64::from(job < extra) - 1;
        let latest = store
            .latest(&job_name(job))?
            .ok_or_else(|| format!("{}: no checkpoint", job_name(job)))?;
        let cursor = format!("c{job}:{n:012}");
        if latest.data["cursor"] != cursor {
            return Err(
                format!("{}: latest is {}, not {cursor}", job_name(job), latest.data).into(),
            );
        }
        checked += 1;
    }
    store.close()?;
    Ok((open_ms, checked, index_bytes))
}

/// The open of the store in `dir` against the raw floor, best of `runs` each, from the page
/// cache (a first read warms it).
fn open_only(dir: &Path, args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let (records, bytes) = raw_read(dir)?;
    let (mut open_ms, mut raw_ms) = (f64::MAX, f64::MAX);
    for _ in 0..args.open_runs {
        let started = Instant::now();
        raw_read(dir)?;
        raw_ms = raw_ms.min(started.elapsed().as_secs_f64() * 1e3);
        let started = Instant::now();
        let store = Store::open_with(dir, options(args))?;
        open_ms = open_ms.min(started.elapsed().as_secs_f64() * 1e3);
        store.close()?;
    }
    let report = json!({
        "raw_read_bytes": bytes, "raw_records": records, "open_ms": open_ms,
        "raw_read_ms": raw_ms, "open_vs_raw": raw_ms / open_ms,
        "open_gib_per_sec": bytes as f64 / (1u64 << 30) as f64 / (open_ms / 1e3),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let (true, Some(dir)) = (args.open_only, &args.dir) {
        return open_only(dir, &args);
    }
    let compactions = Compactions::default();
    tracing_subscriber::registry()
        .with(compactions.clone())
        .try_init()?;
    let temp = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().join("store"));
    let peaks = Peaks::default();
    let stop = AtomicBool::new(false);
    let (saved, reopened) = std::thread::scope(|scope| {
        scope.spawn(|| watch(&dir, &peaks, &stop));
        let saved = run_saves(&dir, &args);
        let reopened = saved.as_ref().ok().map(|_| reopen_and_check(&dir, &args));
        stop.store(true, Ordering::Relaxed);
        (saved, reopened)
    });
    let (seconds, compaction_failures) = saved?;
    let anon_rss_after_open_bytes = proc_status_bytes("RssAnon");
    let (open_ms, checked_jobs, index_bytes) = reopened.ok_or("no reopen")??;
    let started = Instant::now();
    let (raw_records, raw_read_bytes) = raw_read(&dir)?;
    let raw_read_ms = started.elapsed().as_secs_f64() * 1e3;
    let report = Report {
        jobs: args.jobs,
        saves: args.saves,
        threads: args.threads,
        payload_bytes: args.payload_bytes,
        keep_last: args.keep_last,
        limit_bytes: args.limit_mib * MIB,
        segment_bytes: args.segment_mib * MIB,
        durability: args.durability,
        seconds,
        saves_per_sec: args.saves as f64 / seconds,
        compactions: compactions.0.load(Ordering::Relaxed),
        compaction_failures,
        disk_high_water_bytes: peaks.disk_bytes.load(Ordering::Relaxed),
        segments_high_water: peaks.segments.load(Ordering::Relaxed),
        disk_bytes_at_end: disk_use(&dir).allocated_bytes,
        peak_rss_bytes: proc_status_bytes("VmHWM"),
        peak_anon_rss_bytes: peaks.anon_bytes.load(Ordering::Relaxed),
        anon_rss_after_open_bytes,
        index_bytes_estimate: index_bytes,
        index_bytes_per_job: index_bytes / args.jobs.max(1),
        open_ms,
        raw_read_ms,
        raw_read_bytes,
        raw_records,
        open_vs_raw: raw_read_ms / open_ms,
        checked_jobs,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report:#?}");
    }
    Ok(())
}
