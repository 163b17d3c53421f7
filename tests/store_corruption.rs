//! Damage on disk: torn tails at every offset, bit flips, truncated, empty, missing and foreign
//! segment files, in every recovery mode. Files are damaged through the documented format
//! (docs/FORMAT.md), not through cairn's internals.

mod common;

use std::collections::HashMap;
use std::path::Path;

use cairn::{Durability, Error, FindingKind, Options, RecoveryMode, Store};
use serde_json::{Value, json};

use common::files::{self, MARK, SNAPSHOT, segment_files};
use common::rng::{Rng, env_u64};
use common::small_segments;

const MODES: [RecoveryMode; 4] = [
    RecoveryMode::TolerateTornTail,
    RecoveryMode::PointInTime,
    RecoveryMode::SkipCorrupted,
    RecoveryMode::AbsoluteConsistency,
];

/// Extents `(start, end)` of the records of a segment image that hold something (marks left
/// out).
fn extents(bytes: &[u8]) -> Vec<(usize, usize)> {
    files::records(bytes)
        .iter()
        .filter(|record| record.kind != MARK)
        .map(|record| (record.offset, record.end()))
        .collect()
}

/// Zeroes the marks after the last record: the file as a crash before the writer proved its
/// last save durable leaves it (or a save never synced).
fn drop_trailing_marks(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    for record in files::records(&bytes).into_iter().rev() {
        if record.kind != MARK {
            break;
        }
        bytes[record.offset..record.end()].fill(0);
    }
    std::fs::write(path, bytes).unwrap();
}

/// Saves `count` checkpoints over three jobs and returns seq → data.
fn populate(dir: &Path, options: Options, count: u64) -> HashMap<u64, Value> {
    let store = Store::open_with(dir, options).unwrap();
    let mut saved = HashMap::new();
    for i in 0..count {
        let data =
            json!({"i": i, "cursor": format!("c{i:06}"), "pad": "p".repeat((i % 40) as usize)});
        let seq = store
            .save(&format!("job{}", i % 3), "extract", &data)
            .unwrap();
        saved.insert(seq, data);
    }
    saved
}

/// Every checkpoint the store returns must be exactly what was saved under that seq.
fn assert_no_wrong_data(store: &Store, saved: &HashMap<u64, Value>) {
    for job in ["job0", "job1", "job2"] {
        if let Some(latest) = store.latest(job).unwrap() {
            assert_eq!(
                Some(&latest.data),
                saved.get(&latest.seq),
                "latest of {job}"
            );
        }
        for checkpoint in store.history(job).unwrap() {
            assert_eq!(
                Some(&checkpoint.data),
                saved.get(&checkpoint.seq),
                "history of {job}"
            );
        }
    }
}

/// The seed of the random damage: `CAIRN_TEST_SEED` reruns one.
fn seed() -> u64 {
    env_u64("CAIRN_TEST_SEED").unwrap_or(0x5eed_cafe)
}

