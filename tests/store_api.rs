//! The Store API end to end, each test on the real file system and on the simulated disk:
//! round trips, reopen, rollover, concurrency, limits and bad input. The writer lock and
//! directories that are not stores are tests of real files only.

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use cairn::{Durability, Error, Options, RecoveryMode, Store};
use serde::{Deserialize, Serialize};
use serde_json::json;

use common::disk::Disk;
use common::small_segments;

on_both_disks!(
    round_trip_with_typed_data,
    reopen_rollover_history_and_read_only,
    sequence_numbers_keep_increasing_across_reopens,
    concurrent_savers_share_the_store,
    every_durability_mode_keeps_data_across_a_clean_close,
    limits_and_bad_input_write_nothing,
    small_segments_lower_the_payload_limit_with_a_clear_error,
    configured_limits_apply,
    newer_store_format_is_refused,
    recovery_mode_option_is_reported,
);

/// A string of `len` pseudo-random letters: checkpoint data that compression cannot shrink
/// below the limits under test.
fn incompressible(len: usize) -> String {
    common::rng::incompressible(0x9e37_79b9_7f4a_7c15, len)
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct GithubProgress {
    repo: String,
    cursor: Option<String>,
    processed: u64,
}

fn round_trip_with_typed_data(disk: Disk) {
    let store = disk.open().unwrap();
    assert!(store.latest("github_sync").unwrap().is_none());
    let progress = GithubProgress {
        repo: "acme/api".into(),
        cursor: Some("Y3Vy".into()),
        processed: 50,
    };
    let seq = store
        .save("github_sync", "pr_extraction", &progress)
        .unwrap();
    let checkpoint = store.latest("github_sync").unwrap().expect("saved");
    assert_eq!(checkpoint.job, "github_sync");
    assert_eq!(checkpoint.seq, seq);
    assert_eq!(checkpoint.phase, "pr_extraction");
    assert_eq!(checkpoint.version, 1);
    assert!((chrono::Utc::now() - checkpoint.at).num_seconds().abs() < 60);
    assert_eq!(checkpoint.data_as::<GithubProgress>().unwrap(), progress);
    let wrong = checkpoint.data_as::<Vec<u8>>().expect_err("wrong type");
    assert!(
        matches!(wrong, Error::Deserialize { seq: s, .. } if s == seq),
        "{wrong}"
    );
}

fn reopen_rollover_history_and_read_only(disk: Disk) {
    let mut last = HashMap::new();
    {
        let store = disk.open_with(small_segments()).unwrap();
        for i in 0..2000u64 {
            let job = format!("job{}", i % 7);
            let seq = store
                .save(&job, "p", &json!({"i": i, "pad": "x".repeat(50)}))
                .unwrap();
            last.insert(job, (seq, i));
        }
        assert!(
            store.segment_count() > 3,
            "rollover expected, {} segments",
            store.segment_count()
        );
    }
    let store = disk.open_with(small_segments()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(
        store.recovery_report().records_scanned as usize,
        2000 + store.segment_count() - 1
    );
    for (job, (seq, i)) in &last {
        let latest = store.latest(job).unwrap().unwrap();
        assert_eq!((latest.seq, &latest.data["i"]), (*seq, &json!(i)));
    }
    let history = store.history("job0").unwrap();
    assert_eq!(history.len(), 286);
    assert!(
        history
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].data["i"].as_u64() < w[1].data["i"].as_u64())
    );
    assert!(store.history("nobody").unwrap().is_empty());
    let jobs = store.jobs().unwrap();
    assert_eq!(
        jobs.iter().map(|j| j.job.as_str()).collect::<Vec<_>>(),
        ["job0", "job1", "job2", "job3", "job4", "job5", "job6"]
    );
    assert_eq!(jobs.iter().map(|j| j.checkpoints).sum::<u64>(), 2000);

    // A reader works while the writer is open, and sees the state as of its open.
    let seq = store.save("job0", "p", &json!("newest")).unwrap();
    let reader = disk.open_read_only_with(small_segments()).unwrap();
    assert_eq!(reader.latest("job0").unwrap().unwrap().seq, seq);
    assert!(matches!(reader.save("job0", "p", &1), Err(Error::ReadOnly)));
    assert!(disk.verify().unwrap().is_clean());
}

