//! Target `ops`: a sequence of operations on a store on the simulated disk, checked against a
//! model (the model test of sled's `fuzz_model.rs`, driven by the fuzzer).
//!
//! Each input byte starts an operation, and its low three bits say which:
//! - 0, 1: save a checkpoint (job from a small set in bits 3..5, phase from bit 0, trigger from
//!   bits 5..8: 0 is a plain `save`, 1 to 7 a `save_with` that trigger code), then a byte for
//!   the payload size (up to 4 KiB);
//! - 2, 3: job in bits 3..5, and bits 5..8 pick: 0 to 4 a job event (`start_run`,
//!   `fail_run`, `succeed_run`, `clear_checkpoint` or `schedule_retry`), 5 `delete_job`, 6
//!   `compact`, 7 `compact` then a crash at once; then a byte for its arguments (error
//!   context, message or reason length, retry attempt and delay; for the crash after a
//!   compaction, the [`CrashMode`] in bits 0..2 and the crash seed in bits 2..8);
//! - 4: reopen; 5: crash (a [`CrashMode`] and a seed: the disk is replaced by what a power loss
//!   would leave, and the store reopened on it); 6: inject a fault (a failed or short write, a
//!   failed sync (EIO, or ENOSPC at write-back), a full disk, at the n-th operation of its kind
//!   from now); 7: check the contents through the writer and through a read-only open.
//!
//! At most 200 operations; every input ends with a crash and a last check. Saves and events
//! both take one argument byte, so inputs written before events existed still parse into the
//! same operations (with some of their saves now events). Likewise `delete_job` and the
//! compactions took event codes 5 to 7, which used to repeat codes 0 to 2 (modulo 5): older
//! inputs parse as before, with those events now deletes and compactions.
//!
//! The model: every write (save or event) that returned `Ok` (with `Durability::Sync`) is
//! durable, with the sequence number and time the store gave it. A write that failed while
//! writing or syncing may or may not be in the log: the next writer open decides, and from then
//! on it is durable too (a writer syncs what it recovered). A write refused by a poisoned store,
//! or one that failed creating a segment, left nothing. So after every open, crash or not, the
//! store holds exactly the durable saves, in order, with their sequence numbers, and possibly the
//! undecided one: never anything else; and the state of every job (`Store::job`) is exactly the
//! fold ([`JobState::apply`]) of its durable writes, timestamps included. The live writer's
//! state is also compared with the model after every acknowledged write.
//!
//! A `delete_job` is a job event like the others (durable, or undecided when it failed), after
//! which the job is gone: no state, no checkpoints (its earlier saves leave the contents), not
//! listed; a later write starts a new job. `delete_job` of a job the store does not have
//! returns `Ok(false)` and writes nothing. A compaction changes no contents: the store keeps
//! every checkpoint ([`image::options`]), and compaction only folds job events into a snapshot
//! and rewrites the sealed segments. So after `compact`, whatever it returned, the writer and a
//! read-only open still hold exactly the model; an `Ok` leaves at most two segments (the
//! compacted one and the one being written); an error is allowed only with a fault armed, and
//! poisons the store exactly when the directory's or a sealed segment's state became unknown
//! (a failed sync after the rename, a failed seal of the segment being written), while a
//! failure before the rename leaves everything as it was. The next open decides nothing for a
//! compaction: a crash at any point of it must leave the model's contents.

mod model;

use std::path::Path;
use std::time::Duration;

use cairn::testing::{self, CrashMode, Fault, SimDisk};
use cairn::{Error, ErrorContext, JobEvent, Options, RecoveryMode, Store, Trigger};
use serde_json::json;

use super::image;
use super::input::Input;
use model::{Found, Model, Op, Write, fold};

const MAX_OPS: usize = 200;
const MAX_PAD_BYTES: usize = 4000;
const JOBS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
const CRASH_MODES: [CrashMode; 4] = [
    CrashMode::LoseUnsynced,
    CrashMode::KeepUnsynced,
    CrashMode::TornSectors,
    CrashMode::TornPages,
];

fn options() -> Options {
    image::options(RecoveryMode::TolerateTornTail)
}

/// Every checkpoint of the store and the state of every job.
fn found(store: &Store, context: &str) -> Found {
    Found {
        checkpoints: image::contents(store)
            .unwrap_or_else(|e| panic!("{context}: reads fail: {e}")),
        states: JOBS.iter().map(|job| store.job(job)).collect(),
    }
}

