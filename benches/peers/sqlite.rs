//! SQLite through rusqlite, as an application would keep checkpoints in it: one connection
//! behind a mutex, WAL journal, one upsert of (job, json) per save in its own transaction.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::Connection;

use crate::measure::{BenchResult, Peer, Saver};
use crate::payload::StampedJson;

/// `synchronous` in WAL mode: `Full` syncs the WAL at every commit (durable per save);
/// `Normal` syncs it only at checkpoints, so a machine crash may lose recent commits.
#[derive(Debug, Clone, Copy)]
pub enum Synchronous {
    Full,
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

const UPSERT: &str = "INSERT INTO checkpoints (job, data) VALUES (?1, ?2) \
                      ON CONFLICT (job) DO UPDATE SET data = excluded.data";

pub struct SqlitePeer {
    connection: Mutex<Connection>,
    json: StampedJson,
}

impl SqlitePeer {
    pub fn open(
        dir: &Path,
        synchronous: Synchronous,
        json: &StampedJson,
    ) -> BenchResult<SqlitePeer> {
        let connection = Connection::open(dir.join("checkpoints.sqlite"))?;
        let mode: String =
            connection.query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!("SQLite refused WAL mode (journal_mode = {mode})").into());
        }
        connection.pragma_update(None, "synchronous", synchronous.pragma())?;
        connection.execute(
            "CREATE TABLE checkpoints (job TEXT PRIMARY KEY, data TEXT NOT NULL)",
            [],
        )?;
        Ok(SqlitePeer {
            connection: Mutex::new(connection),
            json: json.clone(),
        })
    }
}

impl Peer for SqlitePeer {
    fn saver(&self, writer: usize) -> BenchResult<Box<dyn Saver + '_>> {
        Ok(Box::new(SqliteSaver {
            connection: &self.connection,
            job: format!("job-{writer}"),
            json: self.json.clone(),
            save_number: 0,
        }))
    }
}

struct SqliteSaver<'a> {
    connection: &'a Mutex<Connection>,
    job: String,
    json: StampedJson,
    save_number: u64,
}

impl Saver for SqliteSaver<'_> {
    fn save(&mut self) -> BenchResult<()> {
        self.save_number += 1;
        let json = self.json.stamp_str(self.save_number)?;
        let connection = self
            .connection
            .lock()
            .map_err(|_| "the SQLite connection's mutex is poisoned")?;
        // Autocommit: the statement is its own transaction, committed (and with FULL, synced)
        // before `execute` returns.
        let mut statement = connection.prepare_cached(UPSERT)?;
        statement.execute((&self.job, json))?;
        Ok(())
    }
}
