//! Damage to records that were durable is corruption, never a torn tail (issue 9, finding 1).
//!
//! A record is proven durable by any later valid record whose `durable_seq` covers it: a later
//! record, the mark a writer appends after each successful sync and at a clean close, or a
//! seal (format 4). These tests damage one record of a real store in every position that
//! matters and check that no open, read-only or writer, ever hands back an older checkpoint
//! as the latest, a shortened history as complete, or a sequence number that a durable
//! record holds. Files are damaged through the documented format (docs/FORMAT.md).

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn::{Durability, Error, FindingKind, RecoveryMode, Retention, Store};
use serde_json::json;

use common::cli::{command, run, run_with_input};
use common::files::segment_files;
use common::options;

/// The data of save `n`: it carries a unique tag to find its bytes in the segment files.
fn data(n: u64) -> serde_json::Value {
    json!({"n": n, "tag": format!("marker-{n:04}-"), "pad": "x".repeat((n % 50) as usize)})
}

/// Flips one bit inside the stored data of save `n` (found by its tag). Returns the file.
fn flip_bit_in_save(dir: &Path, n: u64) -> PathBuf {
    let tag = format!("marker-{n:04}-");
    for path in segment_files(dir) {
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(tag.len()).position(|w| w == tag.as_bytes()) {
            bytes[at + 3] ^= 0x10;
            std::fs::write(&path, bytes).unwrap();
            return path;
        }
    }
    panic!("save {n} not found in any segment");
}

/// The files of a store as a crash of the process that has it open would leave them: what it
/// wrote is in the page cache, nothing more (no close, no final sync, no final mark).
fn crash_copy(dir: &Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
    }
    copy
}

/// Every way to open the damaged store in the default mode refuses, naming the damage; the
/// tolerant modes open and say what they dropped or skipped.
fn assert_refused_as_corruption(dir: &Path, context: &str) {
    for read_only in [true, false] {
        let opened = if read_only {
            Store::open_read_only_with(dir, options())
        } else {
            Store::open_with(dir, options())
        };
        let err = opened.err().unwrap_or_else(|| {
            panic!("{context}: a default open (read_only {read_only}) must refuse")
        });
        let Error::Corrupt {
            segment,
            offset,
            reason,
        } = &err
        else {
            panic!("{context}: not a corruption error: {err}");
        };
        assert!(segment.exists(), "{context}: {err}");
        assert!(*offset >= 64, "{context}: {err}");
        assert!(reason.contains("DurableRecordsLost"), "{context}: {err}");
        assert!(
            reason.contains("point-in-time") && reason.contains("skip-corrupted"),
            "{context}: the error says which mode would proceed: {err}"
        );
    }
    let verify = Store::verify(dir).unwrap();
    assert!(
        verify
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::DurableRecordsLost),
        "{context}: {verify:?}"
    );
    assert!(
        verify
            .findings
            .iter()
            .all(|f| f.kind != FindingKind::TornTail),
        "{context}: durable damage taken for a torn tail: {verify:?}"
    );
}

/// Saves `per_session` checkpoints of job `j` in each of `sessions` writer sessions (each one
/// a separate open and clean close, as separate processes would), in `durability` mode.
fn write_sessions(dir: &Path, durability: Durability, sessions: u64, per_session: u64) -> u64 {
    let mut n = 0;
    for _ in 0..sessions {
        let store = Store::open_with(dir, options().durability(durability)).unwrap();
        for _ in 0..per_session {
            n += 1;
            store.save("j", "p", &data(n)).unwrap();
        }
        store.close().unwrap();
    }
    n
}

const DURABILITIES: [Durability; 3] = [
    Durability::Sync,
    Durability::Buffered {
        interval: std::time::Duration::from_millis(5),
    },
    Durability::OsOnly,
];

