//! Runs operations on the store and on the model side by side, and checks the store against
//! the model after each.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::Utc;
use serde_json::json;

use cairn::{ErrorContext, JobEvent, JobState, Options, Retention, Store};

use super::common::SEGMENT_BYTES;
use super::common::disk::Disk;
use super::model::{Model, Saved, Tally, timeless};
use super::{Age, JOBS, Op};

/// The store under test, on either disk, and the model it must match.
pub struct Harness {
    pub backend: Disk,
    pub options: Options,
    pub store: Option<Store>,
    pub model: Model,
    /// Manual compaction only: history is checked exactly.
    pub exact: bool,
    /// Background mode: the store's retention, which every compaction uses.
    pub keep_last: usize,
    /// Background mode: the history of each job at the last check.
    pub last_history: BTreeMap<String, BTreeSet<u64>>,
    /// Background mode: sequence numbers saved since the last check.
    pub new_saves: BTreeSet<u64>,
    pub compactions: u64,
}

impl Harness {
    pub fn new(backend: Disk, options: Options, exact: bool) -> Harness {
        let store = backend.open_with(options.clone()).expect("the store opens");
        let keep_last = options.get_retention().get_keep_last();
        Harness {
            backend,
            options,
            store: Some(store),
            model: Model::default(),
            exact,
            keep_last,
            last_history: BTreeMap::new(),
            new_saves: BTreeSet::new(),
            compactions: 0,
        }
    }

    pub fn store(&self) -> &Store {
        self.store.as_ref().expect("open")
    }

    pub fn states(&self) -> Vec<Option<JobState>> {
        JOBS.iter().map(|job| self.store().job(job)).collect()
    }

    pub fn run(&mut self, ops: &[Op]) {
        for (i, op) in ops.iter().enumerate() {
            let ctx = format!("step {i} ({op:?})");
            self.apply(op, &ctx);
            self.check(&ctx);
        }
    }

    pub fn apply(&mut self, op: &Op, ctx: &str) {
        match op {
            Op::Save { job, pad, phase } => self.save(JOBS[*job], *pad, *phase, ctx),
            Op::StartRun(job) => {
                let job = JOBS[*job];
                let expected = self.model.jobs.get(job).map_or(0, |m| m.state.retry_count) + 1;
                let attempt = self.store().start_run(job).expect("start_run");
                assert_eq!(attempt, expected, "{ctx}: attempt");
                self.event(job, &JobEvent::RunStarted { attempt }, ctx);
            }
            Op::FailRun(job) => {
                let job = JOBS[*job];
                let error = format!("failure {}", self.model.last_seq);
                let seq = self
                    .store()
                    .fail_run(job, &error, ErrorContext::recoverable())
                    .expect("fail_run");
                assert_eq!(seq, self.store().last_seq(), "{ctx}");
                let event = JobEvent::RunFailed {
                    error,
                    context: ErrorContext::recoverable(),
                };
                self.event(job, &event, ctx);
            }
            Op::SucceedRun(job) => {
                let job = JOBS[*job];
                let seq = self.store().succeed_run(job).expect("succeed_run");
                assert_eq!(seq, self.store().last_seq(), "{ctx}");
                self.event(job, &JobEvent::RunSucceeded, ctx);
            }
            Op::ClearCheckpoint(job) => {
                let job = JOBS[*job];
                let reference = self
                    .store()
                    .clear_checkpoint(job, "full restart")
                    .expect("clear_checkpoint");
                assert_eq!(
                    reference.as_ref().map(Saved::of).as_ref(),
                    self.model.latest(job),
                    "{ctx}: the checkpoint set aside"
                );
                let event = JobEvent::CheckpointCleared {
                    reason: "full restart".into(),
                };
                self.event(job, &event, ctx);
            }
            Op::Delete(job) => {
                let job = JOBS[*job];
                let known = self.model.jobs.contains_key(job);
                let deleted = self.store().delete_job(job, "retired").expect("delete_job");
                assert_eq!(deleted, known, "{ctx}: delete_job of a known job");
                if deleted {
                    let seq = self.store().last_seq();
                    self.model.new_seq(seq, ctx);
                    self.model.deleted(job, seq);
                }
            }
            Op::Compact {
                keep_last,
                age,
                cap,
            } => self.compact(*keep_last, *age, *cap, ctx),
            Op::Reopen => self.reopen(ctx),
        }
    }

    pub fn save(&mut self, job: &str, pad: usize, phase: u8, ctx: &str) {
        self.model.counter += 1;
        let data = json!({"job": job, "n": self.model.counter, "pad": "p".repeat(pad)});
        let phase = format!("phase{phase}");
        let seq = self.store().save(job, &phase, &data).expect("save");
        self.model.new_seq(seq, ctx);
        let latest = self.store().latest(job).expect("latest").expect("saved");
        assert_eq!(latest.seq, seq, "{ctx}: latest right after the save");
        let saved = Saved {
            seq,
            phase,
            data,
            at: latest.at,
        };
        self.model.saved(job, saved);
        self.new_saves.insert(seq);
    }

