//! End-to-end tests of `cairn compact`, `cairn stats` and `cairn delete`: what they free and
//! report, that a dry run changes nothing, and their exit statuses.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cairn::Store;
use serde_json::{Value, json};

use common::cli::{BIN, cairn, run, spawn_holding_writer, store_dir};
use common::files::snapshot;
use common::unsynced_options;

/// Builds a store of `jobs` jobs that each saved `saves` checkpoints of about 1.5 KiB in
/// turn, with a run started now and then (job events for the snapshot to fold): many
/// superseded checkpoints over many segments.
fn superseded_store(dir: &Path, jobs: usize, saves: usize) {
    let store = Store::open_with(dir, unsynced_options()).expect("open");
    let pad = "x".repeat(1500);
    for n in 0..saves {
        for j in 0..jobs {
            let job = format!("job{j}");
            if n % 25 == 0 {
                store.start_run(&job).expect("start run");
            }
            store
                .save(&job, "extract", &json!({"n": n, "pad": pad}))
                .expect("save");
        }
    }
    store.close().expect("close");
}

/// Saves one checkpoint for each of 60 new jobs: enough to fill the segment being written and
/// start another. That segment is never compacted, so afterwards all the history of the
/// jobs saved before is in sealed segments, where retention applies to it.
fn seal_history(dir: &Path) {
    let store = Store::open_with(dir, unsynced_options()).expect("open");
    let pad = "y".repeat(1500);
    for f in 0..60 {
        store
            .save(&format!("once{f:02}"), "p", &json!({"pad": pad}))
            .expect("save");
    }
    store.close().expect("close");
}

/// The segment files of `dir` and their total length.
fn segments(dir: &Path) -> (usize, u64) {
    let lens: Vec<u64> = snapshot(dir)
        .iter()
        .filter(|(path, _)| path.extension().is_some_and(|ext| ext == "seg"))
        .map(|(_, bytes)| bytes.len() as u64)
        .collect();
    (lens.len(), lens.iter().sum())
}

fn u64_field(value: &Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a number: {value}"))
}

/// The latest checkpoint of every job, as `get --json` prints it.
fn latest_of_each(dir: &Path, jobs: usize) -> Vec<Value> {
    (0..jobs)
        .map(|j| {
            run(cairn(dir).args(["get", &format!("job{j}"), "--json"]))
                .expect(0)
                .json()
        })
        .collect()
}

#[test]
fn compact_frees_the_space_of_superseded_checkpoints_and_keeps_the_latest() {
    let (_temp, dir) = store_dir();
    superseded_store(&dir, 3, 150);
    let (segments_before, bytes_before) = segments(&dir);
    assert!(segments_before > 5, "{segments_before} segments");
    let latest_before = latest_of_each(&dir, 3);

    let report = run(cairn(&dir).args(["compact", "--json"]))
        .expect(0)
        .json();
    let (segments_after, bytes_after) = segments(&dir);
    assert_eq!(report["dry_run"], false, "{report}");
    assert_eq!(report["compacted"], true, "{report}");
    assert_eq!(u64_field(&report, "bytes_before"), bytes_before, "{report}");
    assert_eq!(u64_field(&report, "bytes_after"), bytes_after, "{report}");
    assert_eq!(
        u64_field(&report, "bytes_freed"),
        bytes_before - bytes_after,
        "{report}"
    );
    assert!(bytes_after < bytes_before / 2, "{report}");
    assert_eq!(
        u64_field(&report, "segments_before"),
        segments_before as u64
    );
    assert_eq!(u64_field(&report, "segments_after"), segments_after as u64);
    assert!(u64_field(&report, "checkpoints_dropped") > 300, "{report}");
    assert!(u64_field(&report, "events_folded") >= 3, "{report}");
    assert_eq!(u64_field(&report, "jobs"), 3, "{report}");

    assert_eq!(latest_of_each(&dir, 3), latest_before);
    run(cairn(&dir).arg("verify")).expect(0);
    // Nothing left to gain: a second compaction changes nothing.
    let again = run(cairn(&dir).args(["compact", "--json"]))
        .expect(0)
        .json();
    assert_eq!(again["compacted"], false, "{again}");
    assert_eq!(u64_field(&again, "bytes_freed"), 0, "{again}");
    assert_eq!(segments(&dir), (segments_after, bytes_after));
}

