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

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cairn::testing::{self, CrashMode, SimDisk, Step};
use cairn::{
    AutoCompact, Checkpoint, ErrorContext, FindingKind, JobState, Options, Retention, Store,
};
use serde_json::{Value, json};

const DIR: &str = "/sim/store";
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

fn options() -> Options {
    Options::default()
        .segment_size(64 * 1024)
        .auto_compact(AutoCompact::disabled())
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn next(rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    *rng
}

fn open(disk: &SimDisk) -> cairn::Result<Store> {
    testing::open(disk, Path::new(DIR), options(), false)
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
        let r = next(&mut rng);
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

/// What the store shows: every job's history, latest checkpoint and state, and the listing.
#[derive(Debug, Clone, PartialEq)]
struct View {
    histories: BTreeMap<String, Vec<Checkpoint>>,
    latest: BTreeMap<String, Option<Checkpoint>>,
    states: BTreeMap<String, Option<JobState>>,
    jobs: Vec<String>,
}

impl View {
    fn of(store: &Store) -> View {
        let mut view = View {
            histories: BTreeMap::new(),
            latest: BTreeMap::new(),
            states: BTreeMap::new(),
            jobs: store.jobs().unwrap().into_iter().map(|j| j.job).collect(),
        };
        for job in JOBS {
            view.histories
                .insert(job.into(), store.history(job).unwrap());
            view.latest.insert(job.into(), store.latest(job).unwrap());
            view.states.insert(job.into(), store.job(job));
        }
        view
    }

    /// Without the records above `seq` (a save in flight).
    fn upto(mut self, seq: u64) -> View {
        for history in self.histories.values_mut() {
            history.retain(|c| c.seq <= seq);
        }
        self
    }

    /// The sequence numbers of every job's history and latest checkpoint: what two runs of the
    /// same workload share (their clocks differ), and what a failure prints.
    fn shape(&self) -> BTreeMap<&str, (Vec<u64>, Option<u64>)> {
        self.histories
            .iter()
            .map(|(job, history)| {
                let seqs = history.iter().map(|c| c.seq).collect();
                let latest = self.latest[job].as_ref().map(|c| c.seq);
                (job.as_str(), (seqs, latest))
            })
            .collect()
    }

    fn max_seq(&self) -> u64 {
        self.histories
            .values()
            .flatten()
            .map(|c| c.seq)
            .max()
            .unwrap_or(0)
    }
}

/// What a clean run of the same compaction did.
#[derive(Debug, Clone)]
struct Reference {
    upto_seq: u64,
    /// Sequence numbers of the compacted range that it kept.
    kept: BTreeSet<u64>,
    /// The id the compacted segment takes.
    compacted_id: u64,
    /// The view after it.
    after: View,
}

impl Reference {
    /// The histories of `view` (taken before the compaction committed) as the compaction
    /// leaves them.
    fn compacted(&self, view: &View) -> BTreeMap<String, Vec<Checkpoint>> {
        let mut histories = view.histories.clone();
        for history in histories.values_mut() {
            history.retain(|c| c.seq > self.upto_seq || self.kept.contains(&c.seq));
        }
        histories
    }
}

/// Every job's history as sequence numbers: what failure messages print.
fn history_seqs(histories: &BTreeMap<String, Vec<Checkpoint>>) -> BTreeMap<&str, Vec<u64>> {
    histories
        .iter()
        .map(|(job, history)| (job.as_str(), history.iter().map(|c| c.seq).collect()))
        .collect()
}

fn segment_path(id: u64) -> PathBuf {
    Path::new(DIR).join(format!("{id:020}.seg"))
}

fn segment_id(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(".seg").filter(|d| d.len() == 20)?;
    digits.parse().ok()
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
                    disk.overwrite_file(&Path::new(DIR).join(entry.file_name()), bytes);
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

/// Where the compaction is, as far as a crash is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the rename of the compacted segment: a crash gives the old set.
    Old,
    /// Renamed, not yet made durable by a directory sync: either set.
    Renamed,
    /// The directory sync after the rename returned: the new set.
    Committed,
}

/// An operation made at a step of the compaction.
#[derive(Debug, Clone, Copy)]
enum Concurrent {
    Save(&'static str, usize),
    StartRun(&'static str),
    FailRun(&'static str),
    Delete(&'static str),
}

/// Cycled through, one per compaction step: saves (padded ones roll the log over), events,
/// and a deletion of `j3`, which a later save brings back as a new job.
const CONCURRENT: [Concurrent; 8] = [
    Concurrent::Save("j0", 0),
    Concurrent::StartRun("j1"),
    Concurrent::Delete("j3"),
    Concurrent::Save("j2", 12_000),
    Concurrent::Save("j1", 12_000),
    Concurrent::FailRun("j0"),
    Concurrent::Save("j3", 100),
    Concurrent::Save("j2", 12_000),
];

/// A save after the compaction, in flight while its steps are crashed.
#[derive(Debug, Clone)]
struct InFlight {
    job: &'static str,
    data: Value,
    latest_before: Option<Checkpoint>,
    state_before: Option<JobState>,
}

/// Shared between the test and the disk's step hook.
struct Shared {
    store: Option<Arc<Store>>,
    scenario: Scenario,
    seed: u64,
    reference: Reference,
    in_compaction: bool,
    /// Steps of the compaction seen so far.
    compaction_steps: u64,
    /// The compaction's temporary file, once created: concurrent operations may start (the
    /// steps before it may be those of sealing the segment being written, under the writer's
    /// lock).
    compacting: Option<PathBuf>,
    phase: Phase,
    /// The compacted segment's bytes, once renamed into place.
    compacted_bytes: Option<Vec<u8>>,
    concurrent_done: usize,
    /// Every record up to this sequence number was acknowledged.
    acked_seq: u64,
    in_flight: Option<InFlight>,
    explored: u64,
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    fn store(&self) -> Arc<Store> {
        self.store.clone().expect("the live store")
    }

    /// Called after every step of the simulated disk.
    fn on_step(&mut self, disk: &SimDisk, step: Step) {
        if self.in_compaction {
            self.compaction_steps += 1;
            let names = disk.file_names();
            match step {
                Step::Create if self.compacting.is_none() => {
                    self.compacting = names
                        .into_iter()
                        .find(|p| p.to_string_lossy().ends_with(".seg.compacting"));
                }
                // The rename that commits the compaction: its temporary file goes.
                Step::Rename
                    if self.phase == Phase::Old
                        && self
                            .compacting
                            .as_ref()
                            .is_some_and(|tmp| !names.contains(tmp)) =>
                {
                    self.phase = Phase::Renamed;
                    let path = segment_path(self.reference.compacted_id);
                    let tmp = self.compacting.as_ref().expect("temporary file");
                    assert!(
                        tmp.to_string_lossy().starts_with(&*path.to_string_lossy()),
                        "{}: {tmp:?} is not renamed to {path:?}",
                        self.scenario.name
                    );
                    self.compacted_bytes = Some(disk.read_file(&path).expect("renamed"));
                }
                Step::SyncDir if self.phase == Phase::Renamed => self.phase = Phase::Committed,
                _ => {}
            }
        }
        self.explore(disk, step);
        if self.in_compaction && self.compacting.is_some() && self.scenario.concurrent {
            self.concurrent_op();
        }
    }

    fn concurrent_op(&mut self) {
        let store = self.store();
        let op = CONCURRENT[self.concurrent_done % CONCURRENT.len()];
        let i = self.concurrent_done as u64;
        self.concurrent_done += 1;
        match op {
            Concurrent::Save(job, pad) => {
                store
                    .save(job, "during", &data(job, 1000 + i, pad))
                    .unwrap();
            }
            Concurrent::StartRun(job) => {
                store.start_run(job).unwrap();
            }
            Concurrent::FailRun(job) => {
                let context = ErrorContext::recoverable();
                store
                    .fail_run(job, "failed during compaction", context)
                    .unwrap();
            }
            Concurrent::Delete(job) => {
                store.delete_job(job, "deleted during").unwrap();
            }
        }
        self.acked_seq = store.last_seq();
    }

    fn explore(&mut self, disk: &SimDisk, step: Step) {
        let store = self.store();
        let live = View::of(&store).upto(self.acked_seq);
        let step_no = if self.in_compaction {
            format!("compaction step {}", self.compaction_steps)
        } else {
            format!("disk step {} of the saves after", disk.steps())
        };
        let mut variant = 0;
        for (mode, seeds) in self.scenario.crashes() {
            for n in 0..seeds {
                variant += 1;
                let crash_seed = self.seed ^ (disk.steps() << 12) ^ (variant << 4) ^ n;
                let crashed = disk.crash(mode, crash_seed);
                let context = format!(
                    "scenario {} seed {} {step_no} ({step:?}, {:?}) mode {mode:?} crash seed \
                     {crash_seed}",
                    self.scenario.name, self.seed, self.phase
                );
                self.check_crash_state(&crashed, &live, &context);
                self.explored += 1;
            }
        }
    }

    /// Opens the crashed disk and checks everything; panics with `context` on failure.
    fn check_crash_state(&self, crashed: &SimDisk, live: &View, context: &str) {
        let (in_place, superseded, leftovers) = self.expected_files(crashed, context);
        let store = open(crashed)
            .unwrap_or_else(|e| panic!("{context}: the crashed store does not open: {e}"));
        check_report(&store, crashed, &superseded, &leftovers, context);
        let found = View::of(&store);
        self.check_view(&found, live, in_place, context);
        for job in ["gone", "late"] {
            assert!(
                found.states[job].is_none()
                    && found.latest[job].is_none()
                    && found.histories[job].is_empty()
                    && !found.jobs.iter().any(|j| j == job),
                "{context}: the deleted job {job} is back"
            );
        }
        // Above everything acknowledged and recovered, and above the snapshot of a compaction
        // that is in place.
        let snapshot_seq = if in_place { self.reference.upto_seq } else { 0 };
        let floor = self.acked_seq.max(found.max_seq()).max(snapshot_seq);
        save_and_reopen(store, crashed, found, floor, context);
    }

    /// Whether the crash left the compacted segment in place (which the compaction's phase
    /// may demand or forbid), the replaced segments recovery must then report as superseded,
    /// and the temporary files it must report.
    fn expected_files(
        &self,
        crashed: &SimDisk,
        context: &str,
    ) -> (bool, Vec<PathBuf>, Vec<PathBuf>) {
        let reference = &self.reference;
        let files = crashed.file_names();
        let in_place = self.compacted_bytes.as_ref().is_some_and(|bytes| {
            crashed
                .read_file(&segment_path(reference.compacted_id))
                .as_ref()
                == Some(bytes)
        });
        match self.phase {
            Phase::Old => assert!(!in_place, "{context}: compacted before the rename"),
            Phase::Committed => assert!(in_place, "{context}: a committed compaction was lost"),
            Phase::Renamed => {}
        }
        let superseded = files
            .iter()
            .filter(|path| {
                in_place && segment_id(path).is_some_and(|id| id < reference.compacted_id)
            })
            .cloned()
            .collect();
        // Left by the compaction, or by the rollover that sealed the segment being written.
        let leftovers = files
            .iter()
            .filter(|path| {
                let name = path.to_string_lossy();
                name.ends_with(".seg.compacting") || name.ends_with(".seg.creating")
            })
            .cloned()
            .collect();
        (in_place, superseded, leftovers)
    }

    /// The recovered store against the live one: the same latest checkpoints and states, and
    /// histories of the old or the new set as `in_place` says, for all jobs at once; a save in
    /// flight may or may not be there.
    fn check_view(&self, found: &View, live: &View, in_place: bool, context: &str) {
        let expected_histories = if in_place {
            self.reference.compacted(live)
        } else {
            live.histories.clone()
        };
        let mut histories = found.histories.clone();
        let mut latest = found.latest.clone();
        let mut states = found.states.clone();
        if let Some(in_flight) = &self.in_flight {
            // The job of the save in flight is checked on its own; the others must match.
            let job = in_flight.job;
            self.check_in_flight(in_flight, found, context);
            histories
                .get_mut(job)
                .expect("job")
                .retain(|c| c.seq <= self.acked_seq);
            latest.remove(job);
            states.remove(job);
        }
        assert!(
            histories == expected_histories,
            "{context}: history is neither the old set nor the new one (compacted segment in \
             place: {in_place}): found {:?}, expected {:?}",
            history_seqs(&histories),
            history_seqs(&expected_histories)
        );
        let mut live_latest = live.latest.clone();
        let mut live_states = live.states.clone();
        if let Some(in_flight) = &self.in_flight {
            live_latest.remove(in_flight.job);
            live_states.remove(in_flight.job);
        }
        let seqs = |latest: &BTreeMap<String, Option<Checkpoint>>| -> Vec<Option<u64>> {
            latest.values().map(|c| c.as_ref().map(|c| c.seq)).collect()
        };
        assert!(
            latest == live_latest,
            "{context}: latest checkpoints {:?}, expected {:?}",
            seqs(&latest),
            seqs(&live_latest)
        );
        assert_eq!(states, live_states, "{context}: job states");
        assert_eq!(found.jobs, live.jobs, "{context}: jobs()");
    }

    /// The save in flight is there, as saved, or not at all, and the job's latest checkpoint
    /// and state follow.
    fn check_in_flight(&self, in_flight: &InFlight, found: &View, context: &str) {
        let job = in_flight.job;
        let (latest, states) = (&found.latest, &found.states);
        let history = &found.histories[job];
        let extra: Vec<Checkpoint> = history
            .iter()
            .filter(|c| c.seq > self.acked_seq)
            .cloned()
            .collect();
        match extra.as_slice() {
            [] => {
                assert!(
                    latest[job] == in_flight.latest_before,
                    "{context}: latest of {job} without the save in flight"
                );
                assert_eq!(states[job], in_flight.state_before, "{context}: {job}");
            }
            [saved] => {
                assert!(
                    saved.data == in_flight.data && latest[job].as_ref() == Some(saved),
                    "{context}: the save in flight is not what was saved"
                );
                let state = states[job].as_ref().expect("state");
                let before = in_flight.state_before.as_ref().expect("state before");
                assert_eq!(
                    (
                        state.latest_checkpoint.as_ref().map(|c| c.seq),
                        state.checkpoints_saved,
                        state.events_applied
                    ),
                    (
                        Some(saved.seq),
                        before.checkpoints_saved + 1,
                        before.events_applied + 1
                    ),
                    "{context}: state of {job} with the save in flight"
                );
            }
            more => panic!("{context}: {} records that were never saved", more.len()),
        }
    }
}

/// The recovery report: nothing found but a torn tail, the replaced segments reported as
/// superseded, every leftover file reported, and all of them gone.
fn check_report(
    store: &Store,
    crashed: &SimDisk,
    superseded: &[PathBuf],
    leftovers: &[PathBuf],
    context: &str,
) {
    let report = store.recovery_report();
    // A torn tail is what a crash during a save (or the seal of the segment being written)
    // leaves; the compaction's own writes go to a file that is not a segment until synced.
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.kind == FindingKind::TornTail),
        "{context}: unexpected findings {:?}",
        report.findings
    );
    assert_eq!(
        report.segments_superseded,
        superseded.len(),
        "{context}: superseded segments {superseded:?}, report {report:?}"
    );
    let files = crashed.file_names();
    for path in superseded.iter().chain(leftovers) {
        let name = path.file_name().unwrap().to_string_lossy();
        assert!(
            report.notes.iter().any(|note| note.contains(name.as_ref())),
            "{context}: {name} is not reported: {:?}",
            report.notes
        );
        assert!(!files.contains(path), "{context}: recovery left {name}");
    }
}

/// A new save gets a number above `floor`; a second reopen is clean and shows `found` and
/// that save.
fn save_and_reopen(store: Store, crashed: &SimDisk, found: View, floor: u64, context: &str) {
    let seq = store
        .save("after", "p", &json!("after the crash"))
        .unwrap_or_else(|e| panic!("{context}: save after recovery: {e}"));
    assert!(seq > floor, "{context}: new save got sequence number {seq}");
    drop(store);
    let again = open(crashed).unwrap_or_else(|e| panic!("{context}: second reopen fails: {e}"));
    let report = again.recovery_report();
    assert!(
        report.is_clean() && report.segments_superseded == 0,
        "{context}: second reopen not clean: {report:?}"
    );
    let mut expected = found;
    expected.jobs.push("after".into());
    expected.jobs.sort();
    let reopened = View::of(&again);
    assert!(
        reopened == expected,
        "{context}: second reopen differs: {:?} vs {:?}",
        reopened.shape(),
        expected.shape()
    );
    let after = again.latest("after").unwrap().expect("the save after");
    assert_eq!(
        (after.seq, &after.data),
        (seq, &json!("after the crash")),
        "{context}"
    );
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
    let shared = Arc::new(Mutex::new(Shared {
        store: Some(store.clone()),
        scenario,
        seed,
        reference: reference.clone(),
        in_compaction: true,
        compaction_steps: 0,
        compacting: None,
        phase: Phase::Old,
        compacted_bytes: None,
        concurrent_done: 0,
        acked_seq: store.last_seq(),
        in_flight: None,
        explored: 0,
    }));
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
    let seed = env_u64("CAIRN_COMPACT_CRASH_SEED", 0x5eed_c0de);
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
