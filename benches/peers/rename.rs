//! The classic durable file update, a file per job: write a temporary file, fsync it, rename it
//! over the job's file, fsync the directory.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::measure::{BenchResult, Peer, Saver};
use crate::payload::StampedJson;

pub struct RenamePeer {
    dir: PathBuf,
    json: StampedJson,
}

impl RenamePeer {
    pub fn create(dir: &Path, json: &StampedJson) -> BenchResult<RenamePeer> {
        let dir = dir.join("jobs");
        std::fs::create_dir(&dir)?;
        Ok(RenamePeer {
            dir,
            json: json.clone(),
        })
    }
}

impl Peer for RenamePeer {
    fn saver(&self, writer: usize) -> BenchResult<Box<dyn Saver + '_>> {
        Ok(Box::new(RenameSaver {
            json: self.json.clone(),
            save_number: 0,
            directory: File::open(&self.dir)?,
            temporary: self.dir.join(format!("job-{writer}.json.tmp")),
            target: self.dir.join(format!("job-{writer}.json")),
        }))
    }
}

struct RenameSaver {
    json: StampedJson,
    save_number: u64,
    /// The directory, opened once per writer: its fsync makes the rename durable.
    directory: File,
    temporary: PathBuf,
    target: PathBuf,
}

impl Saver for RenameSaver {
    fn save(&mut self) -> BenchResult<()> {
        self.save_number += 1;
        let mut file = File::create(&self.temporary)?;
        file.write_all(self.json.stamp(self.save_number))?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.temporary, &self.target)?;
        self.directory.sync_all()?;
        Ok(())
    }
}
