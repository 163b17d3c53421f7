//! What runs, in the order of a round, and the targets as ratios between rows.

use std::path::Path;
use std::time::Duration;

use cairn::Durability;

use crate::cairn_store::CairnPeer;
use crate::floors::{CopyCrcFloor, GroupCommitFloor, RawFloor};
use crate::measure::{BenchResult, Peer};
use crate::payload::Payload;
use crate::pg::PgPeer;
use crate::redb_db::RedbPeer;
use crate::rename::RenamePeer;
use crate::sqlite::{SqlitePeer, Synchronous};

const RAW_FLOOR: &str = "raw-floor";
const GROUP_COMMIT_FLOOR: &str = "group-commit-floor";
const COPY_CRC_FLOOR: &str = "copy-crc-floor";
const PWRITE_FLOOR: &str = "pwrite-floor";
const CAIRN_SYNC: &str = "cairn-sync";
const CAIRN_BUFFERED: &str = "cairn-buffered";
const CAIRN_OS_ONLY: &str = "cairn-os-only";
const SQLITE_FULL: &str = "sqlite-wal-full";
const SQLITE_NORMAL: &str = "sqlite-wal-normal";
const REDB: &str = "redb-immediate";
const RENAME: &str = "temp-rename";
const POSTGRES: &str = "postgres-jsonb";

/// Opens a peer in a fresh directory; the number is the round (PostgreSQL names its table
/// after it).
type Open = Box<dyn Fn(&Path, usize) -> BenchResult<Box<dyn Peer>>>;

/// One row of the table: a peer with a number of writers.
pub struct Contender {
    pub kind: &'static str,
    pub label: &'static str,
    pub writers: usize,
    pub durable: bool,
    /// A writer's save budget per second of the run: times the run's seconds, it is the
    /// capacity of the writer's latency vector, and a run ends early when a writer uses it up
    /// (which bounds the disk a fast, non-durable peer writes).
    pub max_rate_per_writer: usize,
    pub open: Open,
}

impl Contender {
    /// The row's name in the JSON and in the targets: kind and writer count.
    pub fn id(&self) -> String {
        id(self.kind, self.writers)
    }

    pub fn is_floor(&self) -> bool {
        [RAW_FLOOR, GROUP_COMMIT_FLOOR, COPY_CRC_FLOOR, PWRITE_FLOOR].contains(&self.kind)
    }

    /// The floor this row is compared with: the raw floor for one durable writer, the
    /// group-commit floor for several, the copy + CRC floor for a save that is not durable.
    pub fn floor(&self) -> String {
        match (self.durable, self.writers) {
            (true, 1) => id(RAW_FLOOR, 1),
            (true, writers) => id(GROUP_COMMIT_FLOOR, writers),
            (false, _) => id(COPY_CRC_FLOOR, 1),
        }
    }
}

pub fn id(kind: &str, writers: usize) -> String {
    format!("{kind}-{writers}")
}

/// Durable saves wait for the disk's flush: a budget they never reach.
const DURABLE_RATE: usize = 100_000;
/// Non-durable stores write files as fast as the CPU goes: a cap bounds a run's writes to
/// about 70 MB per second of `--seconds` (a 2-second cairn run still crosses two segment
/// rollovers, whose cost belongs in its rate).
const PAGE_CACHE_RATE: usize = 60_000;
/// The copy + CRC floor touches memory only.
const MEMORY_RATE: usize = 8_000_000;

/// Every row of a round, in order: the floors first, then cairn, then the peers.
pub fn contenders(payload: &Payload, writers: usize, pg_url: Option<&str>) -> Vec<Contender> {
    let mut rows = floors(payload, writers);
    rows.extend(cairn_rows(payload, writers));
    rows.extend(store_rows(payload, writers));
    if let Some(url) = pg_url {
        rows.extend(postgres_rows(payload, writers, url));
    }
    rows
}

/// A durable row: a save returns once its checkpoint is on stable storage.
fn durable(kind: &'static str, label: &'static str, writers: usize, open: Open) -> Contender {
    Contender {
        kind,
        label,
        writers,
        durable: true,
        max_rate_per_writer: DURABLE_RATE,
        open,
    }
}

/// A row whose save returns before its checkpoint is on stable storage.
fn not_durable(kind: &'static str, label: &'static str, max_rate: usize, open: Open) -> Contender {
    Contender {
        durable: false,
        max_rate_per_writer: max_rate,
        ..durable(kind, label, 1, open)
    }
}

