//! Compaction of stores whose snapshot of job states is larger than one record body may be
//! (64 MiB): the snapshot is split into parts (format 4, docs/FORMAT.md "Snapshot body"), a
//! reopen folds every part, and no failure of a compaction leaves a trace (a `.seg.compacting`
//! file, a reservation against the size limit) or a panic behind.

mod common;

use std::path::Path;

use cairn::{AutoCompact, Durability, ErrorContext, Options, Retention, Store};
use serde_json::json;

/// Segments of the default size (64 MiB): room for a snapshot part of the largest size.
fn options() -> Options {
    Options::default()
        .durability(Durability::OsOnly)
        .auto_compact(AutoCompact::disabled())
}

/// Long enough that 150,000 job states take well over 64 MiB of JSON.
fn job_name(i: usize) -> String {
    format!("job-{i:06}-{}", "x".repeat(60))
}

fn compacting_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".seg.compacting"))
        .collect()
}

#[test]
fn a_snapshot_of_150000_jobs_is_written_in_parts_and_reopens() {
    const JOBS: usize = 150_000;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    let seqs: Vec<u64> = (0..JOBS)
        .map(|i| store.save(&job_name(i), "p", &json!({ "n": i })).unwrap())
        .collect();
    let report = store.compact().expect("compaction succeeds");
    assert!(report.compacted);
    assert_eq!(report.jobs, JOBS);
    assert!(report.snapshot_records >= 2, "{report:?}");
    assert!(compacting_files(dir.path()).is_empty());
    drop(store);

    let store = Store::open_with(dir.path(), options()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.jobs().unwrap().len(), JOBS);
    for (i, &seq) in seqs.iter().enumerate() {
        let job = job_name(i);
        let state = store.job(&job).unwrap();
        assert_eq!(state.latest_checkpoint.map(|c| c.seq), Some(seq), "{job}");
        assert_eq!(state.checkpoints_saved, 1, "{job}");
        let latest = store.latest(&job).unwrap().unwrap();
        assert_eq!((latest.seq, &latest.data), (seq, &json!({ "n": i })));
    }
}

fn error_message(i: usize) -> String {
    format!("job {i} failed: {}", "e".repeat(1_000_000))
}

/// 70 jobs, each failed with a 1 MB error message: about 70 MB of job states.
fn fail_70_jobs(store: &Store) -> Vec<u64> {
    (0..70)
        .map(|i| {
            let job = format!("job-{i:02}");
            store.start_run(&job).unwrap();
            let seq = store.save(&job, "p", &json!({ "n": i })).unwrap();
            store
                .fail_run(&job, &error_message(i), ErrorContext::recoverable())
                .unwrap();
            seq
        })
        .collect()
}

#[test]
fn a_snapshot_of_70_jobs_with_1_mb_errors_is_written_in_parts_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    let seqs = fail_70_jobs(&store);
    let report = store.compact().expect("compaction succeeds");
    assert_eq!((report.compacted, report.jobs), (true, 70));
    assert!(report.snapshot_records >= 2, "{report:?}");
    drop(store);

    let store = Store::open_with(dir.path(), options()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    for (i, &seq) in seqs.iter().enumerate() {
        let job = format!("job-{i:02}");
        let state = store.job(&job).unwrap();
        assert_eq!(state.status, cairn::JobStatus::Failed);
        assert_eq!(state.last_error.unwrap().message, error_message(i));
        assert_eq!(state.latest_checkpoint.map(|c| c.seq), Some(seq));
        assert_eq!(store.latest(&job).unwrap().unwrap().data, json!({ "n": i }));
    }
    // A second compaction reads the parts back and writes them again.
    let report = store.compact().expect("second compaction succeeds");
    assert_eq!(report.jobs, 70);
}

