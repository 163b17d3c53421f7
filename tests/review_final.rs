//! Second adversarial review of issue 9 (the final code, after tests/review_durability.rs):
//! each test is one scenario that broke a promise of docs/RECOVERY.md on the reviewed code and
//! passes since the fix (a reserve for two marks after every record).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn::testing::{self, CrashMode, SimDisk, Step};
use cairn::{AutoCompact, Options};
use serde_json::Value;

const DIR: &str = "/sim/store";
const SEGMENT: u64 = 64 * 1024;
const HEADER: usize = 64;
/// Room the writer keeps after every record: two marks and a seal (FORMAT.md, "Finding the
/// end of valid data").
const RESERVE: usize = 96;
const RECORD_HEADER: usize = 32;
const CHECKPOINT: u8 = 1;
const MARK: u8 = 5;

fn options() -> Options {
    Options::default()
        .segment_size(SEGMENT)
        .auto_compact(AutoCompact::disabled())
}

fn segment_path(id: u64) -> PathBuf {
    Path::new(DIR).join(format!("{id:020}.seg"))
}

/// A record as its header says, found by walking a segment image from its header.
#[derive(Debug, Clone, Copy)]
struct Walked {
    offset: usize,
    seq: u64,
    durable_seq: u64,
    body_len: usize,
    kind: u8,
}

impl Walked {
    fn end(&self) -> usize {
        self.offset + (RECORD_HEADER + self.body_len).next_multiple_of(8)
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// Walks the records of a segment image (no checksum checks: the image is known good).
fn walk(bytes: &[u8]) -> Vec<Walked> {
    let mut out = Vec::new();
    let mut pos = HEADER;
    while pos + RECORD_HEADER <= bytes.len() && bytes[pos..pos + RECORD_HEADER] != [0; 32] {
        let record = Walked {
            offset: pos,
            seq: u64_at(bytes, pos + 8),
            durable_seq: u64_at(bytes, pos + 16),
            body_len: u32::from_le_bytes(bytes[pos + 24..pos + 28].try_into().unwrap()) as usize,
            kind: bytes[pos + 28],
        };
        pos = record.end();
        out.push(record);
    }
    out
}

/// Data of exactly `len` bytes of JSON (a string), so record sizes can be planned.
fn sized(len: usize) -> Value {
    assert!(len >= 2);
    Value::String("x".repeat(len - 2))
}

/// Polls `cond` for up to ten seconds.
fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sync mode. Save `a` is being synced by leader 1 when save `b` is appended, and `b` ends
/// exactly where the reserve for marks and the seal starts. Leader 1's mark (proving `a`)
/// takes room after `b`; leader 2 syncs `b` and must still find room for the mark that proves
/// it. (With room for one mark only, it skipped it and acknowledged `b` anyway.)
///
/// Issue 9: "The same holds when the writer crashes after a sync: what that sync covered is
/// proven." The writer crashes now (kill -9: the disk keeps every page), and one bit of `b`
/// flips. The default open must report the damage, not take `b` for a torn write, cut it off
/// without an error and hand its sequence number out again.
#[test]
fn a_save_acknowledged_without_room_for_its_mark_is_still_proven_after_a_crash() {
    let disk = SimDisk::new();
    let store = Arc::new(testing::open(&disk, Path::new(DIR), options(), false).unwrap());
    let image = || disk.read_file(&segment_path(1)).unwrap();
    // Fill segment 1 so that about 1.7 KiB are left; measure the checkpoint envelope.
    let pad = 1000;
    loop {
        store.save("j", "p", &sized(pad)).unwrap();
        let end = walk(&image()).last().unwrap().end();
        if (SEGMENT as usize) - end < 1700 {
            break;
        }
    }
    let records = walk(&image());
    let last_checkpoint = records.iter().rev().find(|r| r.kind == CHECKPOINT).unwrap();
    let envelope = last_checkpoint.body_len - pad;
    let end = records.last().unwrap().end();
    // Save a: small. Save b: ends exactly where the reserve for marks and the seal starts.
    let a_len = 100;
    let a_end = end + (RECORD_HEADER + envelope + a_len).next_multiple_of(8);
    let b_padded = SEGMENT as usize - RESERVE - a_end;
    let b_len = b_padded - RECORD_HEADER - envelope;
    assert!(b_padded.is_multiple_of(8) && b_len > 300, "setup: {b_len}");

    // The first sync (leader 1, save a) waits to be released; the second (leader 2, save b)
    // waits until leader 1's mark is in the file after b.
    let (in_sync_tx, in_sync_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let mut syncs = 0;
    let mark_at = a_end + b_padded;
    disk.set_hook(move |disk, step| {
        if step != Step::Sync {
            return;
        }
        syncs += 1;
        if syncs == 1 {
            in_sync_tx.send(()).unwrap();
            release_rx.lock().unwrap().recv().unwrap();
        } else if syncs == 2 {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                let bytes = disk.read_file(&segment_path(1)).unwrap();
                if bytes[mark_at + 28] == MARK {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    });
    let saver = |len: usize| {
        let store = store.clone();
        std::thread::spawn(move || store.save("j", "p", &sized(len)))
    };
    let leader_1 = saver(a_len);
    in_sync_rx.recv().unwrap();
    let leader_2 = saver(b_len);
    eventually("save b is written", || {
        walk(&image())
            .last()
            .is_some_and(|r| r.kind == CHECKPOINT && r.end() == SEGMENT as usize - RESERVE)
    });
    release_tx.send(()).unwrap();
    leader_1.join().unwrap().expect("save a");
    let b_seq = leader_2.join().unwrap().expect("save b is acknowledged");
    disk.clear_hook();
    let tail = walk(&image());
    let b = *tail
        .iter()
        .find(|r| r.seq == b_seq && r.kind == CHECKPOINT)
        .unwrap();
    // Two marks follow save b: leader 1's (proving a) and leader 2's (proving b).
    assert!(
        tail.iter()
            .any(|r| r.kind == MARK && r.durable_seq >= b_seq),
        "a mark proves save b ({tail:?})"
    );

    // kill -9 now (every page reaches the disk), then one bit of b's JSON flips.
    let crashed = disk.crash(CrashMode::KeepUnsynced, 1);
    drop(store);
    let mut bytes = crashed.read_file(&segment_path(1)).unwrap();
    bytes[b.end() - 9] ^= 0x10;
    crashed.overwrite_file(&segment_path(1), bytes);

    match testing::open(&crashed, Path::new(DIR), options(), false) {
        Err(error) => assert!(error.is_corruption(), "a clear corruption error: {error}"),
        Ok(reopened) => {
            let latest = reopened.latest("j").unwrap().map(|c| c.seq);
            let report = reopened.recovery_report().clone();
            let reused = reopened.save("j", "p", &sized(10)).unwrap();
            panic!(
                "the default open accepted the store: latest is {latest:?}, not the \
                 acknowledged {b_seq}; findings {:?}; the next save got sequence number \
                 {reused}",
                report.findings
            );
        }
    }
}
