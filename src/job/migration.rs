//! Versioned checkpoint formats: [`Migrations`] upgrade old checkpoint data step by step.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::error::Error;

/// One upgrade step: the data in version `from`, to the data in version `from + 1`.
pub type MigrationStep = Box<dyn Fn(Value) -> Result<Value, String> + Send + Sync>;

/// Why checkpoint data could not be brought to the current version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MigrationError {
    /// The data was written by newer code: this build cannot read it.
    #[error(
        "checkpoint format version {found} is newer than the {supported} this build supports; \
         upgrade the job's code"
    )]
    NewerVersion {
        /// The data's version.
        found: u32,
        /// The current version of this build.
        supported: u32,
    },
    /// No step upgrades from version `from`.
    #[error("no migration registered from checkpoint format version {from} to {}", u64::from(*from) + 1)]
    MissingStep {
        /// The version with no way forward.
        from: u32,
    },
    /// A step refused the data.
    #[error("migrating checkpoint data from version {from} to {} failed: {reason}", u64::from(*from) + 1)]
    StepFailed {
        /// The version the step upgrades from.
        from: u32,
        /// Why it failed.
        reason: String,
    },
}

impl MigrationError {
    /// The public error for this failure with a checkpoint of `job`: a newer version becomes
    /// [`Error::UnsupportedCheckpointVersion`], a missing or failed step
    /// [`Error::InvalidInput`].
    pub fn into_error(self, job: &str) -> Error {
        match self {
            MigrationError::NewerVersion { found, supported } => {
                Error::UnsupportedCheckpointVersion {
                    job: job.into(),
                    found,
                    supported,
                }
            }
            other => Error::invalid("checkpoint data", format!("job {job:?}: {other}")),
        }
    }
}

/// The checkpoint format versions of one job type and the steps between them, so that a
/// checkpoint format can evolve. A job type declares the version its code writes and one
/// upgrade step per older version; a checkpoint saved by older code is upgraded step by step,
/// v → v + 1 → … → current, before the job reads it.
///
/// ```
/// use serde_json::json;
/// let migrations = cairn::job::Migrations::new(2).register(1, |mut data| {
///     // Version 2 renamed `count` to `total_prs_processed`.
///     let count = data.get("count").cloned().unwrap_or(json!(0));
///     data["total_prs_processed"] = count;
///     Ok(data)
/// });
/// let upgraded = migrations.upgrade(1, json!({"count": 7}))?;
/// assert_eq!(upgraded["total_prs_processed"], 7);
/// # Ok::<(), cairn::job::MigrationError>(())
/// ```
pub struct Migrations {
    current_version: u32,
    steps: BTreeMap<u32, MigrationStep>,
}

