//! Disk use that follows the data (issue 11): a store remembers its shape (the segment size it
//! was created with), so later opens and CLI commands without `--segment-size` make segments
//! of that size; a segment takes disk space as it fills, not its whole size at once; and
//! `compact` never increases disk use. Disk use is measured as `du` does: `st_blocks`.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use cairn::{Options, Retention, Store};
use serde_json::json;

use common::cli::{command, run, store_dir};
use common::files::segment_files;

const MIB: u64 = 1 << 20;

/// Bytes of disk every file of the store takes (`du`: allocated blocks).
fn disk_use_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("list")
        .map(|entry| entry.expect("entry").metadata().expect("stat").blocks() * 512)
        .sum()
}

fn segment_lens(dir: &Path) -> Vec<u64> {
    segment_files(dir)
        .iter()
        .map(|path| std::fs::metadata(path).expect("stat").len())
        .collect()
}

fn put(dir: &Path, job: &str, n: u64) {
    run(command(dir)
        .args(["put", job, "--phase", "p", "--data"])
        .arg(json!({"n": n, "pad": "z".repeat(900)}).to_string()))
    .expect(0);
}

#[test]
fn a_store_keeps_the_segment_size_it_was_created_with() {
    let (_temp, dir) = store_dir();
    run(command(&dir)
        .args([
            "--segment-size",
            "1MiB",
            "put",
            "job",
            "--phase",
            "p",
            "--data",
        ])
        .arg(json!({"n": 0}).to_string()))
    .expect(0);
    assert_eq!(
        std::fs::read_to_string(dir.join("SHAPE")).expect("the shape is recorded"),
        "cairn shape\nsegment_size 1048576\n"
    );
    // Later commands without the flag: each new segment is 1 MiB, not the default 64 MiB.
    for n in 1..4 {
        put(&dir, "job", n);
    }
    let compacted = run(command(&dir).args(["compact", "--keep-last", "1"])).expect(0);
    assert!(
        compacted.stderr.is_empty(),
        "no note without a flag: {compacted:?}"
    );
    put(&dir, "job", 4);
    let lens = segment_lens(&dir);
    assert!(lens.len() >= 2, "compact sealed the segment: {lens:?}");
    assert!(
        lens.iter().all(|&len| len <= MIB),
        "every segment is at most the store's 1 MiB: {lens:?}"
    );
    assert_eq!(lens.last(), Some(&MIB), "the writer's segment: {lens:?}");
    let store = Store::open_read_only(&dir).expect("open");
    assert_eq!(store.segment_size(), MIB);
    drop(store);

    // An explicit, different size: said on stderr, used for new segments, recorded.
    let changed =
        run(command(&dir).args(["--segment-size", "2MiB", "compact", "--keep-last", "1"]))
            .expect(0);
    assert!(
        changed
            .stderr
            .contains("segment size set differs from the store's"),
        "the change is said: {changed:?}"
    );
    assert_eq!(segment_lens(&dir).last(), Some(&(2 * MIB)));
    assert_eq!(
        std::fs::read_to_string(dir.join("SHAPE")).expect("shape"),
        "cairn shape\nsegment_size 2097152\n"
    );
}

#[test]
fn a_store_without_a_recorded_shape_takes_its_newest_segments_size() {
    let (_temp, dir) = store_dir();
    let store = Store::open_with(&dir, Options::default().segment_size(128 * 1024)).expect("open");
    store.save("job", "p", &1).expect("save");
    store.close().expect("close");
    // As an older build left it: no SHAPE file.
    std::fs::remove_file(dir.join("SHAPE")).expect("remove shape");
    let store = Store::open(&dir).expect("open");
    assert_eq!(store.segment_size(), 128 * 1024);
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    store.close().expect("close");
    assert_eq!(
        std::fs::read_to_string(dir.join("SHAPE")).expect("a writer records the shape"),
        "cairn shape\nsegment_size 131072\n"
    );
}

#[test]
fn a_store_of_300_kib_of_checkpoints_uses_under_2_mib() {
    let (_temp, dir) = store_dir();
    // Default options: 64 MiB segments.
    let store = Store::open(&dir).expect("open");
    let pad = "c".repeat(1000);
    let mut saved_bytes = 0;
    let mut n = 0u64;
    while saved_bytes < 300 * 1024 {
        let data = json!({"n": n, "pad": pad});
        saved_bytes += data.to_string().len();
        store
            .save(&format!("job{}", n % 30), "p", &data)
            .expect("save");
        n += 1;
    }
    store.close().expect("close");
    let used = disk_use_bytes(&dir);
    eprintln!("{saved_bytes} bytes of checkpoints take {used} bytes of disk");
    assert_eq!(segment_lens(&dir), [64 * MIB], "one 64 MiB segment file");
    assert!(used < 2 * MIB, "{used} bytes on disk");
    // And after a reopen (recovery gives back what lies after the records).
    let store = Store::open(&dir).expect("reopen");
    store.close().expect("close");
    assert!(disk_use_bytes(&dir) < 2 * MIB, "{}", disk_use_bytes(&dir));
}

#[test]
fn compact_never_increases_disk_use() {
    let (_temp, dir) = store_dir();
    // The case: about 5.5 MiB of checkpoints in default 64 MiB segments, then
    // `compact --keep-last 5` (which seals the segment being written and starts a new one).
    let options = Options::default().retention(Retention::default().keep_last(usize::MAX));
    let store = Store::open_with(&dir, options).expect("open");
    let pad = "d".repeat(1100);
    for n in 0..5000u64 {
        store
            .save(&format!("job{}", n % 20), "p", &json!({"n": n, "pad": pad}))
            .expect("save");
    }
    store.close().expect("close");
    let before = disk_use_bytes(&dir);
    let report = run(command(&dir).args(["--json", "compact", "--keep-last", "5"]))
        .expect(0)
        .json();
    let after = disk_use_bytes(&dir);
    eprintln!("compact --keep-last 5: {before} -> {after} bytes on disk\n{report}");
    assert_eq!(report["disk_bytes_before"], before, "{report}");
    assert_eq!(report["disk_bytes_after"], after, "{report}");
    assert!(before > 5 * MIB, "{before}");
    assert!(
        after <= before,
        "compact increased disk use: {before} -> {after}"
    );
    assert!(after < MIB, "100 checkpoints of 1 KiB are left: {after}");
    // A second compaction with nothing to gain does not increase it either; the summary
    // says the disk use.
    let again = run(command(&dir).args(["compact", "--keep-last", "5"])).expect(0);
    assert!(again.stdout.contains("\ndisk use:     "), "{again:?}");
    assert!(disk_use_bytes(&dir) <= after, "{}", disk_use_bytes(&dir));
}
