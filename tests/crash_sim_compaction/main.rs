//! Crash at every step of a compaction, on the simulated disk.
//!
//! A store with several sealed segments, checkpoints and job events of several jobs, and
//! deleted jobs (one deleted in a sealed segment, one deleted and saved again, one deleted in
//! the segment being written) is compacted. After every write, sync, creation, rename, removal
//! and directory sync of the compaction (sealing the segment being written, which an explicit
//! compaction does first, included), the disk is crashed in every mode (unsynced data lost,
//! kept, torn by sector, torn by page; several seeds each, which also pick how many pending
//! directory operations survive), reopened by a writer in the default recovery mode, and
//! checked:
//!
//! - it opens, and every job's latest checkpoint and state are what the store showed before
//!   the crash (timestamps included); deleted jobs stay deleted;
//! - the history of every job is the full history from before the compaction, or exactly what
//!   the same compaction leaves when nothing crashes, for all jobs at once: the old set before
//!   the rename that commits the compaction, the new set once the directory sync after it
//!   returned, never a mix;
//! - when the compacted segment is in place and replaced segments are still there, recovery
//!   reports them as superseded and removes them; a leftover `.seg.compacting` (or
//!   `.seg.creating`, from the seal) is reported and removed; nothing is found but a torn tail;
//! - a new save works and gets a sequence number above every earlier one, and a second reopen
//!   shows the same store plus that save, clean.
//!
//! The same runs again with saves, job events and a deletion made *during* the compaction (at
//! each of its steps, some of them rolling the log over to a new segment), and with saves after
//! it whose own steps are crashed too: everything acknowledged survives. And once more on the
//! format 1 fixture store, whose records the compaction rewrites in the current format.
//!
//! Seeded and reproducible: a failure prints the scenario, seed, step and crash seed;
//! `CAIRN_COMPACT_CRASH_SEED` changes the workload.

#[path = "../common/mod.rs"]
mod common;
mod explore;
mod view;

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn::testing::{CrashMode, SimDisk, Step};
use cairn::{ErrorContext, Retention, Store};
use serde_json::{Value, json};

use common::files::segment_id;
use common::options;
use common::rng::{env_u64, xorshift};
use common::sim;
use explore::{InFlight, Phase, Shared, lock};
use view::{Reference, View};

/// Every job of the workloads. `gone` is deleted in a sealed segment, `reborn` is deleted and
/// saved again, `late` is deleted in the segment being written; `j3` is deleted (and saved
/// again) while the compaction runs, in the scenarios that do something meanwhile. The last
/// two are the jobs of the format 1 fixture store.
const JOBS: [&str; 9] = [
    "j0",
    "j1",
    "j2",
    "j3",
    "gone",
    "reborn",
    "late",
    "github_sync",
    "jira_sync",
];
/// Crash modes, and how many seeds of each per step (a seed also picks how many pending
/// directory operations survive).
const CRASHES: [(CrashMode, u64); 4] = [
    (CrashMode::LoseUnsynced, 2),
    (CrashMode::KeepUnsynced, 2),
    (CrashMode::TornSectors, 3),
    (CrashMode::TornPages, 3),
];
/// The same modes with one seed each, for scenarios with many steps.
const FEWER_CRASHES: [(CrashMode, u64); 4] = [
    (CrashMode::LoseUnsynced, 1),
    (CrashMode::KeepUnsynced, 1),
    (CrashMode::TornSectors, 1),
    (CrashMode::TornPages, 1),
];
const WORKLOAD_OPS: u64 = 160;
/// Saves made after the compaction, each crashed at every step.
const SAVES_AFTER: u64 = 6;

fn open(disk: &SimDisk) -> cairn::Result<Store> {
    sim::open(disk, options())
}

fn data(job: &str, i: u64, pad: usize) -> Value {
    json!({"job": job, "i": i, "pad": "x".repeat(pad)})
}

