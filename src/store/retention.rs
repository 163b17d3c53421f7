//! Retention: which checkpoints of the compacted range a compaction keeps. A pure decision,
//! plain data in and a fate per checkpoint out, with no I/O and no locks: `compact.rs` gathers
//! the data (from the range's records and the index) and carries the decision out.
//!
//! The rules, job by job:
//! - A job deleted after the range keeps nothing of it: its checkpoints are dropped, and its
//!   state stays out of the snapshot (so its events go too).
//! - Checkpoints of an earlier job of the same name, deleted since, are dropped.
//! - The job's latest checkpoint (none newer in the segments after the range, the one being
//!   written included) is always kept.
//! - Any other checkpoint is kept when it is among the job's newest `keep_last` (counting those
//!   after the range) and not older than `max_age`.
//! - Under a size limit, kept history is then dropped, oldest first, until the compacted
//!   segment fits ([`fit`]); latest checkpoints stay even when it does not.
//!
//! Job events are never kept as records: the snapshot holds each job's state, their fold.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::options::Retention;

/// A checkpoint of the compacted range, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Candidate {
    /// Shared by every checkpoint of the job in the range (one of these per checkpoint).
    pub job: std::sync::Arc<str>,
    pub seq: u64,
    /// When it was saved, in microseconds since the Unix epoch.
    pub at_micros: i64,
    /// Bytes of its record.
    pub bytes: u64,
}

/// What a compaction knows of a job besides its checkpoints in the range. A job the
/// decision is given no facts of has none of these (the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct JobFacts {
    /// Records of the job up to this sequence number belong to an earlier job of the same
    /// name, deleted since (0: none).
    pub deleted_up_to_seq: u64,
    /// Checkpoints of the job in the segments after the range (the segment being written
    /// included).
    pub checkpoints_after_range: u64,
    /// The job was deleted after the range.
    pub deleted_after_range: bool,
}

/// The retention policy as the decision applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rules {
    /// How many of each job's newest checkpoints may stay.
    pub keep_last: u64,
    /// Checkpoints saved before this time (microseconds since the epoch) go, unless latest.
    pub cutoff_micros: Option<i64>,
}

impl Rules {
    /// The rules of `retention` for a compaction that runs at `now`.
    pub fn new(retention: &Retention, now: DateTime<Utc>) -> Rules {
        let cutoff_micros = retention.max_age.map(|age| {
            let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
            now.checked_sub_signed(age)
                .map_or(i64::MIN, |t| t.timestamp_micros())
        });
        Rules {
            keep_last: retention.keep_last as u64,
            cutoff_micros,
        }
    }

    /// The fate of a checkpoint of a live job with `newer` checkpoints of the job after it.
    fn fate(&self, candidate: &Candidate, newer: u64) -> Fate {
        let young = self
            .cutoff_micros
            .is_none_or(|cutoff| candidate.at_micros >= cutoff);
        if newer == 0 {
            Fate::Latest
        } else if newer < self.keep_last && young {
            Fate::Kept
        } else {
            Fate::Dropped
        }
    }
}

/// What a compaction does with one checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Not in the compacted segment.
    Dropped,
    /// In the compacted segment, unless a size limit needs its room.
    Kept,
    /// The job's latest checkpoint: in the compacted segment whatever the policy says.
    Latest,
}

impl Fate {
    /// Whether the checkpoint goes into the compacted segment.
    pub fn is_kept(self) -> bool {
        self != Fate::Dropped
    }
}

