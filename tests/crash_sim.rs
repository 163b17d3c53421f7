//! Exhaustive crash tests on the simulated disk: a workload of saves and job events (with
//! segment rollovers and reopens) runs on a `SimDisk`; after every write, sync and directory operation the disk
//! is crashed in several ways (unsynced data lost, kept, torn by sector, torn by page), the
//! store is reopened on the crashed disk, and its state is checked against a model:
//!
//! - the store opens in the default recovery mode;
//! - it holds exactly the first P operations of the workload, P at least the number that had
//!   returned Ok (all durable), at most one more (the one in flight): the checkpoints match
//!   exactly, and every job's folded state equals the model's fold of the same operations;
//! - if recovery changed any byte, its report says what it found;
//! - the recovered store takes new saves and reopens clean.
//!
//! Seeded and reproducible: set `CAIRN_CRASH_SEED` and `CAIRN_CRASH_SAVES` to rerun a failure;
//! `CAIRN_CRASH_SAVES` also makes a longer run.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use cairn::testing::{CrashMode, SimDisk, Step};
use cairn::{ErrorContext, JobEvent, JobState, JobStatus, Store, Trigger};
use serde_json::{Value, json};

// Background compaction stays off: this test keeps every save in its model
// (tests/crash_sim_compaction/ crashes compactions).
use common::options;
use common::rng::{env_u64, xorshift};
use common::sim::{self, segment_images};

const MODES: [CrashMode; 4] = [
    CrashMode::LoseUnsynced,
    CrashMode::KeepUnsynced,
    CrashMode::TornSectors,
    CrashMode::TornPages,
];

/// One save of the workload.
#[derive(Debug, Clone, PartialEq)]
struct Save {
    job: String,
    data: Value,
}

/// One operation of the workload.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Save(Save),
    Event { job: String, event: JobEvent },
}

impl Op {
    fn job(&self) -> &str {
        match self {
            Op::Save(save) => &save.job,
            Op::Event { job, .. } => job,
        }
    }
}

/// What the workload has done so far, as the crash hook sees it.
#[derive(Debug, Default)]
struct Model {
    /// Operations that returned Ok, with their sequence numbers.
    acked: Vec<(u64, Op)>,
    /// The operation being performed, if any.
    in_flight: Option<Op>,
}

impl Model {
    fn acked_saves(&self) -> Vec<(u64, Save)> {
        self.acked
            .iter()
            .filter_map(|(seq, op)| match op {
                Op::Save(save) => Some((*seq, save.clone())),
                Op::Event { .. } => None,
            })
            .collect()
    }
}

fn workload_op(i: u64, rng: &mut u64) -> Op {
    let job = format!("job{}", xorshift(rng) % 3);
    let event = match xorshift(rng) % 10 {
        0 => JobEvent::RunStarted { attempt: 1 },
        1 => JobEvent::RunFailed {
            error: format!("error {i}"),
            context: ErrorContext::recoverable(),
        },
        2 => JobEvent::RunSucceeded,
        3 if i.is_multiple_of(5) => JobEvent::CheckpointCleared {
            reason: format!("restart {i}"),
        },
        _ => {
            let pad = (xorshift(rng) % 600) as usize;
            let data = json!({"i": i, "cursor": format!("c{i}"), "pad": "x".repeat(pad)});
            return Op::Save(Save { job, data });
        }
    };
    Op::Event { job, event }
}

/// The parts of a job's state that do not depend on clock readings.
type Projection = (
    JobStatus,
    u32,
    u32,
    u64,
    u64,
    u64,
    Option<(u64, String, Trigger)>,
    Option<u64>,
);

fn projection(state: &JobState) -> Projection {
    (
        state.status,
        state.retry_count,
        state.attempt,
        state.runs_started,
        state.checkpoints_saved,
        state.events_applied,
        state
            .latest_checkpoint
            .as_ref()
            .map(|c| (c.seq, c.phase.clone(), c.trigger)),
        state.cleared_checkpoint.as_ref().map(|c| c.seq),
    )
}

