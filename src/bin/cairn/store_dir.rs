//! A check that writing commands other than `put` run against an existing store.

use std::io;
use std::path::Path;

use anyhow::bail;

/// Refuses a missing or empty directory before `compact` or `delete` open it for writing. A
/// writer's open creates a store where there is none, which is right for `put` but wrong for
/// these: a mistyped `--dir` would get a new empty store and a misleading answer ("nothing to
/// compact", "no such job"). Anything else (a file, a foreign directory, no permission) is
/// left to the store's open, which says what is wrong in its own words.
pub fn require_existing(dir: &Path) -> anyhow::Result<()> {
    let mut entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            bail!(
                "{} is not a cairn store: the directory does not exist",
                dir.display()
            )
        }
        Err(_) => return Ok(()),
    };
    if entries.next().is_none() {
        bail!(
            "{} is not a cairn store: the directory is empty",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_directories_are_refused_and_left_alone() {
        let temp = tempfile::tempdir().expect("tempdir");
        let missing = temp.path().join("missing");
        let error = require_existing(&missing).expect_err("missing dir");
        assert!(error.to_string().contains("does not exist"), "{error}");
        assert!(!missing.exists());
        let error = require_existing(temp.path()).expect_err("empty dir");
        assert!(error.to_string().contains("is empty"), "{error}");
        std::fs::write(temp.path().join("CAIRN"), b"x").expect("write a file");
        require_existing(temp.path()).expect("a non-empty dir is the store's to judge");
    }
}