/// Under a size limit of 128 MiB with 16 MiB segments, 70 MB of job states compact (on the
/// code before the fix, the compaction panicked, left its `.seg.compacting` file behind and
/// kept its reservation, so the next save that needed a segment was refused as `StoreFull`).
#[test]
fn an_oversized_snapshot_under_a_size_limit_compacts_and_leaves_nothing_behind() {
    let segment = 16 * 1024 * 1024;
    let limited = || {
        options()
            .segment_size(segment)
            .retention(Retention::default().max_bytes(128 * 1024 * 1024))
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), limited()).unwrap();
    fail_70_jobs(&store);
    let compacted =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| store.compact().map(|_| ())));
    assert!(
        matches!(compacted, Ok(Ok(()))),
        "compaction failed or panicked"
    );
    assert_eq!(compacting_files(dir.path()), Vec::<String>::new());
    // Saves go on into new segments (about two, which may compact again to make room): the
    // limit has room for them once the compaction is done.
    for i in 0..330 {
        store
            .save(
                "filler",
                "p",
                &json!({ "i": i, "pad": "f".repeat(100_000) }),
            )
            .expect("room under the limit");
    }
}

#[test]
fn a_job_event_over_the_event_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options().max_payload(64 * 1024 * 1024)).unwrap();
    let limit = cairn::MAX_EVENT_BYTES as usize;
    let refused = store.fail_run("job", &"e".repeat(limit), ErrorContext::recoverable());
    assert!(
        matches!(refused, Err(cairn::Error::PayloadTooLarge { limit_bytes, .. }) if limit_bytes == limit as u64),
        "{refused:?}"
    );
    store
        .fail_run(
            "job",
            &"e".repeat(limit - 1000),
            ErrorContext::recoverable(),
        )
        .expect("an event under the limit is recorded");
}

/// The same scenarios on the simulated disk, with faults.
mod sim {
    use cairn::testing::{Fault, SimDisk, Step};
    use cairn::{AutoCompact, Retention, Store};
    use serde_json::json;

    use crate::common::SEGMENT_BYTES;
    use crate::common::sim::open;
    use crate::common::{unsynced_options, wait_for};

