//! Stores written by released format versions must keep opening. `tests/fixtures/format-v1`
//! was written by `cairn put --stdin` with 64 KiB segments: 120 checkpoints of `github_sync`
//! and 120 of `jira_sync`, interleaved, across two segments.

use std::path::{Path, PathBuf};

use cairn::{Options, Store};

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
    let store = Store::open_with(copy.path(), Options::default().segment_size(64 * 1024)).unwrap();
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
        marker, "cairn store\nformat_version 3\n",
        "the marker now says the store needs format 3"
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
    let store = Store::open_with(copy.path(), Options::default().segment_size(64 * 1024)).unwrap();
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