fn sequence_numbers_keep_increasing_across_reopens(disk: Disk) {
    let mut previous = 0;
    for round in 0..5 {
        let store = disk.open_with(small_segments()).unwrap();
        for i in 0..100 {
            let seq = store
                .save("job", "p", &json!({"round": round, "i": i}))
                .unwrap();
            assert!(seq > previous);
            previous = seq;
        }
    }
}

/// Real files only: the writer lock is a lock of the real file system.
#[test]
fn second_writer_is_refused_and_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    first.save("job", "p", &1).unwrap();
    match Store::open(dir.path()) {
        Err(Error::Locked { holder, .. }) => {
            assert!(
                holder.contains(&format!("pid={}", std::process::id())),
                "{holder}"
            );
        }
        other => panic!("expected Locked, got {other:?}"),
    }
    drop(first);
    let again = Store::open(dir.path()).unwrap();
    assert_eq!(again.latest("job").unwrap().unwrap().data, json!(1));
}

fn concurrent_savers_share_the_store(disk: Disk) {
    let store = Arc::new(disk.open_with(small_segments()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                (0..200u64)
                    .map(|i| {
                        store
                            .save(&format!("worker{t}"), "p", &json!({"t": t, "i": i}))
                            .unwrap()
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let per_thread: Vec<Vec<u64>> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    let mut all: Vec<u64> = per_thread.iter().flatten().copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 1600, "sequence numbers must be unique");
    drop(store);
    let store = disk.open_with(small_segments()).unwrap();
    for (t, seqs) in per_thread.iter().enumerate() {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]));
        let latest = store.latest(&format!("worker{t}")).unwrap().unwrap();
        assert_eq!(latest.seq, *seqs.last().unwrap());
        assert_eq!(latest.data, json!({"t": t, "i": 199}));
        assert_eq!(store.history(&format!("worker{t}")).unwrap().len(), 200);
    }
}

fn every_durability_mode_keeps_data_across_a_clean_close(disk: Disk) {
    for durability in [
        Durability::Sync,
        Durability::Buffered {
            interval: std::time::Duration::from_millis(5),
        },
        Durability::OsOnly,
    ] {
        let disk = disk.fresh();
        let store = disk
            .open_with(small_segments().durability(durability))
            .unwrap();
        for i in 0..500 {
            store.save("job", "p", &i).unwrap();
        }
        store.close().unwrap();
        let store = disk.open_with(small_segments()).unwrap();
        assert_eq!(
            store.latest("job").unwrap().unwrap().data,
            json!(499),
            "{durability:?}"
        );
        assert!(store.recovery_report().is_clean());
    }
}

/// Asserts that `result` is an input error and that nothing reached the store.
fn assert_refused<T: std::fmt::Debug>(store: &Store, result: cairn::Result<T>, expect: &str) {
    let before = store.last_seq();
    let err = result.expect_err("must be refused");
    let text = err.to_string();
    assert!(
        text.contains(expect),
        "error {text:?} should mention {expect:?}"
    );
    assert_eq!(store.last_seq(), before, "nothing may be written");
}

