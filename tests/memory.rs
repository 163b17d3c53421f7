//! The store's memory follows its jobs, not its records (issue 11): ten times the saves over
//! the same jobs, compactions between them, leave the in-memory index the same size, live and
//! after a reopen (`Metrics::index_bytes_estimate`). The peak RSS of the same at scale is in
//! `examples/scale.rs` and docs/PERFORMANCE.md.

mod common;

use cairn::{AutoCompact, Durability, Options, Retention, Store};
use common::disk::Disk;
use serde_json::json;

const JOBS: u64 = 40;

fn options() -> Options {
    common::small_segments()
        .durability(Durability::OsOnly)
        .retention(Retention::default().keep_last(3))
        .auto_compact(AutoCompact::default().segments(3))
}

/// `rounds` saves of every job, then a compaction.
fn save_rounds(store: &Store, rounds: u64, from: u64) {
    for round in from..from + rounds {
        for job in 0..JOBS {
            let data = json!({"cursor": format!("{job}:{round:08}"), "pad": "x".repeat(100)});
            store
                .save(&format!("job-{job:03}"), "extract", &data)
                .unwrap();
        }
    }
    store.compact().unwrap();
}

fn index_bytes(store: &Store) -> u64 {
    store.metrics().index_bytes_estimate
}

fn index_follows_jobs_not_records(disk: Disk) {
    let store = disk.open_with(options()).unwrap();
    save_rounds(&store, 20, 0);
    let after_n = index_bytes(&store);
    let saves_after_n = store.metrics().checkpoints_saved;
    save_rounds(&store, 180, 20);
    let after_10n = index_bytes(&store);
    assert_eq!(store.metrics().checkpoints_saved, 10 * saves_after_n);
    assert_eq!(
        after_n, after_10n,
        "live: {after_n} B after N saves, {after_10n} B after 10 N"
    );
    assert!(after_10n / JOBS < 2048, "{after_10n} B for {JOBS} jobs");
    store.close().unwrap();

    let reopened = disk.open_with(options()).unwrap();
    let reopened_bytes = index_bytes(&reopened);
    let latest = reopened.latest("job-007").unwrap().unwrap();
    assert_eq!(latest.data["cursor"], "7:00000199");
    reopened.close().unwrap();

    // The same jobs with a tenth of the saves, reopened: the same index.
    let small = disk.fresh();
    let store = small.open_with(options()).unwrap();
    save_rounds(&store, 20, 0);
    store.close().unwrap();
    let store = small.open_with(options()).unwrap();
    assert_eq!(
        index_bytes(&store),
        reopened_bytes,
        "reopened: N saves against 10 N saves"
    );
}

on_both_disks!(index_follows_jobs_not_records);