/// Opens a writer on `disk`, which must work (after disarming faults, if an armed fault made
/// the first try fail), and decides the undecided write. `None` when a known bug stops the
/// scenario.
fn open_writer(disk: &SimDisk, model: &mut Model, context: &str) -> Option<Store> {
    let dir = Path::new(image::DIR);
    let store = match testing::open(disk, dir, options(), false) {
        Ok(store) => store,
        Err(e) => {
            assert!(
                model.faults_armed,
                "{context}: the store does not open: {e}"
            );
            disk.clear_faults();
            model.faults_armed = false;
            testing::open(disk, dir, options(), false)
                .unwrap_or_else(|e| panic!("{context}: does not open once the disk works: {e}"))
        }
    };
    model.reconcile(&found(&store, context), true, context);
    model.poisoned = false;
    Some(store)
}

fn job_of(op: u8) -> &'static str {
    JOBS[usize::from(op >> 3) % JOBS.len()]
}

fn save(store: &Store, model: &mut Model, input: &mut Input, op: u8, context: &str) {
    let job = job_of(op);
    let phase = if op & 1 == 0 { "extract" } else { "load" };
    let pad = (usize::from(input.u8()) * 16).min(MAX_PAD_BYTES);
    let data = json!({"n": model.writes_made, "pad": "p".repeat(pad)});
    model.writes_made += 1;
    let (trigger, result) = match Trigger::from_code(op >> 5) {
        None => (Trigger::Manual, store.save(job, phase, &data)),
        Some(trigger) => (trigger, store.save_with(job, phase, &data, trigger)),
    };
    if tracing() {
        eprintln!("  save {job} {phase} {trigger:?} pad {pad}: {result:?}");
    }
    let write = Write::Save {
        phase,
        trigger,
        data,
    };
    model.settle(store, Op { job, write }, result, context);
}

/// The sequence number of the last event of `job` in the live store, for the calls that do
/// not return it.
fn live_seq(store: &Store, job: &str, context: &str) -> u64 {
    store
        .job(job)
        .and_then(|state| state.last_seq)
        .unwrap_or_else(|| panic!("{context}: an acknowledged event of {job} left no state"))
}

fn event(store: &Store, model: &mut Model, input: &mut Input, op: u8, context: &str) {
    let job = job_of(op);
    let arg = input.u8();
    let n = model.writes_made;
    model.writes_made += 1;
    // Bits 5..8 are 0 to 4 here: 5 to 7 are `delete_job` and compactions (check_ops).
    let (event, result) = match op >> 5 {
        0 => {
            let attempt = fold(&model.log, job).map_or(0, |s| s.retry_count) + 1;
            let result = store.start_run(job).map(|got| {
                assert_eq!(got, attempt, "{context}: start_run's attempt");
                live_seq(store, job, context)
            });
            (JobEvent::RunStarted { attempt }, result)
        }
        1 => {
            let mut error_context = if arg & 1 == 1 {
                ErrorContext::recoverable()
            } else {
                ErrorContext::unrecoverable()
            };
            if arg & 2 == 2 {
                error_context = error_context
                    .last_successful_operation("extract")
                    .failure_point("load");
            }
            let error = format!("run {n} failed {}", "e".repeat(usize::from(arg >> 2) * 32));
            let result = store.fail_run(job, &error, error_context.clone());
            let event = JobEvent::RunFailed {
                error,
                context: error_context,
            };
            (event, result)
        }
        2 => (JobEvent::RunSucceeded, store.succeed_run(job)),
        3 => {
            let reason = format!("restart {n} {}", "r".repeat(usize::from(arg) * 8));
            let latest = model.latest(job).map(|s| (s.seq, s.data.clone()));
            let result = store.clear_checkpoint(job, &reason).map(|reference| {
                let reference = reference.map(|c| (c.seq, c.data));
                assert_eq!(reference, latest, "{context}: clear_checkpoint's reference");
                live_seq(store, job, context)
            });
            (JobEvent::CheckpointCleared { reason }, result)
        }
        _ => {
            let attempt = u32::from(arg & 7);
            let delay_ms = u64::from(arg >> 3) * 250;
            let result = store.schedule_retry(job, attempt, Duration::from_millis(delay_ms));
            (JobEvent::RetryScheduled { attempt, delay_ms }, result)
        }
    };
    if tracing() {
        eprintln!("  {} {job} (arg {arg}): {result:?}", event.kind());
    }
    let write = Write::Event(event);
    model.settle(store, Op { job, write }, result, context);
}

