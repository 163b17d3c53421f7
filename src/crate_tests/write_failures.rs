//! The write path's failures, end to end: a store on a file system that fails on command
//! (`storage::faulty`), checked through the public API. They join every layer, so they sit here.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::storage::faulty::{Faults, FaultyStorage};
use crate::{Durability, Error, Options, Store};

fn faulty_store(dir: &Path, options: Options) -> (Store, Arc<Faults>) {
    let storage = FaultyStorage::default();
    let faults = storage.faults.clone();
    let store = Store::open_on(Arc::new(storage), dir, options, false).expect("open");
    (store, faults)
}

fn values(store: &Store) -> Vec<u64> {
    let history = store.history("job").expect("history");
    history.iter().filter_map(|c| c.data.as_u64()).collect()
}

#[test]
fn a_failed_sync_poisons_the_store_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (store, faults) = faulty_store(dir.path(), Options::default());
    for i in 0..10 {
        store.save("job", "p", &i).unwrap();
    }
    faults.fail_sync.store(true, Ordering::SeqCst);
    let err = store.save("job", "p", &10).expect_err("sync fails");
    assert!(matches!(err, Error::Poisoned { .. }), "{err}");
    assert!(err.to_string().contains("close and re-open"), "{err}");
    // The failure is not retried blindly, even once the disk would work again.
    faults.fail_sync.store(false, Ordering::SeqCst);
    assert!(matches!(
        store.save("job", "p", &11),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(store.flush(), Err(Error::Poisoned { .. })));
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let history = store.history("job").unwrap();
    let values: Vec<_> = history.iter().map(|c| c.data.as_u64().unwrap()).collect();
    assert_eq!(&values[..10], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert!(
        values.len() <= 11,
        "only the failed save may be there besides: {values:?}"
    );
}

#[test]
fn a_full_disk_at_rollover_is_a_clear_error_and_the_store_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options::default().segment_size(64 * 1024);
    let (store, faults) = faulty_store(dir.path(), options.clone());
    let payload = "x".repeat(1000);
    let mut acknowledged = 0;
    faults.disk_full.store(true, Ordering::SeqCst);
    let err = loop {
        match store.save("job", "p", &payload) {
            Ok(_) => acknowledged += 1,
            Err(err) => break err,
        }
    };
    assert!(
        matches!(
            err,
            Error::DiskFull {
                needed_bytes: 65536,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("free space and retry"), "{err}");
    assert_eq!(store.segment_count(), 1);
    faults.disk_full.store(false, Ordering::SeqCst);
    store
        .save("job", "p", &payload)
        .expect("works again once space is free");
    acknowledged += 1;
    assert_eq!(store.segment_count(), 2);
    drop(store);
    let store = Store::open_with(dir.path(), options).unwrap();
    assert!(store.recovery_report().is_clean());
    assert_eq!(store.history("job").unwrap().len(), acknowledged);
}

#[test]
fn a_full_disk_at_a_record_write_is_clean_and_saves_resume_once_space_is_free() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, faults) = faulty_store(dir.path(), Options::default());
    for i in 0..5u64 {
        store.save("job", "p", &i).expect("save");
    }
    faults.write_full.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        // Not poisoned: every attempt tries again and fails the same clean way.
        let err = store
            .save("job", "p", &99u64)
            .expect_err("the disk is full");
        assert!(
            matches!(err, Error::DiskFull { needed_bytes, .. } if needed_bytes > 0),
            "{err:?}"
        );
        assert!(err.to_string().contains("free space and retry"), "{err}");
    }
    assert_eq!(
        values(&store),
        [0, 1, 2, 3, 4],
        "a failed save is not visible"
    );
    faults.write_full.store(false, Ordering::SeqCst);
    // Space is free again: the same store, without a reopen, takes saves, and the next
    // record overwrites the partial bytes the failed writes left.
    for i in 5..8u64 {
        store.save("job", "p", &i).expect("save once space is free");
    }
    store.close().expect("close");
    let store = Store::open(dir.path()).expect("reopen");
    assert!(store.recovery_report().is_clean(), "no damage left behind");
    assert_eq!(values(&store), [0, 1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn a_full_disk_at_a_mark_write_poisons_and_acknowledges_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, faults) = faulty_store(dir.path(), Options::default());
    for i in 0..5u64 {
        store.save("job", "p", &i).expect("save");
    }
    // The record of save 5 is written and synced; the mark proving that sync is not.
    faults.small_write_full.store(true, Ordering::SeqCst);
    let err = store
        .save("job", "p", &5u64)
        .expect_err("the mark finds no room");
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    faults.small_write_full.store(false, Ordering::SeqCst);
    assert!(
        store.metrics().poisoned.is_some(),
        "a missing proof poisons"
    );
    assert!(matches!(
        store.save("job", "p", &6u64),
        Err(Error::Poisoned { .. })
    ));
    assert_eq!(
        values(&store),
        [0, 1, 2, 3, 4],
        "the failed save is not visible"
    );
    drop(store);
    // Its record was synced: after a reopen it may be there, and nothing else changed.
    let store = Store::open(dir.path()).expect("reopen");
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert!(values(&store).starts_with(&[0, 1, 2, 3, 4]));
    assert!(values(&store).len() <= 6);
}

