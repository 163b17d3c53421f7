//! Adversarial reviews of the durability core (issue 9): each test is one scenario in which a
//! crash, a bit flip, a failed sync or an interleaving of savers reaches a torn/durable
//! decision or an acknowledgement. All but the power-loss sweep failed on the reviewed code
//! (a payload the limit accepted panicked; several marks after one record panicked at a
//! segment's end; savers were acknowledged before the mark proving their sync existed; a
//! save whose mark found no room was acknowledged without proof) and pass since the fixes.

mod common;

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn::testing::{CrashMode, SimDisk, Step};
use cairn::{Error, FindingKind, Store};
use serde_json::{Value, json};

use common::files::{CHECKPOINT, MARK, RECORD_HEADER_BYTES, records};
use common::sim::{self, segment_path};
use common::{SEGMENT_BYTES, options, wait_for};

/// Room the writer keeps after every record: two marks and a seal (FORMAT.md, "Finding the
/// end of valid data").
const RESERVE: usize = 96;

/// Data of exactly `len` bytes of JSON (a string), so record sizes can be planned.
fn sized(len: usize) -> Value {
    assert!(len >= 2);
    Value::String("x".repeat(len - 2))
}

// ---------------------------------------------------------------------------------------------
// Finding A: the record body limit ignores the mark reserve (panic in a save).
// ---------------------------------------------------------------------------------------------

