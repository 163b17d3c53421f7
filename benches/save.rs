//! Benchmarks of the save path and of opening a store.
//!
//! - `save_sync`: durable saves (`Durability::Sync`) of a ~200-byte JSON checkpoint from 1, 2, 4
//!   and 8 threads at once. Throughput is saves per second over all threads, so the 8-thread
//!   figure divided by the 1-thread one is what group commit buys.
//! - `save_unsynced`: the same save with `Durability::Buffered` and `Durability::OsOnly`, one
//!   thread, to show what the sync costs.
//! - `baseline/msync_append`: no cairn at all: append the same number of bytes as one save to a
//!   preallocated, memory-mapped file and `msync` them, as a durable save does. It shows what
//!   the disk alone costs in the same run, which matters on a noisy machine.
//! - `baseline_1k/msync_append` and `baseline_1k/pwrite_fdatasync_append`: no cairn: append a
//!   1 KiB record to a preallocated file and make it durable, once by copying it into a
//!   read-write shared map and `msync`ing it (how cairn wrote records before issue 14), once by
//!   `pwrite` and `fdatasync` (how it writes them now, docs/FORMAT.md). The two write paths
//!   side by side, on the same disk in the same run.
//! - `open`: `Store::open` (writer: recovery scan, tail sync, lock) and `Store::open_read_only`
//!   of a store holding 100,000 checkpoints of 1,000 jobs, page cache warm.
//!
//! Every benchmark uses a fresh store in a temporary directory with default options, except
//! for the durability mode. docs/PERFORMANCE.md has the figures and the machine they came from.
//!
//! Run with `cargo bench --bench save`; a whole run takes a few minutes.

use std::hint::black_box;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use cairn::{Durability, Options, Store};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde::Serialize;
use std::os::fd::AsRawFd;

/// A typical ETL checkpoint: a cursor, counters and a little context.
#[derive(Serialize)]
struct Progress<'a> {
    cursor: &'a str,
    processed: u64,
    failed: u64,
    batch: u32,
    source: &'a str,
    since: &'a str,
    last_id: &'a str,
}

fn progress(i: u64) -> Progress<'static> {
    Progress {
        cursor: "Y3Vyc29yOnYyOpK5MjAyNC0wNi0x",
        processed: 1_000_000 + i,
        failed: i % 17,
        batch: (i % 1000) as u32,
        source: "https://api.github.com/repos/acme/etl/pulls",
        since: "2024-06-12T08:15:42Z",
        last_id: "PR_kwDOAbCdEf5xYz12",
    }
}

/// The serialized size the benchmarks claim; checked once so the claim stays true.
const PAYLOAD_BYTES_APPROX: usize = 200;

const THREAD_COUNTS: [u64; 4] = [1, 2, 4, 8];
const RECORDS_FOR_OPEN: u64 = 100_000;
const JOBS_FOR_OPEN: u64 = 1_000;

fn open_store(dir: &Path, durability: Durability) -> Store {
    Store::open_with(dir, Options::default().durability(durability)).expect("open bench store")
}

/// Runs `saves_per_thread` saves on each of `threads` threads against one store and returns
/// the wall time from the moment all threads are ready until the last save returned.
fn concurrent_saves(store: &Store, threads: u64, saves_per_thread: u64) -> Duration {
    let ready = Barrier::new(threads as usize + 1);
    let done = Barrier::new(threads as usize + 1);
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (ready, done) = (&ready, &done);
            scope.spawn(move || {
                let job = format!("job-{t}");
                ready.wait();
                for i in 0..saves_per_thread {
                    black_box(store.save(&job, "extract", &progress(i)).expect("save"));
                }
                done.wait();
            });
        }
        ready.wait();
        let started = Instant::now();
        done.wait();
        started.elapsed()
    })
}

fn bench_save_sync(c: &mut Criterion) {
    let mut group = c.benchmark_group("save_sync");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for threads in THREAD_COUNTS {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(dir.path(), Durability::Sync);
        // One iteration is one save on each thread.
        group.throughput(Throughput::Elements(threads));
        group.bench_with_input(
            BenchmarkId::new("threads", threads),
            &threads,
            |b, &threads| b.iter_custom(|iters| concurrent_saves(&store, threads, iters)),
        );
    }
    group.finish();
}

fn bench_save_unsynced(c: &mut Criterion) {
    let mut group = c.benchmark_group("save_unsynced");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    let modes = [
        (
            "buffered_100ms",
            Durability::Buffered {
                interval: Duration::from_millis(100),
            },
        ),
        ("os_only", Durability::OsOnly),
    ];
    for (name, durability) in modes {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = open_store(dir.path(), durability);
        let mut i = 0u64;
        group.bench_function(name, |b| {
            b.iter(|| {
                i += 1;
                black_box(store.save("job", "extract", &progress(i)).expect("save"))
            })
        });
    }
    group.finish();
}

