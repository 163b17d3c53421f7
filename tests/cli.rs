//! End-to-end tests of the `cairn` binary: the output, exit statuses and error lines that
//! scripts rely on.

mod common;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use common::cli::{BIN, Run, cairn, run, run_with_input, spawn_holding_writer, store_dir};
use common::files::{segment_files, snapshot};

fn put(dir: &Path, job: &str, phase: &str, data: &Value) -> u64 {
    let run = run(cairn(dir)
        .args(["--json", "put", job, "--phase", phase, "--data"])
        .arg(data.to_string()))
    .expect(0);
    run.json()["seq"].as_u64().expect("seq")
}

fn put_lines(dir: &Path, lines: &str) -> Run {
    run_with_input(cairn(dir).args(["put", "--stdin"]), lines.as_bytes())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[test]
fn put_then_get_round_trips_with_exact_json_fields() {
    let (_temp, dir) = store_dir();
    let data = json!({"cursor": "Y3Vy", "processed": 50, "nested": [1, {"a": null}]});
    let put = run(cairn(&dir)
        .args([
            "put",
            "github_sync",
            "--json",
            "--phase",
            "pr_extraction",
            "--data",
        ])
        .arg(data.to_string()))
    .expect(0);
    assert_eq!(put.stdout, "{\"job\":\"github_sync\",\"seq\":1}\n");

    let get = run(cairn(&dir).args(["get", "github_sync", "--json"])).expect(0);
    let checkpoint = get.json();
    let fields: Vec<&str> = checkpoint
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    // The contract's six fields, extended (never renamed) with the save's trigger.
    assert_eq!(
        fields,
        ["at", "data", "job", "phase", "seq", "trigger", "version"]
    );
    assert_eq!(checkpoint["trigger"], "manual");
    assert_eq!(checkpoint["job"], "github_sync");
    assert_eq!(checkpoint["seq"], 1);
    assert_eq!(checkpoint["phase"], "pr_extraction");
    assert_eq!(checkpoint["version"], 1);
    assert_eq!(checkpoint["data"], data);
    let at = checkpoint["at"].as_str().expect("at is a string");
    chrono::DateTime::parse_from_rfc3339(at).expect("at is RFC 3339");

    let table = run(cairn(&dir).args(["get", "github_sync"])).expect(0);
    assert!(table.stdout.contains("pr_extraction"), "{table:?}");
    assert!(table.stdout.contains("\"Y3Vy\""), "{table:?}");
}

#[test]
fn put_stdin_acknowledges_each_line_with_increasing_seqs() {
    let (_temp, dir) = store_dir();
    let lines = "{\"job\":\"a\",\"phase\":\"p\",\"data\":1}\n\
                 \n\
                 {\"job\":\"b\",\"phase\":\"\",\"data\":{\"x\":[true]}}\r\n\
                 {\"job\":\"a\",\"phase\":\"q\",\"data\":null}\n\
                 {\"job\":\"c\",\"phase\":\"p\",\"data\":\"last line without newline\"}";
    let run = put_lines(&dir, lines).expect(0);
    let acks = run.stdout_lines();
    let jobs: Vec<&str> = acks
        .iter()
        .map(|a| a["job"].as_str().expect("job"))
        .collect();
    assert_eq!(jobs, ["a", "b", "a", "c"]);
    let seqs: Vec<u64> = acks
        .iter()
        .map(|a| a["seq"].as_u64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    for ack in &acks {
        assert_eq!(ack.as_object().map(|o| o.len()), Some(2), "{ack}");
    }
    let latest = self::run(cairn(&dir).args(["get", "b", "--json"])).expect(0);
    assert_eq!(latest.json()["data"], json!({"x": [true]}));
    assert_eq!(latest.json()["phase"], "");
}

#[test]
fn history_is_oldest_first_and_limit_keeps_the_most_recent() {
    let (_temp, dir) = store_dir();
    let mut seqs = Vec::new();
    for i in 0..5 {
        seqs.push(put(&dir, "job", &format!("phase{i}"), &json!({"i": i})));
        put(&dir, "other", "p", &json!(i));
    }
    let all = run(cairn(&dir).args(["history", "job", "--json"])).expect(0);
    let all = all.json();
    let got: Vec<u64> = all
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(got, seqs);
    assert_eq!(all[4]["data"], json!({"i": 4}));

    let last_two = run(cairn(&dir).args(["history", "job", "--limit", "2", "--json"])).expect(0);
    let last_two = last_two.json();
    let got: Vec<u64> = last_two
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(got, seqs[3..]);

    let table = run(cairn(&dir).args(["history", "job", "--limit", "3"])).expect(0);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{table:?}");
    assert!(
        lines[1].contains("phase2") && lines[3].contains("phase4"),
        "{table:?}"
    );

    run(cairn(&dir).args(["history", "job", "--limit", "0"])).expect(2);
    let missing = run(cairn(&dir).args(["history", "nope"])).expect(1);
    assert!(missing.stderr.contains("\"nope\""), "{missing:?}");
}

#[test]
fn jobs_lists_every_job_with_its_latest_checkpoint() {
    let (_temp, dir) = store_dir();
    put(&dir, "beta", "one", &json!(1));
    put(&dir, "alpha", "first", &json!(2));
    let beta_latest = put(&dir, "beta", "two", &json!(3));
    let jobs = run(cairn(&dir).args(["jobs", "--json"])).expect(0).json();
    let jobs = jobs.as_array().expect("array");
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0]["job"], "alpha");
    assert_eq!(jobs[1]["job"], "beta");
    assert_eq!(jobs[1]["latest_seq"], beta_latest);
    assert_eq!(jobs[1]["phase"], "two");
    assert_eq!(jobs[1]["checkpoints"], 2);
    assert!(jobs[1]["at"].is_string());

    let table = run(cairn(&dir).arg("jobs")).expect(0);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{table:?}");
    assert!(lines[0].starts_with("JOB"), "{table:?}");
    assert!(lines[0].contains("LATEST SEQ") && lines[0].contains("CHECKPOINTS"));
    assert!(
        lines[2].starts_with("beta") && lines[2].contains("two"),
        "{table:?}"
    );
}