#[test]
fn the_summary_gives_sizes_in_binary_units_and_what_was_freed() {
    let (_temp, dir) = store_dir();
    superseded_store(&dir, 2, 100);
    let summary = run(cairn(&dir).args(["compact", "--keep-last", "3"])).expect(0);
    let lines: Vec<&str> = summary.stdout.lines().collect();
    assert_eq!(lines.first().copied(), Some("result:       compacted"));
    assert!(lines.contains(&"retention:    keep last 3"), "{summary:?}");
    let size = lines
        .iter()
        .find(|line| line.starts_with("size:"))
        .expect("a size line");
    assert!(
        size.contains("KiB ->") && size.contains("(freed "),
        "{size}"
    );
    assert!(summary.stdout.contains("checkpoints:  "), "{summary:?}");
    assert!(summary.stdout.contains(" dropped"), "{summary:?}");
    // Without a terminal there is no progress bar: stderr stays empty.
    assert_eq!(summary.stderr, "", "{summary:?}");

    let nothing = run(cairn(&dir).arg("compact")).expect(0);
    assert!(
        nothing
            .stdout
            .starts_with("result:       nothing to compact"),
        "{nothing:?}"
    );
}

#[test]
fn dry_run_changes_nothing_and_predicts_the_compaction() {
    let (_temp, dir) = store_dir();
    superseded_store(&dir, 3, 120);
    let before = snapshot(&dir);

    let predicted = run(cairn(&dir).args(["compact", "--dry-run", "--json"]))
        .expect(0)
        .json();
    let table = run(cairn(&dir).args(["compact", "--dry-run"])).expect(0);
    assert!(snapshot(&dir) == before, "a dry run must not change a byte");
    assert_eq!(predicted["dry_run"], true, "{predicted}");
    assert_eq!(predicted["compacted"], true, "{predicted}");
    assert!(u64_field(&predicted, "bytes_freed") > 0, "{predicted}");
    assert_eq!(
        u64_field(&predicted, "bytes_freed"),
        u64_field(&predicted, "bytes_before") - u64_field(&predicted, "bytes_after")
    );
    assert!(
        table.stdout.contains("dry run, nothing changed") && table.stdout.contains("(would free "),
        "{table:?}"
    );

    let done = run(cairn(&dir).args(["compact", "--json"]))
        .expect(0)
        .json();
    for field in [
        "bytes_before",
        "bytes_after",
        "bytes_freed",
        "segments_before",
        "segments_after",
        "checkpoints_kept",
        "checkpoints_dropped",
        "events_folded",
        "jobs",
        "upto_seq",
    ] {
        assert_eq!(
            done[field], predicted[field],
            "{field}: {done} vs {predicted}"
        );
    }
}

#[test]
fn while_a_writer_holds_the_lock_dry_run_works_and_compact_exits_1() {
    let (_temp, dir) = store_dir();
    superseded_store(&dir, 2, 100);
    let mut holder = spawn_holding_writer(&dir);
    let before = snapshot(&dir);

    let predicted = run(cairn(&dir).args(["compact", "--dry-run", "--json"]))
        .expect(0)
        .json();
    assert!(u64_field(&predicted, "bytes_freed") > 0, "{predicted}");
    let stats = run(cairn(&dir).args(["stats", "--json"])).expect(0).json();
    assert_eq!(u64_field(&stats, "jobs"), 3, "{stats}");

    let refused = run(cairn(&dir).arg("compact")).expect(1);
    assert!(refused.stderr.contains("locked"), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains(&format!("pid={}", holder.child.id())),
        "{refused:?}"
    );
    let refused = run(cairn(&dir).args(["delete", "job0"])).expect(1);
    assert!(refused.stderr.contains("locked"), "{refused:?}");
    assert!(snapshot(&dir) == before, "nothing may change");

    drop(holder.stdin);
    assert!(holder.child.wait().expect("writer exits").success());
    let done = run(cairn(&dir).args(["compact", "--json"]))
        .expect(0)
        .json();
    assert_eq!(done["compacted"], true, "{done}");
}

