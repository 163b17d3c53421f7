//! The model of the `ops` target: the writes the store acknowledged (durable, with the
//! sequence number and time it gave them) and the one it may or may not have (undecided), and
//! what a store must then return.

use cairn::{Checkpoint, Error, JobEvent, JobState, Store};
use cairn::{Result as CairnResult, Trigger};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{JOBS, tracing};

/// What one write put in the log, as the model remembers it.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Write {
    Save {
        phase: &'static str,
        trigger: Trigger,
        data: Value,
    },
    Event(JobEvent),
}

impl Write {
    /// The event the job state folds for this write.
    pub(super) fn event(&self) -> JobEvent {
        match self {
            Write::Save { phase, trigger, .. } => JobEvent::CheckpointSaved {
                phase: (*phase).to_string(),
                trigger: *trigger,
            },
            Write::Event(event) => event.clone(),
        }
    }

    pub(super) fn is_delete(&self) -> bool {
        matches!(self, Write::Event(JobEvent::JobDeleted { .. }))
    }
}

/// The checkpoints a store holds after the durable writes of `log`, in order: every durable
/// save but those of a job deleted after them.
pub(super) fn visible(log: &[(Op, State)]) -> Vec<Saved<'_>> {
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
pub(super) struct Op {
    pub(super) job: &'static str,
    pub(super) write: Write,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// In the log for good, with the sequence number and time the store gave it.
    Durable { seq: u64, at: DateTime<Utc> },
    /// A failed write that may or may not be in the log.
    Undecided,
}

/// A checkpoint as the model and the store can both describe it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Saved<'a> {
    pub(super) seq: u64,
    pub(super) job: &'a str,
    pub(super) phase: &'a str,
    pub(super) trigger: Option<Trigger>,
    pub(super) version: u32,
    pub(super) data: &'a Value,
    pub(super) at: DateTime<Utc>,
}

impl<'a> Saved<'a> {
    pub(super) fn of_checkpoint(c: &'a Checkpoint) -> Self {
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
    pub(super) fn of_op(op: &'a Op, state: &State) -> Option<Self> {
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
pub(super) struct Found {
    pub(super) checkpoints: Vec<Checkpoint>,
    pub(super) states: Vec<Option<JobState>>,
}

impl Found {
    pub(super) fn state(&self, job: &str) -> Option<&JobState> {
        let i = JOBS.iter().position(|j| *j == job).expect("one of JOBS");
        self.states[i].as_ref()
    }
}

/// The state of `job` folded from the durable writes of `log`: what `Store::job` must return.
pub(super) fn fold(log: &[(Op, State)], job: &str) -> Option<JobState> {
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
pub(super) struct Model {
    pub(super) log: Vec<(Op, State)>,
    /// A write failed in a way that poisons the store; later writes must be refused.
    pub(super) poisoned: bool,
    /// Faults were injected and may still be armed.
    pub(super) faults_armed: bool,
    pub(super) writes_made: u64,
}

impl Model {
    pub(super) fn last_durable_seq(&self) -> u64 {
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
    pub(super) fn reconcile(&mut self, found: &Found, decide: bool, context: &str) {
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
    pub(super) fn find(
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
    pub(super) fn settle(
        &mut self,
        store: &Store,
        op: Op,
        result: CairnResult<u64>,
        context: &str,
    ) {
        match result {
            Ok(seq) => self.acknowledged(store, op, seq, context),
            Err(e) => self.failed(store, op, &e, context),
        }
    }

    /// `op` was acknowledged as `seq`.
    fn acknowledged(&mut self, store: &Store, op: Op, seq: u64, context: &str) {
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
                .unwrap_or_else(|| panic!("{context}: write {seq} not in the live state {live:?}"))
        };
        let job = op.job;
        self.log.push((op, State::Durable { seq, at }));
        assert_eq!(
            live,
            fold(&self.log, job),
            "{context}: the live state of {job} is not the fold of its writes"
        );
    }

    /// `op` failed with `e`.
    fn failed(&mut self, store: &Store, op: Op, e: &Error, context: &str) {
        assert!(
            self.faults_armed,
            "{context}: a write failed without a fault: {e}"
        );
        // A sync that found no room (ENOSPC) is `DiskFull` and poisons; a full disk when
        // creating a segment is `DiskFull` and leaves nothing.
        let full_at_sync =
            matches!(e, Error::DiskFull { .. }) && store.metrics().poisoned.is_some();
        let poisons = full_at_sync
            || matches!(
                e,
                Error::Poisoned { .. }
                    | Error::Io {
                        op: "write record" | "write mark record",
                        ..
                    }
            );
        let clean = (matches!(e, Error::DiskFull { .. }) && !full_at_sync)
            || matches!(
                e,
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
    pub(super) fn latest(&self, job: &str) -> Option<Saved<'_>> {
        visible(&self.log)
            .into_iter()
            .rfind(|saved| saved.job == job)
    }
}