#[test]
fn verify_of_a_clean_store_exits_0() {
    let (_temp, dir) = store_dir();
    for i in 0..3 {
        put(&dir, "job", "p", &json!(i));
    }
    let table = run(cairn(&dir).arg("verify")).expect(0);
    assert!(table.stdout.contains("clean"), "{table:?}");
    let report = run(cairn(&dir).args(["verify", "--json"])).expect(0).json();
    assert_eq!(report["findings"], json!([]));
    assert_eq!(report["records_scanned"], 3);
    assert_eq!(report["last_seq"], 3);
}

#[test]
fn verify_reports_a_flipped_byte_and_reading_commands_change_nothing() {
    let (_temp, dir) = store_dir();
    let mut lines = String::new();
    for i in 0..3 {
        lines += &format!("{{\"job\":\"a\",\"phase\":\"p\",\"data\":{{\"i\":{i}}}}}\n");
    }
    lines += "{\"job\":\"b\",\"phase\":\"p\",\"data\":\"UNIQUE-MARKER-7f3a\"}\n";
    for i in 3..6 {
        lines += &format!("{{\"job\":\"a\",\"phase\":\"p\",\"data\":{{\"i\":{i}}}}}\n");
    }
    put_lines(&dir, &lines).expect(0);
    let segment = segment_files(&dir).pop().expect("a segment file");
    let mut bytes = std::fs::read(&segment).expect("read segment");
    let offset = find(&bytes, b"UNIQUE-MARKER-7f3a").expect("marker in the segment");
    bytes[offset] ^= 0x20;
    std::fs::write(&segment, &bytes).expect("write segment");
    let before = snapshot(&dir);

    let table = run(cairn(&dir).arg("verify")).expect(1);
    assert!(table.stdout.contains("DAMAGED"), "{table:?}");
    assert!(table.stdout.contains(".seg"), "{table:?}");
    let report = run(cairn(&dir).args(["verify", "--json"])).expect(1).json();
    let findings = report["findings"].as_array().expect("findings");
    assert!(!findings.is_empty(), "{report}");
    let finding = &findings[0];
    assert!(finding["kind"].is_string(), "{finding}");
    assert_eq!(finding["segment"], json!(segment));
    assert!(finding["offset"].as_u64().expect("offset") <= offset as u64);
    assert!(finding["len_bytes"].as_u64().expect("len") > 0);
    assert!(finding["detail"].as_str().is_some_and(|d| !d.is_empty()));

    // The default recovery mode refuses damage in the middle of the log, clearly.
    for args in [&["get", "a"][..], &["jobs"], &["history", "a"]] {
        let refused = run(cairn(&dir).args(args)).expect(1);
        assert!(refused.stderr.contains("corruption"), "{refused:?}");
    }
    // Skipping the damaged record reads everything else.
    let latest = run(cairn(&dir).args(["--recovery", "skip-corrupted", "get", "a", "--json"]));
    assert_eq!(latest.expect(0).json()["data"], json!({"i": 5}));
    let history = run(cairn(&dir).args(["--recovery", "skip-corrupted", "history", "a", "--json"]));
    assert_eq!(history.expect(0).json().as_array().map(Vec::len), Some(6));
    run(cairn(&dir).args(["--recovery", "skip-corrupted", "get", "b"])).expect(1);
    run(cairn(&dir).args(["--recovery", "point-in-time", "jobs"])).expect(0);

    assert!(
        snapshot(&dir) == before,
        "a reading command changed the store"
    );
}

