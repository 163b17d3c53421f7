//! When to save: a [`CheckpointPolicy`] says which events deserve a checkpoint, and a
//! [`Checkpointer`] applies it while a job runs.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::event::Trigger;
use crate::error::{Error, Result};

/// Which moments of a run deserve a checkpoint: every N items, every so often, at the end
/// of a unit of work or a phase, on an API error, when the rate limit is reached. Each save
/// is recorded with the [`Trigger`] that caused it. [`presets`](super::presets) has two
/// ready-made policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CheckpointPolicy {
    /// Save after this many items since the last save ([`Trigger::BatchCompleted`]).
    pub every_items: Option<u64>,
    /// Save when this long has passed since the last save ([`Trigger::Timer`]).
    pub every: Option<Duration>,
    /// Save when a unit of work (a project, a repository) is finished
    /// ([`Trigger::UnitCompleted`]).
    pub at_unit_boundary: bool,
    /// Save when a phase is finished ([`Trigger::PhaseCompleted`]).
    pub at_phase_boundary: bool,
    /// Save when an API call fails ([`Trigger::ApiError`]).
    pub on_error: bool,
    /// Save when the API's rate limit is reached ([`Trigger::RateLimitReached`]).
    pub on_rate_limit: bool,
}

impl Default for CheckpointPolicy {
    /// A policy that saves only at boundaries and on errors: no item count, no timer.
    fn default() -> Self {
        CheckpointPolicy {
            every_items: None,
            every: None,
            at_unit_boundary: true,
            at_phase_boundary: true,
            on_error: true,
            on_rate_limit: true,
        }
    }
}

impl CheckpointPolicy {
    /// Checks the values: an item count and an interval, when given, must not be zero.
    /// Fails with [`Error::InvalidInput`].
    pub fn validate(&self) -> Result<()> {
        if self.every_items == Some(0) {
            return Err(Error::invalid(
                "checkpoint policy",
                "every_items must be at least 1",
            ));
        }
        if self.every.is_some_and(|every| every.is_zero()) {
            return Err(Error::invalid(
                "checkpoint policy",
                "the interval must be at least 1 ns",
            ));
        }
        Ok(())
    }
}

/// Applies a [`CheckpointPolicy`] during a run: tell it what happens, and it answers with the
/// [`Trigger`] of a checkpoint to save, or `None`. Call [`Checkpointer::saved`] after each
/// save. Until then a due item or timer save stays due: every later `item` answers it again.
///
/// The checkpointer never reads the clock: the caller passes `now`. Between saves,
/// [`Checkpointer::item`] is one counter increment and two comparisons (the time limit is
/// kept as a precomputed deadline). A caller for whom `Instant::now()` per item is too much
/// (it costs tens of nanoseconds) may read the clock every K items and pass the same `now`
/// in between: a `Timer` save then comes at most K items late.
#[derive(Debug, Clone)]
pub struct Checkpointer {
    policy: CheckpointPolicy,
    items_since_save: u64,
    /// `None` when the policy has no item count. An unvalidated count of 0 acts as 1.
    items_limit: Option<u64>,
    /// `None` when the policy has no interval (or it overflows `Instant`).
    deadline: Option<Instant>,
}

impl Checkpointer {
    /// A checkpointer for `policy`, counting from `now` as if a save had just happened.
    pub fn new(policy: CheckpointPolicy, now: Instant) -> Checkpointer {
        let mut checkpointer = Checkpointer {
            policy,
            items_since_save: 0,
            items_limit: policy.every_items.map(|items| items.max(1)),
            deadline: None,
        };
        checkpointer.saved(now);
        checkpointer
    }

    /// One more item was processed at `now`. Returns [`Trigger::BatchCompleted`] when the
    /// policy's item count is reached, [`Trigger::Timer`] when its interval has elapsed.
    #[inline]
    pub fn item(&mut self, now: Instant) -> Option<Trigger> {
        self.items(1, now)
    }

    /// `count` more items were processed at `now`; as [`Checkpointer::item`].
    #[inline]
    pub fn items(&mut self, count: u64, now: Instant) -> Option<Trigger> {
        self.items_since_save = self.items_since_save.saturating_add(count);
        if let Some(limit) = self.items_limit
            && self.items_since_save >= limit
        {
            return Some(Trigger::BatchCompleted);
        }
        self.tick(now)
    }

    /// Checks only the time, e.g. while a job waits: [`Trigger::Timer`] if the interval has
    /// elapsed since the last save.
    #[inline]
    pub fn tick(&self, now: Instant) -> Option<Trigger> {
        match self.deadline {
            Some(deadline) if now >= deadline => Some(Trigger::Timer),
            _ => None,
        }
    }

    /// A unit of work was finished: [`Trigger::UnitCompleted`] if the policy saves then.
    pub fn unit_finished(&self) -> Option<Trigger> {
        self.policy
            .at_unit_boundary
            .then_some(Trigger::UnitCompleted)
    }

    /// A phase was finished: [`Trigger::PhaseCompleted`] if the policy saves then.
    pub fn phase_finished(&self) -> Option<Trigger> {
        self.policy
            .at_phase_boundary
            .then_some(Trigger::PhaseCompleted)
    }

    /// An API call failed: [`Trigger::ApiError`] if the policy saves then.
    pub fn error(&self) -> Option<Trigger> {
        self.policy.on_error.then_some(Trigger::ApiError)
    }

    /// The rate limit was reached: [`Trigger::RateLimitReached`] if the policy saves then.
    pub fn rate_limited(&self) -> Option<Trigger> {
        self.policy
            .on_rate_limit
            .then_some(Trigger::RateLimitReached)
    }

