//! I/O faults on the simulated disk, injected at every position of a workload: a failed or
//! short write, a failed sync, a full disk when a segment is created. After each, the store
//! must refuse or carry on as documented, and a crash followed by a reopen must find every
//! acknowledged save, intact, and no other data except possibly the save that failed.

use std::path::Path;

use cairn::testing::{self, CrashMode, Fault, SimDisk};
use cairn::{Error, Options, Store};
use serde_json::{Value, json};

const DIR: &str = "/sim/store";

fn options() -> Options {
    Options::default().segment_size(64 * 1024)
}

fn data(i: u64) -> Value {
    json!({"i": i, "pad": "f".repeat((i % 7 * 300) as usize)})
}

/// Saves until the first error; returns the acknowledged `(seq, i)` and the error.
fn run_until_error(store: &Store, saves: u64) -> (Vec<(u64, u64)>, Option<Error>) {
    let mut acked = Vec::new();
    for i in 0..saves {
        match store.save("job", "p", &data(i)) {
            Ok(seq) => acked.push((seq, i)),
            Err(err) => return (acked, Some(err)),
        }
    }
    (acked, None)
}

/// After a crash of `disk` in every mode, the store holds every acknowledged save intact and
/// nothing else but possibly save number `failed`.
fn check_after_crash(disk: &SimDisk, acked: &[(u64, u64)], failed: Option<u64>, context: &str) {
    for (n, mode) in [
        CrashMode::LoseUnsynced,
        CrashMode::KeepUnsynced,
        CrashMode::TornSectors,
    ]
    .into_iter()
    .enumerate()
    {
        let crashed = disk.crash(mode, n as u64 + 7);
        let store = testing::open(&crashed, Path::new(DIR), options(), false)
            .unwrap_or_else(|e| panic!("{context} {mode:?}: does not reopen: {e}"));
        let history = store.history("job").unwrap();
        assert!(
            history.len() >= acked.len(),
            "{context} {mode:?}: lost acknowledged saves"
        );
        for ((seq, i), checkpoint) in acked.iter().zip(&history) {
            assert_eq!(
                (checkpoint.seq, &checkpoint.data),
                (*seq, &data(*i)),
                "{context} {mode:?}"
            );
        }
        let extra = &history[acked.len()..];
        assert!(
            extra.len() <= 1,
            "{context} {mode:?}: unexpected records {extra:?}"
        );
        if let Some(checkpoint) = extra.first() {
            assert_eq!(
                Some(&checkpoint.data),
                failed.map(data).as_ref(),
                "{context} {mode:?}"
            );
        }
    }
}

#[test]
fn a_failed_sync_anywhere_poisons_the_store_and_loses_nothing_acknowledged() {
    for n in 1..=120 {
        let disk = SimDisk::new();
        let store = testing::open(&disk, Path::new(DIR), options(), false).unwrap();
        disk.inject(Fault::FailSync(n));
        let (acked, err) = run_until_error(&store, 150);
        let context = format!("sync {n} fails");
        let err = err.unwrap_or_else(|| panic!("{context}: no error"));
        check_failure(&disk, &store, err, acked, &context);
    }
}

/// After a failed save: a failure that may have left unsynced bytes poisons the store, and a
/// crash then keeps every acknowledged save; a failure while creating a new segment changes
/// nothing, and the next save works.
fn check_failure(
    disk: &SimDisk,
    store: &Store,
    err: Error,
    mut acked: Vec<(u64, u64)>,
    context: &str,
) {
    let failed = acked.len() as u64;
    match err {
        Error::Poisoned { .. }
        | Error::Io {
            op: "write record" | "sync sealed segment",
            ..
        } => {
            // No blind retry: the store stays poisoned although the disk works again.
            let again = store.save("job", "p", &data(999)).expect_err("poisoned");
            assert!(
                matches!(again, Error::Poisoned { .. }),
                "{context}: {again}"
            );
            check_after_crash(disk, &acked, Some(failed), context);
        }
        Error::Io { op, .. } => {
            assert!(
                [
                    "create segment",
                    "write segment header",
                    "sync new segment",
                    "rename new segment",
                    "sync directory"
                ]
                .contains(&op),
                "{context}: unexpected failure {op}"
            );
            let seq = store
                .save("job", "p", &data(failed))
                .unwrap_or_else(|e| panic!("{context}: retry failed: {e}"));
            acked.push((seq, failed));
            check_after_crash(disk, &acked, None, context);
        }
        other => panic!("{context}: unexpected error {other}"),
    }
}

#[test]
fn a_failed_or_short_write_never_leaves_a_record_with_wrong_content() {
    for n in 1..=80 {
        for short in [false, true] {
            let disk = SimDisk::new();
            let store = testing::open(&disk, Path::new(DIR), options(), false).unwrap();
            disk.inject(if short {
                Fault::ShortWrite(n)
            } else {
                Fault::FailWrite(n)
            });
            let (acked, err) = run_until_error(&store, 150);
            let context = format!("write {n} fails (short: {short})");
            let err = err.unwrap_or_else(|| panic!("{context}: no error"));
            check_failure(&disk, &store, err, acked, &context);
        }
    }
}

#[test]
fn a_full_disk_when_creating_a_segment_is_a_clear_error_and_later_saves_work() {
    // The first creation is the store's first segment; later ones are rollovers.
    for n in 1..=4 {
        let disk = SimDisk::new();
        disk.inject(Fault::NoSpace(n));
        let context = format!("creation {n} finds the disk full");
        let store = match testing::open(&disk, Path::new(DIR), options(), false) {
            Ok(store) => store,
            Err(err) => {
                assert_eq!(n, 1, "{context}: {err}");
                assert!(matches!(err, Error::DiskFull { .. }), "{context}: {err}");
                testing::open(&disk, Path::new(DIR), options(), false)
                    .expect("opens once space is free")
            }
        };
        let (mut acked, err) = run_until_error(&store, 400);
        if n > 1 {
            let err = err.unwrap_or_else(|| panic!("{context}: no error"));
            assert!(matches!(err, Error::DiskFull { .. }), "{context}: {err}");
            assert!(
                err.to_string().contains("free space and retry"),
                "{context}: {err}"
            );
            // Space is free again (the fault was one-shot): the same save now succeeds.
            let i = acked.len() as u64;
            acked.push((
                store.save("job", "p", &data(i)).expect("saves work again"),
                i,
            ));
        }
        drop(store);
        check_after_crash(&disk, &acked, None, &context);
    }
}
