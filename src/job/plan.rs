//! Planning a job's next run: given a job's [`JobState`], should the next run start fresh,
//! resume from its checkpoint, wait and retry, run normally or give up? Pure: the plan depends
//! only on the state and the [`RetryPolicy`]. The rules are on [`plan_next_run`].

use std::time::Duration;

use serde::Serialize;

use super::state::{JobState, JobStatus};
use crate::error::{Error, Result};

/// The most retries a [`RetryPolicy`] may allow.
pub(crate) const MAX_RETRIES_LIMIT: u32 = 1000;
/// The longest delay a [`RetryPolicy`] may allow between retries.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(24 * 3600);

/// How failed runs are retried: how many times, and how long to wait before each retry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Retries allowed after failures; once `retry_count` exceeds it the job gives up.
    /// Default: 5; at most 1000.
    pub max_retries: u32,
    /// The delay before the first retry; each further retry doubles it. Default: 1 s.
    pub base_delay: Duration,
    /// The longest delay, jitter included. Default: 5 min; at most [`MAX_RETRY_DELAY`].
    pub max_delay: Duration,
    /// The fraction (0 to 1) by which a delay may randomly vary either way, so that jobs that
    /// failed together do not retry together. Default: 0.2 (±20 %).
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(300),
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// A policy with the given values; check it with [`RetryPolicy::validate`].
    pub fn new(max_retries: u32, base_delay: Duration, max_delay: Duration, jitter: f64) -> Self {
        RetryPolicy {
            max_retries,
            base_delay,
            max_delay,
            jitter,
        }
    }

    /// Checks the values: a base delay of at least 1 ns and at most `max_delay`, a
    /// `max_delay` of at most [`MAX_RETRY_DELAY`], at most 1000 retries and
    /// a jitter between 0 and 1. Fails with [`Error::InvalidInput`].
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::invalid("retry policy", reason));
        if self.max_retries > MAX_RETRIES_LIMIT {
            return invalid(format!(
                "max_retries {} is over the limit of {MAX_RETRIES_LIMIT}",
                self.max_retries
            ));
        }
        if self.base_delay.is_zero() {
            return invalid("base_delay must be at least 1 ns".into());
        }
        if self.max_delay > MAX_RETRY_DELAY {
            return invalid(format!(
                "max_delay {:?} is over the limit of {MAX_RETRY_DELAY:?}",
                self.max_delay
            ));
        }
        if self.base_delay > self.max_delay {
            return invalid(format!(
                "base_delay {:?} is longer than max_delay {:?}",
                self.base_delay, self.max_delay
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return invalid(format!("jitter {} is outside 0..=1", self.jitter));
        }
        Ok(())
    }
}

/// What the next run of a job should do. [`Store::plan`](crate::Store::plan) returns a
/// `RunPlan<Checkpoint>`, holding the checkpoint itself;
/// [`plan_next_run`](crate::job::plan_next_run) returns a `RunPlan<u64>`, holding the
/// checkpoint's sequence number. [`RunPlan::try_map_checkpoint`] turns one into the other.
///
/// ```
/// # let dir = tempfile::tempdir()?;
/// use cairn::{RunPlan, Store};
/// let store = Store::open(dir.path())?;
/// store.start_run("github_sync")?;
/// let seq = store.save("github_sync", "pr_extraction", &serde_json::json!({"cursor": "Y3Vy"}))?;
/// // The run was interrupted: a crash left no outcome.
/// match store.plan("github_sync")? {
///     RunPlan::Resume { checkpoint } => assert_eq!(checkpoint.seq, seq),
///     other => panic!("expected a resume, got {other:?}"),
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunPlan<C> {
    /// No checkpoint to resume from: start from the beginning.
    FreshStart,
    /// The previous run was interrupted (a crash left no outcome): continue from `checkpoint`.
    Resume {
        /// The checkpoint to resume from.
        checkpoint: C,
    },
    /// The previous run failed and may be retried: wait `delay`, then run attempt `attempt`,
    /// from `checkpoint` if there is one.
    RetryWithBackoff {
        /// The retry's number (1 for the first retry).
        attempt: u32,
        /// How long to wait before it (exponential backoff with jitter, capped).
        delay: Duration,
        /// The checkpoint to continue from, if any.
        checkpoint: Option<C>,
    },
    /// The previous run succeeded: run normally (an incremental sync from the last state).
    Normal,
    /// Do not run again: the failure cannot be recovered from or the retry budget is spent.
    GiveUp {
        /// Why, for an operator.
        reason: String,
    },
}