#[test]
fn verify_refuses_a_foreign_segment_file_with_exit_1() {
    let (_temp, dir) = store_dir();
    put(&dir, "job", "p", &json!(1));
    let foreign = dir.join(format!("{:020}.seg", 7));
    std::fs::write(&foreign, vec![b'z'; 4096]).expect("write foreign file");
    let before = snapshot(&dir);
    let refused = run(cairn(&dir).arg("verify")).expect(1);
    assert!(
        refused.stderr.contains("not a cairn segment"),
        "{refused:?}"
    );
    assert!(refused.stdout.is_empty(), "{refused:?}");
    run(cairn(&dir).args(["get", "job"])).expect(1);
    assert!(snapshot(&dir) == before);
}

#[test]
fn get_of_a_job_without_checkpoint_exits_1() {
    let (_temp, dir) = store_dir();
    put(&dir, "present", "p", &json!(1));
    let missing = run(cairn(&dir).args(["get", "absent"])).expect(1);
    assert!(missing.stderr.starts_with("cairn: "), "{missing:?}");
    assert!(missing.stderr.contains("\"absent\""), "{missing:?}");
    assert!(missing.stdout.is_empty());
}

#[test]
fn reading_a_store_that_does_not_exist_exits_1_and_creates_nothing() {
    let (_temp, dir) = store_dir();
    for args in [&["get", "a"][..], &["jobs"], &["history", "a"], &["verify"]] {
        let refused = run(cairn(&dir).args(args)).expect(1);
        assert!(refused.stderr.contains("not a cairn store"), "{refused:?}");
    }
    assert!(!dir.exists());
}

#[test]
fn bad_json_in_data_exits_2() {
    let (_temp, dir) = store_dir();
    let bad =
        run(cairn(&dir).args(["put", "job", "--phase", "p", "--data", "{not json"])).expect(2);
    assert!(bad.stderr.contains("--data"), "{bad:?}");
    assert!(bad.stdout.is_empty());
}