#[test]
fn torn_tail_at_every_byte_offset_of_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let saved = populate(dir.path(), small_segments(), 20);
    let path = segment_files(dir.path()).pop().unwrap();
    // Only a save that no later record proves durable can be torn by a crash.
    drop_trailing_marks(&path);
    let pristine = std::fs::read(&path).unwrap();
    let (start, end) = *extents(&pristine).last().unwrap();
    let last_seq = *saved.keys().max().unwrap();
    let mut rng = Rng(seed());
    for cut in start..end {
        for garbage in [false, true] {
            let mut torn = pristine.clone();
            for (i, byte) in torn[cut..end].iter_mut().enumerate() {
                *byte = if garbage && i % 3 == 0 {
                    rng.next() as u8 | 1
                } else {
                    0
                };
            }
            std::fs::write(&path, &torn).unwrap();
            let context = format!("cut at {cut} of {start}..{end}, garbage {garbage}");
            let intact = torn[start..end] == pristine[start..end];

            // A reader sees the previous state and changes nothing.
            let reader = Store::open_read_only_with(dir.path(), small_segments()).expect(&context);
            let expected_last = if intact { last_seq } else { last_seq - 1 };
            assert_eq!(reader.last_seq(), expected_last, "{context}");
            let latest = reader.latest("job1").unwrap().unwrap();
            assert_eq!(latest.data["i"], if intact { 19 } else { 16 }, "{context}");
            let intact = torn[start..end] == pristine[start..end];
            let torn_bytes = !intact && torn[start..].iter().any(|&b| b != 0);
            let report = reader.recovery_report();
            assert_eq!(!report.is_clean(), torn_bytes, "{context}: {report:?}");
            if torn_bytes {
                assert_eq!(report.findings[0].kind, FindingKind::TornTail, "{context}");
                assert_eq!(report.findings[0].offset, start as u64, "{context}");
            }
            drop(reader);
            assert_eq!(
                std::fs::read(&path).unwrap(),
                torn,
                "a reader must not change a byte"
            );

            // A writer cuts the tail off, and new saves land where it was.
            let store = Store::open_with(dir.path(), small_segments()).expect(&context);
            let valid_end = if intact { end } else { start };
            let after = std::fs::read(&path).unwrap()[valid_end..].to_vec();
            // An intact last save was not proven durable: the writer proves it with a mark.
            let rest = if intact { &after[32..] } else { &after[..] };
            assert_eq!(after[28] == MARK, intact, "{context}");
            assert!(rest.iter().all(|&b| b == 0), "{context}");
            let seq = store
                .save("job1", "extract", &json!("after the crash"))
                .unwrap();
            assert_eq!(seq, expected_last + 1, "{context}");
            drop(store);
            let store = Store::open_with(dir.path(), small_segments()).unwrap();
            assert!(store.recovery_report().is_clean(), "{context}");
            assert_eq!(
                store.latest("job1").unwrap().unwrap().data,
                json!("after the crash")
            );
            drop(store);
            std::fs::write(&path, &pristine).unwrap();
        }
    }
}

#[test]
fn random_bit_flips_never_yield_wrong_data() {
    let pristine = tempfile::tempdir().unwrap();
    let saved = populate(pristine.path(), small_segments(), 1500);
    let files = segment_files(pristine.path());
    assert!(files.len() >= 3, "the workload must span several segments");
    let seed = seed();
    let mut rng = Rng(seed);
    for trial in 0..150 {
        let file = &files[rng.index(files.len())];
        let bytes = std::fs::read(file).unwrap();
        let valid_end = extents(&bytes).last().map_or(64, |r| r.1);
        let offset = rng.index(valid_end);
        let bit = rng.index(8);
        let context = format!(
            "seed {seed} trial {trial}: bit {bit} of byte {offset} in {}",
            file.display()
        );
        let mut verified = false;
        for mode in MODES {
            for writable in [false, true] {
                let copy = tempfile::tempdir().unwrap();
                for entry in std::fs::read_dir(pristine.path()).unwrap() {
                    let entry = entry.unwrap();
                    std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
                }
                let target = copy.path().join(file.file_name().unwrap());
                let mut damaged = bytes.clone();
                damaged[offset] ^= 1 << bit;
                std::fs::write(&target, &damaged).unwrap();
                if !verified {
                    let report = Store::verify(copy.path());
                    let noticed = match report {
                        Ok(report) => !report.is_clean(),
                        Err(err) => err.is_corruption(),
                    };
                    assert!(noticed, "{context}: verify must notice");
                    verified = true;
                }
                let opts = small_segments().recovery(mode);
                let opened = if writable {
                    Store::open_with(copy.path(), opts)
                } else {
                    Store::open_read_only_with(copy.path(), opts)
                };
                match opened {
                    Ok(store) => {
                        assert!(
                            !store.recovery_report().is_clean(),
                            "{context} {mode:?}: damage must be reported"
                        );
                        assert_no_wrong_data(&store, &saved);
                    }
                    Err(err) => {
                        assert!(
                            mode != RecoveryMode::SkipCorrupted
                                || matches!(err, Error::Corrupt { .. }),
                            "{context} {mode:?}: {err}"
                        );
                    }
                }
            }
        }
    }
}

