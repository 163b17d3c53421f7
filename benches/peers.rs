//! cairn against the floors of its own disk and against the stores a user would otherwise pick,
//! in one process run: every row runs once per round, rounds interleave the rows (A B C ...
//! A B C ...), and each ratio is taken within a round, so that the ratios hold on a machine
//! whose speed drifts.
//!
//! Rows (docs/PERFORMANCE.md, "Peers", explains each): the raw floor (`pwrite` + `fdatasync`,
//! one writer), the group-commit floor (leader/follower on one file, N writers), the copy +
//! CRC floor (memory only); cairn with `Durability::Sync` (1 and N writers), `Buffered` and
//! `OsOnly` (1 writer); SQLite WAL with `synchronous=FULL` and `NORMAL`, redb with
//! `Durability::Immediate`, temp file + fsync + rename + fsync(dir), each with 1 and N writers;
//! PostgreSQL's JSONB upsert with 1 and N writers when `CAIRN_PG_URL` is set. Every row saves
//! the same ~1 KiB JSON checkpoint; each writer saves its own job.
//!
//! ```text
//! cargo bench --bench peers [-- --json] [--seconds 2] [--rounds 5] [--writers 8] [--dir DIR]
//! ```
//!
//! The bench measures and prints the issue's targets beside the measured ratios; it asserts
//! none of them. It is not a criterion bench: its unit is a round over all the rows, which
//! criterion's one-benchmark-at-a-time runs cannot interleave.

#[path = "peers/cairn_store.rs"]
mod cairn_store;
#[path = "peers/floors.rs"]
mod floors;
#[path = "peers/lineup.rs"]
mod lineup;
#[path = "peers/measure.rs"]
mod measure;
#[path = "peers/payload.rs"]
mod payload;
#[path = "peers/pg.rs"]
mod pg;
#[path = "peers/redb_db.rs"]
mod redb_db;
#[path = "peers/rename.rs"]
mod rename;
#[path = "peers/report.rs"]
mod report;
#[path = "peers/sqlite.rs"]
mod sqlite;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use lineup::Contender;
use measure::{BenchResult, RunLimits, Sample};
use payload::Payload;
use report::{Report, Settings};

/// Peers bench: cairn against its floors and other stores, interleaved in one run.
#[derive(Debug, Parser)]
struct Args {
    /// Print a JSON document instead of the table.
    #[arg(long)]
    json: bool,
    /// How long each row saves, per round, in seconds (a short warm-up comes first).
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// How many rounds over all the rows.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Writer threads of the many-writer rows (at least 2: the one-writer rows always run).
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Where the temporary files go (default: the system's temporary directory). Every row
    /// uses the same file system.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Run only the rows whose id contains one of these comma-separated texts (for example
    /// `cairn,sqlite`); the floors always run, so that every ratio has its floor.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The PostgreSQL server to measure, if any. Never printed: it may hold a password.
const PG_URL_VAR: &str = "CAIRN_PG_URL";

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("peers bench failed: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> BenchResult<()> {
    if !(args.seconds.is_finite() && args.seconds > 0.0) || args.rounds == 0 || args.writers < 2 {
        return Err("--seconds must be positive, --rounds at least 1, --writers at least 2".into());
    }
    let base = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let payload = Payload::new()?;
    let pg_url = std::env::var(PG_URL_VAR).ok().filter(|url| !url.is_empty());
    if pg_url.is_none() {
        eprintln!("{PG_URL_VAR} is not set: PostgreSQL is left out");
    }
    let mut contenders = lineup::contenders(&payload, args.writers, pg_url.as_deref());
    if !args.only.is_empty() {
        let id_matches = |id: &str| args.only.iter().any(|only| id.contains(only.as_str()));
        contenders.retain(|contender| contender.is_floor() || id_matches(&contender.id()));
    }
    let samples = rounds(&contenders, &args, &base)?;
    let peers = report::rows(&contenders, &samples);
    let targets = report::target_results(&lineup::targets(args.writers), &peers);
    let report = Report {
        settings: Settings {
            rounds: args.rounds,
            seconds_per_run: args.seconds,
            writers: args.writers,
            payload_bytes: payload.json.len(),
            dir: base.display().to_string(),
            file_system: file_system(&base),
        },
        peers,
        targets,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// Runs every row once per round; `result[c][r]` is row `c` in round `r`.
fn rounds(contenders: &[Contender], args: &Args, base: &Path) -> BenchResult<Vec<Vec<Sample>>> {
    let mut samples = vec![Vec::with_capacity(args.rounds); contenders.len()];
    for round in 0..args.rounds {
        for (contender, runs) in contenders.iter().zip(&mut samples) {
            let sample = measure_once(contender, args.seconds, base, round)?;
            eprintln!(
                "round {}/{}: {:<24} {:>10.0} saves/s",
                round + 1,
                args.rounds,
                contender.id(),
                sample.saves_per_sec()
            );
            runs.push(sample);
        }
    }
    Ok(samples)
}

/// One row in a fresh directory: open, warm up, measure, close; only the measurement counts.
fn measure_once(
    contender: &Contender,
    seconds: f64,
    base: &Path,
    round: usize,
) -> BenchResult<Sample> {
    let dir = tempfile::Builder::new()
        .prefix("cairn-peers-")
        .tempdir_in(base)?;
    let peer = (contender.open)(dir.path(), round)?;
    let duration = Duration::from_secs_f64(seconds);
    let max_saves = (contender.max_rate_per_writer as f64 * seconds).ceil() as usize;
    let measured = RunLimits {
        duration,
        max_saves_per_writer: max_saves.max(1),
    };
    let warm_up = RunLimits {
        duration: duration / 10,
        max_saves_per_writer: (max_saves / 10).max(1),
    };
    measure::run(&*peer, contender.writers, warm_up)?;
    let sample = measure::run(&*peer, contender.writers, measured)?;
    peer.finish()?;
    dir.close()?;
    Ok(sample)
}

/// The file system type of `dir`, for the record (tmpfs would make every sync free).
fn file_system(dir: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return "unknown".into();
    };
    // SAFETY: `statfs` fills the zeroed struct; the path is a valid C string.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return "unknown".into();
    }
    let magic = stat.f_type as i64;
    match magic {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x794C_7630 => "overlayfs".into(),
        other => format!("file system magic {other:#x}"),
    }
}
