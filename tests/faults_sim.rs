//! I/O faults on the simulated disk, injected at every position of a workload: a failed or
//! short write, a failed sync, a full disk when a segment is created. After each, the store
//! must refuse or carry on as documented, and a crash followed by a reopen must find every
//! acknowledged save, intact, and no other data except possibly the save that failed.

mod common;

use cairn::testing::{CrashMode, Fault, SimDisk};
use cairn::{Error, Store};
use serde_json::{Value, json};

use common::{sim, small_segments};

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
        let store = sim::open(&crashed, small_segments())
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
        let store = sim::open(&disk, small_segments()).unwrap();
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
            op: "write record" | "write mark record",
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
            let store = sim::open(&disk, small_segments()).unwrap();
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
        let store = match sim::open(&disk, small_segments()) {
            Ok(store) => store,
            Err(err) => {
                assert_eq!(n, 1, "{context}: {err}");
                assert!(matches!(err, Error::DiskFull { .. }), "{context}: {err}");
                sim::open(&disk, small_segments()).expect("opens once space is free")
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

/// Faults injected at every step of a compaction: each write, short write, sync and file
/// creation it makes (sealing the segment being written, when it does, and writing the
/// compacted segment) fails in turn. The compaction must fail with a clear error and change
/// nothing the store shows, or, when the failure left the log itself in an unknown state,
/// poison the store; a crash then must find every job's latest checkpoint and state, and either
/// the old history or the one a clean compaction leaves; and once the fault is gone, a store
/// that was not poisoned compacts.
mod compaction_faults {
    use std::collections::BTreeMap;
    use std::path::Path;

    use cairn::testing::{CrashMode, Fault, SimDisk, Step};
    use cairn::{Checkpoint, Durability, Error, JobState, Options, Retention, Store};
    use serde_json::json;

    use crate::common::{options, sim};

    const JOBS: [&str; 4] = ["a", "b", "c", "doomed"];
    const KINDS: [&str; 4] = ["write", "short write", "sync", "create"];

    fn retention() -> Retention {
        Retention::default().keep_last(2)
    }

    fn open(disk: &SimDisk, options: Options) -> Store {
        sim::open(disk, options).expect("the store opens")
    }

    /// Saves of three jobs over several segments, job events, a deleted job, and a tail of
    /// saves of one job.
    fn workload(store: &Store) {
        store.save("doomed", "p", &json!({"doomed": true})).unwrap();
        for i in 0..90u64 {
            let job = JOBS[(i % 3) as usize];
            let pad = "c".repeat((i % 5 * 900) as usize);
            store.save(job, "p", &json!({"i": i, "pad": pad})).unwrap();
            if i % 20 == 0 {
                store.start_run(job).unwrap();
            }
        }
        assert!(store.delete_job("doomed", "retired").unwrap());
        // Segments of `a` alone: whether the segment being written is compacted too or not,
        // the compaction drops most of `a` and keeps the newest checkpoints of `b` and `c`.
        for i in 90..110u64 {
            let pad = "t".repeat(4000);
            store.save("a", "p", &json!({"i": i, "pad": pad})).unwrap();
        }
    }

    /// What the store shows of every job.
    #[derive(Debug, Clone, PartialEq)]
    struct Shown {
        histories: BTreeMap<&'static str, Vec<Checkpoint>>,
        latest: BTreeMap<&'static str, Option<Checkpoint>>,
        states: BTreeMap<&'static str, Option<JobState>>,
    }

    impl Shown {
        fn of(store: &Store) -> Shown {
            Shown {
                histories: JOBS
                    .iter()
                    .map(|&job| (job, store.history(job).unwrap()))
                    .collect(),
                latest: JOBS
                    .iter()
                    .map(|&job| (job, store.latest(job).unwrap()))
                    .collect(),
                states: JOBS.iter().map(|&job| (job, store.job(job))).collect(),
            }
        }

        /// The sequence numbers of every job's history: comparable across runs.
        fn history_seqs(&self) -> BTreeMap<&'static str, Vec<u64>> {
            self.histories
                .iter()
                .map(|(&job, history)| (job, history.iter().map(|c| c.seq).collect()))
                .collect()
        }
    }

    /// Counts the operations of each fault kind that `f` makes on `disk`.
    fn count_steps<T>(disk: &SimDisk, f: impl FnOnce() -> T) -> (T, BTreeMap<&'static str, u64>) {
        let counts = std::sync::Arc::new(std::sync::Mutex::new(BTreeMap::new()));
        {
            let counts = counts.clone();
            disk.set_hook(move |_: &SimDisk, step: Step| {
                let kinds: &[&str] = match step {
                    Step::Write => &["write", "short write"],
                    Step::Sync => &["sync"],
                    Step::Create => &["create"],
                    _ => return,
                };
                let mut counts = counts.lock().unwrap();
                for kind in kinds {
                    *counts.entry(*kind).or_insert(0) += 1;
                }
            });
        }
        let result = f();
        disk.clear_hook();
        let counts = counts.lock().unwrap().clone();
        (result, counts)
    }

    /// How many writes, syncs and file creations a clean compaction of the workload makes,
    /// and the histories it leaves.
    fn clean_compaction() -> (
        BTreeMap<&'static str, u64>,
        BTreeMap<&'static str, Vec<u64>>,
    ) {
        let disk = SimDisk::new();
        let store = open(&disk, options());
        workload(&store);
        let (report, counts) = count_steps(&disk, || store.compact_with(&retention()).unwrap());
        assert!(
            report.compacted && report.checkpoints_dropped > 0,
            "{report:?}"
        );
        (counts, Shown::of(&store).history_seqs())
    }

    fn fault(kind: &str, n: u64) -> Fault {
        match kind {
            "write" => Fault::FailWrite(n),
            "short write" => Fault::ShortWrite(n),
            "sync" => Fault::FailSync(n),
            "create" => Fault::NoSpace(n),
            other => unreachable!("{other}"),
        }
    }

    fn is_temporary(path: &Path) -> bool {
        let name = path.to_string_lossy();
        name.ends_with(".seg.compacting") || name.ends_with(".seg.creating")
    }

    /// A crash now, in several modes: every job's latest checkpoint and state are `before`'s,
    /// and the histories are `before`'s or exactly `compacted`.
    fn check_crash(
        disk: &SimDisk,
        before: &Shown,
        compacted: &BTreeMap<&'static str, Vec<u64>>,
        context: &str,
    ) {
        for (n, mode) in [
            CrashMode::LoseUnsynced,
            CrashMode::KeepUnsynced,
            CrashMode::TornSectors,
            CrashMode::TornPages,
        ]
        .into_iter()
        .enumerate()
        {
            let crashed = disk.crash(mode, n as u64 * 31 + 5);
            let store = sim::open(&crashed, options())
                .unwrap_or_else(|e| panic!("{context} {mode:?}: does not reopen: {e}"));
            let found = Shown::of(&store);
            assert!(
                found.latest == before.latest,
                "{context} {mode:?}: latest checkpoints changed"
            );
            assert_eq!(
                found.states, before.states,
                "{context} {mode:?}: job states"
            );
            assert!(
                found.histories == before.histories || found.history_seqs() == *compacted,
                "{context} {mode:?}: history {:?} is neither the old {:?} nor the compacted {:?}",
                found.history_seqs(),
                before.history_seqs(),
                compacted
            );
            assert!(
                crashed.file_names().iter().all(|p| !is_temporary(p)),
                "{context} {mode:?}: recovery left a temporary file"
            );
        }
    }

    /// A clear error: a full disk says to free space; an I/O error names the operation and
    /// the file; a poisoned store says to reopen.
    fn check_error(kind: &str, err: &Error, context: &str) {
        let message = err.to_string();
        let clear = match err {
            Error::DiskFull { .. } => kind == "create" && message.contains("free space and retry"),
            Error::Io { op, path, .. } => {
                !op.is_empty() && path.to_string_lossy().contains(".seg") && kind != "create"
            }
            Error::Poisoned { .. } => message.contains("close and re-open"),
            _ => false,
        };
        assert!(clear, "{context}: unexpected error: {err:?}");
    }

    /// After a compaction failed cleanly: nothing changed (the store shows what it showed, no
    /// temporary file is left, a crash finds the old store), and once the fault is gone the
    /// compaction succeeds and saves go on.
    fn check_clean_failure(
        disk: &SimDisk,
        store: &Store,
        before: &Shown,
        compacted: &BTreeMap<&'static str, Vec<u64>>,
        context: &str,
    ) {
        assert!(Shown::of(store) == *before, "{context}: the store changed");
        assert!(
            disk.file_names().iter().all(|p| !is_temporary(p)),
            "{context}: a temporary file is left"
        );
        check_crash(disk, before, compacted, context);
        let report = store
            .compact_with(&retention())
            .unwrap_or_else(|e| panic!("{context}: the retry fails: {e}"));
        assert!(report.compacted, "{context}: {report:?}");
        let after = Shown::of(store);
        assert_eq!(after.history_seqs(), *compacted, "{context}");
        assert!(after.latest == before.latest, "{context}");
        assert_eq!(after.states, before.states, "{context}");
        check_crash(disk, &after, compacted, context);
        let seq = store
            .save("a", "p", &json!("after"))
            .unwrap_or_else(|e| panic!("{context}: save after the retry: {e}"));
        assert!(seq > before.latest["a"].as_ref().unwrap().seq, "{context}");
    }

    #[test]
    fn a_fault_at_any_step_of_a_compaction_is_a_clear_error_and_loses_nothing() {
        let (counts, compacted) = clean_compaction();
        let count = |kind: &str| counts.get(kind).copied().unwrap_or(0);
        assert!(
            count("write") >= 3 && count("sync") >= 1 && count("create") >= 1,
            "a compaction writes, syncs and creates a file: {counts:?}"
        );
        let (mut clean_errors, mut poisoned) = (0, 0);
        for kind in KINDS {
            for n in 1..=count(kind) + 1 {
                let context = format!("{kind} {n} of the compaction fails");
                let disk = SimDisk::new();
                let store = open(&disk, options());
                workload(&store);
                let before = Shown::of(&store);
                disk.inject(fault(kind, n));
                let err = match store.compact_with(&retention()) {
                    Ok(report) => {
                        assert!(
                            n > count(kind),
                            "{context}: the compaction succeeded anyway: {report:?}"
                        );
                        disk.clear_faults();
                        assert_eq!(Shown::of(&store).history_seqs(), compacted, "{context}");
                        continue;
                    }
                    Err(err) => err,
                };
                assert!(n <= count(kind), "{context}: failed without a fault: {err}");
                check_error(kind, &err, &context);
                if store.metrics().poisoned.is_some() {
                    poisoned += 1;
                    // No blind retry, although the disk works again.
                    for result in [
                        store.compact_with(&retention()).map(|_| 0),
                        store.save("a", "p", &json!("refused")),
                    ] {
                        assert!(
                            matches!(result, Err(Error::Poisoned { .. })),
                            "{context}: {result:?}"
                        );
                    }
                    check_crash(&disk, &before, &compacted, &context);
                    continue;
                }
                clean_errors += 1;
                check_clean_failure(&disk, &store, &before, &compacted, &context);
            }
        }
        eprintln!(
            "compaction faults: {clean_errors} clean errors, {poisoned} poisoned stores (a clean \
             compaction: {counts:?})"
        );
        assert!(
            clean_errors >= 8,
            "only {clean_errors} faults gave a clean error"
        );
    }

    /// A crash now keeps every save synced up to `flushed`, and of the others a prefix; a
    /// power loss that writes back every dirty page keeps them all, unless a failed sync of the
    /// log (`log_sync_failed`) made the kernel drop its dirty pages: then they are gone for
    /// good, and only the page cache still shows them.
    fn check_synced_prefix(
        disk: &SimDisk,
        all: &[u64],
        flushed: u64,
        log_sync_failed: bool,
        context: &str,
    ) {
        for (i, mode) in [
            CrashMode::LoseUnsynced,
            CrashMode::KeepUnsynced,
            CrashMode::TornSectors,
        ]
        .into_iter()
        .enumerate()
        {
            let crashed = disk.crash(mode, i as u64 + 11);
            let reopened = sim::open(&crashed, options())
                .unwrap_or_else(|e| panic!("{context} {mode:?}: does not reopen: {e}"));
            let mut found: Vec<u64> = JOBS
                .iter()
                .flat_map(|job| reopened.history(job).unwrap())
                .map(|c| c.seq)
                .collect();
            found.sort_unstable();
            // The compaction failed before its commit: nothing was dropped.
            let (synced_found, synced_all) = (
                found.iter().filter(|&&s| s <= flushed),
                all.iter().filter(|&&s| s <= flushed),
            );
            assert!(
                synced_found.eq(synced_all),
                "{context} {mode:?}: found {found:?}, saved {all:?}, synced up to {flushed}"
            );
            let unsynced_found: Vec<u64> = found.iter().copied().filter(|&s| s > flushed).collect();
            let unsynced_all: Vec<u64> = all.iter().copied().filter(|&s| s > flushed).collect();
            assert!(
                unsynced_all.starts_with(&unsynced_found),
                "{context} {mode:?}: the unsynced saves found are not a prefix"
            );
            if mode == CrashMode::KeepUnsynced && !log_sync_failed {
                assert_eq!(
                    unsynced_found, unsynced_all,
                    "{context}: every dirty page written back loses nothing"
                );
            }
        }
    }

    /// With saves not synced yet (`Durability::OsOnly`), a compaction first makes the log
    /// durable. Each sync it makes fails in turn: a failed sync of the log poisons the store,
    /// one of a new file is a clean error; either way a crash keeps every save synced before,
    /// and a prefix of the others. A failed sync of the log drops its dirty pages (Linux): the
    /// unsynced saves are then lost to a power loss whatever it writes back.
    #[test]
    fn a_failed_sync_during_a_compaction_of_unsynced_saves_poisons_or_is_clean() {
        let build = |disk: &SimDisk| {
            let store = open(disk, options().durability(Durability::OsOnly));
            workload(&store);
            store.flush().unwrap();
            let flushed = store.last_seq();
            for i in 0..5 {
                store.save("b", "p", &json!({"unsynced": i})).unwrap();
            }
            (store, flushed)
        };
        let syncs = {
            let disk = SimDisk::new();
            let (store, _) = build(&disk);
            let (result, counts) = count_steps(&disk, || store.compact_with(&retention()));
            result.unwrap();
            counts["sync"]
        };
        let mut poisoned = 0;
        for n in 1..=syncs {
            let context = format!("sync {n} of the compaction fails");
            let disk = SimDisk::new();
            let (store, flushed) = build(&disk);
            let mut all: Vec<u64> = JOBS
                .iter()
                .flat_map(|job| store.history(job).unwrap())
                .map(|c| c.seq)
                .collect();
            all.sort_unstable();
            disk.inject(Fault::FailSync(n));
            let err = store
                .compact_with(&retention())
                .err()
                .unwrap_or_else(|| panic!("{context}: the compaction succeeded anyway"));
            check_error("sync", &err, &context);
            if store.metrics().poisoned.is_some() {
                poisoned += 1;
                assert!(
                    matches!(
                        store.compact_with(&retention()),
                        Err(Error::Poisoned { .. })
                    ),
                    "{context}: no blind retry"
                );
            }
            let log_sync_failed = store.metrics().poisoned.is_some();
            check_synced_prefix(&disk, &all, flushed, log_sync_failed, &context);
        }
        assert!(poisoned >= 1, "no failed sync poisoned the store");
    }
}
