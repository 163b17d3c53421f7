//! What the store shows, and what a clean run of the compaction left.

use std::collections::{BTreeMap, BTreeSet};

use cairn::{Checkpoint, JobState, Store};

use super::JOBS;

/// What the store shows: every job's history, latest checkpoint and state, and the listing.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub histories: BTreeMap<String, Vec<Checkpoint>>,
    pub latest: BTreeMap<String, Option<Checkpoint>>,
    pub states: BTreeMap<String, Option<JobState>>,
    pub jobs: Vec<String>,
}

impl View {
    pub fn of(store: &Store) -> View {
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
    pub fn upto(mut self, seq: u64) -> View {
        for history in self.histories.values_mut() {
            history.retain(|c| c.seq <= seq);
        }
        self
    }

    /// The sequence numbers of every job's history and latest checkpoint: what two runs of the
    /// same workload share (their clocks differ), and what a failure prints.
    pub fn shape(&self) -> BTreeMap<&str, (Vec<u64>, Option<u64>)> {
        self.histories
            .iter()
            .map(|(job, history)| {
                let seqs = history.iter().map(|c| c.seq).collect();
                let latest = self.latest[job].as_ref().map(|c| c.seq);
                (job.as_str(), (seqs, latest))
            })
            .collect()
    }

    pub fn max_seq(&self) -> u64 {
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
pub struct Reference {
    pub upto_seq: u64,
    /// Sequence numbers of the compacted range that it kept.
    pub kept: BTreeSet<u64>,
    /// The id the compacted segment takes.
    pub compacted_id: u64,
    /// The view after it.
    pub after: View,
}

impl Reference {
    /// The histories of `view` (taken before the compaction committed) as the compaction
    /// leaves them.
    pub fn compacted(&self, view: &View) -> BTreeMap<String, Vec<Checkpoint>> {
        let mut histories = view.histories.clone();
        for history in histories.values_mut() {
            history.retain(|c| c.seq > self.upto_seq || self.kept.contains(&c.seq));
        }
        histories
    }
}

/// Every job's history as sequence numbers: what failure messages print.
pub fn history_seqs(histories: &BTreeMap<String, Vec<Checkpoint>>) -> BTreeMap<&str, Vec<u64>> {
    histories
        .iter()
        .map(|(job, history)| (job.as_str(), history.iter().map(|c| c.seq).collect()))
        .collect()
}