/// Saves, job events and deletions over several segments; a deletion in the segment being
/// written last. With `pre_compact`, a compaction in the middle, so that the one under test
/// also replaces an earlier compacted segment.
fn build_workload(store: &Store, seed: u64, pre_compact: bool) {
    for job in JOBS {
        store.save(job, "p0", &data(job, 0, 0)).unwrap();
    }
    let mut rng = seed | 1;
    for i in 1..=WORKLOAD_OPS {
        let r = xorshift(&mut rng);
        let mut job = JOBS[(r % JOBS.len() as u64) as usize];
        if job == "gone" && i > 30 {
            job = "j0";
        }
        match (r >> 8) % 12 {
            0 => {
                store.start_run(job).unwrap();
            }
            1 => {
                let error = format!("error {i}");
                store
                    .fail_run(job, &error, ErrorContext::recoverable())
                    .unwrap();
            }
            2 => {
                store.succeed_run(job).unwrap();
            }
            3 if i.is_multiple_of(4) => {
                store
                    .clear_checkpoint(job, &format!("restart {i}"))
                    .unwrap();
            }
            _ => {
                let pad = ((r >> 16) % 6000) as usize;
                let phase = format!("p{}", i % 3);
                store.save(job, &phase, &data(job, i, pad)).unwrap();
            }
        }
        if i == 30 {
            assert!(store.delete_job("gone", "retired").unwrap());
        }
        if i == 40 {
            assert!(store.delete_job("reborn", "start over").unwrap());
        }
        if pre_compact && i == 50 {
            let report = store
                .compact_with(&Retention::default().keep_last(2))
                .unwrap();
            assert!(report.compacted, "{report:?}");
        }
    }
    assert!(store.delete_job("late", "retired late").unwrap());
}

/// The store a scenario compacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Workload {
    /// `build_workload`, compacted once in the middle or not.
    Generated { pre_compact: bool },
    /// The format 1 fixture store (`tests/fixtures/format-v1`): compaction rewrites its
    /// records in the current format.
    FormatV1,
}

#[derive(Debug, Clone, Copy)]
struct Scenario {
    name: &'static str,
    retention: Retention,
    workload: Workload,
    /// Saves, events and a deletion at the compaction's steps.
    concurrent: bool,
}

impl Scenario {
    /// The disk and the store, ready to be compacted.
    fn build(&self, seed: u64) -> (SimDisk, Store) {
        let disk = SimDisk::new();
        match self.workload {
            Workload::Generated { pre_compact } => {
                let store = open(&disk).unwrap();
                build_workload(&store, seed, pre_compact);
                (disk, store)
            }
            Workload::FormatV1 => {
                // A writer creates the directory; the fixture's files then replace its own.
                drop(open(&disk).unwrap());
                let fixture =
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1");
                for entry in std::fs::read_dir(fixture).unwrap() {
                    let entry = entry.unwrap();
                    let bytes = std::fs::read(entry.path()).unwrap();
                    disk.overwrite_file(&Path::new(sim::DIR).join(entry.file_name()), bytes);
                }
                let store = open(&disk).unwrap();
                assert!(store.recovery_report().is_clean());
                (disk, store)
            }
        }
    }

    /// Jobs the saves after the compaction go to (they exist before it).
    fn jobs_after(&self) -> [&'static str; 2] {
        match self.workload {
            Workload::Generated { .. } => ["j0", "j1"],
            Workload::FormatV1 => ["github_sync", "jira_sync"],
        }
    }

    /// Keeping every checkpoint makes a step per checkpoint: fewer seeds each keeps the run
    /// short.
    fn crashes(&self) -> [(CrashMode, u64); 4] {
        if self.retention.get_keep_last() > 100 {
            FEWER_CRASHES
        } else {
            CRASHES
        }
    }

    fn min_segments(&self) -> usize {
        match self.workload {
            Workload::Generated { .. } => 5,
            Workload::FormatV1 => 3,
        }
    }
}

/// A clean run of the scenario's compaction, without crashes or concurrent operations (those
/// start only once the compaction has decided what to keep, so they do not change it).
fn reference_run(scenario: &Scenario, seed: u64) -> (Reference, View) {
    let (disk, store) = scenario.build(seed);
    let before = View::of(&store);
    let report = store.compact_with(&scenario.retention).unwrap();
    assert!(report.compacted, "{}: {report:?}", scenario.name);
    let after = View::of(&store);
    let kept = after
        .histories
        .values()
        .flatten()
        .map(|c| c.seq)
        .filter(|&seq| seq <= report.upto_seq)
        .collect();
    let compacted_id = disk
        .file_names()
        .iter()
        .filter_map(|path| segment_id(path))
        .min()
        .expect("segments");
    let reference = Reference {
        upto_seq: report.upto_seq,
        kept,
        compacted_id,
        after,
    };
    (reference, before)
}