    /// A checkpoint was saved at `now` (whatever triggered it): the item count and the
    /// interval start again.
    pub fn saved(&mut self, now: Instant) {
        self.items_since_save = 0;
        self.deadline = self.policy.every.and_then(|every| now.checked_add(every));
    }

    /// Items processed since the last save.
    pub fn items_since_save(&self) -> u64 {
        self.items_since_save
    }

    /// The policy being applied.
    pub fn policy(&self) -> &CheckpointPolicy {
        &self.policy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items_only(n: u64) -> CheckpointPolicy {
        CheckpointPolicy {
            every_items: Some(n),
            every: None,
            ..CheckpointPolicy::default()
        }
    }

    #[test]
    fn the_default_policy_is_valid() {
        CheckpointPolicy::default().validate().expect("valid");
    }

    #[test]
    fn zero_counts_and_intervals_are_refused() {
        assert!(items_only(0).validate().is_err());
        let zero_interval = CheckpointPolicy {
            every: Some(Duration::ZERO),
            ..CheckpointPolicy::default()
        };
        assert!(zero_interval.validate().is_err());
    }

    #[test]
    fn batch_fires_every_n_items_and_resets_on_save() {
        let start = Instant::now();
        let mut checkpointer = Checkpointer::new(items_only(3), start);
        assert_eq!(checkpointer.item(start), None);
        assert_eq!(checkpointer.item(start), None);
        assert_eq!(checkpointer.item(start), Some(Trigger::BatchCompleted));
        // Still due until saved.
        assert_eq!(checkpointer.item(start), Some(Trigger::BatchCompleted));
        assert_eq!(checkpointer.items_since_save(), 4);
        checkpointer.saved(start);
        assert_eq!(checkpointer.items_since_save(), 0);
        assert_eq!(checkpointer.item(start), None);
        assert_eq!(checkpointer.items(2, start), Some(Trigger::BatchCompleted));
    }

    #[test]
    fn timer_fires_when_the_interval_elapses() {
        let start = Instant::now();
        let policy = CheckpointPolicy {
            every_items: Some(1000),
            every: Some(Duration::from_secs(180)),
            ..CheckpointPolicy::default()
        };
        let mut checkpointer = Checkpointer::new(policy, start);
        assert_eq!(checkpointer.item(start + Duration::from_secs(179)), None);
        assert_eq!(checkpointer.tick(start + Duration::from_secs(179)), None);
        assert_eq!(
            checkpointer.item(start + Duration::from_secs(180)),
            Some(Trigger::Timer)
        );
        assert_eq!(
            checkpointer.tick(start + Duration::from_secs(200)),
            Some(Trigger::Timer)
        );
        let later = start + Duration::from_secs(200);
        checkpointer.saved(later);
        assert_eq!(checkpointer.item(later + Duration::from_secs(179)), None);
        assert_eq!(
            checkpointer.item(later + Duration::from_secs(181)),
            Some(Trigger::Timer)
        );
    }

    #[test]
    fn batch_wins_over_timer_when_both_are_due() {
        let start = Instant::now();
        let policy = CheckpointPolicy {
            every_items: Some(1),
            every: Some(Duration::from_secs(1)),
            ..CheckpointPolicy::default()
        };
        let mut checkpointer = Checkpointer::new(policy, start);
        let late = start + Duration::from_secs(5);
        assert_eq!(checkpointer.item(late), Some(Trigger::BatchCompleted));
    }

    #[test]
    fn no_count_and_no_interval_never_fire() {
        let start = Instant::now();
        let policy = CheckpointPolicy {
            every_items: None,
            every: None,
            ..CheckpointPolicy::default()
        };
        let mut checkpointer = Checkpointer::new(policy, start);
        let much_later = start + Duration::from_secs(1_000_000);
        assert_eq!(checkpointer.items(u64::MAX, much_later), None);
        assert_eq!(checkpointer.item(much_later), None);
    }

    #[test]
    fn a_zero_item_count_does_not_fire_on_nothing() {
        // An unvalidated every_items of 0 acts as 1 rather than firing before any item.
        let start = Instant::now();
        let mut checkpointer = Checkpointer::new(items_only(0), start);
        assert_eq!(checkpointer.items(0, start), None);
        assert_eq!(checkpointer.item(start), Some(Trigger::BatchCompleted));
    }

    #[test]
    fn an_interval_that_overflows_instant_never_fires() {
        let start = Instant::now();
        let policy = CheckpointPolicy {
            every: Some(Duration::MAX),
            ..CheckpointPolicy::default()
        };
        let mut checkpointer = Checkpointer::new(policy, start);
        assert_eq!(
            checkpointer.item(start + Duration::from_secs(1 << 30)),
            None
        );
    }

    #[test]
    fn boundaries_follow_the_policy() {
        let start = Instant::now();
        let all = Checkpointer::new(CheckpointPolicy::default(), start);
        assert_eq!(all.unit_finished(), Some(Trigger::UnitCompleted));
        assert_eq!(all.phase_finished(), Some(Trigger::PhaseCompleted));
        assert_eq!(all.error(), Some(Trigger::ApiError));
        assert_eq!(all.rate_limited(), Some(Trigger::RateLimitReached));
        let none = CheckpointPolicy {
            at_unit_boundary: false,
            at_phase_boundary: false,
            on_error: false,
            on_rate_limit: false,
            ..CheckpointPolicy::default()
        };
        let none = Checkpointer::new(none, start);
        assert_eq!(
            (
                none.unit_finished(),
                none.phase_finished(),
                none.error(),
                none.rate_limited()
            ),
            (None, None, None, None)
        );
        assert!(!none.policy().on_error);
    }
}
