//! redb: one shared `Database`, a write transaction per save with `Durability::Immediate`
//! (durable when `commit` returns); redb runs one write transaction at a time.

use std::path::Path;

use redb::{Database, Durability, TableDefinition};

use crate::measure::{BenchResult, Peer, Saver};
use crate::payload::StampedJson;

const CHECKPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("checkpoints");

pub struct RedbPeer {
    database: Database,
    json: StampedJson,
}

impl RedbPeer {
    pub fn create(dir: &Path, json: &StampedJson) -> BenchResult<RedbPeer> {
        let database = Database::create(dir.join("checkpoints.redb"))?;
        Ok(RedbPeer {
            database,
            json: json.clone(),
        })
    }
}

impl Peer for RedbPeer {
    fn saver(&self, writer: usize) -> BenchResult<Box<dyn Saver + '_>> {
        Ok(Box::new(RedbSaver {
            database: &self.database,
            job: format!("job-{writer}"),
            json: self.json.clone(),
            save_number: 0,
        }))
    }
}

struct RedbSaver<'a> {
    database: &'a Database,
    job: String,
    json: StampedJson,
    save_number: u64,
}

impl Saver for RedbSaver<'_> {
    fn save(&mut self) -> BenchResult<()> {
        self.save_number += 1;
        let json = self.json.stamp(self.save_number);
        let mut transaction = self.database.begin_write()?;
        transaction.set_durability(Durability::Immediate)?;
        {
            let mut table = transaction.open_table(CHECKPOINTS)?;
            table.insert(self.job.as_str(), json)?;
        }
        transaction.commit()?;
        Ok(())
    }
}
