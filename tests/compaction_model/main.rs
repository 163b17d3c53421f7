//! Model test of compaction and retention: random sequences of saves, job events, deletions,
//! compactions with random retention policies and reopens, checked after every step against
//! an in-memory model.
//!
//! Two configurations:
//!
//! - Manual compaction only (on the simulated disk, deterministic). The compaction report's
//!   `upto_seq` tells the model which checkpoints the compaction covered, so the model applies
//!   the retention rules itself (each job's latest always; the newest `keep_last` counting the
//!   newer checkpoints after the range; nothing not-latest when `max_age` is zero; nothing of a
//!   deleted job) and history must equal it exactly. The report's counts must match too. A
//!   size limit (`max_bytes`) may drop more: only history the rules keep, never a latest
//!   checkpoint, oldest first; the model then follows the store.
//! - Background compaction (`AutoCompact::default().segments(2)`, real files) racing with the
//!   operations: latest checkpoints and job states are exact, history holds at least the newest
//!   `keep_last` of each job, is an ordered subset of what was saved, and only ever shrinks.
//!
//! Always: sequence numbers strictly increase, compaction and reopen never change a job's state
//! (timestamps included), a reopen shows what the store showed before.
//!
//! `PROPTEST_CASES` sets the number of cases (default 64; four times as many on the simulated
//! disk); a failure prints the minimal
//! operation sequence, and `PROPTEST_RNG_SEED` reruns a given seed.

#[path = "../common/mod.rs"]
mod common;
mod harness;
mod model;

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;
use serde_json::json;

use cairn::{AutoCompact, Retention, Store};

use common::disk::Disk;
use common::{options, small_segments};
use harness::{Harness, history, seqs};

const JOBS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];

/// A `max_age` for a compaction.
#[derive(Debug, Clone, Copy)]
enum Age {
    /// No age limit.
    Unlimited,
    /// An age limit so large that nothing is ever too old.
    Huge(Duration),
    /// Zero: every checkpoint but each job's latest is too old.
    Zero,
}

#[derive(Debug, Clone)]
enum Op {
    Save {
        job: usize,
        pad: usize,
        phase: u8,
    },
    StartRun(usize),
    FailRun(usize),
    SucceedRun(usize),
    ClearCheckpoint(usize),
    Delete(usize),
    /// `cap`: a size limit leaving the compacted segment this many bytes (0 to 64 KiB).
    Compact {
        keep_last: usize,
        age: Age,
        cap: Option<u64>,
    },
    Reopen,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let job = 0..JOBS.len();
    // Half the saves are padded, so that 64 KiB segments roll over every few saves.
    let pad = prop_oneof![Just(0usize), 6_000..20_000usize];
    let age = prop_oneof![
        2 => Just(Age::Unlimited),
        1 => Just(Age::Huge(Duration::from_secs(100 * 365 * 24 * 3600))),
        1 => Just(Age::Huge(Duration::MAX)),
        2 => Just(Age::Zero),
    ];
    let cap = prop_oneof![3 => Just(None), 1 => (0..=16u64).prop_map(|pages| Some(pages * 4096))];
    prop_oneof![
        12 => (job.clone(), pad, 0..3u8).prop_map(|(job, pad, phase)| Op::Save { job, pad, phase }),
        2 => job.clone().prop_map(Op::StartRun),
        1 => job.clone().prop_map(Op::FailRun),
        1 => job.clone().prop_map(Op::SucceedRun),
        1 => job.clone().prop_map(Op::ClearCheckpoint),
        1 => job.prop_map(Op::Delete),
        3 => (1..=5usize, age, cap).prop_map(|(keep_last, age, cap)| Op::Compact { keep_last, age, cap }),
        1 => Just(Op::Reopen),
    ]
}

