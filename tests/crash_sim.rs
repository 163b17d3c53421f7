//! Exhaustive crash tests on the simulated disk: a workload of saves (with segment rollovers
//! and reopens) runs on a `SimDisk`; after every write, sync and directory operation the disk
//! is crashed in several ways (unsynced data lost, kept, torn by sector, torn by page), the
//! store is reopened on the crashed disk, and its state is checked against a model:
//!
//! - the store opens in the default recovery mode;
//! - it holds exactly the first P saves of the workload, P at least the number of saves that
//!   had returned Ok (all durable), at most one more (the save in flight);
//! - if recovery changed any byte, its report says what it found;
//! - the recovered store takes new saves and reopens clean.
//!
//! Seeded and reproducible: set `CAIRN_CRASH_SEED` and `CAIRN_CRASH_SAVES` to rerun a failure;
//! `CAIRN_CRASH_SAVES` also makes a longer run.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use cairn::testing::{self, CrashMode, SimDisk, Step};
use cairn::{Options, Store};
use serde_json::{Value, json};

const DIR: &str = "/sim/store";
const MODES: [CrashMode; 4] = [
    CrashMode::LoseUnsynced,
    CrashMode::KeepUnsynced,
    CrashMode::TornSectors,
    CrashMode::TornPages,
];

fn options() -> Options {
    Options::default().segment_size(64 * 1024)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One save of the workload.
#[derive(Debug, Clone, PartialEq)]
struct Save {
    job: String,
    data: Value,
}

/// What the workload has done so far, as the crash hook sees it.
#[derive(Debug, Default)]
struct Model {
    /// Saves that returned Ok, with their sequence numbers.
    acked: Vec<(u64, Save)>,
    /// The save being performed, if any.
    in_flight: Option<Save>,
}

fn workload_save(i: u64, rng: &mut u64) -> Save {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    let pad = (*rng % 600) as usize;
    Save {
        job: format!("job{}", *rng % 3),
        data: json!({"i": i, "cursor": format!("c{i}"), "pad": "x".repeat(pad)}),
    }
}

/// Every checkpoint in the store, ordered by sequence number.
fn contents(store: &Store) -> Vec<(u64, Save)> {
    let mut all = Vec::new();
    for job in store.jobs().unwrap() {
        for checkpoint in store.history(&job.job).unwrap() {
            all.push((
                checkpoint.seq,
                Save {
                    job: checkpoint.job,
                    data: checkpoint.data,
                },
            ));
        }
    }
    all.sort_by_key(|(seq, _)| *seq);
    all
}

fn segment_bytes(disk: &SimDisk) -> Vec<(PathBuf, Vec<u8>)> {
    disk.file_names()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .map(|p| {
            let bytes = disk.read_file(&p).unwrap_or_default();
            (p, bytes)
        })
        .collect()
}

/// Opens the crashed disk and checks it against the model. Panics with `context` on failure.
fn check_crash_state(crashed: &SimDisk, model: &Model, context: &str) {
    let dir = Path::new(DIR);
    let before = segment_bytes(crashed);
    let store = testing::open(crashed, dir, options(), false)
        .unwrap_or_else(|e| panic!("{context}: the crashed store does not open: {e}"));
    let found = contents(&store);
    let acked = model.acked.len();
    assert!(
        found.len() >= acked,
        "{context}: {} saves acknowledged, {} found",
        acked,
        found.len()
    );
    assert_eq!(
        &found[..acked],
        &model.acked[..],
        "{context}: acknowledged saves differ"
    );
    match (found.len() - acked, &model.in_flight) {
        (0, _) => {}
        (1, Some(save)) => assert_eq!(
            &found[acked].1, save,
            "{context}: the save in flight is wrong"
        ),
        (extra, _) => panic!("{context}: {extra} saves found that were never made"),
    }
    let after = segment_bytes(crashed);
    let report = store.recovery_report().clone();
    let changed = before.iter().any(|file| !after.contains(file));
    if changed {
        let removed_or_cut = !report.findings.is_empty() || !report.notes.is_empty();
        assert!(
            removed_or_cut,
            "{context}: recovery changed bytes but reported nothing: {report:?}"
        );
    }
    let seq = store
        .save("after", "p", &json!("crash"))
        .unwrap_or_else(|e| panic!("{context}: save after recovery: {e}"));
    assert!(
        seq > found.last().map_or(0, |f| f.0),
        "{context}: sequence numbers must keep increasing"
    );
    drop(store);
    let again = testing::open(crashed, dir, options(), false).unwrap();
    assert!(
        again.recovery_report().is_clean(),
        "{context}: second open not clean: {:?}",
        again.recovery_report()
    );
    assert_eq!(again.last_seq(), seq, "{context}");
}

#[test]
fn every_crash_point_recovers_a_prefix_holding_every_acknowledged_save() {
    let seed = env_u64("CAIRN_CRASH_SEED", 0xc0ffee);
    let saves = env_u64("CAIRN_CRASH_SAVES", 1300);
    let disk = SimDisk::new();
    let model = Arc::new(Mutex::new(Model::default()));
    let explored = Arc::new(Mutex::new(0u64));
    {
        let model = model.clone();
        let explored = explored.clone();
        disk.set_hook(move |disk: &SimDisk, step: Step| {
            let model = model.lock().unwrap();
            for (variant, mode) in MODES.iter().enumerate() {
                let step_no = disk.steps();
                let crash_seed = seed ^ (step_no << 8) ^ variant as u64;
                let crashed = disk.crash(*mode, crash_seed);
                let context = format!(
                    "seed {seed} step {step_no} ({step:?}) mode {mode:?} crash seed {crash_seed}, \
                     {} acked, in flight {:?}",
                    model.acked.len(),
                    model.in_flight.as_ref().map(|s| &s.job)
                );
                check_crash_state(&crashed, &model, &context);
                *explored.lock().unwrap() += 1;
            }
        });
    }
    let mut rng = seed | 1;
    let mut store = Some(testing::open(&disk, Path::new(DIR), options(), false).unwrap());
    for i in 0..saves {
        if i % 250 == 249 {
            // A clean close and reopen in the middle of the workload.
            drop(store.take());
            store = Some(testing::open(&disk, Path::new(DIR), options(), false).unwrap());
        }
        let save = workload_save(i, &mut rng);
        model.lock().unwrap().in_flight = Some(save.clone());
        let seq = store
            .as_ref()
            .unwrap()
            .save(&save.job, "extract", &save.data)
            .unwrap();
        let mut model = model.lock().unwrap();
        model.in_flight = None;
        model.acked.push((seq, save));
    }
    disk.clear_hook();
    let store = store.unwrap();
    assert!(
        store.segment_count() >= 5,
        "the workload must roll over segments: {}",
        store.segment_count()
    );
    let explored = *explored.lock().unwrap();
    eprintln!(
        "crash states explored: {explored} (seed {seed}, {saves} saves, {} segments)",
        store.segment_count()
    );
    assert!(
        explored >= 10_000 || saves < 1300,
        "CI must explore at least 10,000 crash states, explored {explored}"
    );
}