/// `delete_job` of `job` (bits 3..5 of `op`), with a reason of `arg` bytes: `Ok(false)`
/// (nothing written) for a job the store does not have, else a job event like the others, after
/// which the job is gone from every read.
fn delete(store: &Store, model: &mut Model, input: &mut Input, op: u8, context: &str) {
    let job = job_of(op);
    let reason = format!("fuzz {}", "d".repeat(usize::from(input.u8()) * 8));
    model.writes_made += 1;
    let result = store.delete_job(job, &reason);
    if tracing() {
        eprintln!("  delete_job {job}: {result:?}");
    }
    let result = match result {
        Ok(false) => {
            // With a write undecided, the live store may already have it (a save written
            // whose sync failed): only a store with nothing undecided must agree.
            assert!(
                model.poisoned || fold(&model.log, job).is_none(),
                "{context}: delete_job says {job} does not exist"
            );
            return;
        }
        Ok(true) => {
            assert_eq!(
                store.job(job),
                None,
                "{context}: {job} deleted, its state left"
            );
            let latest = store.latest(job).map(|c| c.map(|c| c.seq));
            assert!(
                matches!(latest, Ok(None)),
                "{context}: {job} deleted, latest {latest:?}"
            );
            let history = store.history(job).map(|h| h.len());
            assert!(
                matches!(history, Ok(0)),
                "{context}: {job} deleted, history {history:?}"
            );
            let jobs = store.jobs().expect("jobs");
            assert!(
                jobs.iter().all(|summary| summary.job != job),
                "{context}: {job} deleted, still listed"
            );
            Ok(store.last_seq())
        }
        Err(e) => Err(e),
    };
    let write = Write::Event(JobEvent::JobDeleted { reason });
    model.settle(store, Op { job, write }, result, context);
}

/// `Store::compact`. Every checkpoint is kept ([`image::options`]), so the contents and the
/// job states do not change, whatever happens: an error only decides whether the store is
/// poisoned (a failed sync of the directory after the compacted segment was renamed into
/// place, or the seal of the segment being written failing) or not (anything before the
/// rename, which leaves the old segments as they were).
fn compact(store: &Store, disk: &SimDisk, model: &mut Model, context: &str) {
    let result = store.compact();
    let poisoned = store.metrics().poisoned.is_some();
    if tracing() {
        eprintln!(
            "  compact: {:?}, {} segments, poisoned {poisoned}",
            result
                .as_ref()
                .map(|r| (r.compacted, r.segments_before, r.segments_after)),
            store.segment_count()
        );
    }
    match result {
        Ok(report) => {
            assert!(!model.poisoned, "{context}: a poisoned store compacted");
            assert!(
                !poisoned,
                "{context}: compact succeeded and poisoned the store"
            );
            // The segment being written was sealed (if it held anything) and every sealed
            // segment folded into one: the compacted one and the new segment are left.
            let segments = store.segment_count();
            assert!(
                segments <= 2 && report.segments_after <= 2,
                "{context}: {segments} segments after a compaction: {report:?}"
            );
        }
        Err(e) => compact_failed(model, &e, poisoned, context),
    }
    check_writer_and_reader(store, disk, model, context);
}

/// `Store::compact` failed with `e`, and left the store `poisoned` or not: only with a fault
/// armed, and poisoned exactly when the failure leaves the directory's or a sealed segment's
/// state unknown.
fn compact_failed(model: &mut Model, e: &Error, poisoned: bool, context: &str) {
    assert!(
        model.faults_armed || model.poisoned,
        "{context}: compact failed without a fault: {e}"
    );
    if model.poisoned {
        assert!(
            matches!(e, Error::Poisoned { .. }),
            "{context}: poisoned, yet {e:?}"
        );
        return;
    }
    // The seal of the segment being written (a rollover) or the sync of the log (`DiskFull`
    // when that sync found no room).
    let full_at_sync = matches!(e, Error::DiskFull { .. }) && poisoned;
    let poisons = full_at_sync
        || matches!(e, Error::Poisoned { .. })
        || matches!(
            e,
            Error::Io {
                op: "write record" | "write mark record",
                ..
            }
        );
    // Creating the next segment, or writing the compacted one before its rename.
    let clean = (matches!(e, Error::DiskFull { .. }) && !full_at_sync)
        || matches!(
            e,
            Error::Io {
                op: "create segment"
                    | "write segment header"
                    | "write records of"
                    | "sync new segment"
                    | "rename new segment",
                ..
            }
        );
    // A rollover's (clean: the new segment is removed again) or the compaction's, after the
    // rename or the removal of the replaced segments (poisons).
    let either = matches!(
        e,
        Error::Io {
            op: "sync directory",
            ..
        }
    );
    assert!(
        poisons || clean || either,
        "{context}: compact: unexpected error {e:?}"
    );
    assert!(
        (!poisons || poisoned) && (!clean || !poisoned),
        "{context}: compact failed with {e:?}, poisoned: {poisoned}"
    );
    model.poisoned = poisoned;
}

