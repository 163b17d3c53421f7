//! Compaction and retention through the public API, each test on the real file system and on
//! the simulated disk: what is kept, what is dropped, and that a reopen sees exactly what the
//! live store saw.

mod common;

use std::time::Duration;

use cairn::{ErrorContext, Options, Retention, Store};
use serde_json::json;

use common::disk::Disk;

on_both_disks!(
    compaction_keeps_the_last_k_and_the_latest_and_frees_space,
    deleted_jobs_disappear_and_compaction_drops_their_records,
    max_age_drops_old_history_but_never_the_latest,
    a_dry_run_changes_nothing_and_repeated_compactions_are_stable,
);

fn small(retention: Retention) -> Options {
    common::options().retention(retention)
}

fn values(store: &Store, job: &str) -> Vec<u64> {
    store
        .history(job)
        .unwrap()
        .iter()
        .map(|c| c.data["n"].as_u64().unwrap())
        .collect()
}

fn compaction_keeps_the_last_k_and_the_latest_and_frees_space(disk: Disk) {
    let options = small(Retention::default().keep_last(3));
    let store = disk.open_with(options.clone()).unwrap();
    let pad = "x".repeat(2000);
    for n in 0..200u64 {
        store.save("a", "p", &json!({"n": n, "pad": pad})).unwrap();
        if n % 50 == 0 {
            store.save("b", "p", &json!({"n": n})).unwrap();
            store.start_run("b").unwrap();
        }
    }
    let seqs_before: Vec<u64> = store.history("a").unwrap().iter().map(|c| c.seq).collect();
    assert!(store.segment_count() > 3);
    let report = store.compact().unwrap();
    assert!(report.compacted, "{report:?}");
    assert!(report.bytes_freed > 0, "{report:?}");
    assert_eq!(report.segments_after, 2, "{report:?}");
    let kept = values(&store, "a");
    // Three newest of `a`, wherever they are, and nothing older.
    assert!(kept.len() >= 3, "{kept:?}");
    assert_eq!(*kept.last().unwrap(), 199);
    assert!(kept.windows(2).all(|w| w[0] < w[1]), "{kept:?}");
    assert_eq!(values(&store, "b").last(), Some(&150));
    let seqs_after: Vec<u64> = store.history("a").unwrap().iter().map(|c| c.seq).collect();
    assert!(
        seqs_after.iter().all(|s| seqs_before.contains(s)),
        "seqs are kept"
    );
    let state = store.job("b").unwrap();
    let latest_a = store.latest("a").unwrap().unwrap();
    let jobs = store.jobs().unwrap();
    // New saves continue with higher sequence numbers.
    let next = store.save("a", "p", &json!({"n": 200})).unwrap();
    assert!(next > *seqs_before.last().unwrap());
    drop(store);
    let store = disk.open_with(options).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.job("b").unwrap(), state);
    assert_eq!(store.history("a").unwrap().len(), kept.len() + 1);
    assert_eq!(store.latest("a").unwrap().unwrap().data["n"], 200);
    let mut jobs_now = store.jobs().unwrap();
    for job in jobs_now.iter_mut().filter(|j| j.job == "a") {
        job.checkpoints -= 1;
        assert_eq!(job.latest_seq, next);
    }
    assert_eq!(jobs_now.len(), jobs.len());
    assert_eq!(latest_a.data["n"], 199);
}

fn deleted_jobs_disappear_and_compaction_drops_their_records(disk: Disk) {
    let options = small(Retention::default().keep_last(100));
    let store = disk.open_with(options.clone()).unwrap();
    let pad = "y".repeat(3000);
    for n in 0..60u64 {
        store
            .save("gone", "p", &json!({"n": n, "pad": pad}))
            .unwrap();
        store.save("stays", "p", &json!({"n": n})).unwrap();
    }
    store
        .fail_run("gone", "boom", ErrorContext::recoverable())
        .unwrap();
    assert!(store.delete_job("gone", "retired").unwrap());
    assert!(!store.delete_job("gone", "again").unwrap());
    assert!(store.job("gone").is_none());
    assert!(store.latest("gone").unwrap().is_none());
    assert!(store.history("gone").unwrap().is_empty());
    assert_eq!(store.jobs().unwrap().len(), 1);
    // A new job under the old name starts afresh.
    store.save("gone", "p", &json!({"n": 1000})).unwrap();
    assert_eq!(values(&store, "gone"), vec![1000]);
    // Roll over so that everything above is sealed.
    for n in 0..40u64 {
        store
            .save("stays", "p", &json!({"n": 100 + n, "pad": pad}))
            .unwrap();
    }
    let report = store.compact().unwrap();
    assert!(report.checkpoints_dropped >= 60, "{report:?}");
    assert_eq!(values(&store, "gone"), vec![1000]);
    assert_eq!(values(&store, "stays").len(), 100);
    let state = store.job("gone").unwrap();
    drop(store);
    let store = disk.open_with(options).unwrap();
    assert_eq!(values(&store, "gone"), vec![1000]);
    assert_eq!(store.job("gone").unwrap(), state);
    assert_eq!(values(&store, "stays").len(), 100);
}

fn max_age_drops_old_history_but_never_the_latest(disk: Disk) {
    let store = disk.open_with(small(Retention::default())).unwrap();
    let pad = "z".repeat(3000);
    for n in 0..40u64 {
        store
            .save("old", "p", &json!({"n": n, "pad": pad}))
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    let report = store
        .compact_with(
            &Retention::default()
                .keep_last(1000)
                .max_age(Duration::from_millis(10)),
        )
        .unwrap();
    assert!(report.compacted);
    // Everything in sealed segments is too old, except the job's latest if it is there.
    let kept = values(&store, "old");
    assert_eq!(kept.last(), Some(&39));
    assert!(kept.len() < 40, "{kept:?}");
}

fn a_dry_run_changes_nothing_and_repeated_compactions_are_stable(disk: Disk) {
    let store = disk
        .open_with(small(Retention::default().keep_last(2)))
        .unwrap();
    let pad = "w".repeat(3000);
    for n in 0..60u64 {
        store.save("j", "p", &json!({"n": n, "pad": pad})).unwrap();
    }
    let segments = store.segment_count();
    let plan = store
        .compaction_plan(&Retention::default().keep_last(2))
        .unwrap();
    assert!(
        plan.dry_run && plan.compacted && plan.bytes_freed > 0,
        "{plan:?}"
    );
    assert_eq!(store.segment_count(), segments);
    let done = store.compact().unwrap();
    assert_eq!(done.bytes_after, plan.bytes_after, "{plan:?} {done:?}");
    let again = store.compact().unwrap();
    assert!(!again.compacted, "{again:?}");
    let stats = store.stats().unwrap();
    assert_eq!(stats.reclaimable_bytes, 0, "{stats:?}");
    assert_eq!(stats.jobs, 1);
}