impl fmt::Debug for Migrations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Migrations")
            .field("current_version", &self.current_version)
            .field("steps_from", &self.steps.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for Migrations {
    /// Version 1 and no steps: the format has never changed.
    fn default() -> Self {
        Migrations::new(1)
    }
}

impl Migrations {
    /// A registry whose code writes version `current_version`, with no steps yet.
    pub fn new(current_version: u32) -> Migrations {
        Migrations {
            current_version,
            steps: BTreeMap::new(),
        }
    }

    /// Registers the step upgrading version `from` to `from + 1`, replacing any registered
    /// before. A step from the current version or later is never used.
    pub fn register<F>(mut self, from: u32, step: F) -> Migrations
    where
        F: Fn(Value) -> Result<Value, String> + Send + Sync + 'static,
    {
        self.steps.insert(from, Box::new(step));
        self
    }

    /// The version the job's code writes and reads.
    pub fn current_version(&self) -> u32 {
        self.current_version
    }

    /// Upgrades `data`, saved in format `version`, to the current version by applying every
    /// step in turn. Data already current is returned as is. Fails on a version newer than
    /// the current one, a missing step or a step that refuses the data.
    pub fn upgrade(&self, version: u32, data: Value) -> Result<Value, MigrationError> {
        if version > self.current_version {
            return Err(MigrationError::NewerVersion {
                found: version,
                supported: self.current_version,
            });
        }
        // Check the whole path first, so no step runs when a later one is missing.
        if let Some(from) = (version..self.current_version).find(|v| !self.steps.contains_key(v)) {
            return Err(MigrationError::MissingStep { from });
        }
        let mut data = data;
        for (&from, step) in self.steps.range(version..self.current_version) {
            data = step(data).map_err(|reason| MigrationError::StepFailed { from, reason })?;
        }
        Ok(data)
    }

    /// Checks that data of any version from `oldest` up can be upgraded: every step is
    /// registered. Returns the first missing one.
    pub fn check_from(&self, oldest: u32) -> Result<(), MigrationError> {
        match (oldest..self.current_version).find(|v| !self.steps.contains_key(v)) {
            Some(from) => Err(MigrationError::MissingStep { from }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// v1 `{"n": 1}` → v2 adds `"v2": true` → v3 renames `n` to `count`.
    fn three_versions() -> Migrations {
        Migrations::new(3)
            .register(1, |mut data| {
                data["v2"] = json!(true);
                Ok(data)
            })
            .register(2, |mut data| {
                let n = data
                    .as_object_mut()
                    .and_then(|object| object.remove("n"))
                    .ok_or("field n is missing")?;
                data["count"] = n;
                Ok(data)
            })
    }

    #[test]
    fn v1_is_upgraded_through_every_step() {
        let upgraded = three_versions()
            .upgrade(1, json!({"n": 4}))
            .expect("upgrades");
        assert_eq!(upgraded, json!({"v2": true, "count": 4}));
    }

    #[test]
    fn v2_takes_only_the_last_step() {
        let upgraded = three_versions()
            .upgrade(2, json!({"n": 4}))
            .expect("upgrades");
        assert_eq!(upgraded, json!({"count": 4}));
    }

    #[test]
    fn current_data_is_returned_as_is() {
        let data = json!({"anything": [1, 2]});
        assert_eq!(three_versions().upgrade(3, data.clone()), Ok(data));
        assert_eq!(Migrations::default().upgrade(1, json!(5)), Ok(json!(5)));
    }

    #[test]
    fn a_newer_version_is_refused() {
        let err = three_versions().upgrade(4, json!({})).expect_err("refused");
        assert_eq!(
            err,
            MigrationError::NewerVersion {
                found: 4,
                supported: 3
            }
        );
        assert_eq!(
            err.clone().into_error("jira_sync").to_string(),
            "checkpoint of job \"jira_sync\" uses format version 4, this build reads up to \
             version 3; upgrade the job's code"
        );
        assert!(matches!(
            err.into_error("jira_sync"),
            Error::UnsupportedCheckpointVersion {
                found: 4,
                supported: 3,
                ..
            }
        ));
    }

    #[test]
    fn a_missing_step_is_named_and_no_step_runs() {
        let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ran.clone();
        let migrations = Migrations::new(3).register(1, move |data| {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(data)
        });
        let err = migrations.upgrade(1, json!({})).expect_err("refused");
        assert_eq!(err, MigrationError::MissingStep { from: 2 });
        assert_eq!(
            err.to_string(),
            "no migration registered from checkpoint format version 2 to 3"
        );
        assert!(!ran.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!(
            migrations.check_from(1),
            Err(MigrationError::MissingStep { from: 2 })
        );
        assert_eq!(three_versions().check_from(1), Ok(()));
        assert!(matches!(
            Migrations::new(3).upgrade(0, json!({})),
            Err(MigrationError::MissingStep { from: 0 })
        ));
    }

    #[test]
    fn a_failing_step_is_reported() {
        let err = three_versions()
            .upgrade(2, json!({"m": 1}))
            .expect_err("refused");
        assert_eq!(
            err,
            MigrationError::StepFailed {
                from: 2,
                reason: "field n is missing".into()
            }
        );
        let error = err.into_error("j");
        assert!(matches!(error, Error::InvalidInput { .. }), "{error}");
        assert!(
            error.to_string().contains("from version 2 to 3 failed"),
            "{error}"
        );
    }

    #[test]
    fn the_last_version_does_not_overflow() {
        let migrations = Migrations::new(u32::MAX).register(u32::MAX - 1, Ok);
        assert_eq!(migrations.upgrade(u32::MAX - 1, json!(1)), Ok(json!(1)));
        let err = Migrations::new(u32::MAX)
            .upgrade(u32::MAX - 1, json!(1))
            .expect_err("missing");
        assert_eq!(
            err.to_string(),
            format!(
                "no migration registered from checkpoint format version {} to {}",
                u32::MAX - 1,
                u32::MAX
            )
        );
        assert!(format!("{:?}", three_versions()).contains("[1, 2]"));
    }
}