impl<C> RunPlan<C> {
    /// The plan's name, as in its JSON form: `fresh_start`, `resume`, `retry_with_backoff`,
    /// `normal` or `give_up`.
    pub fn name(&self) -> &'static str {
        match self {
            RunPlan::FreshStart => "fresh_start",
            RunPlan::Resume { .. } => "resume",
            RunPlan::RetryWithBackoff { .. } => "retry_with_backoff",
            RunPlan::Normal => "normal",
            RunPlan::GiveUp { .. } => "give_up",
        }
    }

    /// The checkpoint the next run continues from: that of a `Resume`, or of a
    /// `RetryWithBackoff` that has one.
    pub fn checkpoint(&self) -> Option<&C> {
        match self {
            RunPlan::Resume { checkpoint } => Some(checkpoint),
            RunPlan::RetryWithBackoff { checkpoint, .. } => checkpoint.as_ref(),
            RunPlan::FreshStart | RunPlan::Normal | RunPlan::GiveUp { .. } => None,
        }
    }

    /// The same plan with its checkpoint, if any, turned into another form by `f`.
    pub fn map_checkpoint<D>(self, f: impl FnOnce(C) -> D) -> RunPlan<D> {
        match self.try_map_checkpoint(|c| Ok::<D, std::convert::Infallible>(f(c))) {
            Ok(plan) => plan,
            Err(never) => match never {},
        }
    }

    /// The same plan with its checkpoint, if any, turned into another form by `f`, which may
    /// fail (for instance reading the checkpoint a sequence number names).
    pub fn try_map_checkpoint<D, E>(
        self,
        f: impl FnOnce(C) -> std::result::Result<D, E>,
    ) -> std::result::Result<RunPlan<D>, E> {
        Ok(match self {
            RunPlan::FreshStart => RunPlan::FreshStart,
            RunPlan::Resume { checkpoint } => RunPlan::Resume {
                checkpoint: f(checkpoint)?,
            },
            RunPlan::RetryWithBackoff {
                attempt,
                delay,
                checkpoint,
            } => RunPlan::RetryWithBackoff {
                attempt,
                delay,
                checkpoint: checkpoint.map(f).transpose()?,
            },
            RunPlan::Normal => RunPlan::Normal,
            RunPlan::GiveUp { reason } => RunPlan::GiveUp { reason },
        })
    }
}

/// Decides what the next run of the job in `state` should do, identifying the checkpoint to
/// continue from by its sequence number. The retry delay's jitter is derived from the job's
/// name and the attempt, so that a given job and attempt always get the same delay while jobs
/// that failed together spread their retries. [`Store::plan`](crate::Store::plan) applies the
/// same rules and reads the checkpoint.
///
/// # Rules
///
/// Rows are tried top to bottom; the first that matches decides. `latest` is the sequence
/// number of `state.latest_checkpoint`, if any.
///
/// | status                | condition                                       | plan                                                         |
/// |-----------------------|-------------------------------------------------|--------------------------------------------------------------|
/// | `Succeeded`           |                                                 | [`Normal`](RunPlan::Normal)                                  |
/// | `Failed`              | the last error is not recoverable               | [`GiveUp`](RunPlan::GiveUp), naming the error                |
/// | `Failed`              | `retry_count > max_retries`                     | [`GiveUp`](RunPlan::GiveUp): budget spent, N of M            |
/// | `Failed`              | recoverable, budget left                        | [`RetryWithBackoff`](RunPlan::RetryWithBackoff) `{ attempt: retry_count, delay: backoff_delay(attempt), checkpoint: latest }` |
/// | `Pending`, `Running`  | a checkpoint exists                             | [`Resume`](RunPlan::Resume) `{ checkpoint: latest }`         |
/// | `Pending`, `Running`  | no checkpoint                                   | [`FreshStart`](RunPlan::FreshStart)                          |
///
/// `Running` at planning time means the previous run was interrupted: a crash left no
/// outcome. A `Failed` state whose failure has no recorded error (impossible through the
/// fold) counts as recoverable.
///
/// Whether a resume continues from the checkpoint or restarts from scratch is the job type's
/// [`ResumeStrategy`](super::ResumeStrategy), applied after planning.
///
/// # Example
///
/// ```
/// use cairn::job::plan_next_run;
/// use cairn::{JobEvent, JobState, RetryPolicy, RunPlan, Trigger};
/// let at = chrono::Utc::now();
/// let mut state = JobState::new("github_sync");
/// state.apply(1, at, &JobEvent::RunStarted { attempt: 1 });
/// state.apply(2, at, &JobEvent::CheckpointSaved {
///     phase: "pr_extraction".into(),
///     trigger: Trigger::BatchCompleted,
/// });
/// let plan = plan_next_run(&state, &RetryPolicy::default());
/// assert_eq!(plan, RunPlan::Resume { checkpoint: 2 });
/// ```
pub fn plan_next_run(state: &JobState, policy: &RetryPolicy) -> RunPlan<u64> {
    let latest = state.latest_checkpoint.as_ref().map(|c| c.seq);
    match state.status {
        JobStatus::Succeeded => RunPlan::Normal,
        JobStatus::Failed => plan_after_failure(state, policy, jitter_seed(&state.job), latest),
        JobStatus::Pending | JobStatus::Running => match latest {
            Some(checkpoint) => RunPlan::Resume { checkpoint },
            None => RunPlan::FreshStart,
        },
    }
}

