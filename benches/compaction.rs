//! Benchmarks of compaction.
//!
//! - `compact/jobs_<J>_x20_keep3`: one `Store::compact()` of a never-compacted store holding
//!   J jobs × 20 checkpoints of about 300 bytes (J = 250 and 1,000: about 2 and 8 MB of
//!   records in 1 MiB segments), with `keep_last(3)`: it seals the segment being written
//!   (an explicit compaction takes every record), reads every segment, keeps 3 checkpoints per
//!   job, writes and syncs the compacted segment, renames it into place and removes the old
//!   ones. Each iteration compacts a fresh copy of the same store (the copy and the open are
//!   not timed). Throughput is bytes of records compacted per second.
//! - `save_latency_during_compaction` (not a criterion benchmark: criterion reports means, and
//!   this is about the tail): on a fresh copy of the 1,000-job store, durable saves
//!   (`Durability::Sync`, one thread) are timed one by one without a compaction (idle, and
//!   beside a thread spinning on the CPU, see [`TrialLatencies::busy`]), then while
//!   `compact()` runs in another thread, then idle again; over several trials. It prints the
//!   percentiles of each set of saves and the ratios, measured in the same run.
//!
//! Run with `cargo bench --bench compaction` (about a minute). docs/PERFORMANCE.md has the
//! figures and the machine they came from.

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn::{AutoCompact, Durability, Options, Retention, Store};
use criterion::{Criterion, Throughput, criterion_group};
use serde_json::json;

const CHECKPOINTS_PER_JOB: u64 = 20;
const KEEP_LAST: usize = 3;
const SEGMENT_SIZE_BYTES: u64 = 1024 * 1024;
const JOB_COUNTS: [u64; 2] = [250, 1_000];
/// Trials of the latency report (one when the bench binary runs as a test).
const LATENCY_TRIALS: usize = 12;
/// Saves timed in each baseline of a trial (idle before and after, CPU busy).
const IDLE_SAVES_PER_TRIAL: usize = 300;

fn options(durability: Durability) -> Options {
    Options::default()
        .durability(durability)
        .segment_size(SEGMENT_SIZE_BYTES)
        .retention(Retention::default().keep_last(KEEP_LAST))
        .auto_compact(AutoCompact::disabled())
}

/// A typical ETL checkpoint of about 300 bytes of JSON.
fn progress(job: u64, n: u64) -> serde_json::Value {
    json!({
        "cursor": format!("Y3Vyc29yOnYyOpK5MjAyNC0wNi0x{job:06}{n:06}"),
        "processed": 1_000_000 + n * 100,
        "failed": n % 7,
        "source": "https://api.github.com/repos/acme/etl/pulls?state=all&per_page=100",
        "since": "2024-06-12T08:15:42Z",
        "last_id": format!("PR_kwDOAbCdEf5xYz{job:08}"),
        "queue": ["acme/api", "acme/web", "acme/etl"],
    })
}

/// A store of `jobs` × `CHECKPOINTS_PER_JOB` checkpoints, saved round by round (so every
/// segment holds checkpoints of every job), never compacted. Returns the bytes of its
/// records.
fn build_template(dir: &Path, jobs: u64) -> u64 {
    let store = Store::open_with(dir, options(Durability::OsOnly)).expect("open template");
    for n in 0..CHECKPOINTS_PER_JOB {
        for job in 0..jobs {
            store
                .save(&format!("job-{job:05}"), "extract", &progress(job, n))
                .expect("save");
        }
    }
    let record_bytes = store.stats().expect("stats").record_bytes;
    assert!(
        store.segment_count() >= 2,
        "the template must have sealed segments"
    );
    store.close().expect("close template");
    record_bytes
}

/// A fresh copy of the template store, synced: otherwise the write-back of the copy would
/// compete with the syncs being measured.
fn copy_store(template: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(template).expect("list template") {
        let entry = entry.expect("entry");
        let to = copy.path().join(entry.file_name());
        std::fs::copy(entry.path(), &to).expect("copy");
        std::fs::File::open(&to)
            .and_then(|f| f.sync_all())
            .expect("sync copy");
    }
    std::fs::File::open(copy.path())
        .and_then(|d| d.sync_all())
        .expect("sync copy directory");
    copy
}

fn bench_compact(c: &mut Criterion) {
    let mut group = c.benchmark_group("compact");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for jobs in JOB_COUNTS {
        let template = tempfile::tempdir().expect("tempdir");
        let record_bytes = build_template(template.path(), jobs);
        group.throughput(Throughput::Bytes(record_bytes));
        let name = format!("jobs_{jobs}_x{CHECKPOINTS_PER_JOB}_keep{KEEP_LAST}");
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let copy = copy_store(template.path());
                    let store = Store::open_with(copy.path(), options(Durability::Sync))
                        .expect("open copy");
                    let started = Instant::now();
                    let report = black_box(store.compact().expect("compact"));
                    total += started.elapsed();
                    assert!(report.compacted && report.checkpoints_dropped > 0);
                }
                total
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench_compact);

