//! The long soak of the size limit: continuous durable saves from several threads into a store
//! with `Retention::max_bytes`, for a given time, while the background compactor keeps the
//! store small. It measures what issue 5 asks for:
//!
//! - the disk use over time, from the file system (the segment files in the store directory,
//!   a compacted segment being written included), sampled every 250 ms for the series and
//!   polled every millisecond for the maximum;
//! - the latency of every save, and so the longest pause overall and while a compaction ran,
//!   against the median and p99; compactions are timed from cairn's own `cairn: compacted`
//!   log event (its `duration_us`), which also tells whether the background compactor ran it
//!   or a save that needed room at the limit.
//!
//! At the end it reopens the store and checks that every job's latest checkpoint is its last
//! save. It exits 1 if a save failed, a check failed, or the disk use passed the limit plus one
//! segment.
//!
//! ```text
//! cargo run --release --example soak -- 60           # a readable summary
//! cargo run --release --example soak -- 60 --json    # one JSON object, the series included
//! ```
//!
//! `--help` lists the workload options (threads, jobs, payload, segment size, limit, keep-last).

#[path = "support/disk_use.rs"]
mod disk_use;

use disk_use::{DiskUse, disk_use};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cairn::{Options, Retention, Store};
use clap::Parser;
use serde::Serialize;
use serde_json::json;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

/// Continuous saves under a size limit: disk use over time and save pauses during compaction.
#[derive(Debug, Parser)]
struct Args {
    /// How long to save, in seconds.
    #[arg(default_value_t = 10)]
    seconds: u64,
    /// Print one JSON object instead of the summary.
    #[arg(long)]
    json: bool,
    /// Saving threads.
    #[arg(long, default_value_t = 4)]
    threads: usize,
    /// Jobs, shared out between the threads.
    #[arg(long, default_value_t = 64)]
    jobs: usize,
    /// Approximate bytes of each checkpoint's JSON.
    #[arg(long, default_value_t = 1024)]
    payload_bytes: usize,
    /// Segment size in KiB.
    #[arg(long, default_value_t = 256)]
    segment_kib: u64,
    /// The size limit (`Retention::max_bytes`) in KiB.
    #[arg(long, default_value_t = 4096)]
    limit_kib: u64,
    /// Checkpoints kept per job (`Retention::keep_last`).
    #[arg(long, default_value_t = 5)]
    keep_last: usize,
    /// Store directory (must not exist); a temporary one by default.
    #[arg(long)]
    dir: Option<PathBuf>,
}

const SAMPLE_EVERY: Duration = Duration::from_millis(250);
const POLL_EVERY: Duration = Duration::from_millis(1);
const LONGEST_SAVES: usize = 5;