/// `Options::max_record_body_bytes` left room for the segment header and one seal, but
/// `Writer::fits` also reserves marks after every record (TAIL_RESERVE).
/// A body in the last 24 bytes below the limit passes `check_size`, does not fit even an empty
/// segment, so `Log::append` rolls over and `Writer::append` asserts: the save panics (and
/// every retry seals one more empty segment first).
#[test]
fn the_largest_accepted_payload_is_saved_without_a_panic() {
    let options = options().compress_above(u64::MAX).max_payload(u64::MAX);
    // The body of a checkpoint of job "j", phase "p" is its JSON plus a small envelope; try
    // every JSON length around the limit.
    let mut outcomes = Vec::new();
    for len in (SEGMENT_BYTES as usize - 260)..(SEGMENT_BYTES as usize - 100) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), options.clone()).unwrap();
        let saved = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            store.save("j", "p", &sized(len))
        }));
        match saved {
            Ok(Ok(seq)) => {
                outcomes.push((len, "saved"));
                assert_eq!(store.latest("j").unwrap().unwrap().seq, seq);
            }
            Ok(Err(Error::PayloadTooLarge { .. })) => outcomes.push((len, "too large")),
            Ok(Err(other)) => panic!("JSON of {len} bytes: unexpected error {other}"),
            Err(_) => panic!("JSON of {len} bytes: the save panicked"),
        }
    }
    assert!(outcomes.iter().any(|(_, o)| *o == "saved"), "{outcomes:?}");
    assert!(
        outcomes.iter().any(|(_, o)| *o == "too large"),
        "{outcomes:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Finding B: two marks in a row (two group-commit leaders), panic at the end of a segment.
// ---------------------------------------------------------------------------------------------

/// Two saves that fill the rest of segment 1: `a` small, `b` ending exactly where the room
/// reserved for marks and the seal starts, so that leader 1's mark for `a` lands at `mark_at`,
/// right after `b`.
struct TwoSaves {
    /// Saves made to fill segment 1 first.
    saves_before: u64,
    a_len: usize,
    b_len: usize,
    mark_at: usize,
}

/// Fills segment 1 of `store` (whose image `image` reads) until about 1.7 KiB are left,
/// measures the checkpoint envelope, and plans the two saves.
fn plan_two_saves(store: &Store, image: impl Fn() -> Vec<u8>) -> TwoSaves {
    let pad = 1000;
    let mut saves_before = 0;
    loop {
        store.save("j", "p", &sized(pad)).unwrap();
        saves_before += 1;
        let end = records(&image()).last().unwrap().end();
        if (SEGMENT_BYTES as usize) - end < 1700 {
            break;
        }
    }
    let walked = records(&image());
    let last_checkpoint = walked.iter().rev().find(|r| r.kind == CHECKPOINT).unwrap();
    let envelope = last_checkpoint.body_len - pad;
    let end = walked.last().unwrap().end();
    assert_eq!(
        walked.last().unwrap().kind,
        MARK,
        "Sync mode marks every save"
    );
    let a_len = 100;
    let a_end = end + (RECORD_HEADER_BYTES + envelope + a_len).next_multiple_of(8);
    let b_padded = SEGMENT_BYTES as usize - RESERVE - a_end;
    let b_len = b_padded - RECORD_HEADER_BYTES - envelope;
    assert!(b_padded.is_multiple_of(8) && b_len > 300, "setup: {b_len}");
    TwoSaves {
        saves_before,
        a_len,
        b_len,
        mark_at: a_end + b_padded,
    }
}

/// Holds the first two syncs of `disk`: the first (leader 1's, of save `a`) says so on the
/// returned receiver and waits for the returned sender; the second (leader 2's, of save `b`)
/// waits until leader 1's mark is in the file at `mark_at`.
fn hold_two_leaders(disk: &SimDisk, mark_at: usize) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (in_sync_tx, in_sync_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let mut syncs = 0;
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
    (in_sync_rx, release_tx)
}

/// Leader 1 syncs save `a`; meanwhile save `b` is appended. Leader 1 then writes the mark
/// proving `a` after `b`; leader 2 syncs `b` and writes a second mark right after the first,
/// with no record in between. `Writer::append_mark` assumes at most one mark follows a record
/// ("a later mark would have to prove more, which needs a new record": but record `b` was
/// written before the first mark), so when `b` ends exactly at the mark + seal reserve the
/// second mark does not fit and the assert panics in the saver of `b`.
#[test]
fn two_leaders_never_need_more_than_the_reserved_room_for_marks() {
    let disk = SimDisk::new();
    let store = Arc::new(sim::open(&disk, options()).unwrap());
    let image = || disk.read_file(&segment_path(1)).unwrap();
    let TwoSaves {
        saves_before: n,
        a_len,
        b_len,
        mark_at,
    } = plan_two_saves(&store, image);
    let (in_sync_rx, release_tx) = hold_two_leaders(&disk, mark_at);
    let saver = |len: usize| {
        let store = store.clone();
        std::thread::spawn(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                store.save("j", "p", &sized(len))
            }))
        })
    };
    let leader_1 = saver(a_len);
    in_sync_rx.recv().unwrap();
    let leader_2 = saver(b_len);
    wait_for("save b is written", || {
        records(&image())
            .iter()
            .any(|r| r.seq == n + 2 && r.kind == CHECKPOINT)
    });
    let b = *records(&image()).last().unwrap();
    assert_eq!(
        b.end(),
        SEGMENT_BYTES as usize - RESERVE,
        "setup: save b ends at the reserve"
    );
    release_tx.send(()).unwrap();
    let first = leader_1.join().unwrap();
    let second = leader_2.join().unwrap();
    disk.clear_hook();
    assert!(
        matches!(first, Ok(Ok(_))),
        "save a: {:?}",
        first.map_err(|_| "panicked")
    );
    assert!(
        matches!(second, Ok(Ok(_))),
        "save b: {:?}",
        second.map_err(|_| "panicked")
    );
    // Both saves survive a crash of the process, and the log still rolls over.
    let crashed = disk.crash(CrashMode::KeepUnsynced, 3);
    let reopened = sim::open(&crashed, options()).unwrap();
    assert_eq!(reopened.latest("j").unwrap().unwrap().seq, b.seq);
    reopened.save("j", "p", &sized(2000)).unwrap();
    assert_eq!(reopened.segment_count(), 2);
}

// ---------------------------------------------------------------------------------------------
// Finding C: the proof of the last acknowledged group is not durable (power loss + bit flip).
// ---------------------------------------------------------------------------------------------

