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

use std::path::Path;
use std::time::Duration;

use cairn::testing::{self, CrashMode, Fault, SimDisk};
use cairn::{Checkpoint, Error, ErrorContext, JobEvent, JobState, Options, RecoveryMode, Store};
use cairn::{Result as CairnResult, Trigger};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::image;
use super::input::Input;

const MAX_OPS: usize = 200;
const MAX_PAD_BYTES: usize = 4000;
const JOBS: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
const CRASH_MODES: [CrashMode; 4] = [
    CrashMode::LoseUnsynced,
    CrashMode::KeepUnsynced,
    CrashMode::TornSectors,
    CrashMode::TornPages,
];

/// What one write put in the log, as the model remembers it.
#[derive(Debug, Clone, PartialEq)]
enum Write {
    Save {
        phase: &'static str,
        trigger: Trigger,
        data: Value,
    },
    Event(JobEvent),
}

impl Write {
    /// The event the job state folds for this write.
    fn event(&self) -> JobEvent {
        match self {
            Write::Save { phase, trigger, .. } => JobEvent::CheckpointSaved {
                phase: (*phase).to_string(),
                trigger: *trigger,
            },
            Write::Event(event) => event.clone(),
        }
    }

    fn is_delete(&self) -> bool {
        matches!(self, Write::Event(JobEvent::JobDeleted { .. }))
    }
}

/// The checkpoints a store holds after the durable writes of `log`, in order: every durable
/// save but those of a job deleted after them.
fn visible(log: &[(Op, State)]) -> Vec<Saved<'_>> {
    let mut saves: Vec<Saved> = Vec::new();
    for (op, state) in log {
        if op.write.is_delete() && matches!(state, State::Durable { .. }) {
            saves.retain(|saved| saved.job != op.job);
        } else if let Some(saved) = Saved::of_op(op, state) {
            saves.push(saved);
        }
    }
    saves
}

#[derive(Debug, Clone, PartialEq)]
struct Op {
    job: &'static str,
    write: Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the log for good, with the sequence number and time the store gave it.
    Durable { seq: u64, at: DateTime<Utc> },
    /// A failed write that may or may not be in the log.
    Undecided,
}

/// A checkpoint as the model and the store can both describe it.
#[derive(Debug, Clone, PartialEq)]
struct Saved<'a> {
    seq: u64,
    job: &'a str,
    phase: &'a str,
    trigger: Option<Trigger>,
    version: u32,
    data: &'a Value,
    at: DateTime<Utc>,
}

impl<'a> Saved<'a> {
    fn of_checkpoint(c: &'a Checkpoint) -> Self {
        Saved {
            seq: c.seq,
            job: &c.job,
            phase: &c.phase,
            trigger: c.trigger,
            version: c.version,
            data: &c.data,
            at: c.at,
        }
    }

    /// The checkpoint `op` wrote, if it is a durable save.
    fn of_op(op: &'a Op, state: &State) -> Option<Self> {
        match (&op.write, state) {
            (
                Write::Save {
                    phase,
                    trigger,
                    data,
                },
                State::Durable { seq, at },
            ) => Some(Saved {
                seq: *seq,
                job: op.job,
                phase,
                trigger: Some(*trigger),
                // No job type is registered, so every checkpoint is version 1.
                version: 1,
                data,
                at: *at,
            }),
            _ => None,
        }
    }
}

/// What a store returns: every checkpoint, by sequence number, and the state of each of
/// [`JOBS`].
struct Found {
    checkpoints: Vec<Checkpoint>,
    states: Vec<Option<JobState>>,
}

impl Found {
    fn state(&self, job: &str) -> Option<&JobState> {
        let i = JOBS.iter().position(|j| *j == job).expect("one of JOBS");
        self.states[i].as_ref()
    }
}

/// The state of `job` folded from the durable writes of `log`: what `Store::job` must return.
fn fold(log: &[(Op, State)], job: &str) -> Option<JobState> {
    let mut state: Option<JobState> = None;
    for (op, op_state) in log.iter().filter(|(op, _)| op.job == job) {
        if let State::Durable { seq, at } = op_state {
            if op.write.is_delete() {
                // The store forgets a deleted job: a later write starts a new one.
                state = None;
                continue;
            }
            let state = state.get_or_insert_with(|| JobState::new(job));
            state.apply(*seq, *at, &op.write.event());
        }
    }
    state
}

#[derive(Debug, Default)]
struct Model {
    log: Vec<(Op, State)>,
    /// A write failed in a way that poisons the store; later writes must be refused.
    poisoned: bool,
    /// Faults were injected and may still be armed.
    faults_armed: bool,
    writes_made: u64,
}

impl Model {
    fn last_durable_seq(&self) -> u64 {
        self.log
            .iter()
            .filter_map(|(_, state)| match state {
                State::Durable { seq, .. } => Some(*seq),
                State::Undecided => None,
            })
            .max()
            .unwrap_or(0)
    }