fn limits_and_bad_input_write_nothing(disk: Disk) {
    let store = disk.open().unwrap();
    store.save("ok", "p", &1).unwrap();
    assert_refused(&store, store.save("", "p", &1), "job name");
    assert_refused(
        &store,
        store.save(&"j".repeat(257), "p", &1),
        "over the limit of 256",
    );
    store
        .save(&"é".repeat(128), "p", &1)
        .expect("256 bytes of UTF-8 is allowed");
    assert_refused(&store, store.save("bad\njob", "p", &1), "control character");
    assert_refused(
        &store,
        store.save("bad\u{7f}job", "p", &1),
        "control character",
    );
    assert_refused(&store, store.save("job", &"p".repeat(129), &1), "phase");
    assert_refused(&store, store.save("job", "p\t", &1), "phase");
    let huge = incompressible(1024 * 1024);
    assert_refused(
        &store,
        store.save("job", "p", &huge),
        "over the limit of 1048576",
    );
    let mut not_json = HashMap::new();
    not_json.insert((1u8, 2u8), 3u8);
    assert_refused(
        &store,
        store.save("job", "p", &not_json),
        "does not serialize to JSON",
    );
    drop(store);
    let store = disk.open().unwrap();
    assert_eq!(store.jobs().unwrap().len(), 2);
}

fn small_segments_lower_the_payload_limit_with_a_clear_error(disk: Disk) {
    let store = disk.open_with(small_segments()).unwrap();
    let result = store.save("job", "p", &incompressible(70 * 1024));
    assert!(
        matches!(result, Err(Error::PayloadTooLarge { limit_bytes, .. }) if limit_bytes < 64 * 1024),
        "{result:?}"
    );
    let fits = incompressible(60 * 1024);
    store
        .save("job", "p", &fits)
        .expect("a payload that fits a segment is accepted");
    store
        .save("job", "p", &fits)
        .expect("and rolls over to the next segment");
    assert_eq!(store.segment_count(), 2);
}

fn configured_limits_apply(disk: Disk) {
    let options = Options::default()
        .max_job_name(4)
        .max_phase(3)
        .max_payload(10);
    let store = disk.open_with(options).unwrap();
    store.save("abcd", "abc", &"12345678").unwrap();
    assert_refused(&store, store.save("abcde", "p", &1), "job name");
    assert_refused(&store, store.save("a", "abcd", &1), "phase");
    assert_refused(
        &store,
        store.save("a", "p", &"123456789"),
        "over the limit of 10",
    );
    assert!(matches!(
        disk.fresh()
            .open_with(Options::default().segment_size(1000)),
        Err(Error::InvalidInput { .. })
    ));
}

/// Real files only: a regular file or someone else's files where the store should be.
#[test]
fn directories_that_are_not_stores_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the store should be.
    let file = dir.path().join("file");
    std::fs::write(&file, b"hello").unwrap();
    let err = Store::open(&file).expect_err("a file is not a store");
    assert!(matches!(err, Error::NotAStore { .. }), "{err}");
    // A directory of someone else's files is never written to.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("data.csv"), b"a,b\n").unwrap();
    let err = Store::open(&foreign).expect_err("foreign directory");
    assert!(err.to_string().contains("no CAIRN marker"), "{err}");
    assert_eq!(
        std::fs::read_dir(&foreign).unwrap().count(),
        1,
        "nothing may be created"
    );
    // Reading a store that does not exist does not create it.
    let missing = dir.path().join("missing");
    let err = Store::open_read_only(&missing).expect_err("missing store");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(!missing.exists());
    assert!(Store::verify(&missing).is_err());
    // A writer creates a missing directory, parents included.
    let nested = dir.path().join("a/b/c");
    Store::open(&nested).unwrap().save("job", "p", &1).unwrap();
    assert!(nested.join("CAIRN").exists());
}

fn newer_store_format_is_refused(disk: Disk) {
    disk.open().unwrap().save("job", "p", &1).unwrap();
    disk.write_file("CAIRN", b"cairn store\nformat_version 9\n");
    let err = disk.open().expect_err("newer marker");
    assert!(
        matches!(err, Error::UnsupportedVersion { found: 9, .. }),
        "{err}"
    );
    assert!(matches!(
        disk.open_read_only(),
        Err(Error::UnsupportedVersion { .. })
    ));
}

fn recovery_mode_option_is_reported(disk: Disk) {
    let store = disk
        .open_with(Options::default().recovery(RecoveryMode::AbsoluteConsistency))
        .unwrap();
    assert_eq!(
        store.recovery_report().mode,
        RecoveryMode::AbsoluteConsistency
    );
}
