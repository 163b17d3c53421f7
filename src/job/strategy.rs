//! [`ResumeStrategy`]: how a job type uses a checkpoint once planning says to resume.

use serde::{Deserialize, Serialize};

/// How a job continues after an interruption or a failure, once planning
/// ([`Store::plan`](crate::Store::plan), [`plan_next_run`](super::plan_next_run)) has said to
/// resume or retry from a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResumeStrategy {
    /// Precise resume (how a GitHub-style sync resumes): continue from the exact position the
    /// checkpoint records (a work queue with finished units skipped, an API cursor, a
    /// processed count), so nothing is fetched twice.
    CursorResume,
    /// Complete restart (how a Jira-style sync resumes): set the checkpoint aside with a
    /// `CheckpointCleared` event, keep it for reference (logging, analysis), and extract
    /// everything again. Simple and consistent, at the price of refetching; the writes must
    /// be idempotent (see [`idempotency_key`](super::idempotency_key)) so that data already
    /// written by the interrupted run is not duplicated.
    FullRestart,
}

/// Where the next run starts, once a job type's [`ResumeStrategy`] is applied to the
/// checkpoint that planning chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "start", rename_all = "snake_case")]
#[non_exhaustive]
pub enum StartPoint {
    /// From the beginning: there is no checkpoint.
    Fresh,
    /// From the checkpoint with this sequence number.
    FromCheckpoint {
        /// The checkpoint to resume from.
        seq: u64,
    },
    /// From the beginning, after recording a `CheckpointCleared` event; the checkpoint with
    /// this sequence number is kept for reference only.
    Restart {
        /// The checkpoint set aside.
        reference_seq: u64,
    },
}

impl ResumeStrategy {
    /// Where the next run starts given the checkpoint planning chose (the sequence number of
    /// the checkpoint of a `Resume` or `RetryWithBackoff` plan, if any).
    pub fn start_point(self, checkpoint_seq: Option<u64>) -> StartPoint {
        match (self, checkpoint_seq) {
            (_, None) => StartPoint::Fresh,
            (ResumeStrategy::CursorResume, Some(seq)) => StartPoint::FromCheckpoint { seq },
            (ResumeStrategy::FullRestart, Some(reference_seq)) => {
                StartPoint::Restart { reference_seq }
            }
        }
    }

    /// The strategy's name, as in its JSON form: `cursor_resume` or `full_restart`.
    pub fn name(self) -> &'static str {
        match self {
            ResumeStrategy::CursorResume => "cursor_resume",
            ResumeStrategy::FullRestart => "full_restart",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_resume_continues_from_the_checkpoint() {
        let strategy = ResumeStrategy::CursorResume;
        assert_eq!(
            strategy.start_point(Some(9)),
            StartPoint::FromCheckpoint { seq: 9 }
        );
        assert_eq!(strategy.start_point(None), StartPoint::Fresh);
    }

    #[test]
    fn full_restart_keeps_the_checkpoint_for_reference_only() {
        let strategy = ResumeStrategy::FullRestart;
        assert_eq!(
            strategy.start_point(Some(9)),
            StartPoint::Restart { reference_seq: 9 }
        );
        assert_eq!(strategy.start_point(None), StartPoint::Fresh);
    }

    #[test]
    fn names_match_the_json_form() {
        for strategy in [ResumeStrategy::CursorResume, ResumeStrategy::FullRestart] {
            let value = serde_json::to_value(strategy).expect("serializes");
            assert_eq!(value, strategy.name());
        }
    }
}