/// Flips one byte in the payload of record number `index` of `file`.
fn damage_record(file: &Path, index: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    let (start, end) = extents(&bytes)[index];
    bytes[(start + end) / 2] ^= 0x40;
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn damage_in_a_sealed_segment_in_each_mode() {
    for mode in MODES {
        let dir = tempfile::tempdir().unwrap();
        let saved = populate(dir.path(), small_segments(), 1500);
        let files = segment_files(dir.path());
        damage_record(&files[0], 10);
        let result = Store::open_with(dir.path(), small_segments().recovery(mode));
        match mode {
            RecoveryMode::TolerateTornTail | RecoveryMode::AbsoluteConsistency => {
                let err = result.expect_err("mid-log damage is an error in this mode");
                assert!(err.is_corruption(), "{err}");
                assert!(
                    err.to_string().contains(&files[0].display().to_string()),
                    "{err}"
                );
                assert_eq!(segment_files(dir.path()), files, "nothing changed");
            }
            RecoveryMode::SkipCorrupted => {
                let store = result.unwrap();
                let report = store.recovery_report();
                assert_eq!(report.findings.len(), 1, "{report:?}");
                // Later records were written once the damaged one was durable.
                assert_eq!(report.findings[0].kind, FindingKind::DurableRecordsLost);
                assert_no_wrong_data(&store, &saved);
                let total: usize = ["job0", "job1", "job2"]
                    .iter()
                    .map(|j| store.history(j).unwrap().len())
                    .sum();
                assert_eq!(total, 1499, "exactly the damaged record is skipped");
                // The damage stays and keeps being reported; new saves work.
                store.save("job0", "p", &json!("new")).unwrap();
                drop(store);
                let store = Store::open_with(dir.path(), small_segments().recovery(mode)).unwrap();
                assert_eq!(store.latest("job0").unwrap().unwrap().data, json!("new"));
                assert_eq!(store.recovery_report().findings.len(), 1);
            }
            RecoveryMode::PointInTime => {
                let store = result.unwrap();
                let total: usize = ["job0", "job1", "job2"]
                    .iter()
                    .map(|j| store.history(j).unwrap().len())
                    .sum();
                assert_eq!(total, 10, "the valid prefix before the damage");
                assert_no_wrong_data(&store, &saved);
                let set_aside = std::fs::read_dir(dir.path())
                    .unwrap()
                    .filter(|e| {
                        e.as_ref()
                            .unwrap()
                            .file_name()
                            .to_string_lossy()
                            .contains(".seg.discarded")
                    })
                    .count();
                assert_eq!(
                    set_aside,
                    files.len() - 1,
                    "later segments are set aside, not deleted"
                );
                let seq = store.save("job0", "p", &json!("new")).unwrap();
                assert_eq!(seq, 11);
                drop(store);
                let store = Store::open_with(dir.path(), small_segments()).unwrap();
                assert!(
                    store.recovery_report().findings.is_empty(),
                    "{:?}",
                    store.recovery_report()
                );
                assert_eq!(store.latest("job0").unwrap().unwrap().data, json!("new"));
            }
            _ => unreachable!(),
        }
    }
}

#[test]
fn lost_durable_records_are_told_from_a_torn_tail() {
    // Sync mode: every record after the damaged one was written once it was durable.
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), small_segments(), 30);
    let file = segment_files(dir.path()).pop().unwrap();
    damage_record(&file, 5);
    let err = Store::open_with(dir.path(), small_segments()).expect_err("durable data lost");
    assert!(err.to_string().contains("DurableRecordsLost"), "{err}");

    // OS-only mode and a crash: nothing was synced while writing, so damage followed by
    // valid records is an unsynced window, i.e. a torn tail. (A clean close would have
    // synced everything and proved it: see tests/durability_proof.rs.)
    let dir = tempfile::tempdir().unwrap();
    let store =
        Store::open_with(dir.path(), small_segments().durability(Durability::OsOnly)).unwrap();
    for i in 0..30 {
        store
            .save(&format!("job{}", i % 3), "extract", &json!({"i": i}))
            .unwrap();
    }
    let crashed = tempfile::tempdir().unwrap();
    for file in segment_files(dir.path()) {
        std::fs::copy(&file, crashed.path().join(file.file_name().unwrap())).unwrap();
    }
    std::fs::copy(dir.path().join("CAIRN"), crashed.path().join("CAIRN")).unwrap();
    drop(store);
    let dir = crashed;
    let file = segment_files(dir.path()).pop().unwrap();
    damage_record(&file, 5);
    let store = Store::open_with(dir.path(), small_segments()).expect("torn tail is tolerated");
    let report = store.recovery_report();
    assert_eq!(report.findings[0].kind, FindingKind::TornTail, "{report:?}");
    assert_eq!(report.last_seq, 5);
}