/// The workload is what the reference run compacted, and worth compacting.
fn check_workload(scenario: &Scenario, store: &Store, reference: &Reference, before: &View) {
    assert!(
        store.segment_count() >= scenario.min_segments(),
        "{}: the workload must leave several sealed segments: {}",
        scenario.name,
        store.segment_count()
    );
    let view = View::of(store);
    assert_eq!(
        view.shape(),
        before.shape(),
        "{}: the workload is not deterministic",
        scenario.name
    );
    let full_history: usize = view.histories.values().map(Vec::len).sum();
    let kept_history: usize = reference.after.histories.values().map(Vec::len).sum();
    assert!(
        kept_history < full_history || scenario.retention.get_keep_last() > 100,
        "{}: the compaction must drop history",
        scenario.name
    );
}

/// Saves after the compaction, each of their steps crashed too.
fn saves_after(scenario: &Scenario, store: &Store, shared: &Mutex<Shared>) {
    for i in 0..SAVES_AFTER {
        let job = scenario.jobs_after()[(i % 2) as usize];
        let value = data(job, 2000 + i, 9000);
        lock(shared).in_flight = Some(InFlight {
            job,
            data: value.clone(),
            latest_before: store.latest(job).unwrap(),
            state_before: store.job(job),
        });
        let seq = store.save(job, "after", &value).unwrap();
        let mut shared = lock(shared);
        shared.in_flight = None;
        shared.acked_seq = seq;
    }
}

/// Runs one scenario; returns the crash states explored.
fn run_scenario(scenario: Scenario, seed: u64) -> u64 {
    let (reference, reference_before) = reference_run(&scenario, seed);
    let (disk, store) = scenario.build(seed);
    let store = Arc::new(store);
    check_workload(&scenario, &store, &reference, &reference_before);
    let shared = Shared::new(store.clone(), scenario, seed, reference.clone());
    let shared = Arc::new(Mutex::new(shared));
    {
        let shared = shared.clone();
        disk.set_hook(move |disk: &SimDisk, step: Step| lock(&shared).on_step(disk, step));
    }
    let report = store.compact_with(&scenario.retention).unwrap();
    {
        let mut shared = lock(&shared);
        shared.in_compaction = false;
        assert_eq!(shared.phase, Phase::Committed, "{}", scenario.name);
        assert_eq!(report.upto_seq, reference.upto_seq, "{}", scenario.name);
        if !scenario.concurrent {
            let after = View::of(&store);
            assert_eq!(after.shape(), reference.after.shape(), "{}", scenario.name);
        } else {
            assert!(shared.concurrent_done >= 4, "{}", scenario.name);
        }
    }
    saves_after(&scenario, &store, &shared);
    disk.clear_hook();
    let explored = {
        let mut shared = lock(&shared);
        shared.store = None;
        shared.explored
    };
    // Nothing acknowledged was lost on the live store either, and it reopens clean.
    let live = View::of(&store);
    drop(store);
    let reopened = open(&disk).unwrap();
    assert!(
        reopened.recovery_report().is_clean(),
        "{}: {:?}",
        scenario.name,
        reopened.recovery_report()
    );
    let found = View::of(&reopened);
    assert!(
        found == live,
        "{}: reopen differs: {:?} vs {:?}",
        scenario.name,
        found.shape(),
        live.shape()
    );
    explored
}

fn scenarios() -> Vec<Scenario> {
    let retentions = [
        ("keep-2", Retention::default().keep_last(2)),
        (
            "latest-only",
            Retention::default().keep_last(1).max_age(Duration::ZERO),
        ),
        ("keep-all", Retention::default().keep_last(100_000)),
    ];
    let mut scenarios = Vec::new();
    for (name, retention) in retentions {
        for pre_compact in [false, true] {
            for concurrent in [false, true] {
                scenarios.push(Scenario {
                    name,
                    retention,
                    workload: Workload::Generated { pre_compact },
                    concurrent,
                });
            }
        }
    }
    scenarios.push(Scenario {
        name: "format-1-keep-3",
        retention: Retention::default().keep_last(3),
        workload: Workload::FormatV1,
        concurrent: false,
    });
    scenarios
}

#[test]
fn a_crash_at_any_step_of_a_compaction_leaves_the_old_or_the_new_store() {
    let seed = env_u64("CAIRN_COMPACT_CRASH_SEED").unwrap_or(0x5eed_c0de);
    let started = Instant::now();
    let mut explored = 0;
    for scenario in scenarios() {
        let states = run_scenario(scenario, seed);
        eprintln!(
            "{} ({:?}, operations during: {}): {states} crash states",
            scenario.name, scenario.workload, scenario.concurrent
        );
        explored += states;
    }
    eprintln!(
        "compaction crash states explored: {explored} (seed {seed}) in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(explored >= 3000, "explored only {explored} crash states");
}
