//! Stores written by released format versions must keep opening. `tests/fixtures/format-v1`
//! was written by `cairn put --stdin` with 64 KiB segments: 120 checkpoints of `github_sync`
//! and 120 of `jira_sync`, interleaved, across two segments. `tests/fixtures/format-v2` was
//! written by the format 2 build (commit d9b4f2f) through the library with 64 KiB segments:
//! `github_sync` started, saved 150 checkpoints (batch_completed) and failed (HTTP 502,
//! recoverable); `jira_sync` started, saved 20 and succeeded; `blob_job` saved one checkpoint
//! of 70,000 bytes of JSON, stored LZ4-compressed. Two segments, 175 records.
//! `tests/fixtures/format-v3` was written by the format 3 build (commit fb4f107) through the
//! library with 64 KiB segments: `github_sync` started, saved 150 checkpoints and failed (HTTP
//! 502, recoverable); `jira_sync` started, saved 20 (`total_issues_processed` 100..=2000) and
//! succeeded; `old_job` saved one checkpoint and was deleted; then a compaction keeping the last
//! 10 of each job (segment 1 is the compacted segment, with its snapshot record); then
//! `github_sync` saved 10 more (`cursor` Y3Vy151..Y3Vy160) and `blob_job` one checkpoint of
//! 70,000 bytes of JSON (LZ4-compressed). Segment 2 is the unsealed tail; last seq 188.
//! `tests/fixtures/format-v4` was written by the format 4 build (the commit that added it) with
//! the same calls as format-v3, except that the store was closed after `github_sync`'s last
//! 10 saves and opened again for `blob_job`'s: segment 2 holds mark records (kind 5) after the
//! syncs and the two closes; last seq 188, as marks take no number.

mod common;

use std::path::{Path, PathBuf};

use cairn::Store;

use common::files::{MARK, SEGMENT_HEADER_BYTES, records, segment_files};
use common::{options, small_segments};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn check_v1_contents(store: &Store) {
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.last_seq(), 241);
    let jira = store.latest("jira_sync").unwrap().unwrap();
    assert_eq!(
        (jira.seq, jira.phase.as_str(), jira.version),
        (241, "issues", 1)
    );
    assert_eq!(jira.data["total_issues_processed"], 12000);
    let github = store.history("github_sync").unwrap();
    assert_eq!(github.len(), 120);
    assert!(github.windows(2).all(|w| w[0].seq < w[1].seq));
    let processed: Vec<u64> = github
        .iter()
        .map(|c| c.data["total_prs_processed"].as_u64().unwrap())
        .collect();
    assert_eq!(processed, (1..=120).map(|i| i * 50).collect::<Vec<u64>>());
    assert_eq!(
        github[119].data["repo_processing_queue"][0]["last_cursor"],
        "Y3Vy120"
    );
}