#[test]
fn a_zeroed_block_in_the_middle_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), small_segments(), 60);
    let file = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let recs = extents(&bytes);
    let (start, _) = recs[20];
    let (_, end) = recs[30];
    bytes[start..end].fill(0);
    std::fs::write(&file, bytes).unwrap();
    let err = Store::open_with(dir.path(), small_segments()).expect_err("lost block");
    assert!(err.is_corruption(), "{err}");
    let report = Store::verify(dir.path()).unwrap();
    assert_eq!(
        report.findings[0].kind,
        FindingKind::DurableRecordsLost,
        "{report:?}"
    );
}

#[test]
fn truncated_segment_is_noticed_and_repaired_only_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let saved = populate(dir.path(), small_segments(), 40);
    let file = segment_files(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&file).unwrap();
    let (_, end) = extents(&bytes)[29];
    // Cut exactly at a record boundary: what is left looks valid.
    std::fs::write(&file, &bytes[..end]).unwrap();
    let err = Store::open_with(dir.path(), small_segments()).expect_err("truncation is damage");
    assert!(err.to_string().contains("Truncated"), "{err}");
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        end as u64,
        "nothing changed"
    );
    let store = Store::open_with(
        dir.path(),
        small_segments().recovery(RecoveryMode::PointInTime),
    )
    .unwrap();
    assert_eq!(
        store.recovery_report().findings[0].kind,
        FindingKind::Truncated
    );
    assert_eq!(store.last_seq(), 30);
    assert_no_wrong_data(&store, &saved);
    store.save("job0", "p", &json!("after")).unwrap();
    drop(store);
    assert_eq!(
        std::fs::metadata(&file).unwrap().len(),
        bytes.len() as u64,
        "length restored"
    );
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.latest("job0").unwrap().unwrap().data, json!("after"));
}

#[test]
fn empty_and_foreign_segment_files() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), small_segments(), 10);
    // A zero-length newest segment (a creation that never completed) holds nothing: removed.
    let empty = dir.path().join("00000000000000000002.seg");
    std::fs::write(&empty, b"").unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"operator notes").unwrap();
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    assert!(
        store
            .recovery_report()
            .notes
            .iter()
            .any(|n| n.contains("empty segment")),
        "{:?}",
        store.recovery_report()
    );
    assert!(
        store
            .recovery_report()
            .notes
            .iter()
            .any(|n| n.contains("notes.txt"))
    );
    assert!(!empty.exists());
    assert_eq!(store.last_seq(), 10);
    drop(store);
    assert!(
        Store::open_with(
            dir.path(),
            small_segments().recovery(RecoveryMode::AbsoluteConsistency)
        )
        .is_ok()
    );

    // A zero-length segment in the middle is damage.
    std::fs::write(dir.path().join("00000000000000000000.seg"), b"").unwrap();
    let err = Store::open_with(dir.path(), small_segments()).expect_err("empty older segment");
    assert!(err.is_corruption(), "{err}");
    std::fs::remove_file(dir.path().join("00000000000000000000.seg")).unwrap();

    // A file named like a segment that is not one is refused, never half-read.
    let foreign = dir.path().join("00000000000000000007.seg");
    std::fs::write(&foreign, vec![b'x'; 100_000]).unwrap();
    for result in [
        Store::open_with(dir.path(), small_segments()).map(|_| ()),
        Store::verify(dir.path()).map(|_| ()),
    ] {
        let err = result.expect_err("foreign segment");
        assert!(matches!(err, Error::NotASegment { .. }), "{err}");
    }
    assert_eq!(std::fs::read(&foreign).unwrap(), vec![b'x'; 100_000]);
}

#[test]
fn newer_segment_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), small_segments(), 3);
    let file = segment_files(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[8..10].copy_from_slice(&5u16.to_le_bytes());
    // A genuine newer header checks out; a flipped version bit would be damage instead.
    let crc = crc32fast::hash(&bytes[..60]);
    bytes[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&file, bytes).unwrap();
    for mode in MODES {
        let err = Store::open_with(dir.path(), small_segments().recovery(mode))
            .expect_err("newer format");
        assert!(
            matches!(
                err,
                Error::UnsupportedVersion {
                    found: 5,
                    supported: 4,
                    ..
                }
            ),
            "{err}"
        );
    }
}

