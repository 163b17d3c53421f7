//! `cairn demo`: the extractor is killed with SIGKILL several times, resumes each time, and at
//! the end every source record is in the sink exactly once.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::cli::{command, run};

/// Runs `cairn --dir DIR demo --json ARGS` and returns its exit status and report.
fn demo(dir: &Path, args: &[&str]) -> (i32, Value) {
    let output = command(dir)
        .args(["demo", "--json"])
        .args(args)
        .output()
        .expect("run cairn demo");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON report ({e}): {stdout}\nstderr: {stderr}"));
    (output.status.code().unwrap_or(-1), report)
}

fn number(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in {report}"))
}

fn assert_nothing_lost_or_duplicated(seed: &str, crashes: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let crashes_arg = crashes.to_string();
    let (status, report) = demo(
        dir.path(),
        &["--seed", seed, "--scale", "1", "--crashes", &crashes_arg],
    );
    assert_eq!(status, 0, "seed {seed}: {report}");
    assert_eq!(report["ok"], true, "seed {seed}: {report}");
    assert_eq!(number(&report, "lost"), 0, "seed {seed}: {report}");
    assert_eq!(number(&report, "duplicated"), 0, "seed {seed}: {report}");
    assert_eq!(number(&report, "seed").to_string(), seed);
    assert!(
        number(&report, "crashes") >= crashes,
        "seed {seed}: {report}"
    );
    assert!(
        number(&report, "resumes") >= crashes,
        "seed {seed}: {report}"
    );
    assert!(number(&report, "records") > 0, "seed {seed}: {report}");
    assert!(
        number(&report, "checkpoints_written") > 0,
        "seed {seed}: {report}"
    );
    for job in report["jobs"].as_array().expect("jobs") {
        assert_eq!(job["rows"], job["records"], "seed {seed}: {job}");
        assert_eq!(job["status"], "succeeded", "seed {seed}: {job}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "seed {seed} took {:?}",
        started.elapsed()
    );
    // The demo works in DIR/demo and leaves the store and the sink there for inspection.
    assert!(dir.path().join("demo/store").is_dir());
    assert!(dir.path().join("demo/sink.sqlite").is_file());
}

#[test]
fn demo_survives_kill_9_without_losing_or_duplicating_records() {
    assert_nothing_lost_or_duplicated("7", 3);
}

#[test]
fn demo_with_another_seed_and_more_crashes() {
    assert_nothing_lost_or_duplicated("2024", 4);
}

#[test]
fn demo_runs_again_in_its_own_workspace_but_never_touches_a_foreign_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (status, report) = demo(dir.path(), &["--seed", "1", "--crashes", "1"]);
    assert_eq!(status, 0, "{report}");
    // A second demo replaces the first one's workspace.
    let (status, report) = demo(dir.path(), &["--seed", "1", "--crashes", "1"]);
    assert_eq!(status, 0, "{report}");

    let foreign = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(foreign.path().join("demo")).expect("mkdir");
    std::fs::write(foreign.path().join("demo/precious.txt"), "keep me").expect("write");
    let refused = run(command(foreign.path()).args(["demo", "--crashes", "0"])).expect(2);
    assert!(
        refused.stderr.contains("refusing to touch it"),
        "{refused:?}"
    );
    assert!(foreign.path().join("demo/precious.txt").is_file());
}