#[test]
fn a_flipped_bit_in_a_cleanly_closed_log_is_corruption_in_every_durability_mode() {
    // The reproduction: 20 saves over two sessions, a bit flipped in save 3.
    for durability in DURABILITIES {
        for damaged in [1, 3, 10, 11, 19, 20] {
            let dir = tempfile::tempdir().unwrap();
            let last = write_sessions(dir.path(), durability, 2, 10);
            flip_bit_in_save(dir.path(), damaged);
            let context = format!("{durability:?}, save {damaged} of {last} damaged");
            assert_refused_as_corruption(dir.path(), &context);
        }
    }
}

#[test]
fn tolerant_modes_say_what_they_drop_and_never_reuse_a_durable_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    write_sessions(dir.path(), Durability::OsOnly, 2, 10);
    flip_bit_in_save(dir.path(), 3);
    // Skip-corrupted keeps every valid record: the latest is save 20, nothing is reused.
    let copy = crash_copy(dir.path());
    let store =
        Store::open_with(copy.path(), options().recovery(RecoveryMode::SkipCorrupted)).unwrap();
    let report = store.recovery_report().clone();
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.kind == FindingKind::DurableRecordsLost),
        "{report:?}"
    );
    assert_eq!(store.latest("j").unwrap().unwrap().data, data(20));
    assert_eq!(store.history("j").unwrap().len(), 19);
    assert_eq!(store.save("j", "p", &data(21)).unwrap(), 21);
    drop(store);
    // Point-in-time keeps the records before the damage and reports what it dropped.
    let store =
        Store::open_read_only_with(dir.path(), options().recovery(RecoveryMode::PointInTime))
            .unwrap();
    let report = store.recovery_report();
    let finding = report
        .findings
        .iter()
        .find(|f| f.kind == FindingKind::DurableRecordsLost)
        .unwrap_or_else(|| panic!("{report:?}"));
    assert!(
        finding.detail.contains("17 valid records follow"),
        "{finding:?}"
    );
    assert_eq!(store.latest("j").unwrap().unwrap().data, data(2));
}

#[test]
fn the_last_synced_save_before_a_crash_is_proven_by_its_mark() {
    // Sync mode: after the sync of save 5 the writer appended a mark; the process then died.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    for n in 1..=5 {
        store.save("j", "p", &data(n)).unwrap();
    }
    let crashed = crash_copy(dir.path());
    drop(store);
    flip_bit_in_save(crashed.path(), 5);
    assert_refused_as_corruption(crashed.path(), "last synced save damaged after a crash");
}

#[test]
fn a_save_that_was_never_synced_is_still_a_torn_tail() {
    // OS-only mode and a crash: nothing proves saves 6..10 durable, so damage among them is
    // a write torn by the crash, cut off in the default mode.
    let dir = tempfile::tempdir().unwrap();
    write_sessions(dir.path(), Durability::OsOnly, 1, 5);
    let store = Store::open_with(dir.path(), options().durability(Durability::OsOnly)).unwrap();
    for n in 6..=10 {
        store.save("j", "p", &data(n)).unwrap();
    }
    let crashed = crash_copy(dir.path());
    drop(store);
    flip_bit_in_save(crashed.path(), 7);
    let store = Store::open_with(crashed.path(), options()).unwrap();
    let report = store.recovery_report();
    assert_eq!(report.findings.len(), 1, "{report:?}");
    assert_eq!(report.findings[0].kind, FindingKind::TornTail, "{report:?}");
    assert_eq!(store.latest("j").unwrap().unwrap().data, data(6));
    // Saves 1..=5 were proven at the first session's close and survive.
    assert_eq!(store.history("j").unwrap().len(), 6);
}

