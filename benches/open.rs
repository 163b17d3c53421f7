//! Benchmarks of a writer open, and what proving unproven records costs there.
//!
//! Every writer open makes the records it recovered durable before anything new is
//! acknowledged: records that no later record proves durable (docs/FORMAT.md, "Mark records")
//! are written again and synced (docs/RECOVERY.md, "What a writer repairs", step 6).
//!
//! - `writer_open/clean_close`: a store of 2,000 checkpoints of about 300 bytes (one 1 MiB
//!   segment) that its last writer closed cleanly: every record is proven, nothing is
//!   rewritten (only the close's mark).
//! - `writer_open/crashed_os_only`: the same store as a crash of an `OsOnly` writer leaves it
//!   (its files copied while it was open, after 2,000 saves that no sync covered): all of its
//!   records are unproven, so the open writes about 1 MiB again and syncs it.
//! - `writer_open/crashed_sync`: the same after a crash of a `Sync` writer: only the mark of the
//!   last save is unproven.
//!
//! Each iteration opens a fresh copy of the store (the copy is not timed) and drops the
//! opened store outside the timing. Run with `cargo bench --bench open`; docs/PERFORMANCE.md
//! has the figures.

use std::path::Path;

use cairn::{AutoCompact, Durability, Options, Store};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use serde_json::json;

const SAVES: u64 = 2_000;
const SEGMENT_SIZE_BYTES: u64 = 1024 * 1024;

fn options(durability: Durability) -> Options {
    Options::default()
        .durability(durability)
        .segment_size(SEGMENT_SIZE_BYTES)
        .auto_compact(AutoCompact::disabled())
}

/// A typical ETL checkpoint of about 300 bytes of JSON.
fn progress(n: u64) -> serde_json::Value {
    json!({
        "cursor": format!("Y3Vyc29yOnYyOpK5MjAyNC0wNi0x{n:012}"),
        "processed": 1_000_000 + n * 100,
        "source": "https://api.github.com/repos/acme/etl/pulls?state=all&per_page=100",
        "since": "2024-06-12T08:15:42Z",
        "queue": ["acme/api", "acme/web", "acme/etl"],
    })
}

fn copy_store(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("list store") {
        let entry = entry.expect("entry");
        if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

/// A store of `SAVES` checkpoints written in `durability` mode; with `crash`, its files as a
/// crash of the writer leaves them (copied while it is open), else after a clean close.
fn store(durability: Durability, crash: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let image = tempfile::tempdir().expect("tempdir");
    let store = Store::open_with(dir.path(), options(durability)).expect("open");
    for n in 0..SAVES {
        store
            .save(&format!("job{}", n % 8), "extract", &progress(n))
            .expect("save");
    }
    if crash {
        copy_store(dir.path(), image.path());
        drop(store);
    } else {
        store.close().expect("close");
        copy_store(dir.path(), image.path());
    }
    image
}

fn bench_open(c: &mut Criterion) {
    let mut group = c.benchmark_group("writer_open");
    group.sample_size(20);
    let cases = [
        ("clean_close", store(Durability::OsOnly, false)),
        ("crashed_os_only", store(Durability::OsOnly, true)),
        ("crashed_sync", store(Durability::Sync, true)),
    ];
    for (name, image) in &cases {
        group.bench_function(*name, |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().expect("tempdir");
                    copy_store(image.path(), dir.path());
                    dir
                },
                |dir| {
                    let store =
                        Store::open_with(dir.path(), options(Durability::Sync)).expect("open");
                    assert_eq!(store.last_seq(), SAVES);
                    (store, dir)
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, bench_open);
criterion_main!(benches);