    /// Checks what a store returns against the model: every durable save is there with its
    /// number, the undecided write may be, nothing else is; every job's state is the fold of
    /// its durable writes (plus the undecided one, if the store has it). With `decide`, the
    /// undecided write becomes durable or is dropped, as found.
    fn reconcile(&mut self, found: &Found, decide: bool, context: &str) {
        let mut settled = self.log.clone();
        // A poisoning failure is followed by refusals only, until an open decides it: the
        // undecided write, if any, is the last.
        let undecided = match settled.last() {
            Some((_, State::Undecided)) => settled.pop().map(|(op, _)| op),
            _ => None,
        };
        assert!(
            settled.iter().all(|(_, s)| *s != State::Undecided),
            "model: an undecided write before the last"
        );
        if let Some(op) = undecided {
            let state = self.find(&settled, &op, found, context);
            if tracing() {
                eprintln!(
                    "  undecided {} of {}: {state:?}",
                    op.write.event().kind(),
                    op.job
                );
            }
            if let Some(state) = state {
                settled.push((op, state));
            }
        }
        let expected = visible(&settled);
        let got: Vec<Saved> = found.checkpoints.iter().map(Saved::of_checkpoint).collect();
        for (i, want) in expected.iter().enumerate() {
            assert_eq!(
                got.get(i),
                Some(want),
                "{context}: durable save {} lost or changed",
                want.seq
            );
        }
        let extra = got.get(expected.len()..).unwrap_or_default();
        assert!(
            extra.is_empty(),
            "{context}: saves found that were never made: {extra:?}"
        );
        for job in JOBS {
            assert_eq!(
                found.state(job),
                fold(&settled, job).as_ref(),
                "{context}: the state of job {job} is not the fold of its durable writes"
            );
        }
        if decide {
            self.log = settled;
        }
    }

    /// Whether the store holds the undecided write `op`, after the `settled` ones: `Some` with
    /// its sequence number and time when it does.
    fn find(
        &self,
        settled: &[(Op, State)],
        op: &Op,
        found: &Found,
        context: &str,
    ) -> Option<State> {
        let (seq, at) = match &op.write {
            Write::Save { .. } => {
                let saves = visible(settled).len();
                let last = found.checkpoints.get(saves)?;
                let candidate = Saved::of_op(
                    op,
                    &State::Durable {
                        seq: last.seq,
                        at: last.at,
                    },
                );
                if candidate.as_ref() != Some(&Saved::of_checkpoint(last)) {
                    // Not this save: reconcile reports it as a save never made.
                    return None;
                }
                (last.seq, last.at)
            }
            Write::Event(JobEvent::JobDeleted { .. }) => {
                // Written only for a job the store had: it is there if the job is gone. Its
                // number is not known (the job's state is gone with it), only that it follows
                // the durable writes.
                if found.state(op.job).is_some() {
                    return None;
                }
                (self.last_durable_seq() + 1, DateTime::UNIX_EPOCH)
            }
            Write::Event(_) => {
                let before = fold(settled, op.job).map_or(0, |s| s.events_applied);
                let state = found.state(op.job)?;
                if state.events_applied != before + 1 {
                    // Not there (or something else is: reconcile reports the difference).
                    return None;
                }
                let seq = state.last_seq.expect("a state with events has a last_seq");
                let at = state.updated_at.expect("a state with events was updated");
                (seq, at)
            }
        };
        assert!(
            seq > self.last_durable_seq(),
            "{context}: the undecided write was found with sequence number {seq}, not after \
             the durable ones ({})",
            self.last_durable_seq()
        );
        Some(State::Durable { seq, at })
    }

    /// Records the outcome of `op` in the model. `Ok(seq)`: acknowledged as `seq`, which must
    /// be new; its time is the one the live store applied, and the live state of its job must
    /// then be the model's fold. `Err`: allowed only with faults armed, and of a kind that
    /// either poisons (the write is undecided) or leaves nothing.
    fn settle(&mut self, store: &Store, op: Op, result: CairnResult<u64>, context: &str) {
        let e = match result {
            Ok(seq) => {
                assert!(
                    !self.poisoned,
                    "{context}: a poisoned store acknowledged write {seq}"
                );
                assert!(
                    seq > self.last_durable_seq(),
                    "{context}: sequence number {seq} reused"
                );
                let live = store.job(op.job);
                let at = if op.write.is_delete() {
                    // A deleted job has no state left to take the time from (nor needs one).
                    DateTime::UNIX_EPOCH
                } else {
                    live.as_ref()
                        .filter(|state| state.last_seq == Some(seq))
                        .and_then(|state| state.updated_at)
                        .unwrap_or_else(|| {
                            panic!("{context}: write {seq} not in the live state {live:?}")
                        })
                };
                let job = op.job;
                self.log.push((op, State::Durable { seq, at }));
                assert_eq!(
                    live,
                    fold(&self.log, job),
                    "{context}: the live state of {job} is not the fold of its writes"
                );
                return;
            }
            Err(e) => e,
        };
        assert!(
            self.faults_armed,
            "{context}: a write failed without a fault: {e}"
        );
        // A sync that found no room (ENOSPC) is `DiskFull` and poisons; a full disk when
        // creating a segment is `DiskFull` and leaves nothing.
        let full_at_sync =
            matches!(&e, Error::DiskFull { .. }) && store.metrics().poisoned.is_some();
        let poisons = full_at_sync
            || matches!(
                &e,
                Error::Poisoned { .. }
                    | Error::Io {
                        op: "write record" | "write mark record",
                        ..
                    }
            );
        let clean = (matches!(&e, Error::DiskFull { .. }) && !full_at_sync)
            || matches!(
                &e,
                Error::Io {
                    op: "create segment"
                        | "write segment header"
                        | "sync new segment"
                        | "rename new segment"
                        | "sync directory",
                    ..
                }
            );
        assert!(poisons || clean, "{context}: unexpected error {e:?}");
        if self.poisoned {
            assert!(
                matches!(e, Error::Poisoned { .. }),
                "{context}: poisoned, yet {e:?}"
            );
        } else if poisons {
            self.poisoned = true;
            self.log.push((op, State::Undecided));
        }
    }