/// The clock every time in this example is measured on.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_us() -> u64 {
    u64::try_from(epoch().elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// One compaction, as cairn logged it.
#[derive(Debug, Clone, Copy, Serialize)]
struct Compaction {
    start_us: u64,
    end_us: u64,
    /// Run by the background compactor (else by a save that needed room, or `compact()`).
    background: bool,
    bytes_freed: u64,
}

/// Collects the `cairn: compacted` events. The event is logged at the end of a compaction with
/// its duration, so the compaction ran from `now - duration_us` to now.
#[derive(Default, Clone)]
struct CompactionLog(Arc<Mutex<Vec<Compaction>>>);

#[derive(Default)]
struct CompactedFields {
    is_compacted: bool,
    duration_us: u64,
    bytes_freed: u64,
}

impl tracing::field::Visit for CompactedFields {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        match field.name() {
            "duration_us" => self.duration_us = value,
            "bytes_freed" => self.bytes_freed = value,
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" && format!("{value:?}") == "cairn: compacted" {
            self.is_compacted = true;
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CompactionLog {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let end_us = now_us();
        let mut fields = CompactedFields::default();
        event.record(&mut fields);
        if !fields.is_compacted {
            return;
        }
        let background = std::thread::current().name() == Some("cairn-compactor");
        let compaction = Compaction {
            start_us: end_us.saturating_sub(fields.duration_us),
            end_us,
            background,
            bytes_freed: fields.bytes_freed,
        };
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(compaction);
    }
}

impl CompactionLog {
    fn count(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    fn take(&self) -> Vec<Compaction> {
        std::mem::take(
            &mut *self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// One point of the disk-use series.
#[derive(Debug, Clone, Copy, Serialize)]
struct Sample {
    seconds: f64,
    disk_bytes: u64,
    segments: usize,
    compactions: usize,
}

/// Samples the disk use until `stop`: the series, and the largest value polled.
fn sample_disk(
    dir: &Path,
    compactions: &CompactionLog,
    stop: &AtomicBool,
    started: Instant,
) -> (Vec<Sample>, u64) {
    let mut series = Vec::new();
    let mut max_bytes = 0;
    let mut next_sample = started;
    while !stop.load(Ordering::Relaxed) {
        let DiskUse {
            length_bytes: bytes,
            segments,
            ..
        } = disk_use(dir);
        max_bytes = max_bytes.max(bytes);
        if Instant::now() >= next_sample {
            series.push(Sample {
                seconds: started.elapsed().as_secs_f64(),
                disk_bytes: bytes,
                segments,
                compactions: compactions.count(),
            });
            next_sample += SAMPLE_EVERY;
        }
        std::thread::sleep(POLL_EVERY);
    }
    (series, max_bytes)
}

/// One save: when it started and how long it took, in microseconds.
#[derive(Debug, Clone, Copy)]
struct SaveTime {
    start_us: u64,
    latency_us: u64,
}

/// What a saving thread did: its saves' times, and the last save of each of its jobs.
struct ThreadResult {
    saves: Vec<SaveTime>,
    last: HashMap<String, (u64, u64)>,
    error: Option<String>,
}

fn save_until(store: &Store, args: &Args, thread: usize, deadline: Instant) -> ThreadResult {
    let jobs: Vec<String> = (thread..args.jobs)
        .step_by(args.threads)
        .map(|j| format!("soak-job-{j:04}"))
        .collect();
    let pad = "x".repeat(args.payload_bytes.saturating_sub(120));
    let mut result = ThreadResult {
        saves: Vec::new(),
        last: HashMap::new(),
        error: None,
    };
    let mut n = 0u64;
    while Instant::now() < deadline && !jobs.is_empty() {
        let job = &jobs[n as usize % jobs.len()];
        let data = json!({"cursor": format!("c{n:012}"), "processed": n, "thread": thread,
            "source": "https://api.example.com/v1/items", "pad": pad});
        let start_us = now_us();
        match store.save(job, "extract", &data) {
            Ok(seq) => {
                result.saves.push(SaveTime {
                    start_us,
                    latency_us: now_us() - start_us,
                });
                result.last.insert(job.clone(), (seq, n));
            }
            Err(e) => {
                result.error = Some(format!("{job}: {e}"));
                break;
            }
        }
        n += 1;
    }
    result
}

/// Latency percentiles of a set of saves, in microseconds.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct Latency {
    saves: usize,
    p50_us: u64,
    p90_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

fn latency(mut us: Vec<u64>) -> Latency {
    if us.is_empty() {
        return Latency::default();
    }
    us.sort_unstable();
    let at = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize];
    Latency {
        saves: us.len(),
        p50_us: at(0.5),
        p90_us: at(0.9),
        p99_us: at(0.99),
        p999_us: at(0.999),
        max_us: at(1.0),
    }
}

/// Whether a save overlapped one of `intervals` (sorted by start, not overlapping).
fn overlaps(intervals: &[Compaction], save: SaveTime) -> bool {
    let end = save.start_us + save.latency_us;
    let i = intervals.partition_point(|c| c.end_us < save.start_us);
    intervals.get(i).is_some_and(|c| c.start_us <= end)
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// What a run found.
struct Outcome {
    elapsed: Duration,
    disk: DiskSummary,
    series: Vec<Sample>,
    report: Report,
    compactions: Vec<Compaction>,
    metrics: cairn::Metrics,
    failures: Vec<String>,
}

fn run(args: &Args) -> Result<bool, Box<dyn std::error::Error>> {
    if args.threads == 0 || args.jobs < args.threads {
        return Err("--jobs must be at least --threads, which must be at least 1".into());
    }
    let compaction_log = CompactionLog::default();
    tracing_subscriber::registry()
        .with(compaction_log.clone())
        .try_init()?;
    let temp = tempfile::tempdir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| temp.path().join("store"));
    if dir.exists() {
        return Err(format!("{} exists; give a new directory", dir.display()).into());
    }
    let (segment_size_bytes, limit_bytes) = (args.segment_kib * 1024, args.limit_kib * 1024);
    let options = Options::default()
        .segment_size(segment_size_bytes)
        .retention(
            Retention::default()
                .keep_last(args.keep_last)
                .max_bytes(limit_bytes),
        );
    let store = Store::open_with(&dir, options.clone())?;
    let (results, series, max_polled_bytes, elapsed) =
        run_savers(&store, &dir, args, &compaction_log);
    let metrics = store.metrics();
    drop(store);
    let compactions = compaction_log.take();
    let mut failures: Vec<String> = results.iter().filter_map(|r| r.error.clone()).collect();
    if max_polled_bytes > limit_bytes + segment_size_bytes {
        failures.push(format!(
            "disk use reached {max_polled_bytes} bytes, over the limit plus one segment"
        ));
    }
    failures.extend(check_latest(&dir, options, &results)?);
    let outcome = Outcome {
        elapsed,
        disk: DiskSummary::new(&series, max_polled_bytes, limit_bytes, segment_size_bytes),
        report: Report::new(&results, &compactions),
        series,
        compactions,
        metrics,
        failures,
    };
    if args.json {
        print_json(args, &outcome)?;
    } else {
        print_summary(args, &outcome);
    }
    Ok(outcome.failures.is_empty())
}

/// Saves from `args.threads` threads until the time is up, sampling the disk use meanwhile.
/// Returns what each thread did, the disk-use series, the largest disk use polled, and the
/// time taken.
fn run_savers(
    store: &Store,
    dir: &Path,
    args: &Args,
    compaction_log: &CompactionLog,
) -> (Vec<ThreadResult>, Vec<Sample>, u64, Duration) {
    let started = Instant::now();
    let _ = epoch();
    let deadline = started + Duration::from_secs(args.seconds);
    let stop = AtomicBool::new(false);
    let (results, (series, max_polled_bytes)) = std::thread::scope(|scope| {
        let sampler = scope.spawn(|| sample_disk(dir, compaction_log, &stop, started));
        let savers: Vec<_> = (0..args.threads)
            .map(|t| {
                std::thread::Builder::new()
                    .name(format!("saver-{t}"))
                    .spawn_scoped(scope, move || save_until(store, args, t, deadline))
                    .expect("spawn a saver")
            })
            .collect();
        let results: Vec<ThreadResult> = savers
            .into_iter()
            .map(|s| s.join().expect("saver thread"))
            .collect();
        stop.store(true, Ordering::Relaxed);
        (results, sampler.join().expect("sampler thread"))
    });
    (results, series, max_polled_bytes, started.elapsed())
}

fn print_json(args: &Args, outcome: &Outcome) -> Result<(), Box<dyn std::error::Error>> {
    let Outcome {
        elapsed,
        disk,
        series,
        report,
        compactions,
        metrics,
        failures,
    } = outcome;
    let out = json!({
        "config": {
            "seconds": args.seconds, "threads": args.threads, "jobs": args.jobs,
            "payload_bytes": args.payload_bytes, "segment_bytes": disk.segment_bytes,
            "limit_bytes": disk.limit_bytes, "keep_last": args.keep_last, "durability": "sync",
        },
        "elapsed_s": elapsed.as_secs_f64(),
        "saves": report.overall.saves,
        "saves_per_s": report.overall.saves as f64 / elapsed.as_secs_f64(),
        "disk": disk,
        "latency": report,
        "compactions": compactions,
        "metrics_at_end": metrics,
        "series": series,
        "failures": failures,
        "ok": failures.is_empty(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Reopens the store: every job's latest checkpoint must be the last save of it.
fn check_latest(
    dir: &Path,
    options: Options,
    results: &[ThreadResult],
) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let store = Store::open_with(dir, options)?;
    let mut failures = Vec::new();
    for (job, &(seq, n)) in results.iter().flat_map(|r| &r.last) {
        match store.latest(job)? {
            Some(c) if c.seq == seq && c.data["processed"] == n => {}
            other => failures.push(format!(
                "{job}: latest is {:?}, its last save was seq {seq}",
                other.map(|c| c.seq)
            )),
        }
    }
    Ok(failures)
}

#[derive(Debug, Serialize)]
struct DiskSummary {
    limit_bytes: u64,
    segment_bytes: u64,
    /// Lowest sample once the first compaction ran (before it, the store is just filling).
    min_bytes_after_first_compaction: Option<u64>,
    max_sampled_bytes: u64,
    /// The largest value polled every millisecond (catches compacted files being written).
    max_polled_bytes: u64,
    final_bytes: u64,
    max_segments: usize,
}

impl DiskSummary {
    fn new(series: &[Sample], max_polled: u64, limit: u64, segment: u64) -> DiskSummary {
        let after_first = series.iter().filter(|s| s.compactions > 0);
        DiskSummary {
            limit_bytes: limit,
            segment_bytes: segment,
            min_bytes_after_first_compaction: after_first.map(|s| s.disk_bytes).min(),
            max_sampled_bytes: series.iter().map(|s| s.disk_bytes).max().unwrap_or(0),
            max_polled_bytes: max_polled
                .max(series.iter().map(|s| s.disk_bytes).max().unwrap_or(0)),
            final_bytes: series.last().map_or(0, |s| s.disk_bytes),
            max_segments: series.iter().map(|s| s.segments).max().unwrap_or(0),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report {
    overall: Latency,
    /// Saves that overlapped a background compaction.
    during_background_compaction: Latency,
    /// Saves that overlapped no compaction.
    outside_compaction: Latency,
    /// Saves that overlapped a compaction run by a save (at the limit) or `compact()`.
    during_foreground_compaction: Latency,
    compactions_background: usize,
    compactions_foreground: usize,
    compaction_duration: Latency,
    /// The longest saves, longest first.
    longest_saves: Vec<LongSave>,
}

/// One of the longest saves.
#[derive(Debug, Serialize)]
struct LongSave {
    /// When it started, in seconds since the run started.
    at_s: f64,
    latency_ms: f64,
    /// It overlapped a compaction (background or by a save).
    during_compaction: bool,
}

impl Report {
    fn new(results: &[ThreadResult], compactions: &[Compaction]) -> Report {
        let (mut background, mut foreground): (Vec<Compaction>, Vec<Compaction>) =
            compactions.iter().partition(|c| c.background);
        background.sort_by_key(|c| c.start_us);
        foreground.sort_by_key(|c| c.start_us);
        let saves = results.iter().flat_map(|r| &r.saves).copied();
        let mut longest: Vec<SaveTime> = saves.clone().collect();
        longest.sort_unstable_by_key(|s| std::cmp::Reverse(s.latency_us));
        longest.truncate(LONGEST_SAVES);
        let longest_saves = longest
            .into_iter()
            .map(|save| LongSave {
                at_s: save.start_us as f64 / 1e6,
                latency_ms: save.latency_us as f64 / 1e3,
                during_compaction: overlaps(&background, save) || overlaps(&foreground, save),
            })
            .collect();
        let (mut all, mut during_bg, mut during_fg, mut outside) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for save in saves {
            all.push(save.latency_us);
            let (bg, fg) = (overlaps(&background, save), overlaps(&foreground, save));
            if bg {
                during_bg.push(save.latency_us);
            }
            if fg {
                during_fg.push(save.latency_us);
            }
            if !bg && !fg {
                outside.push(save.latency_us);
            }
        }
        Report {
            overall: latency(all),
            during_background_compaction: latency(during_bg),
            outside_compaction: latency(outside),
            during_foreground_compaction: latency(during_fg),
            compactions_background: background.len(),
            compactions_foreground: foreground.len(),
            compaction_duration: latency(
                compactions.iter().map(|c| c.end_us - c.start_us).collect(),
            ),
            longest_saves,
        }
    }
}

fn kib(bytes: u64) -> String {
    format!("{:.0} KiB", bytes as f64 / 1024.0)
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

fn print_summary(args: &Args, outcome: &Outcome) {
    let (disk, report) = (&outcome.disk, &outcome.report);
    let secs = outcome.elapsed.as_secs_f64();
    println!(
        "soak: {:.1} s, {} threads, {} jobs, ~{} B checkpoints, {} segments, limit {}, \
         keep_last {}, durability sync",
        secs,
        args.threads,
        args.jobs,
        args.payload_bytes,
        kib(disk.segment_bytes),
        kib(disk.limit_bytes),
        args.keep_last
    );
    println!(
        "saves: {} ({:.0}/s)",
        report.overall.saves,
        report.overall.saves as f64 / secs
    );
    println!(
        "disk use: min {} (after the first compaction), max {} sampled / {} polled every ms, \
         final {}; limit {} ({:.0}% at most), max {} segment files",
        disk.min_bytes_after_first_compaction
            .map_or("-".into(), kib),
        kib(disk.max_sampled_bytes),
        kib(disk.max_polled_bytes),
        kib(disk.final_bytes),
        kib(disk.limit_bytes),
        disk.max_polled_bytes as f64 * 100.0 / disk.limit_bytes as f64,
        disk.max_segments,
    );
    print_series(&outcome.series);
    println!(
        "compactions: {} in the background, {} by saves at the limit; duration median {}, max {}",
        report.compactions_background,
        report.compactions_foreground,
        ms(report.compaction_duration.p50_us),
        ms(report.compaction_duration.max_us),
    );
    print_latency(report);
    if outcome.failures.is_empty() {
        println!(
            "ok: no save failed, disk use within the limit plus one segment, every latest \
             intact after reopen"
        );
    } else {
        for failure in &outcome.failures {
            println!("FAILED: {failure}");
        }
    }
}

fn print_latency(report: &Report) {
    let line = |name: &str, l: &Latency| {
        println!(
            "  {name:<34} {:>8} saves  p50 {:>9}  p99 {:>9}  p99.9 {:>9}  max {:>9}",
            l.saves,
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.p999_us),
            ms(l.max_us)
        );
    };
    let (overall, during) = (&report.overall, &report.during_background_compaction);
    println!("save latency:");
    line("all saves", overall);
    line("outside any compaction", &report.outside_compaction);
    line("during a background compaction", during);
    line(
        "during a compaction by a save",
        &report.during_foreground_compaction,
    );
    if overall.p50_us > 0 {
        println!(
            "longest pause: {} overall ({:.0}x the median, {:.1}x p99); {} during a background \
             compaction ({:.0}x the median, {:.1}x p99)",
            ms(overall.max_us),
            overall.max_us as f64 / overall.p50_us as f64,
            overall.max_us as f64 / overall.p99_us.max(1) as f64,
            ms(during.max_us),
            during.max_us as f64 / overall.p50_us as f64,
            during.max_us as f64 / overall.p99_us.max(1) as f64,
        );
    }
    let longest: Vec<String> = report
        .longest_saves
        .iter()
        .map(|s| {
            let during = if s.during_compaction {
                ", in a compaction"
            } else {
                ""
            };
            format!("{:.1} ms at {:.1} s{during}", s.latency_ms, s.at_s)
        })
        .collect();
    println!("longest saves: {}", longest.join("; "));
}

/// The disk-use series, at most `ROWS` rows (every k-th sample), as a table with a bar.
fn print_series(series: &[Sample]) {
    const ROWS: usize = 30;
    const BAR_WIDTH: u64 = 40;
    let max = series
        .iter()
        .map(|s| s.disk_bytes)
        .max()
        .unwrap_or(1)
        .max(1);
    let step = series.len().div_ceil(ROWS).max(1);
    println!(
        "disk use over time (every {:.2} s):",
        SAMPLE_EVERY.as_secs_f64() * step as f64
    );
    println!(
        "  {:>7}  {:>10}  {:>8}  {:>11}",
        "seconds", "disk", "segments", "compactions"
    );
    for sample in series.iter().step_by(step) {
        let bar = "#".repeat((sample.disk_bytes * BAR_WIDTH / max) as usize);
        println!(
            "  {:>7.2}  {:>10}  {:>8}  {:>11}  {bar}",
            sample.seconds,
            kib(sample.disk_bytes),
            sample.segments,
            sample.compactions
        );
    }
}
