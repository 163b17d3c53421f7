//! PostgreSQL, when `CAIRN_PG_URL` names a server: a JSONB upsert per save, each writer on its
//! own connection, each save its own transaction (durable at commit with the server's default
//! `synchronous_commit = on`). The URL is never printed: it may hold a password.

use std::sync::Mutex;

use postgres::{Client, NoTls, Statement};

use crate::measure::{BenchResult, Peer, Saver};
use crate::payload::StampedJson;

pub struct PgPeer {
    url: String,
    /// The connection that creates and drops the bench's table.
    admin: Mutex<Client>,
    table: String,
    json: StampedJson,
}

impl PgPeer {
    /// Creates a fresh table for this run; `finish` drops it.
    pub fn create(url: &str, run: usize, json: &StampedJson) -> BenchResult<PgPeer> {
        let mut admin = Client::connect(url, NoTls)?;
        warn_unless_durable(&mut admin)?;
        let table = format!("cairn_peers_bench_{}_{run}", std::process::id());
        admin.batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; \
             CREATE TABLE {table} (job TEXT PRIMARY KEY, data JSONB NOT NULL)"
        ))?;
        Ok(PgPeer {
            url: url.to_owned(),
            admin: Mutex::new(admin),
            table,
            json: json.clone(),
        })
    }
}

/// A server with `fsync` or `synchronous_commit` off does not make a commit durable; the
/// figures would compare unlike things, so say so.
fn warn_unless_durable(client: &mut Client) -> BenchResult<()> {
    for setting in ["fsync", "synchronous_commit"] {
        let value: String = client.query_one(&format!("SHOW {setting}"), &[])?.get(0);
        if value == "off" {
            eprintln!("warning: PostgreSQL runs with {setting} = off: its commits are not durable");
        }
    }
    Ok(())
}

impl Peer for PgPeer {
    fn saver(&self, writer: usize) -> BenchResult<Box<dyn Saver + '_>> {
        let mut client = Client::connect(&self.url, NoTls)?;
        let upsert = client.prepare(&format!(
            "INSERT INTO {} (job, data) VALUES ($1, $2::text::jsonb) \
             ON CONFLICT (job) DO UPDATE SET data = EXCLUDED.data",
            self.table
        ))?;
        Ok(Box::new(PgSaver {
            client,
            upsert,
            job: format!("job-{writer}"),
            json: self.json.clone(),
            save_number: 0,
        }))
    }

    fn finish(self: Box<Self>) -> BenchResult<()> {
        let mut admin = self
            .admin
            .into_inner()
            .map_err(|_| "the PostgreSQL admin connection's mutex is poisoned")?;
        admin.batch_execute(&format!("DROP TABLE {}", self.table))?;
        Ok(())
    }
}

struct PgSaver {
    client: Client,
    upsert: Statement,
    job: String,
    json: StampedJson,
    save_number: u64,
}

impl Saver for PgSaver {
    fn save(&mut self) -> BenchResult<()> {
        self.save_number += 1;
        let json = self.json.stamp_str(self.save_number)?;
        self.client.execute(&self.upsert, &[&self.job, &json])?;
        Ok(())
    }
}