#[test]
fn a_bad_stdin_line_exits_2_and_keeps_what_was_acknowledged() {
    let (_temp, dir) = store_dir();
    let lines = "{\"job\":\"a\",\"phase\":\"p\",\"data\":1}\n\
                 {\"job\":\"a\",\"phase\":\"p\",\"data\":2}\n\
                 {\"job\":\"a\",\"phase\":\"p\",\"data\":\n\
                 {\"job\":\"a\",\"phase\":\"p\",\"data\":4}\n";
    let run = put_lines(&dir, lines).expect(2);
    assert_eq!(run.stdout_lines().len(), 2, "{run:?}");
    assert!(run.stderr.contains("line 3"), "{run:?}");
    let history = self::run(cairn(&dir).args(["history", "a", "--json"])).expect(0);
    let data: Vec<Value> = history
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|c| c["data"].clone())
        .collect();
    assert_eq!(data, [json!(1), json!(2)]);

    for (line, needle) in [
        ("{\"job\":\"a\",\"phase\":\"p\"}", "missing field `data`"),
        ("{\"job\":\"a\",\"data\":1}", "missing field `phase`"),
        ("[1,2]", "line 1"),
        (
            "{\"job\":\"a\",\"phase\":\"p\",\"data\":1,\"typo\":1}",
            "typo",
        ),
    ] {
        let refused = put_lines(&dir, &format!("{line}\n")).expect(2);
        assert!(refused.stderr.contains(needle), "{refused:?}");
        assert!(refused.stdout.is_empty(), "{refused:?}");
    }
}

#[test]
fn an_invalid_utf8_line_exits_2() {
    let (_temp, dir) = store_dir();
    let mut input = b"{\"job\":\"a\",\"phase\":\"p\",\"data\":1}\n".to_vec();
    input.extend_from_slice(b"{\"job\":\"\xff\xfe\",\"phase\":\"p\",\"data\":1}\n");
    let run = run_with_input(cairn(&dir).args(["put", "--stdin"]), &input).expect(2);
    assert_eq!(run.stdout_lines().len(), 1);
    assert!(
        run.stderr.contains("line 2") && run.stderr.contains("UTF-8"),
        "{run:?}"
    );
}

#[test]
fn an_oversized_line_exits_2_without_reading_it_all() {
    let (_temp, dir) = store_dir();
    let mut input = b"{\"job\":\"a\",\"phase\":\"p\",\"data\":1}\n".to_vec();
    input.extend_from_slice(b"{\"job\":\"a\",\"phase\":\"p\",\"data\":\"");
    input.resize(input.len() + 17 * 1024 * 1024, b'x');
    input.extend_from_slice(b"\"}\n");
    let run = run_with_input(cairn(&dir).args(["put", "--stdin"]), &input).expect(2);
    assert_eq!(run.stdout_lines().len(), 1);
    assert!(
        run.stderr.contains("line 2") && run.stderr.contains("limit"),
        "{run:?}"
    );
    let latest = self::run(cairn(&dir).args(["get", "a", "--json"])).expect(0);
    assert_eq!(latest.json()["data"], 1);
}

#[test]
fn data_over_the_payload_limit_exits_2() {
    let (_temp, dir) = store_dir();
    let data = format!("\"{}\"", "x".repeat(100));
    let refused = run(cairn(&dir)
        .args([
            "--max-payload",
            "64",
            "put",
            "job",
            "--phase",
            "p",
            "--data",
        ])
        .arg(&data))
    .expect(2);
    assert!(refused.stderr.contains("limit"), "{refused:?}");
    run(cairn(&dir)
        .args([
            "--max-payload",
            "1KiB",
            "put",
            "job",
            "--phase",
            "p",
            "--data",
        ])
        .arg(&data))
    .expect(0);
}

#[test]
fn an_empty_job_name_exits_2() {
    let (_temp, dir) = store_dir();
    let refused = run(cairn(&dir).args(["put", "", "--phase", "p", "--data", "1"])).expect(2);
    assert!(refused.stderr.contains("job name"), "{refused:?}");
    let lines =
        "{\"job\":\"ok\",\"phase\":\"p\",\"data\":1}\n{\"job\":\"\",\"phase\":\"p\",\"data\":1}\n";
    let refused = put_lines(&dir, lines).expect(2);
    assert!(refused.stderr.contains("line 2") && refused.stderr.contains("job name"));
    assert_eq!(refused.stdout_lines().len(), 1);
}

