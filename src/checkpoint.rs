//! The checkpoint as users see it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// One saved checkpoint of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Checkpoint {
    /// The job it belongs to.
    pub job: String,
    /// Its global sequence number: later saves have larger numbers.
    pub seq: u64,
    /// The phase the job was in (free text, e.g. `pr_extraction`).
    pub phase: String,
    /// When it was saved (UTC, microsecond precision).
    pub at: DateTime<Utc>,
    /// Version of the checkpoint data's format (1 unless the job's type declares otherwise;
    /// data read through a registered job type is upgraded to its current version).
    pub version: u32,
    /// What made the job save it, if recorded (`None` for format 1 records).
    pub trigger: Option<crate::job::Trigger>,
    /// The checkpoint data, as saved.
    pub data: serde_json::Value,
}

impl Checkpoint {
    /// The data deserialized into the caller's type.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
    /// struct Progress { cursor: String, processed: u64 }
    ///
    /// let store = cairn::Store::open(dir.path())?;
    /// store.save("github_sync", "pr_extraction", &Progress { cursor: "Y3Vy".into(), processed: 50 })?;
    /// let progress: Progress = store.latest("github_sync")?.expect("saved").data_as()?;
    /// assert_eq!(progress.processed, 50);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn data_as<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(&self.data).map_err(|source| Error::Deserialize {
            job: self.job.clone(),
            seq: self.seq,
            source,
        })
    }
}