/// Flips one bit of the JSON of the record numbered `seq` in a segment image of `disk`.
fn flip_bit_in_record(disk: &SimDisk, path: &Path, seq: u64) {
    let mut bytes = disk.read_file(path).unwrap();
    let record = records(&bytes)
        .into_iter()
        .find(|r| r.seq == seq && r.kind == CHECKPOINT)
        .unwrap();
    bytes[record.end() - 9] ^= 0x10;
    disk.overwrite_file(path, bytes);
}

/// Sync mode, two group-commit leaders: leader 2's mark write fails (a stand-in for a crash of
/// the process between its sync and its mark). Savers it covered must not have been
/// acknowledged before the mark existed: any acknowledged save, damaged afterwards, must be
/// reported as corruption, never cut off as a torn tail.
#[test]
fn a_waiter_is_acknowledged_only_once_its_proof_is_written() {
    for run in 0..200 {
        if let Some(failure) = acknowledged_without_proof(run) {
            panic!("run {run}: {failure}");
        }
    }
}

/// One run of the scenario above; returns what went wrong, if anything.
fn acknowledged_without_proof(run: u64) -> Option<String> {
    let disk = SimDisk::new();
    let store = Arc::new(sim::open(&disk, options()).unwrap());
    store.save("j0", "p", &json!({"i": 0})).unwrap();
    let image = || disk.read_file(&segment_path(1)).unwrap();
    let (in_sync_rx, release_tx) = fail_the_mark_of_leader_2(&disk);
    let saver = |job: &'static str| {
        let store = store.clone();
        std::thread::spawn(move || store.save(job, "p", &json!({"job": job})))
    };
    // Save 2 leads and stops in its sync; saves 3 (a) and 4 (b) are written meanwhile.
    let leader_1 = saver("j1");
    in_sync_rx.recv().unwrap();
    let a = saver("ja");
    wait_for("save a is written", || {
        records(&image()).iter().any(|r| r.seq == 3)
    });
    let b = saver("jb");
    wait_for("save b is written", || {
        records(&image()).iter().any(|r| r.seq == 4)
    });
    release_tx.send(()).unwrap();
    // Leader 1's own save was proven before leader 2 failed; it may still see the poison
    // first (a poisoned store acknowledges nothing).
    let first = leader_1.join().unwrap();
    assert!(
        matches!(first, Ok(2) | Err(Error::Poisoned { .. })),
        "{first:?}"
    );
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    disk.clear_hook();
    let acked: Vec<u64> = [a, b].into_iter().filter_map(Result::ok).collect();
    let crashed = disk.crash(CrashMode::KeepUnsynced, run);
    drop(store);
    acked
        .into_iter()
        .find_map(|seq| cut_off_silently(&crashed, seq, run))
}

/// Holds the first sync of `disk` (leader 1's): it says so on the returned receiver and waits
/// for the returned sender. The second (leader 2's, of saves a and b) waits until leader 1's
/// mark is written (it races with this sync), then makes the next write, leader 2's mark,
/// fail.
fn fail_the_mark_of_leader_2(disk: &SimDisk) -> (mpsc::Receiver<()>, mpsc::Sender<()>) {
    let (in_sync_tx, in_sync_rx) = mpsc::channel::<()>();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let mut syncs = 0;
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
                if records(&bytes)
                    .last()
                    .is_some_and(|r| r.kind == MARK && r.durable_seq == 2)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            disk.inject(cairn::testing::Fault::FailWrite(1));
        }
    });
    (in_sync_rx, release_tx)
}