    /// The latest durable save of `job`, cleared or not: what `Store::latest` returns while
    /// nothing is undecided.
    fn latest(&self, job: &str) -> Option<Saved<'_>> {
        visible(&self.log)
            .into_iter()
            .rfind(|saved| saved.job == job)
    }
}

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
        Err(e) => {
            assert!(
                model.faults_armed || model.poisoned,
                "{context}: compact failed without a fault: {e}"
            );
            if model.poisoned {
                assert!(
                    matches!(e, Error::Poisoned { .. }),
                    "{context}: poisoned, yet {e:?}"
                );
            } else {
                // The seal of the segment being written (a rollover) or the sync of the log
                // (`DiskFull` when that sync found no room).
                let full_at_sync = matches!(&e, Error::DiskFull { .. }) && poisoned;
                let poisons = full_at_sync
                    || matches!(&e, Error::Poisoned { .. })
                    || matches!(
                        &e,
                        Error::Io {
                            op: "write record" | "write mark record",
                            ..
                        }
                    );
                // Creating the next segment, or writing the compacted one before its rename.
                let clean = (matches!(&e, Error::DiskFull { .. }) && !full_at_sync)
                    || matches!(
                        &e,
                        Error::Io {
                            op: "create segment"
                                | "write segment header"
                                | "write records of"
                                | "sync new segment"
                                | "rename new segment",
                            ..
                        }
                    );
                // A rollover's (clean: the new segment is removed again) or the compaction's,
                // after the rename or the removal of the replaced segments (poisons).
                let either = matches!(
                    &e,
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
        }
    }
    model.reconcile(&found(store, context), false, context);
    let reader = testing::open(disk, Path::new(image::DIR), options(), true)
        .unwrap_or_else(|e| panic!("{context}: a reader does not open after compact: {e}"));
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

pub fn check_ops(data: &[u8]) {
    let mut input = Input::new(data);
    let mut disk = SimDisk::new();
    let mut model = Model::default();
    let mut store = open_writer(&disk, &mut model, "first open").expect("a new store opens");
    for step in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        let context = format!("op {step} ({op})");
        if tracing() {
            eprintln!(
                "{context}: writes made {}, poisoned {}",
                model.writes_made, model.poisoned
            );
        }
        match op % 8 {
            0 | 1 => save(&store, &mut model, &mut input, op, &context),
            2 | 3 => match op >> 5 {
                5 => delete(&store, &mut model, &mut input, op, &context),
                6 => {
                    input.u8();
                    compact(&store, &disk, &mut model, &context);
                }
                7 => {
                    let arg = input.u8();
                    compact(&store, &disk, &mut model, &context);
                    let context = format!("{context} compacted");
                    let Some(reopened) = crash(
                        &mut disk,
                        store,
                        &mut model,
                        arg & 3,
                        u16::from(arg >> 2),
                        &context,
                    ) else {
                        return;
                    };
                    store = reopened;
                }
                _ => event(&store, &mut model, &mut input, op, &context),
            },
            4 => {
                drop(store);
                let Some(reopened) = open_writer(&disk, &mut model, &context) else {
                    return;
                };
                store = reopened;
            }
            5 => {
                let mode = input.u8();
                let seed = input.u16();
                let Some(reopened) = crash(&mut disk, store, &mut model, mode, seed, &context)
                else {
                    return;
                };
                store = reopened;
            }
            6 => {
                let fault = fault(&mut input);
                if tracing() {
                    eprintln!("  inject {fault:?}");
                }
                disk.inject(fault);
                model.faults_armed = true;
            }
            _ => {
                model.reconcile(&found(&store, &context), false, &context);
                let reader = testing::open(&disk, Path::new(image::DIR), options(), true)
                    .unwrap_or_else(|e| panic!("{context}: a reader does not open: {e}"));
                model.reconcile(&found(&reader, &context), false, &context);
            }
        }
    }
    disk.clear_faults();
    let crashed = disk.crash(CrashMode::TornSectors, 0);
    drop(store);
    drop(open_writer(&crashed, &mut model, "final crash"));
}