#[test]
fn keep_last_1_leaves_one_checkpoint_per_job() {
    let (_temp, dir) = store_dir();
    superseded_store(&dir, 3, 60);
    seal_history(&dir);
    let latest_before = latest_of_each(&dir, 3);

    // The global retention flag, after the command name.
    let report = run(cairn(&dir).args(["compact", "--keep-last", "1", "--json"]))
        .expect(0)
        .json();
    assert_eq!(report["compacted"], true, "{report}");

    let jobs = run(cairn(&dir).args(["jobs", "--json"])).expect(0).json();
    let jobs = jobs.as_array().expect("an array");
    assert_eq!(jobs.len(), 63);
    for job in jobs {
        assert_eq!(job["checkpoints"], 1, "{job}");
    }
    for (j, latest) in latest_before.iter().enumerate() {
        let history = run(cairn(&dir).args(["history", &format!("job{j}"), "--json"]))
            .expect(0)
            .json();
        assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
        assert_eq!(&history[0], latest);
    }
}

#[test]
fn retention_flags_go_before_or_after_compact() {
    let (_temp, dir) = store_dir();
    superseded_store(&dir, 2, 100);
    seal_history(&dir);
    let plan = |args: &[&str]| {
        let mut report = run(cairn(&dir).args(args)).expect(0).json();
        report["duration_us"] = json!(0);
        report
    };
    let after = plan(&["compact", "--dry-run", "--json", "--keep-last", "3"]);
    let before = plan(&["--keep-last", "3", "compact", "--dry-run", "--json"]);
    assert_eq!(after, before);
    let default = plan(&["compact", "--dry-run", "--json"]);
    assert!(
        u64_field(&after, "checkpoints_kept") < u64_field(&default, "checkpoints_kept"),
        "keep last 3 keeps fewer than the default 10: {after} vs {default}"
    );
    // Nothing is older than a day, so an age limit of a day drops nothing more.
    let aged = plan(&["compact", "--dry-run", "--json", "--max-age", "1d"]);
    assert_eq!(aged, default);
}

#[test]
fn over_the_size_limit_the_report_says_so_and_warns() {
    let (_temp, dir) = store_dir();
    superseded_store(&dir, 3, 100);
    // 60 more jobs of 1.5 KiB each: their latest checkpoints alone need more than a segment.
    seal_history(&dir);
    // Less than three segments is refused: nothing would be left for the compacted data.
    let refused = run(cairn(&dir).args(["compact", "--dry-run", "--max-bytes", "128KiB"]));
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(refused.stderr.contains("three segments"), "{refused:?}");
    // Three segments is the smallest limit; the new segment an explicit compaction starts
    // takes one, the room for the next one another, which leaves one for the compacted data.
    let args = ["compact", "--dry-run", "--max-bytes", "192KiB"];
    let report = run(cairn(&dir).args(args).arg("--json")).expect(0);
    assert_eq!(report.json()["over_limit"], true, "{report:?}");
    assert!(report.stderr.contains("warning"), "{report:?}");
    let table = run(cairn(&dir).args(args)).expect(0);
    assert!(table.stdout.contains("warning:"), "{table:?}");
    assert!(table.stdout.contains("192.0 KiB"), "{table:?}");

    let fits =
        run(cairn(&dir).args(["compact", "--dry-run", "--json", "--max-bytes", "1MiB"])).expect(0);
    assert_eq!(fits.json()["over_limit"], false, "{fits:?}");
    assert_eq!(fits.stderr, "", "{fits:?}");
}