/// The fate of each of `candidates` (the range's checkpoints, oldest first), by the job
/// facts in `jobs` and the `rules`; the result is in the order of `candidates`.
pub(super) fn decide(
    candidates: &[Candidate],
    jobs: &HashMap<String, JobFacts>,
    rules: &Rules,
) -> Vec<Fate> {
    let mut fates = vec![Fate::Dropped; candidates.len()];
    let mut by_job: HashMap<&str, Vec<(&Candidate, &mut Fate)>> = HashMap::new();
    for (candidate, fate) in candidates.iter().zip(fates.iter_mut()) {
        by_job
            .entry(&*candidate.job)
            .or_default()
            .push((candidate, fate));
    }
    for (job, mut checkpoints) in by_job {
        let facts = jobs.get(job).copied().unwrap_or_default();
        if facts.deleted_after_range {
            continue;
        }
        // Checkpoints of the live job newer than the one looked at, newest first.
        let mut newer = facts.checkpoints_after_range;
        for (candidate, fate) in checkpoints.iter_mut().rev() {
            if candidate.seq <= facts.deleted_up_to_seq {
                continue;
            }
            **fate = rules.fate(candidate, newer);
            newer += 1;
        }
    }
    fates
}

/// Whether the snapshot holds the state of `job`: not when the job was deleted after the range.
pub(super) fn state_in_snapshot(jobs: &HashMap<String, JobFacts>, job: &str) -> bool {
    !jobs.get(job).is_some_and(|facts| facts.deleted_after_range)
}

/// Drops kept history, oldest first, until `fits(kept_bytes)` says the kept checkpoints fit;
/// latest checkpoints always stay. Returns false when even they alone do not fit.
pub(super) fn fit(
    candidates: &[Candidate],
    fates: &mut [Fate],
    fits: impl Fn(u64) -> bool,
) -> bool {
    let mut kept = kept_bytes(candidates, fates);
    for (candidate, fate) in candidates.iter().zip(fates.iter_mut()) {
        if fits(kept) {
            return true;
        }
        if *fate == Fate::Kept {
            *fate = Fate::Dropped;
            kept -= candidate.bytes;
        }
    }
    fits(kept)
}

/// Bytes of the checkpoints that go into the compacted segment.
pub(super) fn kept_bytes(candidates: &[Candidate], fates: &[Fate]) -> u64 {
    candidates
        .iter()
        .zip(fates)
        .filter(|(_, fate)| fate.is_kept())
        .map(|(candidate, _)| candidate.bytes)
        .sum()
}

/// The checkpoints that do not go into the compacted segment.
pub(super) fn dropped_count(fates: &[Fate]) -> u64 {
    fates.iter().filter(|fate| !fate.is_kept()).count() as u64
}

/// The bytes a compacted segment may take under a size limit of `max_bytes`. Afterwards: it,
/// the segments after the range (`bytes_after_range`) and room for one new segment of
/// `segment_size_bytes` fit the limit. Meanwhile: it is written beside every segment file
/// there is (`storage_bytes`), and that peak passes the limit by at most one segment
/// ([`room_beside`]).
pub(super) fn size_budget(
    max_bytes: u64,
    segment_size_bytes: u64,
    bytes_after_range: u64,
    storage_bytes: u64,
) -> u64 {
    let steady = max_bytes
        .saturating_sub(bytes_after_range)
        .saturating_sub(segment_size_bytes);
    steady.min(room_beside(max_bytes, segment_size_bytes, storage_bytes))
}