/// Latencies of one set of saves, in microseconds.
struct Percentiles {
    saves: usize,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    max_us: f64,
}

fn percentiles(mut latencies: Vec<Duration>) -> Percentiles {
    assert!(!latencies.is_empty(), "no saves timed");
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() - 1) as f64 * q).round() as usize;
        latencies[i].as_secs_f64() * 1e6
    };
    Percentiles {
        saves: latencies.len(),
        p50_us: at(0.5),
        p90_us: at(0.9),
        p99_us: at(0.99),
        max_us: at(1.0),
    }
}

/// The saves of one trial, timed one by one.
#[derive(Default)]
struct TrialLatencies {
    /// Nothing else running.
    idle: Vec<Duration>,
    /// Another thread spinning on the CPU meanwhile. On a virtual machine an idle vCPU sleeps,
    /// and waking it when the disk completes a sync can take a host scheduler tick; a
    /// compaction keeps a vCPU busy and so hides that delay. This baseline keeps a vCPU busy
    /// too, so that comparing with it isolates what the compaction itself costs a save.
    busy: Vec<Duration>,
    during: Vec<Duration>,
    compaction: Duration,
}

/// One trial on a fresh copy of `template`: idle saves, saves beside a spinning thread,
/// saves while `compact()` runs in another thread, then idle saves again.
fn latency_trial(template: &Path) -> TrialLatencies {
    let copy = copy_store(template);
    let store = Store::open_with(copy.path(), options(Durability::Sync)).expect("open copy");
    let mut n = 0u64;
    let mut timed_save = |store: &Store| {
        let job = n % 1_000;
        let data = progress(job, CHECKPOINTS_PER_JOB + n);
        n += 1;
        let started = Instant::now();
        black_box(store.save(&format!("job-{job:05}"), "extract", &data)).expect("save");
        started.elapsed()
    };
    let mut trial = TrialLatencies::default();
    trial
        .idle
        .extend((0..IDLE_SAVES_PER_TRIAL).map(|_| timed_save(&store)));
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        trial
            .busy
            .extend((0..IDLE_SAVES_PER_TRIAL).map(|_| timed_save(&store)));
        done.store(true, Ordering::Relaxed);
    });
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let compactor = scope.spawn(|| {
            let started = Instant::now();
            let report = store.compact().expect("compact");
            assert!(report.compacted);
            done.store(true, Ordering::Release);
            started.elapsed()
        });
        while !done.load(Ordering::Acquire) {
            trial.during.push(timed_save(&store));
        }
        trial.compaction = compactor.join().expect("compaction thread");
    });
    trial
        .idle
        .extend((0..IDLE_SAVES_PER_TRIAL).map(|_| timed_save(&store)));
    trial
}

/// Prints the save latency without and during a compaction, with ratios.
fn save_latency_during_compaction(trials: usize) {
    let jobs = 1_000;
    let template = tempfile::tempdir().expect("tempdir");
    let record_bytes = build_template(template.path(), jobs);
    let mut all = TrialLatencies::default();
    let mut compactions = Vec::new();
    for _ in 0..trials {
        let trial = latency_trial(template.path());
        all.idle.extend(trial.idle);
        all.busy.extend(trial.busy);
        all.during.extend(trial.during);
        compactions.push(trial.compaction);
    }
    compactions.sort_unstable();
    let compaction_ms = compactions[compactions.len() / 2].as_secs_f64() * 1e3;
    let idle = percentiles(all.idle);
    let busy = percentiles(all.busy);
    let during = percentiles(all.during);
    println!(
        "save_latency_during_compaction: {trials} trials, {jobs} jobs x {CHECKPOINTS_PER_JOB}, \
         {:.1} MB of records, keep_last {KEEP_LAST}, Durability::Sync, 1 saving thread; \
         compaction median {compaction_ms:.1} ms",
        record_bytes as f64 / 1e6
    );
    println!(
        "  {:<34} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "saves", "count", "p50 us", "p90 us", "p99 us", "max us"
    );
    let rows = [
        ("without compaction, idle", &idle),
        ("without compaction, CPU busy", &busy),
        ("during compaction", &during),
    ];
    for (name, p) in rows {
        println!(
            "  {name:<34} {:>6} {:>9.0} {:>9.0} {:>9.0} {:>9.0}",
            p.saves, p.p50_us, p.p90_us, p.p99_us, p.max_us
        );
    }
    for (name, base) in [
        ("ratio during / idle", &idle),
        ("ratio during / CPU busy", &busy),
    ] {
        println!(
            "  {name:<34} {:>6} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
            "",
            during.p50_us / base.p50_us,
            during.p90_us / base.p90_us,
            during.p99_us / base.p99_us,
            during.max_us / base.max_us
        );
    }
}

fn main() {
    benches();
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes --bench; without it (`cargo test --benches`) everything runs once.
    let bench_mode = args.iter().any(|a| a == "--bench");
    let name = "save_latency_during_compaction";
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())) {
        save_latency_during_compaction(if bench_mode { LATENCY_TRIALS } else { 1 });
    }
    Criterion::default().configure_from_args().final_summary();
}