#[test]
fn stats_before_and_after_compaction() {
    let (_temp, dir) = store_dir();
    superseded_store(&dir, 3, 120);
    let (segment_count, bytes_on_disk) = segments(&dir);

    let stats = run(cairn(&dir).args(["stats", "--json"])).expect(0).json();
    assert_eq!(u64_field(&stats, "segments"), segment_count as u64);
    assert_eq!(u64_field(&stats, "storage_bytes"), bytes_on_disk);
    assert_eq!(u64_field(&stats, "jobs"), 3);
    assert!(u64_field(&stats, "records") > 360, "{stats}");
    assert_eq!(
        u64_field(&stats, "live_bytes") + u64_field(&stats, "dead_bytes"),
        u64_field(&stats, "record_bytes"),
        "{stats}"
    );
    assert!(
        u64_field(&stats, "dead_bytes") > u64_field(&stats, "live_bytes"),
        "{stats}"
    );
    assert_eq!(stats["size_limit_bytes"], Value::Null);
    assert_eq!(stats["health"]["healthy"], true, "{stats}");
    assert_eq!(stats["health"]["full"], false, "{stats}");
    assert_eq!(stats["health"]["poisoned"], Value::Null, "{stats}");
    let reclaimable = u64_field(&stats, "reclaimable_bytes");
    let predicted = run(cairn(&dir).args(["compact", "--dry-run", "--json"]))
        .expect(0)
        .json();
    assert_eq!(reclaimable, u64_field(&predicted, "bytes_freed"));
    assert!(reclaimable > bytes_on_disk / 2, "{stats}");

    let table = run(cairn(&dir).arg("stats")).expect(0);
    for label in [
        "segments:",
        "records:",
        "live:",
        "dead:",
        "jobs:",
        "reclaimable:",
        "size limit:",
        "health:       ok",
    ] {
        assert!(table.stdout.contains(label), "{label}: {table:?}");
    }
    assert!(table.stdout.contains(" KiB"), "{table:?}");

    let report = run(cairn(&dir).args(["compact", "--json"]))
        .expect(0)
        .json();
    let after = run(cairn(&dir).args(["stats", "--json"])).expect(0).json();
    assert_eq!(u64_field(&after, "reclaimable_bytes"), 0, "{after}");
    assert_eq!(
        u64_field(&after, "storage_bytes"),
        u64_field(&report, "bytes_after")
    );
    assert_eq!(
        u64_field(&after, "segments"),
        u64_field(&report, "segments_after")
    );
    assert_eq!(u64_field(&after, "jobs"), 3);
    assert!(
        u64_field(&after, "dead_bytes") < u64_field(&stats, "dead_bytes") / 10,
        "{after}"
    );

    let limited = run(cairn(&dir).args(["stats", "--json", "--max-bytes", "1MiB"]))
        .expect(0)
        .json();
    assert_eq!(u64_field(&limited, "size_limit_bytes"), 1 << 20);
    let table = run(cairn(&dir).args(["stats", "--max-bytes", "1MiB"])).expect(0);
    assert!(table.stdout.contains("size limit:   1.0 MiB"), "{table:?}");
}