    pub fn event(&mut self, job: &str, event: &JobEvent, ctx: &str) {
        // Only an explicit compaction takes a number (for the seal of the segment being
        // written), and none runs in between: the last number is the event's.
        let seq = self.store().last_seq();
        self.model.new_seq(seq, ctx);
        self.model.event(job, seq, event);
    }

    /// The policy of a compaction op. With `max_age` zero, every checkpoint is made strictly
    /// older than the compaction's clock reading.
    pub fn retention(&self, keep_last: usize, age: Age, cap: Option<u64>) -> Retention {
        let retention = Retention::default().keep_last(keep_last);
        let retention = match age {
            Age::Unlimited => retention,
            Age::Huge(age) => retention.max_age(age),
            Age::Zero => {
                if let Some(last_at) = self.model.last_at {
                    while Utc::now().timestamp_micros() <= last_at.timestamp_micros() {
                        std::hint::spin_loop();
                    }
                }
                retention.max_age(Duration::ZERO)
            }
        };
        // The limit counts the segment being written and one more (the room a new segment
        // needs), both 64 KiB here: what is left over is the compacted segment's budget.
        match cap {
            Some(cap) => retention.max_bytes(2 * SEGMENT_BYTES + cap),
            None => retention,
        }
    }

    pub fn compact(&mut self, keep_last: usize, age: Age, cap: Option<u64>, ctx: &str) {
        let states = self.states();
        if !self.exact {
            // Background mode: the store's own policy, so that its newest `keep_last` are
            // what must stay.
            self.store().compact().expect("compact");
            assert_eq!(
                self.states(),
                states,
                "{ctx}: compaction changed a job state"
            );
            return;
        }
        let retention = self.retention(keep_last, age, cap);
        let report = self.store().compact_with(&retention).expect("compact");
        self.compactions += u64::from(report.compacted);
        assert!(
            report.upto_seq <= self.store().last_seq(),
            "{ctx}: {report:?}"
        );
        let mut tally = self
            .model
            .compact(report.upto_seq, keep_last, matches!(age, Age::Zero));
        if cap.is_some() {
            let trimmed = self.fit_to_size(report.upto_seq, report.over_limit, ctx);
            tally.kept -= trimmed;
            tally.dropped += trimmed;
        } else {
            assert!(!report.over_limit, "{ctx}: {report:?}");
        }
        let counted = Tally {
            kept: report.checkpoints_kept,
            dropped: report.checkpoints_dropped,
            jobs: report.jobs,
            events: report.events_folded,
        };
        assert_eq!(counted, tally, "{ctx}: report counts, {report:?}");
        if !report.compacted {
            assert!(
                tally.dropped == 0 && tally.events == 0,
                "{ctx}: a compaction with something to drop did nothing: {report:?}"
            );
        }
        assert_eq!(
            self.states(),
            states,
            "{ctx}: compaction changed a job state"
        );
        // Right after a compaction, the same policy finds nothing more to do.
        let again = self
            .store()
            .compact_with(&retention)
            .expect("compact again");
        assert!(
            !again.compacted && again.checkpoints_dropped == 0,
            "{ctx}: a second compaction still found work: {again:?}"
        );
    }

    /// After a compaction with a size limit: the store dropped more of the history the
    /// retention rules keep, never a job's latest checkpoint, oldest first (across jobs), and
    /// all of it when the limit cannot be met. The model follows; returns how many.
    pub fn fit_to_size(&mut self, upto: u64, over_limit: bool, ctx: &str) -> u64 {
        let mut candidates = Vec::new();
        for (job, model) in &self.model.jobs {
            let held: BTreeSet<u64> = history(self.store(), job).iter().map(|c| c.seq).collect();
            let latest = model.checkpoints.last().map(|c| c.seq);
            for checkpoint in model.checkpoints.iter().filter(|c| c.seq <= upto) {
                let is_latest = Some(checkpoint.seq) == latest;
                let dropped = !held.contains(&checkpoint.seq);
                assert!(
                    !(is_latest && dropped),
                    "{ctx}: the size limit dropped the latest checkpoint of {job}"
                );
                if !is_latest {
                    candidates.push((checkpoint.seq, dropped));
                }
            }
        }
        candidates.sort_unstable();
        let dropped: Vec<u64> = candidates.iter().filter(|c| c.1).map(|c| c.0).collect();
        if let Some(&newest_dropped) = dropped.last() {
            assert!(
                candidates.iter().all(|&(seq, d)| d || seq > newest_dropped),
                "{ctx}: the size limit did not drop the oldest history first: {candidates:?}"
            );
        }
        if over_limit {
            assert_eq!(
                dropped.len(),
                candidates.len(),
                "{ctx}: over the limit, only the latest checkpoints stay"
            );
        }
        for model in self.model.jobs.values_mut() {
            model.checkpoints.retain(|c| !dropped.contains(&c.seq));
        }
        dropped.len() as u64
    }