/// `PROPTEST_CASES` (default 64) times `scale`: the simulated disk is cheap enough for more.
fn config(scale: u32) -> ProptestConfig {
    let cases = common::rng::env_u64("PROPTEST_CASES").unwrap_or(64);
    let cases = u32::try_from(cases).unwrap_or(u32::MAX);
    ProptestConfig {
        cases: cases.saturating_mul(scale),
        // No regression files in the source tree; the failing sequence is printed instead.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(4))]

    #[test]
    fn manual_compaction_keeps_exactly_what_the_retention_model_says(
        ops in prop::collection::vec(op_strategy(), 1..120)
    ) {
        let mut harness = Harness::new(Disk::sim(), options(), true);
        harness.run(&ops);
    }
}

proptest! {
    #![proptest_config(config(1))]

    #[test]
    fn background_compaction_racing_with_operations_keeps_the_invariants(
        keep_last in 1..=5usize,
        // Real files and syncs: shorter sequences keep the run short.
        ops in prop::collection::vec(op_strategy(), 1..60)
    ) {
        let options = small_segments()
            .retention(Retention::default().keep_last(keep_last))
            .auto_compact(AutoCompact::default().segments(2));
        let mut harness = Harness::new(Disk::real(), options, false);
        harness.run(&ops);
    }
}

/// The model test above must reach the interesting cases: compactions that drop checkpoints,
/// of several segments. A fixed sequence makes sure it does, whatever the random cases do.
#[test]
fn a_fixed_sequence_compacts_several_segments_and_drops_history() {
    let mut harness = Harness::new(Disk::sim(), options(), true);
    let mut ops = Vec::new();
    for i in 0..40 {
        ops.push(Op::Save {
            job: i % 3,
            pad: 10_000,
            phase: (i % 3) as u8,
        });
        if i % 7 == 0 {
            ops.push(Op::StartRun(i % 4));
        }
    }
    ops.push(Op::Delete(1));
    ops.push(Op::Save {
        job: 1,
        pad: 0,
        phase: 0,
    });
    ops.push(Op::Compact {
        keep_last: 5,
        age: Age::Unlimited,
        cap: None,
    });
    ops.push(Op::Reopen);
    // A limit that leaves the compacted segment 12 KiB: the oldest history goes first.
    ops.push(Op::Compact {
        keep_last: 5,
        age: Age::Unlimited,
        cap: Some(12 * 1024),
    });
    ops.push(Op::Compact {
        keep_last: 1,
        age: Age::Zero,
        cap: None,
    });
    harness.run(&ops);
    assert!(harness.compactions >= 1, "nothing was compacted");
    let store = harness.store();
    assert!(store.segment_count() >= 2);
    // Job 0 saved 14 checkpoints; after keep_last 1 and max_age zero only a few remain.
    let alpha = history(store, "alpha");
    assert!(alpha.len() < 14, "{:?}", seqs(&alpha));
}

/// Readers open the store while a writer saves and compacts in the background: every open
/// must succeed and show the job. A reader can find the slot of the record being written still
/// blank, then a later record already written after it, which looks like `DurableRecordsLost`
/// (about 3 opens in 2,000 without compaction, ten times as often during compactions); a
/// read-only open therefore looks again before it believes damage.
#[test]
fn read_only_opens_racing_saves_and_compactions_never_report_damage() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let dir = tempfile::tempdir().expect("tempdir");
    let options = small_segments().auto_compact(AutoCompact::default().segments(2));
    let store = Store::open_with(dir.path(), options.clone()).expect("open");
    store.save("a", "p", &json!({"i": 0})).expect("save");
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, path) = (stop.clone(), dir.path().to_path_buf());
        std::thread::spawn(move || -> Result<u64, String> {
            let mut opens = 0;
            while !stop.load(Ordering::Relaxed) {
                let reader = Store::open_read_only_with(&path, options.clone())
                    .map_err(|e| format!("open {opens} failed: {e}"))?;
                let latest = reader.latest("a").map_err(|e| e.to_string())?;
                if latest.is_none() {
                    return Err(format!("open {opens} shows no checkpoint"));
                }
                opens += 1;
            }
            Ok(opens)
        })
    };
    let pad = "x".repeat(8000);
    for i in 1..=3000u64 {
        store
            .save("a", "p", &json!({"i": i, "pad": pad}))
            .expect("save");
        if reader.is_finished() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let opens = reader.join().expect("reader thread");
    assert!(opens.is_ok(), "{opens:?}");
}