    fn compacting_files(disk: &SimDisk) -> Vec<String> {
        disk.file_names()
            .iter()
            .map(|p| p.to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".seg.compacting"))
            .collect()
    }

    fn segment_file_count(disk: &SimDisk) -> usize {
        disk.file_names()
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .count()
    }

    /// Fifty jobs, one 4 KB checkpoint each: about four segments of live data.
    fn fill(store: &Store) {
        for i in 0..50 {
            let data = json!({ "i": i, "pad": format!("{i:04}").repeat(1000) });
            store.save(&format!("job-{i:02}"), "p", &data).unwrap();
        }
    }

    /// Saves about two and a half segments of data (so into new segments, which may compact
    /// to make room); every save must succeed.
    fn save_into_new_segments(store: &Store, context: &str) {
        for i in 0..40 {
            store
                .save("filler", "p", &json!({ "i": i, "pad": "f".repeat(4000) }))
                .unwrap_or_else(|e| panic!("{context}: save {i} refused: {e}"));
        }
    }

    /// A failed write, short write, sync or file creation at each of the first steps of a
    /// compaction under a size limit leaves no temporary file, and the limit counts nothing of
    /// the failed compaction: saves into new segments that fit it go on.
    #[test]
    fn a_failed_compaction_leaves_no_temporary_file_and_no_reservation() {
        // Before: about 5 segments of 64 KiB. The compacted file takes about 4 of them, so a
        // reservation left behind (5 + 4 + 1 > 7) would refuse the saves that fit (5 + 1 + 1).
        let limited =
            || unsynced_options().retention(Retention::default().max_bytes(7 * SEGMENT_BYTES));
        let faults = (1..=6).flat_map(|n| {
            [
                Fault::FailWrite(n),
                Fault::ShortWrite(n),
                Fault::FailSync(n),
                Fault::NoSpace(n),
            ]
        });
        let mut failures = 0;
        for fault in faults {
            let context = format!("{fault:?}");
            let disk = SimDisk::new();
            let store = open(&disk, limited()).unwrap();
            fill(&store);
            disk.inject(fault);
            let compacted = store.compact();
            disk.clear_faults();
            assert_eq!(compacting_files(&disk), Vec::<String>::new(), "{context}");
            if compacted.is_err() {
                failures += 1;
            }
            if store.metrics().poisoned.is_some() {
                continue;
            }
            save_into_new_segments(&store, &context);
            store.compact().unwrap_or_else(|e| panic!("{context}: {e}"));
        }
        assert!(
            failures >= 8,
            "only {failures} faults made compactions fail"
        );
    }

    #[test]
    fn a_failed_removal_after_the_commit_is_a_successful_compaction() {
        let disk = SimDisk::new();
        let store = open(&disk, unsynced_options()).unwrap();
        fill(&store);
        let before: Vec<_> = (0..50)
            .map(|i| store.latest(&format!("job-{i:02}")).unwrap().unwrap())
            .collect();
        assert!(store.segment_count() >= 4);
        disk.inject(Fault::FailRemove(1));
        let report = store.compact().expect("the compaction committed");
        assert!(report.compacted);
        assert_eq!(report.replaced_files_left, 1, "{report:?}");
        assert_eq!(store.metrics().poisoned, None);
        // Readers use the compacted segment; the file left behind is not one of the store's.
        assert_eq!(segment_file_count(&disk), store.segment_count() + 1);
        for (i, checkpoint) in before.iter().enumerate() {
            let latest = store.latest(&format!("job-{i:02}")).unwrap().unwrap();
            assert_eq!(
                (latest.seq, &latest.data),
                (checkpoint.seq, &checkpoint.data)
            );
        }
        let seq = store
            .save("job-00", "p", &json!({ "after": true }))
            .unwrap();
        drop(store);
        // The next writer removes the replaced file.
        let store = open(&disk, unsynced_options()).unwrap();
        assert_eq!(segment_file_count(&disk), store.segment_count());
        assert_eq!(store.latest("job-00").unwrap().unwrap().seq, seq);
        assert_eq!(store.history("job-01").unwrap().len(), 1);
    }

    #[test]
    fn a_failing_background_compaction_is_reported_and_the_compactor_carries_on() {
        let disk = SimDisk::new();
        let auto = unsynced_options().auto_compact(AutoCompact::default().segments(3));
        let store = open(&disk, auto).unwrap();
        let mut i = 0;
        let mut save_until = |segments: usize| {
            while store.segment_count() < segments {
                let data = json!({ "i": i, "pad": "p".repeat(4000) });
                store.save(&format!("job-{}", i % 5), "p", &data).unwrap();
                i += 1;
            }
        };
        save_until(2);
        // The third segment's creation succeeds and asks for a compaction; the compacted
        // file's creation, the next one, finds the disk full.
        disk.inject(Fault::NoSpace(2));
        save_until(3);
        wait_for("the failure to be reported", || {
            store.metrics().compaction_failures == 1
        });
        let metrics = store.metrics();
        let error = metrics.last_compaction_error.clone().unwrap();
        assert!(error.contains("disk full"), "{error}");
        assert!(!metrics.is_healthy());
        let stats = store.stats().unwrap();
        assert_eq!(
            (stats.compaction_failures, stats.last_compaction_error),
            (1, Some(error))
        );
        // The thread carries on: the next request compacts, and the error is cleared.
        save_until(4);
        wait_for("a compaction to succeed", || {
            store.metrics().last_compaction_error.is_none()
        });
        let metrics = store.metrics();
        assert_eq!(metrics.compaction_failures, 1);
        assert!(metrics.is_healthy(), "{metrics:?}");
    }

    /// A bug that panics inside a background compaction (here, a panic the simulated disk
    /// raises when the compactor creates its file) is caught: it is reported, poisons the
    /// store, and leaves no temporary file.
    #[test]
    fn a_panicking_background_compaction_is_caught_and_reported() {
        let disk = SimDisk::new();
        let auto = unsynced_options().auto_compact(AutoCompact::default().segments(3));
        let store = open(&disk, auto).unwrap();
        disk.set_hook(|_, step| {
            if step == Step::Create && std::thread::current().name() == Some("cairn-compactor") {
                panic!("simulated bug in a compaction");
            }
        });
        let mut i = 0;
        while store.segment_count() < 3 {
            let data = json!({ "i": i, "pad": "p".repeat(4000) });
            store.save("job", "p", &data).unwrap();
            i += 1;
        }
        wait_for("the panic to be reported", || {
            store.metrics().compaction_failures == 1
        });
        disk.clear_hook();
        let metrics = store.metrics();
        let error = metrics.last_compaction_error.unwrap();
        assert!(error.contains("simulated bug in a compaction"), "{error}");
        assert!(metrics.poisoned.is_some());
        assert_eq!(compacting_files(&disk), Vec::<String>::new());
        assert_eq!(store.history("job").unwrap().len(), i);
    }
}