/// The model's fold of `ops` for `job`.
fn model_state(job: &str, ops: &[(u64, Op)]) -> JobState {
    let mut state = JobState::new(job);
    let at = chrono::DateTime::UNIX_EPOCH;
    for (seq, op) in ops.iter().filter(|(_, op)| op.job() == job) {
        match op {
            Op::Save(_) => state.apply(
                *seq,
                at,
                &JobEvent::CheckpointSaved {
                    phase: "extract".into(),
                    trigger: Trigger::Manual,
                },
            ),
            Op::Event { event, .. } => state.apply(*seq, at, event),
        }
    }
    state
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

/// Opens the crashed disk and checks it against the model. Panics with `context` on failure.
fn check_crash_state(crashed: &SimDisk, model: &Model, context: &str) {
    let before = segment_images(crashed);
    let store = sim::open(crashed, options())
        .unwrap_or_else(|e| panic!("{context}: the crashed store does not open: {e}"));
    let found = contents(&store);
    let ops = check_contents(&store, &found, model, &before, context);
    check_job_states(&store, model, &ops, context);
    check_repairs_reported(&store, &before, &segment_images(crashed), context);
    let seq = store
        .save("after", "p", &json!("crash"))
        .unwrap_or_else(|e| panic!("{context}: save after recovery: {e}"));
    assert!(
        seq > found.last().map_or(0, |f| f.0),
        "{context}: sequence numbers must keep increasing"
    );
    drop(store);
    let again = sim::open(crashed, options()).unwrap();
    assert!(
        again.recovery_report().is_clean(),
        "{context}: second open not clean: {:?}",
        again.recovery_report()
    );
    assert_eq!(again.last_seq(), seq, "{context}");
}

/// The store holds every acknowledged save, in order, and at most the save in flight besides.
/// Returns the operations the store holds.
fn check_contents(
    store: &Store,
    found: &[(u64, Save)],
    model: &Model,
    before: &[(PathBuf, Vec<u8>)],
    context: &str,
) -> Vec<(u64, Op)> {
    let acked_saves = model.acked_saves();
    let acked = acked_saves.len();
    assert!(
        found.len() >= acked,
        "{context}: {acked} saves acknowledged, {} found; files {:?}; {:?}",
        found.len(),
        before.iter().map(|(p, b)| (p, b.len())).collect::<Vec<_>>(),
        store.recovery_report()
    );
    assert_eq!(
        &found[..acked],
        &acked_saves[..],
        "{context}: acknowledged saves differ"
    );
    let mut ops = model.acked.clone();
    match (found.len() - acked, &model.in_flight) {
        (0, _) => {}
        (1, Some(Op::Save(save))) => {
            assert_eq!(
                &found[acked].1, save,
                "{context}: the save in flight is wrong"
            );
            ops.push((found[acked].0, Op::Save(save.clone())));
        }
        (extra, _) => panic!("{context}: {extra} saves found that were never made"),
    }
    ops
}

/// Every job's state is the fold of `ops`, with or without an event in flight.
fn check_job_states(store: &Store, model: &Model, ops: &[(u64, Op)], context: &str) {
    for job in ["job0", "job1", "job2"] {
        let found = store.job(job).map(|state| projection(&state));
        let expected = |ops: &[(u64, Op)]| {
            let state = model_state(job, ops);
            (state.events_applied > 0).then(|| projection(&state))
        };
        let mut with_in_flight = ops.to_vec();
        if let Some(op @ Op::Event { .. }) = &model.in_flight {
            with_in_flight.push((u64::MAX, op.clone()));
        }
        assert!(
            found == expected(ops) || found == expected(&with_in_flight),
            "{context}: state of {job} is {found:?}, expected {:?}",
            expected(ops)
        );
    }
}

/// If recovery changed any byte of a segment, its report says what it found.
fn check_repairs_reported(
    store: &Store,
    before: &[(PathBuf, Vec<u8>)],
    after: &[(PathBuf, Vec<u8>)],
    context: &str,
) {
    let report = store.recovery_report();
    let changed = before.iter().any(|file| !after.contains(file));
    if changed {
        let removed_or_cut = !report.findings.is_empty() || !report.notes.is_empty();
        assert!(
            removed_or_cut,
            "{context}: recovery changed bytes but reported nothing: {report:?}"
        );
    }
}

#[test]
fn every_crash_point_recovers_a_prefix_holding_every_acknowledged_save() {
    let seed = env_u64("CAIRN_CRASH_SEED").unwrap_or(0xc0ffee);
    let saves = env_u64("CAIRN_CRASH_SAVES").unwrap_or(1300);
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
                    model.in_flight.as_ref().map(Op::job)
                );
                check_crash_state(&crashed, &model, &context);
                *explored.lock().unwrap() += 1;
            }
        });
    }
    let mut rng = seed | 1;
    let mut store = Some(sim::open(&disk, options()).unwrap());
    for i in 0..saves {
        if i % 250 == 249 {
            // A clean close and reopen in the middle of the workload.
            drop(store.take());
            store = Some(sim::open(&disk, options()).unwrap());
        }
        let op = workload_op(i, &mut rng);
        model.lock().unwrap().in_flight = Some(op.clone());
        let store_ref = store.as_ref().unwrap();
        let seq = match &op {
            Op::Save(save) => store_ref.save(&save.job, "extract", &save.data),
            Op::Event { job, event } => store_ref.record(job, event),
        }
        .unwrap();
        let mut model = model.lock().unwrap();
        model.in_flight = None;
        model.acked.push((seq, op));
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
        "crash states explored: {explored} (seed {seed}, {saves} operations, {} segments)",
        store.segment_count()
    );
    assert!(
        explored >= 10_000 || saves < 1300,
        "CI must explore at least 10,000 crash states, explored {explored}"
    );
}
