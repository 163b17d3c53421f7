//! The store's shape and segment growth on the simulated disk (issue 11): every crash while a
//! store is created leaves either its recorded shape or segments that say the same size; a
//! damaged shape file never loses data; a full disk when a segment grows is a clean
//! `DiskFull` that loses no acknowledged save, in a crash or not.

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use cairn::testing::{CrashMode, Fault, SimDisk, Step};
use cairn::{AutoCompact, Error, Options};
use serde_json::json;

use common::sim::{self, DIR};

const MODES: [CrashMode; 4] = [
    CrashMode::LoseUnsynced,
    CrashMode::KeepUnsynced,
    CrashMode::TornSectors,
    CrashMode::TornPages,
];
const CREATED_SEGMENT_BYTES: u64 = 128 * 1024;

fn shape_path() -> std::path::PathBuf {
    Path::new(DIR).join("SHAPE")
}

/// Options that set no segment size: the store's own must be used.
fn without_a_size() -> Options {
    Options::default().auto_compact(AutoCompact::disabled())
}

fn has_segments(disk: &SimDisk) -> bool {
    !sim::segment_images(disk).is_empty()
}

/// What a crashed disk must give: the size the store was created with whenever a segment or
/// the shape file exists; the acknowledged saves; and new segments of that size.
fn check_crashed(crashed: &SimDisk, acked: &[u64], context: &str) {
    if !has_segments(crashed) {
        assert!(
            crashed.read_file(&shape_path()).is_none(),
            "{context}: a shape without a segment"
        );
        assert!(
            acked.is_empty(),
            "{context}: acknowledged saves without a segment"
        );
        return;
    }
    let store =
        sim::open(crashed, without_a_size()).unwrap_or_else(|e| panic!("{context}: reopen: {e}"));
    assert_eq!(store.segment_size(), CREATED_SEGMENT_BYTES, "{context}");
    let history = store.history("job").expect("history");
    let found: Vec<u64> = history
        .iter()
        .filter_map(|c| c.data["n"].as_u64())
        .collect();
    for n in acked {
        assert!(
            found.contains(n),
            "{context}: acknowledged save {n} lost: {found:?}"
        );
    }
    drop(store);
    assert_eq!(
        crashed
            .read_file(&shape_path())
            .map(|b| String::from_utf8(b).expect("text")),
        Some(format!(
            "cairn shape\nsegment_size {CREATED_SEGMENT_BYTES}\n"
        )),
        "{context}: the writer recorded the shape"
    );
}

#[test]
fn every_crash_while_a_store_is_created_keeps_its_segment_size() {
    let disk = SimDisk::new();
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let explored = Arc::new(Mutex::new(0u64));
    {
        let (acked, explored) = (acked.clone(), explored.clone());
        disk.set_hook(move |disk: &SimDisk, step: Step| {
            let acked = acked.lock().expect("acked").clone();
            for (variant, mode) in MODES.iter().enumerate() {
                let seed = (disk.steps() << 8) ^ variant as u64;
                let context = format!("step {} ({step:?}) mode {mode:?}", disk.steps());
                check_crashed(&disk.crash(*mode, seed), &acked, &context);
                *explored.lock().expect("explored") += 1;
            }
        });
    }
    let options = without_a_size().segment_size(CREATED_SEGMENT_BYTES);
    let store = sim::open(&disk, options).expect("create");
    for n in 0..3u64 {
        store.save("job", "p", &json!({"n": n})).expect("save");
        acked.lock().expect("acked").push(n);
    }
    store.close().expect("close");
    disk.clear_hook();
    let explored = *explored.lock().expect("explored");
    assert!(explored >= 20, "crash states explored: {explored}");
    check_crashed(&disk, &acked.lock().expect("acked"), "after a clean close");
}

#[test]
fn a_damaged_shape_file_falls_back_to_the_newest_segment_and_is_rewritten() {
    for damaged in [
        &b"cairn shape\nsegment_size 131073\n"[..],
        b"cairn shape\nsegment_sizf 131072\n",
        b"\0\0\0\0",
        b"",
    ] {
        let context = String::from_utf8_lossy(damaged).into_owned();
        let disk = SimDisk::new();
        let store =
            sim::open(&disk, without_a_size().segment_size(CREATED_SEGMENT_BYTES)).expect("create");
        store.save("job", "p", &json!({"n": 1})).expect("save");
        store.close().expect("close");
        disk.overwrite_file(&shape_path(), damaged.to_vec());
        check_crashed(&disk, &[1], &context);
    }
}

#[test]
fn a_full_disk_when_a_segment_grows_is_clean_and_loses_nothing() {
    let disk = SimDisk::new();
    let options = without_a_size().segment_size(1 << 20);
    let store = sim::open(&disk, options).expect("create");
    let pad = "g".repeat(1000);
    let mut acked = Vec::new();
    disk.inject(Fault::NoSpaceToGrow(1));
    let err = loop {
        let n = acked.len() as u64;
        match store.save("job", "p", &json!({"n": n, "pad": pad})) {
            Ok(_) => acked.push(n),
            Err(err) => break err,
        }
        assert!(n < 100, "the segment never grew");
    };
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    assert!(!acked.is_empty(), "the first page takes a few saves");
    assert!(
        store.metrics().poisoned.is_none(),
        "growth writes nothing: clean"
    );
    for mode in MODES {
        check_crashed_sized(&disk.crash(mode, 7), &acked, 1 << 20, &format!("{mode:?}"));
    }
    // The fault was for one growth: the same store carries on.
    for _ in 0..5 {
        let n = acked.len() as u64;
        store
            .save("job", "p", &json!({"n": n, "pad": pad}))
            .expect("save after the full disk");
        acked.push(n);
    }
    for mode in MODES {
        check_crashed_sized(
            &disk.crash(mode, 9),
            &acked,
            1 << 20,
            &format!("{mode:?} after"),
        );
    }
}

fn check_crashed_sized(crashed: &SimDisk, acked: &[u64], size: u64, context: &str) {
    let store = sim::open(crashed, without_a_size()).expect("reopen");
    assert_eq!(store.segment_size(), size, "{context}");
    let found: Vec<u64> = store
        .history("job")
        .expect("history")
        .iter()
        .filter_map(|c| c.data["n"].as_u64())
        .collect();
    for n in acked {
        assert!(found.contains(n), "{context}: acknowledged save {n} lost");
    }
}
