//! The disk's step hook: at every step of the compaction (and of the saves after it) it
//! crashes the disk in every mode, reopens and checks the crashed store, and (in the scenarios
//! that do so) makes an operation of its own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use cairn::testing::{SimDisk, Step};
use cairn::{Checkpoint, ErrorContext, FindingKind, JobState, Store};
use serde_json::{Value, json};

use super::common::files::segment_id;
use super::common::sim::segment_path;
use super::view::{Reference, View, history_seqs};
use super::{Scenario, data, open};

/// Where the compaction is, as far as a crash is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the rename of the compacted segment: a crash gives the old set.
    Old,
    /// Renamed, not yet made durable by a directory sync: either set.
    Renamed,
    /// The directory sync after the rename returned: the new set.
    Committed,
}

/// An operation made at a step of the compaction.
#[derive(Debug, Clone, Copy)]
pub enum Concurrent {
    Save(&'static str, usize),
    StartRun(&'static str),
    FailRun(&'static str),
    Delete(&'static str),
}

/// Cycled through, one per compaction step: saves (padded ones roll the log over), events,
/// and a deletion of `j3`, which a later save brings back as a new job.
pub const CONCURRENT: [Concurrent; 8] = [
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
pub struct InFlight {
    pub job: &'static str,
    pub data: Value,
    pub latest_before: Option<Checkpoint>,
    pub state_before: Option<JobState>,
}

/// Shared between the test and the disk's step hook.
pub struct Shared {
    pub store: Option<Arc<Store>>,
    pub scenario: Scenario,
    pub seed: u64,
    pub reference: Reference,
    pub in_compaction: bool,
    /// Steps of the compaction seen so far.
    pub compaction_steps: u64,
    /// The compaction's temporary file, once created: concurrent operations may start (the
    /// steps before it may be those of sealing the segment being written, under the writer's
    /// lock).
    pub compacting: Option<PathBuf>,
    pub phase: Phase,
    /// The compacted segment's bytes, once renamed into place.
    pub compacted_bytes: Option<Vec<u8>>,
    pub concurrent_done: usize,
    /// Every record up to this sequence number was acknowledged.
    pub acked_seq: u64,
    pub in_flight: Option<InFlight>,
    pub explored: u64,
}

pub fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Shared {
    /// Before the compaction of `scenario` on `store`, which `reference` ran cleanly.
    pub fn new(store: Arc<Store>, scenario: Scenario, seed: u64, reference: Reference) -> Shared {
        Shared {
            acked_seq: store.last_seq(),
            store: Some(store),
            scenario,
            seed,
            reference,
            in_compaction: true,
            compaction_steps: 0,
            compacting: None,
            phase: Phase::Old,
            compacted_bytes: None,
            concurrent_done: 0,
            in_flight: None,
            explored: 0,
        }
    }

    pub fn store(&self) -> Arc<Store> {
        self.store.clone().expect("the live store")
    }

    /// Called after every step of the simulated disk.
    pub fn on_step(&mut self, disk: &SimDisk, step: Step) {
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

    pub fn concurrent_op(&mut self) {
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

    pub fn explore(&mut self, disk: &SimDisk, step: Step) {
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
    pub fn check_crash_state(&self, crashed: &SimDisk, live: &View, context: &str) {
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
    pub fn expected_files(
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
    pub fn check_view(&self, found: &View, live: &View, in_place: bool, context: &str) {
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
    pub fn check_in_flight(&self, in_flight: &InFlight, found: &View, context: &str) {
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
pub fn check_report(
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
pub fn save_and_reopen(store: Store, crashed: &SimDisk, found: View, floor: u64, context: &str) {
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