fn plan_after_failure(
    state: &JobState,
    policy: &RetryPolicy,
    jitter_seed: u64,
    latest: Option<u64>,
) -> RunPlan<u64> {
    if let Some(error) = &state.last_error
        && !error.context.recoverable
    {
        return RunPlan::GiveUp {
            reason: format!("unrecoverable error: {}", error.message),
        };
    }
    if state.retry_count > policy.max_retries {
        return RunPlan::GiveUp {
            reason: format!(
                "retry budget spent: {} failures, {} of {} retries used",
                state.retry_count, policy.max_retries, policy.max_retries
            ),
        };
    }
    // The fold makes retry_count at least 1 once a run failed; 0 would only come from a
    // hand-built state and is treated as the first retry.
    let attempt = state.retry_count.max(1);
    RunPlan::RetryWithBackoff {
        attempt,
        delay: backoff_delay(policy, attempt, jitter_seed),
        checkpoint: latest,
    }
}

/// The delay before retry number `attempt` (1 for the first): `base_delay * 2^(attempt - 1)`
/// capped at `max_delay`, then moved randomly by up to ± `jitter` of itself, and never above
/// `max_delay`. `jitter_seed` is any number of the caller's choosing that tells jobs apart
/// ([`plan_next_run`] derives one from the job's name). Deterministic: the same policy,
/// attempt and seed always give the same delay (the seed and attempt are mixed with
/// SplitMix64). Never panics, even for a policy that fails [`RetryPolicy::validate`] (a jitter
/// outside 0..=1 is clamped, NaN counts as 0). Attempt 0 counts as 1.
pub fn backoff_delay(policy: &RetryPolicy, attempt: u32, jitter_seed: u64) -> Duration {
    let max_nanos = policy.max_delay.as_nanos();
    let exponent = attempt.max(1) - 1;
    let capped_nanos = 1u128
        .checked_shl(exponent)
        .and_then(|factor| policy.base_delay.as_nanos().checked_mul(factor))
        .map_or(max_nanos, |nanos| nanos.min(max_nanos));
    let jitter = if policy.jitter.is_nan() {
        0.0
    } else {
        policy.jitter.clamp(0.0, 1.0)
    };
    let draw = splitmix64(jitter_seed ^ splitmix64(u64::from(attempt)));
    // 53 random bits give a uniform fraction in [0, 1).
    let unit = (draw >> 11) as f64 / (1u64 << 53) as f64;
    let factor = 1.0 + jitter * (2.0 * unit - 1.0);
    // A float-to-integer `as` saturates, so this cannot overflow.
    let jittered_nanos = ((capped_nanos as f64) * factor) as u128;
    nanos_to_duration(jittered_nanos.min(max_nanos))
}

