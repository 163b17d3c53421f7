//! `Store::verify` (so `cairn verify`) on a live store (issue 9, finding 7): a writer in
//! another process saves and compacts while verify runs again and again. A scan can catch a
//! record in flight (which looks like damage) or list a segment file just before a
//! compaction removes it (`NotFound`); verify looks again, as a read-only open does, and
//! never reports either.
//!
//! The test binary re-runs itself as the writer child (as `tests/kill9_threads.rs` does).

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;

use cairn::{AutoCompact, Durability, Options, Store};
use serde_json::json;

use common::child::{KillOnDrop, this_test};

const CHILD_DIR_ENV: &str = "CAIRN_VERIFY_LIVE_CHILD_DIR";
/// What the child prints once it has saved.
const READY: &str = "cairn verify-live writer ready";
/// Verify runs while the writer writes this many records: enough that, without looking again,
/// some verifies report damage or `NotFound`.
const WRITER_RECORDS: u64 = 8_000;
/// A bound on the verifies, should the writer be very slow.
const MAX_VERIFIES: u64 = 1_000_000;

/// Small segments and large records: rollovers every few saves, compactions often.
fn options() -> Options {
    common::small_segments()
        .durability(Durability::OsOnly)
        .auto_compact(AutoCompact::default().segments(2))
}

/// Saves of the child at most: it is normally killed long before, and must not outlive a
/// parent that failed.
const CHILD_SAVES: u64 = 1_000_000;

/// The child: saves and compacts until it is killed. Only runs when the parent re-executes
/// this binary with `CHILD_DIR_ENV` set; in a normal test run it returns.
#[test]
fn child_writer_entry_point() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let store = Store::open_with(&dir, options()).expect("child opens the store");
    let pad = "x".repeat(7000);
    for n in 0..CHILD_SAVES {
        store
            .save(&format!("job{}", n % 3), "p", &json!({"n": n, "pad": pad}))
            .expect("save");
        if n == 0 {
            // On a line of its own: the test harness has printed the test's name before.
            println!("\n{READY}");
        }
        if n % 20 == 19 {
            store.compact().expect("compact");
        }
    }
}

/// Starts the writer child and returns once it has saved. The child is killed when dropped
/// (also when the parent's test fails).
fn start_writer(dir: &Path) -> KillOnDrop {
    let mut writer = KillOnDrop(
        this_test("child_writer_entry_point")
            .env(CHILD_DIR_ENV, dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child"),
    );
    let stdout = writer.0.stdout.take().expect("child stdout");
    let ready = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line == READY);
    assert!(ready, "the writer child did not start");
    writer
}

#[test]
fn verify_beside_a_writer_that_saves_and_compacts_reports_no_damage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_dir = dir.path().join("store");
    let mut writer = start_writer(&store_dir);
    let mut problems = Vec::new();
    let (mut verifies, mut last_seq) = (0u64, 0);
    // Until the writer has saved (and compacted) for a while, however fast it goes.
    while last_seq < WRITER_RECORDS && verifies < MAX_VERIFIES {
        verifies += 1;
        match Store::verify(&store_dir) {
            Ok(report) if report.is_clean() => last_seq = report.last_seq,
            Ok(report) => problems.push(format!("verify {verifies}: {:?}", report.findings)),
            Err(error) => problems.push(format!("verify {verifies}: {error}")),
        }
        if problems.len() >= 5 {
            break;
        }
        if let Some(status) = writer.0.try_wait().expect("child status") {
            panic!("the writer child stopped: {status}");
        }
    }
    drop(writer);
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        last_seq >= WRITER_RECORDS,
        "the writer did not get far: {last_seq}"
    );
}