/// Bytes one bench save occupies in a segment: 32-byte record header, 4-byte envelope length,
/// the envelope of `job`/`extract` and the payload, padded to 8.
const RECORD_BYTES_APPROX: usize = 280;
const BASELINE_FILE_BYTES: u64 = 64 * 1024 * 1024;

fn bench_baseline(c: &mut Criterion) {
    let mut group = c.benchmark_group("baseline");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(1));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.path().join("baseline"))
        .expect("create baseline file");
    // SAFETY: plain system call on an open descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, BASELINE_FILE_BYTES as i64) };
    assert_eq!(rc, 0, "posix_fallocate");
    // SAFETY: the file is private to this benchmark and not truncated while mapped.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("map baseline file");
    let record = [0x5au8; RECORD_BYTES_APPROX];
    let mut offset = 0usize;
    group.bench_function("msync_append", |b| {
        b.iter(|| {
            if offset + RECORD_BYTES_APPROX > map.len() {
                offset = 0;
            }
            map[offset..offset + RECORD_BYTES_APPROX].copy_from_slice(&record);
            map.flush_range(offset, RECORD_BYTES_APPROX).expect("msync");
            offset += RECORD_BYTES_APPROX;
        })
    });
    group.finish();
}

const RECORD_1K_BYTES: usize = 1024;

/// A fresh preallocated file of `BASELINE_FILE_BYTES` bytes in `dir`.
fn preallocated_file(dir: &Path, name: &str) -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join(name))
        .expect("create baseline file");
    // SAFETY: plain system call on an open descriptor.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, BASELINE_FILE_BYTES as i64) };
    assert_eq!(rc, 0, "posix_fallocate");
    file
}

fn bench_baseline_1k(c: &mut Criterion) {
    use std::os::unix::fs::FileExt;
    let mut group = c.benchmark_group("baseline_1k");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(1));
    let dir = tempfile::tempdir().expect("tempdir");
    let record = [0x5au8; RECORD_1K_BYTES];
    let wraps = |offset: usize| offset + RECORD_1K_BYTES > BASELINE_FILE_BYTES as usize;

    let mapped = preallocated_file(dir.path(), "mapped");
    // SAFETY: the file is private to this benchmark and not truncated while mapped.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&mapped) }.expect("map baseline file");
    let mut offset = 0usize;
    group.bench_function("msync_append", |b| {
        b.iter(|| {
            if wraps(offset) {
                offset = 0;
            }
            map[offset..offset + RECORD_1K_BYTES].copy_from_slice(&record);
            map.flush_range(offset, RECORD_1K_BYTES).expect("msync");
            offset += RECORD_1K_BYTES;
        })
    });

    let written = preallocated_file(dir.path(), "written");
    let mut offset = 0usize;
    group.bench_function("pwrite_fdatasync_append", |b| {
        b.iter(|| {
            if wraps(offset) {
                offset = 0;
            }
            written
                .write_all_at(&record, offset as u64)
                .expect("pwrite");
            written.sync_data().expect("fdatasync");
            offset += RECORD_1K_BYTES;
        })
    });
    group.finish();
}

/// Fills a store with `RECORDS_FOR_OPEN` checkpoints spread over `JOBS_FOR_OPEN` jobs.
fn fill_store_for_open(dir: &Path) {
    let store = open_store(dir, Durability::OsOnly);
    for i in 0..RECORDS_FOR_OPEN {
        let job = format!("job-{:04}", i % JOBS_FOR_OPEN);
        store.save(&job, "extract", &progress(i)).expect("save");
    }
    store.close().expect("close");
}

/// Opens the store `iters` times, timing the opens but not the closes.
fn timed_opens(iters: u64, open: impl Fn() -> cairn::Result<Store>) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let started = Instant::now();
        let store = open().expect("open");
        total += started.elapsed();
        assert_eq!(store.recovery_report().records_scanned, RECORDS_FOR_OPEN);
        drop(store);
    }
    total
}

fn bench_open(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    fill_store_for_open(dir.path());
    let mut group = c.benchmark_group("open_100k_records");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(RECORDS_FOR_OPEN));
    // Only the open is timed: the writer lock is released by the drop, outside the clock.
    group.bench_function("writer", |b| {
        b.iter_custom(|iters| timed_opens(iters, || Store::open(dir.path())))
    });
    group.bench_function("read_only", |b| {
        b.iter_custom(|iters| timed_opens(iters, || Store::open_read_only(dir.path())))
    });
    group.finish();
}

fn check_payload_size(_: &mut Criterion) {
    let len = serde_json::to_vec(&progress(123_456))
        .expect("serializes")
        .len();
    assert!(
        len.abs_diff(PAYLOAD_BYTES_APPROX) <= 10,
        "the bench payload is {len} bytes, not about {PAYLOAD_BYTES_APPROX}"
    );
}

criterion_group!(
    benches,
    check_payload_size,
    bench_baseline,
    bench_baseline_1k,
    bench_save_sync,
    bench_save_unsynced,
    bench_open
);
criterion_main!(benches);