/// The seed of a job's retry jitter, derived from its name (64-bit FNV-1a of its UTF-8
/// bytes): the same on every run and platform, different for different jobs so that jobs
/// failing together spread their retries. The attempt is mixed in by `backoff_delay` itself.
/// These values must never change, or planned delays shift on upgrade.
pub(crate) fn jitter_seed(job: &str) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    job.bytes().fold(FNV_OFFSET, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// SplitMix64's output function: a fixed, well-mixed bijection of 64-bit values.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn nanos_to_duration(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9, so it fits in a u32.
    let subsec = (nanos % NANOS_PER_SEC) as u32;
    Duration::new(secs, subsec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::event::{ErrorContext, JobEvent, Trigger};
    use chrono::{DateTime, TimeZone, Utc};

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + secs, 0)
            .single()
            .expect("valid time")
    }

    fn state_of(events: &[JobEvent]) -> JobState {
        JobState::replay(
            "github_sync",
            events
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, event)| (i as u64 + 1, t(i as i64), event)),
        )
    }

    fn started() -> JobEvent {
        JobEvent::RunStarted { attempt: 1 }
    }

    fn saved() -> JobEvent {
        JobEvent::CheckpointSaved {
            phase: "pr_extraction".into(),
            trigger: Trigger::BatchCompleted,
        }
    }

    fn failed(recoverable: bool) -> JobEvent {
        JobEvent::RunFailed {
            error: "HTTP 502 from api.github.com".into(),
            context: ErrorContext {
                recoverable,
                ..ErrorContext::default()
            },
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy::new(3, Duration::from_secs(1), Duration::from_secs(60), 0.2)
    }

    fn plan(events: &[JobEvent]) -> RunPlan<u64> {
        plan_next_run(&state_of(events), &policy())
    }

    #[test]
    fn row_succeeded_is_normal() {
        assert_eq!(
            plan(&[started(), saved(), JobEvent::RunSucceeded]),
            RunPlan::Normal
        );
        assert_eq!(plan(&[started(), JobEvent::RunSucceeded]), RunPlan::Normal);
    }

    #[test]
    fn row_failed_unrecoverable_gives_up_naming_the_error() {
        let decision = plan(&[started(), saved(), failed(false)]);
        let RunPlan::GiveUp { reason } = decision else {
            panic!("expected GiveUp, got {decision:?}");
        };
        assert!(reason.contains("HTTP 502 from api.github.com"), "{reason}");
    }

    #[test]
    fn row_failed_over_budget_gives_up() {
        let mut events = vec![started()];
        for _ in 0..4 {
            events.push(failed(true));
            events.push(started());
        }
        events.pop();
        assert_eq!(state_of(&events).retry_count, 4);
        let decision = plan(&events);
        let RunPlan::GiveUp { reason } = decision else {
            panic!("expected GiveUp, got {decision:?}");
        };
        assert!(reason.contains("budget spent"), "{reason}");
        assert!(reason.contains("4 failures"), "{reason}");
        assert!(reason.contains("3 of 3"), "{reason}");
    }

    #[test]
    fn row_failed_with_budget_retries_from_the_latest_checkpoint() {
        let events = [started(), saved(), failed(true)];
        let expected = RunPlan::RetryWithBackoff {
            attempt: 1,
            delay: backoff_delay(&policy(), 1, jitter_seed("github_sync")),
            checkpoint: Some(2),
        };
        assert_eq!(plan(&events), expected);

        // The last retry within the budget still retries.
        let mut events = vec![started()];
        for _ in 0..3 {
            events.push(failed(true));
            events.push(started());
        }
        events.pop();
        let decision = plan(&events);
        assert!(
            matches!(
                decision,
                RunPlan::RetryWithBackoff {
                    attempt: 3,
                    checkpoint: None,
                    ..
                }
            ),
            "{decision:?}"
        );
    }

    #[test]
    fn retry_is_planned_again_identically_until_it_starts() {
        let events = [started(), saved(), failed(true)];
        let first = plan(&events);
        let RunPlan::RetryWithBackoff { attempt, delay, .. } = first.clone() else {
            panic!("expected a retry, got {first:?}");
        };
        let delay_ms = u64::try_from(delay.as_millis()).expect("small");
        let mut with_schedule = events.to_vec();
        with_schedule.push(JobEvent::RetryScheduled { attempt, delay_ms });
        assert_eq!(plan(&with_schedule), first);
    }

    #[test]
    fn row_interrupted_with_checkpoint_resumes() {
        // Running: a crash left no outcome.
        assert_eq!(
            plan(&[started(), saved(), saved()]),
            RunPlan::Resume { checkpoint: 3 }
        );
        // Pending with a checkpoint: saved, then cleared and
        // saved again by a new run that has not been marked started.
        let mut state = JobState::new("j");
        state.apply(5, t(0), &saved());
        state.status = JobStatus::Pending;
        assert_eq!(
            plan_next_run(&state, &policy()),
            RunPlan::Resume { checkpoint: 5 }
        );
    }

    #[test]
    fn row_no_checkpoint_is_a_fresh_start() {
        assert_eq!(plan(&[]), RunPlan::FreshStart);
        assert_eq!(plan(&[started()]), RunPlan::FreshStart);
        let cleared = JobEvent::CheckpointCleared {
            reason: "full restart".into(),
        };
        assert_eq!(
            plan(&[started(), saved(), failed(true), cleared]),
            RunPlan::FreshStart
        );
    }

    #[test]
    fn failed_without_recorded_error_counts_as_recoverable() {
        let mut state = JobState::new("j");
        state.status = JobStatus::Failed;
        let decision = plan_next_run(&state, &policy());
        assert!(
            matches!(decision, RunPlan::RetryWithBackoff { attempt: 1, .. }),
            "{decision:?}"
        );
    }

    #[test]
    fn decisions_serialize_with_their_name() {
        let decisions = [
            RunPlan::FreshStart,
            RunPlan::Resume { checkpoint: 1 },
            RunPlan::RetryWithBackoff {
                attempt: 1,
                delay: Duration::from_secs(1),
                checkpoint: None,
            },
            RunPlan::Normal,
            RunPlan::GiveUp { reason: "x".into() },
        ];
        for decision in decisions {
            let value = serde_json::to_value(&decision).expect("serializes");
            assert_eq!(value["decision"], decision.name());
        }
    }

    #[test]
    fn mapping_a_plan_changes_only_its_checkpoint() {
        let second = Duration::from_secs(1);
        let retry = RunPlan::RetryWithBackoff {
            attempt: 2,
            delay: second,
            checkpoint: Some(7u64),
        };
        assert_eq!(retry.checkpoint(), Some(&7));
        assert_eq!(
            retry.map_checkpoint(|seq| seq.to_string()),
            RunPlan::RetryWithBackoff {
                attempt: 2,
                delay: second,
                checkpoint: Some("7".to_string()),
            }
        );
        let resume = RunPlan::Resume { checkpoint: 7u64 };
        assert_eq!(resume.checkpoint(), Some(&7));
        let unreadable: Result<RunPlan<String>, &str> =
            resume.try_map_checkpoint(|_| Err("unreadable"));
        assert_eq!(unreadable, Err("unreadable"));
        let without_checkpoint: [RunPlan<u64>; 4] = [
            RunPlan::FreshStart,
            RunPlan::Normal,
            RunPlan::GiveUp { reason: "x".into() },
            RunPlan::RetryWithBackoff {
                attempt: 1,
                delay: second,
                checkpoint: None,
            },
        ];
        for plan in without_checkpoint {
            assert_eq!(plan.checkpoint(), None);
            let mapped: Result<RunPlan<String>, &str> =
                plan.clone().try_map_checkpoint(|_| Err("nothing to map"));
            assert_eq!(mapped.map(|mapped| mapped.name()), Ok(plan.name()));
        }
    }

    #[test]
    fn retry_delays_are_jittered_by_the_jobs_name() {
        let github = state_of(&[started(), failed(true)]);
        let mut jira = github.clone();
        jira.job = "jira_sync".into();
        let delay = |state: &JobState| match plan_next_run(state, &policy()) {
            RunPlan::RetryWithBackoff { delay, .. } => delay,
            other => panic!("expected a retry, got {other:?}"),
        };
        let seeded = |job: &str| backoff_delay(&policy(), 1, jitter_seed(job));
        assert_eq!(delay(&github), seeded("github_sync"));
        assert_eq!(delay(&jira), seeded("jira_sync"));
        assert_ne!(delay(&github), delay(&jira));
    }

    #[test]
    fn default_policy_is_valid_and_bad_ones_are_refused() {
        RetryPolicy::default().validate().expect("valid");
        let second = Duration::from_secs(1);
        let bad = [
            RetryPolicy::new(MAX_RETRIES_LIMIT + 1, second, second, 0.1),
            RetryPolicy::new(1, Duration::ZERO, second, 0.1),
            RetryPolicy::new(1, second * 2, second, 0.1),
            RetryPolicy::new(1, second, MAX_RETRY_DELAY + second, 0.1),
            RetryPolicy::new(1, second, second, -0.1),
            RetryPolicy::new(1, second, second, 1.5),
            RetryPolicy::new(1, second, second, f64::NAN),
        ];
        for policy in bad {
            let err = policy.validate().expect_err("must be refused");
            assert!(matches!(err, Error::InvalidInput { .. }), "{err}");
        }
    }

    #[test]
    fn backoff_without_jitter_doubles_up_to_the_cap() {
        let policy = RetryPolicy::new(10, Duration::from_secs(1), Duration::from_secs(60), 0.0);
        let delays: Vec<u64> = (1..=8)
            .map(|attempt| backoff_delay(&policy, attempt, 7).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff_delay(&policy, 0, 7), Duration::from_secs(1));
        assert_eq!(backoff_delay(&policy, u32::MAX, 7), Duration::from_secs(60));
    }

    #[test]
    fn backoff_stays_in_the_jitter_band_and_under_the_cap() {
        let policy = RetryPolicy::default();
        for attempt in 1..=12u32 {
            let capped = (policy.base_delay.as_secs_f64() * 2f64.powi(attempt as i32 - 1))
                .min(policy.max_delay.as_secs_f64());
            for seed in 0..500u64 {
                let delay = backoff_delay(&policy, attempt, seed.wrapping_mul(0x9e37_79b9));
                assert!(
                    delay <= policy.max_delay,
                    "attempt {attempt} seed {seed}: {delay:?}"
                );
                let secs = delay.as_secs_f64();
                let low = capped * (1.0 - policy.jitter) - 1e-9;
                let high = capped * (1.0 + policy.jitter) + 1e-9;
                assert!(
                    (low..=high).contains(&secs),
                    "attempt {attempt} seed {seed}: {secs} outside {low}..={high}"
                );
            }
        }
    }

    #[test]
    fn backoff_is_deterministic_and_seeds_spread_it() {
        let policy = RetryPolicy::default();
        let a = backoff_delay(&policy, 2, jitter_seed("jira_sync"));
        assert_eq!(a, backoff_delay(&policy, 2, jitter_seed("jira_sync")));
        let distinct: std::collections::BTreeSet<Duration> = (0..100)
            .map(|seed| backoff_delay(&policy, 2, seed))
            .collect();
        assert!(
            distinct.len() > 90,
            "only {} distinct delays",
            distinct.len()
        );
        // Attempts are mixed in: the same seed gives differently jittered attempts.
        let ratio = |attempt: u32| {
            backoff_delay(&policy, attempt, 9).as_secs_f64() / 2f64.powi(attempt as i32 - 1)
        };
        assert_ne!(ratio(1), ratio(2));
    }

    #[test]
    fn backoff_never_panics_on_bad_policies() {
        let huge = Duration::new(u64::MAX, 999_999_999);
        let policies = [
            RetryPolicy::new(1, huge, huge, 1.0),
            RetryPolicy::new(1, huge, Duration::ZERO, 0.5),
            RetryPolicy::new(1, Duration::from_secs(1), huge, f64::NAN),
            RetryPolicy::new(1, Duration::from_secs(1), huge, 7.0),
            RetryPolicy::new(1, Duration::ZERO, Duration::ZERO, -3.0),
        ];
        for policy in policies {
            for attempt in [0, 1, 2, 64, 65, 200, u32::MAX] {
                for seed in [0, 1, u64::MAX] {
                    assert!(backoff_delay(&policy, attempt, seed) <= policy.max_delay);
                }
            }
        }
    }

    #[test]
    fn jitter_seed_is_stable() {
        // FNV-1a 64 reference values: these must never change, or delays shift on upgrade.
        assert_eq!(jitter_seed(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(jitter_seed("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(jitter_seed("github_sync"), jitter_seed("jira_sync"));
    }
}