fn floors(payload: &Payload, writers: usize) -> Vec<Contender> {
    let (raw, group, copy) = (
        payload.json.clone(),
        payload.json.clone(),
        payload.json.clone(),
    );
    let raw: Open = Box::new(move |dir, _| Ok(Box::new(RawFloor::new(dir, &raw)?)));
    let group: Open = Box::new(move |dir, _| Ok(Box::new(GroupCommitFloor::new(dir, &group)?)));
    let copy: Open = Box::new(move |_, _| Ok(Box::new(CopyCrcFloor::new(&copy))));
    let pwrite_json = payload.json.clone();
    let pwrite: Open =
        Box::new(move |dir, _| Ok(Box::new(RawFloor::pwrite_only(dir, &pwrite_json)?)));
    vec![
        durable(RAW_FLOOR, "raw floor: pwrite + fdatasync", 1, raw),
        durable(
            GROUP_COMMIT_FLOOR,
            "group-commit floor: leader/follower",
            writers,
            group,
        ),
        not_durable(
            COPY_CRC_FLOOR,
            "copy + CRC32 floor (memory only)",
            MEMORY_RATE,
            copy,
        ),
        not_durable(
            PWRITE_FLOOR,
            "pwrite floor: pwrite alone (page cache)",
            PAGE_CACHE_RATE,
            pwrite,
        ),
    ]
}

fn cairn(payload: &Payload, durability: Durability) -> Open {
    let document = payload.document.clone();
    Box::new(move |dir, _| Ok(Box::new(CairnPeer::open(dir, durability, &document)?)))
}

fn cairn_rows(payload: &Payload, writers: usize) -> Vec<Contender> {
    let buffered = Durability::Buffered {
        interval: Duration::from_millis(100),
    };
    let sync = || cairn(payload, Durability::Sync);
    let buffered_label = "cairn, Buffered 100 ms (not durable per save)";
    let os_only_label = "cairn, OsOnly (not durable per save)";
    vec![
        durable(CAIRN_SYNC, "cairn, Durability::Sync", 1, sync()),
        durable(CAIRN_SYNC, "cairn, Durability::Sync", writers, sync()),
        not_durable(
            CAIRN_BUFFERED,
            buffered_label,
            PAGE_CACHE_RATE,
            cairn(payload, buffered),
        ),
        not_durable(
            CAIRN_OS_ONLY,
            os_only_label,
            PAGE_CACHE_RATE,
            cairn(payload, Durability::OsOnly),
        ),
    ]
}

fn sqlite(payload: &Payload, synchronous: Synchronous) -> Open {
    let json = payload.json.clone();
    Box::new(move |dir, _| Ok(Box::new(SqlitePeer::open(dir, synchronous, &json)?)))
}

fn redb(payload: &Payload) -> Open {
    let json = payload.json.clone();
    Box::new(move |dir, _| Ok(Box::new(RedbPeer::create(dir, &json)?)))
}

fn rename(payload: &Payload) -> Open {
    let json = payload.json.clone();
    Box::new(move |dir, _| Ok(Box::new(RenamePeer::create(dir, &json)?)))
}

fn store_rows(payload: &Payload, writers: usize) -> Vec<Contender> {
    let normal_label = "SQLite WAL, synchronous=NORMAL (not durable per save)";
    let mut rows = Vec::new();
    for n in [1, writers] {
        let normal = sqlite(payload, Synchronous::Normal);
        rows.extend([
            durable(
                SQLITE_FULL,
                "SQLite WAL, synchronous=FULL",
                n,
                sqlite(payload, Synchronous::Full),
            ),
            Contender {
                writers: n,
                ..not_durable(SQLITE_NORMAL, normal_label, PAGE_CACHE_RATE, normal)
            },
            durable(REDB, "redb, Durability::Immediate", n, redb(payload)),
            durable(
                RENAME,
                "temp file + fsync + rename + fsync(dir)",
                n,
                rename(payload),
            ),
        ]);
    }
    rows
}

fn postgres_rows(payload: &Payload, writers: usize, url: &str) -> Vec<Contender> {
    let label = "PostgreSQL JSONB upsert, local server";
    [1, writers]
        .into_iter()
        .map(|n| {
            let (json, url) = (payload.json.clone(), url.to_owned());
            let open: Open =
                Box::new(move |_, round| Ok(Box::new(PgPeer::create(&url, round, &json)?)));
            durable(POSTGRES, label, n, open)
        })
        .collect()
}

/// A target of the issue: the rate of one row divided by the rate of another, in the same
/// round, must reach `at_least`.
pub struct Target {
    pub numerator: String,
    pub denominator: String,
    pub at_least: f64,
}

pub fn targets(writers: usize) -> Vec<Target> {
    let one = |kind| id(kind, 1);
    let many = |kind| id(kind, writers);
    let ratios = [
        (one(CAIRN_SYNC), one(RAW_FLOOR), 0.9),
        (many(CAIRN_SYNC), many(GROUP_COMMIT_FLOOR), 1.0),
        (many(CAIRN_SYNC), one(CAIRN_SYNC), 3.0),
        (many(CAIRN_SYNC), many(SQLITE_FULL), 3.0),
        (many(CAIRN_SYNC), many(REDB), 5.0),
        (many(CAIRN_SYNC), many(RENAME), 5.0),
        (many(CAIRN_SYNC), many(POSTGRES), 2.0),
        (one(CAIRN_BUFFERED), one(COPY_CRC_FLOOR), 0.3),
        (one(CAIRN_OS_ONLY), one(COPY_CRC_FLOOR), 0.3),
    ];
    ratios
        .into_iter()
        .map(|(numerator, denominator, at_least)| Target {
            numerator,
            denominator,
            at_least,
        })
        .collect()
}