/// After a crash (`crashed`), one bit of acknowledged save `seq` flips: the default open must
/// refuse the store as corrupt. Returns what went wrong if it does not.
fn cut_off_silently(crashed: &SimDisk, seq: u64, run: u64) -> Option<String> {
    let copy = crashed.crash(CrashMode::KeepUnsynced, run);
    flip_bit_in_record(&copy, &segment_path(1), seq);
    match sim::open(&copy, options()) {
        Err(err) if err.is_corruption() => None,
        Err(err) => Some(format!("unexpected error {err}")),
        Ok(store) => {
            let findings: Vec<FindingKind> = store
                .recovery_report()
                .findings
                .iter()
                .map(|f| f.kind)
                .collect();
            let next = store.save("j", "p", &json!({"i": "new"})).unwrap();
            Some(format!(
                "acknowledged save {seq} was cut off silently after a crash: findings \
                 {findings:?}, next save numbered {next}"
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checked and sound: power loss at many points of a concurrent workload (group commit, marks
// and rollovers interleaved) never makes the default open refuse, nor loses an acknowledged
// save, nor hands out one of its numbers again.
// ---------------------------------------------------------------------------------------------

#[test]
fn power_loss_during_concurrent_saves_and_rollovers_keeps_every_acknowledged_save() {
    type Saves = Vec<(String, u64, Value)>;
    type Acked = Arc<Mutex<Saves>>;
    let disk = SimDisk::new();
    let store = Arc::new(sim::open(&disk, options()).unwrap());
    let acked: Acked = Arc::new(Mutex::new(Vec::new()));
    let images: Arc<Mutex<Vec<(SimDisk, Saves)>>> = Arc::default();
    {
        let (acked, images) = (acked.clone(), images.clone());
        let mut step_count = 0u64;
        disk.set_hook(move |disk, _step| {
            step_count += 1;
            if step_count.is_multiple_of(11) && images.lock().unwrap().len() < 150 {
                let known = acked.lock().unwrap().clone();
                let mode = [
                    CrashMode::TornSectors,
                    CrashMode::TornPages,
                    CrashMode::LoseUnsynced,
                ][(step_count % 3) as usize];
                images
                    .lock()
                    .unwrap()
                    .push((disk.crash(mode, step_count), known));
            }
        });
    }
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (store, acked) = (store.clone(), acked.clone());
            std::thread::spawn(move || {
                for i in 0..120u64 {
                    let job = format!("j{t}");
                    let data = json!({"t": t, "i": i, "pad": "p".repeat((i * 37 % 900) as usize)});
                    let seq = store.save(&job, "p", &data).unwrap();
                    acked.lock().unwrap().push((job, seq, data));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    disk.clear_hook();
    assert!(store.segment_count() > 3, "the workload rolls over");
    let images = std::mem::take(&mut *images.lock().unwrap());
    assert!(images.len() > 60, "{}", images.len());
    for (n, (image, known)) in images.into_iter().enumerate() {
        let reopened = sim::open(&image, options())
            .unwrap_or_else(|e| panic!("image {n}: the default open refuses: {e}"));
        for (job, seq, data) in &known {
            let history = reopened.history(job).unwrap();
            assert!(
                history.iter().any(|c| c.seq == *seq && c.data == *data),
                "image {n}: acknowledged save {seq} of {job} lost"
            );
        }
        let max = known.iter().map(|(_, seq, _)| *seq).max().unwrap_or(0);
        let next = reopened.save("probe", "p", &json!({})).unwrap();
        assert!(next > max, "image {n}: number {next} handed out again");
    }
}

// ---------------------------------------------------------------------------------------------
// The second review (the final code): room for the mark that proves the last record.
// ---------------------------------------------------------------------------------------------

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
    let store = Arc::new(sim::open(&disk, options()).unwrap());
    let image = || disk.read_file(&segment_path(1)).unwrap();
    let TwoSaves {
        a_len,
        b_len,
        mark_at,
        ..
    } = plan_two_saves(&store, image);
    let (in_sync_rx, release_tx) = hold_two_leaders(&disk, mark_at);
    let saver = |len: usize| {
        let store = store.clone();
        std::thread::spawn(move || store.save("j", "p", &sized(len)))
    };
    let leader_1 = saver(a_len);
    in_sync_rx.recv().unwrap();
    let leader_2 = saver(b_len);
    wait_for("save b is written", || {
        records(&image())
            .last()
            .is_some_and(|r| r.kind == CHECKPOINT && r.end() == SEGMENT_BYTES as usize - RESERVE)
    });
    release_tx.send(()).unwrap();
    leader_1.join().unwrap().expect("save a");
    let b_seq = leader_2.join().unwrap().expect("save b is acknowledged");
    disk.clear_hook();
    let tail = records(&image());
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

    match sim::open(&crashed, options()) {
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