#[test]
fn a_dir_that_is_a_regular_file_exits_1() {
    let temp = tempfile::tempdir().expect("tempdir");
    let file = temp.path().join("file");
    std::fs::write(&file, b"not a store").expect("write file");
    for args in [
        &["put", "a", "--phase", "p", "--data", "1"][..],
        &["get", "a"],
        &["verify"],
    ] {
        let refused = run(cairn(&file).args(args)).expect(1);
        assert!(refused.stderr.contains("not a directory"), "{refused:?}");
    }
    assert_eq!(std::fs::read(&file).expect("read file"), b"not a store");
}

#[test]
fn a_non_empty_directory_that_is_not_a_store_exits_1_untouched() {
    let temp = tempfile::tempdir().expect("tempdir");
    std::fs::write(temp.path().join("notes.txt"), b"mine").expect("write file");
    let before = snapshot(temp.path());
    for args in [
        &["put", "a", "--phase", "p", "--data", "1"][..],
        &["jobs"],
        &["verify"],
    ] {
        let refused = run(cairn(temp.path()).args(args)).expect(1);
        assert!(refused.stderr.contains("not a cairn store"), "{refused:?}");
    }
    assert!(snapshot(temp.path()) == before);
}

#[test]
fn a_second_writer_is_refused_and_told_who_holds_the_lock() {
    let (_temp, dir) = store_dir();
    let mut holder = spawn_holding_writer(&dir);
    assert_eq!(holder.seq, 1, "the first save of a new store");
    let refused = run(cairn(&dir).args(["put", "b", "--phase", "p", "--data", "2"])).expect(1);
    assert!(
        refused
            .stderr
            .contains(&format!("pid={}", holder.child.id())),
        "{refused:?}"
    );
    assert!(refused.stderr.contains("locked"), "{refused:?}");
    // Readers are not blocked by the writer.
    let latest = run(cairn(&dir).args(["get", "held", "--json"])).expect(0);
    assert_eq!(latest.json()["seq"], 1);
    drop(holder.stdin);
    assert!(holder.child.wait().expect("writer exits").success());
    run(cairn(&dir).args(["put", "b", "--phase", "p", "--data", "2"])).expect(0);
}

/// `cairn --segment-size SIZE put job` on `dir`.
fn put_with_segment_size(dir: &Path, size: &str) -> Run {
    run(Command::new(BIN)
        .args(["--segment-size", size, "--dir"])
        .arg(dir)
        .args(["put", "job", "--phase", "p", "--data", "1"]))
}

#[test]
fn sizes_take_binary_suffixes_or_plain_bytes() {
    for (size, bytes) in [
        ("1MiB", 1024 * 1024),
        ("131072", 128 * 1024),
        ("256 KiB", 256 * 1024),
    ] {
        let (_temp, dir) = store_dir();
        put_with_segment_size(&dir, size).expect(0);
        let segment = segment_files(&dir).pop().expect("a segment");
        let len = std::fs::metadata(&segment).expect("stat segment").len();
        assert_eq!(len, bytes, "--segment-size {size}");
    }
    let (_temp, dir) = store_dir();
    for size in ["1KB", "lots", "1.5MiB"] {
        let refused = put_with_segment_size(&dir, size).expect(2);
        assert!(refused.stderr.contains("--segment-size"), "{refused:?}");
    }
    // Parsed fine, refused by the store: still a usage error.
    let refused = put_with_segment_size(&dir, "1000").expect(2);
    assert!(refused.stderr.contains("segment size"), "{refused:?}");
}