#[test]
fn delete_then_jobs_no_longer_lists_it() {
    let (_temp, dir) = store_dir();
    superseded_store(&dir, 2, 3);
    let deleted =
        run(cairn(&dir).args(["delete", "job0", "--reason", "retired", "--json"])).expect(0);
    assert_eq!(deleted.json(), json!({"job": "job0", "deleted": true}));

    let jobs = run(cairn(&dir).args(["jobs", "--json"])).expect(0).json();
    let names: Vec<&str> = jobs
        .as_array()
        .expect("an array")
        .iter()
        .map(|job| job["job"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["job1"]);
    run(cairn(&dir).args(["get", "job0"])).expect(1);
    let stats = run(cairn(&dir).args(["stats", "--json"])).expect(0).json();
    assert_eq!(stats["jobs"], 1, "{stats}");

    let again = run(cairn(&dir).args(["delete", "job0"])).expect(1);
    assert!(
        again.stderr.contains("\"job0\" does not exist"),
        "{again:?}"
    );
    let unknown = run(cairn(&dir).args(["delete", "nope"])).expect(1);
    assert!(
        unknown.stderr.contains("\"nope\" does not exist"),
        "{unknown:?}"
    );

    let table = run(cairn(&dir).args(["delete", "job1"])).expect(0);
    assert!(table.stdout.contains("deleted job \"job1\""), "{table:?}");
    let jobs = run(cairn(&dir).args(["jobs", "--json"])).expect(0).json();
    assert_eq!(jobs, json!([]));
    // A new save under a deleted name starts a new job.
    run(cairn(&dir).args(["put", "job0", "--phase", "p", "--data", "1"])).expect(0);
    let history = run(cairn(&dir).args(["history", "job0", "--json"]))
        .expect(0)
        .json();
    assert_eq!(history.as_array().map(Vec::len), Some(1), "{history}");
}

#[test]
fn bad_flag_values_exit_2_and_change_nothing() {
    let (_temp, dir) = store_dir();
    superseded_store(&dir, 2, 40);
    let before = snapshot(&dir);
    let cases: [&[&str]; 11] = [
        &["compact", "--keep-last", "0"],
        &["compact", "--keep-last", "-1"],
        &["compact", "--keep-last", "many"],
        &["compact", "--max-age", "30"],
        &["compact", "--max-age", "1.5d"],
        &["compact", "--max-bytes", "1GB"],
        &["compact", "--dry-run=maybe"],
        &["compact", "--everything"],
        &["stats", "extra"],
        &["delete"],
        &["delete", "job0", "--reason"],
    ];
    for args in cases {
        let refused = run(cairn(&dir).args(args)).expect(2);
        assert!(!refused.stderr.is_empty(), "{args:?}");
    }
    // Parsed fine, refused by the store: a limit below two segments is still bad usage.
    let refused = run(cairn(&dir).args(["compact", "--max-bytes", "64KiB"])).expect(2);
    assert!(refused.stderr.contains("size limit"), "{refused:?}");
    assert!(
        snapshot(&dir) == before,
        "a usage error must not change the store"
    );
    // The job name is checked once the store is open (the writer's open rewrites the LOCK
    // file with its pid); the segments stay as they were.
    let refused = run(cairn(&dir).args(["delete", ""])).expect(2);
    assert!(refused.stderr.contains("job name"), "{refused:?}");
    let segment_bytes = |files: &BTreeMap<PathBuf, Vec<u8>>| -> Vec<Vec<u8>> {
        files
            .iter()
            .filter(|(path, _)| path.extension().is_some_and(|ext| ext == "seg"))
            .map(|(_, bytes)| bytes.clone())
            .collect()
    };
    assert!(segment_bytes(&snapshot(&dir)) == segment_bytes(&before));
}

#[test]
fn a_missing_store_is_refused_with_exit_1_and_not_created() {
    let (temp, dir) = store_dir();
    for args in [
        &["compact"][..],
        &["compact", "--dry-run"],
        &["stats"],
        &["delete", "job"],
    ] {
        let refused = run(cairn(&dir).args(args)).expect(1);
        assert!(refused.stderr.contains("not a cairn store"), "{refused:?}");
        assert!(!dir.exists(), "{args:?} created the store");
    }
    let empty = temp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let refused = run(cairn(&empty).arg("compact")).expect(1);
    assert!(refused.stderr.contains("is empty"), "{refused:?}");
    assert_eq!(snapshot(&empty).len(), 0, "nothing was written");
}

/// Runs `command` under `script`, which gives it a terminal, and returns all it drew there.
fn on_a_terminal(command: &str) -> String {
    let output = Command::new("script")
        .args(["--quiet", "--return", "--command", command, "/dev/null"])
        .env_remove("CAIRN_DIR")
        .env_remove("CAIRN_LOG")
        .env("TERM", "xterm")
        .env("COLUMNS", "100")
        .stdin(Stdio::null())
        .output()
        .expect("run script (util-linux)");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_progress_bar_only_on_a_terminal_and_never_with_json() {
    let (_temp, dir) = store_dir();
    superseded_store(&dir, 3, 100);
    // `script` runs the command through a shell: the paths must need no quoting.
    let dir_text = dir.to_str().expect("a UTF-8 temp path");
    for path in [BIN, dir_text] {
        assert!(!path.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)));
    }
    let base = format!("{BIN} --dir {dir_text} --segment-size 64KiB");

    let screen = on_a_terminal(&format!("{base} compact --dry-run"));
    assert!(screen.contains("reading  ["), "{screen:?}");
    assert!(screen.contains(" KiB ("), "{screen:?}");
    assert!(screen.contains("result:"), "{screen:?}");

    let screen = on_a_terminal(&format!("{base} compact --json"));
    assert!(!screen.contains("reading"), "{screen:?}");
    let json = screen.trim();
    let report: Value = serde_json::from_str(json).expect("only the JSON report");
    assert_eq!(report["compacted"], true, "{report}");
}