#[test]
fn format_v1_store_opens_read_only_in_place() {
    let dir = fixture("format-v1");
    let before: Vec<Vec<u8>> = ["00000000000000000001.seg", "00000000000000000002.seg"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    check_v1_contents(&Store::open_read_only(&dir).unwrap());
    assert!(Store::verify(&dir).unwrap().is_clean());
    let after: Vec<Vec<u8>> = ["00000000000000000001.seg", "00000000000000000002.seg"]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    assert_eq!(before, after, "reading must not change the fixture");
}

#[test]
fn format_v1_store_opens_for_writing_and_takes_new_saves() {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture("format-v1")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    let store = Store::open_with(copy.path(), small_segments()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    // A writer never appends records of the current format to a version 1 segment: it sealed
    // the old tail (seq 242) and continues in a new segment of the current format.
    assert_eq!(store.last_seq(), 242);
    assert_eq!(store.segment_count(), 3);
    assert_eq!(
        store
            .save("jira_sync", "issues", &serde_json::json!({"n": 1}))
            .unwrap(),
        243
    );
    drop(store);
    let marker = std::fs::read_to_string(copy.path().join("CAIRN")).unwrap();
    assert_eq!(
        marker, "cairn store\nformat_version 4\n",
        "the marker now says the store needs format 4"
    );
    let store = Store::open_read_only(copy.path()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.latest("jira_sync").unwrap().unwrap().data["n"], 1);
    let github = store.history("github_sync").unwrap();
    assert_eq!(github.len(), 120);
    drop(store);
    // Compaction rewrites the format-1 records in the current format, keeping everything.
    let store = Store::open_with(copy.path(), small_segments()).unwrap();
    let report = store
        .compact_with(&cairn::Retention::default().keep_last(1000))
        .unwrap();
    assert!(report.compacted, "{report:?}");
    assert_eq!(report.checkpoints_dropped, 0, "{report:?}");
    assert_eq!(store.history("github_sync").unwrap(), github);
    drop(store);
    let store = Store::open_read_only(copy.path()).unwrap();
    assert!(store.recovery_report().is_clean());
    assert_eq!(store.history("github_sync").unwrap(), github);
    assert_eq!(store.latest("jira_sync").unwrap().unwrap().data["n"], 1);
}

/// Checks the contents of the format 2 fixture (or of a store made from it that kept every
/// checkpoint).
fn check_v2_contents(store: &Store) {
    use cairn::{JobStatus, Trigger};
    let github = store.history("github_sync").unwrap();
    assert_eq!(github.len(), 150);
    assert!(github.windows(2).all(|w| w[0].seq < w[1].seq));
    let processed: Vec<u64> = github
        .iter()
        .map(|c| c.data["processed"].as_u64().unwrap())
        .collect();
    assert_eq!(processed, (0..150).map(|i| i * 10).collect::<Vec<u64>>());
    assert_eq!(github[149].data["cursor"], "c149");
    assert_eq!(github[149].trigger, Some(Trigger::BatchCompleted));
    let state = store.job("github_sync").unwrap();
    assert_eq!(state.status, JobStatus::Failed);
    assert_eq!(state.retry_count, 1);
    assert_eq!(state.last_error.unwrap().message, "HTTP 502");
    assert_eq!(state.latest_checkpoint.unwrap().seq, github[149].seq);
    let jira = store.job("jira_sync").unwrap();
    assert_eq!(jira.status, JobStatus::Succeeded);
    assert_eq!(store.latest("jira_sync").unwrap().unwrap().data["n"], 19);
    let blob = store.latest("blob_job").unwrap().unwrap();
    assert_eq!(blob.data["blob"].as_str().unwrap().len(), 70_000);
}

fn copy_of(name: &str) -> tempfile::TempDir {
    let copy = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    copy
}

/// Opens the fixture `name` read-only, checks that recovery finds it clean and `check` holds,
/// that `verify` finds it clean, and that none of its files changed. Returns the bytes of its
/// files (segments 1 and 2, then the marker).
fn opens_read_only_in_place(name: &str, check: impl Fn(&Store)) -> Vec<Vec<u8>> {
    let dir = fixture(name);
    let files = [
        "00000000000000000001.seg",
        "00000000000000000002.seg",
        "CAIRN",
    ];
    let read = || -> Vec<Vec<u8>> {
        files
            .iter()
            .map(|f| std::fs::read(dir.join(f)).unwrap())
            .collect()
    };
    let before = read();
    let store = Store::open_read_only(&dir).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    check(&store);
    drop(store);
    assert!(Store::verify(&dir).unwrap().is_clean());
    assert!(before == read(), "reading must not change the fixture");
    before
}

#[test]
fn format_v2_store_opens_read_only_in_place() {
    opens_read_only_in_place("format-v2", check_v2_contents);
}

#[test]
fn format_v2_store_upgrades_takes_saves_and_compacts() {
    let copy = copy_of("format-v2");
    let store = Store::open_with(copy.path(), options()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    check_v2_contents(&store);
    let seq = store
        .save("jira_sync", "issues", &serde_json::json!({"n": 20}))
        .unwrap();
    assert!(seq > 175, "{seq}");
    drop(store);
    let marker = std::fs::read_to_string(copy.path().join("CAIRN")).unwrap();
    assert_eq!(marker, "cairn store\nformat_version 4\n");
    // Keeping everything, compaction rewrites the format 2 segments as one compacted segment.
    let store = Store::open_with(copy.path(), options()).unwrap();
    let report = store
        .compact_with(&cairn::Retention::default().keep_last(1000))
        .unwrap();
    assert!(report.compacted, "{report:?}");
    assert_eq!(report.checkpoints_dropped, 0, "{report:?}");
    assert_eq!(store.history("jira_sync").unwrap().len(), 21);
    let state = store.job("github_sync").unwrap();
    drop(store);
    let store = Store::open_with(copy.path(), options()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.job("github_sync").unwrap(), state);
    assert_eq!(store.history("jira_sync").unwrap().len(), 21);
    // With the default retention, only the newest 10 of each job stay, and the latest data.
    let report = store.compact().unwrap();
    assert!(report.checkpoints_dropped >= 140, "{report:?}");
    let github = store.history("github_sync").unwrap();
    assert_eq!(github.len(), 10);
    assert_eq!(github[9].data["cursor"], "c149");
    assert_eq!(store.job("github_sync").unwrap(), state);
    assert_eq!(
        store.latest("blob_job").unwrap().unwrap().data["blob"]
            .as_str()
            .unwrap()
            .len(),
        70_000
    );
}

/// Checks the contents of the format 3 fixture (or of a store made from it that kept every
/// checkpoint).
fn check_v3_contents(store: &Store) {
    use cairn::JobStatus;
    let github = store.history("github_sync").unwrap();
    assert_eq!(github.len(), 20);
    assert!(github.windows(2).all(|w| w[0].seq < w[1].seq));
    let cursors: Vec<String> = github
        .iter()
        .map(|c| c.data["cursor"].as_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (141..=160).map(|i| format!("Y3Vy{i}")).collect();
    assert_eq!(cursors, expected);
    let state = store.job("github_sync").unwrap();
    assert_eq!(state.status, JobStatus::Failed);
    assert_eq!(state.retry_count, 1);
    assert_eq!(state.last_error.unwrap().message, "HTTP 502");
    assert_eq!(state.latest_checkpoint.unwrap().seq, github[19].seq);
    let jira = store.history("jira_sync").unwrap();
    assert_eq!(jira.len(), 10);
    assert_eq!(jira[9].data["total_issues_processed"], 2000);
    assert_eq!(store.job("jira_sync").unwrap().status, JobStatus::Succeeded);
    assert!(store.job("old_job").is_none());
    assert!(store.latest("old_job").unwrap().is_none());
    let blob = store.latest("blob_job").unwrap().unwrap();
    assert_eq!(blob.seq, 188);
    assert_eq!(blob.data["blob"].as_str().unwrap().len(), 70_000);
}

#[test]
fn format_v3_store_opens_read_only_in_place() {
    opens_read_only_in_place("format-v3", |store| {
        assert_eq!(store.last_seq(), 188);
        check_v3_contents(store);
    });
}

#[test]
fn format_v3_store_opens_for_writing_and_takes_saves() {
    let copy = copy_of("format-v3");
    let store = Store::open_with(copy.path(), options()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    check_v3_contents(&store);
    let seq = store
        .save(
            "jira_sync",
            "issues",
            &serde_json::json!({"total_issues_processed": 2100}),
        )
        .unwrap();
    assert!(seq > 188, "{seq}");
    drop(store);
    let marker = std::fs::read_to_string(copy.path().join("CAIRN")).unwrap();
    assert_eq!(
        marker, "cairn store\nformat_version 4\n",
        "the marker now says the store needs format 4"
    );
    let store = Store::open_read_only(copy.path()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.history("jira_sync").unwrap().len(), 11);
    assert_eq!(store.history("github_sync").unwrap().len(), 20);
    drop(store);
    // Compaction rewrites the format 3 compacted segment (and the rest) as a format 4 one.
    let store = Store::open_with(copy.path(), options()).unwrap();
    let report = store
        .compact_with(&cairn::Retention::default().keep_last(1000))
        .unwrap();
    assert!(report.compacted, "{report:?}");
    assert_eq!(report.snapshot_records, 1, "{report:?}");
    drop(store);
    let compacted = segment_files(copy.path()).remove(0);
    let bytes = std::fs::read(compacted).unwrap();
    assert_eq!(&bytes[8..10], &4u16.to_le_bytes(), "a format 4 segment");
    let store = Store::open_read_only(copy.path()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.history("jira_sync").unwrap().len(), 11);
    assert_eq!(store.history("github_sync").unwrap().len(), 20);
    assert_eq!(
        store
            .job("github_sync")
            .unwrap()
            .last_error
            .unwrap()
            .message,
        "HTTP 502"
    );
}

#[test]
fn format_v4_store_opens_read_only_in_place() {
    let files = opens_read_only_in_place("format-v4", |store| {
        assert_eq!(store.last_seq(), 188);
        check_v3_contents(store);
    });
    assert!(
        records(&files[1]).iter().any(|record| record.kind == MARK),
        "the fixture holds mark records"
    );
}

#[test]
fn format_v4_store_is_proven_whole_and_takes_saves() {
    let copy = copy_of("format-v4");
    // Closed cleanly: every record is proven, so damage in the middle is corruption.
    let tail = copy.path().join("00000000000000000002.seg");
    let pristine = std::fs::read(&tail).unwrap();
    let mut damaged = pristine.clone();
    let first_mark = records(&pristine)
        .into_iter()
        .find(|record| record.kind == MARK)
        .expect("a mark")
        .offset;
    let first_record = SEGMENT_HEADER_BYTES;
    assert!(first_mark > first_record);
    damaged[first_record + 40] ^= 0x01;
    std::fs::write(&tail, &damaged).unwrap();
    let err = Store::open_read_only(copy.path()).expect_err("durable damage");
    assert!(err.to_string().contains("DurableRecordsLost"), "{err}");
    std::fs::write(&tail, &pristine).unwrap();

    let store = Store::open_with(copy.path(), options()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    check_v3_contents(&store);
    let seq = store
        .save(
            "jira_sync",
            "issues",
            &serde_json::json!({"total_issues_processed": 2100}),
        )
        .unwrap();
    assert_eq!(seq, 189);
    drop(store);
    let store = Store::open_read_only(copy.path()).unwrap();
    assert!(store.recovery_report().is_clean());
    assert_eq!(store.history("jira_sync").unwrap().len(), 11);
}