#[test]
fn a_full_disk_at_a_seal_sync_is_disk_full_and_poisons() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Unsynced saves: the only sync is the seal's, at the rollover.
    let options = Options::default()
        .segment_size(64 * 1024)
        .durability(Durability::OsOnly);
    let (store, faults) = faulty_store(dir.path(), options.clone());
    faults.sync_full.store(true, Ordering::SeqCst);
    let payload = "x".repeat(1000);
    let mut acknowledged = 0u64;
    let err = loop {
        match store.save("job", "p", &payload) {
            Ok(_) => acknowledged += 1,
            Err(err) => break err,
        }
    };
    assert!(
        matches!(err, Error::DiskFull { .. }),
        "the failed sync is disk full: {err:?}"
    );
    let again = store.save("job", "p", &payload).expect_err("poisoned");
    assert!(
        matches!(&again, Error::Poisoned { cause } if cause.contains("disk full")),
        "the poisoned store says why: {again:?}"
    );
    faults.sync_full.store(false, Ordering::SeqCst);
    drop(store);
    let store = Store::open_with(dir.path(), options).expect("reopen");
    let history = store.history("job").expect("history");
    assert!(
        history.len() as u64 >= acknowledged,
        "nothing acknowledged is lost"
    );
}

#[test]
fn a_full_disk_when_a_segment_grows_is_clean_and_saves_resume_once_space_is_free() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, faults) = faulty_store(dir.path(), Options::default());
    let payload = "x".repeat(1000);
    faults.grow_full.store(true, Ordering::SeqCst);
    let mut acknowledged = 0u64;
    // A new segment reserves one page: a few saves fit in it, then one needs the segment to
    // grow and finds no room.
    let err = loop {
        match store.save("job", "p", &payload) {
            Ok(_) => acknowledged += 1,
            Err(err) => break err,
        }
        assert!(acknowledged < 100, "the segment never grew");
    };
    assert!(acknowledged > 0, "the first page holds a few saves");
    assert!(
        matches!(err, Error::DiskFull { needed_bytes, .. } if needed_bytes > 0),
        "{err:?}"
    );
    assert!(
        store.metrics().poisoned.is_none(),
        "nothing was written: clean"
    );
    assert_eq!(
        store.history("job").expect("history").len() as u64,
        acknowledged
    );
    faults.grow_full.store(false, Ordering::SeqCst);
    for _ in 0..3 {
        store
            .save("job", "p", &payload)
            .expect("save once space is free");
        acknowledged += 1;
    }
    store.close().expect("close");
    let store = Store::open(dir.path()).expect("reopen");
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(
        store.history("job").expect("history").len() as u64,
        acknowledged
    );
}

#[test]
fn a_shape_that_cannot_be_recorded_does_not_fail_the_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options::default().segment_size(128 * 1024);
    let (store, _) = faulty_store(dir.path(), options);
    store.save("job", "p", &1u64).expect("save");
    store.close().expect("close");
    let shape = dir.path().join("SHAPE");
    std::fs::remove_file(&shape).expect("remove the shape, as an older build left it");
    let storage = FaultyStorage::default();
    storage.faults.small_file_full.store(true, Ordering::SeqCst);
    let faults = storage.faults.clone();
    let store = Store::open_on(Arc::new(storage), dir.path(), Options::default(), false)
        .expect("a full disk at the shape's write does not fail the open");
    assert!(!shape.exists(), "not recorded");
    assert_eq!(
        store.segment_size(),
        128 * 1024,
        "the newest segment says it"
    );
    store.save("job", "p", &2u64).expect("save");
    assert_eq!(values(&store), [1, 2]);
    faults.small_file_full.store(false, Ordering::SeqCst);
    store.close().expect("close");
    let store = Store::open(dir.path()).expect("reopen");
    assert_eq!(store.segment_size(), 128 * 1024);
    assert_eq!(
        std::fs::read_to_string(&shape).expect("recorded by the next writer"),
        "cairn shape\nsegment_size 131072\n"
    );
}
