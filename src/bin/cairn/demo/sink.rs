//! The demo's sink: a SQLite database standing in for the warehouse. Every record is upserted
//! under its [`cairn::job::idempotency_key`], so a record written again after a crash (at-least-once
//! delivery) overwrites its row instead of adding one; a `deliveries` column counts the writes
//! so that the final audit can tell "present once" from "delivered more than once".
//!
//! The database runs in WAL mode with `synchronous=FULL`: each page's transaction is on stable
//! storage when its commit returns. The extractor writes a page to the sink before it saves
//! the checkpoint that covers it, and that order is only worth something if the sink is as
//! durable as the checkpoint: with `synchronous=NORMAL` a WAL commit survives a killed process
//! (the demo's crash) but not a power loss, which could leave a durable checkpoint covering
//! records the sink lost. FULL costs one WAL sync per page, a few milliseconds at most here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, params};

use super::source::SourceRecord;

/// One record to write: where it came from and its payload (JSON).
#[derive(Debug, Clone)]
pub struct SinkRecord {
    pub key: String,
    pub unit: String,
    pub item: String,
    pub payload: String,
}

/// The sink database.
#[derive(Debug)]
pub struct Sink {
    conn: Connection,
}

/// What the final audit found for one job.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Audit {
    /// Rows in the sink.
    pub rows: u64,
    /// Source records with no row.
    pub lost: u64,
    /// Rows beyond one per source record, and rows that match no source record.
    pub duplicated: u64,
    /// Writes beyond the first, absorbed by the upsert (at-least-once delivery).
    pub redelivered: u64,
    /// A few of the missing or duplicated records, for the report.
    pub examples: Vec<String>,
}

impl Sink {
    pub fn open(path: &Path) -> anyhow::Result<Sink> {
        let conn = Connection::open(path)
            .with_context(|| format!("could not open the sink database {}", path.display()))?;
        // A crashed writer's leftover lock is cleared by SQLite itself; wait rather than fail
        // if another connection holds the database for a moment.
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS records (
                key        TEXT PRIMARY KEY,
                job        TEXT NOT NULL,
                unit       TEXT NOT NULL,
                item       TEXT NOT NULL,
                payload    TEXT NOT NULL,
                deliveries INTEGER NOT NULL,
                first_run  INTEGER NOT NULL,
                last_run   INTEGER NOT NULL
            );",
        )?;
        Ok(Sink { conn })
    }

    /// Upserts one page of records of `job` in one transaction, written by extractor run
    /// number `run`. Durable when this returns.
    pub fn upsert_page(
        &mut self,
        job: &str,
        run: u32,
        records: &[SinkRecord],
    ) -> anyhow::Result<()> {
        let tx = self.conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO records (key, job, unit, item, payload, deliveries, first_run, last_run)
                 VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?6)
                 ON CONFLICT(key) DO UPDATE SET
                     payload = excluded.payload,
                     deliveries = records.deliveries + 1,
                     last_run = excluded.last_run",
            )?;
            for record in records {
                upsert.execute(params![
                    record.key,
                    job,
                    record.unit,
                    record.item,
                    record.payload,
                    run
                ])?;
            }
        }
        tx.commit().context("could not commit a page to the sink")?;
        Ok(())
    }

    /// Compares the rows of `job` with the records the source holds: every source record
    /// must have exactly one row, and no row may come from nowhere.
    pub fn audit(&self, job: &str, expected: &[SourceRecord]) -> anyhow::Result<Audit> {
        let mut statement = self.conn.prepare(
            "SELECT unit, item, COUNT(*), SUM(deliveries) FROM records
             WHERE job = ?1 GROUP BY unit, item",
        )?;
        let mut found: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        let rows = statement.query_map(params![job], |row| {
            Ok((
                (row.get::<_, String>(0)?, row.get::<_, String>(1)?),
                (row.get::<_, i64>(2)?, row.get::<_, i64>(3)?),
            ))
        })?;
        for row in rows {
            let (id, (rows, deliveries)) = row?;
            // COUNT and SUM of positive integers are never negative.
            let count = |n: i64| u64::try_from(n).unwrap_or(0);
            found.insert(id, (count(rows), count(deliveries)));
        }
        let expected: BTreeSet<(String, String)> = expected
            .iter()
            .map(|r| (r.unit.clone(), r.item.clone()))
            .collect();
        let mut audit = Audit::default();
        for ((unit, item), &(rows, deliveries)) in &found {
            audit.rows += rows;
            audit.redelivered += deliveries.saturating_sub(rows);
            let known = expected.contains(&(unit.clone(), item.clone()));
            let extra = if known { rows - 1 } else { rows };
            if extra > 0 {
                audit.duplicated += extra;
                note(
                    &mut audit.examples,
                    format!("{job} {unit} {item}: {rows} row(s)"),
                );
            }
        }
        for (unit, item) in &expected {
            if !found.contains_key(&(unit.clone(), item.clone())) {
                audit.lost += 1;
                note(&mut audit.examples, format!("{job} {unit} {item}: missing"));
            }
        }
        Ok(audit)
    }
}

fn note(examples: &mut Vec<String>, example: String) {
    if examples.len() < 5 {
        examples.push(example);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(unit: &str, item: &str) -> SinkRecord {
        SinkRecord {
            key: cairn::job::idempotency_key("job", unit, item),
            unit: unit.into(),
            item: item.into(),
            payload: "{}".into(),
        }
    }

    fn expected(items: &[(&str, &str)]) -> Vec<SourceRecord> {
        items
            .iter()
            .map(|(unit, item)| SourceRecord {
                unit: (*unit).into(),
                item: (*item).into(),
            })
            .collect()
    }

    #[test]
    fn upserts_absorb_redeliveries_and_the_audit_sees_gaps_and_strays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut sink = Sink::open(&dir.path().join("sink.sqlite")).expect("open");
        sink.upsert_page("job", 1, &[record("a", "1"), record("a", "2")])
            .expect("write");
        sink.upsert_page("job", 2, &[record("a", "2"), record("b", "9")])
            .expect("write");
        let audit = sink
            .audit("job", &expected(&[("a", "1"), ("a", "2"), ("a", "3")]))
            .expect("audit");
        assert_eq!(
            (audit.rows, audit.lost, audit.duplicated, audit.redelivered),
            (3, 1, 1, 1)
        );
    }
}
