//! Seed inputs for each target: small, valid scenarios from which the fuzzer starts, written
//! to `fuzz/corpus/<target>/seed-*` by `CAIRN_FUZZ_WRITE_SEEDS=1 cargo test --test
//! fuzz_corpus` (see docs/FUZZING.md). The stable test also runs them directly.

use std::path::Path;

use cairn::testing::{self, SimDisk};
use serde_json::json;

use super::format::{KIND_SEAL, RecordHeader};
use super::image::{self, segment_name};

/// The seeds of `target`, named.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    match target {
        "decode_record" => decode_record(),
        "open_segments" => open_segments(),
        "ops" => ops(),
        _ => panic!("no target {target}"),
    }
}

fn decode_record() -> Vec<(String, Vec<u8>)> {
    let salt: u32 = 0x1234_5678;
    let framed = |flags: u8, record: &[u8]| {
        let mut input = vec![flags];
        input.extend_from_slice(&salt.to_le_bytes());
        input.extend_from_slice(record);
        input
    };
    let checkpoint =
        testing::encode_checkpoint_record(salt, 7, "github_sync", br#"{"cursor":"Y3Vy"}"#);
    let empty_job = testing::encode_checkpoint_record(salt, 1, "", b"null");
    let seal = RecordHeader {
        seq: 9,
        durable_seq: 8,
        body_len: 0,
        kind: KIND_SEAL,
    }
    .encode(salt, &[]);
    let mut trailing = checkpoint.clone();
    trailing.extend_from_slice(&[0xaa; 13]);
    vec![
        ("seed-checkpoint".into(), framed(0, &checkpoint)),
        ("seed-empty-job".into(), framed(0, &empty_job)),
        ("seed-seal".into(), framed(0, &seal)),
        ("seed-trailing-bytes".into(), framed(0, &trailing)),
        ("seed-fixup-checkpoint".into(), framed(1, &checkpoint)),
        ("seed-fixup-zeros".into(), framed(1, &[0; 40])),
    ]
}

fn open_segments() -> Vec<(String, Vec<u8>)> {
    // Variant 0: (segment count - 1), then per segment a count byte and (kind, pad) per record,
    // then damage ops.
    let one_segment = vec![0, 0, 3, 0, 1, 1, 20, 2, 3];
    let three_segments = [
        vec![0, 2],
        vec![0x42, 0, 4, 1, 5], // version 1, two checkpoints, sealed
        vec![3, 0x80, 9, 0x41, 2, 0x16, 3], // compressed, job event, trigger 5
        vec![0x82, 3, 40, 2, 1], // sealed last segment
    ]
    .concat();
    let with = |base: &[u8], damage: &[u8]| [base, damage].concat();
    // Variant 1: flags 0 everywhere gives the valid log; then a few overrides.
    let semantic = vec![1, 1, 2, 0, 0, 1, 0, 1, 2, 0, 3, 0, 0, 2, 0, 0];
    let mut semantic_durable = vec![1, 0, 3, 0, 0, 1, 0, 1, 2, 4];
    semantic_durable.extend_from_slice(&[0; 8]);
    semantic_durable.extend_from_slice(&[3, 2, 3, 0]);
    vec![
        ("seed-valid-one-segment".into(), one_segment.clone()),
        ("seed-valid-three-segments".into(), three_segments.clone()),
        // xor a byte of segment 2 at 0x60, in a record header
        (
            "seed-flipped-byte".into(),
            with(&three_segments, &[0, 1, 0x60, 0x00, 0x04]),
        ),
        // cut segment 1 at 256 bytes
        (
            "seed-truncated".into(),
            with(&one_segment, &[3, 0, 0x00, 0x01]),
        ),
        (
            "seed-removed-segment".into(),
            with(&three_segments, &[4, 1]),
        ),
        ("seed-semantic".into(), semantic),
        ("seed-semantic-durable-seq".into(), semantic_durable),
        ("seed-raw-real-store".into(), raw_real_store()),
    ]
}

/// Variant 2 input holding the segments of a store written by cairn itself, trimmed of their
/// trailing zeros and zero-filled back to the segment size when opened.
fn raw_real_store() -> Vec<u8> {
    let disk = SimDisk::new();
    let dir = Path::new("/seed/store");
    let store = testing::open(
        &disk,
        dir,
        image::options(cairn::RecoveryMode::TolerateTornTail),
        false,
    )
    .expect("opens");
    for i in 0..40u64 {
        let pad = "s".repeat((i as usize % 5) * 500);
        store
            .save(
                &format!("job{}", i % 3),
                "extract",
                &json!({"i": i, "pad": pad}),
            )
            .expect("saves");
    }
    drop(store);
    let mut files: Vec<Vec<u8>> = (1..)
        .map_while(|id| disk.read_file(&dir.join(segment_name(id))))
        .collect();
    files.truncate(3);
    let mut input = vec![2, (files.len() - 1) as u8];
    for mut bytes in files {
        let used = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        bytes.truncate(used);
        input.push(1);
        input.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        input.extend_from_slice(&bytes);
    }
    input
}

fn ops() -> Vec<(String, Vec<u8>)> {
    // Op bytes (see ops.rs): low bits 0 or 1 save (job in bits 3..5, trigger code in bits
    // 5..8, then a pad byte), 2 or 3 job event (job in bits 3..5, event in bits 5..8: 5
    // delete_job, 6 compact, 7 compact and crash; then an argument byte), 4 reopen, 5 crash
    // (mode byte, two seed bytes), 6 fault (n byte, kind byte), 7 check.
    let saves = |n: u8| {
        (0..n)
            .flat_map(|i| [i << 3, i.wrapping_mul(37)])
            .collect::<Vec<u8>>()
    };
    let mut crash_each_mode = Vec::new();
    for mode in 0..4u8 {
        crash_each_mode.extend(saves(6));
        crash_each_mode.extend_from_slice(&[5, mode, 7, 0, 7]);
    }
    let mut rollover = saves(30);
    rollover.extend_from_slice(&[4, 7]);
    rollover.extend(saves(30));
    rollover.extend_from_slice(&[5, 2, 1, 0, 7]);
    let mut faults = Vec::new();
    for kind in 0..4u8 {
        faults.extend(saves(3));
        faults.extend_from_slice(&[6, 1, kind]);
        faults.extend(saves(4));
        faults.extend_from_slice(&[7, 4, 7]);
    }
    let mut fault_then_crash = saves(5);
    fault_then_crash.extend_from_slice(&[6, 0, 2]);
    fault_then_crash.extend(saves(3));
    fault_then_crash.extend_from_slice(&[5, 0, 9, 0, 7]);
    let mut events_each_fault = Vec::new();
    for kind in 0..4u8 {
        // The fault hits the first write after it: the run_started event.
        events_each_fault.extend(job_runs(1));
        events_each_fault.extend_from_slice(&[6, 0, kind]);
        events_each_fault.extend(job_runs(1));
        events_each_fault.extend_from_slice(&[7, 4, 7, 5, kind, 3, 0, 7]);
    }
    vec![
        ("seed-saves-and-check".into(), [saves(10), vec![7]].concat()),
        ("seed-crash-each-mode".into(), crash_each_mode),
        ("seed-rollover-reopen-crash".into(), rollover),
        ("seed-each-fault".into(), faults),
        ("seed-failed-sync-then-crash".into(), fault_then_crash),
        (
            "seed-job-runs".into(),
            [job_runs(4), vec![7, 4, 7, 5, 1, 5, 0, 7]].concat(),
        ),
        ("seed-job-events-each-fault".into(), events_each_fault),
        ("seed-compact-and-delete".into(), compact_and_delete()),
        ("seed-compact-then-crash".into(), compact_then_crash()),
        (
            "seed-compact-and-delete-faults".into(),
            compact_and_delete_faults(),
        ),
    ]
}

/// `ops` op bytes: `delete_job` of job `job` (reason padded by `arg` * 8 bytes), `compact`,
/// and `compact` then a crash (mode in bits 0..2 of `arg`, seed in bits 2..8).
fn delete_job(job: u8, arg: u8) -> [u8; 2] {
    [5 << 5 | job << 3 | 2, arg]
}
const COMPACT: [u8; 2] = [6 << 5 | 2, 0];
fn compact_crash(arg: u8) -> [u8; 2] {
    [7 << 5 | 2, arg]
}

/// Runs of three jobs over a few segments, compacted; a job deleted, saved again and
/// compacted again; a reopen and a crash.
fn compact_and_delete() -> Vec<u8> {
    let big_saves = |job: u8, n: u8| {
        (0..n)
            .flat_map(|i| [job << 3 | (i & 1), 200])
            .collect::<Vec<u8>>()
    };
    let mut bytes = job_runs(3);
    bytes.extend(big_saves(0, 12));
    bytes.extend(COMPACT);
    bytes.push(7);
    bytes.extend(delete_job(1, 2));
    bytes.extend(big_saves(1, 2));
    bytes.extend(delete_job(3, 0)); // a job the store never had
    bytes.extend(big_saves(2, 12));
    bytes.extend(COMPACT);
    bytes.extend(COMPACT);
    bytes.extend_from_slice(&[7, 4, 7]);
    bytes.extend(delete_job(0, 0));
    bytes.extend(COMPACT);
    bytes.extend_from_slice(&[5, 2, 3, 0, 7]);
    bytes
}

/// A compaction followed at once by a crash, in each mode.
fn compact_then_crash() -> Vec<u8> {
    let mut bytes = Vec::new();
    for mode in 0..4u8 {
        bytes.extend(job_runs(2));
        bytes.extend((0..8).flat_map(|i: u8| [i << 3, 150]));
        bytes.extend(compact_crash(mode | (mode + 1) << 2));
        bytes.push(7);
    }
    bytes
}

/// Every kind of fault at the first and third disk operation of its kind in a compaction,
/// then a `delete_job` that fails, each followed by a check, a reopen and a crash.
fn compact_and_delete_faults() -> Vec<u8> {
    let mut bytes = Vec::new();
    for kind in 0..4u8 {
        for n in [0, 2] {
            bytes.extend(job_runs(1));
            bytes.extend((0..6).flat_map(|i: u8| [i << 3, 250]));
            bytes.extend_from_slice(&[6, n, kind]);
            bytes.extend(COMPACT);
            bytes.extend_from_slice(&[7, 4, 7]);
        }
        bytes.extend_from_slice(&[6, 0, kind]);
        bytes.extend(delete_job(0, 1));
        bytes.extend_from_slice(&[7, 5, kind, 1, 0, 7]);
    }
    bytes
}

/// `ops` input bytes: for each of the first `jobs` jobs, a run that saves, fails, is retried,
/// saves again and succeeds, then a checkpoint cleared for a full restart.
fn job_runs(jobs: u8) -> Vec<u8> {
    const START: u8 = 0;
    const FAIL: u8 = 1;
    const SUCCEED: u8 = 2;
    const CLEAR: u8 = 3;
    const RETRY: u8 = 4;
    let mut bytes = Vec::new();
    for job in 0..jobs {
        let event = |kind: u8, arg: u8| [kind << 5 | job << 3 | 2, arg];
        // A save with trigger code 1 (batch completed), then one with code 5 (API error).
        let save = |trigger: u8, pad: u8| [trigger << 5 | job << 3, pad];
        bytes.extend(event(START, 0));
        bytes.extend(save(1, 10));
        bytes.extend(save(5, 3));
        bytes.extend(event(FAIL, 0b0110_1011));
        bytes.extend(event(RETRY, 0b0001_0001));
        bytes.extend(event(START, 0));
        bytes.extend(save(1, 40));
        bytes.extend(event(SUCCEED, 0));
        bytes.extend(event(CLEAR, 4));
    }
    bytes
}