    pub fn reopen(&mut self, ctx: &str) {
        let states = self.states();
        let histories: Vec<Vec<Saved>> =
            JOBS.iter().map(|job| history(self.store(), job)).collect();
        drop(self.store.take());
        let store = self.backend.open_with(self.options.clone());
        self.store = Some(store.expect("the store reopens"));
        let report = self.store().recovery_report();
        assert!(
            report.is_clean() && report.segments_superseded == 0,
            "{ctx}: a clean close must reopen clean: {report:?}"
        );
        assert_eq!(self.states(), states, "{ctx}: reopen changed a job state");
        for (job, before) in JOBS.iter().zip(histories) {
            let after = history(self.store(), job);
            if self.exact {
                assert_eq!(after, before, "{ctx}: reopen changed the history of {job}");
            } else {
                // A background compaction may have run in between: history only shrinks.
                assert!(
                    after.iter().all(|c| before.contains(c)),
                    "{ctx}: reopen brought back checkpoints of {job}"
                );
            }
        }
    }

    pub fn check(&mut self, ctx: &str) {
        for job in JOBS {
            let model = self.model.jobs.get(job);
            let latest = self.store().latest(job).expect("latest");
            assert_eq!(
                latest.as_ref().map(Saved::of).as_ref(),
                self.model.latest(job),
                "{ctx}: latest of {job}"
            );
            let state = self.store().job(job);
            assert_eq!(
                state.clone().map(timeless),
                model.map(|m| timeless(m.state.clone())),
                "{ctx}: state of {job}"
            );
            if let (Some(state), Some(latest)) = (&state, &latest)
                && let Some(meta) = &state.latest_checkpoint
            {
                assert_eq!((meta.seq, meta.at), (latest.seq, latest.at), "{ctx}: {job}");
            }
            let history = history(self.store(), job);
            let expected: Vec<Saved> = model.map(|m| m.checkpoints.clone()).unwrap_or_default();
            if self.exact {
                assert_eq!(history, expected, "{ctx}: history of {job}");
            } else {
                self.check_history_bounds(job, &history, &expected, ctx);
            }
        }
        self.check_jobs(ctx);
        self.new_saves.clear();
    }

    /// Background mode: the newest `keep_last` are there, everything there was saved (in
    /// order), and nothing dropped before comes back.
    pub fn check_history_bounds(
        &mut self,
        job: &str,
        history: &[Saved],
        saved: &[Saved],
        ctx: &str,
    ) {
        let must_keep = &saved[saved.len().saturating_sub(self.keep_last)..];
        assert!(
            history.ends_with(must_keep),
            "{ctx}: history of {job} lacks its newest {} checkpoints: {:?}",
            self.keep_last,
            seqs(history)
        );
        let mut rest = saved.iter();
        for checkpoint in history {
            assert!(
                rest.any(|s| s == checkpoint),
                "{ctx}: {job}'s history holds {} which is not a save of the job, or is out of \
                 order: {:?} vs saves {:?}",
                checkpoint.seq,
                seqs(history),
                seqs(saved)
            );
        }
        let seen: BTreeSet<u64> = history.iter().map(|c| c.seq).collect();
        let before = self.last_history.entry(job.to_owned()).or_default();
        assert!(
            seen.iter()
                .all(|seq| before.contains(seq) || self.new_saves.contains(seq)),
            "{ctx}: {job}'s history {seen:?} brought back a checkpoint missing from {before:?}"
        );
        *before = seen;
    }

    pub fn check_jobs(&self, ctx: &str) {
        let jobs = self.store().jobs().expect("jobs");
        let listed: Vec<&str> = jobs.iter().map(|j| j.job.as_str()).collect();
        let expected: Vec<&str> = self
            .model
            .jobs
            .iter()
            .filter(|(_, m)| !m.checkpoints.is_empty())
            .map(|(job, _)| job.as_str())
            .collect();
        assert_eq!(listed, expected, "{ctx}: jobs()");
        for summary in jobs {
            let model = &self.model.jobs[&summary.job];
            let latest = model.checkpoints.last().expect("listed jobs have one");
            assert_eq!(
                (summary.latest_seq, &summary.phase, summary.at),
                (latest.seq, &latest.phase, latest.at),
                "{ctx}: jobs() entry of {}",
                summary.job
            );
            assert_eq!(summary.status, model.state.status, "{ctx}");
            if self.exact {
                assert_eq!(
                    summary.checkpoints,
                    model.checkpoints.len() as u64,
                    "{ctx}: checkpoints of {}",
                    summary.job
                );
            }
        }
    }
}

pub fn history(store: &Store, job: &str) -> Vec<Saved> {
    store
        .history(job)
        .expect("history")
        .iter()
        .map(Saved::of)
        .collect()
}

pub fn seqs(checkpoints: &[Saved]) -> Vec<u64> {
    checkpoints.iter().map(|c| c.seq).collect()
}