#[test]
fn a_missing_segment_is_noticed() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), small_segments(), 1500);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    std::fs::remove_file(&files[1]).unwrap();
    let err = Store::open_with(dir.path(), small_segments()).expect_err("missing segment");
    assert!(err.to_string().contains("MissingSegment"), "{err}");
    std::fs::remove_file(&files[0]).unwrap();
    let err = Store::open_with(dir.path(), small_segments()).expect_err("missing first segment");
    assert!(err.to_string().contains("MissingSegment"), "{err}");
}

/// Builds a valid segment header per FORMAT.md.
fn segment_header(id: u64, first_seq: u64, len: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(64);
    h.extend_from_slice(b"CAIRNSEG");
    h.extend_from_slice(&2u16.to_le_bytes());
    h.extend_from_slice(&64u16.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&id.to_le_bytes());
    h.extend_from_slice(&first_seq.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&0i64.to_le_bytes());
    h.extend_from_slice(&0xabcdu32.to_le_bytes());
    h.extend_from_slice(&[0; 8]);
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

#[test]
fn an_interrupted_rollover_leaves_an_empty_segment_that_recovery_removes() {
    let dir = tempfile::tempdir().unwrap();
    populate(dir.path(), small_segments(), 10);
    // The crash came after the next segment was created but before the old one was sealed.
    let next = dir.path().join("00000000000000000002.seg");
    let mut bytes = segment_header(2, 12, 64 * 1024);
    bytes.resize(64 * 1024, 0);
    std::fs::write(&next, bytes).unwrap();
    let reader = Store::open_read_only_with(dir.path(), small_segments()).unwrap();
    assert!(
        reader
            .recovery_report()
            .notes
            .iter()
            .any(|n| n.contains("interrupted rollover"))
    );
    assert!(next.exists(), "a reader removes nothing");
    drop(reader);
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    assert!(store.recovery_report().is_clean());
    assert!(!next.exists());
    assert_eq!(store.save("job0", "p", &1).unwrap(), 11);
}

/// One kind of block damage.
#[derive(Debug, Clone, Copy)]
enum BlockDamage {
    /// A range of bytes set to zero (a lost write).
    Zeroed,
    /// A 512-byte block copied over another one, maybe in another segment (a misdirected write).
    Duplicated,
    /// Two 512-byte blocks exchanged.
    Swapped,
}

#[test]
fn zeroed_duplicated_and_swapped_blocks_never_yield_wrong_data() {
    let pristine = tempfile::tempdir().unwrap();
    let saved = populate(pristine.path(), small_segments(), 1500);
    let files = segment_files(pristine.path());
    let images: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let valid_ends: Vec<usize> = images
        .iter()
        .map(|b| extents(b).last().map_or(64, |r| r.1))
        .collect();
    let seed = seed();
    let mut rng = Rng(seed ^ 0xb10c);
    for trial in 0..120 {
        let kind = [
            BlockDamage::Zeroed,
            BlockDamage::Duplicated,
            BlockDamage::Swapped,
        ][trial % 3];
        let (damaged, touched) = damage_blocks(kind, &images, &valid_ends, &mut rng);
        let changed_valid_bytes = touched.iter().any(|&(file, start, len)| {
            start < valid_ends[file]
                && damaged[file][start..start + len] != images[file][start..start + len]
        });
        let context = format!("seed {seed} trial {trial}: {kind:?} at {touched:?}");
        for mode in MODES {
            for writable in [false, true] {
                let copy = tempfile::tempdir().unwrap();
                std::fs::copy(pristine.path().join("CAIRN"), copy.path().join("CAIRN")).unwrap();
                for (file, bytes) in files.iter().zip(&damaged) {
                    std::fs::write(copy.path().join(file.file_name().unwrap()), bytes).unwrap();
                }
                let opts = small_segments().recovery(mode);
                let opened = if writable {
                    Store::open_with(copy.path(), opts)
                } else {
                    Store::open_read_only_with(copy.path(), opts)
                };
                let Ok(store) = opened else { continue };
                if changed_valid_bytes {
                    assert!(
                        !store.recovery_report().is_clean(),
                        "{context} {mode:?}: damage must be reported"
                    );
                }
                assert_no_wrong_data(&store, &saved);
            }
        }
    }
}

/// A range of bytes that damage wrote over: `(file, start, len)`.
type Written = (usize, usize, usize);

/// The segment `images` with `kind` of damage at places `rng` picks, and every range written.
fn damage_blocks(
    kind: BlockDamage,
    images: &[Vec<u8>],
    valid_ends: &[usize],
    rng: &mut Rng,
) -> (Vec<Vec<u8>>, Vec<Written>) {
    let mut damaged = images.to_vec();
    let mut touched = Vec::new();
    let (a, b) = (rng.index(images.len()), rng.index(images.len()));
    let block = |rng: &mut Rng, file: usize| rng.index(valid_ends[file].div_ceil(512) + 1) * 512;
    match kind {
        BlockDamage::Zeroed => {
            let start = rng.index(valid_ends[a]);
            let len = 1 + rng.index(4096).min(damaged[a].len() - start - 1);
            damaged[a][start..start + len].fill(0);
            touched.push((a, start, len));
        }
        BlockDamage::Duplicated => {
            let (from, to) = (block(rng, a), block(rng, b));
            let source = images[a][from..from + 512].to_vec();
            damaged[b][to..to + 512].copy_from_slice(&source);
            touched.push((b, to, 512));
        }
        BlockDamage::Swapped => {
            let (x, y) = (block(rng, a), block(rng, b));
            let (bx, by) = (
                images[a][x..x + 512].to_vec(),
                images[b][y..y + 512].to_vec(),
            );
            damaged[a][x..x + 512].copy_from_slice(&by);
            damaged[b][y..y + 512].copy_from_slice(&bx);
            touched.extend([(a, x, 512), (b, y, 512)]);
        }
    }
    (damaged, touched)
}

#[test]
fn point_in_time_after_a_damaged_segment_header_continues_with_the_next_id() {
    let dir = tempfile::tempdir().unwrap();
    let saved = populate(dir.path(), small_segments(), 1500);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    let mut header = std::fs::read(&files[1]).unwrap();
    header[20] ^= 0xff;
    std::fs::write(&files[1], header).unwrap();
    let store = Store::open_with(
        dir.path(),
        small_segments().recovery(RecoveryMode::PointInTime),
    )
    .unwrap();
    assert_eq!(
        store.recovery_report().findings[0].kind,
        FindingKind::DamagedSegmentHeader
    );
    assert_no_wrong_data(&store, &saved);
    let seq = store.save("job0", "p", &json!("after")).unwrap();
    drop(store);
    // Only segment 1 was kept, and it was sealed: the writer continued in a new segment 2.
    assert_eq!(segment_files(dir.path()).len(), 2);
    let store = Store::open_with(dir.path(), small_segments()).unwrap();
    assert!(
        store.recovery_report().is_clean(),
        "{:?}",
        store.recovery_report()
    );
    assert_eq!(store.latest("job0").unwrap().unwrap().seq, seq);
}

/// Issue 9, 7.5: skip-corrupted recovery of a compacted segment whose snapshot is damaged,
/// followed by an empty segment, must not let the writer append into the compacted segment
/// (whose records end with the snapshot, which the next open would then look for in vain).
#[test]
fn a_writer_never_appends_to_a_compacted_segment_whose_snapshot_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with(dir.path(), common::options()).unwrap();
    for i in 0..30 {
        store
            .save(&format!("job{}", i % 3), "extract", &json!({"i": i}))
            .unwrap();
    }
    store
        .compact_with(&cairn::Retention::default().keep_last(5))
        .unwrap();
    store.close().unwrap();
    let files = segment_files(dir.path());
    assert_eq!(
        files.len(),
        2,
        "a compacted segment and an empty one: {files:?}"
    );
    let compacted = &files[0];
    let mut bytes = std::fs::read(compacted).unwrap();
    let snapshot = files::records(&bytes)
        .into_iter()
        .rfind(|record| record.kind == SNAPSHOT)
        .expect("a snapshot record");
    let (start, end) = (snapshot.offset, snapshot.end());
    bytes[(start + end) / 2] ^= 0x08;
    std::fs::write(compacted, &bytes).unwrap();

    let skip = || common::options().recovery(RecoveryMode::SkipCorrupted);
    let store = Store::open_with(dir.path(), skip()).unwrap();
    let seq = store.save("job0", "extract", &json!("after")).unwrap();
    drop(store);
    assert!(
        std::fs::read(compacted).unwrap() == bytes,
        "the writer changed the compacted segment"
    );
    let store = Store::open_with(dir.path(), skip()).unwrap();
    let latest = store.latest("job0").unwrap().unwrap();
    assert_eq!((latest.seq, latest.data), (seq, json!("after")));
}