/// The writer and a reader opened now both hold exactly the model.
fn check_writer_and_reader(store: &Store, disk: &SimDisk, model: &mut Model, context: &str) {
    model.reconcile(&found(store, context), false, context);
    let reader = testing::open(disk, Path::new(image::DIR), options(), true)
        .unwrap_or_else(|e| panic!("{context}: a reader does not open: {e}"));
    model.reconcile(&found(&reader, context), false, context);
}

/// Replaces the disk by what a power loss in `mode` would leave, and opens a writer on it.
/// `None` when a known bug stops the scenario.
fn crash(
    disk: &mut SimDisk,
    store: Store,
    model: &mut Model,
    mode: u8,
    seed: u16,
    context: &str,
) -> Option<Store> {
    let mode = CRASH_MODES[usize::from(mode) % CRASH_MODES.len()];
    let crashed = disk.crash(mode, u64::from(seed));
    // The old store's final sync at drop goes to the old disk: after the crash.
    drop(store);
    *disk = crashed;
    model.faults_armed = false;
    open_writer(disk, model, &format!("{context} crash {mode:?}"))
}

/// A fault: the first byte's bits 0..3 say at which operation of its kind (1 to 8), bit 3 picks
/// ENOSPC rather than EIO for a failed sync; the second byte says which kind.
fn fault(input: &mut Input) -> Fault {
    let at = input.u8();
    let n = 1 + u64::from(at % 8);
    match input.u8() % 4 {
        0 => Fault::FailWrite(n),
        1 => Fault::ShortWrite(n),
        2 if at & 8 == 8 => Fault::SyncNoSpace(n),
        2 => Fault::FailSync(n),
        _ => Fault::NoSpace(n),
    }
}

/// Set `CAIRN_FUZZ_TRACE=1` to print every operation (when reproducing a failure).
fn tracing() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("CAIRN_FUZZ_TRACE").is_some())
}

/// The scenario the fuzzer's bytes describe, on one disk.
struct Run<'a> {
    input: Input<'a>,
    disk: SimDisk,
    model: Model,
}

pub fn check_ops(data: &[u8]) {
    let mut run = Run {
        input: Input::new(data),
        disk: SimDisk::new(),
        model: Model::default(),
    };
    let mut store =
        open_writer(&run.disk, &mut run.model, "first open").expect("a new store opens");
    for step in 0..MAX_OPS {
        if run.input.is_empty() {
            break;
        }
        let op = run.input.u8();
        let context = format!("op {step} ({op})");
        if tracing() {
            eprintln!(
                "{context}: writes made {}, poisoned {}",
                run.model.writes_made, run.model.poisoned
            );
        }
        let Some(next) = run.step(store, op, &context) else {
            return;
        };
        store = next;
    }
    run.disk.clear_faults();
    let crashed = run.disk.crash(CrashMode::TornSectors, 0);
    drop(store);
    drop(open_writer(&crashed, &mut run.model, "final crash"));
}

impl Run<'_> {
    /// Runs operation `op` on `store`; returns the store to go on with, `None` when a known
    /// bug stops the scenario.
    fn step(&mut self, store: Store, op: u8, context: &str) -> Option<Store> {
        let (input, model) = (&mut self.input, &mut self.model);
        match op % 8 {
            0 | 1 => save(&store, model, input, op, context),
            2 | 3 => return self.job_op(store, op, context),
            4 => {
                drop(store);
                return open_writer(&self.disk, model, context);
            }
            5 => {
                let mode = input.u8();
                let seed = input.u16();
                return crash(&mut self.disk, store, model, mode, seed, context);
            }
            6 => {
                let fault = fault(input);
                if tracing() {
                    eprintln!("  inject {fault:?}");
                }
                self.disk.inject(fault);
                model.faults_armed = true;
            }
            _ => check_writer_and_reader(&store, &self.disk, model, context),
        }
        Some(store)
    }

    /// Codes 2 and 3: a job event, `delete_job`, or a compaction (and then a crash).
    fn job_op(&mut self, store: Store, op: u8, context: &str) -> Option<Store> {
        let (input, model) = (&mut self.input, &mut self.model);
        match op >> 5 {
            5 => delete(&store, model, input, op, context),
            6 => {
                input.u8();
                compact(&store, &self.disk, model, context);
            }
            7 => {
                let arg = input.u8();
                compact(&store, &self.disk, model, context);
                let context = format!("{context} compacted");
                let seed = u16::from(arg >> 2);
                return crash(&mut self.disk, store, model, arg & 3, seed, &context);
            }
            _ => event(&store, model, input, op, context),
        }
        Some(store)
    }
}