/// The bytes a compacted file may take beside segment files of `on_disk_bytes` so that the
/// disk use stays within the limit of `max_bytes` plus one segment.
pub(super) fn room_beside(max_bytes: u64, segment_size_bytes: u64, on_disk_bytes: u64) -> u64 {
    (max_bytes + segment_size_bytes).saturating_sub(on_disk_bytes)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    use Fate::{Dropped, Kept, Latest};

    const HOUR_MICROS: i64 = 3_600_000_000;
    const NOW_MICROS: i64 = 1_700_000_000_000_000;

    /// Checkpoints of `jobs` in this order, one per hour up to now, 100 bytes each.
    fn range(jobs: &[&str]) -> Vec<Candidate> {
        let count = jobs.len() as i64;
        (1..)
            .zip(jobs)
            .map(|(seq, job)| Candidate {
                job: (*job).into(),
                seq,
                at_micros: NOW_MICROS - (count - seq as i64) * HOUR_MICROS,
                bytes: 100,
            })
            .collect()
    }

    fn rules(keep_last: u64) -> Rules {
        Rules {
            keep_last,
            cutoff_micros: None,
        }
    }

    fn no_facts() -> HashMap<String, JobFacts> {
        HashMap::new()
    }

    fn facts_of(job: &str, facts: JobFacts) -> HashMap<String, JobFacts> {
        HashMap::from([(job.to_owned(), facts)])
    }

    #[test]
    fn keep_last_keeps_each_jobs_newest() {
        let candidates = range(&["a", "b", "a", "a", "b", "a"]);
        let fates = decide(&candidates, &no_facts(), &rules(2));
        assert_eq!(fates, [Dropped, Kept, Dropped, Kept, Latest, Latest]);
    }

    #[test]
    fn keep_last_zero_or_one_keeps_only_the_latest() {
        let candidates = range(&["a", "a", "a"]);
        for keep_last in [0, 1] {
            let fates = decide(&candidates, &no_facts(), &rules(keep_last));
            assert_eq!(fates, [Dropped, Dropped, Latest], "keep_last {keep_last}");
        }
    }

    #[test]
    fn checkpoints_after_the_range_count_against_keep_last() {
        let candidates = range(&["a", "a", "a"]);
        let after = |n| {
            facts_of(
                "a",
                JobFacts {
                    checkpoints_after_range: n,
                    ..JobFacts::default()
                },
            )
        };
        assert_eq!(
            decide(&candidates, &after(1), &rules(3)),
            [Dropped, Kept, Kept]
        );
        // Newer checkpoints in the segment being written: none in the range is the latest.
        assert_eq!(
            decide(&candidates, &after(3), &rules(3)),
            [Dropped, Dropped, Dropped]
        );
    }

    #[test]
    fn max_age_drops_old_history_but_never_the_latest() {
        let candidates = range(&["a", "a", "a", "a"]);
        let now = DateTime::from_timestamp_micros(NOW_MICROS).expect("a valid time");
        let retention = Retention::default()
            .keep_last(10)
            .max_age(Duration::from_secs(90 * 60));
        let rules = Rules::new(&retention, now);
        assert_eq!(rules.cutoff_micros, Some(NOW_MICROS - 3 * HOUR_MICROS / 2));
        // Saved 3, 2, 1 and 0 hours ago.
        assert_eq!(
            decide(&candidates, &no_facts(), &rules),
            [Dropped, Dropped, Kept, Latest]
        );
        let all_old = Rules {
            cutoff_micros: Some(NOW_MICROS + HOUR_MICROS),
            ..rules
        };
        assert_eq!(
            decide(&candidates, &no_facts(), &all_old),
            [Dropped, Dropped, Dropped, Latest]
        );
    }

    #[test]
    fn max_age_and_keep_last_both_apply() {
        let candidates = range(&["a", "a", "a", "a"]);
        let rules = Rules {
            keep_last: 2,
            cutoff_micros: Some(NOW_MICROS - 5 * HOUR_MICROS),
        };
        assert_eq!(
            decide(&candidates, &no_facts(), &rules),
            [Dropped, Dropped, Kept, Latest]
        );
    }

    #[test]
    fn a_policy_without_max_age_has_no_cutoff() {
        let now = DateTime::from_timestamp_micros(NOW_MICROS).expect("a valid time");
        let rules = Rules::new(&Retention::default().keep_last(4), now);
        assert_eq!(rules, self::rules(4));
        let ancient = Retention::default().max_age(Duration::MAX);
        assert_eq!(Rules::new(&ancient, now).cutoff_micros, Some(i64::MIN));
    }

    #[test]
    fn a_job_deleted_after_the_range_loses_everything() {
        let candidates = range(&["a", "b", "a"]);
        let jobs = facts_of(
            "a",
            JobFacts {
                deleted_after_range: true,
                ..JobFacts::default()
            },
        );
        assert_eq!(
            decide(&candidates, &jobs, &rules(10)),
            [Dropped, Latest, Dropped]
        );
        assert!(!state_in_snapshot(&jobs, "a"));
        assert!(state_in_snapshot(&jobs, "b"));
    }

    #[test]
    fn an_earlier_job_of_the_same_name_loses_its_checkpoints() {
        // "a" was deleted after record 2 and saved again at 3 and 4.
        let candidates = range(&["a", "a", "a", "a"]);
        let jobs = facts_of(
            "a",
            JobFacts {
                deleted_up_to_seq: 2,
                ..JobFacts::default()
            },
        );
        assert_eq!(
            decide(&candidates, &jobs, &rules(10)),
            [Dropped, Dropped, Kept, Latest]
        );
        assert!(state_in_snapshot(&jobs, "a"));
    }

    #[test]
    fn a_job_with_only_events_keeps_its_state() {
        let candidates = range(&["b"]);
        let jobs = facts_of("events_only", JobFacts::default());
        assert_eq!(decide(&candidates, &jobs, &rules(1)), [Latest]);
        assert!(state_in_snapshot(&jobs, "events_only"));
        assert!(state_in_snapshot(&no_facts(), "unknown"));
    }

    #[test]
    fn the_latest_checkpoint_is_never_dropped() {
        let candidates = range(&["a", "b", "c", "a"]);
        let rules = Rules {
            keep_last: 0,
            cutoff_micros: Some(i64::MAX),
        };
        let mut fates = decide(&candidates, &no_facts(), &rules);
        assert_eq!(fates, [Dropped, Latest, Latest, Latest]);
        assert!(!fit(&candidates, &mut fates, |kept| kept == 0));
        assert_eq!(fates, [Dropped, Latest, Latest, Latest]);
    }

    #[test]
    fn fit_drops_history_oldest_first_until_it_fits() {
        let candidates = range(&["a", "b", "a", "b", "a", "b"]);
        let decided = decide(&candidates, &no_facts(), &rules(10));
        assert_eq!(decided, [Kept, Kept, Kept, Kept, Latest, Latest]);
        assert_eq!(kept_bytes(&candidates, &decided), 600);

        let mut fates = decided.clone();
        assert!(fit(&candidates, &mut fates, |kept| kept <= 450));
        assert_eq!(fates, [Dropped, Dropped, Kept, Kept, Latest, Latest]);
        assert_eq!(dropped_count(&fates), 2);

        let mut fates = decided.clone();
        assert!(fit(&candidates, &mut fates, |kept| kept <= 600));
        assert_eq!(fates, decided, "what fits loses nothing");

        let mut fates = decided;
        assert!(!fit(&candidates, &mut fates, |kept| kept < 200));
        assert_eq!(fates, [Dropped, Dropped, Dropped, Dropped, Latest, Latest]);
        assert_eq!(kept_bytes(&candidates, &fates), 200);
    }

    #[test]
    fn the_size_budget_leaves_room_after_and_bounds_the_peak() {
        const MIB: u64 = 1 << 20;
        // Afterwards: 100 MiB - 30 MiB after the range - one 10 MiB segment.
        assert_eq!(
            size_budget(100 * MIB, 10 * MIB, 30 * MIB, 50 * MIB),
            60 * MIB
        );
        // Meanwhile: 100 MiB + one segment - 95 MiB on disk.
        assert_eq!(
            size_budget(100 * MIB, 10 * MIB, 30 * MIB, 95 * MIB),
            15 * MIB
        );
        assert_eq!(size_budget(100 * MIB, 10 * MIB, 95 * MIB, 50 * MIB), 0);
        assert_eq!(room_beside(100 * MIB, 10 * MIB, 200 * MIB), 0);
    }
}