#[test]
fn damage_in_a_sealed_segment_before_an_empty_newest_segment_is_corruption() {
    // Fill segment 1 until it seals; the rollover created segment 2, which holds nothing yet.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options().durability(Durability::OsOnly)).unwrap();
    let mut n = 0;
    while store.segment_count() < 2 {
        n += 1;
        store.save("j", "p", &data(n)).unwrap();
    }
    // The save that rolled over sits in segment 2: that is the newest segment with records.
    // A crash copy taken now, with segment 2's only record cut off, has an empty newest
    // segment after a sealed one, the state of a crash just after a rollover.
    let crashed = crash_copy(dir.path());
    drop(store);
    let newest = segment_files(crashed.path()).pop().unwrap();
    let mut bytes = std::fs::read(&newest).unwrap();
    bytes[64..].fill(0);
    std::fs::write(&newest, bytes).unwrap();
    for damaged in [1, n / 2, n - 1] {
        let copy = crash_copy(crashed.path());
        flip_bit_in_save(copy.path(), damaged);
        let context = format!(
            "save {damaged} of sealed segment 1 ({} saves) damaged",
            n - 1
        );
        assert_refused_as_corruption(copy.path(), &context);
        assert_eq!(
            segment_files(copy.path()).len(),
            2,
            "{context}: nothing removed"
        );
    }
}

#[test]
fn damage_in_a_compacted_segment_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), options()).unwrap();
    for n in 1..=400 {
        store.save(&format!("j{}", n % 4), "p", &data(n)).unwrap();
    }
    store
        .compact_with(&Retention::default().keep_last(1000))
        .unwrap();
    store.close().unwrap();
    for damaged in [1, 200, 399] {
        let copy = crash_copy(dir.path());
        flip_bit_in_save(copy.path(), damaged);
        let err = Store::open_with(copy.path(), options()).expect_err("damage");
        assert!(err.is_corruption(), "{err}");
        let err = Store::open_read_only_with(copy.path(), options()).expect_err("damage");
        assert!(err.is_corruption(), "{err}");
    }
}

#[test]
fn concurrent_savers_in_one_batch_are_all_proven() {
    // Eight threads save at once (group commit); the process dies; any damaged save that was
    // acknowledged is corruption, never a torn tail.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open_with(dir.path(), options()).unwrap());
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    store
                        .save(&format!("j{t}"), "p", &data(t * 10 + i + 1))
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let crashed = crash_copy(dir.path());
    drop(store);
    for damaged in [1, 37, 80] {
        let copy = crash_copy(crashed.path());
        flip_bit_in_save(copy.path(), damaged);
        assert_refused_as_corruption(copy.path(), &format!("save {damaged} of 80 damaged"));
    }
}

#[test]
fn the_cli_refuses_a_log_damaged_in_the_middle_and_reuses_no_sequence_number() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("s");
    for batch in 0..2u64 {
        let lines: String = (batch * 10 + 1..=batch * 10 + 10)
            .map(|n| format!("{{\"job\":\"j\",\"phase\":\"p\",\"data\":{}}}\n", data(n)))
            .collect();
        let args = ["--durability", "os", "put", "--stdin"];
        run_with_input(command(&store_dir).args(args), lines.as_bytes()).expect(0);
    }
    flip_bit_in_save(&store_dir, 3);
    for args in [
        &["history", "j"][..],
        &["get", "j"],
        &["jobs"],
        &["put", "j", "--phase", "p", "--data", "{\"n\":21}"],
    ] {
        let out = run(command(&store_dir).args(args)).expect(1);
        assert!(
            out.stderr.contains("00000000000000000001.seg")
                && out.stderr.contains("DurableRecordsLost"),
            "{args:?}: {out:?}"
        );
        assert!(out.stderr.contains("point-in-time"), "{args:?}: {out:?}");
    }
    // A tolerant read says on stderr what it skipped, and shows the true latest.
    let out = run(command(&store_dir).args(["--recovery", "skip-corrupted", "get", "j"])).expect(0);
    assert!(out.stdout.contains("marker-0020-"), "{out:?}");
    assert!(out.stderr.contains("DurableRecordsLost"), "{out:?}");
}