#[test]
fn cairn_dir_is_used_when_dir_is_absent_and_cairn_data_otherwise() {
    let (temp, dir) = store_dir();
    run(Command::new(BIN).env("CAIRN_DIR", &dir).args([
        "--segment-size",
        "64KiB",
        "put",
        "from_env",
        "--phase",
        "p",
        "--data",
        "1",
    ]))
    .expect(0);
    run(cairn(&dir).args(["get", "from_env"])).expect(0);

    run(Command::new(BIN)
        .env_remove("CAIRN_DIR")
        .current_dir(temp.path())
        .args([
            "--segment-size",
            "64KiB",
            "put",
            "default",
            "--phase",
            "p",
            "--data",
            "1",
        ]))
    .expect(0);
    run(cairn(&temp.path().join("cairn-data")).args(["get", "default"])).expect(0);
}

#[test]
fn global_flags_work_after_the_command_too() {
    let (_temp, dir) = store_dir();
    run(Command::new(BIN)
        .args([
            "put",
            "job",
            "--phase",
            "p",
            "--data",
            "1",
            "--segment-size",
            "64KiB",
            "--dir",
        ])
        .arg(&dir)
        .args(["--durability", "buffered", "--sync-interval", "10ms"]))
    .expect(0);
    run(Command::new(BIN).args(["get", "job", "--dir"]).arg(&dir)).expect(0);
}

#[test]
fn every_durability_mode_saves() {
    let (_temp, dir) = store_dir();
    for mode in ["sync", "buffered", "os"] {
        let line = format!("{{\"job\":\"{mode}\",\"phase\":\"p\",\"data\":1}}\n");
        let run = run_with_input(
            cairn(&dir).args(["--durability", mode, "put", "--stdin"]),
            line.as_bytes(),
        );
        assert_eq!(run.expect(0).stdout_lines().len(), 1);
    }
    let jobs = run(cairn(&dir).args(["jobs", "--json"])).expect(0).json();
    assert_eq!(jobs.as_array().map(Vec::len), Some(3));
}

#[test]
fn usage_errors_exit_2() {
    let (_temp, dir) = store_dir();
    let cases: [&[&str]; 8] = [
        &[],
        &["put"],
        &["put", "job", "--phase", "p"],
        &["put", "job", "--phase", "p", "--data", "1", "--stdin"],
        &["--durability", "sometimes", "jobs"],
        &["--recovery", "hope", "jobs"],
        &["--sync-interval", "1s", "jobs"],
        &["--durability", "buffered", "--sync-interval", "100", "jobs"],
    ];
    for args in cases {
        let refused = run(cairn(&dir).args(args)).expect(2);
        assert!(!refused.stderr.is_empty(), "{args:?}");
    }
    assert!(!dir.exists(), "a usage error must not create the store");
}

/// Runs `command` without the rights to the store: as user `nobody` when the tests run as
/// root (root ignores permission bits), otherwise with the store directory made unreadable.
fn without_permission(dir: &Path, command: &mut Command) -> Run {
    use std::os::unix::fs::PermissionsExt;
    let parent = dir.parent().expect("store has a parent");
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let running_as_root = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if running_as_root.unwrap_or(false) {
        let mut dropped = Command::new("setpriv");
        dropped
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(command.get_program())
            .args(command.get_args())
            .env_remove("CAIRN_DIR")
            .env_remove("CAIRN_LOG");
        run(&mut dropped)
    } else {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o000)).expect("chmod");
        let result = run(command);
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).expect("chmod back");
        result
    }
}

#[test]
fn no_permission_is_a_clear_error_and_loses_nothing() {
    let (_temp, dir) = store_dir();
    let seq = put(&dir, "job", "p", &json!({"n": 1}));
    let before = snapshot(&dir);
    for args in [
        vec!["put", "job", "--phase", "p", "--data", "2"],
        vec!["get", "job"],
        vec!["verify"],
    ] {
        let failed = without_permission(&dir, cairn(&dir).args(&args)).expect(1);
        assert!(
            failed.stderr.contains("ermission denied"),
            "{args:?}: {failed:?}"
        );
    }
    assert_eq!(snapshot(&dir), before, "nothing may change");
    let got = run(cairn(&dir).args(["get", "job", "--json"])).expect(0);
    assert_eq!(got.json()["seq"], seq);
}
